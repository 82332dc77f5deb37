/*
 * sessions.c -- the session table (loop thread only): a session owns one
 * state slot from creation to deletion; a completion naming it continues
 * from that state and advances it by its prompt and output.  Ids are 128
 * random bits (getrandom).  One request may use a session at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"

struct rd_session {
    char id[40];
    int slot;
    int busy;
    int fresh;        /* the slot holds someone else's state until first use */
    int64_t tokens;   /* tokens in the state */
    int64_t created, last_used;
    struct rd_session *next;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
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
    rd_session *s = calloc(1, sizeof *s);
    if (!s) {
        rd_sched_release_slot(app->sched, slot);
        return -1;
    }
    snprintf(s->id, sizeof s->id, "%s", id);
    s->slot = slot;
    s->fresh = 1;
    s->created = s->last_used = now_s();
    s->next = app->sessions;
    app->sessions = s;
    app->n_sessions++;
    *out = s;
    return 0;
}

void rd_session_delete(rd_app *app, rd_session *s)
{
    for (rd_session **p = &app->sessions; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    if (app->sched) /* NULL once the engine stopped (exit): the slot pool is gone */
        rd_sched_release_slot(app->sched, s->slot);
    app->n_sessions--;
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
}

void rd_session_advance(rd_session *s, int64_t tokens)
{
    s->tokens += tokens;
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
