/* seed: the NoCloud documents against golden files, the YAML escaping of
 * every string we put in, the MIME wrapping of the customer's user-data
 * (types, encodings, boundary collisions), seed_check's refusals, and
 * real volumes made by seed_build_iso (libisofs) and read back with
 * isoinfo: label, Rock Ridge and Joliet trees, the documents byte for
 * byte; atomic replacement, the failures we can provoke (no directory,
 * a full file size limit, a directory in the way) leaving the old seed
 * and no path.tmp, and builds from several threads at once.
 *
 * Golden files live in tests/fixtures/golden/ (tests run from the repo
 * root). TASMAN_TEST_REGENERATE=1 rewrites them from the current output,
 * as libvirt's VIR_TEST_REGENERATE_OUTPUT does; review the diff after.
 * isoinfo (Debian package genisoimage, a test-only tool that
 * scripts/install-deps installs) must be installed: without it the volume
 * tests fail, never skip. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "seed.h"

extern char **environ;

#define GOLDEN_DIR "tests/fixtures/golden"

/* ---- helpers ---- */

static int regenerate(void)
{
        const char *v = getenv("TASMAN_TEST_REGENERATE");
        return v && strcmp(v, "1") == 0;
}

static char *read_all_fd(int fd, size_t *ret_len)
{
        char *buf = NULL;
        size_t len = 0, cap = 0;
        ssize_t n;

        do {
                if (cap - len < 4096) {
                        cap = cap ? cap * 2 : 8192;
                        buf = realloc(buf, cap + 1);
                        assert_non_null(buf);
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0 && errno == EINTR)
                        continue;
                assert_true(n >= 0);
                len += (size_t)n;
        } while (n > 0);
        buf[len] = '\0';
        if (ret_len)
                *ret_len = len;
        return buf;
}

static char *read_file(const char *path, size_t *ret_len)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        char *buf = read_all_fd(fd, ret_len);
        close(fd);
        return buf;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        if (fd < 0)
                fail_msg("cannot write %s: %s", path, strerror(errno));
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        assert_int_equal(close(fd), 0);
}

/* Compares text with the golden file byte for byte (or rewrites it). */
static void check_golden(const char *name, const char *text)
{
        char path[256];
        size_t len = 0;

        snprintf(path, sizeof(path), GOLDEN_DIR "/%s", name);
        if (regenerate()) {
                FILE *f = fopen(path, "wb");
                if (!f)
                        fail_msg("cannot write %s (run from the repo root)", path);
                assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
                assert_int_equal(fclose(f), 0);
                return;
        }
        char *want = read_file(path, &len);
        if (!want)
                fail_msg("cannot read %s: run from the repo root, or make it with "
                         "TASMAN_TEST_REGENERATE=1",
                         path);
        if (len != strlen(text) || memcmp(want, text, len) != 0) {
                size_t i = 0;
                while (i < len && want[i] == text[i])
                        i++;
                fprintf(stderr, "--- %s\n%s--- got\n%s---\n", path, want, text);
                free(want);
                fail_msg("%s differs from the output at byte %zu", path, i);
        }
        free(want);
}

/* Runs argv (no shell) and returns its stdout; *ret_status is the exit
 * status, or -1 when it did not exit normally. */
static char *run(char *const argv[], int *ret_status, size_t *ret_len)
{
        posix_spawn_file_actions_t fa;
        int pfd[2], status;
        pid_t pid;

        assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
        assert_int_equal(posix_spawn_file_actions_init(&fa), 0);
        assert_int_equal(posix_spawn_file_actions_adddup2(&fa, pfd[1], 1), 0);
        int e = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(pfd[1]);
        if (e != 0)
                fail_msg("cannot run %s: %s (Debian package genisoimage: scripts/install-deps)", argv[0],
                         strerror(e));
        char *out = read_all_fd(pfd[0], ret_len);
        close(pfd[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        *ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return out;
}

/* Whether name is an executable in PATH. */
static bool in_path(const char *name)
{
        const char *path = getenv("PATH");
        char *copy, *save = NULL, *dir;
        bool found = false;

        if (!path)
                return false;
        copy = strdup(path);
        assert_non_null(copy);
        for (dir = strtok_r(copy, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
                char full[4096];
                snprintf(full, sizeof(full), "%s/%s", dir, name);
                found = access(full, X_OK) == 0;
        }
        free(copy);
        return found;
}

/* The volume tests need the real reader: fail, loudly, without it. */
static void require_tools(void)
{
        if (!in_path("isoinfo"))
                fail_msg("isoinfo is not installed (Debian package genisoimage; run "
                         "scripts/install-deps): the seed cannot be checked");
}

static size_t count(const char *hay, const char *needle)
{
        size_t n = 0;
        for (const char *p = hay; (p = strstr(p, needle)); p++)
                n++;
        return n;
}

static size_t count_lines(const char *s)
{
        size_t n = 0;
        for (; *s; s++)
                n += *s == '\n';
        return n;
}

/* Every byte printable ASCII or a newline. */
static void assert_7bit(const char *doc)
{
        for (const char *s = doc; *s; s++)
                if (*s != '\n' && (*s < 0x20 || *s >= 0x7f))
                        fail_msg("byte 0x%02x at %zu is not printable ASCII", (unsigned char)*s,
                                 (size_t)(s - doc));
}

static void put_utf8(char *out, size_t *o, uint32_t cp)
{
        if (cp < 0x80) {
                out[(*o)++] = (char)cp;
        } else if (cp < 0x800) {
                out[(*o)++] = (char)(0xc0 | (cp >> 6));
                out[(*o)++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
                out[(*o)++] = (char)(0xe0 | (cp >> 12));
                out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[(*o)++] = (char)(0x80 | (cp & 0x3f));
        } else {
                out[(*o)++] = (char)(0xf0 | (cp >> 18));
                out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
                out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
                out[(*o)++] = (char)(0x80 | (cp & 0x3f));
        }
}

/* Reads one YAML double-quoted scalar that must make up the rest of the
 * line (s up to but without its newline), as a YAML parser would: returns
 * its value (malloc'd), or NULL when the line is anything else, e.g. when
 * a quote ends the scalar early or raw control text is in it. */
static char *yaml_unquote(const char *s, size_t len)
{
        const char *end = s + len;
        char *out = malloc(len * 4 + 1);
        size_t o = 0;

        assert_non_null(out);
        if (s == end || *s++ != '"')
                goto bad;
        while (s < end && *s != '"') {
                unsigned char c = (unsigned char)*s;
                if (c < 0x20 || c >= 0x7f)
                        goto bad;
                if (c != '\\') {
                        out[o++] = *s++;
                        continue;
                }
                if (++s == end)
                        goto bad;
                int digits = 0;
                uint32_t cp = 0;
                switch (*s++) {
                case '"': cp = '"'; break;
                case '\\': cp = '\\'; break;
                case 'n': cp = '\n'; break;
                case 'r': cp = '\r'; break;
                case 't': cp = '\t'; break;
                case 'x': digits = 2; break;
                case 'u': digits = 4; break;
                case 'U': digits = 8; break;
                default: goto bad;
                }
                for (int i = 0; i < digits; i++, s++) {
                        if (s == end)
                                goto bad;
                        char h = *s;
                        int v = h >= '0' && h <= '9'   ? h - '0'
                                : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                                       : -1;
                        if (v < 0)
                                goto bad;
                        cp = cp * 16 + (uint32_t)v;
                }
                put_utf8(out, &o, cp);
        }
        if (s == end || s + 1 != end)
                goto bad; /* no closing quote, or text after it */
        out[o] = '\0';
        return out;
bad:
        free(out);
        return NULL;
}

/* The value of the n-th line (from 0) of doc that starts with prefix,
 * which must be one whole double-quoted scalar. */
static char *scalar_after(const char *doc, const char *prefix, int nth)
{
        size_t pl = strlen(prefix);
        for (const char *line = doc; *line;) {
                const char *nl = strchr(line, '\n');
                size_t len = nl ? (size_t)(nl - line) : strlen(line);
                if (len >= pl && memcmp(line, prefix, pl) == 0 && nth-- == 0) {
                        char *v = yaml_unquote(line + pl, len - pl);
                        if (!v)
                                fail_msg("line '%.*s' is not one double-quoted scalar", (int)len,
                                         line);
                        return v;
                }
                line += len + (nl ? 1 : 0);
        }
        fail_msg("no line %d starting with '%s' in:\n%s", nth, prefix, doc);
        return NULL;
}

/* Decodes base64 (ignoring newlines) into a malloc'd string. */
static char *base64_decode(const char *s, size_t *ret_len)
{
        static const char tbl[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char *out = malloc(strlen(s) + 1);
        size_t o = 0;
        uint32_t acc = 0;
        int bits = 0;

        assert_non_null(out);
        for (; *s; s++) {
                if (*s == '\n' || *s == '=')
                        continue;
                const char *p = strchr(tbl, *s);
                if (!p)
                        fail_msg("'%c' is not base64", *s);
                acc = (acc << 6) | (uint32_t)(p - tbl);
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (char)((acc >> bits) & 0xff);
                }
        }
        out[o] = '\0';
        *ret_len = o;
        return out;
}

/* The text between the first blank line after the n-th part's delimiter
 * and the next delimiter line (without the newline before it). */
static char *part_body(const char *doc, const char *delim, int nth)
{
        const char *p = doc;
        for (int i = 0; i <= nth; i++) {
                p = strstr(p, delim);
                assert_non_null(p);
                p += strlen(delim);
        }
        p = strstr(p, "\n\n");
        assert_non_null(p);
        p += 2;
        char nd[128];
        snprintf(nd, sizeof(nd), "\n%s", delim);
        const char *e = strstr(p, nd);
        assert_non_null(e);
        return strndup(p, (size_t)(e - p));
}

/* ---- parameters ---- */

static const char *const keys_one[] = {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRhc21hbiBzZWVkIHRlc3Qga2V5IG9uZQ admin@laptop",
};
static const char *const keys_two[] = {
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRhc21hbiBzZWVkIHRlc3Qga2V5IHR3bw ops@example.com",
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDdGFzbWFu \"Jos\xc3\xa9's\" key: #2",
};
static const struct seed_addr addrs_static[] = {
        { "192.0.2.10/24", "192.0.2.1" },
        { "2001:DB8:0:0::10/64", "2001:db8::1" },
};
static const char *const ns_two[] = { "192.0.2.53", "2001:db8::53" };

static struct seed_params basic(void)
{
        return (struct seed_params){
                .vm_id = 42,
                .hostname = "web1",
                .ssh_keys = keys_one,
                .n_ssh_keys = 1,
                .mac = "52:54:00:12:34:56",
        };
}

static struct seed_params full(void)
{
        return (struct seed_params){
                .vm_id = 7,
                .instance_id = "tasman-7-rebuild-2",
                .hostname = "db1",
                .fqdn = "db1.example.com",
                .ssh_keys = keys_two,
                .n_ssh_keys = 2,
                .admin_user = "ops",
                .admin_password = "correct horse: \"battery\" #staple",
                .user_data = "#cloud-config\npackages:\n  - htop\nruncmd:\n  - [touch, /root/ok]\n",
                .mac = "52:54:00:AB:CD:EF",
                .addrs = addrs_static,
                .n_addrs = 2,
                .nameservers = ns_two,
                .n_nameservers = 2,
        };
}

static void check_docs_golden(const struct seed_params *p, const char *meta, const char *user,
                              const char *net)
{
        char err[256];
        assert_int_equal(seed_check(p, err, sizeof(err)), 0);
        assert_string_equal(err, "");
        char *m = seed_meta_data(p), *u = seed_user_data(p), *n = seed_network_config(p);
        assert_non_null(m);
        assert_non_null(u);
        assert_non_null(n);
        assert_7bit(m);
        assert_7bit(u);
        assert_7bit(n);
        if (meta)
                check_golden(meta, m);
        if (user)
                check_golden(user, u);
        if (net)
                check_golden(net, n);
        free(m);
        free(u);
        free(n);
}

/* ---- golden documents ---- */

static void test_golden_basic(void **state)
{
        (void)state;
        struct seed_params p = basic();
        check_docs_golden(&p, "seed-basic.meta-data", "seed-basic.user-data",
                          "seed-dhcp.network-config");
}

/* A public NIC and two private networks' NICs: each matched by MAC and
 * named in order, static, only the first with the default routes. */
static void test_golden_private_nics(void **state)
{
        static const struct seed_addr a1[] = { { "10.0.0.5/24", NULL } };
        static const struct seed_addr a2[] = { { "172.16.4.9/29", NULL },
                                               { "fd00:1::9/64", NULL } };
        const struct seed_nic more[] = { { "52:54:00:00:10:01", a1, 1 },
                                         { "52:54:00:00:10:02", a2, 2 } };
        (void)state;
        struct seed_params p = full();
        p.more_nics = more;
        p.n_more_nics = 2;
        check_docs_golden(&p, NULL, NULL, "seed-private.network-config");
        char err[256];
        /* a gateway on a private NIC, a bad MAC, too many: refused */
        static const struct seed_addr gw[] = { { "10.0.0.5/24", "10.0.0.1" } };
        const struct seed_nic bad_gw[] = { { "52:54:00:00:10:01", gw, 1 } };
        p.more_nics = bad_gw;
        p.n_more_nics = 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "NIC 2: a gateway"));
        const struct seed_nic bad_mac[] = { { "01:00:5e:00:00:01", a1, 1 } };
        p.more_nics = bad_mac;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "NIC 2: MAC"));
        p.more_nics = more;
        p.n_more_nics = SEED_MORE_NICS_MAX + 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
}

/* Password, fqdn, two keys, another admin, the customer's #cloud-config
 * (multipart), static IPv4 and IPv6. */
static void test_golden_full(void **state)
{
        (void)state;
        struct seed_params p = full();
        check_docs_golden(&p, "seed-full.meta-data", "seed-full.user-data",
                          "seed-static.network-config");
        char *u = seed_user_data(&p);
        /* Ours first, theirs second, theirs carried as it is. */
        char *ours = part_body(u, "--==tasman-seed-0==", 0);
        char *theirs = part_body(u, "--==tasman-seed-0==", 1);
        assert_int_equal(strncmp(ours, "#cloud-config\nhostname: \"db1\"\n", 30), 0);
        assert_string_equal(theirs, p.user_data);
        assert_non_null(strstr(u, "Content-Type: text/cloud-config; charset=\"us-ascii\"\n"
                                  "MIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n"
                                  "Content-Disposition: attachment; filename=\"user-data\"\n"));
        assert_int_equal(strncmp(u, "Content-Type: multipart/mixed; boundary=", 40), 0);
        assert_non_null(strstr(u, "\nMIME-Version: 1.0\n")); /* how cloud-init spots MIME */
        free(ours);
        free(theirs);
        free(u);
}

static void test_golden_script(void **state)
{
        (void)state;
        struct seed_params p = basic();
        p.user_data = "#!/bin/sh\necho hello > /tmp/hello";
        check_docs_golden(&p, NULL, "seed-script.user-data", NULL);
        char *u = seed_user_data(&p);
        assert_non_null(strstr(u, "Content-Type: text/x-shellscript; charset=\"us-ascii\"\n"));
        char *theirs = part_body(u, "--==tasman-seed-0==", 1);
        assert_string_equal(theirs, p.user_data); /* no newline added */
        free(theirs);
        free(u);
}

/* UTF-8 and CRLF are not 7-bit text: base64, decoding to the same bytes. */
static void test_golden_utf8(void **state)
{
        (void)state;
        struct seed_params p = basic();
        p.user_data = "#!/bin/bash\r\necho 'caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x99\x82'\r\n";
        check_docs_golden(&p, NULL, "seed-utf8.user-data", NULL);
        char *u = seed_user_data(&p);
        assert_non_null(strstr(u, "Content-Type: text/x-shellscript; charset=\"utf-8\"\n"
                                  "MIME-Version: 1.0\nContent-Transfer-Encoding: base64\n"));
        char *b64 = part_body(u, "--==tasman-seed-0==", 1);
        size_t len;
        char *back = base64_decode(b64, &len);
        assert_int_equal(len, strlen(p.user_data));
        assert_memory_equal(back, p.user_data, len);
        free(back);
        free(b64);
        free(u);
}

/* Every length pads right, lines are at most 76, bytes come back. */
static void test_base64_lengths(void **state)
{
        (void)state;
        char text[300];
        for (size_t n = 1; n < sizeof(text) - 1; n++) {
                text[0] = '\r'; /* not 7-bit text */
                for (size_t i = 1; i < n; i++)
                        text[i] = (char)(1 + (i * 37) % 255);
                text[n] = '\0';
                struct seed_params p = basic();
                p.user_data = text;
                char *u = seed_user_data(&p);
                assert_non_null(u);
                assert_7bit(u);
                char *b64 = part_body(u, "--==tasman-seed-0==", 1);
                for (const char *l = b64; *l;) {
                        size_t ll = strcspn(l, "\n");
                        assert_true(ll <= 76);
                        l += ll + (l[ll] ? 1 : 0);
                }
                assert_int_equal(strlen(b64) - count_lines(b64), (n + 2) / 3 * 4);
                size_t len;
                char *back = base64_decode(b64, &len);
                assert_int_equal(len, n);
                assert_memory_equal(back, text, n);
                free(back);
                free(b64);
                free(u);
        }
}

/* A MIME document of the customer's nests as a part of its own. */
static void test_golden_mime(void **state)
{
        (void)state;
        struct seed_params p = basic();
        p.user_data = "Content-Type: multipart/mixed; boundary=\"XYZ\"\n"
                      "MIME-Version: 1.0\n"
                      "\n"
                      "--XYZ\n"
                      "Content-Type: text/x-shellscript\n"
                      "\n"
                      "#!/bin/sh\n"
                      "echo nested\n"
                      "--XYZ\n"
                      "Content-Type: text/cloud-config\n"
                      "\n"
                      "#cloud-config\n"
                      "runcmd: [ls]\n"
                      "--XYZ--\n";
        check_docs_golden(&p, NULL, "seed-mime.user-data", NULL);
        char *u = seed_user_data(&p);
        char needle[1024];
        snprintf(needle, sizeof(needle), "--==tasman-seed-0==\n%s\n--==tasman-seed-0==--\n",
                 p.user_data);
        assert_non_null(strstr(u, needle));
        free(u);
}

/* No MAC: matched by name; static IPv4 without a gateway. */
static void test_golden_nomac(void **state)
{
        (void)state;
        static const struct seed_addr a[] = { { "198.51.100.7/32", NULL } };
        static const char *const ns[] = { "9.9.9.9" };
        struct seed_params p = basic();
        p.mac = NULL;
        p.addrs = a;
        p.n_addrs = 1;
        p.nameservers = ns;
        p.n_nameservers = 1;
        check_docs_golden(&p, NULL, NULL, "seed-nomac.network-config");
        char *n = seed_network_config(&p);
        assert_null(strstr(n, "gateway"));
        assert_null(strstr(n, "dhcp"));
        free(n);
}

/* NULL and "" mean the same for every optional string. */
static void test_defaults(void **state)
{
        (void)state;
        struct seed_params a = basic(), b = basic();
        b.instance_id = "";
        b.fqdn = "";
        b.admin_user = "";
        b.admin_password = "";
        b.user_data = "";
        char *ma = seed_meta_data(&a), *mb = seed_meta_data(&b);
        char *ua = seed_user_data(&a), *ub = seed_user_data(&b);
        assert_string_equal(ma, mb);
        assert_string_equal(ua, ub);
        assert_string_equal(ma, "instance-id: \"tasman-42\"\nlocal-hostname: \"web1\"\n");
        assert_non_null(strstr(ua, "\n  - name: \"admin\"\n"));
        assert_int_equal(strncmp(ua, "#cloud-config\n", 14), 0);
        assert_null(strstr(ua, "fqdn"));
        assert_null(strstr(ua, "chpasswd"));
        assert_null(strstr(ua, "lock_passwd"));
        assert_non_null(strstr(ua, "\nssh_pwauth: false\n"));
        free(ma);
        free(mb);
        free(ua);
        free(ub);

        /* No keys: no empty list. */
        a.n_ssh_keys = 0;
        ua = seed_user_data(&a);
        assert_null(strstr(ua, "ssh_authorized_keys"));
        free(ua);
}

/* root as the admin (the Tilaa API's admin.account): no sudoer made, its
 * login kept, its password for SSH too. */
static void test_root_admin(void **state)
{
        (void)state;
        struct seed_params p = basic();
        char err[128];
        p.admin_user = "root";
        p.admin_password = "qwerty123";
        assert_int_equal(seed_check(&p, err, sizeof(err)), 0);
        char *ud = seed_user_data(&p);
        assert_non_null(ud);
        assert_non_null(strstr(ud, "\ndisable_root: false\nusers:\n  - name: \"root\"\n"));
        assert_null(strstr(ud, "sudo:"));
        assert_null(strstr(ud, "groups:"));
        assert_non_null(strstr(ud, "    - name: \"root\"\n      password: \"qwerty123\"\n"));
        assert_non_null(strstr(ud, "\nssh_pwauth: true\n"));
        assert_non_null(strstr(ud, "PermitRootLogin yes"));
        free(ud);
        /* without a password: keys only, sshd as it is */
        p.admin_password = NULL;
        ud = seed_user_data(&p);
        assert_non_null(strstr(ud, "\ndisable_root: false\n"));
        assert_null(strstr(ud, "PermitRootLogin"));
        assert_non_null(strstr(ud, "\nssh_pwauth: false\n"));
        free(ud);
}

/* ---- YAML injection ---- */

static const char *const nasty[] = {
        "a\"b",
        "\"",
        "a\nb: c",
        "x\n- evil: 1",
        "x\nssh_pwauth: true",
        "#comment",
        "a: b",
        "a #b",
        "\\",
        "\\\"",
        "end\\",
        "'single'",
        "tab\there",
        "cr\rlf",
        "line1\nline2\n",
        "uni caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x99\x82",
        "ctl\x01\x1f\x7f",
        "{a: [b, c]}",
        "&anchor *alias !!python/object:os.system",
        "--- \n...\n",
        "\xe2\x80\xa8\xc2\x85 separators", /* U+2028, U+0085: YAML line breaks */
        "@`%|>",
};

/* The value of field f set to v, and the lines where it shows. */
struct inj_field {
        const char *name;
        int doc; /* 0 meta-data, 1 user-data */
        const char *prefix;
        int nth;
};

static const struct inj_field inj_fields[] = {
        { "hostname", 0, "local-hostname: ", 0 },
        { "hostname", 1, "hostname: ", 0 },
        { "fqdn", 1, "fqdn: ", 0 },
        { "instance_id", 0, "instance-id: ", 0 },
        { "admin_user", 1, "  - name: ", 0 },
        { "admin_user", 1, "    - name: ", 0 },
        { "admin_password", 1, "      password: ", 0 },
        { "key", 1, "      - ", 0 },
        { "key", 1, "      - ", 1 },
};

static void set_field(struct seed_params *p, const char *name, const char *v, const char **keys)
{
        if (strcmp(name, "hostname") == 0)
                p->hostname = v;
        else if (strcmp(name, "fqdn") == 0)
                p->fqdn = v;
        else if (strcmp(name, "instance_id") == 0)
                p->instance_id = v;
        else if (strcmp(name, "admin_user") == 0)
                p->admin_user = v;
        else if (strcmp(name, "admin_password") == 0)
                p->admin_password = v;
        else if (strcmp(name, "key") == 0) {
                keys[0] = v;
                keys[1] = v;
                p->ssh_keys = keys;
                p->n_ssh_keys = 2;
        }
}

/* Whatever the text (the document functions do not rely on seed_check),
 * it stays inside its one double-quoted scalar: the document has as many
 * lines as with a harmless value, that line is one whole scalar, and it
 * reads back as the very text. Every document stays 7-bit. */
static void test_yaml_injection(void **state)
{
        (void)state;
        for (size_t fi = 0; fi < sizeof(inj_fields) / sizeof(inj_fields[0]); fi++) {
                const struct inj_field *f = &inj_fields[fi];
                const char *keys0[2], *keys1[2];
                struct seed_params p0 = full();
                p0.user_data = NULL;
                set_field(&p0, f->name, "harmless", keys0);
                char *d0 = f->doc ? seed_user_data(&p0) : seed_meta_data(&p0);
                assert_non_null(d0);
                for (size_t vi = 0; vi < sizeof(nasty) / sizeof(nasty[0]); vi++) {
                        struct seed_params p = full();
                        p.user_data = NULL;
                        set_field(&p, f->name, nasty[vi], keys1);
                        char *d = f->doc ? seed_user_data(&p) : seed_meta_data(&p);
                        assert_non_null(d);
                        assert_7bit(d);
                        if (count_lines(d) != count_lines(d0))
                                fail_msg("%s = '%s' changed the line count:\n%s", f->name,
                                         nasty[vi], d);
                        char *v = scalar_after(d, f->prefix, f->nth);
                        if (strcmp(v, nasty[vi]) != 0)
                                fail_msg("%s = '%s' reads back as '%s'", f->name, nasty[vi], v);
                        free(v);
                        free(d);
                }
                free(d0);
        }
}

/* Bytes that are not UTF-8 become U+FFFD, still inside the scalar. */
static void test_yaml_invalid_utf8(void **state)
{
        (void)state;
        struct seed_params p = basic();
        p.admin_password = "a\xff" "b\xc3" "\xe0\x80\x80" "\xed\xa0\x80" "\xf4\x90\x80\x80" "c";
        char *u = seed_user_data(&p);
        assert_7bit(u);
        char *v = scalar_after(u, "      password: ", 0);
        /* \xff, a cut \xc3, overlong, surrogate, beyond U+10FFFF: one
         * U+FFFD per byte that does not start a valid sequence. */
        assert_int_equal(strncmp(v, "a\xef\xbf\xbd" "b\xef\xbf\xbd", 8), 0);
        assert_int_equal(v[strlen(v) - 1], 'c');
        assert_null(strchr(v, '\x80'));
        free(v);
        free(u);
}

/* Unchecked network strings are still only quoted. */
static void test_network_injection(void **state)
{
        (void)state;
        const struct seed_addr a[] = { { "1.2.3.4/24\n    dhcp4: true", "x\"\ny: 1" } };
        const char *const ns[] = { "8.8.8.8\n  evil: 1" };
        struct seed_params p = basic();
        p.mac = "52:54:00:12:34:56\"\n  set-name: x";
        p.addrs = a;
        p.n_addrs = 1;
        p.nameservers = ns;
        p.n_nameservers = 1;
        char *n = seed_network_config(&p);
        assert_7bit(n);
        char *v = scalar_after(n, "      macaddress: ", 0);
        assert_string_equal(v, p.mac);
        free(v);
        v = scalar_after(n, "      - ", 0);
        assert_string_equal(v, a[0].cidr);
        free(v);
        v = scalar_after(n, "        - ", 0);
        assert_string_equal(v, ns[0]);
        free(v);
        assert_null(strstr(n, "gateway")); /* not an address: no gateway */
        assert_null(strstr(n, "\n    dhcp4"));
        free(n);
}

/* ---- the customer's part ---- */

static void test_customer_types(void **state)
{
        (void)state;
        static const struct {
                const char *ud;
                const char *type;
        } cases[] = {
                { "#cloud-config\nruncmd: [ls]\n", "text/cloud-config" },
                { "#cloud-config", "text/cloud-config" },
                { "#cloud-config  \t\nx: 1\n", "text/cloud-config" },
                { "#!/bin/bash\necho\n", "text/x-shellscript" },
                { "#!/usr/bin/env python3\nprint(1)\n", "text/x-shellscript" },
                { "#include\nhttps://example.com/a\n", "text/x-include-url" },
                { "#include https://example.com/a\n", "text/x-include-url" },
                { "#include-once\nhttps://example.com/a\n", "text/x-include-once-url" },
                { "#cloud-boothook\n#!/bin/sh\necho\n", "text/cloud-boothook" },
                /* cloud-init looks at text/plain itself: these keep
                 * working without a type of ours. */
                { "#cloud-config-archive\n- type: text/x-shellscript\n", "text/plain" },
                { "#cloud-config-jsonp\n[]\n", "text/plain" },
                { "## template: jinja\n#cloud-config\n", "text/plain" },
                { "#Cloud-Config\n", "text/plain" },
                { " #cloud-config\n", "text/plain" },
                { "#cloud-configx\n", "text/plain" },
                { "hello\n", "text/plain" },
                { "#", "text/plain" },
                { "\n#!/bin/sh\n", "text/plain" },
                /* Headers without MIME-Version are not MIME to cloud-init. */
                { "Content-Type: text/x-shellscript\n\n#!/bin/sh\n", "text/plain" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct seed_params p = basic();
                p.user_data = cases[i].ud;
                char *u = seed_user_data(&p);
                char want[128];
                snprintf(want, sizeof(want), "\nContent-Type: %s; charset=", cases[i].type);
                /* The second Content-Type line of a part. */
                const char *second = strstr(strstr(u, "\n--==tasman-seed-0==\n") + 1,
                                            "\n--==tasman-seed-0==\n");
                assert_non_null(second);
                if (strncmp(second + strlen("\n--==tasman-seed-0==") , want, strlen(want)) != 0)
                        fail_msg("'%s': want %s in:\n%s", cases[i].ud, cases[i].type, u);
                free(u);
        }
}

/* A header block that cloud-init would take for MIME: MIME-Version and
 * Content-Type, ending in a blank line, all within 4096 bytes. */
static void test_customer_mime_detection(void **state)
{
        (void)state;
        static const struct {
                const char *ud;
                bool mime;
        } cases[] = {
                { "MIME-Version: 1.0\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n", true },
                { "Content-Type: multipart/mixed;\n boundary=\"b\"\r\nmime-version: 1.0\r\n\r\n"
                  "--b\r\n\r\nx\r\n--b--\r\n",
                  true },
                { "MIME-Version: 1.0\nContent-Type: text/plain\n", false }, /* no blank line */
                { "MIME-Version: 1.0\n\nbody\n", false },                    /* no type */
                { "Content-Type: text/plain\nX: y\n\nbody\n", false },       /* no version */
                { "MIME-Version: 1.0\nnot a header\nContent-Type: a/b\n\n", false },
                { " X: y\nMIME-Version: 1.0\nContent-Type: a/b\n\n", false }, /* folded first */
                { "MIME-Version: 1.0\nContent-Type: a/b\n\n\xff\n", false }, /* not UTF-8 */
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct seed_params p = basic();
                p.user_data = cases[i].ud;
                char *u = seed_user_data(&p);
                const char *at = strstr(u, "\n--==tasman-seed-0==\n") + 1;
                at = strstr(at, "\n--==tasman-seed-0==\n") + strlen("\n--==tasman-seed-0==\n");
                bool nested = strncmp(at, p.user_data, strlen(p.user_data)) == 0;
                if (nested != cases[i].mime)
                        fail_msg("case %zu: nested %d, want %d:\n%s", i, nested, cases[i].mime, u);
                free(u);
        }
        /* A header block beyond 4096 bytes is not looked at. */
        char *big = malloc(8192);
        assert_non_null(big);
        strcpy(big, "MIME-Version: 1.0\nX-Pad: ");
        size_t n = strlen(big);
        memset(big + n, 'a', 4100);
        strcpy(big + n + 4100, "\nContent-Type: text/plain\n\nbody\n");
        struct seed_params p = basic();
        p.user_data = big;
        char *u = seed_user_data(&p);
        assert_non_null(strstr(u, "Content-Type: text/plain; charset=\"us-ascii\""));
        free(u);
        free(big);
}

/* ---- MIME boundaries ---- */

/* Delimiter lines of boundary b: exactly the parts' separators and the
 * close, at line starts; nowhere else. */
static void check_delimiters(const char *u, unsigned b, const char *ud)
{
        char delim[64], header[128], close_line[64];
        snprintf(delim, sizeof(delim), "--==tasman-seed-%u==", b);
        snprintf(header, sizeof(header),
                 "Content-Type: multipart/mixed; boundary=\"==tasman-seed-%u==\"\n", b);
        snprintf(close_line, sizeof(close_line), "\n%s--\n", delim);
        if (strncmp(u, header, strlen(header)) != 0)
                fail_msg("want boundary %u:\n%.200s", b, u);
        assert_int_equal(count(u, delim), 3);
        char nl_delim[70];
        snprintf(nl_delim, sizeof(nl_delim), "\n%s", delim);
        assert_int_equal(count(u, nl_delim), 3);
        assert_string_equal(u + strlen(u) - strlen(close_line), close_line);
        if (ud)
                assert_null(strstr(ud, delim));
        char *theirs = part_body(u, delim, 1);
        if (ud)
                assert_string_equal(theirs, ud);
        free(theirs);
}

static void test_boundary_collision(void **state)
{
        (void)state;
        struct seed_params p = basic();

        p.user_data = "#!/bin/sh\necho x\n";
        char *u = seed_user_data(&p);
        check_delimiters(u, 0, p.user_data);
        free(u);

        /* Their text holds our first choice, as a line and inside one. */
        p.user_data = "#!/bin/sh\ncat <<EOF\n--==tasman-seed-0==\nEOF\n";
        u = seed_user_data(&p);
        check_delimiters(u, 1, p.user_data);
        free(u);
        p.user_data = "#!/bin/sh\necho x--==tasman-seed-0==--y";
        u = seed_user_data(&p);
        check_delimiters(u, 1, p.user_data);
        free(u);

        /* Several, out of order; our own part (the password) counts too. */
        p.user_data = "#cloud-config\n# --==tasman-seed-3==\n# --==tasman-seed-0==\n"
                      "# --==tasman-seed-1==--\n# --==tasman-seed-5\n# --==tasman-seed-==\n";
        p.admin_password = "pw --==tasman-seed-2== pw";
        u = seed_user_data(&p);
        check_delimiters(u, 4, p.user_data);
        char *ours = part_body(u, "--==tasman-seed-4==", 0);
        char *pw = scalar_after(ours, "      password: ", 0);
        assert_string_equal(pw, p.admin_password);
        free(pw);
        free(ours);
        free(u);

        /* Without customer data there is no MIME and no boundary. */
        p.user_data = NULL;
        u = seed_user_data(&p);
        assert_int_equal(strncmp(u, "#cloud-config\n", 14), 0);
        free(u);
}

/* The worst case: the largest user-data full of our delimiters still
 * gets a free one, found in one pass. */
static void test_boundary_many(void **state)
{
        (void)state;
        char *ud = malloc(SEED_USER_DATA_MAX + 1);
        size_t n = 0;
        unsigned k = 0;

        assert_non_null(ud);
        n += (size_t)snprintf(ud, 32, "#!/bin/sh\n");
        for (;; k++) {
                char line[40];
                int l = snprintf(line, sizeof(line), "--==tasman-seed-%u==\n", k);
                if (n + (size_t)l > SEED_USER_DATA_MAX)
                        break;
                memcpy(ud + n, line, (size_t)l);
                n += (size_t)l;
        }
        ud[n] = '\0';
        struct seed_params p = basic();
        p.user_data = ud;
        char err[256];
        assert_int_equal(seed_check(&p, err, sizeof(err)), 0);
        char *u = seed_user_data(&p);
        assert_non_null(u);
        check_delimiters(u, k, ud);
        free(u);
        free(ud);
}

/* ---- seed_check ---- */

static void test_check_limits_ok(void **state)
{
        (void)state;
        char err[256], host[64], fqdn[254], iid[SEED_INSTANCE_ID_LEN_MAX + 1], user[33];
        char pw[SEED_PASSWORD_LEN_MAX + 1];
        char *key = malloc(SEED_SSH_KEY_LEN_MAX + 1), *ud = malloc(SEED_USER_DATA_MAX + 1);
        const char *keys[SEED_SSH_KEYS_MAX];
        struct seed_addr addrs[SEED_ADDRS_MAX];
        const char *ns[SEED_NAMESERVERS_MAX];

        assert_non_null(key);
        assert_non_null(ud);
        memset(host, 'h', 63);
        host[63] = '\0';
        /* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 */
        memset(fqdn, 'a', 253);
        memcpy(fqdn, host, 63);
        fqdn[63] = fqdn[127] = fqdn[191] = '.';
        fqdn[253] = '\0';
        assert_int_equal(strlen(fqdn), 253);
        memset(iid, 'i', SEED_INSTANCE_ID_LEN_MAX);
        iid[SEED_INSTANCE_ID_LEN_MAX] = '\0';
        memset(user, 'u', 32);
        user[32] = '\0';
        memset(pw, 'p', SEED_PASSWORD_LEN_MAX);
        pw[SEED_PASSWORD_LEN_MAX] = '\0';
        memcpy(key, "ssh-ed25519 ", 12);
        memset(key + 12, 'A', SEED_SSH_KEY_LEN_MAX - 12);
        key[SEED_SSH_KEY_LEN_MAX] = '\0';
        memset(ud, 'x', SEED_USER_DATA_MAX);
        ud[SEED_USER_DATA_MAX] = '\0';
        for (int i = 0; i < SEED_SSH_KEYS_MAX; i++)
                keys[i] = key;
        for (int i = 0; i < SEED_ADDRS_MAX; i++)
                addrs[i] = (struct seed_addr){ i % 2 ? "2001:db8::5/128" : "203.0.113.5/32",
                                               i % 2 ? "fe80::1" : "203.0.113.1" };
        for (int i = 0; i < SEED_NAMESERVERS_MAX; i++)
                ns[i] = i % 2 ? "::1" : "127.0.0.53";

        struct seed_params p = {
                .vm_id = UINT64_MAX,
                .instance_id = iid,
                .hostname = host,
                .fqdn = fqdn,
                .ssh_keys = keys,
                .n_ssh_keys = SEED_SSH_KEYS_MAX,
                .admin_user = user,
                .admin_password = pw,
                .user_data = ud,
                .mac = "fe:ff:ff:ff:ff:ff",
                .addrs = addrs,
                .n_addrs = SEED_ADDRS_MAX,
                .nameservers = ns,
                .n_nameservers = SEED_NAMESERVERS_MAX,
        };
        strcpy(err, "junk");
        int r = seed_check(&p, err, sizeof(err));
        if (r != 0)
                fail_msg("refused: %s", err);
        assert_string_equal(err, "");
        assert_int_equal(seed_check(&p, NULL, 0), 0);

        /* Other valid forms. */
        static const char *const hosts[] = { "a", "0", "web-1", "A1", "xn--bcher-kva", "123" };
        for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
                struct seed_params q = basic();
                q.hostname = hosts[i];
                if (seed_check(&q, err, sizeof(err)) != 0)
                        fail_msg("hostname %s refused: %s", hosts[i], err);
        }
        static const char *const users[] = { "admin", "_x", "a-b_c9", "ubuntu" };
        for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
                struct seed_params q = basic();
                q.admin_user = users[i];
                if (seed_check(&q, err, sizeof(err)) != 0)
                        fail_msg("user %s refused: %s", users[i], err);
        }
        struct seed_params q = full();
        q.fqdn = "DB1.Example.COM"; /* DNS does not care for case */
        q.admin_password = "p\xc3\xa4ss w\xc3\xb6rd: #1 \"x\" \\";
        assert_int_equal(seed_check(&q, err, sizeof(err)), 0);
        free(key);
        free(ud);
}

struct reject {
        const char *field;
        const char *value;
        const char *in_err; /* a part of the reason */
};

static void apply(struct seed_params *p, const struct reject *c, const char **keys,
                  struct seed_addr *addrs, const char **ns)
{
        const char *f = c->field;
        if (strcmp(f, "hostname") == 0)
                p->hostname = c->value;
        else if (strcmp(f, "fqdn") == 0)
                p->fqdn = c->value;
        else if (strcmp(f, "instance_id") == 0)
                p->instance_id = c->value;
        else if (strcmp(f, "admin_user") == 0)
                p->admin_user = c->value;
        else if (strcmp(f, "admin_password") == 0)
                p->admin_password = c->value;
        else if (strcmp(f, "key") == 0) {
                keys[0] = keys_two[0];
                keys[1] = c->value;
                p->ssh_keys = keys;
                p->n_ssh_keys = 2;
        } else if (strcmp(f, "mac") == 0)
                p->mac = c->value;
        else if (strcmp(f, "cidr") == 0 || strcmp(f, "gateway") == 0 ||
                 strcmp(f, "gateway2") == 0) {
                addrs[0] = addrs_static[0];
                addrs[1] = addrs_static[1];
                addrs[2] = (struct seed_addr){ "192.0.2.11/24", NULL };
                if (strcmp(f, "cidr") == 0)
                        addrs[2].cidr = c->value;
                else if (strcmp(f, "gateway") == 0)
                        addrs[0].gateway = c->value;
                else
                        addrs[2].gateway = c->value;
                p->addrs = addrs;
                p->n_addrs = 3;
        } else if (strcmp(f, "nameserver") == 0) {
                ns[0] = ns_two[0];
                ns[1] = c->value;
                p->nameservers = ns;
                p->n_nameservers = 2;
        } else if (strcmp(f, "vm_id") == 0)
                p->vm_id = 0;
        else
                fail_msg("no field %s", f);
}

static void test_check_rejects(void **state)
{
        (void)state;
        static const struct reject cases[] = {
                { "vm_id", NULL, "vm id 0" },
                { "hostname", NULL, "no hostname" },
                { "hostname", "", "no hostname" },
                { "hostname", "-web", "hostname \"-web\" is not an RFC 1123 label" },
                { "hostname", "web-", "hostname \"web-\"" },
                { "hostname", "web_1", "hostname \"web_1\"" },
                { "hostname", "web.example.com", "hostname \"web.example.com\"" },
                { "hostname", "web 1", "hostname \"web 1\"" },
                { "hostname", "web\n1", "hostname \"web?1\"" },
                { "hostname", "w\xc3\xa9" "b", "hostname \"w??b\"" },
                { "hostname", "a\"b: c", "hostname \"a\"b: c\"" },
                { "hostname",
                  "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh", /* 64 */
                  "is not an RFC 1123 label" },
                { "fqdn", "db1", "fqdn \"db1\" is not a domain name" },
                { "fqdn", "db1.", "fqdn \"db1.\" is not a domain name" },
                { "fqdn", "db1..example.com", "is not a domain name" },
                { "fqdn", "db1.-x.com", "is not a domain name" },
                { "fqdn", "db1.ex_ample.com", "is not a domain name" },
                { "fqdn", ".db1.example.com", "is not a domain name" },
                { "fqdn", "db2.example.com",
                  "fqdn \"db2.example.com\" does not start with the hostname" },
                { "fqdn", "db11.example.com", "does not start with the hostname" },
                { "instance_id", "../etc", "instance id \"../etc\" is not valid" },
                { "instance_id", "a/b", "instance id \"a/b\"" },
                { "instance_id", ".hidden", "instance id \".hidden\"" },
                { "instance_id", "a b", "instance id" },
                { "instance_id", "a\nb", "instance id \"a?b\"" },
                { "instance_id",
                  "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii"
                  "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii", /* 129 */
                  "instance id" },
                { "admin_user", "Admin", "admin user \"Admin\" is not a user name" },
                { "admin_user", "1admin", "admin user \"1admin\"" },
                { "admin_user", "a:b", "admin user \"a:b\"" },
                { "admin_user", "a b", "admin user" },
                { "admin_user", "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu", "admin user" }, /* 33 */
                { "admin_password", "line1\nroot:pwned", "admin password holds a newline" },
                { "admin_password", "a\rb", "admin password holds a newline" },
                { "admin_password", "tab\there", "admin password holds a newline" },
                { "admin_password", "del\x7f", "admin password holds" },
                { "admin_password", "bad\xff" "utf8", "admin password is not valid UTF-8" },
                { "key", "", "SSH key 2 is empty" },
                { "key", "ssh-ed25519 AAAA a\nssh-rsa BBBB b", "SSH key 2 holds a newline" },
                { "key", "ssh-ed25519 AAAA a\r", "SSH key 2 holds a newline" },
                { "key", "ssh-ed25519 AAAA \xc3(", "SSH key 2 is not valid UTF-8" },
                { "mac", "52:54:00:12:34", "MAC address \"52:54:00:12:34\" is not like" },
                { "mac", "52-54-00-12-34-56", "MAC address" },
                { "mac", "52:54:00:12:34:5g", "MAC address" },
                { "mac", "52:54:00:12:34:56:78", "MAC address" },
                { "mac", "525400123456", "MAC address" },
                { "mac", "01:00:5e:00:00:01", "is not a unicast address" },
                { "mac", "ff:ff:ff:ff:ff:ff", "is not a unicast address" },
                { "mac", "00:00:00:00:00:00", "is not a unicast address" },
                { "cidr", "192.0.2.11", "address 3 \"192.0.2.11\" is not an address/prefix" },
                { "cidr", "192.0.2.11/33", "address 3" },
                { "cidr", "192.0.2.11/0", "address 3" },
                { "cidr", "192.0.2.11/024", "address 3" },
                { "cidr", "192.0.2.11/24x", "address 3" },
                { "cidr", "192.0.2.11/", "address 3" },
                { "cidr", "/24", "address 3" },
                { "cidr", "192.0.2.256/24", "address 3" },
                { "cidr", "192.0.2/24", "address 3" },
                { "cidr", "192.0.2.011/24", "address 3" },
                { "cidr", " 192.0.2.11/24", "address 3" },
                { "cidr", "2001:db8::1/129", "address 3" },
                { "cidr", "2001:db8::1/00064", "address 3" },
                { "cidr", "fe80::1%eth0/64", "address 3" },
                { "cidr", "2001:db8:::1/64", "address 3" },
                { "cidr", "example.com/24", "address 3" },
                { "cidr", "192.0.2.11/24\n", "address 3 \"192.0.2.11/24?\"" },
                { "gateway", "192.0.2.1x",
                  "gateway \"192.0.2.1x\" of address 1 is not an IPv4 address" },
                { "gateway", "2001:db8::1", "gateway \"2001:db8::1\" of address 1 is not an IPv4" },
                { "gateway", "192.0.2.1/24", "of address 1 is not an IPv4" },
                { "gateway2", "192.0.2.254", "address 3: a second IPv4 gateway" },
                { "nameserver", "8.8.8.8.8", "nameserver 2 \"8.8.8.8.8\" is not an IP address" },
                { "nameserver", "dns.google", "nameserver 2" },
                { "nameserver", "1.1.1.1/32", "nameserver 2" },
                { "nameserver", "", "nameserver 2" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                const char *keys[2];
                struct seed_addr addrs[3];
                const char *ns[2];
                char err[256];
                struct seed_params p = full();
                apply(&p, &cases[i], keys, addrs, ns);
                memset(err, 'x', sizeof(err));
                int r = seed_check(&p, err, sizeof(err));
                if (r != -EINVAL)
                        fail_msg("%s = '%s': %d, want -EINVAL", cases[i].field,
                                 cases[i].value ? cases[i].value : "(null)", r);
                if (!strstr(err, cases[i].in_err))
                        fail_msg("%s = '%s': reason '%s' lacks '%s'", cases[i].field,
                                 cases[i].value ? cases[i].value : "(null)", err, cases[i].in_err);
                assert_null(strchr(err, '\n'));
                assert_7bit(err);
                if (strcmp(cases[i].field, "admin_password") == 0)
                        assert_null(strstr(err, cases[i].value)); /* a secret */
        }
}

static void test_check_sizes(void **state)
{
        (void)state;
        char err[256];
        struct seed_params p;

        /* Keys: too many, too long, no array. */
        const char *keys[SEED_SSH_KEYS_MAX + 1];
        for (int i = 0; i <= SEED_SSH_KEYS_MAX; i++)
                keys[i] = keys_one[0];
        p = basic();
        p.ssh_keys = keys;
        p.n_ssh_keys = SEED_SSH_KEYS_MAX + 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "101 SSH keys: at most 100");
        char *big = malloc(SEED_USER_DATA_MAX + 2);
        assert_non_null(big);
        memset(big, 'A', SEED_SSH_KEY_LEN_MAX + 1);
        big[SEED_SSH_KEY_LEN_MAX + 1] = '\0';
        keys[0] = big;
        p.n_ssh_keys = 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "SSH key 1 is longer than 16384 bytes");
        p.ssh_keys = NULL;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "1 SSH keys but no array");
        keys[0] = NULL;
        p.ssh_keys = keys;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "SSH key 1 is empty");

        /* User data: one byte over. */
        p = basic();
        memset(big, '#', SEED_USER_DATA_MAX + 1);
        big[SEED_USER_DATA_MAX + 1] = '\0';
        p.user_data = big;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "user data is longer than 65536 bytes");

        /* Password: one byte over, not shown. */
        p = basic();
        memset(big, 'p', SEED_PASSWORD_LEN_MAX + 1);
        big[SEED_PASSWORD_LEN_MAX + 1] = '\0';
        p.admin_password = big;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "admin password is longer than 1024 bytes");
        free(big);

        /* Addresses and nameservers: too many, no array. */
        struct seed_addr addrs[SEED_ADDRS_MAX + 1];
        for (int i = 0; i <= SEED_ADDRS_MAX; i++)
                addrs[i] = (struct seed_addr){ "192.0.2.10/24", NULL };
        p = basic();
        p.addrs = addrs;
        p.n_addrs = SEED_ADDRS_MAX + 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "17 addresses: at most 16");
        p.addrs = NULL;
        p.n_addrs = 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "1 addresses but no array");
        p = basic();
        addrs[0].cidr = NULL;
        p.addrs = addrs;
        p.n_addrs = 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "address 1 \"\" is not"));
        const char *ns[SEED_NAMESERVERS_MAX + 1];
        for (int i = 0; i <= SEED_NAMESERVERS_MAX; i++)
                ns[i] = "192.0.2.53";
        p = basic();
        p.nameservers = ns;
        p.n_nameservers = SEED_NAMESERVERS_MAX + 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "9 nameservers: at most 8");
        p.nameservers = NULL;
        p.n_nameservers = 1;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "1 nameservers but no array");
        ns[0] = NULL;
        p.nameservers = ns;
        assert_int_equal(seed_check(&p, err, sizeof(err)), -EINVAL);

        /* The same gateway twice is one default route, not two. */
        const struct seed_addr two[] = { { "192.0.2.10/24", "192.0.2.1" },
                                         { "192.0.2.11/24", "192.0.2.1" } };
        p = basic();
        p.addrs = two;
        p.n_addrs = 2;
        assert_int_equal(seed_check(&p, err, sizeof(err)), 0);
        char *n = seed_network_config(&p);
        assert_int_equal(count(n, "gateway4"), 1);
        free(n);

        /* No parameters; no room for a reason; a cut reason. */
        assert_int_equal(seed_check(NULL, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, "no seed parameters");
        p = basic();
        p.hostname = "bad_name";
        assert_int_equal(seed_check(&p, NULL, 0), -EINVAL);
        char small[8];
        assert_int_equal(seed_check(&p, small, sizeof(small)), -EINVAL);
        assert_string_equal(small, "hostnam");
}

/* ---- the volume ---- */

struct fx {
        char dir[64];
        char tmp[96];  /* TMPDIR while a test runs: nothing may appear there */
        char path[128]; /* the seed */
        char *old_tmpdir;
};

static int setup(void **state)
{
        struct fx *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        strcpy(f->dir, "/tmp/test_seed.XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->tmp, sizeof(f->tmp), "%s/tmp", f->dir);
        snprintf(f->path, sizeof(f->path), "%s/seed.iso", f->dir);
        assert_int_equal(mkdir(f->tmp, 0700), 0);
        const char *td = getenv("TMPDIR");
        f->old_tmpdir = td ? strdup(td) : NULL;
        assert_int_equal(setenv("TMPDIR", f->tmp, 1), 0);
        *state = f;
        return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static int teardown(void **state)
{
        struct fx *f = *state;
        if (f->old_tmpdir)
                setenv("TMPDIR", f->old_tmpdir, 1);
        else
                unsetenv("TMPDIR");
        nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
        free(f->old_tmpdir);
        free(f);
        return 0;
}

/* Nothing left behind in TMPDIR. */
static void assert_tmp_empty(const struct fx *f)
{
        DIR *d = opendir(f->tmp);
        struct dirent *e;
        assert_non_null(d);
        while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                        fail_msg("%s/%s left behind", f->tmp, e->d_name);
        closedir(d);
}

static bool exists(const char *path)
{
        struct stat st;
        return lstat(path, &st) == 0;
}

static char *iso_extract(const char *iso, const char *how, const char *file)
{
        char *const argv[] = {
                "isoinfo", (char *)how, "-x", (char *)file, "-i", (char *)iso, NULL,
        };
        int status;
        char *out = run(argv, &status, NULL);
        assert_int_equal(status, 0);
        return out;
}

/* The volume at path holds exactly the documents of p, under label
 * cidata, readable with Rock Ridge and with Joliet. */
static void check_iso(const char *iso, const struct seed_params *p)
{
        int status;
        char *const info[] = { "isoinfo", "-d", "-i", (char *)iso, NULL };
        char *d = run(info, &status, NULL);
        assert_int_equal(status, 0);
        if (!strstr(d, "\nVolume id: " SEED_VOLID "\n"))
                fail_msg("no 'Volume id: cidata' in:\n%s", d);
        assert_non_null(strstr(d, "Rock Ridge signatures"));
        assert_non_null(strstr(d, "Joliet"));
        free(d);

        char *const list[] = { "isoinfo", "-R", "-f", "-i", (char *)iso, NULL };
        char *l = run(list, &status, NULL);
        assert_int_equal(status, 0);
        assert_string_equal(l, "/meta-data\n/network-config\n/user-data\n");
        free(l);

        char *docs[3] = { seed_meta_data(p), seed_user_data(p), seed_network_config(p) };
        static const char *const names[3] = { "/meta-data", "/user-data", "/network-config" };
        static const char *const hows[2] = { "-R", "-J" };
        for (int h = 0; h < 2; h++) {
                for (int i = 0; i < 3; i++) {
                        char *got = iso_extract(iso, hows[h], names[i]);
                        if (strcmp(got, docs[i]) != 0)
                                fail_msg("%s %s in %s:\n%s\n--- want\n%s", hows[h], names[i], iso,
                                         got, docs[i]);
                        free(got);
                }
        }
        for (int i = 0; i < 3; i++)
                free(docs[i]);
}

static void test_iso_build(void **state)
{
        struct fx *f = *state;
        struct seed_params p = full();
        char err[256], tmp[160];
        struct stat st;

        require_tools();
        int r = seed_build_iso(&p, f->path, err, sizeof(err));
        if (r != 0)
                fail_msg("seed_build_iso: %d %s", r, err);
        check_iso(f->path, &p);
        assert_int_equal(stat(f->path, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600); /* it holds the password */
        snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
        assert_false(exists(tmp));
        assert_tmp_empty(f);

        /* A rebuild (new instance id) replaces it whole. */
        p.instance_id = "tasman-7-rebuild-3";
        p.user_data = "#!/bin/sh\necho rebuilt\n";
        assert_int_equal(seed_build_iso(&p, f->path, err, sizeof(err)), 0);
        check_iso(f->path, &p);
        char *m = iso_extract(f->path, "-R", "/meta-data");
        assert_non_null(strstr(m, "\"tasman-7-rebuild-3\""));
        free(m);
        assert_false(exists(tmp));
        assert_tmp_empty(f);

        /* A stale path.tmp of a crashed run is no obstacle. */
        write_file(tmp, "stale", 0644);
        struct seed_params b = basic();
        assert_int_equal(seed_build_iso(&b, f->path, err, sizeof(err)), 0);
        check_iso(f->path, &b);
        assert_false(exists(tmp));
}

static void test_iso_missing_dir(void **state)
{
        struct fx *f = *state;
        struct seed_params p = basic();
        char err[256], path[192], tmp[200];

        require_tools();
        snprintf(path, sizeof(path), "%s/no/such/dir/seed.iso", f->dir);
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        assert_int_equal(seed_build_iso(&p, path, err, sizeof(err)), -ENOENT);
        if (!strstr(err, "cannot create ") || !strstr(err, tmp) ||
            !strstr(err, "No such file or directory"))
                fail_msg("reason: %s", err);
        assert_false(exists(path));
        assert_false(exists(tmp));
        assert_tmp_empty(f);
}

static void test_iso_bad_params(void **state)
{
        struct fx *f = *state;
        struct seed_params p = basic();
        char err[256];

        p.hostname = "no_underscores";
        assert_int_equal(seed_build_iso(&p, f->path, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "hostname \"no_underscores\""));
        assert_false(exists(f->path));
        assert_tmp_empty(f);
        p = basic();
        assert_int_equal(seed_build_iso(&p, "", err, sizeof(err)), -EINVAL);
        assert_int_equal(seed_build_iso(&p, NULL, err, sizeof(err)), -EINVAL);
        assert_tmp_empty(f);
}

/* Builds a good seed, then another that provoke() makes fail with want and
 * want_err (after it, undo() puts things back); the good seed must
 * stay as it was and nothing else be left. */
static void fail_keeps_old(struct fx *f, void (*provoke)(struct fx *), void (*undo)(struct fx *),
                           int want, const char *want_err)
{
        struct seed_params good = basic(), other = full();
        char err[256], tmp[160];

        assert_int_equal(seed_build_iso(&good, f->path, err, sizeof(err)), 0);
        provoke(f);
        int r = seed_build_iso(&other, f->path, err, sizeof(err));
        undo(f);
        if (r != want || strcmp(err, want_err) != 0)
                fail_msg("%d '%s', want %d '%s'", r, err, want, want_err);
        check_iso(f->path, &good);
        snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
        assert_false(exists(tmp));
        assert_tmp_empty(f);
}

/* A file size limit below the volume's size: the write fails part way
 * (SIGXFSZ ignored, so write() says EFBIG), with libisofs' writer
 * thread still at work. */
static struct rlimit saved_fsize;
static struct sigaction saved_xfsz;

static void small_fsize(struct fx *f)
{
        struct rlimit small;
        struct sigaction ign = { .sa_handler = SIG_IGN };

        (void)f;
        assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
        small = saved_fsize;
        small.rlim_cur = 4096;
        assert_int_equal(sigaction(SIGXFSZ, &ign, &saved_xfsz), 0);
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
}

static void restore_fsize(struct fx *f)
{
        (void)f;
        assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
        assert_int_equal(sigaction(SIGXFSZ, &saved_xfsz, NULL), 0);
}

static void test_iso_write_fails(void **state)
{
        struct fx *f = *state;
        char want[256];

        require_tools();
        snprintf(want, sizeof(want), "cannot write %s.tmp: File too large", f->path);
        fail_keeps_old(f, small_fsize, restore_fsize, -EFBIG, want);
}

/* path.tmp cannot be made: a directory of that name is in the way (and
 * is no stale file to remove). */
static void tmp_is_dir(struct fx *f)
{
        char tmp[160], inner[192];
        snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
        snprintf(inner, sizeof(inner), "%s/x", tmp);
        assert_int_equal(mkdir(tmp, 0700), 0);
        write_file(inner, "x", 0600);
}

static void rm_tmp_dir(struct fx *f)
{
        char tmp[160], inner[192];
        snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
        snprintf(inner, sizeof(inner), "%s/x", tmp);
        assert_int_equal(unlink(inner), 0);
        assert_int_equal(rmdir(tmp), 0);
}

static void test_iso_tmp_in_the_way(void **state)
{
        struct fx *f = *state;
        char want[256];

        require_tools();
        snprintf(want, sizeof(want), "cannot remove %s.tmp: Is a directory", f->path);
        fail_keeps_old(f, tmp_is_dir, rm_tmp_dir, -EISDIR, want);
}

/* The rename fails (a directory at path): path.tmp goes, the directory
 * stays. */
static void test_iso_rename_fails(void **state)
{
        struct fx *f = *state;
        struct seed_params p = basic();
        char err[256], want[512], tmp[160], inner[192];

        require_tools();
        snprintf(tmp, sizeof(tmp), "%s.tmp", f->path);
        snprintf(inner, sizeof(inner), "%s/x", f->path);
        assert_int_equal(mkdir(f->path, 0700), 0);
        write_file(inner, "x", 0600);
        int r = seed_build_iso(&p, f->path, err, sizeof(err));
        snprintf(want, sizeof(want), "cannot rename %s to %s: Is a directory", tmp, f->path);
        if (r != -EISDIR || strcmp(err, want) != 0)
                fail_msg("%d '%s', want %d '%s'", r, err, -EISDIR, want);
        assert_false(exists(tmp));
        assert_true(exists(inner));
        assert_tmp_empty(f);
}

/* A rebuild puts a new file in place (rename), never rewrites the old
 * one: a reader that has the old seed open keeps reading it whole. */
static void test_iso_replace_atomic(void **state)
{
        struct fx *f = *state;
        struct seed_params a = basic(), b = full();
        char err[256], snap[160];
        struct stat st_old, st_new;

        require_tools();
        assert_int_equal(seed_build_iso(&a, f->path, err, sizeof(err)), 0);
        size_t old_len = 0;
        char *old = read_file(f->path, &old_len);
        assert_non_null(old);
        int fd = open(f->path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_int_equal(fstat(fd, &st_old), 0);

        assert_int_equal(seed_build_iso(&b, f->path, err, sizeof(err)), 0);
        assert_int_equal(stat(f->path, &st_new), 0);
        assert_true(st_new.st_ino != st_old.st_ino);
        check_iso(f->path, &b);

        /* What the reader still has is the old volume, unchanged. */
        size_t held_len = 0;
        char *held = read_all_fd(fd, &held_len);
        close(fd);
        assert_int_equal(held_len, old_len);
        assert_memory_equal(held, old, old_len);
        snprintf(snap, sizeof(snap), "%s/old.iso", f->dir);
        int out = open(snap, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(out >= 0);
        assert_int_equal(write(out, held, held_len), (ssize_t)held_len);
        assert_int_equal(close(out), 0);
        check_iso(snap, &a);
        free(held);
        free(old);
}

/* Several threads build at once, each its own seeds: all whole and
 * right (libisofs is set up once, used one at a time). */
#define THREADS 4
#define BUILDS_PER_THREAD 5

struct worker {
        pthread_t thread;
        char path[160];
        char hostname[16];
        int result;
        char err[256];
};

static void *worker_run(void *arg)
{
        struct worker *w = arg;
        struct seed_params p = basic();

        p.hostname = w->hostname;
        for (int i = 0; i < BUILDS_PER_THREAD && w->result == 0; i++)
                w->result = seed_build_iso(&p, w->path, w->err, sizeof(w->err));
        return NULL;
}

static void test_iso_threads(void **state)
{
        struct fx *f = *state;
        struct worker w[THREADS];

        require_tools();
        memset(w, 0, sizeof(w));
        for (int i = 0; i < THREADS; i++) {
                snprintf(w[i].path, sizeof(w[i].path), "%s/seed-%d.iso", f->dir, i);
                snprintf(w[i].hostname, sizeof(w[i].hostname), "web%d", i);
                assert_int_equal(pthread_create(&w[i].thread, NULL, worker_run, &w[i]), 0);
        }
        for (int i = 0; i < THREADS; i++)
                assert_int_equal(pthread_join(w[i].thread, NULL), 0);
        for (int i = 0; i < THREADS; i++) {
                struct seed_params p = basic();
                char tmp[170];

                if (w[i].result != 0)
                        fail_msg("thread %d: %d %s", i, w[i].result, w[i].err);
                p.hostname = w[i].hostname;
                check_iso(w[i].path, &p);
                snprintf(tmp, sizeof(tmp), "%s.tmp", w[i].path);
                assert_false(exists(tmp));
        }
        assert_tmp_empty(f);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_golden_basic),
                cmocka_unit_test(test_golden_full),
                cmocka_unit_test(test_golden_private_nics),
                cmocka_unit_test(test_golden_script),
                cmocka_unit_test(test_golden_utf8),
                cmocka_unit_test(test_base64_lengths),
                cmocka_unit_test(test_golden_mime),
                cmocka_unit_test(test_golden_nomac),
                cmocka_unit_test(test_defaults), cmocka_unit_test(test_root_admin),
                cmocka_unit_test(test_yaml_injection),
                cmocka_unit_test(test_yaml_invalid_utf8),
                cmocka_unit_test(test_network_injection),
                cmocka_unit_test(test_customer_types),
                cmocka_unit_test(test_customer_mime_detection),
                cmocka_unit_test(test_boundary_collision),
                cmocka_unit_test(test_boundary_many),
                cmocka_unit_test(test_check_limits_ok),
                cmocka_unit_test(test_check_rejects),
                cmocka_unit_test(test_check_sizes),
                cmocka_unit_test_setup_teardown(test_iso_build, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_missing_dir, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_bad_params, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_write_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_tmp_in_the_way, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_rename_fails, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_replace_atomic, setup, teardown),
                cmocka_unit_test_setup_teardown(test_iso_threads, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
