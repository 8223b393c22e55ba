/* imgcache on real files in a temp directory, over file:// and over HTTP
 * on loopback from two real servers: busybox httpd (plain files, 404s)
 * and a small server of our own here for what busybox cannot do (slow,
 * stalled or silent bodies, no Content-Length, redirects), which also
 * counts the requests it gets.
 *
 * Expected checksums are computed here with OpenSSL EVP. Every wait is
 * bounded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "imgcache.h"
#include "util.h"

#define WAIT_MS 60000 /* a bound for any fetch here, sanitizers included */

/* ---- content: bytes of a seeded pattern, and their sha256 ---- */

static unsigned char pat(unsigned seed, size_t i)
{
        uint32_t x = (uint32_t)i * 2654435761u + seed * 40503u + 1;
        x ^= x >> 15;
        x *= 2246822519u;
        x ^= x >> 13;
        return (unsigned char)x;
}

static void pat_fill(unsigned seed, size_t off, unsigned char *buf, size_t n)
{
        for (size_t i = 0; i < n; i++)
                buf[i] = pat(seed, off + i);
}

static void pat_sha(unsigned seed, size_t size, char out[65])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char buf[65536], d[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        assert_non_null(md);
        assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
        for (size_t off = 0; off < size; off += sizeof(buf)) {
                size_t k = size - off < sizeof(buf) ? size - off : sizeof(buf);
                pat_fill(seed, off, buf, k);
                assert_int_equal(EVP_DigestUpdate(md, buf, k), 1);
        }
        assert_int_equal(EVP_DigestFinal_ex(md, d, &n), 1);
        assert_int_equal(n, 32);
        util_hex(d, n, out);
        EVP_MD_CTX_free(md);
}

static void file_sha(const char *path, char out[65])
{
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        unsigned char buf[65536], d[EVP_MAX_MD_SIZE];
        unsigned int n = 0;
        ssize_t k;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        assert_non_null(md);
        assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
        while ((k = read(fd, buf, sizeof(buf))) > 0)
                assert_int_equal(EVP_DigestUpdate(md, buf, (size_t)k), 1);
        assert_int_equal(k, 0);
        close(fd);
        assert_int_equal(EVP_DigestFinal_ex(md, d, &n), 1);
        util_hex(d, n, out);
        EVP_MD_CTX_free(md);
}

static void pat_write(const char *path, unsigned seed, size_t size)
{
        unsigned char buf[65536];
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        for (size_t off = 0; off < size; off += sizeof(buf)) {
                size_t k = size - off < sizeof(buf) ? size - off : sizeof(buf);
                pat_fill(seed, off, buf, k);
                assert_int_equal(fwrite(buf, 1, k, f), k);
        }
        assert_int_equal(fclose(f), 0);
}

static void upper(char *s)
{
        for (; *s; s++)
                if (*s >= 'a' && *s <= 'f')
                        *s = (char)(*s - 'a' + 'A');
}

static void msleep(int ms)
{
        struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* ---- our own HTTP server, for slow, stalled and odd answers ----
 *   /slow/SEED/SIZE/CHUNK/DELAY_MS    the pattern, CHUNK bytes every DELAY_MS
 *   /nolen/SEED/SIZE/CHUNK/DELAY_MS   the same without Content-Length
 *   /stall/SEED/SIZE                  Content-Length SIZE, 64 KiB, then nothing
 *   /silent                           no answer at all
 *   /to-ftp                           302 to ftp://
 *   /loop/N                           302 to /loop/N+1, for ever
 *   /to-slow/SEED/SIZE                302 to /slow/SEED/SIZE/SIZE/0
 *   anything else                     404
 */
#define SRV_MAX_CONN 64

static struct srv {
        int fd, port;
        pthread_t acceptor;
        atomic_bool stop;
        atomic_int requests;
        pthread_mutex_t lock;
        pthread_t conn[SRV_MAX_CONN];
        int n_conn;
} srv;

static bool send_all(int fd, const void *p, size_t n)
{
        const char *c = p;
        while (n > 0) {
                ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return false;
                c += w;
                n -= (size_t)w;
        }
        return true;
}

/* Waits up to ms for the peer to go away (or the server to stop): true
 * when it is time to give up on this connection. */
static bool peer_gone(int fd, int ms)
{
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char b[256];
        if (atomic_load(&srv.stop))
                return true;
        if (poll(&p, 1, ms) > 0) {
                ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                        return true;
        }
        return atomic_load(&srv.stop);
}

static void send_body(int fd, unsigned seed, size_t size, size_t chunk, unsigned delay_ms)
{
        unsigned char buf[65536];
        if (chunk == 0 || chunk > sizeof(buf))
                chunk = sizeof(buf);
        for (size_t off = 0; off < size; off += chunk) {
                size_t k = size - off < chunk ? size - off : chunk;
                pat_fill(seed, off, buf, k);
                if (!send_all(fd, buf, k))
                        return;
                if (delay_ms && peer_gone(fd, (int)delay_ms))
                        return;
        }
}

static void serve(int fd)
{
        char req[4096], path[1024], hdr[512];
        size_t n = 0;
        unsigned seed, delay, k;
        size_t size, chunk;

        /* the request head, within 5 s */
        while (n < sizeof(req) - 1) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t r;
                if (poll(&p, 1, 5000) <= 0)
                        return;
                r = recv(fd, req + n, sizeof(req) - 1 - n, 0);
                if (r <= 0)
                        return;
                n += (size_t)r;
                req[n] = '\0';
                if (strstr(req, "\r\n\r\n"))
                        break;
        }
        if (sscanf(req, "GET %1023s HTTP/1.", path) != 1)
                return;
        atomic_fetch_add(&srv.requests, 1);

        if (sscanf(path, "/slow/%u/%zu/%zu/%u", &seed, &size, &chunk, &delay) == 4) {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                         size);
                if (send_all(fd, hdr, strlen(hdr)))
                        send_body(fd, seed, size, chunk, delay);
        } else if (sscanf(path, "/nolen/%u/%zu/%zu/%u", &seed, &size, &chunk, &delay) == 4) {
                snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                if (send_all(fd, hdr, strlen(hdr)))
                        send_body(fd, seed, size, chunk, delay);
        } else if (sscanf(path, "/stall/%u/%zu", &seed, &size) == 2) {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                         size);
                if (send_all(fd, hdr, strlen(hdr)))
                        send_body(fd, seed, 65536, 65536, 0);
                while (!peer_gone(fd, 50))
                        ;
        } else if (strcmp(path, "/silent") == 0) {
                while (!peer_gone(fd, 50))
                        ;
        } else if (strcmp(path, "/to-ftp") == 0) {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1:1/x.img\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n");
                send_all(fd, hdr, strlen(hdr));
        } else if (sscanf(path, "/loop/%u", &k) == 1) {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 302 Found\r\nLocation: /loop/%u\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n",
                         k + 1);
                send_all(fd, hdr, strlen(hdr));
        } else if (sscanf(path, "/to-slow/%u/%zu", &seed, &size) == 2) {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 302 Found\r\nLocation: /slow/%u/%zu/%zu/0\r\n"
                         "Content-Length: 0\r\nConnection: close\r\n\r\n",
                         seed, size, size);
                send_all(fd, hdr, strlen(hdr));
        } else {
                snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                         "Connection: close\r\n\r\n");
                send_all(fd, hdr, strlen(hdr));
        }
}

static void *conn_main(void *arg)
{
        int fd = (int)(intptr_t)arg;
        serve(fd);
        close(fd);
        return NULL;
}

static void *acceptor_main(void *arg)
{
        (void)arg;
        while (!atomic_load(&srv.stop)) {
                struct pollfd p = { .fd = srv.fd, .events = POLLIN };
                int fd;
                if (poll(&p, 1, 50) <= 0)
                        continue;
                fd = accept4(srv.fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd < 0)
                        continue;
                pthread_mutex_lock(&srv.lock);
                if (srv.n_conn == SRV_MAX_CONN ||
                    pthread_create(&srv.conn[srv.n_conn], NULL, conn_main,
                                   (void *)(intptr_t)fd) != 0) {
                        close(fd);
                } else {
                        srv.n_conn++;
                }
                pthread_mutex_unlock(&srv.lock);
        }
        return NULL;
}

static int srv_start(void)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        srv.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (srv.fd < 0 || bind(srv.fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            listen(srv.fd, 64) < 0 || getsockname(srv.fd, (struct sockaddr *)&a, &len) < 0)
                return -errno;
        srv.port = ntohs(a.sin_port);
        pthread_mutex_init(&srv.lock, NULL);
        return -pthread_create(&srv.acceptor, NULL, acceptor_main, NULL);
}

static void srv_stop(void)
{
        atomic_store(&srv.stop, true);
        pthread_join(srv.acceptor, NULL);
        for (int i = 0; i < srv.n_conn; i++)
                pthread_join(srv.conn[i], NULL);
        close(srv.fd);
        pthread_mutex_destroy(&srv.lock);
}

/* ---- busybox httpd over www/ ---- */

static struct {
        char root[64], www[128];
        pid_t httpd;
        int port;
} g;

static int port_free(int port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
                close(fd);
        return ok;
}

static int can_connect(int port)
{
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        if (fd >= 0)
                close(fd);
        return ok;
}

static int httpd_start(void)
{
        unsigned r = 0;
        for (int attempt = 0; attempt < 20; attempt++) {
                char addr[32];
                int port, st;
                pid_t pid;
                if (util_random(&r, sizeof(r)) < 0)
                        return -1;
                port = 20000 + (int)(r % 12000);
                if (!port_free(port))
                        continue;
                snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
                pid = fork();
                if (pid < 0)
                        return -1;
                if (pid == 0) {
                        prctl(PR_SET_PDEATHSIG, SIGKILL);
                        execlp("busybox", "busybox", "httpd", "-f", "-p", addr, "-h", g.www,
                               (char *)NULL);
                        _exit(127);
                }
                for (int i = 0; i < 500; i++) { /* 5 s */
                        if (can_connect(port)) {
                                g.httpd = pid;
                                g.port = port;
                                return 0;
                        }
                        if (waitpid(pid, &st, WNOHANG) == pid)
                                break; /* it could not bind: another port */
                        msleep(10);
                }
                if (waitpid(pid, &st, WNOHANG) == 0) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &st, 0);
                }
        }
        return -1;
}

static int group_setup(void **state)
{
        (void)state;
        signal(SIGPIPE, SIG_IGN);
        snprintf(g.root, sizeof(g.root), "/tmp/tasman-imgcache.XXXXXX");
        if (!mkdtemp(g.root)) {
                fprintf(stderr, "# cannot create a temp directory: %s\n", strerror(errno));
                return -1;
        }
        snprintf(g.www, sizeof(g.www), "%s/www", g.root);
        if (mkdir(g.www, 0755) < 0)
                return -1;
        if (httpd_start() < 0) {
                fprintf(stderr, "# FAIL: cannot start busybox httpd on 127.0.0.1 (is "
                                "busybox-static installed?)\n");
                printf("not ok - busybox httpd did not start\n");
                return -1;
        }
        if (srv_start() < 0) {
                fprintf(stderr, "# FAIL: cannot start the test HTTP server\n");
                return -1;
        }
        return 0;
}

static int group_teardown(void **state)
{
        char cmd[128];
        int st;
        (void)state;
        if (g.httpd > 0) {
                kill(g.httpd, SIGTERM);
                waitpid(g.httpd, &st, 0);
        }
        srv_stop();
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g.root);
        return system(cmd) == 0 ? 0 : -1;
}

/* ---- per test: a fresh cache directory ---- */

struct fx {
        char dir[128];
        struct imgcache *c;
};

static int setup(void **state)
{
        static int n;
        struct fx *f = calloc(1, sizeof(*f));
        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "%s/cache%d", g.root, ++n);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fx *f = *state;
        imgcache_free(f->c);
        free(f);
        return 0;
}

static void open_cache(struct fx *f, struct imgcache_opts o)
{
        o.dir = f->dir;
        imgcache_free(f->c);
        f->c = NULL;
        assert_int_equal(imgcache_new(&o, &f->c), 0);
}

static const struct imgcache_opts defaults;

static void url_file(char *out, size_t n, const char *name)
{
        snprintf(out, n, "file://%s/%s", g.www, name);
}

static void url_httpd(char *out, size_t n, const char *name)
{
        snprintf(out, n, "http://127.0.0.1:%d/%s", g.port, name);
}

static void url_srv(char *out, size_t n, const char *path)
{
        snprintf(out, n, "http://127.0.0.1:%d%s", srv.port, path);
}

/* Starts a fetch and waits for it: the result of the get after it. */
static int fetch_wait(struct fx *f, const char *url, const char *sha, char *path, size_t path_len,
                      char *err, size_t err_len)
{
        int r = imgcache_get(f->c, url, sha, path, path_len, err, err_len);
        if (r != -EINPROGRESS)
                return r;
        assert_int_equal(imgcache_wait_idle(f->c, WAIT_MS), 0);
        return imgcache_get(f->c, url, sha, path, path_len, err, err_len);
}

/* The names in the cache directory, sorted, joined with spaces. */
static void dir_list(const char *dir, char *out, size_t n)
{
        struct dirent **names = NULL;
        int k = scandir(dir, &names, NULL, alphasort);
        size_t used = 0;
        assert_true(k >= 0);
        out[0] = '\0';
        for (int i = 0; i < k; i++) {
                const char *s = names[i]->d_name;
                if (strcmp(s, ".") != 0 && strcmp(s, "..") != 0)
                        used += (size_t)snprintf(out + used, n - used, "%s%s", used ? " " : "", s);
                free(names[i]);
                assert_true(used < n);
        }
        free(names);
}

static bool in_dir(const char *dir, const char *name)
{
        char p[512];
        struct stat st;
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        return lstat(p, &st) == 0;
}

static int count_words(const char *s)
{
        int n = 0;
        for (; *s; s++)
                n += *s != ' ' && (s[1] == ' ' || s[1] == '\0');
        return n;
}

static size_t count_parts(const char *dir)
{
        DIR *d = opendir(dir);
        struct dirent *de;
        size_t n = 0;
        assert_non_null(d);
        while ((de = readdir(d)))
                n += strstr(de->d_name, ".part") != NULL;
        closedir(d);
        return n;
}

static off_t file_size(const char *path)
{
        struct stat st;
        return stat(path, &st) == 0 ? st.st_size : -1;
}

/* ---- the tests ---- */

static void test_file_fetch(void **state)
{
        struct fx *f = *state;
        char url[512], src[256], sha[65], SHA[65], path[256], want[256], got[65], err[512];

        snprintf(src, sizeof(src), "%s/a.img", g.www);
        pat_write(src, 1, 100000);
        pat_sha(1, 100000, sha);
        url_file(url, sizeof(url), "a.img");
        open_cache(f, defaults);

        memset(path, 'Z', sizeof(path));
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)),
                         -EINPROGRESS);
        assert_int_equal(path[0], 'Z'); /* written only on 0 */
        assert_int_equal(imgcache_wait_idle(f->c, WAIT_MS), 0);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        snprintf(want, sizeof(want), "%s/%s", f->dir, sha);
        assert_string_equal(path, want);
        assert_int_equal(file_size(path), 100000);
        file_sha(path, got);
        assert_string_equal(got, sha);
        assert_int_equal(imgcache_fetch_count(f->c), 1);

        /* again, in upper case, and through another URL: no new fetch */
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        memcpy(SHA, sha, sizeof(SHA));
        upper(SHA);
        assert_int_equal(imgcache_get(f->c, url, SHA, path, sizeof(path), err, sizeof(err)), 0);
        assert_string_equal(path, want);
        url_httpd(url, sizeof(url), "not-there.img");
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        assert_int_equal(imgcache_fetch_count(f->c), 1);

        /* a new cache on the same directory finds it there */
        open_cache(f, defaults);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        assert_int_equal(imgcache_fetch_count(f->c), 0);

        /* the path buffer: exactly enough, one byte short */
        assert_int_equal(imgcache_get(f->c, url, sha, path, strlen(want) + 1, err, sizeof(err)),
                         0);
        assert_int_equal(imgcache_get(f->c, url, sha, path, strlen(want), err, sizeof(err)),
                         -ENAMETOOLONG);
        assert_non_null(strstr(err, "path buffer too small"));
        assert_int_equal(imgcache_get(f->c, url, sha, NULL, 0, NULL, 0), -ENAMETOOLONG);
        unlink(src);
}

static void test_checksum_mismatch(void **state)
{
        struct fx *f = *state;
        char url[512], src[256], sha[65], actual[65], path[256], err[512], want[600], ls[256];

        snprintf(src, sizeof(src), "%s/b.img", g.www);
        pat_write(src, 2, 5000);
        pat_sha(3, 5000, sha); /* the sha of other bytes */
        pat_sha(2, 5000, actual);
        url_file(url, sizeof(url), "b.img");
        open_cache(f, defaults);

        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -EBADMSG);
        snprintf(want, sizeof(want), "image %s: checksum mismatch (got %.16s...)", url, actual);
        assert_string_equal(err, want);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, ""); /* neither the final name nor .part */
        assert_int_equal(imgcache_fetch_count(f->c), 1);

        /* err is cut to err_len, always terminated */
        memset(err, 'Z', sizeof(err));
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, 8), -EBADMSG);
        assert_string_equal(err, "image f");
        assert_int_equal(err[8], 'Z');
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), NULL, 0), -EBADMSG);
        unlink(src);
}

static void test_missing(void **state)
{
        struct fx *f = *state;
        char url[512], sha[65], path[256], err[1024], want[1024], ls[256];

        pat_sha(4, 10, sha);
        open_cache(f, defaults);

        url_file(url, sizeof(url), "nope.img");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ENOENT);
        snprintf(want, sizeof(want), "image %s: cannot read %s/nope.img: No such file or directory",
                 url, g.www);
        assert_string_equal(err, want);

        open_cache(f, defaults); /* forgets the failure */
        url_httpd(url, sizeof(url), "nope.img");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ENOENT);
        snprintf(want, sizeof(want), "image %s: HTTP 404", url);
        assert_string_equal(err, want);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, "");
}

static void test_bad_input(void **state)
{
        struct fx *f = *state;
        char sha[65], path[256], err[256], long_url[IMGCACHE_URL_MAX + 16];
        static const struct {
                const char *url, *why;
        } bad_urls[] = {
                { "ftp://127.0.0.1/x.img", "image ftp://127.0.0.1/x.img: unsupported URL scheme" },
                { "gopher://127.0.0.1/x", "image gopher://127.0.0.1/x: unsupported URL scheme" },
                { "FTP://127.0.0.1/x.img", "image FTP://127.0.0.1/x.img: unsupported URL scheme" },
                { "sftp://h/x", "image sftp://h/x: unsupported URL scheme" },
                { "nosuch://h/x", "image nosuch://h/x: unsupported URL scheme" },
                { "", "image : empty URL" },
                { NULL, "image (null): empty URL" },
                { "x.img", NULL },
                { "http://", NULL },
                { "http://h/a b.img", "image http://h/a b.img: malformed URL (blank or control "
                                      "character)" },
                { "http://h/a\n.img", "image http://h/a?.img: malformed URL (blank or control "
                                      "character)" },
                { "file://otherhost/x.img", NULL },
        };
        static const char *const bad_shas[] = {
                "",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",   /* 63 */
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0", /* 65 */
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde ",
                " 123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        };

        pat_sha(5, 10, sha);
        open_cache(f, defaults);
        for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
                err[0] = '\0';
                assert_int_equal(imgcache_get(f->c, bad_urls[i].url, sha, path, sizeof(path), err,
                                              sizeof(err)),
                                 -EINVAL);
                if (bad_urls[i].why)
                        assert_string_equal(err, bad_urls[i].why);
                else
                        assert_non_null(strstr(err, ": malformed URL ("));
        }
        /* URL length: 2048 bytes is the limit */
        memset(long_url, 'a', sizeof(long_url));
        memcpy(long_url, "http://h/", 9);
        long_url[IMGCACHE_URL_MAX + 1] = '\0';
        assert_int_equal(imgcache_get(f->c, long_url, sha, path, sizeof(path), err, sizeof(err)),
                         -EINVAL);
        assert_non_null(strstr(err, ": URL longer than 2048 bytes"));
        assert_true(strlen(err) < 200);

        for (size_t i = 0; i < sizeof(bad_shas) / sizeof(bad_shas[0]); i++) {
                assert_int_equal(imgcache_get(f->c, "http://h/x.img", bad_shas[i], path,
                                              sizeof(path), err, sizeof(err)),
                                 -EINVAL);
                assert_string_equal(err, "image http://h/x.img: malformed sha256 (want 64 hex "
                                         "characters)");
        }
        assert_int_equal(imgcache_get(f->c, "http://h/x.img", NULL, path, sizeof(path), err,
                                      sizeof(err)),
                         -EINVAL);

        assert_int_equal(imgcache_wait_idle(f->c, 0), 0);
        assert_int_equal(imgcache_fetch_count(f->c), 0);

        /* bad options */
        {
                struct imgcache *c = NULL;
                struct imgcache_opts o = { .dir = f->dir, .max_parallel = -1 };
                assert_int_equal(imgcache_new(&o, &c), -EINVAL);
                o = (struct imgcache_opts){ .dir = f->dir, .max_parallel = 65 };
                assert_int_equal(imgcache_new(&o, &c), -EINVAL);
                o = (struct imgcache_opts){ .dir = f->dir, .retry_ms = -1 };
                assert_int_equal(imgcache_new(&o, &c), -EINVAL);
                o = (struct imgcache_opts){ .dir = "" };
                assert_int_equal(imgcache_new(&o, &c), -EINVAL);
                assert_int_equal(imgcache_new(NULL, &c), -EINVAL);
                o = (struct imgcache_opts){ .dir = "/proc/version/cache" };
                assert_int_equal(imgcache_new(&o, &c), -ENOTDIR);
                assert_null(c);
        }
        imgcache_free(NULL);
}

static void test_http_big(void **state)
{
        struct fx *f = *state;
        const size_t size = 20u << 20;
        char url[512], src[256], sha[65], got[65], path[256], err[512];

        snprintf(src, sizeof(src), "%s/big.img", g.www);
        pat_write(src, 6, size);
        pat_sha(6, size, sha);
        url_httpd(url, sizeof(url), "big.img");
        open_cache(f, defaults);

        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        assert_int_equal(file_size(path), (off_t)size);
        file_sha(path, got);
        assert_string_equal(got, sha);
        assert_int_equal(imgcache_fetch_count(f->c), 1);
        assert_int_equal(count_parts(f->dir), 0);
        unlink(src);
}

struct racer {
        struct fx *f;
        pthread_barrier_t *start;
        const char *url, *sha;
        int first, after;
        char path[256];
};

static void *racer_main(void *arg)
{
        struct racer *r = arg;
        char err[256];
        pthread_barrier_wait(r->start);
        r->first = imgcache_get(r->f->c, r->url, r->sha, r->path, sizeof(r->path), err,
                                sizeof(err));
        if (imgcache_wait_idle(r->f->c, WAIT_MS) == 0)
                r->after = imgcache_get(r->f->c, r->url, r->sha, r->path, sizeof(r->path), err,
                                        sizeof(err));
        else
                r->after = -ETIMEDOUT;
        return NULL;
}

static void test_single_flight(void **state)
{
        struct fx *f = *state;
        enum { N = 8 };
        const size_t size = 2u << 20;
        pthread_barrier_t start;
        pthread_t t[N];
        struct racer r[N];
        char url[256], sha[65], want[256];
        int before, in_progress = 0;

        pat_sha(7, size, sha);
        url_srv(url, sizeof(url), "/slow/7/2097152/65536/5"); /* about 160 ms */
        open_cache(f, defaults);
        before = atomic_load(&srv.requests);
        pthread_barrier_init(&start, NULL, N);
        for (int i = 0; i < N; i++) {
                r[i] = (struct racer){ .f = f, .start = &start, .url = url, .sha = sha };
                assert_int_equal(pthread_create(&t[i], NULL, racer_main, &r[i]), 0);
        }
        for (int i = 0; i < N; i++)
                pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);

        snprintf(want, sizeof(want), "%s/%s", f->dir, sha);
        for (int i = 0; i < N; i++) {
                assert_true(r[i].first == -EINPROGRESS || r[i].first == 0);
                in_progress += r[i].first == -EINPROGRESS;
                assert_int_equal(r[i].after, 0);
                assert_string_equal(r[i].path, want);
        }
        assert_true(in_progress >= 1);
        assert_int_equal(imgcache_fetch_count(f->c), 1);
        assert_int_equal(atomic_load(&srv.requests) - before, 1);
}

static void test_parallel_limit(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .max_parallel = 2 };
        enum { N = 5 };
        char url[N][256], sha[N][65], path[256], err[256];
        size_t most = 0;
        int64_t until;

        open_cache(f, o);
        for (int i = 0; i < N; i++) {
                char p[128];
                snprintf(p, sizeof(p), "/slow/%d/262144/16384/15", 10 + i); /* ~240 ms each */
                url_srv(url[i], sizeof(url[i]), p);
                pat_sha(10 + (unsigned)i, 262144, sha[i]);
                assert_int_equal(imgcache_get(f->c, url[i], sha[i], path, sizeof(path), err,
                                              sizeof(err)),
                                 -EINPROGRESS);
        }
        /* never more than 2 downloads (.part files) at once */
        until = util_mono_ms() + WAIT_MS;
        while (imgcache_wait_idle(f->c, 5) == -ETIMEDOUT) {
                size_t k = count_parts(f->dir);
                most = k > most ? k : most;
                assert_true(util_mono_ms() < until);
        }
        assert_true(most <= 2);
        for (int i = 0; i < N; i++)
                assert_int_equal(imgcache_get(f->c, url[i], sha[i], path, sizeof(path), err,
                                              sizeof(err)),
                                 0);
        assert_int_equal(imgcache_fetch_count(f->c), N);
}

static void test_max_bytes(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .max_bytes = 4096 };
        char url[512], src[256], sha[65], path[256], err[512], want[600], ls[256];

        snprintf(src, sizeof(src), "%s/c.img", g.www);
        pat_write(src, 8, 10000);
        pat_sha(8, 10000, sha);
        open_cache(f, o);

        /* file://, busybox (with a length), and a server that sends none */
        url_file(url, sizeof(url), "c.img");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -EFBIG);
        snprintf(want, sizeof(want), "image %s: larger than 4096 bytes", url);
        assert_string_equal(err, want);

        open_cache(f, o);
        url_httpd(url, sizeof(url), "c.img");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -EFBIG);
        snprintf(want, sizeof(want), "image %s: larger than 4096 bytes", url);
        assert_string_equal(err, want);

        open_cache(f, o);
        url_srv(url, sizeof(url), "/nolen/8/10000/1000/0");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -EFBIG);
        snprintf(want, sizeof(want), "image %s: larger than 4096 bytes", url);
        assert_string_equal(err, want);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, "");

        /* exactly the limit is fine, with a length or without */
        pat_sha(9, 4096, sha);
        url_srv(url, sizeof(url), "/nolen/9/4096/1000/0");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, sha);
        unlink(src);
}

static void test_stale_part(void **state)
{
        struct fx *f = *state;
        char sha[65], SHA[65], p[512], ls[512], want[512];

        pat_sha(11, 10, sha);
        memcpy(SHA, sha, sizeof(SHA));
        upper(SHA);
        assert_int_equal(mkdir(f->dir, 0750), 0);
        snprintf(p, sizeof(p), "%s/%s.part", f->dir, sha);
        pat_write(p, 11, 5);
        snprintf(p, sizeof(p), "%s/%s.part", f->dir, SHA); /* not a name of ours */
        pat_write(p, 11, 5);
        snprintf(p, sizeof(p), "%s/notes.part", f->dir);
        pat_write(p, 11, 5);
        snprintf(p, sizeof(p), "%s/README", f->dir);
        pat_write(p, 11, 5);

        open_cache(f, defaults);
        dir_list(f->dir, ls, sizeof(ls));
        snprintf(want, sizeof(want), "%s.part README notes.part", SHA);
        assert_string_equal(ls, want);
}

static void test_retry(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .retry_ms = 1000 };
        char url[512], src[256], sha[65], path[256], err[512];
        int64_t failed_at;

        snprintf(src, sizeof(src), "%s/late.img", g.www);
        unlink(src);
        pat_sha(12, 3000, sha);
        url_file(url, sizeof(url), "late.img");
        open_cache(f, o);

        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ENOENT);
        failed_at = util_mono_ms();
        assert_int_equal(imgcache_fetch_count(f->c), 1);

        /* the file is there now, but the failure stands until retry_ms */
        pat_write(src, 12, 3000);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)),
                         -ENOENT);
        assert_int_equal(imgcache_wait_idle(f->c, 0), 0);
        assert_int_equal(imgcache_fetch_count(f->c), 1);
        if (util_mono_ms() - failed_at >= 1000)
                fail_msg("the test was too slow to check the retry delay");

        msleep(1100);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)),
                         -EINPROGRESS);
        assert_int_equal(imgcache_wait_idle(f->c, WAIT_MS), 0);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
        assert_int_equal(imgcache_fetch_count(f->c), 2);
        unlink(src);
}

static void test_prune(void **state)
{
        struct fx *f = *state;
        char a[65], b[65], c[65], A[65], up[65], fetching[65], p[512], ls[1024], want[1024];
        char url[256], path[256], err[256];
        const char *keep[2];
        const char *bad_keep[2];

        pat_sha(13, 1, a);
        pat_sha(14, 1, b);
        pat_sha(15, 1, c);
        pat_sha(16, 1, up);
        pat_sha(17, 1, fetching);
        memcpy(A, a, sizeof(A));
        upper(A);
        upper(up);
        open_cache(f, defaults);

        /* images (placed by hand: a file under its name is taken as verified) */
        snprintf(p, sizeof(p), "%s/%s", f->dir, a);
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%s", f->dir, b);
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%s", f->dir, c);
        pat_write(p, 0, 10);
        /* and what is not ours */
        snprintf(p, sizeof(p), "%s/README", f->dir);
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%s", f->dir, up); /* upper case */
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%.63s", f->dir, c); /* 63 chars */
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%sx", f->dir, c); /* 65 chars */
        pat_write(p, 0, 10);
        snprintf(p, sizeof(p), "%s/%.60s0000", f->dir, b); /* a directory */
        assert_int_equal(mkdir(p, 0750), 0);
        snprintf(p, sizeof(p), "%s/%.60s1111", f->dir, b); /* a symlink */
        assert_int_equal(symlink("README", p), 0);

        /* an image being fetched (its file put there meanwhile) stays */
        url_srv(url, sizeof(url), "/stall/17/1000000");
        assert_int_equal(imgcache_get(f->c, url, fetching, path, sizeof(path), err, sizeof(err)),
                         -EINPROGRESS);
        snprintf(p, sizeof(p), "%s/%s", f->dir, fetching);
        pat_write(p, 0, 10);

        /* a bad keep entry: nothing removed */
        bad_keep[0] = A;
        bad_keep[1] = "nope";
        assert_int_equal(imgcache_prune(f->c, bad_keep, 2), -EINVAL);
        assert_int_equal(imgcache_prune(f->c, NULL, 1), -EINVAL);

        keep[0] = A; /* any case */
        keep[1] = A;
        assert_int_equal(imgcache_prune(f->c, keep, 2), 2);
        assert_int_equal(file_size(p), 10);
        assert_int_equal(imgcache_prune(f->c, keep, 2), 0);

        /* the fetch cancelled, its image goes too, and a without keep */
        imgcache_free(f->c);
        f->c = NULL;
        open_cache(f, defaults);
        assert_int_equal(imgcache_prune(f->c, NULL, 0), 2);
        snprintf(want, sizeof(want), "%.60s0000", b);
        assert_true(in_dir(f->dir, want));
        snprintf(want, sizeof(want), "%.60s1111", b);
        assert_true(in_dir(f->dir, want));
        assert_true(in_dir(f->dir, up));
        snprintf(want, sizeof(want), "%.63s", c);
        assert_true(in_dir(f->dir, want));
        snprintf(want, sizeof(want), "%sx", c);
        assert_true(in_dir(f->dir, want));
        assert_true(in_dir(f->dir, "README"));
        dir_list(f->dir, ls, sizeof(ls));
        assert_int_equal(count_words(ls), 6);
}

/* imgcache_free with a download in flight: prompt, nothing left. */
static void free_during(struct fx *f, const char *route, bool wait_for_bytes)
{
        char url[256], sha[65], part[512], path[256], err[256], ls[256];
        int64_t t0, until;

        pat_sha(18, 100u << 20, sha);
        url_srv(url, sizeof(url), route);
        open_cache(f, defaults);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)),
                         -EINPROGRESS);
        snprintf(part, sizeof(part), "%s/%s.part", f->dir, sha);
        until = util_mono_ms() + 10000;
        /* until the download is under way (has bytes, or at least a file) */
        while (wait_for_bytes ? file_size(part) < 65536 : file_size(part) < 0) {
                assert_true(util_mono_ms() < until);
                msleep(5);
        }
        msleep(100); /* well into the stall */
        assert_int_equal(imgcache_wait_idle(f->c, 0), -ETIMEDOUT);

        t0 = util_mono_ms();
        imgcache_free(f->c);
        f->c = NULL;
        assert_true(util_mono_ms() - t0 < 3000);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, "");
}

static void test_free_stalled(void **state)
{
        free_during(*state, "/stall/18/104857600", true);
}

static void test_free_silent(void **state)
{
        free_during(*state, "/silent", false);
}

/* free drops what waits in the queue, too */
static void test_free_queued(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .max_parallel = 1 };
        char url[256], sha[65], path[256], err[256], ls[256];
        int64_t t0;

        open_cache(f, o);
        for (int i = 0; i < 4; i++) {
                pat_sha(30 + (unsigned)i, 1000, sha);
                url_srv(url, sizeof(url), "/silent");
                assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err,
                                              sizeof(err)),
                                 -EINPROGRESS);
        }
        msleep(100);
        assert_int_equal(imgcache_fetch_count(f->c), 1);
        t0 = util_mono_ms();
        imgcache_free(f->c);
        f->c = NULL;
        assert_true(util_mono_ms() - t0 < 3000);
        dir_list(f->dir, ls, sizeof(ls));
        assert_string_equal(ls, "");
}

static void test_not_regular(void **state)
{
        struct fx *f = *state;
        char url[512], fifo[256], sha[65], path[256], err[1024], want[1024];

        snprintf(fifo, sizeof(fifo), "%s/pipe.img", g.www);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        pat_sha(19, 10, sha);
        open_cache(f, defaults);

        url_file(url, sizeof(url), "pipe.img");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ENOTSUP);
        snprintf(want, sizeof(want), "image %s: %s is not a regular file", url, fifo);
        assert_string_equal(err, want);

        open_cache(f, defaults);
        snprintf(url, sizeof(url), "file://%s", g.www);
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ENOTSUP);
        assert_int_equal(count_parts(f->dir), 0);
        unlink(fifo);
}

static void test_redirects(void **state)
{
        struct fx *f = *state;
        char url[256], sha[65], path[256], err[512], want[512];

        open_cache(f, defaults);
        pat_sha(20, 50000, sha);
        url_srv(url, sizeof(url), "/to-slow/20/50000");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), 0);

        pat_sha(21, 10, sha);
        url_srv(url, sizeof(url), "/to-ftp");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)),
                         -EPROTONOSUPPORT);
        snprintf(want, sizeof(want), "image %s: unsupported URL scheme", url);
        assert_memory_equal(err, want, strlen(want));

        pat_sha(22, 10, sha);
        url_srv(url, sizeof(url), "/loop/0");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)), -ELOOP);
        snprintf(want, sizeof(want), "image %s: ", url);
        assert_memory_equal(err, want, strlen(want));
        assert_int_equal(count_parts(f->dir), 0);
}

static void test_low_speed(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .low_speed_secs = 1 };
        char url[256], sha[65], path[256], err[512], want[512];
        int64_t t0 = util_mono_ms();

        pat_sha(23, 10, sha);
        open_cache(f, o);
        url_srv(url, sizeof(url), "/silent");
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)),
                         -ETIMEDOUT);
        assert_true(util_mono_ms() - t0 < 10000);
        snprintf(want, sizeof(want), "image %s: ", url);
        assert_memory_equal(err, want, strlen(want));
        assert_int_equal(count_parts(f->dir), 0);
}

static void test_refused(void **state)
{
        struct fx *f = *state;
        char url[256], sha[65], path[256], err[512];
        int port = 0;

        for (int p = 31000; p < 32000 && !port; p++)
                if (port_free(p))
                        port = p;
        assert_true(port > 0);
        pat_sha(24, 10, sha);
        open_cache(f, defaults);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/x.img", port);
        assert_int_equal(fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err)),
                         -ECONNREFUSED);
}

/* stderr into a file while fn runs; its text into out. */
static void capture_stderr(const char *file, void (*fn)(struct fx *), struct fx *f, char *out,
                           size_t n)
{
        int saved, fd;
        ssize_t k;
        fflush(stderr);
        saved = dup(2);
        fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        assert_true(saved >= 0 && fd >= 0);
        dup2(fd, 2);
        close(fd);
        fn(f);
        fflush(stderr);
        dup2(saved, 2);
        close(saved);
        fd = open(file, O_RDONLY | O_CLOEXEC);
        assert_true(fd >= 0);
        k = read(fd, out, n - 1);
        close(fd);
        assert_true(k > 0);
        out[k] = '\0';
        fputs(out, stderr); /* keep it in the test log */
}

static void progress_run(struct fx *f)
{
        char url[256], sha[65], path[256], err[256];
        pat_sha(25, 262144, sha);
        url_srv(url, sizeof(url), "/slow/25/262144/16384/50"); /* 16 chunks, ~0.8 s */
        (void)fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err));
        pat_sha(26, 262144, sha);
        url_srv(url, sizeof(url), "/nolen/26/262144/16384/50");
        (void)fetch_wait(f, url, sha, path, sizeof(path), err, sizeof(err));
}

/* How many lines of log start (after the log prefix) with "image SHA12: "
 * and contain need, but not avoid (NULL: no condition). */
static int count_lines(const char *log, const char *sha, const char *need, const char *avoid)
{
        char head[32];
        int n = 0;
        snprintf(head, sizeof(head), "image %.12s: ", sha);
        for (const char *p = log; *p;) {
                const char *eol = strchr(p, '\n');
                size_t len = eol ? (size_t)(eol - p) : strlen(p);
                char line[1024];
                snprintf(line, sizeof(line), "%.*s", (int)len, p);
                n += strstr(line, head) && (!need || strstr(line, need)) &&
                     (!avoid || !strstr(line, avoid));
                p += len + (eol != NULL);
        }
        return n;
}

static void test_progress_log(void **state)
{
        struct fx *f = *state;
        struct imgcache_opts o = { .progress_ms = 100 };
        char file[256], log[32768], sha[65], want[512], path[256], err[256], url[256];

        open_cache(f, o);
        snprintf(file, sizeof(file), "%s/stderr.log", g.root);
        capture_stderr(file, progress_run, f, log, sizeof(log));

        /* start, progress with percent (the length is known), end */
        pat_sha(25, 262144, sha);
        url_srv(url, sizeof(url), "/slow/25/262144/16384/50");
        snprintf(want, sizeof(want), "image %.12s: fetching %s", sha, url);
        assert_int_equal(count_lines(log, sha, want, NULL), 1);
        assert_true(count_lines(log, sha, " of 256.0 KiB), ", NULL) >= 2);
        assert_int_equal(count_lines(log, sha, "fetched 256.0 KiB (262144 bytes) in ", NULL), 1);
        assert_int_equal(count_lines(log, sha, " s, sha256 verified", NULL), 1);

        /* without a length: bytes and rate, no percent */
        pat_sha(26, 262144, sha);
        url_srv(url, sizeof(url), "/nolen/26/262144/16384/50");
        assert_true(count_lines(log, sha, "/s", "%") >= 2);
        assert_int_equal(count_lines(log, sha, "%", NULL), 0);
        assert_int_equal(count_lines(log, sha, " s, sha256 verified", NULL), 1);
        assert_int_equal(imgcache_get(f->c, url, sha, path, sizeof(path), err, sizeof(err)), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_file_fetch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_checksum_mismatch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_missing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
                cmocka_unit_test_setup_teardown(test_http_big, setup, teardown),
                cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
                cmocka_unit_test_setup_teardown(test_parallel_limit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_max_bytes, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stale_part, setup, teardown),
                cmocka_unit_test_setup_teardown(test_retry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_stalled, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_silent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_free_queued, setup, teardown),
                cmocka_unit_test_setup_teardown(test_not_regular, setup, teardown),
                cmocka_unit_test_setup_teardown(test_redirects, setup, teardown),
                cmocka_unit_test_setup_teardown(test_low_speed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_progress_log, setup, teardown),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
