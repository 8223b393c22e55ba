/* reconcile: what to do to make the host match the desired state.
 *
 * A pure function over plain structs: the desired domains (from the
 * broker's SyncReply), the observed ones (from hv_list), the graceful stops
 * still in flight, and the time. It returns the operations to run, in
 * order. The agent runs them, observes again and diffs again until nothing
 * is left to do, so every step is small and a crash between any two steps
 * is harmless: the next diff picks up from what libvirt then shows.
 *
 * Snapshots are a set: those desired and missing are made (an offline one
 * only once the guest has stopped, gracefully, and it is started again
 * after), those present and not desired are deleted. A restore powers the
 * guest off at once (its running state is what is being replaced).
 *
 * One-shot intents are counters (reboot_seq, rebuild_seq, resize_seq,
 * restore_seq); the last one
 * carried out lives in the domain's metadata, and is written *before* the
 * work, so an intent is carried out at most once even across a crash.
 * The returned array is malloc'd and owned by the caller. Any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "hv.h"

enum rc_op_type {
        RC_DEFINE,        /* define from des (counters = desired counters) */
        RC_START,
        RC_SHUTDOWN,      /* graceful; the agent records a pending stop */
        RC_DESTROY,       /* power off */
        RC_UNDEFINE,      /* remove (powering off first) */
        RC_MARK_REBOOT,   /* write reboot_done = des->reboot_seq */
        RC_REBUILD,       /* undefine and define anew, counters = desired */
        RC_DROP_PENDING,  /* the pending stop is over */
        RC_REDEFINE,      /* stopped: define again with the desired size and mode
                           * (resize_done = resize_seq, rescue), growing the disk */
        RC_SNAPSHOT,      /* make snapshot snap_id (online when the guest runs) */
        RC_SNAP_DELETE,   /* delete snapshot snap_id */
        RC_RESTORE,       /* stopped: put back the disk of snapshot des->restore_snap and
                           * define again (restore_done = restore_seq) */
        RC_NIC_ATTACH,    /* add des->nics[nic] (missing from the domain), live too if it runs */
        RC__MAX,
};

const char *rc_op_to_string(enum rc_op_type t);

struct rc_op {
        enum rc_op_type type;
        uint64_t vm_id;
        const struct dom_desired *des; /* into the caller's desired array, or NULL */
        uint64_t snap_id;              /* RC_SNAPSHOT, RC_SNAP_DELETE */
        unsigned nic;                  /* RC_NIC_ATTACH: index into des->nics */
};

struct rc_pending {
        uint64_t vm_id;
        int64_t deadline_ms; /* power off when still running at this time */
};

/* desired need not be sorted; observed and pending must be sorted by vm_id.
 * 0 or -ENOMEM. */
int reconcile_diff(const struct dom_desired *desired, size_t n_desired,
                   const struct hv_domain *observed, size_t n_observed,
                   const struct rc_pending *pending, size_t n_pending, int64_t now_ms,
                   struct rc_op **ret_ops, size_t *ret_n);
