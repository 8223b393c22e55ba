#include "ids.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* Crockford's base 32 alphabet, lowercase: no i, l, o, u. */
static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
_Static_assert(sizeof(alphabet) == 33, "base 32 alphabet");

static uint64_t mix64(uint64_t z)
{
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

void id_key_init(struct id_key *key, const void *secret, size_t len)
{
        const unsigned char *p = secret;
        uint64_t h = 0x9e3779b97f4a7c15ULL;
        for (size_t i = 0; i < len; i++)
                h = mix64(h ^ p[i]);
        for (int i = 0; i < 4; i++) {
                h = mix64(h + 0x9e3779b97f4a7c15ULL);
                key->k[i] = h;
        }
}

static uint32_t round_f(uint32_t half, uint64_t k)
{
        return (uint32_t)mix64(half ^ k);
}

/* A 4-round Feistel network over the two 32-bit halves: a bijection. */
/* Each type gets its own permutation: a tweak from the prefix. */
static uint64_t tweak(const char *prefix)
{
        uint64_t h = 0x243f6a8885a308d3ULL;
        for (const char *p = prefix; *p; p++)
                h = mix64(h ^ (unsigned char)*p);
        return h;
}

static uint64_t permute(const struct id_key *key, const char *prefix, uint64_t v)
{
        uint32_t l = (uint32_t)(v >> 32), r = (uint32_t)v;
        uint64_t tw = tweak(prefix);
        for (int i = 0; i < 4; i++) {
                uint32_t t = r;
                r = l ^ round_f(r, key->k[i] ^ tw);
                l = t;
        }
        return ((uint64_t)l << 32) | r;
}

static uint64_t unpermute(const struct id_key *key, const char *prefix, uint64_t v)
{
        uint32_t l = (uint32_t)(v >> 32), r = (uint32_t)v;
        uint64_t tw = tweak(prefix);
        for (int i = 3; i >= 0; i--) {
                uint32_t t = l;
                l = r ^ round_f(l, key->k[i] ^ tw);
                r = t;
        }
        return ((uint64_t)l << 32) | r;
}

void id_encode(const struct id_key *key, const char *prefix, uint64_t id, char *buf,
               size_t buf_len)
{
        char code[ID_CODE_LEN + 1];
        uint64_t v = permute(key, prefix, id);
        /* 13 digits of 5 bits = 65 bits; the top digit holds 4. */
        for (int i = ID_CODE_LEN - 1; i >= 0; i--) {
                code[i] = alphabet[v & 31];
                v >>= 5;
        }
        code[ID_CODE_LEN] = '\0';
        snprintf(buf, buf_len, "%s_%s", prefix, code);
}

int id_decode(const struct id_key *key, const char *prefix, const char *s, uint64_t *ret_id)
{
        size_t pl = strlen(prefix);
        uint64_t v = 0;

        if (strncmp(s, prefix, pl) != 0 || s[pl] != '_')
                return -EINVAL;
        s += pl + 1;
        if (strlen(s) != ID_CODE_LEN)
                return -EINVAL;
        for (int i = 0; i < ID_CODE_LEN; i++) {
                const char *p = strchr(alphabet, s[i]);
                if (!p || s[i] == '\0')
                        return -EINVAL;
                if (i == 0 && (p - alphabet) > 15)
                        return -EINVAL;
                v = (v << 5) | (uint64_t)(p - alphabet);
        }
        v = unpermute(key, prefix, v);
        if (v == 0 || v > INT64_MAX)
                return -EINVAL;
        *ret_id = v;
        return 0;
}
