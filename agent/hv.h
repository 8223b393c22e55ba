/* hv: the hypervisor as the agent sees it. hv_libvirt.c is its only
 * implementation and the only file that includes libvirt.
 *
 * The agent owns a domain when its name starts with HV_NAME_PREFIX *and* it
 * carries our <metadata> element; hv_list() returns only those, and every
 * other call refuses a vm it does not own, so nothing else on the host is
 * ever touched. Calls are idempotent: starting a running domain, destroying
 * a stopped one, undefining a missing one all return 0.
 *
 * Errors are negative errno values; the libvirt message is logged once,
 * here, naming the domain. One thread at a time per struct hv.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "domxml.h"

#define HV_NAME_PREFIX "tasman-"

struct hv;

struct hv_domain {
        uint64_t vm_id;
        enum power state;
        uint64_t reboot_done;
        uint64_t rebuild_done;
        uint64_t resize_done;
        int rescue;
        uint64_t restore_done;
        uint64_t snaps[TMSG_MAX_SNAPS]; /* its snapshots (ids), ascending */
        size_t n_snaps;
        int nics_known; /* nic_macs holds the NICs of its definition */
        char nic_macs[TMSG_MAX_NICS][TMSG_MAC]; /* lower case, in order */
        size_t n_nics;
};

struct hv_node {
        uint32_t vcpus;
        uint64_t ram_mb;
        char type[16]; /* "kvm" or "qemu" (or "test") */
};

int hv_open(const char *uri, struct hv **ret);

/* Several agents may share one libvirt (simulated hosts): each writes its
 * host id into the metadata of the domains it defines, and owns only those
 * (and those whose metadata names no host, written before host ids were).
 * -EINVAL unless host is 1-63 of [A-Za-z0-9._-]. */
int hv_set_host(struct hv *hv, const char *host);
void hv_free(struct hv *hv);

int hv_node_info(struct hv *hv, struct hv_node *ret);

/* The domains we own, malloc'd array (caller frees), sorted by vm_id. */
int hv_list(struct hv *hv, struct hv_domain **ret, size_t *ret_n);

/* One domain we own, read now; -ENOENT if it is not there (or not ours),
 * -EIO if libvirt could not tell (the caller must not take it as absent). */
int hv_get(struct hv *hv, uint64_t vm_id, struct hv_domain *ret);

/* Defines (persistently) the domain for spec; an existing domain of that
 * vm is redefined with the same counters. */
int hv_define(struct hv *hv, const struct domxml_params *p);
int hv_start(struct hv *hv, uint64_t vm_id);
int hv_shutdown(struct hv *hv, uint64_t vm_id); /* graceful: ACPI */
int hv_destroy(struct hv *hv, uint64_t vm_id);  /* power off */
int hv_undefine(struct hv *hv, uint64_t vm_id);
/* Adds NIC n to the domain: to its definition, and to the running guest
 * when it runs (hot-plug). -EOPNOTSUPP where the hypervisor cannot
 * (libvirt's test driver). */
int hv_nic_attach(struct hv *hv, uint64_t vm_id, const struct domxml_nic *n);

/* Defines (or redefines, keeping its uuid) the nwfilter `name` from xml,
 * which has no <uuid>. */
int hv_nwfilter_define(struct hv *hv, const char *name, const char *xml);

/* Records the last reboot/rebuild counters carried out, in the metadata
 * (the other marks stay as they are). */
int hv_set_counters(struct hv *hv, uint64_t vm_id, uint64_t reboot_done, uint64_t rebuild_done);

/* ---- snapshots ----
 *
 * A guest's snapshots are libvirt internal snapshots of its qcow2 disk,
 * named HV_SNAP_PREFIX + id; only those are listed and touched. Of a
 * stopped guest, a snapshot is of the disk alone; of a running one it is a
 * checkpoint (QEMU stops the guest for the copy), its file systems frozen
 * first through the QEMU guest agent when the guest runs one. */
#define HV_SNAP_PREFIX "tasman-snap-"

/* Makes snapshot snap_id (0 when it exists already). *ret_frozen tells
 * whether the guest agent froze the file systems for it. */
int hv_snap_create(struct hv *hv, uint64_t vm_id, uint64_t snap_id, int *ret_frozen);
/* Deletes it; 0 when it is not there. */
int hv_snap_delete(struct hv *hv, uint64_t vm_id, uint64_t snap_id);
/* Puts the disk back as it was in snapshot snap_id; the domain must not be
 * running, and is left stopped. The domain's definition is the one saved
 * with the snapshot afterwards: the caller defines it again. -ENOENT when
 * there is no such snapshot. */
int hv_snap_revert(struct hv *hv, uint64_t vm_id, uint64_t snap_id);

/* ---- storage: pools and guest disks ----
 *
 * The agent's guest disks are volumes in directory pools it owns (named
 * HV_POOL_PREFIX + storage type, e.g. "tasman-ssd"); a volume is ours when
 * its name starts with HV_NAME_PREFIX. Volumes are never touched in a pool
 * of another name. */
#define HV_POOL_PREFIX "tasman-"

/* Makes the directory pool `name` at `dir` exist, built, running and
 * autostarted. -EEXIST when a pool of that name uses another directory. */
int hv_pool_ensure(struct hv *hv, const char *name, const char *dir);

/* Creates the qcow2 volume `vol` of capacity_bytes in `pool` over the
 * backing file (of backing_fmt, "qcow2" or "raw"; NULL backing: an empty
 * disk). An existing volume of that name is kept as it is. Writes its path. */
int hv_vol_create(struct hv *hv, const char *pool, const char *vol, uint64_t capacity_bytes,
                  const char *backing, const char *backing_fmt, char *path, size_t path_len);

/* Grows the volume to capacity_bytes (never shrinks it); 0 when it is that
 * big already. The domain using it must not be running. */
int hv_vol_grow(struct hv *hv, const char *pool, const char *vol, uint64_t capacity_bytes);

/* Has libvirt read the pool's directory again (a file put there by hand
 * becomes a volume). */
int hv_pool_refresh(struct hv *hv, const char *pool);

/* Deletes the volume; 0 when it is not there. */
int hv_vol_delete(struct hv *hv, const char *pool, const char *vol);

/* Names of our volumes (HV_NAME_PREFIX...) in the pool, malloc'd array of
 * malloc'd strings; free with hv_names_free. */
int hv_vol_list(struct hv *hv, const char *pool, char ***ret, size_t *ret_n);
void hv_names_free(char **names, size_t n);
