/*
 * jw.c -- see jw.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jw.h"

/* Room for n more bytes; 0, or -1 (and w->oom) when it cannot grow. */
static int jw_room(rd_jw *w, size_t n)
{
    if (w->oom)
        return -1;
    if (w->len + n <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 512;
    while (cap < w->len + n)
        cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p) {
        w->oom = 1;
        return -1;
    }
    w->p = p;
    w->cap = cap;
    return 0;
}

void rd_jw_reset(rd_jw *w)
{
    w->len = 0;
    w->oom = 0;
}

void rd_jw_raw(rd_jw *w, const char *s, size_t n)
{
    if (jw_room(w, n) != 0)
        return;
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

void rd_jw_lit(rd_jw *w, const char *s)
{
    rd_jw_raw(w, s, strlen(s));
}

void rd_jw_str(rd_jw *w, const char *s, size_t n)
{
    /* at most 6 bytes per input byte (\u00XX) and the quotes */
    if (jw_room(w, 6 * n + 2) != 0)
        return;
    char *o = w->p + w->len;
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\') {
            *o++ = (char)ch;
            continue;
        }
        *o++ = '\\';
        switch (ch) {
        case '"':
        case '\\':
            *o++ = (char)ch;
            break;
        case '\b':
            *o++ = 'b';
            break;
        case '\f':
            *o++ = 'f';
            break;
        case '\n':
            *o++ = 'n';
            break;
        case '\r':
            *o++ = 'r';
            break;
        case '\t':
            *o++ = 't';
            break;
        default: {
            static const char hex[] = "0123456789abcdef";
            memcpy(o, "u00", 3);
            o[3] = hex[ch >> 4];
            o[4] = hex[ch & 15];
            o += 5;
        }
        }
    }
    *o++ = '"';
    w->len = (size_t)(o - w->p);
}

void rd_jw_int(rd_jw *w, long long v)
{
    char b[24];
    int n = snprintf(b, sizeof b, "%lld", v);
    rd_jw_raw(w, b, (size_t)n);
}

void rd_jw_cjson(rd_jw *w, const void *item)
{
    char *s = cJSON_PrintUnformatted(item);
    if (!s) {
        w->oom = 1;
        return;
    }
    rd_jw_lit(w, s);
    cJSON_free(s);
}

void rd_jw_free(rd_jw *w)
{
    free(w->p);
    *w = (rd_jw){0};
}
