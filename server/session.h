/*
 * session.h -- the session record, shared by sessions.c (the table),
 * tiers.c (where an idle session's state lives) and persist.c.  Loop
 * thread only.  Everything else uses the accessors in app.h.
 */
#ifndef RD_SESSION_H
#define RD_SESSION_H

#include <stddef.h>
#include <stdint.h>

typedef enum { RD_TIER_HOT = 0, RD_TIER_HOST, RD_TIER_DISK } rd_tier;

struct rd_session {
    char id[40];
    char owner[32];      /* the key name that created it ("" when the API is open) */
    int slot;            /* -1 while the state is in the host or disk tier */
    int busy;            /* a request uses it */
    int moving;          /* an offload or a restore is in flight */
    int fresh;           /* never used: no state of its own yet (a hot slot holds someone
                            * else's until first use) */
    int dirty;           /* changed since --state-dir last got it */
    int pinned;          /* an offload failed: it keeps its slot from now on */
    int restore_failed;  /* the last restore failed: the next request is told so */
    int restore_corrupt; /* its file failed its checks: the next request removes it */
    rd_tier tier;
    unsigned char *blob; /* RD_TIER_HOST: the state blob (header + payload); owned */
    size_t blob_len;
    int64_t tokens; /* tokens in the state */
    int64_t created, last_used;
    struct rd_session *next;
};

#endif
