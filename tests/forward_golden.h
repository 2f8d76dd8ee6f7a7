/*
 * forward_golden.h: the decoder-parity checks shared by tests/model/test_forward.c (Valley2.5,
 * Qwen3) and tests/model/test_forward_valley2.c (Valley2, Qwen2.5): check_config(name) loads
 * the generated checkpoint <name>, compares the CPU engine with the goldens
 * tests/golden/text/<name>.{json,bin} (logits at every position within 1e-4 x max|logit|,
 * greedy 32 tokens identical, --numerics fast within FAST_BOUND) and returns the loaded
 * model's config for further checks. Include once per test program.
 */
#ifndef VLM_FORWARD_GOLDEN_H
#define VLM_FORWARD_GOLDEN_H

#include "engine/engine.h"
#include "engine/model.h"
#include "kernels/cpu.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

#define CHUNK 96
#define BS 16
#define N_BLOCKS 80 /* > (longest prompt + 32) / 16 + 1 */
#define FAST_BOUND 3e-2 /* max|d| / max|logit| per position: test_cuda_forward.c's BOUND */

static cJSON *load_json(const char *path)
{
    char *txt = vlm_read_file(path, NULL);
    if (!txt) return NULL;
    cJSON *j = cJSON_Parse(txt);
    free(txt);
    return j;
}

static int json_ints(const cJSON *arr, int32_t *out, int max)
{
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        if (n < max) out[n] = (int32_t)it->valuedouble;
        n++;
    }
    return n;
}

static double vmax_abs(const float *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static double logsumexp(const float *x, int64_t n)
{
    double m = -INFINITY, s = 0;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int64_t i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

static int32_t argmax(const float *x, int64_t n)
{
    int32_t b = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = (int32_t)i;
    return b;
}

struct stats {
    double worst_rel;  /* max over positions of max|engine - ref| / max|ref| */
    double worst_rebuild; /* the rebuild against HF's own top-8/lse */
    double worst_fast;    /* worst_rel of the --numerics fast engine */
    int positions, argmax_diff, argmax_diff_fast;
};

/* TEST() keeps the name pointer until the next TEST: each name gets its own slot */
static char *tname_next(void)
{
    static char names[64][160];
    static int i;
    return names[i++ % 64];
}

static void check_config(const char *name)
{
    char *tname;
    char path[4096];
    snprintf(path, sizeof path, "%s", test_path("VLM_SOURCE_DIR", "tests/golden/text/"));
    size_t plen = strlen(path);
    snprintf(path + plen, sizeof path - plen, "%s.json", name);
    cJSON *g = load_json(path);
    snprintf(path + plen, sizeof path - plen, "%s.bin", name);
    size_t hid_bytes = 0;
    float *hidden = (float *)vlm_read_file(path, &hid_bytes);
    struct model m = {0};
    struct vlm_err err = {0};
    int rc = model_load(&m, test_path("VLM_MODELS", name), &err);

    tname = tname_next();
    snprintf(tname, 160, "%s: goldens and checkpoint load", name);
    TEST(tname) {
        CHECK(g != NULL);
        CHECK(hidden != NULL);
        CHECK_EQ(rc, 0);
        if (rc) fprintf(stderr, "  model_load: %s\n", err.msg);
    }
    if (!g || !hidden || rc) {
        cJSON_Delete(g);
        free(hidden);
        model_destroy(&m);
        return;
    }
    int64_t H = m.cfg.hidden_size, V = m.cfg.vocab_size;

    tname = tname_next();
    snprintf(tname, 160, "%s: golden geometry matches the checkpoint", name);
    TEST(tname) {
        CHECK_EQ(cJSON_GetObjectItem(g, "hidden_size")->valueint, H);
        CHECK_EQ(cJSON_GetObjectItem(g, "vocab_size")->valueint, V);
        CHECK_EQ((int64_t)hid_bytes, (int64_t)cJSON_GetObjectItem(g, "hidden_rows")->valueint * H * 4);
    }

    struct engine_params ep = {
        .block_size = BS, .n_blocks = N_BLOCKS, .max_batched_tokens = CHUNK, .max_seqs = 4,
        .max_logit_rows = CHUNK,
    };
    struct engine e;
    rc = engine_init(&e, &m, &ep, &err);
    tname = tname_next();
    snprintf(tname, 160, "%s: engine_init", name);
    TEST(tname) {
        CHECK_EQ(rc, 0);
        if (rc) fprintf(stderr, "  engine_init: %s\n", err.msg);
    }
    if (rc) {
        cJSON_Delete(g);
        free(hidden);
        model_destroy(&m);
        return;
    }

    struct engine ef; /* the same checkpoint under --numerics fast */
    struct engine_params epf = ep;
    epf.bp.numerics = NUMERICS_FAST;
    VLM_ASSERT(engine_init(&ef, &m, &epf, &err) == 0);

    tname = tname_next();
    snprintf(tname, 160, "%s: weights used in place from the memory map (no copy)", name);
    TEST(tname) {
        for (int32_t l = 0; l < m.cfg.n_layers; l++) {
            CHECK(e.layers[l].wq.data == m.w.layers[l].wq.data);
            CHECK(e.layers[l].w_down.data == m.w.layers[l].w_down.data);
            CHECK(e.layers[l].w_down.type == m.w.layers[l].w_down.type);
        }
        CHECK(e.embed.data == m.w.embed.data && e.lm_head.data == m.w.lm_head.data);
    }

    /* the reference lm_head product: the checkpoint's lm_head widened to f32 */
    float *lm_head = xmalloc((size_t)V * (size_t)H * sizeof(float));
    for (int64_t i = 0; i < V * H; i++)
        lm_head[i] = e.lm_head.type == DT_F32    ? ((const float *)e.lm_head.data)[i]
                     : e.lm_head.type == DT_BF16 ? bf16_to_f32(((const uint16_t *)e.lm_head.data)[i])
                                                 : f16_to_f32(((const uint16_t *)e.lm_head.data)[i]);
    float *logits = xmalloc((size_t)CHUNK * (size_t)V * sizeof(float));
    float *logits_f = xmalloc((size_t)CHUNK * (size_t)V * sizeof(float));
    float *ref = xmalloc((size_t)CHUNK * (size_t)V * sizeof(float));
    int32_t blocks[N_BLOCKS];
    for (int i = 0; i < N_BLOCKS - 1; i++) blocks[i] = i + 1;
    int32_t rows[CHUNK];
    for (int i = 0; i < CHUNK; i++) rows[i] = i;

    const cJSON *pr;
    cJSON_ArrayForEach(pr, cJSON_GetObjectItem(g, "prompts")) {
        const char *pname = cJSON_GetObjectItem(pr, "name")->valuestring;
        int32_t ids[4096], want[64], row0 = cJSON_GetObjectItem(pr, "hidden_row0")->valueint;
        int n = json_ints(cJSON_GetObjectItem(pr, "ids"), ids, 4096);
        int n_gen = json_ints(cJSON_GetObjectItem(pr, "greedy"), want, 64);
        const cJSON *maxabs = cJSON_GetObjectItem(pr, "max_abs");
        const cJSON *lse = cJSON_GetObjectItem(pr, "lse");
        const cJSON *top_ids = cJSON_GetObjectItem(pr, "top_ids");
        const cJSON *top_lg = cJSON_GetObjectItem(pr, "top_logits");
        const cJSON *hf_argmax = cJSON_GetObjectItem(pr, "argmax");
        struct stats st = {0};
        int32_t gen[64];

        /* prefill in chunks, logits of every position */
        for (int p0 = 0; p0 < n; p0 += CHUNK) {
            int c = VLM_MIN(CHUNK, n - p0);
            struct batch_seq s = {.pos = p0, .n_tokens = c, .tokens = ids + p0, .blocks = blocks,
                                  .n_blocks = N_BLOCKS - 1};
            struct batch b = {.seqs = &s, .n_seqs = 1};
            VLM_ASSERT(engine_forward_rows(&e, &b, rows, c, logits) == 0);
            VLM_ASSERT(engine_forward_rows(&ef, &b, rows, c, logits_f) == 0);
            cpu_matmul(ref, hidden + (size_t)(row0 + p0) * H, lm_head, NULL, c, V, H, 2);
            for (int i = 0; i < c; i++) {
                const float *lg = logits + (size_t)i * V, *rf = ref + (size_t)i * V;
                const float *lf = logits_f + (size_t)i * V;
                int pos = p0 + i;
                double mx = cJSON_GetArrayItem(maxabs, pos)->valuedouble, d = 0, df = 0;
                for (int64_t v = 0; v < V; v++) {
                    d = fmax(d, fabs((double)lg[v] - rf[v]));
                    df = fmax(df, isfinite(lf[v]) ? fabs((double)lf[v] - rf[v]) : INFINITY);
                }
                st.worst_rel = fmax(st.worst_rel, d / mx);
                st.worst_fast = fmax(st.worst_fast, df / mx);
                st.argmax_diff_fast += argmax(lf, V) != cJSON_GetArrayItem(hf_argmax, pos)->valueint;
                /* rebuild check: HF's own max|logit|, lse and top-8 values */
                double rb = fabs(vmax_abs(rf, V) - mx);
                rb = fmax(rb, fabs(logsumexp(rf, V) - cJSON_GetArrayItem(lse, pos)->valuedouble));
                const cJSON *ti = cJSON_GetArrayItem(top_ids, pos), *tl = cJSON_GetArrayItem(top_lg, pos);
                for (int k = 0; k < cJSON_GetArraySize(ti); k++) {
                    int32_t id = cJSON_GetArrayItem(ti, k)->valueint;
                    rb = fmax(rb, fabs(rf[id] - cJSON_GetArrayItem(tl, k)->valuedouble));
                }
                st.worst_rebuild = fmax(st.worst_rebuild, rb / mx);
                st.argmax_diff += argmax(lg, V) != cJSON_GetArrayItem(hf_argmax, pos)->valueint;
                st.positions++;
            }
        }
        /* greedy: the first token from the last prefill row, then decode one at a time */
        gen[0] = argmax(logits + (size_t)((n - 1) % CHUNK) * V, V);
        struct sampling_params sp = sampler_params_greedy();
        uint64_t hash = 0;
        for (int k = 1; k < n_gen; k++) {
            struct batch_seq s = {.pos = n + k - 1, .n_tokens = 1, .tokens = &gen[k - 1],
                                  .blocks = blocks, .n_blocks = N_BLOCKS - 1, .sp = &sp,
                                  .prompt = ids, .n_prompt = n, .output = gen, .n_out = k};
            struct batch b = {.seqs = &s, .n_seqs = 1};
            struct batch_out out;
            VLM_ASSERT(engine_execute(&e, &b, &out) == 0 && out.n == 1);
            gen[k] = out.token[0];
            if (k == n_gen - 1)
                hash = vlm_hash64(e.h_logits, (size_t)V * sizeof(float), 0);
        }
        int same = 0;
        for (int k = 0; k < n_gen; k++) same += gen[k] == want[k];

        tname = tname_next();
        snprintf(tname, 160, "%s/%s (%d tokens): logits within 1e-4 x max|logit|", name,
                 pname, n);
        TEST(tname) {
            CHECK(st.worst_rel <= 1e-4);
            CHECK(st.worst_rebuild <= 1e-5);
            CHECK_EQ(st.positions, n);
        }
        tname = tname_next();
        snprintf(tname, 160, "%s/%s: fast numerics: logits within %.0e x max|logit|", name,
                 pname, FAST_BOUND);
        TEST(tname) {
            CHECK(st.worst_fast <= FAST_BOUND);
        }
        const cJSON *native = cJSON_GetObjectItem(pr, "native_rel");
        if (native) { /* the reference run in the checkpoint's own 16-bit dtype */
            tname = tname_next();
            snprintf(tname, 160, "%s/%s: the reference in %s is within %.0e x max|logit| too", name,
                     pname, cJSON_GetObjectItem(g, "stored_dtype")->valuestring, FAST_BOUND);
            TEST(tname) {
                CHECK(native->valuedouble <= FAST_BOUND);
            }
            printf("# %s/%s: reference in %s vs f32: %.3g; engine fast numerics vs f32: %.3g\n",
                   name, pname, cJSON_GetObjectItem(g, "stored_dtype")->valuestring,
                   native->valuedouble, st.worst_fast);
        }
        tname = tname_next();
        snprintf(tname, 160, "%s/%s: greedy %d tokens identical", name, pname, n_gen);
        TEST(tname) {
            CHECK_EQ(n_gen, 32);
            CHECK_EQ(same, n_gen);
        }
        printf("# %s/%s: %d positions, worst |d|/max %.3g, rebuild %.3g, argmax diffs %d, "
               "greedy %d/%d, final logits #%016llx; fast: worst |d|/max %.3g, argmax diffs "
               "%d\n",
               name, pname, n, st.worst_rel, st.worst_rebuild, st.argmax_diff, same, n_gen,
               (unsigned long long)hash, st.worst_fast, st.argmax_diff_fast);
    }

    tname = tname_next();
    snprintf(tname, 160, "%s: a config that does not match the tensors is refused", name);
    TEST(tname) {
        struct model bad = m;
        struct engine e2;
        bad.cfg.intermediate_size += 2;
        CHECK_EQ(engine_init(&e2, &bad, &ep, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "layer 0") != NULL);
        bad = m;
        bad.cfg.n_kv_heads = bad.cfg.n_heads + 1;
        CHECK_EQ(engine_init(&e2, &bad, &ep, &err), VLM_EINVAL);
        bad = m;
        bad.cfg.vocab_size -= 1;
        CHECK_EQ(engine_init(&e2, &bad, &ep, &err), VLM_EINVAL);
        CHECK(strstr(err.msg, "vocab") != NULL);
    }

    free(logits);
    free(logits_f);
    free(ref);
    free(lm_head);
    engine_destroy(&ef);
    engine_destroy(&e);
    model_destroy(&m);
    cJSON_Delete(g);
    free(hidden);
}

#endif
