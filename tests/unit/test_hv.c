/* hv_libvirt against libvirt's in-process test driver.
 *
 * test:///default starts with one domain named "test", which is not ours
 * and must never show up or be touched. Domains named like ours but
 * without (or with someone else's) metadata come from a node file for the
 * test driver, written here: this test never includes libvirt itself. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "domxml.h"
#include "hv.h"
#include "log.h"

#define DEFAULT_URI "test:///default"

static int setup_default(void **state)
{
        struct hv *hv = NULL;
        assert_int_equal(hv_open(DEFAULT_URI, &hv), 0);
        *state = hv;
        return 0;
}

static int teardown_hv(void **state)
{
        hv_free(*state);
        return 0;
}

static void define(struct hv *hv, uint64_t vm_id, uint64_t reboot_done, uint64_t rebuild_done)
{
        char hostname[32];
        snprintf(hostname, sizeof(hostname), "vm%llu", (unsigned long long)vm_id);
        const struct domxml_params p = {
                .vm_id = vm_id,
                .hostname = hostname,
                .domain_type = "test",
                .vcpus = 1,
                .ram_mb = 128,
                .reboot_done = reboot_done,
                .rebuild_done = rebuild_done,
        };
        assert_int_equal(hv_define(hv, &p), 0);
}

/* The listing, which must hold exactly the n expected domains. */
static void expect_list(struct hv *hv, const struct hv_domain *want, size_t n)
{
        struct hv_domain *got = NULL;
        size_t n_got = 99;
        assert_int_equal(hv_list(hv, &got, &n_got), 0);
        if (n_got != n)
                fail_msg("hv_list: %zu domains, want %zu", n_got, n);
        for (size_t i = 0; i < n; i++) {
                if (got[i].vm_id != want[i].vm_id || got[i].state != want[i].state ||
                    got[i].reboot_done != want[i].reboot_done ||
                    got[i].rebuild_done != want[i].rebuild_done)
                        fail_msg("hv_list[%zu]: vm %llu %s %llu/%llu, want vm %llu %s %llu/%llu",
                                 i, (unsigned long long)got[i].vm_id,
                                 power_to_string(got[i].state),
                                 (unsigned long long)got[i].reboot_done,
                                 (unsigned long long)got[i].rebuild_done,
                                 (unsigned long long)want[i].vm_id,
                                 power_to_string(want[i].state),
                                 (unsigned long long)want[i].reboot_done,
                                 (unsigned long long)want[i].rebuild_done);
        }
        free(got);
}

static void expect_get(struct hv *hv, uint64_t vm_id, enum power state, uint64_t rb,
                       uint64_t rl)
{
        struct hv_domain d;
        assert_int_equal(hv_get(hv, vm_id, &d), 0);
        assert_int_equal(d.vm_id, vm_id);
        assert_int_equal(d.state, state);
        assert_int_equal(d.reboot_done, rb);
        assert_int_equal(d.rebuild_done, rl);
}

/* Pools and volumes on the test driver: idempotent, and only ours listed. */
static void test_storage(void **state)
{
        struct hv *hv = *state;
        char path[512], **names = NULL;
        size_t n = 0;

        assert_int_equal(hv_pool_ensure(hv, "tasman-ssd", "/srv/tasman-test/ssd"), 0);
        assert_int_equal(hv_pool_ensure(hv, "tasman-ssd", "/srv/tasman-test/ssd"), 0);
        assert_int_equal(hv_pool_ensure(hv, "tasman-ssd", "/srv/elsewhere"), -EEXIST);
        assert_int_equal(hv_vol_create(hv, "tasman-ssd", "tasman-7.qcow2", 1ull << 30,
                                       "/srv/base.img", "raw", path, sizeof(path)),
                         0);
        assert_string_equal(path, "/srv/tasman-test/ssd/tasman-7.qcow2");
        /* again: kept, same path */
        assert_int_equal(hv_vol_create(hv, "tasman-ssd", "tasman-7.qcow2", 1ull << 30,
                                       "/srv/base.img", "raw", path, sizeof(path)),
                         0);
        assert_int_equal(hv_vol_create(hv, "tasman-ssd", "tasman-8.qcow2", 1ull << 30, NULL, NULL,
                                       path, sizeof(path)),
                         0);
        /* not ours by name: refused */
        assert_int_equal(hv_vol_create(hv, "tasman-ssd", "other.qcow2", 1ull << 30, NULL, NULL,
                                       path, sizeof(path)),
                         -EPERM);
        assert_int_equal(hv_vol_create(hv, "tasman-nopool", "tasman-9.qcow2", 1ull << 30, NULL,
                                       NULL, path, sizeof(path)),
                         -ENOENT);
        assert_int_equal(hv_vol_create(hv, "tasman-ssd", "tasman-10.qcow2", 1ull << 30, NULL,
                                       NULL, path, 8),
                         -ENAMETOOLONG);
        assert_int_equal(hv_vol_list(hv, "tasman-ssd", &names, &n), 0);
        assert_int_equal(n, 3);
        hv_names_free(names, n);
        assert_int_equal(hv_vol_delete(hv, "tasman-ssd", "tasman-7.qcow2"), 0);
        assert_int_equal(hv_vol_delete(hv, "tasman-ssd", "tasman-7.qcow2"), 0);
        assert_int_equal(hv_vol_delete(hv, "default-pool", "other"), -EPERM);
        assert_int_equal(hv_vol_list(hv, "tasman-ssd", &names, &n), 0);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++)
                assert_true(strcmp(names[i], "tasman-8.qcow2") == 0 ||
                            strcmp(names[i], "tasman-10.qcow2") == 0);
        hv_names_free(names, n);
}

static void test_open_bad_uri(void **state)
{
        struct hv *hv = (struct hv *)0x1;
        (void)state;
        assert_int_equal(hv_open("test:///nonexistent/tasman-node.xml", &hv), -ECONNREFUSED);
        assert_ptr_equal(hv, (struct hv *)0x1);
        hv_free(NULL);
}

static void test_node_info(void **state)
{
        struct hv *hv = *state;
        struct hv_node node;
        assert_int_equal(hv_node_info(hv, &node), 0);
        assert_true(node.vcpus > 0);
        assert_true(node.ram_mb > 0);
        assert_true(node.type[0] != '\0');
}

static void test_list_ignores_foreign(void **state)
{
        struct hv *hv = *state;
        struct hv_domain d;
        expect_list(hv, NULL, 0);
        assert_int_equal(hv_get(hv, 1, &d), -ENOENT);
}

static void test_lifecycle(void **state)
{
        struct hv *hv = *state;
        struct hv_domain d;

        define(hv, 5, 2, 3);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_STOPPED, .reboot_done = 2, .rebuild_done = 3 } }, 1);
        expect_get(hv, 5, POWER_STOPPED, 2, 3);

        assert_int_equal(hv_start(hv, 5), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_RUNNING, .reboot_done = 2, .rebuild_done = 3 } }, 1);
        expect_get(hv, 5, POWER_RUNNING, 2, 3);
        assert_int_equal(hv_start(hv, 5), 0); /* already running: no-op */
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_RUNNING, .reboot_done = 2, .rebuild_done = 3 } }, 1);

        assert_int_equal(hv_shutdown(hv, 5), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_STOPPED, .reboot_done = 2, .rebuild_done = 3 } }, 1);
        assert_int_equal(hv_shutdown(hv, 5), 0); /* already stopped: no-op */
        assert_int_equal(hv_destroy(hv, 5), 0);  /* likewise */
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_STOPPED, .reboot_done = 2, .rebuild_done = 3 } }, 1);

        assert_int_equal(hv_start(hv, 5), 0);
        assert_int_equal(hv_destroy(hv, 5), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 5, .state = POWER_STOPPED, .reboot_done = 2, .rebuild_done = 3 } }, 1);

        assert_int_equal(hv_undefine(hv, 5), 0);
        expect_list(hv, NULL, 0);
        assert_int_equal(hv_get(hv, 5, &d), -ENOENT);
        assert_int_equal(hv_undefine(hv, 5), 0); /* already gone: no-op */
}

static void test_set_counters(void **state)
{
        struct hv *hv = *state;
        struct hv *other = NULL;

        define(hv, 6, 0, 0);
        assert_int_equal(hv_start(hv, 6), 0);
        assert_int_equal(hv_set_counters(hv, 6, 7, 8), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 6, .state = POWER_RUNNING, .reboot_done = 7, .rebuild_done = 8 } }, 1);
        expect_get(hv, 6, POWER_RUNNING, 7, 8);

        /* Written into the domain, not only cached: a second connection to
         * the same (shared) default driver reads them from libvirt. */
        assert_int_equal(hv_open(DEFAULT_URI, &other), 0);
        expect_list(other, (struct hv_domain[]){ { .vm_id = 6, .state = POWER_RUNNING, .reboot_done = 7, .rebuild_done = 8 } }, 1);
        expect_get(other, 6, POWER_RUNNING, 7, 8);

        /* Stopped: the persistent config carries them too. */
        assert_int_equal(hv_destroy(hv, 6), 0);
        assert_int_equal(hv_set_counters(hv, 6, 9, 10), 0);
        expect_get(hv, 6, POWER_STOPPED, 9, 10);
        assert_int_equal(hv_start(other, 6), 0);
        hv_free(other);
        other = NULL;
        assert_int_equal(hv_open(DEFAULT_URI, &other), 0);
        expect_get(other, 6, POWER_RUNNING, 9, 10);
        hv_free(other);

        assert_int_equal(hv_undefine(hv, 6), 0);
}

/* A domain's NICs: as defined (cached) and as read back from libvirt by a
 * second connection; the test driver cannot hot-plug. */
static void test_nics(void **state)
{
        struct hv *hv = *state, *other = NULL;
        const struct domxml_nic nics[] = {
                { .bridge = "tbrpub", .mac = "52:54:00:00:0B:01" },
                { .bridge = "tbr4096", .mac = "52:54:00:00:0b:02", .mtu = 1450 },
        };
        const struct domxml_params p = { .vm_id = 11, .hostname = "n", .domain_type = "test",
                                         .vcpus = 1, .ram_mb = 128, .nics = nics, .n_nics = 2 };
        struct hv_domain d;

        assert_int_equal(hv_define(hv, &p), 0);
        assert_int_equal(hv_get(hv, 11, &d), 0);
        assert_true(d.nics_known);
        assert_int_equal(d.n_nics, 2);
        assert_string_equal(d.nic_macs[0], "52:54:00:00:0b:01");
        assert_string_equal(d.nic_macs[1], "52:54:00:00:0b:02");
        assert_int_equal(hv_open(DEFAULT_URI, &other), 0);
        struct hv_domain *all = NULL;
        size_t n = 0;
        assert_int_equal(hv_list(other, &all, &n), 0);
        assert_int_equal(n, 1);
        assert_true(all[0].nics_known);
        assert_int_equal(all[0].n_nics, 2);
        assert_string_equal(all[0].nic_macs[1], "52:54:00:00:0b:02");
        free(all);
        const struct domxml_nic more = { .bridge = "tbr4097", .mac = "52:54:00:00:0b:03" };
        assert_int_equal(hv_nic_attach(other, 11, &more), -EOPNOTSUPP);
        const struct domxml_nic bad = { .bridge = "tbr4097", .mac = "52:54:00:00:0b" };
        assert_int_equal(hv_nic_attach(other, 11, &bad), -EINVAL);
        assert_int_equal(hv_nic_attach(other, 12, &more), -ENOENT);
        hv_free(other);
        assert_int_equal(hv_undefine(hv, 11), 0);
}

/* Two agents on one libvirt: each owns the domains it defined (its host
 * id in their metadata) and those of an agent that named no host, never
 * the other's. */
static void test_two_hosts(void **state)
{
        struct hv *none = *state, *ha = NULL, *hb = NULL;
        struct hv_domain d, *all = NULL;
        size_t n = 0;
        const struct domxml_params p = { .vm_id = 21, .hostname = "a", .domain_type = "test",
                                         .vcpus = 1, .ram_mb = 128 };
        const struct domxml_params old = { .vm_id = 22, .hostname = "o", .domain_type = "test",
                                           .vcpus = 1, .ram_mb = 128 };
        (void)state;
        assert_int_equal(hv_open(DEFAULT_URI, &ha), 0);
        assert_int_equal(hv_open(DEFAULT_URI, &hb), 0);
        assert_int_equal(hv_set_host(ha, "host-a"), 0);
        assert_int_equal(hv_set_host(hb, "host-b"), 0);
        assert_int_equal(hv_set_host(hb, "bad host"), -EINVAL);
        assert_int_equal(hv_set_host(hb, ""), -EINVAL);
        assert_int_equal(hv_define(ha, &p), 0);
        assert_int_equal(hv_define(none, &old), 0); /* an agent that names no host */
        assert_int_equal(hv_list(hb, &all, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(all[0].vm_id, 22);
        free(all);
        assert_int_equal(hv_get(hb, 21, &d), -ENOENT);
        assert_int_equal(hv_undefine(hb, 21), -EPERM);
        assert_int_equal(hv_start(hb, 21), -EPERM);
        assert_int_equal(hv_define(hb, &p), -EEXIST);
        assert_int_equal(hv_list(ha, &all, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(all[0].vm_id, 21);
        assert_int_equal(all[1].vm_id, 22);
        free(all);
        assert_int_equal(hv_get(ha, 21, &d), 0);
        assert_int_equal(hv_start(ha, 21), 0);
        /* host-a writes its marks into the old domain: it is host-a's then
         * (for an agent that reads it afresh: each keeps what it read) */
        assert_int_equal(hv_set_counters(ha, 22, 1, 0), 0);
        hv_free(hb);
        assert_int_equal(hv_open(DEFAULT_URI, &hb), 0);
        assert_int_equal(hv_set_host(hb, "host-b"), 0);
        assert_int_equal(hv_get(hb, 22, &d), -ENOENT);
        assert_int_equal(hv_undefine(ha, 21), 0);
        assert_int_equal(hv_undefine(ha, 22), 0);
        hv_free(ha);
        hv_free(hb);
}

/* The domain's snapshots as hv_get and hv_list show them. */
static void expect_snaps(struct hv *hv, uint64_t vm_id, const uint64_t *want, size_t n)
{
        struct hv_domain d, *all = NULL;
        size_t n_all = 0, found = 0;
        assert_int_equal(hv_get(hv, vm_id, &d), 0);
        assert_int_equal(d.n_snaps, n);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(d.snaps[i], want[i]);
        assert_int_equal(hv_list(hv, &all, &n_all), 0);
        for (size_t k = 0; k < n_all; k++) {
                if (all[k].vm_id != vm_id)
                        continue;
                found = 1;
                assert_int_equal(all[k].n_snaps, n);
                for (size_t i = 0; i < n; i++)
                        assert_int_equal(all[k].snaps[i], want[i]);
        }
        free(all);
        assert_true(found);
}

static void test_snapshots(void **state)
{
        struct hv *hv = *state, *other = NULL;
        int frozen = -1;

        define(hv, 8, 0, 0);
        expect_snaps(hv, 8, NULL, 0);
        /* Of a stopped guest, then of a running one; made twice: once. */
        assert_int_equal(hv_snap_create(hv, 8, 12, &frozen), 0);
        assert_int_equal(frozen, 0);
        assert_int_equal(hv_snap_create(hv, 8, 12, &frozen), 0);
        assert_int_equal(hv_start(hv, 8), 0);
        assert_int_equal(hv_snap_create(hv, 8, 3, &frozen), 0);
        expect_snaps(hv, 8, (const uint64_t[]){ 3, 12 }, 2);
        /* Not only cached: a fresh connection lists them from libvirt. */
        assert_int_equal(hv_open(DEFAULT_URI, &other), 0);
        expect_snaps(other, 8, (const uint64_t[]){ 3, 12 }, 2);
        hv_free(other);
        /* A restore wants the guest stopped, and an existing snapshot. */
        assert_int_equal(hv_snap_revert(hv, 8, 12), -EBUSY);
        assert_int_equal(hv_destroy(hv, 8), 0);
        assert_int_equal(hv_snap_revert(hv, 8, 99), -ENOENT);
        assert_int_equal(hv_set_counters(hv, 8, 5, 0), 0);
        assert_int_equal(hv_snap_revert(hv, 8, 12), 0);
        /* The definition (and our metadata) is the snapshot's now. */
        expect_get(hv, 8, POWER_STOPPED, 0, 0);
        expect_snaps(hv, 8, (const uint64_t[]){ 3, 12 }, 2);
        assert_int_equal(hv_snap_delete(hv, 8, 12), 0);
        assert_int_equal(hv_snap_delete(hv, 8, 12), 0); /* gone already */
        expect_snaps(hv, 8, (const uint64_t[]){ 3 }, 1);
        /* Not ours: refused or nothing to do. */
        assert_int_equal(hv_snap_create(hv, 404, 1, &frozen), -ENOENT);
        assert_int_equal(hv_snap_delete(hv, 404, 1), 0);
        assert_int_equal(hv_snap_revert(hv, 404, 1), -ENOENT);
        /* Undefining takes the snapshots' metadata with it. */
        assert_int_equal(hv_undefine(hv, 8), 0);
        define(hv, 8, 0, 0);
        expect_snaps(hv, 8, NULL, 0);
        assert_int_equal(hv_undefine(hv, 8), 0);
}

static void test_missing_vm(void **state)
{
        struct hv *hv = *state;
        assert_int_equal(hv_start(hv, 404), -ENOENT);
        assert_int_equal(hv_shutdown(hv, 404), -ENOENT);
        assert_int_equal(hv_destroy(hv, 404), -ENOENT);
        assert_int_equal(hv_set_counters(hv, 404, 1, 1), -ENOENT);
        assert_int_equal(hv_undefine(hv, 404), 0);
}

static void test_list_sorted(void **state)
{
        struct hv *hv = *state;
        define(hv, 30, 0, 0);
        define(hv, 2, 1, 0);
        define(hv, 11, 0, 1);
        assert_int_equal(hv_start(hv, 11), 0);
        expect_list(hv,
                    (struct hv_domain[]){ { .vm_id = 2, .state = POWER_STOPPED, .reboot_done = 1, .rebuild_done = 0 },
                                          { .vm_id = 11, .state = POWER_RUNNING, .reboot_done = 0, .rebuild_done = 1 },
                                          { .vm_id = 30, .state = POWER_STOPPED, .reboot_done = 0, .rebuild_done = 0 } },
                    3);
        /* Undefining a running domain powers it off first. */
        assert_int_equal(hv_undefine(hv, 11), 0);
        assert_int_equal(hv_undefine(hv, 2), 0);
        assert_int_equal(hv_undefine(hv, 30), 0);
        expect_list(hv, NULL, 0);
}

/* hv.h: "an existing domain of that vm is redefined with the same
 * counters". Defining vm 8 twice must succeed and leave one domain, both
 * while it is stopped and while it runs. */
static void test_redefine(void **state)
{
        struct hv *hv = *state;
        const struct domxml_params p = {
                .vm_id = 8, .hostname = "vm8", .domain_type = "test", .vcpus = 1,
                .ram_mb = 128, .reboot_done = 1, .rebuild_done = 1,
        };
        assert_int_equal(hv_define(hv, &p), 0);
        assert_int_equal(hv_define(hv, &p), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 8, .state = POWER_STOPPED, .reboot_done = 1, .rebuild_done = 1 } }, 1);
        assert_int_equal(hv_start(hv, 8), 0);
        assert_int_equal(hv_define(hv, &p), 0);
        expect_list(hv, (struct hv_domain[]){ { .vm_id = 8, .state = POWER_RUNNING, .reboot_done = 1, .rebuild_done = 1 } }, 1);
        assert_int_equal(hv_undefine(hv, 8), 0);
}

/* ---- domains with our name but not our metadata ---- */

struct foreign_fx {
        char dir[64];
        char path[128];
        struct hv *hv;
};

#define META(id, rb, rl)                                                               \
        "<metadata><tasman:vm xmlns:tasman='" DOMXML_NS "'><tasman:id>" #id              \
        "</tasman:id><tasman:reboot>" #rb "</tasman:reboot><tasman:rebuild>" #rl         \
        "</tasman:rebuild></tasman:vm></metadata>"
#define DOM(name, meta, runstate)                                                     \
        "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>" \
        "<name>" name "</name>" meta "<memory>131072</memory><vcpu>1</vcpu>"          \
        "<os><type>hvm</type></os><test:runstate>" #runstate "</test:runstate></domain>"

/* runstate: libvirt's virDomainState (1 running, 3 paused, 5 shut off). */
static const char node_xml[] =
        "<node>\n"
        "<cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>"
        "<cores>4</cores><threads>1</threads></cpu>\n"
        "<memory>8388608</memory>\n"
        DOM("test", "", 1) "\n"
        DOM("tasman-77", "", 1) "\n"                       /* no metadata */
        DOM("tasman-78", META(79, 0, 0), 1) "\n"           /* someone else's id */
        DOM("tasman-80", META(80, 4, 2), 1) "\n"           /* ours, running */
        DOM("tasman-81", META(81, 0, 0), 3) "\n"           /* ours, paused */
        DOM("tasman-82", META(82, 1, 1), 5) "\n"           /* ours, shut off */
        DOM("tasman-083", META(83, 0, 0), 1) "\n"          /* not a name of ours */
        "</node>\n";

static int setup_foreign(void **state)
{
        struct foreign_fx *f = calloc(1, sizeof(*f));
        FILE *fp;
        char uri[160];

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-hv.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/node.xml", f->dir);
        fp = fopen(f->path, "w");
        assert_non_null(fp);
        fputs(node_xml, fp);
        assert_int_equal(fclose(fp), 0);
        snprintf(uri, sizeof(uri), "test://%s", f->path);
        assert_int_equal(hv_open(uri, &f->hv), 0);
        *state = f;
        return 0;
}

static int teardown_foreign(void **state)
{
        struct foreign_fx *f = *state;
        hv_free(f->hv);
        unlink(f->path);
        rmdir(f->dir);
        free(f);
        return 0;
}

static void test_foreign_not_listed(void **state)
{
        struct foreign_fx *f = *state;
        expect_list(f->hv,
                    (struct hv_domain[]){ { .vm_id = 80, .state = POWER_RUNNING, .reboot_done = 4, .rebuild_done = 2 },
                                          { .vm_id = 81, .state = POWER_PAUSED, .reboot_done = 0, .rebuild_done = 0 },
                                          { .vm_id = 82, .state = POWER_STOPPED, .reboot_done = 1, .rebuild_done = 1 } },
                    3);
        expect_get(f->hv, 81, POWER_PAUSED, 0, 0);
}

static void test_foreign_refused(void **state)
{
        struct foreign_fx *f = *state;
        struct hv_domain d;
        static const uint64_t ids[] = { 77, 78 };

        for (size_t i = 0; i < 2; i++) {
                uint64_t id = ids[i];
                assert_int_equal(hv_get(f->hv, id, &d), -ENOENT);
                assert_int_equal(hv_start(f->hv, id), -EPERM);
                assert_int_equal(hv_shutdown(f->hv, id), -EPERM);
                assert_int_equal(hv_destroy(f->hv, id), -EPERM);
                assert_int_equal(hv_set_counters(f->hv, id, 1, 1), -EPERM);
                assert_int_equal(hv_undefine(f->hv, id), -EPERM);
                const struct domxml_params p = {
                        .vm_id = id, .hostname = "x", .domain_type = "test", .vcpus = 1,
                        .ram_mb = 128,
                };
                assert_int_equal(hv_define(f->hv, &p), -EEXIST);
                /* Still there, untouched. */
                assert_int_equal(hv_undefine(f->hv, id), -EPERM);
        }
        /* Ours next to them still works. */
        assert_int_equal(hv_destroy(f->hv, 80), 0);
        expect_get(f->hv, 80, POWER_STOPPED, 4, 2);
        assert_int_equal(hv_undefine(f->hv, 80), 0);
        assert_int_equal(hv_get(f->hv, 80, &d), -ENOENT);
        expect_list(f->hv,
                    (struct hv_domain[]){ { .vm_id = 81, .state = POWER_PAUSED, .reboot_done = 0, .rebuild_done = 0 },
                                          { .vm_id = 82, .state = POWER_STOPPED, .reboot_done = 1, .rebuild_done = 1 } },
                    2);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_open_bad_uri),
                cmocka_unit_test_setup_teardown(test_node_info, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_storage, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_nics, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_two_hosts, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_list_ignores_foreign, setup_default,
                                                teardown_hv),
                cmocka_unit_test_setup_teardown(test_lifecycle, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_set_counters, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_missing_vm, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_snapshots, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_list_sorted, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_redefine, setup_default, teardown_hv),
                cmocka_unit_test_setup_teardown(test_foreign_not_listed, setup_foreign,
                                                teardown_foreign),
                cmocka_unit_test_setup_teardown(test_foreign_refused, setup_foreign,
                                                teardown_foreign),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
