/*
 * tokenizer.c: byte-level BPE from a Hugging Face tokenizer.json. See tokenizer.h for the
 * pipeline and the contract; this file is laid out in the same order: the byte-level map,
 * the two hash tables, loading, encoding, decoding (UTF-8 helpers: utf8.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "server/tokenizer.h"
#include "server/tokenizer_slow.h"
#include "server/utf8.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

/* ==== The tokenizer ====
 * Every token id has an entry: its spelling in tokenizer.json (raw, used by tok_find and by
 * the merges) and its decoded bytes (used by decoding). Both live in two blobs. BPE itself
 * never looks at strings: a word starts as one id per byte (byte_id) and pairs of ids are
 * merged through the pair table. */
enum { TOK_EXISTS = 1, TOK_SPECIAL = 2, TOK_ADDED = 4 };
#define TOK_MAX_ID (1 << 24) /* ids at or above this are rejected at load (no giant tables) */
#define TOK_MAX_WORD_SMALL 24 /* words up to this many bytes use the quadratic merge loop */

struct tok_entry {
    uint32_t raw_off, raw_len;     /* into raw blob: the tokenizer.json spelling */
    uint32_t bytes_off, bytes_len; /* into bytes blob: what the token decodes to */
    uint8_t flags;                 /* TOK_* */
};

struct tok_pair {
    uint64_t key; /* (left id << 32) | right id; UINT64_MAX = empty slot */
    int32_t rank; /* merge priority: lower merges first */
    int32_t id;   /* the merged token */
};

struct tok_added {
    const char *s; /* borrowed from the raw blob: the content to match */
    uint32_t len;
    int32_t id;
};

struct tokenizer {
    int32_t n_ids;            /* max id + 1 */
    struct tok_entry *tokens; /* (n_ids) owned */
    char *raw;                /* owned: all raw spellings, NUL-separated */
    char *bytes;              /* owned: all decoded bytes */
    int32_t *str_slots;       /* (str_mask + 1) owned: ids by raw spelling, -1 = empty */
    uint64_t str_mask;
    struct tok_pair *pairs;   /* (pair_mask + 1) owned */
    uint64_t pair_mask;
    int32_t byte_id[256];     /* the single-byte token of each byte, -1 if absent */
    struct tok_added *added;  /* (n_added) owned, sorted by first byte, then longest first */
    int32_t n_added;
    int32_t added_start[257]; /* added[added_start[b] .. added_start[b+1]) start with byte b */
    bool nfc;                 /* normalizer is NFC */
    bool ignore_merges;       /* a word that is itself a token is not merged (Llama-3 style) */
    pcre2_code *re;           /* owned: the pre_tokenizer Split regex */
    bool re_jit;
};

/* ==== Byte-level map ====
 * GPT-2's bytes_to_unicode: printable Latin-1 bytes (33..126, 161..172, 174..255) stand for
 * themselves, the other 68 bytes get code points 256..323 in byte order. Vocab strings are
 * spelled in these characters; cp_byte reverses the map. */
static int16_t cp_byte[324];
static uint32_t byte_cp[256];

static void bytelevel_init(void)
{
    int n = 0;
    for (int i = 0; i < 324; i++) cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        byte_cp[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        cp_byte[byte_cp[b]] = (int16_t)b;
    }
}

/* ==== Hash tables ====
 * Open addressing, linear probing, power-of-two sizes at most half full. str: raw spelling
 * -> id (tok_find, merge parsing). pair: (left, right) -> (rank, merged id), the BPE hot path. */
static uint64_t table_size_for(uint64_t n)
{
    uint64_t size = 16;
    while (size < 2 * n) size *= 2;
    return size;
}

static uint64_t str_hash(const char *s, size_t n)
{
    return vlm_hash64(s, n, 0x746f6b);
}

static int32_t str_lookup(const struct tokenizer *t, const char *s, size_t n)
{
    for (uint64_t i = str_hash(s, n) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t id = t->str_slots[i];
        if (id < 0) return -1;
        const struct tok_entry *e = &t->tokens[id];
        if (e->raw_len == n && memcmp(t->raw + e->raw_off, s, n) == 0) return id;
    }
}

/* Inserts id under its raw spelling unless that spelling is already taken (first wins:
 * added tokens are inserted first, as HF's token_to_id looks at them first). */
static void str_insert(struct tokenizer *t, int32_t id)
{
    const struct tok_entry *e = &t->tokens[id];
    const char *s = t->raw + e->raw_off;
    for (uint64_t i = str_hash(s, e->raw_len) & t->str_mask;; i = (i + 1) & t->str_mask) {
        int32_t o = t->str_slots[i];
        if (o < 0) { t->str_slots[i] = id; return; }
        if (t->tokens[o].raw_len == e->raw_len && memcmp(t->raw + t->tokens[o].raw_off, s, e->raw_len) == 0)
            return;
    }
}

static inline uint64_t pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static inline uint64_t pair_slot(uint64_t key, uint64_t mask)
{
    return ((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
}

static inline const struct tok_pair *pair_lookup(const struct tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = pair_key(a, b);
    for (uint64_t i = pair_slot(key, t->pair_mask);; i = (i + 1) & t->pair_mask) {
        const struct tok_pair *p = &t->pairs[i];
        if (p->key == key) return p;
        if (p->key == UINT64_MAX) return NULL;
    }
}

/* Keeps the first (lowest) rank when a pair is listed twice, as HF does. */
static void pair_insert(struct tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id)
{
    uint64_t key = pair_key(a, b);
    for (uint64_t i = pair_slot(key, t->pair_mask);; i = (i + 1) & t->pair_mask) {
        struct tok_pair *p = &t->pairs[i];
        if (p->key == key) return;
        if (p->key == UINT64_MAX) {
            p->key = key;
            p->rank = rank;
            p->id = id;
            return;
        }
    }
}

/* ==== Loading ====
 * tokenizer.json is parsed whole with cJSON (about 5 MB for Qwen) and then dropped: every
 * string the tokenizer keeps is copied into its blobs. Anything this file does not
 * implement is rejected with a message rather than silently tokenized differently. */
#define LOAD_FAIL(...) do { rc = vlm_err_set(err, VLM_EINVAL, 500, "tokenizer: " __VA_ARGS__); goto done; } while (0)

static bool json_int(const cJSON *j, int64_t lo, int64_t hi, int64_t *v)
{
    if (!cJSON_IsNumber(j)) return false;
    double d = j->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d) return false;
    *v = (int64_t)d;
    return true;
}

/* Turns a raw spelling into the bytes HF's ByteLevel decoder produces for it: when every
 * character is a byte-level character, their bytes; otherwise (some added tokens) the
 * spelling's own UTF-8, unchanged. */
static void raw_to_bytes(const char *s, size_t n, struct strbuf *out)
{
    size_t start = out->n;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (cp >= 324 || cp_byte[cp] < 0) {
            out->n = start;
            sb_append(out, s, n);
            return;
        }
        char c = (char)cp_byte[cp];
        sb_append(out, &c, 1);
    }
}


/* Records spelling s for id (later definitions of an id replace earlier ones). */
static void set_token(struct tokenizer *t, struct strbuf *raw, struct strbuf *bytes, int32_t id,
                      const char *s, size_t n, uint8_t flags)
{
    struct tok_entry *e = &t->tokens[id];
    e->raw_off = (uint32_t)raw->n;
    e->raw_len = (uint32_t)n;
    sb_append(raw, s, n);
    sb_append(raw, "", 1); /* keeps each spelling NUL-terminated for the added-token table */
    e->bytes_off = (uint32_t)bytes->n;
    raw_to_bytes(s, n, bytes);
    e->bytes_len = (uint32_t)(bytes->n - e->bytes_off);
    e->flags = (uint8_t)(TOK_EXISTS | flags);
}

/* Finds the Split regex in pre_tokenizer (alone or inside a Sequence) and checks that the
 * rest is a plain ByteLevel step. Returns the pattern (borrowed from the cJSON tree) or
 * NULL with *why set. *literal tells a {"String": ...} pattern from a {"Regex": ...} one. */
static const char *find_split(const cJSON *pre, bool *literal, const char **why)
{
    const cJSON *steps = pre, *split = NULL;
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pre, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        steps = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        if (!cJSON_IsArray(steps)) { *why = "pre_tokenizer Sequence without pretokenizers"; return NULL; }
    } else if (!cJSON_IsObject(pre)) {
        *why = "missing pre_tokenizer";
        return NULL;
    }
    bool seq = steps != pre;
    for (const cJSON *st = seq ? steps->child : pre; st; st = seq ? st->next : NULL) {
        const char *ty = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "type"));
        if (!ty) { *why = "pre_tokenizer step without type"; return NULL; }
        if (strcmp(ty, "ByteLevel") == 0) {
            if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "add_prefix_space")) ||
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "use_regex"))) {
                *why = "ByteLevel pre_tokenizer with add_prefix_space or use_regex is not supported";
                return NULL;
            }
        } else if (strcmp(ty, "Split") == 0) {
            const char *beh = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(st, "behavior"));
            if (split || !beh || strcmp(beh, "Isolated") != 0 ||
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(st, "invert"))) {
                *why = "only one Split pre_tokenizer with behavior Isolated is supported";
                return NULL;
            }
            split = st;
        } else {
            *why = "unsupported pre_tokenizer type";
            return NULL;
        }
    }
    if (!split) { *why = "pre_tokenizer has no Split regex"; return NULL; }
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(split, "pattern");
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "Regex"));
    *literal = false;
    if (!s) {
        s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "String"));
        *literal = true;
    }
    if (!s || !*s) *why = "Split pre_tokenizer without a pattern";
    return s && *s ? s : NULL;
}

/* The Split regexes were written for Oniguruma (HF runs them with the onig crate), whose \s
 * is Unicode White_Space. PCRE2 10.42's \s in UCP mode also matches U+180E MONGOLIAN VOWEL
 * SEPARATOR (a space before Unicode 6.3), which splits some texts differently. This rewrites
 * the escapes, nothing else: \s becomes the White_Space set (inside a class its members), \S
 * outside a class its complement; \S inside a class is left as it is (PCRE2's meaning).
 * Returns a malloc'ed pattern. */
#define WHITE_SPACE "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static char *onig_compat(const char *pat)
{
    struct strbuf o = {0};
    bool in_class = false;
    for (const char *p = pat; *p; p++) {
        if (p[0] == '\\' && p[1] == 'Q') { /* \Q...\E: copied as is */
            const char *e = strstr(p + 2, "\\E");
            size_t n = e ? (size_t)(e + 2 - p) : strlen(p);
            sb_append(&o, p, n);
            p += n - 1;
        } else if (p[0] == '\\' && p[1] == 's') {
            sb_puts(&o, in_class ? WHITE_SPACE : "[" WHITE_SPACE "]");
            p++;
        } else if (p[0] == '\\' && p[1] == 'S' && !in_class) {
            sb_puts(&o, "[^" WHITE_SPACE "]");
            p++;
        } else if (p[0] == '\\' && p[1]) {
            sb_append(&o, p, 2);
            p++;
        } else if (!in_class && p[0] == '[') {
            in_class = true;
            size_t n = 1 + (p[1] == '^'); /* a ']' right after '[' or '[^' is a literal */
            if (p[n] == ']') n++;
            sb_append(&o, p, n);
            p += n - 1;
        } else if (in_class && p[0] == '[' && p[1] == ':' && strstr(p + 2, ":]")) {
            size_t n = (size_t)(strstr(p + 2, ":]") + 2 - p); /* [:posix:] */
            sb_append(&o, p, n);
            p += n - 1;
        } else {
            if (in_class && p[0] == ']') in_class = false;
            sb_append(&o, p, 1);
        }
    }
    sb_append(&o, "", 0);
    return o.s;
}

static int added_cmp(const void *a, const void *b)
{
    const struct tok_added *x = a, *y = b;
    unsigned char cx = (unsigned char)x->s[0], cy = (unsigned char)y->s[0];
    if (cx != cy) return cx < cy ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Builds t from a tokenizer.json tree (or the same tree made from the slow files). src names
 * the source in messages; merge_line (NULL for tokenizer.json) maps merge ranks to the lines
 * of merges_src. */
static int tok_build(struct tokenizer *t, const cJSON *root, const char *src,
                     const char *merges_src, const int32_t *merge_line, struct vlm_err *err)
{
    int rc = 0;
    struct strbuf raw = {0}, bytes = {0};
    /* --- model: BPE vocab and merges --- */
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) LOAD_FAIL("%s has no \"model\" object", src);
    const char *mtype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    if (mtype && strcmp(mtype, "BPE") != 0) LOAD_FAIL("model type %.40s is not BPE", mtype);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !vocab->child) LOAD_FAIL("model has no vocab object");
    if (!cJSON_IsArray(merges)) LOAD_FAIL("model has no merges array");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble > 0) LOAD_FAIL("BPE dropout is not supported");
    const char *cont = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "continuing_subword_prefix"));
    const char *suffix = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "end_of_word_suffix"));
    if ((cont && *cont) || (suffix && *suffix)) LOAD_FAIL("BPE subword prefix/suffix is not supported");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback")))
        LOAD_FAIL("BPE byte_fallback is not supported");
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) LOAD_FAIL("added_tokens is not an array");

    /* ids: the table spans the largest id of vocab and added tokens */
    int64_t max_id = -1, id = 0;
    size_t n_vocab = 0;
    for (const cJSON *v = vocab->child; v; v = v->next, n_vocab++) {
        if (!json_int(v, 0, TOK_MAX_ID - 1, &id)) LOAD_FAIL("vocab entry has a bad id");
        if (!v->string || !utf8_valid(v->string, strlen(v->string)))
            LOAD_FAIL("vocab entry has a bad key");
        max_id = VLM_MAX(max_id, id);
    }
    int n_added = 0;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next, n_added++) {
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content"));
        if (!json_int(cJSON_GetObjectItemCaseSensitive(a, "id"), 0, TOK_MAX_ID - 1, &id) || !c || !*c)
            LOAD_FAIL("added token %d needs an id and a non-empty content", n_added);
        max_id = VLM_MAX(max_id, id);
    }
    t->n_ids = (int32_t)(max_id + 1);
    t->tokens = xcalloc((size_t)t->n_ids, sizeof *t->tokens);
    t->str_mask = table_size_for(n_vocab + (size_t)n_added) - 1;
    t->str_slots = xmalloc((t->str_mask + 1) * sizeof *t->str_slots);
    memset(t->str_slots, 0xff, (t->str_mask + 1) * sizeof *t->str_slots);

    /* added tokens first: they win both id -> token and spelling -> id, as in HF */
    t->added = xcalloc((size_t)n_added + 1, sizeof *t->added);
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content"));
        if (!utf8_valid(c, strlen(c))) LOAD_FAIL("added token content is not UTF-8");
        json_int(cJSON_GetObjectItemCaseSensitive(a, "id"), 0, TOK_MAX_ID - 1, &id);
        bool special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "special"));
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "lstrip")) ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "rstrip")) ||
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(a, "single_word")))
            log_warn("tokenizer: added token %.40s: lstrip/rstrip/single_word are ignored", c);
        set_token(t, &raw, &bytes, (int32_t)id, c, strlen(c), (uint8_t)(TOK_ADDED | (special ? TOK_SPECIAL : 0)));
    }
    for (const cJSON *v = vocab->child; v; v = v->next) {
        json_int(v, 0, TOK_MAX_ID - 1, &id);
        if (!(t->tokens[id].flags & TOK_ADDED)) set_token(t, &raw, &bytes, (int32_t)id, v->string, strlen(v->string), 0);
    }
    if (raw.n > UINT32_MAX || bytes.n > UINT32_MAX) LOAD_FAIL("vocabulary too large");
    t->raw = raw.s;
    t->bytes = bytes.s;
    raw = (struct strbuf){0};
    bytes = (struct strbuf){0};
    /* spellings: added tokens first (HF's token_to_id asks them first), then the vocab;
     * a spelling under two ids keeps the lower id */
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->tokens[i].flags & TOK_ADDED) str_insert(t, i);
    for (int32_t i = 0; i < t->n_ids; i++)
        if ((t->tokens[i].flags & (TOK_EXISTS | TOK_ADDED)) == TOK_EXISTS) str_insert(t, i);

    /* added-token matcher: sorted by first byte, longest first */
    int k = 0;
    for (int32_t i = 0; i < t->n_ids; i++) {
        const struct tok_entry *e = &t->tokens[i];
        if (!(e->flags & TOK_ADDED)) continue;
        t->added[k++] = (struct tok_added){t->raw + e->raw_off, e->raw_len, i};
    }
    t->n_added = k;
    qsort(t->added, (size_t)k, sizeof *t->added, added_cmp);
    for (int b = 0, j = 0; b <= 256; b++) {
        while (j < k && (unsigned char)t->added[j].s[0] < b) j++;
        t->added_start[b] = j;
    }

    /* single-byte tokens, then merges: rank = position in the list */
    for (int b = 0; b < 256; b++) {
        char s[4];
        int n = utf8_encode(byte_cp[b], s);
        t->byte_id[b] = str_lookup(t, s, (size_t)n);
    }
    size_t n_merges = (size_t)cJSON_GetArraySize(merges);
    t->pair_mask = table_size_for(n_merges) - 1;
    t->pairs = xmalloc((t->pair_mask + 1) * sizeof *t->pairs);
    memset(t->pairs, 0xff, (t->pair_mask + 1) * sizeof *t->pairs);
    struct strbuf cat = {0};
    int32_t rank = 0;
    for (const cJSON *m = merges->child; m; m = m->next, rank++) {
        const char *a, *b;
        size_t na, nb;
        if (cJSON_IsString(m)) {
            a = m->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) { sb_free(&cat); LOAD_FAIL("merge %d is not \"a b\"", rank); }
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = strlen(b);
        } else if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) && cJSON_IsString(m->child->next)) {
            a = m->child->valuestring;
            b = m->child->next->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else {
            sb_free(&cat);
            LOAD_FAIL("merge %d is neither \"a b\" nor [a, b]", rank);
        }
        cat.n = 0;
        sb_append(&cat, a, na);
        sb_append(&cat, b, nb);
        int32_t ia = str_lookup(t, a, na), ib = str_lookup(t, b, nb), iab = str_lookup(t, cat.s, cat.n);
        if (ia < 0 || ib < 0 || iab < 0) {
            sb_free(&cat);
            if (merge_line)
                LOAD_FAIL("%s line %d (%.40s %.40s) names a token not in vocab.json", merges_src,
                          merge_line[rank], a, b);
            LOAD_FAIL("merge %d (%.40s %.40s) names a token not in the vocab", rank, a, b);
        }
        pair_insert(t, ia, ib, rank, iab);
    }
    sb_free(&cat);

    /* --- normalizer: none or NFC --- */
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const char *nt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(norm, "type"));
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        if (nt && strcmp(nt, "NFC") == 0) t->nfc = true;
        else if (nt && strcmp(nt, "Sequence") == 0 && cJSON_IsArray(list)) {
            for (const cJSON *n = list->child; n; n = n->next) {
                const char *it = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "type"));
                if (!it || strcmp(it, "NFC") != 0) LOAD_FAIL("unsupported normalizer %.40s", it ? it : "?");
                t->nfc = true;
            }
        } else {
            LOAD_FAIL("unsupported normalizer %.40s", nt ? nt : "?");
        }
    }

    /* --- pre_tokenizer: the Split regex, compiled as written --- */
    bool literal;
    const char *why = NULL;
    const char *pat = find_split(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &literal, &why);
    if (!pat) LOAD_FAIL("%s", why);
    int ecode;
    PCRE2_SIZE eoff;
    char *compat = literal ? xstrdup(pat) : onig_compat(pat);
    t->re = pcre2_compile((PCRE2_SPTR)compat, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0), &ecode, &eoff, NULL);
    free(compat);
    if (!t->re) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        LOAD_FAIL("split regex does not compile at offset %zu: %s", (size_t)eoff, (const char *)msg);
    }
    t->re_jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;

done:
    sb_free(&raw);
    sb_free(&bytes);
    return rc;
}

static void tok_init_once(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, bytelevel_init);
}

int tok_load(struct tokenizer **out, const char *path, struct vlm_err *err)
{
    tok_init_once();
    *out = NULL;
    size_t len;
    char *text = vlm_read_file(path, &len);
    if (!text)
        return vlm_err_set(err, VLM_EIO, 500, "tokenizer: cannot read %s: %s", path,
                           strerror(errno));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    struct tokenizer *t = xcalloc(1, sizeof *t);
    int rc = root ? tok_build(t, root, path, NULL, NULL, err)
                  : vlm_err_set(err, VLM_EINVAL, 500, "tokenizer: %s is not valid JSON", path);
    cJSON_Delete(root);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int tok_load_slow(struct tokenizer **out, const struct tok_slow_files *f, struct vlm_err *err)
{
    tok_init_once();
    *out = NULL;
    cJSON *root;
    int32_t *lines;
    int rc = tok_slow_tree(&root, &lines, f, err);
    if (rc) return rc;
    char src[4200], merges[4200];
    snprintf(src, sizeof src, "%s/vocab.json", f->dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", f->dir);
    struct tokenizer *t = xcalloc(1, sizeof *t);
    rc = tok_build(t, root, src, merges, lines, err);
    cJSON_Delete(root);
    free(lines);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tok_load_dir(struct tokenizer **out, const char *dir, struct vlm_err *err)
{
    *out = NULL;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (file_exists(path)) {
        int rc = tok_load(out, path, err);
        if (!rc) log_info("tokenizer: %s (%d ids, %d added)", path, (*out)->n_ids, (*out)->n_added);
        return rc;
    }
    static const char *const names[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                        "added_tokens.json", "special_tokens_map.json"};
    char *text[5] = {0};
    size_t len[5] = {0};
    int rc = 0;
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (!file_exists(path)) {
            if (i < 2) {
                rc = vlm_err_set(err, VLM_EIO, 500, "tokenizer: %s: looked for tokenizer.json, "
                                 "then vocab.json + merges.txt: %s is missing", dir, names[i]);
                goto done;
            }
            continue;
        }
        text[i] = vlm_read_file(path, &len[i]);
        if (!text[i]) {
            rc = vlm_err_set(err, VLM_EIO, 500, "tokenizer: cannot read %s: %s", path,
                             strerror(errno));
            goto done;
        }
    }
    struct tok_slow_files f = {.dir = dir};
    struct tok_text *slot[5] = {&f.vocab, &f.merges, &f.config, &f.added_tokens, &f.special_map};
    for (int i = 0; i < 5; i++) *slot[i] = (struct tok_text){text[i], len[i]};
    rc = tok_load_slow(out, &f, err);
    if (!rc)
        log_info("tokenizer: %s: slow files vocab.json + merges.txt%s%s%s (%d ids, %d added)", dir,
                 text[2] ? " + tokenizer_config.json" : "", text[3] ? " + added_tokens.json" : "",
                 text[4] ? " + special_tokens_map.json" : "", (*out)->n_ids, (*out)->n_added);
done:
    for (int i = 0; i < 5; i++) free(text[i]);
    return rc;
}

void tok_free(struct tokenizer *t)
{
    if (!t) return;
    free(t->tokens);
    free(t->raw);
    free(t->bytes);
    free(t->str_slots);
    free(t->pairs);
    free(t->added);
    pcre2_code_free(t->re);
    free(t);
}

int32_t tok_find(const struct tokenizer *t, const char *token)
{
    return str_lookup(t, token, strlen(token));
}

int32_t tok_vocab_size(const struct tokenizer *t)
{
    return t->n_ids;
}

bool tok_is_special(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->tokens[id].flags & TOK_SPECIAL);
}

bool tok_is_added(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_ids && (t->tokens[id].flags & TOK_ADDED);
}

int32_t tok_stop_ids(const struct tokenizer *t, const int32_t *eos, int32_t n_eos, int32_t *out,
                     int32_t cap)
{
    int32_t cand[2 + 64], n = 0, m = 0;
    cand[n++] = tok_find(t, "<|im_end|>");
    cand[n++] = tok_find(t, "<|endoftext|>");
    for (int32_t i = 0; i < n_eos && n < (int32_t)ARRAY_LEN(cand); i++) cand[n++] = eos[i];
    for (int32_t i = 0; i < n && m < cap; i++) {
        bool dup = cand[i] < 0;
        for (int32_t k = 0; k < m && !dup; k++) dup = out[k] == cand[i];
        if (!dup) out[m++] = cand[i];
    }
    return m;
}

const char *tok_bytes(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_ids || !(t->tokens[id].flags & TOK_EXISTS)) return NULL;
    if (len) *len = t->tokens[id].bytes_len;
    return t->bytes + t->tokens[id].bytes_off;
}

/* ==== Encoding ====
 * tok_encode: validate, cut out added tokens, then per piece NFC -> regex split -> BPE per
 * word. All scratch memory lives in a struct tok_work made per call, so calls on one
 * tokenizer may run in parallel. */
struct tok_sym {
    int32_t id;
    int32_t prev, next; /* live neighbours, -1 at the ends */
};

struct tok_heap_item {
    int32_t rank;
    int32_t pos; /* left symbol */
    int32_t id;  /* merged id expected, to recognise stale items */
};

struct tok_work {
    struct tok_sym *sym;         /* (cap) */
    struct tok_heap_item *heap;  /* (3 * cap) */
    size_t cap;
    pcre2_match_data *md;
};

static bool work_reserve(struct tok_work *w, size_t n)
{
    if (n <= w->cap) return true;
    size_t cap = VLM_MAX(n, 2 * w->cap);
    size_t hsize;
    if (!vlm_mul_ok(cap, 3 * sizeof *w->heap, &hsize)) return false;
    void *s = tryrealloc(w->sym, cap * sizeof *w->sym);
    if (!s) return false;
    w->sym = s;
    void *h = tryrealloc(w->heap, hsize);
    if (!h) return false;
    w->heap = h;
    w->cap = cap;
    return true;
}

static inline bool heap_less(const struct tok_heap_item *a, const struct tok_heap_item *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct tok_heap_item *h, size_t *n, struct tok_heap_item x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static struct tok_heap_item heap_pop(struct tok_heap_item *h, size_t *n)
{
    struct tok_heap_item top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

/* BPE for long words: a heap of candidate merges ordered by (rank, position) with lazy
 * deletion, O(n log n). sym[0..n) holds the byte ids on entry. */
static void bpe_heap(const struct tokenizer *t, struct tok_work *w, int32_t n)
{
    struct tok_sym *sym = w->sym;
    size_t nh = 0;
    for (int32_t i = 0; i < n; i++) {
        sym[i].prev = i - 1;
        sym[i].next = i + 1 < n ? i + 1 : -1;
    }
    for (int32_t i = 0; i + 1 < n; i++) {
        const struct tok_pair *p = pair_lookup(t, sym[i].id, sym[i + 1].id);
        if (p) heap_push(w->heap, &nh, (struct tok_heap_item){p->rank, i, p->id});
    }
    while (nh) {
        struct tok_heap_item top = heap_pop(w->heap, &nh);
        struct tok_sym *l = &sym[top.pos];
        if (l->id < 0 || l->next < 0) continue;
        const struct tok_pair *p = pair_lookup(t, l->id, sym[l->next].id);
        if (!p || p->id != top.id) continue; /* stale: one side changed since the push */
        struct tok_sym *r = &sym[l->next];
        l->id = p->id;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = top.pos;
        r->id = -1;
        if (l->prev >= 0) {
            const struct tok_pair *q = pair_lookup(t, sym[l->prev].id, l->id);
            if (q) heap_push(w->heap, &nh, (struct tok_heap_item){q->rank, l->prev, q->id});
        }
        if (l->next >= 0) {
            const struct tok_pair *q = pair_lookup(t, l->id, sym[l->next].id);
            if (q) heap_push(w->heap, &nh, (struct tok_heap_item){q->rank, top.pos, q->id});
        }
    }
}

/* BPE for short words: rescan all adjacent pairs for the lowest rank (leftmost on ties),
 * merge it, repeat. Same order as the heap; faster for the few bytes of most words. */
static int32_t bpe_small(const struct tokenizer *t, int32_t *ids, int32_t n)
{
    int32_t rank[TOK_MAX_WORD_SMALL], merged[TOK_MAX_WORD_SMALL];
    for (int32_t i = 0; i + 1 < n; i++) {
        const struct tok_pair *p = pair_lookup(t, ids[i], ids[i + 1]);
        rank[i] = p ? p->rank : INT32_MAX;
        merged[i] = p ? p->id : -1;
    }
    while (n > 1) {
        int32_t best = -1, br = INT32_MAX;
        for (int32_t i = 0; i + 1 < n; i++)
            if (rank[i] < br) { br = rank[i]; best = i; }
        if (best < 0) break;
        ids[best] = merged[best];
        for (int32_t i = best + 1; i + 1 < n; i++) {
            ids[i] = ids[i + 1];
            rank[i] = rank[i + 1];
            merged[i] = merged[i + 1];
        }
        n--;
        for (int32_t i = best - 1; i <= best; i++) {
            if (i < 0 || i + 1 >= n) continue;
            const struct tok_pair *p = pair_lookup(t, ids[i], ids[i + 1]);
            rank[i] = p ? p->rank : INT32_MAX;
            merged[i] = p ? p->id : -1;
        }
    }
    return n;
}

/* Encodes one pre-tokenized word s[0..n) and appends its ids. */
static int bpe_word(const struct tokenizer *t, struct tok_work *w, const unsigned char *s, size_t n,
                    struct i32_vec *out)
{
    if (n == 1) {
        if (t->byte_id[s[0]] >= 0) i32_vec_push(out, t->byte_id[s[0]]);
        return 0;
    }
    if (t->ignore_merges && n <= 256) {
        char buf[512];
        size_t k = 0;
        for (size_t i = 0; i < n; i++) k += (size_t)utf8_encode(byte_cp[s[i]], buf + k);
        int32_t id = str_lookup(t, buf, k);
        if (id >= 0) { i32_vec_push(out, id); return 0; }
    }
    /* bytes without a token are dropped, as HF does when there is no unk token */
    int32_t m = 0;
    if (n <= TOK_MAX_WORD_SMALL) {
        int32_t ids[TOK_MAX_WORD_SMALL];
        for (size_t i = 0; i < n; i++)
            if (t->byte_id[s[i]] >= 0) ids[m++] = t->byte_id[s[i]];
        m = bpe_small(t, ids, m);
        i32_vec_append(out, ids, (size_t)m);
        return 0;
    }
    if (n > INT32_MAX / 4 || !work_reserve(w, n)) return VLM_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (t->byte_id[s[i]] >= 0) w->sym[m++].id = t->byte_id[s[i]];
    bpe_heap(t, w, m);
    for (int32_t i = 0; i >= 0 && i < m; i = w->sym[i].next) i32_vec_push(out, w->sym[i].id);
    return 0;
}

/* Normalizes, splits and encodes the text between two added tokens. */
static int encode_piece(const struct tokenizer *t, struct tok_work *w, const char *text, size_t len,
                        struct i32_vec *out, struct vlm_err *err)
{
    if (len == 0) return 0;
    const unsigned char *s = (const unsigned char *)text;
    utf8proc_uint8_t *nfc = NULL;
    if (t->nfc) {
        bool ascii = true;
        for (size_t i = 0; i < len && ascii; i++) ascii = s[i] < 0x80;
        if (!ascii) {
            utf8proc_ssize_t r = utf8proc_map(s, (utf8proc_ssize_t)len, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r < 0) {
                int code = r == UTF8PROC_ERROR_NOMEM ? VLM_ENOMEM : VLM_EINVAL;
                return vlm_err_set(err, code, code == VLM_ENOMEM ? 503 : 400,
                                   "tokenizer: normalization failed: %s", utf8proc_errmsg(r));
            }
            s = nfc;
            len = (size_t)r;
        }
    }
    int rc = 0;
    size_t off = 0, last = 0;
    while (off < len) {
        int m = t->re_jit ? pcre2_jit_match(t->re, s, len, off, 0, w->md, NULL)
                          : PCRE2_ERROR_JIT_BADOPTION;
        if (m < 0 && m != PCRE2_ERROR_NOMATCH)
            m = pcre2_match(t->re, s, len, off, PCRE2_NO_UTF_CHECK, w->md, NULL);
        if (m == PCRE2_ERROR_NOMATCH) break;
        if (m < 0) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = vlm_err_set(err, VLM_EINVAL, 400, "tokenizer: split regex failed: %s", (const char *)msg);
            goto done;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->md);
        size_t ms = ov[0], me = ov[1];
        if (ms > last && (rc = bpe_word(t, w, s + last, ms - last, out))) goto oom;
        if (me > ms && (rc = bpe_word(t, w, s + ms, me - ms, out))) goto oom;
        last = me;
        if (me > ms) off = me;
        else { /* empty match: step over one character */
            off = ms + 1;
            while (off < len && utf8_is_cont(s[off])) off++;
        }
    }
    if (last < len && (rc = bpe_word(t, w, s + last, len - last, out))) goto oom;
    goto done;
oom:
    rc = vlm_err_set(err, VLM_ENOMEM, 503, "tokenizer: out of memory for a %zu-byte word", len);
done:
    free(nfc);
    return rc;
}

int tok_encode(const struct tokenizer *t, const char *text, size_t len, struct i32_vec *out,
               struct vlm_err *err)
{
    const unsigned char *s = (const unsigned char *)text;
    if (len == 0) return 0;
    if (!utf8_valid(text, len)) return vlm_err_set(err, VLM_EINVAL, 400, "tokenizer: input is not valid UTF-8");
    struct tok_work w = {0};
    w.md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!w.md) return vlm_err_set(err, VLM_ENOMEM, 503, "tokenizer: out of memory");
    int rc = 0;
    size_t piece = 0;
    for (size_t i = 0; i < len;) {
        int32_t lo = t->added_start[s[i]], hi = t->added_start[s[i] + 1], match = -1;
        for (int32_t a = lo; a < hi; a++) { /* longest first */
            const struct tok_added *ad = &t->added[a];
            if (ad->len <= len - i && memcmp(text + i, ad->s, ad->len) == 0) { match = a; break; }
        }
        if (match < 0) { i++; continue; }
        if ((rc = encode_piece(t, &w, text + piece, i - piece, out, err))) goto done;
        i32_vec_push(out, t->added[match].id);
        i += t->added[match].len;
        piece = i;
    }
    rc = encode_piece(t, &w, text + piece, len - piece, out, err);
done:
    pcre2_match_data_free(w.md);
    free(w.sym);
    free(w.heap);
    return rc;
}

/* ==== Decoding ==== */
static bool decode_skip(const struct tokenizer *t, int32_t id, bool skip_special)
{
    if (id < 0 || id >= t->n_ids || !(t->tokens[id].flags & TOK_EXISTS)) return true;
    return skip_special && (t->tokens[id].flags & TOK_SPECIAL);
}

void tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                struct strbuf *out)
{
    struct strbuf raw = {0};
    for (size_t i = 0; i < n; i++) {
        if (decode_skip(t, ids[i], skip_special)) continue;
        const struct tok_entry *e = &t->tokens[ids[i]];
        sb_append(&raw, t->bytes + e->bytes_off, e->bytes_len);
    }
    sb_append(out, "", 0);
    if (raw.n) utf8_lossy(out, raw.s, raw.n, true);
    sb_free(&raw);
}

void tok_stream_init(struct tok_stream *s)
{
    memset(s, 0, sizeof *s);
}

void tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id,
                     bool skip_special, struct strbuf *out)
{
    if (decode_skip(t, id, skip_special)) return;
    const struct tok_entry *e = &t->tokens[id];
    const unsigned char *b = (const unsigned char *)t->bytes + e->bytes_off;
    size_t n = e->bytes_len;
    VLM_ASSERT(s->n_pending >= 0 && s->n_pending <= 3);
    if (s->n_pending == 0) {
        size_t used = utf8_lossy(out, (const char *)b, n, false);
        s->n_pending = (int)(n - used);
        memcpy(s->pending, b + used, n - used);
        return;
    }
    /* pending + token bytes: join them (tokens are short; long ones go to the heap) */
    unsigned char small[256], *buf = small;
    size_t total = (size_t)s->n_pending + n;
    if (total > sizeof small) buf = xmalloc(total);
    memcpy(buf, s->pending, (size_t)s->n_pending);
    memcpy(buf + s->n_pending, b, n);
    size_t used = utf8_lossy(out, (const char *)buf, total, false);
    s->n_pending = (int)(total - used);
    memcpy(s->pending, buf + used, total - used);
    if (buf != small) free(buf);
}

void tok_stream_flush(struct tok_stream *s, struct strbuf *out)
{
    if (s->n_pending > 0) sb_puts(out, UTF8_REPLACEMENT);
    s->n_pending = 0;
}
