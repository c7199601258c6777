/* Exact matrix products with llama.cpp's block-quantised weights (Q4_1, Q8_0), for tokviz's decoding steps.

   y[M,N] = x[M,K] @ W^T, where every row of W is stored in blocks of 32 along K:
     Q4_1: w = d * q + m   (q in 0..15: quants[n][b][j] low nibble = element j, high nibble = element j + 16)
     Q8_0: w = d * q       (q int8)
   d and m are the GGUF's fp16 scales widened to fp32, so d * q is exact in fp32 and one fused multiply-add
   d * q + m gives the dequantised fp32 weight bit for bit: every result equals x @ W^T of the fp32 weights up
   to the order of fp32 additions.
   Built on the user's machine (-march=native); it runs on its own small pool of threads (see below). */
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#define QB 32
#define MAX_ROWS 16

#define PREFETCH_COLUMNS 8  /* the columns ahead whose blocks are asked for: 11.0 -> 6.5 ms a step at 1 row */

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES 16
#define VZERO() _mm512_setzero_ps()
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm512_mul_ps(a, b)
#define VADD(a, b) _mm512_add_ps(a, b)
#define VSET(s) _mm512_set1_ps(s)
#define VSUM(v) _mm512_reduce_add_ps(v)
/* 16 unsigned bytes / signed bytes -> 16 floats */
#define U8F(p128) _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(p128))
#define I8F(p128) _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(p128))
#elif defined(__AVX2__)
typedef __m256 vec;
#define LANES 8
#define VZERO() _mm256_setzero_ps()
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VMUL(a, b) _mm256_mul_ps(a, b)
#define VADD(a, b) _mm256_add_ps(a, b)
#define VSET(s) _mm256_set1_ps(s)
static inline float VSUM(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}
#define U8F(p64) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(p64))
#define I8F(p64) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(p64))
#endif

#ifdef LANES
/* The 32 quants of one Q4_1 block as 32 / LANES float vectors, in element order. */
static inline void unpack_q4(const uint8_t* q, vec* out) {
    __m128i raw = _mm_loadu_si128((const __m128i*)q);
    __m128i lo = _mm_and_si128(raw, _mm_set1_epi8(15));
    __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15));
#if LANES == 16
    out[0] = U8F(lo); out[1] = U8F(hi);
#else
    out[0] = U8F(lo); out[1] = U8F(_mm_srli_si128(lo, 8)); out[2] = U8F(hi); out[3] = U8F(_mm_srli_si128(hi, 8));
#endif
}
static inline void unpack_q8(const int8_t* q, vec* out) {
    __m128i a = _mm_loadu_si128((const __m128i*)q), b = _mm_loadu_si128((const __m128i*)(q + 16));
#if LANES == 16
    out[0] = I8F(a); out[1] = I8F(b);
#else
    out[0] = I8F(a); out[1] = I8F(_mm_srli_si128(a, 8)); out[2] = I8F(b); out[3] = I8F(_mm_srli_si128(b, 8));
#endif
}
#define PARTS (QB / LANES)
#define GROUP 8  /* rows per pass: each block's weights, unpacked once, feed every row's FMAs */
/* Accumulators per row: all of a block's parts on AVX-512 (32 registers); on AVX2 (16 registers) fewer as rows
   grow, so that every row of a pass keeps its sums in registers (2 rows per pass and 4 accumulators each, as
   before, unpacked each block 4 times for 8 rows and spilled). */
#if LANES == 16
#define ACC(M) PARTS
#else
#define ACC(M) ((M) <= 2 ? 4 : (M) <= 4 ? 2 : 1)
#endif

/* One output column n for M rows (M a constant of at most GROUP): ACC(M) accumulators per row, pure FMAs. Where
   fewer than 8 chains of FMAs would be in flight, a second set takes the odd blocks. */
static inline __attribute__((always_inline)) void block_fmas(const uint8_t* q, int is_q4, float scale, float min,
                                                             const float* x, const int64_t M, int64_t K,
                                                             vec acc[][PARTS]) {
    vec w[PARTS];
    if (is_q4) unpack_q4(q, w); else unpack_q8((const int8_t*)q, w);
    vec s = VSET(scale);
    if (is_q4) {
        vec m = VSET(min);
        for (int p = 0; p < PARTS; p++) w[p] = VFMA(w[p], s, m);  /* the fp32 weight itself */
    } else {
        for (int p = 0; p < PARTS; p++) w[p] = VMUL(w[p], s);
    }
    for (int64_t r = 0; r < M; r++)
        for (int p = 0; p < PARTS; p++) acc[r][p % ACC(M)] = VFMA(w[p], VLOAD(x + r * K + p * LANES), acc[r][p % ACC(M)]);
}

static inline __attribute__((always_inline)) void column(
        const float* x, const int64_t M, int64_t K, int64_t KB, const uint8_t* q, int64_t qstride, int is_q4,
        const float* d, const float* m, float* y, int64_t N) {
    vec even[GROUP][PARTS], odd[GROUP][PARTS];
    for (int64_t r = 0; r < M; r++)
        for (int p = 0; p < ACC(M); p++) even[r][p] = odd[r][p] = VZERO();
    int64_t b = 0;
    if (M * ACC(M) < 8)
        for (; b + 1 < KB; b += 2) {
            block_fmas(q + b * qstride, is_q4, d[b], m ? m[b] : 0.f, x + b * QB, M, K, even);
            block_fmas(q + (b + 1) * qstride, is_q4, d[b + 1], m ? m[b + 1] : 0.f, x + (b + 1) * QB, M, K, odd);
        }
    for (; b < KB; b++) block_fmas(q + b * qstride, is_q4, d[b], m ? m[b] : 0.f, x + b * QB, M, K, even);
    for (int64_t r = 0; r < M; r++) {
        vec total = VZERO();
        for (int p = 0; p < ACC(M); p++) total = VADD(total, VADD(even[r][p], odd[r][p]));
        y[r * N] = VSUM(total);
    }
}

#if LANES == 16
/* Two output columns for M rows (from PAIRS_FROM rows on): each row's activations, loaded once, feed both columns'
   FMAs. One column at a time loaded one activation vector per FMA, and 8 rows were bound by those loads (a step's
   products for SmolLM2 at 8 rows 17.0 -> 14.3 ms on a 2-core AVX-512 EPYC). One accumulator per row and column:
   2 x 8 chains of FMAs are plenty in flight. */
#define PAIRS_FROM 3
static inline __attribute__((always_inline)) void two_columns(
        const float* x, const int64_t M, int64_t K, int64_t KB, const uint8_t* q, int64_t column_bytes,
        int64_t qstride, int is_q4, const float* d, const float* m, float* y, int64_t N) {
    vec first[GROUP], second[GROUP];
    for (int64_t r = 0; r < M; r++) first[r] = second[r] = VZERO();
    for (int64_t b = 0; b < KB; b++) {
        vec w0[PARTS], w1[PARTS];
        const uint8_t *q0 = q + b * qstride, *q1 = q + column_bytes + b * qstride;
        if (is_q4) { unpack_q4(q0, w0); unpack_q4(q1, w1); }
        else { unpack_q8((const int8_t*)q0, w0); unpack_q8((const int8_t*)q1, w1); }
        const vec s0 = VSET(d[b]), s1 = VSET(d[KB + b]);
        if (is_q4) {
            const vec z0 = VSET(m[b]), z1 = VSET(m[KB + b]);
            for (int p = 0; p < PARTS; p++) { w0[p] = VFMA(w0[p], s0, z0); w1[p] = VFMA(w1[p], s1, z1); }
        } else {
            for (int p = 0; p < PARTS; p++) { w0[p] = VMUL(w0[p], s0); w1[p] = VMUL(w1[p], s1); }
        }
        for (int64_t r = 0; r < M; r++)
            for (int p = 0; p < PARTS; p++) {
                const vec xv = VLOAD(x + r * K + b * QB + p * LANES);
                first[r] = VFMA(w0[p], xv, first[r]);
                second[r] = VFMA(w1[p], xv, second[r]);
            }
    }
    for (int64_t r = 0; r < M; r++) { y[r * N] = VSUM(first[r]); y[r * N + 1] = VSUM(second[r]); }
}
#endif
#else
#define GROUP 1
static inline void column(const float* x, int64_t M, int64_t K, int64_t KB, const uint8_t* q, int64_t qstride,
                          int is_q4, const float* d, const float* m, float* y, int64_t N) {
    for (int64_t r = 0; r < M; r++) {
        float s = 0.f;
        for (int64_t b = 0; b < KB; b++) {
            const float* xr = x + r * K + b * QB;
            const uint8_t* qb = q + b * qstride;
            for (int j = 0; j < QB; j++) {
                float quant = is_q4 ? (float)(j < 16 ? (qb[j] & 15) : (qb[j - 16] >> 4)) : (float)((const int8_t*)qb)[j];
                s += __builtin_fmaf(quant, d[b], m ? m[b] : 0.f) * xr[j];
            }
        }
        y[r * N] = s;
    }
}
#endif

/* One column's fp32 weights, as the GGUF's dequantisation computes them (for products of many rows, by BLAS). */
static void dequantise_column(const uint8_t* q, int64_t qstride, int is_q4, const float* d, const float* m,
                              int64_t KB, float* out) {
    for (int64_t b = 0; b < KB; b++) {
        const uint8_t* qb = q + b * qstride;
#ifdef LANES
        vec w[PARTS];
        if (is_q4) unpack_q4(qb, w); else unpack_q8((const int8_t*)qb, w);
        const vec s = VSET(d[b]), z = VSET(m ? m[b] : 0.f);
        for (int p = 0; p < PARTS; p++) VSTORE(out + b * QB + p * LANES, VFMA(w[p], s, z));
#else
        for (int j = 0; j < QB; j++) {
            float quant = is_q4 ? (float)(j < 16 ? (qb[j] & 15) : (qb[j - 16] >> 4)) : (float)((const int8_t*)qb)[j];
            out[b * QB + j] = __builtin_fmaf(quant, d[b], m ? m[b] : 0.f);
        }
#endif
    }
}

/* ------------------------------------------------------------------ the work of one call, split by columns */
typedef struct {
    const float* x; int64_t M, K, KB; const uint8_t* q; int64_t qstride; int is_q4;
    const float *d, *m; float* y; int64_t N;
} Job;

/* The hardware's prefetchers ramp up too late for a layer's short streams: column n's blocks are asked for early. */
static inline __attribute__((always_inline)) void prefetch_column(const Job* job, int64_t n, int64_t end,
                                                                  int64_t column_bytes) {
    if (n >= end) return;
    const char* blocks = (const char*)(job->q + n * column_bytes);
    for (int64_t o = 0; o < column_bytes; o += 64) __builtin_prefetch(blocks + o);
    __builtin_prefetch(job->d + n * job->KB);
    if (job->m) __builtin_prefetch(job->m + n * job->KB);
}

/* Part `part` of `parts` of a product: a share of its output columns. */
static void run_part(const void* arg, int part, int parts) {
    const Job* job = arg;
    const int64_t KB = job->KB, per = (job->N + parts - 1) / parts;
    const int64_t start = part * per, end = start + per < job->N ? start + per : job->N;
    const int64_t column_bytes = KB * job->qstride;
    /* Row groups outermost: a group's activations stay in the core's cache while the columns stream by (16 rows
       at once were 36 KB at 576 inputs, more than its L1: 16 rows cost 2.3x 8 rows, now 1.9x). */
    for (int64_t r0 = 0; r0 < job->M; r0 += GROUP) {
        const int64_t rows = job->M - r0 < GROUP ? job->M - r0 : GROUP;
        const float* xg = job->x + r0 * job->K;
        for (int64_t n = start; n < end;) {
            const uint8_t* qn = job->q + n * column_bytes;
            const float *dn = job->d + n * KB, *mn = job->m ? job->m + n * KB : NULL;
            float* yg = job->y + r0 * job->N + n;
            prefetch_column(job, n + PREFETCH_COLUMNS, end, column_bytes);
#ifdef PAIRS_FROM
            if (rows >= PAIRS_FROM && n + 1 < end) {
                prefetch_column(job, n + 1 + PREFETCH_COLUMNS, end, column_bytes);
                switch (rows) {  /* a constant row count per case: registers */
#define ROWS(k) case k: two_columns(xg, k, job->K, KB, qn, column_bytes, job->qstride, job->is_q4, dn, mn, yg, \
                                   job->N); break;
                    ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8)
#undef ROWS
                }
                n += 2;
                continue;
            }
#endif
            switch (rows) {
#define ROWS(k) case k: column(xg, k, job->K, KB, qn, job->qstride, job->is_q4, dn, mn, yg, job->N); break;
                ROWS(1) ROWS(2) ROWS(3) ROWS(4) ROWS(5) ROWS(6) ROWS(7) ROWS(8)
#undef ROWS
            }
            n++;
        }
    }
}

/* ------------------------------------------------------------------ a pool of its own
   Not OpenMP: libgomp keeps one thread team per calling thread, and once more teams exist than cores (the
   inference lane's thread, the page's threads) it stops spinning between parallel regions, so each of a
   step's ~200 calls paid a futex wake-up (3x slower from any thread but the main one). These workers serve
   every caller, one call at a time, and spin for a while after each call, as a forward pass calls again within
   microseconds; then they sleep. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "thread_pool.h"
#if defined(__x86_64__) || defined(__i386__)
#define PAUSE() __builtin_ia32_pause()
#else
#define PAUSE() ((void)0)
#endif
#define MAX_WORKERS 63
#define SPIN_NS 300000  /* 0.3 ms: longer than the gap between two layers of a forward pass */

static pthread_mutex_t call_lock = PTHREAD_MUTEX_INITIALIZER, sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static PartFunction current;  /* the call at hand: current(current_arg, i, current_parts) for every part i */
static const void* current_arg;
static int current_parts;
static atomic_long generation;
static atomic_int pending, sleepers;
static int workers;
static long first_generation[MAX_WORKERS + 1];  /* what a new worker has seen: it joins the next call */

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void* worker(void* arg) {
    const int index = (int)(intptr_t)arg;
    long seen = first_generation[index];
    for (;;) {
        int64_t until = now_ns() + SPIN_NS;
        for (int k = 0; atomic_load(&generation) == seen; k++) {
            PAUSE();
            if ((k & 255) == 255 && now_ns() > until) {
                pthread_mutex_lock(&sleep_lock);
                atomic_fetch_add(&sleepers, 1);
                while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &sleep_lock);
                atomic_fetch_sub(&sleepers, 1);
                pthread_mutex_unlock(&sleep_lock);
            }
        }
        seen = atomic_load(&generation);
        if (index < current_parts) current(current_arg, index, current_parts);
        /* every worker joins every call (if only to say it is done): none lags */
        atomic_fetch_sub(&pending, 1);
    }
    return NULL;
}

static void after_fork_in_child(void) {  /* the child has no workers (only the forking thread survives) */
    pthread_mutex_init(&call_lock, NULL);
    pthread_mutex_init(&sleep_lock, NULL);
    pthread_cond_init(&wake, NULL);
    workers = 0;
    atomic_store(&sleepers, 0);
}

/* function(arg, part, parts) for every part, on the calling thread (part 0) and up to threads - 1 workers. The
   attention of a decoding step (decode_attention.c) runs on this pool too: one pool spins beside the step. */
void tokviz_parallel(PartFunction function, const void* arg, int threads) {
    if (threads <= 1) {
        function(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&call_lock);
    static int fork_handler;
    if (!fork_handler) fork_handler = pthread_atfork(NULL, NULL, after_fork_in_child) == 0;
    while (workers < threads - 1 && workers < MAX_WORKERS) {
        pthread_t t;
        first_generation[workers + 1] = atomic_load(&generation);
        if (pthread_create(&t, NULL, worker, (void*)(intptr_t)(workers + 1)) != 0) break;
        pthread_detach(t);
        workers++;
    }
    current_parts = 1 + (workers < threads - 1 ? workers : threads - 1);
    current = function;
    current_arg = arg;
    atomic_store(&pending, workers);
    atomic_fetch_add(&generation, 1);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    function(arg, 0, current_parts);
    while (atomic_load(&pending) > 0) PAUSE();
    pthread_mutex_unlock(&call_lock);
}

static int matmul(const float* x, int64_t M, int64_t K, const uint8_t* q, int64_t qstride, int is_q4,
                  const float* d, const float* m, float* y, int64_t N, int threads) {
    if (M < 1 || M > MAX_ROWS || K % QB != 0) return -1;
    Job job = {x, M, K, K / QB, q, qstride, is_q4, d, m, y, N};
    tokviz_parallel(run_part, &job, N < 64 ? 1 : threads);
    return 0;
}

/* Between BLAS calls of a prompt's forward pass: on the calling thread's OpenMP team, as torch's own ops (the
   pool above, spinning beside torch's threads after each call, made these products 4x slower). */
static int dequantise(const uint8_t* q, int64_t qstride, int is_q4, const float* d, const float* m, float* y,
                      int64_t N, int64_t K) {
    if (K % QB != 0) return -1;
    const int64_t KB = K / QB;
    #pragma omp parallel for schedule(static) if (N >= 64)
    for (int64_t n = 0; n < N; n++)
        dequantise_column(q + n * KB * qstride, qstride, is_q4, d + n * KB, m ? m + n * KB : NULL, KB, y + n * K);
    return 0;
}

int tokviz_q4_1_dequantise(const uint8_t* quants, const float* scales, const float* mins, float* y, int64_t N,
                           int64_t K) {
    return dequantise(quants, 16, 1, scales, mins, y, N, K);
}

int tokviz_q8_0_dequantise(const int8_t* quants, const float* scales, float* y, int64_t N, int64_t K) {
    return dequantise((const uint8_t*)quants, 32, 0, scales, NULL, y, N, K);
}

int tokviz_q4_1_matmul(const float* x, int64_t M, int64_t K, const uint8_t* quants, const float* scales,
                       const float* mins, float* y, int64_t N, int threads) {
    return matmul(x, M, K, quants, 16, 1, scales, mins, y, N, threads);
}

int tokviz_q8_0_matmul(const float* x, int64_t M, int64_t K, const int8_t* quants, const float* scales, float* y,
                       int64_t N, int threads) {
    return matmul(x, M, K, (const uint8_t*)quants, 32, 0, scales, NULL, y, N, threads);
}

int tokviz_max_rows(void) { return MAX_ROWS; }

#ifdef LANES
int tokviz_vector_width(void) { return LANES; }
#else
int tokviz_vector_width(void) { return 1; }
#endif
