/* api: the broker's HTTP front-ends, as http_handler_fn callbacks.
 *
 * api_native.c serves the native JSON API (../shared/spec/native-api.txt)
 * under /v1 on `listen`; api_admin.c serves the admins' API (accounts,
 * keys, nodes, API users) on `admin_listen`; api_tilaa.c serves the
 * Tilaa-compatible API on `tilaa_listen`. Both validate input where it enters and
 * answer every failure in the spec's error shape. Handlers run on the HTTP
 * server's threads, concurrently; struct api holds nothing mutable.
 */
#pragma once

#include <stdint.h>

#include <jansson.h>

#include "dns.h"
#include "http.h"
#include "hub.h"
#include "store.h"

struct api {
        struct store *store;
        struct hub *hub;          /* NULL in tests without agents */
        int64_t host_timeout_ms;  /* a host not heard from for this long is unreachable */
        const char *admin_token;  /* "" = no token required (loopback only) */
        struct sched_params sched; /* overcommit and strategy for placement */
        struct ratelimit *rl;     /* NULL: no rate limits */
        struct listcache *lc;     /* NULL: lists are always read afresh */
        struct dns *dns;          /* NULL: no DNS records kept (dns_kick() after a VM's
                                   * addresses changed) */
        struct apiuser_auth *users; /* the Tilaa API's logins (NULL: not served) */
        const char *dns_zone;       /* a Tilaa VM's default DNS name: NAME.dns_zone */
};

void api_native_handle(void *ud, const struct http_req *req, struct http_resp *resp);
void api_admin_handle(void *ud, const struct http_req *req, struct http_resp *resp);
/* The Tilaa-compatible API (api_tilaa.c), on `tilaa_listen`; needs
 * api->users. */
void api_tilaa_handle(void *ud, const struct http_req *req, struct http_resp *resp);

/* Pure: a VPS's status from its desired and last observed state and its
 * host's liveness. */
const char *api_vps_status(const struct vm *v, int64_t now_ms, int64_t host_timeout_ms);

/* Shared by both front-ends. */
int api_body_json(const struct http_req *req, struct http_resp *resp, json_t **ret);
void api_route_error(const struct http_req *req, struct http_resp *resp, int known_path,
                     const char *allow);
