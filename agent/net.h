/* net: the host's private networks and public bridge, as the kernel holds
 * them. net.c is its only implementation and the only file of the agent
 * that includes libnl.
 *
 * One private network is a bridge tbr<vni> and a VXLAN device tvx<vni>
 * (VNI vni, local = this host's underlay address, UDP port 4789, learning
 * off) enslaved to it, both up, both of the network's MTU, with IPv6
 * address generation off (the host has no address on a tenant's network).
 * Traffic to the other hosts is head-end replicated: the VXLAN device holds
 * one all-zero MAC FDB entry per remote host of the network, and one entry
 * per remote guest MAC pointing at that guest's host.
 *
 * Ownership: a device is ours only when its name is tbr<n> or tvx<n> (n in
 * decimal without leading zeros), or the configured public bridge, *and*
 * its alias (IFLA_IFALIAS) is NET_MARKER, which net_apply() sets right after
 * creating it, in the same send (so a crash of the agent cannot leave one
 * unmarked). Nothing else is ever changed or removed: not a tbr7 without
 * the marker, not br0, not the uplink (only enslaved to the public bridge).
 *
 * Every call dumps the links and the FDB once, diffs them against the
 * desired state in memory, and sends only the differences, many requests
 * per send without waiting for each one's answer; errors come back on the
 * same socket and are matched to their request. A lost answer (ENOBUFS on
 * the socket) makes it dump and diff again: the state is never assumed.
 * A call that found nothing to do keeps what it dumped; a second socket
 * listens to the kernel's link and neighbour notifications, and the next
 * call diffs against the kept state instead of dumping again when none of
 * them concerned our devices, their entries or their names, none was lost,
 * and the dump is under a minute old.
 *
 * Errors are negative errno values, logged once, here, naming the object.
 * A struct net works in the network namespace of the thread that called
 * net_open(); one thread at a time per struct net.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

#define NET_MARKER "tasman"
#define NET_VXLAN_PORT 4789
#define NET_MTU_DEFAULT 1450u
#define NET_VNI_MAX 16777215u

struct net;

/* Opens the netlink socket (in the caller's network namespace). */
int net_open(struct net **ret);
void net_free(struct net *n);

struct net_config {
        const char *local_ip;      /* this host's underlay address: VXLAN local, v4 or v6 */
        const char *public_bridge; /* e.g. "tbrpub"; NULL or "": none */
        const char *public_uplink; /* joined to the public bridge; NULL or "": none */
};

/* What one net_apply() changed, counted per request the kernel accepted.
 * Entries that go away with their VXLAN device are not counted. */
struct net_stats {
        size_t links_added;   /* devices created */
        size_t links_changed; /* existing devices fixed (MTU, up, master), uplink enslaved */
        size_t links_removed; /* devices deleted (undesired, or a failed pair rolled back) */
        size_t fdb_added;
        size_t fdb_removed;
        int resynced; /* times the state was dumped and diffed again after a lost answer */
        int dumped;   /* the kernel's state was dumped (0: the kept one was still true) */
};

/* Makes the kernel match the desired state:
 * - for every nets[i]: tbr<vni> and tvx<vni> as above, MTU nets[i].mtu (0:
 *   NET_MTU_DEFAULT) on both; on tvx<vni> exactly these FDB entries ("self
 *   permanent"): 00:00:00:00:00:00 dst R for every remote host R in
 *   remotes[first_remote, first_remote + n_remotes), and M dst H for every
 *   {M, H} in fdb[first_fdb, first_fdb + n_fdb). Duplicates count once.
 * - our bridges and VXLAN devices of other VNIs are removed; so are FDB
 *   entries on our VXLAN devices that are not desired, or not permanent,
 *   or with another port, VNI or device than the default.
 * - the public bridge (when configured) exists, is up and has the uplink
 *   (when configured) enslaved and up. A bridge of that name that is not
 *   ours is used as it is: neither it nor the uplink is touched then. An
 *   uplink enslaved to another master is left there (-EBUSY).
 * Input is checked first: a bad address (v4 or v6, local and remotes of
 * one family), MAC (unicast), VNI (1..NET_VNI_MAX), MTU (68..65535), a
 * slice out of its array, a VNI given twice, a MAC given with two hosts, a
 * bad interface name: -EINVAL, logged naming it, and nothing is changed.
 * Otherwise every network is worked on even when another fails; a network
 * whose devices exist but are not ours is left alone (-EEXIST). Creating a
 * network's pair is undone when half of it fails. Returns 0 or the first
 * error; *ret (may be NULL) is written in both cases. */
int net_apply(struct net *n, const struct net_config *cfg, const struct net_desired *nets,
              size_t n_nets, const char (*remotes)[TMSG_IP], size_t n_remotes,
              const struct fdb_desired *fdb, size_t n_fdb, struct net_stats *ret);

/* Knobs for tests and benchmarks; net_open() picks the defaults. */
struct net_tuning {
        size_t batch_bytes; /* requests per send, in bytes (default 16 KiB) */
        int rcvbuf;         /* socket receive buffer (default 4 MiB) */
        int ack_each;       /* ask an answer for every request, not one per send */
        int watch_rcvbuf;   /* the change watch's receive buffer (default 1 MiB) */
};
int net_set_tuning(struct net *n, const struct net_tuning *t);
