/*
 * testmodel: the generator's output is byte-identical run to run (and, through the pinned
 * hash, machine to machine); the stamp skips identical rewrites and a changed parameter
 * rewrites the folder; the synthesized tokenizer is well-formed (unique vocab strings,
 * merges over known tokens, added tokens right after the vocab); the greeting model's
 * tokenizer gives the greeting one distinct id per piece (tests/api/test_default_model.py
 * checks the server's answer end to end).
 */
#include "engine/testmodel.h"
#include "server/tokenizer.h"
#include "test.h"
#include "tmpdir.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void small(struct testmodel_params *p)
{
    testmodel_defaults(p);
    p->seed = 11;
    p->hidden = 64, p->layers = 2, p->heads = 4, p->kv_heads = 1, p->head_dim = 16, p->ffn = 80;
    p->vit_depth = 1, p->vit_dim = 32, p->vit_heads = 2, p->merger_hidden = 40;
}

/* Hash of every file of dir (name and content) in name order; -1 if unreadable. */
static uint64_t dir_hash(const char *dir, int *n_files)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    uint64_t h = 0;
    *n_files = 0;
    if (n < 0) return (uint64_t)-1;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (nm[0] != '.' || !strcmp(nm, ".stamp")) {
            char path[600];
            size_t len;
            snprintf(path, sizeof path, "%s/%s", dir, nm);
            char *data = vlm_read_file(path, &len);
            h = vlm_hash64(nm, strlen(nm), h);
            h = data ? vlm_hash64(data, len, h) : h + 1;
            free(data);
            (*n_files)++;
        }
        free(names[i]);
    }
    free(names);
    return h;
}

static uint64_t file_hash(const char *path)
{
    size_t len;
    char *data = vlm_read_file(path, &len);
    uint64_t h = data ? vlm_hash64(data, len, 0) : 0;
    free(data);
    return h;
}

static void test_determinism(void)
{
    struct testmodel_params p;
    small(&p);
    struct vlm_err err = {0};
    TEST("two runs write byte-identical folders") {
        CHECK_EQ(testmodel_write(sub("a"), &p, &err), 0);
        CHECK_EQ(testmodel_write(sub("b"), &p, &err), 0);
        int na, nb;
        uint64_t ha = dir_hash(sub("a"), &na), hb = dir_hash(sub("b"), &nb);
        CHECK_EQ(na, 6); /* .stamp config generation model tokenizer tokenizer_config */
        CHECK_EQ(na, nb);
        CHECK(ha == hb);
        printf("  folder hash %016llx\n", (unsigned long long)ha);
    }
    TEST("pinned weights hash (same on every machine)") {
        /* If the generator changes on purpose, bump TESTMODEL_VERSION and update these. */
        uint64_t h = file_hash(sub("a/model.safetensors"));
        printf("  model.safetensors hash %016llx\n", (unsigned long long)h);
        CHECK_EQ(h, 0x5e6453970cc6502fULL);
        struct testmodel_params f = p;
        f.dtype = DT_F32;
        CHECK_EQ(testmodel_write(sub("f"), &f, &err), 0);
        h = file_hash(sub("f/model.safetensors"));
        printf("  f32 model.safetensors hash %016llx\n", (unsigned long long)h);
        CHECK_EQ(h, 0xea6705b70978eb2eULL);
        h = file_hash(sub("a/tokenizer.json"));
        printf("  tokenizer.json hash %016llx\n", (unsigned long long)h);
        CHECK_EQ(h, 0xf39ab8dd8a9438e8ULL);
    }
    TEST("another seed gives other weights, same config") {
        struct testmodel_params q = p;
        q.seed = 12;
        CHECK_EQ(testmodel_write(sub("c"), &q, &err), 0);
        CHECK(file_hash(sub("a/model.safetensors")) != file_hash(sub("c/model.safetensors")));
        CHECK(file_hash(sub("a/config.json")) == file_hash(sub("c/config.json")));
    }
}

static void test_stamp(void)
{
    struct testmodel_params p;
    small(&p);
    struct vlm_err err = {0};
    TEST("stamp: identical rewrite is skipped") {
        CHECK(testmodel_up_to_date(sub("a"), &p));
        struct stat before, after;
        stat(sub("a/model.safetensors"), &before);
        CHECK_EQ(testmodel_write(sub("a"), &p, &err), 0);
        stat(sub("a/model.safetensors"), &after);
        CHECK_EQ(before.st_ino, after.st_ino); /* the same file, not a replacement */
    }
    TEST("stamp: a changed parameter rewrites the folder") {
        struct testmodel_params q = p;
        q.layers = 3;
        CHECK(!testmodel_up_to_date(sub("a"), &q));
        CHECK_EQ(testmodel_write(sub("a"), &q, &err), 0);
        CHECK(testmodel_up_to_date(sub("a"), &q));
        CHECK(!testmodel_up_to_date(sub("a"), &p));
        size_t n;
        char *cfg = vlm_read_file(sub("a/config.json"), &n);
        CHECK(cfg && strstr(cfg, "\"num_hidden_layers\": 3"));
        free(cfg);
        /* no temporary or old folders are left beside it */
        DIR *d = opendir(tmpdir);
        struct dirent *e;
        int stray = 0;
        while (d && (e = readdir(d))) stray += strstr(e->d_name, ".tmp.") || strstr(e->d_name, ".old.");
        if (d) closedir(d);
        CHECK_EQ(stray, 0);
    }
    TEST("stamp: a folder without a stamp is rewritten") {
        unlink(sub("b/.stamp"));
        CHECK(!testmodel_up_to_date(sub("b"), &p));
        CHECK_EQ(testmodel_write(sub("b"), &p, &err), 0);
        CHECK(testmodel_up_to_date(sub("b"), &p));
    }
    TEST("bad parameters are refused") {
        static const struct { const char *what; int32_t kv, vit_heads, vocab; enum dtype dt; } bad[] = {
            {"kv heads", 3, 2, 0, DT_BF16}, {"vit heads", 1, 3, 0, DT_BF16},
            {"vocab too small", 1, 2, 100, DT_BF16}, {"dtype", 1, 2, 0, DT_I32},
        };
        for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
            struct testmodel_params q = p;
            q.kv_heads = bad[i].kv, q.vit_heads = bad[i].vit_heads, q.vocab = bad[i].vocab;
            q.dtype = bad[i].dt;
            struct vlm_err e = {0};
            CHECK_EQ(testmodel_write(sub("bad"), &q, &e), VLM_EINVAL);
            CHECK(e.msg[0] != 0);
        }
        CHECK(access(sub("bad"), F_OK) != 0);
    }
}

static void test_tokenizer(void)
{
    TEST("synthesized tokenizer is well-formed") {
        size_t n;
        char *text = vlm_read_file(sub("b/tokenizer.json"), &n);
        cJSON *root = text ? cJSON_ParseWithLength(text, n) : NULL;
        CHECK(root != NULL);
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
        const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
        const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
        int nv = cJSON_GetArraySize(vocab), nm = cJSON_GetArraySize(merges);
        printf("  %d vocab, %d merges, %d added\n", nv, nm, cJSON_GetArraySize(added));
        CHECK(nv > 400 && nm >= 200);
        CHECK_EQ(cJSON_GetArraySize(added), 26);
        /* ids are 0..nv-1, each once; strings unique (cJSON keeps duplicate keys) */
        char *seen = calloc((size_t)nv, 1);
        int bad_ids = 0, dups = 0;
        for (const cJSON *v = vocab ? vocab->child : NULL; v; v = v->next) {
            if (v->valueint < 0 || v->valueint >= nv || seen[v->valueint]++) bad_ids++;
            if (cJSON_GetObjectItemCaseSensitive(vocab, v->string) != v) dups++;
        }
        CHECK_EQ(bad_ids, 0);
        CHECK_EQ(dups, 0);
        free(seen);
        /* every merge joins two known tokens into a known token */
        int bad_merges = 0;
        for (const cJSON *m = merges ? merges->child : NULL; m; m = m->next) {
            const char *a = cJSON_GetArrayItem(m, 0)->valuestring, *b = cJSON_GetArrayItem(m, 1)->valuestring;
            char ab[256];
            snprintf(ab, sizeof ab, "%s%s", a, b);
            bad_merges += !cJSON_GetObjectItemCaseSensitive(vocab, a) ||
                          !cJSON_GetObjectItemCaseSensitive(vocab, b) ||
                          !cJSON_GetObjectItemCaseSensitive(vocab, ab);
        }
        CHECK_EQ(bad_merges, 0);
        const cJSON *first = cJSON_GetArrayItem(added, 0), *third = cJSON_GetArrayItem(added, 2);
        CHECK_EQ(cJSON_GetObjectItemCaseSensitive(first, "id")->valueint, nv);
        CHECK_STR(cJSON_GetObjectItemCaseSensitive(first, "content")->valuestring, "<|endoftext|>");
        CHECK_STR(cJSON_GetObjectItemCaseSensitive(third, "content")->valuestring, "<|im_end|>");
        /* byte tokens: id 0 is "!", space is "Ġ" */
        CHECK_EQ(cJSON_GetObjectItemCaseSensitive(vocab, "!")->valueint, 0);
        CHECK(cJSON_GetObjectItemCaseSensitive(vocab, "\xc4\xa0") != NULL);
        cJSON_Delete(root);
        free(text);
        int32_t nt = 0;
        struct vlm_err err = {0};
        CHECK_EQ(testmodel_write_tokenizer(sub("b"), &nt, &err), 0);
        CHECK_EQ(nt, nv + 26);
    }
}

/* The synthesized tokenizer through the project's tokenizer: ids as HF tokenizers 0.21
 * gives them (computed once with tokenizers.Tokenizer.from_file(...).encode(s).ids). */
static void test_tokenizer_ids(void)
{
    static const struct {
        const char *text;
        int32_t ids[48];
        int n;
    } cases[] = {
        {"Hello world, it's the valley server! 12345",
         {39, 68, 284, 78, 425, 75, 67, 11, 313, 6, 82, 259, 446, 395, 0, 220, 16, 17, 18, 19, 20}, 21},
        {"<|im_start|>user\nWhat is in this image?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
         {602, 84, 82, 263, 198, 54, 317, 287, 278, 449, 360, 30, 603, 198, 602, 299, 82, 366, 83,
          304, 83, 198, 625, 198, 198, 626, 198, 198}, 28},
        {"\xc3\x87" "a marche? \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd" " don't   stop\r\n\tTHE END",
         {127, 229, 64, 279, 326, 66, 257, 30, 220, 162, 245, 98, 162, 250, 105, 164, 103, 252, 220,
          172, 253, 239, 235, 172, 253, 237, 121, 311, 274, 6, 83, 339, 539, 201, 198, 197, 51, 39,
          36, 220, 36, 45, 35}, 43},
        {"The scheduler decides which requests run in each step.",
         {315, 262, 66, 376, 484, 263, 548, 470, 394, 553, 324, 278, 435, 340, 13}, 15},
    };
    TEST("synthesized tokenizer: ids match HF tokenizers, decode round-trips") {
        struct tokenizer *t = NULL;
        struct vlm_err err = {0};
        char path[600];
        snprintf(path, sizeof path, "%s/tokenizer.json", sub("b"));
        CHECK_EQ(tok_load(&t, path, &err), 0);
        if (err.msg[0]) fprintf(stderr, "  %s\n", err.msg);
        for (size_t i = 0; t && i < ARRAY_LEN(cases); i++) {
            struct i32_vec ids = {0};
            CHECK_EQ(tok_encode(t, cases[i].text, strlen(cases[i].text), &ids, &err), 0);
            CHECK_EQ(ids.n, cases[i].n);
            bool same = (int)ids.n == cases[i].n;
            for (size_t k = 0; same && k < ids.n; k++) same = ids.v[k] == cases[i].ids[k];
            CHECK(same);
            struct strbuf out = {0};
            tok_decode(t, ids.v, ids.n, false, &out);
            CHECK_STR(out.s, cases[i].text);
            sb_free(&out);
            i32_vec_free(&ids);
        }
        if (t) CHECK_EQ(tok_find(t, "<|im_end|>"), 603);
        tok_free(t);
    }
}

/* The release layout (synthesized tokenizer, so it needs no fixture) and the full preset's
 * parameters (its 19 GB are written only by hand: docs/PERF.md, "Real-geometry dry run"). */
static void test_release_layout(void)
{
    TEST("release layout: slow files, shards + index, eos <|endoftext|> only, no wrap key") {
        struct testmodel_params p;
        small(&p);
        p.release = p.slow_tokenizer = p.valley_tokens = true;
        p.shards = 3;
        struct vlm_err err = {0};
        CHECK_EQ(testmodel_write(sub("rel"), &p, &err), 0);
        CHECK(access(sub("rel/tokenizer.json"), F_OK) != 0);
        CHECK(access(sub("rel/vocab.json"), F_OK) == 0);
        CHECK(access(sub("rel/merges.txt"), F_OK) == 0);
        CHECK(access(sub("rel/model.safetensors.index.json"), F_OK) == 0);
        CHECK(access(sub("rel/model-00003-of-00003.safetensors"), F_OK) == 0);
        char *cj = vlm_read_file(sub("rel/config.json"), NULL);
        cJSON *c = cJSON_Parse(cj);
        free(cj);
        CHECK(c != NULL);
        CHECK(cJSON_GetObjectItem(c, "use_special_start_end_token") == NULL);
        const cJSON *eos = cJSON_GetObjectItem(c, "eos_token_id");
        const cJSON *bos = cJSON_GetObjectItem(c, "bos_token_id");
        CHECK(cJSON_IsNumber(eos) && cJSON_IsNumber(bos) && eos->valueint == bos->valueint);
        CHECK(cJSON_IsTrue(cJSON_GetObjectItem(c, "only_navit")));
        CHECK_EQ(cJSON_GetObjectItem(c, "navit_merger_hidden_dim")->valueint, 40);
        CHECK_STR(cJSON_GetArrayItem(cJSON_GetObjectItem(c, "architectures"), 0)->valuestring,
                  "ValleyQwen3ForCausalLM");
        /* a small tower is described; only the Qwen2-VL geometry goes without vision_config */
        CHECK(cJSON_GetObjectItem(c, "vision_config") != NULL);
        cJSON_Delete(c);
        char *gj = vlm_read_file(sub("rel/generation_config.json"), NULL);
        CHECK(gj && strstr(gj, "\"eos_token_id\": [") == NULL);
        free(gj);
    }
    TEST("preset valley2.5: the released geometry") {
        struct testmodel_params p;
        testmodel_preset_valley25(&p);
        CHECK_EQ(p.layers, 36);
        CHECK_EQ(p.hidden, 4096);
        CHECK_EQ(p.heads, 32);
        CHECK_EQ(p.kv_heads, 8);
        CHECK_EQ(p.head_dim, 128);
        CHECK_EQ(p.ffn, 12288);
        CHECK_EQ(p.vocab, 151679);
        CHECK(!p.tie && p.vision && p.release && p.slow_tokenizer && p.valley_tokens);
        CHECK_EQ(p.vit_depth, 32);
        CHECK_EQ(p.vit_dim, 1280);
        CHECK_EQ(p.vit_heads, 16);
        CHECK_EQ(p.vit_mlp_ratio, 4);
        CHECK_EQ(p.merger_hidden, 65536);
        CHECK_EQ(p.dtype, DT_BF16);
        CHECK(p.shards > 1);
    }
}

static void test_greeting(void)
{
    TEST("greeting: one distinct token per piece, the chain starts after both prompts") {
        struct testmodel_params p;
        small(&p);
        p.greeting = true;
        struct vlm_err err = {0};
        CHECK_EQ(testmodel_write(sub("g"), &p, &err), 0);
        CHECK(testmodel_up_to_date(sub("g"), &p));
        p.greeting = false;
        CHECK(!testmodel_up_to_date(sub("g"), &p)); /* the stamp tells them apart */
        struct tokenizer *t = NULL;
        char path[600];
        snprintf(path, sizeof path, "%s/tokenizer.json", sub("g"));
        CHECK_EQ(tok_load(&t, path, &err), 0);
        struct i32_vec ids = {0}, nl = {0};
        const char *g = TESTMODEL_GREETING;
        CHECK_EQ(t ? tok_encode(t, g, strlen(g), &ids, &err) : -1, 0);
        CHECK_EQ(ids.n, 32);
        bool distinct = true;
        for (size_t i = 0; i < ids.n; i++)
            for (size_t k = 0; k < i; k++) distinct &= ids.v[i] != ids.v[k];
        CHECK(distinct);
        struct strbuf out = {0};
        if (t) tok_decode(t, ids.v, ids.n, false, &out);
        CHECK_STR(out.s ? out.s : "", g);
        /* the generation prompts end in "\n" (thinking on) or "\n\n" (off): not in the reply */
        for (size_t i = 0; t && i < 2; i++) {
            nl.n = 0;
            CHECK_EQ(tok_encode(t, i ? "\n\n" : "\n", i + 1, &nl, &err), 0);
            for (size_t k = 0; nl.n && k < ids.n; k++) CHECK(ids.v[k] != nl.v[nl.n - 1]);
        }
        sb_free(&out);
        i32_vec_free(&ids);
        i32_vec_free(&nl);
        tok_free(t);
    }
}

int main(void)
{
    tmpdir_make("/tmp/vlm_test_tm_XXXXXX");
    test_release_layout();
    test_determinism();
    test_stamp();
    test_tokenizer();
    test_tokenizer_ids();
    test_greeting();
    tmpdir_remove();
    return test_report();
}
