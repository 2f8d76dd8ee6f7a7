/*
 * tokenizer: byte-level BPE as described by a Hugging Face tokenizer.json (Qwen2/Qwen3 and
 * anything built the same way), giving the same ids as the `tokenizers` library; or by the
 * slow Qwen2Tokenizer files (vocab.json, merges.txt, ...: tok_load_slow), giving the ids
 * transformers' AutoTokenizer builds from them.
 *
 * Encoding runs, in this order:
 *   1. added tokens ("added_tokens", special or not) are cut out of the raw text first,
 *      leftmost-longest exact match, before any normalization;
 *   2. every piece between them is NFC-normalized (utf8proc) when the file asks for NFC;
 *   3. split with the file's own pre_tokenizer Split regex (PCRE2, UTF + UCP, JIT when
 *      available), "Isolated" behaviour: matches and the gaps between them are words;
 *   4. each word's bytes go through the GPT-2 byte-to-unicode map (implicitly: BPE runs on
 *      byte ids) and are merged pair by pair, lowest merge rank first, leftmost on ties.
 * Decoding maps tokens back to bytes and replaces invalid UTF-8 by U+FFFD the way Rust's
 * String::from_utf8_lossy does (one U+FFFD per maximal invalid subpart). The streaming
 * decoder gives the same text, one token at a time, and never emits half a character.
 *
 * Callers: server/ (prompt construction, detokenizing the stream), valley-tokenize, tests.
 * Thread safety: tok_load/tok_free are not; after tok_load returns, the tokenizer is
 * read-only and every other function may be called from many threads at once (no cache,
 * all scratch memory is per call). A struct tok_stream belongs to one caller.
 *
 * Not supported (rejected or ignored, none used by Qwen): added tokens with lstrip/rstrip/
 * single_word (ignored, with a warning), "normalized": true added tokens are matched on the
 * raw text too, normalizers other than NFC/none (rejected), BPE dropout, unk tokens,
 * byte_fallback.
 *
 * Known differences from HF, all from Unicode table versions (found by a differential run of
 * 100,000 random strings, ~2 per 10,000 strings of random code points, none in the corpus):
 * letters and digits new in Unicode 15/16 are not \p{L}/\p{N} to PCRE2 10.42 (Unicode 14)
 * while HF's Oniguruma knows them; and HF's NFC crate has older combining-class data than
 * utf8proc 2.6, so it does not reorder combining marks added in recent Unicode versions
 * (e.g. U+0345 followed by U+0D3B). One dialect difference is handled: see onig_compat().
 */
#ifndef VLM_TOKENIZER_H
#define VLM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"

struct tokenizer; /* opaque */

/* Loads tokenizer_json_path. 0 and *out (owned by the caller, free with tok_free), or
 * VLM_EIO (unreadable file) / VLM_EINVAL (malformed or unsupported content) with err
 * filled (err may be NULL). */
int tok_load(struct tokenizer **out, const char *tokenizer_json_path, struct vlm_err *err);
void tok_free(struct tokenizer *t); /* NULL ok */

/* The tokenizer of a model folder: dir/tokenizer.json when it exists, else the slow files
 * (tok_load_slow) when dir/vocab.json and dir/merges.txt exist, else VLM_EIO with a message
 * naming the files looked for. Logs which files it used. */
int tok_load_dir(struct tokenizer **out, const char *dir, struct vlm_err *err);

/* The slow (Qwen2Tokenizer) files of a folder, read: s NULL when the file is absent. */
struct tok_text {
    const char *s;
    size_t n;
};
struct tok_slow_files {
    const char *dir; /* for messages */
    struct tok_text vocab, merges, config, added_tokens, special_map;
};

/* Builds the tokenizer transformers' AutoTokenizer (Qwen2TokenizerFast) builds from the slow
 * files, with the same ids:
 *   - vocab.json (required; ids 0..N-1, each once) and merges.txt (required; rank = line
 *     order, read as Python reads it: universal newlines, each line stripped and split on
 *     white space into exactly two tokens, a first "#version:" line and empty lines skipped;
 *     a pair listed twice keeps its first rank);
 *   - NFC, the Qwen2 split regex (engine/slowtok.h), byte-level BPE, as Qwen2Converter;
 *   - added tokens from tokenizer_config.json's added_tokens_decoder when it has one, else
 *     from added_tokens.json (legacy); special when flagged so or when named by a special-
 *     token setting: bos/eos/unk/sep/pad/cls/mask_token and additional_special_tokens of
 *     tokenizer_config.json (without added_tokens_decoder: overridden by
 *     special_tokens_map.json), defaults unk = eos = pad = "<|endoftext|>"; a setting that
 *     names no added token becomes one;
 *   - ids: transformers ignores the ids the files give and numbers added tokens itself (a
 *     token in vocab.json keeps its id, a new one follows the vocab); a file whose ids
 *     differ from that numbering is refused, so the ids are the ones the files state.
 * Also refused: add_prefix_space true, invalid UTF-8, malformed JSON. Errors name the file
 * (and the merges.txt line). config, added_tokens and special_map are optional. */
int tok_load_slow(struct tokenizer **out, const struct tok_slow_files *f, struct vlm_err *err);

/* Appends the ids of text[0..len) to out (text need not be NUL-terminated; NUL bytes are
 * ordinary characters). Invalid UTF-8 -> VLM_EINVAL, VLM_ENOMEM if a text-sized buffer
 * cannot be allocated; out then holds what it held before plus possibly a prefix.
 * err may be NULL. */
int tok_encode(const struct tokenizer *t, const char *text, size_t len, struct i32_vec *out,
               struct vlm_err *err);

/* The id of a token spelled exactly as in tokenizer.json (added token content, or the
 * byte-level vocab string such as "Ġhello"), or -1. */
int32_t tok_find(const struct tokenizer *t, const char *token);
int32_t tok_vocab_size(const struct tokenizer *t); /* max id + 1 */
bool tok_is_special(const struct tokenizer *t, int32_t id); /* false for invalid ids */
bool tok_is_added(const struct tokenizer *t, int32_t id);   /* an added token (special or not) */

/* The stop set: the tokenizer's <|im_end|> and <|endoftext|> (when it has them), then
 * eos[0..n_eos) (config.json / generation_config.json eos_token_id), without repeats, at
 * most cap ids into out. Returns the count. Qwen3 Base configs list only <|endoftext|>, yet
 * the chat reference stops at <|im_end|> (docs/MODEL.md, "Generation and stopping"). */
int32_t tok_stop_ids(const struct tokenizer *t, const int32_t *eos, int32_t n_eos, int32_t *out,
                     int32_t cap);
/* The decoded bytes of one token (not NUL-terminated, may be part of a UTF-8 character),
 * borrowed until tok_free; NULL for an id that names no token. */
const char *tok_bytes(const struct tokenizer *t, int32_t id, size_t *len);

/* Appends the text of ids[0..n) to out. Ids that name no token are skipped; special tokens
 * too when skip_special. Same result as HF decode(ids, skip_special_tokens). */
void tok_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                struct strbuf *out);

/* Incremental decoding: push ids one by one; the concatenation of everything appended,
 * after tok_stream_flush, equals tok_decode of all the ids. */
struct tok_stream {
    char pending[8]; /* the incomplete UTF-8 tail not yet emitted (at most 3 bytes) */
    int n_pending;
};
void tok_stream_init(struct tok_stream *s);
/* Appends the complete UTF-8 text that id makes available; keeps an incomplete tail pending. */
void tok_stream_push(const struct tokenizer *t, struct tok_stream *s, int32_t id,
                     bool skip_special, struct strbuf *out);
/* End of stream: pending bytes -> U+FFFD. The stream is empty (reusable) afterwards. */
void tok_stream_flush(struct tok_stream *s, struct strbuf *out);

#endif
