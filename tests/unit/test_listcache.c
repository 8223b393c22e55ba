/* listcache: an entry is given back only for its account and key, at its
 * version and before its time; never a stale one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "listcache.h"

static void expect_hit(struct listcache *c, uint64_t acc, const char *key, uint64_t ver,
                       int64_t now, const char *want)
{
        size_t len = 0;
        char *got = listcache_get(c, acc, key, ver, now, &len);
        assert_non_null(got);
        assert_int_equal(len, strlen(want));
        assert_memory_equal(got, want, len);
        free(got);
}

static void expect_miss(struct listcache *c, uint64_t acc, const char *key, uint64_t ver,
                        int64_t now)
{
        size_t len = 0;
        char *got = listcache_get(c, acc, key, ver, now, &len);
        free(got);
        assert_null(got);
}

static void test_hit_and_misses(void **state)
{
        struct listcache *c = NULL;
        uint64_t hits, misses;
        (void)state;
        assert_int_equal(listcache_new(&c), 0);
        expect_miss(c, 1, "vps?", 5, 100);
        listcache_put(c, 1, "vps?", 5, 200, "{\"data\":[]}", 11);
        expect_hit(c, 1, "vps?", 5, 100, "{\"data\":[]}");
        expect_hit(c, 1, "vps?", 5, 199, "{\"data\":[]}");
        expect_miss(c, 1, "vps?", 5, 200);  /* its time is up */
        expect_miss(c, 1, "vps?", 6, 100);  /* something was committed since */
        expect_miss(c, 2, "vps?", 5, 100);  /* another account */
        expect_miss(c, 1, "vps?x", 5, 100); /* another request */
        listcache_stats(c, &hits, &misses);
        assert_int_equal(hits, 2);
        assert_int_equal(misses, 5);
        listcache_free(c);
}

static void test_replace(void **state)
{
        struct listcache *c = NULL;
        (void)state;
        assert_int_equal(listcache_new(&c), 0);
        listcache_put(c, 1, "k", 7, 1000, "new", 3);
        /* an answer read earlier, put later, does not replace the newer one */
        listcache_put(c, 1, "k", 6, 1000, "old", 3);
        expect_hit(c, 1, "k", 7, 0, "new");
        listcache_put(c, 1, "k", 8, 1000, "newer", 5);
        expect_hit(c, 1, "k", 8, 0, "newer");
        expect_miss(c, 1, "k", 7, 0);
        listcache_free(c);
}

static void test_limits(void **state)
{
        struct listcache *c = NULL;
        char key[LISTCACHE_KEY_MAX + 2];
        (void)state;
        assert_int_equal(listcache_new(&c), 0);
        memset(key, 'k', sizeof(key) - 1);
        key[sizeof(key) - 1] = '\0';
        listcache_put(c, 1, key, 1, 1000, "x", 1);
        expect_miss(c, 1, key, 1, 0);
        char *big = calloc(1, LISTCACHE_BODY_MAX + 1);
        assert_non_null(big);
        listcache_put(c, 1, "big", 1, 1000, big, LISTCACHE_BODY_MAX + 1);
        expect_miss(c, 1, "big", 1, 0);
        free(big);
        /* many keys of many accounts: each hit is its own */
        for (uint64_t a = 1; a <= 3000; a++) {
                char k[32], body[32];
                snprintf(k, sizeof(k), "vps?%llu", (unsigned long long)a);
                snprintf(body, sizeof(body), "body %llu", (unsigned long long)a);
                listcache_put(c, a, k, 1, 1000, body, strlen(body));
                expect_hit(c, a, k, 1, 0, body);
        }
        listcache_free(c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hit_and_misses),
                cmocka_unit_test(test_replace),
                cmocka_unit_test(test_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
