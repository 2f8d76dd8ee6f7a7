/*
 * mix64: the project's one integer mixer, splitmix64 (Steele, Lea, Flood 2014), for host and
 * device code alike (a CUDA kernel includes it too). vlm_mix64(x) is the value the generator
 * returns after stepping from state x: counter-based draws (vlm_mix64(key)), streams
 * (x = vlm_mix64(s), s += VLM_MIX64_STEP), seed derivation. vlm_mix64_final is its output
 * function alone, the avalanche that ends a hash (vlm_hash64).
 */
#ifndef VLM_KERNELS_MIX64_H
#define VLM_KERNELS_MIX64_H

#include <stdint.h>

#ifdef __CUDACC__
#define VLM_MIX64_FN static inline __host__ __device__
#else
#define VLM_MIX64_FN static inline
#endif

#define VLM_MIX64_STEP 0x9e3779b97f4a7c15ull

VLM_MIX64_FN uint64_t vlm_mix64_final(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

VLM_MIX64_FN uint64_t vlm_mix64(uint64_t x)
{
    return vlm_mix64_final(x + VLM_MIX64_STEP);
}

/* The stream form: the next value of the generator with state *s. */
VLM_MIX64_FN uint64_t vlm_mix64_next(uint64_t *s)
{
    uint64_t z = vlm_mix64(*s);
    *s += VLM_MIX64_STEP;
    return z;
}

#endif
