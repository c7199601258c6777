/* exp(d) for d <= 0 in every lane of the including file's float vector type `vf` (with `vi`, its int32 twin, and
 * `splat`): Cephes' expf polynomial, ~1 ulp; below -87 it gives exp(-87) ~ 1.6e-38, which no sum of
 * probabilities can see. Shared by row_stats.c, decode_attention.c and decode_glue.c (a library's cache key
 * includes the headers it includes: quant_library.library_path). */
static inline vf exp_nonpositive(vf d) {
    const vi low = d < splat(-87.0f);
    d = (vf)(((vi)splat(-87.0f) & low) | ((vi)d & ~low));
    const vf n = __builtin_convertvector(__builtin_convertvector(d * 1.44269504088896341f - 0.5f, vi), vf);
    const vf r = d - n * 0.693359375f - n * -2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (vf)((__builtin_convertvector(n, vi) + 127) << 23);
}
