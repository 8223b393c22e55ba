/* util: hex, ISO 8601 time, bounded copies, random bytes, clocks. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "util.h"

static void test_hex(void **state)
{
        static const uint8_t data[] = { 0x00, 0x01, 0x7f, 0x80, 0xab, 0xff };
        char out[2 * sizeof(data) + 1];
        char empty[1] = { 'X' };
        (void)state;
        util_hex(data, sizeof(data), out);
        assert_string_equal(out, "00017f80abff");
        util_hex(data, 0, empty);
        assert_string_equal(empty, "");
}

static void test_iso8601(void **state)
{
        static const struct {
                int64_t ms;
                const char *want;
        } cases[] = {
                { 0, "1970-01-01T00:00:00Z" },
                { 999, "1970-01-01T00:00:00Z" }, /* milliseconds are dropped */
                { 1705314600000LL, "2024-01-15T10:30:00Z" },
                { 1709164800000LL, "2024-02-29T00:00:00Z" },
                { 4102444799000LL, "2099-12-31T23:59:59Z" },
                { 951782400000LL, "2000-02-29T00:00:00Z" },  /* a 400-year leap day */
                { 4107542400000LL, "2100-03-01T00:00:00Z" }, /* 2100 is not a leap year */
                { -1000LL, "1969-12-31T23:59:59Z" },
                { -1LL, "1969-12-31T23:59:59Z" },
                { 253402300799000LL, "9999-12-31T23:59:59Z" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char out[21];
                memset(out, 'X', sizeof(out));
                util_iso8601_utc(cases[i].ms, out);
                assert_string_equal(out, cases[i].want);
        }
        /* the same as gmtime for a day's worth of seconds over 600 years */
        for (int64_t t = -2208988800LL; t < 16725225600LL; t += 86400 * 37 + 3607) {
                char out[21], want[32];
                time_t tt = (time_t)t;
                struct tm tm;
                gmtime_r(&tt, &tm);
                strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%SZ", &tm);
                util_iso8601_utc(t * 1000, out);
                assert_string_equal(out, want);
        }
}

static void test_strlcpy(void **state)
{
        static const struct {
                const char *src;
                size_t n;
                int ret;
                const char *want;
        } cases[] = {
                { "", 1, 0, "" },
                { "abc", 4, 0, "abc" },
                { "abcd", 4, -ENAMETOOLONG, "abc" },
                { "abcdefgh", 4, -ENAMETOOLONG, "abc" },
                { "a", 1, -ENAMETOOLONG, "" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char dst[8];
                memset(dst, 'X', sizeof(dst));
                assert_int_equal(util_strlcpy(dst, cases[i].src, cases[i].n), cases[i].ret);
                assert_string_equal(dst, cases[i].want);
                assert_int_equal(dst[cases[i].n], 'X'); /* nothing past n */
        }
        char none = 'X';
        assert_int_equal(util_strlcpy(&none, "abc", 0), -ENAMETOOLONG);
        assert_int_equal(none, 'X');
}

static void test_random(void **state)
{
        uint8_t a[64], b[64], zero[64] = { 0 };
        (void)state;
        assert_int_equal(util_random(a, sizeof(a)), 0);
        assert_int_equal(util_random(b, sizeof(b)), 0);
        assert_memory_not_equal(a, b, sizeof(a));
        assert_memory_not_equal(a, zero, sizeof(a));
        assert_int_equal(util_random(a, 0), 0);
        /* More than one getrandom() call may return. */
        size_t big = 1u << 20;
        uint8_t *p = calloc(1, big);
        assert_non_null(p);
        assert_int_equal(util_random(p, big), 0);
        size_t zeros = 0;
        for (size_t i = 0; i < big; i++)
                zeros += p[i] == 0;
        assert_in_range(zeros, big / 256 / 2, big / 256 * 2);
        free(p);
}

static void test_clocks(void **state)
{
        (void)state;
        int64_t w = util_now_ms(), m = util_mono_ms(), u = util_mono_us();
        assert_true(w > 1600000000000LL); /* after 2020 */
        assert_true(m >= 0);
        assert_true(u / 1000 >= m);
        assert_true(util_mono_ms() >= m);
        assert_true(util_mono_us() >= u);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hex),     cmocka_unit_test(test_iso8601),
                cmocka_unit_test(test_strlcpy), cmocka_unit_test(test_random),
                cmocka_unit_test(test_clocks),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
