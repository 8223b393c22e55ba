/* apiuser: the Tilaa API users' logins. The only file that includes
 * libargon2.
 *
 * Passwords are kept as argon2id encoded hashes (apiuser_hash). A login
 * (apiuser_login) reads the user by e-mail and checks the password:
 * - from a small cache of recent successful logins first (APIUSER_CACHE
 *   entries, each APIUSER_CACHE_MS long), keyed by SHA-256 of the e-mail
 *   and password and tied to the user's stored hash, so a changed
 *   password (or a user deleted and made again) misses at once;
 * - else by argon2, which first spends a token of the e-mail's bucket
 *   (APIUSER_TRIES_BURST tokens, refilling APIUSER_TRIES_PER_MIN a
 *   minute; a bounded table, see ratelimit.h): past it the login is
 *   refused with a Retry-After, whatever the password. An unknown e-mail
 *   is checked against a decoy hash, so it costs the same time and tokens
 *   as a known one.
 * The state (struct apiuser_auth) is the caller's; any thread may call
 * apiuser_login() (one mutex guards the cache; argon2 runs outside it).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define APIUSER_PASSWORD_MAX  1024
#define APIUSER_CACHE         1024
#define APIUSER_CACHE_MS      (5 * 60 * 1000)
#define APIUSER_TRIES_BURST   10
#define APIUSER_TRIES_PER_MIN 10

struct apiuser_auth;

/* max_emails: e-mails whose tries are tracked at once. 0, -ENOMEM, -EIO. */
int apiuser_auth_new(size_t max_emails, struct apiuser_auth **ret);
void apiuser_auth_free(struct apiuser_auth *a);

/* The argon2id encoded hash of a password (1..APIUSER_PASSWORD_MAX bytes)
 * into out (STORE_PWHASH_MAX bytes): 0, -EINVAL, -ENOMEM. */
int apiuser_hash(const char *password, char out[STORE_PWHASH_MAX]);

/* 0 and the user; -EACCES (unknown e-mail or wrong password); -EAGAIN
 * (too many tries: *ret_retry_after_s seconds); -EIO (the store). email
 * as given (matched case-insensitively). */
int apiuser_login(struct apiuser_auth *a, struct store *s, const char *email, const char *password,
                  struct api_user *ret, uint32_t *ret_retry_after_s);

/* For tests: how many argon2 checks have run. */
uint64_t apiuser_argon2_count(struct apiuser_auth *a);
