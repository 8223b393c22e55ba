/* listcache: answers to GET list requests, kept while they are still true.
 *
 * An entry is the body an account's list request was answered with, under a
 * key naming the request (its query arguments), with the store version it
 * was read at (store_version(): any commit changes it) and the time until
 * which nothing but a commit can change it (a VPS's status turns "unknown"
 * when its host has not been heard from for host_timeout_ms: the earliest
 * such moment among the listed guests). An entry is used only while both
 * hold, so a cached answer is byte for byte the one a fresh read would give.
 *
 * Only this broker's commits change the version: with several brokers on
 * one database (PostgreSQL), the cache must not be used.
 *
 * Fixed size (LISTCACHE_SLOTS entries, a slot per hash of account and key,
 * the last writer wins), a lock per slot. Any thread.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define LISTCACHE_SLOTS 1024
#define LISTCACHE_KEY_MAX 384   /* longer keys are not cached */
#define LISTCACHE_BODY_MAX (256u << 10)

struct listcache;

int listcache_new(struct listcache **ret);
void listcache_free(struct listcache *c);

/* A malloc'd copy of the cached body (and its length) if the entry for
 * (account, key) is current at version and now; NULL otherwise. */
char *listcache_get(struct listcache *c, uint64_t account, const char *key, uint64_t version,
                    int64_t now_ms, size_t *ret_len);

/* Keeps a copy of body for (account, key), read at version, true until
 * valid_until_ms (exclusive). Bodies over LISTCACHE_BODY_MAX, or keys over
 * LISTCACHE_KEY_MAX, are not kept. */
void listcache_put(struct listcache *c, uint64_t account, const char *key, uint64_t version,
                   int64_t valid_until_ms, const char *body, size_t len);

/* Hits and misses since it was made (metrics). */
void listcache_stats(struct listcache *c, uint64_t *ret_hits, uint64_t *ret_misses);
