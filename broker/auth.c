#include "auth.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

#include "util.h"

int auth_key_create(struct store *s, uint64_t account_id, int read_only, char *key_out,
                    char *prefix_out, uint64_t *ret_id)
{
        uint8_t raw[20], hash[32];
        char hex[41];
        int r = util_random(raw, sizeof(raw));
        if (r < 0)
                return r;
        util_hex(raw, sizeof(raw), hex);
        memcpy(key_out, "tas_", 4);
        memcpy(key_out + 4, hex, 41);
        memcpy(prefix_out, key_out, AUTH_PREFIX_LEN);
        prefix_out[AUTH_PREFIX_LEN] = '\0';
        SHA256((const unsigned char *)key_out, AUTH_KEY_LEN, hash);
        return store_key_create(s, account_id, prefix_out, hash, read_only, ret_id);
}

static int well_formed(const char *k)
{
        if (strlen(k) != AUTH_KEY_LEN || strncmp(k, "tas_", 4) != 0)
                return 0;
        for (const char *p = k + 4; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
                        return 0;
        return 1;
}

/* The keys of a prefix as the store last had them: kept per prefix while
 * the store's version is unchanged (a new or revoked key is a commit), so
 * a request costs a hash and no query. One process's commits only, as
 * store_version() says. */
#define KEYCACHE_SLOTS 256
static struct keycache_slot {
        pthread_mutex_t lock;
        const struct store *store; /* versions are per store */
        char prefix[AUTH_PREFIX_LEN + 1];
        uint64_t version;
        int used;
        struct api_key keys[8];
        size_t n;
} keycache[KEYCACHE_SLOTS];
static pthread_once_t keycache_once = PTHREAD_ONCE_INIT;

static void keycache_init(void)
{
        for (size_t i = 0; i < KEYCACHE_SLOTS; i++)
                pthread_mutex_init(&keycache[i].lock, NULL);
}

static int find_keys(struct store *s, const char *prefix, struct api_key keys[8], size_t *n)
{
        uint32_t h = 2166136261u;
        for (const char *p = prefix; *p; p++)
                h = (h ^ (uint8_t)*p) * 16777619u;
        struct keycache_slot *c = &keycache[h % KEYCACHE_SLOTS];
        uint64_t version = store_version(s);

        pthread_once(&keycache_once, keycache_init);
        pthread_mutex_lock(&c->lock);
        if (c->used && c->store == s && c->version == version && strcmp(c->prefix, prefix) == 0) {
                memcpy(keys, c->keys, c->n * sizeof(keys[0]));
                *n = c->n;
                pthread_mutex_unlock(&c->lock);
                return 0;
        }
        pthread_mutex_unlock(&c->lock);
        if (store_key_find(s, prefix, keys, 8, n) < 0)
                return -EIO;
        pthread_mutex_lock(&c->lock);
        if (!c->used || c->store != s || strcmp(c->prefix, prefix) != 0 || c->version <= version) {
                c->store = s;
                memcpy(c->prefix, prefix, AUTH_PREFIX_LEN + 1);
                memcpy(c->keys, keys, *n * sizeof(keys[0]));
                c->n = *n;
                c->version = version;
                c->used = 1;
        }
        pthread_mutex_unlock(&c->lock);
        return 0;
}

int auth_check_bearer(struct store *s, const char *header, struct auth_who *ret)
{
        struct api_key keys[8];
        char prefix[AUTH_PREFIX_LEN + 1];
        uint8_t hash[32];
        size_t n = 0;
        int found = -1;

        if (!header || strncasecmp(header, "Bearer ", 7) != 0)
                return -EACCES;
        header += 7;
        while (*header == ' ')
                header++;
        if (!well_formed(header))
                return -EACCES;
        memcpy(prefix, header, AUTH_PREFIX_LEN);
        prefix[AUTH_PREFIX_LEN] = '\0';
        if (find_keys(s, prefix, keys, &n) < 0)
                return -EIO;
        SHA256((const unsigned char *)header, AUTH_KEY_LEN, hash);
        for (size_t i = 0; i < n; i++)
                if (CRYPTO_memcmp(keys[i].hash, hash, sizeof(hash)) == 0)
                        found = (int)i;
        if (found < 0)
                return -EACCES;
        ret->account_id = keys[found].account_id;
        ret->tier = keys[found].tier;
        ret->key_id = keys[found].id;
        ret->read_only = keys[found].read_only;
        return 0;
}

void auth_request_hash(const char *method, const char *path, const char *body, size_t body_len,
                       uint8_t out[32])
{
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        unsigned int n = 32;
        if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
            EVP_DigestUpdate(c, method, strlen(method) + 1) != 1 ||
            EVP_DigestUpdate(c, path, strlen(path) + 1) != 1 ||
            (body_len && EVP_DigestUpdate(c, body, body_len) != 1) ||
            EVP_DigestFinal_ex(c, out, &n) != 1)
                abort(); /* out of memory */
        EVP_MD_CTX_free(c);
}
