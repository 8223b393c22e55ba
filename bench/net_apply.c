/* bench/net_apply: the private networks of a busy host made by net_apply()
 * beside the same state made by iproute2 in batch mode, in the same run.
 *
 *   net_apply [--networks N] [--remotes R] [--macs M] [--runs N]
 *
 * Defaults: 1,000 networks, each with 5 remote hosts and 45 remote guest
 * MACs: 50,000 FDB entries. Each side runs in a network namespace of its
 * own, made here (so: as root), with the local underlay address on a dummy
 * device (on lo where the kernel has no dummy driver). Both namespaces are
 * kept until the end of a run, so that tearing one down does not slow the
 * other, and the next run waits until the kernel has torn them down. The
 * side that runs first in a fresh kernel state is slower: runs alternate
 * which side goes first (default 2 runs), and the ratio is of the sums.
 *
 * iproute2 gets the same requests ours sends, written to two files: per
 * network `ip link add` of the bridge (down), `ip link set` of its alias
 * and addrgenmode, `ip link set up`, the same for the VXLAN device (made
 * with its master), then one `bridge fdb append|add ... self permanent`
 * per entry; timed as `ip -batch` plus `bridge -batch`. net_apply() is then
 * run on iproute2's namespace too: it must find nothing to do, which shows
 * the two states are the same.
 *
 * Prints the apply time, iproute2's, their ratio (target: at most 0.5), the
 * time of a no-op re-apply right after (it dumps links and FDB: target
 * under 50 ms), and of the next no-op ones (no notification said anything
 * of ours changed: no dump).
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "net.h"
#include "util.h"

#define LOCAL "10.0.0.1"
#define HOSTS 200u /* remote hosts in the site */

static size_t n_nets = 1000, n_rem = 5, n_macs = 45;

struct state {
        struct net_desired *nets;
        char (*remotes)[TMSG_IP];
        struct fdb_desired *fdb;
        size_t n_remotes, n_fdb;
};

static void host_ip(size_t h, char out[TMSG_IP])
{
        snprintf(out, TMSG_IP, "10.1.%zu.%zu", h / 250, h % 250 + 1);
}

static void build(struct state *s)
{
        s->nets = calloc(n_nets, sizeof(*s->nets));
        s->remotes = calloc(n_nets * n_rem, sizeof(*s->remotes));
        s->fdb = calloc(n_nets * n_macs, sizeof(*s->fdb));
        if (!s->nets || !s->remotes || !s->fdb) {
                fprintf(stderr, "net_apply: out of memory\n");
                exit(1);
        }
        size_t g = 0;
        for (size_t i = 0; i < n_nets; i++) {
                struct net_desired *d = &s->nets[i];
                d->vni = (uint32_t)(1000 + i);
                d->first_remote = s->n_remotes;
                d->n_remotes = n_rem;
                d->first_fdb = s->n_fdb;
                d->n_fdb = n_macs;
                for (size_t k = 0; k < n_rem; k++)
                        host_ip((i * 7 + k * 13) % HOSTS, s->remotes[s->n_remotes++]);
                for (size_t k = 0; k < n_macs; k++, g++) {
                        struct fdb_desired *f = &s->fdb[s->n_fdb++];
                        snprintf(f->mac, TMSG_MAC, "52:54:%02zx:%02zx:%02zx:%02zx", (g >> 24) & 255,
                                 (g >> 16) & 255, (g >> 8) & 255, g & 255);
                        memcpy(f->host, s->remotes[d->first_remote + k % n_rem], TMSG_IP);
                }
        }
}

static int run(const char *const argv[])
{
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                execvp(argv[0], (char *const *)argv);
                _exit(127);
        }
        int st;
        if (waitpid(pid, &st, 0) < 0)
                return -errno;
        return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static int sh(const char *cmd)
{
        return run((const char *const[]){ "sh", "-c", cmd, NULL });
}

/* Waits until the kernel has torn down the namespaces of an earlier run
 * (which holds the RTNL lock for seconds per thousand devices): until a
 * bridge made in a throwaway namespace takes under 100 ms, three times. */
static void settle(const char *why)
{
        int64_t t0 = util_mono_us();
        int good = 0, said = 0;
        while (good < 3 && util_mono_us() - t0 < 300 * 1000000LL) {
                int64_t a = util_mono_us();
                pid_t pid = fork();
                if (pid == 0) {
                        if (unshare(CLONE_NEWNET) < 0)
                                _exit(1);
                        execlp("ip", "ip", "link", "add", "probe0", "type", "bridge", (char *)NULL);
                        _exit(127);
                }
                int st;
                if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                        fprintf(stderr, "net_apply: cannot make a throwaway namespace\n");
                        exit(1);
                }
                if (util_mono_us() - a < 100000) {
                        good++;
                        continue;
                }
                good = 0;
                if (!said++) {
                        printf("  (waiting for the kernel to tear down %s)\n", why);
                        fflush(stdout);
                }
                usleep(500000);
        }
        if (said)
                printf("  (waited %.1f s)\n", (double)(util_mono_us() - t0) / 1e6);
}

/* A fresh namespace with the underlay; the one before is kept alive by *keep. */
static void fresh_ns(int *keep)
{
        *keep = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        if (unshare(CLONE_NEWNET) < 0) {
                fprintf(stderr, "net_apply: cannot make a network namespace (run as root): %s\n",
                        strerror(errno));
                exit(1);
        }
        static int said;
        if (sh("ip link set lo up") < 0) {
                fprintf(stderr, "net_apply: cannot run ip\n");
                exit(1);
        }
        if (sh("ip link add ul0 type dummy 2>/dev/null && ip addr add " LOCAL
               "/24 dev ul0 && ip link set ul0 up") == 0)
                return;
        if (!said++)
                printf("  (no dummy driver in this kernel: the underlay address is on lo)\n");
        if (sh("ip addr add " LOCAL "/32 dev lo") < 0) {
                fprintf(stderr, "net_apply: cannot set the underlay address\n");
                exit(1);
        }
}

static double apply(struct net *n, const struct state *s, struct net_stats *st)
{
        const struct net_config cfg = { .local_ip = LOCAL };
        int64_t t0 = util_mono_us();
        int r = net_apply(n, &cfg, s->nets, n_nets, (const char(*)[TMSG_IP])s->remotes,
                          s->n_remotes, s->fdb, s->n_fdb, st);
        double ms = (double)(util_mono_us() - t0) / 1000.0;
        if (r < 0) {
                fprintf(stderr, "net_apply: apply failed: %s\n", strerror(-r));
                exit(1);
        }
        return ms;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

/* The no-op applies: the first after the changes dumps; the next ones diff
 * against the kept dump while no notification says something changed. */
static void agent_side(const struct state *s, double *ret_apply, double *ret_noop,
                       double *ret_kept)
{
        struct net *n;
        if (net_open(&n) < 0)
                exit(1);
        struct net_stats st;
        *ret_apply = apply(n, s, &st);
        printf("  agent apply:    %8.1f ms  (links +%zu, FDB +%zu, resynced %d)\n", *ret_apply,
               st.links_added, st.fdb_added, st.resynced);
        if (st.links_added != 2 * n_nets || st.fdb_added != s->n_remotes + s->n_fdb) {
                fprintf(stderr, "net_apply: the apply did not make everything\n");
                exit(1);
        }
        double noop[7];
        for (size_t i = 0; i < 7; i++) {
                noop[i] = apply(n, s, &st);
                if (st.links_added + st.links_changed + st.links_removed + st.fdb_added +
                    st.fdb_removed) {
                        fprintf(stderr, "net_apply: a re-apply changed something\n");
                        exit(1);
                }
                if (st.dumped != (i == 0))
                        printf("  (no-op %zu %s)\n", i, st.dumped ? "dumped" : "did not dump");
        }
        *ret_noop = noop[0];
        qsort(noop + 1, 6, sizeof(noop[0]), cmp_double);
        *ret_kept = (noop[3] + noop[4]) / 2;
        net_free(n);
}

static void iproute2_side(const struct state *s, const char *dir, double *ret_ms)
{
        char links[512], fdb[512];
        snprintf(links, sizeof(links), "%s/links.batch", dir);
        snprintf(fdb, sizeof(fdb), "%s/fdb.batch", dir);
        FILE *l = fopen(links, "w"), *f = fopen(fdb, "w");
        if (!l || !f) {
                fprintf(stderr, "net_apply: cannot write the batch files in %s\n", dir);
                exit(1);
        }
        for (size_t i = 0; i < n_nets; i++) {
                const struct net_desired *d = &s->nets[i];
                unsigned v = d->vni, mtu = d->mtu ? d->mtu : NET_MTU_DEFAULT;
                fprintf(l,
                        "link add tbr%u mtu %u type bridge\n"
                        "link set tbr%u alias %s addrgenmode none\n"
                        "link set tbr%u up\n"
                        "link add tvx%u mtu %u master tbr%u type vxlan id %u local %s "
                        "dstport %d nolearning\n"
                        "link set tvx%u alias %s addrgenmode none\n"
                        "link set tvx%u up\n",
                        v, mtu, v, NET_MARKER, v, v, mtu, v, v, LOCAL,
                        NET_VXLAN_PORT, v, NET_MARKER, v);
                for (size_t k = 0; k < d->n_remotes; k++)
                        fprintf(f, "fdb append 00:00:00:00:00:00 dev tvx%u dst %s self permanent\n",
                                v, s->remotes[d->first_remote + k]);
                for (size_t k = 0; k < d->n_fdb; k++) {
                        const struct fdb_desired *e = &s->fdb[d->first_fdb + k];
                        fprintf(f, "fdb add %s dev tvx%u dst %s self permanent\n", e->mac, v,
                                e->host);
                }
        }
        if (fclose(l) || fclose(f)) {
                fprintf(stderr, "net_apply: cannot write the batch files\n");
                exit(1);
        }
        int64_t t0 = util_mono_us();
        if (run((const char *const[]){ "ip", "-batch", links, NULL }) < 0) {
                fprintf(stderr, "net_apply: ip -batch failed\n");
                exit(1);
        }
        int64_t t1 = util_mono_us();
        if (run((const char *const[]){ "bridge", "-batch", fdb, NULL }) < 0) {
                fprintf(stderr, "net_apply: bridge -batch failed\n");
                exit(1);
        }
        int64_t t2 = util_mono_us();
        *ret_ms = (double)(t2 - t0) / 1000.0;
        printf("  iproute2 batch: %8.1f ms  (ip -batch %.1f ms, bridge -batch %.1f ms)\n", *ret_ms,
               (double)(t1 - t0) / 1000.0, (double)(t2 - t1) / 1000.0);

        /* The same state as ours: a net_apply() finds nothing to do. */
        struct net *n;
        if (net_open(&n) < 0)
                exit(1);
        struct net_stats st;
        double ms = apply(n, s, &st);
        if (st.links_added + st.links_changed + st.links_removed + st.fdb_added +
            st.fdb_removed) {
                fprintf(stderr,
                        "net_apply: iproute2's state differs from ours: links +%zu ~%zu -%zu, "
                        "FDB +%zu -%zu\n",
                        st.links_added, st.links_changed, st.links_removed, st.fdb_added,
                        st.fdb_removed);
                exit(1);
        }
        printf("  (net_apply on iproute2's state: nothing to do, %.1f ms)\n", ms);
        net_free(n);
}

/* One run: both sides, each in a fresh namespace, in the given order;
 * the namespaces go at the end, and the kernel is let finish with them. */
static void one_run(const struct state *s, const char *dir, int iproute2_first, double *ret_agent,
                    double *ret_ipr, double *ret_noop, double *ret_kept)
{
        int first = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
        int keep[2];
        for (int side = 0; side < 2; side++) {
                fresh_ns(&keep[side]);
                if ((side == 0) != iproute2_first)
                        agent_side(s, ret_agent, ret_noop, ret_kept);
                else
                        iproute2_side(s, dir, ret_ipr);
        }
        if (setns(first, CLONE_NEWNET) < 0) {
                fprintf(stderr, "net_apply: cannot go back to the first namespace\n");
                exit(1);
        }
        close(first);
        close(keep[0]);
        close(keep[1]);
        settle("the bench's namespaces");
}

int main(int argc, char **argv)
{
        int runs = 2;
        for (int i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--networks") && i + 1 < argc)
                        n_nets = (size_t)atol(argv[++i]);
                else if (!strcmp(argv[i], "--remotes") && i + 1 < argc)
                        n_rem = (size_t)atol(argv[++i]);
                else if (!strcmp(argv[i], "--macs") && i + 1 < argc)
                        n_macs = (size_t)atol(argv[++i]);
                else if (!strcmp(argv[i], "--runs") && i + 1 < argc)
                        runs = atoi(argv[++i]);
                else {
                        fprintf(stderr, "usage: net_apply [--networks N] [--remotes R] "
                                        "[--macs M] [--runs N]\n");
                        return 2;
                }
        }
        if (n_nets < 1 || n_nets > TMSG_MAX_NETWORKS || n_rem > HOSTS ||
            n_nets * n_rem > TMSG_MAX_REMOTES || n_nets * n_macs > TMSG_MAX_FDB || runs < 1 ||
            runs > 20) {
                fprintf(stderr, "net_apply: at most %u networks, %u remotes, %u MACs in all, "
                                "1 to 20 runs\n",
                        TMSG_MAX_NETWORKS, TMSG_MAX_REMOTES, TMSG_MAX_FDB);
                return 2;
        }
        log_set_level(LOG_LEVEL_WARN);
        struct state s = { 0 };
        build(&s);
        char dir[] = "/tmp/tasman-bench-net.XXXXXX";
        if (!mkdtemp(dir)) {
                fprintf(stderr, "net_apply: cannot make a temporary directory\n");
                return 1;
        }
        printf("net_apply: %zu networks, %zu FDB entries (%zu remote hosts + %zu guest MACs "
               "each), fresh namespaces, %d runs (every other one iproute2 first)\n",
               n_nets, s.n_remotes + s.n_fdb, n_rem, n_macs, runs);
        settle("earlier network namespaces");
        double sum_agent = 0, sum_ipr = 0, noop[20], kept[20];
        for (int i = 0; i < runs; i++) {
                double agent = 0, ipr = 1;
                printf(" run %d%s:\n", i + 1, i % 2 ? " (iproute2 first)" : "");
                one_run(&s, dir, i % 2, &agent, &ipr, &noop[i], &kept[i]);
                printf("  ratio: %.2f\n", agent / ipr);
                sum_agent += agent;
                sum_ipr += ipr;
        }
        qsort(noop, (size_t)runs, sizeof(double), cmp_double);
        qsort(kept, (size_t)runs, sizeof(double), cmp_double);
        printf("agent apply %.1f ms, iproute2 %.1f ms (means of %d runs)\n", sum_agent / runs,
               sum_ipr / runs, runs);
        printf("ratio agent / iproute2: %.2f  (of the sums; target: at most 0.5)\n",
               sum_agent / sum_ipr);
        printf("no-op re-apply: %.1f ms  (median; dump and diff; target: under 50 ms)\n",
               noop[runs / 2]);
        printf("no-op re-apply, nothing changed since: %.1f ms  (median; diff against the kept "
               "dump)\n",
               kept[runs / 2]);
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        sh(cmd);
        free(s.nets);
        free(s.remotes);
        free(s.fdb);
        return 0;
}
