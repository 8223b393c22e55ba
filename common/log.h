/* log: leveled logging to stderr (journald captures it).
 *
 * Any thread may call these. Messages name their object first
 * ("vm vps_12: cannot start: ..."). The level is process-wide and set once
 * at start from the config (log_set_level); the default is info.
 */
#pragma once

#include <stdarg.h>

enum log_level {
        LOG_LEVEL_ERROR,
        LOG_LEVEL_WARN,
        LOG_LEVEL_INFO,
        LOG_LEVEL_DEBUG,
};

/* Returns 0, or -EINVAL for a name other than error|warn|info|debug. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level level);
void log_set_ident(const char *ident);
int log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                   \
        do {                                                             \
                if (log_enabled(LOG_LEVEL_DEBUG))                        \
                        log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);           \
        } while (0)
