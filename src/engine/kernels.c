/* kernels.c: see kernels.h.
 *
 * Layout of this file: conversions, Q8_0 quantization, scalar dot products,
 * AVX2 dot products, run-time dispatch, matrix products, vector operations.
 *
 * The dot products are the only ISA-specific code. Each exists as portable C
 * (written with independent accumulators so the compiler can vectorise it)
 * and, on x86-64, as AVX2+FMA+F16C intrinsics compiled with a target
 * attribute, so the binary stays runnable on any x86-64 and picks the fast
 * path at run time. The matrix products of the main types run through the
 * rows kernels of kernels_rows_*.c (AVX2, AVX-VNNI, AVX-512), picked here
 * per type for the active level. */
#include "engine/kernels.h"
#include "engine/kernels_rows.h"
#include "engine/quants.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KERNELS_HAVE_AVX2 1
#include <cpuid.h>
#include <immintrin.h>
#endif

_Static_assert(sizeof(kernel_block_q8_0) == 34, "Q8_0 block must match ggml's 34 bytes");

/* ======================================================================== */
/* conversions                                                               */
/* ======================================================================== */

static inline uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float kernel_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0x1f) /* inf / NaN: keep the payload in the top mantissa bits */
        return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0) return bits_float(sign);
        /* Subnormal: mant * 2^-24. Normalise so the leading 1 becomes implicit. */
        int e = -1;
        do { mant <<= 1; e++; } while (!(mant & 0x400));
        return bits_float(sign | ((uint32_t)(112 - e) << 23) | ((mant & 0x3ff) << 13));
    }
    return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t kernel_fp32_to_fp16(float f)
{
    uint32_t x = float_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) { /* inf, or NaN forced quiet so it cannot become inf */
        if (a == 0x7f800000u) return sign | 0x7c00;
        return sign | 0x7e00 | (uint16_t)((a >> 13) & 0x3ff);
    }
    if (a >= 0x477ff000u) return sign | 0x7c00; /* >= 65520 rounds to inf */
    if (a >= 0x38800000u) {                       /* normal half (>= 2^-14) */
        uint32_t r = a - (112u << 23);            /* rebias 127 -> 15 */
        r += 0xfff + ((r >> 13) & 1);             /* round to nearest even; carries into exp */
        return sign | (uint16_t)(r >> 13);
    }
    if (a <= 0x33000000u) return sign;            /* <= 2^-25: rounds to zero (tie to even) */
    /* Subnormal half: units of 2^-24. */
    uint32_t e = a >> 23;                         /* 102..112 */
    uint32_t mant = (a & 0x7fffff) | 0x800000;
    uint32_t shift = 126 - e;                     /* 14..24 */
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return sign | (uint16_t)q;
}

float kernel_bf16_to_fp32(uint16_t h) { return bits_float((uint32_t)h << 16); }

uint16_t kernel_fp32_to_bf16(float f)
{
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* ======================================================================== */
/* Q8_0                                                                      */
/* ======================================================================== */

/* Round to nearest, ties to even, for |v| < 2^22: adding 1.5 * 2^23 pushes
 * the fraction out of the float's mantissa under the default rounding mode.
 * Exact, branch-free and inlined, unlike roundf/nearbyintf on baseline
 * x86-64 (which are libm calls); the AVX2 path rounds the same way. */
static inline float round_even(float v)
{
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

static void quantize_row_q8_0_scalar(const float *x, kernel_block_q8_0 *out, int n)
{
    for (int b = 0; b < n / KERNEL_Q8_0_BLOCK; b++) {
        const float *v = x + b * KERNEL_Q8_0_BLOCK;
        float amax = 0;
        for (int i = 0; i < KERNEL_Q8_0_BLOCK; i++) {
            float a = fabsf(v[i]);
            amax = a > amax ? a : amax; /* NaN inputs give NaN scales, as in ggml */
        }
        float d = amax / 127.0f;
        float id = d != 0 ? 1.0f / d : 0.0f;
        out[b].d = kernel_fp32_to_fp16(d);
        /* |v * id| <= 127 (up to rounding of id), so r is in [-127, 127]; the
         * test only catches NaN/inf, whose conversion to int would be undefined. */
        for (int i = 0; i < KERNEL_Q8_0_BLOCK; i++) {
            float r = round_even(v[i] * id);
            out[b].qs[i] = r >= -127.0f && r <= 127.0f ? (int8_t)r : 0;
        }
    }
}

/* ======================================================================== */
/* types                                                                     */
/* ======================================================================== */

int kernel_type_supported(ggml_type t)
{
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_Q8_0 ||
           quant_get_traits(t) != NULL;
}

size_t kernel_row_bytes(ggml_type t, int64_t n)
{
    switch (t) {
    case GGML_TYPE_F32: return (size_t)n * 4;
    case GGML_TYPE_F16:
    case GGML_TYPE_BF16: return (size_t)n * 2;
    case GGML_TYPE_Q8_0:
        assert(n % KERNEL_Q8_0_BLOCK == 0);
        return (size_t)(n / KERNEL_Q8_0_BLOCK) * sizeof(kernel_block_q8_0);
    case GGML_TYPE_Q8_K: /* activations only (quants.h) */
        assert(n % QUANT_K == 0);
        return (size_t)(n / QUANT_K) * sizeof(quant_block_q8_k);
    default: {
        const quant_traits *q = quant_get_traits(t);
        assert(q && n % q->block_elems == 0);
        return q ? (size_t)(n / q->block_elems) * (size_t)q->block_bytes : 0;
    }
    }
}

void kernel_dequantize_row(ggml_type t, const void *src, float *dst, int n)
{
    switch (t) {
    case GGML_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case GGML_TYPE_F16: kernel_fp16_to_fp32_row(src, dst, n); break;
    case GGML_TYPE_BF16: {
        const uint16_t *s = src;
        for (int i = 0; i < n; i++) dst[i] = kernel_bf16_to_fp32(s[i]);
        break;
    }
    case GGML_TYPE_Q8_0: {
        assert(n % KERNEL_Q8_0_BLOCK == 0);
        const kernel_block_q8_0 *blk = src;
        for (int b = 0; b < n / KERNEL_Q8_0_BLOCK; b++) {
            float d = kernel_fp16_to_fp32(blk[b].d);
            for (int i = 0; i < KERNEL_Q8_0_BLOCK; i++)
                dst[b * KERNEL_Q8_0_BLOCK + i] = d * (float)blk[b].qs[i];
        }
        break;
    }
    default: {
        const quant_traits *q = quant_get_traits(t);
        assert(q && n % q->block_elems == 0);
        if (q) q->dequantize_row(src, dst, n);
    }
    }
}

/* ======================================================================== */
/* scalar dot products                                                       */
/* ======================================================================== */

/* Eight independent accumulators: the compiler may vectorise them, and the
 * summation order is fixed (part of the determinism contract). */
#define ACC 8

static float sum_acc(const float acc[ACC])
{
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static float dot_f32_scalar(const float *a, const float *b, int n)
{
    float acc[ACC] = {0};
    int i = 0;
    for (; i + ACC <= n; i += ACC)
        for (int j = 0; j < ACC; j++) acc[j] += a[i + j] * b[i + j];
    for (; i < n; i++) acc[0] += a[i] * b[i];
    return sum_acc(acc);
}

static float dot_f16_f32_scalar(const uint16_t *a, const float *b, int n)
{
    float acc[ACC] = {0};
    int i = 0;
    for (; i + ACC <= n; i += ACC)
        for (int j = 0; j < ACC; j++) acc[j] += kernel_fp16_to_fp32(a[i + j]) * b[i + j];
    for (; i < n; i++) acc[0] += kernel_fp16_to_fp32(a[i]) * b[i];
    return sum_acc(acc);
}

static float dot_bf16_f32_scalar(const uint16_t *a, const float *b, int n)
{
    float acc[ACC] = {0};
    int i = 0;
    for (; i + ACC <= n; i += ACC)
        for (int j = 0; j < ACC; j++) acc[j] += kernel_bf16_to_fp32(a[i + j]) * b[i + j];
    for (; i < n; i++) acc[0] += kernel_bf16_to_fp32(a[i]) * b[i];
    return sum_acc(acc);
}

/* Q8_0's canonical order (docs/engine.md, "Row lanes"), which every Q8_0
 * kernel of every ISA follows: per block in order, acc = fma(exact integer
 * dot, d_a * d_b, acc). */
static float dot_q8_0_scalar(const kernel_block_q8_0 *a, const kernel_block_q8_0 *b, int n)
{
    float acc = 0;
    for (int k = 0; k < n / KERNEL_Q8_0_BLOCK; k++) {
        int32_t isum = 0;
        for (int i = 0; i < KERNEL_Q8_0_BLOCK; i++) isum += (int32_t)a[k].qs[i] * b[k].qs[i];
        float d = kernel_fp16_to_fp32(a[k].d) * kernel_fp16_to_fp32(b[k].d);
        acc = fmaf((float)isum, d, acc);
    }
    return acc;
}

static void axpy_scalar(float *out, float a, const float *v, int n)
{
    for (int i = 0; i < n; i++) out[i] += a * v[i];
}

static void fp16_row_scalar(const uint16_t *src, float *dst, int n)
{
    for (int i = 0; i < n; i++) dst[i] = kernel_fp16_to_fp32(src[i]);
}

static void fp32_to_fp16_row_scalar(const float *src, uint16_t *dst, int n)
{
    for (int i = 0; i < n; i++) dst[i] = kernel_fp32_to_fp16(src[i]);
}

static void axpy_f16_scalar(float *out, float a, const uint16_t *v, int n)
{
    for (int i = 0; i < n; i++) out[i] += a * kernel_fp16_to_fp32(v[i]);
}

/* ======================================================================== */
/* AVX2 dot products                                                         */
/* ======================================================================== */

#ifdef KERNELS_HAVE_AVX2
#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

AVX2_TARGET static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_TARGET static float dot_f32_avx2(const float *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

AVX2_TARGET static inline __m256 load_f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX2_TARGET static float dot_f16_f32_avx2(const uint16_t *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(load_f16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16x8(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16x8(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(load_f16x8(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) sum += _cvtsh_ss(a[i]) * b[i];
    return sum;
}

AVX2_TARGET static inline __m256 load_bf16x8(const uint16_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

AVX2_TARGET static float dot_bf16_f32_avx2(const uint16_t *a, const float *b, int n)
{
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(load_bf16x8(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(load_bf16x8(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(load_bf16x8(a + i), _mm256_loadu_ps(b + i), s0);
    float sum = hsum256(_mm256_add_ps(s0, s1));
    for (; i < n; i++) sum += kernel_bf16_to_fp32(a[i]) * b[i];
    return sum;
}

/* maddubs multiplies unsigned by signed bytes, so the weights' signs move
 * onto the activations: |a| * (b with a's sign) = a * b. |a| of -128 is 128
 * as an unsigned byte, so any weight is exact; b must stay in [-127, 127]
 * (negating -128 would overflow), which our quantizer guarantees. Pair sums
 * reach at most 2 * 128 * 127, inside int16. */
AVX2_TARGET static float dot_q8_0_avx2(const kernel_block_q8_0 *a, const kernel_block_q8_0 *b,
                                       int n)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m128 acc = _mm_setzero_ps();
    for (int k = 0; k < n / KERNEL_Q8_0_BLOCK; k++) { /* the canonical order (dot_q8_0_scalar) */
        __m256i qa = _mm256_loadu_si256((const __m256i *)a[k].qs);
        __m256i qb = _mm256_loadu_si256((const __m256i *)b[k].qs);
        __m256i abs_a = _mm256_sign_epi8(qa, qa);
        __m256i signed_b = _mm256_sign_epi8(qb, qa);
        __m256i p16 = _mm256_maddubs_epi16(abs_a, signed_b);
        __m256i p32 = _mm256_madd_epi16(p16, ones);
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p32), _mm256_extracti128_si256(p32, 1));
        s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
        __m128 d = _mm_set_ss(_cvtsh_ss(a[k].d) * _cvtsh_ss(b[k].d));
        acc = _mm_fmadd_ss(_mm_cvtepi32_ps(s), d, acc);
    }
    return _mm_cvtss_f32(acc);
}

AVX2_TARGET static void axpy_avx2(float *out, float a, const float *v, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(v + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] += a * v[i];
}

AVX2_TARGET static void fp16_row_avx2(const uint16_t *src, float *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16x8(src + i));
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}

/* vcvtps2ph with round-to-nearest-even (the immediate, not MXCSR) is the
 * scalar kernel_fp32_to_fp16 bit for bit, NaN payloads aside (both quiet
 * them); the tail uses the scalar conversion itself. */
AVX2_TARGET static void fp32_to_fp16_row_avx2(const float *src, uint16_t *dst, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = kernel_fp32_to_fp16(src[i]);
}

/* The same fused multiply-add per element as axpy_avx2, on converted
 * values; the scalar tail rounds a * v and the sum separately. */
AVX2_TARGET static void axpy_f16_avx2(float *out, float a, const uint16_t *v, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_fmadd_ps(va, load_f16x8(v + i), _mm256_loadu_ps(out + i)));
    for (; i < n; i++) out[i] += a * _cvtsh_ss(v[i]);
}

/* dot_f16_f32_avx2(k, q + g * n, n) for each g < n_q, the key row converted
 * once for all of them (grouped-query attention: the query heads of one kv
 * head). For n a multiple of 32 up to 256 each head's sum takes exactly
 * dot_f16_f32_avx2's operations (the same converted values in the same four
 * accumulators, added the same way), so the bits are the one-head kernel's;
 * other widths call it head by head. */
AVX2_TARGET static void dot_f16_group_avx2(const uint16_t *k, const float *q, int n_q, int n, float *out)
{
    if (n % 32 != 0 || n > 256) {
        for (int g = 0; g < n_q; g++) out[g] = dot_f16_f32_avx2(k, q + (size_t)g * n, n);
        return;
    }
    __m256 kc[32];
    for (int c = 0; c < n / 8; c++) kc[c] = load_f16x8(k + 8 * c);
    for (int g = 0; g < n_q; g++) {
        const float *qg = q + (size_t)g * n;
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < n; i += 32) {
            s0 = _mm256_fmadd_ps(kc[i / 8], _mm256_loadu_ps(qg + i), s0);
            s1 = _mm256_fmadd_ps(kc[i / 8 + 1], _mm256_loadu_ps(qg + i + 8), s1);
            s2 = _mm256_fmadd_ps(kc[i / 8 + 2], _mm256_loadu_ps(qg + i + 16), s2);
            s3 = _mm256_fmadd_ps(kc[i / 8 + 3], _mm256_loadu_ps(qg + i + 24), s3);
        }
        out[g] = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    }
}

/* axpy_f16_avx2(out + g * n, a[g], v, n) for each g < n_q, each 8 values
 * of the value row converted once for all of them; the same operation per
 * element as the one-head kernel (n a multiple of 8; else head by head). */
AVX2_TARGET static void axpy_f16_group_avx2(float *out, const float *a, const uint16_t *v, int n_q, int n)
{
    if (n % 8 != 0) {
        for (int g = 0; g < n_q; g++) axpy_f16_avx2(out + (size_t)g * n, a[g], v, n);
        return;
    }
    for (int i = 0; i < n; i += 8) {
        __m256 vc = load_f16x8(v + i);
        for (int g = 0; g < n_q; g++) {
            float *o = out + (size_t)g * n + i;
            _mm256_storeu_ps(o, _mm256_fmadd_ps(_mm256_set1_ps(a[g]), vc, _mm256_loadu_ps(o)));
        }
    }
}
#endif /* KERNELS_HAVE_AVX2 */

static void dot_f16_group_scalar(const uint16_t *k, const float *q, int n_q, int n, float *out)
{
    for (int g = 0; g < n_q; g++) out[g] = dot_f16_f32_scalar(k, q + (size_t)g * n, n);
}

static void axpy_f16_group_scalar(float *out, const float *a, const uint16_t *v, int n_q, int n)
{
    for (int g = 0; g < n_q; g++) axpy_f16_scalar(out + (size_t)g * n, a[g], v, n);
}

static void rmsnorm_scalar(float *out, const float *x, const float *w, int n, float eps)
{
    double ss = 0; /* double: a long sum of squares loses digits in float */
    for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

#ifdef KERNELS_HAVE_AVX2
/* rmsnorm_scalar with the sum of squares in four double lanes x 2 (another
 * order of the same double sum: a row's bits depend on its length only, as
 * the scalar's do) and the scaling 8 floats at a time with the scalar's two
 * roundings, (x * scale) * w. */
AVX2_TARGET static void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d lo = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), hi = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        s0 = _mm256_fmadd_pd(lo, lo, s0);
        s1 = _mm256_fmadd_pd(hi, hi, s1);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double ss = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (int k = i; k < n; k++) ss += (double)x[k] * x[k];
    float scale = (float)(1.0 / sqrt(ss / n + eps));
    __m256 vs = _mm256_set1_ps(scale);
    int j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + j), vs), _mm256_loadu_ps(w + j)));
    for (; j < n; j++) out[j] = x[j] * scale * w[j];
}
#endif

static void swiglu_scalar(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i])) * y[i];
}

#ifdef KERNELS_HAVE_AVX2
/* e^x for 8 floats, x in [-87, 88] (clamped: 2^n stays a normal float;
 * silu needs no more). n = round(x / ln 2), r = x - n ln 2 in two parts
 * (|r| <= ln 2 / 2), e^r by its Taylor series to r^7 (truncation below
 * 6e-9 relative, so about one rounding of float), times 2^n built in the
 * exponent bits. Only lane-wise operations: a value's result never depends
 * on its neighbours, so any split of a row gives the same bits. */
AVX2_TARGET static inline __m256 exp_avx2(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);  /* ln 2's first 16 bits */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.4286068202862268e-06f), r);     /* and the rest */
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

AVX2_TARGET static inline __m256 swiglu8_avx2(__m256 g, __m256 u)
{
    __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

/* x[i] = x[i] / (1 + e^-x[i]) * y[i], 8 at a time; the tail goes through
 * the same vector code (padded), so every element gets the same bits
 * wherever it sits: the batch's composition and the split over threads
 * change nothing (docs/engine.md, "Determinism"). It replaced a scalar
 * expf loop that took 3-4% of a 4-sequence Q4_0 step, on one thread. */
AVX2_TARGET static void swiglu_avx2(float *x, const float *y, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, swiglu8_avx2(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n) {
        float g[8] = {0}, u[8] = {0};
        memcpy(g, x + i, sizeof(float) * (size_t)(n - i));
        memcpy(u, y + i, sizeof(float) * (size_t)(n - i));
        _mm256_storeu_ps(g, swiglu8_avx2(_mm256_loadu_ps(g), _mm256_loadu_ps(u)));
        memcpy(x + i, g, sizeof(float) * (size_t)(n - i));
    }
}
#endif

static void softmax_scalar(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
}

#ifdef KERNELS_HAVE_AVX2
/* softmax_scalar with swiglu's exponential, 8 at a time (the tail through
 * the same code, padded and its padding left out of the sum; a score more
 * than 87 below the row's largest gives 0, as expf's underflow would, not
 * the clamp's 2^-126), the sum in double lanes. Attention runs it over every (token, head) pair's scores:
 * with expf one at a time it was about a sixth of a decode pair's work. A
 * row's bits depend on its values only. */
AVX2_TARGET static inline __m256 softmax_exp_avx2(__m256 d)
{
    return _mm256_andnot_ps(_mm256_cmp_ps(d, _mm256_set1_ps(-87.0f), _CMP_LT_OQ), exp_avx2(d));
}

AVX2_TARGET static void softmax_avx2(float *x, int n)
{
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    __m256 vmax = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = softmax_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    if (i < n) {
        float t[8];
        for (int k = 0; k < 8; k++) t[k] = i + k < n ? x[i + k] : max;
        _mm256_storeu_ps(t, softmax_exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(t), vmax)));
        for (int k = 0; i + k < n; k++) {
            x[i + k] = t[k];
            sum += t[k];
        }
    }
    __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
    int j = 0;
    for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
    for (; j < n; j++) x[j] *= _mm256_cvtss_f32(inv);
}
#endif

/* The first index of the largest value; NaN never compares, so never wins
 * (0 when nothing beats -inf). */
static int32_t argmax_scalar(const float *x, int n)
{
    int32_t best = 0;
    float best_value = -INFINITY;
    for (int i = 0; i < n; i++)
        if (x[i] > best_value) {
            best_value = x[i];
            best = i;
        }
    return best;
}

#ifdef KERNELS_HAVE_AVX2
/* argmax_scalar's answer, 8 lanes at a time: each lane keeps its first
 * index of its largest value (strictly greater replaces, NaN compares
 * false), then the lowest index among the lanes holding the overall
 * largest; the tail continues scalar with indices above all of them. Greedy
 * sampling runs it over the whole vocabulary for every token of every lane
 * (151,936 logits for Qwen), between two batch steps. */
AVX2_TARGET static int32_t argmax_avx2(const float *x, int n)
{
    __m256 best = _mm256_set1_ps(-INFINITY);
    __m256i best_idx = _mm256_setzero_si256(), idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    int i = 0;
    for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, step)) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 gt = _mm256_cmp_ps(v, best, _CMP_GT_OQ);
        best = _mm256_blendv_ps(best, v, gt);
        best_idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_idx), _mm256_castsi256_ps(idx), gt));
    }
    float bv[8];
    int32_t bi[8];
    _mm256_storeu_ps(bv, best);
    _mm256_storeu_si256((__m256i *)bi, best_idx);
    int32_t win = bi[0];
    float win_value = bv[0];
    for (int k = 1; k < 8; k++)
        if (bv[k] > win_value || (bv[k] == win_value && bi[k] < win)) {
            win_value = bv[k];
            win = bi[k];
        }
    for (; i < n; i++)
        if (x[i] > win_value) {
            win_value = x[i];
            win = i;
        }
    return win;
}
#endif

#ifdef KERNELS_HAVE_AVX2
/* The scalar quantizer's bits, 8 values at a time (it runs once per input
 * vector of every product: 3% of a 4-sequence decode step in scalar code,
 * step_bench under perf). Per block: the same maximum of |v| (max is
 * exact, so the order of the comparisons does not matter; max_ps(a, m) is
 * a > m ? a : m, which skips NaN as the scalar loop does), the same scalar
 * d and 1/d, the same product and rounding to nearest even per value, the
 * same [-127, 127] test (NaN and inf give 0). */
AVX2_TARGET static void quantize_row_q8_0_avx2(const float *x, kernel_block_q8_0 *out, int n)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int b = 0; b < n / KERNEL_Q8_0_BLOCK; b++) {
        const float *v = x + b * KERNEL_Q8_0_BLOCK;
        __m256 m = _mm256_setzero_ps();
        for (int i = 0; i < KERNEL_Q8_0_BLOCK; i += 8) m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(v + i)), m);
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f;
        float id = d != 0 ? 1.0f / d : 0.0f;
        out[b].d = kernel_fp32_to_fp16(d);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int k = 0; k < 4; k++) {
            /* round_ps, not the magic number: the compiler could fuse v * id + magic */
            __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 8 * k), vid),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256 ok = _mm256_and_ps(_mm256_cmp_ps(r, lo, _CMP_GE_OQ), _mm256_cmp_ps(r, hi, _CMP_LE_OQ));
            q[k] = _mm256_and_si256(_mm256_cvtps_epi32(r), _mm256_castps_si256(ok));
        }
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)out[b].qs, _mm256_permutevar8x32_epi32(p, order));
    }
}
#endif

/* ======================================================================== */
/* dispatch                                                                  */
/* ======================================================================== */

typedef struct {
    kernel_isa isa;
    float (*dot_f32)(const float *, const float *, int);
    float (*dot_f16_f32)(const uint16_t *, const float *, int);
    float (*dot_bf16_f32)(const uint16_t *, const float *, int);
    float (*dot_q8_0)(const kernel_block_q8_0 *, const kernel_block_q8_0 *, int);
    void (*fp16_row)(const uint16_t *, float *, int);
    void (*fp32_to_fp16_row)(const float *, uint16_t *, int);
    void (*axpy)(float *, float, const float *, int);
    void (*axpy_f16)(float *, float, const uint16_t *, int);
    void (*quantize_q8_0)(const float *, kernel_block_q8_0 *, int);
    int32_t (*argmax)(const float *, int);
    void (*swiglu)(float *, const float *, int);
    void (*rmsnorm)(float *, const float *, const float *, int, float);
    void (*softmax)(float *, int);
    void (*dot_f16_group)(const uint16_t *, const float *, int, int, float *);
    void (*axpy_f16_group)(float *, const float *, const uint16_t *, int, int);
} kernel_ops;

static const kernel_ops ops_scalar = {
    KERNEL_ISA_SCALAR, dot_f32_scalar, dot_f16_f32_scalar, dot_bf16_f32_scalar,
    dot_q8_0_scalar, fp16_row_scalar, fp32_to_fp16_row_scalar, axpy_scalar, axpy_f16_scalar,
    quantize_row_q8_0_scalar, argmax_scalar, swiglu_scalar, rmsnorm_scalar,
    softmax_scalar, dot_f16_group_scalar, axpy_f16_group_scalar,
};
#ifdef KERNELS_HAVE_AVX2
/* AVX-VNNI and AVX-512 differ from AVX2 only in the rows kernels of the
 * matrix products (kernels_rows.h); the one-row dot products are AVX2's. */
#define OPS_AVX2(isa)                                                                          \
    {isa, dot_f32_avx2, dot_f16_f32_avx2, dot_bf16_f32_avx2, dot_q8_0_avx2, fp16_row_avx2,       \
     fp32_to_fp16_row_avx2, axpy_avx2, axpy_f16_avx2, quantize_row_q8_0_avx2, argmax_avx2, swiglu_avx2,  \
     rmsnorm_avx2, softmax_avx2, dot_f16_group_avx2, axpy_f16_group_avx2}
static const kernel_ops ops_avx2 = OPS_AVX2(KERNEL_ISA_AVX2);
static const kernel_ops ops_avxvnni = OPS_AVX2(KERNEL_ISA_AVXVNNI);
static const kernel_ops ops_avx512 = OPS_AVX2(KERNEL_ISA_AVX512);
#endif

static _Atomic(const kernel_ops *) active_ops;
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;

int kernel_isa_available(kernel_isa isa)
{
#ifdef KERNELS_HAVE_AVX2
    unsigned eax, ebx, ecx, edx;
    if (isa == KERNEL_ISA_SCALAR) return 1;
    if (isa < KERNEL_ISA_SCALAR || isa >= KERNEL_ISA_COUNT) return 0;
    /* F16C is read from CPUID (leaf 1, ECX bit 29) because clang 14's
     * __builtin_cpu_supports does not know "f16c"; AVX-VNNI (leaf 7
     * subleaf 1, EAX bit 4) likewise for older compilers. The OS's saving
     * of the vector state is checked by __builtin_cpu_supports. */
    __builtin_cpu_init();
    int f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29));
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    switch (isa) {
    case KERNEL_ISA_AVX2: return avx2;
    case KERNEL_ISA_AVXVNNI:
        return avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4));
    case KERNEL_ISA_AVX512:
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
#else
    return isa == KERNEL_ISA_SCALAR;
#endif
}

static const kernel_ops *ops_for(kernel_isa isa)
{
#ifdef KERNELS_HAVE_AVX2
    switch (isa) {
    case KERNEL_ISA_AVX2: return &ops_avx2;
    case KERNEL_ISA_AVXVNNI: return &ops_avxvnni;
    case KERNEL_ISA_AVX512: return &ops_avx512;
    default: break;
    }
#endif
    (void)isa;
    return &ops_scalar;
}

static void ops_init(void)
{
    kernel_isa best = KERNEL_ISA_SCALAR;
    for (int isa = KERNEL_ISA_COUNT - 1; isa > KERNEL_ISA_SCALAR; isa--)
        if (kernel_isa_available((kernel_isa)isa)) {
            best = (kernel_isa)isa;
            break;
        }
    const char *env = getenv("LLMESH_ISA");
    int named = env && *env ? kernel_isa_from_name(env) : -1;
    if (named >= 0 && kernel_isa_available((kernel_isa)named)) best = (kernel_isa)named;
    const kernel_ops *expected = NULL;
    atomic_compare_exchange_strong(&active_ops, &expected, ops_for(best));
}

static inline const kernel_ops *ops(void)
{
    const kernel_ops *o = atomic_load_explicit(&active_ops, memory_order_acquire);
    if (!o) {
        pthread_once(&ops_once, ops_init);
        o = atomic_load_explicit(&active_ops, memory_order_acquire);
    }
    return o;
}

kernel_isa kernel_active_isa(void) { return ops()->isa; }

static const char *const isa_names[KERNEL_ISA_COUNT] = {"scalar", "avx2", "avxvnni", "avx512"};

const char *kernel_isa_name(kernel_isa isa)
{
    return isa >= 0 && isa < KERNEL_ISA_COUNT ? isa_names[isa] : "scalar";
}

int kernel_isa_from_name(const char *name)
{
    for (int i = 0; i < KERNEL_ISA_COUNT; i++)
        if (!strcmp(name, isa_names[i])) return i;
    return -1;
}

int kernel_force_isa(kernel_isa isa)
{
    if (!kernel_isa_available(isa)) return -1;
    (void)ops();
    atomic_store(&active_ops, ops_for(isa));
    return 0;
}

float kernel_dot_f32(const float *a, const float *b, int n) { return ops()->dot_f32(a, b, n); }
float kernel_dot_f16_f32(const uint16_t *a, const float *b, int n)
{
    return ops()->dot_f16_f32(a, b, n);
}
float kernel_dot_bf16_f32(const uint16_t *a, const float *b, int n)
{
    return ops()->dot_bf16_f32(a, b, n);
}
float kernel_dot_q8_0(const kernel_block_q8_0 *a, const kernel_block_q8_0 *b, int n)
{
    assert(n % KERNEL_Q8_0_BLOCK == 0);
    return ops()->dot_q8_0(a, b, n);
}
void kernel_fp16_to_fp32_row(const uint16_t *src, float *dst, int n) { ops()->fp16_row(src, dst, n); }
void kernel_quantize_row_q8_0(const float *x, kernel_block_q8_0 *out, int n)
{
    assert(n % KERNEL_Q8_0_BLOCK == 0);
    ops()->quantize_q8_0(x, out, n);
}
int32_t kernel_argmax(const float *x, int n) { return ops()->argmax(x, n); }
void kernel_fp32_to_fp16_row(const float *src, uint16_t *dst, int n)
{
    ops()->fp32_to_fp16_row(src, dst, n);
}

/* ======================================================================== */
/* matrix products                                                           */
/* ======================================================================== */

/* ---- interleaved matrices (kernels.h, kernels_rows.h) ---- */

/* The unit kernel_interleave moves: one block of the type (F16: 16 values),
 * or 0 for a type or width it does not take. */
static size_t interleave_unit(ggml_type t, int cols)
{
    switch (t) {
    case GGML_TYPE_F16: return cols % 32 == 0 ? 32 : 0;
    case GGML_TYPE_Q8_0:
    case GGML_TYPE_Q4_0:
    case GGML_TYPE_Q5_0:
    case GGML_TYPE_Q2_K:
    case GGML_TYPE_Q3_K:
    case GGML_TYPE_Q4_K:
    case GGML_TYPE_Q5_K:
    case GGML_TYPE_Q6_K: return kernel_row_bytes(t, (int64_t)ggml_type_block_elems(t));
    default: return 0;
    }
}

int kernel_interleavable(ggml_type t, int cols) { return cols > 0 && interleave_unit(t, cols) != 0; }

/* Whether type t's interleaved layout is the row-lane one (kernels_rows.h,
 * docs/engine.md "Row lanes"): groups of KERNEL_LANE_ROWS rows; a block of
 * the type is its fp16 scale, Q5_0's 4 bytes of fifth bits, then its qs
 * bytes (Q4_0 and Q5_0: 16, Q8_0: 32), and a group's block i, at 16 i block
 * sizes, holds the 16 rows' scales (row r at 2 r), for Q5_0 the 16 rows'
 * fifth bits (row r at 32 + 4 r), then chunks k of 64 bytes with row r's
 * qs[4k .. 4k+3] at 4 r. Q4_K and Q6_K have their own lane layout
 * (quant_lanes_pack, quants.h; docs/engine.md "K-quants in row lanes"), and
 * take Q8_K blocks as they are. */
static int lane_layout(ggml_type t)
{
    return t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q5_0 || quant_lanes_block_bytes(t);
}

static int group_rows(ggml_type t) { return lane_layout(t) ? KERNEL_LANE_ROWS : KERNEL_ROWS; }

/* Row r's nb blocks of `unit` bytes (qh: Q5_0's fifth bits after the
 * scale) into a lane group, and back. */
static void lane_put_row(uint8_t *group, const uint8_t *row, int r, size_t nb, size_t unit, int qh)
{
    size_t qs_at = qh ? 6 : 2, chunks_at = qh ? 96 : 32;
    for (size_t i = 0; i < nb; i++, row += unit) {
        uint8_t *blk = group + i * unit * KERNEL_LANE_ROWS;
        memcpy(blk + 2 * r, row, 2);
        if (qh) memcpy(blk + 32 + 4 * r, row + 2, 4);
        for (size_t k = 0; k < (unit - qs_at) / 4; k++) memcpy(blk + chunks_at + 64 * k + 4 * r, row + qs_at + 4 * k, 4);
    }
}

static void lane_get_row(const uint8_t *group, uint8_t *row, int r, size_t nb, size_t unit, int qh)
{
    size_t qs_at = qh ? 6 : 2, chunks_at = qh ? 96 : 32;
    for (size_t i = 0; i < nb; i++, row += unit) {
        const uint8_t *blk = group + i * unit * KERNEL_LANE_ROWS;
        memcpy(row, blk + 2 * r, 2);
        if (qh) memcpy(row + 2, blk + 32 + 4 * r, 4);
        for (size_t k = 0; k < (unit - qs_at) / 4; k++) memcpy(row + qs_at + 4 * k, blk + chunks_at + 64 * k + 4 * r, 4);
    }
}

void kernel_interleave(const kernel_matrix *w, void *dst)
{
    size_t unit = interleave_unit(w->type, w->cols), row = kernel_row_bytes(w->type, w->cols);
    assert(unit && !w->interleaved && row % unit == 0);
    size_t units = row / unit;
    const uint8_t *src = w->data;
    uint8_t *out = dst;
    int gr = group_rows(w->type), whole = w->rows / gr * gr;
    for (int g = 0; g < whole; g += gr) {
        const uint8_t *s = src + (size_t)g * row;
        uint8_t *d = out + (size_t)g * row;
        if (quant_lanes_block_bytes(w->type)) {
            quant_lanes_pack(w->type, s, row, w->cols, d);
            continue;
        }
        if (lane_layout(w->type)) {
            for (int r = 0; r < gr; r++) lane_put_row(d, s + (size_t)r * row, r, units, unit, w->type == GGML_TYPE_Q5_0);
            continue;
        }
        for (size_t i = 0; i < units; i++)
            for (int r = 0; r < KERNEL_ROWS; r++, d += unit) memcpy(d, s + (size_t)r * row + i * unit, unit);
    }
    memcpy(out + (size_t)whole * row, src + (size_t)whole * row, (size_t)(w->rows - whole) * row);
}

const void *kernel_matrix_row(const kernel_matrix *w, int r, void *buf)
{
    size_t row = kernel_row_bytes(w->type, w->cols);
    const uint8_t *data = w->data;
    int gr = group_rows(w->type), whole = w->rows / gr * gr;
    if (!w->interleaved || r >= whole) return data + (size_t)r * row;
    size_t unit = interleave_unit(w->type, w->cols), units = row / unit;
    const uint8_t *group = data + (size_t)(r - r % gr) * row;
    if (quant_lanes_block_bytes(w->type)) {
        quant_lanes_row(w->type, group, r % gr, w->cols, buf);
        return buf;
    }
    if (lane_layout(w->type)) {
        lane_get_row(group, buf, r % gr, units, unit, w->type == GGML_TYPE_Q5_0);
        return buf;
    }
    for (size_t i = 0; i < units; i++)
        memcpy((uint8_t *)buf + i * unit, group + (i * KERNEL_ROWS + (size_t)(r % KERNEL_ROWS)) * unit, unit);
    return buf;
}

void kernel_lane_prep(const void *q8_0, kernel_lane_act *out, int n)
{
    const kernel_block_q8_0 *y = q8_0;
    for (int i = 0; i < n / KERNEL_Q8_0_BLOCK; i++) {
        int32_t sum = 0;
        for (int j = 0; j < KERNEL_Q8_0_BLOCK; j++) sum += y[i].qs[j];
        out[i].d = kernel_fp16_to_fp32(y[i].d);
        out[i].sum = sum;
        memcpy(out[i].qs, y[i].qs, sizeof out[i].qs);
    }
}

/* Input vectors handled per pass over a row block: enough reuse of the
 * weight rows (which stay in L1) without pushing the inputs out of L2. */
#define MATMUL_TOKEN_TILE 8

/* Batches of at least this many tokens unpack each group of rows once into
 * a slab (kernels_rows.h) when the type has one: the unpacking is then paid
 * once per group instead of once per tile of 2-4 tokens. The slab lives on
 * the worker's stack, so rows wider than MATMUL_SLAB_BYTES / KERNEL_ROWS
 * (cols above ~15K for Q4_0) keep the tile path. Same bits either way. */
#define MATMUL_SLAB_MIN_TOKENS 32
#define MATMUL_SLAB_BYTES (64 * 1024)

/* One product of a multi-product job, with its share of the task range. */
typedef struct {
    const kernel_matrix *w;
    float *y;
    size_t w_stride;       /* bytes between weight rows */
    kernel_rows_fn rows;   /* the type's rows kernel for the active ISA, or NULL */
    kernel_tile_fn tile;   /* its tile kernel (several tokens per pass), or NULL */
    kernel_slab slab;      /* its slab (large batches), or {NULL, NULL} */
    quant_dot_fn qdot;     /* quants.c types: the one-row dot product for the active ISA */
    kernel_lane_fn lane;   /* a matrix in the row-lane layout: its lane kernel, or NULL */
    const uint8_t *lane_act; /* then the prepared activations (kernel_lane_act blocks) */
    size_t lane_stride;    /* bytes between tokens there */
    const uint8_t *act;    /* the input in the layout the type takes: floats, Q8_0 or Q8_K */
    size_t act_stride;     /* bytes between input vectors there */
    int rows_per_task;
    int first_task;
} matmul_part;

typedef struct {
    const kernel_ops *ops;
    int n;                 /* input vectors */
    int n_parts;
    matmul_part part[KERNEL_MATMUL_MAX];
} matmul_job;

/* The stride argument for a group of nr rows of part's matrix: the row
 * bytes, flagged KERNEL_STRIDE_IL for a whole group of an interleaved one. */
static size_t group_stride(const matmul_part *part, int nr)
{
    return part->w_stride | (part->w->interleaved && nr == KERNEL_ROWS ? KERNEL_STRIDE_IL : 0);
}

/* out[k] = row r0 + k of part's matrix dotted with input vector t, k < nr. */
static void matmul_rows(const matmul_job *job, const matmul_part *part, int r0, int nr, int t,
                        float *out)
{
    const kernel_matrix *w = part->w;
    const uint8_t *wrow = (const uint8_t *)w->data + (size_t)r0 * part->w_stride;
    const uint8_t *act = part->act + (size_t)t * part->act_stride;
    int cols = w->cols;
    if (part->rows) {
        part->rows(wrow, group_stride(part, nr), nr, act, cols, out);
        return;
    }
    const kernel_ops *o = job->ops;
    _Alignas(64) uint8_t buf[w->interleaved ? part->w_stride : 1]; /* a row in row-major form (scalar ISA) */
    for (int k = 0; k < nr; k++) {
        wrow = kernel_matrix_row(w, r0 + k, buf);
        switch (w->type) {
        case GGML_TYPE_F32: out[k] = o->dot_f32((const float *)wrow, (const float *)act, cols); break;
        case GGML_TYPE_F16: out[k] = o->dot_f16_f32((const uint16_t *)wrow, (const float *)act, cols); break;
        case GGML_TYPE_BF16: out[k] = o->dot_bf16_f32((const uint16_t *)wrow, (const float *)act, cols); break;
        case GGML_TYPE_Q8_0:
            out[k] = o->dot_q8_0((const kernel_block_q8_0 *)wrow, (const kernel_block_q8_0 *)act, cols);
            break;
        default: out[k] = part->qdot(wrow, act, cols); break;
        }
    }
}

/* A task is a range of rows of one product, for every input vector. Rows go
 * KERNEL_ROWS at a time. With a tile kernel (kernels_rows.h), a group's
 * weights are unpacked once per few tokens and stay in L1 while every
 * input vector passes over them: the matrix-matrix product of a prompt.
 * Otherwise each group meets up to MATMUL_TOKEN_TILE input vectors, one at
 * a time, while its weights are in L1. Either way each output is the value
 * the rows kernel (or one-row dot) gives that row and vector alone. */
static void matmul_task(void *ctx, int task, int thread)
{
    (void)thread;
    const matmul_job *job = ctx;
    int p = job->n_parts - 1;
    while (job->part[p].first_task > task) p--;
    const matmul_part *part = &job->part[p];
    int rows = part->w->rows;
    int r0 = (task - part->first_task) * part->rows_per_task;
    int r1 = r0 + part->rows_per_task < rows ? r0 + part->rows_per_task : rows;
    int cols = part->w->cols;
    if (part->lane) { /* whole lane groups (r0 is on one), every token per pass; leftover rows below */
        int whole = rows / KERNEL_LANE_ROWS * KERNEL_LANE_ROWS, g1 = r1 < whole ? r1 : whole;
        for (; r0 < g1; r0 += KERNEL_LANE_ROWS)
            part->lane((const uint8_t *)part->w->data + (size_t)r0 * part->w_stride, part->lane_act,
                       part->lane_stride, job->n, cols, part->y + r0, (size_t)rows);
        if (r0 >= r1) return;
    }
    if (part->slab.tile && job->n >= MATMUL_SLAB_MIN_TOKENS &&
        KERNEL_ROWS * KERNEL_SLAB_ROW_BYTES(cols) <= MATMUL_SLAB_BYTES) {
        _Alignas(64) uint8_t slab[MATMUL_SLAB_BYTES];
        for (int r = r0; r < r1; r += KERNEL_ROWS) {
            int nr = r1 - r < KERNEL_ROWS ? r1 - r : KERNEL_ROWS;
            part->slab.unpack((const uint8_t *)part->w->data + (size_t)r * part->w_stride, group_stride(part, nr),
                              nr, cols, slab);
            part->slab.tile(slab, KERNEL_SLAB_ROW_BYTES(cols), nr, part->act, part->act_stride, job->n, cols,
                            part->y + r, (size_t)rows);
        }
        return;
    }
    if (part->tile && job->n > 1) {
        for (int r = r0; r < r1; r += KERNEL_ROWS) {
            int nr = r1 - r < KERNEL_ROWS ? r1 - r : KERNEL_ROWS;
            part->tile((const uint8_t *)part->w->data + (size_t)r * part->w_stride, group_stride(part, nr), nr,
                       part->act, part->act_stride, job->n, part->w->cols, part->y + r, (size_t)rows);
        }
        return;
    }
    for (int t0 = 0; t0 < job->n; t0 += MATMUL_TOKEN_TILE) {
        int t1 = t0 + MATMUL_TOKEN_TILE < job->n ? t0 + MATMUL_TOKEN_TILE : job->n;
        for (int r = r0; r < r1; r += KERNEL_ROWS) {
            int nr = r1 - r < KERNEL_ROWS ? r1 - r : KERNEL_ROWS;
            for (int t = t0; t < t1; t++) {
                float v[KERNEL_ROWS];
                matmul_rows(job, part, r, nr, t, v);
                float *y = part->y + (size_t)t * rows + r;
                for (int k = 0; k < nr; k++) y[k] = v[k];
            }
        }
    }
}

/* Scratch layout for quantized weights: [n][cols] as Q8_0 blocks, then
 * (when cols % 256 == 0) [n][cols] as Q8_K blocks, then (from a 64-byte
 * boundary) [n] row-lane activations (kernel_lane_prep, from the Q8_0
 * blocks). Every quantized type asks for all three, so the largest requirement over the products of
 * one kernel_matmul_multi covers any mix of activation layouts. */
#define PREP_ALIGN 64 /* the row-lane part starts on a cache line */
static size_t q8_0_part_bytes(int cols, int n) { return kernel_row_bytes(GGML_TYPE_Q8_0, cols) * (size_t)n; }
static size_t q8_k_part_bytes(int cols, int n)
{
    return cols % QUANT_K == 0 ? kernel_row_bytes(GGML_TYPE_Q8_K, cols) * (size_t)n : 0;
}

static size_t lane_part_bytes(int cols, int n)
{
    return sizeof(kernel_lane_act) * (size_t)(cols / KERNEL_Q8_0_BLOCK) * (size_t)n;
}

size_t kernel_matmul_scratch_bytes(ggml_type t, int cols, int n)
{
    if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) return 0;
    return q8_0_part_bytes(cols, n) + q8_k_part_bytes(cols, n) + lane_part_bytes(cols, n) + PREP_ALIGN;
}

static kernel_lane_fn lane_kernel(ggml_type t, kernel_isa isa)
{
    switch (isa) {
    case KERNEL_ISA_AVX512: return kernel_lane_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_lane_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_lane_avx2(t);
    default: return NULL;
    }
}

static kernel_rows_fn rows_kernel(ggml_type t, kernel_isa isa)
{
    switch (isa) {
    case KERNEL_ISA_AVX512: return kernel_rows_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_rows_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_rows_avx2(t);
    default: return NULL;
    }
}

static kernel_tile_fn tile_kernel(ggml_type t, kernel_isa isa)
{
    switch (isa) {
    case KERNEL_ISA_AVX512: return kernel_tile_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_tile_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_tile_avx2(t);
    default: return NULL;
    }
}

static kernel_slab slab_kernel(ggml_type t, kernel_isa isa)
{
    switch (isa) {
    case KERNEL_ISA_AVX512: return kernel_slab_avx512(t);
    case KERNEL_ISA_AVXVNNI: return kernel_slab_avxvnni(t);
    case KERNEL_ISA_AVX2: return kernel_slab_avx2(t);
    default: return (kernel_slab){NULL, NULL};
    }
}

void kernel_matmul_multi(threadpool *pool, int n_mats, const kernel_matrix *const *w,
                         const float *x, int n, float *const *y, void *scratch)
{
    assert(n_mats >= 1 && n_mats <= KERNEL_MATMUL_MAX && n > 0);
    matmul_job job = {.ops = ops(), .n = n, .n_parts = n_mats};
    int cols = w[0]->cols, need_q8 = 0, need_q8k = 0, n_tasks = 0;
    /* About four tasks per thread (over all products) so a slow thread does
     * not hold up the rest, in whole groups of KERNEL_ROWS rows; the split
     * does not affect the results, each output is one thread's, computed the
     * same way in any group (kernels_rows.h). */
    int total_rows = 0;
    for (int i = 0; i < n_mats; i++) total_rows += w[i]->rows;
    int want = threadpool_size(pool) * 4;
    int rows_per_task = (total_rows + want - 1) / want;
    rows_per_task = (rows_per_task + KERNEL_ROWS - 1) / KERNEL_ROWS * KERNEL_ROWS;
    if (rows_per_task < KERNEL_ROWS) rows_per_task = KERNEL_ROWS;
    size_t q8_stride = kernel_row_bytes(GGML_TYPE_Q8_0, cols);
    size_t q8k_stride = cols % QUANT_K == 0 ? kernel_row_bytes(GGML_TYPE_Q8_K, cols) : 0;
    uint8_t *q8k_base = (uint8_t *)scratch + q8_0_part_bytes(cols, n);
    uint8_t *lane_base = q8k_base + q8_k_part_bytes(cols, n);
    lane_base += (PREP_ALIGN - (uintptr_t)lane_base % PREP_ALIGN) % PREP_ALIGN;
    size_t lane_stride = sizeof(kernel_lane_act) * (size_t)(cols / KERNEL_Q8_0_BLOCK);
    int need_lane = 0;
    for (int i = 0; i < n_mats; i++) {
        assert(kernel_type_supported(w[i]->type));
        assert(w[i]->cols == cols && w[i]->rows > 0);
        matmul_part *part = &job.part[i];
        ggml_type t = w[i]->type;
        part->w = w[i];
        part->y = y[i];
        part->w_stride = kernel_row_bytes(t, cols);
        part->rows = rows_kernel(t, job.ops->isa);
        part->tile = tile_kernel(t, job.ops->isa);
        part->slab = slab_kernel(t, job.ops->isa);
        part->rows_per_task = rows_per_task;
        if (w[i]->interleaved && lane_layout(t)) part->lane = lane_kernel(t, job.ops->isa);
        if (part->lane) { /* tasks in whole lane groups; the 4-row kernels are not used */
            part->rows_per_task = (rows_per_task + KERNEL_LANE_ROWS - 1) / KERNEL_LANE_ROWS * KERNEL_LANE_ROWS;
            part->rows = NULL, part->tile = NULL, part->slab = (kernel_slab){NULL, NULL};
            if (quant_lanes_block_bytes(t)) { /* the K-quants' lane kernels read Q8_K blocks */
                part->lane_act = q8k_base;
                part->lane_stride = q8k_stride;
            } else {
                part->lane_act = lane_base;
                part->lane_stride = lane_stride;
                need_lane = 1;
            }
        } else if (w[i]->interleaved && lane_layout(t)) { /* no lane kernel at this set: rows gathered one at a time */
            part->rows = NULL, part->tile = NULL, part->slab = (kernel_slab){NULL, NULL};
        }
        part->first_task = n_tasks;
        n_tasks += (w[i]->rows + part->rows_per_task - 1) / part->rows_per_task;
        const quant_traits *qt = quant_get_traits(t);
        if (qt) part->qdot = job.ops->isa >= KERNEL_ISA_AVX2 && qt->dot_avx2 ? qt->dot_avx2 : qt->dot_scalar;
        if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) {
            part->act = (const uint8_t *)x;
            part->act_stride = (size_t)cols * sizeof(float);
        } else if (qt && qt->act_type == GGML_TYPE_Q8_K) { /* after the Q8_0 part */
            assert(q8k_stride > 0);
            need_q8k = 1;
            part->act = q8k_base;
            part->act_stride = q8k_stride;
        } else {
            need_q8 = 1;
            part->act = scratch;
            part->act_stride = q8_stride;
        }
    }
    if (need_q8k) { /* K-quant weights take Q8_K blocks */
        assert(scratch);
        for (int t = 0; t < n; t++)
            quant_quantize_row_q8_k(x + (size_t)t * cols, (quant_block_q8_k *)(q8k_base + t * q8k_stride), cols);
    }
    if (need_q8) { /* convert the input once for every Q8_0-activation product */
        assert(scratch);
        for (int t = 0; t < n; t++)
            kernel_quantize_row_q8_0(x + (size_t)t * cols, (kernel_block_q8_0 *)((uint8_t *)scratch + t * q8_stride), cols);
    }
    if (need_lane) /* the row-lane kernels' activations, once per token */
        for (int t = 0; t < n; t++)
            kernel_lane_prep((uint8_t *)scratch + t * q8_stride, (kernel_lane_act *)(lane_base + t * lane_stride), cols);
    threadpool_run(pool, n_tasks, matmul_task, &job);
}

void kernel_matmul(threadpool *pool, const kernel_matrix *w, const float *x, int n, float *y,
                   void *scratch)
{
    kernel_matmul_multi(pool, 1, &w, x, n, &y, scratch);
}

void kernel_matmul_ref(const kernel_matrix *w, const float *x, int n, float *y)
{
    float row[w->cols];
    _Alignas(64) uint8_t buf[kernel_row_bytes(w->type, w->cols)];
    for (int r = 0; r < w->rows; r++) {
        kernel_dequantize_row(w->type, kernel_matrix_row(w, r, buf), row, w->cols);
        for (int t = 0; t < n; t++) {
            double sum = 0;
            for (int i = 0; i < w->cols; i++) sum += (double)row[i] * x[(size_t)t * w->cols + i];
            y[(size_t)t * w->rows + r] = (float)sum;
        }
    }
}

/* ======================================================================== */
/* vector operations                                                         */
/* ======================================================================== */

void kernel_rmsnorm(float *out, const float *x, const float *w, int n, float eps)
{
    ops()->rmsnorm(out, x, w, n, eps);
}

void kernel_softmax(float *x, int n)
{
    assert(n > 0);
    ops()->softmax(x, n);
}

void kernel_swiglu(float *x, const float *y, int n) { ops()->swiglu(x, y, n); }

void kernel_add(float *x, const float *y, int n)
{
    for (int i = 0; i < n; i++) x[i] += y[i];
}

void kernel_axpy(float *out, float a, const float *v, int n) { ops()->axpy(out, a, v, n); }
void kernel_axpy_f16(float *out, float a, const uint16_t *v, int n) { ops()->axpy_f16(out, a, v, n); }
void kernel_dot_f16_group(const uint16_t *k, const float *q, int n_q, int n, float *out)
{
    ops()->dot_f16_group(k, q, n_q, n, out);
}
void kernel_axpy_f16_group(float *out, const float *a, const uint16_t *v, int n_q, int n)
{
    ops()->axpy_f16_group(out, a, v, n_q, n);
}
