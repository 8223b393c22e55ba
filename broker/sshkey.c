#include "sshkey.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>

#define RSA_MIN_BITS 2048
#define RSA_MAX_BITS 16384

/* The key data is base64 inside the line, so it is never longer than this. */
#define BLOB_MAX (SSHKEY_LINE_MAX / 4 * 3)

enum kind { KIND_ED25519, KIND_RSA, KIND_ECDSA };

struct ktype {
        const char *name;
        enum kind kind;
        int sk;            /* FIDO key: an application string follows the key */
        const char *curve; /* ECDSA: the curve name inside the key data */
        size_t point_len;  /* ECDSA: uncompressed point, 0x04 || x || y */
        unsigned bits;     /* 0 for RSA, whose modulus tells */
};

static const struct ktype ktypes[] = {
        { "ssh-ed25519", KIND_ED25519, 0, NULL, 0, 256 },
        { "ssh-rsa", KIND_RSA, 0, NULL, 0, 0 },
        { "ecdsa-sha2-nistp256", KIND_ECDSA, 0, "nistp256", 65, 256 },
        { "ecdsa-sha2-nistp384", KIND_ECDSA, 0, "nistp384", 97, 384 },
        { "ecdsa-sha2-nistp521", KIND_ECDSA, 0, "nistp521", 133, 521 },
        { "sk-ssh-ed25519@openssh.com", KIND_ED25519, 1, NULL, 0, 256 },
        { "sk-ecdsa-sha2-nistp256@openssh.com", KIND_ECDSA, 1, "nistp256", 65, 256 },
};

_Static_assert(sizeof("sk-ecdsa-sha2-nistp256@openssh.com") <=
                       sizeof(((struct sshkey_info *)0)->type),
               "the longest type name fits in sshkey_info.type");

static int fail(char *why, size_t why_len, const char *reason)
{
        if (why && why_len > 0)
                snprintf(why, why_len, "%s", reason);
        return -EINVAL;
}

static int is_blank(char c)
{
        return c == ' ' || c == '\t';
}

static const struct ktype *ktype_find(const char *s, size_t n)
{
        for (size_t i = 0; i < sizeof(ktypes) / sizeof(ktypes[0]); i++)
                if (strlen(ktypes[i].name) == n && memcmp(ktypes[i].name, s, n) == 0)
                        return &ktypes[i];
        return NULL;
}

static int b64_value(char c)
{
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '+')
                return 62;
        if (c == '/')
                return 63;
        return -1;
}

/* Strict base64 (RFC 4648): whole groups of four, '=' only as the padding
 * of the last group, and the bits the padding leaves over are zero, so one
 * key has one spelling only. 0 and the length, or -1. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t out_size, size_t *ret_len)
{
        size_t pad = 0, o = 0;

        if (n == 0 || n % 4 != 0)
                return -1;
        if (s[n - 1] == '=')
                pad = s[n - 2] == '=' ? 2 : 1;
        if (n / 4 * 3 - pad > out_size)
                return -1;
        for (size_t i = 0; i < n; i += 4) {
                size_t used = i + 4 == n ? 4 - pad : 4; /* characters carrying bits */
                uint32_t w = 0;
                for (size_t j = 0; j < 4; j++) {
                        int v = j < used ? b64_value(s[i + j]) : 0;
                        if (v < 0)
                                return -1;
                        w = w << 6 | (uint32_t)v;
                }
                if ((used == 2 && (w & 0xffff)) || (used == 3 && (w & 0xff)))
                        return -1;
                out[o++] = (uint8_t)(w >> 16);
                if (used > 2)
                        out[o++] = (uint8_t)(w >> 8);
                if (used > 3)
                        out[o++] = (uint8_t)w;
        }
        *ret_len = o;
        return 0;
}

/* The key data: a run of strings, each a big-endian uint32 length and
 * that many bytes. */
struct reader {
        const uint8_t *p;
        size_t left;
};

static int get_string(struct reader *r, const uint8_t **ret, size_t *ret_len)
{
        if (r->left < 4)
                return -1;
        uint32_t n = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 |
                     (uint32_t)r->p[3];
        if (n > r->left - 4)
                return -1;
        *ret = r->p + 4;
        *ret_len = n;
        r->p += 4 + (size_t)n;
        r->left -= 4 + (size_t)n;
        return 0;
}

static int bytes_equal(const uint8_t *p, size_t n, const char *s)
{
        return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* A positive mpint (RFC 4251 section 5) in its canonical form: not zero, not
 * negative, a leading zero byte only where the next byte has its top bit
 * set. 0 and its size in bits, or -1. */
static int mpint_bits(const uint8_t *d, size_t n, size_t *ret_bits)
{
        if (n == 0 || (d[0] & 0x80))
                return -1;
        if (d[0] == 0) {
                if (n == 1 || !(d[1] & 0x80))
                        return -1;
                d++;
                n--;
        }
        size_t top = 0;
        for (unsigned b = d[0]; b; b >>= 1)
                top++;
        *ret_bits = (n - 1) * 8 + top;
        return 0;
}

/* Checks the key data against its type; 0 and the key size in bits, or
 * -EINVAL with the reason. */
static int parse_blob(const struct ktype *kt, const uint8_t *blob, size_t len, unsigned *ret_bits,
                      const char **reason)
{
        struct reader r = { blob, len };
        const uint8_t *s;
        size_t n, bits = kt->bits;

        *reason = "key data is truncated";
        if (get_string(&r, &s, &n) < 0)
                return -EINVAL;
        if (!bytes_equal(s, n, kt->name)) {
                *reason = "key data does not match its type";
                return -EINVAL;
        }
        switch (kt->kind) {
        case KIND_ED25519:
                if (get_string(&r, &s, &n) < 0)
                        return -EINVAL;
                if (n != 32) {
                        *reason = "Ed25519 key is not 32 bytes";
                        return -EINVAL;
                }
                break;
        case KIND_RSA: {
                const uint8_t *e;
                size_t elen, ebits;
                if (get_string(&r, &e, &elen) < 0 || get_string(&r, &s, &n) < 0)
                        return -EINVAL;
                /* e odd and at least 3, n odd: anything else is no RSA key. */
                if (mpint_bits(e, elen, &ebits) < 0 || ebits < 2 || !(e[elen - 1] & 1) ||
                    mpint_bits(s, n, &bits) < 0 || !(s[n - 1] & 1)) {
                        *reason = "RSA key data is malformed";
                        return -EINVAL;
                }
                if (bits < RSA_MIN_BITS) {
                        *reason = "RSA key shorter than 2048 bits";
                        return -EINVAL;
                }
                if (bits > RSA_MAX_BITS) {
                        *reason = "RSA key longer than 16384 bits";
                        return -EINVAL;
                }
                break;
        }
        case KIND_ECDSA:
                if (get_string(&r, &s, &n) < 0)
                        return -EINVAL;
                if (!bytes_equal(s, n, kt->curve)) {
                        *reason = "ECDSA curve does not match the key type";
                        return -EINVAL;
                }
                if (get_string(&r, &s, &n) < 0)
                        return -EINVAL;
                if (n != kt->point_len || s[0] != 0x04) {
                        *reason = "ECDSA point is malformed";
                        return -EINVAL;
                }
                break;
        }
        if (kt->sk) {
                if (get_string(&r, &s, &n) < 0)
                        return -EINVAL;
                if (memchr(s, '\0', n)) {
                        *reason = "security key application is malformed";
                        return -EINVAL;
                }
        }
        if (r.left != 0) {
                *reason = "key data has trailing bytes";
                return -EINVAL;
        }
        *ret_bits = (unsigned)bits;
        return 0;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0:
 * no overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
        size_t len;
        uint32_t cp, min;

        if (s[0] < 0x80)
                return 1;
        if ((s[0] & 0xe0) == 0xc0) {
                len = 2;
                cp = s[0] & 0x1f;
                min = 0x80;
        } else if ((s[0] & 0xf0) == 0xe0) {
                len = 3;
                cp = s[0] & 0x0f;
                min = 0x800;
        } else if ((s[0] & 0xf8) == 0xf0) {
                len = 4;
                cp = s[0] & 0x07;
                min = 0x10000;
        } else {
                return 0;
        }
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return len;
}

/* Copies the comment, cut to fit at a character boundary; -1 if any of it
 * is not UTF-8. */
static int copy_comment(char *dst, size_t size, const char *s, size_t n)
{
        const unsigned char *u = (const unsigned char *)s;
        size_t i = 0, o = 0;
        int full = 0;

        while (i < n) {
                size_t k = utf8_seq(u + i, n - i);
                if (k == 0)
                        return -1;
                if (o + k >= size)
                        full = 1;
                if (!full) {
                        memcpy(dst + o, s + i, k);
                        o += k;
                }
                i += k;
        }
        dst[o] = '\0';
        return 0;
}

static int fingerprint(const uint8_t *blob, size_t len, char *out, size_t size)
{
        unsigned char md[EVP_MAX_MD_SIZE], b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
        unsigned int mdlen = 0;

        if (!EVP_Digest(blob, len, md, &mdlen, EVP_sha256(), NULL))
                return -ENOMEM;
        int n = EVP_EncodeBlock(b64, md, (int)mdlen);
        while (n > 0 && b64[n - 1] == '=')
                n--;
        snprintf(out, size, "SHA256:%.*s", n, (const char *)b64);
        return 0;
}

int sshkey_parse(const char *line, size_t len, struct sshkey_info *ret, char *why, size_t why_len)
{
        uint8_t blob[BLOB_MAX];
        struct sshkey_info info = { 0 };
        const char *s, *end, *tok, *reason;
        size_t blen;
        int r;

        if (!line || len == 0)
                return fail(why, why_len, "empty line");
        s = line;
        end = line + len;
        if (end[-1] == '\n') {
                end--;
                if (end > s && end[-1] == '\r')
                        end--;
        }
        if ((size_t)(end - s) > SSHKEY_LINE_MAX)
                return fail(why, why_len, "line too long");
        for (const char *p = s; p < end; p++) {
                unsigned char c = (unsigned char)*p;
                if (c == '\0')
                        return fail(why, why_len, "line contains a NUL byte");
                if (c == '\n')
                        return fail(why, why_len, "line contains a newline");
                if ((c < 0x20 && c != '\t') || c == 0x7f)
                        return fail(why, why_len, "line contains a control character");
        }
        while (s < end && is_blank(*s))
                s++;
        while (end > s && is_blank(end[-1]))
                end--;
        if (s == end)
                return fail(why, why_len, "empty line");

        tok = s;
        while (s < end && !is_blank(*s))
                s++;
        const struct ktype *kt = ktype_find(tok, (size_t)(s - tok));
        if (!kt) {
                if (s - tok == 7 && memcmp(tok, "ssh-dss", 7) == 0)
                        return fail(why, why_len, "DSA keys are not supported");
                return fail(why, why_len, "unsupported key type");
        }
        while (s < end && is_blank(*s))
                s++;
        tok = s;
        while (s < end && !is_blank(*s))
                s++;
        if (s == tok)
                return fail(why, why_len, "missing key data");
        if (b64_decode(tok, (size_t)(s - tok), blob, sizeof(blob), &blen) < 0)
                return fail(why, why_len, "key data is not valid base64");
        if (parse_blob(kt, blob, blen, &info.bits, &reason) < 0)
                return fail(why, why_len, reason);
        while (s < end && is_blank(*s))
                s++;
        if (copy_comment(info.comment, sizeof(info.comment), s, (size_t)(end - s)) < 0)
                return fail(why, why_len, "comment is not valid UTF-8");
        r = fingerprint(blob, blen, info.fingerprint, sizeof(info.fingerprint));
        if (r < 0) {
                if (why && why_len > 0)
                        snprintf(why, why_len, "cannot compute the fingerprint");
                return r;
        }
        snprintf(info.type, sizeof(info.type), "%s", kt->name);
        if (ret)
                *ret = info;
        return 0;
}
