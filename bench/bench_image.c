/*
 * bench_image: decode + Qwen2-VL preprocessing time per image, one thread.
 *
 *   bench_image [--iters N] image...
 *
 * For each file prints the best and median time of: decode (media_decode_image),
 * the two resize stages (vision_prep_resized), rescale/normalise/patchify
 * (vision_prep_patchify), and the whole path as the server runs it (decode +
 * vision_prep_image). bench/bench_image_hf.py writes the standard test JPEGs
 * (1024x768 and 4000x3000) and times the reference pipeline on the same files.
 * For Valley2 checkpoints it also times the SigLIP side (valley2_prep_image) on the decoded
 * image: the AnyRes tiles of an image alone in its request, and the single tile it gets among
 * several images.
 * Stages are timed in process CPU time (one thread, so CPU time = busy time; stable on a
 * shared, loaded machine); the total is given both as CPU and wall time.
 * Prints figures only; never asserts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/media.h"
#include "server/valley2_prep.h"
#include "server/vision_prep.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static void report(const char *what, uint64_t *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_u64);
    printf("  %-28s best %8.2f ms  median %8.2f ms\n", what, t[0] / 1e6, t[n / 2] / 1e6);
}

int main(int argc, char **argv)
{
    int iters = 10, first = 1;
    if (argc > 2 && !strcmp(argv[1], "--iters")) {
        iters = atoi(argv[2]);
        first = 3;
    }
    if (first >= argc || iters < 1) {
        fprintf(stderr, "usage: %s [--iters N] image...\n", argv[0]);
        return 2;
    }
    uint64_t *t_dec = calloc((size_t)iters, 8), *t_rs = calloc((size_t)iters, 8),
             *t_pf = calloc((size_t)iters, 8), *t_all = calloc((size_t)iters, 8),
             *t_wall = calloc((size_t)iters, 8);
    for (int a = first; a < argc; a++) {
        size_t n = 0;
        uint8_t *bytes = (uint8_t *)vlm_read_file(argv[a], &n);
        if (!bytes) {
            fprintf(stderr, "cannot read %s\n", argv[a]);
            continue;
        }
        struct vision_prep_params p;
        vision_prep_params_default(&p);
        struct vlm_err err;
        struct media_image im = {0}, r = {0};
        struct vision_prep_out o = {0};
        for (int i = 0; i < iters; i++) {
            uint64_t t0 = cpu_ns();
            if (media_decode_image(bytes, n, NULL, &im, &err)) {
                fprintf(stderr, "%s: %s\n", argv[a], err.msg);
                break;
            }
            uint64_t t1 = cpu_ns();
            if (vision_prep_resized(&im, &p, &r, &err)) break;
            uint64_t t2 = cpu_ns();
            if (vision_prep_patchify(&r, &p, &o, &err)) break;
            uint64_t t3 = cpu_ns();
            t_dec[i] = t1 - t0;
            t_rs[i] = t2 - t1;
            t_pf[i] = t3 - t2;
            if (i + 1 < iters) {
                media_image_free(&r);
                vision_prep_out_free(&o);
                media_image_free(&im);
            }
        }
        printf("%s: %dx%d -> %dx%d, grid %dx%dx%d, %d patches, %d tokens, %zu bytes\n", argv[a],
               im.w, im.h, o.width, o.height, o.grid_t, o.grid_h, o.grid_w, o.n_patches,
               o.n_tokens, n);
        media_image_free(&r);
        vision_prep_out_free(&o);
        media_image_free(&im);
        for (int i = 0; i < iters; i++) {
            uint64_t t0 = cpu_ns(), w0 = vlm_now_ns();
            if (media_decode_image(bytes, n, NULL, &im, &err)) break;
            if (vision_prep_image(&im, &p, &o, &err)) break;
            t_all[i] = cpu_ns() - t0;
            t_wall[i] = vlm_now_ns() - w0;
            vision_prep_out_free(&o);
            media_image_free(&im);
        }
        report("decode", t_dec, iters);
        report("resize (both stages)", t_rs, iters);
        report("rescale+normalize+patchify", t_pf, iters);
        report("total (decode + prep), CPU", t_all, iters);
        report("total (decode + prep), wall", t_wall, iters);
        struct valley2_prep_settings vs;
        valley2_prep_settings_default(&vs);
        if (media_decode_image(bytes, n, NULL, &im, &err) == 0) {
            for (int32_t n_images = 1; n_images <= 2; n_images++) {
                struct valley2_prep_out vo = {0};
                int ok = 0;
                for (int i = 0; i < iters; i++) {
                    uint64_t t0 = cpu_ns();
                    if (valley2_prep_image(&im, &vs, n_images, &vo, &err)) break;
                    t_all[i] = cpu_ns() - t0;
                    ok++;
                    if (i + 1 < iters) valley2_prep_out_free(&vo);
                }
                if (ok < iters) {
                    printf("  valley2 siglip: %s\n", err.msg);
                    break;
                }
                char what[64];
                snprintf(what, sizeof what, "valley2 siglip, %d tile%s", (int)vo.g.n_tiles,
                         vo.g.n_tiles > 1 ? "s" : "");
                report(what, t_all, iters);
                printf("  %-28s grid %dx%d, %d tokens\n", "", (int)vo.g.grid_w,
                       (int)vo.g.grid_h, (int)vo.g.n_tokens);
                valley2_prep_out_free(&vo);
            }
            media_image_free(&im);
        }
        free(bytes);
    }
    free(t_dec);
    free(t_rs);
    free(t_pf);
    free(t_all);
    free(t_wall);
    return 0;
}
