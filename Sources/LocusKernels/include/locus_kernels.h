// The engine's CPU kernels: one thread pool for every parallel loop (matrix products included) and
// the hot element-wise and row kernels at the CPU's vector width, chosen at run time.
//
// Threads. OpenBLAS runs single-threaded; products are split here, across the same pool that runs
// the element-wise work, so the engine never has more runnable threads than the pool has (OpenBLAS's
// own workers spin between products and competed with ours for the two cores). Splits depend only on
// the problem's shape, never on the number of threads or on timing: results are the same with one
// thread or many (`--deterministic` keeps one).
//
// SIMD. Every kernel is compiled twice from one source (kernels_impl.h): for the x86-64 baseline and
// for AVX2; the AVX2 version is used when the CPU has it, unless LOCUS_SIMD=baseline is set (tests
// switch with locus_simd_set). Floating-point contraction is off and reductions use eight partial
// sums in a fixed order in both versions, so both give the same bits; docs/engine-kernels.md.
#ifndef LOCUS_KERNELS_H
#define LOCUS_KERNELS_H
#include <stddef.h>
#include <stdint.h>

enum { LOCUS_SIMD_BASELINE = 0, LOCUS_SIMD_AVX2 = 1 };
/// The level in use (LOCUS_SIMD=baseline forces LOCUS_SIMD_BASELINE).
int locus_simd_level(void);
/// The best level this CPU runs.
int locus_simd_best(void);
/// Uses `level` from now on (clamped to what the CPU runs); returns the level in use.
int locus_simd_set(int level);

/// Threads of the pool, the caller included (OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, else the cores).
int locus_pool_threads(void);
/// Sets the pool's size (1 = everything on the calling thread); n < 1 restores the default.
void locus_pool_set_threads(int n);
typedef void (*locus_task_fn)(void *context, int part);
/// Runs task(context, p) for p in [0, parts) on the pool and returns when all are done. A call from
/// inside a task, or while another thread uses the pool, runs the parts one after another on the caller.
void locus_pool_run(int parts, locus_task_fn task, void *context);

/// Row-major C[m×n] = alpha·op(A)·op(B) + beta·C through OpenBLAS (locus_sgemm), split into row or
/// column blocks across the pool when the product is large enough.
void locus_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc);
/// How locus_gemm splits an m×n×k product: 0 = not at all, 1 = by rows of C, 2 = by columns.
int locus_gemm_split(int m, int n, int k);

// Element-wise (n values; parallel over the pool for large n).
void locus_relu(const float *x, float *y, size_t n);
void locus_relu_backward(const float *x, const float *dy, float *g, size_t n);
void locus_gelu(const float *x, float *y, size_t n);
void locus_gelu_backward(const float *x, const float *dy, float *g, size_t n);
void locus_quick_gelu(const float *x, float *y, size_t n);
void locus_quick_gelu_backward(const float *x, const float *dy, float *g, size_t n);
/// a += b.
void locus_add(float *a, const float *b, size_t n);
/// Σ x in eight partial sums (lane i sums x[j] with j ≡ i mod 8), combined in a fixed order.
float locus_sum(const float *x, size_t n);

// Rows.
/// In-place softmax of `rows` rows of length n.
void locus_softmax_rows(float *x, size_t rows, size_t n);
/// Softmax backward in place: ds = p ⊙ (ds − ⟨ds, p⟩) per row.
void locus_softmax_backward_rows(const float *p, float *ds, size_t rows, size_t n);
/// LayerNorm over rows of d: xhat, 1/σ per row and y = xhat·γ + β.
void locus_layer_norm(const float *x, const float *gamma, const float *beta, float eps, float *xhat,
                      float *inv_std, float *y, size_t rows, size_t d);
/// LayerNorm backward: dx per row, and Σ dy⊙xhat, Σ dy over the rows written to dgamma, dbeta (two
/// partial sums over fixed halves of the rows, added in order).
void locus_layer_norm_backward(const float *dy, const float *xhat, const float *inv_std, const float *gamma,
                               float *dx, float *dgamma, float *dbeta, size_t rows, size_t d);

// Optimizer updates (torch.optim rules; docs/talos.md for the masked ones). `first`: the first step.
void locus_sgd_momentum(float *w, const float *g, float *buf, size_t n, float lr, float mu, float damp, float wd,
                        int nesterov, int first);
void locus_adamw(float *w, const float *g, float *m, float *v, size_t n, float step_size, float inv_root_bc2,
                 float b1, float b2, float eps, float decay);
/// SparseSGDM with a 0/1 multiplier per entry (mask NULL: every entry); entries with mask 0 keep
/// their value bit for bit and a zero buffer. mu == 0: plain SGD, buf unused.
void locus_sparse_sgdm(float *w, const float *g, float *buf, const float *mask, size_t n, float lr, float mu,
                       float damp, float wd, int nesterov, int first);
/// The same over the listed entries only (buf holds one slot per listed entry).
void locus_sparse_sgdm_entries(float *w, const float *g, float *buf, const int32_t *idx, size_t count, float lr,
                               float mu, float damp, float wd, int nesterov, int first);
/// Masked AdamW (moments follow every gradient; mask 0 entries keep their value); mask NULL: dense.
void locus_masked_adamw(float *w, const float *g, float *m, float *v, const float *mask, size_t n, float step_size,
                        float inv_root_bc2, float b1, float b2, float eps, float decay);
void locus_masked_adamw_entries(float *w, const float *g, float *m, float *v, const int32_t *idx, size_t count,
                                float step_size, float inv_root_bc2, float b1, float b2, float eps, float decay);

// Convolution layouts (plain copies: the same values at any split).
/// [B, C, H, W] → columns [C·k·k, B·Ho·Wo] (zero padding), split over samples across the pool.
void locus_im2col(const float *x, int b, int c, int h, int w, int k, int stride, int pad, float *cols);
/// The adjoint: x[B, C, H, W] = Σ of the column entries each position went to (x is overwritten).
void locus_col2im(const float *cols, int b, int c, int h, int w, int k, int stride, int pad, float *x);
#endif
