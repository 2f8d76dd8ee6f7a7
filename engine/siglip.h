/*
 * siglip: Valley2's SigLIP tower, its projector (conv_adapter or ovis_conv_adapter) and the
 * AnyRes assembly of one image's tiles (docs/MODEL.md, "Valley2", "Valley2 SigLIP forward",
 * "Valley2 projectors"), written once over the backend table.
 *
 * Called by the engine thread only (it owns the backend's stream). siglip_init sizes every
 * buffer for max_tiles tiles, so siglip_encode never allocates.
 *
 * Forward, per tile of S×S pixels (patch P, G = S/P patches a side, E the tower width):
 *   x = patches · W_peᵀ + b + pos                       (G², E)
 *   layers × { x += o_proj(attn(LN1(x)·W_{q,k,v}ᵀ + b)) ; x += fc2(gelu_tanh(fc1(LN2(x)))) }
 *   x = post_LN(x); the projector then maps the G×G map to T×T rows of the decoder width
 *   (T = (G - 1)/2 + 1, 14 for so400m).
 * Output: the base tile's T² rows, then the crops' maps stitched into one (grid_h·T)×(grid_w·T)
 * map, the kept window cut out and, when pooled, adaptive-average-pooled, row by row.
 */
#ifndef VLM_SIGLIP_H
#define VLM_SIGLIP_H

#include "engine/backend.h"
#include "engine/model.h"

/* One Valley2 image's SigLIP side, as the server's valley2_prep built it. */
struct siglip_input {
    const float *tiles;      /* (n_tiles, 3, S, S) f32 host, S = image_size; tile 0 the base */
    int32_t n_tiles;         /* 1, or 1 + grid_w * grid_h */
    int32_t grid_w, grid_h;  /* crop columns and rows; 0 when base only */
    int32_t keep_y, keep_x;  /* window of the stitched (grid_h*T) x (grid_w*T) crop token map */
    int32_t keep_h, keep_w;  /* kept by unpadding (T = tokens per tile side, 14) */
    int32_t pool_h, pool_w;  /* that window after adaptive average pooling (= keep_h/w when
                                not pooled; 0: no crop tokens) */
    int32_t n_tokens;        /* T*T + pool_h*pool_w */
};

struct siglip;

/* Uploads the SigLIP tower and projector weights of m and allocates all scratch for
 * max_tiles tiles per call. b and m are borrowed and must outlive the siglip. Returns 0,
 * VLM_EINVAL if m has no SigLIP tower (or max_tiles < 1), VLM_ENOMEM if backend memory runs
 * out (message in *err). */
int siglip_init(struct siglip **out, struct backend *b, const struct model *m,
                int32_t max_tiles, struct vlm_err *err);

/* out: (in->n_tokens, hidden) in backend memory, act dtype: the base tile's T*T rows, then
 * the kept (pooled) window of the crop map row by row. VLM_ETOOBIG over max_tiles, VLM_EINVAL
 * on an inconsistent geometry; nothing written on error. */
int siglip_encode(struct siglip *s, const struct siglip_input *in, struct tensor *out);

/* Most tiles one siglip_encode call accepts. */
int32_t siglip_max_tiles(const struct siglip *s);

/* Frees backend buffers and host metadata; accepts NULL. */
void siglip_destroy(struct siglip *s);

#endif
