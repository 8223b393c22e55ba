/* See apiuser.h. */
#include "apiuser.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "log.h"
#include "ratelimit.h"
#include "util.h"

/* OWASP's argon2id minimum: 19 MiB, 2 passes, 1 lane. */
#define T_COST   2
#define M_COST   (19 * 1024)
#define LANES    1
#define SALT_LEN 16
#define HASH_LEN 32

struct cache_entry {
        uint8_t key[32];  /* SHA-256 of the lowercased e-mail, NUL and the password */
        uint8_t hash[32]; /* SHA-256 of the stored encoded hash it matched */
        int64_t until;    /* monotonic ms; 0: empty */
};

struct apiuser_auth {
        pthread_mutex_t lock;
        struct cache_entry cache[APIUSER_CACHE];
        struct ratelimit *tries;
        char decoy[STORE_PWHASH_MAX];
        atomic_uint_fast64_t n_argon2;
};

int apiuser_hash(const char *password, char out[STORE_PWHASH_MAX])
{
        uint8_t salt[SALT_LEN];
        size_t n = strlen(password);
        if (n == 0 || n > APIUSER_PASSWORD_MAX)
                return -EINVAL;
        if (util_random(salt, sizeof(salt)) < 0)
                return -EIO;
        if (argon2_encodedlen(T_COST, M_COST, LANES, SALT_LEN, HASH_LEN, Argon2_id) >
            STORE_PWHASH_MAX)
                return -EINVAL;
        int rc = argon2id_hash_encoded(T_COST, M_COST, LANES, password, n, salt, sizeof(salt),
                                       HASH_LEN, out, STORE_PWHASH_MAX);
        if (rc != ARGON2_OK) {
                log_error("api users: cannot hash a password: %s", argon2_error_message(rc));
                return rc == ARGON2_MEMORY_ALLOCATION_ERROR ? -ENOMEM : -EINVAL;
        }
        return 0;
}

int apiuser_auth_new(size_t max_emails, struct apiuser_auth **ret)
{
        struct apiuser_auth *a = calloc(1, sizeof(*a));
        char pw[33];
        uint8_t raw[16];
        int r;
        if (!a)
                return -ENOMEM;
        pthread_mutex_init(&a->lock, NULL);
        if ((r = ratelimit_new(max_emails, &a->tries)) < 0)
                goto fail;
        /* the decoy: a hash of a password nobody knows */
        if ((r = util_random(raw, sizeof(raw))) < 0)
                goto fail;
        util_hex(raw, sizeof(raw), pw);
        if ((r = apiuser_hash(pw, a->decoy)) < 0)
                goto fail;
        *ret = a;
        return 0;
fail:
        apiuser_auth_free(a);
        return r;
}

void apiuser_auth_free(struct apiuser_auth *a)
{
        if (!a)
                return;
        ratelimit_free(a->tries);
        pthread_mutex_destroy(&a->lock);
        free(a);
}

uint64_t apiuser_argon2_count(struct apiuser_auth *a)
{
        return atomic_load(&a->n_argon2);
}

static void lower(const char *s, char *out, size_t len)
{
        size_t i = 0;
        for (; s[i] && i + 1 < len; i++)
                out[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
        out[i] = '\0';
}

int apiuser_login(struct apiuser_auth *a, struct store *s, const char *email, const char *password,
                  struct api_user *ret, uint32_t *ret_retry_after_s)
{
        char mail[STORE_EMAIL_MAX + 1];
        uint8_t key[32], hh[32], rk[32];
        struct api_user u;
        size_t el = strlen(email), pl = strlen(password);
        int64_t now = util_mono_ms();
        int r;

        if (el == 0 || el > STORE_EMAIL_MAX || pl == 0 || pl > APIUSER_PASSWORD_MAX)
                return -EACCES;
        lower(email, mail, sizeof(mail));
        r = store_api_user_by_email(s, mail, &u);
        if (r < 0 && r != -ENOENT)
                return -EIO;
        int known = r == 0;

        unsigned char kb[STORE_EMAIL_MAX + 1 + APIUSER_PASSWORD_MAX];
        size_t ml = strlen(mail) + 1;
        memcpy(kb, mail, ml);
        memcpy(kb + ml, password, pl);
        SHA256(kb, ml + pl, key);
        OPENSSL_cleanse(kb, sizeof(kb));
        if (known) {
                SHA256((const unsigned char *)u.hash, strlen(u.hash), hh);
                size_t slot = ((size_t)key[0] | (size_t)key[1] << 8) % APIUSER_CACHE;
                pthread_mutex_lock(&a->lock);
                struct cache_entry *e = &a->cache[slot];
                int hit = e->until > now && CRYPTO_memcmp(e->key, key, 32) == 0 &&
                          CRYPTO_memcmp(e->hash, hh, 32) == 0;
                pthread_mutex_unlock(&a->lock);
                if (hit) {
                        *ret = u;
                        return 0;
                }
        }
        /* an argon2 check: one token of this e-mail's bucket first */
        struct ratelimit_result rl;
        SHA256((const unsigned char *)mail, strlen(mail), rk);
        uint64_t rid;
        memcpy(&rid, rk, sizeof(rid));
        ratelimit_take(a->tries, rid, APIUSER_TRIES_PER_MIN, APIUSER_TRIES_BURST, now, &rl);
        if (!rl.allowed) {
                *ret_retry_after_s = rl.retry_after_s ? rl.retry_after_s : 1;
                return -EAGAIN;
        }
        atomic_fetch_add(&a->n_argon2, 1);
        int ok = argon2id_verify(known ? u.hash : a->decoy, password, pl) == ARGON2_OK;
        if (!known || !ok)
                return -EACCES;
        size_t slot = ((size_t)key[0] | (size_t)key[1] << 8) % APIUSER_CACHE;
        pthread_mutex_lock(&a->lock);
        memcpy(a->cache[slot].key, key, 32);
        memcpy(a->cache[slot].hash, hh, 32);
        a->cache[slot].until = now + APIUSER_CACHE_MS;
        pthread_mutex_unlock(&a->lock);
        *ret = u;
        return 0;
}
