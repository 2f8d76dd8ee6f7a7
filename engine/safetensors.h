/*
 * safetensors: read-only access to Hugging Face .safetensors files, memory-mapped. One file,
 * or the shards named by model.safetensors.index.json, become one set of named tensors whose
 * data points straight into the maps (nothing is copied).
 *
 * The header is untrusted input: every length, offset and shape is checked with
 * overflow-safe arithmetic and a bad file is an error (VLM_EIO for I/O, VLM_EINVAL for
 * content), never a crash. The parser is fuzzed (tests/fuzz/fuzz_safetensors.c) and has a
 * malformed-file table test (tests/unit/test_safetensors.c).
 *
 * Called by model.c at start-up; a set is read-only once opened and may be shared by any
 * number of threads. st_write_file() is the small writer the test-checkpoint generator uses.
 *
 * File layout: [u64 little-endian N][N bytes of JSON header][data section]. The header maps
 * each tensor name to {"dtype", "shape", "data_offsets": [begin, end)} with offsets relative
 * to the data section; "__metadata__" holds free-form strings and is ignored.
 */
#ifndef VLM_SAFETENSORS_H
#define VLM_SAFETENSORS_H

#include "engine/backend.h"

#define ST_MAX_RANK 8                       /* more dimensions than this is a bad file */
#define ST_MAX_HEADER ((size_t)100 << 20)   /* 100 MiB of JSON header is a bad file */

struct st_tensor {
    const char *name;      /* owned by the set (borrowed by everyone else) */
    enum dtype type;       /* DT_F32, DT_BF16, DT_F16, DT_I32; DT_COUNT for I64 (accepted, unused) */
    int32_t rank;          /* 0..ST_MAX_RANK */
    int64_t shape[ST_MAX_RANK]; /* outermost first, as in the file and in PyTorch */
    const void *data;      /* borrowed: into the map, valid until st_close(); (nbytes) */
    size_t nbytes;         /* = prod(shape) * element size */
    const char *file;      /* owned by the set: base name of the file holding it */
};

struct st_set; /* opaque */

/* Maps one .safetensors file and parses its header. On success *out owns the map. */
int st_open_file(struct st_set **out, const char *path, struct vlm_err *err);

/* Opens the model folder dir: the shards listed in model.safetensors.index.json
 * ("weight_map": tensor name -> file name) when that file exists, otherwise
 * model.safetensors. Every tensor the index names must be in the shard it names, and a
 * tensor name may appear in one shard only. */
int st_open_dir(struct st_set **out, const char *dir, struct vlm_err *err);

/* Parses a safetensors image already in memory (the fuzz target's entry point). buf is
 * borrowed and must outlive the set; label names the source in error messages. */
int st_parse(struct st_set **out, const void *buf, size_t len, const char *label,
             struct vlm_err *err);

/* Frees the set and unmaps its files; accepts NULL. Every st_tensor.data becomes invalid. */
void st_close(struct st_set *s);

/* Lookup by exact name (binary search); NULL if absent. */
const struct st_tensor *st_find(const struct st_set *s, const char *name);
/* Iteration in name order: i in [0, st_count(s)). */
int32_t st_count(const struct st_set *s);
const struct st_tensor *st_get(const struct st_set *s, int32_t i);

/* Number of elements of t (prod(shape); 1 for rank 0). */
int64_t st_nelem(const struct st_tensor *t);
/* "BF16", "F16", "F32", "I32", "I64". */
const char *st_dtype_name(enum dtype t);

/* Writes tensors[0..n) (name, type, rank, shape, data; nbytes must match) to path in the
 * order given, with __metadata__ {"format": "pt"} so transformers accepts the file. The
 * output is a pure function of the input (byte-identical on every machine). */
int st_write_file(const char *path, const struct st_tensor *tensors, int32_t n,
                  struct vlm_err *err);
/* The same, but tensor i's bytes are produced by fill(ctx, i, buf) into a scratch buffer of
 * tensors[i].nbytes (tensors[i].data is ignored), so no tensor has to exist in memory
 * before it is written. */
typedef void (*st_fill_fn)(void *ctx, int32_t i, void *buf);
int st_write_file_fill(const char *path, const struct st_tensor *tensors, int32_t n,
                       st_fill_fn fill, void *ctx, struct vlm_err *err);

#endif
