/* The per-key token buckets on a simulated clock: the spec's tiers, exact
 * header values, tier changes, a clock going backwards, eviction, threads. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "ratelimit.h"

struct tier {
        const char *name;
        uint32_t per_minute, burst;
        int64_t ms_per_token; /* 60000 / per_minute */
        uint32_t full_s;      /* seconds from empty to full, rounded up */
};

static const struct tier tiers[] = {
    {"free", 60, 10, 1000, 10},
    {"pro", 300, 50, 200, 10},
    {"enterprise", 1000, 100, 60, 6},
};
#define N_TIERS (sizeof(tiers) / sizeof(tiers[0]))
#define FREE    (&tiers[0])
#define PRO     (&tiers[1])

static struct ratelimit *new_rl(size_t max)
{
        struct ratelimit *rl = NULL;
        assert_int_equal(ratelimit_new(max, &rl), 0);
        assert_non_null(rl);
        return rl;
}

static struct ratelimit_result take(struct ratelimit *rl, uint64_t key, const struct tier *t,
                                    int64_t now)
{
        struct ratelimit_result r;
        ratelimit_take(rl, key, t->per_minute, t->burst, now, &r);
        assert_int_equal(r.limit, t->per_minute);
        return r;
}

/* Takes until refused at one instant; the number allowed. */
static unsigned drain(struct ratelimit *rl, uint64_t key, const struct tier *t, int64_t now)
{
        unsigned n = 0;
        while (take(rl, key, t, now).allowed)
                assert_true(++n <= t->burst);
        return n;
}

#define assert_result(r_, allowed_, remaining_, reset_, retry_)                                    \
        do {                                                                                       \
                assert_int_equal((r_).allowed, (allowed_));                                        \
                assert_int_equal((r_).remaining, (remaining_));                                    \
                assert_int_equal((r_).reset_s, (reset_));                                          \
                assert_int_equal((r_).retry_after_s, (retry_));                                    \
        } while (0)

static void test_new_bad_args(void **state)
{
        struct ratelimit *rl = (struct ratelimit *)&rl; /* must stay untouched */
        struct ratelimit *keep = rl;
        (void)state;
        assert_int_equal(ratelimit_new(0, &rl), -EINVAL);
        assert_int_equal(ratelimit_new((size_t)RATELIMIT_MAX_KEYS + 1, &rl), -EINVAL);
        assert_ptr_equal(rl, keep);
        ratelimit_free(NULL);
        rl = new_rl(1);
        assert_int_equal(ratelimit_count(rl), 0);
        ratelimit_free(rl);
}

/* Exactly `burst` at once, then refused until one token's time has passed. */
static void test_burst_each_tier(void **state)
{
        (void)state;
        for (size_t k = 0; k < N_TIERS; k++) {
                const struct tier *t = &tiers[k];
                struct ratelimit *rl = new_rl(8);
                struct ratelimit_result r;
                print_message("tier %s\n", t->name);
                for (uint32_t i = 1; i <= t->burst; i++) {
                        r = take(rl, 7, t, 0);
                        /* i tokens short of full: i * ms_per_token, rounded up */
                        assert_result(r, 1, t->burst - i,
                                      (uint32_t)((i * t->ms_per_token + 999) / 1000), 0);
                }
                r = take(rl, 7, t, 0);
                assert_result(r, 0, 0, t->full_s, 1);
                r = take(rl, 7, t, t->ms_per_token - 1);
                assert_result(r, 0, 0, t->full_s, 1);
                r = take(rl, 7, t, t->ms_per_token);
                assert_result(r, 1, 0, t->full_s, 0);
                r = take(rl, 7, t, t->ms_per_token);
                assert_int_equal(r.allowed, 0);
                /* a full bucket's worth of time later: exactly burst again */
                assert_int_equal(drain(rl, 7, t, t->ms_per_token + 1000 * (int64_t)t->full_s),
                                 t->burst);
                ratelimit_free(rl);
        }
}

/* 60/min: one more per second; after 60 s full, and never above burst. */
static void test_refill_rate(void **state)
{
        struct ratelimit *rl = new_rl(8);
        (void)state;
        assert_int_equal(drain(rl, 1, FREE, 0), 10);
        assert_int_equal(drain(rl, 1, FREE, 999), 0);
        assert_int_equal(drain(rl, 1, FREE, 1000), 1);
        assert_int_equal(drain(rl, 1, FREE, 1000), 0);
        for (int64_t s = 2; s <= 5; s++)
                assert_int_equal(drain(rl, 1, FREE, s * 1000), 1);
        assert_int_equal(drain(rl, 1, FREE, 65000), 10);
        assert_int_equal(drain(rl, 1, FREE, 65000 + 600000), 10);
        assert_int_equal(drain(rl, 1, FREE, INT64_MAX), 10);
        /* 7.5 s after empty: 7 whole tokens, the half one stays */
        assert_int_equal(drain(rl, 2, FREE, 0), 10);
        assert_int_equal(drain(rl, 2, FREE, 7500), 7);
        assert_int_equal(drain(rl, 2, FREE, 7999), 0);
        assert_int_equal(drain(rl, 2, FREE, 8000), 1);
        ratelimit_free(rl);
}

/* Header values along one Free key's life, fractions of tokens included. */
static void test_values(void **state)
{
        static const struct {
                int64_t now;
                unsigned repeat; /* same call this many times, the last one checked */
                int allowed;
                uint32_t remaining, reset_s, retry_after_s;
        } steps[] = {
            {0, 1, 1, 9, 1, 0},     /* 1 token short: 1 s */
            {1, 1, 1, 8, 2, 0},     /* 2 tokens - 1 ms worth short: 1.999 s */
            {1, 8, 1, 0, 10, 0},    /* 10 - 0.001 tokens short: 9.999 s */
            {1, 1, 0, 0, 10, 1},    /* 0.001 token: 999 ms to the next one */
            {500, 1, 0, 0, 10, 1},  /* 0.5 token */
            {1000, 1, 1, 0, 10, 0}, /* exactly one came back */
            {1000, 1, 0, 0, 10, 1},  {3500, 1, 1, 1, 9, 0}, /* 2.5 tokens, one taken: 8.5 short */
            {12000, 1, 1, 9, 1, 0},                         /* full again at 12 s exactly */
            {12000, 9, 1, 0, 10, 0}, {12000, 1, 0, 0, 10, 1},
        };
        struct ratelimit *rl = new_rl(8);
        (void)state;
        for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
                struct ratelimit_result r = {0};
                for (unsigned k = 0; k < steps[i].repeat; k++)
                        r = take(rl, 1, FREE, steps[i].now);
                assert_result(r, steps[i].allowed, steps[i].remaining, steps[i].reset_s,
                              steps[i].retry_after_s);
        }
        ratelimit_free(rl);

        /* Pro refills a token in 200 ms, Enterprise in 60 ms: both round up to 1 s */
        rl = new_rl(8);
        struct ratelimit_result r = take(rl, 1, PRO, 0);
        assert_result(r, 1, 49, 1, 0);
        r = take(rl, 2, &tiers[2], 0);
        assert_result(r, 1, 99, 1, 0);
        for (int i = 0; i < 5; i++)
                r = take(rl, 1, PRO, 0);
        assert_result(r, 1, 44, 2, 0); /* 6 short: 1.2 s */
        ratelimit_free(rl);
}

static void test_independent_keys(void **state)
{
        struct ratelimit *rl = new_rl(8);
        (void)state;
        assert_int_equal(drain(rl, 1, FREE, 0), 10);
        assert_int_equal(drain(rl, 2, FREE, 0), 10);
        assert_int_equal(drain(rl, 3, PRO, 0), 50);
        assert_int_equal(take(rl, 1, FREE, 0).allowed, 0);
        struct ratelimit_result r = take(rl, 4, FREE, 0);
        assert_result(r, 1, 9, 1, 0);
        assert_int_equal(drain(rl, 1, FREE, 1000), 1);
        assert_int_equal(drain(rl, 3, PRO, 1000), 5);
        assert_int_equal(drain(rl, 4, FREE, 1000), 10); /* 9 left, +1: full, never more */
        assert_int_equal(drain(rl, 4, FREE, 5000), 4);
        /* ids that share the low bits, and the extremes */
        assert_int_equal(drain(rl, 1ULL << 40, FREE, 0), 10);
        assert_int_equal(drain(rl, UINT64_MAX, FREE, 0), 10);
        assert_int_equal(drain(rl, 0, FREE, 0), 10);
        assert_int_equal(ratelimit_count(rl), 7);
        ratelimit_free(rl);
}

static void test_tier_change(void **state)
{
        struct ratelimit *rl = new_rl(8);
        struct ratelimit_result r;
        (void)state;
        /* empty Free key upgraded: still empty, refills at the Pro rate */
        assert_int_equal(drain(rl, 1, FREE, 0), 10);
        r = take(rl, 1, PRO, 0);
        assert_result(r, 0, 0, 10, 1); /* 50 tokens at 200 ms */
        assert_int_equal(drain(rl, 1, PRO, 199), 0);
        assert_int_equal(drain(rl, 1, PRO, 1000), 5);
        assert_int_equal(drain(rl, 1, PRO, 20000), 50); /* and fills to the new burst */

        /* half-used Free key upgraded: keeps its 5, not topped up */
        assert_int_equal(drain(rl, 2, FREE, 0) + 0, 10);
        assert_int_equal(take(rl, 2, FREE, 5000).allowed, 1); /* 5 back, 4 left */
        r = take(rl, 2, PRO, 5000);
        assert_result(r, 1, 3, 10, 0); /* 47 short at 200 ms: 9.4 s */
        r = take(rl, 2, PRO, 6000);
        assert_result(r, 1, 7, 9, 0); /* +5 */

        /* full Pro key downgraded: clamped to Free's 10 */
        r = take(rl, 3, PRO, 0);
        assert_result(r, 1, 49, 1, 0);
        r = take(rl, 3, FREE, 0);
        assert_result(r, 1, 9, 1, 0);
        assert_int_equal(drain(rl, 3, FREE, 0), 9);

        /* time passed under the old tier refills at the old rate, up to the old burst */
        assert_int_equal(drain(rl, 4, FREE, 0), 10);
        r = take(rl, 4, PRO, 3000); /* 3 s at 1/s = 3, one taken */
        assert_result(r, 1, 2, 10, 0);
        ratelimit_free(rl);
}

static void test_clock_backwards(void **state)
{
        struct ratelimit *rl = new_rl(8);
        struct ratelimit_result r;
        (void)state;
        assert_int_equal(drain(rl, 1, FREE, 10000), 10);
        r = take(rl, 1, FREE, 5000);
        assert_result(r, 0, 0, 10, 1);
        r = take(rl, 1, FREE, INT64_MIN);
        assert_result(r, 0, 0, 10, 1);
        /* the interval lived again is not paid twice */
        assert_int_equal(drain(rl, 1, FREE, 10999), 0);
        assert_int_equal(drain(rl, 1, FREE, 11000), 1);
        /* backwards while partly full: nothing minted, nothing lost */
        assert_int_equal(drain(rl, 2, FREE, 0), 10);
        assert_int_equal(take(rl, 2, FREE, 4000).allowed, 1); /* 3 left */
        assert_int_equal(drain(rl, 2, FREE, 2000), 3);
        assert_int_equal(drain(rl, 2, FREE, 5000), 1);
        /* the extremes: no overflow either way */
        assert_int_equal(drain(rl, 3, FREE, INT64_MAX), 10);
        assert_int_equal(drain(rl, 3, FREE, INT64_MIN), 0);
        assert_int_equal(drain(rl, 3, FREE, 0), 0);
        assert_int_equal(drain(rl, 4, FREE, INT64_MIN), 10);
        assert_int_equal(drain(rl, 4, FREE, INT64_MAX), 10);
        ratelimit_free(rl);
}

/* No refill, no capacity, the widest numbers. */
static void test_degenerate_tiers(void **state)
{
        struct ratelimit *rl = new_rl(8);
        struct ratelimit_result r;
        (void)state;
        ratelimit_take(rl, 1, 60, 0, 0, &r);
        assert_result(r, 0, 0, 0, UINT32_MAX);
        ratelimit_take(rl, 1, 60, 0, 100000, &r);
        assert_result(r, 0, 0, 0, UINT32_MAX);

        ratelimit_take(rl, 2, 0, 2, 0, &r);
        assert_result(r, 1, 1, UINT32_MAX, 0);
        ratelimit_take(rl, 2, 0, 2, 0, &r);
        assert_result(r, 1, 0, UINT32_MAX, 0);
        ratelimit_take(rl, 2, 0, 2, INT64_MAX, &r);
        assert_result(r, 0, 0, UINT32_MAX, UINT32_MAX);

        ratelimit_take(rl, 3, UINT32_MAX, UINT32_MAX, 0, &r);
        assert_result(r, 1, UINT32_MAX - 1, 1, 0);
        ratelimit_take(rl, 3, UINT32_MAX, UINT32_MAX, INT64_MAX, &r);
        assert_result(r, 1, UINT32_MAX - 1, 1, 0);
        /* 1 per minute, burst 2^32-1: empty takes 2^32-1 minutes, saturates */
        ratelimit_take(rl, 4, 1, UINT32_MAX, 0, &r);
        assert_result(r, 1, UINT32_MAX - 1, 60, 0);
        ratelimit_take(rl, 4, 1, 1, 0, &r); /* clamped to 1, then taken */
        assert_result(r, 1, 0, 60, 0);
        ratelimit_take(rl, 4, 1, UINT32_MAX, 0, &r);
        assert_result(r, 0, 0, UINT32_MAX, 60);
        ratelimit_free(rl);
}

/* max 4: only full buckets are evicted (least recently used first); with
 * none full a new key is refused until one is. */
static void test_eviction_full_only(void **state)
{
        struct ratelimit *rl = new_rl(4);
        struct ratelimit_result r;
        (void)state;
        for (uint64_t k = 1; k <= 4; k++)
                assert_int_equal(take(rl, k, FREE, 0).allowed, 1);
        assert_int_equal(ratelimit_count(rl), 4);
        /* none full at 0: key 5 fails closed, told when a bucket frees */
        r = take(rl, 5, FREE, 0);
        assert_result(r, 0, 0, 1, 1);
        assert_int_equal(ratelimit_count(rl), 4);
        /* the tracked keys were not disturbed */
        r = take(rl, 1, FREE, 0);
        assert_result(r, 1, 8, 2, 0);
        /* at 1 s keys 2..4 are full (key 1 is not): 5 replaces 2, the LRU full one */
        r = take(rl, 5, FREE, 1000);
        assert_result(r, 1, 9, 1, 0);
        assert_int_equal(ratelimit_count(rl), 4);
        r = take(rl, 1, FREE, 1000); /* kept: 8 + 1 back, one taken */
        assert_result(r, 1, 8, 2, 0);
        r = take(rl, 2, FREE, 1000); /* evicted when full, so back full: nothing gained */
        assert_result(r, 1, 9, 1, 0);
        /* the wait told to a refused newcomer is the soonest among the LRU candidates */
        assert_int_equal(drain(rl, 1, FREE, 1000), 8);
        assert_int_equal(drain(rl, 2, FREE, 1000), 9);
        assert_int_equal(drain(rl, 3, FREE, 1000), 10);
        assert_int_equal(drain(rl, 5, FREE, 1000), 9);
        r = take(rl, 6, FREE, 1000);
        assert_result(r, 0, 0, 10, 10);
        assert_int_equal(take(rl, 6, FREE, 10999).allowed, 0);
        r = take(rl, 6, FREE, 11000);
        assert_result(r, 1, 9, 1, 0);
        ratelimit_free(rl);
}

/* max 4, 10 keys: the others come and go (each uses one token every third
 * second, so its bucket is full, and evictable, a second later) while key 1,
 * limited, sits at the LRU end between its bursts; it keeps its bucket and
 * gets exactly what it earns, 3 tokens every 3 s, never a fresh bucket. */
static void test_eviction_keeps_limited_key(void **state)
{
        struct ratelimit *rl = new_rl(4);
        (void)state;
        assert_int_equal(drain(rl, 1, FREE, 0), 10);
        for (int64_t round = 1; round <= 30; round++) {
                int64_t now = round * 1000;
                for (uint64_t k = 2; k <= 10; k++) {
                        if ((round + (int64_t)k) % 3)
                                continue;
                        struct ratelimit_result r = take(rl, k, FREE, now);
                        assert_result(r, 1, 9, 1, 0); /* a fresh bucket each time */
                        assert_true(ratelimit_count(rl) <= 4);
                }
                if (round % 3 == 0)
                        assert_int_equal(drain(rl, 1, FREE, now), 3);
        }
        assert_int_equal(ratelimit_count(rl), 4);
        ratelimit_free(rl);
}

/* max 4, 10 keys at random, key 1 hot (about 5 requests a second against
 * its 1), the rest idle enough to be full and evicted: every allowed request
 * is one the key's own bucket (an unbounded limiter fed the same allowed
 * requests) allows too, with the same remaining and reset. */
static void test_eviction_churn(void **state)
{
        struct ratelimit *rl = new_rl(4), *ref = new_rl(64);
        uint64_t x = 88172645463325252ULL;
        int64_t now = 0;
        unsigned allowed = 0, refused = 0, fresh = 0;
        (void)state;
        for (int i = 0; i < 200000; i++) {
                struct ratelimit_result r, rr;
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                now += (int64_t)(x % 200);
                uint64_t key = (x >> 16) % 2 ? 1 : 2 + (x >> 20) % 9;
                const struct tier *t = key % 4 == 0 ? PRO : FREE;
                r = take(rl, key, t, now);
                assert_true(ratelimit_count(rl) <= 4);
                if (!r.allowed) {
                        refused++;
                        assert_true(r.retry_after_s >= 1);
                        continue;
                }
                allowed++;
                fresh += r.remaining == t->burst - 1;
                rr = take(ref, key, t, now);
                assert_int_equal(rr.allowed, 1);
                assert_int_equal(r.remaining, rr.remaining);
                assert_int_equal(r.reset_s, rr.reset_s);
        }
        print_message("allowed %u (%u from a full bucket), refused %u\n", allowed, fresh, refused);
        assert_true(allowed > 10000 && refused > 10000 && fresh > 10000);
        ratelimit_free(rl);
        ratelimit_free(ref);
}

#define N_THREADS 4
#define N_KEYS    100

struct hammer {
        struct ratelimit *rl;
        int id;
        int mixed; /* keys in all three tiers, or all Free */
        unsigned allowed;
};

static const struct tier *tier_of(uint64_t key, int mixed)
{
        return mixed ? &tiers[key % N_TIERS] : FREE;
}

static void *hammer_run(void *arg)
{
        struct hammer *h = arg;
        for (int pass = 0; pass < 200; pass++)
                for (int i = 0; i < N_KEYS; i++) {
                        /* each thread walks the keys from its own start */
                        uint64_t key = 1000 + (uint64_t)((i + h->id * 25) % N_KEYS);
                        const struct tier *t = tier_of(key, h->mixed);
                        struct ratelimit_result r;
                        ratelimit_take(h->rl, key, t->per_minute, t->burst, 5000, &r);
                        h->allowed += (unsigned)r.allowed;
                }
        return NULL;
}

static unsigned hammer(size_t max, int mixed)
{
        struct ratelimit *rl = new_rl(max);
        struct hammer h[N_THREADS];
        pthread_t th[N_THREADS];
        unsigned total = 0;
        for (int i = 0; i < N_THREADS; i++) {
                h[i] = (struct hammer){.rl = rl, .id = i, .mixed = mixed};
                assert_int_equal(pthread_create(&th[i], NULL, hammer_run, &h[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                total += h[i].allowed;
        }
        assert_int_equal(ratelimit_count(rl), max < N_KEYS ? max : N_KEYS);
        ratelimit_free(rl);
        return total;
}

/* Frozen clock: together the threads get exactly each bucket's burst. */
static void test_threads(void **state)
{
        unsigned want = 0;
        (void)state;
        for (uint64_t k = 1000; k < 1000 + N_KEYS; k++)
                want += tier_of(k, 1)->burst;
        assert_int_equal(want, 34 * 50 + 33 * 100 + 33 * 10);
        assert_int_equal(hammer(128, 1), want);
        /* max 16 of 100 keys: the first 16 in fill their buckets and no bucket
         * is ever full again, so nothing is evicted and the rest are refused */
        assert_int_equal(hammer(16, 0), 16 * 10);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
            cmocka_unit_test(test_new_bad_args),
            cmocka_unit_test(test_burst_each_tier),
            cmocka_unit_test(test_refill_rate),
            cmocka_unit_test(test_values),
            cmocka_unit_test(test_independent_keys),
            cmocka_unit_test(test_tier_change),
            cmocka_unit_test(test_clock_backwards),
            cmocka_unit_test(test_degenerate_tiers),
            cmocka_unit_test(test_eviction_full_only),
            cmocka_unit_test(test_eviction_keeps_limited_key),
            cmocka_unit_test(test_eviction_churn),
            cmocka_unit_test(test_threads),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
