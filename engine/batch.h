/*
 * batch: the step contract between the scheduler (writes) and the engine (reads). Data only.
 * Everything in a struct batch is borrowed for exactly one engine_execute() call; the engine
 * never keeps a pointer from it. struct batch_out buffers belong to the engine and are valid
 * until the next engine_execute().
 *
 * The scheduler places everything: KV blocks (batch_seq.blocks) and encoder-cache rows. The
 * encoder cache is an arena of encoder_cache_tokens rows of projector output; the scheduler
 * decides which rows hold which item (scheduler/sched.c), the engine writes an item's rows
 * where batch.encode_row says and reads a span's rows where batch_seq.mm_row says.
 */
#ifndef VLM_BATCH_H
#define VLM_BATCH_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/siglip.h"

#define VLM_MAX_TOP_LOGPROBS 20
#define VLM_MAX_STOP_IDS 16

/* Sampling parameters of one request (OpenAI / vLLM semantics). */
struct sampling_params {
    float temperature;        /* 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* 1: off */
    float min_p;              /* 0: off */
    float repetition_penalty; /* 1: off; applied to prompt and output tokens (HF/vLLM) */
    float presence_penalty;   /* 0: off; output tokens only */
    float frequency_penalty;  /* 0: off; output tokens only */
    uint64_t seed;            /* per-request seed (random if the client gave none) */
    int32_t logprobs;         /* -1: none; 0..VLM_MAX_TOP_LOGPROBS: chosen + this many top */
    int32_t n_bias;           /* logit_bias entries (0: none) */
    const int32_t *bias_ids;  /* (n_bias) ids in [0, vocab); owned by whoever owns sp */
    const float *bias;        /* (n_bias) added to those ids' logits */
};

/* One image or video frame to run through the vision tower. pixels rows are in the order of
 * docs/MODEL.md, "Patchify". Owned by the request; borrowed by the engine during the step.
 * A Valley2 image goes through both of its towers (docs/MODEL.md, "Valley2 images"): sig is its
 * SigLIP side (sig.n_tiles > 0), whose rows come first, then the Qwen2-VL rows; sig is
 * zeroed for Valley2.5. */
struct mm_item {
    uint64_t hash;        /* content hash (pixels + grid, and the SigLIP tiles + geometry when
                             sig.n_tiles > 0), the encoder-cache key */
    const float *pixels;  /* (n_patches, patch_dim) f32, patch_dim = 3*t_patch*p*p */
    int32_t grid_t, grid_h, grid_w;
    int32_t n_patches;    /* grid_t * grid_h * grid_w */
    int32_t n_tokens;     /* encoder rows: sig.n_tokens (when sig.n_tiles > 0) + n_patches / merge² */
    struct siglip_input sig; /* tiles owned like pixels */
};

/* The item's SigLIP rows (0 without a SigLIP side) and its Qwen2-VL rows. */
static inline int32_t mm_item_sig_tokens(const struct mm_item *it)
{
    return it->sig.n_tiles > 0 ? it->sig.n_tokens : 0;
}
static inline int32_t mm_item_vit_tokens(const struct mm_item *it)
{
    return it->n_tokens - mm_item_sig_tokens(it);
}

/* A run of placeholder tokens in a request's prompt that the engine replaces by the rows of
 * an encoded item: prompt positions [offset, offset + item->n_tokens). */
struct mm_span {
    int32_t offset;
    const struct mm_item *item;
};

struct batch_seq {
    int32_t pos;                   /* position of tokens[0] == tokens already computed */
    int32_t n_tokens;              /* new tokens this step: >1 prefill chunk, 1 decode */
    const int32_t *tokens;         /* (n_tokens) */
    const int32_t *blocks;         /* (n_blocks) block table covering [0, pos + n_tokens) */
    int32_t n_blocks;
    const struct mm_span *mm;      /* spans overlapping [pos, pos + n_tokens), (n_mm) */
    const int32_t *mm_row;         /* (n_mm) first encoder-cache row of each span's item */
    int32_t n_mm;
    const struct sampling_params *sp; /* NULL: don't sample (a non-final prefill chunk) */
    const int32_t *prompt;         /* (n_prompt) for the repetition penalty */
    int32_t n_prompt;
    const int32_t *output;         /* (n_out) tokens generated so far (penalties) */
    int32_t n_out;                 /* also seeds this step's random draw */
    bool prompt_lp;                /* return the logprob of prompt[p + 1] for each position p
                                    * of this step with p + 1 < n_prompt (batch_out.plp_*) */
    int32_t prompt_top;            /* with this many top entries (<= VLM_MAX_TOP_LOGPROBS) */
    const uint32_t *mask;          /* structured outputs: the tokens allowed this step, bit
                                    * t%32 of word t/32 (NULL: all); see sampler_apply_mask */
};

struct batch {
    struct batch_seq *seqs;
    int32_t n_seqs;
    const struct mm_item *const *encode; /* items to run through the ViT this step, (n_encode) */
    const int32_t *encode_row;      /* (n_encode) where each goes: encoder-cache rows
                                     * [encode_row[i], encode_row[i] + encode[i]->n_tokens) */
    int32_t n_encode;
    /* Structured outputs: the masks may still be under way on another thread when the step
     * starts. When set, the executor calls masks_ready(masks_arg) once, after the forward
     * pass was started and before it reads any batch_seq.mask (which it fills); the call
     * may block until the masks are computed. NULL: the masks are final already. */
    void (*masks_ready)(void *arg);
    void *masks_arg;
};

/* One entry per sequence with sp != NULL, in batch order. */
struct batch_out {
    int32_t n;
    int32_t *token;    /* (n) sampled ids */
    float *logprob;    /* (n) log-probability of the sampled id (after temperature... see sampler.h) */
    int32_t *top_ids;  /* (n, VLM_MAX_TOP_LOGPROBS) */
    float *top_lp;     /* (n, VLM_MAX_TOP_LOGPROBS) */
    /* prompt logprobs (batch_seq.prompt_lp), in batch order, positions ascending */
    int32_t n_plp;
    int32_t *plp_seq;     /* (n_plp) index of the sequence in the batch */
    int32_t *plp_pos;     /* (n_plp) prompt position t >= 1 of the token scored */
    float *plp_lp;        /* (n_plp) log p(prompt[t] | prompt[0..t)), raw logits */
    int32_t *plp_rank;    /* (n_plp) rank of prompt[t] in that distribution (1: the best) */
    int32_t *plp_top_ids; /* (n_plp, VLM_MAX_TOP_LOGPROBS) */
    float *plp_top_lp;    /* (n_plp, VLM_MAX_TOP_LOGPROBS) */
};

#endif
