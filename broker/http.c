/* The only file that includes libmicrohttpd. See http.h. */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#include "config.h"
#include "log.h"

struct http_server {
        struct MHD_Daemon *daemon;
        http_handler_fn handler;
        void *ud;
        size_t max_body;
};

/* Per-request state, kept in MHD's con_cls between calls. */
struct conn {
        char *body;
        size_t len;
        int too_large;
        int answered;
};

void http_resp_header(struct http_resp *resp, const char *name, const char *fmt, ...)
{
        va_list ap;
        if (resp->n_headers >= HTTP_MAX_HEADERS)
                return;
        snprintf(resp->headers[resp->n_headers].name, sizeof(resp->headers[0].name), "%s", name);
        va_start(ap, fmt);
        vsnprintf(resp->headers[resp->n_headers].value, sizeof(resp->headers[0].value), fmt, ap);
        va_end(ap);
        resp->n_headers++;
}

static enum MHD_Result send_resp(struct MHD_Connection *c, struct http_resp *resp)
{
        struct MHD_Response *r;
        enum MHD_Result ret;

        r = MHD_create_response_from_buffer(resp->body_len, resp->body ? resp->body : (void *)"",
                                            resp->body ? MHD_RESPMEM_MUST_FREE
                                                       : MHD_RESPMEM_PERSISTENT);
        if (!r) {
                free(resp->body);
                return MHD_NO;
        }
        if (resp->content_type)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
        for (size_t i = 0; i < resp->n_headers; i++)
                MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
        ret = MHD_queue_response(c, (unsigned)resp->status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result answer(struct http_server *srv, struct MHD_Connection *c, const char *url,
                              const char *method, struct conn *cn);

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls)
{
        struct http_server *srv = cls;
        struct conn *cn = *con_cls;
        (void)version;

        if (!cn) {
                cn = calloc(1, sizeof(*cn));
                if (!cn)
                        return MHD_NO;
                *con_cls = cn;
                /* Refuse a declared oversize body before reading any of it. */
                const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl && strtoull(cl, NULL, 10) > srv->max_body) {
                        cn->too_large = 1;
                        return answer(srv, c, url, method, cn);
                }
                return MHD_YES;
        }
        if (cn->answered) {
                *upload_size = 0;
                return MHD_YES;
        }
        if (*upload_size) {
                if (!cn->too_large && cn->len + *upload_size <= srv->max_body) {
                        char *nb = realloc(cn->body, cn->len + *upload_size + 1);
                        if (!nb)
                                return MHD_NO;
                        cn->body = nb;
                        memcpy(cn->body + cn->len, upload_data, *upload_size);
                        cn->len += *upload_size;
                        cn->body[cn->len] = '\0';
                } else {
                        cn->too_large = 1; /* keep draining, answer 413 at the end */
                }
                *upload_size = 0;
                return MHD_YES;
        }
        return answer(srv, c, url, method, cn);
}

static http_ready_fn ready_fn;
static void *ready_ud;

void http_set_readiness(http_ready_fn fn, void *ud)
{
        ready_fn = fn;
        ready_ud = ud;
}

/* /healthz and /readyz, on every listener; 0 when the path is neither. */
static int health(const char *url, const char *method, struct http_resp *resp)
{
        char why[160] = "", esc[200];
        size_t k = 0;
        int ready = 1;

        if (strcmp(url, "/healthz") != 0 && strcmp(url, "/readyz") != 0)
                return 0;
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                resp->status = 405;
                http_resp_header(resp, "Allow", "GET, HEAD");
                resp->body = strdup("{\"status\":\"method not allowed\"}");
        } else {
                if (strcmp(url, "/readyz") == 0 && ready_fn)
                        ready = ready_fn(ready_ud, why, sizeof(why)) == 0;
                /* why is ours, but escape it all the same */
                for (const char *p = why; *p && k + 7 < sizeof(esc); p++) {
                        unsigned char ch = (unsigned char)*p;
                        if (ch == '"' || ch == '\\')
                                esc[k++] = '\\', esc[k++] = (char)ch;
                        else if (ch >= 0x20 && ch < 0x7f)
                                esc[k++] = (char)ch;
                }
                esc[k] = '\0';
                resp->status = ready ? 200 : 503;
                if (ready)
                        resp->body = strdup(strcmp(url, "/readyz") == 0 ? "{\"status\":\"ready\"}"
                                                                        : "{\"status\":\"ok\"}");
                else if (asprintf(&resp->body, "{\"status\":\"unavailable\",\"reason\":\"%s\"}",
                                  esc) < 0)
                        resp->body = NULL;
        }
        resp->content_type = "application/json";
        resp->body_len = resp->body ? strlen(resp->body) : 0;
        if (strcmp(method, "HEAD") == 0) {
                free(resp->body);
                resp->body = NULL;
                resp->body_len = 0;
        }
        http_resp_header(resp, "Cache-Control", "no-store");
        return 1;
}

static enum MHD_Result answer(struct http_server *srv, struct MHD_Connection *c, const char *url,
                              const char *method, struct conn *cn)
{
        struct http_req req = {
                .method = method,
                .path = url,
                .authorization = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_AUTHORIZATION),
                .content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                            MHD_HTTP_HEADER_CONTENT_TYPE),
                .body = cn->too_large ? NULL : cn->body,
                .body_len = cn->too_large ? 0 : cn->len,
                .too_large = cn->too_large,
                .conn = c,
        };
        struct http_resp resp = { .status = 500 };
        cn->answered = 1;
        if (!health(url, method, &resp))
                srv->handler(srv->ud, &req, &resp);
        if (cn->too_large) {
                /* The rest of an oversize body is not read: close after. */
                http_resp_header(&resp, MHD_HTTP_HEADER_CONNECTION, "close");
        }
        return send_resp(c, &resp);
}

const char *http_req_arg(const struct http_req *req, const char *name)
{
        if (!req->conn)
                return NULL;
        const char *v = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
        return v && *v ? v : NULL;
}

const char *http_req_header(const struct http_req *req, const char *name)
{
        return req->conn ? MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name) : NULL;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        struct conn *cn = *con_cls;
        (void)cls;
        (void)c;
        (void)toe;
        if (cn) {
                free(cn->body);
                free(cn);
                *con_cls = NULL;
        }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
        char buf[512];
        (void)cls;
        vsnprintf(buf, sizeof(buf), fmt, ap);
        buf[strcspn(buf, "\n")] = '\0';
        log_debug("http: %s", buf);
}

int http_server_start(const char *listen, size_t max_body, unsigned threads,
                      http_handler_fn handler, void *ud, struct http_server **ret)
{
        char host[256];
        uint16_t port;
        struct sockaddr_in sin = { .sin_family = AF_INET };
        struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
        const struct sockaddr *sa;
        unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
        struct http_server *srv;

        if (cfg_parse_hostport(listen, host, sizeof(host), &port) < 0)
                return -EINVAL;
        if (inet_pton(AF_INET, host, &sin.sin_addr) == 1) {
                sin.sin_port = htons(port);
                sa = (const struct sockaddr *)&sin;
        } else if (inet_pton(AF_INET6, host, &sin6.sin6_addr) == 1) {
                sin6.sin6_port = htons(port);
                sa = (const struct sockaddr *)&sin6;
                flags |= MHD_USE_IPv6;
        } else {
                return -EINVAL;
        }
        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->handler = handler;
        srv->ud = ud;
        srv->max_body = max_body;
        srv->daemon = MHD_start_daemon(
                flags, port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, sa,
                MHD_OPTION_THREAD_POOL_SIZE, threads < 2 ? 2u : threads,
                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_CONNECTION_TIMEOUT,
                (unsigned)60, MHD_OPTION_CONNECTION_LIMIT, (unsigned)4096,
                MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)64 * 1024, MHD_OPTION_EXTERNAL_LOGGER,
                on_mhd_log, NULL, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                MHD_OPTION_END);
        if (!srv->daemon) {
                log_error("http %s: cannot listen (address in use or not allowed)", listen);
                free(srv);
                return -EADDRINUSE;
        }
        *ret = srv;
        return 0;
}

void http_server_free(struct http_server *srv)
{
        if (!srv)
                return;
        MHD_stop_daemon(srv->daemon);
        free(srv);
}
