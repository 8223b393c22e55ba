/* store.c: the store_* calls, forwarded to the back-end chosen at open.
 *
 * A `db` of postgresql://... or postgres://... is a PostgreSQL server
 * (store_pg.c); anything else is the path of a SQLite file
 * (store_sqlite.c). The forwarders are generated from store.h
 * (scripts/gen-store-dispatch), so a function added there that a back-end
 * lacks does not link. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct store {
        struct sqlite_store *sqlite;
        struct pg_store *pg; /* non-NULL: the PostgreSQL back-end */
};

#include "store_dispatch.h"

int store_is_pg_url(const char *db)
{
        return strncmp(db, "postgresql://", 13) == 0 || strncmp(db, "postgres://", 11) == 0;
}

void store_db_redact(const char *db, char *out, size_t len)
{
        const char *scheme = strstr(db, "://");
        const char *at = scheme ? strchr(scheme + 3, '@') : NULL;
        const char *colon = at ? memchr(scheme + 3, ':', (size_t)(at - scheme - 3)) : NULL;
        if (!store_is_pg_url(db) || !colon) {
                snprintf(out, len, "%s", db);
                return;
        }
        snprintf(out, len, "%.*s:***%s", (int)(colon - db), db, at);
}

int store_open(const char *path, struct store **ret)
{
        struct store *s = calloc(1, sizeof(*s));
        int r;
        if (!s)
                return -ENOMEM;
        if (store_is_pg_url(path))
                r = pg_open(path, &s->pg);
        else
                r = sqlite_open(path, &s->sqlite);
        if (r < 0) {
                free(s);
                return r;
        }
        *ret = s;
        return 0;
}

void store_free(struct store *s)
{
        if (!s)
                return;
        if (s->pg)
                pg_free(s->pg);
        else
                sqlite_free(s->sqlite);
        free(s);
}
