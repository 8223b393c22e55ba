/* metrics: what Prometheus scrapes from the admin listener's /metrics.
 *
 * Request counts and latencies are process counters (atomics, any thread
 * may record). Hosts by state, guests by status and placements are read
 * from the store when scraped, so every broker reports the same truth;
 * placements count the vps.created events of the outbox.
 */
#pragma once

#include <stdint.h>

#include "store.h"

enum metrics_api { METRICS_NATIVE, METRICS_ADMIN, METRICS_TILAA, METRICS_API__MAX };

void metrics_request(enum metrics_api api, int status, int64_t usec);

/* The exposition text (malloc'd), or NULL if the store failed. */
struct listcache;
struct dns;
/* lc: the list cache whose hits and misses to show, or NULL; dns: the DNS
 * thread whose rounds to show, or NULL (none shown). */
char *metrics_render(struct store *s, struct listcache *lc, struct dns *dns, int64_t now_ms,
                     int64_t host_timeout_ms);
