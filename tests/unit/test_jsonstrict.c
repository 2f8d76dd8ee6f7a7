/*
 * test_jsonstrict: the JSON grammar check against a table of bodies Python's json.loads
 * accepts or refuses, and duplicate keys resolved as json.loads does (the last value wins).
 */
#include <string.h>

#include "server/jsonstrict.h"
#include "test.h"

int main(void)
{
    TEST("grammar: accepted and refused as json.loads (NUL refused)") {
        static const struct { const char *s; size_t n; bool ok; const char *why; } t[] = {
            {"{}", 2, true, NULL},
            {" \t\r\n{\"a\": [1, -2.5e+3, 0, true, false, null, \"x\\u00e9\\n\"]} \n", 0, true,
             NULL},
            {"[]", 2, true, NULL},
            {"\"s\"", 3, true, NULL},
            {"0", 1, true, NULL},
            {"", 0, false, "ends"},
            {"{} x", 4, false, "extra data"},
            {"{}{}", 4, false, "extra data"},
            {"{\"a\": \"x\\u0000y\"}", 0, false, "\\u0000"},
            {"{\"a\": \"x\x01y\"}", 0, false, "control"},
            {"{\"a\": \"x\ny\"}", 0, false, "control"},
            {"{\"a\": \"x\0y\"}", 14, false, "control"},
            {"{\"a\": \"x\\qy\"}", 0, false, "escape"},
            {"{\"a\": \"x\\u12g4\"}", 0, false, "\\u"},
            {"{\"a\": 01}", 0, false, NULL},
            {"{\"a\": 1.}", 0, false, "number"},
            {"{\"a\": -}", 0, false, "number"},
            {"{\"a\": NaN}", 0, false, NULL},
            {"{\"a\" 1}", 0, false, "':'"},
            {"{a: 1}", 0, false, "key"},
            {"{\"a\": 1,}", 0, false, "key"},
            {"[1,]", 0, false, NULL},
            {"[1 2]", 0, false, "','"},
            {"{\"a\": [1}", 0, false, NULL},
            {"{\"a\": \"x", 0, false, "unterminated"},
            {"[", 1, false, "ends"},
            {"\xef\xbb\xbf{}", 0, false, NULL},
        };
        for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
            struct vlm_err e = {0};
            size_t n = t[i].n ? t[i].n : strlen(t[i].s);
            int rc = json_check(t[i].s, n, &e);
            if ((rc == 0) != t[i].ok) fprintf(stderr, "  case %zu: rc %d (%s)\n", i, rc, e.msg);
            CHECK_EQ(rc == 0, t[i].ok);
            if (!t[i].ok) CHECK_EQ(e.http_status, 400);
            if (t[i].why && !t[i].ok) CHECK(strstr(e.msg, t[i].why));
        }
    }
    TEST("nesting: within the limit accepted, past it refused without recursion") {
        static char deep[2 * (JSONSTRICT_MAX_DEPTH + 10)];
        for (int d = JSONSTRICT_MAX_DEPTH; d <= JSONSTRICT_MAX_DEPTH + 1; d++) {
            memset(deep, '[', (size_t)d);
            memset(deep + d, ']', (size_t)d);
            struct vlm_err e = {0};
            CHECK_EQ(json_check(deep, 2 * (size_t)d, &e) == 0, d == JSONSTRICT_MAX_DEPTH);
        }
    }
    TEST("duplicate keys: the last value wins, at every depth") {
        const char *s = "{\"a\": 1, \"b\": {\"x\": 1, \"x\": [{\"y\": 1, \"y\": 2}]}, \"a\": 3, "
                        "\"c\": 0, \"a\": 5}";
        cJSON *root = NULL;
        struct vlm_err e = {0};
        CHECK_EQ(json_parse_strict(s, strlen(s), &root, &e), 0);
        CHECK_EQ(cJSON_GetArraySize(root), 3);
        CHECK_EQ(cJSON_GetObjectItem(root, "a")->valueint, 5);
        const cJSON *x = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "b"), "x");
        CHECK(cJSON_IsArray(x));
        CHECK_EQ(cJSON_GetObjectItem(cJSON_GetArrayItem(x, 0), "y")->valueint, 2);
        CHECK_EQ(cJSON_GetArraySize(cJSON_GetArrayItem(x, 0)), 1);
        cJSON_Delete(root);
    }
    TEST("many keys: every one distinct or every one the same") {
        enum { K = 20000 };
        struct strbuf b = {0};
        sb_puts(&b, "{");
        for (int i = 0; i < K; i++) sb_printf(&b, "%s\"k%d\": %d", i ? ", " : "", i % 2 ? i : 0, i);
        sb_puts(&b, "}");
        cJSON *root = NULL;
        struct vlm_err e = {0};
        CHECK_EQ(json_parse_strict(b.s, b.n, &root, &e), 0);
        CHECK_EQ(cJSON_GetArraySize(root), K / 2 + 1);
        CHECK_EQ(cJSON_GetObjectItem(root, "k0")->valueint, K - 2);
        cJSON_Delete(root);
        sb_free(&b);
    }
    return test_report();
}
