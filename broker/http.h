/* http: the HTTP server; http.c is the only file that knows libmicrohttpd.
 *
 * The server owns its threads (a pool of `threads` epoll workers). It reads
 * a request's body up to max_body bytes, then calls the handler once per
 * request, on one of its threads, with a struct http_req that is valid only
 * during the call. A body over max_body is not read: the handler is called
 * with req->too_large set so it can answer 413 in its API's own format.
 * Handlers run concurrently and must be thread-safe.
 *
 * The handler fills *resp: a status, a malloc'd body (the server frees it)
 * and up to HTTP_MAX_HEADERS extra headers.
 */
#pragma once

#include <stddef.h>

#define HTTP_MAX_HEADERS 12

struct http_req {
        const char *method;
        const char *path;  /* without the query string */
        const char *authorization;  /* or NULL */
        const char *content_type;   /* or NULL */
        const char *body;  /* NUL-terminated copy, or NULL */
        size_t body_len;
        int too_large;
        void *conn; /* the server's; for http_req_arg() and http_req_header() */
};

struct http_resp {
        int status;
        char *body;
        size_t body_len;
        const char *content_type;
        struct {
                char name[48];
                char value[160];
        } headers[HTTP_MAX_HEADERS];
        size_t n_headers;
};

typedef void (*http_handler_fn)(void *ud, const struct http_req *req, struct http_resp *resp);

struct http_server;

/* Every server answers GET (and HEAD) /healthz itself: 200 {"status":"ok"}
 * while the process serves; and /readyz: 200 {"status":"ready"} when the
 * readiness function (set once, by the main thread, before any server
 * starts) returns 0, else 503 {"status":"unavailable","reason":...} with
 * what it wrote into why. A load balancer checks /readyz. Without a
 * function /readyz is /healthz. */
typedef int (*http_ready_fn)(void *ud, char *why, size_t why_len);
void http_set_readiness(http_ready_fn fn, void *ud);

/* listen is "HOST:PORT". 0, -EINVAL (bad address), -EADDRINUSE, -EIO. */
int http_server_start(const char *listen, size_t max_body, unsigned threads,
                      http_handler_fn handler, void *ud, struct http_server **ret);
void http_server_free(struct http_server *srv);

/* A query-string argument ("?limit=10": "10"), or NULL if absent or empty. */
const char *http_req_arg(const struct http_req *req, const char *name);
/* A request header by name (case-insensitive), or NULL. */
const char *http_req_header(const struct http_req *req, const char *name);

/* Adds a header to resp (dropped past HTTP_MAX_HEADERS). */
void http_resp_header(struct http_resp *resp, const char *name, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
