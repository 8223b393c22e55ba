/* test_billing_store: prepaid billing on a real store (SQLite, or
 * PostgreSQL with TASMAN_TEST_PG: see pg_test.h): prices,
 * credit, orders refused in the creating transaction (also under
 * concurrent orders), daily invoicing over simulated Europe/Amsterdam
 * midnights across DST changes, catch-up of missed days exactly once,
 * and the jobs list. */
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
#include <sqlite3.h>

#include "jobs.h"
#include "money.h"
#include "store.h"
#include "tz.h"

#include "pg_test.h"

#define SMALL      "standard-1vcpu-1gb" /* 6.00 a month: 0.20 a day */
#define SMALL_DAY  20
#define MEDIUM     "standard-2vcpu-4gb" /* 24.00 a month: 0.79 a day */
#define MEDIUM_DAY 79

struct fx {
        char dir[64];
        char path[512]; /* the SQLite file, or the PostgreSQL database's URL */
        char db[64];    /* PostgreSQL: the test's database */
        struct store *s;
        const struct tz *ams;
        uint64_t acc, other;
        uint64_t host;
};

/* ms of a UTC time */
static int64_t utc(int y, int mon, int d, int h, int mi, int s)
{
        return (tz_days_from_civil(y, mon, d) * 86400 + h * 3600 + mi * 60 + s) * 1000;
}

static int64_t day_of(int y, int mon, int d)
{
        return tz_days_from_civil(y, mon, d);
}

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        struct account a;
        struct msg_hello h = {.vcpus = 512, .ram_mb = 1 << 22, .disk_gb = 1 << 20};
        int rebooted;
        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "/tmp/tasman-billing.XXXXXX");
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
        snprintf(h.host_id, sizeof(h.host_id), "node-1");
        snprintf(h.site, sizeof(h.site), "ams1");
        snprintf(h.underlay_ip, sizeof(h.underlay_ip), "10.0.0.1");
        snprintf(h.boot_id, sizeof(h.boot_id), "boot-1");
        snprintf(h.agent_version, sizeof(h.agent_version), "0.1.0");
        snprintf(h.hv_type, sizeof(h.hv_type), "test");
        /* a host seen "now" for every clock these tests use */
        assert_int_equal(store_host_hello(f->s, &h, INT64_MAX / 4, &f->host, &rebooted), 0);
        f->ams = tz_get("Europe/Amsterdam");
        assert_non_null(f->ams);
        store_set_billing(f->s, 1);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        char cmd[160];
        store_free(f->s);
        if (f->db[0])
                pg_db_drop(f->db);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static int order_at(struct fx *f, uint64_t account, const char *name, const char *size, int64_t now,
                    struct vm *ret, char *why, size_t why_len)
{
        struct vm v;
        const struct vm_new req = {
            .account_id = account,
            .name = name,
            .size = size,
            .image = "debian-12",
            .vcpus = 1,
            .ram_mb = 1024,
            .disk_gb = 25,
            .why = why,
            .why_len = why_len,
        };
        return store_vm_create(f->s, &req, now, 0, ret ? ret : &v);
}

static int64_t balance(struct fx *f, uint64_t account)
{
        struct credit c;
        assert_int_equal(store_credit_get(f->s, account, &c), 0);
        return c.balance_cents;
}

static void credit(struct fx *f, uint64_t account, int64_t cents)
{
        int64_t b = 0, before = balance(f, account);
        assert_int_equal(store_credit_add(f->s, account, cents, utc(2024, 1, 1, 0, 0, 0), &b), 0);
        assert_int_equal(b, before + cents);
}

/* Runs SQL on the PostgreSQL database behind the store's back: its first
 * line of output. */
static void pg_sql(struct fx *f, const char *sql, char *out, size_t len)
{
        char buf[256];
        if (psql(f->db, sql, out ? out : buf, out ? len : sizeof(buf)) != 0)
                fail_msg("psql: %s: %s", sql, out ? out : buf);
}

static int64_t int_in_file(struct fx *f, const char *sql)
{
        if (f->db[0]) {
                char out[64];
                pg_sql(f, sql, out, sizeof(out));
                return out[0] ? strtoll(out, NULL, 10) : -1;
        }
        sqlite3 *db;
        sqlite3_stmt *st;
        int64_t v = -1;
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

/* Deletes a vm, as if at `at` (the store stamps deletions with the wall
 * clock). */
static void delete_at(struct fx *f, uint64_t account, uint64_t vm_id, int64_t at)
{
        sqlite3 *db;
        char sql[256];
        uint64_t host;
        assert_int_equal(store_vm_delete(f->s, account, vm_id, &host), 0);
        snprintf(sql, sizeof(sql),
                 "UPDATE vms SET deleted_at = %1$lld WHERE id = %2$llu;"
                 " UPDATE billable SET deleted_at = %1$lld WHERE vm_id = %2$llu",
                 (long long)at, (unsigned long long)vm_id);
        if (f->db[0]) {
                pg_sql(f, sql, NULL, 0);
                return;
        }
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

/* The vm row goes, as when its host no longer reports it. */
static void purge(struct fx *f, uint64_t vm_id)
{
        sqlite3 *db;
        char sql[128];
        snprintf(sql, sizeof(sql), "DELETE FROM vms WHERE id = %llu AND deleted_at IS NOT NULL",
                 (unsigned long long)vm_id);
        if (f->db[0]) {
                char q[160];
                snprintf(q, sizeof(q), "WITH d AS (%s RETURNING 1) SELECT COUNT(*) FROM d", sql);
                assert_int_equal(int_in_file(f, q), 1);
                return;
        }
        assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
        sqlite3_busy_timeout(db, 5000);
        assert_int_equal(sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_changes(db), 1);
        sqlite3_close(db);
}

static size_t lines_of(struct fx *f, uint64_t account, int64_t day, uint64_t vm_id)
{
        struct invoice_line *ls = NULL;
        size_t n = 0, hits = 0;
        assert_int_equal(store_invoice_list(f->s, account, 0, &ls, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (ls[i].day == day && (!vm_id || ls[i].vm_id == vm_id))
                        hits++;
        free(ls);
        return hits;
}

static size_t catch_up(struct fx *f, int64_t now)
{
        size_t days = 99;
        assert_int_equal(jobs_billing_catch_up(f->s, f->ams, now, &days), 0);
        return days;
}

/* ---- tests ---- */

static void test_money(void **state)
{
        static const struct {
                const char *in;
                int r;
                int64_t cents;
        } cases[] = {
            {"12.50", 0, 1250},
            {"12.5", 0, 1250},
            {"12", 0, 1200},
            {"0.01", 0, 1},
            {"0", 0, 0},
            {"1000000", 0, 100000000},
            {"1000000.01", -ERANGE, 0},
            {"99999999999999999999", -ERANGE, 0},
            {"", -EINVAL, 0},
            {".5", -EINVAL, 0},
            {"12.", -EINVAL, 0},
            {"12.505", -EINVAL, 0},
            {"-1", -EINVAL, 0},
            {"+1", -EINVAL, 0},
            {" 1", -EINVAL, 0},
            {"1 ", -EINVAL, 0},
            {"1,50", -EINVAL, 0},
            {"1e3", -EINVAL, 0},
            {"0x10", -EINVAL, 0},
        };
        char buf[MONEY_STR_MAX];
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int64_t c = -7;
                int r = money_parse(cases[i].in, &c);
                if (r != cases[i].r || (r == 0 && c != cases[i].cents) || (r < 0 && c != -7))
                        fail_msg("money_parse(\"%s\") = %d, %lld", cases[i].in, r, (long long)c);
        }
        money_format(0, buf);
        assert_string_equal(buf, "0.00");
        money_format(1250, buf);
        assert_string_equal(buf, "12.50");
        money_format(-5, buf);
        assert_string_equal(buf, "-0.05");
        money_format(INT64_MIN, buf);
        assert_string_equal(buf, "-92233720368547758.08");
}

static void test_prices(void **state)
{
        struct fx *f = *state;
        static const int64_t day[][2] = {
            {0, 0}, {15, 0}, {16, 1}, {600, 20}, {1200, 39}, {2400, 79}, {4800, 158}, {9600, 316},
        };
        struct price *ps = NULL;
        size_t n = 0;
        for (size_t i = 0; i < sizeof(day) / sizeof(day[0]); i++)
                assert_int_equal(store_day_charge(day[i][0]), day[i][1]);
        assert_int_equal(store_price_list(f->s, &ps, &n), 0);
        assert_int_equal(n, 5);
        assert_string_equal(ps[0].size, SMALL);
        assert_int_equal(ps[0].month_cents, 600);
        assert_int_equal(ps[0].day_cents, SMALL_DAY);
        assert_string_equal(ps[4].size, "standard-8vcpu-16gb");
        free(ps);
        assert_int_equal(store_price_set(f->s, "custom", 3650), 0);
        assert_int_equal(store_price_set(f->s, "custom", -1), -EINVAL);
        assert_int_equal(store_price_list(f->s, &ps, &n), 0);
        assert_int_equal(n, 6);
        free(ps);
}

static void test_credit(void **state)
{
        struct fx *f = *state;
        struct credit c;
        int64_t b = -1;
        assert_int_equal(balance(f, f->acc), 0);
        credit(f, f->acc, 1250);
        credit(f, f->acc, 1);
        assert_int_equal(balance(f, f->acc), 1251);
        assert_int_equal(balance(f, f->other), 0);
        assert_int_equal(store_credit_add(f->s, 9999, 100, 0, &b), -ENOENT);
        assert_int_equal(store_credit_add(f->s, f->acc, 0, 0, &b), -EINVAL);
        assert_int_equal(store_credit_add(f->s, f->acc, -5, 0, &b), -EINVAL);
        assert_int_equal(store_credit_add(f->s, f->acc, MONEY_PARSE_MAX_CENTS + 1, 0, &b), -EINVAL);
        assert_int_equal(b, -1);
        assert_int_equal(store_credit_get(f->s, 9999, &c), -ENOENT);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM credit_ops"), 2);
}

/* An order the credit does not cover changes nothing; covered, it goes. */
static void test_order_refused(void **state)
{
        struct fx *f = *state;
        int64_t now = utc(2024, 5, 1, 12, 0, 0);
        char why[256] = "";
        struct vm v;
        struct credit c;
        int64_t events = int_in_file(f, "SELECT COUNT(*) FROM events");
        assert_int_equal(order_at(f, f->acc, "a", SMALL, now, &v, why, sizeof(why)), -EDQUOT);
        assert_non_null(strstr(why, "EUR 0.00"));
        assert_non_null(strstr(why, "EUR 0.20"));
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM vms"), 0);
        assert_int_equal(int_in_file(f, "SELECT vcpus_used FROM hosts"), 0);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM events"), events);

        credit(f, f->acc, SMALL_DAY * 2 - 1); /* one day of one, not of two */
        assert_int_equal(order_at(f, f->acc, "a", SMALL, now, &v, why, sizeof(why)), 0);
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable"), 600);
        assert_int_equal(order_at(f, f->acc, "b", SMALL, now, &v, why, sizeof(why)), -EDQUOT);
        assert_non_null(strstr(why, "EUR 0.39"));
        assert_int_equal(store_credit_get(f->s, f->acc, &c), 0);
        assert_int_equal(c.daily_cents, SMALL_DAY);
        assert_int_equal(c.services, 1);
        /* a size without a price costs nothing and is always covered */
        assert_int_equal(order_at(f, f->acc, "free", "s-test", now, &v, NULL, 0), 0);
        assert_int_equal(v.id > 0, 1);
        /* nothing is drawn at the order: invoicing does that */
        assert_int_equal(balance(f, f->acc), SMALL_DAY * 2 - 1);
        /* another account's credit is its own */
        assert_int_equal(order_at(f, f->other, "x", SMALL, now, &v, NULL, 0), -EDQUOT);
        /* not enforced: every order goes */
        store_set_billing(f->s, 0);
        assert_int_equal(order_at(f, f->other, "x", MEDIUM, now, &v, NULL, 0), 0);
        assert_int_equal(order_at(f, f->acc, "b", SMALL, now, &v, NULL, 0), 0);
}

struct racer {
        struct fx *f;
        int id;
        int ok, refused, other;
};

static void *race(void *arg)
{
        struct racer *r = arg;
        for (int i = 0; i < 6; i++) {
                char name[32];
                snprintf(name, sizeof(name), "r%d-%d", r->id, i);
                int rc = order_at(r->f, r->f->acc, name, SMALL, utc(2024, 5, 1, 12, 0, i), NULL,
                                  NULL, 0);
                if (rc == 0)
                        r->ok++;
                else if (rc == -EDQUOT)
                        r->refused++;
                else
                        r->other++;
        }
        return NULL;
}

/* Eight threads order against one credit: exactly as many are accepted as
 * it covers. */
static void test_concurrent_orders(void **state)
{
        struct fx *f = *state;
        pthread_t t[8];
        struct racer rs[8];
        int ok = 0, refused = 0;
        credit(f, f->acc, SMALL_DAY * 7 + SMALL_DAY - 1); /* covers 7 */
        for (int i = 0; i < 8; i++) {
                rs[i] = (struct racer){.f = f, .id = i};
                assert_int_equal(pthread_create(&t[i], NULL, race, &rs[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
                assert_int_equal(pthread_join(t[i], NULL), 0);
                assert_int_equal(rs[i].other, 0);
                ok += rs[i].ok;
                refused += rs[i].refused;
        }
        assert_int_equal(ok, 7);
        assert_int_equal(refused, 8 * 6 - 7);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM vms WHERE deleted_at IS NULL"), 7);
}

/* Spring forward (Sunday 2024-03-31 is 23 hours long in Amsterdam): the
 * day's bounds are local midnights. */
static void test_invoice_spring(void **state)
{
        struct fx *f = *state;
        struct vm early, late, gone, next;
        credit(f, f->acc, 100000);
        /* billing starts: the first run only records yesterday */
        assert_int_equal(catch_up(f, utc(2024, 3, 30, 10, 0, 0)), 0);
        int64_t last = 0;
        assert_int_equal(store_billing_day(f->s, &last), 0);
        assert_int_equal(last, day_of(2024, 3, 29));

        assert_int_equal(
            order_at(f, f->acc, "early", SMALL, utc(2024, 3, 30, 10, 0, 0), &early, NULL, 0), 0);
        /* 2024-03-31 23:59:59 +02 */
        assert_int_equal(
            order_at(f, f->acc, "late", MEDIUM, utc(2024, 3, 31, 21, 59, 59), &late, NULL, 0), 0);
        assert_int_equal(
            order_at(f, f->acc, "gone", SMALL, utc(2024, 3, 30, 11, 0, 0), &gone, NULL, 0), 0);
        /* 2024-04-01 00:00:00 +02: not of the 31st */
        assert_int_equal(
            order_at(f, f->acc, "next", SMALL, utc(2024, 3, 31, 22, 0, 0), &next, NULL, 0), 0);
        /* deleted 2024-03-30 23:59:59 +01: charged for the 30th only, even
         * though its row is purged (its host reported it gone) before */
        delete_at(f, f->acc, gone.id, utc(2024, 3, 30, 22, 59, 59));
        purge(f, gone.id);

        /* midnight of the 31st (+01): invoices the 30th */
        assert_int_equal(catch_up(f, utc(2024, 3, 30, 23, 0, 1)), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 30), 0), 2);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 30), gone.id), 1);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM invoice_lines WHERE name = 'gone'"),
                         1);
        /* invoiced for its last day: forgotten */
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM billable WHERE name = 'gone'"), 0);
        assert_int_equal(balance(f, f->acc), 100000 - 2 * SMALL_DAY);
        /* a second of the same midnight: nothing more */
        assert_int_equal(catch_up(f, utc(2024, 3, 30, 23, 0, 2)), 0);
        assert_int_equal(balance(f, f->acc), 100000 - 2 * SMALL_DAY);
        /* still the 31st at 23:59:59 +02 (21:59:59Z) */
        assert_int_equal(catch_up(f, utc(2024, 3, 31, 21, 59, 59)), 0);
        /* midnight of April 1 (+02) */
        assert_int_equal(catch_up(f, utc(2024, 3, 31, 22, 0, 0)), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 31), 0), 2);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 31), early.id), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 31), late.id), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 3, 31), next.id), 0);
        assert_int_equal(balance(f, f->acc), 100000 - 3 * SMALL_DAY - MEDIUM_DAY);
        assert_int_equal(store_billing_day(f->s, &last), 0);
        assert_int_equal(last, day_of(2024, 3, 31));
}

/* Fall back (Sunday 2024-10-27 is 25 hours long). */
static void test_invoice_fall(void **state)
{
        struct fx *f = *state;
        struct vm a, b;
        credit(f, f->acc, 100000);
        assert_int_equal(store_billing_mark(f->s, day_of(2024, 10, 26), 0), 0);
        /* 2024-10-27 00:30 +02 and 2024-10-28 00:30 +01 */
        assert_int_equal(order_at(f, f->acc, "a", SMALL, utc(2024, 10, 26, 22, 30, 0), &a, NULL, 0),
                         0);
        assert_int_equal(order_at(f, f->acc, "b", SMALL, utc(2024, 10, 27, 23, 30, 0), &b, NULL, 0),
                         0);
        /* 2024-10-27 23:59 +01 is 22:59Z: not yet midnight although 22:00Z
         * would be in summer */
        assert_int_equal(catch_up(f, utc(2024, 10, 27, 22, 30, 0)), 0);
        assert_int_equal(catch_up(f, utc(2024, 10, 27, 23, 0, 0)), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 10, 27), a.id), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 10, 27), b.id), 0);
        assert_int_equal(catch_up(f, utc(2024, 10, 28, 23, 0, 0)), 1);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 10, 28), b.id), 1);
        assert_int_equal(balance(f, f->acc), 100000 - 3 * SMALL_DAY);
}

/* The broker was down three midnights: they are invoiced once at start,
 * each day once; runs of an invoiced day charge nothing. */
static void test_catch_up_once(void **state)
{
        struct fx *f = *state;
        struct vm v;
        struct billing_run run = {0};
        credit(f, f->acc, 1000);
        assert_int_equal(store_billing_mark(f->s, day_of(2024, 6, 9), 0), 0);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 6, 1, 0, 0, 0), &v, NULL, 0), 0);
        assert_int_equal(catch_up(f, utc(2024, 6, 13, 8, 0, 0)), 3); /* the 10th, 11th, 12th */
        assert_int_equal(balance(f, f->acc), 1000 - 3 * SMALL_DAY);
        assert_int_equal(lines_of(f, f->acc, day_of(2024, 6, 11), v.id), 1);
        assert_int_equal(catch_up(f, utc(2024, 6, 13, 8, 0, 0)), 0);
        assert_int_equal(catch_up(f, utc(2024, 6, 13, 21, 59, 0)), 0);
        assert_int_equal(balance(f, f->acc), 1000 - 3 * SMALL_DAY);
        /* the same day again, directly: refused, nothing charged */
        assert_int_equal(store_billing_run(f->s, day_of(2024, 6, 12), utc(2024, 6, 11, 22, 0, 0),
                                           utc(2024, 6, 12, 22, 0, 0), 0, &run),
                         -EALREADY);
        assert_int_equal(store_billing_run(f->s, day_of(2024, 6, 10), utc(2024, 6, 9, 22, 0, 0),
                                           utc(2024, 6, 10, 22, 0, 0), 0, &run),
                         -EALREADY);
        /* a day may not be skipped */
        assert_int_equal(store_billing_run(f->s, day_of(2024, 6, 14), utc(2024, 6, 13, 22, 0, 0),
                                           utc(2024, 6, 14, 22, 0, 0), 0, &run),
                         -EINVAL);
        assert_int_equal(run.lines, 0);
        assert_int_equal(balance(f, f->acc), 1000 - 3 * SMALL_DAY);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM invoice_lines"), 3);
        /* a restart (a new store on the same file) keeps the day */
        store_free(f->s);
        assert_int_equal(store_open(f->path, &f->s), 0);
        store_set_billing(f->s, 1);
        assert_int_equal(catch_up(f, utc(2024, 6, 13, 9, 0, 0)), 0);
        assert_int_equal(catch_up(f, utc(2024, 6, 13, 22, 0, 0)), 1);
        assert_int_equal(balance(f, f->acc), 1000 - 4 * SMALL_DAY);
}

/* Credit runs out: the balance goes negative, the services stay, new
 * orders are refused until credit is added. */
static void test_negative(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        credit(f, f->acc, SMALL_DAY + 5);
        assert_int_equal(store_billing_mark(f->s, day_of(2024, 2, 1), 0), 0);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 2, 2, 9, 0, 0), &v, NULL, 0), 0);
        assert_int_equal(catch_up(f, utc(2024, 2, 4, 9, 0, 0)), 2);
        assert_int_equal(balance(f, f->acc), 5 - SMALL_DAY);
        assert_int_equal(store_vm_get(f->s, f->acc, v.id, &w), 0);
        assert_int_equal(w.want, VM_WANT_RUNNING);
        assert_int_equal(order_at(f, f->acc, "w", SMALL, utc(2024, 2, 4, 9, 0, 0), &w, NULL, 0),
                         -EDQUOT);
        credit(f, f->acc, 2 * SMALL_DAY - 5 + SMALL_DAY);
        assert_int_equal(order_at(f, f->acc, "w", SMALL, utc(2024, 2, 4, 9, 0, 0), &w, NULL, 0), 0);
}

/* Billing off: days pass without charges; turned on, it starts from then. */
static void test_billing_off(void **state)
{
        struct fx *f = *state;
        struct vm v;
        int64_t last;
        store_set_billing(f->s, 0);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 7, 1, 9, 0, 0), &v, NULL, 0), 0);
        assert_int_equal(catch_up(f, utc(2024, 7, 2, 9, 0, 0)), 0);
        assert_int_equal(catch_up(f, utc(2024, 7, 20, 9, 0, 0)), 0);
        assert_int_equal(balance(f, f->acc), 0);
        assert_int_equal(store_billing_day(f->s, &last), 0);
        assert_int_equal(last, day_of(2024, 7, 19));
        store_set_billing(f->s, 1);
        assert_int_equal(catch_up(f, utc(2024, 7, 21, 9, 0, 0)), 1);
        assert_int_equal(balance(f, f->acc), -SMALL_DAY);
        /* months behind: a clock error, nothing charged */
        size_t days = 7;
        assert_int_equal(jobs_billing_catch_up(f->s, f->ams, utc(2025, 7, 21, 9, 0, 0), &days),
                         -ERANGE);
        assert_int_equal(days, 7);
        assert_int_equal(balance(f, f->acc), -SMALL_DAY);
}

static int resize(struct fx *f, uint64_t vm_id, const char *size, uint32_t disk_gb, char *why,
                  size_t why_len)
{
        struct vm v;
        const struct vm_resize rq = {
            .account_id = f->acc,
            .vm_id = vm_id,
            .size = size,
            .vcpus = 1,
            .ram_mb = 1024,
            .disk_gb = disk_gb,
            .why = why,
            .why_len = why_len,
        };
        return store_vm_resize(f->s, &rq, &v);
}

/* A resize to a dearer size is checked like an order (the vm at its new
 * price in place of its old one); a cheaper one never is; invoicing uses
 * the price in force at the run. */
static void test_resize(void **state)
{
        struct fx *f = *state;
        struct vm v;
        char why[256] = "";
        credit(f, f->acc, SMALL_DAY);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 9, 1, 9, 0, 0), &v, NULL, 0), 0);
        assert_int_equal(resize(f, v.id, MEDIUM, 80, why, sizeof(why)), -EDQUOT);
        assert_non_null(strstr(why, "EUR 0.79"));
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable"), 600);
        assert_int_equal(int_in_file(f, "SELECT resize_seq FROM vms"), 0);
        credit(f, f->acc, MEDIUM_DAY - SMALL_DAY); /* exactly a day of the new size */
        assert_int_equal(resize(f, v.id, MEDIUM, 80, why, sizeof(why)), 0);
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable"), 2400);
        /* broke: a cheaper size (here one without a price) still goes */
        store_set_billing(f->s, 0);
        assert_int_equal(order_at(f, f->acc, "w", SMALL, utc(2024, 9, 1, 9, 0, 0), NULL, NULL, 0),
                         0);
        store_set_billing(f->s, 1);
        assert_int_equal(resize(f, v.id, "s-test", 80, NULL, 0), 0);
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable WHERE name = 'v'"),
                         0);
        assert_int_equal(store_billing_mark(f->s, day_of(2024, 9, 1), 0), 0);
        assert_int_equal(catch_up(f, utc(2024, 9, 3, 9, 0, 0)), 1);
        assert_int_equal(balance(f, f->acc), MEDIUM_DAY - SMALL_DAY); /* only w's day */
}

/* The Tilaa API's edit (store_vm_edit) is held to the credit as a resize
 * is: a dearer size refused with nothing changed, then made once covered. */
static void test_edit(void **state)
{
        struct fx *f = *state;
        struct vm v, w;
        char why[256] = "";
        credit(f, f->acc, SMALL_DAY);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 9, 1, 9, 0, 0), &v, NULL, 0), 0);
        struct vm_edit e = {
            .account_id = f->acc,
            .vm_id = v.id,
            .resize = 1,
            .size = MEDIUM,
            .vcpus = 1,
            .ram_mb = 1024,
            .disk_gb = 80,
            .why = why,
            .why_len = sizeof(why),
        };
        assert_int_equal(store_vm_edit(f->s, &e, &w), -EDQUOT);
        assert_non_null(strstr(why, "EUR 0.79"));
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable"), 600);
        assert_int_equal(int_in_file(f, "SELECT resize_seq FROM vms"), 0);
        assert_int_equal(int_in_file(f, "SELECT disk_gb FROM vms"), v.disk_gb);
        credit(f, f->acc, MEDIUM_DAY - SMALL_DAY);
        assert_int_equal(store_vm_edit(f->s, &e, &w), 0);
        assert_int_equal(int_in_file(f, "SELECT price_month_cents FROM billable"), 2400);
        assert_int_equal(int_in_file(f, "SELECT resize_seq FROM vms"), 1);
}

/* A run that fails half-way (here: recording the day) leaves nothing
 * behind: no lines, no credit drawn, the day still to do; the next run
 * charges it once. */
static void test_run_fails(void **state)
{
        struct fx *f = *state;
        struct vm v;
        sqlite3 *db;
        struct billing_run run = {0};
        size_t days = 9;
        credit(f, f->acc, 1000);
        assert_int_equal(store_billing_mark(f->s, day_of(2024, 8, 1), 0), 0);
        assert_int_equal(order_at(f, f->acc, "v", SMALL, utc(2024, 8, 1, 9, 0, 0), &v, NULL, 0), 0);
        if (f->db[0]) {
                pg_sql(f,
                       "CREATE FUNCTION fail_day() RETURNS trigger LANGUAGE plpgsql AS"
                       " 'BEGIN IF NEW.key = ''billing_day'' THEN RAISE EXCEPTION ''injected'';"
                       " END IF; RETURN NEW; END'; CREATE TRIGGER fail_day BEFORE UPDATE ON meta"
                       " FOR EACH ROW EXECUTE FUNCTION fail_day()",
                       NULL, 0);
                db = NULL;
        } else {
                assert_int_equal(sqlite3_open_v2(f->path, &db, SQLITE_OPEN_READWRITE, NULL),
                                 SQLITE_OK);
                sqlite3_busy_timeout(db, 5000);
                assert_int_equal(sqlite3_exec(db,
                                              "CREATE TRIGGER fail_day BEFORE UPDATE ON meta"
                                              " WHEN NEW.key = 'billing_day'"
                                              " BEGIN SELECT RAISE(ABORT, 'injected'); END",
                                              NULL, NULL, NULL),
                                 SQLITE_OK);
        }
        assert_int_equal(store_billing_run(f->s, day_of(2024, 8, 2), utc(2024, 8, 1, 22, 0, 0),
                                           utc(2024, 8, 2, 22, 0, 0), 0, &run),
                         -EIO);
        assert_int_equal(run.lines, 0);
        assert_int_equal(jobs_billing_catch_up(f->s, f->ams, utc(2024, 8, 4, 9, 0, 0), &days),
                         -EIO);
        assert_int_equal(days, 9);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM invoice_lines"), 0);
        assert_int_equal(balance(f, f->acc), 1000);
        int64_t last = 0;
        assert_int_equal(store_billing_day(f->s, &last), 0);
        assert_int_equal(last, day_of(2024, 8, 1));
        if (f->db[0]) {
                pg_sql(f, "DROP TRIGGER fail_day ON meta; DROP FUNCTION fail_day()", NULL, 0);
        } else {
                assert_int_equal(sqlite3_exec(db, "DROP TRIGGER fail_day", NULL, NULL, NULL),
                                 SQLITE_OK);
                sqlite3_close(db);
        }
        assert_int_equal(catch_up(f, utc(2024, 8, 4, 9, 0, 0)), 2);
        assert_int_equal(catch_up(f, utc(2024, 8, 4, 9, 0, 0)), 0);
        assert_int_equal(int_in_file(f, "SELECT COUNT(*) FROM invoice_lines"), 2);
        assert_int_equal(balance(f, f->acc), 1000 - 2 * SMALL_DAY);
}

struct counter {
        int runs;
        int64_t last;
};

static void count(void *ud, int64_t now)
{
        struct counter *c = ud;
        c->runs++;
        c->last = now;
}

static void test_jobs(void **state)
{
        struct jobs *j = NULL;
        struct counter daily = {0}, hourly = {0};
        int64_t t0 = utc(2024, 3, 30, 12, 0, 0);
        (void)state;
        assert_int_equal(jobs_new("Nowhere/Zone", &j), -EINVAL);
        assert_int_equal(jobs_new("../etc/passwd", &j), -EINVAL);
        assert_int_equal(jobs_new("Europe/Amsterdam", &j), 0);
        assert_int_equal(jobs_add_daily(j, "", count, &daily), -EINVAL);
        assert_int_equal(jobs_add_periodic(j, "fast", 10, count, &hourly), -EINVAL);
        assert_int_equal(jobs_add_daily(j, "daily", count, &daily), 0);
        assert_int_equal(jobs_add_periodic(j, "hourly", 3600 * 1000, count, &hourly), 0);
        /* at start: everything */
        assert_int_equal(jobs_run_due(j, t0), 2);
        assert_int_equal(jobs_next_due(j), t0 + 3600 * 1000);
        assert_int_equal(jobs_run_due(j, t0 + 1000), 0);
        assert_int_equal(jobs_run_due(j, t0 + 3600 * 1000), 1);
        assert_int_equal(hourly.runs, 2);
        /* next midnight: 2024-03-31 00:00 +01 */
        assert_int_equal(jobs_run_due(j, utc(2024, 3, 30, 22, 59, 59)), 1); /* hourly only */
        assert_int_equal(daily.runs, 1);
        assert_int_equal(jobs_next_due(j), utc(2024, 3, 30, 23, 0, 0));
        assert_int_equal(jobs_run_due(j, utc(2024, 3, 30, 23, 0, 0)), 1);
        assert_int_equal(daily.runs, 2);
        /* and the one after: 23 hours later */
        assert_int_equal(jobs_run_due(j, utc(2024, 3, 31, 21, 59, 59)), 1);
        assert_int_equal(daily.runs, 2);
        assert_int_equal(jobs_run_due(j, utc(2024, 3, 31, 22, 0, 0)), 1);
        assert_int_equal(daily.runs, 3);
        jobs_free(j);

        /* the thread: runs the jobs at start, stops promptly */
        struct counter started = {0};
        assert_int_equal(jobs_new("UTC", &j), 0);
        assert_int_equal(jobs_add_daily(j, "daily", count, &started), 0);
        assert_int_equal(jobs_start(j), 0);
        assert_int_equal(jobs_start(j), -EBUSY);
        assert_int_equal(jobs_add_daily(j, "late", count, &started), -EBUSY);
        for (int i = 0; i < 500 && jobs_next_due(j) == 0; i++)
                usleep(10000);
        jobs_free(j);
        assert_int_equal(started.runs, 1);
        jobs_free(NULL);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_money),
            T(test_prices),
            T(test_credit),
            T(test_order_refused),
            T(test_concurrent_orders),
            T(test_invoice_spring),
            T(test_invoice_fall),
            T(test_catch_up_once),
            T(test_negative),
            T(test_billing_off),
            T(test_resize),
            T(test_edit),
            T(test_run_fails),
            cmocka_unit_test(test_jobs),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
