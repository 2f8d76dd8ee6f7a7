/*
 * base: what every module uses. Error codes, the user-facing error struct, log macros,
 * always-on asserts, checked allocation, growable int arrays, time, and bf16/f16
 * conversions. Lives in engine/ because every module above links the engine; nothing
 * else belongs here. All functions are thread-safe.
 */
#ifndef VLM_BASE_H
#define VLM_BASE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/fp.h"
#include "kernels/mix64.h"

/* ==== Return codes ====
 * Functions that can fail return int: 0 on success or one of these negative codes.
 * VLM_EAGAIN (no data yet, call again) and VLM_ENOSPC (KV pool full, a scheduling signal)
 * are not errors. */
enum {
    VLM_OK = 0,
    VLM_EINVAL = -1,      /* bad input or bad configuration */
    VLM_ENOMEM = -2,      /* an input-sized allocation failed */
    VLM_EIO = -3,         /* file or network error */
    VLM_ETOOBIG = -4,     /* over a configured limit */
    VLM_EDEVICE = -5,     /* accelerator error */
    VLM_EAGAIN = -6,      /* not an error: no data yet */
    VLM_ENOSPC = -7,      /* not an error: KV pool has no free block */
    VLM_ENOTFOUND = -8,   /* lookup miss */
    VLM_EUNSUPPORTED = -9 /* valid but not implemented here */
};
const char *vlm_strerror(int code);

/* An error that may reach a user: code, the HTTP status to answer with, and a message.
 * openai.c turns it into {"error": {...}}. */
struct vlm_err {
    int code;
    int http_status;
    char param[48]; /* the request field at fault, "" if none */
    char msg[200];
};
/* Fills *e (if non-NULL) and returns code, so callers can `return vlm_err_set(...)`. */
int vlm_err_set(struct vlm_err *e, int code, int http_status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int vlm_err_param(struct vlm_err *e, int code, int http_status, const char *param,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ==== Logging ====
 * One line per event on stderr: timestamp, level, message. The level is checked before
 * the arguments are evaluated. */
enum vlm_log_level { VLM_LOG_DEBUG, VLM_LOG_INFO, VLM_LOG_WARN, VLM_LOG_ERROR, VLM_LOG_OFF };
extern int vlm_log_level;
void vlm_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_debug(...) do { if (vlm_log_level <= VLM_LOG_DEBUG) vlm_log(VLM_LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  do { if (vlm_log_level <= VLM_LOG_INFO)  vlm_log(VLM_LOG_INFO,  __VA_ARGS__); } while (0)
#define log_warn(...)  do { if (vlm_log_level <= VLM_LOG_WARN)  vlm_log(VLM_LOG_WARN,  __VA_ARGS__); } while (0)
#define log_error(...) do { if (vlm_log_level <= VLM_LOG_ERROR) vlm_log(VLM_LOG_ERROR, __VA_ARGS__); } while (0)

/* ==== Asserts ====
 * VLM_ASSERT is always on: invariants and interface preconditions, never bad input.
 * VLM_DASSERT only in debug builds (hot loops, O(n) checks). ALWAYS/NEVER wrap defensive
 * branches on conditions believed impossible: abort in debug, a real check in release. */
_Noreturn void vlm_abort(const char *expr, const char *file, int line);
#define VLM_ASSERT(x) ((x) ? (void)0 : vlm_abort(#x, __FILE__, __LINE__))
#ifdef NDEBUG
#define VLM_DASSERT(x) ((void)0)
#define ALWAYS(x) (x)
#define NEVER(x) (x)
#else
#define VLM_DASSERT(x) VLM_ASSERT(x)
#define ALWAYS(x) ((x) ? 1 : (vlm_abort(#x, __FILE__, __LINE__), 0))
#define NEVER(x) ((x) ? (vlm_abort(#x, __FILE__, __LINE__), 1) : 0)
#endif
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define VLM_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VLM_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ==== Allocation ====
 * x*: internal sizes; abort on failure. try*: sizes that come from input; NULL on failure.
 * vlm_fail_alloc_after(n): the next n try* allocations succeed and the one after fails,
 * once (the tests' allocation countdown); n < 0 disables it. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *trymalloc(size_t n);
void *trycalloc(size_t count, size_t size);
void *tryrealloc(void *p, size_t n);
void vlm_fail_alloc_after(long n);
/* a*b without overflow: returns false if it would overflow size_t. */
static inline bool vlm_mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* ==== Growable arrays ==== */
struct i32_vec {
    int32_t *v; /* owned */
    size_t n, cap;
};
void i32_vec_push(struct i32_vec *a, int32_t x);
void i32_vec_append(struct i32_vec *a, const int32_t *x, size_t n);
void i32_vec_free(struct i32_vec *a);

/* A growable byte string (always NUL-terminated when s != NULL). */
struct strbuf {
    char *s; /* owned */
    size_t n, cap;
};
void sb_append(struct strbuf *b, const char *s, size_t n);
void sb_puts(struct strbuf *b, const char *s);
void sb_printf(struct strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_free(struct strbuf *b);

/* ==== Files and time ==== */
/* Reads a whole file into a malloc'ed, NUL-terminated buffer. NULL on error (errno set). */
char *vlm_read_file(const char *path, size_t *len);
uint64_t vlm_now_ns(void);      /* CLOCK_MONOTONIC */
uint64_t vlm_wall_s(void);      /* seconds since the epoch */

/* ==== Hashing ==== */
/* vlm_mix64 (splitmix64), VLM_MIX64_STEP: kernels/mix64.h */

/* 64-bit FNV-1a style content hash chained with seed (not cryptographic). */
uint64_t vlm_hash64(const void *data, size_t n, uint64_t seed);

/* ==== Floating-point formats ==== */
/* bf16_to_f32, f32_to_bf16, f16_to_f32, f32_to_f16: kernels/fp.h */

#endif
