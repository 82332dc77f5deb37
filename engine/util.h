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
/* Text for a failed rn__read_file's status. */
const char *rn__read_error(int rc);
/* Monotonic time in seconds. */
double rn__now(void);

/* out[r] = rn_argmax_row (rn_math.h) of row r of lg (rows x n): the same
 * pick (the first index of the largest value; NaN never picked; 0 when no
 * value is above -inf), 16 lanes at a time. */
void rn__argmax_rows(const float *lg, int rows, int n, int32_t *out);

#define RN_HUGE_PAGE ((size_t)2 << 20)
/* Asks for 2 MiB pages (transparent huge pages, granted on request where the
 * kernel runs them in "madvise" mode) over the whole 2 MiB blocks inside
 * [p, p + n): memory streamed every decode step then costs a TLB miss per
 * 2 MiB instead of per 4 KiB, and the hardware prefetcher does not stop at
 * every 4 KiB.  A hint: ignored where unsupported. */
void rn__huge_pages_hint(void *p, size_t n);
/* n bytes (not zeroed) from 2 MiB-aligned memory with rn__huge_pages_hint
 * over all of it, or NULL.  Owned by the caller (free). */
void *rn__huge_alloc(size_t n);

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

/* IEEE half <-> float in integer arithmetic (portable: no _Float16). */
static inline float rn__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, u;
    float f;
    if (exp == 0) {
        f = (float)mant * 0x1p-24f; /* zero or subnormal */
        memcpy(&u, &f, 4);
        u |= sign;
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; overflow gives infinity, NaN stays NaN. */
static inline uint16_t rn__f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u, mant = u & 0x7fffffu;
    int32_t e8 = (int32_t)((u >> 23) & 0xffu), exp = e8 - 127 + 15;
    if (e8 == 0xff)
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13), rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent rounds up correctly, to infinity at the top */
    return (uint16_t)(sign | h);
}

/* A 16-bit value of either kind -- bf16 where bf16 is set, else IEEE half --
 * as fp32, and fp32 rounded to it (to nearest even). */
static inline float rn__half_to_f32(uint16_t h, int bf16)
{
    return bf16 ? rn__bf16_to_f32(h) : rn__f16_to_f32(h);
}

static inline uint16_t rn__f32_to_half(float f, int bf16)
{
    return bf16 ? rn__f32_to_bf16(f) : rn__f32_to_f16(f);
}

#endif
