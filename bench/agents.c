/* bench/agents: N simulated agents (the real protocol over nng, in-memory
 * hypervisors) against one broker; then VPS created through the API.
 * Prints the broker's CPU and memory, placements per second, and how long
 * a killed agent takes to be marked unreachable.
 *
 *   agents --agent-url URL --api URL --admin URL --key KEY --broker-pid PID
 *          [--agents N] [--vps M] [--threshold-ms T]
 * (bench/run-agents starts the broker and calls this.)
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "codec.h"
#include "util.h"

struct sim {
        int idx;
        char host[32];
        nng_socket sock;
        nng_ctx ctx;
        nng_aio *aio;
        int receiving;
        int joined;
        uint64_t req_id, gen;
        size_t n_known; /* domains it already reported running */
        atomic_int dead;
};

static struct sim *sims;
static int n_agents = 10000;
static atomic_long joined, syncs, running_reported;

static void send_msg(struct sim *a, struct tmsg *m)
{
        uint8_t *buf;
        size_t len;
        nng_msg *msg;
        m->request_id = ++a->req_id;
        if (codec_encode(m, &buf, &len) < 0 || nng_msg_alloc(&msg, 0) != 0 ||
            nng_msg_append(msg, buf, len) != 0)
                abort();
        free(buf);
        a->receiving = 0;
        nng_aio_set_msg(a->aio, msg);
        nng_ctx_send(a->ctx, a->aio);
}

static void send_hello(struct sim *a)
{
        struct tmsg m = { .type = TMSG_HELLO };
        snprintf(m.hello.host_id, sizeof(m.hello.host_id), "%s", a->host);
        snprintf(m.hello.site, sizeof(m.hello.site), "tas-%d", 1 + a->idx % 4);
        snprintf(m.hello.underlay_ip, sizeof(m.hello.underlay_ip), "198.18.%d.%d",
                 a->idx / 250, a->idx % 250 + 1);
        snprintf(m.hello.boot_id, sizeof(m.hello.boot_id), "sim-boot-%d", a->idx);
        snprintf(m.hello.agent_version, sizeof(m.hello.agent_version), "sim");
        snprintf(m.hello.hv_type, sizeof(m.hello.hv_type), "sim");
        m.hello.vcpus = 64;
        m.hello.ram_mb = 262144;
        m.hello.disk_gb = 4000;
        send_msg(a, &m);
}

/* A Sync reporting as running every desired domain not reported yet. */
static void send_sync(struct sim *a, const struct msg_sync_reply *desired)
{
        struct tmsg m = { .type = TMSG_SYNC };
        struct dom_observed obs[64];
        snprintf(m.sync.host_id, sizeof(m.sync.host_id), "%s", a->host);
        snprintf(m.sync.boot_id, sizeof(m.sync.boot_id), "sim-boot-%d", a->idx);
        m.sync.applied_generation = a->gen;
        m.sync.partial = a->n_known > 0 || desired;
        if (desired) {
                for (size_t i = a->n_known; i < desired->n_domains && m.sync.n_domains < 64; i++) {
                        memset(&obs[m.sync.n_domains], 0, sizeof(obs[0]));
                        obs[m.sync.n_domains].vm_id = desired->domains[i].vm_id;
                        obs[m.sync.n_domains].state = POWER_RUNNING;
                        m.sync.n_domains++;
                }
                atomic_fetch_add(&running_reported, (long)m.sync.n_domains);
                a->n_known += m.sync.n_domains;
                m.sync.domains = obs;
        }
        m.sync.n_present = (uint32_t)a->n_known;
        send_msg(a, &m);
}

static void on_aio(void *arg)
{
        struct sim *a = arg;
        int rv = nng_aio_result(a->aio);
        if (atomic_load(&a->dead))
                return;
        if (!a->receiving) {
                if (rv != 0) {
                        nng_msg_free(nng_aio_get_msg(a->aio));
                        nng_sleep_aio(200, a->aio); /* retry the exchange */
                        a->receiving = 2;
                        return;
                }
                a->receiving = 1;
                nng_ctx_recv(a->ctx, a->aio);
                return;
        }
        if (a->receiving == 2 || rv != 0) {
                if (a->joined)
                        send_sync(a, NULL);
                else
                        send_hello(a);
                return;
        }
        nng_msg *msg = nng_aio_get_msg(a->aio);
        struct tmsg rep;
        int r = codec_decode(nng_msg_body(msg), nng_msg_len(msg), &rep);
        nng_msg_free(msg);
        if (r < 0) {
                send_hello(a);
                return;
        }
        if (rep.type == TMSG_HELLO_REPLY) {
                a->joined = 1;
                atomic_fetch_add(&joined, 1);
                send_sync(a, NULL);
        } else if (rep.type == TMSG_SYNC_REPLY) {
                atomic_fetch_add(&syncs, 1);
                a->gen = rep.sync_reply.generation;
                send_sync(a, &rep.sync_reply);
        } else {
                a->joined = 0;
                send_hello(a);
        }
        tmsg_clear(&rep);
}

/* ---- broker process ---- */

static long rss_kib(int pid)
{
        char path[64], line[256];
        long v = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", pid);
        FILE *f = fopen(path, "re");
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld", &v) == 1)
                        break;
        if (f)
                fclose(f);
        return v;
}

static double cpu_secs(int pid)
{
        char path[64], buf[1024];
        unsigned long ut = 0, st = 0;
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f || !fgets(buf, sizeof(buf), f)) {
                if (f)
                        fclose(f);
                return -1;
        }
        fclose(f);
        char *p = strrchr(buf, ')');
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
                return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
        return -1;
}

/* ---- API load ---- */

struct http_buf {
        char data[8192];
        size_t len;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
        struct http_buf *b = ud;
        size_t len = size * n;
        if (b->len + len < sizeof(b->data)) {
                memcpy(b->data + b->len, p, len);
                b->len += len;
                b->data[b->len] = '\0';
        }
        return len;
}

static const char *api_url, *admin_url, *api_key;
static int n_vps = 10000;
static atomic_int next_vps, created, refused;

static long http(CURL *c, const char *url, const char *body, struct curl_slist *h,
                 struct http_buf *out)
{
        long code = 0;
        out->len = 0;
        out->data[0] = '\0';
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
        if (body)
                curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        if (curl_easy_perform(c) == CURLE_OK)
                curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
        return code;
}

static void *creator(void *arg)
{
        CURL *c = curl_easy_init();
        struct curl_slist *h = NULL;
        char auth[128], url[256], body[256];
        struct http_buf out;
        (void)arg;
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", api_key);
        h = curl_slist_append(h, auth);
        h = curl_slist_append(h, "Content-Type: application/json");
        snprintf(url, sizeof(url), "%s/v1/vps", api_url);
        for (;;) {
                int i = atomic_fetch_add(&next_vps, 1);
                if (i >= n_vps)
                        break;
                snprintf(body, sizeof(body),
                         "{\"name\":\"sim%d\",\"size\":\"standard-1vcpu-1gb\",\"image\":\"debian-12\"}",
                         i);
                long code = http(c, url, body, h, &out);
                if (code == 201)
                        atomic_fetch_add(&created, 1);
                else
                        atomic_fetch_add(&refused, 1);
        }
        curl_slist_free_all(h);
        curl_easy_cleanup(c);
        return NULL;
}

static long metric(CURL *c, const char *name)
{
        char url[256];
        struct http_buf out;
        snprintf(url, sizeof(url), "%s/metrics", admin_url);
        if (http(c, url, NULL, NULL, &out) != 200)
                return -1;
        const char *p = strstr(out.data, name);
        return p ? atol(p + strlen(name)) : -1;
}

int main(int argc, char **argv)
{
        const char *agent_url = NULL;
        int broker_pid = 0;
        long threshold_ms = 10000;
        for (int i = 1; i + 1 < argc; i += 2) {
                const char *k = argv[i], *v = argv[i + 1];
                if (!strcmp(k, "--agent-url"))
                        agent_url = v;
                else if (!strcmp(k, "--api"))
                        api_url = v;
                else if (!strcmp(k, "--admin"))
                        admin_url = v;
                else if (!strcmp(k, "--key"))
                        api_key = v;
                else if (!strcmp(k, "--broker-pid"))
                        broker_pid = atoi(v);
                else if (!strcmp(k, "--agents"))
                        n_agents = atoi(v);
                else if (!strcmp(k, "--vps"))
                        n_vps = atoi(v);
                else if (!strcmp(k, "--threshold-ms"))
                        threshold_ms = atol(v);
        }
        if (!agent_url || !api_url || !admin_url || !api_key || broker_pid <= 0 || n_agents < 2 ||
            n_agents > 19000 || n_vps < 0) {
                fprintf(stderr, "usage: agents --agent-url URL --api URL --admin URL --key KEY "
                                "--broker-pid PID [--agents N] [--vps M] [--threshold-ms T]\n");
                return 2;
        }
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
                rl.rlim_cur = rl.rlim_max;
                setrlimit(RLIMIT_NOFILE, &rl);
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        curl_global_init(CURL_GLOBAL_DEFAULT);
        printf("agents: %d simulated agents, %d VPS (broker pid %d)\n", n_agents, n_vps,
               broker_pid);
        long rss0 = rss_kib(broker_pid);
        double cpu0 = cpu_secs(broker_pid);

        sims = calloc((size_t)n_agents, sizeof(*sims));
        int64_t t0 = util_mono_ms();
        for (int i = 0; i < n_agents; i++) {
                struct sim *a = &sims[i];
                a->idx = i;
                snprintf(a->host, sizeof(a->host), "sim-%05d", i);
                if (nng_req0_open(&a->sock) != 0 || nng_ctx_open(&a->ctx, a->sock) != 0 ||
                    nng_aio_alloc(&a->aio, on_aio, a) != 0) {
                        fprintf(stderr, "cannot open agent %d\n", i);
                        return 1;
                }
                nng_socket_set_ms(a->sock, NNG_OPT_REQ_RESENDTIME, 60000);
                nng_socket_set_ms(a->sock, NNG_OPT_RECONNMINT, 100);
                nng_socket_set_ms(a->sock, NNG_OPT_RECONNMAXT, 5000);
                nng_aio_set_timeout(a->aio, 40000);
                nng_dial(a->sock, agent_url, NULL, NNG_FLAG_NONBLOCK);
                send_hello(a);
        }
        for (int k = 0; k < 600 && atomic_load(&joined) < n_agents; k++)
                usleep(100000);
        int64_t t1 = util_mono_ms();
        printf("  joined: %ld of %d agents in %.1f s\n", atomic_load(&joined), n_agents,
               (double)(t1 - t0) / 1000);
        sleep(3); /* steady long polls */
        long rss1 = rss_kib(broker_pid);
        double cpu1 = cpu_secs(broker_pid);
        printf("  broker holding %d agents: RSS %.1f MiB (was %.1f MiB idle), CPU %.1f s to join"
               " them\n",
               n_agents, rss1 / 1024.0, rss0 / 1024.0, cpu1 - cpu0);

        /* VPS through the API. */
        pthread_t th[4];
        int64_t t2 = util_mono_ms();
        for (int i = 0; i < 4; i++)
                pthread_create(&th[i], NULL, creator, NULL);
        for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
        int64_t t3 = util_mono_ms();
        double cpu2 = cpu_secs(broker_pid);
        printf("  created %d VPS (%d refused) in %.1f s: %.0f placements/s through the API, "
               "broker CPU %.1f s\n",
               atomic_load(&created), atomic_load(&refused), (double)(t3 - t2) / 1000,
               atomic_load(&created) * 1000.0 / (double)(t3 - t2 + 1), cpu2 - cpu1);
        CURL *c = curl_easy_init();
        long running = 0;
        for (int k = 0; k < 1200; k++) {
                running = metric(c, "tasman_guests{status=\"running\"} ");
                if (running >= atomic_load(&created))
                        break;
                usleep(100000);
        }
        int64_t t4 = util_mono_ms();
        printf("  all %ld running (reported by the agents) %.1f s after the last creation; "
               "broker RSS %.1f MiB\n",
               running, (double)(t4 - t3) / 1000, rss_kib(broker_pid) / 1024.0);

        /* Kill one agent: how long until it is unreachable? */
        struct sim *victim = &sims[n_agents / 2];
        atomic_store(&victim->dead, 1);
        nng_close(victim->sock);
        int64_t t5 = util_mono_ms();
        long down = 0;
        for (int k = 0; k < 600; k++) {
                down = metric(c, "tasman_hosts{state=\"unreachable\"} ");
                if (down >= 1)
                        break;
                usleep(100000);
        }
        int64_t t6 = util_mono_ms();
        printf("  killed agent %s marked unreachable after %.1f s (threshold %.1f s, target "
               "threshold + 2 s)\n",
               victim->host, (double)(t6 - t5) / 1000, threshold_ms / 1000.0);
        printf("  broker at the end: RSS %.1f MiB (target under 1 GiB at 10,000 agents), CPU "
               "%.1f s in all\n",
               rss_kib(broker_pid) / 1024.0, cpu_secs(broker_pid) - cpu0);
        curl_easy_cleanup(c);
        fflush(stdout);
        _exit(0); /* 10,000 sockets: let the kernel close them */
}
