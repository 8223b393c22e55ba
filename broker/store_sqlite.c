/* The SQLite back-end of store.h. See store.h for the contract. */
#define STORE_BACKEND sqlite_
#include "store_backend.h"
#include "store.h"

#include <errno.h>
#include <stdatomic.h>

/* Read connections: each thread keeps to one, so readers on different
 * threads (the HTTP workers, the hub) do not queue on one lock. */
#define STORE_READERS 4
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ipam.h"
#include "log.h"
#include "money.h"
#include "scheduler.h"
#include "util.h"



struct store {
        sqlite3 *db;
        _Atomic uint64_t version; /* see store_version() */
        pthread_mutex_t lock;
        struct id_key key;
        struct {
                const char *sql; /* a string literal: compared by address */
                sqlite3_stmt *st;
        } *stmts; /* grows: one per distinct SQL string used */
        size_t n_stmts, cap_stmts;
        int64_t seen_slack_ms; /* see store_set_seen_slack() */
        /* Group commit (see begin()): */
        pthread_cond_t committed_cond;
        int in_txn;              /* a batch transaction is open */
        uint64_t batch;          /* number of the open (or last) batch */
        uint64_t committed;      /* batches up to this one are over (durable or failed) */
        uint64_t failed[16];     /* recent batches whose COMMIT failed */
        size_t batch_writers;    /* writers whose changes are in the open batch */
        int64_t batch_opened_us;
        atomic_int arriving;     /* writers from begin() to the end of their work */
        uint64_t n_commits, n_writes; /* for metrics: batches committed, writers in them */
        struct store *reader; /* connections for reads (NULL in a reader): */
        struct store *readers[STORE_READERS]; /* reader == readers[0] */
        atomic_uint next_reader;
        int64_t idem_purged_at;
        atomic_int billing; /* see store_set_billing() */
        /* The scheduler's view of every host, sorted by id, kept in step
         * with the hosts table: a placement then costs no read of 10,000
         * rows. This process is the database's only writer (the SQLite
         * back-end serves one broker), so a row is re-read after every
         * transaction that changed it, committed or not. */
        struct sched_host *hc; /* what the scheduler reads */
        int64_t *hc_seen;      /* each host's last_seen, beside it */
        size_t n_hc, cap_hc;
        int hc_loaded;
        uint64_t *hc_dirty; /* hosts changed by the open transaction */
        size_t n_hc_dirty, cap_hc_dirty;
};

static const char *const tier_names[] = {
        [TIER_FREE] = "free", [TIER_PRO] = "pro", [TIER_ENTERPRISE] = "enterprise"
};
_Static_assert(sizeof(tier_names) / sizeof(tier_names[0]) == TIER__MAX, "tier_names");

const char *tier_to_string(enum tier t)
{
        return (unsigned)t < TIER__MAX ? tier_names[t] : "free";
}

int tier_from_string(const char *s, enum tier *ret)
{
        for (int i = 0; i < TIER__MAX; i++)
                if (strcmp(s, tier_names[i]) == 0) {
                        *ret = (enum tier)i;
                        return 0;
                }
        return -EINVAL;
}

/* ---- migrations: append only; never edit one that has shipped ---- */

static const char *const migrations[] = {
        /* 1: accounts, keys, hosts, vms, events */
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  name TEXT NOT NULL UNIQUE, tier INTEGER NOT NULL, created_at INTEGER NOT NULL);"
        "CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), prefix TEXT NOT NULL,"
        "  hash BLOB NOT NULL, created_at INTEGER NOT NULL, revoked_at INTEGER);"
        "CREATE INDEX api_keys_prefix ON api_keys(prefix);"
        "CREATE TABLE hosts (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
        "  site TEXT NOT NULL, underlay_ip TEXT NOT NULL, boot_id TEXT NOT NULL,"
        "  agent_version TEXT NOT NULL, hv_type TEXT NOT NULL, vcpus INTEGER NOT NULL,"
        "  ram_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL,"
        "  generation INTEGER NOT NULL DEFAULT 1, applied_generation INTEGER NOT NULL DEFAULT 0,"
        "  last_seen INTEGER NOT NULL, draining INTEGER NOT NULL DEFAULT 0,"
        "  obs_domains INTEGER NOT NULL DEFAULT 0, obs_vcpus INTEGER NOT NULL DEFAULT 0,"
        "  obs_ram_mb INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
        "CREATE TABLE vms (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  size TEXT NOT NULL, image TEXT NOT NULL, site TEXT NOT NULL,"
        "  host_id INTEGER NOT NULL REFERENCES hosts(id), vcpus INTEGER NOT NULL,"
        "  ram_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, want INTEGER NOT NULL,"
        "  reboot_seq INTEGER NOT NULL DEFAULT 0, rebuild_seq INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL, deleted_at INTEGER,"
        "  obs_state INTEGER NOT NULL DEFAULT -1, obs_reboot_done INTEGER NOT NULL DEFAULT 0,"
        "  obs_rebuild_done INTEGER NOT NULL DEFAULT 0, obs_error TEXT NOT NULL DEFAULT '',"
        "  obs_at INTEGER);"
        "CREATE INDEX vms_account ON vms(account_id, id) WHERE deleted_at IS NULL;"
        "CREATE INDEX vms_host ON vms(host_id, id);"
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,"
        "  kind TEXT NOT NULL, account_id INTEGER, resource_id INTEGER,"
        "  data TEXT NOT NULL DEFAULT '');",
        /* 2: capacity reserved per host, kept in the same transactions that
         * place and delete guests (the scheduler reads hosts only). */
        "ALTER TABLE hosts ADD COLUMN vcpus_used INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN ram_mb_used INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN disk_gb_used INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN guests INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN inflight INTEGER NOT NULL DEFAULT 0;"
        "UPDATE hosts SET"
        "  vcpus_used = (SELECT COALESCE(SUM(vcpus), 0) FROM vms v"
        "                WHERE v.host_id = hosts.id AND v.deleted_at IS NULL),"
        "  ram_mb_used = (SELECT COALESCE(SUM(ram_mb), 0) FROM vms v"
        "                 WHERE v.host_id = hosts.id AND v.deleted_at IS NULL),"
        "  disk_gb_used = (SELECT COALESCE(SUM(disk_gb), 0) FROM vms v"
        "                  WHERE v.host_id = hosts.id AND v.deleted_at IS NULL),"
        "  guests = (SELECT COUNT(*) FROM vms v"
        "            WHERE v.host_id = hosts.id AND v.deleted_at IS NULL),"
        "  inflight = (SELECT COUNT(*) FROM vms v WHERE v.host_id = hosts.id"
        "              AND v.deleted_at IS NULL AND v.obs_state < 0);",
        /* 3: liveness transitions are recorded once, as events */
        "ALTER TABLE hosts ADD COLUMN reachable INTEGER NOT NULL DEFAULT 1;"
        "CREATE INDEX events_resource ON events(resource_id, id);",
        /* 4: sites: a number, a slug (the native region) and a name */
        "CREATE TABLE sites (id INTEGER PRIMARY KEY AUTOINCREMENT, slug TEXT NOT NULL UNIQUE,"
        "  name TEXT NOT NULL, created_at INTEGER NOT NULL);"
        "INSERT INTO sites (slug, name, created_at)"
        "  SELECT DISTINCT site, site, MIN(created_at) FROM hosts GROUP BY site;",
        /* 5: storage types (hosts' disk_gb columns are the ssd ones) and
         * anti-affinity groups (per account) */
        "ALTER TABLE hosts ADD COLUMN hdd_gb INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN hdd_gb_used INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN storage INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN aa_group TEXT;"
        "CREATE INDEX vms_group ON vms(account_id, aa_group, host_id)"
        "  WHERE aa_group IS NOT NULL AND deleted_at IS NULL;",
        /* 6: read-only API keys; SSH keys; idempotent POSTs; VPS ssh keys */
        "ALTER TABLE api_keys ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX api_keys_account ON api_keys(account_id, id);"
        "CREATE TABLE ssh_keys (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  public_key TEXT NOT NULL, fingerprint TEXT NOT NULL, created_at INTEGER NOT NULL,"
        "  UNIQUE (account_id, fingerprint));"
        "CREATE TABLE idempotency (account_id INTEGER NOT NULL, key TEXT NOT NULL,"
        "  request_hash BLOB NOT NULL, status INTEGER NOT NULL, resource_id INTEGER NOT NULL,"
        "  body TEXT, location TEXT, created_at INTEGER NOT NULL, PRIMARY KEY (account_id, key));"
        "CREATE INDEX idempotency_age ON idempotency(created_at);"
        "ALTER TABLE vms ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '';",
        /* 7: template deployments; a VPS's cloud-init user-data */
        "ALTER TABLE vms ADD COLUMN user_data TEXT;"
        "CREATE TABLE deployments (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), template TEXT NOT NULL,"
        "  version TEXT NOT NULL, name TEXT NOT NULL, vm_id INTEGER NOT NULL,"
        "  config TEXT NOT NULL, created_at INTEGER NOT NULL, deleted_at INTEGER);"
        "CREATE INDEX deployments_account ON deployments(account_id, id)"
        "  WHERE deleted_at IS NULL;",
        /* 8: the OS image catalog. The default entry is Canonical's Ubuntu
         * 24.04 cloud image as published on 2026-07-26 (its SHA256SUMS);
         * admins replace it with `tasmanctl image add` when `current` moves. */
        "CREATE TABLE images (slug TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,"
        "  sha256 TEXT NOT NULL, format TEXT NOT NULL, min_disk_gb INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL, removed_at INTEGER);"
        "INSERT INTO images (slug, name, url, sha256, format, min_disk_gb, created_at) VALUES"
        "  ('ubuntu-24.04', 'Ubuntu 24.04 LTS',"
        "   'https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img',"
        "   'd1940f7d69d343355e183dff1e08a59852d32e7309baa7a4bad8365b11b005ac', 'qcow2', 4,"
        "   CAST(strftime('%s','now') AS INTEGER) * 1000);",
        /* 9: resize and rescue (want 2: power off at once) */
        "ALTER TABLE vms ADD COLUMN resize_seq INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN rescue INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_resize_done INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_rescue INTEGER NOT NULL DEFAULT 0;",
        /* 10: CPU cap, percent of each vCPU (0: none) */
        "ALTER TABLE vms ADD COLUMN cpu_cap INTEGER NOT NULL DEFAULT 0;",
        /* 11: snapshots (ids never reused) and restores. vms.snap_pending
         * counts the vm's snapshots in state creating or deleting, so a
         * report of a guest with none costs no read of this table. */
        "CREATE TABLE snapshots (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id),"
        "  vm_id INTEGER NOT NULL REFERENCES vms(id), name TEXT NOT NULL,"
        "  online INTEGER NOT NULL DEFAULT 0,"
        "  state TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),"
        "  replaces INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL,"
        "  ready_at INTEGER NOT NULL DEFAULT 0, vcpus INTEGER NOT NULL,"
        "  ram_mb INTEGER NOT NULL, disk_gb INTEGER NOT NULL, image TEXT NOT NULL);"
        "CREATE INDEX snapshots_vm ON snapshots(vm_id, id);"
        "CREATE INDEX snapshots_account ON snapshots(account_id, id);"
        "ALTER TABLE vms ADD COLUMN restore_seq INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN restore_snap INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_restore_done INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN snap_pending INTEGER NOT NULL DEFAULT 0;",
        /* 12: a vm made from another vm's snapshot (its disk a copy of it) */
        "ALTER TABLE vms ADD COLUMN source_vm INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN source_snap INTEGER NOT NULL DEFAULT 0;",
        /* 13: private networks (a deleted one's row goes), guest NICs (a
         * deleted vm's go at once: its addresses and MACs are free again)
         * and the sites' public address pools. nics.network_id 0: public. */
        "CREATE TABLE networks (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  cidr TEXT NOT NULL, vni INTEGER NOT NULL UNIQUE"
        "  CHECK (vni BETWEEN 4096 AND 16777215), created_at INTEGER NOT NULL);"
        "CREATE INDEX networks_account ON networks(account_id, id);"
        "CREATE TABLE nics (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  vm_id INTEGER NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
        "  network_id INTEGER NOT NULL, position INTEGER NOT NULL,"
        "  mac TEXT NOT NULL UNIQUE, ipv4 TEXT, ipv6 TEXT,"
        "  UNIQUE (vm_id, position), UNIQUE (vm_id, network_id));"
        "CREATE INDEX nics_network ON nics(network_id, vm_id);"
        "CREATE UNIQUE INDEX nics_ipv4 ON nics(network_id, ipv4) WHERE ipv4 IS NOT NULL;"
        "CREATE UNIQUE INDEX nics_ipv6 ON nics(network_id, ipv6) WHERE ipv6 IS NOT NULL;"
        "CREATE TABLE ip_pools (site TEXT PRIMARY KEY, ipv4 TEXT NOT NULL,"
        "  gateway4 TEXT NOT NULL, ipv6 TEXT, gateway6 TEXT, created_at INTEGER NOT NULL);"
        "INSERT INTO meta (key, value) VALUES ('next_vni', 4096);",
        /* 14: prepaid billing. Month prices of the sizes (cents); account
         * credit (cents, may go below zero by invoicing); credit added by
         * admins; billable: each vm's name, size, price (the one it was
         * ordered or last resized at) and life span, kept after the vm row
         * is purged until its last day is invoiced; one invoice line per
         * service per local day (days since 1970-01-01 in the billing
         * zone), never two, kept for good; meta 'billing_day' is the last
         * day invoiced. */
        "CREATE TABLE prices (size TEXT PRIMARY KEY,"
        "  month_cents INTEGER NOT NULL CHECK (month_cents >= 0));"
        "INSERT INTO prices (size, month_cents) VALUES ('standard-1vcpu-1gb', 600),"
        "  ('standard-1vcpu-2gb', 1200), ('standard-2vcpu-4gb', 2400),"
        "  ('standard-4vcpu-8gb', 4800), ('standard-8vcpu-16gb', 9600);"
        "ALTER TABLE accounts ADD COLUMN credit_cents INTEGER NOT NULL DEFAULT 0;"
        "CREATE TABLE billable (vm_id INTEGER PRIMARY KEY, account_id INTEGER NOT NULL,"
        "  name TEXT NOT NULL, size TEXT NOT NULL, price_month_cents INTEGER NOT NULL,"
        "  created_at INTEGER NOT NULL, deleted_at INTEGER);"
        "CREATE INDEX billable_live ON billable(account_id) WHERE deleted_at IS NULL;"
        "INSERT INTO billable (vm_id, account_id, name, size, price_month_cents, created_at,"
        "  deleted_at) SELECT id, account_id, name, size,"
        "  COALESCE((SELECT month_cents FROM prices p WHERE p.size = vms.size), 0),"
        "  created_at, deleted_at FROM vms;"
        "CREATE TABLE credit_ops (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), amount_cents INTEGER NOT NULL,"
        "  balance_cents INTEGER NOT NULL, created_at INTEGER NOT NULL);"
        "CREATE INDEX credit_ops_account ON credit_ops(account_id, id);"
        "CREATE TABLE invoice_lines (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id),"
        "  vm_id INTEGER NOT NULL, name TEXT NOT NULL, day INTEGER NOT NULL,"
        "  size TEXT NOT NULL, amount_cents INTEGER NOT NULL, created_at INTEGER NOT NULL,"
        "  UNIQUE (vm_id, day));"
        "CREATE INDEX invoice_lines_account ON invoice_lines(account_id, day);"
        "CREATE INDEX invoice_lines_day ON invoice_lines(day);",
        /* 15: the Tilaa API: its users (Basic auth, argon2id hashes; an
         * e-mail logs in to one account only), metadata (user-data)
         * profiles, a VM's DNS name, admin password and cancellation (ms
         * of the local midnight it is deleted at; NULL: none), each site's
         * time zone, the OS images' numbers (the Tilaa template ids, never
         * reused) and the SSH keys' user and last change. */
        "CREATE TABLE api_users (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id),"
        "  email TEXT NOT NULL UNIQUE COLLATE NOCASE, first_name TEXT NOT NULL DEFAULT '',"
        "  last_name TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL, created_at INTEGER NOT NULL);"
        "CREATE INDEX api_users_account ON api_users(account_id, id);"
        "CREATE TABLE metadata (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  account_id INTEGER NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  user_data TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL);"
        "CREATE INDEX metadata_account ON metadata(account_id, id);"
        "ALTER TABLE vms ADD COLUMN dns_name TEXT;"
        "ALTER TABLE vms ADD COLUMN admin_password TEXT;"
        "ALTER TABLE vms ADD COLUMN cancel_at INTEGER;"
        "CREATE INDEX vms_cancel ON vms(cancel_at) WHERE cancel_at IS NOT NULL"
        "  AND deleted_at IS NULL;"
        "ALTER TABLE sites ADD COLUMN tz TEXT NOT NULL DEFAULT 'Europe/Amsterdam';"
        "ALTER TABLE images ADD COLUMN num INTEGER;"
        "UPDATE images SET num = rowid;"
        "CREATE UNIQUE INDEX images_num ON images(num);"
        "ALTER TABLE ssh_keys ADD COLUMN user_id INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE ssh_keys ADD COLUMN modified_at INTEGER NOT NULL DEFAULT 0;"
        "UPDATE ssh_keys SET modified_at = created_at;",
};

static int db_err(struct store *s, const char *what)
{
        log_error("store: %s: %s", what, sqlite3_errmsg(s->db));
        return -EIO;
}

static int exec(struct store *s, const char *sql)
{
        char *msg = NULL;
        if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
                log_error("store: %s", msg ? msg : sqlite3_errmsg(s->db));
                sqlite3_free(msg);
                return -EIO;
        }
        return 0;
}

/* A cached prepared statement, reset and unbound. */
static sqlite3_stmt *stmt(struct store *s, const char *sql)
{
        for (size_t i = 0; i < s->n_stmts; i++) {
                if (s->stmts[i].sql == sql) {
                        sqlite3_reset(s->stmts[i].st);
                        sqlite3_clear_bindings(s->stmts[i].st);
                        return s->stmts[i].st;
                }
        }
        sqlite3_stmt *st;
        if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) !=
            SQLITE_OK) {
                log_error("store: cannot prepare statement: %s", sqlite3_errmsg(s->db));
                return NULL;
        }
        if (s->n_stmts == s->cap_stmts) {
                size_t ncap = s->cap_stmts ? s->cap_stmts * 2 : 64;
                void *n = realloc(s->stmts, ncap * sizeof(*s->stmts));
                if (!n) {
                        sqlite3_finalize(st);
                        log_error("store: out of memory for a statement");
                        return NULL;
                }
                s->stmts = n;
                s->cap_stmts = ncap;
        }
        s->stmts[s->n_stmts].sql = sql;
        s->stmts[s->n_stmts].st = st;
        s->n_stmts++;
        return st;
}

/* A text column into dst (n bytes); one too long is cut before a whole
 * UTF-8 character, never inside one (the JSON it goes into must be valid). */
static void col_text(sqlite3_stmt *st, int i, char *dst, size_t n)
{
        const unsigned char *t = sqlite3_column_text(st, i);
        size_t len = t ? (size_t)sqlite3_column_bytes(st, i) : 0;
        if (n == 0)
                return;
        if (len >= n) {
                len = n - 1;
                while (len > 0 && (t[len] & 0xc0) == 0x80)
                        len--;
        }
        if (len)
                memcpy(dst, t, len);
        dst[len] = '\0';
}

/*
 * Leaves the store: every cached statement is reset first, so none that
 * stopped on a row keeps a read transaction open (which would pin the WAL
 * and let it grow without bound, as checkpoints could never finish).
 */
static void reset_all(struct store *s)
{
        for (size_t i = 0; i < s->n_stmts; i++)
                if (sqlite3_stmt_busy(s->stmts[i].st))
                        sqlite3_reset(s->stmts[i].st);
}

static void unlock(struct store *s)
{
        reset_all(s);
        pthread_mutex_unlock(&s->lock);
}

/*
 * Writes are committed in groups. Each writer runs its statements in a
 * SAVEPOINT of one shared transaction (the batch): a failure rolls back its
 * own changes only. It then waits until the batch is durable before it
 * answers. The writer that finds no other writer on its way in (or a batch
 * of GROUP_MAX writers, or one older than GROUP_MAX_US) commits the batch:
 * one fsync for all of them. Readers wait for an open batch to commit
 * (rlock), so nothing not yet durable is ever shown.
 */
#define GROUP_MAX 64
#define GROUP_MAX_US 5000

static int batch_failed(const struct store *s, uint64_t b)
{
        for (size_t i = 0; i < sizeof(s->failed) / sizeof(s->failed[0]); i++)
                if (s->failed[i] == b)
                        return 1;
        return 0;
}

/* Caller holds the lock, a batch is open. */
static void commit_batch(struct store *s)
{
        reset_all(s);
        if (exec(s, "COMMIT") < 0) {
                exec(s, "ROLLBACK");
                s->failed[s->batch % (sizeof(s->failed) / sizeof(s->failed[0]))] = s->batch;
                s->hc_loaded = 0; /* the cache saw changes that are gone: read it all again */
        }
        s->in_txn = 0;
        atomic_fetch_add(&s->version, 1);
        s->committed = s->batch;
        s->n_commits++;
        s->n_writes += s->batch_writers;
        pthread_cond_broadcast(&s->committed_cond);
}

/* The lock, for reading what is durable only. */
static void rlock(struct store *s)
{
        pthread_mutex_lock(&s->lock);
        while (s->in_txn)
                pthread_cond_wait(&s->committed_cond, &s->lock);
}

uint64_t store_version(struct store *s)
{
        return atomic_load(&s->version);
}

/* ---- the scheduler's host cache ---- */

#define HC_COLS                                                                            \
        "h.id, h.last_seen, h.draining, h.vcpus, h.ram_mb, h.disk_gb, h.vcpus_used,"      \
        " h.ram_mb_used, h.disk_gb_used, h.inflight, h.hdd_gb, h.hdd_gb_used,"            \
        " COALESCE((SELECT id FROM sites WHERE slug = h.site), 0)"

struct hc_row {
        struct sched_host h;
        int64_t last_seen;
};

static void row_hc(sqlite3_stmt *st, void *item)
{
        struct hc_row *c = item;
        struct sched_host *h = &c->h;
        memset(c, 0, sizeof(*c));
        h->id = (uint64_t)sqlite3_column_int64(st, 0);
        c->last_seen = sqlite3_column_int64(st, 1);
        h->draining = (uint8_t)sqlite3_column_int(st, 2);
        h->vcpus = (uint32_t)sqlite3_column_int64(st, 3);
        h->ram_mb = (uint64_t)sqlite3_column_int64(st, 4);
        h->disk_gb[STORAGE_SSD] = (uint64_t)sqlite3_column_int64(st, 5);
        h->vcpus_used = (uint32_t)sqlite3_column_int64(st, 6);
        h->ram_mb_used = (uint64_t)sqlite3_column_int64(st, 7);
        h->disk_gb_used[STORAGE_SSD] = (uint64_t)sqlite3_column_int64(st, 8);
        h->inflight = (uint32_t)sqlite3_column_int64(st, 9);
        h->disk_gb[STORAGE_HDD] = (uint64_t)sqlite3_column_int64(st, 10);
        h->disk_gb_used[STORAGE_HDD] = (uint64_t)sqlite3_column_int64(st, 11);
        h->site_id = (uint32_t)sqlite3_column_int64(st, 12);
}

static int collect(struct store *s, sqlite3_stmt *st, size_t elem_size,
                   void (*fn)(sqlite3_stmt *, void *), void **ret, size_t *ret_n);

static void hc_mark(struct store *s, uint64_t host_id)
{
        if (!s->hc_loaded)
                return;
        if (s->n_hc_dirty == s->cap_hc_dirty) {
                size_t ncap = s->cap_hc_dirty ? s->cap_hc_dirty * 2 : 16;
                uint64_t *n = realloc(s->hc_dirty, ncap * sizeof(*n));
                if (!n) {
                        s->hc_loaded = 0; /* cannot track: load it all again */
                        return;
                }
                s->hc_dirty = n;
                s->cap_hc_dirty = ncap;
        }
        s->hc_dirty[s->n_hc_dirty++] = host_id;
}

static size_t hc_find(const struct store *s, uint64_t id, int *found)
{
        size_t lo = 0, hi = s->n_hc;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (s->hc[mid].id == id) {
                        *found = 1;
                        return mid;
                }
                if (s->hc[mid].id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = 0;
        return lo;
}

/* Re-reads one host's row into the cache (or drops it if gone). */
static int hc_reload(struct store *s, uint64_t id)
{
        static const char sql[] = "SELECT " HC_COLS " FROM hosts h WHERE h.id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        struct hc_row row;
        int found, rc;
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                row_hc(st, &row);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return -EIO;
        size_t pos = hc_find(s, id, &found);
        if (rc == SQLITE_DONE) {
                if (found) {
                        size_t tail = s->n_hc - pos - 1;
                        memmove(&s->hc[pos], &s->hc[pos + 1], tail * sizeof(*s->hc));
                        memmove(&s->hc_seen[pos], &s->hc_seen[pos + 1], tail * sizeof(*s->hc_seen));
                        s->n_hc--;
                }
                return 0;
        }
        if (!found) {
                if (s->n_hc == s->cap_hc) {
                        size_t ncap = s->cap_hc ? s->cap_hc * 2 : 64;
                        struct sched_host *nh = realloc(s->hc, ncap * sizeof(*nh));
                        if (!nh)
                                return -ENOMEM;
                        s->hc = nh;
                        int64_t *ns = realloc(s->hc_seen, ncap * sizeof(*ns));
                        if (!ns)
                                return -ENOMEM;
                        s->hc_seen = ns;
                        s->cap_hc = ncap;
                }
                memmove(&s->hc[pos + 1], &s->hc[pos], (s->n_hc - pos) * sizeof(*s->hc));
                memmove(&s->hc_seen[pos + 1], &s->hc_seen[pos], (s->n_hc - pos) * sizeof(*s->hc_seen));
                s->n_hc++;
        }
        s->hc[pos] = row.h;
        s->hc_seen[pos] = row.last_seen;
        return 0;
}

/* After a transaction ends: the changed hosts' rows as they now are. */
static void hc_apply(struct store *s)
{
        for (size_t i = 0; i < s->n_hc_dirty && s->hc_loaded; i++)
                if (hc_reload(s, s->hc_dirty[i]) < 0)
                        s->hc_loaded = 0;
        s->n_hc_dirty = 0;
}

static int hc_load(struct store *s)
{
        static const char sql[] = "SELECT " HC_COLS " FROM hosts h ORDER BY h.id";
        struct hc_row *rows = NULL;
        size_t n = 0;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        int r = collect(s, st, sizeof(*rows), row_hc, (void **)&rows, &n);
        if (r < 0)
                return r;
        struct sched_host *h = malloc((n ? n : 1) * sizeof(*h));
        int64_t *seen = malloc((n ? n : 1) * sizeof(*seen));
        if (!h || !seen) {
                free(h);
                free(seen);
                free(rows);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                h[i] = rows[i].h;
                seen[i] = rows[i].last_seen;
        }
        free(rows);
        free(s->hc);
        free(s->hc_seen);
        s->hc = h;
        s->hc_seen = seen;
        s->cap_hc = n ? n : 1;
        s->n_hc = n;
        s->hc_loaded = 1;
        s->n_hc_dirty = 0;
        return 0;
}

int store_check_host_cache(struct store *s)
{
        static const char sql[] = "SELECT " HC_COLS " FROM hosts h ORDER BY h.id";
        struct hc_row *rows = NULL;
        size_t n = 0;
        int bad = 0;

        rlock(s);
        if (!s->hc_loaded) {
                unlock(s);
                return -1;
        }
        sqlite3_stmt *st = stmt(s, sql);
        if (!st || collect(s, st, sizeof(*rows), row_hc, (void **)&rows, &n) < 0) {
                unlock(s);
                return -EIO;
        }
        if (n != s->n_hc)
                bad++;
        for (size_t i = 0; i < n && i < s->n_hc; i++) {
                const struct sched_host *a = &s->hc[i], *b = &rows[i].h;
                /* live and in_group are per request; the rest must match */
                if (a->id != b->id || a->site_id != b->site_id || a->draining != b->draining ||
                    a->vcpus != b->vcpus || a->vcpus_used != b->vcpus_used ||
                    a->ram_mb != b->ram_mb || a->ram_mb_used != b->ram_mb_used ||
                    memcmp(a->disk_gb, b->disk_gb, sizeof(a->disk_gb)) != 0 ||
                    memcmp(a->disk_gb_used, b->disk_gb_used, sizeof(a->disk_gb_used)) != 0 ||
                    a->inflight != b->inflight || s->hc_seen[i] != rows[i].last_seen)
                        bad++;
        }
        free(rows);
        unlock(s);
        return bad;
}

static int begin(struct store *s)
{
        atomic_fetch_add(&s->arriving, 1);
        pthread_mutex_lock(&s->lock);
        if (!s->in_txn) {
                if (exec(s, "BEGIN IMMEDIATE") < 0) {
                        atomic_fetch_sub(&s->arriving, 1);
                        unlock(s);
                        return -EIO;
                }
                s->in_txn = 1;
                s->batch++;
                s->batch_writers = 0;
                s->batch_opened_us = util_mono_us();
        }
        if (exec(s, "SAVEPOINT w") < 0) {
                if (atomic_fetch_sub(&s->arriving, 1) == 1)
                        commit_batch(s);
                unlock(s);
                return -EIO;
        }
        return 0;
}

/* Keeps (r == 0) or undoes this writer's changes, then waits until they
 * are durable; returns r, or -EIO if the batch could not be committed. */
static int finish(struct store *s, int r)
{
        reset_all(s);
        if (r == 0 && exec(s, "RELEASE w") < 0)
                r = -EIO;
        if (r < 0) {
                exec(s, "ROLLBACK TO w");
                exec(s, "RELEASE w");
        }
        hc_apply(s);
        uint64_t mine = s->batch;
        if (r == 0)
                s->batch_writers++;
        if (atomic_fetch_sub(&s->arriving, 1) == 1 || s->batch_writers >= GROUP_MAX ||
            util_mono_us() - s->batch_opened_us >= GROUP_MAX_US)
                commit_batch(s);
        if (r == 0) {
                while (s->committed < mine)
                        pthread_cond_wait(&s->committed_cond, &s->lock);
                if (batch_failed(s, mine))
                        r = -EIO;
        }
        return r;
}

static int end(struct store *s, int r)
{
        r = finish(s, r);
        unlock(s);
        return r;
}

static int event(struct store *s, int64_t now, const char *kind, uint64_t account_id,
                 uint64_t resource_id, const char *data)
{
        static const char sql[] =
                "INSERT INTO events (at, kind, account_id, resource_id, data) VALUES (?,?,?,?,?)";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        if (account_id)
                sqlite3_bind_int64(st, 3, (sqlite3_int64)account_id);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)resource_id);
        sqlite3_bind_text(st, 5, data ? data : "", -1, SQLITE_STATIC);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot record event");
}

static int migrate(struct store *s)
{
        sqlite3_stmt *st;
        int version = 0, r = 0;
        size_t n = sizeof(migrations) / sizeof(migrations[0]);

        if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
                return db_err(s, "cannot read schema version");
        if (sqlite3_step(st) == SQLITE_ROW)
                version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (version > (int)n) {
                log_error("store: database schema %d is newer than this broker knows (%zu)",
                          version, n);
                return -EPROTO;
        }
        for (size_t i = (size_t)version; i < n && r == 0; i++) {
                char pragma[64];
                r = exec(s, "BEGIN IMMEDIATE");
                if (r == 0)
                        r = exec(s, migrations[i]);
                snprintf(pragma, sizeof(pragma), "PRAGMA user_version = %zu", i + 1);
                if (r == 0)
                        r = exec(s, pragma);
                if (r == 0 && i == 0) {
                        /* The id key: made once, here, never changed. */
                        uint8_t secret[32];
                        r = util_random(secret, sizeof(secret));
                        if (r == 0 &&
                            sqlite3_prepare_v2(s->db,
                                               "INSERT INTO meta (key, value) VALUES ('id_key', ?)",
                                               -1, &st, NULL) == SQLITE_OK) {
                                sqlite3_bind_blob(st, 1, secret, sizeof(secret), SQLITE_STATIC);
                                r = sqlite3_step(st) == SQLITE_DONE ? 0 : -EIO;
                                sqlite3_finalize(st);
                        }
                }
                if (r == 0)
                        r = exec(s, "COMMIT");
                else
                        exec(s, "ROLLBACK");
                if (r == 0)
                        log_info("store: schema migrated to version %zu", i + 1);
        }
        return r;
}

static int load_key(struct store *s)
{
        sqlite3_stmt *st;
        int r = -EIO;
        if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key = 'id_key'", -1, &st,
                               NULL) != SQLITE_OK)
                return db_err(s, "cannot read id key");
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) >= 16) {
                id_key_init(&s->key, sqlite3_column_blob(st, 0),
                            (size_t)sqlite3_column_bytes(st, 0));
                r = 0;
        }
        sqlite3_finalize(st);
        if (r < 0)
                log_error("store: id key missing from the database");
        return r;
}

static _Thread_local int my_reader = -1;

static struct store *pick_reader(struct store *s)
{
        if (my_reader < 0)
                my_reader = (int)(atomic_fetch_add(&s->next_reader, 1) % STORE_READERS);
        return s->readers[my_reader];
}

/* A read connection: sees committed data only (a WAL snapshot per
 * statement), so reads neither wait for a batch nor show what is not yet
 * durable; its own lock and statements. */
static int open_reader(const char *path, struct store *w, size_t i)
{
        struct store *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->committed_cond, NULL);
        s->key = w->key;
        w->readers[i] = s;
        if (i == 0)
                w->reader = s;
        if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK) {
                log_error("store %s: cannot open a read connection", path);
                return -EIO;
        }
        sqlite3_busy_timeout(s->db, 5000);
        return exec(s, "PRAGMA query_only = ON;");
}

int store_open(const char *path, struct store **ret)
{
        struct store *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        /* Versions of two stores of one process never meet (caches that
         * outlive a store cannot mistake another's for it). */
        static _Atomic uint64_t epochs;
        atomic_store(&s->version, (atomic_fetch_add(&epochs, 1) + 1) << 40);
        pthread_mutex_init(&s->lock, NULL);
        pthread_cond_init(&s->committed_cond, NULL);
        if (sqlite3_open_v2(path, &s->db,
                            SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
                log_error("store %s: cannot open: %s", path,
                          s->db ? sqlite3_errmsg(s->db) : "out of memory");
                r = -EIO;
                goto fail;
        }
        sqlite3_busy_timeout(s->db, 5000);
        r = exec(s, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
                    "PRAGMA foreign_keys = ON;");
        if (r == 0)
                r = migrate(s);
        if (r == 0)
                r = load_key(s);
        for (size_t i = 0; i < STORE_READERS && r == 0; i++)
                r = open_reader(path, s, i);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        store_free(s);
        return r;
}

void store_free(struct store *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < STORE_READERS; i++)
                store_free(s->readers[i]);
        for (size_t i = 0; i < s->n_stmts; i++)
                sqlite3_finalize(s->stmts[i].st);
        free(s->stmts);
        sqlite3_close(s->db);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->committed_cond);
        free(s->hc);
        free(s->hc_seen);
        free(s->hc_dirty);
        free(s);
}

/* One broker per SQLite file: no other process's changes to watch for. */
int store_watch(struct store *s, store_watch_fn fn, void *ud)
{
        (void)s;
        (void)fn;
        (void)ud;
        return 0;
}

const struct id_key *store_id_key(struct store *s)
{
        return &s->key;
}

/* ---- accounts and keys ---- */

static void row_account(sqlite3_stmt *st, struct account *a)
{
        memset(a, 0, sizeof(*a));
        a->id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, a->name, sizeof(a->name));
        a->tier = (enum tier)sqlite3_column_int(st, 2);
        a->created_at = sqlite3_column_int64(st, 3);
}

int store_account_create(struct store *s, const char *name, enum tier tier, struct account *ret)
{
        static const char sql[] =
                "INSERT INTO accounts (name, tier, created_at) VALUES (?,?,?)";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, tier);
        sqlite3_bind_int64(st, 3, now);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_CONSTRAINT)
                return end(s, -EEXIST);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot create account"));
        memset(ret, 0, sizeof(*ret));
        ret->id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        util_strlcpy(ret->name, name, sizeof(ret->name));
        ret->tier = tier;
        ret->created_at = now;
        r = event(s, now, "account.created", ret->id, ret->id, name);
        return end(s, r);
}

typedef void (*row_fn)(sqlite3_stmt *st, void *item);

/* Runs a one-row SELECT keyed by a text parameter: 0, -ENOENT or -EIO. */
static int one_by_text(struct store *s, const char *sql, const char *key, row_fn fn, void *ret,
                       const char *what)
{
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        fn(st, ret);
                        r = 0;
                } else if (rc != SQLITE_DONE) {
                        r = db_err(s, what);
                }
        }
        unlock(s);
        return r;
}

static void row_account_cb(sqlite3_stmt *st, void *item)
{
        row_account(st, item);
}

int store_account_by_name(struct store *s, const char *name, struct account *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_account_by_name(pick_reader(s), name, ret);
        static const char sql[] =
                "SELECT id, name, tier, created_at FROM accounts WHERE name = ?";
        return one_by_text(s, sql, name, row_account_cb, ret, "cannot read account");
}

/* Collects rows of a SELECT into a growing array of elem_size items. */

static int collect(struct store *s, sqlite3_stmt *st, size_t elem_size, row_fn fn, void **ret,
                   size_t *ret_n)
{
        char *arr = NULL;
        size_t n = 0, cap = 0;
        int rc;

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 16;
                        char *na = realloc(arr, ncap * elem_size);
                        if (!na) {
                                free(arr);
                                return -ENOMEM;
                        }
                        arr = na;
                        cap = ncap;
                }
                fn(st, arr + n * elem_size);
                n++;
        }
        if (rc != SQLITE_DONE) {
                free(arr);
                return db_err(s, "cannot read rows");
        }
        *ret = arr;
        *ret_n = n;
        return 0;
}

int store_account_list(struct store *s, struct account **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_account_list(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT id, name, tier, created_at FROM accounts ORDER BY id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_account_cb, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_key_create(struct store *s, uint64_t account_id, const char *prefix,
                     const uint8_t hash[32], int read_only, uint64_t *ret_id)
{
        static const char sql[] = "INSERT INTO api_keys (account_id, prefix, hash, created_at,"
                                  " read_only) VALUES (?,?,?,?,?)";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, hash, 32, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        sqlite3_bind_int(st, 5, read_only ? 1 : 0);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot create key"));
        *ret_id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        r = event(s, now, "key.created", account_id, *ret_id, prefix);
        return end(s, r);
}

int store_key_find(struct store *s, const char *prefix, struct api_key *ret, size_t max,
                   size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_key_find(pick_reader(s), prefix, ret, max, ret_n);
        static const char sql[] =
                "SELECT k.id, k.account_id, a.tier, k.hash, k.read_only FROM api_keys k"
                " JOIN accounts a ON a.id = k.account_id"
                " WHERE k.prefix = ? AND k.revoked_at IS NULL LIMIT 8";
        size_t n = 0;
        int rc, r = 0;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                unlock(s);
                return -EIO;
        }
        sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < max) {
                struct api_key *k = &ret[n++];
                k->id = (uint64_t)sqlite3_column_int64(st, 0);
                k->account_id = (uint64_t)sqlite3_column_int64(st, 1);
                k->tier = (enum tier)sqlite3_column_int(st, 2);
                memset(k->hash, 0, 32);
                if (sqlite3_column_bytes(st, 3) == 32)
                        memcpy(k->hash, sqlite3_column_blob(st, 3), 32);
                k->read_only = sqlite3_column_int(st, 4);
        }
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                r = db_err(s, "cannot read keys");
        unlock(s);
        *ret_n = n;
        return r;
}

static void row_key_info(sqlite3_stmt *st, void *item)
{
        struct api_key_info *k = item;
        memset(k, 0, sizeof(*k));
        k->id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, k->prefix, sizeof(k->prefix));
        k->read_only = sqlite3_column_int(st, 2);
        k->created_at = sqlite3_column_int64(st, 3);
        k->revoked_at = sqlite3_column_type(st, 4) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 4);
}

int store_key_list(struct store *s, uint64_t account_id, struct api_key_info **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_key_list(pick_reader(s), account_id, ret, ret_n);
        static const char sql[] = "SELECT id, prefix, read_only, created_at, revoked_at"
                                  " FROM api_keys WHERE account_id = ? ORDER BY id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        r = st ? collect(s, st, sizeof(**ret), row_key_info, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_key_revoke(struct store *s, uint64_t account_id, uint64_t key_id)
{
        static const char sql[] = "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2"
                                  " AND account_id = ?3 AND revoked_at IS NULL";
        static const char sel[] = "SELECT prefix FROM api_keys WHERE id = ?1 AND account_id = ?2";
        int64_t now = util_now_ms();
        char prefix[32];
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)key_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, -ENOENT);
        col_text(st, 0, prefix, sizeof(prefix));
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)key_id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)account_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot revoke key"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, 0); /* already revoked: nothing to record */
        r = event(s, now, "key.revoked", account_id, key_id, prefix);
        return end(s, r);
}

/* ---- hosts ---- */

#define HOST_COLS                                                                         \
        "h.id, h.name, h.site, h.underlay_ip, h.boot_id, h.agent_version, h.hv_type,"     \
        " h.vcpus, h.ram_mb, h.disk_gb, h.generation, h.applied_generation, h.last_seen," \
        " h.draining, h.obs_domains, h.obs_vcpus, h.obs_ram_mb, h.guests, h.vcpus_used,"  \
        " h.ram_mb_used, h.disk_gb_used, h.hdd_gb, h.hdd_gb_used"

static void row_host(sqlite3_stmt *st, void *item)
{
        struct host *h = item;
        memset(h, 0, sizeof(*h));
        h->id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, h->name, sizeof(h->name));
        col_text(st, 2, h->site, sizeof(h->site));
        col_text(st, 3, h->underlay_ip, sizeof(h->underlay_ip));
        col_text(st, 4, h->boot_id, sizeof(h->boot_id));
        col_text(st, 5, h->agent_version, sizeof(h->agent_version));
        col_text(st, 6, h->hv_type, sizeof(h->hv_type));
        h->vcpus = (uint32_t)sqlite3_column_int64(st, 7);
        h->ram_mb = (uint64_t)sqlite3_column_int64(st, 8);
        h->disk_gb = (uint64_t)sqlite3_column_int64(st, 9);
        h->generation = (uint64_t)sqlite3_column_int64(st, 10);
        h->applied_generation = (uint64_t)sqlite3_column_int64(st, 11);
        h->last_seen = sqlite3_column_int64(st, 12);
        h->draining = sqlite3_column_int(st, 13);
        h->obs_domains = (uint32_t)sqlite3_column_int64(st, 14);
        h->obs_vcpus = (uint32_t)sqlite3_column_int64(st, 15);
        h->obs_ram_mb = (uint64_t)sqlite3_column_int64(st, 16);
        h->guests = (uint32_t)sqlite3_column_int64(st, 17);
        h->vcpus_used = (uint32_t)sqlite3_column_int64(st, 18);
        h->ram_mb_used = (uint64_t)sqlite3_column_int64(st, 19);
        h->disk_gb_used = (uint64_t)sqlite3_column_int64(st, 20);
        h->hdd_gb = (uint64_t)sqlite3_column_int64(st, 21);
        h->hdd_gb_used = (uint64_t)sqlite3_column_int64(st, 22);
}

/* A site an agent names exists from then on (named after its slug until
 * an admin names it). */
static int site_ensure(struct store *s, const char *slug, int64_t now)
{
        static const char sql[] =
                "INSERT OR IGNORE INTO sites (slug, name, created_at) VALUES (?1, ?1, ?2)";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, slug, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot record site");
}

int store_host_hello(struct store *s, const struct msg_hello *h, int64_t now,
                     uint64_t *ret_host_id, int *ret_rebooted)
{
        static const char sel[] = "SELECT id, boot_id FROM hosts WHERE name = ?";
        static const char ins[] =
                "INSERT INTO hosts (name, site, underlay_ip, boot_id, agent_version, hv_type,"
                " vcpus, ram_mb, disk_gb, last_seen, created_at, hdd_gb)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
        static const char upd[] =
                "UPDATE hosts SET site = ?2, underlay_ip = ?3, boot_id = ?4, agent_version = ?5,"
                " hv_type = ?6, vcpus = ?7, ram_mb = ?8, disk_gb = ?9, last_seen = ?10,"
                " hdd_gb = ?12, generation = generation + 1 WHERE id = ?1";
        uint64_t id = 0;
        int rebooted = 0, r = begin(s);
        char old_boot[TMSG_STR] = "";
        sqlite3_stmt *st;

        if (r < 0)
                return r;
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, h->host_id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                id = (uint64_t)sqlite3_column_int64(st, 0);
                col_text(st, 1, old_boot, sizeof(old_boot));
        }
        if (!(st = stmt(s, id ? upd : ins)))
                return end(s, -EIO);
        int base = id ? 1 : 0;
        if (id)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        else
                sqlite3_bind_text(st, 1, h->host_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, h->site, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, h->underlay_ip, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, h->boot_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, h->agent_version, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, h->hv_type, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, h->vcpus);
        sqlite3_bind_int64(st, 8, (sqlite3_int64)h->ram_mb);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)h->disk_gb);
        sqlite3_bind_int64(st, 10, now);
        if (!base)
                sqlite3_bind_int64(st, 11, now);
        sqlite3_bind_int64(st, 12, (sqlite3_int64)h->hdd_gb);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record host"));
        if (!id)
                id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        hc_mark(s, id);
        if (!base) {
                r = site_ensure(s, h->site, now);
                if (r == 0)
                        r = event(s, now, "host.joined", 0, id, h->host_id);
        } else if ((r = site_ensure(s, h->site, now)) < 0) {
                return end(s, r);
        } else if (strcmp(old_boot, h->boot_id) != 0) {
                rebooted = 1;
                r = event(s, now, "host.rebooted", 0, id, h->host_id);
        }
        if (r < 0)
                return end(s, r);
        *ret_host_id = id;
        *ret_rebooted = rebooted;
        return end(s, 0);
}

int store_host_by_name(struct store *s, const char *name, struct host *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_by_name(pick_reader(s), name, ret);
        static const char sql[] = "SELECT " HOST_COLS " FROM hosts h WHERE h.name = ?";
        return one_by_text(s, sql, name, row_host, ret, "cannot read host");
}

int store_host_lookup(struct store *s, const char *name, uint64_t *ret_id, char *boot_id,
                      size_t boot_id_len)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_lookup(pick_reader(s), name, ret_id, boot_id, boot_id_len);
        static const char sql[] = "SELECT id, boot_id FROM hosts WHERE name = ?";
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        *ret_id = (uint64_t)sqlite3_column_int64(st, 0);
                        col_text(st, 1, boot_id, boot_id_len);
                        r = 0;
                } else if (rc != SQLITE_DONE) {
                        r = db_err(s, "cannot read host");
                }
        }
        unlock(s);
        return r;
}

int store_host_generation(struct store *s, uint64_t host_id, uint64_t *ret_gen)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_generation(pick_reader(s), host_id, ret_gen);
        static const char sql[] = "SELECT generation FROM hosts WHERE id = ?";
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        *ret_gen = (uint64_t)sqlite3_column_int64(st, 0);
                        r = 0;
                }
        }
        unlock(s);
        return r;
}

int store_host_list(struct store *s, struct host **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_list(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT " HOST_COLS " FROM hosts h ORDER BY h.name";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_host, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

static void row_site(sqlite3_stmt *st, void *item)
{
        col_text(st, 0, item, TMSG_STR);
}

int store_site_list(struct store *s, char (**ret)[TMSG_STR], size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_site_list(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT DISTINCT site FROM hosts ORDER BY site";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, TMSG_STR, row_site, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

void store_commit_stats(struct store *s, uint64_t *ret_commits, uint64_t *ret_writes)
{
        pthread_mutex_lock(&s->lock);
        *ret_commits = s->n_commits;
        *ret_writes = s->n_writes;
        pthread_mutex_unlock(&s->lock);
}

void store_set_seen_slack(struct store *s, int64_t ms)
{
        rlock(s);
        s->seen_slack_ms = ms < 0 ? 0 : ms;
        unlock(s);
}

int store_hosts_touch(struct store *s, const uint64_t *ids, size_t n, int64_t now)
{
        static const char sql[] = "UPDATE hosts SET last_seen = MAX(last_seen, ?) WHERE id = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r == 0; i++) {
                sqlite3_stmt *st = stmt(s, sql);
                if (!st)
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, now);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)ids[i]);
                if (sqlite3_step(st) != SQLITE_DONE)
                        r = db_err(s, "cannot touch host");
        }
        r = finish(s, r);
        for (size_t i = 0; i < n && r == 0 && s->hc_loaded; i++) {
                int found;
                size_t pos = hc_find(s, ids[i], &found);
                if (found && s->hc_seen[pos] < now)
                        s->hc_seen[pos] = now;
        }
        unlock(s);
        return r;
}

struct obs_row {
        uint64_t id, account_id;
        int state;
        uint64_t reboot_done, rebuild_done, resize_done;
        int rescue;
        char error[TMSG_ERR];
        int deleted;
        int observed; /* reported by its host at least once */
        uint64_t restore_done;
        int snap_pending; /* its snapshots in state creating or deleting */
};

static void row_obs(sqlite3_stmt *st, void *item)
{
        struct obs_row *o = item;
        o->id = (uint64_t)sqlite3_column_int64(st, 0);
        o->state = sqlite3_column_int(st, 1);
        o->reboot_done = (uint64_t)sqlite3_column_int64(st, 2);
        o->rebuild_done = (uint64_t)sqlite3_column_int64(st, 3);
        col_text(st, 4, o->error, sizeof(o->error));
        o->deleted = sqlite3_column_type(st, 5) != SQLITE_NULL;
        o->account_id = (uint64_t)sqlite3_column_int64(st, 6);
        o->observed = sqlite3_column_int(st, 7);
        o->resize_done = (uint64_t)sqlite3_column_int64(st, 8);
        o->rescue = sqlite3_column_int(st, 9);
        o->restore_done = (uint64_t)sqlite3_column_int64(st, 10);
        o->snap_pending = sqlite3_column_int(st, 11);
}

static int cmp_obs(const void *a, const void *b)
{
        const struct dom_observed *x = a, *y = b;
        return x->vm_id < y->vm_id ? -1 : x->vm_id > y->vm_id;
}

/* snapshots (see their section) */
static int snap_observe(struct store *s, uint64_t host_id, const struct obs_row *o,
                        const struct dom_observed *d, int64_t now);
static int snap_pending_sync(struct store *s, uint64_t vm_id);
static int snap_delete_all(struct store *s, uint64_t vm_id);
static int bump_generation(struct store *s, uint64_t host_id);

/* Records one reported domain against its row (inside the transaction). */
static int observe_one(struct store *s, uint64_t host_id, const struct obs_row *o,
                       const struct dom_observed *d, int64_t now)
{
        static const char upd[] =
                "UPDATE vms SET obs_state = ?1, obs_reboot_done = ?2, obs_rebuild_done = ?3,"
                " obs_error = ?4, obs_at = COALESCE(obs_at, CASE WHEN ?1 >= 0 THEN ?5 END),"
                " obs_resize_done = ?7, obs_rescue = ?8, obs_restore_done = ?9"
                " WHERE id = ?6"; /* obs_at: first seen present */
        static const char purge[] = "DELETE FROM vms WHERE id = ? AND deleted_at IS NOT NULL";
        sqlite3_stmt *st;

        if (o->deleted && (!d || d->state == POWER_UNKNOWN)) {
                /* Deleted, and gone from the host: forget it. */
                if (!(st = stmt(s, purge)))
                        return -EIO;
                sqlite3_bind_int64(st, 1, (sqlite3_int64)o->id);
                return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot purge vm");
        }
        int state = d && d->state != POWER_UNKNOWN ? (int)d->state : -1;
        const char *err = d ? d->error : "";
        uint64_t rb = d ? d->reboot_done : o->reboot_done;
        uint64_t rl = d ? d->rebuild_done : o->rebuild_done;
        uint64_t rs = d ? d->resize_done : o->resize_done;
        uint64_t rd = d ? d->restore_done : o->restore_done;
        int rescue = d ? d->rescue != 0 : o->rescue;
        int r;
        /* Snapshot work only where some is pending (snap_pending is exact):
         * the common report reads nothing more. */
        if (o->snap_pending > 0 && !o->deleted && d &&
            (r = snap_observe(s, host_id, o, d, now)) < 0)
                return r;
        if (state == o->state && rb == o->reboot_done && rl == o->rebuild_done &&
            rs == o->resize_done && rescue == o->rescue && rd == o->restore_done &&
            strcmp(err, o->error) == 0)
                return 0;
        if (!(st = stmt(s, upd)))
                return -EIO;
        sqlite3_bind_int(st, 1, state);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)rb);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)rl);
        sqlite3_bind_text(st, 4, err, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)o->id);
        sqlite3_bind_int64(st, 7, (sqlite3_int64)rs);
        sqlite3_bind_int(st, 8, rescue);
        sqlite3_bind_int64(st, 9, (sqlite3_int64)rd);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot record vm state");
        if (!o->observed && state >= 0 && !o->deleted) {
                /* Seen for the first time, so no longer being created: one
                 * in flight less on its host. (Only the first time: a guest
                 * that vanishes and comes back was never counted again.) */
                static const char fl[] =
                        "UPDATE hosts SET inflight = MAX(inflight - 1, 0)"
                        " WHERE id = (SELECT host_id FROM vms WHERE id = ?)";
                if (!(st = stmt(s, fl)))
                        return -EIO;
                sqlite3_bind_int64(st, 1, (sqlite3_int64)o->id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return db_err(s, "cannot update host");
        }
        if (state != o->state && !o->deleted)
                return event(s, now, "vps.power_observed", o->account_id, o->id,
                             state < 0 ? "absent" : power_to_string((enum power)state));
        return 0;
}

int store_host_observe(struct store *s, uint64_t host_id, const struct msg_sync *sync,
                       int64_t now)
{
        static const char host_upd[] =
                "UPDATE hosts SET last_seen = MAX(last_seen, ?1), applied_generation = ?2,"
                " obs_domains = ?3, obs_vcpus = ?4, obs_ram_mb = ?5 WHERE id = ?6"
                " AND (last_seen < ?1 - ?7 OR applied_generation != ?2 OR obs_domains != ?3"
                " OR obs_vcpus != ?4 OR obs_ram_mb != ?5)";
        static const char sel[] =
                "SELECT id, obs_state, obs_reboot_done, obs_rebuild_done, obs_error, deleted_at,"
                " account_id, obs_at IS NOT NULL, obs_resize_done, obs_rescue,"
                " obs_restore_done, snap_pending FROM vms WHERE host_id = ? ORDER BY id";
        static const char sel_one[] =
                "SELECT id, obs_state, obs_reboot_done, obs_rebuild_done, obs_error, deleted_at,"
                " account_id, obs_at IS NOT NULL, obs_resize_done, obs_rescue,"
                " obs_restore_done, snap_pending FROM vms WHERE host_id = ? AND id = ?";
        struct dom_observed *doms = NULL;
        struct obs_row *rows = NULL;
        size_t n_rows = 0, j = 0;
        sqlite3_stmt *st;
        int r;

        if (sync->n_domains) {
                doms = malloc(sync->n_domains * sizeof(*doms));
                if (!doms)
                        return -ENOMEM;
                memcpy(doms, sync->domains, sync->n_domains * sizeof(*doms));
                qsort(doms, sync->n_domains, sizeof(*doms), cmp_obs);
        }
        if ((r = begin(s)) < 0) {
                free(doms);
                return r;
        }
        const int changes_before = sqlite3_total_changes(s->db);
        if (!(st = stmt(s, host_upd))) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)sync->applied_generation);
        sqlite3_bind_int64(st, 3, sync->n_present);
        sqlite3_bind_int64(st, 4, sync->vcpus_used);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)sync->ram_mb_used);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)host_id);
        sqlite3_bind_int64(st, 7, s->seen_slack_ms);
        if (sqlite3_step(st) != SQLITE_DONE) {
                r = db_err(s, "cannot update host");
                goto out;
        }
        if (sync->partial) {
                /* Only what changed: one row each. */
                for (size_t i = 0; i < sync->n_domains && r == 0; i++) {
                        struct obs_row o;
                        if (!(st = stmt(s, sel_one))) {
                                r = -EIO;
                                break;
                        }
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64)doms[i].vm_id);
                        int rc = sqlite3_step(st);
                        if (rc == SQLITE_DONE)
                                continue; /* not ours to record */
                        if (rc != SQLITE_ROW) {
                                r = db_err(s, "cannot read vm");
                                break;
                        }
                        row_obs(st, &o);
                        r = observe_one(s, host_id, &o, &doms[i], now);
                }
                goto out;
        }
        if (!(st = stmt(s, sel))) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        r = collect(s, st, sizeof(*rows), row_obs, (void **)&rows, &n_rows);
        if (r < 0)
                goto out;
        /* A full report: both sorted by id, walk them together. A row the
         * report lacks is absent from the host. Domains the broker does not
         * know are the agent's to remove; we only record. */
        for (size_t i = 0; i < n_rows && r == 0; i++) {
                const struct dom_observed *d = NULL;
                while (j < sync->n_domains && doms[j].vm_id < rows[i].id)
                        j++;
                if (j < sync->n_domains && doms[j].vm_id == rows[i].id)
                        d = &doms[j];
                r = observe_one(s, host_id, &rows[i], d, now);
        }
out:
        /* last_seen, or a guest's first sighting (in flight) changed it */
        if (sqlite3_total_changes(s->db) != changes_before)
                hc_mark(s, host_id);
        free(rows);
        free(doms);
        return end(s, r);
}

/* A guest's host name as the agent takes it (a name with dots: an FQDN
 * whose first label is the host name): labels of 1 to 63 letters, digits
 * and '-', not at either end. A VM's name need not be one (a Tilaa VM's is
 * for internal use, and the Tilaa API may rename a native VM "My server");
 * one that is not gives the guest "vps-ID". */
static void host_name_fix(char *h, size_t len, uint64_t vm_id)
{
        size_t label = 0;
        int ok = h[0] != '\0';
        for (const char *p = h; *p && ok; p++) {
                if (*p == '.') {
                        ok = label > 0 && p[-1] != '-';
                        label = 0;
                } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                           (*p >= '0' && *p <= '9') || (*p == '-' && label > 0)) {
                        ok = ++label <= 63;
                } else {
                        ok = 0;
                }
        }
        if (!ok || label == 0 || h[strlen(h) - 1] == '-')
                snprintf(h, len, "vps-%llu", (unsigned long long)vm_id);
}

static void row_desired(sqlite3_stmt *st, void *item)
{
        struct dom_desired *d = item;
        memset(d, 0, sizeof(*d));
        d->vm_id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, d->hostname, sizeof(d->hostname));
        host_name_fix(d->hostname, sizeof(d->hostname), d->vm_id);
        d->vcpus = (uint32_t)sqlite3_column_int64(st, 2);
        d->ram_mb = (uint32_t)sqlite3_column_int64(st, 3);
        d->disk_gb = (uint32_t)sqlite3_column_int64(st, 4);
        d->power = sqlite3_column_int(st, 5) == VM_WANT_RUNNING ? POWER_RUNNING : POWER_STOPPED;
        d->reboot_seq = (uint64_t)sqlite3_column_int64(st, 6);
        d->rebuild_seq = (uint64_t)sqlite3_column_int64(st, 7);
        col_text(st, 8, d->image, sizeof(d->image));
        d->storage = sqlite3_column_int(st, 9) == STORAGE_HDD ? STORAGE_HDD : STORAGE_SSD;
        d->force_off = sqlite3_column_int(st, 5) == VM_WANT_OFF;
        d->resize_seq = (uint64_t)sqlite3_column_int64(st, 10);
        d->rescue = sqlite3_column_int(st, 11) != 0;
        d->cpu_cap = (uint32_t)sqlite3_column_int(st, 12);
        d->restore_seq = (uint64_t)sqlite3_column_int64(st, 13);
        d->restore_snap = (uint64_t)sqlite3_column_int64(st, 14);
        d->source_vm = (uint64_t)sqlite3_column_int64(st, 15);
        d->source_snap = (uint64_t)sqlite3_column_int64(st, 16);
}

/* Fills each domain's snapshots (domains sorted by vm id) from one query
 * for the host, sorted the same way. */
static int desired_snaps(struct store *s, uint64_t host_id, struct msg_sync_reply *ret)
{
        static const char sql[] =
                "SELECT s.vm_id, s.id, s.online FROM snapshots s JOIN vms v ON v.id = s.vm_id"
                " WHERE v.host_id = ? AND v.deleted_at IS NULL AND s.state != 'deleting'"
                " ORDER BY s.vm_id, s.id";
        sqlite3_stmt *st = stmt(s, sql);
        size_t j = 0;
        int rc;
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint64_t vm_id = (uint64_t)sqlite3_column_int64(st, 0);
                while (j < ret->n_domains && ret->domains[j].vm_id < vm_id)
                        j++;
                if (j == ret->n_domains)
                        break;
                struct dom_desired *d = &ret->domains[j];
                if (d->vm_id != vm_id)
                        continue;
                if (d->n_snaps == TMSG_MAX_SNAPS) {
                        /* never cut the list: the agent would delete the rest */
                        log_error("vm %llu: more snapshots than the link carries (%u)",
                                  (unsigned long long)vm_id, TMSG_MAX_SNAPS);
                        sqlite3_reset(st);
                        return -E2BIG;
                }
                d->snaps[d->n_snaps].id = (uint64_t)sqlite3_column_int64(st, 1);
                d->snaps[d->n_snaps].online = sqlite3_column_int(st, 2) != 0;
                d->n_snaps++;
        }
        sqlite3_reset(st);
        return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_err(s, "cannot read snapshots");
}

static void row_img_desired(sqlite3_stmt *st, void *item)
{
        struct img_desired *g = item;
        memset(g, 0, sizeof(*g));
        col_text(st, 0, g->slug, sizeof(g->slug));
        col_text(st, 1, g->url, sizeof(g->url));
        col_text(st, 2, g->sha256, sizeof(g->sha256));
        col_text(st, 3, g->format, sizeof(g->format));
}

/* "10.0.0.5" from the prefix "10.0.0.0/24": "10.0.0.5/24". */
static void addr_with_len(const char *addr, const char *prefix, int v6, char *out, size_t len)
{
        const char *slash = strchr(prefix, '/');
        snprintf(out, len, "%s/%s", addr, slash ? slash + 1 : v6 ? "128" : "32");
}

static int cmp_u32(const void *a, const void *b)
{
        uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
        return x < y ? -1 : x > y;
}

/* Grows *arr (of elem bytes each) to hold one more than n: 0, -ENOMEM. */
static int grow(void **arr, size_t *cap, size_t n, size_t elem)
{
        if (n < *cap)
                return 0;
        size_t ncap = *cap ? *cap * 2 : 16;
        void *na = realloc(*arr, ncap * elem);
        if (!na)
                return -ENOMEM;
        *arr = na;
        *cap = ncap;
        return 0;
}

/* Fills each domain's NICs (domains sorted by vm id) and the host's
 * private networks with their remote hosts and FDB entries: two queries
 * for the host, however many guests. */
static int desired_nets(struct store *s, uint64_t host_id, struct msg_sync_reply *ret)
{
        static const char local[] =
                "SELECT n.vm_id, COALESCE(w.vni, 0), n.mac, n.ipv4, n.ipv6, w.cidr, p.ipv4,"
                " p.gateway4, p.ipv6, p.gateway6 FROM nics n JOIN vms v ON v.id = n.vm_id"
                " LEFT JOIN networks w ON w.id = n.network_id"
                " LEFT JOIN ip_pools p ON n.network_id = 0 AND p.site = v.site"
                " WHERE v.host_id = ? AND v.deleted_at IS NULL ORDER BY n.vm_id, n.position";
        /* the other hosts' guests on the networks that have one here */
        static const char remote[] =
                "SELECT w.vni, n.mac, h.underlay_ip FROM nics n JOIN vms v ON v.id = n.vm_id"
                " JOIN hosts h ON h.id = v.host_id JOIN networks w ON w.id = n.network_id"
                " WHERE v.deleted_at IS NULL AND v.host_id != ?1 AND n.network_id IN"
                " (SELECT n2.network_id FROM nics n2 JOIN vms v2 ON v2.id = n2.vm_id"
                " WHERE v2.host_id = ?1 AND v2.deleted_at IS NULL AND n2.network_id != 0)"
                " ORDER BY w.vni, h.underlay_ip, n.mac";
        uint32_t *vnis = NULL;
        size_t n_vnis = 0, cap_vnis = 0, cap_remotes = 0, cap_fdb = 0, j = 0;
        int rc = SQLITE_DONE, r = 0;
        sqlite3_stmt *st = stmt(s, local);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint64_t vm_id = (uint64_t)sqlite3_column_int64(st, 0);
                uint32_t vni = (uint32_t)sqlite3_column_int64(st, 1);
                char v4[TMSG_IP], v6[TMSG_IP], net[TMSG_IP], pool4[TMSG_IP], pool6[TMSG_IP];
                while (j < ret->n_domains && ret->domains[j].vm_id < vm_id)
                        j++;
                if (j == ret->n_domains || ret->domains[j].vm_id != vm_id)
                        continue;
                struct dom_desired *d = &ret->domains[j];
                if (d->n_nics == TMSG_MAX_NICS) {
                        log_error("vm %llu: more NICs than the link carries (%u)",
                                  (unsigned long long)vm_id, TMSG_MAX_NICS);
                        r = -E2BIG;
                        break;
                }
                struct nic_desired *c = &d->nics[d->n_nics++];
                c->vni = vni;
                col_text(st, 2, c->mac, sizeof(c->mac));
                col_text(st, 3, v4, sizeof(v4));
                col_text(st, 4, v6, sizeof(v6));
                col_text(st, 5, net, sizeof(net));
                col_text(st, 6, pool4, sizeof(pool4));
                col_text(st, 8, pool6, sizeof(pool6));
                if (v4[0])
                        addr_with_len(v4, vni ? net : pool4, 0, c->addrs[c->n_addrs++],
                                      sizeof(c->addrs[0]));
                if (v6[0])
                        addr_with_len(v6, pool6, 1, c->addrs[c->n_addrs++], sizeof(c->addrs[0]));
                if (!vni && v4[0])
                        col_text(st, 7, c->gateway4, sizeof(c->gateway4));
                if (!vni && v6[0])
                        col_text(st, 9, c->gateway6, sizeof(c->gateway6));
                if (vni && (r = grow((void **)&vnis, &cap_vnis, n_vnis, sizeof(*vnis))) == 0)
                        vnis[n_vnis++] = vni;
        }
        sqlite3_reset(st);
        if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
                r = db_err(s, "cannot read NICs");
        if (r < 0 || n_vnis == 0) {
                free(vnis);
                return r;
        }
        /* each network once, by vni */
        qsort(vnis, n_vnis, sizeof(*vnis), cmp_u32);
        size_t n_nets = 0;
        for (size_t i = 0; i < n_vnis; i++)
                if (n_nets == 0 || vnis[n_nets - 1] != vnis[i])
                        vnis[n_nets++] = vnis[i];
        if (n_nets > TMSG_MAX_NETWORKS) {
                log_error("host %llu: %zu private networks exceed the link's limit of %u",
                          (unsigned long long)host_id, n_nets, TMSG_MAX_NETWORKS);
                free(vnis);
                return -E2BIG;
        }
        ret->networks = calloc(n_nets, sizeof(*ret->networks));
        if (!ret->networks) {
                free(vnis);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n_nets; i++) {
                ret->networks[i].vni = vnis[i];
                ret->networks[i].mtu = STORE_NET_MTU;
        }
        ret->n_networks = n_nets;
        free(vnis);
        if (!(st = stmt(s, remote)))
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        size_t k = 0, started = SIZE_MAX;
        while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
                uint32_t vni = (uint32_t)sqlite3_column_int64(st, 0);
                char under[TMSG_IP];
                col_text(st, 2, under, sizeof(under));
                while (k < n_nets && ret->networks[k].vni < vni)
                        k++;
                if (k == n_nets || ret->networks[k].vni != vni || !under[0])
                        continue; /* a host without an underlay address cannot be reached */
                struct net_desired *w = &ret->networks[k];
                if (started != k) {
                        started = k;
                        w->first_remote = ret->n_remotes;
                        w->first_fdb = ret->n_fdb;
                }
                if (ret->n_fdb == TMSG_MAX_FDB || ret->n_remotes == TMSG_MAX_REMOTES) {
                        log_error("host %llu: more remote guests or hosts than the link carries",
                                  (unsigned long long)host_id);
                        r = -E2BIG;
                        break;
                }
                if (w->n_remotes == 0 ||
                    strcmp(ret->remotes[ret->n_remotes - 1], under) != 0) {
                        if ((r = grow((void **)&ret->remotes, &cap_remotes, ret->n_remotes,
                                      sizeof(*ret->remotes))) < 0)
                                break;
                        util_strlcpy(ret->remotes[ret->n_remotes++], under, TMSG_IP);
                        w->n_remotes++;
                }
                if ((r = grow((void **)&ret->fdb, &cap_fdb, ret->n_fdb, sizeof(*ret->fdb))) < 0)
                        break;
                struct fdb_desired *e = &ret->fdb[ret->n_fdb++];
                col_text(st, 1, e->mac, sizeof(e->mac));
                util_strlcpy(e->host, under, sizeof(e->host));
                w->n_fdb++;
        }
        sqlite3_reset(st);
        if (r == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW)
                r = db_err(s, "cannot read remote NICs");
        return r;
}

/* Frees what store_host_desired() filled and empties it. */
static void desired_free(struct msg_sync_reply *ret)
{
        free(ret->domains);
        free(ret->images);
        free(ret->networks);
        free(ret->remotes);
        free(ret->fdb);
        memset(ret, 0, sizeof(*ret));
}

int store_host_desired(struct store *s, uint64_t host_id, struct msg_sync_reply *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_desired(pick_reader(s), host_id, ret);
        static const char gen[] = "SELECT generation FROM hosts WHERE id = ?";
        static const char sql[] =
                /* the host name: a VM with a DNS name (Tilaa's dns_name; its
                 * name is for internal use, "My server (2)") is its first
                 * label, as in its seed (store_vm_seed) */
                "SELECT id, CASE WHEN COALESCE(dns_name, '') = '' THEN name"
                " ELSE substr(dns_name, 1, instr(dns_name || '.', '.') - 1) END,"
                " vcpus, ram_mb, disk_gb, want, reboot_seq, rebuild_seq, image,"
                " storage, resize_seq, rescue, cpu_cap, restore_seq, restore_snap, source_vm,"
                " source_snap FROM vms WHERE host_id = ? AND deleted_at IS NULL"
                " ORDER BY id";
        static const char img_sql[] =
                "SELECT slug, url, sha256, format FROM images WHERE slug IN"
                " (SELECT DISTINCT image FROM vms WHERE host_id = ? AND deleted_at IS NULL)"
                " ORDER BY slug";
        int r = 0;

        memset(ret, 0, sizeof(*ret));
        rlock(s);
        /* one snapshot for the generation and the rows it numbers (a read
         * transaction: never BEGIN IMMEDIATE here, it would take the
         * writer's lock) */
        int snap = s->reader == NULL && !s->in_txn && exec(s, "BEGIN") == 0;
        sqlite3_stmt *st = stmt(s, gen);
        if (!st) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        if (sqlite3_step(st) != SQLITE_ROW) {
                r = -ENOENT;
                goto out;
        }
        ret->generation = (uint64_t)sqlite3_column_int64(st, 0);
        if (!(st = stmt(s, sql))) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        r = collect(s, st, sizeof(*ret->domains), row_desired, (void **)&ret->domains,
                    &ret->n_domains);
        if (r == 0 && ret->n_domains > TMSG_MAX_DOMAINS) {
                log_error("host %llu: %zu domains exceed the link's limit of %u",
                          (unsigned long long)host_id, ret->n_domains, TMSG_MAX_DOMAINS);
                r = -E2BIG;
        }
        if (r == 0 && ret->n_domains)
                r = desired_snaps(s, host_id, ret);
        if (r == 0) {
                if ((st = stmt(s, img_sql))) {
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
                        r = collect(s, st, sizeof(*ret->images), row_img_desired,
                                    (void **)&ret->images, &ret->n_images);
                } else {
                        r = -EIO;
                }
        }
        if (r == 0 && ret->n_images > TMSG_MAX_IMAGES)
                r = -E2BIG;
        if (r == 0 && ret->n_domains)
                r = desired_nets(s, host_id, ret);
out:
        if (r < 0)
                desired_free(ret);
        reset_all(s);
        if (snap)
                exec(s, "COMMIT");
        unlock(s);
        return r;
}

/* ---- vms ---- */

#define VM_COLS                                                                           \
        "v.id, v.account_id, v.name, v.size, v.image, v.site, v.host_id, v.vcpus,"       \
        " v.ram_mb, v.disk_gb, v.want, v.reboot_seq, v.rebuild_seq, v.created_at,"       \
        " v.obs_state, v.obs_reboot_done, v.obs_rebuild_done, v.obs_error, h.last_seen,"   \
        " v.obs_at IS NOT NULL, v.storage, v.aa_group, v.resize_seq, v.obs_resize_done,"   \
        " v.rescue, v.obs_rescue, v.cpu_cap, v.restore_seq, v.restore_snap,"           \
        " v.obs_restore_done, CASE WHEN v.snap_pending > 0 THEN EXISTS (SELECT 1 FROM"     \
        " snapshots s WHERE s.vm_id = v.id AND s.state = 'creating' AND s.online = 0)"    \
        " ELSE 0 END, (SELECT group_concat(network_id) FROM (SELECT network_id FROM nics"  \
        " WHERE vm_id = v.id AND network_id != 0 ORDER BY position))"

static void row_vm(sqlite3_stmt *st, void *item)
{
        struct vm *v = item;
        memset(v, 0, sizeof(*v));
        v->id = (uint64_t)sqlite3_column_int64(st, 0);
        v->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, v->name, sizeof(v->name));
        col_text(st, 3, v->size, sizeof(v->size));
        col_text(st, 4, v->image, sizeof(v->image));
        col_text(st, 5, v->site, sizeof(v->site));
        v->host_id = (uint64_t)sqlite3_column_int64(st, 6);
        v->vcpus = (uint32_t)sqlite3_column_int64(st, 7);
        v->ram_mb = (uint32_t)sqlite3_column_int64(st, 8);
        v->disk_gb = (uint32_t)sqlite3_column_int64(st, 9);
        v->want = (enum vm_power_want)sqlite3_column_int(st, 10);
        v->reboot_seq = (uint64_t)sqlite3_column_int64(st, 11);
        v->rebuild_seq = (uint64_t)sqlite3_column_int64(st, 12);
        v->created_at = sqlite3_column_int64(st, 13);
        v->obs_state = sqlite3_column_int(st, 14);
        v->obs_reboot_done = (uint64_t)sqlite3_column_int64(st, 15);
        v->obs_rebuild_done = (uint64_t)sqlite3_column_int64(st, 16);
        col_text(st, 17, v->obs_error, sizeof(v->obs_error));
        v->host_last_seen = sqlite3_column_int64(st, 18);
        v->observed = sqlite3_column_int(st, 19);
        v->storage = sqlite3_column_int(st, 20) == STORAGE_HDD ? STORAGE_HDD : STORAGE_SSD;
        col_text(st, 21, v->group, sizeof(v->group));
        v->resize_seq = (uint64_t)sqlite3_column_int64(st, 22);
        v->obs_resize_done = (uint64_t)sqlite3_column_int64(st, 23);
        v->rescue = sqlite3_column_int(st, 24) != 0;
        v->obs_rescue = sqlite3_column_int(st, 25) != 0;
        v->cpu_cap = (uint32_t)sqlite3_column_int(st, 26);
        v->restore_seq = (uint64_t)sqlite3_column_int64(st, 27);
        v->restore_snap = (uint64_t)sqlite3_column_int64(st, 28);
        v->obs_restore_done = (uint64_t)sqlite3_column_int64(st, 29);
        v->snapshotting = sqlite3_column_int(st, 30) != 0;
        /* its private networks: "12,7" in attach order */
        const char *nets = (const char *)sqlite3_column_text(st, 31);
        while (nets && *nets && v->n_networks < TMSG_MAX_NICS) {
                char *end;
                v->networks[v->n_networks++] = strtoull(nets, &end, 10);
                nets = *end == ',' ? end + 1 : NULL;
        }
}

/* Reads one vm of an account inside the caller's lock. */
static int get_vm_locked(struct store *s, uint64_t account_id, uint64_t vm_id, struct vm *ret)
{
        static const char sql[] = "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                                  " WHERE v.id = ? AND v.account_id = ? AND v.deleted_at IS NULL";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                row_vm(st, ret);
                return 0;
        }
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read vm");
}

static int bump_generation(struct store *s, uint64_t host_id)
{
        static const char sql[] = "UPDATE hosts SET generation = generation + 1 WHERE id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot bump generation");
}

static int host_site(struct store *s, uint64_t host_id, char *buf, size_t len)
{
        static const char sql[] = "SELECT site FROM hosts WHERE id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return db_err(s, "cannot read host site");
        col_text(st, 0, buf, len);
        return 0;
}

/* Adds (sign 1) or gives back (sign -1) a guest's reservation on its host. */
static int reserve(struct store *s, uint64_t host_id, int sign, uint32_t vcpus, uint32_t ram_mb,
                   uint32_t disk_gb, enum storage storage, int inflight)
{
        static const char sql[] =
                "UPDATE hosts SET vcpus_used = MAX(vcpus_used + ?2, 0),"
                " ram_mb_used = MAX(ram_mb_used + ?3, 0),"
                " disk_gb_used = MAX(disk_gb_used + CASE WHEN ?7 = 0 THEN ?4 ELSE 0 END, 0),"
                " hdd_gb_used = MAX(hdd_gb_used + CASE WHEN ?7 = 1 THEN ?4 ELSE 0 END, 0),"
                " guests = MAX(guests + ?5, 0), inflight = MAX(inflight + ?6, 0),"
                " generation = generation + 1 WHERE id = ?1";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)sign * vcpus);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)sign * ram_mb);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)sign * disk_gb);
        sqlite3_bind_int64(st, 5, sign);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)sign * inflight);
        sqlite3_bind_int(st, 7, (int)storage);
        hc_mark(s, host_id);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot reserve capacity");
}

static int idem_claim(struct store *s, const struct idem *i, int status, uint64_t resource_id,
                      int64_t now);
/* NICs (see their section) */
static int nic_public(struct store *s, uint64_t vm_id, const char *site, char *why,
                      size_t why_len);
static int nic_attach(struct store *s, uint64_t account_id, uint64_t vm_id, uint64_t net_id,
                      int64_t now);
static int nics_release(struct store *s, uint64_t vm_id);

/* Marks the candidate hosts (sorted by id) that hold a guest of the
 * account's anti-affinity group. */
static int mark_group(struct store *s, const char *sql, const struct vm_new *req)
{
        sqlite3_stmt *st = stmt(s, sql);
        int rc;
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)req->account_id);
        sqlite3_bind_text(st, 2, req->group, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                int found;
                size_t pos = hc_find(s, (uint64_t)sqlite3_column_int64(st, 0), &found);
                if (found)
                        s->hc[pos].in_group = 1;
        }
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? 0 : db_err(s, "cannot read anti-affinity group");
}

/* Inside a transaction: the month price of `size` (0 when the size has
 * no price) and, when billing is enforced and the new price is more than
 * old_price, whether the account's credit covers a day of all its live
 * services with this one at the new price (vm_id: the vm resized, not
 * counted at its old price; 0 for an order): -EDQUOT (why says the
 * figures) if not. Decided in the transaction that makes the change, so
 * concurrent orders never spend the same credit twice. */
static int credit_check(struct store *s, uint64_t account_id, uint64_t vm_id, const char *size,
                        int64_t old_price, char *why, size_t why_len, int64_t *ret_price)
{
        static const char sql[] =
                "SELECT (SELECT credit_cents FROM accounts WHERE id = ?1),"
                " (SELECT COALESCE(SUM((b.price_month_cents * 24 + 365) / 730), 0)"
                "  FROM billable b WHERE b.account_id = ?1 AND b.deleted_at IS NULL"
                "  AND b.vm_id != ?3),"
                " (SELECT month_cents FROM prices WHERE size = ?2)";
        /* Without billing only the price is wanted: no sum over the
         * account's services on every order. */
        static const char price_sql[] = "SELECT 0, 0, (SELECT month_cents FROM prices WHERE size = ?2)";
        int enforced = atomic_load(&s->billing);
        sqlite3_stmt *st = stmt(s, enforced ? sql : price_sql);
        int64_t credit, daily, price;
        if (!st)
                return -EIO;
        if (enforced) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)vm_id);
        }
        sqlite3_bind_text(st, 2, size ? size : "", -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW) {
                sqlite3_reset(st);
                return db_err(s, "cannot read account credit");
        }
        credit = sqlite3_column_int64(st, 0); /* NULL (no such account): 0 */
        daily = sqlite3_column_int64(st, 1);
        price = sqlite3_column_int64(st, 2); /* NULL: 0, no price */
        sqlite3_reset(st);
        if (enforced && price > old_price &&
            credit < daily + store_day_charge(price)) {
                if (why) {
                        char c[MONEY_STR_MAX], d[MONEY_STR_MAX], o[MONEY_STR_MAX];
                        money_format(credit, c);
                        money_format(store_day_charge(price), d);
                        money_format(daily, o);
                        snprintf(why, why_len,
                                 "the account's credit (EUR %s) does not cover one day of this "
                                 "service (EUR %s) and of its other services (EUR %s a day)",
                                 c, d, o);
                }
                return -EDQUOT;
        }
        *ret_price = price;
        return 0;
}

int store_vm_create(struct store *s, const struct vm_new *req, int64_t now, int64_t live_after,
                    struct vm *ret)
{
        /* Every host (from the cache): the scheduler decides, inside the
         * same transaction that reserves the capacity it chose. */
        static const char site_sel[] = "SELECT id FROM sites WHERE slug = ?";
        static const char grp[] =
                "SELECT DISTINCT host_id FROM vms WHERE account_id = ?1 AND aa_group = ?2"
                " AND deleted_at IS NULL";
        static const char ins[] =
                "INSERT INTO vms (account_id, name, size, image, site, host_id, vcpus, ram_mb,"
                " disk_gb, want, created_at, storage, aa_group, ssh_keys, user_data, source_vm,"
                " source_snap, dns_name, admin_password, cpu_cap)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
        static const char bill[] =
                "INSERT INTO billable (vm_id, account_id, name, size, price_month_cents,"
                " created_at) VALUES (?,?,?,?,?,?)";
        /* A snapshot exists on its vm's host only: the new vm goes there. */
        static const char snap_src[] =
                "SELECT p.vm_id, v.host_id, p.disk_gb, p.image FROM snapshots p"
                " JOIN vms v ON v.id = p.vm_id WHERE p.id = ? AND p.account_id = ?"
                " AND p.state = 'ready' AND v.deleted_at IS NULL";
        static const char dep[] =
                "INSERT INTO deployments (account_id, template, version, name, vm_id, config,"
                " created_at) VALUES (?,?,?,?,?,?,?)";
        static const struct sched_params defaults = {
                .cpu_ratio = 4.0, .ram_ratio = 1.0, .disk_ratio = 1.0, .strategy = SCHED_SPREAD
        };
        struct sched_params sp = req->sched ? *req->sched : defaults;
        struct sched_result res;
        uint32_t site_id = 0;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        int64_t price = 0;
        if ((r = credit_check(s, req->account_id, 0, req->size, -1, req->why, req->why_len,
                              &price)) < 0)
                goto out;
        if (!s->hc_loaded && (r = hc_load(s)) < 0)
                goto out;
        if (req->site) {
                if (!(st = stmt(s, site_sel))) {
                        r = -EIO;
                        goto out;
                }
                sqlite3_bind_text(st, 1, req->site, -1, SQLITE_STATIC);
                /* an unknown site: no host is in it */
                site_id = sqlite3_step(st) == SQLITE_ROW ? (uint32_t)sqlite3_column_int64(st, 0)
                                                         : UINT32_MAX;
                sqlite3_reset(st);
        }
        /* Per request: live against this request's clock, no group yet. */
        for (size_t i = 0; i < s->n_hc; i++) {
                s->hc[i].live = s->hc_seen[i] > live_after;
                s->hc[i].in_group = 0;
        }
        if (req->group && (r = mark_group(s, grp, req)) < 0)
                goto out;
        sp.seed ^= (uint64_t)now;
        struct sched_req sr = { .site_id = site_id, .site = req->site,
                                .vcpus = req->vcpus, .ram_mb = req->ram_mb,
                                .disk_gb = req->disk_gb, .storage = req->storage,
                                .group = req->group };
        const struct sched_host *hosts = s->hc;
        size_t n_hosts = s->n_hc;
        uint64_t src_vm = 0;
        if (req->from_snap) {
                uint64_t src_host = 0;
                char src_image[TMSG_STR] = "";
                uint32_t src_disk = 0;
                if (!(st = stmt(s, snap_src))) {
                        r = -EIO;
                        goto out;
                }
                sqlite3_bind_int64(st, 1, (sqlite3_int64)req->from_snap);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)req->account_id);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        src_vm = (uint64_t)sqlite3_column_int64(st, 0);
                        src_host = (uint64_t)sqlite3_column_int64(st, 1);
                        src_disk = (uint32_t)sqlite3_column_int64(st, 2);
                        col_text(st, 3, src_image, sizeof(src_image));
                }
                sqlite3_reset(st);
                if (!src_vm) {
                        r = -ENOENT; /* none, another account's, or not ready */
                        goto out;
                }
                if (req->disk_gb < src_disk || strcmp(req->image, src_image) != 0) {
                        r = -EINVAL; /* the caller checks both first */
                        goto out;
                }
                hosts = NULL;
                for (size_t i = 0; i < s->n_hc && !hosts; i++)
                        if (s->hc[i].id == src_host)
                                hosts = &s->hc[i];
                if (!hosts) {
                        r = -EIO;
                        goto out;
                }
                n_hosts = 1;
                sr.site_id = 0; /* where the snapshot is, whatever the site */
        }
        r = sched_place(hosts, n_hosts, &sr, &sp, &res);
        if (r < 0)
                goto out;
        if (!res.found) {
                if (req->why) {
                        sched_explain(&res, &sr, req->why, req->why_len);
                        if (req->from_snap) {
                                char tmp[256];
                                snprintf(tmp, sizeof(tmp), "%s", req->why);
                                snprintf(req->why, req->why_len, "the snapshot's host: %s", tmp);
                        }
                }
                r = -ENOSPC;
                goto out;
        }
        /* a copy: the cache moves when the reservation reloads the row */
        const struct sched_host chosen = hosts[res.index], *h = &chosen;
        char site[TMSG_STR];
        if (host_site(s, h->id, site, sizeof(site)) < 0) {
                r = -EIO;
                goto out;
        }
        if (!(st = stmt(s, ins))) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)req->account_id);
        sqlite3_bind_text(st, 2, req->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, req->size, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, req->image, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, site, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)h->id);
        sqlite3_bind_int64(st, 7, req->vcpus);
        sqlite3_bind_int64(st, 8, req->ram_mb);
        sqlite3_bind_int64(st, 9, req->disk_gb);
        sqlite3_bind_int(st, 10, VM_WANT_RUNNING);
        sqlite3_bind_int64(st, 11, now);
        sqlite3_bind_int(st, 12, (int)req->storage);
        if (req->group)
                sqlite3_bind_text(st, 13, req->group, -1, SQLITE_STATIC);
        char keys[STORE_VM_SSH_KEYS_MAX * 21 + 1] = "";
        for (size_t i = 0, off = 0; i < req->n_ssh_keys && i < STORE_VM_SSH_KEYS_MAX; i++)
                off += (size_t)snprintf(keys + off, sizeof(keys) - off, "%s%llu", i ? "," : "",
                                        (unsigned long long)req->ssh_keys[i]);
        sqlite3_bind_text(st, 14, keys, -1, SQLITE_STATIC);
        if (req->user_data)
                sqlite3_bind_text(st, 15, req->user_data, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 16, (sqlite3_int64)src_vm);
        sqlite3_bind_int64(st, 17, (sqlite3_int64)req->from_snap);
        if (req->dns_name)
                sqlite3_bind_text(st, 18, req->dns_name, -1, SQLITE_STATIC);
        if (req->admin_password)
                sqlite3_bind_text(st, 19, req->admin_password, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 20, req->cpu_cap > 0 && req->cpu_cap < 100 ? (int)req->cpu_cap : 0);
        if (sqlite3_step(st) != SQLITE_DONE) {
                r = db_err(s, "cannot insert vm");
                goto out;
        }
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        if (!(st = stmt(s, bill))) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)req->account_id);
        sqlite3_bind_text(st, 3, req->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, req->size, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, price);
        sqlite3_bind_int64(st, 6, now);
        if (sqlite3_step(st) != SQLITE_DONE) {
                r = db_err(s, "cannot record vm for billing");
                goto out;
        }
        r = reserve(s, h->id, 1, req->vcpus, req->ram_mb, req->disk_gb, req->storage, 1);
        /* its NICs: the public one, then the private network asked for */
        if (r == 0)
                r = nic_public(s, id, site, req->why, req->why_len);
        if (r == 0 && req->network_id &&
            (r = nic_attach(s, req->account_id, id, req->network_id, now)) == -ENOENT)
                r = -ENONET;
        uint64_t claim_id = id;
        if (r == 0 && req->deploy) {
                /* the deployment and its VPS are made (or not) together */
                if (!(st = stmt(s, dep))) {
                        r = -EIO;
                        goto out;
                }
                sqlite3_bind_int64(st, 1, (sqlite3_int64)req->account_id);
                sqlite3_bind_text(st, 2, req->deploy->template_id, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 3, req->deploy->version, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 4, req->name, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 5, (sqlite3_int64)id);
                sqlite3_bind_text(st, 6, req->deploy->config, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 7, now);
                if (sqlite3_step(st) != SQLITE_DONE) {
                        r = db_err(s, "cannot record deployment");
                        goto out;
                }
                claim_id = (uint64_t)sqlite3_last_insert_rowid(s->db);
                if (req->ret_deploy_id)
                        *req->ret_deploy_id = claim_id;
                r = event(s, now, "template.deploying", req->account_id, claim_id,
                          req->deploy->template_id);
        }
        if (r == 0)
                r = idem_claim(s, req->idem, 201, claim_id, now);
        if (r == 0)
                r = event(s, now, "vps.created", req->account_id, id, req->name);
        if (r == 0)
                r = get_vm_locked(s, req->account_id, id, ret);
out:
        return end(s, r);
}

/* Inside a transaction: records that this idempotency key's request had
 * its effect (on resource_id), in the same commit as the effect itself.
 * -EEXIST if the key was taken meanwhile (the caller replays it). */
static int idem_claim(struct store *s, const struct idem *i, int status, uint64_t resource_id,
                      int64_t now)
{
        static const char sql[] =
                "INSERT INTO idempotency (account_id, key, request_hash, status, resource_id,"
                " created_at) VALUES (?,?,?,?,?,?)";
        static const char expired[] = "DELETE FROM idempotency WHERE account_id = ?"
                                      " AND key = ? AND created_at < ?";
        if (!i)
                return 0;
        /* a key past its time is free again, purged or not yet */
        sqlite3_stmt *st = stmt(s, expired);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)i->account_id);
        sqlite3_bind_text(st, 2, i->key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now - STORE_IDEM_TTL_MS);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot expire idempotency key");
        st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)i->account_id);
        sqlite3_bind_text(st, 2, i->key, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, i->hash, sizeof(i->hash), SQLITE_STATIC);
        sqlite3_bind_int(st, 4, status);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)resource_id);
        sqlite3_bind_int64(st, 6, now);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_CONSTRAINT)
                return -EEXIST;
        return rc == SQLITE_DONE ? 0 : db_err(s, "cannot record idempotency key");
}

/* The resource of a key claimed earlier in this transaction. */
static int idem_set_resource(struct store *s, const struct idem *i, uint64_t resource_id)
{
        static const char sql[] =
                "UPDATE idempotency SET resource_id = ? WHERE account_id = ? AND key = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)resource_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i->account_id);
        sqlite3_bind_text(st, 3, i->key, -1, SQLITE_STATIC);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot record idempotency key");
}

int store_idem_get(struct store *s, uint64_t account_id, const char *key, int64_t now,
                   struct idem_rec *ret)
{
        static const char sql[] =
                "SELECT request_hash, status, resource_id, body, location FROM idempotency"
                " WHERE account_id = ? AND key = ? AND created_at >= ?";
        static const char purge[] = "DELETE FROM idempotency WHERE created_at < ?";
        int r = -ENOENT;
        rlock(s);
        if (now - s->idem_purged_at > 60000) {
                /* Keys live STORE_IDEM_TTL_MS; the old ones go, a minute's worth at a time. */
                sqlite3_stmt *p = stmt(s, purge);
                if (p) {
                        sqlite3_bind_int64(p, 1, now - STORE_IDEM_TTL_MS);
                        if (sqlite3_step(p) != SQLITE_DONE)
                                db_err(s, "cannot purge idempotency keys");
                }
                s->idem_purged_at = now;
        }
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                unlock(s);
                return -EIO;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now - STORE_IDEM_TTL_MS);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                memset(ret, 0, sizeof(*ret));
                if (sqlite3_column_bytes(st, 0) == (int)sizeof(ret->hash))
                        memcpy(ret->hash, sqlite3_column_blob(st, 0), sizeof(ret->hash));
                ret->status = sqlite3_column_int(st, 1);
                ret->resource_id = (uint64_t)sqlite3_column_int64(st, 2);
                const unsigned char *b = sqlite3_column_text(st, 3);
                ret->body = b ? strdup((const char *)b) : NULL;
                col_text(st, 4, ret->location, sizeof(ret->location));
                r = b && !ret->body ? -ENOMEM : 0;
        } else if (rc != SQLITE_DONE) {
                r = db_err(s, "cannot read idempotency key");
        }
        unlock(s);
        return r;
}

int store_idem_set_response(struct store *s, uint64_t account_id, const char *key,
                            const char *body, const char *location)
{
        static const char sql[] = "UPDATE idempotency SET body = ?3, location = ?4"
                                  " WHERE account_id = ?1 AND key = ?2 AND body IS NULL";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, body, -1, SQLITE_STATIC);
        if (location)
                sqlite3_bind_text(st, 4, location, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                r = db_err(s, "cannot record idempotent response");
        return end(s, r);
}

/* ---- SSH keys ---- */

static void row_sshkey(sqlite3_stmt *st, void *item)
{
        struct ssh_key *k = item;
        memset(k, 0, sizeof(*k));
        k->id = (uint64_t)sqlite3_column_int64(st, 0);
        k->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, k->name, sizeof(k->name));
        col_text(st, 3, k->fingerprint, sizeof(k->fingerprint));
        col_text(st, 4, k->public_key, sizeof(k->public_key));
        k->created_at = sqlite3_column_int64(st, 5);
        k->user_id = (uint64_t)sqlite3_column_int64(st, 6);
        k->modified_at = sqlite3_column_int64(st, 7);
}

#define SSHKEY_COLS "id, account_id, name, fingerprint, public_key, created_at, user_id, modified_at"

static int sshkey_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                             struct ssh_key *ret)
{
        static const char sql[] =
                "SELECT " SSHKEY_COLS " FROM ssh_keys WHERE id = ? AND account_id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                row_sshkey(st, ret);
                return 0;
        }
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read SSH key");
}

int store_sshkey_create(struct store *s, const struct ssh_key *k, const struct idem *idem,
                        struct ssh_key *ret)
{
        static const char dup[] = "SELECT id FROM ssh_keys WHERE account_id = ? AND fingerprint = ?";
        static const char count[] = "SELECT COUNT(*) FROM ssh_keys WHERE account_id = ?";
        static const char ins[] = "INSERT INTO ssh_keys (account_id, name, public_key, fingerprint,"
                                  " created_at, user_id, modified_at) VALUES (?1,?2,?3,?4,?5,?6,?5)";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        /* The key first: a retry whose twin got here first is a replay,
         * not a duplicate. The id is known only after the insert. */
        r = idem_claim(s, idem, 201, 0, now);
        if (r < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        sqlite3_stmt *st = stmt(s, dup);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)k->account_id);
        sqlite3_bind_text(st, 2, k->fingerprint, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
                ret->id = (uint64_t)sqlite3_column_int64(st, 0);
                return end(s, -EEXIST);
        }
        if (!(st = stmt(s, count)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)k->account_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot count SSH keys"));
        if (sqlite3_column_int64(st, 0) >= STORE_SSHKEYS_PER_ACCOUNT)
                return end(s, -EDQUOT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)k->account_id);
        sqlite3_bind_text(st, 2, k->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, k->public_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, k->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)k->user_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot store SSH key"));
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        r = idem ? idem_set_resource(s, idem, id) : 0;
        if (r == 0)
                r = event(s, now, "ssh_key.created", k->account_id, id, k->name);
        if (r == 0)
                r = sshkey_get_locked(s, k->account_id, id, ret);
        return end(s, r);
}

int store_sshkey_get(struct store *s, uint64_t account_id, uint64_t id, struct ssh_key *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_sshkey_get(pick_reader(s), account_id, id, ret);
        rlock(s);
        int r = sshkey_get_locked(s, account_id, id, ret);
        unlock(s);
        return r;
}

int store_sshkey_delete(struct store *s, uint64_t account_id, uint64_t id)
{
        static const char sql[] = "DELETE FROM ssh_keys WHERE id = ? AND account_id = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete SSH key"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, util_now_ms(), "ssh_key.deleted", account_id, id, ""));
}

int store_sshkey_page(struct store *s, const struct vm_query *q, struct ssh_key **ret,
                      size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_sshkey_page(pick_reader(s), q, ret, ret_n);
        static const char sql[] = "SELECT " SSHKEY_COLS " FROM ssh_keys WHERE account_id = ?1"
                                  " AND id > ?2 ORDER BY id LIMIT ?3";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)q->account_id);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)q->after_id);
                sqlite3_bind_int64(st, 3, q->limit ? (sqlite3_int64)q->limit : -1);
        }
        r = st ? collect(s, st, sizeof(**ret), row_sshkey, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_sshkey_check(struct store *s, uint64_t account_id, const uint64_t *ids, size_t n,
                       size_t *ret_bad)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_sshkey_check(pick_reader(s), account_id, ids, n, ret_bad);
        static const char sql[] = "SELECT 1 FROM ssh_keys WHERE id = ? AND account_id = ?";
        int r = 0;
        rlock(s);
        for (size_t i = 0; i < n && r == 0; i++) {
                sqlite3_stmt *st = stmt(s, sql);
                if (!st) {
                        r = -EIO;
                        break;
                }
                sqlite3_bind_int64(st, 1, (sqlite3_int64)ids[i]);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_DONE) {
                        *ret_bad = i;
                        r = -ENOENT;
                } else if (rc != SQLITE_ROW) {
                        r = db_err(s, "cannot read SSH key");
                }
        }
        unlock(s);
        return r;
}

/* ---- template deployments ---- */

#define DEPLOY_COLS "id, account_id, template, version, name, vm_id, config, created_at"

static void row_deploy(sqlite3_stmt *st, void *item)
{
        struct deployment *d = item;
        memset(d, 0, sizeof(*d));
        d->id = (uint64_t)sqlite3_column_int64(st, 0);
        d->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, d->template_id, sizeof(d->template_id));
        col_text(st, 3, d->version, sizeof(d->version));
        col_text(st, 4, d->name, sizeof(d->name));
        d->vm_id = (uint64_t)sqlite3_column_int64(st, 5);
        col_text(st, 6, d->config, sizeof(d->config));
        d->created_at = sqlite3_column_int64(st, 7);
}

static int deploy_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                             struct deployment *ret)
{
        static const char sql[] = "SELECT " DEPLOY_COLS " FROM deployments WHERE id = ?"
                                  " AND account_id = ? AND deleted_at IS NULL";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                row_deploy(st, ret);
                return 0;
        }
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read deployment");
}

int store_deploy_get(struct store *s, uint64_t account_id, uint64_t id, struct deployment *ret)
{
        if (s->reader)
                return store_deploy_get(pick_reader(s), account_id, id, ret);
        rlock(s);
        int r = deploy_get_locked(s, account_id, id, ret);
        unlock(s);
        return r;
}

int store_deploy_page(struct store *s, const struct vm_query *q, struct deployment **ret,
                      size_t *ret_n)
{
        if (s->reader)
                return store_deploy_page(pick_reader(s), q, ret, ret_n);
        static const char sql[] = "SELECT " DEPLOY_COLS " FROM deployments WHERE account_id = ?1"
                                  " AND deleted_at IS NULL AND id > ?2 ORDER BY id LIMIT ?3";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)q->account_id);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)q->after_id);
                sqlite3_bind_int64(st, 3, q->limit ? (sqlite3_int64)q->limit : -1);
        }
        r = st ? collect(s, st, sizeof(**ret), row_deploy, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

/* Billing of a vm's new size, in the caller's transaction: a dearer size
 * must be covered like an order (-EDQUOT, why says the figures); the vm
 * is invoiced at the new price from the next run on (bill_reprice). */
static int bill_check_size(struct store *s, uint64_t account_id, uint64_t vm_id,
                           const char *size, char *why, size_t why_len, int64_t *ret_price)
{
        static const char old_price_sql[] = "SELECT price_month_cents FROM billable WHERE vm_id = ?";
        int64_t old_price = 0;
        sqlite3_stmt *ps = stmt(s, old_price_sql);
        if (!ps)
                return -EIO;
        sqlite3_bind_int64(ps, 1, (sqlite3_int64)vm_id);
        if (sqlite3_step(ps) == SQLITE_ROW)
                old_price = sqlite3_column_int64(ps, 0);
        sqlite3_reset(ps);
        return credit_check(s, account_id, vm_id, size, old_price, why, why_len, ret_price);
}

static int bill_reprice(struct store *s, uint64_t vm_id, const char *size, int64_t price)
{
        static const char reprice[] =
                "UPDATE billable SET size = ?2, price_month_cents = ?3 WHERE vm_id = ?1";
        sqlite3_stmt *st = stmt(s, reprice);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_text(st, 2, size, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, price);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot reprice vm");
        return 0;
}

int store_vm_resize(struct store *s, const struct vm_resize *req, struct vm *ret)
{
        static const char upd[] =
                "UPDATE vms SET size = ?2, vcpus = ?3, ram_mb = ?4, disk_gb = ?5, cpu_cap = ?6,"
                " resize_seq = resize_seq + 1 WHERE id = ?1";
        static const struct sched_params defaults = {
                .cpu_ratio = 4.0, .ram_ratio = 1.0, .disk_ratio = 1.0, .strategy = SCHED_SPREAD
        };
        struct sched_params sp = req->sched ? *req->sched : defaults;
        struct sched_result res;
        int64_t now = util_now_ms();
        struct vm v;
        int found, r = begin(s);

        if (r < 0)
                return r;
        if ((r = get_vm_locked(s, req->account_id, req->vm_id, &v)) < 0)
                return end(s, r);
        if (req->disk_gb < v.disk_gb)
                return end(s, -EINVAL); /* disks never shrink */
        int64_t price = 0;
        if ((r = bill_check_size(s, req->account_id, v.id, req->size, req->why, req->why_len,
                                 &price)) < 0)
                return end(s, r);
        if (!s->hc_loaded && (r = hc_load(s)) < 0)
                return end(s, r);
        size_t pos = hc_find(s, v.host_id, &found);
        if (!found)
                return end(s, -EIO);
        /* Does its host have room for the new size in place of the old? */
        struct sched_host h = s->hc[pos];
        h.live = 1;
        h.draining = 0;
        h.in_group = 0;
        h.inflight = 0;
        h.vcpus_used = h.vcpus_used > v.vcpus ? h.vcpus_used - v.vcpus : 0;
        h.ram_mb_used = h.ram_mb_used > v.ram_mb ? h.ram_mb_used - v.ram_mb : 0;
        h.disk_gb_used[v.storage] =
                h.disk_gb_used[v.storage] > v.disk_gb ? h.disk_gb_used[v.storage] - v.disk_gb : 0;
        struct sched_req sr = { .vcpus = req->vcpus, .ram_mb = req->ram_mb,
                                .disk_gb = req->disk_gb, .storage = v.storage };
        if ((r = sched_place(&h, 1, &sr, &sp, &res)) < 0)
                return end(s, r);
        if (!res.found) {
                if (req->why)
                        sched_explain(&res, &sr, req->why, req->why_len);
                return end(s, -ENOSPC);
        }
        sqlite3_stmt *st = stmt(s, upd);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
        sqlite3_bind_text(st, 2, req->size, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, req->vcpus);
        sqlite3_bind_int64(st, 4, req->ram_mb);
        sqlite3_bind_int64(st, 5, req->disk_gb);
        sqlite3_bind_int(st, 6, req->cpu_cap > 0 && req->cpu_cap < 100 ? (int)req->cpu_cap : 0);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot resize vm"));
        if ((r = bill_reprice(s, v.id, req->size, price)) < 0)
                return end(s, r);
        r = reserve(s, v.host_id, -1, v.vcpus, v.ram_mb, v.disk_gb, v.storage, 0);
        if (r == 0)
                r = reserve(s, v.host_id, 1, req->vcpus, req->ram_mb, req->disk_gb, v.storage, 0);
        if (r == 0)
                r = idem_claim(s, req->idem, 202, v.id, now);
        if (r == 0)
                r = event(s, now, "vps.resized", req->account_id, v.id, req->size);
        if (r == 0)
                r = get_vm_locked(s, req->account_id, v.id, ret);
        return end(s, r);
}

static int vm_delete_locked(struct store *s, uint64_t account_id, uint64_t vm_id, int64_t now,
                            uint64_t *ret_host_id);

int store_deploy_delete(struct store *s, uint64_t account_id, uint64_t id, uint64_t *ret_host_id)
{
        static const char sql[] = "UPDATE deployments SET deleted_at = ? WHERE id = ?";
        struct deployment d;
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        r = deploy_get_locked(s, account_id, id, &d);
        if (r < 0)
                return end(s, r);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete deployment"));
        /* and what it made: its VPS (gone already if deleted by itself) */
        *ret_host_id = 0;
        r = vm_delete_locked(s, account_id, d.vm_id, now, ret_host_id);
        if (r == -ENOENT)
                r = 0;
        if (r == 0)
                r = event(s, now, "template.deleted", account_id, id, d.template_id);
        return end(s, r);
}

int store_vm_get(struct store *s, uint64_t account_id, uint64_t vm_id, struct vm *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_get(pick_reader(s), account_id, vm_id, ret);
        rlock(s);
        int r = get_vm_locked(s, account_id, vm_id, ret);
        unlock(s);
        return r;
}

int store_vm_list(struct store *s, uint64_t account_id, struct vm **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_list(pick_reader(s), account_id, ret, ret_n);
        static const char sql[] = "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                                  " WHERE v.account_id = ? AND v.deleted_at IS NULL ORDER BY v.id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        r = st ? collect(s, st, sizeof(**ret), row_vm, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_vm_page(struct store *s, const struct vm_query *q, struct vm **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_page(pick_reader(s), q, ret, ret_n);
        static const char sql[] =
                "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                " WHERE v.account_id = ?1 AND v.deleted_at IS NULL AND v.id > ?2"
                " AND (?3 IS NULL OR v.site = ?3) AND (?4 IS NULL OR v.name = ?4)"
                " ORDER BY v.id LIMIT ?5";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)q->account_id);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)q->after_id);
                if (q->region)
                        sqlite3_bind_text(st, 3, q->region, -1, SQLITE_STATIC);
                if (q->name)
                        sqlite3_bind_text(st, 4, q->name, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 5, q->limit ? (sqlite3_int64)q->limit : -1);
        }
        r = st ? collect(s, st, sizeof(**ret), row_vm, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_vm_action(struct store *s, uint64_t account_id, uint64_t vm_id, enum vm_action act,
                    const struct idem *idem, struct vm *ret)
{
        static const char start[] = "UPDATE vms SET want = 0 WHERE id = ?";
        static const char stop[] = "UPDATE vms SET want = 1 WHERE id = ?";
        static const char reboot[] = "UPDATE vms SET reboot_seq = reboot_seq + 1 WHERE id = ?";
        /* from the image again, not from the snapshot it was made from */
        static const char rebuild[] =
                "UPDATE vms SET rebuild_seq = rebuild_seq + 1, want = 0, source_vm = 0,"
                " source_snap = 0 WHERE id = ?";
        static const char poweroff[] = "UPDATE vms SET want = 2 WHERE id = ?";
        static const char rescue[] = "UPDATE vms SET rescue = 1, want = 0 WHERE id = ?";
        static const char unrescue[] = "UPDATE vms SET rescue = 0, want = 0 WHERE id = ?";
        static const char *const kinds[] = { "vps.start",    "vps.shutdown", "vps.reboot",
                                             "vps.rebuild",  "vps.poweroff", "vps.rescue",
                                             "vps.unrescue" };
        static const char *const sqls[] = { start, stop, reboot, rebuild, poweroff, rescue,
                                            unrescue };
        _Static_assert(sizeof(kinds) / sizeof(kinds[0]) == VM_ACT__MAX, "kinds cover actions");
        _Static_assert(sizeof(sqls) / sizeof(sqls[0]) == VM_ACT__MAX, "sqls cover actions");
        _Static_assert(VM_WANT_RUNNING == 0 && VM_WANT_STOPPED == 1 && VM_WANT_OFF == 2,
                       "want literals");
        /* A rebuild wipes the disk, and its snapshots with it. */
        static const char snaps_go[] =
                "UPDATE snapshots SET state = 'deleting' WHERE vm_id = ? AND state != 'deleting'";
        if ((unsigned)act >= VM_ACT__MAX)
                return -EINVAL;
        const char *sql = sqls[act];
        struct vm v;
        int64_t now = util_now_ms();
        int r = begin(s);

        if (r < 0)
                return r;
        r = get_vm_locked(s, account_id, vm_id, &v);
        if (r < 0)
                return end(s, r);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record action"));
        if (act == VM_ACT_REBUILD) {
                if (!(st = stmt(s, snaps_go)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot delete snapshots"));
                if (sqlite3_changes(s->db) > 0 && (r = snap_pending_sync(s, vm_id)) < 0)
                        return end(s, r);
        }
        r = bump_generation(s, v.host_id);
        if (r == 0)
                r = idem_claim(s, idem, 202, vm_id, now);
        if (r == 0)
                r = event(s, now, kinds[act], account_id, vm_id, "");
        if (r == 0)
                r = get_vm_locked(s, account_id, vm_id, ret);
        return end(s, r);
}

static int vm_delete_locked(struct store *s, uint64_t account_id, uint64_t vm_id, int64_t now,
                            uint64_t *ret_host_id)
{
        static const char sql[] = "UPDATE vms SET deleted_at = ? WHERE id = ?";
        /* billed up to now; the row outlives the vm's until invoiced */
        static const char bill[] =
                "UPDATE billable SET deleted_at = ? WHERE vm_id = ? AND deleted_at IS NULL";
        struct vm v;
        int r = get_vm_locked(s, account_id, vm_id, &v);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot delete vm");
        if (!(st = stmt(s, bill)))
                return -EIO;
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot record vm deletion for billing");
        /* Its snapshots go with its disk (the agent removes the domain's
         * storage whole). */
        if ((r = snap_delete_all(s, vm_id)) < 0)
                return r;
        /* Its NICs go now: their addresses and MACs are free again, and
         * the other hosts on its networks drop its FDB entries. */
        if ((r = nics_release(s, vm_id)) < 0)
                return r;
        /* The reservation goes back now; the agent removes the domain. */
        r = reserve(s, v.host_id, -1, v.vcpus, v.ram_mb, v.disk_gb, v.storage, !v.observed);
        if (r == 0)
                r = event(s, now, "vps.deleted", account_id, vm_id, v.name);
        if (r == 0)
                *ret_host_id = v.host_id;
        return r;
}

int store_vm_delete(struct store *s, uint64_t account_id, uint64_t vm_id, uint64_t *ret_host_id)
{
        int r = begin(s);
        if (r < 0)
                return r;
        return end(s, vm_delete_locked(s, account_id, vm_id, util_now_ms(), ret_host_id));
}

/* ---- snapshots ---- */

static const char *const snap_state_names[] = {
        [SNAP_CREATING] = "creating", [SNAP_READY] = "ready", [SNAP_DELETING] = "deleting"
};
_Static_assert(sizeof(snap_state_names) / sizeof(snap_state_names[0]) == SNAP__MAX,
               "snap_state_names");

const char *snap_state_to_string(enum snap_state st)
{
        return (unsigned)st < SNAP__MAX ? snap_state_names[st] : "deleting";
}

#define SNAP_COLS                                                                           \
        "id, account_id, vm_id, name, online, state, replaces, created_at, ready_at, vcpus," \
        " ram_mb, disk_gb, image"

static void row_snap(sqlite3_stmt *st, void *item)
{
        struct snapshot *p = item;
        const unsigned char *state = sqlite3_column_text(st, 5);
        memset(p, 0, sizeof(*p));
        p->id = (uint64_t)sqlite3_column_int64(st, 0);
        p->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        p->vm_id = (uint64_t)sqlite3_column_int64(st, 2);
        col_text(st, 3, p->name, sizeof(p->name));
        p->online = sqlite3_column_int(st, 4) != 0;
        p->state = SNAP_DELETING; /* the CHECK constraint allows no other */
        for (int i = 0; state && i < SNAP__MAX; i++)
                if (strcmp((const char *)state, snap_state_names[i]) == 0)
                        p->state = (enum snap_state)i;
        p->replaces = (uint64_t)sqlite3_column_int64(st, 6);
        p->created_at = sqlite3_column_int64(st, 7);
        p->ready_at = sqlite3_column_int64(st, 8);
        p->vcpus = (uint32_t)sqlite3_column_int64(st, 9);
        p->ram_mb = (uint32_t)sqlite3_column_int64(st, 10);
        p->disk_gb = (uint32_t)sqlite3_column_int64(st, 11);
        col_text(st, 12, p->image, sizeof(p->image));
}

static int snap_get_locked(struct store *s, uint64_t account_id, uint64_t snap_id,
                           struct snapshot *ret)
{
        static const char sql[] =
                "SELECT " SNAP_COLS " FROM snapshots WHERE id = ? AND account_id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                row_snap(st, ret);
                return 0;
        }
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read snapshot");
}

/* Every change of a vm's snapshot states ends here: vms.snap_pending is
 * the count of its snapshots in state creating or deleting, exactly. */
static int snap_pending_sync(struct store *s, uint64_t vm_id)
{
        static const char sql[] =
                "UPDATE vms SET snap_pending = (SELECT COUNT(*) FROM snapshots"
                " WHERE vm_id = ?1 AND state != 'ready') WHERE id = ?1";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot count snapshots");
}

static int snap_delete_all(struct store *s, uint64_t vm_id)
{
        static const char sql[] = "DELETE FROM snapshots WHERE vm_id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return db_err(s, "cannot delete snapshots");
        return sqlite3_changes(s->db) > 0 ? snap_pending_sync(s, vm_id) : 0;
}

struct snap_pend {
        uint64_t id, replaces;
        int creating;
        char name[STORE_NAME_MAX];
};

static void row_snap_pend(sqlite3_stmt *st, void *item)
{
        struct snap_pend *p = item;
        const unsigned char *state = sqlite3_column_text(st, 1);
        p->id = (uint64_t)sqlite3_column_int64(st, 0);
        p->creating = state && strcmp((const char *)state, "creating") == 0;
        p->replaces = (uint64_t)sqlite3_column_int64(st, 2);
        col_text(st, 3, p->name, sizeof(p->name));
}

static int snap_reported(const struct dom_observed *d, uint64_t id)
{
        for (size_t i = 0; i < d->n_snaps && i < TMSG_MAX_SNAPS; i++)
                if (d->snaps[i] == id)
                        return 1;
        return 0;
}

/* A report of a guest with snapshot work pending, inside the observe
 * transaction: a creating snapshot its host has is ready (and the one it
 * overwrites goes, renamed meanwhile or not: the limit counts on it); a
 * deleting one its host
 * no longer has is gone; the one its host could not make is forgotten (an
 * event says why). A guest reported absent changes none but that last. */
static int snap_observe(struct store *s, uint64_t host_id, const struct obs_row *o,
                        const struct dom_observed *d, int64_t now)
{
        static const char sel[] = "SELECT id, state, replaces, name FROM snapshots"
                                  " WHERE vm_id = ? AND state != 'ready' ORDER BY id";
        static const char ready[] =
                "UPDATE snapshots SET state = 'ready', ready_at = ? WHERE id = ?";
        static const char old_goes[] =
                "UPDATE snapshots SET state = 'deleting' WHERE id = ? AND state = 'ready'";
        static const char gone[] = "DELETE FROM snapshots WHERE id = ?";
        const int present = d->state != POWER_UNKNOWN;
        struct snap_pend *rows = NULL;
        size_t n = 0;
        int changed = 0, desired_changed = 0, r;
        sqlite3_stmt *st;

        if (!present && !d->snap_failed)
                return 0;
        if (!(st = stmt(s, sel)))
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)o->id);
        if ((r = collect(s, st, sizeof(*rows), row_snap_pend, (void **)&rows, &n)) < 0)
                return r;
        for (size_t i = 0; i < n && r == 0; i++) {
                const struct snap_pend *p = &rows[i];
                const char *kind = NULL, *data = p->name;
                if (p->creating && p->id == d->snap_failed) {
                        /* never made: no record of a snapshot that is not there */
                        if (!(st = stmt(s, gone))) {
                                r = -EIO;
                                break;
                        }
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)p->id);
                        kind = "snapshot.failed";
                        data = d->error;
                        desired_changed = 1;
                        log_warn("vm %llu: snapshot %llu could not be made: %s",
                                 (unsigned long long)o->id, (unsigned long long)p->id,
                                 d->error[0] ? d->error : "(no reason given)");
                } else if (present && p->creating && snap_reported(d, p->id)) {
                        if (!(st = stmt(s, ready))) {
                                r = -EIO;
                                break;
                        }
                        sqlite3_bind_int64(st, 1, now);
                        sqlite3_bind_int64(st, 2, (sqlite3_int64)p->id);
                        kind = "snapshot.ready";
                } else if (present && !p->creating && !snap_reported(d, p->id)) {
                        if (!(st = stmt(s, gone))) {
                                r = -EIO;
                                break;
                        }
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)p->id);
                        kind = "snapshot.deleted";
                } else {
                        continue; /* not done yet */
                }
                if (sqlite3_step(st) != SQLITE_DONE) {
                        r = db_err(s, "cannot record snapshot state");
                        break;
                }
                changed = 1;
                r = event(s, now, kind, o->account_id, p->id, data);
                if (r == 0 && p->replaces && strcmp(kind, "snapshot.ready") == 0) {
                        /* the new copy exists: the one it overwrites goes */
                        if (!(st = stmt(s, old_goes))) {
                                r = -EIO;
                                break;
                        }
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)p->replaces);
                        if (sqlite3_step(st) != SQLITE_DONE) {
                                r = db_err(s, "cannot record snapshot state");
                                break;
                        }
                        if (sqlite3_changes(s->db) > 0) {
                                desired_changed = 1;
                                r = event(s, now, "snapshot.deleting", o->account_id,
                                          p->replaces, "");
                        }
                }
        }
        free(rows);
        if (r == 0 && changed)
                r = snap_pending_sync(s, o->id);
        if (r == 0 && desired_changed)
                r = bump_generation(s, host_id);
        return r;
}

int store_snap_create(struct store *s, uint64_t account_id, uint64_t vm_id, const char *name,
                      int online, unsigned flags, const struct idem *idem, int64_t now,
                      struct snapshot *ret)
{
        static const char live[] = "SELECT id, name, state FROM snapshots"
                                   " WHERE vm_id = ? AND state != 'deleting' ORDER BY id";
        static const char ins[] =
                "INSERT INTO snapshots (account_id, vm_id, name, online, state, replaces,"
                " created_at, vcpus, ram_mb, disk_gb, image)"
                " VALUES (?,?,?,?,'creating',?,?,?,?,?,?)";
        uint64_t replaces = 0, by_name = 0, latest = 0;
        size_t count = 0;
        int busy = 0, rc;
        struct vm v;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        /* The key first: a retry whose twin got here first is a replay,
         * not a name taken. The id is known only after the insert. */
        if ((r = idem_claim(s, idem, 202, 0, now)) < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        if ((r = get_vm_locked(s, account_id, vm_id, &v)) < 0)
                return end(s, r);
        if (v.rebuild_seq > v.obs_rebuild_done || v.restore_seq > v.obs_restore_done)
                return end(s, -EBUSY);
        if (!(st = stmt(s, live)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                const unsigned char *nm = sqlite3_column_text(st, 1);
                const unsigned char *state = sqlite3_column_text(st, 2);
                count++;
                if (state && strcmp((const char *)state, "creating") == 0)
                        busy = 1;
                latest = (uint64_t)sqlite3_column_int64(st, 0); /* by id: the last */
                if (nm && strcmp((const char *)nm, name) == 0)
                        by_name = latest;
        }
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read snapshots"));
        if (busy)
                return end(s, -EBUSY);
        if (by_name && !(flags & (STORE_SNAP_OVERWRITE | STORE_SNAP_ANY_NAME)))
                return end(s, -EEXIST);
        if (flags & STORE_SNAP_OVERWRITE)
                replaces = by_name ? by_name : flags & STORE_SNAP_LATEST ? latest : 0;
        if (count - (replaces ? 1 : 0) >= STORE_SNAPS_PER_VM)
                return end(s, -EDQUOT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)vm_id);
        sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 4, online ? 1 : 0);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)replaces);
        sqlite3_bind_int64(st, 6, now);
        sqlite3_bind_int64(st, 7, v.vcpus);
        sqlite3_bind_int64(st, 8, v.ram_mb);
        sqlite3_bind_int64(st, 9, v.disk_gb);
        sqlite3_bind_text(st, 10, v.image, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot insert snapshot"));
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        r = snap_pending_sync(s, vm_id);
        if (r == 0)
                r = bump_generation(s, v.host_id);
        if (r == 0 && idem)
                r = idem_set_resource(s, idem, id);
        if (r == 0)
                r = event(s, now, "snapshot.created", account_id, id, name);
        if (r == 0)
                r = snap_get_locked(s, account_id, id, ret);
        return end(s, r);
}

int store_snap_get(struct store *s, uint64_t account_id, uint64_t snap_id, struct snapshot *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_snap_get(pick_reader(s), account_id, snap_id, ret);
        rlock(s);
        int r = snap_get_locked(s, account_id, snap_id, ret);
        unlock(s);
        return r;
}

int store_snap_list(struct store *s, uint64_t account_id, uint64_t vm_id, struct snapshot **ret,
                    size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_snap_list(pick_reader(s), account_id, vm_id, ret, ret_n);
        static const char of_vm[] = "SELECT " SNAP_COLS " FROM snapshots WHERE vm_id = ?2"
                                    " AND account_id = ?1 AND state != 'creating' ORDER BY id";
        static const char of_account[] = "SELECT " SNAP_COLS " FROM snapshots"
                                         " WHERE account_id = ?1 AND state != 'creating'"
                                         " ORDER BY id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, vm_id ? of_vm : of_account);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
                if (vm_id)
                        sqlite3_bind_int64(st, 2, (sqlite3_int64)vm_id);
        }
        r = st ? collect(s, st, sizeof(**ret), row_snap, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_snap_rename(struct store *s, uint64_t account_id, uint64_t snap_id, const char *name,
                      unsigned flags, struct snapshot *ret)
{
        static const char taken[] = "SELECT 1 FROM snapshots WHERE vm_id = ? AND name = ?"
                                    " AND state != 'deleting' AND id != ?";
        static const char upd[] = "UPDATE snapshots SET name = ? WHERE id = ?";
        struct snapshot p;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        if ((r = snap_get_locked(s, account_id, snap_id, &p)) < 0)
                return end(s, r);
        if (p.state == SNAP_DELETING)
                return end(s, -ENOENT);
        if (strcmp(p.name, name) == 0) {
                *ret = p;
                return end(s, 0);
        }
        if (!(flags & STORE_SNAP_ANY_NAME)) {
                if (!(st = stmt(s, taken)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)p.vm_id);
                sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)snap_id);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_ROW)
                        return end(s, -EEXIST);
                if (rc != SQLITE_DONE)
                        return end(s, db_err(s, "cannot read snapshots"));
        }
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)snap_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot rename snapshot"));
        /* the name is not in the desired state: no new generation */
        r = event(s, util_now_ms(), "snapshot.renamed", account_id, snap_id, name);
        if (r == 0)
                r = snap_get_locked(s, account_id, snap_id, ret);
        return end(s, r);
}

int store_snap_delete(struct store *s, uint64_t account_id, uint64_t snap_id,
                      struct snapshot *ret)
{
        static const char upd[] = "UPDATE snapshots SET state = 'deleting' WHERE id = ?";
        static const char copying[] =
                "SELECT 1 FROM vms WHERE source_snap = ? AND deleted_at IS NULL"
                " AND (obs_state IS NULL OR obs_state < 0 OR rebuild_seq > obs_rebuild_done)"
                " LIMIT 1";
        struct snapshot p;
        struct vm v;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        if ((r = snap_get_locked(s, account_id, snap_id, &p)) < 0)
                return end(s, r);
        if (p.state == SNAP_DELETING) {
                if (ret)
                        *ret = p;
                return end(s, 0);
        }
        if ((r = get_vm_locked(s, account_id, p.vm_id, &v)) < 0)
                return end(s, r);
        if (v.restore_seq > v.obs_restore_done && v.restore_snap == snap_id)
                return end(s, -EBUSY);
        /* nor while a new vm's disk is being copied from it */
        if (!(st = stmt(s, copying)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
                return end(s, -EBUSY);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read vms"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete snapshot"));
        r = snap_pending_sync(s, p.vm_id);
        if (r == 0)
                r = bump_generation(s, v.host_id);
        if (r == 0)
                r = event(s, util_now_ms(), "snapshot.deleting", account_id, snap_id, p.name);
        if (r == 0 && ret)
                r = snap_get_locked(s, account_id, snap_id, ret);
        return end(s, r);
}

int store_snap_restore(struct store *s, uint64_t account_id, uint64_t snap_id,
                       const struct idem *idem, struct vm *ret_vm)
{
        static const char making[] =
                "SELECT 1 FROM snapshots WHERE vm_id = ? AND state = 'creating'";
        static const char upd[] =
                "UPDATE vms SET restore_seq = restore_seq + 1, restore_snap = ? WHERE id = ?";
        int64_t now = util_now_ms();
        struct snapshot p;
        struct vm v;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        if ((r = snap_get_locked(s, account_id, snap_id, &p)) < 0)
                return end(s, r);
        if ((r = get_vm_locked(s, account_id, p.vm_id, &v)) < 0)
                return end(s, r);
        /* The key before the checks: a retry whose twin got here first is
         * a replay, not a restore already in flight. */
        if ((r = idem_claim(s, idem, 202, v.id, now)) < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        if (p.state != SNAP_READY || v.rebuild_seq > v.obs_rebuild_done ||
            v.restore_seq > v.obs_restore_done)
                return end(s, -EBUSY);
        /* one disk operation at a time: not while a snapshot is being made */
        if (!(st = stmt(s, making)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                return end(s, -EBUSY);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read snapshots"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)snap_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)v.id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record restore"));
        r = bump_generation(s, v.host_id);
        if (r == 0)
                r = event(s, now, "vps.restore", account_id, v.id, p.name);
        if (r == 0)
                r = get_vm_locked(s, account_id, v.id, ret_vm);
        return end(s, r);
}

int store_snap_restore_into(struct store *s, uint64_t account_id, uint64_t snap_id,
                            uint64_t vm_id, struct vm *ret_vm)
{
        static const char making[] =
                "SELECT 1 FROM snapshots WHERE vm_id IN (?1, ?2) AND state = 'creating'";
        static const char upd[] =
                "UPDATE vms SET rebuild_seq = rebuild_seq + 1, want = 0, source_vm = ?2,"
                " source_snap = ?3, image = ?4 WHERE id = ?1";
        static const char snaps_go[] =
                "UPDATE snapshots SET state = 'deleting' WHERE vm_id = ? AND state != 'deleting'";
        int64_t now = util_now_ms();
        struct snapshot p;
        struct vm v, src;
        sqlite3_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        if ((r = snap_get_locked(s, account_id, snap_id, &p)) < 0 ||
            (r = get_vm_locked(s, account_id, p.vm_id, &src)) < 0 ||
            (r = get_vm_locked(s, account_id, vm_id, &v)) < 0)
                return end(s, r);
        if (p.vm_id == vm_id)
                return end(s, -EINVAL); /* its own: store_snap_restore */
        if (p.state != SNAP_READY || v.rebuild_seq > v.obs_rebuild_done ||
            v.restore_seq > v.obs_restore_done)
                return end(s, -EBUSY);
        if (src.host_id != v.host_id)
                return end(s, -EXDEV);
        if (p.disk_gb > v.disk_gb)
                return end(s, -EFBIG);
        if (!(st = stmt(s, making)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)src.id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                return end(s, -EBUSY);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read snapshots"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)src.id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)p.id);
        sqlite3_bind_text(st, 4, p.image, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record restore"));
        /* its own disk goes, and its snapshots with it */
        if (!(st = stmt(s, snaps_go)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot drop the vm's snapshots"));
        r = bump_generation(s, v.host_id);
        if (r == 0)
                r = event(s, now, "vps.restore", account_id, v.id, p.name);
        if (r == 0)
                r = get_vm_locked(s, account_id, v.id, ret_vm);
        return end(s, r);
}

/* ---- node administration and liveness ---- */

int store_host_set_draining(struct store *s, const char *name, int draining)
{
        static const char sql[] = "UPDATE hosts SET draining = ? WHERE name = ?";
        static const char sel[] = "SELECT id FROM hosts WHERE name = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        sqlite3_bind_int(st, 1, draining ? 1 : 0);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        hc_mark(s, id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot drain host"));
        r = event(s, util_now_ms(), draining ? "host.drained" : "host.undrained", 0, id, name);
        return end(s, r);
}

int store_host_remove(struct store *s, const char *name)
{
        static const char sel[] = "SELECT id, guests FROM hosts WHERE name = ?";
        static const char del_vms[] =
                "DELETE FROM vms WHERE host_id = ? AND deleted_at IS NOT NULL";
        static const char del[] = "DELETE FROM hosts WHERE id = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
        if (sqlite3_column_int64(st, 1) > 0)
                return end(s, -EBUSY);
        hc_mark(s, id);
        const char *sqls[] = { del_vms, del };
        for (int i = 0; i < 2; i++) {
                if (!(st = stmt(s, sqls[i])))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot remove host"));
        }
        r = event(s, util_now_ms(), "host.removed", 0, id, name);
        return end(s, r);
}

static void row_event(sqlite3_stmt *st, void *item)
{
        struct store_event *e = item;
        memset(e, 0, sizeof(*e));
        e->id = (uint64_t)sqlite3_column_int64(st, 0);
        e->at = sqlite3_column_int64(st, 1);
        col_text(st, 2, e->kind, sizeof(e->kind));
        e->resource_id = (uint64_t)sqlite3_column_int64(st, 3);
        col_text(st, 4, e->data, sizeof(e->data));
}

int store_host_events(struct store *s, uint64_t host_id, size_t limit, struct store_event **ret,
                      size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_host_events(pick_reader(s), host_id, limit, ret, ret_n);
        /* The host's own events and those of the guests placed on it. */
        static const char sql[] =
                "SELECT id, at, kind, resource_id, data FROM events"
                " WHERE (kind LIKE 'host.%' AND resource_id = ?1)"
                "    OR (kind LIKE 'vps.%' AND resource_id IN (SELECT id FROM vms WHERE host_id = ?1))"
                " ORDER BY id DESC LIMIT ?2";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)host_id);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
        }
        r = st ? collect(s, st, sizeof(**ret), row_event, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_hosts_liveness(struct store *s, int64_t now, int64_t timeout_ms, size_t *ret_down,
                         size_t *ret_up)
{
        static const char down[] =
                "UPDATE hosts SET reachable = 0 WHERE reachable = 1 AND last_seen < ?"
                " RETURNING id, name";
        static const char up[] =
                "UPDATE hosts SET reachable = 1 WHERE reachable = 0 AND last_seen >= ?"
                " RETURNING id, name";
        const char *sqls[] = { down, up };
        const char *kinds[] = { "host.unreachable", "host.up" };
        size_t counts[2] = { 0, 0 };
        int r = begin(s);
        if (r < 0)
                return r;
        for (int k = 0; k < 2 && r == 0; k++) {
                struct changed {
                        uint64_t id;
                        char name[TMSG_STR];
                } *changed = NULL;
                size_t n = 0, cap = 0;
                int rc;
                sqlite3_stmt *st = stmt(s, sqls[k]);
                if (!st) {
                        r = -EIO;
                        break;
                }
                sqlite3_bind_int64(st, 1, now - timeout_ms);
                while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 64;
                                struct changed *g = realloc(changed, ncap * sizeof(*g));
                                if (!g) {
                                        rc = SQLITE_NOMEM;
                                        break;
                                }
                                changed = g;
                                cap = ncap;
                        }
                        changed[n].id = (uint64_t)sqlite3_column_int64(st, 0);
                        col_text(st, 1, changed[n].name, sizeof(changed[n].name));
                        n++;
                }
                sqlite3_reset(st);
                if (rc != SQLITE_DONE) {
                        free(changed);
                        r = rc == SQLITE_NOMEM ? -ENOMEM : db_err(s, "cannot update liveness");
                        break;
                }
                for (size_t i = 0; i < n && r == 0; i++) {
                        log_warn("host %s: %s", changed[i].name,
                                 k == 0 ? "unreachable (not heard from)" : "up again");
                        r = event(s, now, kinds[k], 0, changed[i].id, changed[i].name);
                }
                free(changed);
                counts[k] = n;
        }
        if (r == 0) {
                if (ret_down)
                        *ret_down = counts[0];
                if (ret_up)
                        *ret_up = counts[1];
        }
        return end(s, r);
}

int store_vm_list_all(struct store *s, struct vm **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_list_all(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                                  " WHERE v.deleted_at IS NULL";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_vm, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_event_count(struct store *s, const char *kind, uint64_t *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_event_count(pick_reader(s), kind, ret);
        static const char sql[] = "SELECT COUNT(*) FROM events WHERE kind = ?";
        int r = -EIO;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        *ret = (uint64_t)sqlite3_column_int64(st, 0);
                        r = 0;
                } else {
                        r = db_err(s, "cannot count events");
                }
        }
        unlock(s);
        return r;
}

static void row_site_full(sqlite3_stmt *st, void *item)
{
        struct site *x = item;
        memset(x, 0, sizeof(*x));
        x->id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, x->slug, sizeof(x->slug));
        col_text(st, 2, x->name, sizeof(x->name));
        x->hosts = (uint32_t)sqlite3_column_int64(st, 3);
        col_text(st, 4, x->tz, sizeof(x->tz));
}

/* ---- images ---- */

#define IMAGE_COLS "slug, name, url, sha256, format, min_disk_gb, created_at, num"

static void row_image(sqlite3_stmt *st, void *item)
{
        struct image *g = item;
        memset(g, 0, sizeof(*g));
        col_text(st, 0, g->slug, sizeof(g->slug));
        col_text(st, 1, g->name, sizeof(g->name));
        col_text(st, 2, g->url, sizeof(g->url));
        col_text(st, 3, g->sha256, sizeof(g->sha256));
        col_text(st, 4, g->format, sizeof(g->format));
        g->min_disk_gb = (uint32_t)sqlite3_column_int64(st, 5);
        g->created_at = sqlite3_column_int64(st, 6);
        g->num = (uint64_t)sqlite3_column_int64(st, 7);
}

int store_image_add(struct store *s, const struct image *img)
{
        static const char sql[] =
                "INSERT INTO images (" IMAGE_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
                " (SELECT COALESCE(MAX(num), 0) + 1 FROM images))"
                " ON CONFLICT(slug) DO UPDATE SET name = excluded.name, url = excluded.url,"
                " sha256 = excluded.sha256, format = excluded.format,"
                " min_disk_gb = excluded.min_disk_gb, created_at = excluded.created_at,"
                " removed_at = NULL WHERE images.removed_at IS NOT NULL";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, img->slug, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, img->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, img->url, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, img->sha256, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, img->format, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, img->min_disk_gb);
        sqlite3_bind_int64(st, 7, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot add image"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -EEXIST);
        return end(s, event(s, now, "image.added", 0, 0, img->slug));
}

int store_image_remove(struct store *s, const char *slug)
{
        static const char sql[] =
                "UPDATE images SET removed_at = ?2 WHERE slug = ?1 AND removed_at IS NULL";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, slug, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot remove image"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, now, "image.removed", 0, 0, slug));
}

int store_image_get(struct store *s, const char *slug, struct image *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_image_get(pick_reader(s), slug, ret);
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE slug = ? AND removed_at IS NULL";
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_text(st, 1, slug, -1, SQLITE_STATIC);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        row_image(st, ret);
                        r = 0;
                }
        }
        reset_all(s);
        unlock(s);
        return r;
}

int store_image_list(struct store *s, struct image **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_image_list(pick_reader(s), ret, ret_n);
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE removed_at IS NULL ORDER BY slug";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_image, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_vm_seed(struct store *s, uint64_t host_id, uint64_t vm_id, struct msg_seed_reply *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_seed(pick_reader(s), host_id, vm_id, ret);
        static const char vm_sql[] =
                "SELECT name, account_id, ssh_keys, user_data, admin_password, dns_name FROM vms"
                " WHERE id = ? AND host_id = ? AND deleted_at IS NULL";
        static const char key_sql[] =
                "SELECT public_key FROM ssh_keys WHERE id = ? AND account_id = ?";
        struct msg_seed_reply m = { .vm_id = vm_id };
        char ids[STORE_VM_SSH_KEYS_MAX * 21 + 1];
        int64_t account;
        int r = 0;

        rlock(s);
        sqlite3_stmt *st = stmt(s, vm_sql);
        if (!st) {
                r = -EIO;
                goto out;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)host_id);
        if (sqlite3_step(st) != SQLITE_ROW) {
                r = -ENOENT;
                goto out;
        }
        col_text(st, 0, m.hostname, sizeof(m.hostname));
        /* A VM with a DNS name (the Tilaa API's dns_name) is that host: the
         * agent takes a name with dots as the FQDN, its first label as the
         * host name. One too long for the message (or of one label) gives
         * its first label: the name of a Tilaa VM is for internal use ("My
         * server (2)") and need not be a host name. */
        if (sqlite3_column_type(st, 5) == SQLITE_TEXT && sqlite3_column_bytes(st, 5) > 0) {
                const char *dn = (const char *)sqlite3_column_text(st, 5);
                size_t len = (size_t)sqlite3_column_bytes(st, 5);
                if (len >= sizeof(m.hostname) || !strchr(dn, '.'))
                        len = strcspn(dn, ".");
                if (len > 0 && len < sizeof(m.hostname)) {
                        memcpy(m.hostname, dn, len);
                        m.hostname[len] = '\0';
                }
        }
        host_name_fix(m.hostname, sizeof(m.hostname), vm_id);
        account = sqlite3_column_int64(st, 1);
        col_text(st, 2, ids, sizeof(ids));
        /* a Tilaa VM: root with its initial password (admin.account) */
        if (sqlite3_column_type(st, 4) == SQLITE_TEXT && sqlite3_column_bytes(st, 4) > 0) {
                util_strlcpy(m.admin_user, "root", sizeof(m.admin_user));
                col_text(st, 4, m.admin_password, sizeof(m.admin_password));
        }
        if (sqlite3_column_type(st, 3) == SQLITE_TEXT && sqlite3_column_bytes(st, 3) > 0 &&
            !(m.user_data = strdup((const char *)sqlite3_column_text(st, 3)))) {
                r = -ENOMEM;
                goto out;
        }
        /* The keys the guest was made with, as they are now (a key deleted
         * since is left out). */
        if (ids[0] && !(m.ssh_keys = calloc(STORE_VM_SSH_KEYS_MAX, sizeof(char *)))) {
                r = -ENOMEM;
                goto out;
        }
        for (char *p = ids, *save = NULL, *tok; ids[0] && (tok = strtok_r(p, ",", &save));
             p = NULL) {
                if (m.n_ssh_keys >= STORE_VM_SSH_KEYS_MAX || !(st = stmt(s, key_sql))) {
                        r = st ? 0 : -EIO;
                        break;
                }
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, strtoll(tok, NULL, 10));
                sqlite3_bind_int64(st, 2, account);
                if (sqlite3_step(st) == SQLITE_ROW) {
                        m.ssh_keys[m.n_ssh_keys] = strdup((const char *)sqlite3_column_text(st, 0));
                        if (!m.ssh_keys[m.n_ssh_keys]) {
                                r = -ENOMEM;
                                break;
                        }
                        m.n_ssh_keys++;
                }
        }
out:
        reset_all(s);
        unlock(s);
        if (r < 0) {
                struct tmsg t = { .type = TMSG_SEED_REPLY, .seed_reply = m };
                tmsg_clear(&t);
                return r;
        }
        *ret = m;
        return 0;
}

int store_sites(struct store *s, struct site **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_sites(pick_reader(s), ret, ret_n);
        static const char sql[] =
                "SELECT s.id, s.slug, s.name, (SELECT COUNT(*) FROM hosts h WHERE h.site = s.slug),"
                " s.tz FROM sites s ORDER BY s.id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_site_full, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_site_put(struct store *s, const char *slug, const char *name, struct site *ret)
{
        static const char sql[] =
                "INSERT INTO sites (slug, name, created_at) VALUES (?1, ?2, ?3)"
                " ON CONFLICT(slug) DO UPDATE SET name = excluded.name";
        static const char sel[] =
                "SELECT s.id, s.slug, s.name, (SELECT COUNT(*) FROM hosts h WHERE h.site = s.slug),"
                " s.tz FROM sites s WHERE s.slug = ?";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, slug, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record site"));
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, slug, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot read site"));
        row_site_full(st, ret);
        r = event(s, now, "site.updated", 0, ret->id, name);
        return end(s, r);
}

/* ---- private networks, NICs and public address pools ---- */

/* A MAC no NIC has: 52:54:00 (QEMU's prefix) and three random bytes,
 * drawn again on a collision. */
static int mac_new(struct store *s, char mac[TMSG_MAC])
{
        static const char sql[] = "SELECT 1 FROM nics WHERE mac = ?";
        for (int tries = 0; tries < 64; tries++) {
                uint8_t b[3];
                if (util_random(b, sizeof(b)) < 0) {
                        log_error("store: no random bytes for a MAC address");
                        return -EIO;
                }
                snprintf(mac, TMSG_MAC, "52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]);
                sqlite3_stmt *st = stmt(s, sql);
                if (!st)
                        return -EIO;
                sqlite3_bind_text(st, 1, mac, -1, SQLITE_STATIC);
                int rc = sqlite3_step(st);
                sqlite3_reset(st);
                if (rc == SQLITE_DONE)
                        return 0;
                if (rc != SQLITE_ROW)
                        return db_err(s, "cannot read MAC addresses");
        }
        log_error("store: no free MAC address found in 64 draws");
        return -EIO;
}

/* The first free address of p among network_id's NICs (public ones:
 * network 0) from its skip-th on, not exclude: 0 and its text, -ENOSPC. */
static int addr_alloc(struct store *s, uint64_t network_id, const struct ipam_prefix *p,
                      unsigned skip, const struct ipam_addr *exclude, char *out, size_t len)
{
        static const char sql4[] =
                "SELECT ipv4 FROM nics WHERE network_id = ? AND ipv4 IS NOT NULL";
        static const char sql6[] =
                "SELECT ipv6 FROM nics WHERE network_id = ? AND ipv6 IS NOT NULL";
        struct ipam_addr *used = NULL, a;
        size_t n = 0, cap = 0;
        int rc, r;
        sqlite3_stmt *st = stmt(s, p->addr.len == 4 ? sql4 : sql6);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)network_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if (ipam_addr_parse((const char *)sqlite3_column_text(st, 0), &a) < 0 ||
                    !ipam_prefix_contains(p, &a))
                        continue; /* another pool's */
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        struct ipam_addr *nu = realloc(used, ncap * sizeof(*nu));
                        if (!nu) {
                                sqlite3_reset(st);
                                free(used);
                                return -ENOMEM;
                        }
                        used = nu;
                        cap = ncap;
                }
                used[n++] = a;
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
                free(used);
                return db_err(s, "cannot read addresses");
        }
        r = ipam_first_free(p, skip, exclude, used, n, &a);
        free(used);
        if (r == 0)
                ipam_addr_format(&a, out, len);
        return r;
}

static int nic_insert(struct store *s, uint64_t vm_id, uint64_t network_id, uint32_t position,
                      const char *ipv4, const char *ipv6)
{
        static const char sql[] = "INSERT INTO nics (vm_id, network_id, position, mac, ipv4, ipv6)"
                                  " VALUES (?,?,?,?,?,?)";
        char mac[TMSG_MAC];
        int r = mac_new(s, mac);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)network_id);
        sqlite3_bind_int64(st, 3, position);
        sqlite3_bind_text(st, 4, mac, -1, SQLITE_STATIC);
        if (ipv4 && ipv4[0])
                sqlite3_bind_text(st, 5, ipv4, -1, SQLITE_STATIC);
        if (ipv6 && ipv6[0])
                sqlite3_bind_text(st, 6, ipv6, -1, SQLITE_STATIC);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot insert NIC");
}

/* Inside a transaction: the public NIC of a new vm (position 0) when its
 * site has a pool: -EADDRNOTAVAIL (why says which family) when used up. */
static int nic_public(struct store *s, uint64_t vm_id, const char *site, char *why,
                      size_t why_len)
{
        static const char sql[] =
                "SELECT ipv4, gateway4, ipv6, gateway6 FROM ip_pools WHERE site = ?";
        char v4[TMSG_IP], gw4[TMSG_IP], v6[TMSG_IP], gw6[TMSG_IP];
        char a4[TMSG_IP] = "", a6[TMSG_IP] = "";
        struct ipam_prefix p4, p6;
        struct ipam_addr g4, g6;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_text(st, 1, site, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return 0; /* no pool: no public NIC */
        if (rc != SQLITE_ROW)
                return db_err(s, "cannot read address pool");
        col_text(st, 0, v4, sizeof(v4));
        col_text(st, 1, gw4, sizeof(gw4));
        col_text(st, 2, v6, sizeof(v6));
        col_text(st, 3, gw6, sizeof(gw6));
        sqlite3_reset(st);
        if (ipam_prefix_parse(v4, &p4, NULL, 0) < 0 || ipam_addr_parse(gw4, &g4) < 0 ||
            (v6[0] && (ipam_prefix_parse(v6, &p6, NULL, 0) < 0 || ipam_addr_parse(gw6, &g6) < 0))) {
                log_error("site %s: its address pool is malformed", site);
                return -EIO;
        }
        int r = addr_alloc(s, 0, &p4, 1, &g4, a4, sizeof(a4));
        if (r == 0 && v6[0] && (r = addr_alloc(s, 0, &p6, 1, &g6, a6, sizeof(a6))) == -ENOSPC &&
            why)
                snprintf(why, why_len, "the public IPv6 pool of site %s (%s) is used up", site, v6);
        else if (r == -ENOSPC && why)
                snprintf(why, why_len, "the public IPv4 pool of site %s (%s) is used up", site, v4);
        if (r == -ENOSPC) {
                log_warn("site %s: public address pool used up", site);
                return -EADDRNOTAVAIL;
        }
        return r < 0 ? r : nic_insert(s, vm_id, 0, 0, a4, a6);
}

/* Inside a transaction: a new generation for every host with a guest on
 * the network (their bridges and FDB entries follow its members). */
static int bump_net_hosts(struct store *s, uint64_t net_id)
{
        static const char sql[] =
                "UPDATE hosts SET generation = generation + 1 WHERE id IN (SELECT v.host_id"
                " FROM nics n JOIN vms v ON v.id = n.vm_id WHERE n.network_id = ?"
                " AND v.deleted_at IS NULL)";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot bump generations");
}

/* Inside a transaction: the vm (of the account) on one of the account's
 * networks, with its first free address: -ENOENT (no such network),
 * -EEXIST, -EDQUOT, -ERANGE as store_net_attach(). */
static int nic_attach(struct store *s, uint64_t account_id, uint64_t vm_id, uint64_t net_id,
                      int64_t now)
{
        static const char net_sql[] = "SELECT cidr FROM networks WHERE id = ? AND account_id = ?";
        static const char nics_sql[] =
                "SELECT COUNT(*), COALESCE(MAX(position) + 1, 0), COALESCE(SUM(network_id = ?2), 0)"
                " FROM nics WHERE vm_id = ?1";
        char cidr[STORE_CIDR_MAX], addr[TMSG_IP], id[ID_STR_MAX];
        struct ipam_prefix p;
        sqlite3_stmt *st = stmt(s, net_sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_err(s, "cannot read network");
        col_text(st, 0, cidr, sizeof(cidr));
        sqlite3_reset(st);
        if (!(st = stmt(s, nics_sql)))
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)net_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return db_err(s, "cannot read NICs");
        int64_t count = sqlite3_column_int64(st, 0), next = sqlite3_column_int64(st, 1);
        int attached = sqlite3_column_int64(st, 2) > 0;
        sqlite3_reset(st);
        if (attached)
                return -EEXIST;
        if (count >= TMSG_MAX_NICS)
                return -EDQUOT;
        if (ipam_prefix_parse(cidr, &p, NULL, 0) < 0) {
                log_error("network %llu: malformed cidr %s", (unsigned long long)net_id, cidr);
                return -EIO;
        }
        /* past the network address and .1 (kept for a router) */
        int r = addr_alloc(s, net_id, &p, 2, NULL, addr, sizeof(addr));
        if (r == -ENOSPC)
                return -ERANGE;
        if (r == 0)
                r = nic_insert(s, vm_id, net_id, (uint32_t)next, addr, NULL);
        if (r == 0)
                r = bump_net_hosts(s, net_id);
        id_encode(&s->key, "net", net_id, id, sizeof(id));
        if (r == 0)
                r = event(s, now, "vps.attached", account_id, vm_id, id);
        return r;
}

/* Inside a transaction: a deleted vm's NICs go, after the hosts of its
 * networks' other guests got a new generation (their FDB loses it). */
static int nics_release(struct store *s, uint64_t vm_id)
{
        static const char bump[] =
                "UPDATE hosts SET generation = generation + 1 WHERE id IN (SELECT v.host_id"
                " FROM nics n JOIN vms v ON v.id = n.vm_id WHERE v.deleted_at IS NULL"
                " AND n.network_id IN (SELECT network_id FROM nics WHERE vm_id = ?"
                " AND network_id != 0))";
        static const char del[] = "DELETE FROM nics WHERE vm_id = ?";
        const char *sqls[] = { bump, del };
        for (int i = 0; i < 2; i++) {
                sqlite3_stmt *st = stmt(s, sqls[i]);
                if (!st)
                        return -EIO;
                sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return db_err(s, "cannot release NICs");
        }
        return 0;
}

/* The next vni from the meta counter, unused, and the counter moved past
 * it: a deleted network's vni comes back only after the range wraps. */
static int vni_new(struct store *s, uint32_t *ret)
{
        static const char get[] = "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'next_vni'";
        static const char used[] = "SELECT 1 FROM networks WHERE vni = ?";
        static const char count[] = "SELECT COUNT(*) FROM networks";
        static const char set[] = "INSERT INTO meta (key, value) VALUES ('next_vni', ?)"
                                  " ON CONFLICT(key) DO UPDATE SET value = excluded.value";
        const uint32_t span = STORE_VNI_MAX - STORE_VNI_MIN + 1;
        sqlite3_stmt *st = stmt(s, get);
        int64_t next = STORE_VNI_MIN, n;
        if (!st)
                return -EIO;
        if (sqlite3_step(st) == SQLITE_ROW)
                next = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (!(st = stmt(s, count)))
                return -EIO;
        if (sqlite3_step(st) != SQLITE_ROW)
                return db_err(s, "cannot count networks");
        n = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (next < STORE_VNI_MIN || next > STORE_VNI_MAX)
                next = STORE_VNI_MIN;
        /* at most n of the next n + 1 are taken */
        for (int64_t i = 0; i <= n && i < span; i++) {
                uint32_t vni = STORE_VNI_MIN + (uint32_t)((next - STORE_VNI_MIN + i) % span);
                if (!(st = stmt(s, used)))
                        return -EIO;
                sqlite3_bind_int64(st, 1, vni);
                int rc = sqlite3_step(st);
                sqlite3_reset(st);
                if (rc == SQLITE_ROW)
                        continue;
                if (rc != SQLITE_DONE)
                        return db_err(s, "cannot read vnis");
                if (!(st = stmt(s, set)))
                        return -EIO;
                sqlite3_bind_int64(st, 1, vni == STORE_VNI_MAX ? STORE_VNI_MIN : vni + 1);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return db_err(s, "cannot record the next vni");
                *ret = vni;
                return 0;
        }
        return -EDQUOT; /* every vni taken */
}

#define NET_COLS "id, account_id, name, cidr, vni, created_at"

static void row_net(sqlite3_stmt *st, void *item)
{
        struct network *w = item;
        memset(w, 0, sizeof(*w));
        w->id = (uint64_t)sqlite3_column_int64(st, 0);
        w->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, w->name, sizeof(w->name));
        col_text(st, 3, w->cidr, sizeof(w->cidr));
        w->vni = (uint32_t)sqlite3_column_int64(st, 4);
        w->created_at = sqlite3_column_int64(st, 5);
}

static int net_get_locked(struct store *s, uint64_t account_id, uint64_t net_id,
                          struct network *ret)
{
        static const char sql[] =
                "SELECT " NET_COLS " FROM networks WHERE id = ? AND account_id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                row_net(st, ret);
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
                return 0;
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read network");
}

int store_net_create(struct store *s, uint64_t account_id, const char *name, const char *cidr,
                     const struct idem *idem, int64_t now, struct network *ret)
{
        static const char mine[] = "SELECT " NET_COLS " FROM networks WHERE account_id = ?"
                                   " ORDER BY id";
        static const char ins[] = "INSERT INTO networks (account_id, name, cidr, vni, created_at)"
                                  " VALUES (?,?,?,?,?)";
        struct network *nets = NULL;
        struct ipam_prefix p, q;
        size_t n = 0;
        uint32_t vni;
        int r;

        if (ipam_prefix_parse(cidr, &p, NULL, 0) < 0)
                return -EINVAL;
        if ((r = begin(s)) < 0)
                return r;
        /* The key first: a retry whose twin got here first is a replay,
         * not an overlap. The id is known only after the insert. */
        if ((r = idem_claim(s, idem, 201, 0, now)) < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        sqlite3_stmt *st = stmt(s, mine);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        if ((r = collect(s, st, sizeof(*nets), row_net, (void **)&nets, &n)) < 0)
                return end(s, r);
        for (size_t i = 0; i < n; i++) {
                if (ipam_prefix_parse(nets[i].cidr, &q, NULL, 0) == 0 &&
                    ipam_prefix_overlap(&p, &q)) {
                        *ret = nets[i];
                        free(nets);
                        return end(s, -EADDRINUSE);
                }
        }
        free(nets);
        if (n >= STORE_NETS_PER_ACCOUNT)
                return end(s, -EDQUOT);
        if ((r = vni_new(s, &vni)) < 0)
                return end(s, r);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, cidr, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, vni);
        sqlite3_bind_int64(st, 5, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot insert network"));
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        r = idem ? idem_set_resource(s, idem, id) : 0;
        if (r == 0)
                r = event(s, now, "network.created", account_id, id, name);
        if (r == 0)
                r = net_get_locked(s, account_id, id, ret);
        return end(s, r);
}

static void row_u64(sqlite3_stmt *st, void *item)
{
        *(uint64_t *)item = (uint64_t)sqlite3_column_int64(st, 0);
}

int store_net_get(struct store *s, uint64_t account_id, uint64_t net_id, struct network *ret,
                  uint64_t **ret_vms)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_net_get(pick_reader(s), account_id, net_id, ret, ret_vms);
        static const char vms[] =
                "SELECT n.vm_id FROM nics n JOIN vms v ON v.id = n.vm_id"
                " WHERE n.network_id = ? AND v.deleted_at IS NULL ORDER BY n.vm_id";
        struct network w;
        uint64_t *ids = NULL;
        rlock(s);
        int r = net_get_locked(s, account_id, net_id, &w);
        if (r == 0) {
                sqlite3_stmt *st = stmt(s, vms);
                if (st)
                        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
                r = st ? collect(s, st, sizeof(*ids), row_u64, (void **)&ids, &w.n_vms) : -EIO;
        }
        unlock(s);
        if (r < 0)
                return r;
        if (ret_vms)
                *ret_vms = ids;
        else
                free(ids);
        *ret = w;
        return 0;
}

struct net_member {
        uint64_t net_id, vm_id;
};

static void row_member(sqlite3_stmt *st, void *item)
{
        struct net_member *m = item;
        m->net_id = (uint64_t)sqlite3_column_int64(st, 0);
        m->vm_id = (uint64_t)sqlite3_column_int64(st, 1);
}

int store_net_list(struct store *s, uint64_t account_id, struct network **ret, size_t *ret_n,
                   uint64_t **ret_vms, size_t *ret_n_vms)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_net_list(pick_reader(s), account_id, ret, ret_n, ret_vms,
                                      ret_n_vms);
        static const char nets_sql[] =
                "SELECT " NET_COLS " FROM networks WHERE account_id = ? ORDER BY id";
        static const char members_sql[] =
                "SELECT n.network_id, n.vm_id FROM nics n JOIN vms v ON v.id = n.vm_id"
                " WHERE v.account_id = ? AND v.deleted_at IS NULL AND n.network_id != 0"
                " ORDER BY n.network_id, n.vm_id";
        struct network *nets = NULL;
        struct net_member *mem = NULL;
        size_t n = 0, n_mem = 0;
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, nets_sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        r = st ? collect(s, st, sizeof(*nets), row_net, (void **)&nets, &n) : -EIO;
        if (r == 0 && (st = stmt(s, members_sql)))
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        if (r == 0)
                r = st ? collect(s, st, sizeof(*mem), row_member, (void **)&mem, &n_mem) : -EIO;
        unlock(s);
        uint64_t *ids = r == 0 ? malloc((n_mem ? n_mem : 1) * sizeof(*ids)) : NULL;
        if (r == 0 && !ids)
                r = -ENOMEM;
        if (r < 0) {
                free(nets);
                free(mem);
                return r;
        }
        /* both in network id order: each network's members are a run */
        size_t j = 0, k = 0;
        for (size_t i = 0; i < n; i++) {
                while (j < n_mem && mem[j].net_id < nets[i].id)
                        j++;
                nets[i].first_vm = k;
                for (; j < n_mem && mem[j].net_id == nets[i].id; j++)
                        ids[k++] = mem[j].vm_id;
                nets[i].n_vms = k - nets[i].first_vm;
        }
        free(mem);
        *ret = nets;
        *ret_n = n;
        *ret_vms = ids;
        *ret_n_vms = k;
        return 0;
}

int store_net_delete(struct store *s, uint64_t account_id, uint64_t net_id)
{
        static const char busy[] = "SELECT 1 FROM nics WHERE network_id = ? LIMIT 1";
        static const char del[] = "DELETE FROM networks WHERE id = ?";
        struct network w;
        int r = begin(s);
        if (r < 0)
                return r;
        if ((r = net_get_locked(s, account_id, net_id, &w)) < 0)
                return end(s, r);
        sqlite3_stmt *st = stmt(s, busy);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_ROW)
                return end(s, -EBUSY);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read NICs"));
        if (!(st = stmt(s, del)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)net_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete network"));
        return end(s, event(s, util_now_ms(), "network.deleted", account_id, net_id, w.name));
}

int store_net_attach(struct store *s, uint64_t account_id, uint64_t net_id, uint64_t vm_id,
                     const struct idem *idem, struct vm *ret)
{
        int64_t now = util_now_ms();
        struct vm v;
        int r = begin(s);
        if (r < 0)
                return r;
        /* The key first: a retry whose twin got here first is a replay,
         * not "attached already". */
        if ((r = idem_claim(s, idem, 202, vm_id, now)) < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        if ((r = get_vm_locked(s, account_id, vm_id, &v)) < 0)
                return end(s, r);
        r = nic_attach(s, account_id, vm_id, net_id, now);
        if (r == 0)
                r = get_vm_locked(s, account_id, vm_id, ret);
        return end(s, r);
}

int store_vm_net_hosts(struct store *s, uint64_t vm_id, uint64_t **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_net_hosts(pick_reader(s), vm_id, ret, ret_n);
        static const char sql[] =
                "SELECT DISTINCT v.host_id FROM nics n JOIN vms v ON v.id = n.vm_id"
                " WHERE v.deleted_at IS NULL AND n.network_id IN (SELECT network_id FROM nics"
                " WHERE vm_id = ? AND network_id != 0) ORDER BY v.host_id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        r = st ? collect(s, st, sizeof(**ret), row_u64, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

static void row_nic(sqlite3_stmt *st, void *item)
{
        struct nic *c = item;
        memset(c, 0, sizeof(*c));
        c->vm_id = (uint64_t)sqlite3_column_int64(st, 0);
        c->network_id = (uint64_t)sqlite3_column_int64(st, 1);
        c->position = (uint32_t)sqlite3_column_int64(st, 2);
        col_text(st, 3, c->mac, sizeof(c->mac));
        col_text(st, 4, c->ipv4, sizeof(c->ipv4));
        col_text(st, 5, c->ipv6, sizeof(c->ipv6));
        c->id = (uint64_t)sqlite3_column_int64(st, 6);
}

int store_vm_nics(struct store *s, uint64_t vm_id, struct nic **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_nics(pick_reader(s), vm_id, ret, ret_n);
        static const char sql[] = "SELECT vm_id, network_id, position, mac, ipv4, ipv6, id"
                                  " FROM nics WHERE vm_id = ? ORDER BY position";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        r = st ? collect(s, st, sizeof(**ret), row_nic, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

/* ---- public address pools ---- */

#define POOL_COLS                                                                          \
        "p.site, p.ipv4, p.gateway4, p.ipv6, p.gateway6, p.created_at, (SELECT COUNT(*)"   \
        " FROM nics n JOIN vms v ON v.id = n.vm_id WHERE n.network_id = 0"                \
        " AND v.site = p.site)"

static void row_pool(sqlite3_stmt *st, void *item)
{
        struct ip_pool *p = item;
        memset(p, 0, sizeof(*p));
        col_text(st, 0, p->site, sizeof(p->site));
        col_text(st, 1, p->ipv4, sizeof(p->ipv4));
        col_text(st, 2, p->gateway4, sizeof(p->gateway4));
        col_text(st, 3, p->ipv6, sizeof(p->ipv6));
        col_text(st, 4, p->gateway6, sizeof(p->gateway6));
        p->created_at = sqlite3_column_int64(st, 5);
        p->used = (uint32_t)sqlite3_column_int64(st, 6);
}

int store_pool_add(struct store *s, const struct ip_pool *p, struct ip_pool *ret)
{
        static const char site_sql[] = "SELECT 1 FROM sites WHERE slug = ?";
        static const char all[] = "SELECT " POOL_COLS " FROM ip_pools p ORDER BY p.site";
        static const char ins[] = "INSERT INTO ip_pools (site, ipv4, gateway4, ipv6, gateway6,"
                                  " created_at) VALUES (?,?,?,?,?,?)";
        static const char one[] = "SELECT " POOL_COLS " FROM ip_pools p WHERE p.site = ?";
        struct ipam_prefix a4, a6, b;
        struct ip_pool *pools = NULL;
        size_t n = 0;
        int64_t now = util_now_ms();
        int r;

        if (ipam_prefix_parse(p->ipv4, &a4, NULL, 0) < 0 ||
            (p->ipv6[0] && ipam_prefix_parse(p->ipv6, &a6, NULL, 0) < 0))
                return -EINVAL;
        if ((r = begin(s)) < 0)
                return r;
        sqlite3_stmt *st = stmt(s, site_sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, p->site, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc == SQLITE_DONE)
                return end(s, -ENOENT);
        if (rc != SQLITE_ROW)
                return end(s, db_err(s, "cannot read sites"));
        if (!(st = stmt(s, all)))
                return end(s, -EIO);
        if ((r = collect(s, st, sizeof(*pools), row_pool, (void **)&pools, &n)) < 0)
                return end(s, r);
        for (size_t i = 0; i < n; i++) {
                int clash = strcmp(pools[i].site, p->site) == 0 ? -EEXIST : 0;
                if (!clash && ipam_prefix_parse(pools[i].ipv4, &b, NULL, 0) == 0 &&
                    ipam_prefix_overlap(&a4, &b))
                        clash = -EADDRINUSE;
                if (!clash && p->ipv6[0] && pools[i].ipv6[0] &&
                    ipam_prefix_parse(pools[i].ipv6, &b, NULL, 0) == 0 &&
                    ipam_prefix_overlap(&a6, &b))
                        clash = -EADDRINUSE;
                if (clash) {
                        *ret = pools[i];
                        free(pools);
                        return end(s, clash);
                }
        }
        free(pools);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, p->site, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, p->ipv4, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, p->gateway4, -1, SQLITE_STATIC);
        if (p->ipv6[0]) {
                sqlite3_bind_text(st, 4, p->ipv6, -1, SQLITE_STATIC);
                sqlite3_bind_text(st, 5, p->gateway6, -1, SQLITE_STATIC);
        }
        sqlite3_bind_int64(st, 6, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot add address pool"));
        if (!(st = stmt(s, one)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, p->site, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot read address pool"));
        row_pool(st, ret);
        return end(s, event(s, now, "pool.added", 0, 0, p->site));
}

int store_pool_list(struct store *s, struct ip_pool **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_pool_list(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT " POOL_COLS " FROM ip_pools p ORDER BY p.site";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_pool, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_pool_remove(struct store *s, const char *site)
{
        static const char busy[] = "SELECT 1 FROM nics n JOIN vms v ON v.id = n.vm_id"
                                   " WHERE n.network_id = 0 AND v.site = ? LIMIT 1";
        static const char del[] = "DELETE FROM ip_pools WHERE site = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, busy);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, site, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot read NICs"));
        if (!(st = stmt(s, del)))
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, site, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot remove address pool"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        if (rc == SQLITE_ROW)
                return end(s, -EBUSY); /* rolls the delete back */
        return end(s, event(s, util_now_ms(), "pool.removed", 0, 0, site));
}

/* ---- DNS ---- */

static void row_dns(sqlite3_stmt *st, void *item)
{
        struct vm_dns *d = item;
        memset(d, 0, sizeof(*d));
        d->vm_id = (uint64_t)sqlite3_column_int64(st, 0);
        const unsigned char *t = sqlite3_column_text(st, 1);
        /* A name too long to keep is no name (never a cut one). */
        if (!t || util_strlcpy(d->fqdn, (const char *)t, sizeof(d->fqdn)) < 0)
                d->fqdn[0] = '\0';
        col_text(st, 2, d->ipv4, sizeof(d->ipv4));
        col_text(st, 3, d->ipv6, sizeof(d->ipv6));
}

int store_dns_list(struct store *s, const char *zone, struct vm_dns **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_dns_list(pick_reader(s), zone, ret, ret_n);
        /* The fqdn: the one place to change for a per-VM DNS name. A zone
         * given with its trailing dot does not make a double one. */
        static const char sql[] = "SELECT v.id, COALESCE(NULLIF(v.dns_name, ''),"
                                  " v.name || '.' || rtrim(?1, '.')), n.ipv4, n.ipv6"
                                  " FROM vms v JOIN nics n ON n.vm_id = v.id AND n.network_id = 0"
                                  " WHERE v.deleted_at IS NULL ORDER BY v.id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_text(st, 1, zone, -1, SQLITE_STATIC);
        r = st ? collect(s, st, sizeof(**ret), row_dns, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}
/* ---- prepaid billing ---- */

/* Keep in step with the SQL of credit_check() and store_billing_run(). */
int64_t store_day_charge(int64_t month_cents)
{
        return (month_cents * 24 + 365) / 730;
}

void store_set_billing(struct store *s, int enforce)
{
        atomic_store(&s->billing, enforce ? 1 : 0);
}

int store_billing_enforced(struct store *s)
{
        return atomic_load(&s->billing);
}

static void row_price(sqlite3_stmt *st, void *item)
{
        struct price *p = item;
        memset(p, 0, sizeof(*p));
        col_text(st, 0, p->size, sizeof(p->size));
        p->month_cents = sqlite3_column_int64(st, 1);
        p->day_cents = store_day_charge(p->month_cents);
}

int store_price_list(struct store *s, struct price **ret, size_t *ret_n)
{
        if (s->reader)
                return store_price_list(pick_reader(s), ret, ret_n);
        static const char sql[] = "SELECT size, month_cents FROM prices ORDER BY month_cents, size";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(struct price), row_price, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_price_set(struct store *s, const char *size, int64_t month_cents)
{
        static const char sql[] =
                "INSERT INTO prices (size, month_cents) VALUES (?1, ?2)"
                " ON CONFLICT (size) DO UPDATE SET month_cents = ?2";
        if (month_cents < 0 || month_cents > MONEY_PARSE_MAX_CENTS)
                return -EINVAL;
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, size, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, month_cents);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot set price"));
        return end(s, event(s, util_now_ms(), "price.set", 0, 0, size));
}

int store_credit_add(struct store *s, uint64_t account_id, int64_t cents, int64_t now,
                     int64_t *ret_balance)
{
        static const char upd[] =
                "UPDATE accounts SET credit_cents = credit_cents + ?2 WHERE id = ?1"
                " RETURNING credit_cents";
        static const char ins[] = "INSERT INTO credit_ops (account_id, amount_cents, balance_cents,"
                                  " created_at) VALUES (?,?,?,?)";
        int64_t balance;
        char data[MONEY_STR_MAX];
        if (cents <= 0 || cents > MONEY_PARSE_MAX_CENTS)
                return -EINVAL;
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, upd);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_int64(st, 2, cents);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return end(s, -ENOENT);
        if (rc != SQLITE_ROW)
                return end(s, db_err(s, "cannot add credit"));
        balance = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_int64(st, 2, cents);
        sqlite3_bind_int64(st, 3, balance);
        sqlite3_bind_int64(st, 4, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot record credit"));
        money_format(cents, data);
        r = end(s, event(s, now, "credit.added", account_id, account_id, data));
        if (r == 0 && ret_balance)
                *ret_balance = balance;
        return r;
}

int store_credit_get(struct store *s, uint64_t account_id, struct credit *ret)
{
        if (s->reader)
                return store_credit_get(pick_reader(s), account_id, ret);
        static const char sql[] =
                "SELECT a.credit_cents,"
                " (SELECT COALESCE(SUM((b.price_month_cents * 24 + 365) / 730), 0)"
                "  FROM billable b WHERE b.account_id = a.id AND b.deleted_at IS NULL),"
                " (SELECT COUNT(*) FROM billable b WHERE b.account_id = a.id"
                "  AND b.deleted_at IS NULL)"
                " FROM accounts a WHERE a.id = ?";
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        memset(ret, 0, sizeof(*ret));
                        ret->balance_cents = sqlite3_column_int64(st, 0);
                        ret->daily_cents = sqlite3_column_int64(st, 1);
                        ret->services = (uint32_t)sqlite3_column_int64(st, 2);
                        r = 0;
                } else if (rc != SQLITE_DONE) {
                        r = db_err(s, "cannot read credit");
                }
        }
        unlock(s);
        return r;
}

static void row_invoice(sqlite3_stmt *st, void *item)
{
        struct invoice_line *l = item;
        memset(l, 0, sizeof(*l));
        l->id = (uint64_t)sqlite3_column_int64(st, 0);
        l->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        l->vm_id = (uint64_t)sqlite3_column_int64(st, 2);
        l->day = sqlite3_column_int64(st, 3);
        col_text(st, 4, l->size, sizeof(l->size));
        l->amount_cents = sqlite3_column_int64(st, 5);
        l->created_at = sqlite3_column_int64(st, 6);
        col_text(st, 7, l->vm_name, sizeof(l->vm_name));
}

int store_invoice_list(struct store *s, uint64_t account_id, size_t limit,
                       struct invoice_line **ret, size_t *ret_n)
{
        if (s->reader)
                return store_invoice_list(pick_reader(s), account_id, limit, ret, ret_n);
        static const char sql[] =
                "SELECT id, account_id, vm_id, day, size, amount_cents, created_at, name"
                " FROM invoice_lines WHERE account_id = ? ORDER BY day DESC, id DESC LIMIT ?";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
                sqlite3_bind_int64(st, 2, limit ? (sqlite3_int64)limit : -1);
                r = collect(s, st, sizeof(struct invoice_line), row_invoice, (void **)ret, ret_n);
        } else {
                r = -EIO;
        }
        unlock(s);
        return r;
}

/* Inside a transaction or under rlock: the last day invoiced, -ENOENT. */
static int billing_day_locked(struct store *s, int64_t *ret_day)
{
        static const char sql[] = "SELECT value FROM meta WHERE key = 'billing_day'";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                *ret_day = sqlite3_column_int64(st, 0);
                sqlite3_reset(st);
                return 0;
        }
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? -ENOENT : db_err(s, "cannot read billing day");
}

static int billing_day_set(struct store *s, int64_t day)
{
        static const char sql[] =
                "INSERT INTO meta (key, value) VALUES ('billing_day', ?1)"
                " ON CONFLICT (key) DO UPDATE SET value = ?1";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, day);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot record billing day");
}

int store_billing_day(struct store *s, int64_t *ret_day)
{
        if (s->reader)
                return store_billing_day(pick_reader(s), ret_day);
        rlock(s);
        int r = billing_day_locked(s, ret_day);
        unlock(s);
        return r;
}

/* Forgets the vms deleted before `before`: no day left to invoice needs
 * them. */
static int billable_prune(struct store *s, int64_t before)
{
        static const char sql[] =
                "DELETE FROM billable WHERE deleted_at IS NOT NULL AND deleted_at < ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, before);
        return sqlite3_step(st) == SQLITE_DONE ? 0 : db_err(s, "cannot prune billable vms");
}

int store_billing_mark(struct store *s, int64_t day, int64_t prune_before_ms)
{
        int64_t last;
        int r = begin(s);
        if (r < 0)
                return r;
        r = billing_day_locked(s, &last);
        if (r < 0 && r != -ENOENT)
                return end(s, r);
        if (r == -ENOENT || last < day)
                r = billing_day_set(s, day);
        else
                r = 0;
        if (r == 0)
                r = billable_prune(s, prune_before_ms);
        return end(s, r);
}

int store_billing_run(struct store *s, int64_t day, int64_t start_ms, int64_t end_ms,
                      int64_t now, struct billing_run *ret)
{
        /* Every service that existed at some time in [start, end): its
         * day's charge at the price it was ordered at. */
        static const char lines[] =
                "INSERT INTO invoice_lines (account_id, vm_id, name, day, size, amount_cents,"
                " created_at)"
                " SELECT account_id, vm_id, name, ?1, size, (price_month_cents * 24 + 365) / 730,"
                " ?4 FROM billable WHERE created_at < ?3"
                " AND (deleted_at IS NULL OR deleted_at >= ?2) AND price_month_cents > 0";
        static const char draw[] =
                "UPDATE accounts SET credit_cents = credit_cents -"
                " (SELECT SUM(amount_cents) FROM invoice_lines l"
                "  WHERE l.day = ?1 AND l.account_id = accounts.id)"
                " WHERE id IN (SELECT account_id FROM invoice_lines WHERE day = ?1)";
        static const char total[] =
                "SELECT COUNT(*), COALESCE(SUM(amount_cents), 0), COUNT(DISTINCT account_id)"
                " FROM invoice_lines WHERE day = ?";
        struct billing_run run = { 0 };
        int64_t last;
        sqlite3_stmt *st;
        if (end_ms <= start_ms)
                return -EINVAL;
        int r = begin(s);
        if (r < 0)
                return r;
        r = billing_day_locked(s, &last);
        if (r == 0 && day <= last)
                return end(s, -EALREADY); /* invoiced already: nothing charged twice */
        if (r == 0 && day > last + 1)
                return end(s, -EINVAL); /* a day would be skipped */
        if (r < 0 && r != -ENOENT)
                return end(s, r);
        if (!(st = stmt(s, lines)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, day);
        sqlite3_bind_int64(st, 2, start_ms);
        sqlite3_bind_int64(st, 3, end_ms);
        sqlite3_bind_int64(st, 4, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot write invoice lines"));
        if (!(st = stmt(s, draw)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, day);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot draw credit"));
        if (!(st = stmt(s, total)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, day);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot sum invoice lines"));
        run.lines = (size_t)sqlite3_column_int64(st, 0);
        run.total_cents = sqlite3_column_int64(st, 1);
        run.accounts = (size_t)sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
        r = billing_day_set(s, day);
        if (r == 0)
                r = billable_prune(s, end_ms); /* the next day starts at end_ms */
        if (r == 0) {
                char data[64];
                snprintf(data, sizeof(data), "day %lld: %zu lines", (long long)day, run.lines);
                r = event(s, now, "billing.run", 0, 0, data);
        }
        r = end(s, r);
        if (r == 0 && ret)
                *ret = run;
        return r;
}

/* ---- the Tilaa API ---- */

#define API_USER_COLS "id, account_id, email, first_name, last_name, hash, created_at"

static void row_api_user(sqlite3_stmt *st, void *item)
{
        struct api_user *u = item;
        memset(u, 0, sizeof(*u));
        u->id = (uint64_t)sqlite3_column_int64(st, 0);
        u->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, u->email, sizeof(u->email));
        col_text(st, 3, u->first_name, sizeof(u->first_name));
        col_text(st, 4, u->last_name, sizeof(u->last_name));
        col_text(st, 5, u->hash, sizeof(u->hash));
        u->created_at = sqlite3_column_int64(st, 6);
}

int store_api_user_create(struct store *s, const struct api_user *u, struct api_user *ret)
{
        static const char acc[] = "SELECT 1 FROM accounts WHERE id = ?";
        static const char ins[] =
                "INSERT INTO api_users (account_id, email, first_name, last_name, hash,"
                " created_at) VALUES (?,?,?,?,?,?)";
        static const char sel[] = "SELECT " API_USER_COLS " FROM api_users WHERE id = ?";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, acc);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)u->account_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, -ENOENT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)u->account_id);
        sqlite3_bind_text(st, 2, u->email, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, u->first_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, u->last_name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, u->hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, now);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_CONSTRAINT)
                return end(s, -EEXIST);
        if (rc != SQLITE_DONE)
                return end(s, db_err(s, "cannot create API user"));
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot read API user"));
        row_api_user(st, ret);
        return end(s, event(s, now, "api_user.created", u->account_id, id, u->email));
}

int store_api_user_by_email(struct store *s, const char *email, struct api_user *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_api_user_by_email(pick_reader(s), email, ret);
        static const char sql[] = "SELECT " API_USER_COLS " FROM api_users WHERE email = ?";
        return one_by_text(s, sql, email, row_api_user, ret, "cannot read API user");
}

int store_api_user_list(struct store *s, uint64_t account_id, struct api_user **ret,
                        size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_api_user_list(pick_reader(s), account_id, ret, ret_n);
        static const char sql[] =
                "SELECT " API_USER_COLS " FROM api_users WHERE account_id = ? ORDER BY id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        r = st ? collect(s, st, sizeof(**ret), row_api_user, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_api_user_delete(struct store *s, uint64_t account_id, const char *email)
{
        static const char sql[] = "DELETE FROM api_users WHERE account_id = ? AND email = ?";
        /* its SSH keys stay the account's, bound to no user */
        static const char keys[] = "UPDATE ssh_keys SET user_id = 0 WHERE user_id = ?";
        static const char sel[] = "SELECT id FROM api_users WHERE account_id = ? AND email = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, email, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)sqlite3_column_int64(st, 0);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, email, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete API user"));
        if (!(st = stmt(s, keys)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot unbind SSH keys"));
        return end(s, event(s, util_now_ms(), "api_user.deleted", account_id, id, email));
}

int store_site_set_tz(struct store *s, const char *slug, const char *tz)
{
        static const char sql[] = "UPDATE sites SET tz = ? WHERE slug = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_text(st, 1, tz, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, slug, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot set time zone"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, util_now_ms(), "site.updated", 0, 0, tz));
}

int store_image_by_num(struct store *s, uint64_t num, struct image *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_image_by_num(pick_reader(s), num, ret);
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE num = ? AND removed_at IS NULL";
        int r = -ENOENT;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)num);
                int rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        row_image(st, ret);
                        r = 0;
                } else if (rc != SQLITE_DONE) {
                        r = db_err(s, "cannot read image");
                }
        }
        unlock(s);
        return r;
}

static void row_vm_tilaa(sqlite3_stmt *st, void *item)
{
        struct vm_tilaa *t = item;
        memset(t, 0, sizeof(*t));
        t->vm_id = (uint64_t)sqlite3_column_int64(st, 0);
        col_text(st, 1, t->dns_name, sizeof(t->dns_name));
        col_text(st, 2, t->admin_password, sizeof(t->admin_password));
        t->cancel_at = sqlite3_column_int64(st, 3);
        t->site_id = (uint64_t)sqlite3_column_int64(st, 4);
        col_text(st, 5, t->site_name, sizeof(t->site_name));
        col_text(st, 6, t->site_tz, sizeof(t->site_tz));
        t->template_id = (uint64_t)sqlite3_column_int64(st, 7);
        col_text(st, 8, t->template_name, sizeof(t->template_name));
}

int store_vm_tilaa_list(struct store *s, uint64_t account_id, uint64_t vm_id,
                        struct vm_tilaa **ret, size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_vm_tilaa_list(pick_reader(s), account_id, vm_id, ret, ret_n);
        static const char sql[] =
                "SELECT v.id, v.dns_name, v.admin_password, COALESCE(v.cancel_at, 0),"
                " COALESCE(x.id, 0), COALESCE(x.name, v.site), COALESCE(x.tz, 'UTC'),"
                " COALESCE(i.num, 0), COALESCE(i.name, v.image)"
                " FROM vms v LEFT JOIN sites x ON x.slug = v.site"
                " LEFT JOIN images i ON i.slug = v.image"
                " WHERE v.account_id = ?1 AND v.deleted_at IS NULL AND (?2 = 0 OR v.id = ?2)"
                " ORDER BY v.id";
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st) {
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)vm_id);
        }
        r = st ? collect(s, st, sizeof(**ret), row_vm_tilaa, (void **)ret, ret_n) : -EIO;
        unlock(s);
        if (r == 0 && vm_id && *ret_n == 0) {
                free(*ret);
                *ret = NULL;
                r = -ENOENT;
        }
        return r;
}

static int vm_cancelled_locked(struct store *s, uint64_t vm_id, int *ret)
{
        static const char sql[] = "SELECT cancel_at IS NOT NULL FROM vms WHERE id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return db_err(s, "cannot read vm");
        *ret = sqlite3_column_int(st, 0);
        return 0;
}

int store_vm_edit(struct store *s, const struct vm_edit *e, struct vm *ret)
{
        static const char name_upd[] = "UPDATE vms SET name = ?2 WHERE id = ?1";
        static const char size_upd[] =
                "UPDATE vms SET size = ?2, vcpus = ?3, ram_mb = ?4, disk_gb = ?5, cpu_cap = ?6,"
                " resize_seq = resize_seq + ?7 WHERE id = ?1";
        static const char image_upd[] = "UPDATE vms SET image = ?2 WHERE id = ?1";
        static const char rebuild[] =
                "UPDATE vms SET rebuild_seq = rebuild_seq + 1, want = 0, source_vm = 0,"
                " source_snap = 0 WHERE id = ?1";
        static const char snaps_go[] =
                "UPDATE snapshots SET state = 'deleting' WHERE vm_id = ? AND state != 'deleting'";
        static const struct sched_params defaults = {
                .cpu_ratio = 4.0, .ram_ratio = 1.0, .disk_ratio = 1.0, .strategy = SCHED_SPREAD
        };
        struct sched_params sp = e->sched ? *e->sched : defaults;
        int64_t now = util_now_ms();
        int reinstall = e->reinstall || e->image;
        struct vm v;
        sqlite3_stmt *st;
        int cancelled = 0, r = begin(s);

        if (r < 0)
                return r;
        if ((r = get_vm_locked(s, e->account_id, e->vm_id, &v)) < 0)
                return end(s, r);
        if ((r = vm_cancelled_locked(s, v.id, &cancelled)) < 0)
                return end(s, r);
        if (cancelled)
                return end(s, -ECANCELED);
        if (e->resize && e->disk_gb < v.disk_gb && !reinstall)
                return end(s, -EINVAL);
        if (e->resize) {
                int found;
                int64_t price = 0;
                if ((r = bill_check_size(s, e->account_id, v.id, e->size, e->why, e->why_len,
                                         &price)) < 0 ||
                    (r = bill_reprice(s, v.id, e->size, price)) < 0)
                        return end(s, r);
                if (!s->hc_loaded && (r = hc_load(s)) < 0)
                        return end(s, r);
                size_t pos = hc_find(s, v.host_id, &found);
                if (!found)
                        return end(s, -EIO);
                struct sched_host h = s->hc[pos];
                struct sched_result res;
                h.live = 1;
                h.draining = 0;
                h.in_group = 0;
                h.inflight = 0;
                h.vcpus_used = h.vcpus_used > v.vcpus ? h.vcpus_used - v.vcpus : 0;
                h.ram_mb_used = h.ram_mb_used > v.ram_mb ? h.ram_mb_used - v.ram_mb : 0;
                h.disk_gb_used[v.storage] = h.disk_gb_used[v.storage] > v.disk_gb
                                                    ? h.disk_gb_used[v.storage] - v.disk_gb
                                                    : 0;
                struct sched_req sr = { .vcpus = e->vcpus, .ram_mb = e->ram_mb,
                                        .disk_gb = e->disk_gb, .storage = v.storage };
                if ((r = sched_place(&h, 1, &sr, &sp, &res)) < 0)
                        return end(s, r);
                if (!res.found) {
                        if (e->why)
                                sched_explain(&res, &sr, e->why, e->why_len);
                        return end(s, -ENOSPC);
                }
                if (!(st = stmt(s, size_upd)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
                sqlite3_bind_text(st, 2, e->size, -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 3, e->vcpus);
                sqlite3_bind_int64(st, 4, e->ram_mb);
                sqlite3_bind_int64(st, 5, e->disk_gb);
                sqlite3_bind_int(st, 6, e->cpu_cap > 0 && e->cpu_cap < 100 ? (int)e->cpu_cap : 0);
                /* a resize only when something the guest sees changes */
                int changed = e->vcpus != v.vcpus || e->ram_mb != v.ram_mb ||
                              e->disk_gb != v.disk_gb ||
                              (e->cpu_cap % 100) != (v.cpu_cap % 100);
                sqlite3_bind_int(st, 7, changed);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot resize vm"));
                r = reserve(s, v.host_id, -1, v.vcpus, v.ram_mb, v.disk_gb, v.storage, 0);
                if (r == 0)
                        r = reserve(s, v.host_id, 1, e->vcpus, e->ram_mb, e->disk_gb, v.storage,
                                    0);
                if (r == 0 && changed)
                        r = event(s, now, "vps.resized", e->account_id, v.id, e->size);
                if (r < 0)
                        return end(s, r);
        }
        if (e->name) {
                if (!(st = stmt(s, name_upd)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
                sqlite3_bind_text(st, 2, e->name, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot rename vm"));
                if (strcmp(e->name, v.name) != 0 &&
                    (r = event(s, now, "vps.renamed", e->account_id, v.id, e->name)) < 0)
                        return end(s, r);
        }
        if (e->image) {
                if (!(st = stmt(s, image_upd)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
                sqlite3_bind_text(st, 2, e->image, -1, SQLITE_STATIC);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot change image"));
        }
        if (reinstall) {
                if (!(st = stmt(s, rebuild)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot record rebuild"));
                if (!(st = stmt(s, snaps_go)))
                        return end(s, -EIO);
                sqlite3_bind_int64(st, 1, (sqlite3_int64)v.id);
                if (sqlite3_step(st) != SQLITE_DONE)
                        return end(s, db_err(s, "cannot delete snapshots"));
                if (sqlite3_changes(s->db) > 0 && (r = snap_pending_sync(s, v.id)) < 0)
                        return end(s, r);
                if ((r = event(s, now, "vps.rebuild", e->account_id, v.id,
                               e->image ? e->image : "")) < 0)
                        return end(s, r);
        }
        r = bump_generation(s, v.host_id);
        if (r == 0)
                r = get_vm_locked(s, e->account_id, v.id, ret);
        return end(s, r);
}

int store_vm_cancel(struct store *s, uint64_t account_id, uint64_t vm_id, int64_t cancel_at)
{
        static const char sql[] = "UPDATE vms SET cancel_at = ?3 WHERE id = ?1"
                                  " AND account_id = ?2 AND deleted_at IS NULL";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)vm_id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        if (cancel_at)
                sqlite3_bind_int64(st, 3, cancel_at);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot cancel vm"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        char data[32];
        snprintf(data, sizeof(data), "%lld", (long long)cancel_at);
        return end(s, event(s, util_now_ms(), cancel_at ? "vps.cancelled" : "vps.uncancelled",
                            account_id, vm_id, data));
}

int store_vm_cancel_due(struct store *s, int64_t now_ms, uint64_t **ret_hosts, size_t *ret_n)
{
        static const char sql[] =
                "SELECT id, account_id FROM vms WHERE cancel_at IS NOT NULL AND cancel_at <= ?"
                " AND deleted_at IS NULL ORDER BY id LIMIT 256";
        uint64_t *hosts = NULL;
        size_t n = 0, cap = 0;
        int r = 0;

        for (;;) {
                uint64_t ids[256][2];
                size_t k = 0;
                rlock(s);
                sqlite3_stmt *st = stmt(s, sql);
                if (!st) {
                        unlock(s);
                        r = -EIO;
                        break;
                }
                sqlite3_bind_int64(st, 1, now_ms);
                int rc;
                while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < 256) {
                        ids[k][0] = (uint64_t)sqlite3_column_int64(st, 0);
                        ids[k][1] = (uint64_t)sqlite3_column_int64(st, 1);
                        k++;
                }
                if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                        r = db_err(s, "cannot read cancelled vms");
                unlock(s);
                if (r < 0 || k == 0)
                        break;
                for (size_t i = 0; i < k && r == 0; i++) {
                        uint64_t host = 0;
                        int d = begin(s);
                        if (d == 0)
                                d = end(s, vm_delete_locked(s, ids[i][1], ids[i][0], now_ms,
                                                            &host));
                        if (d == -ENOENT)
                                continue; /* gone meanwhile */
                        if (d < 0) {
                                r = d;
                                break;
                        }
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 16;
                                uint64_t *nh = realloc(hosts, ncap * sizeof(*nh));
                                if (!nh) {
                                        r = -ENOMEM;
                                        break;
                                }
                                hosts = nh;
                                cap = ncap;
                        }
                        hosts[n++] = host;
                        log_info("vm %llu: deleted, its cancellation date has come",
                                 (unsigned long long)ids[i][0]);
                }
                if (r < 0 || k < 256)
                        break;
        }
        if (r < 0) {
                free(hosts);
                return r;
        }
        *ret_hosts = hosts;
        *ret_n = n;
        return 0;
}

#define METADATA_COLS "id, account_id, name, user_data, created_at, modified_at"

static void row_metadata(sqlite3_stmt *st, void *item)
{
        struct metadata *m = item;
        memset(m, 0, sizeof(*m));
        m->id = (uint64_t)sqlite3_column_int64(st, 0);
        m->account_id = (uint64_t)sqlite3_column_int64(st, 1);
        col_text(st, 2, m->name, sizeof(m->name));
        const char *ud = (const char *)sqlite3_column_text(st, 3);
        m->user_data = strdup(ud ? ud : ""); /* NULL on out of memory: checked by callers */
        m->created_at = sqlite3_column_int64(st, 4);
        m->modified_at = sqlite3_column_int64(st, 5);
}

void store_metadata_free(struct metadata *m, size_t n)
{
        for (size_t i = 0; m && i < n; i++)
                free(m[i].user_data);
        free(m);
}

static int metadata_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                               struct metadata *ret)
{
        static const char sql[] =
                "SELECT " METADATA_COLS " FROM metadata WHERE id = ? AND account_id = ?";
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return -ENOENT;
        if (rc != SQLITE_ROW)
                return db_err(s, "cannot read metadata");
        row_metadata(st, ret);
        if (!ret->user_data)
                return -ENOMEM;
        return 0;
}

int store_metadata_create(struct store *s, uint64_t account_id, const char *name,
                          const char *user_data, struct metadata *ret)
{
        static const char count[] = "SELECT COUNT(*) FROM metadata WHERE account_id = ?";
        static const char ins[] = "INSERT INTO metadata (account_id, name, user_data, created_at,"
                                  " modified_at) VALUES (?1, ?2, ?3, ?4, ?4)";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, count);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        if (sqlite3_step(st) != SQLITE_ROW)
                return end(s, db_err(s, "cannot count metadata"));
        if (sqlite3_column_int64(st, 0) >= STORE_METADATA_PER_ACCOUNT)
                return end(s, -EDQUOT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, user_data, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot create metadata"));
        uint64_t id = (uint64_t)sqlite3_last_insert_rowid(s->db);
        r = event(s, now, "metadata.created", account_id, id, name);
        if (r == 0)
                r = metadata_get_locked(s, account_id, id, ret);
        return end(s, r);
}

int store_metadata_get(struct store *s, uint64_t account_id, uint64_t id, struct metadata *ret)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_metadata_get(pick_reader(s), account_id, id, ret);
        rlock(s);
        int r = metadata_get_locked(s, account_id, id, ret);
        unlock(s);
        return r;
}

int store_metadata_list(struct store *s, uint64_t account_id, struct metadata **ret,
                        size_t *ret_n)
{
        if (s->reader) /* reads: a read connection, committed data only */
                return store_metadata_list(pick_reader(s), account_id, ret, ret_n);
        static const char sql[] =
                "SELECT " METADATA_COLS " FROM metadata WHERE account_id = ? ORDER BY id";
        struct metadata *m = NULL;
        size_t n = 0;
        int r;
        rlock(s);
        sqlite3_stmt *st = stmt(s, sql);
        if (st)
                sqlite3_bind_int64(st, 1, (sqlite3_int64)account_id);
        r = st ? collect(s, st, sizeof(*m), row_metadata, (void **)&m, &n) : -EIO;
        unlock(s);
        for (size_t i = 0; r == 0 && i < n; i++)
                if (!m[i].user_data)
                        r = -ENOMEM;
        if (r < 0) {
                if (m)
                        store_metadata_free(m, n);
                return r;
        }
        *ret = m;
        *ret_n = n;
        return 0;
}

int store_metadata_update(struct store *s, uint64_t account_id, uint64_t id, const char *name,
                          const char *user_data, struct metadata *ret)
{
        static const char sql[] =
                "UPDATE metadata SET name = COALESCE(?3, name), user_data = COALESCE(?4,"
                " user_data), modified_at = ?5 WHERE id = ?1 AND account_id = ?2";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        if (name)
                sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
        if (user_data)
                sqlite3_bind_text(st, 4, user_data, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot update metadata"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        r = event(s, now, "metadata.updated", account_id, id, "");
        if (r == 0)
                r = metadata_get_locked(s, account_id, id, ret);
        return end(s, r);
}

int store_metadata_delete(struct store *s, uint64_t account_id, uint64_t id)
{
        static const char sql[] = "DELETE FROM metadata WHERE id = ? AND account_id = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)account_id);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot delete metadata"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, util_now_ms(), "metadata.deleted", account_id, id, ""));
}

int store_sshkey_update(struct store *s, const struct ssh_key *k, struct ssh_key *ret)
{
        static const char dup[] =
                "SELECT id FROM ssh_keys WHERE account_id = ? AND fingerprint = ? AND id != ?";
        static const char sql[] =
                "UPDATE ssh_keys SET name = ?3, public_key = ?4, fingerprint = ?5, user_id = ?6,"
                " modified_at = ?7 WHERE id = ?1 AND account_id = ?2";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        sqlite3_stmt *st = stmt(s, dup);
        if (!st)
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)k->account_id);
        sqlite3_bind_text(st, 2, k->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)k->id);
        if (sqlite3_step(st) == SQLITE_ROW)
                return end(s, -EEXIST);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        sqlite3_bind_int64(st, 1, (sqlite3_int64)k->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)k->account_id);
        sqlite3_bind_text(st, 3, k->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, k->public_key, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, k->fingerprint, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)k->user_id);
        sqlite3_bind_int64(st, 7, now);
        if (sqlite3_step(st) != SQLITE_DONE)
                return end(s, db_err(s, "cannot update SSH key"));
        if (sqlite3_changes(s->db) == 0)
                return end(s, -ENOENT);
        r = event(s, now, "ssh_key.updated", k->account_id, k->id, k->name);
        if (r == 0)
                r = sshkey_get_locked(s, k->account_id, k->id, ret);
        return end(s, r);
}
