/*
 * sched_fake.h: a model-free engine for the scheduler tests, and the reference
 * it must agree with.
 *
 * The fake "KV" of each position is a value derived from what that position holds: the
 * token id for text, or (item hash, row) for an image placeholder, read back from the fake
 * encoder-cache arena at the row the batch names (batch_seq.mm_row), where an encode wrote
 * it (batch.encode_row). The next token is a hash of the whole context read back through
 * the block table. So a wrong block table, a wrong prefix hit, a block overwritten while
 * shared, an image used while not encoded or after its rows were given to another item
 * changes the output, and fake_reference() (the same function computed directly, one
 * request alone) catches it.
 */
#ifndef VLM_SCHED_FAKE_H
#define VLM_SCHED_FAKE_H

#include <stdlib.h>
#include <string.h>

#include "engine/base.h"
#include "engine/batch.h"
#include "scheduler/request.h"

#define FAKE_MAX_SEQS 512

struct fake_engine {
    int32_t n_blocks, bs, vocab;
    uint64_t *kv;                   /* (n_blocks, bs) value written at each slot */
    uint64_t *arena;                /* (enc_rows) the encoder cache: an item row's value */
    int32_t enc_rows;
    int64_t n_encodes, steps;
    int32_t token[FAKE_MAX_SEQS];
    float logprob[FAKE_MAX_SEQS];
};

/* Row j of an encoded item: what its encode writes to the arena. */
static inline uint64_t fake_item_row(const struct mm_item *it, int32_t j)
{
    return vlm_mix64(it->hash ^ vlm_mix64((uint64_t)j));
}

/* The value at position p: spans are the request's (or the chunk's) media spans; with
 * arena, an image row is read from it at mm_row[k] (the engine's view), else computed. */
static inline uint64_t fake_value(int32_t tok, int32_t p, const struct mm_span *mm,
                                  int32_t n_mm, const uint64_t *arena, const int32_t *mm_row)
{
    for (int32_t k = 0; k < n_mm; k++)
        if (p >= mm[k].offset && p < mm[k].offset + mm[k].item->n_tokens)
            return arena ? arena[mm_row[k] + p - mm[k].offset]
                         : fake_item_row(mm[k].item, p - mm[k].offset);
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
    f->arena = xcalloc((size_t)(enc_rows > 0 ? enc_rows : 1), sizeof *f->arena);
}

static inline void fake_destroy(struct fake_engine *f)
{
    free(f->kv);
    free(f->arena);
}

static int fake_execute(void *eng, const struct batch *b, struct batch_out *out)
{
    struct fake_engine *f = eng;
    f->steps++;
    for (int32_t i = 0; i < b->n_encode; i++) { /* where the scheduler placed it */
        int32_t row0 = b->encode_row[i], n = b->encode[i]->n_tokens;
        VLM_ASSERT(row0 >= 0 && row0 + n <= f->enc_rows);
        for (int32_t j = 0; j < n; j++) f->arena[row0 + j] = fake_item_row(b->encode[i], j);
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
            VLM_ASSERT(q->mm_row[k] >= 0 && q->mm_row[k] + sp->item->n_tokens <= f->enc_rows);
        }
        for (int32_t t = 0; t < q->n_tokens; t++) {
            int32_t p = q->pos + t, blk = q->blocks[p / f->bs];
            VLM_ASSERT(blk > 0 && blk < f->n_blocks);
            f->kv[(size_t)blk * f->bs + p % f->bs] =
                fake_value(q->tokens[t], p, q->mm, q->n_mm, f->arena, q->mm_row);
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
        h = vlm_mix64(h ^ fake_value(r->prompt[p], p, r->mm, r->n_mm, NULL, NULL));
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
        h = vlm_mix64(h ^ fake_value(tok, r->n_prompt + n - 1, NULL, 0, NULL, NULL));
    }
}

#endif
