/*
 * util.h -- engine-internal helpers (rn__ prefix): strings, files, fp16/bf16.
 */
#ifndef RN_UTIL_H
#define RN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Returns a malloc'd copy owned by the caller, or NULL. */
char *rn__strdup(const char *s);
/* Returns malloc'd a+b+c owned by the caller, or NULL. */
char *rn__strcat3(const char *a, const char *b, const char *c);
/* Reads a whole file (at most max bytes) into a new NUL-terminated buffer owned
 * by the caller.  Returns 0, or -errno (-EFBIG when larger than max, -EISDIR
 * for a directory, -ENXIO for anything else that is not a regular file). */
int rn__read_file(const char *path, size_t max, char **out, size_t *len);
/* Monotonic time in seconds. */
double rn__now(void);

static inline float rn__bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; NaN stays NaN. */
static inline uint16_t rn__f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float rn__f16_to_f32(uint16_t h)
{
    _Float16 x;
    memcpy(&x, &h, 2);
    return (float)x;
}

static inline uint16_t rn__f32_to_f16(float f)
{
    _Float16 x = (_Float16)f;
    uint16_t h;
    memcpy(&h, &x, 2);
    return h;
}

#endif
