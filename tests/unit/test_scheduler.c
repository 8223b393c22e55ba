/* The scheduler, table-driven: filters, weights, reasons. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "scheduler.h"

static const struct sched_params spread = { 1.0, 1.0, 1.0, SCHED_SPREAD, 42 };
static const struct sched_params pack = { 1.0, 1.0, 1.0, SCHED_PACK, 42 };

#define H(id_, site_, live_, drain_, cpu_, cpuu_, ram_, ramu_, disk_, disku_, infl_)        \
        {                                                                                  \
                .id = id_, .site_id = site_, .live = live_, .draining = drain_, .vcpus = cpu_, \
                .vcpus_used = cpuu_, .ram_mb = ram_, .ram_mb_used = ramu_,                 \
                .disk_gb = { disk_, 0 }, .disk_gb_used = { disku_, 0 }, .inflight = infl_  \
        }
/* With hdd storage too, and whether it holds a guest of the group. */
#define HS(id_, ssd_, ssdu_, hdd_, hddu_, grp_)                                            \
        {                                                                                  \
                .id = id_, .site_id = 1, .live = 1, .vcpus = 8, .ram_mb = 8192,            \
                .disk_gb = { ssd_, hdd_ }, .disk_gb_used = { ssdu_, hddu_ }, .in_group = grp_ \
        }

struct pcase {
        const char *name;
        struct sched_host hosts[4];
        size_t n;
        struct sched_req req;
        const struct sched_params *p;
        long want_id; /* -1: nothing fits */
        size_t rejected[SCHED_F__MAX];
};

static const struct pcase cases[] = {
        { "one host fits", { H(1, 1, 1, 0, 4, 0, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 2, 2048, 20, STORAGE_SSD, NULL }, &spread, 1, { 0 } },
        { "wrong site", { H(1, 2, 1, 0, 4, 0, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 2, 2048, 20, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_SITE] = 1 } },
        { "any site", { H(1, 2, 1, 0, 4, 0, 4096, 0, 100, 0, 0) }, 1,
          { 0, NULL, 2, 2048, 20, STORAGE_SSD, NULL }, &spread, 1, { 0 } },
        { "unreachable", { H(1, 1, 0, 0, 4, 0, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_UNREACHABLE] = 1 } },
        { "draining", { H(1, 1, 1, 1, 4, 0, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_DRAINING] = 1 } },
        { "no cpu", { H(1, 1, 1, 0, 4, 3, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 2, 512, 1, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_CPU] = 1 } },
        { "exact cpu fit", { H(1, 1, 1, 0, 4, 2, 4096, 0, 100, 0, 0) }, 1,
          { 1, "a", 2, 512, 1, STORAGE_SSD, NULL }, &spread, 1, { 0 } },
        { "no ram", { H(1, 1, 1, 0, 4, 0, 4096, 3073, 100, 0, 0) }, 1,
          { 1, "a", 1, 1024, 1, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_RAM] = 1 } },
        { "exact ram fit", { H(1, 1, 1, 0, 4, 0, 4096, 3072, 100, 0, 0) }, 1,
          { 1, "a", 1, 1024, 1, STORAGE_SSD, NULL }, &spread, 1, { 0 } },
        { "no disk", { H(1, 1, 1, 0, 4, 0, 4096, 0, 100, 90, 0) }, 1,
          { 1, "a", 1, 512, 20, STORAGE_SSD, NULL }, &spread, -1, { [SCHED_F_DISK] = 1 } },
        { "first failing filter counts",
          { H(1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0), H(2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),
            H(3, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0), H(4, 2, 1, 0, 9, 0, 9999, 0, 99, 0, 0) },
          4, { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, -1,
          { [SCHED_F_SITE] = 1, [SCHED_F_UNREACHABLE] = 1, [SCHED_F_DRAINING] = 1,
            [SCHED_F_CPU] = 1 } },
        { "spread: most free RAM",
          { H(1, 1, 1, 0, 8, 0, 8192, 6000, 100, 0, 0), H(2, 1, 1, 0, 8, 0, 8192, 1000, 100, 0, 0),
            H(3, 1, 1, 0, 8, 0, 8192, 4000, 100, 0, 0) },
          3, { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, 2, { 0 } },
        { "pack: least free RAM that fits",
          { H(1, 1, 1, 0, 8, 0, 8192, 6000, 100, 0, 0), H(2, 1, 1, 0, 8, 0, 8192, 1000, 100, 0, 0),
            H(3, 1, 1, 0, 8, 0, 8192, 7900, 100, 0, 0) },
          3, { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &pack, 1, { [SCHED_F_RAM] = 1 } },
        { "in-flight creations weigh against a host",
          { H(1, 1, 1, 0, 8, 0, 8192, 1000, 100, 0, 8), H(2, 1, 1, 0, 8, 0, 8192, 1500, 100, 0, 0) },
          2, { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, 2, { 0 } },
        { "no hosts at all", { { 0 } }, 0, { 1, "a", 1, 512, 1, STORAGE_SSD, NULL }, &spread, -1, { 0 } },
        { "hdd wanted, only ssd hosts", { HS(1, 100, 0, 0, 0, 0), HS(2, 100, 0, 0, 0, 0) }, 2,
          { 1, "a", 1, 512, 20, STORAGE_HDD, NULL }, &spread, -1, { [SCHED_F_STORAGE] = 2 } },
        { "hdd wanted: the host with hdd room",
          { HS(1, 100, 0, 0, 0, 0), HS(2, 100, 0, 50, 40, 0), HS(3, 0, 0, 500, 0, 0) }, 3,
          { 1, "a", 1, 512, 20, STORAGE_HDD, NULL }, &spread, 3,
          { [SCHED_F_STORAGE] = 1, [SCHED_F_DISK] = 1 } },
        { "ssd wanted: hdd room does not count",
          { HS(1, 100, 90, 900, 0, 0), HS(2, 0, 0, 900, 0, 0) }, 2,
          { 1, "a", 1, 512, 20, STORAGE_SSD, NULL }, &spread, -1,
          { [SCHED_F_STORAGE] = 1, [SCHED_F_DISK] = 1 } },
        { "anti-affinity: not beside a guest of the group",
          { HS(1, 100, 0, 0, 0, 1), HS(2, 100, 0, 0, 0, 0), HS(3, 100, 0, 0, 0, 1) }, 3,
          { 1, "a", 1, 512, 20, STORAGE_SSD, "web" }, &spread, 2, { [SCHED_F_GROUP] = 2 } },
        { "anti-affinity: every host holds one",
          { HS(1, 100, 0, 0, 0, 1), HS(2, 100, 0, 0, 0, 1) }, 2,
          { 1, "a", 1, 512, 20, STORAGE_SSD, "web" }, &spread, -1, { [SCHED_F_GROUP] = 2 } },
        { "anti-affinity: a full host counts as full first",
          { HS(1, 100, 100, 0, 0, 1), HS(2, 100, 0, 0, 0, 1) }, 2,
          { 1, "a", 1, 512, 20, STORAGE_SSD, "web" }, &spread, -1,
          { [SCHED_F_DISK] = 1, [SCHED_F_GROUP] = 1 } },
};

static void test_cases(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const struct pcase *c = &cases[i];
                struct sched_result r;
                assert_int_equal(sched_place(c->hosts, c->n, &c->req, c->p, &r), 0);
                if (c->want_id < 0) {
                        if (r.found)
                                fail_msg("%s: placed on %llu, want nothing", c->name,
                                         (unsigned long long)c->hosts[r.index].id);
                } else if (!r.found || c->hosts[r.index].id != (uint64_t)c->want_id) {
                        fail_msg("%s: want host %ld, got %s%llu", c->name, c->want_id,
                                 r.found ? "" : "none ",
                                 r.found ? (unsigned long long)c->hosts[r.index].id : 0ULL);
                }
                for (int f = 0; f < SCHED_F__MAX; f++)
                        if (r.rejected[f] != c->rejected[f])
                                fail_msg("%s: filter %d rejected %zu, want %zu", c->name, f,
                                         r.rejected[f], c->rejected[f]);
        }
}

static void test_overcommit(void **state)
{
        struct sched_host h = H(1, 1, 1, 0, 4, 12, 4096, 0, 100, 0, 0);
        struct sched_req req = { 1, "a", 4, 512, 1, STORAGE_SSD, NULL };
        struct sched_params p = spread;
        struct sched_result r;
        (void)state;
        p.cpu_ratio = 4.0; /* 16 vCPUs placeable: 12 + 4 fits */
        assert_int_equal(sched_place(&h, 1, &req, &p, &r), 0);
        assert_true(r.found);
        req.vcpus = 5;
        assert_int_equal(sched_place(&h, 1, &req, &p, &r), 0);
        assert_false(r.found);
        assert_int_equal(r.rejected[SCHED_F_CPU], 1);
}

static void test_bad_params(void **state)
{
        struct sched_host h = H(1, 1, 1, 0, 4, 0, 4096, 0, 100, 0, 0);
        struct sched_req req = { 1, "a", 1, 512, 1, STORAGE_SSD, NULL };
        struct sched_params p = spread;
        struct sched_result r;
        (void)state;
        p.ram_ratio = 0;
        assert_int_equal(sched_place(&h, 1, &req, &p, &r), -EINVAL);
        req.storage = STORAGE__MAX;
        assert_int_equal(sched_place(&h, 1, &req, &spread, &r), -EINVAL);
        assert_int_equal(sched_place(NULL, 1, &req, &spread, &r), -EINVAL);
}

static void test_jitter_is_deterministic_and_breaks_ties(void **state)
{
        struct sched_host hs[16];
        struct sched_req req = { 1, "a", 1, 512, 1, STORAGE_SSD, NULL };
        struct sched_params p = spread;
        struct sched_result r1, r2;
        int seen[16] = { 0 };
        (void)state;
        for (int i = 0; i < 16; i++)
                hs[i] = (struct sched_host)H((uint64_t)i + 1, 1, 1, 0, 8, 0, 8192, 0, 100, 0, 0);
        assert_int_equal(sched_place(hs, 16, &req, &p, &r1), 0);
        assert_int_equal(sched_place(hs, 16, &req, &p, &r2), 0);
        assert_int_equal(r1.index, r2.index);
        for (uint64_t seed = 0; seed < 200; seed++) {
                p.seed = seed;
                assert_int_equal(sched_place(hs, 16, &req, &p, &r1), 0);
                seen[r1.index] = 1;
        }
        int distinct = 0;
        for (int i = 0; i < 16; i++)
                distinct += seen[i];
        assert_true(distinct >= 8); /* equal hosts share the load */
}

static void test_explain(void **state)
{
        struct sched_result r = { .considered = 40 };
        struct sched_req req = { 1, "tas-1", 2, 8192, 80, STORAGE_SSD, NULL };
        char buf[256];
        (void)state;
        r.rejected[SCHED_F_DRAINING] = 12;
        r.rejected[SCHED_F_RAM] = 28;
        sched_explain(&r, &req, buf, sizeof(buf));
        assert_string_equal(buf, "site tas-1: 40 hosts; 12 draining, 28 without 8192 MB RAM free");
        struct sched_result none = { 0 };
        struct sched_req any = { 0, NULL, 1, 512, 1, STORAGE_SSD, NULL };
        sched_explain(&none, &any, buf, sizeof(buf));
        assert_string_equal(buf, "all sites: 0 hosts");
        struct sched_result g = { .considered = 3 };
        struct sched_req gr = { 0, NULL, 1, 512, 40, STORAGE_HDD, "db" };
        g.rejected[SCHED_F_STORAGE] = 1;
        g.rejected[SCHED_F_DISK] = 1;
        g.rejected[SCHED_F_GROUP] = 1;
        sched_explain(&g, &gr, buf, sizeof(buf));
        assert_string_equal(buf, "all sites: 3 hosts; 1 without hdd storage, 1 without 40 GB hdd "
                                 "free, 1 already holding a guest of group db");
        char tiny[8];
        sched_explain(&r, &req, tiny, sizeof(tiny));
        assert_int_equal(strlen(tiny), 7); /* cut, never overrun */
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_cases),
                cmocka_unit_test(test_overcommit),
                cmocka_unit_test(test_bad_params),
                cmocka_unit_test(test_jitter_is_deterministic_and_breaks_ties),
                cmocka_unit_test(test_explain),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
