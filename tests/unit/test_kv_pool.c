/*
 * test_kv_pool: the block pool and request block tables: refcounts, LRU order,
 * exact-match prefix hits, eviction on reuse, media-aware hashing, caught double frees.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "scheduler/kv_cache.h"
#include "scheduler/kv_pool.h"
#include "test.h"

static int32_t toks_a[4] = {1, 2, 3, 4}, toks_b[4] = {1, 2, 3, 5};

static struct kv_block_key key(uint64_t h, const int32_t *t, int32_t parent, uint32_t pgen)
{
    return (struct kv_block_key){.hash = h, .parent = parent, .parent_gen = pgen, .tokens = t};
}

/* Runs fn in a child; true if the child died of SIGABRT. */
static bool aborts(void (*fn)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", 1);
        if (fd >= 0) dup2(fd, 2);
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void double_free(void)
{
    struct kv_pool p;
    kv_pool_init(&p, 4, 4, true);
    int32_t id;
    kv_pool_alloc(&p, 1, &id);
    kv_pool_release(&p, &id, 1);
    kv_pool_release(&p, &id, 1);
}

static void free_null_block(void)
{
    struct kv_pool p;
    kv_pool_init(&p, 4, 4, true);
    int32_t id = KV_NULL_BLOCK;
    kv_pool_release(&p, &id, 1);
}

static struct request *mkreq(const int32_t *t, int32_t n)
{
    struct req_params pr = {.max_tokens = 8};
    struct request *r = req_new(1, t, n, &pr);
    r->cap_tokens = n + 8;
    r->tokens = xmalloc((size_t)r->cap_tokens * sizeof(int32_t));
    memcpy(r->tokens, t, (size_t)n * sizeof(int32_t));
    r->n_tokens = n;
    kv_cache_req_init(4, r);
    return r;
}

int main(void)
{
    TEST("init rejects bad sizes, reserves the null block")
    {
        struct kv_pool p;
        CHECK_EQ(kv_pool_init(&p, 1, 4, true), VLM_EINVAL);
        CHECK_EQ(kv_pool_init(&p, 4, 0, true), VLM_EINVAL);
        CHECK_EQ(kv_pool_init(&p, 8, 4, true), 0);
        CHECK_EQ(kv_pool_capacity(&p), 7);
        CHECK_EQ(p.n_free, 7);
        int32_t ids[8];
        CHECK_EQ(kv_pool_alloc(&p, 8, ids), VLM_ENOSPC);
        CHECK_EQ(p.n_free, 7);
        CHECK_EQ(kv_pool_alloc(&p, 7, ids), 0);
        for (int i = 0; i < 7; i++) CHECK(ids[i] != KV_NULL_BLOCK);
        CHECK_EQ(p.n_free, 0);
        kv_pool_check(&p);
        kv_pool_release(&p, ids, 7);
        CHECK_EQ(p.n_free, 7);
        kv_pool_check(&p);
        kv_pool_destroy(&p);
    }

    TEST("refcounts: a touched block is freed only by its last holder")
    {
        struct kv_pool p;
        kv_pool_init(&p, 4, 4, true);
        int32_t id;
        kv_pool_alloc(&p, 1, &id);
        struct kv_block_key k = key(77, toks_a, -1, 0);
        CHECK(kv_pool_cache(&p, id, &k));
        CHECK_EQ(kv_pool_lookup(&p, &k), id);
        kv_pool_touch(&p, id);
        CHECK_EQ(p.b[id].ref, 2);
        kv_pool_release(&p, &id, 1);
        CHECK_EQ(p.n_free, 2);
        kv_pool_release(&p, &id, 1);
        CHECK_EQ(p.n_free, 3);
        /* still cached while free: a hit pulls it out of the free list */
        CHECK_EQ(kv_pool_lookup(&p, &k), id);
        kv_pool_touch(&p, id);
        CHECK_EQ(p.n_free, 2);
        CHECK_EQ(p.b[id].ref, 1);
        kv_pool_check(&p);
        kv_pool_destroy(&p);
    }

    TEST("LRU: uncached blocks are reused first, cached ones in the order they were freed")
    {
        struct kv_pool p;
        kv_pool_init(&p, 6, 4, true);
        int32_t ids[5];
        kv_pool_alloc(&p, 5, ids);
        /* cache ids[0] and ids[1] (freed later), ids[2] (freed first), leave 3 and 4 */
        struct kv_block_key k0 = key(10, toks_a, -1, 0), k1 = key(11, toks_a, ids[0], 1),
                            k2 = key(12, toks_b, -1, 0);
        CHECK(kv_pool_cache(&p, ids[0], &k0));
        CHECK(kv_pool_cache(&p, ids[1], &k1));
        CHECK(kv_pool_cache(&p, ids[2], &k2));
        kv_pool_release(&p, &ids[2], 1);
        kv_pool_release(&p, ids, 2); /* a table: its tail (ids[1]) must be evicted first */
        kv_pool_release(&p, &ids[3], 2);
        int32_t got[5];
        CHECK_EQ(kv_pool_alloc(&p, 5, got), 0);
        /* uncached 3, 4 first (any order), then 2 (freed first), then 1, then 0 */
        CHECK((got[0] == ids[3] && got[1] == ids[4]) || (got[0] == ids[4] && got[1] == ids[3]));
        CHECK_EQ(got[2], ids[2]);
        CHECK_EQ(got[3], ids[1]);
        CHECK_EQ(got[4], ids[0]);
        CHECK_EQ(p.n_cached, 0); /* reuse evicted them all */
        CHECK_EQ(p.n_evicted, 3);
        CHECK_EQ(kv_pool_lookup(&p, &k0), -1);
        kv_pool_check(&p);
        kv_pool_destroy(&p);
    }

    TEST("a hit is confirmed by exact comparison, never by hash alone")
    {
        struct kv_pool p;
        kv_pool_init(&p, 6, 4, true);
        int32_t a, b;
        kv_pool_alloc(&p, 1, &a);
        kv_pool_alloc(&p, 1, &b);
        struct kv_block_key ka = key(5, toks_a, -1, 0);
        CHECK(kv_pool_cache(&p, a, &ka));
        struct kv_block_key same_hash_other_tokens = key(5, toks_b, -1, 0);
        CHECK_EQ(kv_pool_lookup(&p, &same_hash_other_tokens), -1);
        /* a child confirms its parent's identity: (id, generation) */
        struct kv_block_key kb = key(6, toks_b, a, p.b[a].gen);
        CHECK(kv_pool_cache(&p, b, &kb));
        CHECK_EQ(kv_pool_lookup(&p, &kb), b);
        struct kv_block_key kb_stale = key(6, toks_b, a, p.b[a].gen + 1);
        CHECK_EQ(kv_pool_lookup(&p, &kb_stale), -1);
        /* media: same tokens, different image hash or offset → different block */
        struct kv_mm_ref m1 = {.hash = 111, .rel = 0}, m2 = {.hash = 222, .rel = 0},
                         m3 = {.hash = 111, .rel = -1};
        int32_t c;
        kv_pool_alloc(&p, 1, &c);
        struct kv_block_key kc = key(9, toks_a, -1, 0);
        kc.mm = &m1;
        kc.n_mm = 1;
        CHECK(kv_pool_cache(&p, c, &kc));
        CHECK_EQ(kv_pool_lookup(&p, &kc), c);
        kc.mm = &m2;
        CHECK_EQ(kv_pool_lookup(&p, &kc), -1);
        kc.mm = &m3;
        CHECK_EQ(kv_pool_lookup(&p, &kc), -1);
        kc.n_mm = 0;
        CHECK_EQ(kv_pool_lookup(&p, &kc), -1);
        /* an identical block is not cached twice; the duplicate stays private */
        int32_t d;
        kv_pool_alloc(&p, 1, &d);
        CHECK(!kv_pool_cache(&p, d, &ka));
        CHECK(!p.b[d].cached);
        kv_pool_check(&p);
        kv_pool_destroy(&p);
    }

    TEST("reusing a parent block bumps its generation: its old children stop matching")
    {
        struct kv_pool p;
        kv_pool_init(&p, 4, 4, true);
        int32_t a, b, got[2];
        kv_pool_alloc(&p, 1, &a);
        kv_pool_alloc(&p, 1, &b);
        struct kv_block_key ka = key(5, toks_a, -1, 0), kb = key(6, toks_b, a, p.b[a].gen);
        CHECK(kv_pool_cache(&p, a, &ka));
        CHECK(kv_pool_cache(&p, b, &kb));
        uint32_t gen_a = p.b[a].gen;
        kv_pool_release(&p, &a, 1);
        CHECK_EQ(kv_pool_alloc(&p, 2, got), 0); /* every free block, a among them */
        CHECK(got[0] == a || got[1] == a);
        CHECK(p.b[a].gen != gen_a);
        CHECK_EQ(kv_pool_lookup(&p, &ka), -1);
        CHECK_EQ(kv_pool_lookup(&p, &kb), b); /* the stale key still names the old parent */
        struct kv_block_key kb_now = key(6, toks_b, a, p.b[a].gen);
        CHECK_EQ(kv_pool_lookup(&p, &kb_now), -1);
        kv_pool_check(&p);
        kv_pool_destroy(&p);
    }

    TEST("caching off: nothing enters the map")
    {
        struct kv_pool p;
        kv_pool_init(&p, 4, 4, false);
        int32_t a;
        kv_pool_alloc(&p, 1, &a);
        struct kv_block_key ka = key(5, toks_a, -1, 0);
        CHECK(!kv_pool_cache(&p, a, &ka));
        CHECK_EQ(kv_pool_lookup(&p, &ka), -1);
        kv_pool_destroy(&p);
    }

    TEST("double free and freeing the null block abort")
    {
        CHECK(aborts(double_free));
        CHECK(aborts(free_null_block));
    }

    TEST("kv_cache: tables, commit, lookup leaves one token and respects image spans")
    {
        struct kv_pool p;
        kv_pool_init(&p, 16, 4, true);
        int32_t t[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
        struct request *r = mkreq(t, 12);
        int32_t hits[8];
        CHECK_EQ(kv_cache_lookup(&p, r, hits), 0);
        CHECK_EQ(kv_cache_alloc(&p, r, hits, 0, 12), 0);
        CHECK_EQ(r->n_blocks, 3);
        r->n_computed = 12;
        kv_cache_commit(&p, r);
        CHECK_EQ(p.n_cached, 3);

        struct request *q = mkreq(t, 12); /* same prompt: 2 blocks hit, last token recomputed */
        CHECK_EQ(kv_cache_lookup(&p, q, hits), 2);
        CHECK_EQ(hits[0], r->blocks[0]);
        CHECK_EQ(hits[1], r->blocks[1]);
        CHECK_EQ(kv_cache_alloc(&p, q, hits, 2, 12), 0);
        CHECK_EQ(p.b[r->blocks[0]].ref, 2);
        CHECK(q->blocks[2] != r->blocks[2]);

        struct request *u = mkreq(t, 12); /* a request with an image over tokens 6..9 */
        struct mm_item it = {.hash = 42, .n_tokens = 4};
        CHECK_EQ(req_add_item(u, 6, &it, NULL), 0);
        CHECK_EQ(kv_cache_lookup(&p, u, hits), 1); /* block 1 differs (image), block 0 hits */
        int32_t t16[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        struct request *v = mkreq(t16, 16);
        CHECK_EQ(kv_cache_alloc(&p, v, hits, 0, 16), 0);
        v->n_computed = 16;
        struct request *w = mkreq(t16, 16);
        CHECK_EQ(req_add_item(w, 6, &it, NULL), 0); /* image spans 6..9 */
        CHECK_EQ(req_add_item(v, 6, &it, NULL), 0);
        kv_cache_commit(&p, v); /* v's blocks: 0 plain (a duplicate), 1 and 2 with the image */
        CHECK_EQ(kv_cache_lookup(&p, w, hits), 1);
        /* v's block 1 has no cached parent match (v's block 0 was a duplicate of r's) */
        kv_cache_free(&p, r);
        kv_cache_free(&p, q);
        kv_cache_free(&p, v);
        CHECK_EQ(p.n_free, 15);
        kv_pool_check(&p);
        req_release(r);
        req_release(q);
        req_release(u);
        req_release(v);
        req_release(w);
        kv_pool_destroy(&p);
    }

    TEST("kv_cache: a prefix never ends inside an image span")
    {
        struct kv_pool p;
        kv_pool_init(&p, 16, 4, true);
        int32_t t[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        struct mm_item it = {.hash = 42, .n_tokens = 4};
        struct request *r = mkreq(t, 16);
        CHECK_EQ(req_add_item(r, 6, &it, NULL), 0);
        int32_t hits[8];
        CHECK_EQ(kv_cache_alloc(&p, r, hits, 0, 16), 0);
        r->n_computed = 16;
        kv_cache_commit(&p, r);
        CHECK_EQ(p.n_cached, 4);
        /* same image, prompt of 9 tokens: 2 full blocks could hit but end 8 is inside
         * [6, 10) → back off to block 1 (start of the block holding offset 6) */
        struct request *q = mkreq(t, 12);
        q->n_tokens = 9;
        CHECK_EQ(req_add_item(q, 6, &it, NULL), 0);
        CHECK_EQ(kv_cache_lookup(&p, q, hits), 1);
        struct request *q2 = mkreq(t, 12); /* 12 tokens: 2 blocks hit, end 8 inside → 1 */
        CHECK_EQ(req_add_item(q2, 6, &it, NULL), 0);
        CHECK_EQ(kv_cache_lookup(&p, q2, hits), 1);
        struct request *q3 = mkreq(t, 16); /* 16 tokens: 3 blocks hit, end 12 past the image */
        CHECK_EQ(req_add_item(q3, 6, &it, NULL), 0);
        CHECK_EQ(kv_cache_lookup(&p, q3, hits), 3);
        kv_cache_free(&p, r);
        req_release(r);
        req_release(q);
        req_release(q2);
        req_release(q3);
        kv_pool_destroy(&p);
    }
    return test_report();
}
