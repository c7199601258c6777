/* One row of logits -> the statistics of its chosen token, in three passes over the row (token_steps.py).

   For plain sampling (the raw distribution) a prompt token's numbers are: its log-probability, its rank
   (1 + the tokens with a strictly larger logit), the row's entropy, how many tokens keep a non-zero fp32
   probability, and the top-k tokens. torch makes ~10 passes over [rows, V] temporaries for them (0.7-1.1 s
   for 1,000 rows of GPT-2's 50,257 logits on a 2-core Xeon); here a row is read three times while it sits
   in the cache (~0.09 s).

   Numbers agree with torch's log_softmax to fp32 rounding: max, then sum(exp(x - max)) in fp32 lanes joined
   in double, logprob = (x - max) - log(sum); entropy in nats = log(sum) - sum(e * (x - max)) / sum.
   Written with GCC/Clang vector types, so it vectorises for whatever -march=native offers without
   fast-math: a row holding NaN or no finite maximum returns 1 and the caller takes torch's path for it. */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* As wide as the machine's vectors: 16-float vectors on AVX2 are pairs of registers, and GCC moved them through
   memory (275 -> 110 us a row of SmolLM2's 49,152 logits with 8 on a 2-core AVX2 EPYC) */
#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));
#define CHUNK 1024 /* elements summed in fp32 lanes before they join the double sums */
#define UNDERFLOW -103.972077f /* expf(y) rounds to 0 below -150 ln 2 */

static inline vf splat(float value) { return (vf){0} + value; }

static inline vf load(const float* p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}

#include "vector_exp.h"

/* Insert (value, id) into the descending list of the k best so far (equal values keep the lower id first). */
static inline void insert(float value, int64_t id, float* best, int64_t* ids, int k, int* filled) {
    int j = *filled < k ? (*filled)++ : k - 1;
    while (j > 0 && value > best[j - 1]) {
        best[j] = best[j - 1];
        ids[j] = ids[j - 1];
        j--;
    }
    best[j] = value;
    ids[j] = id;
}

static int one_row(const float* x, int64_t V, int64_t target, int k, float* logprob, int32_t* rank,
                   double* entropy_nats, int32_t* kept, int64_t* top_ids, float* top_logprobs) {
    const float chosen = x[target];
    const int64_t whole = V - V % LANES;

    /* pass 1: the maximum and the rank (lane by lane: the compiler leaves a select that may meet NaN scalar) */
    vf max_lanes = splat(-INFINITY);
    vi greater_lanes = {0};
    for (int64_t i = 0; i < whole; i += LANES) {
        const vf v = load(x + i);
        const vi above = v > max_lanes;
        max_lanes = (vf)(((vi)v & above) | ((vi)max_lanes & ~above));
        greater_lanes -= v > splat(chosen); /* true is -1 */
    }
    float max = -INFINITY;
    int64_t greater = 0;
    for (int j = 0; j < LANES; j++) {
        max = max_lanes[j] > max ? max_lanes[j] : max;
        greater += greater_lanes[j];
    }
    for (int64_t i = whole; i < V; i++) {
        max = x[i] > max ? x[i] : max;
        greater += x[i] > chosen;
    }
    if (!isfinite(max)) return 1;

    /* pass 2: sum(exp(x - max)) and sum(exp(x - max) * (x - max)), fp32 lanes per chunk, then double */
    double sum = 0.0, weighted = 0.0;
    for (int64_t start = 0; start < whole; start += CHUNK) {
        const int64_t end = start + CHUNK < whole ? start + CHUNK : whole;
        vf sum_lanes = {0}, weighted_lanes = {0};
        for (int64_t i = start; i < end; i += LANES) {
            const vf d = load(x + i) - max;
            const vf e = exp_nonpositive(d);
            sum_lanes += e;
            weighted_lanes += e * (vf)((vi)d & (vi)(d > splat(-87.0f)));  /* no -inf * 0 */
        }
        for (int j = 0; j < LANES; j++) {
            sum += sum_lanes[j];
            weighted += weighted_lanes[j];
        }
    }
    for (int64_t i = whole; i < V; i++) {
        const float d = x[i] - max;
        if (d > -87.0f) {
            const float e = exp_nonpositive(splat(d))[0];
            sum += e;
            weighted += e * d;
        }
    }
    if (sum != sum) return 1; /* a NaN logit (the maximum skipped it; exp(NaN) did not) */
    const float log_sum = (float)log(sum);

    /* pass 3: tokens with a non-zero fp32 probability, and the best k */
    float best[32]; /* k <= 32 (checked by the caller) */
    int filled = 0;
    int64_t count = 0;
    const float keep_above = max + (UNDERFLOW + log_sum); /* (x - max) - log_sum > UNDERFLOW */
    for (int64_t start = 0; start < V; start += 64) {
        const int64_t end = start + 64 < V ? start + 64 : V;
        const float threshold = filled < k ? -INFINITY : best[k - 1];
        int any = filled < k;
        for (int64_t i = start; i < end; i++) {
            count += x[i] > keep_above;
            any |= x[i] > threshold;
        }
        if (any)
            for (int64_t i = start; i < end; i++)
                if (filled < k || x[i] > best[k - 1]) insert(x[i], i, best, top_ids, k, &filled);
    }
    *logprob = (chosen - max) - log_sum;
    *rank = (int32_t)(greater + 1);
    *entropy_nats = log(sum) - weighted / sum;
    *kept = (int32_t)count;
    for (int j = 0; j < k; j++) top_logprobs[j] = (best[j] - max) - log_sum;
    return 0;
}

/* rows x V logits; per row r: targets[r] in [0, V), the best k (<= 32). Returns 1 at the first row it refuses
   (NaN, or no finite maximum): the caller computes the block in torch. */
int tokviz_row_stats(const float* logits, int64_t rows, int64_t V, const int64_t* targets, int k, float* logprob,
                     int32_t* rank, double* entropy_nats, int32_t* kept, int64_t* top_ids, float* top_logprobs) {
    for (int64_t r = 0; r < rows; r++)
        if (one_row(logits + r * V, V, targets[r], k, logprob + r, rank + r, entropy_nats + r, kept + r,
                    top_ids + r * k, top_logprobs + r * k))
            return 1;
    return 0;
}
