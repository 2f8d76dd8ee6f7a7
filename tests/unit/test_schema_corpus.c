/*
 * test_schema_corpus: every schema of tests/schemas/corpus.json compiles, and its grammar
 * accepts exactly the instances that Python's jsonschema validates (the verdicts in the
 * file, made by tests/golden/make_schema_corpus.py). Each instance is fed byte by byte; it
 * is accepted when every byte is and the grammar may end after the last.
 */
#include <cjson/cJSON.h>
#include <string.h>

#include "engine/base.h"
#include "engine/grammar.h"
#include "server/structured.h"
#include "test.h"

int main(void)
{
    size_t len;
    char *text = vlm_read_file(test_path("VLM_SOURCE_DIR", "tests/schemas/corpus.json"), &len);
    if (!text) TEST_SKIP("tests/schemas/corpus.json not readable");
    cJSON *all = cJSON_ParseWithLength(text, len);
    free(text);
    int n_schemas = 0, n_inst = 0;
    TEST("the corpus is there") {
        CHECK(cJSON_IsArray(all));
        CHECK(cJSON_GetArraySize(all) >= 160); /* issue #18: at least 150 schemas */
    }
    for (const cJSON *e = all ? all->child : NULL; e; e = e->next) {
        const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
        char tname[160];
        snprintf(tname, sizeof tname, "corpus: %s", name);
        TEST(tname) {
            char err[256];
            struct st_options o = {.any_whitespace = true};
            struct grammar *g =
                st_compile_schema(cJSON_GetObjectItem(e, "schema"), &o, err, sizeof err);
            CHECK(g);
            if (!g) {
                fprintf(stderr, "  %s: %s\n", name, err);
                continue;
            }
            const cJSON *inst = cJSON_GetObjectItem(e, "instances");
            const cJSON *valid = cJSON_GetObjectItem(e, "valid");
            const cJSON *v = valid->child;
            for (const cJSON *x = inst->child; x && v; x = x->next, v = v->next) {
                struct gram_matcher *m = gm_new(g);
                const char *s = x->valuestring;
                bool ok = gm_accept_bytes(m, (const uint8_t *)s, strlen(s)) && gm_can_end(m);
                if (ok != cJSON_IsTrue(v)) {
                    CHECK(ok == cJSON_IsTrue(v));
                    fprintf(stderr, "  %s: instance %s: matcher %s, jsonschema %s\n", name, s,
                            ok ? "accepts" : "rejects", cJSON_IsTrue(v) ? "valid" : "invalid");
                }
                gm_free(m);
                n_inst++;
            }
            grammar_release(g);
            n_schemas++;
        }
    }
    printf("%d schemas, %d instances\n", n_schemas, n_inst);
    cJSON_Delete(all);
    return test_report();
}
