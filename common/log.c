#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_level cur_level = LOG_LEVEL_INFO;
static const char *ident = "tasman";

static const char *const level_names[] = {
        [LOG_LEVEL_ERROR] = "error",
        [LOG_LEVEL_WARN] = "warn",
        [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_DEBUG] = "debug",
};
_Static_assert(sizeof(level_names) / sizeof(level_names[0]) == LOG_LEVEL_DEBUG + 1,
               "level_names must cover enum log_level");

int log_set_level_name(const char *name)
{
        for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
                if (strcmp(name, level_names[i]) == 0) {
                        cur_level = (enum log_level)i;
                        return 0;
                }
        }
        return -EINVAL;
}

void log_set_level(enum log_level level)
{
        cur_level = level;
}

void log_set_ident(const char *s)
{
        ident = s;
}

int log_enabled(enum log_level level)
{
        return level <= cur_level;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
        char line[2048];
        struct timespec ts;
        struct tm tm;
        va_list ap;
        int n;

        if (level > cur_level)
                return;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, ident, level_names[level]);
        if (n < 0)
                return;
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        /* One write per line keeps lines whole across threads. */
        fprintf(stderr, "%s\n", line);
}
