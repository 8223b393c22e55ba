/* Addresses and prefixes. See ipam.h. */
#include "ipam.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(char *why, size_t len, const char *msg)
{
        if (why && len)
                snprintf(why, len, "%s", msg);
}

/* A decimal number without a sign or leading zeros, at most max. */
static int parse_dec(const char *s, size_t n, unsigned max, unsigned *ret)
{
        unsigned v = 0;
        if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return -EINVAL;
                v = v * 10 + (unsigned)(s[i] - '0');
        }
        if (v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse4(const char *s, struct ipam_addr *ret)
{
        struct ipam_addr a = { .len = 4 };
        for (int i = 0; i < 4; i++) {
                size_t n = strcspn(s, ".");
                unsigned v;
                if (parse_dec(s, n, 255, &v) < 0)
                        return -EINVAL;
                a.b[i] = (uint8_t)v;
                s += n;
                if (i < 3 && *s++ != '.')
                        return -EINVAL;
        }
        if (*s)
                return -EINVAL;
        *ret = a;
        return 0;
}

int ipam_addr_parse(const char *s, struct ipam_addr *ret)
{
        struct ipam_addr a = { .len = 16 };
        if (!s || strlen(s) >= IPAM_STR)
                return -EINVAL;
        if (!strchr(s, ':'))
                return parse4(s, ret);
        if (inet_pton(AF_INET6, s, a.b) != 1)
                return -EINVAL;
        *ret = a;
        return 0;
}

/* Byte i of the prefix mask of bits over len bytes. */
static uint8_t mask_byte(unsigned bits, unsigned i)
{
        if (bits >= (i + 1) * 8)
                return 0xff;
        if (bits <= i * 8)
                return 0;
        return (uint8_t)(0xff << (8 - (bits - i * 8)));
}

int ipam_prefix_parse(const char *s, struct ipam_prefix *ret, char *why, size_t why_len)
{
        char addr[IPAM_STR];
        struct ipam_prefix p;
        const char *slash = s ? strchr(s, '/') : NULL;
        if (!slash || (size_t)(slash - s) >= sizeof(addr)) {
                say(why, why_len, "must be an address and a prefix length, as 10.0.0.0/24");
                return -EINVAL;
        }
        memcpy(addr, s, (size_t)(slash - s));
        addr[slash - s] = '\0';
        if (ipam_addr_parse(addr, &p.addr) < 0) {
                say(why, why_len, "must be an address and a prefix length, as 10.0.0.0/24");
                return -EINVAL;
        }
        if (parse_dec(slash + 1, strlen(slash + 1), p.addr.len * 8u, &p.bits) < 0) {
                say(why, why_len, p.addr.len == 4 ? "the prefix length must be 0 to 32"
                                                  : "the prefix length must be 0 to 128");
                return -EINVAL;
        }
        for (unsigned i = 0; i < p.addr.len; i++) {
                if (p.addr.b[i] & (uint8_t)~mask_byte(p.bits, i)) {
                        struct ipam_prefix fixed = p;
                        char text[IPAM_STR], msg[IPAM_STR + 64];
                        for (unsigned k = 0; k < p.addr.len; k++)
                                fixed.addr.b[k] &= mask_byte(p.bits, k);
                        ipam_prefix_format(&fixed, text, sizeof(text));
                        snprintf(msg, sizeof(msg), "has host bits set (the network is %s)", text);
                        say(why, why_len, msg);
                        return -EINVAL;
                }
        }
        *ret = p;
        return 0;
}

void ipam_addr_format(const struct ipam_addr *a, char *buf, size_t len)
{
        if (!inet_ntop(a->len == 4 ? AF_INET : AF_INET6, a->b, buf, (socklen_t)len) && len)
                buf[0] = '\0';
}

void ipam_prefix_format(const struct ipam_prefix *p, char *buf, size_t len)
{
        char a[IPAM_STR];
        ipam_addr_format(&p->addr, a, sizeof(a));
        snprintf(buf, len, "%s/%u", a, p->bits);
}

int ipam_addr_cmp(const struct ipam_addr *a, const struct ipam_addr *b)
{
        if (a->len != b->len)
                return a->len < b->len ? -1 : 1;
        return memcmp(a->b, b->b, a->len);
}

int ipam_prefix_contains(const struct ipam_prefix *p, const struct ipam_addr *a)
{
        if (a->len != p->addr.len)
                return 0;
        for (unsigned i = 0; i < a->len; i++)
                if ((a->b[i] & mask_byte(p->bits, i)) != p->addr.b[i])
                        return 0;
        return 1;
}

int ipam_prefix_overlap(const struct ipam_prefix *a, const struct ipam_prefix *b)
{
        /* aligned blocks overlap only if one holds the other */
        return ipam_prefix_contains(a->bits <= b->bits ? a : b,
                                    a->bits <= b->bits ? &b->addr : &a->addr);
}

void ipam_prefix_last(const struct ipam_prefix *p, struct ipam_addr *ret)
{
        *ret = p->addr;
        for (unsigned i = 0; i < ret->len; i++)
                ret->b[i] |= (uint8_t)~mask_byte(p->bits, i);
}

/* a += n; 0, or -ERANGE past the family's last address. */
static int addr_add(struct ipam_addr *a, unsigned n)
{
        unsigned carry = n;
        for (int i = a->len - 1; i >= 0 && carry; i--) {
                unsigned v = a->b[i] + (carry & 0xff);
                carry >>= 8;
                a->b[i] = (uint8_t)v;
                carry += v >> 8;
        }
        return carry ? -ERANGE : 0;
}

static int cmp_addr(const void *x, const void *y)
{
        return ipam_addr_cmp(x, y);
}

int ipam_first_free(const struct ipam_prefix *p, unsigned skip, const struct ipam_addr *exclude,
                    struct ipam_addr *used, size_t n_used, struct ipam_addr *ret)
{
        struct ipam_addr cand = p->addr, last;
        size_t j = 0;
        ipam_prefix_last(p, &last);
        if (n_used)
                qsort(used, n_used, sizeof(*used), cmp_addr);
        if (addr_add(&cand, skip) < 0)
                return -ENOSPC;
        /* each step passes the exclusion or one used address: bounded */
        while (ipam_addr_cmp(&cand, &last) < 0) {
                while (j < n_used && ipam_addr_cmp(&used[j], &cand) < 0)
                        j++;
                int taken = (j < n_used && ipam_addr_cmp(&used[j], &cand) == 0) ||
                            (exclude && ipam_addr_cmp(exclude, &cand) == 0);
                if (!taken) {
                        *ret = cand;
                        return 0;
                }
                if (addr_add(&cand, 1) < 0)
                        break;
        }
        return -ENOSPC;
}

int ipam_private_check(const char *cidr, struct ipam_prefix *ret, char *why, size_t why_len)
{
        static const char *const ranges[] = { "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16" };
        struct ipam_prefix p;
        char msg[160];
        if (!cidr || strchr(cidr, ':') || ipam_prefix_parse(cidr, &p, msg, sizeof(msg)) < 0) {
                if (!cidr || strchr(cidr, ':') || strncmp(msg, "has host bits", 13) != 0)
                        say(why, why_len, "cidr must be an IPv4 network a.b.c.d/n, as 10.0.0.0/24");
                else if (why && why_len)
                        snprintf(why, why_len, "cidr %s", msg);
                return -EINVAL;
        }
        if (p.bits < IPAM_PRIVATE_MIN || p.bits > IPAM_PRIVATE_MAX) {
                if (why && why_len)
                        snprintf(why, why_len, "cidr prefix length must be /%d to /%d",
                                 IPAM_PRIVATE_MIN, IPAM_PRIVATE_MAX);
                return -EINVAL;
        }
        for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
                struct ipam_prefix r;
                if (ipam_prefix_parse(ranges[i], &r, NULL, 0) == 0 &&
                    ipam_prefix_contains(&r, &p.addr)) {
                        *ret = p;
                        return 0;
                }
        }
        say(why, why_len,
            "cidr must be in a private range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16");
        return -EINVAL;
}
