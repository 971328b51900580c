/* quants.c: see quants.h.
 *
 * Layout of this file: helpers, per-type unpacking (block -> small integers
 * and scales; shared by the reference dequantizer and the scalar dot
 * product), quantizers, scalar dot products, AVX2 dot products, the type table.
 *
 * The unpack functions are the one place that reads each layout, written
 * from the element-addressing rules in quants.h; the known-answer tests in
 * test_quants.c build blocks by those rules, so a layout mistake shows.
 *
 * Quantizers (our own, following the published method, not ggml's code):
 * - 32-blocks: round to nearest with the block's extreme value mapped to the
 *   end of the range (Q4_0/Q5_0: d = x_maxabs / -8 or -16, signed so the
 *   extreme uses the side with one more level), or min/max (Q4_1/Q5_1).
 * - K-quants: per sub-block, a search over ~20 candidate scales, each
 *   followed by a weighted least-squares refit of scale (and min), keeping the
 *   lowest weighted squared error (Q2_K, Q4_K, Q5_K: asymmetric, like ggml's
 *   make_qkx2_quants; Q3_K, Q6_K: symmetric, like make_qx_quants); then the
 *   sub-block scales are themselves quantized (6, 4 or 8 bits) against the
 *   super-block's fp16 d/dmin, and the values re-rounded with the final
 *   scales. Simplified against ggml: no importance matrix, and Q3_K/Q6_K use
 *   one weighting (x^2) instead of per-type tuned ones. */
#include "engine/quants.h"

#include <assert.h>
#include <math.h>
#include <string.h>

#include "engine/kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define QUANTS_HAVE_AVX2 1
#include <immintrin.h>
#endif

_Static_assert(sizeof(quant_block_q4_0) == 18, "ggml block_q4_0 is 18 bytes");
_Static_assert(sizeof(quant_block_q4_1) == 20, "ggml block_q4_1 is 20 bytes");
_Static_assert(sizeof(quant_block_q5_0) == 22, "ggml block_q5_0 is 22 bytes");
_Static_assert(sizeof(quant_block_q5_1) == 24, "ggml block_q5_1 is 24 bytes");
_Static_assert(sizeof(quant_block_q2_k) == 84, "ggml block_q2_K is 84 bytes");
_Static_assert(sizeof(quant_block_q3_k) == 110, "ggml block_q3_K is 110 bytes");
_Static_assert(sizeof(quant_block_q4_k) == 144, "ggml block_q4_K is 144 bytes");
_Static_assert(sizeof(quant_block_q5_k) == 176, "ggml block_q5_K is 176 bytes");
_Static_assert(sizeof(quant_block_q6_k) == 210, "ggml block_q6_K is 210 bytes");
_Static_assert(sizeof(quant_block_q8_k) == 292, "ggml block_q8_K is 292 bytes");

/* ======================================================================== */
/* helpers                                                                   */
/* ======================================================================== */

static inline float h2f(uint16_t h) { return kernel_fp16_to_fp32(h); }
static inline uint16_t f2h(float f) { return kernel_fp32_to_fp16(f); }

/* Round to nearest (ties to even) and clamp to [lo, hi]; NaN gives lo. The
 * comparison form keeps float->int conversion defined for any input. */
static inline int round_clamp(float v, int lo, int hi)
{
    float r = (v + 12582912.0f) - 12582912.0f;
    if (!(r >= (float)lo)) return lo;
    if (r > (float)hi) return hi;
    return (int)r;
}

static inline uint32_t load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Q4_K/Q5_K's 12 bytes of six-bit scales and mins (see quants.h). */
static void scale_min_k4(const uint8_t *q, int s, uint8_t *sc, uint8_t *m)
{
    if (s < 4) {
        *sc = q[s] & 63;
        *m = q[s + 4] & 63;
    } else {
        *sc = (uint8_t)((q[s + 4] & 15) | (q[s - 4] >> 6) << 4);
        *m = (uint8_t)((q[s + 4] >> 4) | (q[s] >> 6) << 4);
    }
}

static void pack_scale_min_k4(uint8_t *q, int s, int sc, int m)
{
    assert(sc >= 0 && sc < 64 && m >= 0 && m < 64);
    if (s < 4) {
        q[s] = (uint8_t)((q[s] & 0xc0) | sc);
        q[s + 4] = (uint8_t)((q[s + 4] & 0xc0) | m);
    } else {
        q[s + 4] = (uint8_t)((sc & 15) | (m & 15) << 4);
        q[s - 4] = (uint8_t)((q[s - 4] & 63) | (sc >> 4) << 6);
        q[s] = (uint8_t)((q[s] & 63) | (m >> 4) << 6);
    }
}

/* Q3_K's 16 six-bit scales in 12 bytes; returns sc - 32. */
static int scale_q3_k(const uint8_t *q, int s)
{
    int lo = s < 8 ? q[s] & 15 : q[s - 8] >> 4;
    int hi = (q[8 + s % 4] >> (2 * (s / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* ======================================================================== */
/* unpacking: block -> integer levels (+ scales)                             */
/* ======================================================================== */

static void unpack_q4_0(const quant_block_q4_0 *b, int8_t q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)((b->qs[j] & 15) - 8);
        q[j + 16] = (int8_t)((b->qs[j] >> 4) - 8);
    }
}

static void unpack_q4_1(const quant_block_q4_1 *b, int8_t q[32])
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(b->qs[j] & 15);
        q[j + 16] = (int8_t)(b->qs[j] >> 4);
    }
}

/* Q5: 5-bit levels 0..31 (offset applied by the caller). */
static void unpack_q5(const uint8_t qh4[4], const uint8_t qs[16], int offset, int8_t q[32])
{
    uint32_t qh = load_u32(qh4);
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(((qs[j] & 15) | ((qh >> j) & 1) << 4) - offset);
        q[j + 16] = (int8_t)(((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - offset);
    }
}

/* Q2_K: q[e] in 0..3; sc, mn the 4-bit scale and min of each 16. */
static void unpack_q2_k(const quant_block_q2_k *b, int8_t q[256], uint8_t sc[16], uint8_t mn[16])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        q[e] = (int8_t)((b->qs[32 * h + l] >> (2 * k)) & 3);
    }
    for (int s = 0; s < 16; s++) {
        sc[s] = b->scales[s] & 15;
        mn[s] = b->scales[s] >> 4;
    }
}

/* Q3_K: q[e] in -4..3; sc[s] in -32..31. */
static void unpack_q3_k(const quant_block_q3_k *b, int8_t q[256], int8_t sc[16])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        int lo = (b->qs[32 * h + l] >> (2 * k)) & 3;
        int hi = (b->hmask[l] >> (4 * h + k)) & 1;
        q[e] = (int8_t)((lo | hi << 2) - 4);
    }
    for (int s = 0; s < 16; s++) sc[s] = (int8_t)scale_q3_k(b->scales, s);
}

/* Q4_K/Q5_K: q[e] in 0..15 (Q4_K) or 0..31 (Q5_K, qh given); sc, mn per 32. */
static void unpack_q45_k(const uint8_t scales[12], const uint8_t qs[128], const uint8_t *qh,
                         int8_t q[256], uint8_t sc[8], uint8_t mn[8])
{
    for (int e = 0; e < 256; e++) {
        int c = e / 64, r = e % 64;
        uint8_t byte = qs[32 * c + r % 32];
        int v = r < 32 ? byte & 15 : byte >> 4;
        if (qh) v |= ((qh[e % 32] >> (e / 32)) & 1) << 4;
        q[e] = (int8_t)v;
    }
    for (int s = 0; s < 8; s++) scale_min_k4(scales, s, &sc[s], &mn[s]);
}

/* Q6_K: q[e] in -32..31. */
static void unpack_q6_k(const quant_block_q6_k *b, int8_t q[256])
{
    for (int e = 0; e < 256; e++) {
        int h = e / 128, k = (e % 128) / 32, l = e % 32;
        uint8_t byte = b->ql[64 * h + l + 32 * (k & 1)];
        int lo = k < 2 ? byte & 15 : byte >> 4;
        int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
        q[e] = (int8_t)((lo | hi << 4) - 32);
    }
}

/* ======================================================================== */
/* reference dequantization                                                  */
/* ======================================================================== */

static void dequantize_q4_0(const void *src, float *y, int n)
{
    const quant_block_q4_0 *b = src;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++, y += 32) {
        unpack_q4_0(&b[i], q);
        float d = h2f(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
    }
}

static void dequantize_q4_1(const void *src, float *y, int n)
{
    const quant_block_q4_1 *b = src;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++, y += 32) {
        unpack_q4_1(&b[i], q);
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j] + m;
    }
}

static void dequantize_q5_0(const void *src, float *y, int n)
{
    const quant_block_q5_0 *b = src;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++, y += 32) {
        unpack_q5(b[i].qh, b[i].qs, 16, q);
        float d = h2f(b[i].d);
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
    }
}

static void dequantize_q5_1(const void *src, float *y, int n)
{
    const quant_block_q5_1 *b = src;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++, y += 32) {
        unpack_q5(b[i].qh, b[i].qs, 0, q);
        float d = h2f(b[i].d), m = h2f(b[i].m);
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j] + m;
    }
}

static void dequantize_q2_k(const void *src, float *y, int n)
{
    const quant_block_q2_k *b = src;
    int8_t q[256];
    uint8_t sc[16], mn[16];
    for (int i = 0; i < n / 256; i++, y += 256) {
        unpack_q2_k(&b[i], q, sc, mn);
        float d = h2f(b[i].d), dmin = h2f(b[i].dmin);
        for (int e = 0; e < 256; e++)
            y[e] = d * (float)sc[e / 16] * (float)q[e] - dmin * (float)mn[e / 16];
    }
}

static void dequantize_q3_k(const void *src, float *y, int n)
{
    const quant_block_q3_k *b = src;
    int8_t q[256], sc[16];
    for (int i = 0; i < n / 256; i++, y += 256) {
        unpack_q3_k(&b[i], q, sc);
        float d = h2f(b[i].d);
        for (int e = 0; e < 256; e++) y[e] = d * (float)sc[e / 16] * (float)q[e];
    }
}

/* One Q4_K or Q5_K block (qh NULL for Q4_K) into y[256]. */
static void dequantize_q45_k(const uint8_t scales[12], const uint8_t qs[128], const uint8_t *qh,
                             uint16_t d16, uint16_t dmin16, float *y)
{
    int8_t q[256];
    uint8_t sc[8], mn[8];
    unpack_q45_k(scales, qs, qh, q, sc, mn);
    float d = h2f(d16), dmin = h2f(dmin16);
    for (int e = 0; e < 256; e++) y[e] = d * (float)sc[e / 32] * (float)q[e] - dmin * (float)mn[e / 32];
}

static void dequantize_q4_k(const void *src, float *y, int n)
{
    const quant_block_q4_k *b = src;
    for (int i = 0; i < n / 256; i++, y += 256)
        dequantize_q45_k(b[i].scales, b[i].qs, NULL, b[i].d, b[i].dmin, y);
}

static void dequantize_q5_k(const void *src, float *y, int n)
{
    const quant_block_q5_k *b = src;
    for (int i = 0; i < n / 256; i++, y += 256)
        dequantize_q45_k(b[i].scales, b[i].qs, b[i].qh, b[i].d, b[i].dmin, y);
}

static void dequantize_q6_k(const void *src, float *y, int n)
{
    const quant_block_q6_k *b = src;
    int8_t q[256];
    for (int i = 0; i < n / 256; i++, y += 256) {
        unpack_q6_k(&b[i], q);
        float d = h2f(b[i].d);
        for (int e = 0; e < 256; e++) y[e] = d * (float)b[i].scales[e / 16] * (float)q[e];
    }
}

/* ======================================================================== */
/* quantizers: 32-blocks                                                     */
/* ======================================================================== */

/* The value of largest magnitude, with its sign (0 for an all-zero block). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    return max;
}

/* Symmetric 32-blocks (Q4_0: half = 8, Q5_0: half = 16): the extreme value
 * maps to level 0 (= -half), which uses the side with one more level. The
 * levels are rounded against the fp16-rounded scale actually stored. */
static float quantize_sym32(const float *x, int half, uint8_t q[32], uint16_t *d_out)
{
    float d = signed_absmax(x, 32) / (float)-half;
    *d_out = f2h(d);
    float dq = h2f(*d_out);
    float id = dq != 0 ? 1.0f / dq : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)round_clamp(x[j] * id + (float)half, 0, 2 * half - 1);
    return dq;
}

/* Min/max 32-blocks (Q4_1: nmax = 15, Q5_1: 31). */
static void quantize_minmax32(const float *x, int nmax, uint8_t q[32], uint16_t *d_out,
                              uint16_t *m_out)
{
    float min = x[0], max = x[0];
    for (int j = 1; j < 32; j++) {
        min = x[j] < min ? x[j] : min;
        max = x[j] > max ? x[j] : max;
    }
    *d_out = f2h((max - min) / (float)nmax);
    *m_out = f2h(min);
    float dq = h2f(*d_out), mq = h2f(*m_out);
    float id = dq != 0 ? 1.0f / dq : 0.0f;
    for (int j = 0; j < 32; j++) q[j] = (uint8_t)round_clamp((x[j] - mq) * id, 0, nmax);
}

static void pack_nibbles32(const uint8_t q[32], uint8_t qs[16])
{
    for (int j = 0; j < 16; j++) qs[j] = (uint8_t)((q[j] & 15) | (q[j + 16] & 15) << 4);
}

static void pack_qh32(const uint8_t q[32], uint8_t qh[4])
{
    uint32_t bits = 0;
    for (int j = 0; j < 32; j++) bits |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++) qh[k] = (uint8_t)(bits >> (8 * k));
}

static void quantize_q4_0(const float *x, void *dst, int n)
{
    quant_block_q4_0 *b = dst;
    uint8_t q[32];
    for (int i = 0; i < n / 32; i++, x += 32) {
        quantize_sym32(x, 8, q, &b[i].d);
        pack_nibbles32(q, b[i].qs);
    }
}

static void quantize_q4_1(const float *x, void *dst, int n)
{
    quant_block_q4_1 *b = dst;
    uint8_t q[32];
    for (int i = 0; i < n / 32; i++, x += 32) {
        quantize_minmax32(x, 15, q, &b[i].d, &b[i].m);
        pack_nibbles32(q, b[i].qs);
    }
}

static void quantize_q5_0(const float *x, void *dst, int n)
{
    quant_block_q5_0 *b = dst;
    uint8_t q[32];
    for (int i = 0; i < n / 32; i++, x += 32) {
        quantize_sym32(x, 16, q, &b[i].d);
        pack_nibbles32(q, b[i].qs);
        pack_qh32(q, b[i].qh);
    }
}

static void quantize_q5_1(const float *x, void *dst, int n)
{
    quant_block_q5_1 *b = dst;
    uint8_t q[32];
    for (int i = 0; i < n / 32; i++, x += 32) {
        quantize_minmax32(x, 31, q, &b[i].d, &b[i].m);
        pack_nibbles32(q, b[i].qs);
        pack_qh32(q, b[i].qh);
    }
}

/* ======================================================================== */
/* quantizers: K-quant sub-block searches                                    */
/* ======================================================================== */

/* Asymmetric: x ~ scale * L - mn with L in 0..nmax, mn >= 0 (the min is
 * never above 0, as ggml's layout assumes). Tries the min/max scale and
 * ntry scales around it; for each rounding, refits (scale, min) by weighted
 * least squares and keeps the fit with the lowest weighted squared error.
 * Returns scale >= 0; *mn_out >= 0. */
static float search_asym(int n, int nmax, const float *x, const float *w, uint8_t *L,
                         float *mn_out, float rmin, float rdelta, int ntry)
{
    float min = x[0], max = x[0];
    for (int i = 1; i < n; i++) {
        min = x[i] < min ? x[i] : min;
        max = x[i] > max ? x[i] : max;
    }
    if (min > 0) min = 0;
    if (!(max > min)) { /* constant block (or NaN): all levels 0 */
        memset(L, 0, (size_t)n);
        *mn_out = -min;
        return 0;
    }
    float iscale = (float)nmax / (max - min), scale = 1.0f / iscale;
    float best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)round_clamp(iscale * (x[i] - min), 0, nmax);
        float diff = scale * L[i] + min - x[i];
        best += w[i] * diff * diff;
    }
    uint8_t Laux[32];
    assert(n <= 32);
    for (int t = 0; t <= ntry; t++) {
        iscale = (rmin + rdelta * (float)t + (float)nmax) / (max - min);
        double sw = 0, sl = 0, sl2 = 0, sx = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            int l = round_clamp(iscale * (x[i] - min), 0, nmax);
            Laux[i] = (uint8_t)l;
            sw += w[i];
            sl += w[i] * l;
            sl2 += w[i] * l * l;
            sx += w[i] * x[i];
            sxl += w[i] * l * x[i];
        }
        double det = sw * sl2 - sl * sl;
        if (!(det > 0)) continue;
        float s = (float)((sw * sxl - sx * sl) / det);
        float m = (float)((sl2 * sx - sl * sxl) / det);
        if (m > 0) { /* the layout cannot add: refit the scale alone with min 0 */
            m = 0;
            s = sl2 > 0 ? (float)(sxl / sl2) : 0;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * Laux[i] + m - x[i];
            err += w[i] * diff * diff;
        }
        if (err < best && s >= 0) {
            best = err;
            memcpy(L, Laux, (size_t)n);
            scale = s;
            min = m;
        }
    }
    *mn_out = -min;
    return scale;
}

/* Symmetric: x ~ scale * L with L in -nmax..nmax-1. Candidate scales map the
 * signed extreme to -nmax (+-0.1 steps); each is refit by weighted least
 * squares (weights x^2, favouring the large values that matter most in a dot
 * product); the fit with the lowest error wins. Returns the scale (may be
 * negative: the sign is part of it). */
static float search_sym(int n, int nmax, const float *x, int8_t *L)
{
    float max = signed_absmax(x, n);
    if (max == 0 || !(fabsf(max) < INFINITY)) {
        memset(L, 0, (size_t)n);
        return 0;
    }
    float best_scale = 0, best_err = INFINITY;
    int8_t Laux[32];
    assert(n <= 32);
    for (int t = -9; t <= 9; t++) {
        float iscale = -((float)nmax + 0.1f * (float)t) / max;
        double slx = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            int l = round_clamp(iscale * x[i], -nmax, nmax - 1);
            Laux[i] = (int8_t)l;
            double w = (double)x[i] * x[i];
            slx += w * l * x[i];
            sl2 += w * l * l;
        }
        if (!(sl2 > 0)) continue;
        float s = (float)(slx / sl2);
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = s * Laux[i] - x[i];
            err += x[i] * x[i] * diff * diff;
        }
        if (err < best_err) {
            best_err = err;
            best_scale = s;
            memcpy(L, Laux, (size_t)n);
        }
    }
    return best_scale;
}

/* ======================================================================== */
/* quantizers: K-quant super-blocks                                          */
/* ======================================================================== */

/* Asymmetric super-block (Q2_K: 16 sub-blocks of 16, levels 0..3, 4-bit
 * scales; Q4_K/Q5_K: 8 of 32, levels 0..nmax, 6-bit): each sub-block is
 * searched with weights w, then its scale and min are quantized to 0..smax
 * against the fp16 super-scales (the largest maps to smax), and the levels
 * are re-rounded with the scales actually stored. ls, lm: the sub-block
 * scales and mins, for the caller to pack. */
static void quantize_asym_k(const float *x, const float *w, int sub, int nmax, int smax,
                            float rmin, int ntry, uint16_t *d_out, uint16_t *dmin_out,
                            int ls[16], int lm[16], uint8_t L[256])
{
    int n_sub = 256 / sub;
    float scale[16], mn[16], max_scale = 0, max_mn = 0;
    assert(n_sub <= 16);
    for (int s = 0; s < n_sub; s++) {
        scale[s] = search_asym(sub, nmax, x + sub * s, w + sub * s, L + sub * s, &mn[s], rmin, 0.1f, ntry);
        max_scale = scale[s] > max_scale ? scale[s] : max_scale;
        max_mn = mn[s] > max_mn ? mn[s] : max_mn;
    }
    *d_out = f2h(max_scale / (float)smax);
    *dmin_out = f2h(max_mn / (float)smax);
    float d = h2f(*d_out), dmin = h2f(*dmin_out);
    for (int s = 0; s < n_sub; s++) {
        ls[s] = d > 0 ? round_clamp(scale[s] / d, 0, smax) : 0;
        lm[s] = dmin > 0 ? round_clamp(mn[s] / dmin, 0, smax) : 0;
        float dl = d * (float)ls[s], ml = dmin * (float)lm[s];
        for (int j = 0; j < sub; j++)
            L[sub * s + j] = dl > 0 ? (uint8_t)round_clamp((x[sub * s + j] + ml) / dl, 0, nmax) : 0;
    }
}

/* Symmetric super-block of 16 sub-blocks of 16 (Q3_K: levels -4..3, 6-bit
 * signed scales; Q6_K: -32..31, int8 scales): each sub-block is searched,
 * then the scales are quantized to -smax..smax-1 against one fp16 d (the
 * largest in magnitude maps to -smax), and the levels re-rounded with the
 * scales actually stored. ls: the sub-block scales, for the caller to pack. */
static void quantize_sym_k(const float *x, int nmax, int smax, uint16_t *d_out, int ls[16],
                           int8_t L[256])
{
    float scale[16], max_scale = 0, amax = 0;
    for (int s = 0; s < 16; s++) {
        scale[s] = search_sym(16, nmax, x + 16 * s, L + 16 * s);
        if (fabsf(scale[s]) > amax) {
            amax = fabsf(scale[s]);
            max_scale = scale[s];
        }
    }
    float iscale = max_scale != 0 ? -(float)smax / max_scale : 0;
    *d_out = f2h(max_scale != 0 ? 1.0f / iscale : 0);
    float d = h2f(*d_out);
    for (int s = 0; s < 16; s++) {
        ls[s] = round_clamp(iscale * scale[s], -smax, smax - 1);
        float dl = d * (float)ls[s];
        for (int j = 0; j < 16; j++)
            L[16 * s + j] = dl != 0 ? (int8_t)round_clamp(x[16 * s + j] / dl, -nmax, nmax - 1) : 0;
    }
}

/* ======================================================================== */
/* quantizers: K-quants                                                      */
/* ======================================================================== */

static void quantize_q2_k(const float *x, void *dst, int n)
{
    quant_block_q2_k *b = dst;
    uint8_t L[256];
    float w[256];
    int ls[16], lm[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        for (int e = 0; e < 256; e++) w[e] = fabsf(x[e]);
        memset(&b[i], 0, sizeof b[i]);
        quantize_asym_k(x, w, 16, 3, 15, -0.5f, 15, &b[i].d, &b[i].dmin, ls, lm, L);
        for (int s = 0; s < 16; s++) b[i].scales[s] = (uint8_t)(ls[s] | lm[s] << 4);
        for (int e = 0; e < 256; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            b[i].qs[32 * h + l] |= (uint8_t)(L[e] << (2 * k));
        }
    }
}

static void quantize_q3_k(const float *x, void *dst, int n)
{
    quant_block_q3_k *b = dst;
    int8_t L[256];
    int ls[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        memset(&b[i], 0, sizeof b[i]);
        quantize_sym_k(x, 4, 32, &b[i].d, ls, L);
        for (int s = 0; s < 16; s++) { /* 6-bit scales, stored as ls + 32 */
            int u = ls[s] + 32;
            if (s < 8) b[i].scales[s] = (uint8_t)(u & 15);
            else b[i].scales[s - 8] |= (uint8_t)((u & 15) << 4);
            b[i].scales[8 + s % 4] |= (uint8_t)((u >> 4) << (2 * (s / 4)));
        }
        for (int e = 0; e < 256; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            int u = L[e] + 4;
            b[i].qs[32 * h + l] |= (uint8_t)((u & 3) << (2 * k));
            if (u & 4) b[i].hmask[l] |= (uint8_t)(1u << (4 * h + k));
        }
    }
}

/* Q4_K and Q5_K share everything but the level count and the fifth bit. */
static void quantize_q45_k(const float *x, int nmax, uint16_t *d_out, uint16_t *dmin_out,
                           uint8_t scales[12], uint8_t L[256])
{
    float sumx2 = 0;
    for (int e = 0; e < 256; e++) sumx2 += x[e] * x[e];
    float av = sqrtf(sumx2 / 256), w[256];
    for (int e = 0; e < 256; e++) w[e] = av + fabsf(x[e]);
    int ls[16], lm[16];
    quantize_asym_k(x, w, 32, nmax, 63, -1.0f, 20, d_out, dmin_out, ls, lm, L);
    memset(scales, 0, 12);
    for (int s = 0; s < 8; s++) pack_scale_min_k4(scales, s, ls[s], lm[s]);
}

static void pack_nibbles_k(const uint8_t L[256], uint8_t qs[128])
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((L[64 * c + l] & 15) | (L[64 * c + 32 + l] & 15) << 4);
}

static void quantize_q4_k(const float *x, void *dst, int n)
{
    quant_block_q4_k *b = dst;
    uint8_t L[256];
    for (int i = 0; i < n / 256; i++, x += 256) {
        quantize_q45_k(x, 15, &b[i].d, &b[i].dmin, b[i].scales, L);
        pack_nibbles_k(L, b[i].qs);
    }
}

static void quantize_q5_k(const float *x, void *dst, int n)
{
    quant_block_q5_k *b = dst;
    uint8_t L[256];
    for (int i = 0; i < n / 256; i++, x += 256) {
        quantize_q45_k(x, 31, &b[i].d, &b[i].dmin, b[i].scales, L);
        pack_nibbles_k(L, b[i].qs);
        memset(b[i].qh, 0, sizeof b[i].qh);
        for (int e = 0; e < 256; e++) b[i].qh[e % 32] |= (uint8_t)(((L[e] >> 4) & 1) << (e / 32));
    }
}

static void quantize_q6_k(const float *x, void *dst, int n)
{
    quant_block_q6_k *b = dst;
    int8_t L[256];
    int ls[16];
    for (int i = 0; i < n / 256; i++, x += 256) {
        memset(&b[i], 0, sizeof b[i]);
        quantize_sym_k(x, 32, 128, &b[i].d, ls, L);
        for (int s = 0; s < 16; s++) b[i].scales[s] = (int8_t)ls[s];
        for (int e = 0; e < 256; e++) {
            int h = e / 128, k = (e % 128) / 32, l = e % 32;
            int u = L[e] + 32;
            b[i].ql[64 * h + l + 32 * (k & 1)] |= (uint8_t)((u & 15) << (k < 2 ? 0 : 4));
            b[i].qh[32 * h + l] |= (uint8_t)((u >> 4) << (2 * k));
        }
    }
}

void quant_quantize_row_q8_k(const float *x, quant_block_q8_k *out, int n)
{
    assert(n % QUANT_K == 0);
    for (int i = 0; i < n / QUANT_K; i++, x += QUANT_K) {
        float amax = 0;
        for (int j = 0; j < QUANT_K; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        out[i].d = d;
        for (int j = 0; j < QUANT_K; j++) out[i].qs[j] = (int8_t)round_clamp(x[j] * id, -127, 127);
        for (int g = 0; g < QUANT_K / 16; g++) {
            int sum = 0;
            for (int j = 0; j < 16; j++) sum += out[i].qs[16 * g + j];
            out[i].bsums[g] = (int16_t)sum;
        }
    }
}

/* ======================================================================== */
/* scalar dot products                                                       */
/* ======================================================================== */

static inline int32_t idot(const int8_t *a, const int8_t *b, int n)
{
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += (int32_t)a[i] * b[i];
    return s;
}

static inline int32_t isum8(const int8_t *a, int n)
{
    int32_t s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}

/* Q4_0's canonical order (docs/engine.md, "Row lanes"), which every Q4_0
 * kernel of every ISA follows, so they all give these bits: per block in
 * order, acc = fma(exact integer dot, d_w * d_y, acc). */
static float dot_q4_0_scalar(const void *w, const void *act, int n)
{
    const quant_block_q4_0 *b = w;
    const kernel_block_q8_0 *y = act;
    float acc = 0;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++) {
        unpack_q4_0(&b[i], q);
        float d = h2f(b[i].d) * h2f(y[i].d);
        acc = fmaf((float)idot(q, y[i].qs, 32), d, acc);
    }
    return acc;
}

/* sum (d q + m) * dy qy = d dy sum(q qy) + m dy sum(qy) */
static float dot_q4_1_scalar(const void *w, const void *act, int n)
{
    const quant_block_q4_1 *b = w;
    const kernel_block_q8_0 *y = act;
    float sum = 0;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++) {
        unpack_q4_1(&b[i], q);
        float dy = h2f(y[i].d);
        sum += (float)idot(q, y[i].qs, 32) * (h2f(b[i].d) * dy) +
               (float)isum8(y[i].qs, 32) * (h2f(b[i].m) * dy);
    }
    return sum;
}

static float dot_q5_0_scalar(const void *w, const void *act, int n)
{
    const quant_block_q5_0 *b = w;
    const kernel_block_q8_0 *y = act;
    float sum = 0;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++) { /* the canonical order (dot_q4_0_scalar) */
        unpack_q5(b[i].qh, b[i].qs, 16, q);
        float d = h2f(b[i].d) * h2f(y[i].d);
        sum = fmaf((float)idot(q, y[i].qs, 32), d, sum);
    }
    return sum;
}

static float dot_q5_1_scalar(const void *w, const void *act, int n)
{
    const quant_block_q5_1 *b = w;
    const kernel_block_q8_0 *y = act;
    float sum = 0;
    int8_t q[32];
    for (int i = 0; i < n / 32; i++) {
        unpack_q5(b[i].qh, b[i].qs, 0, q);
        float dy = h2f(y[i].d);
        sum += (float)idot(q, y[i].qs, 32) * (h2f(b[i].d) * dy) +
               (float)isum8(y[i].qs, 32) * (h2f(b[i].m) * dy);
    }
    return sum;
}

/* K-quants: per super-block, integer sums per sub-block weighted by the
 * integer sub-block scales (exact in int32), then the canonical float steps
 * (quant_k_fma, quants.h): sum = d dy sum_s sc_s sum(q qy) - dmin dy sum_s
 * mn_s sum(qy), the second sum coming from Q8_K's precomputed bsums. */
static float dot_q2_k_scalar(const void *w, const void *act, int n)
{
    const quant_block_q2_k *b = w;
    const quant_block_q8_k *y = act;
    float sum = 0;
    int8_t q[256];
    uint8_t sc[16], mn[16];
    for (int i = 0; i < n / 256; i++) {
        unpack_q2_k(&b[i], q, sc, mn);
        int32_t isum = 0, msum = 0;
        for (int s = 0; s < 16; s++) {
            isum += sc[s] * idot(q + 16 * s, y[i].qs + 16 * s, 16);
            msum += mn[s] * y[i].bsums[s];
        }
        sum = quant_k_fma(sum, isum, h2f(b[i].d), y[i].d);
        sum = quant_k_fma(sum, -msum, h2f(b[i].dmin), y[i].d);
    }
    return sum;
}

static float dot_q3_k_scalar(const void *w, const void *act, int n)
{
    const quant_block_q3_k *b = w;
    const quant_block_q8_k *y = act;
    float sum = 0;
    int8_t q[256], sc[16];
    for (int i = 0; i < n / 256; i++) {
        unpack_q3_k(&b[i], q, sc);
        int32_t isum = 0;
        for (int s = 0; s < 16; s++) isum += sc[s] * idot(q + 16 * s, y[i].qs + 16 * s, 16);
        sum = quant_k_fma(sum, isum, h2f(b[i].d), y[i].d);
    }
    return sum;
}

static float dot_q45_k_block(float acc, const int8_t q[256], const uint8_t sc[8], const uint8_t mn[8],
                             float d, float dmin, const quant_block_q8_k *y)
{
    int32_t isum = 0, msum = 0;
    for (int s = 0; s < 8; s++) {
        isum += sc[s] * idot(q + 32 * s, y->qs + 32 * s, 32);
        msum += mn[s] * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    acc = quant_k_fma(acc, isum, d, y->d);
    return quant_k_fma(acc, -msum, dmin, y->d);
}

static float dot_q4_k_scalar(const void *w, const void *act, int n)
{
    const quant_block_q4_k *b = w;
    const quant_block_q8_k *y = act;
    float sum = 0;
    int8_t q[256];
    uint8_t sc[8], mn[8];
    for (int i = 0; i < n / 256; i++) {
        unpack_q45_k(b[i].scales, b[i].qs, NULL, q, sc, mn);
        sum = dot_q45_k_block(sum, q, sc, mn, h2f(b[i].d), h2f(b[i].dmin), &y[i]);
    }
    return sum;
}

static float dot_q5_k_scalar(const void *w, const void *act, int n)
{
    const quant_block_q5_k *b = w;
    const quant_block_q8_k *y = act;
    float sum = 0;
    int8_t q[256];
    uint8_t sc[8], mn[8];
    for (int i = 0; i < n / 256; i++) {
        unpack_q45_k(b[i].scales, b[i].qs, b[i].qh, q, sc, mn);
        sum = dot_q45_k_block(sum, q, sc, mn, h2f(b[i].d), h2f(b[i].dmin), &y[i]);
    }
    return sum;
}

static float dot_q6_k_scalar(const void *w, const void *act, int n)
{
    const quant_block_q6_k *b = w;
    const quant_block_q8_k *y = act;
    float sum = 0;
    int8_t q[256];
    for (int i = 0; i < n / 256; i++) {
        unpack_q6_k(&b[i], q);
        int32_t isum = 0;
        for (int s = 0; s < 16; s++) isum += b[i].scales[s] * idot(q + 16 * s, y[i].qs + 16 * s, 16);
        sum = quant_k_fma(sum, isum, h2f(b[i].d), y[i].d);
    }
    return sum;
}

/* ======================================================================== */
/* the row-lane layout (quants.h, docs/engine.md "K-quants in row lanes")    */
/* ======================================================================== */

/* The same bytes as the group's GGUF blocks, moved (both directions: the
 * walks below, to_lanes 1: block -> group, 0: group -> block). */
#define LANES_Q4_K_BYTES (QUANT_LANES * sizeof(quant_block_q4_k))
#define LANES_Q6_K_BYTES (QUANT_LANES * sizeof(quant_block_q6_k))
#define LANES_MOVE(lane, blk, bytes) \
    memcpy(to_lanes ? (void *)(lane) : (void *)(blk), to_lanes ? (void *)(blk) : (void *)(lane), bytes)
_Static_assert(LANES_Q4_K_BYTES == 256 + 2048, "Q4_K lanes: header then levels");
_Static_assert(LANES_Q6_K_BYTES == 288 + 2 * 1536, "Q6_K lanes: header, then per half ql and qh");

size_t quant_lanes_block_bytes(ggml_type t)
{
    return t == GGML_TYPE_Q4_K ? LANES_Q4_K_BYTES : t == GGML_TYPE_Q6_K ? LANES_Q6_K_BYTES : 0;
}

/* One block of row r <-> its places in a group's super-block g: one walk
 * for both directions, so they cannot disagree about an address. */
static void lanes_q4_k(quant_block_q4_k *b, uint8_t *g, int r, int to_lanes)
{
    LANES_MOVE(g + 2 * r, &b->d, 2);
    LANES_MOVE(g + 32 + 2 * r, &b->dmin, 2);
    for (int k = 0; k < 3; k++) LANES_MOVE(g + 64 + 64 * k + 4 * r, b->scales + 4 * k, 4);
    for (int c = 0; c < 4; c++)
        for (int q = 0; q < 8; q++) LANES_MOVE(g + 256 + 512 * c + 64 * q + 4 * r, b->qs + 32 * c + 4 * q, 4);
}

static void lanes_q6_k(quant_block_q6_k *b, uint8_t *g, int r, int to_lanes)
{
    LANES_MOVE(g + 2 * r, &b->d, 2);
    for (int s = 0; s < 16; s++) LANES_MOVE(g + 32 + 16 * s + r, &b->scales[s], 1);
    for (int h = 0; h < 2; h++)
        for (int q = 0; q < 8; q++) {
            uint8_t *half = g + 288 + 1536 * h; /* in the order the kernel first reads them */
            LANES_MOVE(half + 128 * q + 4 * r, b->ql + 64 * h + 4 * q, 4);
            LANES_MOVE(half + 128 * q + 64 + 4 * r, b->qh + 32 * h + 4 * q, 4);
            LANES_MOVE(half + 1024 + 64 * q + 4 * r, b->ql + 64 * h + 32 + 4 * q, 4);
        }
}
#undef LANES_MOVE

void quant_lanes_pack(ggml_type t, const void *src, size_t stride, int n, void *dst)
{
    size_t gb = quant_lanes_block_bytes(t), bb = t == GGML_TYPE_Q4_K ? sizeof(quant_block_q4_k) : sizeof(quant_block_q6_k);
    assert(gb && n % QUANT_K == 0);
    for (int r = 0; r < QUANT_LANES; r++)
        for (int i = 0; i < n / QUANT_K; i++) {
            uint8_t blk[sizeof(quant_block_q6_k)]; /* a copy: the walk takes a writable block */
            memcpy(blk, (const uint8_t *)src + r * stride + i * bb, bb);
            uint8_t *g = (uint8_t *)dst + i * gb;
            if (t == GGML_TYPE_Q4_K)
                lanes_q4_k((quant_block_q4_k *)blk, g, r, 1);
            else
                lanes_q6_k((quant_block_q6_k *)blk, g, r, 1);
        }
}

void quant_lanes_row(ggml_type t, const void *group, int r, int n, void *dst)
{
    size_t gb = quant_lanes_block_bytes(t);
    assert(gb && n % QUANT_K == 0 && r >= 0 && r < QUANT_LANES);
    for (int i = 0; i < n / QUANT_K; i++) {
        uint8_t *g = (uint8_t *)group + i * gb; /* read only: to_lanes 0 writes the block */
        if (t == GGML_TYPE_Q4_K)
            lanes_q4_k((quant_block_q4_k *)dst + i, g, r, 0);
        else
            lanes_q6_k((quant_block_q6_k *)dst + i, g, r, 0);
    }
}

/* ======================================================================== */
/* AVX2 dot products                                                         */
/* ======================================================================== */

#ifdef QUANTS_HAVE_AVX2
/* Every kernel unpacks a block's levels into int8 lanes and multiplies them
 * with the activations by maddubs (unsigned x signed bytes -> int16 pair
 * sums, then madd -> int32). Unsigned levels (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K,
 * and Q3_K/Q6_K before their offset) go straight in; Q4_0/Q5_0's signed levels
 * use the sign trick of kernels.c (|w| * (x with w's sign)), exact because
 * activations stay in [-127, 127]. Q3_K and Q6_K subtract their offset as
 * offset * sum(x) per sub-block, from Q8_K's bsums. Bounds: a pair sum is at
 * most 2 * 63 * 127 < 2^15; with 6-bit scales per-block int32 sums stay far
 * below 2^31. */
#define AVX2_TARGET __attribute__((target("avx2,fma,f16c")))

AVX2_TARGET static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2_TARGET static inline __m256i pair_lanes(__m128i lo, __m128i hi)
{
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high. */
AVX2_TARGET static inline __m256i nibbles32(const uint8_t *qs)
{
    __m128i b = _mm_loadu_si128((const __m128i *)qs);
    __m128i m = _mm_set1_epi8(15);
    return pair_lanes(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m));
}

/* Byte i of the result is 0x10 when bit i of the 32-bit word is set. */
AVX2_TARGET static inline __m256i bit4_from_bits32(uint32_t bits)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i mask = _mm256_set1_epi64x(0x8040201008040201LL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, mask), mask);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* Signed w (any int8) times y (in [-127, 127]): 8 int32 partial sums. */
AVX2_TARGET static inline __m256i dot_s8(__m256i w, __m256i y)
{
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

/* Unsigned w (0..63) times y: 16 int16 pair sums. */
AVX2_TARGET static inline __m256i dot_u8_16(__m256i w, __m256i y) { return _mm256_maddubs_epi16(w, y); }

AVX2_TARGET static inline __m256i sum_s8(__m256i y)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), y), _mm256_set1_epi16(1));
}

/* One block of the canonical order: the block's integer dot p summed across
 * its 8 lanes (exact), then acc = fma(sum, d_w * d_y, acc), one rounding. */
AVX2_TARGET static inline __m128 block_fma_ss(__m256i p, uint16_t dw, uint16_t dy, __m128 acc)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_fmadd_ss(_mm_cvtepi32_ps(s), _mm_set_ss(_cvtsh_ss(dw) * _cvtsh_ss(dy)), acc);
}

/* The canonical order (dot_q4_0_scalar): the block's integer dot summed
 * across the lanes (exact), then one scalar fma per block. */
AVX2_TARGET static float dot_q4_0_avx2(const void *w, const void *act, int n)
{
    const quant_block_q4_0 *b = w;
    const kernel_block_q8_0 *y = act;
    __m128 acc = _mm_setzero_ps();
    for (int i = 0; i < n / 32; i++) {
        __m256i q = _mm256_sub_epi8(nibbles32(b[i].qs), _mm256_set1_epi8(8));
        acc = block_fma_ss(dot_s8(q, _mm256_loadu_si256((const __m256i *)y[i].qs)), b[i].d, y[i].d, acc);
    }
    return _mm_cvtss_f32(acc);
}

/* The canonical order (dot_q4_0_avx2). */
AVX2_TARGET static float dot_q5_0_avx2(const void *w, const void *act, int n)
{
    const quant_block_q5_0 *b = w;
    const kernel_block_q8_0 *y = act;
    __m128 acc = _mm_setzero_ps();
    for (int i = 0; i < n / 32; i++) {
        __m256i q = _mm256_or_si256(nibbles32(b[i].qs), bit4_from_bits32(load_u32(b[i].qh)));
        q = _mm256_sub_epi8(q, _mm256_set1_epi8(16));
        acc = block_fma_ss(dot_s8(q, _mm256_loadu_si256((const __m256i *)y[i].qs)), b[i].d, y[i].d, acc);
    }
    return _mm_cvtss_f32(acc);
}

/* Q4_1 / Q5_1: d dy sum(q y) + m dy sum(y). */
AVX2_TARGET static inline __m256 minmax_block(__m256 acc, __m256i q, const kernel_block_q8_0 *y,
                                             float d, float m)
{
    __m256i yv = _mm256_loadu_si256((const __m256i *)y->qs);
    __m256i p = _mm256_madd_epi16(dot_u8_16(q, yv), _mm256_set1_epi16(1));
    float dy = _cvtsh_ss(y->d);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * dy), acc);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum_s8(yv)), _mm256_set1_ps(m * dy), acc);
}

AVX2_TARGET static float dot_q4_1_avx2(const void *w, const void *act, int n)
{
    const quant_block_q4_1 *b = w;
    const kernel_block_q8_0 *y = act;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / 32; i++)
        acc = minmax_block(acc, nibbles32(b[i].qs), &y[i], _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].m));
    return hsum_ps(acc);
}

AVX2_TARGET static float dot_q5_1_avx2(const void *w, const void *act, int n)
{
    const quant_block_q5_1 *b = w;
    const kernel_block_q8_0 *y = act;
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n / 32; i++) {
        __m256i q = _mm256_or_si256(nibbles32(b[i].qs), bit4_from_bits32(load_u32(b[i].qh)));
        acc = minmax_block(acc, q, &y[i], _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].m));
    }
    return hsum_ps(acc);
}

/* 32 unsigned levels covering two 16-element sub-blocks with scales sa, sb:
 * int32 sums of sc * q * y. */
AVX2_TARGET static inline __m256i scaled16x2(__m256i q, const int8_t *y, int sa, int sb)
{
    __m256i p = dot_u8_16(q, _mm256_loadu_si256((const __m256i *)y));
    __m256i sc = pair_lanes(_mm_set1_epi16((short)sa), _mm_set1_epi16((short)sb));
    return _mm256_madd_epi16(p, sc);
}

AVX2_TARGET static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
    return _mm_cvtsi128_si32(s);
}

/* The end of every K-quant block: the lanes' exact integer sum, then the
 * canonical float steps (quant_k_fma, quants.h). With mins (Q2_K, Q4_K,
 * Q5_K): the levels' term, then the mins'. */
AVX2_TARGET static inline float k_end_mins(float acc, __m256i isum, int32_t msum, float dy, float d, float dmin)
{
    acc = quant_k_fma(acc, hsum_epi32(isum), d, dy);
    return quant_k_fma(acc, -msum, dmin, dy);
}

/* With an offset (Q3_K, Q6_K): it comes off the integer sum. */
AVX2_TARGET static inline float k_end_offset(float acc, __m256i isum, int32_t offs, float dy, float d)
{
    return quant_k_fma(acc, hsum_epi32(isum) - offs, d, dy);
}

AVX2_TARGET static float dot_q2_k_avx2(const void *w, const void *act, int n)
{
    const quant_block_q2_k *b = w;
    const quant_block_q8_k *y = act;
    const __m256i m3 = _mm256_set1_epi8(3);
    float acc = 0;
    for (int i = 0; i < n / 256; i++) {
        __m256i isum = _mm256_setzero_si256();
        int32_t msum = 0;
        for (int s = 0; s < 16; s++) msum += (b[i].scales[s] >> 4) * y[i].bsums[s];
        for (int h = 0; h < 2; h++) {
            __m256i bits = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i q = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                int s = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, scaled16x2(q, y[i].qs + 128 * h + 32 * k,
                                                         b[i].scales[s] & 15, b[i].scales[s + 1] & 15));
            }
        }
        acc = k_end_mins(acc, isum, msum, y[i].d, _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].dmin));
    }
    return acc;
}

AVX2_TARGET static float dot_q3_k_avx2(const void *w, const void *act, int n)
{
    const quant_block_q3_k *b = w;
    const quant_block_q8_k *y = act;
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    float acc = 0;
    for (int i = 0; i < n / 256; i++) {
        int sc[16];
        int32_t osum = 0;
        for (int s = 0; s < 16; s++) {
            sc[s] = scale_q3_k(b[i].scales, s);
            osum += sc[s] * y[i].bsums[s];
        }
        __m256i hm = _mm256_loadu_si256((const __m256i *)b[i].hmask);
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i bits = _mm256_loadu_si256((const __m256i *)(b[i].qs + 32 * h));
            for (int k = 0; k < 4; k++) {
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bits, 2 * k), m3);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), one);
                __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2)); /* 0..7 */
                int s = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, scaled16x2(q, y[i].qs + 128 * h + 32 * k, sc[s], sc[s + 1]));
            }
        }
        acc = k_end_offset(acc, isum, 4 * osum, y[i].d, _cvtsh_ss(b[i].d));
    }
    return acc;
}

/* Q4_K / Q5_K: chunk c holds sub-blocks 2c (low nibbles) and 2c + 1 (high);
 * qh (Q5_K, may be NULL) adds bit s of each byte as the fifth bit. */
AVX2_TARGET static inline float q45_k_block(float acc, const uint8_t *scales, const uint8_t *qs,
                                            const uint8_t *qh, const quant_block_q8_k *y,
                                            float d, float dmin)
{
    const __m256i m15 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    uint8_t sc[8], mn[8];
    int32_t msum = 0;
    for (int s = 0; s < 8; s++) {
        scale_min_k4(scales, s, &sc[s], &mn[s]);
        msum += mn[s] * (y->bsums[2 * s] + y->bsums[2 * s + 1]);
    }
    __m256i hbits = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256i isum = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(bytes, m15);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), m15);
        if (qh) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 2 * c + 1), one), 4));
        }
        __m256i plo = dot_u8_16(lo, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c)));
        __m256i phi = dot_u8_16(hi, _mm256_loadu_si256((const __m256i *)(y->qs + 64 * c + 32)));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(plo, _mm256_set1_epi16(sc[2 * c])));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(phi, _mm256_set1_epi16(sc[2 * c + 1])));
    }
    return k_end_mins(acc, isum, msum, y->d, d, dmin);
}

AVX2_TARGET static float dot_q4_k_avx2(const void *w, const void *act, int n)
{
    const quant_block_q4_k *b = w;
    const quant_block_q8_k *y = act;
    float acc = 0;
    for (int i = 0; i < n / 256; i++)
        acc = q45_k_block(acc, b[i].scales, b[i].qs, NULL, &y[i], _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].dmin));
    return acc;
}

AVX2_TARGET static float dot_q5_k_avx2(const void *w, const void *act, int n)
{
    const quant_block_q5_k *b = w;
    const quant_block_q8_k *y = act;
    float acc = 0;
    for (int i = 0; i < n / 256; i++)
        acc = q45_k_block(acc, b[i].scales, b[i].qs, b[i].qh, &y[i], _cvtsh_ss(b[i].d), _cvtsh_ss(b[i].dmin));
    return acc;
}

AVX2_TARGET static float dot_q6_k_avx2(const void *w, const void *act, int n)
{
    const quant_block_q6_k *b = w;
    const quant_block_q8_k *y = act;
    const __m256i m15 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    float acc = 0;
    for (int i = 0; i < n / 256; i++) {
        const int8_t *sc = b[i].scales;
        int32_t osum = 0;
        for (int s = 0; s < 16; s++) osum += sc[s] * y[i].bsums[s];
        __m256i isum = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b[i].ql + 64 * h + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)(b[i].qh + 32 * h));
            __m256i lows[4] = {
                _mm256_and_si256(l0, m15), _mm256_and_si256(l1, m15),
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m15),
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m15),
            };
            for (int k = 0; k < 4; k++) {
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), m3);
                __m256i q = _mm256_or_si256(lows[k], _mm256_slli_epi16(hi, 4)); /* 0..63 */
                int s = 8 * h + 2 * k;
                isum = _mm256_add_epi32(isum, scaled16x2(q, y[i].qs + 128 * h + 32 * k, sc[s], sc[s + 1]));
            }
        }
        acc = k_end_offset(acc, isum, 32 * osum, y[i].d, _cvtsh_ss(b[i].d));
    }
    return acc;
}
#endif /* QUANTS_HAVE_AVX2 */

/* ======================================================================== */
/* the type table                                                            */
/* ======================================================================== */

#ifdef QUANTS_HAVE_AVX2
#define AVX2_DOT(f) f
#else
#define AVX2_DOT(f) NULL
#endif

static const quant_traits traits[] = {
    {GGML_TYPE_Q4_0, 32, sizeof(quant_block_q4_0), GGML_TYPE_Q8_0, dequantize_q4_0, quantize_q4_0,
     dot_q4_0_scalar, AVX2_DOT(dot_q4_0_avx2)},
    {GGML_TYPE_Q4_1, 32, sizeof(quant_block_q4_1), GGML_TYPE_Q8_0, dequantize_q4_1, quantize_q4_1,
     dot_q4_1_scalar, AVX2_DOT(dot_q4_1_avx2)},
    {GGML_TYPE_Q5_0, 32, sizeof(quant_block_q5_0), GGML_TYPE_Q8_0, dequantize_q5_0, quantize_q5_0,
     dot_q5_0_scalar, AVX2_DOT(dot_q5_0_avx2)},
    {GGML_TYPE_Q5_1, 32, sizeof(quant_block_q5_1), GGML_TYPE_Q8_0, dequantize_q5_1, quantize_q5_1,
     dot_q5_1_scalar, AVX2_DOT(dot_q5_1_avx2)},
    {GGML_TYPE_Q2_K, 256, sizeof(quant_block_q2_k), GGML_TYPE_Q8_K, dequantize_q2_k, quantize_q2_k,
     dot_q2_k_scalar, AVX2_DOT(dot_q2_k_avx2)},
    {GGML_TYPE_Q3_K, 256, sizeof(quant_block_q3_k), GGML_TYPE_Q8_K, dequantize_q3_k, quantize_q3_k,
     dot_q3_k_scalar, AVX2_DOT(dot_q3_k_avx2)},
    {GGML_TYPE_Q4_K, 256, sizeof(quant_block_q4_k), GGML_TYPE_Q8_K, dequantize_q4_k, quantize_q4_k,
     dot_q4_k_scalar, AVX2_DOT(dot_q4_k_avx2)},
    {GGML_TYPE_Q5_K, 256, sizeof(quant_block_q5_k), GGML_TYPE_Q8_K, dequantize_q5_k, quantize_q5_k,
     dot_q5_k_scalar, AVX2_DOT(dot_q5_k_avx2)},
    {GGML_TYPE_Q6_K, 256, sizeof(quant_block_q6_k), GGML_TYPE_Q8_K, dequantize_q6_k, quantize_q6_k,
     dot_q6_k_scalar, AVX2_DOT(dot_q6_k_avx2)},
};

const quant_traits *quant_get_traits(ggml_type t)
{
    for (size_t i = 0; i < sizeof traits / sizeof traits[0]; i++)
        if (traits[i].type == t) return &traits[i];
    return NULL;
}
