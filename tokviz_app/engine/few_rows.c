/* y[M, N] = x[M, K] @ W[N, K]^T + bias in fp32, for the 1-16 rows of a decoding step (few_rows.py).

   BLAS libraries tune for many rows: on a 2-core Xeon, MKL ran GPT-2's products at 2 rows 1.5x and at 8 rows
   ~2x one row's time, while a step costs what reading the weights once costs. Here a tile of COLS weight rows
   x ROWS input rows keeps every accumulator in a register, so each weight vector read from memory feeds ROWS
   multiply-adds, and a prefetch AHEAD floats down each weight row keeps the memory stream going.

   Sums are in fp32 lanes, then across the lanes: a different order of fp32 additions than BLAS, nothing
   more (tests compare every layout with an independent forward). Written with GCC/Clang vector types, so
   -march=native picks AVX-512 or AVX2; no fast-math.

   Threads: OpenMP, built with -fopenmp. Loaded into a process where torch has already loaded its libgomp.so.1,
   the loader reuses that library (same soname), so these loops run on the calling thread's own OpenMP team,
   as torch's ops do: a second thread pool spinning beside torch's made every op of a step wait (openmp.py). */
#include <stdint.h>
#include <string.h>

#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));

#define COLS 3                        /* weight rows in a tile */
#define ROWS (LANES == 16 ? 8 : 4)    /* input rows in a tile: 24 accumulators of 32 zmm registers; 12 of 16 ymm */
#define AHEAD 2048                    /* floats: prefetch 8 KB down each weight row */
#define MAX_ROWS 16 /* few_rows.MAX_ROWS */

static inline vf load(const float* p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline float lane_sum(vf v) {
    float s = 0.f;
    for (int i = 0; i < LANES; i++) s += v[i];
    return s;
}

/* R input rows x C weight rows (R, C compile-time constants after inlining). */
static inline __attribute__((always_inline)) void tile(const float* x, const int R, int64_t K, const float* w,
                                                       const int C, const float* bias, float* y, int64_t N) {
    vf acc[COLS][ROWS];
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) acc[c][r] = (vf){0};
    for (int64_t k = 0; k < K; k += LANES) {
        vf wv[COLS];
        for (int c = 0; c < C; c++) {
            wv[c] = load(w + c * K + k);
            __builtin_prefetch(w + c * K + k + AHEAD); /* never faults, even past the end */
        }
        for (int r = 0; r < R; r++) {
            const vf xv = load(x + r * K + k);
            for (int c = 0; c < C; c++) acc[c][r] += wv[c] * xv;
        }
    }
    for (int c = 0; c < C; c++)
        for (int r = 0; r < R; r++) y[r * N + c] = lane_sum(acc[c][r]) + (bias ? bias[c] : 0.f);
}

/* Output columns [n, n + C) for every row. */
static void columns(const float* x, int64_t M, int64_t K, const float* w, const float* bias, float* y, int64_t N,
                    int64_t n, int C) {
    for (int64_t r0 = 0; r0 < M; r0 += ROWS) {
        const float* xs = x + r0 * K;
        float* ys = y + r0 * N + n;
        const float* bs = bias ? bias + n : NULL;
        const int R = M - r0 < ROWS ? (int)(M - r0) : ROWS;
#define TILE(rows)                                                                                      \
    case rows:                                                                                          \
        if (C == COLS)                                                                                  \
            tile(xs, rows, K, w + n * K, COLS, bs, ys, N);                                              \
        else                                                                                            \
            for (int c = 0; c < C; c++) tile(xs, rows, K, w + (n + c) * K, 1, bs ? bs + c : NULL, ys + c, N); \
        break;
        switch (R) {
            TILE(1) TILE(2) TILE(3) TILE(4)
#if ROWS == 8
            TILE(5) TILE(6) TILE(7) TILE(8)
#endif
        }
#undef TILE
    }
}

/* 0, or -1 for a shape it does not take (the caller uses BLAS). All arrays contiguous fp32; bias may be NULL. */
int tokviz_few_rows_matmul(const float* x, int64_t M, int64_t K, const float* weight, const float* bias, float* y,
                           int64_t N, int threads) {
    if (M < 1 || M > MAX_ROWS || K < LANES || K % LANES != 0 || N < 1) return -1;
    const int64_t tiles = (N + COLS - 1) / COLS;
#pragma omp parallel for num_threads(threads > 0 ? threads : 1) schedule(static) if (tiles >= 64)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t n = t * COLS;
        columns(x, M, K, weight, bias, y, N, n, N - n < COLS ? (int)(N - n) : COLS);
    }
    return 0;
}
