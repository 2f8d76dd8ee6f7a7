/*
 * tokenizer_slow: the slow Qwen2Tokenizer files turned into the tokenizer.json tree that
 * transformers builds from them; used by tokenizer.c (tok_load_slow), nothing else.
 */
#ifndef VLM_TOKENIZER_SLOW_H
#define VLM_TOKENIZER_SLOW_H

#include <cjson/cJSON.h>

#include "server/tokenizer.h"

/* *out: the tree (owned by the caller); *merge_line: the merges.txt line of each merge, by
 * rank (owned, free). 0, or VLM_EINVAL with err filled. */
int tok_slow_tree(cJSON **out, int32_t **merge_line, const struct tok_slow_files *f,
                  struct vlm_err *err);

#endif
