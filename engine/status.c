/* status.c -- rn_strerror and rn_error_set. */
#include <stdarg.h>
#include <stdio.h>

#include "status.h"

const char *rn_strerror(int status)
{
    switch (status) {
    case RN_OK:
        return "ok";
    case RN_EINVAL:
        return "invalid argument";
    case RN_ENOMEM:
        return "out of memory";
    case RN_EIO:
        return "I/O error";
    case RN_EFORMAT:
        return "malformed input";
    case RN_ENODEV:
        return "no such device or backend";
    case RN_EDEVICE:
        return "device error";
    case RN_EBUSY:
        return "no free state slot";
    case RN_EUNSUPPORTED:
        return "unsupported";
    case RN_ECONFLICT:
        return "belongs to another model";
    default:
        return "unknown error";
    }
}

int rn_error_set(rn_error *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}
