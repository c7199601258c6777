/* Attention of a one-token step (llama_decode.py): each row's one query per head against that row's cached keys
 * and values, grouped-query (query head h reads key/value head h / (q_heads / kv_heads)), the padding and holes
 * of a resident batch masked out.
 *
 * torch's SDPA takes 215 us a layer for 8 rows of 110 positions on one thread (290 inside a step; its CPU flash
 * kernel blocks for long queries, a decoding step has one), where reading the keys and values takes ~35 us.
 * Here a key is read once for every query head of its group: 109 us. Numbers: fp32 dot products in vector
 * lanes, the softmax's exp from vector_exp.h (~1 ulp) with its sum in fp32 lanes, so within fp32 rounding of
 * SDPA, not bit for bit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define W 8 /* floats per vector: one AVX register, half an AVX-512 one (two SSE registers without AVX) */
typedef float vf __attribute__((vector_size(W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(W * sizeof(int32_t))));
#define MAX_GROUP 16

static inline vf splat(float value) { return (vf){0} + value; }
static inline vf load(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline float lanes_sum(vf v) {
    float s = 0.f;
    for (int j = 0; j < W; j++) s += v[j];
    return s;
}
/* [sum of a[0], ..., sum of a[7]]: a transposing tree of shuffles, not eight serial sums of lanes */
static inline vf sums(const vf a[W]) {
    vf b[4], c[2];
    for (int i = 0; i < 4; i++)
        b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 8, 2, 10, 4, 12, 6, 14) +
               __builtin_shufflevector(a[2 * i], a[2 * i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
    for (int i = 0; i < 2; i++)
        c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(b[2 * i], b[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
    return __builtin_shufflevector(c[0], c[1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(c[0], c[1], 4, 5, 6, 7, 12, 13, 14, 15);
}

#include "thread_pool.h"
#include "vector_exp.h"

/* One row's key/value head and its group of query heads; D the head size (a constant where it is one of the
 * usual sizes, so that a query's and an output's vectors stay in registers). `scores`: group * padded floats. */
static inline __attribute__((always_inline)) int one_head(const float *qh, const float *k, const float *v,
                                                          int64_t group, const int64_t D, int64_t length,
                                                          int64_t padded, const uint8_t *keep, float scale,
                                                          float *scores, float *o) {
    float best[MAX_GROUP];
    for (int64_t g = 0; g < group; g++) best[g] = -__builtin_inff();
    for (int64_t l0 = 0; l0 < length; l0 += W) { /* W keys at a time, each read once for every query of the group */
        const float *kl[W];
        for (int i = 0; i < W; i++) kl[i] = k + (l0 + i < length ? l0 + i : length - 1) * D; /* the tail: masked */
        vi kept;
        for (int i = 0; i < W; i++) kept[i] = l0 + i < length && (!keep || keep[l0 + i]) ? -1 : 0;
        for (int64_t g = 0; g < group; g++) {
            vf acc[W] = {{0}};
            for (int64_t j = 0; j < D; j += W) {
                const vf qj = load(qh + g * D + j);
                for (int i = 0; i < W; i++) acc[i] += qj * load(kl[i] + j);
            }
            vf s = sums(acc) * scale;
            s = (vf)(((vi)s & kept) | ((vi)splat(-__builtin_inff()) & ~kept));
            store(scores + g * padded + l0, s);
            for (int i = 0; i < W; i++) best[g] = s[i] > best[g] ? s[i] : best[g];
        }
    }
    for (int64_t g = 0; g < group; g++) {
        if (best[g] == -__builtin_inff()) return 2;
        float *p = scores + g * padded;
        vf sum_lanes = {0};
        for (int64_t l = 0; l < padded; l += W) {
            const vf d = load(p + l) - best[g];
            const vf e = (vf)((vi)exp_nonpositive(d) & (vi)(d > splat(-__builtin_inff()))); /* masked: exactly 0 */
            store(p + l, e);
            sum_lanes += e;
        }
        const vf inverse = splat(1.0f / lanes_sum(sum_lanes));
        float *og = o + g * D;
        for (int64_t j0 = 0; j0 < D; j0 += 64) { /* 8 vectors of the output at a time: in registers */
            const int64_t width = D - j0 < 64 ? D - j0 : 64;
            vf acc[64 / W] = {{0}};
            for (int64_t l = 0; l < length; l++) {
                const vf pl = splat(p[l]);
                for (int64_t j = 0; j < width; j += W) acc[j / W] += pl * load(v + l * D + j0 + j);
            }
            for (int64_t j = 0; j < width; j += W) store(og + j0 + j, acc[j / W] * inverse);
        }
    }
    return 0;
}

typedef struct {
    const float *q, *keys, *values;
    int64_t rows, q_heads, kv_heads, dim, row_stride, head_stride, length, group, padded;
    const uint8_t *mask;
    float scale, *out, *scores; /* scores: group * padded floats for each part */
    int *status;                /* each part's */
} Attention;

/* Part `part` of `parts`: a share of the (row, key/value head) pairs, each computed as it is alone. */
static void attend_part(const void *arg, int part, int parts) {
    const Attention *a = arg;
    const int64_t pairs = a->rows * a->kv_heads, end = pairs * (part + 1) / parts;
    float *scores = a->scores + part * a->group * a->padded;
    int status = 0;
    for (int64_t u = pairs * part / parts; u < end && !status; u++) {
        const int64_t r = u / a->kv_heads, h = u % a->kv_heads;
        const float *k = a->keys + r * a->row_stride + h * a->head_stride;
        const float *v = a->values + r * a->row_stride + h * a->head_stride;
        const float *qh = a->q + (r * a->q_heads + h * a->group) * a->dim;
        float *o = a->out + (r * a->q_heads + h * a->group) * a->dim;
        const uint8_t *keep = a->mask ? a->mask + r * a->length : NULL;
        switch (a->dim) {
#define HEAD(D) one_head(qh, k, v, a->group, D, a->length, a->padded, keep, a->scale, scores, o)
            case 64: status = HEAD(64); break;
            case 128: status = HEAD(128); break;
            default: status = HEAD(a->dim);
#undef HEAD
        }
    }
    a->status[part] = status;
}

/* q: [rows, q_heads * dim]; keys/values: row r, head h, position l at r * row_stride + h * head_stride + l * dim;
 * mask: [rows, length] bytes (0: masked) or NULL; out: [rows, q_heads * dim]. Where new_k is given, the step's
 * own keys and values (row r at new_k + r * new_k_stride, new_v + r * new_v_stride, kv_heads * dim each) are
 * first written into position length - 1 of the cache (the transformers cache's update, without its ~40 us of
 * torch ops a layer). With `parallel` (exact_quant.c's pool, which the step's matrix products keep spinning), the
 * (row, head) pairs are shared among up to `threads` threads: 8 rows of SmolLM2 spent 5.6 ms of a step here on
 * one thread. Returns 1 for shapes it does not take (the caller uses SDPA; nothing is written), 2 where a row
 * masks every position. */
int tokviz_decode_attention(const float *q, int64_t rows, int64_t q_heads, int64_t kv_heads, int64_t dim,
                            float *keys, float *values, int64_t row_stride, int64_t head_stride, int64_t length,
                            const uint8_t *mask, float scale, float *out, const float *new_k, int64_t new_k_stride,
                            const float *new_v, int64_t new_v_stride, Parallel parallel, int threads) {
    if (rows < 1 || kv_heads < 1 || q_heads % kv_heads || q_heads / kv_heads > MAX_GROUP || dim % W || dim < W ||
        length < 1 || (new_k && !new_v))
        return 1;
    if (new_k)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t h = 0; h < kv_heads; h++) {
                const int64_t at = r * row_stride + h * head_stride + (length - 1) * dim;
                memcpy(keys + at, new_k + r * new_k_stride + h * dim, (size_t)dim * sizeof(float));
                memcpy(values + at, new_v + r * new_v_stride + h * dim, (size_t)dim * sizeof(float));
            }
    if (!parallel || threads < 1 || rows * kv_heads < 2) threads = 1;
    const int64_t group = q_heads / kv_heads, padded = (length + W - 1) / W * W;
    int status[64] = {0};
    if (threads > 64) threads = 64;
    float *scores = malloc((size_t)(threads * group * padded) * sizeof(float));
    if (!scores) return 1;
    const Attention a = {q, keys, values, rows, q_heads, kv_heads, dim, row_stride, head_stride, length, group,
                         padded, mask, scale, out, scores, status};
    if (threads > 1) parallel(attend_part, &a, threads);
    else attend_part(&a, 0, 1);
    free(scores);
    int worst = 0;
    for (int i = 0; i < threads; i++) worst = status[i] > worst ? status[i] : worst;
    return worst;
}
