/* config: "key = value" files plus --key=value overrides, for all binaries.
 *
 * A binary describes its keys once in a table of struct cfg_opt whose
 * destinations already hold the defaults. cfg_load() reads --config FILE
 * (if given), then every --key=value on the command line, so the command
 * line wins. It also prints --help from the same table, so the help text
 * and the keys cannot drift. Single-threaded; call it from main() only.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define CFG_STR_MAX 512

enum cfg_type {
        CFG_STR,  /* dst: char[CFG_STR_MAX] */
        CFG_INT,  /* dst: int64_t, checked against min..max */
};

struct cfg_opt {
        const char *key;
        enum cfg_type type;
        void *dst;
        int64_t min, max;
        const char *help;
};

/* Returns 0 to go on, 1 if --help or --version was printed (exit 0), or
 * -EINVAL after printing what was wrong to stderr (exit 2). */
int cfg_load(const struct cfg_opt *opts, size_t n_opts, int argc, char **argv,
             const char *prog, const char *summary);

/* Sets one key from text; -ENOENT for an unknown key, -EINVAL for a bad
 * value, -ENAMETOOLONG for a string over CFG_STR_MAX - 1 bytes. */
int cfg_set(const struct cfg_opt *opts, size_t n_opts, const char *key, const char *value);

/* Parses a "host:port" listen address; port 0..65535. */
int cfg_parse_hostport(const char *s, char *ret_host, size_t host_len, uint16_t *ret_port);
