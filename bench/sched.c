/* bench/sched: placement decisions per second of the pure scheduler at
 * 1,000 and 10,000 hosts, on one core. Each decision reserves what it
 * placed, as the store does, so hosts fill up the way they would.
 *   sched [--decisions N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scheduler.h"
#include "util.h"

static const char *const sites[] = { "tas-1", "tas-2", "tas-3", "tas-4" };

static void run(size_t n_hosts, long decisions)
{
        struct sched_host *hs = calloc(n_hosts, sizeof(*hs));
        struct sched_params p = { 4.0, 1.0, 1.0, SCHED_SPREAD, 1 };
        static const struct {
                uint32_t vcpus, ram_mb, disk_gb;
        } sizes[] = { { 1, 1024, 25 }, { 2, 4096, 80 }, { 4, 8192, 160 } };
        long placed = 0, full = 0;
        uint64_t rnd = 12345;

        for (size_t i = 0; i < n_hosts; i++) {
                hs[i] = (struct sched_host){
                        .id = i + 1, .site_id = (uint32_t)(i % 4) + 1, .live = (i % 97) != 0,
                        .draining = (i % 101) == 0, .vcpus = 64, .ram_mb = 1u << 20,
                        .disk_gb = { 1u << 20, 0 },
                };
        }
        int64_t t0 = util_mono_us();
        for (long d = 0; d < decisions; d++) {
                rnd = rnd * 6364136223846793005ULL + 1442695040888963407ULL;
                uint32_t site = (uint32_t)((rnd >> 33) % 4);
                struct sched_req req = { .site_id = site + 1, .site = sites[site],
                                         .vcpus = sizes[(rnd >> 40) % 3].vcpus,
                                         .ram_mb = sizes[(rnd >> 40) % 3].ram_mb,
                                         .disk_gb = sizes[(rnd >> 40) % 3].disk_gb,
                                         .storage = STORAGE_SSD };
                struct sched_result r;
                p.seed = rnd;
                if (sched_place(hs, n_hosts, &req, &p, &r) < 0)
                        exit(1);
                if (!r.found) {
                        full++;
                        continue;
                }
                struct sched_host *h = &hs[r.index];
                h->vcpus_used += req.vcpus;
                h->ram_mb_used += req.ram_mb;
                h->disk_gb_used[req.storage] += req.disk_gb;
                placed++;
        }
        double secs = (double)(util_mono_us() - t0) / 1e6;
        printf("  %6zu hosts: %9.0f decisions/s  (%ld decisions in %.2f s, %ld placed, %ld "
               "refused)\n",
               n_hosts, (double)decisions / secs, decisions, secs, placed, full);
        free(hs);
}

int main(int argc, char **argv)
{
        long decisions = 200000;
        if (argc == 3 && strcmp(argv[1], "--decisions") == 0)
                decisions = atol(argv[2]);
        if (decisions < 1) {
                fprintf(stderr, "usage: sched [--decisions N]\n");
                return 2;
        }
        printf("sched: placement decisions per second, pure function, one core "
               "(target: over 50,000/s at 10,000 hosts)\n");
        run(1000, decisions / 4);
        run(10000, decisions / 5);
        return 0;
}
