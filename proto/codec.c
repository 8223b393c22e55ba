#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tasman.pb-c.h"

static const char *const power_names[] = {
        [POWER_UNKNOWN] = "unknown", [POWER_RUNNING] = "running", [POWER_STOPPED] = "stopped",
        [POWER_PAUSED] = "paused",   [POWER_CRASHED] = "crashed",
};
_Static_assert(sizeof(power_names) / sizeof(power_names[0]) == POWER__MAX,
               "power_names must cover enum power");

const char *power_to_string(enum power p)
{
        return (unsigned)p < POWER__MAX ? power_names[p] : "unknown";
}

static enum power power_from_pb(Tasman__Power p)
{
        return (unsigned)p < POWER__MAX ? (enum power)p : POWER_UNKNOWN;
}

/* ---- encode: point protobuf-c structs at our strings ---- */

#define S(x) ((char *)(x))

int codec_encode(const struct tmsg *m, uint8_t **ret_buf, size_t *ret_len)
{
        Tasman__Envelope env = TASMAN__ENVELOPE__INIT;
        Tasman__Hello hello = TASMAN__HELLO__INIT;
        Tasman__HelloReply hrep = TASMAN__HELLO_REPLY__INIT;
        Tasman__Sync sync = TASMAN__SYNC__INIT;
        Tasman__SyncReply srep = TASMAN__SYNC_REPLY__INIT;
        Tasman__Error err = TASMAN__ERROR__INIT;
        Tasman__DomainObserved *obs = NULL, **obs_p = NULL;
        Tasman__DomainDesired *des = NULL, **des_p = NULL;
        Tasman__Image *img = NULL, **img_p = NULL;
        Tasman__Snapshot *snap = NULL, **snap_p = NULL;
        Tasman__Nic *nic = NULL, **nic_p = NULL;
        char **nic_addrs = NULL;
        Tasman__Network *net = NULL, **net_p = NULL;
        char **remotes = NULL;
        Tasman__Fdb *fdb = NULL, **fdb_p = NULL;
        Tasman__SeedRequest sreq = TASMAN__SEED_REQUEST__INIT;
        Tasman__SeedReply sdrep = TASMAN__SEED_REPLY__INIT;
        uint8_t *buf = NULL;
        int r = 0;

        env.request_id = m->request_id;
        switch (m->type) {
        case TMSG_HELLO: {
                const struct msg_hello *h = &m->hello;
                hello.host_id = S(h->host_id);
                hello.site = S(h->site);
                hello.underlay_ip = S(h->underlay_ip);
                hello.boot_id = S(h->boot_id);
                hello.agent_version = S(h->agent_version);
                hello.hv_type = S(h->hv_type);
                hello.vcpus = h->vcpus;
                hello.ram_mb = h->ram_mb;
                hello.disk_gb = h->disk_gb;
                hello.hdd_gb = h->hdd_gb;
                env.body_case = TASMAN__ENVELOPE__BODY_HELLO;
                env.hello = &hello;
                break;
        }
        case TMSG_HELLO_REPLY:
                hrep.host_num = m->hello_reply.host_num;
                hrep.hold_ms = m->hello_reply.hold_ms;
                env.body_case = TASMAN__ENVELOPE__BODY_HELLO_REPLY;
                env.hello_reply = &hrep;
                break;
        case TMSG_SYNC: {
                const struct msg_sync *s = &m->sync;
                if (s->n_domains > TMSG_MAX_DOMAINS)
                        return -EINVAL;
                if (s->n_domains) {
                        obs = calloc(s->n_domains, sizeof(*obs));
                        obs_p = calloc(s->n_domains, sizeof(*obs_p));
                        if (!obs || !obs_p) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
                for (size_t i = 0; i < s->n_domains; i++) {
                        const struct dom_observed *d = &s->domains[i];
                        tasman__domain_observed__init(&obs[i]);
                        obs[i].vm_id = d->vm_id;
                        obs[i].state = (Tasman__Power)d->state;
                        obs[i].reboot_done = d->reboot_done;
                        obs[i].rebuild_done = d->rebuild_done;
                        obs[i].error = S(d->error);
                        obs[i].resize_done = d->resize_done;
                        obs[i].rescue = d->rescue ? 1 : 0;
                        if (d->n_snaps > TMSG_MAX_SNAPS) {
                                r = -EINVAL;
                                goto out;
                        }
                        obs[i].n_snapshots = d->n_snaps;
                        obs[i].snapshots = (uint64_t *)d->snaps;
                        obs[i].restore_done = d->restore_done;
                        obs[i].snapshot_failed = d->snap_failed;
                        obs_p[i] = &obs[i];
                }
                sync.host_id = S(s->host_id);
                sync.boot_id = S(s->boot_id);
                sync.applied_generation = s->applied_generation;
                sync.max_hold_ms = s->max_hold_ms;
                sync.n_domains = s->n_domains;
                sync.domains = obs_p;
                sync.vcpus_used = s->vcpus_used;
                sync.ram_mb_used = s->ram_mb_used;
                sync.partial = s->partial ? 1 : 0;
                sync.n_present = s->n_present;
                env.body_case = TASMAN__ENVELOPE__BODY_SYNC;
                env.sync = &sync;
                break;
        }
        case TMSG_SYNC_REPLY: {
                const struct msg_sync_reply *s = &m->sync_reply;
                if (s->n_domains > TMSG_MAX_DOMAINS)
                        return -EINVAL;
                size_t n_snaps = 0, k = 0, n_nics = 0, n_addrs = 0, kn = 0, ka = 0;
                for (size_t i = 0; i < s->n_domains; i++) {
                        if (s->domains[i].n_snaps > TMSG_MAX_SNAPS ||
                            s->domains[i].n_nics > TMSG_MAX_NICS)
                                return -EINVAL;
                        n_snaps += s->domains[i].n_snaps;
                        n_nics += s->domains[i].n_nics;
                        for (size_t j = 0; j < s->domains[i].n_nics; j++) {
                                if (s->domains[i].nics[j].n_addrs > TMSG_MAX_NIC_ADDRS)
                                        return -EINVAL;
                                n_addrs += s->domains[i].nics[j].n_addrs;
                        }
                }
                if (s->n_networks > TMSG_MAX_NETWORKS || s->n_remotes > TMSG_MAX_REMOTES ||
                    s->n_fdb > TMSG_MAX_FDB)
                        return -EINVAL;
                for (size_t i = 0; i < s->n_networks; i++) {
                        const struct net_desired *w = &s->networks[i];
                        if (w->first_remote > s->n_remotes ||
                            w->n_remotes > s->n_remotes - w->first_remote ||
                            w->first_fdb > s->n_fdb || w->n_fdb > s->n_fdb - w->first_fdb)
                                return -EINVAL;
                }
                if ((n_nics && (!(nic = calloc(n_nics, sizeof(*nic))) ||
                                !(nic_p = calloc(n_nics, sizeof(*nic_p))))) ||
                    (n_addrs && !(nic_addrs = calloc(n_addrs, sizeof(*nic_addrs)))) ||
                    (s->n_networks && (!(net = calloc(s->n_networks, sizeof(*net))) ||
                                       !(net_p = calloc(s->n_networks, sizeof(*net_p))))) ||
                    (s->n_remotes && !(remotes = calloc(s->n_remotes, sizeof(*remotes)))) ||
                    (s->n_fdb && (!(fdb = calloc(s->n_fdb, sizeof(*fdb))) ||
                                  !(fdb_p = calloc(s->n_fdb, sizeof(*fdb_p)))))) {
                        r = -ENOMEM;
                        goto out;
                }
                for (size_t i = 0; i < s->n_remotes; i++)
                        remotes[i] = S(s->remotes[i]);
                for (size_t i = 0; i < s->n_fdb; i++) {
                        tasman__fdb__init(&fdb[i]);
                        fdb[i].mac = S(s->fdb[i].mac);
                        fdb[i].host = S(s->fdb[i].host);
                        fdb_p[i] = &fdb[i];
                }
                for (size_t i = 0; i < s->n_networks; i++) {
                        const struct net_desired *w = &s->networks[i];
                        tasman__network__init(&net[i]);
                        net[i].vni = w->vni;
                        net[i].mtu = w->mtu;
                        net[i].n_remote_hosts = w->n_remotes;
                        net[i].remote_hosts = w->n_remotes ? &remotes[w->first_remote] : NULL;
                        net[i].n_fdb = w->n_fdb;
                        net[i].fdb = w->n_fdb ? &fdb_p[w->first_fdb] : NULL;
                        net_p[i] = &net[i];
                }
                if (s->n_domains) {
                        des = calloc(s->n_domains, sizeof(*des));
                        des_p = calloc(s->n_domains, sizeof(*des_p));
                        if (!des || !des_p) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
                if (n_snaps) {
                        snap = calloc(n_snaps, sizeof(*snap));
                        snap_p = calloc(n_snaps, sizeof(*snap_p));
                        if (!snap || !snap_p) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
                for (size_t i = 0; i < s->n_domains; i++) {
                        const struct dom_desired *d = &s->domains[i];
                        tasman__domain_desired__init(&des[i]);
                        des[i].vm_id = d->vm_id;
                        des[i].hostname = S(d->hostname);
                        des[i].vcpus = d->vcpus;
                        des[i].ram_mb = d->ram_mb;
                        des[i].disk_gb = d->disk_gb;
                        des[i].power = (Tasman__Power)d->power;
                        des[i].reboot_seq = d->reboot_seq;
                        des[i].rebuild_seq = d->rebuild_seq;
                        des[i].image = S(d->image);
                        des[i].storage = d->storage == STORAGE_HDD ? TASMAN__STORAGE__STORAGE_HDD
                                                                   : TASMAN__STORAGE__STORAGE_SSD;
                        des[i].force_off = d->force_off ? 1 : 0;
                        des[i].resize_seq = d->resize_seq;
                        des[i].rescue = d->rescue ? 1 : 0;
                        des[i].cpu_cap = d->cpu_cap;
                        des[i].n_snapshots = d->n_snaps;
                        des[i].snapshots = d->n_snaps ? &snap_p[k] : NULL;
                        for (size_t j = 0; j < d->n_snaps; j++, k++) {
                                tasman__snapshot__init(&snap[k]);
                                snap[k].id = d->snaps[j].id;
                                snap[k].online = d->snaps[j].online ? 1 : 0;
                                snap_p[k] = &snap[k];
                        }
                        des[i].restore_seq = d->restore_seq;
                        des[i].restore_snapshot = d->restore_snap;
                        des[i].source_vm = d->source_vm;
                        des[i].source_snapshot = d->source_snap;
                        des[i].n_nics = d->n_nics;
                        des[i].nics = d->n_nics ? &nic_p[kn] : NULL;
                        for (size_t j = 0; j < d->n_nics; j++, kn++) {
                                const struct nic_desired *c = &d->nics[j];
                                tasman__nic__init(&nic[kn]);
                                nic[kn].vni = c->vni;
                                nic[kn].mac = S(c->mac);
                                nic[kn].gateway4 = S(c->gateway4);
                                nic[kn].gateway6 = S(c->gateway6);
                                nic[kn].n_addrs = c->n_addrs;
                                nic[kn].addrs = c->n_addrs ? &nic_addrs[ka] : NULL;
                                for (size_t q = 0; q < c->n_addrs; q++)
                                        nic_addrs[ka++] = S(c->addrs[q]);
                                nic_p[kn] = &nic[kn];
                        }
                        des_p[i] = &des[i];
                }
                if (s->n_images > TMSG_MAX_IMAGES) {
                        r = -EINVAL;
                        goto out;
                }
                if (s->n_images) {
                        img = calloc(s->n_images, sizeof(*img));
                        img_p = calloc(s->n_images, sizeof(*img_p));
                        if (!img || !img_p) {
                                r = -ENOMEM;
                                goto out;
                        }
                }
                for (size_t i = 0; i < s->n_images; i++) {
                        const struct img_desired *g = &s->images[i];
                        tasman__image__init(&img[i]);
                        img[i].slug = S(g->slug);
                        img[i].url = S(g->url);
                        img[i].sha256 = S(g->sha256);
                        img[i].format = S(g->format);
                        img_p[i] = &img[i];
                }
                srep.generation = s->generation;
                srep.n_domains = s->n_domains;
                srep.domains = des_p;
                srep.n_images = s->n_images;
                srep.images = img_p;
                srep.n_networks = s->n_networks;
                srep.networks = net_p;
                env.body_case = TASMAN__ENVELOPE__BODY_SYNC_REPLY;
                env.sync_reply = &srep;
                break;
        }
        case TMSG_ERROR:
                err.code = m->error.code;
                err.message = S(m->error.message);
                env.body_case = TASMAN__ENVELOPE__BODY_ERROR;
                env.error = &err;
                break;
        case TMSG_SEED_REQUEST:
                sreq.host_id = S(m->seed_request.host_id);
                sreq.vm_id = m->seed_request.vm_id;
                env.body_case = TASMAN__ENVELOPE__BODY_SEED_REQUEST;
                env.seed_request = &sreq;
                break;
        case TMSG_SEED_REPLY: {
                const struct msg_seed_reply *d = &m->seed_reply;
                if (d->n_ssh_keys > TMSG_MAX_SSH_KEYS)
                        return -EINVAL;
                sdrep.vm_id = d->vm_id;
                sdrep.hostname = S(d->hostname);
                sdrep.n_ssh_keys = d->n_ssh_keys;
                sdrep.ssh_keys = d->ssh_keys;
                sdrep.user_data = S(d->user_data ? d->user_data : "");
                sdrep.admin_user = S(d->admin_user);
                sdrep.admin_password = S(d->admin_password);
                env.body_case = TASMAN__ENVELOPE__BODY_SEED_REPLY;
                env.seed_reply = &sdrep;
                break;
        }
        default:
                return -EINVAL;
        }

        size_t len = tasman__envelope__get_packed_size(&env);
        if (len > TMSG_MAX_BYTES) {
                r = -EMSGSIZE;
                goto out;
        }
        buf = malloc(len ? len : 1);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        tasman__envelope__pack(&env, buf);
        *ret_buf = buf;
        *ret_len = len;
out:
        free(snap);
        free(snap_p);
        free(nic);
        free(nic_p);
        free(nic_addrs);
        free(net);
        free(net_p);
        free(remotes);
        free(fdb);
        free(fdb_p);
        free(obs);
        free(obs_p);
        free(des);
        free(des_p);
        free(img);
        free(img_p);
        return r;
}

/* ---- decode: copy out of protobuf-c structs, checking every size ---- */

static int copy_str(char *dst, size_t n, const char *src)
{
        size_t len = src ? strlen(src) : 0;
        if (len >= n)
                return -EINVAL;
        memcpy(dst, src ? src : "", len + 1);
        return 0;
}

#define COPY(dst, src)                                                \
        do {                                                          \
                if (copy_str((dst), sizeof(dst), (src)) < 0)          \
                        goto bad;                                     \
        } while (0)

int codec_decode(const uint8_t *buf, size_t len, struct tmsg *ret)
{
        Tasman__Envelope *env;
        struct tmsg m;

        memset(ret, 0, sizeof(*ret));
        if (len > TMSG_MAX_BYTES)
                return -EMSGSIZE;
        env = tasman__envelope__unpack(NULL, len, buf);
        if (!env)
                return -EINVAL;
        memset(&m, 0, sizeof(m));
        m.request_id = env->request_id;

        switch (env->body_case) {
        case TASMAN__ENVELOPE__BODY_HELLO: {
                const Tasman__Hello *h = env->hello;
                m.type = TMSG_HELLO;
                COPY(m.hello.host_id, h->host_id);
                COPY(m.hello.site, h->site);
                COPY(m.hello.underlay_ip, h->underlay_ip);
                COPY(m.hello.boot_id, h->boot_id);
                COPY(m.hello.agent_version, h->agent_version);
                COPY(m.hello.hv_type, h->hv_type);
                m.hello.vcpus = h->vcpus;
                m.hello.ram_mb = h->ram_mb;
                m.hello.disk_gb = h->disk_gb;
                m.hello.hdd_gb = h->hdd_gb;
                break;
        }
        case TASMAN__ENVELOPE__BODY_HELLO_REPLY:
                m.type = TMSG_HELLO_REPLY;
                m.hello_reply.host_num = env->hello_reply->host_num;
                m.hello_reply.hold_ms = env->hello_reply->hold_ms;
                break;
        case TASMAN__ENVELOPE__BODY_SYNC: {
                const Tasman__Sync *s = env->sync;
                m.type = TMSG_SYNC;
                COPY(m.sync.host_id, s->host_id);
                COPY(m.sync.boot_id, s->boot_id);
                m.sync.applied_generation = s->applied_generation;
                m.sync.max_hold_ms = s->max_hold_ms;
                m.sync.vcpus_used = s->vcpus_used;
                m.sync.ram_mb_used = s->ram_mb_used;
                m.sync.partial = s->partial ? 1 : 0;
                m.sync.n_present = s->n_present;
                if (s->n_domains > TMSG_MAX_DOMAINS)
                        goto bad;
                if (s->n_domains) {
                        m.sync.domains = calloc(s->n_domains, sizeof(*m.sync.domains));
                        if (!m.sync.domains)
                                goto nomem;
                }
                m.sync.n_domains = s->n_domains;
                for (size_t i = 0; i < s->n_domains; i++) {
                        const Tasman__DomainObserved *o = s->domains[i];
                        struct dom_observed *d = &m.sync.domains[i];
                        d->vm_id = o->vm_id;
                        d->state = power_from_pb(o->state);
                        d->reboot_done = o->reboot_done;
                        d->rebuild_done = o->rebuild_done;
                        COPY(d->error, o->error);
                        d->resize_done = o->resize_done;
                        d->rescue = o->rescue ? 1 : 0;
                        if (o->n_snapshots > TMSG_MAX_SNAPS)
                                goto bad;
                        d->n_snaps = o->n_snapshots;
                        for (size_t j = 0; j < o->n_snapshots; j++)
                                d->snaps[j] = o->snapshots[j];
                        d->restore_done = o->restore_done;
                        d->snap_failed = o->snapshot_failed;
                }
                break;
        }
        case TASMAN__ENVELOPE__BODY_SYNC_REPLY: {
                const Tasman__SyncReply *s = env->sync_reply;
                m.type = TMSG_SYNC_REPLY;
                m.sync_reply.generation = s->generation;
                if (s->n_domains > TMSG_MAX_DOMAINS)
                        goto bad;
                if (s->n_domains) {
                        m.sync_reply.domains = calloc(s->n_domains, sizeof(*m.sync_reply.domains));
                        if (!m.sync_reply.domains)
                                goto nomem;
                }
                m.sync_reply.n_domains = s->n_domains;
                for (size_t i = 0; i < s->n_domains; i++) {
                        const Tasman__DomainDesired *o = s->domains[i];
                        struct dom_desired *d = &m.sync_reply.domains[i];
                        d->vm_id = o->vm_id;
                        COPY(d->hostname, o->hostname);
                        d->vcpus = o->vcpus;
                        d->ram_mb = o->ram_mb;
                        d->disk_gb = o->disk_gb;
                        d->power = power_from_pb(o->power);
                        d->reboot_seq = o->reboot_seq;
                        d->rebuild_seq = o->rebuild_seq;
                        COPY(d->image, o->image);
                        if (o->storage == TASMAN__STORAGE__STORAGE_SSD)
                                d->storage = STORAGE_SSD;
                        else if (o->storage == TASMAN__STORAGE__STORAGE_HDD)
                                d->storage = STORAGE_HDD;
                        else
                                d->storage = STORAGE__MAX; /* newer than this agent */
                        d->force_off = o->force_off ? 1 : 0;
                        d->resize_seq = o->resize_seq;
                        d->rescue = o->rescue ? 1 : 0;
                        d->cpu_cap = o->cpu_cap < 100 ? o->cpu_cap : 0;
                        if (o->n_snapshots > TMSG_MAX_SNAPS)
                                goto bad;
                        d->n_snaps = o->n_snapshots;
                        for (size_t j = 0; j < o->n_snapshots; j++) {
                                if (!o->snapshots[j])
                                        goto bad;
                                d->snaps[j].id = o->snapshots[j]->id;
                                d->snaps[j].online = o->snapshots[j]->online ? 1 : 0;
                        }
                        d->restore_seq = o->restore_seq;
                        d->restore_snap = o->restore_snapshot;
                        d->source_vm = o->source_vm;
                        d->source_snap = o->source_snapshot;
                        if (o->n_nics > TMSG_MAX_NICS)
                                goto bad;
                        d->n_nics = o->n_nics;
                        for (size_t j = 0; j < o->n_nics; j++) {
                                const Tasman__Nic *c = o->nics[j];
                                struct nic_desired *e = &d->nics[j];
                                if (!c || c->n_addrs > TMSG_MAX_NIC_ADDRS)
                                        goto bad;
                                e->vni = c->vni;
                                COPY(e->mac, c->mac);
                                COPY(e->gateway4, c->gateway4);
                                COPY(e->gateway6, c->gateway6);
                                e->n_addrs = c->n_addrs;
                                for (size_t q = 0; q < c->n_addrs; q++)
                                        COPY(e->addrs[q], c->addrs[q]);
                        }
                }
                if (s->n_images > TMSG_MAX_IMAGES)
                        goto bad;
                if (s->n_images) {
                        m.sync_reply.images = calloc(s->n_images, sizeof(*m.sync_reply.images));
                        if (!m.sync_reply.images)
                                goto nomem;
                }
                m.sync_reply.n_images = s->n_images;
                for (size_t i = 0; i < s->n_images; i++) {
                        const Tasman__Image *o = s->images[i];
                        struct img_desired *g = &m.sync_reply.images[i];
                        COPY(g->slug, o->slug);
                        COPY(g->url, o->url);
                        COPY(g->sha256, o->sha256);
                        COPY(g->format, o->format);
                }
                if (s->n_networks > TMSG_MAX_NETWORKS)
                        goto bad;
                size_t n_rem = 0, n_fdb = 0;
                for (size_t i = 0; i < s->n_networks; i++) {
                        if (!s->networks[i])
                                goto bad;
                        n_rem += s->networks[i]->n_remote_hosts;
                        n_fdb += s->networks[i]->n_fdb;
                }
                if (n_rem > TMSG_MAX_REMOTES || n_fdb > TMSG_MAX_FDB)
                        goto bad;
                struct msg_sync_reply *sr = &m.sync_reply;
                if ((s->n_networks &&
                     !(sr->networks = calloc(s->n_networks, sizeof(*sr->networks)))) ||
                    (n_rem && !(sr->remotes = calloc(n_rem, sizeof(*sr->remotes)))) ||
                    (n_fdb && !(sr->fdb = calloc(n_fdb, sizeof(*sr->fdb)))))
                        goto nomem;
                sr->n_networks = s->n_networks;
                for (size_t i = 0; i < s->n_networks; i++) {
                        const Tasman__Network *o = s->networks[i];
                        struct net_desired *w = &sr->networks[i];
                        w->vni = o->vni;
                        w->mtu = o->mtu;
                        w->first_remote = sr->n_remotes;
                        w->n_remotes = o->n_remote_hosts;
                        for (size_t j = 0; j < o->n_remote_hosts; j++)
                                COPY(sr->remotes[sr->n_remotes++], o->remote_hosts[j]);
                        w->first_fdb = sr->n_fdb;
                        w->n_fdb = o->n_fdb;
                        for (size_t j = 0; j < o->n_fdb; j++) {
                                if (!o->fdb[j])
                                        goto bad;
                                COPY(sr->fdb[sr->n_fdb].mac, o->fdb[j]->mac);
                                COPY(sr->fdb[sr->n_fdb].host, o->fdb[j]->host);
                                sr->n_fdb++;
                        }
                }
                break;
        }
        case TASMAN__ENVELOPE__BODY_SEED_REQUEST:
                m.type = TMSG_SEED_REQUEST;
                COPY(m.seed_request.host_id, env->seed_request->host_id);
                m.seed_request.vm_id = env->seed_request->vm_id;
                break;
        case TASMAN__ENVELOPE__BODY_SEED_REPLY: {
                const Tasman__SeedReply *o = env->seed_reply;
                struct msg_seed_reply *d = &m.seed_reply;
                m.type = TMSG_SEED_REPLY;
                d->vm_id = o->vm_id;
                COPY(d->hostname, o->hostname);
                COPY(d->admin_user, o->admin_user);
                COPY(d->admin_password, o->admin_password);
                if (o->n_ssh_keys > TMSG_MAX_SSH_KEYS)
                        goto bad;
                if (o->user_data && strlen(o->user_data) > TMSG_USER_DATA_MAX)
                        goto bad;
                if (o->user_data && o->user_data[0] && !(d->user_data = strdup(o->user_data)))
                        goto nomem;
                if (o->n_ssh_keys && !(d->ssh_keys = calloc(o->n_ssh_keys, sizeof(char *))))
                        goto nomem;
                for (size_t i = 0; i < o->n_ssh_keys; i++) {
                        if (!o->ssh_keys[i] || strlen(o->ssh_keys[i]) > TMSG_SSH_KEY_MAX)
                                goto bad;
                        if (!(d->ssh_keys[i] = strdup(o->ssh_keys[i])))
                                goto nomem;
                        d->n_ssh_keys = i + 1;
                }
                break;
        }
        case TASMAN__ENVELOPE__BODY_ERROR:
                m.type = TMSG_ERROR;
                m.error.code = env->error->code;
                COPY(m.error.message, env->error->message);
                break;
        default:
                goto bad;
        }
        tasman__envelope__free_unpacked(env, NULL);
        *ret = m;
        return 0;
nomem:
        tasman__envelope__free_unpacked(env, NULL);
        tmsg_clear(&m);
        return -ENOMEM;
bad:
        tasman__envelope__free_unpacked(env, NULL);
        tmsg_clear(&m);
        return -EINVAL;
}

void tmsg_clear(struct tmsg *m)
{
        if (m->type == TMSG_SYNC)
                free(m->sync.domains);
        else if (m->type == TMSG_SYNC_REPLY) {
                free(m->sync_reply.domains);
                free(m->sync_reply.images);
                free(m->sync_reply.networks);
                free(m->sync_reply.remotes);
                free(m->sync_reply.fdb);
        } else if (m->type == TMSG_SEED_REPLY) {
                for (size_t i = 0; i < m->seed_reply.n_ssh_keys; i++)
                        free(m->seed_reply.ssh_keys[i]);
                free(m->seed_reply.ssh_keys);
                if (m->seed_reply.user_data) /* may hold secrets */
                        explicit_bzero(m->seed_reply.user_data, strlen(m->seed_reply.user_data));
                free(m->seed_reply.user_data);
                explicit_bzero(m->seed_reply.admin_password, sizeof(m->seed_reply.admin_password));
        }
        memset(m, 0, sizeof(*m));
}
