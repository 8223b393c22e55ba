/* ids: the public "<prefix>_<code>" form of numeric ids. Pure functions,
 * so every property is checked exhaustively or over a fixed sweep. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ids.h"

static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";

static void key_of(struct id_key *key, const char *secret)
{
        id_key_init(key, secret, strlen(secret));
}

/* The code part of "<prefix>_<code>", checked for shape on the way. */
static const char *code_of(const char *s, const char *prefix)
{
        size_t pl = strlen(prefix);
        assert_int_equal(strncmp(s, prefix, pl), 0);
        assert_int_equal(s[pl], '_');
        assert_int_equal(strlen(s + pl + 1), ID_CODE_LEN);
        return s + pl + 1;
}

static void test_round_trip_table(void **state)
{
        static const uint64_t ids[] = {
                1,          2,          3,           1000,         65535,
                1ULL << 31, 1ULL << 32, (1ULL << 32) + 1, 1ULL << 62, INT64_MAX - 1,
                INT64_MAX,
        };
        struct id_key key;
        (void)state;

        key_of(&key, "installation secret");
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
                char buf[ID_STR_MAX];
                uint64_t back = 0;
                id_encode(&key, "vps", ids[i], buf, sizeof(buf));
                const char *code = code_of(buf, "vps");
                for (size_t k = 0; k < ID_CODE_LEN; k++)
                        assert_non_null(strchr(alphabet, code[k]));
                assert_int_equal(id_decode(&key, "vps", buf, &back), 0);
                assert_int_equal(back, ids[i]);
        }
}

static int cmp_str(const void *a, const void *b)
{
        return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 10,000 consecutive ids: each round-trips, every code is new, and
 * neighbours do not look like neighbours. */
static void test_sweep_consecutive(void **state)
{
        enum { N = 10000, BASE = 1 };
        struct id_key key;
        char(*codes)[ID_STR_MAX] = calloc(N, ID_STR_MAX);
        const char **sorted = calloc(N, sizeof(*sorted));
        size_t ascending = 0;
        (void)state;

        assert_non_null(codes);
        assert_non_null(sorted);
        key_of(&key, "installation secret");
        for (size_t i = 0; i < N; i++) {
                uint64_t back = 0;
                id_encode(&key, "vps", BASE + i, codes[i], ID_STR_MAX);
                const char *c = code_of(codes[i], "vps");
                for (size_t k = 0; k < ID_CODE_LEN; k++)
                        assert_non_null(strchr(alphabet, c[k]));
                assert_int_equal(id_decode(&key, "vps", codes[i], &back), 0);
                assert_int_equal(back, BASE + i);
                sorted[i] = codes[i];
        }
        /* No visible sequence: neighbours differ in many places, and their
         * order is a coin toss. */
        for (size_t i = 0; i + 1 < N; i++) {
                const char *a = code_of(codes[i], "vps"), *b = code_of(codes[i + 1], "vps");
                int differ = 0;
                for (size_t k = 0; k < ID_CODE_LEN; k++)
                        differ += a[k] != b[k];
                if (differ < 4)
                        fail_msg("ids %zu and %zu: codes %s and %s differ in %d places",
                                 BASE + i, BASE + i + 1, a, b, differ);
                ascending += strcmp(a, b) < 0;
        }
        assert_in_range(ascending, N * 40 / 100, N * 60 / 100);
        qsort(sorted, N, sizeof(*sorted), cmp_str);
        for (size_t i = 0; i + 1 < N; i++)
                if (strcmp(sorted[i], sorted[i + 1]) == 0)
                        fail_msg("duplicate code %s", sorted[i]);
        free(sorted);
        free(codes);
}

static void test_key_changes_codes(void **state)
{
        struct id_key a, b;
        size_t rejected = 0;
        (void)state;

        key_of(&a, "secret A");
        key_of(&b, "secret B");
        for (uint64_t id = 1; id <= 1000; id++) {
                char sa[ID_STR_MAX], sb[ID_STR_MAX];
                uint64_t back = 0;
                id_encode(&a, "vps", id, sa, sizeof(sa));
                id_encode(&b, "vps", id, sb, sizeof(sb));
                assert_string_not_equal(sa, sb);
                /* The other key never yields the original number. With 63
                 * bits of id in a 64-bit code only about half of the
                 * foreign codes can be told apart outright: the rest
                 * decode to some other number. */
                int r = id_decode(&b, "vps", sa, &back);
                if (r == 0) {
                        assert_int_not_equal(back, id);
                } else {
                        assert_int_equal(r, -EINVAL);
                        rejected++;
                }
        }
        assert_true(rejected > 0);
}

/* The same secret gives the same key: codes survive a restart. */
static void test_key_deterministic(void **state)
{
        struct id_key a, b;
        char sa[ID_STR_MAX], sb[ID_STR_MAX];
        (void)state;

        key_of(&a, "same secret");
        key_of(&b, "same secret");
        assert_memory_equal(&a, &b, sizeof(a));
        id_encode(&a, "acc", 77, sa, sizeof(sa));
        id_encode(&b, "acc", 77, sb, sizeof(sb));
        assert_string_equal(sa, sb);
}

static void test_prefix_changes_codes(void **state)
{
        struct id_key key;
        (void)state;

        key_of(&key, "installation secret");
        for (uint64_t id = 1; id <= 1000; id++) {
                char v[ID_STR_MAX], a[ID_STR_MAX], swapped[ID_STR_MAX];
                uint64_t back = 0;
                id_encode(&key, "vps", id, v, sizeof(v));
                id_encode(&key, "acc", id, a, sizeof(a));
                assert_string_not_equal(code_of(v, "vps"), code_of(a, "acc"));
                /* A vps id is not an account id. */
                assert_int_equal(id_decode(&key, "acc", v, &back), -EINVAL);
                assert_int_equal(id_decode(&key, "vps", a, &back), -EINVAL);
                /* Its code under the other prefix is another number. */
                snprintf(swapped, sizeof(swapped), "acc_%s", code_of(v, "vps"));
                int r = id_decode(&key, "acc", swapped, &back);
                if (r == 0)
                        assert_int_not_equal(back, id);
                else
                        assert_int_equal(r, -EINVAL);
        }
}

static void test_malformed(void **state)
{
        struct id_key key;
        char good[ID_STR_MAX], zero[ID_STR_MAX], top[ID_STR_MAX];
        (void)state;

        key_of(&key, "installation secret");
        id_encode(&key, "vps", 12345, good, sizeof(good));
        id_encode(&key, "vps", 0, zero, sizeof(zero));
        id_encode(&key, "vps", (uint64_t)INT64_MAX + 1, top, sizeof(top));
        const char *code = code_of(good, "vps");

        char upper[ID_STR_MAX], longer[ID_STR_MAX], shorter[ID_STR_MAX], nounder[ID_STR_MAX],
                dash[ID_STR_MAX], space[ID_STR_MAX];
        snprintf(upper, sizeof(upper), "%s", good);
        for (char *p = upper + 4; *p; p++)
                if (*p >= 'a' && *p <= 'z')
                        *p = (char)(*p - 'a' + 'A');
        snprintf(longer, sizeof(longer), "%s0", good);
        snprintf(shorter, sizeof(shorter), "%.*s", (int)strlen(good) - 1, good);
        snprintf(nounder, sizeof(nounder), "vps%s", code);
        snprintf(dash, sizeof(dash), "vps-%s", code);
        snprintf(space, sizeof(space), " %s", good);

        /* One character of the code replaced by each letter outside the
         * alphabet, at the front, the middle and the end. */
        char bad_chars[4 * 3 + 2][ID_STR_MAX];
        size_t n_bad = 0;
        const char outside[] = "ilou";
        const size_t at[] = { 0, 6, ID_CODE_LEN - 1 };
        for (size_t c = 0; c < 4; c++)
                for (size_t k = 0; k < 3; k++) {
                        snprintf(bad_chars[n_bad], ID_STR_MAX, "%s", good);
                        bad_chars[n_bad][4 + at[k]] = outside[c];
                        n_bad++;
                }
        /* The first digit holds only 4 bits: 'g' (16) and 'z' (31) cannot be. */
        snprintf(bad_chars[n_bad], ID_STR_MAX, "%s", good);
        bad_chars[n_bad++][4] = 'g';
        snprintf(bad_chars[n_bad], ID_STR_MAX, "%s", good);
        bad_chars[n_bad++][4] = 'z';

        const char *cases[] = {
                "",    "vps",  "vps_",   "_", shorter, longer, upper, nounder, dash,
                space, zero, top, "vps_!!!!!!!!!!!!!",
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t back = 4242;
                if (id_decode(&key, "vps", cases[i], &back) != -EINVAL)
                        fail_msg("'%s' was accepted as %llu", cases[i],
                                 (unsigned long long)back);
                assert_int_equal(back, 4242); /* untouched on failure */
        }
        for (size_t i = 0; i < n_bad; i++) {
                uint64_t back = 4242;
                assert_int_equal(id_decode(&key, "vps", bad_chars[i], &back), -EINVAL);
                assert_int_equal(back, 4242);
        }
        /* The unmodified string still decodes. */
        uint64_t back = 0;
        assert_int_equal(id_decode(&key, "vps", good, &back), 0);
        assert_int_equal(back, 12345);
}

/* A small buffer is cut, never overrun; ID_STR_MAX fits a 16-char prefix. */
static void test_buffer_sizes(void **state)
{
        struct id_key key;
        char buf[ID_STR_MAX];
        char small[8];
        uint64_t back = 0;
        (void)state;

        key_of(&key, "installation secret");
        id_encode(&key, "abcdefghijklmnop", INT64_MAX, buf, sizeof(buf));
        assert_int_equal(strlen(buf), 16 + 1 + ID_CODE_LEN);
        assert_int_equal(id_decode(&key, "abcdefghijklmnop", buf, &back), 0);
        assert_int_equal(back, INT64_MAX);
        memset(small, 'X', sizeof(small));
        id_encode(&key, "vps", 1, small, sizeof(small));
        assert_int_equal(strlen(small), sizeof(small) - 1);
        assert_memory_equal(small, "vps_", 4);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_round_trip_table),
                cmocka_unit_test(test_sweep_consecutive),
                cmocka_unit_test(test_key_changes_codes),
                cmocka_unit_test(test_key_deterministic),
                cmocka_unit_test(test_prefix_changes_codes),
                cmocka_unit_test(test_malformed),
                cmocka_unit_test(test_buffer_sizes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
