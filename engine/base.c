/*
 * base: error strings, logging, abort, checked allocation, arrays, files, time, hashing.
 */
#include "engine/base.h"

#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ==== Errors ==== */

const char *vlm_strerror(int code)
{
    switch (code) {
    case VLM_OK: return "ok";
    case VLM_EINVAL: return "invalid argument";
    case VLM_ENOMEM: return "out of memory";
    case VLM_EIO: return "I/O error";
    case VLM_ETOOBIG: return "over a configured limit";
    case VLM_EDEVICE: return "device error";
    case VLM_EAGAIN: return "try again";
    case VLM_ENOSPC: return "no space";
    case VLM_ENOTFOUND: return "not found";
    case VLM_EUNSUPPORTED: return "unsupported";
    default: return "unknown error";
    }
}

static int err_vset(struct vlm_err *e, int code, int http_status, const char *param,
                    const char *fmt, va_list ap)
{
    if (!e) return code;
    e->code = code;
    e->http_status = http_status;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return code;
}

int vlm_err_set(struct vlm_err *e, int code, int http_status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, code, http_status, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int vlm_err_param(struct vlm_err *e, int code, int http_status, const char *param,
                  const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(e, code, http_status, param, fmt, ap);
    va_end(ap);
    return code;
}

/* ==== Logging ==== */

int vlm_log_level = VLM_LOG_INFO;

void vlm_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    char line[1024];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000,
                     names[level >= 0 && level < 4 ? level : 3]);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s\n", line); /* one write per line */
}

_Noreturn void vlm_abort(const char *expr, const char *file, int line)
{
    fprintf(stderr, "valley: assertion failed: %s (%s:%d)\n", expr, file, line);
    fflush(stderr);
    abort();
}

/* ==== Allocation ==== */

static _Atomic long fail_countdown = -1;

void vlm_fail_alloc_after(long n)
{
    atomic_store(&fail_countdown, n);
}

static bool should_fail(void)
{
    if (atomic_load(&fail_countdown) < 0) return false;
    if (atomic_fetch_sub(&fail_countdown, 1) == 0) {
        atomic_store(&fail_countdown, -1);
        return true;
    }
    return false;
}

static _Noreturn void oom(size_t n)
{
    fprintf(stderr, "valley: out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) oom(count * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void *trymalloc(size_t n)
{
    if (should_fail()) return NULL;
    return malloc(n ? n : 1);
}

void *trycalloc(size_t count, size_t size)
{
    if (should_fail()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void *tryrealloc(void *p, size_t n)
{
    if (should_fail()) return NULL;
    return realloc(p, n ? n : 1);
}

/* ==== Arrays and strings ==== */

void i32_vec_push(struct i32_vec *a, int32_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 16;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = x;
}

void i32_vec_append(struct i32_vec *a, const int32_t *x, size_t n)
{
    if (a->n + n > a->cap) {
        while (a->n + n > a->cap) a->cap = a->cap ? a->cap * 2 : 16;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    if (n) memcpy(a->v + a->n, x, n * sizeof *x);
    a->n += n;
}

void i32_vec_free(struct i32_vec *a)
{
    free(a->v);
    a->v = NULL;
    a->n = a->cap = 0;
}

void sb_append(struct strbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->n + n + 1 > cap) cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void sb_puts(struct strbuf *b, const char *s)
{
    sb_append(b, s, strlen(s));
}

void sb_printf(struct strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    sb_append(b, "", 0);
    if (b->n + (size_t)n + 1 > b->cap) {
        size_t cap = b->cap;
        while (b->n + (size_t)n + 1 > cap) cap *= 2;
        b->s = xrealloc(b->s, cap);
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

void sb_free(struct strbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->n = b->cap = 0;
}

/* ==== Files and time ==== */

char *vlm_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct strbuf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) sb_append(&b, chunk, got);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        sb_free(&b);
        errno = EIO;
        return NULL;
    }
    if (!b.s) sb_append(&b, "", 0);
    if (len) *len = b.n;
    return b.s;
}

uint64_t vlm_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t vlm_wall_s(void)
{
    return (uint64_t)time(NULL);
}

/* ==== Hashing ==== */

uint64_t vlm_hash64(const void *data, size_t n, uint64_t seed)
{
    /* FNV-1a over 8-byte words with a final avalanche (splitmix64's, kernels/mix64.h). */
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ seed;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return vlm_mix64_final(h ^ (uint64_t)n);
}

