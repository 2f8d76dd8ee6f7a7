/*
 * test_sampler: sampler.c against straightforward references on fixed logits.
 * Each truncation (top-k, top-p, min-p) and each penalty is recomputed here the obvious way
 * (full sort, double sums); because the draw u = sampler_uniform(seed, n_out) is public, the
 * expected token of every seeded call is known exactly and compared.
 */
#include "engine/sampler.h"
#include "kernels/cpu.h"
#include "test.h"

#include <stdlib.h>

#define V 64

static float logits_[V];

static void make_logits(uint64_t seed)
{
    for (int i = 0; i < V; i++) {
        double u = sampler_uniform(seed, (uint64_t)i);
        logits_[i] = (float)(6.0 * u - 3.0);
    }
}

/* ---- the reference ---- */

struct ref_item { float v; int id; };

static int cmp_ref(const void *a, const void *b)
{
    const struct ref_item *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id - y->id;
}

/* penalized logits, exactly as documented in sampler.h */
static void ref_penalize(float *out, const float *in, const struct sampling_params *sp,
                         const int32_t *prompt, int np, const int32_t *output, int no)
{
    for (int i = 0; i < V; i++) out[i] = in[i];
    for (int id = 0; id < V; id++) {
        bool seen = false;
        int cnt = 0;
        for (int j = 0; j < np; j++) seen |= prompt[j] == id;
        for (int j = 0; j < no; j++) {
            seen |= output[j] == id;
            cnt += output[j] == id;
        }
        if (seen && sp->repetition_penalty != 1.0f)
            out[id] = out[id] > 0 ? out[id] / sp->repetition_penalty : out[id] * sp->repetition_penalty;
        if (cnt) out[id] -= sp->presence_penalty + sp->frequency_penalty * (float)cnt;
    }
}

/* the kept probabilities (unnormalized, same float formula as the sampler) */
static void ref_probs(double *p, const float *pen, const struct sampling_params *sp)
{
    float scaled[V], mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        scaled[i] = pen[i] * (1.0f / sp->temperature);
        if (scaled[i] > mx) mx = scaled[i];
    }
    struct ref_item it[V];
    for (int i = 0; i < V; i++) {
        p[i] = expf(scaled[i] - mx);
        it[i] = (struct ref_item){(float)p[i], i};
    }
    qsort(it, V, sizeof it[0], cmp_ref);
    if (sp->top_k > 0 && sp->top_k < V)
        for (int r = sp->top_k; r < V; r++) p[it[r].id] = 0;
    if (sp->top_p < 1.0f) {
        double total = 0, cum = 0;
        for (int i = 0; i < V; i++) total += p[i];
        int r = 0;
        for (; r < V && p[it[r].id] > 0; r++) {
            if (r > 0 && cum >= sp->top_p * total) break;
            cum += p[it[r].id];
        }
        for (; r < V; r++) p[it[r].id] = 0;
    }
    if (sp->min_p > 0)
        for (int i = 0; i < V; i++)
            if (p[i] < sp->min_p) p[i] = 0; /* max prob is exp(0) = 1 */
}

static int ref_sample(const struct sampling_params *sp, const int32_t *prompt, int np,
                      const int32_t *output, int no)
{
    float pen[V];
    ref_penalize(pen, logits_, sp, prompt, np, output, no);
    if (sp->temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (pen[i] > pen[best]) best = i;
        return best;
    }
    double p[V], total = 0, cum = 0;
    ref_probs(p, pen, sp);
    for (int i = 0; i < V; i++) total += p[i];
    double target = sampler_uniform(sp->seed, (uint64_t)no) * total;
    int last = -1;
    for (int i = 0; i < V; i++) {
        if (p[i] <= 0) continue;
        cum += p[i];
        last = i;
        if (cum > target) return i;
    }
    return last;
}

/* runs n_seeds seeded draws through both and counts disagreements */
static int compare_seeds(struct sampler_ws *w, struct sampling_params sp, const int32_t *prompt,
                         int np, const int32_t *output, int no, int n_seeds)
{
    int bad = 0;
    for (int s = 0; s < n_seeds; s++) {
        sp.seed = 1000 + (uint64_t)s;
        struct sampler_result r;
        int got = sampler_sample(w, logits_, &sp, prompt, np, output, no, &r);
        int want = ref_sample(&sp, prompt, np, output, no);
        if (got != want) {
            if (bad < 3) fprintf(stderr, "  seed %d: got %d want %d\n", s, got, want);
            bad++;
        }
    }
    return bad;
}

int main(void)
{
    struct sampler_ws w;
    sampler_ws_init(&w, V);
    make_logits(7);
    struct sampling_params g = sampler_params_greedy();
    struct sampler_result r;

    TEST("greedy is argmax, lowest id on ties") {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits_[i] > logits_[best]) best = i;
        CHECK_EQ(sampler_sample(&w, logits_, &g, NULL, 0, NULL, 0, &r), best);
        float tie[V];
        for (int i = 0; i < V; i++) tie[i] = 0.0f;
        tie[9] = tie[5] = tie[40] = 1.0f;
        CHECK_EQ(sampler_sample(&w, tie, &g, NULL, 0, NULL, 0, &r), 5);
    }

    TEST("temperature only matches the reference") {
        struct sampling_params sp = g;
        sp.temperature = 0.8f;
        CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 300), 0);
    }

    TEST("top-k matches the reference") {
        struct sampling_params sp = g;
        sp.temperature = 1.3f;
        int ks[] = {1, 2, 5, 17, 63};
        for (size_t i = 0; i < ARRAY_LEN(ks); i++) {
            sp.top_k = ks[i];
            CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 200), 0);
        }
        /* top-k = 1 is greedy whatever the temperature */
        sp.top_k = 1;
        sp.seed = 3;
        CHECK_EQ(sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r),
                 sampler_sample(&w, logits_, &g, NULL, 0, NULL, 0, &r));
    }

    TEST("top-p matches the reference") {
        struct sampling_params sp = g;
        sp.temperature = 1.0f;
        float ps[] = {0.05f, 0.3f, 0.5f, 0.9f, 0.99f};
        for (size_t i = 0; i < ARRAY_LEN(ps); i++) {
            sp.top_p = ps[i];
            CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 200), 0);
        }
        sp.top_k = 10;
        sp.top_p = 0.6f;
        CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 200), 0);
    }

    TEST("top-p on a 5000-token row samples only inside the nucleus") {
        enum { BIG = 5000 };
        static float big[BIG];
        static struct ref_item it[BIG];
        struct sampler_ws wb;
        sampler_ws_init(&wb, BIG);
        for (int i = 0; i < BIG; i++) big[i] = (float)(4.0 * sampler_uniform(77, (uint64_t)i));
        big[123] = big[4000] = 4.5f; /* a tie at the top */
        float mx = -INFINITY;
        for (int i = 0; i < BIG; i++) mx = big[i] > mx ? big[i] : mx;
        double total = 0;
        for (int i = 0; i < BIG; i++) {
            it[i] = (struct ref_item){expf(big[i] - mx), i};
            total += it[i].v;
        }
        qsort(it, BIG, sizeof it[0], cmp_ref);
        static bool in_nucleus[BIG];
        double cum = 0;
        int n_keep = 0;
        for (int k = 0; k < BIG && (k == 0 || cum < 0.3 * total); k++) {
            cum += it[k].v;
            in_nucleus[it[k].id] = true;
            n_keep++;
        }
        struct sampling_params sp = g;
        sp.temperature = 1.0f;
        sp.top_p = 0.3f;
        int outside = 0, distinct = 0;
        static bool seen[BIG];
        for (int s = 0; s < 400; s++) {
            sp.seed = (uint64_t)s;
            int t = sampler_sample(&wb, big, &sp, NULL, 0, NULL, 0, &r);
            outside += !in_nucleus[t];
            distinct += !seen[t];
            seen[t] = true;
        }
        CHECK_EQ(outside, 0);
        CHECK(distinct > n_keep / 4);
        sampler_ws_destroy(&wb);
    }

    TEST("min-p matches the reference") {
        struct sampling_params sp = g;
        sp.temperature = 1.0f;
        float mps[] = {0.01f, 0.1f, 0.5f, 0.95f};
        for (size_t i = 0; i < ARRAY_LEN(mps); i++) {
            sp.min_p = mps[i];
            CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 200), 0);
        }
        sp.top_k = 20;
        sp.top_p = 0.8f;
        sp.min_p = 0.2f;
        CHECK_EQ(compare_seeds(&w, sp, NULL, 0, NULL, 0, 200), 0);
    }

    int32_t prompt[] = {3, 3, 10, -200, 11, 12, 63, 64, 5};
    int32_t output[] = {10, 20, 20, 20, 21, 5, 999};
    int np = ARRAY_LEN(prompt), no = ARRAY_LEN(output);

    TEST("repetition penalty matches the reference") {
        struct sampling_params sp = g;
        sp.repetition_penalty = 1.7f;
        sp.temperature = 0.7f;
        CHECK_EQ(compare_seeds(&w, sp, prompt, np, output, no, 300), 0);
        /* greedy: make the best token a repeated one and check it loses */
        float lg[V];
        for (int i = 0; i < V; i++) lg[i] = 0.1f * (float)(i % 7);
        lg[12] = 2.0f; /* in the prompt */
        lg[13] = 1.5f;
        struct sampling_params gp = g;
        gp.repetition_penalty = 1.5f;
        CHECK_EQ(sampler_sample(&w, lg, &g, prompt, np, output, no, &r), 12);
        CHECK_EQ(sampler_sample(&w, lg, &gp, prompt, np, output, no, &r), 13);
        /* negative logits are multiplied: a repeated -1 becomes -1.5 */
        for (int i = 0; i < V; i++) lg[i] = -2.0f;
        lg[12] = -1.0f;
        lg[13] = -1.4f;
        CHECK_EQ(sampler_sample(&w, lg, &gp, prompt, np, output, no, &r), 13);
    }

    TEST("presence and frequency penalties match the reference") {
        struct sampling_params sp = g;
        sp.temperature = 1.0f;
        sp.presence_penalty = 0.8f;
        CHECK_EQ(compare_seeds(&w, sp, prompt, np, output, no, 300), 0);
        sp.presence_penalty = -0.5f;
        sp.frequency_penalty = 0.6f;
        CHECK_EQ(compare_seeds(&w, sp, prompt, np, output, no, 300), 0);
        sp.repetition_penalty = 1.2f;
        sp.top_k = 30;
        sp.top_p = 0.9f;
        sp.min_p = 0.05f;
        CHECK_EQ(compare_seeds(&w, sp, prompt, np, output, no, 300), 0);
        /* frequency: 20 appears three times in output and only 20 is penalized that much */
        float lg[V];
        for (int i = 0; i < V; i++) lg[i] = 0.0f;
        lg[20] = 2.0f;
        lg[21] = 1.5f;
        struct sampling_params fp = g;
        fp.frequency_penalty = 0.2f; /* 20: 2.0 - 3*0.2 = 1.4 beats 21: 1.5 - 0.2 = 1.3 */
        CHECK_EQ(sampler_sample(&w, lg, &fp, prompt, np, output, no, &r), 20);
        fp.frequency_penalty = 0.3f; /* 20: 1.1, 21: 1.2 */
        CHECK_EQ(sampler_sample(&w, lg, &fp, prompt, np, output, no, &r), 21);
        /* the count scratch is left clean: the same call twice gives the same answer */
        CHECK_EQ(sampler_sample(&w, lg, &fp, prompt, np, output, no, &r), 21);
        for (int i = 0; i < V; i++) CHECK_EQ(w.count[i], 0);
    }

    TEST("seeded sampling is reproducible across batch compositions") {
        /* the same request (logits row, params, n_out) sampled alone, then between other
         * rows in a different scratch, gives the same token; the seed matters */
        struct sampling_params sp = g;
        sp.temperature = 1.0f;
        sp.top_p = 0.95f;
        struct sampler_ws w2;
        sampler_ws_init(&w2, V);
        int differ = 0, distinct_mask = 0;
        for (uint64_t seed = 0; seed < 64; seed++) {
            sp.seed = seed;
            int alone = sampler_sample(&w, logits_, &sp, prompt, np, output, no, &r);
            float other[V];
            for (int i = 0; i < V; i++) other[i] = -logits_[i];
            struct sampling_params o = sp;
            o.seed = seed * 31 + 5;
            sampler_sample(&w2, other, &o, NULL, 0, NULL, 0, &r);
            int batched = sampler_sample(&w2, logits_, &sp, prompt, np, output, no, &r);
            sampler_sample(&w2, other, &o, output, no, prompt, np, &r);
            differ += alone != batched;
            distinct_mask |= 1 << (alone % 31);
        }
        CHECK_EQ(differ, 0);
        CHECK(__builtin_popcount((unsigned)distinct_mask) > 4); /* seeds do change the draw */
        /* n_out changes the draw too */
        int n_changed = 0;
        for (int n = 0; n < 32; n++) {
            sp.seed = 42;
            n_changed += sampler_uniform(42, (uint64_t)n) != sampler_uniform(42, (uint64_t)n + 1);
        }
        CHECK_EQ(n_changed, 32);
        sampler_ws_destroy(&w2);
    }

    TEST("empirical frequencies follow the distribution") {
        struct sampling_params sp = g;
        sp.temperature = 2.0f;
        sp.top_k = 4;
        float pen[V];
        double p[V], total = 0;
        ref_penalize(pen, logits_, &sp, NULL, 0, NULL, 0);
        ref_probs(p, pen, &sp);
        for (int i = 0; i < V; i++) total += p[i];
        int hits[V] = {0}, n = 20000;
        for (int s = 0; s < n; s++) {
            sp.seed = (uint64_t)s * 7919;
            hits[sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r)]++;
        }
        for (int i = 0; i < V; i++) CHECK_NEAR((double)hits[i] / n, p[i] / total, 0.015);
    }

    TEST("logprobs are a log-softmax of the raw logits and sum to one") {
        struct sampling_params sp = g;
        sp.logprobs = VLM_MAX_TOP_LOGPROBS;
        sp.temperature = 0.5f;
        sp.seed = 9;
        sp.repetition_penalty = 1.3f;
        float small[VLM_MAX_TOP_LOGPROBS];
        struct sampler_ws ws;
        sampler_ws_init(&ws, VLM_MAX_TOP_LOGPROBS);
        for (int i = 0; i < VLM_MAX_TOP_LOGPROBS; i++) small[i] = logits_[i] * 2.0f;
        int tok = sampler_sample(&ws, small, &sp, prompt, np, output, no, &r);
        CHECK_EQ(r.n_top, VLM_MAX_TOP_LOGPROBS);
        double sum = 0;
        bool found = false;
        for (int j = 0; j < r.n_top; j++) {
            sum += exp(r.top_lp[j]);
            if (j) CHECK(r.top_lp[j] <= r.top_lp[j - 1]);
            if (r.top_ids[j] == tok) {
                found = true;
                CHECK_NEAR(r.top_lp[j], r.logprob, 1e-6);
            }
        }
        CHECK(found);
        CHECK_NEAR(sum, 1.0, 1e-5);
        /* on the 64-token row: top 5, most likely first, and each equals logit - logsumexp */
        sp.logprobs = 5;
        sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r);
        double s = 0;
        for (int i = 0; i < V; i++) s += exp((double)logits_[i]);
        struct ref_item it[V];
        for (int i = 0; i < V; i++) it[i] = (struct ref_item){logits_[i], i};
        qsort(it, V, sizeof it[0], cmp_ref);
        CHECK_EQ(r.n_top, 5);
        for (int j = 0; j < 5; j++) {
            CHECK_EQ(r.top_ids[j], it[j].id);
            CHECK_NEAR(r.top_lp[j], (double)it[j].v - log(s), 1e-5);
        }
        double all = 0;
        for (int i = 0; i < V; i++) all += exp((double)logits_[i] - log(s));
        CHECK_NEAR(all, 1.0, 1e-9);
        sp.logprobs = 0; /* the chosen token's logprob only */
        int t0 = sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r);
        CHECK_EQ(r.n_top, 0);
        CHECK_NEAR(r.logprob, (double)logits_[t0] - log(s), 1e-5);
        sp.logprobs = -1;
        sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r);
        CHECK_EQ(r.n_top, 0);
        sampler_ws_destroy(&ws);
    }

    TEST("logit_bias moves the choice; logprobs stay those of the raw logits") {
        struct sampling_params sp = g;
        sp.logprobs = 0;
        int best = sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r);
        float raw = r.logprob;
        int32_t ids[2] = {best, 3 == best ? 4 : 3};
        float bias[2] = {-100.0f, 100.0f};
        sp.n_bias = 2;
        sp.bias_ids = ids;
        sp.bias = bias;
        CHECK_EQ(sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r), ids[1]);
        struct sampler_result r2;
        sampler_logprobs(logits_, V, ids[1], 0, &r2);
        CHECK_NEAR(r.logprob, r2.logprob, 1e-6); /* the raw one, not the biased */
        sp.temperature = 1.0f; /* sampled: +100 leaves no other candidate */
        for (uint64_t seed = 0; seed < 20; seed++) {
            sp.seed = seed;
            CHECK_EQ(sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r), ids[1]);
        }
        sp.n_bias = 0;
        sp.temperature = 0.0f;
        CHECK_EQ(sampler_sample(&w, logits_, &sp, NULL, 0, NULL, 0, &r), best);
        CHECK_NEAR(r.logprob, raw, 1e-9);
        /* a device summary cannot apply a bias: the caller is sent to the row */
        struct sample_summary p = {0};
        sp.n_bias = 2;
        CHECK_EQ(sampler_sample_summary(&p, V, &sp, 0, 0, &r), -1);
    }

    TEST("argmax: every instruction set == the scalar loop (ties, NaN, -0, tails)") {
        static const int32_t sizes[] = {1, 15, 63, 64, 65, 200, 151936};
        uint64_t st = 777;
        int bad = 0;
        for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
            int32_t n = sizes[z];
            float *l = malloc((size_t)n * sizeof *l);
            for (int kind = 0; kind < 6; kind++) {
                for (int32_t t = 0; t < n; t++) {
                    st = st * 6364136223846793005ull + 1442695040888963407ull;
                    l[t] = (float)(st >> 40) * 1e-3f;
                    if (kind == 1) l[t] = (float)((st >> 40) % 7); /* many ties */
                    if (kind == 2 && t % 13 == 0) l[t] = NAN;
                    if (kind == 3) l[t] = t == 0 ? NAN : l[t]; /* the loop keeps 0 */
                    if (kind == 4) l[t] = t % 2 ? -0.0f : 0.0f;
                    if (kind == 5) l[t] = -INFINITY;
                }
                if (kind == 0 && n > 3) l[n - 1] = 1e9f; /* the maximum in the tail */
                int32_t want = 0;
                for (int32_t t = 1; t < n; t++)
                    if (l[t] > l[want]) want = t;
                for (int isa = CPU_ISA_REF; isa <= (int)cpu_isa_best(); isa++)
                    bad += cpu_argmax(l, n, (enum cpu_isa)isa) != want;
            }
            free(l);
        }
        CHECK_EQ(bad, 0);
    }

    TEST("token masks: every instruction set == the bit-by-bit rule, any vocab size") {
        /* words of all ones, all zeros and random bits; NaN, infinities and -0.0 in the row
         * must come through bit for bit where allowed */
        static const int32_t sizes[] = {1, 31, 32, 33, 63, 1000, 151936};
        uint64_t st = 12345;
        for (int isa = CPU_ISA_REF; isa <= (int)cpu_isa_best(); isa++) {
            int bad = 0;
            for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
                int32_t n = sizes[z], nw = (n + 31) / 32;
                float *row = malloc((size_t)n * sizeof *row), *want = malloc((size_t)n * sizeof *want);
                uint32_t *mk = malloc((size_t)nw * sizeof *mk);
                for (int32_t t = 0; t < n; t++) {
                    st = st * 6364136223846793005ull + 1442695040888963407ull;
                    uint32_t u = (uint32_t)(st >> 33);
                    row[t] = t % 97 == 5 ? NAN : t % 89 == 3 ? INFINITY : t % 83 == 1 ? -0.0f
                                                                                 : (float)u * 1e-6f;
                }
                for (int32_t i = 0; i < nw; i++) {
                    st = st * 6364136223846793005ull + 1442695040888963407ull;
                    mk[i] = i % 5 == 0 ? 0xFFFFFFFFu : i % 5 == 1 ? 0u : (uint32_t)(st >> 32);
                }
                for (int32_t t = 0; t < n; t++)
                    want[t] = mk[t / 32] >> (t % 32) & 1 ? row[t] : -INFINITY;
                cpu_mask_row(row, mk, n, (enum cpu_isa)isa);
                bad += memcmp(row, want, (size_t)n * sizeof *row) != 0;
                free(row);
                free(want);
                free(mk);
            }
            if (bad) printf("  isa %s: %d sizes differ\n", cpu_isa_name((enum cpu_isa)isa), bad);
            CHECK_EQ(bad, 0);
        }
    }

    sampler_ws_destroy(&w);
    return test_report();
}
