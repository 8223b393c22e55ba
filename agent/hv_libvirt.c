/* The only file that includes libvirt. See hv.h. */
#include "hv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "log.h"

/* Our metadata of each domain we own, as last written or read. Only this
 * file writes it, so the cache stays true while the agent runs, and a
 * listing costs a few list calls instead of one call per domain. */
struct meta_entry {
        uint64_t vm_id;
        struct domxml_marks m;
        int snaps_known; /* snaps below are what libvirt has */
        uint64_t snaps[TMSG_MAX_SNAPS];
        size_t n_snaps;
        int nics_known; /* macs below are the NICs of its definition */
        char macs[TMSG_MAX_NICS][TMSG_MAC];
        size_t n_macs;
};

struct hv {
        virConnectPtr conn;
        char uri[256];
        char host[DOMXML_HOST_MAX]; /* "": owns every domain of ours */
        struct meta_entry *meta;
        size_t n_meta, cap_meta;
};

static struct meta_entry *meta_find(struct hv *hv, uint64_t vm_id, size_t *ret_pos)
{
        size_t lo = 0, hi = hv->n_meta;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (hv->meta[mid].vm_id == vm_id)
                        return &hv->meta[mid];
                if (hv->meta[mid].vm_id < vm_id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (ret_pos)
                *ret_pos = lo;
        return NULL;
}

static void meta_put(struct hv *hv, uint64_t vm_id, const struct domxml_marks *m)
{
        size_t pos;
        struct meta_entry *e = meta_find(hv, vm_id, &pos);
        if (!e) {
                if (hv->n_meta == hv->cap_meta) {
                        size_t ncap = hv->cap_meta ? hv->cap_meta * 2 : 64;
                        struct meta_entry *n = realloc(hv->meta, ncap * sizeof(*n));
                        if (!n)
                                return; /* a cache miss later, nothing worse */
                        hv->meta = n;
                        hv->cap_meta = ncap;
                }
                memmove(&hv->meta[pos + 1], &hv->meta[pos], (hv->n_meta - pos) * sizeof(*e));
                hv->n_meta++;
                e = &hv->meta[pos];
                memset(e, 0, sizeof(*e));
                e->vm_id = vm_id;
        }
        e->m = *m;
}

static void marks_to_dom(const struct domxml_marks *m, struct hv_domain *d)
{
        d->reboot_done = m->reboot_done;
        d->rebuild_done = m->rebuild_done;
        d->resize_done = m->resize_done;
        d->rescue = m->rescue;
        d->restore_done = m->restore_done;
}

static struct domxml_marks marks_of(const struct hv_domain *d)
{
        return (struct domxml_marks){ .reboot_done = d->reboot_done,
                                      .rebuild_done = d->rebuild_done,
                                      .resize_done = d->resize_done,
                                      .rescue = d->rescue,
                                      .restore_done = d->restore_done };
}

static void meta_drop(struct hv *hv, uint64_t vm_id)
{
        struct meta_entry *e = meta_find(hv, vm_id, NULL);
        if (e) {
                size_t i = (size_t)(e - hv->meta);
                memmove(e, e + 1, (hv->n_meta - i - 1) * sizeof(*e));
                hv->n_meta--;
        }
}

/* libvirt's error codes, translated once, here. */
static int last_errno(void)
{
        virErrorPtr e = virGetLastError();
        if (!e)
                return -EIO;
        switch (e->code) {
        case VIR_ERR_NO_DOMAIN:
        case VIR_ERR_NO_DOMAIN_METADATA:
        case VIR_ERR_NO_DOMAIN_SNAPSHOT:
                return -ENOENT;
        case VIR_ERR_OPERATION_INVALID:
                return -EINVAL;
        case VIR_ERR_NO_MEMORY:
                return -ENOMEM;
        case VIR_ERR_NO_SUPPORT:
                return -EOPNOTSUPP;
        case VIR_ERR_NO_CONNECT:
        case VIR_ERR_SYSTEM_ERROR:
        case VIR_ERR_RPC:
                return -ECONNRESET;
        default:
                return -EIO;
        }
}

static const char *last_message(void)
{
        virErrorPtr e = virGetLastError();
        return e && e->message ? e->message : "unknown libvirt error";
}

/* Quiet libvirt's default printing to stderr: we log errors ourselves. */
static void silent_error(void *ud, virErrorPtr e)
{
        (void)ud;
        (void)e;
}

int hv_open(const char *uri, struct hv **ret)
{
        struct hv *hv = calloc(1, sizeof(*hv));
        if (!hv)
                return -ENOMEM;
        virSetErrorFunc(NULL, silent_error);
        hv->conn = virConnectOpen(uri);
        if (!hv->conn) {
                log_error("hypervisor %s: cannot connect: %s", uri, last_message());
                free(hv);
                return -ECONNREFUSED;
        }
        snprintf(hv->uri, sizeof(hv->uri), "%s", uri);
        *ret = hv;
        return 0;
}

void hv_free(struct hv *hv)
{
        if (!hv)
                return;
        if (hv->conn)
                virConnectClose(hv->conn);
        free(hv->meta);
        free(hv);
}

int hv_node_info(struct hv *hv, struct hv_node *ret)
{
        virNodeInfo info;
        const char *type;

        if (virNodeGetInfo(hv->conn, &info) < 0) {
                log_error("hypervisor %s: cannot read node info: %s", hv->uri, last_message());
                return last_errno();
        }
        memset(ret, 0, sizeof(*ret));
        ret->vcpus = info.cpus;
        ret->ram_mb = info.memory / 1024;
        type = virConnectGetType(hv->conn);
        snprintf(ret->type, sizeof(ret->type), "%s", type ? type : "unknown");
        return 0;
}

static enum power power_of(int state)
{
        switch (state) {
        case VIR_DOMAIN_RUNNING:
        case VIR_DOMAIN_BLOCKED:
                return POWER_RUNNING;
        case VIR_DOMAIN_PAUSED:
        case VIR_DOMAIN_PMSUSPENDED:
                return POWER_PAUSED;
        case VIR_DOMAIN_CRASHED:
                return POWER_CRASHED;
        case VIR_DOMAIN_SHUTDOWN: /* still shutting down: still running */
                return POWER_RUNNING;
        case VIR_DOMAIN_SHUTOFF:
                return POWER_STOPPED;
        default:
                return POWER_UNKNOWN;
        }
}

/* Reads our metadata; -ENOENT when the domain does not carry it, -EPERM
 * when it names another host (another agent on the same libvirt). A domain
 * whose metadata names no host (an older agent's) is ours. */
static int read_meta(struct hv *hv, virDomainPtr dom, struct hv_domain *d)
{
        char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, DOMXML_NS, 0);
        if (!xml)
                return -ENOENT;
        struct domxml_marks m;
        int r = domxml_parse_marks(xml, &d->vm_id, &m);
        free(xml);
        if (r == 0 && hv->host[0] && m.host[0] && strcmp(m.host, hv->host) != 0)
                return -EPERM;
        if (r == 0)
                marks_to_dom(&m, d);
        return r;
}

int hv_set_host(struct hv *hv, const char *host)
{
        if (!domxml_host_valid(host))
                return -EINVAL;
        snprintf(hv->host, sizeof(hv->host), "%s", host);
        return 0;
}

/* The NICs of the domain's definition, from the cache or else from its
 * XML (cached then). On failure nics_known stays 0: the caller must not
 * take a NIC as missing. */
static void load_nics(struct hv *hv, virDomainPtr dom, struct hv_domain *d)
{
        struct meta_entry *e = meta_find(hv, d->vm_id, NULL);
        size_t n = 0;

        d->nics_known = 0;
        if (e && e->nics_known) {
                memcpy(d->nic_macs, e->macs, sizeof(d->nic_macs));
                d->n_nics = e->n_macs;
                d->nics_known = 1;
                return;
        }
        char *xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
        if (!xml)
                return;
        int r = domxml_parse_macs(xml, d->nic_macs, TMSG_MAX_NICS, &n);
        free(xml);
        if (r < 0 || n > TMSG_MAX_NICS)
                return;
        d->n_nics = n;
        d->nics_known = 1;
        if (e) {
                memcpy(e->macs, d->nic_macs, sizeof(e->macs));
                e->n_macs = n;
                e->nics_known = 1;
        }
}

static int norm_mac(const char *in, char out[TMSG_MAC])
{
        if (!in || strlen(in) != TMSG_MAC - 1)
                return -EINVAL;
        for (size_t k = 0; k < TMSG_MAC - 1; k++) {
                char c = in[k];
                if (k % 3 == 2 ? c != ':' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                        return -EINVAL;
                out[k] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
        }
        out[TMSG_MAC - 1] = '\0';
        return 0;
}

static void cache_nics(struct hv *hv, uint64_t vm_id, const struct domxml_nic *nics, size_t n)
{
        struct meta_entry *e = meta_find(hv, vm_id, NULL);
        if (!e)
                return;
        e->nics_known = 0;
        if (n > TMSG_MAX_NICS)
                return;
        for (size_t i = 0; i < n; i++)
                if (norm_mac(nics[i].mac, e->macs[i]) < 0)
                        return;
        e->n_macs = n;
        e->nics_known = 1;
}

static int cmp_u64(const void *a, const void *b)
{
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/* "tasman-snap-<id>" -> id, or 0. */
static uint64_t snap_id_of(const char *name)
{
        size_t pl = strlen(HV_SNAP_PREFIX);
        uint64_t v = 0;
        const char *p = name + pl;
        if (strncmp(name, HV_SNAP_PREFIX, pl) != 0 || *p < '1' || *p > '9' || strlen(p) > 19)
                return 0;
        for (; *p; p++) {
                if (*p < '0' || *p > '9')
                        return 0;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        return v;
}

/* The domain's snapshots of ours, from the cache or from libvirt (then
 * cached): ascending ids into d. */
static int load_snaps(struct hv *hv, virDomainPtr dom, struct hv_domain *d)
{
        struct meta_entry *e = meta_find(hv, d->vm_id, NULL);
        virDomainSnapshotPtr *snaps = NULL;
        int n;

        if (e && e->snaps_known) {
                memcpy(d->snaps, e->snaps, e->n_snaps * sizeof(d->snaps[0]));
                d->n_snaps = e->n_snaps;
                return 0;
        }
        n = virDomainListAllSnapshots(dom, &snaps, 0);
        if (n < 0) {
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot list snapshots: %s",
                          d->vm_id, last_message());
                return last_errno();
        }
        d->n_snaps = 0;
        for (int i = 0; i < n; i++) {
                uint64_t id = snap_id_of(virDomainSnapshotGetName(snaps[i]));
                if (id && d->n_snaps < TMSG_MAX_SNAPS)
                        d->snaps[d->n_snaps++] = id;
                else if (id)
                        log_warn("domain " HV_NAME_PREFIX "%" PRIu64 ": more than %u snapshots; "
                                 "reporting %u",
                                 d->vm_id, TMSG_MAX_SNAPS, TMSG_MAX_SNAPS);
                virDomainSnapshotFree(snaps[i]);
        }
        free(snaps);
        qsort(d->snaps, d->n_snaps, sizeof(d->snaps[0]), cmp_u64);
        if (e) {
                memcpy(e->snaps, d->snaps, d->n_snaps * sizeof(d->snaps[0]));
                e->n_snaps = d->n_snaps;
                e->snaps_known = 1;
        }
        return 0;
}

/* Keeps the cache's list of a domain's snapshots true after a change. */
static void cache_snap(struct hv *hv, uint64_t vm_id, uint64_t snap_id, int present)
{
        struct meta_entry *e = meta_find(hv, vm_id, NULL);
        size_t i = 0;
        if (!e || !e->snaps_known)
                return;
        while (i < e->n_snaps && e->snaps[i] != snap_id)
                i++;
        if (present && i == e->n_snaps) {
                if (e->n_snaps == TMSG_MAX_SNAPS) {
                        e->snaps_known = 0; /* read them again */
                        return;
                }
                e->snaps[e->n_snaps++] = snap_id;
                qsort(e->snaps, e->n_snaps, sizeof(e->snaps[0]), cmp_u64);
        } else if (!present && i < e->n_snaps) {
                memmove(&e->snaps[i], &e->snaps[i + 1], (e->n_snaps - i - 1) * sizeof(e->snaps[0]));
                e->n_snaps--;
        }
}

static int cmp_dom(const void *a, const void *b)
{
        const struct hv_domain *x = a, *y = b;
        return x->vm_id < y->vm_id ? -1 : x->vm_id > y->vm_id;
}

/* Lists our domains in one state class; appends to *out. */
static int list_class(struct hv *hv, unsigned flags, enum power state, struct hv_domain **out,
                      size_t *n_out, size_t *cap_out)
{
        virDomainPtr *doms = NULL;
        int n = virConnectListAllDomains(hv->conn, &doms, flags);
        int r = 0;

        if (n < 0) {
                log_error("hypervisor %s: cannot list domains: %s", hv->uri, last_message());
                return last_errno();
        }
        for (int i = 0; i < n; i++) {
                const char *name = virDomainGetName(doms[i]);
                struct hv_domain d = { .state = state };
                uint64_t name_id;
                struct meta_entry *e;

                if (r < 0 || !name || domxml_parse_name(name, &name_id) < 0)
                        continue; /* not ours */
                if ((e = meta_find(hv, name_id, NULL))) {
                        d.vm_id = name_id;
                        marks_to_dom(&e->m, &d);
                } else if (read_meta(hv, doms[i], &d) < 0 || d.vm_id != name_id) {
                        continue; /* our prefix, but no (matching) metadata */
                } else {
                        struct domxml_marks m = marks_of(&d);
                        meta_put(hv, d.vm_id, &m);
                }
                if (load_snaps(hv, doms[i], &d) < 0) {
                        r = -EIO; /* do not report it without its snapshots */
                        continue;
                }
                load_nics(hv, doms[i], &d);
                if (state == POWER_UNKNOWN) {
                        int st, reason;
                        if (virDomainGetState(doms[i], &st, &reason, 0) < 0)
                                continue; /* vanished meanwhile */
                        d.state = power_of(st);
                }
                if (*n_out == *cap_out) {
                        size_t ncap = *cap_out ? *cap_out * 2 : 64;
                        struct hv_domain *nd = realloc(*out, ncap * sizeof(*nd));
                        if (!nd) {
                                r = -ENOMEM;
                                continue;
                        }
                        *out = nd;
                        *cap_out = ncap;
                }
                (*out)[(*n_out)++] = d;
        }
        for (int i = 0; i < n; i++)
                virDomainFree(doms[i]);
        free(doms);
        return r;
}

int hv_list(struct hv *hv, struct hv_domain **ret, size_t *ret_n)
{
        /* One list call per state class: no call per domain. */
        static const struct {
                unsigned flags;
                enum power state;
        } classes[] = {
                { VIR_CONNECT_LIST_DOMAINS_RUNNING, POWER_RUNNING },
                { VIR_CONNECT_LIST_DOMAINS_PAUSED, POWER_PAUSED },
                { VIR_CONNECT_LIST_DOMAINS_SHUTOFF, POWER_STOPPED },
                { VIR_CONNECT_LIST_DOMAINS_OTHER, POWER_UNKNOWN }, /* rare: ask each */
        };
        struct hv_domain *out = NULL;
        size_t n = 0, cap = 0;

        for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
                int r = list_class(hv, classes[i].flags, classes[i].state, &out, &n, &cap);
                if (r < 0) {
                        free(out);
                        return r;
                }
        }
        if (n)
                qsort(out, n, sizeof(*out), cmp_dom);
        /* A domain changing state between two list calls can show twice:
         * keep its first (running-most) entry. */
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
                if (w == 0 || out[w - 1].vm_id != out[i].vm_id)
                        out[w++] = out[i];
        *ret = out;
        *ret_n = w;
        return 0;
}

/* Looks up a domain we own; -ENOENT if missing or not ours. */
static int lookup_owned(struct hv *hv, uint64_t vm_id, virDomainPtr *ret)
{
        char name[64];
        struct hv_domain d = { 0 };
        virDomainPtr dom;

        domxml_name(vm_id, name, sizeof(name));
        dom = virDomainLookupByName(hv->conn, name);
        if (!dom)
                return -ENOENT;
        if (read_meta(hv, dom, &d) < 0 || d.vm_id != vm_id) {
                log_warn("domain %s: has our name but not our metadata; leaving it alone", name);
                virDomainFree(dom);
                return -EPERM;
        }
        *ret = dom;
        return 0;
}

int hv_get(struct hv *hv, uint64_t vm_id, struct hv_domain *ret)
{
        char name[64];
        virDomainPtr dom;
        struct meta_entry *e;
        struct hv_domain d = { 0 };
        int st, reason, r = 0;

        domxml_name(vm_id, name, sizeof(name));
        dom = virDomainLookupByName(hv->conn, name);
        if (!dom) /* absent only if libvirt says so; else we do not know */
                return virGetLastErrorCode() == VIR_ERR_NO_DOMAIN ? -ENOENT : -EIO;
        if ((e = meta_find(hv, vm_id, NULL))) {
                d.vm_id = vm_id;
                marks_to_dom(&e->m, &d);
        } else if (read_meta(hv, dom, &d) < 0 || d.vm_id != vm_id) {
                r = -ENOENT; /* not ours */
        } else {
                struct domxml_marks m = marks_of(&d);
                meta_put(hv, vm_id, &m);
        }
        if (r == 0 && load_snaps(hv, dom, &d) < 0)
                r = -EIO;
        if (r == 0)
                load_nics(hv, dom, &d);
        if (r == 0 && virDomainGetState(dom, &st, &reason, 0) < 0)
                r = virGetLastErrorCode() == VIR_ERR_NO_DOMAIN ? -ENOENT : -EIO;
        virDomainFree(dom);
        if (r < 0)
                return r;
        d.state = power_of(st);
        *ret = d;
        return 0;
}

int hv_define(struct hv *hv, const struct domxml_params *p)
{
        char name[64], uuid[VIR_UUID_STRING_BUFLEN];
        struct domxml_params q = *p;
        virDomainPtr dom, old;
        char *xml;

        domxml_name(p->vm_id, name, sizeof(name));
        old = virDomainLookupByName(hv->conn, name);
        if (old) {
                struct hv_domain d = { 0 };
                int owned = read_meta(hv, old, &d) == 0 && d.vm_id == p->vm_id;
                /* libvirt redefines a domain only under its own uuid. */
                if (owned && virDomainGetUUIDString(old, uuid) == 0)
                        q.uuid = uuid;
                virDomainFree(old);
                if (!owned) {
                        log_error("domain %s: exists without our metadata; not redefining", name);
                        return -EEXIST;
                }
        }
        q.host = hv->host;
        xml = domxml_build(&q);
        if (!xml)
                return -ENOMEM;
        dom = virDomainDefineXML(hv->conn, xml);
        free(xml);
        if (!dom) {
                int r = last_errno();
                log_error("domain %s: cannot define: %s", name, last_message());
                return r;
        }
        virDomainFree(dom);
        meta_put(hv, p->vm_id, &(struct domxml_marks){ .reboot_done = p->reboot_done,
                                                       .rebuild_done = p->rebuild_done,
                                                       .resize_done = p->resize_done,
                                                       .rescue = p->rescue,
                                                       .restore_done = p->restore_done });
        cache_nics(hv, p->vm_id, p->nics, p->nics ? p->n_nics : 0);
        return 0;
}

int hv_nwfilter_define(struct hv *hv, const char *name, const char *xml)
{
        char uuid[VIR_UUID_STRING_BUFLEN], *full = NULL;
        virNWFilterPtr f = virNWFilterLookupByName(hv->conn, name);
        const char *open_end = strchr(xml, '>');
        int r = 0;

        if (!open_end)
                return -EINVAL;
        if (f) {
                /* Redefined under its uuid, or libvirt says it exists. */
                if (virNWFilterGetUUIDString(f, uuid) == 0 &&
                    asprintf(&full, "%.*s\n  <uuid>%s</uuid>%s", (int)(open_end - xml + 1), xml,
                             uuid, open_end + 1) < 0)
                        full = NULL;
                virNWFilterFree(f);
                if (!full)
                        return -ENOMEM;
        }
        virNWFilterPtr nf = virNWFilterDefineXML(hv->conn, full ? full : xml);
        if (!nf) {
                r = last_errno();
                log_error("nwfilter %s: cannot define: %s", name, last_message());
        } else {
                virNWFilterFree(nf);
        }
        free(full);
        return r;
}

int hv_nic_attach(struct hv *hv, uint64_t vm_id, const struct domxml_nic *n)
{
        virDomainPtr dom;
        char mac[TMSG_MAC];
        int r;

        if (norm_mac(n->mac, mac) < 0)
                return -EINVAL;
        if ((r = lookup_owned(hv, vm_id, &dom)) < 0)
                return r;
        char *xml = domxml_interface(n);
        if (!xml) {
                virDomainFree(dom);
                return -ENOMEM;
        }
        unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
        if (virDomainIsActive(dom) == 1)
                flags |= VIR_DOMAIN_AFFECT_LIVE;
        if (virDomainAttachDeviceFlags(dom, xml, flags) < 0) {
                r = last_errno();
                if (r != -EOPNOTSUPP)
                        log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot attach NIC %s: %s",
                                  vm_id, mac, last_message());
        } else {
                struct meta_entry *e = meta_find(hv, vm_id, NULL);
                if (e && e->nics_known && e->n_macs < TMSG_MAX_NICS)
                        memcpy(e->macs[e->n_macs++], mac, TMSG_MAC);
                else if (e)
                        e->nics_known = 0; /* read it again */
        }
        free(xml);
        virDomainFree(dom);
        return r;
}

typedef int (*dom_op_fn)(virDomainPtr);

/* Runs op on an owned domain if its activity is run_if_active (so that
 * starting a running domain or stopping a stopped one is a no-op). */
static int run_op(struct hv *hv, uint64_t vm_id, const char *what, dom_op_fn op,
                  int run_if_active)
{
        virDomainPtr dom;
        int r = lookup_owned(hv, vm_id, &dom);
        if (r < 0)
                return r;
        int active = virDomainIsActive(dom);
        if (active < 0) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot read state: %s", vm_id,
                          last_message());
        } else if (active == run_if_active) {
                if (op(dom) < 0) {
                        r = last_errno();
                        log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot %s: %s", vm_id,
                                  what, last_message());
                }
        }
        virDomainFree(dom);
        return r;
}

int hv_start(struct hv *hv, uint64_t vm_id)
{
        return run_op(hv, vm_id, "start", virDomainCreate, 0);
}

int hv_shutdown(struct hv *hv, uint64_t vm_id)
{
        return run_op(hv, vm_id, "shut down", virDomainShutdown, 1);
}

int hv_destroy(struct hv *hv, uint64_t vm_id)
{
        return run_op(hv, vm_id, "power off", virDomainDestroy, 1);
}

int hv_undefine(struct hv *hv, uint64_t vm_id)
{
        virDomainPtr dom;
        int r = lookup_owned(hv, vm_id, &dom);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        if (virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 &&
            virDomainIsActive(dom) == 1) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot power off: %s", vm_id,
                          last_message());
        } else if (virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                                   VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                                   VIR_DOMAIN_UNDEFINE_NVRAM) < 0 &&
                   /* drivers without NVRAM refuse that flag */
                   virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                                   VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA) < 0 &&
                   virDomainUndefine(dom) < 0) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot undefine: %s", vm_id,
                          last_message());
        }
        virDomainFree(dom);
        if (r == 0)
                meta_drop(hv, vm_id);
        return r;
}

int hv_set_counters(struct hv *hv, uint64_t vm_id, uint64_t reboot_done, uint64_t rebuild_done)
{
        virDomainPtr dom;
        struct hv_domain d = { 0 };
        char *meta;
        int r = lookup_owned(hv, vm_id, &dom);
        if (r < 0)
                return r;
        struct meta_entry *e = meta_find(hv, vm_id, NULL);
        struct domxml_marks m = { 0 };
        if (e)
                m = e->m;
        else if (read_meta(hv, dom, &d) == 0)
                m = marks_of(&d);
        m.reboot_done = reboot_done;
        m.rebuild_done = rebuild_done;
        snprintf(m.host, sizeof(m.host), "%s", hv->host);
        meta = domxml_metadata_marks(vm_id, &m);
        if (!meta) {
                virDomainFree(dom);
                return -ENOMEM;
        }
        unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
        if (virDomainIsActive(dom) == 1)
                flags |= VIR_DOMAIN_AFFECT_LIVE;
        if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, meta, DOMXML_NS_PREFIX,
                                 DOMXML_NS, flags) < 0) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot write metadata: %s",
                          vm_id, last_message());
        } else {
                meta_put(hv, vm_id, &m);
        }
        free(meta);
        virDomainFree(dom);
        return r;
}

/* ---- snapshots ---- */

static void snap_name(uint64_t snap_id, char *buf, size_t len)
{
        snprintf(buf, len, HV_SNAP_PREFIX "%" PRIu64, snap_id);
}

int hv_snap_create(struct hv *hv, uint64_t vm_id, uint64_t snap_id, int *ret_frozen)
{
        char name[64], xml[256];
        virDomainPtr dom;
        virDomainSnapshotPtr snap;
        int r = lookup_owned(hv, vm_id, &dom), frozen = 0;

        *ret_frozen = 0;
        if (r < 0)
                return r;
        snap_name(snap_id, name, sizeof(name));
        if ((snap = virDomainSnapshotLookupByName(dom, name, 0))) {
                virDomainSnapshotFree(snap);
                cache_snap(hv, vm_id, snap_id, 1);
                virDomainFree(dom);
                return 0;
        }
        /* A running guest: its file systems frozen when it runs the guest
         * agent (libvirt answers at once when it does not); QEMU stops the
         * guest for the copy either way. */
        if (virDomainIsActive(dom) == 1) {
                if (virDomainFSFreeze(dom, NULL, 0, 0) >= 0)
                        frozen = 1;
                else
                        log_info("domain " HV_NAME_PREFIX "%" PRIu64 ": no file system freeze "
                                 "(%s); the guest is paused for the copy",
                                 vm_id, last_message());
        }
        snprintf(xml, sizeof(xml), "<domainsnapshot><name>%s</name></domainsnapshot>", name);
        snap = virDomainSnapshotCreateXML(dom, xml, VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC);
        if (!snap) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot make snapshot %s: %s",
                          vm_id, name, last_message());
        } else {
                virDomainSnapshotFree(snap);
                cache_snap(hv, vm_id, snap_id, 1);
        }
        if (frozen && virDomainFSThaw(dom, NULL, 0, 0) < 0)
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot thaw file systems: %s",
                          vm_id, last_message());
        virDomainFree(dom);
        *ret_frozen = frozen;
        return r;
}

int hv_snap_delete(struct hv *hv, uint64_t vm_id, uint64_t snap_id)
{
        char name[64];
        virDomainPtr dom;
        virDomainSnapshotPtr snap;
        int r = lookup_owned(hv, vm_id, &dom);

        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        snap_name(snap_id, name, sizeof(name));
        snap = virDomainSnapshotLookupByName(dom, name, 0);
        if (!snap) {
                if (virGetLastErrorCode() != VIR_ERR_NO_DOMAIN_SNAPSHOT) {
                        r = last_errno();
                        log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot look up %s: %s",
                                  vm_id, name, last_message());
                } else {
                        cache_snap(hv, vm_id, snap_id, 0);
                }
                virDomainFree(dom);
                return r;
        }
        if (virDomainSnapshotDelete(snap, 0) < 0) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot delete snapshot %s: %s",
                          vm_id, name, last_message());
        } else {
                cache_snap(hv, vm_id, snap_id, 0);
        }
        virDomainSnapshotFree(snap);
        virDomainFree(dom);
        return r;
}

int hv_snap_revert(struct hv *hv, uint64_t vm_id, uint64_t snap_id)
{
        char name[64];
        virDomainPtr dom;
        virDomainSnapshotPtr snap;
        unsigned flags = 0;
        char *xml;
        int r = lookup_owned(hv, vm_id, &dom);

        if (r < 0)
                return r;
        snap_name(snap_id, name, sizeof(name));
        snap = virDomainSnapshotLookupByName(dom, name, 0);
        if (!snap) {
                r = virGetLastErrorCode() == VIR_ERR_NO_DOMAIN_SNAPSHOT ? -ENOENT : last_errno();
                if (r != -ENOENT)
                        log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot look up %s: %s",
                                  vm_id, name, last_message());
                virDomainFree(dom);
                return r;
        }
        if (virDomainIsActive(dom) == 1) {
                virDomainSnapshotFree(snap);
                virDomainFree(dom);
                return -EBUSY;
        }
        /* A checkpoint of a running guest would resume it: have it come
         * back paused, then power it off, so only its disk is restored. */
        xml = virDomainSnapshotGetXMLDesc(snap, 0);
        if (xml && (strstr(xml, "<state>running</state>") || strstr(xml, "<state>paused</state>")))
                flags = VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED;
        free(xml);
        /* Its metadata goes back to what was saved with the snapshot. */
        meta_drop(hv, vm_id);
        if (virDomainRevertToSnapshot(snap, flags) < 0) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot restore snapshot %s: %s",
                          vm_id, name, last_message());
        } else if (flags && virDomainDestroy(dom) < 0 && virDomainIsActive(dom) == 1) {
                r = last_errno();
                log_error("domain " HV_NAME_PREFIX "%" PRIu64 ": cannot power off after "
                          "restoring %s: %s",
                          vm_id, name, last_message());
        }
        virDomainSnapshotFree(snap);
        virDomainFree(dom);
        return r;
}

/* ---- storage ---- */

static void put_xml_text(FILE *f, const char *s)
{
        for (; *s; s++) {
                switch (*s) {
                case '<': fputs("&lt;", f); break;
                case '>': fputs("&gt;", f); break;
                case '&': fputs("&amp;", f); break;
                case '\'': fputs("&apos;", f); break;
                case '"': fputs("&quot;", f); break;
                default: fputc(*s, f);
                }
        }
}

/* The <path> of a pool's XML description, or "" (what we compare). */
static void pool_path(virStoragePoolPtr pool, char *buf, size_t len)
{
        char *xml = virStoragePoolGetXMLDesc(pool, 0), *a, *b;
        buf[0] = '\0';
        if (xml && (a = strstr(xml, "<path>")) && (b = strstr(a, "</path>")) &&
            (size_t)(b - a - 6) < len) {
                memcpy(buf, a + 6, (size_t)(b - a - 6));
                buf[b - a - 6] = '\0';
        }
        free(xml);
}

int hv_pool_ensure(struct hv *hv, const char *name, const char *dir)
{
        virStoragePoolPtr pool = virStoragePoolLookupByName(hv->conn, name);
        char have[1024], *xml = NULL;
        size_t len = 0;
        int r = 0, active;

        if (!pool) {
                FILE *f = open_memstream(&xml, &len);
                if (!f)
                        return -ENOMEM;
                fputs("<pool type='dir'><name>", f);
                put_xml_text(f, name);
                fputs("</name><target><path>", f);
                put_xml_text(f, dir);
                fputs("</path><permissions><mode>0711</mode></permissions></target></pool>", f);
                if (fclose(f) != 0) {
                        free(xml);
                        return -ENOMEM;
                }
                pool = virStoragePoolDefineXML(hv->conn, xml, 0);
                free(xml);
                if (!pool) {
                        r = last_errno();
                        log_error("storage pool %s: cannot define at %s: %s", name, dir,
                                  last_message());
                        return r;
                }
                log_info("storage pool %s: defined at %s", name, dir);
                /* Makes the directory; an existing one is fine. */
                virStoragePoolBuild(pool, VIR_STORAGE_POOL_BUILD_NEW);
        } else {
                pool_path(pool, have, sizeof(have));
                if (strcmp(have, dir) != 0) {
                        log_error("storage pool %s: is at %s, not %s; fix the agent's config or "
                                  "the pool",
                                  name, have, dir);
                        virStoragePoolFree(pool);
                        return -EEXIST;
                }
        }
        active = virStoragePoolIsActive(pool);
        if (active == 0 && virStoragePoolCreate(pool, 0) < 0) {
                r = last_errno();
                log_error("storage pool %s: cannot start: %s", name, last_message());
        } else if (active < 0) {
                r = last_errno();
        }
        if (r == 0)
                virStoragePoolSetAutostart(pool, 1);
        virStoragePoolFree(pool);
        return r;
}

static int pool_open(struct hv *hv, const char *name, virStoragePoolPtr *ret)
{
        virStoragePoolPtr pool = virStoragePoolLookupByName(hv->conn, name);
        if (!pool) {
                int r = virGetLastErrorCode() == VIR_ERR_NO_STORAGE_POOL ? -ENOENT : last_errno();
                log_error("storage pool %s: cannot open: %s", name, last_message());
                return r;
        }
        *ret = pool;
        return 0;
}

int hv_vol_create(struct hv *hv, const char *pool_name, const char *vol, uint64_t capacity_bytes,
                  const char *backing, const char *backing_fmt, char *path, size_t path_len)
{
        virStoragePoolPtr pool = NULL;
        virStorageVolPtr v;
        char *xml = NULL, *p;
        size_t len = 0;
        int r;

        if (strncmp(vol, HV_NAME_PREFIX, strlen(HV_NAME_PREFIX)) != 0)
                return -EPERM;
        if ((r = pool_open(hv, pool_name, &pool)) < 0)
                return r;
        v = virStorageVolLookupByName(pool, vol);
        if (!v) {
                FILE *f = open_memstream(&xml, &len);
                if (!f) {
                        virStoragePoolFree(pool);
                        return -ENOMEM;
                }
                fputs("<volume><name>", f);
                put_xml_text(f, vol);
                fprintf(f, "</name><capacity unit='bytes'>%" PRIu64 "</capacity>"
                           "<allocation unit='bytes'>0</allocation>"
                           "<target><format type='qcow2'/><permissions><mode>0600</mode>"
                           "</permissions></target>",
                        capacity_bytes);
                if (backing && backing[0]) {
                        fputs("<backingStore><path>", f);
                        put_xml_text(f, backing);
                        fputs("</path><format type='", f);
                        put_xml_text(f, backing_fmt && backing_fmt[0] ? backing_fmt : "raw");
                        fputs("'/></backingStore>", f);
                }
                fputs("</volume>", f);
                if (fclose(f) != 0) {
                        free(xml);
                        virStoragePoolFree(pool);
                        return -ENOMEM;
                }
                v = virStorageVolCreateXML(pool, xml, 0);
                free(xml);
                if (!v) {
                        r = last_errno();
                        log_error("volume %s/%s: cannot create: %s", pool_name, vol,
                                  last_message());
                        virStoragePoolFree(pool);
                        return r;
                }
        }
        p = virStorageVolGetPath(v);
        if (!p) {
                r = last_errno();
        } else if (strlen(p) >= path_len) {
                r = -ENAMETOOLONG;
        } else {
                memcpy(path, p, strlen(p) + 1);
        }
        free(p);
        virStorageVolFree(v);
        virStoragePoolFree(pool);
        return r;
}

int hv_vol_grow(struct hv *hv, const char *pool_name, const char *vol, uint64_t capacity_bytes)
{
        virStoragePoolPtr pool = NULL;
        virStorageVolPtr v;
        virStorageVolInfo info;
        int r;

        if (strncmp(vol, HV_NAME_PREFIX, strlen(HV_NAME_PREFIX)) != 0)
                return -EPERM;
        if ((r = pool_open(hv, pool_name, &pool)) < 0)
                return r;
        v = virStorageVolLookupByName(pool, vol);
        if (!v) {
                r = last_errno();
                log_error("volume %s/%s: cannot open: %s", pool_name, vol, last_message());
        } else {
                if (virStorageVolGetInfo(v, &info) < 0) {
                        r = last_errno();
                        log_error("volume %s/%s: cannot read its size: %s", pool_name, vol,
                                  last_message());
                } else if (info.capacity < capacity_bytes) {
                        if (virStorageVolResize(v, capacity_bytes, 0) < 0) {
                                r = last_errno();
                                log_error("volume %s/%s: cannot grow to %" PRIu64 " bytes: %s",
                                          pool_name, vol, capacity_bytes, last_message());
                        } else {
                                log_info("volume %s/%s: grown from %llu to %" PRIu64 " bytes",
                                         pool_name, vol, info.capacity, capacity_bytes);
                        }
                }
                virStorageVolFree(v);
        }
        virStoragePoolFree(pool);
        return r;
}

int hv_vol_delete(struct hv *hv, const char *pool_name, const char *vol)
{
        virStoragePoolPtr pool = NULL;
        virStorageVolPtr v;
        int r;

        if (strncmp(vol, HV_NAME_PREFIX, strlen(HV_NAME_PREFIX)) != 0)
                return -EPERM;
        if ((r = pool_open(hv, pool_name, &pool)) < 0)
                return r == -ENOENT ? 0 : r;
        v = virStorageVolLookupByName(pool, vol);
        if (!v) {
                r = virGetLastErrorCode() == VIR_ERR_NO_STORAGE_VOL ? 0 : last_errno();
        } else {
                if (virStorageVolDelete(v, 0) < 0) {
                        r = last_errno();
                        log_error("volume %s/%s: cannot delete: %s", pool_name, vol,
                                  last_message());
                } else {
                        log_info("volume %s/%s: deleted", pool_name, vol);
                }
                virStorageVolFree(v);
        }
        virStoragePoolFree(pool);
        return r;
}

void hv_names_free(char **names, size_t n)
{
        for (size_t i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
}

int hv_vol_list(struct hv *hv, const char *pool_name, char ***ret, size_t *ret_n)
{
        virStoragePoolPtr pool = NULL;
        virStorageVolPtr *vols = NULL;
        char **names = NULL;
        size_t n = 0;
        int r, k;

        if ((r = pool_open(hv, pool_name, &pool)) < 0)
                return r;
        k = virStoragePoolListAllVolumes(pool, &vols, 0);
        if (k < 0) {
                r = last_errno();
                log_error("storage pool %s: cannot list volumes: %s", pool_name, last_message());
                virStoragePoolFree(pool);
                return r;
        }
        names = calloc((size_t)k + 1, sizeof(*names));
        for (int i = 0; i < k; i++) {
                const char *nm = virStorageVolGetName(vols[i]);
                if (names && nm && strncmp(nm, HV_NAME_PREFIX, strlen(HV_NAME_PREFIX)) == 0) {
                        if (!(names[n] = strdup(nm)))
                                r = -ENOMEM;
                        else
                                n++;
                }
                virStorageVolFree(vols[i]);
        }
        free(vols);
        virStoragePoolFree(pool);
        if (!names || r < 0) {
                hv_names_free(names, n);
                return -ENOMEM;
        }
        *ret = names;
        *ret_n = n;
        return 0;
}

int hv_pool_refresh(struct hv *hv, const char *pool_name)
{
        virStoragePoolPtr pool = NULL;
        int r = pool_open(hv, pool_name, &pool);
        if (r < 0)
                return r;
        if (virStoragePoolRefresh(pool, 0) < 0) {
                r = last_errno();
                log_error("storage pool %s: cannot refresh: %s", pool_name, last_message());
        }
        virStoragePoolFree(pool);
        return r;
}
