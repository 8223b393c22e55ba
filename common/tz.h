/* tz: time zones from the system's TZif files (/usr/share/zoneinfo/NAME,
 * RFC 8536 versions 1 to 3), without touching the process's TZ or the C
 * library's localtime state.
 *
 * A zone is read once, on its first tz_get(), and kept in a small cache
 * for the life of the process: the returned pointer is never freed and
 * stays valid, and every function here may be called from any thread.
 * Instants are Unix seconds (UTC, no leap seconds); dates are proleptic
 * Gregorian. Past the file's last transition the zone's POSIX TZ footer
 * rule is applied, so far-future instants get the right offset.
 */
#pragma once

#include <stdint.h>

struct tz;

/* The zone named NAME ("Europe/Amsterdam", "UTC"), or NULL if the name is
 * malformed (empty, absolute, "..", characters outside [A-Za-z0-9_+-/]),
 * unknown, not a valid TZif file, or the cache (TZ_CACHE_MAX zones) full. */
#define TZ_CACHE_MAX 64
#define TZ_NAME_MAX 64
const struct tz *tz_get(const char *name);

/* The zone's name as given to tz_get(). */
const char *tz_name(const struct tz *z);

/* Seconds east of UTC in zone z at the instant unix_seconds. */
int32_t tz_offset(const struct tz *z, int64_t unix_seconds);

/* The first instant at which zone z's wall clock reads Y-MON-MDAY 00:00 or
 * later: local midnight of that date; if midnight falls in a gap (clocks
 * jump over it), the first instant after the gap; if it occurs twice, the
 * first time. 0, or -EINVAL for a date that does not exist or a year
 * outside 1..9999. */
int tz_local_midnight(const struct tz *z, int y, int mon, int mday, int64_t *ret_unix_seconds);

/* Local date of an instant in zone z, as days since 1970-01-01 (negative
 * before) and, when the pointers are not NULL, as year, month (1-12), day. */
int64_t tz_local_day(const struct tz *z, int64_t unix_seconds, int *ret_y, int *ret_mon, int *ret_mday);

/* The first local midnight strictly after unix_seconds. 0 or -EINVAL. */
int tz_next_midnight(const struct tz *z, int64_t unix_seconds, int64_t *ret_unix_seconds);

/* Calendar arithmetic, no zone: days since 1970-01-01 of a civil date and
 * back. tz_days_from_civil() does not check its input. */
int64_t tz_days_from_civil(int y, int mon, int mday);
void tz_civil_from_days(int64_t days, int *ret_y, int *ret_mon, int *ret_mday);
int tz_days_in_month(int y, int mon);
