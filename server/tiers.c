/*
 * tiers.c -- where an idle session's state lives.
 *
 *   hot    in a state slot of the engine (device memory with CUDA)
 *   host   a state blob in host memory, up to --host-state-memory bytes
 *   disk   a state blob file in --state-dir
 *
 * When a request needs slots that idle sessions hold, the least recently
 * used idle sessions are offloaded: an export on the engine thread
 * (RD_OP_EXPORT), then their slots are released and the blob is kept in
 * host memory; past the host budget the oldest blobs are written to disk.
 * A request on a cold session first restores it: a free slot (offloading
 * others if need be) and an import (RD_OP_IMPORT).  Meanwhile the request
 * is parked; when an offload or restore finishes, every parked request is
 * handled again from the start, so each handler sees only hot sessions and
 * free slots.  Loop thread only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "log.h"
#include "session.h"
#include "state_blob.h"

static int free_slots(rd_app *app)
{
    rd_sched_stats st;
    rd_sched_get_stats(app->sched, &st);
    return st.slots_total - st.slots_used;
}

/* Will a slot free up without us: a running request ends, a session in use
 * becomes idle (then it can be moved out)? */
static int slots_will_free(rd_app *app)
{
    rd_sched_stats st;
    rd_sched_get_stats(app->sched, &st);
    if (st.running > 0 || st.waiting > 0)
        return 1;
    for (rd_session *s = app->sessions; s; s = s->next)
        if (s->slot >= 0 && s->busy && !s->pinned)
            return 1;
    return 0;
}

int rd_tier_moving(const rd_session *s)
{
    return s->moving;
}

/* --------------------------------------------------------------- parking */

static int park(rd_app *app, rd_conn *c)
{
    rd_req *r = calloc(1, sizeof *r);
    if (!r)
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory"), RD_TIER_ANSWERED;
    r->app = app;
    r->conn = c;
    r->kind = RD_REQ_PARKED;
    r->next_stream = app->parked;
    if (app->parked)
        app->parked->prev_stream = r;
    app->parked = r;
    rd_conn_set_data(c, r);
    rd_http_wait(c);
    return RD_TIER_PARKED;
}

static void unlink_parked(rd_app *app, rd_req *r)
{
    if (r->prev_stream)
        r->prev_stream->next_stream = r->next_stream;
    else
        app->parked = r->next_stream;
    if (r->next_stream)
        r->next_stream->prev_stream = r->prev_stream;
}

/* Something moved or ended: every parked request gets another look. */
void rd_tier_wake(rd_app *app)
{
    for (rd_req *r = app->parked; r; r = r->next_stream)
        rd_http_resume_later(r->conn);
}

void rd_tier_resume(rd_app *app, rd_conn *c)
{
    rd_req *r = rd_conn_get_data(c);
    unlink_parked(app, r);
    free(r);
    rd_conn_set_data(c, NULL);
    rd_api_handle_again(app, c); /* from the top: it answers, waits, or parks again */
}

void rd_tier_done(rd_app *app, rd_conn *c)
{
    rd_req *r = rd_conn_get_data(c);
    unlink_parked(app, r);
    free(r);
    rd_conn_set_data(c, NULL);
}

/* ------------------------------------------------------------ host / disk */

static rd_session *lru(rd_app *app, rd_tier tier, const rd_session *exclude)
{
    rd_session *best = NULL;
    for (rd_session *s = app->sessions; s; s = s->next)
        if (s != exclude && s->tier == tier && !s->busy && !s->moving && !s->pinned &&
            (tier != RD_TIER_HOST || s->blob) && (!best || s->last_used < best->last_used))
            best = s;
    return best;
}

/* ------------------------------------------------------------ disk I/O */

/* Fault injection (RETNETD_FAULT_SLOW_DISK_MS): on the worker thread. */
static void slow_disk(const rd_app *app)
{
    if (app->slow_disk_ms)
        uv_sleep(app->slow_disk_ms);
}

/* A read or write finished on the thread pool (loop thread): parked
 * requests retry, and MHD handles the connections they resumed now. */
static void disk_io_done(rd_app *app)
{
    app->disk_io--;
    rd_tier_wake(app);
    if (app->http)
        rd_http_run(app->http);
}

/* A host-tier session whose file holds its state gives up its blob. */
static void to_disk_tier(rd_app *app, rd_session *s)
{
    app->host_bytes -= s->blob_len;
    free(s->blob);
    s->blob = NULL;
    s->blob_len = 0;
    s->tier = RD_TIER_DISK;
    s->dirty = 0;
}

/* A blob on its way to --state-dir on libuv's thread pool, so a slow disk
 * never stalls the loop (streams, health checks): a 1.3B model's state is
 * 96 MiB with an fsync.  The session stays `moving` (requests for it park,
 * nothing else picks it) until the write is done.  While the server stops
 * (no scheduler any more) writes are synchronous: the drain has waited for
 * the running ones already. */
typedef enum { DW_SPILL, DW_SNAPSHOT } dw_kind;

typedef struct {
    uv_work_t req;
    rd_app *app;
    rd_session *s;
    char id[64], owner[32]; /* copies: the worker thread never reads the session */
    unsigned char *blob;    /* the session's (spill, host snapshot) or the job's (owned) */
    size_t len;
    int owns_blob, rc;
    dw_kind kind;
    char why[512];
} disk_write;

static void dw_work(uv_work_t *req)
{
    disk_write *w = req->data;
    slow_disk(w->app);
    w->rc = rd_persist_write_files(w->app, w->id, w->owner, w->blob, w->len, w->why, sizeof w->why);
}

static void spill_to_disk(rd_app *app);

/* What a finished write means for its session (loop thread). */
static void dw_settle(rd_app *app, rd_session *s, dw_kind kind, size_t len, int rc, const char *why)
{
    if (rc != 0)
        rd_log(RD_LOG_ERROR, "msg=\"cannot write a session's state\" id=%s reason=\"%s\"", s->id,
               why);
    if (kind == DW_SPILL && rc == 0) {
        app->spill_failed = 0;
        to_disk_tier(app, s);
        rd_log(RD_LOG_INFO, "msg=\"session to disk\" id=%s bytes=%zu", s->id, len);
    } else if (kind == DW_SPILL) {
        app->spill_failed = 1; /* retried at the next offload */
    } else if (rc == 0) {
        s->dirty = 0;
    }
}

static void dw_after(uv_work_t *req, int status)
{
    disk_write *w = req->data;
    rd_app *app = w->app;
    if (status != 0 && w->rc == 0) {
        w->rc = -1;
        snprintf(w->why, sizeof w->why, "%s", uv_strerror(status));
    }
    if (w->kind == DW_SPILL)
        app->spilling_bytes -= w->len;
    w->s->moving = 0;
    dw_settle(app, w->s, w->kind, w->len, w->rc, w->why);
    int again = w->kind == DW_SPILL && w->rc == 0; /* a failure waits for the next offload */
    if (w->owns_blob)
        free(w->blob);
    free(w);
    if (again)
        spill_to_disk(app); /* the budget may have been exceeded meanwhile */
    disk_io_done(app);
}

/* Writes blob (len bytes; freed afterwards when owns_blob) as s's file:
 * started on the thread pool, or done at once while stopping or when the
 * pool refuses. */
static void dw_start(rd_app *app, rd_session *s, unsigned char *blob, size_t len, int owns_blob,
                     dw_kind kind)
{
    disk_write *w = app->sched ? calloc(1, sizeof *w) : NULL;
    if (w) {
        *w = (disk_write){
            .app = app, .s = s, .blob = blob, .len = len, .owns_blob = owns_blob, .kind = kind};
        snprintf(w->id, sizeof w->id, "%s", s->id);
        snprintf(w->owner, sizeof w->owner, "%s", s->owner);
        w->req.data = w;
        if (uv_queue_work(app->loop, &w->req, dw_work, dw_after) == 0) {
            s->moving = 1;
            app->disk_io++;
            if (kind == DW_SPILL)
                app->spilling_bytes += len;
            return;
        }
        free(w);
    }
    char why[512] = "";
    int rc = rd_persist_write_files(app, s->id, s->owner, blob, len, why, sizeof why);
    dw_settle(app, s, kind, len, rc, why);
    if (owns_blob)
        free(blob);
}

/* Keeps the host tier within its budget by writing the oldest blobs to
 * --state-dir (counting the bytes of writes already running). */
static void spill_to_disk(rd_app *app)
{
    while (app->opt.state_dir &&
           app->host_bytes - app->spilling_bytes > app->opt.host_state_memory) {
        rd_session *s = lru(app, RD_TIER_HOST, NULL);
        if (!s)
            break;
        if (!s->dirty && rd_persist_has_file(app, s->id)) {
            /* its file is already this state (read back, or written since
             * the last change): the blob just goes */
            to_disk_tier(app, s);
            continue;
        }
        dw_start(app, s, s->blob, s->blob_len, 0, DW_SPILL);
        if (s->tier == RD_TIER_HOST && !s->moving)
            break; /* written at once and failed: retried at the next offload */
    }
}

/* May one more blob go to the host tier (directly or by spilling)? */
static int host_has_room(rd_app *app, size_t blob)
{
    if (app->host_bytes + blob <= app->opt.host_state_memory)
        return 1;
    /* beyond the budget only while the disk takes what spills over */
    return app->opt.state_dir && !app->spill_failed;
}

/* ---------------------------------------------------------- engine ops */

static rd_job *tier_job(rd_app *app, rd_session *s, rd_op op)
{
    rd_job *j = rd_job_new(1);
    if (!j)
        return NULL;
    j->op = op;
    j->tier_session = s;
    j->session_slot = s->slot;
    j->state_off = RN_BLOB_HEADER;
    j->state_bytes = rn_engine_state_bytes(app->engine);
    return j;
}

/* Starts offloading idle hot session s (its slot frees when the export is
 * done); 0 if started. */
static int offload(rd_app *app, rd_session *s)
{
    size_t len = RN_BLOB_HEADER + rn_engine_state_bytes(app->engine);
    if (s->fresh) { /* no state of its own: nothing to copy */
        rd_sched_release_slot(app->sched, s->slot);
        s->slot = -1;
        s->tier = RD_TIER_HOST;
        return 0;
    }
    if (!host_has_room(app, len))
        return -1;
    rd_job *j = tier_job(app, s, RD_OP_EXPORT);
    if (!j || !(j->state = malloc(len))) {
        rd_job_unref(j);
        return -1;
    }
    s->moving = 1;
    app->offloading++;
    rd_queue_submit(app->queue, j); /* the queue's reference is the only one */
    return 0;
}

/* Offloads up to k idle hot sessions, least recently used first, never
 * `keep`; returns how many it started (never-used ones free their slot at
 * once, the others when their export is done). */
static int make_room(rd_app *app, int k, const rd_session *keep)
{
    int started = 0;
    if (!app->opt.host_state_memory && !app->opt.state_dir)
        return 0; /* no tier to move to: sessions keep their slots */
    while (started < k) {
        rd_session *s = lru(app, RD_TIER_HOT, keep);
        if (!s || offload(app, s) != 0)
            break;
        started++;
    }
    return started;
}

/* ------------------------------------------------------------- disk reads */

/* A disk-tier session's file read and checked on the thread pool: it comes
 * back into the host tier (and the parked request then restores it from
 * there like any host session), so a large state's read never stalls the
 * loop either. */
typedef struct {
    uv_work_t req;
    rd_app *app;
    rd_session *s;
    char id[64];
    unsigned char *blob;
    size_t len;
    int64_t tokens, pos;
    int corrupt;
    char why[512];
} disk_read;

static void dr_work(uv_work_t *req)
{
    disk_read *r = req->data;
    slow_disk(r->app);
    r->blob = rd_persist_read_files(r->app, r->id, &r->len, &r->tokens, &r->pos, &r->corrupt,
                                    r->why, sizeof r->why);
}

/* What reading s's file back gave (loop thread): the blob (taken) joins
 * the host tier, or the session's next request is told why not
 * (answer_unreadable). */
static void read_back_settle(rd_app *app, rd_session *s, unsigned char *blob, size_t len,
                             int64_t tokens, int corrupt, const char *why)
{
    if (blob) {
        s->blob = blob;
        s->blob_len = len;
        s->tokens = tokens;
        s->tier = RD_TIER_HOST;             /* its file stays: nothing changed */
        s->last_used = (int64_t)time(NULL); /* not the next one spilled */
        app->host_bytes += len;
        return;
    }
    rd_log(RD_LOG_ERROR, "msg=\"a session's stored state is unreadable\" id=%s reason=\"%s\"",
           s->id, why);
    if (corrupt)
        s->restore_corrupt = 1; /* the file stays for inspection */
    else
        s->restore_failed = 1; /* an I/O error: the file may be fine next time */
}

static void dr_after(uv_work_t *req, int status)
{
    disk_read *r = req->data;
    r->s->moving = 0;
    if (status != 0 && r->blob) { /* cancelled after all (not expected) */
        free(r->blob);
        r->blob = NULL;
        snprintf(r->why, sizeof r->why, "%s", uv_strerror(status));
    }
    read_back_settle(r->app, r->s, r->blob, r->len, r->tokens, r->corrupt, r->why);
    rd_app *app = r->app;
    free(r);
    disk_io_done(app);
}

/* Starts reading s's file; 0 if started (s is moving until it is done). */
static int dr_start(rd_app *app, rd_session *s)
{
    disk_read *r = app->sched ? calloc(1, sizeof *r) : NULL;
    if (!r)
        return -1;
    r->app = app;
    r->s = s;
    snprintf(r->id, sizeof r->id, "%s", s->id);
    r->req.data = r;
    if (uv_queue_work(app->loop, &r->req, dr_work, dr_after) != 0) {
        free(r);
        return -1;
    }
    s->moving = 1;
    app->disk_io++;
    return 0;
}

/* The answer to a request on a session whose state could not be brought
 * back (logged when that happened): a corrupt file removes the session, an
 * I/O error or a failed import is worth a retry.  RD_TIER_ANSWERED. */
static int answer_unreadable(rd_app *app, rd_conn *c, rd_session *s)
{
    if (s->restore_corrupt) {
        rd_session_delete(app, s);
        return rd_json_error(c, 500, "server_error", NULL, NULL,
                             "the session's stored state is corrupt; the session was removed"),
               RD_TIER_ANSWERED;
    }
    s->restore_failed = 0;
    return rd_json_error(c, 500, "server_error", NULL, NULL,
                         "the session's state could not be brought back; retry later"),
           RD_TIER_ANSWERED;
}

/* Brings cold session s back into a free slot: at once for a never-used
 * session, else by an import.  RD_TIER_GO, PARKED or ANSWERED. */
static int restore(rd_app *app, rd_conn *c, rd_session *s)
{
    if (s->tier == RD_TIER_DISK) {
        if (dr_start(app, s) == 0)
            return park(app, c); /* back in the host tier when the read is done */
        /* stopping, or the pool refused: read here, settled the same way */
        unsigned char *got;
        size_t len = 0;
        int64_t tokens = 0, pos = 0;
        int corrupt = 0;
        char why[512] = "";
        got = rd_persist_read_files(app, s->id, &len, &tokens, &pos, &corrupt, why, sizeof why);
        read_back_settle(app, s, got, len, tokens, corrupt, why);
        if (s->tier == RD_TIER_DISK)
            return answer_unreadable(app, c, s);
    }
    unsigned char *blob = s->blob;
    int64_t pos = blob ? rn_blob_position(blob) : 0;
    int slot = rd_sched_reserve_slot(app->sched);
    if (slot < 0) /* taken meanwhile by the engine's admission: try again later */
        return -1;
    s->slot = slot;
    if (s->fresh && !blob) {
        s->tier = RD_TIER_HOT;
        return RD_TIER_GO;
    }
    rd_job *j = tier_job(app, s, RD_OP_IMPORT);
    if (!j) {
        rd_sched_release_slot(app->sched, slot);
        s->slot = -1;
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory"), RD_TIER_ANSWERED;
    }
    /* the job owns the blob while the import runs */
    app->host_bytes -= s->blob_len;
    s->blob = NULL;
    s->blob_len = 0;
    j->state = blob;
    j->state_pos = pos;
    s->moving = 1;
    s->last_used = (int64_t)time(NULL); /* not the next LRU victim before its request runs */
    app->restoring++;
    rd_queue_submit(app->queue, j);
    return park(app, c);
}

/* A snapshot's export is done: the blob goes to --state-dir. */
static void snapshot_done(rd_app *app, rd_session *s, rd_job *j)
{
    rn_blob_info info;
    if (j->error_status)
        return;
    rn_blob_info_for(app->model, j->state_pos, s->tokens, &info);
    rn_blob_write_header(j->state, &info, j->state + RN_BLOB_HEADER);
    dw_start(app, s, j->state, RN_BLOB_HEADER + j->state_bytes, 1, DW_SNAPSHOT);
    j->state = NULL; /* the write owns it now */
}

void rd_tier_op_done(rd_app *app, rd_job *j)
{
    rd_session *s = j->tier_session;
    s->moving = 0;
    if (j->snapshot) {
        snapshot_done(app, s, j);
    } else if (j->op == RD_OP_EXPORT) {
        app->offloading--;
        if (j->error_status) {
            s->pinned = 1; /* not tried again: it keeps its slot */
            rd_log(RD_LOG_ERROR, "msg=\"offload failed\" id=%s", s->id);
        } else {
            rn_blob_info info;
            rn_blob_info_for(app->model, j->state_pos, s->tokens, &info);
            rn_blob_write_header(j->state, &info, j->state + RN_BLOB_HEADER);
            s->blob = j->state;
            s->blob_len = RN_BLOB_HEADER + j->state_bytes;
            j->state = NULL;
            app->host_bytes += s->blob_len;
            if (app->sched)
                rd_sched_release_slot(app->sched, s->slot);
            s->slot = -1;
            s->tier = RD_TIER_HOST;
            spill_to_disk(app);
        }
    } else if (j->error_status) { /* restore failed: back to where the blob came from */
        app->restoring--;
        s->restore_failed = 1;
        rd_log(RD_LOG_ERROR, "msg=\"restore failed\" id=%s", s->id);
        if (app->sched)
            rd_sched_release_slot(app->sched, s->slot);
        s->slot = -1;
        if (s->tier == RD_TIER_HOST) {
            s->blob = j->state;
            s->blob_len = RN_BLOB_HEADER + j->state_bytes;
            app->host_bytes += s->blob_len;
            j->state = NULL;
        }
    } else {
        app->restoring--;
        s->tier = RD_TIER_HOT;
        s->fresh = 0;
        s->last_used = (int64_t)time(NULL);
    }
    rd_tier_wake(app);
}

int rd_tier_ready(rd_app *app, rd_conn *c, rd_session *s, int need)
{
    if (s && s->moving)
        return park(app, c);
    if (s && (s->restore_corrupt || s->restore_failed))
        return answer_unreadable(app, c, s);
    if (s && s->slot < 0) {
        if (free_slots(app) == 0 && app->offloading == 0)
            make_room(app, 1, s); /* a never-used session gives its slot back at once */
        if (free_slots(app) > 0) {
            int rc = restore(app, c, s);
            if (rc != -1)
                return rc;
        }
        /* disk I/O in flight: a session held by a snapshot's write becomes
         * movable when it is done (each one wakes the parked requests) */
        if (app->offloading > 0 || app->restoring > 0 || app->disk_io > 0 || slots_will_free(app))
            return park(app, c);
        return rd_json_error(c, 429, "rate_limit_error", NULL, "server_is_overloaded",
                             "no state slot is free to bring the session back (all are in "
                             "use); retry later"),
               RD_TIER_ANSWERED;
    }
    int free = free_slots(app);
    if (need > free + app->offloading)
        make_room(app, need - free - app->offloading, s);
    if (need > free_slots(app) && (app->offloading > 0 || app->disk_io > 0))
        return park(app, c); /* the offloads in flight make the room */
    return RD_TIER_GO;
}

/* ------------------------------------------------------------------ TTL */

static void ttl_tick(uv_timer_t *t)
{
    rd_app *app = t->data;
    int64_t now = (int64_t)time(NULL);
    for (rd_session *s = app->sessions, *n; s; s = n) {
        n = s->next;
        if (!s->busy && !s->moving && now - s->last_used >= (int64_t)app->opt.session_ttl_s) {
            rd_log(RD_LOG_INFO, "msg=\"session expired\" id=%s idle_s=%lld", s->id,
                   (long long)(now - s->last_used));
            rd_persist_forget(app, s->id);
            rd_session_delete(app, s);
        }
    }
}

void rd_tier_start_ttl(rd_app *app)
{
    if (!app->opt.session_ttl_s)
        return;
    uint64_t every = app->opt.session_ttl_s < 60 ? app->opt.session_ttl_s : 60;
    uv_timer_init(app->loop, &app->ttl_timer);
    app->ttl_timer.data = app;
    uv_timer_start(&app->ttl_timer, ttl_tick, every * 1000 / 2, every * 1000 / 2);
}

/* ------------------------------------------------------------ snapshots */

/* --persist-interval: every changed idle session goes to --state-dir, so a
 * crash loses at most one interval of it.  Hot ones through an export on
 * the engine thread (the session waits meanwhile, briefly), host ones from
 * their blob. */
static void persist_tick(uv_timer_t *t)
{
    rd_app *app = t->data;
    size_t len = RN_BLOB_HEADER + rn_engine_state_bytes(app->engine);
    if (app->draining)
        return; /* the stop writes every session; new writes would only delay it */
    for (rd_session *s = app->sessions; s; s = s->next) {
        if (!s->dirty || s->busy || s->moving || s->fresh)
            continue;
        if (s->tier == RD_TIER_HOST && s->blob) {
            dw_start(app, s, s->blob, s->blob_len, 0, DW_SNAPSHOT);
            continue;
        }
        if (s->tier != RD_TIER_HOT)
            continue;
        rd_job *j = tier_job(app, s, RD_OP_EXPORT);
        if (!j || !(j->state = malloc(len))) {
            rd_job_unref(j);
            return;
        }
        j->snapshot = 1;
        s->moving = 1;
        rd_queue_submit(app->queue, j);
    }
}

void rd_tier_start_persist(rd_app *app)
{
    if (!app->opt.persist_interval_s || !app->opt.state_dir)
        return;
    uint64_t ms = (uint64_t)app->opt.persist_interval_s * 1000;
    uv_timer_init(app->loop, &app->persist_timer);
    app->persist_timer.data = app;
    uv_timer_start(&app->persist_timer, persist_tick, ms, ms);
}

/* -------------------------------------------------------------- listing */

char *rd_sessions_list_json(rd_app *app, const char *principal)
{
    cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
    int count[3] = {0, 0, 0};
    cJSON_AddStringToObject(o, "object", "list");
    for (rd_session *s = app->sessions; s; s = s->next) {
        if (!rd_session_visible(app, s, principal))
            continue;
        char *one = rd_session_json(s);
        cJSON_AddItemToArray(data, cJSON_Parse(one));
        free(one);
        count[s->tier]++;
    }
    cJSON *t = cJSON_AddObjectToObject(o, "tiers");
    cJSON_AddNumberToObject(t, "hot", count[RD_TIER_HOT]);
    cJSON_AddNumberToObject(t, "host", count[RD_TIER_HOST]);
    cJSON_AddNumberToObject(t, "disk", count[RD_TIER_DISK]);
    cJSON_AddNumberToObject(t, "host_bytes", (double)app->host_bytes);
    cJSON_AddNumberToObject(t, "host_budget_bytes", (double)app->opt.host_state_memory);
    rd_sched_stats st;
    rd_sched_get_stats(app->sched, &st);
    cJSON_AddNumberToObject(t, "slots_total", st.slots_total);
    cJSON_AddNumberToObject(t, "slots_used", st.slots_used);
    cJSON *pc = cJSON_AddObjectToObject(o, "prefix_cache");
    cJSON_AddNumberToObject(pc, "hits", (double)st.prefix_hits);
    cJSON_AddNumberToObject(pc, "cached_tokens", (double)st.prefix_tokens);
    char *str = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return str;
}
