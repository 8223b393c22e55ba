/* See dns.h. The only file that talks to PowerDNS (libcurl, jansson). */
#include "dns.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "log.h"
#include "util.h"

static const char *const type_names[] = {
    [DNS_TYPE_A] = "A",
    [DNS_TYPE_AAAA] = "AAAA",
    [DNS_TYPE_PTR] = "PTR",
};
_Static_assert(sizeof(type_names) / sizeof(type_names[0]) == DNS_TYPE__MAX, "type_names");

const char *dns_type_to_string(enum dns_type t)
{
        return (unsigned)t < DNS_TYPE__MAX ? type_names[t] : "?";
}

static int type_from_string(const char *s, enum dns_type *ret)
{
        for (int i = 0; i < DNS_TYPE__MAX; i++)
                if (strcmp(s, type_names[i]) == 0) {
                        *ret = (enum dns_type)i;
                        return 0;
                }
        return -EINVAL;
}

/* ---- names ---- */

static char lower(char c)
{
        return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static int is_alnum(char c)
{
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int dns_fqdn_canon(const char *in, char out[static DNS_NAME_MAX])
{
        size_t n = in ? strlen(in) : 0, label = 0;

        if (n > 0 && in[n - 1] == '.')
                n--;
        if (n == 0 || n > 253)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                char c = lower(in[i]);
                if (c == '.') {
                        if (label == 0 || out[i - 1] == '-')
                                return -EINVAL;
                        label = 0;
                } else if (is_alnum(c) || (c == '-' && label > 0)) {
                        if (++label > 63)
                                return -EINVAL;
                } else {
                        return -EINVAL;
                }
                out[i] = c;
        }
        if (label == 0 || out[n - 1] == '-') /* an empty or a bad last label */
                return -EINVAL;
        out[n] = '.';
        out[n + 1] = '\0';
        return 0;
}

/* A name as the server writes it, in the form we compare: lowercase, with
 * the trailing dot. -EINVAL when empty or too long. */
static int name_canon(const char *in, char out[static DNS_NAME_MAX])
{
        size_t n = strlen(in);
        if (n == 0 || n + (in[n - 1] != '.') >= DNS_NAME_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                out[i] = lower(in[i]);
        if (in[n - 1] != '.')
                out[n++] = '.';
        out[n] = '\0';
        return 0;
}

int dns_name_in_zone(const char *name, const char *zone)
{
        size_t ln = strlen(name), lz = strlen(zone);
        if (strcmp(zone, ".") == 0)
                return 1;
        if (ln < lz)
                return 0;
        if (ln == lz)
                return strcmp(name, zone) == 0;
        return name[ln - lz - 1] == '.' && strcmp(name + ln - lz, zone) == 0;
}

int dns_ptr_name(const char *addr, char out[static DNS_NAME_MAX])
{
        static const char hex[] = "0123456789abcdef";
        struct ipam_addr a;

        if (ipam_addr_parse(addr, &a) < 0)
                return -EINVAL;
        if (a.len == 4) {
                snprintf(out, DNS_NAME_MAX, "%u.%u.%u.%u.in-addr.arpa.", a.b[3], a.b[2], a.b[1],
                         a.b[0]);
                return 0;
        }
        char *p = out;
        for (int i = 15; i >= 0; i--) {
                *p++ = hex[a.b[i] & 0xf];
                *p++ = '.';
                *p++ = hex[a.b[i] >> 4];
                *p++ = '.';
        }
        strcpy(p, "ip6.arpa.");
        return 0;
}

/* One label of a reverse name: a decimal octet (no leading zero) or a hex
 * nibble. -1 if it is not. */
static int rev_label(const char *s, size_t n, int v6)
{
        if (v6) {
                if (n != 1)
                        return -1;
                if (s[0] >= '0' && s[0] <= '9')
                        return s[0] - '0';
                if (s[0] >= 'a' && s[0] <= 'f')
                        return s[0] - 'a' + 10;
                return -1;
        }
        if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
                return -1;
        int v = 0;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -1;
                v = v * 10 + (s[i] - '0');
        }
        return v <= 255 ? v : -1;
}

int dns_reverse_prefix(const char *zone, struct ipam_prefix *ret)
{
        static const char v4s[] = "in-addr.arpa.", v6s[] = "ip6.arpa.";
        char z[DNS_NAME_MAX];
        int vals[32];
        size_t nv = 0;
        int v6;

        if (name_canon(zone, z) < 0)
                return -EINVAL;
        size_t lz = strlen(z), ls;
        if (dns_name_in_zone(z, v4s)) {
                v6 = 0;
                ls = sizeof(v4s) - 1;
        } else if (dns_name_in_zone(z, v6s)) {
                v6 = 1;
                ls = sizeof(v6s) - 1;
        } else {
                return -EINVAL;
        }
        /* the labels before the suffix, most specific first */
        size_t end = lz > ls ? lz - ls - 1 : 0; /* without the dot before the suffix */
        for (size_t i = 0; i < end;) {
                size_t j = i;
                while (j < end && z[j] != '.')
                        j++;
                int v = rev_label(z + i, j - i, v6);
                if (v < 0 || nv == (v6 ? 32u : 4u))
                        return -EINVAL;
                vals[nv++] = v;
                i = j + 1;
        }
        struct ipam_prefix p;
        memset(&p, 0, sizeof(p));
        p.addr.len = v6 ? 16 : 4;
        p.bits = (unsigned)nv * (v6 ? 4 : 8);
        for (size_t k = 0; k < nv; k++) {
                size_t pos = nv - 1 - k; /* the k-th from the left of the address */
                if (v6)
                        p.addr.b[pos / 2] |= (uint8_t)(pos % 2 ? vals[k] : vals[k] << 4);
                else
                        p.addr.b[pos] = (uint8_t)vals[k];
        }
        *ret = p;
        return 0;
}

long dns_zone_for(const char *name, const struct dns_zone *zones, size_t n)
{
        long best = -1;
        size_t best_len = 0;
        for (size_t i = 0; i < n; i++) {
                size_t l = strlen(zones[i].name);
                if ((best < 0 || l > best_len) && dns_name_in_zone(name, zones[i].name)) {
                        best = (long)i;
                        best_len = l;
                }
        }
        return best;
}

/* A record's content in the form we compare: addresses as ipam writes
 * them, names as name_canon(). "" when it cannot be read. */
static void content_canon(enum dns_type t, const char *in, char out[static DNS_NAME_MAX])
{
        struct ipam_addr a;
        out[0] = '\0';
        if (t == DNS_TYPE_PTR) {
                if (name_canon(in, out) < 0)
                        out[0] = '\0';
                return;
        }
        if (ipam_addr_parse(in, &a) == 0 && a.len == (t == DNS_TYPE_A ? 4 : 16))
                ipam_addr_format(&a, out, DNS_NAME_MAX);
}

/* ---- the plan ---- */

/* qsort, which must not be given NULL even for no elements */
static void sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
        if (n > 1)
                qsort(base, n, size, cmp);
}

static int rr_cmp(const struct dns_rrset *a, const struct dns_rrset *b)
{
        int c = strcmp(a->name, b->name);
        if (c)
                return c;
        return (int)a->type - (int)b->type;
}

static int rr_cmp_vm(const void *pa, const void *pb)
{
        const struct dns_rrset *a = pa, *b = pb;
        int c = rr_cmp(a, b);
        if (c)
                return c;
        return a->vm_id < b->vm_id ? -1 : a->vm_id > b->vm_id;
}

struct named {
        const char *fqdn;
        uint64_t vm_id;
        size_t i;
};

static int named_cmp(const void *pa, const void *pb)
{
        const struct named *a = pa, *b = pb;
        int c = strcmp(a->fqdn, b->fqdn);
        if (c)
                return c;
        return a->vm_id < b->vm_id ? -1 : a->vm_id > b->vm_id;
}

static void rr_set(struct dns_rrset *r, const char *name, enum dns_type t, uint32_t ttl,
                   const char *content, uint64_t vm_id)
{
        memset(r, 0, sizeof(*r));
        util_strlcpy(r->name, name, sizeof(r->name));
        r->type = t;
        r->ttl = ttl;
        r->n_records = 1;
        util_strlcpy(r->content, content, sizeof(r->content));
        r->vm_id = vm_id;
}

int dns_plan(const char *zone, uint32_t ttl, const struct vm_dns *vms, size_t n_vms,
             struct dns_rrset **ret, size_t *ret_n, struct dns_plan_stats *ret_stats)
{
        char z[DNS_NAME_MAX];
        struct dns_plan_stats st = {0};
        char(*fq)[DNS_NAME_MAX] = NULL;
        struct named *nm = NULL;
        unsigned char *forward = NULL; /* per VM: gets A/AAAA */
        struct dns_rrset *out = NULL;
        size_t n_out = 0, n_nm = 0;
        int r = -ENOMEM;

        if (dns_fqdn_canon(zone, z) < 0)
                return -EINVAL;
        if (ttl == 0)
                ttl = DNS_TTL_DEFAULT;
        if (n_vms > 0) {
                fq = calloc(n_vms, sizeof(*fq));
                nm = calloc(n_vms, sizeof(*nm));
                forward = calloc(n_vms, 1);
                out = calloc(4 * n_vms, sizeof(*out)); /* at most A, AAAA and two PTRs each */
                if (!fq || !nm || !forward || !out)
                        goto out;
        }
        for (size_t i = 0; i < n_vms; i++) {
                if (dns_fqdn_canon(vms[i].fqdn, fq[i]) < 0) {
                        fq[i][0] = '\0';
                        st.bad_names++;
                        continue;
                }
                if (dns_name_in_zone(fq[i], z))
                        nm[n_nm++] = (struct named){fq[i], vms[i].vm_id, i};
        }
        /* A name in the zone is the VM's of the lowest id that has it. */
        sort(nm, n_nm, sizeof(*nm), named_cmp);
        for (size_t k = 0; k < n_nm; k++) {
                if (k > 0 && strcmp(nm[k].fqdn, nm[k - 1].fqdn) == 0)
                        st.dup_names++;
                else
                        forward[nm[k].i] = 1;
        }
        for (size_t i = 0; i < n_vms; i++) {
                const char *addrs[2] = {vms[i].ipv4, vms[i].ipv6};
                if (!fq[i][0])
                        continue;
                for (int k = 0; k < 2; k++) {
                        struct ipam_addr a;
                        char text[IPAM_STR], ptr[DNS_NAME_MAX];
                        if (!addrs[k][0] || ipam_addr_parse(addrs[k], &a) < 0 ||
                            a.len != (k == 0 ? 4 : 16))
                                continue;
                        ipam_addr_format(&a, text, sizeof(text));
                        if (forward[i])
                                rr_set(&out[n_out++], fq[i], k == 0 ? DNS_TYPE_A : DNS_TYPE_AAAA,
                                       ttl, text, vms[i].vm_id);
                        dns_ptr_name(text, ptr);
                        rr_set(&out[n_out++], ptr, DNS_TYPE_PTR, ttl, fq[i], vms[i].vm_id);
                }
        }
        /* One rrset per name and type: an address two VMs claim (never
         * handed out so) points at the lower id's name. */
        sort(out, n_out, sizeof(*out), rr_cmp_vm);
        size_t w = 0;
        for (size_t k = 0; k < n_out; k++)
                if (w == 0 || rr_cmp(&out[k], &out[w - 1]) != 0)
                        out[w++] = out[k];
        n_out = w;
        if (n_out > 0 && n_out < 4 * n_vms) { /* give back what the estimate left unused */
                struct dns_rrset *shrunk = realloc(out, n_out * sizeof(*out));
                if (shrunk)
                        out = shrunk;
        }
        *ret = out;
        *ret_n = n_out;
        out = NULL;
        if (ret_stats)
                *ret_stats = st;
        r = 0;
out:
        free(out);
        free(fq);
        free(nm);
        free(forward);
        return r;
}

/* ---- the server's answers ---- */

/* A zone id goes into URLs as it is: only the characters the server uses
 * in ids (it escapes others as =XX). */
static int id_ok(const char *s)
{
        if (!*s)
                return 0;
        for (; *s; s++)
                if (!(is_alnum(*s) || (*s >= 'A' && *s <= 'Z') || *s == '.' || *s == '-' ||
                      *s == '_' || *s == '='))
                        return 0;
        return 1;
}

int dns_parse_zones(const char *json, size_t len, struct dns_zone **ret, size_t *ret_n)
{
        json_t *root = json_loadb(json, len, 0, NULL);
        struct dns_zone *z = NULL;
        size_t n = 0, i;
        json_t *v;

        if (!json_is_array(root)) {
                json_decref(root);
                return -EPROTO;
        }
        if (json_array_size(root) > 0) {
                z = calloc(json_array_size(root), sizeof(*z));
                if (!z) {
                        json_decref(root);
                        return -ENOMEM;
                }
        }
        json_array_foreach(root, i, v)
        {
                const char *name = json_string_value(json_object_get(v, "name"));
                const char *id = json_string_value(json_object_get(v, "id"));
                if (!name || name_canon(name, z[n].name) < 0)
                        continue;
                if (!id)
                        id = name;
                if (!id_ok(id) || util_strlcpy(z[n].id, id, sizeof(z[n].id)) < 0)
                        continue;
                n++;
        }
        json_decref(root);
        *ret = z;
        *ret_n = n;
        return 0;
}

static int owned(json_t *comments)
{
        size_t i;
        json_t *c;
        json_array_foreach(comments, i, c)
        {
                const char *acc = json_string_value(json_object_get(c, "account"));
                if (acc && strcmp(acc, DNS_OWNER) == 0)
                        return 1;
        }
        return 0;
}

int dns_parse_rrsets(const char *json, size_t len, struct dns_rrset **ret, size_t *ret_n)
{
        json_t *root = json_loadb(json, len, 0, NULL);
        json_t *sets = json_object_get(root, "rrsets"), *v;
        struct dns_rrset *out = NULL;
        size_t n = 0, i;

        if (!json_is_array(sets)) {
                json_decref(root);
                return -EPROTO;
        }
        if (json_array_size(sets) > 0) {
                out = calloc(json_array_size(sets), sizeof(*out));
                if (!out) {
                        json_decref(root);
                        return -ENOMEM;
                }
        }
        json_array_foreach(sets, i, v)
        {
                const char *name = json_string_value(json_object_get(v, "name"));
                const char *type = json_string_value(json_object_get(v, "type"));
                json_t *ttl = json_object_get(v, "ttl");
                json_t *records = json_object_get(v, "records");
                struct dns_rrset *r = &out[n];
                if (!name || !type || type_from_string(type, &r->type) < 0 ||
                    name_canon(name, r->name) < 0)
                        continue;
                if (json_is_integer(ttl) && json_integer_value(ttl) >= 0 &&
                    json_integer_value(ttl) <= UINT32_MAX)
                        r->ttl = (uint32_t)json_integer_value(ttl);
                r->n_records = (uint32_t)json_array_size(records);
                r->content[0] = '\0';
                if (r->n_records == 1) {
                        json_t *rec = json_array_get(records, 0);
                        const char *c = json_string_value(json_object_get(rec, "content"));
                        if (c && !json_is_true(json_object_get(rec, "disabled")))
                                content_canon(r->type, c, r->content);
                }
                r->owned = owned(json_object_get(v, "comments"));
                n++;
        }
        json_decref(root);
        *ret = out;
        *ret_n = n;
        return 0;
}

/* ---- the diff ---- */

static int rr_ptr_cmp(const void *pa, const void *pb)
{
        return rr_cmp(*(const struct dns_rrset *const *)pa, *(const struct dns_rrset *const *)pb);
}

static const struct dns_rrset **sorted(const struct dns_rrset *a, size_t n)
{
        const struct dns_rrset **p = malloc((n ? n : 1) * sizeof(*p));
        if (!p)
                return NULL;
        for (size_t i = 0; i < n; i++)
                p[i] = &a[i];
        sort(p, n, sizeof(*p), rr_ptr_cmp);
        return p;
}

static int same(const struct dns_rrset *want, const struct dns_rrset *have)
{
        return have->n_records == 1 && have->ttl == want->ttl &&
               strcmp(have->content, want->content) == 0;
}

/* Appends a change (the array grows as needed: a zone in step has none). */
static int push(struct dns_change **arr, size_t *n, size_t *cap, enum dns_op op,
                const struct dns_rrset *rr)
{
        if (*n == *cap) {
                size_t ncap = *cap ? *cap * 2 : 16;
                struct dns_change *na = realloc(*arr, ncap * sizeof(*na));
                if (!na)
                        return -ENOMEM;
                *arr = na;
                *cap = ncap;
        }
        (*arr)[*n].op = op;
        (*arr)[*n].rr = *rr;
        (*n)++;
        return 0;
}

int dns_diff(const struct dns_rrset *want, size_t n_want, const struct dns_rrset *have,
             size_t n_have, struct dns_change **ret, size_t *ret_n)
{
        const struct dns_rrset **w = sorted(want, n_want), **h = sorted(have, n_have);
        unsigned char *matched = calloc(n_have ? n_have : 1, 1);
        struct dns_change *out = NULL;
        size_t n = 0, cap = 0;
        int r = -ENOMEM;

        if (!w || !h || !matched)
                goto out;
        for (size_t i = 0, j = 0; i < n_want; i++) {
                if (i > 0 && rr_cmp(w[i], w[i - 1]) == 0)
                        continue; /* one rrset per name and type */
                while (j < n_have && rr_cmp(h[j], w[i]) < 0)
                        j++;
                /* every rrset the server has at this name and type (one, normally) */
                int found = 0, foreign = 0, in_step = 0;
                for (size_t k = j; k < n_have && rr_cmp(h[k], w[i]) == 0; k++) {
                        found = 1;
                        matched[k] = 1;
                        if (!h[k]->owned)
                                foreign = 1;
                        else if (same(w[i], h[k]))
                                in_step = 1;
                }
                if ((found && foreign && push(&out, &n, &cap, DNS_OP_CONFLICT, w[i]) < 0) ||
                    (!(found && foreign) && !in_step &&
                     push(&out, &n, &cap, DNS_OP_REPLACE, w[i]) < 0))
                        goto out;
        }
        for (size_t k = 0; k < n_have; k++) {
                if (matched[k] || !h[k]->owned)
                        continue;
                if (k > 0 && rr_cmp(h[k], h[k - 1]) == 0)
                        continue;
                if (push(&out, &n, &cap, DNS_OP_DELETE, h[k]) < 0)
                        goto out;
        }
        *ret = out;
        *ret_n = n;
        out = NULL;
        r = 0;
out:
        free(w);
        free(h);
        free(matched);
        free(out);
        return r;
}

char *dns_patch_body(const struct dns_change *c, size_t n)
{
        json_t *sets = json_array(), *root = json_pack("{s:o}", "rrsets", sets);
        char *body = NULL;

        if (!root)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                const struct dns_rrset *r = &c[i].rr;
                json_t *o;
                if (c[i].op == DNS_OP_CONFLICT)
                        continue;
                if (c[i].op == DNS_OP_DELETE)
                        o = json_pack("{s:s, s:s, s:s}", "name", r->name, "type",
                                      dns_type_to_string(r->type), "changetype", "DELETE");
                else
                        o = json_pack("{s:s, s:s, s:s, s:I, s:[{s:s, s:b}], s:[{s:s, s:s}]}",
                                      "name", r->name, "type", dns_type_to_string(r->type),
                                      "changetype", "REPLACE", "ttl", (json_int_t)r->ttl, "records",
                                      "content", r->content, "disabled", 0, "comments", "content",
                                      DNS_OWNER, "account", DNS_OWNER);
                if (!o || json_array_append_new(sets, o) < 0) {
                        json_decref(root);
                        return NULL;
                }
        }
        body = json_dumps(root, JSON_COMPACT);
        json_decref(root);
        return body;
}

/* ---- the client ---- */

#define NOTES_MAX 512 /* messages remembered, so a repeated one is not logged again */

struct dns_client {
        char *url, *key, *server;
        char zone[DNS_NAME_MAX];
        uint32_t ttl;
        int64_t timeout_ms;
        size_t batch, max_response;
        CURL *h;
        struct curl_slist *hdrs;
        _Atomic int cancel; /* dns_stop(): abandon the round */
        /* zones involved in the last round (their leftovers are deleted even
         * when nothing there is wanted any more) */
        char (*involved)[DNS_NAME_MAX];
        size_t n_involved;
        /* hashes of the messages logged in this round and the one before */
        uint64_t notes[2][NOTES_MAX];
        size_t n_notes[2];
        int cur;
        int had_errors;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
        curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static uint64_t fnv1a(const char *s)
{
        uint64_t h = 1469598103934665603ULL;
        for (; *s; s++) {
                h ^= (unsigned char)*s;
                h *= 1099511628211ULL;
        }
        return h;
}

/* Logs a message unless the round before logged the same one: a failure
 * that lasts is said once, and again only when it changes or comes back. */
__attribute__((format(printf, 3, 4))) static void note(struct dns_client *c, enum log_level level,
                                                       const char *fmt, ...)
{
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        uint64_t h = fnv1a(msg);
        int prev = !c->cur, seen = 0;
        for (size_t i = 0; i < c->n_notes[prev]; i++)
                if (c->notes[prev][i] == h)
                        seen = 1;
        if (c->n_notes[c->cur] < NOTES_MAX)
                c->notes[c->cur][c->n_notes[c->cur]++] = h;
        else
                seen = 0; /* too many to remember: say them all */
        if (!seen)
                log_msg(level, "%s", msg);
}

int dns_client_new(const struct dns_config *cfg, struct dns_client **ret)
{
        struct dns_client *c;
        char hdr[1100];

        if (!cfg->url || !cfg->url[0] || !cfg->zone)
                return -EINVAL;
        /* the key goes into a header: no line breaks, and a sane length */
        for (const char *k = cfg->key ? cfg->key : ""; *k; k++)
                if ((unsigned char)*k < 0x20 || *k == 0x7f || k - cfg->key >= 1024)
                        return -EINVAL;
        pthread_once(&curl_once, curl_init);
        if (curl_init_rc != CURLE_OK) {
                log_error("dns: cannot initialise libcurl: %s", curl_easy_strerror(curl_init_rc));
                return -EIO;
        }
        if (!(c = calloc(1, sizeof(*c))))
                return -ENOMEM;
        if (dns_fqdn_canon(cfg->zone, c->zone) < 0) {
                free(c);
                return -EINVAL;
        }
        c->url = strdup(cfg->url);
        c->key = strdup(cfg->key ? cfg->key : "");
        c->server = strdup(cfg->server && cfg->server[0] ? cfg->server : "localhost");
        c->ttl = cfg->ttl ? cfg->ttl : DNS_TTL_DEFAULT;
        c->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DNS_TIMEOUT_MS_DEFAULT;
        c->batch = cfg->batch ? cfg->batch : DNS_BATCH_DEFAULT;
        c->max_response = cfg->max_response ? cfg->max_response : DNS_RESPONSE_MAX;
        c->h = curl_easy_init();
        if (!c->url || !c->key || !c->server || !c->h)
                goto fail;
        size_t l = strlen(c->url);
        while (l > 0 && c->url[l - 1] == '/')
                c->url[--l] = '\0';
        snprintf(hdr, sizeof(hdr), "X-API-Key: %s", c->key);
        struct curl_slist *s = curl_slist_append(NULL, hdr);
        if (!s)
                goto fail;
        c->hdrs = s;
        if (!(s = curl_slist_append(c->hdrs, "Accept: application/json")))
                goto fail;
        if (!(s = curl_slist_append(c->hdrs, "Content-Type: application/json")))
                goto fail;
        *ret = c;
        return 0;
fail:
        dns_client_free(c);
        return -ENOMEM;
}

void dns_client_free(struct dns_client *c)
{
        if (!c)
                return;
        if (c->h)
                curl_easy_cleanup(c->h);
        curl_slist_free_all(c->hdrs);
        free(c->url);
        if (c->key) /* the API key is a secret: not left in freed memory */
                memset(c->key, 0, strlen(c->key));
        free(c->key);
        free(c->server);
        free(c->involved);
        free(c);
}

struct resp {
        char *p;
        size_t n, cap, max;
        int too_big;
};

static size_t on_write(char *data, size_t size, size_t nmemb, void *ud)
{
        struct resp *r = ud;
        size_t len = size * nmemb;
        if (len > r->max - r->n) {
                r->too_big = 1;
                return 0;
        }
        if (r->n + len + 1 > r->cap) {
                size_t ncap = r->cap ? r->cap : 16384;
                while (ncap < r->n + len + 1)
                        ncap *= 2;
                char *np = realloc(r->p, ncap);
                if (!np)
                        return 0;
                r->p = np;
                r->cap = ncap;
        }
        memcpy(r->p + r->n, data, len);
        r->n += len;
        r->p[r->n] = '\0';
        return len;
}

static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        struct dns_client *c = ud;
        (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
        return atomic_load(&c->cancel) ? 1 : 0;
}

/* The one place curl's codes become errno values. */
static int curl_to_errno(CURLcode cc)
{
        switch (cc) {
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EPROTONOSUPPORT;
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        case CURLE_COULDNT_RESOLVE_HOST:
                return -EHOSTUNREACH;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_ABORTED_BY_CALLBACK:
                return -ECANCELED;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        default:
                return -EIO;
        }
}

static int status_to_errno(long code)
{
        if (code == 401 || code == 403)
                return -EACCES;
        if (code == 404)
                return -ENOENT;
        if (code >= 400 && code < 500)
                return -EINVAL; /* the server refused what was sent (422: bad data) */
        return -EIO;
}

/* What the server said about a failed request: its {"error": "..."}, or
 * the start of the body, printable characters only. */
static void server_says(const struct resp *r, long code, char *why, size_t why_len)
{
        char text[256] = "";
        json_t *root = r->n ? json_loadb(r->p, r->n, 0, NULL) : NULL;
        const char *e = json_string_value(json_object_get(root, "error"));
        size_t k = 0;
        const char *src = e ? e : (r->p ? r->p : "");
        for (; *src && k < sizeof(text) - 1; src++)
                text[k++] = (*src >= 0x20 && *src < 0x7f) ? *src : ' ';
        text[k] = '\0';
        json_decref(root);
        snprintf(why, why_len, "%ld%s%s", code, text[0] ? " " : "", text);
}

#define SETOPT(opt, val)                                                                           \
        do {                                                                                       \
                if (curl_easy_setopt(h, opt, val) != CURLE_OK) {                                   \
                        snprintf(why, why_len, "cannot set up the request (%s)", #opt);            \
                        return -EIO;                                                               \
                }                                                                                  \
        } while (0)

/* One request to the server's API: path below /api/v1/servers/SERVER.
 * 0 with the answer in r (2xx), or a negative errno and why. */
static int request(struct dns_client *c, const char *method, const char *path, const char *body,
                   struct resp *r, char *why, size_t why_len)
{
        CURL *h = c->h;
        char url[4096], errbuf[CURL_ERROR_SIZE] = "";
        long code = 0;

        r->n = 0;
        r->too_big = 0;
        r->max = c->max_response;
        if (r->p)
                r->p[0] = '\0';
        if (atomic_load(&c->cancel)) {
                snprintf(why, why_len, "stopping");
                return -ECANCELED;
        }
        if ((size_t)snprintf(url, sizeof(url), "%s/api/v1/servers/%s%s", c->url, c->server, path) >=
            sizeof(url)) {
                snprintf(why, why_len, "URL too long");
                return -ENAMETOOLONG;
        }
        curl_easy_reset(h); /* keeps the connection */
        SETOPT(CURLOPT_URL, url);
        SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
        SETOPT(CURLOPT_HTTPHEADER, c->hdrs);
        SETOPT(CURLOPT_NOSIGNAL, 1L);
        SETOPT(CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
        SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
        SETOPT(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)c->max_response);
        SETOPT(CURLOPT_WRITEFUNCTION, on_write);
        SETOPT(CURLOPT_WRITEDATA, r);
        SETOPT(CURLOPT_NOPROGRESS, 0L);
        SETOPT(CURLOPT_XFERINFOFUNCTION, on_progress);
        SETOPT(CURLOPT_XFERINFODATA, c);
        SETOPT(CURLOPT_ERRORBUFFER, errbuf);
        if (body) {
                SETOPT(CURLOPT_CUSTOMREQUEST, method);
                SETOPT(CURLOPT_POSTFIELDS, body);
                SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        } else if (strcmp(method, "GET") != 0) {
                SETOPT(CURLOPT_CUSTOMREQUEST, method);
        }
        CURLcode cc = curl_easy_perform(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL); /* errbuf is on this stack */
        if (r->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
                snprintf(why, why_len, "answer larger than %zu bytes", c->max_response);
                return -EFBIG;
        }
        if (cc != CURLE_OK) {
                snprintf(why, why_len, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
                return curl_to_errno(cc);
        }
        if (code < 200 || code > 299) {
                server_says(r, code, why, why_len);
                return status_to_errno(code);
        }
        return 0;
}

static const char *op_verb(enum dns_op op)
{
        return op == DNS_OP_DELETE ? "delete" : "replace";
}

/* PATCHes one batch of a zone's changes (no conflicts among them). When
 * the server refuses the batch, each change is sent alone, so the log
 * names the rrsets it refuses. 0, or the first failure's errno. */
#define REFUSED_MAX 10 /* rrsets the server refused, per zone and round, before giving up */

static int patch(struct dns_client *c, const struct dns_zone *z, const struct dns_change *ch,
                 size_t n, struct resp *r, struct dns_stats *st, size_t *refused)
{
        char path[2 * DNS_NAME_MAX], why[512];
        char *body = dns_patch_body(ch, n);
        int rc;

        if (!body) {
                note(c, LOG_LEVEL_ERROR, "dns: zone %s: out of memory", z->name);
                return -ENOMEM;
        }
        snprintf(path, sizeof(path), "/zones/%s", z->id);
        rc = request(c, "PATCH", path, body, r, why, sizeof(why));
        free(body);
        if (rc == -ECANCELED)
                return rc; /* stopping: nothing to say */
        st->patches++;
        if (rc == 0) {
                size_t rep = 0, del = 0;
                for (size_t i = 0; i < n; i++)
                        *(ch[i].op == DNS_OP_DELETE ? &del : &rep) += 1;
                st->replaced += rep;
                st->deleted += del;
                log_info("dns: zone %s: PATCH %zu rrsets (%zu replaced, %zu deleted)", z->name, n,
                         rep, del);
                return 0;
        }
        if (rc == -EINVAL && n > 1) {
                int first = 0;
                for (size_t i = 0; i < n && *refused < REFUSED_MAX; i++) {
                        int r1 = patch(c, z, &ch[i], 1, r, st, refused);
                        if (r1 < 0 && !first)
                                first = r1;
                        if (r1 == -ECANCELED)
                                break;
                }
                return first;
        }
        if (rc == -EINVAL)
                (*refused)++;
        if (n == 1)
                note(c, LOG_LEVEL_ERROR, "dns: cannot %s %s %s: %s", op_verb(ch[0].op),
                     dns_type_to_string(ch[0].rr.type), ch[0].rr.name, why);
        else
                note(c, LOG_LEVEL_ERROR, "dns: zone %s: cannot change %zu rrsets: %s", z->name, n,
                     why);
        st->errors++;
        return rc;
}

#define CONFLICTS_LOGGED 10 /* per zone and round, then a count */

/* Reads one zone and PATCHes what differs from want (its wanted rrsets). */
static int zone_sync(struct dns_client *c, const struct dns_zone *z, const struct dns_rrset *want,
                     size_t n_want, struct resp *r, struct dns_stats *st)
{
        char path[2 * DNS_NAME_MAX], why[512];
        struct dns_rrset *have = NULL;
        struct dns_change *ch = NULL;
        size_t n_have = 0, n_ch = 0, n_conf = 0;
        int rc;

        snprintf(path, sizeof(path), "/zones/%s", z->id);
        rc = request(c, "GET", path, NULL, r, why, sizeof(why));
        if (rc == -ECANCELED)
                return rc; /* stopping: nothing to say */
        if (rc < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: cannot read zone %s: %s", z->name, why);
                st->errors++;
                return rc;
        }
        st->zones++;
        if ((rc = dns_parse_rrsets(r->p, r->n, &have, &n_have)) < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: zone %s: %s", z->name,
                     rc == -EPROTO ? "the server's answer is not a zone" : "out of memory");
                st->errors++;
                return rc;
        }
        rc = dns_diff(want, n_want, have, n_have, &ch, &n_ch);
        free(have);
        if (rc < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: zone %s: out of memory", z->name);
                st->errors++;
                return rc;
        }
        /* conflicts are reported and left out; the rest goes in batches */
        size_t w = 0;
        for (size_t i = 0; i < n_ch; i++) {
                if (ch[i].op != DNS_OP_CONFLICT) {
                        ch[w++] = ch[i];
                        continue;
                }
                if (n_conf++ < CONFLICTS_LOGGED)
                        note(c, LOG_LEVEL_WARN,
                             "dns: %s %s is not Tasman's (no comment of account \"%s\"): left "
                             "as it is, without the record for vm %" PRIu64,
                             dns_type_to_string(ch[i].rr.type), ch[i].rr.name, DNS_OWNER,
                             ch[i].rr.vm_id);
        }
        if (n_conf > CONFLICTS_LOGGED)
                note(c, LOG_LEVEL_WARN,
                     "dns: zone %s: %zu rrsets in all are not Tasman's and left as they are",
                     z->name, n_conf);
        st->conflicts += n_conf;
        rc = 0;
        size_t refused = 0;
        for (size_t i = 0; i < w; i += c->batch) {
                size_t n = w - i < c->batch ? w - i : c->batch;
                if (refused >= REFUSED_MAX)
                        break;
                int r1 = patch(c, z, &ch[i], n, r, st, &refused);
                if (r1 < 0 && !rc)
                        rc = r1;
                if (r1 < 0 && r1 != -EINVAL)
                        break; /* the server, the link, or stopping: the next round tries again */
        }
        /* a server that refuses everything does not get a request per
         * rrset every round */
        if (refused >= REFUSED_MAX)
                note(c, LOG_LEVEL_ERROR,
                     "dns: zone %s: the server refused %zu changes: this round tries no more of "
                     "them",
                     z->name, refused);
        free(ch);
        return rc;
}

static int was_involved(const struct dns_client *c, const char *name)
{
        for (size_t i = 0; i < c->n_involved; i++)
                if (strcmp(c->involved[i], name) == 0)
                        return 1;
        return 0;
}

static int overlaps_pool(const struct dns_zone *z, const struct dns_input *in)
{
        struct ipam_prefix p;
        if (dns_reverse_prefix(z->name, &p) < 0)
                return 0;
        for (size_t i = 0; i < in->n_pools; i++)
                if (in->pools[i].addr.len == p.addr.len && ipam_prefix_overlap(&p, &in->pools[i]))
                        return 1;
        return 0;
}

int dns_reconcile(struct dns_client *c, const struct dns_input *in, struct dns_stats *ret)
{
        struct dns_stats st = {0};
        struct resp r = {0};
        struct dns_zone *zones = NULL;
        struct dns_rrset *want = NULL, *sub = NULL;
        struct dns_plan_stats ps;
        long *zone_of = NULL;
        size_t *start = NULL;
        unsigned char *involved = NULL;
        size_t n_zones = 0, n_want = 0;
        char why[512];
        int rc, first = 0;

        c->cur = !c->cur;
        c->n_notes[c->cur] = 0;

        rc = request(c, "GET", "/zones", NULL, &r, why, sizeof(why));
        if (rc == -ECANCELED) {
                first = rc;
                goto out;
        }
        if (rc < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: cannot list the zones of %s: %s", c->url, why);
                st.errors++;
                first = rc;
                goto out;
        }
        if ((rc = dns_parse_zones(r.p, r.n, &zones, &n_zones)) < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: %s: %s", c->url,
                     rc == -EPROTO ? "the answer to GET zones is not a zone list"
                                   : "out of memory");
                st.errors++;
                first = rc;
                goto out;
        }
        rc = dns_plan(c->zone, c->ttl, in->vms, in->n_vms, &want, &n_want, &ps);
        if (rc < 0) {
                note(c, LOG_LEVEL_ERROR, "dns: cannot plan the records: %s", strerror(-rc));
                first = rc;
                goto out;
        }
        if (ps.bad_names)
                note(c, LOG_LEVEL_WARN, "dns: %zu VMs have no valid host name as fqdn: no records",
                     ps.bad_names);
        if (ps.dup_names)
                note(c, LOG_LEVEL_WARN,
                     "dns: %zu VMs have the fqdn of a VM made before them: no A/AAAA records",
                     ps.dup_names);

        zone_of = calloc(n_want ? n_want : 1, sizeof(*zone_of));
        involved = calloc(n_zones ? n_zones : 1, 1);
        if (!zone_of || !involved) {
                first = -ENOMEM;
                goto out;
        }
        size_t no_ptr = 0, no_fwd = 0;
        const char *ptr_example = NULL;
        for (size_t i = 0; i < n_want; i++) {
                zone_of[i] = dns_zone_for(want[i].name, zones, n_zones);
                if (zone_of[i] >= 0) {
                        involved[zone_of[i]] = 1;
                        st.wanted++;
                        continue;
                }
                st.no_zone++;
                if (want[i].type == DNS_TYPE_PTR) {
                        if (!no_ptr++)
                                ptr_example = want[i].name;
                } else {
                        no_fwd++;
                }
        }
        if (no_ptr)
                note(c, LOG_LEVEL_WARN,
                     "dns: no reverse zone on the server holds %zu PTR records (first: %s): "
                     "they are skipped",
                     no_ptr, ptr_example);
        if (no_fwd)
                note(c, LOG_LEVEL_WARN,
                     "dns: zone %s is not on the server: %zu A/AAAA records are skipped", c->zone,
                     no_fwd);
        /* the zone holding the forward zone's own name: dns_zone itself, or
         * the one above it on the server */
        long fwd = dns_zone_for(c->zone, zones, n_zones);
        if (fwd >= 0)
                involved[fwd] = 1;
        for (size_t k = 0; k < n_zones; k++)
                if (overlaps_pool(&zones[k], in) || was_involved(c, zones[k].name))
                        involved[k] = 1;

        /* the wanted rrsets grouped by zone (each group in name order):
         * zone k's are sub[start[k] .. start[k + 1]) */
        start = calloc(n_zones + 1, sizeof(*start));
        sub = calloc(st.wanted ? st.wanted : 1, sizeof(*sub));
        if (!start || !sub) {
                first = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_want; i++)
                if (zone_of[i] >= 0)
                        start[zone_of[i] + 1]++;
        for (size_t k = 0; k < n_zones; k++)
                start[k + 1] += start[k];
        for (size_t i = 0; i < n_want; i++)
                if (zone_of[i] >= 0)
                        sub[start[zone_of[i]]++] = want[i];
        for (size_t k = n_zones; k > 0; k--) /* each start moved to its group's end */
                start[k] = start[k - 1];
        start[0] = 0;
        free(want); /* all in sub now */
        want = NULL;

        for (size_t k = 0; k < n_zones; k++) {
                if (!involved[k])
                        continue;
                rc = zone_sync(c, &zones[k], sub + start[k], start[k + 1] - start[k], &r, &st);
                if (rc < 0 && !first)
                        first = rc;
                if (rc == -ECANCELED)
                        break;
        }
        /* remember the zones involved, for the next round's leftovers */
        size_t n_inv = 0;
        for (size_t k = 0; k < n_zones; k++)
                n_inv += involved[k];
        char(*inv)[DNS_NAME_MAX] = calloc(n_inv ? n_inv : 1, sizeof(*inv));
        if (inv) {
                n_inv = 0;
                for (size_t k = 0; k < n_zones; k++)
                        if (involved[k])
                                memcpy(inv[n_inv++], zones[k].name, DNS_NAME_MAX);
                free(c->involved);
                c->involved = inv;
                c->n_involved = n_inv;
        }
out:
        if (first == 0 && c->had_errors)
                log_info("dns: in step with %s again", c->url);
        c->had_errors = first != 0;
        free(r.p);
        free(zones);
        free(want);
        free(sub);
        free(start);
        free(zone_of);
        free(involved);
        if (ret)
                *ret = st;
        return first;
}

/* ---- the broker's DNS thread ---- */

#define KICK_DELAY_MS 100 /* a burst of changes makes one round */

struct dns {
        struct dns_client *client;
        struct store *store;
        char *zone;
        int64_t interval_ms;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        int kicked, stopping;
        int failing;              /* the last round had errors */
        struct dns_totals totals; /* under lock */
};

static void deadline_in(struct timespec *ts, int64_t ms)
{
        clock_gettime(CLOCK_MONOTONIC, ts);
        ts->tv_sec += ms / 1000;
        ts->tv_nsec += (ms % 1000) * 1000000;
        if (ts->tv_nsec >= 1000000000) {
                ts->tv_sec++;
                ts->tv_nsec -= 1000000000;
        }
}

static void dns_round(struct dns *d)
{
        struct vm_dns *vms = NULL;
        struct ip_pool *pools = NULL;
        struct ipam_prefix *pre = NULL;
        size_t n_vms = 0, n_pools = 0, n_pre = 0;
        struct dns_stats st;

        /* the store logs its own failures */
        if (store_dns_list(d->store, d->zone, &vms, &n_vms) < 0)
                return;
        if (store_pool_list(d->store, &pools, &n_pools) < 0)
                goto out;
        pre = calloc(2 * n_pools + 1, sizeof(*pre));
        if (!pre)
                goto out;
        for (size_t i = 0; i < n_pools; i++) {
                if (ipam_prefix_parse(pools[i].ipv4, &pre[n_pre], NULL, 0) == 0)
                        n_pre++;
                if (pools[i].ipv6[0] && ipam_prefix_parse(pools[i].ipv6, &pre[n_pre], NULL, 0) == 0)
                        n_pre++;
        }
        struct dns_input in = {vms, n_vms, pre, n_pre};
        int64_t t0 = util_mono_ms();
        int r = dns_reconcile(d->client, &in, &st);
        if (r == -ECANCELED)
                goto out; /* stopping */
        pthread_mutex_lock(&d->lock);
        struct dns_totals *t = &d->totals;
        t->rounds++;
        t->failed_rounds += r < 0;
        t->patches += st.patches;
        t->replaced += st.replaced;
        t->deleted += st.deleted;
        t->conflicts = st.conflicts;
        t->no_zone = st.no_zone;
        uint64_t round = t->rounds;
        pthread_mutex_unlock(&d->lock);
        /* said at info: the first round, those that changed something, and
         * the first of a run of failing ones */
        enum log_level lvl = round == 1 || st.patches || (r < 0 && !d->failing)
                                 ? LOG_LEVEL_INFO
                                 : LOG_LEVEL_DEBUG;
        d->failing = r < 0;
        if (log_enabled(lvl))
                log_msg(lvl,
                        "dns: round %" PRIu64 " done in %" PRId64 " ms: %zu zones read, %zu "
                        "rrsets wanted, %zu replaced, %zu deleted, %zu PATCHes, %zu conflicts, "
                        "%zu without a zone%s",
                        round, util_mono_ms() - t0, st.zones, st.wanted, st.replaced,
                        st.deleted, st.patches, st.conflicts, st.no_zone,
                        r < 0 ? ", with errors" : "");
out:
        free(vms);
        free(pools);
        free(pre);
}

static void *dns_main(void *arg)
{
        struct dns *d = arg;
        struct timespec next;

        pthread_mutex_lock(&d->lock);
        for (;;) {
                if (d->stopping)
                        break;
                pthread_mutex_unlock(&d->lock);
                dns_round(d);
                pthread_mutex_lock(&d->lock);
                deadline_in(&next, d->interval_ms);
                while (!d->stopping && !d->kicked &&
                       pthread_cond_timedwait(&d->cond, &d->lock, &next) != ETIMEDOUT)
                        ;
                if (d->kicked && !d->stopping) {
                        /* let the rest of a burst arrive */
                        struct timespec soon;
                        deadline_in(&soon, KICK_DELAY_MS);
                        while (!d->stopping &&
                               pthread_cond_timedwait(&d->cond, &d->lock, &soon) != ETIMEDOUT)
                                ;
                }
                d->kicked = 0;
        }
        pthread_mutex_unlock(&d->lock);
        return NULL;
}

int dns_start(const struct dns_config *cfg, int64_t interval_ms, struct store *s, struct dns **ret)
{
        struct dns *d;
        pthread_condattr_t ca;
        int r;

        if (interval_ms <= 0 || !s)
                return -EINVAL;
        if (!(d = calloc(1, sizeof(*d))))
                return -ENOMEM;
        if ((r = dns_client_new(cfg, &d->client)) < 0) {
                free(d);
                return r;
        }
        if (!(d->zone = strdup(cfg->zone))) {
                dns_client_free(d->client);
                free(d);
                return -ENOMEM;
        }
        d->store = s;
        d->interval_ms = interval_ms;
        pthread_mutex_init(&d->lock, NULL);
        /* timed waits on the monotonic clock: a wall-clock step changes nothing */
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&d->cond, &ca);
        pthread_condattr_destroy(&ca);
        if ((r = pthread_create(&d->thread, NULL, dns_main, d)) != 0) {
                log_error("dns: cannot start its thread: %s", strerror(r));
                pthread_cond_destroy(&d->cond);
                pthread_mutex_destroy(&d->lock);
                dns_client_free(d->client);
                free(d->zone);
                free(d);
                return -EAGAIN;
        }
        log_info("dns: keeping the records of zone %s and its reverse zones in %s, every %" PRId64
                 " ms",
                 cfg->zone, cfg->url, interval_ms);
        *ret = d;
        return 0;
}

void dns_totals(struct dns *d, struct dns_totals *ret)
{
        memset(ret, 0, sizeof(*ret));
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        *ret = d->totals;
        pthread_mutex_unlock(&d->lock);
}

void dns_kick(struct dns *d)
{
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->kicked = 1;
        pthread_cond_signal(&d->cond);
        pthread_mutex_unlock(&d->lock);
}

void dns_stop(struct dns *d)
{
        if (!d)
                return;
        pthread_mutex_lock(&d->lock);
        d->stopping = 1;
        atomic_store(&d->client->cancel, 1);
        pthread_cond_signal(&d->cond);
        pthread_mutex_unlock(&d->lock);
        pthread_join(d->thread, NULL);
        pthread_cond_destroy(&d->cond);
        pthread_mutex_destroy(&d->lock);
        dns_client_free(d->client);
        free(d->zone);
        free(d);
}
