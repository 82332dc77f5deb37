/* util.c -- small helpers shared inside the engine. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cpu/simd.h"
#include "util.h"

char *rn__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

char *rn__strcat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *d = malloc(la + lb + lc + 1);
    if (!d)
        return NULL;
    memcpy(d, a, la);
    memcpy(d + la, b, lb);
    memcpy(d + la + lb, c, lc + 1);
    return d;
}

int rn__read_file(const char *path, size_t max, char **out, size_t *len)
{
    int rc = 0;
    char *buf = NULL;
    struct stat st;
    *out = NULL;
    /* O_NONBLOCK: a FIFO in place of a file must fail, not block the loader */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = S_ISDIR(st.st_mode) ? -EISDIR : -ENXIO; /* FIFO, socket, device */
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        rc = -EFBIG;
        goto out;
    }
    size_t n = (size_t)st.st_size, got = 0;
    buf = malloc(n + 1);
    if (!buf) {
        rc = -ENOMEM;
        goto out;
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            goto out;
        }
        got += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

const char *rn__read_error(int rc)
{
    return rc == -ENXIO ? "not a regular file" : strerror(-rc);
}

double rn__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void rn__huge_pages_hint(void *p, size_t n)
{
#ifdef MADV_HUGEPAGE
    uintptr_t a = ((uintptr_t)p + RN_HUGE_PAGE - 1) & ~(uintptr_t)(RN_HUGE_PAGE - 1);
    uintptr_t b = ((uintptr_t)p + n) & ~(uintptr_t)(RN_HUGE_PAGE - 1);
    if (b > a)
        (void)madvise((void *)a, b - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

void *rn__huge_alloc(size_t n)
{
    size_t rounded = (n + RN_HUGE_PAGE - 1) & ~(RN_HUGE_PAGE - 1);
    void *p = aligned_alloc(RN_HUGE_PAGE, rounded ? rounded : RN_HUGE_PAGE);
    if (p)
        rn__huge_pages_hint(p, rounded);
    return p;
}

typedef float rn_v16f __attribute__((vector_size(64)));
typedef int32_t rn_v16i __attribute__((vector_size(64)));

/* Lane j keeps the largest value among elements j, j + 16, ... and the first
 * index where it occurs (a strict >, as the scalar rule, so NaN never enters
 * and ties keep the earlier index); the lanes are then merged by value, ties
 * to the smaller index, and the tail follows in order. */
RN_CLONES static int32_t argmax_row(const float *l, int n)
{
    const rn_v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    rn_v16f m;
    rn_v16i at = {0};
    for (int j = 0; j < 16; j++)
        m[j] = -INFINITY;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        rn_v16f v;
        memcpy(&v, l + i, sizeof v);
        rn_v16i gt = v > m;
        m = (rn_v16f)(((rn_v16i)v & gt) | ((rn_v16i)m & ~gt));
        at = ((lane + i) & gt) | (at & ~gt);
    }
    float best = -INFINITY;
    int32_t best_i = 0;
    for (int j = 0; j < 16; j++)
        if (m[j] > best || (m[j] == best && m[j] > -INFINITY && at[j] < best_i)) {
            best = m[j];
            best_i = at[j];
        }
    for (; i < n; i++)
        if (l[i] > best) {
            best = l[i];
            best_i = i;
        }
    return best_i;
}

void rn__argmax_rows(const float *lg, int rows, int n, int32_t *out)
{
    for (int r = 0; r < rows; r++)
        out[r] = argmax_row(lg + (size_t)r * (size_t)n, n);
}
