#include "seed.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* For libisofs' own copy of libburn's struct burn_source, the reader of
 * the image it makes (we do not use libburn). */
#define LIBISOFS_WITHOUT_LIBBURN
#include <libisofs/libisofs.h>

#define DEFAULT_ADMIN "admin"
/* The MIME boundary is BOUNDARY_PREFIX, a number, BOUNDARY_SUFFIX: the
 * smallest number whose delimiter occurs in no part. */
#define BOUNDARY_PREFIX "==tasman-seed-"
#define BOUNDARY_SUFFIX "=="
#define BOUNDARY_FMT BOUNDARY_PREFIX "%" PRIu64 BOUNDARY_SUFFIX

static const char *const doc_names[3] = { "meta-data", "user-data", "network-config" };

/* An optional string is given when it is neither NULL nor "". */
static bool given(const char *s)
{
        return s && *s;
}

static void set_err(char *err, size_t len, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t len, const char *fmt, ...)
{
        va_list ap;

        if (!err || len == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
}

/* s as it may appear inside a one-line message: printable ASCII only,
 * cut after 64 characters. */
#define SHOWN_LEN 72
static const char *shown(const char *s, char buf[static SHOWN_LEN])
{
        size_t i = 0;

        for (; s && *s && i < 64; s++)
                buf[i++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
        if (s && *s) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}

/* One UTF-8 sequence at s: its length and code point, or 0 when it is
 * not a valid one (stray or cut continuation byte, overlong form,
 * surrogate, beyond U+10FFFF). Never reads past a NUL. */
static size_t utf8_next(const unsigned char *s, uint32_t *ret_cp)
{
        unsigned char c = s[0];
        uint32_t cp;
        size_t n;

        if (c < 0x80) {
                *ret_cp = c;
                return 1;
        }
        if (c >= 0xc2 && c <= 0xdf) {
                n = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                n = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                n = 4;
                cp = c & 0x07;
        } else {
                return 0;
        }
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret_cp = cp;
        return n;
}

static bool utf8_valid(const char *s)
{
        const unsigned char *u = (const unsigned char *)s;
        uint32_t cp;

        while (*u) {
                size_t n = utf8_next(u, &cp);
                if (n == 0)
                        return false;
                u += n;
        }
        return true;
}

static bool has_control(const char *s)
{
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return true;
        return false;
}

/* ---- YAML ---- */

/* s as a YAML double-quoted scalar in 7-bit ASCII: '"' and '\' escaped,
 * control characters and everything beyond ASCII as \x, \u or \U escapes
 * (cloud-init reads the MIME document as str, which would mangle raw
 * UTF-8 there), bytes that are not UTF-8 as U+FFFD. */
static void put_yaml_str(FILE *f, const char *s)
{
        const unsigned char *u = (const unsigned char *)(s ? s : "");

        fputc('"', f);
        while (*u) {
                uint32_t cp;
                size_t n = utf8_next(u, &cp);

                if (n == 0) {
                        fputs("\\uFFFD", f);
                        u++;
                        continue;
                }
                u += n;
                switch (cp) {
                case '"': fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        if (cp < 0x20 || cp == 0x7f)
                                fprintf(f, "\\x%02" PRIX32, cp);
                        else if (cp < 0x80)
                                fputc((int)cp, f);
                        else if (cp <= 0xffff)
                                fprintf(f, "\\u%04" PRIX32, cp);
                        else
                                fprintf(f, "\\U%08" PRIX32, cp);
                }
        }
        fputc('"', f);
}

/* key: "value"\n at the given indentation. */
static void put_yaml_kv(FILE *f, const char *indent_key, const char *value)
{
        fputs(indent_key, f);
        fputs(": ", f);
        put_yaml_str(f, value);
        fputc('\n', f);
}

/* Closes a memory stream and returns its text (*buf is only set by the
 * close); NULL when any write ran out of memory. */
static char *doc_finish(FILE *f, char **buf)
{
        bool bad = ferror(f) != 0;

        if (fclose(f) != 0 || bad) {
                free(*buf);
                return NULL;
        }
        return *buf;
}

/* ---- meta-data ---- */

char *seed_meta_data(const struct seed_params *p)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        if (given(p->instance_id)) {
                put_yaml_kv(f, "instance-id", p->instance_id);
        } else {
                char id[40];
                snprintf(id, sizeof(id), "tasman-%" PRIu64, p->vm_id);
                put_yaml_kv(f, "instance-id", id);
        }
        put_yaml_kv(f, "local-hostname", p->hostname);
        return doc_finish(f, &buf);
}

/* ---- user-data ---- */

static const char *admin_user(const struct seed_params *p)
{
        return given(p->admin_user) ? p->admin_user : DEFAULT_ADMIN;
}

/* Our own #cloud-config. */
static char *cloud_config(const struct seed_params *p)
{
        const char *user = admin_user(p);
        bool password = given(p->admin_password);
        /* root (the Tilaa API's admin account): the user exists already
         * and needs no sudo; its login is not disabled, and with a
         * password sshd lets it log in with that password. */
        bool root = strcmp(user, "root") == 0;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        fputs("#cloud-config\n", f);
        put_yaml_kv(f, "hostname", p->hostname);
        if (given(p->fqdn))
                put_yaml_kv(f, "fqdn", p->fqdn);
        fputs("preserve_hostname: false\n", f);
        if (root)
                fputs("disable_root: false\n", f);
        fputs("users:\n", f);
        put_yaml_kv(f, "  - name", user);
        if (!root)
                fputs("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n"
                      "    shell: \"/bin/bash\"\n"
                      "    groups: \"sudo\"\n",
                      f);
        if (password)
                fputs("    lock_passwd: false\n", f);
        if (p->ssh_keys && p->n_ssh_keys > 0) {
                fputs("    ssh_authorized_keys:\n", f);
                for (size_t i = 0; i < p->n_ssh_keys; i++) {
                        fputs("      - ", f);
                        put_yaml_str(f, p->ssh_keys[i]);
                        fputc('\n', f);
                }
        }
        if (password) {
                /* type text: without it cloud-init takes the password for
                 * a hash. */
                fputs("chpasswd:\n  expire: false\n  users:\n", f);
                put_yaml_kv(f, "    - name", user);
                put_yaml_kv(f, "      password", p->admin_password);
                fputs("      type: \"text\"\n", f);
                fputs("ssh_pwauth: true\n", f);
                if (root)
                        fputs("write_files:\n"
                              "  - path: \"/etc/ssh/sshd_config.d/60-tasman-root.conf\"\n"
                              "    content: \"PermitRootLogin yes\\n\"\n",
                              f);
        } else {
                fputs("ssh_pwauth: false\n", f);
        }
        return doc_finish(f, &buf);
}

/* The MIME type of the customer's user-data from its first line, as
 * cloud-init names its formats. Only exact markers get a type of their
 * own; for text/plain cloud-init looks at the content itself, which keeps
 * #cloud-config-archive, #cloud-config-jsonp, jinja templates and mixed
 * case markers working. */
static const char *customer_type(const char *ud)
{
        static const struct {
                const char *marker;
                bool whole_line; /* else a prefix of the line */
                const char *type;
        } types[] = {
                { "#cloud-config", true, "text/cloud-config" },
                { "#cloud-boothook", true, "text/cloud-boothook" },
                { "#include-once", false, "text/x-include-once-url" },
                { "#include", false, "text/x-include-url" },
                { "#!", false, "text/x-shellscript" },
        };
        size_t n = strcspn(ud, "\n");

        while (n > 0 && (ud[n - 1] == ' ' || ud[n - 1] == '\t' || ud[n - 1] == '\r'))
                n--;
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
                size_t m = strlen(types[i].marker);
                if (n < m || memcmp(ud, types[i].marker, m) != 0)
                        continue;
                if (types[i].whole_line && n != m)
                        continue;
                return types[i].type;
        }
        return "text/plain";
}

/* Printable ASCII, tabs and newlines only: carried as it is (7bit). */
static bool is_7bit_text(const char *s)
{
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (!(c == '\t' || c == '\n' || (c >= 0x20 && c < 0x7f)))
                        return false;
        }
        return true;
}

/* A MIME entity as cloud-init would take the customer's user-data alone:
 * a header block (within its first 4096 bytes, as cloud-init looks)
 * with MIME-Version and Content-Type, and valid UTF-8 throughout (it is
 * decoded as such). Such a document is carried as a part of its own, its
 * headers the part's headers, so a multipart one nests. */
static bool is_mime_entity(const char *ud)
{
        bool version = false, type = false;
        const char *line = ud;

        for (;;) {
                size_t n = strcspn(line, "\n");
                size_t l = n;

                if (line[n] == '\0' || (size_t)(line + n - ud) >= 4096)
                        return false; /* no end of the header block */
                if (l > 0 && line[l - 1] == '\r')
                        l--;
                if (l == 0)
                        break; /* the blank line ending the headers */
                if (line[0] == ' ' || line[0] == '\t') {
                        if (line == ud)
                                return false;
                } else {
                        size_t name = 0;
                        while (name < l && line[name] > 0x20 && line[name] < 0x7f &&
                               line[name] != ':')
                                name++;
                        if (name == 0 || name == l || line[name] != ':')
                                return false;
                        if (name == 12 && strncasecmp(line, "MIME-Version", 12) == 0)
                                version = true;
                        if (name == 12 && strncasecmp(line, "Content-Type", 12) == 0)
                                type = true;
                }
                line += n + 1;
        }
        return version && type && utf8_valid(ud);
}

/* s in base64, in lines of 76 characters each ending in a newline. */
static char *base64_lines(const unsigned char *s, size_t len)
{
        static const char tbl[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        size_t chars = (len + 2) / 3 * 4;
        size_t lines = (chars + 75) / 76;
        char *out = malloc(chars + lines + 1), *o = out;
        size_t col = 0;

        if (!out)
                return NULL;
        for (size_t i = 0; i < len; i += 3) {
                uint32_t v = (uint32_t)s[i] << 16;
                if (i + 1 < len)
                        v |= (uint32_t)s[i + 1] << 8;
                if (i + 2 < len)
                        v |= s[i + 2];
                char q[4] = {
                        tbl[(v >> 18) & 63],
                        tbl[(v >> 12) & 63],
                        i + 1 < len ? tbl[(v >> 6) & 63] : '=',
                        i + 2 < len ? tbl[v & 63] : '=',
                };
                for (int k = 0; k < 4; k++) {
                        *o++ = q[k];
                        if (++col == 76) {
                                *o++ = '\n';
                                col = 0;
                        }
                }
        }
        if (col)
                *o++ = '\n';
        *o = '\0';
        return out;
}

/* The smallest number n whose delimiter "--" BOUNDARY_PREFIX n
 * BOUNDARY_SUFFIX occurs in none of the texts. Each occurrence of the
 * prefix rules out at most one n, so one of 0..k is free. */
static int pick_boundary(const char *const *texts, size_t n_texts, uint64_t *ret)
{
        static const char mark[] = "--" BOUNDARY_PREFIX;
        size_t k = 0;
        bool *used;
        uint64_t v;

        for (size_t i = 0; i < n_texts; i++)
                for (const char *q = texts[i]; (q = strstr(q, mark)); q++)
                        k++;
        used = calloc(k + 1, sizeof(*used));
        if (!used)
                return -ENOMEM;
        for (size_t i = 0; i < n_texts; i++) {
                for (const char *q = texts[i]; (q = strstr(q, mark)); q++) {
                        const char *d = q + strlen(mark);
                        size_t digits = 0;
                        v = 0;
                        while (*d >= '0' && *d <= '9' && digits < 19) {
                                v = v * 10 + (uint64_t)(*d - '0');
                                d++;
                                digits++;
                        }
                        if (digits > 0 && v <= k &&
                            strncmp(d, BOUNDARY_SUFFIX, strlen(BOUNDARY_SUFFIX)) == 0)
                                used[v] = true;
                }
        }
        for (v = 0; used[v]; v++)
                ;
        free(used);
        *ret = v;
        return 0;
}

char *seed_user_data(const struct seed_params *p)
{
        char *ours = cloud_config(p), *encoded = NULL, *buf = NULL;
        const char *ud = p->user_data, *body;
        size_t len = 0;
        bool mime = false, raw = false;
        uint64_t b;
        FILE *f;

        if (!ours || !given(ud))
                return ours;
        if (is_mime_entity(ud)) {
                mime = true;
                body = ud;
        } else if (is_7bit_text(ud)) {
                raw = true;
                body = ud;
        } else {
                encoded = base64_lines((const unsigned char *)ud, strlen(ud));
                if (!encoded)
                        goto out;
                body = encoded;
        }
        const char *const texts[] = { ours, body };
        if (pick_boundary(texts, 2, &b) < 0)
                goto out;
        f = open_memstream(&buf, &len);
        if (!f)
                goto out;
        fprintf(f, "Content-Type: multipart/mixed; boundary=\"" BOUNDARY_FMT "\"\n"
                   "MIME-Version: 1.0\n\n",
                b);
        /* The newline before each delimiter belongs to the delimiter
         * (RFC 2046), so every part ends exactly where its text does. */
        fprintf(f, "--" BOUNDARY_FMT "\n"
                   "Content-Type: text/cloud-config; charset=\"us-ascii\"\n"
                   "MIME-Version: 1.0\n"
                   "Content-Transfer-Encoding: 7bit\n"
                   "Content-Disposition: attachment; filename=\"tasman.cfg\"\n"
                   "\n",
                b);
        fputs(ours, f);
        fprintf(f, "\n--" BOUNDARY_FMT "\n", b);
        if (!mime)
                fprintf(f, "Content-Type: %s; charset=\"%s\"\n"
                           "MIME-Version: 1.0\n"
                           "Content-Transfer-Encoding: %s\n"
                           "Content-Disposition: attachment; filename=\"user-data\"\n"
                           "\n",
                        customer_type(ud), raw ? "us-ascii" : "utf-8", raw ? "7bit" : "base64");
        fputs(body, f);
        fprintf(f, "\n--" BOUNDARY_FMT "--\n", b);
        buf = doc_finish(f, &buf);
out:
        free(ours);
        free(encoded);
        return buf;
}

/* ---- network-config ---- */

/* Parses "address/prefix" (prefix 1-32 or 1-128, no leading zero) into
 * the family, the address and the prefix. */
static int parse_cidr(const char *s, int *ret_family, unsigned char ret_addr[static 16],
                      unsigned *ret_prefix)
{
        const char *slash = strchr(s, '/'), *d;
        char a[INET6_ADDRSTRLEN];
        unsigned char bin[16];
        unsigned v = 0;
        size_t digits = 0;
        int family;

        if (!slash || slash == s || (size_t)(slash - s) >= sizeof(a))
                return -EINVAL;
        memcpy(a, s, (size_t)(slash - s));
        a[slash - s] = '\0';
        family = strchr(a, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(family, a, bin) != 1)
                return -EINVAL;
        for (d = slash + 1; *d >= '0' && *d <= '9' && digits < 4; d++, digits++)
                v = v * 10 + (unsigned)(*d - '0');
        if (digits == 0 || *d != '\0' || (digits > 1 && slash[1] == '0'))
                return -EINVAL;
        if (v < 1 || v > (family == AF_INET ? 32u : 128u))
                return -EINVAL;
        *ret_family = family;
        memcpy(ret_addr, bin, sizeof(bin));
        *ret_prefix = v;
        return 0;
}

/* 0 and the family of an IP address literal, or -EINVAL. */
static int parse_ip(const char *s, int *ret_family, unsigned char ret_addr[static 16])
{
        int family = strchr(s, ':') ? AF_INET6 : AF_INET;
        unsigned char bin[16];

        if (inet_pton(family, s, bin) != 1)
                return -EINVAL;
        *ret_family = family;
        memcpy(ret_addr, bin, sizeof(bin));
        return 0;
}

/* Addresses are written in their canonical form (inet_ntop), quoted;
 * anything unparsable (unchecked parameters) is still only quoted. */
static void put_ip(FILE *f, const char *s)
{
        unsigned char bin[16];
        char out[INET6_ADDRSTRLEN];
        int family;

        if (parse_ip(s, &family, bin) == 0 && inet_ntop(family, bin, out, sizeof(out)))
                put_yaml_str(f, out);
        else
                put_yaml_str(f, s);
}

static void put_cidr(FILE *f, const char *s)
{
        unsigned char bin[16];
        char out[INET6_ADDRSTRLEN + 8];
        unsigned prefix;
        int family;

        if (parse_cidr(s, &family, bin, &prefix) == 0 && inet_ntop(family, bin, out, sizeof(out))) {
                snprintf(out + strlen(out), sizeof(out) - strlen(out), "/%u", prefix);
                put_yaml_str(f, out);
        } else {
                put_yaml_str(f, s);
        }
}

static int parse_mac(const char *s, unsigned char ret_mac[static 6])
{
        unsigned char mac[6];

        for (int i = 0; i < 6; i++) {
                unsigned v = 0;
                for (int j = 0; j < 2; j++) {
                        char c = s[i * 3 + j];
                        if (c >= '0' && c <= '9')
                                v = v * 16 + (unsigned)(c - '0');
                        else if (c >= 'a' && c <= 'f')
                                v = v * 16 + (unsigned)(c - 'a' + 10);
                        else if (c >= 'A' && c <= 'F')
                                v = v * 16 + (unsigned)(c - 'A' + 10);
                        else
                                return -EINVAL;
                }
                if (s[i * 3 + 2] != (i < 5 ? ':' : '\0'))
                        return -EINVAL;
                mac[i] = (unsigned char)v;
        }
        memcpy(ret_mac, mac, sizeof(mac));
        return 0;
}

/* The first gateway of a family, or NULL. */
static const char *gateway_of(const struct seed_params *p, int want)
{
        for (size_t i = 0; p->addrs && i < p->n_addrs; i++) {
                unsigned char bin[16];
                int family;
                const char *gw = p->addrs[i].gateway;
                if (given(gw) && parse_ip(gw, &family, bin) == 0 && family == want)
                        return gw;
        }
        return NULL;
}

static void put_mac_match(FILE *f, const char *mac_text, const char *name)
{
        unsigned char mac[6];
        fputs("    match:\n      macaddress: ", f);
        if (parse_mac(mac_text, mac) == 0)
                fprintf(f, "\"%02x:%02x:%02x:%02x:%02x:%02x\"\n", mac[0], mac[1], mac[2],
                        mac[3], mac[4], mac[5]);
        else {
                put_yaml_str(f, mac_text);
                fputc('\n', f);
        }
        fprintf(f, "    set-name: \"%s\"\n", name);
}

static void put_addrs(FILE *f, const struct seed_addr *addrs, size_t n)
{
        fputs("    addresses:\n", f);
        for (size_t i = 0; i < n; i++) {
                fputs("      - ", f);
                put_cidr(f, addrs[i].cidr ? addrs[i].cidr : "");
                fputc('\n', f);
        }
}

char *seed_network_config(const struct seed_params *p)
{
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        fputs("version: 2\nethernets:\n  eth0:\n", f);
        if (given(p->mac)) {
                put_mac_match(f, p->mac, "eth0");
        } else {
                /* Netplan takes the glob: eth0, ens3, enp1s0... Renderers
                 * without match support configure the key, eth0. */
                fputs("    match:\n      name: \"e*\"\n", f);
        }
        if (!p->addrs || p->n_addrs == 0) {
                fputs("    dhcp4: true\n    dhcp6: true\n", f);
        } else {
                const char *gw4 = gateway_of(p, AF_INET), *gw6 = gateway_of(p, AF_INET6);

                put_addrs(f, p->addrs, p->n_addrs);
                /* gateway4/6, not routes "to: default" (or 0.0.0.0/0,
                 * ::/0): cloud-init before 25.3 renders those for netplan
                 * only. For ifupdown, networkd and sysconfig it fails on
                 * "default" (ValueError: the NIC is left unconfigured) and
                 * turns ::/0 into ::/64. Netplan takes gateway4/6 with a
                 * deprecation warning. */
                if (gw4) {
                        fputs("    gateway4: ", f);
                        put_ip(f, gw4);
                        fputc('\n', f);
                }
                if (gw6) {
                        fputs("    gateway6: ", f);
                        put_ip(f, gw6);
                        fputc('\n', f);
                }
        }
        if (p->nameservers && p->n_nameservers > 0) {
                fputs("    nameservers:\n      addresses:\n", f);
                for (size_t i = 0; i < p->n_nameservers; i++) {
                        fputs("        - ", f);
                        put_ip(f, p->nameservers[i] ? p->nameservers[i] : "");
                        fputc('\n', f);
                }
        }
        /* Private networks: each its own NIC, static, no default route. */
        for (size_t i = 0; p->more_nics && i < p->n_more_nics; i++) {
                const struct seed_nic *n = &p->more_nics[i];
                char name[16];
                snprintf(name, sizeof(name), "eth%zu", i + 1);
                fprintf(f, "  %s:\n", name);
                put_mac_match(f, n->mac ? n->mac : "", name);
                if (n->addrs && n->n_addrs)
                        put_addrs(f, n->addrs, n->n_addrs);
                else
                        fputs("    dhcp4: false\n    dhcp6: false\n", f);
        }
        return doc_finish(f, &buf);
}

/* ---- checks ---- */

/* An RFC 1123 label: 1-63 letters, digits and '-', no '-' at either end. */
static bool is_label(const char *s, size_t n)
{
        if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-'))
                        return false;
        }
        return true;
}

/* hostname.domain...: at most 253 characters of labels, at least two. */
static bool is_fqdn(const char *s)
{
        size_t len = strlen(s), labels = 0;
        const char *p = s;

        if (len > 253)
                return false;
        for (;;) {
                size_t n = strcspn(p, ".");
                if (!is_label(p, n))
                        return false;
                labels++;
                if (p[n] == '\0')
                        break;
                p += n + 1;
        }
        return labels >= 2;
}

/* A user name useradd takes on every distribution: [a-z_][a-z0-9_-]*,
 * at most 32 characters. */
static bool is_user_name(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > 32 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
                return false;
        for (size_t i = 1; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
                        return false;
        }
        return true;
}

/* cloud-init makes a directory of it: letters, digits, '.', '_', '-',
 * starting with a letter or digit. */
static bool is_instance_id(const char *s)
{
        size_t n = strlen(s);

        if (n < 1 || n > SEED_INSTANCE_ID_LEN_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                             (c >= '0' && c <= '9');
                if (!alnum && (i == 0 || !(c == '.' || c == '_' || c == '-')))
                        return false;
        }
        return true;
}

static int check_addrs(const struct seed_params *p, char *err, size_t err_len)
{
        const char *gw[2] = { NULL, NULL }; /* the v4 and v6 gateways */
        char b[SHOWN_LEN];

        if (p->n_addrs > SEED_ADDRS_MAX) {
                set_err(err, err_len, "%zu addresses: at most %d", p->n_addrs, SEED_ADDRS_MAX);
                return -EINVAL;
        }
        if (p->n_addrs > 0 && !p->addrs) {
                set_err(err, err_len, "%zu addresses but no array", p->n_addrs);
                return -EINVAL;
        }
        for (size_t i = 0; i < p->n_addrs; i++) {
                const struct seed_addr *a = &p->addrs[i];
                unsigned char bin[16];
                unsigned prefix;
                int family, gw_family;

                if (!a->cidr || parse_cidr(a->cidr, &family, bin, &prefix) < 0) {
                        set_err(err, err_len,
                                "address %zu \"%s\" is not an address/prefix like 192.0.2.10/24 "
                                "or 2001:db8::10/64",
                                i + 1, shown(a->cidr, b));
                        return -EINVAL;
                }
                if (!given(a->gateway))
                        continue;
                if (parse_ip(a->gateway, &gw_family, bin) < 0 || gw_family != family) {
                        set_err(err, err_len,
                                "gateway \"%s\" of address %zu is not an IPv%d address",
                                shown(a->gateway, b), i + 1, family == AF_INET ? 4 : 6);
                        return -EINVAL;
                }
                const char **mine = &gw[family == AF_INET ? 0 : 1];
                if (*mine && strcmp(*mine, a->gateway) != 0) {
                        set_err(err, err_len,
                                "gateway \"%s\" of address %zu: a second IPv%d gateway (one "
                                "default route per family)",
                                shown(a->gateway, b), i + 1, family == AF_INET ? 4 : 6);
                        return -EINVAL;
                }
                *mine = a->gateway;
        }
        if (p->n_nameservers > SEED_NAMESERVERS_MAX) {
                set_err(err, err_len, "%zu nameservers: at most %d", p->n_nameservers,
                        SEED_NAMESERVERS_MAX);
                return -EINVAL;
        }
        if (p->n_nameservers > 0 && !p->nameservers) {
                set_err(err, err_len, "%zu nameservers but no array", p->n_nameservers);
                return -EINVAL;
        }
        for (size_t i = 0; i < p->n_nameservers; i++) {
                unsigned char bin[16];
                int family;
                if (!p->nameservers[i] || parse_ip(p->nameservers[i], &family, bin) < 0) {
                        set_err(err, err_len, "nameserver %zu \"%s\" is not an IP address", i + 1,
                                shown(p->nameservers[i], b));
                        return -EINVAL;
                }
        }
        return 0;
}

static int check_more_nics(const struct seed_params *p, char *err, size_t err_len)
{
        char b[SHOWN_LEN];
        if (p->n_more_nics > SEED_MORE_NICS_MAX || (p->n_more_nics && !p->more_nics)) {
                set_err(err, err_len, "%zu more NICs: at most %d", p->n_more_nics,
                        SEED_MORE_NICS_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < p->n_more_nics; i++) {
                const struct seed_nic *n = &p->more_nics[i];
                unsigned char mac[6], bin[16];
                unsigned prefix;
                int family;
                if (!given(n->mac) || parse_mac(n->mac, mac) < 0 || (mac[0] & 1)) {
                        set_err(err, err_len, "NIC %zu: MAC address \"%s\" is not a unicast one "
                                              "like 52:54:00:12:34:56",
                                i + 2, shown(n->mac, b));
                        return -EINVAL;
                }
                if (n->n_addrs > SEED_ADDRS_MAX || (n->n_addrs && !n->addrs)) {
                        set_err(err, err_len, "NIC %zu: %zu addresses: at most %d", i + 2,
                                n->n_addrs, SEED_ADDRS_MAX);
                        return -EINVAL;
                }
                for (size_t k = 0; k < n->n_addrs; k++) {
                        if (!n->addrs[k].cidr ||
                            parse_cidr(n->addrs[k].cidr, &family, bin, &prefix) < 0) {
                                set_err(err, err_len, "NIC %zu: address \"%s\" is not an "
                                                      "address/prefix",
                                        i + 2, shown(n->addrs[k].cidr, b));
                                return -EINVAL;
                        }
                        if (given(n->addrs[k].gateway)) {
                                set_err(err, err_len, "NIC %zu: a gateway (only the first NIC has "
                                                      "the default route)",
                                        i + 2);
                                return -EINVAL;
                        }
                }
        }
        return 0;
}

static int check_keys(const struct seed_params *p, char *err, size_t err_len)
{
        if (p->n_ssh_keys > SEED_SSH_KEYS_MAX) {
                set_err(err, err_len, "%zu SSH keys: at most %d", p->n_ssh_keys, SEED_SSH_KEYS_MAX);
                return -EINVAL;
        }
        if (p->n_ssh_keys > 0 && !p->ssh_keys) {
                set_err(err, err_len, "%zu SSH keys but no array", p->n_ssh_keys);
                return -EINVAL;
        }
        for (size_t i = 0; i < p->n_ssh_keys; i++) {
                const char *k = p->ssh_keys[i];
                if (!given(k)) {
                        set_err(err, err_len, "SSH key %zu is empty", i + 1);
                        return -EINVAL;
                }
                if (strnlen(k, SEED_SSH_KEY_LEN_MAX + 1) > SEED_SSH_KEY_LEN_MAX) {
                        set_err(err, err_len, "SSH key %zu is longer than %d bytes", i + 1,
                                SEED_SSH_KEY_LEN_MAX);
                        return -EINVAL;
                }
                if (has_control(k)) {
                        set_err(err, err_len,
                                "SSH key %zu holds a newline or another control character "
                                "(one key per line)",
                                i + 1);
                        return -EINVAL;
                }
                if (!utf8_valid(k)) {
                        set_err(err, err_len, "SSH key %zu is not valid UTF-8", i + 1);
                        return -EINVAL;
                }
        }
        return 0;
}

int seed_check(const struct seed_params *p, char *err, size_t err_len)
{
        char b[SHOWN_LEN];
        int r;

        if (err && err_len)
                err[0] = '\0';
        if (!p) {
                set_err(err, err_len, "no seed parameters");
                return -EINVAL;
        }
        if (p->vm_id == 0) {
                set_err(err, err_len, "vm id 0 is not valid");
                return -EINVAL;
        }
        if (given(p->instance_id) && !is_instance_id(p->instance_id)) {
                set_err(err, err_len,
                        "instance id \"%s\" is not valid (1-%d letters, digits, '.', '_', '-', "
                        "starting with a letter or digit)",
                        shown(p->instance_id, b), SEED_INSTANCE_ID_LEN_MAX);
                return -EINVAL;
        }
        if (!given(p->hostname)) {
                set_err(err, err_len, "no hostname");
                return -EINVAL;
        }
        if (!is_label(p->hostname, strlen(p->hostname))) {
                set_err(err, err_len,
                        "hostname \"%s\" is not an RFC 1123 label (1-63 letters, digits and "
                        "'-', not at either end)",
                        shown(p->hostname, b));
                return -EINVAL;
        }
        if (given(p->fqdn)) {
                size_t hl = strlen(p->hostname);
                if (!is_fqdn(p->fqdn)) {
                        set_err(err, err_len, "fqdn \"%s\" is not a domain name",
                                shown(p->fqdn, b));
                        return -EINVAL;
                }
                if (strncasecmp(p->fqdn, p->hostname, hl) != 0 || p->fqdn[hl] != '.') {
                        set_err(err, err_len, "fqdn \"%s\" does not start with the hostname",
                                shown(p->fqdn, b));
                        return -EINVAL;
                }
        }
        if (given(p->admin_user)) {
                if (!is_user_name(p->admin_user)) {
                        set_err(err, err_len,
                                "admin user \"%s\" is not a user name ([a-z_][a-z0-9_-]*, at most "
                                "32)",
                                shown(p->admin_user, b));
                        return -EINVAL;
                }
        }
        if (given(p->admin_password)) {
                /* Never shown: it is a secret. A newline would also start
                 * another "user:password" line for chpasswd. */
                if (strnlen(p->admin_password, SEED_PASSWORD_LEN_MAX + 1) > SEED_PASSWORD_LEN_MAX) {
                        set_err(err, err_len, "admin password is longer than %d bytes",
                                SEED_PASSWORD_LEN_MAX);
                        return -EINVAL;
                }
                if (has_control(p->admin_password)) {
                        set_err(err, err_len,
                                "admin password holds a newline or another control character");
                        return -EINVAL;
                }
                if (!utf8_valid(p->admin_password)) {
                        set_err(err, err_len, "admin password is not valid UTF-8");
                        return -EINVAL;
                }
        }
        r = check_keys(p, err, err_len);
        if (r < 0)
                return r;
        if (p->user_data) {
                size_t n = strnlen(p->user_data, SEED_USER_DATA_MAX + 1);
                if (n > SEED_USER_DATA_MAX) {
                        set_err(err, err_len, "user data is longer than %d bytes",
                                SEED_USER_DATA_MAX);
                        return -EINVAL;
                }
        }
        if (given(p->mac)) {
                unsigned char mac[6];
                if (parse_mac(p->mac, mac) < 0) {
                        set_err(err, err_len, "MAC address \"%s\" is not like 52:54:00:12:34:56",
                                shown(p->mac, b));
                        return -EINVAL;
                }
                if ((mac[0] & 1) || !(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5])) {
                        set_err(err, err_len, "MAC address \"%s\" is not a unicast address",
                                shown(p->mac, b));
                        return -EINVAL;
                }
        }
        if ((r = check_addrs(p, err, err_len)) < 0)
                return r;
        return check_more_nics(p, err, err_len);
}

/* ---- the volume ---- */

/* libisofs keeps global state (its message queue, the clone tables that
 * iso_init() fills) and documents no thread safety for it: it is set up
 * once, and one seed at a time is made with it. The lock covers only the
 * work in memory and the writes into the page cache, not the fsync. */
static pthread_once_t iso_once = PTHREAD_ONCE_INIT;
static int iso_init_status; /* 0, or libisofs' code from iso_init */
static pthread_mutex_t iso_lock = PTHREAD_MUTEX_INITIALIZER;

/* The one place libisofs codes become errnos. */
static int iso_errno(int code)
{
        return code == (int)ISO_OUT_OF_MEM ? -ENOMEM : -EIO;
}

static void iso_setup(void)
{
        /* bit0: no setlocale() from the environment; the agent's locale
         * is its own, and our names are ASCII in any charset. */
        int code = iso_init_with_flag(1);
        char never[] = "NEVER", prefix[] = "libisofs: ";

        if (code < 0) {
                iso_init_status = code;
                return;
        }
        /* Nothing printed to stderr nor queued (nobody would read the
         * queue): a failure reaches the caller through err. */
        iso_set_msgs_severities(never, never, prefix);
}

static int write_all(int fd, const unsigned char *buf, size_t len)
{
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

/* Block size of ISO 9660, the unit libisofs hands the volume out in. */
#define ISO_BLOCK 2048
/* Blocks of libisofs' ring buffer between its writer thread and us (the
 * default is 2 MiB; a seed is far smaller). */
#define ISO_FIFO_BLOCKS 64

/* Writes the volume holding the three documents (names doc_names[]) to
 * fd, which is file at offset 0. Takes docs[i] over (and sets it to NULL)
 * once libisofs owns it; the caller frees what is left. Caller holds
 * iso_lock. */
static int iso_write(int fd, const char *file, char *docs[3], char *err, size_t err_len)
{
        unsigned char buf[16 * ISO_BLOCK];
        IsoImage *image = NULL;
        IsoWriteOpts *opts = NULL;
        struct burn_source *src = NULL;
        const char *doing;
        size_t fill = 0;
        off_t total = 0, want;
        int code, r = 0;

        doing = "make the image";
        code = iso_image_new(SEED_VOLID, &image);
        if (code < 0)
                goto fail;
        iso_image_set_volume_id(image, SEED_VOLID);
        for (int i = 0; i < 3; i++) {
                IsoStream *stream;
                IsoFile *node;

                doing = "add a document";
                code = iso_memory_stream_new((unsigned char *)docs[i], strlen(docs[i]), &stream);
                if (code < 0)
                        goto fail;
                docs[i] = NULL; /* the stream frees it */
                code = iso_image_add_new_file(image, iso_image_get_root(image), doc_names[i],
                                              stream, &node);
                if (code < 0) {
                        iso_stream_unref(stream);
                        goto fail;
                }
                iso_node_set_permissions((IsoNode *)node, 0644);
        }

        doing = "set the write options";
        code = iso_write_opts_new(&opts, 0); /* ISO level 1, as genisoimage's default */
        if (code >= 0)
                code = iso_write_opts_set_rockridge(opts, 1);
        if (code >= 0)
                code = iso_write_opts_set_joliet(opts, 1);
        /* The label as given, lower case ("cidata": not d-characters);
         * Joliet names as they are, without ";1" or a forced ".", as
         * genisoimage writes them. */
        if (code >= 0)
                code = iso_write_opts_set_relaxed_vol_atts(opts, 1);
        if (code >= 0)
                code = iso_write_opts_set_omit_version_numbers(opts, 2);
        if (code >= 0)
                code = iso_write_opts_set_no_force_dots(opts, 2);
        if (code >= 0)
                code = iso_write_opts_set_fifo_size(opts, ISO_FIFO_BLOCKS);
        if (code < 0)
                goto fail;
        doing = "start writing the image";
        code = iso_image_create_burn_source(image, opts, &src);
        if (code < 0) {
                src = NULL;
                goto fail;
        }
        want = src->get_size(src);

        /* libisofs' sources are of version 1: read_xt, not read. */
        int (*rd)(struct burn_source *, unsigned char *, int) = src->read ? src->read : src->read_xt;
        for (;;) {
                int n = rd(src, buf + fill, ISO_BLOCK);
                if (n < 0) {
                        r = -EIO;
                        set_err(err, err_len, "cannot build %s: libisofs failed making the image",
                                file);
                        goto out;
                }
                if (n > 0) {
                        fill += (size_t)n;
                        total += n;
                }
                if (fill > sizeof(buf) - ISO_BLOCK || (n == 0 && fill > 0)) {
                        r = write_all(fd, buf, fill);
                        if (r < 0) {
                                set_err(err, err_len, "cannot write %s: %s", file, strerror(-r));
                                goto out;
                        }
                        fill = 0;
                }
                if (n == 0)
                        break;
        }
        if (total == 0 || total != want) {
                r = -EIO;
                set_err(err, err_len,
                        "cannot build %s: libisofs made %jd bytes of an image of %jd", file,
                        (intmax_t)total, (intmax_t)want);
        }
        goto out;

fail:
        r = iso_errno(code);
        set_err(err, err_len, "cannot build %s: libisofs cannot %s: %s", file, doing,
                iso_error_to_msg(code));
out:
        if (src) {
                /* Stops libisofs' writer thread if it still runs, joins
                 * it, drops its reference to the image. */
                src->free_data(src);
                free(src);
        }
        iso_write_opts_free(opts);
        if (image)
                iso_image_unref(image);
        return r;
}

/* fsync of the directory holding path, so a rename in it lasts. */
static int sync_parent(const char *path)
{
        char dir[PATH_MAX];
        const char *slash = strrchr(path, '/');
        int fd, r = 0;

        if (!slash)
                snprintf(dir, sizeof(dir), ".");
        else if (slash == path)
                snprintf(dir, sizeof(dir), "/");
        else
                snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                r = -errno;
        close(fd);
        return r;
}

int seed_build_iso(const struct seed_params *p, const char *path, char *err, size_t err_len)
{
        char tmp[PATH_MAX];
        char *docs[3] = { NULL, NULL, NULL };
        bool have_tmp = false;
        int fd = -1, r;

        r = seed_check(p, err, err_len);
        if (r < 0)
                return r;
        if (!given(path)) {
                set_err(err, err_len, "no path for the seed");
                return -EINVAL;
        }
        if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
                set_err(err, err_len, "seed path %s is too long", path);
                return -ENAMETOOLONG;
        }
        pthread_once(&iso_once, iso_setup);
        if (iso_init_status < 0) {
                set_err(err, err_len, "cannot build %s: libisofs cannot start: %s", path,
                        iso_error_to_msg(iso_init_status));
                return iso_errno(iso_init_status);
        }
        docs[0] = seed_meta_data(p);
        docs[1] = seed_user_data(p);
        docs[2] = seed_network_config(p);
        if (!docs[0] || !docs[1] || !docs[2]) {
                r = -ENOMEM;
                set_err(err, err_len, "out of memory writing the seed documents for %s", path);
                goto out;
        }

        /* Made here with mode 0600: the seed holds the password. A stale
         * one of a crashed run goes first. */
        if (unlink(tmp) < 0 && errno != ENOENT) {
                r = -errno;
                set_err(err, err_len, "cannot remove %s: %s", tmp, strerror(-r));
                goto out;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0) {
                r = -errno;
                set_err(err, err_len, "cannot create %s: %s", tmp, strerror(-r));
                goto out;
        }
        have_tmp = true;
        pthread_mutex_lock(&iso_lock);
        r = iso_write(fd, tmp, docs, err, err_len);
        pthread_mutex_unlock(&iso_lock);
        if (r < 0)
                goto out;
        if (fsync(fd) < 0) {
                r = -errno;
                set_err(err, err_len, "cannot sync %s: %s", tmp, strerror(-r));
                goto out;
        }
        r = close(fd) < 0 ? -errno : 0;
        fd = -1;
        if (r < 0) {
                set_err(err, err_len, "cannot close %s: %s", tmp, strerror(-r));
                goto out;
        }
        if (rename(tmp, path) < 0) {
                r = -errno;
                set_err(err, err_len, "cannot rename %s to %s: %s", tmp, path, strerror(-r));
                goto out;
        }
        have_tmp = false;
        r = sync_parent(path);
        if (r < 0)
                set_err(err, err_len, "cannot sync the directory of %s: %s", path, strerror(-r));
out:
        if (fd >= 0)
                close(fd);
        if (have_tmp)
                unlink(tmp);
        for (int i = 0; i < 3; i++)
                free(docs[i]);
        return r;
}
