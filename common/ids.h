/* ids: the public form of numeric resource ids.
 *
 * Every resource has one 63-bit numeric id (the Tilaa API shows it as a
 * JSON number). The native API shows it as a type prefix plus an opaque
 * 13-character code: a keyed 64-bit permutation of the number written in
 * lowercase base 32, so ids map both ways without a lookup and reveal no
 * counts. The key is per installation (stored in the database) and must
 * never change once ids have been handed out. Pure functions; any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define ID_CODE_LEN 13
#define ID_STR_MAX 32

struct id_key {
        uint64_t k[4];
};

/* Derives the round keys from a secret of any length. */
void id_key_init(struct id_key *key, const void *secret, size_t len);

/* Writes "<prefix>_<code>" into buf (ID_STR_MAX bytes is always enough for
 * prefixes up to 16 chars). */
void id_encode(const struct id_key *key, const char *prefix, uint64_t id, char *buf,
               size_t buf_len);

/* Returns 0 and the number, or -EINVAL if s is not "<prefix>_<code>" with
 * this prefix and a code this key produced. */
int id_decode(const struct id_key *key, const char *prefix, const char *s, uint64_t *ret_id);
