/* Bandwidth-bound CPU matmuls for few rows (decode, short prefill): int4 and int8 weights against
 * activations quantized on the fly to int8 blocks of 64 (AVX2 + FMA; runs on AVX-512 CPUs too).
 *
 * Why: PyTorch's CPU int4/int8 weight-only kernels reach 4-6 GB/s on AVX2 (docs/benchmarks), a
 * fraction of the memory bandwidth a one-row matmul is bound by. Integer dot products
 * (vpmaddubsw: 32 multiply-adds per instruction) keep the unpacking cheap enough to stream weights
 * at memory speed on two cores.
 *
 * Layouts (built once at load by awqserve/kernels/cpu/q8_kernels.py):
 *   int4: w4 uint8 [N, K/2]; each block of 64 weights k0..k0+63 is 32 bytes, byte j holding weight
 *         k0+j in its low nibble and k0+j+32 in its high nibble, as unsigned u = q + 8 (0..15).
 *         Group g (G weights, G a multiple of 64): W[n,k] = u * scale[n,g] + bias[n,g]
 *         (bias = -(8 + zero) * scale), so y = sum_g scale * <u, x> + bias * sum(x over g).
 *   int8: w8 int8 [N, K], one scale per row: W[n,k] = w8[n,k] * rscale[n].
 * Activations: x float32 [M, K] row-major, K a multiple of 64; per block of 64 one scale
 * d = max|x| / 127 and int8 values round(x / d). The result equals the float product of W with these
 * rounded activations up to float summation order (the bias term uses the rounded group sums too).
 * Output: float32 [M, N]. Threads split the output features in contiguous chunks.
 */
#include <immintrin.h>
#include "avx2_util.h"
#include <stdint.h>
#include <stdlib.h>

#define QB 64  /* activation block = int4 super-block */

static inline __m256i round_to_i32(__m256 v, __m256 scale) {
    return _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

/* 32 floats -> 32 int8 (x * id, rounded), in order. */
static inline void pack32(const float* p, __m256 id, int8_t* dst) {
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i i0 = round_to_i32(_mm256_loadu_ps(p), id), i1 = round_to_i32(_mm256_loadu_ps(p + 8), id);
    __m256i i2 = round_to_i32(_mm256_loadu_ps(p + 16), id), i3 = round_to_i32(_mm256_loadu_ps(p + 24), id);
    /* packs work within 128-bit lanes; the permute restores element order */
    __m256i q = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    _mm256_storeu_si256((__m256i*)dst, _mm256_permutevar8x32_epi32(q, perm));
}

/* One row of K floats -> K/64 int8 blocks (at xq + 64 b) and their scales; block sums of the
 * rounded values (times the scale) into xs when given. */
static void quantize_row(const float* x, int K, int8_t* xq, float* xd, float* xs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    for (int b = 0; b < K / QB; ++b) {
        const float* p = x + b * QB;
        __m256 m = _mm256_setzero_ps();
        for (int k = 0; k < QB; k += 8) m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(p + k)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        const float amax = _mm_cvtss_f32(m4);
        xd[b] = amax / 127.0f;
        const __m256 id = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        pack32(p, id, xq + b * QB);
        pack32(p + 32, id, xq + b * QB + 32);
        if (xs) {
            __m256i s = _mm256_add_epi32(
                _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)(xq + b * QB))), ones16),
                _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, _mm256_loadu_si256((const __m256i*)(xq + b * QB + 32))), ones16));
            xs[b] = xd[b] * hsum8(_mm256_cvtepi32_ps(s));
        }
    }
}

/* Rows [n0, n1) of the int4 product for activation rows m0..m0+MM-1. Inlined with a constant MM
 * (1..4) so the accumulators stay in registers; groups alternate between two accumulator sets to
 * break the FMA latency chain. */
static inline __attribute__((always_inline)) void w4_rows(
        const uint8_t* w4, const float* scale, const float* bias, int K, int G, int N, const int8_t* xq,
        const float* xd, const float* xs, int m0, const int MM, int n0, int n1, float* out) {
    const int nb = K / QB, ng = K / G, bpg = G / QB;
    const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    const int8_t* xr[4];
    const float* dr[4];
    const float* gr[4];
    for (int i = 0; i < MM; ++i) {
        xr[i] = xq + (size_t)(m0 + i) * K;
        dr[i] = xd + (size_t)(m0 + i) * nb;
        gr[i] = xs + (size_t)(m0 + i) * ng;
    }
    for (int n = n0; n < n1; ++n) {
        const uint8_t* wr = w4 + (size_t)n * (K / 2);
        const float* sc = scale + (size_t)n * ng;
        const float* bi = bias + (size_t)n * ng;
        __m256 tot[4][2];
        float fb[4];
        for (int i = 0; i < MM; ++i) tot[i][0] = tot[i][1] = _mm256_setzero_ps();
/* one group = BPG super-blocks of 64 (BPG a literal, so the loop unrolls: a runtime inner loop
 * cost 37 % at G = 64, measured) */
#define W4_GROUP(g, A, BPG)                                                                         \
    do {                                                                                            \
        const float s_ = sc[g];                                                                     \
        for (int j = 0; j < (BPG); ++j) {                                                           \
            const int b = (g) * (BPG) + j;                                                          \
            __m256i w = _mm256_loadu_si256((const __m256i*)(wr + b * (QB / 2)));                    \
            __m256i lo = _mm256_and_si256(w, low), hi = _mm256_and_si256(_mm256_srli_epi16(w, 4), low); \
            for (int i = 0; i < MM; ++i) {                                                          \
                __m256i x0 = _mm256_loadu_si256((const __m256i*)(xr[i] + b * QB));                  \
                __m256i x1 = _mm256_loadu_si256((const __m256i*)(xr[i] + b * QB + 32));             \
                /* u <= 15, |x| <= 127: each pair sum <= 3810, two of them fit int16 */             \
                __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, x0), _mm256_maddubs_epi16(hi, x1)); \
                tot[i][A] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones)),        \
                                            _mm256_set1_ps(s_ * dr[i][b]), tot[i][A]);              \
            }                                                                                       \
        }                                                                                           \
    } while (0)
#define W4_ROW(BPG)                                                                                 \
    do {                                                                                            \
        int g = 0;                                                                                  \
        for (; g + 1 < ng; g += 2) {                                                                \
            W4_GROUP(g, 0, BPG);                                                                    \
            W4_GROUP(g + 1, 1, BPG);                                                                \
        }                                                                                           \
        if (g < ng) W4_GROUP(g, 0, BPG);                                                            \
    } while (0)
        switch (bpg) {
            case 1: W4_ROW(1); break;
            case 2: W4_ROW(2); break;
            case 4: W4_ROW(4); break;
            default: W4_ROW(bpg); break;
        }
#undef W4_ROW
#undef W4_GROUP
        /* the bias term: a dot product of this row's group biases with the rounded group sums */
        for (int i = 0; i < MM; ++i) {
            __m256 f = _mm256_setzero_ps();
            int h = 0;
            for (; h + 8 <= ng; h += 8) f = _mm256_fmadd_ps(_mm256_loadu_ps(bi + h), _mm256_loadu_ps(gr[i] + h), f);
            fb[i] = hsum8(f);
            for (; h < ng; ++h) fb[i] += bi[h] * gr[i][h];
        }
        for (int i = 0; i < MM; ++i)
            out[(size_t)(m0 + i) * N + n] = hsum8(_mm256_add_ps(tot[i][0], tot[i][1])) + fb[i];
    }
}

/* Rows [n0, n1) of the int8 (per-row scale) product; same scheme. */
static inline __attribute__((always_inline)) void w8_rows(
        const int8_t* w8, const float* rscale, int K, int N, const int8_t* xq, const float* xd,
        int m0, const int MM, int n0, int n1, float* out) {
    const int nb = K / QB;
    const __m256i ones = _mm256_set1_epi16(1);
    const int8_t* xr[4];
    const float* dr[4];
    for (int i = 0; i < MM; ++i) { xr[i] = xq + (size_t)(m0 + i) * K; dr[i] = xd + (size_t)(m0 + i) * nb; }
    for (int n = n0; n < n1; ++n) {
        const int8_t* wr = w8 + (size_t)n * K;
        __m256 acc[4][2];
        for (int i = 0; i < MM; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#define W8_BLOCK(b, A)                                                                              \
    do {                                                                                            \
        __m256i w0 = _mm256_loadu_si256((const __m256i*)(wr + (b) * QB));                           \
        __m256i w1 = _mm256_loadu_si256((const __m256i*)(wr + (b) * QB + 32));                      \
        for (int i = 0; i < MM; ++i) {                                                              \
            __m256i x0 = _mm256_loadu_si256((const __m256i*)(xr[i] + (b) * QB));                    \
            __m256i x1 = _mm256_loadu_si256((const __m256i*)(xr[i] + (b) * QB + 32));               \
            /* vpmaddubsw wants one unsigned operand: |x| times w carrying x's sign */              \
            __m256i p0 = _mm256_maddubs_epi16(_mm256_sign_epi8(x0, x0), _mm256_sign_epi8(w0, x0));  \
            __m256i p1 = _mm256_maddubs_epi16(_mm256_sign_epi8(x1, x1), _mm256_sign_epi8(w1, x1));  \
            __m256i p = _mm256_add_epi32(_mm256_madd_epi16(p0, ones), _mm256_madd_epi16(p1, ones)); \
            acc[i][A] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(dr[i] + (b)), acc[i][A]); \
        }                                                                                           \
    } while (0)
        int b = 0;
        for (; b + 1 < nb; b += 2) {
            W8_BLOCK(b, 0);
            W8_BLOCK(b + 1, 1);
        }
        if (b < nb) W8_BLOCK(b, 0);
#undef W8_BLOCK
        for (int i = 0; i < MM; ++i)
            out[(size_t)(m0 + i) * N + n] = rscale[n] * hsum8(_mm256_add_ps(acc[i][0], acc[i][1]));
    }
}

static void w4_tile(const uint8_t* w4, const float* scale, const float* bias, int K, int G, int N,
                    const int8_t* xq, const float* xd, const float* xs, int m0, int mm, int n0, int n1,
                    float* out) {
    switch (mm) {
        case 1: w4_rows(w4, scale, bias, K, G, N, xq, xd, xs, m0, 1, n0, n1, out); break;
        case 2: w4_rows(w4, scale, bias, K, G, N, xq, xd, xs, m0, 2, n0, n1, out); break;
        case 3: w4_rows(w4, scale, bias, K, G, N, xq, xd, xs, m0, 3, n0, n1, out); break;
        default: w4_rows(w4, scale, bias, K, G, N, xq, xd, xs, m0, 4, n0, n1, out); break;
    }
}

static void w8_tile(const int8_t* w8, const float* rscale, int K, int N, const int8_t* xq, const float* xd,
                    int m0, int mm, int n0, int n1, float* out) {
    switch (mm) {
        case 1: w8_rows(w8, rscale, K, N, xq, xd, m0, 1, n0, n1, out); break;
        case 2: w8_rows(w8, rscale, K, N, xq, xd, m0, 2, n0, n1, out); break;
        case 3: w8_rows(w8, rscale, K, N, xq, xd, m0, 3, n0, n1, out); break;
        default: w8_rows(w8, rscale, K, N, xq, xd, m0, 4, n0, n1, out); break;
    }
}

typedef struct {
    int8_t* xq;
    float* xd;
    float* xs;
    void* mem;
} qacts;

/* Per-row block sums -> group sums (G a multiple of QB), in place at the front of each row's slot. */
static void group_sums(float* xs, int K, int G) {
    const int per = G / QB;
    for (int g = 0; g < K / G; ++g) {
        float s = 0.0f;
        for (int b = g * per; b < (g + 1) * per; ++b) s += xs[b];
        xs[g] = s;  /* g <= g * per: reads ahead of the write */
    }
}

static int quantize_acts(const float* x, int M, int K, int G, qacts* q) {
    const int sums = G > 0;
    const size_t nq = (size_t)M * K, nd = (size_t)M * (K / QB);
    q->mem = malloc(nq + 4 * 2 * nd + 64);
    if (!q->mem) return -1;
    q->xq = (int8_t*)q->mem;
    q->xd = (float*)(((uintptr_t)q->mem + nq + 31) & ~(uintptr_t)31);
    q->xs = q->xd + nd;
    for (int m = 0; m < M; ++m) {
        float* xs = sums ? q->xs + (size_t)m * (K / QB) : NULL;
        quantize_row(x + (size_t)m * K, K, q->xq + (size_t)m * K, q->xd + (size_t)m * (K / QB), xs);
        if (sums) group_sums(xs, K, G);
    }
    if (sums)  /* compact rows to a stride of K/G */
        for (int m = 1; m < M; ++m)
            for (int g = 0; g < K / G; ++g) q->xs[(size_t)m * (K / G) + g] = q->xs[(size_t)m * (K / QB) + g];
    return 0;
}

/* Output features go to threads in chunks of CHUNK rows, statically (contiguous per thread). */
#define CHUNK 16

int awq_w4_gemm(const float* x, int M, int K, int N, int G, const uint8_t* w4, const float* scale,
                const float* bias, float* out, int nthreads) {
    if (K % QB || G % QB || K % G || M < 0) return -2;
    qacts q;
    if (quantize_acts(x, M, K, G, &q)) return -1;
    const int nchunks = (N + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < nchunks; ++c) {
        const int n0 = c * CHUNK, n1 = n0 + CHUNK < N ? n0 + CHUNK : N;
        for (int m0 = 0; m0 < M; m0 += 4)
            w4_tile(w4, scale, bias, K, G, N, q.xq, q.xd, q.xs, m0, M - m0 < 4 ? M - m0 : 4, n0, n1, out);
    }
    free(q.mem);
    return 0;
}

int awq_w8_gemm(const float* x, int M, int K, int N, const int8_t* w8, const float* rscale, float* out,
                int nthreads) {
    if (K % QB || M < 0) return -2;
    qacts q;
    if (quantize_acts(x, M, K, 0, &q)) return -1;
    const int nchunks = (N + CHUNK - 1) / CHUNK;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int c = 0; c < nchunks; ++c) {
        const int n0 = c * CHUNK, n1 = n0 + CHUNK < N ? n0 + CHUNK : N;
        for (int m0 = 0; m0 < M; m0 += 4)
            w8_tile(w8, rscale, K, N, q.xq, q.xd, m0, M - m0 < 4 ? M - m0 : 4, n0, n1, out);
    }
    free(q.mem);
    return 0;
}
