/*
 * persist.c -- sessions kept across restarts in --state-dir.
 *
 * At a clean stop (after the drain, with the engine thread joined) every
 * session is written to DIR/<id>.state as a state blob
 * (docs/state-format.md) with rn_write_atomic, so a crash or kill -9 at any
 * moment leaves each file at its previous version or its new one.  At start
 * (before the HTTP server listens) each such file is read, validated like
 * an upload and imported; a torn, corrupt or foreign file is skipped with a
 * log line and left where it is for an operator to look at.  Deleting a
 * session deletes its file.  Loop thread (or main thread before/after the
 * loop) only.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "log.h"
#include "session.h"
#include "state_blob.h"

#define SUFFIX ".state"
#define WRONG_SIZE "wrong size for this model's state (truncated or foreign)"

static int state_path(const rd_app *app, const char *id, char *out, size_t cap)
{
    return snprintf(out, cap, "%s/%s" SUFFIX, app->opt.state_dir, id) < (int)cap ? 0 : -1;
}

/* The whole file if it is exactly want bytes long (a longer or shorter one
 * is not this model's blob); NULL otherwise, with the reason in why. */
static unsigned char *read_exact(const char *path, size_t want, const char **why)
{
    unsigned char *buf = NULL;
    struct stat st;
    FILE *f = fopen(path, "rb");
    *why = NULL;
    if (!f) {
        *why = strerror(errno);
        return NULL;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode))
        *why = "not a regular file";
    else if ((size_t)st.st_size != want)
        *why = WRONG_SIZE;
    else if (!(buf = malloc(want)))
        *why = "out of memory";
    else if (fread(buf, 1, want, f) != want)
        *why = "short read";
    fclose(f);
    if (*why) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* DIR/<id>.owner: the key name the session belongs to (a separate file:
 * the state blob is portable, ownership is this server's business). */
/* The owner sidecar file; -1 with the reason in why.  Thread-safe. */
static int write_owner(const rd_app *app, const char *id, const char *owner, char *why, size_t cap)
{
    char path[4096];
    rn_error err = {0};
    size_t len = strlen(owner);
    const void *parts[] = {owner};
    if (snprintf(path, sizeof path, "%s/%s.owner", app->opt.state_dir, id) >= (int)sizeof path) {
        snprintf(why, cap, "path too long");
        return -1;
    }
    if (rn_write_atomic(path, parts, &len, 1, &err) != RN_OK) {
        snprintf(why, cap, "owner file: %s", err.msg);
        return -1;
    }
    return 0;
}

static void read_owner(rd_app *app, rd_session *s)
{
    char path[4096], buf[64] = "";
    if (snprintf(path, sizeof path, "%s/%s.owner", app->opt.state_dir, s->id) >= (int)sizeof path)
        return;
    FILE *f = fopen(path, "r");
    if (!f)
        return; /* none: no key owns it (readable by all only while the API is open) */
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    rd_session_set_owner(s, buf);
}

/* Imports one file as session id; 0 on success, -1 after logging why not. */
static int restore_one(rd_app *app, const char *path, const char *id)
{
    size_t sb = rn_engine_state_bytes(app->engine), want = RN_BLOB_HEADER + sb;
    const char *why = NULL;
    rn_error err = {0};
    rn_blob_info info;
    rd_session *s = NULL;
    unsigned char *blob = read_exact(path, want, &why);
    if (!blob)
        goto skip;
    if (rn_blob_parse(blob, want, app->model, &info, &err) != RN_OK) {
        why = err.msg;
        goto skip;
    }
    if (rd_session_create_with_id(app, id, &s) != 0) {
        /* no slot left: the session stays in its file until it is used */
        if (rd_session_create_on_disk(app, id, info.tokens, &s) != 0) {
            why = "session limit reached";
            goto skip;
        }
        read_owner(app, s);
        free(blob);
        return 0;
    }
    if (rn_state_import(app->engine, rd_session_slot(s),
                        (const float *)(void *)(blob + RN_BLOB_HEADER), sb, info.pos) != RN_OK) {
        rd_session_delete(app, s);
        why = "the engine refused the state";
        goto skip;
    }
    rd_session_take_fresh(s);
    rd_session_set_tokens(s, info.tokens);
    read_owner(app, s);
    s->dirty = 0; /* its file is its state */
    free(blob);
    return 0;
skip:
    rd_log(RD_LOG_WARN, "msg=\"state file skipped\" file=%s reason=\"%s\"", path, why);
    free(blob);
    return -1;
}

int rd_persist_restore(rd_app *app)
{
    if (!app->opt.state_dir)
        return 0;
    DIR *d = opendir(app->opt.state_dir);
    if (!d) {
        fprintf(stderr, "retnetd: --state-dir %s: %s\n", app->opt.state_dir, strerror(errno));
        return -1;
    }
    int restored = 0, skipped = 0;
    for (struct dirent *e; (e = readdir(d));) {
        char path[4096], id[64];
        size_t n = strlen(e->d_name), sl = strlen(SUFFIX);
        if (e->d_name[0] == '.' ||
            snprintf(path, sizeof path, "%s/%s", app->opt.state_dir, e->d_name) >= (int)sizeof path)
            continue;
        if (strstr(e->d_name, SUFFIX ".tmp.")) {
            /* a write that never reached its rename: the old file (if any) is intact */
            rd_log(RD_LOG_WARN, "msg=\"removing an unfinished state file\" file=%s", path);
            unlink(path);
            continue;
        }
        if (n <= sl || strcmp(e->d_name + n - sl, SUFFIX) != 0 || n - sl >= sizeof id)
            continue;
        memcpy(id, e->d_name, n - sl);
        id[n - sl] = '\0';
        if (!rd_session_id_valid(id)) {
            rd_log(RD_LOG_WARN,
                   "msg=\"state file skipped\" file=%s reason=\"not a session "
                   "id\"\n",
                   path);
            skipped++;
            continue;
        }
        if (restore_one(app, path, id) == 0)
            restored++;
        else
            skipped++;
    }
    closedir(d);
    rd_log(RD_LOG_INFO, "msg=\"sessions restored\" dir=%s restored=%d skipped=%d",
           app->opt.state_dir, restored, skipped);
    return 0;
}

int rd_persist_has_file(const rd_app *app, const char *id)
{
    char path[4096];
    struct stat st;
    return app->opt.state_dir && state_path(app, id, path, sizeof path) == 0 &&
           stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int rd_persist_write_files(const rd_app *app, const char *id, const char *owner,
                           const unsigned char *blob, size_t len, char *why, size_t cap)
{
    char path[4096];
    rn_error err = {0};
    const void *parts[] = {blob};
    if (!app->opt.state_dir || state_path(app, id, path, sizeof path) != 0) {
        snprintf(why, cap, "no state directory or path too long");
        return -1;
    }
    if (write_owner(app, id, owner, why, cap) != 0)
        return -1;
    if (rn_write_atomic(path, parts, &len, 1, &err) != RN_OK) {
        snprintf(why, cap, "%s", err.msg);
        return -1;
    }
    return 0;
}

/* rd_persist_write_files with a failure logged. */
static int write_blob(rd_app *app, const char *id, const char *owner, const unsigned char *blob,
                      size_t len)
{
    char why[512];
    if (rd_persist_write_files(app, id, owner, blob, len, why, sizeof why) == 0)
        return 0;
    rd_log(RD_LOG_ERROR, "msg=\"cannot write a session's state\" id=%s reason=\"%s\"", id, why);
    return -1;
}

unsigned char *rd_persist_read_files(const rd_app *app, const char *id, size_t *len,
                                     int64_t *tokens, int64_t *pos, int *corrupt, char *why,
                                     size_t cap)
{
    char path[4096];
    const char *reason = "path too long";
    rn_error err = {0};
    rn_blob_info info;
    size_t want = RN_BLOB_HEADER + rn_engine_state_bytes(app->engine);
    unsigned char *blob = NULL;
    *corrupt = 0;
    if (app->opt.state_dir && state_path(app, id, path, sizeof path) == 0 &&
        (blob = read_exact(path, want, &reason)) != NULL) {
        if (rn_blob_parse(blob, want, app->model, &info, &err) == RN_OK) {
            *len = want;
            *tokens = info.tokens;
            *pos = info.pos;
            return blob;
        }
        reason = err.msg;
        *corrupt = 1;
    } else if (reason && !strcmp(reason, WRONG_SIZE)) {
        *corrupt = 1;
    }
    snprintf(why, cap, "%s", reason ? reason : "unreadable");
    free(blob);
    return NULL;
}

/* Writes one session; the engine must be idle (its thread stopped). */
static int save_one(rd_app *app, rd_session *s)
{
    if (s->tier == RD_TIER_DISK)
        return 0; /* its file is its state already */
    if (s->moving || (s->tier == RD_TIER_HOST && !s->blob && !s->fresh)) {
        /* cannot happen once every engine result was delivered; never write
         * a slot that is not this session's */
        rd_log(RD_LOG_ERROR,
               "msg=\"session not persisted: its state is in transit\" "
               "id=%s\n",
               s->id);
        return -1;
    }
    if (s->tier == RD_TIER_HOST && s->blob)
        return write_blob(app, s->id, s->owner, s->blob, s->blob_len);
    size_t sb = rn_engine_state_bytes(app->engine);
    unsigned char hdr[RN_BLOB_HEADER];
    float *st = calloc(1, sb);
    char path[4096];
    rn_error err = {0};
    rn_blob_info info;
    int rc = -1;
    int64_t pos = 0;
    if (!st || state_path(app, rd_session_id(s), path, sizeof path) != 0)
        goto cleanup;
    if (!rd_session_is_fresh(s)) { /* a fresh session's slot holds someone else's state */
        if (rn_state_export(app->engine, rd_session_slot(s), st, sb) != RN_OK)
            goto cleanup;
        pos = rn_state_pos(app->engine, rd_session_slot(s));
    }
    /* a request cut at the drain deadline may have fed tokens the session
     * has not counted yet: the state's own position is the truth */
    rn_blob_info_for(app->model, pos, rd_session_busy(s) ? pos : rd_session_tokens(s), &info);
    rn_blob_write_header(hdr, &info, st);
    const void *parts[] = {hdr, st};
    size_t lens[] = {sizeof hdr, sb};
    char why[512] = "";
    if (write_owner(app, s->id, s->owner, why, sizeof why) != 0 ||
        rn_write_atomic(path, parts, lens, 2, &err) != RN_OK) {
        rd_log(RD_LOG_ERROR, "msg=\"cannot persist a session\" id=%s reason=\"%s\"",
               rd_session_id(s), why[0] ? why : err.msg);
        goto cleanup;
    }
    rc = 0;
cleanup:
    free(st);
    return rc;
}

int rd_persist_save_all(rd_app *app)
{
    if (!app->opt.state_dir || !app->engine)
        return 0;
    int saved = 0, failed = 0;
    for (rd_session *s = app->sessions; s; s = rd_session_next(s))
        if (save_one(app, s) == 0)
            saved++;
        else
            failed++;
    rd_log(RD_LOG_INFO, "msg=\"sessions persisted\" dir=%s saved=%d failed=%d", app->opt.state_dir,
           saved, failed);
    return failed ? -1 : 0;
}

void rd_persist_forget(rd_app *app, const char *id)
{
    char path[4096], owner[4096];
    if (app->opt.state_dir &&
        snprintf(owner, sizeof owner, "%s/%s.owner", app->opt.state_dir, id) < (int)sizeof owner)
        unlink(owner);
    if (app->opt.state_dir && state_path(app, id, path, sizeof path) == 0 && unlink(path) != 0 &&
        errno != ENOENT)
        rd_log(RD_LOG_WARN,
               "msg=\"cannot remove a session's state file\" file=%s "
               "reason=\"%s\"\n",
               path, strerror(errno));
}
