/* config: cfg_set, cfg_load over a real temp file and argv, and
 * cfg_parse_hostport. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

/* The destinations of one test's options, with their defaults. */
struct fx {
        char listen[CFG_STR_MAX];
        char name[CFG_STR_MAX];
        int64_t workers;
        int64_t offset;
        struct cfg_opt opts[4];
        char dir[64];
        char path[128];
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        snprintf(f->listen, sizeof(f->listen), "127.0.0.1:8080");
        snprintf(f->name, sizeof(f->name), "default");
        f->workers = 4;
        f->offset = 0;
        f->opts[0] = (struct cfg_opt){ "listen", CFG_STR, f->listen, 0, 0, "listen address" };
        f->opts[1] = (struct cfg_opt){ "name", CFG_STR, f->name, 0, 0, "a name" };
        f->opts[2] = (struct cfg_opt){ "workers", CFG_INT, &f->workers, 1, 64, "threads" };
        f->opts[3] = (struct cfg_opt){ "offset", CFG_INT, &f->offset, -10, 10, "signed" };
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-config.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/tasman.conf", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        unlink(f->path);
        assert_int_equal(rmdir(f->dir), 0);
        free(f);
        return 0;
}

#define N_OPTS(f) (sizeof((f)->opts) / sizeof((f)->opts[0]))

static void write_file(const struct fx *f, const char *text)
{
        FILE *fp = fopen(f->path, "w");
        assert_non_null(fp);
        assert_int_equal(fputs(text, fp) >= 0, 1);
        assert_int_equal(fclose(fp), 0);
}

/* Runs cfg_load with argv (NULL-terminated, without argv[0]), stdout to
 * /dev/null so that --help does not mix with the TAP output. */
static int load(struct fx *f, const char *const *args)
{
        char *argv[32];
        int argc = 0, saved, devnull, r;

        argv[argc++] = (char *)"tasman-test";
        for (; *args; args++)
                argv[argc++] = (char *)*args;
        argv[argc] = NULL;
        fflush(stdout);
        saved = dup(STDOUT_FILENO);
        devnull = open("/dev/null", O_WRONLY);
        assert_true(saved >= 0 && devnull >= 0);
        dup2(devnull, STDOUT_FILENO);
        r = cfg_load(f->opts, N_OPTS(f), argc, argv, "tasman-test", "A test program.");
        fflush(stdout);
        dup2(saved, STDOUT_FILENO);
        close(saved);
        close(devnull);
        return r;
}

static void test_set_table(void **state)
{
        struct fx *f = *state;
        static const struct {
                const char *key, *value;
                int ret;
        } cases[] = {
                { "workers", "1", 0 },         { "workers", "64", 0 },
                { "workers", "0", -EINVAL },   { "workers", "65", -EINVAL },
                { "workers", "-1", -EINVAL },  { "workers", "", -EINVAL },
                { "workers", "4x", -EINVAL },  { "workers", "x4", -EINVAL },
                { "workers", "4 ", -EINVAL },  { "workers", "99999999999999999999", -EINVAL },
                { "offset", "-10", 0 },        { "offset", "10", 0 },
                { "offset", "-11", -EINVAL },  { "offset", "11", -EINVAL },
                { "name", "", 0 },             { "name", "web 1", 0 },
                { "nope", "1", -ENOENT },      { "", "1", -ENOENT },
                { "Workers", "4", -ENOENT },   { "work", "4", -ENOENT },
                { "workersx", "4", -ENOENT },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int r = cfg_set(f->opts, N_OPTS(f), cases[i].key, cases[i].value);
                if (r != cases[i].ret)
                        fail_msg("cfg_set(%s, '%s') = %d, want %d", cases[i].key,
                                 cases[i].value, r, cases[i].ret);
        }
}

static void test_set_values(void **state)
{
        struct fx *f = *state;

        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "workers", "17"), 0);
        assert_int_equal(f->workers, 17);
        /* A bad value leaves the old one. */
        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "workers", "65"), -EINVAL);
        assert_int_equal(f->workers, 17);
        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "offset", "-7"), 0);
        assert_int_equal(f->offset, -7);
        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "name", "web 1"), 0);
        assert_string_equal(f->name, "web 1");
}

static void test_set_string_length(void **state)
{
        struct fx *f = *state;
        char v[CFG_STR_MAX + 1];

        memset(v, 'a', CFG_STR_MAX - 1);
        v[CFG_STR_MAX - 1] = '\0';
        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "name", v), 0);
        assert_int_equal(strlen(f->name), CFG_STR_MAX - 1);
        memset(v, 'b', CFG_STR_MAX);
        v[CFG_STR_MAX] = '\0';
        assert_int_equal(cfg_set(f->opts, N_OPTS(f), "name", v), -ENAMETOOLONG);
        assert_int_equal(f->name[0], 'a'); /* unchanged */
}

static void test_load_file(void **state)
{
        struct fx *f = *state;
        write_file(f, "# a comment\n"
                      "\n"
                      "   \n"
                      "  # an indented comment\n"
                      "listen=0.0.0.0:9000\n"
                      "name   =   \"  padded value  \"  \n"
                      "\tworkers\t= 12\n"
                      "offset = -3\n");
        const char *args[] = { "--config", f->path, NULL };
        assert_int_equal(load(f, args), 0);
        assert_string_equal(f->listen, "0.0.0.0:9000");
        assert_string_equal(f->name, "  padded value  ");
        assert_int_equal(f->workers, 12);
        assert_int_equal(f->offset, -3);
}

static void test_load_quotes(void **state)
{
        struct fx *f = *state;
        static const struct {
                const char *line, *want;
        } cases[] = {
                { "name = \"\"\n", "" },
                { "name = \"\n", "\"" },          /* one quote is not a pair */
                { "name = \"a\"b\"\n", "a\"b" },  /* only the outer pair goes */
                { "name = a = b\n", "a = b" },    /* the first '=' splits */
                { "name = 'single'\n", "'single'" },
                { "name =\n", "" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const char *args[] = { "--config", f->path, NULL };
                write_file(f, cases[i].line);
                assert_int_equal(load(f, args), 0);
                assert_string_equal(f->name, cases[i].want);
        }
}

/* The command line wins over the file, whatever their order in argv. */
static void test_load_override(void **state)
{
        struct fx *f = *state;
        write_file(f, "workers = 12\nname = from-file\n");
        const char *args[] = { "--workers=20", "--config", f->path, "--listen=[::1]:1", NULL };
        assert_int_equal(load(f, args), 0);
        assert_int_equal(f->workers, 20);
        assert_string_equal(f->name, "from-file");
        assert_string_equal(f->listen, "[::1]:1");

        const char *args2[] = { "--config=/nonexistent", NULL };
        assert_int_equal(load(f, args2), -EINVAL);

        char cfg_eq[200];
        snprintf(cfg_eq, sizeof(cfg_eq), "--config=%s", f->path);
        const char *args3[] = { cfg_eq, "--name=cli", NULL };
        assert_int_equal(load(f, args3), 0);
        assert_string_equal(f->name, "cli");
        assert_int_equal(f->workers, 12);
}

static void test_load_no_config(void **state)
{
        struct fx *f = *state;
        const char *args[] = { "--workers=2", "--name=x=y", "--name=", NULL };
        assert_int_equal(load(f, args), 0);
        assert_int_equal(f->workers, 2);
        assert_string_equal(f->name, "");
        assert_string_equal(f->listen, "127.0.0.1:8080"); /* default kept */
        const char *none[] = { NULL };
        assert_int_equal(load(f, none), 0);
}

static void test_load_bad_file_lines(void **state)
{
        struct fx *f = *state;
        static const char *const files[] = {
                "workers 12\n",           /* no '=' */
                "unknown = 1\n",          /* unknown key */
                "workers = 100\n",        /* out of range */
                "workers = twelve\n",     /* not a number */
                "= 5\n",                  /* no key */
                "name = ok\nworkers\n",   /* second line bad */
        };
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                const char *args[] = { "--config", f->path, NULL };
                write_file(f, files[i]);
                if (load(f, args) != -EINVAL)
                        fail_msg("config '%s' was accepted", files[i]);
        }
        /* A line longer than the buffer is refused, not split. */
        size_t n = CFG_STR_MAX + 300;
        char *big = malloc(n + 16);
        assert_non_null(big);
        memcpy(big, "name = ", 7);
        memset(big + 7, 'x', n);
        memcpy(big + 7 + n, "\n", 2);
        write_file(f, big);
        free(big);
        const char *args[] = { "--config", f->path, NULL };
        assert_int_equal(load(f, args), -EINVAL);
        /* A string value just over the limit. */
        char line[CFG_STR_MAX + 32];
        memcpy(line, "name = ", 7);
        memset(line + 7, 'y', CFG_STR_MAX);
        memcpy(line + 7 + CFG_STR_MAX, "\n", 2);
        write_file(f, line);
        assert_int_equal(load(f, args), -EINVAL);
}

static void test_load_bad_args(void **state)
{
        struct fx *f = *state;
        static const char *const bad[][3] = {
                { "--config", NULL },        /* --config without a file */
                { "positional", NULL },
                { "-w", NULL },
                { "--workers", NULL },       /* no '=' */
                { "--workers=0", NULL },
                { "--unknown=1", NULL },
                { "--=1", NULL },
                { "--config", "/nonexistent/tasman.conf", NULL },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                if (load(f, bad[i]) != -EINVAL)
                        fail_msg("argv '%s' was accepted", bad[i][0]);
        }
        assert_int_equal(f->workers, 4);
}

static void test_help_and_version(void **state)
{
        struct fx *f = *state;
        static const char *const cases[][3] = {
                { "--help", NULL },
                { "-h", NULL },
                { "--version", NULL },
                { "--workers=0", "--help", NULL }, /* help wins over bad keys */
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                assert_int_equal(load(f, cases[i]), 1);
        assert_int_equal(f->workers, 4);
}

static void test_hostport(void **state)
{
        static const struct {
                const char *in;
                int ret;
                const char *host;
                uint16_t port;
        } cases[] = {
                { "127.0.0.1:8080", 0, "127.0.0.1", 8080 },
                { "0.0.0.0:0", 0, "0.0.0.0", 0 },
                { "localhost:65535", 0, "localhost", 65535 },
                { "[::1]:443", 0, "::1", 443 },
                { "[fe80::1%eth0]:9", 0, "fe80::1%eth0", 9 },
                { "127.0.0.1:65536", -EINVAL, NULL, 0 },
                { "127.0.0.1:-1", -EINVAL, NULL, 0 },
                { "127.0.0.1:80x", -EINVAL, NULL, 0 },
                { "127.0.0.1:", -EINVAL, NULL, 0 },
                { "127.0.0.1", -EINVAL, NULL, 0 },
                { ":8080", -EINVAL, NULL, 0 },
                { "", -EINVAL, NULL, 0 },
                { "[::1:443", -EINVAL, NULL, 0 },
                { "[::1]", -EINVAL, NULL, 0 },
                { "host:99999999999999999999", -EINVAL, NULL, 0 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char host[64] = "untouched";
                uint16_t port = 4242;
                int r = cfg_parse_hostport(cases[i].in, host, sizeof(host), &port);
                if (r != cases[i].ret)
                        fail_msg("'%s': %d, want %d", cases[i].in, r, cases[i].ret);
                if (r == 0) {
                        assert_string_equal(host, cases[i].host);
                        assert_int_equal(port, cases[i].port);
                } else {
                        assert_string_equal(host, "untouched");
                        assert_int_equal(port, 4242);
                }
        }
}

static void test_hostport_host_len(void **state)
{
        char host[8];
        uint16_t port = 0;
        (void)state;
        assert_int_equal(cfg_parse_hostport("1234567:1", host, sizeof(host), &port), 0);
        assert_string_equal(host, "1234567");
        assert_int_equal(port, 1);
        assert_int_equal(cfg_parse_hostport("12345678:1", host, sizeof(host), &port), -EINVAL);
        assert_int_equal(cfg_parse_hostport("[1234567]:2", host, sizeof(host), &port), 0);
        assert_string_equal(host, "1234567");
}

/* An IPv6 address must be bracketed: without brackets its last group
 * would be taken for the port ("fe80::1" is not host "fe80:", port 1). */
static void test_hostport_bare_ipv6(void **state)
{
        static const char *const cases[] = { "::1", "fe80::1", "::", "2001:db8::8080" };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char host[64] = "untouched";
                uint16_t port = 4242;
                int r = cfg_parse_hostport(cases[i], host, sizeof(host), &port);
                if (r != -EINVAL)
                        fail_msg("'%s': %d (host '%s', port %u), want -EINVAL", cases[i], r,
                                 host, port);
        }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_set_table),        T(test_set_values),        T(test_set_string_length),
                T(test_load_file),        T(test_load_quotes),       T(test_load_override),
                T(test_load_no_config),   T(test_load_bad_file_lines), T(test_load_bad_args),
                T(test_help_and_version), T(test_hostport),          T(test_hostport_host_len),
                T(test_hostport_bare_ipv6),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
