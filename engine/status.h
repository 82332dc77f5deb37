/*
 * status.h -- error codes shared by the engine and the server.
 *
 * Negative is an error, zero is success, everywhere.  Functions that can fail
 * for a reason a user must read (a malformed file, a bad field) also fill an
 * optional rn_error with a message that names the file, tensor or field.
 */
#ifndef RN_STATUS_H
#define RN_STATUS_H

typedef enum {
    RN_OK = 0,
    RN_EINVAL = -1,       /* bad argument or request field */
    RN_ENOMEM = -2,       /* host allocation failed */
    RN_EIO = -3,          /* read/write/mmap failed */
    RN_EFORMAT = -4,      /* malformed checkpoint, tokenizer or state blob */
    RN_ENODEV = -5,       /* backend not compiled in or no device */
    RN_EDEVICE = -6,      /* device error; the backend is now unusable */
    RN_EBUSY = -7,        /* no free state slot */
    RN_EUNSUPPORTED = -8, /* valid input describing something we do not implement */
    RN_ECONFLICT = -9     /* valid input for another model (a state blob) */
} rn_status;

#define RN_ERROR_MSG_LEN 512

/* A status plus a human-readable message.  Callers may pass NULL where an
 * rn_error * is expected when they do not want the message. */
typedef struct rn_error {
    int code;
    char msg[RN_ERROR_MSG_LEN];
} rn_error;

const char *rn_strerror(int status);

/* Sets err (if non-NULL) to code and a printf-style message; returns code so
 * callers can write `return rn_error_set(err, RN_EFORMAT, "...")`. */
int rn_error_set(rn_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
