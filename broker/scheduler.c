#include "scheduler.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static uint64_t mix(uint64_t z)
{
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

/* Room under a ratio in permille, in integers (no division per host). */
static inline int fits(uint64_t total, uint64_t used, uint64_t want, uint64_t permille)
{
        return (used + want) * 1000 <= total * permille;
}

static uint64_t to_permille(double ratio)
{
        return (uint64_t)(ratio * 1000.0 + 0.5);
}

int sched_place(const struct sched_host *hosts, size_t n, const struct sched_req *req,
                const struct sched_params *p, struct sched_result *ret)
{
        int64_t best = 0;

        if (!req || !p || (n && !hosts) || !(p->cpu_ratio > 0) || !(p->ram_ratio > 0) ||
            !(p->disk_ratio > 0) || p->cpu_ratio > 1000 || p->ram_ratio > 1000 ||
            p->disk_ratio > 1000 || (unsigned)req->storage >= STORAGE__MAX)
                return -EINVAL;
        const unsigned st = (unsigned)req->storage;
        memset(ret, 0, sizeof(*ret));
        const uint64_t cpu_pm = to_permille(p->cpu_ratio), ram_pm = to_permille(p->ram_ratio),
                       disk_pm = to_permille(p->disk_ratio);
        for (size_t i = 0; i < n; i++) {
                const struct sched_host *h = &hosts[i];
                enum sched_filter f;

                if (req->site_id && h->site_id != req->site_id) {
                        ret->rejected[SCHED_F_SITE]++;
                        continue;
                }
                ret->considered++;
                if (!h->live)
                        f = SCHED_F_UNREACHABLE;
                else if (h->draining)
                        f = SCHED_F_DRAINING;
                else if (!fits(h->vcpus, h->vcpus_used, req->vcpus, cpu_pm))
                        f = SCHED_F_CPU;
                else if (!fits(h->ram_mb, h->ram_mb_used, req->ram_mb, ram_pm))
                        f = SCHED_F_RAM;
                else if (h->disk_gb[st] == 0)
                        f = SCHED_F_STORAGE;
                else if (!fits(h->disk_gb[st], h->disk_gb_used[st], req->disk_gb, disk_pm))
                        f = SCHED_F_DISK;
                else if (h->in_group)
                        f = SCHED_F_GROUP;
                else
                        f = SCHED_F__MAX;
                if (f != SCHED_F__MAX) {
                        ret->rejected[f]++;
                        continue;
                }
                /* Weigh in MB of RAM left after placement: spread prefers the
                 * most, pack the least; each guest still being created on
                 * the host counts as 256 MB less; the jitter (0-9 MB) only
                 * breaks near-ties. */
                int64_t free_mb = (int64_t)(h->ram_mb * ram_pm / 1000) -
                                  (int64_t)h->ram_mb_used - (int64_t)req->ram_mb;
                int64_t w = p->strategy == SCHED_SPREAD ? free_mb : -free_mb;
                w -= 256 * (int64_t)h->inflight;
                if (ret->found && w + 9 <= best)
                        continue; /* cannot win even with the largest jitter */
                w += (int64_t)(mix(p->seed ^ h->id) % 10);
                if (!ret->found || w > best) {
                        ret->found = 1;
                        ret->index = i;
                        best = w;
                }
        }
        return 0;
}

void sched_explain(const struct sched_result *r, const struct sched_req *req, char *buf,
                   size_t len)
{
        static const char *const what[SCHED_F__MAX] = {
                [SCHED_F_SITE] = "in other sites",
                [SCHED_F_UNREACHABLE] = "unreachable",
                [SCHED_F_DRAINING] = "draining",
        };
        size_t off;
        int first = 1;

        off = (size_t)snprintf(buf, len, "%s%s: %zu host%s", req->site ? "site " : "",
                               req->site ? req->site : "all sites", r->considered,
                               r->considered == 1 ? "" : "s");
        for (int f = SCHED_F_UNREACHABLE; f < SCHED_F__MAX && off < len; f++) {
                char why[64];
                if (!r->rejected[f])
                        continue;
                if (f == SCHED_F_CPU)
                        snprintf(why, sizeof(why), "without %u vCPUs free", req->vcpus);
                else if (f == SCHED_F_RAM)
                        snprintf(why, sizeof(why), "without %u MB RAM free", req->ram_mb);
                else if (f == SCHED_F_STORAGE)
                        snprintf(why, sizeof(why), "without %s storage",
                                 storage_to_string(req->storage));
                else if (f == SCHED_F_DISK)
                        snprintf(why, sizeof(why), "without %u GB %s free", req->disk_gb,
                                 storage_to_string(req->storage));
                else if (f == SCHED_F_GROUP)
                        snprintf(why, sizeof(why), "already holding a guest of group %.24s",
                                 req->group ? req->group : "?");
                else
                        snprintf(why, sizeof(why), "%s", what[f]);
                off += (size_t)snprintf(buf + off, len - off, "%s %zu %s", first ? ";" : ",",
                                        r->rejected[f], why);
                first = 0;
        }
}
