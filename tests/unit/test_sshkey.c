/* sshkey_parse: real keys made by ssh-keygen (OpenSSH 9.2) with the
 * fingerprints it printed, and key data built here byte by byte for every
 * way a line can be wrong. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "sshkey.h"

/* ssh-keygen -t ed25519 / rsa -b 2048 / rsa -b 3072 / ecdsa -b 256, 384, 521 */
#define ED25519_B64 "AAAAC3NzaC1lZDI1NTE5AAAAIMI92h1GECkgGoTOuM4y1++Af59kyyuzaMWDVP9DziHw"
#define ED25519_FP  "SHA256:N+3Th4OOB31io+e3ZCKlwdiADgazBfdOnYiX8iCWXJQ"
#define RSA2048_B64                                                                                \
        "AAAAB3NzaC1yc2EAAAADAQABAAABAQDJNY/z8snFPavdVyGf7JIyYn1jE306RKxYkulFROZCf4JE59txlu/p6vYJ" \
        "fnfZgMA8nDVHlR9c9SBwLvp5dnZ6IfSsaifvzpYCe9XDCl7yW1ELkNVHNaoDy2iy/MRmIM4ZIfwuN2ZVzYNrl99/" \
        "hJcQPQfIjrF6IO11Q/eUS8vB3KnV+w3pmnxOjRH8pcaF8l+mthvGFpT9Pg13+Sq55I+eFAqpRrsZKwSOwRB3BlYB" \
        "htPOV4dlxokDEW/zvxFDipFpTvtUeBc4Elnj/AUj0OH1CoA6EwM6LFYjjQtTbUGyTg+FF6J/oWXKA8IFtOH0sq2d" \
        "HZ2aREqfhESNxDNqegkd"
#define RSA2048_FP "SHA256:T9KRIYod/7f5Zf/cDRGenIonwV7igxiWDkf1mh1buFQ"
#define RSA3072_B64                                                                                \
        "AAAAB3NzaC1yc2EAAAADAQABAAABgQChwo4Q0Xsr975uU3O8LZYCayPwsqsFg0Mn6nm38StJ/AkAYwOFuCF7HnLR" \
        "QRqXzauS5AbgHJu1fLzk072OJTLy2Ec5Yi7t+GjAYUP66JN/cCzsGqIO55iQE0Ycs++wy8m3lRK17/ZRE1Ym85YI" \
        "55NMjr7tIQ+0PNny/i4aNJIJ0Vu1NmKBvuaJwL2zRY18gG5BxcqTpvJjMbAVI3q28qnzrm24r1iyzES6oz31H56R" \
        "aL7jAA+gEsRWmh1xqe4DBP4/gtfuEA6ttIIJ2f7qYgYX36IoR0ee3bsHIOrSwaSbKjc+rD4XYsx6eXZd//JNG38l" \
        "WXcR6bEvbLF172hMKIJDisMubz5ufFqqNPsaiUgqwPBna8VFhyFrwjmqBO6zABbrft+LCKabXN+j3IN4H+DqaHBk" \
        "fbcfjKS54/M2QbIxCnYlaDZmxtB1GSFln+A2HORM6dqiESeDFS5202CYCG+K/EQ+LryQr1o0SHaUhEj2xeBOVJyR" \
        "5FTKVTgBSi12Gbs="
#define RSA3072_FP "SHA256:AedT96nFIRqoXNNsfVmtUJ1z5YhZU1gNVtQEXavqeyI"
#define P256_B64                                                                                   \
        "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMnf9sGyhwQuZZs5HdI+2PbvkVRqolb2884f" \
        "kG/1wZWRsrYJGgY1ccPg3rNZVjymnCuJ5lZjy9SmqBNPTCxmNRk="
#define P256_FP "SHA256:tzNb2ylgyJKbJ3X+RLXzuTC5ksIQ6ykfbiDG5LahQK8"
#define P384_B64                                                                                   \
        "AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBNQr4LLdaINr0AQU/cMRUtPxd2UUQJsWxJbz" \
        "tZwkt86CMsiXyeLqyBsIvAzdIj0OtfRiS3IIPsnLx6t/dcrrZ2Qa5ljRfoP6F5ctGds+L6pqlc04E0ESp51wtge/" \
        "GYpahg=="
#define P384_FP "SHA256:K0I9Nx07aSomlFS3WHdhBblb+OEzzTV5GJj+j8a32jo"
#define P521_B64                                                                                   \
        "AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBACy6DPAt1FOH62ATMjSjbEO4VObbw96Lt0T" \
        "ObzdVjuEfuGrjMEidahcK2cU8zuVy503WQ/oDExtrtyhSov40WsbigAqxtpT22rng8JIZvo6dIWxR/UeLQIaVw3A" \
        "F1HW9EJAp7cfYfBjUUPR7bbrubQWLItqU/qAn50bgw6AJnbSPRXDgQ=="
#define P521_FP "SHA256:EFPpTQ5zLVbWEtLvSCdVVcBORuzZgwIcINonpNuhAcA"
/* The ed25519 and P-256 keys above as security keys, application "ssh:";
 * ssh-keygen -l agrees on the fingerprints. */
#define SK_ED25519_B64                                                                             \
        "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIMI92h1GECkgGoTOuM4y1++Af59kyyuzaMWDVP9DziHw" \
        "AAAABHNzaDo="
#define SK_ED25519_FP "SHA256:+pYwke+V/q0w/WNrEaVbELEzSrD89yqz4iN+m8Xo6zM"
#define SK_P256_B64                                                                                \
        "AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20AAAAIbmlzdHAyNTYAAABBBMnf9sGyhwQuZZs5" \
        "HdI+2PbvkVRqolb2884fkG/1wZWRsrYJGgY1ccPg3rNZVjymnCuJ5lZjy9SmqBNPTCxmNRkAAAAEc3NoOg=="
#define SK_P256_FP "SHA256:vQ3kCalGfWQpSx1yfs2xLAdBn1VSlSAv4kJt5Wih19w"

struct good {
        const char *name;
        const char *line;
        const char *type;
        unsigned bits;
        const char *fp;
        const char *comment;
};

static const struct good goods[] = {
        { "ed25519", "ssh-ed25519 " ED25519_B64 " alice@laptop", "ssh-ed25519", 256, ED25519_FP,
          "alice@laptop" },
        { "rsa 2048, comment with a space", "ssh-rsa " RSA2048_B64 " bob@work station", "ssh-rsa",
          2048, RSA2048_FP, "bob@work station" },
        { "rsa 3072, no comment, trailing blank", "ssh-rsa " RSA3072_B64 " ", "ssh-rsa", 3072,
          RSA3072_FP, "" },
        { "ecdsa p256", "ecdsa-sha2-nistp256 " P256_B64 " p256", "ecdsa-sha2-nistp256", 256,
          P256_FP, "p256" },
        { "ecdsa p384", "ecdsa-sha2-nistp384 " P384_B64 " p384", "ecdsa-sha2-nistp384", 384,
          P384_FP, "p384" },
        { "ecdsa p521", "ecdsa-sha2-nistp521 " P521_B64, "ecdsa-sha2-nistp521", 521, P521_FP, "" },
        { "sk ed25519", "sk-ssh-ed25519@openssh.com " SK_ED25519_B64 " yubi",
          "sk-ssh-ed25519@openssh.com", 256, SK_ED25519_FP, "yubi" },
        { "sk ecdsa", "sk-ecdsa-sha2-nistp256@openssh.com " SK_P256_B64 " yubi 5",
          "sk-ecdsa-sha2-nistp256@openssh.com", 256, SK_P256_FP, "yubi 5" },
        { "blanks around and between", " \t ssh-ed25519 \t " ED25519_B64 "\t  alice  laptop \t\n",
          "ssh-ed25519", 256, ED25519_FP, "alice  laptop" },
        { "no comment, newline", "ssh-ed25519 " ED25519_B64 "\n", "ssh-ed25519", 256, ED25519_FP,
          "" },
        { "crlf", "ssh-ed25519 " ED25519_B64 " win\r\n", "ssh-ed25519", 256, ED25519_FP, "win" },
        { "utf-8 comment", "ssh-ed25519 " ED25519_B64 " Jos\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91",
          "ssh-ed25519", 256, ED25519_FP, "Jos\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x94\x91" },
};

static void test_good_keys(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(goods) / sizeof(goods[0]); i++) {
                const struct good *g = &goods[i];
                struct sshkey_info k;
                char why[64] = "untouched";
                print_message("%s\n", g->name);
                assert_int_equal(sshkey_parse(g->line, strlen(g->line), &k, why, sizeof(why)), 0);
                assert_string_equal(k.type, g->type);
                assert_int_equal(k.bits, g->bits);
                assert_string_equal(k.fingerprint, g->fp);
                assert_string_equal(k.comment, g->comment);
                assert_string_equal(why, "untouched");
        }
}

struct bad {
        const char *name;
        const char *line;
        size_t len; /* 0: strlen(line) */
        const char *why;
};

static const char nul_line[] = "ssh-ed25519 " ED25519_B64 " a\0b";

static const struct bad bads[] = {
        { "empty", "", 0, "empty line" },
        { "blanks only", " \t  ", 0, "empty line" },
        { "newline only", "\n", 0, "empty line" },
        { "dsa", "ssh-dss AAAAB3NzaC1kc3MAAACBAP4= dsa", 0, "DSA keys are not supported" },
        { "unknown type", "ssh-foo " ED25519_B64, 0, "unsupported key type" },
        { "type in capitals", "SSH-ED25519 " ED25519_B64, 0, "unsupported key type" },
        { "certificate", "ssh-ed25519-cert-v01@openssh.com " ED25519_B64, 0,
          "unsupported key type" },
        { "options prefix", "from=\"10.0.0.1\" ssh-ed25519 " ED25519_B64, 0,
          "unsupported key type" },
        { "options prefix, no-pty", "no-pty ssh-ed25519 " ED25519_B64 " a", 0,
          "unsupported key type" },
        { "key data missing", "ssh-ed25519", 0, "missing key data" },
        { "key data missing, blanks", "ssh-ed25519  \t \n", 0, "missing key data" },
        { "base64: bad character",
          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMI92h1GECkgGoTOuM4y1++Af59ky!"
          "uzaMWDVP9DziHw",
          0, "key data is not valid base64" },
        { "base64: url alphabet",
          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMI92h1GECkgGoTOuM4y1--Af59ky"
          "yuzaMWDVP9DziHw",
          0, "key data is not valid base64" },
        { "base64: not whole groups", "ssh-ed25519 " ED25519_B64 "A", 0,
          "key data is not valid base64" },
        { "base64: padding missing",
          "sk-ssh-ed25519@openssh.com "
          "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIMI92h1GECkgGoTOuM4y1++Af59kyyuzaMWDVP9DziHw"
          "AAAABHNzaDo",
          0, "key data is not valid base64" },
        { "base64: padding too much", "sk-ssh-ed25519@openssh.com " SK_ED25519_B64 "=", 0,
          "key data is not valid base64" },
        { "base64: padding in the middle", "ssh-ed25519 AAAA=AAA" ED25519_B64, 0,
          "key data is not valid base64" },
        { "base64: three padding", "ssh-ed25519 A===", 0, "key data is not valid base64" },
        { "base64: padding only", "ssh-ed25519 ====", 0, "key data is not valid base64" },
        /* "Do=" holds 16 bits; "Dp=" spells the same bytes with a stray bit. */
        { "base64: non-zero bits after the data",
          "sk-ssh-ed25519@openssh.com "
          "AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIMI92h1GECkgGoTOuM4y1++Af59kyyuzaMWDVP9DziHw"
          "AAAABHNzaDp=",
          0, "key data is not valid base64" },
        /* "hg==" holds 8 bits; "hh==" has a stray one. */
        { "base64: non-zero bits before ==",
          "ecdsa-sha2-nistp384 "
          "AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBNQr4LLdaINr0AQU/cMRUtPxd2UUQJsWxJbz"
          "tZwkt86CMsiXyeLqyBsIvAzdIj0OtfRiS3IIPsnLx6t/dcrrZ2Qa5ljRfoP6F5ctGds+L6pqlc04E0ESp51wtge/"
          "GYpahh==",
          0, "key data is not valid base64" },
        { "text says rsa, data says ed25519", "ssh-rsa " ED25519_B64, 0,
          "key data does not match its type" },
        { "text says p384, data says p256", "ecdsa-sha2-nistp384 " P256_B64, 0,
          "key data does not match its type" },
        { "text says sk, data says plain", "sk-ssh-ed25519@openssh.com " ED25519_B64, 0,
          "key data does not match its type" },
        { "text says plain, data says sk", "ssh-ed25519 " SK_ED25519_B64, 0,
          "key data does not match its type" },
        { "newline inside", "ssh-ed25519 " ED25519_B64 " a\nb", 0, "line contains a newline" },
        { "two newlines at the end", "ssh-ed25519 " ED25519_B64 "\n\n", 0,
          "line contains a newline" },
        { "newline before the key data", "ssh-ed25519\n" ED25519_B64, 0,
          "line contains a newline" },
        { "NUL inside", nul_line, sizeof(nul_line) - 1, "line contains a NUL byte" },
        { "lone CR at the end", "ssh-ed25519 " ED25519_B64 "\r", 0,
          "line contains a control character" },
        { "escape in the comment", "ssh-ed25519 " ED25519_B64 " \x1b[31mred", 0,
          "line contains a control character" },
        { "DEL in the comment", "ssh-ed25519 " ED25519_B64 " a\x7f", 0,
          "line contains a control character" },
        { "comment: stray byte", "ssh-ed25519 " ED25519_B64 " \xff", 0,
          "comment is not valid UTF-8" },
        { "comment: overlong slash", "ssh-ed25519 " ED25519_B64 " \xc0\xaf", 0,
          "comment is not valid UTF-8" },
        { "comment: cut sequence", "ssh-ed25519 " ED25519_B64 " \xe2\x9c", 0,
          "comment is not valid UTF-8" },
        { "comment: surrogate", "ssh-ed25519 " ED25519_B64 " \xed\xa0\x80", 0,
          "comment is not valid UTF-8" },
        { "comment: past U+10FFFF", "ssh-ed25519 " ED25519_B64 " \xf4\x90\x80\x80", 0,
          "comment is not valid UTF-8" },
};

static void test_bad_lines(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(bads) / sizeof(bads[0]); i++) {
                const struct bad *b = &bads[i];
                struct sshkey_info k;
                char why[64] = "";
                print_message("%s\n", b->name);
                size_t len = b->len ? b->len : strlen(b->line);
                assert_int_equal(sshkey_parse(b->line, len, &k, why, sizeof(why)), -EINVAL);
                assert_string_equal(why, b->why);
        }
        char why[64] = "";
        assert_int_equal(sshkey_parse(NULL, 0, NULL, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "empty line");
}

/* Key data built byte by byte. */
struct blob {
        uint8_t b[4096];
        size_t n;
};

static void put_bytes(struct blob *b, const void *p, size_t n)
{
        assert_true(b->n + n <= sizeof(b->b));
        memcpy(b->b + b->n, p, n);
        b->n += n;
}

static void put_u32(struct blob *b, uint32_t v)
{
        uint8_t d[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
        put_bytes(b, d, 4);
}

static void put_data(struct blob *b, const void *p, size_t n)
{
        put_u32(b, (uint32_t)n);
        put_bytes(b, p, n);
}

static void put_str(struct blob *b, const char *s)
{
        put_data(b, s, strlen(s));
}

/* n bytes of v, no length in front. */
static void put_raw(struct blob *b, size_t n, uint8_t v)
{
        for (size_t i = 0; i < n; i++)
                put_bytes(b, &v, 1);
}

/* A string of n bytes: first, then rest. */
static void put_fill(struct blob *b, size_t n, uint8_t first, uint8_t rest)
{
        put_u32(b, (uint32_t)n);
        put_raw(b, 1, first);
        put_raw(b, n - 1, rest);
}

/* "TYPE BASE64(blob)", malloc'd. */
static char *line_of(const char *type, const struct blob *b)
{
        size_t tl = strlen(type);
        char *line = malloc(tl + 1 + 4 * ((b->n + 2) / 3) + 1);
        assert_non_null(line);
        memcpy(line, type, tl);
        line[tl] = ' ';
        EVP_EncodeBlock((unsigned char *)line + tl + 1, b->b, (int)b->n);
        return line;
}

/* An RSA modulus of exactly bits bits, a fixed pattern, odd; e = 65537. */
static void put_rsa(struct blob *b, unsigned bits)
{
        uint8_t n[2100];
        size_t nb = (bits + 7) / 8;
        unsigned top = (bits - 1) % 8;
        assert_true(nb <= sizeof(n));
        for (size_t i = 0; i < nb; i++)
                n[i] = (uint8_t)(i * 37 + 11);
        n[0] = (uint8_t)((n[0] & ((1u << top) - 1)) | (1u << top));
        n[nb - 1] |= 1;
        put_str(b, "ssh-rsa");
        put_data(b, "\x01\x00\x01", 3);
        if (n[0] & 0x80) {
                put_u32(b, (uint32_t)nb + 1);
                put_bytes(b, "", 1);
                put_bytes(b, n, nb);
        } else {
                put_data(b, n, nb);
        }
}

static void put_ed25519(struct blob *b, const char *type)
{
        put_str(b, type);
        put_fill(b, 32, 0x42, 0x42);
}

static void put_p256(struct blob *b, const char *type)
{
        put_str(b, type);
        put_str(b, "nistp256");
        put_fill(b, 65, 0x04, 0x17);
}

/* Fingerprints by python hashlib, checked with ssh-keygen -l (which also
 * refuses the 16385-bit key). */
static const struct {
        unsigned bits;
        int r;
        const char *fp_or_why;
} rsa_sizes[] = {
        { 1024, -EINVAL, "RSA key shorter than 2048 bits" },
        { 2047, -EINVAL, "RSA key shorter than 2048 bits" },
        { 2048, 0, "SHA256:BHgcZaELuOJGDWKrwdavLObvVG/h/cY/SOXooqkvS9M" },
        { 4095, 0, "SHA256:oXgdGmfSL9H9oyXf0RGKLv3dvzgJ+yleHP6l6NZHJSE" },
        { 16384, 0, "SHA256:JLKRD0Yygz3F4/F3J1raBbydGHAXOqw2cj+GwkZJNHo" },
        { 16385, -EINVAL, "RSA key longer than 16384 bits" },
};

static void test_rsa_sizes(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(rsa_sizes) / sizeof(rsa_sizes[0]); i++) {
                struct blob b = { .n = 0 };
                struct sshkey_info k;
                char why[64] = "";
                print_message("%u bits\n", rsa_sizes[i].bits);
                put_rsa(&b, rsa_sizes[i].bits);
                char *line = line_of("ssh-rsa", &b);
                assert_int_equal(sshkey_parse(line, strlen(line), &k, why, sizeof(why)),
                                 rsa_sizes[i].r);
                if (rsa_sizes[i].r == 0) {
                        assert_int_equal(k.bits, rsa_sizes[i].bits);
                        assert_string_equal(k.fingerprint, rsa_sizes[i].fp_or_why);
                        assert_string_equal(why, "");
                } else {
                        assert_string_equal(why, rsa_sizes[i].fp_or_why);
                }
                free(line);
        }
}

static void b_ed_short(struct blob *b)
{
        put_str(b, "ssh-ed25519");
        put_fill(b, 31, 0x42, 0x42);
}

static void b_ed_long(struct blob *b)
{
        put_str(b, "ssh-ed25519");
        put_fill(b, 33, 0x42, 0x42);
}

static void b_ed_cut(struct blob *b)
{
        put_ed25519(b, "ssh-ed25519");
        b->n--;
}

static void b_ed_type_only(struct blob *b)
{
        put_str(b, "ssh-ed25519");
}

static void b_ed_trailing(struct blob *b)
{
        put_ed25519(b, "ssh-ed25519");
        put_bytes(b, "", 1);
}

static void b_ed_trailing_string(struct blob *b)
{
        put_ed25519(b, "ssh-ed25519");
        put_str(b, "extra");
}

static void b_ed_huge_len(struct blob *b)
{
        put_str(b, "ssh-ed25519");
        put_u32(b, 0xffffffff);
        put_raw(b, 32, 0x42);
}

static void b_huge_type_len(struct blob *b)
{
        put_u32(b, 0xffffffff);
        put_bytes(b, "ssh-ed25519", 11);
}

static void b_len_one_past(struct blob *b)
{
        put_str(b, "ssh-ed25519");
        put_u32(b, 33);
        put_raw(b, 32, 0x42);
}

static void b_short_len_field(struct blob *b)
{
        put_bytes(b, "\0\0\0", 3);
}

static void b_type_with_nul(struct blob *b)
{
        put_data(b, "ssh-ed25519\0", 12);
        put_fill(b, 32, 0x42, 0x42);
}

static void b_p256_wrong_curve(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp384");
        put_fill(b, 65, 0x04, 0x17);
}

static void b_p256_short_point(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp256");
        put_fill(b, 64, 0x04, 0x17);
}

static void b_p256_p384_point(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp256");
        put_fill(b, 97, 0x04, 0x17);
}

static void b_p256_compressed(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp256");
        put_fill(b, 65, 0x02, 0x17);
}

static void b_p256_no_point(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp256");
}

static void b_p256_empty_point(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp256");
        put_str(b, "nistp256");
        put_u32(b, 0);
}

static void b_p521_good(struct blob *b)
{
        put_str(b, "ecdsa-sha2-nistp521");
        put_str(b, "nistp521");
        put_fill(b, 133, 0x04, 0x17);
}

static void b_sk_ed_no_app(struct blob *b)
{
        put_ed25519(b, "sk-ssh-ed25519@openssh.com");
}

static void b_sk_ed_app_nul(struct blob *b)
{
        put_ed25519(b, "sk-ssh-ed25519@openssh.com");
        put_data(b, "ssh\0x", 5);
}

static void b_sk_ed_trailing(struct blob *b)
{
        put_ed25519(b, "sk-ssh-ed25519@openssh.com");
        put_str(b, "ssh:");
        put_u32(b, 0);
}

static void b_sk_ed_good(struct blob *b)
{
        put_ed25519(b, "sk-ssh-ed25519@openssh.com");
        put_str(b, "ssh:");
}

static void b_sk_p256_no_app(struct blob *b)
{
        put_p256(b, "sk-ecdsa-sha2-nistp256@openssh.com");
}

static void b_sk_p256_good(struct blob *b)
{
        put_p256(b, "sk-ecdsa-sha2-nistp256@openssh.com");
        put_str(b, "ssh:");
}

/* ssh-rsa with the given e, then the 2048-bit pattern modulus after it. */
static void rsa_with_e(struct blob *b, const void *e, size_t elen)
{
        struct blob good = { .n = 0 };
        put_rsa(&good, 2048);
        put_str(b, "ssh-rsa");
        put_data(b, e, elen);
        put_bytes(b, good.b + 4 + 7 + 4 + 3, good.n - (4 + 7 + 4 + 3));
}

static void b_rsa_e_even(struct blob *b)
{
        rsa_with_e(b, "\x01\x00\x00", 3);
}

static void b_rsa_e_one(struct blob *b)
{
        rsa_with_e(b, "\x01", 1);
}

static void b_rsa_e_zero(struct blob *b)
{
        rsa_with_e(b, "", 0);
}

static void b_rsa_e_negative(struct blob *b)
{
        rsa_with_e(b, "\x81\x00\x01", 3);
}

static void b_rsa_e_leading_zero(struct blob *b)
{
        rsa_with_e(b, "\x00\x01\x00\x01", 4);
}

static void b_rsa_n_even(struct blob *b)
{
        put_rsa(b, 2048);
        b->b[b->n - 1] &= 0xfe;
}

static void b_rsa_n_negative(struct blob *b)
{
        put_str(b, "ssh-rsa");
        put_data(b, "\x01\x00\x01", 3);
        put_fill(b, 256, 0x80, 0x01);
}

static void b_rsa_n_leading_zeros(struct blob *b)
{
        /* 2048 bits as value, but written with two zero bytes in front */
        put_str(b, "ssh-rsa");
        put_data(b, "\x01\x00\x01", 3);
        put_u32(b, 258);
        put_bytes(b, "\0\0\x80", 3);
        for (int i = 0; i < 255; i++)
                put_bytes(b, "\x01", 1);
}

static void b_rsa_no_n(struct blob *b)
{
        put_str(b, "ssh-rsa");
        put_data(b, "\x01\x00\x01", 3);
}

static void b_rsa_trailing(struct blob *b)
{
        put_rsa(b, 2048);
        put_bytes(b, "\x01", 1);
}

static void b_rsa_n_len_huge(struct blob *b)
{
        put_str(b, "ssh-rsa");
        put_data(b, "\x01\x00\x01", 3);
        put_u32(b, 0xfffffffc);
        put_raw(b, 256, 0x7f);
}

static const struct {
        const char *name;
        const char *type; /* as the text says */
        void (*build)(struct blob *b);
        const char *why; /* NULL: accepted */
} blobs[] = {
        { "ed25519 key of 31 bytes", "ssh-ed25519", b_ed_short, "Ed25519 key is not 32 bytes" },
        { "ed25519 key of 33 bytes", "ssh-ed25519", b_ed_long, "Ed25519 key is not 32 bytes" },
        { "ed25519 cut by one byte", "ssh-ed25519", b_ed_cut, "key data is truncated" },
        { "ed25519 type only", "ssh-ed25519", b_ed_type_only, "key data is truncated" },
        { "ed25519 and a byte more", "ssh-ed25519", b_ed_trailing, "key data has trailing bytes" },
        { "ed25519 and a string more", "ssh-ed25519", b_ed_trailing_string,
          "key data has trailing bytes" },
        { "key length 0xffffffff", "ssh-ed25519", b_ed_huge_len, "key data is truncated" },
        { "type length 0xffffffff", "ssh-ed25519", b_huge_type_len, "key data is truncated" },
        { "length one past the end", "ssh-ed25519", b_len_one_past, "key data is truncated" },
        { "length field cut", "ssh-ed25519", b_short_len_field, "key data is truncated" },
        { "type with a NUL", "ssh-ed25519", b_type_with_nul, "key data does not match its type" },
        { "p256 with curve nistp384", "ecdsa-sha2-nistp256", b_p256_wrong_curve,
          "ECDSA curve does not match the key type" },
        { "p256 point of 64 bytes", "ecdsa-sha2-nistp256", b_p256_short_point,
          "ECDSA point is malformed" },
        { "p256 point of 97 bytes", "ecdsa-sha2-nistp256", b_p256_p384_point,
          "ECDSA point is malformed" },
        { "p256 point compressed", "ecdsa-sha2-nistp256", b_p256_compressed,
          "ECDSA point is malformed" },
        { "p256 point empty", "ecdsa-sha2-nistp256", b_p256_empty_point,
          "ECDSA point is malformed" },
        { "p256 no point", "ecdsa-sha2-nistp256", b_p256_no_point, "key data is truncated" },
        { "p521 built here", "ecdsa-sha2-nistp521", b_p521_good, NULL },
        { "sk ed25519 without application", "sk-ssh-ed25519@openssh.com", b_sk_ed_no_app,
          "key data is truncated" },
        { "sk ed25519 application with NUL", "sk-ssh-ed25519@openssh.com", b_sk_ed_app_nul,
          "security key application is malformed" },
        { "sk ed25519 and a string more", "sk-ssh-ed25519@openssh.com", b_sk_ed_trailing,
          "key data has trailing bytes" },
        { "sk ed25519 built here", "sk-ssh-ed25519@openssh.com", b_sk_ed_good, NULL },
        { "sk p256 without application", "sk-ecdsa-sha2-nistp256@openssh.com", b_sk_p256_no_app,
          "key data is truncated" },
        { "sk p256 built here", "sk-ecdsa-sha2-nistp256@openssh.com", b_sk_p256_good, NULL },
        { "rsa e even", "ssh-rsa", b_rsa_e_even, "RSA key data is malformed" },
        { "rsa e = 1", "ssh-rsa", b_rsa_e_one, "RSA key data is malformed" },
        { "rsa e = 0", "ssh-rsa", b_rsa_e_zero, "RSA key data is malformed" },
        { "rsa e negative", "ssh-rsa", b_rsa_e_negative, "RSA key data is malformed" },
        { "rsa e with a needless zero", "ssh-rsa", b_rsa_e_leading_zero,
          "RSA key data is malformed" },
        { "rsa n even", "ssh-rsa", b_rsa_n_even, "RSA key data is malformed" },
        { "rsa n negative", "ssh-rsa", b_rsa_n_negative, "RSA key data is malformed" },
        { "rsa n with needless zeros", "ssh-rsa", b_rsa_n_leading_zeros,
          "RSA key data is malformed" },
        { "rsa without n", "ssh-rsa", b_rsa_no_n, "key data is truncated" },
        { "rsa n length near 2^32", "ssh-rsa", b_rsa_n_len_huge, "key data is truncated" },
        { "rsa and a byte more", "ssh-rsa", b_rsa_trailing, "key data has trailing bytes" },
};

static void test_bad_blobs(void **state)
{
        (void)state;
        for (size_t i = 0; i < sizeof(blobs) / sizeof(blobs[0]); i++) {
                struct blob b = { .n = 0 };
                struct sshkey_info k;
                char why[64] = "";
                print_message("%s\n", blobs[i].name);
                blobs[i].build(&b);
                char *line = line_of(blobs[i].type, &b);
                int r = sshkey_parse(line, strlen(line), &k, why, sizeof(why));
                if (blobs[i].why) {
                        assert_int_equal(r, -EINVAL);
                        assert_string_equal(why, blobs[i].why);
                } else {
                        assert_int_equal(r, 0);
                        assert_string_equal(k.type, blobs[i].type);
                        assert_string_equal(why, "");
                }
                free(line);
        }
}

/* A valid line padded with blanks to exactly len bytes, malloc'd, not
 * NUL-terminated. */
static char *padded(size_t len, const char *tail)
{
        static const char key[] = "ssh-ed25519 " ED25519_B64 " x";
        size_t tl = strlen(tail);
        char *p = malloc(len);
        assert_non_null(p);
        memset(p, ' ', len);
        memcpy(p, key, sizeof(key) - 1);
        memcpy(p + len - tl, tail, tl);
        return p;
}

static void test_line_length(void **state)
{
        (void)state;
        struct sshkey_info k;
        char why[64] = "";
        char *p = padded(SSHKEY_LINE_MAX, "");
        assert_int_equal(sshkey_parse(p, SSHKEY_LINE_MAX, &k, why, sizeof(why)), 0);
        assert_string_equal(k.comment, "x");
        free(p);
        p = padded(SSHKEY_LINE_MAX + 1, "\n");
        assert_int_equal(sshkey_parse(p, SSHKEY_LINE_MAX + 1, &k, why, sizeof(why)), 0);
        free(p);
        p = padded(SSHKEY_LINE_MAX + 2, "\r\n");
        assert_int_equal(sshkey_parse(p, SSHKEY_LINE_MAX + 2, &k, why, sizeof(why)), 0);
        free(p);
        p = padded(SSHKEY_LINE_MAX + 1, "");
        assert_int_equal(sshkey_parse(p, SSHKEY_LINE_MAX + 1, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "line too long");
        free(p);
        p = padded(SSHKEY_LINE_MAX + 2, "\n");
        assert_int_equal(sshkey_parse(p, SSHKEY_LINE_MAX + 2, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "line too long");
        free(p);
        /* Key data that fills the whole line: decodes (all zero bytes), then
         * is not a key. */
        size_t n = SSHKEY_LINE_MAX - strlen("ssh-ed25519 ");
        n -= n % 4;
        p = malloc(SSHKEY_LINE_MAX);
        assert_non_null(p);
        memset(p, 'A', SSHKEY_LINE_MAX);
        memcpy(p, "ssh-ed25519 ", 12);
        assert_int_equal(sshkey_parse(p, 12 + n, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "key data does not match its type");
        free(p);
}

static void test_comment_cut(void **state)
{
        (void)state;
        struct sshkey_info k;
        char line[600], want[256];
        int n = snprintf(line, sizeof(line), "ssh-ed25519 %s ", ED25519_B64);

        /* 300 ASCII characters: the first 255 are kept. */
        memset(line + n, 'c', 300);
        assert_int_equal(sshkey_parse(line, (size_t)n + 300, &k, NULL, 0), 0);
        memset(want, 'c', 255);
        want[255] = '\0';
        assert_string_equal(k.comment, want);

        /* 254 ASCII then a 2-byte character: it does not fit whole, so it goes. */
        memcpy(line + n + 254, "\xc3\xa9", 2);
        assert_int_equal(sshkey_parse(line, (size_t)n + 256, &k, NULL, 0), 0);
        assert_int_equal(strlen(k.comment), 254);

        /* 253 ASCII then the 2-byte character: exactly 255 bytes. */
        memcpy(line + n + 253, "\xc3\xa9", 2);
        assert_int_equal(sshkey_parse(line, (size_t)n + 255, &k, NULL, 0), 0);
        assert_int_equal(strlen(k.comment), 255);
        assert_memory_equal(k.comment + 253, "\xc3\xa9", 3);

        /* Past what is kept, the comment must still be UTF-8. */
        line[n + 255] = 'x';
        memcpy(line + n + 256, "ok\xff", 3);
        assert_int_equal(sshkey_parse(line, (size_t)n + 259, &k, NULL, 0), -EINVAL);
}

static void test_not_nul_terminated(void **state)
{
        (void)state;
        static const char key[] = "ssh-ed25519 " ED25519_B64 " alice@laptop";
        struct sshkey_info k;
        char why[64] = "";

        /* Exactly the line's bytes on the heap: a read past len is caught by ASan. */
        char *p = malloc(sizeof(key) - 1);
        assert_non_null(p);
        memcpy(p, key, sizeof(key) - 1);
        assert_int_equal(sshkey_parse(p, sizeof(key) - 1, &k, why, sizeof(why)), 0);
        assert_string_equal(k.comment, "alice@laptop");
        assert_string_equal(k.fingerprint, ED25519_FP);
        free(p);

        /* len stops before the comment: no comment. */
        size_t keylen = strlen("ssh-ed25519 " ED25519_B64);
        assert_int_equal(sshkey_parse(key, keylen, &k, why, sizeof(why)), 0);
        assert_string_equal(k.comment, "");
        /* len stops inside the comment. */
        assert_int_equal(sshkey_parse(key, keylen + 6, &k, why, sizeof(why)), 0);
        assert_string_equal(k.comment, "alice");
        /* len stops inside the key data. */
        assert_int_equal(sshkey_parse(key, keylen - 4, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "key data is truncated");
        assert_int_equal(sshkey_parse(key, keylen - 1, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "key data is not valid base64");
        /* len stops inside the type. */
        assert_int_equal(sshkey_parse(key, 5, &k, why, sizeof(why)), -EINVAL);
        assert_string_equal(why, "unsupported key type");
}

static void test_why_and_ret(void **state)
{
        (void)state;
        static const char key[] = "ssh-ed25519 " ED25519_B64 " alice@laptop";
        struct sshkey_info k, before;
        char why[8];

        /* why is cut to why_len and nothing after it is touched. */
        memset(why, 'Z', sizeof(why));
        assert_int_equal(sshkey_parse("ssh-dss AAAA", 12, &k, why, 4), -EINVAL);
        assert_string_equal(why, "DSA");
        assert_memory_equal(why + 4, "ZZZZ", 4);
        memset(why, 'Z', sizeof(why));
        assert_int_equal(sshkey_parse("", 0, &k, why, 1), -EINVAL);
        assert_int_equal(why[0], '\0');
        assert_int_equal(why[1], 'Z');
        memset(why, 'Z', sizeof(why));
        assert_int_equal(sshkey_parse("", 0, &k, why, 0), -EINVAL);
        assert_memory_equal(why, "ZZZZZZZZ", 8);
        assert_int_equal(sshkey_parse("x", 1, &k, NULL, 64), -EINVAL);

        /* On failure *ret is left alone; on success why is. */
        memset(&k, 0xa5, sizeof(k));
        before = k;
        assert_int_equal(
                sshkey_parse("ssh-rsa " ED25519_B64, 8 + strlen(ED25519_B64), &k, why, sizeof(why)),
                -EINVAL);
        assert_memory_equal(&k, &before, sizeof(k));
        memset(why, 'Z', sizeof(why));
        assert_int_equal(sshkey_parse(key, sizeof(key) - 1, &k, why, sizeof(why)), 0);
        assert_memory_equal(why, "ZZZZZZZZ", 8);

        /* ret may be NULL: a check only. */
        assert_int_equal(sshkey_parse(key, sizeof(key) - 1, NULL, NULL, 0), 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_good_keys),          cmocka_unit_test(test_bad_lines),
                cmocka_unit_test(test_rsa_sizes),          cmocka_unit_test(test_bad_blobs),
                cmocka_unit_test(test_line_length),        cmocka_unit_test(test_comment_cut),
                cmocka_unit_test(test_not_nul_terminated), cmocka_unit_test(test_why_and_ret),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
