/* util.c -- small helpers shared inside the engine. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
