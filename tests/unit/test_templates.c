/* The template catalog: schema validation (every rejection names the
 * config key), defaults and generated secrets, secrets kept out of the
 * public config, and user-data that quotes what reaches a shell. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "templates.h"

static int check(const char *id, const char *config_json, json_t **full, char *field,
                 char *why)
{
        json_t *c = config_json ? json_loads(config_json, 0, NULL) : NULL;
        if (config_json)
                assert_non_null(c);
        int r = templates_validate(templates_find(id), c, full, field, 64, why, 160);
        json_decref(c);
        return r;
}

static void test_catalog(void **state)
{
        size_t n;
        (void)state;
        const struct tpl *all = templates_all(&n);
        assert_int_equal(n, 4);
        for (const char *const *id = templates_ids(); *id; id++)
                assert_non_null(templates_find(*id));
        assert_null(templates_find("oracle"));
        assert_null(templates_find(NULL));
        json_t *j = templates_json(templates_find("postgres"));
        assert_string_equal(json_string_value(json_object_get(j, "name")), "PostgreSQL");
        assert_string_equal(json_string_value(json_array_get(json_object_get(j, "versions"), 0)),
                            "16");
        json_t *cfg = json_object_get(j, "config");
        assert_int_equal(json_array_size(cfg), 3);
        assert_true(json_is_true(json_object_get(json_array_get(cfg, 2), "secret")));
        json_decref(j);
        (void)all;
}

static void test_validate(void **state)
{
        static const struct {
                const char *id, *config, *field;
        } bad[] = {
                { "postgres", NULL, "config.postgres_user" },
                { "postgres", "{\"postgres_user\":\"app\"}", "config.postgres_db" },
                { "postgres", "{\"postgres_user\":\"App\",\"postgres_db\":\"d\"}", "config.postgres_user" },
                { "postgres", "{\"postgres_user\":\"1app\",\"postgres_db\":\"d\"}", "config.postgres_user" },
                { "postgres", "{\"postgres_user\":\"a;drop\",\"postgres_db\":\"d\"}", "config.postgres_user" },
                { "postgres", "{\"postgres_user\":5,\"postgres_db\":\"d\"}", "config.postgres_user" },
                { "postgres", "{\"postgres_user\":\"a\",\"postgres_db\":\"d\",\"postgres_password\":\"short\"}", "config.postgres_password" },
                { "postgres", "{\"postgres_user\":\"a\",\"postgres_db\":\"d\",\"postgres_password\":\"has'quote'and-long\"}", "config.postgres_password" },
                { "postgres", "{\"postgres_user\":\"a\",\"postgres_db\":\"d\",\"extra\":1}", "config.extra" },
                { "postgres", "[]", "config" },
                { "redis", "{\"maxmemory_mb\":8}", "config.maxmemory_mb" },
                { "redis", "{\"maxmemory_mb\":\"256\"}", "config.maxmemory_mb" },
                { "wordpress", "{\"site_title\":\"x\",\"admin_user\":\"a\",\"admin_email\":\"nope\"}", "config.admin_email" },
                { "wordpress", "{\"site_title\":\"a\\nb\",\"admin_user\":\"a\",\"admin_email\":\"a@b.c\"}", "config.site_title" },
        };
        char field[64], why[160];
        json_t *full;
        (void)state;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                field[0] = why[0] = '\0';
                if (check(bad[i].id, bad[i].config, &full, field, why) != -EINVAL)
                        fail_msg("case %zu accepted", i);
                assert_string_equal(field, bad[i].field);
                assert_true(strlen(why) > 0);
        }
        /* defaults and generated secrets */
        assert_int_equal(check("redis", NULL, &full, field, why), 0);
        assert_int_equal(json_integer_value(json_object_get(full, "maxmemory_mb")), 256);
        const char *pw = json_string_value(json_object_get(full, "redis_password"));
        assert_non_null(pw);
        assert_int_equal(strlen(pw), 24);
        json_t *pub = templates_public_config(templates_find("redis"), full);
        assert_null(json_object_get(pub, "redis_password"));
        assert_int_equal(json_integer_value(json_object_get(pub, "maxmemory_mb")), 256);
        json_decref(pub);
        json_t *again;
        assert_int_equal(check("redis", NULL, &again, field, why), 0);
        assert_string_not_equal(pw, json_string_value(json_object_get(again, "redis_password")));
        json_decref(again);
        json_decref(full);
        assert_int_equal(check("postgres",
                               "{\"postgres_user\":\"admin\",\"postgres_db\":\"myapp\"}", &full,
                               field, why),
                         0);
        json_decref(full);
}

static void test_user_data(void **state)
{
        char field[64], why[160];
        json_t *full;
        (void)state;
        assert_int_equal(check("postgres",
                               "{\"postgres_user\":\"admin\",\"postgres_db\":\"myapp\","
                               "\"postgres_password\":\"S3cret-pass.word\"}",
                               &full, field, why),
                         0);
        char *ud = templates_user_data(templates_find("postgres"), "16", full);
        assert_non_null(ud);
        assert_int_equal(strncmp(ud, "#cloud-config\n", 14), 0);
        assert_non_null(strstr(ud, "apt-get install -y postgresql-16"));
        assert_non_null(strstr(ud, "CREATE ROLE admin LOGIN PASSWORD ''S3cret-pass.word''"));
        assert_non_null(strstr(ud, "createdb -O admin myapp"));
        free(ud);
        json_decref(full);
        /* a title with quotes reaches the shell quoted, and YAML doubled */
        assert_int_equal(check("wordpress",
                               "{\"site_title\":\"Bob's $(reboot) blog\",\"admin_user\":\"bob\","
                               "\"admin_email\":\"bob@example.org\"}",
                               &full, field, why),
                         0);
        ud = templates_user_data(templates_find("wordpress"), "6.5", full);
        assert_non_null(ud);
        assert_non_null(strstr(ud, "--title=''Bob''\\''''s $(reboot) blog''"));
        assert_non_null(strstr(ud, "core download --version=6.5"));
        free(ud);
        json_decref(full);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_catalog),
                cmocka_unit_test(test_validate),
                cmocka_unit_test(test_user_data),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
