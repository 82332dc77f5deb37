/* utf8.c -- see utf8.h. */
#include <stdlib.h>
#include <string.h>

#include "utf8.h"

/* Valid second-byte range for a lead byte (Unicode Table 3-7). */
static int second_range(unsigned char lead, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead == 0xE0) {
        *lo = 0xA0;
        return 3;
    }
    if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF)
        return 3;
    if (lead == 0xED) {
        *hi = 0x9F;
        return 3;
    }
    if (lead == 0xF0) {
        *lo = 0x90;
        return 4;
    }
    if (lead >= 0xF1 && lead <= 0xF3)
        return 4;
    if (lead == 0xF4) {
        *hi = 0x8F;
        return 4;
    }
    return 0;
}

size_t rn_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char lo, hi;
    if (n == 0) {
        *cp = RN_UTF8_REPLACEMENT;
        return 0;
    }
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int len = second_range(s[0], &lo, &hi);
    if (len == 0) {
        *cp = RN_UTF8_REPLACEMENT;
        return 1;
    }
    uint32_t c = s[0] & (0x7F >> len);
    for (int i = 1; i < len; i++) {
        unsigned char b = (size_t)i < n ? s[i] : 0;
        unsigned char l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if ((size_t)i >= n || b < l || b > h) {
            *cp = RN_UTF8_REPLACEMENT; /* maximal subpart: the valid prefix */
            return (size_t)i;
        }
        c = (c << 6) | (b & 0x3F);
    }
    *cp = c;
    return (size_t)len;
}

size_t rn_utf8_put(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

size_t rn_utf8_complete_prefix(const unsigned char *s, size_t n)
{
    /* Only the last 3 bytes can hold an unfinished sequence. */
    size_t start = n > 3 ? n - 3 : 0;
    for (size_t i = start; i < n; i++) {
        unsigned char lo, hi;
        int len = second_range(s[i], &lo, &hi);
        if (len == 0 || i + (size_t)len <= n)
            continue;
        /* s[i] starts a sequence running past the end: still valid so far? */
        int ok = 1;
        for (size_t k = i + 1; k < n && ok; k++) {
            unsigned char l = k == i + 1 ? lo : 0x80, h = k == i + 1 ? hi : 0xBF;
            ok = s[k] >= l && s[k] <= h;
        }
        if (ok)
            return i;
    }
    return n;
}

int rn_utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t k = rn_utf8_next(s + i, n - i, &cp);
        if (cp == RN_UTF8_REPLACEMENT &&
            !(k == 3 && s[i] == 0xEF && s[i + 1] == 0xBF && s[i + 2] == 0xBD))
            return 0;
        i += k;
    }
    return 1;
}

char *rn_utf8_sanitize(const char *s, size_t n, size_t *out_len)
{
    /* each invalid byte becomes at most 3 bytes */
    char *out = malloc(n * 3 + 1);
    size_t o = 0, i = 0;
    if (!out)
        return NULL;
    while (i < n) {
        uint32_t cp;
        size_t k = rn_utf8_next((const unsigned char *)s + i, n - i, &cp);
        if (cp == RN_UTF8_REPLACEMENT)
            o += rn_utf8_put(cp, out + o);
        else
            memcpy(out + o, s + i, k), o += k;
        i += k;
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}
