/* dns: the VMs' records in a PowerDNS authoritative server (HTTP API).
 *
 * Desired state, not commands. dns_plan() (pure) turns the live VMs (fqdn
 * and public addresses) into the rrsets Tasman wants: A and AAAA for every
 * fqdn inside the forward zone (dns_zone), and a PTR for every public
 * address (in-addr.arpa, ip6.arpa in nibbles) pointing at the VM's fqdn,
 * wherever that fqdn is. dns_diff() (pure) compares the wanted rrsets of
 * one zone with the rrsets the server has there and yields what to
 * REPLACE and DELETE, touching only rrsets Tasman owns: those carrying a
 * comment whose account is DNS_OWNER. An rrset an admin made (no such
 * comment) is never changed nor removed; where it has the name and type
 * of a wanted one, the wanted one is left out (a conflict, reported).
 *
 * dns_reconcile() does one round against the server: it lists the zones,
 * picks for every wanted rrset the deepest zone holding its name (PTRs for
 * which no reverse zone exists are skipped, with one warning), reads each
 * zone involved (the forward zone, every reverse zone holding a wanted
 * name or overlapping a site's address pool, and those involved in the
 * round before) and PATCHes only what differs, in batches. A round that
 * finds everything in step sends no PATCH. Every request has a timeout and
 * every answer a size cap.
 *
 * dns_start() runs rounds on a thread of its own: every interval_ms, and
 * soon after dns_kick(), reading the VMs from the store (store_dns_list)
 * and the pools (store_pool_list).
 *
 * dns.c is the only file that talks to PowerDNS.
 *
 * Errors: 0 or a negative errno. Failures are logged here, once while they
 * last (a message repeated round after round is not logged again), naming
 * the object: "dns: cannot replace A web1.tasman.cloud.: 422 ...".
 *
 * Threads: the pure functions (dns_plan ... dns_patch_body) from any
 * thread, on the caller's memory. A dns_client is used by one thread at a
 * time. dns_start()/dns_stop() from main(); dns_kick() from any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ipam.h"
#include "store.h"

#define DNS_NAME_MAX           256      /* a name in canonical form (253 + the dot) with its NUL */
#define DNS_OWNER              "tasman" /* the account of the comment marking Tasman's rrsets */
#define DNS_TTL_DEFAULT        300
#define DNS_BATCH_DEFAULT      200         /* rrsets per PATCH */
#define DNS_RESPONSE_MAX       (32u << 20) /* largest answer read from the server */
#define DNS_TIMEOUT_MS_DEFAULT 5000        /* per request */

/* The record types Tasman manages; DNS_TYPE__MAX stands for any other. */
enum dns_type { DNS_TYPE_A, DNS_TYPE_AAAA, DNS_TYPE_PTR, DNS_TYPE__MAX };
const char *dns_type_to_string(enum dns_type t);

/* One rrset (all records of a name and type). Names are canonical:
 * lowercase, with the trailing dot. */
struct dns_rrset {
        char name[DNS_NAME_MAX];
        enum dns_type type;
        uint32_t ttl;
        uint32_t n_records;         /* wanted: always 1 */
        char content[DNS_NAME_MAX]; /* the record, canonical, when n_records is 1 and
                                     * it is enabled; else "" */
        int owned;                  /* on the server: carries Tasman's comment */
        uint64_t vm_id;             /* wanted: the VM it is for */
};

enum dns_op {
        DNS_OP_REPLACE,  /* create or change it (with Tasman's comment) */
        DNS_OP_DELETE,   /* Tasman's, no longer wanted */
        DNS_OP_CONFLICT, /* wanted, but an rrset of an admin has its name and type:
                          * left alone, never sent */
};

struct dns_change {
        enum dns_op op;
        struct dns_rrset rr;
};

struct dns_plan_stats {
        size_t bad_names; /* VMs whose fqdn is not a valid host name: no records */
        size_t dup_names; /* VMs whose fqdn a VM of a lower id has: no A/AAAA */
};

/* Canonical form of a host name: lowercase, trailing dot, labels of 1-63
 * letters, digits and inner hyphens, at most 253 characters before the
 * final dot. 0, or -EINVAL. out: DNS_NAME_MAX bytes. */
int dns_fqdn_canon(const char *in, char out[static DNS_NAME_MAX]);

/* 1 if the canonical name is zone or below it. */
int dns_name_in_zone(const char *name, const char *zone);

/* The reverse name of an address: "2.113.0.203.in-addr.arpa." or 32
 * nibbles and "ip6.arpa.". 0, or -EINVAL. */
int dns_ptr_name(const char *addr, char out[static DNS_NAME_MAX]);

/* The prefix a reverse zone covers ("113.0.203.in-addr.arpa." is
 * 203.0.113.0/24, nibbles /4 each); -EINVAL for any other zone (also
 * classless delegations such as "0/26.113.0.203.in-addr.arpa."). */
int dns_reverse_prefix(const char *zone, struct ipam_prefix *ret);

/* The wanted rrsets (malloc'd), sorted by name then type. zone: the
 * forward zone (with or without its trailing dot). -EINVAL for a bad
 * zone, -ENOMEM. */
int dns_plan(const char *zone, uint32_t ttl, const struct vm_dns *vms, size_t n_vms,
             struct dns_rrset **ret, size_t *ret_n, struct dns_plan_stats *ret_stats);

/* A zone as the server lists it. */
struct dns_zone {
        char name[DNS_NAME_MAX]; /* canonical */
        char id[DNS_NAME_MAX];   /* the server's id, for URLs */
};

/* Index of the deepest zone holding the canonical name, or -1. */
long dns_zone_for(const char *name, const struct dns_zone *zones, size_t n);

/* Parsing the server's answers (pure): the zone list
 * (GET .../zones) and the A, AAAA and PTR rrsets of one zone (GET
 * .../zones/ZONE; other types are skipped: Tasman never owns them).
 * Malloc'd; -EPROTO for what is not such an answer, -ENOMEM. */
int dns_parse_zones(const char *json, size_t len, struct dns_zone **ret, size_t *ret_n);
int dns_parse_rrsets(const char *json, size_t len, struct dns_rrset **ret, size_t *ret_n);

/* What makes the server's rrsets of one zone (have) what is wanted there
 * (want): REPLACE for a wanted rrset missing or different (records, TTL)
 * among Tasman's, CONFLICT for one whose name and type an admin's rrset
 * has, DELETE for each of Tasman's rrsets not wanted. Only owned rrsets
 * are ever replaced or deleted. Changes (malloc'd, none when in step): the
 * wanted ones in name, type order, then the deletions likewise. -ENOMEM. */
int dns_diff(const struct dns_rrset *want, size_t n_want, const struct dns_rrset *have,
             size_t n_have, struct dns_change **ret, size_t *ret_n);

/* The body of a PATCH of a zone's rrsets for these changes (conflicts
 * left out), malloc'd; NULL on OOM. */
char *dns_patch_body(const struct dns_change *c, size_t n);

/* ---- the server ---- */

struct dns_config {
        const char *url;     /* PowerDNS's webserver, e.g. http://127.0.0.1:8081 */
        const char *key;     /* X-API-Key */
        const char *server;  /* server id, "localhost" */
        const char *zone;    /* forward zone, e.g. tasman.cloud */
        uint32_t ttl;        /* of the records made; 0: DNS_TTL_DEFAULT */
        int64_t timeout_ms;  /* per request; 0: DNS_TIMEOUT_MS_DEFAULT */
        size_t batch;        /* rrsets per PATCH; 0: DNS_BATCH_DEFAULT */
        size_t max_response; /* bytes; 0: DNS_RESPONSE_MAX */
};

struct dns_input {
        const struct vm_dns *vms;
        size_t n_vms;
        const struct ipam_prefix *pools; /* the sites' address pools (IPv4 and IPv6) */
        size_t n_pools;
};

struct dns_stats {
        size_t zones;  /* zones read */
        size_t wanted; /* rrsets wanted with a zone to hold them */
        size_t replaced, deleted, conflicts;
        size_t no_zone; /* wanted rrsets skipped: no zone on the server holds them */
        size_t patches; /* PATCH requests sent */
        size_t errors;
};

struct dns_client;

/* Copies cfg. -EINVAL (no url or zone, bad zone), -ENOMEM. */
int dns_client_new(const struct dns_config *cfg, struct dns_client **ret);
void dns_client_free(struct dns_client *c);

/* One round (see above): 0 when the server is in step (conflicts and
 * PTRs without a zone are not errors), or the first failure's negative
 * errno (-ECONNREFUSED, -ETIMEDOUT, -EACCES, -EPROTO, -EIO...); the other
 * zones are still done. ret (may be NULL): what the round did. */
int dns_reconcile(struct dns_client *c, const struct dns_input *in, struct dns_stats *ret);

/* ---- the broker's DNS thread ---- */

struct dns;

/* Starts the thread (a first round at once). -EINVAL, -ENOMEM, -EAGAIN. */
int dns_start(const struct dns_config *cfg, int64_t interval_ms, struct store *s, struct dns **ret);
/* What the thread did since it started (for /metrics). */
struct dns_totals {
        uint64_t rounds, failed_rounds; /* rounds done; those with errors */
        uint64_t patches;               /* PATCH requests sent */
        uint64_t replaced, deleted;     /* rrsets */
        uint64_t conflicts, no_zone;    /* in the last round */
};
/* Any thread; d NULL: all zero. */
void dns_totals(struct dns *d, struct dns_totals *ret);

/* A round soon (after a VM or its addresses changed). NULL: nothing. */
void dns_kick(struct dns *d);
/* Stops the thread and frees it; a round in progress is abandoned (a
 * request waiting for the server within about a second: libcurl's
 * progress callback). NULL: nothing. */
void dns_stop(struct dns *d);
