/*
 * bench_chat: prompt construction cost on the chat goldens (tests/golden/chat), single
 * thread: chat_render alone, chat_render + chat_tokenize (the chunked tokenization of
 * docs/MODEL.md), and, for comparison, one plain tok_encode of each rendered text. Prints, asserts
 * nothing.
 *
 *   bench_chat [SECONDS]     run from the source root, or set VLM_SOURCE_DIR; the tokenizer
 *                          fixture is found as tests/fixtures.h says
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixtures.h"
#include "server/chat.h"

struct conv {
    struct chat_msg *msgs; /* owned; texts borrowed from the cJSON tree */
    int32_t n;
    struct chat_opts o;
    const char *rendered;
};

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    const char *src = getenv("VLM_SOURCE_DIR");
    char path[4096];
    struct tokenizer *tok;
    struct vlm_err err = {0};
    if (tok_load(&tok, fixtures_tokenizer_json(path, sizeof path), &err)) {
        fprintf(stderr, "bench_chat: %s\n", err.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/tests/golden/chat/conversations.json", src ? src : ".");
    size_t len;
    char *text = vlm_read_file(path, &len);
    cJSON *root = text ? cJSON_Parse(text) : NULL;
    if (!root) {
        fprintf(stderr, "bench_chat: cannot read %s\n", path);
        return 1;
    }
    struct conv *cv = xcalloc((size_t)cJSON_GetArraySize(root), sizeof *cv);
    int32_t nc = 0;
    size_t bytes = 0;
    const cJSON *rec;
    cJSON_ArrayForEach(rec, root) {
        const cJSON *r = cJSON_GetObjectItem(rec, "rendered");
        if (!cJSON_IsString(r)) continue;
        struct conv *c = &cv[nc++];
        const cJSON *jo = cJSON_GetObjectItem(rec, "opts"), *jm = cJSON_GetObjectItem(rec, "messages");
        const cJSON *ds = cJSON_GetObjectItem(jo, "default_system");
        c->o = (struct chat_opts){cJSON_IsTrue(cJSON_GetObjectItem(jo, "enable_thinking")),
                                  cJSON_IsString(ds) ? ds->valuestring : NULL,
                                  cJSON_IsTrue(cJSON_GetObjectItem(jo, "implicit_image")),
                                  cJSON_IsTrue(cJSON_GetObjectItem(jo, "wrap_image_tokens"))};
        c->n = cJSON_GetArraySize(jm);
        c->msgs = xcalloc((size_t)c->n, sizeof *c->msgs);
        for (int32_t i = 0; i < c->n; i++) {
            const cJSON *m = cJSON_GetArrayItem(jm, i), *t = cJSON_GetObjectItem(m, "text");
            const char *role = cJSON_GetObjectItem(m, "role")->valuestring;
            c->msgs[i] = (struct chat_msg){!strcmp(role, "system") ? CHAT_SYSTEM
                                           : !strcmp(role, "user") ? CHAT_USER : CHAT_ASSISTANT,
                                           cJSON_IsString(t) ? t->valuestring : NULL,
                                           cJSON_GetObjectItem(m, "n_images")->valueint};
        }
        c->rendered = r->valuestring;
        bytes += strlen(c->rendered);
    }
    printf("bench_chat: %d conversations, %zu rendered bytes\n", nc, bytes);
    static const char *const names[] = {"chat_render", "chat_render + chat_tokenize",
                                        "tok_encode(rendered) only"};
    for (int mode = 0; mode < 3; mode++) {
        uint64_t t0 = vlm_now_ns(), t;
        long rounds = 0;
        do {
            for (int32_t k = 0; k < nc; k++) {
                struct strbuf sb = {0};
                struct i32_vec ids = {0};
                int32_t n_img;
                if (mode < 2 && chat_render(cv[k].msgs, cv[k].n, &cv[k].o, &sb, &n_img, &err)) abort();
                if (mode == 1 && chat_tokenize(tok, sb.s, sb.n, &ids, &err)) abort();
                if (mode == 2 && tok_encode(tok, cv[k].rendered, strlen(cv[k].rendered), &ids, &err)) abort();
                sb_free(&sb);
                i32_vec_free(&ids);
            }
            rounds++;
            t = vlm_now_ns() - t0;
        } while (t < (uint64_t)(seconds * 1e9));
        double per = (double)t / 1e3 / (double)(rounds * nc);
        printf("  %-30s %8.2f us/prompt  %7.1f MB/s\n", names[mode], per,
               (double)bytes * (double)rounds / ((double)t / 1e9) / 1e6);
    }
    for (int32_t k = 0; k < nc; k++) free(cv[k].msgs);
    free(cv);
    cJSON_Delete(root);
    free(text);
    tok_free(tok);
    return 0;
}
