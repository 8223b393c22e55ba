/* The Tilaa API's pure parts: the form decoder (form.h) and the parameter
 * checks, times, dates, status words and Basic credentials (tilaa.h). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "form.h"
#include "tilaa.h"

static void decode_ok(const char *body, struct form **f)
{
        char why[128] = "";
        int r = form_decode(body, strlen(body), f, why, sizeof(why));
        if (r != 0)
                fail_msg("form %s: %d %s", body, r, why);
}

static void test_form_good(void **state)
{
        struct form *f;
        (void)state;
        decode_ok("name=newvm&ram=1024&storage=20&storage_type=hdd&template=381", &f);
        assert_int_equal(f->n, 5);
        assert_string_equal(form_get(f, "name"), "newvm");
        assert_string_equal(form_get(f, "template"), "381");
        assert_null(form_get(f, "site"));
        form_free(f);

        /* what curl -d sends for user_data="#cloud-config..." and a key */
        decode_ok(
            "user_data=%23cloud-config%0Aruncmd%3A+%5Becho%5D&key=ssh-rsa+AAAAB%2B%2F%3D+x%40y"
            "&empty=&utf8=%C3%A9t%C3%A9",
            &f);
        assert_string_equal(form_get(f, "user_data"), "#cloud-config\nruncmd: [echo]");
        assert_string_equal(form_get(f, "key"), "ssh-rsa AAAAB+/= x@y");
        assert_string_equal(form_get(f, "empty"), "");
        assert_string_equal(form_get(f, "utf8"), "\xc3\xa9t\xc3\xa9");
        form_free(f);

        /* an empty body is an empty form */
        assert_int_equal(form_decode(NULL, 0, &f, NULL, 0), 0);
        assert_int_equal(f->n, 0);
        form_free(f);
        form_free(NULL);

        /* exactly the limits */
        char body[FORM_MAX_PARAMS * 8 + 1] = "";
        for (int i = 0; i < FORM_MAX_PARAMS; i++)
                snprintf(body + strlen(body), sizeof(body) - strlen(body), "%sp%d=1", i ? "&" : "",
                         i);
        decode_ok(body, &f);
        assert_int_equal(f->n, FORM_MAX_PARAMS);
        form_free(f);
        char *big = malloc(FORM_VALUE_MAX + 8);
        assert_non_null(big);
        memcpy(big, "v=", 2);
        memset(big + 2, 'a', FORM_VALUE_MAX);
        big[FORM_VALUE_MAX + 2] = '\0';
        decode_ok(big, &f);
        assert_int_equal(strlen(form_get(f, "v")), FORM_VALUE_MAX);
        form_free(f);
        big[FORM_VALUE_MAX + 2] = 'a';
        big[FORM_VALUE_MAX + 3] = '\0';
        assert_int_equal(form_decode(big, strlen(big), &f, NULL, 0), -E2BIG);
        free(big);
}

/* What ordinary form parsers accept: each body and the form it is. */
static void test_form_lenient(void **state)
{
        static const struct {
                const char *body;
                const char *want; /* "name=value;..." in order, "" for none */
        } cases[] = {
            {"a=1&", "a=1;"},
            {"&a=1", "a=1;"},
            {"a=1&&b=2", "a=1;b=2;"},
            {"&&&", ""},
            {"&", ""},
            {"online", "online=;"},
            {"online&name=x", "online=;name=x;"},
            {"a=&b", "a=;b=;"},
            {"a=1&a=2", "a=2;"},             /* the last wins */
            {"a=1&b=2&a=", "a=;b=2;"},       /* even an empty one */
            {"foo[]=1&foo[]=2&a=3", "a=3;"}, /* names not ours: ignored */
            {"a%20b=1&x=2", "x=2;"},
            {"a b=1", ""},
            {"=1&=&x=y", "x=y;"},    /* no name */
            {"%00=1&n%00=2", ""},    /* a NUL in the name */
            {"na%6De=x", "name=x;"}, /* an escaped name */
            {"a==b", "a==b;"},       /* the first '=' splits */
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct form *f = NULL;
                char why[128] = "", got[256] = "";
                int r = form_decode(cases[i].body, strlen(cases[i].body), &f, why, sizeof(why));
                if (r != 0)
                        fail_msg("form '%s': %d %s", cases[i].body, r, why);
                for (size_t k = 0; k < f->n; k++)
                        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s=%s;",
                                 f->p[k].name, f->p[k].value);
                if (strcmp(got, cases[i].want) != 0)
                        fail_msg("form '%s': got '%s', want '%s'", cases[i].body, got,
                                 cases[i].want);
                form_free(f);
        }
}

static void test_form_bad(void **state)
{
        static const struct {
                const char *body;
                int err;
        } cases[] = {
            {"a=%2", -EINVAL},  /* short escape */
            {"a=%zz", -EINVAL}, /* not hex */
            {"a=%", -EINVAL},
            {"a=%00", -EINVAL},       /* NUL */
            {"a=%ff", -EINVAL},       /* not UTF-8 */
            {"a=%C3", -EINVAL},       /* cut UTF-8 */
            {"a=%ED%A0%80", -EINVAL}, /* a surrogate */
            {"a=%C0%80", -EINVAL},    /* overlong */
            {"x[]=%ff", -EINVAL},     /* an ignored name's value is checked too */
            {"a%zz=1", -EINVAL},      /* bad escape in a name */
            {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=1", -EINVAL}, /* 33-byte name */
            {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", -EINVAL},   /* bare, too */
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct form *f = NULL;
                char why[128] = "";
                int r = form_decode(cases[i].body, strlen(cases[i].body), &f, why, sizeof(why));
                if (r != cases[i].err)
                        fail_msg("form '%s': %d, want %d", cases[i].body, r, cases[i].err);
                assert_null(f);
                assert_true(why[0] != '\0');
        }
        /* one too many parameters; one too many pairs, repeats counted */
        struct form *f = NULL;
        char pairs[(FORM_MAX_PAIRS + 1) * 4 + 1] = "";
        for (int i = 0; i < FORM_MAX_PAIRS; i++)
                strcat(pairs, i ? "&a=1" : "a=1");
        decode_ok(pairs, &f);
        form_free(f);
        strcat(pairs, "&a=1");
        assert_int_equal(form_decode(pairs, strlen(pairs), &f, NULL, 0), -E2BIG);
        char body[(FORM_MAX_PARAMS + 1) * 8 + 1] = "";
        for (int i = 0; i <= FORM_MAX_PARAMS; i++)
                snprintf(body + strlen(body), sizeof(body) - strlen(body), "%sp%d=1", i ? "&" : "",
                         i);
        assert_int_equal(form_decode(body, strlen(body), &f, NULL, 0), -E2BIG);
        /* the length is the caller's: nothing past it is read */
        assert_int_equal(form_decode("a=1&b", 3, &f, NULL, 0), 0);
        assert_int_equal(f->n, 1);
        assert_null(form_get(f, "b"));
        form_free(f);
}

/* multipart/form-data: CT is the Content-Type, P a part of boundary "xyz" */
#define CT      "multipart/form-data; boundary=xyz"
#define CD      "Content-Disposition: form-data; name="
#define P(n, v) "--xyz\r\n" CD "\"" n "\"\r\n\r\n" v "\r\n"
#define END     "--xyz--\r\n"
static void test_form_multipart(void **state)
{
        static const struct {
                const char *ct, *body;
                int err;
                const char *want; /* as test_form_lenient's */
        } cases[] = {
            /* what curl -F sends */
            {"multipart/form-data; boundary=------------------------d74496d66958873e",
             "--------------------------d74496d66958873e\r\n"
             "Content-Disposition: form-data; name=\"name\"\r\n\r\nweb1\r\n"
             "--------------------------d74496d66958873e\r\n"
             "Content-Disposition: form-data; name=\"user_data\"\r\n"
             "Content-Type: text/plain\r\n\r\n#cloud-config\nruncmd: [a]\r\n\r\n"
             "--------------------------d74496d66958873e--\r\n",
             0, "name=web1;user_data=#cloud-config\nruncmd: [a]\r\n;"},
            {CT, P("a", "1") P("b", "") END, 0, "a=1;b=;"},
            {CT, P("a", "1") P("a", "2") END, 0, "a=2;"},                   /* the last wins */
            {CT, P("foo[]", "1") P("a b", "2") P("x", "3") END, 0, "x=3;"}, /* ignored */
            {CT, "--xyz--", 0, ""},                                         /* no parts */
            {CT, P("a", "1") "--xyz--\r\nan epilogue", 0, "a=1;"},
            {CT, "--xyz  \r\n" CD "a\r\n\r\nv\r\n" END, 0, "a=v;"}, /* padding, bare name */
            {CT, "--xyz\r\ncontent-disposition:FORM-DATA;NAME=\"a\"\r\n\r\nv\r\n" END, 0, "a=v;"},
            {CT, "--xyz\r\n" CD "\"a\"; x=\"y;z\"\r\n\r\nv\r\n" END, 0, "a=v;"},
            {CT, "--xyz\r\n" CD "\"\\\"q\\\"\"\r\n\r\nv\r\n" END, 0, ""}, /* name "q" */
            {CT, P("a", "--xy\r\n--xyzz") END, -EINVAL, ""},              /* "\r\n--xyz" ends it */
            {CT, P("a", "--xy\r\n-xyz") END, 0, "a=--xy\r\n-xyz;"},
            {"multipart/form-data; charset=utf-8; boundary=\"x y\"",
             "--x y\r\n" CD "a\r\n\r\nv\r\n--x y--", 0, "a=v;"},
            {"Multipart/Form-Data;BOUNDARY=xyz", P("a", "é") END, 0, "a=é;"},
            /* malformed */
            {"multipart/form-data", END, -EINVAL, ""}, /* no boundary */
            {"multipart/form-data; boundary=", END, -EINVAL, ""},
            {"multipart/form-data; boundary=\"xyz", END, -EINVAL, ""},
            {"multipart/form-data; boundary=a@b", "--a@b--", -EINVAL, ""},
            {"multipart/form-data; boundary=\"ab \"", "--ab --", -EINVAL, ""},
            {"multipart/form-data; boundary=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaaaaaaaaaaaaaaaaaaa", /* 71 */
             "--aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa--", -EINVAL,
             ""},
            {NULL, END, -EINVAL, ""},
            {CT, "", -EINVAL, ""},
            {CT, "preamble\r\n" P("a", "1") END, -EINVAL, ""},
            {CT, P("a", "1"), -EINVAL, ""},                /* no close delimiter */
            {CT, P("a", "1") "--xyz", -EINVAL, ""},        /* cut short */
            {CT, "--xyz\r\n" CD "\"a\"\r\n", -EINVAL, ""}, /* no blank line */
            {CT, "--xyzX\r\n" CD "\"a\"\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\n" CD "\"a\"\n\nv\n--xyz--", -EINVAL, ""}, /* LF only */
            {CT, "--xyz\r\nno colon\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\n: x\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\nContent-Type: text/plain\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\nContent-Disposition: form-data\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\n" CD "\"a\r\n\r\nv\r\n" END, -EINVAL, ""}, /* open quote */
            {CT, "--xyz\r\n" CD "a b\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\n" CD "\r\n\r\nv\r\n" END, -EINVAL, ""},
            {CT, "--xyz\r\n" CD "a\r\n" CD "b\r\n\r\nv\r\n" END, -EINVAL, ""},  /* twice */
            {CT, P("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "1") END, -EINVAL, ""}, /* 33 bytes */
            {CT, "--xyz\r\n" CD "\"f\"; filename=\"a.txt\"\r\n\r\nv\r\n" END, -ENOTSUP, ""},
            {CT, P("a", "\xff") END, -EINVAL, ""},
            {CT, P("a", "x\0y") END, -EINVAL, ""}, /* cut at the NUL by strlen: no end */
            {CT,
             "--xyz\r\nA: 1\r\nA: 2\r\nA: 3\r\nA: 4\r\nA: 5\r\nA: 6\r\nA: 7\r\nA: 8\r\n" CD
             "a\r\n\r\nv\r\n" END,
             -EINVAL, ""}, /* nine header lines */
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct form *f = NULL;
                char why[200] = "", got[256] = "";
                int r = form_decode_multipart(cases[i].ct, cases[i].body, strlen(cases[i].body), &f,
                                              why, sizeof(why));
                if (r != cases[i].err)
                        fail_msg("multipart case %zu: %d (%s), want %d", i, r, why, cases[i].err);
                if (r < 0) {
                        assert_null(f);
                        if (!why[0])
                                fail_msg("multipart case %zu: no reason given", i);
                        continue;
                }
                for (size_t k = 0; k < f->n; k++)
                        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s=%s;",
                                 f->p[k].name, f->p[k].value);
                if (strcmp(got, cases[i].want) != 0)
                        fail_msg("multipart case %zu: got '%s', want '%s'", i, got, cases[i].want);
                form_free(f);
        }

        /* a NUL in a value (the length is the caller's) */
        static const char nul[] = P("a", "x\0y") END;
        struct form *f = NULL;
        assert_int_equal(form_decode_multipart(CT, nul, sizeof(nul) - 1, &f, NULL, 0), -EINVAL);
        /* a header line of FORM_HEADER_MAX bytes (CRLF counted) fits, one more not */
        char *big = malloc(FORM_VALUE_MAX + 4096);
        assert_non_null(big);
        snprintf(big, 4096, "--xyz\r\nX-Long: %0*d\r\n" CD "a\r\n\r\nv\r\n" END,
                 FORM_HEADER_MAX - 9, 0);
        assert_int_equal(form_decode_multipart(CT, big, strlen(big), &f, NULL, 0), -EINVAL);
        snprintf(big, 4096, "--xyz\r\nX-Long: %0*d\r\n" CD "a\r\n\r\nv\r\n" END,
                 FORM_HEADER_MAX - 10, 0);
        assert_int_equal(form_decode_multipart(CT, big, strlen(big), &f, NULL, 0), 0);
        form_free(f);
        /* a value of FORM_VALUE_MAX bytes, and one more */
        for (int extra = 0; extra < 2; extra++) {
                size_t n = (size_t)snprintf(big, 200, "--xyz\r\n" CD "v\r\n\r\n");
                memset(big + n, 'a', FORM_VALUE_MAX + (size_t)extra);
                n += FORM_VALUE_MAX + (size_t)extra;
                n += (size_t)sprintf(big + n, "\r\n" END);
                int r = form_decode_multipart(CT, big, n, &f, NULL, 0);
                assert_int_equal(r, extra ? -E2BIG : 0);
                if (r == 0) {
                        assert_int_equal(strlen(form_get(f, "v")), FORM_VALUE_MAX);
                        form_free(f);
                }
        }
        /* FORM_MAX_PAIRS parts, and one more */
        size_t n = 0;
        for (int i = 0; i < FORM_MAX_PAIRS; i++)
                n += (size_t)sprintf(big + n, P("a", "1"));
        strcpy(big + n, END);
        assert_int_equal(form_decode_multipart(CT, big, strlen(big), &f, NULL, 0), 0);
        form_free(f);
        n += (size_t)sprintf(big + n, P("a", "1"));
        strcpy(big + n, END);
        assert_int_equal(form_decode_multipart(CT, big, strlen(big), &f, NULL, 0), -E2BIG);
        free(big);
}
#undef CT
#undef CD
#undef P
#undef END

static void test_uint_flag(void **state)
{
        static const struct {
                const char *s;
                uint64_t max;
                int r;
                uint64_t v;
        } cases[] = {
            {"0", 10, 0, 0},
            {"10", 10, 0, 10},
            {"11", 10, -ERANGE, 0},
            {"", 10, -EINVAL, 0},
            {"01", 10, -EINVAL, 0},
            {"-1", 10, -EINVAL, 0},
            {"+1", 10, -EINVAL, 0},
            {" 1", 10, -EINVAL, 0},
            {"1 ", 10, -EINVAL, 0},
            {"1e3", 10000, -EINVAL, 0},
            {"0x10", 100, -EINVAL, 0},
            {"18446744073709551615", UINT64_MAX, 0, UINT64_MAX},
            {"18446744073709551616", UINT64_MAX, -ERANGE, 0},
            {"9223372036854775808", INT64_MAX, -ERANGE, 0},
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t v = 12345;
                int r = tilaa_uint(cases[i].s, cases[i].max, &v);
                if (r != cases[i].r)
                        fail_msg("'%s': %d, want %d", cases[i].s, r, cases[i].r);
                if (r == 0)
                        assert_true(v == cases[i].v);
                else
                        assert_true(v == 12345);
        }
        assert_int_equal(tilaa_uint(NULL, 1, &(uint64_t){0}), -EINVAL);
        assert_false(tilaa_flag(NULL));
        assert_false(tilaa_flag(""));
        assert_false(tilaa_flag("0"));
        assert_false(tilaa_flag("000"));
        assert_true(tilaa_flag("1"));
        assert_true(tilaa_flag("yes"));
        assert_true(tilaa_flag("10"));
}

static void test_time(void **state)
{
        char t[TILAA_TIME_LEN];
        (void)state;
        /* the document's own example: summer time in Amsterdam */
        tilaa_time(1401703198000LL, "Europe/Amsterdam", t);
        assert_string_equal(t, "2014-06-02T11:59:58+02:00");
        tilaa_time(1389787200000LL, "Europe/Amsterdam", t); /* 2014-01-15T12:00:00Z */
        assert_string_equal(t, "2014-01-15T13:00:00+01:00");
        tilaa_time(1389787200000LL, "America/New_York", t);
        assert_string_equal(t, "2014-01-15T07:00:00-05:00");
        tilaa_time(1389787200000LL, "Asia/Kolkata", t);
        assert_string_equal(t, "2014-01-15T17:30:00+05:30");
        tilaa_time(1389787200000LL, "No/Such_Zone", t); /* unknown: UTC */
        assert_string_equal(t, "2014-01-15T12:00:00+00:00");
        tilaa_time(1401703198000LL, "UTC", t);
        assert_string_equal(t, "2014-06-02T09:59:58+00:00");
        tilaa_time(0, NULL, t);
        assert_string_equal(t, "1970-01-01T00:00:00+00:00");
        tilaa_time(-1, "UTC", t); /* floors, not rounds to zero */
        assert_string_equal(t, "1969-12-31T23:59:59+00:00");
        assert_int_equal(strlen(t), TILAA_TIME_LEN - 1);
}

static void test_dates(void **state)
{
        int y, m, d;
        (void)state;
        assert_int_equal(tilaa_date("2014-04-01", &y, &m, &d), 0);
        assert_int_equal(y, 2014);
        assert_int_equal(m, 4);
        assert_int_equal(d, 1);
        assert_int_equal(tilaa_date("2024-02-29", &y, &m, &d), 0);
        static const char *const bad[] = {"2023-02-29", "2014-13-01", "2014-00-01", "2014-04-31",
                                          "2014-4-1",   "14-04-01",   "2014/04/01", "2014-04-01x",
                                          "",           "0",          "1969-12-31", "abcd-ef-gh"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (tilaa_date(bad[i], &y, &m, &d) != -EINVAL)
                        fail_msg("date '%s' accepted", bad[i]);
        assert_int_equal(tilaa_date(NULL, &y, &m, &d), -EINVAL);
        /* local midnight: 2014-04-01T00:00+02:00 */
        assert_true(tilaa_local_midnight(2014, 4, 1, "Europe/Amsterdam") == 1396303200000LL);
        assert_true(tilaa_local_midnight(2014, 4, 1, "UTC") == 1396310400000LL);
        assert_true(tilaa_local_midnight(2014, 4, 1, NULL) == 1396310400000LL);
        assert_true(tilaa_local_midnight(1970, 1, 1, NULL) == 0);
        /* the month is the zone's: 2014-06-30T23:30Z is July in Amsterdam */
        char d2[TILAA_CANCEL_DATES][11];
        tilaa_cancel_dates(1404171000000LL, "Europe/Amsterdam", d2);
        assert_string_equal(d2[0], "2014-08-01");
        tilaa_cancel_dates(1404171000000LL, "UTC", d2);
        assert_string_equal(d2[0], "2014-07-01");

        char dates[TILAA_CANCEL_DATES][11];
        tilaa_cancel_dates(1401703198000LL, NULL, dates); /* 2014-06-02 */
        assert_string_equal(dates[0], "2014-07-01");
        assert_string_equal(dates[5], "2014-12-01");
        assert_string_equal(dates[6], "2015-01-01");
        assert_string_equal(dates[11], "2015-06-01");
        tilaa_cancel_dates(1419984000000LL, NULL, dates); /* 2014-12-31 */
        assert_string_equal(dates[0], "2015-01-01");
        assert_string_equal(dates[11], "2015-12-01");
}

static void test_names(void **state)
{
        char out[255];
        (void)state;
        /* names are for internal use: any printable text */
        static const char *const good_names[] = {
            "myserver",
            "web-1.example",
            "a",
            "-a",
            "a.",
            "a b",
            "a_b",
            "a/b",
            "My Server (2)",
            "caf\xc3\xa9 ol\xc3\xa9",
            "\xe2\x82\xac 5",
            "\xf0\x9f\x98\x80",
            " ",
            "'\"<>&",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}; /* 64 */
        for (size_t i = 0; i < sizeof(good_names) / sizeof(good_names[0]); i++)
                if (!tilaa_name_ok(good_names[i]))
                        fail_msg("name '%s' refused", good_names[i]);
        /* 64 characters of 2 and of 4 bytes fit; 65 do not */
        static const char *const wide[] = {"\xc3\xa9", "\xf0\x9f\x98\x80"};
        for (size_t w = 0; w < 2; w++) {
                char s[4 * 65 + 1] = "";
                for (int i = 0; i < 64; i++)
                        strcat(s, wide[w]);
                assert_true(tilaa_name_ok(s));
                assert_true(strlen(s) <= TILAA_NAME_BYTES);
                strcat(s, "a");
                assert_false(tilaa_name_ok(s));
        }
        static const char *const bad_names[] = {
            "",
            "a\tb",
            "a\nb",
            "\x7f",
            "a\xc2\x85"
            "b",             /* U+0085, a C1 control */
            "a\xe2\x80\xa8", /* U+2028 */
            "\xff",
            "\xc3",                                                              /* cut short */
            "\xc0\x80",                                                          /* overlong */
            "\xed\xa0\x80",                                                      /* a surrogate */
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
        };
        for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++)
                if (tilaa_name_ok(bad_names[i]))
                        fail_msg("name '%s' accepted", bad_names[i]);
        /* the default dns_name's label */
        static const struct {
                const char *name, *label; /* NULL: none */
        } labels[] = {
            {"web1", "web1"},
            {"My Server (2)", "my-server-2"},
            {"  __a__--b..c  ", "a-b-c"},
            {"caf\xc3\xa9 ol\xc3\xa9", "caf-ol"},
            {"web-1.example", "web-1-example"},
            {"UPPER_case", "upper-case"},
            {"---", NULL},
            {"\xc3\xa9\xc3\xa9", NULL},
            {" ", NULL},
            {"", NULL},
            {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, /* 63: no '-' end */
            {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-b"}, /* just 63 */
        };
        for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
                char l[64] = "x";
                int r = tilaa_dns_label(labels[i].name, l);
                if (labels[i].label ? r != 0 || strcmp(l, labels[i].label) != 0 : r != -EINVAL)
                        fail_msg("label of '%s': %d '%s', want '%s'", labels[i].name, r, l,
                                 labels[i].label ? labels[i].label : "(none)");
                if (r == 0)
                        assert_int_equal(tilaa_dns_name(l, out), 0);
        }
        assert_false(tilaa_name_ok(NULL));

        assert_int_equal(tilaa_dns_name("MyServer.Tilaa.Cloud.", out), 0);
        assert_string_equal(out, "myserver.tilaa.cloud");
        assert_int_equal(tilaa_dns_name("a", out), 0);
        static const char *const bad_dns[] = {"",     ".",     "a..b", "-a.b", "a-.b",
                                              "a.-b", "a_b.c", "a b",  "a.b-", ".a"};
        for (size_t i = 0; i < sizeof(bad_dns) / sizeof(bad_dns[0]); i++)
                if (tilaa_dns_name(bad_dns[i], out) == 0)
                        fail_msg("dns name '%s' accepted", bad_dns[i]);
        char label[70];
        memset(label, 'a', 64);
        label[64] = '\0';
        assert_int_equal(tilaa_dns_name(label, out), -EINVAL);
        label[63] = '\0';
        assert_int_equal(tilaa_dns_name(label, out), 0);
        char longname[300];
        for (int i = 0; i < 64; i++)
                memcpy(longname + 4 * i, "abc.", 4);
        longname[253] = '\0'; /* 253 bytes: the most */
        longname[252] = 'x';
        assert_int_equal(tilaa_dns_name(longname, out), 0);
        longname[253] = 'x';
        longname[254] = '\0';
        assert_int_equal(tilaa_dns_name(longname, out), -EINVAL);

        assert_int_equal(tilaa_email("John.Doe+api@Example.COM", out), 0);
        assert_string_equal(out, "john.doe+api@example.com");
        static const char *const bad_mail[] = {"",        "a",         "@b.c",    "a@",
                                               "a@b",     "a@b.c@d.e", "a b@c.d", "a\"@b.c",
                                               "a@b_c.d", "a@.b.c",    "a@b.c."};
        for (size_t i = 0; i < sizeof(bad_mail) / sizeof(bad_mail[0]); i++)
                if (tilaa_email(bad_mail[i], out) == 0)
                        fail_msg("e-mail '%s' accepted", bad_mail[i]);
}

static void test_status(void **state)
{
        (void)state;
        static const struct {
                const char *native;
                int rescue;
                const char *tilaa;
                int locked;
        } cases[] = {
            {"provisioning", 0, "installing", 1},
            {"rebuilding", 0, "installing", 1},
            {"running", 0, "running", 0},
            {"running", 1, "rescue", 0},
            {"stopped", 0, "stopped", 0},
            {"starting", 0, "starting", 1},
            {"stopping", 0, "stopping", 1},
            {"rebooting", 0, "restarting", 1},
            {"resizing", 0, "resizing", 1},
            {"restoring", 0, "restoring", 1},
            {"snapshotting", 0, "snapshotting", 1},
            {"paused", 0, "paused", 0},
            {"error", 0, "error", 0},
            {"unknown", 0, "unknown", 0},
            {"nonsense", 0, "unknown", 0},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                assert_string_equal(tilaa_status(cases[i].native, cases[i].rescue), cases[i].tilaa);
                assert_int_equal(tilaa_locked(cases[i].native), cases[i].locked);
        }
}

static void test_basic(void **state)
{
        char e[64], p[64];
        (void)state;
        /* "email:password", "a@b.c:p:w" (a ':' in the password), "x:" */
        assert_int_equal(tilaa_basic("Basic ZW1haWw6cGFzc3dvcmQ=", e, sizeof(e), p, sizeof(p)), 0);
        assert_string_equal(e, "email");
        assert_string_equal(p, "password");
        assert_int_equal(tilaa_basic("basic YUBiLmM6cDp3", e, sizeof(e), p, sizeof(p)), 0);
        assert_string_equal(e, "a@b.c");
        assert_string_equal(p, "p:w");
        assert_int_equal(tilaa_basic("Basic eDo=", e, sizeof(e), p, sizeof(p)), 0);
        assert_string_equal(p, "");
        static const char *const bad[] = {
            NULL,
            "",
            "Bearer tas_x",
            "Basic",
            "Basic ",
            "Basic ZW1haWw", /* no ':' */
            "Basic ZW1haWw6cGFzc3dvcmQ",
            /* unpadded */ "Basic ZW1h*Ww6",
            "Basic =W1h",
            "Basic ZW=haWw6",
            "Basic YQBiOmM=", /* "a\0b:c" */
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (tilaa_basic(bad[i], e, sizeof(e), p, sizeof(p)) == 0)
                        fail_msg("credentials '%s' accepted", bad[i] ? bad[i] : "(null)");
        /* too long for the caller's buffers */
        assert_int_equal(tilaa_basic("Basic ZW1haWw6cGFzc3dvcmQ=", e, 5, p, sizeof(p)), -EINVAL);
        assert_int_equal(tilaa_basic("Basic ZW1haWw6cGFzc3dvcmQ=", e, sizeof(e), p, 8), -EINVAL);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_form_good), cmocka_unit_test(test_form_lenient),
            cmocka_unit_test(test_form_bad),  cmocka_unit_test(test_form_multipart),
            cmocka_unit_test(test_uint_flag), cmocka_unit_test(test_time),
            cmocka_unit_test(test_dates),     cmocka_unit_test(test_names),
            cmocka_unit_test(test_status),    cmocka_unit_test(test_basic),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
