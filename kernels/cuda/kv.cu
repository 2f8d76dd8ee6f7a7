/*
 * KV store: this step's k and v rows (n_tok, n_kv_heads · hd) bf16 into the paged cache at
 * their slots (slot = block · block_size + offset, from the step metadata).
 */
#include "kernels/cuda/common.cuh"

/* grid = (n_tok, 2): y selects k or v; block = 128; thread j copies words j, j + 128, ... of
 * one row, 16 bytes each when the row length allows (hd a multiple of 8), else 4 or 2. */
template <class W>
static __global__ void kv_store_kernel(char *kc, char *vc, const char *k, const char *v,
                                       const int32_t *__restrict__ slot, int64_t row_bytes)
{
    int64_t i = blockIdx.x;
    bool is_v = blockIdx.y == 1;
    const W *s = (const W *)((is_v ? v : k) + i * row_bytes);
    W *d = (W *)((is_v ? vc : kc) + (int64_t)slot[i] * row_bytes);
    int64_t n = row_bytes / (int64_t)sizeof(W);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) d[j] = s[j];
}

extern "C" void cuda_kv_store(void *kc, void *vc, const void *k, const void *v,
                              const int32_t *slot, int32_t n_tok, int32_t row, cudaStream_t s)
{
    if (n_tok <= 0) return;
    int64_t rb = (int64_t)row * 2;
    uintptr_t a = (uintptr_t)kc | (uintptr_t)vc | (uintptr_t)k | (uintptr_t)v | (uintptr_t)rb;
    dim3 grid((unsigned)n_tok, 2);
    if (a % 16 == 0)
        kv_store_kernel<uint4><<<grid, 128, 0, s>>>((char *)kc, (char *)vc, (const char *)k,
                                                    (const char *)v, slot, rb);
    else if (a % 4 == 0)
        kv_store_kernel<uint32_t><<<grid, 128, 0, s>>>((char *)kc, (char *)vc, (const char *)k,
                                                       (const char *)v, slot, rb);
    else
        kv_store_kernel<uint16_t><<<grid, 128, 0, s>>>((char *)kc, (char *)vc, (const char *)k,
                                                       (const char *)v, slot, rb);
    CUDA_LAUNCH_CHECK();
}
