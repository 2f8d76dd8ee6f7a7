/*
 * constrain: masks and matcher advances for structured outputs (see constrain.h).
 */
#include "scheduler/constrain.h"

#include <stdlib.h>
#include <string.h>

static bool is_eos(const struct request *r, int32_t tok)
{
    const struct req_params *p = &r->params;
    for (int32_t i = 0; i < p->n_eos; i++)
        if (tok == p->eos_ids[i]) return true;
    for (int32_t i = 0; i < p->n_stop; i++)
        if (tok == p->stop_ids[i]) return true;
    return false;
}

static void set_bit(uint32_t *m, int32_t V, int32_t t)
{
    if (t >= 0 && t < V) m[t >> 5] |= 1u << (t & 31);
}

const uint32_t *constrain_mask(struct request *r)
{
    if (!r->grammar) return NULL;
    if (!r->gm) {
        if (r->grammar_after < 0) r->gm_on = true;
        r->gm = gm_new(r->grammar);
        r->mask = trymalloc((size_t)gv_mask_words(r->vocab) * sizeof *r->mask);
        if (!r->gm || !r->mask) return NULL;
    }
    if (!r->gm_on || !r->mask) return NULL;
    int32_t V = gv_size(r->vocab);
    int32_t n = gm_fill_mask(r->gm, r->vocab, r->mask);
    if (n < 0) return NULL;
    if (n == 0 || gm_can_end(r->gm)) {
        const struct req_params *p = &r->params;
        for (int32_t i = 0; i < p->n_eos; i++) set_bit(r->mask, V, p->eos_ids[i]);
        for (int32_t i = 0; i < p->n_stop; i++) set_bit(r->mask, V, p->stop_ids[i]);
    }
    return r->mask;
}

int constrain_advance(struct request *r, int32_t tok)
{
    if (!r->grammar) return 0;
    if (!r->gm || !r->mask) return REQ_FINISHED_ERROR;
    if (!r->gm_on) {
        if (tok == r->grammar_after) r->gm_on = true;
        return 0;
    }
    if (is_eos(r, tok)) return 0; /* the usual stop handling applies */
    if (!gm_accept_token(r->gm, r->vocab, tok)) return REQ_FINISHED_ERROR;
    return gm_done(r->gm) ? REQ_FINISHED_STOP : 0;
}
