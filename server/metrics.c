/*
 * metrics.c -- see metrics.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "metrics.h"
#include "session.h"

#ifndef RD_VERSION
#define RD_VERSION "unknown"
#endif

#define MAX_SERIES 128
#define MAX_BUCKETS 16

typedef struct {
    const char *endpoint;
    unsigned status;
    unsigned long long count;
    double seconds;
} req_series;

typedef struct {
    const double *bounds;
    int n;
    unsigned long long counts[MAX_BUCKETS]; /* per bucket, not cumulative */
    unsigned long long total;
    double sum;
} histogram;

static const double latency_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                        1,     2.5,  5,     10,   30,  60,   120};
static const double itl_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                    0.05,   0.1,   0.25,   0.5,   1,    2.5};

static struct {
    req_series req[MAX_SERIES];
    int n_req;
    histogram ttft, itl, duration;
    unsigned long long tokens_in, tokens_out;
} m = {
    .ttft = {latency_bounds, (int)(sizeof latency_bounds / sizeof latency_bounds[0]), {0}, 0, 0},
    .itl = {itl_bounds, (int)(sizeof itl_bounds / sizeof itl_bounds[0]), {0}, 0, 0},
    .duration =
        {latency_bounds, (int)(sizeof latency_bounds / sizeof latency_bounds[0]), {0}, 0, 0},
};

static void observe(histogram *h, double v, unsigned long long times)
{
    int b = 0;
    while (b < h->n && v > h->bounds[b])
        b++;
    h->counts[b] += times; /* b == n: the +Inf bucket */
    h->total += times;
    h->sum += v * (double)times;
}

const char *rd_metrics_endpoint(const char *method, const char *path)
{
    (void)method;
    static const struct {
        const char *prefix, *name;
        int exact;
    } map[] = {
        {"/v1/completions", "completions", 1},
        {"/v1/chat/completions", "chat_completions", 1},
        {"/v1/models", "models", 0},
        {"/tokenize", "tokenize", 1},
        {"/detokenize", "detokenize", 1},
        {"/health", "health", 1},
        {"/ready", "ready", 1},
        {"/metrics", "metrics", 1},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        size_t n = strlen(map[i].prefix);
        if (!strncmp(path, map[i].prefix, n) && (!map[i].exact ? 1 : path[n] == '\0'))
            return map[i].name;
    }
    if (!strncmp(path, "/v1/sessions", 12)) {
        size_t n = strlen(path);
        if (n > 6 && !strcmp(path + n - 6, "/state"))
            return "session_state";
        if (n > 5 && !strcmp(path + n - 5, "/fork"))
            return "session_fork";
        return "sessions";
    }
    return "other";
}

void rd_metrics_request(const char *endpoint, unsigned status, double seconds)
{
    req_series *s = NULL;
    for (int i = 0; i < m.n_req && !s; i++)
        if (m.req[i].status == status && !strcmp(m.req[i].endpoint, endpoint))
            s = &m.req[i];
    if (!s && m.n_req < MAX_SERIES) {
        s = &m.req[m.n_req++];
        *s = (req_series){endpoint, status, 0, 0};
    }
    if (s) {
        s->count++;
        s->seconds += seconds;
    }
    if (!strcmp(endpoint, "completions") || !strcmp(endpoint, "chat_completions"))
        observe(&m.duration, seconds, 1);
}

void rd_metrics_ttft(double seconds)
{
    observe(&m.ttft, seconds, 1);
}

void rd_metrics_tokens_out(int n, double gap, int first)
{
    if (n <= 0)
        return;
    m.tokens_out += (unsigned long long)n;
    /* the first token's wait is TTFT, not an inter-token gap */
    int gaps = first ? n - 1 : n;
    if (gaps > 0)
        observe(&m.itl, gap / n, (unsigned long long)gaps);
}

void rd_metrics_tokens_in(int n)
{
    if (n > 0)
        m.tokens_in += (unsigned long long)n;
}

/* ----------------------------------------------------------------- text */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = o->cap - o->len;
        va_start(ap, fmt);
        int n = o->buf ? vsnprintf(o->buf + o->len, room, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap ? 2 * o->cap : 16384;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
}

static void meta(out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_histogram(out *o, const char *name, const char *help, const histogram *h)
{
    unsigned long long cum = 0;
    meta(o, name, "histogram", help);
    for (int b = 0; b < h->n; b++) {
        cum += h->counts[b];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name, h->total, name,
        h->sum, name, h->total);
}

static void put_gauge(out *o, const char *name, const char *help, double v)
{
    meta(o, name, "gauge", help);
    put(o, "%s %.17g\n", name, v);
}

static void put_requests(out *o)
{
    meta(o, "retnetd_requests_total", "counter",
         "HTTP requests by endpoint and status (499: the client left)");
    for (int i = 0; i < m.n_req; i++)
        put(o, "retnetd_requests_total{endpoint=\"%s\",status=\"%u\"} %llu\n", m.req[i].endpoint,
            m.req[i].status, m.req[i].count);
}

static void put_tiers(out *o, rd_app *app)
{
    int n[3] = {0, 0, 0};
    for (rd_session *s = app->sessions; s; s = s->next)
        n[s->tier]++;
    static const char *const names[] = {"hot", "host", "disk"};
    meta(o, "retnetd_sessions", "gauge", "sessions by where their state is");
    for (int t = 0; t < 3; t++)
        put(o, "retnetd_sessions{tier=\"%s\"} %d\n", names[t], n[t]);
    put_gauge(o, "retnetd_host_tier_bytes", "bytes of session states held in host memory",
              (double)app->host_bytes);
    put_gauge(o, "retnetd_host_tier_budget_bytes", "host memory allowed for session states",
              (double)app->opt.host_state_memory);
}

char *rd_metrics_render(rd_app *app, size_t *len)
{
    out o = {0};
    rd_sched_stats st = {0};
    if (app->sched)
        rd_sched_get_stats(app->sched, &st);
    meta(&o, "retnetd_build_info", "gauge", "version and backend of this server (always 1)");
    put(&o, "retnetd_build_info{version=\"%s\",backend=\"%s\",model=\"%s\"} 1\n", RD_VERSION,
        app->engine ? rn_engine_backend_name(app->engine) : "none", app->opt.model_name);
    put_requests(&o);
    put_histogram(&o, "retnetd_time_to_first_token_seconds",
                  "request arrival to its first generated token", &m.ttft);
    put_histogram(&o, "retnetd_inter_token_latency_seconds",
                  "time between consecutive tokens of a stream", &m.itl);
    put_histogram(&o, "retnetd_request_duration_seconds",
                  "completion and chat requests, arrival to end", &m.duration);
    meta(&o, "retnetd_prompt_tokens_total", "counter", "prompt tokens of finished requests");
    put(&o, "retnetd_prompt_tokens_total %llu\n", m.tokens_in);
    meta(&o, "retnetd_generation_tokens_total", "counter", "tokens generated");
    put(&o, "retnetd_generation_tokens_total %llu\n", m.tokens_out);
    meta(&o, "retnetd_prefix_cache_hits_total", "counter",
         "prompts that reused a cached prefix state");
    put(&o, "retnetd_prefix_cache_hits_total %ld\n", st.prefix_hits);
    meta(&o, "retnetd_sampled_tokens_total", "counter",
         "tokens chosen, by where: picked by the engine (greedy), drawn from a row reduced to "
         "its candidates, drawn from a whole row of logits");
    put(&o, "retnetd_sampled_tokens_total{from=\"picks\"} %ld\n", st.tok_picked);
    put(&o, "retnetd_sampled_tokens_total{from=\"reduced\"} %ld\n", st.tok_reduced);
    put(&o, "retnetd_sampled_tokens_total{from=\"logits\"} %ld\n", st.tok_row);
    meta(&o, "retnetd_prefix_cache_tokens_total", "counter",
         "prompt tokens not prefilled thanks to the prefix cache");
    put(&o, "retnetd_prefix_cache_tokens_total %ld\n", st.prefix_tokens);
    if (app->queue) {
        unsigned long by_engine, by_timer;
        rd_queue_wake_counts(app->queue, &by_engine, &by_timer);
        meta(&o, "retnetd_http_wakes_total", "counter",
             "wakes of the HTTP thread for engine news, by the engine thread or its own timer");
        put(&o, "retnetd_http_wakes_total{by=\"engine\"} %lu\n", by_engine);
        put(&o, "retnetd_http_wakes_total{by=\"timer\"} %lu\n", by_timer);
    }
    put_gauge(&o, "retnetd_queue_depth", "requests waiting for state slots", st.waiting);
    put_gauge(&o, "retnetd_running_requests", "requests the engine is prefilling or decoding",
              st.running);
    put_gauge(&o, "retnetd_batch_size", "sequences in the last decode step", st.last_batch);
    put_gauge(&o, "retnetd_state_slots", "state slots in the engine's pool", st.slots_total);
    put_gauge(&o, "retnetd_state_slots_used", "state slots in use (sessions and running requests)",
              st.slots_used);
    put_gauge(&o, "retnetd_state_bytes_per_slot", "bytes of one session's state",
              app->engine ? (double)rn_engine_slot_bytes(app->engine) : 0);
    put_tiers(&o, app);
    size_t used = 0, total = 0;
    if (app->engine && rn_engine_device_memory(app->engine, &used, &total) == RN_OK) {
        put_gauge(&o, "retnetd_device_memory_used_bytes", "device memory in use", (double)used);
        put_gauge(&o, "retnetd_device_memory_total_bytes", "device memory", (double)total);
    }
    if (o.oom) {
        free(o.buf);
        return NULL;
    }
    *len = o.len;
    return o.buf;
}
