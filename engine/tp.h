/*
 * tp: a tensor-parallel group, an executor (executor.h) like one engine. N ranks, each with
 * its own backend, its own engine shard (engine.c loads only the rank's slice of each
 * weight; qwen3.c adds the collectives) and, for ranks 1..N-1, its own thread. The group's
 * execute / forward_rows run the step on every rank (they all execute the same batch with
 * their shard, SPMD, through engine_execute / engine_forward_rows) and return when all are
 * done, so the scheduler is unchanged: it schedules once, block ids and encoder-cache rows
 * mean the same on every rank, and only rank 0 samples.
 *
 * Sharding (Megatron-style, docs/TP.md): q/k/v and gate/up split by output rows (heads and
 * ffn rows per rank), o_proj and down_proj by input columns followed by an all-reduce sum;
 * each rank's KV cache holds only its KV heads; embed_tokens and lm_head split by vocabulary
 * (lookup of the rank's own range then all-reduce; logits all-gathered); the vision tower
 * data-parallel with replicated weights (items round-robin over ranks, each item's projector
 * rows broadcast from its owner).
 *
 * Communicators: comm_local (ranks are threads sharing host memory) with the CPU backend,
 * NCCL with the CUDA backend. Thread-safety: tp_group_create/destroy from one thread; the
 * executor is then driven from one thread, like an engine.
 */
#ifndef VLM_TP_H
#define VLM_TP_H

#include "engine/comm.h"
#include "engine/engine.h"
#include "engine/executor.h"

struct tp_group;

/* The start-up check: tp_size must be >= 1, divide num_key_value_heads (hence
 * num_attention_heads) and intermediate_size; with the CUDA backend it must not exceed the
 * visible devices (devices: the count, or -1 to ask cudaGetDeviceCount). The vocabulary is
 * padded, never refused. Returns 0 or VLM_EINVAL with a message naming the sizes. */
int tp_check(const struct model_config *c, int tp_size, int backend, int devices,
             struct vlm_err *err);

/* Creates p->tp_size engines over m (rank r on device p->bp.device + r with CUDA; with the
 * CPU backend each rank gets max(1, p->bp.n_threads / tp_size) worker threads), their
 * communicators, and the worker threads. tp_size 1 is allowed (a group of one, collectives
 * included). Returns 0, or the tp_check / engine_init error (message in *err) with nothing
 * left allocated. */
int tp_group_create(struct tp_group **out, const struct model *m, const struct engine_params *p,
                    struct vlm_err *err);

/* The step interface over the whole group (valid until tp_group_destroy). */
struct executor tp_group_executor(struct tp_group *g);

/* Stops the worker threads, destroys every engine and communicator. Accepts NULL. */
void tp_group_destroy(struct tp_group *g);

#endif
