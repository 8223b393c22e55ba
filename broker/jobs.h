/* jobs: the broker's clock-driven background work, on one thread of its
 * own: daily jobs run at every local midnight of one time zone (the
 * billing zone, Europe/Amsterdam by default) and once at start, so a
 * midnight missed while the broker was down is made up for; periodic jobs
 * run at start and then every period. Invoicing (jobs_billing_catch_up)
 * is the first daily job; others are added with jobs_add_daily() and
 * jobs_add_periodic() before jobs_start().
 *
 * A job runs on the jobs thread (or the caller's, with jobs_run_due()),
 * one at a time, and must not block for long: it delays the others. The
 * clock is injectable: jobs_run_due() takes "now", and the thread uses
 * util_now_ms(). jobs_new/add/start/free are for the owning thread
 * (main); jobs_run_due is for tests that do not start the thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "tz.h"

struct jobs;

#define JOBS_MAX      16
#define JOBS_NAME_MAX 32

typedef void (*jobs_fn)(void *ud, int64_t now_ms);

/* -EINVAL for an unknown zone name. */
int jobs_new(const char *zone, struct jobs **ret);
/* -E2BIG past JOBS_MAX jobs, -EINVAL for a bad name or period, -EBUSY once
 * started. */
int jobs_add_daily(struct jobs *j, const char *name, jobs_fn fn, void *ud);
int jobs_add_periodic(struct jobs *j, const char *name, int64_t period_ms, jobs_fn fn, void *ud);
int jobs_start(struct jobs *j);
/* Runs every job due at now_ms; returns how many ran. */
size_t jobs_run_due(struct jobs *j, int64_t now_ms);
/* The next instant (ms) a job is due, after the last jobs_run_due(). */
int64_t jobs_next_due(struct jobs *j);
const struct tz *jobs_zone(const struct jobs *j);
/* Stops the thread (waits for a running job to finish) and frees. */
void jobs_free(struct jobs *j);

/* Invoicing: every local day of zone z from the day after the last one
 * invoiced up to yesterday (the day before now_ms's), each in its own
 * transaction (store_billing_run), so a crash between days charges none
 * twice. The first call ever only records yesterday as the last day
 * (billing starts today); so does every call while billing is not
 * enforced (nothing is charged for days billing was off). More than
 * JOBS_BILLING_CATCH_UP_MAX days behind is taken for a clock error:
 * -ERANGE, logged, nothing charged. 0 and the days invoiced. */
#define JOBS_BILLING_CATCH_UP_MAX 92
int jobs_billing_catch_up(struct store *s, const struct tz *z, int64_t now_ms, size_t *ret_days);
