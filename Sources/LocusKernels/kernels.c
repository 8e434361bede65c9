#include "locus_kernels.h"
#include "locus_blas.h"
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

// No fused multiply-adds: both instruction sets round every operation the same way (and as the
// engine's Swift code did), so the baseline and AVX2 kernels give the same bits.
#pragma STDC FP_CONTRACT OFF

#define K(name) name##_base
#define TARGET
#include "kernels_impl.h"
#undef K
#undef TARGET

#if defined(__x86_64__)
#define HAVE_AVX2_BUILD 1
#define K(name) name##_avx2
#define TARGET __attribute__((target("avx2")))
#include "kernels_impl.h"
#undef K
#undef TARGET
#endif

// MARK: - dispatch

static atomic_int simd_level = -1;

int locus_simd_best(void) {
#if HAVE_AVX2_BUILD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) return LOCUS_SIMD_AVX2;
#endif
    return LOCUS_SIMD_BASELINE;
}

int locus_simd_level(void) {
    int level = atomic_load_explicit(&simd_level, memory_order_relaxed);
    if (level >= 0) return level;
    const char *env = getenv("LOCUS_SIMD");
    level = (env && strcmp(env, "baseline") == 0) ? LOCUS_SIMD_BASELINE : locus_simd_best();
    atomic_store(&simd_level, level);
    return level;
}

int locus_simd_set(int level) {
    int best = locus_simd_best();
    if (level > best) level = best;
    if (level < 0) level = LOCUS_SIMD_BASELINE;
    atomic_store(&simd_level, level);
    return level;
}

#if HAVE_AVX2_BUILD
#define PICK(name) (locus_simd_level() == LOCUS_SIMD_AVX2 ? name##_avx2 : name##_base)
#else
#define PICK(name) (name##_base)
#endif

// MARK: - the pool
//
// Parts are claimed, not assigned: every thread (the caller first) takes the next unclaimed part until
// none is left, so a worker the machine has descheduled never holds the caller up — the caller then
// runs its parts itself. Which thread runs a part never changes what the part computes.
// The job word packs [generation:32][parts:16][next part:16]; a claim is a compare-and-swap on it.

enum { MAX_THREADS = 64 };
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static int default_threads = 1;
static atomic_int pool_size = 1;               // threads that take parts, the caller included
static int started = 0;                         // workers running
static pthread_mutex_t run_lock = PTHREAD_MUTEX_INITIALIZER;   // one job at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static _Atomic uint64_t job_word = 0;
static atomic_int sleepers = 0;
static atomic_int parts_done = 0;
static locus_task_fn job_task;
static void *job_context;
static _Thread_local int inside_task = 0;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// How long an idle worker spins for the next job before it sleeps: long enough to bridge the gaps
// between the products and element-wise passes of one training step, short enough not to hold a
// core when the engine is idle.
#define SPIN_SECONDS 200e-6

static inline uint32_t word_generation(uint64_t w) { return (uint32_t)(w >> 32); }

// Claims and runs parts of job `generation` until none is left.
static void run_parts(uint32_t generation) {
    for (;;) {
        uint64_t w = atomic_load_explicit(&job_word, memory_order_acquire);
        if (word_generation(w) != generation) return;
        uint32_t parts = (uint32_t)(w >> 16) & 0xFFFF, next = (uint32_t)w & 0xFFFF;
        if (next >= parts) return;
        if (!atomic_compare_exchange_weak_explicit(&job_word, &w, w + 1, memory_order_acq_rel, memory_order_acquire)) continue;
        job_task(job_context, (int)next);
        atomic_fetch_add_explicit(&parts_done, 1, memory_order_release);
    }
}

static void *worker_main(void *arg) {
    uint32_t seen = (uint32_t)(uintptr_t)arg;      // the generation current when it was created
    int id = (int)((uintptr_t)arg >> 32);           // 1, 2, …: takes part while id < the pool's size
    inside_task = 1;
    for (;;) {
        uint32_t g = word_generation(atomic_load_explicit(&job_word, memory_order_acquire));
        if (g == seen) {
            double start = now_seconds();
            for (int spins = 1; (g = word_generation(atomic_load_explicit(&job_word, memory_order_acquire))) == seen; spins++) {
                CPU_RELAX();
                if (spins % 256 == 0 && now_seconds() - start > SPIN_SECONDS) {
                    pthread_mutex_lock(&sleep_lock);
                    atomic_fetch_add(&sleepers, 1);
                    while ((g = word_generation(atomic_load(&job_word))) == seen) pthread_cond_wait(&wake, &sleep_lock);
                    atomic_fetch_sub(&sleepers, 1);
                    pthread_mutex_unlock(&sleep_lock);
                    break;
                }
            }
        }
        seen = g;
        if (id < atomic_load_explicit(&pool_size, memory_order_relaxed)) run_parts(g);
    }
    return NULL;
}

static int env_threads(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) return 0;
    int n = atoi(v);
    return n > 0 ? n : 0;
}

static void pool_init(void) {
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = env_threads("LOCUS_THREADS");
    if (!n) n = env_threads("OPENBLAS_NUM_THREADS");
    if (!n) n = env_threads("OMP_NUM_THREADS");
    if (!n) n = cores > 0 ? (int)cores : 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    default_threads = n;
    atomic_store(&pool_size, n);
}

static void ensure_workers(int n) {
    // Called with run_lock held, between jobs.
    while (started < n - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        uintptr_t arg = ((uintptr_t)(started + 1) << 32) | word_generation(atomic_load(&job_word));
        int ok = pthread_create(&t, &attr, worker_main, (void *)arg) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) break;
        started++;
    }
}

int locus_pool_threads(void) { pthread_once(&pool_once, pool_init); return atomic_load(&pool_size); }

void locus_pool_set_threads(int n) {
    pthread_once(&pool_once, pool_init);
    if (n < 1) n = default_threads;
    if (n > MAX_THREADS) n = MAX_THREADS;
    atomic_store(&pool_size, n);
}

void locus_pool_run(int parts, locus_task_fn task, void *context) {
    if (parts <= 0) return;
    int threads = locus_pool_threads();
    if (parts == 1 || parts > 0xFFFF || threads == 1 || inside_task || pthread_mutex_trylock(&run_lock) != 0) {
        for (int p = 0; p < parts; p++) task(context, p);
        return;
    }
    ensure_workers(threads);
    job_task = task; job_context = context;
    atomic_store_explicit(&parts_done, 0, memory_order_relaxed);
    uint32_t generation = word_generation(atomic_load(&job_word)) + 1;
    // Publishing the word releases the task and context written above. Only workers up to the pool's
    // current size take part: a smaller pool leaves the others asleep (they still see the word).
    atomic_store_explicit(&job_word, ((uint64_t)generation << 32) | ((uint64_t)parts << 16), memory_order_seq_cst);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    inside_task = 1;
    run_parts(generation);
    inside_task = 0;
    // Every part is claimed now; wait for the ones still running on other threads.
    for (int spins = 0; atomic_load_explicit(&parts_done, memory_order_acquire) < parts; spins++) {
        if (spins < (1 << 12)) CPU_RELAX(); else sched_yield();
    }
    pthread_mutex_unlock(&run_lock);
}

// MARK: - splitting a range

// Element-wise work: enough values per part that a part outweighs waking a thread.
#define MIN_PER_PART 16384

typedef void (*range_fn)(void *args, size_t lo, size_t hi);
struct range_job { range_fn fn; void *args; size_t n; int parts; size_t align; };

static void range_task(void *context, int part) {
    struct range_job *j = context;
    size_t chunk = (j->n / (size_t)j->parts + j->align - 1) / j->align * j->align;
    size_t lo = chunk * (size_t)part, hi = lo + chunk;
    if (hi > j->n || part == j->parts - 1) hi = j->n;
    if (lo < hi) j->fn(j->args, lo, hi);
}

// Runs fn over [0, n) in as many parts as the pool has threads (element-wise work: results do not
// depend on the split), each at least `minimum` long.
static void run_range(size_t n, size_t minimum, range_fn fn, void *args) {
    int threads = locus_pool_threads();
    size_t parts = n / (minimum ? minimum : 1);
    if (parts > (size_t)threads) parts = (size_t)threads;
    if (parts <= 1) { fn(args, 0, n); return; }
    struct range_job j = { fn, args, n, (int)parts, 16 };
    locus_pool_run((int)parts, range_task, &j);
}

// MARK: - products

// Below this many multiply-adds a product stays on one thread.
#define GEMM_SPLIT_MIN (1 << 18)

int locus_gemm_split(int m, int n, int k) {
    if ((double)m * (double)n * (double)k < GEMM_SPLIT_MIN) return 0;
    // Splitting rows makes every part pack all of op(B) (k×n); splitting columns, all of op(A) (m×k):
    // duplicate the smaller one.
    int rows_ok = m >= 32, cols_ok = n >= 32;
    if (rows_ok && (!cols_ok || n <= m)) return 1;
    if (cols_ok) return 2;
    return 0;
}

struct gemm_job {
    int ta, tb, m, n, k, lda, ldb, ldc, split, parts;
    float alpha, beta;
    const float *a, *b;
    float *c;
};

static void gemm_task(void *context, int part) {
    struct gemm_job *j = context;
    int total = j->split == 1 ? j->m : j->n;
    int chunk = (total / j->parts + 15) / 16 * 16;
    int lo = chunk * part, hi = part == j->parts - 1 ? total : lo + chunk;
    if (hi > total) hi = total;
    if (lo >= hi) return;
    if (j->split == 1) {
        const float *a = j->ta == LOCUS_BLAS_TRANS ? j->a + lo : j->a + (size_t)lo * j->lda;
        locus_sgemm(j->ta, j->tb, hi - lo, j->n, j->k, j->alpha, a, j->lda, j->b, j->ldb, j->beta, j->c + (size_t)lo * j->ldc, j->ldc);
    } else {
        const float *b = j->tb == LOCUS_BLAS_TRANS ? j->b + (size_t)lo * j->ldb : j->b + lo;
        locus_sgemm(j->ta, j->tb, j->m, hi - lo, j->k, j->alpha, j->a, j->lda, b, j->ldb, j->beta, j->c + lo, j->ldc);
    }
}

// OpenBLAS's results depend on how a product is cut (its kernels block differently), so the cut is a
// property of the shape alone: two parts whenever locus_gemm_split says so, run on two threads or,
// with a one-thread pool, one after the other. Results are the same whatever the pool's size.
void locus_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a, int lda,
                const float *b, int ldb, float beta, float *c, int ldc) {
    int split = locus_gemm_split(m, n, k);
    if (split == 0) {
        locus_sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    struct gemm_job j = { trans_a, trans_b, m, n, k, lda, ldb, ldc, split, 2, alpha, beta, a, b, c };
    locus_pool_run(2, gemm_task, &j);
}

// MARK: - element-wise entry points

struct ew_args { const float *x, *y; float *z; };
#define EW2(name) \
    static void name##_range(void *p, size_t lo, size_t hi) { struct ew_args *a = p; PICK(name)(a->x, a->z, lo, hi); } \
    void locus_##name(const float *x, float *y, size_t n) { struct ew_args a = { x, NULL, y }; run_range(n, MIN_PER_PART, name##_range, &a); }
#define EW3(name) \
    static void name##_range(void *p, size_t lo, size_t hi) { struct ew_args *a = p; PICK(name)(a->x, a->y, a->z, lo, hi); } \
    void locus_##name(const float *x, const float *dy, float *g, size_t n) { struct ew_args a = { x, dy, g }; run_range(n, MIN_PER_PART, name##_range, &a); }
EW2(relu)
EW3(relu_backward)
EW2(gelu)
EW3(gelu_backward)
EW2(quick_gelu)
EW3(quick_gelu_backward)

static void add_range(void *p, size_t lo, size_t hi) { struct ew_args *a = p; PICK(add)(a->z, a->x, lo, hi); }
void locus_add(float *a, const float *b, size_t n) { struct ew_args s = { b, NULL, a }; run_range(n, MIN_PER_PART, add_range, &s); }

float locus_sum(const float *x, size_t n) {
#if HAVE_AVX2_BUILD
    if (locus_simd_level() == LOCUS_SIMD_AVX2) return sum8_avx2(x, n);
#endif
    return sum8_base(x, n);
}

// MARK: - rows

struct rows_args { const float *x, *g, *b, *p; float *y, *h, *s, *acc; float eps; size_t d; };

static void softmax_range(void *p, size_t lo, size_t hi) { struct rows_args *a = p; PICK(softmax_rows)(a->y, a->d, lo, hi); }
void locus_softmax_rows(float *x, size_t rows, size_t n) {
    struct rows_args a = { .y = x, .d = n };
    run_range(rows, n ? (MIN_PER_PART + n - 1) / n : 1, softmax_range, &a);
}

static void softmax_backward_range(void *p, size_t lo, size_t hi) {
    struct rows_args *a = p; PICK(softmax_backward_rows)(a->p, a->y, a->d, lo, hi);
}
void locus_softmax_backward_rows(const float *p, float *ds, size_t rows, size_t n) {
    struct rows_args a = { .p = p, .y = ds, .d = n };
    run_range(rows, n ? (MIN_PER_PART + n - 1) / n : 1, softmax_backward_range, &a);
}

static void layer_norm_range(void *p, size_t lo, size_t hi) {
    struct rows_args *a = p; PICK(layer_norm)(a->x, a->g, a->b, a->eps, a->h, a->s, a->y, a->d, lo, hi);
}
void locus_layer_norm(const float *x, const float *gamma, const float *beta, float eps, float *xhat,
                      float *inv_std, float *y, size_t rows, size_t d) {
    struct rows_args a = { .x = x, .g = gamma, .b = beta, .eps = eps, .h = xhat, .s = inv_std, .y = y, .d = d };
    run_range(rows, d ? (MIN_PER_PART + d - 1) / d : 1, layer_norm_range, &a);
}

// The backward's parameter sums are partial sums over two fixed halves of the rows (split at a
// multiple of 8 when there are at least 256 rows), added in order: the same bits whatever the pool.
struct ln_back_job { const float *dy, *xhat, *inv, *gamma; float *dx, *acc, *scratch; size_t rows, d, half; };
static void ln_back_task(void *context, int part) {
    struct ln_back_job *j = context;
    size_t lo = part == 0 ? 0 : j->half, hi = part == 0 ? j->half : j->rows;
    PICK(layer_norm_backward)(j->dy, j->xhat, j->inv, j->gamma, j->dx, j->acc + (size_t)part * 2 * j->d,
                              j->scratch + (size_t)part * j->d, j->d, lo, hi);
}
void locus_layer_norm_backward(const float *dy, const float *xhat, const float *inv_std, const float *gamma,
                               float *dx, float *dgamma, float *dbeta, size_t rows, size_t d) {
    float *work = calloc(6 * d, sizeof(float));   // two halves × (dγ, dβ) partials, two scratch rows
    if (!work) abort();
    size_t half = rows >= 256 ? (rows / 2 + 7) / 8 * 8 : rows;
    struct ln_back_job j = { dy, xhat, inv_std, gamma, dx, work, work + 4 * d, rows, d, half };
    locus_pool_run(half < rows ? 2 : 1, ln_back_task, &j);
    for (size_t c = 0; c < d; c++) {
        dgamma[c] = work[c] + work[2 * d + c];
        dbeta[c] = work[d + c] + work[3 * d + c];
    }
    free(work);
}

// MARK: - optimizers

struct opt_args {
    float *w, *b, *m, *v; const float *g, *mask; const int32_t *idx;
    float lr, mu, damp, wd, step, irb, b1, b2, eps, decay; int nesterov, first;
};
#define OPT_MIN 8192

static void sgd_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p; PICK(sgd_momentum)(a->w, a->g, a->b, a->lr, a->mu, a->damp, a->wd, a->nesterov, a->first, lo, hi);
}
void locus_sgd_momentum(float *w, const float *g, float *buf, size_t n, float lr, float mu, float damp, float wd,
                        int nesterov, int first) {
    struct opt_args a = { .w = w, .g = g, .b = buf, .lr = lr, .mu = mu, .damp = damp, .wd = wd, .nesterov = nesterov, .first = first };
    run_range(n, OPT_MIN, sgd_range, &a);
}

static void adamw_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p; PICK(adamw)(a->w, a->g, a->m, a->v, a->step, a->irb, a->b1, a->b2, a->eps, a->decay, lo, hi);
}
void locus_adamw(float *w, const float *g, float *m, float *v, size_t n, float step_size, float inv_root_bc2,
                 float b1, float b2, float eps, float decay) {
    struct opt_args a = { .w = w, .g = g, .m = m, .v = v, .step = step_size, .irb = inv_root_bc2, .b1 = b1, .b2 = b2, .eps = eps, .decay = decay };
    run_range(n, OPT_MIN, adamw_range, &a);
}

static void sparse_sgdm_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p;
    PICK(sparse_sgdm)(a->w, a->g, a->b, a->mask, a->lr, a->mu, a->damp, a->wd, a->nesterov, a->first, lo, hi);
}
void locus_sparse_sgdm(float *w, const float *g, float *buf, const float *mask, size_t n, float lr, float mu,
                       float damp, float wd, int nesterov, int first) {
    struct opt_args a = { .w = w, .g = g, .b = buf, .mask = mask, .lr = lr, .mu = mu, .damp = damp, .wd = wd, .nesterov = nesterov, .first = first };
    run_range(n, OPT_MIN, sparse_sgdm_range, &a);
}

static void sparse_sgdm_entries_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p;
    PICK(sparse_sgdm_entries)(a->w, a->g, a->b, a->idx, a->lr, a->mu, a->damp, a->wd, a->nesterov, a->first, lo, hi);
}
void locus_sparse_sgdm_entries(float *w, const float *g, float *buf, const int32_t *idx, size_t count, float lr,
                               float mu, float damp, float wd, int nesterov, int first) {
    struct opt_args a = { .w = w, .g = g, .b = buf, .idx = idx, .lr = lr, .mu = mu, .damp = damp, .wd = wd, .nesterov = nesterov, .first = first };
    run_range(count, OPT_MIN, sparse_sgdm_entries_range, &a);
}

static void masked_adamw_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p;
    PICK(masked_adamw)(a->w, a->g, a->m, a->v, a->mask, a->step, a->irb, a->b1, a->b2, a->eps, a->decay, lo, hi);
}
void locus_masked_adamw(float *w, const float *g, float *m, float *v, const float *mask, size_t n, float step_size,
                        float inv_root_bc2, float b1, float b2, float eps, float decay) {
    struct opt_args a = { .w = w, .g = g, .m = m, .v = v, .mask = mask, .step = step_size, .irb = inv_root_bc2, .b1 = b1, .b2 = b2, .eps = eps, .decay = decay };
    run_range(n, OPT_MIN, masked_adamw_range, &a);
}

static void masked_adamw_entries_range(void *p, size_t lo, size_t hi) {
    struct opt_args *a = p;
    PICK(masked_adamw_entries)(a->w, a->g, a->m, a->v, a->idx, a->step, a->irb, a->b1, a->b2, a->eps, a->decay, lo, hi);
}
void locus_masked_adamw_entries(float *w, const float *g, float *m, float *v, const int32_t *idx, size_t count,
                                float step_size, float inv_root_bc2, float b1, float b2, float eps, float decay) {
    struct opt_args a = { .w = w, .g = g, .m = m, .v = v, .idx = idx, .step = step_size, .irb = inv_root_bc2, .b1 = b1, .b2 = b2, .eps = eps, .decay = decay };
    run_range(count, OPT_MIN, masked_adamw_entries_range, &a);
}

// MARK: - convolution layouts

struct conv_job { const float *src; float *dst; int b, c, h, w, k, stride, pad, ho, wo; };

// Output columns ow whose input column ow·stride − pad + kw lies inside [0, w).
static void valid_columns(int kw, int stride, int pad, int w, int wo, int *lo, int *hi) {
    int a = pad - kw, l = a <= 0 ? 0 : (a + stride - 1) / stride;
    int e = w + pad - kw, u = e <= 0 ? 0 : (e + stride - 1) / stride;
    if (l > wo) l = wo;
    if (u > wo) u = wo;
    if (u < l) u = l;
    *lo = l; *hi = u;
}

static void im2col_range(void *p, size_t s0, size_t s1) {
    struct conv_job *j = p;
    int k = j->k, ho = j->ho, wo = j->wo, h = j->h, w = j->w, st = j->stride;
    size_t l = (size_t)ho * wo, n = (size_t)j->b * l;
    for (int ch = 0; ch < j->c; ch++) for (int kh = 0; kh < k; kh++) for (int kw = 0; kw < k; kw++) {
        float *row = j->dst + (((size_t)ch * k + kh) * k + kw) * n;
        int lo, hi;
        valid_columns(kw, st, j->pad, w, wo, &lo, &hi);
        for (size_t s = s0; s < s1; s++) {
            const float *plane = j->src + ((size_t)s * j->c + ch) * h * w;
            for (int oh = 0; oh < ho; oh++) {
                float *out = row + s * l + (size_t)oh * wo;
                int ih = oh * st - j->pad + kh;
                if (ih < 0 || ih >= h) { memset(out, 0, sizeof(float) * wo); continue; }
                if (lo > 0) memset(out, 0, sizeof(float) * lo);
                const float *line = plane + (size_t)ih * w;   // input column ow·stride − pad + kw
                if (st == 1) memcpy(out + lo, line + (lo - j->pad + kw), sizeof(float) * (hi - lo));
                else for (int ow = lo; ow < hi; ow++) out[ow] = line[ow * st - j->pad + kw];
                if (hi < wo) memset(out + hi, 0, sizeof(float) * (wo - hi));
            }
        }
    }
}

void locus_im2col(const float *x, int b, int c, int h, int w, int k, int stride, int pad, float *cols) {
    struct conv_job j = { x, cols, b, c, h, w, k, stride, pad, (h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1 };
    run_range((size_t)b, 1, im2col_range, &j);
}

// Per input position the column entries are added in the order (kh, kw, oh, ow), as before.
static void col2im_range(void *p, size_t s0, size_t s1) {
    struct conv_job *j = p;
    int k = j->k, ho = j->ho, wo = j->wo, h = j->h, w = j->w, st = j->stride;
    size_t l = (size_t)ho * wo, n = (size_t)j->b * l;
    memset(j->dst + s0 * (size_t)j->c * h * w, 0, sizeof(float) * (s1 - s0) * (size_t)j->c * h * w);
    for (int ch = 0; ch < j->c; ch++) for (int kh = 0; kh < k; kh++) for (int kw = 0; kw < k; kw++) {
        const float *row = j->src + (((size_t)ch * k + kh) * k + kw) * n;
        int lo, hi;
        valid_columns(kw, st, j->pad, w, wo, &lo, &hi);
        for (size_t s = s0; s < s1; s++) {
            float *plane = j->dst + ((size_t)s * j->c + ch) * h * w;
            for (int oh = 0; oh < ho; oh++) {
                int ih = oh * st - j->pad + kh;
                if (ih < 0 || ih >= h) continue;
                const float *in = row + s * l + (size_t)oh * wo;
                float *line = plane + (size_t)ih * w;
                for (int ow = lo; ow < hi; ow++) line[ow * st - j->pad + kw] += in[ow];
            }
        }
    }
}

void locus_col2im(const float *cols, int b, int c, int h, int w, int k, int stride, int pad, float *x) {
    struct conv_job j = { cols, x, b, c, h, w, k, stride, pad, (h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1 };
    run_range((size_t)b, 1, col2im_range, &j);
}
