/*
 * utf8.h -- UTF-8 decoding with replacement, shared by the tokenizer and the
 * server's streaming writer.
 *
 * Invalid input is replaced by U+FFFD once per "maximal subpart" (Unicode
 * 15, section 3.9; what Python's bytes.decode('utf-8', 'replace') and Rust's
 * String::from_utf8_lossy do), so every component agrees on what invalid
 * bytes mean.
 */
#ifndef RN_UTF8_H
#define RN_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define RN_UTF8_REPLACEMENT 0xFFFDu

/* Decodes one code point at s[0..n).  Returns the bytes consumed (>= 1 when
 * n >= 1) and sets *cp; an invalid sequence consumes its maximal subpart and
 * yields U+FFFD. */
size_t rn_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
/* Writes cp as UTF-8 into out (4 bytes of room); returns the length. */
size_t rn_utf8_put(uint32_t cp, char *out);
/* Length of the longest prefix of s[0..n) that does not end inside an
 * incomplete (but so far valid) multi-byte sequence: the bytes after it could
 * still become a character when more input arrives. */
size_t rn_utf8_complete_prefix(const unsigned char *s, size_t n);
/* Returns 1 if s[0..n) is entirely valid UTF-8. */
int rn_utf8_valid(const unsigned char *s, size_t n);
/* Copies s[0..n) into a new malloc'd NUL-terminated buffer owned by the
 * caller with invalid sequences replaced; *out_len set.  NULL on ENOMEM. */
char *rn_utf8_sanitize(const char *s, size_t n, size_t *out_len);

#endif
