/* hub: the broker's end of the agent link (nng REP, protobuf via codec).
 *
 * Agents dial in and long-poll with Sync. The hub records what each agent
 * observes, and answers at once when the host's desired generation is
 * newer than what the agent applied; otherwise it parks the request (one
 * nng context per waiting agent) until hub_notify() is called for that
 * host or hold_ms pass. Undecodable or oversized messages get an Error
 * reply (or are dropped by nng) and never disturb the other agents.
 *
 * With several brokers on one database, a change another broker commits
 * wakes the host's parked agent too (store_watch()).
 *
 * Threads: nng's callbacks, plus one hub thread that sends parked replies,
 * keeps parked hosts' last_seen fresh and records liveness transitions. hub_notify() may be called from
 * any thread, after the store commit that changed the host.
 */
#pragma once

#include <stdint.h>

#include "store.h"

struct hub;

struct hub_config {
        const char *url;      /* e.g. tcp://127.0.0.1:7400 */
        uint32_t hold_ms;     /* longest park of a Sync */
        uint32_t max_agents;  /* cap on parked contexts */
        int64_t host_timeout_ms; /* liveness: record hosts going unreachable and back */
};

int hub_start(const struct hub_config *cfg, struct store *s, struct hub **ret);
void hub_notify(struct hub *h, uint64_t host_id);
void hub_free(struct hub *h);
