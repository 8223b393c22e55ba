/* The store on a real database, and the pure api_vps_status() over the
 * rows it returns.
 *
 * By default on a SQLite file in a temp directory. With
 * TASMAN_TEST_PG=postgresql://user@host:port/db (a server that lets the
 * user create databases; tests/e2e/test_store_pg.sh starts one), every
 * test runs on a database of its own made on that server (and dropped
 * after), through store_pg.c; the few tests of SQLite's files say why they
 * are skipped.
 *
 * Whether a deleted row is really gone is read from the database directly
 * (a second connection: SQLite, or psql): the store's own API never shows
 * deleted rows, purged or not. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "api.h"
#include "auth.h"
#include "catalog.h"
#include "ids.h"
#include "store.h"
#include "util.h"

#include "pg_test.h"

#define NOW 1700000000000LL
#define LIVE_AFTER (NOW - 30000)

struct fx {
        char dir[64];
        char path[512]; /* the SQLite file, or the PostgreSQL database's URL */
        char db[64];    /* PostgreSQL: the test's database */
        struct store *s;
        uint64_t acc, other; /* two accounts */
};

/* A test of SQLite's files only: skipped in a PostgreSQL run, saying why
 * on a TAP "# skip" line (it then counts as passed: cmocka's own skip()
 * prints "not ok ... # SKIP", which tests/run counts as a failure). */
#define SQLITE_ONLY(why)                                                          \
        do {                                                                     \
                if (pg_url()) {                                                  \
                        printf("# skip %s on PostgreSQL: %s\n", __func__, why); \
                        return;                                                  \
                }                                                                \
        } while (0)

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        struct account a;
        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-store.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        if (pg_url())
                pg_db_new(f->db, sizeof(f->db), f->path, sizeof(f->path));
        else
                snprintf(f->path, sizeof(f->path), "%s/tasman.db", f->dir);
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(store_account_create(f->s, "alice", TIER_PRO, &a), 0);
        f->acc = a.id;
        assert_int_equal(store_account_create(f->s, "bob", TIER_FREE, &a), 0);
        f->other = a.id;
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[160];
        /* whatever the test did, the placement cache is in step */
        assert_true(store_check_host_cache(f->s) <= 0);
        store_free(f->s);
        if (f->db[0])
                pg_db_drop(f->db);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

/* ---- helpers ---- */

static uint64_t hello_at(struct fx *f, const char *name, const char *site, uint32_t vcpus,
                         uint64_t ram_mb, const char *boot_id, int64_t now, int *ret_rebooted)
{
        struct msg_hello h = { .vcpus = vcpus, .ram_mb = ram_mb, .disk_gb = 1000 };
        uint64_t id = 0;
        int rebooted = -1;
        snprintf(h.host_id, sizeof(h.host_id), "%s", name);
        snprintf(h.site, sizeof(h.site), "%s", site);
        snprintf(h.underlay_ip, sizeof(h.underlay_ip), "10.0.0.1");
        snprintf(h.boot_id, sizeof(h.boot_id), "%s", boot_id);
        snprintf(h.agent_version, sizeof(h.agent_version), "0.1.0");
        snprintf(h.hv_type, sizeof(h.hv_type), "test");
        assert_int_equal(store_host_hello(f->s, &h, now, &id, &rebooted), 0);
        assert_true(id > 0);
        assert_true(rebooted == 0 || rebooted == 1);
        if (ret_rebooted)
                *ret_rebooted = rebooted;
        return id;
}

static uint64_t hello(struct fx *f, const char *name, const char *site, uint32_t vcpus,
                      uint64_t ram_mb)
{
        return hello_at(f, name, site, vcpus, ram_mb, "boot-1", NOW, NULL);
}

static int create_vm(struct fx *f, uint64_t account, const char *name, const char *site,
                     uint32_t vcpus, uint32_t ram_mb, struct vm *ret)
{
        const struct vm_new req = {
                .account_id = account, .name = name, .size = "s-test", .image = "debian-12",
                .site = site, .vcpus = vcpus, .ram_mb = ram_mb, .disk_gb = 10,
        };
        return store_vm_create(f->s, &req, NOW, LIVE_AFTER, ret);
}

static uint64_t generation(struct fx *f, uint64_t host_id)
{
        uint64_t g = 0;
        assert_int_equal(store_host_generation(f->s, host_id, &g), 0);
        return g;
}

static struct vm get_vm(struct fx *f, uint64_t account, uint64_t id)
{
        struct vm v;
        assert_int_equal(store_vm_get(f->s, account, id, &v), 0);
        return v;
}

/* A full (or partial) Sync of the given domains. */
static void observe(struct fx *f, uint64_t host_id, const struct dom_observed *doms, size_t n,
                    int partial)
{
        struct msg_sync sync = {
                .applied_generation = 3,
                .domains = (struct dom_observed *)doms,
                .n_domains = n,
                .vcpus_used = 2,
                .ram_mb_used = 1024,
                .partial = partial,
                .n_present = (uint32_t)n,
        };
        assert_int_equal(store_host_observe(f->s, host_id, &sync, NOW + 1000), 0);
}

/* Rows of vms with this id in the file, deleted or not. */
static int64_t int_in_file(struct fx *f, const char *sql, uint64_t id);

static int rows_in_file(struct fx *f, uint64_t vm_id)
{
        if (f->db[0])
                return (int)int_in_file(f, "SELECT COUNT(*) FROM vms WHERE id = ?1", vm_id);
        sqlite3 *db;
        sqlite3_stmt *st;
        int n = -1;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM vms WHERE id = ?", -1, &st,
                                            NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) == SQLITE_ROW)
                n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return n;
}

/* One integer read from the file with SQL (id bound to ?1). */
static int64_t int_in_file(struct fx *f, const char *sql, uint64_t id)
{
        if (f->db[0]) { /* psql: ?1 is the id, "AND ?1" a truth */
                char q[1024], out[64];
                size_t o = 0;
                for (const char *p = sql; *p && o + 64 < sizeof(q); p++) {
                        if (strncmp(p, " AND ?1", 7) == 0 && p[7] == '\0') {
                                o += (size_t)snprintf(q + o, sizeof(q) - o, " AND %llu > 0",
                                                      (unsigned long long)id);
                                p += 6;
                        } else if (p[0] == '?' && p[1] == '1') {
                                o += (size_t)snprintf(q + o, sizeof(q) - o, "%llu",
                                                      (unsigned long long)id);
                                p++;
                        } else {
                                q[o++] = *p;
                        }
                }
                q[o] = '\0';
                if (psql(f->db, q, out, sizeof(out)) != 0)
                        fail_msg("psql: %s: %s", q, out);
                return out[0] ? strtoll(out, NULL, 10) : -1;
        }
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

/* Frees what store_host_desired() filled (as tmsg_clear() does). */
static void free_desired(struct msg_sync_reply *rep)
{
        free(rep->domains);
        free(rep->images);
        free(rep->networks);
        free(rep->remotes);
        free(rep->fdb);
        memset(rep, 0, sizeof(*rep));
}

/* ---- accounts and keys ---- */

static void test_accounts(void **state)
{
        struct fx *f = *state;
        struct account a, *list = NULL;
        size_t n = 0;

        assert_int_equal(store_account_create(f->s, "alice", TIER_FREE, &a), -EEXIST);
        assert_int_equal(store_account_create(f->s, "carol", TIER_ENTERPRISE, &a), 0);
        assert_string_equal(a.name, "carol");
        assert_int_equal(a.tier, TIER_ENTERPRISE);
        assert_true(a.created_at > 0);
        uint64_t carol = a.id;

        memset(&a, 0, sizeof(a));
        assert_int_equal(store_account_by_name(f->s, "alice", &a), 0);
        assert_int_equal(a.id, f->acc);
        assert_string_equal(a.name, "alice");
        assert_int_equal(a.tier, TIER_PRO);
        assert_int_equal(store_account_by_name(f->s, "nobody", &a), -ENOENT);
        assert_int_equal(store_account_by_name(f->s, "ALICE", &a), -ENOENT);

        assert_int_equal(store_account_list(f->s, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(list[0].id, f->acc);
        assert_string_equal(list[0].name, "alice");
        assert_int_equal(list[1].id, f->other);
        assert_string_equal(list[1].name, "bob");
        assert_int_equal(list[1].tier, TIER_FREE);
        assert_int_equal(list[2].id, carol);
        free(list);
}

static void test_tiers(void **state)
{
        static const char *const names[] = { "free", "pro", "enterprise" };
        enum tier t;
        (void)state;
        for (int i = 0; i < TIER__MAX; i++) {
                assert_string_equal(tier_to_string((enum tier)i), names[i]);
                assert_int_equal(tier_from_string(names[i], &t), 0);
                assert_int_equal(t, i);
        }
        t = TIER_PRO;
        assert_int_equal(tier_from_string("gold", &t), -EINVAL);
        assert_int_equal(tier_from_string("", &t), -EINVAL);
        assert_int_equal(tier_from_string("Free", &t), -EINVAL);
        assert_int_equal(t, TIER_PRO);
        assert_string_equal(tier_to_string(TIER__MAX), "free");
}

static void test_keys(void **state)
{
        struct fx *f = *state;
        uint8_t h1[32], h2[32], h3[32];
        uint64_t k1, k2, k3;
        struct api_key keys[8];
        size_t n = 99;

        memset(h1, 0x11, 32);
        memset(h2, 0x22, 32);
        memset(h3, 0x33, 32);
        assert_int_equal(store_key_create(f->s, f->acc, "tas_aaaaaaaa", h1, 0, &k1), 0);
        assert_int_equal(store_key_create(f->s, f->other, "tas_bbbbbbbb", h2, 0, &k2), 0);
        assert_int_equal(store_key_create(f->s, f->other, "tas_aaaaaaaa", h3, 0, &k3), 0);
        assert_true(k1 != k2 && k2 != k3 && k1 != k3);

        assert_int_equal(store_key_find(f->s, "tas_bbbbbbbb", keys, 8, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(keys[0].id, k2);
        assert_int_equal(keys[0].account_id, f->other);
        assert_int_equal(keys[0].tier, TIER_FREE);
        assert_memory_equal(keys[0].hash, h2, 32);

        /* A shared prefix finds both, with each account's tier. */
        assert_int_equal(store_key_find(f->s, "tas_aaaaaaaa", keys, 8, &n), 0);
        assert_int_equal(n, 2);
        for (size_t i = 0; i < n; i++) {
                if (keys[i].id == k1) {
                        assert_int_equal(keys[i].account_id, f->acc);
                        assert_int_equal(keys[i].tier, TIER_PRO);
                        assert_memory_equal(keys[i].hash, h1, 32);
                } else {
                        assert_int_equal(keys[i].id, k3);
                        assert_int_equal(keys[i].account_id, f->other);
                        assert_memory_equal(keys[i].hash, h3, 32);
                }
        }
        /* max bounds what is written. */
        assert_int_equal(store_key_find(f->s, "tas_aaaaaaaa", keys, 1, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(store_key_find(f->s, "tas_cccccccc", keys, 8, &n), 0);
        assert_int_equal(n, 0);
        /* A prefix is matched whole, not as a LIKE pattern. */
        assert_int_equal(store_key_find(f->s, "tas_aaaa", keys, 8, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(store_key_find(f->s, "tas_%", keys, 8, &n), 0);
        assert_int_equal(n, 0);
}

/* auth over the store: a key made by auth_key_create checks out; nothing
 * else does. */
static void test_auth_bearer(void **state)
{
        struct fx *f = *state;
        char key[AUTH_KEY_LEN + 1], prefix[AUTH_PREFIX_LEN + 1], hdr[128];
        uint64_t key_id = 0;
        struct auth_who who;

        assert_int_equal(auth_key_create(f->s, f->acc, 0, key, prefix, &key_id), 0);
        assert_true(key_id > 0);
        assert_int_equal(strlen(key), AUTH_KEY_LEN);
        assert_int_equal(strncmp(key, "tas_", 4), 0);
        assert_int_equal(strlen(prefix), AUTH_PREFIX_LEN);
        assert_int_equal(strncmp(key, prefix, AUTH_PREFIX_LEN), 0);

        /* A second key under the same prefix (another account's, with
         * another hash) does not hide the first. */
        uint8_t other_hash[32];
        uint64_t other_id;
        memset(other_hash, 0x5a, sizeof(other_hash));
        assert_int_equal(store_key_create(f->s, f->other, prefix, other_hash, 0, &other_id), 0);

        static const char *const good_fmt[] = { "Bearer %s", "bearer %s", "BEARER   %s" };
        for (size_t i = 0; i < 3; i++) {
                snprintf(hdr, sizeof(hdr), good_fmt[i], key);
                memset(&who, 0, sizeof(who));
                assert_int_equal(auth_check_bearer(f->s, hdr, &who), 0);
                assert_int_equal(who.account_id, f->acc);
                assert_int_equal(who.tier, TIER_PRO);
                assert_int_equal(who.key_id, key_id);
                assert_int_equal(who.read_only, 0);
        }

        char upper[AUTH_KEY_LEN + 1], flipped[AUTH_KEY_LEN + 1];
        snprintf(upper, sizeof(upper), "%s", key);
        for (char *p = upper + 4; *p; p++)
                if (*p >= 'a' && *p <= 'f')
                        *p = (char)(*p - 'a' + 'A');
        snprintf(flipped, sizeof(flipped), "%s", key);
        flipped[AUTH_KEY_LEN - 1] = flipped[AUTH_KEY_LEN - 1] == '0' ? '1' : '0';
        char bad[12][128];
        size_t n_bad = 0;
        snprintf(bad[n_bad++], 128, "Bearer %s", flipped);           /* unknown key */
        snprintf(bad[n_bad++], 128, "Bearer %s ", key);              /* trailing space */
        snprintf(bad[n_bad++], 128, "Bearer %.*s", AUTH_KEY_LEN - 1, key); /* short */
        snprintf(bad[n_bad++], 128, "Bearer %s0", key);              /* long */
        snprintf(bad[n_bad++], 128, "Basic %s", key);
        snprintf(bad[n_bad++], 128, "Bearer%s", key);                /* no space */
        snprintf(bad[n_bad++], 128, "%s", key);                      /* no scheme */
        snprintf(bad[n_bad++], 128, "Bearer tak_%s", key + 4);
        snprintf(bad[n_bad++], 128, "Bearer %s", prefix);
        snprintf(bad[n_bad++], 128, "Bearer ");
        snprintf(bad[n_bad++], 128, "%s", "");
        int upper_differs = strcmp(upper, key) != 0;
        if (upper_differs)
                snprintf(bad[n_bad++], 128, "Bearer %s", upper);
        for (size_t i = 0; i < n_bad; i++) {
                who.account_id = 4242;
                if (auth_check_bearer(f->s, bad[i], &who) != -EACCES)
                        fail_msg("'%s' was accepted", bad[i]);
                assert_int_equal(who.account_id, 4242);
        }
        assert_int_equal(auth_check_bearer(f->s, NULL, &who), -EACCES);

        /* a read-only key says so; a revoked key no longer works */
        char ro[AUTH_KEY_LEN + 1], ro_prefix[AUTH_PREFIX_LEN + 1];
        uint64_t ro_id;
        assert_int_equal(auth_key_create(f->s, f->acc, 1, ro, ro_prefix, &ro_id), 0);
        snprintf(hdr, sizeof(hdr), "Bearer %s", ro);
        assert_int_equal(auth_check_bearer(f->s, hdr, &who), 0);
        assert_int_equal(who.read_only, 1);
        assert_int_equal(store_key_revoke(f->s, f->other, ro_id), -ENOENT); /* not theirs */
        assert_int_equal(store_key_revoke(f->s, f->acc, ro_id), 0);
        assert_int_equal(store_key_revoke(f->s, f->acc, ro_id), 0); /* again: still fine */
        assert_int_equal(auth_check_bearer(f->s, hdr, &who), -EACCES);
        struct api_key_info *ks = NULL;
        size_t nk = 0;
        assert_int_equal(store_key_list(f->s, f->acc, &ks, &nk), 0);
        assert_int_equal(nk, 2);
        assert_int_equal(ks[0].id, key_id);
        assert_int_equal(ks[0].revoked_at, 0);
        assert_int_equal(ks[1].id, ro_id);
        assert_true(ks[1].read_only && ks[1].revoked_at > 0);
        assert_string_equal(ks[1].prefix, ro_prefix);
        free(ks);
        uint64_t n_ev = 0;
        assert_int_equal(store_event_count(f->s, "key.revoked", &n_ev), 0);
        assert_int_equal(n_ev, 1);
}

/* ---- hosts ---- */

static void test_host_hello(void **state)
{
        struct fx *f = *state;
        struct host h;
        int rebooted = -1;
        char boot[TMSG_STR];
        uint64_t id2 = 0;

        uint64_t id = hello_at(f, "node-1", "ams1", 8, 16384, "boot-1", NOW, &rebooted);
        assert_int_equal(rebooted, 0);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.id, id);
        assert_string_equal(h.name, "node-1");
        assert_string_equal(h.site, "ams1");
        assert_string_equal(h.underlay_ip, "10.0.0.1");
        assert_string_equal(h.boot_id, "boot-1");
        assert_string_equal(h.agent_version, "0.1.0");
        assert_string_equal(h.hv_type, "test");
        assert_int_equal(h.vcpus, 8);
        assert_int_equal(h.ram_mb, 16384);
        assert_int_equal(h.disk_gb, 1000);
        assert_int_equal(h.last_seen, NOW);
        assert_int_equal(h.guests, 0);
        assert_int_equal(h.draining, 0);

        /* The same agent again: same host, not a reboot; new figures kept. */
        assert_int_equal(hello_at(f, "node-1", "ams1", 16, 32768, "boot-1", NOW + 5, &rebooted),
                         id);
        assert_int_equal(rebooted, 0);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.vcpus, 16);
        assert_int_equal(h.ram_mb, 32768);
        assert_int_equal(h.last_seen, NOW + 5);

        /* A new boot id: the host rebooted. */
        assert_int_equal(hello_at(f, "node-1", "ams1", 16, 32768, "boot-2", NOW + 9, &rebooted),
                         id);
        assert_int_equal(rebooted, 1);
        assert_int_equal(store_host_lookup(f->s, "node-1", &id2, boot, sizeof(boot)), 0);
        assert_int_equal(id2, id);
        assert_string_equal(boot, "boot-2");

        /* Another host gets another id. */
        uint64_t other = hello_at(f, "node-2", "fra1", 4, 8192, "x", NOW, &rebooted);
        assert_true(other != id);
        assert_int_equal(rebooted, 0);

        assert_int_equal(store_host_by_name(f->s, "node-3", &h), -ENOENT);
        assert_int_equal(store_host_lookup(f->s, "node-3", &id2, boot, sizeof(boot)), -ENOENT);
        assert_int_equal(store_host_generation(f->s, 999, &id2), -ENOENT);

        struct host *list = NULL;
        size_t n = 0;
        assert_int_equal(store_host_list(f->s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].name, "node-1");
        assert_string_equal(list[1].name, "node-2");
        free(list);

        char(*sites)[TMSG_STR] = NULL;
        assert_int_equal(store_site_list(f->s, &sites, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(sites[0], "ams1");
        assert_string_equal(sites[1], "fra1");
        free(sites);
}

static void test_hosts_touch(void **state)
{
        struct fx *f = *state;
        struct host h;
        uint64_t a = hello(f, "node-a", "ams1", 4, 8192);
        uint64_t b = hello(f, "node-b", "ams1", 4, 8192);
        uint64_t ids[] = { a, b, 12345 };

        assert_int_equal(store_hosts_touch(f->s, ids, 3, NOW + 500), 0);
        assert_int_equal(store_host_by_name(f->s, "node-a", &h), 0);
        assert_int_equal(h.last_seen, NOW + 500);
        assert_int_equal(store_host_by_name(f->s, "node-b", &h), 0);
        assert_int_equal(h.last_seen, NOW + 500);
        /* Never backwards. */
        assert_int_equal(store_hosts_touch(f->s, ids, 1, NOW), 0);
        assert_int_equal(store_host_by_name(f->s, "node-a", &h), 0);
        assert_int_equal(h.last_seen, NOW + 500);
}

/* ---- vms: placement ---- */

static void test_create_needs_live_host(void **state)
{
        struct fx *f = *state;
        struct vm v;

        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 1, 512, &v), -ENOSPC);
        /* A host last seen at live_after exactly is not live. */
        hello_at(f, "node-1", "ams1", 4, 8192, "b", LIVE_AFTER, NULL);
        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 1, 512, &v), -ENOSPC);
        hello_at(f, "node-1", "ams1", 4, 8192, "b", LIVE_AFTER + 1, NULL);
        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 1, 512, &v), 0);
}

static void test_create_places(void **state)
{
        struct fx *f = *state;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);
        uint64_t gen = generation(f, host);

        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 2, 1024, &v), 0);
        assert_true(v.id > 0);
        assert_int_equal(v.account_id, f->acc);
        assert_string_equal(v.name, "web1");
        assert_string_equal(v.size, "s-test");
        assert_string_equal(v.image, "debian-12");
        assert_string_equal(v.site, "ams1");
        assert_int_equal(v.host_id, host);
        assert_int_equal(v.vcpus, 2);
        assert_int_equal(v.ram_mb, 1024);
        assert_int_equal(v.disk_gb, 10);
        assert_int_equal(v.want, VM_WANT_RUNNING);
        assert_int_equal(v.reboot_seq, 0);
        assert_int_equal(v.rebuild_seq, 0);
        assert_int_equal(v.created_at, NOW);
        assert_int_equal(v.obs_state, -1);
        assert_string_equal(v.obs_error, "");
        assert_int_equal(v.host_last_seen, NOW);
        assert_int_equal(generation(f, host), gen + 1);

        struct host h;
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, 1);
        assert_int_equal(h.vcpus_used, 2);
        assert_int_equal(h.ram_mb_used, 1024);
        assert_int_equal(h.disk_gb_used, 10);
}

/* 4 vCPUs (x4 overcommit: 16), 8192 MB: RAM is the limit. */
static void test_capacity(void **state)
{
        struct fx *f = *state;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);

        assert_int_equal(create_vm(f, f->acc, "a", NULL, 2, 4096, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 2, 4096, &v), 0);
        uint64_t gen = generation(f, host);
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 4096, &v), -ENOSPC);
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 1, &v), -ENOSPC);
        assert_int_equal(generation(f, host), gen); /* a refusal changes nothing */

        struct vm *list = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(f->s, f->acc, &list, &n), 0);
        assert_int_equal(n, 2);
        free(list);
}

static void test_capacity_vcpus_and_disk(void **state)
{
        struct fx *f = *state;
        struct vm v;
        hello(f, "node-1", "ams1", 4, 8192); /* disk: 1000 GB */

        assert_int_equal(create_vm(f, f->acc, "big", NULL, 17, 512, &v), -ENOSPC);
        assert_int_equal(create_vm(f, f->acc, "big", NULL, 16, 512, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "one", NULL, 1, 512, &v), -ENOSPC);

        const struct vm_new disk = {
                .account_id = f->acc, .name = "disk", .size = "s", .image = "i",
                .vcpus = 0, .ram_mb = 512, .disk_gb = 991,
        };
        assert_int_equal(store_vm_create(f->s, &disk, NOW, LIVE_AFTER, &v), -ENOSPC);
        const struct vm_new disk_ok = {
                .account_id = f->acc, .name = "disk", .size = "s", .image = "i",
                .vcpus = 0, .ram_mb = 512, .disk_gb = 990,
        };
        assert_int_equal(store_vm_create(f->s, &disk_ok, NOW, LIVE_AFTER, &v), 0);
}

static void test_site_filter_and_spread(void **state)
{
        struct fx *f = *state;
        struct vm v;
        uint64_t ams = hello(f, "node-ams", "ams1", 8, 8192);
        uint64_t fra = hello(f, "node-fra", "fra1", 8, 16384);

        assert_int_equal(create_vm(f, f->acc, "x", "lon1", 1, 512, &v), -ENOSPC);
        assert_int_equal(create_vm(f, f->acc, "a", "ams1", 1, 512, &v), 0);
        assert_int_equal(v.host_id, ams);
        assert_string_equal(v.site, "ams1");
        /* Any site: the host with the most free RAM. */
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 4096, &v), 0);
        assert_int_equal(v.host_id, fra);
        assert_string_equal(v.site, "fra1");
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 4096, &v), 0);
        assert_int_equal(v.host_id, fra); /* 12288 free against 7680 */
        assert_int_equal(create_vm(f, f->acc, "d", NULL, 1, 4096, &v), 0);
        assert_int_equal(v.host_id, fra); /* 8192 against 7680 */
        assert_int_equal(create_vm(f, f->acc, "e", NULL, 1, 4096, &v), 0);
        assert_int_equal(v.host_id, ams); /* 4096 against 7680 */
        assert_int_equal(create_vm(f, f->acc, "f", "fra1", 1, 4096, &v), 0);
        assert_int_equal(v.host_id, fra);
        assert_int_equal(create_vm(f, f->acc, "g", "fra1", 1, 512, &v), -ENOSPC);
        assert_int_equal(create_vm(f, f->acc, "g", NULL, 1, 512, &v), 0);
        assert_int_equal(v.host_id, ams);
}

/* The catalog's sizes against a host of 8 vCPUs (32 with overcommit) and
 * 16 GB: RAM decides. */
static void test_capacity_catalog_sizes(void **state)
{
        struct fx *f = *state;
        struct vm v;
        const struct size_def *big = catalog_size("standard-8vcpu-16gb");
        const struct size_def *small = catalog_size("standard-1vcpu-1gb");
        assert_non_null(big);
        assert_non_null(small);
        assert_null(catalog_size("standard-64vcpu"));
        hello(f, "node-1", "ams1", 8, 16384);

        struct vm_new req = {
                .account_id = f->acc, .name = "big", .size = big->slug, .image = "debian-12",
                .vcpus = big->vcpus, .ram_mb = big->ram_mb, .disk_gb = big->disk_gb,
        };
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &v), 0);
        assert_string_equal(v.size, "standard-8vcpu-16gb");
        req.name = "small";
        req.size = small->slug;
        req.vcpus = small->vcpus;
        req.ram_mb = small->ram_mb;
        req.disk_gb = small->disk_gb;
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &v), -ENOSPC);
}

/* ---- vms: reading ---- */

static void test_vm_get_list_by_account(void **state)
{
        struct fx *f = *state;
        struct vm a1, a2, b1, v, *list = NULL;
        size_t n = 0;
        hello(f, "node-1", "ams1", 8, 16384);

        assert_int_equal(create_vm(f, f->acc, "a1", NULL, 1, 512, &a1), 0);
        assert_int_equal(create_vm(f, f->other, "b1", NULL, 1, 512, &b1), 0);
        assert_int_equal(create_vm(f, f->acc, "a2", NULL, 1, 512, &a2), 0);

        v = get_vm(f, f->acc, a1.id);
        assert_string_equal(v.name, "a1");
        assert_int_equal(store_vm_get(f->s, f->other, a1.id, &v), -ENOENT);
        assert_int_equal(store_vm_get(f->s, f->acc, b1.id, &v), -ENOENT);
        assert_int_equal(store_vm_get(f->s, f->acc, 999999, &v), -ENOENT);

        assert_int_equal(store_vm_list(f->s, f->acc, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(list[0].id, a1.id);
        assert_int_equal(list[1].id, a2.id);
        free(list);
        assert_int_equal(store_vm_list(f->s, f->other, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, b1.id);
        free(list);
        list = NULL;
        assert_int_equal(store_vm_list(f->s, 424242, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
}

/* ---- vms: actions ---- */

static void test_actions(void **state)
{
        struct fx *f = *state;
        struct vm v, r;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);

        static const struct {
                enum vm_action act;
                enum vm_power_want want;
                uint64_t reboot_seq, rebuild_seq;
        } steps[] = {
                { VM_ACT_SHUTDOWN, VM_WANT_STOPPED, 0, 0 },
                { VM_ACT_SHUTDOWN, VM_WANT_STOPPED, 0, 0 },
                { VM_ACT_START, VM_WANT_RUNNING, 0, 0 },
                { VM_ACT_REBOOT, VM_WANT_RUNNING, 1, 0 },
                { VM_ACT_REBOOT, VM_WANT_RUNNING, 2, 0 },
                { VM_ACT_SHUTDOWN, VM_WANT_STOPPED, 2, 0 },
                { VM_ACT_REBUILD, VM_WANT_RUNNING, 2, 1 }, /* a rebuild also starts it */
                { VM_ACT_REBOOT, VM_WANT_RUNNING, 3, 1 },
        };
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                uint64_t gen = generation(f, host);
                assert_int_equal(store_vm_action(f->s, f->acc, v.id, steps[i].act, NULL, &r), 0);
                assert_int_equal(r.id, v.id);
                assert_int_equal(r.want, steps[i].want);
                assert_int_equal(r.reboot_seq, steps[i].reboot_seq);
                assert_int_equal(r.rebuild_seq, steps[i].rebuild_seq);
                assert_int_equal(generation(f, host), gen + 1);
                struct vm g = get_vm(f, f->acc, v.id);
                assert_int_equal(g.want, steps[i].want);
                assert_int_equal(g.reboot_seq, steps[i].reboot_seq);
                assert_int_equal(g.rebuild_seq, steps[i].rebuild_seq);
        }
        /* Not the caller's vm: refused, nothing changes. */
        uint64_t gen = generation(f, host);
        assert_int_equal(store_vm_action(f->s, f->other, v.id, VM_ACT_REBOOT, NULL, &r), -ENOENT);
        assert_int_equal(store_vm_action(f->s, f->acc, 999999, VM_ACT_REBOOT, NULL, &r), -ENOENT);
        assert_int_equal(generation(f, host), gen);
        assert_int_equal(get_vm(f, f->acc, v.id).reboot_seq, 3);
}

/* ---- the agent link: desired and observed ---- */

static void test_host_desired(void **state)
{
        struct fx *f = *state;
        struct vm a, b, c;
        struct msg_sync_reply rep;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        uint64_t other_host = hello(f, "node-2", "ams1", 1, 1024);
        uint64_t dummy;

        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 0);
        free_desired(&rep);

        assert_int_equal(create_vm(f, f->acc, "a", NULL, 2, 2048, &a), 0);
        assert_int_equal(create_vm(f, f->other, "b", NULL, 1, 1024, &b), 0);
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 1024, &c), 0);
        assert_int_equal(a.host_id, host);
        assert_int_equal(b.host_id, host);
        assert_int_equal(c.host_id, host);
        assert_int_equal(store_vm_action(f->s, f->other, b.id, VM_ACT_SHUTDOWN, NULL, &b), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, c.id, VM_ACT_REBOOT, NULL, &c), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, c.id, VM_ACT_REBUILD, NULL, &c), 0);
        assert_int_equal(store_vm_delete(f->s, f->acc, a.id, &dummy), 0);
        assert_int_equal(dummy, host);

        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.generation, generation(f, host));
        assert_int_equal(rep.n_domains, 2);
        const struct dom_desired *d = rep.domains;
        assert_int_equal(d[0].vm_id, b.id);
        assert_string_equal(d[0].hostname, "b");
        assert_int_equal(d[0].vcpus, 1);
        assert_int_equal(d[0].ram_mb, 1024);
        assert_int_equal(d[0].disk_gb, 10);
        assert_int_equal(d[0].power, POWER_STOPPED);
        assert_string_equal(d[0].image, "debian-12");
        assert_int_equal(d[1].vm_id, c.id);
        assert_int_equal(d[1].power, POWER_RUNNING);
        assert_int_equal(d[1].reboot_seq, 1);
        assert_int_equal(d[1].rebuild_seq, 1);
        free_desired(&rep);

        assert_int_equal(store_host_desired(f->s, other_host, &rep), 0);
        assert_int_equal(rep.n_domains, 0);
        free_desired(&rep);
        assert_int_equal(store_host_desired(f->s, 999, &rep), -ENOENT);
}

static void test_host_observe(void **state)
{
        struct fx *f = *state;
        struct vm a, b;
        struct host h;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 512, &b), 0);

        /* Full report, in any order, plus a domain the broker does not know. */
        struct dom_observed doms[3] = {
                { .vm_id = b.id, .state = POWER_STOPPED, .reboot_done = 0, .rebuild_done = 0 },
                { .vm_id = 987654, .state = POWER_RUNNING },
                { .vm_id = a.id, .state = POWER_RUNNING, .reboot_done = 4, .rebuild_done = 2 },
        };
        snprintf(doms[0].error, sizeof(doms[0].error), "cannot start: no space");
        observe(f, host, doms, 3, 0);
        a = get_vm(f, f->acc, a.id);
        b = get_vm(f, f->acc, b.id);
        assert_int_equal(a.obs_state, POWER_RUNNING);
        assert_int_equal(a.obs_reboot_done, 4);
        assert_int_equal(a.obs_rebuild_done, 2);
        assert_string_equal(a.obs_error, "");
        assert_int_equal(b.obs_state, POWER_STOPPED);
        assert_string_equal(b.obs_error, "cannot start: no space");
        assert_int_equal(a.host_last_seen, NOW + 1000);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.last_seen, NOW + 1000);
        assert_int_equal(h.applied_generation, 3);
        assert_int_equal(h.obs_domains, 3);
        assert_int_equal(h.obs_vcpus, 2);
        assert_int_equal(h.obs_ram_mb, 1024);

        /* Partial: only b changes; a is left as it was. */
        struct dom_observed part = { .vm_id = b.id, .state = POWER_RUNNING };
        observe(f, host, &part, 1, 1);
        assert_int_equal(get_vm(f, f->acc, a.id).obs_state, POWER_RUNNING);
        b = get_vm(f, f->acc, b.id);
        assert_int_equal(b.obs_state, POWER_RUNNING);
        assert_string_equal(b.obs_error, "");

        /* Partial with POWER_UNKNOWN: the domain is gone. */
        part.state = POWER_UNKNOWN;
        observe(f, host, &part, 1, 1);
        assert_int_equal(get_vm(f, f->acc, b.id).obs_state, -1);

        /* Full report without a: a is absent again. */
        struct dom_observed only_b = { .vm_id = b.id, .state = POWER_PAUSED };
        observe(f, host, &only_b, 1, 0);
        assert_int_equal(get_vm(f, f->acc, a.id).obs_state, -1);
        assert_int_equal(get_vm(f, f->acc, b.id).obs_state, POWER_PAUSED);
        /* ... and the counters it last reported are kept. */
        assert_int_equal(get_vm(f, f->acc, a.id).obs_reboot_done, 4);

        /* An empty full report: nothing is there. */
        observe(f, host, NULL, 0, 0);
        assert_int_equal(get_vm(f, f->acc, b.id).obs_state, -1);
}

/* Another host's report never touches this host's vms. */
static void test_observe_other_host(void **state)
{
        struct fx *f = *state;
        struct vm a;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        uint64_t other = hello(f, "node-2", "ams1", 1, 256);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &a), 0);
        assert_int_equal(a.host_id, host);

        struct dom_observed d = { .vm_id = a.id, .state = POWER_RUNNING };
        observe(f, other, &d, 1, 0);
        assert_int_equal(get_vm(f, f->acc, a.id).obs_state, -1);
        observe(f, other, &d, 1, 1);
        assert_int_equal(get_vm(f, f->acc, a.id).obs_state, -1);
}

static void test_delete_and_purge(void **state)
{
        struct fx *f = *state;
        struct vm a, b, *list = NULL;
        struct msg_sync_reply rep;
        size_t n;
        uint64_t host_id = 0;
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 4096, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 4096, &b), 0);
        struct dom_observed both[2] = {
                { .vm_id = a.id, .state = POWER_RUNNING },
                { .vm_id = b.id, .state = POWER_RUNNING },
        };
        observe(f, host, both, 2, 0);

        uint64_t gen = generation(f, host);
        assert_int_equal(store_vm_delete(f->s, f->other, a.id, &host_id), -ENOENT);
        assert_int_equal(generation(f, host), gen);
        assert_int_equal(store_vm_delete(f->s, f->acc, a.id, &host_id), 0);
        assert_int_equal(host_id, host);
        assert_int_equal(generation(f, host), gen + 1);
        assert_int_equal(store_vm_delete(f->s, f->acc, a.id, &host_id), -ENOENT);
        assert_int_equal(store_vm_get(f->s, f->acc, a.id, &a), -ENOENT);
        assert_int_equal(store_vm_action(f->s, f->acc, a.id, VM_ACT_START, NULL, &a), -ENOENT);
        assert_int_equal(store_vm_list(f->s, f->acc, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, b.id);
        free(list);
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 1);
        assert_int_equal(rep.domains[0].vm_id, b.id);
        free_desired(&rep);
        /* Its capacity is free again at once. */
        struct vm c;
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 4096, &c), 0);

        /* Still on the host: the row stays. */
        observe(f, host, both, 2, 0);
        assert_int_equal(rows_in_file(f, a.id), 1);
        /* Gone from the host: the row goes. */
        observe(f, host, &both[1], 1, 0);
        assert_int_equal(rows_in_file(f, a.id), 0);
        assert_int_equal(rows_in_file(f, b.id), 1);

        /* Likewise through a partial report saying "gone". */
        assert_int_equal(store_vm_delete(f->s, f->acc, b.id, &host_id), 0);
        struct dom_observed gone = { .vm_id = b.id, .state = POWER_UNKNOWN };
        observe(f, host, &gone, 1, 1);
        assert_int_equal(rows_in_file(f, b.id), 0);
}

/* Closing and opening the file again keeps every row and the id key. */
static void test_reopen(void **state)
{
        struct fx *f = *state;
        struct vm v, *list = NULL;
        struct account a;
        size_t n = 0;
        char before[ID_STR_MAX], after[ID_STR_MAX];
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);
        assert_int_equal(create_vm(f, f->acc, "keep", NULL, 1, 512, &v), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, NULL, &v), 0);
        uint64_t gen = generation(f, host);
        id_encode(store_id_key(f->s), "vps", v.id, before, sizeof(before));

        store_free(f->s);
        f->s = NULL;
        assert_int_equal(store_open(f->path, &f->s), 0);

        id_encode(store_id_key(f->s), "vps", v.id, after, sizeof(after));
        assert_string_equal(before, after);
        uint64_t back = 0;
        assert_int_equal(id_decode(store_id_key(f->s), "vps", before, &back), 0);
        assert_int_equal(back, v.id);

        assert_int_equal(store_account_by_name(f->s, "alice", &a), 0);
        assert_int_equal(a.id, f->acc);
        assert_int_equal(generation(f, host), gen);
        assert_int_equal(store_vm_list(f->s, f->acc, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, v.id);
        assert_string_equal(list[0].name, "keep");
        assert_int_equal(list[0].reboot_seq, 1);
        free(list);
}

/* Two installations never share an id key. */
static void test_id_key_per_installation(void **state)
{
        struct fx *f = *state;
        struct store *s2;
        char path[512], a[ID_STR_MAX], b[ID_STR_MAX];
        char db2[64] = "";
        if (pg_url())
                pg_db_new(db2, sizeof(db2), path, sizeof(path));
        else
                snprintf(path, sizeof(path), "%s/second.db", f->dir);
        assert_int_equal(store_open(path, &s2), 0);
        id_encode(store_id_key(f->s), "vps", 1, a, sizeof(a));
        id_encode(store_id_key(s2), "vps", 1, b, sizeof(b));
        assert_string_not_equal(a, b);
        store_free(s2);
        store_free(NULL);
        if (db2[0])
                pg_db_drop(db2);
}

static void test_open_fails(void **state)
{
        struct store *s = (struct store *)0x1;
        (void)state;
        assert_int_equal(store_open("/nonexistent-dir/tasman.db", &s), -EIO);
        assert_ptr_equal(s, (struct store *)0x1);
        /* no server there (port 1): the PostgreSQL back-end says so too */
        assert_int_equal(store_open("postgresql://tasman@127.0.0.1:1/none?connect_timeout=2", &s),
                         -EIO);
        assert_ptr_equal(s, (struct store *)0x1);
}

/* ---- api_vps_status ---- */

static void test_vps_status(void **state)
{
        const int64_t now = NOW, timeout = 30000;
        static const struct {
                const char *want;
                int64_t seen_ago;
                enum vm_power_want want_power;
                int obs_state;
                uint64_t reboot_seq, reboot_done, rebuild_seq, rebuild_done;
                const char *error;
        } cases[] = {
                { "unknown", 30001, VM_WANT_RUNNING, POWER_RUNNING, 0, 0, 0, 0, "" },
                { "unknown", 30001, VM_WANT_STOPPED, POWER_STOPPED, 0, 0, 0, 0, "" },
                { "unknown", 30001, VM_WANT_RUNNING, -1, 0, 0, 0, 0, "boom" },
                { "running", 30000, VM_WANT_RUNNING, POWER_RUNNING, 0, 0, 0, 0, "" },
                { "provisioning", 0, VM_WANT_RUNNING, -1, 0, 0, 0, 0, "" },
                { "provisioning", 0, VM_WANT_RUNNING, -1, 0, 0, 1, 0, "" },
                { "running", 0, VM_WANT_RUNNING, POWER_RUNNING, 0, 0, 0, 0, "" },
                { "running", 0, VM_WANT_RUNNING, POWER_RUNNING, 2, 2, 1, 1, "" },
                { "stopping", 0, VM_WANT_STOPPED, POWER_RUNNING, 0, 0, 0, 0, "" },
                { "starting", 0, VM_WANT_RUNNING, POWER_STOPPED, 0, 0, 0, 0, "" },
                { "starting", 0, VM_WANT_RUNNING, POWER_CRASHED, 0, 0, 0, 0, "" },
                { "stopped", 0, VM_WANT_STOPPED, POWER_STOPPED, 0, 0, 0, 0, "" },
                { "stopped", 0, VM_WANT_STOPPED, POWER_CRASHED, 0, 0, 0, 0, "" },
                { "rebooting", 0, VM_WANT_RUNNING, POWER_RUNNING, 1, 0, 0, 0, "" },
                { "rebuilding", 0, VM_WANT_RUNNING, POWER_RUNNING, 0, 0, 1, 0, "" },
                { "rebuilding", 0, VM_WANT_RUNNING, POWER_STOPPED, 0, 0, 3, 2, "" },
                { "rebuilding", 0, VM_WANT_RUNNING, POWER_RUNNING, 0, 0, 1, 0, "boom" },
                { "error", 0, VM_WANT_RUNNING, POWER_STOPPED, 0, 0, 0, 0, "cannot start" },
                { "error", 0, VM_WANT_RUNNING, -1, 0, 0, 0, 0, "cannot define" },
                { "paused", 0, VM_WANT_RUNNING, POWER_PAUSED, 0, 0, 0, 0, "" },
                { "unknown", 0, VM_WANT_RUNNING, POWER_UNKNOWN, 0, 0, 0, 0, "" },
        };
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct vm v = {
                        .id = 1,
                        .want = cases[i].want_power,
                        .obs_state = cases[i].obs_state,
                        .reboot_seq = cases[i].reboot_seq,
                        .obs_reboot_done = cases[i].reboot_done,
                        .rebuild_seq = cases[i].rebuild_seq,
                        .obs_rebuild_done = cases[i].rebuild_done,
                        .host_last_seen = now - cases[i].seen_ago,
                };
                snprintf(v.obs_error, sizeof(v.obs_error), "%s", cases[i].error);
                const char *got = api_vps_status(&v, now, timeout);
                if (strcmp(got, cases[i].want) != 0)
                        fail_msg("case %zu: '%s', want '%s'", i, got, cases[i].want);
        }
}

/* The status of rows as the store returns them, end to end. */
static void test_vps_status_from_store(void **state)
{
        struct fx *f = *state;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);
        const int64_t t = NOW + 1000;
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        assert_string_equal(api_vps_status(&v, NOW, 30000), "provisioning");

        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING };
        observe(f, host, &d, 1, 0);
        v = get_vm(f, f->acc, v.id);
        assert_string_equal(api_vps_status(&v, t, 30000), "running");
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_SHUTDOWN, NULL, &v), 0);
        assert_string_equal(api_vps_status(&v, t, 30000), "stopping");
        d.state = POWER_STOPPED;
        observe(f, host, &d, 1, 0);
        v = get_vm(f, f->acc, v.id);
        assert_string_equal(api_vps_status(&v, t, 30000), "stopped");
        assert_string_equal(api_vps_status(&v, t + 30001, 30000), "unknown");
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_START, NULL, &v), 0);
        assert_string_equal(api_vps_status(&v, t, 30000), "starting");
}

/* Liveness transitions of many hosts at once: every one gets its event. */
static void test_liveness_many(void **state)
{
        struct fx *f = *state;
        enum { N = 150 };
        uint64_t ids[N], n_ev = 0;
        size_t down = 0, up = 0;
        char name[32];

        for (int i = 0; i < N; i++) {
                snprintf(name, sizeof(name), "node-%03d", i);
                ids[i] = hello(f, name, "ams1", 4, 8192);
        }
        assert_int_equal(store_hosts_liveness(f->s, NOW + 20000, 10000, &down, &up), 0);
        assert_int_equal(down, N);
        assert_int_equal(up, 0);
        assert_int_equal(store_event_count(f->s, "host.unreachable", &n_ev), 0);
        assert_int_equal(n_ev, N);
        /* Nothing changes: no new events. */
        assert_int_equal(store_hosts_liveness(f->s, NOW + 21000, 10000, &down, &up), 0);
        assert_int_equal(down + up, 0);
        assert_int_equal(store_hosts_touch(f->s, ids, N, NOW + 30000), 0);
        assert_int_equal(store_hosts_liveness(f->s, NOW + 30500, 10000, &down, &up), 0);
        assert_int_equal(up, N);
        assert_int_equal(store_event_count(f->s, "host.up", &n_ev), 0);
        assert_int_equal(n_ev, N);
}

/* A host's count of guests being created drops once per guest, when it is
 * first seen present: not again when a guest vanishes and comes back, and
 * a deleted guest gives back its count only if it was never seen. */
static void test_inflight(void **state)
{
        struct fx *f = *state;
        static const char q[] = "SELECT inflight FROM hosts WHERE id = ?1";
        struct vm a, b, c;
        uint64_t hid;
        uint64_t host = hello(f, "node-1", "ams1", 16, 65536);

        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 512, &b), 0);
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 512, &c), 0);
        assert_int_equal(int_in_file(f, q, host), 3);
        struct dom_observed d = { .vm_id = a.id, .state = POWER_RUNNING };
        observe(f, host, &d, 1, 1);
        assert_int_equal(int_in_file(f, q, host), 2);
        assert_true(get_vm(f, f->acc, a.id).observed);
        assert_false(get_vm(f, f->acc, b.id).observed);
        /* a vanishes (full report without it), then comes back */
        observe(f, host, NULL, 0, 0);
        assert_int_equal(get_vm(f, f->acc, a.id).obs_state, -1);
        observe(f, host, &d, 1, 1);
        assert_int_equal(int_in_file(f, q, host), 2);
        /* b fails to be defined: reported absent with an error; still in flight */
        struct dom_observed e = { .vm_id = b.id, .state = POWER_UNKNOWN };
        snprintf(e.error, sizeof(e.error), "define: no space");
        observe(f, host, &e, 1, 1);
        assert_int_equal(int_in_file(f, q, host), 2);
        assert_false(get_vm(f, f->acc, b.id).observed);
        /* deleting never-seen b gives its count back; deleting seen a does not */
        assert_int_equal(store_vm_delete(f->s, f->acc, b.id, &hid), 0);
        assert_int_equal(int_in_file(f, q, host), 1);
        assert_int_equal(store_vm_delete(f->s, f->acc, a.id, &hid), 0);
        assert_int_equal(int_in_file(f, q, host), 1);
        d.vm_id = c.id;
        observe(f, host, &d, 1, 1);
        assert_int_equal(int_in_file(f, q, host), 0);
}

static uint64_t hello_storage(struct fx *f, const char *name, uint64_t ssd_gb, uint64_t hdd_gb)
{
        struct msg_hello h = { .vcpus = 64, .ram_mb = 65536, .disk_gb = ssd_gb, .hdd_gb = hdd_gb };
        uint64_t id = 0;
        int rebooted;
        snprintf(h.host_id, sizeof(h.host_id), "%s", name);
        snprintf(h.site, sizeof(h.site), "ams1");
        snprintf(h.boot_id, sizeof(h.boot_id), "b");
        assert_int_equal(store_host_hello(f->s, &h, NOW, &id, &rebooted), 0);
        return id;
}

static int create_in(struct fx *f, const char *name, enum storage st, uint32_t disk_gb,
                     const char *group, struct vm *ret, char *why, size_t why_len)
{
        const struct vm_new req = {
                .account_id = f->acc, .name = name, .size = "s-test", .image = "debian-12",
                .vcpus = 1, .ram_mb = 512, .disk_gb = disk_gb, .storage = st, .group = group,
                .why = why, .why_len = why_len,
        };
        return store_vm_create(f->s, &req, NOW, LIVE_AFTER, ret);
}

/* Disk room is counted per storage type, and goes back on delete. */
static void test_storage_types(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        struct host h;
        struct msg_sync_reply rep;
        char why[256];
        uint64_t hid;
        uint64_t ssd_only = hello_storage(f, "ssd-only", 100, 0);
        uint64_t both = hello_storage(f, "both", 10, 50);

        assert_int_equal(create_in(f, "h1", STORAGE_HDD, 40, NULL, &v, why, sizeof(why)), 0);
        assert_int_equal(v.host_id, both);
        assert_int_equal(v.storage, STORAGE_HDD);
        assert_int_equal(create_in(f, "h2", STORAGE_HDD, 20, NULL, &w, why, sizeof(why)), -ENOSPC);
        assert_string_equal(why, "all sites: 2 hosts; 1 without hdd storage, 1 without 20 GB hdd "
                                 "free");
        assert_int_equal(store_host_by_name(f->s, "both", &h), 0);
        assert_int_equal(h.hdd_gb, 50);
        assert_int_equal(h.hdd_gb_used, 40);
        assert_int_equal(h.disk_gb_used, 0);
        /* ssd room is separate: 80 GB of ssd still fits on ssd-only */
        assert_int_equal(create_in(f, "s1", STORAGE_SSD, 80, NULL, &w, why, sizeof(why)), 0);
        assert_int_equal(w.host_id, ssd_only);
        /* the agent is told the type */
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, both, &rep), 0);
        assert_int_equal(rep.n_domains, 1);
        assert_int_equal(rep.domains[0].storage, STORAGE_HDD);
        free_desired(&rep);
        /* delete gives the hdd room back */
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &hid), 0);
        assert_int_equal(store_host_by_name(f->s, "both", &h), 0);
        assert_int_equal(h.hdd_gb_used, 0);
        assert_int_equal(create_in(f, "h3", STORAGE_HDD, 50, NULL, &v, why, sizeof(why)), 0);
}

/* No two guests of an account's group on one host; other accounts and
 * other groups are not affected; a deleted guest no longer counts. */
static void test_anti_affinity(void **state)
{
        struct fx *f = *state;
        struct vm v[4], o;
        char why[256];
        uint64_t hid;
        hello_storage(f, "n1", 1000, 0);
        hello_storage(f, "n2", 1000, 0);
        hello_storage(f, "n3", 1000, 0);

        for (int i = 0; i < 3; i++) {
                char name[8];
                snprintf(name, sizeof(name), "db%d", i);
                assert_int_equal(create_in(f, name, STORAGE_SSD, 10, "db", &v[i], why, sizeof(why)),
                                 0);
                assert_string_equal(v[i].group, "db");
                for (int k = 0; k < i; k++)
                        assert_true(v[i].host_id != v[k].host_id);
        }
        assert_int_equal(create_in(f, "db3", STORAGE_SSD, 10, "db", &v[3], why, sizeof(why)),
                         -ENOSPC);
        assert_string_equal(why, "all sites: 3 hosts; 3 already holding a guest of group db");
        /* another group, no group, another account: all still fit */
        assert_int_equal(create_in(f, "web0", STORAGE_SSD, 10, "web", &o, why, sizeof(why)), 0);
        assert_int_equal(create_in(f, "x", STORAGE_SSD, 10, NULL, &o, why, sizeof(why)), 0);
        assert_string_equal(o.group, "");
        const struct vm_new other = { .account_id = f->other, .name = "db0", .size = "s",
                                      .image = "debian-12", .vcpus = 1, .ram_mb = 512,
                                      .disk_gb = 10, .group = "db" };
        assert_int_equal(store_vm_create(f->s, &other, NOW, LIVE_AFTER, &o), 0);
        /* deleting one frees its host for the group */
        assert_int_equal(store_vm_delete(f->s, f->acc, v[1].id, &hid), 0);
        assert_int_equal(create_in(f, "db3", STORAGE_SSD, 10, "db", &v[3], why, sizeof(why)), 0);
        assert_int_equal(v[3].host_id, v[1].host_id);
}

/* The placement cache follows every change of a host's row: joins,
 * re-joins in another site, touches, reports, reservations, drains and
 * removals, and a failed placement. */
static void test_host_cache_in_step(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        uint64_t hid;
        char why[256];
        uint64_t a = hello(f, "node-a", "ams1", 4, 8192);

        assert_int_equal(store_check_host_cache(f->s), -1); /* not loaded yet */
        assert_int_equal(create_vm(f, f->acc, "v", NULL, 1, 512, &v), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        uint64_t b = hello(f, "node-b", "ams1", 4, 8192);
        assert_int_equal(store_check_host_cache(f->s), 0);
        hello(f, "node-b", "fra1", 8, 16384); /* moved and grown */
        assert_int_equal(store_check_host_cache(f->s), 0);
        uint64_t ids[] = { a, b };
        assert_int_equal(store_hosts_touch(f->s, ids, 2, NOW + 5000), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING };
        observe(f, a, &d, 1, 1); /* in flight drops */
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(create_vm(f, f->acc, "w", "fra1", 1, 512, &w), 0);
        assert_int_equal(w.host_id, b);
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(create_vm(f, f->acc, "x", "fra1", 64, 512, &w), -ENOSPC);
        assert_int_equal(create_vm(f, f->acc, "x", "nowhere", 1, 512, &w), -ENOSPC);
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(store_host_set_draining(f->s, "node-a", 1), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(create_in(f, "y", STORAGE_SSD, 1, NULL, &w, why, sizeof(why)), 0);
        assert_int_equal(w.host_id, b); /* a drains */
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &hid), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        observe(f, a, NULL, 0, 0); /* gone from the host: purged */
        assert_int_equal(store_host_remove(f->s, "node-a"), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(create_in(f, "z", STORAGE_SSD, 1, NULL, &w, why, sizeof(why)), 0);
        assert_int_equal(w.host_id, b);
}

/* An idempotency key is claimed in the transaction of the effect: a
 * second create or action with it has no effect and says -EEXIST; the
 * record tells what to replay. */
static void test_idempotency(void **state)
{
        struct fx *f = *state;
        struct idem i = { .account_id = f->acc, .key = "k1" };
        struct idem_rec rec;
        struct vm v, w;
        memset(i.hash, 7, sizeof(i.hash));
        hello(f, "node-1", "ams1", 8, 16384);
        const struct vm_new req = { .account_id = f->acc, .name = "a", .size = "s",
                                    .image = "debian-12", .vcpus = 1, .ram_mb = 512,
                                    .disk_gb = 10, .idem = &i };
        assert_int_equal(store_idem_get(f->s, f->acc, "k1", NOW, &rec), -ENOENT);
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &v), 0);
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &w), -EEXIST);
        struct vm *vs = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        free(vs);
        assert_int_equal(n, 1); /* rolled back: no second VPS */
        /* The second creation failed after it had reserved capacity (the key
         * is claimed last): its reservation went back with it. */
        struct host h;
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, 1);
        assert_int_equal(h.ram_mb_used, 512);
        assert_int_equal(h.vcpus_used, 1);
        assert_int_equal(store_check_host_cache(f->s), 0);
        assert_int_equal(store_idem_get(f->s, f->acc, "k1", NOW, &rec), 0);
        assert_int_equal(rec.status, 201);
        assert_int_equal(rec.resource_id, v.id);
        assert_null(rec.body); /* not saved yet: replay re-reads the VPS */
        assert_int_equal(store_idem_set_response(f->s, f->acc, "k1", "{\"x\":1}", "/v1/vps/x"), 0);
        assert_int_equal(store_idem_set_response(f->s, f->acc, "k1", "{\"x\":2}", NULL), 0);
        assert_int_equal(store_idem_get(f->s, f->acc, "k1", NOW, &rec), 0);
        assert_string_equal(rec.body, "{\"x\":1}"); /* saved once */
        assert_string_equal(rec.location, "/v1/vps/x");
        free(rec.body);
        assert_int_equal(store_idem_get(f->s, f->other, "k1", NOW, &rec), -ENOENT);
        /* forgotten after a day */
        assert_int_equal(store_idem_get(f->s, f->acc, "k1", NOW + STORE_IDEM_TTL_MS + 1, &rec),
                         -ENOENT);
        /* a key past its day is free again even before the purge runs */
        struct vm x;
        assert_int_equal(store_vm_create(f->s, &req, NOW + STORE_IDEM_TTL_MS + 1, LIVE_AFTER, &x),
                         0);
        assert_true(x.id != v.id);
        /* actions: once */
        struct idem j = { .account_id = f->acc, .key = "k2" };
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, &j, &w), 0);
        assert_int_equal(w.reboot_seq, 1);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, &j, &w), -EEXIST);
        assert_int_equal(get_vm(f, f->acc, v.id).reboot_seq, 1);
}

/* SSH keys: one per fingerprint per account, at most
 * STORE_SSHKEYS_PER_ACCOUNT, and a retry with the key of a request that
 * got there first is a replay (-EALREADY), not a duplicate. */
static void test_sshkeys(void **state)
{
        struct fx *f = *state;
        struct ssh_key *k = calloc(1, sizeof(*k)), *got = calloc(1, sizeof(*got));
        struct idem i = { .account_id = f->acc, .key = "ssh-1" };
        assert_non_null(k);
        assert_non_null(got);
        k->account_id = f->acc;
        snprintf(k->name, sizeof(k->name), "laptop");
        snprintf(k->public_key, sizeof(k->public_key), "ssh-ed25519 AAAA");
        snprintf(k->fingerprint, sizeof(k->fingerprint), "SHA256:fp-0");
        assert_int_equal(store_sshkey_create(f->s, k, &i, got), 0);
        uint64_t first = got->id;
        assert_int_equal(store_sshkey_create(f->s, k, &i, got), -EALREADY);
        struct idem_rec rec;
        assert_int_equal(store_idem_get(f->s, f->acc, "ssh-1", NOW * 0 + util_now_ms(), &rec), 0);
        assert_int_equal(rec.resource_id, first);
        free(rec.body);
        assert_int_equal(store_sshkey_create(f->s, k, NULL, got), -EEXIST);
        assert_int_equal(got->id, first);
        for (int n = 1; n < STORE_SSHKEYS_PER_ACCOUNT; n++) {
                snprintf(k->fingerprint, sizeof(k->fingerprint), "SHA256:fp-%d", n);
                assert_int_equal(store_sshkey_create(f->s, k, NULL, got), 0);
        }
        snprintf(k->fingerprint, sizeof(k->fingerprint), "SHA256:fp-over");
        assert_int_equal(store_sshkey_create(f->s, k, NULL, got), -EDQUOT);
        k->account_id = f->other; /* another account has its own room */
        assert_int_equal(store_sshkey_create(f->s, k, NULL, got), 0);
        assert_int_equal(store_sshkey_get(f->s, f->acc, got->id, got), -ENOENT);
        assert_int_equal(store_sshkey_delete(f->s, f->acc, first), 0);
        assert_int_equal(store_sshkey_delete(f->s, f->acc, first), -ENOENT);
        free(k);
        free(got);
}

/* One store through (nearly) every call: the statement cache grows past
 * any fixed size instead of aborting. */
static void test_every_call_one_store(void **state)
{
        struct fx *f = *state;
        struct vm v, *vs = NULL;
        struct host h, *hs = NULL;
        struct site *sites = NULL;
        struct site site;
        struct store_event *ev = NULL;
        struct api_key_info *ks = NULL;
        struct msg_sync_reply rep;
        char (*slugs)[TMSG_STR] = NULL;
        char boot[64];
        uint64_t hid, id, gen, kid, n_ev;
        size_t n, down, up, bad;
        uint8_t hash[32] = { 1 };

        hid = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &v), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, NULL, &v), 0);
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        free(vs);
        struct vm_query q = { .account_id = f->acc, .limit = 5, .region = "ams1", .name = "a" };
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        free(vs);
        assert_int_equal(store_vm_list_all(f->s, &vs, &n), 0);
        free(vs);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(store_host_lookup(f->s, "node-1", &id, boot, sizeof(boot)), 0);
        assert_int_equal(store_host_generation(f->s, hid, &gen), 0);
        assert_int_equal(store_host_list(f->s, &hs, &n), 0);
        free(hs);
        assert_int_equal(store_site_list(f->s, &slugs, &n), 0);
        free(slugs);
        assert_int_equal(store_sites(f->s, &sites, &n), 0);
        free(sites);
        assert_int_equal(store_site_put(f->s, "ams1", "Amsterdam", &site), 0);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, hid, &rep), 0);
        free_desired(&rep);
        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING };
        observe(f, hid, &d, 1, 0);
        observe(f, hid, &d, 1, 1);
        assert_int_equal(store_hosts_touch(f->s, &hid, 1, NOW + 2000), 0);
        assert_int_equal(store_hosts_liveness(f->s, NOW + 60000, 10000, &down, &up), 0);
        assert_int_equal(store_host_events(f->s, hid, 10, &ev, &n), 0);
        free(ev);
        assert_int_equal(store_event_count(f->s, "vps.created", &n_ev), 0);
        assert_int_equal(store_key_create(f->s, f->acc, "tas_00000000", hash, 1, &kid), 0);
        assert_int_equal(store_key_list(f->s, f->acc, &ks, &n), 0);
        free(ks);
        assert_int_equal(store_key_revoke(f->s, f->acc, kid), 0);
        assert_int_equal(store_sshkey_check(f->s, f->acc, &kid, 1, &bad), -ENOENT);
        struct vm_query sq = { .account_id = f->acc };
        struct ssh_key *sk = NULL;
        assert_int_equal(store_sshkey_page(f->s, &sq, &sk, &n), 0);
        free(sk);
        struct network w, *ws = NULL;
        struct nic *nics = NULL;
        struct ip_pool pool = { .site = "ams1", .ipv4 = "203.0.113.0/24",
                                .gateway4 = "203.0.113.1" }, *pools = NULL;
        uint64_t *ids = NULL;
        size_t n_ids;
        assert_int_equal(store_pool_add(f->s, &pool, &pool), 0);
        assert_int_equal(store_pool_list(f->s, &pools, &n), 0);
        free(pools);
        assert_int_equal(store_net_create(f->s, f->acc, "n", "10.0.0.0/24", NULL, NOW, &w), 0);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, v.id, NULL, &v), 0);
        assert_int_equal(store_net_get(f->s, f->acc, w.id, &w, &ids), 0);
        free(ids);
        assert_int_equal(store_net_list(f->s, f->acc, &ws, &n, &ids, &n_ids), 0);
        free(ws);
        free(ids);
        assert_int_equal(store_vm_nics(f->s, v.id, &nics, &n), 0);
        free(nics);
        assert_int_equal(store_vm_net_hosts(f->s, v.id, &ids, &n), 0);
        free(ids);
        assert_int_equal(store_host_set_draining(f->s, "node-1", 1), 0);
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &id), 0);
        assert_int_equal(store_net_delete(f->s, f->acc, w.id), 0);
        assert_int_equal(store_pool_remove(f->s, "ams1"), 0);
        observe(f, hid, NULL, 0, 0);
        assert_int_equal(store_host_remove(f->s, "node-1"), 0);
        assert_int_equal(store_check_host_cache(f->s), 0);
}

/* Many writers at once (group commit): every creation is durable when it
 * returns and visible to reads from then on, a failing writer (no room)
 * leaves the others' changes alone, and no more commits happen than writes. */
struct writer_arg {
        struct fx *f;
        int id, made, refused, unseen;
};

static void *writer(void *p)
{
        struct writer_arg *w = p;
        for (int i = 0; i < 100; i++) {
                char name[32];
                struct vm v, got;
                snprintf(name, sizeof(name), "w%d-%d", w->id, i);
                /* every 10th asks for more RAM than any host has: refused */
                uint32_t ram = i % 10 == 9 ? 1u << 30 : 64;
                const struct vm_new req = { .account_id = w->f->acc, .name = name, .size = "s",
                                            .image = "debian-12", .vcpus = 1, .ram_mb = ram,
                                            .disk_gb = 1 };
                int r = store_vm_create(w->f->s, &req, NOW, LIVE_AFTER, &v);
                if (r == 0) {
                        w->made++;
                        if (store_vm_get(w->f->s, w->f->acc, v.id, &got) != 0)
                                w->unseen++; /* read-your-writes broken */
                } else if (r == -ENOSPC) {
                        w->refused++;
                }
        }
        return NULL;
}

static void test_group_commit(void **state)
{
        struct fx *f = *state;
        enum { N = 8 };
        pthread_t t[N];
        struct writer_arg a[N];
        uint64_t c0, w0, c1, w1;
        hello(f, "node-1", "ams1", 100000, 1u << 30);
        store_commit_stats(f->s, &c0, &w0);
        for (int i = 0; i < N; i++) {
                a[i] = (struct writer_arg){ .f = f, .id = i };
                assert_int_equal(pthread_create(&t[i], NULL, writer, &a[i]), 0);
        }
        int made = 0;
        for (int i = 0; i < N; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(a[i].made, 90);
                assert_int_equal(a[i].refused, 10);
                assert_int_equal(a[i].unseen, 0);
                made += a[i].made;
        }
        struct vm *vs = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        free(vs);
        assert_int_equal(n, (size_t)made);
        assert_int_equal(rows_in_file(f, 1), 1); /* in the file, from another connection */
        store_commit_stats(f->s, &c1, &w1);
        assert_true(w1 - w0 >= (uint64_t)made);
        assert_true(c1 - c0 <= w1 - w0);
        assert_int_equal(store_check_host_cache(f->s), 0);
        struct host h;
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, (uint32_t)made);
        assert_int_equal(h.ram_mb_used, (uint64_t)made * 64);
}

/* No store call leaves a read transaction open: a second connection can
 * checkpoint and truncate the whole WAL between calls (otherwise the WAL
 * would grow without bound on a busy broker). */
static void assert_wal_truncates(struct fx *f, const char *after)
{
        if (f->db[0])
                return; /* SQLite's WAL only */
        sqlite3 *db;
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL),
                         SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int(st, 0) != 0)
                fail_msg("WAL checkpoint blocked after %s", after);
        sqlite3_finalize(st);
        sqlite3_close(db);
}

static void test_no_read_left_open(void **state)
{
        SQLITE_ONLY("the WAL checkpoint is SQLite's (PostgreSQL readers use MVCC snapshots)");
        struct fx *f = *state;
        struct account a;
        struct host h;
        struct vm v, *vs = NULL;
        struct account *as = NULL;
        struct host *hs = NULL;
        struct msg_sync_reply rep;
        uint64_t hid, gen, id = 0;
        size_t n;
        char boot[64];

        hid = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 1, 512, &v), 0);
        assert_wal_truncates(f, "writes");
        assert_int_equal(store_account_by_name(f->s, "alice", &a), 0);
        assert_wal_truncates(f, "store_account_by_name");
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_wal_truncates(f, "store_host_by_name");
        assert_int_equal(store_host_lookup(f->s, "node-1", &id, boot, sizeof(boot)), 0);
        assert_wal_truncates(f, "store_host_lookup");
        assert_int_equal(store_host_generation(f->s, hid, &gen), 0);
        assert_wal_truncates(f, "store_host_generation");
        assert_int_equal(store_vm_get(f->s, f->acc, v.id, &v), 0);
        assert_wal_truncates(f, "store_vm_get");
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        free(vs);
        assert_wal_truncates(f, "store_vm_list");
        assert_int_equal(store_account_list(f->s, &as, &n), 0);
        free(as);
        assert_wal_truncates(f, "store_account_list");
        assert_int_equal(store_host_list(f->s, &hs, &n), 0);
        free(hs);
        assert_wal_truncates(f, "store_host_list");
        struct snapshot p, *ps = NULL;
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "s", 0, 0, NULL, NOW, &p), 0);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, hid, &rep), 0);
        assert_int_equal(rep.domains[0].n_snaps, 1);
        free_desired(&rep);
        assert_wal_truncates(f, "store_host_desired");
        assert_int_equal(store_snap_get(f->s, f->acc, p.id, &p), 0);
        assert_wal_truncates(f, "store_snap_get");
        assert_int_equal(store_snap_list(f->s, f->acc, 0, &ps, &n), 0);
        free(ps);
        assert_int_equal(store_snap_list(f->s, f->acc, v.id, &ps, &n), 0);
        free(ps);
        assert_wal_truncates(f, "store_snap_list");
}

/* The image catalog: the default entry, add, duplicates, remove (kept for
 * the guests made from it), re-add; the desired state carries the images
 * of the host's guests, each once. */
static void test_images(void **state)
{
        struct fx *f = *state;
        struct image g = { 0 }, *gs = NULL;
        struct msg_sync_reply rep;
        size_t n = 0;
        struct vm a, b;

        assert_int_equal(store_image_get(f->s, "ubuntu-24.04", &g), 0);
        assert_string_equal(g.format, "qcow2");
        assert_int_equal(strlen(g.sha256), 64);
        assert_int_equal(strncmp(g.url, "https://cloud-images.ubuntu.com/", 32), 0);

        struct image d12 = { .slug = "debian-12", .name = "Debian 12",
                             .url = "file:///srv/images/debian-12.qcow2", .format = "qcow2",
                             .min_disk_gb = 2 };
        memset(d12.sha256, 'a', 64);
        assert_int_equal(store_image_add(f->s, &d12), 0);
        assert_int_equal(store_image_add(f->s, &d12), -EEXIST);
        assert_int_equal(store_image_list(f->s, &gs, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(gs[0].slug, "debian-12"); /* by slug */
        assert_int_equal(gs[0].min_disk_gb, 2);
        assert_string_equal(gs[1].slug, "ubuntu-24.04");
        free(gs);

        uint64_t host = hello(f, "hv1", "tas-1", 8, 8192);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 512, &b), 0);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 2);
        assert_int_equal(rep.n_images, 1); /* both guests use debian-12: once */
        assert_string_equal(rep.images[0].slug, "debian-12");
        assert_string_equal(rep.images[0].url, d12.url);
        assert_string_equal(rep.images[0].sha256, d12.sha256);
        assert_string_equal(rep.images[0].format, "qcow2");
        free_desired(&rep);

        /* removed: not listed, not chosen, but still the guests' source */
        assert_int_equal(store_image_remove(f->s, "debian-12"), 0);
        assert_int_equal(store_image_remove(f->s, "debian-12"), -ENOENT);
        assert_int_equal(store_image_get(f->s, "debian-12", &g), -ENOENT);
        assert_int_equal(store_image_list(f->s, &gs, &n), 0);
        assert_int_equal(n, 1);
        free(gs);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_images, 1);
        free_desired(&rep);

        /* re-added with another source: replaces the removed entry */
        snprintf(d12.url, sizeof(d12.url), "https://example.org/debian-12-v2.qcow2");
        assert_int_equal(store_image_add(f->s, &d12), 0);
        assert_int_equal(store_image_get(f->s, "debian-12", &g), 0);
        assert_string_equal(g.url, "https://example.org/debian-12-v2.qcow2");
        assert_wal_truncates(f, "store_image_*");
}

/* A guest's cloud-init inputs: only for the host it is placed on; its
 * keys as they are now; its user-data. */
static void test_vm_seed(void **state)
{
        struct fx *f = *state;
        struct msg_seed_reply m;
        struct ssh_key k1 = { .account_id = f->acc, .name = "k1", .fingerprint = "SHA256:one",
                              .public_key = "ssh-ed25519 AAAAone k1@x" };
        struct ssh_key k2 = { .account_id = f->acc, .name = "k2", .fingerprint = "SHA256:two",
                              .public_key = "ssh-ed25519 AAAAtwo k2@x" };
        struct ssh_key g1, g2;
        struct vm v;

        uint64_t host = hello(f, "hv1", "tas-1", 8, 8192);
        uint64_t other = hello(f, "hv2", "tas-2", 8, 8192);
        assert_int_equal(store_sshkey_create(f->s, &k1, NULL, &g1), 0);
        assert_int_equal(store_sshkey_create(f->s, &k2, NULL, &g2), 0);
        const uint64_t keys[] = { g1.id, g2.id };
        const struct vm_new req = {
                .account_id = f->acc, .name = "seeded", .size = "s-test", .image = "debian-12",
                .site = "tas-1", .vcpus = 1, .ram_mb = 512, .disk_gb = 10, .ssh_keys = keys,
                .n_ssh_keys = 2, .user_data = "#cloud-config\npackages: [htop]\n",
        };
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &v), 0);
        assert_int_equal(v.host_id, host);

        assert_int_equal(store_vm_seed(f->s, host, v.id, &m), 0);
        assert_int_equal(m.vm_id, v.id);
        assert_string_equal(m.hostname, "seeded");
        assert_int_equal(m.n_ssh_keys, 2);
        assert_string_equal(m.ssh_keys[0], k1.public_key);
        assert_string_equal(m.ssh_keys[1], k2.public_key);
        assert_string_equal(m.user_data, req.user_data);
        struct tmsg t = { .type = TMSG_SEED_REPLY, .seed_reply = m };
        tmsg_clear(&t);

        assert_int_equal(store_vm_seed(f->s, other, v.id, &m), -ENOENT);
        assert_int_equal(store_vm_seed(f->s, host, v.id + 100, &m), -ENOENT);

        /* a key deleted since is left out */
        assert_int_equal(store_sshkey_delete(f->s, f->acc, g1.id), 0);
        assert_int_equal(store_vm_seed(f->s, host, v.id, &m), 0);
        assert_int_equal(m.n_ssh_keys, 1);
        assert_string_equal(m.ssh_keys[0], k2.public_key);
        t = (struct tmsg){ .type = TMSG_SEED_REPLY, .seed_reply = m };
        tmsg_clear(&t);

        uint64_t dummy;
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &dummy), 0);
        assert_int_equal(store_vm_seed(f->s, host, v.id, &m), -ENOENT);
        assert_wal_truncates(f, "store_vm_seed");
}

/* Resize in place: room on the guest's own host (its old size counted
 * out), never a smaller disk; the reservation and the desired state follow. */
static void test_vm_resize(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        struct host h;
        struct msg_sync_reply rep;
        char why[256] = "";
        uint64_t host = hello(f, "node-1", "ams1", 4, 8192);

        assert_int_equal(create_vm(f, f->acc, "web1", NULL, 2, 2048, &v), 0);
        uint64_t gen = generation(f, host);
        struct vm_resize rq = { .account_id = f->acc, .vm_id = v.id, .size = "bigger",
                                .vcpus = 4, .ram_mb = 8192, .disk_gb = 20, .cpu_cap = 50,
                                .why = why, .why_len = sizeof(why) };
        assert_int_equal(store_vm_resize(f->s, &rq, &w), 0);
        assert_string_equal(w.size, "bigger");
        assert_int_equal(w.vcpus, 4);
        assert_int_equal(w.ram_mb, 8192);
        assert_int_equal(w.disk_gb, 20);
        assert_int_equal(w.cpu_cap, 50);
        assert_int_equal(w.resize_seq, 1);
        assert_true(generation(f, host) > gen);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, 1);
        assert_int_equal(h.vcpus_used, 4);
        assert_int_equal(h.ram_mb_used, 8192);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 1);
        assert_int_equal(rep.domains[0].ram_mb, 8192);
        assert_int_equal(rep.domains[0].resize_seq, 1);
        assert_int_equal(rep.domains[0].cpu_cap, 50);
        free_desired(&rep);

        /* more RAM than the host has, even with this guest's counted out */
        rq.ram_mb = 16384;
        assert_int_equal(store_vm_resize(f->s, &rq, &w), -ENOSPC);
        assert_true(strstr(why, "RAM") != NULL || strstr(why, "ram") != NULL);
        /* a smaller disk */
        rq.ram_mb = 1024;
        rq.disk_gb = 10;
        assert_int_equal(store_vm_resize(f->s, &rq, &w), -EINVAL);
        /* refused resizes changed nothing */
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.ram_mb_used, 8192);
        w = get_vm(f, f->acc, v.id);
        assert_int_equal(w.resize_seq, 1);
        /* another account's guest: unknown */
        rq.account_id = f->acc + 1000;
        rq.disk_gb = 20;
        assert_int_equal(store_vm_resize(f->s, &rq, &w), -ENOENT);
}

/* ---- snapshots ---- */

/* vms.snap_pending is exactly the count of the vm's creating and deleting
 * snapshots, as read from the file. */
static void assert_pending_exact(struct fx *f, uint64_t vm_id)
{
        int64_t pending = int_in_file(f, "SELECT snap_pending FROM vms WHERE id = ?1", vm_id);
        int64_t counted = int_in_file(f, "SELECT COUNT(*) FROM snapshots WHERE vm_id = ?1"
                                         " AND state != 'ready'", vm_id);
        if (pending != counted)
                fail_msg("vm %llu: snap_pending %lld, rows %lld", (unsigned long long)vm_id,
                         (long long)pending, (long long)counted);
}

static int64_t snap_rows(struct fx *f, uint64_t vm_id)
{
        return int_in_file(f, "SELECT COUNT(*) FROM snapshots WHERE vm_id = ?1", vm_id);
}

/* Writes to the file behind the store's back (for the fast-path test). */
static void exec_in_file(struct fx *f, const char *sql)
{
        if (f->db[0]) {
                char out[256];
                if (psql(f->db, sql, out, sizeof(out)) != 0)
                        fail_msg("psql: %s: %s", sql, out);
                return;
        }
        sqlite3 *db;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

/* A partial report of one running domain with these snapshots. */
static void report_snaps(struct fx *f, uint64_t host, uint64_t vm_id, const uint64_t *ids,
                         size_t n, uint64_t failed)
{
        struct dom_observed d = { .vm_id = vm_id, .state = POWER_RUNNING, .snap_failed = failed };
        for (size_t i = 0; i < n; i++)
                d.snaps[i] = ids[i];
        d.n_snaps = n;
        observe(f, host, &d, 1, 1);
}

static struct snapshot get_snap(struct fx *f, uint64_t id)
{
        struct snapshot p;
        assert_int_equal(store_snap_get(f->s, f->acc, id, &p), 0);
        return p;
}

static struct snapshot make_snap(struct fx *f, uint64_t vm_id, const char *name, int online,
                                 unsigned flags)
{
        struct snapshot p;
        assert_int_equal(store_snap_create(f->s, f->acc, vm_id, name, online, flags, NULL, NOW,
                                           &p),
                         0);
        return p;
}

/* Create, get, list: a new snapshot is creating (and not listed) until its
 * host reports it; it keeps the guest's size and image of that moment. */
static void test_snap_create_get_list(void **state)
{
        struct fx *f = *state;
        struct snapshot p, q, *list = NULL;
        struct vm v, w;
        size_t n = 9;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 2, 2048, &v), 0);
        assert_int_equal(create_vm(f, f->other, "bobs", NULL, 1, 512, &w), 0);

        uint64_t gen = generation(f, host);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "before-upgrade", 0, 0, NULL,
                                           NOW + 5, &p),
                         0);
        assert_true(p.id > 0);
        assert_int_equal(p.account_id, f->acc);
        assert_int_equal(p.vm_id, v.id);
        assert_string_equal(p.name, "before-upgrade");
        assert_int_equal(p.state, SNAP_CREATING);
        assert_string_equal(snap_state_to_string(p.state), "creating");
        assert_int_equal(p.online, 0);
        assert_int_equal(p.replaces, 0);
        assert_int_equal(p.created_at, NOW + 5);
        assert_int_equal(p.ready_at, 0);
        assert_int_equal(p.vcpus, 2);
        assert_int_equal(p.ram_mb, 2048);
        assert_int_equal(p.disk_gb, 10);
        assert_string_equal(p.image, "debian-12");
        assert_int_equal(generation(f, host), gen + 1);
        assert_pending_exact(f, v.id);
        assert_int_equal(int_in_file(f, "SELECT snap_pending FROM vms WHERE id = ?1", v.id), 1);

        q = get_snap(f, p.id);
        assert_int_equal(q.id, p.id);
        assert_int_equal(q.state, SNAP_CREATING);
        assert_int_equal(store_snap_get(f->s, f->other, p.id, &q), -ENOENT);
        assert_int_equal(store_snap_get(f->s, f->acc, p.id + 1000, &q), -ENOENT);

        /* not listed while creating */
        assert_int_equal(store_snap_list(f->s, f->acc, v.id, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);

        /* unknown, another account's, or deleted vm: -ENOENT, nothing made */
        assert_int_equal(store_snap_create(f->s, f->acc, w.id, "x", 0, 0, NULL, NOW, &q), -ENOENT);
        assert_int_equal(store_snap_create(f->s, f->acc, 999999, "x", 0, 0, NULL, NOW, &q),
                         -ENOENT);
        assert_int_equal(snap_rows(f, w.id), 0);

        /* the host reports it: ready, listed */
        report_snaps(f, host, v.id, &p.id, 1, 0);
        q = get_snap(f, p.id);
        assert_int_equal(q.state, SNAP_READY);
        assert_int_equal(q.ready_at, NOW + 1000);
        assert_pending_exact(f, v.id);
        assert_int_equal(int_in_file(f, "SELECT snap_pending FROM vms WHERE id = ?1", v.id), 0);
        assert_int_equal(store_snap_list(f->s, f->acc, v.id, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, p.id);
        assert_int_equal(list[0].state, SNAP_READY);
        free(list);

        /* a second one, online; the account-wide list has both vms' */
        struct snapshot o = make_snap(f, v.id, "live", 1, 0);
        assert_int_equal(o.online, 1);
        assert_true(o.id > p.id);
        const uint64_t both[] = { p.id, o.id };
        report_snaps(f, host, v.id, both, 2, 0);
        assert_int_equal(store_snap_create(f->s, f->other, w.id, "bob-1", 0, 0, NULL, NOW, &q), 0);
        report_snaps(f, host, w.id, &q.id, 1, 0);
        assert_int_equal(store_snap_list(f->s, f->acc, 0, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(list[0].id, p.id);
        assert_int_equal(list[1].id, o.id);
        free(list);
        assert_int_equal(store_snap_list(f->s, f->other, 0, &list, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, q.id);
        free(list);
        assert_int_equal(store_snap_list(f->s, f->other, v.id, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
        assert_pending_exact(f, v.id);
        assert_pending_exact(f, w.id);
}

/* Names: one creating or ready snapshot per name per vm; overwrite makes a
 * new one that replaces the old only once it exists. The limit counts
 * creating and ready ones, an overwrite's old copy not twice. */
static void test_snap_names_overwrite_limit(void **state)
{
        struct fx *f = *state;
        struct snapshot p, q, *list = NULL;
        struct vm v, w;
        size_t n = 0;
        uint64_t ids[STORE_SNAPS_PER_VM];
        char name[16];
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "db", NULL, 1, 512, &w), 0);

        for (int i = 0; i < STORE_SNAPS_PER_VM; i++) {
                snprintf(name, sizeof(name), "s%d", i);
                p = make_snap(f, v.id, name, 0, 0);
                ids[i] = p.id;
                /* one at a time */
                assert_int_equal(store_snap_create(f->s, f->acc, v.id, "other", 0, 0, NULL, NOW,
                                                   &q),
                                 -EBUSY);
                report_snaps(f, host, v.id, ids, (size_t)i + 1, 0);
                assert_int_equal(get_snap(f, p.id).state, SNAP_READY);
        }
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "s3", 0, 0, NULL, NOW, &q), -EEXIST);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "s10", 0, 0, NULL, NOW, &q),
                         -EDQUOT);
        /* the same name on another vm is another snapshot */
        assert_int_equal(store_snap_create(f->s, f->acc, w.id, "s3", 0, 0, NULL, NOW, &q), 0);
        report_snaps(f, host, w.id, &q.id, 1, 0);
        /* an overwrite of a name nobody has is a plain create */
        assert_int_equal(store_snap_create(f->s, f->acc, w.id, "new", 0, 1, NULL, NOW, &q), 0);
        assert_int_equal(q.replaces, 0);

        /* overwrite at the limit: allowed, the old copy stays until the new exists */
        uint64_t gen = generation(f, host);
        p = make_snap(f, v.id, "s3", 1, 1);
        assert_int_equal(p.replaces, ids[3]);
        assert_int_equal(p.state, SNAP_CREATING);
        assert_int_equal(generation(f, host), gen + 1);
        assert_int_equal(get_snap(f, ids[3]).state, SNAP_READY);
        assert_pending_exact(f, v.id);

        /* the host has the new copy (and the old still): the old goes */
        uint64_t all[STORE_SNAPS_PER_VM + 1];
        memcpy(all, ids, sizeof(ids));
        all[STORE_SNAPS_PER_VM] = p.id;
        gen = generation(f, host);
        report_snaps(f, host, v.id, all, STORE_SNAPS_PER_VM + 1, 0);
        assert_int_equal(get_snap(f, p.id).state, SNAP_READY);
        assert_int_equal(get_snap(f, ids[3]).state, SNAP_DELETING);
        assert_int_equal(generation(f, host), gen + 1); /* the host must delete it */
        assert_pending_exact(f, v.id);
        /* both still listed (the old one exists until the host drops it) */
        assert_int_equal(store_snap_list(f->s, f->acc, v.id, &list, &n), 0);
        assert_int_equal(n, STORE_SNAPS_PER_VM + 1);
        free(list);
        /* the host dropped it: gone */
        all[3] = p.id;
        report_snaps(f, host, v.id, all, STORE_SNAPS_PER_VM, 0);
        assert_int_equal(store_snap_get(f->s, f->acc, ids[3], &q), -ENOENT);
        assert_int_equal(snap_rows(f, v.id), STORE_SNAPS_PER_VM);
        assert_pending_exact(f, v.id);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "s10", 0, 0, NULL, NOW, &q),
                         -EDQUOT);

        /* the overwritten copy goes even if renamed meanwhile: the limit
         * holds once the new copy is ready */
        p = make_snap(f, v.id, "s5", 0, 1);
        assert_int_equal(p.replaces, ids[5]);
        assert_int_equal(store_snap_rename(f->s, f->acc, ids[5], "kept", 0, &q), 0);
        all[5] = p.id;
        all[STORE_SNAPS_PER_VM] = ids[5];
        report_snaps(f, host, v.id, all, STORE_SNAPS_PER_VM + 1, 0);
        assert_int_equal(get_snap(f, p.id).state, SNAP_READY);
        assert_int_equal(get_snap(f, ids[5]).state, SNAP_DELETING);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "kept", 0, 0, NULL, NOW, &q),
                         -EDQUOT);
        assert_pending_exact(f, v.id);
}

/* The Tilaa API's snapshots: names need not be unique (creates and
 * renames); its overwrite replaces the newest of the name, else the most
 * recent snapshot; the native overwrite of a new name replaces none. */
static void test_snap_any_name_latest(void **state)
{
        struct fx *f = *state;
        const unsigned ow = STORE_SNAP_ANY_NAME | STORE_SNAP_OVERWRITE | STORE_SNAP_LATEST;
        struct snapshot a, b, c, q, r;
        struct vm v, w;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "db", NULL, 1, 512, &w), 0);

        /* an overwrite with no snapshot at all is a plain create */
        q = make_snap(f, w.id, "w1", 0, ow);
        assert_int_equal(q.replaces, 0);

        a = make_snap(f, v.id, "same", 0, STORE_SNAP_ANY_NAME);
        report_snaps(f, host, v.id, &a.id, 1, 0);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "same", 0, 0, NULL, NOW, &q),
                         -EEXIST); /* the native rule */
        b = make_snap(f, v.id, "same", 0, STORE_SNAP_ANY_NAME);
        assert_int_equal(b.replaces, 0);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, b.id}, 2, 0);
        c = make_snap(f, v.id, "other", 0, STORE_SNAP_ANY_NAME);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, b.id, c.id}, 3, 0);
        assert_int_equal(get_snap(f, b.id).state, SNAP_READY);
        assert_string_equal(get_snap(f, b.id).name, "same");

        /* a rename to a taken name: refused natively, not with ANY_NAME */
        assert_int_equal(store_snap_rename(f->s, f->acc, c.id, "same", 0, &q), -EEXIST);
        assert_int_equal(store_snap_rename(f->s, f->acc, c.id, "same", STORE_SNAP_ANY_NAME, &q),
                         0);
        assert_string_equal(q.name, "same");
        assert_int_equal(store_snap_rename(f->s, f->acc, c.id, "other", STORE_SNAP_ANY_NAME, &q),
                         0);

        /* overwrite of a name: the newest of it (b, not a), then b goes */
        q = make_snap(f, v.id, "same", 0, ow);
        assert_int_equal(q.replaces, b.id);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, b.id, c.id, q.id}, 4, 0);
        assert_int_equal(get_snap(f, q.id).state, SNAP_READY);
        assert_int_equal(get_snap(f, b.id).state, SNAP_DELETING);
        assert_int_equal(get_snap(f, a.id).state, SNAP_READY);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, c.id, q.id}, 3, 0);
        assert_int_equal(store_snap_get(f->s, f->acc, b.id, &r), -ENOENT);

        /* overwrite of a name none has (a default name): the most recent */
        r = make_snap(f, v.id, "web-20260101-000000", 0, ow);
        assert_int_equal(r.replaces, q.id);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, c.id, q.id, r.id}, 4, 0);
        assert_int_equal(get_snap(f, q.id).state, SNAP_DELETING);
        report_snaps(f, host, v.id, (uint64_t[]){a.id, c.id, r.id}, 3, 0);

        /* the native overwrite of a new name replaces none */
        q = make_snap(f, v.id, "fresh", 0, STORE_SNAP_OVERWRITE);
        assert_int_equal(q.replaces, 0);
        assert_pending_exact(f, v.id);
}

/* A guest's host name (desired domain, seed): its name when that is one,
 * a dns_name's first label, else vps-ID (a name the Tilaa API gave: "My
 * server (2)"). */
static void test_host_names(void **state)
{
        static const struct {
                const char *name, *dns_name; /* NULL: none */
                const char *desired, *seed;  /* NULL: vps-ID */
        } cases[] = {
            {"web1", NULL, "web1", "web1"},
            {"web-1.example", NULL, "web-1.example", "web-1.example"},
            {"My server (2)", NULL, NULL, NULL},
            {"caf\xc3\xa9", NULL, NULL, NULL},
            {"a..b", NULL, NULL, NULL},
            {"-a", NULL, NULL, NULL},
            {"My server (2)", "my-server-2.example.test", "my-server-2", "my-server-2.example.test"},
            {"x y", "single", "single", "single"},
            {"x y",
             "a-rather-long-host-label-for-this-test.with-a-long-subdomain.example.org",
             "a-rather-long-host-label-for-this-test", "a-rather-long-host-label-for-this-test"},
        };
        struct fx *f = *state;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct vm v;
                struct msg_sync_reply rep;
                struct msg_seed_reply seed;
                char sql[512], want[64];
                assert_int_equal(create_vm(f, f->acc, "placeholder", NULL, 1, 512, &v), 0);
                snprintf(sql, sizeof(sql), "UPDATE vms SET name = '%s', dns_name = %s%s%s WHERE id = %llu",
                         cases[i].name, cases[i].dns_name ? "'" : "",
                         cases[i].dns_name ? cases[i].dns_name : "NULL",
                         cases[i].dns_name ? "'" : "", (unsigned long long)v.id);
                exec_in_file(f, sql);
                assert_int_equal(store_host_desired(f->s, host, &rep), 0);
                size_t k = 0;
                while (k < rep.n_domains && rep.domains[k].vm_id != v.id)
                        k++;
                assert_true(k < rep.n_domains);
                snprintf(want, sizeof(want), "vps-%llu", (unsigned long long)v.id);
                if (strcmp(rep.domains[k].hostname, cases[i].desired ? cases[i].desired : want))
                        fail_msg("'%s': desired host name '%s'", cases[i].name,
                                 rep.domains[k].hostname);
                free_desired(&rep);
                assert_int_equal(store_vm_seed(f->s, host, v.id, &seed), 0);
                if (strcmp(seed.hostname, cases[i].seed ? cases[i].seed : want))
                        fail_msg("'%s': seed host name '%s'", cases[i].name, seed.hostname);
                struct tmsg t = {.type = TMSG_SEED_REPLY, .seed_reply = seed};
                tmsg_clear(&t);
        }
}

static void test_snap_rename(void **state)
{
        struct fx *f = *state;
        struct snapshot a, b, q;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        a = make_snap(f, v.id, "a", 0, 0);
        report_snaps(f, host, v.id, &a.id, 1, 0);
        b = make_snap(f, v.id, "b", 0, 0); /* still creating: its name counts */

        uint64_t gen = generation(f, host);
        assert_int_equal(store_snap_rename(f->s, f->acc, a.id, "b", 0, &q), -EEXIST);
        assert_int_equal(store_snap_rename(f->s, f->acc, b.id, "a", 0, &q), -EEXIST);
        assert_int_equal(store_snap_rename(f->s, f->acc, a.id, "a", 0, &q), 0);
        assert_string_equal(q.name, "a");
        assert_int_equal(store_snap_rename(f->s, f->acc, a.id, "first", 0, &q), 0);
        assert_string_equal(q.name, "first");
        assert_int_equal(q.id, a.id);
        assert_int_equal(q.state, SNAP_READY);
        assert_string_equal(get_snap(f, a.id).name, "first");
        assert_int_equal(store_snap_rename(f->s, f->acc, b.id, "a", 0, &q), 0); /* free now */
        assert_int_equal(generation(f, host), gen); /* names are not the host's business */
        assert_int_equal(store_snap_rename(f->s, f->other, a.id, "x", 0, &q), -ENOENT);
        assert_int_equal(store_snap_rename(f->s, f->acc, b.id + 100, "x", 0, &q), -ENOENT);
        /* a deleting one cannot be renamed; its name is free again */
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, NULL), 0);
        assert_int_equal(store_snap_rename(f->s, f->acc, a.id, "x", 0, &q), -ENOENT);
        assert_int_equal(store_snap_rename(f->s, f->acc, b.id, "first", 0, &q), 0);
}

/* Delete: the snapshot is deleting (idempotent) and leaves the desired
 * state; the host's report without it removes the row. */
static void test_snap_delete(void **state)
{
        struct fx *f = *state;
        struct snapshot a, b, q, *list = NULL;
        struct msg_sync_reply rep;
        struct vm v;
        size_t n = 0;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        a = make_snap(f, v.id, "a", 0, 0);
        report_snaps(f, host, v.id, &a.id, 1, 0);
        b = make_snap(f, v.id, "b", 0, 0);

        uint64_t gen = generation(f, host);
        assert_int_equal(store_snap_delete(f->s, f->other, a.id, &q), -ENOENT);
        assert_int_equal(store_snap_delete(f->s, f->acc, b.id + 1000, &q), -ENOENT);
        assert_int_equal(generation(f, host), gen);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, &q), 0);
        assert_int_equal(q.state, SNAP_DELETING);
        assert_int_equal(generation(f, host), gen + 1);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, &q), 0); /* again: fine */
        assert_int_equal(q.state, SNAP_DELETING);
        assert_int_equal(generation(f, host), gen + 1);
        assert_pending_exact(f, v.id);
        /* a creating one may go too */
        assert_int_equal(store_snap_delete(f->s, f->acc, b.id, NULL), 0);
        assert_int_equal(get_snap(f, b.id).state, SNAP_DELETING);
        assert_pending_exact(f, v.id);
        assert_int_equal(int_in_file(f, "SELECT snap_pending FROM vms WHERE id = ?1", v.id), 2);

        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 1);
        assert_int_equal(rep.domains[0].n_snaps, 0);
        free_desired(&rep);
        /* still on the host: listed as deleting, rows kept */
        const uint64_t both[] = { a.id, b.id };
        report_snaps(f, host, v.id, both, 2, 0);
        assert_int_equal(store_snap_list(f->s, f->acc, v.id, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(list[0].state, SNAP_DELETING);
        free(list);
        assert_int_equal(get_snap(f, a.id).state, SNAP_DELETING);
        /* gone from the host: both rows go, with an event each */
        uint64_t before = 0, after = 0;
        assert_int_equal(store_event_count(f->s, "snapshot.deleted", &before), 0);
        report_snaps(f, host, v.id, NULL, 0, 0);
        assert_int_equal(store_snap_get(f->s, f->acc, a.id, &q), -ENOENT);
        assert_int_equal(store_snap_get(f->s, f->acc, b.id, &q), -ENOENT);
        assert_int_equal(snap_rows(f, v.id), 0);
        assert_int_equal(store_event_count(f->s, "snapshot.deleted", &after), 0);
        assert_int_equal(after, before + 2);
        assert_pending_exact(f, v.id);
}

/* Restore into another vm (the Tilaa API's restore_snapshot with any of
 * the account's snapshots): a rebuild from a copy of the snapshot's disk,
 * on the same host only, into a disk at least as large; the vm's own
 * snapshots go; the source snapshot cannot be deleted while it is copied. */
static void test_snap_restore_into(void **state)
{
        struct fx *f = *state;
        struct snapshot a, b, q;
        struct vm v1, v2, v3, small, r;
        uint64_t h1 = hello(f, "node-1", "ams1", 8, 16384);
        hello(f, "node-2", "ams2", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "one", "ams1", 1, 512, &v1), 0);
        assert_int_equal(create_vm(f, f->acc, "two", "ams1", 1, 512, &v2), 0);
        assert_int_equal(create_vm(f, f->acc, "three", "ams2", 1, 512, &v3), 0);
        const struct vm_new sreq = { .account_id = f->acc, .name = "small", .size = "s-test",
                                     .image = "debian-12", .site = "ams1", .vcpus = 1,
                                     .ram_mb = 512, .disk_gb = 5 };
        assert_int_equal(store_vm_create(f->s, &sreq, NOW, LIVE_AFTER, &small), 0);
        a = make_snap(f, v1.id, "a", 1, 0);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, v2.id, &r), -EBUSY);
        report_snaps(f, h1, v1.id, &a.id, 1, 0);
        b = make_snap(f, v2.id, "b", 1, 0);
        report_snaps(f, h1, v2.id, &b.id, 1, 0);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, v3.id, &r), -EXDEV);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, small.id, &r), -EFBIG);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, v1.id, &r), -EINVAL);
        assert_int_equal(store_snap_restore_into(f->s, f->other, a.id, v2.id, &r), -ENOENT);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, 999999, &r), -ENOENT);
        uint64_t gen = generation(f, h1);
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, v2.id, &r), 0);
        assert_int_equal(r.id, v2.id);
        assert_int_equal(r.rebuild_seq, v2.rebuild_seq + 1);
        assert_int_equal(int_in_file(f, "SELECT source_vm FROM vms WHERE id = ?1", v2.id), v1.id);
        assert_int_equal(int_in_file(f, "SELECT source_snap FROM vms WHERE id = ?1", v2.id), a.id);
        assert_int_equal(generation(f, h1), gen + 1);
        assert_int_equal(get_snap(f, b.id).state, SNAP_DELETING); /* its own disk goes */
        assert_int_equal(get_snap(f, a.id).state, SNAP_READY);
        /* one at a time, and the source stays while it is copied */
        assert_int_equal(store_snap_restore_into(f->s, f->acc, a.id, v2.id, &r), -EBUSY);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, &q), -EBUSY);
}

/* Restore: a ready snapshot, one restore at a time, never with a rebuild
 * or a snapshot in flight; a snapshot being restored cannot be deleted. */
static void test_snap_restore(void **state)
{
        struct fx *f = *state;
        struct snapshot a, b, q;
        struct vm v, r;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_SHUTDOWN, NULL, &v), 0);
        a = make_snap(f, v.id, "a", 0, 0);
        assert_int_equal(store_snap_restore(f->s, f->acc, a.id, NULL, &r), -EBUSY); /* creating */
        report_snaps(f, host, v.id, &a.id, 1, 0);
        b = make_snap(f, v.id, "b", 0, 0);
        /* not while a snapshot is being made */
        assert_int_equal(store_snap_restore(f->s, f->acc, a.id, NULL, &r), -EBUSY);
        const uint64_t both[] = { a.id, b.id };
        report_snaps(f, host, v.id, both, 2, 0);

        uint64_t gen = generation(f, host);
        assert_int_equal(store_snap_restore(f->s, f->other, a.id, NULL, &r), -ENOENT);
        assert_int_equal(store_snap_restore(f->s, f->acc, b.id + 100, NULL, &r), -ENOENT);
        assert_int_equal(store_snap_restore(f->s, f->acc, a.id, NULL, &r), 0);
        assert_int_equal(r.id, v.id);
        assert_int_equal(r.restore_seq, 1);
        assert_int_equal(r.restore_snap, a.id);
        assert_int_equal(r.obs_restore_done, 0);
        assert_int_equal(r.want, VM_WANT_STOPPED); /* the power wish stays */
        assert_int_equal(generation(f, host), gen + 1);
        struct msg_sync_reply rep;
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.domains[0].restore_seq, 1);
        assert_int_equal(rep.domains[0].restore_snap, a.id);
        free_desired(&rep);

        /* in flight: no second restore, no snapshot, no delete of a */
        assert_int_equal(store_snap_restore(f->s, f->acc, b.id, NULL, &r), -EBUSY);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "c", 0, 0, NULL, NOW, &q), -EBUSY);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, &q), -EBUSY);
        assert_int_equal(get_snap(f, a.id).state, SNAP_READY);
        /* ... but b may go */
        assert_int_equal(store_snap_delete(f->s, f->acc, b.id, &q), 0);

        /* carried out: obs_restore_done follows the report */
        struct dom_observed d = { .vm_id = v.id, .state = POWER_STOPPED, .restore_done = 1,
                                  .n_snaps = 1 };
        d.snaps[0] = a.id;
        observe(f, host, &d, 1, 1);
        r = get_vm(f, f->acc, v.id);
        assert_int_equal(r.obs_restore_done, 1);
        assert_int_equal(store_snap_restore(f->s, f->acc, a.id, NULL, &r), 0);
        assert_int_equal(r.restore_seq, 2);
        d.restore_done = 2;
        observe(f, host, &d, 1, 1);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, &q), 0); /* done: may go */
        assert_int_equal(store_snap_restore(f->s, f->acc, a.id, NULL, &r), -EBUSY); /* deleting */

        /* a rebuild in flight: no snapshot, no restore */
        struct snapshot c = make_snap(f, v.id, "c", 0, 0);
        report_snaps(f, host, v.id, &c.id, 1, 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBUILD, NULL, &r), 0);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "d", 0, 0, NULL, NOW, &q), -EBUSY);
        assert_int_equal(store_snap_restore(f->s, f->acc, c.id, NULL, &r), -EBUSY);
        assert_pending_exact(f, v.id);
}

/* Idempotency keys: a retry of a create or a restore is a replay
 * (-EALREADY), with no second effect; the key names the resource. */
static void test_snap_idempotency(void **state)
{
        struct fx *f = *state;
        struct idem i = { .account_id = f->acc, .key = "snap-1" };
        struct idem j = { .account_id = f->acc, .key = "restore-1" };
        struct idem_rec rec;
        struct snapshot p, q;
        struct vm v, r;
        memset(i.hash, 3, sizeof(i.hash));
        memset(j.hash, 4, sizeof(j.hash));
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);

        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "a", 0, 0, &i, NOW, &p), 0);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "a", 0, 0, &i, NOW, &q), -EALREADY);
        assert_int_equal(snap_rows(f, v.id), 1);
        assert_int_equal(store_idem_get(f->s, f->acc, "snap-1", NOW, &rec), 0);
        assert_int_equal(rec.status, 202);
        assert_int_equal(rec.resource_id, p.id);
        free(rec.body);
        /* a refused create does not keep its key */
        struct idem k = { .account_id = f->acc, .key = "snap-2" };
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "b", 0, 0, &k, NOW, &q), -EBUSY);
        assert_int_equal(store_idem_get(f->s, f->acc, "snap-2", NOW, &rec), -ENOENT);

        report_snaps(f, host, v.id, &p.id, 1, 0);
        assert_int_equal(store_snap_restore(f->s, f->acc, p.id, &j, &r), 0);
        assert_int_equal(store_snap_restore(f->s, f->acc, p.id, &j, &r), -EALREADY);
        assert_int_equal(get_vm(f, f->acc, v.id).restore_seq, 1);
        assert_int_equal(store_idem_get(f->s, f->acc, "restore-1", util_now_ms(), &rec), 0);
        assert_int_equal(rec.status, 202);
        assert_int_equal(rec.resource_id, v.id);
        free(rec.body);
}

/* The desired state: each domain its creating and ready snapshots (id
 * order, online flag), from one query for the host. */
static void test_snap_desired(void **state)
{
        struct fx *f = *state;
        struct msg_sync_reply rep;
        struct vm a, b, c, x;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "b", NULL, 1, 512, &b), 0);
        assert_int_equal(create_vm(f, f->acc, "c", NULL, 1, 512, &c), 0);
        uint64_t other = hello(f, "node-2", "ams2", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "x", "ams2", 1, 512, &x), 0);
        assert_int_equal(x.host_id, other);

        struct snapshot c1 = make_snap(f, c.id, "c1", 1, 0);
        report_snaps(f, host, c.id, &c1.id, 1, 0);
        struct snapshot a1 = make_snap(f, a.id, "a1", 0, 0);
        report_snaps(f, host, a.id, &a1.id, 1, 0);
        struct snapshot x1 = make_snap(f, x.id, "x1", 0, 0);
        struct snapshot c2 = make_snap(f, c.id, "c2", 0, 0);
        const uint64_t cs[] = { c1.id, c2.id };
        report_snaps(f, host, c.id, cs, 2, 0);
        struct snapshot c3 = make_snap(f, c.id, "c3", 1, 0); /* creating */
        struct snapshot a2 = make_snap(f, a.id, "a2", 0, 0);
        assert_int_equal(store_snap_delete(f->s, f->acc, a2.id, NULL), 0); /* deleting */

        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_domains, 3);
        const struct dom_desired *d = rep.domains;
        assert_int_equal(d[0].vm_id, a.id);
        assert_int_equal(d[0].n_snaps, 1);
        assert_int_equal(d[0].snaps[0].id, a1.id);
        assert_int_equal(d[0].snaps[0].online, 0);
        assert_int_equal(d[1].vm_id, b.id);
        assert_int_equal(d[1].n_snaps, 0);
        assert_int_equal(d[2].vm_id, c.id);
        assert_int_equal(d[2].n_snaps, 3);
        assert_int_equal(d[2].snaps[0].id, c1.id);
        assert_int_equal(d[2].snaps[0].online, 1);
        assert_int_equal(d[2].snaps[1].id, c2.id);
        assert_int_equal(d[2].snaps[1].online, 0);
        assert_int_equal(d[2].snaps[2].id, c3.id);
        assert_int_equal(d[2].snaps[2].online, 1);
        for (size_t i = 0; i < rep.n_domains; i++) {
                assert_int_equal(d[i].restore_seq, 0);
                assert_int_equal(d[i].restore_snap, 0);
        }
        free_desired(&rep);

        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, other, &rep), 0);
        assert_int_equal(rep.n_domains, 1);
        assert_int_equal(rep.domains[0].n_snaps, 1);
        assert_int_equal(rep.domains[0].snaps[0].id, x1.id);
        free_desired(&rep);
        /* it survives the codec (at most TMSG_MAX_SNAPS per domain) */
        assert_true(STORE_SNAPS_PER_VM + 1 <= TMSG_MAX_SNAPS);
}

/* The agent's reports: a failed snapshot leaves no record (an event says
 * why, and the host no longer wants it); an absent guest changes no
 * snapshot but the failed one; a report without pending work reads no
 * snapshot row at all. */
static void test_snap_observe(void **state)
{
        struct fx *f = *state;
        struct snapshot a, b, q;
        struct vm v;
        uint64_t ev0 = 0, ev1 = 0;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        a = make_snap(f, v.id, "a", 0, 0);

        /* failed: gone, an event, a new generation (no longer wanted) */
        assert_int_equal(store_event_count(f->s, "snapshot.failed", &ev0), 0);
        uint64_t gen = generation(f, host);
        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING, .snap_failed = a.id };
        snprintf(d.error, sizeof(d.error), "cannot snapshot: no space left on device");
        observe(f, host, &d, 1, 1);
        assert_int_equal(store_snap_get(f->s, f->acc, a.id, &q), -ENOENT);
        assert_int_equal(snap_rows(f, v.id), 0);
        assert_int_equal(store_event_count(f->s, "snapshot.failed", &ev1), 0);
        assert_int_equal(ev1, ev0 + 1);
        assert_int_equal(int_in_file(f, "SELECT resource_id FROM events WHERE kind ="
                                        " 'snapshot.failed' AND id = (SELECT MAX(id) FROM"
                                        " events WHERE kind = 'snapshot.failed') AND ?1 > 0",
                                     1),
                         (int64_t)a.id);
        assert_true(generation(f, host) > gen);
        assert_pending_exact(f, v.id);
        /* the same report again: nothing more */
        observe(f, host, &d, 1, 1);
        assert_int_equal(store_event_count(f->s, "snapshot.failed", &ev1), 0);
        assert_int_equal(ev1, ev0 + 1);

        /* absent (POWER_UNKNOWN): neither made ready nor dropped */
        a = make_snap(f, v.id, "a", 0, 0);
        report_snaps(f, host, v.id, &a.id, 1, 0);
        b = make_snap(f, v.id, "b", 0, 0);
        assert_int_equal(store_snap_delete(f->s, f->acc, a.id, NULL), 0);
        struct dom_observed gone = { .vm_id = v.id, .state = POWER_UNKNOWN, .n_snaps = 1 };
        gone.snaps[0] = b.id;
        observe(f, host, &gone, 1, 1);
        assert_int_equal(get_snap(f, a.id).state, SNAP_DELETING);
        assert_int_equal(get_snap(f, b.id).state, SNAP_CREATING);
        observe(f, host, NULL, 0, 0); /* a full report without it */
        assert_int_equal(get_snap(f, a.id).state, SNAP_DELETING);
        assert_int_equal(get_snap(f, b.id).state, SNAP_CREATING);
        /* absent but failed: that one goes, the rest stays */
        gone.n_snaps = 0;
        gone.snap_failed = b.id;
        observe(f, host, &gone, 1, 1);
        assert_int_equal(store_snap_get(f->s, f->acc, b.id, &q), -ENOENT);
        assert_int_equal(get_snap(f, a.id).state, SNAP_DELETING);
        assert_pending_exact(f, v.id);
        /* a failure report for a ready snapshot changes nothing */
        report_snaps(f, host, v.id, NULL, 0, 0);
        b = make_snap(f, v.id, "b", 0, 0);
        report_snaps(f, host, v.id, &b.id, 1, 0);
        report_snaps(f, host, v.id, &b.id, 1, b.id);
        assert_int_equal(get_snap(f, b.id).state, SNAP_READY);
        assert_pending_exact(f, v.id);

        /* No pending work (snap_pending 0): the report reads no snapshot.
         * A creating row slipped in behind the store's back, with
         * snap_pending left at 0, stays creating though reported. */
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "INSERT INTO snapshots (id, account_id, vm_id, name, state, created_at, vcpus,"
                 " ram_mb, disk_gb, image) VALUES (%llu, %llu, %llu, 'sneaky', 'creating', 1, 1,"
                 " 1, 1, 'x')",
                 (unsigned long long)(b.id + 50), (unsigned long long)f->acc,
                 (unsigned long long)v.id);
        exec_in_file(f, sql);
        const uint64_t two[] = { b.id, b.id + 50 };
        report_snaps(f, host, v.id, two, 2, 0);
        assert_int_equal(get_snap(f, b.id + 50).state, SNAP_CREATING);
        /* with work pending (any store call recounts), it is read */
        assert_int_equal(store_snap_delete(f->s, f->acc, b.id, NULL), 0);
        assert_int_equal(int_in_file(f, "SELECT snap_pending FROM vms WHERE id = ?1", v.id), 2);
        report_snaps(f, host, v.id, two, 2, 0);
        assert_int_equal(get_snap(f, b.id + 50).state, SNAP_READY);
        assert_pending_exact(f, v.id);
}

/* A rebuild wipes the disk: every snapshot is deleting, in the same
 * transaction. A deleted vm takes its snapshot rows with it, and its row
 * can still be purged. A resize keeps them. */
static void test_snap_rebuild_and_vm_delete(void **state)
{
        struct fx *f = *state;
        struct msg_sync_reply rep;
        struct snapshot a, b, q;
        struct vm v, r;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        a = make_snap(f, v.id, "a", 0, 0);
        report_snaps(f, host, v.id, &a.id, 1, 0);
        b = make_snap(f, v.id, "b", 1, 0);

        struct vm_resize rq = { .account_id = f->acc, .vm_id = v.id, .size = "bigger",
                                .vcpus = 2, .ram_mb = 1024, .disk_gb = 20 };
        assert_int_equal(store_vm_resize(f->s, &rq, &r), 0);
        assert_int_equal(get_snap(f, a.id).state, SNAP_READY);

        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBUILD, NULL, &r), 0);
        assert_int_equal(get_snap(f, a.id).state, SNAP_DELETING);
        assert_int_equal(get_snap(f, b.id).state, SNAP_DELETING);
        assert_pending_exact(f, v.id);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.domains[0].n_snaps, 0);
        free_desired(&rep);

        /* the rebuild done, the host has none left: rows gone */
        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING, .rebuild_done = 1 };
        observe(f, host, &d, 1, 1);
        assert_int_equal(snap_rows(f, v.id), 0);
        assert_pending_exact(f, v.id);

        a = make_snap(f, v.id, "a", 0, 0);
        d.n_snaps = 1;
        d.snaps[0] = a.id;
        observe(f, host, &d, 1, 1);
        b = make_snap(f, v.id, "b", 0, 0);
        uint64_t host_id = 0;
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &host_id), 0);
        assert_int_equal(snap_rows(f, v.id), 0);
        assert_int_equal(store_snap_get(f->s, f->acc, a.id, &q), -ENOENT);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "c", 0, 0, NULL, NOW, &q), -ENOENT);
        observe(f, host, NULL, 0, 0); /* gone from the host: purged */
        assert_int_equal(rows_in_file(f, v.id), 0);
}

/* The schema version a fresh database gets: one per migration. */
#define SCHEMA_LATEST 15

/* What the migrations after 12 made, undone: a database of schema 12
 * (the Tilaa API, 15, billing, 14, then networks, 13). */
#define SCHEMA_13_UNDO                                                                     \
        "DROP TABLE api_users; DROP TABLE metadata; DROP INDEX vms_cancel;"                \
        " ALTER TABLE vms DROP COLUMN dns_name; ALTER TABLE vms DROP COLUMN admin_password;" \
        " ALTER TABLE vms DROP COLUMN cancel_at; ALTER TABLE sites DROP COLUMN tz;"         \
        " DROP INDEX images_num; ALTER TABLE images DROP COLUMN num;"                      \
        " ALTER TABLE ssh_keys DROP COLUMN user_id; ALTER TABLE ssh_keys DROP COLUMN"       \
        " modified_at;"                                                                    \
        " DROP TABLE invoice_lines; DROP TABLE credit_ops; DROP TABLE prices;"             \
        " ALTER TABLE accounts DROP COLUMN credit_cents;"                                  \
        " DROP TABLE billable;"                                                            \
        " DELETE FROM meta WHERE key = 'billing_day';"                                     \
        " DROP TABLE nics; DROP TABLE networks; DROP TABLE ip_pools;"                      \
        " DELETE FROM meta WHERE key = 'next_vni'; PRAGMA user_version = 12;"

/* A database made before snapshots (schema 10) gains them (11), guests
 * made from snapshots (12) and networks (13) at open, its rows intact. */
static void test_snap_migration(void **state)
{
        SQLITE_ONLY("it undoes migrations with SQLite schema surgery (sqlite_master, user_version)");
        struct fx *f = *state;
        struct snapshot p;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "old", NULL, 1, 512, &v), 0);
        store_free(f->s);
        f->s = NULL;
        exec_in_file(f, SCHEMA_13_UNDO);
        exec_in_file(f, "DROP INDEX snapshots_vm; DROP INDEX snapshots_account;"
                        " DROP TABLE snapshots;"
                        " ALTER TABLE vms DROP COLUMN restore_seq;"
                        " ALTER TABLE vms DROP COLUMN restore_snap;"
                        " ALTER TABLE vms DROP COLUMN obs_restore_done;"
                        " ALTER TABLE vms DROP COLUMN snap_pending;"
                        " ALTER TABLE vms DROP COLUMN source_vm;"
                        " ALTER TABLE vms DROP COLUMN source_snap;"
                        " PRAGMA user_version = 10;");
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM sqlite_master WHERE name ="
                                        " 'snapshots' AND ?1",
                                     1),
                         0);
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(int_in_file(f, "SELECT ?1 * 0 + user_version FROM pragma_user_version",
                                     1),
                         SCHEMA_LATEST);
        struct vm w = get_vm(f, f->acc, v.id);
        assert_string_equal(w.name, "old");
        assert_int_equal(w.restore_seq, 0);
        assert_int_equal(w.obs_restore_done, 0);
        assert_int_equal(w.snapshotting, 0);
        assert_int_equal(store_snap_create(f->s, f->acc, v.id, "first", 0, 0, NULL, NOW, &p), 0);
        report_snaps(f, host, v.id, &p.id, 1, 0);
        assert_int_equal(get_snap(f, p.id).state, SNAP_READY);
        assert_pending_exact(f, v.id);
}

/* restoring and snapshotting (offline only), between the others. */
/* A VPS made from a snapshot: placed on the snapshot's host (whatever the
 * spread would say), its disk to be copied from it (in the desired state
 * until a rebuild); the snapshot cannot go while the copy is being made. */
static void test_vm_from_snapshot(void **state)
{
        struct fx *f = *state;
        struct vm src, other, made, tmp;
        struct msg_sync_reply rep;
        char why[256] = "";
        uint64_t h1 = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "src", NULL, 1, 512, &src), 0);
        assert_int_equal(src.host_id, h1);
        uint64_t h2 = hello(f, "node-2", "ams1", 8, 65536); /* emptier: spread picks it */
        struct snapshot p = make_snap(f, src.id, "golden", 0, 0);
        struct vm_new req = { .account_id = f->acc, .name = "copy", .size = "s-test",
                              .image = "debian-12", .vcpus = 1, .ram_mb = 512, .disk_gb = 10,
                              .from_snap = p.id, .why = why, .why_len = sizeof(why) };
        /* not ready yet: as if there were none */
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), -ENOENT);
        report_snaps(f, h1, src.id, &p.id, 1, 0);
        /* another account's snapshot: none */
        req.account_id = f->other;
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), -ENOENT);
        req.account_id = f->acc;
        /* a smaller disk, or another image: refused */
        req.disk_gb = 5;
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), -EINVAL);
        req.disk_gb = 10;
        req.image = "ubuntu-24.04";
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), -EINVAL);
        req.image = "debian-12";
        assert_int_equal(create_vm(f, f->acc, "plain", NULL, 1, 512, &other), 0);
        assert_int_equal(other.host_id, h2);
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), 0);
        assert_int_equal(made.host_id, h1);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, h1, &rep), 0);
        assert_int_equal(rep.n_domains, 2);
        assert_int_equal(rep.domains[1].vm_id, made.id);
        assert_int_equal(rep.domains[1].source_vm, src.id);
        assert_int_equal(rep.domains[1].source_snap, p.id);
        assert_int_equal(rep.domains[0].source_snap, 0);
        free_desired(&rep);
        /* the snapshot stays while the copy is being made ... */
        assert_int_equal(store_snap_delete(f->s, f->acc, p.id, NULL), -EBUSY);
        /* ... and may go once the new guest exists */
        struct dom_observed d = { .vm_id = made.id, .state = POWER_RUNNING };
        observe(f, h1, &d, 1, 1);
        assert_int_equal(store_snap_delete(f->s, f->acc, p.id, NULL), 0);
        /* a rebuild makes it from the image, not the snapshot */
        assert_int_equal(store_vm_action(f->s, f->acc, made.id, VM_ACT_REBUILD, NULL, &tmp), 0);
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, h1, &rep), 0);
        assert_int_equal(rep.domains[1].source_vm, 0);
        assert_int_equal(rep.domains[1].source_snap, 0);
        free_desired(&rep);
        /* no room on the snapshot's host: said so, though another host has room */
        struct snapshot q = make_snap(f, src.id, "big", 0, 0);
        report_snaps(f, h1, src.id, &q.id, 1, 0);
        req.from_snap = q.id;
        req.name = "huge";
        req.ram_mb = 20000;
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &made), -ENOSPC);
        assert_non_null(strstr(why, "the snapshot's host"));
}

static void test_vps_status_snapshots(void **state)
{
        struct fx *f = *state;
        const int64_t t = NOW + 1000;
        struct snapshot p;
        struct vm v;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "web", NULL, 1, 512, &v), 0);
        struct dom_observed d = { .vm_id = v.id, .state = POWER_RUNNING };
        observe(f, host, &d, 1, 0);

        p = make_snap(f, v.id, "live", 1, 0); /* online: it keeps running */
        v = get_vm(f, f->acc, v.id);
        assert_int_equal(v.snapshotting, 0);
        assert_string_equal(api_vps_status(&v, t, 30000), "running");
        d.n_snaps = 1;
        d.snaps[0] = p.id;
        observe(f, host, &d, 1, 0);

        struct snapshot o = make_snap(f, v.id, "cold", 0, 0);
        v = get_vm(f, f->acc, v.id);
        assert_int_equal(v.snapshotting, 1);
        assert_string_equal(api_vps_status(&v, t, 30000), "snapshotting");
        assert_string_equal(api_vps_status(&v, t + 30001, 30000), "unknown");
        d.n_snaps = 2;
        d.snaps[1] = o.id;
        observe(f, host, &d, 1, 0);
        v = get_vm(f, f->acc, v.id);
        assert_int_equal(v.snapshotting, 0);
        assert_string_equal(api_vps_status(&v, t, 30000), "running");

        assert_int_equal(store_snap_restore(f->s, f->acc, p.id, NULL, &v), 0);
        assert_string_equal(api_vps_status(&v, t, 30000), "restoring");
        v = get_vm(f, f->acc, v.id);
        assert_string_equal(api_vps_status(&v, t, 30000), "restoring");
        d.restore_done = 1;
        observe(f, host, &d, 1, 0);
        v = get_vm(f, f->acc, v.id);
        assert_string_equal(api_vps_status(&v, t, 30000), "running");

        /* the order among the others */
        struct vm x = v;
        x.restore_seq = 5;
        x.obs_restore_done = 4;
        x.snapshotting = 1;
        assert_string_equal(api_vps_status(&x, t, 30000), "restoring");
        x.rebuild_seq = x.obs_rebuild_done + 1;
        assert_string_equal(api_vps_status(&x, t, 30000), "rebuilding");
        x.rebuild_seq = x.obs_rebuild_done;
        x.resize_seq = x.obs_resize_done + 1;
        assert_string_equal(api_vps_status(&x, t, 30000), "resizing");
        x.resize_seq = x.obs_resize_done;
        x.obs_restore_done = 5;
        assert_string_equal(api_vps_status(&x, t, 30000), "snapshotting");
        x.obs_state = -1; /* not on its host (yet): neither */
        x.restore_seq = 6;
        assert_string_equal(api_vps_status(&x, t, 30000), "provisioning");
}

/* ---- private networks, NICs, public address pools ---- */

static uint64_t hello_ul(struct fx *f, const char *name, const char *site, const char *underlay)
{
        struct msg_hello h = { .vcpus = 64, .ram_mb = 262144, .disk_gb = 10000 };
        uint64_t id = 0;
        int rebooted;
        snprintf(h.host_id, sizeof(h.host_id), "%s", name);
        snprintf(h.site, sizeof(h.site), "%s", site);
        snprintf(h.underlay_ip, sizeof(h.underlay_ip), "%s", underlay);
        snprintf(h.boot_id, sizeof(h.boot_id), "boot-1");
        snprintf(h.agent_version, sizeof(h.agent_version), "0.1.0");
        snprintf(h.hv_type, sizeof(h.hv_type), "test");
        assert_int_equal(store_host_hello(f->s, &h, NOW, &id, &rebooted), 0);
        return id;
}

static struct network make_net(struct fx *f, uint64_t account, const char *name,
                               const char *cidr)
{
        struct network w;
        assert_int_equal(store_net_create(f->s, account, name, cidr, NULL, NOW, &w), 0);
        return w;
}

/* A VPS in site, attached at creation to net_id (0: none). */
static int create_vm_net(struct fx *f, uint64_t account, const char *name, const char *site,
                         uint64_t net_id, struct vm *ret)
{
        const struct vm_new req = {
                .account_id = account, .name = name, .size = "s-test", .image = "debian-12",
                .site = site, .vcpus = 1, .ram_mb = 64, .disk_gb = 10, .network_id = net_id,
        };
        return store_vm_create(f->s, &req, NOW, LIVE_AFTER, ret);
}

static struct vm vm_net(struct fx *f, const char *name, const char *site, uint64_t net_id)
{
        struct vm v;
        assert_int_equal(create_vm_net(f, f->acc, name, site, net_id, &v), 0);
        return v;
}

static void pool(struct fx *f, const char *site, const char *v4, const char *gw4, const char *v6,
                 const char *gw6)
{
        struct ip_pool p = { 0 }, got;
        snprintf(p.site, sizeof(p.site), "%s", site);
        snprintf(p.ipv4, sizeof(p.ipv4), "%s", v4);
        snprintf(p.gateway4, sizeof(p.gateway4), "%s", gw4);
        snprintf(p.ipv6, sizeof(p.ipv6), "%s", v6 ? v6 : "");
        snprintf(p.gateway6, sizeof(p.gateway6), "%s", gw6 ? gw6 : "");
        assert_int_equal(store_pool_add(f->s, &p, &got), 0);
        assert_string_equal(got.site, site);
}

/* The vm's NIC at position i (asserts it has n NICs). */
static struct nic nic_of(struct fx *f, uint64_t vm_id, size_t n, size_t i)
{
        struct nic *ns = NULL, c;
        size_t got = 0;
        assert_int_equal(store_vm_nics(f->s, vm_id, &ns, &got), 0);
        if (got != n)
                fail_msg("vm %llu has %zu NICs, want %zu", (unsigned long long)vm_id, got, n);
        c = ns[i];
        free(ns);
        return c;
}

static size_t nic_count(struct fx *f, uint64_t vm_id)
{
        struct nic *ns = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_nics(f->s, vm_id, &ns, &n), 0);
        free(ns);
        return n;
}

/* An SQL statement run on the file behind the store's back: its result. */
static int sql_rc(struct fx *f, const char *sql)
{
        if (f->db[0]) {
                int st = psql(f->db, sql, NULL, 0);
                return st == 0 ? SQLITE_OK : st == 3 ? SQLITE_CONSTRAINT : SQLITE_ERROR;
        }
        sqlite3 *db;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
        sqlite3_close(db);
        return rc;
}

static uint64_t event_count(struct fx *f, const char *kind)
{
        uint64_t n = 0;
        assert_int_equal(store_event_count(f->s, kind, &n), 0);
        return n;
}

static void test_net_create_list_delete(void **state)
{
        struct fx *f = *state;
        struct network w, x, t, g, *list = NULL;
        uint64_t *vms = NULL;
        size_t n = 9, n_vms = 9;

        assert_int_equal(store_net_create(f->s, f->acc, "back", "10.0.0.0/24", NULL, NOW, &w), 0);
        assert_true(w.id > 0);
        assert_int_equal(w.account_id, f->acc);
        assert_string_equal(w.name, "back");
        assert_string_equal(w.cidr, "10.0.0.0/24");
        assert_int_equal(w.vni, STORE_VNI_MIN);
        assert_int_equal(w.created_at, NOW);
        x = make_net(f, f->acc, "front", "172.16.0.0/16");
        assert_int_equal(x.vni, STORE_VNI_MIN + 1);
        /* another account may use the same prefix: its own segment */
        t = make_net(f, f->other, "theirs", "10.0.0.0/24");
        assert_true(t.vni != w.vni && t.vni != x.vni);

        assert_int_equal(store_net_list(f->s, f->acc, &list, &n, &vms, &n_vms), 0);
        assert_int_equal(n, 2);
        assert_int_equal(n_vms, 0);
        assert_int_equal(list[0].id, w.id);
        assert_string_equal(list[0].cidr, "10.0.0.0/24");
        assert_int_equal(list[1].id, x.id);
        assert_string_equal(list[1].name, "front");
        assert_int_equal(list[1].n_vms, 0);
        free(list);
        free(vms);

        assert_int_equal(store_net_get(f->s, f->acc, x.id, &g, NULL), 0);
        assert_int_equal(g.vni, x.vni);
        assert_string_equal(g.name, "front");
        assert_int_equal(store_net_get(f->s, f->other, x.id, &g, NULL), -ENOENT);
        assert_int_equal(store_net_get(f->s, f->acc, t.id, &g, NULL), -ENOENT);
        assert_int_equal(store_net_get(f->s, f->acc, 999, &g, NULL), -ENOENT);

        assert_int_equal(store_net_delete(f->s, f->other, w.id), -ENOENT);
        assert_int_equal(store_net_delete(f->s, f->acc, w.id), 0);
        assert_int_equal(store_net_get(f->s, f->acc, w.id, &g, NULL), -ENOENT);
        assert_int_equal(store_net_delete(f->s, f->acc, w.id), -ENOENT);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM networks WHERE id = ?1", w.id), 0);
        assert_int_equal(store_net_list(f->s, f->acc, &list, &n, &vms, &n_vms), 0);
        assert_int_equal(n, 1);
        assert_int_equal(list[0].id, x.id);
        free(list);
        free(vms);
        assert_int_equal(event_count(f, "network.created"), 3);
        assert_int_equal(event_count(f, "network.deleted"), 1);
}

/* At most STORE_NETS_PER_ACCOUNT each; no overlap within an account. */
static void test_net_limits_overlap(void **state)
{
        struct fx *f = *state;
        struct network w, first[5];
        char cidr[32];
        for (int i = 0; i < 5; i++) {
                snprintf(cidr, sizeof(cidr), "10.%d.0.0/24", i);
                first[i] = make_net(f, f->acc, "n", cidr);
        }
        static const char *const overlapping[] = { "10.3.0.0/16", "10.3.0.128/29",
                                                   "10.3.0.0/24" };
        for (size_t i = 0; i < 3; i++) {
                memset(&w, 0, sizeof(w));
                assert_int_equal(store_net_create(f->s, f->acc, "x", overlapping[i], NULL, NOW, &w),
                                 -EADDRINUSE);
                assert_int_equal(w.id, first[3].id); /* names the one it overlaps */
                assert_string_equal(w.cidr, "10.3.0.0/24");
        }
        make_net(f, f->acc, "next-door", "10.3.1.0/24");
        make_net(f, f->other, "theirs", "10.3.0.0/16");
        for (int i = 6; i < STORE_NETS_PER_ACCOUNT; i++) {
                snprintf(cidr, sizeof(cidr), "10.%d.0.0/24", i);
                make_net(f, f->acc, "n", cidr);
        }
        assert_int_equal(store_net_create(f->s, f->acc, "one-more", "192.168.0.0/24", NULL, NOW,
                                          &w),
                         -EDQUOT);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM networks WHERE account_id = ?1",
                                     f->acc),
                         STORE_NETS_PER_ACCOUNT);
        make_net(f, f->other, "theirs-2", "192.168.0.0/24"); /* per account */
        assert_int_equal(store_net_delete(f->s, f->acc, first[0].id), 0);
        make_net(f, f->acc, "one-more", "192.168.0.0/24");
}

/* VNIs: unique, in range, handed out in turn (a deleted network's comes
 * back only after the range wraps, past those in use). */
static void test_net_vni(void **state)
{
        struct fx *f = *state;
        struct network a = make_net(f, f->acc, "a", "10.0.0.0/24");
        struct network b = make_net(f, f->acc, "b", "10.1.0.0/24");
        assert_int_equal(a.vni, STORE_VNI_MIN);
        assert_int_equal(b.vni, STORE_VNI_MIN + 1);
        assert_int_equal(store_net_delete(f->s, f->acc, a.id), 0);
        struct network c = make_net(f, f->acc, "c", "10.2.0.0/24");
        assert_int_equal(c.vni, STORE_VNI_MIN + 2); /* not a's again */
        exec_in_file(f, "UPDATE meta SET value = 16777215 WHERE key = 'next_vni'");
        struct network d = make_net(f, f->other, "d", "10.3.0.0/24");
        assert_int_equal(d.vni, STORE_VNI_MAX);
        struct network e = make_net(f, f->other, "e", "10.4.0.0/24");
        assert_int_equal(e.vni, STORE_VNI_MIN); /* wrapped: a's is free */
        struct network g = make_net(f, f->other, "g", "10.5.0.0/24");
        assert_int_equal(g.vni, STORE_VNI_MIN + 3); /* b's and c's are taken */
        /* the schema keeps them unique and in range */
        char sql[128];
        snprintf(sql, sizeof(sql), "UPDATE networks SET vni = %u WHERE id = %llu", b.vni,
                 (unsigned long long)c.id);
        assert_int_equal(sql_rc(f, sql), SQLITE_CONSTRAINT);
        snprintf(sql, sizeof(sql), "UPDATE networks SET vni = 4095 WHERE id = %llu",
                 (unsigned long long)c.id);
        assert_int_equal(sql_rc(f, sql), SQLITE_CONSTRAINT);
}

/* Private addresses: the first free past .0 and .1, below the broadcast;
 * freed by a delete, reused by the next attach; a full network refuses. */
static void test_net_addresses(void **state)
{
        struct fx *f = *state;
        struct vm v[7], tmp;
        hello(f, "node-1", "ams1", 64, 262144);
        struct network w = make_net(f, f->acc, "small", "10.9.0.0/29");
        for (int i = 0; i < 7; i++) {
                char name[8];
                snprintf(name, sizeof(name), "v%d", i);
                assert_int_equal(create_vm(f, f->acc, name, NULL, 1, 64, &v[i]), 0);
                assert_int_equal(nic_count(f, v[i].id), 0); /* no pool: no public NIC */
        }
        static const char *const want[] = { "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5",
                                            "10.9.0.6" };
        for (int i = 0; i < 5; i++) {
                assert_int_equal(store_net_attach(f->s, f->acc, w.id, v[i].id, NULL, &tmp), 0);
                struct nic c = nic_of(f, v[i].id, 1, 0);
                assert_string_equal(c.ipv4, want[i]);
                assert_string_equal(c.ipv6, "");
                assert_int_equal(c.network_id, w.id);
                assert_int_equal(c.position, 0);
        }
        /* .0, .1 and .7 are never handed out: full */
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, v[5].id, NULL, &tmp), -ERANGE);
        assert_int_equal(nic_count(f, v[5].id), 0);
        assert_int_equal(event_count(f, "vps.attached"), 5);
        /* a delete frees its address at once (the row goes before the purge) */
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, f->acc, v[1].id, &host), 0);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM nics WHERE vm_id = ?1", v[1].id), 0);
        assert_int_equal(rows_in_file(f, v[1].id), 1);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, v[5].id, NULL, &tmp), 0);
        assert_string_equal(nic_of(f, v[5].id, 1, 0).ipv4, "10.9.0.3");
        /* full again: a VPS made on it is not made at all */
        struct host h;
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        uint32_t guests = h.guests;
        assert_int_equal(create_vm_net(f, f->acc, "late", NULL, w.id, &tmp), -ERANGE);
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, guests);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM vms WHERE name = 'late' AND ?1",
                                     1),
                         0);
        /* another network of the account counts from its own start */
        struct network x = make_net(f, f->acc, "big", "192.168.4.0/22");
        assert_int_equal(store_net_attach(f->s, f->acc, x.id, v[6].id, NULL, &tmp), 0);
        assert_string_equal(nic_of(f, v[6].id, 1, 0).ipv4, "192.168.4.2");
}

/* MACs: 52:54:00 and three random bytes, each once (the schema refuses a
 * second). */
static void test_nic_macs(void **state)
{
        struct fx *f = *state;
        enum { N = 80 };
        char macs[N][TMSG_MAC];
        hello(f, "node-1", "ams1", 64, 262144);
        pool(f, "ams1", "198.51.100.0/24", "198.51.100.1", NULL, NULL);
        struct network w = make_net(f, f->acc, "lan", "10.0.0.0/24");
        for (int i = 0; i < N / 2; i++) {
                char name[8];
                snprintf(name, sizeof(name), "m%d", i);
                struct vm v = vm_net(f, name, NULL, w.id);
                struct nic pub = nic_of(f, v.id, 2, 0), priv = nic_of(f, v.id, 2, 1);
                char want[TMSG_IP];
                snprintf(want, sizeof(want), "198.51.100.%d", i + 2);
                assert_string_equal(pub.ipv4, want);
                snprintf(want, sizeof(want), "10.0.0.%d", i + 2);
                assert_string_equal(priv.ipv4, want);
                snprintf(macs[2 * i], TMSG_MAC, "%s", pub.mac);
                snprintf(macs[2 * i + 1], TMSG_MAC, "%s", priv.mac);
        }
        for (int i = 0; i < N; i++) {
                assert_int_equal(strlen(macs[i]), 17);
                assert_memory_equal(macs[i], "52:54:00:", 9);
                for (int k = 9; k < 17; k++)
                        assert_true((k % 3 == 2) ? macs[i][k] == ':'
                                                 : strchr("0123456789abcdef", macs[i][k]) != NULL);
                for (int j = 0; j < i; j++)
                        if (strcmp(macs[i], macs[j]) == 0)
                                fail_msg("MAC %s twice", macs[i]);
        }
        assert_int_equal(sql_rc(f, "UPDATE nics SET mac = (SELECT mac FROM nics ORDER BY id"
                                   " LIMIT 1) WHERE id = (SELECT MAX(id) FROM nics)"),
                         SQLITE_CONSTRAINT);
}

/* A site's pool: a public NIC first for every VPS made there (none where
 * there is no pool), the first free addresses past the network address
 * and the gateway, IPv6 likewise; a used-up pool makes no VPS. */
static void test_pool_public(void **state)
{
        struct fx *f = *state;
        struct ip_pool p = { .site = "nowhere", .ipv4 = "192.0.2.0/24",
                             .gateway4 = "192.0.2.1" }, got, *list = NULL;
        struct vm v[6], tmp;
        struct msg_sync_reply rep;
        char why[256] = "";
        size_t n = 0;
        uint64_t h1 = hello(f, "node-1", "ams1", 64, 262144);
        hello(f, "node-2", "rtm1", 64, 262144);
        hello(f, "node-3", "fra1", 64, 262144);

        assert_int_equal(store_pool_add(f->s, &p, &got), -ENOENT); /* no such site */
        pool(f, "ams1", "203.0.113.0/29", "203.0.113.1", "2001:db8::/125", "2001:db8::1");
        snprintf(p.site, sizeof(p.site), "ams1");
        assert_int_equal(store_pool_add(f->s, &p, &got), -EEXIST);
        snprintf(p.site, sizeof(p.site), "rtm1");
        snprintf(p.ipv4, sizeof(p.ipv4), "203.0.113.0/28");
        assert_int_equal(store_pool_add(f->s, &p, &got), -EADDRINUSE);
        assert_string_equal(got.site, "ams1");
        snprintf(p.ipv4, sizeof(p.ipv4), "192.0.2.0/24");
        snprintf(p.ipv6, sizeof(p.ipv6), "2001:db8::/64");
        snprintf(p.gateway6, sizeof(p.gateway6), "2001:db8::1");
        assert_int_equal(store_pool_add(f->s, &p, &got), -EADDRINUSE);

        for (int i = 0; i < 5; i++) {
                char name[8], w4[TMSG_IP], w6[TMSG_IP];
                snprintf(name, sizeof(name), "p%d", i);
                v[i] = vm_net(f, name, "ams1", 0);
                struct nic c = nic_of(f, v[i].id, 1, 0);
                snprintf(w4, sizeof(w4), "203.0.113.%d", i + 2);
                snprintf(w6, sizeof(w6), "2001:db8::%d", i + 2);
                assert_string_equal(c.ipv4, w4);
                assert_string_equal(c.ipv6, w6);
                assert_int_equal(c.network_id, 0);
                assert_int_equal(c.position, 0);
                assert_int_equal(v[i].n_networks, 0); /* public: not listed as a network */
        }
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, h1, &rep), 0);
        assert_int_equal(rep.n_domains, 5);
        const struct nic_desired *d = &rep.domains[0].nics[0];
        assert_int_equal(rep.domains[0].n_nics, 1);
        assert_int_equal(d->vni, 0);
        assert_string_equal(d->mac, nic_of(f, v[0].id, 1, 0).mac);
        assert_int_equal(d->n_addrs, 2);
        assert_string_equal(d->addrs[0], "203.0.113.2/29");
        assert_string_equal(d->addrs[1], "2001:db8::2/125");
        assert_string_equal(d->gateway4, "203.0.113.1");
        assert_string_equal(d->gateway6, "2001:db8::1");
        assert_int_equal(rep.n_networks, 0);
        free_desired(&rep);

        /* used up (.7 is the broadcast address): refused, nothing made */
        struct host h;
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        uint32_t guests = h.guests;
        uint64_t created = event_count(f, "vps.created");
        const struct vm_new req = { .account_id = f->acc, .name = "p5", .size = "s-test",
                                    .image = "debian-12", .site = "ams1", .vcpus = 1,
                                    .ram_mb = 64, .disk_gb = 10, .why = why,
                                    .why_len = sizeof(why) };
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &tmp), -EADDRNOTAVAIL);
        assert_non_null(strstr(why, "public IPv4 pool of site ams1 (203.0.113.0/29)"));
        assert_int_equal(store_host_by_name(f->s, "node-1", &h), 0);
        assert_int_equal(h.guests, guests);
        assert_int_equal(event_count(f, "vps.created"), created);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM vms WHERE name = 'p5' AND ?1", 1),
                         0);
        /* another site: no pool, no public NIC */
        v[5] = vm_net(f, "r0", "rtm1", 0);
        assert_int_equal(nic_count(f, v[5].id), 0);

        /* IPv6 used up first: said so */
        pool(f, "fra1", "100.64.0.0/24", "100.64.0.1", "2001:db8:1::/126", "2001:db8:1::1");
        vm_net(f, "f0", "fra1", 0); /* takes 2001:db8:1::2, the only one */
        const struct vm_new req6 = { .account_id = f->acc, .name = "f1", .size = "s-test",
                                     .image = "debian-12", .site = "fra1", .vcpus = 1,
                                     .ram_mb = 64, .disk_gb = 10, .why = why,
                                     .why_len = sizeof(why) };
        assert_int_equal(store_vm_create(f->s, &req6, NOW, LIVE_AFTER, &tmp), -EADDRNOTAVAIL);
        assert_non_null(strstr(why, "public IPv6 pool of site fra1"));

        assert_int_equal(store_pool_list(f->s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].site, "ams1");
        assert_int_equal(list[0].used, 5);
        assert_string_equal(list[0].ipv6, "2001:db8::/125");
        assert_string_equal(list[0].gateway6, "2001:db8::1");
        assert_string_equal(list[1].site, "fra1");
        assert_int_equal(list[1].used, 1);
        free(list);

        /* in use: stays; a delete frees the address for the next VPS */
        assert_int_equal(store_pool_remove(f->s, "ams1"), -EBUSY);
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, f->acc, v[1].id, &host), 0);
        struct vm again = vm_net(f, "again", "ams1", 0);
        assert_string_equal(nic_of(f, again.id, 1, 0).ipv4, "203.0.113.3");
        assert_string_equal(nic_of(f, again.id, 1, 0).ipv6, "2001:db8::3");
        const uint64_t gone[] = { v[0].id, v[2].id, v[3].id, v[4].id, again.id };
        for (size_t i = 0; i < 5; i++)
                assert_int_equal(store_vm_delete(f->s, f->acc, gone[i], &host), 0);
        assert_int_equal(store_pool_remove(f->s, "ams1"), 0);
        assert_int_equal(store_pool_remove(f->s, "ams1"), -ENOENT);
        assert_int_equal(store_pool_list(f->s, &list, &n), 0);
        assert_int_equal(n, 1);
        free(list);
        assert_int_equal(nic_count(f, vm_net(f, "bare", "ams1", 0).id), 0);
        assert_int_equal(event_count(f, "pool.added"), 2);
        assert_int_equal(event_count(f, "pool.removed"), 1);
}

/* Attaching: the account's own VPS to its own network, once each, at most
 * TMSG_MAX_NICS NICs; the VPS lists its networks in attach order. */
static void test_net_attach_rules(void **state)
{
        struct fx *f = *state;
        struct vm v, w, got, *vs = NULL;
        struct network *list = NULL, g;
        uint64_t *ids = NULL;
        size_t n = 0, n_ids = 0;
        hello(f, "node-1", "ams1", 64, 262144);
        pool(f, "ams1", "203.0.113.0/24", "203.0.113.1", NULL, NULL);
        struct network a = make_net(f, f->acc, "a", "10.1.0.0/24");
        struct network b = make_net(f, f->acc, "b", "10.2.0.0/24");
        struct network c = make_net(f, f->acc, "c", "10.3.0.0/24");
        struct network d = make_net(f, f->acc, "d", "10.4.0.0/24");
        struct network x = make_net(f, f->other, "x", "10.1.0.0/24");
        assert_int_equal(create_vm(f, f->acc, "v", NULL, 1, 64, &v), 0);
        assert_int_equal(create_vm(f, f->other, "w", NULL, 1, 64, &w), 0);

        assert_int_equal(store_net_attach(f->s, f->acc, x.id, v.id, NULL, &got), -ENOENT);
        assert_int_equal(store_net_attach(f->s, f->acc, a.id, w.id, NULL, &got), -ENOENT);
        assert_int_equal(store_net_attach(f->s, f->other, a.id, w.id, NULL, &got), -ENOENT);
        assert_int_equal(store_net_attach(f->s, f->acc, 999, v.id, NULL, &got), -ENOENT);
        assert_int_equal(store_net_attach(f->s, f->acc, a.id, 999, NULL, &got), -ENOENT);
        assert_int_equal(nic_count(f, v.id), 1);
        assert_int_equal(nic_count(f, w.id), 1);

        assert_int_equal(store_net_attach(f->s, f->acc, a.id, v.id, NULL, &got), 0);
        assert_int_equal(got.id, v.id);
        assert_int_equal(got.n_networks, 1);
        assert_int_equal(got.networks[0], a.id);
        assert_int_equal(store_net_attach(f->s, f->acc, a.id, v.id, NULL, &got), -EEXIST);
        assert_int_equal(store_net_attach(f->s, f->acc, c.id, v.id, NULL, &got), 0);
        assert_int_equal(store_net_attach(f->s, f->acc, b.id, v.id, NULL, &got), 0);
        /* public + three private: the fourth private one is one too many */
        assert_int_equal(store_net_attach(f->s, f->acc, d.id, v.id, NULL, &got), -EDQUOT);
        assert_int_equal(nic_count(f, v.id), TMSG_MAX_NICS);
        struct vm now = get_vm(f, f->acc, v.id);
        assert_int_equal(now.n_networks, 3);
        assert_int_equal(now.networks[0], a.id); /* attach order, not id order */
        assert_int_equal(now.networks[1], c.id);
        assert_int_equal(now.networks[2], b.id);
        assert_int_equal(nic_of(f, v.id, 4, 0).network_id, 0);
        assert_int_equal(nic_of(f, v.id, 4, 2).network_id, c.id);
        assert_int_equal(nic_of(f, v.id, 4, 3).position, 3);
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(vs[0].n_networks, 3);
        assert_int_equal(vs[0].networks[2], b.id);
        free(vs);
        assert_int_equal(event_count(f, "vps.attached"), 3);

        /* at creation: the account's own network only, in the same transaction */
        struct vm made;
        assert_int_equal(create_vm_net(f, f->acc, "y", NULL, x.id, &made), -ENONET);
        assert_int_equal(create_vm_net(f, f->acc, "y", NULL, 999, &made), -ENONET);
        assert_int_equal(create_vm_net(f, f->acc, "y", NULL, d.id, &made), 0);
        assert_int_equal(made.n_networks, 1);
        assert_int_equal(made.networks[0], d.id);
        assert_int_equal(nic_of(f, made.id, 2, 0).network_id, 0);
        assert_int_equal(nic_of(f, made.id, 2, 1).network_id, d.id);
        assert_string_equal(nic_of(f, made.id, 2, 1).ipv4, "10.4.0.2");
        assert_int_equal(event_count(f, "vps.attached"), 4);

        /* the networks with their VPS */
        assert_int_equal(store_net_get(f->s, f->acc, a.id, &g, &ids), 0);
        assert_int_equal(g.n_vms, 1);
        assert_int_equal(ids[0], v.id);
        free(ids);
        assert_int_equal(store_net_list(f->s, f->acc, &list, &n, &ids, &n_ids), 0);
        assert_int_equal(n, 4);
        assert_int_equal(n_ids, 4);
        for (size_t i = 0; i < n; i++) {
                assert_int_equal(list[i].n_vms, 1);
                assert_int_equal(ids[list[i].first_vm], list[i].id == d.id ? made.id : v.id);
        }
        free(list);
        free(ids);

        /* a network with a VPS on it stays */
        assert_int_equal(store_net_delete(f->s, f->acc, a.id), -EBUSY);
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, f->acc, v.id, &host), 0);
        assert_int_equal(store_net_attach(f->s, f->acc, a.id, v.id, NULL, &got), -ENOENT);
        assert_int_equal(store_net_get(f->s, f->acc, a.id, &g, NULL), 0);
        assert_int_equal(g.n_vms, 0);
        assert_int_equal(store_net_delete(f->s, f->acc, a.id), 0);
}

/* Attach with an Idempotency-Key: a retry is a replay, not a 409. */
static void test_net_idempotency(void **state)
{
        struct fx *f = *state;
        struct idem k = { .account_id = f->acc, .key = "attach-1", .hash = { 7 } };
        struct idem_rec rec;
        struct network w, again;
        struct vm v, got;
        hello(f, "node-1", "ams1", 64, 262144);
        assert_int_equal(create_vm(f, f->acc, "v", NULL, 1, 64, &v), 0);
        struct idem nk = { .account_id = f->acc, .key = "net-1", .hash = { 3 } };
        assert_int_equal(store_net_create(f->s, f->acc, "n", "10.0.0.0/24", &nk, NOW, &w), 0);
        assert_int_equal(store_idem_get(f->s, f->acc, "net-1", NOW, &rec), 0);
        assert_int_equal(rec.resource_id, w.id);
        assert_int_equal(rec.status, 201);
        free(rec.body);
        assert_int_equal(store_net_create(f->s, f->acc, "n", "10.0.0.0/24", &nk, NOW, &again),
                         -EALREADY);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, v.id, &k, &got), 0);
        assert_int_equal(store_idem_get(f->s, f->acc, "attach-1", NOW, &rec), 0);
        assert_int_equal(rec.resource_id, v.id);
        assert_int_equal(rec.status, 202);
        free(rec.body);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, v.id, &k, &got), -EALREADY);
        assert_int_equal(nic_count(f, v.id), 1);
}

static void assert_fdb(const struct msg_sync_reply *rep, const struct net_desired *w, size_t i,
                       const char *mac, const char *host)
{
        assert_true(i < w->n_fdb);
        assert_string_equal(rep->fdb[w->first_fdb + i].mac, mac);
        assert_string_equal(rep->fdb[w->first_fdb + i].host, host);
}

static void assert_remotes(const struct msg_sync_reply *rep, const struct net_desired *w,
                           const char *const *want, size_t n)
{
        assert_int_equal(w->n_remotes, n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(rep->remotes[w->first_remote + i], want[i]);
}

/* Three hosts, two networks: each host gets its guests' NICs, and for each
 * network with a guest of its own the other hosts (one entry each) and
 * the other hosts' guests (their MAC there), never its own guests. */
static void test_net_desired_three_hosts(void **state)
{
        struct fx *f = *state;
        struct msg_sync_reply rep;
        struct vm tmp;
        uint64_t h1 = hello_ul(f, "h1", "s1", "192.0.2.1");
        uint64_t h2 = hello_ul(f, "h2", "s2", "192.0.2.2");
        uint64_t h3 = hello_ul(f, "h3", "s3", "192.0.2.3");
        pool(f, "s1", "203.0.113.0/24", "203.0.113.1", NULL, NULL);
        struct network A = make_net(f, f->acc, "A", "10.10.0.0/24");
        struct network B = make_net(f, f->acc, "B", "10.20.0.0/24");
        struct vm a1 = vm_net(f, "a1", "s1", A.id);
        struct vm a2 = vm_net(f, "a2", "s2", A.id);
        struct vm b1 = vm_net(f, "b1", "s1", B.id);
        struct vm a1b = vm_net(f, "a1b", "s1", A.id);
        struct vm a3 = vm_net(f, "a3", "s3", A.id);
        struct vm b2 = vm_net(f, "b2", "s2", 0);
        assert_int_equal(store_net_attach(f->s, f->acc, B.id, b2.id, NULL, &tmp), 0);
        struct vm c3 = vm_net(f, "c3", "s3", 0);
        struct vm gone = vm_net(f, "gone", "s2", A.id); /* deleted: in no one's FDB */
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, f->acc, gone.id, &host), 0);
        assert_int_equal(a1.host_id, h1);
        assert_int_equal(b2.host_id, h2);
        assert_int_equal(a3.host_id, h3);
        char m_a1[TMSG_MAC], m_a1b[TMSG_MAC], m_a2[TMSG_MAC], m_a3[TMSG_MAC], m_b2[TMSG_MAC];
        snprintf(m_a1, sizeof(m_a1), "%s", nic_of(f, a1.id, 2, 1).mac);
        snprintf(m_a1b, sizeof(m_a1b), "%s", nic_of(f, a1b.id, 2, 1).mac);
        snprintf(m_a2, sizeof(m_a2), "%s", nic_of(f, a2.id, 1, 0).mac);
        snprintf(m_a3, sizeof(m_a3), "%s", nic_of(f, a3.id, 1, 0).mac);
        snprintf(m_b2, sizeof(m_b2), "%s", nic_of(f, b2.id, 1, 0).mac);

        /* h1: a1, b1, a1b; networks A and B */
        memset(&rep, 0, sizeof(rep));
        assert_int_equal(store_host_desired(f->s, h1, &rep), 0);
        assert_int_equal(rep.n_domains, 3);
        const struct dom_desired *d = &rep.domains[0];
        assert_int_equal(d->vm_id, a1.id);
        assert_int_equal(d->n_nics, 2);
        assert_int_equal(d->nics[0].vni, 0);
        assert_string_equal(d->nics[0].addrs[0], "203.0.113.2/24");
        assert_string_equal(d->nics[0].gateway4, "203.0.113.1");
        assert_string_equal(d->nics[0].gateway6, "");
        assert_int_equal(d->nics[1].vni, A.vni);
        assert_string_equal(d->nics[1].mac, m_a1);
        assert_int_equal(d->nics[1].n_addrs, 1);
        assert_string_equal(d->nics[1].addrs[0], "10.10.0.2/24");
        assert_string_equal(d->nics[1].gateway4, ""); /* none on a private network */
        assert_int_equal(rep.domains[1].vm_id, b1.id);
        assert_int_equal(rep.domains[1].nics[1].vni, B.vni);
        assert_string_equal(rep.domains[1].nics[1].addrs[0], "10.20.0.2/24");
        assert_int_equal(rep.domains[2].vm_id, a1b.id);
        assert_string_equal(rep.domains[2].nics[1].addrs[0], "10.10.0.4/24");
        assert_int_equal(rep.n_networks, 2);
        const struct net_desired *wa = &rep.networks[0], *wb = &rep.networks[1];
        assert_int_equal(wa->vni, A.vni);
        assert_int_equal(wb->vni, B.vni);
        assert_int_equal(wa->mtu, 1450);
        assert_int_equal(wb->mtu, 1450);
        static const char *const h1_a[] = { "192.0.2.2", "192.0.2.3" };
        assert_remotes(&rep, wa, h1_a, 2);
        assert_int_equal(wa->n_fdb, 2);
        assert_fdb(&rep, wa, 0, m_a2, "192.0.2.2");
        assert_fdb(&rep, wa, 1, m_a3, "192.0.2.3");
        static const char *const h1_b[] = { "192.0.2.2" };
        assert_remotes(&rep, wb, h1_b, 1);
        assert_int_equal(wb->n_fdb, 1);
        assert_fdb(&rep, wb, 0, m_b2, "192.0.2.2");
        assert_int_equal(rep.n_remotes, 3);
        assert_int_equal(rep.n_fdb, 3);
        /* the link carries it as it is */
        struct tmsg m = { .type = TMSG_SYNC_REPLY, .sync_reply = rep }, back;
        uint8_t *buf = NULL;
        size_t len = 0;
        assert_int_equal(codec_encode(&m, &buf, &len), 0);
        assert_int_equal(codec_decode(buf, len, &back), 0);
        assert_int_equal(back.sync_reply.n_fdb, 3);
        assert_int_equal(back.sync_reply.networks[1].n_remotes, 1);
        tmsg_clear(&back);
        free(buf);
        free_desired(&rep);

        /* h3: a3 and c3 (no pool in s3: only the private NIC); network A */
        assert_int_equal(store_host_desired(f->s, h3, &rep), 0);
        assert_int_equal(rep.n_domains, 2);
        assert_int_equal(rep.domains[0].vm_id, a3.id);
        assert_int_equal(rep.domains[0].n_nics, 1);
        assert_int_equal(rep.domains[0].nics[0].vni, A.vni);
        assert_string_equal(rep.domains[0].nics[0].addrs[0], "10.10.0.5/24");
        assert_int_equal(rep.domains[1].vm_id, c3.id);
        assert_int_equal(rep.domains[1].n_nics, 0);
        assert_int_equal(rep.n_networks, 1);
        static const char *const h3_a[] = { "192.0.2.1", "192.0.2.2" };
        assert_remotes(&rep, &rep.networks[0], h3_a, 2);
        assert_int_equal(rep.networks[0].n_fdb, 3);
        /* by host, then MAC */
        int a1_first = strcmp(m_a1, m_a1b) < 0;
        assert_fdb(&rep, &rep.networks[0], 0, a1_first ? m_a1 : m_a1b, "192.0.2.1");
        assert_fdb(&rep, &rep.networks[0], 1, a1_first ? m_a1b : m_a1, "192.0.2.1");
        assert_fdb(&rep, &rep.networks[0], 2, m_a2, "192.0.2.2");
        free_desired(&rep);

        /* h2: a2, b2; both networks, h1 and h3 on A, h1 on B */
        assert_int_equal(store_host_desired(f->s, h2, &rep), 0);
        assert_int_equal(rep.n_domains, 2);
        assert_int_equal(rep.n_networks, 2);
        static const char *const h2_a[] = { "192.0.2.1", "192.0.2.3" };
        static const char *const h2_b[] = { "192.0.2.1" };
        assert_remotes(&rep, &rep.networks[0], h2_a, 2);
        assert_remotes(&rep, &rep.networks[1], h2_b, 1);
        assert_int_equal(rep.networks[0].n_fdb, 3); /* a1, a1b, a3 */
        assert_int_equal(rep.networks[1].n_fdb, 1); /* b1 */
        assert_fdb(&rep, &rep.networks[1], 0, nic_of(f, b1.id, 2, 1).mac, "192.0.2.1");
        for (size_t i = 0; i < rep.n_fdb; i++)
                assert_true(strcmp(rep.fdb[i].host, "192.0.2.2") != 0); /* never its own */
        free_desired(&rep);
}

/* A change of a network's members gives every host with a guest on it a
 * new generation (their FDB changes), and no other host. */
static void test_net_generations(void **state)
{
        struct fx *f = *state;
        struct vm tmp;
        uint64_t *hosts = NULL;
        size_t n = 0;
        uint64_t h1 = hello_ul(f, "h1", "s1", "192.0.2.1");
        uint64_t h2 = hello_ul(f, "h2", "s2", "192.0.2.2");
        uint64_t h3 = hello_ul(f, "h3", "s3", "192.0.2.3");
        uint64_t h4 = hello_ul(f, "h4", "s4", "192.0.2.4");
        struct network A = make_net(f, f->acc, "A", "10.10.0.0/24");
        struct vm a1 = vm_net(f, "a1", "s1", A.id);
        struct vm a2 = vm_net(f, "a2", "s2", A.id);
        struct vm x3 = vm_net(f, "x3", "s3", 0);
        vm_net(f, "y4", "s4", 0);
        uint64_t g1 = generation(f, h1), g2 = generation(f, h2), g3 = generation(f, h3),
                 g4 = generation(f, h4);

        /* a network alone changes no host */
        struct network B = make_net(f, f->acc, "B", "10.20.0.0/24");
        assert_int_equal(generation(f, h1), g1);

        assert_int_equal(store_net_attach(f->s, f->acc, A.id, x3.id, NULL, &tmp), 0);
        assert_int_equal(generation(f, h1), g1 + 1);
        assert_int_equal(generation(f, h2), g2 + 1);
        assert_int_equal(generation(f, h3), g3 + 1);
        assert_int_equal(generation(f, h4), g4);
        assert_int_equal(store_vm_net_hosts(f->s, x3.id, &hosts, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(hosts[0], h1);
        assert_int_equal(hosts[1], h2);
        assert_int_equal(hosts[2], h3);
        free(hosts);

        /* a delete: the others on its network drop it from their FDB */
        g1 = generation(f, h1), g2 = generation(f, h2), g3 = generation(f, h3);
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, f->acc, a2.id, &host), 0);
        assert_int_equal(generation(f, h1), g1 + 1);
        assert_int_equal(generation(f, h3), g3 + 1);
        assert_true(generation(f, h2) > g2); /* its own host removes it */
        assert_int_equal(generation(f, h4), g4);

        /* a creation on the network: its members' hosts too */
        g1 = generation(f, h1), g3 = generation(f, h3);
        struct vm a4 = vm_net(f, "a4", "s4", A.id);
        assert_int_equal(generation(f, h1), g1 + 1);
        assert_int_equal(generation(f, h3), g3 + 1);
        assert_true(generation(f, h4) > g4);
        assert_int_equal(store_vm_net_hosts(f->s, a4.id, &hosts, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(hosts[2], h4);
        free(hosts);
        /* a VPS without a private network: no hosts to tell */
        struct vm lone = vm_net(f, "lone", "s2", 0);
        assert_int_equal(store_vm_net_hosts(f->s, lone.id, &hosts, &n), 0);
        assert_int_equal(n, 0);
        free(hosts);
        /* attaching to a network nobody else is on: the VPS's host only */
        g1 = generation(f, h1), g2 = generation(f, h2);
        assert_int_equal(store_net_attach(f->s, f->acc, B.id, lone.id, NULL, &tmp), 0);
        assert_int_equal(generation(f, h2), g2 + 1);
        assert_int_equal(generation(f, h1), g1);
        (void)a1;
}

/* A database of schema 12 (before networks) gains them at open, its VPS
 * intact, without NICs, and able to join a network. */
static void test_net_migration(void **state)
{
        SQLITE_ONLY("it undoes migrations with SQLite schema surgery (sqlite_master, user_version)");
        struct fx *f = *state;
        struct vm v, got;
        uint64_t host = hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "old", NULL, 1, 512, &v), 0);
        store_free(f->s);
        f->s = NULL;
        exec_in_file(f, SCHEMA_13_UNDO);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM sqlite_master WHERE name ="
                                        " 'nics' AND ?1",
                                     1),
                         0);
        assert_int_equal(store_open(f->path, &f->s), 0);
        assert_int_equal(int_in_file(f, "SELECT ?1 * 0 + user_version FROM pragma_user_version",
                                     1),
                         SCHEMA_LATEST);
        struct vm w = get_vm(f, f->acc, v.id);
        assert_string_equal(w.name, "old");
        assert_int_equal(w.n_networks, 0);
        assert_int_equal(nic_count(f, v.id), 0);
        struct network n = make_net(f, f->acc, "n", "10.0.0.0/24");
        assert_int_equal(n.vni, STORE_VNI_MIN);
        assert_int_equal(store_net_attach(f->s, f->acc, n.id, v.id, NULL, &got), 0);
        assert_int_equal(got.n_networks, 1);
        struct msg_sync_reply rep;
        assert_int_equal(store_host_desired(f->s, host, &rep), 0);
        assert_int_equal(rep.n_networks, 1);
        assert_int_equal(rep.domains[0].n_nics, 1);
        free_desired(&rep);
}

/* What the DNS records are made from: live VMs with a public NIC, their
 * fqdn (name below the zone, one dot whether the zone has its trailing dot
 * or not) and public addresses, by id; private NICs and deleted VMs not. */
static void test_dns_list(void **state)
{
        struct fx *f = *state;
        struct vm early, a, b, c, other;
        struct network w;
        struct vm_dns *d = NULL;
        size_t n = 99;
        uint64_t host;
        hello(f, "node-1", "ams1", 64, 65536);
        assert_int_equal(store_dns_list(f->s, "tasman.cloud", &d, &n), 0);
        assert_int_equal(n, 0);
        free(d);
        assert_int_equal(create_vm(f, f->acc, "early", "ams1", 1, 512, &early), 0); /* no pool yet */
        struct ip_pool pool = { .site = "ams1", .ipv4 = "203.0.113.0/28",
                                .gateway4 = "203.0.113.1", .ipv6 = "2001:db8:5::/64",
                                .gateway6 = "2001:db8:5::1" };
        assert_int_equal(store_pool_add(f->s, &pool, &pool), 0);
        assert_int_equal(create_vm(f, f->acc, "web1", "ams1", 1, 512, &a), 0);
        assert_int_equal(create_vm(f, f->acc, "Web.2", "ams1", 1, 512, &b), 0);
        assert_int_equal(create_vm(f, f->acc, "gone", "ams1", 1, 512, &c), 0);
        assert_int_equal(create_vm(f, f->other, "web1", "ams1", 1, 512, &other), 0);
        assert_int_equal(store_net_create(f->s, f->acc, "n", "10.0.0.0/24", NULL, NOW, &w), 0);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, early.id, NULL, &early), 0);
        assert_int_equal(store_net_attach(f->s, f->acc, w.id, a.id, NULL, &a), 0);
        assert_int_equal(store_vm_delete(f->s, f->acc, c.id, &host), 0);

        static const char *const zones[] = { "tasman.cloud", "tasman.cloud." };
        for (size_t z = 0; z < 2; z++) {
                assert_int_equal(store_dns_list(f->s, zones[z], &d, &n), 0);
                assert_int_equal(n, 3);
                assert_int_equal(d[0].vm_id, a.id);
                assert_string_equal(d[0].fqdn, "web1.tasman.cloud");
                assert_string_equal(d[0].ipv4, "203.0.113.2");
                assert_string_equal(d[0].ipv6, "2001:db8:5::2");
                assert_int_equal(d[1].vm_id, b.id);
                assert_string_equal(d[1].fqdn, "Web.2.tasman.cloud");
                assert_string_equal(d[1].ipv4, "203.0.113.3");
                assert_int_equal(d[2].vm_id, other.id);
                assert_string_equal(d[2].fqdn, "web1.tasman.cloud"); /* dns.c sorts out who has it */
                assert_string_equal(d[2].ipv4, "203.0.113.5");
                free(d);
        }
        /* a zone so long that a name would be cut: no name at all */
        char zone[300];
        memset(zone, 'z', sizeof(zone) - 1);
        zone[sizeof(zone) - 1] = '\0';
        assert_int_equal(store_dns_list(f->s, zone, &d, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(d[0].fqdn, "");
        free(d);
}

/* A page of the account's vms: every filter left out (NULL: any, limit 0:
 * all) and each one set, in either order of first use. */
static void test_vm_page_filters(void **state)
{
        struct fx *f = *state;
        struct vm v, *vs = NULL;
        size_t n = 99;
        hello(f, "node-1", "ams1", 8, 16384);
        hello(f, "node-2", "fra1", 8, 16384);
        assert_int_equal(create_vm(f, f->acc, "a", "ams1", 1, 512, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "b", "fra1", 1, 512, &v), 0);
        assert_int_equal(create_vm(f, f->acc, "c", "fra1", 1, 512, &v), 0);
        assert_int_equal(create_vm(f, f->other, "a", "ams1", 1, 512, &v), 0);
        struct vm_query q = { .account_id = f->acc };
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 3);
        free(vs);
        q.region = "fra1";
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(vs[0].name, "b");
        free(vs);
        q.name = "c";
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(vs[0].name, "c");
        free(vs);
        q.region = NULL;
        q.name = "a";
        q.limit = 1;
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(vs[0].site, "ams1");
        free(vs);
        q = (struct vm_query){ .account_id = f->acc, .limit = 2 };
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 2);
        q.after_id = vs[1].id;
        free(vs);
        assert_int_equal(store_vm_page(f->s, &q, &vs, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(vs[0].name, "c");
        free(vs);
}

/* ---- two brokers on one PostgreSQL database ---- */

struct broker_arg {
        struct fx *f;
        struct store *s; /* this "broker"'s own store handle */
        int id, made, refused, other;
        const struct idem *idem; /* all claim this key, or NULL */
        uint64_t vm_id;
};

/* Places VMs of 512 MB (ram_ratio 1: four per 2 GB host) as fast as it can. */
static void *broker_placer(void *p)
{
        struct broker_arg *b = p;
        static const struct sched_params sp = { .cpu_ratio = 4.0, .ram_ratio = 1.0,
                                                .disk_ratio = 1.0, .strategy = SCHED_SPREAD };
        for (int i = 0; i < 10; i++) {
                char name[32];
                struct vm v;
                snprintf(name, sizeof(name), "b%d-%d", b->id, i);
                const struct vm_new req = { .account_id = b->f->acc, .name = name, .size = "s",
                                            .image = "debian-12", .vcpus = 1, .ram_mb = 512,
                                            .disk_gb = 1, .sched = &sp };
                int r = store_vm_create(b->s, &req, NOW, LIVE_AFTER, &v);
                if (r == 0)
                        b->made++;
                else if (r == -ENOSPC)
                        b->refused++;
                else
                        b->other++;
        }
        return NULL;
}

static void *broker_claimer(void *p)
{
        struct broker_arg *b = p;
        const struct vm_new req = { .account_id = b->f->acc, .name = "once", .size = "s",
                                    .image = "debian-12", .vcpus = 1, .ram_mb = 64,
                                    .disk_gb = 1, .idem = b->idem };
        struct vm v;
        int r = store_vm_create(b->s, &req, NOW, LIVE_AFTER, &v);
        if (r == 0) {
                b->made++;
                b->vm_id = v.id;
        } else if (r == -EEXIST) {
                b->refused++; /* the key was claimed by the other */
        } else {
                b->other++;
        }
        return NULL;
}

/* The PostgreSQL back-end only: the SQLite one serves one broker (its
 * file is the broker's own). */
#define PG_ONLY()                                                                        \
        do {                                                                             \
                if (!pg_url()) {                                                         \
                        printf("# skip %s on SQLite: a SQLite store serves one broker\n", \
                               __func__);                                                \
                        return;                                                          \
                }                                                                        \
        } while (0)

/* Two brokers (two store handles, four threads each) place 80 VMs at once
 * on three hosts with room for 12: exactly 12 are placed, no host holds
 * more than it has, and each host's reserved capacity is what its guests
 * take. */
static void test_pg_two_brokers_place(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        struct store *s2;
        enum { N = 8 };
        pthread_t t[N];
        struct broker_arg a[N];
        const char *names[] = { "node-1", "node-2", "node-3" };
        for (int i = 0; i < 3; i++)
                hello(f, names[i], "ams1", 64, 2048);
        assert_int_equal(store_open(f->path, &s2), 0);
        for (int i = 0; i < N; i++) {
                a[i] = (struct broker_arg){ .f = f, .s = i % 2 ? s2 : f->s, .id = i };
                assert_int_equal(pthread_create(&t[i], NULL, broker_placer, &a[i]), 0);
        }
        int made = 0, refused = 0;
        for (int i = 0; i < N; i++) {
                pthread_join(t[i], NULL);
                assert_int_equal(a[i].other, 0);
                made += a[i].made;
                refused += a[i].refused;
        }
        assert_int_equal(made, 12);
        assert_int_equal(refused, N * 10 - 12);
        struct vm *vs = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(s2, f->acc, &vs, &n), 0);
        assert_int_equal(n, 12);
        for (int i = 0; i < 3; i++) {
                struct host h;
                uint32_t on = 0;
                assert_int_equal(store_host_by_name(i % 2 ? s2 : f->s, names[i], &h), 0);
                for (size_t k = 0; k < n; k++)
                        on += vs[k].host_id == h.id;
                assert_true(h.ram_mb_used <= h.ram_mb);
                assert_int_equal(h.guests, on);
                assert_int_equal(h.ram_mb_used, (uint64_t)on * 512);
                assert_int_equal(h.vcpus_used, on);
                assert_int_equal(on, 4);
        }
        free(vs);
        store_free(s2);
}

/* Two brokers create with one idempotency key at once, many times: each
 * time exactly one makes the VPS, the other is told the key is taken. */
static void test_pg_two_brokers_idempotency(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        struct store *s2;
        hello(f, "node-1", "ams1", 64, 1u << 20);
        assert_int_equal(store_open(f->path, &s2), 0);
        for (int round = 0; round < 20; round++) {
                char key[32];
                snprintf(key, sizeof(key), "key-%d", round);
                struct idem i = { .account_id = f->acc, .key = key };
                memset(i.hash, round, sizeof(i.hash));
                pthread_t t[2];
                struct broker_arg a[2];
                for (int k = 0; k < 2; k++) {
                        a[k] = (struct broker_arg){ .f = f, .s = k ? s2 : f->s, .id = k,
                                                    .idem = &i };
                        assert_int_equal(pthread_create(&t[k], NULL, broker_claimer, &a[k]), 0);
                }
                for (int k = 0; k < 2; k++)
                        pthread_join(t[k], NULL);
                assert_int_equal(a[0].other + a[1].other, 0);
                assert_int_equal(a[0].made + a[1].made, 1);
                assert_int_equal(a[0].refused + a[1].refused, 1);
                struct idem_rec rec;
                assert_int_equal(store_idem_get(s2, f->acc, key, NOW, &rec), 0);
                assert_int_equal(rec.resource_id, a[0].made ? a[0].vm_id : a[1].vm_id);
                free(rec.body);
        }
        struct vm *vs = NULL;
        size_t n = 0;
        assert_int_equal(store_vm_list(f->s, f->acc, &vs, &n), 0);
        free(vs);
        assert_int_equal(n, 20);
        store_free(s2);
}

struct watch_rec {
        pthread_mutex_t lock;
        pthread_cond_t cond;
        uint64_t hosts[64];
        size_t n;
        int any; /* calls with host 0 */
};

static void watch_cb(void *ud, uint64_t host_id)
{
        struct watch_rec *w = ud;
        pthread_mutex_lock(&w->lock);
        if (!host_id)
                w->any++;
        else if (w->n < 64)
                w->hosts[w->n++] = host_id;
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->lock);
}

/* How many calls for host (0: with host 0) after waiting up to ms for at
 * least want of them. */
static int watch_count(struct watch_rec *w, uint64_t host, int want, int ms)
{
        int64_t end = util_mono_ms() + ms;
        int n = 0;
        pthread_mutex_lock(&w->lock);
        for (;;) {
                n = 0;
                if (!host)
                        n = w->any;
                for (size_t i = 0; host && i < w->n; i++)
                        n += w->hosts[i] == host;
                if (n >= want || util_mono_ms() >= end)
                        break;
                pthread_mutex_unlock(&w->lock);
                usleep(10000);
                pthread_mutex_lock(&w->lock);
        }
        pthread_mutex_unlock(&w->lock);
        return n;
}

/* store_watch() on PostgreSQL: a change of a host's desired state that
 * another broker commits is told (once per commit); this store's own are
 * not; after the watch stops, nothing is. */
static void test_pg_watch(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        struct store *s2;
        struct vm v, tmp;
        struct watch_rec w = { .lock = PTHREAD_MUTEX_INITIALIZER,
                               .cond = PTHREAD_COND_INITIALIZER };
        hello(f, "node-1", "ams1", 8, 16384);
        assert_int_equal(store_open(f->path, &s2), 0);
        assert_int_equal(store_watch(s2, watch_cb, &w), 0);
        assert_int_equal(store_watch(s2, watch_cb, &w), -EBUSY);
        assert_int_equal(watch_count(&w, 0, 1, 5000), 1); /* listening: "any" once */

        assert_int_equal(create_vm(f, f->acc, "a", NULL, 1, 512, &v), 0);
        assert_int_equal(watch_count(&w, v.host_id, 1, 5000), 1);
        /* its own change first, then the other's: only the other's is told */
        assert_int_equal(store_vm_action(s2, f->acc, v.id, VM_ACT_REBOOT, NULL, &tmp), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, NULL, &tmp), 0);
        assert_int_equal(watch_count(&w, v.host_id, 2, 5000), 2);
        usleep(200000);
        assert_int_equal(watch_count(&w, v.host_id, 3, 0), 2);

        assert_int_equal(store_watch(s2, NULL, NULL), 0);
        assert_int_equal(store_vm_action(f->s, f->acc, v.id, VM_ACT_REBOOT, NULL, &tmp), 0);
        usleep(200000);
        assert_int_equal(watch_count(&w, v.host_id, 3, 0), 2);
        /* watching again works; freeing the store stops it */
        assert_int_equal(store_watch(s2, watch_cb, &w), 0);
        store_free(s2);
}

/* ---- the Tilaa API's calls ---- */

static void test_tilaa_api_users(void **state)
{
        struct fx *f = *state;
        struct api_user u = { .account_id = f->acc, .email = "a@example.com",
                              .first_name = "John", .last_name = "Doe", .hash = "$argon2id$x" };
        struct api_user got, *us = NULL;
        size_t n = 0;
        assert_int_equal(store_api_user_create(f->s, &u, &got), 0);
        assert_true(got.id > 0);
        assert_int_equal(got.account_id, f->acc);
        assert_string_equal(got.email, "a@example.com");
        assert_string_equal(got.first_name, "John");
        assert_string_equal(got.hash, "$argon2id$x");
        assert_true(got.created_at > 0);
        /* one e-mail, one user, across accounts and case */
        struct api_user dup = u;
        dup.account_id = f->other;
        util_strlcpy(dup.email, "A@Example.com", sizeof(dup.email));
        assert_int_equal(store_api_user_create(f->s, &dup, &got), -EEXIST);
        dup.account_id = 999999;
        util_strlcpy(dup.email, "z@example.com", sizeof(dup.email));
        assert_int_equal(store_api_user_create(f->s, &dup, &got), -ENOENT);
        dup.account_id = f->other;
        assert_int_equal(store_api_user_create(f->s, &dup, &got), 0);
        assert_int_equal(store_api_user_by_email(f->s, "a@example.com", &got), 0);
        assert_int_equal(got.account_id, f->acc);
        assert_int_equal(store_api_user_by_email(f->s, "nobody@example.com", &got), -ENOENT);
        assert_int_equal(store_api_user_list(f->s, f->acc, &us, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(us[0].email, "a@example.com");
        free(us);
        /* delete: only the account's own; its SSH keys stay, bound to nobody */
        struct ssh_key k = { .account_id = f->acc, .name = "k", .fingerprint = "SHA256:t",
                             .public_key = "ssh-ed25519 AAAA t", .user_id = u.id };
        struct ssh_key *kg = calloc(1, sizeof(*kg));
        assert_int_equal(store_api_user_by_email(f->s, "a@example.com", &got), 0);
        k.user_id = got.id;
        assert_int_equal(store_sshkey_create(f->s, &k, NULL, kg), 0);
        assert_int_equal(kg->user_id, got.id);
        assert_true(kg->modified_at == kg->created_at);
        assert_int_equal(store_api_user_delete(f->s, f->other, "a@example.com"), -ENOENT);
        assert_int_equal(store_api_user_delete(f->s, f->acc, "a@example.com"), 0);
        assert_int_equal(store_api_user_delete(f->s, f->acc, "a@example.com"), -ENOENT);
        assert_int_equal(store_api_user_by_email(f->s, "a@example.com", &got), -ENOENT);
        uint64_t kid = kg->id;
        assert_int_equal(store_sshkey_get(f->s, f->acc, kid, kg), 0);
        assert_int_equal(kg->user_id, 0);
        /* an update: label, key, user; another key's fingerprint is taken */
        struct ssh_key k2 = { .account_id = f->acc, .name = "k2", .fingerprint = "SHA256:u",
                              .public_key = "ssh-ed25519 BBBB u" };
        assert_int_equal(store_sshkey_create(f->s, &k2, NULL, kg), 0);
        k2.id = kg->id;
        util_strlcpy(k2.fingerprint, "SHA256:t", sizeof(k2.fingerprint));
        assert_int_equal(store_sshkey_update(f->s, &k2, kg), -EEXIST);
        util_strlcpy(k2.fingerprint, "SHA256:v", sizeof(k2.fingerprint));
        util_strlcpy(k2.name, "renamed", sizeof(k2.name));
        k2.user_id = 7;
        assert_int_equal(store_sshkey_update(f->s, &k2, kg), 0);
        assert_string_equal(kg->name, "renamed");
        assert_string_equal(kg->fingerprint, "SHA256:v");
        assert_int_equal(kg->user_id, 7);
        k2.account_id = f->other;
        assert_int_equal(store_sshkey_update(f->s, &k2, kg), -ENOENT);
        free(kg);
}

static void test_tilaa_vm(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        struct vm_tilaa *ts = NULL;
        struct site site;
        struct image img = { .slug = "debian-12", .name = "Debian 12", .url = "file:///x",
                             .sha256 = "00", .format = "raw" }, got;
        size_t n = 0;
        uint64_t host = hello(f, "node-1", "tas-1", 8, 16384);
        assert_int_equal(store_site_put(f->s, "tas-1", "Haarlem", &site), 0);
        assert_string_equal(site.tz, "Europe/Amsterdam");
        assert_int_equal(store_site_set_tz(f->s, "tas-1", "Europe/London"), 0);
        assert_int_equal(store_site_set_tz(f->s, "nowhere", "UTC"), -ENOENT);
        assert_int_equal(store_image_add(f->s, &img), 0);
        assert_int_equal(store_image_get(f->s, "debian-12", &got), 0);
        assert_true(got.num > 1); /* after the default one */
        uint64_t num = got.num;
        assert_int_equal(store_image_by_num(f->s, num, &got), 0);
        assert_string_equal(got.slug, "debian-12");
        assert_int_equal(store_image_by_num(f->s, num + 100, &got), -ENOENT);
        /* a removed image's number stays its own (and is not listed) */
        assert_int_equal(store_image_remove(f->s, "debian-12"), 0);
        assert_int_equal(store_image_by_num(f->s, num, &got), -ENOENT);
        assert_int_equal(store_image_add(f->s, &img), 0);
        assert_int_equal(store_image_get(f->s, "debian-12", &got), 0);
        assert_true(got.num == num);

        const struct vm_new req = {
                .account_id = f->acc, .name = "web", .size = "s-test", .image = "debian-12",
                .vcpus = 1, .ram_mb = 1024, .disk_gb = 20, .dns_name = "web.tasman.cloud",
                .admin_password = "s3cret", .cpu_cap = 80,
        };
        assert_int_equal(store_vm_create(f->s, &req, NOW, LIVE_AFTER, &v), 0);
        assert_int_equal(v.cpu_cap, 80);
        assert_int_equal(store_vm_tilaa_list(f->s, f->acc, v.id, &ts, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(ts[0].dns_name, "web.tasman.cloud");
        assert_string_equal(ts[0].admin_password, "s3cret");
        assert_true(ts[0].cancel_at == 0);
        assert_int_equal(ts[0].site_id, site.id);
        assert_string_equal(ts[0].site_name, "Haarlem");
        assert_string_equal(ts[0].site_tz, "Europe/London");
        assert_true(ts[0].template_id == num);
        assert_string_equal(ts[0].template_name, "Debian 12");
        free(ts);
        assert_int_equal(store_vm_tilaa_list(f->s, f->other, v.id, &ts, &n), -ENOENT);
        assert_int_equal(store_vm_tilaa_list(f->s, f->other, 0, &ts, &n), 0);
        assert_int_equal(n, 0);
        free(ts);
        /* the seed logs root in with the password */
        struct msg_seed_reply m;
        assert_int_equal(store_vm_seed(f->s, host, v.id, &m), 0);
        assert_string_equal(m.admin_user, "root");
        assert_string_equal(m.admin_password, "s3cret");
        struct tmsg t = { .type = TMSG_SEED_REPLY, .seed_reply = m };
        tmsg_clear(&t);

        /* edit: name and size in one go; a shrink needs a reinstall */
        uint64_t g0 = generation(f, host);
        struct vm_edit e = { .account_id = f->acc, .vm_id = v.id, .name = "web2", .resize = 1,
                             .size = "s-2", .vcpus = 2, .ram_mb = 2048, .disk_gb = 30,
                             .cpu_cap = 50 };
        assert_int_equal(store_vm_edit(f->s, &e, &w), 0);
        assert_string_equal(w.name, "web2");
        uint64_t renamed = 0;
        assert_int_equal(store_event_count(f->s, "vps.renamed", &renamed), 0);
        assert_true(renamed == 1);
        assert_int_equal(w.vcpus, 2);
        assert_int_equal(w.ram_mb, 2048);
        assert_int_equal(w.disk_gb, 30);
        assert_int_equal(w.cpu_cap, 50);
        assert_true(w.resize_seq == v.resize_seq + 1);
        assert_true(w.rebuild_seq == v.rebuild_seq);
        assert_true(generation(f, host) > g0);
        e = (struct vm_edit){ .account_id = f->acc, .vm_id = v.id, .resize = 1, .size = "s-2",
                              .vcpus = 2, .ram_mb = 2048, .disk_gb = 20 };
        assert_int_equal(store_vm_edit(f->s, &e, &w), -EINVAL);
        assert_int_equal(get_vm(f, f->acc, v.id).disk_gb, 30); /* nothing changed */
        e.reinstall = 1;
        assert_int_equal(store_vm_edit(f->s, &e, &w), 0);
        assert_int_equal(w.disk_gb, 20);
        assert_true(w.rebuild_seq == v.rebuild_seq + 1);
        /* a new image is a reinstall from it */
        e = (struct vm_edit){ .account_id = f->acc, .vm_id = v.id, .image = "ubuntu-24.04" };
        assert_int_equal(store_vm_edit(f->s, &e, &w), 0);
        assert_string_equal(w.image, "ubuntu-24.04");
        assert_true(w.rebuild_seq == v.rebuild_seq + 2);
        /* no room on its host */
        e = (struct vm_edit){ .account_id = f->acc, .vm_id = v.id, .resize = 1, .size = "big",
                              .vcpus = 2, .ram_mb = 1 << 20, .disk_gb = 20 };
        char why[128] = "";
        e.why = why;
        e.why_len = sizeof(why);
        assert_int_equal(store_vm_edit(f->s, &e, &w), -ENOSPC);
        assert_true(why[0] != '\0');
        e.account_id = f->other;
        assert_int_equal(store_vm_edit(f->s, &e, &w), -ENOENT);

        /* cancel: no more edits; undo; due ones deleted */
        assert_int_equal(store_vm_cancel(f->s, f->other, v.id, NOW + 1000), -ENOENT);
        assert_int_equal(store_vm_cancel(f->s, f->acc, v.id, NOW + 1000), 0);
        assert_int_equal(store_vm_tilaa_list(f->s, f->acc, v.id, &ts, &n), 0);
        assert_true(ts[0].cancel_at == NOW + 1000);
        free(ts);
        e = (struct vm_edit){ .account_id = f->acc, .vm_id = v.id, .name = "x" };
        assert_int_equal(store_vm_edit(f->s, &e, &w), -ECANCELED);
        assert_int_equal(store_vm_cancel(f->s, f->acc, v.id, 0), 0);
        assert_int_equal(store_vm_edit(f->s, &e, &w), 0);
        assert_int_equal(store_vm_cancel(f->s, f->acc, v.id, NOW + 1000), 0);
        struct vm v2;
        assert_int_equal(create_vm(f, f->acc, "keep", NULL, 1, 512, &v2), 0);
        assert_int_equal(store_vm_cancel(f->s, f->acc, v2.id, NOW + 5000), 0);
        uint64_t *hosts = NULL;
        assert_int_equal(store_vm_cancel_due(f->s, NOW + 999, &hosts, &n), 0);
        assert_int_equal(n, 0);
        free(hosts);
        assert_int_equal(store_vm_cancel_due(f->s, NOW + 1000, &hosts, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(hosts[0], host);
        free(hosts);
        assert_int_equal(store_vm_get(f->s, f->acc, v.id, &w), -ENOENT);
        assert_int_equal(store_vm_get(f->s, f->acc, v2.id, &w), 0);
        assert_int_equal(store_vm_cancel_due(f->s, NOW + 1000, &hosts, &n), 0); /* again: none */
        assert_int_equal(n, 0);
        free(hosts);
        assert_int_equal(store_vm_cancel(f->s, f->acc, v2.id, 0), 0); /* undone: kept */
        assert_int_equal(store_vm_cancel_due(f->s, NOW + 10000, &hosts, &n), 0);
        assert_int_equal(n, 0);
        free(hosts);
        assert_int_equal(store_vm_get(f->s, f->acc, v2.id, &w), 0);
}

static void test_tilaa_metadata(void **state)
{
        struct fx *f = *state;
        struct metadata m, *ms = NULL;
        size_t n = 0;
        assert_int_equal(store_metadata_create(f->s, f->acc, "p1", "#cloud-config\n", &m), 0);
        assert_true(m.id > 0);
        assert_string_equal(m.name, "p1");
        assert_string_equal(m.user_data, "#cloud-config\n");
        assert_true(m.created_at == m.modified_at);
        uint64_t id = m.id;
        free(m.user_data);
        assert_int_equal(store_metadata_get(f->s, f->other, id, &m), -ENOENT);
        assert_int_equal(store_metadata_update(f->s, f->other, id, "x", NULL, &m), -ENOENT);
        assert_int_equal(store_metadata_delete(f->s, f->other, id), -ENOENT);
        assert_int_equal(store_metadata_update(f->s, f->acc, id, NULL, "#!/bin/sh\n", &m), 0);
        assert_string_equal(m.name, "p1"); /* kept */
        assert_string_equal(m.user_data, "#!/bin/sh\n");
        free(m.user_data);
        assert_int_equal(store_metadata_update(f->s, f->acc, id, "p2", NULL, &m), 0);
        assert_string_equal(m.name, "p2");
        assert_string_equal(m.user_data, "#!/bin/sh\n");
        free(m.user_data);
        assert_int_equal(store_metadata_list(f->s, f->acc, &ms, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(ms[0].name, "p2");
        store_metadata_free(ms, n);
        assert_int_equal(store_metadata_list(f->s, f->other, &ms, &n), 0);
        assert_int_equal(n, 0);
        store_metadata_free(ms, n);
        for (int i = 1; i < STORE_METADATA_PER_ACCOUNT; i++) {
                assert_int_equal(store_metadata_create(f->s, f->acc, "p", "", &m), 0);
                free(m.user_data);
        }
        assert_int_equal(store_metadata_create(f->s, f->acc, "p", "", &m), -EDQUOT);
        assert_int_equal(store_metadata_delete(f->s, f->acc, id), 0);
        assert_int_equal(store_metadata_delete(f->s, f->acc, id), -ENOENT);
        assert_int_equal(store_metadata_get(f->s, f->acc, id, &m), -ENOENT);
}

struct opener {
        const char *url;
        struct store *s;
        int r;
};

static void *open_store(void *p)
{
        struct opener *o = p;
        o->r = store_open(o->url, &o->s);
        return NULL;
}

/* Migrations on PostgreSQL: four brokers opening a fresh database at once
 * migrate it once (under the advisory lock), each version recorded once;
 * a database newer than this broker knows is refused. */
static void test_pg_migrations(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        char db[64], url[512], q[128];
        enum { N = 4 };
        pthread_t t[N];
        struct opener o[N];
        pg_db_new(db, sizeof(db), url, sizeof(url));
        for (int i = 0; i < N; i++) {
                o[i] = (struct opener){ .url = url };
                assert_int_equal(pthread_create(&t[i], NULL, open_store, &o[i]), 0);
        }
        for (int i = 0; i < N; i++)
                pthread_join(t[i], NULL);
        char key0[ID_STR_MAX], key[ID_STR_MAX];
        for (int i = 0; i < N; i++) {
                assert_int_equal(o[i].r, 0);
                /* one installation: one id key */
                id_encode(store_id_key(o[i].s), "vps", 1, i ? key : key0, ID_STR_MAX);
                if (i)
                        assert_string_equal(key, key0);
                store_free(o[i].s);
        }
        char out[64];
        assert_int_equal(psql(db, "SELECT COUNT(*) || ' ' || COUNT(DISTINCT version) || ' ' ||"
                                  " MAX(version) FROM schema_migrations",
                              out, sizeof(out)),
                         0);
        out[strcspn(out, "\n")] = '\0';
        snprintf(q, sizeof(q), "%d %d %d", SCHEMA_LATEST, SCHEMA_LATEST, SCHEMA_LATEST);
        assert_string_equal(out, q);
        /* a newer schema: refused, nothing changed */
        snprintf(q, sizeof(q), "INSERT INTO schema_migrations VALUES (%d, 0)", SCHEMA_LATEST + 1);
        assert_int_equal(psql(db, q, NULL, 0), 0);
        struct store *s = NULL;
        assert_int_equal(store_open(url, &s), -EPROTO);
        assert_null(s);
        pg_db_drop(db);
        (void)f;
}

/* A writer that cannot get the database's writer lock within 5 s (another
 * broker holds it: here psql) fails with -EIO, as SQLite's busy timeout
 * makes it; reads go on meanwhile; once the lock is free, writes work. */
static void test_pg_lock_timeout(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        char cmd[1024], out[64];
        struct account a;
        const char *slash = strrchr(pg_url(), '/');
        snprintf(cmd, sizeof(cmd),
                 "psql -X -q '%.*s/%s' -c 'BEGIN' -c 'SELECT pg_advisory_xact_lock(%lld)'"
                 " -c 'SELECT pg_sleep(8)' -c 'COMMIT' >/dev/null 2>&1 &",
                 (int)(slash - pg_url()), pg_url(), f->db, 0x74736d02LL);
        assert_int_equal(system(cmd), 0);
        int held = 0;
        for (int i = 0; i < 100 && !held; i++) {
                assert_int_equal(psql(f->db, "SELECT COUNT(*) FROM pg_locks WHERE"
                                             " locktype = 'advisory' AND granted",
                                      out, sizeof(out)),
                                 0);
                held = atoi(out) > 0;
                if (!held)
                        usleep(50000);
        }
        assert_true(held);
        int64_t t0 = util_mono_ms();
        assert_int_equal(store_account_create(f->s, "carol", TIER_FREE, &a), -EIO);
        int64_t waited = util_mono_ms() - t0;
        assert_true(waited >= 4500 && waited < 8000);
        assert_int_equal(store_account_by_name(f->s, "alice", &a), 0); /* reads go on */
        int made = -1;
        for (int i = 0; i < 100 && made != 0; i++) {
                made = store_account_create(f->s, "carol", TIER_FREE, &a);
                if (made != 0)
                        usleep(100000);
        }
        assert_int_equal(made, 0);
}

/* Connections the server drops (a restart, an admin's
 * pg_terminate_backend) are found by the next call's first statement and
 * made again: reads and writes right after it work. */
static void test_pg_reconnect(void **state)
{
        PG_ONLY();
        struct fx *f = *state;
        struct account a;
        char out[64];
        for (int round = 0; round < 2; round++) {
                assert_int_equal(store_account_by_name(f->s, "alice", &a), 0);
                assert_int_equal(psql(f->db, "SELECT COUNT(pg_terminate_backend(pid)) FROM"
                                             " pg_stat_activity WHERE datname = current_database()"
                                             " AND pid <> pg_backend_pid()",
                                      out, sizeof(out)),
                                 0);
                assert_true(atoi(out) >= 1);
                usleep(100000);
                if (round == 0) {
                        assert_int_equal(store_account_by_name(f->s, "alice", &a), 0);
                        assert_int_equal(a.id, f->acc);
                } else {
                        assert_int_equal(store_account_create(f->s, "carol", TIER_FREE, &a), 0);
                }
        }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
                T(test_accounts),
                T(test_images),
                T(test_vm_seed),
                T(test_vm_resize),
                cmocka_unit_test(test_tiers),
                T(test_keys),
                T(test_auth_bearer),
                T(test_host_hello),
                T(test_hosts_touch),
                T(test_create_needs_live_host),
                T(test_create_places),
                T(test_capacity),
                T(test_capacity_vcpus_and_disk),
                T(test_site_filter_and_spread),
                T(test_capacity_catalog_sizes),
                T(test_vm_get_list_by_account),
                T(test_vm_page_filters),
                T(test_actions),
                T(test_host_desired),
                T(test_host_observe),
                T(test_observe_other_host),
                T(test_delete_and_purge),
                T(test_reopen),
                T(test_id_key_per_installation),
                cmocka_unit_test(test_open_fails),
                cmocka_unit_test(test_vps_status),
                T(test_vps_status_from_store),
                T(test_liveness_many),
                T(test_no_read_left_open),
                T(test_inflight),
                T(test_storage_types),
                T(test_anti_affinity),
                T(test_host_cache_in_step),
                T(test_idempotency),
                T(test_sshkeys),
                T(test_dns_list),
                T(test_every_call_one_store),
                T(test_group_commit),
                T(test_snap_create_get_list),
                T(test_snap_names_overwrite_limit),
                T(test_snap_rename),
                T(test_snap_any_name_latest),
                T(test_host_names),
                T(test_snap_delete),
                T(test_snap_restore),
                T(test_snap_restore_into),
                T(test_snap_idempotency),
                T(test_snap_desired),
                T(test_snap_observe),
                T(test_snap_rebuild_and_vm_delete),
                T(test_snap_migration),
                T(test_vm_from_snapshot),
                T(test_vps_status_snapshots),
                T(test_net_create_list_delete),
                T(test_net_limits_overlap),
                T(test_net_vni),
                T(test_net_addresses),
                T(test_nic_macs),
                T(test_pool_public),
                T(test_net_attach_rules),
                T(test_net_idempotency),
                T(test_net_desired_three_hosts),
                T(test_net_generations),
                T(test_net_migration),
                T(test_tilaa_api_users),
                T(test_tilaa_vm),
                T(test_tilaa_metadata),
                T(test_pg_two_brokers_place),
                T(test_pg_two_brokers_idempotency),
                T(test_pg_watch),
                T(test_pg_migrations),
                T(test_pg_lock_timeout),
                T(test_pg_reconnect),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
