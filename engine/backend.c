/* Tensor view helpers shared by every backend. */
#include "engine/backend.h"

#include <stdlib.h>
#include <string.h>

size_t dtype_size(enum dtype t)
{
    switch (t) {
    case DT_F32: return 4;
    case DT_BF16: return 2;
    case DT_F16: return 2;
    case DT_I32: return 4;
    default: VLM_ASSERT(!"bad dtype");
    }
    return 0;
}

const char *dtype_name(enum dtype t)
{
    switch (t) {
    case DT_F32: return "f32";
    case DT_BF16: return "bf16";
    case DT_F16: return "f16";
    case DT_I32: return "i32";
    default: return "?";
    }
}

struct tensor tensor_make(void *data, enum dtype type, int64_t ne0, int64_t ne1, int64_t ne2,
                          int64_t ne3)
{
    struct tensor t = {.data = data, .type = type, .ne = {ne0, ne1, ne2, ne3}};
    t.nb[0] = (int64_t)dtype_size(type);
    for (int i = 1; i < 4; i++) t.nb[i] = t.nb[i - 1] * t.ne[i - 1];
    return t;
}

struct tensor tensor_rows(const struct tensor *t, int64_t r0, int64_t n)
{
    VLM_ASSERT(r0 >= 0 && n >= 0 && r0 + n <= t->ne[1] && t->ne[2] == 1 && t->ne[3] == 1);
    struct tensor v = *t;
    v.data = (char *)t->data + r0 * t->nb[1];
    v.ne[1] = n;
    v.nb[2] = v.nb[1] * n;
    v.nb[3] = v.nb[2];
    return v;
}

const char *numerics_name(enum numerics n)
{
    return n == NUMERICS_FAST ? "fast" : "exact";
}

bool numerics_parse(const char *s, enum numerics *out)
{
    if (!strcmp(s, "exact")) *out = NUMERICS_EXACT;
    else if (!strcmp(s, "fast")) *out = NUMERICS_FAST;
    else return false;
    return true;
}

struct tensor backend_map_weight(const struct backend *b, const struct tensor *src)
{
    return b->ops->map_weight ? b->ops->map_weight(b->ctx, src) : b->ops->load_weight(b->ctx, src);
}

int backend_map_weights(const struct backend *b, const struct backend_weight *w, size_t n,
                        const char *who, struct vlm_err *err)
{
    for (size_t i = 0; i < n; i++) {
        *w[i].dst = backend_map_weight(b, w[i].src); /* src: a view into the mapped checkpoint */
        if (!w[i].dst->data)
            return vlm_err_set(err, VLM_ENOMEM, 503, "%s: out of backend memory loading %s", who,
                               w[i].name);
    }
    return 0;
}

int backend_scratch(const struct backend *b, void **dst, int64_t rows, int64_t cols, enum dtype t,
                    const char *who, struct vlm_err *err)
{
    size_t bytes = (size_t)VLM_MAX(rows, 1) * (size_t)cols * dtype_size(t);
    *dst = b->ops->alloc(b->ctx, bytes);
    if (!*dst)
        return vlm_err_set(err, VLM_ENOMEM, 503, "%s: out of backend memory (%zu bytes)", who, bytes);
    return 0;
}

void backend_release(const struct backend *b, void *p)
{
    if (p) b->ops->release(b->ctx, p);
}

void backend_release_tensor(const struct backend *b, struct tensor *t)
{
    backend_release(b, t->data);
    t->data = NULL;
}

void backend_destroy(struct backend *b)
{
    if (b && b->ops && b->ops->destroy) b->ops->destroy(b->ctx);
    if (b) {
        b->ops = NULL;
        b->ctx = NULL;
    }
}

int backend_pick(enum backend_choice want, bool *use_cuda, struct vlm_err *err)
{
    *use_cuda = false;
#ifdef VLM_HAVE_CUDA
    *use_cuda = want == BACKEND_CUDA || (want == BACKEND_AUTO && backend_cuda_device_count() > 0);
#else
    if (want == BACKEND_CUDA)
        return vlm_err_set(err, VLM_EINVAL, 0, "--backend cuda: this build has no CUDA backend");
#endif
    return 0;
}
