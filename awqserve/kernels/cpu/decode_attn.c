/* Decode attention over a paged float32 KV cache (AVX2 + FMA): one new query row per sequence.
 *
 * Why: in the compiled batched decode step, inductor fused the gather, scores, softmax and weighted
 * sum into loops that read the value rows one float at a time; at 16 sequences of ~390 tokens that
 * one kernel took 37.7 ms of a 71 ms step (1.26 ms per layer, docs/benchmarks). Here each
 * sequence's keys and values are read once, in cache order.
 *
 * Contract: q [B, Hq, D]; cache [2, S, Hkv, D] (S slots; K then V); slots [B, L] int64 slot ids;
 * mask [B, L] (1 = visible) or NULL (all visible); query head h reads KV head h / (Hq / Hkv).
 * out [B, Hq, D] = softmax_l(scale * q . k_l) @ v_l over the visible l. D a multiple of 8.
 * Rows with no visible key get zeros. Sequences are split over the threads.
 */
#include <immintrin.h>
#include "avx2_util.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* e^x for x <= 0 (scores minus their max): 2^n * P(r), n = round(x / ln 2), |r| <= ln2 / 2, P a
 * degree-6 Taylor polynomial (relative error < 3e-7 on that interval); x below -87 gives 0. */
static inline __m256 exp_nonpos(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.0f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_max_ps(x, lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);  /* ln 2, split for accuracy */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

/* One sequence: all Hq query rows against its L slots. Each slot's K (then V) row for every KV head
 * is Hkv * D contiguous floats, so the cache is read in order, block by block (a task per KV head
 * read a third of each row at a stride and ran at ~9 GB/s, measured). s: Hq * Lp scores; acc: Hq * D. */
static void attend_seq(const float* q, const float* kc, const float* vc, const int64_t* slots,
                       const uint8_t* mask, int L, int Hq, int Hkv, int D, float scale, float* s, int Lp,
                       float* acc, float* out) {
    const int nv = D / 8, G = Hq / Hkv;
    const long row = (long)Hkv * D;
    for (int l = 0; l < L; ++l) {
        if (mask != NULL && !mask[l]) {
            for (int h = 0; h < Hq; ++h) s[h * Lp + l] = -INFINITY;
            continue;
        }
        const float* k = kc + slots[l] * row;
        for (int h = 0; h < Hq; ++h) {
            const float* kh = k + (h / G) * D;
            __m256 a = _mm256_setzero_ps();
            for (int j = 0; j < nv; ++j) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + h * D + 8 * j), _mm256_loadu_ps(kh + 8 * j), a);
            s[h * Lp + l] = hsum8(a) * scale;
        }
    }
    for (int h = 0; h < Hq; ++h) {
        float* sh = s + h * Lp;
        for (int l = L; l < Lp; ++l) sh[l] = -INFINITY;
        float m = -INFINITY;
        for (int l = 0; l < L; ++l) m = sh[l] > m ? sh[l] : m;
        __m256 sum = _mm256_setzero_ps();
        const __m256 mv = _mm256_set1_ps(m == -INFINITY ? 0.0f : m);
        for (int l = 0; l < Lp; l += 8) {
            __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(sh + l), mv));
            _mm256_storeu_ps(sh + l, e);
            sum = _mm256_add_ps(sum, e);
        }
        const float tot = hsum8(sum);
        const float inv = tot > 0.0f ? 1.0f / tot : 0.0f;  /* no visible key: zeros */
        for (int l = 0; l < Lp; ++l) sh[l] *= inv;
    }
    for (int i = 0; i < Hq * D; ++i) acc[i] = 0.0f;
    for (int l = 0; l < L; ++l) {
        if (mask != NULL && !mask[l]) continue;
        const float* v = vc + slots[l] * row;
        for (int h = 0; h < Hq; ++h) {
            const float* vh = v + (h / G) * D;
            const __m256 p = _mm256_set1_ps(s[h * Lp + l]);
            float* ah = acc + h * D;
            for (int j = 0; j < nv; ++j)
                _mm256_storeu_ps(ah + 8 * j, _mm256_fmadd_ps(p, _mm256_loadu_ps(vh + 8 * j), _mm256_loadu_ps(ah + 8 * j)));
        }
    }
    for (int i = 0; i < Hq * D; ++i) out[i] = acc[i];
}

int awq_decode_attn(const float* q, const float* cache, long num_slots, const int64_t* slots,
                    const uint8_t* mask, int B, int L, int Hq, int Hkv, int D, float scale, float* out,
                    int nthreads) {
    if (D % 8 || Hq % Hkv || L < 1) return -2;
    const int Lp = (L + 7) & ~7;
    const float* vcache = cache + num_slots * (long)Hkv * D;
    int failed = 0;
#pragma omp parallel num_threads(nthreads)
    {
        float* s = (float*)malloc(sizeof(float) * ((size_t)Hq * Lp + (size_t)Hq * D));
        if (s == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int b = 0; b < B; ++b) {
            if (s == NULL) continue;
            attend_seq(q + (long)b * Hq * D, cache, vcache, slots + (long)b * L, mask ? mask + (long)b * L : NULL,
                       L, Hq, Hkv, D, scale, s, Lp, s + (size_t)Hq * Lp, out + (long)b * Hq * D);
        }
        free(s);
    }
    return failed ? -1 : 0;
}
