/* kernels_rows_avx512.c: the rows kernels (kernels_rows.h) for AVX-512 F, BW,
 * VL and VNNI (with FMA and F16C): a 512-bit kernel for F16, the 256-bit
 * body in its EVEX form for every type, and Q4_0's, Q5_0's and Q8_0's row-lane
 * kernels (16 rows in one register; docs/engine.md, "Row lanes"). Which
 * width a type uses is decided by measurement (docs/engine.md, "CPU
 * dispatch"), in kernel_rows_avx512; kernel_rows_avx512_width gives either
 * for tests and benchmarks. The 512-bit F16 kernel takes 32 values per step;
 * only its float summation order differs from the 256-bit one's. */
#include "engine/kernels_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/quants.h"

#define ROWS_TARGET "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"
#define ROWS_VNNI 2
/* 32 vector registers: a tile of 4 rows x 4 tokens keeps its 16
 * accumulators and the unpacked weights in registers; F16, with two
 * accumulators per pair, 4 x 2 (4 x 4 spilled: 1.2x the rows kernels
 * against 1.4x, kernels_bench --prompt 64, 896 x 4864). */
#define ROWS_TILE_T 4
#define ROWS_TILE_T_F16 2
/* Row lanes: tokens per pass over a group's block (an int32 and a float
 * accumulator each): 256-bit body (two halves of 8 rows), 512-bit body. */
#define ROWS_LANE_T 8
#define ROWS_LANE_T512 8
#include "engine/kernels_rows256.inc"

/* ---- F16 ----------------------------------------------------------------- */

ROWS_INLINE void f16_body512(BODY_ARGS)
{
    IL_OPEN(32);
    const uint16_t *p[KERNEL_ROWS];
    __m512 s0[KERNEL_ROWS][TILE_MAX], s1[KERNEL_ROWS][TILE_MAX];
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++) {
        p[r] = (const uint16_t *)(w + r * rs);
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) s0[r][t] = s1[r][t] = _mm512_setzero_ps();
    }
    int i = 0;
    for (; i + 32 <= n; i += 32) {
#pragma GCC unroll 4
        for (int r = 0; r < nr; r++) {
            PREFETCH_NEXT_GROUP(F16_AT(p[r], i), stride);
            __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)F16_AT(p[r], i)));
            __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)F16_AT(p[r], i + 16)));
#pragma GCC unroll 8
            for (int t = 0; t < nt; t++) {
                const float *x = ACT(float, t);
                s0[r][t] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), s0[r][t]);
                s1[r][t] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), s1[r][t]);
            }
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < nr; r++)
#pragma GCC unroll 8
        for (int t = 0; t < nt; t++) {
            const float *x = ACT(float, t);
            __m128 sum = _mm_set_ss(_mm512_reduce_add_ps(_mm512_add_ps(s0[r][t], s1[r][t])));
            for (int j = i; j < n; j++)
                sum = _mm_fmadd_ss(_mm_set_ss(_cvtsh_ss(*F16_AT(p[r], j))), _mm_set_ss(x[j]), sum);
            OUT(r, t) = _mm_cvtss_f32(sum);
        }
}
ROWS_WRAPPER(rows512_f16, f16_body512)
TILE_WRAPPER(tile512_f16, f16_body512, ROWS_TILE_T_F16)

/* ---- Q4_0 in row lanes (docs/engine.md, "Row lanes") --------------------- */

/* The 256-bit body's lanes, 16 rows in one register: per block and token,
 * 8 dpbusd of each row's 4 levels by the same 4 activation bytes
 * (broadcast), started at -8 x the activation sum, then one fma with the 16
 * rows' scales x the token's. The unpacked block serves every token of the
 * tile; no horizontal sum. The canonical order, so the bits of every other
 * set's lane kernel and of the one-row dot products. */
ROWS_INLINE void q4_0_lane_body512(const uint8_t *g, const uint8_t *act, size_t astride, int nb, float *out,
                                   size_t ostride, const int nt)
{
    const __m512i m15 = _mm512_set1_epi8(15);
    __m512 acc[LANE_TILE_MAX];
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const uint8_t *blk = g + (size_t)i * LANE_BLOCK;
        __m512i p[LANE_TILE_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++) p[t] = _mm512_set1_epi32(-8 * LANE_ACT(t, i)->sum);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(blk + 32 + 64 * k);
            __m512i lo = _mm512_and_si512(v, m15), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
#pragma GCC unroll 16
            for (int t = 0; t < nt; t++) {
                const kernel_lane_act *a = LANE_ACT(t, i);
                p[t] = _mm512_dpbusd_epi32(p[t], lo, _mm512_set1_epi32(lane_bytes4(a->qs + 4 * k)));
                p[t] = _mm512_dpbusd_epi32(p[t], hi, _mm512_set1_epi32(lane_bytes4(a->qs + 16 + 4 * k)));
            }
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[t]), _mm512_mul_ps(dw, _mm512_set1_ps(LANE_ACT(t, i)->d)),
                                     acc[t]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + (size_t)t * ostride, acc[t]);
}

#define LANE512_AT(unused, t0, k) \
    q4_0_lane_body512(g, a + (size_t)(t0) * astride, astride, n / QUANT_BLOCK, out + (size_t)(t0) * ostride, ostride, k)
ROWS_FN void lane512_q4_0(const void *group, const void *act, size_t astride, int ntok, int n, float *out,
                          size_t ostride)
{
    const uint8_t *g = group, *a = act;
    LANE_TILES(LANE512_AT, ROWS_LANE_T512, 0);
}

/* Q8_0 in row lanes: the weights xor 0x80 (w + 128, dpbusd's unsigned
 * operand), each lane starting at -128 x the activation sum; 8 chunks per
 * block. */
ROWS_INLINE void q8_0_lane_body512(const uint8_t *g, const uint8_t *act, size_t astride, int nb, float *out,
                                   size_t ostride, const int nt)
{
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512 acc[LANE_TILE_MAX];
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const uint8_t *blk = g + (size_t)i * LANE_BLOCK_Q8;
        __m512i p[LANE_TILE_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++) p[t] = _mm512_set1_epi32(-128 * LANE_ACT(t, i)->sum);
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            __m512i u = _mm512_xor_si512(_mm512_loadu_si512(blk + 32 + 64 * k), bias);
#pragma GCC unroll 16
            for (int t = 0; t < nt; t++)
                p[t] = _mm512_dpbusd_epi32(p[t], u, _mm512_set1_epi32(lane_bytes4(LANE_ACT(t, i)->qs + 4 * k)));
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[t]), _mm512_mul_ps(dw, _mm512_set1_ps(LANE_ACT(t, i)->d)),
                                     acc[t]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + (size_t)t * ostride, acc[t]);
}

#define LANE512_Q8_AT(unused, t0, k) \
    q8_0_lane_body512(g, a + (size_t)(t0) * astride, astride, n / QUANT_BLOCK, out + (size_t)(t0) * ostride, ostride, k)
ROWS_FN void lane512_q8_0(const void *group, const void *act, size_t astride, int ntok, int n, float *out,
                          size_t ostride)
{
    const uint8_t *g = group, *a = act;
    LANE_TILES(LANE512_Q8_AT, ROWS_LANE_T512, 0);
}

/* Q5_0 in row lanes: the 256-bit body's fifth bits (lane_bit4_256), 16
 * lanes at once. */
ROWS_INLINE __m512i lane_bit4_512(__m512i qh, int shift)
{
    __m512i x = _mm512_and_si512(_mm512_srli_epi32(qh, shift), _mm512_set1_epi32(15));
    return _mm512_and_si512(_mm512_mullo_epi32(x, _mm512_set1_epi32(0x02040810)), _mm512_set1_epi32(0x10101010));
}

ROWS_INLINE void q5_0_lane_body512(const uint8_t *g, const uint8_t *act, size_t astride, int nb, float *out,
                                   size_t ostride, const int nt)
{
    const __m512i m15 = _mm512_set1_epi8(15);
    __m512 acc[LANE_TILE_MAX];
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const uint8_t *blk = g + (size_t)i * LANE_BLOCK_Q5;
        __m512i qh = _mm512_loadu_si512(blk + 32);
        __m512i p[LANE_TILE_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++) p[t] = _mm512_set1_epi32(-16 * LANE_ACT(t, i)->sum);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(blk + 96 + 64 * k);
            __m512i lo = _mm512_or_si512(_mm512_and_si512(v, m15), lane_bit4_512(qh, 4 * k));
            __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(v, 4), m15), lane_bit4_512(qh, 16 + 4 * k));
#pragma GCC unroll 16
            for (int t = 0; t < nt; t++) {
                const kernel_lane_act *a = LANE_ACT(t, i);
                p[t] = _mm512_dpbusd_epi32(p[t], lo, _mm512_set1_epi32(lane_bytes4(a->qs + 4 * k)));
                p[t] = _mm512_dpbusd_epi32(p[t], hi, _mm512_set1_epi32(lane_bytes4(a->qs + 16 + 4 * k)));
            }
        }
        __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)blk));
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++)
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[t]), _mm512_mul_ps(dw, _mm512_set1_ps(LANE_ACT(t, i)->d)),
                                     acc[t]);
    }
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + (size_t)t * ostride, acc[t]);
}

#define LANE512_Q5_AT(unused, t0, k) \
    q5_0_lane_body512(g, a + (size_t)(t0) * astride, astride, n / QUANT_BLOCK, out + (size_t)(t0) * ostride, ostride, k)
ROWS_FN void lane512_q5_0(const void *group, const void *act, size_t astride, int ntok, int n, float *out,
                          size_t ostride)
{
    const uint8_t *g = group, *a = act;
    LANE_TILES(LANE512_Q5_AT, ROWS_LANE_T512, 0);
}

kernel_lane_fn kernel_lane_avx512_width(ggml_type t, int bits)
{
    if (bits == 256) return lane256_get(t);
    switch (t) {
    case GGML_TYPE_Q4_0: return lane512_q4_0;
    case GGML_TYPE_Q5_0: return lane512_q5_0;
    case GGML_TYPE_Q8_0: return lane512_q8_0;
    default: return NULL;
    }
}
kernel_lane_fn kernel_lane_avx512(ggml_type t) { return kernel_lane_avx512_width(t, 512); }

kernel_rows_fn kernel_rows_avx512_width(ggml_type t, int bits)
{
    if (bits == 256) return rows256_get(t);
    switch (t) {
    case GGML_TYPE_F16: return rows512_f16;
    default: return NULL;
    }
}

/* Per type, the faster width on the machine measured (docs/engine.md, "512
 * or 256 bits"): F16 is memory-bound out of cache, where both widths tie,
 * and 256 is faster in cache (Q8_0 and Q4_0 run in row lanes: no rows
 * kernel). */
kernel_rows_fn kernel_rows_avx512(ggml_type t)
{
    kernel_rows_fn wide = t == GGML_TYPE_F16 ? NULL : kernel_rows_avx512_width(t, 512);
    return wide ? wide : rows256_get(t);
}

kernel_tile_fn kernel_tile_avx512_width(ggml_type t, int bits)
{
    if (bits == 256) return tile256_get(t);
    switch (t) {
    case GGML_TYPE_F16: return tile512_f16;
    default: return NULL;
    }
}

/* The same width as kernel_rows_avx512 picks, so prompts and generation agree. */
kernel_tile_fn kernel_tile_avx512(ggml_type t)
{
    kernel_tile_fn wide = t == GGML_TYPE_F16 ? NULL : kernel_tile_avx512_width(t, 512);
    return wide ? wide : tile256_get(t);
}

/* The 256-bit body's slabs for the types that run at 256 bits here (Q4_K;
 * Q4_0 runs in row lanes). */
kernel_slab kernel_slab_avx512(ggml_type t) { return slab256_get(t); }
#else
kernel_rows_fn kernel_rows_avx512_width(ggml_type t, int bits)
{
    (void)t, (void)bits;
    return NULL;
}
kernel_rows_fn kernel_rows_avx512(ggml_type t)
{
    (void)t;
    return NULL;
}
kernel_tile_fn kernel_tile_avx512_width(ggml_type t, int bits)
{
    (void)t, (void)bits;
    return NULL;
}
kernel_tile_fn kernel_tile_avx512(ggml_type t)
{
    (void)t;
    return NULL;
}
kernel_slab kernel_slab_avx512(ggml_type t)
{
    (void)t;
    return (kernel_slab){NULL, NULL};
}
kernel_lane_fn kernel_lane_avx512_width(ggml_type t, int bits)
{
    (void)t, (void)bits;
    return NULL;
}
kernel_lane_fn kernel_lane_avx512(ggml_type t)
{
    (void)t;
    return NULL;
}
#endif
