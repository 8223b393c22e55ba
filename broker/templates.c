/* See templates.h. */
#include "templates.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* String classes a field's value must be in (each also bounds what reaches
 * a shell command or YAML in the user-data). */
#define P_IDENT "ident"  /* a-z _ then a-z 0-9 _: SQL role and database names */
#define P_SECRET "secret" /* A-Z a-z 0-9 . _ ~ + - : passwords */
#define P_EMAIL "email"
#define P_TEXT "text" /* printable, no control characters: shell-quoted */

static const char *const pg_versions[] = { "16", "15", "14", NULL };
static const char *const mysql_versions[] = { "8.0", NULL };
static const char *const redis_versions[] = { "7.0", NULL };
static const char *const wp_versions[] = { "6.5", "6.4", NULL };

static const struct tpl_field pg_fields[] = {
        { "postgres_user", TPL_STRING, 1, 0, P_IDENT, 1, 63, NULL, "the role the app logs in as" },
        { "postgres_db", TPL_STRING, 1, 0, P_IDENT, 1, 63, NULL, "the database made for it" },
        { "postgres_password", TPL_STRING, 0, 1, P_SECRET, 12, 128, NULL,
          "the role's password (generated when not given)" },
};
static const struct tpl_field mysql_fields[] = {
        { "mysql_user", TPL_STRING, 1, 0, P_IDENT, 1, 32, NULL, "the user the app logs in as" },
        { "mysql_database", TPL_STRING, 1, 0, P_IDENT, 1, 64, NULL, "the database made for it" },
        { "mysql_password", TPL_STRING, 0, 1, P_SECRET, 12, 128, NULL,
          "the user's password (generated when not given)" },
};
static const struct tpl_field redis_fields[] = {
        { "maxmemory_mb", TPL_INT, 0, 0, NULL, 16, 65536, "256", "memory Redis may use" },
        { "redis_password", TPL_STRING, 0, 1, P_SECRET, 12, 128, NULL,
          "requirepass (generated when not given)" },
};
static const struct tpl_field wp_fields[] = {
        { "site_title", TPL_STRING, 1, 0, P_TEXT, 1, 100, NULL, "the site's title" },
        { "admin_user", TPL_STRING, 1, 0, P_IDENT, 1, 60, NULL, "the WordPress admin's login" },
        { "admin_email", TPL_STRING, 1, 0, P_EMAIL, 3, 100, NULL, "the admin's e-mail address" },
        { "admin_password", TPL_STRING, 0, 1, P_SECRET, 12, 128, NULL,
          "the admin's password (generated when not given)" },
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct tpl catalog[] = {
        { "postgres", "PostgreSQL", "Open-source relational database", "database", pg_versions,
          "standard-2vcpu-4gb", "ubuntu-24.04", pg_fields, N(pg_fields) },
        { "mysql", "MySQL", "Open-source relational database", "database", mysql_versions,
          "standard-2vcpu-4gb", "ubuntu-24.04", mysql_fields, N(mysql_fields) },
        { "redis", "Redis", "In-memory key-value store", "database", redis_versions,
          "standard-1vcpu-2gb", "ubuntu-24.04", redis_fields, N(redis_fields) },
        { "wordpress", "WordPress", "Website and blog platform", "cms", wp_versions,
          "standard-2vcpu-4gb", "ubuntu-24.04", wp_fields, N(wp_fields) },
};
static const char *const ids[] = { "postgres", "mysql", "redis", "wordpress", NULL };
_Static_assert(N(ids) == N(catalog) + 1, "ids and catalog must match");

const struct tpl *templates_find(const char *id)
{
        for (size_t i = 0; id && i < N(catalog); i++)
                if (strcmp(catalog[i].id, id) == 0)
                        return &catalog[i];
        return NULL;
}

const struct tpl *templates_all(size_t *ret_n)
{
        *ret_n = N(catalog);
        return catalog;
}

const char *const *templates_ids(void)
{
        return ids;
}

json_t *templates_json(const struct tpl *t)
{
        json_t *versions = json_array(), *config = json_array();
        for (const char *const *v = t->versions; *v; v++)
                json_array_append_new(versions, json_string(*v));
        for (size_t i = 0; i < t->n_fields; i++) {
                const struct tpl_field *f = &t->fields[i];
                json_t *o = json_pack("{s:s, s:s, s:b, s:b, s:s}", "name", f->name, "type",
                                      f->type == TPL_INT ? "integer" : "string", "required",
                                      f->required, "secret", f->secret, "description",
                                      f->description);
                if (f->type == TPL_INT) {
                        json_object_set_new(o, "minimum", json_integer(f->min));
                        json_object_set_new(o, "maximum", json_integer(f->max));
                } else {
                        json_object_set_new(o, "min_length", json_integer(f->min));
                        json_object_set_new(o, "max_length", json_integer(f->max));
                }
                if (f->def)
                        json_object_set_new(o, "default", f->type == TPL_INT
                                                                  ? json_integer(atol(f->def))
                                                                  : json_string(f->def));
                json_array_append_new(config, o);
        }
        /* id, name, description, category, versions: the spec's; config: ours */
        return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "id", t->id, "name", t->name,
                         "description", t->description, "category", t->category, "versions",
                         versions, "config", config);
}

static int in_class(const char *cls, const char *v)
{
        size_t n = strlen(v);
        if (strcmp(cls, P_IDENT) == 0) {
                if (!((v[0] >= 'a' && v[0] <= 'z') || v[0] == '_'))
                        return 0;
                return strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
        }
        if (strcmp(cls, P_SECRET) == 0)
                return strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789._~+-") == n;
        if (strcmp(cls, P_EMAIL) == 0) {
                const char *at = strchr(v, '@');
                return at && at != v && strchr(at + 1, '.') && !strchr(at + 1, '@') &&
                       v[n - 1] != '.' &&
                       strspn(v, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789.@_+-") == n;
        }
        for (const unsigned char *p = (const unsigned char *)v; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return 0;
        return 1;
}

static void gen_secret(char *buf, size_t len)
{
        static const char set[] = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        uint8_t raw[32];
        size_t n = len - 1 < sizeof(raw) ? len - 1 : sizeof(raw);
        if (util_random(raw, n) < 0)
                abort(); /* no randomness: cannot make a secret */
        for (size_t i = 0; i < n; i++)
                buf[i] = set[raw[i] % (sizeof(set) - 1)];
        buf[n] = '\0';
}

int templates_validate(const struct tpl *t, json_t *config, json_t **ret, char *field,
                       size_t field_len, char *why, size_t why_len)
{
        const char *key;
        json_t *v;

        if (config && !json_is_object(config)) {
                snprintf(field, field_len, "config");
                snprintf(why, why_len, "config must be an object");
                return -EINVAL;
        }
        json_object_foreach(config, key, v) {
                size_t i;
                for (i = 0; i < t->n_fields && strcmp(t->fields[i].name, key) != 0; i++)
                        ;
                if (i == t->n_fields) {
                        snprintf(field, field_len, "config.%.64s", key);
                        snprintf(why, why_len, "%s takes no config %.64s", t->id, key);
                        return -EINVAL;
                }
        }
        json_t *full = json_object();
        for (size_t i = 0; i < t->n_fields; i++) {
                const struct tpl_field *f = &t->fields[i];
                v = config ? json_object_get(config, f->name) : NULL;
                snprintf(field, field_len, "config.%s", f->name);
                if (!v || json_is_null(v)) {
                        if (f->secret) {
                                char s[25];
                                gen_secret(s, sizeof(s));
                                json_object_set_new(full, f->name, json_string(s));
                        } else if (f->def) {
                                json_object_set_new(full, f->name,
                                                    f->type == TPL_INT ? json_integer(atol(f->def))
                                                                       : json_string(f->def));
                        } else if (f->required) {
                                snprintf(why, why_len, "config.%s is required", f->name);
                                goto bad;
                        }
                        continue;
                }
                if (f->type == TPL_INT) {
                        if (!json_is_integer(v) || json_integer_value(v) < f->min ||
                            json_integer_value(v) > f->max) {
                                snprintf(why, why_len, "config.%s must be a whole number from %ld to %ld",
                                         f->name, f->min, f->max);
                                goto bad;
                        }
                        json_object_set(full, f->name, v);
                        continue;
                }
                const char *s = json_is_string(v) ? json_string_value(v) : NULL;
                size_t n = s ? strlen(s) : 0;
                if (!s || (long)n < f->min || (long)n > f->max || !in_class(f->pattern, s)) {
                        const char *what = strcmp(f->pattern, P_IDENT) == 0
                                                   ? "lowercase letters, digits and _, not "
                                                     "starting with a digit"
                                           : strcmp(f->pattern, P_SECRET) == 0
                                                   ? "letters, digits and . _ ~ + -"
                                           : strcmp(f->pattern, P_EMAIL) == 0 ? "an e-mail address"
                                                                               : "printable characters";
                        snprintf(why, why_len, "config.%s must be %ld to %ld of %s", f->name, f->min,
                                 f->max, what);
                        goto bad;
                }
                json_object_set(full, f->name, v);
        }
        field[0] = '\0';
        *ret = full;
        return 0;
bad:
        json_decref(full);
        return -EINVAL;
}

json_t *templates_public_config(const struct tpl *t, json_t *full)
{
        json_t *pub = json_deep_copy(full);
        for (size_t i = 0; pub && i < t->n_fields; i++)
                if (t->fields[i].secret)
                        json_object_del(pub, t->fields[i].name);
        return pub;
}

/* ---- user-data ---- */

static const char *str(json_t *full, const char *k)
{
        const char *s = json_string_value(json_object_get(full, k));
        return s ? s : "";
}

/* One runcmd entry: a shell command in a YAML single-quoted scalar. The
 * values in it were validated to their classes; text is shell-quoted. */
static void cmd(FILE *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cmd(FILE *f, const char *fmt, ...)
{
        char line[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        fputs("  - '", f);
        for (const char *p = line; *p; p++) {
                if (*p == '\'')
                        fputc('\'', f); /* YAML: '' inside '...' */
                fputc(*p, f);
        }
        fputs("'\n", f);
}

/* Shell single quotes around text: ' becomes '\'' */
static void shq(char *dst, size_t len, const char *s)
{
        size_t o = 0;
        if (len < 3)
                return;
        dst[o++] = '\'';
        for (; *s && o + 6 < len; s++) {
                if (*s == '\'') {
                        memcpy(dst + o, "'\\''", 4);
                        o += 4;
                } else {
                        dst[o++] = *s;
                }
        }
        dst[o++] = '\'';
        dst[o] = '\0';
}

char *templates_user_data(const struct tpl *t, const char *version, json_t *full)
{
        char *out = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);
        if (!f)
                return NULL;
        fprintf(f, "#cloud-config\n# Tasman template %s %s\npackage_update: true\n", t->id,
                version);
        if (strcmp(t->id, "postgres") == 0) {
                fprintf(f, "packages:\n  - postgresql-common\nruncmd:\n");
                cmd(f, "/usr/share/postgresql-common/pgdg/apt.postgresql.org.sh -y");
                cmd(f, "apt-get install -y postgresql-%s", version);
                cmd(f, "sudo -u postgres psql -v ON_ERROR_STOP=1 -c \"CREATE ROLE %s LOGIN "
                       "PASSWORD '%s'\"",
                    str(full, "postgres_user"), str(full, "postgres_password"));
                cmd(f, "sudo -u postgres createdb -O %s %s", str(full, "postgres_user"),
                    str(full, "postgres_db"));
        } else if (strcmp(t->id, "mysql") == 0) {
                fprintf(f, "packages:\n  - mysql-server\nruncmd:\n");
                cmd(f, "mysql -e \"CREATE DATABASE %s; CREATE USER '%s'@'%%' IDENTIFIED BY "
                       "'%s'; GRANT ALL ON %s.* TO '%s'@'%%'\"",
                    str(full, "mysql_database"), str(full, "mysql_user"),
                    str(full, "mysql_password"), str(full, "mysql_database"),
                    str(full, "mysql_user"));
        } else if (strcmp(t->id, "redis") == 0) {
                fprintf(f, "packages:\n  - redis-server\nruncmd:\n");
                cmd(f, "printf 'maxmemory %lldmb\\nrequirepass %s\\n' >> /etc/redis/redis.conf",
                    (long long)json_integer_value(json_object_get(full, "maxmemory_mb")),
                    str(full, "redis_password"));
                cmd(f, "systemctl restart redis-server");
        } else {
                char title[512];
                shq(title, sizeof(title), str(full, "site_title"));
                fprintf(f, "packages:\n  - apache2\n  - mariadb-server\n  - php\n  - php-mysql\n"
                           "  - libapache2-mod-php\n  - curl\nruncmd:\n");
                cmd(f, "curl -fsSLo /usr/local/bin/wp "
                       "https://raw.githubusercontent.com/wp-cli/builds/gh-pages/phar/wp-cli.phar "
                       "&& chmod +x /usr/local/bin/wp");
                cmd(f, "mysql -e \"CREATE DATABASE wordpress; CREATE USER 'wordpress'@'localhost' "
                       "IDENTIFIED BY '%s'; GRANT ALL ON wordpress.* TO 'wordpress'@'localhost'\"",
                    str(full, "admin_password"));
                cmd(f, "rm -f /var/www/html/index.html && wp --allow-root --path=/var/www/html "
                       "core download --version=%s",
                    version);
                cmd(f, "wp --allow-root --path=/var/www/html config create --dbname=wordpress "
                       "--dbuser=wordpress --dbpass=%s",
                    str(full, "admin_password"));
                cmd(f, "wp --allow-root --path=/var/www/html core install --url=http://$(hostname -I "
                       "| cut -d\" \" -f1) --title=%s --admin_user=%s --admin_email=%s "
                       "--admin_password=%s",
                    title, str(full, "admin_user"), str(full, "admin_email"),
                    str(full, "admin_password"));
                cmd(f, "chown -R www-data:www-data /var/www/html");
        }
        if (fclose(f) != 0) {
                free(out);
                return NULL;
        }
        return out;
}
