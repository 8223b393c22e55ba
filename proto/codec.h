/* codec: the agent link's messages as plain structs, and their wire form.
 *
 * codec.c is the only file that calls protobuf-c. Decoding checks every
 * size before use: the whole message (TMSG_MAX_BYTES), every string against
 * its field, and the number of domains (TMSG_MAX_DOMAINS); anything else is
 * -EINVAL or -EMSGSIZE and the struct is left empty. A decoded or filled
 * struct tmsg owns its domain arrays: release them with tmsg_clear().
 * Pure functions; any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TMSG_MAX_BYTES (8u << 20)
#define TMSG_MAX_DOMAINS 8192u
#define TMSG_STR 64
#define TMSG_ERR 256

enum power {
        POWER_UNKNOWN = 0,
        POWER_RUNNING = 1,
        POWER_STOPPED = 2,
        POWER_PAUSED = 3,
        POWER_CRASHED = 4,
        POWER__MAX,
};

const char *power_to_string(enum power p);

enum tmsg_type {
        TMSG_NONE,
        TMSG_HELLO,
        TMSG_HELLO_REPLY,
        TMSG_SYNC,
        TMSG_SYNC_REPLY,
        TMSG_ERROR,
        TMSG_SEED_REQUEST,
        TMSG_SEED_REPLY,
};

/* Error codes carried in TMSG_ERROR (positive errno values). */
#define TMSG_E_UNKNOWN_HOST 2 /* ENOENT: send Hello first */

/* Storage types of guest disks (both APIs say ssd or hdd). */
enum storage { STORAGE_SSD, STORAGE_HDD, STORAGE__MAX };

static inline const char *storage_to_string(enum storage t)
{
        return t == STORAGE_HDD ? "hdd" : "ssd";
}

/* 0, or -1 for a name that is not a storage type. */
static inline int storage_from_string(const char *s, enum storage *ret)
{
        if (s && s[0] == 's' && s[1] == 's' && s[2] == 'd' && !s[3])
                *ret = STORAGE_SSD;
        else if (s && s[0] == 'h' && s[1] == 'd' && s[2] == 'd' && !s[3])
                *ret = STORAGE_HDD;
        else
                return -1;
        return 0;
}

struct msg_hello {
        char host_id[TMSG_STR];
        char site[TMSG_STR];
        char underlay_ip[TMSG_STR];
        char boot_id[TMSG_STR];
        char agent_version[TMSG_STR];
        char hv_type[TMSG_STR];
        uint32_t vcpus;
        uint64_t ram_mb;
        uint64_t disk_gb; /* ssd */
        uint64_t hdd_gb;
};

struct msg_hello_reply {
        uint64_t host_num;
        uint32_t hold_ms;
};

/* Network interfaces per guest, addresses per interface. */
#define TMSG_MAX_NICS 4u
#define TMSG_MAX_NIC_ADDRS 4u
#define TMSG_IP 64  /* an address (with /prefix) as text */
#define TMSG_MAC 18 /* aa:bb:cc:dd:ee:ff */
#define TMSG_MAX_NETWORKS 4096u
#define TMSG_MAX_REMOTES (1u << 16) /* remote hosts, over all networks */
#define TMSG_MAX_FDB (1u << 18)     /* remote guests' entries, over all networks */

struct nic_desired {
        uint32_t vni; /* 0: the public bridge */
        char mac[TMSG_MAC];
        char addrs[TMSG_MAX_NIC_ADDRS][TMSG_IP];
        size_t n_addrs;
        char gateway4[TMSG_IP];
        char gateway6[TMSG_IP];
};

/* A private network on the host; its remote hosts and entries are slices
 * of the sync reply's remotes and fdb arrays. */
struct net_desired {
        uint32_t vni;
        uint32_t mtu;
        size_t first_remote, n_remotes;
        size_t first_fdb, n_fdb;
};

struct fdb_desired {
        char mac[TMSG_MAC];
        char host[TMSG_IP];
};

/* Snapshots per guest the link carries (the broker allows fewer). */
#define TMSG_MAX_SNAPS 16u

struct dom_observed {
        uint64_t vm_id;
        enum power state;
        uint64_t reboot_done;
        uint64_t rebuild_done;
        char error[TMSG_ERR];
        uint64_t resize_done;
        int rescue;
        uint64_t snaps[TMSG_MAX_SNAPS]; /* snapshots on the host, by id */
        size_t n_snaps;
        uint64_t restore_done;
        uint64_t snap_failed; /* a wanted snapshot that could not be made; 0: none */
};

struct msg_sync {
        char host_id[TMSG_STR];
        char boot_id[TMSG_STR];
        uint64_t applied_generation;
        uint32_t max_hold_ms;
        struct dom_observed *domains;
        size_t n_domains;
        uint32_t vcpus_used;
        uint64_t ram_mb_used;
        int partial;        /* domains: only the changed ones */
        uint32_t n_present; /* domains the agent owns now */
};

struct dom_desired {
        uint64_t vm_id;
        char hostname[TMSG_STR];
        uint32_t vcpus;
        uint32_t ram_mb;
        uint32_t disk_gb;
        enum power power;
        uint64_t reboot_seq;
        uint64_t rebuild_seq;
        char image[TMSG_STR];
        enum storage storage; /* STORAGE__MAX: a type this build does not know */
        int force_off;        /* power STOPPED at once (poweroff), not gracefully */
        uint64_t resize_seq;  /* a resize to carry out while stopped */
        int rescue;           /* in the rescue system */
        uint32_t cpu_cap;     /* percent of each vCPU, 1..99; 0: no cap */
        struct snap_desired {
                uint64_t id;
                int online;
        } snaps[TMSG_MAX_SNAPS]; /* the snapshots it should have, by id */
        size_t n_snaps;
        uint64_t restore_seq;  /* restore restore_snap (its disk) */
        uint64_t restore_snap;
        uint64_t source_vm;    /* a new disk copies snapshot source_snap of source_vm */
        uint64_t source_snap;  /* 0: the disk is made from the image */
        struct nic_desired nics[TMSG_MAX_NICS];
        size_t n_nics;
};

#define TMSG_URL 2048
#define TMSG_MAX_IMAGES 1024u
struct img_desired {
        char slug[TMSG_STR];
        char url[TMSG_URL];
        char sha256[65];
        char format[16];
};

struct msg_sync_reply {
        uint64_t generation;
        struct dom_desired *domains;
        size_t n_domains;
        struct img_desired *images; /* each image the domains use, once */
        size_t n_images;
        struct net_desired *networks; /* the private networks with guests here */
        size_t n_networks;
        char (*remotes)[TMSG_IP];     /* networks[i]'s remote hosts: a slice */
        size_t n_remotes;
        struct fdb_desired *fdb;      /* networks[i]'s entries: a slice */
        size_t n_fdb;
};

#define TMSG_USER_DATA_MAX (64u << 10)
#define TMSG_SSH_KEY_MAX (16u << 10)
#define TMSG_MAX_SSH_KEYS 100u
struct msg_seed_request {
        char host_id[TMSG_STR];
        uint64_t vm_id;
};

/* Strings are malloc'd and owned by the message (tmsg_clear frees them). */
struct msg_seed_reply {
        uint64_t vm_id;
        char hostname[TMSG_STR];
        char **ssh_keys;
        size_t n_ssh_keys;
        char *user_data;        /* NULL: none */
        char admin_user[TMSG_STR];
        char admin_password[TMSG_ERR];
};

struct msg_error {
        int32_t code;
        char message[TMSG_ERR];
};

struct tmsg {
        uint64_t request_id;
        enum tmsg_type type;
        union {
                struct msg_hello hello;
                struct msg_hello_reply hello_reply;
                struct msg_sync sync;
                struct msg_sync_reply sync_reply;
                struct msg_error error;
                struct msg_seed_request seed_request;
                struct msg_seed_reply seed_reply;
        };
};

/* Encodes m into a malloc'd buffer the caller frees. 0, -EINVAL (bad type
 * or too many domains), -EMSGSIZE, -ENOMEM. */
int codec_encode(const struct tmsg *m, uint8_t **ret_buf, size_t *ret_len);

/* Decodes buf into *ret (which it overwrites). 0, -EMSGSIZE, -EINVAL. */
int codec_decode(const uint8_t *buf, size_t len, struct tmsg *ret);

/* Frees the arrays a struct tmsg owns and resets it to TMSG_NONE. */
void tmsg_clear(struct tmsg *m);
