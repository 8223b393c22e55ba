#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

int64_t util_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_us(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int util_random(void *buf, size_t len)
{
        unsigned char *p = buf;
        while (len > 0) {
                ssize_t n = getrandom(p, len, 0);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

void util_hex(const void *data, size_t len, char *out)
{
        static const char digits[] = "0123456789abcdef";
        const unsigned char *p = data;
        for (size_t i = 0; i < len; i++) {
                out[2 * i] = digits[p[i] >> 4];
                out[2 * i + 1] = digits[p[i] & 15];
        }
        out[2 * len] = '\0';
}

/* Civil date from days since 1970-01-01, by arithmetic (the proleptic
 * Gregorian calendar; no time zone, no locks): it runs for every row of
 * every list the API answers. */
static void civil(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
        days += 719468;
        int64_t era = (days >= 0 ? days : days - 146096) / 146097;
        unsigned doe = (unsigned)(days - era * 146097);
        unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        unsigned mp = (5 * doy + 2) / 153;
        *d = doy - (153 * mp + 2) / 5 + 1;
        *m = mp < 10 ? mp + 3 : mp - 9;
        *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void util_iso8601_utc(int64_t ms, char out[static 21])
{
        int64_t s = ms / 1000 - (ms % 1000 < 0); /* floor, for times before 1970 */
        int64_t days = s / 86400 - (s % 86400 < 0);
        int64_t sec = s - days * 86400;
        int64_t y;
        unsigned m, d;
        civil(days, &y, &m, &d);
        if (y < 0 || y > 9999) {
                snprintf(out, 21, "%s", y < 0 ? "0000-01-01T00:00:00Z" : "9999-12-31T23:59:59Z");
                return;
        }
        /* "YYYY-MM-DDTHH:MM:SSZ" by hand: this is on every row of every list */
        const unsigned f[6] = { (unsigned)y, m, d, (unsigned)(sec / 3600),
                                (unsigned)(sec / 60 % 60), (unsigned)(sec % 60) };
        char *p = out;
        for (int i = 0; i < 6; i++) {
                if (i == 0) {
                        *p++ = (char)('0' + f[0] / 1000);
                        *p++ = (char)('0' + f[0] / 100 % 10);
                }
                *p++ = (char)('0' + f[i] / 10 % 10);
                *p++ = (char)('0' + f[i] % 10);
                *p++ = "--T::Z"[i];
        }
        *p = '\0';
}

int util_strlcpy(char *dst, const char *src, size_t n)
{
        size_t len = strlen(src);
        if (n == 0)
                return -ENAMETOOLONG;
        if (len >= n) {
                memcpy(dst, src, n - 1);
                dst[n - 1] = '\0';
                return -ENAMETOOLONG;
        }
        memcpy(dst, src, len + 1);
        return 0;
}
