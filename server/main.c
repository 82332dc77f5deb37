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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "log.h"

#ifndef RD_VERSION
#define RD_VERSION "unknown"
#endif
#include "state_blob.h"
#include "util.h"

/* The kernel's struct sched_attr, first version (48 bytes): glibc 2.36 has
 * neither the struct nor a wrapper, and <linux/sched/types.h> clashes with
 * <sched.h>. */
typedef struct {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t priority;
    uint64_t runtime, deadline, period;
} slice_attr;

/* The calling (loop) thread asks for a scheduler slice of us microseconds
 * (--loop-slice-us, off by default).  Its work comes in bursts of tens of
 * microseconds, each after a wake-up; with the default slice (EEVDF, Linux
 * 6.12+) such a wake-up often waits for a busy engine thread's slice to end
 * when the engine's threads take every core: 2.4 ms from a request to its
 * first token at one stream on 2 cores, 0.6 ms with 100 us.  It also
 * preempts the engine more often, and in `make bench-http` pairs it did
 * not raise throughput, hence opt-in.  Older kernels take the call and
 * ignore the slice; a refusal is logged and changes nothing else. */
static void ask_loop_slice(int us)
{
    if (us <= 0)
        return;
    slice_attr a = {
        .size = sizeof a, .policy = 0 /* SCHED_OTHER */, .runtime = (uint64_t)us * 1000u};
    if (syscall(SYS_sched_setattr, 0, &a, 0) != 0)
        rd_log(RD_LOG_DEBUG, "msg=\"scheduler slice not set\" error=\"%s\"", strerror(errno));
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
    rn_device dev = !strcmp(o->device, "cpu")    ? RN_DEVICE_CPU
                    : !strcmp(o->device, "cuda") ? RN_DEVICE_CUDA
                                                 : RN_DEVICE_AUTO;
    dev = rn_device_resolve(dev); /* auto: size slots and chunks for what it finds */
    /* bf16 states are a GPU setting: on the CPU (chosen, or found by auto)
     * states stay fp32 */
    int state_bf16 = dev == RN_DEVICE_CUDA && !strcmp(o->gpu_state_dtype, "bf16");
    size_t state = (size_t)rn_state_values(app->cfg) * (state_bf16 ? 2 : sizeof(float));
    /* a GPU prefills 1024-token chunks ~1.7x faster than 256-token ones
     * (docs/benchmarks.md); the CPU's chunk matters little beyond 64 */
    if (o->chunk == 0)
        o->chunk = dev == RN_DEVICE_CUDA ? 1024 : 64;
    if (o->prefill_budget == 0)
        o->prefill_budget = dev == RN_DEVICE_CUDA ? 1024 : 256;
    app->engine_every_core =
        dev == RN_DEVICE_CPU && rn_cpu_threads(o->threads) >= rn_cpu_threads(0);
    if (o->stream_interval_us < 0) {
        /* when the CPU engine's threads take every core, each wake of the
         * HTTP thread preempts one of them: 4 ms of holding back cost a
         * 2-core machine's 8 streams 6% less than 1 ms (docs/benchmarks.md) */
        o->stream_interval_us = app->engine_every_core ? 4000 : 1000;
    }
    int slots = o->slots;
    if (slots <= 0 && dev == RN_DEVICE_CUDA && o->gpu_state_memory == 0) {
        /* states fill what the GPU has left (--state-memory is host memory);
         * 10% stays for the CUDA context, cuBLAS, graphs and other tenants */
        int frc = rn_engine_fit_slots(app->model, dev, o->chunk, state_bf16, 0.9, &slots, &err);
        if (frc != RN_OK) {
            fprintf(stderr, "retnetd: %s%s\n", err.msg,
                    frc == RN_ENOMEM ? " (set --slots or --gpu-state-memory)" : "");
            return -1;
        }
    } else if (slots <= 0) {
        int gpu = dev == RN_DEVICE_CUDA;
        size_t budget = gpu ? o->gpu_state_memory : o->state_memory;
        slots = (int)(budget / (state ? state : 1));
        if (slots < 1) {
            fprintf(stderr, "retnetd: %s (%zu MiB) holds no state of %zu bytes\n",
                    gpu ? "--gpu-state-memory" : "--state-memory", budget >> 20, state);
            return -1;
        }
    }
    rn_engine_opts eo = {.device = dev,
                         .n_slots = slots,
                         .n_threads = o->threads,
                         .max_chunk = o->chunk,
                         .state_bf16 = state_bf16};
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
    int late = uv_now(app->loop) - drain_started > (uint64_t)app->opt.drain_timeout_s * 1000;
    /* blob reads and writes on the thread pool finish first: save_all then
     * sees every session settled, and no callback of theirs outlives the HTTP
     * daemon (a stuck disk is the service manager's stop timeout) */
    if ((rd_http_in_flight(app->http) == 0 || late) && app->disk_io == 0) {
        if (late)
            rd_log(RD_LOG_WARN, "msg=\"drain deadline reached; cutting %u requests\"",
                   rd_http_in_flight(app->http));
        uv_timer_stop(t);
        finish_shutdown(app);
    }
}

/* ------------------------------------------------------------- systemd */

/* Type=notify: READY=1 once serving, STOPPING=1 when the drain begins, and
 * WATCHDOG=1 from the loop (a stuck loop stops the pings and systemd
 * restarts the service).  Without libsystemd at build time these do
 * nothing; without NOTIFY_SOCKET (not under systemd) neither. */
#ifdef RD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
static void notify(const char *state)
{
    sd_notify(0, state);
}
#else
static void notify(const char *state)
{
    (void)state;
}
#endif

static uv_timer_t watchdog_timer;

static void watchdog_tick(uv_timer_t *t)
{
    (void)t;
    notify("WATCHDOG=1");
}

static void start_watchdog(rd_app *app)
{
#ifdef RD_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        uv_timer_init(app->loop, &watchdog_timer);
        uv_timer_start(&watchdog_timer, watchdog_tick, usec / 2000, usec / 2000);
        rd_log(RD_LOG_INFO, "msg=\"systemd watchdog\" interval_ms=%llu",
               (unsigned long long)(usec / 2000));
    }
#else
    (void)app;
    (void)watchdog_timer;
    (void)watchdog_tick;
#endif
}

static void on_hangup(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    rd_log_reopen();
}

static void begin_drain(rd_app *app)
{
    notify("STOPPING=1");
    app->draining = 1;
    rd_http_quiesce(app->http);
    drain_started = uv_now(app->loop);
    uv_timer_init(app->loop, &drain_timer);
    drain_timer.data = app;
    uv_timer_start(&drain_timer, drain_tick, 0, 50);
}

static void on_signal(uv_signal_t *s, int signum)
{
    rd_app *app = s->data;
    if (app->draining)
        return;
    rd_log(RD_LOG_INFO, "msg=\"signal %d: draining\" in_flight=%u", signum,
           rd_http_in_flight(app->http));
    begin_drain(app);
}

/* Before each poll of the loop: once the engine's device has failed for
 * good (a CUDA context's errors are sticky), the server drains as on
 * SIGTERM and exits with status 1, so the service manager (systemd's
 * Restart=on-failure, a container's restart policy) starts a fresh
 * process.  The drain stops accepting connections at once, so health
 * checks fail from then on. */
static uv_prepare_t lost_watch;

static void watch_lost(uv_prepare_t *p)
{
    rd_app *app = p->data;
    if (app->engine_lost || !app->sched || !rd_sched_lost(app->sched))
        return;
    app->engine_lost = 1;
    rd_log(RD_LOG_ERROR,
           "msg=\"engine device failed: every request fails from here; draining, then exit "
           "status 1 to be restarted\" backend=%s in_flight=%u",
           rn_engine_backend_name(app->engine), rd_http_in_flight(app->http));
    if (!app->draining)
        begin_drain(app);
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
    int lo = rd_options_load(&app.opt, argc, argv);
    if (lo != 0) {
        rd_options_free(&app.opt);
        return lo > 0 ? 0 : 2;
    }
    if (app.opt.check_config) {
        rd_options_print(&app.opt, stdout);
        rd_options_free(&app.opt);
        return 0;
    }
    if (!app.opt.state_dir[0])
        app.opt.state_dir = NULL;
    if (!app.opt.model_name[0]) {
        static char name[256];
        snprintf(name, sizeof name, "%s", app.opt.model_dir);
        size_t l = strlen(name);
        while (l > 1 && name[l - 1] == '/')
            name[--l] = '\0';
        app.opt.model_name = strdup(basename(name));
    }
    signal(SIGPIPE, SIG_IGN);
    if (rd_log_open(app.opt.log_level, app.opt.log_format, app.opt.log_file) != 0 ||
        rd_keys_load(&app.keys, app.opt.api_key, app.opt.api_key_file) != 0) {
        rd_log_close();
        rd_options_free(&app.opt);
        return 1;
    }
    app.loop = uv_default_loop();
    /* fault injection for the tests (tests/integration/test_tiers.py): every
     * read and write of --state-dir first waits this long on its worker
     * thread; a value that is not 1..10000 is ignored */
    const char *slow = getenv("RETNETD_FAULT_SLOW_DISK_MS");
    long slow_ms = slow ? strtol(slow, NULL, 10) : 0;
    app.slow_disk_ms = slow_ms > 0 && slow_ms <= 10000 ? (unsigned)slow_ms : 0;
    if (app.slow_disk_ms)
        rd_log(RD_LOG_WARN, "msg=\"fault injection: every state-dir read and write waits\" ms=%u",
               app.slow_disk_ms);
    app.started = (int64_t)time(NULL);
    if (load_everything(&app) != 0)
        goto out;
    rd_sched_opts so = {.n_slots = app.opt.slots,
                        .chunk = app.opt.chunk,
                        .prefill_budget = app.opt.prefill_budget,
                        .max_waiting = app.opt.max_waiting,
                        .prefix_cache_bytes = app.opt.prefix_cache_memory};
    if (rd_queue_new(&app.queue, app.loop, rd_api_on_ready, &app) == 0)
        rd_queue_set_interval_us(app.queue, (unsigned)app.opt.stream_interval_us,
                                 !app.engine_every_core);
    if (!app.queue || rd_sched_start(&app.sched, app.engine, app.queue, &so) != 0) {
        fprintf(stderr, "retnetd: cannot start the engine thread\n");
        goto out;
    }
    /* The engine thread waits for its first job and none can come before
     * HTTP listens; the queue's mutex orders these imports before it. */
    if (rd_persist_restore(&app) != 0)
        goto out;
    rd_http_opts ho = {.host = app.opt.host,
                       .port = app.opt.port,
                       .max_body = app.opt.max_body,
                       .max_upload = RN_BLOB_HEADER + rn_engine_state_bytes(app.engine),
                       .may_upload = rd_api_may_upload,
                       .log_requests = app.opt.log_requests,
                       .on_request_end = rd_api_request_end,
                       .max_connections = app.opt.max_connections,
                       .timeout_s = app.opt.timeout_s};
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
    uv_signal_init(app.loop, &app.sighup);
    uv_signal_start(&app.sighup, on_hangup, SIGHUP);
    rd_tier_start_ttl(&app);
    rd_tier_start_persist(&app);
    uv_timer_init(app.loop, &app.keepalive);
    app.keepalive.data = &app;
    uv_timer_start(&app.keepalive, keepalive_tick, 5000, 5000);
    rd_log(RD_LOG_INFO,
           "msg=\"retnetd ready\" version=%s model=%s backend=%s slots=%d state_bytes=%zu "
           "state_dtype=%s chunk=%d prefill_budget=%d stream_interval_us=%d listen=http://%s:%d",
           RD_VERSION, app.opt.model_name, rn_engine_backend_name(app.engine), app.opt.slots,
           rn_engine_slot_bytes(app.engine),
           rn_engine_slot_bytes(app.engine) < rn_engine_state_bytes(app.engine) ? "bf16" : "f32",
           app.opt.chunk, app.opt.prefill_budget, app.opt.stream_interval_us, app.opt.host,
           rd_http_port(app.http));
    ask_loop_slice(app.opt.loop_slice_us);
    notify("READY=1");
    start_watchdog(&app);
    uv_prepare_init(app.loop, &lost_watch);
    lost_watch.data = &app;
    uv_prepare_start(&lost_watch, watch_lost);
    uv_run(app.loop, UV_RUN_DEFAULT);
    status = app.engine_lost ? 1 : 0;
    rd_log(RD_LOG_INFO, "msg=\"stopped\"");
out:
    if (app.sched)
        rd_sched_stop(app.sched);
    app.sched = NULL; /* sessions freed below must not touch the freed slot pool */
    if (app.queue) {
        rd_queue_close(app.queue); /* on an error path nothing has closed them */
        uv_run(app.loop, UV_RUN_NOWAIT);
        rd_queue_free(app.queue);
    }
    uv_loop_close(app.loop);
    rd_sessions_free(&app);
    rn_tokenizer_free(app.tok);
    rn_engine_free(app.engine);
    rn_model_free(app.model);
    rd_keys_free(app.keys);
    rd_log_close();
    rd_options_free(&app.opt);
    return status;
}
