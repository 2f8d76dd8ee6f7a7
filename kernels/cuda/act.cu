/*
 * Elementwise ops over bf16: residual add, SwiGLU (silu(gate) ⊙ up), exact GELU, quick GELU,
 * tanh GELU, and the bias add after a product. Memory-bound: when every pointer is 16-byte aligned and
 * n a multiple of 8, each thread moves 16 bytes per operand (8 bf16) per iteration; otherwise
 * one element per iteration.
 */
#include "kernels/cuda/common.cuh"
#include "kernels/mix64.h"

struct op_add {
    __device__ float operator()(float a, float b) const { return a + b; }
};
struct op_silu_mul {
    __device__ float operator()(float g, float u) const { return g / (1.0f + expf(-g)) * u; }
};
struct op_gelu_erf {
    __device__ float operator()(float x, float) const
    {
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
};
struct op_quick_gelu {
    __device__ float operator()(float x, float) const { return x / (1.0f + expf(-1.702f * x)); }
};

struct op_gelu_tanh {
    __device__ float operator()(float x, float) const
    {
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    }
};

/* grid-stride; vector path: one thread does 8 elements (one uint4 per operand). b may be
 * NULL for unary ops (read as 0). y may alias a or b: each element is read before it is
 * written, by the same thread. */
template <class OP>
static __global__ void binary_kernel(bf16 *y, const bf16 *a, const bf16 *b, int64_t n, bool vec)
{
    OP op;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (vec) {
        for (int64_t i = i0; i < n / 8; i += stride) {
            bf16x8 va, vb, vy;
            va.u = ((const uint4 *)a)[i];
            vb.u = b ? ((const uint4 *)b)[i] : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int j = 0; j < 8; j++)
                vy.h[j] = to_bf(op(__bfloat162float(va.h[j]), __bfloat162float(vb.h[j])));
            ((uint4 *)y)[i] = vy.u;
        }
    } else {
        for (int64_t i = i0; i < n; i += stride)
            y[i] = to_bf(op(ld_f(a + i), b ? ld_f(b + i) : 0.0f));
    }
}

static bool aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

template <class OP>
static void launch_binary(void *y, const void *a, const void *b, int64_t n, cudaStream_t s)
{
    if (n <= 0) return;
    bool vec = n % 8 == 0 && aligned16(y) && aligned16(a) && (!b || aligned16(b));
    int64_t work = vec ? n / 8 : n;
    binary_kernel<OP><<<grid_1d(work, 256), 256, 0, s>>>((bf16 *)y, (const bf16 *)a,
                                                         (const bf16 *)b, n, vec);
    CUDA_LAUNCH_CHECK();
}

extern "C" void cuda_add(void *y, const void *a, const void *b, int64_t n, cudaStream_t s)
{
    launch_binary<op_add>(y, a, b, n, s);
}

extern "C" void cuda_silu_mul(void *y, const void *g, const void *u, int64_t n, cudaStream_t s)
{
    launch_binary<op_silu_mul>(y, g, u, n, s);
}

extern "C" void cuda_gelu_erf(void *y, const void *x, int64_t n, cudaStream_t s)
{
    launch_binary<op_gelu_erf>(y, x, nullptr, n, s);
}

extern "C" void cuda_quick_gelu(void *y, const void *x, int64_t n, cudaStream_t s)
{
    launch_binary<op_quick_gelu>(y, x, nullptr, n, s);
}

extern "C" void cuda_gelu_tanh(void *y, const void *x, int64_t n, cudaStream_t s)
{
    launch_binary<op_gelu_tanh>(y, x, nullptr, n, s);
}

/* grid-stride over rows · cols elements; y[r, c] += bias[c] in y's own type. */
template <class T>
static __global__ void add_bias_kernel(T *y, const bf16 *__restrict__ bias, int64_t rows,
                                       int32_t cols)
{
    int64_t n = rows * cols;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = (float)y[i] + ld_f(bias + i % cols);
        y[i] = (T)v;
    }
}

extern "C" void cuda_add_bias(void *y, enum cuda_dtype yt, const void *bias, int64_t rows,
                              int32_t cols, cudaStream_t s)
{
    int64_t n = rows * cols;
    if (n <= 0) return;
    unsigned g = grid_1d(n, 256);
    const bf16 *b = (const bf16 *)bias;
    switch (yt) {
    case CUDA_DT_F32: add_bias_kernel<<<g, 256, 0, s>>>((float *)y, b, rows, cols); break;
    case CUDA_DT_BF16: add_bias_kernel<<<g, 256, 0, s>>>((bf16 *)y, b, rows, cols); break;
    case CUDA_DT_F16: add_bias_kernel<<<g, 256, 0, s>>>((__half *)y, b, rows, cols); break;
    }
    CUDA_LAUNCH_CHECK();
}

/* grid-stride; element i = lo + (hi - lo) · u(seed, i), u from splitmix64 (kernels/mix64.h)
 * over the counter seed + i. */
static __global__ void fill_uniform_kernel(bf16 *p, int64_t n, uint64_t seed, float lo, float hi)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = vlm_mix64(seed + VLM_MIX64_STEP * (uint64_t)i);
        float u = (float)(z >> 40) * (1.0f / 16777216.0f);
        p[i] = to_bf(lo + (hi - lo) * u);
    }
}

extern "C" void cuda_fill_uniform(void *p, int64_t n, uint64_t seed, float lo, float hi,
                                  cudaStream_t s)
{
    if (n <= 0) return;
    fill_uniform_kernel<<<grid_1d(n, 256), 256, 0, s>>>((bf16 *)p, n, seed, lo, hi);
    CUDA_LAUNCH_CHECK();
}
