/* tasman-broker: the public APIs, the platform's state, the agent link.
 *
 * main() owns startup and shutdown; the HTTP servers and the hub run their
 * own threads (see http.h, hub.h) and share the store (see store.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "dns.h"
#include "apiuser.h"
#include "ratelimit.h"
#include "config.h"
#include "http.h"
#include "hub.h"
#include "jobs.h"
#include "listcache.h"
#include "log.h"
#include "notify.h"
#include "store.h"
#include "tilaa.h"
#include "util.h"

static struct {
        char listen[CFG_STR_MAX];
        char tilaa_listen[CFG_STR_MAX];
        char admin_listen[CFG_STR_MAX];
        char agent_listen[CFG_STR_MAX];
        char db[CFG_STR_MAX];
        char admin_token[CFG_STR_MAX];
        char log_level[CFG_STR_MAX];
        int64_t hold_ms;
        int64_t host_timeout_ms;
        int64_t http_threads;
        int64_t max_body, tilaa_max_body;
        int64_t max_agents;
        int64_t cpu_overcommit_pct, ram_overcommit_pct, disk_overcommit_pct;
        char placement[CFG_STR_MAX];
        int64_t rate_limits, rate_limit_keys;
        int64_t list_cache;
        char pdns_url[CFG_STR_MAX], pdns_key[CFG_STR_MAX], pdns_server[CFG_STR_MAX];
        char dns_zone[CFG_STR_MAX];
        int64_t dns_interval_ms, dns_ttl, pdns_timeout_ms;
        int64_t billing;
        char billing_zone[CFG_STR_MAX];
} cfg = {
        .listen = "127.0.0.1:8080",
        .admin_listen = "127.0.0.1:8081",
        .agent_listen = "tcp://127.0.0.1:7400",
        .db = "/var/lib/tasman/broker.db",
        .log_level = "info",
        .hold_ms = 20000,
        .host_timeout_ms = 10000,
        .http_threads = 4,
        .max_body = 65536,
        /* 64 KiB of user_data as `curl --data-urlencode` sends it: up to
         * three bytes each (%XX), and the other parameters */
        .tilaa_max_body = 256 << 10,
        .max_agents = 10000,
        .cpu_overcommit_pct = 400,
        .ram_overcommit_pct = 100,
        .disk_overcommit_pct = 100,
        .placement = "spread",
        .rate_limits = 1,
        .list_cache = 1,
        .rate_limit_keys = 100000,
        .pdns_server = "localhost",
        .dns_zone = "tasman.cloud",
        .dns_interval_ms = 30000,
        .dns_ttl = DNS_TTL_DEFAULT,
        .pdns_timeout_ms = DNS_TIMEOUT_MS_DEFAULT,
        .billing = 0,
        .billing_zone = "Europe/Amsterdam",
};

static const struct cfg_opt opts[] = {
        { "listen", CFG_STR, cfg.listen, 0, 0, "native API address (HOST:PORT)" },
        { "tilaa_listen", CFG_STR, cfg.tilaa_listen, 0, 0,
          "Tilaa-compatible API address (HOST:PORT); empty: not served" },
        { "admin_listen", CFG_STR, cfg.admin_listen, 0, 0,
          "admin API address (HOST:PORT); needs admin_token unless on loopback" },
        { "agent_listen", CFG_STR, cfg.agent_listen, 0, 0,
          "agent link URL (nng, e.g. tcp://0.0.0.0:7400)" },
        { "db", CFG_STR, cfg.db, 0, 0, "SQLite database file, or postgresql://... URL" },
        { "admin_token", CFG_STR, cfg.admin_token, 0, 0,
          "bearer token the admin API requires (empty: none, loopback only)" },
        { "log_level", CFG_STR, cfg.log_level, 0, 0, "error, warn, info or debug" },
        { "hold_ms", CFG_INT, &cfg.hold_ms, 100, 60000, "longest hold of an agent's long poll" },
        { "host_timeout_ms", CFG_INT, &cfg.host_timeout_ms, 1000, 3600000,
          "a host not heard from for this long is unreachable" },
        { "http_threads", CFG_INT, &cfg.http_threads, 2, 256, "HTTP worker threads per listener" },
        { "max_body", CFG_INT, &cfg.max_body, 1024, 16 << 20, "largest request body (bytes)" },
        { "tilaa_max_body", CFG_INT, &cfg.tilaa_max_body, 1024, 16 << 20,
          "largest request body of the Tilaa API (bytes; 64 KiB of user_data URL-encoded "
          "is up to 192 KiB)" },
        { "max_agents", CFG_INT, &cfg.max_agents, 1, 1000000, "most agents connected at once" },
        { "list_cache", CFG_INT, &cfg.list_cache, 0, 1,
          "1: answer a repeated list request from memory while nothing it shows changed "
          "(this broker's commits; turn off when brokers share one database)" },
        { "rate_limits", CFG_INT, &cfg.rate_limits, 0, 1,
          "1: limit each API key to its tier's requests per minute; 0: no limits" },
        { "rate_limit_keys", CFG_INT, &cfg.rate_limit_keys, 1, 1 << 24,
          "API keys tracked at once (more active keys than this within ~10 s get 429)" },
        { "cpu_overcommit_pct", CFG_INT, &cfg.cpu_overcommit_pct, 10, 10000,
          "vCPUs placed per host, in percent of its vCPUs" },
        { "ram_overcommit_pct", CFG_INT, &cfg.ram_overcommit_pct, 10, 1000,
          "RAM placed per host, in percent of its RAM" },
        { "disk_overcommit_pct", CFG_INT, &cfg.disk_overcommit_pct, 10, 1000,
          "disk placed per host, in percent of its disk" },
        { "placement", CFG_STR, cfg.placement, 0, 0,
          "spread (most free RAM first) or pack (fill hosts up)" },
        { "pdns_url", CFG_STR, cfg.pdns_url, 0, 0,
          "PowerDNS API (e.g. http://127.0.0.1:8081) to keep the VMs' A, AAAA and PTR "
          "records in; empty: no DNS" },
        { "pdns_key", CFG_STR, cfg.pdns_key, 0, 0, "PowerDNS API key (X-API-Key)" },
        { "pdns_server", CFG_STR, cfg.pdns_server, 0, 0, "PowerDNS server id" },
        { "pdns_timeout_ms", CFG_INT, &cfg.pdns_timeout_ms, 100, 600000,
          "longest PowerDNS API request" },
        { "dns_zone", CFG_STR, cfg.dns_zone, 0, 0,
          "forward zone of the VMs' DNS names: a Tilaa VM's default DNS name is NAME.dns_zone; "
          "names in it get A/AAAA records" },
        { "dns_interval_ms", CFG_INT, &cfg.dns_interval_ms, 100, 86400000,
          "how often the DNS records are compared with the VMs (also soon after a change)" },
        { "dns_ttl", CFG_INT, &cfg.dns_ttl, 1, 604800, "TTL of the records made (seconds)" },
        { "billing", CFG_INT, &cfg.billing, 0, 1,
          "1: prepaid billing: orders the account's credit does not cover are refused, and "
          "every service is invoiced daily from the credit; 0: everything is free" },
        { "billing_zone", CFG_STR, cfg.billing_zone, 0, 0,
          "time zone whose midnights start the invoicing days (a tz database name)" },
};

#define N_OPTS (sizeof(opts) / sizeof(opts[0]))

/* The daily job: invoices the days not yet invoiced (see jobs.h). */
struct billing_ctx {
        struct store *store;
        const struct tz *zone;
};

static void billing_job(void *ud, int64_t now_ms)
{
        const struct billing_ctx *b = ud;
        jobs_billing_catch_up(b->store, b->zone, now_ms, NULL); /* logs its errors */
}

/* The periodic job: VMs whose cancellation date has come are deleted; their
 * hosts are woken and their DNS records go. */
struct cancel_ctx {
        struct store *store;
        struct hub *hub;
        struct dns *dns;
};

static void cancel_job(void *ud, int64_t now_ms)
{
        const struct cancel_ctx *c = ud;
        uint64_t *hosts = NULL;
        size_t n = 0;
        if (store_vm_cancel_due(c->store, now_ms, &hosts, &n) < 0)
                return; /* logged by the store; tried again next period */
        for (size_t i = 0; i < n && c->hub; i++)
                hub_notify(c->hub, hosts[i]);
        if (n)
                dns_kick(c->dns);
        free(hosts);
}

/* /readyz: ready while the store answers a read (a load balancer takes a
 * broker whose database is gone out of service). */
static int ready(void *ud, char *why, size_t why_len)
{
        uint64_t gen;
        int r = store_host_generation(ud, 0, &gen); /* no host 0: -ENOENT at once */
        if (r == 0 || r == -ENOENT)
                return 0;
        snprintf(why, why_len, "the store does not answer (%s)", strerror(-r));
        return -1;
}

static int is_loopback(const char *hostport)
{
        return strncmp(hostport, "127.", 4) == 0 || strncmp(hostport, "[::1]:", 6) == 0 ||
               strncmp(hostport, "localhost:", 10) == 0;
}

int main(int argc, char **argv)
{
        struct store *store = NULL;
        struct hub *hub = NULL;
        struct http_server *native = NULL, *admin = NULL, *tilaa = NULL;
        struct dns *dns = NULL;
        struct jobs *jobs = NULL;
        static struct billing_ctx billing;
        sigset_t set;
        int sig, r, ret = 1;

        r = cfg_load(opts, N_OPTS, argc, argv, "tasman-broker",
                     "Serves Tasman's public REST APIs and admin API, keeps the platform's\n"
                     "state, and tells every agent the desired state of its host.");
        if (r != 0)
                return r > 0 ? 0 : 2;
        log_set_ident("tasman-broker");
        if (log_set_level_name(cfg.log_level) < 0) {
                fprintf(stderr, "tasman-broker: log_level must be error, warn, info or debug\n");
                return 2;
        }
        if (strcmp(cfg.placement, "spread") != 0 && strcmp(cfg.placement, "pack") != 0) {
                fprintf(stderr, "tasman-broker: placement must be spread or pack\n");
                return 2;
        }
        if (!cfg.admin_token[0] && !is_loopback(cfg.admin_listen)) {
                fprintf(stderr, "tasman-broker: admin_listen %s is not loopback: set admin_token\n",
                        cfg.admin_listen);
                return 2;
        }
        char zone_canon[DNS_NAME_MAX];
        if (cfg.pdns_url[0] && dns_fqdn_canon(cfg.dns_zone, zone_canon) < 0) {
                fprintf(stderr, "tasman-broker: dns_zone '%s' is not a DNS name\n", cfg.dns_zone);
                return 2;
        }

        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        signal(SIGPIPE, SIG_IGN);

        char db_shown[CFG_STR_MAX];
        store_db_redact(cfg.db, db_shown, sizeof(db_shown)); /* no password in logs */
        if (store_open(cfg.db, &store) < 0) {
                log_error("broker: cannot open the database %s", db_shown);
                goto out;
        }
        /* Before any request: orders are checked from the first one. */
        store_set_billing(store, (int)cfg.billing);
        if (jobs_new(cfg.billing_zone, &jobs) < 0) {
                /* Without billing the zone only times the daily jobs. */
                if (cfg.billing || jobs_new("UTC", &jobs) < 0) {
                        log_error("broker: billing_zone %s is not a time zone of this system "
                                  "(is tzdata installed?)",
                                  cfg.billing_zone);
                        goto out;
                }
                log_warn("broker: billing_zone %s is not a time zone of this system (is tzdata "
                         "installed?); daily jobs run at midnight UTC",
                         cfg.billing_zone);
        }
        billing.store = store;
        billing.zone = jobs_zone(jobs);
        static struct cancel_ctx cancels;
        cancels.store = store;
        if (jobs_add_daily(jobs, "billing", billing_job, &billing) < 0 ||
            jobs_add_periodic(jobs, "cancellations", 60000, cancel_job, &cancels) < 0)
                goto out;
        struct hub_config hc = {
                .url = cfg.agent_listen,
                .hold_ms = (uint32_t)cfg.hold_ms,
                .max_agents = (uint32_t)cfg.max_agents,
                .host_timeout_ms = cfg.host_timeout_ms,
        };
        if (hub_start(&hc, store, &hub) < 0)
                goto out;
        static struct api api;
        if (cfg.rate_limits && ratelimit_new((size_t)cfg.rate_limit_keys, &api.rl) < 0) {
                log_error("broker: cannot allocate the rate limiter");
                goto out;
        }
        /* Several brokers may share a PostgreSQL database: the cache would
         * not see their writes (listcache.h). */
        if (cfg.list_cache && !store_is_pg_url(cfg.db) && listcache_new(&api.lc) < 0) {
                log_error("broker: cannot allocate the list cache");
                goto out;
        }
        if (cfg.pdns_url[0]) {
                struct dns_config dc = {
                        .url = cfg.pdns_url,
                        .key = cfg.pdns_key,
                        .server = cfg.pdns_server,
                        .zone = cfg.dns_zone,
                        .ttl = (uint32_t)cfg.dns_ttl,
                        .timeout_ms = cfg.pdns_timeout_ms,
                };
                r = dns_start(&dc, cfg.dns_interval_ms, store, &dns);
                if (r < 0) {
                        log_error("broker: cannot keep DNS records in %s: %s", cfg.pdns_url,
                                  strerror(-r));
                        goto out;
                }
        }
        char zone[255];
        if (tilaa_dns_name(cfg.dns_zone, zone) < 0) {
                log_error("broker: dns_zone %s is not a DNS name", cfg.dns_zone);
                goto out;
        }
        util_strlcpy(cfg.dns_zone, zone, sizeof(cfg.dns_zone));
        api.dns_zone = cfg.dns_zone;
        if (cfg.tilaa_listen[0] && apiuser_auth_new(65536, &api.users) < 0) {
                log_error("broker: cannot set up the Tilaa API's logins");
                goto out;
        }
        api.store = store;
        api.hub = hub;
        api.dns = dns;
        /* The jobs run once the hub and DNS they wake exist. */
        cancels.hub = hub;
        cancels.dns = dns;
        if (jobs_start(jobs) < 0)
                goto out;
        api.host_timeout_ms = cfg.host_timeout_ms;
        api.admin_token = cfg.admin_token;
        api.sched.cpu_ratio = (double)cfg.cpu_overcommit_pct / 100.0;
        api.sched.ram_ratio = (double)cfg.ram_overcommit_pct / 100.0;
        api.sched.disk_ratio = (double)cfg.disk_overcommit_pct / 100.0;
        api.sched.strategy = strcmp(cfg.placement, "pack") == 0 ? SCHED_PACK : SCHED_SPREAD;
        http_set_readiness(ready, store);
        r = http_server_start(cfg.listen, (size_t)cfg.max_body, (unsigned)cfg.http_threads,
                              api_native_handle, &api, &native);
        if (r < 0) {
                log_error("broker: cannot serve the native API on %s: %s", cfg.listen,
                          strerror(-r));
                goto out;
        }
        r = http_server_start(cfg.admin_listen, (size_t)cfg.max_body, 2, api_admin_handle, &api,
                              &admin);
        if (r < 0) {
                log_error("broker: cannot serve the admin API on %s: %s", cfg.admin_listen,
                          strerror(-r));
                goto out;
        }
        if (cfg.tilaa_listen[0]) {
                r = http_server_start(cfg.tilaa_listen, (size_t)cfg.tilaa_max_body,
                                      (unsigned)cfg.http_threads, api_tilaa_handle, &api, &tilaa);
                if (r < 0) {
                        log_error("broker: cannot serve the Tilaa API on %s: %s",
                                  cfg.tilaa_listen, strerror(-r));
                        goto out;
                }
                log_info("broker: Tilaa API http://%s", cfg.tilaa_listen);
        }
        log_info("broker %s: native API http://%s, admin API http://%s, agents %s, db %s, "
                 "billing %s (days of %s)",
                 TASMAN_VERSION, cfg.listen, cfg.admin_listen, cfg.agent_listen, db_shown,
                 cfg.billing ? "on" : "off", cfg.billing_zone);
        notify_send("READY=1\nSTATUS=serving");
        if (sigwait(&set, &sig) == 0)
                log_info("broker: signal %d, stopping", sig);
        notify_send("STOPPING=1");
        ret = 0;
out:
        http_server_free(native);
        http_server_free(admin);
        http_server_free(tilaa);
        apiuser_auth_free(api.users);
        jobs_free(jobs); /* first: its jobs wake the hub and DNS */
        dns_stop(dns);
        hub_free(hub);
        store_free(store);
        ratelimit_free(api.rl);
        listcache_free(api.lc);
        return ret;
}
