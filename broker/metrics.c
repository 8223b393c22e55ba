#include "metrics.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "listcache.h"

static const char *const api_names[] = { [METRICS_NATIVE] = "native", [METRICS_ADMIN] = "admin",
                                         [METRICS_TILAA] = "tilaa" };
_Static_assert(sizeof(api_names) / sizeof(api_names[0]) == METRICS_API__MAX, "api_names");

/* Latency buckets in microseconds (le), the last one is +Inf. */
static const int64_t bucket_us[] = { 1000, 5000, 10000, 50000, 100000, 500000, 1000000 };
#define N_BUCKETS (sizeof(bucket_us) / sizeof(bucket_us[0]))
#define N_CODES 6 /* 1xx..5xx by first digit; 0 = other */

static struct {
        atomic_uint_fast64_t by_code[METRICS_API__MAX][N_CODES];
        atomic_uint_fast64_t buckets[METRICS_API__MAX][N_BUCKETS + 1];
        atomic_uint_fast64_t sum_us[METRICS_API__MAX];
} m;

void metrics_request(enum metrics_api api, int status, int64_t usec)
{
        size_t b = 0;
        int c = status / 100;
        if ((unsigned)api >= METRICS_API__MAX)
                return;
        atomic_fetch_add(&m.by_code[api][c >= 1 && c <= 5 ? c : 0], 1);
        while (b < N_BUCKETS && usec > bucket_us[b])
                b++;
        atomic_fetch_add(&m.buckets[api][b], 1);
        atomic_fetch_add(&m.sum_us[api], (uint_fast64_t)(usec > 0 ? usec : 0));
}

char *metrics_render(struct store *s, struct listcache *lc, struct dns *dns, int64_t now,
                     int64_t host_timeout_ms)
{
        static const char *const statuses[] = { "provisioning", "running",   "stopped",
                                                "starting",     "stopping",  "rebooting",
                                                "rebuilding",   "resizing",  "restoring",
                                                "snapshotting", "paused",    "error",
                                                "unknown" };
        enum { N_ST = sizeof(statuses) / sizeof(statuses[0]) };
        size_t n_st = N_ST;
        struct host *hs = NULL;
        struct vm *vms = NULL;
        size_t n_hosts = 0, n_vms = 0, guests[N_ST] = { 0 }, up = 0, down = 0, draining = 0;
        uint64_t placements = 0;
        char *buf = NULL;
        size_t len = 0;
        FILE *f;

        if (store_host_list(s, &hs, &n_hosts) < 0 || store_vm_list_all(s, &vms, &n_vms) < 0 ||
            store_event_count(s, "vps.created", &placements) < 0) {
                free(hs);
                free(vms);
                return NULL;
        }
        for (size_t i = 0; i < n_hosts; i++) {
                if (now - hs[i].last_seen > host_timeout_ms)
                        down++;
                else if (hs[i].draining)
                        draining++;
                else
                        up++;
        }
        for (size_t i = 0; i < n_vms; i++) {
                const char *st = api_vps_status(&vms[i], now, host_timeout_ms);
                for (size_t k = 0; k < n_st; k++)
                        if (strcmp(st, statuses[k]) == 0)
                                guests[k]++;
        }
        free(hs);
        free(vms);
        if (!(f = open_memstream(&buf, &len)))
                return NULL;
        fprintf(f, "# HELP tasman_hosts Hosts by state.\n# TYPE tasman_hosts gauge\n");
        fprintf(f, "tasman_hosts{state=\"up\"} %zu\ntasman_hosts{state=\"draining\"} %zu\n"
                   "tasman_hosts{state=\"unreachable\"} %zu\n",
                up, draining, down);
        fprintf(f, "# HELP tasman_guests Guests by status.\n# TYPE tasman_guests gauge\n");
        for (size_t k = 0; k < n_st; k++)
                fprintf(f, "tasman_guests{status=\"%s\"} %zu\n", statuses[k], guests[k]);
        fprintf(f, "# HELP tasman_placements_total Guests placed on a host.\n"
                   "# TYPE tasman_placements_total counter\ntasman_placements_total %llu\n",
                (unsigned long long)placements);
        uint64_t commits = 0, writes = 0;
        store_commit_stats(s, &commits, &writes);
        fprintf(f, "# HELP tasman_store_commits_total Durable commits (one fsync each).\n"
                   "# TYPE tasman_store_commits_total counter\ntasman_store_commits_total %llu\n"
                   "# HELP tasman_store_writes_total Changes committed, grouped into those commits.\n"
                   "# TYPE tasman_store_writes_total counter\ntasman_store_writes_total %llu\n",
                (unsigned long long)commits, (unsigned long long)writes);
        if (lc) {
                uint64_t hits = 0, misses = 0;
                listcache_stats(lc, &hits, &misses);
                fprintf(f, "# HELP tasman_list_cache_total List requests answered from memory "
                           "(hit) or read afresh (miss).\n# TYPE tasman_list_cache_total counter\n"
                           "tasman_list_cache_total{result=\"hit\"} %llu\n"
                           "tasman_list_cache_total{result=\"miss\"} %llu\n",
                        (unsigned long long)hits, (unsigned long long)misses);
        }
        if (dns) {
                struct dns_totals t;
                dns_totals(dns, &t);
                fprintf(f,
                        "# HELP tasman_dns_rounds_total Comparisons of the VMs' DNS records with "
                        "the PowerDNS server, by result.\n# TYPE tasman_dns_rounds_total counter\n"
                        "tasman_dns_rounds_total{result=\"ok\"} %llu\n"
                        "tasman_dns_rounds_total{result=\"error\"} %llu\n"
                        "# HELP tasman_dns_patches_total PATCH requests sent to the PowerDNS API.\n"
                        "# TYPE tasman_dns_patches_total counter\ntasman_dns_patches_total %llu\n"
                        "# HELP tasman_dns_rrsets_changed_total Tasman's rrsets replaced (made or "
                        "changed) and deleted.\n# TYPE tasman_dns_rrsets_changed_total counter\n"
                        "tasman_dns_rrsets_changed_total{change=\"replaced\"} %llu\n"
                        "tasman_dns_rrsets_changed_total{change=\"deleted\"} %llu\n"
                        "# HELP tasman_dns_rrsets_skipped Wanted rrsets left out in the last round: "
                        "an admin's rrset has the name and type, or no zone holds the name.\n"
                        "# TYPE tasman_dns_rrsets_skipped gauge\n"
                        "tasman_dns_rrsets_skipped{reason=\"conflict\"} %llu\n"
                        "tasman_dns_rrsets_skipped{reason=\"no_zone\"} %llu\n",
                        (unsigned long long)(t.rounds - t.failed_rounds),
                        (unsigned long long)t.failed_rounds, (unsigned long long)t.patches,
                        (unsigned long long)t.replaced, (unsigned long long)t.deleted,
                        (unsigned long long)t.conflicts, (unsigned long long)t.no_zone);
        }
        fprintf(f, "# HELP tasman_api_requests_total API requests by API and status class.\n"
                   "# TYPE tasman_api_requests_total counter\n");
        for (int a = 0; a < METRICS_API__MAX; a++)
                for (int c = 1; c <= 5; c++)
                        fprintf(f, "tasman_api_requests_total{api=\"%s\",code=\"%dxx\"} %llu\n",
                                api_names[a], c,
                                (unsigned long long)atomic_load(&m.by_code[a][c]));
        fprintf(f, "# HELP tasman_api_request_seconds API request latency.\n"
                   "# TYPE tasman_api_request_seconds histogram\n");
        for (int a = 0; a < METRICS_API__MAX; a++) {
                uint64_t cum = 0;
                for (size_t b = 0; b <= N_BUCKETS; b++) {
                        cum += atomic_load(&m.buckets[a][b]);
                        if (b < N_BUCKETS)
                                fprintf(f,
                                        "tasman_api_request_seconds_bucket{api=\"%s\",le=\"%g\"} "
                                        "%llu\n",
                                        api_names[a], (double)bucket_us[b] / 1e6,
                                        (unsigned long long)cum);
                        else
                                fprintf(f,
                                        "tasman_api_request_seconds_bucket{api=\"%s\",le=\"+Inf\"} "
                                        "%llu\n",
                                        api_names[a], (unsigned long long)cum);
                }
                fprintf(f, "tasman_api_request_seconds_sum{api=\"%s\"} %.6f\n", api_names[a],
                        (double)atomic_load(&m.sum_us[a]) / 1e6);
                fprintf(f, "tasman_api_request_seconds_count{api=\"%s\"} %llu\n", api_names[a],
                        (unsigned long long)cum);
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}
