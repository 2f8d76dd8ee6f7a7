/*
 * kv_cache: a request's block table over the kv_pool (vLLM v1 KVCacheManager). Prefix
 * lookup, slot allocation, offering computed blocks to the prefix cache, and freeing.
 * Engine thread only.
 *
 * Blocks layout of one request (block_size 4, 10 tokens, 6 computed):
 *
 *   tokens   | t0 t1 t2 t3 | t4 t5 t6 t7 | t8 t9 .  . |
 *   computed | x  x  x  x  | x  x  .  .  | .  .  .  . |
 *   blocks   |   blocks[0] |   blocks[1] |  blocks[2] |
 *   cached   |   yes       |   no (not full of computed tokens yet)
 *
 * Only blocks full of computed tokens are offered to the cache. A block's hash chains the
 * previous block's hash, its tokens, and (content hash, span offset) of each media item
 * whose placeholder tokens fall in it, so the same text beside different images never
 * shares a block.
 */
#ifndef VLM_KV_CACHE_H
#define VLM_KV_CACHE_H

#include "scheduler/kv_pool.h"
#include "scheduler/request.h"

/* Blocks needed to hold n tokens. */
static inline int32_t kv_blocks_for(const struct kv_pool *p, int32_t n)
{
    return (n + p->block_size - 1) / p->block_size;
}

/* Sizes r's block table and hash arrays for r->cap_tokens tokens. VLM_ENOMEM on failure.
 * Called once at submission (any thread that holds the request before it is queued). */
int kv_cache_req_init(int32_t block_size, struct request *r);

/* Longest cached prefix of r->tokens, in whole blocks: writes the block ids into hits
 * (room for r->cap_blocks) without taking references and returns how many. Leaves at least
 * one token to compute, and never ends inside a media span. r must hold no blocks. */
int32_t kv_cache_lookup(struct kv_pool *p, struct request *r, int32_t *hits);

/* Makes r's table cover n_total tokens: takes references on hits[0..n_hits) (only when
 * r holds no blocks yet) and allocates the rest. Returns 0, or VLM_ENOSPC with nothing
 * changed when the free list is short. */
int kv_cache_alloc(struct kv_pool *p, struct request *r, const int32_t *hits, int32_t n_hits,
                   int32_t n_total);

/* Offers r's blocks that are full of computed tokens to the prefix cache. */
void kv_cache_commit(struct kv_pool *p, struct request *r);

/* Returns all of r's blocks to the pool. */
void kv_cache_free(struct kv_pool *p, struct request *r);

#endif
