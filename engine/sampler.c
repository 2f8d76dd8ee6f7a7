/*
 * Sampling: logits row -> token. See sampler.h for the order of processing and the logprob
 * convention. Everything here is O(vocab) per call except top-k (a quickselect) and top-p
 * (a sort of the tokens that can possibly be in the nucleus).
 */
#include "engine/sampler.h"

#include "kernels/cpu.h"

#include <math.h>
#include <stdlib.h>

/* ==== Scratch ==== */

void sampler_ws_init(struct sampler_ws *w, int32_t vocab)
{
    VLM_ASSERT(vocab > 0);
    w->vocab = vocab;
    w->work = xmalloc((size_t)vocab * sizeof *w->work);
    w->prob = xmalloc((size_t)vocab * sizeof *w->prob);
    w->cand = xmalloc((size_t)vocab * sizeof *w->cand);
    w->count = xcalloc((size_t)vocab, sizeof *w->count);
}

void sampler_ws_destroy(struct sampler_ws *w)
{
    if (!w) return;
    free(w->work);
    free(w->prob);
    free(w->cand);
    free(w->count);
    memset(w, 0, sizeof *w);
}

void sampler_apply_mask(float *row, const uint32_t *mask, int32_t vocab)
{
    cpu_mask_row(row, mask, vocab, cpu_isa_best());
}

struct sampling_params sampler_params_greedy(void)
{
    return (struct sampling_params){
        .temperature = 0.0f,
        .top_k = 0,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repetition_penalty = 1.0f,
        .presence_penalty = 0.0f,
        .frequency_penalty = 0.0f,
        .seed = 0,
        .logprobs = -1,
    };
}

/* ==== Random draw ====
 * splitmix64 (vlm_mix64) over a key made of the seed and the step counter: a counter-based
 * generator, so step n of a request needs no state from steps < n. */

double sampler_uniform(uint64_t seed, uint64_t n_out)
{
    uint64_t x = vlm_mix64(vlm_mix64(seed) ^ (n_out * 0xd1b54a32d192ed03ull + 1));
    return (double)(x >> 11) * (1.0 / 9007199254740992.0); /* 53 bits -> [0, 1) */
}

/* ==== Penalties ==== */

static void apply_penalties(struct sampler_ws *w, const struct sampling_params *sp,
                            const int32_t *prompt, int32_t n_prompt, const int32_t *output,
                            int32_t n_out)
{
    int32_t V = w->vocab;
    int32_t *cnt = w->count; /* all zero on entry and on exit */

    if (sp->repetition_penalty != 1.0f && sp->repetition_penalty > 0.0f) {
        float rp = sp->repetition_penalty;
        /* each distinct id once: count[] doubles as the "done" mark, then is cleared */
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *ids = pass ? output : prompt;
            int32_t n = pass ? n_out : n_prompt;
            for (int32_t i = 0; i < n; i++) {
                int32_t id = ids[i];
                if (id < 0 || id >= V || cnt[id]) continue;
                cnt[id] = 1;
                w->work[id] = w->work[id] > 0.0f ? w->work[id] / rp : w->work[id] * rp;
            }
        }
        for (int32_t i = 0; i < n_prompt; i++)
            if (prompt[i] >= 0 && prompt[i] < V) cnt[prompt[i]] = 0;
        for (int32_t i = 0; i < n_out; i++)
            if (output[i] >= 0 && output[i] < V) cnt[output[i]] = 0;
    }
    if (sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f) {
        for (int32_t i = 0; i < n_out; i++)
            if (output[i] >= 0 && output[i] < V) cnt[output[i]]++;
        for (int32_t i = 0; i < n_out; i++) {
            int32_t id = output[i];
            if (id < 0 || id >= V || !cnt[id]) continue;
            w->work[id] -= sp->presence_penalty + sp->frequency_penalty * (float)cnt[id];
            cnt[id] = 0;
        }
    }
}

/* ==== Truncation ==== */

/* a ranks before b: larger value, then lower id */
static inline bool ranks_before(float va, int32_t a, float vb, int32_t b)
{
    return va > vb || (va == vb && a < b);
}

/* Reorders cand[0..n) so that cand[k-1] is the k-th element in rank order under key[] and
 * everything before it ranks before it (Hoare quickselect, middle pivot). */
static void select_kth(int32_t *cand, int32_t n, int32_t k, const float *key)
{
    int32_t lo = 0, hi = n - 1, target = k - 1;
    while (lo < hi) {
        int32_t p = cand[lo + (hi - lo) / 2];
        float pv = key[p];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (ranks_before(key[cand[i]], cand[i], pv, p)) i++;
            while (ranks_before(pv, p, key[cand[j]], cand[j])) j--;
            if (i <= j) {
                int32_t t = cand[i];
                cand[i] = cand[j];
                cand[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
}

/* Sorts cand[0..n) into rank order under key[] in place: heapsort, so the step path does
 * not allocate (glibc's qsort may malloc a merge buffer). */
static void sift_down(int32_t *cand, int32_t root, int32_t n, const float *key)
{
    for (;;) {
        int32_t child = 2 * root + 1;
        if (child >= n) return;
        /* a min-heap in rank order: the worst-ranked element at the root */
        if (child + 1 < n && ranks_before(key[cand[child]], cand[child], key[cand[child + 1]], cand[child + 1]))
            child++;
        if (!ranks_before(key[cand[root]], cand[root], key[cand[child]], cand[child])) return;
        int32_t t = cand[root];
        cand[root] = cand[child];
        cand[child] = t;
        root = child;
    }
}

static void sort_rank(int32_t *cand, int32_t n, const float *key)
{
    for (int32_t i = n / 2 - 1; i >= 0; i--) sift_down(cand, i, n, key);
    for (int32_t end = n - 1; end > 0; end--) {
        int32_t t = cand[0];
        cand[0] = cand[end];
        cand[end] = t;
        sift_down(cand, 0, end, key);
    }
}

/* Keeps the k best-ranked tokens of work[] (prob[] of the others set to 0). */
static void apply_top_k(struct sampler_ws *w, int32_t k)
{
    int32_t V = w->vocab;
    for (int32_t i = 0; i < V; i++) w->cand[i] = i;
    select_kth(w->cand, V, k, w->work);
    int32_t kid = w->cand[k - 1];
    float kv = w->work[kid];
    for (int32_t i = 0; i < V; i++)
        if (ranks_before(kv, kid, w->work[i], i)) w->prob[i] = 0.0f;
}

/* Keeps the smallest set of the most likely tokens whose mass reaches top_p. A token whose
 * probability is below (1 - top_p) / n_alive can never be in that set (if it were, every
 * token outside the set would be at most as likely and their mass would exceed 1 - top_p),
 * so only the others are sorted. */
static void apply_top_p(struct sampler_ws *w, float top_p)
{
    int32_t V = w->vocab, n_alive = 0, n = 0;
    double total = 0.0;
    for (int32_t i = 0; i < V; i++) {
        total += w->prob[i];
        n_alive += w->prob[i] > 0.0f;
    }
    double floor_p = (1.0 - (double)top_p) / (double)n_alive * total;
    for (int32_t i = 0; i < V; i++) {
        if (w->prob[i] <= 0.0f) continue;
        if ((double)w->prob[i] < floor_p) w->prob[i] = 0.0f;
        else w->cand[n++] = i;
    }
    sort_rank(w->cand, n, w->prob);
    double cum = 0.0, want = (double)top_p * total;
    int32_t keep = 0;
    while (keep < n && (keep == 0 || cum < want)) cum += w->prob[w->cand[keep++]];
    for (int32_t j = keep; j < n; j++) w->prob[w->cand[j]] = 0.0f;
}

/* ==== Logprobs ==== */

static void fill_logprobs(const float *logits, int32_t V, int32_t n_top, struct sampler_result *r)
{
    if (n_top < 0) { /* not requested: skip the softmax over the whole vocabulary */
        r->logprob = 0.0f;
        r->n_top = 0;
        return;
    }
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double s = 0.0;
    for (int32_t i = 0; i < V; i++) s += exp((double)logits[i] - mx);
    double lse = mx + log(s);
    r->logprob = (float)((double)logits[r->token] - lse);
    if (n_top > V) n_top = V; /* a vocabulary smaller than the list asked for */
    r->n_top = n_top;
    if (n_top <= 0) {
        r->n_top = 0;
        return;
    }
    /* insertion into a sorted list of n_top: fine for n_top <= 20 */
    int32_t n = 0;
    for (int32_t i = 0; i < V; i++) {
        float v = logits[i];
        if (n == n_top && !ranks_before(v, i, logits[r->top_ids[n - 1]], r->top_ids[n - 1]))
            continue;
        int32_t j = n < n_top ? n++ : n - 1;
        while (j > 0 && ranks_before(v, i, logits[r->top_ids[j - 1]], r->top_ids[j - 1])) {
            r->top_ids[j] = r->top_ids[j - 1];
            j--;
        }
        r->top_ids[j] = i;
    }
    for (int32_t j = 0; j < n; j++) r->top_lp[j] = (float)((double)logits[r->top_ids[j]] - lse);
}

void sampler_logprobs(const float *logits, int32_t vocab, int32_t token, int32_t n_top,
                      struct sampler_result *r)
{
    r->token = token;
    fill_logprobs(logits, vocab, n_top < 0 ? 0 : n_top, r);
}

/* ==== Sampling ==== */

int32_t sampler_sample(struct sampler_ws *w, const float *logits, const struct sampling_params *sp,
                       const int32_t *prompt, int32_t n_prompt, const int32_t *output,
                       int32_t n_out, struct sampler_result *r)
{
    int32_t V = w->vocab;
    memcpy(w->work, logits, (size_t)V * sizeof *w->work);
    for (int32_t i = 0; i < sp->n_bias; i++)
        if (sp->bias_ids[i] >= 0 && sp->bias_ids[i] < V) w->work[sp->bias_ids[i]] += sp->bias[i];
    apply_penalties(w, sp, prompt, n_prompt, output, n_out);

    int32_t tok = 0;
    if (!(sp->temperature > 1e-5f)) {
        /* greedy: argmax, lowest id on ties */
        tok = cpu_argmax(w->work, V, cpu_isa_best());
    } else {
        float inv_t = 1.0f / sp->temperature, mx = -INFINITY;
        for (int32_t i = 0; i < V; i++) {
            w->work[i] *= inv_t;
            mx = w->work[i] > mx ? w->work[i] : mx;
        }
        for (int32_t i = 0; i < V; i++) w->prob[i] = expf(w->work[i] - mx);
        if (sp->top_k > 0 && sp->top_k < V) apply_top_k(w, sp->top_k);
        if (sp->top_p > 0.0f && sp->top_p < 1.0f) apply_top_p(w, sp->top_p);
        if (sp->min_p > 0.0f) {
            /* the most likely token has prob 1 here and always survives top-k/top-p */
            for (int32_t i = 0; i < V; i++)
                if (w->prob[i] < sp->min_p) w->prob[i] = 0.0f;
        }
        double total = 0.0;
        for (int32_t i = 0; i < V; i++) total += w->prob[i];
        double target = sampler_uniform(sp->seed, (uint64_t)n_out) * total, cum = 0.0;
        tok = -1;
        for (int32_t i = 0; i < V; i++) {
            if (w->prob[i] <= 0.0f) continue;
            cum += w->prob[i];
            tok = i;
            if (cum > target) break;
        }
        VLM_ASSERT(tok >= 0);
    }
    r->token = tok;
    fill_logprobs(logits, V, sp->logprobs, r);
    return tok;
}

/* ==== Finishing from a device summary ====
 * sampler_sample_summary replays sampler_sample's float ops on the SAMPLE_SUMMARY_K candidates
 * (the best raw logits, rank order) instead of the row. Every token outside them has a raw
 * logit <= p->next_v, hence (scaling and expf are monotone) a scaled value and a
 * probability <= those of next_v, and ranks after every candidate strictly above them. So a
 * truncation whose kept set ends strictly above that bound is decided by the candidates
 * alone; one that ends at or below it could take in an outside token (a tie, or mass still
 * missing), and the caller samples from the full row instead. */

_Static_assert(SAMPLE_SUMMARY_K >= VLM_MAX_TOP_LOGPROBS, "the candidates must cover the top-N");

struct summary_cand {
    int32_t id;
    float work; /* raw * inv_t */
    float prob; /* expf(work - mx) */
    bool kept;
};

enum summary_key { SUMMARY_BY_WORK, SUMMARY_BY_PROB, SUMMARY_BY_ID };

static bool summary_before(const struct summary_cand *a, const struct summary_cand *b,
                           enum summary_key k)
{
    switch (k) {
    case SUMMARY_BY_WORK: return ranks_before(a->work, a->id, b->work, b->id);
    case SUMMARY_BY_PROB: return ranks_before(a->prob, a->id, b->prob, b->id);
    case SUMMARY_BY_ID: return a->id < b->id;
    }
    return false;
}

/* Insertion sort of the indices ord[0..n) into c[] (n <= SAMPLE_SUMMARY_K). */
static void summary_sort(int32_t *ord, int32_t n, const struct summary_cand *c, enum summary_key k)
{
    for (int32_t i = 1; i < n; i++) {
        int32_t x = ord[i], j = i;
        while (j > 0 && summary_before(&c[x], &c[ord[j - 1]], k)) {
            ord[j] = ord[j - 1];
            j--;
        }
        ord[j] = x;
    }
}

/* Sum of the kept probabilities in id order (sampler.c sums the whole row in index order;
 * the zeros in between add nothing) and the count of positive ones. */
static double summary_kept_mass(const struct summary_cand *c, const int32_t *by_id, int32_t n,
                             int32_t *alive)
{
    double total = 0.0;
    *alive = 0;
    for (int32_t j = 0; j < n; j++) {
        const struct summary_cand *x = &c[by_id[j]];
        if (!x->kept) continue;
        total += x->prob;
        *alive += x->prob > 0.0f;
    }
    return total;
}

/* top-k / top-p / min-p on the candidates, then the draw. Returns the index into p->top_*
 * of the token, or -1 (the full row is needed). */
static int32_t summary_truncated(const struct sample_summary *p, int32_t vocab,
                              const struct sampling_params *sp, int32_t n_out)
{
    int32_t K = p->n_top;
    bool complete = K == vocab; /* every token is a candidate */
    float inv_t = 1.0f / sp->temperature;
    float mx = p->max * inv_t; /* == max of l * inv_t: rounding is monotone */
    struct summary_cand c[SAMPLE_SUMMARY_K];
    int32_t ord[SAMPLE_SUMMARY_K], by_id[SAMPLE_SUMMARY_K];
    VLM_ASSERT(K > 0 && K <= SAMPLE_SUMMARY_K);
    for (int32_t j = 0; j < K; j++) {
        float w = p->top_v[j] * inv_t;
        c[j] = (struct summary_cand){.id = p->top_ids[j], .work = w, .prob = expf(w - mx),
                                  .kept = true};
        by_id[j] = j;
    }
    summary_sort(by_id, K, c, SUMMARY_BY_ID);
    float work_out = p->next_v * inv_t, prob_out = expf(work_out - mx); /* outside bound */
    bool inside = complete; /* the kept set is known to lie among the candidates */

    if (sp->top_k > 0 && sp->top_k < vocab) {
        int32_t k = sp->top_k;
        if (k > K) return -1;
        for (int32_t j = 0; j < K; j++) ord[j] = j;
        summary_sort(ord, K, c, SUMMARY_BY_WORK);
        if (!complete && !(c[ord[k - 1]].work > work_out)) return -1;
        for (int32_t j = k; j < K; j++) c[ord[j]].kept = false;
        inside = true;
    }
    if (sp->top_p > 0.0f && sp->top_p < 1.0f) {
        /* apply_top_p: its mass and alive count over what top-k left, the whole row otherwise */
        int32_t alive;
        double total = summary_kept_mass(c, by_id, K, &alive);
        if (!inside) {
            if (p->token < 0) return -1; /* no full-row statistics: inv_t was 0 */
            total = p->total;
            alive = p->n_alive;
        }
        double floor_p = (1.0 - (double)sp->top_p) / (double)alive * total;
        int32_t n = 0;
        for (int32_t j = 0; j < K; j++) {
            if (!c[j].kept || c[j].prob <= 0.0f) continue;
            if ((double)c[j].prob < floor_p) c[j].kept = false;
            else ord[n++] = j;
        }
        if (n == 0) return -1; /* cannot happen (the best token has prob 1); be safe */
        summary_sort(ord, n, c, SUMMARY_BY_PROB);
        double cum = 0.0, want = (double)sp->top_p * total;
        int32_t keep = 0;
        while (keep < n && (keep == 0 || cum < want)) cum += c[ord[keep++]].prob;
        /* the kept prefix must rank before every outside token, and when the candidates ran
         * out short of the mass, no outside token may be next in line */
        if (!inside && !(c[ord[keep - 1]].prob > prob_out)) return -1;
        if (!inside && keep == n && cum < want && prob_out > 0.0f && !((double)prob_out < floor_p))
            return -1;
        for (int32_t j = keep; j < n; j++) c[ord[j]].kept = false;
        inside = true;
    }
    if (sp->min_p > 0.0f) {
        if (!inside && !(prob_out < sp->min_p)) return -1;
        for (int32_t j = 0; j < K; j++)
            if (c[j].prob < sp->min_p) c[j].kept = false;
    }

    int32_t alive;
    double total = summary_kept_mass(c, by_id, K, &alive);
    double target = sampler_uniform(sp->seed, (uint64_t)n_out) * total, cum = 0.0;
    int32_t tok = -1;
    for (int32_t j = 0; j < K; j++) {
        const struct summary_cand *x = &c[by_id[j]];
        if (!x->kept || x->prob <= 0.0f) continue;
        cum += x->prob;
        tok = by_id[j];
        if (cum > target) break;
    }
    return tok;
}

int32_t sampler_sample_summary(const struct sample_summary *p, int32_t vocab,
                               const struct sampling_params *sp, int32_t n_prompt, int32_t n_out,
                               struct sampler_result *r)
{
    bool rep = sp->repetition_penalty != 1.0f && sp->repetition_penalty > 0.0f &&
               n_prompt + n_out > 0;
    bool pres = (sp->presence_penalty != 0.0f || sp->frequency_penalty != 0.0f) && n_out > 0;
    if (rep || pres || sp->n_bias > 0) return -1;

    int32_t tok;
    float tok_logit;
    if (!(sp->temperature > 1e-5f)) {
        tok = p->argmax;
        tok_logit = p->max;
    } else if ((sp->top_k > 0 && sp->top_k < vocab) || (sp->top_p > 0.0f && sp->top_p < 1.0f) ||
               sp->min_p > 0.0f) {
        int32_t j = summary_truncated(p, vocab, sp, n_out);
        if (j < 0) return -1;
        tok = p->top_ids[j];
        tok_logit = p->top_v[j];
    } else {
        VLM_ASSERT(p->token >= 0); /* sample_summary drew it: inv_t was > 0 */
        tok = p->token;
        tok_logit = p->token_logit;
    }
    r->token = tok;

    /* fill_logprobs from the raw log-sum-exp and the candidates (rank order = top-N order) */
    int32_t n_top = sp->logprobs;
    if (n_top < 0) {
        r->logprob = 0.0f;
        r->n_top = 0;
        return tok;
    }
    r->logprob = (float)((double)tok_logit - p->lse);
    if (n_top > vocab) n_top = vocab;
    VLM_ASSERT(n_top <= p->n_top);
    r->n_top = n_top;
    for (int32_t j = 0; j < n_top; j++) {
        r->top_ids[j] = p->top_ids[j];
        r->top_lp[j] = (float)((double)p->top_v[j] - p->lse);
    }
    return tok;
}
