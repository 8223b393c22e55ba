#include "reconcile.h"

#include <errno.h>
#include <stdlib.h>
#include <strings.h>

static const char *const op_names[] = {
        [RC_DEFINE] = "define",         [RC_START] = "start",
        [RC_SHUTDOWN] = "shutdown",     [RC_DESTROY] = "destroy",
        [RC_UNDEFINE] = "undefine",     [RC_MARK_REBOOT] = "mark-reboot",
        [RC_REBUILD] = "rebuild",       [RC_DROP_PENDING] = "drop-pending",
        [RC_REDEFINE] = "redefine",     [RC_SNAPSHOT] = "snapshot",
        [RC_SNAP_DELETE] = "snapshot-delete", [RC_RESTORE] = "restore",
        [RC_NIC_ATTACH] = "nic-attach",
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == RC__MAX, "op_names covers rc_op_type");

const char *rc_op_to_string(enum rc_op_type t)
{
        return (unsigned)t < RC__MAX ? op_names[t] : "?";
}

static int cmp_des_ptr(const void *a, const void *b)
{
        const struct dom_desired *x = *(const struct dom_desired *const *)a;
        const struct dom_desired *y = *(const struct dom_desired *const *)b;
        return x->vm_id < y->vm_id ? -1 : x->vm_id > y->vm_id;
}

static int cmp_id_des(const void *key, const void *elem)
{
        uint64_t id = *(const uint64_t *)key;
        const struct dom_desired *d = *(const struct dom_desired *const *)elem;
        return id < d->vm_id ? -1 : id > d->vm_id;
}

static const struct rc_pending *find_pending(const struct rc_pending *p, size_t n, uint64_t id)
{
        size_t lo = 0, hi = n;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (p[mid].vm_id == id)
                        return &p[mid];
                if (p[mid].vm_id < id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

struct out {
        struct rc_op *ops;
        size_t n, cap;
};

static void emit(struct out *o, enum rc_op_type t, uint64_t id, const struct dom_desired *d)
{
        /* cap is sized up front: at most 4 ops per vm, plus its snapshots. */
        o->ops[o->n++] = (struct rc_op){ .type = t, .vm_id = id, .des = d };
}

static void emit_snap(struct out *o, enum rc_op_type t, const struct dom_desired *d, uint64_t snap)
{
        o->ops[o->n++] = (struct rc_op){ .type = t, .vm_id = d->vm_id, .des = d, .snap_id = snap };
}

static int has_mac(const struct hv_domain *h, const char *mac)
{
        for (size_t i = 0; i < h->n_nics && i < TMSG_MAX_NICS; i++)
                if (strcasecmp(h->nic_macs[i], mac) == 0)
                        return 1;
        return 0;
}

static int has_snap(const struct hv_domain *h, uint64_t id)
{
        for (size_t i = 0; i < h->n_snaps; i++)
                if (h->snaps[i] == id)
                        return 1;
        return 0;
}

static int wants_snap(const struct dom_desired *d, uint64_t id)
{
        for (size_t i = 0; i < d->n_snaps; i++)
                if (d->snaps[i].id == id)
                        return 1;
        return 0;
}

static int is_active(enum power s)
{
        return s == POWER_RUNNING || s == POWER_PAUSED;
}

/* Both sides exist: rebuild, restore, snapshots gone, resize, reboot, new
 * snapshots, then power. */
static void diff_one(struct out *o, const struct dom_desired *d, const struct hv_domain *h,
                     const struct rc_pending *p, int64_t now)
{
        int offline = 0;

        if (d->rebuild_seq > h->rebuild_done) {
                emit(o, RC_REBUILD, d->vm_id, d);
                if (p)
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                if (d->power == POWER_RUNNING)
                        emit(o, RC_START, d->vm_id, d);
                return;
        }
        if (d->restore_seq > h->restore_done) {
                if (is_active(h->state))
                        emit(o, RC_DESTROY, d->vm_id, d);
                if (p)
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                emit(o, RC_RESTORE, d->vm_id, d);
                if (d->power == POWER_RUNNING)
                        emit(o, RC_START, d->vm_id, d);
                return;
        }
        for (size_t i = 0; i < h->n_snaps; i++)
                if (!wants_snap(d, h->snaps[i]))
                        emit_snap(o, RC_SNAP_DELETE, d, h->snaps[i]);
        /* A new size or a switch into or out of the rescue system: stop
         * (gracefully, unless told to power off), define again, start. */
        if (d->resize_seq > h->resize_done || !d->rescue != !h->rescue) {
                if (is_active(h->state)) {
                        if (p && now < p->deadline_ms && !d->force_off)
                                return; /* still shutting down gracefully */
                        if (p || d->force_off) {
                                emit(o, RC_DESTROY, d->vm_id, d);
                                if (p)
                                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                        } else {
                                emit(o, RC_SHUTDOWN, d->vm_id, d);
                        }
                        return;
                }
                if (p)
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                emit(o, RC_REDEFINE, d->vm_id, d);
                if (d->power == POWER_RUNNING)
                        emit(o, RC_START, d->vm_id, d);
                return;
        }
        /* NICs attached since it was defined (a VPS joining a network):
         * added to the definition, and hot-plugged when it runs. */
        if (h->nics_known)
                for (unsigned i = 0; i < d->n_nics && i < TMSG_MAX_NICS; i++)
                        if (!has_mac(h, d->nics[i].mac))
                                o->ops[o->n++] = (struct rc_op){ .type = RC_NIC_ATTACH,
                                                                 .vm_id = d->vm_id,
                                                                 .des = d,
                                                                 .nic = i };
        /* Power off at once: no waiting for a graceful stop. */
        if (d->power == POWER_STOPPED && d->force_off && is_active(h->state)) {
                emit(o, RC_DESTROY, d->vm_id, d);
                if (p)
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                return;
        }
        /* New snapshots: online ones at once, offline ones once the guest
         * has stopped (gracefully; powered off past the deadline). */
        for (size_t i = 0; i < d->n_snaps; i++) {
                if (has_snap(h, d->snaps[i].id))
                        continue;
                if (d->snaps[i].online || !is_active(h->state))
                        emit_snap(o, RC_SNAPSHOT, d, d->snaps[i].id);
                else
                        offline = 1;
        }
        if (offline) {
                if (!p) {
                        emit(o, RC_SHUTDOWN, d->vm_id, d);
                } else if (now >= p->deadline_ms) {
                        emit(o, RC_DESTROY, d->vm_id, d);
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                }
                return;
        }
        if (d->reboot_seq > h->reboot_done) {
                emit(o, RC_MARK_REBOOT, d->vm_id, d);
                /* A reboot of a stopped machine is just its start below. */
                if (is_active(h->state) && d->power == POWER_RUNNING && !p) {
                        emit(o, RC_SHUTDOWN, d->vm_id, d);
                        return;
                }
        }
        if (p) {
                if (!is_active(h->state)) {
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                } else if (now >= p->deadline_ms) {
                        emit(o, RC_DESTROY, d->vm_id, d);
                        emit(o, RC_DROP_PENDING, d->vm_id, d);
                        return;
                } else {
                        return; /* still shutting down gracefully */
                }
        }
        if (d->power == POWER_RUNNING && !is_active(h->state))
                emit(o, RC_START, d->vm_id, d);
        else if (d->power == POWER_STOPPED && h->state == POWER_CRASHED)
                emit(o, RC_DESTROY, d->vm_id, d);
        else if (d->power == POWER_STOPPED && is_active(h->state) && !p)
                emit(o, RC_SHUTDOWN, d->vm_id, d);
}

int reconcile_diff(const struct dom_desired *desired, size_t n_desired,
                   const struct hv_domain *observed, size_t n_observed,
                   const struct rc_pending *pending, size_t n_pending, int64_t now_ms,
                   struct rc_op **ret_ops, size_t *ret_n)
{
        const struct dom_desired **des = NULL;
        struct out o = { 0 };
        size_t i = 0, j = 0;

        o.cap = 4 * (n_desired + n_observed) + n_pending + 1;
        for (size_t k = 0; k < n_desired; k++)
                o.cap += desired[k].n_snaps + desired[k].n_nics;
        for (size_t k = 0; k < n_observed; k++)
                o.cap += observed[k].n_snaps;
        o.ops = calloc(o.cap, sizeof(*o.ops));
        des = calloc(n_desired + 1, sizeof(*des));
        if (!o.ops || !des) {
                free(o.ops);
                free(des);
                return -ENOMEM;
        }
        for (size_t k = 0; k < n_desired; k++)
                des[k] = &desired[k];
        qsort(des, n_desired, sizeof(*des), cmp_des_ptr);

        while (i < n_desired || j < n_observed) {
                const struct dom_desired *d = i < n_desired ? des[i] : NULL;
                const struct hv_domain *h = j < n_observed ? &observed[j] : NULL;

                if (d && i + 1 < n_desired && des[i + 1]->vm_id == d->vm_id) {
                        i++; /* a duplicate in the desired state: the last one wins */
                        continue;
                }
                if (d && (!h || d->vm_id < h->vm_id)) {
                        /* A stop pending for a domain that vanished is over. */
                        if (find_pending(pending, n_pending, d->vm_id))
                                emit(&o, RC_DROP_PENDING, d->vm_id, d);
                        emit(&o, RC_DEFINE, d->vm_id, d);
                        if (d->power == POWER_RUNNING)
                                emit(&o, RC_START, d->vm_id, d);
                        i++;
                } else if (h && (!d || h->vm_id < d->vm_id)) {
                        /* Ours, and no longer wanted. */
                        const struct rc_pending *p = find_pending(pending, n_pending, h->vm_id);
                        emit(&o, RC_UNDEFINE, h->vm_id, NULL);
                        if (p)
                                emit(&o, RC_DROP_PENDING, h->vm_id, NULL);
                        j++;
                } else {
                        const struct rc_pending *p = find_pending(pending, n_pending, d->vm_id);
                        diff_one(&o, d, h, p, now_ms);
                        i++;
                        j++;
                }
        }
        /* Pending stops of vms neither wanted nor on the host: over. */
        for (size_t k = 0; k < n_pending; k++) {
                uint64_t id = pending[k].vm_id;
                size_t lo = 0, hi = n_observed, found = 0;
                while (lo < hi && !found) {
                        size_t mid = lo + (hi - lo) / 2;
                        if (observed[mid].vm_id == id)
                                found = 1;
                        else if (observed[mid].vm_id < id)
                                lo = mid + 1;
                        else
                                hi = mid;
                }
                if (!found && !bsearch(&id, des, n_desired, sizeof(*des), cmp_id_des))
                        emit(&o, RC_DROP_PENDING, id, NULL);
        }
        free(des);
        *ret_ops = o.ops;
        *ret_n = o.n;
        return 0;
}
