/*
 * engine: owns every byte of backend memory for one model replica (or one tensor-parallel
 * rank): the backend, the backend-resident weights, the paged KV cache, the encoder cache
 * (an arena of vision rows placed by the scheduler), the activation workspace, the logits
 * and batch_out buffers. Everything is sized in engine_init from the config maxima, so
 * engine_execute never allocates.
 *
 * Decode steps (one new token per sequence, logits for each, no image rows, no TP) run as
 * backend graphs when the backend has them (CUDA graphs): the batch is padded to a bucket of
 * sequences with dummy sequences (token 0 at position 0, KV slot 0 of the null block), and the
 * block tables to a bucket of columns, so one graph per (sequence bucket, column bucket)
 * replays every such step; see graph_pad() in engine.c.
 *
 * One step (engine_execute) = encode b->encode with the vision tower into the encoder-cache
 * rows the scheduler chose (batch.h), run the Qwen3 decoder (qwen3.c) over all sequences of
 * the ragged batch (splicing cached image rows at their mm spans), sample the last row of
 * every sequence that has sampling params.
 *
 * KV layout, per layer, K and V each (n_blocks, block_size, n_kv_heads, head_dim):
 *
 *     block 0 (null, never handed out) | block 1 | block 2 | ...   token slot =
 *     [t0 t1 .. t15]                     [....]    [....]          block*block_size + offset
 *
 * A sequence's block table (from the scheduler) maps position p to block blocks[p / bs].
 *
 * Callers: through engine_executor (executor.h) the scheduler's engine thread and
 * valley-generate; tp.c, one engine per rank; tests, bench. Not thread-safe: one thread
 * drives one engine.
 */
#ifndef VLM_ENGINE_H
#define VLM_ENGINE_H

#include "engine/backend.h"
#include "engine/batch.h"
#include "engine/executor.h"
#include "engine/model.h"
#include "engine/sampler.h"

enum engine_backend { ENGINE_BACKEND_CPU, ENGINE_BACKEND_CUDA };

struct engine_params {
    struct backend_params bp;
    int backend;                  /* enum engine_backend */
    int32_t block_size;           /* tokens per KV block (0: 16) */
    int32_t n_blocks;             /* KV blocks incl. the null block; 0: from kv_bytes */
    int32_t max_batched_tokens;   /* tokens per step, summed over sequences */
    int32_t max_seqs;             /* sequences per step */
    size_t kv_bytes;              /* KV budget when n_blocks == 0 (0: 64 MiB, or see below) */
    double gpu_memory_utilization;/* > 0 with n_blocks == 0 and kv_bytes == 0, on a backend that
                                     reports device memory: the KV pool takes what is left of
                                     this fraction of the device after weights, workspace and
                                     encoder cache (sized last, at init) */
    int tp_rank, tp_size;         /* tensor parallel rank and size (0, 1: one engine; see tp.h) */
    struct comm *comm;            /* borrowed; NULL without TP; set by tp_group_create */
    int32_t encoder_cache_tokens; /* rows of vision embeddings kept (0: no vision) */
    int32_t max_image_patches;    /* patches per vit_encode call (0: 4 * cache tokens) */
    int32_t max_siglip_tiles;     /* Valley2: SigLIP tiles of one image (0: 10, a base tile and
                                     3 x 3 crops, what the default grid pinpoints allow) */
    int32_t max_logit_rows;       /* rows engine_forward_rows may return (at least max_seqs) */
    bool enforce_eager;           /* never replay decode steps as backend graphs */
    struct backend_emulation emulate; /* tests: device features for the CPU backend
                                         (backend_emulate), so device paths run in CI */
    int sample_on_device;         /* engine_execute samples from per-row summaries made on the
                                   * backend (backend_sampling_ops) instead of downloading the
                                   * rows: 0 auto (on for device backends, those with mem_info),
                                   * 1 on, -1 off. Never with TP (rows are gathered on rank 0). */
};

struct vit;
struct siglip;
struct comm;

struct engine {
    struct backend be;                /* owned */
    const struct model *m;            /* borrowed; outlives the engine */
    struct model_config cfg;          /* copy of m->cfg */
    struct engine_params p;           /* with defaults filled in */
    int32_t n_heads, n_kv_heads;      /* local to this rank */
    int32_t ffn;                      /* intermediate rows local to this rank */
    int32_t vocab_local, vocab0;      /* this rank's vocab rows [vocab0, vocab0 + vocab_local);
                                       * vocab_local is the padded share ceil(vocab / tp) */
    struct comm *comm;                /* borrowed (p.comm); NULL: no collectives */

    /* weights in backend memory (owned; lm_head aliases embed when tied) */
    struct tensor embed;              /* (vocab, hidden); TP: (vocab_local + 1, hidden), this
                                       * rank's rows, padding and a last all-zero row */
    struct tensor final_norm;         /* (hidden) */
    struct tensor lm_head;            /* (vocab, hidden); TP: (vocab_local, hidden) */
    struct layer_weights *layers;     /* (n_layers), owned array of owned tensors */

    /* paged KV cache */
    struct kv_layer *kv;              /* (n_layers), K/V memory owned */
    int32_t n_blocks, block_size;
    int32_t max_blocks_per_seq;       /* block-table row capacity */

    /* activations, backend memory, act dtype; T = max_batched_tokens, R = max_logit_rows */
    void *x;                          /* (T, hidden) residual stream */
    void *xn;                         /* (T, hidden) normed input / projection output */
    void *q, *att;                    /* (T, n_heads, head_dim) */
    void *k, *v;                      /* (T, n_kv_heads, head_dim) */
    void *gate, *up;                  /* (T, ffn) */
    void *xs;                         /* (R, hidden) rows that need logits */
    void *logits;                     /* (R, vocab_local) f32 */
    void *logits_all;                 /* TP: (tp, R, vocab_local) f32, all-gathered; else NULL */
    void *tp_flag;                    /* TP: (1) act dtype, step-wide error flag */

    /* host step metadata (struct step_meta points here) */
    int32_t *h_tokens, *h_pos, *h_slot;   /* (T) */
    int32_t *h_q_start;                   /* (max_seqs + 1) */
    int32_t *h_ctx_len;                   /* (max_seqs) */
    int32_t *h_block_tables;              /* (max_seqs, max_blocks_per_seq) */
    int32_t *h_rows;                      /* (R) rows to produce logits for */
    int32_t *h_rows_id;                   /* (max_seqs) 0, 1, 2, ...: a graph step's rows */
    bool graphs;                          /* decode steps may run as backend graphs */
    int64_t n_graph_steps;                /* steps run through the backend graphs */
    int32_t *h_splice_idx;                /* (T) destination rows of image rows */
    struct qwen3_splice *splices;         /* (T) */
    float *h_logits;                      /* (R, vocab) */
    float *h_gather;                      /* TP rank 0: (tp, R, vocab_local) */

    /* sampling and its outputs (batch_out points here) */
    struct sampler_ws sws;
    bool dev_sampling;                    /* device sampling (p.sample_on_device resolved) */
    void *d_summary;                      /* (R) struct sample_summary, backend memory */
    struct sample_summary *h_summary;     /* (R) its host copy */
    float *h_inv_t;                       /* (R) 1 / temperature per sampled row, 0: greedy */
    double *h_u;                          /* (R) the row's uniform draw */
    uint32_t *h_mask;                     /* (R, (vocab + 31) / 32) the step's token masks for
                                           * the backend's mask_logits; NULL: no such op */
    bool dev_masked;                      /* this step's masks were applied on the backend */
    int32_t *out_token;                   /* (max_seqs) */
    float *out_logprob;                   /* (max_seqs) */
    int32_t *out_top_ids;                 /* (max_seqs, VLM_MAX_TOP_LOGPROBS) */
    float *out_top_lp;                    /* (max_seqs, VLM_MAX_TOP_LOGPROBS) */
    int32_t *plp_seq, *plp_row, *plp_pos, *plp_rank; /* (T) each */
    int32_t *plp_top_ids;                 /* (T, VLM_MAX_TOP_LOGPROBS) */
    float *plp_lp, *plp_top_lp;           /* (T), (T, VLM_MAX_TOP_LOGPROBS): prompt logprobs */

    /* encoder cache: rows placed by the scheduler (batch.h) */
    struct vit *vit;                      /* owned; NULL without vision */
    struct siglip *sig;                   /* owned; Valley2's SigLIP tower, NULL otherwise */
    void *enc_arena;                      /* (encoder_cache_tokens, hidden) act dtype */
};

/* Uploads m's weights, sizes the KV cache, encoder cache and workspace. m must outlive the
 * engine. Returns 0, VLM_EINVAL (inconsistent config/params, message in *err), VLM_ENOMEM
 * (backend memory), VLM_EUNSUPPORTED (backend or tp_size not available). On failure
 * everything allocated is released and *e is zeroed. */
int engine_init(struct engine *e, const struct model *m, const struct engine_params *p,
                struct vlm_err *err);
void engine_destroy(struct engine *e); /* accepts a zeroed struct */

/* Usable KV blocks including the null block 0 (the scheduler's pool size). */
int32_t engine_kv_blocks(const struct engine *e);
int32_t engine_block_size(const struct engine *e);

/* One step: encode, decoder forward, sample. out's arrays point into the engine and stay
 * valid until the next call. Returns 0 or a negative VLM_E* code (an item the vision tower
 * refuses).
 * Tensor parallel (e->comm set, tp.c): every rank of a group calls this with the same batch
 * at once (the collectives inside pair up); only rank 0 samples and fills out, the other
 * ranks may pass NULL. */
int engine_execute(struct engine *e, const struct batch *b, struct batch_out *out);

/* Lower level, for tests and the CLI. Runs the decoder over b (b->encode is followed too)
 * and writes f32 logits to logits (host, (n_rows, vocab)) for the token rows rows[]:
 * indices into the concatenation of all sequences' new tokens, at most max_logit_rows.
 * With TP as above: only rank 0 writes logits (the others may pass NULL). */
int engine_forward_rows(struct engine *e, const struct batch *b, const int32_t *rows,
                        int32_t n_rows, float *logits);

/* The step interface over this engine alone (executor.h); not for a TP rank. */
struct executor engine_executor(struct engine *e);

#endif
