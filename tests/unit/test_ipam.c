/* ipam: parsing, formatting, containment, overlap, first free address,
 * and the rules of a customer's private network, table-driven. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "ipam.h"

static void test_addr_parse_format(void **state)
{
        static const struct {
                const char *in, *out; /* out NULL: refused */
        } cases[] = {
                { "10.0.0.5", "10.0.0.5" },
                { "0.0.0.0", "0.0.0.0" },
                { "255.255.255.255", "255.255.255.255" },
                { "2001:db8::1", "2001:db8::1" },
                { "2001:DB8:0:0:0:0:0:1", "2001:db8::1" },
                { "::", "::" },
                { "10.0.0", NULL },
                { "10.0.0.0.1", NULL },
                { "10.0.0.256", NULL },
                { "10.0.0.01", NULL }, /* leading zero: octal to some parsers */
                { "10.0..1", NULL },
                { "10.0.0.1 ", NULL },
                { "+1.0.0.1", NULL },
                { "", NULL },
                { "2001:db8::g", NULL },
                { "1:2:3:4:5:6:7:8:9", NULL },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct ipam_addr a;
                char buf[IPAM_STR];
                int r = ipam_addr_parse(cases[i].in, &a);
                if (!cases[i].out) {
                        assert_int_equal(r, -EINVAL);
                        continue;
                }
                assert_int_equal(r, 0);
                ipam_addr_format(&a, buf, sizeof(buf));
                assert_string_equal(buf, cases[i].out);
        }
        assert_int_equal(ipam_addr_parse(NULL, &(struct ipam_addr){ 0 }), -EINVAL);
}

static void test_prefix_parse(void **state)
{
        static const struct {
                const char *in;
                int ok;
                const char *why; /* a part of the reason when refused */
        } cases[] = {
                { "10.0.0.0/24", 1, NULL },
                { "10.0.0.0/8", 1, NULL },
                { "0.0.0.0/0", 1, NULL },
                { "192.168.1.0/32", 1, NULL },
                { "2001:db8::/64", 1, NULL },
                { "10.0.0.1/24", 0, "host bits set (the network is 10.0.0.0/24)" },
                { "10.0.0.0/33", 0, "0 to 32" },
                { "10.0.0.0/024", 0, "0 to 32" },
                { "10.0.0.0/", 0, "0 to 32" },
                { "10.0.0.0", 0, "prefix length" },
                { "10.0.0.0/24/1", 0, "0 to 32" },
                { "2001:db8::1/64", 0, "host bits set (the network is 2001:db8::/64)" },
                { "2001:db8::/129", 0, "0 to 128" },
                { "nonsense/8", 0, "prefix length" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct ipam_prefix p;
                char why[128] = "", buf[IPAM_STR];
                int r = ipam_prefix_parse(cases[i].in, &p, why, sizeof(why));
                if (cases[i].ok) {
                        assert_int_equal(r, 0);
                        ipam_prefix_format(&p, buf, sizeof(buf));
                        assert_string_equal(buf, cases[i].in);
                } else {
                        assert_int_equal(r, -EINVAL);
                        if (!strstr(why, cases[i].why))
                                fail_msg("%s: '%s' lacks '%s'", cases[i].in, why, cases[i].why);
                }
        }
}

static struct ipam_prefix P(const char *s)
{
        struct ipam_prefix p;
        assert_int_equal(ipam_prefix_parse(s, &p, NULL, 0), 0);
        return p;
}

static struct ipam_addr A(const char *s)
{
        struct ipam_addr a;
        assert_int_equal(ipam_addr_parse(s, &a), 0);
        return a;
}

static void test_contains_overlap_last(void **state)
{
        static const struct {
                const char *a, *b;
                int overlap;
        } cases[] = {
                { "10.0.0.0/24", "10.0.0.0/24", 1 },  { "10.0.0.0/16", "10.0.5.0/24", 1 },
                { "10.0.5.0/24", "10.0.0.0/16", 1 },  { "10.0.0.0/24", "10.0.1.0/24", 0 },
                { "10.0.0.0/23", "10.0.1.0/24", 1 },  { "10.0.0.0/29", "10.0.0.8/29", 0 },
                { "172.16.0.0/12", "172.31.255.0/24", 1 }, { "172.16.0.0/12", "172.32.0.0/16", 0 },
                { "10.0.0.0/8", "2001:db8::/32", 0 }, { "2001:db8::/48", "2001:db8:0:1::/64", 1 },
        };
        char buf[IPAM_STR];
        struct ipam_addr last;
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct ipam_prefix a = P(cases[i].a), b = P(cases[i].b);
                if (ipam_prefix_overlap(&a, &b) != cases[i].overlap)
                        fail_msg("%s and %s: overlap should be %d", cases[i].a, cases[i].b,
                                 cases[i].overlap);
        }
        struct ipam_prefix p = P("10.0.0.0/24");
        assert_true(ipam_prefix_contains(&p, &(struct ipam_addr){ 0 }) == 0);
        struct ipam_addr in = A("10.0.0.255"), out = A("10.0.1.0"), v6 = A("::a00:5");
        assert_int_equal(ipam_prefix_contains(&p, &in), 1);
        assert_int_equal(ipam_prefix_contains(&p, &out), 0);
        assert_int_equal(ipam_prefix_contains(&p, &v6), 0);
        ipam_prefix_last(&p, &last);
        ipam_addr_format(&last, buf, sizeof(buf));
        assert_string_equal(buf, "10.0.0.255");
        p = P("2001:db8::/64");
        ipam_prefix_last(&p, &last);
        ipam_addr_format(&last, buf, sizeof(buf));
        assert_string_equal(buf, "2001:db8::ffff:ffff:ffff:ffff");
        struct ipam_addr x = A("10.0.0.2"), y = A("10.0.0.10");
        assert_true(ipam_addr_cmp(&x, &y) < 0);
        assert_true(ipam_addr_cmp(&y, &x) > 0);
        assert_true(ipam_addr_cmp(&x, &v6) < 0); /* IPv4 first */
}

/* The first free address: past skip, below the last, around exclude and
 * the used ones (in any order). */
static void test_first_free(void **state)
{
        static const struct {
                const char *prefix;
                unsigned skip;
                const char *exclude;
                const char *used[8];
                const char *want; /* NULL: -ENOSPC */
        } cases[] = {
                { "10.0.0.0/24", 2, NULL, { NULL }, "10.0.0.2" },
                { "10.0.0.0/24", 2, NULL, { "10.0.0.2", NULL }, "10.0.0.3" },
                { "10.0.0.0/24", 2, NULL, { "10.0.0.4", "10.0.0.2", NULL }, "10.0.0.3" },
                { "10.0.0.0/24", 2, NULL, { "10.0.0.3", "10.0.0.2", "10.0.0.5", NULL }, "10.0.0.4" },
                { "10.0.0.0/29", 2, NULL, { "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", NULL },
                  "10.0.0.6" },
                { "10.0.0.0/29", 2, NULL,
                  { "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", NULL }, NULL },
                { "203.0.113.0/24", 1, "203.0.113.1", { NULL }, "203.0.113.2" },
                { "203.0.113.0/24", 1, "203.0.113.3", { "203.0.113.1", "203.0.113.2", NULL },
                  "203.0.113.4" },
                { "203.0.113.0/30", 1, "203.0.113.1", { "203.0.113.2", NULL }, NULL },
                { "203.0.113.0/31", 1, NULL, { NULL }, NULL },
                { "10.0.0.0/24", 2, NULL, { "2001:db8::2", "10.9.9.9", NULL }, "10.0.0.2" },
                { "10.0.0.0/23", 2, NULL, { "10.0.0.254", NULL }, "10.0.0.2" },
                { "2001:db8::/64", 1, "2001:db8::1", { "2001:db8::2", NULL }, "2001:db8::3" },
                { "2001:db8::/126", 1, "2001:db8::1", { "2001:db8::2", NULL }, NULL },
                { "10.0.0.0/24", 300, NULL, { NULL }, NULL },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct ipam_prefix p = P(cases[i].prefix);
                struct ipam_addr used[8], ex, got;
                size_t n = 0;
                char buf[IPAM_STR];
                for (; cases[i].used[n]; n++)
                        used[n] = A(cases[i].used[n]);
                if (cases[i].exclude)
                        ex = A(cases[i].exclude);
                int r = ipam_first_free(&p, cases[i].skip, cases[i].exclude ? &ex : NULL, used, n,
                                        &got);
                if (!cases[i].want) {
                        if (r != -ENOSPC)
                                fail_msg("case %zu (%s): %d, want -ENOSPC", i, cases[i].prefix, r);
                        continue;
                }
                assert_int_equal(r, 0);
                ipam_addr_format(&got, buf, sizeof(buf));
                if (strcmp(buf, cases[i].want) != 0)
                        fail_msg("case %zu (%s): %s, want %s", i, cases[i].prefix, buf,
                                 cases[i].want);
        }
}

static void test_private_check(void **state)
{
        static const struct {
                const char *cidr;
                const char *why; /* NULL: accepted */
        } cases[] = {
                { "10.0.0.0/24", NULL },
                { "10.255.0.0/16", NULL },
                { "172.16.0.0/16", NULL },
                { "172.31.255.248/29", NULL },
                { "192.168.0.0/16", NULL },
                { "192.168.10.0/29", NULL },
                { "10.0.0.0/15", "prefix length must be /16 to /29" },
                { "10.0.0.0/30", "prefix length must be /16 to /29" },
                { "10.0.0.0/8", "prefix length must be /16 to /29" },
                { "172.32.0.0/16", "private range" },
                { "172.15.0.0/16", "private range" },
                { "192.169.0.0/24", "private range" },
                { "8.8.8.0/24", "private range" },
                { "10.0.0.1/24", "host bits set (the network is 10.0.0.0/24)" },
                { "10.0.0.0", "a.b.c.d/n" },
                { "10.0.0/24", "a.b.c.d/n" },
                { "fd00::/64", "a.b.c.d/n" },
                { "", "a.b.c.d/n" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct ipam_prefix p;
                char why[160] = "";
                int r = ipam_private_check(cases[i].cidr, &p, why, sizeof(why));
                if (!cases[i].why) {
                        if (r != 0)
                                fail_msg("%s refused: %s", cases[i].cidr, why);
                        continue;
                }
                assert_int_equal(r, -EINVAL);
                if (!strstr(why, cases[i].why))
                        fail_msg("%s: '%s' lacks '%s'", cases[i].cidr, why, cases[i].why);
                assert_true(strncmp(why, "cidr ", 5) == 0); /* names the field */
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_addr_parse_format),
                cmocka_unit_test(test_prefix_parse),
                cmocka_unit_test(test_contains_overlap_last),
                cmocka_unit_test(test_first_free),
                cmocka_unit_test(test_private_check),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
