#include "locus_blas.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*set_threads_fn)(int);
typedef int (*get_threads_fn)(void);
typedef char *(*corename_fn)(void);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static sgemm_fn sgemm_ptr;
static set_threads_fn set_threads_ptr;
static get_threads_fn get_threads_ptr;
static corename_fn corename_ptr;
static char load_error[512];
static const char *chosen = "";

enum { CBLAS_ROW_MAJOR = 101 };

// The best OpenBLAS kernel family the CPU can run, judged from its features (not its model
// number, which old OpenBLAS versions do not know).
static const char *core_for_this_cpu(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return "Haswell";
#endif
    return NULL;
}

static void load(void) {
    if (getenv("OPENBLAS_CORETYPE") == NULL) {
        const char *core = core_for_this_cpu();
        if (core) { setenv("OPENBLAS_CORETYPE", core, 0); chosen = core; }
    }
    const char *names[] = { "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.21.so" };
    void *handle = NULL;
    for (size_t i = 0; i < sizeof names / sizeof *names && !handle; i++) handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        snprintf(load_error, sizeof load_error, "cannot load OpenBLAS (libopenblas.so.0): %s; install it with: apt-get install libopenblas-dev", dlerror());
        return;
    }
    sgemm_ptr = (sgemm_fn)dlsym(handle, "cblas_sgemm");
    set_threads_ptr = (set_threads_fn)dlsym(handle, "openblas_set_num_threads");
    get_threads_ptr = (get_threads_fn)dlsym(handle, "openblas_get_num_threads");
    corename_ptr = (corename_fn)dlsym(handle, "openblas_get_corename");
    if (!sgemm_ptr) snprintf(load_error, sizeof load_error, "OpenBLAS was loaded but has no cblas_sgemm");
}

int locus_blas_load(char *error, size_t capacity) {
    pthread_once(&once, load);
    if (sgemm_ptr) return 0;
    if (error && capacity) snprintf(error, capacity, "%s", load_error);
    return -1;
}

void locus_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    pthread_once(&once, load);
    if (!sgemm_ptr) { fprintf(stderr, "locus: %s\n", load_error); abort(); }   // callers check locus_blas_load first
    sgemm_ptr(CBLAS_ROW_MAJOR, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void locus_blas_set_threads(int n) { pthread_once(&once, load); if (set_threads_ptr && n > 0) set_threads_ptr(n); }
int locus_blas_threads(void) { pthread_once(&once, load); return get_threads_ptr ? get_threads_ptr() : 0; }
const char *locus_blas_core(void) { pthread_once(&once, load); return corename_ptr ? corename_ptr() : "unknown"; }
const char *locus_blas_core_chosen(void) { pthread_once(&once, load); return chosen; }

int locus_keep_freed_memory(void) {
#if defined(__GLIBC__)
    int a = mallopt(M_MMAP_THRESHOLD, 32 << 20);   // glibc's largest allowed value on 64-bit
    int b = mallopt(M_TRIM_THRESHOLD, 256 << 20);
    return (a == 1 && b == 1) ? 0 : -1;
#else
    return -1;
#endif
}
