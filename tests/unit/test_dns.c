/* dns: names, reverse names and zones, the plan (which rrsets the VMs
 * want), the server's answers, the diff (what is replaced, deleted, left
 * alone) and the PATCH body, table-driven; then dns_reconcile() against a
 * small fake of the PowerDNS zone API on loopback, for what a real server
 * does not do on demand: refusing one rrset of a batch, answers over the
 * size cap, stalls past the timeout, a wrong key. (test_pdns runs against
 * a real pdns_server.) */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "dns.h"
#include "http.h"
#include "util.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- names ---- */

static void test_fqdn_canon(void **state)
{
        static const struct {
                const char *in, *out; /* out NULL: refused */
        } cases[] = {
                { "web1.tasman.cloud", "web1.tasman.cloud." },
                { "web1.tasman.cloud.", "web1.tasman.cloud." },
                { "Web-1.Tasman.CLOUD", "web-1.tasman.cloud." },
                { "a", "a." },
                { "1.2.3", "1.2.3." },
                { "", NULL },
                { ".", NULL },
                { "web1..tasman.cloud", NULL },
                { ".web1.tasman.cloud", NULL },
                { "web1.tasman.cloud..", NULL },
                { "-web.tasman.cloud", NULL },
                { "web-.tasman.cloud", NULL },
                { "web.tasman-", NULL },
                { "web_1.tasman.cloud", NULL },
                { "web 1.tasman.cloud", NULL },
                { "wéb.tasman.cloud", NULL },
                { "x\n.tasman.cloud", NULL },
        };
        char out[DNS_NAME_MAX];
        (void)state;
        for (size_t i = 0; i < N(cases); i++) {
                int r = dns_fqdn_canon(cases[i].in, out);
                if (!cases[i].out) {
                        assert_int_equal(r, -EINVAL);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_string_equal(out, cases[i].out);
        }
        /* labels of 63, names of 253 characters; one more is refused */
        char name[300];
        memset(name, 'a', 63);
        strcpy(name + 63, ".cloud");
        assert_int_equal(dns_fqdn_canon(name, out), 0);
        memset(name, 'a', 64);
        strcpy(name + 64, ".cloud");
        assert_int_equal(dns_fqdn_canon(name, out), -EINVAL);
        for (int k = 0; k < 4; k++) { /* 4 x 63 + 3 dots = 255 */
                memset(name + 64 * k, 'b', 63);
                name[64 * k + 63] = '.';
        }
        name[253] = '\0'; /* 253 characters, the last label cut to 61 */
        assert_int_equal(dns_fqdn_canon(name, out), 0);
        assert_int_equal(strlen(out), 254);
        name[253] = 'b';
        name[254] = '\0';
        assert_int_equal(dns_fqdn_canon(name, out), -EINVAL);
        assert_int_equal(dns_fqdn_canon(NULL, out), -EINVAL);
}

static void test_name_in_zone(void **state)
{
        static const struct {
                const char *name, *zone;
                int in;
        } cases[] = {
                { "web1.tasman.cloud.", "tasman.cloud.", 1 },
                { "tasman.cloud.", "tasman.cloud.", 1 },
                { "a.b.tasman.cloud.", "tasman.cloud.", 1 },
                { "webtasman.cloud.", "tasman.cloud.", 0 },
                { "web1.tasman.cloud.", "cloud.", 1 },
                { "cloud.", "tasman.cloud.", 0 },
                { "web1.other.cloud.", "tasman.cloud.", 0 },
                { "web1.tasman.cloud.", ".", 1 },
        };
        (void)state;
        for (size_t i = 0; i < N(cases); i++)
                assert_int_equal(dns_name_in_zone(cases[i].name, cases[i].zone), cases[i].in);
}

static void test_ptr_name(void **state)
{
        static const struct {
                const char *addr, *ptr; /* ptr NULL: refused */
        } cases[] = {
                { "203.0.113.2", "2.113.0.203.in-addr.arpa." },
                { "0.0.0.0", "0.0.0.0.in-addr.arpa." },
                { "255.255.255.255", "255.255.255.255.in-addr.arpa." },
                { "2001:db8:5::2",
                  "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa." },
                { "2001:DB8::1",
                  "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa." },
                { "ffff::abcd",
                  "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.f.f.f.f.ip6.arpa." },
                { "::", "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa." },
                { "203.0.113.2/32", NULL },
                { "203.0.113", NULL },
                { "", NULL },
                { "web1", NULL },
        };
        char out[DNS_NAME_MAX];
        (void)state;
        for (size_t i = 0; i < N(cases); i++) {
                int r = dns_ptr_name(cases[i].addr, out);
                if (!cases[i].ptr) {
                        assert_int_equal(r, -EINVAL);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_string_equal(out, cases[i].ptr);
        }
}

static void test_reverse_prefix(void **state)
{
        static const struct {
                const char *zone, *prefix; /* prefix NULL: not a reverse zone we read */
        } cases[] = {
                { "113.0.203.in-addr.arpa.", "203.0.113.0/24" },
                { "113.0.203.in-addr.arpa", "203.0.113.0/24" },
                { "0.203.IN-ADDR.ARPA.", "203.0.0.0/16" },
                { "10.in-addr.arpa.", "10.0.0.0/8" },
                { "2.113.0.203.in-addr.arpa.", "203.0.113.2/32" },
                { "in-addr.arpa.", "0.0.0.0/0" },
                { "5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "2001:db8:5::/48" },
                { "8.b.d.0.1.0.0.2.ip6.arpa.", "2001:db8::/32" },
                { "1.0.0.2.ip6.arpa.", "2001::/16" },
                { "2.ip6.arpa.", "2000::/4" },
                { "0/26.113.0.203.in-addr.arpa.", NULL }, /* classless delegation */
                { "256.0.203.in-addr.arpa.", NULL },
                { "013.0.203.in-addr.arpa.", NULL },
                { "1.2.3.4.5.in-addr.arpa.", NULL },
                { "ab.8.b.d.0.1.0.0.2.ip6.arpa.", NULL },
                { "g.ip6.arpa.", NULL },
                { "tasman.cloud.", NULL },
                { "xin-addr.arpa.", NULL },
        };
        (void)state;
        for (size_t i = 0; i < N(cases); i++) {
                struct ipam_prefix p;
                char buf[IPAM_STR];
                int r = dns_reverse_prefix(cases[i].zone, &p);
                if (!cases[i].prefix) {
                        assert_int_equal(r, -EINVAL);
                        continue;
                }
                assert_int_equal(r, 0);
                ipam_prefix_format(&p, buf, sizeof(buf));
                assert_string_equal(buf, cases[i].prefix);
        }
}

static void test_zone_for(void **state)
{
        static const struct dns_zone zones[] = {
                { "tasman.cloud.", "tasman.cloud." },
                { "eu.tasman.cloud.", "eu.tasman.cloud." },
                { "113.0.203.in-addr.arpa.", "113.0.203.in-addr.arpa." },
                { "203.in-addr.arpa.", "203.in-addr.arpa." },
        };
        static const struct {
                const char *name;
                long zone;
        } cases[] = {
                { "web1.tasman.cloud.", 0 },
                { "tasman.cloud.", 0 },
                { "web1.eu.tasman.cloud.", 1 },
                { "web1.us.tasman.cloud.", 0 },
                { "2.113.0.203.in-addr.arpa.", 2 },
                { "2.114.0.203.in-addr.arpa.", 3 },
                { "2.113.0.204.in-addr.arpa.", -1 },
                { "web1.other.cloud.", -1 },
        };
        (void)state;
        for (size_t i = 0; i < N(cases); i++)
                assert_int_equal(dns_zone_for(cases[i].name, zones, N(zones)), cases[i].zone);
        assert_int_equal(dns_zone_for("web1.tasman.cloud.", zones, 0), -1);
}

/* ---- the plan ---- */

/* "name TYPE ttl content vmID" lines, one per rrset, in the plan's order */
static void render_rrsets(const struct dns_rrset *r, size_t n, char *buf, size_t len)
{
        size_t off = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n && off < len; i++)
                off += (size_t)snprintf(buf + off, len - off, "%s %s %u %s vm%llu\n", r[i].name,
                                        dns_type_to_string(r[i].type), r[i].ttl, r[i].content,
                                        (unsigned long long)r[i].vm_id);
}

static void test_plan(void **state)
{
        static const struct {
                const char *what;
                const char *zone;
                struct vm_dns vms[4];
                size_t n;
                const char *want;
                size_t bad, dup;
        } cases[] = {
                { "no VMs", "tasman.cloud", { { 0 } }, 0, "", 0, 0 },
                { "in the zone: A, AAAA and both PTRs",
                  "tasman.cloud",
                  { { 7, "web1.tasman.cloud", "203.0.113.2", "2001:db8:5::2" } },
                  1,
                  "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR "
                  "300 web1.tasman.cloud. vm7\n"
                  "2.113.0.203.in-addr.arpa. PTR 300 web1.tasman.cloud. vm7\n"
                  "web1.tasman.cloud. A 300 203.0.113.2 vm7\n"
                  "web1.tasman.cloud. AAAA 300 2001:db8:5::2 vm7\n",
                  0, 0 },
                { "outside the zone: only PTRs",
                  "tasman.cloud",
                  { { 7, "shop.example.com", "203.0.113.2", "" } },
                  1,
                  "2.113.0.203.in-addr.arpa. PTR 300 shop.example.com. vm7\n",
                  0, 0 },
                { "a zone with its trailing dot, names in capitals, IPv6 in long form",
                  "Tasman.Cloud.",
                  { { 3, "DB.Tasman.Cloud.", "", "2001:0DB8:0005:0000:0000:0000:0000:0010" } },
                  1,
                  "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR "
                  "300 db.tasman.cloud. vm3\n"
                  "db.tasman.cloud. AAAA 300 2001:db8:5::10 vm3\n",
                  0, 0 },
                { "a deeper name in the zone",
                  "tasman.cloud",
                  { { 1, "a.eu.tasman.cloud", "203.0.113.9", "" } },
                  1,
                  "9.113.0.203.in-addr.arpa. PTR 300 a.eu.tasman.cloud. vm1\n"
                  "a.eu.tasman.cloud. A 300 203.0.113.9 vm1\n",
                  0, 0 },
                { "a name like the zone's but outside it",
                  "tasman.cloud",
                  { { 1, "xtasman.cloud", "203.0.113.9", "" } },
                  1,
                  "9.113.0.203.in-addr.arpa. PTR 300 xtasman.cloud. vm1\n",
                  0, 0 },
                { "no public addresses: nothing",
                  "tasman.cloud",
                  { { 1, "web1.tasman.cloud", "", "" } },
                  1, "", 0, 0 },
                { "a bad name: nothing for it, the others go on",
                  "tasman.cloud",
                  { { 1, "we_b.tasman.cloud", "203.0.113.2", "" },
                    { 2, "ok.tasman.cloud", "203.0.113.3", "" } },
                  2,
                  "3.113.0.203.in-addr.arpa. PTR 300 ok.tasman.cloud. vm2\n"
                  "ok.tasman.cloud. A 300 203.0.113.3 vm2\n",
                  1, 0 },
                { "bad addresses and addresses of the wrong family are skipped",
                  "tasman.cloud",
                  { { 1, "web1.tasman.cloud", "2001:db8::1", "203.0.113.2" },
                    { 2, "web2.tasman.cloud", "203.0.113.300", "nonsense" } },
                  2, "", 0, 0 },
                { "one fqdn, two VMs: the lower id has the A/AAAA, each its PTRs",
                  "tasman.cloud",
                  { { 9, "web.tasman.cloud", "203.0.113.9", "" },
                    { 4, "WEB.tasman.cloud", "203.0.113.4", "2001:db8:5::4" } },
                  2,
                  "4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR "
                  "300 web.tasman.cloud. vm4\n"
                  "4.113.0.203.in-addr.arpa. PTR 300 web.tasman.cloud. vm4\n"
                  "9.113.0.203.in-addr.arpa. PTR 300 web.tasman.cloud. vm9\n"
                  "web.tasman.cloud. A 300 203.0.113.4 vm4\n"
                  "web.tasman.cloud. AAAA 300 2001:db8:5::4 vm4\n",
                  0, 1 },
                { "one address, two VMs (never so handed out): the lower id's",
                  "tasman.cloud",
                  { { 2, "b.example.com", "203.0.113.5", "" },
                    { 1, "a.example.com", "203.0.113.5", "" } },
                  2,
                  "5.113.0.203.in-addr.arpa. PTR 300 a.example.com. vm1\n",
                  0, 0 },
        };
        char got[4096];
        (void)state;
        for (size_t i = 0; i < N(cases); i++) {
                struct dns_rrset *rr = NULL;
                size_t n = 99;
                struct dns_plan_stats st = { 9, 9 };
                print_message("plan: %s\n", cases[i].what);
                assert_int_equal(dns_plan(cases[i].zone, 0, cases[i].vms, cases[i].n, &rr, &n, &st),
                                 0);
                render_rrsets(rr, n, got, sizeof(got));
                assert_string_equal(got, cases[i].want);
                assert_int_equal(st.bad_names, cases[i].bad);
                assert_int_equal(st.dup_names, cases[i].dup);
                for (size_t k = 0; k < n; k++)
                        assert_int_equal(rr[k].n_records, 1);
                free(rr);
        }
}

static void test_plan_ttl_and_bad_zone(void **state)
{
        struct vm_dns vm = { 1, "web1.tasman.cloud", "203.0.113.2", "" };
        struct dns_rrset *rr = NULL;
        size_t n = 0;
        (void)state;
        assert_int_equal(dns_plan("tasman.cloud", 60, &vm, 1, &rr, &n, NULL), 0);
        assert_int_equal(n, 2);
        assert_int_equal(rr[0].ttl, 60);
        assert_int_equal(rr[1].ttl, 60);
        free(rr);
        rr = NULL;
        assert_int_equal(dns_plan("", 60, &vm, 1, &rr, &n, NULL), -EINVAL);
        assert_int_equal(dns_plan("bad zone", 60, &vm, 1, &rr, &n, NULL), -EINVAL);
        assert_int_equal(dns_plan(NULL, 60, &vm, 1, &rr, &n, NULL), -EINVAL);
        assert_null(rr);
}

/* ---- the server's answers ---- */

/* A zone as PowerDNS 4.7 answers GET .../zones/ZONE (shortened). */
static const char zone_json[] =
        "{\"id\": \"tasman.cloud.\", \"name\": \"tasman.cloud.\", \"kind\": \"Native\","
        " \"serial\": 2026120602, \"rrsets\": ["
        "{\"comments\": [], \"name\": \"tasman.cloud.\", \"records\": [{\"content\":"
        " \"a.misconfigured.dns.server.invalid. hostmaster.tasman.cloud. 1 10800 3600 604800"
        " 3600\", \"disabled\": false}], \"ttl\": 3600, \"type\": \"SOA\"},"
        "{\"comments\": [], \"name\": \"tasman.cloud.\", \"records\": [{\"content\":"
        " \"ns1.tasman.cloud.\", \"disabled\": false}], \"ttl\": 3600, \"type\": \"NS\"},"
        "{\"comments\": [{\"account\": \"tasman\", \"content\": \"tasman\", \"modified_at\": 1}],"
        " \"name\": \"Web1.tasman.cloud.\", \"records\": [{\"content\": \"203.0.113.2\","
        " \"disabled\": false}], \"ttl\": 300, \"type\": \"A\"},"
        "{\"comments\": [{\"account\": \"tasman\", \"content\": \"tasman\", \"modified_at\": 1}],"
        " \"name\": \"web1.tasman.cloud.\", \"records\": [{\"content\": \"2001:DB8:5:0::2\","
        " \"disabled\": false}], \"ttl\": 300, \"type\": \"AAAA\"},"
        "{\"comments\": [], \"name\": \"www.tasman.cloud.\", \"records\": [{\"content\":"
        " \"192.0.2.80\", \"disabled\": false}, {\"content\": \"192.0.2.81\", \"disabled\":"
        " false}], \"ttl\": 600, \"type\": \"A\"},"
        "{\"comments\": [{\"account\": \"admin\", \"content\": \"by hand\"}], \"name\":"
        " \"old.tasman.cloud.\", \"records\": [{\"content\": \"192.0.2.7\", \"disabled\": true}],"
        " \"ttl\": 300, \"type\": \"A\"},"
        "{\"comments\": [{\"account\": \"tasman\", \"content\": \"tasman\"}], \"name\":"
        " \"x.tasman.cloud.\", \"records\": [{\"content\": \"Target.Example.COM.\","
        " \"disabled\": false}], \"ttl\": 300, \"type\": \"PTR\"},"
        "{\"comments\": [{\"account\": \"tasman\", \"content\": \"tasman\"}], \"name\":"
        " \"t.tasman.cloud.\", \"records\": [{\"content\": \"\\\"tasman\\\"\", \"disabled\":"
        " false}], \"ttl\": 300, \"type\": \"TXT\"}"
        "]}";

static void test_parse_rrsets(void **state)
{
        struct dns_rrset *rr = NULL;
        size_t n = 0;
        char got[2048];
        (void)state;
        assert_int_equal(dns_parse_rrsets(zone_json, strlen(zone_json), &rr, &n), 0);
        /* name TYPE ttl content vm0, then records and owned */
        render_rrsets(rr, n, got, sizeof(got));
        assert_string_equal(got, "web1.tasman.cloud. A 300 203.0.113.2 vm0\n"
                                 "web1.tasman.cloud. AAAA 300 2001:db8:5::2 vm0\n"
                                 "www.tasman.cloud. A 600  vm0\n"
                                 "old.tasman.cloud. A 300  vm0\n"
                                 "x.tasman.cloud. PTR 300 target.example.com. vm0\n");
        static const struct {
                uint32_t records;
                int owned;
        } want[] = { { 1, 1 }, { 1, 1 }, { 2, 0 }, { 1, 0 }, { 1, 1 } };
        assert_int_equal(n, N(want));
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(rr[i].n_records, want[i].records);
                assert_int_equal(rr[i].owned, want[i].owned);
        }
        free(rr);

        static const char *const bad[] = { "", "[]", "{}", "{\"rrsets\": 5}", "{\"rrsets\": [",
                                           "null" };
        for (size_t i = 0; i < N(bad); i++)
                assert_int_equal(dns_parse_rrsets(bad[i], strlen(bad[i]), &rr, &n), -EPROTO);
        /* entries that are not rrsets are skipped */
        static const char odd[] = "{\"rrsets\": [5, {\"name\": 3, \"type\": \"A\"}, {\"name\":"
                                  " \"a.\", \"type\": \"A\", \"ttl\": -5, \"records\": 7}]}";
        assert_int_equal(dns_parse_rrsets(odd, strlen(odd), &rr, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(rr[0].name, "a.");
        assert_int_equal(rr[0].ttl, 0);
        assert_int_equal(rr[0].n_records, 0);
        free(rr);
}

/* Every cut and every byte changed of a real answer: a result or
 * -EPROTO, never a crash (the sanitizer build checks the memory). */
static void test_parse_mangled(void **state)
{
        size_t len = strlen(zone_json);
        char *buf = malloc(len + 1);
        static const char flips[] = { '"', '{', '}', '[', ']', ',', ':', '\\', '0', 'x', '\0' };
        (void)state;
        assert_non_null(buf);
        for (size_t cut = 0; cut <= len; cut++) {
                struct dns_rrset *rr = NULL;
                size_t n = 0;
                int r = dns_parse_rrsets(zone_json, cut, &rr, &n);
                assert_true(r == 0 || r == -EPROTO);
                assert_true(r == 0 || cut < len);
                free(rr);
        }
        for (size_t i = 0; i < len; i++) {
                for (size_t f = 0; f < sizeof(flips); f++) {
                        struct dns_rrset *rr = NULL;
                        struct dns_zone *z = NULL;
                        size_t n = 0;
                        memcpy(buf, zone_json, len + 1);
                        buf[i] = flips[f];
                        int r = dns_parse_rrsets(buf, len, &rr, &n);
                        assert_true(r == 0 || r == -EPROTO);
                        for (size_t k = 0; r == 0 && k < n; k++) {
                                assert_true(strlen(rr[k].name) < DNS_NAME_MAX);
                                assert_int_equal(rr[k].name[strlen(rr[k].name) - 1], '.');
                        }
                        free(rr);
                        r = dns_parse_zones(buf, len, &z, &n);
                        assert_true(r == 0 || r == -EPROTO);
                        free(z);
                }
        }
        free(buf);
}

static void test_parse_zones(void **state)
{
        static const char list[] =
                "[{\"id\": \"tasman.cloud.\", \"name\": \"tasman.cloud.\", \"kind\": \"Native\"},"
                " {\"id\": \"113.0.203.in-addr.arpa.\", \"name\": \"113.0.203.IN-ADDR.arpa.\"},"
                " {\"id\": \"0=2F26.113.0.203.in-addr.arpa.\", \"name\":"
                " \"0/26.113.0.203.in-addr.arpa.\"},"
                " {\"id\": \"bad/id.\", \"name\": \"bad.\"},"
                " {\"name\": \"noid.example.\"}, {\"id\": \"x.\"}, 7]";
        struct dns_zone *z = NULL;
        size_t n = 0;
        (void)state;
        assert_int_equal(dns_parse_zones(list, strlen(list), &z, &n), 0);
        assert_int_equal(n, 4);
        assert_string_equal(z[0].name, "tasman.cloud.");
        assert_string_equal(z[1].name, "113.0.203.in-addr.arpa.");
        assert_string_equal(z[1].id, "113.0.203.in-addr.arpa.");
        assert_string_equal(z[2].id, "0=2F26.113.0.203.in-addr.arpa.");
        assert_string_equal(z[3].name, "noid.example.");
        assert_string_equal(z[3].id, "noid.example.");
        free(z);
        assert_int_equal(dns_parse_zones("{}", 2, &z, &n), -EPROTO);
        assert_int_equal(dns_parse_zones("[", 1, &z, &n), -EPROTO);
        assert_int_equal(dns_parse_zones("[]", 2, &z, &n), 0);
        assert_int_equal(n, 0);
        free(z);
}

/* ---- the diff ---- */

struct rr_row {
        const char *name;
        enum dns_type type;
        uint32_t ttl, records;
        const char *content;
        int owned;
};

static size_t load(const struct rr_row *rows, struct dns_rrset *out)
{
        size_t n = 0;
        for (; rows[n].name; n++) {
                memset(&out[n], 0, sizeof(out[n]));
                strcpy(out[n].name, rows[n].name);
                out[n].type = rows[n].type;
                out[n].ttl = rows[n].ttl;
                out[n].n_records = rows[n].records;
                strcpy(out[n].content, rows[n].content);
                out[n].owned = rows[n].owned;
        }
        return n;
}

static const char *const op_names[] = { "REPLACE", "DELETE", "CONFLICT" };

static void test_diff(void **state)
{
#define A DNS_TYPE_A
#define AAAA DNS_TYPE_AAAA
#define PTR DNS_TYPE_PTR
        static const struct {
                const char *what;
                struct rr_row want[6], have[6];
                const char *changes;
        } cases[] = {
                { "nothing wanted, nothing there", { { 0 } }, { { 0 } }, "" },
                { "new rrsets are made",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 }, { "a.z.", AAAA, 300, 1, "2001:db8::1", 0 } },
                  { { 0 } },
                  "REPLACE a.z. A 192.0.2.1\nREPLACE a.z. AAAA 2001:db8::1\n" },
                { "in step: nothing",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 } },
                  { { "a.z.", A, 300, 1, "192.0.2.1", 1 } },
                  "" },
                { "ours with other content, TTL, records: replaced",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 }, { "b.z.", A, 300, 1, "192.0.2.2", 0 },
                    { "c.z.", A, 300, 1, "192.0.2.3", 0 }, { "d.z.", A, 300, 1, "192.0.2.4", 0 } },
                  { { "a.z.", A, 300, 1, "192.0.2.9", 1 }, { "b.z.", A, 60, 1, "192.0.2.2", 1 },
                    { "c.z.", A, 300, 2, "", 1 }, { "d.z.", A, 300, 1, "", 1 } },
                  "REPLACE a.z. A 192.0.2.1\nREPLACE b.z. A 192.0.2.2\nREPLACE c.z. A 192.0.2.3\n"
                  "REPLACE d.z. A 192.0.2.4\n" },
                { "ours no longer wanted: deleted; an admin's: left",
                  { { 0 } },
                  { { "a.z.", A, 300, 1, "192.0.2.1", 1 }, { "b.z.", A, 300, 1, "192.0.2.2", 0 },
                    { "1.2.0.192.in-addr.arpa.", PTR, 300, 1, "a.z.", 1 } },
                  "DELETE 1.2.0.192.in-addr.arpa. PTR a.z.\nDELETE a.z. A 192.0.2.1\n" },
                { "an admin's rrset of the wanted name and type: a conflict, left",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 }, { "a.z.", AAAA, 300, 1, "2001:db8::1", 0 } },
                  { { "a.z.", A, 600, 1, "192.0.2.99", 0 } },
                  "CONFLICT a.z. A 192.0.2.1\nREPLACE a.z. AAAA 2001:db8::1\n" },
                { "an admin's rrset in step with what is wanted: still the admin's",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 } },
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 } },
                  "CONFLICT a.z. A 192.0.2.1\n" },
                { "other names and types beside ours are not looked at",
                  { { "a.z.", A, 300, 1, "192.0.2.1", 0 } },
                  { { "a.z.", AAAA, 300, 1, "2001:db8::5", 0 }, { "b.z.", A, 300, 1, "192.0.2.1", 0 },
                    { "a.z.", A, 300, 1, "192.0.2.1", 1 } },
                  "" },
                { "everything at once, in name and type order, deletions last",
                  { { "c.z.", A, 300, 1, "192.0.2.3", 0 }, { "a.z.", A, 300, 1, "192.0.2.1", 0 },
                    { "b.z.", A, 300, 1, "192.0.2.2", 0 } },
                  { { "x.z.", A, 300, 1, "192.0.2.8", 1 }, { "b.z.", A, 300, 1, "192.0.2.2", 0 },
                    { "c.z.", A, 300, 1, "192.0.2.3", 1 }, { "d.z.", AAAA, 300, 1, "2001:db8::8", 1 },
                    { "w.z.", A, 300, 1, "192.0.2.7", 0 } },
                  "REPLACE a.z. A 192.0.2.1\nCONFLICT b.z. A 192.0.2.2\nDELETE d.z. AAAA 2001:db8::8\n"
                  "DELETE x.z. A 192.0.2.8\n" },
        };
        (void)state;
        for (size_t i = 0; i < N(cases); i++) {
                struct dns_rrset want[6], have[6];
                struct dns_change *ch = NULL;
                size_t nw = load(cases[i].want, want), nh = load(cases[i].have, have), n = 99;
                char got[2048] = "";
                size_t off = 0;
                print_message("diff: %s\n", cases[i].what);
                assert_int_equal(dns_diff(want, nw, have, nh, &ch, &n), 0);
                for (size_t k = 0; k < n; k++)
                        off += (size_t)snprintf(got + off, sizeof(got) - off, "%s %s %s %s\n",
                                                op_names[ch[k].op], ch[k].rr.name,
                                                dns_type_to_string(ch[k].rr.type),
                                                ch[k].rr.content);
                assert_string_equal(got, cases[i].changes);
                free(ch);
        }
#undef A
#undef AAAA
#undef PTR
}

/* The plan of the VMs against a zone as the server answers it. */
static void test_plan_against_zone(void **state)
{
        struct vm_dns vms[] = {
                { 1, "web1.tasman.cloud", "203.0.113.2", "2001:db8:5::2" },
                { 2, "www.tasman.cloud", "203.0.113.3", "" },
        };
        struct dns_rrset *want = NULL, *have = NULL, fwd[8];
        struct dns_change *ch = NULL;
        size_t n_want = 0, n_have = 0, n_fwd = 0, n = 0;
        char got[1024] = "";
        size_t off = 0;
        (void)state;
        assert_int_equal(dns_plan("tasman.cloud", 300, vms, N(vms), &want, &n_want, NULL), 0);
        for (size_t i = 0; i < n_want; i++)
                if (dns_name_in_zone(want[i].name, "tasman.cloud."))
                        fwd[n_fwd++] = want[i];
        assert_int_equal(n_fwd, 3);
        assert_int_equal(dns_parse_rrsets(zone_json, strlen(zone_json), &have, &n_have), 0);
        assert_int_equal(dns_diff(fwd, n_fwd, have, n_have, &ch, &n), 0);
        for (size_t k = 0; k < n; k++)
                off += (size_t)snprintf(got + off, sizeof(got) - off, "%s %s %s\n",
                                        op_names[ch[k].op], ch[k].rr.name,
                                        dns_type_to_string(ch[k].rr.type));
        /* web1's A (case) and AAAA (long form) are in step; www's A is an
         * admin's; our PTR x.tasman.cloud. goes; the TXT and SOA/NS are not
         * looked at */
        assert_string_equal(got, "CONFLICT www.tasman.cloud. A\nDELETE x.tasman.cloud. PTR\n");
        free(want);
        free(have);
        free(ch);
}

static void test_patch_body(void **state)
{
        struct dns_change ch[3];
        memset(ch, 0, sizeof(ch));
        ch[0].op = DNS_OP_REPLACE;
        strcpy(ch[0].rr.name, "web1.tasman.cloud.");
        ch[0].rr.type = DNS_TYPE_A;
        ch[0].rr.ttl = 300;
        strcpy(ch[0].rr.content, "203.0.113.2");
        ch[1].op = DNS_OP_CONFLICT;
        strcpy(ch[1].rr.name, "www.tasman.cloud.");
        ch[2].op = DNS_OP_DELETE;
        strcpy(ch[2].rr.name, "2.113.0.203.in-addr.arpa.");
        ch[2].rr.type = DNS_TYPE_PTR;
        (void)state;
        char *body = dns_patch_body(ch, 3);
        assert_non_null(body);
        /* compared as JSON: key order is jansson's */
        json_t *got = json_loads(body, 0, NULL);
        json_t *want = json_loads(
                "{\"rrsets\": [{\"name\": \"web1.tasman.cloud.\", \"type\": \"A\", \"changetype\":"
                " \"REPLACE\", \"ttl\": 300, \"records\": [{\"content\": \"203.0.113.2\","
                " \"disabled\": false}], \"comments\": [{\"content\": \"tasman\", \"account\":"
                " \"tasman\"}]}, {\"name\": \"2.113.0.203.in-addr.arpa.\", \"type\": \"PTR\","
                " \"changetype\": \"DELETE\"}]}",
                0, NULL);
        assert_non_null(got);
        assert_non_null(want);
        assert_true(json_equal(got, want));
        json_decref(got);
        json_decref(want);
        free(body);
        body = dns_patch_body(ch, 0);
        assert_string_equal(body, "{\"rrsets\":[]}");
        free(body);
}

/* ---- dns_reconcile() against a fake of the zone API ---- */

#define FAKE_RRSETS 64
struct fake_rr {
        char zone[DNS_NAME_MAX], name[DNS_NAME_MAX], type[8], content[DNS_NAME_MAX];
        int owned;
};

static struct fake {
        pthread_mutex_t lock;
        struct fake_rr rr[FAKE_RRSETS];
        size_t n;
        const char *zones[4];
        int patches, gets;
        const char *refuse; /* a name whose REPLACE is answered 422 */
        int pad;            /* pad the zone list to this many bytes */
        int stall_ms;       /* before answering */
        char last_patch[8192];
} fk = { .lock = PTHREAD_MUTEX_INITIALIZER };

static char *zone_answer(const char *zone)
{
        json_t *sets = json_array();
        for (size_t i = 0; i < fk.n; i++) {
                if (strcmp(fk.rr[i].zone, zone) != 0)
                        continue;
                json_t *c = fk.rr[i].owned ? json_pack("[{s:s, s:s}]", "account", "tasman",
                                                       "content", "tasman")
                                           : json_array();
                json_array_append_new(sets, json_pack("{s:s, s:s, s:i, s:[{s:s, s:b}], s:o}",
                                                      "name", fk.rr[i].name, "type",
                                                      fk.rr[i].type, "ttl", 300, "records",
                                                      "content", fk.rr[i].content, "disabled",
                                                      0, "comments", c));
        }
        json_t *root = json_pack("{s:s, s:s, s:o}", "id", zone, "name", zone, "rrsets", sets);
        char *s = json_dumps(root, 0);
        json_decref(root);
        return s;
}

static int fake_patch(const char *zone, const char *body)
{
        json_t *root = json_loads(body, 0, NULL), *v;
        json_t *sets = json_object_get(root, "rrsets");
        size_t i;
        int code = 204;
        json_array_foreach(sets, i, v)
        {
                const char *name = json_string_value(json_object_get(v, "name"));
                if (fk.refuse && (strcmp(name, fk.refuse) == 0 || strcmp(fk.refuse, "*") == 0))
                        code = 422; /* all or nothing, as PowerDNS */
        }
        json_array_foreach(sets, i, v)
        {
                if (code != 204)
                        break;
                const char *name = json_string_value(json_object_get(v, "name"));
                const char *type = json_string_value(json_object_get(v, "type"));
                const char *ct = json_string_value(json_object_get(v, "changetype"));
                size_t k;
                for (k = 0; k < fk.n; k++)
                        if (strcmp(fk.rr[k].zone, zone) == 0 && strcmp(fk.rr[k].name, name) == 0 &&
                            strcmp(fk.rr[k].type, type) == 0)
                                break;
                if (strcmp(ct, "DELETE") == 0) {
                        if (k < fk.n)
                                fk.rr[k] = fk.rr[--fk.n];
                        continue;
                }
                if (k == fk.n)
                        fk.n++;
                assert_true(fk.n <= FAKE_RRSETS);
                struct fake_rr *r = &fk.rr[k];
                strcpy(r->zone, zone);
                strcpy(r->name, name);
                strcpy(r->type, type);
                strcpy(r->content, json_string_value(json_object_get(
                                           json_array_get(json_object_get(v, "records"), 0),
                                           "content")));
                r->owned = strcmp(json_string_value(json_object_get(
                                          json_array_get(json_object_get(v, "comments"), 0),
                                          "account")),
                                  "tasman") == 0;
        }
        json_decref(root);
        return code;
}

static void fake_handle(void *ud, const struct http_req *req, struct http_resp *resp)
{
        static const char prefix[] = "/api/v1/servers/localhost/zones";
        const char *key = http_req_header(req, "X-API-Key");
        (void)ud;
        pthread_mutex_lock(&fk.lock);
        int stall = fk.stall_ms;
        pthread_mutex_unlock(&fk.lock);
        if (stall)
                usleep((useconds_t)stall * 1000);
        pthread_mutex_lock(&fk.lock);
        resp->content_type = "application/json";
        if (!key || strcmp(key, "k") != 0) {
                resp->status = 401;
                resp->body = strdup("Unauthorized");
        } else if (strcmp(req->path, prefix) == 0 && strcmp(req->method, "GET") == 0) {
                json_t *a = json_array();
                for (size_t i = 0; i < N(fk.zones) && fk.zones[i]; i++)
                        json_array_append_new(a, json_pack("{s:s, s:s}", "id", fk.zones[i],
                                                           "name", fk.zones[i]));
                if (fk.pad) {
                        char *pad = malloc((size_t)fk.pad + 1);
                        memset(pad, 'x', (size_t)fk.pad);
                        pad[fk.pad] = '\0';
                        json_array_append_new(a, json_pack("{s:s}", "pad", pad));
                        free(pad);
                }
                resp->body = json_dumps(a, 0);
                json_decref(a);
                resp->status = 200;
        } else if (strncmp(req->path, prefix, sizeof(prefix) - 1) == 0 &&
                   req->path[sizeof(prefix) - 1] == '/') {
                const char *zone = req->path + sizeof(prefix);
                if (strcmp(req->method, "GET") == 0) {
                        fk.gets++;
                        resp->body = zone_answer(zone);
                        resp->status = 200;
                } else if (strcmp(req->method, "PATCH") == 0) {
                        fk.patches++;
                        util_strlcpy(fk.last_patch, req->body ? req->body : "",
                                     sizeof(fk.last_patch));
                        resp->status = fake_patch(zone, req->body ? req->body : "");
                        if (resp->status != 204)
                                resp->body = strdup("{\"error\": \"RRset refused: \\u0007no\"}");
                }
        } else {
                resp->status = 404;
                resp->body = strdup("{\"error\": \"Not Found\"}");
        }
        if (resp->body)
                resp->body_len = strlen(resp->body);
        pthread_mutex_unlock(&fk.lock);
}

struct fake_srv {
        struct http_server *srv;
        char url[64];
};

static int fake_setup(void **state)
{
        static struct fake_srv fs;
        char listen[32];
        memset(&fk.rr, 0, sizeof(fk.rr));
        fk.n = 0;
        fk.patches = fk.gets = 0;
        fk.refuse = NULL;
        fk.pad = fk.stall_ms = 0;
        memset(fk.zones, 0, sizeof(fk.zones));
        for (int tries = 0; tries < 50; tries++) {
                uint16_t r;
                util_random(&r, sizeof(r));
                unsigned port = 20000 + r % 12000;
                snprintf(listen, sizeof(listen), "127.0.0.1:%u", port);
                if (http_server_start(listen, 1 << 20, 2, fake_handle, NULL, &fs.srv) == 0) {
                        snprintf(fs.url, sizeof(fs.url), "http://%s/", listen);
                        *state = &fs;
                        return 0;
                }
        }
        return -1;
}

static int fake_teardown(void **state)
{
        struct fake_srv *fs = *state;
        http_server_free(fs->srv);
        return 0;
}

static void fake_put(const char *zone, const char *name, const char *type, const char *content,
                     int owned)
{
        struct fake_rr *r = &fk.rr[fk.n++];
        strcpy(r->zone, zone);
        strcpy(r->name, name);
        strcpy(r->type, type);
        strcpy(r->content, content);
        r->owned = owned;
}

static const char *fake_get(const char *name, const char *type)
{
        for (size_t i = 0; i < fk.n; i++)
                if (strcmp(fk.rr[i].name, name) == 0 && strcmp(fk.rr[i].type, type) == 0)
                        return fk.rr[i].content;
        return NULL;
}

static struct dns_client *client(struct fake_srv *fs, const char *key, size_t batch)
{
        struct dns_config cfg = { .url = fs->url, .key = key, .zone = "tasman.cloud",
                                  .timeout_ms = 2000, .batch = batch };
        struct dns_client *c = NULL;
        assert_int_equal(dns_client_new(&cfg, &c), 0);
        return c;
}

static void test_reconcile(void **state)
{
        struct fake_srv *fs = *state;
        struct vm_dns vms[] = {
                { 1, "web1.tasman.cloud", "203.0.113.2", "2001:db8:5::2" },
                { 2, "web2.tasman.cloud", "203.0.113.3", "" },
                { 3, "web3.tasman.cloud", "198.51.100.3", "" }, /* no reverse zone */
        };
        struct ipam_prefix pool;
        struct dns_stats st;
        struct dns_input in = { vms, N(vms), &pool, 1 };

        assert_int_equal(ipam_prefix_parse("203.0.113.0/28", &pool, NULL, 0), 0);
        fk.zones[0] = "tasman.cloud.";
        fk.zones[1] = "113.0.203.in-addr.arpa.";
        fk.zones[2] = "other.example.";
        fake_put("tasman.cloud.", "www.tasman.cloud.", "A", "192.0.2.80", 0);
        fake_put("tasman.cloud.", "web2.tasman.cloud.", "A", "192.0.2.99", 0);
        fake_put("tasman.cloud.", "gone.tasman.cloud.", "A", "203.0.113.9", 1);
        fake_put("113.0.203.in-addr.arpa.", "9.113.0.203.in-addr.arpa.", "PTR",
                 "gone.tasman.cloud.", 1);
        fake_put("other.example.", "x.other.example.", "A", "192.0.2.1", 1);

        struct dns_client *c = client(fs, "k", 0);
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        /* forward: web1 A+AAAA, web3 A made, web2 A a conflict, gone deleted;
         * reverse: two PTRs made, gone's deleted; web3's PTR has no zone;
         * other.example. is not involved */
        assert_int_equal(st.zones, 2);
        assert_int_equal(st.wanted, 6);
        assert_int_equal(st.replaced, 5);
        assert_int_equal(st.deleted, 2);
        assert_int_equal(st.conflicts, 1);
        assert_int_equal(st.no_zone, 2); /* web1's IPv6 PTR too */
        assert_int_equal(st.patches, 2);
        assert_int_equal(st.errors, 0);
        assert_string_equal(fake_get("web1.tasman.cloud.", "A"), "203.0.113.2");
        assert_string_equal(fake_get("web1.tasman.cloud.", "AAAA"), "2001:db8:5::2");
        assert_string_equal(fake_get("web3.tasman.cloud.", "A"), "198.51.100.3");
        assert_string_equal(fake_get("web2.tasman.cloud.", "A"), "192.0.2.99");
        assert_string_equal(fake_get("www.tasman.cloud.", "A"), "192.0.2.80");
        assert_string_equal(fake_get("3.113.0.203.in-addr.arpa.", "PTR"), "web2.tasman.cloud.");
        assert_string_equal(fake_get("x.other.example.", "A"), "192.0.2.1");
        assert_null(fake_get("gone.tasman.cloud.", "A"));
        assert_null(fake_get("9.113.0.203.in-addr.arpa.", "PTR"));

        /* in step: reads only */
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.patches, 0);
        assert_int_equal(st.replaced + st.deleted, 0);

        /* every VM gone, with a client that remembers nothing: the pool
         * still involves the reverse zone, so its PTRs go too */
        dns_client_free(c);
        c = client(fs, "k", 0);
        in.n_vms = 0;
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.deleted, 5);
        assert_int_equal(st.patches, 2);
        assert_null(fake_get("web1.tasman.cloud.", "A"));
        assert_null(fake_get("2.113.0.203.in-addr.arpa.", "PTR"));
        assert_string_equal(fake_get("web2.tasman.cloud.", "A"), "192.0.2.99");
        assert_int_equal(fk.n, 3); /* www, web2 (the admin's), x.other.example. */
        dns_client_free(c);
}

static const char *fake_zone_of(const char *name, const char *type)
{
        for (size_t i = 0; i < fk.n; i++)
                if (strcmp(fk.rr[i].name, name) == 0 && strcmp(fk.rr[i].type, type) == 0)
                        return fk.rr[i].zone;
        return NULL;
}

/* Each rrset lands in the deepest zone holding its name. */
static void test_reconcile_zones(void **state)
{
        struct fake_srv *fs = *state;
        struct vm_dns vms[] = {
                { 1, "a.tasman.cloud", "198.51.100.1", "2001:db8:5::1" },
                { 2, "b.eu.tasman.cloud", "203.0.113.2", "2001:db8:6::2" },
                { 3, "c.tasman.cloud", "203.0.113.3", "" },
                { 4, "d.eu.tasman.cloud", "198.51.100.4", "" },
        };
        struct dns_input in = { vms, N(vms), NULL, 0 };
        struct dns_stats st;
        fk.zones[0] = "113.0.203.in-addr.arpa.";
        fk.zones[1] = "eu.tasman.cloud.";
        fk.zones[2] = "tasman.cloud.";
        fk.zones[3] = "8.b.d.0.1.0.0.2.ip6.arpa.";
        struct dns_client *c = client(fs, "k", 0);
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.zones, 4);
        assert_int_equal(st.patches, 4);
        assert_int_equal(st.replaced, 10);
        assert_int_equal(st.no_zone, 2); /* 198.51.100.0/24 has no reverse zone */
        static const char *const where[][3] = {
                { "a.tasman.cloud.", "A", "tasman.cloud." },
                { "a.tasman.cloud.", "AAAA", "tasman.cloud." },
                { "c.tasman.cloud.", "A", "tasman.cloud." },
                { "b.eu.tasman.cloud.", "A", "eu.tasman.cloud." },
                { "b.eu.tasman.cloud.", "AAAA", "eu.tasman.cloud." },
                { "d.eu.tasman.cloud.", "A", "eu.tasman.cloud." },
                { "2.113.0.203.in-addr.arpa.", "PTR", "113.0.203.in-addr.arpa." },
                { "3.113.0.203.in-addr.arpa.", "PTR", "113.0.203.in-addr.arpa." },
                { "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR",
                  "8.b.d.0.1.0.0.2.ip6.arpa." },
                { "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR",
                  "8.b.d.0.1.0.0.2.ip6.arpa." },
        };
        for (size_t i = 0; i < N(where); i++) {
                const char *z = fake_zone_of(where[i][0], where[i][1]);
                assert_non_null(z);
                assert_string_equal(z, where[i][2]);
        }
        assert_int_equal(fk.n, N(where));
        assert_string_equal(fake_get("3.113.0.203.in-addr.arpa.", "PTR"), "c.tasman.cloud.");
        /* c and d go: the zones they were in lose their records, the rest stay */
        in.n_vms = 2;
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.deleted, 3); /* c's A and PTR, d's A */
        assert_int_equal(st.patches, 3);
        assert_int_equal(fk.n, N(where) - 3);
        dns_client_free(c);
}

static void test_reconcile_batches_and_refusals(void **state)
{
        struct fake_srv *fs = *state;
        struct vm_dns vms[5];
        struct dns_stats st;
        for (int i = 0; i < 5; i++) {
                vms[i] = (struct vm_dns){ .vm_id = (uint64_t)i + 1 };
                snprintf(vms[i].fqdn, sizeof(vms[i].fqdn), "vm%d.tasman.cloud", i + 1);
                snprintf(vms[i].ipv4, sizeof(vms[i].ipv4), "192.0.2.%d", i + 1);
        }
        struct dns_input in = { vms, 5, NULL, 0 };
        fk.zones[0] = "tasman.cloud.";
        struct dns_client *c = client(fs, "k", 2);
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.replaced, 5);
        assert_int_equal(st.patches, 3); /* 2 + 2 + 1 */
        assert_int_equal(st.no_zone, 5); /* no reverse zone: the PTRs */

        /* the server refuses one rrset: its batch is sent again one by one,
         * so the others still land and the refused one is named */
        for (int i = 0; i < 5; i++)
                vms[i].ipv4[strlen(vms[i].ipv4) - 1] = '9';
        fk.refuse = "vm3.tasman.cloud.";
        fk.patches = 0;
        assert_int_equal(dns_reconcile(c, &in, &st), -EINVAL);
        assert_int_equal(st.replaced, 4);
        assert_int_equal(st.errors, 1);
        /* batch [1,2] ok; batch [3,4] refused, then 3 alone (refused) and
         * 4 alone; batch [5] */
        assert_int_equal(st.patches, 5);
        assert_int_equal(fk.patches, 5);
        assert_string_equal(fake_get("vm4.tasman.cloud.", "A"), "192.0.2.9");
        assert_string_equal(fake_get("vm3.tasman.cloud.", "A"), "192.0.2.3");
        fk.refuse = NULL;
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.replaced, 1);
        assert_string_equal(fake_get("vm3.tasman.cloud.", "A"), "192.0.2.9");
        dns_client_free(c);

        /* a server that refuses everything: ten rrsets refused one by one,
         * then the round stops asking */
        struct vm_dns many[30];
        for (int i = 0; i < 30; i++) {
                many[i] = (struct vm_dns){ .vm_id = (uint64_t)i + 1 };
                snprintf(many[i].fqdn, sizeof(many[i].fqdn), "m%02d.tasman.cloud", i);
                snprintf(many[i].ipv4, sizeof(many[i].ipv4), "198.51.100.%d", i + 1);
        }
        struct dns_input in2 = { many, 30, NULL, 0 };
        c = client(fs, "k", 4);
        fk.refuse = "*";
        fk.patches = 0;
        assert_int_equal(dns_reconcile(c, &in2, &st), -EINVAL);
        /* batch, 4 alone; batch, 4 alone; batch, 2 alone: 10 refused */
        assert_int_equal(fk.patches, 13);
        assert_int_equal(st.errors, 10);
        assert_int_equal(st.replaced, 0);
        fk.refuse = NULL;
        assert_int_equal(dns_reconcile(c, &in2, &st), 0);
        assert_int_equal(st.replaced, 30);
        dns_client_free(c);
}

static void test_reconcile_bounds(void **state)
{
        struct fake_srv *fs = *state;
        struct vm_dns vm = { 1, "web1.tasman.cloud", "192.0.2.1", "" };
        struct dns_input in = { &vm, 1, NULL, 0 };
        struct dns_stats st;
        fk.zones[0] = "tasman.cloud.";

        /* a wrong key */
        struct dns_client *c = client(fs, "wrong", 0);
        assert_int_equal(dns_reconcile(c, &in, &st), -EACCES);
        assert_int_equal(st.errors, 1);
        dns_client_free(c);

        /* an answer over the cap */
        struct dns_config cfg = { .url = fs->url, .key = "k", .zone = "tasman.cloud",
                                  .max_response = 4096 };
        assert_int_equal(dns_client_new(&cfg, &c), 0);
        fk.pad = 8192;
        assert_int_equal(dns_reconcile(c, &in, &st), -EFBIG);
        fk.pad = 0;
        assert_int_equal(dns_reconcile(c, &in, &st), 0);
        assert_int_equal(st.replaced, 1);
        dns_client_free(c);

        /* a server that stalls past the timeout */
        cfg.timeout_ms = 200;
        assert_int_equal(dns_client_new(&cfg, &c), 0);
        fk.stall_ms = 1000;
        int64_t t0 = util_mono_ms();
        assert_int_equal(dns_reconcile(c, &in, &st), -ETIMEDOUT);
        assert_true(util_mono_ms() - t0 < 900);
        fk.stall_ms = 0;
        dns_client_free(c);

        /* nobody listening */
        cfg.url = "http://127.0.0.1:1";
        assert_int_equal(dns_client_new(&cfg, &c), 0);
        assert_int_equal(dns_reconcile(c, &in, &st), -ECONNREFUSED);
        dns_client_free(c);

        /* configurations refused */
        cfg.url = "";
        assert_int_equal(dns_client_new(&cfg, &c), -EINVAL);
        cfg.url = fs->url;
        cfg.zone = "bad zone";
        assert_int_equal(dns_client_new(&cfg, &c), -EINVAL);
        cfg.zone = "tasman.cloud";
        cfg.key = "k\r\nX-Evil: 1";
        assert_int_equal(dns_client_new(&cfg, &c), -EINVAL);
        dns_client_free(NULL);
}

/* fake_get under the fake's lock (the server's threads write it) */
static int fake_has(const char *name, const char *type, const char *content)
{
        pthread_mutex_lock(&fk.lock);
        const char *got = fake_get(name, type);
        int r = content ? got && strcmp(got, content) == 0 : got == NULL;
        pthread_mutex_unlock(&fk.lock);
        return r;
}

static int wait_has(const char *name, const char *type, const char *content, int ms)
{
        for (int t = 0; t < ms; t += 10) {
                if (fake_has(name, type, content))
                        return 1;
                usleep(10000);
        }
        return 0;
}

static uint64_t new_vm(struct store *s, uint64_t account, const char *name)
{
        struct vm v;
        const struct vm_new req = { .account_id = account, .name = name, .size = "s",
                                    .image = "debian-12", .vcpus = 1, .ram_mb = 64,
                                    .disk_gb = 1 };
        assert_int_equal(store_vm_create(s, &req, util_now_ms(), 0, &v), 0);
        return v.id;
}

/* The broker's DNS thread over a real store: a first round at once,
 * dns_kick() brings a change out long before the interval, and dns_stop()
 * does not wait for a stalled server. */
static void test_thread(void **state)
{
        struct fake_srv *fs = *state;
        char dir[] = "/tmp/tasman-dns.XXXXXX", path[64], cmd[96];
        struct store *s = NULL;
        struct account acc;
        struct msg_hello h = { .vcpus = 8, .ram_mb = 8192, .disk_gb = 100 };
        uint64_t host_id, host;
        int rebooted;
        struct dns *d = NULL;

        assert_non_null(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/tasman.db", dir);
        assert_int_equal(store_open(path, &s), 0);
        assert_int_equal(store_account_create(s, "acme", TIER_PRO, &acc), 0);
        strcpy(h.host_id, "hv1");
        strcpy(h.site, "tas-1");
        strcpy(h.underlay_ip, "10.0.0.1");
        strcpy(h.boot_id, "b1");
        strcpy(h.agent_version, "0.1.0");
        strcpy(h.hv_type, "test");
        assert_int_equal(store_host_hello(s, &h, util_now_ms(), &host_id, &rebooted), 0);
        struct ip_pool pool = { .site = "tas-1", .ipv4 = "203.0.113.0/28",
                                .gateway4 = "203.0.113.1" };
        assert_int_equal(store_pool_add(s, &pool, &pool), 0);
        uint64_t web1 = new_vm(s, acc.id, "web1");

        pthread_mutex_lock(&fk.lock);
        fk.zones[0] = "tasman.cloud.";
        fk.zones[1] = "113.0.203.in-addr.arpa.";
        pthread_mutex_unlock(&fk.lock);
        struct dns_config cfg = { .url = fs->url, .key = "k", .zone = "tasman.cloud",
                                  .timeout_ms = 5000 };
        assert_int_equal(dns_start(&cfg, 3600 * 1000, s, &d), 0);
        assert_true(wait_has("web1.tasman.cloud.", "A", "203.0.113.2", 5000));
        assert_true(wait_has("2.113.0.203.in-addr.arpa.", "PTR", "web1.tasman.cloud.", 1000));

        new_vm(s, acc.id, "web2");
        dns_kick(d);
        assert_true(wait_has("web2.tasman.cloud.", "A", "203.0.113.3", 2000));
        assert_int_equal(store_vm_delete(s, acc.id, web1, &host), 0);
        dns_kick(d);
        assert_true(wait_has("web1.tasman.cloud.", "A", NULL, 2000));
        assert_true(wait_has("2.113.0.203.in-addr.arpa.", "PTR", NULL, 1000));
        assert_true(fake_has("web2.tasman.cloud.", "A", "203.0.113.3"));

        /* a round stuck on a stalled server is abandoned by dns_stop() */
        pthread_mutex_lock(&fk.lock);
        fk.stall_ms = 3000;
        pthread_mutex_unlock(&fk.lock);
        dns_kick(d);
        usleep(400 * 1000); /* the round is waiting for an answer */
        int64_t t0 = util_mono_ms();
        dns_stop(d);
        assert_true(util_mono_ms() - t0 < 1500);
        dns_kick(NULL);
        dns_stop(NULL);

        store_free(s);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        assert_int_equal(system(cmd), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fqdn_canon),
                cmocka_unit_test(test_name_in_zone),
                cmocka_unit_test(test_ptr_name),
                cmocka_unit_test(test_reverse_prefix),
                cmocka_unit_test(test_zone_for),
                cmocka_unit_test(test_plan),
                cmocka_unit_test(test_plan_ttl_and_bad_zone),
                cmocka_unit_test(test_parse_rrsets),
                cmocka_unit_test(test_parse_mangled),
                cmocka_unit_test(test_parse_zones),
                cmocka_unit_test(test_diff),
                cmocka_unit_test(test_plan_against_zone),
                cmocka_unit_test(test_patch_body),
                cmocka_unit_test_setup_teardown(test_reconcile, fake_setup, fake_teardown),
                cmocka_unit_test_setup_teardown(test_reconcile_zones, fake_setup, fake_teardown),
                cmocka_unit_test_setup_teardown(test_reconcile_batches_and_refusals, fake_setup,
                                                fake_teardown),
                cmocka_unit_test_setup_teardown(test_reconcile_bounds, fake_setup, fake_teardown),
                cmocka_unit_test_setup_teardown(test_thread, fake_setup, fake_teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
