#include "ratelimit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

/* One token is UNIT units: with 60000 units a token, refilling per_minute/60
 * tokens a second is exactly per_minute units a millisecond. burst * UNIT
 * fits 64 bits for any uint32_t burst. */
#define UNIT 60000u
#define NIL  UINT32_MAX

struct bucket {
        uint64_t key;
        uint64_t units;  /* tokens held, in UNITs; <= burst * UNIT */
        int64_t last_ms; /* latest time seen: refilled up to here */
        uint32_t per_minute, burst;
        uint32_t chain;      /* next bucket in the same hash slot, or NIL */
        uint32_t prev, next; /* LRU list: prev is more recently used */
};

struct ratelimit {
        pthread_mutex_t lock;
        struct bucket *b; /* max buckets, the first n in use */
        size_t max, n;
        uint32_t *slots; /* hash table of chain heads, mask + 1 of them */
        size_t mask;
        uint32_t head, tail; /* most and least recently used */
};

int ratelimit_new(size_t max_keys, struct ratelimit **ret)
{
        struct ratelimit *rl;
        size_t nslots = 1;

        if (max_keys == 0 || max_keys > RATELIMIT_MAX_KEYS)
                return -EINVAL;
        while (nslots < max_keys)
                nslots <<= 1;
        rl = calloc(1, sizeof(*rl));
        if (!rl)
                return -ENOMEM;
        rl->b = calloc(max_keys, sizeof(*rl->b));
        rl->slots = malloc(nslots * sizeof(*rl->slots));
        if (!rl->b || !rl->slots) {
                free(rl->b);
                free(rl->slots);
                free(rl);
                return -ENOMEM;
        }
        for (size_t i = 0; i < nslots; i++)
                rl->slots[i] = NIL;
        rl->max = max_keys;
        rl->mask = nslots - 1;
        rl->head = rl->tail = NIL;
        pthread_mutex_init(&rl->lock, NULL);
        *ret = rl;
        return 0;
}

void ratelimit_free(struct ratelimit *rl)
{
        if (!rl)
                return;
        pthread_mutex_destroy(&rl->lock);
        free(rl->b);
        free(rl->slots);
        free(rl);
}

size_t ratelimit_count(struct ratelimit *rl)
{
        size_t n;
        pthread_mutex_lock(&rl->lock);
        n = rl->n;
        pthread_mutex_unlock(&rl->lock);
        return n;
}

/* splitmix64's finaliser: key ids are sequential, the slots need all bits. */
static size_t slot_of(const struct ratelimit *rl, uint64_t key)
{
        key ^= key >> 30;
        key *= 0xbf58476d1ce4e5b9ULL;
        key ^= key >> 27;
        key *= 0x94d049bb133111ebULL;
        key ^= key >> 31;
        return (size_t)key & rl->mask;
}

static uint32_t lookup(const struct ratelimit *rl, uint64_t key)
{
        uint32_t i = rl->slots[slot_of(rl, key)];
        while (i != NIL && rl->b[i].key != key)
                i = rl->b[i].chain;
        return i;
}

static void hash_insert(struct ratelimit *rl, uint32_t i)
{
        size_t s = slot_of(rl, rl->b[i].key);
        rl->b[i].chain = rl->slots[s];
        rl->slots[s] = i;
}

static void hash_remove(struct ratelimit *rl, uint32_t i)
{
        uint32_t *p = &rl->slots[slot_of(rl, rl->b[i].key)];
        while (*p != i)
                p = &rl->b[*p].chain;
        *p = rl->b[i].chain;
}

static void lru_unlink(struct ratelimit *rl, uint32_t i)
{
        struct bucket *e = &rl->b[i];
        if (e->prev != NIL)
                rl->b[e->prev].next = e->next;
        else
                rl->head = e->next;
        if (e->next != NIL)
                rl->b[e->next].prev = e->prev;
        else
                rl->tail = e->prev;
}

static void lru_push_head(struct ratelimit *rl, uint32_t i)
{
        struct bucket *e = &rl->b[i];
        e->prev = NIL;
        e->next = rl->head;
        if (rl->head != NIL)
                rl->b[rl->head].prev = i;
        else
                rl->tail = i;
        rl->head = i;
}

static uint64_t cap_of(const struct bucket *e)
{
        return (uint64_t)e->burst * UNIT;
}

static uint64_t div_up(uint64_t a, uint64_t b)
{
        return a / b + (a % b != 0);
}

static uint32_t sat32(uint64_t v)
{
        return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Milliseconds until the bucket holds `want` units, UINT64_MAX for never. */
static uint64_t ms_until(const struct bucket *e, uint64_t want)
{
        if (e->units >= want)
                return 0;
        if (e->per_minute == 0)
                return UINT64_MAX;
        return div_up(want - e->units, e->per_minute);
}

/* Whole seconds, rounded up, for a ms_until() value. */
static uint32_t secs(uint64_t ms)
{
        return ms == UINT64_MAX ? UINT32_MAX : sat32(div_up(ms, 1000));
}

/* Brings the bucket up to now_ms at its own rate. A time before last_ms
 * counts as no time at all, and last_ms stays the latest time seen, so the
 * same interval is never paid for twice. */
static void refill(struct bucket *e, int64_t now_ms)
{
        uint64_t elapsed, need;

        if (now_ms <= e->last_ms)
                return;
        elapsed = (uint64_t)now_ms - (uint64_t)e->last_ms; /* exact for any two int64_t */
        e->last_ms = now_ms;
        need = ms_until(e, cap_of(e));
        if (elapsed >= need)
                e->units = cap_of(e);
        else /* elapsed < need = ceil(deficit / per_minute): no overflow */
                e->units += elapsed * e->per_minute;
}

/* A bucket for a new key: an unused one, or the first full one among the
 * RATELIMIT_EVICT_SCAN least recently used (unlinked and returned). NIL if
 * none, with *ret_ms the milliseconds until one of those is full. */
static uint32_t bucket_get(struct ratelimit *rl, int64_t now_ms, uint64_t *ret_ms)
{
        uint64_t soonest = UINT64_MAX;
        uint32_t i = rl->tail;

        if (rl->n < rl->max)
                return (uint32_t)rl->n++;
        for (unsigned k = 0; k < RATELIMIT_EVICT_SCAN && i != NIL; k++, i = rl->b[i].prev) {
                struct bucket *e = &rl->b[i];
                uint64_t ms;
                refill(e, now_ms);
                ms = ms_until(e, cap_of(e));
                if (ms == 0) {
                        hash_remove(rl, i);
                        lru_unlink(rl, i);
                        return i;
                }
                if (ms < soonest)
                        soonest = ms;
        }
        *ret_ms = soonest;
        return NIL;
}

void ratelimit_take(struct ratelimit *rl, uint64_t key_id, uint32_t per_minute, uint32_t burst,
                    int64_t now_ms, struct ratelimit_result *ret)
{
        struct ratelimit_result r = {.limit = per_minute};
        struct bucket *e;
        uint32_t i;

        pthread_mutex_lock(&rl->lock);
        i = lookup(rl, key_id);
        if (i == NIL) {
                uint64_t wait_ms = 0;
                i = bucket_get(rl, now_ms, &wait_ms);
                if (i == NIL) {
                        r.retry_after_s = secs(wait_ms);
                        if (r.retry_after_s == 0)
                                r.retry_after_s = 1;
                        r.reset_s = r.retry_after_s;
                        goto out;
                }
                e = &rl->b[i];
                *e = (struct bucket){
                    .key = key_id, .last_ms = now_ms, .per_minute = per_minute, .burst = burst};
                e->units = cap_of(e);
                hash_insert(rl, i);
        } else {
                e = &rl->b[i];
                refill(e, now_ms);
                lru_unlink(rl, i);
                if (e->per_minute != per_minute || e->burst != burst) {
                        e->per_minute = per_minute;
                        e->burst = burst;
                        if (e->units > cap_of(e))
                                e->units = cap_of(e);
                }
        }
        lru_push_head(rl, i);

        if (e->units >= UNIT) {
                e->units -= UNIT;
                r.allowed = 1;
        } else {
                /* A bucket that holds no whole token (burst 0) never allows. */
                r.retry_after_s = e->burst == 0 ? UINT32_MAX : secs(ms_until(e, UNIT));
        }
        r.remaining = (uint32_t)(e->units / UNIT);
        r.reset_s = secs(ms_until(e, cap_of(e)));
out:
        pthread_mutex_unlock(&rl->lock);
        *ret = r;
}
