/* pg_test.h: the unit tests' PostgreSQL helpers (header only; after
 * cmocka.h). TASMAN_TEST_PG=postgresql://user@host:port/db names a server
 * whose user may create databases: each test then makes a database of its
 * own there (pg_db_new) and drops it after (pg_db_drop); psql() runs SQL
 * behind the store's back. Without it the tests run on SQLite files. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The PostgreSQL server of this run (TASMAN_TEST_PG), or NULL: SQLite. */
static const char *pg_url(void)
{
        const char *u = getenv("TASMAN_TEST_PG");
        return u && *u ? u : NULL;
}

/* Runs SQL with psql on the server's maintenance database (db NULL) or on
 * db; its output (first line) into out. Returns psql's exit status, or 3
 * when the server answered a constraint violation. */
static int psql(const char *db, const char *sql, char *out, size_t out_len)
{
        char url[512], cmd[4096], line[256] = "";
        const char *base = pg_url();
        const char *slash = strrchr(base, '/');
        assert_non_null(slash);
        if (db)
                snprintf(url, sizeof(url), "%.*s/%s", (int)(slash - base), base, db);
        else
                snprintf(url, sizeof(url), "%s", base);
        assert_null(strchr(sql, '"'));
        snprintf(cmd, sizeof(cmd), "psql -X -q -t -A -v ON_ERROR_STOP=1 '%s' -c \"%s\" 2>&1", url,
                 sql);
        FILE *p = popen(cmd, "r");
        int constraint = 0;
        assert_non_null(p);
        char buf[512];
        while (fgets(buf, sizeof(buf), p)) {
                if (strstr(buf, "violates"))
                        constraint = 1;
                if (!line[0])
                        snprintf(line, sizeof(line), "%s", buf);
        }
        int st = pclose(p);
        if (out)
                snprintf(out, out_len, "%s", line);
        if (constraint)
                return 3;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 255;
}

/* A fresh database of this test's own on the server; its URL into url. */
static void pg_db_new(char *db, size_t db_len, char *url, size_t url_len)
{
        static int seq;
        char sql[128];
        const char *base = pg_url();
        const char *slash = strrchr(base, '/');
        snprintf(db, db_len, "tasman_test_%d_%d", (int)getpid(), ++seq);
        snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db);
        assert_int_equal(psql(NULL, sql, NULL, 0), 0);
        snprintf(url, url_len, "%.*s/%s", (int)(slash - base), base, db);
}

static void pg_db_drop(const char *db)
{
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db);
        assert_int_equal(psql(NULL, sql, NULL, 0), 0);
}
