/* store: the platform's state, behind one interface.
 *
 * store_sqlite.c is the SQLite back-end (WAL, synchronous=FULL: a call that
 * returned 0 is on disk); store_pg.c the PostgreSQL one, which several
 * brokers can share (synchronous_commit on). store.c forwards each call to
 * the back-end chosen at store_open(). Every mutating call is one transaction, so a
 * placement and the capacity it takes, or a change and the host's new
 * generation, are committed together or not at all. The schema is built by
 * numbered migrations at open.
 *
 * Thread safety: every function may be called from any thread; calls are
 * serialised inside. Structs returned are plain values owned by the caller;
 * arrays are malloc'd and freed with free().
 *
 * Errors: 0 or a negative errno: -ENOENT (no such row, or not the caller's
 * account), -EEXIST (unique name taken), -ENOSPC (no host has room),
 * -EBUSY (another operation on the guest is in flight), -EDQUOT (a limit
 * reached), -EADDRNOTAVAIL (the site's public address pool is used up),
 * -ERANGE (a private network has no address left), -EDQUOT also when
 * billing is enforced and the account's credit does not cover an order,
 * -EIO (the database failed; logged here, once).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "ids.h"
#include "scheduler.h"

struct store;

#define STORE_NAME_MAX 64
/* A VM's name: the Tilaa API's are "for internal use", up to 64 UTF-8
 * characters of up to 4 bytes (tilaa_name_ok); the native API's are
 * shorter (valid_name). */
#define STORE_VM_NAME_MAX 257

enum tier { TIER_FREE, TIER_PRO, TIER_ENTERPRISE, TIER__MAX };
const char *tier_to_string(enum tier t);
int tier_from_string(const char *s, enum tier *ret);

struct account {
        uint64_t id;
        char name[STORE_NAME_MAX];
        enum tier tier;
        int64_t created_at; /* ms since the epoch */
};

struct api_key {
        uint64_t id;
        uint64_t account_id;
        enum tier tier;
        uint8_t hash[32];
        int read_only; /* may only read (GET) */
};

/* A key as admins see it: never the hash. */
struct api_key_info {
        uint64_t id;
        char prefix[16];
        int read_only;
        int64_t created_at;
        int64_t revoked_at; /* 0: live */
};

struct host {
        uint64_t id;
        char name[TMSG_STR];
        char site[TMSG_STR];
        char underlay_ip[TMSG_STR];
        char boot_id[TMSG_STR];
        char agent_version[TMSG_STR];
        char hv_type[TMSG_STR];
        uint32_t vcpus;
        uint64_t ram_mb, disk_gb;
        uint32_t vcpus_used; /* reserved by the guests placed here */
        uint64_t ram_mb_used, disk_gb_used; /* disk_gb*: ssd storage */
        uint64_t hdd_gb, hdd_gb_used;
        uint32_t guests;      /* vms placed here */
        uint32_t obs_domains; /* domains the agent last reported */
        uint32_t obs_vcpus;   /* vCPUs of its running domains, as reported */
        uint64_t obs_ram_mb;
        uint64_t generation, applied_generation;
        int64_t last_seen; /* ms */
        int draining;
};

/* VM_WANT_OFF: stopped at once (power off), not by a graceful shutdown. */
enum vm_power_want { VM_WANT_RUNNING, VM_WANT_STOPPED, VM_WANT_OFF };

struct vm {
        uint64_t id;
        uint64_t account_id;
        char name[STORE_VM_NAME_MAX];
        char size[32];
        char image[TMSG_STR];
        char site[TMSG_STR];
        uint64_t host_id;
        uint32_t vcpus, ram_mb, disk_gb;
        enum vm_power_want want;
        uint64_t reboot_seq, rebuild_seq;
        int64_t created_at;
        /* What the agent last reported; obs_state < 0: absent, or never
         * reported (then observed is 0). */
        int obs_state;
        int observed;
        enum storage storage;
        char group[TMSG_STR]; /* anti-affinity group; "" for none */
        uint64_t obs_reboot_done, obs_rebuild_done;
        char obs_error[TMSG_ERR];
        int64_t host_last_seen;
        uint64_t resize_seq, obs_resize_done;
        int rescue, obs_rescue;
        uint32_t cpu_cap; /* percent of each vCPU; 0: no cap */
        uint64_t restore_seq, restore_snap; /* restore snapshot restore_snap's disk */
        uint64_t obs_restore_done;
        int snapshotting; /* an offline snapshot of it is being made */
        uint64_t networks[TMSG_MAX_NICS]; /* its private networks, in attach order */
        size_t n_networks;
};

/* An account's SSH public key (the native API's ssh_keys ids). */
#define STORE_SSHKEY_MAX 4096 /* longest public key line kept */
#define STORE_SSHKEYS_PER_ACCOUNT 100
struct ssh_key {
        uint64_t id;
        uint64_t account_id;
        char name[64];
        char fingerprint[64];
        char public_key[STORE_SSHKEY_MAX];
        int64_t created_at;
        uint64_t user_id;    /* the Tilaa API user it is bound to (0: none) */
        int64_t modified_at; /* its last change (created_at until one) */
};

/* An Idempotency-Key of a POST: the store records it in the transaction
 * that has the request's effect, so a retry never has it twice. */
struct idem {
        uint64_t account_id;
        const char *key;
        uint8_t hash[32]; /* of the request: method, path and body */
};
#define STORE_IDEM_TTL_MS (24 * 3600 * 1000LL) /* a key is remembered a day */

/* What a key's first request answered: body NULL if the broker stopped
 * between the effect and saving the answer (re-render from resource_id). */
struct idem_rec {
        uint8_t hash[32];
        int status;
        uint64_t resource_id;
        char *body; /* malloc'd */
        char location[128];
};

/* A template deployment: the VPS it made and its config without secrets. */
struct deployment {
        uint64_t id;
        uint64_t account_id;
        char template_id[32];
        char version[16];
        char name[STORE_NAME_MAX];
        uint64_t vm_id;
        char config[2048]; /* JSON */
        int64_t created_at;
};

struct deploy_new {
        const char *template_id, *version;
        const char *config; /* JSON, no secrets */
};

#define STORE_VM_SSH_KEYS_MAX 32
struct vm_new {
        uint64_t account_id;
        const char *name, *size, *image;
        const char *site; /* NULL: any */
        uint32_t vcpus, ram_mb, disk_gb;
        enum storage storage;
        const char *group; /* anti-affinity group of the account (NULL: none) */
        const struct sched_params *sched; /* NULL: defaults (cpu x4, spread) */
        const struct idem *idem;          /* NULL: none */
        const uint64_t *ssh_keys;         /* the account's SSH key ids for the guest */
        size_t n_ssh_keys;                /* at most STORE_VM_SSH_KEYS_MAX */
        const char *user_data;            /* cloud-init user-data, or NULL */
        const char *dns_name;             /* Tilaa: its DNS name, or NULL */
        const char *admin_password;       /* Tilaa: root's initial password (the seed
                                           * makes root log in with it), or NULL */
        uint32_t cpu_cap;                 /* percent of each vCPU, 1..99; 0 or 100: none */
        const struct deploy_new *deploy;  /* made by a template deployment, or NULL */
        uint64_t from_snap;               /* its disk a copy of this ready snapshot of the
                                           * account (placed on the snapshot's host; image
                                           * the snapshot's, disk_gb at least its): 0: none */
        uint64_t network_id;              /* attached at creation to this private network
                                           * of the account: 0: none */
        uint64_t *ret_deploy_id;          /* with deploy: the deployment's id */
        char *why;                        /* optional: why nothing fits */
        size_t why_len;
};

enum vm_action {
        VM_ACT_START,
        VM_ACT_SHUTDOWN,
        VM_ACT_REBOOT,
        VM_ACT_REBUILD,
        VM_ACT_POWEROFF, /* stopped at once */
        VM_ACT_RESCUE,   /* boot the host's rescue system, the disk attached */
        VM_ACT_UNRESCUE, /* back to its own system */
        VM_ACT__MAX,
};

/* path: a SQLite file, or a PostgreSQL server's URL (postgresql://... or
 * postgres://..., see store_pg.c): several brokers may share one such
 * database. */
int store_open(const char *path, struct store **ret);
void store_free(struct store *s);
/* Whether a `db` setting names a PostgreSQL server. */
int store_is_pg_url(const char *db);
/* The `db` setting for logs: a URL's password replaced by "***". */
void store_db_redact(const char *db, char *out, size_t len);

/* Changes whenever this process commits (or rolls back) a write: an answer
 * rendered from reads that began after reading the version is current
 * while it stays the same. Writes of other processes sharing the database
 * are not seen: on PostgreSQL (which several brokers may share) it
 * therefore changes at every call, and caches keyed by it never hit. */
uint64_t store_version(struct store *s);

/* Other brokers' changes: fn(ud, host_id) is called, from a thread of the
 * store, after another process sharing the database committed a change of
 * host_id's desired state (its generation moved); host_id 0: any host may
 * have changed (the watch was interrupted and is back). On PostgreSQL by
 * LISTEN/NOTIFY. The SQLite back-end serves one broker and never calls fn
 * (this process's writers notify the hub themselves). One watch per store
 * (-EBUSY); fn NULL stops it, returning once no call of fn is running. */
typedef void (*store_watch_fn)(void *ud, uint64_t host_id);
int store_watch(struct store *s, store_watch_fn fn, void *ud);

/* The installation's id key (made at the first start, never changed). */
const struct id_key *store_id_key(struct store *s);

/* Accounts and keys. */
int store_account_create(struct store *s, const char *name, enum tier tier, struct account *ret);
int store_account_by_name(struct store *s, const char *name, struct account *ret);
int store_account_list(struct store *s, struct account **ret, size_t *ret_n);
int store_key_create(struct store *s, uint64_t account_id, const char *prefix,
                     const uint8_t hash[32], int read_only, uint64_t *ret_id);
/* The account's keys, live and revoked, oldest first (malloc'd). */
int store_key_list(struct store *s, uint64_t account_id, struct api_key_info **ret, size_t *ret_n);
/* Revokes one of the account's keys: 0 (also if already revoked), -ENOENT. */
int store_key_revoke(struct store *s, uint64_t account_id, uint64_t key_id);
/* Every live key with this prefix (normally one). */
int store_key_find(struct store *s, const char *prefix, struct api_key *ret, size_t max,
                   size_t *ret_n);

/* Hosts: the agent link. */
int store_host_hello(struct store *s, const struct msg_hello *h, int64_t now,
                     uint64_t *ret_host_id, int *ret_rebooted);
int store_host_by_name(struct store *s, const char *name, struct host *ret);
int store_host_generation(struct store *s, uint64_t host_id, uint64_t *ret_gen);
/* The host's id and boot id by name, cheaply (the agent link's hot path). */
int store_host_lookup(struct store *s, const char *name, uint64_t *ret_id, char *boot_id,
                      size_t boot_id_len);
/* Records a Sync: last seen, applied generation, each domain's state. A
 * full report (sync->partial == 0) also marks every unlisted vm absent. */
int store_host_observe(struct store *s, uint64_t host_id, const struct msg_sync *sync,
                       int64_t now);
/* The host's full desired state; ret->domains is malloc'd. */
int store_host_desired(struct store *s, uint64_t host_id, struct msg_sync_reply *ret);
int store_hosts_touch(struct store *s, const uint64_t *ids, size_t n, int64_t now);
/* A Sync that changes nothing but last_seen writes nothing (no commit, no
 * fsync) while last_seen is at most this stale: the hub keeps it fresh
 * with store_hosts_touch() in batches. 0 (the default): always write. */
void store_set_seen_slack(struct store *s, int64_t ms);
/* Group commit: transactions committed (each one fsync) and the writes
 * they carried, since the store was opened. */
void store_commit_stats(struct store *s, uint64_t *ret_commits, uint64_t *ret_writes);
/* For tests: how many hosts the placement cache shows other than the
 * table does (0: in step), -1 before the first placement loads it. */
int store_check_host_cache(struct store *s);
int store_host_list(struct store *s, struct host **ret, size_t *ret_n);

/* Node administration: -ENOENT for an unknown host; remove is -EBUSY while
 * guests are placed on it. */
int store_host_set_draining(struct store *s, const char *name, int draining);
int store_host_remove(struct store *s, const char *name);

struct store_event {
        uint64_t id;
        int64_t at;
        char kind[32];
        uint64_t resource_id;
        char data[128];
};

/* The newest events of a host and of the guests on it, newest first. */
int store_host_events(struct store *s, uint64_t host_id, size_t limit, struct store_event **ret,
                      size_t *ret_n);

/* Records each host's passage to unreachable (not heard from within
 * timeout_ms) or back up, once, as an event. Called periodically. */
int store_hosts_liveness(struct store *s, int64_t now, int64_t timeout_ms, size_t *ret_down,
                         size_t *ret_up);
struct site {
        uint64_t id;
        char slug[TMSG_STR];
        char name[128];
        uint32_t hosts;
        char tz[64]; /* time zone (zoneinfo name): the Tilaa API's times */
};

/* The OS image catalog. A removed image stays in the table so the guests
 * made from it keep their source (for a rebuild, or a host that lost its
 * cache); only live ones are listed and can be chosen for a new guest. */
struct image {
        char slug[TMSG_STR];
        char name[128];
        char url[TMSG_URL];
        char sha256[65];   /* lowercase hex */
        char format[16];   /* qcow2 or raw */
        uint32_t min_disk_gb;
        int64_t created_at;
        uint64_t num; /* its number (the Tilaa template id), never reused */
};

/* Adds an image: -EEXIST when a live one has this slug (a removed one is
 * replaced). */
int store_image_add(struct store *s, const struct image *img);
/* Marks it removed: 0, -ENOENT. */
int store_image_remove(struct store *s, const char *slug);
/* A live image: 0, -ENOENT. */
int store_image_get(struct store *s, const char *slug, struct image *ret);
/* Live images by slug (malloc'd). */
int store_image_list(struct store *s, struct image **ret, size_t *ret_n);

/* The cloud-init inputs of a guest on this host (the agent builds its seed
 * with them): -ENOENT unless the vm is live and placed on host_id. */
int store_vm_seed(struct store *s, uint64_t host_id, uint64_t vm_id, struct msg_seed_reply *ret);

/* Every site, and creating or naming one (by slug). */
int store_sites(struct store *s, struct site **ret, size_t *ret_n);
int store_site_put(struct store *s, const char *slug, const char *name, struct site *ret);

/* Site slugs that have at least one host. */
int store_site_list(struct store *s, char (**ret)[TMSG_STR], size_t *ret_n);

/* VMs. A create places the vm on a live host with room (live: seen after
 * live_after) in the same transaction. In that transaction it also gets
 * its NICs: first a public one (addresses from its site's pool) if the
 * site has a pool, then one on req->network_id if given. -ENOSPC (no
 * room), -ENOENT (from_snap: no such ready snapshot), -EINVAL (from_snap:
 * of another image or a larger disk), -ENONET (network_id: not one of the
 * account's networks), -EADDRNOTAVAIL (the site's pool is used up; why
 * says which), -ERANGE (the network has no free address), -EDQUOT
 * (billing is enforced and the credit does not cover it; why says the
 * figures; see "prepaid billing" below). The vm keeps the month price of
 * req->size at that moment. A delete
 * releases its NICs (addresses and MACs) at once. */
int store_vm_create(struct store *s, const struct vm_new *req, int64_t now, int64_t live_after,
                    struct vm *ret);
int store_vm_get(struct store *s, uint64_t account_id, uint64_t vm_id, struct vm *ret);
int store_vm_list(struct store *s, uint64_t account_id, struct vm **ret, size_t *ret_n);
/* A page of an account's vms in id order: ids above after_id, at most
 * limit (0: all), optionally only one region or one name. */
struct vm_query {
        uint64_t account_id;
        uint64_t after_id;
        size_t limit;
        const char *region, *name; /* NULL: any */
};
int store_vm_page(struct store *s, const struct vm_query *q, struct vm **ret, size_t *ret_n);
/* Every live vm of every account (metrics). */
int store_vm_list_all(struct store *s, struct vm **ret, size_t *ret_n);
/* How many events of this kind the outbox holds. */
int store_event_count(struct store *s, const char *kind, uint64_t *ret);
/* A resize of a guest in place (its agent stops it, applies the size, grows
 * the disk and starts it again): -ENOENT; -EINVAL when the disk would
 * shrink; -ENOSPC when its host has no room for the new size (why says
 * which resource); 0 with the guest as it is now. */
struct vm_resize {
        uint64_t account_id, vm_id;
        const char *size;
        uint32_t vcpus, ram_mb, disk_gb;
        uint32_t cpu_cap;                 /* percent of each vCPU, 1..99; 0 or 100: none */
        const struct sched_params *sched; /* NULL: defaults */
        const struct idem *idem;          /* NULL: none */
        char *why;
        size_t why_len;
};
/* Billing: a dearer size is checked as an order (-EDQUOT, why says the
 * figures); the vm takes the new size's month price. */
int store_vm_resize(struct store *s, const struct vm_resize *req, struct vm *ret);

int store_vm_action(struct store *s, uint64_t account_id, uint64_t vm_id, enum vm_action act,
                    const struct idem *idem, struct vm *ret);
/* SSH keys: create is -EEXIST when the account has that fingerprint
 * already (ret->id is then the existing key's), -EDQUOT past
 * STORE_SSHKEYS_PER_ACCOUNT, -EALREADY when idem's key was claimed
 * meanwhile; get/delete -ENOENT for an unknown or another
 * account's id; page as store_vm_page (region, name unused). */
int store_sshkey_create(struct store *s, const struct ssh_key *k, const struct idem *idem,
                        struct ssh_key *ret);
int store_sshkey_get(struct store *s, uint64_t account_id, uint64_t id, struct ssh_key *ret);
int store_sshkey_delete(struct store *s, uint64_t account_id, uint64_t id);
int store_sshkey_page(struct store *s, const struct vm_query *q, struct ssh_key **ret,
                      size_t *ret_n);
/* 0 if every id is one of the account's keys, else -ENOENT and *ret_bad. */
int store_sshkey_check(struct store *s, uint64_t account_id, const uint64_t *ids, size_t n,
                       size_t *ret_bad);

/* Template deployments (made by store_vm_create with vm_new.deploy):
 * get/page/delete as SSH keys; delete also deletes its VPS (ret_host_id
 * 0 if that was gone already). */
int store_deploy_get(struct store *s, uint64_t account_id, uint64_t id, struct deployment *ret);
int store_deploy_page(struct store *s, const struct vm_query *q, struct deployment **ret,
                      size_t *ret_n);
int store_deploy_delete(struct store *s, uint64_t account_id, uint64_t id, uint64_t *ret_host_id);

/* Idempotency keys (see struct idem): 0 and the record, -ENOENT (none, or
 * older than STORE_IDEM_TTL_MS). */
int store_idem_get(struct store *s, uint64_t account_id, const char *key, int64_t now,
                   struct idem_rec *ret);
/* Saves the answer of the request that claimed the key (once). */
int store_idem_set_response(struct store *s, uint64_t account_id, const char *key,
                            const char *body, const char *location);
int store_vm_delete(struct store *s, uint64_t account_id, uint64_t vm_id, uint64_t *ret_host_id);

/* Snapshots of a guest's disk (the agent keeps them as internal qcow2
 * snapshots named by id). A snapshot is `creating` until its host reports
 * it, `ready` from then on, and `deleting` from a delete (or a rebuild of
 * its guest, which wipes the disk) until its host no longer reports it;
 * then the row goes. The desired state of a host carries the creating and
 * ready ones; a guest has at most STORE_SNAPS_PER_VM of those (an
 * overwrite's new copy not counted twice: the old one goes when the new
 * one is ready, even if renamed meanwhile). Ids are never reused. */
#define STORE_SNAPS_PER_VM 10
enum snap_state { SNAP_CREATING, SNAP_READY, SNAP_DELETING, SNAP__MAX };
const char *snap_state_to_string(enum snap_state st);

struct snapshot {
        uint64_t id;
        uint64_t account_id;
        uint64_t vm_id;
        char name[STORE_NAME_MAX];
        int online; /* made while the guest runs (else it is shut down for it) */
        enum snap_state state;
        uint64_t replaces; /* a snapshot of the same guest it overwrites (deleted once
                            * this one is ready); 0: none */
        int64_t created_at, ready_at; /* ms; ready_at 0 until ready */
        /* the guest's size and image when it was taken */
        uint32_t vcpus, ram_mb, disk_gb;
        char image[TMSG_STR];
};

/* store_snap_create's and store_snap_rename's flags. The native API's
 * names are unique per vm (0, or STORE_SNAP_OVERWRITE: the snapshot of
 * the name is replaced); the Tilaa API's need not be (STORE_SNAP_ANY_NAME)
 * and its overwrite replaces the vm's snapshot of the name (the newest of
 * them), else its most recent one (STORE_SNAP_OVERWRITE |
 * STORE_SNAP_LATEST). A replacement is a new snapshot (a new id): the old
 * one stays until it is ready, then goes. */
#define STORE_SNAP_OVERWRITE 1u
#define STORE_SNAP_ANY_NAME  2u
#define STORE_SNAP_LATEST    4u
/* A new snapshot of one of the account's vms, state creating: -ENOENT (no
 * such live vm); -EBUSY while another snapshot of it is being made, or a
 * rebuild or restore of it is in flight; -EEXIST when a creating or ready
 * snapshot of the vm has this name, unless flags has STORE_SNAP_OVERWRITE
 * (then the new one replaces it once ready, and the old stays until then)
 * or STORE_SNAP_ANY_NAME; -EDQUOT past STORE_SNAPS_PER_VM (a replaced one
 * not counted); -EALREADY when idem's key was claimed meanwhile. */
int store_snap_create(struct store *s, uint64_t account_id, uint64_t vm_id, const char *name,
                      int online, unsigned flags, const struct idem *idem, int64_t now,
                      struct snapshot *ret);
/* One of the account's snapshots in any state: 0, -ENOENT. */
int store_snap_get(struct store *s, uint64_t account_id, uint64_t snap_id, struct snapshot *ret);
/* The account's ready and deleting snapshots (those that exist on a host),
 * of one vm or (vm_id 0) of all, by id; malloc'd. */
int store_snap_list(struct store *s, uint64_t account_id, uint64_t vm_id, struct snapshot **ret,
                    size_t *ret_n);
/* -ENOENT (also when deleting), -EEXIST (another creating or ready
 * snapshot of the vm has the name, unless flags has STORE_SNAP_ANY_NAME). */
int store_snap_rename(struct store *s, uint64_t account_id, uint64_t snap_id, const char *name,
                      unsigned flags, struct snapshot *ret);
/* Marks it deleting (0 also if it was already); -ENOENT; -EBUSY while a
 * restore of it is in flight. ret (may be NULL): the snapshot now. */
int store_snap_delete(struct store *s, uint64_t account_id, uint64_t snap_id,
                      struct snapshot *ret);
/* Restores the guest's disk to a ready snapshot (its agent power-cycles it
 * and leaves it in the power state asked for): -ENOENT; -EBUSY unless the
 * snapshot is ready, or while a rebuild, a restore or a snapshot of the
 * guest is in flight; -EALREADY when idem's key was claimed meanwhile. */
int store_snap_restore(struct store *s, uint64_t account_id, uint64_t snap_id,
                       const struct idem *idem, struct vm *ret_vm);
/* Restores a snapshot of another of the account's vms onto vm_id (the
 * Tilaa API's restore_snapshot takes any of the account's snapshots): the
 * vm is rebuilt from a copy of the snapshot's disk, as a vm made from a
 * snapshot is; its own disk and snapshots go, and its image becomes the
 * snapshot's. A snapshot lives in its vm's disk, so both vms must be on
 * one host: -EXDEV otherwise; -EFBIG when the snapshot's disk is larger
 * than the vm's; -ENOENT; -EBUSY as store_snap_restore (also while the
 * source vm makes a snapshot). */
int store_snap_restore_into(struct store *s, uint64_t account_id, uint64_t snap_id,
                            uint64_t vm_id, struct vm *ret_vm);

/* ---- private networks and public address pools ----
 *
 * A private network of an account is one VXLAN segment (its vni, from
 * STORE_VNI_MIN..STORE_VNI_MAX, unique, handed out in turn so a deleted
 * network's vni is not soon reused) with an IPv4 prefix the account
 * chose. A guest has at most TMSG_MAX_NICS NICs, in order: the public
 * one (network 0) when its site has a pool, then one per private network
 * it is attached to. Each NIC has a MAC of its own (52:54:00 and three
 * random bytes, unique) and its addresses: on a private network the first
 * free one past the network address and the first host address (.1, kept
 * for a router); from a site's pool the first free one that is neither
 * the network, the last (broadcast) address nor the gateway, and an IPv6
 * one likewise when the pool has IPv6. Changing a network's members bumps
 * the generation of every host with a guest on it (their FDB changes),
 * in the same transaction. */
#define STORE_VNI_MIN 4096u
#define STORE_VNI_MAX 16777215u
#define STORE_NETS_PER_ACCOUNT 50
#define STORE_NET_MTU 1450 /* the guests' MTU on a private network (VXLAN over 1500) */
#define STORE_CIDR_MAX TMSG_IP

struct network {
        uint64_t id;
        uint64_t account_id;
        char name[STORE_NAME_MAX];
        char cidr[STORE_CIDR_MAX]; /* "10.0.0.0/24" */
        uint32_t vni;
        int64_t created_at;
        size_t first_vm, n_vms; /* its live VPS: a slice of the vm ids returned beside it */
};

/* A new network (cidr already checked with ipam_private_check()):
 * -EADDRINUSE when it overlaps another network of the account (ret->id,
 * ret->cidr: that one's), -EDQUOT past STORE_NETS_PER_ACCOUNT, -EALREADY
 * when idem's key was claimed meanwhile. */
int store_net_create(struct store *s, uint64_t account_id, const char *name, const char *cidr,
                     const struct idem *idem, int64_t now, struct network *ret);
/* One of the account's networks (-ENOENT) and, if ret_vms is not NULL,
 * the ids of its live VPS in id order (malloc'd, ret->first_vm 0). */
int store_net_get(struct store *s, uint64_t account_id, uint64_t net_id, struct network *ret,
                  uint64_t **ret_vms);
/* The account's networks in id order (malloc'd) and their VPS (each
 * network's a slice of *ret_vms, malloc'd). */
int store_net_list(struct store *s, uint64_t account_id, struct network **ret, size_t *ret_n,
                   uint64_t **ret_vms, size_t *ret_n_vms);
/* -ENOENT; -EBUSY while a VPS is attached to it. */
int store_net_delete(struct store *s, uint64_t account_id, uint64_t net_id);
/* Attaches one of the account's VPS to one of its networks (a new NIC with
 * the network's first free address): -ENOENT (either is unknown or
 * another account's), -EEXIST (attached already), -EDQUOT (the VPS has
 * TMSG_MAX_NICS NICs), -ERANGE (no free address), -EALREADY (idem's key
 * claimed meanwhile); 0 with the VPS as it is now. */
int store_net_attach(struct store *s, uint64_t account_id, uint64_t net_id, uint64_t vm_id,
                     const struct idem *idem, struct vm *ret);
/* The hosts whose desired state depends on the vm's private networks: each
 * host with a guest on any of them (the vm's own included), by id
 * (malloc'd; none if it has no private NIC). For hub_notify() after a
 * change of the vm's networks. */
int store_vm_net_hosts(struct store *s, uint64_t vm_id, uint64_t **ret, size_t *ret_n);

/* One guest NIC, as store_vm_nics() reads it. */
struct nic {
        uint64_t id;
        uint64_t vm_id;
        uint64_t network_id; /* 0: public */
        uint32_t position;
        char mac[TMSG_MAC];
        char ipv4[TMSG_IP], ipv6[TMSG_IP]; /* "" when none; without a prefix length */
};
/* A vm's NICs in position order (malloc'd). */
int store_vm_nics(struct store *s, uint64_t vm_id, struct nic **ret, size_t *ret_n);

/* A site's public address pool (admins): IPv4 prefix and gateway inside
 * it, optionally IPv6 likewise ("" when none). */
struct ip_pool {
        char site[TMSG_STR];
        char ipv4[TMSG_IP], gateway4[TMSG_IP];
        char ipv6[TMSG_IP], gateway6[TMSG_IP];
        uint32_t used; /* public NICs of the site's guests */
        int64_t created_at;
};
/* Adds the pool of a site (values already checked): -ENOENT (no such
 * site), -EEXIST (the site has one), -EADDRINUSE (overlaps another site's
 * pool: ret->site names it). Guests made before keep no public NIC. */
int store_pool_add(struct store *s, const struct ip_pool *p, struct ip_pool *ret);
/* Every pool by site (malloc'd). */
int store_pool_list(struct store *s, struct ip_pool **ret, size_t *ret_n);
/* -ENOENT; -EBUSY while a guest has an address from it. */
int store_pool_remove(struct store *s, const char *site);

/* ---- DNS ----
 *
 * What the DNS records are made from (dns.h): every live VM with a public
 * NIC, its fqdn and its public addresses ("" when none). The fqdn is the
 * VM's DNS name (the Tilaa API's dns_name) or else its name below zone
 * ("web1" in "tasman.cloud" is "web1.tasman.cloud"). By vm id (malloc'd). */
#define STORE_FQDN_MAX 256
struct vm_dns {
        uint64_t vm_id;
        char fqdn[STORE_FQDN_MAX];
        char ipv4[TMSG_IP], ipv6[TMSG_IP];
};
int store_dns_list(struct store *s, const char *zone, struct vm_dns **ret, size_t *ret_n);
/* ---- prepaid billing ----
 *
 * Money is in whole cents (EUR). Each size has a month price (table
 * prices; a size without a row costs nothing); a vm keeps the price it
 * was ordered (or last resized) at, in a record of its own that outlives
 * the vm's row until its last day is invoiced. Its charge for a day is month * 12 / 365 rounded to the
 * nearest cent, halves up: store_day_charge(). Invoicing is per local day
 * of the billing zone (days since 1970-01-01, as tz_local_day() counts
 * them): one invoice line per service that existed at any time during the
 * day, drawn from the account's credit, which may go below zero.
 *
 * When billing is enforced (store_set_billing(s, 1), set once at start),
 * store_vm_create() refuses an order with -EDQUOT unless the account's
 * credit covers one day of all its live services with the new one
 * (credit >= their day charges + the new one's); req->why then says the
 * figures. The check is in the creating transaction. */
struct price {
        char size[32];
        int64_t month_cents;
        int64_t day_cents; /* store_day_charge(month_cents) */
};

struct credit {
        int64_t balance_cents;
        int64_t daily_cents; /* the day charges of its live services */
        uint32_t services;   /* its live services */
};

struct invoice_line {
        uint64_t id;
        uint64_t account_id;
        uint64_t vm_id;
        char vm_name[STORE_VM_NAME_MAX];
        int64_t day; /* local day, days since 1970-01-01 */
        char size[32];
        int64_t amount_cents;
        int64_t created_at; /* ms */
};

struct billing_run {
        size_t lines;    /* invoice lines written */
        size_t accounts; /* accounts charged */
        int64_t total_cents;
};

int64_t store_day_charge(int64_t month_cents);
void store_set_billing(struct store *s, int enforce);
int store_billing_enforced(struct store *s);

/* Prices by month price (malloc'd); set: applies to orders from now on,
 * -EINVAL for a negative or absurd price. */
int store_price_list(struct store *s, struct price **ret, size_t *ret_n);
int store_price_set(struct store *s, const char *size, int64_t month_cents);

/* Adds credit (1 cent .. MONEY_PARSE_MAX_CENTS, else -EINVAL) and records
 * it: 0 and the new balance, -ENOENT for an unknown account. */
int store_credit_add(struct store *s, uint64_t account_id, int64_t cents, int64_t now,
                     int64_t *ret_balance);
int store_credit_get(struct store *s, uint64_t account_id, struct credit *ret);
/* The account's newest invoice lines first, at most limit (0: all); malloc'd. */
int store_invoice_list(struct store *s, uint64_t account_id, size_t limit,
                       struct invoice_line **ret, size_t *ret_n);

/* The last day invoiced: 0, -ENOENT before the first run or mark. */
int store_billing_day(struct store *s, int64_t *ret_day);
/* Records day as invoiced without charging anything, unless a later day is
 * (billing starts after it, or is off); forgets the vms deleted before
 * prune_before_ms (the start of the day after it). */
int store_billing_mark(struct store *s, int64_t day, int64_t prune_before_ms);
/* Invoices one day, whose instants are [start_ms, end_ms), in one
 * transaction that also records it as the last day invoiced: a crash
 * leaves it wholly done or not at all. -EALREADY (charging nothing) if
 * the day is invoiced already; -EINVAL if it is not the day after the last
 * one invoiced (none may be skipped) or end_ms <= start_ms. */
int store_billing_run(struct store *s, int64_t day, int64_t start_ms, int64_t end_ms,
                      int64_t now, struct billing_run *ret);

/* ---- the Tilaa API (api_tilaa.c) ----
 *
 * API users log in to the Tilaa API with HTTP Basic auth: an e-mail
 * (unique across all accounts, case-insensitive, stored lowercase) and a
 * password kept as an argon2id encoded hash. */
#define STORE_EMAIL_MAX 254
#define STORE_PERSON_MAX 64
#define STORE_PWHASH_MAX 192
struct api_user {
        uint64_t id;
        uint64_t account_id;
        char email[STORE_EMAIL_MAX + 1];
        char first_name[STORE_PERSON_MAX], last_name[STORE_PERSON_MAX];
        char hash[STORE_PWHASH_MAX];
        int64_t created_at;
};
/* -EEXIST (the e-mail is taken), -ENOENT (no such account). */
int store_api_user_create(struct store *s, const struct api_user *u, struct api_user *ret);
/* One user by e-mail (any account): 0, -ENOENT. */
int store_api_user_by_email(struct store *s, const char *email, struct api_user *ret);
/* The account's users by id (malloc'd). */
int store_api_user_list(struct store *s, uint64_t account_id, struct api_user **ret,
                        size_t *ret_n);
/* -ENOENT when the account has no user with this e-mail. */
int store_api_user_delete(struct store *s, uint64_t account_id, const char *email);

/* A site's time zone (checked by the caller): 0, -ENOENT. */
int store_site_set_tz(struct store *s, const char *slug, const char *tz);
/* A live image by its number: 0, -ENOENT. */
int store_image_by_num(struct store *s, uint64_t num, struct image *ret);

/* What the Tilaa API shows of a VM beyond struct vm. */
#define STORE_DNS_NAME_MAX 254
#define STORE_VM_PASSWORD_MAX 64
struct vm_tilaa {
        uint64_t vm_id;
        char dns_name[STORE_DNS_NAME_MAX + 1]; /* "" when none */
        char admin_password[STORE_VM_PASSWORD_MAX];
        int64_t cancel_at; /* ms; 0: not cancelled */
        uint64_t site_id;
        char site_name[128];
        char site_tz[64];
        uint64_t template_id; /* its image's number (0: the image is gone) */
        char template_name[128];
};
/* The account's live vms (vm_id 0) or one (-ENOENT), by id (malloc'd). */
int store_vm_tilaa_list(struct store *s, uint64_t account_id, uint64_t vm_id,
                        struct vm_tilaa **ret, size_t *ret_n);

/* An edit of a VM (the Tilaa API's), in one transaction: -ENOENT;
 * -ECANCELED when the VM is cancelled; -EDQUOT when billing is enforced and
 * the credit does not cover a dearer size (why says the figures; as
 * store_vm_resize); -EINVAL when the disk would shrink
 * without a reinstall; -ENOSPC when its host has no room (why says which);
 * 0 with the vm as it is now. A new size is a resize (the agent stops,
 * redefines and starts it); a new image or reinstall is a rebuild (the
 * disk is wiped, its snapshots with it). */
struct vm_edit {
        uint64_t account_id, vm_id;
        const char *name;  /* NULL: kept */
        int resize;        /* 1: size, vcpus, ram_mb, disk_gb, cpu_cap below */
        const char *size;
        uint32_t vcpus, ram_mb, disk_gb, cpu_cap;
        const char *image; /* NULL: kept; else reinstalled from it */
        int reinstall;
        const struct sched_params *sched; /* NULL: defaults */
        char *why;
        size_t why_len;
};
int store_vm_edit(struct store *s, const struct vm_edit *e, struct vm *ret);

/* Cancels a VM at cancel_at (ms; 0 undoes it): 0, -ENOENT. */
int store_vm_cancel(struct store *s, uint64_t account_id, uint64_t vm_id, int64_t cancel_at);
/* Deletes every live vm whose cancellation time is at or before now_ms,
 * each in its own transaction; *ret_hosts (malloc'd, may be NULL when
 * *ret_n is 0) gets the host of each deleted vm (for hub_notify()). */
int store_vm_cancel_due(struct store *s, int64_t now_ms, uint64_t **ret_hosts, size_t *ret_n);

/* Metadata (cloud-init user-data) profiles of an account. */
#define STORE_USER_DATA_MAX (64 * 1024) /* bytes, as the agent's seed takes */
#define STORE_METADATA_PER_ACCOUNT 100
struct metadata {
        uint64_t id;
        uint64_t account_id;
        char name[STORE_NAME_MAX];
        char *user_data; /* malloc'd (metadata_free / the list's free) */
        int64_t created_at, modified_at;
};
/* create: -EDQUOT past STORE_METADATA_PER_ACCOUNT. get/update/delete:
 * -ENOENT for an unknown or another account's id. update: name or
 * user_data NULL keeps it. */
int store_metadata_create(struct store *s, uint64_t account_id, const char *name,
                          const char *user_data, struct metadata *ret);
int store_metadata_get(struct store *s, uint64_t account_id, uint64_t id, struct metadata *ret);
int store_metadata_list(struct store *s, uint64_t account_id, struct metadata **ret,
                        size_t *ret_n);
int store_metadata_update(struct store *s, uint64_t account_id, uint64_t id, const char *name,
                          const char *user_data, struct metadata *ret);
int store_metadata_delete(struct store *s, uint64_t account_id, uint64_t id);
/* Frees the user_data of n profiles, then the array itself. */
void store_metadata_free(struct metadata *m, size_t n);

/* A key's change (the Tilaa API's edit): label, key line and its
 * fingerprint, user: -ENOENT; -EEXIST (another key of the account has the
 * fingerprint). */
int store_sshkey_update(struct store *s, const struct ssh_key *k, struct ssh_key *ret);
