/*
 * test_sampler_prep: device sampling's host half. For random logits rows (several vocabulary
 * sizes, odd ones included; ties; -inf entries; peaked and flat rows) and a table of sampling
 * parameters, the row summary is computed by the CPU reference of the sample_summary op
 * (cpu_sample_summary) and sampler_sample_summary must give exactly what sampler_sample gives on
 * the row (token, logprob bits, top-N ids and logprob bits), or fall back where the
 * parameters make that necessary. Fallbacks are counted per parameter set: penalties must
 * always fall back, and every other set must finish on the host most of the time.
 */
#include "engine/sampler.h"
#include "kernels/cpu.h"
#include "sample_rows.h"
#include "test.h"

#include <string.h>

/* ==== Parameter table ==== */

struct pcase {
    const char *name;
    float t;
    int32_t k;
    float p, min_p, rep, pres;
    int32_t logprobs;
    bool must_fall_back;
};

static const struct pcase cases[] = {
    {"greedy", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"greedy logprobs 5", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 5, false},
    {"T 0.7", 0.7f, 0, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"T 1 logprobs 0", 1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0, false},
    {"T 1e-4 (near greedy)", 1e-4f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 20, false},
    {"T 100 (near flat)", 100.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"top-k 1", 1.0f, 1, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"top-k 5", 0.8f, 5, 1.0f, 0.0f, 1.0f, 0.0f, 20, false},
    {"top-k 64 (= K)", 1.2f, 64, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"top-k 65 (above K)", 1.0f, 65, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"top-p 0.1", 1.0f, 0, 0.1f, 0.0f, 1.0f, 0.0f, -1, false},
    {"top-p 0.9", 0.7f, 0, 0.9f, 0.0f, 1.0f, 0.0f, 5, false},
    {"top-p 0.999", 0.5f, 0, 0.999f, 0.0f, 1.0f, 0.0f, -1, false},
    {"min-p 0.05", 0.7f, 0, 1.0f, 0.05f, 1.0f, 0.0f, -1, false},
    {"min-p 0.5", 1.0f, 0, 1.0f, 0.5f, 1.0f, 0.0f, 0, false},
    {"top-k 40 top-p 0.95", 0.9f, 40, 0.95f, 0.0f, 1.0f, 0.0f, 20, false},
    {"top-k 5 min-p 0.1", 1.5f, 5, 1.0f, 0.1f, 1.0f, 0.0f, -1, false},
    {"top-p 0.9 min-p 0.05", 0.6f, 0, 0.9f, 0.05f, 1.0f, 0.0f, -1, false},
    {"top-k 64 top-p 0.999 min-p 0.01", 2.0f, 64, 0.999f, 0.01f, 1.0f, 0.0f, 5, false},
    {"T 1e-4 top-p 0.9", 1e-4f, 0, 0.9f, 0.0f, 1.0f, 0.0f, -1, false},
    {"T 100 top-k 5", 100.0f, 5, 1.0f, 0.0f, 1.0f, 0.0f, -1, false},
    {"repetition penalty", 0.8f, 0, 1.0f, 0.0f, 1.3f, 0.0f, -1, true},
    {"presence penalty", 0.0f, 0, 1.0f, 0.0f, 1.0f, 0.5f, 5, true},
};

static struct sampling_params params_of(const struct pcase *c, uint64_t seed)
{
    struct sampling_params sp = sampler_params_greedy();
    sp.temperature = c->t;
    sp.top_k = c->k;
    sp.top_p = c->p;
    sp.min_p = c->min_p;
    sp.repetition_penalty = c->rep;
    sp.presence_penalty = c->pres;
    sp.seed = seed;
    sp.logprobs = c->logprobs;
    return sp;
}

static bool same_f32(float a, float b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* Compares the two results; prints the first differences. */
static bool same_result(const struct sampler_result *a, const struct sampler_result *b,
                        const char *what)
{
    bool ok = a->token == b->token && same_f32(a->logprob, b->logprob) && a->n_top == b->n_top;
    for (int32_t j = 0; ok && j < a->n_top; j++)
        ok = a->top_ids[j] == b->top_ids[j] && same_f32(a->top_lp[j], b->top_lp[j]);
    if (!ok)
        fprintf(stderr, "  %s: token %d/%d logprob %.9g/%.9g n_top %d/%d\n", what, a->token,
                b->token, a->logprob, b->logprob, a->n_top, b->n_top);
    return ok;
}

/* ==== Test ==== */

#define N_CASES ((int)ARRAY_LEN(cases))

int main(void)
{
    static const int32_t vocabs[] = {1, 7, 64, 65, 200, 1001, 5003, 151936};
    int fallbacks[N_CASES] = {0}, runs[N_CASES] = {0}, mismatches = 0, wrong_fallbacks = 0;
    int peaked_fb[N_CASES] = {0};
    static const int32_t prompt[] = {3, 0, 5, 3};
    static const int32_t output[] = {0, 2, 2, 9};

    TEST("from the summary == sampler_sample on random rows, every parameter set") {
        for (size_t vi = 0; vi < ARRAY_LEN(vocabs); vi++) {
            int32_t V = vocabs[vi];
            int n_rows = V > 10000 ? 1 : 3, n_seeds = V > 10000 ? 2 : 4;
            struct sampler_ws w;
            sampler_ws_init(&w, V);
            float *row = xmalloc((size_t)V * sizeof *row);
            for (int kind = 0; kind < ROW_KINDS; kind++) {
                for (int ri = 0; ri < n_rows; ri++) {
                    make_row(row, V, (enum row_kind)kind);
                    for (int ci = 0; ci < N_CASES; ci++) {
                        for (int si = 0; si < n_seeds; si++) {
                            struct sampling_params sp = params_of(&cases[ci], 77 + (uint64_t)si);
                            int32_t n_out = si; /* the repetition penalty has the prompt */
                            float inv_t = sp.temperature > 1e-5f ? 1.0f / sp.temperature : 0.0f;
                            double u = sampler_uniform(sp.seed, (uint64_t)n_out);
                            struct sample_summary p;
                            cpu_sample_summary(&p, row, 1, V, V, &inv_t, &u);
                            struct sampler_result want, got;
                            memset(&want, 0, sizeof want);
                            memset(&got, 0, sizeof got);
                            sampler_sample(&w, row, &sp, prompt, (int32_t)ARRAY_LEN(prompt),
                                           output, n_out, &want);
                            int32_t tok = sampler_sample_summary(&p, V, &sp,
                                                                 (int32_t)ARRAY_LEN(prompt),
                                                                 n_out, &got);
                            runs[ci]++;
                            if (tok < 0) {
                                fallbacks[ci]++;
                                peaked_fb[ci] += kind == ROW_PEAKED;
                                continue;
                            }
                            if (cases[ci].must_fall_back && n_out > 0) wrong_fallbacks++;
                            char what[160];
                            snprintf(what, sizeof what, "V %d %s row %d, %s, seed %d", V,
                                     row_name[kind], ri, cases[ci].name, si);
                            if (tok != got.token || !same_result(&got, &want, what)) mismatches++;
                        }
                    }
                }
            }
            free(row);
            sampler_ws_destroy(&w);
        }
        CHECK_EQ(mismatches, 0);
        CHECK_EQ(wrong_fallbacks, 0);
    }

    TEST("fallbacks: always with penalties, never on peaked rows otherwise") {
        int total_fb = 0, total = 0;
        for (int ci = 0; ci < N_CASES; ci++) {
            printf("  %-34s %4d of %4d fell back (%d on peaked rows)\n", cases[ci].name,
                   fallbacks[ci], runs[ci], peaked_fb[ci]);
            total_fb += fallbacks[ci];
            total += runs[ci];
            if (cases[ci].must_fall_back) {
                /* the repetition penalty always has prompt ids; presence needs output ids */
                CHECK(fallbacks[ci] >= runs[ci] / 2);
            } else if (cases[ci].k > SAMPLE_SUMMARY_K) {
                CHECK(fallbacks[ci] > 0); /* every vocabulary above K + 1 */
            } else {
                /* a model's rows are peaked: a few tokens hold the mass, and the cut lands
                 * among the candidates. Uniform and flat rows put the nucleus or the tie
                 * outside them and fall back by design. */
                CHECK_EQ(peaked_fb[ci], 0);
            }
        }
        printf("  total: %d of %d fell back\n", total_fb, total);
        /* greedy and temperature-only never need the row */
        CHECK_EQ(fallbacks[0] + fallbacks[1] + fallbacks[2] + fallbacks[3] + fallbacks[4] +
                     fallbacks[5], 0);
    }

    TEST("greedy ties: lowest id, from the summary") {
        float row[10] = {0, 3, 1, 3, -INFINITY, 3, 0, 0, 0, 0};
        float inv_t = 0.0f;
        double u = 0.0;
        struct sample_summary p;
        cpu_sample_summary(&p, row, 1, 10, 10, &inv_t, &u);
        CHECK_EQ(p.argmax, 1);
        CHECK_EQ(p.n_top, 10);
        CHECK_EQ(p.top_ids[0], 1);
        CHECK_EQ(p.top_ids[1], 3);
        CHECK_EQ(p.top_ids[2], 5);
        CHECK_EQ(p.top_ids[9], 4);
        CHECK_EQ(p.token, -1);
        struct sampling_params sp = sampler_params_greedy();
        struct sampler_result r;
        CHECK_EQ(sampler_sample_summary(&p, 10, &sp, 0, 0, &r), 1);
    }

    TEST("a cut at the last candidate's value falls back") {
        /* 100 equal logits: top-k 5 keeps ids 0..4, but only because the tie is broken by id
         * among all 100; the candidates alone (64 of them) cannot tell, so: fall back */
        float row[100];
        for (int i = 0; i < 100; i++) row[i] = 1.0f;
        struct sampling_params sp = sampler_params_greedy();
        sp.temperature = 1.0f;
        sp.top_k = 5;
        float inv_t = 1.0f;
        double u = sampler_uniform(sp.seed, 0);
        struct sample_summary p;
        cpu_sample_summary(&p, row, 1, 100, 100, &inv_t, &u);
        struct sampler_result r;
        CHECK_EQ(sampler_sample_summary(&p, 100, &sp, 0, 0, &r), -1);
        sp.top_k = 0; /* untruncated: the device draw is used as is */
        struct sampler_ws w;
        sampler_ws_init(&w, 100);
        struct sampler_result want;
        CHECK_EQ(sampler_sample_summary(&p, 100, &sp, 0, 0, &r),
                 sampler_sample(&w, row, &sp, NULL, 0, NULL, 0, &want));
        sampler_ws_destroy(&w);
    }
    return test_report();
}
