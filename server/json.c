/*
 * json.c -- OpenAI-shaped error bodies and JSON replies.  cJSON ownership:
 * rd_json_reply takes the object and frees it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "log.h"
#include "utf8.h"

void *rd_json_parse_object(const char *s, size_t len, char *why, size_t whylen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, len, &end, 0);
    if (!root) {
        size_t at = end && end >= s && end <= s + len ? (size_t)(end - s) : 0;
        snprintf(why, whylen, "the body is not valid JSON (error near byte %zu)", at);
        return NULL;
    }
    /* one value and nothing after it but whitespace */
    while (end < s + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end < s + len) {
        cJSON_Delete(root);
        snprintf(why, whylen, "the body is not valid JSON (unexpected data at byte %zu)",
                 (size_t)(end - s));
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        snprintf(why, whylen, "the body is not a JSON object");
        return NULL;
    }
    return root;
}

int rd_json_reply(rd_conn *c, unsigned status, void *obj)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s)
        return rd_http_reply(c, 500,
                             "{\"error\":{\"message\":\"out of "
                             "memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}",
                             91, NULL, NULL, NULL);
    int rc = rd_http_reply(c, status, s, strlen(s), NULL, NULL, NULL);
    cJSON_free(s);
    return rc;
}

/* Text from the request (a path, a field name, a header) or a message cut at
 * a byte limit may not be valid UTF-8: the JSON sent must be. */
static void add_text(cJSON *o, const char *key, const char *s)
{
    size_t n;
    char *clean = rn_utf8_sanitize(s, strlen(s), &n);
    cJSON_AddStringToObject(o, key, clean ? clean : "");
    free(clean);
}

const char *rd_json_fail_type(unsigned status)
{
    return status == 503 ? "service_unavailable_error"
           : status == 429 ? "rate_limit_error"
                           : "server_error";
}

int rd_json_error(rd_conn *c, unsigned status, const char *type, const char *param,
                  const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    add_text(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        add_text(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    /* one log line whatever the message and the path hold */
    char path[256];
    snprintf(path, sizeof path, "%s", rd_conn_path(c));
    for (char *q = msg; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == '"' || *q == '\\')
            *q = '?';
    for (char *q = path; *q; q++)
        if ((unsigned char)*q <= 0x20 || *q == '"' || *q == '\\')
            *q = '?';
    rd_log(RD_LOG_INFO, "msg=\"request refused\" method=%s path=%s status=%u error=\"%s\"",
           rd_conn_method(c), path, status, msg);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    const char *hdr = status == 429 || status == 503 ? "Retry-After" : NULL;
    int rc = rd_http_reply(c, status, s ? s : "{}", s ? strlen(s) : 2, NULL, hdr, hdr ? "1" : NULL);
    cJSON_free(s);
    return rc;
}
