/*
 * sampler: one logits row -> one token id, as a pure function of
 *   (logits, sampling_params, seed, n_out, prompt ids, output ids).
 * No state survives a call, so a request samples the same token whatever else shares its
 * batch: the random draw comes from a counter-based generator keyed by (sp->seed, n_out).
 *
 * Order of processing (HF generate's warper order; vLLM applies the same penalties):
 *   0. logit_bias: sp->bias[i] added to the logit of sp->bias_ids[i] (vLLM v1 applies it
 *      before the penalties, after taking the raw logprobs);
 *   1. repetition penalty over the distinct ids of prompt + output (HF semantics: a positive
 *      logit is divided by the penalty, a negative one multiplied);
 *   2. presence and frequency penalties over output ids (OpenAI semantics:
 *      logit -= presence * [count > 0] + frequency * count);
 *   3. temperature == 0: greedy, argmax of the penalized logits, lowest id on ties; stop.
 *   4. logits / temperature, then top-k (the k largest; ties at the k-th value broken by the
 *      lower id), top-p (the smallest set of the most likely tokens whose mass reaches
 *      top_p, renormalized), min-p (drop tokens whose probability is below
 *      min_p * the largest probability);
 *   5. one uniform draw u in [0,1) from splitmix64(seed, n_out), inverse CDF over the kept
 *      tokens in index order: the first id whose running sum (in double, ascending ids)
 *      exceeds u times the kept mass.
 * Ids outside [0, vocab) in prompt/output (image sentinels) are ignored by the penalties.
 *
 * Logprobs (the choice of vLLM v1's default "raw_logprobs"): log-softmax of the RAW logits
 * row as the model produced it, before penalties, temperature and truncation. They describe
 * the model, not the sampling recipe, and sum to one over the vocabulary. top-N lists the N
 * most likely tokens of that same distribution, most likely first, lower id first on ties.
 * They are computed only when asked for (sp->logprobs >= 0; logprob is 0 otherwise): the
 * softmax over a 151 936-entry vocabulary costs more than greedy sampling itself.
 *
 * Device sampling: a backend with the sample_summary op reduces each row on the device to a
 * struct sample_summary (kernels/sample.h); sampler_sample_summary finishes from it and gives
 * what sampler_sample gives on the row (bit for bit from the CPU op's summary; from the
 * CUDA op's, up to its sums' rounding: a draw on a boundary may take the neighbour), or
 * says it needs the row (penalties, or a truncation whose cut reaches below the
 * SAMPLE_SUMMARY_K candidates).
 *
 * Callers: engine.c (one call per sampled row), tests. Thread safety: a struct sampler_ws
 * belongs to one thread at a time; sampler_sample is otherwise reentrant.
 */
#ifndef VLM_SAMPLER_H
#define VLM_SAMPLER_H

#include "engine/base.h"
#include "engine/batch.h"
#include "kernels/sample.h"

/* Scratch for one vocabulary size; allocated once (never on the step path). */
struct sampler_ws {
    int32_t vocab;
    float *work;     /* (vocab) penalized / scaled logits, owned */
    float *prob;     /* (vocab) candidate probabilities, owned */
    int32_t *cand;   /* (vocab) candidate ids, owned */
    int32_t *count;  /* (vocab) occurrence counts, zero between calls, owned */
};

struct sampler_result {
    int32_t token;
    float logprob;                          /* of token, see the header comment */
    int32_t n_top;                          /* entries filled below (= sp->logprobs or 0) */
    int32_t top_ids[VLM_MAX_TOP_LOGPROBS];
    float top_lp[VLM_MAX_TOP_LOGPROBS];
};

void sampler_ws_init(struct sampler_ws *w, int32_t vocab);
void sampler_ws_destroy(struct sampler_ws *w); /* accepts a zeroed struct */

/* Samples one token from logits (vocab = w->vocab) and fills *r. prompt/output may be NULL
 * when their count is 0. Returns the token. */
int32_t sampler_sample(struct sampler_ws *w, const float *logits, const struct sampling_params *sp,
                       const int32_t *prompt, int32_t n_prompt, const int32_t *output,
                       int32_t n_out, struct sampler_result *r);

/* Samples one token from a row's device summary p (vocab = the row's length), as
 * sampler_sample would on the row itself with the same sp and n_out; p must come from
 * sample_summary with inv_t = 1.0f / sp->temperature (or 0 when greedy) and
 * u = sampler_uniform(sp->seed, n_out). n_prompt, n_out: the counts sampler_sample would get
 * (penalties only matter when there are ids to penalize). Returns the token and fills *r, or
 * -1 when the result needs the full row (active penalties; top-k above SAMPLE_SUMMARY_K; a
 * top-k/top-p/min-p cut that a token outside the candidates could tie or join): then call
 * sampler_sample on the row. */
int32_t sampler_sample_summary(const struct sample_summary *p, int32_t vocab,
                               const struct sampling_params *sp, int32_t n_prompt, int32_t n_out,
                               struct sampler_result *r);

/* The logprob of token in a raw logits row and its n_top most likely tokens (the same
 * convention as the sampled token's), into r (r->token = token). Prompt logprobs. */
void sampler_logprobs(const float *logits, int32_t vocab, int32_t token, int32_t n_top,
                      struct sampler_result *r);

/* The uniform [0,1) draw used for step n_out of a request seeded with seed (exposed for
 * tests). */
double sampler_uniform(uint64_t seed, uint64_t n_out);

/* Structured outputs: sets every logit whose bit in mask (bit t%32 of word t/32) is clear to
 * -inf, before sampler_sample. Everything after sees the masked row: penalties, temperature,
 * truncation, the draw, and the logprobs (the log-softmax of the masked row; tokens outside
 * the mask get -inf, which the engine reports as -9999 as vLLM does). */
void sampler_apply_mask(float *row, const uint32_t *mask, int32_t vocab);

/* Greedy defaults: temperature 0, no truncation, no penalties, no logprobs. */
struct sampling_params sampler_params_greedy(void);

#endif
