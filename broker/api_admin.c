/* The admins' API: accounts, keys, API users, nodes, sites, images,
 * address pools. See api.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "api.h"
#include "apiuser.h"
#include "auth.h"
#include "ids.h"
#include "ipam.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "money.h"
#include "tz.h"
#include "tilaa.h"
#include "util.h"

static int valid_account_name(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > 64 || s[0] == '-')
                return 0;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return 0;
        return 1;
}

static json_t *account_json(struct api *api, const struct account *a)
{
        char id[ID_STR_MAX], created[21];
        id_encode(store_id_key(api->store), "acc", a->id, id, sizeof(id));
        util_iso8601_utc(a->created_at, created);
        return json_pack("{s:s, s:s, s:s, s:s}", "id", id, "name", a->name, "tier",
                         tier_to_string(a->tier), "created_at", created);
}

static void account_create(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        static const char *const tiers[] = { "free", "pro", "enterprise", NULL };
        json_t *body, *v;
        const char *name;
        enum tier tier = TIER_FREE;
        struct account a;

        if (api_body_json(req, resp, &body) < 0)
                return;
        v = json_object_get(body, "name");
        if (!json_is_string(v) || !valid_account_name((name = json_string_value(v)))) {
                json_invalid(resp, "name",
                             "name must be 1 to 64 of a-z, 0-9 and '-', not starting with '-'",
                             NULL);
                goto out;
        }
        v = json_object_get(body, "tier");
        if (v && !json_is_null(v) &&
            (!json_is_string(v) || tier_from_string(json_string_value(v), &tier) < 0)) {
                json_invalid(resp, "tier", "Invalid tier specified", tiers);
                goto out;
        }
        int r = store_account_create(api->store, name, tier, &a);
        if (r == -EEXIST) {
                json_error(resp, 409, "conflict", "an account with this name exists",
                           json_pack("{s:s}", "field", "name"));
                goto out;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        log_info("account %s: created (tier %s)", name, tier_to_string(tier));
        json_respond(resp, 201, json_pack("{s:o}", "data", account_json(api, &a)));
out:
        json_decref(body);
}

static void account_list(struct api *api, struct http_resp *resp)
{
        struct account *as = NULL;
        size_t n = 0;
        if (store_account_list(api->store, &as, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, account_json(api, &as[i]));
        free(as);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void key_create(struct api *api, const char *name, const struct http_req *req,
                       struct http_resp *resp)
{
        struct account a;
        char key[AUTH_KEY_LEN + 1], prefix[AUTH_PREFIX_LEN + 1], id[ID_STR_MAX], now_s[21];
        uint64_t key_id;
        json_t *body = NULL;
        int read_only = 0;

        if (req->body_len) {
                if (api_body_json(req, resp, &body) < 0)
                        return;
                json_t *ro = json_object_get(body, "read_only");
                if (ro && !json_is_boolean(ro)) {
                        json_decref(body);
                        json_invalid(resp, "read_only", "read_only must be true or false", NULL);
                        return;
                }
                read_only = ro && json_is_true(ro);
                json_decref(body);
        }
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                return;
        }
        if (r < 0 || auth_key_create(api->store, a.id, read_only, key, prefix, &key_id) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        id_encode(store_id_key(api->store), "key", key_id, id, sizeof(id));
        util_iso8601_utc(util_now_ms(), now_s);
        log_info("account %s: API key %s created%s", name, prefix, read_only ? " (read-only)" : "");
        json_respond(resp, 201,
                     json_pack("{s:{s:s, s:s, s:s, s:s, s:b, s:s}}", "data", "id", id, "account",
                               a.name, "key", key, "prefix", prefix, "read_only", read_only,
                               "created_at", now_s));
        OPENSSL_cleanse(key, sizeof(key));
}

static void key_list(struct api *api, const char *name, struct http_resp *resp)
{
        struct account a;
        struct api_key_info *ks = NULL;
        size_t n = 0;
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                return;
        }
        if (r < 0 || store_key_list(api->store, a.id, &ks, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++) {
                char id[ID_STR_MAX], created[21], revoked[21];
                id_encode(store_id_key(api->store), "key", ks[i].id, id, sizeof(id));
                util_iso8601_utc(ks[i].created_at, created);
                if (ks[i].revoked_at)
                        util_iso8601_utc(ks[i].revoked_at, revoked);
                json_array_append_new(arr, json_pack("{s:s, s:s, s:b, s:s, s:s?}", "id", id,
                                                     "prefix", ks[i].prefix, "read_only",
                                                     ks[i].read_only, "created_at", created,
                                                     "revoked_at",
                                                     ks[i].revoked_at ? revoked : NULL));
        }
        free(ks);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void key_revoke(struct api *api, const char *name, const char *key_str,
                       struct http_resp *resp)
{
        struct account a;
        uint64_t key_id;
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT || id_decode(store_id_key(api->store), "key", key_str, &key_id) < 0) {
                json_error(resp, 404, "not_found", r == -ENOENT ? "account not found"
                                                                : "key not found", NULL);
                return;
        }
        r = r < 0 ? r : store_key_revoke(api->store, a.id, key_id);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "key not found", NULL);
                return;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        log_info("account %s: API key %s revoked", name, key_str);
        json_respond(resp, 204, NULL);
}

/* ---- prepaid billing ---- */

#define CREDIT_LINES_DEFAULT 30
#define CREDIT_LINES_MAX 1000

static json_t *money_json(int64_t cents)
{
        char buf[MONEY_STR_MAX];
        money_format(cents, buf);
        return json_string(buf);
}

static void credit_show(struct api *api, const char *name, const struct http_req *req,
                        struct http_resp *resp)
{
        struct account a;
        struct credit c;
        struct invoice_line *ls = NULL;
        size_t n = 0, limit = CREDIT_LINES_DEFAULT;
        const char *l = http_req_arg(req, "limit");
        int r;
        if (l) {
                char *e;
                errno = 0;
                long v = strtol(l, &e, 10);
                if (errno || *e || e == l || v < 1 || v > CREDIT_LINES_MAX) {
                        json_invalid(resp, "limit", "limit must be a whole number from 1 to 1000",
                                     NULL);
                        return;
                }
                limit = (size_t)v;
        }
        r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                return;
        }
        if (r < 0 || store_credit_get(api->store, a.id, &c) < 0 ||
            store_invoice_list(api->store, a.id, limit, &ls, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *lines = json_array();
        for (size_t i = 0; lines && i < n; i++) {
                char id[ID_STR_MAX], date[16];
                int y, m, d;
                tz_civil_from_days(ls[i].day, &y, &m, &d);
                snprintf(date, sizeof(date), "%04d-%02d-%02d", y % 10000, m, d);
                id_encode(store_id_key(api->store), "vps", ls[i].vm_id, id, sizeof(id));
                json_array_append_new(lines, json_pack("{s:s, s:s, s:s, s:s, s:I, s:o}", "date",
                                                       date, "vps", id, "name", ls[i].vm_name,
                                                       "size", ls[i].size, "amount_cents",
                                                       (json_int_t)ls[i].amount_cents, "amount",
                                                       money_json(ls[i].amount_cents)));
        }
        free(ls);
        json_respond(resp, 200,
                     json_pack("{s:{s:s, s:s, s:I, s:o, s:I, s:o, s:I, s:b, s:o}}", "data",
                               "account", a.name, "currency", "EUR", "balance_cents",
                               (json_int_t)c.balance_cents, "balance",
                               money_json(c.balance_cents), "daily_cents",
                               (json_int_t)c.daily_cents, "daily", money_json(c.daily_cents),
                               "services", (json_int_t)c.services, "billing",
                               store_billing_enforced(api->store), "invoice_lines", lines));
}

/* An amount of money in body: field (decimal euros in a string, as
 * money_parse() reads them) or field_cents (a whole number), exactly one
 * of them, from min to MONEY_PARSE_MAX_CENTS cents. 0, or -EINVAL after
 * answering 422. */
static int amount_arg(json_t *body, const char *field, const char *field_cents, int64_t min,
                      int64_t *ret_cents, struct http_resp *resp)
{
        json_t *v = json_object_get(body, field), *vc = json_object_get(body, field_cents);
        int64_t cents = -1;
        if (v && !vc) {
                if (!json_is_string(v) || money_parse(json_string_value(v), &cents) < 0)
                        cents = -1;
        } else if (vc && !v && json_is_integer(vc)) {
                cents = json_integer_value(vc);
        }
        if (cents < min || cents > MONEY_PARSE_MAX_CENTS) {
                char msg[256], lo[MONEY_STR_MAX];
                money_format(min, lo);
                snprintf(msg, sizeof(msg),
                         "give %s (euros as a string, e.g. \"12.50\": at most two decimals, "
                         "from %s to 1000000.00) or %s (a whole number of cents from %lld to "
                         "100000000), not both",
                         field, lo, field_cents, (long long)min);
                json_invalid(resp, v ? field : field_cents, msg, NULL);
                return -EINVAL;
        }
        *ret_cents = cents;
        return 0;
}

/* POST {"amount": "12.50"} or {"amount_cents": 1250}. */
static void credit_add(struct api *api, const char *name, const struct http_req *req,
                       struct http_resp *resp)
{
        json_t *body = NULL;
        struct account a;
        int64_t cents = 0, bal;
        int r;
        if (api_body_json(req, resp, &body) < 0)
                return;
        if (amount_arg(body, "amount", "amount_cents", 1, &cents, resp) < 0)
                goto out;
        r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                goto out;
        }
        if (r == 0)
                r = store_credit_add(api->store, a.id, cents, util_now_ms(), &bal);
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        char amt[MONEY_STR_MAX], b[MONEY_STR_MAX];
        money_format(cents, amt);
        money_format(bal, b);
        log_info("account %s: credit EUR %s added, balance EUR %s", a.name, amt, b);
        credit_show(api, name, req, resp);
out:
        json_decref(body);
}

static void price_list(struct api *api, struct http_resp *resp)
{
        struct price *ps = NULL;
        size_t n = 0;
        if (store_price_list(api->store, &ps, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, json_pack("{s:s, s:s, s:I, s:o, s:I, s:o}", "size",
                                                     ps[i].size, "currency", "EUR", "month_cents",
                                                     (json_int_t)ps[i].month_cents, "month",
                                                     money_json(ps[i].month_cents), "day_cents",
                                                     (json_int_t)ps[i].day_cents, "day",
                                                     money_json(ps[i].day_cents)));
        free(ps);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

/* POST /v1/prices {"size": SLUG, "month": "6.00"} or {..., "month_cents": 600}:
 * the month price of a size for orders from now on (VPS keep theirs). */
static void price_set(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL, *v;
        const char *size;
        int64_t cents = -1;
        size_t len;
        if (api_body_json(req, resp, &body) < 0)
                return;
        v = json_object_get(body, "size");
        size = json_is_string(v) ? json_string_value(v) : "";
        len = strlen(size);
        if (len == 0 || len >= sizeof(((struct price *)0)->size) ||
            strspn(size, "abcdefghijklmnopqrstuvwxyz0123456789-.") != len) {
                json_invalid(resp, "size", "size must be 1 to 31 of a-z, 0-9, '-' and '.'", NULL);
                goto out;
        }
        if (amount_arg(body, "month", "month_cents", 0, &cents, resp) < 0)
                goto out;
        if (store_price_set(api->store, size, cents) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        char m[MONEY_STR_MAX];
        money_format(cents, m);
        log_info("price %s: EUR %s a month for new orders", size, m);
        price_list(api, resp);
out:
        json_decref(body);
}

static json_t *node_json(struct api *api, const struct host *h, int64_t now)
{
        char seen[21];
        int64_t age = now - h->last_seen;
        const char *state = age > api->host_timeout_ms ? "unreachable"
                            : h->draining              ? "draining"
                                                       : "up";
        util_iso8601_utc(h->last_seen, seen);
        /* disk_gb: all storage types together; storage: each type. */
        return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:s, s:b,"
                         " s:{s:I, s:I}, s:{s:I, s:I}, s:{s:I, s:I}, s:{s:{s:I, s:I}, s:{s:I, s:I}},"
                         " s:I, s:{s:I, s:I, s:I}, s:I, s:I}",
                         "host", h->name, "site", h->site, "state", state, "last_seen", seen,
                         "last_seen_age_ms", (json_int_t)(age < 0 ? 0 : age), "agent_version",
                         h->agent_version, "hypervisor", h->hv_type, "underlay_ip",
                         h->underlay_ip, "draining", h->draining, "vcpus", "total",
                         (json_int_t)h->vcpus, "used", (json_int_t)h->vcpus_used, "ram_mb",
                         "total", (json_int_t)h->ram_mb, "used", (json_int_t)h->ram_mb_used,
                         "disk_gb", "total", (json_int_t)(h->disk_gb + h->hdd_gb), "used",
                         (json_int_t)(h->disk_gb_used + h->hdd_gb_used), "storage", "ssd",
                         "total_gb", (json_int_t)h->disk_gb, "used_gb", (json_int_t)h->disk_gb_used,
                         "hdd", "total_gb", (json_int_t)h->hdd_gb, "used_gb",
                         (json_int_t)h->hdd_gb_used, "guests", (json_int_t)h->guests,
                         "observed", "domains", (json_int_t)h->obs_domains, "vcpus_running",
                         (json_int_t)h->obs_vcpus, "ram_mb_running", (json_int_t)h->obs_ram_mb,
                         "generation", (json_int_t)h->generation, "applied_generation",
                         (json_int_t)h->applied_generation);
}

static void node_list(struct api *api, struct http_resp *resp)
{
        struct host *hs = NULL;
        size_t n = 0;
        int64_t now = util_now_ms();
        if (store_host_list(api->store, &hs, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, node_json(api, &hs[i], now));
        free(hs);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void node_show(struct api *api, const char *name, struct http_resp *resp)
{
        struct host h;
        struct store_event *ev = NULL;
        size_t n = 0;
        int r = store_host_by_name(api->store, name, &h);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "node not found", NULL);
                return;
        }
        if (r < 0 || store_host_events(api->store, h.id, 20, &ev, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *node = node_json(api, &h, util_now_ms());
        json_t *events = json_array();
        for (size_t i = 0; events && i < n; i++) {
                char at[21], rid[ID_STR_MAX];
                util_iso8601_utc(ev[i].at, at);
                if (strncmp(ev[i].kind, "vps.", 4) == 0)
                        id_encode(store_id_key(api->store), "vps", ev[i].resource_id, rid,
                                  sizeof(rid));
                else
                        snprintf(rid, sizeof(rid), "%s", h.name);
                json_array_append_new(events, json_pack("{s:s, s:s, s:s, s:s}", "at", at, "kind",
                                                        ev[i].kind, "resource", rid, "data",
                                                        ev[i].data));
        }
        free(ev);
        if (node)
                json_object_set_new(node, "events", events);
        else
                json_decref(events);
        json_respond(resp, 200, json_pack("{s:o}", "data", node));
}

static void node_drain(struct api *api, const char *name, int draining, struct http_resp *resp)
{
        int r = store_host_set_draining(api->store, name, draining);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "node not found", NULL);
                return;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        log_info("host %s: %s by an admin", name, draining ? "drained" : "undrained");
        node_show(api, name, resp);
}

static void node_remove(struct api *api, const char *name, struct http_resp *resp)
{
        int r = store_host_remove(api->store, name);
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "node not found", NULL);
        else if (r == -EBUSY)
                json_error(resp, 409, "conflict",
                           "node still has guests: drain it and move or delete them first", NULL);
        else if (r < 0)
                json_error(resp, 500, "internal_error", "internal error", NULL);
        else {
                log_info("host %s: removed by an admin", name);
                json_respond(resp, 204, NULL);
        }
}

static int valid_slug(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n >= TMSG_STR)
                return 0;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-'))
                        return 0;
        return 1;
}

static json_t *site_json(const struct site *x)
{
        return json_pack("{s:I, s:s, s:s, s:I, s:s}", "id", (json_int_t)x->id, "slug", x->slug,
                         "name", x->name, "hosts", (json_int_t)x->hosts, "tz", x->tz);
}

static void site_list(struct api *api, struct http_resp *resp)
{
        struct site *xs = NULL;
        size_t n = 0;
        if (store_sites(api->store, &xs, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, site_json(&xs[i]));
        free(xs);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

/* A time zone this machine has: a zoneinfo name (letters, digits, '_',
 * '-', '+' and '/' between parts, no "..") whose file under
 * /usr/share/zoneinfo is a TZif file. */
static int valid_tz(const char *tz)
{
        size_t n = strlen(tz);
        char path[128], magic[4];
        if (n == 0 || n > 63 || tz[0] == '/' || tz[n - 1] == '/' || strstr(tz, "..") ||
            strstr(tz, "//"))
                return 0;
        for (const char *p = tz; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '+' ||
                      *p == '/'))
                        return 0;
        snprintf(path, sizeof(path), "/usr/share/zoneinfo/%s", tz);
        FILE *f = fopen(path, "rb");
        if (!f)
                return 0;
        size_t got = fread(magic, 1, sizeof(magic), f);
        fclose(f);
        return got == 4 && memcmp(magic, "TZif", 4) == 0;
}

/* {"slug", "name"} makes or renames a site; "tz" (optional, alone for a
 * site that exists) sets its time zone. */
static void site_put(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        json_t *body, *slug, *name, *tz;
        struct site x;
        int r = 0;
        if (api_body_json(req, resp, &body) < 0)
                return;
        slug = json_object_get(body, "slug");
        name = json_object_get(body, "name");
        tz = json_object_get(body, "tz");
        if (!json_is_string(slug) || !valid_slug(json_string_value(slug))) {
                json_invalid(resp, "slug", "slug must be 1 to 63 of a-z, 0-9 and '-'", NULL);
                goto out;
        }
        if ((name || !tz) && (!json_is_string(name) || json_string_length(name) == 0 ||
                              json_string_length(name) > 127)) {
                json_invalid(resp, "name", "name must be a string of 1 to 127 bytes", NULL);
                goto out;
        }
        if (tz && (!json_is_string(tz) || !valid_tz(json_string_value(tz)))) {
                json_invalid(resp, "tz",
                             "tz must be a time zone under /usr/share/zoneinfo (as "
                             "Europe/Amsterdam)",
                             NULL);
                goto out;
        }
        if (name)
                r = store_site_put(api->store, json_string_value(slug), json_string_value(name),
                                   &x);
        if (r == 0 && tz)
                r = store_site_set_tz(api->store, json_string_value(slug), json_string_value(tz));
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "no such site (give --name to make it)", NULL);
                goto out;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        struct site *xs = NULL;
        size_t n = 0;
        if (store_sites(api->store, &xs, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        for (size_t i = 0; i < n; i++)
                if (strcmp(xs[i].slug, json_string_value(slug)) == 0)
                        x = xs[i];
        free(xs);
        json_respond(resp, 200, json_pack("{s:o}", "data", site_json(&x)));
out:
        json_decref(body);
}

/* ---- the Tilaa API's users ---- */

static json_t *api_user_json(const struct api_user *u, const char *account)
{
        char created[21];
        util_iso8601_utc(u->created_at, created);
        return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s}", "id", (json_int_t)u->id, "account",
                         account, "email", u->email, "first_name", u->first_name, "last_name",
                         u->last_name, "created_at", created);
}

static int person_ok(const char *s)
{
        if (strlen(s) >= STORE_PERSON_MAX)
                return 0;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return 0;
        return 1;
}

static void api_user_create(struct api *api, const char *name, const struct http_req *req,
                            struct http_resp *resp)
{
        struct account a;
        struct api_user u = { 0 }, got;
        json_t *body, *v;
        char email[255];
        if (api_body_json(req, resp, &body) < 0)
                return;
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                goto out;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        v = json_object_get(body, "email");
        if (!json_is_string(v) || tilaa_email(json_string_value(v), email) < 0) {
                json_invalid(resp, "email", "email must be an e-mail address", NULL);
                goto out;
        }
        v = json_object_get(body, "password");
        if (!json_is_string(v) || json_string_length(v) < 8 ||
            json_string_length(v) > APIUSER_PASSWORD_MAX ||
            strlen(json_string_value(v)) != json_string_length(v)) {
                json_invalid(resp, "password", "password must be 8 to 1024 bytes", NULL);
                goto out;
        }
        const char *pw = json_string_value(v);
        static const char *const names[] = { "first_name", "last_name" };
        char *dst[] = { u.first_name, u.last_name };
        for (int i = 0; i < 2; i++) {
                v = json_object_get(body, names[i]);
                if (!v || json_is_null(v))
                        continue;
                if (!json_is_string(v) || !person_ok(json_string_value(v))) {
                        char msg[96];
                        snprintf(msg, sizeof(msg), "%s must be at most %d printable bytes",
                                 names[i], STORE_PERSON_MAX - 1);
                        json_invalid(resp, names[i], msg, NULL);
                        goto out;
                }
                util_strlcpy(dst[i], json_string_value(v), STORE_PERSON_MAX);
        }
        u.account_id = a.id;
        util_strlcpy(u.email, email, sizeof(u.email));
        if (apiuser_hash(pw, u.hash) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        r = store_api_user_create(api->store, &u, &got);
        if (r == -EEXIST) {
                json_error(resp, 409, "conflict", "an API user with this e-mail exists",
                           json_pack("{s:s}", "field", "email"));
                goto out;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        log_info("account %s: API user %s created", a.name, got.email);
        json_respond(resp, 201, json_pack("{s:o}", "data", api_user_json(&got, a.name)));
out:
        OPENSSL_cleanse(u.hash, sizeof(u.hash));
        json_decref(body);
}

static void api_user_list(struct api *api, const char *name, struct http_resp *resp)
{
        struct account a;
        struct api_user *us = NULL;
        size_t n = 0;
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "account not found", NULL);
                return;
        }
        if (r < 0 || store_api_user_list(api->store, a.id, &us, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, api_user_json(&us[i], a.name));
        free(us);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void api_user_delete(struct api *api, const char *name, const char *email_in,
                            struct http_resp *resp)
{
        struct account a;
        char email[255];
        int r = store_account_by_name(api->store, name, &a);
        if (r == -ENOENT || tilaa_email(email_in, email) < 0) {
                json_error(resp, 404, "not_found", r == -ENOENT ? "account not found"
                                                                 : "API user not found", NULL);
                return;
        }
        if (r == 0)
                r = store_api_user_delete(api->store, a.id, email);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "API user not found", NULL);
                return;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        log_info("account %s: API user %s deleted", a.name, email);
        json_respond(resp, 204, NULL);
}

/* ---- the OS image catalog ---- */

static int valid_image_slug(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n >= TMSG_STR || s[0] == '-' || s[0] == '.')
                return 0;
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
                      *c == '.' || *c == '_'))
                        return 0;
        return 1;
}

static int valid_image_url(const char *u)
{
        size_t n = strlen(u);
        if (n >= TMSG_URL)
                return 0;
        if (strncmp(u, "file:///", 8) != 0 && strncmp(u, "http://", 7) != 0 &&
            strncmp(u, "https://", 8) != 0)
                return 0;
        for (const unsigned char *c = (const unsigned char *)u; *c; c++)
                if (*c <= ' ' || *c == 0x7f)
                        return 0;
        return 1;
}

static json_t *image_json(const struct image *g)
{
        char created[21];
        util_iso8601_utc(g->created_at, created);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:s}", "slug", g->slug, "name", g->name,
                         "url", g->url, "sha256", g->sha256, "format", g->format, "min_disk_gb",
                         (json_int_t)g->min_disk_gb, "created_at", created);
}

static void image_list(struct api *api, struct http_resp *resp)
{
        struct image *gs = NULL;
        size_t n = 0;
        if (store_image_list(api->store, &gs, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, image_json(&gs[i]));
        free(gs);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void image_add(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        static const char *const formats[] = { "qcow2", "raw", NULL };
        struct image g = { .format = "qcow2" };
        json_t *body, *v;
        const char *str;

        if (api_body_json(req, resp, &body) < 0)
                return;
        v = json_object_get(body, "slug");
        if (!json_is_string(v) || !valid_image_slug((str = json_string_value(v)))) {
                json_invalid(resp, "slug",
                             "slug must be 1 to 63 of a-z, 0-9, '-', '.' and '_', not starting "
                             "with '-' or '.'",
                             NULL);
                goto out;
        }
        snprintf(g.slug, sizeof(g.slug), "%s", str);
        v = json_object_get(body, "name");
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= sizeof(g.name)) {
                json_invalid(resp, "name", "name must be a string of 1 to 127 bytes", NULL);
                goto out;
        }
        snprintf(g.name, sizeof(g.name), "%s", json_string_value(v));
        v = json_object_get(body, "url");
        if (!json_is_string(v) || !valid_image_url((str = json_string_value(v)))) {
                json_invalid(resp, "url",
                             "url must be a file:///, http:// or https:// URL of under 2048 bytes "
                             "without spaces",
                             NULL);
                goto out;
        }
        snprintf(g.url, sizeof(g.url), "%s", str);
        v = json_object_get(body, "sha256");
        str = json_is_string(v) ? json_string_value(v) : "";
        if (strlen(str) != 64 || strspn(str, "0123456789abcdefABCDEF") != 64) {
                json_invalid(resp, "sha256", "sha256 must be 64 hexadecimal digits", NULL);
                goto out;
        }
        for (size_t i = 0; i < 64; i++)
                g.sha256[i] = (char)(str[i] >= 'A' && str[i] <= 'F' ? str[i] - 'A' + 'a' : str[i]);
        v = json_object_get(body, "format");
        if (v && !json_is_null(v)) {
                if (!json_is_string(v) || (strcmp(json_string_value(v), "qcow2") != 0 &&
                                           strcmp(json_string_value(v), "raw") != 0)) {
                        json_invalid(resp, "format", "Invalid format specified", formats);
                        goto out;
                }
                snprintf(g.format, sizeof(g.format), "%s", json_string_value(v));
        }
        v = json_object_get(body, "min_disk_gb");
        if (v && !json_is_null(v)) {
                if (!json_is_integer(v) || json_integer_value(v) < 0 ||
                    json_integer_value(v) > 65536) {
                        json_invalid(resp, "min_disk_gb",
                                     "min_disk_gb must be an integer from 0 to 65536", NULL);
                        goto out;
                }
                g.min_disk_gb = (uint32_t)json_integer_value(v);
        }
        int r = store_image_add(api->store, &g);
        if (r == -EEXIST) {
                json_error(resp, 409, "conflict",
                           "an image with this slug exists (remove it first to replace it)",
                           json_pack("{s:s}", "field", "slug"));
                goto out;
        }
        if (r < 0 || store_image_get(api->store, g.slug, &g) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        log_info("image %s: added (%s, sha256 %.12s...)", g.slug, g.url, g.sha256);
        json_respond(resp, 201, json_pack("{s:o}", "data", image_json(&g)));
out:
        json_decref(body);
}

static void image_remove(struct api *api, const char *slug, struct http_resp *resp)
{
        int r = store_image_remove(api->store, slug);
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "no such image", NULL);
        else if (r < 0)
                json_error(resp, 500, "internal_error", "internal error", NULL);
        else {
                log_info("image %s: removed from the catalog", slug);
                json_respond(resp, 204, NULL);
        }
}

/* ---- public address pools (one per site) ---- */

static json_t *pool_json(const struct ip_pool *p)
{
        char created[21];
        util_iso8601_utc(p->created_at, created);
        return json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:I, s:s}", "site", p->site, "ipv4",
                         p->ipv4, "gateway4", p->gateway4, "ipv6", p->ipv6[0] ? p->ipv6 : NULL,
                         "gateway6", p->gateway6[0] ? p->gateway6 : NULL, "used",
                         (json_int_t)p->used, "created_at", created);
}

static void pool_list(struct api *api, struct http_resp *resp)
{
        struct ip_pool *ps = NULL;
        size_t n = 0;
        if (store_pool_list(api->store, &ps, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, pool_json(&ps[i]));
        free(ps);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

/* A pool's prefix (IPv4 /8../30 or IPv6 /32../126, host bits zero) and
 * its gateway (inside it, neither its first nor its last address) from
 * body: 0, or -EINVAL after answering 422 on the field at fault. */
static int pool_family(json_t *body, const char *field, const char *gw_field, int v6,
                       char *prefix_out, char *gw_out, size_t len, struct http_resp *resp)
{
        const unsigned min = v6 ? 32 : 8, max = v6 ? 126 : 30;
        json_t *v = json_object_get(body, field), *g = json_object_get(body, gw_field);
        struct ipam_prefix p;
        struct ipam_addr a, last;
        char why[160] = "must be a string", msg[256];
        int ok = json_is_string(v) &&
                 ipam_prefix_parse(json_string_value(v), &p, why, sizeof(why)) == 0;
        if (ok && ((p.addr.len == 16) != v6 || p.bits < min || p.bits > max)) {
                snprintf(why, sizeof(why), "must be an %s prefix from /%u to /%u",
                         v6 ? "IPv6" : "IPv4", min, max);
                ok = 0;
        }
        if (!ok) {
                snprintf(msg, sizeof(msg), "%s %s (as %s)", field, why,
                         v6 ? "2001:db8::/64" : "203.0.113.0/24");
                json_invalid(resp, field, msg, NULL);
                return -EINVAL;
        }
        ipam_prefix_last(&p, &last);
        if (!json_is_string(g) || ipam_addr_parse(json_string_value(g), &a) < 0 ||
            !ipam_prefix_contains(&p, &a) || ipam_addr_cmp(&a, &p.addr) == 0 ||
            ipam_addr_cmp(&a, &last) == 0) {
                snprintf(msg, sizeof(msg), "%s must be an address inside %s, neither its first "
                                           "nor its last",
                         gw_field, json_is_string(v) ? json_string_value(v) : field);
                json_invalid(resp, gw_field, msg, NULL);
                return -EINVAL;
        }
        /* kept in the canonical text form */
        ipam_prefix_format(&p, prefix_out, len);
        ipam_addr_format(&a, gw_out, len);
        return 0;
}

static void pool_add(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        struct ip_pool p = { 0 }, got;
        json_t *body, *v;
        char msg[256];

        if (api_body_json(req, resp, &body) < 0)
                return;
        v = json_object_get(body, "site");
        if (!json_is_string(v) || !valid_slug(json_string_value(v))) {
                json_invalid(resp, "site", "site must be a site's slug: 1 to 63 of a-z, 0-9 and '-'",
                             NULL);
                goto out;
        }
        snprintf(p.site, sizeof(p.site), "%s", json_string_value(v));
        if (pool_family(body, "ipv4", "gateway4", 0, p.ipv4, p.gateway4, sizeof(p.ipv4), resp) < 0)
                goto out;
        v = json_object_get(body, "ipv6");
        json_t *g6 = json_object_get(body, "gateway6");
        if ((v && !json_is_null(v)) || (g6 && !json_is_null(g6))) {
                if (pool_family(body, "ipv6", "gateway6", 1, p.ipv6, p.gateway6, sizeof(p.ipv6),
                                resp) < 0)
                        goto out;
        }
        int r = store_pool_add(api->store, &p, &got);
        if (r == -ENOENT) {
                snprintf(msg, sizeof(msg), "no site %s (sites are made when an agent names one, "
                                           "or with POST /v1/sites)",
                         p.site);
                json_invalid(resp, "site", msg, NULL);
        } else if (r == -EEXIST) {
                snprintf(msg, sizeof(msg), "site %s has a pool (%s): remove it first to replace "
                                           "it",
                         p.site, got.ipv4);
                json_error(resp, 409, "conflict", msg, json_pack("{s:s}", "field", "site"));
        } else if (r == -EADDRINUSE) {
                int v4 = 1;
                struct ipam_prefix a, b;
                if (p.ipv6[0] && got.ipv6[0] && ipam_prefix_parse(p.ipv6, &a, NULL, 0) == 0 &&
                    ipam_prefix_parse(got.ipv6, &b, NULL, 0) == 0 && ipam_prefix_overlap(&a, &b))
                        v4 = 0;
                snprintf(msg, sizeof(msg), "%s overlaps the pool of site %s (%s)",
                         v4 ? p.ipv4 : p.ipv6, got.site, v4 ? got.ipv4 : got.ipv6);
                json_invalid(resp, v4 ? "ipv4" : "ipv6", msg, NULL);
        } else if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
        } else {
                log_info("site %s: public address pool %s%s%s added", p.site, p.ipv4,
                         p.ipv6[0] ? " and " : "", p.ipv6);
                json_respond(resp, 201, json_pack("{s:o}", "data", pool_json(&got)));
        }
out:
        json_decref(body);
}

static void pool_remove(struct api *api, const char *site, struct http_resp *resp)
{
        int r = store_pool_remove(api->store, site);
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "this site has no address pool", NULL);
        else if (r == -EBUSY)
                json_error(resp, 409, "conflict",
                           "guests of this site have addresses from its pool: delete them first",
                           NULL);
        else if (r < 0)
                json_error(resp, 500, "internal_error", "internal error", NULL);
        else {
                log_info("site %s: public address pool removed", site);
                json_respond(resp, 204, NULL);
        }
}

static int token_ok(const struct api *api, const char *header)
{
        size_t n;
        if (!api->admin_token || !api->admin_token[0])
                return 1;
        if (!header || strncasecmp(header, "Bearer ", 7) != 0)
                return 0;
        header += 7;
        n = strlen(api->admin_token);
        return strlen(header) == n && CRYPTO_memcmp(header, api->admin_token, n) == 0;
}

static void admin_route(void *ud, const struct http_req *req, struct http_resp *resp);

void api_admin_handle(void *ud, const struct http_req *req, struct http_resp *resp)
{
        int64_t t0 = util_mono_us();
        admin_route(ud, req, resp);
        metrics_request(METRICS_ADMIN, resp->status, util_mono_us() - t0);
}

static void metrics_get(struct api *api, struct http_resp *resp)
{
        char *text = metrics_render(api->store, api->lc, api->dns, util_now_ms(),
                                    api->host_timeout_ms);
        if (!text) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        resp->status = 200;
        resp->body = text;
        resp->body_len = strlen(text);
        resp->content_type = "text/plain; version=0.0.4";
}

static void admin_route(void *ud, const struct http_req *req, struct http_resp *resp)
{
        struct api *api = ud;
        const char *p = req->path, *m = req->method;

        if (req->too_large) {
                json_error(resp, 413, "payload_too_large", "request body too large", NULL);
                return;
        }
        if (!token_ok(api, req->authorization)) {
                json_error(resp, 401, "unauthorized", "Invalid or missing admin token", NULL);
                return;
        }
        if (strcmp(p, "/metrics") == 0) {
                if (strcmp(m, "GET") == 0)
                        metrics_get(api, resp);
                else
                        api_route_error(req, resp, 1, "GET");
                return;
        }
        if (strcmp(p, "/v1/accounts") == 0) {
                if (strcmp(m, "POST") == 0)
                        account_create(api, req, resp);
                else if (strcmp(m, "GET") == 0)
                        account_list(api, resp);
                else
                        api_route_error(req, resp, 1, "GET, POST");
                return;
        }
        if (strcmp(p, "/v1/sites") == 0) {
                if (strcmp(m, "GET") == 0)
                        site_list(api, resp);
                else if (strcmp(m, "POST") == 0)
                        site_put(api, req, resp);
                else
                        api_route_error(req, resp, 1, "GET, POST");
                return;
        }
        if (strcmp(p, "/v1/images") == 0) {
                if (strcmp(m, "GET") == 0)
                        image_list(api, resp);
                else if (strcmp(m, "POST") == 0)
                        image_add(api, req, resp);
                else
                        api_route_error(req, resp, 1, "GET, POST");
                return;
        }
        const char *ipre = "/v1/images/";
        if (strncmp(p, ipre, strlen(ipre)) == 0) {
                const char *slug = p + strlen(ipre);
                if (!valid_image_slug(slug))
                        api_route_error(req, resp, 0, NULL);
                else if (strcmp(m, "DELETE") == 0)
                        image_remove(api, slug, resp);
                else
                        api_route_error(req, resp, 1, "DELETE");
                return;
        }
        if (strcmp(p, "/v1/ip_pools") == 0) {
                if (strcmp(m, "GET") == 0)
                        pool_list(api, resp);
                else if (strcmp(m, "POST") == 0)
                        pool_add(api, req, resp);
                else
                        api_route_error(req, resp, 1, "GET, POST");
                return;
        }
        const char *ppre = "/v1/ip_pools/";
        if (strncmp(p, ppre, strlen(ppre)) == 0) {
                const char *site = p + strlen(ppre);
                if (!valid_slug(site))
                        api_route_error(req, resp, 0, NULL);
                else if (strcmp(m, "DELETE") == 0)
                        pool_remove(api, site, resp);
                else
                        api_route_error(req, resp, 1, "DELETE");
                return;
        }
        if (strcmp(p, "/v1/nodes") == 0) {
                if (strcmp(m, "GET") == 0)
                        node_list(api, resp);
                else
                        api_route_error(req, resp, 1, "GET");
                return;
        }
        const char *npre = "/v1/nodes/";
        if (strncmp(p, npre, strlen(npre)) == 0) {
                char name[TMSG_STR], verb[16] = "";
                const char *rest = p + strlen(npre);
                size_t len = strcspn(rest, "/");
                if (len == 0 || len >= sizeof(name)) {
                        api_route_error(req, resp, 0, NULL);
                        return;
                }
                memcpy(name, rest, len);
                name[len] = '\0';
                if (rest[len] == '/') {
                        if (strlen(rest + len + 1) >= sizeof(verb)) {
                                api_route_error(req, resp, 0, NULL);
                                return;
                        }
                        snprintf(verb, sizeof(verb), "%s", rest + len + 1);
                }
                if (!verb[0]) {
                        if (strcmp(m, "GET") == 0)
                                node_show(api, name, resp);
                        else if (strcmp(m, "DELETE") == 0)
                                node_remove(api, name, resp);
                        else
                                api_route_error(req, resp, 1, "GET, DELETE");
                } else if (strcmp(verb, "drain") == 0 || strcmp(verb, "undrain") == 0) {
                        if (strcmp(m, "POST") == 0)
                                node_drain(api, name, verb[0] == 'd', resp);
                        else
                                api_route_error(req, resp, 1, "POST");
                } else {
                        api_route_error(req, resp, 0, NULL);
                }
                return;
        }
        if (strcmp(p, "/v1/prices") == 0) {
                if (strcmp(m, "GET") == 0)
                        price_list(api, resp);
                else if (strcmp(m, "POST") == 0)
                        price_set(api, req, resp);
                else
                        api_route_error(req, resp, 1, "GET, POST");
                return;
        }
        const char *pre = "/v1/accounts/";
        size_t pl = strlen(pre);
        if (strncmp(p, pre, pl) == 0 && strstr(p + pl, "/api_users")) {
                /* /v1/accounts/NAME/api_users[/EMAIL] */
                const char *rest = p + pl, *slash = strchr(rest, '/');
                size_t len = (size_t)(slash - rest);
                const char *tail = slash + 1;
                char name[65];
                if (len == 0 || len >= sizeof(name) || strncmp(tail, "api_users", 9) != 0 ||
                    (tail[9] != '\0' && (tail[9] != '/' || !tail[10] || strchr(tail + 10, '/') ||
                                         strlen(tail + 10) > STORE_EMAIL_MAX))) {
                        api_route_error(req, resp, 0, NULL);
                        return;
                }
                memcpy(name, rest, len);
                name[len] = '\0';
                if (tail[9] == '/') {
                        if (strcmp(m, "DELETE") == 0)
                                api_user_delete(api, name, tail + 10, resp);
                        else
                                api_route_error(req, resp, 1, "DELETE");
                } else if (strcmp(m, "POST") == 0) {
                        api_user_create(api, name, req, resp);
                } else if (strcmp(m, "GET") == 0) {
                        api_user_list(api, name, resp);
                } else {
                        api_route_error(req, resp, 1, "GET, POST");
                }
                return;
        }
        if (strncmp(p, pre, pl) == 0) {
                /* /v1/accounts/NAME/credit */
                const char *rest = p + pl, *slash = strchr(rest, '/');
                size_t len = slash ? (size_t)(slash - rest) : 0;
                char name[65];
                if (slash && len > 0 && len < sizeof(name) && strcmp(slash + 1, "credit") == 0) {
                        memcpy(name, rest, len);
                        name[len] = '\0';
                        if (strcmp(m, "GET") == 0)
                                credit_show(api, name, req, resp);
                        else if (strcmp(m, "POST") == 0)
                                credit_add(api, name, req, resp);
                        else
                                api_route_error(req, resp, 1, "GET, POST");
                        return;
                }
        }
        if (strncmp(p, pre, pl) == 0) {
                /* /v1/accounts/NAME/keys[/KEY_ID] */
                const char *rest = p + pl, *slash = strchr(rest, '/');
                char name[65], key_id[ID_STR_MAX] = "";
                size_t len = slash ? (size_t)(slash - rest) : 0;
                const char *tail = slash ? slash + 1 : "";
                if (slash && len > 0 && len < sizeof(name) && strncmp(tail, "keys", 4) == 0 &&
                    (tail[4] == '\0' || (tail[4] == '/' && tail[5] && !strchr(tail + 5, '/') &&
                                          strlen(tail + 5) < sizeof(key_id)))) {
                        memcpy(name, rest, len);
                        name[len] = '\0';
                        if (tail[4] == '/') {
                                snprintf(key_id, sizeof(key_id), "%s", tail + 5);
                                if (strcmp(m, "DELETE") == 0)
                                        key_revoke(api, name, key_id, resp);
                                else
                                        api_route_error(req, resp, 1, "DELETE");
                        } else if (strcmp(m, "POST") == 0) {
                                key_create(api, name, req, resp);
                        } else if (strcmp(m, "GET") == 0) {
                                key_list(api, name, resp);
                        } else {
                                api_route_error(req, resp, 1, "GET, POST");
                        }
                        return;
                }
        }
        api_route_error(req, resp, 0, NULL);
}
