/* The only file of the agent that includes libnl. See net.h.
 *
 * libnl gives the socket and parses what the kernel sends (nlmsg_parse,
 * nla_parse_nested, with policies). Requests are written straight into one
 * send buffer, many per send: a libnl message per request would cost an
 * allocation of a page each, and one send and one answer per request is
 * what makes `bridge -batch` slow. Only the last request of a send asks for
 * an answer (NLM_F_ACK); the kernel answers every failed one anyway, in
 * order, so when the last one's answer is in, every error of that send is.
 *
 * One apply is a round: dump links, dump the FDB (or take the kept dump,
 * when the change watch saw nothing of ours change since: see net.h),
 * diff, then four phases, each its sends and their answers, because each
 * needs the outcome of the one before:
 *   1. removals: undesired devices, devices to make anew, undesired entries;
 *   2. bridges (private and public) made or fixed;
 *   3. VXLAN devices made or fixed, enslaved to their bridge (and the uplink
 *      to the public bridge);
 *   4. the missing FDB entries, on the VXLAN devices that now exist.
 * Then half-made pairs are removed. New devices get an interface index we
 * choose (above every index in the dump), so that the requests that follow
 * in the same send can name them; if someone takes that index or name
 * first, creation fails with EEXIST, and the round is done once more.
 * Lost answers (ENOBUFS, or none in time) also mean another round, with
 * smaller sends, up to MAX_ROUNDS. */
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <netlink/attr.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "log.h"
#include "util.h"

#define BATCH_DEFAULT (16u * 1024)
#define RCVBUF_DEFAULT (4 * 1024 * 1024)
#define RBUF_SIZE (256u * 1024)
#define ANSWER_TIMEOUT_MS 10000
#define DUMP_TRIES 5
#define MAX_ROUNDS 4
#define WATCH_RCVBUF (1024 * 1024)
#define KEPT_MAX_MS 60000 /* the kept state is dumped again after this, changes or not */

/* ---- plain data ---- */

struct addr {
        uint8_t family; /* AF_INET, AF_INET6, 0: none */
        uint8_t b[16];  /* zero padded */
};

enum kind { KIND_OTHER, KIND_BRIDGE, KIND_VXLAN };

/* One device of the link dump. */
struct link {
        int index, master;
        unsigned flags;
        uint32_t mtu;
        uint8_t kind, ours, agm_none;
        uint8_t vx_learning, vx_remote; /* vx_remote: a default remote or group */
        uint16_t vx_port;               /* host order */
        uint32_t vx_id;
        struct addr vx_local;
        char name[IFNAMSIZ];
};

/* A tbr<vni> or tvx<vni> of the dump (ours or not). */
struct named {
        uint32_t vni;
        size_t link; /* into links */
};

/* One FDB entry of the dump, on one of our VXLAN devices. */
struct fent {
        int ifindex;
        uint8_t mac[6];
        uint8_t clean; /* permanent, default port, VNI and device */
        uint8_t has_port, has_vni, has_rif;
        uint16_t port; /* network order, as dumped */
        uint32_t vni, rif;
        struct addr dst;
};

/* One device's entries: fents[start, start + n), sorted. */
struct run {
        int ifindex;
        size_t start, n;
};

/* The validated desired state. */
struct want_net {
        uint32_t vni, mtu;
        size_t first, n; /* into ents */
};

struct want_ent {
        uint8_t mac[6]; /* all zero: a remote host */
        struct addr dst;
};

struct plan {
        struct addr local;
        char pub[IFNAMSIZ], uplink[IFNAMSIZ];
        struct want_net *nets; /* sorted by vni */
        size_t n_nets;
        struct want_ent *ents; /* each network's slice sorted, without duplicates */
        size_t n_ents;
};

/* What became of one desired network in this round. */
struct nst {
        const struct link *br, *vx; /* ours and kept, or NULL */
        int br_index, vx_index;     /* once they exist, 0 before */
        size_t br_op, vx_op;        /* first request of the creating unit, or SIZE_MAX */
        uint8_t br_new, vx_new, failed;
};

enum op_type {
        OP_DEL_LINK,
        OP_NEW_LINK,
        OP_MARK,
        OP_UP,
        OP_FIX_LINK,
        OP_ENSLAVE,
        OP_DEL_FDB,
        OP_ADD_FDB,
        OP_ROLLBACK,
};

enum role { ROLE_BR, ROLE_VX, ROLE_PUB, ROLE_UPLINK };

#define NO_NET UINT32_MAX

/* One request sent this round; its sequence number is seq_base + index. */
struct op {
        uint8_t type, role;
        int err;      /* errno the kernel answered, 0 */
        uint32_t vni; /* of the device (role BR/VX) */
        uint32_t net; /* into plan.nets, or NO_NET */
        uint32_t idx; /* OP_ADD_FDB: into plan.ents; OP_DEL_FDB: into fents */
};

/* The kernel's text for a failed request (extended ACK), kept for the log. */
struct op_text {
        size_t op;
        char text[160];
};

struct net {
        struct nl_sock *sk;
        int fd;
        uint32_t seq;
        struct net_tuning tune;
        size_t batch_limit; /* this round's */

        char *sbuf; /* requests not yet sent */
        size_t slen, scap;
        size_t cur;  /* offset of the request being written */
        size_t last; /* offset of the last whole request */
        size_t batch_first; /* first op of the unsent requests */
        char *rbuf;

        struct op *ops;
        size_t n_ops, cap_ops;
        uint32_t seq_base;
        struct op_text *texts;
        size_t n_texts, cap_texts;
        int lossy; /* answers lost this round */

        struct link *links;
        size_t n_links, cap_links;
        struct fent *fents;
        size_t n_fents, cap_fents;
        struct run *runs; /* sorted by ifindex */
        size_t n_runs, cap_runs;
        struct named *brs, *vxs;
        size_t n_brs, n_vxs;
        int *vx_ours; /* sorted indexes of our VXLAN devices */
        size_t n_vx_ours;

        /* The change watch: a second socket in the link and neighbour
         * groups. The dump above is kept while nothing that matters to us
         * changed since, so a no-op apply need not dump again. */
        struct nl_sock *watch_sk;
        int watch_fd;
        int kept;        /* links and fents are still the kernel's state */
        int64_t kept_ms; /* when they were dumped */
        int *watch;      /* sorted indexes of tbr/tvx devices, public bridge, uplink */
        size_t n_watch;
        char watch_pub[IFNAMSIZ], watch_uplink[IFNAMSIZ];
};

static void *xrealloc(void *p, size_t n, size_t size)
{
        if (size && n > SIZE_MAX / size)
                abort();
        size_t bytes = n * size;
        void *q = realloc(p, bytes ? bytes : 1);
        if (!q)
                abort();
        return q;
}

#define GROW(arr, n, cap)                                                      \
        do {                                                                   \
                if ((n) == (cap)) {                                            \
                        (cap) = (cap) ? (cap) * 2 : 64;                        \
                        (arr) = xrealloc((arr), (cap), sizeof(*(arr)));        \
                }                                                              \
        } while (0)

/* libnl's error codes, translated once, here. */
static int nl_errno(int nlerr)
{
        switch (nlerr < 0 ? -nlerr : nlerr) {
        case NLE_NOMEM:
                return -ENOMEM;
        case NLE_PERM:
                return -EPERM;
        case NLE_NOACCESS:
                return -EACCES;
        case NLE_AF_NOSUPPORT:
        case NLE_PROTO_MISMATCH:
                return -EAFNOSUPPORT;
        case NLE_INVAL:
        case NLE_RANGE:
        case NLE_MSG_TOOSHORT:
        case NLE_MSG_TRUNC:
        case NLE_MSGTYPE_NOSUPPORT:
                return -EPROTO;
        default:
                return -EIO;
        }
}

/* ---- input ---- */

static int addr_cmp(const struct addr *a, const struct addr *b)
{
        if (a->family != b->family)
                return a->family < b->family ? -1 : 1;
        return memcmp(a->b, b->b, sizeof(a->b));
}

static const char *addr_str(const struct addr *a, char *buf, size_t len)
{
        if (!a->family || !inet_ntop(a->family, a->b, buf, (socklen_t)len))
                snprintf(buf, len, "(none)");
        return buf;
}

static const char *mac_str(const uint8_t *m, char buf[18])
{
        snprintf(buf, 18, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
        return buf;
}

/* A host address, v4 or v6, unicast; s is a field of cap bytes. */
static int addr_parse(const char *s, size_t cap, struct addr *ret)
{
        struct addr a = { 0 };
        if (!s || strnlen(s, cap) == cap)
                return -EINVAL;
        if (inet_pton(AF_INET, s, a.b) == 1) {
                a.family = AF_INET;
                uint8_t z[4] = { 0 };
                if (!memcmp(a.b, z, 4) || a.b[0] >= 224)
                        return -EINVAL; /* unspecified, multicast, broadcast */
        } else if (inet_pton(AF_INET6, s, a.b) == 1) {
                a.family = AF_INET6;
                uint8_t z[16] = { 0 };
                if (!memcmp(a.b, z, 16) || a.b[0] == 0xff)
                        return -EINVAL;
        } else {
                return -EINVAL;
        }
        *ret = a;
        return 0;
}

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

static int mac_zero(const uint8_t *m)
{
        return !(m[0] | m[1] | m[2] | m[3] | m[4] | m[5]);
}

/* "aa:bb:cc:dd:ee:ff", unicast and not all zero. */
static int mac_parse(const char *s, uint8_t ret[6])
{
        uint8_t m[6];
        if (strnlen(s, TMSG_MAC) != 17)
                return -EINVAL;
        for (int i = 0; i < 6; i++) {
                int hi = hexval(s[3 * i]), lo = hexval(s[3 * i + 1]);
                if (hi < 0 || lo < 0 || (i < 5 && s[3 * i + 2] != ':'))
                        return -EINVAL;
                m[i] = (uint8_t)(hi << 4 | lo);
        }
        if ((m[0] & 1) || mac_zero(m))
                return -EINVAL;
        memcpy(ret, m, 6);
        return 0;
}

/* tbr<n> / tvx<n>: n in 1..NET_VNI_MAX, no leading zero. 0 if not. */
static uint32_t name_vni(const char *name, const char *prefix)
{
        size_t pl = strlen(prefix);
        if (strncmp(name, prefix, pl) != 0)
                return 0;
        const char *d = name + pl;
        if (*d < '1' || *d > '9')
                return 0;
        uint64_t v = 0;
        for (; *d; d++) {
                if (*d < '0' || *d > '9')
                        return 0;
                v = v * 10 + (uint64_t)(*d - '0');
                if (v > NET_VNI_MAX)
                        return 0;
        }
        return (uint32_t)v;
}

static int ifname_ok(const char *s)
{
        size_t len = strlen(s);
        if (len == 0 || len >= IFNAMSIZ || !strcmp(s, ".") || !strcmp(s, ".."))
                return 0;
        for (const char *p = s; *p; p++)
                if (*p == '/' || *p == ':' || *p <= ' ' || *p == 0x7f)
                        return 0;
        return !name_vni(s, "tbr") && !name_vni(s, "tvx");
}

static int ent_cmp(const void *a, const void *b)
{
        const struct want_ent *x = a, *y = b;
        int c = memcmp(x->mac, y->mac, 6);
        return c ? c : addr_cmp(&x->dst, &y->dst);
}

static int want_net_cmp(const void *a, const void *b)
{
        const struct want_net *x = a, *y = b;
        return x->vni < y->vni ? -1 : x->vni > y->vni;
}

static void plan_free(struct plan *p)
{
        free(p->nets);
        free(p->ents);
}

static int slice_ok(size_t first, size_t n, size_t total)
{
        return first <= total && n <= total - first;
}

static int plan_build(const struct net_config *cfg, const struct net_desired *nets, size_t n_nets,
                      const char (*remotes)[TMSG_IP], size_t n_remotes,
                      const struct fdb_desired *fdb, size_t n_fdb, struct plan *ret)
{
        struct plan p = { 0 };
        char a[INET6_ADDRSTRLEN];
        int r = -EINVAL;

        if (!cfg || addr_parse(cfg->local_ip, TMSG_IP, &p.local) < 0) {
                log_error("networks: bad local underlay address \"%s\"",
                          cfg && cfg->local_ip ? cfg->local_ip : "(none)");
                return -EINVAL;
        }
        const char *pub = cfg->public_bridge ? cfg->public_bridge : "";
        const char *up = cfg->public_uplink ? cfg->public_uplink : "";
        if (*pub && !ifname_ok(pub)) {
                log_error("networks: bad public bridge name \"%s\"", pub);
                return -EINVAL;
        }
        if (*up && (!*pub || !ifname_ok(up) || !strcmp(up, pub))) {
                log_error("networks: bad public uplink \"%s\" (of bridge \"%s\")", up, pub);
                return -EINVAL;
        }
        snprintf(p.pub, sizeof(p.pub), "%s", pub);
        snprintf(p.uplink, sizeof(p.uplink), "%s", up);
        if (n_nets > TMSG_MAX_NETWORKS || n_remotes > TMSG_MAX_REMOTES || n_fdb > TMSG_MAX_FDB ||
            (n_nets && !nets) || (n_remotes && !remotes) || (n_fdb && !fdb)) {
                log_error("networks: %zu networks, %zu remotes, %zu entries: too many or missing",
                          n_nets, n_remotes, n_fdb);
                return -EINVAL;
        }

        size_t total = 0;
        for (size_t i = 0; i < n_nets; i++) {
                const struct net_desired *d = &nets[i];
                if (d->vni < 1 || d->vni > NET_VNI_MAX) {
                        log_error("network %" PRIu32 ": VNI out of 1..%u", d->vni, NET_VNI_MAX);
                        return -EINVAL;
                }
                if (d->mtu && (d->mtu < 68 || d->mtu > 65535)) {
                        log_error("network %" PRIu32 ": MTU %" PRIu32 " out of 68..65535", d->vni,
                                  d->mtu);
                        return -EINVAL;
                }
                if (!slice_ok(d->first_remote, d->n_remotes, n_remotes) ||
                    !slice_ok(d->first_fdb, d->n_fdb, n_fdb)) {
                        log_error("network %" PRIu32 ": remotes or entries out of the arrays",
                                  d->vni);
                        return -EINVAL;
                }
                total += d->n_remotes + d->n_fdb;
        }
        p.nets = xrealloc(NULL, n_nets, sizeof(*p.nets));
        p.ents = xrealloc(NULL, total, sizeof(*p.ents));
        for (size_t i = 0; i < n_nets; i++) {
                const struct net_desired *d = &nets[i];
                struct want_net *w = &p.nets[p.n_nets++];
                w->vni = d->vni;
                w->mtu = d->mtu ? d->mtu : NET_MTU_DEFAULT;
                w->first = p.n_ents;
                for (size_t k = 0; k < d->n_remotes; k++) {
                        const char *s = remotes[d->first_remote + k];
                        struct want_ent *e = &p.ents[p.n_ents];
                        memset(e, 0, sizeof(*e));
                        if (addr_parse(s, TMSG_IP, &e->dst) < 0 ||
                            e->dst.family != p.local.family) {
                                log_error("network %" PRIu32 ": bad remote host \"%.*s\"%s",
                                          d->vni, TMSG_IP, s,
                                          e->dst.family ? " (not of the local address' family)"
                                                        : "");
                                goto out;
                        }
                        p.n_ents++;
                }
                for (size_t k = 0; k < d->n_fdb; k++) {
                        const struct fdb_desired *f = &fdb[d->first_fdb + k];
                        struct want_ent *e = &p.ents[p.n_ents];
                        memset(e, 0, sizeof(*e));
                        if (mac_parse(f->mac, e->mac) < 0) {
                                log_error("network %" PRIu32 ": bad guest MAC \"%.*s\"", d->vni,
                                          TMSG_MAC, f->mac);
                                goto out;
                        }
                        if (addr_parse(f->host, TMSG_IP, &e->dst) < 0 ||
                            e->dst.family != p.local.family) {
                                log_error("network %" PRIu32 ": bad host \"%.*s\" of MAC %s%s",
                                          d->vni, TMSG_IP, f->host, f->mac,
                                          e->dst.family ? " (not of the local address' family)"
                                                        : "");
                                goto out;
                        }
                        p.n_ents++;
                }
                /* Sorted, duplicates dropped, one host per MAC. */
                struct want_ent *s = &p.ents[w->first];
                size_t n = p.n_ents - w->first, k = 0;
                qsort(s, n, sizeof(*s), ent_cmp);
                for (size_t j = 0; j < n; j++) {
                        if (k && !ent_cmp(&s[k - 1], &s[j]))
                                continue;
                        if (k && !mac_zero(s[j].mac) && !memcmp(s[k - 1].mac, s[j].mac, 6)) {
                                char m[18], b[INET6_ADDRSTRLEN];
                                log_error("network %" PRIu32 ": MAC %s given with two hosts, %s "
                                          "and %s",
                                          d->vni, mac_str(s[j].mac, m),
                                          addr_str(&s[k - 1].dst, a, sizeof(a)),
                                          addr_str(&s[j].dst, b, sizeof(b)));
                                goto out;
                        }
                        s[k++] = s[j];
                }
                w->n = k;
                p.n_ents = w->first + k;
        }
        qsort(p.nets, p.n_nets, sizeof(*p.nets), want_net_cmp);
        for (size_t i = 1; i < p.n_nets; i++)
                if (p.nets[i].vni == p.nets[i - 1].vni) {
                        log_error("network %" PRIu32 ": given twice", p.nets[i].vni);
                        goto out;
                }
        *ret = p;
        return 0;
out:
        plan_free(&p);
        return r;
}

/* ---- the socket ---- */

static int set_buf(struct nl_sock *sk, int rcv, int snd)
{
        int fd = nl_socket_get_fd(sk);
        /* Past the sysctl limits when we may (root); within them otherwise. */
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof(snd)) < 0) {
                int r = nl_socket_set_buffer_size(sk, rcv, snd);
                if (r < 0) {
                        log_error("netlink: cannot set the socket buffers: %s", nl_geterror(r));
                        return nl_errno(r);
                }
        }
        return 0;
}

static int set_bufs(struct net *n)
{
        int r = set_buf(n->sk, n->tune.rcvbuf, (int)(2 * n->tune.batch_bytes + 65536));
        return r < 0 ? r : set_buf(n->watch_sk, n->tune.watch_rcvbuf, 65536);
}

int net_open(struct net **ret)
{
        struct net *n = calloc(1, sizeof(*n));
        if (!n)
                return -ENOMEM;
        int r = -ENOMEM;
        n->fd = -1;
        n->tune = (struct net_tuning){ .batch_bytes = BATCH_DEFAULT,
                                       .rcvbuf = RCVBUF_DEFAULT,
                                       .watch_rcvbuf = WATCH_RCVBUF };
        n->rbuf = malloc(RBUF_SIZE);
        n->sk = nl_socket_alloc();
        if (!n->rbuf || !n->sk)
                goto fail;
        r = nl_connect(n->sk, NETLINK_ROUTE);
        if (r < 0) {
                log_error("netlink: cannot open a route socket: %s", nl_geterror(r));
                r = nl_errno(r);
                goto fail;
        }
        n->fd = nl_socket_get_fd(n->sk);
        n->watch_sk = nl_socket_alloc();
        if (!n->watch_sk) {
                r = -ENOMEM;
                goto fail;
        }
        if ((r = nl_connect(n->watch_sk, NETLINK_ROUTE)) < 0 ||
            (r = nl_socket_add_memberships(n->watch_sk, RTNLGRP_LINK, RTNLGRP_NEIGH, 0)) < 0 ||
            (r = nl_socket_set_nonblocking(n->watch_sk)) < 0) {
                log_error("netlink: cannot open the change watch: %s", nl_geterror(r));
                r = nl_errno(r);
                goto fail;
        }
        n->watch_fd = nl_socket_get_fd(n->watch_sk);
        int one = 1;
        /* Errors without a copy of the request, with the kernel's text. */
        setsockopt(n->fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one));
        setsockopt(n->fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
        r = set_bufs(n);
        if (r < 0)
                goto fail;
        n->seq = 1;
        *ret = n;
        return 0;
fail:
        net_free(n);
        return r;
}

void net_free(struct net *n)
{
        if (!n)
                return;
        if (n->sk)
                nl_socket_free(n->sk);
        if (n->watch_sk)
                nl_socket_free(n->watch_sk);
        free(n->watch);
        free(n->rbuf);
        free(n->sbuf);
        free(n->ops);
        free(n->texts);
        free(n->links);
        free(n->fents);
        free(n->runs);
        free(n->brs);
        free(n->vxs);
        free(n->vx_ours);
        free(n);
}

int net_set_tuning(struct net *n, const struct net_tuning *t)
{
        if (!t->batch_bytes || t->batch_bytes > 16u * 1024 * 1024 || t->rcvbuf < 0 ||
            t->watch_rcvbuf < 0) {
                log_error("netlink: bad tuning (batch %zu bytes, buffers %d and %d)",
                          t->batch_bytes, t->rcvbuf, t->watch_rcvbuf);
                return -EINVAL;
        }
        n->tune = *t;
        if (!n->tune.rcvbuf)
                n->tune.rcvbuf = RCVBUF_DEFAULT;
        if (!n->tune.watch_rcvbuf)
                n->tune.watch_rcvbuf = WATCH_RCVBUF;
        n->kept = 0;
        return set_bufs(n);
}

/* ---- writing requests ---- */

static void *sbuf_reserve(struct net *n, size_t len)
{
        len = NLMSG_ALIGN(len);
        if (n->slen + len > n->scap) {
                size_t cap = n->scap ? n->scap : 4096;
                while (cap < n->slen + len)
                        cap *= 2;
                n->sbuf = xrealloc(n->sbuf, cap, 1);
                n->scap = cap;
        }
        void *p = n->sbuf + n->slen;
        memset(p, 0, len);
        n->slen += len;
        return p;
}

/* Starts a request, recorded as op. */
static void msg_begin(struct net *n, uint16_t type, uint16_t flags, const void *hdr,
                      size_t hdrlen, struct op op)
{
        n->cur = n->slen;
        struct nlmsghdr *h = sbuf_reserve(n, NLMSG_HDRLEN + hdrlen);
        h->nlmsg_type = type;
        h->nlmsg_flags = (uint16_t)(NLM_F_REQUEST | flags | (n->tune.ack_each ? NLM_F_ACK : 0));
        h->nlmsg_seq = n->seq_base + (uint32_t)n->n_ops;
        n->seq = h->nlmsg_seq + 1; /* a later dump's must differ */
        memcpy(NLMSG_DATA(h), hdr, hdrlen);
        GROW(n->ops, n->n_ops, n->cap_ops);
        n->ops[n->n_ops++] = op;
}

static void msg_end(struct net *n)
{
        struct nlmsghdr *h = (struct nlmsghdr *)(n->sbuf + n->cur);
        h->nlmsg_len = (uint32_t)(n->slen - n->cur);
        n->last = n->cur;
}

static void put(struct net *n, uint16_t type, const void *data, size_t len)
{
        struct nlattr *a = sbuf_reserve(n, NLA_HDRLEN + len);
        a->nla_type = type;
        a->nla_len = (uint16_t)(NLA_HDRLEN + len);
        if (len)
                memcpy((char *)a + NLA_HDRLEN, data, len);
}

static void put_u32(struct net *n, uint16_t type, uint32_t v)
{
        put(n, type, &v, sizeof(v));
}

static void put_str(struct net *n, uint16_t type, const char *s)
{
        put(n, type, s, strlen(s) + 1);
}

static size_t nest_begin(struct net *n, uint16_t type)
{
        size_t off = n->slen;
        put(n, type | NLA_F_NESTED, NULL, 0);
        return off;
}

static void nest_end(struct net *n, size_t off)
{
        ((struct nlattr *)(n->sbuf + off))->nla_len = (uint16_t)(n->slen - off);
}

/* ---- reading answers ---- */

static const char *ext_ack_text(struct nlmsghdr *h)
{
        if (!(h->nlmsg_flags & NLM_F_ACK_TLVS))
                return NULL;
        struct nlmsgerr *e = NLMSG_DATA(h);
        size_t off = sizeof(*e);
        if (!(h->nlmsg_flags & NLM_F_CAPPED))
                off += e->msg.nlmsg_len - NLMSG_HDRLEN;
        size_t len = h->nlmsg_len - NLMSG_HDRLEN;
        if (off >= len)
                return NULL;
        struct nlattr *tb[NLMSGERR_ATTR_MAX + 1];
        static struct nla_policy pol[NLMSGERR_ATTR_MAX + 1] = {
                [NLMSGERR_ATTR_MSG] = { .type = NLA_STRING },
        };
        if (nla_parse(tb, NLMSGERR_ATTR_MAX, (struct nlattr *)((char *)e + NLMSG_ALIGN(off)),
                      (int)(len - NLMSG_ALIGN(off)), pol) < 0 ||
            !tb[NLMSGERR_ATTR_MSG])
                return NULL;
        return nla_get_string(tb[NLMSGERR_ATTR_MSG]);
}

static void note_error(struct net *n, size_t i, int err, struct nlmsghdr *h)
{
        n->ops[i].err = err;
        const char *t = ext_ack_text(h);
        if (t && *t) {
                GROW(n->texts, n->n_texts, n->cap_texts);
                n->texts[n->n_texts].op = i;
                snprintf(n->texts[n->n_texts].text, sizeof(n->texts[0].text), "%s", t);
                n->n_texts++;
        }
}

static const char *op_text(const struct net *n, size_t i)
{
        for (size_t k = 0; k < n->n_texts; k++)
                if (n->texts[k].op == i)
                        return n->texts[k].text;
        return NULL;
}

/* Waits for one receive; 1 with data, 0 when nothing came in time. */
static int wait_in(struct net *n, int timeout_ms)
{
        struct pollfd pfd = { .fd = n->fd, .events = POLLIN };
        for (;;) {
                int r = poll(&pfd, 1, timeout_ms);
                if (r >= 0)
                        return r > 0;
                if (errno != EINTR)
                        return -errno;
        }
}

/* One receive: its length, 0 when nothing more is queued (drain), or
 * -ENOBUFS when the kernel dropped something for us since the last one. */
static ssize_t recv_one(struct net *n, int timeout_ms)
{
        int w = wait_in(n, timeout_ms);
        if (w <= 0)
                return w;
        for (;;) {
                struct iovec iov = { .iov_base = n->rbuf, .iov_len = RBUF_SIZE };
                struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
                ssize_t len = recvmsg(n->fd, &mh, MSG_DONTWAIT);
                if (len >= 0) {
                        if (mh.msg_flags & MSG_TRUNC)
                                return -ENOBUFS; /* cut: as good as lost */
                        return len;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        return 0;
                return -errno;
        }
}

/* Sends the pending requests and reads their answers; the last one asks
 * for an answer, which comes after every error of the send. */
static int flush(struct net *n)
{
        if (!n->slen)
                return 0;
        struct nlmsghdr *last = (struct nlmsghdr *)(n->sbuf + n->last);
        last->nlmsg_flags |= NLM_F_ACK;
        size_t first = n->batch_first, end = n->n_ops;
        uint32_t last_seq = last->nlmsg_seq;
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        ssize_t s;
        do
                s = sendto(n->fd, n->sbuf, n->slen, 0, (struct sockaddr *)&kernel,
                           sizeof(kernel));
        while (s < 0 && errno == EINTR);
        n->slen = 0;
        n->batch_first = end;
        if (s < 0) {
                if (errno == ENOBUFS || errno == ENOMEM || errno == EAGAIN) {
                        log_debug("netlink: send of requests %zu..%zu failed: %s", first, end,
                                  strerror(errno));
                        n->lossy = 1;
                        return 0;
                }
                int r = -errno;
                log_error("netlink: cannot send requests: %s", strerror(errno));
                return r;
        }
        int timeout = ANSWER_TIMEOUT_MS;
        for (;;) {
                ssize_t len = recv_one(n, timeout);
                if (len == -ENOBUFS) {
                        /* Answers were dropped: take what is queued, then stop. */
                        n->lossy = 1;
                        timeout = 0;
                        continue;
                }
                if (len < 0) {
                        log_error("netlink: cannot read answers: %s", strerror((int)-len));
                        return (int)len;
                }
                if (len == 0) {
                        if (!n->lossy)
                                log_warn("netlink: no answer to request %" PRIu32
                                         " in %d ms",
                                         last_seq, ANSWER_TIMEOUT_MS);
                        n->lossy = 1;
                        return 0;
                }
                int rem = (int)len;
                for (struct nlmsghdr *h = (struct nlmsghdr *)n->rbuf; nlmsg_ok(h, rem);
                     h = nlmsg_next(h, &rem)) {
                        if (h->nlmsg_type != NLMSG_ERROR ||
                            h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
                                continue;
                        uint32_t seq = h->nlmsg_seq;
                        if (seq - n->seq_base < first || seq - n->seq_base >= end)
                                continue; /* an old round's */
                        struct nlmsgerr *e = NLMSG_DATA(h);
                        if (e->error)
                                note_error(n, seq - n->seq_base, -e->error, h);
                        if (seq == last_seq)
                                return 0;
                }
        }
}

/* Starts a unit of requests that must go in one send. */
static int unit_begin(struct net *n)
{
        return n->slen >= n->batch_limit ? flush(n) : 0;
}

/* ---- dumps ---- */

typedef void (*dump_fn)(struct net *n, struct nlmsghdr *h);

static int dump(struct net *n, const char *what, uint16_t type, const void *hdr, size_t hdrlen,
                uint32_t ext_mask, dump_fn fn, void (*reset)(struct net *n))
{
        for (int attempt = 0; attempt < DUMP_TRIES; attempt++) {
                char req[128] = { 0 };
                struct nlmsghdr *h = (struct nlmsghdr *)req;
                uint32_t seq = n->seq++;
                h->nlmsg_type = type;
                h->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
                h->nlmsg_seq = seq;
                memcpy(NLMSG_DATA(h), hdr, hdrlen);
                h->nlmsg_len = NLMSG_LENGTH(NLMSG_ALIGN(hdrlen));
                if (ext_mask) {
                        struct nlattr *a = (struct nlattr *)(req + h->nlmsg_len);
                        a->nla_type = IFLA_EXT_MASK;
                        a->nla_len = NLA_HDRLEN + 4;
                        memcpy((char *)a + NLA_HDRLEN, &ext_mask, 4);
                        h->nlmsg_len += NLA_ALIGN(a->nla_len);
                }
                reset(n);
                struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
                ssize_t s;
                do
                        s = sendto(n->fd, req, h->nlmsg_len, 0, (struct sockaddr *)&kernel,
                                   sizeof(kernel));
                while (s < 0 && errno == EINTR);
                if (s < 0) {
                        int r = -errno;
                        log_error("netlink: cannot ask for the %s: %s", what, strerror(errno));
                        return r;
                }
                int again = 0, done = 0, timeout = ANSWER_TIMEOUT_MS;
                while (!done) {
                        ssize_t len = recv_one(n, timeout);
                        if (len == -ENOBUFS) {
                                again = 1;
                                timeout = 0;
                                continue;
                        }
                        if (len < 0) {
                                log_error("netlink: cannot read the %s: %s", what,
                                          strerror((int)-len));
                                return (int)len;
                        }
                        if (len == 0) {
                                again = 1;
                                break;
                        }
                        int rem = (int)len;
                        for (struct nlmsghdr *m = (struct nlmsghdr *)n->rbuf; nlmsg_ok(m, rem);
                             m = nlmsg_next(m, &rem)) {
                                if (m->nlmsg_seq != seq)
                                        continue;
                                if (m->nlmsg_flags & NLM_F_DUMP_INTR)
                                        again = 1;
                                if (m->nlmsg_type == NLMSG_DONE) {
                                        done = 1;
                                        break;
                                }
                                if (m->nlmsg_type == NLMSG_ERROR) {
                                        struct nlmsgerr *e = NLMSG_DATA(m);
                                        if (m->nlmsg_len < NLMSG_LENGTH(sizeof(*e)))
                                                continue;
                                        log_error("netlink: cannot dump the %s: %s", what,
                                                  strerror(-e->error));
                                        return e->error ? e->error : -EIO;
                                }
                                if (!again)
                                        fn(n, m);
                        }
                }
                if (!again)
                        return 0;
                log_debug("netlink: the %s changed while dumped, again", what);
        }
        log_error("netlink: the %s kept changing while dumped (%d times)", what, DUMP_TRIES);
        return -EAGAIN;
}

static void links_reset(struct net *n)
{
        n->n_links = 0;
}

static void on_link(struct net *n, struct nlmsghdr *h)
{
        static struct nla_policy pol[IFLA_MAX + 1] = {
                [IFLA_IFNAME] = { .type = NLA_STRING },
                [IFLA_IFALIAS] = { .type = NLA_STRING },
                [IFLA_MTU] = { .type = NLA_U32 },
                [IFLA_MASTER] = { .type = NLA_U32 },
                [IFLA_LINKINFO] = { .type = NLA_NESTED },
                [IFLA_AF_SPEC] = { .type = NLA_NESTED },
        };
        static struct nla_policy info_pol[IFLA_INFO_MAX + 1] = {
                [IFLA_INFO_KIND] = { .type = NLA_STRING },
                [IFLA_INFO_DATA] = { .type = NLA_NESTED },
        };
        static struct nla_policy vx_pol[IFLA_VXLAN_MAX + 1] = {
                [IFLA_VXLAN_ID] = { .type = NLA_U32 },
                [IFLA_VXLAN_LOCAL] = { .minlen = 4 },
                [IFLA_VXLAN_LOCAL6] = { .minlen = 16 },
                [IFLA_VXLAN_LEARNING] = { .type = NLA_U8 },
                [IFLA_VXLAN_PORT] = { .type = NLA_U16 },
        };
        static struct nla_policy i6_pol[IFLA_INET6_MAX + 1] = {
                [IFLA_INET6_ADDR_GEN_MODE] = { .type = NLA_U8 },
        };
        if (h->nlmsg_type != RTM_NEWLINK || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                return;
        struct nlattr *tb[IFLA_MAX + 1];
        if (nlmsg_parse(h, sizeof(struct ifinfomsg), tb, IFLA_MAX, pol) < 0 || !tb[IFLA_IFNAME])
                return;
        struct ifinfomsg *ifi = NLMSG_DATA(h);
        GROW(n->links, n->n_links, n->cap_links);
        struct link *l = &n->links[n->n_links++];
        memset(l, 0, sizeof(*l));
        l->index = ifi->ifi_index;
        l->flags = ifi->ifi_flags;
        nla_strlcpy(l->name, tb[IFLA_IFNAME], sizeof(l->name));
        l->ours = tb[IFLA_IFALIAS] && !strcmp(nla_get_string(tb[IFLA_IFALIAS]), NET_MARKER);
        if (tb[IFLA_MTU])
                l->mtu = nla_get_u32(tb[IFLA_MTU]);
        if (tb[IFLA_MASTER])
                l->master = (int)nla_get_u32(tb[IFLA_MASTER]);
        struct nlattr *info[IFLA_INFO_MAX + 1];
        if (tb[IFLA_LINKINFO] && nla_parse_nested(info, IFLA_INFO_MAX, tb[IFLA_LINKINFO],
                                                  info_pol) == 0 &&
            info[IFLA_INFO_KIND]) {
                const char *kind = nla_get_string(info[IFLA_INFO_KIND]);
                if (!strcmp(kind, "bridge"))
                        l->kind = KIND_BRIDGE;
                struct nlattr *vx[IFLA_VXLAN_MAX + 1];
                if (!strcmp(kind, "vxlan") && info[IFLA_INFO_DATA] &&
                    nla_parse_nested(vx, IFLA_VXLAN_MAX, info[IFLA_INFO_DATA], vx_pol) == 0) {
                        l->kind = KIND_VXLAN;
                        if (vx[IFLA_VXLAN_ID])
                                l->vx_id = nla_get_u32(vx[IFLA_VXLAN_ID]);
                        if (vx[IFLA_VXLAN_LOCAL]) {
                                l->vx_local.family = AF_INET;
                                memcpy(l->vx_local.b, nla_data(vx[IFLA_VXLAN_LOCAL]), 4);
                        } else if (vx[IFLA_VXLAN_LOCAL6]) {
                                l->vx_local.family = AF_INET6;
                                memcpy(l->vx_local.b, nla_data(vx[IFLA_VXLAN_LOCAL6]), 16);
                        }
                        l->vx_learning = vx[IFLA_VXLAN_LEARNING] &&
                                         nla_get_u8(vx[IFLA_VXLAN_LEARNING]);
                        if (vx[IFLA_VXLAN_PORT])
                                l->vx_port = ntohs(nla_get_u16(vx[IFLA_VXLAN_PORT]));
                        l->vx_remote = vx[IFLA_VXLAN_GROUP] || vx[IFLA_VXLAN_GROUP6];
                }
        }
        if (tb[IFLA_AF_SPEC]) {
                struct nlattr *af;
                int rem;
                nla_for_each_nested(af, tb[IFLA_AF_SPEC], rem)
                {
                        struct nlattr *i6[IFLA_INET6_MAX + 1];
                        if (nla_type(af) == AF_INET6 &&
                            nla_parse_nested(i6, IFLA_INET6_MAX, af, i6_pol) == 0 &&
                            i6[IFLA_INET6_ADDR_GEN_MODE])
                                l->agm_none = nla_get_u8(i6[IFLA_INET6_ADDR_GEN_MODE]) ==
                                              IN6_ADDR_GEN_MODE_NONE;
                }
        }
}

static void fents_reset(struct net *n)
{
        n->n_fents = 0;
}

static int int_cmp(const void *a, const void *b)
{
        int x = *(const int *)a, y = *(const int *)b;
        return x < y ? -1 : x > y;
}

static void on_fdb(struct net *n, struct nlmsghdr *h)
{
        static struct nla_policy pol[NDA_MAX + 1] = {
                [NDA_LLADDR] = { .minlen = 6 },
                [NDA_DST] = { .minlen = 4 },
                [NDA_PORT] = { .type = NLA_U16 },
                [NDA_VNI] = { .type = NLA_U32 },
                [NDA_IFINDEX] = { .type = NLA_U32 },
        };
        if (h->nlmsg_type != RTM_NEWNEIGH || h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ndmsg)))
                return;
        struct ndmsg *nd = NLMSG_DATA(h);
        /* The device's own table ("self"), not its bridge's (which come with
         * NDA_MASTER, and without NTF_SELF). */
        if (nd->ndm_family != AF_BRIDGE || !(nd->ndm_flags & NTF_SELF) ||
            (nd->ndm_flags & NTF_MASTER))
                return;
        if (!bsearch(&nd->ndm_ifindex, n->vx_ours, n->n_vx_ours, sizeof(int), int_cmp))
                return;
        struct nlattr *tb[NDA_MAX + 1];
        if (nlmsg_parse(h, sizeof(*nd), tb, NDA_MAX, pol) < 0 || !tb[NDA_LLADDR] ||
            nla_len(tb[NDA_LLADDR]) != 6 || tb[NDA_MASTER])
                return;
        GROW(n->fents, n->n_fents, n->cap_fents);
        struct fent *f = &n->fents[n->n_fents++];
        memset(f, 0, sizeof(*f));
        f->ifindex = nd->ndm_ifindex;
        memcpy(f->mac, nla_data(tb[NDA_LLADDR]), 6);
        if (tb[NDA_DST] && nla_len(tb[NDA_DST]) == 4) {
                f->dst.family = AF_INET;
                memcpy(f->dst.b, nla_data(tb[NDA_DST]), 4);
        } else if (tb[NDA_DST] && nla_len(tb[NDA_DST]) == 16) {
                f->dst.family = AF_INET6;
                memcpy(f->dst.b, nla_data(tb[NDA_DST]), 16);
        }
        if (tb[NDA_PORT]) {
                f->has_port = 1;
                f->port = nla_get_u16(tb[NDA_PORT]);
        }
        if (tb[NDA_VNI]) {
                f->has_vni = 1;
                f->vni = nla_get_u32(tb[NDA_VNI]);
        }
        if (tb[NDA_IFINDEX]) {
                f->has_rif = 1;
                f->rif = nla_get_u32(tb[NDA_IFINDEX]);
        }
        f->clean = (nd->ndm_state & NUD_PERMANENT) && !f->has_port && !f->has_vni &&
                   !f->has_rif && !tb[NDA_SRC_VNI] && f->dst.family;
}

static int fent_cmp(const void *a, const void *b)
{
        const struct fent *x = a, *y = b;
        if (x->ifindex != y->ifindex)
                return x->ifindex < y->ifindex ? -1 : 1;
        int c = memcmp(x->mac, y->mac, 6);
        return c ? c : addr_cmp(&x->dst, &y->dst);
}

static int run_cmp(const void *a, const void *b)
{
        const struct run *x = a, *y = b;
        return x->ifindex < y->ifindex ? -1 : x->ifindex > y->ifindex;
}

/* Finds the runs of entries of one device; 0 if a device has two. */
static int index_runs(struct net *n)
{
        n->n_runs = 0;
        for (size_t i = 0, j; i < n->n_fents; i = j) {
                for (j = i; j < n->n_fents && n->fents[j].ifindex == n->fents[i].ifindex; j++)
                        ;
                GROW(n->runs, n->n_runs, n->cap_runs);
                n->runs[n->n_runs++] = (struct run){ n->fents[i].ifindex, i, j - i };
        }
        if (n->n_runs)
                qsort(n->runs, n->n_runs, sizeof(*n->runs), run_cmp);
        for (size_t k = 1; k < n->n_runs; k++)
                if (n->runs[k].ifindex == n->runs[k - 1].ifindex)
                        return 0;
        return 1;
}

/* The kernel dumps the FDB device by device: each device's entries are
 * sorted where they are, far cheaper than sorting them all. */
static void sort_fents(struct net *n)
{
        if (!index_runs(n)) {
                qsort(n->fents, n->n_fents, sizeof(*n->fents), fent_cmp);
                index_runs(n);
                return;
        }
        for (size_t k = 0; k < n->n_runs; k++)
                qsort(&n->fents[n->runs[k].start], n->runs[k].n, sizeof(*n->fents), fent_cmp);
}

static const struct run *find_run(const struct net *n, int ifindex)
{
        struct run key = { .ifindex = ifindex };
        if (!n->n_runs)
                return NULL;
        return bsearch(&key, n->runs, n->n_runs, sizeof(*n->runs), run_cmp);
}

static int named_cmp(const void *a, const void *b)
{
        const struct named *x = a, *y = b;
        return x->vni < y->vni ? -1 : x->vni > y->vni;
}

/* Dumps links and FDB into n->links, brs, vxs, fents, and what to watch. */
static int observe(struct net *n, const struct plan *p)
{
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        int r = dump(n, "links", RTM_GETLINK, &ifi, sizeof(ifi), RTEXT_FILTER_SKIP_STATS, on_link,
                     links_reset);
        if (r < 0)
                return r;
        n->brs = xrealloc(n->brs, n->n_links, sizeof(*n->brs));
        n->vxs = xrealloc(n->vxs, n->n_links, sizeof(*n->vxs));
        n->vx_ours = xrealloc(n->vx_ours, n->n_links, sizeof(*n->vx_ours));
        n->watch = xrealloc(n->watch, n->n_links, sizeof(*n->watch));
        n->n_brs = n->n_vxs = n->n_vx_ours = n->n_watch = 0;
        for (size_t i = 0; i < n->n_links; i++) {
                const struct link *l = &n->links[i];
                uint32_t v;
                if ((v = name_vni(l->name, "tbr")))
                        n->brs[n->n_brs++] = (struct named){ v, i };
                else if ((v = name_vni(l->name, "tvx"))) {
                        n->vxs[n->n_vxs++] = (struct named){ v, i };
                        if (l->ours && l->kind == KIND_VXLAN)
                                n->vx_ours[n->n_vx_ours++] = l->index;
                }
                if (v || !strcmp(l->name, p->pub) || !strcmp(l->name, p->uplink))
                        n->watch[n->n_watch++] = l->index;
        }
        qsort(n->brs, n->n_brs, sizeof(*n->brs), named_cmp);
        qsort(n->vxs, n->n_vxs, sizeof(*n->vxs), named_cmp);
        qsort(n->vx_ours, n->n_vx_ours, sizeof(int), int_cmp);
        qsort(n->watch, n->n_watch, sizeof(int), int_cmp);
        snprintf(n->watch_pub, sizeof(n->watch_pub), "%s", p->pub);
        snprintf(n->watch_uplink, sizeof(n->watch_uplink), "%s", p->uplink);
        struct ndmsg nd = { .ndm_family = AF_BRIDGE };
        r = dump(n, "FDB", RTM_GETNEIGH, &nd, sizeof(nd), 0, on_fdb, fents_reset);
        if (r < 0)
                return r;
        sort_fents(n);
        return 0;
}

static const struct link *find_named(const struct named *arr, size_t len, const struct link *links,
                                     uint32_t vni)
{
        struct named key = { .vni = vni };
        const struct named *f = bsearch(&key, arr, len, sizeof(*arr), named_cmp);
        return f ? &links[f->link] : NULL;
}

static const struct link *find_name(const struct net *n, const char *name)
{
        for (size_t i = 0; i < n->n_links; i++)
                if (!strcmp(n->links[i].name, name))
                        return &n->links[i];
        return NULL;
}

static const struct link *find_index(const struct net *n, int index)
{
        for (size_t i = 0; i < n->n_links; i++)
                if (n->links[i].index == index)
                        return &n->links[i];
        return NULL;
}

/* ---- the change watch ---- */

/* Does this notification concern a device or an entry of ours (or a name
 * we would take)? Conservative: what cannot be told matters. */
static int watch_matters(const struct net *n, struct nlmsghdr *h)
{
        switch (h->nlmsg_type) {
        case RTM_NEWLINK:
        case RTM_DELLINK: {
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ifinfomsg)))
                        return 1;
                const struct ifinfomsg *ifi = NLMSG_DATA(h);
                if (bsearch(&ifi->ifi_index, n->watch, n->n_watch, sizeof(int), int_cmp))
                        return 1;
                struct nlattr *a = nlmsg_find_attr(h, sizeof(*ifi), IFLA_IFNAME);
                char name[IFNAMSIZ];
                if (!a)
                        return 1;
                nla_strlcpy(name, a, sizeof(name));
                return name_vni(name, "tbr") || name_vni(name, "tvx") ||
                       !strcmp(name, n->watch_pub) || !strcmp(name, n->watch_uplink);
        }
        case RTM_NEWNEIGH:
        case RTM_DELNEIGH: {
                if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct ndmsg)))
                        return 1;
                const struct ndmsg *nd = NLMSG_DATA(h);
                /* Only a VXLAN device's own entries, as on_fdb() takes them:
                 * not what the bridge learns on its port. */
                if (nd->ndm_family != AF_BRIDGE || !(nd->ndm_flags & NTF_SELF) ||
                    (nd->ndm_flags & NTF_MASTER) || nlmsg_find_attr(h, sizeof(*nd), NDA_MASTER))
                        return 0;
                return bsearch(&nd->ndm_ifindex, n->vx_ours, n->n_vx_ours, sizeof(int),
                               int_cmp) != NULL;
        }
        default:
                return 0;
        }
}

/* Reads what the watch has queued: 1 if the kept state is still the
 * kernel's, 0 if something of ours changed or notifications were lost. */
static int watch_quiet(struct net *n)
{
        for (;;) {
                ssize_t len = recv(n->watch_fd, n->rbuf, RBUF_SIZE, MSG_DONTWAIT);
                if (len < 0 && errno == EINTR)
                        continue;
                if (len < 0)
                        return errno == EAGAIN; /* ENOBUFS: lost, so changed */
                int rem = (int)len;
                for (struct nlmsghdr *h = (struct nlmsghdr *)n->rbuf; nlmsg_ok(h, rem);
                     h = nlmsg_next(h, &rem))
                        if (watch_matters(n, h))
                                return 0;
        }
}

/* Empties the watch, before a dump: what it held is in the dump. */
static void watch_drain(struct net *n)
{
        for (;;) {
                ssize_t len = recv(n->watch_fd, n->rbuf, RBUF_SIZE, MSG_DONTWAIT);
                if (len < 0 && (errno == EINTR || errno == ENOBUFS))
                        continue;
                if (len < 0)
                        return;
        }
}

/* ---- requests ---- */

static void link_name(const struct plan *p, uint8_t role, uint32_t vni, char buf[IFNAMSIZ])
{
        switch (role) {
        case ROLE_BR:
                snprintf(buf, IFNAMSIZ, "tbr%" PRIu32, vni);
                break;
        case ROLE_VX:
                snprintf(buf, IFNAMSIZ, "tvx%" PRIu32, vni);
                break;
        case ROLE_PUB:
                snprintf(buf, IFNAMSIZ, "%s", p->pub);
                break;
        default:
                snprintf(buf, IFNAMSIZ, "%s", p->uplink);
                break;
        }
}

static struct op mkop(uint8_t type, uint8_t role, uint32_t vni, uint32_t net)
{
        return (struct op){ .type = type, .role = role, .vni = vni, .net = net };
}

/* A device by name (never by index: an index may have been given to
 * someone else's device since the dump). */
static void req_by_name(struct net *n, uint16_t flags, const char *name, unsigned iff,
                        struct op op)
{
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_flags = iff, .ifi_change = iff };
        msg_begin(n, RTM_NEWLINK, flags, &ifi, sizeof(ifi), op);
        put_str(n, IFLA_IFNAME, name);
}

static void req_del_link(struct net *n, const char *name, struct op op)
{
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
        msg_begin(n, RTM_DELLINK, 0, &ifi, sizeof(ifi), op);
        put_str(n, IFLA_IFNAME, name);
        msg_end(n);
}

static void put_agm_none(struct net *n)
{
        size_t spec = nest_begin(n, IFLA_AF_SPEC);
        size_t i6 = nest_begin(n, AF_INET6);
        uint8_t mode = IN6_ADDR_GEN_MODE_NONE;
        put(n, IFLA_INET6_ADDR_GEN_MODE, &mode, 1);
        nest_end(n, i6);
        nest_end(n, spec);
}

/* A new device, down (IPv6 address generation is only settable on an
 * existing one, and must be off before it first goes up), then marked ours,
 * then up: one unit, in one send. */
static void req_new_link(struct net *n, const struct plan *p, int index, uint8_t role,
                         uint32_t vni, uint32_t net, uint32_t mtu, int master)
{
        char name[IFNAMSIZ];
        link_name(p, role, vni, name);
        struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = index };
        msg_begin(n, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi),
                  mkop(OP_NEW_LINK, role, vni, net));
        put_str(n, IFLA_IFNAME, name);
        if (mtu)
                put_u32(n, IFLA_MTU, mtu);
        if (master)
                put_u32(n, IFLA_MASTER, (uint32_t)master);
        size_t info = nest_begin(n, IFLA_LINKINFO);
        put_str(n, IFLA_INFO_KIND, role == ROLE_VX ? "vxlan" : "bridge");
        if (role == ROLE_VX) {
                size_t data = nest_begin(n, IFLA_INFO_DATA);
                put_u32(n, IFLA_VXLAN_ID, vni);
                if (p->local.family == AF_INET)
                        put(n, IFLA_VXLAN_LOCAL, p->local.b, 4);
                else
                        put(n, IFLA_VXLAN_LOCAL6, p->local.b, 16);
                uint16_t port = htons(NET_VXLAN_PORT);
                put(n, IFLA_VXLAN_PORT, &port, 2);
                uint8_t zero = 0;
                put(n, IFLA_VXLAN_LEARNING, &zero, 1);
                nest_end(n, data);
        }
        nest_end(n, info);
        msg_end(n);

        req_by_name(n, 0, name, 0, mkop(OP_MARK, role, vni, net));
        put_str(n, IFLA_IFALIAS, NET_MARKER);
        if (role != ROLE_PUB)
                put_agm_none(n);
        msg_end(n);

        req_by_name(n, 0, name, IFF_UP, mkop(OP_UP, role, vni, net));
        msg_end(n);
}

/* Sets what differs of an existing device of ours. */
static void req_fix_link(struct net *n, const struct link *l, uint8_t role, uint32_t vni,
                         uint32_t net, uint32_t mtu, int master)
{
        req_by_name(n, 0, l->name, IFF_UP, mkop(OP_FIX_LINK, role, vni, net));
        if (mtu && l->mtu != mtu)
                put_u32(n, IFLA_MTU, mtu);
        if (master && l->master != master)
                put_u32(n, IFLA_MASTER, (uint32_t)master);
        if (role != ROLE_PUB && !l->agm_none)
                put_agm_none(n);
        msg_end(n);
}

static void put_dst(struct net *n, const struct addr *a)
{
        put(n, NDA_DST, a->b, a->family == AF_INET ? 4 : 16);
}

static void req_fdb_del(struct net *n, const struct fent *f, uint32_t vni, uint32_t net,
                        uint32_t idx)
{
        struct ndmsg nd = { .ndm_family = AF_BRIDGE,
                            .ndm_ifindex = f->ifindex,
                            .ndm_flags = NTF_SELF };
        struct op op = mkop(OP_DEL_FDB, ROLE_VX, vni, net);
        op.idx = idx;
        msg_begin(n, RTM_DELNEIGH, 0, &nd, sizeof(nd), op);
        put(n, NDA_LLADDR, f->mac, 6);
        if (f->dst.family)
                put_dst(n, &f->dst);
        if (f->has_port)
                put(n, NDA_PORT, &f->port, 2);
        if (f->has_vni)
                put_u32(n, NDA_VNI, f->vni);
        if (f->has_rif)
                put_u32(n, NDA_IFINDEX, f->rif);
        msg_end(n);
}

static void req_fdb_add(struct net *n, int ifindex, const struct want_ent *e, uint32_t vni,
                        uint32_t net, uint32_t idx)
{
        struct ndmsg nd = { .ndm_family = AF_BRIDGE,
                            .ndm_ifindex = ifindex,
                            .ndm_state = NUD_PERMANENT,
                            .ndm_flags = NTF_SELF };
        struct op op = mkop(OP_ADD_FDB, ROLE_VX, vni, net);
        op.idx = idx;
        /* Remote hosts share the all-zero MAC: appended, one per host. A
         * guest's MAC has one host: replaced. */
        msg_begin(n, RTM_NEWNEIGH,
                  NLM_F_CREATE | (mac_zero(e->mac) ? NLM_F_APPEND : NLM_F_REPLACE), &nd,
                  sizeof(nd), op);
        put(n, NDA_LLADDR, e->mac, 6);
        put_dst(n, &e->dst);
        msg_end(n);
}

/* ---- one round ---- */

struct round {
        const struct plan *p;
        struct nst *st;
        struct {
                const struct link *l; /* ours and kept, or NULL */
                int index;
                size_t op;
                uint8_t new, failed, foreign;
        } pub;
        uint8_t *keep; /* plan.ents already there as desired */
        int next_index;
        int err;         /* first error that is not a request's */
        char msgs[8][160]; /* and its messages, logged with the requests' */
        size_t n_msgs;
};

static void set_err(int *err, int r)
{
        if (r < 0 && !*err)
                *err = r;
}

/* An error found while diffing: logged when the round is reported. */
__attribute__((format(printf, 3, 4))) static void rd_error(struct round *rd, int err,
                                                            const char *fmt, ...)
{
        set_err(&rd->err, err);
        if (rd->n_msgs == sizeof(rd->msgs) / sizeof(rd->msgs[0]))
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(rd->msgs[rd->n_msgs++], sizeof(rd->msgs[0]), fmt, ap);
        va_end(ap);
}

static int pick_index(struct round *rd)
{
        if (rd->next_index <= 0 || rd->next_index == INT_MAX)
                return 0; /* the kernel picks; nothing can follow in the send */
        return rd->next_index++;
}

/* Phase 1: removals. */
static int phase_remove(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int r;
        /* Ours of VNIs not desired (both lists are sorted by VNI). */
        const struct named *lists[2] = { n->brs, n->vxs };
        size_t lens[2] = { n->n_brs, n->n_vxs };
        for (int k = 0; k < 2; k++) {
                size_t j = 0;
                for (size_t i = 0; i < lens[k]; i++) {
                        const struct link *l = &n->links[lists[k][i].link];
                        uint32_t v = lists[k][i].vni;
                        while (j < p->n_nets && p->nets[j].vni < v)
                                j++;
                        if (!l->ours || (j < p->n_nets && p->nets[j].vni == v))
                                continue;
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_del_link(n, l->name, mkop(OP_DEL_LINK, k ? ROLE_VX : ROLE_BR, v,
                                                      NO_NET));
                }
        }
        /* Desired: which devices stay, which are made anew. */
        for (size_t i = 0; i < p->n_nets; i++) {
                const struct want_net *w = &p->nets[i];
                struct nst *s = &rd->st[i];
                const struct link *br = find_named(n->brs, n->n_brs, n->links, w->vni);
                const struct link *vx = find_named(n->vxs, n->n_vxs, n->links, w->vni);
                if ((br && !br->ours) || (vx && !vx->ours)) {
                        rd_error(rd, -EEXIST, "network %" PRIu32 ": %s exists and is not ours; "
                                 "left alone", w->vni, br && !br->ours ? br->name : vx->name);
                        s->failed = 1;
                        continue;
                }
                if (br && br->kind != KIND_BRIDGE) {
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_del_link(n, br->name, mkop(OP_DEL_LINK, ROLE_BR, w->vni, (uint32_t)i));
                        br = NULL;
                }
                if (vx && (vx->kind != KIND_VXLAN || vx->vx_id != w->vni ||
                           addr_cmp(&vx->vx_local, &p->local) || vx->vx_port != NET_VXLAN_PORT ||
                           vx->vx_learning || vx->vx_remote)) {
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_del_link(n, vx->name, mkop(OP_DEL_LINK, ROLE_VX, w->vni, (uint32_t)i));
                        vx = NULL;
                }
                s->br = br;
                s->vx = vx;
                if (!vx)
                        continue;
                /* Entries of a kept VXLAN device: merge the sorted lists. */
                const struct run *ru = find_run(n, vx->index);
                size_t lo = ru ? ru->start : 0, end = ru ? ru->start + ru->n : 0;
                const struct want_ent *we = &p->ents[w->first];
                size_t d = 0;
                uint8_t wiped[6];
                int has_wiped = 0;
                for (size_t e = lo; e < end; e++) {
                        const struct fent *f = &n->fents[e];
                        if (has_wiped && !memcmp(f->mac, wiped, 6))
                                continue; /* gone with the whole-MAC delete */
                        int c = 1;
                        while (d < w->n) {
                                c = memcmp(we[d].mac, f->mac, 6);
                                if (!c)
                                        c = addr_cmp(&we[d].dst, &f->dst);
                                if (c >= 0)
                                        break;
                                d++;
                        }
                        if (d < w->n && c == 0 && f->clean) {
                                rd->keep[w->first + d] = 1;
                                continue;
                        }
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_fdb_del(n, f, w->vni, (uint32_t)i, (uint32_t)e);
                        if (!f->dst.family) {
                                /* Without a destination, the kernel removes every
                                 * destination of that MAC. */
                                memcpy(wiped, f->mac, 6);
                                has_wiped = 1;
                        }
                }
        }
        /* The public bridge, when one of ours of its name is not a bridge. */
        if (p->pub[0]) {
                const struct link *l = find_name(n, p->pub);
                if (l && !l->ours) {
                        rd->pub.foreign = 1;
                        if (l->kind != KIND_BRIDGE) {
                                rd_error(rd, -EEXIST, "public bridge %s: a device of that "
                                         "name exists and is not a bridge", p->pub);
                                rd->pub.failed = 1;
                        }
                } else if (l && l->kind != KIND_BRIDGE) {
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_del_link(n, l->name, mkop(OP_DEL_LINK, ROLE_PUB, 0, NO_NET));
                } else {
                        rd->pub.l = l;
                }
        }
        if ((r = flush(n)) < 0)
                return r;
        /* A device that could not be removed to be made anew: not now. */
        for (size_t i = 0; i < n->n_ops; i++) {
                const struct op *o = &n->ops[i];
                if (o->err && o->type == OP_DEL_LINK && o->net != NO_NET)
                        rd->st[o->net].failed = 1;
                if (o->err && o->type == OP_DEL_LINK && o->role == ROLE_PUB)
                        rd->pub.failed = 1;
        }
        return 0;
}

/* Did any request of the unit starting at op fail? */
static int unit_failed(const struct net *n, size_t op)
{
        return op != SIZE_MAX &&
               (n->ops[op].err || n->ops[op + 1].err || n->ops[op + 2].err);
}

static int phase_bridges(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int r;
        for (size_t i = 0; i < p->n_nets; i++) {
                const struct want_net *w = &p->nets[i];
                struct nst *s = &rd->st[i];
                s->br_op = s->vx_op = SIZE_MAX;
                if (s->failed)
                        continue;
                if ((r = unit_begin(n)) < 0)
                        return r;
                if (!s->br) {
                        s->br_index = pick_index(rd);
                        s->br_op = n->n_ops;
                        s->br_new = 1;
                        req_new_link(n, p, s->br_index, ROLE_BR, w->vni, (uint32_t)i, w->mtu, 0);
                } else {
                        s->br_index = s->br->index;
                        if (s->br->mtu != w->mtu || !(s->br->flags & IFF_UP) || !s->br->agm_none)
                                req_fix_link(n, s->br, ROLE_BR, w->vni, (uint32_t)i, w->mtu, 0);
                }
        }
        if (p->pub[0] && !rd->pub.failed && !rd->pub.foreign) {
                if ((r = unit_begin(n)) < 0)
                        return r;
                if (!rd->pub.l) {
                        rd->pub.index = pick_index(rd);
                        rd->pub.op = n->n_ops;
                        rd->pub.new = 1;
                        req_new_link(n, p, rd->pub.index, ROLE_PUB, 0, NO_NET, 0, 0);
                } else {
                        rd->pub.index = rd->pub.l->index;
                        if (!(rd->pub.l->flags & IFF_UP))
                                req_fix_link(n, rd->pub.l, ROLE_PUB, 0, NO_NET, 0, 0);
                }
        }
        if ((r = flush(n)) < 0)
                return r;
        for (size_t i = 0; i < p->n_nets; i++) {
                struct nst *s = &rd->st[i];
                if (s->failed)
                        continue;
                if (s->br_new && unit_failed(n, s->br_op))
                        s->failed = 1;
        }
        if (rd->pub.new && unit_failed(n, rd->pub.op))
                rd->pub.failed = 1;
        for (size_t i = 0; i < n->n_ops; i++) {
                const struct op *o = &n->ops[i];
                if (o->err && o->type == OP_FIX_LINK && o->net != NO_NET)
                        rd->st[o->net].failed = 1;
        }
        return 0;
}

static int phase_vxlans(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int r;
        for (size_t i = 0; i < p->n_nets; i++) {
                const struct want_net *w = &p->nets[i];
                struct nst *s = &rd->st[i];
                if (s->failed)
                        continue;
                if ((r = unit_begin(n)) < 0)
                        return r;
                if (!s->vx) {
                        s->vx_index = pick_index(rd);
                        s->vx_op = n->n_ops;
                        s->vx_new = 1;
                        req_new_link(n, p, s->vx_index, ROLE_VX, w->vni, (uint32_t)i, w->mtu,
                                     s->br_index);
                } else {
                        s->vx_index = s->vx->index;
                        if (s->vx->mtu != w->mtu || !(s->vx->flags & IFF_UP) ||
                            !s->vx->agm_none || s->vx->master != s->br_index)
                                req_fix_link(n, s->vx, ROLE_VX, w->vni, (uint32_t)i, w->mtu,
                                             s->br_index);
                }
        }
        if (p->uplink[0] && !rd->pub.failed && !rd->pub.foreign) {
                const struct link *u = find_name(n, p->uplink);
                if (!u) {
                        rd_error(rd, -ENODEV, "public bridge %s: uplink %s does not exist",
                                 p->pub, p->uplink);
                } else if (u->master && u->master != rd->pub.index) {
                        const struct link *m = find_index(n, u->master);
                        rd_error(rd, -EBUSY, "public bridge %s: uplink %s is enslaved to %s; "
                                 "left there", p->pub, p->uplink, m ? m->name : "another device");
                } else if (!u->master || !(u->flags & IFF_UP)) {
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_by_name(n, 0, u->name, IFF_UP, mkop(OP_ENSLAVE, ROLE_UPLINK, 0, NO_NET));
                        put_u32(n, IFLA_MASTER, (uint32_t)rd->pub.index);
                        msg_end(n);
                }
        }
        if ((r = flush(n)) < 0)
                return r;
        for (size_t i = 0; i < p->n_nets; i++) {
                struct nst *s = &rd->st[i];
                if (!s->failed && s->vx_new && unit_failed(n, s->vx_op))
                        s->failed = 1;
        }
        for (size_t i = 0; i < n->n_ops; i++) {
                const struct op *o = &n->ops[i];
                if (o->err && o->type == OP_FIX_LINK && o->role == ROLE_VX)
                        rd->st[o->net].failed = 1;
        }
        return 0;
}

static int phase_fdb(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int r;
        for (size_t i = 0; i < p->n_nets; i++) {
                const struct want_net *w = &p->nets[i];
                struct nst *s = &rd->st[i];
                if (s->failed || !s->vx_index)
                        continue;
                /* A new device has none; a kept one those in keep. */
                const struct want_ent *we = &p->ents[w->first];
                for (size_t d = 0; d < w->n; d++) {
                        if (rd->keep[w->first + d])
                                continue;
                        if ((r = unit_begin(n)) < 0)
                                return r;
                        req_fdb_add(n, s->vx_index, &we[d], w->vni, (uint32_t)i,
                                    (uint32_t)(w->first + d));
                }
        }
        return flush(n);
}

/* Removes what a failed creation made: the pair goes together. */
static int phase_rollback(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int r;
        for (size_t i = 0; i < p->n_nets; i++) {
                struct nst *s = &rd->st[i];
                int br_made = s->br_new && s->br_op != SIZE_MAX && !n->ops[s->br_op].err;
                int vx_made = s->vx_new && s->vx_op != SIZE_MAX && !n->ops[s->vx_op].err;
                int bad = unit_failed(n, s->br_op) || unit_failed(n, s->vx_op);
                if (!bad || (!br_made && !vx_made))
                        continue;
                if ((r = unit_begin(n)) < 0)
                        return r;
                char name[IFNAMSIZ];
                if (vx_made) {
                        link_name(p, ROLE_VX, p->nets[i].vni, name);
                        req_del_link(n, name, mkop(OP_ROLLBACK, ROLE_VX, p->nets[i].vni,
                                                   (uint32_t)i));
                }
                if (br_made) {
                        link_name(p, ROLE_BR, p->nets[i].vni, name);
                        req_del_link(n, name, mkop(OP_ROLLBACK, ROLE_BR, p->nets[i].vni,
                                                   (uint32_t)i));
                }
        }
        if (rd->pub.new && unit_failed(n, rd->pub.op) && !n->ops[rd->pub.op].err) {
                if ((r = unit_begin(n)) < 0)
                        return r;
                req_del_link(n, p->pub, mkop(OP_ROLLBACK, ROLE_PUB, 0, NO_NET));
        }
        return flush(n);
}

static const char *op_what(uint8_t type)
{
        switch (type) {
        case OP_DEL_LINK:
                return "cannot remove";
        case OP_NEW_LINK:
                return "cannot create";
        case OP_MARK:
                return "cannot mark as ours";
        case OP_UP:
                return "cannot bring up";
        case OP_FIX_LINK:
                return "cannot set MTU, master or up on";
        case OP_ENSLAVE:
                return "cannot enslave and bring up uplink";
        case OP_DEL_FDB:
                return "cannot remove an FDB entry of";
        case OP_ADD_FDB:
                return "cannot add an FDB entry to";
        default:
                return "cannot remove the half-made";
        }
}

static void count_ops(const struct net *n, struct net_stats *st)
{
        for (size_t i = 0; i < n->n_ops; i++) {
                const struct op *o = &n->ops[i];
                if (!o->err) {
                        switch (o->type) {
                        case OP_NEW_LINK:
                                st->links_added++;
                                break;
                        case OP_DEL_LINK:
                        case OP_ROLLBACK:
                                st->links_removed++;
                                break;
                        case OP_FIX_LINK:
                        case OP_ENSLAVE:
                                st->links_changed++;
                                break;
                        case OP_ADD_FDB:
                                st->fdb_added++;
                                break;
                        case OP_DEL_FDB:
                                st->fdb_removed++;
                                break;
                        }
                }
        }
}

/* Logs the round's errors, once each. */
static int round_report(struct net *n, struct round *rd)
{
        const struct plan *p = rd->p;
        int first = rd->err;
        for (size_t i = 0; i < rd->n_msgs; i++)
                log_error("%s", rd->msgs[i]);
        /* FDB requests of one network: the first error, then how many more. */
        size_t more = 0;
        const struct op *fdb_logged = NULL;
        for (size_t i = 0; i <= n->n_ops; i++) {
                const struct op *o = i < n->n_ops ? &n->ops[i] : NULL;
                if (more && (!o || o->type != fdb_logged->type || o->vni != fdb_logged->vni)) {
                        log_error("network %" PRIu32 ": %zu more FDB requests failed",
                                  fdb_logged->vni, more);
                        more = 0;
                }
                if (!o || !o->err)
                        continue;
                set_err(&first, -o->err);
                /* Marking and bringing up a device that could not be made
                 * fail too: that is the same error. */
                if ((o->type == OP_MARK && n->ops[i - 1].err) ||
                    (o->type == OP_UP && n->ops[i - 2].type == OP_NEW_LINK && n->ops[i - 2].err))
                        continue;
                if (o->type == OP_ADD_FDB || o->type == OP_DEL_FDB) {
                        if (fdb_logged && fdb_logged->type == o->type &&
                            fdb_logged->vni == o->vni) {
                                more++;
                                continue;
                        }
                        fdb_logged = o;
                }
                char name[IFNAMSIZ], obj[64] = "", m[18], a[INET6_ADDRSTRLEN];
                link_name(p, o->role, o->vni, name);
                if (o->type == OP_ADD_FDB) {
                        const struct want_ent *e = &p->ents[o->idx];
                        snprintf(obj, sizeof(obj), " (%s dst %s)", mac_str(e->mac, m),
                                 addr_str(&e->dst, a, sizeof(a)));
                } else if (o->type == OP_DEL_FDB) {
                        const struct fent *f = &n->fents[o->idx];
                        snprintf(obj, sizeof(obj), " (%s dst %s)", mac_str(f->mac, m),
                                 addr_str(&f->dst, a, sizeof(a)));
                }
                const char *t = op_text(n, i);
                char who[48];
                if (o->role == ROLE_PUB || o->role == ROLE_UPLINK)
                        snprintf(who, sizeof(who), "public bridge %s", p->pub);
                else
                        snprintf(who, sizeof(who), "network %" PRIu32, o->vni);
                log_error("%s: %s %s%s: %s%s%s%s", who, op_what(o->type), name, obj,
                          strerror(o->err), t ? " (" : "", t ? t : "", t ? ")" : "");
        }
        return first;
}

static int round_run(struct net *n, const struct plan *p, int rounds_done, struct net_stats *st,
                     int *ret_again)
{
        struct round rd = { .p = p };
        int r;
        int kept = n->kept;
        n->kept = 0; /* until this round is over and sent nothing */
        if (rounds_done || !kept || util_mono_ms() - n->kept_ms > KEPT_MAX_MS ||
            strcmp(p->pub, n->watch_pub) || strcmp(p->uplink, n->watch_uplink) ||
            !watch_quiet(n)) {
                watch_drain(n);
                n->kept_ms = util_mono_ms();
                if ((r = observe(n, p)) < 0)
                        return r;
                st->dumped = 1;
        }
        n->seq_base = n->seq;
        n->n_ops = n->n_texts = 0;
        n->slen = 0;
        n->batch_first = 0;
        n->lossy = 0;
        /* Later rounds send less at a time, until one request per send. */
        n->batch_limit = n->tune.batch_bytes >> (4 * rounds_done);
        int max = 0;
        for (size_t i = 0; i < n->n_links; i++)
                if (n->links[i].index > max)
                        max = n->links[i].index;
        rd.next_index = max < INT_MAX - 2 * (int)TMSG_MAX_NETWORKS - 1 ? max + 1 : 0;
        rd.st = calloc(p->n_nets + 1, sizeof(*rd.st));
        rd.keep = calloc(p->n_ents + 1, 1);
        if (!rd.st || !rd.keep)
                abort();
        rd.pub.op = SIZE_MAX;

        if ((r = phase_remove(n, &rd)) < 0 || (r = phase_bridges(n, &rd)) < 0 ||
            (r = phase_vxlans(n, &rd)) < 0 || (r = phase_fdb(n, &rd)) < 0 ||
            (r = phase_rollback(n, &rd)) < 0)
                goto out;

        int collided = 0;
        for (size_t i = 0; i < n->n_ops; i++)
                if (n->ops[i].type == OP_NEW_LINK && n->ops[i].err == EEXIST)
                        collided = 1;
        int again = n->lossy || (collided && rounds_done == 0);
        if (again && rounds_done + 1 < MAX_ROUNDS) {
                /* Not logged: the next round tells what still fails. */
                log_debug("networks: %s; dumping and diffing again",
                          n->lossy ? "netlink answers were lost" : "a new device's index or "
                                                                  "name was taken");
                count_ops(n, st);
                *ret_again = 1;
                r = 0;
                goto out;
        }
        count_ops(n, st);
        r = round_report(n, &rd);
        /* What was dumped is still the state when nothing was sent. */
        n->kept = !n->n_ops && !n->lossy;
        if (n->lossy) {
                log_error("networks: netlink answers were lost in %d rounds; the state is "
                          "unknown until the next apply",
                          rounds_done + 1);
                set_err(&r, -ENOBUFS);
        }
        *ret_again = 0;
out:
        free(rd.st);
        free(rd.keep);
        return r;
}

int net_apply(struct net *n, const struct net_config *cfg, const struct net_desired *nets,
              size_t n_nets, const char (*remotes)[TMSG_IP], size_t n_remotes,
              const struct fdb_desired *fdb, size_t n_fdb, struct net_stats *ret)
{
        struct net_stats st = { 0 };
        struct plan p;
        int r = plan_build(cfg, nets, n_nets, remotes, n_remotes, fdb, n_fdb, &p);
        if (r < 0)
                goto out;
        for (int round = 0;; round++) {
                int again = 0;
                r = round_run(n, &p, round, &st, &again);
                if (r < 0 || !again)
                        break;
                st.resynced++;
        }
        plan_free(&p);
out:
        if (ret)
                *ret = st;
        return r;
}
