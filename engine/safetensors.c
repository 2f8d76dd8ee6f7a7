/*
 * safetensors: mmap + header parser + a small writer. See safetensors.h for the format and
 * the contract. Every size that comes from a file is checked before it is used, and every
 * allocation whose size comes from a file is a try-allocation.
 */
#include "engine/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ==== The set ====
 * A set is the tensors of one or more files, sorted by name for binary search. Each file
 * is either a private read-only map (st_open_*) or a borrowed buffer (st_parse). */

struct st_file {
    char *name;      /* owned: base name, used in messages and st_tensor.file */
    void *map;       /* owned mapping (munmap on close), NULL for a borrowed buffer */
    size_t map_len;
};

struct st_set {
    struct st_file *files; /* (n_files), owned */
    int32_t n_files;
    struct st_tensor *t;   /* (n), sorted by name; names owned */
    int32_t n, cap;
};

static struct st_set *set_new(void)
{
    return xcalloc(1, sizeof(struct st_set));
}

void st_close(struct st_set *s)
{
    if (!s) return;
    for (int32_t i = 0; i < s->n; i++) free((char *)s->t[i].name);
    for (int32_t i = 0; i < s->n_files; i++) {
        if (s->files[i].map) munmap(s->files[i].map, s->files[i].map_len);
        free(s->files[i].name);
    }
    free(s->files);
    free(s->t);
    free(s);
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

/* Adds a file record; returns its index or a negative code. */
static int set_add_file(struct st_set *s, const char *name, void *map, size_t map_len)
{
    struct st_file *f = tryrealloc(s->files, (size_t)(s->n_files + 1) * sizeof *f);
    if (!f) return VLM_ENOMEM;
    s->files = f;
    char *nm = trymalloc(strlen(name) + 1);
    if (!nm) return VLM_ENOMEM;
    strcpy(nm, name);
    f[s->n_files] = (struct st_file){.name = nm, .map = map, .map_len = map_len};
    return s->n_files++;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

const struct st_tensor *st_find(const struct st_set *s, const char *name)
{
    if (!s) return NULL;
    int32_t lo = 0, hi = s->n;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        int c = strcmp(s->t[mid].name, name);
        if (c == 0) return &s->t[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

int32_t st_count(const struct st_set *s)
{
    return s ? s->n : 0;
}

const struct st_tensor *st_get(const struct st_set *s, int32_t i)
{
    VLM_ASSERT(s && i >= 0 && i < s->n);
    return &s->t[i];
}

int64_t st_nelem(const struct st_tensor *t)
{
    int64_t n = 1;
    for (int32_t i = 0; i < t->rank; i++) n *= t->shape[i];
    return n;
}

/* ==== dtypes ==== */

static const struct {
    const char *name;
    enum dtype type;
    size_t size;
} st_dtypes[] = {
    {"BF16", DT_BF16, 2}, {"F16", DT_F16, 2}, {"F32", DT_F32, 4},
    {"I32", DT_I32, 4},   {"I64", DT_COUNT, 8},
};

const char *st_dtype_name(enum dtype t)
{
    for (size_t i = 0; i < ARRAY_LEN(st_dtypes); i++)
        if (st_dtypes[i].type == t) return st_dtypes[i].name;
    return "?";
}

static size_t st_dtype_size(enum dtype t)
{
    for (size_t i = 0; i < ARRAY_LEN(st_dtypes); i++)
        if (st_dtypes[i].type == t) return st_dtypes[i].size;
    return 0;
}

/* ==== Header parser ====
 * parse_file() appends the tensors of one file image to the set. Checks, in order: the
 * 8-byte length and that the header fits in the file, the JSON, then per tensor the entry's
 * form, dtype, rank, shape values, size arithmetic, offsets against the data section and
 * alignment; finally that no two tensors of the file overlap. Names are checked for
 * duplicates once the whole set is assembled (st_finish). */

/* An integer stored as a JSON number: integral, 0 <= v <= 2^53 (exact in a double). */
static bool json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j)) return false;
    double v = j->valuedouble;
    if (!(v >= 0.0 && v <= 9007199254740992.0)) return false; /* also rejects NaN */
    uint64_t u = (uint64_t)v;
    if ((double)u != v) return false;
    *out = u;
    return true;
}

struct span {
    uint64_t begin, end;
    const char *name;
};

static int cmp_span(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

#define ST_FAIL(code, ...) do { rc = vlm_err_set(err, code, 500, __VA_ARGS__); goto out; } while (0)

static int parse_entry(struct st_tensor *t, const cJSON *e, const uint8_t *data,
                       uint64_t data_len, const char *label, struct vlm_err *err,
                       uint64_t *begin_out, uint64_t *end_out)
{
    int rc = 0;
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': entry is not an object", label, nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd)) ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': missing or non-string dtype", label, nm);
    if (!cJSON_IsArray(js)) ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': missing or non-array shape", label, nm);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': data_offsets must be [begin, end]", label, nm);

    size_t esize = 0;
    for (size_t i = 0; i < ARRAY_LEN(st_dtypes); i++) {
        if (!strcmp(jd->valuestring, st_dtypes[i].name)) {
            t->type = st_dtypes[i].type;
            esize = st_dtypes[i].size;
        }
    }
    if (!esize)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': unsupported dtype '%.16s' (want BF16, F16 or F32)",
                label, nm, jd->valuestring);

    int rank = cJSON_GetArraySize(js);
    if (rank > ST_MAX_RANK)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': rank %d over the limit of %d", label, nm, rank,
                ST_MAX_RANK);
    t->rank = rank;
    uint64_t nelem = 1;
    int d = 0;
    for (const cJSON *v = js->child; v; v = v->next, d++) {
        uint64_t dim;
        if (!json_uint(v, &dim))
            ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': shape[%d] is not a non-negative integer",
                    label, nm, d);
        if (__builtin_mul_overflow(nelem, dim, &nelem) || nelem > (uint64_t)INT64_MAX)
            ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': shape overflows", label, nm);
        t->shape[d] = (int64_t)dim;
    }
    uint64_t nbytes, begin, end;
    if (__builtin_mul_overflow(nelem, (uint64_t)esize, &nbytes) || nbytes > SIZE_MAX)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': size overflows", label, nm);
    if (!json_uint(jo->child, &begin) || !json_uint(jo->child->next, &end))
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': data_offsets are not non-negative integers",
                label, nm);
    if (end < begin)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': data_offsets end %llu < begin %llu", label, nm,
                (unsigned long long)end, (unsigned long long)begin);
    if (end > data_len)
        ST_FAIL(VLM_EINVAL,
                "%s: tensor '%.80s': data_offsets [%llu, %llu) out of range (data section is %llu bytes)",
                label, nm, (unsigned long long)begin, (unsigned long long)end,
                (unsigned long long)data_len);
    if (end - begin != nbytes)
        ST_FAIL(VLM_EINVAL,
                "%s: tensor '%.80s': %llu bytes in data_offsets but shape x dtype needs %llu",
                label, nm, (unsigned long long)(end - begin), (unsigned long long)nbytes);
    t->data = data + begin;
    t->nbytes = (size_t)nbytes;
    if ((uintptr_t)t->data % esize)
        ST_FAIL(VLM_EINVAL, "%s: tensor '%.80s': data at offset %llu is not aligned to %zu bytes",
                label, nm, (unsigned long long)begin, esize);
    *begin_out = begin;
    *end_out = end;
out:
    return rc;
}

static int parse_file(struct st_set *s, int file_idx, const uint8_t *buf, size_t len,
                      struct vlm_err *err)
{
    const char *label = s->files[file_idx].name;
    int rc = 0;
    char *hdr = NULL;
    cJSON *root = NULL;
    struct span *spans = NULL;
    int32_t first = s->n;

    if (len < 8) ST_FAIL(VLM_EINVAL, "%s: file is %zu bytes, shorter than the 8-byte header length", label, len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > len - 8)
        ST_FAIL(VLM_EINVAL, "%s: header length %llu past the end of the file (%zu bytes)", label,
                (unsigned long long)hlen, len);
    if (hlen > ST_MAX_HEADER || hlen < 2)
        ST_FAIL(VLM_EINVAL, "%s: header length %llu is not plausible", label, (unsigned long long)hlen);
    /* a NUL-terminated copy, so the JSON parser never reads past the header */
    hdr = trymalloc((size_t)hlen + 1);
    if (!hdr) ST_FAIL(VLM_ENOMEM, "%s: no memory for a %llu-byte header", label, (unsigned long long)hlen);
    memcpy(hdr, buf + 8, (size_t)hlen);
    hdr[hlen] = 0;
    root = cJSON_ParseWithLength(hdr, (size_t)hlen);
    if (!root) ST_FAIL(VLM_EINVAL, "%s: header is not valid JSON", label);
    if (!cJSON_IsObject(root)) ST_FAIL(VLM_EINVAL, "%s: header is not a JSON object", label);

    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = len - 8 - hlen;
    int n_entries = cJSON_GetArraySize(root);
    if (s->n + n_entries > s->cap) {
        size_t cap = (size_t)s->n + (size_t)n_entries;
        struct st_tensor *t = tryrealloc(s->t, cap * sizeof *t);
        if (!t) ST_FAIL(VLM_ENOMEM, "%s: no memory for %d tensors", label, n_entries);
        s->t = t;
        s->cap = (int32_t)cap;
    }
    spans = trymalloc((size_t)(n_entries ? n_entries : 1) * sizeof *spans);
    if (!spans) ST_FAIL(VLM_ENOMEM, "%s: no memory for %d tensors", label, n_entries);
    int32_t n_spans = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!e->string) ST_FAIL(VLM_EINVAL, "%s: header entry without a name", label);
        if (!strcmp(e->string, "__metadata__")) continue;
        struct st_tensor t = {.file = label};
        uint64_t b = 0, en = 0;
        rc = parse_entry(&t, e, data, data_len, label, err, &b, &en);
        if (rc) goto out;
        char *nm = trymalloc(strlen(e->string) + 1);
        if (!nm) ST_FAIL(VLM_ENOMEM, "%s: no memory for a tensor name", label);
        strcpy(nm, e->string);
        t.name = nm;
        s->t[s->n++] = t;
        spans[n_spans++] = (struct span){b, en, nm};
    }
    /* no two non-empty tensors may share a byte */
    qsort(spans, (size_t)n_spans, sizeof *spans, cmp_span);
    uint64_t prev_end = 0;
    const char *prev = NULL;
    for (int32_t i = 0; i < n_spans; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (prev && spans[i].begin < prev_end)
            ST_FAIL(VLM_EINVAL, "%s: tensors '%.60s' and '%.60s' overlap", label, prev,
                    spans[i].name);
        prev_end = spans[i].end;
        prev = spans[i].name;
    }
out:
    if (rc) { /* drop this file's tensors so the set stays consistent for st_close */
        for (int32_t i = first; i < s->n; i++) free((char *)s->t[i].name);
        s->n = first;
    }
    free(spans);
    cJSON_Delete(root);
    free(hdr);
    return rc;
}

/* Sorts the set by name and rejects duplicate names (within or across files). */
static int st_finish(struct st_set *s, struct vlm_err *err)
{
    if (s->n > 1) qsort(s->t, (size_t)s->n, sizeof *s->t, cmp_name);
    for (int32_t i = 1; i < s->n; i++) {
        if (!strcmp(s->t[i - 1].name, s->t[i].name)) {
            return vlm_err_set(err, VLM_EINVAL, 500, "%s: duplicate tensor name '%.80s'%s%s",
                               s->t[i].file, s->t[i].name,
                               s->t[i].file != s->t[i - 1].file ? " also in " : "",
                               s->t[i].file != s->t[i - 1].file ? s->t[i - 1].file : "");
        }
    }
    return 0;
}

int st_parse(struct st_set **out, const void *buf, size_t len, const char *label,
             struct vlm_err *err)
{
    *out = NULL;
    struct st_set *s = set_new();
    int fi = set_add_file(s, label ? label : "(memory)", NULL, 0);
    int rc = fi < 0 ? vlm_err_set(err, fi, 500, "no memory") : parse_file(s, fi, buf, len, err);
    if (!rc) rc = st_finish(s, err);
    if (rc) {
        st_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ==== Opening files ==== */

/* Maps path read-only and parses it into s. */
static int map_and_parse(struct st_set *s, const char *path, struct vlm_err *err)
{
    const char *label = base_name(path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return vlm_err_set(err, VLM_EIO, 500, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vlm_err_set(err, VLM_EIO, 500, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 8) {
        close(fd);
        return vlm_err_set(err, VLM_EINVAL, 500,
                           "%s: file is %zu bytes, shorter than the 8-byte header length", label, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) return vlm_err_set(err, VLM_EIO, 500, "%s: mmap failed: %s", path, strerror(e));
    int fi = set_add_file(s, label, map, len);
    if (fi < 0) {
        munmap(map, len);
        return vlm_err_set(err, fi, 500, "no memory");
    }
    return parse_file(s, fi, map, len, err);
}

int st_open_file(struct st_set **out, const char *path, struct vlm_err *err)
{
    *out = NULL;
    struct st_set *s = set_new();
    int rc = map_and_parse(s, path, err);
    if (!rc) rc = st_finish(s, err);
    if (rc) {
        st_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Opens the shards named by an index file: every distinct file of "weight_map", then checks
 * that each listed tensor is in the file the index says. */
static int open_index(struct st_set *s, const char *dir, const char *index_path,
                      struct vlm_err *err)
{
    int rc = 0;
    size_t len;
    char *text = vlm_read_file(index_path, &len);
    cJSON *root = NULL;
    if (!text) return vlm_err_set(err, VLM_EIO, 500, "%s: cannot read: %s", index_path, strerror(errno));
    root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(wm))
        ST_FAIL(VLM_EINVAL, "model.safetensors.index.json: not JSON with a \"weight_map\" object");
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/') ||
            !strcmp(e->valuestring, ".."))
            ST_FAIL(VLM_EINVAL, "model.safetensors.index.json: bad shard name for '%.80s'",
                    e->string);
        bool seen = false;
        for (int32_t i = 0; i < s->n_files && !seen; i++)
            seen = !strcmp(s->files[i].name, e->valuestring);
        if (seen) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        rc = map_and_parse(s, path, err);
        if (rc) goto out;
    }
    if (s->n_files == 0) ST_FAIL(VLM_EINVAL, "model.safetensors.index.json: empty weight_map");
    rc = st_finish(s, err);
    if (rc) goto out;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const struct st_tensor *t = st_find(s, e->string);
        if (!t || strcmp(t->file, e->valuestring))
            ST_FAIL(VLM_EINVAL, "model.safetensors.index.json: tensor '%.80s' is not in %s",
                    e->string, e->valuestring);
    }
out:
    cJSON_Delete(root);
    free(text);
    return rc;
}

int st_open_dir(struct st_set **out, const char *dir, struct vlm_err *err)
{
    *out = NULL;
    char path[4096];
    struct st_set *s = set_new();
    int rc;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (access(path, F_OK) == 0) {
        rc = open_index(s, dir, path, err);
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        if (access(path, F_OK) != 0)
            rc = vlm_err_set(err, VLM_EIO, 500,
                             "%s: neither model.safetensors nor model.safetensors.index.json", dir);
        else if (!(rc = map_and_parse(s, path, err)))
            rc = st_finish(s, err);
    }
    if (rc) {
        st_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

/* ==== Writer ====
 * Header: {"__metadata__":{"format":"pt"},"<name>":{"dtype":..,"shape":[..],
 * "data_offsets":[b,e]},...} padded with spaces to a multiple of 8 so that the data section
 * is 8-byte aligned. Tensors are packed back to back with no gaps, as the reference reader
 * (the safetensors Rust crate) requires; the caller orders them so that each starts aligned
 * to its element size (asserted). */

static void json_str(struct strbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
        else if (c < 0x20) sb_printf(b, "\\u%04x", c);
        else sb_append(b, (const char *)&c, 1);
    }
    sb_puts(b, "\"");
}

int st_write_file(const char *path, const struct st_tensor *tensors, int32_t n,
                  struct vlm_err *err)
{
    return st_write_file_fill(path, tensors, n, NULL, NULL, err);
}

int st_write_file_fill(const char *path, const struct st_tensor *tensors, int32_t n,
                       st_fill_fn fill, void *ctx, struct vlm_err *err)
{
    struct strbuf h = {0};
    uint64_t off = 0;
    sb_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int32_t i = 0; i < n; i++) {
        const struct st_tensor *t = &tensors[i];
        size_t es = st_dtype_size(t->type);
        VLM_ASSERT(es && t->rank >= 0 && t->rank <= ST_MAX_RANK);
        VLM_ASSERT((size_t)st_nelem(t) * es == t->nbytes);
        VLM_ASSERT(off % es == 0);
        sb_puts(&h, ",");
        json_str(&h, t->name);
        sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(t->type));
        for (int32_t d = 0; d < t->rank; d++)
            sb_printf(&h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + t->nbytes));
        off += t->nbytes;
    }
    sb_puts(&h, "}");
    while (h.n % 8) sb_puts(&h, " ");

    int rc = 0;
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = vlm_err_set(err, VLM_EIO, 500, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.s, 1, h.n, f) == h.n;
    void *scratch = NULL;
    for (int32_t i = 0; i < n && ok; i++) {
        const void *src = tensors[i].data;
        if (fill) {
            scratch = xrealloc(scratch, tensors[i].nbytes);
            fill(ctx, i, scratch);
            src = scratch;
        }
        ok = fwrite(src, 1, tensors[i].nbytes, f) == tensors[i].nbytes;
    }
    free(scratch);
    if (fclose(f) != 0) ok = false;
    if (!ok) rc = vlm_err_set(err, VLM_EIO, 500, "%s: write failed: %s", path, strerror(errno));
done:
    sb_free(&h);
    return rc;
}
