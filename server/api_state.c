/*
 * api_state.c -- a session's state as a portable blob (docs/state-format.md):
 *   GET /v1/sessions/{id}/state   export (application/octet-stream)
 *   PUT /v1/sessions/{id}/state   import, creating the session under that id
 *                                 when it does not exist (moving a session
 *                                 between replicas keeps its id)
 * Both run as engine state operations (RD_OP_EXPORT / RD_OP_IMPORT), which
 * never wait behind queued generation.  An imported blob is untrusted input:
 * it is validated completely (rn_blob_parse) before a session is created or
 * touched, so a bad upload leaves nothing behind.  Loop thread only.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "log.h"
#include "state_blob.h"

static int session_busy_error(rd_conn *c)
{
    return rd_json_error(c, 409, "invalid_request_error", NULL, "session_busy",
                         "the session is in use by another request");
}

/* A session id as the server makes them: "sess_" and 32 lowercase hex digits. */
int rd_session_id_valid(const char *id)
{
    if (strncmp(id, "sess_", 5) != 0 || strlen(id) != 37)
        return 0;
    for (int i = 5; i < 37; i++)
        if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
            return 0;
    return 1;
}

/* Submits state operation job j for request r on session s and parks the
 * connection; rd_api_state_resume answers when the engine is done. */
static int submit(rd_app *app, rd_conn *c, rd_req *r, rd_job *j, rd_session *s)
{
    j->session_slot = rd_session_slot(s);
    j->http = r;
    r->app = app;
    r->conn = c;
    r->jobs = calloc(1, sizeof *r->jobs);
    if (!r->jobs) {
        rd_job_unref(j);
        if (r->made_session)
            rd_session_delete(app, s);
        free(r);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    }
    r->jobs[0] = j;
    r->n_jobs = 1;
    r->session = s;
    rd_session_set_busy(s, 1);
    rd_conn_set_data(c, r);
    rd_job_ref(j);
    rd_queue_submit(app->queue, j);
    rd_http_wait(c);
    return 0;
}

/* A new job with a buffer of header + state bytes (the state after the
 * header, so an export becomes the blob in place). */
static rd_job *state_job(rd_app *app, rd_op op)
{
    rd_job *j = rd_job_new(1);
    size_t sb = rn_engine_state_bytes(app->engine);
    if (!j)
        return NULL;
    j->op = op;
    j->state_off = RN_BLOB_HEADER;
    j->state_bytes = sb;
    j->state = calloc(1, RN_BLOB_HEADER + sb);
    if (!j->state) {
        rd_job_unref(j);
        return NULL;
    }
    return j;
}

static int reply_blob(rd_app *app, rd_conn *c, rd_session *s, unsigned char *blob, int64_t pos)
{
    rn_blob_info info;
    char disp[96];
    rn_blob_info_for(app->model, pos, rd_session_tokens(s), &info);
    rn_blob_write_header(blob, &info, blob + RN_BLOB_HEADER);
    snprintf(disp, sizeof disp, "attachment; filename=\"%s.state\"", rd_session_id(s));
    return rd_http_reply(c, 200, (const char *)blob, RN_BLOB_HEADER + (size_t)info.payload_bytes,
                         "application/octet-stream", "Content-Disposition", disp);
}

int rd_api_state_get(rd_app *app, rd_conn *c, rd_session *s)
{
    if (rd_session_busy(s))
        return session_busy_error(c);
    if (rd_tier_ready(app, c, s, 0) != RD_TIER_GO)
        return 0;
    rd_job *j = state_job(app, RD_OP_EXPORT);
    rd_req *r = calloc(1, sizeof *r);
    if (!j || !r) {
        rd_job_unref(j);
        free(r);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (rd_session_is_fresh(s)) { /* never used: its slot holds someone else's state */
        int rc = reply_blob(app, c, s, j->state, 0);
        rd_job_unref(j);
        free(r);
        return rc;
    }
    r->kind = RD_REQ_EXPORT;
    return submit(app, c, r, j, s);
}

/* Validates the uploaded blob; on success *info describes it.  Answers the
 * error itself and returns 0 when the blob is refused (rc in *rc). */
static int upload_ok(rd_app *app, rd_conn *c, rn_blob_info *info, int *rc)
{
    size_t len;
    const char *body = rd_conn_body(c, &len);
    rn_error err = {0};
    if (rd_conn_body_too_large(c)) {
        *rc = rd_json_error(c, 413, "invalid_request_error", NULL, "state_too_large",
                            "a state blob of this model is %zu bytes",
                            RN_BLOB_HEADER + rn_engine_state_bytes(app->engine));
        return 0;
    }
    int prc = rn_blob_parse((const uint8_t *)body, len, app->model, info, &err);
    if (prc == RN_OK)
        return 1;
    rd_log(RD_LOG_WARN, "msg=\"state import refused\" path=%s reason=\"%s\"", rd_conn_path(c),
           err.msg);
    *rc = prc == RN_ECONFLICT ? rd_json_error(c, 409, "invalid_request_error", NULL,
                                              "state_model_mismatch", "%s", err.msg)
                              : rd_json_error(c, 400, "invalid_request_error", NULL,
                                              "invalid_state", "%s", err.msg);
    return 0;
}

int rd_api_state_put(rd_app *app, rd_conn *c, const char *id, rd_session *s)
{
    rn_blob_info info;
    int rc = 0;
    if (!s && !rd_session_id_valid(id))
        return rd_json_error(c, 400, "invalid_request_error", NULL, "invalid_session_id",
                             "a new session's id must be \"sess_\" and 32 lowercase hex digits");
    if (s && rd_session_busy(s))
        return session_busy_error(c);
    if (!s && rd_session_find(app, id)) /* someone else's: not visible, not replaceable */
        return rd_json_error(c, 409, "invalid_request_error", NULL, "session_exists",
                             "a session with this id exists");
    if (!upload_ok(app, c, &info, &rc))
        return rc;
    if (rd_tier_ready(app, c, s, s ? 0 : 1) != RD_TIER_GO)
        return 0;
    rd_job *j = state_job(app, RD_OP_IMPORT);
    rd_req *r = calloc(1, sizeof *r);
    if (!j || !r) {
        rd_job_unref(j);
        free(r);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    }
    if (!s) {
        int crc = rd_session_create_with_id(app, id, &s);
        if (crc != 0) {
            rd_job_unref(j);
            free(r);
            return crc == -2
                       ? rd_json_error(c, 429, "rate_limit_error", NULL, "server_is_overloaded",
                                       "no free state slot for a new session; delete "
                                       "sessions or retry later")
                       : rd_json_error(c, 500, "server_error", NULL, NULL,
                                       "cannot create a session");
        }
        r->made_session = 1;
        rd_session_set_owner(s, rd_conn_principal(c));
    }
    size_t len;
    const char *body = rd_conn_body(c, &len);
    memcpy(j->state + RN_BLOB_HEADER, body + RN_BLOB_HEADER, j->state_bytes);
    j->state_pos = info.pos;
    r->import_tokens = info.tokens;
    r->kind = RD_REQ_IMPORT;
    return submit(app, c, r, j, s);
}

void rd_api_state_resume(rd_app *app, rd_conn *c)
{
    rd_req *r = rd_conn_get_data(c);
    rd_job *j = r->jobs[0];
    rd_session *s = r->session;
    r->answered = 1;
    rd_session_set_busy(s, 0);
    if (j->error_status) {
        if (r->made_session) {
            rd_session_delete(app, s);
            r->session = NULL;
        }
        rd_json_error(c, (unsigned)j->error_status, rd_json_fail_type((unsigned)j->error_status),
                      NULL, NULL, "%s", j->error_msg);
        return;
    }
    if (r->kind == RD_REQ_EXPORT) {
        reply_blob(app, c, s, j->state, j->state_pos);
        return;
    }
    rd_session_take_fresh(s);
    rd_session_set_tokens(s, r->import_tokens);
    char *json = rd_session_json(s);
    if (json)
        rd_http_reply(c, r->made_session ? 201 : 200, json, strlen(json), NULL, NULL, NULL);
    else
        rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    free(json);
}

void rd_api_state_done(rd_app *app, rd_conn *c)
{
    rd_req *r = rd_conn_get_data(c);
    if (!r->answered && r->session) {
        /* the client left first: an import is called off, and a session it
         * would have created never existed */
        atomic_store(&r->jobs[0]->cancelled, 1);
        rd_session_set_busy(r->session, 0);
        if (r->made_session)
            rd_session_delete(app, r->session);
    }
    r->jobs[0]->http = NULL;
    rd_job_unref(r->jobs[0]);
    free(r->jobs);
    free(r);
    rd_conn_set_data(c, NULL);
}
