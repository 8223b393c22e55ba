#include "imgcache.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define DEFAULT_MAX_BYTES      (64ULL << 30)
#define DEFAULT_MAX_PARALLEL   2
#define MAX_PARALLEL           64
#define DEFAULT_RETRY_MS       60000
#define DEFAULT_LOW_SPEED_SECS 60
#define DEFAULT_PROGRESS_MS    5000
#define LOW_SPEED_BYTES        1024L
#define CONNECT_TIMEOUT_SECS   30L
#define MAX_REDIRS             5L
#define SHA_LEN                IMGCACHE_SHA256_HEX
#define PART_SUFFIX            ".part"
/* "image " URL ": " and a reason of our own (a path and strerror at most). */
#define REASON_MAX (IMGCACHE_URL_MAX + PATH_MAX + 256)
#define DIR_MAX    (PATH_MAX - SHA_LEN - sizeof(PART_SUFFIX) - 2)

/* ---- the table ---- */

enum ent_state {
        ENT_FREE,
        ENT_QUEUED,  /* waiting for a worker */
        ENT_RUNNING, /* a worker is fetching it */
        ENT_FAILED,  /* the last fetch failed at at_ms */
};

/* An image that is being fetched or whose last fetch failed. An image
 * that is ready has no entry: it is the file under its final name. */
struct entry {
        enum ent_state state;
        char sha[SHA_LEN + 1];
        char *url;      /* QUEUED, RUNNING: what to fetch (owned) */
        char *reason;   /* FAILED: "image URL: why" (owned; NULL if out of memory) */
        int err;        /* FAILED: negative errno */
        int64_t at_ms;  /* FAILED: when (monotonic) */
        uint64_t seq;   /* QUEUED: first come, first served */
};

enum worker_state { W_FREE, W_RUNNING, W_DONE };

struct worker {
        struct imgcache *c;
        pthread_t thread;
        enum worker_state state; /* under c->lock */
};

struct imgcache {
        char *dir; /* without trailing slash */
        size_t dir_len;
        int dfd;
        uint64_t max_bytes;
        int max_parallel, retry_ms, low_speed_secs, progress_ms;
        atomic_bool stopping; /* read by the transfer callbacks */

        pthread_mutex_t lock; /* everything below */
        pthread_cond_t idle;  /* signalled when n_busy drops to 0 */
        struct entry ent[IMGCACHE_MAX_ENTRIES];
        size_t n_busy; /* QUEUED + RUNNING */
        uint64_t next_seq;
        uint64_t fetches;
        int n_alive; /* workers in W_RUNNING */
        struct worker *workers; /* max_parallel of them */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
        curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ---- */

static void set_err(char *err, size_t err_len, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_len, const char *fmt, ...)
{
        va_list ap;
        if (!err || err_len == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
}

/* sha256 (any case) into out, lowercase; -EINVAL unless 64 hex chars. */
static int sha_normalize(const char *sha, char out[static SHA_LEN + 1])
{
        if (!sha)
                return -EINVAL;
        for (size_t i = 0; i < SHA_LEN; i++) {
                char ch = sha[i];
                if (ch >= 'A' && ch <= 'F')
                        ch = (char)(ch - 'A' + 'a');
                if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
                        return -EINVAL; /* also the NUL of a short one */
                out[i] = ch;
        }
        if (sha[SHA_LEN] != '\0')
                return -EINVAL;
        out[SHA_LEN] = '\0';
        return 0;
}

/* A name the cache gives a final file: 64 lowercase hex chars. */
static bool is_image_name(const char *name)
{
        size_t i;
        for (i = 0; i < SHA_LEN; i++) {
                if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
                        return false;
        }
        return name[i] == '\0';
}

/* A URL as it may appear in a one-line message: control characters
 * replaced, an overlong one cut. */
static void url_for_msg(const char *url, char *out, size_t n)
{
        size_t i = 0;
        if (!url) {
                snprintf(out, n, "(null)");
                return;
        }
        for (; url[i] && i + 4 < n && i < IMGCACHE_URL_MAX; i++)
                out[i] = ((unsigned char)url[i] < 0x20 || url[i] == 0x7f) ? '?' : url[i];
        if (url[i]) {
                /* cut: mark it (n is at least 8 here) */
                if (i + 4 > n)
                        i = n - 4;
                memcpy(out + i, "...", 3);
                i += 3;
        }
        out[i] = '\0';
}

static void fmt_size(double bytes, char out[static 32])
{
        if (bytes < 1024)
                snprintf(out, 32, "%.0f B", bytes);
        else if (bytes < 1024.0 * 1024)
                snprintf(out, 32, "%.1f KiB", bytes / 1024);
        else if (bytes < 1024.0 * 1024 * 1024)
                snprintf(out, 32, "%.1f MiB", bytes / (1024.0 * 1024));
        else
                snprintf(out, 32, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
}

enum scheme { SCHEME_FILE, SCHEME_HTTP, SCHEME_HTTPS };

/* Parses url with curl's URL parser. 0 with the scheme (and, for file://,
 * the decoded local path, malloc'd, if ret_path is not NULL); -EINVAL for a
 * malformed URL, -EPROTONOSUPPORT for a scheme other than ours; why says
 * which. */
static int url_parse(const char *url, enum scheme *ret_scheme, char **ret_path, char *why,
                     size_t why_len)
{
        CURLU *u;
        CURLUcode uc;
        char *scheme = NULL, *path = NULL;
        size_t len = 0;
        int r;

        if (!url || !*url) {
                snprintf(why, why_len, "empty URL");
                return -EINVAL;
        }
        for (len = 0; url[len] && len <= IMGCACHE_URL_MAX; len++) {
                if ((unsigned char)url[len] <= 0x20 || url[len] == 0x7f) {
                        snprintf(why, why_len, "malformed URL (blank or control character)");
                        return -EINVAL;
                }
        }
        if (len > IMGCACHE_URL_MAX) {
                snprintf(why, why_len, "URL longer than %d bytes", IMGCACHE_URL_MAX);
                return -EINVAL;
        }
        u = curl_url();
        if (!u)
                return -ENOMEM;
        uc = curl_url_set(u, CURLUPART_URL, url, 0);
        if (uc == CURLUE_UNSUPPORTED_SCHEME) {
                snprintf(why, why_len, "unsupported URL scheme");
                r = -EPROTONOSUPPORT;
                goto out;
        }
        if (uc == CURLUE_OK)
                uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        if (uc != CURLUE_OK) {
                snprintf(why, why_len, "malformed URL (%s)", curl_url_strerror(uc));
                r = uc == CURLUE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
                goto out;
        }
        if (strcmp(scheme, "file") == 0)
                *ret_scheme = SCHEME_FILE;
        else if (strcmp(scheme, "http") == 0)
                *ret_scheme = SCHEME_HTTP;
        else if (strcmp(scheme, "https") == 0)
                *ret_scheme = SCHEME_HTTPS;
        else {
                snprintf(why, why_len, "unsupported URL scheme");
                r = -EPROTONOSUPPORT;
                goto out;
        }
        if (*ret_scheme == SCHEME_FILE && ret_path) {
                uc = curl_url_get(u, CURLUPART_PATH, &path, CURLU_URLDECODE);
                if (uc != CURLUE_OK) {
                        snprintf(why, why_len, "malformed URL (%s)", curl_url_strerror(uc));
                        r = uc == CURLUE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
                        goto out;
                }
                *ret_path = strdup(path);
                if (!*ret_path) {
                        r = -ENOMEM;
                        goto out;
                }
        }
        r = 0;
out:
        curl_free(path);
        curl_free(scheme);
        curl_url_cleanup(u);
        return r;
}

/* ---- the download, on a worker thread, without the lock ---- */

struct dl {
        struct imgcache *c;
        const char *sha;
        int fd;
        EVP_MD_CTX *md;
        uint64_t bytes;
        int64_t start_ms, last_log_ms;
        bool cancelled, too_big;
        int write_err; /* negative errno of a local write, or 0 */
};

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
        struct dl *d = userdata;
        size_t n = size * nmemb, off = 0;

        if (atomic_load(&d->c->stopping)) {
                d->cancelled = true;
                return 0;
        }
        /* d->bytes <= max_bytes always: servers may not send a length. */
        if ((uint64_t)n > d->c->max_bytes - d->bytes) {
                d->too_big = true;
                return 0;
        }
        if (EVP_DigestUpdate(d->md, ptr, n) != 1) {
                d->write_err = -ENOMEM;
                return 0;
        }
        while (off < n) {
                ssize_t w = write(d->fd, ptr + off, n - off);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        d->write_err = -errno;
                        return 0;
                }
                off += (size_t)w;
        }
        d->bytes += n;
        return n;
}

static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
        struct dl *d = userdata;
        int64_t now;
        double secs;
        char done[32], total[32], rate[32];

        (void)ultotal;
        (void)ulnow;
        if (atomic_load(&d->c->stopping)) {
                d->cancelled = true;
                return 1;
        }
        now = util_mono_ms();
        if (now - d->last_log_ms < d->c->progress_ms)
                return 0;
        d->last_log_ms = now;
        secs = (double)(now - d->start_ms) / 1000.0;
        fmt_size((double)dlnow, done);
        fmt_size(secs > 0 ? (double)dlnow / secs : 0, rate);
        if (dltotal > 0) {
                fmt_size((double)dltotal, total);
                log_info("image %.12s: %d%% (%s of %s), %s/s", d->sha,
                         (int)((double)dlnow * 100.0 / (double)dltotal), done, total, rate);
        } else {
                log_info("image %.12s: %s, %s/s", d->sha, done, rate);
        }
        return 0;
}

/* The one place curl's codes become errno values. */
static int curl_to_errno(CURLcode cc)
{
        switch (cc) {
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EPROTONOSUPPORT;
        case CURLE_URL_MALFORMAT:
                return -EINVAL;
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
                return -EHOSTUNREACH;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_TOO_MANY_REDIRECTS:
                return -ELOOP;
        case CURLE_FILE_COULDNT_READ_FILE:
                return -ENOENT;
        case CURLE_REMOTE_ACCESS_DENIED:
                return -EACCES;
        case CURLE_FILESIZE_EXCEEDED:
                return -EFBIG;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_ABORTED_BY_CALLBACK:
                return -ECANCELED;
        case CURLE_RECV_ERROR:
        case CURLE_SEND_ERROR:
                return -ECONNRESET;
        default:
                return -EIO;
        }
}

static int http_to_errno(long code)
{
        switch (code) {
        case 404:
        case 410:
                return -ENOENT;
        case 401:
        case 403:
                return -EACCES;
        default:
                return -EIO;
        }
}

/* Why a transfer failed: a negative errno, and the reason after "image URL: ". */
static int transfer_failure(struct dl *d, CURL *h, CURLcode cc, const char *errbuf,
                            const char *part, char *why, size_t why_len)
{
        long code = 0;

        if (d->cancelled) {
                snprintf(why, why_len, "cancelled");
                return -ECANCELED;
        }
        if (d->too_big || cc == CURLE_FILESIZE_EXCEEDED) {
                snprintf(why, why_len, "larger than %llu bytes",
                         (unsigned long long)d->c->max_bytes);
                return -EFBIG;
        }
        if (d->write_err) {
                snprintf(why, why_len, "cannot write %s/%s: %s", d->c->dir, part,
                         strerror(-d->write_err));
                return d->write_err;
        }
        if (cc == CURLE_HTTP_RETURNED_ERROR) {
                curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
                snprintf(why, why_len, "HTTP %ld", code);
                return http_to_errno(code);
        }
        if (cc == CURLE_UNSUPPORTED_PROTOCOL)
                snprintf(why, why_len, "unsupported URL scheme (%s)",
                         errbuf[0] ? errbuf : curl_easy_strerror(cc));
        else
                snprintf(why, why_len, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
        return curl_to_errno(cc);
}

#define SETOPT(h, opt, val)                                                                        \
        do {                                                                                       \
                if (curl_easy_setopt(h, opt, val) != CURLE_OK) {                                   \
                        snprintf(why, why_len, "cannot set up the transfer (%s)", #opt);          \
                        return -EIO;                                                               \
                }                                                                                  \
        } while (0)

static int setup_easy(struct dl *d, CURL *h, const char *url, char *errbuf, char *why,
                      size_t why_len)
{
        SETOPT(h, CURLOPT_URL, url);
        SETOPT(h, CURLOPT_PROTOCOLS_STR, "file,http,https");
        SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
        SETOPT(h, CURLOPT_FOLLOWLOCATION, 1L);
        SETOPT(h, CURLOPT_MAXREDIRS, MAX_REDIRS);
        SETOPT(h, CURLOPT_FAILONERROR, 1L);
        SETOPT(h, CURLOPT_CONNECTTIMEOUT, CONNECT_TIMEOUT_SECS);
        SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, LOW_SPEED_BYTES);
        SETOPT(h, CURLOPT_LOW_SPEED_TIME, (long)d->c->low_speed_secs);
        SETOPT(h, CURLOPT_MAXFILESIZE_LARGE,
               (curl_off_t)(d->c->max_bytes > INT64_MAX ? INT64_MAX : d->c->max_bytes));
        SETOPT(h, CURLOPT_NOSIGNAL, 1L);
        SETOPT(h, CURLOPT_USERAGENT, "tasman-agent/" TASMAN_VERSION);
        SETOPT(h, CURLOPT_ERRORBUFFER, errbuf);
        SETOPT(h, CURLOPT_WRITEFUNCTION, on_write);
        SETOPT(h, CURLOPT_WRITEDATA, d);
        SETOPT(h, CURLOPT_XFERINFOFUNCTION, on_progress);
        SETOPT(h, CURLOPT_XFERINFODATA, d);
        SETOPT(h, CURLOPT_NOPROGRESS, 0L);
        return 0;
}

/* curl reads file:// with blocking read()s, between which nothing can
 * cancel it: a FIFO or a device could hold imgcache_free for ever. So a
 * file:// URL must name a regular file (checked here, just before). */
static int check_local_file(const char *url, char *why, size_t why_len)
{
        enum scheme s;
        char *path = NULL;
        struct stat st;
        int r = url_parse(url, &s, &path, why, why_len);
        if (r < 0 || s != SCHEME_FILE)
                goto out;
        if (stat(path, &st) < 0) {
                r = -errno;
                snprintf(why, why_len, "cannot read %s: %s", path, strerror(errno));
        } else if (!S_ISREG(st.st_mode)) {
                r = -ENOTSUP;
                snprintf(why, why_len, "%s is not a regular file", path);
        }
out:
        free(path);
        return r;
}

static int create_part(struct imgcache *c, const char *part)
{
        int fd = openat(c->dfd, part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd < 0 && errno == EEXIST) {
                /* Ours (only one fetch of a sha at a time), left by a crash
                 * of another cache on this directory: start it afresh. */
                if (unlinkat(c->dfd, part, 0) == 0 || errno == ENOENT)
                        fd = openat(c->dfd, part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        }
        return fd < 0 ? -errno : fd;
}

/* Fetches url into DIR/sha: 0, or a negative errno with the reason (after
 * "image URL: ") in why. Nothing is left under DIR/sha.part either way. */
static int fetch(struct imgcache *c, const char *url, const char *sha, char *why, size_t why_len)
{
        struct dl d = { .c = c, .sha = sha, .fd = -1 };
        char part[SHA_LEN + sizeof(PART_SUFFIX)];
        char errbuf[CURL_ERROR_SIZE] = "";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        char got[2 * EVP_MAX_MD_SIZE + 1];
        char size[32];
        CURL *h = NULL;
        CURLcode cc;
        int r;

        snprintf(part, sizeof(part), "%s" PART_SUFFIX, sha);
        d.start_ms = d.last_log_ms = util_mono_ms();
        log_info("image %.12s: fetching %s", sha, url);

        if (strncasecmp(url, "file:", 5) == 0) {
                r = check_local_file(url, why, why_len);
                if (r < 0)
                        return r;
        }
        d.fd = create_part(c, part);
        if (d.fd < 0) {
                r = d.fd;
                snprintf(why, why_len, "cannot create %s/%s: %s", c->dir, part, strerror(-r));
                return r;
        }
        d.md = EVP_MD_CTX_new();
        h = curl_easy_init();
        if (!d.md || !h || EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1) {
                r = -ENOMEM;
                snprintf(why, why_len, "cannot set up the transfer: out of memory");
                goto out;
        }
        r = setup_easy(&d, h, url, errbuf, why, why_len);
        if (r < 0)
                goto out;

        cc = curl_easy_perform(h);
        if (cc != CURLE_OK) {
                r = transfer_failure(&d, h, cc, errbuf, part, why, why_len);
                goto out;
        }
        if (fsync(d.fd) < 0) {
                r = -errno;
                snprintf(why, why_len, "cannot fsync %s/%s: %s", c->dir, part, strerror(errno));
                goto out;
        }
        r = close(d.fd);
        d.fd = -1;
        if (r < 0) {
                r = -errno;
                snprintf(why, why_len, "cannot close %s/%s: %s", c->dir, part, strerror(errno));
                goto out;
        }
        if (d.bytes > c->max_bytes) { /* cannot happen: on_write refuses */
                r = -EFBIG;
                snprintf(why, why_len, "larger than %llu bytes", (unsigned long long)c->max_bytes);
                goto out;
        }
        if (EVP_DigestFinal_ex(d.md, md, &md_len) != 1 || md_len != SHA_LEN / 2) {
                r = -EIO;
                snprintf(why, why_len, "cannot compute sha256");
                goto out;
        }
        util_hex(md, md_len, got);
        if (strcmp(got, sha) != 0) {
                r = -EBADMSG;
                snprintf(why, why_len, "checksum mismatch (got %.16s...)", got);
                goto out;
        }
        if (renameat(c->dfd, part, c->dfd, sha) < 0) {
                r = -errno;
                snprintf(why, why_len, "cannot rename %s/%s to %s: %s", c->dir, part, sha,
                         strerror(errno));
                goto out;
        }
        /* The image is complete and verified under its name: a failed
         * directory fsync only puts off its durability. */
        if (fsync(c->dfd) < 0)
                log_warn("image cache %s: cannot fsync the directory: %s", c->dir,
                         strerror(errno));
        fmt_size((double)d.bytes, size);
        log_info("image %.12s: fetched %s (%llu bytes) in %.1f s, sha256 verified", sha, size,
                 (unsigned long long)d.bytes, (double)(util_mono_ms() - d.start_ms) / 1000.0);
        r = 0;
out:
        if (d.fd >= 0)
                close(d.fd);
        if (r < 0 && unlinkat(c->dfd, part, 0) < 0 && errno != ENOENT)
                log_warn("image cache %s: cannot remove %s: %s", c->dir, part, strerror(errno));
        curl_easy_cleanup(h);
        EVP_MD_CTX_free(d.md);
        return r;
}

/* ---- workers ---- */

static struct entry *next_queued(struct imgcache *c)
{
        struct entry *best = NULL;
        for (size_t i = 0; i < IMGCACHE_MAX_ENTRIES; i++) {
                struct entry *e = &c->ent[i];
                if (e->state == ENT_QUEUED && (!best || e->seq < best->seq))
                        best = e;
        }
        return best;
}

static void busy_done(struct imgcache *c)
{
        if (--c->n_busy == 0)
                pthread_cond_broadcast(&c->idle);
}

/* Under the lock: e's fetch is over with r (and why). */
static void finish(struct imgcache *c, struct entry *e, int r, const char *why)
{
        free(e->url);
        e->url = NULL;
        if (r == 0) {
                e->state = ENT_FREE; /* the file is the entry now */
        } else {
                e->state = ENT_FAILED;
                e->err = r;
                e->reason = strdup(why);
                e->at_ms = util_mono_ms();
        }
        busy_done(c);
}

static void *worker_main(void *arg)
{
        struct worker *w = arg;
        struct imgcache *c = w->c;
        char sha[SHA_LEN + 1];
        char why[REASON_MAX], line[REASON_MAX + IMGCACHE_URL_MAX + 16];
        struct entry *e;
        const char *url;
        int r;

        pthread_mutex_lock(&c->lock);
        while (!atomic_load(&c->stopping) && (e = next_queued(c))) {
                e->state = ENT_RUNNING;
                c->fetches++;
                memcpy(sha, e->sha, sizeof(sha));
                url = e->url; /* a RUNNING entry is changed by its worker only */
                pthread_mutex_unlock(&c->lock);

                why[0] = '\0';
                r = fetch(c, url, sha, why, sizeof(why));
                snprintf(line, sizeof(line), "image %s: %s", url, why);
                if (r == -ECANCELED)
                        log_info("%s", line);
                else if (r < 0)
                        log_warn("%s", line);

                pthread_mutex_lock(&c->lock);
                finish(c, e, r, line);
        }
        c->n_alive--;
        w->state = W_DONE;
        pthread_mutex_unlock(&c->lock);
        return NULL;
}

/* Under the lock: a worker for the queue unless max_parallel run already.
 * 0, or the -errno of pthread_create. */
static int start_worker(struct imgcache *c)
{
        struct worker *w = NULL;
        sigset_t all, old;
        int r;

        if (c->n_alive >= c->max_parallel)
                return 0;
        for (int i = 0; i < c->max_parallel; i++) {
                struct worker *x = &c->workers[i];
                if (x->state == W_DONE) {
                        /* it has left the lock for good and is returning */
                        pthread_join(x->thread, NULL);
                        x->state = W_FREE;
                }
                if (x->state == W_FREE && !w)
                        w = x;
        }
        if (!w) /* cannot be: fewer than max_parallel are running */
                return -EAGAIN;
        /* The workers take no signals: the agent's main thread handles them. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = pthread_create(&w->thread, NULL, worker_main, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0)
                return -r;
        w->state = W_RUNNING;
        c->n_alive++;
        return 0;
}

/* ---- the table, under the lock ---- */

static struct entry *find(struct imgcache *c, const char *sha)
{
        for (size_t i = 0; i < IMGCACHE_MAX_ENTRIES; i++) {
                if (c->ent[i].state != ENT_FREE && memcmp(c->ent[i].sha, sha, SHA_LEN) == 0)
                        return &c->ent[i];
        }
        return NULL;
}

static void entry_clear(struct entry *e)
{
        free(e->url);
        free(e->reason);
        memset(e, 0, sizeof(*e));
}

/* A free entry, evicting the oldest failure if need be; NULL when all
 * are being fetched. */
static struct entry *entry_alloc(struct imgcache *c)
{
        struct entry *old = NULL;
        for (size_t i = 0; i < IMGCACHE_MAX_ENTRIES; i++) {
                struct entry *e = &c->ent[i];
                if (e->state == ENT_FREE)
                        return e;
                if (e->state == ENT_FAILED && (!old || e->at_ms < old->at_ms))
                        old = e;
        }
        if (old)
                entry_clear(old);
        return old;
}

/* ---- the interface ---- */

int imgcache_get(struct imgcache *c, const char *url, const char *sha256, char *path,
                 size_t path_len, char *err, size_t err_len)
{
        char sha[SHA_LEN + 1], why[128], shown[96];
        enum scheme scheme;
        struct entry *e;
        struct stat st;
        int r;

        r = url_parse(url, &scheme, NULL, why, sizeof(why));
        if (r < 0) {
                url_for_msg(url, shown, sizeof(shown));
                set_err(err, err_len, "image %s: %s", shown, why);
                return r == -ENOMEM ? r : -EINVAL;
        }
        if (sha_normalize(sha256, sha) < 0) {
                set_err(err, err_len, "image %s: malformed sha256 (want %d hex characters)", url,
                        SHA_LEN);
                return -EINVAL;
        }
        if (!path || path_len < c->dir_len + 1 + SHA_LEN + 1) {
                set_err(err, err_len, "image %s: path buffer too small (%zu bytes, need %zu)", url,
                        path_len, c->dir_len + 1 + SHA_LEN + 1);
                return -ENAMETOOLONG;
        }

        pthread_mutex_lock(&c->lock);
        if (fstatat(c->dfd, sha, &st, 0) == 0 && S_ISREG(st.st_mode)) {
                pthread_mutex_unlock(&c->lock);
                snprintf(path, path_len, "%s/%s", c->dir, sha);
                return 0;
        }
        e = find(c, sha);
        if (e && (e->state == ENT_QUEUED || e->state == ENT_RUNNING)) {
                r = -EINPROGRESS;
                goto out;
        }
        if (e && util_mono_ms() - e->at_ms < c->retry_ms) {
                set_err(err, err_len, "%s", e->reason ? e->reason : "image: fetch failed");
                r = e->err;
                goto out;
        }
        if (e)
                entry_clear(e);
        else
                e = entry_alloc(c);
        if (!e) {
                set_err(err, err_len, "image %s: %d images are being fetched already", url,
                        IMGCACHE_MAX_ENTRIES);
                r = -EBUSY;
                goto out;
        }
        e->url = strdup(url);
        if (!e->url) {
                set_err(err, err_len, "image %s: out of memory", url);
                r = -ENOMEM;
                goto out;
        }
        memcpy(e->sha, sha, sizeof(e->sha));
        e->state = ENT_QUEUED;
        e->seq = c->next_seq++;
        c->n_busy++;
        r = start_worker(c);
        if (r < 0 && c->n_alive == 0) {
                /* nobody would ever take it */
                char line[256];
                snprintf(line, sizeof(line), "image %.12s: cannot start a download thread: %s",
                         sha, strerror(-r));
                log_warn("%s", line);
                finish(c, e, r, line);
                set_err(err, err_len, "%s", line);
                goto out;
        }
        r = -EINPROGRESS;
out:
        pthread_mutex_unlock(&c->lock);
        return r;
}

int imgcache_wait_idle(struct imgcache *c, int timeout_ms)
{
        struct timespec dl;
        int r = 0;

        clock_gettime(CLOCK_MONOTONIC, &dl);
        if (timeout_ms > 0) {
                dl.tv_sec += timeout_ms / 1000;
                dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
                if (dl.tv_nsec >= 1000000000L) {
                        dl.tv_sec++;
                        dl.tv_nsec -= 1000000000L;
                }
        }
        pthread_mutex_lock(&c->lock);
        while (c->n_busy > 0) {
                if (timeout_ms < 0) {
                        pthread_cond_wait(&c->idle, &c->lock);
                } else if (pthread_cond_timedwait(&c->idle, &c->lock, &dl) == ETIMEDOUT) {
                        if (c->n_busy > 0)
                                r = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&c->lock);
        return r;
}

uint64_t imgcache_fetch_count(struct imgcache *c)
{
        uint64_t n;
        pthread_mutex_lock(&c->lock);
        n = c->fetches;
        pthread_mutex_unlock(&c->lock);
        return n;
}

/* A fresh stream over the directory (a dup of dfd would share its offset). */
static DIR *dir_open(struct imgcache *c)
{
        int fd = openat(c->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d;
        if (fd < 0)
                return NULL;
        d = fdopendir(fd);
        if (!d) {
                int e = errno;
                close(fd);
                errno = e;
        }
        return d;
}

int imgcache_prune(struct imgcache *c, const char *const *keep, size_t n_keep)
{
        char (*kept)[SHA_LEN + 1] = NULL;
        struct dirent *de;
        struct stat st;
        DIR *d = NULL;
        int n = 0, r;

        if (n_keep > 0 && !keep)
                return -EINVAL;
        if (n_keep > 0) {
                kept = calloc(n_keep, sizeof(*kept));
                if (!kept)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < n_keep; i++) {
                if (sha_normalize(keep[i], kept[i]) < 0) {
                        log_warn("image cache %s: prune: keep[%zu] is not a sha256", c->dir, i);
                        free(kept);
                        return -EINVAL;
                }
        }

        pthread_mutex_lock(&c->lock);
        d = dir_open(c);
        if (!d) {
                r = -errno;
                log_warn("image cache %s: cannot read: %s", c->dir, strerror(errno));
                goto out;
        }
        while ((errno = 0, de = readdir(d))) {
                bool wanted = false;
                struct entry *e;
                if (!is_image_name(de->d_name))
                        continue;
                for (size_t i = 0; i < n_keep && !wanted; i++)
                        wanted = memcmp(kept[i], de->d_name, SHA_LEN) == 0;
                e = find(c, de->d_name);
                if (wanted || (e && (e->state == ENT_QUEUED || e->state == ENT_RUNNING)))
                        continue;
                if (fstatat(c->dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                    !S_ISREG(st.st_mode))
                        continue;
                if (unlinkat(c->dfd, de->d_name, 0) < 0) {
                        if (errno != ENOENT)
                                log_warn("image %.12s: cannot remove %s/%s: %s", de->d_name,
                                         c->dir, de->d_name, strerror(errno));
                        continue;
                }
                log_info("image %.12s: pruned (%lld bytes)", de->d_name, (long long)st.st_size);
                n++;
        }
        if (errno != 0) {
                r = -errno;
                log_warn("image cache %s: cannot read: %s", c->dir, strerror(errno));
                goto out;
        }
        r = n;
out:
        if (d)
                closedir(d);
        pthread_mutex_unlock(&c->lock);
        free(kept);
        return r;
}

/* mkdir -p with mode for the directories it creates. */
static int mkdir_p(const char *dir, mode_t mode)
{
        char p[PATH_MAX];
        size_t len = strlen(dir);

        if (len >= sizeof(p))
                return -ENAMETOOLONG;
        memcpy(p, dir, len + 1);
        for (size_t i = 1; i <= len; i++) {
                if (p[i] != '/' && p[i] != '\0')
                        continue;
                p[i] = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                if (i < len)
                        p[i] = '/';
        }
        return 0;
}

/* Removes <64 hex>.part files, left by a crash; how many, or -errno. */
static int remove_stale(struct imgcache *c)
{
        DIR *d = dir_open(c);
        struct dirent *de;
        int n = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                char name[SHA_LEN + 1];
                if (strlen(de->d_name) != SHA_LEN + strlen(PART_SUFFIX) ||
                    strcmp(de->d_name + SHA_LEN, PART_SUFFIX) != 0)
                        continue;
                memcpy(name, de->d_name, SHA_LEN);
                name[SHA_LEN] = '\0';
                if (!is_image_name(name))
                        continue;
                if (unlinkat(c->dfd, de->d_name, 0) < 0) {
                        log_warn("image cache %s: cannot remove stale %s: %s", c->dir,
                                 de->d_name, strerror(errno));
                        continue;
                }
                log_info("image %.12s: removed a partial download left by a crash", name);
                n++;
        }
        closedir(d);
        return n;
}

int imgcache_new(const struct imgcache_opts *o, struct imgcache **ret)
{
        struct imgcache *c = NULL;
        pthread_condattr_t ca;
        size_t len;
        int r;

        if (!o || !ret || !o->dir || !*o->dir || o->max_parallel < 0 ||
            o->max_parallel > MAX_PARALLEL || o->retry_ms < 0 || o->low_speed_secs < 0 ||
            o->progress_ms < 0)
                return -EINVAL;
        len = strlen(o->dir);
        if (len > DIR_MAX) {
                log_error("image cache %.64s...: directory name too long", o->dir);
                return -ENAMETOOLONG;
        }
        pthread_once(&curl_once, curl_init);
        if (curl_init_rc != CURLE_OK) {
                log_error("image cache %s: cannot initialise libcurl: %s", o->dir,
                          curl_easy_strerror(curl_init_rc));
                return -EIO;
        }

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->dfd = -1;
        c->dir = strdup(o->dir);
        c->max_bytes = o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
        c->max_parallel = o->max_parallel ? o->max_parallel : DEFAULT_MAX_PARALLEL;
        c->retry_ms = o->retry_ms ? o->retry_ms : DEFAULT_RETRY_MS;
        c->low_speed_secs = o->low_speed_secs ? o->low_speed_secs : DEFAULT_LOW_SPEED_SECS;
        c->progress_ms = o->progress_ms ? o->progress_ms : DEFAULT_PROGRESS_MS;
        atomic_init(&c->stopping, false);
        c->workers = calloc((size_t)c->max_parallel, sizeof(*c->workers));
        if (!c->dir || !c->workers) {
                free(c->dir);
                free(c->workers);
                free(c);
                return -ENOMEM;
        }
        for (int i = 0; i < c->max_parallel; i++)
                c->workers[i].c = c;
        while (len > 1 && c->dir[len - 1] == '/')
                c->dir[--len] = '\0';
        c->dir_len = len;

        r = mkdir_p(c->dir, 0750);
        if (r < 0) {
                log_error("image cache %s: cannot create: %s", c->dir, strerror(-r));
                goto fail;
        }
        c->dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c->dfd < 0) {
                r = -errno;
                log_error("image cache %s: cannot open: %s", c->dir, strerror(errno));
                goto fail;
        }
        r = remove_stale(c);
        if (r < 0) {
                log_error("image cache %s: cannot read: %s", c->dir, strerror(-r));
                goto fail;
        }

        pthread_mutex_init(&c->lock, NULL);
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&c->idle, &ca);
        pthread_condattr_destroy(&ca);
        *ret = c;
        return 0;
fail:
        if (c->dfd >= 0)
                close(c->dfd);
        free(c->workers);
        free(c->dir);
        free(c);
        return r;
}

void imgcache_free(struct imgcache *c)
{
        bool join[MAX_PARALLEL] = { false };

        if (!c)
                return;
        pthread_mutex_lock(&c->lock);
        atomic_store(&c->stopping, true);
        for (size_t i = 0; i < IMGCACHE_MAX_ENTRIES; i++) {
                if (c->ent[i].state == ENT_QUEUED) {
                        entry_clear(&c->ent[i]);
                        busy_done(c);
                }
        }
        for (int i = 0; i < c->max_parallel; i++)
                join[i] = c->workers[i].state != W_FREE;
        pthread_mutex_unlock(&c->lock);

        /* The running ones see stopping in their next callback, unlink
         * their partial file and leave. */
        for (int i = 0; i < c->max_parallel; i++) {
                if (join[i])
                        pthread_join(c->workers[i].thread, NULL);
        }
        for (size_t i = 0; i < IMGCACHE_MAX_ENTRIES; i++)
                entry_clear(&c->ent[i]);
        pthread_cond_destroy(&c->idle);
        pthread_mutex_destroy(&c->lock);
        close(c->dfd);
        free(c->workers);
        free(c->dir);
        free(c);
}
