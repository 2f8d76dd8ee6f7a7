/*
 * bench_forkjoin: what the OpenMP synchronisation of a decode step costs, per token, for the
 * two ways of laying a step's products out over the threads (issue 17):
 *
 *   region/op: one parallel region per product, the short ops between products on the
 *     calling thread (the engine's layout: 28 layers x 4 products + lm_head = 113 regions);
 *   region/layer, 2 barriers: one region per decoder layer, each product followed by a
 *     barrier, the short ops on one thread (omp master) and a second barrier;
 *   region/layer, 1 barrier: the same with the short ops run by every thread (or split),
 *     so one barrier per product.
 *
 * Each product is --work-us of CPU work split over the threads, each short-op gap --serial-us
 * (a calibrated arithmetic loop, no memory traffic). --work-us 0 --serial-us 0 leaves the
 * synchronisation alone. Prints wall and process-CPU ms per token, best of the repeats, the
 * layouts alternating so that the load moves less between them. Run it under the engine's
 * wait policy (OMP_WAIT_POLICY=passive in the benchmarks). Asserts nothing.
 *
 *   bench_forkjoin [--threads T (2)] [--work-us W (0)] [--serial-us S (0)] [--tokens N (200)]
 *                  [--reps R (5)]
 */
#include "engine/base.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LAYERS 28
#define PER_LAYER 4
#define PRODUCTS (LAYERS * PER_LAYER + 1)

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double iters_per_us = 1.0;
static volatile double sink;

static void work(double us)
{
    double x = 0.0;
    long n = (long)(us * iters_per_us);
    for (long i = 0; i < n; i++) x += 1e-9 * (double)i;
    sink = x;
}

static void token(int layout, int T, double W, double S)
{
    if (layout == 0) {
        for (int o = 0; o < PRODUCTS; o++) {
#pragma omp parallel num_threads(T)
            work(W / T);
            work(S);
        }
        return;
    }
    for (int l = 0; l < LAYERS; l++) {
        int per = l == LAYERS - 1 ? PRODUCTS - (LAYERS - 1) * PER_LAYER : PER_LAYER;
#pragma omp parallel num_threads(T)
        for (int o = 0; o < per; o++) {
            work(W / T);
#pragma omp barrier
            if (layout == 1) {
#pragma omp master
                work(S);
#pragma omp barrier
            } else {
                work(S);
            }
        }
    }
}

int main(int argc, char **argv)
{
    int T = 2, tokens = 200, reps = 5;
    double W = 0.0, S = 0.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--work-us")) W = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--serial-us")) S = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--tokens")) tokens = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
    }
    if (T < 1 || tokens < 1 || reps < 1 || W < 0 || S < 0) {
        fprintf(stderr, "usage: bench_forkjoin [--threads T] [--work-us W] [--serial-us S] "
                        "[--tokens N] [--reps R]\n");
        return 2;
    }
    double c0 = cpu_s();
    work(2e7); /* 2e7 iterations (1 per "us" until calibrated) */
    iters_per_us = 2e7 / VLM_MAX((cpu_s() - c0) * 1e6, 1.0);
    static const char *const names[3] = {"region/op", "region/layer, 2 barriers",
                                         "region/layer, 1 barrier"};
    double bw[3] = {1e30, 1e30, 1e30}, bc[3] = {1e30, 1e30, 1e30};
    for (int r = 0; r < reps; r++)
        for (int layout = 0; layout < 3; layout++) {
            double t0 = (double)vlm_now_ns() * 1e-9, t1 = cpu_s();
            for (int k = 0; k < tokens; k++) token(layout, T, W, S);
            bw[layout] = VLM_MIN(bw[layout], ((double)vlm_now_ns() * 1e-9 - t0) / tokens);
            bc[layout] = VLM_MIN(bc[layout], (cpu_s() - t1) / tokens);
        }
    printf("%d threads, %d products per token (%d layers), work %.0f us per product, %.0f us "
           "between products; best of %d x %d tokens\n",
           T, PRODUCTS, LAYERS, W, S, reps, tokens);
    for (int layout = 0; layout < 3; layout++)
        printf("%-26s %8.3f ms/token  %8.3f CPU-ms/token\n", names[layout], bw[layout] * 1e3,
               bc[layout] * 1e3);
    return 0;
}
