/* reconcile_diff: a table of (desired, observed, pending, now) -> ops,
 * checking each op's type, vm id and the desired entry it points at; then
 * 1,000 vms in random order against an independent model. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "reconcile.h"

#define MAXN 4
#define NO_DES -1

/* Shorthands for the table. */
#define RUN POWER_RUNNING
#define STOP POWER_STOPPED
#define PAUSE POWER_PAUSED
#define CRASH POWER_CRASHED

struct want_op {
        enum rc_op_type type;
        uint64_t vm_id;
        int des; /* index into the case's desired array, or NO_DES */
        uint64_t snap; /* RC_SNAPSHOT, RC_SNAP_DELETE */
};

struct rc_case {
        const char *name;
        struct dom_desired des[MAXN];
        size_t n_des;
        struct hv_domain obs[MAXN];
        size_t n_obs;
        struct rc_pending pend[MAXN];
        size_t n_pend;
        int64_t now;
        struct want_op ops[10];
        size_t n_ops;
};

#define DES(id, pw, rb, rl) \
        { .vm_id = (id), .power = (pw), .reboot_seq = (rb), .rebuild_seq = (rl) }
#define OBS(id, st, rb, rl) \
        { .vm_id = (id), .state = (st), .reboot_done = (rb), .rebuild_done = (rl) }
#define OP(t, id, d) { RC_##t, (id), (d), 0 }
#define SOP(t, id, d, sn) { RC_##t, (id), (d), (sn) }
/* A desired vm with snapshots (ids; online when odd) and a restore. */
#define DES_S(id, pw, rs, rsnap, n, ...)                                                  \
        { .vm_id = (id), .power = (pw), .restore_seq = (rs), .restore_snap = (rsnap),     \
          .snaps = { __VA_ARGS__ }, .n_snaps = (n) }
#define SNAP(id) { (id), (id) % 2 }
#define OBS_S(id, st, rd, n, ...)                                                          \
        { .vm_id = (id), .state = (st), .restore_done = (rd), .snaps = { __VA_ARGS__ },    \
          .n_snaps = (n) }

static const struct rc_case cases[] = {
        { "nothing", .now = 1000 },
        { "desired only, running", { DES(1, RUN, 0, 0) }, 1, .now = 1000,
          .ops = { OP(DEFINE, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "desired only, stopped", { DES(1, STOP, 0, 0) }, 1, .now = 1000,
          .ops = { OP(DEFINE, 1, 0) }, .n_ops = 1 },
        { "desired only, reboot and rebuild asked: a new domain gets them as done",
          { DES(1, RUN, 3, 2) }, 1, .now = 1000,
          .ops = { OP(DEFINE, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "observed only", .obs = { OBS(1, RUN, 0, 0) }, .n_obs = 1, .now = 1000,
          .ops = { OP(UNDEFINE, 1, NO_DES) }, .n_ops = 1 },
        { "observed only, stopped", .obs = { OBS(9, STOP, 0, 0) }, .n_obs = 1, .now = 1000,
          .ops = { OP(UNDEFINE, 9, NO_DES) }, .n_ops = 1 },
        { "observed only, with a pending stop",
          .obs = { OBS(1, RUN, 0, 0) }, .n_obs = 1, .pend = { { 1, 5000 } }, .n_pend = 1,
          .now = 1000, .ops = { OP(UNDEFINE, 1, NO_DES), OP(DROP_PENDING, 1, NO_DES) },
          .n_ops = 2 },
        { "running as desired", { DES(1, RUN, 0, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          .now = 1000 },
        { "stopped as desired", { DES(1, STOP, 0, 0) }, 1, { OBS(1, STOP, 0, 0) }, 1,
          .now = 1000 },
        { "stopped, should run", { DES(1, RUN, 0, 0) }, 1, { OBS(1, STOP, 0, 0) }, 1,
          .now = 1000, .ops = { OP(START, 1, 0) }, .n_ops = 1 },
        { "running, should stop", { DES(1, STOP, 0, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          .now = 1000, .ops = { OP(SHUTDOWN, 1, 0) }, .n_ops = 1 },
        { "stopping, not yet due", { DES(1, STOP, 0, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 4999 },
        { "stopping, due exactly now", { DES(1, STOP, 0, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 5000,
          .ops = { OP(DESTROY, 1, 0), OP(DROP_PENDING, 1, 0) }, .n_ops = 2 },
        { "stopping, past the deadline", { DES(1, STOP, 0, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 9000,
          .ops = { OP(DESTROY, 1, 0), OP(DROP_PENDING, 1, 0) }, .n_ops = 2 },
        { "stop done, should stay stopped", { DES(1, STOP, 0, 0) }, 1, { OBS(1, STOP, 0, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 1000, .ops = { OP(DROP_PENDING, 1, 0) }, .n_ops = 1 },
        { "stop done, should run again", { DES(1, RUN, 0, 0) }, 1, { OBS(1, STOP, 0, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 1000,
          .ops = { OP(DROP_PENDING, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "stopping, should run again: the stop finishes first", { DES(1, RUN, 0, 0) }, 1,
          { OBS(1, RUN, 0, 0) }, 1, { { 1, 5000 } }, 1, .now = 1000 },
        { "reboot while running", { DES(1, RUN, 1, 0) }, 1, { OBS(1, RUN, 0, 0) }, 1,
          .now = 1000, .ops = { OP(MARK_REBOOT, 1, 0), OP(SHUTDOWN, 1, 0) }, .n_ops = 2 },
        { "reboot while paused", { DES(1, RUN, 5, 0) }, 1, { OBS(1, PAUSE, 4, 0) }, 1,
          .now = 1000, .ops = { OP(MARK_REBOOT, 1, 0), OP(SHUTDOWN, 1, 0) }, .n_ops = 2 },
        { "reboot of a stopped vm that should run", { DES(1, RUN, 1, 0) }, 1,
          { OBS(1, STOP, 0, 0) }, 1, .now = 1000,
          .ops = { OP(MARK_REBOOT, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "reboot of a stopped vm that should stay stopped", { DES(1, STOP, 1, 0) }, 1,
          { OBS(1, STOP, 0, 0) }, 1, .now = 1000, .ops = { OP(MARK_REBOOT, 1, 0) }, .n_ops = 1 },
        { "reboot already done", { DES(1, RUN, 2, 0) }, 1, { OBS(1, RUN, 2, 0) }, 1,
          .now = 1000 },
        { "reboot, its stop under way", { DES(1, RUN, 1, 0) }, 1, { OBS(1, RUN, 1, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 1000 },
        { "reboot, its stop done", { DES(1, RUN, 1, 0) }, 1, { OBS(1, STOP, 1, 0) }, 1,
          { { 1, 5000 } }, 1, .now = 1000,
          .ops = { OP(DROP_PENDING, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "rebuild", { DES(1, RUN, 0, 1) }, 1, { OBS(1, RUN, 0, 0) }, 1, .now = 1000,
          .ops = { OP(REBUILD, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
        { "rebuild of a stopped vm that should stay stopped", { DES(1, STOP, 0, 4) }, 1,
          { OBS(1, STOP, 0, 3) }, 1, .now = 1000, .ops = { OP(REBUILD, 1, 0) }, .n_ops = 1 },
        { "rebuild wins over reboot and a pending stop", { DES(1, RUN, 9, 1) }, 1,
          { OBS(1, RUN, 0, 0) }, 1, { { 1, 5000 } }, 1, .now = 1000,
          .ops = { OP(REBUILD, 1, 0), OP(DROP_PENDING, 1, 0), OP(START, 1, 0) }, .n_ops = 3 },
        { "rebuild already done", { DES(1, RUN, 0, 2) }, 1, { OBS(1, RUN, 0, 2) }, 1,
          .now = 1000 },
        { "crashed, should stop", { DES(1, STOP, 0, 0) }, 1, { OBS(1, CRASH, 0, 0) }, 1,
          .now = 1000, .ops = { OP(DESTROY, 1, 0) }, .n_ops = 1 },
        { "crashed, should run", { DES(1, RUN, 0, 0) }, 1, { OBS(1, CRASH, 0, 0) }, 1,
          .now = 1000, .ops = { OP(START, 1, 0) }, .n_ops = 1 },
        { "paused, should run", { DES(1, RUN, 0, 0) }, 1, { OBS(1, PAUSE, 0, 0) }, 1,
          .now = 1000 },
        { "paused, should stop", { DES(1, STOP, 0, 0) }, 1, { OBS(1, PAUSE, 0, 0) }, 1,
          .now = 1000, .ops = { OP(SHUTDOWN, 1, 0) }, .n_ops = 1 },
        { "duplicate in desired: one define", { DES(4, RUN, 0, 0), DES(4, RUN, 0, 0) }, 2,
          .now = 1000, .ops = { OP(DEFINE, 4, 1), OP(START, 4, 1) }, .n_ops = 2 },
        { "duplicate in desired, defined already", { DES(4, RUN, 0, 0), DES(4, RUN, 0, 0) }, 2,
          { OBS(4, STOP, 0, 0) }, 1, .now = 1000, .ops = { OP(START, 4, 1) }, .n_ops = 1 },
        { "several vms, desired unsorted",
          { DES(30, RUN, 0, 0), DES(10, STOP, 0, 0), DES(20, RUN, 1, 0) }, 3,
          { OBS(5, RUN, 0, 0), OBS(10, RUN, 0, 0), OBS(20, RUN, 0, 0), OBS(40, STOP, 0, 0) }, 4,
          { { 5, 100 }, { 40, 100 } }, 2, .now = 1000,
          .ops = { OP(UNDEFINE, 5, NO_DES), OP(DROP_PENDING, 5, NO_DES), OP(SHUTDOWN, 10, 1),
                   OP(MARK_REBOOT, 20, 2), OP(SHUTDOWN, 20, 2), OP(DEFINE, 30, 0),
                   OP(START, 30, 0), OP(UNDEFINE, 40, NO_DES), OP(DROP_PENDING, 40, NO_DES) },
          .n_ops = 9 },
        /* snapshots: odd ids are online, even ones offline */
        { "online snapshot of a running vm: made at once", { DES_S(1, RUN, 0, 0, 1, SNAP(7)) }, 1,
          { OBS_S(1, RUN, 0, 0, 0) }, 1, .now = 1000,
          .ops = { SOP(SNAPSHOT, 1, 0, 7) }, .n_ops = 1 },
        { "offline snapshot of a running vm: shut down first", { DES_S(1, RUN, 0, 0, 1, SNAP(8)) },
          1, { OBS_S(1, RUN, 0, 0, 0) }, 1, .now = 1000,
          .ops = { OP(SHUTDOWN, 1, 0) }, .n_ops = 1 },
        { "offline snapshot, shutting down", { DES_S(1, RUN, 0, 0, 1, SNAP(8)) }, 1,
          { OBS_S(1, RUN, 0, 0, 0) }, 1, { { 1, 5000 } }, 1, .now = 4000 },
        { "offline snapshot, shutdown past its deadline", { DES_S(1, RUN, 0, 0, 1, SNAP(8)) }, 1,
          { OBS_S(1, RUN, 0, 0, 0) }, 1, { { 1, 5000 } }, 1, .now = 5000,
          .ops = { OP(DESTROY, 1, 0), OP(DROP_PENDING, 1, 0) }, .n_ops = 2 },
        { "offline snapshot, stopped: made, then started again",
          { DES_S(1, RUN, 0, 0, 1, SNAP(8)) }, 1, { OBS_S(1, STOP, 0, 0, 0) }, 1, { { 1, 5000 } },
          1, .now = 1000,
          .ops = { SOP(SNAPSHOT, 1, 0, 8), OP(DROP_PENDING, 1, 0), OP(START, 1, 0) }, .n_ops = 3 },
        { "snapshots of a stopped vm that stays stopped",
          { DES_S(1, STOP, 0, 0, 2, SNAP(8), SNAP(9)) }, 1, { OBS_S(1, STOP, 0, 0, 0) }, 1,
          .now = 1000, .ops = { SOP(SNAPSHOT, 1, 0, 8), SOP(SNAPSHOT, 1, 0, 9) }, .n_ops = 2 },
        { "snapshots made already", { DES_S(1, RUN, 0, 0, 2, SNAP(8), SNAP(9)) }, 1,
          { OBS_S(1, RUN, 0, 2, 8, 9) }, 1, .now = 1000 },
        { "snapshots no longer wanted: deleted, the guest left running",
          { DES_S(1, RUN, 0, 0, 1, SNAP(9)) }, 1, { OBS_S(1, RUN, 0, 3, 4, 8, 9) }, 1,
          .now = 1000, .ops = { SOP(SNAP_DELETE, 1, 0, 4), SOP(SNAP_DELETE, 1, 0, 8) }, .n_ops = 2 },
        { "power off at once wins over an offline snapshot's graceful stop",
          { { .vm_id = 1, .power = STOP, .force_off = 1, .snaps = { SNAP(8) }, .n_snaps = 1 } },
          1, { OBS_S(1, RUN, 0, 0, 0) }, 1, .now = 1000, .ops = { OP(DESTROY, 1, 0) }, .n_ops = 1 },
        { "restore of a running vm: power off, restore, start",
          { DES_S(1, RUN, 2, 8, 1, SNAP(8)) }, 1, { OBS_S(1, RUN, 1, 1, 8) }, 1, .now = 1000,
          .ops = { OP(DESTROY, 1, 0), OP(RESTORE, 1, 0), OP(START, 1, 0) }, .n_ops = 3 },
        { "restore of a stopped vm that stays stopped", { DES_S(1, STOP, 1, 8, 1, SNAP(8)) }, 1,
          { OBS_S(1, STOP, 0, 1, 8) }, 1, .now = 1000, .ops = { OP(RESTORE, 1, 0) }, .n_ops = 1 },
        { "restore while a stop is pending", { DES_S(1, RUN, 1, 8, 1, SNAP(8)) }, 1,
          { OBS_S(1, RUN, 0, 1, 8) }, 1, { { 1, 5000 } }, 1, .now = 1000,
          .ops = { OP(DESTROY, 1, 0), OP(DROP_PENDING, 1, 0), OP(RESTORE, 1, 0), OP(START, 1, 0) },
          .n_ops = 4 },
        { "restore done", { DES_S(1, RUN, 1, 8, 1, SNAP(8)) }, 1, { OBS_S(1, RUN, 1, 1, 8) }, 1,
          .now = 1000 },
        { "rebuild wins over a restore", { { .vm_id = 1, .power = RUN, .rebuild_seq = 1,
                                              .restore_seq = 1, .restore_snap = 8 } },
          1, { OBS_S(1, RUN, 0, 1, 8) }, 1, .now = 1000,
          .ops = { OP(REBUILD, 1, 0), OP(START, 1, 0) }, .n_ops = 2 },
};

static void check_case(const struct rc_case *c)
{
        struct rc_op *ops = NULL;
        size_t n = 99;

        assert_int_equal(reconcile_diff(c->des, c->n_des, c->obs, c->n_obs, c->pend, c->n_pend,
                                        c->now, &ops, &n),
                         0);
        assert_non_null(ops);
        int same = n == c->n_ops;
        for (size_t i = 0; same && i < n; i++) {
                const struct want_op *w = &c->ops[i];
                const struct dom_desired *want_des = w->des == NO_DES ? NULL : &c->des[w->des];
                same = ops[i].type == w->type && ops[i].vm_id == w->vm_id &&
                       ops[i].des == want_des && ops[i].snap_id == w->snap;
        }
        if (!same) {
                char got[512] = "", want[512] = "";
                size_t g = 0, k = 0;
                for (size_t i = 0; i < n; i++)
                        g += (size_t)snprintf(got + g, sizeof(got) - g, " %s(%llu,%td,%llu)",
                                              rc_op_to_string(ops[i].type),
                                              (unsigned long long)ops[i].vm_id,
                                              ops[i].des ? ops[i].des - c->des : -1,
                                              (unsigned long long)ops[i].snap_id);
                for (size_t i = 0; i < c->n_ops; i++)
                        k += (size_t)snprintf(want + k, sizeof(want) - k, " %s(%llu,%d,%llu)",
                                              rc_op_to_string(c->ops[i].type),
                                              (unsigned long long)c->ops[i].vm_id,
                                              c->ops[i].des, (unsigned long long)c->ops[i].snap);
                free(ops);
                fail_msg("%s:\n  got: [%s ]\n want: [%s ]", c->name, got, want);
        }
        free(ops);
}

static void test_table(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
                check_case(&cases[i]);
}

/* Duplicates: "the last one wins", and only one define is made however
 * many copies there are. */
static void test_many_duplicates(void **state)
{
        struct dom_desired des[7];
        struct rc_op *ops;
        size_t n;
        (void)state;

        for (size_t i = 0; i < 7; i++)
                des[i] = (struct dom_desired)DES(i % 2 ? 8 : 3, RUN, 0, 0);
        assert_int_equal(reconcile_diff(des, 7, NULL, 0, NULL, 0, 0, &ops, &n), 0);
        assert_int_equal(n, 4);
        assert_int_equal(ops[0].type, RC_DEFINE);
        assert_int_equal(ops[0].vm_id, 3);
        assert_ptr_equal(ops[0].des, &des[6]);
        assert_int_equal(ops[1].type, RC_START);
        assert_ptr_equal(ops[1].des, ops[0].des);
        assert_int_equal(ops[2].type, RC_DEFINE);
        assert_int_equal(ops[2].vm_id, 8);
        assert_ptr_equal(ops[2].des, &des[5]);
        assert_int_equal(ops[3].type, RC_START);
        for (size_t i = 0; i < n; i++) {
                assert_true(ops[i].des >= des && ops[i].des < des + 7);
                assert_int_equal(ops[i].des->vm_id, ops[i].vm_id);
        }
        free(ops);
}

/* Counts the ops of a type for a vm. */
static size_t count_ops(const struct rc_op *ops, size_t n, enum rc_op_type t, uint64_t vm_id)
{
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
                k += ops[i].type == t && ops[i].vm_id == vm_id;
        return k;
}

/* A graceful stop is pending for vm 1, and its domain has vanished (an
 * operator undefined it) while the broker still wants it running. The
 * domain is defined and started again; the stop of the old domain is over
 * and must be dropped with it. Otherwise the next diff sees the new domain
 * running with a pending stop past its deadline and powers it off (destroy)
 * for nothing, as the second diff below shows. */
static void test_pending_of_vanished_domain_redefined(void **state)
{
        const struct dom_desired des = DES(1, RUN, 1, 0);
        const struct rc_pending pend = { 1, 500 };
        struct rc_op *ops;
        size_t n;
        (void)state;

        assert_int_equal(reconcile_diff(&des, 1, NULL, 0, &pend, 1, 1000, &ops, &n), 0);
        assert_int_equal(count_ops(ops, n, RC_DEFINE, 1), 1);
        assert_int_equal(count_ops(ops, n, RC_START, 1), 1);
        size_t drops = count_ops(ops, n, RC_DROP_PENDING, 1);
        free(ops);

        /* What the agent sees next if the entry was not dropped. */
        const struct hv_domain obs = OBS(1, RUN, 1, 0);
        assert_int_equal(reconcile_diff(&des, 1, &obs, 1, &pend, 1, 1001, &ops, &n), 0);
        size_t destroys = count_ops(ops, n, RC_DESTROY, 1);
        free(ops);
        if (drops != 1)
                fail_msg("vm 1 redefined with a stale pending stop: %zu drop-pending ops, want 1 "
                         "(the next diff then destroys the new, running domain: %zu destroy)",
                         drops, destroys);
}

/* A pending stop of a vm neither desired nor on the host any more is over:
 * nothing else would ever drop it from the agent's bounded pending list. */
static void test_pending_of_vanished_domain_forgotten(void **state)
{
        const struct dom_desired des = DES(2, RUN, 0, 0);
        const struct hv_domain obs = OBS(2, RUN, 0, 0);
        const struct rc_pending pend[] = { { 1, 100 }, { 3, 100 } };
        struct rc_op *ops;
        size_t n;
        (void)state;

        assert_int_equal(reconcile_diff(&des, 1, &obs, 1, pend, 2, 1000, &ops, &n), 0);
        size_t d1 = count_ops(ops, n, RC_DROP_PENDING, 1);
        size_t d3 = count_ops(ops, n, RC_DROP_PENDING, 3);
        size_t total = n;
        free(ops);
        if (d1 != 1 || d3 != 1 || total != 2)
                fail_msg("stale pending entries of vms 1 and 3: %zu ops (%zu, %zu drop-pending), "
                         "want exactly one drop-pending each",
                         total, d1, d3);
}

/* Resize, rescue and power off: the orchestration, step by step. */
static void expect_ops(const struct dom_desired *d, const struct hv_domain *h,
                       const struct rc_pending *p, int64_t now, const enum rc_op_type *want,
                       size_t n_want, const char *what)
{
        struct rc_op *ops;
        size_t n;
        assert_int_equal(reconcile_diff(d, 1, h, 1, p, p ? 1 : 0, now, &ops, &n), 0);
        int same = n == n_want;
        for (size_t i = 0; same && i < n; i++)
                same = ops[i].type == want[i] && ops[i].vm_id == d->vm_id;
        if (!same) {
                char got[256] = "";
                for (size_t i = 0; i < n; i++)
                        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s ",
                                 rc_op_to_string(ops[i].type));
                free(ops);
                fail_msg("%s: got [%s]", what, got);
        }
        free(ops);
}

static void test_resize_rescue_poweroff(void **state)
{
        struct dom_desired d = DES(4, RUN, 0, 0);
        struct hv_domain h = OBS(4, RUN, 0, 0);
        const struct rc_pending pend = { 4, 5000 };
        (void)state;

        d.resize_seq = 1;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_SHUTDOWN }, 1,
                   "resize of a running guest: graceful stop first");
        expect_ops(&d, &h, &pend, 1000, NULL, 0, "resize: still stopping");
        expect_ops(&d, &h, &pend, 6000, (enum rc_op_type[]){ RC_DESTROY, RC_DROP_PENDING }, 2,
                   "resize: the stop timed out");
        h.state = POWER_STOPPED;
        expect_ops(&d, &h, &pend, 1000,
                   (enum rc_op_type[]){ RC_DROP_PENDING, RC_REDEFINE, RC_START }, 3,
                   "resize: stopped, pending over: redefine and start");
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_REDEFINE, RC_START }, 2,
                   "resize: stopped: redefine and start");
        d.power = POWER_STOPPED;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_REDEFINE }, 1,
                   "resize of a stopped guest: redefine, stays stopped");
        h.resize_done = 1;
        expect_ops(&d, &h, NULL, 1000, NULL, 0, "resize done: nothing");

        /* rescue: a mode, switched both ways */
        d.power = POWER_RUNNING;
        h.state = POWER_RUNNING;
        d.rescue = 1;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_SHUTDOWN }, 1,
                   "rescue of a running guest: stop first");
        h.state = POWER_STOPPED;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_REDEFINE, RC_START }, 2,
                   "rescue: redefine into the rescue system and start");
        h.rescue = 1;
        h.state = POWER_RUNNING;
        expect_ops(&d, &h, NULL, 1000, NULL, 0, "in rescue: nothing");
        d.rescue = 0;
        d.force_off = 0;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_SHUTDOWN }, 1,
                   "unrescue: stop first");

        /* poweroff: at once, also over a graceful stop in flight */
        d.rescue = 0;
        h.rescue = 0;
        d.power = POWER_STOPPED;
        d.force_off = 1;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_DESTROY }, 1,
                   "poweroff of a running guest: destroy");
        expect_ops(&d, &h, &pend, 1000, (enum rc_op_type[]){ RC_DESTROY, RC_DROP_PENDING }, 2,
                   "poweroff during a graceful stop: destroy now");
        h.state = POWER_STOPPED;
        expect_ops(&d, &h, NULL, 1000, NULL, 0, "powered off: nothing");
        /* a resize with poweroff: no graceful stop either */
        h.state = POWER_RUNNING;
        d.resize_seq = 2;
        expect_ops(&d, &h, NULL, 1000, (enum rc_op_type[]){ RC_DESTROY }, 1,
                   "resize after poweroff: destroy, not shutdown");
}

static void test_op_names(void **state)
{
        static const char *const names[] = { "define",  "start",       "shutdown",
                                             "destroy", "undefine",    "mark-reboot",
                                             "rebuild", "drop-pending", "redefine",
                                             "snapshot", "snapshot-delete", "restore",
                                             "nic-attach" };
        _Static_assert(sizeof(names) / sizeof(names[0]) == RC__MAX, "every op named");
        (void)state;
        for (int t = 0; t < RC__MAX; t++)
                assert_string_equal(rc_op_to_string((enum rc_op_type)t), names[t]);
        assert_string_equal(rc_op_to_string(RC__MAX), "?");
}

/* ---- 1,000 vms in random order, against a model written here ---- */

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint64_t rng(void)
{
        uint64_t x = rng_state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return rng_state = x;
}

/* What one vm needs, written out from the rules in reconcile.h. */
static size_t model(const struct dom_desired *d, const struct hv_domain *h,
                    const struct rc_pending *p, int64_t now, enum rc_op_type out[3])
{
        size_t n = 0;
        int active = h && (h->state == POWER_RUNNING || h->state == POWER_PAUSED);
        if (!h) {
                out[n++] = RC_DEFINE;
                if (d->power == POWER_RUNNING)
                        out[n++] = RC_START;
                return n;
        }
        if (!d) {
                out[n++] = RC_UNDEFINE;
                if (p)
                        out[n++] = RC_DROP_PENDING;
                return n;
        }
        if (d->rebuild_seq > h->rebuild_done) {
                out[n++] = RC_REBUILD;
                if (p)
                        out[n++] = RC_DROP_PENDING;
                if (d->power == POWER_RUNNING)
                        out[n++] = RC_START;
                return n;
        }
        if (d->reboot_seq > h->reboot_done) {
                out[n++] = RC_MARK_REBOOT;
                if (active && d->power == POWER_RUNNING && !p) {
                        out[n++] = RC_SHUTDOWN;
                        return n;
                }
        }
        if (p && active && now < p->deadline_ms)
                return n;
        if (p && active) {
                out[n++] = RC_DESTROY;
                out[n++] = RC_DROP_PENDING;
                return n;
        }
        if (p)
                out[n++] = RC_DROP_PENDING;
        if (d->power == POWER_RUNNING && !active)
                out[n++] = RC_START;
        else if (d->power == POWER_STOPPED && h->state == POWER_CRASHED)
                out[n++] = RC_DESTROY;
        else if (d->power == POWER_STOPPED && active && !p)
                out[n++] = RC_SHUTDOWN;
        return n;
}

static void test_thousand_random(void **state)
{
        enum { N = 1000 };
        static const enum power states[] = { POWER_RUNNING, POWER_STOPPED, POWER_PAUSED,
                                             POWER_CRASHED };
        struct dom_desired *des = calloc(N, sizeof(*des));
        struct hv_domain *obs = calloc(N, sizeof(*obs));
        struct rc_pending *pend = calloc(N, sizeof(*pend));
        const struct dom_desired **by_id = calloc(N + 1, sizeof(*by_id));
        size_t n_des = 0, n_obs = 0, n_pend = 0;
        const int64_t now = 50000;
        (void)state;

        assert_true(des && obs && pend && by_id);
        /* vm ids 1..N: each desired, observed, or both, in every state. */
        for (uint64_t id = 1; id <= N; id++) {
                unsigned where = (unsigned)(rng() % 4); /* 0: des, 1: obs, 2-3: both */
                if (where != 1) {
                        struct dom_desired *d = &des[n_des++];
                        d->vm_id = id;
                        d->power = rng() % 2 ? POWER_RUNNING : POWER_STOPPED;
                        d->reboot_seq = rng() % 3;
                        d->rebuild_seq = rng() % 3;
                        snprintf(d->hostname, sizeof(d->hostname), "vm%llu",
                                 (unsigned long long)id);
                }
                if (where != 0) {
                        struct hv_domain *h = &obs[n_obs++];
                        h->vm_id = id;
                        h->state = states[rng() % 4];
                        h->reboot_done = rng() % 3;
                        h->rebuild_done = rng() % 3;
                }
                if (where != 0 && rng() % 3 == 0) {
                        pend[n_pend].vm_id = id;
                        pend[n_pend].deadline_ms = rng() % 2 ? now - 1 : now + 1;
                        n_pend++;
                }
        }
        /* Shuffle the desired array (Fisher-Yates); observed and pending
         * stay sorted, as the contract wants. */
        for (size_t i = n_des - 1; i > 0; i--) {
                size_t j = rng() % (i + 1);
                struct dom_desired t = des[i];
                des[i] = des[j];
                des[j] = t;
        }
        for (size_t i = 0; i < n_des; i++)
                by_id[des[i].vm_id] = &des[i];

        struct rc_op *ops;
        size_t n_ops;
        assert_int_equal(reconcile_diff(des, n_des, obs, n_obs, pend, n_pend, now, &ops, &n_ops),
                         0);

        /* Walk ids in order: the ops of each vm are contiguous, in id order,
         * and equal to the model's. */
        size_t k = 0, j_obs = 0, j_pend = 0;
        for (uint64_t id = 1; id <= N; id++) {
                const struct dom_desired *d = by_id[id];
                const struct hv_domain *h = NULL;
                const struct rc_pending *p = NULL;
                enum rc_op_type want[3];
                if (j_obs < n_obs && obs[j_obs].vm_id == id)
                        h = &obs[j_obs++];
                if (j_pend < n_pend && pend[j_pend].vm_id == id)
                        p = &pend[j_pend++];
                size_t nw = model(d, h, p, now, want);
                for (size_t w = 0; w < nw; w++, k++) {
                        if (k >= n_ops)
                                fail_msg("vm %llu: ops end early", (unsigned long long)id);
                        if (ops[k].vm_id != id || ops[k].type != want[w])
                                fail_msg("vm %llu op %zu: got %s of vm %llu, want %s",
                                         (unsigned long long)id, w,
                                         rc_op_to_string(ops[k].type),
                                         (unsigned long long)ops[k].vm_id,
                                         rc_op_to_string(want[w]));
                        assert_ptr_equal(ops[k].des, d);
                }
        }
        assert_int_equal(k, n_ops);
        free(ops);
        free(by_id);
        free(pend);
        free(obs);
        free(des);
}

/* A NIC in the desired state that the domain lacks is attached (MACs
 * compared without case); nothing when the domain's NICs are not known,
 * and nothing when they are all there. */
static void test_nic_attach(void **state)
{
        struct dom_desired d = { .vm_id = 7, .power = POWER_RUNNING, .n_nics = 2 };
        struct hv_domain h = { .vm_id = 7, .state = POWER_RUNNING, .nics_known = 1, .n_nics = 1 };
        struct rc_op *ops = NULL;
        size_t n = 0;
        (void)state;
        snprintf(d.nics[0].mac, sizeof(d.nics[0].mac), "52:54:00:AA:00:01");
        snprintf(d.nics[1].mac, sizeof(d.nics[1].mac), "52:54:00:aa:00:02");
        snprintf(h.nic_macs[0], sizeof(h.nic_macs[0]), "52:54:00:aa:00:01");
        assert_int_equal(reconcile_diff(&d, 1, &h, 1, NULL, 0, 1000, &ops, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ops[0].type, RC_NIC_ATTACH);
        assert_int_equal(ops[0].vm_id, 7);
        assert_int_equal(ops[0].nic, 1);
        assert_ptr_equal(ops[0].des, &d);
        free(ops);
        /* stopped and meant to be: still attached (to the definition) */
        d.power = POWER_STOPPED;
        h.state = POWER_STOPPED;
        assert_int_equal(reconcile_diff(&d, 1, &h, 1, NULL, 0, 1000, &ops, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ops[0].type, RC_NIC_ATTACH);
        free(ops);
        h.nics_known = 0;
        assert_int_equal(reconcile_diff(&d, 1, &h, 1, NULL, 0, 1000, &ops, &n), 0);
        assert_int_equal(n, 0);
        free(ops);
        h.nics_known = 1;
        h.n_nics = 2;
        snprintf(h.nic_macs[1], sizeof(h.nic_macs[1]), "52:54:00:aa:00:02");
        assert_int_equal(reconcile_diff(&d, 1, &h, 1, NULL, 0, 1000, &ops, &n), 0);
        assert_int_equal(n, 0);
        free(ops);
        /* both missing, and a start after them */
        d.power = POWER_RUNNING;
        h.n_nics = 0;
        assert_int_equal(reconcile_diff(&d, 1, &h, 1, NULL, 0, 1000, &ops, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(ops[0].type, RC_NIC_ATTACH);
        assert_int_equal(ops[0].nic, 0);
        assert_int_equal(ops[1].type, RC_NIC_ATTACH);
        assert_int_equal(ops[1].nic, 1);
        assert_int_equal(ops[2].type, RC_START);
        free(ops);
}

static void test_empty_inputs(void **state)
{
        struct rc_op *ops = NULL;
        size_t n = 99;
        (void)state;
        assert_int_equal(reconcile_diff(NULL, 0, NULL, 0, NULL, 0, 0, &ops, &n), 0);
        assert_non_null(ops);
        assert_int_equal(n, 0);
        free(ops);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_table),
                cmocka_unit_test(test_many_duplicates),
                cmocka_unit_test(test_op_names),
                cmocka_unit_test(test_resize_rescue_poweroff),
                cmocka_unit_test(test_pending_of_vanished_domain_redefined),
                cmocka_unit_test(test_pending_of_vanished_domain_forgotten),
                cmocka_unit_test(test_thousand_random),
                cmocka_unit_test(test_empty_inputs),
                cmocka_unit_test(test_nic_attach),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
