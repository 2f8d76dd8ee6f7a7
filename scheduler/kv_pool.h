/*
 * kv_pool: the KV block pool (vLLM v1 BlockPool). The scheduler's view of the engine's KV
 * memory: block ids, reference counts, a free list in LRU order, and the prefix-cache map
 * hash → block. No memory of the KV itself lives here; the engine owns that and sees only
 * ids. Engine thread only; not thread-safe.
 *
 *   block 0          the null block: never allocated, never freed (ref pinned at 1)
 *   ref > 0          held by that many block tables
 *   ref == 0         on the free list; if it is cached it can still be hit, and is
 *                    evicted from the map only when it is allocated again
 *
 * Free list: an intrusive doubly linked list over block indices with a sentinel, so a
 * cached block that a new request hits is pulled out of the middle in O(1). Allocation
 * takes from the head. Freed blocks that are cached go to the tail (evicted last, LRU);
 * freed blocks that are not cached go to the head (nothing to lose).
 *
 * Prefix-cache entries are confirmed by exact comparison, never by hash alone: each cached
 * block keeps its tokens, the media items (content hash, span offset) that fall in it, and
 * its parent block's (id, generation). A block's generation increases every time it is
 * allocated, so a child whose parent was reused no longer matches anything.
 */
#ifndef VLM_KV_POOL_H
#define VLM_KV_POOL_H

#include <stdbool.h>
#include <stdint.h>

#define KV_NULL_BLOCK 0
#define KV_MAX_MM_PER_BLOCK 4 /* a block overlapping more media items is not cached */

/* One media item falling in a block: its content hash and where its span starts relative
 * to the block's first position (negative when it began in an earlier block). */
struct kv_mm_ref {
    uint64_t hash;
    int32_t rel;
};

/* What identifies a full block's KV: everything its keys and values depend on. */
struct kv_block_key {
    uint64_t hash;                 /* chained: parent hash, tokens, mm refs; never 0 */
    int32_t parent;                /* block id holding the previous block, -1 for the first */
    uint32_t parent_gen;           /* that block's generation */
    const int32_t *tokens;         /* (block_size), borrowed */
    const struct kv_mm_ref *mm;    /* (n_mm), borrowed */
    int32_t n_mm;
};

struct kv_block {
    int32_t ref;
    int32_t prev, next;            /* free-list links (indices; the sentinel is n_blocks) */
    uint32_t gen;                  /* bumped on every allocation */
    bool cached;                   /* in the hash map */
    int32_t hash_next;             /* next block in the same bucket, -1 at the end */
    uint64_t hash;
    int32_t parent;
    uint32_t parent_gen;
    int32_t n_mm;
    struct kv_mm_ref mm[KV_MAX_MM_PER_BLOCK];
};

struct kv_pool {
    int32_t n_blocks;              /* including the null block */
    int32_t block_size;            /* tokens per block */
    bool caching;                  /* prefix caching on */
    struct kv_block *b;            /* owned, (n_blocks + 1); [n_blocks] is the list sentinel */
    int32_t *tok;                  /* owned, (n_blocks, block_size) tokens of cached blocks */
    int32_t *bucket;               /* owned, (mask + 1) first block of each hash chain, -1 */
    uint32_t mask;
    int32_t n_free;                /* blocks on the free list (cached or not) */
    int32_t n_cached;              /* blocks in the map */
    uint64_t n_evicted;            /* cached blocks dropped from the map by reuse */
};

/* Sizes everything once. VLM_EINVAL if n_blocks < 2 or block_size < 1. */
int kv_pool_init(struct kv_pool *p, int32_t n_blocks, int32_t block_size, bool caching);
void kv_pool_destroy(struct kv_pool *p);

/* Usable blocks (all but the null block). */
static inline int32_t kv_pool_capacity(const struct kv_pool *p) { return p->n_blocks - 1; }

/* Takes n blocks from the head of the free list into out (ref 1 each), evicting any that
 * were cached. Returns 0, or VLM_ENOSPC (nothing taken) if fewer than n are free. */
int kv_pool_alloc(struct kv_pool *p, int32_t n, int32_t *out);

/* Drops one reference from each of ids[0..n), last one first, so that when a whole table
 * is freed its tail is evicted before its head. A double free aborts. */
void kv_pool_release(struct kv_pool *p, const int32_t *ids, int32_t n);

/* A cache hit: one more reference on a cached block, pulling it off the free list if it
 * was there. */
void kv_pool_touch(struct kv_pool *p, int32_t id);

/* The cached block whose key equals *k exactly, or -1. */
int32_t kv_pool_lookup(const struct kv_pool *p, const struct kv_block_key *k);

/* Offers held, full block id under key *k. Returns true if it entered the map; false if
 * caching is off, the block is already cached, too many media items, or an identical
 * block is already cached (this one then stays private and is reused first). */
bool kv_pool_cache(struct kv_pool *p, int32_t id, const struct kv_block_key *k);

/* O(n) consistency check for tests: links, counts, map membership. Aborts on a break. */
void kv_pool_check(const struct kv_pool *p);

#endif
