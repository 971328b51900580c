/* test_quants.c: the quantized tensor types of quants.h and the quantizer
 * (quantize.h): exact block layouts (hand-built blocks with known values),
 * round-trip error within a bound derived from each type's bits, the integer
 * dot products against the plain float reference on every ISA, and whole
 * models: a random tiny llama quantized to each type tracks the F32 logits
 * and gives bit-identical logits whether the prompt goes in one batch or token
 * by token. The derivation of every tolerance is in docs/engine.md
 * ("Quantized types"). The demo model's perplexity per type is checked by
 * tests/integration/quantize.sh (release build: quantizing 6.3M weights under
 * ASan takes too long for a unit test). */
#include "engine/gguf.h"
#include "engine/kernels.h"
#include "engine/kernels_rows.h"
#include "engine/model.h"
#include "engine/quantize.h"
#include "engine/quants.h"
#include "gguf_writer.h"
#include "lib/threadpool.h"
#include "testlib.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)(rnd_u32() >> 8) / 16777216.0f;
}

static const ggml_type all_types[] = {
    GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1, GGML_TYPE_Q2_K,
    GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K,
};
#define N_TYPES (int)(sizeof all_types / sizeof all_types[0])

/* Bits per value of the levels (not counting scales). */
static int type_bits(ggml_type t)
{
    switch (t) {
    case GGML_TYPE_Q2_K: return 2;
    case GGML_TYPE_Q3_K: return 3;
    case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1: case GGML_TYPE_Q4_K: return 4;
    case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q5_K: return 5;
    case GGML_TYPE_Q6_K: return 6;
    case GGML_TYPE_Q8_0: return 8;
    default: return 32;
    }
}

/* ---- known answers: blocks built byte by byte ----------------------------- */

#define H_ONE 0x3c00   /* fp16 1.0 */
#define H_HALF 0x3800  /* fp16 0.5 */
#define H_MONE 0xbc00  /* fp16 -1.0 */

static void check_block(ggml_type t, const void *blk, const float *want, int n)
{
    float got[256];
    kernel_dequantize_row(t, blk, got, n);
    int bad = 0;
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) {
            if (bad++ < 4)
                fprintf(stderr, "  %s: element %d is %g, want %g\n", ggml_type_name(t), i, got[i], want[i]);
        }
    CHECK_EQ_INT(bad, 0);
}

static void test_known_answers_32(void)
{
    float want[32];
    { /* Q4_0: x = d (q - 8); qs[j] low nibble = element j, high = j + 16 */
        quant_block_q4_0 b = {.d = H_ONE};
        memset(b.qs, 0x88, sizeof b.qs);
        b.qs[0] = 0x21;
        b.qs[15] = 0xf0;
        for (int i = 0; i < 32; i++) want[i] = 0;
        want[0] = -7, want[16] = -6, want[15] = -8, want[31] = 7;
        check_block(GGML_TYPE_Q4_0, &b, want, 32);
    }
    { /* Q4_1: x = d q + m */
        quant_block_q4_1 b = {.d = H_HALF, .m = H_MONE};
        b.qs[3] = 0x5a;
        for (int i = 0; i < 32; i++) want[i] = -1;
        want[3] = 4, want[19] = 1.5f;
        check_block(GGML_TYPE_Q4_1, &b, want, 32);
    }
    { /* Q5_0: fifth bit of element j = bit j of qh (little-endian uint32) */
        quant_block_q5_0 b = {.d = H_ONE};
        b.qh[0] = 1 << 2;  /* element 2 */
        b.qh[2] = 1 << 4;  /* element 20 */
        b.qs[2] = 0x31;
        for (int i = 0; i < 32; i++) want[i] = -16;
        want[2] = 1, want[18] = 3 - 16, want[20] = 0;
        check_block(GGML_TYPE_Q5_0, &b, want, 32);
    }
    { /* Q5_1 */
        quant_block_q5_1 b = {.d = H_HALF, .m = H_ONE};
        b.qh[3] = 0x80;    /* element 31 */
        b.qs[15] = 0x10;   /* element 31 low nibble 1 */
        b.qs[7] = 0x07;    /* element 7 */
        for (int i = 0; i < 32; i++) want[i] = 1;
        want[31] = 0.5f * 17 + 1, want[7] = 0.5f * 7 + 1;
        check_block(GGML_TYPE_Q5_1, &b, want, 32);
    }
}

static void test_known_answers_k(void)
{
    float want[256];
    { /* Q2_K: sub-block 5 = e 80..95 (h 0, k 2, lanes 16..31, bits 4-5) */
        quant_block_q2_k b = {.d = H_ONE, .dmin = H_HALF};
        b.scales[5] = 0x32;     /* scale 2, min 3 */
        b.qs[20] = 3 << 4;      /* e = 84 */
        b.scales[15] = 0x01;    /* scale 1, min 0: e 240..255 */
        b.qs[63] = 1 << 6;      /* e = 128 + 96 + 31 = 255 */
        for (int e = 0; e < 256; e++) want[e] = e / 16 == 5 ? -1.5f : 0;
        want[84] = 2 * 3 - 1.5f;
        want[255] = 1;
        check_block(GGML_TYPE_Q2_K, &b, want, 256);
    }
    { /* Q3_K: every scale 32 (= 0) except s 9 (35 -> +3) and s 2 (27 -> -5) */
        quant_block_q3_k b = {.d = H_ONE};
        b.scales[8] = b.scales[9] = b.scales[10] = b.scales[11] = 0xaa; /* high bits 2 */
        b.scales[1] = 3 << 4;   /* s 9: low nibble 3 (in scales[9 - 8] >> 4) */
        b.scales[2] = 11;       /* s 2: low nibble 11 */
        b.scales[10] = 0xa9;    /* s 2: high bits (scales[8 + 2] >> 0) & 3 = 1 */
        b.qs[32 + 22] = 3;      /* e 150: h 1, k 0, lane 22 */
        b.hmask[22] = 1 << 4;   /* bit 4h + k = 4 */
        b.qs[8] = 2 << 2;       /* e 40: h 0, k 1, lane 8 */
        b.hmask[8] = 1 << 1;
        for (int e = 0; e < 256; e++) want[e] = e / 16 == 9 ? -12 : e / 16 == 2 ? 20 : 0;
        want[150] = 3 * 3;
        want[40] = -5 * 2;
        check_block(GGML_TYPE_Q3_K, &b, want, 256);
    }
    for (int five = 0; five < 2; five++) { /* Q4_K / Q5_K */
        uint8_t scales[12] = {0}, qs[128] = {0}, qh[32] = {0};
        scales[1] = 3, scales[5] = 2;            /* s 1: scale 3, min 2 */
        scales[10] = 5 | 3 << 4;                 /* s 6: low bits of scale 37, min 19 */
        scales[2] |= 2 << 6;                     /* s 6: scale's high bits (37 >> 4) */
        scales[6] |= 1 << 6;                     /* s 6: min's high bits (19 >> 4) */
        qs[8] = 9 << 4;                          /* e 40: chunk 0, high nibble, lane 8 */
        qs[96 + 8] = 4;                          /* e 200: chunk 3, low nibble, lane 8 */
        qh[8] = 1 << 1 | 1 << 6;                 /* Q5_K: fifth bits of e 40 (s 1) and 200 (s 6) */
        for (int e = 0; e < 256; e++) want[e] = e / 32 == 1 ? -2 : e / 32 == 6 ? -19 : 0;
        if (!five) {
            quant_block_q4_k b = {.d = H_ONE, .dmin = H_ONE};
            memcpy(b.scales, scales, 12);
            memcpy(b.qs, qs, 128);
            want[40] = 3 * 9 - 2, want[200] = 37 * 4 - 19;
            check_block(GGML_TYPE_Q4_K, &b, want, 256);
        } else {
            quant_block_q5_k b = {.d = H_ONE, .dmin = H_ONE};
            memcpy(b.scales, scales, 12);
            memcpy(b.qs, qs, 128);
            memcpy(b.qh, qh, 32);
            want[40] = 3 * 25 - 2, want[200] = 37 * 20 - 19;
            check_block(GGML_TYPE_Q5_K, &b, want, 256);
        }
    }
    { /* Q6_K: sub-block 5 = e 80..95 (h 0, k 2: high nibbles of ql[16..31], qh bits 4-5) */
        quant_block_q6_k b = {.d = H_ONE};
        b.scales[5] = -2;
        b.scales[13] = 3;
        b.ql[21] = 0x70;        /* e 85: low 4 bits 7 */
        b.qh[21] = 2 << 4;      /* high 2 bits 2 -> q = 39 - 32 = 7 */
        b.ql[64 + 31] = 0xf0;   /* e 223: h 1, k 2, lane 31 */
        b.qh[32 + 31] = 3 << 4;
        for (int e = 0; e < 256; e++) want[e] = e / 16 == 5 ? 64 : e / 16 == 13 ? -96 : 0;
        want[85] = -14;
        want[223] = 93;
        check_block(GGML_TYPE_Q6_K, &b, want, 256);
    }
}

/* ---- round trip ------------------------------------------------------------ */

/* Uniform data in [-1, 1): a b-bit quantizer spreading 2^b levels over a
 * block's range has step ~ range / (2^b - 1), rms error step / sqrt(12), and
 * the data's rms is range / sqrt(12): relative rms error ~ 1 / (2^b - 1).
 * Allowed: 1.15x that (the fp16 / 6-bit rounding of the scales). */
static void test_round_trip(void)
{
    enum { N = 4096 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    uint8_t *q = malloc(N * 2);
    REQUIRE(x && y && q);
    for (int i = 0; i < N; i++) x[i] = rnd_uniform(-1, 1);
    for (int k = 0; k < N_TYPES; k++) {
        ggml_type t = all_types[k];
        quantize_row(t, x, q, N);
        kernel_dequantize_row(t, q, y, N);
        double e2 = 0, x2 = 0;
        for (int i = 0; i < N; i++) {
            e2 += (double)(y[i] - x[i]) * (y[i] - x[i]);
            x2 += (double)x[i] * x[i];
        }
        double rel = sqrt(e2 / x2), bound = 1.15 / ((1 << type_bits(t)) - 1);
        fprintf(stderr, "  %-5s relative rms error %.4f (bound %.4f)\n", ggml_type_name(t), rel, bound);
        CHECK(rel <= bound);
        /* a quantizer must reproduce its own output exactly: re-quantizing the
         * dequantized values gives back the same values */
        uint8_t *q2 = malloc(N * 2);
        float *y2 = malloc(N * sizeof *y2);
        REQUIRE(q2 && y2);
        quantize_row(t, y, q2, N);
        kernel_dequantize_row(t, q2, y2, N);
        double d2 = 0;
        for (int i = 0; i < N; i++) d2 += (double)(y2[i] - y[i]) * (y2[i] - y[i]);
        CHECK(sqrt(d2 / x2) <= 0.5 * bound);
        free(q2);
        free(y2);
    }
    /* zeros, constants and a lone spike stay finite and exact where they can */
    memset(x, 0, N * sizeof *x);
    x[77] = 3.0f;
    for (int k = 0; k < N_TYPES; k++) {
        quantize_row(all_types[k], x, q, N);
        kernel_dequantize_row(all_types[k], q, y, N);
        int ok = 1;
        for (int i = 0; i < N; i++) ok &= isfinite(y[i]) && (i == 77 || fabsf(y[i]) < 1e-3f);
        CHECK(ok);
        CHECK(fabsf(y[77] - 3.0f) < 0.02f);
    }
    free(x);
    free(y);
    free(q);
}

/* ---- dot products ---------------------------------------------------------- */

/* The kernel computes sum_i w_i a_i over the dequantized weights w and the
 * quantized activations a exactly in integers per (sub-)block, then in float:
 * against the same sum in double its error is float rounding only, bounded
 * by ~n_blocks * 2^-24 * sum |w_i a_i|; 1e-5 * sum |w a| leaves room. A
 * second check against the unquantized activations bounds the activation
 * rounding: each a_i is off by at most amax/254 of its block, uniform, so the
 * dot is off by ~ sqrt(sum w_i^2) * amax / (127 sqrt(12)); 5 sigma allowed. */
static void test_dot_products(void)
{
    enum { N = 1024 };
    float *w = malloc(N * sizeof *w), *x = malloc(N * sizeof *x), *wd = malloc(N * sizeof *wd);
    float *ad = malloc(N * sizeof *ad);
    uint8_t *wq = malloc(N * 2), *act = malloc(N * 2);
    REQUIRE(w && x && wd && ad && wq && act);
    kernel_isa best = kernel_active_isa();
    for (int rep = 0; rep < 8; rep++) {
        for (int i = 0; i < N; i++) {
            w[i] = rnd_uniform(-1, 1) * (rep & 1 ? 0.01f : 1.0f);
            x[i] = rnd_uniform(-2, 2) + (rep & 2 ? 0.5f : 0.0f);
        }
        for (int k = 0; k < N_TYPES; k++) {
            ggml_type t = all_types[k];
            const quant_traits *tr = quant_get_traits(t);
            REQUIRE(tr);
            quantize_row(t, w, wq, N);
            kernel_dequantize_row(t, wq, wd, N);
            if (tr->act_type == GGML_TYPE_Q8_0) {
                kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)act, N);
                kernel_dequantize_row(GGML_TYPE_Q8_0, act, ad, N);
            } else {
                quant_quantize_row_q8_k(x, (quant_block_q8_k *)act, N);
                const quant_block_q8_k *b = (const quant_block_q8_k *)act;
                for (int i = 0; i < N; i++) ad[i] = b[i / 256].d * b[i / 256].qs[i % 256];
                for (int j = 0; j < N / 16; j++) { /* bsums hold the sums */
                    int s = 0;
                    for (int i = 0; i < 16; i++) s += b[j / 16].qs[(j % 16) * 16 + i];
                    CHECK_EQ_INT(b[j / 16].bsums[j % 16], s);
                }
            }
            double exact = 0, mag = 0, ref = 0, w2 = 0, amax = 0;
            for (int i = 0; i < N; i++) {
                exact += (double)wd[i] * ad[i];
                mag += fabs((double)wd[i] * ad[i]);
                ref += (double)wd[i] * x[i];
                w2 += (double)wd[i] * wd[i];
                amax = fabs(x[i]) > amax ? fabs(x[i]) : amax;
            }
            float results[2];
            int n_isa = 0;
            for (int isa = 0; isa < 2; isa++) {
                quant_dot_fn f = isa == 0 ? tr->dot_scalar : tr->dot_avx2;
                if (!f || (isa == 1 && kernel_force_isa(KERNEL_ISA_AVX2) != 0)) continue;
                float got = f(wq, act, N);
                results[n_isa++] = got;
                if (!(fabs(got - exact) <= 1e-5 * mag + 1e-30)) {
                    fprintf(stderr, "  %s isa %d: dot %.9g, exact %.9g\n", ggml_type_name(t), isa, got, exact);
                    CHECK(0);
                }
                CHECK(fabs(got - ref) <= 5 * sqrt(w2) * amax / (127 * sqrt(12.0)) + 1e-5 * mag);
            }
            kernel_force_isa(KERNEL_ISA_SCALAR);
            CHECK(n_isa >= 1);
            if (n_isa == 2) CHECK(fabs(results[0] - results[1]) <= 1e-5 * mag + 1e-30);
            /* the K-quants' canonical order (quant_k_fma): the same bits on both */
            if (n_isa == 2 && tr->act_type == GGML_TYPE_Q8_K) CHECK(memcmp(&results[0], &results[1], sizeof(float)) == 0);
        }
    }
    kernel_force_isa(best);
    free(w);
    free(x);
    free(wd);
    free(ad);
    free(wq);
    free(act);
}

/* The rows kernels (kernels_rows.h) of every instruction set this CPU has,
 * for each type that has them: every row against the exact sum in double
 * over the dequantized weights and activations (only float rounding remains:
 * 1e-5 of sum |w a| for the integer types as above; F16 multiplies floats,
 * ~n 2^-24 relative per term: 2e-6 of sum |w a|); a row's bits the same
 * whether computed in a group of KERNEL_ROWS or alone (the determinism
 * contract); the three 256-bit sets (AVX2 emulating VNNI, AVX-VNNI, AVX-512's
 * EVEX form) the same bits as each other; and for the integer types the same
 * bits as quants.c's / kernels.c's one-row AVX2 dot products. Widths with an
 * odd number of 32-blocks and an F16 tail of 8 values exercise the 512-bit
 * kernels' odd block and the scalar tail; Q8_0 weights hold -128 and
 * activations +-127 (the offsets' extreme cases). */
static void test_rows_kernels(void)
{
    enum { R = 7 };
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0,
                                      GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q2_K,
                                      GGML_TYPE_Q3_K};
    struct {
        const char *name;
        kernel_isa isa;
        int bits;
    } sets[] = {{"avx2", KERNEL_ISA_AVX2, 256}, {"avxvnni", KERNEL_ISA_AVXVNNI, 256},
                {"avx512/256", KERNEL_ISA_AVX512, 256}, {"avx512/512", KERNEL_ISA_AVX512, 512}};
    kernel_isa saved = kernel_active_isa();
    int ran = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        ggml_type t = types[ti];
        const quant_traits *qt = quant_get_traits(t);
        int k_type = qt && qt->act_type == GGML_TYPE_Q8_K;
        int widths[] = {k_type ? 768 : 800, k_type ? 256 : 32, t == GGML_TYPE_F16 ? 808 : (k_type ? 512 : 96)};
        for (size_t wi = 0; wi < 3; wi++) {
            int n = widths[wi];
            size_t stride = kernel_row_bytes(t, n);
            uint8_t *w = malloc(stride * R), *act = malloc(kernel_row_bytes(GGML_TYPE_Q8_K, 1024) * 2);
            float *wf = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * n), *ad = malloc(sizeof(float) * n);
            REQUIRE(w && act && wf && x && ad);
            for (int i = 0; i < n; i++) x[i] = rnd_uniform(-2, 2);
            for (int r = 0; r < R; r++) {
                for (int i = 0; i < n; i++) wf[i] = rnd_uniform(-1, 1) * (r == 2 ? 1e-3f : 1.0f);
                if (t == GGML_TYPE_F16)
                    for (int i = 0; i < n; i++) ((uint16_t *)(w + r * stride))[i] = kernel_fp32_to_fp16(wf[i]);
                else
                    quantize_row(t, wf, w + r * stride, n);
            }
            const void *a = x;
            if (t == GGML_TYPE_Q8_0) { /* extremes of the offsets */
                kernel_block_q8_0 *b = (kernel_block_q8_0 *)w;
                b[0].qs[0] = -128, b[0].qs[1] = -128, b[0].qs[2] = 127;
                x[0] = 2, x[1] = -2, x[2] = 2; /* the block's largest: +-127 */
                if (n >= 64) b[1].qs[5] = -128, x[37] = 2;
            }
            if (t == GGML_TYPE_Q8_0 || t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q5_0) {
                kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)act, n);
                kernel_dequantize_row(GGML_TYPE_Q8_0, act, ad, n);
                a = act;
            } else if (k_type) {
                quant_quantize_row_q8_k(x, (quant_block_q8_k *)act, n);
                const quant_block_q8_k *b = (const quant_block_q8_k *)act;
                for (int i = 0; i < n; i++) ad[i] = b[i / 256].d * b[i / 256].qs[i % 256];
                a = act;
            } else {
                memcpy(ad, x, sizeof(float) * n);
            }
            /* the one-row AVX2 dot product, for the bits the 256-bit sets must give */
            float one_row[R];
            int have_one_row = t != GGML_TYPE_F16 && kernel_force_isa(KERNEL_ISA_AVX2) == 0;
            for (int r = 0; have_one_row && r < R; r++)
                one_row[r] = t == GGML_TYPE_Q8_0
                                 ? kernel_dot_q8_0((const kernel_block_q8_0 *)(w + r * stride), (const kernel_block_q8_0 *)act, n)
                                 : qt->dot_avx2(w + r * stride, act, n);
            /* the K-quants' canonical order (quant_k_fma): every set gives the scalar dot's bits */
            float canonical[R];
            for (int r = 0; k_type && r < R; r++) canonical[r] = qt->dot_scalar(w + r * stride, act, n);
            float first256[R];
            int have256 = 0;
            for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
                if (!kernel_isa_available(sets[si].isa)) continue;
                kernel_rows_fn fn = sets[si].isa == KERNEL_ISA_AVX2      ? kernel_rows_avx2(t)
                                    : sets[si].isa == KERNEL_ISA_AVXVNNI ? kernel_rows_avxvnni(t)
                                                                         : kernel_rows_avx512_width(t, sets[si].bits);
                if (!fn) continue;
                ran++;
                float grouped[R], alone[R];
                fn(w, stride, KERNEL_ROWS, a, n, grouped);
                fn(w + KERNEL_ROWS * stride, stride, R - KERNEL_ROWS, a, n, grouped + KERNEL_ROWS);
                for (int r = 0; r < R; r++) fn(w + r * stride, stride, 1, a, n, alone + r);
                if (memcmp(grouped, alone, sizeof grouped)) {
                    fprintf(stderr, "  %s %s n=%d: a row's bits depend on its group\n", ggml_type_name(t), sets[si].name, n);
                    CHECK(0);
                }
                for (int r = 0; r < R; r++) {
                    float wd[1024];
                    kernel_dequantize_row(t, w + r * stride, wd, n);
                    double exact = 0, mag = 0;
                    for (int i = 0; i < n; i++) exact += (double)wd[i] * ad[i], mag += fabs((double)wd[i] * ad[i]);
                    double tol = (t == GGML_TYPE_F16 ? 2e-6 : 1e-5) * mag + 1e-30;
                    if (!(fabs(alone[r] - exact) <= tol)) {
                        fprintf(stderr, "  %s %s n=%d row %d: %.9g, exact %.9g\n", ggml_type_name(t), sets[si].name, n,
                                r, alone[r], exact);
                        CHECK(0);
                    }
                }
                if (k_type && memcmp(alone, canonical, sizeof alone)) {
                    fprintf(stderr, "  %s %s n=%d: not the scalar canonical bits\n", ggml_type_name(t), sets[si].name, n);
                    CHECK(0);
                }
                if (sets[si].bits == 256) {
                    if (have256) CHECK(memcmp(alone, first256, sizeof alone) == 0);
                    memcpy(first256, alone, sizeof alone);
                    have256 = 1;
                    if (have_one_row) CHECK(memcmp(alone, one_row, sizeof alone) == 0);
                }
            }
            free(w), free(act), free(wf), free(x), free(ad);
        }
    }
    kernel_force_isa(saved);
    if (!ran) fprintf(stderr, "  (no SIMD rows kernels on this CPU: nothing to check)\n");
}

/* The tile kernels (kernels_rows.h): for each instruction set and width the
 * CPU has, R rows x NT tokens in one call (whole tiles, leftover tokens and
 * a leftover group of rows) give every output the bits of the same set's
 * rows kernel for that row and token alone: a prompt's batch equals its
 * tokens one by one. Every token count from 1 to NT: whole tiles, then a
 * leftover tile of 2 or 3 tokens or a single token. Tokens differ in scale (1e-3 .. 10) so that a mixed-up
 * token or scale would show. */
static void test_tile_kernels(void)
{
    enum { R = 7, NT = 11 };
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0,
                                      GGML_TYPE_Q4_K, GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_Q2_K,
                                      GGML_TYPE_Q3_K};
    struct {
        const char *name;
        kernel_isa isa;
        int bits;
    } sets[] = {{"avx2", KERNEL_ISA_AVX2, 256}, {"avxvnni", KERNEL_ISA_AVXVNNI, 256},
                {"avx512/256", KERNEL_ISA_AVX512, 256}, {"avx512/512", KERNEL_ISA_AVX512, 512}};
    int ran = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        ggml_type t = types[ti];
        const quant_traits *qt = quant_get_traits(t);
        int k_type = qt && qt->act_type == GGML_TYPE_Q8_K;
        int widths[] = {k_type ? 768 : 800, t == GGML_TYPE_F16 ? 808 : (k_type ? 256 : 96)};
        for (size_t wi = 0; wi < 2; wi++) {
            int n = widths[wi];
            size_t stride = kernel_row_bytes(t, n);
            ggml_type at = t == GGML_TYPE_F16 ? GGML_TYPE_F32 : k_type ? GGML_TYPE_Q8_K : GGML_TYPE_Q8_0;
            size_t astride = kernel_row_bytes(at, n);
            uint8_t *w = malloc(stride * R), *act = malloc(astride * NT);
            float *wf = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * n);
            float tiled[NT][R], alone[NT][R];
            REQUIRE(w && act && wf && x);
            for (int r = 0; r < R; r++) {
                for (int i = 0; i < n; i++) wf[i] = rnd_uniform(-1, 1);
                quantize_row(t, wf, w + r * stride, n);
            }
            for (int k = 0; k < NT; k++) {
                float scale = k == 3 ? 1e-3f : k == 5 ? 10.0f : 1.0f;
                for (int i = 0; i < n; i++) x[i] = rnd_uniform(-2, 2) * scale;
                if (at == GGML_TYPE_F32) memcpy(act + k * astride, x, sizeof(float) * n);
                else if (at == GGML_TYPE_Q8_K) quant_quantize_row_q8_k(x, (quant_block_q8_k *)(act + k * astride), n);
                else kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)(act + k * astride), n);
            }
            for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
                if (!kernel_isa_available(sets[si].isa)) continue;
                kernel_isa isa = sets[si].isa;
                int bits = sets[si].bits;
                kernel_rows_fn rows = isa == KERNEL_ISA_AVX2      ? kernel_rows_avx2(t)
                                      : isa == KERNEL_ISA_AVXVNNI ? kernel_rows_avxvnni(t)
                                                                  : kernel_rows_avx512_width(t, bits);
                kernel_tile_fn tile = isa == KERNEL_ISA_AVX2      ? kernel_tile_avx2(t)
                                      : isa == KERNEL_ISA_AVXVNNI ? kernel_tile_avxvnni(t)
                                                                  : kernel_tile_avx512_width(t, bits);
                CHECK((rows == NULL) == (tile == NULL));
                if (!rows || !tile) continue;
                ran++;
                for (int k = 0; k < NT; k++)
                    for (int r = 0; r < R; r++) rows(w + r * stride, stride, 1, act + k * astride, n, &alone[k][r]);
                for (int nt = 1; nt <= NT; nt++) { /* every count of whole and leftover tiles */
                    memset(tiled, 0xff, sizeof tiled);
                    tile(w, stride, KERNEL_ROWS, act, astride, nt, n, &tiled[0][0], R);
                    tile(w + KERNEL_ROWS * stride, stride, R - KERNEL_ROWS, act, astride, nt, n, &tiled[0][KERNEL_ROWS], R);
                    if (memcmp(tiled, alone, sizeof tiled[0] * nt)) {
                        fprintf(stderr, "  %s %s n=%d, %d tokens: tiled products differ from one row and token at a time\n",
                                ggml_type_name(t), sets[si].name, n, nt);
                        CHECK(0);
                    }
                }
            }
            free(w), free(act), free(wf), free(x);
        }
    }
    if (!ran) fprintf(stderr, "  (no SIMD tile kernels on this CPU: nothing to check)\n");
}

/* Slabs (kernels_rows.h): rows unpacked once, then every token over them,
 * give the very bits of the same set's rows kernel, one row and token at a
 * time: Q4_K (Q4_0 runs in row lanes, test_lane_kernels), whole groups and a
 * leftover group, rows as wide
 * as the stack slab takes; the slab's bytes past what the unpacking writes
 * are never read (poisoned here). */
static void test_slab_kernels(void)
{
    enum { R = 7, NT = 37 };
    struct {
        const char *name;
        kernel_isa isa;
    } sets[] = {{"avx2", KERNEL_ISA_AVX2}, {"avxvnni", KERNEL_ISA_AVXVNNI}, {"avx512", KERNEL_ISA_AVX512}};
    static const struct {
        ggml_type t;
        int n;
    } cases[] = {{GGML_TYPE_Q4_K, 256}, {GGML_TYPE_Q4_K, 4864}, {GGML_TYPE_Q4_K, 8960}};
    int ran = 0;
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        int n = cases[ci].n;
        ggml_type t = cases[ci].t;
        ggml_type at = t == GGML_TYPE_Q4_K ? GGML_TYPE_Q8_K : GGML_TYPE_Q8_0;
        size_t stride = kernel_row_bytes(t, n), astride = kernel_row_bytes(at, n);
        size_t slab_stride = KERNEL_SLAB_ROW_BYTES(n);
        uint8_t *w = malloc(stride * R), *act = malloc(astride * NT), *slab = malloc(slab_stride * KERNEL_ROWS);
        float *x = malloc(sizeof(float) * n);
        static float slabbed[NT][R], alone[NT][R];
        REQUIRE(w && act && slab && x);
        for (int r = 0; r < R; r++) {
            for (int i = 0; i < n; i++) x[i] = rnd_uniform(-1, 1) * (r == 2 ? 1e-3f : 1.0f);
            quantize_row(t, x, w + r * stride, n);
        }
        for (int k = 0; k < NT; k++) {
            for (int i = 0; i < n; i++) x[i] = rnd_uniform(-2, 2) * (k == 3 ? 1e-3f : k == 5 ? 10.0f : 1.0f);
            if (at == GGML_TYPE_Q8_K) quant_quantize_row_q8_k(x, (quant_block_q8_k *)(act + k * astride), n);
            else kernel_quantize_row_q8_0(x, (kernel_block_q8_0 *)(act + k * astride), n);
        }
        for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
            if (!kernel_isa_available(sets[si].isa)) continue;
            kernel_isa isa = sets[si].isa;
            kernel_rows_fn rows = isa == KERNEL_ISA_AVX2      ? kernel_rows_avx2(t)
                                  : isa == KERNEL_ISA_AVXVNNI ? kernel_rows_avxvnni(t)
                                                              : kernel_rows_avx512(t);
            kernel_slab sl = isa == KERNEL_ISA_AVX2      ? kernel_slab_avx2(t)
                             : isa == KERNEL_ISA_AVXVNNI ? kernel_slab_avxvnni(t)
                                                         : kernel_slab_avx512(t);
            REQUIRE(rows);
            CHECK(!kernel_slab_avx2(GGML_TYPE_Q8_0).tile); /* Q4_K only, for now */
            CHECK(!kernel_slab_avx2(GGML_TYPE_Q4_0).tile && !kernel_slab_avx512(GGML_TYPE_Q4_0).tile);
            REQUIRE(sl.unpack && sl.tile);
            ran++;
            memset(slabbed, 0xff, sizeof slabbed);
            for (int r0 = 0; r0 < R; r0 += KERNEL_ROWS) {
                int nr = R - r0 < KERNEL_ROWS ? R - r0 : KERNEL_ROWS;
                memset(slab, 0x5a, slab_stride * KERNEL_ROWS);
                sl.unpack(w + r0 * stride, stride, nr, n, slab);
                sl.tile(slab, slab_stride, nr, act, astride, NT, n, &slabbed[0][r0], R);
            }
            for (int k = 0; k < NT; k++)
                for (int r = 0; r < R; r++) rows(w + r * stride, stride, 1, act + k * astride, n, &alone[k][r]);
            if (memcmp(slabbed, alone, sizeof slabbed)) {
                fprintf(stderr, "  %s %s n=%d: slab products differ from one row and token at a time\n",
                        ggml_type_name(t), sets[si].name, n);
                CHECK(0);
            }
        }
        free(w), free(act), free(slab), free(x);
    }
    if (!ran) fprintf(stderr, "  (no SIMD slab kernels on this CPU: nothing to check)\n");
}

/* kernel_matmul over every type (and mixed types in one multi-product, which
 * share the scratch) against kernel_matmul_ref, on every ISA this CPU has. */
static void test_matmul_all_types(void)
{
    enum { ROWS = 24, COLS = 512, NTOK = 9 }; /* 9: whole tiles and leftover tokens */
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    float *wf = malloc(ROWS * COLS * sizeof *wf), *x = malloc(NTOK * COLS * sizeof *x);
    for (int i = 0; i < ROWS * COLS; i++) wf[i] = rnd_uniform(-1, 1);
    for (int i = 0; i < NTOK * COLS; i++) x[i] = rnd_uniform(-1, 1);
    uint8_t *data[N_TYPES];
    kernel_matrix m[N_TYPES];
    size_t scratch_bytes = 0;
    for (int k = 0; k < N_TYPES; k++) {
        size_t row = kernel_row_bytes(all_types[k], COLS);
        data[k] = malloc(row * ROWS);
        for (int r = 0; r < ROWS; r++) quantize_row(all_types[k], wf + r * COLS, data[k] + r * row, COLS);
        m[k] = (kernel_matrix){all_types[k], ROWS, COLS, data[k], 0};
        size_t s = kernel_matmul_scratch_bytes(all_types[k], COLS, NTOK);
        scratch_bytes = s > scratch_bytes ? s : scratch_bytes;
    }
    void *scratch = malloc(scratch_bytes);
    float y[4][NTOK * ROWS], yr[NTOK * ROWS];
    kernel_isa saved = kernel_active_isa();
    for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++)
    for (int k = 0; k + 3 < N_TYPES + 3; k += 4) {
        if (kernel_force_isa((kernel_isa)isa) != 0) continue; /* a CPU may have AVX-512 without AVX-VNNI */
        int n = N_TYPES - k < 4 ? N_TYPES - k : 4;
        const kernel_matrix *ws[4];
        float *ys[4];
        for (int j = 0; j < n; j++) {
            ws[j] = &m[k + j];
            ys[j] = y[j];
        }
        kernel_matmul_multi(pool, n, ws, x, NTOK, ys, scratch);
        for (int j = 0; j < n; j++) {
            kernel_matmul_ref(ws[j], x, NTOK, yr);
            double e2 = 0, r2 = 0;
            for (int i = 0; i < NTOK * ROWS; i++) {
                e2 += (double)(y[j][i] - yr[i]) * (y[j][i] - yr[i]);
                r2 += (double)yr[i] * yr[i];
            }
            /* activation rounding only: ~1/(127 sqrt(3)) relative, 3x allowed */
            CHECK(sqrt(e2 / r2) < 3.0 / (127 * sqrt(3.0)));
        }
    }
    kernel_force_isa(saved);
    for (int k = 0; k < N_TYPES; k++) free(data[k]);
    free(scratch);
    free(wf);
    free(x);
    threadpool_free(pool);
}

/* Interleaved matrices (kernel_interleave): every product on the interleaved
 * copy has the very bits of the same product on the row-major matrix, on
 * every ISA this CPU has (scalar: rows read back through
 * kernel_matrix_row), for one token (rows kernels), a few (tiles, leftover
 * tiles) and a batch past MATMUL_SLAB_MIN_TOKENS (slabs), with a leftover
 * group of 3 rows that stays row-major, even and odd block counts; and
 * kernel_matrix_row gives back each row's bytes. */
static void test_interleaved_matrices(void)
{
    enum { ROWS = 27, MAXCOLS = 800, MAXTOK = 40 };
    static const ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q5_0,
                                      GGML_TYPE_Q2_K, GGML_TYPE_Q3_K, GGML_TYPE_Q4_K, GGML_TYPE_Q5_K,
                                      GGML_TYPE_Q6_K};
    static const int widths[] = {768, 800}; /* 768: 3 K-blocks, 24 32-blocks; 800: 25 32-blocks */
    static const int ntoks[] = {1, 3, 5, MAXTOK};
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    float *wf = malloc(sizeof(float) * ROWS * MAXCOLS), *x = malloc(sizeof(float) * MAXTOK * MAXCOLS);
    float *y0 = malloc(sizeof(float) * MAXTOK * ROWS), *y1 = malloc(sizeof(float) * MAXTOK * ROWS);
    for (int i = 0; i < ROWS * MAXCOLS; i++) wf[i] = rnd_uniform(-1, 1);
    for (int i = 0; i < MAXTOK * MAXCOLS; i++) x[i] = rnd_uniform(-1, 1);
    CHECK(!kernel_interleavable(GGML_TYPE_F32, 768) && !kernel_interleavable(GGML_TYPE_Q4_1, 768) &&
          !kernel_interleavable(GGML_TYPE_F16, 784) && kernel_interleavable(GGML_TYPE_F16, 800));
    kernel_isa saved = kernel_active_isa();
    int compared = 0;
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
            ggml_type t = types[k];
            int cols = widths[wi];
            if (cols % (int)ggml_type_block_elems(t) != 0) continue;
            REQUIRE(kernel_interleavable(t, cols));
            size_t row = kernel_row_bytes(t, cols);
            uint8_t *plain = malloc(row * ROWS), *il = malloc(row * ROWS), *buf = malloc(row);
            for (int r = 0; r < ROWS; r++) quantize_row(t, wf + r * cols, plain + r * row, cols);
            kernel_matrix a = {t, ROWS, cols, plain, 0};
            kernel_interleave(&a, il);
            kernel_matrix b = {t, ROWS, cols, il, 1};
            CHECK(memcmp(plain, il, row * 4) != 0); /* the first group did move */
            for (int r = 0; r < ROWS; r++) CHECK(memcmp(kernel_matrix_row(&b, r, buf), plain + r * row, row) == 0);
            void *scratch = malloc(kernel_matmul_scratch_bytes(t, cols, MAXTOK) + 1);
            for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
                if (kernel_force_isa((kernel_isa)isa) != 0) continue; /* a CPU may have AVX-512 without AVX-VNNI */
                for (size_t ti = 0; ti < sizeof ntoks / sizeof ntoks[0]; ti++) {
                    int nt = ntoks[ti];
                    kernel_matmul(pool, &a, x, nt, y0, scratch);
                    kernel_matmul(pool, &b, x, nt, y1, scratch);
                    if (memcmp(y0, y1, sizeof(float) * (size_t)nt * ROWS) != 0) {
                        fprintf(stderr, "  %s, %d columns, isa %d, %d tokens: interleaved differs\n",
                                ggml_type_name(t), cols, isa, nt);
                        CHECK(0);
                    }
                    compared++;
                }
            }
            kernel_force_isa(saved);
            free(plain), free(il), free(buf), free(scratch);
        }
    CHECK(compared >= 2 * 4 * 9); /* scalar and avx2 at least, every type */
    free(wf), free(x), free(y0), free(y1);
    threadpool_free(pool);
}

/* The canonical one-row dot of a lane type (Q4_0: quants.c; Q8_0:
 * kernels.c) at ISA isa (scalar or AVX2). */
static float lane_ref_dot(ggml_type t, kernel_isa isa, const void *w, const void *act, int n)
{
    const quant_traits *qt = quant_get_traits(t);
    if (t != GGML_TYPE_Q8_0) return isa == KERNEL_ISA_SCALAR ? qt->dot_scalar(w, act, n) : qt->dot_avx2(w, act, n);
    kernel_isa saved = kernel_active_isa();
    kernel_force_isa(isa);
    float v = kernel_dot_q8_0(w, act, n);
    kernel_force_isa(saved);
    return v;
}

/* Row lanes (kernels_rows.h, docs/engine.md "Row lanes"): Q4_0, Q5_0 and Q8_0 in
 * the lane layout, through kernel_matmul on every ISA this CPU has and
 * through each lane kernel called directly (the 512-bit one and the 256-bit
 * body in its AVX2, AVX-VNNI and EVEX forms), for every token count 1..17
 * (whole tiles and every leftover), three lane groups and a leftover of 5
 * rows, widths of 1, 3 and 28 blocks: every output has the bits of the
 * scalar one-row dot (the canonical order), memcmp; the one-row AVX2 dot
 * too; the row-major matrix gives the same. Rows differ in scale (one tiny,
 * one large) and tokens too, so a mixed-up row, token or scale would show;
 * Q4_0 holds levels 0 and 15, Q5_0 0 and 31, Q8_0 weights -128 and 127 against
 * activations +-127 (the offsets' and the sign trick's extremes). */
static void check_lanes(ggml_type t, threadpool *pool)
{
    enum { ROWS = 3 * KERNEL_LANE_ROWS + 5, MAXCOLS = 896, MAXTOK = 17 };
    static const int widths[] = {32, 96, 896};
    float *wf = malloc(sizeof(float) * MAXCOLS), *x = malloc(sizeof(float) * MAXTOK * MAXCOLS);
    float *want = malloc(sizeof(float) * MAXTOK * ROWS), *got = malloc(sizeof(float) * MAXTOK * ROWS);
    size_t row = kernel_row_bytes(t, MAXCOLS), arow = kernel_row_bytes(GGML_TYPE_Q8_0, MAXCOLS);
    uint8_t *plain = malloc(row * ROWS), *il = malloc(row * ROWS), *act = malloc(arow * MAXTOK), *buf = malloc(row);
    kernel_lane_act *lact = malloc(sizeof(kernel_lane_act) * (MAXCOLS / 32) * MAXTOK);
    REQUIRE(wf && x && want && got && plain && il && act && buf && lact);
    kernel_isa saved = kernel_active_isa();
    int compared = 0, direct = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
        int cols = widths[wi];
        size_t rb = kernel_row_bytes(t, cols), ab = kernel_row_bytes(GGML_TYPE_Q8_0, cols);
        size_t lstride = sizeof(kernel_lane_act) * (size_t)(cols / 32);
        for (int r = 0; r < ROWS; r++) {
            for (int i = 0; i < cols; i++) wf[i] = rnd_uniform(-1, 1) * (r == 7 ? 1e-3f : r == 20 ? 30.0f : 1.0f);
            quantize_row(t, wf, plain + r * rb, cols);
        }
        for (int k = 0; k < MAXTOK; k++)
            for (int i = 0; i < cols; i++) x[k * cols + i] = rnd_uniform(-2, 2) * (k == 3 ? 1e-3f : k == 5 ? 10.0f : 1.0f);
        if (t == GGML_TYPE_Q4_0) {
            ((quant_block_q4_0 *)(plain + 3 * rb))->qs[0] = 0xf0; /* levels 0 and 15 */
        } else if (t == GGML_TYPE_Q5_0) { /* levels 0 and 31: element 0 (low nibble 0, fifth bit 0), 16 (15, 1) */
            quant_block_q5_0 *b = (quant_block_q5_0 *)(plain + 3 * rb);
            b->qs[0] = 0xf0, b->qh[0] &= 0xfe, b->qh[2] |= 1;
        } else {
            kernel_block_q8_0 *b = (kernel_block_q8_0 *)(plain + 3 * rb);
            b[0].qs[0] = -128, b[0].qs[1] = -128, b[0].qs[2] = 127;
            x[0] = 2, x[1] = -2, x[2] = 2; /* the block's largest: +-127 */
        }
        for (int k = 0; k < MAXTOK; k++) {
            kernel_quantize_row_q8_0(x + k * cols, (kernel_block_q8_0 *)(act + k * ab), cols);
            kernel_lane_prep(act + k * ab, lact + (size_t)k * (cols / 32), cols);
        }
        int have_avx2 = kernel_isa_available(KERNEL_ISA_AVX2);
        for (int k = 0; k < MAXTOK; k++)
            for (int r = 0; r < ROWS; r++) {
                want[k * ROWS + r] = lane_ref_dot(t, KERNEL_ISA_SCALAR, plain + r * rb, act + k * ab, cols);
                if (have_avx2) {
                    float v = lane_ref_dot(t, KERNEL_ISA_AVX2, plain + r * rb, act + k * ab, cols);
                    CHECK(memcmp(&v, &want[k * ROWS + r], sizeof v) == 0);
                }
            }
        kernel_matrix a = {t, ROWS, cols, plain, 0};
        kernel_interleave(&a, il);
        kernel_matrix b = {t, ROWS, cols, il, 1};
        CHECK(memcmp(plain, il, rb * KERNEL_LANE_ROWS) != 0); /* the first group did move */
        for (int r = 0; r < ROWS; r++) CHECK(memcmp(kernel_matrix_row(&b, r, buf), plain + r * rb, rb) == 0);
        size_t whole = ROWS / KERNEL_LANE_ROWS * KERNEL_LANE_ROWS;
        CHECK(memcmp(il + whole * rb, plain + whole * rb, (ROWS - whole) * rb) == 0); /* leftover: row-major */
        void *scratch = malloc(kernel_matmul_scratch_bytes(t, cols, MAXTOK));
        REQUIRE(scratch);
        for (int isa = 0; isa < KERNEL_ISA_COUNT; isa++) {
            if (kernel_force_isa((kernel_isa)isa) != 0) continue;
            for (int nt = 1; nt <= MAXTOK; nt++)
                for (int m = 0; m < 2; m++) { /* the lane layout, and the row-major matrix */
                    memset(got, 0xff, sizeof(float) * MAXTOK * ROWS);
                    kernel_matmul(pool, m ? &a : &b, x, nt, got, scratch);
                    if (memcmp(got, want, sizeof(float) * (size_t)nt * ROWS) != 0) {
                        fprintf(stderr, "  %s %d columns, isa %d, %d tokens, %s: not the canonical bits\n",
                                ggml_type_name(t), cols, isa, nt, m ? "row-major" : "lanes");
                        CHECK(0);
                    }
                    compared++;
                }
        }
        kernel_force_isa(saved);
        struct {
            kernel_isa isa;
            kernel_lane_fn fn;
        } fns[] = {{KERNEL_ISA_AVX2, kernel_lane_avx2(t)},
                   {KERNEL_ISA_AVXVNNI, kernel_lane_avxvnni(t)},
                   {KERNEL_ISA_AVX512, kernel_lane_avx512_width(t, 256)},
                   {KERNEL_ISA_AVX512, kernel_lane_avx512_width(t, 512)}};
        for (size_t f = 0; f < sizeof fns / sizeof fns[0]; f++) {
            if (!kernel_isa_available(fns[f].isa)) continue;
            REQUIRE(fns[f].fn);
            for (int nt = 1; nt <= MAXTOK; nt++) {
                memset(got, 0xff, sizeof(float) * MAXTOK * ROWS);
                for (size_t g = 0; g < whole; g += KERNEL_LANE_ROWS)
                    fns[f].fn(il + g * rb, lact, lstride, nt, cols, got + g, ROWS);
                for (int k = 0; k < nt; k++)
                    if (memcmp(got + k * ROWS, want + k * ROWS, sizeof(float) * whole) != 0) {
                        fprintf(stderr, "  %s %d columns, lane kernel %zu, %d tokens: token %d differs\n",
                                ggml_type_name(t), cols, f, nt, k);
                        CHECK(0);
                        break;
                    }
                direct++;
            }
        }
        free(scratch);
    }
    CHECK(compared >= 3 * 17 * 2 * 2); /* scalar and avx2 at least */
    if (!direct) fprintf(stderr, "  (no SIMD lane kernels on this CPU: only kernel_matmul checked)\n");
    free(wf), free(x), free(want), free(got), free(plain), free(il), free(act), free(buf), free(lact);
}

static void test_lane_kernels(void)
{
    char err[256];
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(pool);
    check_lanes(GGML_TYPE_Q4_0, pool);
    check_lanes(GGML_TYPE_Q8_0, pool);
    check_lanes(GGML_TYPE_Q5_0, pool);
    CHECK(kernel_lane_avx2(GGML_TYPE_Q5_K) == NULL && kernel_lane_avx512(GGML_TYPE_F16) == NULL &&
          kernel_lane_avxvnni(GGML_TYPE_Q4_1) == NULL);
    threadpool_free(pool);
}

/* ---- whole models ---------------------------------------------------------- */

/* Logits of prompt tokens [n][n_vocab], in one batch or token by token. */
static float *model_logits(const char *path, const int32_t *tokens, int n, int one_by_one)
{
    char err[256];
    gguf_file *f = gguf_open(path, err, sizeof err);
    if (!f) fprintf(stderr, "  %s\n", err);
    REQUIRE(f);
    model *m = model_load(f, err, sizeof err);
    if (!m) fprintf(stderr, "  %s\n", err);
    REQUIRE(m);
    model_state *s = model_state_new(m, 64, MODEL_KV_F32, err, sizeof err);
    threadpool *pool = threadpool_create(2, err, sizeof err);
    REQUIRE(s && pool);
    int nv = model_get_config(m)->n_vocab;
    float *logits = malloc(sizeof(float) * (size_t)n * (size_t)nv);
    REQUIRE(logits);
    if (one_by_one) {
        for (int i = 0; i < n; i++)
            REQUIRE(model_forward(m, s, pool, tokens + i, 1, logits + (size_t)i * nv, 0, err, sizeof err) == 0);
    } else {
        REQUIRE(model_forward(m, s, pool, tokens, n, logits, 1, err, sizeof err) == 0);
    }
    threadpool_free(pool);
    model_state_free(s);
    model_free(m);
    gguf_close(f);
    return logits;
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++) best = v[i] > v[best] ? i : best;
    return best;
}

/* Relative rms logit error allowed for a type of b bits: weight error
 * eps = 1/(2^b - 1) (round trip above) passes through ~3 products in series
 * per layer, errors adding in quadrature over 2 layers and the classifier,
 * plus the activation rounding: ~eps * sqrt(7) ~ 2.6 eps; allowed 3 eps (see
 * docs/engine.md). */
static void test_models_track_f32(void)
{
    const char *dir = testlib_tmpdir();
    char f32[512], out[512];
    snprintf(f32, sizeof f32, "%s/tiny-f32.gguf", dir);
    gguf_writer_llama_params p = {
        .n_embd = 256, .n_layer = 2, .n_head = 4, .n_head_kv = 2, .n_ff = 512, .n_vocab = 512,
        .type = GGML_TYPE_F32, .seed = 7,
    };
    REQUIRE(gguf_writer_tiny_llama_ex(f32, &p) == 0);
    enum { NTOK = 40 }; /* >= MATMUL_SLAB_MIN_TOKENS: the prompt takes the slabs where there are */
    int32_t tokens[NTOK];
    for (int i = 0; i < NTOK; i++) tokens[i] = (int32_t)(rnd_u32() % 510);
    float *ref = model_logits(f32, tokens, NTOK, 0);
    const char *recipes[] = {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K",
                             "Q5_K", "Q6_K", "Q4_K_M", "Q5_K_M", "Q4_K_S", "Q5_K_S", "Q2_K_S",
                             "Q3_K_S", "Q3_K_M", "Q3_K_L", "F16", "BF16"};
    for (size_t k = 0; k < sizeof recipes / sizeof recipes[0]; k++) {
        quantize_recipe r;
        char err[256];
        REQUIRE(quantize_recipe_parse(recipes[k], &r, err, sizeof err) == 0);
        snprintf(out, sizeof out, "%s/tiny-%s.gguf", dir, recipes[k]);
        quantize_stats st;
        if (quantize_file(f32, out, &r, 2, &st, err, sizeof err) != 0) fprintf(stderr, "  %s\n", err);
        REQUIRE(quantize_file(f32, out, &r, 2, &st, err, sizeof err) == 0);
        CHECK(st.n_by_type[r.base] > 0);
        /* general.file_type carries the recipe's ftype */
        gguf_file *g = gguf_open(out, err, sizeof err);
        REQUIRE(g);
        uint32_t ft = 99;
        CHECK(gguf_get_u32(g, "general.file_type", &ft) == 0 && ft == r.ftype);
        gguf_close(g);

        float *got = model_logits(out, tokens, NTOK, 0);
        float *tbt = model_logits(out, tokens, NTOK, 1);
        int nv = p.n_vocab;
        double e2 = 0, r2 = 0;
        int agree = 0;
        for (int i = 0; i < NTOK; i++) {
            agree += argmax(got + i * nv, nv) == argmax(ref + i * nv, nv);
            for (int v = 0; v < nv; v++) {
                double d = got[i * nv + v] - ref[i * nv + v];
                e2 += d * d;
                r2 += (double)ref[i * nv + v] * ref[i * nv + v];
            }
        }
        double rel = sqrt(e2 / r2), sigma = sqrt(e2 / (NTOK * nv));
        /* A top-1 flip is allowed only where the F32 model's gap between its
         * choice and ours is within the logit noise (4 sigma of a difference
         * of two errors): random models have near-ties. */
        int unexplained = 0;
        for (int i = 0; i < NTOK; i++) {
            int a = argmax(ref + i * nv, nv), b = argmax(got + i * nv, nv);
            if (a != b && ref[i * nv + a] - ref[i * nv + b] > 4 * sqrt(2.0) * sigma) unexplained++;
        }
        int bits = type_bits(r.base);
        double eps = bits >= 16 ? 1.0 / 256 : 1.0 / ((1 << bits) - 1), bound = 3 * eps;
        fprintf(stderr, "  %-6s logits relative rms error %.4f (bound %.4f), top-1 agreement %d/%d\n",
                recipes[k], rel, bound, agree, NTOK);
        CHECK(rel <= bound);
        CHECK_EQ_INT(unexplained, 0);
        CHECK(memcmp(got, tbt, sizeof(float) * NTOK * (size_t)nv) == 0);
        /* the weights in the file's mapping, not interleaved: the same bits */
        setenv("LLMESH_INTERLEAVE", "0", 1);
        float *mapped = model_logits(out, tokens, NTOK, 0);
        unsetenv("LLMESH_INTERLEAVE");
        CHECK(memcmp(got, mapped, sizeof(float) * NTOK * (size_t)nv) == 0);
        free(mapped);
        free(got);
        free(tbt);
    }
    free(ref);
}

/* The type a recipe gives a tensor of a model with these shape facts. */
static ggml_type recipe_type(const char *recipe, const char *name, const uint64_t *ne, int n_layer, int tied,
                             int n_gqa)
{
    quantize_recipe r;
    char err[256];
    REQUIRE(quantize_recipe_parse(recipe, &r, err, sizeof err) == 0);
    quantize_model m = {.n_layer = n_layer, .tied = tied, .n_gqa = n_gqa};
    return quantize_choose_type(&r, name, ne[1] ? 2 : 1, ne, GGML_TYPE_F32, &m);
}

static void test_recipes(void)
{
    quantize_recipe r;
    char err[256];
    CHECK(quantize_recipe_parse("q4_k_m", &r, err, sizeof err) == 0 && r.ftype == 15);
    CHECK(quantize_recipe_parse("Q9_K", &r, err, sizeof err) == -1 && strstr(err, "Q4_K_M") && strstr(err, "Q3_K_L"));
    /* llama.cpp's ftype numbers */
    const struct { const char *name; uint32_t ftype; ggml_type base; } ft[] = {
        {"Q2_K_S", 21, GGML_TYPE_Q2_K}, {"Q3_K_S", 11, GGML_TYPE_Q3_K},
        {"Q3_K_M", 12, GGML_TYPE_Q3_K}, {"Q3_K_L", 13, GGML_TYPE_Q3_K}};
    for (size_t i = 0; i < sizeof ft / sizeof ft[0]; i++)
        CHECK(quantize_recipe_parse(ft[i].name, &r, err, sizeof err) == 0 && r.ftype == ft[i].ftype &&
              r.base == ft[i].base);
    uint64_t sq[2] = {256, 256}, down[2] = {704, 256}, norm[2] = {256, 0};
    /* 8 layers: more bits in 0 (< n/8), 7 (>= 7n/8), and 3, 6 ((i - 1) % 3 == 2) */
    int more[8] = {1, 0, 0, 1, 0, 0, 1, 1};
    for (int l = 0; l < 8; l++) {
        char name[64];
        snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);
        CHECK_EQ_INT(recipe_type("Q4_K_M", name, sq, 8, 0, 1), more[l] ? GGML_TYPE_Q6_K : GGML_TYPE_Q4_K);
        snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);
        CHECK_EQ_INT(recipe_type("Q4_K_M", name, sq, 8, 0, 1), GGML_TYPE_Q4_K);
        /* 704 is not a multiple of 256: Q6_K -> Q8_0, Q4_K -> Q5_0 */
        snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);
        CHECK_EQ_INT(recipe_type("Q4_K_M", name, down, 8, 0, 1), more[l] ? GGML_TYPE_Q8_0 : GGML_TYPE_Q5_0);
    }
    CHECK_EQ_INT(recipe_type("Q4_K_M", "output.weight", sq, 8, 0, 1), GGML_TYPE_Q6_K);
    CHECK_EQ_INT(recipe_type("Q4_K_M", "token_embd.weight", sq, 8, 0, 1), GGML_TYPE_Q4_K);
    CHECK_EQ_INT(recipe_type("Q4_K_M", "token_embd.weight", sq, 8, 1, 1), GGML_TYPE_Q6_K);
    CHECK_EQ_INT(recipe_type("Q4_K_M", "output_norm.weight", norm, 8, 0, 1), GGML_TYPE_F32);

    /* The 2- and 3-bit mixtures, 32 layers (n/8 = 4, n/16 = 2). */
    const ggml_type Q2 = GGML_TYPE_Q2_K, Q3 = GGML_TYPE_Q3_K, Q4 = GGML_TYPE_Q4_K, Q5 = GGML_TYPE_Q5_K,
                    Q6 = GGML_TYPE_Q6_K;
    const struct {
        const char *recipe, *tensor;
        int gqa;
        ggml_type in_layer[4]; /* layers 0, 3, 4, 31 */
    } cases[] = {
        {"Q2_K_S", "attn_v", 1, {Q2, Q2, Q2, Q2}},       {"Q2_K_S", "attn_v", 4, {Q4, Q4, Q4, Q4}},
        {"Q2_K_S", "ffn_down", 1, {Q4, Q4, Q2, Q2}},     {"Q2_K_S", "attn_output", 4, {Q2, Q2, Q2, Q2}},
        {"Q2_K_S", "ffn_up", 4, {Q2, Q2, Q2, Q2}},       {"Q3_K_S", "attn_v", 8, {Q3, Q3, Q3, Q3}},
        {"Q3_K_S", "ffn_down", 8, {Q3, Q3, Q3, Q3}},     {"Q3_K_S", "attn_output", 8, {Q3, Q3, Q3, Q3}},
        {"Q3_K_M", "attn_v", 1, {Q5, Q4, Q4, Q4}},       {"Q3_K_M", "ffn_down", 1, {Q5, Q4, Q4, Q4}},
        {"Q3_K_M", "attn_output", 1, {Q4, Q4, Q4, Q4}},  {"Q3_K_M", "attn_qkv", 1, {Q4, Q4, Q4, Q4}},
        {"Q3_K_M", "attn_q", 1, {Q3, Q3, Q3, Q3}},       {"Q3_K_M", "ffn_gate", 1, {Q3, Q3, Q3, Q3}},
        {"Q3_K_L", "attn_v", 1, {Q5, Q5, Q5, Q5}},       {"Q3_K_L", "ffn_down", 1, {Q5, Q5, Q5, Q5}},
        {"Q3_K_L", "attn_output", 1, {Q5, Q5, Q5, Q5}},  {"Q3_K_L", "attn_qkv", 1, {Q4, Q4, Q4, Q4}},
        {"Q3_K_L", "attn_k", 1, {Q3, Q3, Q3, Q3}},       {"Q3_K_L", "ffn_up", 1, {Q3, Q3, Q3, Q3}},
    };
    const int layers[4] = {0, 3, 4, 31};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int k = 0; k < 4; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", layers[k], cases[c].tensor);
            ggml_type got = recipe_type(cases[c].recipe, name, sq, 32, 0, cases[c].gqa);
            if (got != cases[c].in_layer[k])
                fprintf(stderr, "  %s %s (gqa %d): %s, want %s\n", cases[c].recipe, name, cases[c].gqa,
                        ggml_type_name(got), ggml_type_name(cases[c].in_layer[k]));
            CHECK_EQ_INT(got, cases[c].in_layer[k]);
        }
    const char *mixes[] = {"Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L"};
    for (int k = 0; k < 4; k++) {
        CHECK_EQ_INT(recipe_type(mixes[k], "output.weight", sq, 32, 0, 1), Q6);
        CHECK_EQ_INT(recipe_type(mixes[k], "token_embd.weight", sq, 32, 1, 1), Q6);
        CHECK_EQ_INT(recipe_type(mixes[k], "token_embd.weight", sq, 32, 0, 1), k ? Q3 : Q2);
        /* rows of 704: the 32-block fallbacks */
        CHECK_EQ_INT(recipe_type(mixes[k], "blk.9.ffn_up.weight", down, 32, 0, 1), GGML_TYPE_Q4_0);
        CHECK_EQ_INT(recipe_type(mixes[k], "output.weight", down, 32, 0, 1), GGML_TYPE_Q8_0);
    }
    /* 80 layers: attn_v at Q3_K or Q4_K goes to Q5_K, in every recipe */
    CHECK_EQ_INT(recipe_type("Q3_K_M", "blk.40.attn_v.weight", sq, 80, 0, 8), Q5);
    CHECK_EQ_INT(recipe_type("Q3_K_S", "blk.40.attn_v.weight", sq, 80, 0, 8), Q5);
    CHECK_EQ_INT(recipe_type("Q4_K_M", "blk.40.attn_v.weight", sq, 80, 0, 8), Q5);
    CHECK_EQ_INT(recipe_type("Q2_K_S", "blk.40.attn_v.weight", sq, 80, 0, 1), Q2);
    CHECK_EQ_INT(recipe_type("Q3_K", "blk.40.attn_v.weight", sq, 80, 0, 8), Q3); /* pure stays pure */
}

/* The row-lane layout and kernels of Q4_K and Q6_K (docs/engine.md, "K-quants
 * in row lanes"): a group of 16 rows packed and read back row by row gives
 * the GGUF bytes again; every set's row-lane kernel, for every token count
 * 1..17 (whole tiles and every leftover), gives every (row, token) the bits of
 * the scalar dot product (the canonical order). Half the rows are quantized
 * floats, half random bytes with sane fp16 scales (levels, scales and mins
 * over their whole ranges, Q6_K's int8 scales down to -128); tokens differ in
 * scale and each block's largest activation is +-127. */
static void test_kquant_lane_kernels(void)
{
    enum { G = KERNEL_LANE_ROWS, NT = 17, OS = G + 3 };
    _Static_assert(KERNEL_LANE_ROWS == QUANT_LANES, "one group size");
    static const ggml_type types[] = {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K};
    static const int widths[] = {256, 768, 2048};
    int ran = 0;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++)
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
            ggml_type t = types[ti];
            int n = widths[wi];
            const quant_traits *qt = quant_get_traits(t);
            size_t stride = kernel_row_bytes(t, n), astride = kernel_row_bytes(GGML_TYPE_Q8_K, n);
            size_t bb = (size_t)qt->block_bytes;
            uint8_t *w = malloc(stride * G), *group = malloc(quant_lanes_block_bytes(t) * (size_t)(n / 256));
            uint8_t *back = malloc(stride), *act = malloc(astride * NT);
            float *x = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * NT * G);
            float *got = malloc(sizeof(float) * NT * OS);
            REQUIRE(w && group && back && act && x && want && got);
            for (int r = 0; r < G; r++) {
                uint8_t *row = w + r * stride;
                if (r % 2 == 0) {
                    for (int i = 0; i < n; i++) x[i] = rnd_uniform(-1, 1) * (r == 4 ? 1e-3f : 1.0f);
                    quantize_row(t, x, row, n);
                    continue;
                }
                for (size_t i = 0; i < stride; i++) row[i] = (uint8_t)rnd_u32();
                for (int i = 0; i < n / 256; i++) { /* d (and dmin) in [2^-8, 2^-7) */
                    uint16_t d = (uint16_t)(0x1c00 | (rnd_u32() & 0x3ff)), dmin = (uint16_t)(0x1c00 | (rnd_u32() & 0x3ff));
                    if (t == GGML_TYPE_Q4_K) {
                        memcpy(row + i * bb, &d, 2);
                        memcpy(row + i * bb + 2, &dmin, 2);
                    } else {
                        memcpy(row + i * bb + offsetof(quant_block_q6_k, d), &d, 2);
                        if (r == 1) row[i * bb + offsetof(quant_block_q6_k, scales)] = 0x80; /* -128 */
                    }
                }
            }
            quant_lanes_pack(t, w, stride, n, group);
            for (int r = 0; r < G; r++) {
                quant_lanes_row(t, group, r, n, back);
                if (memcmp(back, w + r * stride, stride)) {
                    fprintf(stderr, "  %s n=%d: row %d does not come back from its group\n", ggml_type_name(t), n, r);
                    CHECK(0);
                }
            }
            for (int k = 0; k < NT; k++) {
                float scale = k % 3 == 0 ? 1e-3f : k % 3 == 1 ? 1.0f : 10.0f;
                for (int i = 0; i < n; i++) x[i] = rnd_uniform(-2, 2) * scale;
                quant_quantize_row_q8_k(x, (quant_block_q8_k *)(act + k * astride), n);
                for (int r = 0; r < G; r++) want[k * G + r] = qt->dot_scalar(w + r * stride, act + k * astride, n);
            }
            struct {
                const char *name;
                kernel_isa isa;
                kernel_lane_fn fn;
            } sets[] = {{"avx2", KERNEL_ISA_AVX2, kernel_lane_avx2(t)},
                        {"avxvnni", KERNEL_ISA_AVXVNNI, kernel_lane_avxvnni(t)},
                        {"avx512/256", KERNEL_ISA_AVX512, kernel_lane_avx512_width(t, 256)},
                        {"avx512", KERNEL_ISA_AVX512, kernel_lane_avx512(t)}};
            for (size_t si = 0; si < sizeof sets / sizeof sets[0]; si++) {
                if (!sets[si].fn || !kernel_isa_available(sets[si].isa)) continue;
                ran++;
                for (int ntok = 1; ntok <= NT; ntok++) {
                    for (int i = 0; i < NT * OS; i++) got[i] = -1;
                    sets[si].fn(group, act, astride, ntok, n, got, OS);
                    int bad = 0;
                    for (int k = 0; k < ntok; k++)
                        for (int r = 0; r < G; r++)
                            if (memcmp(&got[k * OS + r], &want[k * G + r], sizeof(float)) && bad++ < 3)
                                fprintf(stderr, "  %s %s n=%d ntok=%d: token %d row %d: %.9g, scalar %.9g\n",
                                        ggml_type_name(t), sets[si].name, n, ntok, k, r, got[k * OS + r], want[k * G + r]);
                    for (int k = 0; k < ntok; k++)
                        for (int r = G; r < OS; r++) bad += got[k * OS + r] != -1; /* nothing past the group */
                    CHECK_EQ_INT(bad, 0);
                }
            }
            free(w), free(group), free(back), free(act), free(x), free(want), free(got);
        }
    if (!ran) fprintf(stderr, "  (no row-lane kernels on this CPU: only the layout checked)\n");
}

int main(void)
{
    RUN(test_known_answers_32);
    RUN(test_known_answers_k);
    RUN(test_round_trip);
    RUN(test_dot_products);
    RUN(test_rows_kernels);
    RUN(test_tile_kernels);
    RUN(test_slab_kernels);
    RUN(test_lane_kernels);
    RUN(test_matmul_all_types);
    RUN(test_interleaved_matrices);
    RUN(test_kquant_lane_kernels);
    RUN(test_recipes);
    RUN(test_models_track_f32);
    return testlib_finish();
}
