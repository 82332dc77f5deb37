/*
 * main.c -- retnetd: flags and environment -> model, engine, scheduler, HTTP;
 * signals; drain.  Wiring only.
 */
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "state_blob.h"
#include "util.h"

#define DRAIN_DEADLINE_MS 30000

static const char usage[] =
    "usage: retnetd [options]\n"
    "  --model DIR              model directory (default: models)\n"
    "  --model-name NAME        id clients use (default: the directory name)\n"
    "  --host ADDR              listen address (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
    "  --port N                 listen port (default 8080; 0 = any free port)\n"
    "  --device auto|cpu|cuda   backend (default auto)\n"
    "  --threads N              CPU threads (default: all cores)\n"
    "  --slots N                recurrent-state slots (default: --state-memory / state size)\n"
    "  --state-memory MIB       memory for states (default 1024)\n"
    "  --gpu-state-memory MIB   device memory for states with --device cuda (default:\n"
    "                           --state-memory); slots = this / state size, exactly\n"
    "  --chunk N                prefill chunk tokens (default 64)\n"
    "  --prefill-budget N       prefill tokens per scheduler step (default 256)\n"
    "  --max-waiting N          requests waiting for a slot before 429 (default 64)\n"
    "  --max-body BYTES         request body limit (default 1048576)\n"
    "  --max-prompt-tokens N    (default 8192)    --max-tokens N  per request cap (default 4096)\n"
    "  --max-n N                choices per request (default 8)\n"
    "  --max-connections N      (default 1024)    --timeout S  idle connection timeout (default 600)\n"
    "  --max-sessions N         (default 256)\n"
    "  --state-dir DIR          keep sessions across restarts in DIR (written at stop,\n"
    "                           restored at start; docs/state-format.md); also the disk tier\n"
    "  --persist-interval S     also write changed sessions to --state-dir every S seconds\n"
    "  --host-state-memory MIB  host memory for idle sessions moved out of their slots\n"
    "                           (default 1024; beyond it they go to --state-dir)\n"
    "  --session-ttl S          delete sessions idle for S seconds (default 0: never)\n"
    "  --prefix-cache-memory MIB  states of recent prompts' starts kept for reuse\n"
    "                           (default 256; 0 turns the prefix cache off)\n"
    "  --api-key KEY            require Authorization: Bearer KEY (or RETNETD_API_KEY)\n"
    "  --chat-template plain|chatml  (default plain)\n";

static int parse_args(rd_options *o, int argc, char **argv)
{
    *o = (rd_options){.model_dir = "models", .host = "127.0.0.1", .port = 8080, .device = "auto",
                      .state_memory = (size_t)1024 << 20, .chunk = 64, .prefill_budget = 256,
                      .max_waiting = 64, .max_body = 1 << 20, .max_prompt_tokens = 8192,
                      .max_tokens_limit = 4096, .max_n = 8, .max_connections = 1024,
                      .timeout_s = 600, .chat_template = "plain", .max_sessions = 256,
                      .host_state_memory = (size_t)1024 << 20,
                      .prefix_cache_memory = (size_t)256 << 20};
    o->api_key = getenv("RETNETD_API_KEY");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        }
        if (!v || a[0] != '-' || a[1] != '-') {
            fprintf(stderr, "retnetd: bad argument '%s'\n%s", a, usage);
            return -1;
        }
        i++;
        long n = strtol(v, NULL, 10);
        if (!strcmp(a, "--model")) o->model_dir = v;
        else if (!strcmp(a, "--model-name")) o->model_name = v;
        else if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--port")) o->port = (int)n;
        else if (!strcmp(a, "--device")) o->device = v;
        else if (!strcmp(a, "--threads")) o->threads = (int)n;
        else if (!strcmp(a, "--slots")) o->slots = (int)n;
        else if (!strcmp(a, "--state-memory")) o->state_memory = (size_t)n << 20;
        else if (!strcmp(a, "--gpu-state-memory")) o->gpu_state_memory = (size_t)n << 20;
        else if (!strcmp(a, "--chunk")) o->chunk = (int)n;
        else if (!strcmp(a, "--prefill-budget")) o->prefill_budget = (int)n;
        else if (!strcmp(a, "--max-waiting")) o->max_waiting = (int)n;
        else if (!strcmp(a, "--max-body")) o->max_body = (size_t)n;
        else if (!strcmp(a, "--max-prompt-tokens")) o->max_prompt_tokens = (int)n;
        else if (!strcmp(a, "--max-tokens")) o->max_tokens_limit = (int)n;
        else if (!strcmp(a, "--max-n")) o->max_n = (int)n;
        else if (!strcmp(a, "--max-connections")) o->max_connections = (unsigned)n;
        else if (!strcmp(a, "--timeout")) o->timeout_s = (unsigned)n;
        else if (!strcmp(a, "--max-sessions")) o->max_sessions = (int)n;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--chat-template")) o->chat_template = v;
        else if (!strcmp(a, "--state-dir")) o->state_dir = v;
        else if (!strcmp(a, "--host-state-memory")) o->host_state_memory = (size_t)n << 20;
        else if (!strcmp(a, "--session-ttl")) o->session_ttl_s = (unsigned)n;
        else if (!strcmp(a, "--persist-interval")) o->persist_interval_s = (unsigned)n;
        else if (!strcmp(a, "--prefix-cache-memory")) o->prefix_cache_memory = (size_t)n << 20;
        else {
            fprintf(stderr, "retnetd: unknown option '%s'\n%s", a, usage);
            return -1;
        }
    }
    if (o->port < 0 || o->port > 65535 || o->chunk < 1 || o->prefill_budget < 1 ||
        o->max_waiting < 1 || o->max_n < 1 || o->max_n > 256 || o->max_tokens_limit < 1 || o->max_prompt_tokens < 1 ||
        (strcmp(o->chat_template, "plain") && strcmp(o->chat_template, "chatml")) ||
        (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda"))) {
        fprintf(stderr, "retnetd: an option is out of range\n%s", usage);
        return -1;
    }
    return 0;
}

static int load_everything(rd_app *app)
{
    rn_error err = {0};
    rd_options *o = &app->opt;
    if (rn_model_load(&app->model, o->model_dir, &err) != RN_OK) {
        fprintf(stderr, "retnetd: %s\n", err.msg);
        return -1;
    }
    app->cfg = rn_model_config(app->model);
    char *tp = rn__strcat3(o->model_dir, "/", "tokenizer.json");
    int rc = rn_tokenizer_load(&app->tok, tp, &err);
    free(tp);
    if (rc != RN_OK) {
        fprintf(stderr, "retnetd: %s\n", err.msg);
        return -1;
    }
    size_t state = (size_t)rn_state_values(app->cfg) * sizeof(float);
    rn_device dev = !strcmp(o->device, "cpu") ? RN_DEVICE_CPU : !strcmp(o->device, "cuda") ? RN_DEVICE_CUDA : RN_DEVICE_AUTO;
    int gpu = dev == RN_DEVICE_CUDA && o->gpu_state_memory > 0;
    size_t budget = gpu ? o->gpu_state_memory : o->state_memory;
    int slots = o->slots > 0 ? o->slots : (int)(budget / (state ? state : 1));
    if (slots < 1) {
        fprintf(stderr, "retnetd: %s (%zu MiB) holds no state of %zu bytes\n",
                gpu ? "--gpu-state-memory" : "--state-memory", budget >> 20, state);
        return -1;
    }
    rn_engine_opts eo = {.device = dev, .n_slots = slots, .n_threads = o->threads, .max_chunk = o->chunk};
    if (rn_engine_new(&app->engine, app->model, &eo, &err) != RN_OK) {
        fprintf(stderr, "retnetd: %s\n", err.msg);
        return -1;
    }
    o->slots = slots;
    return 0;
}

/* ---------------------------------------------------------------- drain */

static uv_timer_t drain_timer;
static uint64_t drain_started;

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish_shutdown(rd_app *app)
{
    rd_sched_stop(app->sched);
    app->sched = NULL;
    rd_api_on_ready(app);     /* every engine result delivered: no session in transit */
    rd_persist_save_all(app); /* the engine thread is gone: its states are still */
    rd_tier_wake(app);        /* parked requests are answered (503) before HTTP stops */
    rd_http_run(app->http);
    rd_api_on_ready(app); /* deliver the final errors */
    rd_http_stop(app->http);
    uv_walk(app->loop, close_walk, NULL);
}

static void drain_tick(uv_timer_t *t)
{
    rd_app *app = t->data;
    int late = uv_now(app->loop) - drain_started > DRAIN_DEADLINE_MS;
    if (rd_http_in_flight(app->http) == 0 || late) {
        if (late)
            fprintf(stderr, "level=warn msg=\"drain deadline reached; cutting %u requests\"\n",
                    rd_http_in_flight(app->http));
        uv_timer_stop(t);
        finish_shutdown(app);
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    rd_app *app = s->data;
    if (app->draining)
        return;
    fprintf(stderr, "level=info msg=\"signal %d: draining\" in_flight=%u\n", signum,
            rd_http_in_flight(app->http));
    app->draining = 1;
    rd_http_quiesce(app->http);
    drain_started = uv_now(app->loop);
    uv_timer_init(app->loop, &drain_timer);
    drain_timer.data = app;
    uv_timer_start(&drain_timer, drain_tick, 0, 50);
}

static void keepalive_tick(uv_timer_t *t)
{
    rd_api_keepalive(t->data);
}

int main(int argc, char **argv)
{
    static rd_app app;
    char err[256];
    int status = 1;
    if (parse_args(&app.opt, argc, argv) != 0)
        return 2;
    if (!app.opt.model_name) {
        static char name[256];
        snprintf(name, sizeof name, "%s", app.opt.model_dir);
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/')
            name[--l] = '\0';
        app.opt.model_name = strdup(basename(name));
    }
    signal(SIGPIPE, SIG_IGN);
    app.loop = uv_default_loop();
    app.started = (int64_t)time(NULL);
    if (load_everything(&app) != 0)
        goto out;
    rd_sched_opts so = {.n_slots = app.opt.slots, .chunk = app.opt.chunk,
                        .prefill_budget = app.opt.prefill_budget, .max_waiting = app.opt.max_waiting,
                        .prefix_cache_bytes = app.opt.prefix_cache_memory};
    if (rd_queue_new(&app.queue, app.loop, rd_api_on_ready, &app) != 0 ||
        rd_sched_start(&app.sched, app.engine, app.queue, &so) != 0) {
        fprintf(stderr, "retnetd: cannot start the engine thread\n");
        goto out;
    }
    /* The engine thread waits for its first job and none can come before
     * HTTP listens; the queue's mutex orders these imports before it. */
    if (rd_persist_restore(&app) != 0)
        goto out;
    rd_http_opts ho = {.host = app.opt.host, .port = app.opt.port, .max_body = app.opt.max_body,
                       .max_upload = RN_BLOB_HEADER + rn_engine_state_bytes(app.engine),
                       .may_upload = rd_api_may_upload,
                       .max_connections = app.opt.max_connections, .timeout_s = app.opt.timeout_s};
    if (rd_http_start(&app.http, app.loop, &ho, rd_api_handle, rd_api_resume, rd_api_done, &app,
                      err, sizeof err) != 0) {
        fprintf(stderr, "retnetd: %s\n", err);
        goto out;
    }
    uv_signal_init(app.loop, &app.sigterm);
    uv_signal_init(app.loop, &app.sigint);
    app.sigterm.data = app.sigint.data = &app;
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    rd_tier_start_ttl(&app);
    rd_tier_start_persist(&app);
    uv_timer_init(app.loop, &app.keepalive);
    app.keepalive.data = &app;
    uv_timer_start(&app.keepalive, keepalive_tick, 5000, 5000);
    fprintf(stderr,
            "level=info msg=\"retnetd ready\" model=%s backend=%s slots=%d state_bytes=%zu "
            "listen=http://%s:%d\n",
            app.opt.model_name, rn_engine_backend_name(app.engine), app.opt.slots,
            rn_engine_state_bytes(app.engine), app.opt.host, rd_http_port(app.http));
    uv_run(app.loop, UV_RUN_DEFAULT);
    status = 0;
    fprintf(stderr, "level=info msg=\"stopped\"\n");
out:
    if (app.sched)
        rd_sched_stop(app.sched);
    app.sched = NULL; /* sessions freed below must not touch the freed slot pool */
    if (app.queue) {
        uv_run(app.loop, UV_RUN_NOWAIT);
        rd_queue_free(app.queue);
    }
    uv_loop_close(app.loop);
    rd_sessions_free(&app);
    rn_tokenizer_free(app.tok);
    rn_engine_free(app.engine);
    rn_model_free(app.model);
    return status;
}
