/*
 * sse_load.c -- the load side of `make bench-http`: C concurrent clients,
 * each sending the same request several times in turn over fresh
 * connections, recording every byte received and when each read() ended.
 * It parses nothing: bench/http_bench.py reads the record afterwards, so
 * while the server is measured this process costs one epoll_wait and one
 * read per arriving piece (a Python client cost the server's 2 cores about
 * 50 us per token, which the measurement then blamed on the server).
 *
 *   sse_load PORT CONCURRENCY PER_CLIENT REQUEST_FILE OUT_FILE [TIMEOUT_S [FIRST]]
 *
 * With FIRST, client i's first request is the file FIRST<i> instead
 * (bench/http_bench.py staggers the clients with it: first requests of
 * different lengths, so that their later requests do not all end, and
 * arrive, in the same engine iteration).
 * REQUEST_FILE holds the whole HTTP request (head and body, with
 * "Connection: close": a response ends when the server closes).  OUT_FILE
 * gets, per request in completion order:
 *   "REQ client t_send t_end n_marks n_bytes\n" (client: 0 .. CONCURRENCY-1),
 *   n_marks lines "offset t\n" (the raw length after each read and its
 *   time), then the n_bytes raw bytes and "\n".  Times are CLOCK_MONOTONIC seconds.  Exit 0, or 1 with a
 *   message (a failed connect, a stall, the level's time limit).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

typedef struct {
    size_t len; /* raw bytes received after this read */
    double t;   /* when the read returned */
} mark;

typedef struct {
    int fd, client;
    const char *req; /* the request's bytes (not owned) */
    size_t req_len;
    double t_send, t_end, last_io;
    size_t sent;
    char *raw; /* owned */
    size_t len, cap;
    mark *marks; /* owned */
    size_t n_marks, cap_marks;
} conn;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *q = realloc(p, c * elem);
    if (!q) {
        fprintf(stderr, "sse_load: out of memory\n");
        exit(1);
    }
    *cap = c;
    return q;
}

/* Opens a connection and starts sending; the request's bytes go out as the
 * socket takes them (EPOLLOUT).  c owns the socket and buffers until
 * conn_free. */
static int conn_start(conn *c, int ep, int port, int client, const char *req, size_t req_len)
{
    memset(c, 0, sizeof *c);
    c->client = client;
    c->req = req;
    c->req_len = req_len;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->last_io = now_s();
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
        return -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
}

/* Sends what the socket takes; the request counts as sent from its first
 * byte (after the connection is made, as the time to first token starts). */
static int conn_send(conn *c, int ep)
{
    if (c->sent == 0)
        c->t_send = now_s();
    while (c->sent < c->req_len) {
        ssize_t w = send(c->fd, c->req + c->sent, c->req_len - c->sent, MSG_NOSIGNAL);
        if (w < 0)
            return errno == EAGAIN ? 0 : -1;
        c->sent += (size_t)w;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Reads what arrived; returns 1 at the end of the response, 0 for more,
 * -1 on an error. */
static int conn_read(conn *c)
{
    for (;;) {
        c->raw = grow(c->raw, &c->cap, c->len + 65536, 1);
        ssize_t r = read(c->fd, c->raw + c->len, 65536);
        if (r < 0)
            return errno == EAGAIN ? 0 : -1;
        double t = now_s();
        c->last_io = t;
        if (r == 0) {
            c->t_end = t;
            return 1;
        }
        c->len += (size_t)r;
        c->marks = grow(c->marks, &c->cap_marks, c->n_marks + 1, sizeof *c->marks);
        c->marks[c->n_marks++] = (mark){c->len, t};
    }
}

static void conn_write_record(const conn *c, FILE *out)
{
    fprintf(out, "REQ %d %.9f %.9f %zu %zu\n", c->client, c->t_send, c->t_end, c->n_marks, c->len);
    for (size_t i = 0; i < c->n_marks; i++)
        fprintf(out, "%zu %.9f\n", c->marks[i].len, c->marks[i].t);
    fwrite(c->raw, 1, c->len, out);
    fputc('\n', out);
}

static void conn_free(conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->raw);
    free(c->marks);
    c->fd = -1;
    c->raw = NULL;
    c->marks = NULL;
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (!f)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long sz = ftell(f);
        rewind(f);
        buf = sz > 0 ? malloc((size_t)sz) : NULL;
        if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
            free(buf);
            buf = NULL;
        }
        *n = sz > 0 ? (size_t)sz : 0;
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: sse_load PORT CONCURRENCY PER_CLIENT REQUEST_FILE OUT_FILE "
                        "[TIMEOUT_S [FIRST]]\n");
        return 2;
    }
    int port = atoi(argv[1]), conc = atoi(argv[2]), per = atoi(argv[3]);
    double limit = argc > 6 ? atof(argv[6]) : 300.0, io_limit = 60.0;
    if (port < 1 || port > 65535 || conc < 1 || conc > 100000 || per < 1) {
        fprintf(stderr, "sse_load: PORT 1..65535, CONCURRENCY 1..100000, PER_CLIENT >= 1\n");
        return 2;
    }
    size_t req_len = 0;
    char *req = read_file(argv[4], &req_len);
    FILE *out = req ? fopen(argv[5], "wb") : NULL;
    int ep = epoll_create1(0), rc = 1;
    conn *cs = calloc((size_t)conc, sizeof *cs);
    int *left = calloc((size_t)conc, sizeof *left);
    char **first = calloc((size_t)conc, sizeof *first);
    size_t *first_len = calloc((size_t)conc, sizeof *first_len);
    if (!req || !out || ep < 0 || !cs || !left || !first || !first_len) {
        fprintf(stderr, "sse_load: cannot read %s or write %s\n", argv[4], argv[5]);
        goto done;
    }
    for (int i = 0; argc > 7 && i < conc; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%d", argv[7], i);
        if (!(first[i] = read_file(path, &first_len[i]))) {
            fprintf(stderr, "sse_load: cannot read %s\n", path);
            goto done;
        }
    }
    int active = 0;
    for (int i = 0; i < conc; i++)
        cs[i].fd = -1;
    for (int i = 0; i < conc; i++) {
        left[i] = per - 1;
        if (conn_start(&cs[i], ep, port, i, first[i] ? first[i] : req,
                       first[i] ? first_len[i] : req_len) != 0) {
            fprintf(stderr, "sse_load: connect: %s\n", strerror(errno));
            goto done;
        }
        active++;
    }
    double t0 = now_s();
    struct epoll_event evs[256];
    while (active > 0) {
        int n = epoll_wait(ep, evs, 256, 1000);
        double t = now_s();
        if (t - t0 > limit) {
            fprintf(stderr, "sse_load: the level did not finish in %.0f s\n", limit);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            int r = 0;
            if (c->sent < c->req_len && (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                r = conn_send(c, ep);
            if (r == 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                r = conn_read(c);
            if (r < 0) {
                fprintf(stderr, "sse_load: client %d: %s\n", c->client, strerror(errno));
                goto done;
            }
            if (r == 1) {
                conn_write_record(c, out);
                int client = c->client;
                conn_free(c);
                active--;
                if (left[client] > 0) {
                    left[client]--;
                    if (conn_start(c, ep, port, client, req, req_len) != 0) {
                        fprintf(stderr, "sse_load: connect: %s\n", strerror(errno));
                        goto done;
                    }
                    active++;
                }
            }
        }
        for (int i = 0; i < conc; i++)
            if (cs[i].fd >= 0 && t - cs[i].last_io > io_limit) {
                fprintf(stderr, "sse_load: client %d made no progress for %.0f s\n", i, io_limit);
                goto done;
            }
    }
    rc = 0;
done:
    for (int i = 0; cs && i < conc; i++)
        if (cs[i].fd >= 0 || cs[i].raw)
            conn_free(&cs[i]);
    if (out && fclose(out) != 0)
        rc = 1;
    if (ep >= 0)
        close(ep);
    for (int i = 0; first && i < conc; i++)
        free(first[i]);
    free(first);
    free(first_len);
    free(cs);
    free(left);
    free(req);
    return rc;
}
