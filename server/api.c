/*
 * api.c -- routing, authentication and the small endpoints: /health,
 * /ready, /v1/models, /tokenize, /detokenize and the session endpoints.
 * Completions live in api_completions.c.  Loop thread only.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "metrics.h"
#include "utf8.h"

/* Sets the request's principal; 0 when a key is required and missing or wrong. */
static int authorized(rd_app *app, rd_conn *c)
{
    if (!rd_keys_enabled(app->keys))
        return 1;
    const char *who = rd_keys_check(app->keys, rd_conn_header(c, "Authorization"));
    rd_conn_set_principal(c, who);
    return who != NULL;
}

/* 405 with an Allow header listing what the path takes (RFC 9110). */
#define method_not_allowed(c, allow, ...)                                                          \
    (rd_conn_set_allow((c), (allow)),                                                              \
     rd_json_error((c), 405, "invalid_request_error", NULL, NULL, __VA_ARGS__))

static int reply_text(rd_conn *c, unsigned status, const char *json)
{
    return rd_http_reply(c, status, json, strlen(json), NULL, NULL, NULL);
}

static cJSON *model_object(rd_app *app);

static int api_models(rd_app *app, rd_conn *c)
{
    cJSON *o = cJSON_CreateObject(), *data = cJSON_AddArrayToObject(o, "data");
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToArray(data, model_object(app));
    return rd_json_reply(c, 200, o);
}

/* GET /v1/models/{id}: the served model, or 404. */
static int api_model(rd_app *app, rd_conn *c, const char *id)
{
    if (strcmp(id, app->opt.model_name) != 0)
        return rd_json_error(c, 404, "not_found_error", "model", "not_found",
                             "model '%.100s' not found; this server serves '%s'", id,
                             app->opt.model_name);
    return rd_json_reply(c, 200, model_object(app));
}

static cJSON *model_object(rd_app *app)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", app->opt.model_name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)app->started);
    cJSON_AddStringToObject(m, "owned_by", "retnetd");
    cJSON *meta = cJSON_AddObjectToObject(m, "meta");
    cJSON_AddNumberToObject(meta, "n_vocab", app->cfg->vocab_size);
    cJSON_AddNumberToObject(meta, "n_params", (double)rn_model_param_count(app->model));
    cJSON_AddNumberToObject(meta, "state_bytes", (double)rn_engine_state_bytes(app->engine));
    cJSON_AddNumberToObject(meta, "state_slots", rn_engine_n_slots(app->engine));
    cJSON_AddStringToObject(meta, "backend", rn_engine_backend_name(app->engine));
    return m;
}

/* The body as a JSON object, or NULL after answering 400 (*rc set). */
static cJSON *parse_body(rd_conn *c, int *rc)
{
    size_t len;
    char why[128];
    const char *body = rd_conn_body(c, &len);
    cJSON *root = rd_json_parse_object(body, len, why, sizeof why);
    if (!root)
        *rc = rd_json_error(c, 400, "invalid_request_error", NULL, NULL, "%s", why);
    return root;
}

static int api_tokenize(rd_app *app, rd_conn *c)
{
    int rc;
    cJSON *root = parse_body(c, &rc);
    if (!root)
        return rc;
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    if (!p)
        p = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (!cJSON_IsString(p)) {
        cJSON_Delete(root);
        return rd_json_error(c, 400, "invalid_request_error", "prompt", NULL,
                             "send {\"prompt\": \"text\"}");
    }
    int32_t *ids = NULL;
    int n = 0;
    if (rn_tokenizer_encode(app->tok, p->valuestring, strlen(p->valuestring), &ids, &n) != RN_OK) {
        cJSON_Delete(root);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "tokenizer failed");
    }
    cJSON_Delete(root);
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(o, "tokens");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(ids[i]));
    cJSON_AddNumberToObject(o, "count", n);
    free(ids);
    return rd_json_reply(c, 200, o);
}

static int api_detokenize(rd_app *app, rd_conn *c)
{
    int rc;
    cJSON *root = parse_body(c, &rc);
    if (!root)
        return rc;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tokens"), *it;
    int n = cJSON_IsArray(t) ? cJSON_GetArraySize(t) : -1, k = 0;
    int32_t *ids = n >= 0 ? malloc(sizeof(int32_t) * (size_t)(n + 1)) : NULL;
    if (ids)
        cJSON_ArrayForEach(it, t)
        {
            if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
                it->valuedouble >= rn_tokenizer_vocab_size(app->tok) ||
                !rn_tokenizer_piece(app->tok, (int32_t)it->valuedouble))
                break;
            ids[k++] = (int32_t)it->valuedouble;
        }
    cJSON_Delete(root);
    if (!ids || k != n) {
        free(ids);
        return rd_json_error(c, 400, "invalid_request_error", "tokens", NULL,
                             "send {\"tokens\": [ids]} with ids of this tokenizer");
    }
    char *text = NULL;
    size_t len;
    rc = rn_tokenizer_decode(app->tok, ids, n, 0, &text, &len);
    free(ids);
    if (rc != RN_OK)
        return rd_json_error(c, 500, "server_error", NULL, NULL, "decode failed");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "text", text);
    free(text);
    return rd_json_reply(c, 200, o);
}

/* ------------------------------------------------------------- sessions */

static int reply_session(rd_conn *c, unsigned status, const rd_session *s)
{
    char *j = rd_session_json(s);
    int rc = reply_text(c, status, j ? j : "{}");
    cJSON_free(j);
    return rc;
}

/* A new session, named id (or a random id when NULL). */
static int create_session_or_error(rd_app *app, rd_conn *c, const char *id, rd_session **out)
{
    int rc = id ? rd_session_create_with_id(app, id, out) : rd_session_create(app, out);
    if (rc == -2)
        return rd_json_error(
            c, 429, "rate_limit_error", NULL, "no_free_state",
            "no free state slot for a new session; delete sessions or retry later");
    if (rc != 0)
        return rd_json_error(c, 500, "server_error", NULL, NULL, "cannot create a session");
    return 0;
}

static int api_session_fork(rd_app *app, rd_conn *c, rd_session *src)
{
    rd_session *dst = NULL;
    if (rd_session_busy(src))
        return rd_json_error(c, 409, "invalid_request_error", NULL, "session_busy",
                             "the session is in use by another request");
    int rc = create_session_or_error(app, c, NULL, &dst);
    if (!dst)
        return rc;
    rd_session_set_owner(dst, rd_conn_principal(c));
    rd_session_advance(dst, rd_session_tokens(src));
    if (rd_session_is_fresh(src)) /* never used: the new session is empty as well */
        return reply_session(c, 200, dst);
    rd_job *j = rd_job_new(1);
    rd_req *r = calloc(1, sizeof *r);
    if (!j || !r) {
        free(r);
        rd_job_unref(j);
        rd_session_delete(app, dst);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    }
    rd_session_take_fresh(dst);
    j->op = RD_OP_FORK;
    j->fork_src = rd_session_slot(src);
    j->session_slot = rd_session_slot(dst);
    j->http = r;
    r->app = app;
    r->conn = c;
    r->kind = RD_REQ_FORK;
    r->jobs = calloc(1, sizeof *r->jobs);
    if (!r->jobs) {
        free(r);
        rd_job_unref(j);
        rd_session_delete(app, dst);
        return rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
    }
    r->jobs[0] = j;
    r->n_jobs = 1;
    r->session = dst;
    rd_session_set_busy(src, 1);
    rd_session_set_busy(dst, 1);
    r->fork_src = src;
    rd_conn_set_data(c, r);
    rd_job_ref(j);
    rd_queue_submit(app->queue, j);
    rd_http_wait(c);
    return 0;
}

/* POST /v1/sessions may name the new session: {"id": "sess_<32 hex>"}, so
 * a client (or a router hashing on the id) knows where it lives before it
 * exists.  Returns 1 after answering a bad body (rc set), else 0 with the id
 * or "" in out. */
static int requested_session_id(rd_conn *c, char *out, size_t cap, int *rc)
{
    size_t len;
    const char *body = rd_conn_body(c, &len);
    char why[200];
    out[0] = '\0';
    if (len == 0)
        return 0;
    cJSON *o = rd_json_parse_object(body, len, why, sizeof why);
    if (!o) {
        *rc = rd_json_error(c, 400, "invalid_request_error", NULL, NULL, "%s", why);
        return 1;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
    int bad =
        id && !cJSON_IsNull(id) && (!cJSON_IsString(id) || !rd_session_id_valid(id->valuestring));
    if (!bad && cJSON_IsString(id))
        snprintf(out, cap, "%s", id->valuestring);
    cJSON_Delete(o);
    if (bad) {
        *rc = rd_json_error(c, 400, "invalid_request_error", "id", "invalid_session_id",
                            "'id' must be \"sess_\" and 32 lowercase hex digits");
        return 1;
    }
    return 0;
}

static int api_sessions(rd_app *app, rd_conn *c, const char *method, const char *rest)
{
    int rc;
    if (!rest[0] || !strcmp(rest, "/")) {
        if (!strcmp(method, "POST")) {
            char want[64] = "";
            rd_session *s = NULL;
            if (requested_session_id(c, want, sizeof want, &rc))
                return rc;
            if (want[0] && rd_session_find(app, want))
                return rd_json_error(c, 409, "invalid_request_error", "id", "session_exists",
                                     "session '%s' exists already", want);
            if (rd_tier_ready(app, c, NULL, 1) != RD_TIER_GO)
                return 0;
            rc = create_session_or_error(app, c, want[0] ? want : NULL, &s);
            if (s)
                rd_session_set_owner(s, rd_conn_principal(c));
            return s ? reply_session(c, 201, s) : rc;
        }
        if (!strcmp(method, "GET") || !strcmp(method, "HEAD")) {
            char *list = rd_sessions_list_json(app, rd_conn_principal(c));
            rc = list ? reply_text(c, 200, list)
                      : rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
            free(list);
            return rc;
        }
        return method_not_allowed(c, "GET, HEAD, POST",
                                  "method %s not allowed on /v1/sessions; use GET or POST", method);
    }
    char id[64];
    const char *slash = strchr(rest + 1, '/');
    size_t idlen = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    if (idlen >= sizeof id)
        return rd_json_error(c, 404, "not_found_error", NULL, "not_found", "session not found");
    memcpy(id, rest + 1, idlen);
    id[idlen] = '\0';
    rd_session *s = rd_session_find_for(app, c, id);
    if (slash && !strcmp(slash, "/state")) {
        if (!strcmp(method, "PUT"))
            return rd_api_state_put(app, c, id, s);
        if (!s)
            return rd_json_error(c, 404, "not_found_error", NULL, "not_found",
                                 "session '%s' not found", id);
        if (!strcmp(method, "GET"))
            return rd_api_state_get(app, c, s);
        return method_not_allowed(c, "GET, PUT", "method %s not allowed on %s; use GET or PUT",
                                  method, rd_conn_path(c));
    }
    if (!s)
        return rd_json_error(c, 404, "not_found_error", NULL, "not_found", "session '%s' not found",
                             id);
    if (slash && strcmp(slash, "/fork"))
        return rd_json_error(c, 404, "not_found_error", NULL, NULL, "no endpoint %s %s", method,
                             rd_conn_path(c));
    if (slash) {
        if (strcmp(method, "POST"))
            return method_not_allowed(c, "POST", "method %s not allowed on %s; use POST", method,
                                      rd_conn_path(c));
        if (rd_session_busy(s))
            return rd_json_error(c, 409, "invalid_request_error", NULL, "session_busy",
                                 "the session is in use by another request");
        return rd_tier_ready(app, c, s, 1) == RD_TIER_GO ? api_session_fork(app, c, s) : 0;
    }
    if (!strcmp(method, "GET") || !strcmp(method, "HEAD"))
        return reply_session(c, 200, s);
    if (!strcmp(method, "DELETE")) {
        if (rd_tier_moving(s)) { /* being offloaded or restored: wait until it settles */
            rd_tier_ready(app, c, s, 0);
            return 0;
        }
        if (rd_session_busy(s))
            return rd_json_error(c, 409, "invalid_request_error", NULL, "session_busy",
                                 "the session is in use by another request");
        char body[128];
        snprintf(body, sizeof body,
                 "{\"id\":\"%s\",\"object\":\"session.deleted\",\"deleted\":true}", id);
        rd_persist_forget(app, id);
        rd_session_delete(app, s);
        rd_tier_wake(app);
        return reply_text(c, 200, body);
    }
    return method_not_allowed(c, "GET, HEAD, DELETE",
                              "method %s not allowed on /v1/sessions/{id}; use GET or DELETE",
                              method);
}

/* --------------------------------------------------------------- router */

/* Media types a request body may be sent as: JSON, and the form type curl's
 * -d sends by default (its body is still read as JSON). */
static int content_type_ok(const char *ct)
{
    if (!ct)
        return 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, "; \t");
    return n == 0 || (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
           (n == 33 && !strncasecmp(ct, "application/x-www-form-urlencoded", 33));
}

/* A NUL character cannot be carried by the C strings the handlers use: it
 * would cut a prompt short silently.  A raw 0 byte is never valid JSON; an
 * escaped one is a backslash run of odd length followed by u0000. */
static int has_nul(const char *b, size_t len)
{
    if (memchr(b, 0, len))
        return 1;
    for (const char *p = b; (p = memmem(p, len - (size_t)(p - b), "u0000", 5)) != NULL; p++) {
        size_t k = 0;
        while (p - k > b && p[-(ptrdiff_t)k - 1] == '\\')
            k++;
        if (k % 2 == 1)
            return 1;
    }
    return 0;
}

/* Checks every request body before a handler sees it; returns 1 after
 * answering (*rc set), 0 when the body may go on. */
static int body_refused(rd_app *app, rd_conn *c, int *rc)
{
    size_t len;
    const char *body = rd_conn_body(c, &len);
    if (rd_conn_body_too_large(c)) {
        *rc = rd_json_error(c, 413, "invalid_request_error", NULL, NULL,
                            "request body larger than %zu bytes", app->opt.max_body);
        return 1;
    }
    if (len == 0)
        return 0;
    const char *ct = rd_conn_header(c, "Content-Type");
    if (!content_type_ok(ct)) {
        *rc = rd_json_error(c, 415, "invalid_request_error", NULL, "unsupported_media_type",
                            "Content-Type '%.100s' is not supported; send application/json", ct);
        return 1;
    }
    if (!rn_utf8_valid((const unsigned char *)body, len)) {
        *rc = rd_json_error(c, 400, "invalid_request_error", NULL, NULL,
                            "the request body is not valid UTF-8");
        return 1;
    }
    if (has_nul(body, len)) {
        *rc = rd_json_error(
            c, 400, "invalid_request_error", NULL, NULL,
            "the request body contains a NUL character (U+0000), which is not supported");
        return 1;
    }
    return 0;
}

/* A request parked for a tier move and now handled again: it was accepted
 * before any drain began, so a drain does not turn it away. */
static int redispatched;

int rd_api_handle_again(rd_app *app, rd_conn *c)
{
    if (!app->sched) /* the engine stopped while it waited */
        return rd_json_error(c, 503, "service_unavailable_error", NULL, NULL,
                             "the server is shutting down");
    redispatched = 1;
    int rc = rd_api_handle(app, c);
    redispatched = 0;
    return rc;
}

void rd_api_request_end(void *vapp, rd_conn *c, unsigned status, double seconds)
{
    (void)vapp;
    rd_metrics_request(rd_metrics_endpoint(rd_conn_method(c), rd_conn_path(c)), status, seconds);
}

int rd_api_may_upload(void *vapp, rd_conn *c)
{
    return authorized(vapp, c);
}

int rd_api_handle(void *vapp, rd_conn *c)
{
    rd_app *app = vapp;
    const char *m = rd_conn_method(c), *p = rd_conn_path(c);
    int get = !strcmp(m, "GET") || !strcmp(m, "HEAD"), post = !strcmp(m, "POST"), rc;
    if (!strcmp(p, "/metrics")) { /* public unless --metrics-auth: for the scraper */
        if (!get)
            return method_not_allowed(c, "GET, HEAD", "method %s not allowed on %s; use GET", m, p);
        if (app->opt.metrics_auth && !authorized(app, c))
            return rd_json_error(c, 401, "authentication_error", NULL, "invalid_api_key",
                                 "missing or invalid API key (Authorization: Bearer ...)");
        size_t len = 0;
        char *text = rd_metrics_render(app, &len);
        int mrc = text ? rd_http_reply(c, 200, text, len,
                                       "text/plain; version=0.0.4; charset=utf-8", NULL, NULL)
                       : rd_json_error(c, 500, "server_error", NULL, NULL, "out of memory");
        free(text);
        return mrc;
    }
    if (!strcmp(p, "/health") || !strcmp(p, "/ready")) {
        if (!get)
            return method_not_allowed(c, "GET, HEAD", "method %s not allowed on %s; use GET", m, p);
        if (!strcmp(p, "/health"))
            return reply_text(c, 200, "{\"status\":\"ok\"}");
        return app->draining
                   ? rd_json_error(c, 503, "service_unavailable_error", NULL, NULL, "draining")
                   : reply_text(c, 200, "{\"status\":\"ready\"}");
    }
    if (app->draining && !redispatched)
        return rd_json_error(c, 503, "service_unavailable_error", NULL, NULL,
                             "the server is shutting down");
    if (!authorized(app, c))
        return rd_json_error(c, 401, "authentication_error", NULL, "invalid_api_key",
                             "missing or invalid API key (Authorization: Bearer ...)");
    int sessions = !strncmp(p, "/v1/sessions", 12) && (p[12] == '\0' || p[12] == '/');
    const char *want = NULL; /* the one method the path takes (sessions: several) */
    int model_id = !strncmp(p, "/v1/models/", 11) && p[11] && !strchr(p + 11, '/');
    if (!strcmp(p, "/v1/models") || model_id)
        want = "GET";
    else if (!strcmp(p, "/v1/completions") || !strcmp(p, "/v1/chat/completions") ||
             !strcmp(p, "/tokenize") || !strcmp(p, "/detokenize"))
        want = "POST";
    else if (!sessions)
        return rd_json_error(c, 404, "not_found_error", NULL, NULL, "no endpoint %s %s", m, p);
    if (want && !(want[0] == 'G' ? get : post))
        return method_not_allowed(c, want[0] == 'G' ? "GET, HEAD" : "POST",
                                  "method %s not allowed on %s; use %s", m, p, want);
    /* a state upload is binary and checked as a blob, not as JSON text */
    if (sessions && !strcmp(m, "PUT") && strlen(p) > 6 && !strcmp(p + strlen(p) - 6, "/state"))
        return api_sessions(app, c, m, p + 12);
    if (body_refused(app, c, &rc))
        return rc;
    if (sessions)
        return api_sessions(app, c, m, p + 12);
    if (!strcmp(p, "/v1/models"))
        return api_models(app, c);
    if (model_id)
        return api_model(app, c, p + 11);
    if (!strcmp(p, "/v1/completions"))
        return rd_api_completions(app, c, 0, NULL);
    if (!strcmp(p, "/v1/chat/completions"))
        return rd_api_completions(app, c, 1, NULL);
    if (!strcmp(p, "/tokenize"))
        return api_tokenize(app, c);
    return api_detokenize(app, c);
}

void rd_api_resume(void *vapp, rd_conn *c)
{
    rd_app *app = vapp;
    rd_req *r = rd_conn_get_data(c);
    if (!r || rd_conn_gone(c))
        return;
    if (r->kind == RD_REQ_FORK) {
        rd_session_set_busy(r->fork_src, 0);
        rd_session_set_busy(r->session, 0);
        r->fork_src = NULL;
        rd_job *j = r->jobs[0];
        if (j->error_status) { /* the copy failed: the new session is nothing */
            rd_session_delete(app, r->session);
            r->session = NULL;
            rd_json_error(c, (unsigned)j->error_status, rd_json_fail_type((unsigned)j->error_status),
                          NULL, NULL, "the state copy failed: %s", j->error_msg);
            return;
        }
        reply_session(c, 200, r->session);
        return;
    }
    if (r->kind == RD_REQ_EXPORT || r->kind == RD_REQ_IMPORT) {
        rd_api_state_resume(app, c);
        return;
    }
    if (r->kind == RD_REQ_PARKED) {
        rd_tier_resume(app, c);
        return;
    }
    rd_api_completion_resume(app, c);
}

void rd_api_done(void *vapp, rd_conn *c)
{
    rd_app *app = vapp;
    rd_req *r = rd_conn_get_data(c);
    if (!r)
        return;
    if (r->kind == RD_REQ_FORK) {
        if (r->fork_src) {
            /* never answered (the client left): no one knows the new
             * session, so it goes, with its slot, and the copy is called off */
            rd_session_set_busy(r->fork_src, 0);
            atomic_store(&r->jobs[0]->cancelled, 1);
            rd_session_delete(app, r->session);
        } else {
            rd_session_set_busy(r->session, 0);
        }
        r->jobs[0]->http = NULL;
        rd_job_unref(r->jobs[0]);
        free(r->jobs);
        free(r);
        rd_conn_set_data(c, NULL);
        return;
    }
    if (r->kind == RD_REQ_EXPORT || r->kind == RD_REQ_IMPORT) {
        rd_api_state_done(app, c);
        return;
    }
    if (r->kind == RD_REQ_PARKED) {
        rd_tier_done(app, c);
        return;
    }
    rd_api_completion_done(app, c);
}

void rd_api_on_ready(void *vapp)
{
    rd_app *app = vapp;
    rd_job *list = rd_queue_take_ready(app->queue);
    int any = list != NULL, ended = 0;
    /* every connection with news is resumed first and MHD runs once after:
     * one pass over the sockets per engine step, not one per stream */
    for (rd_job *j = list, *n; j; j = n) {
        n = j->next_taken;
        rd_req *r = j->http;
        if (j->release_session && j->phase == RD_PHASE_DONE) {
            /* a session request whose client left: the engine is done with
             * the slot only now (the mutex orders these reads) */
            rd_session *s = j->release_session;
            j->release_session = NULL;
            rd_queue_lock(app->queue);
            int64_t fed = j->prefilled + j->ch[0].fed;
            rd_queue_unlock(app->queue);
            rd_session_advance(s, fed);
            rd_session_set_busy(s, 0);
            rd_tier_wake(app);
        } else if (j->tier_session) {
            if (j->phase == RD_PHASE_DONE)
                rd_tier_op_done(app, j);
        } else if (r && r->kind != RD_REQ_COMPLETION) {
            if (j->phase == RD_PHASE_DONE)
                rd_http_resume_later(r->conn);
        } else if (r) {
            rd_api_job_ready(app, j);
        }
        ended |= j->phase == RD_PHASE_DONE;
        rd_job_unref(j);
    }
    if (ended)
        rd_tier_wake(app); /* slots were freed: parked requests retry */
    if (any && app->http)
        rd_http_run(app->http);
}
