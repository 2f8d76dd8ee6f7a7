/*
 * slowtok: writes a Hugging Face tokenizer.json (Qwen2-style byte-level BPE) in the "slow"
 * file set that transformers' Qwen2Tokenizer reads: vocab.json, merges.txt, added_tokens.json,
 * special_tokens_map.json and tokenizer_config.json, and no tokenizer.json. Released Valley
 * folders ship only these files (docs/MODEL.md, "Tokenizer"); test checkpoints written this
 * way exercise the server's slow-file loader (server/tokenizer.h).
 *
 * Optionally adds the 10 Valley added tokens (slowtok_valley_tokens, special, not normalized)
 * right after the tokenizer's last id: 151669..151678 on the Qwen3 tokenizer, 151679 ids in
 * all. Valley's training code adds its marker tokens with special_tokens=True.
 *
 * Equivalence: AutoTokenizer.from_pretrained(out_dir) (which converts the slow files with
 * Qwen2Converter: NFC, the fixed Qwen2 split regex, byte-level BPE, merges in file order)
 * gives the same ids as the source tokenizer.json. What the slow files cannot express is
 * refused: another normalizer or split regex, a merge part containing white space, vocab ids
 * that are not 0..N-1, added-token ids that do not follow the vocab without gaps.
 *
 * Callers: engine/testmodel.c (valley-make-model --slow-tokenizer / --valley-tokens), tests.
 * Thread-safe (no shared state).
 */
#ifndef VLM_SLOWTOK_H
#define VLM_SLOWTOK_H

#include <stdbool.h>

#include "engine/base.h"

/* The Qwen2 pre-tokenizer split regex (as a C string), which the slow files imply. */
#define SLOWTOK_QWEN2_REGEX                                                                    \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"                         \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

#define SLOWTOK_N_VALLEY 10
extern const char *const slowtok_valley_tokens[SLOWTOK_N_VALLEY];

/* Writes the slow files equivalent to tokenizer_json_path (and the tokenizer_config.json
 * beside it, if any: its chat_template and special-token settings are kept) into out_dir,
 * which must exist. Does not write or remove a tokenizer.json. 0, or VLM_EIO / VLM_EINVAL
 * with err filled. */
int slowtok_write(const char *tokenizer_json_path, const char *out_dir, bool valley_tokens,
                  struct vlm_err *err);

/* Writes tokenizer.json and tokenizer_config.json into out_dir: those of
 * tokenizer_json_path's folder with the Valley tokens added (same ids as slowtok_write).
 * out_dir may be the source folder (the files are replaced). */
int slowtok_add_valley(const char *tokenizer_json_path, const char *out_dir, struct vlm_err *err);

#endif
