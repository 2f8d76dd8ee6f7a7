/*
 * safetensors: a table of malformed files, each written to a temporary folder and opened
 * both from disk and from memory, expecting a specific code and a message that names the
 * problem (and the tensor); then valid files, shard sets with an index, and the writer.
 */
#include "engine/safetensors.h"
#include "test.h"
#include "tmpdir.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* [u64 header length][header padded with spaces to a multiple of 8][data_len bytes] */
static uint8_t *mk(const char *header, size_t data_len, size_t *len)
{
    size_t h = strlen(header), hp = (h + 7) / 8 * 8;
    *len = 8 + hp + data_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hp >> (8 * i));
    memcpy(b + 8, header, h);
    memset(b + 8 + h, ' ', hp - h);
    for (size_t i = 0; i < data_len; i++) b[8 + hp + i] = (uint8_t)i;
    return b;
}

static void put_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

struct bad_case {
    const char *what;
    const char *header;   /* NULL: raw bytes below */
    size_t data_len;
    const char *raw;      /* raw file content when header is NULL */
    size_t raw_len;
    int code;
    const char *msg;      /* expected substring of the message */
};

#define T1(dt, shape, off) "{\"t\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

static const struct bad_case bad[] = {
    {"empty file", NULL, 0, "", 0, VLM_EINVAL, "shorter than the 8-byte"},
    {"5-byte file", NULL, 0, "\x01\x00\x00\x00\x00", 5, VLM_EINVAL, "shorter than the 8-byte"},
    {"header length past end", NULL, 0, "\xe8\x03\x00\x00\x00\x00\x00\x00{}", 10, VLM_EINVAL, "past the end"},
    {"header length 2^64-1", NULL, 0, "\xff\xff\xff\xff\xff\xff\xff\xff{}", 10, VLM_EINVAL, "past the end"},
    {"header length 0", NULL, 0, "\x00\x00\x00\x00\x00\x00\x00\x00{}", 10, VLM_EINVAL, "not plausible"},
    {"truncated JSON", "{\"t\":{\"dtype\":", 0, NULL, 0, VLM_EINVAL, "not valid JSON"},
    {"JSON array", "[1, 2, 3]", 0, NULL, 0, VLM_EINVAL, "not a JSON object"},
    {"binary garbage header", "\x01\x02\x03\xff\xfe", 0, NULL, 0, VLM_EINVAL, "not valid JSON"},
    {"entry not an object", "{\"t\": 5}", 0, NULL, 0, VLM_EINVAL, "'t': entry is not an object"},
    {"missing dtype", "{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL, 0, VLM_EINVAL, "'t': missing or non-string dtype"},
    {"dtype not a string", "{\"t\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, NULL, 0, VLM_EINVAL, "non-string dtype"},
    {"unknown dtype", T1("F8_E4M3", "[4]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "'t': unsupported dtype 'F8_E4M3'"},
    {"F64 dtype", T1("F64", "[1]", "[0,8]"), 8, NULL, 0, VLM_EINVAL, "unsupported dtype 'F64'"},
    {"shape not an array", T1("F32", "4", "[0,16]"), 16, NULL, 0, VLM_EINVAL, "non-array shape"},
    {"negative dim", T1("F32", "[-1]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "shape[0] is not a non-negative integer"},
    {"fractional dim", T1("F32", "[2, 1.5]", "[0,12]"), 12, NULL, 0, VLM_EINVAL, "shape[1]"},
    {"string dim", T1("F32", "[\"2\"]", "[0,8]"), 8, NULL, 0, VLM_EINVAL, "shape[0]"},
    {"absurd rank", T1("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "rank 9 over the limit"},
    {"shape overflows", T1("F32", "[4294967296, 4294967296, 16]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "overflows"},
    {"size overflows", T1("F32", "[4503599627370496, 1024]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "overflows"},
    {"huge dim", T1("F32", "[1e300]", "[0,4]"), 4, NULL, 0, VLM_EINVAL, "shape[0]"},
    {"one offset", T1("F32", "[1]", "[0]"), 4, NULL, 0, VLM_EINVAL, "data_offsets must be [begin, end]"},
    {"offsets not numbers", T1("F32", "[1]", "[\"0\",4]"), 4, NULL, 0, VLM_EINVAL, "data_offsets are not"},
    {"negative offset", T1("F32", "[1]", "[-4,0]"), 4, NULL, 0, VLM_EINVAL, "data_offsets are not"},
    {"end before begin", T1("F32", "[1]", "[8,4]"), 16, NULL, 0, VLM_EINVAL, "end 4 < begin 8"},
    {"offsets out of range", T1("F32", "[4]", "[0,16]"), 8, NULL, 0, VLM_EINVAL, "out of range (data section is 8 bytes)"},
    {"offsets far out of range", T1("F32", "[1]", "[9007199254740988,9007199254740992]"), 8, NULL, 0, VLM_EINVAL, "out of range"},
    {"size != shape x dtype", T1("F32", "[2]", "[0,4]"), 8, NULL, 0, VLM_EINVAL, "needs 8"},
    {"BF16 size mismatch", T1("BF16", "[3, 2]", "[0,8]"), 12, NULL, 0, VLM_EINVAL, "needs 12"},
    {"misaligned F32", T1("F32", "[1]", "[2,6]"), 8, NULL, 0, VLM_EINVAL, "not aligned"},
    {"overlapping tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, NULL, 0, VLM_EINVAL, "'a' and 'b' overlap"},
    {"identical ranges",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8, NULL, 0, VLM_EINVAL, "overlap"},
    {"duplicate names",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, NULL, 0, VLM_EINVAL, "duplicate tensor name 'a'"},
    {"good then bad",
     "{\"ok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"bad\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[4,5]}}", 8, NULL, 0, VLM_EINVAL, "'bad': unsupported dtype 'U8'"},
};

static void test_bad_files(void)
{
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        const struct bad_case *c = &bad[i];
        size_t len;
        uint8_t *b;
        if (c->header) {
            b = mk(c->header, c->data_len, &len);
        } else {
            len = c->raw_len;
            b = malloc(len + 1);
            memcpy(b, c->raw, len);
        }
        char name[64];
        snprintf(name, sizeof name, "bad%02zu.safetensors", i);
        put_file(sub(name), b, len);
        TEST(c->what) {
            struct st_set *s = (struct st_set *)1;
            struct vlm_err err = {0};
            int rc = st_open_file(&s, sub(name), &err);
            CHECK_EQ(rc, c->code);
            CHECK(s == NULL);
            CHECK_EQ(err.code, c->code);
            if (c->msg && !strstr(err.msg, c->msg))
                CHECK_STR(err.msg, c->msg);
            CHECK(strstr(err.msg, name) != NULL); /* the file is named */
            /* the same from memory */
            struct vlm_err err2 = {0};
            rc = st_parse(&s, b, len, "mem", &err2);
            CHECK_EQ(rc, c->code);
            CHECK(s == NULL);
            if (c->msg) CHECK(strstr(err2.msg, c->msg) != NULL);
        }
        free(b);
    }
}

static void test_good_file(void)
{
    size_t len;
    uint8_t *b = mk("{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
                    "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"h\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]},"
                    "\"s\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[32,34]},"
                    "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[36,36]},"
                    "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[40,48]}}",
                    48, &len);
    put_file(sub("good.safetensors"), b, len);
    TEST("valid file: shapes, dtypes, data pointers") {
        struct st_set *s = NULL;
        struct vlm_err err = {0};
        CHECK_EQ(st_open_file(&s, sub("good.safetensors"), &err), 0);
        CHECK_EQ(st_count(s), 5);
        const struct st_tensor *w = st_find(s, "w"), *h = st_find(s, "h"), *sc = st_find(s, "s");
        const struct st_tensor *z = st_find(s, "z"), *i64 = st_find(s, "i");
        CHECK(w && h && sc && z && i64);
        CHECK(!st_find(s, "__metadata__") && !st_find(s, "q"));
        if (w && h && sc && z && i64) {
            CHECK_EQ(w->type, DT_F32);
            CHECK_EQ(w->rank, 2);
            CHECK_EQ(w->shape[0], 2);
            CHECK_EQ(w->shape[1], 3);
            CHECK_EQ(w->nbytes, 24);
            CHECK_EQ(((const uint8_t *)w->data)[5], 5);
            CHECK_EQ(h->type, DT_BF16);
            CHECK_EQ(((const uint8_t *)h->data)[0], 24);
            CHECK_EQ(sc->rank, 0);
            CHECK_EQ(st_nelem(sc), 1);
            CHECK_EQ(sc->nbytes, 2);
            CHECK_EQ(z->nbytes, 0);
            CHECK_EQ(i64->type, DT_COUNT);
            CHECK_STR(w->file, "good.safetensors");
        }
        /* iteration is in name order */
        for (int32_t k = 1; k < st_count(s); k++)
            CHECK(strcmp(st_get(s, k - 1)->name, st_get(s, k)->name) < 0);
        st_close(s);
    }
    TEST("empty header {} is a valid empty set") {
        size_t n2;
        uint8_t *e = mk("{}", 0, &n2);
        struct st_set *s = NULL;
        struct vlm_err err = {0};
        CHECK_EQ(st_parse(&s, e, n2, "e", &err), 0);
        CHECK_EQ(st_count(s), 0);
        CHECK(st_find(s, "x") == NULL);
        st_close(s);
        free(e);
    }
    TEST("missing file is VLM_EIO naming the path") {
        struct st_set *s = NULL;
        struct vlm_err err = {0};
        CHECK_EQ(st_open_file(&s, sub("nope.safetensors"), &err), VLM_EIO);
        CHECK(strstr(err.msg, "nope.safetensors") != NULL);
    }
    free(b);
}

/* Fail the Nth input-sized allocation for N = 0, 1, ... until parsing succeeds: each run
 * must end in VLM_ENOMEM with nothing leaked (the ASan build checks leaks). */
static void test_alloc_sweep(void)
{
    TEST("allocation-failure sweep over st_parse") {
        size_t len;
        uint8_t *b = mk("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                        "\"c\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[12,16]}}",
                        16, &len);
        int n, rc = -1, wrong = 0;
        for (n = 0; n < 100 && rc != 0; n++) {
            struct st_set *s = NULL;
            struct vlm_err err = {0};
            vlm_fail_alloc_after(n);
            rc = st_parse(&s, b, len, "sweep", &err);
            vlm_fail_alloc_after(-1);
            if (rc && (rc != VLM_ENOMEM || s)) wrong++;
            if (!rc && st_count(s) != 3) wrong++;
            st_close(s);
        }
        printf("  %d failing allocations swept\n", n - 1);
        CHECK_EQ(rc, 0);
        CHECK(n > 3);
        CHECK_EQ(wrong, 0);
        free(b);
    }
}

static void test_writer(void)
{
    TEST("writer round trip, 8-byte aligned data, format pt") {
        float a[6] = {1, 2, 3, 4, 5, 6};
        uint16_t h[3] = {0x3f80, 0x4000, 0x4040};
        struct st_tensor t[2] = {
            {.name = "x.weight", .type = DT_F32, .rank = 2, .shape = {2, 3}, .data = a, .nbytes = 24},
            {.name = "y\"q", .type = DT_BF16, .rank = 1, .shape = {3}, .data = h, .nbytes = 6},
        };
        struct vlm_err err = {0};
        CHECK_EQ(st_write_file(sub("w.safetensors"), t, 2, &err), 0);
        struct st_set *s = NULL;
        CHECK_EQ(st_open_file(&s, sub("w.safetensors"), &err), 0);
        const struct st_tensor *x = st_find(s, "x.weight"), *y = st_find(s, "y\"q");
        CHECK(x && y);
        if (x && y) {
            CHECK(!memcmp(x->data, a, 24));
            CHECK(!memcmp(y->data, h, 6));
            CHECK_EQ(((uintptr_t)x->data) % 8, 0);
        }
        st_close(s);
        size_t n;
        char *raw = vlm_read_file(sub("w.safetensors"), &n);
        CHECK(raw && strstr(raw + 8, "\"format\":\"pt\""));
        CHECK_EQ(n, 8 + (size_t)(uint8_t)raw[0] + 30);
        free(raw);
    }
}

/* Two shards + an index; then the ways an index can be wrong. */
static void test_shards(void)
{
    char d[512];
    snprintf(d, sizeof d, "%s/sharded", tmpdir);
    mkdir(d, 0755);
    float a[2] = {1, 2}, b[3] = {3, 4, 5};
    struct st_tensor ta = {.name = "a", .type = DT_F32, .rank = 1, .shape = {2}, .data = a, .nbytes = 8};
    struct st_tensor tb = {.name = "b", .type = DT_F32, .rank = 1, .shape = {3}, .data = b, .nbytes = 12};
    char p1[600], p2[600], ix[600];
    snprintf(p1, sizeof p1, "%s/s1.safetensors", d);
    snprintf(p2, sizeof p2, "%s/s2.safetensors", d);
    snprintf(ix, sizeof ix, "%s/model.safetensors.index.json", d);
    struct vlm_err err = {0};
    st_write_file(p1, &ta, 1, &err);
    st_write_file(p2, &tb, 1, &err);

    static const struct {
        const char *what, *index;
        int code;
        const char *msg;
    } cases[] = {
        {"index: two shards", "{\"metadata\":{},\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}", 0, NULL},
        {"index: tensor in the wrong shard", "{\"weight_map\":{\"a\":\"s2.safetensors\",\"b\":\"s2.safetensors\"}}", VLM_EINVAL, "tensor 'a' is not in s2.safetensors"},
        {"index: missing shard file", "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s9.safetensors\"}}", VLM_EIO, "s9.safetensors"},
        {"index: not JSON", "{\"weight_map\":", VLM_EINVAL, "weight_map"},
        {"index: no weight_map", "{\"metadata\":{}}", VLM_EINVAL, "weight_map"},
        {"index: empty weight_map", "{\"weight_map\":{}}", VLM_EINVAL, "empty weight_map"},
        {"index: shard path with a slash", "{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", VLM_EINVAL, "bad shard name for 'a'"},
        {"index: shard name not a string", "{\"weight_map\":{\"a\":1}}", VLM_EINVAL, "bad shard name"},
    };
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        put_file(ix, cases[i].index, strlen(cases[i].index));
        TEST(cases[i].what) {
            struct st_set *s = NULL;
            struct vlm_err e = {0};
            int rc = st_open_dir(&s, d, &e);
            CHECK_EQ(rc, cases[i].code);
            if (cases[i].msg && !strstr(e.msg, cases[i].msg)) CHECK_STR(e.msg, cases[i].msg);
            if (!rc) {
                const struct st_tensor *x = st_find(s, "a"), *y = st_find(s, "b");
                CHECK(x && y);
                if (x && y) {
                    CHECK_STR(x->file, "s1.safetensors");
                    CHECK_STR(y->file, "s2.safetensors");
                    CHECK(((const float *)y->data)[2] == 5.0f);
                }
            }
            st_close(s);
        }
    }
    TEST("index: same tensor in two shards") {
        st_write_file(p2, &ta, 1, &err);
        const char *j = "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\"}}";
        put_file(ix, j, strlen(j));
        struct st_set *s = NULL;
        struct vlm_err e = {0};
        CHECK_EQ(st_open_dir(&s, d, &e), VLM_EINVAL);
        CHECK(strstr(e.msg, "duplicate tensor name 'a'") && strstr(e.msg, "also in"));
    }
    TEST("folder without weights is VLM_EIO") {
        unlink(ix);
        struct st_set *s = NULL;
        struct vlm_err e = {0};
        CHECK_EQ(st_open_dir(&s, d, &e), VLM_EIO);
        CHECK(strstr(e.msg, "model.safetensors") != NULL);
    }
    TEST("a folder with model.safetensors") {
        char p[600];
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        st_write_file(p, &tb, 1, &err);
        struct st_set *s = NULL;
        struct vlm_err e = {0};
        CHECK_EQ(st_open_dir(&s, d, &e), 0);
        CHECK(st_find(s, "b") && !st_find(s, "a"));
        st_close(s);
    }
}

int main(void)
{
    tmpdir_make("/tmp/vlm_test_st_XXXXXX");
    test_bad_files();
    test_good_file();
    test_alloc_sweep();
    test_writer();
    test_shards();
    tmpdir_remove();
    return test_report();
}
