/*
 * check_jw.c -- the stream chunks' JSON writer (server/jw.c) against cJSON,
 * whose output it replaced: every byte value alone and in random strings
 * gives the text cJSON prints, integers at the int64 ends, a NUL byte, and
 * the text read back by cJSON is the input.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../../server/jw.h"
#include "suites.h"

/* cJSON's print of the string s (NUL-terminated); owned by the caller. */
static char *cjson_string(const char *s)
{
    cJSON *v = cJSON_CreateString(s);
    ck_assert_ptr_nonnull(v);
    char *out = cJSON_PrintUnformatted(v);
    cJSON_Delete(v);
    ck_assert_ptr_nonnull(out);
    return out;
}

static void check_like_cjson(const char *s, size_t n)
{
    rd_jw w = {0};
    rd_jw_str(&w, s, n);
    rd_jw_raw(&w, "", 1); /* the terminator, to compare as a string */
    ck_assert(!w.oom);
    char *want = cjson_string(s);
    ck_assert_msg(!strcmp(w.p, want), "rd_jw_str gave %s, cJSON %s", w.p, want);
    cJSON *back = cJSON_Parse(w.p);
    ck_assert_ptr_nonnull(back);
    ck_assert_str_eq(cJSON_GetStringValue(back), s);
    cJSON_Delete(back);
    cJSON_free(want);
    rd_jw_free(&w);
}

START_TEST(test_jw_str_is_cjson_print)
{
    for (int b = 1; b < 256; b++) {
        char s[2] = {(char)b, 0};
        check_like_cjson(s, 1);
    }
    uint32_t seed = 12345;
    for (int k = 0; k < 500; k++) {
        char s[64];
        size_t n = (size_t)(k % 63);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            s[i] = (char)(1 + (seed >> 24) % 255);
        }
        s[n] = 0;
        check_like_cjson(s, n);
    }
}
END_TEST

START_TEST(test_jw_nul_ints_and_pieces)
{
    rd_jw w = {0};
    rd_jw_lit(&w, "{\"a\":");
    rd_jw_str(&w, "x\0y", 3);
    rd_jw_lit(&w, ",\"b\":[");
    rd_jw_int(&w, INT64_MIN);
    rd_jw_raw(&w, ",", 1);
    rd_jw_int(&w, INT64_MAX);
    rd_jw_raw(&w, ",", 1);
    rd_jw_int(&w, 0);
    rd_jw_lit(&w, "],\"c\":");
    cJSON *arr = cJSON_CreateArray();
    cJSON_AddItemToArray(arr, cJSON_CreateNumber(0.5));
    cJSON_AddItemToArray(arr, cJSON_CreateNull());
    rd_jw_cjson(&w, arr);
    cJSON_Delete(arr);
    rd_jw_lit(&w, "}");
    rd_jw_raw(&w, "", 1);
    ck_assert(!w.oom);
    ck_assert_str_eq(w.p, "{\"a\":\"x\\u0000y\",\"b\":[-9223372036854775808,9223372036854775807,0],"
                          "\"c\":[0.5,null]}");
    /* the writer is reused chunk after chunk: a reset keeps its buffer */
    char *kept = w.p;
    rd_jw_reset(&w);
    rd_jw_lit(&w, "again");
    ck_assert_ptr_eq(w.p, kept);
    ck_assert_uint_eq(w.len, 5);
    ck_assert(!memcmp(w.p, "again", 5));
    rd_jw_free(&w);
    ck_assert_ptr_null(w.p);
}
END_TEST

Suite *jw_suite(void)
{
    Suite *s = suite_create("jw");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_jw_str_is_cjson_print);
    tcase_add_test(tc, test_jw_nul_ints_and_pieces);
    suite_add_tcase(s, tc);
    return s;
}
