/*
 * sessions.c -- the session table (loop thread only): a completion naming a
 * session continues from its state and advances it by its prompt and
 * output.  A session's state is in a slot (hot) or, while idle, in the host
 * or disk tier (tiers.c).  Ids are 128 random bits (getrandom).  One request
 * may use a session at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "session.h"

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

void rd_session_set_owner(rd_session *s, const char *principal)
{
    snprintf(s->owner, sizeof s->owner, "%s", principal ? principal : "");
}

const char *rd_session_owner(const rd_session *s)
{
    return s->owner;
}

int rd_session_visible(rd_app *app, const rd_session *s, const char *principal)
{
    return !rd_keys_enabled(app->keys) || !strcmp(s->owner, principal ? principal : "");
}

rd_session *rd_session_find_for(rd_app *app, rd_conn *c, const char *id)
{
    rd_session *s = rd_session_find(app, id);
    return s && rd_session_visible(app, s, rd_conn_principal(c)) ? s : NULL;
}

rd_session *rd_session_find(rd_app *app, const char *id)
{
    for (rd_session *s = app->sessions; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

int rd_session_create(rd_app *app, rd_session **out)
{
    unsigned char rnd[16];
    char id[40];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return -1;
    int o = snprintf(id, sizeof id, "sess_");
    for (int i = 0; i < 16; i++)
        o += snprintf(id + o, sizeof id - (size_t)o, "%02x", rnd[i]);
    return rd_session_create_with_id(app, id, out);
}

/* A new record for id holding slot (-1: a cold session, its state on disk). */
static int session_new(rd_app *app, const char *id, int slot, rd_session **out)
{
    rd_session *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    snprintf(s->id, sizeof s->id, "%s", id);
    s->slot = slot;
    s->tier = slot >= 0 ? RD_TIER_HOT : RD_TIER_DISK;
    s->fresh = 1;
    s->created = s->last_used = now_s();
    s->next = app->sessions;
    app->sessions = s;
    app->n_sessions++;
    *out = s;
    return 0;
}

int rd_session_create_with_id(rd_app *app, const char *id, rd_session **out)
{
    *out = NULL;
    if (app->n_sessions >= app->opt.max_sessions)
        return -2;
    if (strlen(id) >= sizeof((rd_session *)0)->id || rd_session_find(app, id))
        return -1;
    int slot = rd_sched_reserve_slot(app->sched);
    if (slot < 0)
        return -2;
    if (session_new(app, id, slot, out) != 0) {
        rd_sched_release_slot(app->sched, slot);
        return -1;
    }
    return 0;
}

int rd_session_create_on_disk(rd_app *app, const char *id, int64_t tokens, rd_session **out)
{
    *out = NULL;
    if (app->n_sessions >= app->opt.max_sessions)
        return -2;
    if (strlen(id) >= sizeof((rd_session *)0)->id || rd_session_find(app, id) ||
        session_new(app, id, -1, out) != 0)
        return -1;
    (*out)->fresh = 0;
    (*out)->tokens = tokens;
    return 0;
}

void rd_session_delete(rd_app *app, rd_session *s)
{
    for (rd_session **p = &app->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    if (app->sched && s->slot >= 0) /* sched is NULL once the engine stopped (exit) */
        rd_sched_release_slot(app->sched, s->slot);
    if (s->blob)
        app->host_bytes -= s->blob_len;
    app->n_sessions--;
    free(s->blob);
    free(s);
}

int rd_session_busy(const rd_session *s)
{
    return s->busy;
}

void rd_session_set_busy(rd_session *s, int busy)
{
    s->busy = busy;
    s->last_used = now_s();
}

int rd_session_slot(const rd_session *s)
{
    return s->slot;
}

int rd_session_is_fresh(const rd_session *s)
{
    return s->fresh;
}

int64_t rd_session_tokens(const rd_session *s)
{
    return s->tokens;
}

int rd_session_take_fresh(rd_session *s)
{
    int f = s->fresh;
    s->fresh = 0;
    return f;
}

void rd_session_set_tokens(rd_session *s, int64_t tokens)
{
    s->tokens = tokens;
    s->dirty = 1;
}

void rd_session_advance(rd_session *s, int64_t tokens)
{
    s->tokens += tokens;
    s->dirty |= tokens != 0;
}

const char *rd_session_id(const rd_session *s)
{
    return s->id;
}

char *rd_session_json(const rd_session *s)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", s->id);
    cJSON_AddStringToObject(o, "object", "session");
    cJSON_AddNumberToObject(o, "created", (double)s->created);
    cJSON_AddNumberToObject(o, "last_used", (double)s->last_used);
    cJSON_AddNumberToObject(o, "tokens", (double)s->tokens);
    cJSON_AddBoolToObject(o, "busy", s->busy);
    static const char *const tiers[] = {"hot", "host", "disk"};
    cJSON_AddStringToObject(o, "tier", tiers[s->tier]);
    char *str = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return str;
}

rd_session *rd_session_next(const rd_session *s)
{
    return s->next;
}

void rd_sessions_free(rd_app *app)
{
    while (app->sessions)
        rd_session_delete(app, app->sessions);
}
