/*
 * sample.h: the per-row summary of a logits row that device sampling downloads instead of
 * the row itself (backend op sample_summary; kernels/cpu/sample.c is the reference,
 * kernels/cuda/sample.cu the device version, engine/sampler.c finishes the sampling on the
 * host from it). Plain C, shared by the C and CUDA sides: the layout is the contract.
 *
 * For a raw f32 row l (vocab entries) and, per row, inv_t = 1.0f / temperature (0: greedy,
 * no draw) and a uniform u in [0, 1):
 *   max, argmax   the largest l, lowest id on ties (the greedy token);
 *   lse           max + log(sum_i exp((double)l_i - max)), the log-softmax denominator of
 *                 the raw row (sampler.h's logprob convention);
 *   top_ids/top_v the SAMPLE_SUMMARY_K best entries in rank order (value desc, id asc);
 *   next_v        the value of the next entry in that order (rank SAMPLE_SUMMARY_K + 1): every
 *                 token outside top_ids has l <= next_v; -inf when there is none;
 *   with inv_t > 0, the float ops of sampler.c: w_i = l_i * inv_t, mx = max_i w_i,
 *   p_i = expf(w_i - mx);
 *   total         sum_i p_i in double (index order on the CPU);
 *   n_alive       the count of p_i > 0;
 *   token         the first id, in index order, whose running sum of p exceeds u * total
 *                 (the untruncated inverse-CDF draw), and token_logit its raw l.
 * inv_t < 0 asks for the greedy token alone (a greedy row without logprobs, all the host
 * sampler reads then): argmax and max = l[argmax] are filled, every other field is zero
 * except token = -1 and next_v = -inf (n_top 0). A backend may fill the rest anyway.
 */
#ifndef VLM_KERNELS_SAMPLE_H
#define VLM_KERNELS_SAMPLE_H

#include <stdint.h>

/* Candidates kept per row; must cover the largest logprobs top-N (sampler.c checks) and
 * bounds the top-k the host can finish without the full row. */
#define SAMPLE_SUMMARY_K 64

struct sample_summary {
    double lse;                       /* log-sum-exp of the raw row */
    double total;                     /* sum of p_i (inv_t > 0), else 0 */
    float max;                        /* largest raw logit */
    int32_t argmax;                   /* its id, lowest on ties */
    int32_t token;                    /* full-vocabulary draw (inv_t > 0), else -1 */
    float token_logit;                /* raw logit of token (0 when token is -1) */
    int32_t n_alive;                  /* ids with p_i > 0 (inv_t > 0), else 0 */
    int32_t n_top;                    /* entries below: min(SAMPLE_SUMMARY_K, vocab) */
    float next_v;                     /* bound on every logit outside top_ids */
    int32_t pad;                      /* 0; the size stays a multiple of 8 on both sides */
    int32_t top_ids[SAMPLE_SUMMARY_K];   /* rank order: value desc, id asc */
    float top_v[SAMPLE_SUMMARY_K];       /* raw logits of top_ids */
};

#endif
