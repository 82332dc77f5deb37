/*
 * jw.h -- a JSON text built by appending, for what is sent once per token
 * (stream chunks): no tree and no allocation per value, where cJSON builds
 * a tree, allocates every node and prints numbers with printf and scanf.
 */
#ifndef RD_JW_H
#define RD_JW_H

#include <stddef.h>

/* Zero-initialised before use.  Once a growth fails, oom is set and further
 * appends are dropped; the writer of the text decides what to do with it. */
typedef struct rd_jw {
    char *p; /* owned: rd_jw_free */
    size_t len, cap;
    int oom;
} rd_jw;

/* Empties w for the next text, keeping its buffer. */
void rd_jw_reset(rd_jw *w);
void rd_jw_raw(rd_jw *w, const char *s, size_t n);
void rd_jw_lit(rd_jw *w, const char *s);
/* s[0..n) as a JSON string, escaped as cJSON escapes; a NUL byte is \u0000 */
void rd_jw_str(rd_jw *w, const char *s, size_t n);
void rd_jw_int(rd_jw *w, long long v);
/* a cJSON value's unformatted text (oom when it cannot be printed) */
void rd_jw_cjson(rd_jw *w, const void *cjson_item);
void rd_jw_free(rd_jw *w);

#endif
