/*
 * check_state_blob.c -- the state blob (engine/state_blob.c): a round trip,
 * every malformed or foreign blob refused with the right code, the
 * checksum's known answer, and the atomic file writer.
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fixture.h"
#include "state_blob.h"
#include "suites.h"

/* A valid blob of model m: header + payload of counting floats. */
static uint8_t *make_blob(const rn_model *m, size_t *len)
{
    rn_blob_info info;
    rn_blob_info_for(m, 37, 37, &info);
    *len = RN_BLOB_HEADER + (size_t)info.payload_bytes;
    uint8_t *b = malloc(*len);
    ck_assert_ptr_nonnull(b);
    float *p = (float *)(void *)(b + RN_BLOB_HEADER);
    for (size_t i = 0; i < info.payload_bytes / 4; i++)
        p[i] = (float)i * 0.25f;
    rn_blob_write_header(b, &info, p);
    return b;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* After editing header bytes: a correct header checksum again, so the check
 * under test is the one that must catch the edit. */
static void reseal(uint8_t *b)
{
    put32(b + 92, rn_crc32c(0, b, 92));
}

START_TEST(test_blob_crc32c_known_answer)
{
    ck_assert_uint_eq(rn_crc32c(0, "123456789", 9), 0xE3069283u);
    ck_assert_uint_eq(rn_crc32c(rn_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
}
END_TEST

START_TEST(test_blob_round_trip)
{
    fixture f;
    fixture_load(&f, "yar");
    size_t len;
    uint8_t *b = make_blob(f.model, &len);
    rn_blob_info info;
    rn_error err = {0};
    ck_assert_int_eq(rn_blob_parse(b, len, f.model, &info, &err), RN_OK);
    ck_assert_int_eq(info.pos, 37);
    ck_assert_int_eq(info.tokens, 37);
    ck_assert_uint_eq(info.payload_bytes, (uint64_t)rn_state_values(f.cfg) * 4);
    ck_assert_uint_eq(info.n_layers, (unsigned)f.cfg->n_layers);
    free(b);
    fixture_free(&f);
}
END_TEST

typedef struct {
    const char *what;
    int expect;
} bad_case;

/* Each case edits a fresh valid blob; n is the case index. */
static size_t corrupt(uint8_t *b, size_t len, int n)
{
    switch (n) {
    case 0:
        return 0; /* empty */
    case 1:
        return 50; /* header cut short */
    case 2:
        return len - 1; /* payload cut short */
    case 3:
        return len + 1; /* a byte too many (buffer has room) */
    case 4:
        b[0] = 'X';
        return len; /* magic */
    case 5:
        put32(b + 8, 2);
        reseal(b);
        return len; /* a future version */
    case 6:
        b[57] ^= 1;
        return len; /* position edited, header CRC stale */
    case 7:
        b[RN_BLOB_HEADER + 5] ^= 0x10;
        return len; /* payload bit flip */
    case 8:
        put32(b + 32, 1);
        reseal(b);
        return len; /* dtype */
    case 9:
        b[63] = 0x80;
        reseal(b);
        return len; /* negative position */
    case 10:
        b[86] = 1;
        reseal(b);
        return len; /* reserved bytes */
    case 11:
        put32(b + 52, 6);
        reseal(b);
        return len; /* unknown flags */
    case 12:
        b[72] ^= 4;
        reseal(b);
        return len; /* payload length lies */
    case 13:
        put32(b + 12, 128);
        reseal(b);
        return len; /* header length */
    case 14:
        b[16] ^= 1;
        reseal(b);
        return len; /* another config's fingerprint */
    case 15:
        b[27] ^= 1;
        reseal(b);
        return len; /* other tensor shapes */
    case 16:
        put32(b + 40, 99);
        reseal(b);
        return len; /* another shape of state */
    default:
        return len;
    }
}

static const bad_case bad[] = {
    {"empty", RN_EFORMAT},
    {"short header", RN_EFORMAT},
    {"short payload", RN_EFORMAT},
    {"trailing byte", RN_EFORMAT},
    {"magic", RN_EFORMAT},
    {"version", RN_EFORMAT},
    {"header crc", RN_EFORMAT},
    {"payload crc", RN_EFORMAT},
    {"dtype", RN_EFORMAT},
    {"negative pos", RN_EFORMAT},
    {"reserved", RN_EFORMAT},
    {"flags", RN_EFORMAT},
    {"payload length", RN_EFORMAT},
    {"header length", RN_EFORMAT},
    {"config fingerprint", RN_ECONFLICT},
    {"weights fingerprint", RN_ECONFLICT},
    {"state shape", RN_ECONFLICT},
};
#define N_BAD (int)(sizeof bad / sizeof bad[0])

START_TEST(test_blob_malformed_refused)
{
    fixture f;
    fixture_load(&f, "yar");
    size_t len;
    uint8_t *b = make_blob(f.model, &len);
    uint8_t *room = calloc(1, len + 1);
    ck_assert_ptr_nonnull(room);
    memcpy(room, b, len);
    size_t n = corrupt(room, len, _i);
    rn_blob_info info;
    rn_error err = {0};
    int rc = rn_blob_parse(room, n, f.model, &info, &err);
    ck_assert_msg(rc == bad[_i].expect, "%s: rc %d (%s), want %d", bad[_i].what, rc, err.msg,
                  bad[_i].expect);
    ck_assert_msg(strncmp(err.msg, "state blob: ", 12) == 0, "%s: message '%s'", bad[_i].what,
                  err.msg);
    free(room);
    free(b);
    fixture_free(&f);
}
END_TEST

START_TEST(test_blob_other_model_conflicts)
{
    fixture a, b;
    fixture_load(&a, "yar");
    fixture_load(&b, "ts");
    size_t len;
    uint8_t *blob = make_blob(a.model, &len);
    rn_blob_info info;
    rn_error err = {0};
    ck_assert_int_eq(rn_blob_parse(blob, len, b.model, &info, &err), RN_ECONFLICT);
    free(blob);
    fixture_free(&a);
    fixture_free(&b);
}
END_TEST

START_TEST(test_blob_atomic_write)
{
    char dir[512], path[600], buf[64];
    test_dir_create(dir, sizeof dir, "blob");
    snprintf(path, sizeof path, "%s/s.state", dir);
    const void *parts[] = {"hello ", "world"};
    size_t lens[] = {6, 5};
    rn_error err = {0};
    ck_assert_int_eq(rn_write_atomic(path, parts, lens, 2, &err), RN_OK);
    const void *again[] = {"bye"};
    size_t l2[] = {3};
    ck_assert_int_eq(rn_write_atomic(path, again, l2, 1, &err), RN_OK); /* replaces */
    FILE *fp = fopen(path, "rb");
    ck_assert_ptr_nonnull(fp);
    size_t got = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    ck_assert_uint_eq(got, 3);
    ck_assert(memcmp(buf, "bye", 3) == 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_mode & 0777, 0600); /* states are private */
    snprintf(path, sizeof path, "%s/missing/s.state", dir);
    ck_assert_int_eq(rn_write_atomic(path, parts, lens, 2, &err), RN_EIO);
    DIR *d = opendir(dir); /* only s.state: no temporary file left behind */
    ck_assert_ptr_nonnull(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d));)
        files += e->d_name[0] != '.';
    closedir(d);
    ck_assert_int_eq(files, 1);
    test_dir_remove(dir);
}
END_TEST

Suite *state_blob_suite(void)
{
    Suite *s = suite_create("state_blob");
    TCase *tc = tcase_create("blob");
    tcase_add_test(tc, test_blob_crc32c_known_answer);
    tcase_add_test(tc, test_blob_round_trip);
    tcase_add_loop_test(tc, test_blob_malformed_refused, 0, N_BAD);
    tcase_add_test(tc, test_blob_other_model_conflicts);
    tcase_add_test(tc, test_blob_atomic_write);
    suite_add_tcase(s, tc);
    return s;
}
