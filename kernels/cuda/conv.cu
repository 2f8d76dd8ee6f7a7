/*
 * Channels-last maps over bf16: the 3×3 stride-2 patches of the ConvAdapter's convolution
 * (the product itself goes through cuBLAS) and adaptive average pooling. One thread per
 * output element, consecutive threads on consecutive outputs (coalesced writes; reads are
 * consecutive channels of one map position, or 9-strided within one for the patches).
 */
#include "kernels/cuda/common.cuh"

/* y (oh·ow, 9·C): element e = row · 9C + c · 9 + ky · 3 + kx */
static __global__ void im2col_3x3s2_kernel(bf16 *__restrict__ y, const bf16 *__restrict__ x,
                                           int32_t h, int32_t w, int32_t ow, int32_t C,
                                           int64_t n)
{
    int64_t C9 = 9 * (int64_t)C;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / C9;
        int32_t col = (int32_t)(e - r * C9), c = col / 9, k = col - c * 9;
        int32_t oy = (int32_t)(r / ow), ox = (int32_t)(r - (int64_t)oy * ow);
        int32_t iy = 2 * oy - 1 + k / 3, ix = 2 * ox - 1 + k % 3;
        bool in = iy >= 0 && iy < h && ix >= 0 && ix < w;
        y[e] = in ? x[((int64_t)iy * w + ix) * C + c] : to_bf(0.0f);
    }
}

extern "C" void cuda_im2col_3x3s2(void *y, const void *x, int32_t h, int32_t w, int32_t C,
                                  cudaStream_t s)
{
    int32_t oh = (h - 1) / 2 + 1, ow = (w - 1) / 2 + 1;
    int64_t n = (int64_t)oh * ow * 9 * C;
    if (h <= 0 || w <= 0 || n <= 0) return;
    im2col_3x3s2_kernel<<<grid_1d(n, 256), 256, 0, s>>>((bf16 *)y, (const bf16 *)x, h, w, ow,
                                                        C, n);
    CUDA_LAUNCH_CHECK();
}

/* y (oh·ow, C): element e = (i · ow + j) · C + c, the mean over its bin in row-major order */
static __global__ void avgpool_adaptive_kernel(bf16 *__restrict__ y, const bf16 *__restrict__ x,
                                               int32_t ih, int32_t iw, int32_t oh, int32_t ow,
                                               int32_t C, int64_t n)
{
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n;
         e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / C;
        int32_t c = (int32_t)(e - r * C), i = (int32_t)(r / ow), j = (int32_t)(r % ow);
        int32_t y0 = (int32_t)((int64_t)i * ih / oh);
        int32_t y1 = (int32_t)(((int64_t)(i + 1) * ih + oh - 1) / oh);
        int32_t x0 = (int32_t)((int64_t)j * iw / ow);
        int32_t x1 = (int32_t)(((int64_t)(j + 1) * iw + ow - 1) / ow);
        float sum = 0.0f;
        for (int32_t iy = y0; iy < y1; iy++)
            for (int32_t ix = x0; ix < x1; ix++) sum += ld_f(x + ((int64_t)iy * iw + ix) * C + c);
        y[e] = to_bf(sum / (float)((y1 - y0) * (x1 - x0)));
    }
}

extern "C" void cuda_avgpool_adaptive(void *y, const void *x, int32_t ih, int32_t iw, int32_t oh,
                                      int32_t ow, int32_t C, cudaStream_t s)
{
    int64_t n = (int64_t)oh * ow * C;
    if (ih <= 0 || iw <= 0 || n <= 0) return;
    avgpool_adaptive_kernel<<<grid_1d(n, 256), 256, 0, s>>>((bf16 *)y, (const bf16 *)x, ih, iw,
                                                            oh, ow, C, n);
    CUDA_LAUNCH_CHECK();
}
