/*
 * pyjson: JSON text -> the text Python writes for it, for the parts of a prompt and of a
 * response that vLLM produces with json.loads + json.dumps (the chat template's tojson filter
 * in HF transformers is json.dumps(x, ensure_ascii=False); the hermes tool parser writes
 * arguments with json.dumps(x, ensure_ascii=False)).
 *
 * It works on the text, not on a cJSON tree, because Python's output depends on the number
 * literals: "1.0" stays "1.0", "1E5" becomes "100000.0", integers keep every digit. Output:
 * ", " and ": " separators, keys in the given order, strings with only '"', '\\' and control
 * characters escaped ("\n" style where Python has one, else "\u00XX"), non-ASCII and "</" as
 * they are. The parser is strict JSON (RFC 8259, as Python's json.loads): what it does not
 * accept is VLM_EINVAL. Not reproduced: Python merges duplicated object keys (the last value
 * at the first key's place); here every member is written.
 *
 * Callers: server/openai.c (request tools and tool calls, the output tool parser) and the
 * tests. Pure functions, thread-safe.
 */
#ifndef VLM_PYJSON_H
#define VLM_PYJSON_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/base.h"

#define PYJSON_MAX_DEPTH 512 /* nesting deeper than this is VLM_EINVAL */

struct pyjson_span {
    const char *s; /* borrowed */
    size_t n;
};

/* Appends json.dumps(json.loads(s[0..n)), ensure_ascii=False) to out (out may be NULL: only
 * validate). Whitespace around the value is allowed, anything else after it is not. Returns
 * 0 or VLM_EINVAL (out may then hold a partial text). */
int pyjson_dumps(const char *s, size_t n, struct strbuf *out);

/* Iteration over the elements of an array or the members of an object, given as text that
 * starts (after whitespace) with '[' or '{'. Each step validates the element it passes. */
struct pyjson_iter {
    const char *p, *end;
    bool object, first;
    bool done; /* the closing bracket was read: the container is valid to its end */
};
/* Returns false when v is not an array or object. */
bool pyjson_iter_init(struct pyjson_iter *it, struct pyjson_span v);
/* Next element: key (objects: the raw string literal with its quotes; arrays: {NULL, 0}) and
 * val (the raw value text). Returns false at the end (it->done) or on invalid JSON. */
bool pyjson_iter_next(struct pyjson_iter *it, struct pyjson_span *key, struct pyjson_span *val);

/* Whether a raw key literal (with quotes, as pyjson_iter_next gives it) decodes to name. */
bool pyjson_key_is(struct pyjson_span key, const char *name);
/* The first member of object obj named name; false when absent (or obj is not an object). */
bool pyjson_member(struct pyjson_span obj, const char *name, struct pyjson_span *val);
/* Appends the decoded UTF-8 of a raw string literal (with quotes) to out. Returns 0, or
 * VLM_EINVAL for a literal that is not a valid JSON string or decodes to a NUL. */
int pyjson_string(struct pyjson_span lit, struct strbuf *out);

/* A validated OpenAI tool object (its raw text) as vLLM hands it to the chat template:
 * tool.model_dump() of its pydantic model, written by tojson. "type": "function" first, then
 * "function" with "name", "description" (null when absent), "parameters" (null when absent)
 * and the client's other members in order, then the tool's other members. Returns 0 or
 * VLM_EINVAL (invalid JSON). */
int pyjson_tool(struct pyjson_span tool, struct strbuf *out);

#endif
