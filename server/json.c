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

int rd_json_reply(rd_conn *c, unsigned status, void *obj)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;
    cJSON_Delete(obj);
    if (!s)
        return rd_http_reply(c, 500, "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}", 91, NULL, NULL, NULL);
    int rc = rd_http_reply(c, status, s, strlen(s), NULL, NULL, NULL);
    cJSON_free(s);
    return rc;
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
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    fprintf(stderr, "level=info msg=\"request refused\" method=%s path=%s status=%u error=\"%s\"\n",
            rd_conn_method(c), rd_conn_path(c), status, msg);
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    const char *hdr = status == 429 || status == 503 ? "Retry-After" : NULL;
    int rc = rd_http_reply(c, status, s ? s : "{}", s ? strlen(s) : 2, NULL, hdr, hdr ? "1" : NULL);
    cJSON_free(s);
    return rc;
}
