/*
 * kv_cache: request block tables over the pool; prefix hashing, lookup and commit.
 */
#include "scheduler/kv_cache.h"

#include <stdlib.h>

#define KV_HASH_SEED 0x76616c6c65790001ull /* "valley" */

int kv_cache_req_init(int32_t block_size, struct request *r)
{
    VLM_ASSERT(block_size > 0 && r->cap_tokens > 0 && !r->blocks);
    r->cap_blocks = (r->cap_tokens + block_size - 1) / block_size;
    r->blocks = trymalloc((size_t)r->cap_blocks * sizeof *r->blocks);
    r->block_hash = trymalloc((size_t)r->cap_blocks * sizeof *r->block_hash);
    if (!r->blocks || !r->block_hash) return VLM_ENOMEM;
    r->n_blocks = r->n_hashed = r->n_committed = 0;
    return 0;
}

/* ==== Block keys ==== */

/* The media refs of r's block i into refs (room for KV_MAX_MM_PER_BLOCK); returns their
 * count, or KV_MAX_MM_PER_BLOCK + 1 when there are too many to cache the block. */
static int32_t block_mm(const struct kv_pool *p, const struct request *r, int32_t i,
                        struct kv_mm_ref *refs)
{
    int32_t lo = i * p->block_size, hi = lo + p->block_size, n = 0;
    for (int32_t k = 0; k < r->n_mm; k++) {
        const struct mm_span *sp = &r->mm[k];
        if (sp->offset >= hi) break;
        if (sp->offset + sp->item->n_tokens <= lo) continue;
        if (n == KV_MAX_MM_PER_BLOCK) return n + 1;
        refs[n++] = (struct kv_mm_ref){.hash = sp->item->hash, .rel = sp->offset - lo};
    }
    return n;
}

/* r->block_hash[i], computing the chain up to it. 0 means "not cacheable" (and so is every
 * later block). Block i must be full of known tokens. */
static uint64_t block_hash(const struct kv_pool *p, struct request *r, int32_t i)
{
    VLM_DASSERT((i + 1) * p->block_size <= r->n_tokens);
    for (int32_t j = r->n_hashed; j <= i; j++) {
        uint64_t parent = j ? r->block_hash[j - 1] : KV_HASH_SEED, h = 0;
        struct kv_mm_ref refs[KV_MAX_MM_PER_BLOCK];
        int32_t n_mm = block_mm(p, r, j, refs);
        if (parent != 0 && n_mm <= KV_MAX_MM_PER_BLOCK) {
            h = vlm_hash64(r->tokens + (size_t)j * p->block_size,
                           (size_t)p->block_size * sizeof(int32_t), parent);
            for (int32_t k = 0; k < n_mm; k++) {
                h = vlm_hash64(&refs[k].hash, sizeof refs[k].hash, h);
                h = vlm_hash64(&refs[k].rel, sizeof refs[k].rel, h);
            }
            if (h == 0) h = 1;
        }
        r->block_hash[j] = h;
    }
    if (r->n_hashed < i + 1) r->n_hashed = i + 1;
    return r->block_hash[i];
}

/* Fills *k for r's block i with the given parent; refs is its storage for media refs.
 * Returns false if the block cannot be cached. */
static bool block_key(const struct kv_pool *p, struct request *r, int32_t i, int32_t parent,
                      struct kv_mm_ref *refs, struct kv_block_key *k)
{
    k->hash = block_hash(p, r, i);
    if (k->hash == 0) return false;
    k->n_mm = block_mm(p, r, i, refs);
    k->mm = refs;
    k->tokens = r->tokens + (size_t)i * p->block_size;
    k->parent = parent;
    k->parent_gen = parent >= 0 ? p->b[parent].gen : 0;
    return true;
}

/* ==== Lookup, allocation, commit ==== */

int32_t kv_cache_lookup(struct kv_pool *p, struct request *r, int32_t *hits)
{
    VLM_ASSERT(r->n_blocks == 0 && r->n_tokens > 0);
    if (!p->caching) return 0;
    int32_t max = (r->n_tokens - 1) / p->block_size, n = 0, parent = -1;
    struct kv_mm_ref refs[KV_MAX_MM_PER_BLOCK];
    struct kv_block_key k;
    while (n < max && block_key(p, r, n, parent, refs, &k)) {
        int32_t id = kv_pool_lookup(p, &k);
        if (id < 0) break;
        hits[n++] = parent = id;
    }
    /* Never end inside a media span: back off to the block holding the span's start. */
    for (int32_t s = r->n_mm - 1; s >= 0 && n > 0; s--) {
        int32_t end = n * p->block_size, lo = r->mm[s].offset;
        if (lo < end && end < lo + r->mm[s].item->n_tokens) n = lo / p->block_size;
    }
    return n;
}

int kv_cache_alloc(struct kv_pool *p, struct request *r, const int32_t *hits, int32_t n_hits,
                   int32_t n_total)
{
    VLM_ASSERT(n_hits == 0 || r->n_blocks == 0);
    int32_t need = kv_blocks_for(p, n_total);
    VLM_ASSERT(need <= r->cap_blocks);
    int32_t n_new = VLM_MAX(need - r->n_blocks - n_hits, 0), n_hit_free = 0;
    for (int32_t i = 0; i < n_hits; i++) n_hit_free += p->b[hits[i]].ref == 0;
    if (n_new + n_hit_free > p->n_free) return VLM_ENOSPC;
    for (int32_t i = 0; i < n_hits; i++) {
        kv_pool_touch(p, hits[i]);
        r->blocks[r->n_blocks++] = hits[i];
    }
    if (n_hits) r->n_committed = n_hits;
    int rc = kv_pool_alloc(p, n_new, r->blocks + r->n_blocks);
    VLM_ASSERT(rc == 0);
    r->n_blocks += n_new;
    return 0;
}

void kv_cache_commit(struct kv_pool *p, struct request *r)
{
    int32_t n_full = r->n_computed / p->block_size;
    if (!p->caching) {
        r->n_committed = n_full;
        return;
    }
    struct kv_mm_ref refs[KV_MAX_MM_PER_BLOCK];
    struct kv_block_key k;
    for (int32_t i = r->n_committed; i < n_full; i++) {
        if (!block_key(p, r, i, i ? r->blocks[i - 1] : -1, refs, &k)) break;
        kv_pool_cache(p, r->blocks[i], &k);
    }
    if (r->n_committed < n_full) r->n_committed = n_full;
}

void kv_cache_free(struct kv_pool *p, struct request *r)
{
    kv_pool_release(p, r->blocks, r->n_blocks);
    r->n_blocks = 0;
    r->n_committed = 0;
}
