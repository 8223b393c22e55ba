/* scheduler: where a new guest goes. A pure function over plain structs (no
 * store, no clock, no globals), so it is tested table-driven and measured
 * in bench/sched.
 *
 * Filters first: the site, the host being live and not draining, then
 * vCPU, RAM and disk room (of the requested storage type) under the
 * overcommit ratios, then anti-affinity (no two guests of one group on a
 * host). Survivors are
 * weighed: spread (most free RAM first) or pack (least free RAM that
 * fits), minus 256 MB per guest already being created on the host, plus
 * a few MB of deterministic jitter from the seed so that concurrent brokers
 * do not all pick the same host. Arithmetic is integer (ratios in
 * permille), so a decision costs a few nanoseconds per host. When nothing fits, the result counts the
 * hosts each filter rejected (the first filter that rejects a host counts
 * it), and sched_explain() turns that into the API's message.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "codec.h" /* enum storage */

struct sched_host {
        uint64_t id;
        uint32_t site_id; /* sites compare by number, not by name */
        uint8_t live;
        uint8_t draining;
        uint32_t vcpus, vcpus_used;
        uint64_t ram_mb, ram_mb_used;
        uint64_t disk_gb[STORAGE__MAX], disk_gb_used[STORAGE__MAX];
        uint32_t inflight; /* guests placed here and not yet running */
        uint8_t in_group;  /* already holds a guest of the request's group */
};

struct sched_req {
        uint32_t site_id; /* 0: any site */
        const char *site; /* its name, for sched_explain (NULL: any) */
        uint32_t vcpus;
        uint32_t ram_mb;
        uint32_t disk_gb;
        enum storage storage;
        const char *group; /* anti-affinity group, for sched_explain (NULL: none) */
};

enum sched_strategy { SCHED_SPREAD, SCHED_PACK };

struct sched_params {
        double cpu_ratio, ram_ratio, disk_ratio; /* overcommit; 1.0 = none; 0 < r <= 1000 */
        enum sched_strategy strategy;
        uint64_t seed; /* jitter; the same seed gives the same choice */
};

enum sched_filter {
        SCHED_F_SITE,
        SCHED_F_UNREACHABLE,
        SCHED_F_DRAINING,
        SCHED_F_CPU,
        SCHED_F_RAM,
        SCHED_F_STORAGE, /* none of the requested type at all */
        SCHED_F_DISK,
        SCHED_F_GROUP,
        SCHED_F__MAX,
};

struct sched_result {
        int found;
        size_t index;            /* into hosts, when found */
        size_t considered;       /* hosts in the site (all when any site) */
        size_t rejected[SCHED_F__MAX];
};

/* 0 (see ret->found), or -EINVAL for bad parameters. */
int sched_place(const struct sched_host *hosts, size_t n, const struct sched_req *req,
                const struct sched_params *p, struct sched_result *ret);

/* "site tas-1: 40 hosts; 12 draining, 28 without 8192 MB RAM free". */
void sched_explain(const struct sched_result *r, const struct sched_req *req, char *buf,
                   size_t len);
