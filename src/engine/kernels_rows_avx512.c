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

/* Q5_0's fifth bits (lane_bit4_256's operations, 16 lanes at once): bit 4
 * of the 4 levels of each lane, from the row's 32 fifth bits. */
ROWS_INLINE __m512i lane_bit4_512(__m512i qh, int shift)
{
    __m512i x = _mm512_and_si512(_mm512_srli_epi32(qh, shift), _mm512_set1_epi32(15));
    return _mm512_and_si512(_mm512_mullo_epi32(x, _mm512_set1_epi32(0x02040810)), _mm512_set1_epi32(0x10101010));
}

/* The 256-bit body's lanes, 16 rows in one register: per block and token,
 * 8 dpbusd of each row's 4 levels by the same 4 activation bytes
 * (broadcast), started at -8 x the activation sum, then one fma with the 16
 * rows' scales x the token's. The unpacked block serves every token of the
 * tile; no horizontal sum. The canonical order, so the bits of every other
 * set's lane kernel and of the one-row dot products.
 * Q5_0 (five): the 16 rows' fifth bits follow the scales, levels 0..31,
 * lanes started at -16 x the activation sum. */
ROWS_INLINE void q45_0_lane_body512(const uint8_t *g, const uint8_t *act, size_t astride, int nb, float *out,
                                    size_t ostride, const int nt, const int five)
{
    const __m512i m15 = _mm512_set1_epi8(15);
    __m512 acc[LANE_TILE_MAX];
#pragma GCC unroll 16
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < nb; i++) {
        const uint8_t *blk = g + (size_t)i * (five ? LANE_BLOCK_Q5 : LANE_BLOCK);
        __m512i qh = five ? _mm512_loadu_si512(blk + 32) : _mm512_setzero_si512();
        __m512i p[LANE_TILE_MAX];
#pragma GCC unroll 16
        for (int t = 0; t < nt; t++) p[t] = _mm512_set1_epi32((five ? -16 : -8) * LANE_ACT(t, i)->sum);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m512i v = _mm512_loadu_si512(blk + (five ? 96 : 32) + 64 * k);
            __m512i lo = _mm512_and_si512(v, m15), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
            if (five) {
                lo = _mm512_or_si512(lo, lane_bit4_512(qh, 4 * k));
                hi = _mm512_or_si512(hi, lane_bit4_512(qh, 16 + 4 * k));
            }
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
    q45_0_lane_body512(g, a + (size_t)(t0) * astride, astride, n / QUANT_BLOCK, out + (size_t)(t0) * ostride, ostride, k, 0)
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

/* Q5_0 in row lanes: q45_0_lane_body512 with the fifth bits. */
#define LANE512_Q5_AT(unused, t0, k) \
    q45_0_lane_body512(g, a + (size_t)(t0) * astride, astride, n / QUANT_BLOCK, out + (size_t)(t0) * ostride, ostride, k, 1)
ROWS_FN void lane512_q5_0(const void *group, const void *act, size_t astride, int ntok, int n, float *out,
                          size_t ostride)
{
    const uint8_t *g = group, *a = act;
    LANE_TILES(LANE512_Q5_AT, ROWS_LANE_T512, 0);
}

/* ---- K-quants in row lanes (docs/engine.md, "K-quants in row lanes") ------ */

/* Lane r of every vector is row r of the group (quant_lanes_pack's layout):
 * a dpbusd multiplies 4 levels of each of the 16 rows by the same 4
 * activation bytes, broadcast, so the unpacked levels serve every token of
 * the tile and each token has one accumulator vector for 16 rows; the float
 * steps are the canonical ones (quant_k_fma), lane by lane. 4 tokens per
 * pass: 4 vectors per token (accumulator, isum, two sub-block chains) plus
 * the shared levels fit the 32 registers. */
#define LANES_TILE_T 4
#define LANES_BODY_ARGS const uint8_t *g, const void *act, size_t astride, int n, float *out, size_t ostride, const int nt

ROWS_INLINE __m512i bcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Q4_K's 6-bit scales (int32 per lane) and mins (16-bit pairs, for
 * vpdpwssd) from the rows' 12 packed bytes as 3 vectors of dwords a, b, c
 * (quants.h: scales 0-3 are a's bytes' low six bits, 4-7 c's low nibbles with
 * a's top two bits above; mins likewise from b and c's high nibbles). */
ROWS_INLINE __m512i q4_k_lane_scale(__m512i a, __m512i c, const int s)
{
    const __m512i m63 = _mm512_set1_epi32(63), m15 = _mm512_set1_epi32(15), m48 = _mm512_set1_epi32(0x30);
    if (s < 4) return _mm512_and_si512(_mm512_srli_epi32(a, 8 * s), m63);
    return _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(c, 8 * (s - 4)), m15),
                           _mm512_and_si512(_mm512_srli_epi32(a, 8 * (s - 4) + 2), m48));
}

/* mins 2j and 2j + 1 as a 16-bit pair per lane */
ROWS_INLINE __m512i q4_k_lane_min_pair(__m512i b, __m512i c, const int j)
{
    /* bytes 2 (j % 2) and 2 (j % 2) + 1 of each dword to its two 16-bit halves */
    __m512i idx = _mm512_set4_epi32(j % 2 ? (int)0x800f800e : (int)0x800d800c, j % 2 ? (int)0x800b800a : (int)0x80098008,
                                    j % 2 ? (int)0x80078006 : (int)0x80058004, j % 2 ? (int)0x80038002 : (int)0x80018000);
    if (j < 2) return _mm512_and_si512(_mm512_shuffle_epi8(b, idx), _mm512_set1_epi16(63));
    __m512i lo = _mm512_and_si512(_mm512_srli_epi16(_mm512_shuffle_epi8(c, idx), 4), _mm512_set1_epi16(15));
    __m512i hi = _mm512_and_si512(_mm512_srli_epi16(_mm512_shuffle_epi8(b, idx), 2), _mm512_set1_epi16(0x30));
    return _mm512_or_si512(lo, hi);
}

/* Q4_K: per 64-value chunk c, a load is 4 values of 16 rows for sub-blocks
 * 2c (low nibbles) and 2c + 1 (high); each sub-block's chain of 8 dpbusd is
 * exact in int32 and multiplied by the rows' scales (vpmulld); the mins'
 * term is 4 vpdpwssd of the rows' mins (16-bit pairs) with the token's
 * sub-block sums (16-bit pairs, exact: |sum| <= 32 * 127). */
ROWS_INLINE void q4_k_lanes_body512(LANES_BODY_ARGS)
{
    const __m512i m15 = _mm512_set1_epi8(15);
    __m512 acc[LANES_TILE_T];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < n / QUANT_K; i++, g += 2304) {
        const __m512i sa = _mm512_loadu_si512(g + 64), sb = _mm512_loadu_si512(g + 128), scw = _mm512_loadu_si512(g + 192);
        __m512i isum[LANES_TILE_T];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) isum[t] = _mm512_setzero_si512();
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
            __m512i lo_sum[LANES_TILE_T], hi_sum[LANES_TILE_T];
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++) lo_sum[t] = hi_sum[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int q = 0; q < 8; q++) {
                __m512i v = _mm512_loadu_si512(g + 256 + 512 * c + 64 * q);
                __m512i lo = _mm512_and_si512(v, m15), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m15);
#pragma GCC unroll 4
                for (int t = 0; t < nt; t++) {
                    const int8_t *y = ACT(quant_block_q8_k, t)[i].qs + 64 * c + 4 * q;
                    lo_sum[t] = _mm512_dpbusd_epi32(lo_sum[t], lo, bcast4(y));
                    hi_sum[t] = _mm512_dpbusd_epi32(hi_sum[t], hi, bcast4(y + 32));
                }
            }
            __m512i slo = q4_k_lane_scale(sa, scw, 2 * c), shi = q4_k_lane_scale(sa, scw, 2 * c + 1);
#pragma GCC unroll 4
            for (int t = 0; t < nt; t++)
                isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(lo_sum[t], slo),
                                                                     _mm512_mullo_epi32(hi_sum[t], shi)));
        }
        __m512i mn[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) mn[j] = q4_k_lane_min_pair(sb, scw, j);
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
        __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(g + 32)));
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            const quant_block_q8_k *y = ACT(quant_block_q8_k, t) + i;
            /* dwords 0, 1, 4, 5: the sub-block sums (0, 1), (2, 3), (4, 5), (6, 7) as 16-bit pairs */
            __m256i s32 = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), _mm256_set1_epi16(1));
            int32_t pairs[8];
            _mm256_storeu_si256((__m256i *)pairs, _mm256_packs_epi32(s32, s32));
            __m512i msum = _mm512_setzero_si512();
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) msum = _mm512_dpwssd_epi32(msum, mn[j], _mm512_set1_epi32(pairs[j < 2 ? j : j + 2]));
            __m512 dy = _mm512_set1_ps(y->d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, dy), acc[t]);
            acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(dmin, dy), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + (size_t)t * ostride, acc[t]);
}

/* Q6_K: for half h and quarter k, a load of ql and one of qh are 4 values of
 * 16 rows; the levels 0..63 are (ql's nibble) | (qh's 2 bits) << 4. The
 * offset 32 is folded into each sub-block's chain, which starts at -32
 * times the token's sum of that sub-block (exact: the chain stays within
 * 16 * 63 * 127 + 32 * 16 * 127), then times the rows' int8 scales. */
/* Half h, quarter k of a Q6_K super-block: sub-blocks 8h + 2k and 8h + 2k + 1
 * into isum (k constant at every call, so the shifts are immediates). */
ROWS_INLINE void q6_k_lanes_quarter512(const uint8_t *g, const void *act, size_t astride, int i, const int h,
                                       const int k, const int nt, int32_t start[][16], __m512i *isum)
{
    const __m512i m15 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const int s0 = 8 * h + 2 * k;
    const uint8_t *half = g + 288 + 1536 * h;
    __m512i a0[LANES_TILE_T], a1[LANES_TILE_T];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) {
        a0[t] = _mm512_set1_epi32(start[t][s0]);
        a1[t] = _mm512_set1_epi32(start[t][s0 + 1]);
    }
#pragma GCC unroll 8
    for (int q = 0; q < 8; q++) {
        __m512i l = _mm512_loadu_si512(half + (k & 1 ? 1024 + 64 * q : 128 * q)), hb = _mm512_loadu_si512(half + 128 * q + 64);
        if (k >= 2) l = _mm512_srli_epi16(l, 4);
        /* bits 2k, 2k + 1 of each qh byte to bits 4, 5 */
        if (k == 0) hb = _mm512_slli_epi16(hb, 4);
        if (k == 1) hb = _mm512_slli_epi16(hb, 2);
        if (k == 3) hb = _mm512_srli_epi16(hb, 2);
        __m512i lv = _mm512_ternarylogic_epi32(_mm512_and_si512(l, m15), hb, m30, 0xf8); /* a | (b & c) */
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m512i y = bcast4(ACT(quant_block_q8_k, t)[i].qs + 128 * h + 32 * k + 4 * q);
            if (q < 4)
                a0[t] = _mm512_dpbusd_epi32(a0[t], lv, y);
            else
                a1[t] = _mm512_dpbusd_epi32(a1[t], lv, y);
        }
    }
    __m512i sc0 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(g + 32 + 16 * s0)));
    __m512i sc1 = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(g + 48 + 16 * s0)));
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++)
        isum[t] = _mm512_add_epi32(isum[t], _mm512_add_epi32(_mm512_mullo_epi32(a0[t], sc0), _mm512_mullo_epi32(a1[t], sc1)));
}

ROWS_INLINE void q6_k_lanes_body512(LANES_BODY_ARGS)
{
    __m512 acc[LANES_TILE_T];
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
    for (int i = 0; i < n / QUANT_K; i++, g += 3360) {
        int32_t start[LANES_TILE_T][16];
        __m512i isum[LANES_TILE_T];
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m512i bs = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)ACT(quant_block_q8_k, t)[i].bsums));
            _mm512_storeu_si512(start[t], _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, 5)));
            isum[t] = _mm512_setzero_si512();
        }
        q6_k_lanes_quarter512(g, act, astride, i, 0, 0, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 0, 1, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 0, 2, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 0, 3, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 1, 0, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 1, 1, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 1, 2, nt, start, isum);
        q6_k_lanes_quarter512(g, act, astride, i, 1, 3, nt, start, isum);
        __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)g));
#pragma GCC unroll 4
        for (int t = 0; t < nt; t++) {
            __m512 dy = _mm512_set1_ps(ACT(quant_block_q8_k, t)[i].d);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, dy), acc[t]);
        }
    }
#pragma GCC unroll 4
    for (int t = 0; t < nt; t++) _mm512_storeu_ps(out + (size_t)t * ostride, acc[t]);
}

/* Whole tiles of LANES_TILE_T tokens, then the 1-3 left as one tile. */
#define LANES_WRAPPER(name, body)                                                                  \
    ROWS_FN void name(const void *group, const void *act, size_t astride, int ntok, int n, float *out, \
                      size_t ostride)                                                              \
    {                                                                                              \
        const uint8_t *a = act;                                                                    \
        int t = 0;                                                                                 \
        for (; t + LANES_TILE_T <= ntok; t += LANES_TILE_T)                                        \
            body(group, a + t * astride, astride, n, out + t * ostride, ostride, LANES_TILE_T);    \
        switch (ntok - t) {                                                                        \
        case 3: body(group, a + t * astride, astride, n, out + t * ostride, ostride, 3); break;    \
        case 2: body(group, a + t * astride, astride, n, out + t * ostride, ostride, 2); break;    \
        case 1: body(group, a + t * astride, astride, n, out + t * ostride, ostride, 1); break;    \
        default: break;                                                                            \
        }                                                                                          \
    }
_Static_assert(LANES_TILE_T == 4, "the leftover tiles above cover 1-3 tokens");
LANES_WRAPPER(lanes512_q4_k, q4_k_lanes_body512)
LANES_WRAPPER(lanes512_q6_k, q6_k_lanes_body512)

/* The K-quants' 512-bit lane kernels (their activations: Q8_K blocks as they are). */
static kernel_lane_fn kquant_lane512(ggml_type t)
{
    return t == GGML_TYPE_Q4_K ? lanes512_q4_k : t == GGML_TYPE_Q6_K ? lanes512_q6_k : NULL;
}

kernel_lane_fn kernel_lane_avx512_width(ggml_type t, int bits)
{
    if (bits == 256) return lane256_get(t);
    switch (t) {
    case GGML_TYPE_Q4_0: return lane512_q4_0;
    case GGML_TYPE_Q5_0: return lane512_q5_0;
    case GGML_TYPE_Q8_0: return lane512_q8_0;
    default: return kquant_lane512(t);
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
