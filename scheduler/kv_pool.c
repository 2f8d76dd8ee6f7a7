/*
 * kv_pool: block ids, refcounts, the LRU free list and the prefix-cache map.
 */
#include "scheduler/kv_pool.h"

#include <stdlib.h>
#include <string.h>

#include "engine/base.h"

/* ==== Free list ====
 * Indices, not pointers: the sentinel is b[n_blocks]; b[S].next is the head (next to be
 * allocated), b[S].prev the tail. prev == next == -1 means "not on the list". */

static inline int32_t sentinel(const struct kv_pool *p) { return p->n_blocks; }

static void list_unlink(struct kv_pool *p, int32_t id)
{
    struct kv_block *x = &p->b[id];
    VLM_DASSERT(x->prev >= 0 && x->next >= 0);
    p->b[x->prev].next = x->next;
    p->b[x->next].prev = x->prev;
    x->prev = x->next = -1;
    p->n_free--;
}

static void list_push_tail(struct kv_pool *p, int32_t id)
{
    int32_t s = sentinel(p), t = p->b[s].prev;
    p->b[id].prev = t;
    p->b[id].next = s;
    p->b[t].next = id;
    p->b[s].prev = id;
    p->n_free++;
}

static void list_push_head(struct kv_pool *p, int32_t id)
{
    int32_t s = sentinel(p), h = p->b[s].next;
    p->b[id].prev = s;
    p->b[id].next = h;
    p->b[h].prev = id;
    p->b[s].next = id;
    p->n_free++;
}

/* ==== Lifetime ==== */

int kv_pool_init(struct kv_pool *p, int32_t n_blocks, int32_t block_size, bool caching)
{
    memset(p, 0, sizeof *p);
    if (n_blocks < 2 || block_size < 1) return VLM_EINVAL;
    size_t n_tok;
    if (!vlm_mul_ok((size_t)n_blocks, (size_t)block_size, &n_tok)) return VLM_EINVAL;
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->caching = caching;
    p->b = xcalloc((size_t)n_blocks + 1, sizeof *p->b);
    p->tok = caching ? xcalloc(n_tok, sizeof(int32_t)) : NULL;
    uint32_t nb = 16;
    while (nb < (uint32_t)n_blocks * 2u && nb < (1u << 30)) nb <<= 1;
    p->mask = nb - 1;
    p->bucket = xmalloc((size_t)nb * sizeof(int32_t));
    memset(p->bucket, 0xff, (size_t)nb * sizeof(int32_t)); /* all -1 */
    int32_t s = sentinel(p);
    p->b[s].prev = p->b[s].next = s;
    for (int32_t i = 0; i < n_blocks; i++) {
        p->b[i].hash_next = -1;
        p->b[i].prev = p->b[i].next = -1;
    }
    p->b[KV_NULL_BLOCK].ref = 1; /* pinned */
    for (int32_t i = 1; i < n_blocks; i++) list_push_tail(p, i);
    return 0;
}

void kv_pool_destroy(struct kv_pool *p)
{
    if (!p) return;
    free(p->b);
    free(p->tok);
    free(p->bucket);
    memset(p, 0, sizeof *p);
}

/* ==== Hash map ====
 * Chained buckets through kv_block.hash_next; at most one entry per block. */

static void map_remove(struct kv_pool *p, int32_t id)
{
    struct kv_block *x = &p->b[id];
    int32_t *link = &p->bucket[x->hash & p->mask];
    while (*link != id) {
        VLM_ASSERT(*link >= 0);
        link = &p->b[*link].hash_next;
    }
    *link = x->hash_next;
    x->hash_next = -1;
    x->cached = false;
    p->n_cached--;
    p->n_evicted++;
}

static bool key_equal(const struct kv_pool *p, int32_t id, const struct kv_block_key *k)
{
    const struct kv_block *x = &p->b[id];
    if (x->hash != k->hash || x->parent != k->parent || x->parent_gen != k->parent_gen ||
        x->n_mm != k->n_mm)
        return false;
    for (int32_t i = 0; i < k->n_mm; i++)
        if (x->mm[i].hash != k->mm[i].hash || x->mm[i].rel != k->mm[i].rel) return false;
    return memcmp(p->tok + (size_t)id * p->block_size, k->tokens,
                  (size_t)p->block_size * sizeof(int32_t)) == 0;
}

int32_t kv_pool_lookup(const struct kv_pool *p, const struct kv_block_key *k)
{
    if (!p->caching || k->hash == 0) return -1;
    for (int32_t id = p->bucket[k->hash & p->mask]; id >= 0; id = p->b[id].hash_next)
        if (key_equal(p, id, k)) return id;
    return -1;
}

bool kv_pool_cache(struct kv_pool *p, int32_t id, const struct kv_block_key *k)
{
    VLM_ASSERT(id > 0 && id < p->n_blocks && p->b[id].ref > 0);
    if (!p->caching || k->hash == 0 || p->b[id].cached || k->n_mm > KV_MAX_MM_PER_BLOCK)
        return false;
    struct kv_block *x = &p->b[id];
    memcpy(p->tok + (size_t)id * p->block_size, k->tokens,
           (size_t)p->block_size * sizeof(int32_t));
    x->hash = k->hash;
    x->parent = k->parent;
    x->parent_gen = k->parent_gen;
    x->n_mm = k->n_mm;
    if (k->n_mm) memcpy(x->mm, k->mm, (size_t)k->n_mm * sizeof *k->mm);
    if (kv_pool_lookup(p, k) >= 0) return false; /* an identical block is already cached */
    x->cached = true;
    x->hash_next = p->bucket[k->hash & p->mask];
    p->bucket[k->hash & p->mask] = id;
    p->n_cached++;
    return true;
}

/* ==== Allocation ==== */

int kv_pool_alloc(struct kv_pool *p, int32_t n, int32_t *out)
{
    VLM_ASSERT(n >= 0);
    if (n > p->n_free) return VLM_ENOSPC;
    int32_t s = sentinel(p);
    for (int32_t i = 0; i < n; i++) {
        int32_t id = p->b[s].next;
        VLM_ASSERT(id != s && p->b[id].ref == 0);
        list_unlink(p, id);
        if (p->b[id].cached) map_remove(p, id);
        p->b[id].ref = 1;
        p->b[id].gen++;
        out[i] = id;
    }
    return 0;
}

void kv_pool_release(struct kv_pool *p, const int32_t *ids, int32_t n)
{
    for (int32_t i = n - 1; i >= 0; i--) {
        int32_t id = ids[i];
        VLM_ASSERT(id > 0 && id < p->n_blocks);
        struct kv_block *x = &p->b[id];
        VLM_ASSERT(x->ref > 0); /* double free */
        if (--x->ref == 0) {
            if (x->cached) list_push_tail(p, id);
            else list_push_head(p, id);
        }
    }
}

void kv_pool_touch(struct kv_pool *p, int32_t id)
{
    VLM_ASSERT(id > 0 && id < p->n_blocks && p->b[id].cached);
    if (p->b[id].ref++ == 0) list_unlink(p, id);
}

/* ==== Checks ==== */

void kv_pool_check(const struct kv_pool *p)
{
    int32_t s = sentinel(p), n = 0;
    for (int32_t id = p->b[s].next, prev = s; id != s; prev = id, id = p->b[id].next) {
        VLM_ASSERT(id > 0 && id < p->n_blocks);
        VLM_ASSERT(p->b[id].prev == prev);
        VLM_ASSERT(p->b[id].ref == 0);
        VLM_ASSERT(++n <= p->n_blocks);
    }
    VLM_ASSERT(n == p->n_free);
    int32_t n_cached = 0, n_zero = 0;
    for (int32_t id = 1; id < p->n_blocks; id++) {
        const struct kv_block *x = &p->b[id];
        VLM_ASSERT(x->ref >= 0);
        if (x->ref == 0) {
            n_zero++;
            VLM_ASSERT(x->prev >= 0 && x->next >= 0);
        } else {
            VLM_ASSERT(x->prev == -1 && x->next == -1);
        }
        if (x->cached) {
            n_cached++;
            int32_t c = 0;
            for (int32_t j = p->bucket[x->hash & p->mask]; j >= 0; j = p->b[j].hash_next)
                c += j == id;
            VLM_ASSERT(c == 1);
        }
    }
    VLM_ASSERT(n_zero == p->n_free);
    VLM_ASSERT(n_cached == p->n_cached);
    VLM_ASSERT(p->b[KV_NULL_BLOCK].ref == 1 && !p->b[KV_NULL_BLOCK].cached);
}
