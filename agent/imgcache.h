/* imgcache: the agent's cache of OS base images, one copy per host.
 *
 * An image is named by its URL (file://, http:// or https://) and its
 * SHA-256. The cache fetches it once, on a worker thread, into
 * DIR/<sha256>.part while hashing it, and renames it to DIR/<sha256> only
 * once the size limit and the checksum have passed (then fsyncs the
 * directory). So a file under its final name is always complete and
 * verified, and the cache is content-addressed: the same sha256 through
 * another URL is the same image. A partial or mismatched file is never
 * visible under the final name, and is unlinked on any failure.
 *
 * However many callers ask for one image at once, it is fetched at most
 * once at a time; at most max_parallel images are fetched at once, others
 * wait their turn. A failed fetch is remembered (reason and time) for
 * retry_ms, during which gets for that image (whatever their URL) return
 * the failure without fetching again. Progress of long downloads is
 * logged, and each failure once (log_warn).
 *
 * Ownership: the struct imgcache belongs to the caller of imgcache_new,
 * who frees it; the cached files belong to the cache directory (remove them
 * with imgcache_prune, not by hand while the cache runs), and a directory
 * has one struct imgcache at a time. Any thread may call any function,
 * except imgcache_free, which must be the last call and must not race with
 * the others.
 *
 * imgcache.c is the only agent file that includes libcurl.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define IMGCACHE_URL_MAX 2048     /* bytes, without the terminating NUL */
#define IMGCACHE_SHA256_HEX 64    /* characters in a sha256 */
#define IMGCACHE_MAX_ENTRIES 1024 /* images fetching or failed, remembered at once */

struct imgcache;

struct imgcache_opts {
        const char *dir;      /* cache directory (created 0750 if missing) */
        uint64_t max_bytes;   /* refuse images larger than this (0: 64 GiB) */
        int max_parallel;     /* concurrent downloads (0: 2, at most 64); others wait their turn */
        int retry_ms;         /* after a failed fetch, the next get retries only after this
                                 (0: 60000) */
        int low_speed_secs;   /* abort when under 1 KiB/s for this long (0: 60) */
        int progress_ms;      /* log progress of a download at most this often (0: 5000) */
};

/* Opens (creating 0750 if missing) the cache directory and removes the
 * stale partial files (<64 hex>.part) a crash left in it; nothing else in
 * the directory is touched. 0, -EINVAL for bad options, -ENOMEM, or the
 * -errno of the directory (logged, naming it). */
int imgcache_new(const struct imgcache_opts *o, struct imgcache **ret);

/* NULL ok. Cancels the downloads in flight (within about a second, even
 * when the server sends nothing), drops the queued ones, joins the worker
 * threads and removes their partial files. */
void imgcache_free(struct imgcache *c);

/* Non-blocking. url and sha256 (64 hex chars, any case) name the image;
 * the cached file is DIR/<sha256 lowercase>.
 *   0            the image is cached and verified; its path is written to
 *                path (path_len must hold DIR + 66 bytes, else
 *                -ENAMETOOLONG, checked on every call).
 *   -EINPROGRESS being fetched (the first call starts the fetch).
 *   -EINVAL      at once, no fetch: a malformed sha256, or a URL that is
 *                empty, longer than IMGCACHE_URL_MAX, malformed, or not
 *                file/http/https.
 *   -EBUSY       IMGCACHE_MAX_ENTRIES images are being fetched already.
 *   other        the last fetch failed less than retry_ms ago; after that
 *                a later call starts a new fetch. err gets a one-line
 *                reason naming the URL, e.g. "image https://x/y.img:
 *                HTTP 404". The errors:
 *                -EBADMSG checksum mismatch (got 1234abcd...)
 *                -EFBIG larger than max_bytes bytes
 *                -ENOENT HTTP 404 or 410, or no such file
 *                -EACCES HTTP 401 or 403, or an unreadable file
 *                -ENOTSUP file:// names something other than a regular file
 *                -EPROTONOSUPPORT redirected to an unsupported URL scheme
 *                -ELOOP more than 5 redirects
 *                -ETIMEDOUT no connection in 30 s, or too slow
 *                -ECONNREFUSED, -EHOSTUNREACH (also for a name that
 *                does not resolve), -ECONNRESET, -ENOSPC and other local
 *                write errors, -EIO for any other HTTP or transfer error.
 * err (err_len bytes, always terminated; may be NULL when err_len is 0) is
 * written only on a negative return other than -EINPROGRESS; path only
 * on 0. A file under the final name is trusted as verified: only the cache
 * puts files there. */
int imgcache_get(struct imgcache *c, const char *url, const char *sha256, char *path,
                 size_t path_len, char *err, size_t err_len);

/* Blocks until no fetch is in flight or queued, or timeout_ms passes (a
 * negative timeout waits without limit): 0 or -ETIMEDOUT. */
int imgcache_wait_idle(struct imgcache *c, int timeout_ms);

/* Downloads started since imgcache_new. */
uint64_t imgcache_fetch_count(struct imgcache *c);

/* Removes the cached images (regular files named as 64 lowercase hex
 * chars only; nothing else in DIR is touched) whose sha256 (any case) is
 * not in keep and that are not being fetched. Returns how many were
 * removed, -EINVAL (nothing removed) when an entry of keep is not a
 * sha256, or the -errno of the directory. */
int imgcache_prune(struct imgcache *c, const char *const *keep, size_t n_keep);
