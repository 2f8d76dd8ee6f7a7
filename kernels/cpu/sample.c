/* The sample_summary reference: one row per iteration, the loops of engine/sampler.c. */
#include "kernels/cpu.h"

#include <math.h>
#include <string.h>

/* a ranks before b: larger value, then lower id (sampler.c's order) */
static inline int ranks_before(float va, int32_t a, float vb, int32_t b)
{
    return va > vb || (va == vb && a < b);
}

static void summarize_row(struct sample_summary *p, const float *l, int32_t V, float inv_t,
                          double u)
{
    /* greedy: the first maximum */
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    p->argmax = best;

    /* raw log-sum-exp, as sampler.c's fill_logprobs */
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    p->max = mx;
    double s = 0.0;
    for (int32_t i = 0; i < V; i++) s += exp((double)l[i] - mx);
    p->lse = mx + log(s);

    /* the K + 1 best by insertion into a sorted list (few insertions on real rows): K
     * candidates and the bound on the rest */
    int32_t ids[SAMPLE_SUMMARY_K + 1];
    float vs[SAMPLE_SUMMARY_K + 1];
    int32_t K = V <= SAMPLE_SUMMARY_K ? V : SAMPLE_SUMMARY_K + 1, n = 0;
    for (int32_t i = 0; i < V; i++) {
        float v = l[i];
        if (n == K && !ranks_before(v, i, vs[n - 1], ids[n - 1])) continue;
        int32_t j = n < K ? n++ : n - 1;
        while (j > 0 && ranks_before(v, i, vs[j - 1], ids[j - 1])) {
            ids[j] = ids[j - 1];
            vs[j] = vs[j - 1];
            j--;
        }
        ids[j] = i;
        vs[j] = v;
    }
    p->n_top = K <= SAMPLE_SUMMARY_K ? K : SAMPLE_SUMMARY_K;
    memcpy(p->top_ids, ids, (size_t)p->n_top * sizeof *ids);
    memcpy(p->top_v, vs, (size_t)p->n_top * sizeof *vs);
    p->next_v = K > SAMPLE_SUMMARY_K ? vs[SAMPLE_SUMMARY_K] : -INFINITY;
    p->pad = 0;

    p->token = -1;
    p->token_logit = 0.0f;
    p->total = 0.0;
    p->n_alive = 0;
    if (!(inv_t > 0.0f)) return;
    /* the untruncated draw of sampler_sample: same float ops, same order */
    float wmx = -INFINITY;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t;
        wmx = w > wmx ? w : wmx;
    }
    double total = 0.0;
    int32_t alive = 0;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t, pr = expf(w - wmx);
        total += pr;
        alive += pr > 0.0f;
    }
    double target = u * total, cum = 0.0;
    int32_t tok = -1;
    for (int32_t i = 0; i < V; i++) {
        float w = l[i] * inv_t, pr = expf(w - wmx);
        if (pr <= 0.0f) continue;
        cum += pr;
        tok = i;
        if (cum > target) break;
    }
    p->total = total;
    p->n_alive = alive;
    p->token = tok;
    p->token_logit = tok >= 0 ? l[tok] : 0.0f;
}

void cpu_sample_summary(struct sample_summary *out, const float *logits, int64_t n_rows,
                        int64_t vocab, int64_t stride, const float *inv_t, const double *u)
{
#pragma omp parallel for if (n_rows > 1)
    for (int64_t r = 0; r < n_rows; r++)
        summarize_row(&out[r], logits + r * stride, (int32_t)vocab, inv_t[r], u[r]);
}
