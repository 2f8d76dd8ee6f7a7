/*
 * jsonstrict: request bodies parsed as Python's json.loads reads them (what an OpenAI-style
 * server in Python accepts), in front of cJSON, which on its own is laxer in some places and
 * loses data in others:
 *
 *   raw control characters (U+0000..U+001F) inside strings   400 (json.loads' strict mode)
 *   "\u0000" inside a string                                 400 (cJSON's strings end at NUL,
 *                                                            so the text would be cut short)
 *   bytes after the JSON value (other than whitespace)       400 ("extra data")
 *   a key repeated in one object                             the last value wins
 *   nesting deeper than JSONSTRICT_MAX_DEPTH                 400
 *
 * Every 400 names the problem and its byte offset. Thread-safe (no state).
 */
#ifndef VLM_JSONSTRICT_H
#define VLM_JSONSTRICT_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "engine/base.h"

#define JSONSTRICT_MAX_DEPTH 512

/* Checks s[0..n) (NUL bytes count as control characters) without building anything. 0, or
 * VLM_EINVAL with err (http_status 400) saying what is wrong and where. */
int json_check(const char *s, size_t n, struct vlm_err *err);

/* json_check, then cJSON, then duplicate keys resolved (last wins). 0 with *out owned by the
 * caller (cJSON_Delete), or an error: VLM_EINVAL (400) or VLM_ENOMEM (503). */
int json_parse_strict(const char *s, size_t n, cJSON **out, struct vlm_err *err);

#endif
