/* net.c against the real kernel: every test runs in a network namespace of
 * its own, made in its setup (unshare), with real bridges, VXLAN devices
 * and FDB entries. What net_apply() made is read back with iproute2 (`ip`,
 * `bridge`), not with net.c's own dump, and compared exactly.
 *
 * The runner runs as root; without root or namespaces every test fails,
 * loudly: a skipped network test would pass a broken build. The kernel
 * here may lack the dummy driver, so uplinks are veth devices. */
#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "net.h"

/* ---- the namespace and the shell ---- */

static int setup_ns(void **state)
{
        if (geteuid() != 0)
                fail_msg("test_net must run as root (it makes network namespaces)");
        if (unshare(CLONE_NEWNET) < 0)
                fail_msg("cannot make a network namespace: %s", strerror(errno));
        if (system("ip link set lo up") != 0)
                fail_msg("cannot run ip (iproute2) in the new namespace");
        struct net *n = NULL;
        assert_int_equal(net_open(&n), 0);
        *state = n;
        return 0;
}

static int teardown_ns(void **state)
{
        net_free(*state);
        return 0;
}

__attribute__((format(printf, 1, 2))) static void sh(const char *fmt, ...)
{
        char cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        int r = system(cmd);
        if (r != 0)
                fail_msg("`%s` failed (%d)", cmd, r);
}

/* The whole output of a command (malloc'd). */
__attribute__((format(printf, 1, 2))) static char *out(const char *fmt, ...)
{
        char cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        FILE *f = popen(cmd, "r");
        if (!f)
                fail_msg("cannot run `%s`", cmd);
        size_t len = 0, cap = 4096;
        char *buf = malloc(cap);
        size_t k;
        while ((k = fread(buf + len, 1, cap - len - 1, f)) > 0) {
                len += k;
                if (cap - len < 2)
                        buf = realloc(buf, cap *= 2);
        }
        buf[len] = '\0';
        pclose(f);
        return buf;
}

/* Links and FDB, without what the kernel changes later on its own (the
 * operational state and carrier, set by the link watch up to a second
 * after a change, and the bridges' timers). */
static char *snapshot(const char *what)
{
        return out("{ %s; } | sed -e 's/ state [A-Z]*//' -e 's/,\\?LOWER_UP//' -e 's/NO-CARRIER,\\?//' "
                   "-e 's/timer *[0-9.]*//g'",
                   what);
}

static const char links_fdb[] = "ip -o link show; bridge fdb show";

static int exists(const char *dev)
{
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "ip link show dev %s >/dev/null 2>&1", dev);
        return system(cmd) == 0;
}

/* `ip -d -o link show dev` must hold every one of the words (NULL ended). */
static void link_has(const char *dev, ...)
{
        char *s = out("ip -d -o link show dev %s", dev);
        va_list ap;
        va_start(ap, dev);
        for (const char *w; (w = va_arg(ap, const char *));)
                if (!strstr(s, w))
                        fail_msg("%s: no \"%s\" in: %s", dev, w, s);
        va_end(ap);
        free(s);
}

static void link_lacks(const char *dev, const char *word)
{
        char *s = out("ip -d -o link show dev %s", dev);
        if (strstr(s, word))
                fail_msg("%s: \"%s\" in: %s", dev, word, s);
        free(s);
}

static int line_cmp(const void *a, const void *b)
{
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The device's own ("self") FDB entries, sorted, one per line, must be
 * exactly want (lines "MAC dst IP", sorted, '\n' after each). */
static void fdb_is(const char *dev, const char *want)
{
        char *s = out("bridge fdb show dev %s | grep ' self' | sed 's/ self.*//'", dev);
        char *lines[512];
        size_t n = 0;
        for (char *save = NULL, *l = strtok_r(s, "\n", &save); l && n < 512;
             l = strtok_r(NULL, "\n", &save))
                lines[n++] = l;
        qsort(lines, n, sizeof(lines[0]), line_cmp);
        char got[16384] = "";
        for (size_t i = 0; i < n; i++) {
                strncat(got, lines[i], sizeof(got) - strlen(got) - 2);
                strcat(got, "\n");
        }
        if (strcmp(got, want) != 0)
                fail_msg("%s FDB:\n%s-- want:\n%s", dev, got, want);
        free(s);
}

/* "self permanent" on every entry of the device. */
static void fdb_all_permanent(const char *dev)
{
        char *s = out("bridge fdb show dev %s | grep ' self' | grep -vc ' self permanent$'", dev);
        if (atoi(s) != 0)
                fail_msg("%s: %d entries not \"self permanent\"", dev, atoi(s));
        free(s);
}

/* ---- desired states ---- */

struct desired {
        struct net_desired nets[16];
        size_t n_nets;
        char remotes[128][TMSG_IP];
        size_t n_remotes;
        struct fdb_desired fdb[128];
        size_t n_fdb;
};

/* A network: its remote hosts (NULL ended), then MAC, host pairs (NULL ended). */
static void d_net(struct desired *d, uint32_t vni, uint32_t mtu, const char *const *remotes,
                  const char *const *macs)
{
        struct net_desired *w = &d->nets[d->n_nets++];
        memset(w, 0, sizeof(*w));
        w->vni = vni;
        w->mtu = mtu;
        w->first_remote = d->n_remotes;
        w->first_fdb = d->n_fdb;
        for (size_t i = 0; remotes && remotes[i]; i++) {
                snprintf(d->remotes[d->n_remotes++], TMSG_IP, "%s", remotes[i]);
                w->n_remotes++;
        }
        for (size_t i = 0; macs && macs[i]; i += 2) {
                struct fdb_desired *f = &d->fdb[d->n_fdb++];
                snprintf(f->mac, TMSG_MAC, "%s", macs[i]);
                snprintf(f->host, TMSG_IP, "%s", macs[i + 1]);
                w->n_fdb++;
        }
}

#define LIST(...) ((const char *const[]){ __VA_ARGS__, NULL })

static const struct net_config cfg4 = { .local_ip = "10.0.0.1" };

static int apply(struct net *n, const struct net_config *cfg, const struct desired *d,
                 struct net_stats *st)
{
        return net_apply(n, cfg, d->nets, d->n_nets, d->remotes, d->n_remotes, d->fdb, d->n_fdb,
                         st);
}

static void stats_are(const struct net_stats *st, size_t added, size_t changed, size_t removed,
                      size_t fdb_added, size_t fdb_removed, int resynced)
{
        if (st->links_added != added || st->links_changed != changed ||
            st->links_removed != removed || st->fdb_added != fdb_added ||
            st->fdb_removed != fdb_removed || st->resynced != resynced)
                fail_msg("stats: links +%zu ~%zu -%zu, fdb +%zu -%zu, resynced %d; want links "
                         "+%zu ~%zu -%zu, fdb +%zu -%zu, resynced %d",
                         st->links_added, st->links_changed, st->links_removed, st->fdb_added,
                         st->fdb_removed, st->resynced, added, changed, removed, fdb_added,
                         fdb_removed, resynced);
}

static void apply_ok(struct net *n, const struct net_config *cfg, const struct desired *d,
                     size_t added, size_t changed, size_t removed, size_t fdb_added,
                     size_t fdb_removed)
{
        struct net_stats st;
        assert_int_equal(apply(n, cfg, d, &st), 0);
        stats_are(&st, added, changed, removed, fdb_added, fdb_removed, 0);
}

/* ---- tests ---- */

static void two_networks(struct desired *d)
{
        memset(d, 0, sizeof(*d));
        d_net(d, 5, 0, LIST("10.0.0.2", "10.0.0.3"),
              LIST("52:54:00:00:00:01", "10.0.0.2", "52:54:00:00:00:02", "10.0.0.3",
                   "52:54:00:00:00:03", "10.0.0.3"));
        d_net(d, NET_VNI_MAX, 9000, NULL, NULL);
}

static const char fdb5[] = "00:00:00:00:00:00 dst 10.0.0.2\n"
                           "00:00:00:00:00:00 dst 10.0.0.3\n"
                           "52:54:00:00:00:01 dst 10.0.0.2\n"
                           "52:54:00:00:00:02 dst 10.0.0.3\n"
                           "52:54:00:00:00:03 dst 10.0.0.3\n";

static void test_create_from_empty(void **state)
{
        struct net *n = *state;
        struct desired d;
        two_networks(&d);
        apply_ok(n, &cfg4, &d, 4, 0, 0, 5, 0);

        link_has("tbr5", "<BROADCAST,MULTICAST,UP,", " mtu 1450 ", " bridge ", "addrgenmode none",
                 "alias tasman", NULL);
        link_has("tvx5", ",UP,", " mtu 1450 ", "master tbr5 ",
                 "vxlan id 5 local 10.0.0.1 ", "dstport 4789 ", "nolearning", "addrgenmode none",
                 "alias tasman", NULL);
        link_has("tbr16777215", ",UP", " mtu 9000 ", "alias tasman", NULL);
        link_has("tvx16777215", ",UP,", " mtu 9000 ", "master tbr16777215 ",
                 "vxlan id 16777215 local 10.0.0.1 ", "nolearning", NULL);
        fdb_is("tvx5", fdb5);
        fdb_all_permanent("tvx5");
        fdb_is("tvx16777215", "");
        /* The host has no address on a tenant's network. */
        char *a = out("ip -o addr show dev tbr5; ip -o addr show dev tvx5");
        assert_string_equal(a, "");
        free(a);
}

static void test_reapply_is_noop(void **state)
{
        struct net *n = *state;
        struct desired d;
        two_networks(&d);
        apply_ok(n, &cfg4, &d, 4, 0, 0, 5, 0);
        char *before = snapshot(links_fdb);
        apply_ok(n, &cfg4, &d, 0, 0, 0, 0, 0);
        apply_ok(n, &cfg4, &d, 0, 0, 0, 0, 0);
        char *after = snapshot(links_fdb);
        assert_string_equal(before, after);
        free(before);
        free(after);
}

static void test_add_remove_network(void **state)
{
        struct net *n = *state;
        struct desired d = { 0 };
        d_net(&d, 5, 0, LIST("10.0.0.2"), NULL);
        d_net(&d, 6, 0, LIST("10.0.0.3"), LIST("52:54:00:00:06:01", "10.0.0.3"));
        apply_ok(n, &cfg4, &d, 4, 0, 0, 3, 0);
        char *idx6 = out("ip -o link show dev tbr6 | cut -d: -f1; ip -o link show dev tvx6 | "
                         "cut -d: -f1");

        memset(&d, 0, sizeof(d));
        d_net(&d, 6, 0, LIST("10.0.0.3"), LIST("52:54:00:00:06:01", "10.0.0.3"));
        d_net(&d, 7, 1400, LIST("10.0.0.4"), NULL);
        apply_ok(n, &cfg4, &d, 2, 0, 2, 1, 0);
        assert_false(exists("tbr5"));
        assert_false(exists("tvx5"));
        link_has("tvx7", " mtu 1400 ", "master tbr7 ", "vxlan id 7 ", NULL);
        fdb_is("tvx7", "00:00:00:00:00:00 dst 10.0.0.4\n");
        /* The network that stayed was not touched. */
        char *idx6b = out("ip -o link show dev tbr6 | cut -d: -f1; ip -o link show dev tvx6 | "
                          "cut -d: -f1");
        assert_string_equal(idx6, idx6b);
        fdb_is("tvx6", "00:00:00:00:00:00 dst 10.0.0.3\n52:54:00:00:06:01 dst 10.0.0.3\n");
        free(idx6);
        free(idx6b);

        memset(&d, 0, sizeof(d));
        apply_ok(n, &cfg4, &d, 0, 0, 4, 0, 0);
        char *left = out("ip -o link show | grep -c 'tbr\\|tvx'");
        assert_string_equal(left, "0\n");
        free(left);
}

static void test_fdb_exact(void **state)
{
        struct net *n = *state;
        struct desired d = { 0 };
        d_net(&d, 5, 0, LIST("10.0.0.2", "10.0.0.3"),
              LIST("52:54:00:00:00:01", "10.0.0.2", "52:54:00:00:00:02", "10.0.0.3"));
        apply_ok(n, &cfg4, &d, 2, 0, 0, 4, 0);

        /* A host leaves, one joins; a guest moves, one leaves, one comes. */
        memset(&d, 0, sizeof(d));
        d_net(&d, 5, 0, LIST("10.0.0.3", "10.0.0.4"),
              LIST("52:54:00:00:00:01", "10.0.0.4", "52:54:00:00:00:03", "10.0.0.3"));
        apply_ok(n, &cfg4, &d, 0, 0, 0, 3, 3);
        const char *want = "00:00:00:00:00:00 dst 10.0.0.3\n"
                           "00:00:00:00:00:00 dst 10.0.0.4\n"
                           "52:54:00:00:00:01 dst 10.0.0.4\n"
                           "52:54:00:00:00:03 dst 10.0.0.3\n";
        fdb_is("tvx5", want);

        /* Duplicates in the input count once. */
        d_net(&d, 6, 0, LIST("10.0.0.3", "10.0.0.3"),
              LIST("52:54:00:00:00:07", "10.0.0.3", "52:54:00:00:00:07", "10.0.0.3"));
        apply_ok(n, &cfg4, &d, 2, 0, 0, 2, 0);
        fdb_is("tvx6", "00:00:00:00:00:00 dst 10.0.0.3\n52:54:00:00:00:07 dst 10.0.0.3\n");

        /* Drift: strays added, a desired one removed, one made dynamic. */
        sh("bridge fdb append 00:00:00:00:00:00 dev tvx5 dst 10.0.0.9 self permanent");
        sh("bridge fdb add 52:54:00:00:00:99 dev tvx5 dst 10.0.0.3 self permanent");
        sh("bridge fdb replace 52:54:00:00:00:01 dev tvx5 dst 10.0.0.5 self permanent");
        sh("bridge fdb del 00:00:00:00:00:00 dev tvx5 dst 10.0.0.4 self");
        sh("bridge fdb replace 52:54:00:00:00:03 dev tvx5 dst 10.0.0.3 self dynamic");
        apply_ok(n, &cfg4, &d, 0, 0, 0, 3, 4);
        fdb_is("tvx5", want);
        fdb_all_permanent("tvx5");
        apply_ok(n, &cfg4, &d, 0, 0, 0, 0, 0);
}

static void test_link_drift(void **state)
{
        struct net *n = *state;
        struct desired d = { 0 };
        d_net(&d, 5, 0, LIST("10.0.0.2"), LIST("52:54:00:00:00:01", "10.0.0.2"));
        d_net(&d, 6, 0, NULL, NULL);
        apply_ok(n, &cfg4, &d, 4, 0, 0, 2, 0);

        /* A bridge follows its ports' MTU: tbr6 goes to 1400 with tvx6, and
         * tbr5, without ports, to 1500. Four devices to fix. */
        sh("ip link set tvx5 nomaster && ip link set tbr5 down && ip link set tvx6 mtu 1400");
        apply_ok(n, &cfg4, &d, 0, 4, 0, 0, 0);
        link_has("tvx5", ",UP,", "master tbr5 ", NULL);
        link_has("tbr5", ",UP", NULL);
        link_has("tvx6", " mtu 1450 ", NULL);

        /* Ours with the wrong settings: made anew, entries and all. */
        sh("ip link del tvx5 && ip link add tvx5 type vxlan id 5 local 10.0.0.1 dstport 4789 && "
           "ip link set tvx5 alias tasman");
        apply_ok(n, &cfg4, &d, 1, 0, 1, 2, 0);
        link_has("tvx5", "nolearning", "master tbr5 ", NULL);
        fdb_is("tvx5", "00:00:00:00:00:00 dst 10.0.0.2\n52:54:00:00:00:01 dst 10.0.0.2\n");

        /* Ours by name and marker but not a bridge: replaced by one. */
        sh("ip link add tbr3 type vxlan id 333 dstport 4789 && ip link set tbr3 alias tasman");
        d_net(&d, 3, 0, NULL, NULL);
        apply_ok(n, &cfg4, &d, 2, 0, 1, 0, 0);
        link_has("tbr3", " bridge ", NULL);
        link_lacks("tbr3", "vxlan");
        apply_ok(n, &cfg4, &d, 0, 0, 0, 0, 0);
}

static void test_foreign_untouched(void **state)
{
        struct net *n = *state;
        sh("ip link add tbr7 type bridge && ip link add br0 type bridge && "
           "ip link add foo type bridge && ip link set foo alias tasman && "
           "ip link add tvx9 type vxlan id 9 dstport 4789 && "
           "ip link add tbr8x type bridge && ip link set tbr8x alias tasman && "
           "ip link add tbr010 type bridge && ip link set tbr010 alias tasman && "
           "ip link add tbr11 type bridge && ip link set tbr11 alias tasman-not && "
           "ip link add eth9 type veth peer name eth9p && ip link set eth9 master br0");
        const char *snap = "ip -d -o link show dev tbr7; ip -d -o link show dev br0; "
                           "ip -d -o link show dev foo; ip -d -o link show dev tvx9; "
                           "ip -d -o link show dev tbr8x; ip -d -o link show dev tbr010; "
                           "ip -d -o link show dev tbr11; ip -d -o link show dev eth9; "
                           "bridge fdb show dev tvx9";
        char *before = snapshot(snap);

        struct desired d = { 0 };
        d_net(&d, 7, 0, LIST("10.0.0.2"), NULL);
        d_net(&d, 8, 0, LIST("10.0.0.2"), NULL);
        d_net(&d, 9, 0, LIST("10.0.0.2"), NULL);
        struct net_stats st;
        assert_int_equal(apply(n, &cfg4, &d, &st), -EEXIST);
        stats_are(&st, 2, 0, 0, 1, 0, 0);
        assert_true(exists("tvx8"));
        assert_false(exists("tvx7"));
        assert_false(exists("tbr9"));

        /* Nothing desired: only ours go. */
        memset(&d, 0, sizeof(d));
        apply_ok(n, &cfg4, &d, 0, 0, 2, 0, 0);
        assert_false(exists("tbr8"));
        char *after = snapshot(snap);
        assert_string_equal(before, after);
        free(before);
        free(after);
}

static void test_public_bridge(void **state)
{
        struct net *n = *state;
        sh("ip link add up0 type veth peer name up0p");
        const struct net_config cfg = { .local_ip = "10.0.0.1",
                                        .public_bridge = "tbrpub",
                                        .public_uplink = "up0" };
        struct desired d = { 0 };
        d_net(&d, 5, 0, NULL, NULL);
        apply_ok(n, &cfg, &d, 3, 1, 0, 0, 0);
        link_has("tbrpub", ",UP", " bridge ", "alias tasman", NULL);
        link_has("up0", ",UP", "master tbrpub ", NULL);
        apply_ok(n, &cfg, &d, 0, 0, 0, 0, 0);

        /* Out of the bridge and down: back. */
        sh("ip link set up0 nomaster && ip link set up0 down && ip link set tbrpub down");
        apply_ok(n, &cfg, &d, 0, 2, 0, 0, 0);
        link_has("up0", ",UP", "master tbrpub ", NULL);
        link_has("tbrpub", ",UP", NULL);

        /* The public bridge is never removed with the private networks, nor
         * is the uplink. */
        memset(&d, 0, sizeof(d));
        apply_ok(n, &cfg, &d, 0, 0, 2, 0, 0);
        assert_true(exists("tbrpub"));
        assert_true(exists("up0"));
}

static void test_public_bridge_foreign(void **state)
{
        struct net *n = *state;
        struct desired d = { 0 };
        struct net_stats st;
        /* An uplink that is someone else's bridge port stays there. */
        sh("ip link add br0 type bridge && ip link add up1 type veth peer name up1p && "
           "ip link set up1 master br0");
        const struct net_config busy = { .local_ip = "10.0.0.1",
                                         .public_bridge = "tbrpub",
                                         .public_uplink = "up1" };
        assert_int_equal(apply(n, &busy, &d, &st), -EBUSY);
        stats_are(&st, 1, 0, 0, 0, 0, 0);
        link_has("up1", "master br0 ", NULL);

        /* A missing uplink: the bridge is made all the same. */
        const struct net_config missing = { .local_ip = "10.0.0.1",
                                            .public_bridge = "tbrpub2",
                                            .public_uplink = "nope0" };
        assert_int_equal(apply(n, &missing, &d, &st), -ENODEV);
        stats_are(&st, 1, 0, 0, 0, 0, 0);
        link_has("tbrpub2", ",UP", NULL);

        /* An admin's bridge of that name is used as it is. */
        sh("ip link add pub9 type bridge && ip link add up2 type veth peer name up2p");
        char *before = snapshot("ip -o link show dev pub9; ip -o link show dev up2");
        const struct net_config theirs = { .local_ip = "10.0.0.1",
                                           .public_bridge = "pub9",
                                           .public_uplink = "up2" };
        assert_int_equal(apply(n, &theirs, &d, &st), 0);
        stats_are(&st, 0, 0, 0, 0, 0, 0);
        char *after = snapshot("ip -o link show dev pub9; ip -o link show dev up2");
        assert_string_equal(before, after);
        free(before);
        free(after);

        /* ... and one that is not a bridge is an error. */
        sh("ip link add pub8 type veth peer name pub8p");
        const struct net_config notbr = { .local_ip = "10.0.0.1", .public_bridge = "pub8" };
        assert_int_equal(apply(n, &notbr, &d, &st), -EEXIST);
        stats_are(&st, 0, 0, 0, 0, 0, 0);
}

struct bad_case {
        const char *what;
        void (*spoil)(struct desired *d, struct net_config *cfg);
};

static void bad_mac_short(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].mac, TMSG_MAC, "52:54:00:00:00");
}
static void bad_mac_hex(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].mac, TMSG_MAC, "52:54:00:00:00:zz");
}
static void bad_mac_sep(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].mac, TMSG_MAC, "52-54-00-00-00-01");
}
static void bad_mac_multicast(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].mac, TMSG_MAC, "01:00:5e:00:00:01");
}
static void bad_mac_zero(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].mac, TMSG_MAC, "00:00:00:00:00:00");
}
static void bad_mac_unterminated(struct desired *d, struct net_config *c)
{
        (void)c;
        memset(d->fdb[0].mac, 'a', TMSG_MAC);
}
static void bad_remote(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "10.0.0");
}
static void bad_remote_v6(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "fd00::1::2");
}
static void bad_remote_family(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "fd00::2");
}
static void bad_remote_any(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "0.0.0.0");
}
static void bad_remote_multicast(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "239.1.1.1");
}
static void bad_remote_prefix(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->remotes[0], TMSG_IP, "10.0.0.2/24");
}
static void bad_host(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[0].host, TMSG_IP, "host-a");
}
static void bad_vni_zero(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].vni = 0;
}
static void bad_vni_big(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].vni = NET_VNI_MAX + 1;
}
static void bad_vni_twice(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].vni = d->nets[0].vni;
}
static void bad_mtu(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].mtu = 67;
}
static void bad_slice_remotes(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].first_remote = d->n_remotes;
        d->nets[1].n_remotes = 1;
}
static void bad_slice_fdb(struct desired *d, struct net_config *c)
{
        (void)c;
        d->nets[1].first_fdb = SIZE_MAX;
        d->nets[1].n_fdb = 2;
}
static void bad_mac_two_hosts(struct desired *d, struct net_config *c)
{
        (void)c;
        snprintf(d->fdb[1].mac, TMSG_MAC, "%s", d->fdb[0].mac);
        snprintf(d->fdb[1].host, TMSG_IP, "10.0.0.9");
}
static void bad_local(struct desired *d, struct net_config *c)
{
        (void)d;
        c->local_ip = "10.0.0.256";
}
static void bad_local_none(struct desired *d, struct net_config *c)
{
        (void)d;
        c->local_ip = NULL;
}
static void bad_pub_name(struct desired *d, struct net_config *c)
{
        (void)d;
        c->public_bridge = "tbr5";
}
static void bad_pub_long(struct desired *d, struct net_config *c)
{
        (void)d;
        c->public_bridge = "a-very-long-bridge";
}
static void bad_uplink_alone(struct desired *d, struct net_config *c)
{
        (void)d;
        c->public_uplink = "eth0";
}
static void bad_uplink_slash(struct desired *d, struct net_config *c)
{
        (void)d;
        c->public_bridge = "tbrpub";
        c->public_uplink = "eth/0";
}

static void test_bad_input(void **state)
{
        struct net *n = *state;
        static const struct bad_case cases[] = {
                { "MAC too short", bad_mac_short },
                { "MAC not hex", bad_mac_hex },
                { "MAC with dashes", bad_mac_sep },
                { "multicast MAC", bad_mac_multicast },
                { "all-zero MAC", bad_mac_zero },
                { "MAC unterminated", bad_mac_unterminated },
                { "remote not an address", bad_remote },
                { "remote bad IPv6", bad_remote_v6 },
                { "remote of the other family", bad_remote_family },
                { "remote 0.0.0.0", bad_remote_any },
                { "remote multicast", bad_remote_multicast },
                { "remote with a prefix", bad_remote_prefix },
                { "MAC's host not an address", bad_host },
                { "VNI 0", bad_vni_zero },
                { "VNI too big", bad_vni_big },
                { "VNI twice", bad_vni_twice },
                { "MTU too small", bad_mtu },
                { "remotes out of the array", bad_slice_remotes },
                { "entries out of the array", bad_slice_fdb },
                { "MAC with two hosts", bad_mac_two_hosts },
                { "local address", bad_local },
                { "no local address", bad_local_none },
                { "public bridge named like a network's", bad_pub_name },
                { "public bridge name too long", bad_pub_long },
                { "uplink without a bridge", bad_uplink_alone },
                { "uplink name with a slash", bad_uplink_slash },
        };
        struct desired good = { 0 };
        d_net(&good, 5, 0, LIST("10.0.0.2"), LIST("52:54:00:00:00:01", "10.0.0.2"));
        d_net(&good, 6, 0, LIST("10.0.0.3"), LIST("52:54:00:00:00:02", "10.0.0.3"));
        apply_ok(n, &cfg4, &good, 4, 0, 0, 4, 0);
        char *before = snapshot(links_fdb);

        /* Each spoils a state that differs from the kernel's (network 5
         * gone, 7 new): a bad one must change nothing at all. */
        struct desired base = { 0 };
        d_net(&base, 7, 0, LIST("10.0.0.2"),
              LIST("52:54:00:00:00:01", "10.0.0.2", "52:54:00:00:00:05", "10.0.0.2"));
        d_net(&base, 6, 0, LIST("10.0.0.3"), LIST("52:54:00:00:00:02", "10.0.0.3"));
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct desired d = base;
                struct net_config c = cfg4;
                cases[i].spoil(&d, &c);
                struct net_stats st = { .links_added = 99 };
                int r = apply(n, &c, &d, &st);
                if (r != -EINVAL)
                        fail_msg("%s: %d, want -EINVAL", cases[i].what, r);
                stats_are(&st, 0, 0, 0, 0, 0, 0);
                char *after = snapshot(links_fdb);
                if (strcmp(before, after) != 0)
                        fail_msg("%s: the kernel changed", cases[i].what);
                free(after);
        }
        free(before);
        /* And the unspoilt one goes through. */
        apply_ok(n, &cfg4, &base, 2, 0, 2, 3, 0);
}

static void test_ipv6_underlay(void **state)
{
        struct net *n = *state;
        const struct net_config cfg6 = { .local_ip = "fd00::1" };
        struct desired d = { 0 };
        d_net(&d, 5, 1400, LIST("fd00::2", "FD00:0:0::3"),
              LIST("52:54:00:00:00:01", "fd00::2", "52:54:00:AA:00:02", "fd00::3"));
        apply_ok(n, &cfg6, &d, 2, 0, 0, 4, 0);
        link_has("tvx5", "vxlan id 5 local fd00::1 ", "dstport 4789 ", "nolearning",
                 " mtu 1400 ", "master tbr5 ", NULL);
        fdb_is("tvx5", "00:00:00:00:00:00 dst fd00::2\n"
                       "00:00:00:00:00:00 dst fd00::3\n"
                       "52:54:00:00:00:01 dst fd00::2\n"
                       "52:54:00:aa:00:02 dst fd00::3\n");
        apply_ok(n, &cfg6, &d, 0, 0, 0, 0, 0);

        /* The underlay moves to IPv4: the VXLAN device is made anew. */
        memset(&d, 0, sizeof(d));
        d_net(&d, 5, 1400, LIST("10.0.0.2"), NULL);
        apply_ok(n, &cfg4, &d, 1, 0, 1, 1, 0);
        link_has("tvx5", "vxlan id 5 local 10.0.0.1 ", "master tbr5 ", NULL);
        fdb_is("tvx5", "00:00:00:00:00:00 dst 10.0.0.2\n");
}

static void test_half_made_pair_removed(void **state)
{
        struct net *n = *state;
        /* Someone else's VXLAN device holds VNI 9 on our port: tvx9 cannot
         * be made, and tbr9, made just before, must go again. */
        sh("ip link add vxf type vxlan id 9 local 10.0.0.1 dstport 4789");
        char *before = out("ip -d -o link show dev vxf");
        struct desired d = { 0 };
        d_net(&d, 9, 0, LIST("10.0.0.2"), NULL);
        d_net(&d, 10, 0, LIST("10.0.0.2"), NULL);
        struct net_stats st;
        assert_int_equal(apply(n, &cfg4, &d, &st), -EEXIST);
        /* EEXIST on a creation may be a taken index: one more round, which
         * fails the same way, and is the one reported. */
        stats_are(&st, 4, 0, 2, 1, 0, 1);
        assert_false(exists("tbr9"));
        assert_false(exists("tvx9"));
        link_has("tvx10", "master tbr10 ", NULL);
        char *after = out("ip -d -o link show dev vxf");
        assert_string_equal(before, after);
        free(before);
        free(after);

        /* Once the way is free, the next apply converges. */
        sh("ip link del vxf");
        apply_ok(n, &cfg4, &d, 2, 0, 0, 1, 0);
        link_has("tvx9", "master tbr9 ", NULL);
}

static void test_lost_answers_resync(void **state)
{
        struct net *n = *state;
        /* The smallest receive buffer and an answer for every request: the
         * kernel drops answers (ENOBUFS), so the apply cannot know what
         * failed. It dumps and diffs again, sending less at a time. */
        const struct net_tuning t = { .batch_bytes = 64 * 1024, .rcvbuf = 1, .ack_each = 1 };
        assert_int_equal(net_set_tuning(n, &t), 0);
        struct desired d = { 0 };
        for (uint32_t v = 1; v <= 3; v++) {
                char macs[40][TMSG_MAC];
                const char *list[81];
                size_t k = 0;
                for (int i = 0; i < 40; i++) {
                        snprintf(macs[i], TMSG_MAC, "52:54:00:00:%02x:%02x", v, i);
                        list[k++] = macs[i];
                        list[k++] = i % 2 ? "10.0.0.2" : "10.0.0.3";
                }
                list[k] = NULL;
                d_net(&d, v, 0, LIST("10.0.0.2", "10.0.0.3"), list);
        }
        struct net_stats st;
        assert_int_equal(apply(n, &cfg4, &d, &st), 0);
        if (st.resynced < 1)
                fail_msg("no answer was lost: the test proves nothing");
        char *c = out("bridge fdb show | grep 'dev tvx' | grep -c ' self permanent'");
        assert_string_equal(c, "126\n");
        free(c);
        const struct net_tuning def = { .batch_bytes = 64 * 1024 };
        assert_int_equal(net_set_tuning(n, &def), 0);
        apply_ok(n, &cfg4, &d, 0, 0, 0, 0, 0);
}

/* One apply: its changes as stats_are() takes them, and whether it dumped. */
static void apply_dumped(struct net *n, const struct net_config *cfg, const struct desired *d,
                         int dumped, size_t changed, size_t fdb_added)
{
        struct net_stats st;
        assert_int_equal(apply(n, cfg, d, &st), 0);
        stats_are(&st, 0, changed, 0, fdb_added, 0, 0);
        if (st.dumped != dumped)
                fail_msg("dumped %d, want %d", st.dumped, dumped);
}

static void test_watch(void **state)
{
        struct net *n = *state;
        sh("ip link add up0 type veth peer name up0p");
        const struct net_config cfg = { .local_ip = "10.0.0.1",
                                        .public_bridge = "tbrpub",
                                        .public_uplink = "up0" };
        struct desired d = { 0 };
        d_net(&d, 5, 0, LIST("10.0.0.2"), LIST("52:54:00:00:00:01", "10.0.0.2"));
        struct net_stats st;
        assert_int_equal(apply(n, &cfg, &d, &st), 0);
        assert_int_equal(st.dumped, 1);
        /* After changes, the next apply dumps; after one without, none. */
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        apply_dumped(n, &cfg, &d, 0, 0, 0);

        /* Others' devices and what a bridge learns do not matter. */
        sh("ip link add br9 type bridge && ip link add v0 type veth peer name v1 && "
           "ip link set v0 master br9 && ip link set br9 up && ip link set v0 up && "
           "bridge fdb add 52:54:00:00:09:09 dev v0 master static && "
           "bridge fdb add 52:54:00:00:09:0a dev tvx5 master static");
        apply_dumped(n, &cfg, &d, 0, 0, 0);

        /* An entry of ours gone. */
        sh("bridge fdb del 00:00:00:00:00:00 dev tvx5 dst 10.0.0.2 self");
        apply_dumped(n, &cfg, &d, 1, 0, 1);
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        /* A device of ours changed (and its bridge follows its MTU). */
        sh("ip link set tvx5 mtu 1400");
        apply_dumped(n, &cfg, &d, 1, 2, 0);
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        /* A device with one of our names, not ours. */
        sh("ip link add tbr77 type bridge");
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        apply_dumped(n, &cfg, &d, 0, 0, 0);
        /* The uplink. */
        sh("ip link set up0 down");
        apply_dumped(n, &cfg, &d, 1, 1, 0);
        apply_dumped(n, &cfg, &d, 1, 0, 0);

        /* Lost notifications: dumped again, though none mattered. */
        const struct net_tuning t = { .batch_bytes = 16 * 1024, .watch_rcvbuf = 1 };
        assert_int_equal(net_set_tuning(n, &t), 0);
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        apply_dumped(n, &cfg, &d, 0, 0, 0);
        sh("for i in $(seq 40); do ip link add x$i type bridge; done");
        apply_dumped(n, &cfg, &d, 1, 0, 0);
        apply_dumped(n, &cfg, &d, 0, 0, 0);
}

int main(void)
{
        log_set_level(LOG_LEVEL_ERROR);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_create_from_empty, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_reapply_is_noop, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_add_remove_network, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_fdb_exact, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_link_drift, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_foreign_untouched, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_public_bridge, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_public_bridge_foreign, setup_ns,
                                                teardown_ns),
                cmocka_unit_test_setup_teardown(test_bad_input, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_ipv6_underlay, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_half_made_pair_removed, setup_ns,
                                                teardown_ns),
                cmocka_unit_test_setup_teardown(test_lost_answers_resync, setup_ns, teardown_ns),
                cmocka_unit_test_setup_teardown(test_watch, setup_ns, teardown_ns),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
