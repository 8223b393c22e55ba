#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TASMAN_VERSION
#define TASMAN_VERSION "0.1.0"
#endif

static const struct cfg_opt *find_opt(const struct cfg_opt *opts, size_t n, const char *key,
                                      size_t key_len)
{
        for (size_t i = 0; i < n; i++)
                if (strlen(opts[i].key) == key_len && strncmp(opts[i].key, key, key_len) == 0)
                        return &opts[i];
        return NULL;
}

static int set_opt(const struct cfg_opt *o, const char *value)
{
        if (o->type == CFG_STR) {
                size_t len = strlen(value);
                if (len >= CFG_STR_MAX)
                        return -ENAMETOOLONG;
                memcpy(o->dst, value, len + 1);
                return 0;
        }
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0' || v < o->min || v > o->max)
                return -EINVAL;
        *(int64_t *)o->dst = v;
        return 0;
}

int cfg_set(const struct cfg_opt *opts, size_t n, const char *key, const char *value)
{
        const struct cfg_opt *o = find_opt(opts, n, key, strlen(key));
        if (!o)
                return -ENOENT;
        return set_opt(o, value);
}

static char *trim(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        char *e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = '\0';
        return s;
}

static void report(const char *prog, const char *where, const char *key, int r,
                   const struct cfg_opt *opts, size_t n)
{
        const struct cfg_opt *o = find_opt(opts, n, key, strlen(key));
        if (r == -ENOENT)
                fprintf(stderr, "%s: %s: unknown key '%s' (see --help)\n", prog, where, key);
        else if (r == -ENAMETOOLONG)
                fprintf(stderr, "%s: %s: value of '%s' is too long (max %d bytes)\n", prog,
                        where, key, CFG_STR_MAX - 1);
        else if (o && o->type == CFG_INT)
                fprintf(stderr, "%s: %s: '%s' must be an integer from %lld to %lld\n", prog,
                        where, key, (long long)o->min, (long long)o->max);
        else
                fprintf(stderr, "%s: %s: bad value for '%s'\n", prog, where, key);
}

static int load_file(const struct cfg_opt *opts, size_t n, const char *path, const char *prog)
{
        FILE *f = fopen(path, "re");
        char line[CFG_STR_MAX + 256];
        int lineno = 0, ret = 0;

        if (!f) {
                fprintf(stderr, "%s: cannot open config %s: %s\n", prog, path, strerror(errno));
                return -EINVAL;
        }
        while (fgets(line, sizeof(line), f)) {
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        fprintf(stderr, "%s: %s:%d: line too long\n", prog, path, lineno);
                        ret = -EINVAL;
                        break;
                }
                char *s = trim(line);
                if (*s == '\0' || *s == '#')
                        continue;
                char *eq = strchr(s, '=');
                if (!eq) {
                        fprintf(stderr, "%s: %s:%d: expected 'key = value'\n", prog, path,
                                lineno);
                        ret = -EINVAL;
                        break;
                }
                *eq = '\0';
                char *key = trim(s), *val = trim(eq + 1);
                size_t vl = strlen(val);
                if (vl >= 2 && val[0] == '"' && val[vl - 1] == '"') {
                        val[vl - 1] = '\0';
                        val++;
                }
                int r = cfg_set(opts, n, key, val);
                if (r < 0) {
                        char where[600];
                        snprintf(where, sizeof(where), "%s:%d", path, lineno);
                        report(prog, where, key, r, opts, n);
                        ret = -EINVAL;
                        break;
                }
        }
        fclose(f);
        return ret;
}

static void print_help(const struct cfg_opt *opts, size_t n, const char *prog,
                       const char *summary)
{
        printf("Usage: %s [--config FILE] [--KEY=VALUE ...]\n\n%s\n\n", prog, summary);
        printf("Every key may be set in the config file as 'key = value' or on the\n"
               "command line as --key=value; the command line wins.\n\n");
        printf("  --config FILE          read keys from FILE\n");
        printf("  --help                 show this help\n");
        printf("  --version              show the version\n\n");
        for (size_t i = 0; i < n; i++) {
                const struct cfg_opt *o = &opts[i];
                char def[CFG_STR_MAX + 32];
                if (o->type == CFG_STR)
                        snprintf(def, sizeof(def), "\"%s\"", (const char *)o->dst);
                else
                        snprintf(def, sizeof(def), "%lld", (long long)*(int64_t *)o->dst);
                printf("  --%s=VALUE\n      %s (default %s)\n", o->key, o->help, def);
        }
}

int cfg_load(const struct cfg_opt *opts, size_t n, int argc, char **argv, const char *prog,
             const char *summary)
{
        const char *config = NULL;

        /* First pass: --help, --version, --config; the file goes first so
         * that command-line keys override it. */
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
                        print_help(opts, n, prog, summary);
                        return 1;
                }
                if (strcmp(argv[i], "--version") == 0) {
                        printf("%s %s\n", prog, TASMAN_VERSION);
                        return 1;
                }
                if (strcmp(argv[i], "--config") == 0) {
                        if (i + 1 >= argc) {
                                fprintf(stderr, "%s: --config needs a file\n", prog);
                                return -EINVAL;
                        }
                        config = argv[++i];
                } else if (strncmp(argv[i], "--config=", 9) == 0) {
                        config = argv[i] + 9;
                }
        }
        if (config && load_file(opts, n, config, prog) < 0)
                return -EINVAL;
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i];
                if (strcmp(a, "--config") == 0) {
                        i++;
                        continue;
                }
                if (strncmp(a, "--config=", 9) == 0)
                        continue;
                if (strncmp(a, "--", 2) != 0) {
                        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, a);
                        return -EINVAL;
                }
                const char *eq = strchr(a + 2, '=');
                if (!eq) {
                        fprintf(stderr, "%s: expected --key=value, got '%s'\n", prog, a);
                        return -EINVAL;
                }
                char key[128];
                size_t kl = (size_t)(eq - (a + 2));
                if (kl >= sizeof(key))
                        kl = sizeof(key) - 1;
                memcpy(key, a + 2, kl);
                key[kl] = '\0';
                int r = cfg_set(opts, n, key, eq + 1);
                if (r < 0) {
                        report(prog, "command line", key, r, opts, n);
                        return -EINVAL;
                }
        }
        return 0;
}

int cfg_parse_hostport(const char *s, char *ret_host, size_t host_len, uint16_t *ret_port)
{
        const char *colon = strrchr(s, ':');
        char *end;
        if (!colon || colon == s)
                return -EINVAL;
        const char *h = s, *he = colon;
        if (*h == '[') {
                if (he[-1] != ']')
                        return -EINVAL;
                h++;
                he--;
        } else if (memchr(h, ':', (size_t)(he - h))) {
                return -EINVAL; /* an IPv6 address needs brackets: [::1]:80 */
        }
        if ((size_t)(he - h) >= host_len)
                return -EINVAL;
        errno = 0;
        long p = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || p < 0 || p > 65535)
                return -EINVAL;
        memcpy(ret_host, h, (size_t)(he - h));
        ret_host[he - h] = '\0';
        *ret_port = (uint16_t)p;
        return 0;
}
