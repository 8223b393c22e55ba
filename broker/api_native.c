/* The native JSON API. See api.h and ../shared/spec/native-api.txt. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "auth.h"
#include "ratelimit.h"
#include "sshkey.h"
#include "templates.h"
#include "catalog.h"
#include "ids.h"
#include "ipam.h"
#include "json.h"
#include "listcache.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#define NAME_MAX_LEN 63

const char *api_vps_status(const struct vm *v, int64_t now, int64_t host_timeout_ms)
{
        if (now - v->host_last_seen > host_timeout_ms)
                return "unknown"; /* never "stopped": we do not know */
        if (v->rebuild_seq > v->obs_rebuild_done && v->obs_state >= 0)
                return "rebuilding";
        if (v->resize_seq > v->obs_resize_done && v->obs_state >= 0)
                return "resizing";
        if (v->restore_seq > v->obs_restore_done && v->obs_state >= 0)
                return "restoring";
        if (v->snapshotting && v->obs_state >= 0)
                return "snapshotting"; /* shut down for an offline snapshot */
        if (!v->rescue != !v->obs_rescue && v->obs_state >= 0 && v->want == VM_WANT_RUNNING)
                return "rebooting"; /* into or out of the rescue system */
        if (v->obs_error[0])
                return "error";
        if (v->obs_state < 0)
                return "provisioning";
        switch (v->obs_state) {
        case POWER_RUNNING:
                if (v->reboot_seq > v->obs_reboot_done)
                        return "rebooting";
                return v->want != VM_WANT_RUNNING ? "stopping" : "running";
        case POWER_STOPPED:
        case POWER_CRASHED:
                return v->want == VM_WANT_RUNNING ? "starting" : "stopped";
        case POWER_PAUSED:
                return "paused";
        default:
                return "unknown";
        }
}

int api_body_json(const struct http_req *req, struct http_resp *resp, json_t **ret)
{
        json_error_t err;
        json_t *j;

        if (req->content_type) {
                size_t n = strcspn(req->content_type, ";");
                while (n > 0 && req->content_type[n - 1] == ' ')
                        n--;
                if (n != strlen("application/json") ||
                    strncasecmp(req->content_type, "application/json", n) != 0) {
                        json_error(resp, 415, "unsupported_media_type",
                                   "request body must be application/json", NULL);
                        return -EINVAL;
                }
        }
        if (!req->body || req->body_len == 0) {
                json_invalid(resp, "body", "request body must be a JSON object", NULL);
                return -EINVAL;
        }
        j = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &err);
        if (!j) {
                char msg[256];
                snprintf(msg, sizeof(msg), "malformed JSON at line %d column %d: %s", err.line,
                         err.column, err.text);
                json_invalid(resp, "body", msg, NULL);
                return -EINVAL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                json_invalid(resp, "body", "request body must be a JSON object", NULL);
                return -EINVAL;
        }
        *ret = j;
        return 0;
}

void api_route_error(const struct http_req *req, struct http_resp *resp, int known_path,
                     const char *allow)
{
        if (!known_path) {
                json_error(resp, 404, "not_found", "no such endpoint", NULL);
                return;
        }
        char msg[128];
        snprintf(msg, sizeof(msg), "method %.16s not allowed here; allowed: %s", req->method,
                 allow);
        json_error(resp, 405, "method_not_allowed", msg, NULL);
        http_resp_header(resp, "Allow", "%s", allow);
}

#define API_PAGE_MAX 1000 /* the largest ?limit= of a list */

/* resp->status 0 after a handler: its Idempotency-Key was claimed by a
 * concurrent twin; native_route answers as the twin did. */
#define REPLAY_PENDING 0

static void store_failed(struct http_resp *resp, int r)
{
        if (r == -EEXIST)
                resp->status = REPLAY_PENDING;
        else if (r == -ENOENT)
                json_error(resp, 404, "not_found", "VPS not found", NULL);
        else
                json_error(resp, 500, "internal_error", "internal error", NULL);
}

/* ---- VPS ---- */

static json_t *vps_json(const struct api *api, const struct vm *v, int64_t now)
{
        char id[ID_STR_MAX], created[21];
        id_encode(store_id_key(api->store), "vps", v->id, id, sizeof(id));
        util_iso8601_utc(v->created_at, created);
        /* its private networks, in attach order */
        json_t *nets = json_array();
        for (size_t i = 0; nets && i < v->n_networks; i++) {
                char nid[ID_STR_MAX];
                id_encode(store_id_key(api->store), "net", v->networks[i], nid, sizeof(nid));
                json_array_append_new(nets, json_string(nid));
        }
        /* storage_type, anti_affinity_group, rescue (in the rescue system)
         * and error (what the host could not do, or null): Tasman's additions. */
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s, s:s?, s:b, s:s?}", "id",
                         id, "name", v->name, "status",
                         api_vps_status(v, now, api->host_timeout_ms), "size", v->size, "region",
                         v->site, "image", v->image, "networks", nets, "created_at", created,
                         "storage_type", storage_to_string(v->storage), "anti_affinity_group",
                         v->group[0] ? v->group : NULL, "rescue", v->rescue, "error",
                         v->obs_error[0] ? v->obs_error : NULL);
}

/* A JSON string as jansson writes it (compact): " \\ and control
 * characters escaped, UTF-8 as it is (our strings are valid UTF-8). */
static void json_str(FILE *f, const char *str)
{
        const unsigned char *p = (const unsigned char *)str;
        fputc_unlocked('"', f);
        for (;;) {
                size_t n = 0; /* a run that needs no escaping, in one write */
                while (p[n] >= 0x20 && p[n] != '"' && p[n] != '\\')
                        n++;
                if (n)
                        fwrite_unlocked(p, 1, n, f);
                p += n;
                if (!*p)
                        break;
                switch (*p) {
                case '"': fputs_unlocked("\\\"", f); break;
                case '\\': fputs_unlocked("\\\\", f); break;
                case '\b': fputs_unlocked("\\b", f); break;
                case '\f': fputs_unlocked("\\f", f); break;
                case '\n': fputs_unlocked("\\n", f); break;
                case '\r': fputs_unlocked("\\r", f); break;
                case '\t': fputs_unlocked("\\t", f); break;
                default: fprintf(f, "\\u%04x", *p);
                }
                p++;
        }
        fputc_unlocked('"', f);
}

/* vps_json() written straight to f, byte for byte the same. */
static void vps_write(FILE *f, const struct api *api, const struct vm *v, int64_t now)
{
        char id[ID_STR_MAX], created[21];
        id_encode(store_id_key(api->store), "vps", v->id, id, sizeof(id));
        util_iso8601_utc(v->created_at, created);
        fputs_unlocked("{\"id\":\"", f);
        fputs_unlocked(id, f);
        fputs_unlocked("\",\"name\":", f);
        json_str(f, v->name);
        fputs_unlocked(",\"status\":\"", f);
        fputs_unlocked(api_vps_status(v, now, api->host_timeout_ms), f);
        fputs_unlocked("\",\"size\":", f);
        json_str(f, v->size);
        fputs_unlocked(",\"region\":", f);
        json_str(f, v->site);
        fputs_unlocked(",\"image\":", f);
        json_str(f, v->image);
        fputs_unlocked(",\"networks\":[", f);
        for (size_t i = 0; i < v->n_networks; i++) {
                char nid[ID_STR_MAX];
                id_encode(store_id_key(api->store), "net", v->networks[i], nid, sizeof(nid));
                fputs_unlocked(i ? ",\"" : "\"", f);
                fputs_unlocked(nid, f);
                fputc_unlocked('"', f);
        }
        fputs_unlocked("],\"created_at\":\"", f);
        fputs_unlocked(created, f);
        fputs_unlocked("\",\"storage_type\":\"", f);
        fputs_unlocked(storage_to_string(v->storage), f);
        fputs_unlocked("\",\"anti_affinity_group\":", f);
        if (v->group[0])
                json_str(f, v->group);
        else
                fputs_unlocked("null", f);
        fputs_unlocked(v->rescue ? ",\"rescue\":true" : ",\"rescue\":false", f);
        fputs_unlocked(",\"error\":", f);
        if (v->obs_error[0])
                json_str(f, v->obs_error);
        else
                fputs_unlocked("null", f);
        fputc_unlocked('}', f);
}

static int valid_name(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > NAME_MAX_LEN || s[0] == '-' || s[0] == '.' || s[n - 1] == '-' ||
            s[n - 1] == '.')
                return 0;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.'))
                        return 0;
        return 1;
}

static int valid_group(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n >= TMSG_STR)
                return 0;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return 0;
        return 1;
}

/* A required string field; answers 422 and returns NULL when absent. */
static const char *req_string(json_t *body, const char *field, struct http_resp *resp,
                              const char *const *allowed)
{
        json_t *v = json_object_get(body, field);
        if (!v || json_is_null(v)) {
                char msg[96];
                snprintf(msg, sizeof(msg), "%s is required", field);
                json_invalid(resp, field, msg, allowed);
                return NULL;
        }
        if (!json_is_string(v)) {
                char msg[96];
                snprintf(msg, sizeof(msg), "%s must be a string", field);
                json_invalid(resp, field, msg, allowed);
                return NULL;
        }
        return json_string_value(v);
}

/* Answers 422 for an image that is not in the catalog, listing those that
 * are (or 500 when the catalog cannot be read). */
static void image_invalid(struct api *api, const char *msg, struct http_resp *resp)
{
        struct image *imgs = NULL;
        size_t n = 0;
        const char *allowed[65] = { 0 };
        if (store_image_list(api->store, &imgs, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        for (size_t k = 0; k < n && k < 64; k++)
                allowed[k] = imgs[k].slug;
        json_invalid(resp, "image", msg, allowed);
        free(imgs);
}

/* The required "image" of a body, from the catalog, big enough for the
 * size's disk: 0, or -EINVAL after answering. */
static int image_arg(struct api *api, json_t *body, uint32_t disk_gb, struct image *ret,
                     struct http_resp *resp)
{
        json_t *v = json_object_get(body, "image");
        int r;
        if (!v || json_is_null(v) || !json_is_string(v)) {
                image_invalid(api, v && !json_is_null(v) ? "image must be a string"
                                                        : "image is required", resp);
                return -EINVAL;
        }
        r = json_string_length(v) < TMSG_STR ? store_image_get(api->store, json_string_value(v), ret)
                                             : -ENOENT;
        if (r == -ENOENT) {
                image_invalid(api, "Invalid image specified", resp);
                return -EINVAL;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return -EINVAL;
        }
        if (ret->min_disk_gb > disk_gb) {
                char msg[128];
                snprintf(msg, sizeof(msg), "image %s needs a disk of at least %u GB", ret->slug,
                         ret->min_disk_gb);
                json_invalid(resp, "image", msg, NULL);
                return -EINVAL;
        }
        return 0;
}

/* The optional "region" of a body: 0 (*ret NULL when absent), or -EINVAL
 * after answering (422 with the regions that exist, or 500). */
static int region_arg(struct api *api, json_t *body, const char **ret, struct http_resp *resp)
{
        char (*sites)[TMSG_STR] = NULL;
        size_t n_sites = 0, i;
        json_t *v = json_object_get(body, "region");
        *ret = NULL;
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_string(v)) {
                json_invalid(resp, "region", "region must be a string", NULL);
                return -EINVAL;
        }
        if (store_site_list(api->store, &sites, &n_sites) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return -EINVAL;
        }
        for (i = 0; i < n_sites && strcmp(sites[i], json_string_value(v)) != 0; i++)
                ;
        if (i == n_sites) {
                const char *allowed[65] = { 0 };
                for (size_t k = 0; k < n_sites && k < 64; k++)
                        allowed[k] = sites[k];
                json_invalid(resp, "region", "Invalid region specified", allowed);
                free(sites);
                return -EINVAL;
        }
        free(sites);
        *ret = json_string_value(v);
        return 0;
}

/* Wakes every host whose desired state follows the vm's private networks
 * (a change of their members changes their FDB entries). */
static void notify_net_hosts(struct api *api, uint64_t vm_id)
{
        uint64_t *hosts = NULL;
        size_t n = 0;
        if (!api->hub || store_vm_net_hosts(api->store, vm_id, &hosts, &n) < 0)
                return; /* they see the new generation at their next sync anyway */
        for (size_t i = 0; i < n; i++)
                hub_notify(api->hub, hosts[i]);
        free(hosts);
}

/* The "network" of a VPS create: one of the account's networks, by id:
 * 0, or -EINVAL after answering 422 (or 500). */
static int network_arg(struct api *api, uint64_t account, json_t *v, uint64_t *ret,
                       struct http_resp *resp)
{
        struct network w;
        char msg[160];
        const char *nid = json_is_string(v) ? json_string_value(v) : "(not a string)";
        int r = json_is_string(v) && id_decode(store_id_key(api->store), "net", nid, ret) == 0
                        ? store_net_get(api->store, account, *ret, &w, NULL)
                        : -ENOENT;
        if (r == -ENOENT) {
                snprintf(msg, sizeof(msg), "unknown network: %.64s", nid);
                json_invalid(resp, "network", msg, NULL);
                return -EINVAL;
        }
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return -EINVAL;
        }
        return 0;
}

/* A VPS create that found no address (or no network): answered 422 and
 * 1, else 0. why: the store's reason for a used-up public pool. */
static int addresses_failed(struct api *api, int r, uint64_t net_id, const char *region,
                            const char *why, struct http_resp *resp)
{
        char msg[320], nid[ID_STR_MAX];
        id_encode(store_id_key(api->store), "net", net_id, nid, sizeof(nid));
        if (r == -ENONET) {
                snprintf(msg, sizeof(msg), "unknown network: %s", nid);
                json_invalid(resp, "network", msg, NULL);
        } else if (r == -ERANGE) {
                snprintf(msg, sizeof(msg), "network %s has no free address left", nid);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s}", "field", "network", "reason", "addresses"));
        } else if (r == -EADDRNOTAVAIL) {
                snprintf(msg, sizeof(msg), "no public address left for a new VPS: %s", why);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s}", "field", region ? "region" : "size", "reason",
                                     "addresses"));
        } else {
                return 0;
        }
        return 1;
}

/* An order the account's credit does not cover (billing enforced, see
 * store.h): 402 insufficient_credit and 1, else 0. */
static int credit_failed(int r, const char *why, struct http_resp *resp)
{
        char msg[400];
        if (r != -EDQUOT)
                return 0;
        snprintf(msg, sizeof(msg), "insufficient credit: %s; add credit to order this service",
                 why);
        json_error(resp, 402, "insufficient_credit", msg, NULL);
        return 1;
}

static void vps_create(struct api *api, uint64_t account, const struct idem *idem,
                       const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL, *v;
        const char *name, *size, *image, *region = NULL;
        const struct size_def *sz;
        struct image img;
        struct vm vm;
        int r;

        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(name = req_string(body, "name", resp, NULL)))
                goto out;
        if (!valid_name(name)) {
                json_invalid(resp, "name",
                             "name must be 1 to 63 letters, digits, '-' or '.', not starting "
                             "or ending with '-' or '.'",
                             NULL);
                goto out;
        }
        if (!(size = req_string(body, "size", resp, catalog_size_slugs())))
                goto out;
        if (!(sz = catalog_size(size))) {
                json_invalid(resp, "size", "Invalid VPS size specified", catalog_size_slugs());
                goto out;
        }
        /* Tasman's addition (the Tilaa API's "snapshot"): a VPS whose disk
         * is a copy of one of the account's snapshots, on the snapshot's
         * host, of the snapshot's image. */
        uint64_t from_snap = 0;
        struct snapshot snap;
        struct vm src;
        v = json_object_get(body, "snapshot");
        if (v && !json_is_null(v)) {
                char msg[200];
                const char *sid = json_is_string(v) ? json_string_value(v) : "(not a string)";
                if (!json_is_string(v) ||
                    id_decode(store_id_key(api->store), "snap", sid, &from_snap) < 0 ||
                    store_snap_get(api->store, account, from_snap, &snap) < 0 ||
                    store_vm_get(api->store, account, snap.vm_id, &src) < 0) {
                        snprintf(msg, sizeof(msg), "unknown snapshot id: %.64s", sid);
                        json_invalid(resp, "snapshot", msg, NULL);
                        goto out;
                }
                if (snap.state != SNAP_READY) {
                        snprintf(msg, sizeof(msg), "snapshot %.64s is %s, not ready", sid,
                                 snap_state_to_string(snap.state));
                        json_invalid(resp, "snapshot", msg, NULL);
                        goto out;
                }
                if (sz->disk_gb < snap.disk_gb) {
                        snprintf(msg, sizeof(msg),
                                 "size %s has a %u GB disk; the snapshot is of a %u GB disk", size,
                                 sz->disk_gb, snap.disk_gb);
                        json_invalid(resp, "size", msg, catalog_size_slugs());
                        goto out;
                }
                v = json_object_get(body, "image");
                if (v && !json_is_null(v) &&
                    (!json_is_string(v) || strcmp(json_string_value(v), snap.image) != 0)) {
                        snprintf(msg, sizeof(msg),
                                 "the snapshot is of image %s: leave image out, or give that",
                                 snap.image);
                        json_invalid(resp, "image", msg, NULL);
                        goto out;
                }
                memset(&img, 0, sizeof(img));
                snprintf(img.slug, sizeof(img.slug), "%s", snap.image);
        } else if (image_arg(api, body, sz->disk_gb, &img, resp) < 0) {
                goto out;
        }
        image = img.slug;
        if (region_arg(api, body, &region, resp) < 0)
                goto out;
        if (from_snap && region && strcmp(region, src.site) != 0) {
                char msg[200];
                snprintf(msg, sizeof(msg), "the snapshot is in region %s: leave region out, or "
                                           "give that", src.site);
                json_invalid(resp, "region", msg, NULL);
                goto out;
        }
        /* Tasman's additions: the disk's storage type (as in the Tilaa
         * API) and an anti-affinity group (no two guests of an account's
         * group share a host). */
        enum storage storage = STORAGE_SSD;
        const char *group = NULL;
        static const char *const storage_types[] = { "ssd", "hdd", NULL };
        v = json_object_get(body, "storage_type");
        if (v && !json_is_null(v) &&
            (!json_is_string(v) || storage_from_string(json_string_value(v), &storage) < 0)) {
                json_invalid(resp, "storage_type", "Invalid storage type specified",
                             storage_types);
                goto out;
        }
        v = json_object_get(body, "anti_affinity_group");
        if (v && !json_is_null(v)) {
                group = json_is_string(v) ? json_string_value(v) : "";
                if (!valid_group(group)) {
                        json_invalid(resp, "anti_affinity_group",
                                     "anti_affinity_group must be 1 to 63 lowercase letters, "
                                     "digits or '-'",
                                     NULL);
                        goto out;
                }
        }
        v = json_object_get(body, "ssh_keys");
        uint64_t key_ids[STORE_VM_SSH_KEYS_MAX];
        size_t n_keys = 0;
        if (v && !json_is_null(v)) {
                if (!json_is_array(v) || json_array_size(v) > STORE_VM_SSH_KEYS_MAX) {
                        json_invalid(resp, "ssh_keys",
                                     "ssh_keys must be an array of at most 32 SSH key ids",
                                     NULL);
                        goto out;
                }
                for (size_t k = 0; k < json_array_size(v); k++) {
                        json_t *e = json_array_get(v, k);
                        if (!json_is_string(e) ||
                            id_decode(store_id_key(api->store), "ssh", json_string_value(e),
                                      &key_ids[n_keys]) < 0) {
                                char msg[160];
                                snprintf(msg, sizeof(msg), "unknown SSH key id: %.64s",
                                         json_is_string(e) ? json_string_value(e)
                                                           : "(not a string)");
                                json_invalid(resp, "ssh_keys", msg, NULL);
                                goto out;
                        }
                        n_keys++;
                }
                size_t bad = 0;
                r = store_sshkey_check(api->store, account, key_ids, n_keys, &bad);
                if (r == -ENOENT) {
                        char msg[160];
                        snprintf(msg, sizeof(msg), "unknown SSH key id: %.64s",
                                 json_string_value(json_array_get(v, bad)));
                        json_invalid(resp, "ssh_keys", msg, NULL);
                        goto out;
                }
                if (r < 0) {
                        json_error(resp, 500, "internal_error", "internal error", NULL);
                        goto out;
                }
        }
        /* attached to one of the account's networks at creation */
        uint64_t net_id = 0;
        v = json_object_get(body, "network");
        if (v && !json_is_null(v) && network_arg(api, account, v, &net_id, resp) < 0)
                goto out;

        char why[256] = "";
        struct vm_new nv = {
                .account_id = account,
                .name = name,
                .size = size,
                .image = image,
                .site = region,
                .vcpus = sz->vcpus,
                .ram_mb = sz->ram_mb,
                .disk_gb = sz->disk_gb,
                .storage = storage,
                .group = group,
                .sched = api->sched.cpu_ratio > 0 ? &api->sched : NULL,
                .why = why,
                .why_len = sizeof(why),
        };
        int64_t now = util_now_ms();
        nv.idem = idem;
        nv.ssh_keys = key_ids;
        nv.n_ssh_keys = n_keys;
        nv.from_snap = from_snap;
        nv.network_id = net_id;
        r = store_vm_create(api->store, &nv, now, now - api->host_timeout_ms, &vm);
        if (from_snap && (r == -ENOENT || r == -EINVAL)) {
                json_invalid(resp, "snapshot", "the snapshot is no longer ready", NULL);
                goto out;
        }
        if (addresses_failed(api, r, net_id, region, why, resp) || credit_failed(r, why, resp))
                goto out;
        if (r == -ENOSPC) {
                char msg[400];
                snprintf(msg, sizeof(msg), "no host has room for a %s (%s)", size, why);
                json_t *d = json_pack("{s:s, s:s, s:s}", "field", region ? "region" : "size",
                                      "reason", "capacity", "hosts", why);
                json_error(resp, 422, "validation_error", msg, d);
                goto out;
        }
        if (r < 0) {
                store_failed(resp, r == -ENOENT ? -EIO : r);
                goto out;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        dns_kick(api->dns);
        if (net_id)
                notify_net_hosts(api, vm.id);
        char id[ID_STR_MAX];
        id_encode(store_id_key(api->store), "vps", vm.id, id, sizeof(id));
        json_respond(resp, 201, json_pack("{s:o}", "data", vps_json(api, &vm, now)));
        http_resp_header(resp, "Location", "/v1/vps/%s", id);
        log_info("vm %s: created for account %llu on host %llu", id,
                 (unsigned long long)account, (unsigned long long)vm.host_id);
out:
        json_decref(body);
}

/* A store failure as the API says it: unknown (or not yours) is 404, the
 * rest is 500 without internals (the store logged the cause). */
static const char *const vps_statuses[] = {
        "provisioning", "running", "stopped", "starting", "stopping", "rebooting",
        "rebuilding", "resizing", "restoring", "snapshotting", "paused", "error", "unknown", NULL,
};

/* Parses ?limit= and ?cursor= (a list's paging, the same on every list):
 * 0, or -EINVAL after answering 422. limit 0: no limit given. */
static int page_args(const struct api *api, const struct http_req *req, const char *prefix,
                     size_t *ret_limit, uint64_t *ret_after, struct http_resp *resp)
{
        const char *l = http_req_arg(req, "limit"), *c = http_req_arg(req, "cursor");
        *ret_limit = 0;
        *ret_after = 0;
        if (l) {
                char *end;
                errno = 0;
                long v = strtol(l, &end, 10);
                if (errno || *end || end == l || v < 1 || v > API_PAGE_MAX) {
                        char msg[96];
                        snprintf(msg, sizeof(msg), "limit must be a whole number from 1 to %d",
                                 API_PAGE_MAX);
                        json_invalid(resp, "limit", msg, NULL);
                        return -EINVAL;
                }
                *ret_limit = (size_t)v;
        }
        if (c && id_decode(store_id_key(api->store), prefix, c, ret_after) < 0) {
                json_invalid(resp, "cursor", "cursor must be a next_cursor this API returned",
                             NULL);
                return -EINVAL;
        }
        return 0;
}

/* GET /v1/vps[?limit=N&cursor=C&status=S&region=R&name=N]: in id order, so
 * a cursor (the last id of a page) stays valid while VPS are created. */
static void vps_list(struct api *api, uint64_t account, const struct http_req *req,
                     struct http_resp *resp)
{
        struct vm_query q = { .account_id = account };
        const char *status = http_req_arg(req, "status");
        size_t limit;
        int64_t now = util_now_ms();

        if (page_args(api, req, "vps", &limit, &q.after_id, resp) < 0)
                return;
        if (status) {
                size_t i;
                for (i = 0; vps_statuses[i] && strcmp(vps_statuses[i], status) != 0; i++)
                        ;
                if (!vps_statuses[i]) {
                        json_invalid(resp, "status", "Invalid status specified", vps_statuses);
                        return;
                }
        }
        q.region = http_req_arg(req, "region");
        q.name = http_req_arg(req, "name");
        /* The hot path: an answer given before, while still true (see
         * listcache.h), else read and written afresh. */
        char key[LISTCACHE_KEY_MAX + 1];
        const char *lim = http_req_arg(req, "limit"), *cursor = http_req_arg(req, "cursor");
        int keyed = api->lc &&
                    (size_t)snprintf(key, sizeof(key), "vps?%s&%s&%s&%s&%s", lim ? lim : "",
                                     cursor ? cursor : "", status ? status : "",
                                     q.region ? q.region : "", q.name ? q.name : "") < sizeof(key);
        uint64_t version = keyed ? store_version(api->store) : 0;
        if (keyed) {
                size_t len = 0;
                char *hit = listcache_get(api->lc, account, key, version, now, &len);
                if (hit) {
                        resp->status = 200;
                        resp->body = hit;
                        resp->body_len = len;
                        resp->content_type = "application/json";
                        return;
                }
        }
        int64_t valid_until = INT64_MAX;
        /* Written directly, not through a jansson tree: a list is the hot
         * path (the same bytes json_dumps would give; test_api compares). */
        char *out = NULL;
        size_t out_len = 0, count = 0;
        FILE *f = open_memstream(&out, &out_len);
        if (!f) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        fputs("{\"data\":[", f);
        uint64_t last = 0;
        int more = 0;
        /* The status is derived, so it filters here: read in batches until
         * the page is full or the account has no more. */
        for (;;) {
                struct vm *vms = NULL;
                size_t n = 0, want = limit ? limit + 1 - count : 0;
                if (status && want)
                        want = want < 256 ? 256 : want;
                q.limit = want;
                if (store_vm_page(api->store, &q, &vms, &n) < 0) {
                        fclose(f);
                        free(out);
                        json_error(resp, 500, "internal_error", "internal error", NULL);
                        return;
                }
                for (size_t i = 0; i < n && !more; i++) {
                        q.after_id = vms[i].id;
                        /* its status turns "unknown" past its host's timeout */
                        int64_t flip = vms[i].host_last_seen + api->host_timeout_ms + 1;
                        if (flip > now && flip < valid_until)
                                valid_until = flip;
                        if (status && strcmp(api_vps_status(&vms[i], now, api->host_timeout_ms),
                                             status) != 0)
                                continue;
                        if (limit && count == limit) {
                                more = 1; /* one beyond the page: there is a next one */
                                break;
                        }
                        if (count++)
                                fputc(',', f);
                        vps_write(f, api, &vms[i], now);
                        last = vms[i].id;
                }
                free(vms);
                if (more || !want || n < want)
                        break;
        }
        char cur[ID_STR_MAX];
        if (more)
                id_encode(store_id_key(api->store), "vps", last, cur, sizeof(cur));
        /* next_cursor: Tasman's addition; null on the last page */
        fputs("],\"next_cursor\":", f);
        if (more)
                fprintf(f, "\"%s\"}", cur);
        else
                fputs("null}", f);
        if (fclose(f) != 0) {
                free(out);
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        resp->status = 200;
        resp->body = out;
        resp->body_len = out_len;
        resp->content_type = "application/json";
        if (keyed)
                listcache_put(api->lc, account, key, version, valid_until, out, out_len);
}

static void vps_get(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct vm vm;
        int r = store_vm_get(api->store, account, id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        json_respond(resp, 200, json_pack("{s:o}", "data", vps_json(api, &vm, util_now_ms())));
}

static void vps_delete(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        uint64_t host, *peers = NULL;
        size_t n_peers = 0;
        /* the hosts of its networks' other guests, read while it is on them */
        if (api->hub && store_vm_net_hosts(api->store, id, &peers, &n_peers) < 0)
                n_peers = 0;
        int r = store_vm_delete(api->store, account, id, &host);
        if (r < 0) {
                free(peers);
                store_failed(resp, r);
                return;
        }
        if (api->hub)
                hub_notify(api->hub, host);
        for (size_t i = 0; i < n_peers; i++)
                hub_notify(api->hub, peers[i]);
        free(peers);
        dns_kick(api->dns);
        json_respond(resp, 204, NULL);
}

/* The spec's four, then Tasman's: poweroff (at once), rescue, unrescue and
 * resize (with "size"). */
static const char *const actions[] = { "start",    "shutdown", "reboot",   "rebuild",
                                       "poweroff", "rescue",   "unrescue", "resize", NULL };
static const enum vm_action action_codes[] = { VM_ACT_START,    VM_ACT_SHUTDOWN, VM_ACT_REBOOT,
                                                VM_ACT_REBUILD,  VM_ACT_POWEROFF, VM_ACT_RESCUE,
                                                VM_ACT_UNRESCUE, VM_ACT__MAX /* resize */ };
_Static_assert(sizeof(actions) / sizeof(actions[0]) ==
                       sizeof(action_codes) / sizeof(action_codes[0]) + 1,
               "actions and action_codes must match");

/* The resize action: the size from the catalog, never a smaller disk, room
 * on the guest's host. 0 (vm updated), or -1 after answering. */
static int vps_resize(struct api *api, uint64_t account, struct vm *vm, const struct idem *idem,
                      json_t *body, struct http_resp *resp)
{
        const struct size_def *sz;
        const char *size;
        char why[256] = "", msg[400];

        if (!(size = req_string(body, "size", resp, catalog_size_slugs())))
                return -1;
        if (!(sz = catalog_size(size))) {
                json_invalid(resp, "size", "Invalid VPS size specified", catalog_size_slugs());
                return -1;
        }
        /* Tasman's addition: the CPU cap, percent of each vCPU (100: none);
         * a resize without it lifts any cap. */
        uint32_t cap = 0;
        json_t *cv = json_object_get(body, "cpu_cap");
        if (cv && !json_is_null(cv)) {
                if (!json_is_integer(cv) || json_integer_value(cv) < 10 ||
                    json_integer_value(cv) > 100) {
                        json_invalid(resp, "cpu_cap",
                                     "cpu_cap must be an integer percent of each vCPU from 10 "
                                     "to 100",
                                     NULL);
                        return -1;
                }
                cap = (uint32_t)json_integer_value(cv);
        }
        if (sz->disk_gb < vm->disk_gb) {
                snprintf(msg, sizeof(msg),
                         "%s has a %u GB disk and this VPS has %u GB: disks never shrink (rebuild "
                         "into a new VPS to go smaller)",
                         size, sz->disk_gb, vm->disk_gb);
                json_invalid(resp, "size", msg, NULL);
                return -1;
        }
        const struct vm_resize rq = {
                .account_id = account, .vm_id = vm->id, .size = size, .vcpus = sz->vcpus,
                .ram_mb = sz->ram_mb, .disk_gb = sz->disk_gb, .cpu_cap = cap,
                .sched = api->sched.cpu_ratio > 0 ? &api->sched : NULL, .idem = idem,
                .why = why, .why_len = sizeof(why),
        };
        int r = store_vm_resize(api->store, &rq, vm);
        if (credit_failed(r, why, resp))
                return -1;
        if (r == -ENOSPC) {
                snprintf(msg, sizeof(msg), "the VPS's host has no room for %s (%s)", size, why);
                json_invalid(resp, "size", msg, NULL);
                return -1;
        }
        if (r == -EINVAL) {
                json_invalid(resp, "size", "disks never shrink", NULL);
                return -1;
        }
        if (r < 0) {
                store_failed(resp, r);
                return -1;
        }
        return 0;
}

static void vps_action(struct api *api, uint64_t account, uint64_t id, const struct idem *idem,
                       const struct http_req *req,
                       struct http_resp *resp)
{
        json_t *body = NULL;
        const char *action;
        struct vm vm;
        size_t i;
        int r;

        /* 404 before 422: an unknown VPS is unknown whatever the body says. */
        r = store_vm_get(api->store, account, id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(action = req_string(body, "action", resp, actions)))
                goto out;
        for (i = 0; actions[i] && strcmp(actions[i], action) != 0; i++)
                ;
        if (!actions[i]) {
                json_invalid(resp, "action", "Invalid action specified", actions);
                goto out;
        }
        if (action_codes[i] == VM_ACT__MAX) {
                if (vps_resize(api, account, &vm, idem, body, resp) < 0)
                        goto out;
        } else if ((r = store_vm_action(api->store, account, id, action_codes[i], idem, &vm)) <
                   0) {
                store_failed(resp, r);
                goto out;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        json_respond(resp, 202, json_pack("{s:o}", "data", vps_json(api, &vm, util_now_ms())));
out:
        json_decref(body);
}

/* ---- snapshots (Tasman's addition: /v1/vps/{id}/snapshots) ---- */

static json_t *snap_json(const struct api *api, const struct snapshot *p)
{
        char id[ID_STR_MAX], vps[ID_STR_MAX], created[21], ready[21];
        id_encode(store_id_key(api->store), "snap", p->id, id, sizeof(id));
        id_encode(store_id_key(api->store), "vps", p->vm_id, vps, sizeof(vps));
        util_iso8601_utc(p->created_at, created);
        if (p->ready_at)
                util_iso8601_utc(p->ready_at, ready);
        return json_pack("{s:s, s:s, s:s, s:s, s:b, s:i, s:i, s:i, s:s, s:s, s:s?}", "id", id,
                         "vps_id", vps, "name", p->name, "status",
                         snap_state_to_string(p->state), "online", p->online, "size_gb",
                         (int)p->disk_gb, "memory_mb", (int)p->ram_mb, "vcpus", (int)p->vcpus,
                         "image", p->image, "created_at", created, "ready_at",
                         p->ready_at ? ready : NULL);
}

/* Answers with one snapshot (and, with location, where it lives). */
static void snap_respond(const struct api *api, int status, const struct snapshot *p,
                         int location, struct http_resp *resp)
{
        json_t *one = snap_json(api, p);
        if (!one) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_respond(resp, status, json_pack("{s:o}", "data", one));
        if (location) {
                char id[ID_STR_MAX], vps[ID_STR_MAX];
                id_encode(store_id_key(api->store), "snap", p->id, id, sizeof(id));
                id_encode(store_id_key(api->store), "vps", p->vm_id, vps, sizeof(vps));
                http_resp_header(resp, "Location", "/v1/vps/%s/snapshots/%s", vps, id);
        }
}

static void snap_failed(struct http_resp *resp, int r)
{
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "snapshot not found", NULL);
        else
                store_failed(resp, r == -EALREADY ? -EEXIST : r == -EEXIST ? -EIO : r);
}

/* The VPS's snapshot snap_id (0: a malformed id): 0, or -1 after
 * answering 404 (not this VPS's, or not the account's) or 500. */
static int snap_of_vps(struct api *api, uint64_t account, uint64_t vps_id, uint64_t snap_id,
                       struct snapshot *ret, struct http_resp *resp)
{
        int r = snap_id ? store_snap_get(api->store, account, snap_id, ret) : -ENOENT;
        if (r == 0 && ret->vm_id != vps_id)
                r = -ENOENT;
        if (r < 0) {
                snap_failed(resp, r);
                return -1;
        }
        return 0;
}

/* Why the VPS cannot take a snapshot or a restore now (409). */
static void snap_busy(struct api *api, uint64_t account, uint64_t vps_id, const char *what,
                      struct http_resp *resp)
{
        char id[ID_STR_MAX], msg[192];
        struct vm vm;
        const char *why = "a snapshot of it is being made";
        id_encode(store_id_key(api->store), "vps", vps_id, id, sizeof(id));
        if (store_vm_get(api->store, account, vps_id, &vm) == 0) {
                if (vm.rebuild_seq > vm.obs_rebuild_done)
                        why = "it is being rebuilt";
                else if (vm.restore_seq > vm.obs_restore_done)
                        why = "a snapshot is being restored to it";
        }
        snprintf(msg, sizeof(msg), "VPS %s cannot %s now: %s; try again when it is done", id,
                 what, why);
        json_error(resp, 409, "conflict", msg, NULL);
}

/* An optional boolean field: 0 (*ret untouched when absent or null), or
 * -EINVAL after answering 422. */
static int bool_arg(json_t *body, const char *field, int *ret, struct http_resp *resp)
{
        json_t *v = json_object_get(body, field);
        if (!v || json_is_null(v))
                return 0;
        if (!json_is_boolean(v)) {
                char msg[96];
                snprintf(msg, sizeof(msg), "%s must be true or false", field);
                json_invalid(resp, field, msg, NULL);
                return -EINVAL;
        }
        *ret = json_is_true(v);
        return 0;
}

/* The "name" of a snapshot: as VPS names. NULL after answering 422. */
static const char *snap_name_arg(json_t *body, struct http_resp *resp)
{
        const char *name = req_string(body, "name", resp, NULL);
        if (name && !valid_name(name)) {
                json_invalid(resp, "name",
                             "name must be 1 to 63 letters, digits, '-' or '.', not starting "
                             "or ending with '-' or '.'",
                             NULL);
                return NULL;
        }
        return name;
}

static void snap_name_taken(const struct api *api, uint64_t vps_id, const char *name,
                            int creating, struct http_resp *resp)
{
        char id[ID_STR_MAX], msg[192];
        id_encode(store_id_key(api->store), "vps", vps_id, id, sizeof(id));
        snprintf(msg, sizeof(msg), "VPS %s has a snapshot named %s already%s", id, name,
                 creating ? " (\"overwrite\": true replaces it)" : "");
        json_error(resp, 409, "conflict", msg, json_pack("{s:s}", "field", "name"));
}

/* GET /v1/vps/{id}/snapshots: those that exist (ready, or being deleted). */
static void snap_list(struct api *api, uint64_t account, uint64_t vps_id, struct http_resp *resp)
{
        struct snapshot *ps = NULL;
        struct vm vm;
        size_t n = 0;
        int r = store_vm_get(api->store, account, vps_id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (store_snap_list(api->store, account, vps_id, &ps, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, snap_json(api, &ps[i]));
        free(ps);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

/* POST /v1/vps/{id}/snapshots {"name", "online", "overwrite"}: 202, the
 * snapshot creating; its host makes it (shutting the VPS down for it
 * unless online). */
static void snap_create(struct api *api, uint64_t account, uint64_t vps_id,
                        const struct idem *idem, const struct http_req *req,
                        struct http_resp *resp)
{
        json_t *body = NULL;
        struct snapshot p;
        struct vm vm;
        const char *name;
        int online = 0, overwrite = 0;
        /* 404 before 422: an unknown VPS is unknown whatever the body says. */
        int r = store_vm_get(api->store, account, vps_id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(name = snap_name_arg(body, resp)) || bool_arg(body, "online", &online, resp) < 0 ||
            bool_arg(body, "overwrite", &overwrite, resp) < 0)
                goto out;
        r = store_snap_create(api->store, account, vps_id, name, online,
                              overwrite ? STORE_SNAP_OVERWRITE : 0, idem,
                              util_now_ms(), &p);
        if (r == -EEXIST) {
                snap_name_taken(api, vps_id, name, 1, resp);
                goto out;
        }
        if (r == -EBUSY) {
                snap_busy(api, account, vps_id, "take a snapshot", resp);
                goto out;
        }
        if (r == -EDQUOT) {
                char msg[128];
                snprintf(msg, sizeof(msg),
                         "at most %d snapshots per VPS: delete one, or overwrite one by name",
                         STORE_SNAPS_PER_VM);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s}", "field", "name", "reason", "limit"));
                goto out;
        }
        if (r == -ENOENT) { /* deleted meanwhile */
                store_failed(resp, r);
                goto out;
        }
        if (r < 0) {
                snap_failed(resp, r);
                goto out;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        snap_respond(api, 202, &p, 1, resp);
        log_info("vm %llu: snapshot %llu (%s) asked for", (unsigned long long)vps_id,
                 (unsigned long long)p.id, online ? "online" : "offline");
out:
        json_decref(body);
}

/* PATCH /v1/vps/{id}/snapshots/{sid} {"name"} */
static void snap_rename(struct api *api, uint64_t account, uint64_t vps_id, uint64_t snap_id,
                        const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL;
        struct snapshot p;
        struct vm vm;
        const char *name;
        int r = store_vm_get(api->store, account, vps_id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (snap_of_vps(api, account, vps_id, snap_id, &p, resp) < 0)
                return;
        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(name = snap_name_arg(body, resp)))
                goto out;
        r = store_snap_rename(api->store, account, snap_id, name, 0, &p);
        if (r == -EEXIST)
                snap_name_taken(api, vps_id, name, 0, resp);
        else if (r < 0)
                snap_failed(resp, r);
        else
                snap_respond(api, 200, &p, 0, resp);
out:
        json_decref(body);
}

/* DELETE /v1/vps/{id}/snapshots/{sid}: 202, deleting until its host has
 * dropped it (then it is gone: 404). */
static void snap_delete(struct api *api, uint64_t account, uint64_t vps_id, uint64_t snap_id,
                        struct http_resp *resp)
{
        struct snapshot p;
        struct vm vm;
        int r = store_vm_get(api->store, account, vps_id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (snap_of_vps(api, account, vps_id, snap_id, &p, resp) < 0)
                return;
        r = store_snap_delete(api->store, account, snap_id, &p);
        if (r == -EBUSY) {
                char id[ID_STR_MAX], msg[160];
                id_encode(store_id_key(api->store), "snap", snap_id, id, sizeof(id));
                snprintf(msg, sizeof(msg),
                         "snapshot %s is being restored; delete it once the restore is done", id);
                json_error(resp, 409, "conflict", msg, NULL);
                return;
        }
        if (r < 0) {
                snap_failed(resp, r);
                return;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        snap_respond(api, 202, &p, 0, resp);
}

/* POST /v1/vps/{id}/snapshots/{sid}/restore (no body): 202, the VPS
 * restoring; its host puts the snapshot's disk back and power-cycles it. */
static void snap_restore(struct api *api, uint64_t account, uint64_t vps_id, uint64_t snap_id,
                         const struct idem *idem, struct http_resp *resp)
{
        struct snapshot p;
        struct vm vm;
        int r = store_vm_get(api->store, account, vps_id, &vm);
        if (r < 0) {
                store_failed(resp, r);
                return;
        }
        if (snap_of_vps(api, account, vps_id, snap_id, &p, resp) < 0)
                return;
        r = store_snap_restore(api->store, account, snap_id, idem, &vm);
        if (r == -EBUSY && p.state != SNAP_READY) {
                char id[ID_STR_MAX], msg[160];
                id_encode(store_id_key(api->store), "snap", snap_id, id, sizeof(id));
                snprintf(msg, sizeof(msg), "snapshot %s is %s: only a ready one can be restored",
                         id, snap_state_to_string(p.state));
                json_error(resp, 409, "conflict", msg, NULL);
                return;
        }
        if (r == -EBUSY) {
                snap_busy(api, account, vps_id, "be restored", resp);
                return;
        }
        if (r < 0) {
                snap_failed(resp, r);
                return;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        json_respond(resp, 202, json_pack("{s:o}", "data", vps_json(api, &vm, util_now_ms())));
}

/* ---- SSH keys (Tasman's addition: what the spec's ssh_keys ids name) ---- */

static json_t *sshkey_json(const struct api *api, const struct ssh_key *k)
{
        char id[ID_STR_MAX], created[21];
        struct sshkey_info info;
        id_encode(store_id_key(api->store), "ssh", k->id, id, sizeof(id));
        util_iso8601_utc(k->created_at, created);
        if (sshkey_parse(k->public_key, strlen(k->public_key), &info, NULL, 0) < 0)
                memset(&info, 0, sizeof(info));
        return json_pack("{s:s, s:s, s:s, s:s, s:i, s:s, s:s}", "id", id, "name", k->name,
                         "type", info.type, "fingerprint", k->fingerprint, "bits",
                         (int)info.bits, "public_key", k->public_key, "created_at", created);
}

/* Drops a trailing partial UTF-8 sequence (after a cut by bytes). */
static void utf8_cut(char *str)
{
        size_t n = strlen(str), i = n;
        while (i > 0 && ((unsigned char)str[i - 1] & 0xc0) == 0x80)
                i--; /* continuation bytes */
        if (i == 0)
                return;
        unsigned char lead = (unsigned char)str[i - 1];
        size_t want = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
        if (n - (i - 1) < want)
                str[i - 1] = '\0';
}

static void sshkey_failed(struct http_resp *resp, int r)
{
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "SSH key not found", NULL);
        else
                store_failed(resp, r);
}

static void sshkey_create(struct api *api, uint64_t account, const struct idem *idem,
                          const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL, *v;
        struct sshkey_info info;
        char why[128] = "";
        int r;

        if (api_body_json(req, resp, &body) < 0)
                return;
        /* large (a 4 KiB key each): not on the stack */
        struct ssh_key *kp = calloc(1, sizeof(*kp)), *mp = calloc(1, sizeof(*mp));
        if (!kp || !mp) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        const char *pub = req_string(body, "public_key", resp, NULL);
        if (!pub)
                goto out;
        size_t len = strlen(pub);
        if (len >= STORE_SSHKEY_MAX ||
            sshkey_parse(pub, len, &info, why, sizeof(why)) < 0) {
                char msg[200];
                snprintf(msg, sizeof(msg), "public_key is not a valid OpenSSH public key: %s",
                         len >= STORE_SSHKEY_MAX ? "too long" : why);
                json_invalid(resp, "public_key", msg, NULL);
                goto out;
        }
        v = json_object_get(body, "name");
        const char *name = NULL;
        if (v && !json_is_null(v)) {
                name = json_is_string(v) ? json_string_value(v) : "";
                size_t n = strlen(name);
                int ok = n >= 1 && n < sizeof(kp->name);
                for (size_t i = 0; ok && i < n; i++)
                        ok = (unsigned char)name[i] >= 0x20 && name[i] != 0x7f;
                if (!ok) {
                        json_invalid(resp, "name", "name must be 1 to 63 printable characters",
                                     NULL);
                        goto out;
                }
        }
        kp->account_id = account;
        /* the key's comment names it when no name is given */
        util_strlcpy(kp->name, name ? name : info.comment[0] ? info.comment : info.fingerprint,
                     sizeof(kp->name));
        utf8_cut(kp->name); /* a long comment may have been cut inside a character */
        util_strlcpy(kp->fingerprint, info.fingerprint, sizeof(kp->fingerprint));
        /* kept without surrounding blanks or a trailing newline */
        while (len && (pub[len - 1] == '\n' || pub[len - 1] == ' ' || pub[len - 1] == '\t'))
                len--;
        while (len && (*pub == ' ' || *pub == '\t')) {
                pub++;
                len--;
        }
        memcpy(kp->public_key, pub, len);
        kp->public_key[len] = '\0';
        r = store_sshkey_create(api->store, kp, idem, mp);
        if (r == -EEXIST) {
                char id[ID_STR_MAX], msg[160];
                id_encode(store_id_key(api->store), "ssh", mp->id, id, sizeof(id));
                snprintf(msg, sizeof(msg), "this public key is already registered as %s", id);
                json_invalid(resp, "public_key", msg, NULL);
                goto out;
        }
        if (r == -EDQUOT) {
                char msg[96];
                snprintf(msg, sizeof(msg), "an account may keep at most %d SSH keys",
                         STORE_SSHKEYS_PER_ACCOUNT);
                json_invalid(resp, "public_key", msg, NULL);
                goto out;
        }
        if (r < 0) {
                store_failed(resp, r == -EALREADY ? -EEXIST : -EIO);
                goto out;
        }
        char id[ID_STR_MAX];
        id_encode(store_id_key(api->store), "ssh", mp->id, id, sizeof(id));
        json_t *one = sshkey_json(api, mp);
        if (!one) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        json_respond(resp, 201, json_pack("{s:o}", "data", one));
        http_resp_header(resp, "Location", "/v1/ssh_keys/%s", id);
out:
        free(kp);
        free(mp);
        json_decref(body);
}

static void sshkey_list(struct api *api, uint64_t account, const struct http_req *req,
                        struct http_resp *resp)
{
        struct vm_query q = { .account_id = account };
        struct ssh_key *ks = NULL;
        size_t limit, n = 0;
        if (page_args(api, req, "ssh", &limit, &q.after_id, resp) < 0)
                return;
        q.limit = limit ? limit + 1 : 0;
        if (store_sshkey_page(api->store, &q, &ks, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        int more = limit && n > limit;
        if (more)
                n = limit;
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, sshkey_json(api, &ks[i]));
        char cur[ID_STR_MAX];
        if (more)
                id_encode(store_id_key(api->store), "ssh", ks[n - 1].id, cur, sizeof(cur));
        free(ks);
        json_respond(resp, 200, json_pack("{s:o, s:s?}", "data", arr, "next_cursor",
                                          more ? cur : NULL));
}

static void sshkey_get(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        struct ssh_key *k = malloc(sizeof(*k));
        int r = k ? store_sshkey_get(api->store, account, id, k) : -ENOMEM;
        json_t *one = r < 0 ? NULL : sshkey_json(api, k);
        if (r < 0)
                sshkey_failed(resp, r);
        else if (!one)
                json_error(resp, 500, "internal_error", "internal error", NULL);
        else
                json_respond(resp, 200, json_pack("{s:o}", "data", one));
        free(k);
}

static void sshkey_delete(struct api *api, uint64_t account, uint64_t id, struct http_resp *resp)
{
        int r = store_sshkey_delete(api->store, account, id);
        if (r < 0)
                sshkey_failed(resp, r);
        else
                json_respond(resp, 204, NULL);
}

/* ---- templates (one-click apps) ---- */

/* A deployment's status follows its VPS's: the VPS is being made or
 * started ("deploying"), runs ("running"; the app installs on first boot),
 * or whatever else it says; "deleted" if it was deleted by itself. */
static json_t *deploy_json(const struct api *api, const struct deployment *d)
{
        char id[ID_STR_MAX], vps_id[ID_STR_MAX], created[21];
        struct vm vm;
        const char *status = "deleted";
        if (store_vm_get(api->store, d->account_id, d->vm_id, &vm) == 0) {
                status = api_vps_status(&vm, util_now_ms(), api->host_timeout_ms);
                if (strcmp(status, "provisioning") == 0 || strcmp(status, "starting") == 0)
                        status = "deploying";
        }
        id_encode(store_id_key(api->store), "dep", d->id, id, sizeof(id));
        id_encode(store_id_key(api->store), "vps", d->vm_id, vps_id, sizeof(vps_id));
        util_iso8601_utc(d->created_at, created);
        json_t *config = json_loads(d->config, 0, NULL);
        return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "id", id, "template",
                         d->template_id, "version", d->version, "name", d->name, "status",
                         status, "vps_id", vps_id, "config", config ? config : json_object(),
                         "created_at", created);
}

static void templates_list(struct http_resp *resp)
{
        size_t n;
        const struct tpl *all = templates_all(&n);
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, templates_json(&all[i]));
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

static void template_deploy(struct api *api, uint64_t account, const struct idem *idem,
                            const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL, *v, *full = NULL, *pub = NULL;
        char *user_data = NULL, *config_text = NULL;
        const char *name, *region, *version;
        const struct tpl *t;
        char field[80], why[200];
        struct vm vm;
        uint64_t dep_id = 0;

        if (api_body_json(req, resp, &body) < 0)
                return;
        const char *tid = req_string(body, "template", resp, templates_ids());
        if (!tid)
                goto out;
        if (!(t = templates_find(tid))) {
                json_invalid(resp, "template", "Invalid template specified", templates_ids());
                goto out;
        }
        if (!(name = req_string(body, "name", resp, NULL)))
                goto out;
        if (!valid_name(name)) {
                json_invalid(resp, "name",
                             "name must be 1 to 63 letters, digits, '-' or '.', not starting "
                             "or ending with '-' or '.'",
                             NULL);
                goto out;
        }
        version = t->versions[0];
        v = json_object_get(body, "version");
        if (v && !json_is_null(v)) {
                const char *const *ver = t->versions;
                while (*ver && (!json_is_string(v) || strcmp(*ver, json_string_value(v)) != 0))
                        ver++;
                if (!*ver) {
                        json_invalid(resp, "version", "Invalid version specified", t->versions);
                        goto out;
                }
                version = *ver;
        }
        if (region_arg(api, body, &region, resp) < 0)
                goto out;
        if (templates_validate(t, json_object_get(body, "config"), &full, field, sizeof(field),
                               why, sizeof(why)) < 0) {
                json_invalid(resp, field, why, NULL);
                goto out;
        }
        pub = templates_public_config(t, full);
        config_text = pub ? json_dumps(pub, JSON_COMPACT) : NULL;
        user_data = templates_user_data(t, version, full);
        const struct size_def *sz = catalog_size(t->size);
        if (!config_text || !user_data || !sz || strlen(config_text) >= sizeof(((struct deployment *)0)->config)) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        struct image img;
        int ir = store_image_get(api->store, t->image, &img);
        if (ir == -ENOENT) {
                char msg[160];
                snprintf(msg, sizeof(msg), "the template's image %s is not in the catalog",
                         t->image);
                json_invalid(resp, "template", msg, NULL);
                goto out;
        }
        if (ir < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        char capacity[256] = "";
        const struct deploy_new dn = { .template_id = t->id, .version = version,
                                       .config = config_text };
        struct vm_new nv = {
                .account_id = account, .name = name, .size = t->size, .image = t->image,
                .site = region, .vcpus = sz->vcpus, .ram_mb = sz->ram_mb, .disk_gb = sz->disk_gb,
                .sched = api->sched.cpu_ratio > 0 ? &api->sched : NULL, .why = capacity,
                .why_len = sizeof(capacity), .idem = idem, .user_data = user_data,
                .deploy = &dn, .ret_deploy_id = &dep_id,
        };
        int64_t now = util_now_ms();
        int r = store_vm_create(api->store, &nv, now, now - api->host_timeout_ms, &vm);
        if (addresses_failed(api, r, 0, region, capacity, resp) ||
            credit_failed(r, capacity, resp))
                goto out;
        if (r == -ENOSPC) {
                char msg[400];
                snprintf(msg, sizeof(msg), "no host has room for a %s (%s)", t->size, capacity);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s, s:s}", "field", region ? "region" : "template",
                                     "reason", "capacity", "hosts", capacity));
                goto out;
        }
        if (r < 0) {
                store_failed(resp, r == -ENOENT ? -EIO : r);
                goto out;
        }
        if (api->hub)
                hub_notify(api->hub, vm.host_id);
        dns_kick(api->dns);
        struct deployment d;
        char id[ID_STR_MAX];
        if (store_deploy_get(api->store, account, dep_id, &d) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                goto out;
        }
        id_encode(store_id_key(api->store), "dep", dep_id, id, sizeof(id));
        json_respond(resp, 201, json_pack("{s:o}", "data", deploy_json(api, &d)));
        http_resp_header(resp, "Location", "/v1/templates/deployments/%s", id);
out:
        if (user_data) /* it holds the secrets: wipe before freeing */
                memset(user_data, 0, strlen(user_data));
        free(user_data);
        free(config_text);
        json_decref(pub);
        json_decref(full);
        json_decref(body);
}

static void deploy_list(struct api *api, uint64_t account, const struct http_req *req,
                        struct http_resp *resp)
{
        struct vm_query q = { .account_id = account };
        struct deployment *ds = NULL;
        size_t limit, n = 0;
        if (page_args(api, req, "dep", &limit, &q.after_id, resp) < 0)
                return;
        q.limit = limit ? limit + 1 : 0;
        if (store_deploy_page(api->store, &q, &ds, &n) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        int more = limit && n > limit;
        if (more)
                n = limit;
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, deploy_json(api, &ds[i]));
        char cur[ID_STR_MAX];
        if (more)
                id_encode(store_id_key(api->store), "dep", ds[n - 1].id, cur, sizeof(cur));
        free(ds);
        json_respond(resp, 200, json_pack("{s:o, s:s?}", "data", arr, "next_cursor",
                                          more ? cur : NULL));
}

static void deploy_failed(struct http_resp *resp, int r)
{
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "deployment not found", NULL);
        else
                store_failed(resp, r);
}

/* ---- private networks ---- */

static json_t *net_json(const struct api *api, const struct network *w, const uint64_t *vms)
{
        char id[ID_STR_MAX], created[21];
        json_t *ids = json_array();
        id_encode(store_id_key(api->store), "net", w->id, id, sizeof(id));
        util_iso8601_utc(w->created_at, created);
        for (size_t i = 0; ids && i < w->n_vms; i++) {
                char vid[ID_STR_MAX];
                id_encode(store_id_key(api->store), "vps", vms[w->first_vm + i], vid, sizeof(vid));
                json_array_append_new(ids, json_string(vid));
        }
        /* vps_ids: Tasman's addition (the VPS attached to it) */
        return json_pack("{s:s, s:s, s:s, s:o, s:s}", "id", id, "name", w->name, "cidr", w->cidr,
                         "vps_ids", ids, "created_at", created);
}

/* Answers with one network (and, with location, where it lives). */
static void net_respond(struct api *api, uint64_t account, uint64_t net_id, int status,
                        int location, struct http_resp *resp)
{
        struct network w;
        uint64_t *vms = NULL;
        int r = store_net_get(api->store, account, net_id, &w, &vms);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "network not found", NULL);
                return;
        }
        json_t *one = r == 0 ? net_json(api, &w, vms) : NULL;
        free(vms);
        if (!one) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_respond(resp, status, json_pack("{s:o}", "data", one));
        if (location) {
                char id[ID_STR_MAX];
                id_encode(store_id_key(api->store), "net", net_id, id, sizeof(id));
                http_resp_header(resp, "Location", "/v1/networks/%s", id);
        }
}

/* GET /v1/networks: the account's networks in id order (at most
 * STORE_NETS_PER_ACCOUNT: one page). */
static void net_list(struct api *api, uint64_t account, struct http_resp *resp)
{
        struct network *ws = NULL;
        uint64_t *vms = NULL;
        size_t n = 0, n_vms = 0;
        if (store_net_list(api->store, account, &ws, &n, &vms, &n_vms) < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        json_t *arr = json_array();
        for (size_t i = 0; arr && i < n; i++)
                json_array_append_new(arr, net_json(api, &ws[i], vms));
        free(ws);
        free(vms);
        json_respond(resp, 200, json_pack("{s:o}", "data", arr));
}

/* POST /v1/networks {"name", "cidr"}: 201 and Location. */
static void net_create(struct api *api, uint64_t account, const struct idem *idem,
                       const struct http_req *req, struct http_resp *resp)
{
        json_t *body = NULL;
        struct ipam_prefix p;
        struct network w;
        char why[160], msg[256];
        const char *name, *cidr;

        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(name = req_string(body, "name", resp, NULL)))
                goto out;
        if (!valid_name(name)) {
                json_invalid(resp, "name",
                             "name must be 1 to 63 letters, digits, '-' or '.', not starting "
                             "or ending with '-' or '.'",
                             NULL);
                goto out;
        }
        if (!(cidr = req_string(body, "cidr", resp, NULL)))
                goto out;
        if (ipam_private_check(cidr, &p, why, sizeof(why)) < 0) {
                json_invalid(resp, "cidr", why, NULL);
                goto out;
        }
        int r = store_net_create(api->store, account, name, cidr, idem, util_now_ms(), &w);
        if (r == -EADDRINUSE) {
                char other[ID_STR_MAX];
                id_encode(store_id_key(api->store), "net", w.id, other, sizeof(other));
                snprintf(msg, sizeof(msg), "cidr %s overlaps network %s (%s)", cidr, other,
                         w.cidr);
                json_invalid(resp, "cidr", msg, NULL);
                goto out;
        }
        if (r == -EDQUOT) {
                snprintf(msg, sizeof(msg), "an account may have at most %d networks",
                         STORE_NETS_PER_ACCOUNT);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s}", "field", "name", "reason", "limit"));
                goto out;
        }
        if (r < 0) {
                store_failed(resp, r == -EALREADY ? -EEXIST : -EIO);
                goto out;
        }
        net_respond(api, account, w.id, 201, 1, resp);
        log_info("network %llu: created for account %llu (%s, vni %u)",
                 (unsigned long long)w.id, (unsigned long long)account, w.cidr, w.vni);
out:
        json_decref(body);
}

/* DELETE /v1/networks/{id}: 204; 409 while VPS are attached. */
static void net_delete(struct api *api, uint64_t account, uint64_t net_id,
                       struct http_resp *resp)
{
        int r = store_net_delete(api->store, account, net_id);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "network not found", NULL);
        } else if (r == -EBUSY) {
                struct network w;
                uint64_t *vms = NULL;
                char id[ID_STR_MAX], first[ID_STR_MAX] = "", msg[256];
                size_t n = 0;
                if (store_net_get(api->store, account, net_id, &w, &vms) == 0) {
                        n = w.n_vms;
                        if (n)
                                id_encode(store_id_key(api->store), "vps", vms[0], first,
                                          sizeof(first));
                }
                free(vms);
                id_encode(store_id_key(api->store), "net", net_id, id, sizeof(id));
                if (n)
                        snprintf(msg, sizeof(msg),
                                 "network %s has %zu VPS attached (%s%s): delete them first",
                                 id, n, first, n > 1 ? ", ..." : "");
                else
                        snprintf(msg, sizeof(msg), "network %s has VPS attached: delete them "
                                                   "first", id);
                json_error(resp, 409, "conflict", msg, NULL);
        } else if (r < 0) {
                store_failed(resp, -EIO);
        } else {
                json_respond(resp, 204, NULL);
        }
}

/* POST /v1/networks/{id}/attach {"vps_id"}: 202 with the VPS, which gets a
 * NIC on the network with its first free address. */
static void net_attach(struct api *api, uint64_t account, uint64_t net_id,
                       const struct idem *idem, const struct http_req *req,
                       struct http_resp *resp)
{
        json_t *body = NULL;
        struct network w;
        struct vm vm;
        uint64_t vm_id = 0;
        char nid[ID_STR_MAX], msg[256];
        const char *vid;
        /* 404 before 422: an unknown network is unknown whatever the body says. */
        int r = store_net_get(api->store, account, net_id, &w, NULL);
        if (r == -ENOENT) {
                json_error(resp, 404, "not_found", "network not found", NULL);
                return;
        }
        if (r < 0) {
                store_failed(resp, -EIO);
                return;
        }
        if (api_body_json(req, resp, &body) < 0)
                return;
        if (!(vid = req_string(body, "vps_id", resp, NULL)))
                goto out;
        if (id_decode(store_id_key(api->store), "vps", vid, &vm_id) < 0 ||
            store_vm_get(api->store, account, vm_id, &vm) == -ENOENT) {
                json_error(resp, 404, "not_found", "VPS not found",
                           json_pack("{s:s}", "field", "vps_id"));
                goto out;
        }
        id_encode(store_id_key(api->store), "net", net_id, nid, sizeof(nid));
        r = store_net_attach(api->store, account, net_id, vm_id, idem, &vm);
        if (r == -EEXIST) {
                snprintf(msg, sizeof(msg), "VPS %.32s is attached to network %s already", vid,
                         nid);
                json_error(resp, 409, "conflict", msg, json_pack("{s:s}", "field", "vps_id"));
        } else if (r == -EDQUOT) {
                snprintf(msg, sizeof(msg),
                         "VPS %.32s has %u network interfaces (its public one counts), the most "
                         "a VPS can have",
                         vid, TMSG_MAX_NICS);
                json_error(resp, 422, "validation_error", msg,
                           json_pack("{s:s, s:s}", "field", "vps_id", "reason", "limit"));
        } else if (r == -ERANGE) {
                snprintf(msg, sizeof(msg), "network %s (%s) has no free address left", nid,
                         w.cidr);
                json_error(resp, 409, "conflict", msg, NULL);
        } else if (r == -ENOENT) { /* deleted meanwhile */
                json_error(resp, 404, "not_found", "network or VPS not found", NULL);
        } else if (r < 0) {
                store_failed(resp, r == -EALREADY ? -EEXIST : -EIO);
        } else {
                notify_net_hosts(api, vm_id);
                json_respond(resp, 202,
                             json_pack("{s:o}", "data", vps_json(api, &vm, util_now_ms())));
                log_info("vm %llu: attached to network %llu", (unsigned long long)vm_id,
                         (unsigned long long)net_id);
        }
out:
        json_decref(body);
}

/* GET /v1/networks/{id}/vpn-config: the spec's Netbird setup key. This
 * installation has no Netbird integration: 501 for the account's
 * networks (404 for any other id). */
static void net_vpn_config(struct api *api, uint64_t account, uint64_t net_id,
                           struct http_resp *resp)
{
        struct network w;
        int r = store_net_get(api->store, account, net_id, &w, NULL);
        if (r == -ENOENT)
                json_error(resp, 404, "not_found", "network not found", NULL);
        else if (r < 0)
                store_failed(resp, -EIO);
        else
                json_error(resp, 501, "not_implemented",
                           "VPN access (Netbird) is not configured on this installation: no "
                           "setup key can be issued",
                           NULL);
}

/* ---- routing ---- */

/* Splits "/v1/vps/ID/actions" into segments (at most max, each < 64). */
static int split_path(const char *path, char seg[][64], int max)
{
        int n = 0;
        if (*path != '/')
                return -1;
        while (*path == '/') {
                path++;
                if (!*path)
                        break; /* one trailing slash is tolerated */
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

static void native_route(void *ud, const struct http_req *req, struct http_resp *resp);

void api_native_handle(void *ud, const struct http_req *req, struct http_resp *resp)
{
        int64_t t0 = util_mono_us();
        native_route(ud, req, resp);
        metrics_request(METRICS_NATIVE, resp->status, util_mono_us() - t0);
}

/* Which handler a path and method reach, decided before authentication
 * answers anything but 404/405 (which need no key). */
enum route {
        RT_NONE,
        RT_VPS_LIST,
        RT_VPS_CREATE,
        RT_VPS_GET,
        RT_VPS_DELETE,
        RT_VPS_ACTION,
        RT_SSH_LIST,
        RT_SSH_CREATE,
        RT_SSH_GET,
        RT_SSH_DELETE,
        RT_TPL_LIST,
        RT_TPL_DEPLOY,
        RT_DEP_LIST,
        RT_DEP_GET,
        RT_DEP_DELETE,
        RT_SNAP_LIST,
        RT_SNAP_CREATE,
        RT_SNAP_GET,
        RT_SNAP_RENAME,
        RT_SNAP_DELETE,
        RT_SNAP_RESTORE,
        RT_NET_LIST,
        RT_NET_CREATE,
        RT_NET_GET,
        RT_NET_DELETE,
        RT_NET_ATTACH,
        RT_NET_VPN,
};

static enum route route_of(const struct http_req *req, char seg[][64], int n,
                           struct http_resp *resp)
{
        const char *m = req->method;
        int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0,
            del = strcmp(m, "DELETE") == 0, patch = strcmp(m, "PATCH") == 0;

        if (n < 2 || strcmp(seg[0], "v1") != 0)
                goto not_found;
        if (strcmp(seg[1], "vps") == 0) {
                if (n == 2) {
                        if (get || post)
                                return get ? RT_VPS_LIST : RT_VPS_CREATE;
                        api_route_error(req, resp, 1, "GET, POST");
                        return RT_NONE;
                }
                if (n == 3) {
                        if (get || del)
                                return get ? RT_VPS_GET : RT_VPS_DELETE;
                        api_route_error(req, resp, 1, "GET, DELETE");
                        return RT_NONE;
                }
                if (n == 4 && strcmp(seg[3], "actions") == 0) {
                        if (post)
                                return RT_VPS_ACTION;
                        api_route_error(req, resp, 1, "POST");
                        return RT_NONE;
                }
                if (n >= 4 && strcmp(seg[3], "snapshots") == 0) {
                        if (n == 4 && (get || post))
                                return get ? RT_SNAP_LIST : RT_SNAP_CREATE;
                        if (n == 5 && (get || patch || del))
                                return get ? RT_SNAP_GET : patch ? RT_SNAP_RENAME : RT_SNAP_DELETE;
                        if (n == 6 && strcmp(seg[5], "restore") == 0 && post)
                                return RT_SNAP_RESTORE;
                        if (n == 6 && strcmp(seg[5], "restore") != 0)
                                goto not_found;
                        api_route_error(req, resp, 1,
                                        n == 4   ? "GET, POST"
                                        : n == 5 ? "GET, PATCH, DELETE"
                                                 : "POST");
                        return RT_NONE;
                }
        }
        if (strcmp(seg[1], "ssh_keys") == 0 && (n == 2 || n == 3)) {
                if (n == 2 && (get || post))
                        return get ? RT_SSH_LIST : RT_SSH_CREATE;
                if (n == 3 && (get || del))
                        return get ? RT_SSH_GET : RT_SSH_DELETE;
                api_route_error(req, resp, 1, n == 2 ? "GET, POST" : "GET, DELETE");
                return RT_NONE;
        }
        if (strcmp(seg[1], "networks") == 0 && n >= 2 && n <= 4) {
                if (n == 2 && (get || post))
                        return get ? RT_NET_LIST : RT_NET_CREATE;
                if (n == 3 && (get || del))
                        return get ? RT_NET_GET : RT_NET_DELETE;
                if (n == 4 && strcmp(seg[3], "attach") == 0 && post)
                        return RT_NET_ATTACH;
                if (n == 4 && strcmp(seg[3], "vpn-config") == 0 && get)
                        return RT_NET_VPN;
                if (n == 4 && strcmp(seg[3], "attach") != 0 && strcmp(seg[3], "vpn-config") != 0)
                        goto not_found;
                api_route_error(req, resp, 1,
                                n == 2   ? "GET, POST"
                                : n == 3 ? "GET, DELETE"
                                : strcmp(seg[3], "attach") == 0 ? "POST"
                                                                 : "GET");
                return RT_NONE;
        }
        if (strcmp(seg[1], "templates") == 0) {
                if (n == 2) {
                        if (get)
                                return RT_TPL_LIST;
                        api_route_error(req, resp, 1, "GET");
                        return RT_NONE;
                }
                if (n == 3 && strcmp(seg[2], "deploy") == 0) {
                        if (post)
                                return RT_TPL_DEPLOY;
                        api_route_error(req, resp, 1, "POST");
                        return RT_NONE;
                }
                if (n == 3 && strcmp(seg[2], "deployments") == 0) {
                        if (get)
                                return RT_DEP_LIST;
                        api_route_error(req, resp, 1, "GET");
                        return RT_NONE;
                }
                if (n == 4 && strcmp(seg[2], "deployments") == 0) {
                        if (get || del)
                                return get ? RT_DEP_GET : RT_DEP_DELETE;
                        api_route_error(req, resp, 1, "GET, DELETE");
                        return RT_NONE;
                }
        }
not_found:
        json_error(resp, 404, "not_found", "no such endpoint", NULL);
        return RT_NONE;
}

static void etag(const struct http_req *req, struct http_resp *resp);
extern const char api_openapi_json[]; /* generated from broker/openapi.json */
static void authed_route(struct api *api, enum route rt, const struct auth_who *who,
                         char seg[][64], const struct http_req *req, struct http_resp *resp);
static void dispatch(struct api *api, enum route rt, uint64_t account, const struct idem *idem,
                     char seg[][64], const struct http_req *req, struct http_resp *resp);

/* An Idempotency-Key on a POST: 0 to go ahead (idem filled), 1 when resp
 * is the answer: 422 for a malformed key or one used with another
 * request, or the first request's answer replayed (Idempotent-Replayed). */
static int idem_prepare(struct api *api, const struct http_req *req, const char *key,
                        struct idem *idem, struct http_resp *resp)
{
        size_t n = strlen(key);
        int ok = n >= 1 && n <= 255;
        for (size_t i = 0; ok && i < n; i++)
                ok = key[i] > 0x20 && key[i] < 0x7f;
        if (!ok) {
                json_invalid(resp, "Idempotency-Key",
                             "Idempotency-Key must be 1 to 255 printable characters", NULL);
                return 1;
        }
        idem->key = key;
        auth_request_hash(req->method, req->path, req->body, req->body_len, idem->hash);
        struct idem_rec rec;
        int r = store_idem_get(api->store, idem->account_id, key, util_now_ms(), &rec);
        if (r == -ENOENT)
                return 0;
        if (r < 0) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return 1;
        }
        if (memcmp(rec.hash, idem->hash, sizeof(rec.hash)) != 0) {
                free(rec.body);
                json_invalid(resp, "Idempotency-Key",
                             "this Idempotency-Key was used with another request", NULL);
                return 1;
        }
        if (rec.body) {
                resp->status = rec.status;
                resp->body = rec.body;
                resp->body_len = strlen(rec.body);
                resp->content_type = "application/json";
                if (rec.location[0])
                        http_resp_header(resp, "Location", "%s", rec.location);
        } else {
                /* The broker stopped before saving the answer: the effect
                 * is there, so answer from the resource as it is now. */
                char id[ID_STR_MAX], pseg[6][64];
                if (strncmp(req->path, "/v1/templates", 13) == 0) {
                        struct deployment d;
                        int g = store_deploy_get(api->store, idem->account_id, rec.resource_id, &d);
                        if (g < 0) {
                                deploy_failed(resp, g);
                                return 1;
                        }
                        json_respond(resp, rec.status, json_pack("{s:o}", "data", deploy_json(api, &d)));
                        id_encode(store_id_key(api->store), "dep", d.id, id, sizeof(id));
                        http_resp_header(resp, "Location", "/v1/templates/deployments/%s", id);
                } else if (split_path(req->path, pseg, 6) == 4 &&
                           strcmp(pseg[3], "snapshots") == 0) {
                        struct snapshot p;
                        int g = store_snap_get(api->store, idem->account_id, rec.resource_id, &p);
                        if (g < 0) {
                                snap_failed(resp, g);
                                return 1;
                        }
                        snap_respond(api, rec.status, &p, 1, resp);
                } else if (split_path(req->path, pseg, 6) == 2 &&
                           strcmp(pseg[1], "networks") == 0) {
                        net_respond(api, idem->account_id, rec.resource_id, rec.status, 1, resp);
                } else if (strncmp(req->path, "/v1/ssh_keys", 12) == 0) {
                        struct ssh_key *k = malloc(sizeof(*k));
                        int g = k ? store_sshkey_get(api->store, idem->account_id,
                                                     rec.resource_id, k)
                                  : -ENOMEM;
                        if (g < 0) {
                                free(k);
                                sshkey_failed(resp, g);
                                return 1;
                        }
                        json_respond(resp, rec.status, json_pack("{s:o}", "data", sshkey_json(api, k)));
                        id_encode(store_id_key(api->store), "ssh", k->id, id, sizeof(id));
                        http_resp_header(resp, "Location", "/v1/ssh_keys/%s", id);
                        free(k);
                } else {
                        struct vm vm;
                        int g = store_vm_get(api->store, idem->account_id, rec.resource_id, &vm);
                        if (g < 0) {
                                store_failed(resp, g);
                                return 1;
                        }
                        json_respond(resp, rec.status,
                                     json_pack("{s:o}", "data", vps_json(api, &vm, util_now_ms())));
                        id_encode(store_id_key(api->store), "vps", vm.id, id, sizeof(id));
                        if (rec.status == 201)
                                http_resp_header(resp, "Location", "/v1/vps/%s", id);
                }
        }
        http_resp_header(resp, "Idempotent-Replayed", "true");
        return 1;
}

static void native_route(void *ud, const struct http_req *req, struct http_resp *resp)
{
        struct api *api = ud;
        char seg[6][64];
        struct auth_who who;
        int n, r;

        if (req->too_large) {
                json_error(resp, 413, "payload_too_large", "request body too large", NULL);
                return;
        }
        n = split_path(req->path, seg, 6);
        if (n == 2 && strcmp(seg[0], "v1") == 0 && strcmp(seg[1], "openapi.json") == 0) {
                /* the document describes the API: no key needed to read it */
                if (strcmp(req->method, "GET") != 0) {
                        api_route_error(req, resp, 1, "GET");
                        return;
                }
                resp->status = 200;
                resp->content_type = "application/json";
                resp->body_len = strlen(api_openapi_json);
                resp->body = malloc(resp->body_len + 1);
                if (!resp->body) {
                        resp->body_len = 0;
                        json_error(resp, 500, "internal_error", "internal error", NULL);
                        return;
                }
                memcpy(resp->body, api_openapi_json, resp->body_len + 1);
                etag(req, resp);
                return;
        }
        enum route rt = route_of(req, seg, n, resp);
        if (rt == RT_NONE)
                return;
        r = auth_check_bearer(api->store, req->authorization, &who);
        if (r == -EIO) {
                json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        if (r < 0) {
                json_error(resp, 401, "unauthorized", "Invalid or missing API key", NULL);
                http_resp_header(resp, "WWW-Authenticate", "Bearer");
                return;
        }
        struct ratelimit_result rl = { .allowed = 1 };
        if (api->rl) {
                static const uint32_t per_minute[TIER__MAX] = { 60, 300, 1000 };
                static const uint32_t burst[TIER__MAX] = { 10, 50, 100 };
                unsigned t = (unsigned)who.tier < TIER__MAX ? (unsigned)who.tier : TIER_FREE;
                ratelimit_take(api->rl, who.key_id, per_minute[t], burst[t], util_mono_ms(), &rl);
        }
        if (!rl.allowed) {
                json_error(resp, 429, "rate_limited", "Too many requests", NULL);
                http_resp_header(resp, "Retry-After", "%u", rl.retry_after_s);
        } else if (who.read_only && strcmp(req->method, "GET") != 0) {
                json_error(resp, 403, "forbidden", "this API key may only read", NULL);
        } else {
                authed_route(api, rt, &who, seg, req, resp);
        }
        if (api->rl) {
                /* Reset: seconds until the bucket is full again (a delta) */
                http_resp_header(resp, "X-RateLimit-Limit", "%u", rl.limit);
                http_resp_header(resp, "X-RateLimit-Remaining", "%u", rl.remaining);
                http_resp_header(resp, "X-RateLimit-Reset", "%u", rl.reset_s);
        }
}

static void authed_route(struct api *api, enum route rt, const struct auth_who *who,
                         char seg[][64], const struct http_req *req, struct http_resp *resp)
{
        const uint64_t account = who->account_id;
        struct idem idem = { .account_id = account };
        const struct idem *ip = NULL;
        const char *ik = http_req_header(req, "Idempotency-Key");
        if (ik && strcmp(req->method, "POST") == 0) {
                if (idem_prepare(api, req, ik, &idem, resp) != 0)
                        return; /* answered: bad key, a replay, or another request's key */
                ip = &idem;
        }
        dispatch(api, rt, account, ip, seg, req, resp);
        if (ip && resp->status == REPLAY_PENDING) {
                /* a concurrent twin claimed the key between our look and our commit */
                free(resp->body);
                resp->body = NULL;
                resp->n_headers = 0;
                if (idem_prepare(api, req, ik, &idem, resp) == 0)
                        json_error(resp, 500, "internal_error", "internal error", NULL);
                return;
        }
        if (ip && (resp->status == 201 || resp->status == 202) && resp->body) {
                const char *loc = NULL;
                for (size_t i = 0; i < resp->n_headers; i++)
                        if (strcmp(resp->headers[i].name, "Location") == 0)
                                loc = resp->headers[i].value;
                if (store_idem_set_response(api->store, account, ik, resp->body, loc) < 0)
                        log_warn("idempotency key of account %llu: answer not saved (a replay "
                                 "re-reads the resource)", (unsigned long long)account);
        }
        if (strcmp(req->method, "GET") == 0)
                etag(req, resp);
}

/* ETag (a hash of the body) on what GET answers 200; If-None-Match with
 * it (or *) gets 304 and no body. */
static void etag(const struct http_req *req, struct http_resp *resp)
{
        if (resp->status != 200 || !resp->body)
                return;
        /* FNV-1a-style over 8 bytes a step, then a final mix: a tag,
         * not a security hash (the body is the client's own data). */
        uint64_t h = 0xcbf29ce484222325ULL ^ resp->body_len;
        size_t i = 0;
        for (; i + 8 <= resp->body_len; i += 8) {
                uint64_t w;
                memcpy(&w, resp->body + i, 8);
                h = (h ^ w) * 0x100000001b3ULL;
                h ^= h >> 29;
        }
        for (; i < resp->body_len; i++)
                h = (h ^ (uint8_t)resp->body[i]) * 0x100000001b3ULL;
        h ^= h >> 33;
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 33;
        char tag[24];
        snprintf(tag, sizeof(tag), "\"%016llx\"", (unsigned long long)h);
        http_resp_header(resp, "ETag", "%s", tag);
        const char *inm = http_req_header(req, "If-None-Match");
        if (!inm)
                return;
        /* a list of tags, each maybe weak (W/"...") */
        for (const char *p = inm; *p;) {
                p += strspn(p, " ,");
                if (*p == '*' || (strncmp(p, "W/", 2) == 0 && strncmp(p + 2, tag, 18) == 0) ||
                    strncmp(p, tag, 18) == 0) {
                        free(resp->body);
                        resp->body = NULL;
                        resp->body_len = 0;
                        resp->status = 304;
                        return;
                }
                p += strcspn(p, ",");
        }
}

static void dispatch(struct api *api, enum route rt, uint64_t account, const struct idem *idem,
                     char seg[][64], const struct http_req *req, struct http_resp *resp)
{
        uint64_t id = 0;
        switch (rt) {
        case RT_VPS_LIST:
                vps_list(api, account, req, resp);
                return;
        case RT_VPS_CREATE:
                vps_create(api, account, idem, req, resp);
                return;
        case RT_SSH_LIST:
                sshkey_list(api, account, req, resp);
                return;
        case RT_TPL_LIST:
                templates_list(resp);
                return;
        case RT_TPL_DEPLOY:
                template_deploy(api, account, idem, req, resp);
                return;
        case RT_DEP_LIST:
                deploy_list(api, account, req, resp);
                return;
        case RT_DEP_GET:
        case RT_DEP_DELETE:
                if (id_decode(store_id_key(api->store), "dep", seg[3], &id) < 0) {
                        json_error(resp, 404, "not_found", "deployment not found", NULL);
                } else if (rt == RT_DEP_GET) {
                        struct deployment d;
                        int g = store_deploy_get(api->store, account, id, &d);
                        if (g < 0)
                                deploy_failed(resp, g);
                        else
                                json_respond(resp, 200,
                                             json_pack("{s:o}", "data", deploy_json(api, &d)));
                } else {
                        uint64_t host = 0, *peers = NULL;
                        size_t n_peers = 0;
                        struct deployment d;
                        /* its VPS's networks' hosts, read while it is on them */
                        if (api->hub && store_deploy_get(api->store, account, id, &d) == 0 &&
                            store_vm_net_hosts(api->store, d.vm_id, &peers, &n_peers) < 0)
                                n_peers = 0;
                        int g = store_deploy_delete(api->store, account, id, &host);
                        if (g < 0) {
                                deploy_failed(resp, g);
                        } else {
                                if (api->hub && host)
                                        hub_notify(api->hub, host);
                                for (size_t i = 0; i < n_peers; i++)
                                        hub_notify(api->hub, peers[i]);
                                dns_kick(api->dns);
                                json_respond(resp, 204, NULL);
                        }
                        free(peers);
                }
                return;
        case RT_SSH_CREATE:
                sshkey_create(api, account, idem, req, resp);
                return;
        case RT_NET_LIST:
                net_list(api, account, resp);
                return;
        case RT_NET_CREATE:
                net_create(api, account, idem, req, resp);
                return;
        case RT_NET_GET:
        case RT_NET_DELETE:
        case RT_NET_ATTACH:
        case RT_NET_VPN:
                if (id_decode(store_id_key(api->store), "net", seg[2], &id) < 0)
                        json_error(resp, 404, "not_found", "network not found", NULL);
                else if (rt == RT_NET_GET)
                        net_respond(api, account, id, 200, 0, resp);
                else if (rt == RT_NET_DELETE)
                        net_delete(api, account, id, resp);
                else if (rt == RT_NET_ATTACH)
                        net_attach(api, account, id, idem, req, resp);
                else
                        net_vpn_config(api, account, id, resp);
                return;
        case RT_SSH_GET:
        case RT_SSH_DELETE:
                if (id_decode(store_id_key(api->store), "ssh", seg[2], &id) < 0)
                        json_error(resp, 404, "not_found", "SSH key not found", NULL);
                else if (rt == RT_SSH_GET)
                        sshkey_get(api, account, id, resp);
                else
                        sshkey_delete(api, account, id, resp);
                return;
        default:
                break;
        }
        if (id_decode(store_id_key(api->store), "vps", seg[2], &id) < 0) {
                json_error(resp, 404, "not_found", "VPS not found", NULL);
                return;
        }
        uint64_t sid = 0; /* 0: malformed, never an id (answers 404) */
        if (rt >= RT_SNAP_GET && id_decode(store_id_key(api->store), "snap", seg[4], &sid) < 0)
                sid = 0;
        if (rt == RT_SNAP_LIST)
                snap_list(api, account, id, resp);
        else if (rt == RT_SNAP_CREATE)
                snap_create(api, account, id, idem, req, resp);
        else if (rt == RT_SNAP_GET) {
                struct snapshot p;
                struct vm vm;
                int g = store_vm_get(api->store, account, id, &vm);
                if (g < 0)
                        store_failed(resp, g);
                else if (snap_of_vps(api, account, id, sid, &p, resp) == 0)
                        snap_respond(api, 200, &p, 0, resp);
        } else if (rt == RT_SNAP_RENAME)
                snap_rename(api, account, id, sid, req, resp);
        else if (rt == RT_SNAP_DELETE)
                snap_delete(api, account, id, sid, resp);
        else if (rt == RT_SNAP_RESTORE)
                snap_restore(api, account, id, sid, idem, resp);
        else if (rt == RT_VPS_ACTION)
                vps_action(api, account, id, idem, req, resp);
        else if (rt == RT_VPS_GET)
                vps_get(api, account, id, resp);
        else
                vps_delete(api, account, id, resp);
}
