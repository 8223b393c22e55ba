/* codec: every message type round-trips field by field, and every kind of
 * bad input (garbage, truncation, oversized strings and lists, huge
 * lengths) is refused with the struct left empty. Hostile wire input is
 * built with the generated protobuf-c API, which only codec.c uses
 * otherwise. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"
#include "tasman.pb-c.h"

/* ---- helpers ---- */

static void fill_str(char *dst, size_t n, char c)
{
        memset(dst, c, n - 1);
        dst[n - 1] = '\0';
}

/* Encodes, checks, decodes into *out. */
static void round_trip(const struct tmsg *in, struct tmsg *out)
{
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(codec_encode(in, &buf, &len), 0);
        assert_non_null(buf);
        assert_true(len <= TMSG_MAX_BYTES);
        assert_int_equal(codec_decode(buf, len, out), 0);
        free(buf);
        assert_int_equal(out->type, in->type);
        assert_int_equal(out->request_id, in->request_id);
}

static void assert_empty(const struct tmsg *m)
{
        static const struct tmsg zero;
        assert_int_equal(m->type, TMSG_NONE);
        assert_memory_equal(m, &zero, sizeof(zero));
}

/* Packs an Envelope built by hand into a malloc'd buffer. */
static uint8_t *pack_env(const Tasman__Envelope *env, size_t *ret_len)
{
        size_t len = tasman__envelope__get_packed_size(env);
        uint8_t *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        assert_int_equal(tasman__envelope__pack(env, buf), len);
        *ret_len = len;
        return buf;
}

static void decode_expect(const uint8_t *buf, size_t len, int want)
{
        struct tmsg m;
        memset(&m, 0xa5, sizeof(m)); /* overwritten either way */
        int r = codec_decode(buf, len, &m);
        if (r != want)
                fail_msg("decode of %zu bytes: %d, want %d", len, r, want);
        if (r < 0)
                assert_empty(&m);
        else
                tmsg_clear(&m);
}

static void hello_sample(struct tmsg *m)
{
        memset(m, 0, sizeof(*m));
        m->type = TMSG_HELLO;
        m->request_id = 42;
        strcpy(m->hello.host_id, "node-1.ams1");
        strcpy(m->hello.site, "ams1");
        strcpy(m->hello.underlay_ip, "10.0.0.7");
        strcpy(m->hello.boot_id, "6f1c2e7a-0b7e-4a55-9d8e-3c2a1b0f9e11");
        strcpy(m->hello.agent_version, "0.1.0");
        strcpy(m->hello.hv_type, "kvm");
        m->hello.vcpus = 64;
        m->hello.ram_mb = 512ULL * 1024;
        m->hello.disk_gb = 1ULL << 40;
        m->hello.hdd_gb = 12345;
}

static void sync_reply_sample(struct tmsg *m, size_t n)
{
        memset(m, 0, sizeof(*m));
        m->type = TMSG_SYNC_REPLY;
        m->request_id = 7;
        m->sync_reply.generation = 99;
        m->sync_reply.n_domains = n;
        m->sync_reply.domains = n ? calloc(n, sizeof(struct dom_desired)) : NULL;
        for (size_t i = 0; i < n; i++) {
                struct dom_desired *d = &m->sync_reply.domains[i];
                d->vm_id = 1000 + i;
                snprintf(d->hostname, sizeof(d->hostname), "web-%zu", i);
                d->vcpus = (uint32_t)(1 + i % 8);
                d->ram_mb = (uint32_t)(512 * (1 + i % 4));
                d->disk_gb = (uint32_t)(10 + i);
                d->power = i % 2 ? POWER_STOPPED : POWER_RUNNING;
                d->reboot_seq = i;
                d->rebuild_seq = i * 3;
                snprintf(d->image, sizeof(d->image), "debian-%zu", 11 + i % 2);
                d->storage = i % 3 ? STORAGE_SSD : STORAGE_HDD;
                d->n_snaps = i % (TMSG_MAX_SNAPS + 1);
                for (size_t k = 0; k < d->n_snaps; k++)
                        d->snaps[k] = (struct snap_desired){ .id = 7 + i * 100 + k, .online = (int)(k % 2) };
                d->restore_seq = i % 5;
                d->restore_snap = i % 5 ? 7 + i : 0;
                d->source_vm = i % 7 ? 0 : 3 + i;
                d->source_snap = i % 7 ? 0 : 9 + i;
        }
}

static void sync_sample(struct tmsg *m, size_t n)
{
        memset(m, 0, sizeof(*m));
        m->type = TMSG_SYNC;
        m->request_id = UINT64_MAX;
        strcpy(m->sync.host_id, "node-2");
        strcpy(m->sync.boot_id, "boot-b");
        m->sync.applied_generation = 123456789012ULL;
        m->sync.max_hold_ms = 25000;
        m->sync.vcpus_used = 12;
        m->sync.ram_mb_used = 24576;
        m->sync.partial = 1;
        m->sync.n_present = 17;
        m->sync.n_domains = n;
        m->sync.domains = n ? calloc(n, sizeof(struct dom_observed)) : NULL;
        for (size_t i = 0; i < n; i++) {
                struct dom_observed *d = &m->sync.domains[i];
                d->vm_id = UINT64_MAX - i;
                d->state = (enum power)(i % POWER__MAX);
                d->reboot_done = i + 1;
                d->rebuild_done = i + 2;
                if (i % 3 == 0)
                        snprintf(d->error, sizeof(d->error), "cannot start: error %zu", i);
                d->n_snaps = (i * 7) % (TMSG_MAX_SNAPS + 1);
                for (size_t k = 0; k < d->n_snaps; k++)
                        d->snaps[k] = UINT64_MAX - k;
                d->restore_done = i * 11;
                d->snap_failed = i % 4 ? 0 : i + 5;
        }
}

/* ---- round trips ---- */

static void test_hello(void **state)
{
        struct tmsg in, out;
        (void)state;

        hello_sample(&in);
        round_trip(&in, &out);
        assert_string_equal(out.hello.host_id, "node-1.ams1");
        assert_string_equal(out.hello.site, "ams1");
        assert_string_equal(out.hello.underlay_ip, "10.0.0.7");
        assert_string_equal(out.hello.boot_id, "6f1c2e7a-0b7e-4a55-9d8e-3c2a1b0f9e11");
        assert_string_equal(out.hello.agent_version, "0.1.0");
        assert_string_equal(out.hello.hv_type, "kvm");
        assert_int_equal(out.hello.vcpus, 64);
        assert_int_equal(out.hello.ram_mb, 512ULL * 1024);
        assert_int_equal(out.hello.disk_gb, 1ULL << 40);
        assert_int_equal(out.hello.hdd_gb, 12345);
        tmsg_clear(&out);
        assert_empty(&out);

        /* Every string at its longest (TMSG_STR - 1) still fits. */
        fill_str(in.hello.host_id, TMSG_STR, 'h');
        fill_str(in.hello.site, TMSG_STR, 's');
        fill_str(in.hello.underlay_ip, TMSG_STR, 'u');
        fill_str(in.hello.boot_id, TMSG_STR, 'b');
        fill_str(in.hello.agent_version, TMSG_STR, 'a');
        fill_str(in.hello.hv_type, TMSG_STR, 't');
        round_trip(&in, &out);
        assert_memory_equal(&out.hello, &in.hello, sizeof(in.hello));
        tmsg_clear(&out);

        /* And the empty message: all defaults. */
        memset(&in, 0, sizeof(in));
        in.type = TMSG_HELLO;
        round_trip(&in, &out);
        assert_memory_equal(&out.hello, &in.hello, sizeof(in.hello));
        tmsg_clear(&out);
}

static void test_hello_reply(void **state)
{
        static const struct msg_hello_reply cases[] = {
                { 0, 0 }, { 1, 30000 }, { UINT64_MAX, UINT32_MAX },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct tmsg in = { .type = TMSG_HELLO_REPLY, .request_id = i }, out;
                in.hello_reply = cases[i];
                round_trip(&in, &out);
                assert_int_equal(out.hello_reply.host_num, cases[i].host_num);
                assert_int_equal(out.hello_reply.hold_ms, cases[i].hold_ms);
                tmsg_clear(&out);
        }
}

static void test_sync(void **state)
{
        static const size_t counts[] = { 0, 1, 5, 1000, TMSG_MAX_DOMAINS };
        (void)state;
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
                struct tmsg in, out;
                sync_sample(&in, counts[c]);
                round_trip(&in, &out);
                const struct msg_sync *a = &in.sync, *b = &out.sync;
                assert_string_equal(b->host_id, a->host_id);
                assert_string_equal(b->boot_id, a->boot_id);
                assert_int_equal(b->applied_generation, a->applied_generation);
                assert_int_equal(b->max_hold_ms, a->max_hold_ms);
                assert_int_equal(b->vcpus_used, a->vcpus_used);
                assert_int_equal(b->ram_mb_used, a->ram_mb_used);
                assert_int_equal(b->partial, 1);
                assert_int_equal(b->n_present, a->n_present);
                assert_int_equal(b->n_domains, counts[c]);
                if (counts[c] == 0)
                        assert_null(b->domains);
                for (size_t i = 0; i < counts[c]; i++) {
                        assert_int_equal(b->domains[i].vm_id, a->domains[i].vm_id);
                        assert_int_equal(b->domains[i].state, a->domains[i].state);
                        assert_int_equal(b->domains[i].reboot_done, a->domains[i].reboot_done);
                        assert_int_equal(b->domains[i].rebuild_done, a->domains[i].rebuild_done);
                        assert_string_equal(b->domains[i].error, a->domains[i].error);
                        assert_int_equal(b->domains[i].n_snaps, a->domains[i].n_snaps);
                        for (size_t k = 0; k < a->domains[i].n_snaps; k++)
                                assert_int_equal(b->domains[i].snaps[k], a->domains[i].snaps[k]);
                        assert_int_equal(b->domains[i].restore_done, a->domains[i].restore_done);
                        assert_int_equal(b->domains[i].snap_failed, a->domains[i].snap_failed);
                }
                tmsg_clear(&out);
                assert_empty(&out);
                tmsg_clear(&in);
        }
}

/* partial is a flag: any nonzero value is sent as 1. */
static void test_sync_partial_flag(void **state)
{
        struct tmsg in, out;
        (void)state;
        sync_sample(&in, 0);
        in.sync.partial = 0;
        round_trip(&in, &out);
        assert_int_equal(out.sync.partial, 0);
        tmsg_clear(&out);
        in.sync.partial = 77;
        round_trip(&in, &out);
        assert_int_equal(out.sync.partial, 1);
        tmsg_clear(&out);
}

static void test_sync_reply(void **state)
{
        static const size_t counts[] = { 0, 1, 3, 1000, TMSG_MAX_DOMAINS };
        (void)state;
        for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
                struct tmsg in, out;
                sync_reply_sample(&in, counts[c]);
                round_trip(&in, &out);
                assert_int_equal(out.sync_reply.generation, 99);
                assert_int_equal(out.sync_reply.n_domains, counts[c]);
                if (counts[c] == 0)
                        assert_null(out.sync_reply.domains);
                for (size_t i = 0; i < counts[c]; i++) {
                        const struct dom_desired *a = &in.sync_reply.domains[i];
                        const struct dom_desired *b = &out.sync_reply.domains[i];
                        assert_int_equal(b->vm_id, a->vm_id);
                        assert_string_equal(b->hostname, a->hostname);
                        assert_int_equal(b->vcpus, a->vcpus);
                        assert_int_equal(b->ram_mb, a->ram_mb);
                        assert_int_equal(b->disk_gb, a->disk_gb);
                        assert_int_equal(b->power, a->power);
                        assert_int_equal(b->reboot_seq, a->reboot_seq);
                        assert_int_equal(b->rebuild_seq, a->rebuild_seq);
                        assert_string_equal(b->image, a->image);
                        assert_int_equal(b->storage, a->storage);
                        assert_int_equal(b->n_snaps, a->n_snaps);
                        for (size_t k = 0; k < a->n_snaps; k++) {
                                assert_int_equal(b->snaps[k].id, a->snaps[k].id);
                                assert_int_equal(b->snaps[k].online, a->snaps[k].online);
                        }
                        assert_int_equal(b->restore_seq, a->restore_seq);
                        assert_int_equal(b->restore_snap, a->restore_snap);
                        assert_int_equal(b->source_vm, a->source_vm);
                        assert_int_equal(b->source_snap, a->source_snap);
                }
                tmsg_clear(&out);
                tmsg_clear(&in);
        }
}

/* NICs of domains, networks with their remote hosts and entries. */
static void test_sync_reply_networks(void **state)
{
        struct tmsg in, out;
        (void)state;
        sync_reply_sample(&in, 3);
        struct dom_desired *d = &in.sync_reply.domains[1];
        d->n_nics = 2;
        d->nics[0] = (struct nic_desired){ .vni = 0, .mac = "52:54:00:00:00:01", .n_addrs = 2,
                                           .addrs = { "192.0.2.10/24", "2001:db8::10/64" },
                                           .gateway4 = "192.0.2.1", .gateway6 = "2001:db8::1" };
        d->nics[1] = (struct nic_desired){ .vni = 4097, .mac = "52:54:00:00:10:01", .n_addrs = 1,
                                           .addrs = { "10.0.0.5/24" } };
        struct msg_sync_reply *r = &in.sync_reply;
        r->n_networks = 2;
        r->networks = calloc(2, sizeof(*r->networks));
        r->n_remotes = 3;
        r->remotes = calloc(3, sizeof(*r->remotes));
        r->n_fdb = 2;
        r->fdb = calloc(2, sizeof(*r->fdb));
        assert_true(r->networks && r->remotes && r->fdb);
        strcpy(r->remotes[0], "198.51.100.2");
        strcpy(r->remotes[1], "198.51.100.3");
        strcpy(r->remotes[2], "2001:db8:ff::4");
        strcpy(r->fdb[0].mac, "52:54:00:00:20:01");
        strcpy(r->fdb[0].host, "198.51.100.2");
        strcpy(r->fdb[1].mac, "52:54:00:00:20:02");
        strcpy(r->fdb[1].host, "2001:db8:ff::4");
        r->networks[0] = (struct net_desired){ .vni = 4097, .mtu = 1450, .first_remote = 0,
                                               .n_remotes = 2, .first_fdb = 0, .n_fdb = 1 };
        r->networks[1] = (struct net_desired){ .vni = 9, .first_remote = 2, .n_remotes = 1,
                                               .first_fdb = 1, .n_fdb = 1 };
        round_trip(&in, &out);
        const struct msg_sync_reply *o = &out.sync_reply;
        assert_int_equal(o->domains[0].n_nics, 0);
        assert_int_equal(o->domains[1].n_nics, 2);
        const struct nic_desired *n0 = &o->domains[1].nics[0], *n1 = &o->domains[1].nics[1];
        assert_int_equal(n0->vni, 0);
        assert_string_equal(n0->mac, "52:54:00:00:00:01");
        assert_int_equal(n0->n_addrs, 2);
        assert_string_equal(n0->addrs[1], "2001:db8::10/64");
        assert_string_equal(n0->gateway4, "192.0.2.1");
        assert_string_equal(n0->gateway6, "2001:db8::1");
        assert_int_equal(n1->vni, 4097);
        assert_string_equal(n1->addrs[0], "10.0.0.5/24");
        assert_string_equal(n1->gateway4, "");
        assert_int_equal(o->n_networks, 2);
        assert_int_equal(o->networks[0].vni, 4097);
        assert_int_equal(o->networks[0].mtu, 1450);
        assert_int_equal(o->networks[0].n_remotes, 2);
        assert_string_equal(o->remotes[o->networks[0].first_remote + 1], "198.51.100.3");
        assert_int_equal(o->networks[1].n_remotes, 1);
        assert_string_equal(o->remotes[o->networks[1].first_remote], "2001:db8:ff::4");
        assert_int_equal(o->networks[1].n_fdb, 1);
        assert_string_equal(o->fdb[o->networks[1].first_fdb].mac, "52:54:00:00:20:02");
        assert_string_equal(o->fdb[o->networks[0].first_fdb].host, "198.51.100.2");
        tmsg_clear(&out);
        /* a slice past its array: refused */
        r->networks[1].n_fdb = 2;
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(codec_encode(&in, &buf, &len), -EINVAL);
        tmsg_clear(&in);
}

/* More snapshots per domain than the link carries: refused both ways. */
static void test_too_many_snaps(void **state)
{
        struct tmsg m;
        uint8_t *buf = NULL;
        size_t len = 0;
        (void)state;
        sync_reply_sample(&m, 1);
        m.sync_reply.domains[0].n_snaps = TMSG_MAX_SNAPS + 1;
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        tmsg_clear(&m);
        sync_sample(&m, 1);
        m.sync.domains[0].n_snaps = TMSG_MAX_SNAPS + 1;
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        tmsg_clear(&m);
}

static void test_sync_reply_images(void **state)
{
        struct tmsg in, out;
        (void)state;
        sync_reply_sample(&in, 2);
        in.sync_reply.n_images = 2;
        in.sync_reply.images = calloc(2, sizeof(struct img_desired));
        assert_non_null(in.sync_reply.images);
        for (size_t i = 0; i < 2; i++) {
                struct img_desired *g = &in.sync_reply.images[i];
                snprintf(g->slug, sizeof(g->slug), "img-%zu", i);
                memset(g->url, 'u', sizeof(g->url) - 1); /* the longest URL */
                memcpy(g->url, "https://", 8);
                memset(g->sha256, i ? 'b' : 'a', 64);
                snprintf(g->format, sizeof(g->format), i ? "raw" : "qcow2");
        }
        round_trip(&in, &out);
        assert_int_equal(out.sync_reply.n_images, 2);
        for (size_t i = 0; i < 2; i++) {
                assert_string_equal(out.sync_reply.images[i].slug, in.sync_reply.images[i].slug);
                assert_string_equal(out.sync_reply.images[i].url, in.sync_reply.images[i].url);
                assert_string_equal(out.sync_reply.images[i].sha256,
                                    in.sync_reply.images[i].sha256);
                assert_string_equal(out.sync_reply.images[i].format,
                                    in.sync_reply.images[i].format);
        }
        tmsg_clear(&out);
        tmsg_clear(&in);
}

static void test_seed(void **state)
{
        struct tmsg in = { .type = TMSG_SEED_REQUEST, .request_id = 5 }, out;
        char *keys[] = { "ssh-ed25519 AAAA one", "ssh-rsa BBBB two" };
        uint8_t *buf;
        size_t len;
        (void)state;

        snprintf(in.seed_request.host_id, TMSG_STR, "hv-1");
        in.seed_request.vm_id = 77;
        round_trip(&in, &out);
        assert_int_equal(out.type, TMSG_SEED_REQUEST);
        assert_string_equal(out.seed_request.host_id, "hv-1");
        assert_int_equal(out.seed_request.vm_id, 77);
        tmsg_clear(&out);

        in = (struct tmsg){ .type = TMSG_SEED_REPLY, .request_id = 6 };
        in.seed_reply.vm_id = 77;
        snprintf(in.seed_reply.hostname, TMSG_STR, "web1");
        in.seed_reply.ssh_keys = keys;
        in.seed_reply.n_ssh_keys = 2;
        in.seed_reply.user_data = "#cloud-config\nruncmd: [true]\n";
        snprintf(in.seed_reply.admin_password, TMSG_ERR, "s3cret");
        round_trip(&in, &out);
        assert_int_equal(out.type, TMSG_SEED_REPLY);
        assert_int_equal(out.seed_reply.vm_id, 77);
        assert_string_equal(out.seed_reply.hostname, "web1");
        assert_int_equal(out.seed_reply.n_ssh_keys, 2);
        assert_string_equal(out.seed_reply.ssh_keys[1], "ssh-rsa BBBB two");
        assert_string_equal(out.seed_reply.user_data, in.seed_reply.user_data);
        assert_string_equal(out.seed_reply.admin_password, "s3cret");
        tmsg_clear(&out);

        /* no user-data decodes as NULL; too big user-data is refused */
        in.seed_reply.user_data = NULL;
        round_trip(&in, &out);
        assert_null(out.seed_reply.user_data);
        tmsg_clear(&out);
        char *big = malloc(TMSG_USER_DATA_MAX + 2);
        assert_non_null(big);
        memset(big, 'x', TMSG_USER_DATA_MAX + 1);
        big[TMSG_USER_DATA_MAX + 1] = '\0';
        in.seed_reply.user_data = big;
        assert_int_equal(codec_encode(&in, &buf, &len), 0);
        assert_int_equal(codec_decode(buf, len, &out), -EINVAL);
        assert_int_equal(out.type, TMSG_NONE);
        free(buf);
        free(big);
        /* too many keys is refused on encode */
        in.seed_reply.user_data = NULL;
        in.seed_reply.n_ssh_keys = TMSG_MAX_SSH_KEYS + 1;
        assert_int_equal(codec_encode(&in, &buf, &len), -EINVAL);
}

static void test_error(void **state)
{
        static const int32_t codes[] = { 0, TMSG_E_UNKNOWN_HOST, -1, INT32_MIN, INT32_MAX };
        (void)state;
        for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
                struct tmsg in = { .type = TMSG_ERROR, .request_id = 5 }, out;
                in.error.code = codes[i];
                if (i == 0)
                        fill_str(in.error.message, TMSG_ERR, 'e');
                else
                        snprintf(in.error.message, TMSG_ERR, "unknown host %d", (int)i);
                round_trip(&in, &out);
                assert_int_equal(out.error.code, codes[i]);
                assert_string_equal(out.error.message, in.error.message);
                tmsg_clear(&out);
        }
}

static void test_power_names(void **state)
{
        static const char *const names[] = { "unknown", "running", "stopped", "paused",
                                             "crashed" };
        (void)state;
        for (int p = 0; p < POWER__MAX; p++)
                assert_string_equal(power_to_string((enum power)p), names[p]);
        assert_string_equal(power_to_string(POWER__MAX), "unknown");
        assert_string_equal(power_to_string((enum power)-1), "unknown");
}

/* ---- refusals on encode ---- */

static void test_encode_refuses(void **state)
{
        struct tmsg m;
        uint8_t *buf = (uint8_t *)"untouched";
        size_t len = 4242;
        (void)state;

        sync_sample(&m, TMSG_MAX_DOMAINS + 1);
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        tmsg_clear(&m);
        sync_reply_sample(&m, TMSG_MAX_DOMAINS + 1);
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        tmsg_clear(&m);
        memset(&m, 0, sizeof(m)); /* TMSG_NONE */
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        m.type = (enum tmsg_type)99;
        assert_int_equal(codec_encode(&m, &buf, &len), -EINVAL);
        assert_string_equal((char *)buf, "untouched");
        assert_int_equal(len, 4242);
}

/* ---- refusals on decode ---- */

static void test_decode_garbage(void **state)
{
        static const struct {
                const char *bytes;
                size_t len;
        } cases[] = {
                { "\xff\xff\xff\xff\xff\xff\xff\xff", 8 }, /* bad tag, endless varint */
                { "\x08", 1 },                             /* tag without value */
                { "\x12\x7f", 2 },                         /* hello longer than the buffer */
                { "\x12\x02\xff\xff", 4 },                 /* hello of garbage */
                { "\x08\x01", 2 },                         /* only a request id: no body */
                { "\x50\x01", 2 },                         /* only an unknown field */
                { "\x07", 1 },                             /* field 0 */
                { "hello world", 11 },
                { "\x2a\x03\x12\x01\x41", 5 },             /* sync_reply whose domain is cut */
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                decode_expect((const uint8_t *)cases[i].bytes, cases[i].len, -EINVAL);
        /* An empty buffer is a message with no body. */
        decode_expect((const uint8_t *)"", 0, -EINVAL);
}

/* Every proper prefix of a valid message is refused. */
static void test_decode_truncated(void **state)
{
        struct tmsg msgs[3];
        (void)state;
        hello_sample(&msgs[0]);
        sync_sample(&msgs[1], 3);
        sync_reply_sample(&msgs[2], 3);
        for (size_t k = 0; k < 3; k++) {
                uint8_t *buf;
                size_t len;
                assert_int_equal(codec_encode(&msgs[k], &buf, &len), 0);
                for (size_t cut = 0; cut < len; cut++)
                        decode_expect(buf, cut, -EINVAL);
                decode_expect(buf, len, 0);
                free(buf);
                tmsg_clear(&msgs[k]);
        }
}

static void test_decode_too_big(void **state)
{
        struct tmsg in, out;
        uint8_t *buf, *big;
        size_t len;
        (void)state;

        hello_sample(&in);
        assert_int_equal(codec_encode(&in, &buf, &len), 0);
        /* A valid message followed by padding up to just over the limit. */
        big = calloc(1, TMSG_MAX_BYTES + 1);
        assert_non_null(big);
        memcpy(big, buf, len);
        memset(&out, 0xa5, sizeof(out));
        assert_int_equal(codec_decode(big, TMSG_MAX_BYTES + 1, &out), -EMSGSIZE);
        assert_empty(&out);
        free(big);
        free(buf);
}

/* One string field of a hand-built message set to s. */
enum str_field {
        F_HELLO_HOST_ID,
        F_HELLO_SITE,
        F_HELLO_UNDERLAY,
        F_HELLO_BOOT_ID,
        F_HELLO_VERSION,
        F_HELLO_HV_TYPE,
        F_SYNC_HOST_ID,
        F_SYNC_BOOT_ID,
        F_OBS_ERROR,
        F_DES_HOSTNAME,
        F_DES_IMAGE,
        F_ERROR_MESSAGE,
        F__MAX,
};

static const size_t field_cap[F__MAX] = {
        TMSG_STR, TMSG_STR, TMSG_STR, TMSG_STR, TMSG_STR, TMSG_STR,
        TMSG_STR, TMSG_STR, TMSG_ERR, TMSG_STR, TMSG_STR, TMSG_ERR,
};

static uint8_t *pack_with_string(enum str_field f, char *s, size_t *ret_len)
{
        Tasman__Envelope env = TASMAN__ENVELOPE__INIT;
        Tasman__Hello hello = TASMAN__HELLO__INIT;
        Tasman__Sync sync = TASMAN__SYNC__INIT;
        Tasman__DomainObserved obs = TASMAN__DOMAIN_OBSERVED__INIT, *obs_p = &obs;
        Tasman__SyncReply srep = TASMAN__SYNC_REPLY__INIT;
        Tasman__DomainDesired des = TASMAN__DOMAIN_DESIRED__INIT, *des_p = &des;
        Tasman__Error err = TASMAN__ERROR__INIT;

        env.request_id = 1;
        switch (f) {
        case F_HELLO_HOST_ID: hello.host_id = s; break;
        case F_HELLO_SITE: hello.site = s; break;
        case F_HELLO_UNDERLAY: hello.underlay_ip = s; break;
        case F_HELLO_BOOT_ID: hello.boot_id = s; break;
        case F_HELLO_VERSION: hello.agent_version = s; break;
        case F_HELLO_HV_TYPE: hello.hv_type = s; break;
        case F_SYNC_HOST_ID: sync.host_id = s; break;
        case F_SYNC_BOOT_ID: sync.boot_id = s; break;
        case F_OBS_ERROR: obs.error = s; break;
        case F_DES_HOSTNAME: des.hostname = s; break;
        case F_DES_IMAGE: des.image = s; break;
        case F_ERROR_MESSAGE: err.message = s; break;
        default: fail();
        }
        if (f <= F_HELLO_HV_TYPE) {
                env.body_case = TASMAN__ENVELOPE__BODY_HELLO;
                env.hello = &hello;
        } else if (f <= F_OBS_ERROR) {
                sync.n_domains = 1;
                sync.domains = &obs_p;
                env.body_case = TASMAN__ENVELOPE__BODY_SYNC;
                env.sync = &sync;
        } else if (f <= F_DES_IMAGE) {
                srep.n_domains = 1;
                srep.domains = &des_p;
                env.body_case = TASMAN__ENVELOPE__BODY_SYNC_REPLY;
                env.sync_reply = &srep;
        } else {
                env.body_case = TASMAN__ENVELOPE__BODY_ERROR;
                env.error = &err;
        }
        return pack_env(&env, ret_len);
}

/* Each string field: cap - 1 bytes decode, cap bytes (or far more) do not. */
static void test_decode_oversized_strings(void **state)
{
        (void)state;
        for (int f = 0; f < F__MAX; f++) {
                static const size_t extra[] = { 0, 1, 1000 };
                size_t cap = field_cap[f];
                for (size_t e = 0; e < 3; e++) {
                        size_t n = cap - 1 + extra[e];
                        char *s = malloc(n + 1);
                        uint8_t *buf;
                        size_t len;
                        assert_non_null(s);
                        memset(s, 'x', n);
                        s[n] = '\0';
                        buf = pack_with_string((enum str_field)f, s, &len);
                        decode_expect(buf, len, extra[e] == 0 ? 0 : -EINVAL);
                        free(buf);
                        free(s);
                }
        }
}

/* Fields left out on the wire decode as empty strings. */
static void test_decode_defaults(void **state)
{
        char s[] = "node-9";
        uint8_t *buf;
        size_t len;
        struct tmsg m;
        (void)state;
        buf = pack_with_string(F_HELLO_HOST_ID, s, &len);
        assert_int_equal(codec_decode(buf, len, &m), 0);
        assert_int_equal(m.type, TMSG_HELLO);
        assert_string_equal(m.hello.host_id, "node-9");
        assert_string_equal(m.hello.site, "");
        tmsg_clear(&m);
        free(buf);
}

/* More domains than TMSG_MAX_DOMAINS on the wire: refused on decode. */
static void test_decode_too_many_domains(void **state)
{
        const size_t n = TMSG_MAX_DOMAINS + 1;
        Tasman__Envelope env = TASMAN__ENVELOPE__INIT;
        Tasman__Sync sync = TASMAN__SYNC__INIT;
        Tasman__SyncReply srep = TASMAN__SYNC_REPLY__INIT;
        Tasman__DomainObserved *obs = calloc(n, sizeof(*obs));
        Tasman__DomainObserved **obs_p = calloc(n, sizeof(*obs_p));
        Tasman__DomainDesired *des = calloc(n, sizeof(*des));
        Tasman__DomainDesired **des_p = calloc(n, sizeof(*des_p));
        uint8_t *buf;
        size_t len;
        (void)state;

        assert_true(obs && obs_p && des && des_p);
        for (size_t i = 0; i < n; i++) {
                tasman__domain_observed__init(&obs[i]);
                obs[i].vm_id = i + 1;
                obs_p[i] = &obs[i];
                tasman__domain_desired__init(&des[i]);
                des[i].vm_id = i + 1;
                des_p[i] = &des[i];
        }
        sync.n_domains = n;
        sync.domains = obs_p;
        env.body_case = TASMAN__ENVELOPE__BODY_SYNC;
        env.sync = &sync;
        buf = pack_env(&env, &len);
        decode_expect(buf, len, -EINVAL);
        free(buf);
        sync.n_domains = n - 1; /* exactly the limit is fine */
        buf = pack_env(&env, &len);
        decode_expect(buf, len, 0);
        free(buf);

        srep.n_domains = n;
        srep.domains = des_p;
        env.body_case = TASMAN__ENVELOPE__BODY_SYNC_REPLY;
        env.sync_reply = &srep;
        buf = pack_env(&env, &len);
        decode_expect(buf, len, -EINVAL);
        free(buf);
        srep.n_domains = n - 1;
        buf = pack_env(&env, &len);
        decode_expect(buf, len, 0);
        free(buf);

        free(obs);
        free(obs_p);
        free(des);
        free(des_p);
}

/* A power value we do not know decodes as POWER_UNKNOWN. */
static void test_decode_unknown_power(void **state)
{
        Tasman__Envelope env = TASMAN__ENVELOPE__INIT;
        Tasman__Sync sync = TASMAN__SYNC__INIT;
        Tasman__SyncReply srep = TASMAN__SYNC_REPLY__INIT;
        Tasman__DomainObserved obs = TASMAN__DOMAIN_OBSERVED__INIT, *obs_p = &obs;
        Tasman__DomainDesired des = TASMAN__DOMAIN_DESIRED__INIT, *des_p = &des;
        struct tmsg m;
        uint8_t *buf;
        size_t len;
        (void)state;

        obs.vm_id = 3;
        obs.state = (Tasman__Power)99;
        sync.n_domains = 1;
        sync.domains = &obs_p;
        env.body_case = TASMAN__ENVELOPE__BODY_SYNC;
        env.sync = &sync;
        buf = pack_env(&env, &len);
        assert_int_equal(codec_decode(buf, len, &m), 0);
        assert_int_equal(m.sync.domains[0].vm_id, 3);
        assert_int_equal(m.sync.domains[0].state, POWER_UNKNOWN);
        tmsg_clear(&m);
        free(buf);

        des.vm_id = 4;
        des.power = (Tasman__Power)-5;
        srep.n_domains = 1;
        srep.domains = &des_p;
        env.body_case = TASMAN__ENVELOPE__BODY_SYNC_REPLY;
        env.sync_reply = &srep;
        buf = pack_env(&env, &len);
        assert_int_equal(codec_decode(buf, len, &m), 0);
        assert_int_equal(m.sync_reply.domains[0].vm_id, 4);
        assert_int_equal(m.sync_reply.domains[0].power, POWER_UNKNOWN);
        tmsg_clear(&m);
        free(buf);

        /* A storage type newer than this build: kept as unknown, so the
         * agent reports that one guest rather than dropping the message. */
        des.power = TASMAN__POWER__POWER_RUNNING;
        des.storage = (Tasman__Storage)7;
        buf = pack_env(&env, &len);
        assert_int_equal(codec_decode(buf, len, &m), 0);
        assert_int_equal(m.sync_reply.domains[0].storage, STORAGE__MAX);
        tmsg_clear(&m);
        free(buf);
}

/* ---- fuzz-ish: random mutations of a valid SyncReply ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void)
{
        uint64_t x = rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return rng_state = x;
}

static void test_mutations(void **state)
{
        struct tmsg in;
        uint8_t *orig;
        size_t orig_len, ok = 0, refused = 0;
        (void)state;

        sync_reply_sample(&in, 6);
        assert_int_equal(codec_encode(&in, &orig, &orig_len), 0);
        tmsg_clear(&in);
        for (int iter = 0; iter < 2000; iter++) {
                size_t cap = orig_len + 64, len = orig_len;
                uint8_t *buf = malloc(cap);
                assert_non_null(buf);
                memcpy(buf, orig, orig_len);
                int n_mut = 1 + (int)(rng() % 4);
                for (int k = 0; k < n_mut && len > 0; k++) {
                        size_t at = rng() % len;
                        switch (rng() % 5) {
                        case 0: buf[at] ^= (uint8_t)(1u << (rng() % 8)); break;
                        case 1: buf[at] = (uint8_t)rng(); break;
                        case 2: len = at; break; /* truncate */
                        case 3:                  /* insert a byte */
                                if (len < cap) {
                                        memmove(buf + at + 1, buf + at, len - at);
                                        buf[at] = (uint8_t)rng();
                                        len++;
                                }
                                break;
                        case 4: /* delete a byte */
                                memmove(buf + at, buf + at + 1, len - at - 1);
                                len--;
                                break;
                        }
                }
                struct tmsg m;
                int r = codec_decode(buf, len, &m);
                if (r == 0) {
                        ok++;
                        assert_true(m.type > TMSG_NONE && m.type <= TMSG_ERROR);
                        if (m.type == TMSG_SYNC_REPLY) {
                                assert_true(m.sync_reply.n_domains <= TMSG_MAX_DOMAINS);
                                for (size_t i = 0; i < m.sync_reply.n_domains; i++) {
                                        const struct dom_desired *d = &m.sync_reply.domains[i];
                                        assert_true(strlen(d->hostname) < TMSG_STR);
                                        assert_true(strlen(d->image) < TMSG_STR);
                                        assert_true(d->power < POWER__MAX);
                                }
                        }
                        tmsg_clear(&m);
                } else {
                        refused++;
                        assert_true(r == -EINVAL || r == -ENOMEM);
                        assert_empty(&m);
                }
                free(buf);
        }
        free(orig);
        assert_int_equal(ok + refused, 2000);
        assert_true(refused > 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hello),
                cmocka_unit_test(test_too_many_snaps),
                cmocka_unit_test(test_sync_reply_networks),
                cmocka_unit_test(test_sync_reply_images),
                cmocka_unit_test(test_seed),
                cmocka_unit_test(test_hello_reply),
                cmocka_unit_test(test_sync),
                cmocka_unit_test(test_sync_partial_flag),
                cmocka_unit_test(test_sync_reply),
                cmocka_unit_test(test_error),
                cmocka_unit_test(test_power_names),
                cmocka_unit_test(test_encode_refuses),
                cmocka_unit_test(test_decode_garbage),
                cmocka_unit_test(test_decode_truncated),
                cmocka_unit_test(test_decode_too_big),
                cmocka_unit_test(test_decode_oversized_strings),
                cmocka_unit_test(test_decode_defaults),
                cmocka_unit_test(test_decode_too_many_domains),
                cmocka_unit_test(test_decode_unknown_power),
                cmocka_unit_test(test_mutations),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
