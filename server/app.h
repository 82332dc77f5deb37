/*
 * app.h -- the daemon's shared state and the handler entry points.  Owned
 * by main.c; used on the loop thread (the engine thread only sees the queue
 * and the scheduler).
 */
#ifndef RD_APP_H
#define RD_APP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http.h"
#include "jw.h"
#include "model.h"
#include "keys.h"
#include "options.h"
#include "queue.h"
#include "retnet.h"
#include "scheduler.h"
#include "tokenizer.h"

typedef struct rd_session rd_session;

typedef struct rd_app {
    rd_options opt;
    uv_loop_t *loop;
    rn_model *model;
    const rn_config *cfg;
    rn_engine *engine;
    rn_tokenizer *tok;
    rd_queue *queue;
    rd_sched *sched;
    rd_http *http;
    int engine_every_core; /* the CPU engine's threads take every core */
    uv_timer_t keepalive;
    uv_signal_t sigterm, sigint, sighup;
    int draining;
    int engine_lost; /* the engine's device failed for good: draining to exit 1 */
    int64_t started;
    rd_keys *keys;        /* API keys; none: the API is open */
    rd_session *sessions; /* linked list */
    int n_sessions;
    struct rd_req *streams; /* live streaming requests (keep-alive comments) */
    int streams_decoding;   /* of those, the ones past their first token (rd_queue_poll) */
    size_t host_bytes;      /* state blobs held in the host tier */
    int offloading;         /* offloads in flight (their slots free up soon) */
    int restoring;          /* restores in flight */
    int spill_failed;       /* the last write to the disk tier failed */
    int disk_io;            /* blob reads and writes running on libuv's thread pool */
    size_t spilling_bytes;  /* host-tier bytes those writes will free */
    unsigned slow_disk_ms;  /* fault injection (RETNETD_FAULT_SLOW_DISK_MS): each read and
                                 write of --state-dir waits this long (at most 10 s) */
    struct rd_req *parked;  /* requests waiting for an offload or a restore */
    uv_timer_t ttl_timer, persist_timer;
} rd_app;

/* Request context of one HTTP request (rd_conn data). */
typedef struct rd_req {
    rd_app *app;
    rd_conn *conn;
    int kind; /* RD_REQ_* */
    int stream, include_usage, echo, chat;
    int continuous_usage; /* stream_options.continuous_usage_stats: usage in every chunk */
    rd_job **jobs;        /* one per prompt */
    int n_jobs;
    char **stops;
    int n_stops;
    char id[40];
    int64_t created;
    char **prompt_text; /* decoded prompt per job, for echo */
    rd_session *session;
    rd_session *fork_src; /* RD_REQ_FORK: the session copied from (busy until done) */
    int chunks_sent, done_sent;
    long tok_seen;    /* generated tokens seen so far (metrics, log line) */
    double tok_last;  /* when the last of them arrived (seconds of request age) */
    int err_status;   /* first job failure seen by sync_req (not 499) */
    int answered;     /* state requests: the reply went out */
    int made_session; /* RD_REQ_IMPORT: the session was made for this upload */
    int64_t import_tokens;
    char err_msg[200];
    unsigned role_sent; /* choices whose first chat delta (role) went out */
    rd_jw chunk;        /* the stream chunk being written, reused */
    struct rd_req *next_stream, *prev_stream;
    int decoding; /* a stream past its first token: counted in app->streams_decoding */
} rd_req;

enum { RD_REQ_COMPLETION = 1, RD_REQ_FORK, RD_REQ_EXPORT, RD_REQ_IMPORT, RD_REQ_PARKED };

int rd_api_handle(void *app, rd_conn *c);
int rd_api_handle_again(rd_app *app, rd_conn *c); /* a parked request's new turn */
int rd_api_may_upload(void *app, rd_conn *c);     /* may this PUT send a state-sized body? */
void rd_api_request_end(void *app, rd_conn *c, unsigned status, double seconds); /* metrics */
void rd_api_resume(void *app, rd_conn *c);
void rd_api_done(void *app, rd_conn *c);
/* The queue's ready callback: drains the ready list. */
void rd_api_on_ready(void *app);
/* Sends ': keep-alive' to streams still waiting for their first token. */
void rd_api_keepalive(rd_app *app);

/* api_completions.c */
int rd_api_completions(rd_app *app, rd_conn *conn, int chat, rd_session *sess);
/* Parses and validates a request body as the endpoint does, without running
 * it: 0 when valid, else the HTTP status it would be refused with (fuzzing). */
int rd_api_completion_check(rd_app *app, const char *body, size_t len, int chat);
void rd_api_job_ready(rd_app *app, rd_job *j);
int rd_api_completion_resume(rd_app *app, rd_conn *conn);
void rd_api_completion_done(rd_app *app, rd_conn *conn);

/* api_state.c */
int rd_api_state_get(rd_app *app, rd_conn *c, rd_session *s);
/* s: the session named id, or NULL to create it */
int rd_api_state_put(rd_app *app, rd_conn *c, const char *id, rd_session *s);
void rd_api_state_resume(rd_app *app, rd_conn *c);
void rd_api_state_done(rd_app *app, rd_conn *c);
int rd_session_id_valid(const char *id);

/* sessions.c */
rd_session *rd_session_find(rd_app *app, const char *id);
/* The session if the request's principal may see it (its creator's key, or
 * any request when no keys are set), else NULL. */
rd_session *rd_session_find_for(rd_app *app, rd_conn *c, const char *id);
void rd_session_set_owner(rd_session *s, const char *principal);
const char *rd_session_owner(const rd_session *s);
int rd_session_visible(rd_app *app, const rd_session *s, const char *principal);
/* 0 and *out, -2 when no slot or the session limit is reached, -1 otherwise */
int rd_session_create(rd_app *app, rd_session **out);
int rd_session_create_with_id(rd_app *app, const char *id, rd_session **out);
/* A session whose state is the file in --state-dir (restored when used). */
int rd_session_create_on_disk(rd_app *app, const char *id, int64_t tokens, rd_session **out);
void rd_session_set_tokens(rd_session *s, int64_t tokens);
void rd_session_delete(rd_app *app, rd_session *s);
int rd_session_busy(const rd_session *s);
void rd_session_set_busy(rd_session *s, int busy);
int rd_session_slot(const rd_session *s);
int rd_session_take_fresh(rd_session *s);
int rd_session_is_fresh(const rd_session *s);
int64_t rd_session_tokens(const rd_session *s);
void rd_session_advance(rd_session *s, int64_t tokens);
char *rd_session_json(const rd_session *s); /* malloc'd JSON object */
const char *rd_session_id(const rd_session *s);
void rd_sessions_free(rd_app *app);
rd_session *rd_session_next(const rd_session *s); /* the list, for persistence */

/* tiers.c: where idle sessions' states go when slots are needed */
enum { RD_TIER_GO = 1, RD_TIER_PARKED = 0, RD_TIER_ANSWERED = 2 };
/* Before a request on session s (or NULL) that needs `need` free slots
 * besides s's: GO, or PARKED (the request is handled again from the start
 * once an offload or restore finished), or ANSWERED (an error went out). */
int rd_tier_ready(rd_app *app, rd_conn *c, rd_session *s, int need);
int rd_tier_moving(const rd_session *s);
void rd_tier_op_done(rd_app *app, rd_job *j); /* a tier job's engine part finished */
void rd_tier_wake(rd_app *app); /* a slot or a session may be free now: parked requests retry */
void rd_tier_resume(rd_app *app, rd_conn *c); /* a parked request's turn again */
void rd_tier_done(rd_app *app, rd_conn *c);   /* a parked request's client left */
void rd_tier_start_ttl(rd_app *app);
void rd_tier_start_persist(rd_app *app);
/* GET /v1/sessions (malloc'd): the sessions the principal may see */
char *rd_sessions_list_json(rd_app *app, const char *principal);
/* persist.c */
int rd_persist_restore(rd_app *app);  /* at start, before HTTP listens */
int rd_persist_save_all(rd_app *app); /* at stop, with the engine thread joined */
void rd_persist_forget(rd_app *app, const char *id);
/* Does --state-dir hold a file for session id? */
int rd_persist_has_file(const rd_app *app, const char *id);
/* Writes a session's blob and owner files to --state-dir (atomically); -1
 * with the reason in why (cap bytes), not logged.  Reads only app->opt: safe
 * on libuv's worker threads. */
int rd_persist_write_files(const rd_app *app, const char *id, const char *owner,
                           const unsigned char *blob, size_t len, char *why, size_t cap);
/* Reads and checks a session's file: its blob (malloc'd), tokens and
 * position, or NULL with the reason in why (cap bytes) and *corrupt set when
 * the file itself is bad (not an I/O error).  Reads only app->opt, the
 * engine's state size and the model: safe on libuv's worker threads. */
unsigned char *rd_persist_read_files(const rd_app *app, const char *id, size_t *len,
                                     int64_t *tokens, int64_t *pos, int *corrupt, char *why,
                                     size_t cap);

/* json.c */
/* Sends {"error":{...}} with status; param may be NULL; code may be NULL. */
int rd_json_error(rd_conn *c, unsigned status, const char *type, const char *param,
                  const char *code, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* The error type a failed job's status answers with: service_unavailable_error
 * (503), rate_limit_error (429), else server_error. */
const char *rd_json_fail_type(unsigned status);
int rd_json_reply(rd_conn *c, unsigned status, void *cjson_obj); /* takes the object */
/* Parses a request body that must be exactly one JSON object (whitespace
 * around it allowed): the cJSON object, or NULL with the reason in why. */
void *rd_json_parse_object(const char *s, size_t len, char *why, size_t whylen);

#endif
