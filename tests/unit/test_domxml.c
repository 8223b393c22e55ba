/* domxml: domain XML against golden files, domain names, and our
 * <metadata> element in both forms libvirt hands back.
 *
 * Golden files live in tests/fixtures/golden/ (tests run from the repo
 * root). TASMAN_TEST_REGENERATE=1 rewrites them from the current output,
 * as libvirt's VIR_TEST_REGENERATE_OUTPUT does; review the diff after. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domxml.h"

#define GOLDEN_DIR "tests/fixtures/golden"

static int regenerate(void)
{
        const char *v = getenv("TASMAN_TEST_REGENERATE");
        return v && strcmp(v, "1") == 0;
}

static char *read_all(const char *path, size_t *ret_len)
{
        FILE *f = fopen(path, "rb");
        char *buf = NULL;
        size_t len = 0, cap = 0, n;

        if (!f)
                return NULL;
        do {
                if (cap - len < 4096) {
                        cap = cap ? cap * 2 : 8192;
                        buf = realloc(buf, cap + 1);
                        assert_non_null(buf);
                }
                n = fread(buf + len, 1, cap - len, f);
                len += n;
        } while (n > 0);
        fclose(f);
        buf[len] = '\0';
        *ret_len = len;
        return buf;
}

/* Compares text with the golden file byte for byte (or rewrites it). */
static void check_golden(const char *name, const char *text)
{
        char path[256];
        size_t len = 0;

        snprintf(path, sizeof(path), GOLDEN_DIR "/%s", name);
        if (regenerate()) {
                FILE *f = fopen(path, "wb");
                if (!f)
                        fail_msg("cannot write %s (run from the repo root)", path);
                assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
                assert_int_equal(fclose(f), 0);
                return;
        }
        char *want = read_all(path, &len);
        if (!want)
                fail_msg("cannot read %s: run from the repo root, or make it with "
                         "TASMAN_TEST_REGENERATE=1",
                         path);
        if (len != strlen(text) || memcmp(want, text, len) != 0) {
                size_t i = 0;
                while (i < len && want[i] == text[i])
                        i++;
                fprintf(stderr, "--- %s\n%s--- got\n%s---\n", path, want, text);
                free(want);
                fail_msg("%s differs from the output at byte %zu", path, i);
        }
        free(want);
}

static void test_golden_test_domain(void **state)
{
        const struct domxml_params p = {
                .vm_id = 7,
                .hostname = "web1",
                .domain_type = "test",
                .vcpus = 1,
                .ram_mb = 512,
                .kernel = "",
                .initrd = "/ignored/without/kernel",
                .cmdline = "ignored",
                .console_log = NULL,
                .reboot_done = 0,
                .rebuild_done = 0,
        };
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        check_golden("domxml_test.xml", xml);
        free(xml);
}

static void test_golden_qemu_kernel(void **state)
{
        const struct domxml_params p = {
                .vm_id = 9223372036854775807ULL,
                .hostname = "a<b&'\"",
                .domain_type = "qemu",
                .vcpus = 4,
                .ram_mb = 8192,
                .kernel = "/var/lib/tasman/images/vmlinuz",
                .initrd = "/var/lib/tasman/images/initrd.img",
                .cmdline = "console=ttyS0 root=/dev/vda rw quiet & x<y",
                .console_log = "/var/log/tasman/console/vm-'1'.log",
                .reboot_done = 3,
                .rebuild_done = 18446744073709551615ULL,
        };
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        check_golden("domxml_qemu_kernel.xml", xml);
        /* Nothing raw from the broker's strings slipped through. */
        assert_non_null(strstr(xml, "<title>a&lt;b&amp;&apos;&quot;</title>"));
        assert_null(strstr(xml, "a<b"));
        free(xml);
}

/* A guest as the agent makes it: its disk (with I/O limits) and its
 * cloud-init seed, booting from the disk. */
static void test_golden_disk_seed(void **state)
{
        const struct domxml_params p = {
                .vm_id = 42,
                .hostname = "web1",
                .domain_type = "kvm",
                .vcpus = 2,
                .ram_mb = 2048,
                .console_log = "/var/lib/tasman-agent/console/tasman-42.log",
                .disk = "/var/lib/tasman-agent/disks/hdd/tasman-42.qcow2",
                .cpu_cap = 50,
                .disk_iops = 500,
                .disk_bps = 104857600,
                .seed = "/var/lib/tasman-agent/seeds/tasman-42&'.iso",
                .rebuild_done = 2,
        };
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        check_golden("domxml_disk_seed.xml", xml);
        free(xml);
}

/* A public NIC (filtered to its addresses) and a private network's. */
static void test_golden_nics(void **state)
{
        const struct domxml_nic nics[] = {
                { .bridge = "tbrpub", .mac = "52:54:00:00:00:2a", .filter = "clean-traffic",
                  .ips = { "192.0.2.10" }, .n_ips = 1 },
                { .bridge = "tbr4097", .mac = "52:54:00:00:10:01", .mtu = 1450,
                  .filter = "tasman-clean-traffic", .ips = { "10.0.0.5", "10.0.0.6" }, .n_ips = 2,
                  .ips6 = { "fd00::5" }, .n_ips6 = 1 },
                { .bridge = "tbr9'", .mac = "52:54:00:00:10:02" },
        };
        const struct domxml_params p = {
                .vm_id = 43,
                .hostname = "net1",
                .domain_type = "qemu",
                .vcpus = 1,
                .ram_mb = 512,
                .nics = nics,
                .n_nics = 3,
        };
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        check_golden("domxml_nics.xml", xml);
        free(xml);
}

/* The owner's host id: in the document and in the marks, read back;
 * malformed ones refused. */
static void test_host_marks(void **state)
{
        struct domxml_marks m = { .reboot_done = 2 }, got;
        uint64_t id;
        (void)state;
        snprintf(m.host, sizeof(m.host), "hv-01.site_a");
        char *meta = domxml_metadata_marks(5, &m);
        assert_non_null(meta);
        assert_non_null(strstr(meta, "<host>hv-01.site_a</host>"));
        assert_int_equal(domxml_parse_marks(meta, &id, &got), 0);
        assert_string_equal(got.host, "hv-01.site_a");
        assert_int_equal(got.reboot_done, 2);
        free(meta);
        const struct domxml_params p = { .vm_id = 9, .hostname = "h", .domain_type = "test",
                                         .vcpus = 1, .ram_mb = 64, .host = "hv-02" };
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        assert_int_equal(domxml_parse_marks(strstr(xml, "<tasman:vm"), &id, &got), 0);
        assert_string_equal(got.host, "hv-02");
        free(xml);
        assert_int_equal(domxml_parse_marks("<vm><id>1</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                                            &id, &got), 0);
        assert_string_equal(got.host, "");
        assert_int_equal(domxml_parse_marks("<vm><id>1</id><reboot>0</reboot><rebuild>0</rebuild>"
                                            "<host>a b</host></vm>", &id, &got), -EINVAL);
        assert_int_equal(domxml_parse_marks("<vm><id>1</id><reboot>0</reboot><rebuild>0</rebuild>"
                                            "<host></host></vm>", &id, &got), -EINVAL);
        assert_true(domxml_host_valid("a"));
        assert_false(domxml_host_valid(""));
        assert_false(domxml_host_valid("a/b"));
        char longer[80];
        memset(longer, 'a', sizeof(longer) - 1);
        longer[sizeof(longer) - 1] = '\0';
        assert_false(domxml_host_valid(longer));
}

/* domxml_interface writes what domxml_build writes for that NIC, and the
 * MACs read back from a whole document are the NICs', in order. */
static void test_interface_and_macs(void **state)
{
        const struct domxml_nic nics[] = {
                { .bridge = "tbrpub", .mac = "52:54:00:00:00:2A", .filter = "tasman-clean-traffic",
                  .ips = { "192.0.2.10" }, .n_ips = 1, .ips6 = { "2001:db8::a" }, .n_ips6 = 1 },
                { .bridge = "tbr4097", .mac = "52:54:00:00:10:01", .mtu = 1450 },
        };
        const struct domxml_params p = { .vm_id = 44, .hostname = "n", .domain_type = "qemu",
                                         .vcpus = 1, .ram_mb = 64, .nics = nics, .n_nics = 2 };
        char macs[4][18];
        size_t n = 0;
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        for (size_t i = 0; i < 2; i++) {
                char *one = domxml_interface(&nics[i]);
                assert_non_null(one);
                assert_non_null(strstr(xml, one));
                free(one);
        }
        assert_int_equal(domxml_parse_macs(xml, macs, 4, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(macs[0], "52:54:00:00:00:2a");
        assert_string_equal(macs[1], "52:54:00:00:10:01");
        /* only one room: both counted, one written */
        assert_int_equal(domxml_parse_macs(xml, macs, 1, &n), 0);
        assert_int_equal(n, 2);
        free(xml);
        /* libvirt's own form (double quotes), none, and malformed ones */
        assert_int_equal(domxml_parse_macs("<interface type=\"bridge\"><mac address=\"AA:bb:cc:dd:ee:ff\"/>"
                                           "</interface>", macs, 4, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(macs[0], "aa:bb:cc:dd:ee:ff");
        assert_int_equal(domxml_parse_macs("<domain/>", macs, 4, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(domxml_parse_macs("<interface><mac address='aa:bb:cc:dd:ee'/></interface>",
                                           macs, 4, &n), -EINVAL);
        assert_int_equal(domxml_parse_macs("<interface><mac address='aa:bb:cc:dd:ee:fg'/></interface>",
                                           macs, 4, &n), -EINVAL);
        assert_int_equal(domxml_parse_macs("<interface><mac address='aa:bb:cc:dd:ee:ff", macs, 4, &n),
                         0); /* no closing tag: not an interface we can read */
}

/* Without initrd/cmdline only the kernel line appears. */
static void test_golden_kvm_kernel_only(void **state)
{
        const struct domxml_params p = {
                .vm_id = 42,
                .hostname = "db.example.com",
                .domain_type = "kvm",
                .vcpus = 2,
                .ram_mb = 2048,
                .kernel = "/boot/vmlinuz",
                .initrd = NULL,
                .cmdline = "",
                .console_log = "",
                .reboot_done = 1,
                .rebuild_done = 2,
        };
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        check_golden("domxml_kvm_kernel_only.xml", xml);
        free(xml);
}

/* The metadata inside a built domain parses back. */
static void test_build_metadata_parses(void **state)
{
        const struct domxml_params p = {
                .vm_id = 1234, .hostname = "h", .domain_type = "test", .vcpus = 1,
                .ram_mb = 128, .reboot_done = 5, .rebuild_done = 6,
        };
        uint64_t id, rb, rl;
        (void)state;
        char *xml = domxml_build(&p);
        assert_non_null(xml);
        const char *meta = strstr(xml, "<" DOMXML_NS_PREFIX ":vm");
        assert_non_null(meta);
        assert_int_equal(domxml_parse_metadata(meta, &id, &rb, &rl), 0);
        assert_int_equal(id, 1234);
        assert_int_equal(rb, 5);
        assert_int_equal(rl, 6);
        assert_non_null(strstr(xml, "<name>tasman-1234</name>"));
        free(xml);
}

static void test_names(void **state)
{
        static const struct {
                const char *name;
                int ret;
                uint64_t id;
        } cases[] = {
                { "tasman-1", 0, 1 },
                { "tasman-42", 0, 42 },
                { "tasman-1000000", 0, 1000000 },
                { "tasman-9223372036854775807", 0, 9223372036854775807ULL }, /* INT64_MAX */
                { "tasman-9999999999999999999", 0, 9999999999999999999ULL }, /* 19 digits */
                { "tasman-10000000000000000000", -EINVAL, 0 },                /* 20 digits */
                { "tasman-18446744073709551615", -EINVAL, 0 },                /* UINT64_MAX */
                { "tasman-99999999999999999999", -EINVAL, 0 },
                { "tasman-0", -EINVAL, 0 },
                { "tasman-01", -EINVAL, 0 },
                { "tasman-00", -EINVAL, 0 },
                { "tasman-x", -EINVAL, 0 },
                { "tasman-5x", -EINVAL, 0 },
                { "tasman-5 ", -EINVAL, 0 },
                { "tasman- 5", -EINVAL, 0 },
                { "tasman-+5", -EINVAL, 0 },
                { "tasman--5", -EINVAL, 0 },
                { "tasman-", -EINVAL, 0 },
                { "tasman", -EINVAL, 0 },
                { "Tasman-5", -EINVAL, 0 },
                { "other-5", -EINVAL, 0 },
                { "test", -EINVAL, 0 },
                { "xtasman-5", -EINVAL, 0 },
                { "", -EINVAL, 0 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t id = 4242;
                int r = domxml_parse_name(cases[i].name, &id);
                if (r != cases[i].ret)
                        fail_msg("'%s': %d, want %d", cases[i].name, r, cases[i].ret);
                assert_int_equal(id, r == 0 ? cases[i].id : 4242);
        }
}

static void test_name_round_trip(void **state)
{
        static const uint64_t ids[] = { 1, 9, 10, 77, 123456789, 9223372036854775807ULL };
        (void)state;
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
                char name[64];
                uint64_t back = 0;
                domxml_name(ids[i], name, sizeof(name));
                assert_int_equal(strncmp(name, "tasman-", 7), 0);
                assert_int_equal(domxml_parse_name(name, &back), 0);
                assert_int_equal(back, ids[i]);
        }
        char small[10];
        domxml_name(123456789, small, sizeof(small));
        assert_string_equal(small, "tasman-12");
}

static void test_metadata_forms(void **state)
{
        static const struct {
                const char *xml;
                uint64_t id, rb, rl;
        } cases[] = {
                /* What virDomainGetMetadata returns: no prefix. */
                { "<vm>\n  <id>5</id>\n  <reboot>2</reboot>\n  <rebuild>1</rebuild>\n</vm>", 5,
                  2, 1 },
                /* As written into the domain XML. */
                { "<tasman:vm xmlns:tasman=\"" DOMXML_NS "\">\n"
                  "  <tasman:id>77</tasman:id>\n"
                  "  <tasman:reboot>0</tasman:reboot>\n"
                  "  <tasman:rebuild>12</tasman:rebuild>\n"
                  "</tasman:vm>\n",
                  77, 0, 12 },
                /* Leading whitespace, other order, one line. */
                { "\n\t <vm><rebuild>3</rebuild><reboot>4</reboot><id>9</id></vm>", 9, 4, 3 },
                { "<vm><id>18446744073709551615</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                  18446744073709551615ULL, 0, 0 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t id = 0, rb = 0, rl = 0;
                int r = domxml_parse_metadata(cases[i].xml, &id, &rb, &rl);
                if (r != 0)
                        fail_msg("case %zu refused: %d", i, r);
                assert_int_equal(id, cases[i].id);
                assert_int_equal(rb, cases[i].rb);
                assert_int_equal(rl, cases[i].rl);
        }
}

static void test_metadata_malformed(void **state)
{
        static const char *const cases[] = {
                "",
                "   ",
                "<foo><id>5</id><reboot>0</reboot><rebuild>0</rebuild></foo>",
                "<vm><reboot>0</reboot><rebuild>0</rebuild></vm>",       /* no id */
                "<vm><id>5</id><rebuild>0</rebuild></vm>",                /* no reboot */
                "<vm><id>5</id><reboot>0</reboot></vm>",                  /* no rebuild */
                "<vm><id></id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>x</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>-1</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id> 5</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>5 </id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>5x</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>5</id><reboot>0</reboot><rebuild>0",            /* cut */
                "<vm><id>18446744073709551616</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<vm><id>99999999999999999999999</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
                "<other:vm><other:id>5</other:id><other:reboot>0</other:reboot>"
                "<other:rebuild>0</other:rebuild></other:vm>",
                "text <vm><id>5</id><reboot>0</reboot><rebuild>0</rebuild></vm>",
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t id = 4242, rb = 4242, rl = 4242;
                int r = domxml_parse_metadata(cases[i], &id, &rb, &rl);
                if (r != -EINVAL)
                        fail_msg("'%s': %d, want -EINVAL", cases[i], r);
                assert_int_equal(id, 4242);
                assert_int_equal(rb, 4242);
                assert_int_equal(rl, 4242);
        }
        uint64_t id, rb, rl;
        assert_int_equal(domxml_parse_metadata(NULL, &id, &rb, &rl), -EINVAL);
}

static void test_metadata_round_trip(void **state)
{
        static const uint64_t vals[][3] = {
                { 1, 0, 0 },
                { 5, 2, 1 },
                { 9223372036854775807ULL, 18446744073709551615ULL, 12345 },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
                uint64_t id, rb, rl;
                char *m = domxml_metadata(vals[i][0], vals[i][1], vals[i][2]);
                assert_non_null(m);
                /* Without namespace: libvirt adds it. */
                assert_null(strchr(m, ':'));
                assert_int_equal(strncmp(m, "<vm>", 4), 0);
                assert_int_equal(domxml_parse_metadata(m, &id, &rb, &rl), 0);
                assert_int_equal(id, vals[i][0]);
                assert_int_equal(rb, vals[i][1]);
                assert_int_equal(rl, vals[i][2]);
                free(m);
        }
        char *m = domxml_metadata(5, 2, 1);
        assert_string_equal(m, "<vm><id>5</id><reboot>2</reboot><rebuild>1</rebuild></vm>");
        free(m);
}

/* Every mark survives what we write and libvirt hands back; marks older
 * agents did not write read as 0. */
static void test_marks_round_trip(void **state)
{
        const struct domxml_marks m = { .reboot_done = 3, .rebuild_done = 4, .resize_done = 5,
                                        .rescue = 1, .restore_done = 6 };
        struct domxml_marks got;
        uint64_t id = 0;
        char *xml = domxml_metadata_marks(42, &m);
        (void)state;
        assert_non_null(xml);
        assert_int_equal(domxml_parse_marks(xml, &id, &got), 0);
        free(xml);
        assert_int_equal(id, 42);
        assert_int_equal(got.reboot_done, 3);
        assert_int_equal(got.rebuild_done, 4);
        assert_int_equal(got.resize_done, 5);
        assert_int_equal(got.rescue, 1);
        assert_int_equal(got.restore_done, 6);
        assert_int_equal(domxml_parse_marks("<vm><id>7</id><reboot>1</reboot><rebuild>2</rebuild>"
                                            "</vm>",
                                            &id, &got),
                         0);
        assert_int_equal(got.resize_done, 0);
        assert_int_equal(got.rescue, 0);
        assert_int_equal(got.restore_done, 0);
        /* In the domain document, with our prefix. */
        const struct domxml_params p = { .vm_id = 9, .hostname = "h", .domain_type = "test",
                                         .vcpus = 1, .ram_mb = 64, .restore_done = 11 };
        xml = domxml_build(&p);
        assert_non_null(xml);
        assert_non_null(strstr(xml, "<tasman:restore>11</tasman:restore>"));
        assert_int_equal(domxml_parse_marks(strstr(xml, "<tasman:vm"), &id, &got), 0);
        assert_int_equal(got.restore_done, 11);
        free(xml);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_marks_round_trip),
                cmocka_unit_test(test_golden_test_domain),
                cmocka_unit_test(test_golden_qemu_kernel),
                cmocka_unit_test(test_golden_disk_seed),
                cmocka_unit_test(test_golden_nics),
                cmocka_unit_test(test_golden_kvm_kernel_only),
                cmocka_unit_test(test_interface_and_macs),
                cmocka_unit_test(test_host_marks),
                cmocka_unit_test(test_build_metadata_parses),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_name_round_trip),
                cmocka_unit_test(test_metadata_forms),
                cmocka_unit_test(test_metadata_malformed),
                cmocka_unit_test(test_metadata_round_trip),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
