/* The Tilaa-compatible API (../shared/spec/tilaa-api.txt) on its own
 * listener (tilaa_listen). See api.h.
 *
 * Basic auth with API users (apiuser.h), form-encoded POST bodies
 * (form.h), and every answer a JSON object with "status": "OK" or
 * "ERROR": a "message" where useful and, for bad parameters, an "errors"
 * object naming every one of them (400). Unknown ids and other accounts'
 * ids are 404 alike; a failing store is 503, never 500 with internals.
 * Ids are the store's numbers; times go through tilaa_time() only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "apiuser.h"
#include "catalog.h"
#include "form.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "sshkey.h"
#include "tilaa.h"
#include "util.h"

#define TZ_DEFAULT   "Europe/Amsterdam" /* times of what belongs to no site */
#define ID_MAX       ((uint64_t)INT64_MAX)
#define LABEL_MAX    63
#define PASSWORD_LEN 16

/* a VM name ("for internal use"; tilaa_name_ok) fits the store's */
_Static_assert(TILAA_NAME_BYTES < STORE_VM_NAME_MAX, "Tilaa VM names fit struct vm");
#define NAME_RULE "name must be 1 to 64 printable characters, without control characters"

/* ---- the envelope ---- */

static void t_respond(struct http_resp *resp, int status, json_t *body)
{
        if (!body) {
                /* out of memory: a fixed, still valid answer */
                static const char oom[] = "{\"status\":\"ERROR\",\"message\":\"Out of memory\"}";
                resp->status = 503;
                resp->body = strdup(oom);
                resp->body_len = resp->body ? strlen(resp->body) : 0;
                resp->content_type = "application/json";
                return;
        }
        json_respond(resp, status, body);
}

/* {"status": "OK", ...obj} with 200; obj may be NULL (stolen). */
static void t_ok(struct http_resp *resp, json_t *obj)
{
        json_t *b = obj ? obj : json_object();
        if (b && json_object_set_new(b, "status", json_string("OK")) < 0) {
                json_decref(b);
                b = NULL;
        }
        t_respond(resp, 200, b);
}

static void t_ok_msg(struct http_resp *resp, const char *message)
{
        t_ok(resp, json_pack("{s:s}", "message", message));
}

static void t_error(struct http_resp *resp, int status, const char *message)
{
        t_respond(resp, status, json_pack("{s:s, s:s}", "status", "ERROR", "message", message));
}

static void t_unavailable(struct http_resp *resp)
{
        t_error(resp, 503, "The service is temporarily unavailable, please try again later");
}

/* 400 with every bad parameter (errors is stolen). */
static void t_invalid(struct http_resp *resp, json_t *errors)
{
        t_respond(resp, 400,
                  json_pack("{s:s, s:s, s:o}", "status", "ERROR", "message",
                            "One or more parameters are invalid", "errors", errors));
}

static void bad(json_t *errors, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void bad(json_t *errors, const char *param, const char *fmt, ...)
{
        char msg[256];
        va_list ap;
        if (json_object_get(errors, param))
                return; /* the first problem of a parameter is the one named */
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        json_object_set_new(errors, param, json_string(msg));
}

static void not_found(struct http_resp *resp, const char *what)
{
        char msg[96];
        snprintf(msg, sizeof(msg), "%s not found", what);
        t_error(resp, 404, msg);
}

/* A store error: unknown is 404, the rest 503 (logged by the store). */
static void store_failed(struct http_resp *resp, int r, const char *what)
{
        if (r == -ENOENT)
                not_found(resp, what);
        else
                t_unavailable(resp);
}

/* The request's form: 0 with *ret, or -1 after answering 415 or 400. */
static int read_form(const struct http_req *req, struct http_resp *resp, struct form **ret)
{
        static const char urlenc[] = "application/x-www-form-urlencoded";
        static const char multi[] = "multipart/form-data";
        char why[200] = "";
        int r, multipart = 0;
        if (req->body_len > 0) {
                const char *c = req->content_type;
                size_t n = c ? strcspn(c, ";") : 0;
                while (n > 0 && (c[n - 1] == ' ' || c[n - 1] == '\t'))
                        n--;
                multipart = c && n == strlen(multi) && strncasecmp(c, multi, n) == 0;
                if (!multipart && (!c || n != strlen(urlenc) || strncasecmp(c, urlenc, n) != 0)) {
                        t_error(resp, 415,
                                "The request body must be application/x-www-form-urlencoded "
                                "(curl -d) or multipart/form-data (curl -F)");
                        return -1;
                }
        }
        if (multipart)
                r = form_decode_multipart(req->content_type, req->body, req->body_len, ret, why,
                                          sizeof(why));
        else
                r = form_decode(req->body, req->body_len, ret, why, sizeof(why));
        if (r == -ENOMEM) {
                t_unavailable(resp);
                return -1;
        }
        if (r < 0) {
                char msg[240];
                snprintf(msg, sizeof(msg), "Malformed form body: %s", why);
                t_error(resp, 400, msg);
                return -1;
        }
        return 0;
}

/* A parameter's value, NULL when absent or empty: SDKs send every field,
 * empty when unset, so an empty optional parameter is one not given (and
 * an empty required one is missing). */
static const char *param(const struct form *f, const char *name)
{
        const char *v = form_get(f, name);
        return v && v[0] ? v : NULL;
}

/* An optional whole number parameter: 1 when given and valid (*ret), 0
 * when absent, -1 after naming it in errors. */
static int num_param(const struct form *f, const char *name, uint64_t min, uint64_t max,
                     json_t *errors, uint64_t *ret)
{
        const char *v = param(f, name);
        if (!v)
                return 0;
        if (tilaa_uint(v, max, ret) < 0 || *ret < min) {
                bad(errors, name, "%s must be a whole number from %llu to %llu", name,
                    (unsigned long long)min, (unsigned long long)max);
                return -1;
        }
        return 1;
}

/* A label or profile name: 1..max bytes, no control characters. */
static int text_ok(const char *s, size_t max)
{
        size_t n = strlen(s);
        if (n == 0 || n > max)
                return 0;
        for (const unsigned char *p = (const unsigned char *)s; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return 0;
        return 1;
}

static int random_password(char out[PASSWORD_LEN + 1])
{
        static const char set[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        size_t n = 0;
        while (n < PASSWORD_LEN) {
                unsigned char b[32];
                if (util_random(b, sizeof(b)) < 0)
                        return -EIO;
                for (size_t i = 0; i < sizeof(b) && n < PASSWORD_LEN; i++)
                        if (b[i] < 256 - 256 % (sizeof(set) - 1)) /* no bias */
                                out[n++] = set[b[i] % (sizeof(set) - 1)];
        }
        out[n] = '\0';
        return 0;
}

static json_t *time_json(int64_t ms, const char *tz)
{
        char t[TILAA_TIME_LEN];
        tilaa_time(ms, tz, t);
        return json_string(t);
}

/* ---- virtual machines ---- */

static json_t *vm_json(const struct api *api, const struct vm *v, const struct vm_tilaa *t,
                       const struct nic *nics, size_t n_nics, int64_t now)
{
        const char *native = api_vps_status(v, now, api->host_timeout_ms);
        json_t *net = json_array();
        for (size_t i = 0; net && i < n_nics; i++) {
                if (nics[i].network_id != 0)
                        continue; /* private networks are not in Tilaa's model */
                /* one entry per address: ids 2n-1 (IPv4) and 2n (IPv6) of NIC n */
                if (nics[i].ipv4[0])
                        json_array_append_new(net, json_pack("{s:I, s:i, s:s, s:s}", "id",
                                                             (json_int_t)(nics[i].id * 2 - 1),
                                                             "family", 4, "address", nics[i].ipv4,
                                                             "dns_name", t->dns_name));
                if (nics[i].ipv6[0])
                        json_array_append_new(net, json_pack("{s:I, s:i, s:s, s:s}", "id",
                                                             (json_int_t)(nics[i].id * 2), "family",
                                                             6, "address", nics[i].ipv6, "dns_name",
                                                             t->dns_name));
        }
        return json_pack(
            "{s:I, s:s, s:{s:I, s:I}, s:I, s:{s:I, s:s}, s:{s:I, s:s}, s:{s:I, s:s}, s:o,"
            " s:{s:s, s:s}, s:i, s:i, s:s, s:o, s:o}",
            "id", (json_int_t)v->id, "name", v->name, "cpu", "count", (json_int_t)v->vcpus, "cap",
            (json_int_t)(v->cpu_cap ? v->cpu_cap : 100), "ram", (json_int_t)v->ram_mb, "storage",
            "size", (json_int_t)v->disk_gb, "type", storage_to_string(v->storage), "site", "id",
            (json_int_t)t->site_id, "name", t->site_name, "template", "id",
            (json_int_t)t->template_id, "name", t->template_name, "network",
            net ? net : json_array(), "admin", "account", t->admin_password[0] ? "root" : "admin",
            "initial_password", t->admin_password, "is_managed", 0, "locked", tilaa_locked(native),
            "status", tilaa_status(native, v->rescue), "created",
            time_json(v->created_at, t->site_tz), "cancelled",
            t->cancel_at ? time_json(t->cancel_at, t->site_tz) : json_null());
}

/* One VM of the account with its Tilaa part: 0, or -1 after answering. */
static int vm_load(struct api *api, uint64_t account, uint64_t id, struct vm *v, struct vm_tilaa *t,
                   struct http_resp *resp)
{
        struct vm_tilaa *ts = NULL;
        size_t n = 0;
        int r = id ? store_vm_get(api->store, account, id, v) : -ENOENT;
        if (r == 0)
                r = store_vm_tilaa_list(api->store, account, id, &ts, &n);
        if (r < 0) {
                store_failed(resp, r, "Virtual machine");
                return -1;
        }
        *t = ts[0];
        free(ts);
        return 0;
}

static json_t *vm_json_nics(struct api *api, const struct vm *v, const struct vm_tilaa *t,
                            int64_t now, int *ret_err)
{
        struct nic *nics = NULL;
        size_t n = 0;
        if (store_vm_nics(api->store, v->id, &nics, &n) < 0) {
                *ret_err = 1;
                return NULL;
        }
        json_t *j = vm_json(api, v, t, nics, n, now);
        free(nics);
        if (!j)
                *ret_err = 1;
        return j;
}

static void vm_list(struct api *api, uint64_t account, struct http_resp *resp)
{
        struct vm *vms = NULL;
        struct vm_tilaa *ts = NULL;
        size_t n = 0, nt = 0, k = 0;
        int64_t now = util_now_ms();
        int err = 0;
        if (store_vm_list(api->store, account, &vms, &n) < 0 ||
            store_vm_tilaa_list(api->store, account, 0, &ts, &nt) < 0) {
                free(vms);
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n && !err; i++) {
                /* both by id: a VM made between the two reads is left out */
                while (k < nt && ts[k].vm_id < vms[i].id)
                        k++;
                if (k == nt || ts[k].vm_id != vms[i].id)
                        continue;
                json_t *one = vm_json_nics(api, &vms[i], &ts[k], now, &err);
                if (one)
                        json_array_append_new(arr, one);
        }
        free(vms);
        free(ts);
        if (err || !arr) {
                json_decref(arr);
                t_unavailable(resp);
                return;
        }
        t_ok(resp, json_pack("{s:o}", "virtual_machines", arr));
}

static void vm_view(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        int err = 0;
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        json_t *one = vm_json_nics(api, &v, &t, util_now_ms(), &err);
        if (!one) {
                t_unavailable(resp);
                return;
        }
        t_ok(resp, json_pack("{s:o}", "virtual_machine", one));
}

static void ram_sizes_text(char *buf, size_t len)
{
        const struct size_def *sz;
        size_t n = catalog_sizes(&sz), off = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < n && off < len; i++)
                off += (size_t)snprintf(buf + off, len - off, "%s%u", i ? ", " : "", sz[i].ram_mb);
}

static void storage_sizes_text(char *buf, size_t len)
{
        size_t n, off = 0;
        const uint32_t *s = catalog_storage_sizes(&n);
        buf[0] = '\0';
        for (size_t i = 0; i < n && off < len; i++)
                off += (size_t)snprintf(buf + off, len - off, "%s%u", i ? ", " : "", s[i]);
}

static const struct size_def *ram_param(const struct form *f, json_t *errors, int required,
                                        int *given)
{
        char sizes[128];
        uint64_t v;
        *given = 0;
        if (!param(f, "ram")) {
                if (required)
                        bad(errors, "ram", "ram is required");
                return NULL;
        }
        *given = 1;
        const struct size_def *sz = tilaa_uint(param(f, "ram"), UINT32_MAX, &v) == 0
                                        ? catalog_size_by_ram((uint32_t)v)
                                        : NULL;
        if (!sz) {
                ram_sizes_text(sizes, sizeof(sizes));
                bad(errors, "ram", "Invalid RAM size; valid sizes (MB): %s", sizes);
        }
        return sz;
}

/* storage: 0 when absent (or invalid, named in errors). */
static uint32_t storage_param(const struct form *f, json_t *errors, int required)
{
        char sizes[128];
        uint64_t v;
        size_t n;
        const uint32_t *ok = catalog_storage_sizes(&n);
        if (!param(f, "storage")) {
                if (required)
                        bad(errors, "storage", "storage is required");
                return 0;
        }
        if (tilaa_uint(param(f, "storage"), UINT32_MAX, &v) == 0)
                for (size_t i = 0; i < n; i++)
                        if (ok[i] == v)
                                return (uint32_t)v;
        storage_sizes_text(sizes, sizeof(sizes));
        bad(errors, "storage", "Invalid storage size; valid sizes (GB): %s", sizes);
        return 0;
}

/* template: 1 with *img, 0 when absent, -1 when invalid (named), -EIO. */
static int template_param(struct api *api, const struct form *f, json_t *errors, struct image *img)
{
        uint64_t num;
        int r = num_param(f, "template", 1, ID_MAX, errors, &num);
        if (r <= 0)
                return r;
        r = store_image_by_num(api->store, num, img);
        if (r == -ENOENT) {
                bad(errors, "template", "Invalid template; GET /v1/templates lists them");
                return -1;
        }
        return r < 0 ? -EIO : 1;
}

static void vm_add(struct api *api, uint64_t account, const struct form *f, struct http_resp *resp)
{
        json_t *errors = json_object();
        char name[STORE_VM_NAME_MAX], dns[255], password[PASSWORD_LEN + 1];
        char site_slug[TMSG_STR] = "";
        struct image img;
        struct snapshot snap;
        struct metadata md = {0};
        uint64_t v;
        int given, r, have_img = 0, io = 0;
        enum storage storage = STORAGE_SSD;

        if (!errors) {
                t_unavailable(resp);
                return;
        }
        const char *nm = param(f, "name");
        char auto_name[16], label[64];
        uint8_t b[4];
        if (util_random(b, sizeof(b)) < 0)
                io = 1;
        util_hex(b, sizeof(b), auto_name + 4);
        memcpy(auto_name, "vps-", 4);
        if (nm && !tilaa_name_ok(nm))
                bad(errors, "name", NAME_RULE);
        util_strlcpy(name, nm ? nm : auto_name, sizeof(name));
        /* the default dns_name's label: the name made DNS-safe, else the
         * auto-generated one */
        if (tilaa_dns_label(name, label) < 0)
                util_strlcpy(label, auto_name, sizeof(label));
        const char *dn = param(f, "dns_name");
        if (dn && tilaa_dns_name(dn, dns) < 0)
                bad(errors, "dns_name",
                    "dns_name must be a DNS name (labels of 1 to 63 of "
                    "a-z, 0-9 and '-', at most 253 bytes)");
        const struct size_def *sz = ram_param(f, errors, 1, &given);
        uint32_t disk = storage_param(f, errors, 1);
        const char *st = param(f, "storage_type");
        if (!st)
                bad(errors, "storage_type", "storage_type is required");
        else if (storage_from_string(st, &storage) < 0)
                bad(errors, "storage_type", "Invalid storage type; valid types: hdd, ssd");
        /* snapshot (then the template is the snapshot's) or template */
        uint64_t snap_id = 0;
        r = num_param(f, "snapshot", 1, ID_MAX, errors, &snap_id);
        if (r == 1) {
                struct vm src;
                int g = store_snap_get(api->store, account, snap_id, &snap);
                if (g == 0)
                        g = store_vm_get(api->store, account, snap.vm_id, &src);
                if (g < 0 && g != -ENOENT)
                        io = 1;
                else if (g < 0)
                        bad(errors, "snapshot", "Invalid snapshot; GET /v1/snapshots lists them");
                else if (snap.state != SNAP_READY)
                        bad(errors, "snapshot", "The snapshot is %s, not ready",
                            snap_state_to_string(snap.state));
                else {
                        if (disk && disk < snap.disk_gb)
                                bad(errors, "storage",
                                    "The snapshot is of a %u GB disk: storage must be at least "
                                    "that",
                                    snap.disk_gb);
                        util_strlcpy(site_slug, src.site, sizeof(site_slug));
                        memset(&img, 0, sizeof(img));
                        util_strlcpy(img.slug, snap.image, sizeof(img.slug));
                        have_img = 2;
                }
        }
        struct image tpl;
        r = template_param(api, f, errors, &tpl);
        if (r == -EIO)
                io = 1;
        else if (r == 1 && have_img == 2 && strcmp(tpl.slug, img.slug) != 0)
                bad(errors, "template",
                    "The snapshot is of another template: leave template "
                    "out when giving snapshot");
        else if (r == 1 && !have_img) {
                img = tpl;
                have_img = 1;
                if (disk && img.min_disk_gb > disk)
                        bad(errors, "storage", "This template needs at least %u GB of storage",
                            img.min_disk_gb);
        } else if (r == 0 && !snap_id)
                bad(errors, "template", "template is required (unless snapshot is given)");
        /* site: one with hosts */
        r = num_param(f, "site", 1, ID_MAX, errors, &v);
        if (r == 1) {
                struct site *xs = NULL;
                size_t n = 0, i;
                if (store_sites(api->store, &xs, &n) < 0) {
                        io = 1;
                } else {
                        for (i = 0; i < n && !(xs[i].id == v && xs[i].hosts > 0); i++)
                                ;
                        if (i == n)
                                bad(errors, "site", "Invalid site; GET /v1/sites lists them");
                        else if (have_img == 2 && strcmp(site_slug, xs[i].slug) != 0)
                                bad(errors, "site",
                                    "The snapshot is in another site: leave "
                                    "site out when giving snapshot");
                        else
                                util_strlcpy(site_slug, xs[i].slug, sizeof(site_slug));
                        free(xs);
                }
                /* the document: "can only be used when at least one VPS
                 * already exists on your account" */
                struct vm_query q = {.account_id = account, .limit = 1};
                struct vm *one = NULL;
                size_t n_one = 0;
                if (store_vm_page(api->store, &q, &one, &n_one) < 0)
                        io = 1;
                else if (n_one == 0)
                        bad(errors, "site",
                            "site can only be given once the account has a virtual machine: "
                            "leave it out for the first (it is chosen for you)");
                free(one);
        } else if (have_img != 2) {
                site_slug[0] = '\0'; /* auto-selected */
        }
        uint64_t cpus = sz ? sz->vcpus : 1, cap = 100;
        num_param(f, "cpu_count", 1, CATALOG_CPU_MAX, errors, &cpus);
        num_param(f, "cpu_cap", CATALOG_CAP_MIN, 100, errors, &cap);
        /* Tasman's addition: a metadata profile's user_data as cloud-init's */
        uint64_t md_id;
        if (num_param(f, "metadata", 1, ID_MAX, errors, &md_id) == 1) {
                int g = store_metadata_get(api->store, account, md_id, &md);
                if (g == -ENOENT)
                        bad(errors, "metadata",
                            "Invalid metadata profile; GET /v1/metadata "
                            "lists them");
                else if (g < 0)
                        io = 1;
        }
        if (!dn && !json_object_get(errors, "name")) {
                char tmp[320];
                snprintf(tmp, sizeof(tmp), "%s.%s", label, api->dns_zone);
                if (tilaa_dns_name(tmp, dns) < 0)
                        bad(errors, "dns_name",
                            "No DNS name can be made from this name: give "
                            "dns_name");
        }
        if (io) {
                t_unavailable(resp);
                goto out;
        }
        if (json_object_size(errors) > 0) {
                t_invalid(resp, errors);
                errors = NULL;
                goto out;
        }
        if (random_password(password) < 0) {
                t_unavailable(resp);
                goto out;
        }
        /* the account's SSH keys (the oldest STORE_VM_SSH_KEYS_MAX) let root
         * in too */
        uint64_t key_ids[STORE_VM_SSH_KEYS_MAX];
        size_t n_keys = 0, nk = 0;
        struct vm_query kq = {.account_id = account, .limit = STORE_VM_SSH_KEYS_MAX};
        struct ssh_key *ks = NULL;
        if (store_sshkey_page(api->store, &kq, &ks, &nk) < 0) {
                t_unavailable(resp);
                goto out;
        }
        for (size_t i = 0; i < nk && n_keys < STORE_VM_SSH_KEYS_MAX; i++)
                key_ids[n_keys++] = ks[i].id;
        free(ks);
        char why[256] = "";
        struct vm_new nv = {
            .account_id = account,
            .ssh_keys = key_ids,
            .n_ssh_keys = n_keys,
            .name = name,
            .size = sz->slug,
            .image = img.slug,
            .site = site_slug[0] ? site_slug : NULL,
            .vcpus = (uint32_t)cpus,
            .ram_mb = sz->ram_mb,
            .disk_gb = disk,
            .storage = storage,
            .sched = api->sched.cpu_ratio > 0 ? &api->sched : NULL,
            .user_data = md.user_data && md.user_data[0] ? md.user_data : NULL,
            .dns_name = dns,
            .admin_password = password,
            .cpu_cap = (uint32_t)cap,
            .from_snap = have_img == 2 ? snap_id : 0,
            .why = why,
            .why_len = sizeof(why),
        };
        struct vm vm;
        int64_t now = util_now_ms();
        r = store_vm_create(api->store, &nv, now, now - api->host_timeout_ms, &vm);
        if (r == -EDQUOT) { /* prepaid: the credit does not cover it */
                char msg[400];
                snprintf(msg, sizeof(msg), "Insufficient funds: %s", why);
                t_error(resp, 402, msg);
                goto out;
        }
        if (r == -ENOSPC || r == -EADDRNOTAVAIL) {
                char msg[400];
                snprintf(msg, sizeof(msg), "%s (%s)",
                         r == -ENOSPC ? "No host has room for this virtual machine"
                                      : "No public address is left for a new virtual machine",
                         why);
                t_error(resp, 503, msg);
                goto out;
        }
        if (r == -ENOENT || r == -EINVAL) {
                bad(errors, "snapshot", "The snapshot is no longer ready");
                t_invalid(resp, errors);
                errors = NULL;
                goto out;
        }
        if (r < 0) {
                t_unavailable(resp);
                goto out;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        dns_kick(api->dns); /* its A/AAAA/PTR records */
        log_info("vm %llu: created through the Tilaa API for account %llu on host %llu",
                 (unsigned long long)vm.id, (unsigned long long)account,
                 (unsigned long long)vm.host_id);
        t_ok(resp, json_pack("{s:I, s:s}", "id", (json_int_t)vm.id, "message",
                             "The virtual machine has been created"));
out:
        free(md.user_data);
        json_decref(errors);
}

static const char cancelled_msg[] =
    "The virtual machine has been cancelled and cannot be modified: undo the "
    "cancellation first (POST .../cancel with date=0)";

static void vm_edit(struct api *api, uint64_t account, uint64_t id, const struct form *f,
                    struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        struct image img;
        json_t *errors;
        int given = 0;
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        if (t.cancel_at) {
                t_error(resp, 409, cancelled_msg);
                return;
        }
        if (!(errors = json_object())) {
                t_unavailable(resp);
                return;
        }
        const char *nm = param(f, "name");
        if (nm && !tilaa_name_ok(nm))
                bad(errors, "name", NAME_RULE);
        const struct size_def *sz = ram_param(f, errors, 0, &given);
        uint32_t disk = storage_param(f, errors, 0);
        int tr = template_param(api, f, errors, &img);
        uint64_t cpus = 0, cap = 0;
        int cg = num_param(f, "cpu_count", 1, CATALOG_CPU_MAX, errors, &cpus);
        int kg = num_param(f, "cpu_cap", CATALOG_CAP_MIN, 100, errors, &cap);
        int reinstall = tilaa_flag(param(f, "reinstall"));
        int confirm = tilaa_flag(param(f, "confirm_reinstall"));
        int new_image = tr == 1 && strcmp(img.slug, v.image) != 0;
        int shrink = disk && disk < v.disk_gb;
        if (tr == -EIO) {
                json_decref(errors);
                t_unavailable(resp);
                return;
        }
        if (tr == 1 && img.min_disk_gb > (disk ? disk : v.disk_gb))
                bad(errors, "template", "This template needs at least %u GB of storage",
                    img.min_disk_gb);
        if ((reinstall || new_image || shrink) && !confirm)
                bad(errors, "confirm_reinstall",
                    "This change re-installs the virtual machine (%s), which wipes its disk: "
                    "give confirm_reinstall=1 to go ahead; nothing was changed",
                    reinstall   ? "reinstall"
                    : new_image ? "a new template"
                                : "smaller storage");
        if (json_object_size(errors) > 0) {
                t_invalid(resp, errors);
                return;
        }
        json_decref(errors);
        /* a new RAM size resets the CPU defaults unless given */
        int ram_changed = sz && sz->ram_mb != v.ram_mb;
        const struct size_def *cur = catalog_size_by_ram(v.ram_mb);
        const struct size_def *nsz = sz ? sz : cur;
        char why[256] = "";
        struct vm_edit e = {
            .account_id = account,
            .vm_id = id,
            .name = nm,
            .resize = given || disk || cg == 1 || kg == 1,
            .size = nsz ? nsz->slug : v.size,
            .vcpus = cg == 1       ? (uint32_t)cpus
                     : ram_changed ? sz->vcpus
                                   : v.vcpus,
            .ram_mb = sz ? sz->ram_mb : v.ram_mb,
            .disk_gb = disk ? disk : v.disk_gb,
            .cpu_cap = kg == 1       ? (uint32_t)cap
                       : ram_changed ? 0
                                     : v.cpu_cap,
            .image = new_image ? img.slug : NULL,
            .reinstall = reinstall || shrink, /* a smaller disk is a new one */
            .sched = api->sched.cpu_ratio > 0 ? &api->sched : NULL,
            .why = why,
            .why_len = sizeof(why),
        };
        int r = store_vm_edit(api->store, &e, &v);
        if (r == -EDQUOT) {
                char msg[400];
                snprintf(msg, sizeof(msg), "Insufficient funds: %s", why);
                t_error(resp, 402, msg);
                return;
        }
        if (r == -ECANCELED) {
                t_error(resp, 409, cancelled_msg);
                return;
        }
        if (r == -ENOSPC) {
                char msg[400];
                snprintf(msg, sizeof(msg),
                         "The virtual machine's host has no room for this "
                         "size (%s)",
                         why);
                t_error(resp, 503, msg);
                return;
        }
        if (r < 0) {
                store_failed(resp, r, "Virtual machine");
                return;
        }
        if (api->hub)
                hub_notify(api->hub, v.host_id);
        dns_kick(api->dns);
        t_ok_msg(resp, "The virtual machine has been updated");
}

static const struct {
        const char *name;
        enum vm_action act;
} tasks[] = {
    {"start", VM_ACT_START},       {"stop", VM_ACT_SHUTDOWN}, {"restart", VM_ACT_REBOOT},
    {"poweroff", VM_ACT_POWEROFF}, {"rescue", VM_ACT_RESCUE},
};
#define N_TASKS (sizeof(tasks) / sizeof(tasks[0]))

/* head: a HEAD answers as the GET would, but runs no task (HEAD is safe:
 * a link checker must not power a VM off). */
static void vm_task(struct api *api, uint64_t account, uint64_t id, size_t task, int head,
                    struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        if (t.cancel_at) {
                t_error(resp, 409, cancelled_msg);
                return;
        }
        if (head) {
                t_ok(resp, NULL);
                return;
        }
        enum vm_action act = tasks[task].act;
        /* out of the rescue system: a start or restart boots its own again */
        if (v.rescue && (act == VM_ACT_START || act == VM_ACT_REBOOT))
                act = VM_ACT_UNRESCUE;
        int r = store_vm_action(api->store, account, id, act, NULL, &v);
        if (r < 0) {
                store_failed(resp, r, "Virtual machine");
                return;
        }
        if (api->hub)
                hub_notify(api->hub, v.host_id);
        t_ok(resp, NULL);
}

static void vm_cancel_dates(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        char dates[TILAA_CANCEL_DATES][11];
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        tilaa_cancel_dates(util_now_ms(), t.site_tz, dates);
        json_t *arr = json_array();
        for (int i = 0; arr && i < TILAA_CANCEL_DATES; i++)
                json_array_append_new(arr, json_string(dates[i]));
        t_ok(resp, arr ? json_pack("{s:o}", "dates", arr) : NULL);
}

static void vm_cancel(struct api *api, uint64_t account, uint64_t id, const struct form *f,
                      struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        char dates[TILAA_CANCEL_DATES][11];
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        const char *date = param(f, "date");
        json_t *errors = json_object();
        if (!errors) {
                t_unavailable(resp);
                return;
        }
        int64_t at = 0;
        if (!date) {
                bad(errors, "date", "date is required (YYYY-MM-DD, or 0 to undo)");
        } else if (strcmp(date, "0") != 0) {
                int y, m, d, i;
                tilaa_cancel_dates(util_now_ms(), t.site_tz, dates);
                for (i = 0; i < TILAA_CANCEL_DATES && strcmp(dates[i], date) != 0; i++)
                        ;
                if (i == TILAA_CANCEL_DATES || tilaa_date(date, &y, &m, &d) < 0)
                        bad(errors, "date",
                            "Invalid date: GET .../cancel lists the possible "
                            "dates (or 0 to undo)");
                else
                        at = tilaa_local_midnight(y, m, d, t.site_tz);
        }
        if (json_object_size(errors) > 0) {
                t_invalid(resp, errors);
                return;
        }
        json_decref(errors);
        if (at && t.cancel_at) {
                t_error(resp, 409,
                        "The virtual machine is cancelled already: undo the "
                        "cancellation first (date=0) to change its date");
                return;
        }
        int r = store_vm_cancel(api->store, account, id, at);
        if (r < 0) {
                store_failed(resp, r, "Virtual machine");
                return;
        }
        t_ok_msg(resp, at ? "Service has been cancelled" : "The cancellation has been undone");
}

/* ---- snapshots ---- */

static const char *snap_status(enum snap_state s)
{
        switch (s) {
        case SNAP_READY:
                return "success";
        case SNAP_CREATING:
                return "pending";
        default:
                return "deleting";
        }
}

/* The template (image number and name) of an image slug, from a list. */
static void template_of(const struct image *imgs, size_t n, const char *slug, uint64_t *id,
                        const char **name)
{
        *id = 0;
        *name = slug;
        for (size_t i = 0; i < n; i++)
                if (strcmp(imgs[i].slug, slug) == 0) {
                        *id = imgs[i].num;
                        *name = imgs[i].name;
                }
}

static json_t *snap_json(const struct snapshot *p, const struct image *imgs, size_t n_imgs,
                         const char *tz)
{
        uint64_t tid;
        const char *tname;
        template_of(imgs, n_imgs, p->image, &tid, &tname);
        return json_pack("{s:o, s:s, s:{s:s, s:I}, s:I, s:I, s:s, s:I}", "created",
                         time_json(p->created_at, tz), "status", snap_status(p->state), "template",
                         "name", tname, "id", (json_int_t)tid, "storage", (json_int_t)p->disk_gb,
                         "ram", (json_int_t)p->ram_mb, "name", p->name, "id", (json_int_t)p->id);
}

static const char *tz_of_vm(const struct vm_tilaa *ts, size_t n, uint64_t vm_id)
{
        for (size_t i = 0; i < n; i++)
                if (ts[i].vm_id == vm_id)
                        return ts[i].site_tz;
        return TZ_DEFAULT;
}

/* GET /v1/snapshots (snap_id 0) or /v1/snapshots/ID */
static void snap_show(struct api *api, uint64_t account, uint64_t snap_id, int one,
                      struct http_resp *resp)
{
        struct snapshot *ps = NULL, p;
        struct image *imgs = NULL;
        struct vm_tilaa *ts = NULL;
        size_t n = 0, ni = 0, nt = 0;
        int r;
        if (one) {
                r = snap_id ? store_snap_get(api->store, account, snap_id, &p) : -ENOENT;
                if (r < 0) {
                        store_failed(resp, r, "Snapshot");
                        return;
                }
                ps = &p;
                n = 1;
        } else if (store_snap_list(api->store, account, 0, &ps, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        if (store_image_list(api->store, &imgs, &ni) < 0 ||
            store_vm_tilaa_list(api->store, account, 0, &ts, &nt) < 0) {
                json_decref(arr);
                arr = NULL;
        }
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr,
                                      snap_json(&ps[i], imgs, ni, tz_of_vm(ts, nt, ps[i].vm_id)));
        free(imgs);
        free(ts);
        if (!one)
                free(ps);
        if (!arr) {
                t_unavailable(resp);
                return;
        }
        if (one) {
                json_t *o = json_incref(json_array_get(arr, 0));
                json_decref(arr);
                t_ok(resp, json_pack("{s:o}", "snapshot", o));
        } else {
                t_ok(resp, json_pack("{s:o}", "snapshots", arr));
        }
}

static void snap_create(struct api *api, uint64_t account, uint64_t id, const struct form *f,
                        struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        struct snapshot p;
        char name[STORE_NAME_MAX];
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        if (t.cancel_at) {
                t_error(resp, 409, cancelled_msg);
                return;
        }
        const char *nm = param(f, "name");
        if (nm && !text_ok(nm, STORE_NAME_MAX - 1)) {
                json_t *e = json_object();
                bad(e, "name", "name must be 1 to %d printable characters", STORE_NAME_MAX - 1);
                t_invalid(resp, e);
                return;
        }
        if (nm) {
                util_strlcpy(name, nm, sizeof(name));
        } else {
                /* the VM's name (its first 40 bytes, not cutting a UTF-8
                 * character) and the time (UTC, seconds) */
                char now[21];
                int keep = (int)strnlen(v.name, 40);
                while (keep > 0 && keep < (int)strlen(v.name) &&
                       ((unsigned char)v.name[keep] & 0xc0) == 0x80)
                        keep--;
                util_iso8601_utc(util_now_ms(), now);
                snprintf(name, sizeof(name), "%.*s-%.4s%.2s%.2s-%.2s%.2s%.2s", keep, v.name, now,
                         now + 5, now + 8, now + 11, now + 14, now + 17);
        }
        /* names need not be unique (the document does not say so); an
         * overwrite replaces the snapshot of this name, else the VM's most
         * recent one, with a new snapshot (a new id) once that is made */
        unsigned flags = STORE_SNAP_ANY_NAME;
        if (tilaa_flag(param(f, "overwrite")))
                flags |= STORE_SNAP_OVERWRITE | STORE_SNAP_LATEST;
        int r = store_snap_create(api->store, account, id, name, tilaa_flag(param(f, "online")),
                                  flags, NULL, util_now_ms(), &p);
        if (r == -EDQUOT) {
                json_t *e = json_object();
                bad(e, "name",
                    "At most %d snapshots per virtual machine: delete one, or give "
                    "overwrite=1 (it replaces the most recent, or the one of this name)",
                    STORE_SNAPS_PER_VM);
                t_invalid(resp, e);
                return;
        }
        if (r == -EBUSY) {
                t_error(resp, 409,
                        "The virtual machine is busy (a snapshot, restore or "
                        "re-install is in progress): try again when it is done");
                return;
        }
        if (r < 0) {
                store_failed(resp, r, "Virtual machine");
                return;
        }
        if (api->hub)
                hub_notify(api->hub, v.host_id);
        t_ok_msg(resp, "The virtual machine snapshot is being created");
}

static void snap_restore(struct api *api, uint64_t account, uint64_t id, const struct form *f,
                         struct http_resp *resp)
{
        struct vm v;
        struct vm_tilaa t;
        struct snapshot p;
        uint64_t sid = 0;
        if (vm_load(api, account, id, &v, &t, resp) < 0)
                return;
        if (t.cancel_at) {
                t_error(resp, 409, cancelled_msg);
                return;
        }
        json_t *e = json_object();
        if (!e) {
                t_unavailable(resp);
                return;
        }
        int r = num_param(f, "snapshot", 1, ID_MAX, e, &sid);
        if (r == 0)
                bad(e, "snapshot", "snapshot is required");
        if (r == 1) {
                int g = store_snap_get(api->store, account, sid, &p);
                if (g < 0 && g != -ENOENT) {
                        json_decref(e);
                        t_unavailable(resp);
                        return;
                }
                if (g < 0)
                        bad(e, "snapshot",
                            "Invalid snapshot: not one of this account's "
                            "(GET /v1/snapshots lists them)");
        }
        if (json_object_size(e) > 0) {
                t_invalid(resp, e);
                return;
        }
        json_decref(e);
        /* Another VM's snapshot: this VM is rebuilt from a copy of it. */
        r = p.vm_id == id ? store_snap_restore(api->store, account, sid, NULL, &v)
                          : store_snap_restore_into(api->store, account, sid, id, &v);
        if (r == -EXDEV || r == -EFBIG) {
                if (!(e = json_object())) {
                        t_unavailable(resp);
                        return;
                }
                bad(e, "snapshot",
                    r == -EXDEV ? "Invalid snapshot: it is kept on another host than this "
                                  "virtual machine's; make a new virtual machine from it instead"
                                : "Invalid snapshot: its disk is larger than this virtual "
                                  "machine's storage");
                t_invalid(resp, e);
                return;
        }
        if (r == -EBUSY) {
                t_error(resp, 409,
                        "The snapshot is not ready, or the virtual machine is busy: "
                        "try again when it is done");
                return;
        }
        if (r < 0) {
                store_failed(resp, r, "Snapshot");
                return;
        }
        if (api->hub)
                hub_notify(api->hub, v.host_id);
        t_ok_msg(resp, "The virtual machine snapshot is being restored");
}

static void snap_edit(struct api *api, uint64_t account, uint64_t sid, const struct form *f,
                      struct http_resp *resp)
{
        struct snapshot p;
        int r = sid ? store_snap_get(api->store, account, sid, &p) : -ENOENT;
        if (r < 0) {
                store_failed(resp, r, "Snapshot");
                return;
        }
        const char *nm = param(f, "name");
        if (!nm || !text_ok(nm, STORE_NAME_MAX - 1)) {
                json_t *e = json_object();
                bad(e, "name",
                    nm ? "name must be 1 to %d printable characters"
                       : "name is required (at most %d characters)",
                    STORE_NAME_MAX - 1);
                t_invalid(resp, e);
                return;
        }
        r = store_snap_rename(api->store, account, sid, nm, STORE_SNAP_ANY_NAME, &p);
        if (r < 0) {
                store_failed(resp, r, "Snapshot");
                return;
        }
        t_ok_msg(resp, "The virtual machine snapshot has been updated");
}

static void snap_delete(struct api *api, uint64_t account, uint64_t sid, struct http_resp *resp)
{
        struct snapshot p;
        struct vm v;
        int r = sid ? store_snap_delete(api->store, account, sid, &p) : -ENOENT;
        if (r == -EBUSY) {
                t_error(resp, 409,
                        "The snapshot is being restored: delete it once the restore "
                        "is done");
                return;
        }
        if (r < 0) {
                store_failed(resp, r, "Snapshot");
                return;
        }
        if (api->hub && store_vm_get(api->store, account, p.vm_id, &v) == 0)
                hub_notify(api->hub, v.host_id);
        t_ok_msg(resp, "The virtual machine snapshot has been deleted");
}

/* ---- presets, sites, templates, users ---- */

static void presets(struct http_resp *resp)
{
        const struct size_def *sz;
        size_t n = catalog_sizes(&sz), ns;
        const uint32_t *ss = catalog_storage_sizes(&ns);
        json_t *ram = json_array(), *hdd = json_array(), *ssd = json_array();
        for (size_t i = 0; ram && i < n; i++)
                json_array_append_new(ram, json_integer(sz[i].ram_mb));
        for (size_t i = 0; hdd && ssd && i < ns; i++) {
                json_array_append_new(hdd, json_integer(ss[i]));
                json_array_append_new(ssd, json_integer(ss[i]));
        }
        t_ok(resp,
             json_pack("{s:{s:{s:o}, s:[{s:s, s:o}, {s:s, s:o}]}}", "presets", "ram", "sizes", ram,
                       "storage", "type", "hdd", "sizes", hdd, "type", "ssd", "sizes", ssd));
}

static void sites(struct api *api, struct http_resp *resp)
{
        struct site *xs = NULL;
        size_t n = 0;
        if (store_sites(api->store, &xs, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                if (xs[i].hosts > 0) /* where a VM can be made */
                        json_array_append_new(arr,
                                              json_pack("{s:I, s:s}", "id", (json_int_t)xs[i].id,
                                                        "name", xs[i].name));
        free(xs);
        t_ok(resp, arr ? json_pack("{s:o}", "sites", arr) : NULL);
}

static void templates(struct api *api, struct http_resp *resp)
{
        struct image *imgs = NULL;
        size_t n = 0;
        if (store_image_list(api->store, &imgs, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, json_pack("{s:I, s:s}", "id", (json_int_t)imgs[i].num,
                                                     "name", imgs[i].name));
        free(imgs);
        t_ok(resp, arr ? json_pack("{s:o}", "templates", arr) : NULL);
}

static void users(struct api *api, uint64_t account, struct http_resp *resp)
{
        struct api_user *us = NULL;
        size_t n = 0;
        if (store_api_user_list(api->store, account, &us, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr,
                                      json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)us[i].id,
                                                "email", us[i].email, "first_name",
                                                us[i].first_name, "last_name", us[i].last_name));
        free(us);
        t_ok(resp, arr ? json_pack("{s:o}", "users", arr) : NULL);
}

/* ---- metadata profiles ---- */

static json_t *md_json(const struct metadata *m)
{
        return json_pack("{s:I, s:s, s:s, s:o, s:o}", "id", (json_int_t)m->id, "name", m->name,
                         "user_data", m->user_data ? m->user_data : "", "created",
                         time_json(m->created_at, TZ_DEFAULT), "modified",
                         time_json(m->modified_at, TZ_DEFAULT));
}

static void md_list(struct api *api, uint64_t account, struct http_resp *resp)
{
        struct metadata *ms = NULL;
        size_t n = 0;
        if (store_metadata_list(api->store, account, &ms, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, md_json(&ms[i]));
        store_metadata_free(ms, n);
        t_ok(resp, arr ? json_pack("{s:o}", "metadata", arr) : NULL);
}

static void md_view(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct metadata m;
        int r = id ? store_metadata_get(api->store, account, id, &m) : -ENOENT;
        if (r < 0) {
                store_failed(resp, r, "Metadata");
                return;
        }
        json_t *o = md_json(&m);
        free(m.user_data);
        t_ok(resp, o ? json_pack("{s:o}", "metadata", o) : NULL);
}

/* add (id 0) or edit */
static void md_put(struct api *api, uint64_t account, uint64_t id, int edit, const struct form *f,
                   struct http_resp *resp)
{
        struct metadata m;
        int r;
        if (edit) {
                r = id ? store_metadata_get(api->store, account, id, &m) : -ENOENT;
                if (r < 0) {
                        store_failed(resp, r, "Metadata");
                        return;
                }
                free(m.user_data);
        }
        json_t *e = json_object();
        if (!e) {
                t_unavailable(resp);
                return;
        }
        const char *nm = param(f, "name"), *ud = param(f, "user_data");
        if (!nm && !edit)
                bad(e, "name", "name is required");
        else if (nm && !text_ok(nm, STORE_NAME_MAX - 1))
                bad(e, "name", "name must be 1 to %d printable characters", STORE_NAME_MAX - 1);
        if (!ud && !edit)
                bad(e, "user_data", "user_data is required");
        else if (ud && strlen(ud) > STORE_USER_DATA_MAX)
                bad(e, "user_data", "user_data must be at most %d bytes", STORE_USER_DATA_MAX);
        if (json_object_size(e) > 0) {
                t_invalid(resp, e);
                return;
        }
        json_decref(e);
        r = edit ? store_metadata_update(api->store, account, id, nm, ud, &m)
                 : store_metadata_create(api->store, account, nm, ud, &m);
        if (r == -EDQUOT) {
                e = json_object();
                bad(e, "name", "An account may keep at most %d metadata profiles",
                    STORE_METADATA_PER_ACCOUNT);
                t_invalid(resp, e);
                return;
        }
        if (r < 0) {
                store_failed(resp, r, "Metadata");
                return;
        }
        free(m.user_data);
        t_ok(resp, json_pack("{s:I, s:s}", "id", (json_int_t)m.id, "message",
                             edit ? "Metadata has been updated successfully"
                                  : "Metadata has been created successfully"));
}

static void md_delete(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        int r = id ? store_metadata_delete(api->store, account, id) : -ENOENT;
        if (r < 0) {
                store_failed(resp, r, "Metadata");
                return;
        }
        t_ok_msg(resp, "Metadata has been deleted successfully");
}

/* ---- SSH keys ---- */

static json_t *key_json(const struct ssh_key *k)
{
        return json_pack("{s:I, s:I, s:s, s:s, s:o, s:o}", "id", (json_int_t)k->id, "user_id",
                         (json_int_t)k->user_id, "label", k->name, "key", k->public_key, "created",
                         time_json(k->created_at, TZ_DEFAULT), "modified",
                         time_json(k->modified_at ? k->modified_at : k->created_at, TZ_DEFAULT));
}

static void key_list(struct api *api, uint64_t account, struct http_resp *resp)
{
        struct vm_query q = {.account_id = account};
        struct ssh_key *ks = NULL;
        size_t n = 0;
        if (store_sshkey_page(api->store, &q, &ks, &n) < 0) {
                t_unavailable(resp);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, key_json(&ks[i]));
        free(ks);
        t_ok(resp, arr ? json_pack("{s:o}", "ssh_keys", arr) : NULL);
}

static void key_view(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct ssh_key *k = malloc(sizeof(*k));
        int r = !k ? -EIO : id ? store_sshkey_get(api->store, account, id, k) : -ENOENT;
        if (r < 0)
                store_failed(resp, r, "SSH key");
        else
                t_ok(resp, json_pack("{s:o}", "ssh_key", key_json(k)));
        free(k);
}

/* add (edit 0) or edit; user: the calling API user */
static void key_put(struct api *api, const struct api_user *user, uint64_t id, int edit,
                    const struct form *f, struct http_resp *resp)
{
        const uint64_t account = user->account_id;
        struct ssh_key *k = calloc(1, sizeof(*k)), *got = calloc(1, sizeof(*got));
        struct sshkey_info info;
        json_t *e = json_object();
        char why[128] = "";
        int r;
        if (!k || !got || !e) {
                t_unavailable(resp);
                goto out;
        }
        if (edit) {
                r = id ? store_sshkey_get(api->store, account, id, k) : -ENOENT;
                if (r < 0) {
                        store_failed(resp, r, "SSH key");
                        goto out;
                }
        } else {
                k->account_id = account;
                k->user_id = user->id;
        }
        uint64_t uid;
        if (num_param(f, "user_id", 1, ID_MAX, e, &uid) == 1) {
                struct api_user *us = NULL;
                size_t n = 0, i;
                if (store_api_user_list(api->store, account, &us, &n) < 0) {
                        t_unavailable(resp);
                        goto out;
                }
                for (i = 0; i < n && us[i].id != uid; i++)
                        ;
                free(us);
                if (i == n)
                        bad(e, "user_id",
                            "Invalid user_id: not one of your users (GET "
                            "/v1/users lists them)");
                else
                        k->user_id = uid;
        }
        const char *key = param(f, "key"), *label = param(f, "label");
        if (!key && !edit) {
                bad(e, "key", "key is required (an OpenSSH public key line)");
        } else if (key) {
                size_t len = strlen(key);
                if (len >= STORE_SSHKEY_MAX || sshkey_parse(key, len, &info, why, sizeof(why)) < 0)
                        bad(e, "key", "key is not a valid OpenSSH public key: %s",
                            len >= STORE_SSHKEY_MAX ? "too long" : why);
                else {
                        while (len && (key[len - 1] == '\n' || key[len - 1] == '\r' ||
                                       key[len - 1] == ' ' || key[len - 1] == '\t'))
                                len--;
                        while (len && (*key == ' ' || *key == '\t')) {
                                key++;
                                len--;
                        }
                        memcpy(k->public_key, key, len);
                        k->public_key[len] = '\0';
                        util_strlcpy(k->fingerprint, info.fingerprint, sizeof(k->fingerprint));
                        if (!label && !edit)
                                label = info.comment[0] ? info.comment : info.fingerprint;
                }
        }
        if (label && (strlen(label) >= sizeof(k->name) || !text_ok(label, LABEL_MAX))) {
                if (param(f, "label"))
                        bad(e, "label", "label must be 1 to %d printable characters", LABEL_MAX);
                else
                        label = info.fingerprint; /* a comment too long for a label */
        }
        if (json_object_size(e) > 0) {
                t_invalid(resp, e);
                e = NULL;
                goto out;
        }
        if (label)
                util_strlcpy(k->name, label, sizeof(k->name));
        r = edit ? store_sshkey_update(api->store, k, got)
                 : store_sshkey_create(api->store, k, NULL, got);
        if (r == -EEXIST || r == -EDQUOT) {
                if (r == -EEXIST)
                        bad(e, "key", "This key is registered already");
                else
                        bad(e, "key", "An account may keep at most %d SSH keys",
                            STORE_SSHKEYS_PER_ACCOUNT);
                t_invalid(resp, e);
                e = NULL;
                goto out;
        }
        if (r < 0) {
                store_failed(resp, r, "SSH key");
                goto out;
        }
        t_ok_msg(resp, edit ? "SSH key has been updated" : "SSH key has been added");
out:
        json_decref(e);
        free(k);
        free(got);
}

static void key_delete(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        int r = id ? store_sshkey_delete(api->store, account, id) : -ENOENT;
        if (r < 0) {
                store_failed(resp, r, "SSH key");
                return;
        }
        t_ok_msg(resp, "SSH key has been deleted");
}

/* ---- routing ---- */

enum route {
        RT_NONE,
        RT_USERS,
        RT_VMS,
        RT_VM,
        RT_VM_TASK,
        RT_VM_CANCEL,
        RT_VM_SNAP_CREATE,
        RT_VM_SNAP_RESTORE,
        RT_SNAPS,
        RT_SNAP,
        RT_PRESETS,
        RT_SITES,
        RT_TEMPLATES,
        RT_MDS,
        RT_MD,
        RT_KEYS,
        RT_KEY,
};

static int split(const char *path, char seg[][64], int max)
{
        int n = 0;
        if (*path != '/')
                return -1;
        while (*path == '/') {
                path++;
                if (!*path)
                        break;
                size_t len = strcspn(path, "/");
                if (n >= max || len == 0 || len >= 64)
                        return -1;
                memcpy(seg[n], path, len);
                seg[n][len] = '\0';
                n++;
                path += len;
        }
        return n;
}

/* The route and the methods it allows, or RT_NONE. */
static enum route route_of(char seg[][64], int n, const char **allow, size_t *task)
{
        if (n < 2 || strcmp(seg[0], "v1") != 0)
                return RT_NONE;
        const char *c = seg[1];
        static const struct {
                const char *name;
                enum route list, one;
                const char *list_allow, *one_allow;
        } coll[] = {
            {"users", RT_USERS, RT_NONE, "GET, HEAD", NULL},
            {"virtual_machines", RT_VMS, RT_VM, "GET, HEAD, POST", "GET, HEAD, POST"},
            {"snapshots", RT_SNAPS, RT_SNAP, "GET, HEAD", "GET, HEAD, POST, DELETE"},
            {"presets", RT_PRESETS, RT_NONE, "GET, HEAD", NULL},
            {"sites", RT_SITES, RT_NONE, "GET, HEAD", NULL},
            {"templates", RT_TEMPLATES, RT_NONE, "GET, HEAD", NULL},
            {"metadata", RT_MDS, RT_MD, "GET, HEAD, POST", "GET, HEAD, POST, DELETE"},
            {"ssh_keys", RT_KEYS, RT_KEY, "GET, HEAD, POST", "GET, HEAD, POST, DELETE"},
        };
        for (size_t i = 0; i < sizeof(coll) / sizeof(coll[0]); i++) {
                if (strcmp(coll[i].name, c) != 0)
                        continue;
                if (n == 2) {
                        *allow = coll[i].list_allow;
                        return coll[i].list;
                }
                if (n == 3 && coll[i].one != RT_NONE) {
                        *allow = coll[i].one_allow;
                        return coll[i].one;
                }
                if (n == 4 && coll[i].one == RT_VM) {
                        for (size_t t = 0; t < N_TASKS; t++)
                                if (strcmp(seg[3], tasks[t].name) == 0) {
                                        *task = t;
                                        *allow = "GET, HEAD, POST";
                                        return RT_VM_TASK;
                                }
                        if (strcmp(seg[3], "cancel") == 0) {
                                *allow = "GET, HEAD, POST";
                                return RT_VM_CANCEL;
                        }
                        if (strcmp(seg[3], "create_snapshot") == 0) {
                                *allow = "POST";
                                return RT_VM_SNAP_CREATE;
                        }
                        if (strcmp(seg[3], "restore_snapshot") == 0) {
                                *allow = "POST";
                                return RT_VM_SNAP_RESTORE;
                        }
                }
                return RT_NONE;
        }
        return RT_NONE;
}

static int method_allowed(const char *method, const char *allow)
{
        size_t n = strlen(method);
        for (const char *p = allow; *p;) {
                size_t len = strcspn(p, ",");
                if (len == n && strncmp(p, method, n) == 0)
                        return 1;
                p += len;
                p += strspn(p, ", ");
        }
        return 0;
}

/* m: the method, HEAD as GET (the HTTP library sends no body for it);
 * head: it was HEAD. */
static void dispatch(struct api *api, const struct api_user *user, enum route rt, size_t task,
                     char seg[][64], const char *m, int head, const struct form *f,
                     struct http_resp *resp)
{
        const uint64_t account = user->account_id;
        uint64_t id = 0;
        /* an id that is no number is no resource: 404 like an unknown one */
        if (rt == RT_VM || rt == RT_VM_TASK || rt == RT_VM_CANCEL || rt == RT_VM_SNAP_CREATE ||
            rt == RT_VM_SNAP_RESTORE || rt == RT_SNAP || rt == RT_MD || rt == RT_KEY) {
                if (tilaa_uint(seg[2], ID_MAX, &id) < 0)
                        id = 0;
        }
        int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;
        switch (rt) {
        case RT_USERS:
                users(api, account, resp);
                break;
        case RT_VMS:
                if (get)
                        vm_list(api, account, resp);
                else
                        vm_add(api, account, f, resp);
                break;
        case RT_VM:
                if (get)
                        vm_view(api, account, id, resp);
                else
                        vm_edit(api, account, id, f, resp);
                break;
        case RT_VM_TASK:
                vm_task(api, account, id, task, head, resp);
                break;
        case RT_VM_CANCEL:
                if (get)
                        vm_cancel_dates(api, account, id, resp);
                else
                        vm_cancel(api, account, id, f, resp);
                break;
        case RT_VM_SNAP_CREATE:
                snap_create(api, account, id, f, resp);
                break;
        case RT_VM_SNAP_RESTORE:
                snap_restore(api, account, id, f, resp);
                break;
        case RT_SNAPS:
                snap_show(api, account, 0, 0, resp);
                break;
        case RT_SNAP:
                if (get)
                        snap_show(api, account, id, 1, resp);
                else if (post)
                        snap_edit(api, account, id, f, resp);
                else
                        snap_delete(api, account, id, resp);
                break;
        case RT_PRESETS:
                presets(resp);
                break;
        case RT_SITES:
                sites(api, resp);
                break;
        case RT_TEMPLATES:
                templates(api, resp);
                break;
        case RT_MDS:
                if (get)
                        md_list(api, account, resp);
                else
                        md_put(api, account, 0, 0, f, resp);
                break;
        case RT_MD:
                if (get)
                        md_view(api, account, id, resp);
                else if (post)
                        md_put(api, account, id, 1, f, resp);
                else
                        md_delete(api, account, id, resp);
                break;
        case RT_KEYS:
                if (get)
                        key_list(api, account, resp);
                else
                        key_put(api, user, 0, 0, f, resp);
                break;
        case RT_KEY:
                if (get)
                        key_view(api, account, id, resp);
                else if (post)
                        key_put(api, user, id, 1, f, resp);
                else
                        key_delete(api, account, id, resp);
                break;
        default:
                not_found(resp, "Endpoint");
                break;
        }
}

static void unauthorized(struct http_resp *resp)
{
        t_error(resp, 401,
                "Invalid or missing credentials (HTTP Basic auth with an API user's "
                "e-mail and password)");
        http_resp_header(resp, "WWW-Authenticate", "Basic realm=\"Tilaa API\", charset=\"UTF-8\"");
}

static void tilaa_route(struct api *api, const struct http_req *req, struct http_resp *resp);

void api_tilaa_handle(void *ud, const struct http_req *req, struct http_resp *resp)
{
        int64_t t0 = util_mono_us();
        tilaa_route(ud, req, resp);
        metrics_request(METRICS_TILAA, resp->status, util_mono_us() - t0);
}

static void tilaa_route(struct api *api, const struct http_req *req, struct http_resp *resp)
{
        char seg[4][64];
        const char *allow = NULL;
        size_t task = 0;

        if (req->too_large) {
                t_error(resp, 413, "The request body is too large");
                return;
        }
        int n = split(req->path, seg, 4);
        enum route rt = n < 0 ? RT_NONE : route_of(seg, n, &allow, &task);
        if (rt == RT_NONE) {
                not_found(resp, "Endpoint");
                return;
        }
        /* HEAD is GET without the body, wherever GET is allowed */
        const int head = strcmp(req->method, "HEAD") == 0;
        const char *method = head ? "GET" : req->method;
        if (!method_allowed(req->method, allow)) {
                char msg[128];
                snprintf(msg, sizeof(msg), "Method %.16s is not allowed here; allowed: %s",
                         req->method, allow);
                t_error(resp, 405, msg);
                http_resp_header(resp, "Allow", "%s", allow);
                return;
        }
        char email[STORE_EMAIL_MAX + 1], *password = malloc(APIUSER_PASSWORD_MAX + 1);
        struct api_user user;
        uint32_t retry = 0;
        if (!password) {
                t_unavailable(resp);
                return;
        }
        int r = tilaa_basic(req->authorization, email, sizeof(email), password,
                            APIUSER_PASSWORD_MAX + 1);
        if (r == 0)
                r = apiuser_login(api->users, api->store, email, password, &user, &retry);
        else
                r = -EACCES;
        explicit_bzero(password, APIUSER_PASSWORD_MAX + 1);
        free(password);
        if (r == -EAGAIN) {
                t_error(resp, 429, "Too many failed logins for this e-mail: try again later");
                http_resp_header(resp, "Retry-After", "%u", retry);
                return;
        }
        if (r == -EIO) {
                t_unavailable(resp);
                return;
        }
        if (r < 0) {
                unauthorized(resp);
                return;
        }
        struct form *f = NULL;
        if (strcmp(req->method, "POST") == 0 && read_form(req, resp, &f) < 0)
                return;
        dispatch(api, &user, rt, task, seg, method, head, f, resp);
        form_free(f);
}
