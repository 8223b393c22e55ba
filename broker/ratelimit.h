/* ratelimit: the native API's per-key rate limit, one token bucket per API
 * key (spec "Rate Limits": Free 60 requests/min with a burst of 10, Pro
 * 300/50, Enterprise 1000/100). A bucket holds at most `burst` tokens and
 * refills continuously at per_minute/60 tokens a second; a request takes one
 * token and is refused (429) when no whole token is left. Arithmetic is
 * integer only and exact: tokens are counted in 1/60000ths, so a bucket gains
 * exactly per_minute of them per millisecond. Time is the caller's monotonic
 * clock in milliseconds, passed in, so the module is pure with respect to
 * time; a clock that goes backwards never mints tokens (the bucket keeps the
 * latest time it has seen).
 *
 * Ownership: ratelimit_new() allocates everything up front (max_keys buckets
 * and the hash table), so ratelimit_take() never allocates and cannot fail;
 * the caller owns the limiter and frees it with ratelimit_free(). Results are
 * written to caller storage.
 *
 * Threads: any thread may call ratelimit_take() and ratelimit_count(); one
 * internal mutex serialises them (a call is a hash lookup and a few integer
 * operations). ratelimit_free() only once no other thread uses the limiter.
 *
 * Memory is bounded by max_keys. Eviction never loses state: only a bucket
 * that is full (at the new request's time) is evicted, since a full bucket is
 * exactly what a returning key starts with, so eviction never grants a
 * request that the key's own bucket would have refused, and a key that is
 * being limited keeps its bucket however many other keys come and go. The
 * candidates are the RATELIMIT_EVICT_SCAN least recently used buckets, taken
 * from the LRU end (the ones idle longest, so the likeliest to be full);
 * the first full one is reused. If none of them is full, every tracked key
 * was used within about one refill time (10 s for the spec's tiers) and the
 * new key is refused (fail closed) with Retry-After set to when the first of
 * those candidates will be full. Size max_keys above the number of keys that
 * can be active within one refill time and this never happens.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_MAX_KEYS   (1u << 24) /* largest max_keys ratelimit_new() accepts */
#define RATELIMIT_EVICT_SCAN 16         /* LRU buckets looked at for a full one */

struct ratelimit;

struct ratelimit_result {
        int allowed;            /* 1: go ahead; 0: refuse with 429 */
        uint32_t limit;         /* per-minute limit of this key (X-RateLimit-Limit) */
        uint32_t remaining;     /* whole tokens left after this request (X-RateLimit-Remaining) */
        uint32_t reset_s;       /* X-RateLimit-Reset, see below */
        uint32_t retry_after_s; /* when refused: seconds until one token is back, rounded up,
                                 * >= 1; 0 when allowed */
};
/* reset_s is a delta, not a Unix time: the seconds from now_ms until the
 * bucket is full again (holds `burst` tokens) if the key makes no further
 * request, rounded up to a whole second; 0 only when the bucket is full after
 * this call (which an allowed request never leaves it). Both reset_s and
 * retry_after_s saturate at UINT32_MAX, which is also what they read when the
 * bucket never refills (per_minute 0) or can hold no token (burst 0).
 * A new key refused because no bucket could be freed (see above) gets
 * remaining 0 and reset_s == retry_after_s: the seconds until a bucket frees,
 * after which it starts full. */

/* 0, -EINVAL (max_keys 0 or above RATELIMIT_MAX_KEYS), -ENOMEM. *ret only on success. */
int ratelimit_new(size_t max_keys, struct ratelimit **ret);
void ratelimit_free(struct ratelimit *rl); /* NULL ok */

/* One request by key_id (the numeric API key id) with that key's tier
 * numbers, at now_ms. A key seen for the first time starts with a full
 * bucket. A key whose numbers differ from its last call first refills at its
 * old rate up to its old burst for the time passed, then takes the new
 * numbers: its tokens are kept, clamped to the new burst (an upgrade is not
 * topped up, a downgrade loses the excess). */
void ratelimit_take(struct ratelimit *rl, uint64_t key_id, uint32_t per_minute, uint32_t burst,
                    int64_t now_ms, struct ratelimit_result *ret);

/* Keys tracked now (<= max_keys): for metrics and tests. */
size_t ratelimit_count(struct ratelimit *rl);
