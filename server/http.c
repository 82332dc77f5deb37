/*
 * http.c -- libmicrohttpd in external-event-loop mode inside the libuv loop.
 *
 * Wiring (each rule verified, see docs/architecture.md):
 *  - MHD's epoll fd is watched by a uv_poll_t; its timeout by a uv_timer_t
 *    re-armed after every MHD_run.
 *  - A parked request or an idle stream is suspended inside an MHD callback;
 *    it is resumed on the loop thread and MHD_run is called right after,
 *    since MHD has no wake-up channel of its own in this mode.
 *  - A suspended connection's socket is out of MHD's epoll set, so a client
 *    that goes away is noticed by our own uv_poll_t (UV_DISCONNECT) on it.
 *    That poll starts at the first suspend and stays armed until MHD reports
 *    the request complete, which MHD always does before it closes the
 *    socket: stopping it at every resume and starting it at every suspend
 *    cost three epoll_ctl calls per streamed chunk (libuv re-registers a
 *    restarted poll), three times the chunk's own send.
 *  - An rd_conn is reference counted: MHD's per-request pointer, a streaming
 *    response and the disconnect poll each hold one.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"

enum { RC_READING, RC_HANDLING, RC_PARKED, RC_STREAMING, RC_REPLIED };

struct rd_http {
    struct MHD_Daemon *d;
    uv_loop_t *loop;
    uv_poll_t poll;
    uv_timer_t timer;
    rd_http_handler handler;
    rd_http_resume_fn resume;
    rd_http_done_fn done;
    void *app;
    rd_http_opts o;
    unsigned in_flight;
    int port;
    int closing; /* handles still to close before h is freed */
};

struct rd_conn {
    rd_http *srv;
    struct MHD_Connection *mc;
    int refs;
    int state;
    int suspended;
    int gone;
    int wake_pending;
    char method[16];
    char *path;
    char *body;
    size_t body_len, body_cap, body_max;
    int too_large;
    void *data;
    char *out; /* stream output not yet taken by MHD */
    size_t out_len, out_off, out_cap;
    int out_end;
    uv_poll_t *dpoll;
    int dpoll_active;
    const char *allow; /* static string for a 405's Allow header */
    /* the request log line */
    char request_id[72];
    const char *principal;
    unsigned status;
    double started;      /* seconds, monotonic */
    rd_conn_stats stats; /* filled by the app */
};

static void rearm(rd_http *h);

/* --------------------------------------------------------------- rd_conn */

static void conn_unref(rd_conn *c)
{
    if (--c->refs > 0)
        return;
    free(c->path);
    free(c->body);
    free(c->out);
    free(c);
}

static void dpoll_closed(uv_handle_t *hd)
{
    rd_conn *c = hd->data;
    free(hd);
    conn_unref(c);
}

static void stop_dpoll(rd_conn *c)
{
    if (c->dpoll && c->dpoll_active) {
        uv_poll_stop(c->dpoll);
        c->dpoll_active = 0;
    }
}

static void resume_only(rd_conn *c)
{
    if (!c->suspended)
        return;
    c->suspended = 0;
    MHD_resume_connection(c->mc);
}

static void resume_now(rd_conn *c)
{
    if (!c->suspended)
        return;
    resume_only(c);
    MHD_run(c->srv->d);
    rearm(c->srv);
}

static void dpoll_cb(uv_poll_t *p, int status, int events)
{
    rd_conn *c = p->data;
    if (status >= 0 && !(events & UV_DISCONNECT))
        return;
    c->gone = 1;
    stop_dpoll(c);
    c->srv->resume(c->srv->app, c);
    resume_now(c);
}

/* Suspends c and watches its socket for the client going away. */
static void suspend(rd_conn *c)
{
    if (c->suspended)
        return;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CONNECTION_FD);
    MHD_suspend_connection(c->mc);
    c->suspended = 1;
    if (!ci)
        return;
    if (!c->dpoll) {
        c->dpoll = malloc(sizeof *c->dpoll);
        if (!c->dpoll || uv_poll_init(c->srv->loop, c->dpoll, ci->connect_fd) != 0) {
            free(c->dpoll);
            c->dpoll = NULL;
            return;
        }
        c->dpoll->data = c;
        c->refs++;
    }
    if (!c->dpoll_active && !c->gone && uv_poll_start(c->dpoll, UV_DISCONNECT, dpoll_cb) == 0)
        c->dpoll_active = 1;
}

const char *rd_conn_method(const rd_conn *c)
{
    return c->method;
}

const char *rd_conn_path(const rd_conn *c)
{
    return c->path;
}

const char *rd_conn_header(rd_conn *c, const char *name)
{
    return MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, name);
}

const char *rd_conn_body(const rd_conn *c, size_t *len)
{
    *len = c->body_len;
    return c->body ? c->body : "";
}

int rd_conn_body_too_large(const rd_conn *c)
{
    return c->too_large;
}

void *rd_conn_get_data(const rd_conn *c)
{
    return c->data;
}

void rd_conn_set_data(rd_conn *c, void *data)
{
    c->data = data;
}

int rd_conn_gone(const rd_conn *c)
{
    return c->gone;
}

void rd_conn_set_allow(rd_conn *c, const char *methods)
{
    c->allow = methods;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

double rd_conn_age(const rd_conn *c)
{
    return now_s() - c->started;
}

/* X-Request-Id: the client's, when it is a sane token, else 16 random hex
 * digits; echoed on the response and in the request's log line. */
static void set_request_id(rd_conn *c)
{
    const char *v = MHD_lookup_connection_value(c->mc, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = v ? strlen(v) : 0;
    int ok = n > 0 && n < sizeof c->request_id;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)v[i]) || strchr("-_.:/+=", v[i]);
    if (ok) {
        memcpy(c->request_id, v, n + 1);
        return;
    }
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(c->request_id + 2 * i, 3, "%02x", rnd[i]);
}

void rd_conn_set_principal(rd_conn *c, const char *name)
{
    c->principal = name;
}

const char *rd_conn_principal(const rd_conn *c)
{
    return c->principal ? c->principal : "";
}

const char *rd_conn_request_id(const rd_conn *c)
{
    return c->request_id;
}

rd_conn_stats *rd_conn_stats_of(rd_conn *c)
{
    return &c->stats;
}

/* ------------------------------------------------------------- replies */

int rd_http_reply(rd_conn *c, unsigned status, const char *body, size_t len,
                  const char *content_type, const char *extra_header, const char *extra_value)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)(uintptr_t)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return -1;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            content_type ? content_type : "application/json");
    MHD_add_response_header(r, "X-Request-Id", c->request_id);
    c->status = status;
    if (extra_header)
        MHD_add_response_header(r, extra_header, extra_value);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED && c->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, c->allow);
    enum MHD_Result ok = MHD_queue_response(c->mc, status, r);
    MHD_destroy_response(r);
    c->state = RC_REPLIED;
    return ok == MHD_YES ? 0 : -1;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    rd_conn *c = cls;
    (void)pos;
    size_t avail = c->out_len - c->out_off;
    if (avail > 0) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, c->out + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out_len)
            c->out_off = c->out_len = 0;
        return (ssize_t)n;
    }
    if (c->out_end)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (c->gone)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    suspend(c); /* nothing to send yet: sleep until rd_http_wake */
    return 0;
}

static void stream_free(void *cls)
{
    conn_unref(cls);
}

int rd_http_stream(rd_conn *c)
{
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, stream_reader, c, stream_free);
    if (!r)
        return -1;
    c->refs++;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    MHD_add_response_header(r, "X-Request-Id", c->request_id);
    c->status = MHD_HTTP_OK;
    enum MHD_Result ok = MHD_queue_response(c->mc, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    c->state = RC_STREAMING;
    return ok == MHD_YES ? 0 : -1;
}

int rd_http_stream_push(rd_conn *c, const char *data, size_t len, int end)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p)
            return -1;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    c->out_end |= end;
    return 0;
}

void rd_http_wait(rd_conn *c)
{
    c->state = RC_PARKED;
    suspend(c);
}

void rd_http_wake(rd_conn *c)
{
    resume_now(c);
}

void rd_http_resume_later(rd_conn *c)
{
    resume_only(c);
}

void rd_http_run(rd_http *h)
{
    MHD_run(h->d);
    rearm(h);
}

/* -------------------------------------------------------------- MHD glue */

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *mc, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    rd_http *h = cls;
    rd_conn *c = *con_cls;
    (void)version;
    if (!c) {
        c = calloc(1, sizeof *c);
        if (!c)
            return MHD_NO;
        c->srv = h;
        c->mc = mc;
        c->refs = 1;
        snprintf(c->method, sizeof c->method, "%s", method);
        c->body_max = h->o.max_body;
        c->path = strdup(url);
        if (!c->path) {
            free(c);
            return MHD_NO;
        }
        h->in_flight++;
        *con_cls = c;
        c->started = now_s();
        set_request_id(c);
        /* a state upload may be as large as a state, and only for a client
         * the app lets in: others cannot make us buffer that much */
        size_t pl = strlen(c->path);
        if (!strcmp(method, "PUT") && pl > 6 && !strcmp(c->path + pl - 6, "/state") &&
            h->o.max_upload && h->o.may_upload && h->o.may_upload(h->app, c))
            c->body_max = h->o.max_upload;
        return MHD_YES;
    }
    if (c->state == RC_READING && *upload_size > 0) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (c->too_large || c->body_len + n > c->body_max) {
            c->too_large = 1; /* keep reading and dropping; answer 413 at the end */
            return MHD_YES;
        }
        if (c->body_len + n + 1 > c->body_cap) {
            size_t cap = c->body_cap ? c->body_cap : 1024;
            while (cap < c->body_len + n + 1)
                cap *= 2;
            char *b = realloc(c->body, cap);
            if (!b)
                return MHD_NO;
            c->body = b;
            c->body_cap = cap;
        }
        memcpy(c->body + c->body_len, upload, n);
        c->body_len += n;
        c->body[c->body_len] = '\0';
        return MHD_YES;
    }
    if (c->state == RC_READING) {
        c->state = RC_HANDLING;
        return h->handler(h->app, c) == 0 ? MHD_YES : MHD_NO;
    }
    if (c->state == RC_PARKED) {
        c->state = RC_HANDLING;
        if (c->gone)
            return MHD_NO;
        h->resume(h->app, c);
        return c->state == RC_HANDLING ? MHD_NO : MHD_YES;
    }
    return MHD_YES;
}

/* The client's address as text ("-" when unknown). */
static const char *client_addr(rd_conn *c, char *buf, size_t cap)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c->mc, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(buf, cap, "-");
    if (!ci || !ci->client_addr)
        return buf;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  (socklen_t)cap);
    return buf;
}

/* One line per request, when it ends (answered, streamed out, or abandoned:
 * status 499 when the client left first). */
static void log_request(rd_http *h, rd_conn *c, int completed)
{
    if (!h->o.log_requests || !rd_log_enabled(RD_LOG_INFO))
        return;
    char path[200], client[64];
    unsigned status = completed && c->status ? c->status : 499;
    double dur = now_s() - c->started;
    rd_log(RD_LOG_INFO,
           "msg=request request_id=%s method=%s path=\"%s\" status=%u tokens_in=%d tokens_out=%d "
           "ttft_ms=%.1f duration_ms=%.1f client=%s",
           c->request_id, c->method, rd_log_clean(path, sizeof path, c->path), status,
           c->stats.tokens_in, c->stats.tokens_out, c->stats.ttft_s * 1e3, dur * 1e3,
           client_addr(c, client, sizeof client));
    if (h->o.on_request_end)
        h->o.on_request_end(h->app, c, status, dur);
}

static void completed_cb(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    rd_http *h = cls;
    rd_conn *c = *con_cls;
    (void)mc;
    if (!c)
        return;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
        c->gone = 1;
    h->done(h->app, c);
    log_request(h, c, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
    h->in_flight--;
    if (c->dpoll) {
        stop_dpoll(c);
        uv_close((uv_handle_t *)c->dpoll, dpoll_closed);
        c->dpoll = NULL;
    }
    *con_cls = NULL;
    conn_unref(c);
}

static void run_cb(uv_poll_t *p, int status, int events)
{
    rd_http *h = p->data;
    (void)status;
    (void)events;
    MHD_run(h->d);
    rearm(h);
}

static void timer_cb(uv_timer_t *t)
{
    rd_http *h = t->data;
    MHD_run(h->d);
    rearm(h);
}

static void rearm(rd_http *h)
{
    MHD_UNSIGNED_LONG_LONG ms;
    if (MHD_get_timeout(h->d, &ms) == MHD_YES)
        uv_timer_start(&h->timer, timer_cb, ms, 0);
    else
        uv_timer_stop(&h->timer);
}

static int daemon_starting; /* its errors are reported by rd_http_start itself */

static void log_cb(void *cls, const char *fmt, va_list ap)
{
    char msg[512], clean[512];
    (void)cls;
    if (daemon_starting)
        return;
    vsnprintf(msg, sizeof msg, fmt, ap);
    rd_log(RD_LOG_WARN, "component=http msg=\"%s\"", rd_log_clean(clean, sizeof clean, msg));
}

static struct MHD_Daemon *start_daemon(rd_http *h, struct sockaddr_storage *ss, int v6)
{
    unsigned flags =
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    return MHD_start_daemon(flags, (uint16_t)h->o.port, NULL, NULL, access_cb, h,
                            MHD_OPTION_EXTERNAL_LOGGER, log_cb, NULL, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)ss, MHD_OPTION_NOTIFY_COMPLETED, completed_cb, h,
                            MHD_OPTION_CONNECTION_LIMIT, h->o.max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, h->o.timeout_s, MHD_OPTION_END);
}

int rd_http_start(rd_http **out, uv_loop_t *loop, const rd_http_opts *o, rd_http_handler hd,
                  rd_http_resume_fn resume, rd_http_done_fn done, void *app, char *err,
                  size_t errlen)
{
    struct sockaddr_storage ss;
    int v6 = strchr(o->host, ':') != NULL;
    memset(&ss, 0, sizeof ss);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)o->port);
        if (inet_pton(AF_INET6, o->host, &a->sin6_addr) != 1)
            return snprintf(err, errlen, "bad listen address '%s'", o->host), -1;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)o->port);
        if (inet_pton(AF_INET, o->host, &a->sin_addr) != 1)
            return snprintf(err, errlen, "bad listen address '%s' (use an IP address)", o->host),
                   -1;
    }
    rd_http *h = calloc(1, sizeof *h);
    if (!h)
        return snprintf(err, errlen, "out of memory"), -1;
    *h =
        (rd_http){.loop = loop, .handler = hd, .resume = resume, .done = done, .app = app, .o = *o};
    daemon_starting = 1;
    h->d = start_daemon(h, &ss, v6);
    daemon_starting = 0;
    if (!h->d) {
        snprintf(err, errlen, "cannot listen on %s port %d (address in use or not allowed?)",
                 o->host, o->port);
        free(h);
        return -1;
    }
    const union MHD_DaemonInfo *ep = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    const union MHD_DaemonInfo *pi = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = pi ? pi->port : o->port;
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    if (!ep || uv_poll_init(loop, &h->poll, ep->epoll_fd) != 0) {
        MHD_stop_daemon(h->d);
        free(h);
        return snprintf(err, errlen, "cannot watch the HTTP daemon's epoll fd"), -1;
    }
    h->poll.data = h;
    uv_poll_start(&h->poll, UV_READABLE, run_cb);
    rearm(h);
    *out = h;
    return 0;
}

int rd_http_port(const rd_http *h)
{
    return h->port;
}

unsigned rd_http_in_flight(const rd_http *h)
{
    return h->in_flight;
}

void rd_http_quiesce(rd_http *h)
{
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    MHD_run(h->d);
    rearm(h);
}

/* h holds both handles: it is freed after the second one is closed (libuv
 * runs close callbacks in no promised order). */
static void handle_closed(uv_handle_t *hd)
{
    rd_http *h = hd->data;
    if (--h->closing == 0)
        free(h);
}

void rd_http_stop(rd_http *h)
{
    h->closing = 2;
    h->poll.data = h;
    h->timer.data = h;
    uv_poll_stop(&h->poll);
    uv_close((uv_handle_t *)&h->poll, handle_closed);
    MHD_stop_daemon(h->d);
    uv_timer_stop(&h->timer);
    uv_close((uv_handle_t *)&h->timer, handle_closed);
}
