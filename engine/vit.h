/*
 * vit: the Qwen2-VL vision tower and Valley2.5's projector (docs/MODEL.md, "Vision tower",
 * "Projector"), written once over the backend table. Valley2's Qwen2-VL branch is the same
 * code: its original PatchMerger has the projector's form (LN_q, fc1, exact GELU, fc2) with a
 * hidden width of merge²·dim (docs/MODEL.md, "Valley2 checkpoint layout"). Pixel rows of one or more images
 * ("Patchify" order) go in; projector rows, one per 2×2 merge window, come out, ready to be
 * spliced into the decoder input.
 *
 * Called by the engine thread only (it owns the backend's stream). vit_init sizes every
 * buffer for max_patches rows, so vit_encode never allocates.
 *
 * Forward, for P patch rows of n items concatenated in item order:
 *   x = pixels · W_peᵀ                                     (P, dim)   patch embedding
 *   depth × { x += proj(attn_varlen(rope(q), rope(k), v)) with q|k|v = LN1(x)·W_qkvᵀ + b
 *             x += fc2(act(fc1(LN2(x)))) }                  act = quick_gelu or gelu_erf
 *   y = LN_q(x) viewed as (P/m², m²·dim); out = fc2(gelu_erf(fc1(y)))   (P/m², hidden)
 * Attention is restricted to each item's own rows (one segment per temporal slice); the 2-D
 * rotary positions restart at 0 for each item.
 */
#ifndef VLM_VIT_H
#define VLM_VIT_H

#include "engine/backend.h"
#include "engine/batch.h"
#include "engine/model.h"

struct vit;

/* Uploads the vision weights of m with ops->load_weight and allocates all scratch for
 * max_patches rows (summed over the items of one call). b and m are borrowed and must
 * outlive the vit. Returns 0, VLM_EINVAL if m has no vision tower or max_patches is not a
 * positive multiple of merge², or VLM_ENOMEM if backend memory runs out (message in *err). */
int vit_init(struct vit **out, struct backend *b, const struct model *m, int32_t max_patches,
             struct vlm_err *err);

/* Runs tower + projector over items[0..n) in one call. out (Σ mm_item_vit_tokens, hidden) in
 * backend memory, act dtype; item k's rows follow item k-1's (a Valley2 item's SigLIP side is
 * not read here). items are borrowed for the call.
 * Returns 0, VLM_ETOOBIG if Σ n_patches > max_patches, or VLM_EINVAL if an item's grid is
 * inconsistent (n_patches != t·h·w, h or w not a multiple of the merge size, n_tokens wrong)
 * or out has the wrong shape. Nothing is written to out on error. */
int vit_encode(struct vit *v, const struct mm_item *const *items, int32_t n, struct tensor *out);

/* Most patch rows one vit_encode call accepts. */
int32_t vit_max_patches(const struct vit *v);

/* Frees backend buffers and host metadata; accepts NULL. */
void vit_destroy(struct vit *v);

#endif
