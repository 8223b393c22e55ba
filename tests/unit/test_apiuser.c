/* apiuser: argon2id hashes, the login cache (a hit runs no argon2; a
 * re-made user misses at once), the decoy for unknown e-mails and the
 * per-e-mail failed-login limit, against a real store. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiuser.h"
#include "store.h"
#include "util.h"

struct fx {
        char dir[64], path[128];
        struct store *s;
        struct apiuser_auth *a;
        uint64_t acc;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        struct account acc;
        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-apiuser.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_account_create(f->s, "acme", TIER_PRO, &acc), 0);
        f->acc = acc.id;
        assert_int_equal(apiuser_auth_new(16, &f->a), 0);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[128];
        apiuser_auth_free(f->a);
        store_free(f->s);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void make_user(struct fx *f, const char *email, const char *password)
{
        struct api_user u = {.account_id = f->acc}, got;
        util_strlcpy(u.email, email, sizeof(u.email));
        assert_int_equal(apiuser_hash(password, u.hash), 0);
        assert_int_equal(strncmp(u.hash, "$argon2id$", 10), 0);
        assert_int_equal(store_api_user_create(f->s, &u, &got), 0);
}

static int login(struct fx *f, const char *email, const char *password)
{
        struct api_user u;
        uint32_t retry = 0;
        int r = apiuser_login(f->a, f->s, email, password, &u, &retry);
        if (r == 0)
                assert_int_equal(u.account_id, f->acc);
        if (r == -EAGAIN)
                assert_true(retry >= 1);
        return r;
}

static void test_hash(void **state)
{
        char a[STORE_PWHASH_MAX], b[STORE_PWHASH_MAX];
        char big[APIUSER_PASSWORD_MAX + 2];
        (void)state;
        assert_int_equal(apiuser_hash("secret", a), 0);
        assert_int_equal(apiuser_hash("secret", b), 0);
        assert_string_not_equal(a, b); /* salted */
        assert_int_equal(apiuser_hash("", a), -EINVAL);
        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(apiuser_hash(big, a), -EINVAL);
        big[APIUSER_PASSWORD_MAX] = '\0';
        assert_int_equal(apiuser_hash(big, a), 0);
}

static void test_login_cache(void **state)
{
        struct fx *f = *state;
        make_user(f, "a@acme.test", "pass-one");
        uint64_t n0 = apiuser_argon2_count(f->a);
        assert_int_equal(login(f, "a@acme.test", "pass-one"), 0);
        assert_true(apiuser_argon2_count(f->a) == n0 + 1);
        /* cached: no argon2, any case of the e-mail */
        assert_int_equal(login(f, "a@acme.test", "pass-one"), 0);
        assert_int_equal(login(f, "A@ACME.test", "pass-one"), 0);
        assert_true(apiuser_argon2_count(f->a) == n0 + 1);
        /* a wrong password is checked (and not cached) */
        assert_int_equal(login(f, "a@acme.test", "pass-two"), -EACCES);
        assert_int_equal(login(f, "a@acme.test", "pass-two"), -EACCES);
        assert_true(apiuser_argon2_count(f->a) == n0 + 3);
        /* made again with another password: the old one misses at once */
        assert_int_equal(store_api_user_delete(f->s, f->acc, "a@acme.test"), 0);
        assert_int_equal(login(f, "a@acme.test", "pass-one"), -EACCES);
        make_user(f, "a@acme.test", "pass-two");
        assert_int_equal(login(f, "a@acme.test", "pass-one"), -EACCES);
        assert_int_equal(login(f, "a@acme.test", "pass-two"), 0);
        /* nonsense is refused without a store read failing */
        assert_int_equal(login(f, "", "x"), -EACCES);
        assert_int_equal(login(f, "a@acme.test", ""), -EACCES);
}

static void test_limit_and_decoy(void **state)
{
        struct fx *f = *state;
        make_user(f, "b@acme.test", "right-one");
        uint64_t n0 = apiuser_argon2_count(f->a);
        for (int i = 0; i < APIUSER_TRIES_BURST; i++)
                assert_int_equal(login(f, "b@acme.test", "wrong"), -EACCES);
        assert_true(apiuser_argon2_count(f->a) == n0 + APIUSER_TRIES_BURST);
        /* past the bucket: refused before argon2, even the right password */
        assert_int_equal(login(f, "b@acme.test", "wrong"), -EAGAIN);
        assert_int_equal(login(f, "b@acme.test", "right-one"), -EAGAIN);
        assert_int_equal(login(f, "B@Acme.Test", "right-one"), -EAGAIN);
        assert_true(apiuser_argon2_count(f->a) == n0 + APIUSER_TRIES_BURST);
        /* an unknown e-mail costs an argon2 check (the decoy) and tokens */
        for (int i = 0; i < APIUSER_TRIES_BURST; i++)
                assert_int_equal(login(f, "ghost@acme.test", "x"), -EACCES);
        assert_true(apiuser_argon2_count(f->a) == n0 + 2 * APIUSER_TRIES_BURST);
        assert_int_equal(login(f, "ghost@acme.test", "x"), -EAGAIN);
        /* another e-mail has its own bucket */
        make_user(f, "c@acme.test", "c-password");
        assert_int_equal(login(f, "c@acme.test", "c-password"), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_hash),
            cmocka_unit_test_setup_teardown(test_login_cache, setup, teardown),
            cmocka_unit_test_setup_teardown(test_limit_and_decoy, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
