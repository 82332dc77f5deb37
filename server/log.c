/*
 * log.c -- see log.h.  Loop thread and main thread only (the engine thread
 * does not log).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static struct {
    rd_log_level level;
    int json;
    FILE *f;
    char *path;
} lg = {RD_LOG_INFO, 0, NULL, NULL};

static const char *const names[] = {"debug", "info", "warn", "error"};

static FILE *out(void)
{
    return lg.f ? lg.f : stderr;
}

int rd_log_open(const char *level, const char *format, const char *file)
{
    for (int i = 0; i < 4; i++)
        if (level && !strcmp(level, names[i]))
            lg.level = (rd_log_level)i;
    lg.json = format && !strcmp(format, "json");
    if (file && file[0]) {
        lg.f = fopen(file, "a");
        if (!lg.f) {
            fprintf(stderr, "retnetd: log file %s: %s\n", file, strerror(errno));
            return -1;
        }
        setvbuf(lg.f, NULL, _IOLBF, 0);
        lg.path = strdup(file);
    }
    return 0;
}

void rd_log_reopen(void)
{
    if (!lg.path)
        return;
    FILE *f = fopen(lg.path, "a");
    if (!f) {
        rd_log(RD_LOG_ERROR, "msg=\"cannot reopen the log file\" file=%s error=\"%s\"", lg.path,
               strerror(errno));
        return;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    fclose(lg.f);
    lg.f = f;
    rd_log(RD_LOG_INFO, "msg=\"log file reopened\"");
}

void rd_log_close(void)
{
    if (lg.f)
        fclose(lg.f);
    free(lg.path);
    lg.f = NULL;
    lg.path = NULL;
}

int rd_log_enabled(rd_log_level lv)
{
    return lv >= lg.level;
}

const char *rd_log_clean(char *o, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 1 < cap; s++)
        o[n++] = ((unsigned char)*s < 0x20 || *s == '"' || *s == '\\') ? '?' : *s;
    o[n] = '\0';
    return o;
}

/* Is v[0..len) a number as JSON spells it: -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?  (strtod also takes "0053964", "inf" or "0x1f", which
 * would make the line invalid JSON.) */
static int json_number(const char *v, size_t len)
{
    size_t i = 0;
    int digits = 0;
    if (i < len && v[i] == '-')
        i++;
    if (i < len && v[i] == '0')
        i++, digits = 1;
    else
        while (i < len && v[i] >= '0' && v[i] <= '9')
            i++, digits++;
    if (!digits)
        return 0;
    if (i < len && v[i] == '.') {
        size_t f = ++i;
        while (i < len && v[i] >= '0' && v[i] <= '9')
            i++;
        if (i == f)
            return 0;
    }
    if (i < len && (v[i] == 'e' || v[i] == 'E')) {
        i++;
        if (i < len && (v[i] == '+' || v[i] == '-'))
            i++;
        size_t e = i;
        while (i < len && v[i] >= '0' && v[i] <= '9')
            i++;
        if (i == e)
            return 0;
    }
    return i == len;
}

/* logfmt fields -> the members of a JSON object (values kept as strings,
 * numbers as numbers). */
static void write_json_fields(FILE *f, const char *s)
{
    while (*s) {
        while (*s == ' ')
            s++;
        const char *k = s;
        while (*s && *s != '=' && *s != ' ')
            s++;
        if (*s != '=')
            break;
        fprintf(f, ",\"%.*s\":", (int)(s - k), k);
        s++;
        const char *v = s;
        size_t len;
        int quoted = *s == '"';
        if (quoted) {
            v = ++s;
            while (*s && *s != '"')
                s++;
            len = (size_t)(s - v);
            if (*s)
                s++;
        } else {
            while (*s && *s != ' ')
                s++;
            len = (size_t)(s - v);
        }
        if (!quoted && json_number(v, len))
            fprintf(f, "%.*s", (int)len, v);
        else
            fprintf(f, "\"%.*s\"", (int)len, v);
    }
}

void rd_log(rd_log_level lv, const char *fmt, ...)
{
    if (lv < lg.level)
        return;
    char body[2048], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof body, fmt, ap);
    va_end(ap);
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
    /* the line is composed first and written with one call: stderr is
     * unbuffered, and a reader of the file (a log shipper, tail -f) must
     * never see half a line */
    char *line = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&line, &len);
    FILE *f = m ? m : out();
    if (lg.json) {
        fprintf(f, "{\"time\":\"%s\",\"level\":\"%s\"", ts, names[lv]);
        write_json_fields(f, body);
        fputs("}\n", f);
    } else {
        fprintf(f, "time=%s level=%s %s\n", ts, names[lv], body);
    }
    if (m && fclose(m) == 0)
        fwrite(line, 1, len, out());
    free(line);
}
