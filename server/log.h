/*
 * log.h -- retnetd's log: one line per event, logfmt or JSON, to stderr (so
 * journald and docker collect it) or to a file reopened on SIGHUP.
 *
 * Callers write logfmt fields after the level: rd_log(RD_LOG_INFO,
 * "msg=\"ready\" port=%d", port).  The line gets time= and level= in front;
 * in JSON format the same fields become one object.  Values from requests
 * go through rd_log_clean first, so a line is always one parseable line.
 */
#ifndef RD_LOG_H
#define RD_LOG_H

#include <stddef.h>

typedef enum { RD_LOG_DEBUG = 0, RD_LOG_INFO, RD_LOG_WARN, RD_LOG_ERROR } rd_log_level;

/* level: debug|info|warn|error; format: logfmt|json; file: "" or NULL for
 * stderr.  Returns 0, or -1 (message on stderr) when the file cannot be
 * opened. */
int rd_log_open(const char *level, const char *format, const char *file);
/* Reopens the log file (after logrotate moved it); stderr stays stderr. */
void rd_log_reopen(void);
void rd_log_close(void);
int rd_log_enabled(rd_log_level lv);
void rd_log(rd_log_level lv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies s into out (cap bytes) replacing quotes, backslashes and control
 * characters, for a quoted logfmt value; returns out. */
const char *rd_log_clean(char *out, size_t cap, const char *s);

#endif
