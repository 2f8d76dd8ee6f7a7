/*
 * alloc_count.h: allocation counting for the "no allocation on the step path" tests. Include it
 * from exactly one .c of a test executable: it defines malloc, calloc, realloc and posix_memalign
 * over glibc's, and while `counting` is set they count, on every thread, the calls made from this
 * executable's own code (the project's static libraries are linked into it) in `n_allocs`. Calls
 * from shared libraries are not counted: OpenBLAS's threaded sgemm mallocs a small job array per
 * call, and that is the library's business.
 *
 *   #if COUNT_ALLOCS
 *   n_allocs = 0; counting = 1; ...the steps...; counting = 0; CHECK_EQ(n_allocs, 0);
 *   #endif
 *
 * Under ASan or MSan, which have their own allocator, nothing is defined and COUNT_ALLOCS is 0.
 */
#ifndef VLM_TEST_ALLOC_COUNT_H
#define VLM_TEST_ALLOC_COUNT_H

#include <stddef.h>
#include <stdlib.h> /* the declarations the definitions below replace */

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define VLM_TEST_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(VLM_TEST_SANITIZED)
#define COUNT_ALLOCS 0
#else
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern char __executable_start, etext; /* the linker's bounds of this program's code */
static volatile int counting;
static volatile long n_allocs;
static inline void count(const void *caller)
{
    if (counting && (const char *)caller >= &__executable_start && (const char *)caller < &etext)
        __atomic_fetch_add(&n_allocs, 1, __ATOMIC_RELAXED);
}
void *malloc(size_t n)
{
    count(__builtin_return_address(0));
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    count(__builtin_return_address(0));
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    count(__builtin_return_address(0));
    return __libc_realloc(p, n);
}
int posix_memalign(void **out, size_t align, size_t n)
{
    count(__builtin_return_address(0));
    *out = __libc_memalign(align, n);
    return *out ? 0 : 12; /* ENOMEM */
}
#endif

#endif
