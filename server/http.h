/*
 * http.h -- libmicrohttpd driven by the libuv loop (the only file that
 * includes microhttpd.h is http.c).  Handlers see an rd_conn: the method,
 * path, headers and the whole body, and answer with rd_http_reply (one
 * buffer) or rd_http_stream (a generator the loop refills), or park the
 * request with rd_http_wait until an engine job is ready.
 *
 * Threads: everything here runs on the loop thread.
 */
#ifndef RD_HTTP_H
#define RD_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct rd_conn rd_conn;
typedef struct rd_http rd_http;

/* What the app tells the request log line (and metrics) about a request. */
typedef struct rd_conn_stats {
    int tokens_in, tokens_out;
    double ttft_s;        /* request start to first token sent; 0 if none */
    const char *endpoint; /* metrics label (static string); NULL: from the path */
} rd_conn_stats;

/* Called for a complete request (body read); returns 0, or -1 to drop the
 * connection.  The handler must answer (reply/stream) or wait. */
typedef int (*rd_http_handler)(void *app, rd_conn *c);
/* Called when a parked request may continue (its job is ready, or it was
 * disconnected: rd_http_gone). */
typedef void (*rd_http_resume_fn)(void *app, rd_conn *c);
/* Called when a request ends for good (completed or aborted); the app drops
 * its references to c's job there. */
typedef void (*rd_http_done_fn)(void *app, rd_conn *c);

typedef struct rd_http_opts {
    const char *host;
    int port;
    size_t max_body;
    size_t max_upload; /* body limit of PUT .../state uploads that may_upload allows */
    int (*may_upload)(void *app, rd_conn *c); /* checked before the body is read */
    int log_requests;                         /* one log line per request */
    /* called once per request as it ends (status 499: the client left) */
    void (*on_request_end)(void *app, rd_conn *c, unsigned status, double seconds);
    unsigned max_connections;
    unsigned timeout_s;
} rd_http_opts;

int rd_http_start(rd_http **out, uv_loop_t *loop, const rd_http_opts *o, rd_http_handler h,
                  rd_http_resume_fn resume, rd_http_done_fn done, void *app, char *err,
                  size_t errlen);
/* Stops accepting new connections (drain). */
void rd_http_quiesce(rd_http *h);
/* Stops the daemon and closes its handles (no request may be parked). */
void rd_http_stop(rd_http *h);
int rd_http_port(const rd_http *h);
unsigned rd_http_in_flight(const rd_http *h);

const char *rd_conn_method(const rd_conn *c);
const char *rd_conn_path(const rd_conn *c);
const char *rd_conn_header(rd_conn *c, const char *name);
const char *rd_conn_body(const rd_conn *c, size_t *len);
int rd_conn_body_too_large(const rd_conn *c);
void *rd_conn_get_data(const rd_conn *c);
void rd_conn_set_data(rd_conn *c, void *data);
int rd_conn_gone(const rd_conn *c);
/* Methods the path allows (a static string), sent as Allow with a 405. */
void rd_conn_set_allow(rd_conn *c, const char *methods);
const char *rd_conn_request_id(const rd_conn *c);
/* The name of the API key the request was authorized with ("" when open). */
void rd_conn_set_principal(rd_conn *c, const char *name);
const char *rd_conn_principal(const rd_conn *c);
rd_conn_stats *rd_conn_stats_of(rd_conn *c);
double rd_conn_age(const rd_conn *c); /* seconds since the request arrived */

/* Answers with status and a body (copied); content_type NULL = JSON. */
int rd_http_reply(rd_conn *c, unsigned status, const char *body, size_t len,
                  const char *content_type, const char *extra_header, const char *extra_value);
/* Starts an SSE response; later output comes through rd_http_stream_push. */
int rd_http_stream(rd_conn *c);
/* Appends bytes to a stream's output; end = 1 after the last bytes. */
int rd_http_stream_push(rd_conn *c, const char *data, size_t len, int end);
/* Parks the request until rd_http_wake (the handler will not be called
 * again; the resume callback will). */
void rd_http_wait(rd_conn *c);
/* Lets a parked request or a stream waiting for output continue (runs MHD,
 * which may complete other connections: do not hold rd_conn or request
 * pointers across it while walking a list). */
void rd_http_wake(rd_conn *c);
/* The same without running MHD; call rd_http_run once afterwards. */
void rd_http_resume_later(rd_conn *c);
void rd_http_run(rd_http *h);

#endif
