/* tz: offsets compared with glibc's localtime_r over 1970-2100 in zones
 * with and without rules and odd histories, local midnights in DST gaps
 * and overlaps, name checks, the cache under threads. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tz.h"

static const char *const zones[] = {
        "Europe/Amsterdam", "America/New_York", "Australia/Sydney", "Asia/Kolkata", "UTC",
        "Pacific/Apia",       /* skipped 2011-12-30 */
        "Europe/Dublin",      /* negative DST in its footer */
        "Australia/Lord_Howe", /* half-hour DST */
        "America/Sao_Paulo",  /* DST started at midnight, abolished 2019 */
        "America/Havana",     /* DST starts at 00:00 and ends at 01:00 */
        "Africa/Casablanca",  /* Ramadan switches listed to 2087 */
        "Asia/Tehran",
};

#define T_1970 INT64_C(0)
#define T_2100 INT64_C(4102444800)

static void use_libc_zone(const char *name)
{
        char buf[80];
        snprintf(buf, sizeof(buf), ":%s", name);
        setenv("TZ", buf, 1);
        tzset();
}

static long libc_offset(int64_t t)
{
        struct tm tm;
        time_t tt = (time_t)t;
        assert_non_null(localtime_r(&tt, &tm));
        return tm.tm_gmtoff;
}

/* Compares one instant: offset and local date. */
static void check_instant(const struct tz *z, int64_t t)
{
        struct tm tm;
        time_t tt = (time_t)t;
        int y, mon, mday;
        assert_non_null(localtime_r(&tt, &tm));
        if (tz_offset(z, t) != tm.tm_gmtoff)
                fail_msg("%s at %lld: offset %d, libc says %ld", tz_name(z), (long long)t, tz_offset(z, t),
                         tm.tm_gmtoff);
        tz_local_day(z, t, &y, &mon, &mday);
        if (y != tm.tm_year + 1900 || mon != tm.tm_mon + 1 || mday != tm.tm_mday)
                fail_msg("%s at %lld: date %d-%d-%d, libc says %d-%d-%d", tz_name(z), (long long)t, y, mon,
                         mday, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
}

static void test_against_libc(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
                const struct tz *z = tz_get(zones[i]);
                long prev;
                size_t changes = 0;
                if (!z)
                        fail_msg("tz_get(%s) failed", zones[i]);
                use_libc_zone(zones[i]);
                prev = libc_offset(T_1970);
                /* An odd step drifts across hours and minutes. */
                for (int64_t t = T_1970; t < T_2100; t += 3593) {
                        long o = libc_offset(t);
                        check_instant(z, t);
                        if (o != prev) {
                                /* Find libc's exact transition and check both sides. */
                                int64_t lo = t - 3593, hi = t;
                                while (hi - lo > 1) {
                                        int64_t mid = lo + (hi - lo) / 2;
                                        if (libc_offset(mid) == prev)
                                                lo = mid;
                                        else
                                                hi = mid;
                                }
                                check_instant(z, lo);
                                check_instant(z, hi);
                                changes++;
                        }
                        prev = o;
                }
                print_message("# %s: %zu offset changes checked\n", zones[i], changes);
        }
        unsetenv("TZ");
        tzset();
}

/* Every day from 1970 to 2100: the result is the first instant whose wall
 * clock reads that date's 00:00 or later. */
static void test_midnight_property(void **state)
{
        static const char *const mz[] = { "Europe/Amsterdam", "America/Sao_Paulo", "America/Havana",
                                          "Pacific/Apia", "Australia/Lord_Howe", "Asia/Kolkata" };
        (void)state;
        for (size_t i = 0; i < sizeof(mz) / sizeof(mz[0]); i++) {
                const struct tz *z = tz_get(mz[i]);
                assert_non_null(z);
                for (int64_t day = 0; day < T_2100 / 86400; day++) {
                        int y, mon, mday;
                        int64_t m, local = day * 86400;
                        tz_civil_from_days(day, &y, &mon, &mday);
                        assert_int_equal(tz_days_from_civil(y, mon, mday), day);
                        assert_int_equal(tz_local_midnight(z, y, mon, mday, &m), 0);
                        if (m + tz_offset(z, m) < local)
                                fail_msg("%s %d-%d-%d: %lld is before midnight", mz[i], y, mon, mday,
                                         (long long)m);
                        if (m + tz_offset(z, m) != local && tz_offset(z, m - 1) == tz_offset(z, m))
                                fail_msg("%s %d-%d-%d: %lld is not midnight nor a gap's end", mz[i], y,
                                         mon, mday, (long long)m);
                        for (int64_t back = 1; back <= 27 * 3600; back += back < 3600 ? 599 : 3600)
                                if (m - back + tz_offset(z, m - back) >= local)
                                        fail_msg("%s %d-%d-%d: midnight already at %lld", mz[i], y, mon,
                                                 mday, (long long)(m - back));
                }
        }
}

static void test_midnight_cases(void **state)
{
        static const struct {
                const char *zone;
                int y, mon, mday;
                int r;
                int64_t want;
        } cases[] = {
                { "Europe/Amsterdam", 2024, 3, 31, 0, 1711839600 },  /* spring forward at 02:00 */
                { "Europe/Amsterdam", 2024, 10, 27, 0, 1729980000 }, /* fall back at 03:00 */
                { "Europe/Amsterdam", 2090, 7, 1, 0, 3802543200 },   /* the footer rule, +02 */
                { "America/Sao_Paulo", 2018, 11, 4, 0, 1541300400 }, /* gap 00:00-01:00: 01:00 -02 */
                { "America/Havana", 2024, 3, 10, 0, 1710046800 },    /* gap 00:00-01:00 */
                { "America/Havana", 2023, 11, 5, 0, 1699156800 },    /* 00:00 twice: the first */
                { "Pacific/Apia", 2011, 12, 29, 0, 1325152800 },
                { "Pacific/Apia", 2011, 12, 30, 0, 1325239200 }, /* a day that never was */
                { "Pacific/Apia", 2011, 12, 31, 0, 1325239200 },
                { "Australia/Sydney", 2024, 4, 7, 0, 1712408400 },
                { "Asia/Kolkata", 2000, 1, 1, 0, 946665000 },
                { "UTC", 2000, 2, 29, 0, 951782400 },
                { "UTC", 2023, 2, 29, -EINVAL, 0 },
                { "UTC", 2100, 2, 29, -EINVAL, 0 },
                { "UTC", 2024, 13, 1, -EINVAL, 0 },
                { "UTC", 2024, 0, 1, -EINVAL, 0 },
                { "UTC", 2024, 4, 31, -EINVAL, 0 },
                { "UTC", 2024, 4, 0, -EINVAL, 0 },
                { "UTC", 0, 1, 1, -EINVAL, 0 },
                { "UTC", 10000, 1, 1, -EINVAL, 0 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct tz *z = tz_get(cases[i].zone);
                int64_t got = -1;
                int r;
                assert_non_null(z);
                r = tz_local_midnight(z, cases[i].y, cases[i].mon, cases[i].mday, &got);
                if (r != cases[i].r || (r == 0 && got != cases[i].want))
                        fail_msg("%s %d-%d-%d: r=%d got %lld, want r=%d %lld", cases[i].zone, cases[i].y,
                                 cases[i].mon, cases[i].mday, r, (long long)got, cases[i].r,
                                 (long long)cases[i].want);
                if (r < 0)
                        assert_int_equal(got, -1); /* untouched */
        }
}

static void test_next_midnight(void **state)
{
        const struct tz *z = tz_get("Europe/Amsterdam");
        int64_t m = 0;
        (void)state;
        assert_non_null(z);
        /* 2024-03-30 12:00Z -> 2024-03-31 00:00 +01 */
        assert_int_equal(tz_next_midnight(z, 1711800000, &m), 0);
        assert_int_equal(m, 1711839600);
        /* exactly at midnight: the next one, a 23-hour day later */
        assert_int_equal(tz_next_midnight(z, 1711839600, &m), 0);
        assert_int_equal(m, 1711839600 + 23 * 3600);
        /* the 25-hour day */
        assert_int_equal(tz_next_midnight(z, 1729980000, &m), 0);
        assert_int_equal(m, 1729980000 + 25 * 3600);
        /* one second before */
        assert_int_equal(tz_next_midnight(z, 1729980000 - 1, &m), 0);
        assert_int_equal(m, 1729980000);
}

static void test_names(void **state)
{
        static const char *const bad[] = {
                "", "/etc/passwd", "../etc/passwd", "Europe/../UTC", "Europe/./Amsterdam", ".",
                "..", "Europe/Amsterdam/", "Europe//Amsterdam", "Europe/Amster dam", "Europe\\Amsterdam",
                "Foo/Bar", "Europe", "zone.tab", "Europe/Amsterdam\n",
                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        };
        const struct tz *a, *b;
        (void)state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (tz_get(bad[i]))
                        fail_msg("tz_get(\"%s\") should fail", bad[i]);
        assert_null(tz_get(NULL));
        a = tz_get("Europe/Amsterdam");
        b = tz_get("Europe/Amsterdam");
        assert_non_null(a);
        assert_ptr_equal(a, b);
        assert_string_equal(tz_name(a), "Europe/Amsterdam");
        assert_non_null(tz_get("Etc/GMT+5"));
        assert_int_equal(tz_offset(tz_get("Etc/GMT+5"), 0), -5 * 3600);
}

static void *get_zones(void *arg)
{
        const struct tz **out = arg;
        static const char *const names[] = { "Europe/Paris", "Asia/Tokyo", "America/Chicago" };
        for (int round = 0; round < 200; round++)
                for (int i = 0; i < 3; i++) {
                        const struct tz *z = tz_get(names[i]);
                        if (!z || (out[i] && out[i] != z))
                                return (void *)1;
                        out[i] = z;
                }
        return NULL;
}

static void test_threads(void **state)
{
        pthread_t th[4];
        const struct tz *got[4][3] = { { 0 } };
        (void)state;
        for (int i = 0; i < 4; i++)
                assert_int_equal(pthread_create(&th[i], NULL, get_zones, got[i]), 0);
        for (int i = 0; i < 4; i++) {
                void *rv;
                assert_int_equal(pthread_join(th[i], &rv), 0);
                assert_null(rv);
        }
        for (int i = 1; i < 4; i++)
                for (int j = 0; j < 3; j++)
                        assert_ptr_equal(got[i][j], got[0][j]);
        assert_int_equal(tz_offset(got[0][1], 0), 9 * 3600);
}

static void test_civil(void **state)
{
        (void)state;
        assert_int_equal(tz_days_from_civil(1970, 1, 1), 0);
        assert_int_equal(tz_days_from_civil(1969, 12, 31), -1);
        assert_int_equal(tz_days_from_civil(2000, 3, 1), 11017);
        assert_int_equal(tz_days_in_month(2024, 2), 29);
        assert_int_equal(tz_days_in_month(1900, 2), 28);
        assert_int_equal(tz_days_in_month(2000, 2), 29);
        assert_int_equal(tz_days_in_month(2024, 13), 0);
        for (int64_t d = -800000; d < 800000; d += 7) {
                int y, m, dd;
                tz_civil_from_days(d, &y, &m, &dd);
                assert_int_equal(tz_days_from_civil(y, m, dd), d);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_civil),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_midnight_cases),
                cmocka_unit_test(test_next_midnight),
                cmocka_unit_test(test_threads),
                cmocka_unit_test(test_midnight_property),
                cmocka_unit_test(test_against_libc),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
