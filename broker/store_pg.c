/* The PostgreSQL back-end of store.h (libpq; the only file that includes
 * libpq-fe.h). See store.h for the contract.
 *
 * Several brokers may share one database. The functions below follow
 * store_sqlite.c's one by one (same statements, same checks, same error
 * codes), on these foundations:
 *
 * - Connections: a pool of at most PG_POOL connections, taken by a call for
 *   its whole length (the thread's current connection, `cur`) and given
 *   back at its end; each keeps its own prepared statements, prepared at
 *   their first use (placeholders ? and ?N are rewritten to $N), with the
 *   parameter types of that first binding (int8, text, bytea). A parameter
 *   left NULL there gets its type from the SQL: where PostgreSQL cannot
 *   tell it ("? IS NULL"), the SQL says it with a CAST.
 * - Writes: every mutating call is one READ COMMITTED transaction that
 *   first takes the process's write_lock, then a transaction-scoped
 *   advisory lock (PG_LOCK_WRITE; waited for at most 5 s, lock_timeout),
 *   so writers of every broker on the database run one at a time, as
 *   SQLite's single writer does: each one reads the rows as the last
 *   committed writer left them,
 *   so a placement never double-books a host (it reads the hosts' capacity
 *   inside that lock), an idempotency key is claimed once (also its
 *   primary key), and VNI, MAC and address choices cannot collide (also
 *   their unique indexes). COMMIT returns once durable (synchronous_commit
 *   on, the server's default).
 * - Reads: a REPEATABLE READ, READ ONLY transaction per call (one snapshot
 *   for all of its statements); they never wait for writers.
 * - No cache of other brokers' writes: the scheduler's view of the hosts is
 *   read afresh by each placement, inside the writer's lock, and
 *   store_version() changes at every call.
 * - Errors: SQLSTATEs are translated in one place (pq_step: class 23, an
 *   integrity constraint, is a constraint failure as SQLITE_CONSTRAINT is;
 *   everything else is an error) and logged once, by db_err(), with the
 *   operation's name.
 * - Schema: the same numbered migrations as store_sqlite.c, in PostgreSQL's
 *   dialect, applied at open in one transaction under an advisory lock
 *   (PG_LOCK_MIGRATE), their number kept in schema_migrations.
 * - Porting a change of store_sqlite.c: scripts/store-diff-to-pg turns its
 *   diff into one for this file (and says what is left to do by hand).
 * - Other brokers' changes: a trigger (made at open) NOTIFYs tasman_hosts
 *   with a host's id when its generation moves; store_watch() LISTENs on a
 *   connection of its own and tells the hub, skipping NOTIFYs of this
 *   store's own connections (their writers tell the hub themselves).
 */
#define STORE_BACKEND pg_
#include "store_backend.h"
#include "store.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "ipam.h"
#include "log.h"
#include "money.h"
#include "scheduler.h"
#include "util.h"

#define PG_POOL 8
#define PG_LOCK_MIGRATE 0x74736d01LL /* advisory lock keys ("tsm") */
#define PG_LOCK_WRITE 0x74736d02LL
#define PQS_MAX_PARAMS 32

/* What pq_step() and pq_column_type() return (as SQLite's codes do). */
enum { PQS_ERROR = 1, PQS_NOMEM = 7, PQS_CONSTRAINT = 19, PQS_ROW = 100, PQS_DONE = 101 };
enum { PQS_INTEGER = 1, PQS_TEXT = 3, PQS_BLOB = 4, PQS_NULL = 5 };

struct pgconn;

/* A prepared statement of one connection, with its bound parameters and
 * the result of its last execution (rows read one at a time by pq_step). */
typedef struct pq_stmt {
        struct pgconn *c;
        const char *sql; /* a string literal: compared by address */
        char name[16];
        int prepared;
        int n_params; /* highest $N */
        Oid types[PQS_MAX_PARAMS];
        const char *vals[PQS_MAX_PARAMS];
        int lens[PQS_MAX_PARAMS], fmts[PQS_MAX_PARAMS];
        char ints[PQS_MAX_PARAMS][24];
        PGresult *res;
        int row, n_rows, executed;
        uint8_t blob[256]; /* a bytea column, decoded */
        int blob_col;
        size_t blob_len;
} pq_stmt;

struct pgconn {
        PGconn *conn;
        pq_stmt **stmts;
        size_t n_stmts, cap_stmts;
        int64_t changes, total_changes;
        int in_txn; /* 1: read transaction, 2: write transaction */
        int writing; /* holds the store's write_lock (from begin() to unlock()) */
        int pid;     /* the server process serving it */
        int broken; /* lost: closed when given back */
};

struct store {
        char *url;
        _Atomic uint64_t version; /* see store_version() */
        struct id_key key;
        /* This process's writers, one at a time (the advisory lock then
         * orders them with other brokers'): guards the scheduler's view. */
        pthread_mutex_t write_lock;
        pthread_mutex_t pool_lock;
        pthread_cond_t pool_cond;
        struct pgconn *idle[PG_POOL];
        size_t n_idle, n_open;
        int pids[PG_POOL]; /* of the open connections (0: free slot): our own NOTIFYs */
        /* store_watch(): a thread LISTENing on a connection of its own. */
        pthread_mutex_t watch_lock;
        store_watch_fn watch_fn;
        void *watch_ud;
        pthread_t watch_thread;
        int watching;
        int watch_pipe[2]; /* a byte on [1]: stop */
        int64_t seen_slack_ms; /* see store_set_seen_slack() */
        _Atomic uint64_t n_commits, n_writes;
        int64_t idem_purged_at;
        atomic_int billing; /* see store_set_billing() */
        /* The scheduler's view of every host, sorted by id: read afresh by
         * each placement (hc_load), inside the writer's lock, so it is only
         * touched by the one writer of the database at a time. */
        struct sched_host *hc;
        int64_t *hc_seen; /* each host's last_seen, beside it */
        size_t n_hc, cap_hc;
        int hc_loaded;
};

/* The connection of the call this thread is in (NULL outside one). */
static _Thread_local struct pgconn *cur;

/* ---- connections ---- */

static void stmt_free(pq_stmt *st)
{
        if (!st)
                return;
        PQclear(st->res);
        free(st);
}

static void conn_close(struct pgconn *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < c->n_stmts; i++)
                stmt_free(c->stmts[i]);
        free(c->stmts);
        PQfinish(c->conn);
        free(c);
}

static void notice_quiet(void *arg, const char *msg)
{
        (void)arg;
        (void)msg; /* NOTICEs (e.g. "relation exists, skipping") are not errors */
}

static int conn_setup(PGconn *conn);

static int conn_open(struct store *s, struct pgconn **ret)
{
        struct pgconn *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->conn = PQconnectdb(s->url);
        if (!c->conn || PQstatus(c->conn) != CONNECTION_OK) {
                log_error("store: cannot connect to PostgreSQL: %s",
                          c->conn ? PQerrorMessage(c->conn) : "out of memory");
                conn_close(c);
                return -EIO;
        }
        PQsetNoticeProcessor(c->conn, notice_quiet, NULL);
        if (conn_setup(c->conn) < 0) {
                conn_close(c);
                return -EIO;
        }
        *ret = c;
        return 0;
}

static int conn_setup(PGconn *conn)
{
        /* As SQLite's busy timeout: a writer that waits 5 s for the
         * writer lock (another broker stuck in a transaction) fails with
         * -EIO instead of hanging; and a broker stuck in a transaction
         * (idle in it for 60 s) loses its session, and the lock with it. */
        PGresult *res = PQexec(conn, "SET synchronous_commit = on;"
                                     " SET client_min_messages = warning;"
                                     " SET lock_timeout = '5s';"
                                     " SET idle_in_transaction_session_timeout = '60s'");
        int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok)
                log_error("store: cannot set up a connection: %s", PQerrorMessage(conn));
        return ok ? 0 : -EIO;
}

/* Connects again (the server restarted, or dropped us): the session's
 * prepared statements are gone with it. */
static void conn_reset(struct store *s, struct pgconn *c)
{
        PQreset(c->conn);
        if (PQstatus(c->conn) == CONNECTION_OK && conn_setup(c->conn) < 0)
                c->broken = 1;
        for (size_t i = 0; i < c->n_stmts; i++)
                c->stmts[i]->prepared = 0;
        pthread_mutex_lock(&s->pool_lock);
        for (size_t i = 0; i < PG_POOL; i++)
                if (s->pids[i] == c->pid)
                        s->pids[i] = PQbackendPID(c->conn);
        c->pid = PQbackendPID(c->conn);
        pthread_mutex_unlock(&s->pool_lock);
}

/* Takes a connection for this thread's call (waits while all are busy). */
static int conn_take(struct store *s)
{
        struct pgconn *c = NULL;
        pthread_mutex_lock(&s->pool_lock);
        while (!s->n_idle && s->n_open >= PG_POOL)
                pthread_cond_wait(&s->pool_cond, &s->pool_lock);
        if (s->n_idle) {
                c = s->idle[--s->n_idle];
                pthread_mutex_unlock(&s->pool_lock);
        } else {
                s->n_open++;
                pthread_mutex_unlock(&s->pool_lock);
                int r = conn_open(s, &c);
                pthread_mutex_lock(&s->pool_lock);
                if (r < 0) {
                        s->n_open--;
                        pthread_cond_signal(&s->pool_cond);
                        pthread_mutex_unlock(&s->pool_lock);
                        return r;
                }
                c->pid = PQbackendPID(c->conn);
                for (size_t i = 0; i < PG_POOL; i++)
                        if (!s->pids[i]) {
                                s->pids[i] = c->pid;
                                break;
                        }
                pthread_mutex_unlock(&s->pool_lock);
        }
        if (PQstatus(c->conn) != CONNECTION_OK)
                conn_reset(s, c);
        c->in_txn = 0;
        cur = c;
        return 0;
}

static void conn_give(struct store *s)
{
        struct pgconn *c = cur;
        cur = NULL;
        if (!c)
                return;
        pthread_mutex_lock(&s->pool_lock);
        if (c->broken || PQstatus(c->conn) != CONNECTION_OK ||
            PQtransactionStatus(c->conn) != PQTRANS_IDLE) {
                s->n_open--;
                for (size_t i = 0; i < PG_POOL; i++)
                        if (s->pids[i] == c->pid)
                                s->pids[i] = 0;
                pthread_mutex_unlock(&s->pool_lock);
                conn_close(c);
                pthread_mutex_lock(&s->pool_lock);
        } else {
                s->idle[s->n_idle++] = c;
        }
        pthread_cond_signal(&s->pool_cond);
        pthread_mutex_unlock(&s->pool_lock);
}

/* ---- statements: SQLite's way of stepping, on libpq ---- */

static const char *errmsg_of(void)
{
        return cur ? PQerrorMessage(cur->conn) : "no connection";
}

static int db_err(struct store *s, const char *what)
{
        (void)s;
        char msg[512];
        util_strlcpy(msg, errmsg_of(), sizeof(msg));
        size_t n = strlen(msg);
        while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
                msg[--n] = '\0';
        log_error("store: %s: %s", what, msg);
        return -EIO;
}

static int exec(struct store *s, const char *sql)
{
        if (!cur)
                return -EIO;
        PGresult *res = PQexec(cur->conn, sql);
        ExecStatusType st = PQresultStatus(res);
        int r = 0;
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                log_error("store: %s: %s", sql, PQresultErrorMessage(res));
                r = -EIO;
        }
        PQclear(res);
        (void)s;
        return r;
}

/* ? and ?N (SQLite) to $N; a bare ? is one more than the highest so far. */
static char *sql_translate(const char *sql, int *ret_n)
{
        size_t len = strlen(sql);
        char *out = malloc(len * 3 + 1);
        int hi = 0, quoted = 0;
        size_t o = 0;
        if (!out)
                return NULL;
        for (const char *p = sql; *p; p++) {
                if (*p == '\'')
                        quoted = !quoted;
                if (*p != '?' || quoted) {
                        out[o++] = *p;
                        continue;
                }
                int n;
                if (p[1] >= '0' && p[1] <= '9') {
                        n = 0;
                        while (p[1] >= '0' && p[1] <= '9')
                                n = n * 10 + (*++p - '0');
                } else {
                        n = hi + 1;
                }
                if (n > hi)
                        hi = n;
                o += (size_t)sprintf(out + o, "$%d", n);
        }
        out[o] = '\0';
        *ret_n = hi;
        return out;
}

/* A statement of this connection, reset and unbound. */
static pq_stmt *stmt(struct store *s, const char *sql)
{
        struct pgconn *c = cur;
        (void)s;
        if (!c)
                return NULL; /* no connection: the caller answers -EIO */
        for (size_t i = 0; i < c->n_stmts; i++) {
                pq_stmt *st = c->stmts[i];
                if (st->sql == sql) {
                        PQclear(st->res);
                        st->res = NULL;
                        st->executed = 0;
                        for (int k = 0; k < PQS_MAX_PARAMS; k++) {
                                st->vals[k] = NULL;
                                st->lens[k] = st->fmts[k] = 0;
                        }
                        return st;
                }
        }
        pq_stmt *st = calloc(1, sizeof(*st));
        if (!st) {
                log_error("store: out of memory for a statement");
                return NULL;
        }
        if (c->n_stmts == c->cap_stmts) {
                size_t ncap = c->cap_stmts ? c->cap_stmts * 2 : 64;
                void *n = realloc(c->stmts, ncap * sizeof(*c->stmts));
                if (!n) {
                        free(st);
                        log_error("store: out of memory for a statement");
                        return NULL;
                }
                c->stmts = n;
                c->cap_stmts = ncap;
        }
        st->c = c;
        st->sql = sql;
        snprintf(st->name, sizeof(st->name), "s%zu", c->n_stmts);
        c->stmts[c->n_stmts++] = st;
        return st;
}

static void pq_reset(pq_stmt *st)
{
        PQclear(st->res);
        st->res = NULL;
        st->executed = 0;
}

static void pq_bind_int64(pq_stmt *st, int i, int64_t v)
{
        if (i < 1 || i > PQS_MAX_PARAMS)
                abort();
        snprintf(st->ints[i - 1], sizeof(st->ints[i - 1]), "%lld", (long long)v);
        st->vals[i - 1] = st->ints[i - 1];
        st->lens[i - 1] = 0;
        st->fmts[i - 1] = 0;
        if (!st->prepared)
                st->types[i - 1] = 20; /* int8 */
}

static void pq_bind_int(pq_stmt *st, int i, int v)
{
        pq_bind_int64(st, i, v);
}

static void pq_bind_text(pq_stmt *st, int i, const char *v)
{
        if (i < 1 || i > PQS_MAX_PARAMS)
                abort();
        st->vals[i - 1] = v;
        st->lens[i - 1] = 0;
        st->fmts[i - 1] = 0;
        if (!st->prepared)
                st->types[i - 1] = 25; /* text */
}

static void pq_bind_blob(pq_stmt *st, int i, const void *v, int n)
{
        if (i < 1 || i > PQS_MAX_PARAMS)
                abort();
        st->vals[i - 1] = v;
        st->lens[i - 1] = n;
        st->fmts[i - 1] = 1;
        if (!st->prepared)
                st->types[i - 1] = 17; /* bytea */
}

/* Runs the statement on its first step; then one row per step. */
static int pq_step(pq_stmt *st)
{
        struct pgconn *c = st->c;
        if (st->executed) {
                st->row++;
                st->blob_col = -1;
                return st->row < st->n_rows ? PQS_ROW : PQS_DONE;
        }
        if (!st->prepared) {
                int n;
                char *q = sql_translate(st->sql, &n);
                if (!q)
                        return PQS_NOMEM;
                if (n > PQS_MAX_PARAMS)
                        abort();
                st->n_params = n;
                for (int k = 0; k < n; k++) {
                        char ref[16];
                        snprintf(ref, sizeof(ref), "$%d", k + 1);
                        const char *at = q;
                        int used = 0;
                        while (!used && (at = strstr(at, ref))) {
                                at += strlen(ref);
                                used = *at < '0' || *at > '9';
                        }
                        if (!used && !st->types[k])
                                st->types[k] = 25; /* bound but unused: any type */
                }
                PGresult *res = PQprepare(c->conn, st->name, q, n, st->types);
                int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
                if (!ok)
                        log_error("store: cannot prepare %s: %s", q, PQresultErrorMessage(res));
                PQclear(res);
                free(q);
                if (!ok) {
                        memset(st->types, 0, sizeof(st->types));
                        return PQS_ERROR;
                }
                st->prepared = 1;
        }
        PQclear(st->res);
        st->res = PQexecPrepared(c->conn, st->name, st->n_params, st->vals, st->lens, st->fmts,
                                 0);
        st->executed = 1;
        st->row = 0;
        st->n_rows = 0;
        st->blob_col = -1;
        switch (PQresultStatus(st->res)) {
        case PGRES_TUPLES_OK:
                st->n_rows = PQntuples(st->res);
                c->changes = 0;
                return st->n_rows > 0 ? PQS_ROW : PQS_DONE;
        case PGRES_COMMAND_OK:
                c->changes = strtoll(PQcmdTuples(st->res), NULL, 10);
                c->total_changes += c->changes;
                return PQS_DONE;
        default: {
                const char *state = PQresultErrorField(st->res, PG_DIAG_SQLSTATE);
                if (state && strncmp(state, "23", 2) == 0)
                        return PQS_CONSTRAINT; /* unique, foreign key, check, not null */
                return PQS_ERROR;
        }
        }
}

static int pq_has(const pq_stmt *st, int i)
{
        return st->res && st->row < st->n_rows && i < PQnfields(st->res) &&
               !PQgetisnull(st->res, st->row, i);
}

static int64_t pq_column_int64(pq_stmt *st, int i)
{
        if (!pq_has(st, i))
                return 0;
        const char *v = PQgetvalue(st->res, st->row, i);
        if (v[0] == 't' && v[1] == '\0')
                return 1; /* a boolean */
        if (v[0] == 'f' && v[1] == '\0')
                return 0;
        return strtoll(v, NULL, 10);
}

static int pq_column_int(pq_stmt *st, int i)
{
        return (int)pq_column_int64(st, i);
}

static const unsigned char *pq_column_text(pq_stmt *st, int i)
{
        if (!pq_has(st, i))
                return NULL;
        return (const unsigned char *)PQgetvalue(st->res, st->row, i);
}

static int pq_column_type(pq_stmt *st, int i)
{
        if (!pq_has(st, i))
                return PQS_NULL;
        switch (PQftype(st->res, i)) {
        case 17:
                return PQS_BLOB;
        case 20:
        case 21:
        case 23:
                return PQS_INTEGER;
        default:
                return PQS_TEXT;
        }
}

/* A bytea column ("\x" and hex in text results), decoded into st->blob. */
static void blob_decode(pq_stmt *st, int i)
{
        if (st->blob_col == i)
                return;
        st->blob_col = i;
        st->blob_len = 0;
        const char *v = (const char *)pq_column_text(st, i);
        if (!v || v[0] != '\\' || v[1] != 'x')
                return;
        v += 2;
        while (v[0] && v[1] && st->blob_len < sizeof(st->blob)) {
                unsigned hi, lo;
                if (sscanf(v, "%1x%1x", &hi, &lo) != 2)
                        break;
                st->blob[st->blob_len++] = (uint8_t)(hi << 4 | lo);
                v += 2;
        }
}

static const void *pq_column_blob(pq_stmt *st, int i)
{
        blob_decode(st, i);
        return st->blob;
}

static int pq_column_bytes(pq_stmt *st, int i)
{
        if (!pq_has(st, i))
                return 0;
        if (PQftype(st->res, i) == 17) {
                blob_decode(st, i);
                return (int)st->blob_len;
        }
        return PQgetlength(st->res, st->row, i);
}

/* The id of the row the last INSERT made (its table's sequence). */
static uint64_t pq_last_id(struct store *s)
{
        PGresult *res = PQexec(cur->conn, "SELECT lastval()");
        uint64_t id = 0;
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
                id = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        else
                log_error("store: cannot read the new row's id: %s", PQresultErrorMessage(res));
        PQclear(res);
        (void)s;
        return id;
}

static int64_t pq_changes(struct store *s)
{
        (void)s;
        return cur->changes;
}

static int64_t pq_total_changes(struct store *s)
{
        (void)s;
        return cur->total_changes;
}

/* A text column into dst (n bytes); one too long is cut before a whole
 * UTF-8 character, never inside one (the JSON it goes into must be valid). */
static void col_text(pq_stmt *st, int i, char *dst, size_t n)
{
        const unsigned char *t = pq_column_text(st, i);
        size_t len = t ? (size_t)pq_column_bytes(st, i) : 0;
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

static void reset_all(struct store *s)
{
        (void)s;
        for (size_t i = 0; cur && i < cur->n_stmts; i++)
                pq_reset(cur->stmts[i]);
}

/* ---- transactions ---- */

/* The first statement of a call: a connection the server dropped (it
 * restarted) shows here, before the call did anything, and is connected
 * again once. */
static PGresult *exec_first(struct store *s, const char *sql)
{
        PGresult *res = PQexec(cur->conn, sql);
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || PQstatus(cur->conn) == CONNECTION_OK)
                return res;
        PQclear(res);
        log_warn("store: lost a connection to PostgreSQL; connecting again");
        conn_reset(s, cur);
        return PQexec(cur->conn, sql);
}

/* A read: one snapshot for the call's statements. */
static void rlock(struct store *s)
{
        if (conn_take(s) < 0) {
                cur = NULL;
                return;
        }
        PGresult *res = exec_first(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                cur->in_txn = 1;
        } else {
                log_error("store: cannot begin a read: %s", PQresultErrorMessage(res));
                cur->broken = 1;
        }
        PQclear(res);
}

static void unlock(struct store *s)
{
        if (!cur)
                return;
        reset_all(s);
        if (cur->in_txn) {
                PGresult *res = PQexec(cur->conn, cur->in_txn == 2 ? "ROLLBACK" : "COMMIT");
                PQclear(res);
                cur->in_txn = 0;
        }
        int writing = cur->writing;
        cur->writing = 0;
        conn_give(s);
        if (writing)
                pthread_mutex_unlock(&s->write_lock);
}

/* A write: the database's writer lock for the rest of the transaction. */
static int begin(struct store *s)
{
        pthread_mutex_lock(&s->write_lock);
        int r = conn_take(s);
        if (r < 0) {
                pthread_mutex_unlock(&s->write_lock);
                return -EIO;
        }
        cur->writing = 1;
        char sql[96];
        snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%lld)",
                 (long long)PG_LOCK_WRITE);
        PGresult *res = exec_first(s, sql);
        int ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        if (!ok)
                log_error("store: cannot begin a write (the writer lock: another broker's"
                          " transaction?): %s",
                          PQresultErrorMessage(res));
        PQclear(res);
        if (!ok) {
                res = PQexec(cur->conn, "ROLLBACK"); /* a lost connection: conn_give drops it */
                PQclear(res);
                cur->writing = 0;
                conn_give(s);
                pthread_mutex_unlock(&s->write_lock);
                return -EIO;
        }
        cur->in_txn = 2;
        return 0;
}

/* Commits (r == 0) or rolls back; returns r, or -EIO if the commit failed.
 * The connection stays this thread's until unlock(). */
static int finish(struct store *s, int r)
{
        reset_all(s);
        if (r == 0) {
                PGresult *res = PQexec(cur->conn, "COMMIT");
                if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                        log_error("store: cannot commit: %s", PQresultErrorMessage(res));
                        r = -EIO;
                }
                PQclear(res);
                atomic_fetch_add(&s->n_commits, 1);
                atomic_fetch_add(&s->n_writes, 1);
        } else {
                PGresult *res = PQexec(cur->conn, "ROLLBACK");
                PQclear(res);
        }
        cur->in_txn = 0;
        atomic_fetch_add(&s->version, 1);
        return r;
}

static int end(struct store *s, int r)
{
        r = finish(s, r);
        unlock(s);
        return r;
}

/* Other brokers' commits are not seen here: the version changes at every
 * call, so no cache keyed by it (auth's keys, the list cache) ever serves
 * an answer another broker's write may have made stale. */
uint64_t store_version(struct store *s)
{
        return atomic_fetch_add(&s->version, 1) + 1;
}

/* ---- the scheduler's hosts ---- */

#define HC_COLS                                                                            \
        "h.id, h.last_seen, h.draining, h.vcpus, h.ram_mb, h.disk_gb, h.vcpus_used,"      \
        " h.ram_mb_used, h.disk_gb_used, h.inflight, h.hdd_gb, h.hdd_gb_used,"            \
        " COALESCE((SELECT id FROM sites WHERE slug = h.site), 0)"

struct hc_row {
        struct sched_host h;
        int64_t last_seen;
};

static void row_hc(pq_stmt *st, void *item)
{
        struct hc_row *c = item;
        struct sched_host *h = &c->h;
        memset(c, 0, sizeof(*c));
        h->id = (uint64_t)pq_column_int64(st, 0);
        c->last_seen = pq_column_int64(st, 1);
        h->draining = (uint8_t)pq_column_int(st, 2);
        h->vcpus = (uint32_t)pq_column_int64(st, 3);
        h->ram_mb = (uint64_t)pq_column_int64(st, 4);
        h->disk_gb[STORAGE_SSD] = (uint64_t)pq_column_int64(st, 5);
        h->vcpus_used = (uint32_t)pq_column_int64(st, 6);
        h->ram_mb_used = (uint64_t)pq_column_int64(st, 7);
        h->disk_gb_used[STORAGE_SSD] = (uint64_t)pq_column_int64(st, 8);
        h->inflight = (uint32_t)pq_column_int64(st, 9);
        h->disk_gb[STORAGE_HDD] = (uint64_t)pq_column_int64(st, 10);
        h->disk_gb_used[STORAGE_HDD] = (uint64_t)pq_column_int64(st, 11);
        h->site_id = (uint32_t)pq_column_int64(st, 12);
}

static int collect(struct store *s, pq_stmt *st, size_t elem_size,
                   void (*fn)(pq_stmt *, void *), void **ret, size_t *ret_n);

/* Other back-ends track the rows a transaction changed; here each
 * placement reads them all again. */
static void hc_mark(struct store *s, uint64_t host_id)
{
        (void)s;
        (void)host_id;
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

/* Every host as the database has it now (called inside the writer lock). */
static int hc_load(struct store *s)
{
        static const char sql[] = "SELECT " HC_COLS " FROM hosts h ORDER BY h.id";
        struct hc_row *rows = NULL;
        size_t n = 0;
        pq_stmt *st = stmt(s, sql);
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
        return 0;
}

/* The view is read afresh by every placement: in step by construction
 * (0), or -1 before the first placement, as store_sqlite.c's. */
int store_check_host_cache(struct store *s)
{
        return s->hc_loaded ? 0 : -1;
}

static int event(struct store *s, int64_t now, const char *kind, uint64_t account_id,
                 uint64_t resource_id, const char *data)
{
        static const char sql[] =
                "INSERT INTO events (at, kind, account_id, resource_id, data) VALUES (?,?,?,?,?)";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, now);
        pq_bind_text(st, 2, kind);
        if (account_id)
                pq_bind_int64(st, 3, account_id);
        pq_bind_int64(st, 4, resource_id);
        pq_bind_text(st, 5, data ? data : "");
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot record event");
}
/* ---- migrations: the same numbered steps as store_sqlite.c's, in
 * PostgreSQL's dialect (BIGINT for INTEGER, BIGSERIAL for AUTOINCREMENT,
 * BYTEA for BLOB, meta values as text); append only, in step with it ---- */

static const char *const migrations[] = {
        /* 1: accounts, keys, hosts, vms, events */
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE accounts (id BIGSERIAL PRIMARY KEY,"
        "  name TEXT NOT NULL UNIQUE, tier BIGINT NOT NULL, created_at BIGINT NOT NULL);"
        "CREATE TABLE api_keys (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), prefix TEXT NOT NULL,"
        "  hash BYTEA NOT NULL, created_at BIGINT NOT NULL, revoked_at BIGINT);"
        "CREATE INDEX api_keys_prefix ON api_keys(prefix);"
        "CREATE TABLE hosts (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
        "  site TEXT NOT NULL, underlay_ip TEXT NOT NULL, boot_id TEXT NOT NULL,"
        "  agent_version TEXT NOT NULL, hv_type TEXT NOT NULL, vcpus BIGINT NOT NULL,"
        "  ram_mb BIGINT NOT NULL, disk_gb BIGINT NOT NULL,"
        "  generation BIGINT NOT NULL DEFAULT 1, applied_generation BIGINT NOT NULL DEFAULT 0,"
        "  last_seen BIGINT NOT NULL, draining BIGINT NOT NULL DEFAULT 0,"
        "  obs_domains BIGINT NOT NULL DEFAULT 0, obs_vcpus BIGINT NOT NULL DEFAULT 0,"
        "  obs_ram_mb BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);"
        "CREATE TABLE vms (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  size TEXT NOT NULL, image TEXT NOT NULL, site TEXT NOT NULL,"
        "  host_id BIGINT NOT NULL REFERENCES hosts(id), vcpus BIGINT NOT NULL,"
        "  ram_mb BIGINT NOT NULL, disk_gb BIGINT NOT NULL, want BIGINT NOT NULL,"
        "  reboot_seq BIGINT NOT NULL DEFAULT 0, rebuild_seq BIGINT NOT NULL DEFAULT 0,"
        "  created_at BIGINT NOT NULL, deleted_at BIGINT,"
        "  obs_state BIGINT NOT NULL DEFAULT -1, obs_reboot_done BIGINT NOT NULL DEFAULT 0,"
        "  obs_rebuild_done BIGINT NOT NULL DEFAULT 0, obs_error TEXT NOT NULL DEFAULT '',"
        "  obs_at BIGINT);"
        "CREATE INDEX vms_account ON vms(account_id, id) WHERE deleted_at IS NULL;"
        "CREATE INDEX vms_host ON vms(host_id, id);"
        "CREATE TABLE events (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL,"
        "  kind TEXT NOT NULL, account_id BIGINT, resource_id BIGINT,"
        "  data TEXT NOT NULL DEFAULT '');",
        /* 2: capacity reserved per host, kept in the same transactions that
         * place and delete guests (the scheduler reads hosts only). */
        "ALTER TABLE hosts ADD COLUMN vcpus_used BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN ram_mb_used BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN disk_gb_used BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN guests BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN inflight BIGINT NOT NULL DEFAULT 0;"
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
        "ALTER TABLE hosts ADD COLUMN reachable BIGINT NOT NULL DEFAULT 1;"
        "CREATE INDEX events_resource ON events(resource_id, id);",
        /* 4: sites: a number, a slug (the native region) and a name */
        "CREATE TABLE sites (id BIGSERIAL PRIMARY KEY, slug TEXT NOT NULL UNIQUE,"
        "  name TEXT NOT NULL, created_at BIGINT NOT NULL);"
        "INSERT INTO sites (slug, name, created_at)"
        "  SELECT DISTINCT site, site, MIN(created_at) FROM hosts GROUP BY site;",
        /* 5: storage types (hosts' disk_gb columns are the ssd ones) and
         * anti-affinity groups (per account) */
        "ALTER TABLE hosts ADD COLUMN hdd_gb BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE hosts ADD COLUMN hdd_gb_used BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN storage BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN aa_group TEXT;"
        "CREATE INDEX vms_group ON vms(account_id, aa_group, host_id)"
        "  WHERE aa_group IS NOT NULL AND deleted_at IS NULL;",
        /* 6: read-only API keys; SSH keys; idempotent POSTs; VPS ssh keys */
        "ALTER TABLE api_keys ADD COLUMN read_only BIGINT NOT NULL DEFAULT 0;"
        "CREATE INDEX api_keys_account ON api_keys(account_id, id);"
        "CREATE TABLE ssh_keys (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  public_key TEXT NOT NULL, fingerprint TEXT NOT NULL, created_at BIGINT NOT NULL,"
        "  UNIQUE (account_id, fingerprint));"
        "CREATE TABLE idempotency (account_id BIGINT NOT NULL, key TEXT NOT NULL,"
        "  request_hash BYTEA NOT NULL, status BIGINT NOT NULL, resource_id BIGINT NOT NULL,"
        "  body TEXT, location TEXT, created_at BIGINT NOT NULL, PRIMARY KEY (account_id, key));"
        "CREATE INDEX idempotency_age ON idempotency(created_at);"
        "ALTER TABLE vms ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '';",
        /* 7: template deployments; a VPS's cloud-init user-data */
        "ALTER TABLE vms ADD COLUMN user_data TEXT;"
        "CREATE TABLE deployments (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), template TEXT NOT NULL,"
        "  version TEXT NOT NULL, name TEXT NOT NULL, vm_id BIGINT NOT NULL,"
        "  config TEXT NOT NULL, created_at BIGINT NOT NULL, deleted_at BIGINT);"
        "CREATE INDEX deployments_account ON deployments(account_id, id)"
        "  WHERE deleted_at IS NULL;",
        /* 8: the OS image catalog. The default entry is Canonical's Ubuntu
         * 24.04 cloud image as published on 2026-07-26 (its SHA256SUMS);
         * admins replace it with `tasmanctl image add` when `current` moves. */
        "CREATE TABLE images (slug TEXT PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,"
        "  sha256 TEXT NOT NULL, format TEXT NOT NULL, min_disk_gb BIGINT NOT NULL DEFAULT 0,"
        "  created_at BIGINT NOT NULL, removed_at BIGINT);"
        "INSERT INTO images (slug, name, url, sha256, format, min_disk_gb, created_at) VALUES"
        "  ('ubuntu-24.04', 'Ubuntu 24.04 LTS',"
        "   'https://cloud-images.ubuntu.com/noble/current/noble-server-cloudimg-amd64.img',"
        "   'd1940f7d69d343355e183dff1e08a59852d32e7309baa7a4bad8365b11b005ac', 'qcow2', 4,"
        "   CAST(EXTRACT(EPOCH FROM now()) AS BIGINT) * 1000);",
        /* 9: resize and rescue (want 2: power off at once) */
        "ALTER TABLE vms ADD COLUMN resize_seq BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN rescue BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_resize_done BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_rescue BIGINT NOT NULL DEFAULT 0;",
        /* 10: CPU cap, percent of each vCPU (0: none) */
        "ALTER TABLE vms ADD COLUMN cpu_cap BIGINT NOT NULL DEFAULT 0;",
        /* 11: snapshots (ids never reused) and restores. vms.snap_pending
         * counts the vm's snapshots in state creating or deleting, so a
         * report of a guest with none costs no read of this table. */
        "CREATE TABLE snapshots (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id),"
        "  vm_id BIGINT NOT NULL REFERENCES vms(id), name TEXT NOT NULL,"
        "  online BIGINT NOT NULL DEFAULT 0,"
        "  state TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),"
        "  replaces BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL,"
        "  ready_at BIGINT NOT NULL DEFAULT 0, vcpus BIGINT NOT NULL,"
        "  ram_mb BIGINT NOT NULL, disk_gb BIGINT NOT NULL, image TEXT NOT NULL);"
        "CREATE INDEX snapshots_vm ON snapshots(vm_id, id);"
        "CREATE INDEX snapshots_account ON snapshots(account_id, id);"
        "ALTER TABLE vms ADD COLUMN restore_seq BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN restore_snap BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN obs_restore_done BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN snap_pending BIGINT NOT NULL DEFAULT 0;",
        /* 12: a vm made from another vm's snapshot (its disk a copy of it) */
        "ALTER TABLE vms ADD COLUMN source_vm BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE vms ADD COLUMN source_snap BIGINT NOT NULL DEFAULT 0;",
        /* 13: private networks (a deleted one's row goes), guest NICs (a
         * deleted vm's go at once: its addresses and MACs are free again)
         * and the sites' public address pools. nics.network_id 0: public. */
        "CREATE TABLE networks (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  cidr TEXT NOT NULL, vni BIGINT NOT NULL UNIQUE"
        "  CHECK (vni BETWEEN 4096 AND 16777215), created_at BIGINT NOT NULL);"
        "CREATE INDEX networks_account ON networks(account_id, id);"
        "CREATE TABLE nics (id BIGSERIAL PRIMARY KEY,"
        "  vm_id BIGINT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,"
        "  network_id BIGINT NOT NULL, position BIGINT NOT NULL,"
        "  mac TEXT NOT NULL UNIQUE, ipv4 TEXT, ipv6 TEXT,"
        "  UNIQUE (vm_id, position), UNIQUE (vm_id, network_id));"
        "CREATE INDEX nics_network ON nics(network_id, vm_id);"
        "CREATE UNIQUE INDEX nics_ipv4 ON nics(network_id, ipv4) WHERE ipv4 IS NOT NULL;"
        "CREATE UNIQUE INDEX nics_ipv6 ON nics(network_id, ipv6) WHERE ipv6 IS NOT NULL;"
        "CREATE TABLE ip_pools (site TEXT PRIMARY KEY, ipv4 TEXT NOT NULL,"
        "  gateway4 TEXT NOT NULL, ipv6 TEXT, gateway6 TEXT, created_at BIGINT NOT NULL);"
        "INSERT INTO meta (key, value) VALUES ('next_vni', '4096');",
        /* 14: prepaid billing. Month prices of the sizes (cents); account
         * credit (cents, may go below zero by invoicing); credit added by
         * admins; billable: each vm's name, size, price (the one it was
         * ordered or last resized at) and life span, kept after the vm row
         * is purged until its last day is invoiced; one invoice line per
         * service per local day (days since 1970-01-01 in the billing
         * zone), never two, kept for good; meta 'billing_day' is the last
         * day invoiced. */
        "CREATE TABLE prices (size TEXT PRIMARY KEY,"
        "  month_cents BIGINT NOT NULL CHECK (month_cents >= 0));"
        "INSERT INTO prices (size, month_cents) VALUES ('standard-1vcpu-1gb', 600),"
        "  ('standard-1vcpu-2gb', 1200), ('standard-2vcpu-4gb', 2400),"
        "  ('standard-4vcpu-8gb', 4800), ('standard-8vcpu-16gb', 9600);"
        "ALTER TABLE accounts ADD COLUMN credit_cents BIGINT NOT NULL DEFAULT 0;"
        "CREATE TABLE billable (vm_id BIGINT PRIMARY KEY, account_id BIGINT NOT NULL,"
        "  name TEXT NOT NULL, size TEXT NOT NULL, price_month_cents BIGINT NOT NULL,"
        "  created_at BIGINT NOT NULL, deleted_at BIGINT);"
        "CREATE INDEX billable_live ON billable(account_id) WHERE deleted_at IS NULL;"
        "INSERT INTO billable (vm_id, account_id, name, size, price_month_cents, created_at,"
        "  deleted_at) SELECT id, account_id, name, size,"
        "  COALESCE((SELECT month_cents FROM prices p WHERE p.size = vms.size), 0),"
        "  created_at, deleted_at FROM vms;"
        "CREATE TABLE credit_ops (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), amount_cents BIGINT NOT NULL,"
        "  balance_cents BIGINT NOT NULL, created_at BIGINT NOT NULL);"
        "CREATE INDEX credit_ops_account ON credit_ops(account_id, id);"
        "CREATE TABLE invoice_lines (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id),"
        "  vm_id BIGINT NOT NULL, name TEXT NOT NULL, day BIGINT NOT NULL,"
        "  size TEXT NOT NULL, amount_cents BIGINT NOT NULL, created_at BIGINT NOT NULL,"
        "  UNIQUE (vm_id, day));"
        "CREATE INDEX invoice_lines_account ON invoice_lines(account_id, day);"
        "CREATE INDEX invoice_lines_day ON invoice_lines(day);",
        /* 15: the Tilaa API: its users (Basic auth, argon2id hashes; an
         * e-mail logs in to one account only), metadata (user-data)
         * profiles, a VM's DNS name, admin password and cancellation (ms
         * of the local midnight it is deleted at; NULL: none), each site's
         * time zone, the OS images' numbers (the Tilaa template ids, never
         * reused) and the SSH keys' user and last change. */
        "CREATE TABLE api_users (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id),"
        "  email TEXT NOT NULL, first_name TEXT NOT NULL DEFAULT '',"
        "  last_name TEXT NOT NULL DEFAULT '', hash TEXT NOT NULL, created_at BIGINT NOT NULL);"
        "CREATE UNIQUE INDEX api_users_email ON api_users(lower(email));" /* SQLite: NOCASE */
        "CREATE INDEX api_users_account ON api_users(account_id, id);"
        "CREATE TABLE metadata (id BIGSERIAL PRIMARY KEY,"
        "  account_id BIGINT NOT NULL REFERENCES accounts(id), name TEXT NOT NULL,"
        "  user_data TEXT NOT NULL, created_at BIGINT NOT NULL, modified_at BIGINT NOT NULL);"
        "CREATE INDEX metadata_account ON metadata(account_id, id);"
        "ALTER TABLE vms ADD COLUMN dns_name TEXT;"
        "ALTER TABLE vms ADD COLUMN admin_password TEXT;"
        "ALTER TABLE vms ADD COLUMN cancel_at BIGINT;"
        "CREATE INDEX vms_cancel ON vms(cancel_at) WHERE cancel_at IS NOT NULL"
        "  AND deleted_at IS NULL;"
        "ALTER TABLE sites ADD COLUMN tz TEXT NOT NULL DEFAULT 'Europe/Amsterdam';"
        "ALTER TABLE images ADD COLUMN num BIGINT;"
        "UPDATE images SET num = n.num FROM (SELECT slug, row_number() OVER"  /* SQLite: rowid */
        "  (ORDER BY created_at, slug) AS num FROM images) n WHERE images.slug = n.slug;"
        "CREATE UNIQUE INDEX images_num ON images(num);"
        "ALTER TABLE ssh_keys ADD COLUMN user_id BIGINT NOT NULL DEFAULT 0;"
        "ALTER TABLE ssh_keys ADD COLUMN modified_at BIGINT NOT NULL DEFAULT 0;"
        "UPDATE ssh_keys SET modified_at = created_at;",
};

/* Applies the migrations this database lacks, all in one transaction under
 * an advisory lock: a second broker starting at once waits, then finds the
 * schema done. The first one also makes the installation's id key. */
static int migrate(struct store *s)
{
        size_t n = sizeof(migrations) / sizeof(migrations[0]);
        char sql[128];
        int r, version = 0;

        snprintf(sql, sizeof(sql), "BEGIN; SELECT pg_advisory_xact_lock(%lld)",
                 (long long)PG_LOCK_MIGRATE);
        if ((r = exec(s, sql)) < 0)
                return r;
        r = exec(s, "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY,"
                    " applied_at BIGINT NOT NULL)");
        if (r == 0) {
                PGresult *res = PQexec(cur->conn,
                                       "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
                if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
                        version = atoi(PQgetvalue(res, 0, 0));
                else
                        r = db_err(s, "cannot read schema version");
                PQclear(res);
        }
        if (r == 0 && version > (int)n) {
                log_error("store: database schema %d is newer than this broker knows (%zu)",
                          version, n);
                r = -EPROTO;
        }
        for (size_t i = (size_t)version; i < n && r == 0; i++) {
                r = exec(s, migrations[i]);
                snprintf(sql, sizeof(sql),
                         "INSERT INTO schema_migrations (version, applied_at) VALUES (%zu, %lld)",
                         i + 1, (long long)util_now_ms());
                if (r == 0)
                        r = exec(s, sql);
                if (r == 0 && i == 0) {
                        /* The id key: made once, here, never changed (hex). */
                        uint8_t secret[32];
                        char ins[160];
                        size_t o = (size_t)snprintf(ins, sizeof(ins),
                                                    "INSERT INTO meta (key, value) VALUES"
                                                    " ('id_key', '");
                        r = util_random(secret, sizeof(secret));
                        for (size_t k = 0; k < sizeof(secret); k++)
                                o += (size_t)snprintf(ins + o, sizeof(ins) - o, "%02x",
                                                      secret[k]);
                        snprintf(ins + o, sizeof(ins) - o, "')");
                        if (r == 0)
                                r = exec(s, ins);
                }
                if (r == 0)
                        log_info("store: schema migrated to version %zu", i + 1);
        }
        /* Not a migration (SQLite has no such thing): every open makes sure
         * a change of a host's generation is announced to the other brokers
         * when it commits (store_watch()). */
        if (r == 0)
                r = exec(s, "CREATE OR REPLACE FUNCTION tasman_host_changed() RETURNS trigger"
                            " LANGUAGE plpgsql AS 'BEGIN PERFORM pg_notify(''tasman_hosts'',"
                            " CAST(NEW.id AS TEXT)); RETURN NULL; END';"
                            " CREATE OR REPLACE TRIGGER hosts_generation AFTER UPDATE OF"
                            " generation ON hosts FOR EACH ROW WHEN (NEW.generation IS DISTINCT"
                            " FROM OLD.generation) EXECUTE FUNCTION tasman_host_changed()");
        if (r == 0)
                r = exec(s, "COMMIT");
        else
                exec(s, "ROLLBACK");
        return r;
}

static int load_key(struct store *s)
{
        PGresult *res = PQexec(cur->conn, "SELECT value FROM meta WHERE key = 'id_key'");
        uint8_t key[64];
        size_t n = 0;
        int r = -EIO;
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
                const char *v = PQgetvalue(res, 0, 0);
                unsigned b;
                while (n < sizeof(key) && sscanf(v + 2 * n, "%2x", &b) == 1)
                        key[n++] = (uint8_t)b;
                if (n >= 16) {
                        id_key_init(&s->key, key, n);
                        r = 0;
                }
        }
        PQclear(res);
        if (r < 0)
                log_error("store: id key missing from the database");
        (void)s;
        return r;
}

/* ---- other brokers' changes: LISTEN tasman_hosts ---- */

static int own_pid(struct store *s, int pid)
{
        int own = 0;
        pthread_mutex_lock(&s->pool_lock);
        for (size_t i = 0; i < PG_POOL && !own; i++)
                own = s->pids[i] == pid;
        pthread_mutex_unlock(&s->pool_lock);
        return own;
}

/* Waits for ms (or a stop): 1 if asked to stop. */
static int watch_sleep(struct store *s, int ms)
{
        struct pollfd p = { .fd = s->watch_pipe[0], .events = POLLIN };
        return poll(&p, 1, ms) > 0;
}

static void *watch_main(void *arg)
{
        struct store *s = arg;
        PGconn *c = NULL;
        int backoff = 100;
        for (;;) {
                if (!c) {
                        c = PQconnectdb(s->url);
                        PGresult *res = NULL;
                        if (PQstatus(c) == CONNECTION_OK)
                                res = PQexec(c, "LISTEN tasman_hosts");
                        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
                                log_warn("store: cannot listen for other brokers' changes: %s",
                                         PQerrorMessage(c));
                                PQclear(res);
                                PQfinish(c);
                                c = NULL;
                                if (watch_sleep(s, backoff))
                                        break;
                                backoff = backoff < 5000 ? backoff * 2 : 5000;
                                continue;
                        }
                        PQclear(res);
                        backoff = 100;
                        /* what changed before LISTEN took effect is unknown */
                        s->watch_fn(s->watch_ud, 0);
                }
                struct pollfd p[2] = { { .fd = PQsocket(c), .events = POLLIN },
                                       { .fd = s->watch_pipe[0], .events = POLLIN } };
                if (poll(p, 2, -1) < 0)
                        continue;
                if (p[1].revents)
                        break;
                if (!PQconsumeInput(c)) {
                        log_warn("store: lost the connection that listens for other brokers'"
                                 " changes: %s",
                                 PQerrorMessage(c));
                        PQfinish(c);
                        c = NULL;
                        continue;
                }
                PGnotify *n;
                while ((n = PQnotifies(c))) {
                        uint64_t host_id = strtoull(n->extra, NULL, 10);
                        if (host_id && !own_pid(s, n->be_pid))
                                s->watch_fn(s->watch_ud, host_id);
                        PQfreemem(n);
                }
        }
        PQfinish(c);
        return NULL;
}

int store_watch(struct store *s, store_watch_fn fn, void *ud)
{
        int r = 0;
        pthread_mutex_lock(&s->watch_lock);
        if (!fn) {
                if (s->watching) {
                        char b = 1;
                        if (write(s->watch_pipe[1], &b, 1) != 1)
                                abort(); /* a pipe of our own: cannot fail */
                        pthread_join(s->watch_thread, NULL);
                        close(s->watch_pipe[0]);
                        close(s->watch_pipe[1]);
                        s->watching = 0;
                }
        } else if (s->watching) {
                r = -EBUSY;
        } else if (pipe(s->watch_pipe) < 0) {
                r = -errno;
        } else {
                s->watch_fn = fn;
                s->watch_ud = ud;
                if (pthread_create(&s->watch_thread, NULL, watch_main, s) != 0) {
                        close(s->watch_pipe[0]);
                        close(s->watch_pipe[1]);
                        r = -EAGAIN;
                } else {
                        s->watching = 1;
                }
        }
        pthread_mutex_unlock(&s->watch_lock);
        return r;
}

int store_open(const char *url, struct store **ret)
{
        struct store *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        static _Atomic uint64_t epochs;
        atomic_store(&s->version, (atomic_fetch_add(&epochs, 1) + 1) << 40);
        pthread_mutex_init(&s->write_lock, NULL);
        pthread_mutex_init(&s->watch_lock, NULL);
        pthread_mutex_init(&s->pool_lock, NULL);
        pthread_cond_init(&s->pool_cond, NULL);
        if (!(s->url = strdup(url))) {
                free(s);
                return -ENOMEM;
        }
        if ((r = conn_take(s)) < 0)
                goto fail;
        r = migrate(s);
        if (r == 0)
                r = load_key(s);
        conn_give(s);
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
        store_watch(s, NULL, NULL);
        for (size_t i = 0; i < s->n_idle; i++)
                conn_close(s->idle[i]);
        pthread_mutex_destroy(&s->write_lock);
        pthread_mutex_destroy(&s->watch_lock);
        pthread_mutex_destroy(&s->pool_lock);
        pthread_cond_destroy(&s->pool_cond);
        free(s->url);
        free(s->hc);
        free(s->hc_seen);
        free(s);
}

const struct id_key *store_id_key(struct store *s)
{
        return &s->key;
}

/* ---- accounts and keys ---- */

static void row_account(pq_stmt *st, struct account *a)
{
        memset(a, 0, sizeof(*a));
        a->id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, a->name, sizeof(a->name));
        a->tier = (enum tier)pq_column_int(st, 2);
        a->created_at = pq_column_int64(st, 3);
}

int store_account_create(struct store *s, const char *name, enum tier tier, struct account *ret)
{
        static const char sql[] =
                "INSERT INTO accounts (name, tier, created_at) VALUES (?,?,?)";
        int64_t now = util_now_ms();
        int r = begin(s);
        if (r < 0)
                return r;
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, name);
        pq_bind_int(st, 2, tier);
        pq_bind_int64(st, 3, now);
        int rc = pq_step(st);
        if (rc == PQS_CONSTRAINT)
                return end(s, -EEXIST);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot create account"));
        memset(ret, 0, sizeof(*ret));
        ret->id = (uint64_t)pq_last_id(s);
        util_strlcpy(ret->name, name, sizeof(ret->name));
        ret->tier = tier;
        ret->created_at = now;
        r = event(s, now, "account.created", ret->id, ret->id, name);
        return end(s, r);
}

typedef void (*row_fn)(pq_stmt *st, void *item);

/* Runs a one-row SELECT keyed by a text parameter: 0, -ENOENT or -EIO. */
static int one_by_text(struct store *s, const char *sql, const char *key, row_fn fn, void *ret,
                       const char *what)
{
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_text(st, 1, key);
                int rc = pq_step(st);
                if (rc == PQS_ROW) {
                        fn(st, ret);
                        r = 0;
                } else if (rc != PQS_DONE) {
                        r = db_err(s, what);
                }
        }
        unlock(s);
        return r;
}

static void row_account_cb(pq_stmt *st, void *item)
{
        row_account(st, item);
}

int store_account_by_name(struct store *s, const char *name, struct account *ret)
{
        static const char sql[] =
                "SELECT id, name, tier, created_at FROM accounts WHERE name = ?";
        return one_by_text(s, sql, name, row_account_cb, ret, "cannot read account");
}

/* Collects rows of a SELECT into a growing array of elem_size items. */

static int collect(struct store *s, pq_stmt *st, size_t elem_size, row_fn fn, void **ret,
                   size_t *ret_n)
{
        char *arr = NULL;
        size_t n = 0, cap = 0;
        int rc;

        while ((rc = pq_step(st)) == PQS_ROW) {
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
        if (rc != PQS_DONE) {
                free(arr);
                return db_err(s, "cannot read rows");
        }
        *ret = arr;
        *ret_n = n;
        return 0;
}

int store_account_list(struct store *s, struct account **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT id, name, tier, created_at FROM accounts ORDER BY id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, prefix);
        pq_bind_blob(st, 3, hash, 32);
        pq_bind_int64(st, 4, now);
        pq_bind_int(st, 5, read_only ? 1 : 0);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot create key"));
        *ret_id = (uint64_t)pq_last_id(s);
        r = event(s, now, "key.created", account_id, *ret_id, prefix);
        return end(s, r);
}

int store_key_find(struct store *s, const char *prefix, struct api_key *ret, size_t max,
                   size_t *ret_n)
{
        static const char sql[] =
                "SELECT k.id, k.account_id, a.tier, k.hash, k.read_only FROM api_keys k"
                " JOIN accounts a ON a.id = k.account_id"
                " WHERE k.prefix = ? AND k.revoked_at IS NULL ORDER BY k.id LIMIT 8";
        size_t n = 0;
        int rc, r = 0;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                unlock(s);
                return -EIO;
        }
        pq_bind_text(st, 1, prefix);
        while ((rc = pq_step(st)) == PQS_ROW && n < max) {
                struct api_key *k = &ret[n++];
                k->id = (uint64_t)pq_column_int64(st, 0);
                k->account_id = (uint64_t)pq_column_int64(st, 1);
                k->tier = (enum tier)pq_column_int(st, 2);
                memset(k->hash, 0, 32);
                if (pq_column_bytes(st, 3) == 32)
                        memcpy(k->hash, pq_column_blob(st, 3), 32);
                k->read_only = pq_column_int(st, 4);
        }
        if (rc != PQS_ROW && rc != PQS_DONE)
                r = db_err(s, "cannot read keys");
        unlock(s);
        *ret_n = n;
        return r;
}

static void row_key_info(pq_stmt *st, void *item)
{
        struct api_key_info *k = item;
        memset(k, 0, sizeof(*k));
        k->id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, k->prefix, sizeof(k->prefix));
        k->read_only = pq_column_int(st, 2);
        k->created_at = pq_column_int64(st, 3);
        k->revoked_at = pq_column_type(st, 4) == PQS_NULL ? 0 : pq_column_int64(st, 4);
}

int store_key_list(struct store *s, uint64_t account_id, struct api_key_info **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT id, prefix, read_only, created_at, revoked_at"
                                  " FROM api_keys WHERE account_id = ? ORDER BY id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)account_id);
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
        pq_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)key_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        if (pq_step(st) != PQS_ROW)
                return end(s, -ENOENT);
        col_text(st, 0, prefix, sizeof(prefix));
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, now);
        pq_bind_int64(st, 2, (int64_t)key_id);
        pq_bind_int64(st, 3, (int64_t)account_id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot revoke key"));
        if (pq_changes(s) == 0)
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

static void row_host(pq_stmt *st, void *item)
{
        struct host *h = item;
        memset(h, 0, sizeof(*h));
        h->id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, h->name, sizeof(h->name));
        col_text(st, 2, h->site, sizeof(h->site));
        col_text(st, 3, h->underlay_ip, sizeof(h->underlay_ip));
        col_text(st, 4, h->boot_id, sizeof(h->boot_id));
        col_text(st, 5, h->agent_version, sizeof(h->agent_version));
        col_text(st, 6, h->hv_type, sizeof(h->hv_type));
        h->vcpus = (uint32_t)pq_column_int64(st, 7);
        h->ram_mb = (uint64_t)pq_column_int64(st, 8);
        h->disk_gb = (uint64_t)pq_column_int64(st, 9);
        h->generation = (uint64_t)pq_column_int64(st, 10);
        h->applied_generation = (uint64_t)pq_column_int64(st, 11);
        h->last_seen = pq_column_int64(st, 12);
        h->draining = pq_column_int(st, 13);
        h->obs_domains = (uint32_t)pq_column_int64(st, 14);
        h->obs_vcpus = (uint32_t)pq_column_int64(st, 15);
        h->obs_ram_mb = (uint64_t)pq_column_int64(st, 16);
        h->guests = (uint32_t)pq_column_int64(st, 17);
        h->vcpus_used = (uint32_t)pq_column_int64(st, 18);
        h->ram_mb_used = (uint64_t)pq_column_int64(st, 19);
        h->disk_gb_used = (uint64_t)pq_column_int64(st, 20);
        h->hdd_gb = (uint64_t)pq_column_int64(st, 21);
        h->hdd_gb_used = (uint64_t)pq_column_int64(st, 22);
}

/* A site an agent names exists from then on (named after its slug until
 * an admin names it). */
static int site_ensure(struct store *s, const char *slug, int64_t now)
{
        static const char sql[] =
                "INSERT INTO sites (slug, name, created_at) VALUES (?1, ?1, ?2)"
                " ON CONFLICT (slug) DO NOTHING";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_text(st, 1, slug);
        pq_bind_int64(st, 2, now);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot record site");
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
        pq_stmt *st;

        if (r < 0)
                return r;
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        pq_bind_text(st, 1, h->host_id);
        if (pq_step(st) == PQS_ROW) {
                id = (uint64_t)pq_column_int64(st, 0);
                col_text(st, 1, old_boot, sizeof(old_boot));
        }
        if (!(st = stmt(s, id ? upd : ins)))
                return end(s, -EIO);
        int base = id ? 1 : 0;
        if (id)
                pq_bind_int64(st, 1, (int64_t)id);
        else
                pq_bind_text(st, 1, h->host_id);
        pq_bind_text(st, 2, h->site);
        pq_bind_text(st, 3, h->underlay_ip);
        pq_bind_text(st, 4, h->boot_id);
        pq_bind_text(st, 5, h->agent_version);
        pq_bind_text(st, 6, h->hv_type);
        pq_bind_int64(st, 7, h->vcpus);
        pq_bind_int64(st, 8, (int64_t)h->ram_mb);
        pq_bind_int64(st, 9, (int64_t)h->disk_gb);
        pq_bind_int64(st, 10, now);
        if (!base)
                pq_bind_int64(st, 11, now);
        pq_bind_int64(st, 12, (int64_t)h->hdd_gb);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot record host"));
        if (!id)
                id = (uint64_t)pq_last_id(s);
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
        static const char sql[] = "SELECT " HOST_COLS " FROM hosts h WHERE h.name = ?";
        return one_by_text(s, sql, name, row_host, ret, "cannot read host");
}

int store_host_lookup(struct store *s, const char *name, uint64_t *ret_id, char *boot_id,
                      size_t boot_id_len)
{
        static const char sql[] = "SELECT id, boot_id FROM hosts WHERE name = ?";
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_text(st, 1, name);
                int rc = pq_step(st);
                if (rc == PQS_ROW) {
                        *ret_id = (uint64_t)pq_column_int64(st, 0);
                        col_text(st, 1, boot_id, boot_id_len);
                        r = 0;
                } else if (rc != PQS_DONE) {
                        r = db_err(s, "cannot read host");
                }
        }
        unlock(s);
        return r;
}

int store_host_generation(struct store *s, uint64_t host_id, uint64_t *ret_gen)
{
        static const char sql[] = "SELECT generation FROM hosts WHERE id = ?";
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_int64(st, 1, (int64_t)host_id);
                if (pq_step(st) == PQS_ROW) {
                        *ret_gen = (uint64_t)pq_column_int64(st, 0);
                        r = 0;
                }
        }
        unlock(s);
        return r;
}

int store_host_list(struct store *s, struct host **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT " HOST_COLS " FROM hosts h ORDER BY h.name";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_host, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

static void row_site(pq_stmt *st, void *item)
{
        col_text(st, 0, item, TMSG_STR);
}

int store_site_list(struct store *s, char (**ret)[TMSG_STR], size_t *ret_n)
{
        static const char sql[] = "SELECT DISTINCT site FROM hosts ORDER BY site";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, TMSG_STR, row_site, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

void store_commit_stats(struct store *s, uint64_t *ret_commits, uint64_t *ret_writes)
{
        *ret_commits = atomic_load(&s->n_commits);
        *ret_writes = atomic_load(&s->n_writes);
}

void store_set_seen_slack(struct store *s, int64_t ms)
{
        s->seen_slack_ms = ms < 0 ? 0 : ms; /* set once, at start */
}

int store_hosts_touch(struct store *s, const uint64_t *ids, size_t n, int64_t now)
{
        static const char sql[] = "UPDATE hosts SET last_seen = GREATEST(last_seen, ?) WHERE id = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r == 0; i++) {
                pq_stmt *st = stmt(s, sql);
                if (!st)
                        return end(s, -EIO);
                pq_bind_int64(st, 1, now);
                pq_bind_int64(st, 2, (int64_t)ids[i]);
                if (pq_step(st) != PQS_DONE)
                        r = db_err(s, "cannot touch host");
        }
        return end(s, r); /* placements read the hosts afresh: no cache to update */
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

static void row_obs(pq_stmt *st, void *item)
{
        struct obs_row *o = item;
        o->id = (uint64_t)pq_column_int64(st, 0);
        o->state = pq_column_int(st, 1);
        o->reboot_done = (uint64_t)pq_column_int64(st, 2);
        o->rebuild_done = (uint64_t)pq_column_int64(st, 3);
        col_text(st, 4, o->error, sizeof(o->error));
        o->deleted = pq_column_type(st, 5) != PQS_NULL;
        o->account_id = (uint64_t)pq_column_int64(st, 6);
        o->observed = pq_column_int(st, 7);
        o->resize_done = (uint64_t)pq_column_int64(st, 8);
        o->rescue = pq_column_int(st, 9);
        o->restore_done = (uint64_t)pq_column_int64(st, 10);
        o->snap_pending = pq_column_int(st, 11);
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
        pq_stmt *st;

        if (o->deleted && (!d || d->state == POWER_UNKNOWN)) {
                /* Deleted, and gone from the host: forget it. */
                if (!(st = stmt(s, purge)))
                        return -EIO;
                pq_bind_int64(st, 1, (int64_t)o->id);
                return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot purge vm");
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
        pq_bind_int(st, 1, state);
        pq_bind_int64(st, 2, (int64_t)rb);
        pq_bind_int64(st, 3, (int64_t)rl);
        pq_bind_text(st, 4, err);
        pq_bind_int64(st, 5, now);
        pq_bind_int64(st, 6, (int64_t)o->id);
        pq_bind_int64(st, 7, (int64_t)rs);
        pq_bind_int(st, 8, rescue);
        pq_bind_int64(st, 9, (int64_t)rd);
        if (pq_step(st) != PQS_DONE)
                return db_err(s, "cannot record vm state");
        if (!o->observed && state >= 0 && !o->deleted) {
                /* Seen for the first time, so no longer being created: one
                 * in flight less on its host. (Only the first time: a guest
                 * that vanishes and comes back was never counted again.) */
                static const char fl[] =
                        "UPDATE hosts SET inflight = GREATEST(inflight - 1, 0)"
                        " WHERE id = (SELECT host_id FROM vms WHERE id = ?)";
                if (!(st = stmt(s, fl)))
                        return -EIO;
                pq_bind_int64(st, 1, (int64_t)o->id);
                if (pq_step(st) != PQS_DONE)
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
                "UPDATE hosts SET last_seen = GREATEST(last_seen, ?1), applied_generation = ?2,"
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
        pq_stmt *st;
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
        const int changes_before = pq_total_changes(s);
        if (!(st = stmt(s, host_upd))) {
                r = -EIO;
                goto out;
        }
        pq_bind_int64(st, 1, now);
        pq_bind_int64(st, 2, (int64_t)sync->applied_generation);
        pq_bind_int64(st, 3, sync->n_present);
        pq_bind_int64(st, 4, sync->vcpus_used);
        pq_bind_int64(st, 5, (int64_t)sync->ram_mb_used);
        pq_bind_int64(st, 6, (int64_t)host_id);
        pq_bind_int64(st, 7, s->seen_slack_ms);
        if (pq_step(st) != PQS_DONE) {
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
                        pq_bind_int64(st, 1, (int64_t)host_id);
                        pq_bind_int64(st, 2, (int64_t)doms[i].vm_id);
                        int rc = pq_step(st);
                        if (rc == PQS_DONE)
                                continue; /* not ours to record */
                        if (rc != PQS_ROW) {
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
        pq_bind_int64(st, 1, (int64_t)host_id);
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
        if (pq_total_changes(s) != changes_before)
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

static void row_desired(pq_stmt *st, void *item)
{
        struct dom_desired *d = item;
        memset(d, 0, sizeof(*d));
        d->vm_id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, d->hostname, sizeof(d->hostname));
        host_name_fix(d->hostname, sizeof(d->hostname), d->vm_id);
        d->vcpus = (uint32_t)pq_column_int64(st, 2);
        d->ram_mb = (uint32_t)pq_column_int64(st, 3);
        d->disk_gb = (uint32_t)pq_column_int64(st, 4);
        d->power = pq_column_int(st, 5) == VM_WANT_RUNNING ? POWER_RUNNING : POWER_STOPPED;
        d->reboot_seq = (uint64_t)pq_column_int64(st, 6);
        d->rebuild_seq = (uint64_t)pq_column_int64(st, 7);
        col_text(st, 8, d->image, sizeof(d->image));
        d->storage = pq_column_int(st, 9) == STORAGE_HDD ? STORAGE_HDD : STORAGE_SSD;
        d->force_off = pq_column_int(st, 5) == VM_WANT_OFF;
        d->resize_seq = (uint64_t)pq_column_int64(st, 10);
        d->rescue = pq_column_int(st, 11) != 0;
        d->cpu_cap = (uint32_t)pq_column_int(st, 12);
        d->restore_seq = (uint64_t)pq_column_int64(st, 13);
        d->restore_snap = (uint64_t)pq_column_int64(st, 14);
        d->source_vm = (uint64_t)pq_column_int64(st, 15);
        d->source_snap = (uint64_t)pq_column_int64(st, 16);
}

/* Fills each domain's snapshots (domains sorted by vm id) from one query
 * for the host, sorted the same way. */
static int desired_snaps(struct store *s, uint64_t host_id, struct msg_sync_reply *ret)
{
        static const char sql[] =
                "SELECT s.vm_id, s.id, s.online FROM snapshots s JOIN vms v ON v.id = s.vm_id"
                " WHERE v.host_id = ? AND v.deleted_at IS NULL AND s.state != 'deleting'"
                " ORDER BY s.vm_id, s.id";
        pq_stmt *st = stmt(s, sql);
        size_t j = 0;
        int rc;
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)host_id);
        while ((rc = pq_step(st)) == PQS_ROW) {
                uint64_t vm_id = (uint64_t)pq_column_int64(st, 0);
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
                        pq_reset(st);
                        return -E2BIG;
                }
                d->snaps[d->n_snaps].id = (uint64_t)pq_column_int64(st, 1);
                d->snaps[d->n_snaps].online = pq_column_int(st, 2) != 0;
                d->n_snaps++;
        }
        pq_reset(st);
        return rc == PQS_ROW || rc == PQS_DONE ? 0 : db_err(s, "cannot read snapshots");
}

static void row_img_desired(pq_stmt *st, void *item)
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
        int rc = PQS_DONE, r = 0;
        pq_stmt *st = stmt(s, local);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)host_id);
        while (r == 0 && (rc = pq_step(st)) == PQS_ROW) {
                uint64_t vm_id = (uint64_t)pq_column_int64(st, 0);
                uint32_t vni = (uint32_t)pq_column_int64(st, 1);
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
        pq_reset(st);
        if (r == 0 && rc != PQS_DONE && rc != PQS_ROW)
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
        pq_bind_int64(st, 1, (int64_t)host_id);
        size_t k = 0, started = SIZE_MAX;
        while (r == 0 && (rc = pq_step(st)) == PQS_ROW) {
                uint32_t vni = (uint32_t)pq_column_int64(st, 0);
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
        pq_reset(st);
        if (r == 0 && rc != PQS_DONE && rc != PQS_ROW)
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
        static const char gen[] = "SELECT generation FROM hosts WHERE id = ?";
        static const char sql[] =
                /* the host name: a VM with a DNS name (Tilaa's dns_name; its
                 * name is for internal use, "My server (2)") is its first
                 * label, as in its seed (store_vm_seed) */
                "SELECT id, CASE WHEN COALESCE(dns_name, '') = '' THEN name"
                " ELSE substr(dns_name, 1, strpos(dns_name || '.', '.') - 1) END," /* SQLite: instr */
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
        int snap = 0; /* rlock() began a REPEATABLE READ transaction */
        pq_stmt *st = stmt(s, gen);
        if (!st) {
                r = -EIO;
                goto out;
        }
        pq_bind_int64(st, 1, (int64_t)host_id);
        if (pq_step(st) != PQS_ROW) {
                r = -ENOENT;
                goto out;
        }
        ret->generation = (uint64_t)pq_column_int64(st, 0);
        if (!(st = stmt(s, sql))) {
                r = -EIO;
                goto out;
        }
        pq_bind_int64(st, 1, (int64_t)host_id);
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
                        pq_bind_int64(st, 1, (int64_t)host_id);
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
        " v.obs_restore_done, CASE WHEN v.snap_pending > 0 THEN CAST(EXISTS (SELECT 1 FROM"     \
        " snapshots s WHERE s.vm_id = v.id AND s.state = 'creating' AND s.online = 0)"    \
        " AS INT) ELSE 0 END, (SELECT string_agg(CAST(network_id AS TEXT), ',' ORDER BY position)" \
        " FROM nics WHERE vm_id = v.id AND network_id <> 0)"

static void row_vm(pq_stmt *st, void *item)
{
        struct vm *v = item;
        memset(v, 0, sizeof(*v));
        v->id = (uint64_t)pq_column_int64(st, 0);
        v->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, v->name, sizeof(v->name));
        col_text(st, 3, v->size, sizeof(v->size));
        col_text(st, 4, v->image, sizeof(v->image));
        col_text(st, 5, v->site, sizeof(v->site));
        v->host_id = (uint64_t)pq_column_int64(st, 6);
        v->vcpus = (uint32_t)pq_column_int64(st, 7);
        v->ram_mb = (uint32_t)pq_column_int64(st, 8);
        v->disk_gb = (uint32_t)pq_column_int64(st, 9);
        v->want = (enum vm_power_want)pq_column_int(st, 10);
        v->reboot_seq = (uint64_t)pq_column_int64(st, 11);
        v->rebuild_seq = (uint64_t)pq_column_int64(st, 12);
        v->created_at = pq_column_int64(st, 13);
        v->obs_state = pq_column_int(st, 14);
        v->obs_reboot_done = (uint64_t)pq_column_int64(st, 15);
        v->obs_rebuild_done = (uint64_t)pq_column_int64(st, 16);
        col_text(st, 17, v->obs_error, sizeof(v->obs_error));
        v->host_last_seen = pq_column_int64(st, 18);
        v->observed = pq_column_int(st, 19);
        v->storage = pq_column_int(st, 20) == STORAGE_HDD ? STORAGE_HDD : STORAGE_SSD;
        col_text(st, 21, v->group, sizeof(v->group));
        v->resize_seq = (uint64_t)pq_column_int64(st, 22);
        v->obs_resize_done = (uint64_t)pq_column_int64(st, 23);
        v->rescue = pq_column_int(st, 24) != 0;
        v->obs_rescue = pq_column_int(st, 25) != 0;
        v->cpu_cap = (uint32_t)pq_column_int(st, 26);
        v->restore_seq = (uint64_t)pq_column_int64(st, 27);
        v->restore_snap = (uint64_t)pq_column_int64(st, 28);
        v->obs_restore_done = (uint64_t)pq_column_int64(st, 29);
        v->snapshotting = pq_column_int(st, 30) != 0;
        /* its private networks: "12,7" in attach order */
        const char *nets = (const char *)pq_column_text(st, 31);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                row_vm(st, ret);
                return 0;
        }
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read vm");
}

static int bump_generation(struct store *s, uint64_t host_id)
{
        static const char sql[] = "UPDATE hosts SET generation = generation + 1 WHERE id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)host_id);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot bump generation");
}

static int host_site(struct store *s, uint64_t host_id, char *buf, size_t len)
{
        static const char sql[] = "SELECT site FROM hosts WHERE id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)host_id);
        if (pq_step(st) != PQS_ROW)
                return db_err(s, "cannot read host site");
        col_text(st, 0, buf, len);
        return 0;
}

/* Adds (sign 1) or gives back (sign -1) a guest's reservation on its host. */
static int reserve(struct store *s, uint64_t host_id, int sign, uint32_t vcpus, uint32_t ram_mb,
                   uint32_t disk_gb, enum storage storage, int inflight)
{
        static const char sql[] =
                "UPDATE hosts SET vcpus_used = GREATEST(vcpus_used + ?2, 0),"
                " ram_mb_used = GREATEST(ram_mb_used + ?3, 0),"
                " disk_gb_used = GREATEST(disk_gb_used + CASE WHEN ?7 = 0 THEN ?4 ELSE 0 END, 0),"
                " hdd_gb_used = GREATEST(hdd_gb_used + CASE WHEN ?7 = 1 THEN ?4 ELSE 0 END, 0),"
                " guests = GREATEST(guests + ?5, 0), inflight = GREATEST(inflight + ?6, 0),"
                " generation = generation + 1 WHERE id = ?1";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)host_id);
        pq_bind_int64(st, 2, (int64_t)sign * vcpus);
        pq_bind_int64(st, 3, (int64_t)sign * ram_mb);
        pq_bind_int64(st, 4, (int64_t)sign * disk_gb);
        pq_bind_int64(st, 5, sign);
        pq_bind_int64(st, 6, (int64_t)sign * inflight);
        pq_bind_int(st, 7, (int)storage);
        hc_mark(s, host_id);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot reserve capacity");
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
        pq_stmt *st = stmt(s, sql);
        int rc;
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)req->account_id);
        pq_bind_text(st, 2, req->group);
        while ((rc = pq_step(st)) == PQS_ROW) {
                int found;
                size_t pos = hc_find(s, (uint64_t)pq_column_int64(st, 0), &found);
                if (found)
                        s->hc[pos].in_group = 1;
        }
        pq_reset(st);
        return rc == PQS_DONE ? 0 : db_err(s, "cannot read anti-affinity group");
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
        pq_stmt *st = stmt(s, enforced ? sql : price_sql);
        int64_t credit, daily, price;
        if (!st)
                return -EIO;
        if (enforced) {
                pq_bind_int64(st, 1, (int64_t)account_id);
                pq_bind_int64(st, 3, (int64_t)vm_id);
        }
        pq_bind_text(st, 2, size ? size : "");
        if (pq_step(st) != PQS_ROW) {
                pq_reset(st);
                return db_err(s, "cannot read account credit");
        }
        credit = pq_column_int64(st, 0); /* NULL (no such account): 0 */
        daily = pq_column_int64(st, 1);
        price = pq_column_int64(st, 2); /* NULL: 0, no price */
        pq_reset(st);
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
        pq_stmt *st;
        int r = begin(s);

        if (r < 0)
                return r;
        int64_t price = 0;
        if ((r = credit_check(s, req->account_id, 0, req->size, -1, req->why, req->why_len,
                              &price)) < 0)
                goto out;
        if ((r = hc_load(s)) < 0)
                goto out;
        if (req->site) {
                if (!(st = stmt(s, site_sel))) {
                        r = -EIO;
                        goto out;
                }
                pq_bind_text(st, 1, req->site);
                /* an unknown site: no host is in it */
                site_id = pq_step(st) == PQS_ROW ? (uint32_t)pq_column_int64(st, 0)
                                                         : UINT32_MAX;
                pq_reset(st);
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
                pq_bind_int64(st, 1, (int64_t)req->from_snap);
                pq_bind_int64(st, 2, (int64_t)req->account_id);
                if (pq_step(st) == PQS_ROW) {
                        src_vm = (uint64_t)pq_column_int64(st, 0);
                        src_host = (uint64_t)pq_column_int64(st, 1);
                        src_disk = (uint32_t)pq_column_int64(st, 2);
                        col_text(st, 3, src_image, sizeof(src_image));
                }
                pq_reset(st);
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
        pq_bind_int64(st, 1, (int64_t)req->account_id);
        pq_bind_text(st, 2, req->name);
        pq_bind_text(st, 3, req->size);
        pq_bind_text(st, 4, req->image);
        pq_bind_text(st, 5, site);
        pq_bind_int64(st, 6, (int64_t)h->id);
        pq_bind_int64(st, 7, req->vcpus);
        pq_bind_int64(st, 8, req->ram_mb);
        pq_bind_int64(st, 9, req->disk_gb);
        pq_bind_int(st, 10, VM_WANT_RUNNING);
        pq_bind_int64(st, 11, now);
        pq_bind_int(st, 12, (int)req->storage);
        if (req->group)
                pq_bind_text(st, 13, req->group);
        char keys[STORE_VM_SSH_KEYS_MAX * 21 + 1] = "";
        for (size_t i = 0, off = 0; i < req->n_ssh_keys && i < STORE_VM_SSH_KEYS_MAX; i++)
                off += (size_t)snprintf(keys + off, sizeof(keys) - off, "%s%llu", i ? "," : "",
                                        (unsigned long long)req->ssh_keys[i]);
        pq_bind_text(st, 14, keys);
        if (req->user_data)
                pq_bind_text(st, 15, req->user_data);
        pq_bind_int64(st, 16, (int64_t)src_vm);
        pq_bind_int64(st, 17, (int64_t)req->from_snap);
        if (req->dns_name)
                pq_bind_text(st, 18, req->dns_name);
        if (req->admin_password)
                pq_bind_text(st, 19, req->admin_password);
        pq_bind_int(st, 20, req->cpu_cap > 0 && req->cpu_cap < 100 ? (int)req->cpu_cap : 0);
        if (pq_step(st) != PQS_DONE) {
                r = db_err(s, "cannot insert vm");
                goto out;
        }
        uint64_t id = (uint64_t)pq_last_id(s);
        if (!(st = stmt(s, bill))) {
                r = -EIO;
                goto out;
        }
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)req->account_id);
        pq_bind_text(st, 3, req->name);
        pq_bind_text(st, 4, req->size);
        pq_bind_int64(st, 5, price);
        pq_bind_int64(st, 6, now);
        if (pq_step(st) != PQS_DONE) {
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
                pq_bind_int64(st, 1, (int64_t)req->account_id);
                pq_bind_text(st, 2, req->deploy->template_id);
                pq_bind_text(st, 3, req->deploy->version);
                pq_bind_text(st, 4, req->name);
                pq_bind_int64(st, 5, (int64_t)id);
                pq_bind_text(st, 6, req->deploy->config);
                pq_bind_int64(st, 7, now);
                if (pq_step(st) != PQS_DONE) {
                        r = db_err(s, "cannot record deployment");
                        goto out;
                }
                claim_id = (uint64_t)pq_last_id(s);
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
        pq_stmt *st = stmt(s, expired);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)i->account_id);
        pq_bind_text(st, 2, i->key);
        pq_bind_int64(st, 3, now - STORE_IDEM_TTL_MS);
        if (pq_step(st) != PQS_DONE)
                return db_err(s, "cannot expire idempotency key");
        st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)i->account_id);
        pq_bind_text(st, 2, i->key);
        pq_bind_blob(st, 3, i->hash, sizeof(i->hash));
        pq_bind_int(st, 4, status);
        pq_bind_int64(st, 5, (int64_t)resource_id);
        pq_bind_int64(st, 6, now);
        int rc = pq_step(st);
        if (rc == PQS_CONSTRAINT)
                return -EEXIST;
        return rc == PQS_DONE ? 0 : db_err(s, "cannot record idempotency key");
}

/* The resource of a key claimed earlier in this transaction. */
static int idem_set_resource(struct store *s, const struct idem *i, uint64_t resource_id)
{
        static const char sql[] =
                "UPDATE idempotency SET resource_id = ? WHERE account_id = ? AND key = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)resource_id);
        pq_bind_int64(st, 2, (int64_t)i->account_id);
        pq_bind_text(st, 3, i->key);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot record idempotency key");
}

int store_idem_get(struct store *s, uint64_t account_id, const char *key, int64_t now,
                   struct idem_rec *ret)
{
        static const char sql[] =
                "SELECT request_hash, status, resource_id, body, location FROM idempotency"
                " WHERE account_id = ? AND key = ? AND created_at >= ?";
        static const char purge[] = "DELETE FROM idempotency WHERE created_at < ?";
        int r = -ENOENT;
        if (now - s->idem_purged_at > 60000 && begin(s) == 0) {
                /* Keys live STORE_IDEM_TTL_MS; the old ones go, a minute's worth
                 * at a time (a write of its own: reads are read-only here). */
                pq_stmt *p = stmt(s, purge);
                int pr = -EIO;
                if (p) {
                        pq_bind_int64(p, 1, now - STORE_IDEM_TTL_MS);
                        pr = pq_step(p) == PQS_DONE ? 0
                                                   : db_err(s, "cannot purge idempotency keys");
                }
                s->idem_purged_at = now;
                end(s, pr);
        }
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                unlock(s);
                return -EIO;
        }
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, key);
        pq_bind_int64(st, 3, now - STORE_IDEM_TTL_MS);
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                memset(ret, 0, sizeof(*ret));
                if (pq_column_bytes(st, 0) == (int)sizeof(ret->hash))
                        memcpy(ret->hash, pq_column_blob(st, 0), sizeof(ret->hash));
                ret->status = pq_column_int(st, 1);
                ret->resource_id = (uint64_t)pq_column_int64(st, 2);
                const unsigned char *b = pq_column_text(st, 3);
                ret->body = b ? strdup((const char *)b) : NULL;
                col_text(st, 4, ret->location, sizeof(ret->location));
                r = b && !ret->body ? -ENOMEM : 0;
        } else if (rc != PQS_DONE) {
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, key);
        pq_bind_text(st, 3, body);
        if (location)
                pq_bind_text(st, 4, location);
        if (pq_step(st) != PQS_DONE)
                r = db_err(s, "cannot record idempotent response");
        return end(s, r);
}

/* ---- SSH keys ---- */

static void row_sshkey(pq_stmt *st, void *item)
{
        struct ssh_key *k = item;
        memset(k, 0, sizeof(*k));
        k->id = (uint64_t)pq_column_int64(st, 0);
        k->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, k->name, sizeof(k->name));
        col_text(st, 3, k->fingerprint, sizeof(k->fingerprint));
        col_text(st, 4, k->public_key, sizeof(k->public_key));
        k->created_at = pq_column_int64(st, 5);
        k->user_id = (uint64_t)pq_column_int64(st, 6);
        k->modified_at = pq_column_int64(st, 7);
}

#define SSHKEY_COLS "id, account_id, name, fingerprint, public_key, created_at, user_id, modified_at"

static int sshkey_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                             struct ssh_key *ret)
{
        static const char sql[] =
                "SELECT " SSHKEY_COLS " FROM ssh_keys WHERE id = ? AND account_id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                row_sshkey(st, ret);
                return 0;
        }
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read SSH key");
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
        pq_stmt *st = stmt(s, dup);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)k->account_id);
        pq_bind_text(st, 2, k->fingerprint);
        if (pq_step(st) == PQS_ROW) {
                ret->id = (uint64_t)pq_column_int64(st, 0);
                return end(s, -EEXIST);
        }
        if (!(st = stmt(s, count)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)k->account_id);
        if (pq_step(st) != PQS_ROW)
                return end(s, db_err(s, "cannot count SSH keys"));
        if (pq_column_int64(st, 0) >= STORE_SSHKEYS_PER_ACCOUNT)
                return end(s, -EDQUOT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)k->account_id);
        pq_bind_text(st, 2, k->name);
        pq_bind_text(st, 3, k->public_key);
        pq_bind_text(st, 4, k->fingerprint);
        pq_bind_int64(st, 5, now);
        pq_bind_int64(st, 6, (int64_t)k->user_id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot store SSH key"));
        uint64_t id = (uint64_t)pq_last_id(s);
        r = idem ? idem_set_resource(s, idem, id) : 0;
        if (r == 0)
                r = event(s, now, "ssh_key.created", k->account_id, id, k->name);
        if (r == 0)
                r = sshkey_get_locked(s, k->account_id, id, ret);
        return end(s, r);
}

int store_sshkey_get(struct store *s, uint64_t account_id, uint64_t id, struct ssh_key *ret)
{
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot delete SSH key"));
        if (pq_changes(s) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, util_now_ms(), "ssh_key.deleted", account_id, id, ""));
}

int store_sshkey_page(struct store *s, const struct vm_query *q, struct ssh_key **ret,
                      size_t *ret_n)
{
        static const char sql[] = "SELECT " SSHKEY_COLS " FROM ssh_keys WHERE account_id = ?1"
                                  " AND id > ?2 ORDER BY id LIMIT ?3";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)q->account_id);
                pq_bind_int64(st, 2, (int64_t)q->after_id);
                if (q->limit) /* none: LIMIT NULL, all */
                        pq_bind_int64(st, 3, (int64_t)q->limit);
        }
        r = st ? collect(s, st, sizeof(**ret), row_sshkey, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_sshkey_check(struct store *s, uint64_t account_id, const uint64_t *ids, size_t n,
                       size_t *ret_bad)
{
        static const char sql[] = "SELECT 1 FROM ssh_keys WHERE id = ? AND account_id = ?";
        int r = 0;
        rlock(s);
        for (size_t i = 0; i < n && r == 0; i++) {
                pq_stmt *st = stmt(s, sql);
                if (!st) {
                        r = -EIO;
                        break;
                }
                pq_bind_int64(st, 1, (int64_t)ids[i]);
                pq_bind_int64(st, 2, (int64_t)account_id);
                int rc = pq_step(st);
                if (rc == PQS_DONE) {
                        *ret_bad = i;
                        r = -ENOENT;
                } else if (rc != PQS_ROW) {
                        r = db_err(s, "cannot read SSH key");
                }
        }
        unlock(s);
        return r;
}

/* ---- template deployments ---- */

#define DEPLOY_COLS "id, account_id, template, version, name, vm_id, config, created_at"

static void row_deploy(pq_stmt *st, void *item)
{
        struct deployment *d = item;
        memset(d, 0, sizeof(*d));
        d->id = (uint64_t)pq_column_int64(st, 0);
        d->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, d->template_id, sizeof(d->template_id));
        col_text(st, 3, d->version, sizeof(d->version));
        col_text(st, 4, d->name, sizeof(d->name));
        d->vm_id = (uint64_t)pq_column_int64(st, 5);
        col_text(st, 6, d->config, sizeof(d->config));
        d->created_at = pq_column_int64(st, 7);
}

static int deploy_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                             struct deployment *ret)
{
        static const char sql[] = "SELECT " DEPLOY_COLS " FROM deployments WHERE id = ?"
                                  " AND account_id = ? AND deleted_at IS NULL";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                row_deploy(st, ret);
                return 0;
        }
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read deployment");
}

int store_deploy_get(struct store *s, uint64_t account_id, uint64_t id, struct deployment *ret)
{
        rlock(s);
        int r = deploy_get_locked(s, account_id, id, ret);
        unlock(s);
        return r;
}

int store_deploy_page(struct store *s, const struct vm_query *q, struct deployment **ret,
                      size_t *ret_n)
{
        static const char sql[] = "SELECT " DEPLOY_COLS " FROM deployments WHERE account_id = ?1"
                                  " AND deleted_at IS NULL AND id > ?2 ORDER BY id LIMIT ?3";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)q->account_id);
                pq_bind_int64(st, 2, (int64_t)q->after_id);
                if (q->limit) /* none: LIMIT NULL, all */
                        pq_bind_int64(st, 3, (int64_t)q->limit);
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
        pq_stmt *ps = stmt(s, old_price_sql);
        if (!ps)
                return -EIO;
        pq_bind_int64(ps, 1, (int64_t)vm_id);
        if (pq_step(ps) == PQS_ROW)
                old_price = pq_column_int64(ps, 0);
        pq_reset(ps);
        return credit_check(s, account_id, vm_id, size, old_price, why, why_len, ret_price);
}

static int bill_reprice(struct store *s, uint64_t vm_id, const char *size, int64_t price)
{
        static const char reprice[] =
                "UPDATE billable SET size = ?2, price_month_cents = ?3 WHERE vm_id = ?1";
        pq_stmt *st = stmt(s, reprice);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_text(st, 2, size);
        pq_bind_int64(st, 3, price);
        if (pq_step(st) != PQS_DONE)
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
        if ((r = hc_load(s)) < 0)
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
        pq_stmt *st = stmt(s, upd);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)v.id);
        pq_bind_text(st, 2, req->size);
        pq_bind_int64(st, 3, req->vcpus);
        pq_bind_int64(st, 4, req->ram_mb);
        pq_bind_int64(st, 5, req->disk_gb);
        pq_bind_int(st, 6, req->cpu_cap > 0 && req->cpu_cap < 100 ? (int)req->cpu_cap : 0);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, now);
        pq_bind_int64(st, 2, (int64_t)id);
        if (pq_step(st) != PQS_DONE)
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
        rlock(s);
        int r = get_vm_locked(s, account_id, vm_id, ret);
        unlock(s);
        return r;
}

int store_vm_list(struct store *s, uint64_t account_id, struct vm **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                                  " WHERE v.account_id = ? AND v.deleted_at IS NULL ORDER BY v.id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)account_id);
        r = st ? collect(s, st, sizeof(**ret), row_vm, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_vm_page(struct store *s, const struct vm_query *q, struct vm **ret, size_t *ret_n)
{
        static const char sql[] =
                "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                " WHERE v.account_id = ?1 AND v.deleted_at IS NULL AND v.id > ?2"
                " AND (CAST(?3 AS TEXT) IS NULL OR v.site = ?3)"
                " AND (CAST(?4 AS TEXT) IS NULL OR v.name = ?4)"
                " ORDER BY v.id LIMIT ?5";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)q->account_id);
                pq_bind_int64(st, 2, (int64_t)q->after_id);
                if (q->region)
                        pq_bind_text(st, 3, q->region);
                if (q->name)
                        pq_bind_text(st, 4, q->name);
                if (q->limit) /* none: LIMIT NULL, all */
                        pq_bind_int64(st, 5, (int64_t)q->limit);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)vm_id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot record action"));
        if (act == VM_ACT_REBUILD) {
                if (!(st = stmt(s, snaps_go)))
                        return end(s, -EIO);
                pq_bind_int64(st, 1, (int64_t)vm_id);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot delete snapshots"));
                if (pq_changes(s) > 0 && (r = snap_pending_sync(s, vm_id)) < 0)
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, now);
        pq_bind_int64(st, 2, (int64_t)vm_id);
        if (pq_step(st) != PQS_DONE)
                return db_err(s, "cannot delete vm");
        if (!(st = stmt(s, bill)))
                return -EIO;
        pq_bind_int64(st, 1, now);
        pq_bind_int64(st, 2, (int64_t)vm_id);
        if (pq_step(st) != PQS_DONE)
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

/* snap_state_to_string() and its table: store_sqlite.c (shared). */

#define SNAP_COLS                                                                           \
        "id, account_id, vm_id, name, online, state, replaces, created_at, ready_at, vcpus," \
        " ram_mb, disk_gb, image"

static void row_snap(pq_stmt *st, void *item)
{
        struct snapshot *p = item;
        const unsigned char *state = pq_column_text(st, 5);
        memset(p, 0, sizeof(*p));
        p->id = (uint64_t)pq_column_int64(st, 0);
        p->account_id = (uint64_t)pq_column_int64(st, 1);
        p->vm_id = (uint64_t)pq_column_int64(st, 2);
        col_text(st, 3, p->name, sizeof(p->name));
        p->online = pq_column_int(st, 4) != 0;
        p->state = SNAP_DELETING; /* the CHECK constraint allows no other */
        for (int i = 0; state && i < SNAP__MAX; i++)
                if (strcmp((const char *)state, snap_state_to_string((enum snap_state)i)) == 0)
                        p->state = (enum snap_state)i;
        p->replaces = (uint64_t)pq_column_int64(st, 6);
        p->created_at = pq_column_int64(st, 7);
        p->ready_at = pq_column_int64(st, 8);
        p->vcpus = (uint32_t)pq_column_int64(st, 9);
        p->ram_mb = (uint32_t)pq_column_int64(st, 10);
        p->disk_gb = (uint32_t)pq_column_int64(st, 11);
        col_text(st, 12, p->image, sizeof(p->image));
}

static int snap_get_locked(struct store *s, uint64_t account_id, uint64_t snap_id,
                           struct snapshot *ret)
{
        static const char sql[] =
                "SELECT " SNAP_COLS " FROM snapshots WHERE id = ? AND account_id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)snap_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                row_snap(st, ret);
                return 0;
        }
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read snapshot");
}

/* Every change of a vm's snapshot states ends here: vms.snap_pending is
 * the count of its snapshots in state creating or deleting, exactly. */
static int snap_pending_sync(struct store *s, uint64_t vm_id)
{
        static const char sql[] =
                "UPDATE vms SET snap_pending = (SELECT COUNT(*) FROM snapshots"
                " WHERE vm_id = ?1 AND state != 'ready') WHERE id = ?1";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot count snapshots");
}

static int snap_delete_all(struct store *s, uint64_t vm_id)
{
        static const char sql[] = "DELETE FROM snapshots WHERE vm_id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        if (pq_step(st) != PQS_DONE)
                return db_err(s, "cannot delete snapshots");
        return pq_changes(s) > 0 ? snap_pending_sync(s, vm_id) : 0;
}

struct snap_pend {
        uint64_t id, replaces;
        int creating;
        char name[STORE_NAME_MAX];
};

static void row_snap_pend(pq_stmt *st, void *item)
{
        struct snap_pend *p = item;
        const unsigned char *state = pq_column_text(st, 1);
        p->id = (uint64_t)pq_column_int64(st, 0);
        p->creating = state && strcmp((const char *)state, "creating") == 0;
        p->replaces = (uint64_t)pq_column_int64(st, 2);
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
        pq_stmt *st;

        if (!present && !d->snap_failed)
                return 0;
        if (!(st = stmt(s, sel)))
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)o->id);
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
                        pq_bind_int64(st, 1, (int64_t)p->id);
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
                        pq_bind_int64(st, 1, now);
                        pq_bind_int64(st, 2, (int64_t)p->id);
                        kind = "snapshot.ready";
                } else if (present && !p->creating && !snap_reported(d, p->id)) {
                        if (!(st = stmt(s, gone))) {
                                r = -EIO;
                                break;
                        }
                        pq_bind_int64(st, 1, (int64_t)p->id);
                        kind = "snapshot.deleted";
                } else {
                        continue; /* not done yet */
                }
                if (pq_step(st) != PQS_DONE) {
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
                        pq_bind_int64(st, 1, (int64_t)p->replaces);
                        if (pq_step(st) != PQS_DONE) {
                                r = db_err(s, "cannot record snapshot state");
                                break;
                        }
                        if (pq_changes(s) > 0) {
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
        pq_stmt *st;
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
        pq_bind_int64(st, 1, (int64_t)vm_id);
        while ((rc = pq_step(st)) == PQS_ROW) {
                const unsigned char *nm = pq_column_text(st, 1);
                const unsigned char *state = pq_column_text(st, 2);
                count++;
                if (state && strcmp((const char *)state, "creating") == 0)
                        busy = 1;
                latest = (uint64_t)pq_column_int64(st, 0); /* by id: the last */
                if (nm && strcmp((const char *)nm, name) == 0)
                        by_name = latest;
        }
        if (rc != PQS_DONE)
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
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_int64(st, 2, (int64_t)vm_id);
        pq_bind_text(st, 3, name);
        pq_bind_int(st, 4, online ? 1 : 0);
        pq_bind_int64(st, 5, (int64_t)replaces);
        pq_bind_int64(st, 6, now);
        pq_bind_int64(st, 7, v.vcpus);
        pq_bind_int64(st, 8, v.ram_mb);
        pq_bind_int64(st, 9, v.disk_gb);
        pq_bind_text(st, 10, v.image);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot insert snapshot"));
        uint64_t id = (uint64_t)pq_last_id(s);
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
        rlock(s);
        int r = snap_get_locked(s, account_id, snap_id, ret);
        unlock(s);
        return r;
}

int store_snap_list(struct store *s, uint64_t account_id, uint64_t vm_id, struct snapshot **ret,
                    size_t *ret_n)
{
        static const char of_vm[] = "SELECT " SNAP_COLS " FROM snapshots WHERE vm_id = ?2"
                                    " AND account_id = ?1 AND state != 'creating' ORDER BY id";
        static const char of_account[] = "SELECT " SNAP_COLS " FROM snapshots"
                                         " WHERE account_id = ?1 AND state != 'creating'"
                                         " ORDER BY id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, vm_id ? of_vm : of_account);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)account_id);
                if (vm_id)
                        pq_bind_int64(st, 2, (int64_t)vm_id);
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
        pq_stmt *st;
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
                pq_bind_int64(st, 1, (int64_t)p.vm_id);
                pq_bind_text(st, 2, name);
                pq_bind_int64(st, 3, (int64_t)snap_id);
                int rc = pq_step(st);
                if (rc == PQS_ROW)
                        return end(s, -EEXIST);
                if (rc != PQS_DONE)
                        return end(s, db_err(s, "cannot read snapshots"));
        }
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        pq_bind_text(st, 1, name);
        pq_bind_int64(st, 2, (int64_t)snap_id);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st;
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
        pq_bind_int64(st, 1, (int64_t)snap_id);
        int rc = pq_step(st);
        pq_reset(st);
        if (rc == PQS_ROW)
                return end(s, -EBUSY);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot read vms"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)snap_id);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st;
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
        pq_bind_int64(st, 1, (int64_t)v.id);
        int rc = pq_step(st);
        if (rc == PQS_ROW)
                return end(s, -EBUSY);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot read snapshots"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)snap_id);
        pq_bind_int64(st, 2, (int64_t)v.id);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st;
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
        pq_bind_int64(st, 1, (int64_t)v.id);
        pq_bind_int64(st, 2, (int64_t)src.id);
        int rc = pq_step(st);
        if (rc == PQS_ROW)
                return end(s, -EBUSY);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot read snapshots"));
        if (!(st = stmt(s, upd)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)v.id);
        pq_bind_int64(st, 2, (int64_t)src.id);
        pq_bind_int64(st, 3, (int64_t)p.id);
        pq_bind_text(st, 4, p.image);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot record restore"));
        /* its own disk goes, and its snapshots with it */
        if (!(st = stmt(s, snaps_go)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)v.id);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, name);
        if (pq_step(st) != PQS_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)pq_column_int64(st, 0);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        pq_bind_int(st, 1, draining ? 1 : 0);
        pq_bind_text(st, 2, name);
        hc_mark(s, id);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, name);
        if (pq_step(st) != PQS_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)pq_column_int64(st, 0);
        if (pq_column_int64(st, 1) > 0)
                return end(s, -EBUSY);
        hc_mark(s, id);
        const char *sqls[] = { del_vms, del };
        for (int i = 0; i < 2; i++) {
                if (!(st = stmt(s, sqls[i])))
                        return end(s, -EIO);
                pq_bind_int64(st, 1, (int64_t)id);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot remove host"));
        }
        r = event(s, util_now_ms(), "host.removed", 0, id, name);
        return end(s, r);
}

static void row_event(pq_stmt *st, void *item)
{
        struct store_event *e = item;
        memset(e, 0, sizeof(*e));
        e->id = (uint64_t)pq_column_int64(st, 0);
        e->at = pq_column_int64(st, 1);
        col_text(st, 2, e->kind, sizeof(e->kind));
        e->resource_id = (uint64_t)pq_column_int64(st, 3);
        col_text(st, 4, e->data, sizeof(e->data));
}

int store_host_events(struct store *s, uint64_t host_id, size_t limit, struct store_event **ret,
                      size_t *ret_n)
{
        /* The host's own events and those of the guests placed on it. */
        static const char sql[] =
                "SELECT id, at, kind, resource_id, data FROM events"
                " WHERE (kind LIKE 'host.%' AND resource_id = ?1)"
                "    OR (kind LIKE 'vps.%' AND resource_id IN (SELECT id FROM vms WHERE host_id = ?1))"
                " ORDER BY id DESC LIMIT ?2";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)host_id);
                pq_bind_int64(st, 2, (int64_t)limit);
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
                pq_stmt *st = stmt(s, sqls[k]);
                if (!st) {
                        r = -EIO;
                        break;
                }
                pq_bind_int64(st, 1, now - timeout_ms);
                while ((rc = pq_step(st)) == PQS_ROW) {
                        if (n == cap) {
                                size_t ncap = cap ? cap * 2 : 64;
                                struct changed *g = realloc(changed, ncap * sizeof(*g));
                                if (!g) {
                                        rc = PQS_NOMEM;
                                        break;
                                }
                                changed = g;
                                cap = ncap;
                        }
                        changed[n].id = (uint64_t)pq_column_int64(st, 0);
                        col_text(st, 1, changed[n].name, sizeof(changed[n].name));
                        n++;
                }
                pq_reset(st);
                if (rc != PQS_DONE) {
                        free(changed);
                        r = rc == PQS_NOMEM ? -ENOMEM : db_err(s, "cannot update liveness");
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
        static const char sql[] = "SELECT " VM_COLS " FROM vms v JOIN hosts h ON h.id = v.host_id"
                                  " WHERE v.deleted_at IS NULL";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_vm, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_event_count(struct store *s, const char *kind, uint64_t *ret)
{
        static const char sql[] = "SELECT COUNT(*) FROM events WHERE kind = ?";
        int r = -EIO;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_text(st, 1, kind);
                if (pq_step(st) == PQS_ROW) {
                        *ret = (uint64_t)pq_column_int64(st, 0);
                        r = 0;
                } else {
                        r = db_err(s, "cannot count events");
                }
        }
        unlock(s);
        return r;
}

static void row_site_full(pq_stmt *st, void *item)
{
        struct site *x = item;
        memset(x, 0, sizeof(*x));
        x->id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, x->slug, sizeof(x->slug));
        col_text(st, 2, x->name, sizeof(x->name));
        x->hosts = (uint32_t)pq_column_int64(st, 3);
        col_text(st, 4, x->tz, sizeof(x->tz));
}

/* ---- images ---- */

#define IMAGE_COLS "slug, name, url, sha256, format, min_disk_gb, created_at, num"

static void row_image(pq_stmt *st, void *item)
{
        struct image *g = item;
        memset(g, 0, sizeof(*g));
        col_text(st, 0, g->slug, sizeof(g->slug));
        col_text(st, 1, g->name, sizeof(g->name));
        col_text(st, 2, g->url, sizeof(g->url));
        col_text(st, 3, g->sha256, sizeof(g->sha256));
        col_text(st, 4, g->format, sizeof(g->format));
        g->min_disk_gb = (uint32_t)pq_column_int64(st, 5);
        g->created_at = pq_column_int64(st, 6);
        g->num = (uint64_t)pq_column_int64(st, 7);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, img->slug);
        pq_bind_text(st, 2, img->name);
        pq_bind_text(st, 3, img->url);
        pq_bind_text(st, 4, img->sha256);
        pq_bind_text(st, 5, img->format);
        pq_bind_int64(st, 6, img->min_disk_gb);
        pq_bind_int64(st, 7, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot add image"));
        if (pq_changes(s) == 0)
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, slug);
        pq_bind_int64(st, 2, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot remove image"));
        if (pq_changes(s) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, now, "image.removed", 0, 0, slug));
}

int store_image_get(struct store *s, const char *slug, struct image *ret)
{
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE slug = ? AND removed_at IS NULL";
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_text(st, 1, slug);
                if (pq_step(st) == PQS_ROW) {
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
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE removed_at IS NULL ORDER BY slug";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        r = st ? collect(s, st, sizeof(**ret), row_image, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_vm_seed(struct store *s, uint64_t host_id, uint64_t vm_id, struct msg_seed_reply *ret)
{
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
        pq_stmt *st = stmt(s, vm_sql);
        if (!st) {
                r = -EIO;
                goto out;
        }
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_int64(st, 2, (int64_t)host_id);
        if (pq_step(st) != PQS_ROW) {
                r = -ENOENT;
                goto out;
        }
        col_text(st, 0, m.hostname, sizeof(m.hostname));
        /* A VM with a DNS name (the Tilaa API's dns_name) is that host: the
         * agent takes a name with dots as the FQDN, its first label as the
         * host name. One too long for the message (or of one label) gives
         * its first label: the name of a Tilaa VM is for internal use ("My
         * server (2)") and need not be a host name. */
        if (pq_column_type(st, 5) == PQS_TEXT && pq_column_bytes(st, 5) > 0) {
                const char *dn = (const char *)pq_column_text(st, 5);
                size_t len = (size_t)pq_column_bytes(st, 5);
                if (len >= sizeof(m.hostname) || !strchr(dn, '.'))
                        len = strcspn(dn, ".");
                if (len > 0 && len < sizeof(m.hostname)) {
                        memcpy(m.hostname, dn, len);
                        m.hostname[len] = '\0';
                }
        }
        host_name_fix(m.hostname, sizeof(m.hostname), vm_id);
        account = pq_column_int64(st, 1);
        col_text(st, 2, ids, sizeof(ids));
        /* a Tilaa VM: root with its initial password (admin.account) */
        if (pq_column_type(st, 4) == PQS_TEXT && pq_column_bytes(st, 4) > 0) {
                util_strlcpy(m.admin_user, "root", sizeof(m.admin_user));
                col_text(st, 4, m.admin_password, sizeof(m.admin_password));
        }
        if (pq_column_type(st, 3) == PQS_TEXT && pq_column_bytes(st, 3) > 0 &&
            !(m.user_data = strdup((const char *)pq_column_text(st, 3)))) {
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
                pq_reset(st);
                pq_bind_int64(st, 1, strtoll(tok, NULL, 10));
                pq_bind_int64(st, 2, account);
                if (pq_step(st) == PQS_ROW) {
                        m.ssh_keys[m.n_ssh_keys] = strdup((const char *)pq_column_text(st, 0));
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
        static const char sql[] =
                "SELECT s.id, s.slug, s.name, (SELECT COUNT(*) FROM hosts h WHERE h.site = s.slug),"
                " s.tz FROM sites s ORDER BY s.id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, slug);
        pq_bind_text(st, 2, name);
        pq_bind_int64(st, 3, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot record site"));
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        pq_bind_text(st, 1, slug);
        if (pq_step(st) != PQS_ROW)
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
                pq_stmt *st = stmt(s, sql);
                if (!st)
                        return -EIO;
                pq_bind_text(st, 1, mac);
                int rc = pq_step(st);
                pq_reset(st);
                if (rc == PQS_DONE)
                        return 0;
                if (rc != PQS_ROW)
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
        pq_stmt *st = stmt(s, p->addr.len == 4 ? sql4 : sql6);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)network_id);
        while ((rc = pq_step(st)) == PQS_ROW) {
                if (ipam_addr_parse((const char *)pq_column_text(st, 0), &a) < 0 ||
                    !ipam_prefix_contains(p, &a))
                        continue; /* another pool's */
                if (n == cap) {
                        size_t ncap = cap ? cap * 2 : 64;
                        struct ipam_addr *nu = realloc(used, ncap * sizeof(*nu));
                        if (!nu) {
                                pq_reset(st);
                                free(used);
                                return -ENOMEM;
                        }
                        used = nu;
                        cap = ncap;
                }
                used[n++] = a;
        }
        pq_reset(st);
        if (rc != PQS_DONE) {
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_int64(st, 2, (int64_t)network_id);
        pq_bind_int64(st, 3, position);
        pq_bind_text(st, 4, mac);
        if (ipv4 && ipv4[0])
                pq_bind_text(st, 5, ipv4);
        if (ipv6 && ipv6[0])
                pq_bind_text(st, 6, ipv6);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot insert NIC");
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_text(st, 1, site);
        int rc = pq_step(st);
        if (rc == PQS_DONE)
                return 0; /* no pool: no public NIC */
        if (rc != PQS_ROW)
                return db_err(s, "cannot read address pool");
        col_text(st, 0, v4, sizeof(v4));
        col_text(st, 1, gw4, sizeof(gw4));
        col_text(st, 2, v6, sizeof(v6));
        col_text(st, 3, gw6, sizeof(gw6));
        pq_reset(st);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)net_id);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot bump generations");
}

/* Inside a transaction: the vm (of the account) on one of the account's
 * networks, with its first free address: -ENOENT (no such network),
 * -EEXIST, -EDQUOT, -ERANGE as store_net_attach(). */
static int nic_attach(struct store *s, uint64_t account_id, uint64_t vm_id, uint64_t net_id,
                      int64_t now)
{
        static const char net_sql[] = "SELECT cidr FROM networks WHERE id = ? AND account_id = ?";
        static const char nics_sql[] =
                "SELECT COUNT(*), COALESCE(MAX(position) + 1, 0), COALESCE(SUM(CASE WHEN network_id = ?2 THEN 1 ELSE 0 END), 0)"
                " FROM nics WHERE vm_id = ?1";
        char cidr[STORE_CIDR_MAX], addr[TMSG_IP], id[ID_STR_MAX];
        struct ipam_prefix p;
        pq_stmt *st = stmt(s, net_sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)net_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_DONE)
                return -ENOENT;
        if (rc != PQS_ROW)
                return db_err(s, "cannot read network");
        col_text(st, 0, cidr, sizeof(cidr));
        pq_reset(st);
        if (!(st = stmt(s, nics_sql)))
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_int64(st, 2, (int64_t)net_id);
        if (pq_step(st) != PQS_ROW)
                return db_err(s, "cannot read NICs");
        int64_t count = pq_column_int64(st, 0), next = pq_column_int64(st, 1);
        int attached = pq_column_int64(st, 2) > 0;
        pq_reset(st);
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
                pq_stmt *st = stmt(s, sqls[i]);
                if (!st)
                        return -EIO;
                pq_bind_int64(st, 1, (int64_t)vm_id);
                if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st = stmt(s, get);
        int64_t next = STORE_VNI_MIN, n;
        if (!st)
                return -EIO;
        if (pq_step(st) == PQS_ROW)
                next = pq_column_int64(st, 0);
        pq_reset(st);
        if (!(st = stmt(s, count)))
                return -EIO;
        if (pq_step(st) != PQS_ROW)
                return db_err(s, "cannot count networks");
        n = pq_column_int64(st, 0);
        pq_reset(st);
        if (next < STORE_VNI_MIN || next > STORE_VNI_MAX)
                next = STORE_VNI_MIN;
        /* at most n of the next n + 1 are taken */
        for (int64_t i = 0; i <= n && i < span; i++) {
                uint32_t vni = STORE_VNI_MIN + (uint32_t)((next - STORE_VNI_MIN + i) % span);
                if (!(st = stmt(s, used)))
                        return -EIO;
                pq_bind_int64(st, 1, vni);
                int rc = pq_step(st);
                pq_reset(st);
                if (rc == PQS_ROW)
                        continue;
                if (rc != PQS_DONE)
                        return db_err(s, "cannot read vnis");
                if (!(st = stmt(s, set)))
                        return -EIO;
                pq_bind_int64(st, 1, vni == STORE_VNI_MAX ? STORE_VNI_MIN : vni + 1);
                if (pq_step(st) != PQS_DONE)
                        return db_err(s, "cannot record the next vni");
                *ret = vni;
                return 0;
        }
        return -EDQUOT; /* every vni taken */
}

#define NET_COLS "id, account_id, name, cidr, vni, created_at"

static void row_net(pq_stmt *st, void *item)
{
        struct network *w = item;
        memset(w, 0, sizeof(*w));
        w->id = (uint64_t)pq_column_int64(st, 0);
        w->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, w->name, sizeof(w->name));
        col_text(st, 3, w->cidr, sizeof(w->cidr));
        w->vni = (uint32_t)pq_column_int64(st, 4);
        w->created_at = pq_column_int64(st, 5);
}

static int net_get_locked(struct store *s, uint64_t account_id, uint64_t net_id,
                          struct network *ret)
{
        static const char sql[] =
                "SELECT " NET_COLS " FROM networks WHERE id = ? AND account_id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)net_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_ROW)
                row_net(st, ret);
        pq_reset(st);
        if (rc == PQS_ROW)
                return 0;
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read network");
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
        uint32_t vni = 0;
        int r;

        if (ipam_prefix_parse(cidr, &p, NULL, 0) < 0)
                return -EINVAL;
        if ((r = begin(s)) < 0)
                return r;
        /* The key first: a retry whose twin got here first is a replay,
         * not an overlap. The id is known only after the insert. */
        if ((r = idem_claim(s, idem, 201, 0, now)) < 0)
                return end(s, r == -EEXIST ? -EALREADY : r);
        pq_stmt *st = stmt(s, mine);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
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
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, name);
        pq_bind_text(st, 3, cidr);
        pq_bind_int64(st, 4, vni);
        pq_bind_int64(st, 5, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot insert network"));
        uint64_t id = (uint64_t)pq_last_id(s);
        r = idem ? idem_set_resource(s, idem, id) : 0;
        if (r == 0)
                r = event(s, now, "network.created", account_id, id, name);
        if (r == 0)
                r = net_get_locked(s, account_id, id, ret);
        return end(s, r);
}

static void row_u64(pq_stmt *st, void *item)
{
        *(uint64_t *)item = (uint64_t)pq_column_int64(st, 0);
}

int store_net_get(struct store *s, uint64_t account_id, uint64_t net_id, struct network *ret,
                  uint64_t **ret_vms)
{
        static const char vms[] =
                "SELECT n.vm_id FROM nics n JOIN vms v ON v.id = n.vm_id"
                " WHERE n.network_id = ? AND v.deleted_at IS NULL ORDER BY n.vm_id";
        struct network w;
        uint64_t *ids = NULL;
        rlock(s);
        int r = net_get_locked(s, account_id, net_id, &w);
        if (r == 0) {
                pq_stmt *st = stmt(s, vms);
                if (st)
                        pq_bind_int64(st, 1, (int64_t)net_id);
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

static void row_member(pq_stmt *st, void *item)
{
        struct net_member *m = item;
        m->net_id = (uint64_t)pq_column_int64(st, 0);
        m->vm_id = (uint64_t)pq_column_int64(st, 1);
}

int store_net_list(struct store *s, uint64_t account_id, struct network **ret, size_t *ret_n,
                   uint64_t **ret_vms, size_t *ret_n_vms)
{
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
        pq_stmt *st = stmt(s, nets_sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)account_id);
        r = st ? collect(s, st, sizeof(*nets), row_net, (void **)&nets, &n) : -EIO;
        if (r == 0 && (st = stmt(s, members_sql)))
                pq_bind_int64(st, 1, (int64_t)account_id);
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
        pq_stmt *st = stmt(s, busy);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)net_id);
        int rc = pq_step(st);
        pq_reset(st);
        if (rc == PQS_ROW)
                return end(s, -EBUSY);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot read NICs"));
        if (!(st = stmt(s, del)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)net_id);
        if (pq_step(st) != PQS_DONE)
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
        static const char sql[] =
                "SELECT DISTINCT v.host_id FROM nics n JOIN vms v ON v.id = n.vm_id"
                " WHERE v.deleted_at IS NULL AND n.network_id IN (SELECT network_id FROM nics"
                " WHERE vm_id = ? AND network_id != 0) ORDER BY v.host_id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)vm_id);
        r = st ? collect(s, st, sizeof(**ret), row_u64, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

static void row_nic(pq_stmt *st, void *item)
{
        struct nic *c = item;
        memset(c, 0, sizeof(*c));
        c->vm_id = (uint64_t)pq_column_int64(st, 0);
        c->network_id = (uint64_t)pq_column_int64(st, 1);
        c->position = (uint32_t)pq_column_int64(st, 2);
        col_text(st, 3, c->mac, sizeof(c->mac));
        col_text(st, 4, c->ipv4, sizeof(c->ipv4));
        col_text(st, 5, c->ipv6, sizeof(c->ipv6));
        c->id = (uint64_t)pq_column_int64(st, 6);
}

int store_vm_nics(struct store *s, uint64_t vm_id, struct nic **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT vm_id, network_id, position, mac, ipv4, ipv6, id"
                                  " FROM nics WHERE vm_id = ? ORDER BY position";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)vm_id);
        r = st ? collect(s, st, sizeof(**ret), row_nic, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

/* ---- public address pools ---- */

#define POOL_COLS                                                                          \
        "p.site, p.ipv4, p.gateway4, p.ipv6, p.gateway6, p.created_at, (SELECT COUNT(*)"   \
        " FROM nics n JOIN vms v ON v.id = n.vm_id WHERE n.network_id = 0"                \
        " AND v.site = p.site)"

static void row_pool(pq_stmt *st, void *item)
{
        struct ip_pool *p = item;
        memset(p, 0, sizeof(*p));
        col_text(st, 0, p->site, sizeof(p->site));
        col_text(st, 1, p->ipv4, sizeof(p->ipv4));
        col_text(st, 2, p->gateway4, sizeof(p->gateway4));
        col_text(st, 3, p->ipv6, sizeof(p->ipv6));
        col_text(st, 4, p->gateway6, sizeof(p->gateway6));
        p->created_at = pq_column_int64(st, 5);
        p->used = (uint32_t)pq_column_int64(st, 6);
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
        pq_stmt *st = stmt(s, site_sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, p->site);
        int rc = pq_step(st);
        pq_reset(st);
        if (rc == PQS_DONE)
                return end(s, -ENOENT);
        if (rc != PQS_ROW)
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
        pq_bind_text(st, 1, p->site);
        pq_bind_text(st, 2, p->ipv4);
        pq_bind_text(st, 3, p->gateway4);
        if (p->ipv6[0]) {
                pq_bind_text(st, 4, p->ipv6);
                pq_bind_text(st, 5, p->gateway6);
        }
        pq_bind_int64(st, 6, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot add address pool"));
        if (!(st = stmt(s, one)))
                return end(s, -EIO);
        pq_bind_text(st, 1, p->site);
        if (pq_step(st) != PQS_ROW)
                return end(s, db_err(s, "cannot read address pool"));
        row_pool(st, ret);
        return end(s, event(s, now, "pool.added", 0, 0, p->site));
}

int store_pool_list(struct store *s, struct ip_pool **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT " POOL_COLS " FROM ip_pools p ORDER BY p.site";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
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
        pq_stmt *st = stmt(s, busy);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, site);
        int rc = pq_step(st);
        pq_reset(st);
        if (rc != PQS_ROW && rc != PQS_DONE)
                return end(s, db_err(s, "cannot read NICs"));
        if (!(st = stmt(s, del)))
                return end(s, -EIO);
        pq_bind_text(st, 1, site);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot remove address pool"));
        if (pq_changes(s) == 0)
                return end(s, -ENOENT);
        if (rc == PQS_ROW)
                return end(s, -EBUSY); /* rolls the delete back */
        return end(s, event(s, util_now_ms(), "pool.removed", 0, 0, site));
}

/* ---- DNS ---- */

static void row_dns(pq_stmt *st, void *item)
{
        struct vm_dns *d = item;
        memset(d, 0, sizeof(*d));
        d->vm_id = (uint64_t)pq_column_int64(st, 0);
        const unsigned char *t = pq_column_text(st, 1);
        /* A name too long to keep is no name (never a cut one). */
        if (!t || util_strlcpy(d->fqdn, (const char *)t, sizeof(d->fqdn)) < 0)
                d->fqdn[0] = '\0';
        col_text(st, 2, d->ipv4, sizeof(d->ipv4));
        col_text(st, 3, d->ipv6, sizeof(d->ipv6));
}

int store_dns_list(struct store *s, const char *zone, struct vm_dns **ret, size_t *ret_n)
{
        /* The fqdn: the one place to change for a per-VM DNS name. A zone
         * given with its trailing dot does not make a double one. */
        static const char sql[] = "SELECT v.id, COALESCE(NULLIF(v.dns_name, ''),"
                                  " v.name || '.' || rtrim(?1, '.')), n.ipv4, n.ipv6"
                                  " FROM vms v JOIN nics n ON n.vm_id = v.id AND n.network_id = 0"
                                  " WHERE v.deleted_at IS NULL ORDER BY v.id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_text(st, 1, zone);
        r = st ? collect(s, st, sizeof(**ret), row_dns, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}
/* ---- prepaid billing ---- */

/* store_day_charge(): store_sqlite.c (shared); the SQL of credit_check()
 * and store_billing_run() keeps in step with it. */

void store_set_billing(struct store *s, int enforce)
{
        atomic_store(&s->billing, enforce ? 1 : 0);
}

int store_billing_enforced(struct store *s)
{
        return atomic_load(&s->billing);
}

static void row_price(pq_stmt *st, void *item)
{
        struct price *p = item;
        memset(p, 0, sizeof(*p));
        col_text(st, 0, p->size, sizeof(p->size));
        p->month_cents = pq_column_int64(st, 1);
        p->day_cents = store_day_charge(p->month_cents);
}

int store_price_list(struct store *s, struct price **ret, size_t *ret_n)
{
        static const char sql[] = "SELECT size, month_cents FROM prices ORDER BY month_cents, size";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, size);
        pq_bind_int64(st, 2, month_cents);
        if (pq_step(st) != PQS_DONE)
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
        pq_stmt *st = stmt(s, upd);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_int64(st, 2, cents);
        int rc = pq_step(st);
        if (rc == PQS_DONE)
                return end(s, -ENOENT);
        if (rc != PQS_ROW)
                return end(s, db_err(s, "cannot add credit"));
        balance = pq_column_int64(st, 0);
        pq_reset(st);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_int64(st, 2, cents);
        pq_bind_int64(st, 3, balance);
        pq_bind_int64(st, 4, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot record credit"));
        money_format(cents, data);
        r = end(s, event(s, now, "credit.added", account_id, account_id, data));
        if (r == 0 && ret_balance)
                *ret_balance = balance;
        return r;
}

int store_credit_get(struct store *s, uint64_t account_id, struct credit *ret)
{
        static const char sql[] =
                "SELECT a.credit_cents,"
                " (SELECT COALESCE(SUM((b.price_month_cents * 24 + 365) / 730), 0)"
                "  FROM billable b WHERE b.account_id = a.id AND b.deleted_at IS NULL),"
                " (SELECT COUNT(*) FROM billable b WHERE b.account_id = a.id"
                "  AND b.deleted_at IS NULL)"
                " FROM accounts a WHERE a.id = ?";
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_int64(st, 1, (int64_t)account_id);
                int rc = pq_step(st);
                if (rc == PQS_ROW) {
                        memset(ret, 0, sizeof(*ret));
                        ret->balance_cents = pq_column_int64(st, 0);
                        ret->daily_cents = pq_column_int64(st, 1);
                        ret->services = (uint32_t)pq_column_int64(st, 2);
                        r = 0;
                } else if (rc != PQS_DONE) {
                        r = db_err(s, "cannot read credit");
                }
        }
        unlock(s);
        return r;
}

static void row_invoice(pq_stmt *st, void *item)
{
        struct invoice_line *l = item;
        memset(l, 0, sizeof(*l));
        l->id = (uint64_t)pq_column_int64(st, 0);
        l->account_id = (uint64_t)pq_column_int64(st, 1);
        l->vm_id = (uint64_t)pq_column_int64(st, 2);
        l->day = pq_column_int64(st, 3);
        col_text(st, 4, l->size, sizeof(l->size));
        l->amount_cents = pq_column_int64(st, 5);
        l->created_at = pq_column_int64(st, 6);
        col_text(st, 7, l->vm_name, sizeof(l->vm_name));
}

int store_invoice_list(struct store *s, uint64_t account_id, size_t limit,
                       struct invoice_line **ret, size_t *ret_n)
{
        static const char sql[] =
                "SELECT id, account_id, vm_id, day, size, amount_cents, created_at, name"
                " FROM invoice_lines WHERE account_id = ? ORDER BY day DESC, id DESC LIMIT ?";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)account_id);
                if (limit) /* none: LIMIT NULL, all */
                        pq_bind_int64(st, 2, (int64_t)limit);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        int rc = pq_step(st);
        if (rc == PQS_ROW) {
                *ret_day = pq_column_int64(st, 0);
                pq_reset(st);
                return 0;
        }
        pq_reset(st);
        return rc == PQS_DONE ? -ENOENT : db_err(s, "cannot read billing day");
}

static int billing_day_set(struct store *s, int64_t day)
{
        static const char sql[] =
                "INSERT INTO meta (key, value) VALUES ('billing_day', ?1)"
                " ON CONFLICT (key) DO UPDATE SET value = ?1";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, day);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot record billing day");
}

int store_billing_day(struct store *s, int64_t *ret_day)
{
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, before);
        return pq_step(st) == PQS_DONE ? 0 : db_err(s, "cannot prune billable vms");
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
        pq_stmt *st;
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
        pq_bind_int64(st, 1, day);
        pq_bind_int64(st, 2, start_ms);
        pq_bind_int64(st, 3, end_ms);
        pq_bind_int64(st, 4, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot write invoice lines"));
        if (!(st = stmt(s, draw)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, day);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot draw credit"));
        if (!(st = stmt(s, total)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, day);
        if (pq_step(st) != PQS_ROW)
                return end(s, db_err(s, "cannot sum invoice lines"));
        run.lines = (size_t)pq_column_int64(st, 0);
        run.total_cents = pq_column_int64(st, 1);
        run.accounts = (size_t)pq_column_int64(st, 2);
        pq_reset(st);
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

static void row_api_user(pq_stmt *st, void *item)
{
        struct api_user *u = item;
        memset(u, 0, sizeof(*u));
        u->id = (uint64_t)pq_column_int64(st, 0);
        u->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, u->email, sizeof(u->email));
        col_text(st, 3, u->first_name, sizeof(u->first_name));
        col_text(st, 4, u->last_name, sizeof(u->last_name));
        col_text(st, 5, u->hash, sizeof(u->hash));
        u->created_at = pq_column_int64(st, 6);
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
        pq_stmt *st = stmt(s, acc);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)u->account_id);
        if (pq_step(st) != PQS_ROW)
                return end(s, -ENOENT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)u->account_id);
        pq_bind_text(st, 2, u->email);
        pq_bind_text(st, 3, u->first_name);
        pq_bind_text(st, 4, u->last_name);
        pq_bind_text(st, 5, u->hash);
        pq_bind_int64(st, 6, now);
        int rc = pq_step(st);
        if (rc == PQS_CONSTRAINT)
                return end(s, -EEXIST);
        if (rc != PQS_DONE)
                return end(s, db_err(s, "cannot create API user"));
        uint64_t id = (uint64_t)pq_last_id(s);
        if (!(st = stmt(s, sel)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)id);
        if (pq_step(st) != PQS_ROW)
                return end(s, db_err(s, "cannot read API user"));
        row_api_user(st, ret);
        return end(s, event(s, now, "api_user.created", u->account_id, id, u->email));
}

int store_api_user_by_email(struct store *s, const char *email, struct api_user *ret)
{
        static const char sql[] =
                "SELECT " API_USER_COLS " FROM api_users WHERE lower(email) = lower(?)";
        return one_by_text(s, sql, email, row_api_user, ret, "cannot read API user");
}

int store_api_user_list(struct store *s, uint64_t account_id, struct api_user **ret,
                        size_t *ret_n)
{
        static const char sql[] =
                "SELECT " API_USER_COLS " FROM api_users WHERE account_id = ? ORDER BY id";
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)account_id);
        r = st ? collect(s, st, sizeof(**ret), row_api_user, (void **)ret, ret_n) : -EIO;
        unlock(s);
        return r;
}

int store_api_user_delete(struct store *s, uint64_t account_id, const char *email)
{
        static const char sql[] = "DELETE FROM api_users WHERE account_id = ? AND lower(email) = lower(?)";
        /* its SSH keys stay the account's, bound to no user */
        static const char keys[] = "UPDATE ssh_keys SET user_id = 0 WHERE user_id = ?";
        static const char sel[] = "SELECT id FROM api_users WHERE account_id = ? AND lower(email) = lower(?)";
        int r = begin(s);
        if (r < 0)
                return r;
        pq_stmt *st = stmt(s, sel);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, email);
        if (pq_step(st) != PQS_ROW)
                return end(s, -ENOENT);
        uint64_t id = (uint64_t)pq_column_int64(st, 0);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, email);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot delete API user"));
        if (!(st = stmt(s, keys)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot unbind SSH keys"));
        return end(s, event(s, util_now_ms(), "api_user.deleted", account_id, id, email));
}

int store_site_set_tz(struct store *s, const char *slug, const char *tz)
{
        static const char sql[] = "UPDATE sites SET tz = ? WHERE slug = ?";
        int r = begin(s);
        if (r < 0)
                return r;
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_text(st, 1, tz);
        pq_bind_text(st, 2, slug);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot set time zone"));
        if (pq_changes(s) == 0)
                return end(s, -ENOENT);
        return end(s, event(s, util_now_ms(), "site.updated", 0, 0, tz));
}

int store_image_by_num(struct store *s, uint64_t num, struct image *ret)
{
        static const char sql[] =
                "SELECT " IMAGE_COLS " FROM images WHERE num = ? AND removed_at IS NULL";
        int r = -ENOENT;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (!st) {
                r = -EIO;
        } else {
                pq_bind_int64(st, 1, (int64_t)num);
                int rc = pq_step(st);
                if (rc == PQS_ROW) {
                        row_image(st, ret);
                        r = 0;
                } else if (rc != PQS_DONE) {
                        r = db_err(s, "cannot read image");
                }
        }
        unlock(s);
        return r;
}

static void row_vm_tilaa(pq_stmt *st, void *item)
{
        struct vm_tilaa *t = item;
        memset(t, 0, sizeof(*t));
        t->vm_id = (uint64_t)pq_column_int64(st, 0);
        col_text(st, 1, t->dns_name, sizeof(t->dns_name));
        col_text(st, 2, t->admin_password, sizeof(t->admin_password));
        t->cancel_at = pq_column_int64(st, 3);
        t->site_id = (uint64_t)pq_column_int64(st, 4);
        col_text(st, 5, t->site_name, sizeof(t->site_name));
        col_text(st, 6, t->site_tz, sizeof(t->site_tz));
        t->template_id = (uint64_t)pq_column_int64(st, 7);
        col_text(st, 8, t->template_name, sizeof(t->template_name));
}

int store_vm_tilaa_list(struct store *s, uint64_t account_id, uint64_t vm_id,
                        struct vm_tilaa **ret, size_t *ret_n)
{
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
        pq_stmt *st = stmt(s, sql);
        if (st) {
                pq_bind_int64(st, 1, (int64_t)account_id);
                pq_bind_int64(st, 2, (int64_t)vm_id);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)vm_id);
        if (pq_step(st) != PQS_ROW)
                return db_err(s, "cannot read vm");
        *ret = pq_column_int(st, 0);
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
        pq_stmt *st;
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
                pq_bind_int64(st, 1, (int64_t)v.id);
                pq_bind_text(st, 2, e->size);
                pq_bind_int64(st, 3, e->vcpus);
                pq_bind_int64(st, 4, e->ram_mb);
                pq_bind_int64(st, 5, e->disk_gb);
                pq_bind_int(st, 6, e->cpu_cap > 0 && e->cpu_cap < 100 ? (int)e->cpu_cap : 0);
                /* a resize only when something the guest sees changes */
                int changed = e->vcpus != v.vcpus || e->ram_mb != v.ram_mb ||
                              e->disk_gb != v.disk_gb ||
                              (e->cpu_cap % 100) != (v.cpu_cap % 100);
                pq_bind_int(st, 7, changed);
                if (pq_step(st) != PQS_DONE)
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
                pq_bind_int64(st, 1, (int64_t)v.id);
                pq_bind_text(st, 2, e->name);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot rename vm"));
                if (strcmp(e->name, v.name) != 0 &&
                    (r = event(s, now, "vps.renamed", e->account_id, v.id, e->name)) < 0)
                        return end(s, r);
        }
        if (e->image) {
                if (!(st = stmt(s, image_upd)))
                        return end(s, -EIO);
                pq_bind_int64(st, 1, (int64_t)v.id);
                pq_bind_text(st, 2, e->image);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot change image"));
        }
        if (reinstall) {
                if (!(st = stmt(s, rebuild)))
                        return end(s, -EIO);
                pq_bind_int64(st, 1, (int64_t)v.id);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot record rebuild"));
                if (!(st = stmt(s, snaps_go)))
                        return end(s, -EIO);
                pq_bind_int64(st, 1, (int64_t)v.id);
                if (pq_step(st) != PQS_DONE)
                        return end(s, db_err(s, "cannot delete snapshots"));
                if (pq_changes(s) > 0 && (r = snap_pending_sync(s, v.id)) < 0)
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)vm_id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        if (cancel_at)
                pq_bind_int64(st, 3, cancel_at);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot cancel vm"));
        if (pq_changes(s) == 0)
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
                pq_stmt *st = stmt(s, sql);
                if (!st) {
                        unlock(s);
                        r = -EIO;
                        break;
                }
                pq_bind_int64(st, 1, now_ms);
                int rc;
                while ((rc = pq_step(st)) == PQS_ROW && k < 256) {
                        ids[k][0] = (uint64_t)pq_column_int64(st, 0);
                        ids[k][1] = (uint64_t)pq_column_int64(st, 1);
                        k++;
                }
                if (rc != PQS_ROW && rc != PQS_DONE)
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

static void row_metadata(pq_stmt *st, void *item)
{
        struct metadata *m = item;
        memset(m, 0, sizeof(*m));
        m->id = (uint64_t)pq_column_int64(st, 0);
        m->account_id = (uint64_t)pq_column_int64(st, 1);
        col_text(st, 2, m->name, sizeof(m->name));
        const char *ud = (const char *)pq_column_text(st, 3);
        m->user_data = strdup(ud ? ud : ""); /* NULL on out of memory: checked by callers */
        m->created_at = pq_column_int64(st, 4);
        m->modified_at = pq_column_int64(st, 5);
}

/* store_metadata_free(): store_sqlite.c (shared). */

static int metadata_get_locked(struct store *s, uint64_t account_id, uint64_t id,
                               struct metadata *ret)
{
        static const char sql[] =
                "SELECT " METADATA_COLS " FROM metadata WHERE id = ? AND account_id = ?";
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return -EIO;
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        int rc = pq_step(st);
        if (rc == PQS_DONE)
                return -ENOENT;
        if (rc != PQS_ROW)
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
        pq_stmt *st = stmt(s, count);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        if (pq_step(st) != PQS_ROW)
                return end(s, db_err(s, "cannot count metadata"));
        if (pq_column_int64(st, 0) >= STORE_METADATA_PER_ACCOUNT)
                return end(s, -EDQUOT);
        if (!(st = stmt(s, ins)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)account_id);
        pq_bind_text(st, 2, name);
        pq_bind_text(st, 3, user_data);
        pq_bind_int64(st, 4, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot create metadata"));
        uint64_t id = (uint64_t)pq_last_id(s);
        r = event(s, now, "metadata.created", account_id, id, name);
        if (r == 0)
                r = metadata_get_locked(s, account_id, id, ret);
        return end(s, r);
}

int store_metadata_get(struct store *s, uint64_t account_id, uint64_t id, struct metadata *ret)
{
        rlock(s);
        int r = metadata_get_locked(s, account_id, id, ret);
        unlock(s);
        return r;
}

int store_metadata_list(struct store *s, uint64_t account_id, struct metadata **ret,
                        size_t *ret_n)
{
        static const char sql[] =
                "SELECT " METADATA_COLS " FROM metadata WHERE account_id = ? ORDER BY id";
        struct metadata *m = NULL;
        size_t n = 0;
        int r;
        rlock(s);
        pq_stmt *st = stmt(s, sql);
        if (st)
                pq_bind_int64(st, 1, (int64_t)account_id);
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        if (name)
                pq_bind_text(st, 3, name);
        if (user_data)
                pq_bind_text(st, 4, user_data);
        pq_bind_int64(st, 5, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot update metadata"));
        if (pq_changes(s) == 0)
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
        pq_stmt *st = stmt(s, sql);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)id);
        pq_bind_int64(st, 2, (int64_t)account_id);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot delete metadata"));
        if (pq_changes(s) == 0)
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
        pq_stmt *st = stmt(s, dup);
        if (!st)
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)k->account_id);
        pq_bind_text(st, 2, k->fingerprint);
        pq_bind_int64(st, 3, (int64_t)k->id);
        if (pq_step(st) == PQS_ROW)
                return end(s, -EEXIST);
        if (!(st = stmt(s, sql)))
                return end(s, -EIO);
        pq_bind_int64(st, 1, (int64_t)k->id);
        pq_bind_int64(st, 2, (int64_t)k->account_id);
        pq_bind_text(st, 3, k->name);
        pq_bind_text(st, 4, k->public_key);
        pq_bind_text(st, 5, k->fingerprint);
        pq_bind_int64(st, 6, (int64_t)k->user_id);
        pq_bind_int64(st, 7, now);
        if (pq_step(st) != PQS_DONE)
                return end(s, db_err(s, "cannot update SSH key"));
        if (pq_changes(s) == 0)
                return end(s, -ENOENT);
        r = event(s, now, "ssh_key.updated", k->account_id, k->id, k->name);
        if (r == 0)
                r = sshkey_get_locked(s, k->account_id, k->id, ret);
        return end(s, r);
}
