/* auth: API keys. A key is "tas_" + 40 hex digits (160 random bits); the
 * store keeps its first 12 characters (the prefix, to find it) and the
 * SHA-256 of the whole key, compared in constant time. The key itself is
 * shown once, at creation, and never stored. Any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AUTH_KEY_LEN 44     /* "tas_" + 40 hex */
#define AUTH_PREFIX_LEN 12  /* "tas_" + 8 hex */

/* Makes a key for the account; key_out gets AUTH_KEY_LEN + 1 bytes. */
int auth_key_create(struct store *s, uint64_t account_id, int read_only, char *key_out,
                    char *prefix_out, uint64_t *ret_id);

/* Who a request is. */
struct auth_who {
        uint64_t account_id;
        enum tier tier;
        uint64_t key_id;
        int read_only;
};

/* Checks an "Authorization: Bearer ..." header value. 0 and who it is, or
 * -EACCES (missing, malformed, unknown or revoked), -EIO. */
int auth_check_bearer(struct store *s, const char *header, struct auth_who *ret);

/* SHA-256 of a request (method, path, body), to tell a retry from another
 * request under the same Idempotency-Key. */
void auth_request_hash(const char *method, const char *path, const char *body, size_t body_len,
                       uint8_t out[32]);
