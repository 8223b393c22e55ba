/* domxml: the libvirt domain XML of a guest and our <metadata> in it.
 *
 * Pure text functions (no libvirt), so they are tested with golden files.
 * Strings come from the broker and are escaped; returned strings are
 * malloc'd and owned by the caller. Any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define DOMXML_NS "https://tasman.dev/xmlns/domain/1"
#define DOMXML_NS_PREFIX "tasman"

/* A network interface: on a bridge, with its MAC; the filter (libvirt
 * nwfilter, e.g. tasman-clean-traffic) gets the interface's IPv4 addresses
 * as its IP parameter and its IPv6 ones as IPV6, so the guest can send from
 * nothing else. */
#define DOMXML_NIC_IPS_MAX 4
struct domxml_nic {
        const char *bridge;
        const char *mac;
        uint32_t mtu;       /* 0: the bridge's */
        const char *filter; /* NULL or "": none */
        const char *ips[DOMXML_NIC_IPS_MAX]; /* IPv4 addresses without prefix */
        size_t n_ips;
        const char *ips6[DOMXML_NIC_IPS_MAX]; /* IPv6 addresses without prefix */
        size_t n_ips6;
};

struct domxml_params {
        uint64_t vm_id;
        const char *hostname;
        const char *domain_type; /* "kvm", "qemu" or "test" */
        uint32_t vcpus;
        uint32_t ram_mb;
        uint32_t cpu_cap;    /* percent of each vCPU (cputune quota); 0: none */
        const char *kernel;  /* direct kernel boot; NULL or "" for none */
        const char *initrd;  /* NULL or "" for none */
        const char *cmdline; /* NULL or "" for none */
        const char *console_log; /* serial console to this file; NULL for none */
        const char *disk;        /* the guest's disk (qcow2 file), vda; NULL for none */
        uint64_t disk_iops;      /* I/O limits of the disk (iotune); 0: none */
        uint64_t disk_bps;
        const char *seed;        /* the cloud-init seed ISO, a read-only cdrom; NULL: none */
        uint64_t reboot_done;
        uint64_t rebuild_done;
        uint64_t resize_done;
        int rescue;       /* booted into the rescue system */
        uint64_t restore_done; /* the last snapshot restore carried out */
        const struct domxml_nic *nics; /* in order: the guest's first NIC first */
        size_t n_nics;
        const char *uuid; /* keep an existing domain's uuid on redefine; NULL: new */
        const char *host; /* the agent's host id, [A-Za-z0-9._-] (NULL or "": none) */
};

/* The domain's name: HV_NAME_PREFIX followed by the vm id. */
void domxml_name(uint64_t vm_id, char *buf, size_t len);

/* Whether s may be a host id in our metadata: 1-63 of [A-Za-z0-9._-]. */
int domxml_host_valid(const char *s);

/* Returns 0 and the vm id for a name of ours, -EINVAL otherwise. */
int domxml_parse_name(const char *name, uint64_t *ret_vm_id);

/* The whole <domain> document; NULL on out of memory. */
char *domxml_build(const struct domxml_params *p);

/* One <interface> element, as virDomainAttachDeviceFlags wants it (the
 * same text domxml_build writes for that NIC); NULL on out of memory. */
char *domxml_interface(const struct domxml_nic *n);

/* What our metadata records of a domain: the one-shot intents carried out
 * (counters) and the mode it was defined in. */
#define DOMXML_HOST_MAX 64
struct domxml_marks {
        char host[DOMXML_HOST_MAX]; /* the host id of the agent that owns it; "" when
                                       written by an agent that did not say */
        uint64_t reboot_done;
        uint64_t rebuild_done;
        uint64_t resize_done;
        int rescue;
        uint64_t restore_done;
};

/* The MAC addresses of the <interface> elements of a domain's XML, in
 * order, lower case, at most max of them (more are counted in *ret_n but
 * not written). 0, or -EINVAL on a MAC that is not aa:bb:cc:dd:ee:ff. */
int domxml_parse_macs(const char *xml, char (*macs)[18], size_t max, size_t *ret_n);

/* libvirt nwfilters of ours, defined by the agent at start (the order in
 * which they must be defined: the ones referenced first). tasman-clean-
 * traffic is libvirt's clean-traffic (no MAC, IPv4 or ARP spoofing, no
 * other layer-2 traffic) that also lets IPv6 through, from the NIC's own
 * addresses (parameter IPV6) and link-local ones only, where clean-traffic
 * drops all IPv6. */
#define DOMXML_FILTER "tasman-clean-traffic"
extern const char *const domxml_nwfilters[2];
extern const char *const domxml_nwfilter_names[2];

/* Our metadata element without namespace, as virDomainSetMetadata wants it. */
char *domxml_metadata(uint64_t vm_id, uint64_t reboot_done, uint64_t rebuild_done);
char *domxml_metadata_marks(uint64_t vm_id, const struct domxml_marks *m);

/* Parses what virDomainGetMetadata returns for our namespace. 0 or -EINVAL.
 * resize, rescue and restore, absent in what older agents wrote, read as 0. */
int domxml_parse_metadata(const char *xml, uint64_t *ret_vm_id, uint64_t *ret_reboot_done,
                          uint64_t *ret_rebuild_done);
int domxml_parse_marks(const char *xml, uint64_t *ret_vm_id, struct domxml_marks *ret);
