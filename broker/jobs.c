/* jobs: the daily and periodic jobs thread, and invoicing. See jobs.h. */
#include "jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "money.h"
#include "util.h"

/* The thread re-reads the wall clock at least this often, so a clock
 * that jumps (or a suspended machine) delays a midnight by no more. */
#define JOBS_WAKE_MAX_MS 30000

struct job {
        char name[JOBS_NAME_MAX];
        jobs_fn fn;
        void *ud;
        int64_t period_ms; /* 0: daily */
        int64_t next_ms;   /* 0: at the first jobs_run_due() */
};

struct jobs {
        const struct tz *zone;
        pthread_mutex_t lock; /* the fields below; held while jobs run */
        pthread_cond_t wake;  /* CLOCK_MONOTONIC */
        struct job jobs[JOBS_MAX];
        size_t n;
        int64_t next_midnight_ms; /* 0: daily jobs not run yet */
        bool started, stop;
        pthread_t thread;
};

int jobs_new(const char *zone, struct jobs **ret)
{
        const struct tz *z = tz_get(zone);
        pthread_condattr_t ca;
        struct jobs *j;
        if (!z)
                return -EINVAL;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->zone = z;
        pthread_mutex_init(&j->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&j->wake, &ca);
        pthread_condattr_destroy(&ca);
        *ret = j;
        return 0;
}

static int add(struct jobs *j, const char *name, int64_t period_ms, jobs_fn fn, void *ud)
{
        int r = 0;
        if (!name || !name[0] || strlen(name) >= JOBS_NAME_MAX || !fn || period_ms < 0)
                return -EINVAL;
        pthread_mutex_lock(&j->lock);
        if (j->started) {
                r = -EBUSY;
        } else if (j->n == JOBS_MAX) {
                r = -E2BIG;
        } else {
                struct job *b = &j->jobs[j->n++];
                memset(b, 0, sizeof(*b));
                util_strlcpy(b->name, name, sizeof(b->name));
                b->fn = fn;
                b->ud = ud;
                b->period_ms = period_ms;
        }
        pthread_mutex_unlock(&j->lock);
        return r;
}

int jobs_add_daily(struct jobs *j, const char *name, jobs_fn fn, void *ud)
{
        return add(j, name, 0, fn, ud);
}

int jobs_add_periodic(struct jobs *j, const char *name, int64_t period_ms, jobs_fn fn, void *ud)
{
        if (period_ms < 1000)
                return -EINVAL;
        return add(j, name, period_ms, fn, ud);
}

const struct tz *jobs_zone(const struct jobs *j)
{
        return j->zone;
}

/* Caller holds the lock. */
static size_t run_due_locked(struct jobs *j, int64_t now_ms)
{
        size_t ran = 0;
        bool daily = j->next_midnight_ms == 0 || now_ms >= j->next_midnight_ms;
        if (daily) {
                int64_t next;
                if (tz_next_midnight(j->zone, now_ms / 1000, &next) == 0)
                        j->next_midnight_ms = next * 1000;
                else
                        j->next_midnight_ms = now_ms + 24 * 3600 * 1000LL; /* cannot happen */
        }
        for (size_t i = 0; i < j->n; i++) {
                struct job *b = &j->jobs[i];
                if (b->period_ms == 0 ? !daily : (b->next_ms && now_ms < b->next_ms))
                        continue;
                if (b->period_ms)
                        b->next_ms = now_ms + b->period_ms;
                log_debug("jobs: running %s", b->name);
                b->fn(b->ud, now_ms);
                ran++;
        }
        return ran;
}

size_t jobs_run_due(struct jobs *j, int64_t now_ms)
{
        pthread_mutex_lock(&j->lock);
        size_t ran = run_due_locked(j, now_ms);
        pthread_mutex_unlock(&j->lock);
        return ran;
}

static int64_t next_due_locked(const struct jobs *j)
{
        int64_t next = j->next_midnight_ms;
        for (size_t i = 0; i < j->n; i++)
                if (j->jobs[i].period_ms && j->jobs[i].next_ms < next)
                        next = j->jobs[i].next_ms;
        return next;
}

int64_t jobs_next_due(struct jobs *j)
{
        pthread_mutex_lock(&j->lock);
        int64_t next = next_due_locked(j);
        pthread_mutex_unlock(&j->lock);
        return next;
}

static void *jobs_main(void *arg)
{
        struct jobs *j = arg;
        pthread_mutex_lock(&j->lock);
        while (!j->stop) {
                int64_t now = util_now_ms();
                run_due_locked(j, now);
                if (j->stop)
                        break;
                now = util_now_ms();
                int64_t wait_ms = next_due_locked(j) - now;
                if (wait_ms > JOBS_WAKE_MAX_MS)
                        wait_ms = JOBS_WAKE_MAX_MS;
                if (wait_ms < 1)
                        wait_ms = 1;
                struct timespec ts;
                clock_gettime(CLOCK_MONOTONIC, &ts);
                ts.tv_sec += wait_ms / 1000;
                ts.tv_nsec += (wait_ms % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
                /* Woken early by jobs_free(), or at the deadline. */
                while (!j->stop && pthread_cond_timedwait(&j->wake, &j->lock, &ts) == 0)
                        ;
        }
        pthread_mutex_unlock(&j->lock);
        return NULL;
}

int jobs_start(struct jobs *j)
{
        int r;
        pthread_mutex_lock(&j->lock);
        if (j->started) {
                pthread_mutex_unlock(&j->lock);
                return -EBUSY;
        }
        j->started = true;
        pthread_mutex_unlock(&j->lock);
        r = pthread_create(&j->thread, NULL, jobs_main, j);
        if (r != 0) {
                pthread_mutex_lock(&j->lock);
                j->started = false;
                pthread_mutex_unlock(&j->lock);
                log_error("jobs: cannot start the thread: %s", strerror(r));
                return -r;
        }
        return 0;
}

void jobs_free(struct jobs *j)
{
        bool started;
        if (!j)
                return;
        pthread_mutex_lock(&j->lock);
        j->stop = true;
        started = j->started;
        pthread_cond_broadcast(&j->wake);
        pthread_mutex_unlock(&j->lock);
        if (started)
                pthread_join(j->thread, NULL);
        pthread_cond_destroy(&j->wake);
        pthread_mutex_destroy(&j->lock);
        free(j);
}

/* ---- invoicing ---- */

static void day_text(int64_t day, char out[16])
{
        int y, m, d;
        tz_civil_from_days(day, &y, &m, &d);
        snprintf(out, 16, "%04d-%02d-%02d", y % 10000, m, d);
}

int jobs_billing_catch_up(struct store *s, const struct tz *z, int64_t now_ms, size_t *ret_days)
{
        int y, m, d;
        int64_t today = tz_local_day(z, now_ms / 1000, &y, &m, &d), last, today_start;
        size_t days = 0;
        int r = store_billing_day(s, &last);
        bool first = r == -ENOENT && store_billing_enforced(s);
        if (r == -ENOENT || (r == 0 && !store_billing_enforced(s))) {
                /* Billing starts today, or is off: nothing to charge. */
                if ((r = tz_local_midnight(z, y, m, d, &today_start)) < 0)
                        return r;
                r = store_billing_mark(s, today - 1, today_start * 1000);
                if (r == 0 && first) {
                        char text[16];
                        day_text(today, text);
                        log_info("billing: first run; invoicing starts with %s (%s)", text,
                                 tz_name(z));
                }
                if (r == 0 && ret_days)
                        *ret_days = 0;
                return r;
        }
        if (r < 0)
                return r;
        if (today - 1 - last > JOBS_BILLING_CATCH_UP_MAX) {
                char a[16], b[16];
                day_text(last, a);
                day_text(today - 1, b);
                log_error("billing: last day invoiced %s, now %s: more than %d days behind; "
                          "not invoicing (is the clock right?)",
                          a, b, JOBS_BILLING_CATCH_UP_MAX);
                return -ERANGE;
        }
        for (int64_t day = last + 1; day < today; day++) {
                int y2, m2, dd2;
                int64_t start, end;
                struct billing_run run;
                char text[16], total[MONEY_STR_MAX];
                tz_civil_from_days(day, &y, &m, &d);
                tz_civil_from_days(day + 1, &y2, &m2, &dd2);
                if ((r = tz_local_midnight(z, y, m, d, &start)) < 0 ||
                    (r = tz_local_midnight(z, y2, m2, dd2, &end)) < 0)
                        return r;
                day_text(day, text);
                r = store_billing_run(s, day, start * 1000, end * 1000, now_ms, &run);
                if (r == -EALREADY)
                        continue; /* invoiced meanwhile */
                if (r < 0) {
                        log_error("billing: cannot invoice %s: %s", text, strerror(-r));
                        return r;
                }
                money_format(run.total_cents, total);
                log_info("billing: invoiced %s (%s): %zu services of %zu accounts, EUR %s", text,
                         tz_name(z), run.lines, run.accounts, total);
                days++;
        }
        if (ret_days)
                *ret_days = days;
        return 0;
}
