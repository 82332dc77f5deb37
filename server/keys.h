/*
 * keys.h -- API keys and the principal (key name) a request acts as.
 */
#ifndef RD_KEYS_H
#define RD_KEYS_H

#define RD_KEY_NAME 32

typedef struct rd_keys rd_keys;

/* Keys from the single api_key (may be "") and api_key_file (may be "").
 * 0 and *out (rd_keys_free), or -1 after one message on stderr. */
int rd_keys_load(rd_keys **out, const char *single, const char *file);
void rd_keys_free(rd_keys *ks);
int rd_keys_enabled(const rd_keys *ks);
/* The name of the key an "Authorization: Bearer ..." header carries, or
 * NULL (missing, malformed or unknown). */
const char *rd_keys_check(const rd_keys *ks, const char *authorization);

#endif
