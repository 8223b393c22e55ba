/* tasmanctl: the admins' command line over the broker's admin HTTP API.
 *
 * Parses the command line, sends one JSON request to the broker with
 * libcurl, and prints the answer's "data" as a table or, with --json, as
 * JSON. Each failure is reported once, on stderr, by the function that
 * meets it, which returns the exit code for it (enum ctl_exit).
 * Single-threaded.
 */
#include "money.h"
#include "util.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TASMAN_VERSION
#define TASMAN_VERSION "0.1.0"
#endif

#define DEFAULT_BROKER "http://127.0.0.1:8081"
#define REQUEST_TIMEOUT_MS 10000L
#define BODY_MAX ((size_t)8 << 20) /* bytes of one answer */
#define NAME_MAX_LEN 64
#define URL_MAX 2048
#define TOKEN_MAX 4096
#define WORDS_MAX 4 /* "key revoke ACCOUNT KEY_ID" */
#define COLS_MAX 8
#define CELL_MAX 80

enum ctl_exit {
        CTL_OK = 0,
        CTL_BROKER = 1, /* the broker answered with an error */
        CTL_USAGE = 2,
        CTL_UNREACHABLE = 3, /* no answer from the broker */
};

struct ctl {
        const char *broker;
        const char *token; /* NULL: no Authorization header */
        const char *tier;  /* NULL unless --tier was given */
        const char *name;  /* NULL unless --name was given */
        const char *url, *sha256, *format, *min_disk; /* image add */
        const char *ipv4, *gateway4, *ipv6, *gateway6;  /* pool add */
        const char *password, *first_name, *last_name; /* api-user create */
        const char *tz;                                 /* site set */
        bool json, help, version, read_only;
        char *words[WORDS_MAX]; /* the command and its arguments */
        size_t n_words;
};

static __attribute__((format(printf, 1, 2))) void say(const char *fmt, ...)
{
        va_list ap;

        fflush(stdout); /* keep stdout and stderr in order when both go to one place */
        fputs("tasmanctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

#define usage_error(...) (say(__VA_ARGS__), fputs("Try 'tasmanctl --help'.\n", stderr), CTL_USAGE)

/* Copies text from the broker for the terminal: control bytes become '?'
 * and a cut (which only shortens what is displayed) ends in '~'. */
static void clean_copy(char *dst, size_t n, const char *src)
{
        if (util_strlcpy(dst, src, n) == -ENAMETOOLONG && n > 1)
                dst[n - 2] = '~';
        for (char *p = dst; *p; p++)
                if ((unsigned char)*p < 0x20 || *p == 0x7f)
                        *p = '?';
}

/* Printable ASCII only: no header injection, no terminal escapes. */
static bool text_plain(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
                        return false;
        return true;
}

/* The broker's rule: 1..64 of [a-z0-9-], starting with a letter or digit. */
static bool name_valid(const char *s)
{
        size_t len = strlen(s);
        return len > 0 && len <= NAME_MAX_LEN && s[0] != '-' &&
               strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == len;
}

static bool tier_valid(const char *s)
{
        return strcmp(s, "free") == 0 || strcmp(s, "pro") == 0 || strcmp(s, "enterprise") == 0;
}

/* ---- HTTP ------------------------------------------------------------ */

struct body {
        char *data;
        size_t len, cap;
        bool too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct body *b = userdata;
        size_t n = size * nmemb; /* curl passes size == 1 */

        if (n > BODY_MAX - b->len) {
                b->too_big = true;
                return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
        }
        while (b->len + n > b->cap) {
                b->cap = b->cap ? 2 * b->cap : 16384;
                if (!(b->data = realloc(b->data, b->cap)))
                        abort(); /* out of memory */
        }
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        return n;
}

static struct curl_slist *header_add(struct curl_slist *list, const char *header)
{
        struct curl_slist *l = curl_slist_append(list, header);
        if (!l)
                abort(); /* out of memory */
        return l;
}

static CURLcode curl_setup(CURL *c, const char *url, const char *payload,
                           struct curl_slist *headers, struct body *resp, char *errbuf)
{
        CURLcode rc; /* CURLE_OK is 0 */

        if ((rc = curl_easy_setopt(c, CURLOPT_URL, url)) ||
            (rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf)) ||
            (rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https")) ||
            (rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS)) ||
            (rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L)) ||
            (rc = curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)BODY_MAX)) ||
            (rc = curl_easy_setopt(c, CURLOPT_USERAGENT, "tasmanctl/" TASMAN_VERSION)) ||
            (rc = curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers)) ||
            (rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, body_write)) ||
            (rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, resp)))
                return rc;
        if (payload && ((rc = curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload))) ||
                        (rc = curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload))))
                return rc;
        return CURLE_OK;
}

/* Prints {"error":{"code":..,"message":..}}; root may be NULL. */
static void report_error(const json_t *root, long status)
{
        const json_t *err = json_object_get(root, "error");
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        char cmsg[512], ccode[64];

        clean_copy(cmsg, sizeof(cmsg), msg ? msg : "the broker sent no error message");
        clean_copy(ccode, sizeof(ccode), code ? code : "unknown");
        say("%s (%s, HTTP %ld)", cmsg, ccode, status);
}

/* Sends one request (POST req if set, else GET; method overrides) and, on
 * a 2xx answer whose "data" has type want, stores a new reference to it in
 * *ret_data. want JSON_NULL: no body expected (204). */
static int broker_request(const struct ctl *ctl, const char *method, const char *path,
                          const json_t *req, json_type want, json_t **ret_data)
{
        char errbuf[CURL_ERROR_SIZE] = "";
        struct body resp = {0};
        struct curl_slist *headers = header_add(NULL, "Accept: application/json");
        char *url = NULL, *auth = NULL, *payload = NULL;
        size_t base_len = strlen(ctl->broker);
        json_t *root = NULL, *data;
        json_error_t jerr;
        CURL *curl = NULL;
        long status = 0;
        CURLcode rc;
        int r = CTL_BROKER;

        while (base_len > 0 && ctl->broker[base_len - 1] == '/')
                base_len--;
        if (asprintf(&url, "%.*s%s", (int)base_len, ctl->broker, path) < 0 ||
            (ctl->token && asprintf(&auth, "Authorization: Bearer %s", ctl->token) < 0) ||
            (req && !(payload = json_dumps(req, JSON_COMPACT))))
                abort(); /* out of memory */
        if (auth)
                headers = header_add(headers, auth);
        if (payload)
                headers = header_add(headers, "Content-Type: application/json");

        curl = curl_easy_init();
        rc = curl ? curl_setup(curl, url, payload, headers, &resp, errbuf) : CURLE_FAILED_INIT;
        if (rc == CURLE_OK && method)
                rc = curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
        if (rc == CURLE_OK)
                rc = curl_easy_perform(curl);
        if (resp.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
                say("the answer from %s is larger than %zu MiB", url, BODY_MAX >> 20);
                goto out;
        }
        if (rc != CURLE_OK) {
                say("cannot reach the broker at %s: %s", url,
                    errbuf[0] ? errbuf : curl_easy_strerror(rc));
                r = CTL_UNREACHABLE;
                goto out;
        }
        rc = curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
        if (rc != CURLE_OK) {
                say("cannot read the HTTP status from %s: %s", url, curl_easy_strerror(rc));
                goto out;
        }
        root = json_loadb(resp.data ? resp.data : "", resp.len, 0, &jerr);
        if (status < 200 || status > 299) {
                report_error(root, status);
                goto out;
        }
        if (want == JSON_NULL) {
                *ret_data = NULL;
                r = CTL_OK;
                goto out;
        }
        data = json_object_get(root, "data");
        if (!data || json_typeof(data) != want) {
                say("unexpected answer from %s (HTTP %ld): %s", url, status,
                    !root ? jerr.text : !data ? "no \"data\"" : "\"data\" has the wrong type");
                goto out;
        }
        *ret_data = json_incref(data);
        r = CTL_OK;
out:
        json_decref(root);
        curl_easy_cleanup(curl);
        curl_slist_free_all(headers);
        free(resp.data);
        free(payload);
        free(auth);
        free(url);
        return r;
}

static int broker_call(const struct ctl *ctl, const char *path, const json_t *req,
                       json_type want, json_t **ret_data)
{
        return broker_request(ctl, NULL, path, req, want, ret_data);
}

/* ---- Output ---------------------------------------------------------- */

enum col_kind {
        COL_STR,
        COL_INT,
        COL_USAGE, /* {"total": T, "used": U} as "U/T" */
        COL_AGE,   /* milliseconds as "850ms ago", "12s ago", "5m ago", "3h ago" */
        COL_BOOL,  /* true/false as "yes"/"no" */
};

struct col {
        const char *head, *key;
        enum col_kind kind;
};

static const struct col account_cols[] = {
        {"ID", "id", COL_STR}, {"NAME", "name", COL_STR}, {"TIER", "tier", COL_STR},
        {"CREATED", "created_at", COL_STR}, {NULL, NULL, COL_STR},
};
static const struct col key_cols[] = {
        {"ID", "id", COL_STR}, {"PREFIX", "prefix", COL_STR}, {"READ-ONLY", "read_only", COL_BOOL},
        {"CREATED", "created_at", COL_STR}, {"REVOKED", "revoked_at", COL_STR},
        {NULL, NULL, COL_STR},
};
static const struct col node_cols[] = {
        {"HOST", "host", COL_STR}, {"SITE", "site", COL_STR}, {"STATE", "state", COL_STR},
        {"LAST SEEN", "last_seen_age_ms", COL_AGE}, {"VCPU", "vcpus", COL_USAGE},
        {"RAM (MB)", "ram_mb", COL_USAGE}, {"DISK (GB)", "disk_gb", COL_USAGE},
        {"GUESTS", "guests", COL_INT}, {NULL, NULL, COL_STR},
};
_Static_assert(sizeof(node_cols) / sizeof(node_cols[0]) <= COLS_MAX + 1, "raise COLS_MAX");

/* One cell of item, "-" where the broker sent nothing usable. */
static void cell_fill(char *cell, const struct col *col, const json_t *item)
{
        static const struct {
                json_int_t ms;
                const char *unit;
        } units[] = {{3600 * 1000, "h"}, {60 * 1000, "m"}, {1000, "s"}, {1, "ms"}};
        const json_t *v = json_object_get(item, col->key);
        const json_t *used = json_object_get(v, "used"), *total = json_object_get(v, "total");
        json_int_t n = json_integer_value(v) > 0 ? json_integer_value(v) : 0;
        size_t u = 0;

        util_strlcpy(cell, "-", CELL_MAX);
        if (col->kind == COL_STR && json_is_string(v))
                clean_copy(cell, CELL_MAX, json_string_value(v));
        else if (col->kind == COL_INT && json_is_integer(v))
                snprintf(cell, CELL_MAX, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        else if (col->kind == COL_USAGE && json_is_integer(used) && json_is_integer(total))
                snprintf(cell, CELL_MAX, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                         json_integer_value(used), json_integer_value(total));
        else if (col->kind == COL_BOOL && json_is_boolean(v))
                util_strlcpy(cell, json_is_true(v) ? "yes" : "no", CELL_MAX);
        else if (col->kind == COL_AGE && json_is_integer(v)) {
                while (n < units[u].ms && units[u].ms > 1)
                        u++;
                snprintf(cell, CELL_MAX, "%" JSON_INTEGER_FORMAT "%s ago", n / units[u].ms,
                         units[u].unit);
        }
}

static const json_t *item_at(const json_t *items, size_t i)
{
        return json_is_array(items) ? json_array_get(items, i) : items;
}

/* Prints items (an array, or one object) in aligned columns: the first
 * pass measures the cells, the second prints the header and the rows. */
static void table_print(const struct col *cols, const json_t *items)
{
        size_t n_items = json_is_array(items) ? json_array_size(items) : 1;
        size_t width[COLS_MAX], n_cols = 0;
        char cell[CELL_MAX];

        for (; cols[n_cols].head; n_cols++)
                width[n_cols] = strlen(cols[n_cols].head);
        for (size_t i = 0; i < n_items; i++) {
                for (size_t c = 0; c < n_cols; c++) {
                        cell_fill(cell, &cols[c], item_at(items, i));
                        width[c] = strlen(cell) > width[c] ? strlen(cell) : width[c];
                }
        }
        for (size_t i = 0; i <= n_items; i++) {
                for (size_t c = 0; c < n_cols; c++) {
                        bool last = c + 1 == n_cols;
                        if (i > 0)
                                cell_fill(cell, &cols[c], item_at(items, i - 1));
                        printf("%-*s%s", last ? 0 : (int)width[c], i > 0 ? cell : cols[c].head,
                               last ? "\n" : "  ");
                }
        }
}

/* With --json the answer's data as it came, else a table of cols. */
static int print_data(const struct ctl *ctl, const json_t *data, const struct col *cols)
{
        if (!ctl->json)
                table_print(cols, data);
        else if (json_dumpf(data, stdout, JSON_INDENT(2)) != 0 || fputc('\n', stdout) == EOF) {
                say("cannot write the answer to stdout");
                return CTL_BROKER;
        }
        return CTL_OK;
}

/* ---- Commands -------------------------------------------------------- */

struct cmd {
        const char *group, *verb;
        const char *args; /* " NAME", or "" for none */
        const char *summary;
        size_t n_args;
        int (*run)(const struct ctl *ctl, const struct cmd *cmd, char **args);
        const char *path;       /* list commands */
        const struct col *cols; /* list commands */
};

static int cmd_account_create(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        const char *tier = ctl->tier ? ctl->tier : "free";
        json_t *req, *data = NULL;
        int r;

        (void)cmd;
        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s': use 1-%d of a-z, 0-9 and '-', "
                                   "starting with a letter or digit", args[0], NAME_MAX_LEN);
        if (!tier_valid(tier))
                return usage_error("invalid tier '%.100s': use free, pro or enterprise", tier);
        req = json_pack("{s:s, s:s}", "name", args[0], "tier", tier);
        if (!req)
                abort(); /* out of memory: both strings are plain ASCII */
        r = broker_call(ctl, "/v1/accounts", req, JSON_OBJECT, &data);
        if (r == CTL_OK)
                r = print_data(ctl, data, account_cols);
        json_decref(data);
        json_decref(req);
        return r;
}

static int cmd_key_create(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128], account[CELL_MAX], prefix[CELL_MAX];
        json_t *req, *data = NULL;
        const char *key;
        int r;

        (void)cmd;
        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s'", args[0]);
        snprintf(path, sizeof(path), "/v1/accounts/%s/keys", args[0]); /* valid: no escaping */
        req = json_pack("{s:b}", "read_only", ctl->read_only);
        if (!req)
                abort(); /* out of memory */
        r = broker_call(ctl, path, req, JSON_OBJECT, &data);
        key = json_string_value(json_object_get(data, "key"));
        if (r != CTL_OK || ctl->json) {
                r = r == CTL_OK ? print_data(ctl, data, NULL) : r;
        } else if (!key || !key[0] || !text_plain(key)) {
                say("unexpected answer from the broker: the new key has no valid \"key\"");
                r = CTL_BROKER;
        } else {
                cell_fill(account, &(struct col){"", "account", COL_STR}, data);
                cell_fill(prefix, &(struct col){"", "prefix", COL_STR}, data);
                printf("%s\n", key);
                say("store this key now, it cannot be shown again (account %s, prefix %s)", account,
                    prefix);
        }
        json_decref(data);
        json_decref(req);
        return r;
}

static int cmd_key_list(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128];
        json_t *data = NULL;
        int r;

        (void)cmd;
        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s'", args[0]);
        snprintf(path, sizeof(path), "/v1/accounts/%s/keys", args[0]);
        r = broker_call(ctl, path, NULL, JSON_ARRAY, &data);
        if (r == CTL_OK)
                r = print_data(ctl, data, key_cols);
        json_decref(data);
        return r;
}

static int cmd_key_revoke(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[192];
        json_t *data = NULL;
        int r;

        (void)cmd;
        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s'", args[0]);
        size_t n = strlen(args[1]);
        if (n == 0 || n > 32 || strspn(args[1], "abcdefghijklmnopqrstuvwxyz0123456789_") != n)
                return usage_error("invalid key id '%.100s' (as 'key list' shows it)", args[1]);
        snprintf(path, sizeof(path), "/v1/accounts/%s/keys/%s", args[0], args[1]);
        r = broker_request(ctl, "DELETE", path, NULL, JSON_NULL, &data);
        if (r == CTL_OK && !ctl->json)
                say("key %s revoked", args[1]);
        json_decref(data);
        return r;
}

static int cmd_list(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        json_t *data = NULL;
        int r;

        (void)args;
        r = broker_call(ctl, cmd->path, NULL, JSON_ARRAY, &data);
        if (r == CTL_OK)
                r = print_data(ctl, data, cmd->cols);
        if (r == CTL_OK && !ctl->json && json_array_size(data) == 0 && cmd->cols == node_cols)
                say("no nodes have joined yet");
        json_decref(data);
        return r;
}

/* Host names as agents give them: letters, digits, '.', '-', '_'. */
static bool host_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 63)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && *s != '.' && *s != '-' && *s != '_')
                        return false;
        return true;
}

static int cmd_node(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128];
        json_t *data = NULL, *req = NULL;
        int r;

        if (!host_valid(args[0]))
                return usage_error("invalid host name '%.100s'", args[0]);
        if (strcmp(cmd->verb, "show") == 0) {
                snprintf(path, sizeof(path), "/v1/nodes/%s", args[0]);
                r = broker_call(ctl, path, NULL, JSON_OBJECT, &data);
        } else if (strcmp(cmd->verb, "remove") == 0) {
                snprintf(path, sizeof(path), "/v1/nodes/%s", args[0]);
                r = broker_request(ctl, "DELETE", path, NULL, JSON_NULL, &data);
                if (r == CTL_OK && !ctl->json)
                        say("node %s removed", args[0]);
                return r;
        } else {
                snprintf(path, sizeof(path), "/v1/nodes/%s/%s", args[0], cmd->verb);
                if (!(req = json_object()))
                        abort(); /* out of memory */
                r = broker_call(ctl, path, req, JSON_OBJECT, &data);
        }
        if (r == CTL_OK && ctl->json) {
                r = print_data(ctl, data, NULL);
        } else if (r == CTL_OK) {
                json_t *one = json_array(), *ev = json_object_get(data, "events");
                json_array_append(one, data);
                table_print(node_cols, one);
                json_decref(one);
                json_t *sto = json_object_get(data, "storage");
                if (json_is_object(sto)) {
                        const char *type;
                        json_t *t;
                        printf("\nStorage (GB used/total):");
                        json_object_foreach(sto, type, t)
                                printf(" %s %lld/%lld", type,
                                       (long long)json_integer_value(json_object_get(t, "used_gb")),
                                       (long long)json_integer_value(json_object_get(t, "total_gb")));
                        printf("\n");
                }
                if (json_array_size(ev))
                        printf("\nRecent events (newest first):\n");
                for (size_t i = 0; i < json_array_size(ev); i++) {
                        char at[CELL_MAX], kind[CELL_MAX], res[CELL_MAX], d[CELL_MAX];
                        const json_t *e = json_array_get(ev, i);
                        cell_fill(at, &(struct col){"", "at", COL_STR}, e);
                        cell_fill(kind, &(struct col){"", "kind", COL_STR}, e);
                        cell_fill(res, &(struct col){"", "resource", COL_STR}, e);
                        cell_fill(d, &(struct col){"", "data", COL_STR}, e);
                        printf("  %s  %-20s %-20s %s\n", at, kind, res, d);
                }
        }
        json_decref(req);
        json_decref(data);
        return r;
}

static const struct col site_cols[] = {
        {"ID", "id", COL_INT}, {"SLUG", "slug", COL_STR}, {"NAME", "name", COL_STR},
        {"HOSTS", "hosts", COL_INT}, {"TZ", "tz", COL_STR}, {NULL, NULL, COL_STR},
};

static const struct col api_user_cols[] = {
        {"ID", "id", COL_INT}, {"EMAIL", "email", COL_STR}, {"FIRST NAME", "first_name", COL_STR},
        {"LAST NAME", "last_name", COL_STR}, {"CREATED", "created_at", COL_STR},
        {NULL, NULL, COL_STR},
};

/* An e-mail address as given (the broker checks it): printable ASCII
 * with one '@' inside, no '/' (it goes into a URL path). */
static bool email_text(const char *s)
{
        const char *at = strchr(s, '@');
        return strlen(s) <= 254 && text_plain(s) && at && at != s && at[1] &&
               !strchr(at + 1, '@') && !strchr(s, '/') && !strchr(s, ' ') && !strchr(s, '?') &&
               !strchr(s, '#') && !strchr(s, '%');
}

static int cmd_api_user(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[512];
        json_t *req = NULL, *data = NULL;
        int r;

        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s'", args[0]);
        if (strcmp(cmd->verb, "list") == 0) {
                snprintf(path, sizeof(path), "/v1/accounts/%s/api_users", args[0]);
                r = broker_call(ctl, path, NULL, JSON_ARRAY, &data);
                if (r == CTL_OK)
                        r = print_data(ctl, data, api_user_cols);
                json_decref(data);
                return r;
        }
        if (!email_text(args[1]))
                return usage_error("invalid e-mail address '%.100s'", args[1]);
        if (strcmp(cmd->verb, "delete") == 0) {
                snprintf(path, sizeof(path), "/v1/accounts/%s/api_users/%s", args[0], args[1]);
                r = broker_request(ctl, "DELETE", path, NULL, JSON_NULL, &data);
                if (r == CTL_OK && !ctl->json)
                        say("API user %s deleted", args[1]);
                json_decref(data);
                return r;
        }
        if (!ctl->password || strlen(ctl->password) < 8 || strlen(ctl->password) > 1024)
                return usage_error("api-user create needs --password P (8 to 1024 bytes)");
        if ((ctl->first_name && strlen(ctl->first_name) > 63) ||
            (ctl->last_name && strlen(ctl->last_name) > 63))
                return usage_error("--first-name and --last-name are at most 63 bytes");
        req = json_pack("{s:s, s:s}", "email", args[1], "password", ctl->password);
        if (!req)
                return usage_error("--password must be UTF-8 text");
        if (ctl->first_name)
                json_object_set_new(req, "first_name", json_string(ctl->first_name));
        if (ctl->last_name)
                json_object_set_new(req, "last_name", json_string(ctl->last_name));
        snprintf(path, sizeof(path), "/v1/accounts/%s/api_users", args[0]);
        r = broker_call(ctl, path, req, JSON_OBJECT, &data);
        if (r == CTL_OK)
                r = print_data(ctl, data, api_user_cols);
        json_decref(data);
        json_decref(req);
        return r;
}

static int cmd_site_set(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        json_t *req, *data = NULL, *one;
        int r;

        (void)cmd;
        if (!name_valid(args[0]))
                return usage_error("invalid site slug '%.100s': use a-z, 0-9 and '-'", args[0]);
        if (!ctl->name && !ctl->tz)
                return usage_error("site set needs --name NAME, --tz ZONE or both");
        if (ctl->name && (!ctl->name[0] || strlen(ctl->name) > 127 || !text_plain(ctl->name)))
                return usage_error("site set: --name NAME is 1-127 printable characters");
        if (ctl->tz && (!ctl->tz[0] || strlen(ctl->tz) > 63 || !text_plain(ctl->tz)))
                return usage_error("site set: --tz ZONE is a zone name under "
                                   "/usr/share/zoneinfo, as Europe/Amsterdam");
        req = json_pack("{s:s}", "slug", args[0]);
        if (!req)
                abort(); /* out of memory */
        if (ctl->name)
                json_object_set_new(req, "name", json_string(ctl->name));
        if (ctl->tz)
                json_object_set_new(req, "tz", json_string(ctl->tz));
        r = broker_call(ctl, "/v1/sites", req, JSON_OBJECT, &data);
        if (r == CTL_OK && ctl->json) {
                r = print_data(ctl, data, NULL);
        } else if (r == CTL_OK) {
                one = json_array();
                json_array_append(one, data);
                table_print(site_cols, one);
                json_decref(one);
        }
        json_decref(data);
        json_decref(req);
        return r;
}

static const struct col image_cols[] = {
        {"SLUG", "slug", COL_STR}, {"NAME", "name", COL_STR}, {"FORMAT", "format", COL_STR},
        {"MIN_DISK_GB", "min_disk_gb", COL_INT}, {"SHA256", "sha256", COL_STR},
        {"URL", "url", COL_STR}, {NULL, NULL, COL_STR},
};

static bool image_slug_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 63 || s[0] == '-' || s[0] == '.')
                return false;
        for (; *s; s++)
                if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-' &&
                    *s != '.' && *s != '_')
                        return false;
        return true;
}

static int cmd_image(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128];
        json_t *req = NULL, *data = NULL, *one;
        int r;

        if (!image_slug_valid(args[0]))
                return usage_error("invalid image slug '%.100s': use 1-63 of a-z, 0-9, '-', '.' "
                                   "and '_'",
                                   args[0]);
        if (strcmp(cmd->verb, "remove") == 0) {
                snprintf(path, sizeof(path), "/v1/images/%s", args[0]);
                r = broker_request(ctl, "DELETE", path, NULL, JSON_NULL, &data);
                if (r == CTL_OK && !ctl->json)
                        say("image %s removed from the catalog (guests made from it keep it)",
                            args[0]);
                json_decref(data);
                return r;
        }
        if (!ctl->name || !ctl->name[0] || strlen(ctl->name) > 127 || !text_plain(ctl->name))
                return usage_error("image add needs --name NAME (1-127 printable characters)");
        if (!ctl->url || !ctl->url[0] || strlen(ctl->url) > URL_MAX || !text_plain(ctl->url))
                return usage_error("image add needs --url URL (file:///, http:// or https://)");
        if (!ctl->sha256 || strlen(ctl->sha256) != 64 ||
            strspn(ctl->sha256, "0123456789abcdefABCDEF") != 64)
                return usage_error("image add needs --sha256 HEX (64 hex digits, as sha256sum "
                                   "prints)");
        req = json_pack("{s:s, s:s, s:s, s:s}", "slug", args[0], "name", ctl->name, "url",
                        ctl->url, "sha256", ctl->sha256);
        if (!req)
                abort(); /* out of memory */
        if (ctl->format) {
                if (strcmp(ctl->format, "qcow2") != 0 && strcmp(ctl->format, "raw") != 0) {
                        json_decref(req);
                        return usage_error("--format must be qcow2 or raw");
                }
                json_object_set_new(req, "format", json_string(ctl->format));
        }
        if (ctl->min_disk) {
                char *end;
                long v = strtol(ctl->min_disk, &end, 10);
                if (!ctl->min_disk[0] || *end || v < 0 || v > 65536) {
                        json_decref(req);
                        return usage_error("--min-disk must be a number of GB from 0 to 65536");
                }
                json_object_set_new(req, "min_disk_gb", json_integer(v));
        }
        r = broker_call(ctl, "/v1/images", req, JSON_OBJECT, &data);
        if (r == CTL_OK && ctl->json) {
                r = print_data(ctl, data, NULL);
        } else if (r == CTL_OK) {
                one = json_array();
                json_array_append(one, data);
                table_print(image_cols, one);
                json_decref(one);
        }
        json_decref(data);
        json_decref(req);
        return r;
}

static const struct col pool_cols[] = {
        {"SITE", "site", COL_STR}, {"IPV4", "ipv4", COL_STR}, {"GATEWAY4", "gateway4", COL_STR},
        {"IPV6", "ipv6", COL_STR}, {"GATEWAY6", "gateway6", COL_STR}, {"USED", "used", COL_INT},
        {NULL, NULL, COL_STR},
};

/* An address or prefix as given (the broker checks it): hex digits, '.',
 * ':' and one '/' at most, nothing else. */
static bool addr_text(const char *s, bool prefix)
{
        size_t n = strlen(s);
        const char *slash = strchr(s, '/');
        return n > 0 && n < 64 && strspn(s, "0123456789abcdefABCDEF.:/") == n &&
               (prefix ? slash && slash[1] && !strchr(slash + 1, '/') : !slash);
}

static int cmd_pool(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128];
        json_t *req = NULL, *data = NULL, *one;
        int r;

        if (!name_valid(args[0]))
                return usage_error("invalid site slug '%.100s': use a-z, 0-9 and '-'", args[0]);
        if (strcmp(cmd->verb, "remove") == 0) {
                snprintf(path, sizeof(path), "/v1/ip_pools/%s", args[0]);
                r = broker_request(ctl, "DELETE", path, NULL, JSON_NULL, &data);
                if (r == CTL_OK && !ctl->json)
                        say("the address pool of site %s removed", args[0]);
                json_decref(data);
                return r;
        }
        if (!ctl->ipv4 || !addr_text(ctl->ipv4, true))
                return usage_error("pool add needs --ipv4 CIDR (a prefix, as 203.0.113.0/24)");
        if (!ctl->gateway4 || !addr_text(ctl->gateway4, false))
                return usage_error("pool add needs --gateway4 IP (an address inside --ipv4)");
        if (!ctl->ipv6 != !ctl->gateway6)
                return usage_error("--ipv6 and --gateway6 go together");
        if (ctl->ipv6 && (!addr_text(ctl->ipv6, true) || !addr_text(ctl->gateway6, false)))
                return usage_error("--ipv6 needs a prefix (as 2001:db8::/64) and --gateway6 an "
                                   "address inside it");
        req = json_pack("{s:s, s:s, s:s}", "site", args[0], "ipv4", ctl->ipv4, "gateway4",
                        ctl->gateway4);
        if (!req)
                abort(); /* out of memory */
        if (ctl->ipv6) {
                json_object_set_new(req, "ipv6", json_string(ctl->ipv6));
                json_object_set_new(req, "gateway6", json_string(ctl->gateway6));
        }
        r = broker_call(ctl, "/v1/ip_pools", req, JSON_OBJECT, &data);
        if (r == CTL_OK && ctl->json) {
                r = print_data(ctl, data, NULL);
        } else if (r == CTL_OK) {
                one = json_array();
                json_array_append(one, data);
                table_print(pool_cols, one);
                json_decref(one);
        }
        json_decref(data);
        json_decref(req);
        return r;
}

/* ---- billing ---- */

static const struct col price_cols[] = {
        {"SIZE", "size", COL_STR}, {"EUR/MONTH", "month", COL_STR}, {"EUR/DAY", "day", COL_STR},
        {NULL, NULL, COL_STR},
};
static const struct col invoice_cols[] = {
        {"DATE", "date", COL_STR}, {"VPS", "vps", COL_STR}, {"NAME", "name", COL_STR},
        {"SIZE", "size", COL_STR}, {"EUR", "amount", COL_STR}, {NULL, NULL, COL_STR},
};

/* credit add ACCOUNT AMOUNT | credit show ACCOUNT */
static int cmd_credit(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        char path[128], cell[CELL_MAX];
        json_t *req = NULL, *data = NULL;
        int64_t cents = 0;
        int r;

        if (!name_valid(args[0]))
                return usage_error("invalid account name '%.100s'", args[0]);
        snprintf(path, sizeof(path), "/v1/accounts/%s/credit", args[0]); /* valid: no escaping */
        if (strcmp(cmd->verb, "add") == 0) {
                r = money_parse(args[1], &cents);
                if (r < 0 || cents == 0)
                        return usage_error("invalid amount '%.100s': euros from 0.01 to 1000000.00, "
                                           "at most two decimals after a '.' (e.g. 12.50)",
                                           args[1]);
                req = json_pack("{s:I}", "amount_cents", (json_int_t)cents);
                if (!req)
                        abort(); /* out of memory */
        }
        r = broker_call(ctl, path, req, JSON_OBJECT, &data);
        if (r == CTL_OK && ctl->json) {
                r = print_data(ctl, data, NULL);
        } else if (r == CTL_OK) {
                const json_t *lines = json_object_get(data, "invoice_lines");
                cell_fill(cell, &(struct col){"", "account", COL_STR}, data);
                printf("account %s: balance EUR ", cell);
                cell_fill(cell, &(struct col){"", "balance", COL_STR}, data);
                printf("%s; %lld live services, EUR ", cell,
                       (long long)json_integer_value(json_object_get(data, "services")));
                cell_fill(cell, &(struct col){"", "daily", COL_STR}, data);
                printf("%s a day; billing %s\n", cell,
                       json_is_true(json_object_get(data, "billing")) ? "on" : "off");
                if (json_array_size(lines)) {
                        printf("\nRecent invoice lines (newest first):\n");
                        table_print(invoice_cols, lines);
                }
        }
        json_decref(req);
        json_decref(data);
        return r;
}

/* price set SIZE AMOUNT */
static int cmd_price_set(const struct ctl *ctl, const struct cmd *cmd, char **args)
{
        json_t *req, *data = NULL;
        int64_t cents = 0;
        size_t n = strlen(args[0]);
        int r;

        (void)cmd;
        if (n == 0 || n > 31 || strspn(args[0], "abcdefghijklmnopqrstuvwxyz0123456789-.") != n)
                return usage_error("invalid size '%.100s': use 1-31 of a-z, 0-9, '-' and '.'",
                                   args[0]);
        if (money_parse(args[1], &cents) < 0)
                return usage_error("invalid amount '%.100s': euros a month from 0 to 1000000.00, "
                                   "at most two decimals after a '.' (e.g. 6.00)",
                                   args[1]);
        req = json_pack("{s:s, s:I}", "size", args[0], "month_cents", (json_int_t)cents);
        if (!req)
                abort(); /* out of memory */
        r = broker_call(ctl, "/v1/prices", req, JSON_ARRAY, &data);
        if (r == CTL_OK)
                r = print_data(ctl, data, price_cols);
        json_decref(data);
        json_decref(req);
        return r;
}

static const struct cmd cmds[] = {
        {"account", "create", " NAME [--tier free|pro|enterprise]",
         "create an account (tier defaults to free)", 1, cmd_account_create, NULL, NULL},
        {"account", "list", "", "list accounts", 0, cmd_list, "/v1/accounts", account_cols},
        {"key", "create", " ACCOUNT [--read-only]",
         "create an API key for ACCOUNT and print it, only this once (--read-only: GET only)",
         1, cmd_key_create, NULL, NULL},
        {"key", "list", " ACCOUNT", "list ACCOUNT's keys (prefixes only, never the keys)", 1,
         cmd_key_list, NULL, NULL},
        {"key", "revoke", " ACCOUNT KEY_ID", "revoke a key: it stops working at once", 2,
         cmd_key_revoke, NULL, NULL},
        {"api-user", "create", " ACCOUNT EMAIL --password P [--first-name F] [--last-name L]",
         "create a Tilaa API user of ACCOUNT (HTTP Basic login: EMAIL and P)", 2, cmd_api_user,
         NULL, NULL},
        {"api-user", "list", " ACCOUNT", "list ACCOUNT's Tilaa API users", 1, cmd_api_user,
         NULL, NULL},
        {"api-user", "delete", " ACCOUNT EMAIL", "delete a Tilaa API user: its logins stop at once",
         2, cmd_api_user, NULL, NULL},
        {"image", "add", " SLUG --name NAME --url URL --sha256 HEX [--format qcow2|raw] [--min-disk GB]",
         "add an OS image to the catalog (agents fetch URL once and check its SHA-256)", 1,
         cmd_image, NULL, NULL},
        {"image", "list", "", "list the OS image catalog", 0, cmd_list, "/v1/images", image_cols},
        {"image", "remove", " SLUG",
         "take an image out of the catalog (no new guests; existing ones keep it)", 1, cmd_image,
         NULL, NULL},
        {"pool", "add", " SITE --ipv4 CIDR --gateway4 IP [--ipv6 CIDR --gateway6 IP]",
         "give SITE its public address pool: each VPS made there from now on gets its first "
         "free addresses (never the network, last or gateway address)",
         1, cmd_pool, NULL, NULL},
        {"pool", "list", "", "list the sites' public address pools and how many addresses are used",
         0, cmd_list, "/v1/ip_pools", pool_cols},
        {"pool", "remove", " SITE", "take SITE's address pool away (only when no guest uses it)",
         1, cmd_pool, NULL, NULL},
        {"credit", "add", " ACCOUNT AMOUNT",
         "add AMOUNT euros (e.g. 12.50) to ACCOUNT's prepaid credit, then show it", 2, cmd_credit,
         NULL, NULL},
        {"credit", "show", " ACCOUNT",
         "ACCOUNT's credit, its services' daily charge and its recent invoice lines", 1,
         cmd_credit, NULL, NULL},
        {"price", "list", "", "list the sizes' prices (EUR a month, and a day: month * 12 / 365)",
         0, cmd_list, "/v1/prices", price_cols},
        {"price", "set", " SIZE AMOUNT",
         "set SIZE's price to AMOUNT euros a month for orders from now on (VPS keep theirs)", 2,
         cmd_price_set, NULL, NULL},
        {"node", "list", "", "list hypervisor nodes, their state and capacity", 0, cmd_list,
         "/v1/nodes", node_cols},
        {"site", "list", "", "list sites (regions): number, slug, name, hosts", 0, cmd_list,
         "/v1/sites", site_cols},
        {"site", "set", " SLUG [--name NAME] [--tz ZONE]",
         "create a site or rename it; --tz sets its time zone (the Tilaa API's times)", 1,
         cmd_site_set, NULL, NULL},
        {"node", "show", " HOST", "one node: state, capacity and use, recent events", 1,
         cmd_node, NULL, NULL},
        {"node", "drain", " HOST", "place no new guests on HOST", 1, cmd_node, NULL, NULL},
        {"node", "undrain", " HOST", "place guests on HOST again", 1, cmd_node, NULL, NULL},
        {"node", "remove", " HOST", "forget HOST (only when no guests are placed on it)", 1,
         cmd_node, NULL, NULL},
};
#define N_CMDS (sizeof(cmds) / sizeof(cmds[0]))

/* A command matches the words it starts with: "account" matches both
 * account commands, no words match all. */
static bool cmd_matches(const struct cmd *cmd, const struct ctl *ctl)
{
        return (ctl->n_words < 1 || strcmp(ctl->words[0], cmd->group) == 0) &&
               (ctl->n_words < 2 || strcmp(ctl->words[1], cmd->verb) == 0);
}

static int unknown_cmd(const struct ctl *ctl)
{
        if (ctl->n_words == 0)
                return usage_error("no command given");
        return usage_error("unknown command '%.64s%s%.64s'", ctl->words[0],
                           ctl->n_words > 1 ? " " : "", ctl->n_words > 1 ? ctl->words[1] : "");
}

static int print_help(const struct ctl *ctl)
{
        size_t n = 0;

        for (size_t i = 0; i < N_CMDS; i++)
                n += cmd_matches(&cmds[i], ctl);
        if (n == 0)
                return unknown_cmd(ctl);
        printf("Usage: tasmanctl [OPTIONS] COMMAND [ARGS]\n\nCommands:\n");
        for (size_t i = 0; i < N_CMDS; i++)
                if (cmd_matches(&cmds[i], ctl))
                        printf("  %s %s%s\n      %s\n", cmds[i].group, cmds[i].verb, cmds[i].args,
                               cmds[i].summary);
        printf("\nOptions (before or after the command):\n"
               "  --broker URL   broker admin API (env TASMAN_BROKER, default " DEFAULT_BROKER ")\n"
               "  --token TOKEN  admin token (better: env TASMAN_ADMIN_TOKEN, hidden from ps)\n"
               "  --json         print the answer's data as JSON\n"
               "  -h, --help     print this help; 'tasmanctl COMMAND --help' for one command\n"
               "  --version      print the version\n\n"
               "Exit status: 0 ok, 1 the broker answered with an error, 2 usage error,\n"
               "3 cannot reach the broker.\n");
        return CTL_OK;
}

/* ---- Main ------------------------------------------------------------ */

enum { OPT_BROKER = 256, OPT_TOKEN, OPT_JSON, OPT_TIER, OPT_NAME, OPT_VERSION, OPT_READ_ONLY,
       OPT_URL, OPT_SHA256, OPT_FORMAT, OPT_MIN_DISK, OPT_IPV4, OPT_GATEWAY4, OPT_IPV6,
       OPT_GATEWAY6, OPT_PASSWORD, OPT_FIRST_NAME, OPT_LAST_NAME, OPT_TZ };

static const struct option long_opts[] = {
        {"broker", required_argument, NULL, OPT_BROKER},
        {"token", required_argument, NULL, OPT_TOKEN},
        {"json", no_argument, NULL, OPT_JSON},
        {"tier", required_argument, NULL, OPT_TIER},
        {"name", required_argument, NULL, OPT_NAME},
        {"read-only", no_argument, NULL, OPT_READ_ONLY},
        {"url", required_argument, NULL, OPT_URL},
        {"sha256", required_argument, NULL, OPT_SHA256},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"min-disk", required_argument, NULL, OPT_MIN_DISK},
        {"ipv4", required_argument, NULL, OPT_IPV4},
        {"gateway4", required_argument, NULL, OPT_GATEWAY4},
        {"ipv6", required_argument, NULL, OPT_IPV6},
        {"gateway6", required_argument, NULL, OPT_GATEWAY6},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"first-name", required_argument, NULL, OPT_FIRST_NAME},
        {"last-name", required_argument, NULL, OPT_LAST_NAME},
        {"tz", required_argument, NULL, OPT_TZ},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
};

static int add_word(struct ctl *ctl, char *word)
{
        if (ctl->n_words == WORDS_MAX)
                return usage_error("unexpected argument '%.100s'", word);
        ctl->words[ctl->n_words++] = word;
        return CTL_OK;
}

/* Options and command words in any order: the leading '-' of optstring
 * hands words back in place (even under POSIXLY_CORRECT); "--" ends the
 * options. */
static int parse_args(int argc, char **argv, struct ctl *ctl)
{
        int opt, r = CTL_OK;

        opterr = 0;
        while (r == CTL_OK && (opt = getopt_long(argc, argv, "-:h", long_opts, NULL)) != -1) {
                switch (opt) {
                case 1: r = add_word(ctl, optarg); break;
                case OPT_BROKER: ctl->broker = optarg; break;
                case OPT_TOKEN: ctl->token = optarg; break;
                case OPT_JSON: ctl->json = true; break;
                case OPT_TIER: ctl->tier = optarg; break;
                case OPT_NAME: ctl->name = optarg; break;
                case OPT_READ_ONLY: ctl->read_only = true; break;
                case OPT_URL: ctl->url = optarg; break;
                case OPT_SHA256: ctl->sha256 = optarg; break;
                case OPT_FORMAT: ctl->format = optarg; break;
                case OPT_MIN_DISK: ctl->min_disk = optarg; break;
                case OPT_IPV4: ctl->ipv4 = optarg; break;
                case OPT_GATEWAY4: ctl->gateway4 = optarg; break;
                case OPT_IPV6: ctl->ipv6 = optarg; break;
                case OPT_GATEWAY6: ctl->gateway6 = optarg; break;
                case OPT_PASSWORD: ctl->password = optarg; break;
                case OPT_FIRST_NAME: ctl->first_name = optarg; break;
                case OPT_LAST_NAME: ctl->last_name = optarg; break;
                case OPT_TZ: ctl->tz = optarg; break;
                case 'h': ctl->help = true; break;
                case OPT_VERSION: ctl->version = true; break;
                case ':': r = usage_error("option '%s' needs a value", argv[optind - 1]); break;
                default: r = usage_error("unknown option '%s'", argv[optind - 1]);
                }
        }
        for (; r == CTL_OK && optind < argc; optind++)
                r = add_word(ctl, argv[optind]);
        return r;
}

/* Finds the command named by the words and checks everything else given. */
static int check_args(const struct ctl *ctl, const struct cmd **ret_cmd)
{
        const struct cmd *cmd = NULL;

        for (size_t i = 0; i < N_CMDS && ctl->n_words >= 2; i++)
                if (cmd_matches(&cmds[i], ctl))
                        cmd = &cmds[i];
        if (!cmd)
                return unknown_cmd(ctl);
        if (ctl->n_words - 2 != cmd->n_args)
                return usage_error("usage: tasmanctl %s %s%s", cmd->group, cmd->verb, cmd->args);
        if (ctl->tier && cmd->run != cmd_account_create)
                return usage_error("--tier applies only to 'account create'");
        bool image_add = cmd->run == cmd_image && strcmp(cmd->verb, "add") == 0;
        if (ctl->name && cmd->run != cmd_site_set && !image_add)
                return usage_error("--name applies only to 'site set' and 'image add'");
        if ((ctl->url || ctl->sha256 || ctl->format || ctl->min_disk) && !image_add)
                return usage_error("--url, --sha256, --format and --min-disk apply only to "
                                   "'image add'");
        bool pool_add = cmd->run == cmd_pool && strcmp(cmd->verb, "add") == 0;
        if ((ctl->ipv4 || ctl->gateway4 || ctl->ipv6 || ctl->gateway6) && !pool_add)
                return usage_error("--ipv4, --gateway4, --ipv6 and --gateway6 apply only to "
                                   "'pool add'");
        bool user_create = cmd->run == cmd_api_user && strcmp(cmd->verb, "create") == 0;
        if ((ctl->password || ctl->first_name || ctl->last_name) && !user_create)
                return usage_error("--password, --first-name and --last-name apply only to "
                                   "'api-user create'");
        if (ctl->tz && cmd->run != cmd_site_set)
                return usage_error("--tz applies only to 'site set'");
        if (ctl->read_only && cmd->run != cmd_key_create)
                return usage_error("--read-only applies only to 'key create'");
        if (!ctl->broker[0] || strlen(ctl->broker) > URL_MAX || !text_plain(ctl->broker))
                return usage_error("invalid broker URL (1-%d printable characters)", URL_MAX);
        if (ctl->token && (strlen(ctl->token) > TOKEN_MAX || !text_plain(ctl->token)))
                return usage_error("invalid token (at most %d printable characters)", TOKEN_MAX);
        *ret_cmd = cmd;
        return CTL_OK;
}

static const char *env_or(const char *name, const char *fallback)
{
        const char *v = getenv(name);
        return v && v[0] ? v : fallback;
}

int main(int argc, char **argv)
{
        struct ctl ctl = {.broker = env_or("TASMAN_BROKER", DEFAULT_BROKER),
                          .token = env_or("TASMAN_ADMIN_TOKEN", NULL)};
        const struct cmd *cmd = NULL;
        int r = parse_args(argc, argv, &ctl);

        if (r != CTL_OK)
                return r;
        if (ctl.version)
                printf("tasmanctl %s\n", TASMAN_VERSION);
        else if (ctl.help)
                r = print_help(&ctl);
        else if ((r = check_args(&ctl, &cmd)) != CTL_OK)
                return r;
        else if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                say("cannot initialise libcurl");
                return CTL_UNREACHABLE;
        } else {
                r = cmd->run(&ctl, cmd, ctl.words + 2);
                curl_global_cleanup();
        }
        if (fflush(stdout) == EOF) {
                say("cannot write to stdout: %s", strerror(errno));
                return r == CTL_OK ? CTL_BROKER : r;
        }
        return r;
}
