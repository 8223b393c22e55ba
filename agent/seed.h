/* seed: the cloud-init NoCloud seed of a guest.
 *
 * Every guest boots with a small ISO 9660 volume labelled "cidata" that
 * holds three documents: meta-data (instance id and hostname), user-data
 * (our #cloud-config making the admin user, with the customer's own
 * user-data after it in a MIME multipart/mixed document) and
 * network-config (version 2, one NIC). seed_meta_data(),
 * seed_user_data() and seed_network_config() are pure text functions,
 * tested with golden files; seed_build_iso() makes the volume from them
 * in memory with libisofs (this is the only file that uses it) and
 * writes it out.
 *
 * Strings from the broker go into YAML only as double-quoted scalars
 * with every control and non-ASCII character escaped, so no hostname,
 * key comment or password can end a scalar or start another key, and
 * every document we write is 7-bit ASCII. The customer's user-data is
 * carried byte for byte (as 7-bit text when it is printable ASCII, else
 * in base64) under a MIME boundary that occurs in no part. Their
 * #cloud-config comes after ours, so cloud-init's merge lets their
 * top-level keys (users:, ssh_pwauth: ...) replace ours.
 *
 * seed_check() is where the agent validates the parameters (sizes,
 * syntax); the document functions assume checked parameters but never
 * emit unescaped text whatever they get. seed_build_iso() checks again.
 * An optional string that is "" counts as not given (NULL).
 *
 * Returned strings are malloc'd and owned by the caller; parameters stay
 * the caller's. Any thread: seed_build_iso() sets libisofs up once and
 * makes one volume at a time (a lock; well under a millisecond each).
 * It blocks on fsync, so it belongs on a thread that may block on disk
 * work, not in a loop that must answer.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Hard caps that seed_check() enforces. */
#define SEED_USER_DATA_MAX (64 * 1024) /* bytes of customer user-data */
#define SEED_SSH_KEYS_MAX 100
#define SEED_SSH_KEY_LEN_MAX (16 * 1024)
#define SEED_PASSWORD_LEN_MAX 1024
#define SEED_ADDRS_MAX 16
#define SEED_NAMESERVERS_MAX 8
#define SEED_INSTANCE_ID_LEN_MAX 128

/* The volume label cloud-init's NoCloud datasource looks for. */
#define SEED_VOLID "cidata"

struct seed_addr {
        const char *cidr;    /* "192.0.2.10/24" or "2001:db8::10/64" */
        const char *gateway; /* default route of that family; NULL: none */
};

/* A guest's second and later NICs (private networks): matched by MAC and
 * named eth1, eth2...; static addresses, no default route. */
#define SEED_MORE_NICS_MAX 7
struct seed_nic {
        const char *mac;
        const struct seed_addr *addrs; /* gateways must be NULL */
        size_t n_addrs;
};

struct seed_params {
        uint64_t vm_id;
        const char *instance_id; /* NULL: "tasman-<vm_id>"; a new one (rebuild)
                                    makes cloud-init run again */
        const char *hostname;    /* short hostname (RFC 1123 label), also
                                    local-hostname */
        const char *fqdn;        /* NULL: none; else "<hostname>.<domain>" */
        const char *const *ssh_keys; /* OpenSSH public key lines for the admin
                                        user (not root) */
        size_t n_ssh_keys;
        const char *admin_user;     /* NULL: "admin" (a sudoer); "root" (Tilaa's
                                       admin.account): root itself, its login
                                       not disabled, by password over SSH too
                                       when one is given */
        const char *admin_password; /* NULL: none, key-only login; else the
                                       admin's password (plain text, not
                                       expired) and SSH password login on */
        const char *user_data; /* the customer's own user-data (#cloud-config,
                                  #! script, any cloud-init format, or a MIME
                                  document), or NULL */
        const char *mac; /* the NIC's MAC, matched and renamed eth0; NULL:
                            match by name */
        const struct seed_addr *addrs; /* none: DHCPv4 and DHCPv6/RA */
        size_t n_addrs;
        const char *const *nameservers; /* IP addresses */
        size_t n_nameservers;
        const struct seed_nic *more_nics; /* after the first (mac, addrs above) */
        size_t n_more_nics;
};

/* The three documents; NULL only on out of memory. */
char *seed_meta_data(const struct seed_params *p);
char *seed_user_data(const struct seed_params *p);
char *seed_network_config(const struct seed_params *p);

/* Checks p before anything is built: hostname an RFC 1123 label, fqdn
 * starting with it, instance id, admin user name and password, at most
 * SEED_SSH_KEYS_MAX keys of at most SEED_SSH_KEY_LEN_MAX bytes without
 * newline or other control characters, user-data at most
 * SEED_USER_DATA_MAX bytes, MAC, CIDR, gateway and nameserver syntax.
 * Returns 0, or -EINVAL with a one-line reason naming the field in err
 * (never the password itself). err may be NULL. */
int seed_check(const struct seed_params *p, char *err, size_t err_len);

/* Builds the seed volume at path: checks p, makes an ISO 9660 volume
 * labelled cidata with Rock Ridge and Joliet that holds the three
 * documents (mode 0644 inside, in its root) from memory, writes it to
 * path.tmp (mode 0600: it may hold the password), fsyncs it, renames it
 * to path and fsyncs the directory, so a reader sees the whole new seed
 * or the old one, never a part. Nothing is written anywhere else, and
 * path.tmp is removed on failure (a stale one is replaced). Returns 0 or
 * a negative errno: -EINVAL (bad parameters), -ENOMEM, -EIO (libisofs
 * failed), others from the file system (-ENOENT: no such directory).
 * On failure err gets a one-line reason naming the file. */
int seed_build_iso(const struct seed_params *p, const char *path, char *err, size_t err_len);
