// OpenBLAS, loaded at run time.
//
// Why not link it: OpenBLAS 0.3.21 (Debian bookworm) does not recognise recent AVX-512 CPUs and
// falls back to a generic SSE kernel, about 5x slower. It reads OPENBLAS_CORETYPE once, when the
// library is loaded, and a linked library is loaded before main() runs. Loading it with dlopen
// after choosing a core type from the CPU's features fixes that without asking users to set
// anything; a core type the user did set is respected.
#ifndef LOCUS_BLAS_H
#define LOCUS_BLAS_H
#include <stddef.h>

enum { LOCUS_BLAS_NO_TRANS = 111, LOCUS_BLAS_TRANS = 112 };

/// Loads OpenBLAS once (thread-safe). Returns 0 on success; otherwise writes a message to `error`.
int locus_blas_load(char *error, size_t capacity);

/// Row-major C = alpha * op(A) * op(B) + beta * C, where op(A) is M x K and op(B) is K x N.
void locus_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);

/// Number of threads OpenBLAS uses (0 keeps the library's default).
void locus_blas_set_threads(int n);
int locus_blas_threads(void);
/// The kernel OpenBLAS chose, e.g. "SkylakeX" or "Prescott".
const char *locus_blas_core(void);
/// The OPENBLAS_CORETYPE Locus set, or "" if it left the environment alone.
const char *locus_blas_core_chosen(void);

/// Asks glibc's malloc to keep large freed blocks for reuse instead of returning them to the kernel
/// (mmap threshold raised to 32 MiB, glibc's maximum; trim threshold to 256 MiB). A training step allocates and frees the same
/// activation-sized arrays every step; served by fresh mmaps, each would be page-faulted and zeroed by
/// the kernel again (a quarter of a ViT step's time). Returns 0 on success, -1 without glibc.
int locus_keep_freed_memory(void);
#endif
