/*
 * structured: structured-output requests (vLLM's surface) -> one struct grammar
 * (engine/grammar.h). JSON Schema, regular expressions, choices, any JSON object and forced
 * tool calls are compiled here (GBNF grammars by engine/gbnf.c); the engine only sees the
 * automaton and the token masks.
 *
 * Request fields read (chat and completions): response_format {type: text | json_object |
 * json_schema, json_schema: {name, schema, strict}}, structured_outputs {json, regex,
 * choice, grammar, json_object, disable_any_whitespace}, guided_json, guided_regex,
 * guided_choice, guided_grammar, guided_whitespace_pattern (refused), and tool_choice
 * "required" / {"type": "function", "function": {"name"}} with "tools". At most one
 * constraint per request; anything malformed is VLM_EINVAL / 400 naming the field and, for
 * schemas, the keyword and where it is (docs/HTTP.md, "Structured outputs", has the table).
 *
 * JSON text the grammars produce (st_compile_schema):
 *   - whitespace: by default any run of space, tab and newline between tokens (vLLM's
 *     default: xgrammar's any_whitespace); with disable_any_whitespace none at all;
 *   - object members in the order of "properties", required ones present, optional ones
 *     optional; further members only when additionalProperties is true or a schema
 *     (absent means none when "properties" is given, as vLLM's default strict mode, and
 *     any when it is not: {"type": "object"} is any object);
 *   - strings with any JSON escape, except where a pattern, format, enum or const fixes
 *     them (then characters appear as themselves, or with the short escape for '"', '\\'
 *     and control characters);
 *   - numbers without exponent when bounded; integers without "-0"; oneOf as anyOf.
 *
 * Compiled grammars are cached by their canonical text (kind, options and the compact JSON
 * of the schema), shared by reference count. Thread-safe.
 */
#ifndef VLM_STRUCTURED_H
#define VLM_STRUCTURED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/base.h"
#include "engine/grammar.h"
#include "server/tokenizer.h"

struct cJSON;

struct st_options {
    bool any_whitespace; /* true: vLLM's default */
};

/* JSON Schema (an object or a boolean) -> grammar of the JSON texts it allows. NULL and a
 * message naming the keyword and its place ("... at '#/properties/a'") in err. */
struct grammar *st_compile_schema(const struct cJSON *schema, const struct st_options *o,
                                  char *err, size_t errlen);
/* Any JSON object. */
struct grammar *st_compile_json_object(const struct st_options *o, char *err, size_t errlen);
/* The whole output matches re (Python re syntax, the supported subset). */
struct grammar *st_compile_regex(const char *re, size_t n, char *err, size_t errlen);
/* The output is a sentence of the GBNF grammar text[0..n) (engine/grammar.h, gb_gbnf). */
struct grammar *st_compile_grammar(const char *text, size_t n, char *err, size_t errlen);
/* The output is exactly one of the strings. */
struct grammar *st_compile_choice(const char *const *s, const size_t *len, int32_t n, char *err,
                                  size_t errlen);

/* What a request asks for, after st_parse_request. */
struct st_request {
    struct grammar *g;      /* owned reference; NULL: unconstrained */
    bool tool_calls;        /* the output is <tool_call> blocks (tool_choice required/named) */
};

/* Reads the structured-output fields of a parsed request body (see the top). tool_choice:
 * the raw field (NULL when absent); tools: the raw "tools" array (validated already).
 * chat: false for /v1/completions (tool_choice is a chat field). Returns 0 (out->g NULL
 * when nothing is asked), VLM_EINVAL / 400 or VLM_ENOMEM / 503 with err set. */
int st_parse_request(const struct cJSON *root, bool chat, struct st_request *out,
                     struct vlm_err *err);
void st_request_destroy(struct st_request *r); /* accepts a zeroed struct */

/* The vocabulary trie of tok over ids [0, n) (n >= the tokenizer's size: the model's rows
 * may be more; ids without a token, and special tokens, are never allowed by a mask), built
 * on first use and kept for the process. Thread-safe. */
const struct gram_vocab *st_vocab(const struct tokenizer *tok, int32_t n);

#endif
