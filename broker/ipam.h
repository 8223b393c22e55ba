/* ipam: IPv4 and IPv6 addresses and prefixes as plain values.
 *
 * Parsing (strict: "a.b.c.d" in decimal without leading zeros, IPv6 as
 * inet_pton reads it, "/n" without leading zeros), formatting, containment
 * and overlap of prefixes, and the first free address of a prefix given
 * the ones in use. The store keeps addresses as text and uses these to
 * allocate them; the APIs use them to validate what clients and admins
 * send. Pure functions over the caller's memory; any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define IPAM_STR 64 /* the longest address or prefix as text, with its NUL */

struct ipam_addr {
        uint8_t len;   /* 4 (IPv4) or 16 (IPv6) */
        uint8_t b[16]; /* network order; IPv4 in b[0..3] */
};

struct ipam_prefix {
        struct ipam_addr addr; /* the network address (host bits zero) */
        unsigned bits;         /* prefix length */
};

/* An address: 0, or -EINVAL. */
int ipam_addr_parse(const char *s, struct ipam_addr *ret);

/* "address/bits" with the host bits zero: 0, or -EINVAL with why (may be
 * NULL) saying what is wrong. */
int ipam_prefix_parse(const char *s, struct ipam_prefix *ret, char *why, size_t why_len);

/* Text forms; buf of at least IPAM_STR bytes. */
void ipam_addr_format(const struct ipam_addr *a, char *buf, size_t len);
void ipam_prefix_format(const struct ipam_prefix *p, char *buf, size_t len);

/* <0, 0, >0 (IPv4 before IPv6, then numerically). */
int ipam_addr_cmp(const struct ipam_addr *a, const struct ipam_addr *b);

/* 1 if a is inside p (same family). */
int ipam_prefix_contains(const struct ipam_prefix *p, const struct ipam_addr *a);

/* 1 if the two prefixes share an address (same family). */
int ipam_prefix_overlap(const struct ipam_prefix *a, const struct ipam_prefix *b);

/* The network's last address (IPv4: the broadcast address). */
void ipam_prefix_last(const struct ipam_prefix *p, struct ipam_addr *ret);

/* The first address of p from its skip-th on (0: the network address),
 * below its last address, not exclude (NULL: none) and not among used
 * (any order, any family: it is sorted here): 0 and *ret, or -ENOSPC. */
int ipam_first_free(const struct ipam_prefix *p, unsigned skip, const struct ipam_addr *exclude,
                    struct ipam_addr *used, size_t n_used, struct ipam_addr *ret);

/* A customer's private network: IPv4 "a.b.c.d/n", host bits zero, inside
 * 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, n from IPAM_PRIVATE_MIN to
 * IPAM_PRIVATE_MAX. 0, or -EINVAL with why saying what is wrong. */
#define IPAM_PRIVATE_MIN 16
#define IPAM_PRIVATE_MAX 29
int ipam_private_check(const char *cidr, struct ipam_prefix *ret, char *why, size_t why_len);
