/*
 * sched_fake.h: a model-free engine for the scheduler tests, and the reference
 * it must agree with.
 *
 * The fake "KV" of each position is a value derived from what that position holds: the
 * token id for text, or (item hash, row) for an image placeholder, whose item must be
 * resident in the fake encoder cache. The next token is a hash of the whole context read
 * back through the block table. So a wrong block table, a wrong prefix hit, a block
 * overwritten while shared, or an image used while not encoded changes the output, and
 * fake_reference() (the same function computed directly, one request alone) catches it.
 */
#ifndef VLM_SCHED_FAKE_H
#define VLM_SCHED_FAKE_H

#include <stdlib.h>
#include <string.h>

#include "engine/base.h"
#include "engine/batch.h"
#include "scheduler/request.h"

#define FAKE_MAX_RES 1024
#define FAKE_MAX_SEQS 512

struct fake_engine {
    int32_t n_blocks, bs, vocab;
    uint64_t *kv;                   /* (n_blocks, bs) value written at each slot */
    uint64_t res[FAKE_MAX_RES];     /* resident encoder items */
    int32_t res_row0[FAKE_MAX_RES], res_n[FAKE_MAX_RES];
    int32_t n_res;
    int32_t enc_rows;               /* > 0: model the engine's arena (first fit) of this
                                     * many rows and fail like it when an item has no room */
    int64_t n_encodes, n_evicts, steps;
    bool lenient_evict;             /* set once a step was failed on purpose */
    int32_t token[FAKE_MAX_SEQS];
    float logprob[FAKE_MAX_SEQS];
};

/* The value at position p: spans are the request's (or the chunk's) media spans. */
static inline uint64_t fake_value(int32_t tok, int32_t p, const struct mm_span *mm, int32_t n_mm)
{
    for (int32_t k = 0; k < n_mm; k++)
        if (p >= mm[k].offset && p < mm[k].offset + mm[k].item->n_tokens)
            return vlm_mix64(mm[k].item->hash ^ vlm_mix64((uint64_t)(p - mm[k].offset)));
    return vlm_mix64(((uint64_t)(uint32_t)tok << 32) ^ (uint64_t)p);
}

static inline int32_t fake_token(uint64_t h, int32_t vocab) { return (int32_t)(h % (uint64_t)vocab); }

static inline void fake_init(struct fake_engine *f, int32_t n_blocks, int32_t bs, int32_t vocab,
                             int32_t enc_rows)
{
    memset(f, 0, sizeof *f);
    f->enc_rows = enc_rows;
    f->n_blocks = n_blocks;
    f->bs = bs;
    f->vocab = vocab;
    f->kv = xcalloc((size_t)n_blocks * bs, sizeof *f->kv);
}

static inline void fake_destroy(struct fake_engine *f) { free(f->kv); }

static inline int fake_res_find(const struct fake_engine *f, uint64_t h)
{
    for (int i = 0; i < f->n_res; i++)
        if (f->res[i] == h) return i;
    return -1;
}

static int fake_execute(void *eng, const struct batch *b, struct batch_out *out)
{
    struct fake_engine *f = eng;
    f->steps++;
    for (int32_t i = 0; i < b->n_evict; i++) {
        int k = fake_res_find(f, b->evict[i]);
        if (k < 0 && f->lenient_evict) continue; /* after a failed step, as engine.c */
        VLM_ASSERT(k >= 0); /* evicting something not resident */
        f->n_res--;
        f->res[k] = f->res[f->n_res];
        f->res_row0[k] = f->res_row0[f->n_res];
        f->res_n[k] = f->res_n[f->n_res];
        f->n_evicts++;
    }
    for (int32_t i = 0; i < b->n_encode; i++) {
        VLM_ASSERT(fake_res_find(f, b->encode[i]->hash) < 0); /* once per residency */
        VLM_ASSERT(f->n_res < FAKE_MAX_RES);
        int32_t n = b->encode[i]->n_tokens, row0 = -1;
        if (f->enc_rows > 0) {
            /* first fit over the occupied ranges, as engine.c places items */
            int32_t max_items = f->enc_rows < 4096 ? f->enc_rows : 4096;
            if (f->n_res == max_items) return VLM_ENOSPC;
            for (int32_t start = 0; start + n <= f->enc_rows && row0 < 0;) {
                int32_t next = -1;
                for (int32_t j = 0; j < f->n_res; j++)
                    if (f->res_row0[j] < start + n && f->res_row0[j] + f->res_n[j] > start)
                        next = next < f->res_row0[j] + f->res_n[j] ? f->res_row0[j] + f->res_n[j] : next;
                if (next < 0) row0 = start;
                else start = next;
            }
            if (row0 < 0) return VLM_ENOSPC;
        }
        f->res_row0[f->n_res] = row0;
        f->res_n[f->n_res] = n;
        f->res[f->n_res++] = b->encode[i]->hash;
        f->n_encodes++;
    }
    int32_t n_out = 0;
    for (int32_t i = 0; i < b->n_seqs; i++) {
        const struct batch_seq *q = &b->seqs[i];
        VLM_ASSERT(q->n_tokens > 0 && q->n_blocks * f->bs >= q->pos + q->n_tokens);
        for (int32_t k = 0; k < q->n_mm; k++) {
            const struct mm_span *sp = &q->mm[k];
            VLM_ASSERT(sp->offset < q->pos + q->n_tokens &&
                       sp->offset + sp->item->n_tokens > q->pos);
            VLM_ASSERT(fake_res_find(f, sp->item->hash) >= 0); /* used while not encoded */
        }
        for (int32_t t = 0; t < q->n_tokens; t++) {
            int32_t p = q->pos + t, blk = q->blocks[p / f->bs];
            VLM_ASSERT(blk > 0 && blk < f->n_blocks);
            f->kv[(size_t)blk * f->bs + p % f->bs] = fake_value(q->tokens[t], p, q->mm, q->n_mm);
        }
        if (!q->sp) continue;
        uint64_t h = 0;
        for (int32_t p = 0; p < q->pos + q->n_tokens; p++)
            h = vlm_mix64(h ^ f->kv[(size_t)q->blocks[p / f->bs] * f->bs + p % f->bs]);
        f->token[n_out] = fake_token(h, f->vocab);
        f->logprob[n_out] = -(float)(h % 1000) / 1000.0f;
        n_out++;
    }
    *out = (struct batch_out){.n = n_out, .token = f->token, .logprob = f->logprob};
    return 0;
}

/* What r produces alone: its outputs into out (room for cap - n_prompt), count returned,
 * finish state in *state. cap is r's token limit (prompt + outputs). */
static int32_t fake_reference(const struct request *r, int32_t cap, int32_t vocab, int32_t *out,
                              int *state)
{
    uint64_t h = 0;
    for (int32_t p = 0; p < r->n_prompt; p++)
        h = vlm_mix64(h ^ fake_value(r->prompt[p], p, r->mm, r->n_mm));
    int32_t n = 0;
    for (;;) {
        int32_t tok = fake_token(h, vocab);
        out[n++] = tok;
        bool stop = false;
        if (!r->params.ignore_eos)
            for (int32_t i = 0; i < r->params.n_eos; i++) stop |= tok == r->params.eos_ids[i];
        for (int32_t i = 0; i < r->params.n_stop; i++) stop |= tok == r->params.stop_ids[i];
        if (stop) {
            *state = REQ_FINISHED_STOP;
            return n;
        }
        if (r->n_prompt + n >= cap) {
            *state = REQ_FINISHED_LENGTH;
            return n;
        }
        h = vlm_mix64(h ^ fake_value(tok, r->n_prompt + n - 1, NULL, 0));
    }
}

#endif
