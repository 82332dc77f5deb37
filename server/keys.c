/*
 * keys.c -- API keys: [server] api_key (one key, named "default") and
 * [server] api_key_file (one key per line, "name:secret" or just "secret",
 * named key-<line>; '#' starts a comment).  A request's key is found by
 * comparing it with every key in constant time, so neither the position
 * where a guess first differs nor which key matched shows in the timing.
 * The matched key's name is the request's principal; sessions belong to
 * the principal that created them.  Loop thread (and main before it).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "keys.h"
#include "log.h"

typedef struct {
    char name[RD_KEY_NAME];
    char *secret;
} key;

struct rd_keys {
    key *k;
    int n, cap;
};

/* Compares in time that depends only on the lengths. */
static int secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), n = la > lb ? la : lb;
    unsigned char d = (unsigned char)(la != lb);
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)((i < la ? a[i] : 0) ^ (i < lb ? b[i] : 0));
    return d == 0;
}

static int add(rd_keys *ks, const char *name, const char *secret)
{
    if (ks->n == ks->cap) {
        int cap = ks->cap ? 2 * ks->cap : 8;
        key *p = realloc(ks->k, sizeof *p * (size_t)cap);
        if (!p)
            return -1;
        ks->k = p;
        ks->cap = cap;
    }
    key *k = &ks->k[ks->n];
    snprintf(k->name, sizeof k->name, "%s", name);
    if (!(k->secret = strdup(secret)))
        return -1;
    ks->n++;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = '\0';
    return s;
}

static int load_file(rd_keys *ks, const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int no = 0;
    if (!f) {
        fprintf(stderr, "retnetd: api_key_file %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        no++;
        char *s = trim(line), *colon = strchr(s, ':'), name[RD_KEY_NAME];
        if (!*s || *s == '#')
            continue;
        snprintf(name, sizeof name, "key-%d", no);
        if (colon) {
            *colon = '\0';
            snprintf(name, sizeof name, "%s", trim(s));
            s = trim(colon + 1);
        }
        if (!*s || !name[0] || strlen(s) > 512) {
            fprintf(stderr, "retnetd: %s:%d: want \"name:secret\" or \"secret\"\n", path, no);
            fclose(f);
            return -1;
        }
        for (int i = 0; i < ks->n; i++)
            if (!strcmp(ks->k[i].name, name)) {
                fprintf(stderr, "retnetd: %s:%d: key name '%s' used twice\n", path, no, name);
                fclose(f);
                return -1;
            }
        if (strlen(s) < 16)
            rd_log(RD_LOG_WARN, "msg=\"short API key (under 16 characters)\" name=%s", name);
        if (add(ks, name, s) != 0) {
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    if (ks->n == 0) {
        fprintf(stderr, "retnetd: api_key_file %s holds no key\n", path);
        return -1;
    }
    return 0;
}

int rd_keys_load(rd_keys **out, const char *single, const char *file)
{
    rd_keys *ks = calloc(1, sizeof *ks);
    *out = NULL;
    if (!ks)
        return -1;
    if ((single && single[0] && add(ks, "default", single) != 0) ||
        (file && file[0] && load_file(ks, file) != 0)) {
        rd_keys_free(ks);
        return -1;
    }
    *out = ks;
    return 0;
}

void rd_keys_free(rd_keys *ks)
{
    if (!ks)
        return;
    for (int i = 0; i < ks->n; i++)
        free(ks->k[i].secret);
    free(ks->k);
    free(ks);
}

int rd_keys_enabled(const rd_keys *ks)
{
    return ks && ks->n > 0;
}

const char *rd_keys_check(const rd_keys *ks, const char *authorization)
{
    const char *hit = NULL;
    if (!authorization || strncmp(authorization, "Bearer ", 7) != 0)
        return NULL;
    for (int i = 0; i < ks->n; i++) /* every key is compared, whichever matches */
        if (secret_equal(authorization + 7, ks->k[i].secret) && !hit)
            hit = ks->k[i].name;
    return hit;
}
