/* The small per-layer work of a Llama one-token step (llama_decode.py) in one native call each: torch spends
 * 50-90 us of dispatch on a 576-wide RMSNorm or a rotary embedding (7-14 tiny ops), ~0.25 ms a layer of a step.
 * Built without FMA contraction: the rotary embedding rounds exactly as transformers' (q * cos) + (rot(q) * sin);
 * the norm sums its squares in double, so it is as close to exact as fp32 allows (torch's fp32 sum may differ
 * from it in the last bit). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_HEAD_DIM 1024

/* Per row: x += delta (where delta is given), then out = weight * (x * 1 / sqrt(mean(x^2) + eps)), as
 * transformers' LlamaRMSNorm in fp32. */
int tokviz_add_rms_norm(float *x, const float *delta, int64_t rows, int64_t n, const float *weight, float eps,
                        float *out) {
    if (n <= 0 || rows < 0) return 1;
    for (int64_t r = 0; r < rows; r++) {
        float *xr = x + r * n, *o = out + r * n;
        if (delta) {
            const float *d = delta + r * n;
            for (int64_t i = 0; i < n; i++) xr[i] += d[i];
        }
        double squares = 0.0;
        for (int64_t i = 0; i < n; i++) squares += (double)xr[i] * xr[i];
        float variance = (float)(squares / (double)n);
        float scale = 1.0f / sqrtf(variance + eps);
        for (int64_t i = 0; i < n; i++) o[i] = weight[i] * (xr[i] * scale);
    }
    return 0;
}

/* In place, per row r and head: x = x * cos[r] + rotate_half(x) * sin[r], rotate_half(x) = [-x2, x1]. Rows hold
 * `heads` heads of `dim` values each; cos and sin are [rows, dim]. */
static void rotate(float *x, int64_t heads, int64_t dim, const float *c, const float *s) {
    float t[MAX_HEAD_DIM];
    int64_t half = dim / 2;
    for (int64_t h = 0; h < heads; h++, x += dim) {
        memcpy(t, x, (size_t)dim * sizeof(float));
        for (int64_t j = 0; j < half; j++) x[j] = t[j] * c[j] + (-t[j + half]) * s[j];
        for (int64_t j = half; j < dim; j++) x[j] = t[j] * c[j] + t[j - half] * s[j];
    }
}

int tokviz_rotary(float *q, int64_t q_heads, float *k, int64_t k_heads, int64_t rows, int64_t dim,
                  const float *cos, const float *sin) {
    if (dim <= 0 || dim % 2 || dim > MAX_HEAD_DIM || rows < 0) return 1;
    for (int64_t r = 0; r < rows; r++) {
        rotate(q + r * q_heads * dim, q_heads, dim, cos + r * dim, sin + r * dim);
        rotate(k + r * k_heads * dim, k_heads, dim, cos + r * dim, sin + r * dim);
    }
    return 0;
}

/* 8-float vectors for silu_mul's exp */
typedef float vf __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(8 * sizeof(int32_t))));
static inline vf splat(float value) { return (vf){0} + value; }
#include "vector_exp.h"

/* Per row: out = silu(gate) * up, the row holding [gate (n), up (n)] side by side (the joined gate/up product);
 * silu(g) = g / (1 + exp(-g)), with e = exp(-|g|) <= 1: g / (1 + e) for g >= 0, g * e / (1 + e) below (no
 * overflow). Three torch ops on a strided view of the row (~50 us at 8 rows of 1,536) in one pass; within a few
 * units in the last place of torch's silu. */
int tokviz_silu_mul(const float *gate_up, int64_t rows, int64_t n, float *out) {
    if (n <= 0 || rows < 0) return 1;
    for (int64_t r = 0; r < rows; r++) {
        const float *g = gate_up + r * 2 * n, *u = g + n;
        float *o = out + r * n;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            vf x, up;
            memcpy(&x, g + i, sizeof x);
            memcpy(&up, u + i, sizeof up);
            const vi negative = x < splat(0.0f);
            const vf e = exp_nonpositive((vf)((vi)x | ((vi){0} + INT32_MIN))); /* exp(-|x|): the sign bit set */
            const vf top = (vf)(((vi)(x * e) & negative) | ((vi)x & ~negative));
            const vf y = top / (1.0f + e) * up;
            memcpy(o + i, &y, sizeof y);
        }
        for (; i < n; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
    return 0;
}
