#include "listcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct slot {
        pthread_mutex_t lock;
        uint64_t account;
        char key[LISTCACHE_KEY_MAX + 1];
        uint64_t version;
        int64_t valid_until;
        char *body; /* NULL: empty */
        size_t len;
};

struct listcache {
        struct slot slots[LISTCACHE_SLOTS];
        atomic_uint_fast64_t hits, misses;
};

int listcache_new(struct listcache **ret)
{
        struct listcache *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < LISTCACHE_SLOTS; i++)
                pthread_mutex_init(&c->slots[i].lock, NULL);
        *ret = c;
        return 0;
}

void listcache_free(struct listcache *c)
{
        if (!c)
                return;
        for (size_t i = 0; i < LISTCACHE_SLOTS; i++) {
                pthread_mutex_destroy(&c->slots[i].lock);
                free(c->slots[i].body);
        }
        free(c);
}

/* FNV-1a over the account and the key. */
static struct slot *slot_of(struct listcache *c, uint64_t account, const char *key)
{
        uint64_t h = 0xcbf29ce484222325ULL;
        for (int i = 0; i < 8; i++)
                h = (h ^ ((account >> (8 * i)) & 0xff)) * 0x100000001b3ULL;
        for (const unsigned char *p = (const unsigned char *)key; *p; p++)
                h = (h ^ *p) * 0x100000001b3ULL;
        return &c->slots[(h ^ (h >> 32)) % LISTCACHE_SLOTS];
}

char *listcache_get(struct listcache *c, uint64_t account, const char *key, uint64_t version,
                    int64_t now_ms, size_t *ret_len)
{
        struct slot *s = slot_of(c, account, key);
        char *out = NULL;

        pthread_mutex_lock(&s->lock);
        if (s->body && s->account == account && s->version == version &&
            now_ms < s->valid_until && strcmp(s->key, key) == 0 && (out = malloc(s->len + 1))) {
                memcpy(out, s->body, s->len);
                out[s->len] = '\0';
                *ret_len = s->len;
        }
        pthread_mutex_unlock(&s->lock);
        atomic_fetch_add_explicit(out ? &c->hits : &c->misses, 1, memory_order_relaxed);
        return out;
}

void listcache_put(struct listcache *c, uint64_t account, const char *key, uint64_t version,
                   int64_t valid_until_ms, const char *body, size_t len)
{
        size_t kl = strlen(key);
        if (kl > LISTCACHE_KEY_MAX || len > LISTCACHE_BODY_MAX)
                return;
        char *copy = malloc(len + 1);
        if (!copy)
                return;
        memcpy(copy, body, len);
        copy[len] = '\0';
        struct slot *s = slot_of(c, account, key);
        pthread_mutex_lock(&s->lock);
        /* an answer read at an older version never replaces a newer one */
        if (s->body && s->account == account && strcmp(s->key, key) == 0 &&
            s->version > version) {
                pthread_mutex_unlock(&s->lock);
                free(copy);
                return;
        }
        free(s->body);
        s->body = copy;
        s->len = len;
        s->account = account;
        memcpy(s->key, key, kl + 1);
        s->version = version;
        s->valid_until = valid_until_ms;
        pthread_mutex_unlock(&s->lock);
}

void listcache_stats(struct listcache *c, uint64_t *ret_hits, uint64_t *ret_misses)
{
        *ret_hits = atomic_load_explicit(&c->hits, memory_order_relaxed);
        *ret_misses = atomic_load_explicit(&c->misses, memory_order_relaxed);
}
