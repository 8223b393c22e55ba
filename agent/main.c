/* tasman-agent: keeps one hypervisor host in the state the broker asks for.
 *
 * One thread does everything: it dials the broker (nng REQ), sends Sync
 * with what it observes, gets the full desired state back, and converges
 * libvirt to it (reconcile.c decides, hv_libvirt.c acts). A second thread
 * only waits for SIGINT/SIGTERM and closes the socket to wake the first.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <time.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <dirent.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "codec.h"
#include "config.h"
#include "hv.h"
#include "imgcache.h"
#include "log.h"
#include "net.h"
#include "notify.h"
#include "reconcile.h"
#include "seed.h"
#include "util.h"

static struct {
        char broker[CFG_STR_MAX];
        char libvirt_uri[CFG_STR_MAX];
        char host_id[CFG_STR_MAX];
        char site[CFG_STR_MAX];
        char state_dir[CFG_STR_MAX];
        char image_dir[CFG_STR_MAX];
        char boot_dir[CFG_STR_MAX];
        char rescue_dir[CFG_STR_MAX];
        char pool_ssd[CFG_STR_MAX], pool_ssd_dir[CFG_STR_MAX];
        char pool_hdd[CFG_STR_MAX], pool_hdd_dir[CFG_STR_MAX];
        char underlay_ip[CFG_STR_MAX];
        char public_bridge[CFG_STR_MAX];
        char public_uplink[CFG_STR_MAX];
        char nic_filter[CFG_STR_MAX];
        int64_t manage_network;
        char domain_type[CFG_STR_MAX];
        char boot_id[CFG_STR_MAX];
        char log_level[CFG_STR_MAX];
        int64_t shutdown_timeout_ms;
        int64_t observe_interval_ms;
        int64_t vcpus, ram_mb, disk_gb, hdd_gb;
        int64_t image_max_gb, image_fetches;
        int64_t ssd_iops, ssd_bps, hdd_iops, hdd_bps;
} cfg = {
        .pool_ssd = "tasman-ssd",
        .pool_hdd = "tasman-hdd",
        .image_max_gb = 64,
        .image_fetches = 2,
        .broker = "tcp://127.0.0.1:7400",
        .libvirt_uri = "qemu:///system",
        .site = "tas-1",
        .state_dir = "/var/lib/tasman-agent",
        .underlay_ip = "127.0.0.1",
        .public_bridge = "tbrpub",
        .nic_filter = DOMXML_FILTER,
        .manage_network = 1,
        .domain_type = "auto",
        .log_level = "info",
        .shutdown_timeout_ms = 60000,
        .observe_interval_ms = 5000,
};

static const struct cfg_opt opts[] = {
        { "broker", CFG_STR, cfg.broker, 0, 0,
          "broker's agent link URL (nng: tcp://HOST:PORT), or several separated by commas "
          "(the next one is used as soon as the current one is lost)" },
        { "libvirt_uri", CFG_STR, cfg.libvirt_uri, 0, 0,
          "libvirt connection (qemu:///system; test:///default for tests)" },
        { "host_id", CFG_STR, cfg.host_id, 0, 0, "this host's unique name (default: hostname)" },
        { "site", CFG_STR, cfg.site, 0, 0, "site (region) slug this host belongs to" },
        { "state_dir", CFG_STR, cfg.state_dir, 0, 0, "directory for console logs and caches" },
        { "image_dir", CFG_STR, cfg.image_dir, 0, 0,
          "cache of base images, by SHA-256 (default STATE_DIR/images)" },
        { "image_max_gb", CFG_INT, &cfg.image_max_gb, 1, 4096, "largest image fetched, in GiB" },
        { "image_fetches", CFG_INT, &cfg.image_fetches, 1, 64, "image downloads at once" },
        { "boot_dir", CFG_STR, cfg.boot_dir, 0, 0,
          "direct kernel boot for images without a boot loader: DIR/SLUG/{vmlinuz,initrd.img,"
          "cmdline} (default: none, guests boot from their disk)" },
        { "rescue_dir", CFG_STR, cfg.rescue_dir, 0, 0,
          "the rescue system guests boot into (their disk attached): "
          "DIR/{vmlinuz,initrd.img,cmdline} (default STATE_DIR/rescue)" },
        { "pool_ssd", CFG_STR, cfg.pool_ssd, 0, 0, "libvirt storage pool of ssd guest disks" },
        { "pool_ssd_dir", CFG_STR, cfg.pool_ssd_dir, 0, 0,
          "its directory (default STATE_DIR/disks/ssd)" },
        { "pool_hdd", CFG_STR, cfg.pool_hdd, 0, 0, "libvirt storage pool of hdd guest disks" },
        { "pool_hdd_dir", CFG_STR, cfg.pool_hdd_dir, 0, 0,
          "its directory (default STATE_DIR/disks/hdd)" },
        { "ssd_iops", CFG_INT, &cfg.ssd_iops, 0, INT64_C(1) << 40,
          "I/O operations per second of an ssd disk (0: no limit)" },
        { "ssd_bps", CFG_INT, &cfg.ssd_bps, 0, INT64_C(1) << 50,
          "bytes per second of an ssd disk (0: no limit)" },
        { "hdd_iops", CFG_INT, &cfg.hdd_iops, 0, INT64_C(1) << 40,
          "I/O operations per second of an hdd disk (0: no limit)" },
        { "hdd_bps", CFG_INT, &cfg.hdd_bps, 0, INT64_C(1) << 50,
          "bytes per second of an hdd disk (0: no limit)" },
        { "underlay_ip", CFG_STR, cfg.underlay_ip, 0, 0, "this host's underlay address" },
        { "public_bridge", CFG_STR, cfg.public_bridge, 0, 0,
          "bridge of the guests' public NICs (made by the agent)" },
        { "public_uplink", CFG_STR, cfg.public_uplink, 0, 0,
          "interface joined to the public bridge (default: none)" },
        { "manage_network", CFG_INT, &cfg.manage_network, 0, 1,
          "1: make the private networks' bridges and VXLANs and the public bridge (netlink); "
          "0: leave the host's network alone (default 1)" },
        { "nic_filter", CFG_STR, cfg.nic_filter, 0, 0,
          "libvirt nwfilter on every guest NIC, given its addresses (\"\": none); the agent "
          "defines " DOMXML_FILTER " (no MAC, IP or ARP spoofing, IPv4 and IPv6)" },
        { "domain_type", CFG_STR, cfg.domain_type, 0, 0,
          "libvirt domain type: auto (kvm if /dev/kvm is usable, else qemu), kvm, qemu, test" },
        { "boot_id", CFG_STR, cfg.boot_id, 0, 0,
          "override the host boot id (default /proc/sys/kernel/random/boot_id)" },
        { "log_level", CFG_STR, cfg.log_level, 0, 0, "error, warn, info or debug" },
        { "shutdown_timeout_ms", CFG_INT, &cfg.shutdown_timeout_ms, 0, 3600000,
          "graceful shutdown wait before power off" },
        { "observe_interval_ms", CFG_INT, &cfg.observe_interval_ms, 0, 3600000,
          "full re-read of libvirt at least this often (between, only what changed)" },
        { "vcpus", CFG_INT, &cfg.vcpus, 0, 1 << 20, "vCPUs offered (0: what libvirt reports)" },
        { "ram_mb", CFG_INT, &cfg.ram_mb, 0, INT64_C(1) << 40,
          "RAM offered in MiB (0: what libvirt reports)" },
        { "disk_gb", CFG_INT, &cfg.disk_gb, 0, INT64_C(1) << 30,
          "ssd storage offered in GB (0: size of state_dir's file system)" },
        { "hdd_gb", CFG_INT, &cfg.hdd_gb, 0, INT64_C(1) << 30,
          "hdd storage offered in GB (0: none)" },
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))
#define MAX_PENDING TMSG_MAX_DOMAINS

static atomic_int stopping;
static nng_socket sock;

struct agent {
        struct hv *hv;
        struct net *net;      /* NULL: the host's network is not ours to manage */
        uint64_t net_gen;     /* the generation whose networks are applied */
        struct imgcache *images;
        int pools_ready;
        int fetching; /* guests waiting for an image fetch in this pass */
        char dom_type[16];
        uint64_t request_id;
        uint64_t applied_gen;
        int registered;
        struct msg_sync_reply desired; /* last desired state received */
        struct rc_pending pending[MAX_PENDING];
        size_t n_pending;
        /* per-vm errors of the last pass, reported to the broker */
        struct {
                uint64_t vm_id;
                char msg[TMSG_ERR];
        } errors[64];
        size_t n_errors;
        /* What libvirt shows, sorted by vm_id: fully re-read every
         * observe_interval_ms, otherwise only the domains we touched. */
        struct hv_domain *obs;
        size_t n_obs;
        int64_t last_full_ms;
        int full_next;  /* re-read libvirt fully before the next report */
        uint32_t hold_ms; /* the broker's longest hold of a sync (hello reply) */
        uint64_t *dirty; /* vm ids touched since the last report */
        size_t n_dirty, cap_dirty;
        /* Snapshots that could not be made: reported, and not tried again
         * while the broker still wants them (it drops them on the report). */
        struct {
                uint64_t vm_id, snap_id;
        } snap_failed[64];
        size_t n_snap_failed;
        /* New disks being copied from a snapshot (qemu-img children). */
        struct {
                uint64_t vm_id;
                pid_t pid;
                int64_t started_ms;
        } copies[8];
        size_t n_copies;
};

/* The broker link: one exchange at a time, through link_aio, which the
 * signal thread and a lost connection cancel (nng's close of the socket is
 * not used to wake the loop: it has been seen to hang for good while the
 * dialer reconnects). The brokers (broker=URL,URL...) are dialled one at a
 * time, the next one as soon as the connection to the current one is lost
 * or cannot be made: the agent then joins it with a full report. */
#define AGENT_BROKERS_MAX 8
static nng_aio *link_aio;
static atomic_int link_lost;
/* Completion of link_aio, waited for with a deadline of our own: nng 1.5's
 * REQ send has been seen to ignore the aio's timeout and wait for good. */
static pthread_mutex_t link_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t link_cv = PTHREAD_COND_INITIALIZER;
static int link_done;

static void on_link_done(void *arg)
{
        (void)arg;
        pthread_mutex_lock(&link_mu);
        link_done = 1;
        pthread_cond_broadcast(&link_cv);
        pthread_mutex_unlock(&link_mu);
}

/* Waits for the operation just started on link_aio: at most timeout_ms
 * (then it is cancelled), and no longer once the agent is stopping. */
static void link_wait(int timeout_ms)
{
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += timeout_ms / 1000 + 1; /* nng's own timeout first */
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&link_mu);
        while (!link_done && !atomic_load(&stopping))
                if (pthread_cond_timedwait(&link_cv, &link_mu, &until) == ETIMEDOUT)
                        break;
        int done = link_done;
        pthread_mutex_unlock(&link_mu);
        if (!done)
                nng_aio_cancel(link_aio);
        nng_aio_wait(link_aio);
}

static void link_start(void)
{
        pthread_mutex_lock(&link_mu);
        link_done = 0;
        pthread_mutex_unlock(&link_mu);
}
static nng_dialer dialer;
static char brokers[AGENT_BROKERS_MAX][CFG_STR_MAX];
static size_t n_brokers, cur_broker;

static atomic_int dialer_id; /* the current dialer's: a pipe of a dialer left is no loss */

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
        (void)arg;
        if (ev == NNG_PIPE_EV_REM_POST &&
            nng_dialer_id(nng_pipe_dialer(p)) == atomic_load(&dialer_id)) {
                atomic_store(&link_lost, 1);
                nng_aio_cancel(link_aio);
        }
}

/* Splits cfg.broker at commas: 1..AGENT_BROKERS_MAX URLs, -EINVAL else. */
static int parse_brokers(const char *list)
{
        const char *p = list;
        n_brokers = 0;
        while (*p) {
                size_t n = strcspn(p, ",");
                while (n && (*p == ' ' || *p == '\t'))
                        p++, n--;
                size_t m = n;
                while (m && (p[m - 1] == ' ' || p[m - 1] == '\t'))
                        m--;
                if (m == 0 || m >= CFG_STR_MAX || n_brokers == AGENT_BROKERS_MAX)
                        return -EINVAL;
                memcpy(brokers[n_brokers], p, m);
                brokers[n_brokers++][m] = '\0';
                p += n;
                if (*p == ',' && !*++p)
                        return -EINVAL; /* a trailing comma */
        }
        return n_brokers ? 0 : -EINVAL;
}

static int dial_current(void)
{
        int r = nng_dial(sock, brokers[cur_broker], &dialer, NNG_FLAG_NONBLOCK);
        if (r == 0)
                atomic_store(&dialer_id, nng_dialer_id(dialer));
        if (r != 0)
                log_error("agent: cannot dial %s: %s", brokers[cur_broker], nng_strerror(r));
        return r ? -EINVAL : 0;
}

/* Leaves the current broker for the next in the list. */
static void next_broker(struct agent *a)
{
        size_t was = cur_broker;
        atomic_store(&dialer_id, -1);
        nng_dialer_close(dialer);
        cur_broker = (cur_broker + 1) % n_brokers;
        atomic_store(&link_lost, 0);
        log_warn("host %s: broker %s is gone or unreachable; moving to %s", cfg.host_id,
                 brokers[was], brokers[cur_broker]);
        dial_current();
        a->registered = 0; /* join it, and send it everything */
        a->full_next = 1;
}

static void *signal_thread(void *arg)
{
        sigset_t *set = arg;
        int sig;
        if (sigwait(set, &sig) == 0) {
                log_info("agent: signal %d, stopping", sig);
                atomic_store(&stopping, 1);
                pthread_mutex_lock(&link_mu);
                pthread_cond_broadcast(&link_cv);
                pthread_mutex_unlock(&link_mu);
                nng_aio_cancel(link_aio);
        }
        return NULL;
}

static void read_boot_id(char *buf, size_t len)
{
        FILE *f;
        if (cfg.boot_id[0]) {
                snprintf(buf, len, "%s", cfg.boot_id);
                return;
        }
        f = fopen("/proc/sys/kernel/random/boot_id", "re");
        if (!f || !fgets(buf, (int)len, f))
                snprintf(buf, len, "unknown");
        buf[strcspn(buf, "\n")] = '\0';
        if (f)
                fclose(f);
}

static void pick_domain_type(struct agent *a)
{
        const char *t = cfg.domain_type;
        if (strcmp(t, "auto") == 0) {
                if (strncmp(cfg.libvirt_uri, "test:", 5) == 0)
                        t = "test";
                else
                        t = access("/dev/kvm", R_OK | W_OK) == 0 ? "kvm" : "qemu";
        }
        util_strlcpy(a->dom_type, t, sizeof(a->dom_type));
}

/* ---- talking to the broker ---- */

static int link_error(int r)
{
        if (r == NNG_ETIMEDOUT)
                return -ETIMEDOUT;
        if (r == NNG_ECANCELED || r == NNG_ECLOSED)
                return atomic_load(&stopping) ? -ECANCELED : -ECONNRESET;
        return -EIO;
}

/* Sends req and waits up to timeout_ms for its reply. -EHOSTUNREACH when
 * no connection to the broker could take the request within the send
 * timeout, -ECONNRESET when the connection was lost meanwhile. */
static int roundtrip(struct agent *a, struct tmsg *req, struct tmsg *rep, int timeout_ms)
{
        nng_msg *m = NULL;
        uint8_t *buf;
        size_t len;
        int r;

        req->request_id = ++a->request_id;
        r = codec_encode(req, &buf, &len);
        if (r < 0)
                return r;
        if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, buf, len) != 0) {
                free(buf);
                if (m)
                        nng_msg_free(m);
                return -ENOMEM;
        }
        free(buf);
        /* With brokers to move to, one that takes no request soon is left. */
        nng_aio_set_msg(link_aio, m);
        int send_ms = n_brokers > 1 ? 3000 : 10000;
        nng_aio_set_timeout(link_aio, send_ms);
        link_start();
        nng_send_aio(sock, link_aio);
        link_wait(send_ms);
        if (atomic_load(&stopping) && nng_aio_result(link_aio) == 0)
                return -ECANCELED; /* sent, but no use waiting for the answer */
        if ((r = nng_aio_result(link_aio)) != 0) {
                nng_msg_free(nng_aio_get_msg(link_aio)); /* not sent: still ours */
                return r == NNG_ETIMEDOUT ? -EHOSTUNREACH : link_error(r);
        }
        for (;;) {
                nng_aio_set_timeout(link_aio, timeout_ms);
                link_start();
                nng_recv_aio(sock, link_aio);
                link_wait(timeout_ms);
                if ((r = nng_aio_result(link_aio)) != 0)
                        return link_error(r);
                nng_msg *in = nng_aio_get_msg(link_aio);
                size_t in_len = nng_msg_len(in);
                r = in_len > TMSG_MAX_BYTES ? -EMSGSIZE : codec_decode(nng_msg_body(in), in_len, rep);
                nng_msg_free(in);
                if (r < 0) {
                        log_warn("broker %s: undecodable reply (%zu bytes), ignored",
                                 brokers[cur_broker], in_len);
                        return -EPROTO;
                }
                if (rep->request_id == a->request_id)
                        return 0;
                tmsg_clear(rep); /* a late reply to an abandoned request */
        }
}

static void fill_capacity(struct agent *a, struct msg_hello *h)
{
        struct hv_node node = { 0 };
        struct statvfs vfs;

        if (hv_node_info(a->hv, &node) < 0)
                memset(&node, 0, sizeof(node));
        h->vcpus = cfg.vcpus ? (uint32_t)cfg.vcpus : node.vcpus;
        h->ram_mb = cfg.ram_mb ? (uint64_t)cfg.ram_mb : node.ram_mb;
        if (cfg.disk_gb)
                h->disk_gb = (uint64_t)cfg.disk_gb;
        else if (statvfs(cfg.state_dir, &vfs) == 0)
                h->disk_gb = (uint64_t)vfs.f_blocks * vfs.f_frsize / 1000000000u;
        h->hdd_gb = (uint64_t)cfg.hdd_gb;
}

static int hello(struct agent *a)
{
        struct tmsg req = { .type = TMSG_HELLO }, rep = { 0 };
        struct msg_hello *h = &req.hello;
        int r;

        util_strlcpy(h->host_id, cfg.host_id, sizeof(h->host_id));
        util_strlcpy(h->site, cfg.site, sizeof(h->site));
        util_strlcpy(h->underlay_ip, cfg.underlay_ip, sizeof(h->underlay_ip));
        read_boot_id(h->boot_id, sizeof(h->boot_id));
        snprintf(h->agent_version, sizeof(h->agent_version), "%s", TASMAN_VERSION);
        snprintf(h->hv_type, sizeof(h->hv_type), "%s", a->dom_type);
        fill_capacity(a, h);
        r = roundtrip(a, &req, &rep, 10000);
        if (r < 0)
                return r;
        if (rep.type == TMSG_ERROR) {
                log_error("broker %s: refused hello: %s", brokers[cur_broker], rep.error.message);
                tmsg_clear(&rep);
                return -EPERM;
        }
        if (rep.type != TMSG_HELLO_REPLY) {
                tmsg_clear(&rep);
                return -EPROTO;
        }
        log_info("host %s: joined broker %s as host %" PRIu64 " (%u vCPUs, %" PRIu64
                 " MiB, %" PRIu64 " GB ssd, %" PRIu64 " GB hdd)",
                 cfg.host_id, brokers[cur_broker], rep.hello_reply.host_num, h->vcpus, h->ram_mb,
                 h->disk_gb, h->hdd_gb);
        a->registered = 1;
        a->hold_ms = rep.hello_reply.hold_ms;
        notify_send("STATUS=joined the broker");
        tmsg_clear(&rep);
        return 0;
}

/* ---- converging ---- */

/* The broker sends domains sorted by vm_id: binary search, with a linear
 * fallback should a broker ever send them unsorted. */
static const struct dom_desired *find_desired(const struct agent *a, uint64_t vm_id)
{
        const struct dom_desired *d = a->desired.domains;
        size_t lo = 0, hi = a->desired.n_domains;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (d[mid].vm_id == vm_id)
                        return &d[mid];
                if (d[mid].vm_id < vm_id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        for (size_t i = 0; i < a->desired.n_domains; i++)
                if (d[i].vm_id == vm_id)
                        return &d[i];
        return NULL;
}

static void note_error(struct agent *a, uint64_t vm_id, const char *what, int err)
{
        if (a->n_errors >= sizeof(a->errors) / sizeof(a->errors[0]))
                return;
        a->errors[a->n_errors].vm_id = vm_id;
        snprintf(a->errors[a->n_errors].msg, TMSG_ERR, "cannot %s: %s", what, strerror(-err));
        a->n_errors++;
}

static void note_error_msg(struct agent *a, uint64_t vm_id, const char *msg)
{
        if (a->n_errors >= sizeof(a->errors) / sizeof(a->errors[0]))
                return;
        a->errors[a->n_errors].vm_id = vm_id;
        snprintf(a->errors[a->n_errors].msg, TMSG_ERR, "%s", msg);
        a->n_errors++;
}

static int has_error(const struct agent *a, uint64_t vm_id)
{
        for (size_t i = 0; i < a->n_errors; i++)
                if (a->errors[i].vm_id == vm_id)
                        return 1;
        return 0;
}

static const char *vm_error(const struct agent *a, uint64_t vm_id)
{
        for (size_t i = 0; i < a->n_errors; i++)
                if (a->errors[i].vm_id == vm_id)
                        return a->errors[i].msg;
        return NULL;
}

static int file_exists(const char *p)
{
        struct stat st;
        return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Boot files of an image from image_dir; missing files leave "" */
static void boot_files(const char *dir, char *kernel, char *initrd, char *cmdline, size_t len);

/* Direct kernel boot files in dir: vmlinuz (required), initrd.img and
 * cmdline (optional); missing files leave "". */
static void boot_files(const char *dir, char *kernel, char *initrd, char *cmdline, size_t len)
{
        char path[CFG_STR_MAX + 160];
        FILE *f;

        kernel[0] = initrd[0] = cmdline[0] = '\0';
        snprintf(path, sizeof(path), "%s/vmlinuz", dir);
        if (!file_exists(path))
                return;
        snprintf(kernel, len, "%s", path);
        snprintf(path, sizeof(path), "%s/initrd.img", dir);
        if (file_exists(path))
                snprintf(initrd, len, "%s", path);
        snprintf(path, sizeof(path), "%s/cmdline", dir);
        f = fopen(path, "re");
        if (f) {
                if (!fgets(cmdline, (int)len, f))
                        cmdline[0] = '\0';
                cmdline[strcspn(cmdline, "\n")] = '\0';
                fclose(f);
        } else {
                snprintf(cmdline, len, "console=ttyS0");
        }
}

static void image_files(const char *image, char *kernel, char *initrd, char *cmdline, size_t len)
{
        char dir[CFG_STR_MAX + 80];

        kernel[0] = initrd[0] = cmdline[0] = '\0';
        if (!cfg.boot_dir[0] || !image[0] || strchr(image, '/') || image[0] == '.')
                return;
        snprintf(dir, sizeof(dir), "%s/%s", cfg.boot_dir, image);
        boot_files(dir, kernel, initrd, cmdline, len);
}

static int roundtrip(struct agent *a, struct tmsg *req, struct tmsg *rep, int timeout_ms);

/* ---- fault injection (tests only) ----
 * TASMAN_AGENT_CRASH_AT=POINT makes the agent kill itself (SIGKILL, as a
 * crash or a power cut would) the first time it passes POINT, so the tests
 * can prove that every step is safe to be interrupted. */
static void crash_point(const char *point)
{
        const char *want = getenv("TASMAN_AGENT_CRASH_AT");
        if (want && strcmp(want, point) == 0) {
                log_warn("agent: crashing at %s (TASMAN_AGENT_CRASH_AT)", point);
                raise(SIGKILL);
        }
}

/* TASMAN_AGENT_FAIL_AT=POINT makes every pass through POINT fail (as a
 * hypervisor error would), so the tests can prove a failure half-way
 * leaves nothing behind. */
static int fail_point(const char *point)
{
        const char *want = getenv("TASMAN_AGENT_FAIL_AT");
        if (want && strcmp(want, point) == 0) {
                log_warn("agent: failing at %s (TASMAN_AGENT_FAIL_AT)", point);
                return -EIO;
        }
        return 0;
}

/* ---- a guest's disk and seed ---- */

static const char *pool_of(enum storage t)
{
        return t == STORAGE_HDD ? cfg.pool_hdd : cfg.pool_ssd;
}

static int ensure_pools(struct agent *a)
{
        int r;
        if (a->pools_ready)
                return 0;
        if ((r = hv_pool_ensure(a->hv, cfg.pool_ssd, cfg.pool_ssd_dir)) < 0 ||
            (r = hv_pool_ensure(a->hv, cfg.pool_hdd, cfg.pool_hdd_dir)) < 0)
                return r;
        a->pools_ready = 1;
        return 0;
}

static void vol_name(uint64_t vm_id, char *buf, size_t len)
{
        snprintf(buf, len, HV_NAME_PREFIX "%" PRIu64 ".qcow2", vm_id);
}

static void seed_path(uint64_t vm_id, char *buf, size_t len)
{
        snprintf(buf, len, "%s/seeds/" HV_NAME_PREFIX "%" PRIu64 ".iso", cfg.state_dir, vm_id);
}

static const struct img_desired *find_image(const struct agent *a, const char *slug)
{
        for (size_t i = 0; i < a->desired.n_images; i++)
                if (strcmp(a->desired.images[i].slug, slug) == 0)
                        return &a->desired.images[i];
        return NULL;
}

/* Builds the guest's cloud-init seed unless it is there: its inputs come
 * from the broker, the ISO is written whole or not at all. */
static int ensure_seed(struct agent *a, const struct dom_desired *d, const char *path)
{
        struct tmsg req = { .type = TMSG_SEED_REQUEST }, rep = { 0 };
        char instance[64], host[TMSG_STR], err[256] = "";
        int r;

        if (access(path, F_OK) == 0)
                return 0;
        util_strlcpy(req.seed_request.host_id, cfg.host_id, sizeof(req.seed_request.host_id));
        req.seed_request.vm_id = d->vm_id;
        r = roundtrip(a, &req, &rep, 10000);
        if (r < 0) {
                note_error_msg(a, d->vm_id, "cannot build the cloud-init seed: the broker did "
                                            "not answer");
                return r;
        }
        if (rep.type != TMSG_SEED_REPLY || rep.seed_reply.vm_id != d->vm_id) {
                snprintf(err, sizeof(err), "cannot build the cloud-init seed: %s",
                         rep.type == TMSG_ERROR ? rep.error.message : "unexpected reply");
                note_error_msg(a, d->vm_id, err);
                tmsg_clear(&rep);
                return -EPROTO;
        }
        const struct msg_seed_reply *m = &rep.seed_reply;
        /* A name with dots is a fully qualified one: its first label is the
         * host name. */
        util_strlcpy(host, m->hostname, sizeof(host));
        host[strcspn(host, ".")] = '\0';
        snprintf(instance, sizeof(instance), HV_NAME_PREFIX "%" PRIu64 "-r%" PRIu64, d->vm_id,
                 d->rebuild_seq);
        struct seed_params p = {
                .vm_id = d->vm_id,
                .instance_id = instance,
                .hostname = host,
                .fqdn = strchr(m->hostname, '.') ? m->hostname : NULL,
                .ssh_keys = (const char *const *)m->ssh_keys,
                .n_ssh_keys = m->n_ssh_keys,
                .admin_user = m->admin_user[0] ? m->admin_user : NULL,
                .admin_password = m->admin_password[0] ? m->admin_password : NULL,
                .user_data = m->user_data,
        };
        /* Its addresses: the first NIC (public, or the first private one)
         * with the default routes, the others static without. */
        struct seed_addr addrs[TMSG_MAX_NICS][TMSG_MAX_NIC_ADDRS];
        struct seed_nic more[TMSG_MAX_NICS];
        for (size_t i = 0; i < d->n_nics && i < TMSG_MAX_NICS; i++) {
                const struct nic_desired *n = &d->nics[i];
                for (size_t k = 0; k < n->n_addrs && k < TMSG_MAX_NIC_ADDRS; k++) {
                        int v6 = strchr(n->addrs[k], ':') != NULL;
                        const char *gw = v6 ? n->gateway6 : n->gateway4;
                        addrs[i][k] = (struct seed_addr){ .cidr = n->addrs[k],
                                                          .gateway = i == 0 && gw[0] ? gw : NULL };
                }
                if (i == 0) {
                        p.mac = n->mac;
                        p.addrs = addrs[0];
                        p.n_addrs = n->n_addrs;
                } else {
                        more[i - 1] = (struct seed_nic){ .mac = n->mac, .addrs = addrs[i],
                                                         .n_addrs = n->n_addrs };
                }
        }
        if (d->n_nics > 1) {
                p.more_nics = more;
                p.n_more_nics = d->n_nics - 1;
        }
        r = seed_check(&p, err, sizeof(err));
        if (r == 0)
                r = seed_build_iso(&p, path, err, sizeof(err));
        if (r < 0) {
                char msg[TMSG_ERR];
                snprintf(msg, sizeof(msg), "cannot build the cloud-init seed: %s", err);
                note_error_msg(a, d->vm_id, msg);
        } else {
                log_info("vm %" PRIu64 ": cloud-init seed %s built", d->vm_id, path);
        }
        tmsg_clear(&rep);
        return r;
}

static void copy_cancel(struct agent *a, uint64_t vm_id);

/* Removes a guest's disk and seed (0 when they are not there). */
static int remove_storage(struct agent *a, uint64_t vm_id)
{
        char vol[64], seed[CFG_STR_MAX + 64];
        int r = 0, k;

        copy_cancel(a, vm_id);
        vol_name(vm_id, vol, sizeof(vol));
        for (int t = 0; t < STORAGE__MAX; t++)
                if ((k = hv_vol_delete(a->hv, pool_of((enum storage)t), vol)) < 0)
                        r = k;
        seed_path(vm_id, seed, sizeof(seed));
        if (unlink(seed) < 0 && errno != ENOENT) {
                log_error("vm %" PRIu64 ": cannot remove seed %s: %s", vm_id, seed,
                          strerror(errno));
                r = -errno;
        }
        return r;
}

/* ---- a new disk copied from another guest's snapshot ---- */

static const char *pool_dir_of(enum storage t)
{
        return t == STORAGE_HDD ? cfg.pool_hdd_dir : cfg.pool_ssd_dir;
}

static void disk_file(enum storage t, uint64_t vm_id, const char *suffix, char *buf, size_t len)
{
        snprintf(buf, len, "%s/" HV_NAME_PREFIX "%" PRIu64 ".qcow2%s", pool_dir_of(t), vm_id,
                 suffix);
}

static void copy_drop(struct agent *a, size_t i)
{
        memmove(&a->copies[i], &a->copies[i + 1], (a->n_copies - i - 1) * sizeof(a->copies[0]));
        a->n_copies--;
}

/* Stops a copy in flight for the vm (its guest is no longer wanted, or
 * is being made again) and removes what it wrote. */
static void copy_cancel(struct agent *a, uint64_t vm_id)
{
        char part[CFG_STR_MAX + 64];
        for (size_t i = 0; i < a->n_copies; i++) {
                if (a->copies[i].vm_id != vm_id)
                        continue;
                kill(a->copies[i].pid, SIGKILL);
                waitpid(a->copies[i].pid, NULL, 0);
                copy_drop(a, i);
                break;
        }
        for (int t = 0; t < STORAGE__MAX; t++) {
                disk_file((enum storage)t, vm_id, ".part", part, sizeof(part));
                unlink(part);
        }
}

static int fsync_path(const char *path, int flags)
{
        int fd = open(path, flags | O_CLOEXEC);
        int r = fd < 0 || fsync(fd) < 0 ? -errno : 0;
        if (fd >= 0)
                close(fd);
        return r;
}

/* Starts qemu-img copying the snapshot's view of src into part: only what
 * differs from the base image, which the new disk is an overlay of. The
 * child dies with the agent (a crash leaves a .part, removed next time). */
static int copy_start(struct agent *a, const struct dom_desired *d, const char *src,
                      const char *part, const char *base, const char *base_fmt)
{
        char snap[64];
        pid_t parent = getpid(), pid;

        snprintf(snap, sizeof(snap), "snapshot.name=" HV_SNAP_PREFIX "%" PRIu64, d->source_snap);
        const char *argv[] = { "qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-l", snap,
                               "-O", "qcow2", "-B", base, "-F", base_fmt, src, part, NULL };
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                sigset_t none;
                sigemptyset(&none);
                sigprocmask(SIG_SETMASK, &none, NULL);
                signal(SIGPIPE, SIG_DFL);
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != parent)
                        _exit(126);
                execvp(argv[0], (char *const *)argv);
                _exit(127);
        }
        a->copies[a->n_copies].vm_id = d->vm_id;
        a->copies[a->n_copies].pid = pid;
        a->copies[a->n_copies].started_ms = util_mono_ms();
        a->n_copies++;
        log_info("vm %" PRIu64 ": copying snapshot %" PRIu64 " of vm %" PRIu64 " into its disk",
                 d->vm_id, d->source_snap, d->source_vm);
        return 0;
}

/* The disk of a guest made from a snapshot: 0 once its file is in the pool,
 * -EINPROGRESS while it is copied, or an error (noted). Written as a .part
 * file, synced, then renamed: never a half-copied disk. */
static int disk_from_snapshot(struct agent *a, const struct dom_desired *d, const char *base,
                              const char *base_fmt)
{
        char final[CFG_STR_MAX + 64], part[CFG_STR_MAX + 64], src[CFG_STR_MAX + 64];
        char msg[TMSG_ERR];
        int st = 0, r;

        disk_file(d->storage, d->vm_id, "", final, sizeof(final));
        disk_file(d->storage, d->vm_id, ".part", part, sizeof(part));
        if (access(final, F_OK) == 0)
                return hv_pool_refresh(a->hv, pool_of(d->storage));
        for (size_t i = 0; i < a->n_copies; i++) {
                if (a->copies[i].vm_id != d->vm_id)
                        continue;
                pid_t w = waitpid(a->copies[i].pid, &st, WNOHANG);
                if (w == 0) {
                        a->fetching++;
                        return -EINPROGRESS;
                }
                int64_t took = util_mono_ms() - a->copies[i].started_ms;
                copy_drop(a, i);
                if (w > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
                        if ((r = fsync_path(part, O_RDONLY)) < 0 || rename(part, final) < 0 ||
                            (r = fsync_path(pool_dir_of(d->storage), O_RDONLY | O_DIRECTORY)) < 0) {
                                r = r < 0 ? r : -errno;
                                unlink(part);
                                snprintf(msg, sizeof(msg), "cannot keep the copied disk: %s",
                                         strerror(-r));
                                note_error_msg(a, d->vm_id, msg);
                                return r;
                        }
                        log_info("vm %" PRIu64 ": disk copied from snapshot %" PRIu64
                                 " in %" PRId64 " ms",
                                 d->vm_id, d->source_snap, took);
                        crash_point("snapshot-copied");
                        return hv_pool_refresh(a->hv, pool_of(d->storage));
                }
                unlink(part);
                snprintf(msg, sizeof(msg),
                         "cannot copy snapshot %" PRIu64 " of vm %" PRIu64 ": qemu-img %s %d",
                         d->source_snap, d->source_vm,
                         w > 0 && WIFEXITED(st) ? "exited with" : "killed by signal",
                         w > 0 && WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                note_error_msg(a, d->vm_id, msg);
                return -EIO;
        }
        /* Not started yet: the snapshot must be on this host. */
        struct hv_domain sd;
        int have = 0;
        if (strcmp(a->dom_type, "test") == 0 && hv_get(a->hv, d->vm_id, &sd) == 0)
                return 0; /* made already (a test driver's disk has no file) */
        if (hv_get(a->hv, d->source_vm, &sd) == 0)
                for (size_t k = 0; k < sd.n_snaps; k++)
                        have |= sd.snaps[k] == d->source_snap;
        /* libvirt's test driver keeps no disk files: nothing to copy, the
         * disk is made as from the image (the tests of the copy run on
         * QEMU). */
        if (have && strcmp(a->dom_type, "test") == 0)
                return 0;
        src[0] = '\0';
        for (int t = 0; t < STORAGE__MAX && !src[0] && have; t++) {
                disk_file((enum storage)t, d->source_vm, "", src, sizeof(src));
                if (access(src, F_OK) != 0)
                        src[0] = '\0';
        }
        if (!have || !src[0]) {
                snprintf(msg, sizeof(msg), "snapshot %" PRIu64 " of vm %" PRIu64
                                           " is not on this host",
                         d->source_snap, d->source_vm);
                note_error_msg(a, d->vm_id, msg);
                return -ENOENT;
        }
        if (a->n_copies == sizeof(a->copies) / sizeof(a->copies[0])) {
                a->fetching++; /* all copy slots busy: wait for one */
                return -EINPROGRESS;
        }
        unlink(part);
        if ((r = copy_start(a, d, src, part, base, base_fmt)) < 0) {
                note_error(a, d->vm_id, "start qemu-img", r);
                return r;
        }
        a->fetching++;
        return -EINPROGRESS;
}

/* Makes the guest's domain: its base image (fetched once, verified), its
 * disk (a qcow2 overlay on it), its seed, then the domain. Every step keeps
 * what is already there, so after a crash at any point the next pass
 * finishes the work. -EINPROGRESS while the image is being fetched. */
/* Strings a struct domxml_nic points into. */
struct nic_buf {
        char bridge[32];
        char ips[TMSG_MAX_NIC_ADDRS][TMSG_IP];
        char ll6[TMSG_IP];
};

/* The guest's IPv6 link-local address from its MAC (EUI-64), "" if the MAC
 * is malformed. */
static void link_local6(const char *mac, char *buf, size_t len)
{
        unsigned b[6];
        buf[0] = '\0';
        if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
                return;
        snprintf(buf, len, "fe80::%x:%x:%x:%x", ((b[0] ^ 2u) << 8) | b[1], (b[2] << 8) | 0xffu,
                 0xfe00u | b[3], (b[4] << 8) | b[5]);
}

/* A NIC as the domain XML wants it: vni 0 on the public bridge, the others
 * on their network's bridge; filtered (nic_filter) to its own addresses.
 * The IPV6 parameter is never empty (libvirt refuses a filter whose
 * variable has no value): without IPv6 addresses it is the NIC's own
 * link-local address, which the filter allows anyway. */
static void nic_params(const struct agent *a, const struct nic_desired *n, struct nic_buf *b,
                       struct domxml_nic *ret)
{
        if (n->vni)
                snprintf(b->bridge, sizeof(b->bridge), "tbr%" PRIu32, n->vni);
        else
                snprintf(b->bridge, sizeof(b->bridge), "%s", cfg.public_bridge);
        *ret = (struct domxml_nic){
                .bridge = b->bridge,
                .mac = n->mac,
                .mtu = n->vni ? 1450 : 0,
                /* the test driver has no nwfilter */
                .filter = strcmp(a->dom_type, "test") ? cfg.nic_filter : NULL,
        };
        for (size_t k = 0; k < n->n_addrs && k < TMSG_MAX_NIC_ADDRS; k++) {
                snprintf(b->ips[k], sizeof(b->ips[k]), "%s", n->addrs[k]);
                b->ips[k][strcspn(b->ips[k], "/")] = '\0';
                if (strchr(b->ips[k], ':')) {
                        if (ret->n_ips6 < DOMXML_NIC_IPS_MAX)
                                ret->ips6[ret->n_ips6++] = b->ips[k];
                } else if (ret->n_ips < DOMXML_NIC_IPS_MAX) {
                        ret->ips[ret->n_ips++] = b->ips[k];
                }
        }
        /* Only our own filter knows IPV6; libvirt's clean-traffic and
         * others take IP alone. */
        if (ret->filter && strcmp(ret->filter, "tasman-clean-traffic") == 0 && !ret->n_ips6) {
                link_local6(n->mac, b->ll6, sizeof(b->ll6));
                if (b->ll6[0])
                        ret->ips6[ret->n_ips6++] = b->ll6;
        }
        if (!ret->filter || strcmp(ret->filter, "tasman-clean-traffic") != 0)
                ret->n_ips6 = 0;
}

static int define(struct agent *a, const struct dom_desired *d)
{
        char kernel[CFG_STR_MAX + 80], initrd[CFG_STR_MAX + 80], cmd[1024], full_cmd[1200];
        char log_path[CFG_STR_MAX + 64], base[CFG_STR_MAX + 80], disk[1024], vol[64];
        char seed[CFG_STR_MAX + 64], err[TMSG_ERR - 32], msg[TMSG_ERR];
        const struct img_desired *img;
        struct domxml_params p = {
                .vm_id = d->vm_id,
                .hostname = d->hostname,
                .domain_type = a->dom_type,
                .vcpus = d->vcpus,
                .ram_mb = d->ram_mb,
                .cpu_cap = d->cpu_cap,
                .reboot_done = d->reboot_seq,
                .rebuild_done = d->rebuild_seq,
        };
        int r;

        if ((unsigned)d->storage >= STORAGE__MAX)
                return -EPROTONOSUPPORT; /* a storage type newer than this agent */
        if (!(img = find_image(a, d->image))) {
                snprintf(msg, sizeof(msg), "image %s: not in the desired state", d->image);
                note_error_msg(a, d->vm_id, msg);
                return -ENOENT;
        }
        r = imgcache_get(a->images, img->url, img->sha256, base, sizeof(base), err, sizeof(err));
        if (r == -EINPROGRESS) {
                a->fetching++;
                return r;
        }
        if (r < 0) {
                snprintf(msg, sizeof(msg), "cannot fetch image %s: %s", img->slug, err);
                note_error_msg(a, d->vm_id, msg);
                return r;
        }
        crash_point("image-ready");
        if ((r = ensure_pools(a)) < 0)
                return r;
        vol_name(d->vm_id, vol, sizeof(vol));
        if (d->source_snap && (r = disk_from_snapshot(a, d, base, img->format)) < 0)
                return r;
        r = hv_vol_create(a->hv, pool_of(d->storage), vol, (uint64_t)d->disk_gb << 30, base,
                          img->format, disk, sizeof(disk));
        if (r == 0) /* an existing disk after a resize (never shrunk) */
                r = hv_vol_grow(a->hv, pool_of(d->storage), vol, (uint64_t)d->disk_gb << 30);
        if (r < 0)
                return r;
        crash_point("disk-created");
        seed_path(d->vm_id, seed, sizeof(seed));
        if ((r = ensure_seed(a, d, seed)) < 0)
                return r;
        crash_point("seed-built");
        p.disk = disk;
        p.seed = seed;
        p.disk_iops = (uint64_t)(d->storage == STORAGE_HDD ? cfg.hdd_iops : cfg.ssd_iops);
        p.disk_bps = (uint64_t)(d->storage == STORAGE_HDD ? cfg.hdd_bps : cfg.ssd_bps);
        p.resize_done = d->resize_seq;
        p.restore_done = d->restore_seq;
        p.rescue = d->rescue;
        if (d->rescue) {
                boot_files(cfg.rescue_dir, kernel, initrd, cmd, sizeof(kernel));
                if (!kernel[0]) {
                        snprintf(msg, sizeof(msg), "no rescue system on this host (%s/vmlinuz)",
                                 cfg.rescue_dir);
                        note_error_msg(a, d->vm_id, msg);
                        return -ENOENT;
                }
        } else {
                image_files(d->image, kernel, initrd, cmd, sizeof(kernel));
        }
        if (kernel[0]) {
                snprintf(full_cmd, sizeof(full_cmd), "%s tasman.hostname=%s", cmd, d->hostname);
                p.kernel = kernel;
                p.initrd = initrd;
                p.cmdline = full_cmd;
        }
        if (strcmp(a->dom_type, "test") != 0) {
                snprintf(log_path, sizeof(log_path), "%s/console/" HV_NAME_PREFIX "%" PRIu64 ".log",
                         cfg.state_dir, d->vm_id);
                p.console_log = log_path;
        }
        struct nic_buf nb[TMSG_MAX_NICS];
        struct domxml_nic nics[TMSG_MAX_NICS];
        for (size_t i = 0; i < d->n_nics && i < TMSG_MAX_NICS; i++)
                nic_params(a, &d->nics[i], &nb[i], &nics[i]);
        p.nics = nics;
        p.n_nics = d->n_nics < TMSG_MAX_NICS ? d->n_nics : TMSG_MAX_NICS;
        r = hv_define(a->hv, &p);
        if (r == 0)
                crash_point("defined");
        return r;
}

static int pending_add(struct agent *a, uint64_t vm_id, int64_t deadline)
{
        size_t i = 0;
        while (i < a->n_pending && a->pending[i].vm_id < vm_id)
                i++;
        if (i < a->n_pending && a->pending[i].vm_id == vm_id)
                return 0;
        if (a->n_pending >= MAX_PENDING)
                return -ENOSPC;
        memmove(&a->pending[i + 1], &a->pending[i], (a->n_pending - i) * sizeof(a->pending[0]));
        a->pending[i] = (struct rc_pending){ .vm_id = vm_id, .deadline_ms = deadline };
        a->n_pending++;
        return 0;
}

static void pending_drop(struct agent *a, uint64_t vm_id)
{
        for (size_t i = 0; i < a->n_pending; i++) {
                if (a->pending[i].vm_id == vm_id) {
                        memmove(&a->pending[i], &a->pending[i + 1],
                                (a->n_pending - i - 1) * sizeof(a->pending[0]));
                        a->n_pending--;
                        return;
                }
        }
}

/* Takes the snapshots that failed out of the desired state, and forgets
 * failures the broker no longer asks for. */
static void filter_failed_snaps(struct agent *a)
{
        size_t w = 0;
        for (size_t i = 0; i < a->n_snap_failed; i++) {
                struct dom_desired *d = (struct dom_desired *)find_desired(a, a->snap_failed[i].vm_id);
                int wanted = 0;
                for (size_t k = 0; d && k < d->n_snaps; k++) {
                        if (d->snaps[k].id != a->snap_failed[i].snap_id)
                                continue;
                        memmove(&d->snaps[k], &d->snaps[k + 1],
                                (d->n_snaps - k - 1) * sizeof(d->snaps[0]));
                        d->n_snaps--;
                        wanted = 1;
                        break;
                }
                if (wanted)
                        a->snap_failed[w++] = a->snap_failed[i];
        }
        a->n_snap_failed = w;
}

static void snap_fail(struct agent *a, uint64_t vm_id, uint64_t snap_id, int err)
{
        char msg[TMSG_ERR];
        if (a->n_snap_failed < sizeof(a->snap_failed) / sizeof(a->snap_failed[0])) {
                a->snap_failed[a->n_snap_failed].vm_id = vm_id;
                a->snap_failed[a->n_snap_failed].snap_id = snap_id;
                a->n_snap_failed++;
        }
        snprintf(msg, sizeof(msg), "cannot make snapshot %" PRIu64 ": %s", snap_id, strerror(-err));
        log_warn("vm %" PRIu64 ": %s", vm_id, msg);
        note_error_msg(a, vm_id, msg);
        filter_failed_snaps(a);
}

static uint64_t snap_failed_of(const struct agent *a, uint64_t vm_id)
{
        for (size_t i = 0; i < a->n_snap_failed; i++)
                if (a->snap_failed[i].vm_id == vm_id)
                        return a->snap_failed[i].snap_id;
        return 0;
}

static int run_op(struct agent *a, const struct rc_op *op)
{
        const struct dom_desired *d = op->des;
        int r = 0;

        log_info("vm %" PRIu64 ": %s", op->vm_id, rc_op_to_string(op->type));
        switch (op->type) {
        case RC_DEFINE:
                r = define(a, d);
                break;
        case RC_START:
                crash_point("before-start");
                r = hv_start(a->hv, op->vm_id);
                break;
        case RC_SHUTDOWN:
                r = hv_shutdown(a->hv, op->vm_id);
                if (r == 0)
                        r = pending_add(a, op->vm_id, util_mono_ms() + cfg.shutdown_timeout_ms);
                break;
        case RC_DESTROY:
                r = hv_destroy(a->hv, op->vm_id);
                break;
        case RC_UNDEFINE:
                /* Disk and seed first: a crash in between leaves the domain,
                 * which the next pass removes again, never an orphan disk. */
                r = hv_destroy(a->hv, op->vm_id);
                if (r == 0 || r == -ENOENT)
                        r = remove_storage(a, op->vm_id);
                if (r == 0)
                        crash_point("delete-storage-removed");
                if (r == 0)
                        r = hv_undefine(a->hv, op->vm_id);
                break;
        case RC_MARK_REBOOT: {
                /* Keep rebuild_done as it is: read it back from the domain. */
                struct hv_domain *doms = NULL;
                size_t n = 0;
                uint64_t rebuild_done = 0;
                r = hv_list(a->hv, &doms, &n);
                if (r < 0)
                        break;
                for (size_t i = 0; i < n; i++)
                        if (doms[i].vm_id == op->vm_id)
                                rebuild_done = doms[i].rebuild_done;
                free(doms);
                r = hv_set_counters(a->hv, op->vm_id, d->reboot_seq, rebuild_done);
                break;
        }
        case RC_REBUILD:
                /* The old disk and seed go before the domain, which still
                 * says "not rebuilt" until it is defined anew. */
                r = hv_destroy(a->hv, op->vm_id);
                if (r == 0 || r == -ENOENT)
                        r = remove_storage(a, op->vm_id);
                if (r == 0)
                        crash_point("rebuild-storage-removed");
                if (r == 0)
                        r = hv_undefine(a->hv, op->vm_id);
                if (r == 0)
                        crash_point("rebuild-undefined");
                if (r == 0)
                        r = define(a, d);
                break;
        case RC_DROP_PENDING:
                pending_drop(a, op->vm_id);
                break;
        case RC_REDEFINE:
                r = define(a, d);
                break;
        case RC_SNAPSHOT: {
                int frozen = 0;
                int64_t t0 = util_mono_ms();
                crash_point("before-snapshot");
                r = fail_point("snapshot");
                if (r == 0)
                        r = hv_snap_create(a->hv, op->vm_id, op->snap_id, &frozen);
                if (r < 0) {
                        snap_fail(a, op->vm_id, op->snap_id, r);
                        break;
                }
                log_info("vm %" PRIu64 ": snapshot %" PRIu64 " made in %" PRId64 " ms%s",
                         op->vm_id, op->snap_id, util_mono_ms() - t0,
                         frozen ? " (file systems frozen)" : "");
                crash_point("snapshot-made");
                break;
        }
        case RC_SNAP_DELETE:
                r = hv_snap_delete(a->hv, op->vm_id, op->snap_id);
                break;
        case RC_RESTORE: {
                char msg[TMSG_ERR];
                crash_point("before-restore");
                r = hv_snap_revert(a->hv, op->vm_id, d->restore_snap);
                if (r == -ENOENT) {
                        snprintf(msg, sizeof(msg),
                                 "cannot restore snapshot %" PRIu64 ": not on this host",
                                 d->restore_snap);
                        note_error_msg(a, op->vm_id, msg);
                        break;
                }
                if (r < 0)
                        break;
                crash_point("restore-reverted");
                /* The definition is the snapshot's now: the desired one again,
                 * the restore marked done (the disk grows back if it was
                 * resized since). */
                r = define(a, d);
                break;
        }
        case RC_NIC_ATTACH: {
                struct nic_buf nb;
                struct domxml_nic nic;
                if (op->nic >= d->n_nics || op->nic >= TMSG_MAX_NICS) {
                        r = -EINVAL;
                        break;
                }
                nic_params(a, &d->nics[op->nic], &nb, &nic);
                r = hv_nic_attach(a->hv, op->vm_id, &nic);
                if (r == -EOPNOTSUPP) {
                        /* No hot-plug here (libvirt's test driver): into
                         * the definition, for the next boot. */
                        log_info("vm %" PRIu64 ": NIC %s joins the definition (no hot-plug on "
                                 "this hypervisor)",
                                 op->vm_id, nic.mac);
                        r = define(a, d);
                }
                break;
        }
        default:
                r = -EINVAL;
        }
        if (r < 0 && r != -EINPROGRESS && !has_error(a, op->vm_id))
                note_error(a, op->vm_id, rc_op_to_string(op->type), r);
        return r;
}

static int full_next_fail(struct agent *a)
{
        a->full_next = 1;
        return 1;
}

/* Re-reads the domains the last ops touched and updates obs (sorted by
 * vm_id) in place: one libvirt call per touched domain, not per domain. */
static int refresh(struct agent *a, const struct rc_op *ops, size_t n_ops,
                   struct hv_domain **obs, size_t *n_obs)
{
        int failed = 0;

        for (size_t i = 0; i < n_ops; i++) {
                uint64_t id = ops[i].vm_id;
                struct hv_domain d;
                size_t pos = 0;

                if (i > 0 && ops[i - 1].vm_id == id)
                        continue;
                while (pos < *n_obs && (*obs)[pos].vm_id < id)
                        pos++;
                int have = pos < *n_obs && (*obs)[pos].vm_id == id;
                int r = hv_get(a->hv, id, &d);
                if (r == 0 && have) {
                        (*obs)[pos] = d;
                } else if (r == 0) {
                        struct hv_domain *n = realloc(*obs, (*n_obs + 1) * sizeof(**obs));
                        if (!n)
                                return -ENOMEM;
                        *obs = n;
                        memmove(&n[pos + 1], &n[pos], (*n_obs - pos) * sizeof(*n));
                        n[pos] = d;
                        (*n_obs)++;
                } else if (r == -ENOENT && have) {
                        memmove(&(*obs)[pos], &(*obs)[pos + 1], (*n_obs - pos - 1) * sizeof(**obs));
                        (*n_obs)--;
                } else if (r != -ENOENT) {
                        /* libvirt could not tell: keep what we knew and
                         * re-read everything before the next report. */
                        failed = 1;
                }
        }
        return failed ? -EIO : 0;
}

static void mark_dirty(struct agent *a, uint64_t vm_id)
{
        if (a->n_dirty && a->dirty[a->n_dirty - 1] == vm_id)
                return;
        if (a->n_dirty == a->cap_dirty) {
                size_t ncap = a->cap_dirty ? a->cap_dirty * 2 : 64;
                uint64_t *n = realloc(a->dirty, ncap * sizeof(*n));
                if (!n) {
                        a->full_next = 1; /* cannot track: report everything */
                        return;
                }
                a->dirty = n;
                a->cap_dirty = ncap;
        }
        a->dirty[a->n_dirty++] = vm_id;
}

static int wanted_or_present(const struct agent *a, uint64_t vm_id)
{
        if (find_desired(a, vm_id))
                return 1;
        for (size_t i = 0; i < a->n_obs; i++)
                if (a->obs[i].vm_id == vm_id)
                        return 1;
        return 0;
}

/* "tasman-<id><suffix>" -> id, or 0. */
static uint64_t id_of(const char *name, const char *suffix)
{
        size_t pl = strlen(HV_NAME_PREFIX), n = strlen(name), sl = strlen(suffix);
        char num[24];
        uint64_t id;
        if (n <= pl + sl || n - pl - sl >= sizeof(num) ||
            strncmp(name, HV_NAME_PREFIX, pl) != 0 || strcmp(name + n - sl, suffix) != 0)
                return 0;
        memcpy(num, name + pl, n - pl - sl);
        num[n - pl - sl] = '\0';
        char buf[64];
        snprintf(buf, sizeof(buf), HV_NAME_PREFIX "%s", num);
        return domxml_parse_name(buf, &id) == 0 ? id : 0;
}

/* Disks and seeds of guests that are neither wanted nor on the host any
 * more (left by a failure half-way, or a crash): removed. Only names of
 * ours are looked at; anything else in the pools is never touched. */
static void sweep(struct agent *a)
{
        char dir[CFG_STR_MAX + 16], path[CFG_STR_MAX + 300];
        uint64_t id;

        if (!a->pools_ready)
                return;
        for (int t = 0; t < STORAGE__MAX; t++) {
                char **names = NULL;
                size_t n = 0;
                if (hv_vol_list(a->hv, pool_of((enum storage)t), &names, &n) < 0)
                        continue;
                for (size_t i = 0; i < n; i++) {
                        int part = 0;
                        if ((id = id_of(names[i], ".qcow2.part"))) {
                                /* a copy from a snapshot, cut short */
                                part = 1;
                                for (size_t k = 0; k < a->n_copies && part; k++)
                                        part = a->copies[k].vm_id != id;
                        }
                        if (part || ((id = id_of(names[i], ".qcow2")) && !wanted_or_present(a, id))) {
                                log_info("vm %" PRIu64 ": removing leftover disk %s", id,
                                         names[i]);
                                hv_vol_delete(a->hv, pool_of((enum storage)t), names[i]);
                        }
                }
                hv_names_free(names, n);
        }
        snprintf(dir, sizeof(dir), "%s/seeds", cfg.state_dir);
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
                int tmp = (id = id_of(e->d_name, ".iso.tmp")) != 0;
                if (!tmp && !((id = id_of(e->d_name, ".iso")) && !wanted_or_present(a, id)))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                log_info("vm %" PRIu64 ": removing leftover seed %s", id, path);
                if (unlink(path) < 0 && errno != ENOENT)
                        log_warn("cannot remove %s: %s", path, strerror(errno));
        }
        if (d)
                closedir(d);
}

/* Re-reads libvirt fully when due (or when a report was lost), then diffs
 * and acts until nothing is left to do (bounded), re-reading only what it
 * touched. Returns 1 when it re-read libvirt fully, so this report can be a
 * full one; a failure while acting sets full_next for the next pass. */
static int converge(struct agent *a)
{
        int64_t now = util_mono_ms();
        int r, full = 0;

        a->n_errors = 0;
        a->fetching = 0;
        if (a->full_next || !a->obs || now - a->last_full_ms >= cfg.observe_interval_ms) {
                struct hv_domain *obs = NULL;
                size_t n_obs = 0;
                r = hv_list(a->hv, &obs, &n_obs);
                if (r < 0)
                        return r;
                free(a->obs);
                a->obs = obs;
                a->n_obs = n_obs;
                a->last_full_ms = now;
                a->n_dirty = 0;
                a->full_next = 0; /* the ops below may set it again */
                full = 1;
        }
        /* The networks first: a guest's NIC needs its bridge. */
        /* Applied when the desired state changes, after a failed apply,
         * and on full passes (drift: net.c skips its dumps when nothing of
         * ours changed since). */
        if (a->net && a->registered && a->applied_gen && (full || a->net_gen != a->applied_gen)) {
                const struct msg_sync_reply *d = &a->desired;
                const struct net_config nc = { .local_ip = cfg.underlay_ip,
                                               .public_bridge = cfg.public_bridge,
                                               .public_uplink = cfg.public_uplink };
                struct net_stats st = { 0 };
                int64_t t0 = util_mono_ms();
                r = net_apply(a->net, &nc, d->networks, d->n_networks,
                              (const char(*)[TMSG_IP])d->remotes, d->n_remotes, d->fdb, d->n_fdb,
                              &st);
                if (r == 0)
                        a->net_gen = a->applied_gen;
                if (util_mono_ms() - t0 > 1000)
                        log_warn("networks: applying took %" PRId64 " ms", util_mono_ms() - t0);
                if (st.links_added || st.links_changed || st.links_removed || st.fdb_added ||
                    st.fdb_removed)
                        log_info("networks: %zu networks; links +%zu ~%zu -%zu, entries +%zu -%zu "
                                 "in %" PRId64 " ms",
                                 d->n_networks, st.links_added, st.links_changed, st.links_removed,
                                 st.fdb_added, st.fdb_removed, util_mono_ms() - t0);
        }
        struct hv_domain *obs = a->obs;
        size_t n_obs = a->n_obs;
        for (int round = 0; round < 4; round++) {
                struct rc_op *ops = NULL;
                size_t n_ops = 0, failed = 0, any_failed = 0;

                if (!a->registered || a->applied_gen == 0)
                        break; /* no desired state yet: touch nothing */
                r = reconcile_diff(a->desired.domains, a->desired.n_domains, obs, n_obs,
                                   a->pending, a->n_pending, util_mono_ms(), &ops, &n_ops);
                if (r < 0)
                        break;
                for (size_t i = 0; i < n_ops; i++) {
                        /* After a failure, skip the rest of that vm's ops. */
                        if (i > 0 && ops[i].vm_id == ops[i - 1].vm_id && failed)
                                continue;
                        failed = run_op(a, &ops[i]) < 0;
                        any_failed |= failed;
                }
                if (n_ops && refresh(a, ops, n_ops, &obs, &n_obs) < 0)
                        any_failed = full_next_fail(a);
                for (size_t i = 0; i < n_ops; i++)
                        mark_dirty(a, ops[i].vm_id);
                free(ops);
                if (n_ops == 0 || any_failed)
                        break; /* done, or retry failures on the next sync */
        }
        a->obs = obs;
        a->n_obs = n_obs;
        if (full && a->registered && a->applied_gen)
                sweep(a);
        return full;
}

static const struct hv_domain *find_obs(const struct agent *a, uint64_t vm_id)
{
        size_t lo = 0, hi = a->n_obs;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (a->obs[mid].vm_id == vm_id)
                        return &a->obs[mid];
                if (a->obs[mid].vm_id < vm_id)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static void put_report(struct msg_sync *s, const struct agent *a, uint64_t vm_id,
                       const struct hv_domain *o)
{
        struct dom_observed *d = &s->domains[s->n_domains++];
        const char *err = vm_error(a, vm_id);
        d->vm_id = vm_id;
        d->state = o ? o->state : POWER_UNKNOWN; /* unknown: not on this host */
        d->reboot_done = o ? o->reboot_done : 0;
        d->rebuild_done = o ? o->rebuild_done : 0;
        d->resize_done = o ? o->resize_done : 0;
        d->rescue = o ? o->rescue : 0;
        if (o) {
                memcpy(d->snaps, o->snaps, o->n_snaps * sizeof(d->snaps[0]));
                d->n_snaps = o->n_snaps;
                d->restore_done = o->restore_done;
        }
        d->snap_failed = snap_failed_of(a, vm_id);
        if (err)
                snprintf(d->error, TMSG_ERR, "%s", err);
}

static int cmp_u64(const void *x, const void *y)
{
        uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
        return a < b ? -1 : a > b;
}

static int sync_once(struct agent *a)
{
        struct tmsg req = { .type = TMSG_SYNC }, rep = { 0 };
        struct msg_sync *s = &req.sync;
        int r, full;

        r = converge(a);
        if (r < 0)
                return r;
        full = r;
        util_strlcpy(s->host_id, cfg.host_id, sizeof(s->host_id));
        read_boot_id(s->boot_id, sizeof(s->boot_id));
        s->applied_generation = a->applied_gen;
        /* Come back soon while graceful stops or errors are in flight, and
         * when idle at least every observe_interval_ms, so a change made to
         * a guest outside Tasman (or a crash) is seen and reported then. */
        uint32_t hold = a->hold_ms ? a->hold_ms : 20000;
        if (cfg.observe_interval_ms > 0 && (uint64_t)cfg.observe_interval_ms < hold)
                hold = (uint32_t)cfg.observe_interval_ms;
        if (a->n_errors && hold > 5000)
                hold = 5000;
        if ((a->n_pending || a->fetching) && hold > 1000)
                hold = 1000; /* a stop or an image fetch will be done soon */
        s->max_hold_ms = hold;
        s->partial = !full;
        s->n_present = (uint32_t)a->n_obs;
        s->domains = calloc(a->n_obs + a->n_dirty + a->n_errors + 1, sizeof(*s->domains));
        if (!s->domains)
                return -ENOMEM;
        for (size_t i = 0; i < a->n_obs; i++) {
                const struct dom_desired *d = find_desired(a, a->obs[i].vm_id);
                if (d && (a->obs[i].state == POWER_RUNNING || a->obs[i].state == POWER_PAUSED)) {
                        s->vcpus_used += d->vcpus;
                        s->ram_mb_used += d->ram_mb;
                }
                if (full)
                        put_report(s, a, a->obs[i].vm_id, &a->obs[i]);
        }
        if (!full) {
                if (a->n_dirty)
                        qsort(a->dirty, a->n_dirty, sizeof(*a->dirty), cmp_u64);
                for (size_t i = 0; i < a->n_dirty; i++)
                        if (i == 0 || a->dirty[i] != a->dirty[i - 1])
                                put_report(s, a, a->dirty[i], find_obs(a, a->dirty[i]));
        }
        /* A vm that could not even be defined has no domain to report:
         * report its error alone (state unknown = absent). */
        for (size_t i = 0; i < a->n_errors; i++) {
                int listed = 0;
                for (size_t k = 0; k < s->n_domains && !listed; k++)
                        listed = s->domains[k].vm_id == a->errors[i].vm_id;
                if (!listed && s->n_domains < TMSG_MAX_DOMAINS)
                        put_report(s, a, a->errors[i].vm_id, NULL);
        }
        a->n_dirty = 0;
        /* The broker answers within the hold; past it plus a margin the
         * reply is lost (broker gone, or a balancer dropped the link). */
        r = roundtrip(a, &req, &rep, (int)hold + 15000);
        tmsg_clear(&req);
        if (r < 0) {
                a->full_next = 1; /* the report may be lost: send all next time */
                return r;
        }
        if (rep.type == TMSG_ERROR) {
                a->full_next = 1;
                if (rep.error.code == TMSG_E_UNKNOWN_HOST) {
                        log_warn("broker %s: does not know host %s; joining again", brokers[cur_broker],
                                 cfg.host_id);
                        a->registered = 0;
                        tmsg_clear(&rep);
                        return 0;
                }
                /* The broker could not take the report (its store failing?):
                 * back off rather than spin on it. */
                log_warn("broker %s: %s", brokers[cur_broker], rep.error.message);
                tmsg_clear(&rep);
                return -EIO;
        }
        if (rep.type != TMSG_SYNC_REPLY) {
                tmsg_clear(&rep);
                return -EPROTO;
        }
        if (rep.sync_reply.generation != a->applied_gen)
                log_info("host %s: desired state generation %" PRIu64 " (%zu domains)",
                         cfg.host_id, rep.sync_reply.generation, rep.sync_reply.n_domains);
        struct tmsg old = { .type = TMSG_SYNC_REPLY, .sync_reply = a->desired };
        tmsg_clear(&old);
        a->desired = rep.sync_reply;
        a->applied_gen = rep.sync_reply.generation ? rep.sync_reply.generation : 1;
        filter_failed_snaps(a);
        return 0;
}

static int run(struct agent *a)
{
        int backoff_ms = 100;

        while (!atomic_load(&stopping)) {
                int r = a->registered ? sync_once(a) : hello(a);
                if (atomic_load(&stopping))
                        break;
                if (n_brokers > 1 && (r == -ECONNRESET || r == -EHOSTUNREACH ||
                                      atomic_load(&link_lost))) {
                        next_broker(a);
                        backoff_ms = 100;
                        continue;
                }
                atomic_store(&link_lost, 0);
                if (r == 0 || r == -ETIMEDOUT || r == -ECONNRESET) {
                        backoff_ms = 100;
                        continue;
                }
                log_debug("agent: exchange failed (%s); retrying in %d ms", strerror(-r),
                          backoff_ms);
                usleep((useconds_t)backoff_ms * 1000);
                backoff_ms = backoff_ms * 2 > 10000 ? 10000 : backoff_ms * 2;
        }
        return 0;
}

int main(int argc, char **argv)
{
        static struct agent a;
        pthread_t sig_thread;
        sigset_t set;
        int r;

        if (gethostname(cfg.host_id, sizeof(cfg.host_id)) != 0)
                snprintf(cfg.host_id, sizeof(cfg.host_id), "localhost");
        r = cfg_load(opts, N_OPTS, argc, argv, "tasman-agent",
                     "Keeps this hypervisor host's guests in the state the Tasman broker asks\n"
                     "for, and reports what it observes. It dials the broker; the broker never\n"
                     "dials it.");
        if (r != 0)
                return r > 0 ? 0 : 2;
        log_set_ident("tasman-agent");
        if (log_set_level_name(cfg.log_level) < 0) {
                fprintf(stderr, "tasman-agent: log_level must be error, warn, info or debug\n");
                return 2;
        }
        if (!cfg.host_id[0] || strlen(cfg.host_id) >= TMSG_STR || !cfg.site[0] ||
            strlen(cfg.site) >= TMSG_STR || strlen(cfg.underlay_ip) >= TMSG_STR) {
                fprintf(stderr, "tasman-agent: host_id, site and underlay_ip must be 1..63 bytes\n");
                return 2;
        }
        if (!domxml_host_valid(cfg.host_id)) {
                fprintf(stderr, "tasman-agent: host_id must be letters, digits, '.', '_' or '-'\n");
                return 2;
        }
        if (parse_brokers(cfg.broker) < 0) {
                fprintf(stderr, "tasman-agent: broker must be 1 to %d URLs separated by commas\n",
                        AGENT_BROKERS_MAX);
                return 2;
        }
        if (strcmp(cfg.domain_type, "auto") && strcmp(cfg.domain_type, "kvm") &&
            strcmp(cfg.domain_type, "qemu") && strcmp(cfg.domain_type, "test")) {
                fprintf(stderr, "tasman-agent: domain_type must be auto, kvm, qemu or test\n");
                return 2;
        }
        if (!cfg.image_dir[0])
                snprintf(cfg.image_dir, sizeof(cfg.image_dir), "%.*s/images", CFG_STR_MAX - 8,
                         cfg.state_dir);
        if (!cfg.rescue_dir[0])
                snprintf(cfg.rescue_dir, sizeof(cfg.rescue_dir), "%.*s/rescue", CFG_STR_MAX - 8,
                         cfg.state_dir);
        if (!cfg.pool_ssd_dir[0])
                snprintf(cfg.pool_ssd_dir, sizeof(cfg.pool_ssd_dir), "%.*s/disks/ssd",
                         CFG_STR_MAX - 12, cfg.state_dir);
        if (!cfg.pool_hdd_dir[0])
                snprintf(cfg.pool_hdd_dir, sizeof(cfg.pool_hdd_dir), "%.*s/disks/hdd",
                         CFG_STR_MAX - 12, cfg.state_dir);
        if (strlen(cfg.state_dir) > CFG_STR_MAX - 64) {
                fprintf(stderr, "tasman-agent: state_dir is too long\n");
                return 2;
        }
        /* QEMU runs as its own user: it must pass through (not list) the
         * directories that hold guests' disks, seeds and base images. */
        char dirs[5][CFG_STR_MAX + 16];
        snprintf(dirs[0], sizeof(dirs[0]), "%s", cfg.state_dir);
        snprintf(dirs[1], sizeof(dirs[1]), "%s/console", cfg.state_dir);
        snprintf(dirs[2], sizeof(dirs[2]), "%s/seeds", cfg.state_dir);
        snprintf(dirs[3], sizeof(dirs[3]), "%s/disks", cfg.state_dir);
        snprintf(dirs[4], sizeof(dirs[4]), "%s", cfg.image_dir);
        for (size_t i = 0; i < 5; i++) {
                struct stat st;
                if (mkdir(dirs[i], 0711) < 0 && errno != EEXIST) {
                        log_error("agent: cannot create %s: %s", dirs[i], strerror(errno));
                        return 1;
                }
                if (stat(dirs[i], &st) == 0 && !(st.st_mode & S_IXOTH) &&
                    chmod(dirs[i], (st.st_mode & 07777) | S_IXOTH) < 0)
                        log_warn("agent: cannot let QEMU pass through %s: %s", dirs[i],
                                 strerror(errno));
        }
        const struct imgcache_opts io = {
                .dir = cfg.image_dir,
                .max_bytes = (uint64_t)cfg.image_max_gb << 30,
                .max_parallel = (int)cfg.image_fetches,
        };
        if ((r = imgcache_new(&io, &a.images)) < 0) {
                log_error("agent: cannot open the image cache %s: %s", cfg.image_dir,
                          strerror(-r));
                return 1;
        }

        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        pick_domain_type(&a);
        if (hv_open(cfg.libvirt_uri, &a.hv) < 0) {
                imgcache_free(a.images);
                return 1;
        }
        hv_set_host(a.hv, cfg.host_id); /* checked above */
        /* Our nwfilters, before any guest refers to them (the test driver
         * has none). */
        if (strcmp(a.dom_type, "test") != 0 && strcmp(cfg.nic_filter, DOMXML_FILTER) == 0)
                for (size_t i = 0; i < sizeof(domxml_nwfilters) / sizeof(domxml_nwfilters[0]); i++)
                        if (hv_nwfilter_define(a.hv, domxml_nwfilter_names[i], domxml_nwfilters[i]) < 0)
                                log_error("agent: guests' NICs cannot be filtered: their start "
                                          "will fail until nwfilter %s can be defined",
                                          domxml_nwfilter_names[i]);
        if (ensure_pools(&a) < 0)
                log_warn("agent: guest disk pools are not ready; retrying when a guest needs one");
        if (cfg.manage_network && (r = net_open(&a.net)) < 0) {
                log_error("agent: cannot open netlink (%s): not managing this host's networks",
                          strerror(-r));
                a.net = NULL;
        }
        if ((r = nng_req0_open(&sock)) != 0) {
                imgcache_free(a.images);
                log_error("agent: cannot open socket: %s", nng_strerror(r));
                hv_free(a.hv);
                return 1;
        }
        nng_socket_set_ms(sock, NNG_OPT_RECONNMINT, 100);
        nng_socket_set_ms(sock, NNG_OPT_RECONNMAXT, 10000);
        nng_socket_set_ms(sock, NNG_OPT_REQ_RESENDTIME, 60000);
        nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, TMSG_MAX_BYTES);
        if (nng_aio_alloc(&link_aio, on_link_done, NULL) != 0 ||
            nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, on_pipe, NULL) != 0 || dial_current() < 0) {
                imgcache_free(a.images);
                nng_close(sock);
                hv_free(a.hv);
                return 1;
        }
        pthread_create(&sig_thread, NULL, signal_thread, &set);
        log_info("host %s: agent %s up (libvirt %s, domain type %s, broker %s)", cfg.host_id,
                 TASMAN_VERSION, cfg.libvirt_uri, a.dom_type, cfg.broker);

        /* Ready once it runs; joining the broker is reported in STATUS. */
        notify_send("READY=1\nSTATUS=dialing the broker");
        run(&a);
        notify_send("STOPPING=1");

        pthread_kill(sig_thread, SIGTERM);
        /* The signal thread closes the broker link to wake this one; nng
         * 1.5's close has been seen to hang for good while its dialer
         * reconnects to a broker that went away at the same moment. The
         * link is of no use any more: past a few seconds, exit without it. */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        if (pthread_timedjoin_np(sig_thread, NULL, &until) != 0)
                log_warn("host %s: the broker link did not close within 3 s; exiting without it",
                         cfg.host_id);
        struct tmsg old = { .type = TMSG_SYNC_REPLY, .sync_reply = a.desired };
        tmsg_clear(&old);
        free(a.obs);
        free(a.dirty);
        imgcache_free(a.images);
        net_free(a.net);
        hv_free(a.hv);
        log_info("host %s: agent stopped", cfg.host_id);
        return 0;
}
