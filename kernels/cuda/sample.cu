/*
 * sample_summary on the device: each f32 logits row reduced to the struct sample_summary the host
 * sampler finishes from (kernels/sample.h; kernels/cpu/sample.c is the reference). The row
 * is only read; what leaves the device is 560 bytes per row instead of 4 * vocab.
 *
 * One block of SP_THREADS threads per row; thread t owns the contiguous chunk
 * [t * chunk, (t + 1) * chunk) of the row, so per-thread partial sums in index order
 * combine by a block prefix sum into the running sums of the inverse CDF. Passes over the
 * row (L1/L2-resident after the first for one block; 600 KB at vocab 151936):
 *   1. max / argmax (lowest id on ties) and the first radix-select histogram;
 *   2. the raw log-sum-exp (double), and with inv_t > 0 the draw's per-chunk mass
 *      sum expf(l * inv_t - mx) (double) and alive count, and the second histogram;
 *   3, 4. the last two histograms: the 8-bit digits of an order-preserving key, most
 *      significant first, pick the (K+1)-th largest key T (radix select);
 *   5. keys above T go to the candidate list; ties at T are counted per chunk and a block
 *      scan hands the lowest ids the remaining places (one more pass, over the tie chunks);
 *   6. the K + 1 candidates are ranked (value desc, id asc) by counting, in shared memory.
 * The draw: a block prefix sum of the chunk masses; the last chunk whose prefix is
 * <= u * total (and whose mass is > 0) is walked by its thread alone. Sums in double, as on
 * the CPU, but in another association, so a target within rounding of a boundary may pick
 * the neighbouring token (test_cuda_sample measures that).
 *
 * Checked on an H200 (test_cuda_sample, docs/PERF.md "Device sampling"): one block per row
 * reads at ~100 GB/s at 64 rows, 373 µs for a single row, since per-thread chunks make each
 * warp load touch 32 lines and one row has one SM. Greedy rows without logprobs (inv_t < 0,
 * the common case) skip it: cuda_argmax_rows splits each row over many blocks with
 * coalesced loads. Making the full summary coalesced (each warp a contiguous range read
 * 32-wide, walked tile by tile with warp scans) is what would speed up sampled rows.
 */
#include "kernels/cuda/common.cuh"

#include <limits.h>

#define SP_THREADS 1024
#define SP_KC (SAMPLE_SUMMARY_K + 1) /* selected: the K candidates and the bound on the rest */

/* An order-preserving key: larger float, larger key. -0 maps to +0 (they compare equal). */
__device__ __forceinline__ uint32_t sp_key(float v)
{
    uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* a ranks before b: larger value, then lower id (sampler.c's order) */
__device__ __forceinline__ bool sp_before(float va, int32_t a, float vb, int32_t b)
{
    return va > vb || (va == vb && a < b);
}

/* ==== Block reductions and scans (blockDim.x a multiple of 32) ==== */

template <typename T> __device__ __forceinline__ T sp_warp_incl_scan(T v)
{
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T n = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += n;
    }
    return v;
}

/* Exclusive prefix sum over the block in thread order; *total gets the block's sum. ws: 33
 * entries of shared memory, free on entry (the call syncs before touching it). */
template <typename T> __device__ T sp_block_excl_scan(T v, T *total, T *ws)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    T incl = sp_warp_incl_scan(v);
    T excl = __shfl_up_sync(0xffffffffu, incl, 1);
    if (lane == 0) excl = T(0);
    __syncthreads();
    if (lane == 31) ws[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        T w = lane < n_warps ? ws[lane] : T(0);
        T wi = sp_warp_incl_scan(w);
        T we = __shfl_up_sync(0xffffffffu, wi, 1);
        if (lane == 0) we = T(0);
        __syncwarp();
        if (lane < n_warps) ws[lane] = we;
        if (lane == 31) ws[32] = wi;
    }
    __syncthreads();
    *total = ws[32];
    return ws[warp] + excl;
}

template <typename T> __device__ T sp_block_sum(T v, T *ws)
{
    T total;
    sp_block_excl_scan(v, &total, ws);
    return total;
}

__device__ int sp_block_max(int v, int *ws)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) ws[warp] = v;
    __syncthreads();
    if (warp == 0) {
        int w = lane < n_warps ? ws[lane] : INT_MIN;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) w = max(w, __shfl_xor_sync(0xffffffffu, w, o));
        if (lane == 0) ws[32] = w;
    }
    __syncthreads();
    return ws[32];
}

/* The best (value, id) by sp_before over the warp, in every lane. */
__device__ __forceinline__ void sp_warp_argmax(float *bv, int32_t *bi)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, *bv, o);
        int32_t oi = __shfl_xor_sync(0xffffffffu, *bi, o);
        if (sp_before(ov, oi, *bv, *bi)) {
            *bv = ov;
            *bi = oi;
        }
    }
}

/* (value, id) of the best entry by sp_before; every thread gets it. */
__device__ void sp_block_argmax(float *v, int32_t *id, float *wv, int32_t *wi)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    float bv = *v;
    int32_t bi = *id;
    sp_warp_argmax(&bv, &bi);
    __syncthreads();
    if (lane == 0) {
        wv[warp] = bv;
        wi[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
        bv = lane < n_warps ? wv[lane] : -INFINITY;
        bi = lane < n_warps ? wi[lane] : INT_MAX;
        sp_warp_argmax(&bv, &bi);
        if (lane == 0) {
            wv[32] = bv;
            wi[32] = bi;
        }
    }
    __syncthreads();
    *v = wv[32];
    *id = wi[32];
}

/* ==== Radix select ==== */

/* Adds this thread's entries whose key matches prefix under mask to hist (256 bins of the
 * digit at shift). Lanes with the same digit are merged first (__match_any_sync) so a
 * crowded bin costs one shared atomic per warp, not 32. The trip count is the same for
 * every thread (chunk), as __match_any_sync needs. */
__device__ void sp_histogram(unsigned *hist, const float *__restrict__ l, int32_t i0, int32_t i1,
                             int32_t chunk, uint32_t prefix, uint32_t mask, int shift)
{
    int lane = threadIdx.x & 31;
    for (int32_t k = 0; k < chunk; k++) {
        int32_t i = i0 + k;
        uint32_t digit = 0x100u; /* none */
        if (i < i1) {
            uint32_t key = sp_key(l[i]);
            if ((key & mask) == prefix) digit = (key >> shift) & 0xffu;
        }
        unsigned peers = __match_any_sync(0xffffffffu, digit);
        if (digit != 0x100u && lane == __ffs(peers) - 1) atomicAdd(&hist[digit], __popc(peers));
    }
}

/* One digit of the select: after the histogram of the digit at shift, finds the digit d of
 * the need-th largest key among those matching the prefix so far; extends prefix and mask
 * and lowers need by the count of keys above d. */
__device__ void sp_select_digit(unsigned *hist, uint32_t *prefix, uint32_t *mask, int32_t *need,
                                int shift, int32_t *s_out)
{
    __syncthreads(); /* the histogram is complete */
    if (threadIdx.x == 0) {
        int32_t above = 0, d = 255;
        for (; d > 0; d--) {
            if (above + (int32_t)hist[d] >= *need) break;
            above += (int32_t)hist[d];
        }
        s_out[0] = d;
        s_out[1] = *need - above;
    }
    __syncthreads();
    *prefix |= (uint32_t)s_out[0] << shift;
    *mask |= 0xffu << shift;
    *need = s_out[1];
    for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0; /* for the next digit */
    __syncthreads();
}

/* ==== The kernel ==== */

/* grid = rows; block = SP_THREADS; thread t owns the chunk [t * chunk, (t+1) * chunk). */
static __global__ void __launch_bounds__(SP_THREADS)
    sample_summary_kernel(struct sample_summary *out, const float *__restrict__ logits, int32_t V,
                          int64_t stride, const float *__restrict__ inv_ts,
                          const double *__restrict__ us)
{
    __shared__ unsigned hist[256];
    __shared__ double dws[33];
    __shared__ int iws[33];
    __shared__ float fv[33];
    __shared__ int32_t fi[33];
    __shared__ int32_t s_sel[2];
    __shared__ int32_t c_id[SP_KC];
    __shared__ float c_v[SP_KC];
    __shared__ int32_t n_above;

    const float *l = logits + (int64_t)blockIdx.x * stride;
    struct sample_summary *p = out + blockIdx.x;
    float inv_t = inv_ts[blockIdx.x];
    int tid = threadIdx.x;
    int32_t chunk = (V + (int32_t)blockDim.x - 1) / (int32_t)blockDim.x;
    int32_t i0 = min(V, tid * chunk), i1 = min(V, i0 + chunk);
    int32_t n_sel = min(V, SP_KC);

    for (int j = tid; j < 256; j += blockDim.x) hist[j] = 0;
    __syncthreads();

    /* 1. max / argmax, first digit */
    float mx = -INFINITY;
    int32_t arg = INT_MAX;
    for (int32_t i = i0; i < i1; i++) {
        float x = l[i];
        if (sp_before(x, i, mx, arg)) {
            mx = x;
            arg = i;
        }
    }
    sp_block_argmax(&mx, &arg, fv, fi);
    uint32_t prefix = 0, mask = 0;
    int32_t need = n_sel;
    sp_histogram(hist, l, i0, i1, chunk, prefix, mask, 24);
    sp_select_digit(hist, &prefix, &mask, &need, 24, s_sel);

    /* 2. log-sum-exp of the raw row; the draw's chunk mass (sampler.c's float ops: the
     * product rounded on its own, never fused into the subtraction) */
    bool draw = inv_t > 0.0f;
    float wmx = __fmul_rn(mx, inv_t); /* == max of l * inv_t: rounding is monotone */
    double s = 0.0, mass = 0.0;
    int alive = 0;
    for (int32_t i = i0; i < i1; i++) {
        float x = l[i];
        s += exp((double)x - (double)mx);
        if (draw) {
            float pr = expf(__fmul_rn(x, inv_t) - wmx);
            mass += pr;
            alive += pr > 0.0f;
        }
    }
    double lse_s = sp_block_sum(s, dws);
    sp_histogram(hist, l, i0, i1, chunk, prefix, mask, 16);
    sp_select_digit(hist, &prefix, &mask, &need, 16, s_sel);

    /* 3, 4. the last digits */
    sp_histogram(hist, l, i0, i1, chunk, prefix, mask, 8);
    sp_select_digit(hist, &prefix, &mask, &need, 8, s_sel);
    sp_histogram(hist, l, i0, i1, chunk, prefix, mask, 0);
    sp_select_digit(hist, &prefix, &mask, &need, 0, s_sel);

    /* 5. candidates: keys above T in any order, then `need` ties at T, lowest ids first */
    uint32_t kth = prefix; /* the key of the (K+1)-th best */
    int32_t n_top_above = n_sel - need;
    if (tid == 0) n_above = 0;
    __syncthreads();
    int ties = 0;
    for (int32_t i = i0; i < i1; i++) {
        uint32_t key = sp_key(l[i]);
        if (key > kth) {
            int32_t at = atomicAdd(&n_above, 1);
            c_id[at] = i;
            c_v[at] = l[i];
        }
        ties += key == kth;
    }
    int ties_total;
    int tie0 = sp_block_excl_scan(ties, &ties_total, iws);
    for (int32_t i = i0, k = tie0; i < i1 && k < need; i++) {
        if (sp_key(l[i]) != kth) continue;
        c_id[n_top_above + k] = i;
        c_v[n_top_above + k] = l[i];
        k++;
    }

    /* the draw: the last chunk with mass whose prefix is <= target walks alone */
    double mass_total = 0.0;
    double before = sp_block_excl_scan(mass, &mass_total, dws);
    int alive_total = sp_block_sum(alive, iws);
    double target = us[blockIdx.x] * mass_total;
    int walker = sp_block_max(draw && mass > 0.0 && before <= target ? tid : -1, iws);
    if (draw && tid == walker) {
        double cum = before;
        int32_t tok = -1;
        for (int32_t i = i0; i < i1; i++) {
            float pr = expf(__fmul_rn(l[i], inv_t) - wmx);
            if (pr <= 0.0f) continue;
            cum += pr;
            tok = i;
            if (cum > target) break;
        }
        /* not exceeded in this chunk: rounding put the boundary at its end (or the target is
         * past the whole mass): its last token, as sampler.c's walk ends */
        p->token = tok;
        p->token_logit = l[tok];
    }

    /* 6. rank the candidates (all written: __syncthreads inside the scans above) */
    __syncthreads();
    if (tid < n_sel) {
        float v = c_v[tid];
        int32_t id = c_id[tid];
        int r = 0;
        for (int j = 0; j < n_sel; j++) r += sp_before(c_v[j], c_id[j], v, id);
        if (r < SAMPLE_SUMMARY_K) {
            p->top_ids[r] = id;
            p->top_v[r] = v;
        } else {
            p->next_v = v;
        }
    }
    if (tid == 0) {
        p->lse = (double)mx + log(lse_s);
        p->max = mx;
        p->argmax = arg == INT_MAX ? 0 : arg; /* a row of NaNs: id 0, as the CPU's loop */
        p->n_top = min(V, SAMPLE_SUMMARY_K);
        p->pad = 0;
        if (V <= SAMPLE_SUMMARY_K) p->next_v = -INFINITY;
        p->total = draw ? mass_total : 0.0;
        p->n_alive = draw ? alive_total : 0;
        if (!draw || walker < 0) {
            p->token = -1;
            p->token_logit = 0.0f;
        }
    }
}

extern "C" void cuda_sample_summary(struct sample_summary *out, const float *logits, int32_t n_rows,
                                    int32_t vocab, int64_t stride, const float *inv_t,
                                    const double *u, cudaStream_t s)
{
    if (n_rows <= 0) return;
    sample_summary_kernel<<<(unsigned)n_rows, SP_THREADS, 0, s>>>(out, logits, vocab, stride, inv_t,
                                                                   u);
    CUDA_LAUNCH_CHECK();
}

/* ==== The greedy token alone (inv_t < 0 on every row) ==== */

#define AM_THREADS 256
#define AM_SPAN 2048 /* at least this many logits per block */

/* grid (splits, rows): block b of row r reduces the slice [b * per, (b + 1) * per) with
 * coalesced loads to its best (value desc, id asc) and leaves it in out[r].top_v[b] /
 * top_ids[b] (splits <= SAMPLE_SUMMARY_K), which argmax_final_kernel combines. */
static __global__ void __launch_bounds__(AM_THREADS)
    argmax_part_kernel(struct sample_summary *out, const float *__restrict__ logits, int32_t V,
                       int64_t stride, int32_t per)
{
    __shared__ float wv[33];
    __shared__ int32_t wi[33];
    const float *l = logits + (int64_t)blockIdx.y * stride;
    int32_t i0 = (int32_t)blockIdx.x * per, i1 = min(V, i0 + per);
    float bv = -INFINITY;
    int32_t bi = INT_MAX;
    for (int32_t i = i0 + (int32_t)threadIdx.x; i < i1; i += AM_THREADS) {
        float x = l[i];
        if (sp_before(x, i, bv, bi)) {
            bv = x;
            bi = i;
        }
    }
    sp_block_argmax(&bv, &bi, wv, wi);
    if (threadIdx.x == 0) {
        out[blockIdx.y].top_v[blockIdx.x] = bv;
        out[blockIdx.y].top_ids[blockIdx.x] = bi;
    }
}

/* one warp per row: the best of its splits partials, then the summary's fields as the CPU
 * reference leaves them for inv_t < 0 (the partials cleared) */
static __global__ void argmax_final_kernel(struct sample_summary *out, int32_t n_rows,
                                           int32_t splits)
{
    int32_t row = (int32_t)(blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32);
    int lane = threadIdx.x & 31;
    if (row >= n_rows) return;
    struct sample_summary *p = out + row;
    float bv = -INFINITY;
    int32_t bi = INT_MAX;
    for (int j = lane; j < splits; j += 32) {
        float v = p->top_v[j];
        int32_t id = p->top_ids[j];
        if (sp_before(v, id, bv, bi)) {
            bv = v;
            bi = id;
        }
    }
    sp_warp_argmax(&bv, &bi);
    __syncwarp();
    for (int j = lane; j < SAMPLE_SUMMARY_K; j += 32) {
        p->top_ids[j] = 0;
        p->top_v[j] = 0.0f;
    }
    if (lane == 0) {
        bool none = bi == INT_MAX; /* a row of NaNs: id 0, as the CPU's loop */
        p->lse = 0.0;
        p->total = 0.0;
        p->max = none ? __int_as_float(0x7fc00000) : bv;
        p->argmax = none ? 0 : bi;
        p->token = -1;
        p->token_logit = 0.0f;
        p->n_alive = 0;
        p->n_top = 0;
        p->next_v = -INFINITY;
        p->pad = 0;
    }
}

extern "C" void cuda_argmax_rows(struct sample_summary *out, const float *logits, int32_t n_rows,
                                 int32_t vocab, int64_t stride, cudaStream_t s)
{
    if (n_rows <= 0) return;
    int32_t splits = min(SAMPLE_SUMMARY_K, max(1, (vocab + AM_SPAN - 1) / AM_SPAN));
    int32_t per = (vocab + splits - 1) / splits;
    argmax_part_kernel<<<dim3((unsigned)splits, (unsigned)n_rows), AM_THREADS, 0, s>>>(
        out, logits, vocab, stride, per);
    CUDA_LAUNCH_CHECK();
    argmax_final_kernel<<<(unsigned)((n_rows + 7) / 8), 256, 0, s>>>(out, n_rows, splits);
    CUDA_LAUNCH_CHECK();
}

/* ==== Token masks (structured outputs) ==== */

#define MASK_THREADS 256

/* grid (blocks along the row, rows): each thread takes one word of the mask (32 logits) */
__global__ void mask_logits_kernel(float *logits, int32_t V, int64_t stride, const uint32_t *mask,
                                   int32_t W)
{
    int32_t r = blockIdx.y;
    float *l = logits + (size_t)r * (size_t)stride;
    const uint32_t *m = mask + (size_t)r * (size_t)W;
    for (int32_t w = blockIdx.x * blockDim.x + threadIdx.x; w < W; w += gridDim.x * blockDim.x) {
        uint32_t bits = m[w];
        if (bits == 0xffffffffu) continue;
        int32_t t0 = w * 32, t1 = min(V, t0 + 32);
        for (int32_t t = t0; t < t1; t++)
            if (!(bits >> (t - t0) & 1u)) l[t] = -INFINITY;
    }
}

extern "C" void cuda_mask_logits(float *logits, int32_t n_rows, int32_t vocab, int64_t stride,
                                 const uint32_t *mask, cudaStream_t s)
{
    if (n_rows <= 0 || vocab <= 0) return;
    int32_t W = (vocab + 31) / 32;
    unsigned gx = (unsigned)min((W + MASK_THREADS - 1) / MASK_THREADS, 32);
    mask_logits_kernel<<<dim3(gx, (unsigned)n_rows), MASK_THREADS, 0, s>>>(logits, vocab, stride,
                                                                          mask, W);
    CUDA_LAUNCH_CHECK();
}
