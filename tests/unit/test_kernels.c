/* test_kernels.c: conversions, Q8_0, dot products, matmul and the thread pool
 * against plain references, on every ISA this CPU has.
 * Not here: model-level numerics (test_model.c, test_perplexity.c). */
#include "engine/kernels.h"
#include "lib/threadpool.h"
#include "testlib.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

/* Small deterministic generator for test data. */
static uint64_t rng_state = 0x1234567887654321ull;
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

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* fp16 value computed from its definition, in double. */
static double fp16_reference(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0) v = ldexp(mant, -24);
    else if (exp == 31) v = mant ? NAN : INFINITY;
    else v = ldexp(1024 + mant, exp - 25);
    return sign ? -v : v;
}

static void test_fp16_to_fp32_exhaustive(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float got = kernel_fp16_to_fp32((uint16_t)h);
        double want = fp16_reference((uint16_t)h);
        if (isnan(want)) {
            /* NaN keeps sign and payload: the half's 10 bits land on top of the float's mantissa. */
            if (!isnan(got) || (bits(got) >> 31) != (h >> 15) ||
                ((bits(got) >> 13) & 0x3ff) != (h & 0x3ff))
                bad++;
        } else if ((double)got != want || !signbit(got) != !signbit(want)) {
            bad++;
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_fp16_round_trip_and_rounding(void)
{
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kernel_fp16_to_fp32((uint16_t)h);
        uint16_t back = kernel_fp32_to_fp16(f);
        if (isnan(f)) {
            if ((back & 0x7c00) != 0x7c00 || !(back & 0x3ff) || (back & 0x8000) != (h & 0x8000)) bad++;
            continue;
        }
        if (back != h) bad++;
        /* Between this half and the next one up (same sign): below the midpoint
         * rounds down, above rounds up, at it rounds to the even mantissa. */
        if ((h & 0x7fff) >= 0x7bff) continue; /* the largest finite and inf: checked below */
        double lo = fp16_reference((uint16_t)h), hi = fp16_reference((uint16_t)(h + 1));
        double mid = (lo + hi) / 2;
        float mid_f = (float)mid; /* exact: halves have 11 significant bits */
        if ((double)mid_f != mid) { bad++; continue; }
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (kernel_fp32_to_fp16(mid_f) != even) bad++;
        if (kernel_fp32_to_fp16(nextafterf(mid_f, (float)lo)) != h) bad++;
        if (kernel_fp32_to_fp16(nextafterf(mid_f, (float)hi)) != (uint16_t)(h + 1)) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(kernel_fp32_to_fp16(65504.0f), 0x7bff);
    CHECK_EQ_INT(kernel_fp32_to_fp16(65519.99f), 0x7bff);
    CHECK_EQ_INT(kernel_fp32_to_fp16(65520.0f), 0x7c00);
    CHECK_EQ_INT(kernel_fp32_to_fp16(1e10f), 0x7c00);
    CHECK_EQ_INT(kernel_fp32_to_fp16(-INFINITY), 0xfc00);
    CHECK_EQ_INT(kernel_fp32_to_fp16(1e-10f), 0x0000);
    CHECK_EQ_INT(kernel_fp32_to_fp16(-0.0f), 0x8000);
    CHECK((kernel_fp32_to_fp16(NAN) & 0x7fff) > 0x7c00);
    /* A NaN whose payload sits only in the low float bits must stay NaN. */
    float low_nan;
    uint32_t u = 0x7f800001u;
    memcpy(&low_nan, &u, 4);
    CHECK((kernel_fp32_to_fp16(low_nan) & 0x7fff) > 0x7c00);
}

#ifdef __FLT16_MAX__
/* The compiler's own _Float16 conversion is an independent reference. */
static void test_fp16_vs_compiler(void)
{
    int bad = 0;
    for (int i = 0; i < 200000; i++) {
        float f;
        uint32_t u = rnd_u32();
        if (i % 2) u = (u & 0x8fffffffu) | 0x30000000u; /* bias towards the half range */
        memcpy(&f, &u, 4);
        if (isnan(f)) continue;
        _Float16 h = (_Float16)f;
        uint16_t want;
        memcpy(&want, &h, 2);
        if (kernel_fp32_to_fp16(f) != want) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}
#endif

static void test_fp16_row_matches_scalar(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    static uint16_t src[65536];
    static float dst[65536];
    for (uint32_t h = 0; h < 65536; h++) src[h] = (uint16_t)h;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        kernel_fp16_to_fp32_row(src, dst, 65536);
        int bad = 0;
        for (uint32_t h = 0; h < 65536; h++) {
            float want = kernel_fp16_to_fp32((uint16_t)h);
            if (isnan(want) ? !isnan(dst[h]) : bits(dst[h]) != bits(want)) bad++;
        }
        CHECK_EQ_INT(bad, 0);
    }
    kernel_force_isa(saved);
}

/* The row conversion to fp16 equals the scalar one on every ISA: every
 * fp16 value, the midpoints between neighbours (ties to even), values
 * around the subnormal and overflow edges, and random floats; NaN stays NaN. */
static void test_fp32_to_fp16_row_matches_scalar(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 3 * 65536 + 8 + 4 };
    static float src[N];
    static uint16_t dst[N];
    int n = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kernel_fp16_to_fp32((uint16_t)h), g = kernel_fp16_to_fp32((uint16_t)(h + 1));
        src[n++] = f;
        src[n++] = isfinite(f) && isfinite(g) ? (float)(((double)f + g) / 2) : f; /* a tie */
        src[n++] = rnd_uniform(-70000.0f, 70000.0f) * (h % 3 ? 1e-6f : 1.0f);
    }
    const float edges[] = {65504.0f, 65519.99f, 65520.0f, 1e-8f, -2.98e-8f, 6.1e-5f, 5.96e-8f, -0.0f,
                           INFINITY, -INFINITY, NAN, 1e30f};
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) src[n++] = edges[i];
    REQUIRE(n == N);
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        kernel_fp32_to_fp16_row(src, dst, N - 3); /* an odd length: the tail too */
        kernel_fp32_to_fp16_row(src + N - 3, dst + N - 3, 3);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            uint16_t want = kernel_fp32_to_fp16(src[i]);
            if (isnan(src[i]) ? (dst[i] & 0x7fff) <= 0x7c00 : dst[i] != want) bad++;
        }
        CHECK_EQ_INT(bad, 0);
    }
    kernel_force_isa(saved);
}

/* out += a * v with v in fp16: each element within one float rounding of
 * the exact value (the AVX2 path fuses the multiply and the add), on every
 * ISA, lengths with and without a tail. */
static void test_axpy_f16(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { MAXN = 131 };
    uint16_t v[MAXN];
    float out[MAXN], start[MAXN];
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        int bad = 0;
        for (int n = 1; n <= MAXN; n += 13) {
            float a = rnd_uniform(-2, 2);
            for (int i = 0; i < n; i++) {
                v[i] = kernel_fp32_to_fp16(rnd_uniform(-4, 4));
                out[i] = start[i] = rnd_uniform(-4, 4);
            }
            kernel_axpy_f16(out, a, v, n);
            for (int i = 0; i < n; i++) {
                double want = start[i] + (double)a * kernel_fp16_to_fp32(v[i]);
                if (fabs(out[i] - want) > 2.5e-7 * (fabs(want) + fabs(a * kernel_fp16_to_fp32(v[i])))) bad++;
            }
        }
        CHECK_EQ_INT(bad, 0);
    }
    kernel_force_isa(saved);
}

static void test_bf16(void)
{
    CHECK_EQ_INT(kernel_fp32_to_bf16(1.0f), 0x3f80);
    CHECK(kernel_bf16_to_fp32(0x3f80) == 1.0f);
    CHECK_EQ_INT(kernel_fp32_to_bf16(1.00390625f), 0x3f80);   /* tie -> even */
    CHECK_EQ_INT(kernel_fp32_to_bf16(1.01171875f), 0x3f82);   /* tie -> even (up) */
    CHECK(isnan(kernel_bf16_to_fp32(kernel_fp32_to_bf16(NAN))));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kernel_bf16_to_fp32((uint16_t)h);
        if (!isnan(f) && kernel_fp32_to_bf16(f) != h) bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* Quantization error of one value is at most half a step, plus the error of
 * rounding the scale itself to fp16, times |q| <= 127. */
static void test_q8_0_quantize(void)
{
    enum { N = 32 * 64 };
    float x[N], back[N];
    kernel_block_q8_0 q[N / 32];
    for (int i = 0; i < N; i++) x[i] = rnd_uniform(-3, 3) * (i % 96 < 32 ? 0.001f : 1.0f);
    x[5] = 0;
    for (int i = 64; i < 96; i++) x[i] = 0; /* an all-zero block */
    kernel_quantize_row_q8_0(x, q, N);
    kernel_dequantize_row(GGML_TYPE_Q8_0, q, back, N);
    int bad = 0;
    for (int b = 0; b < N / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float d = amax / 127;
        double d_err = fabs((double)kernel_fp16_to_fp32(q[b].d) - d);
        for (int i = 0; i < 32; i++) {
            int k = b * 32 + i;
            double tol = d * 0.5 + 127.0 * d_err + 1e-12;
            if (fabs((double)back[k] - x[k]) > tol) bad++;
            if (q[b].qs[i] == -128) bad++; /* our quantizer stays in [-127, 127] */
        }
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(back[70] == 0 && back[5] == 0);
}

/* Every set's quantizer gives the scalar one's bytes: random blocks of
 * several magnitudes, an all-zero block, ties at half steps, values at the
 * block maximum (+-127), -0, and NaN and infinities (which give 0 there). */
static void test_q8_0_quantize_sets_agree(void)
{
    kernel_isa isas[] = {KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 32 * 40 };
    static float x[N];
    static kernel_block_q8_0 want[N / 32], got[N / 32];
    for (int i = 0; i < N; i++) x[i] = rnd_uniform(-3, 3) * (i % 96 < 32 ? 0.001f : 1.0f);
    for (int i = 64; i < 96; i++) x[i] = 0;
    for (int i = 96; i < 128; i++) x[i] = (float)(i - 112) + 0.5f; /* max 15.5: x / d has many halves */
    for (int i = 128; i < 160; i++) x[i] = (i & 1 ? 1.0f : -1.0f) * 127.0f / (float)(1 + i % 5);
    x[200] = -0.0f;
    x[300] = NAN;
    x[400] = INFINITY;
    x[500] = -INFINITY;
    CHECK(kernel_force_isa(KERNEL_ISA_SCALAR) == 0);
    kernel_quantize_row_q8_0(x, want, N);
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        memset(got, 0x55, sizeof got);
        kernel_quantize_row_q8_0(x, got, N);
        CHECK(memcmp(got, want, sizeof want) == 0);
    }
    kernel_force_isa(saved);
}

/* argmax at every set: the scalar loop's index (first of the largest, NaN
 * never wins, 0 when nothing beats -inf), over lengths with tails, ties
 * between lanes and within one, NaN and infinities. */
static void test_argmax_sets_agree(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 1000 };
    static float x[N];
    int bad = 0, cases = 0;
    for (int c = 0; c < 60; c++) {
        int n = 1 + (c * 37) % N;
        for (int i = 0; i < n; i++) x[i] = (float)(rand() % 50); /* many ties */
        if (c % 5 == 1) x[(c * 13) % n] = NAN;
        if (c % 5 == 2) for (int i = 0; i < n; i++) x[i] = i % 3 ? NAN : -INFINITY; /* nothing wins: 0 */
        if (c % 5 == 3) x[n - 1] = INFINITY; /* in the tail or the last lane */
        if (c % 5 == 4) x[n / 2] = 1000, x[n / 2 + 9] = 1000; /* a tie across steps */
        int32_t want = 0; /* the definition: the first index of a value above all before it */
        float top = -INFINITY;
        for (int32_t i = 0; i < n; i++)
            if (x[i] > top) top = x[i], want = i;
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            if (kernel_force_isa(isas[k]) != 0) continue;
            cases++;
            if (kernel_argmax(x, n) != want) bad++;
        }
    }
    kernel_force_isa(saved);
    CHECK_EQ_INT(bad, 0);
    CHECK(cases >= 120);
}

static void test_dot_products(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 32 * 23 }; /* not a multiple of the vector widths x 4 */
    static float a[N], b[N], af[N];
    static uint16_t a16[N], abf[N];
    static kernel_block_q8_0 qa[N / 32], qb[N / 32];
    for (int i = 0; i < N; i++) {
        a[i] = rnd_uniform(-1, 1);
        b[i] = rnd_uniform(-1, 1);
        a16[i] = kernel_fp32_to_fp16(a[i]);
        abf[i] = kernel_fp32_to_bf16(a[i]);
    }
    kernel_quantize_row_q8_0(a, qa, N);
    kernel_quantize_row_q8_0(b, qb, N);
    qa[3].qs[7] = -128; /* weights from a file may hold -128: the integer sum must be exact */
    qb[3].qs[7] = -127;
    qa[3].qs[8] = -128;
    qb[3].qs[8] = 127;
    qa[3].qs[9] = 127;  /* the largest pair sums of the AVX2 path */
    qb[3].qs[9] = 127;
    qa[3].qs[10] = 127;
    qb[3].qs[10] = 127;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        for (int n = 0; n <= N; n += (n < 40 ? 1 : 37)) {
            double ref = 0, mag = 0;
            for (int i = 0; i < n; i++) ref += (double)a[i] * b[i], mag += fabs((double)a[i] * b[i]);
            double tol = mag * 2e-6 + 1e-6; /* float accumulation, n <= 736 in 8+ lanes */
            CHECK(fabs(kernel_dot_f32(a, b, n) - ref) <= tol);

            double r16 = 0;
            for (int i = 0; i < n; i++) r16 += (double)kernel_fp16_to_fp32(a16[i]) * b[i];
            CHECK(fabs(kernel_dot_f16_f32(a16, b, n) - r16) <= tol);

            double rbf = 0;
            for (int i = 0; i < n; i++) rbf += (double)kernel_bf16_to_fp32(abf[i]) * b[i];
            CHECK(fabs(kernel_dot_bf16_f32(abf, b, n) - rbf) <= tol);

            if (n % 32 == 0) {
                kernel_dequantize_row(GGML_TYPE_Q8_0, qa, af, n);
                float bq[N];
                kernel_dequantize_row(GGML_TYPE_Q8_0, qb, bq, n);
                double rq = 0, mq = 0;
                for (int i = 0; i < n; i++) rq += (double)af[i] * bq[i], mq += fabs((double)af[i] * bq[i]);
                CHECK(fabs(kernel_dot_q8_0(qa, qb, n) - rq) <= mq * 2e-6 + 1e-6);
            }
        }
    }
    kernel_force_isa(saved);
}

/* Builds a rows x cols matrix of the given type from random floats; returns
 * the raw data (caller frees). */
static void *make_matrix(ggml_type t, int rows, int cols, float scale)
{
    size_t stride = kernel_row_bytes(t, cols);
    uint8_t *data = malloc(stride * rows);
    float *row = malloc(sizeof(float) * cols);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) row[c] = rnd_uniform(-scale, scale);
        uint8_t *dst = data + (size_t)r * stride;
        switch (t) {
        case GGML_TYPE_F32: memcpy(dst, row, stride); break;
        case GGML_TYPE_F16:
            for (int c = 0; c < cols; c++) ((uint16_t *)dst)[c] = kernel_fp32_to_fp16(row[c]);
            break;
        case GGML_TYPE_BF16:
            for (int c = 0; c < cols; c++) ((uint16_t *)dst)[c] = kernel_fp32_to_bf16(row[c]);
            break;
        case GGML_TYPE_Q8_0: kernel_quantize_row_q8_0(row, (kernel_block_q8_0 *)dst, cols); break;
        default: break;
        }
    }
    free(row);
    return data;
}

/* Matmul against the reference for every type, ISA, thread count and a few
 * batch sizes; also checks that thread count and batching change no bit. */
static void test_matmul(void)
{
    ggml_type types[] = {GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0};
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { ROWS = 67, COLS = 96, NMAX = 11 };
    char err[128];
    threadpool *pools[3] = {threadpool_create(1, err, sizeof err), threadpool_create(2, err, sizeof err),
                            threadpool_create(5, err, sizeof err)};
    REQUIRE(pools[0] && pools[1] && pools[2]);
    static float x[NMAX * COLS], y[NMAX * ROWS], y0[NMAX * ROWS], yref[NMAX * ROWS], y1[ROWS];
    static uint8_t scratch[NMAX * COLS * 8]; /* Q8_0 blocks and their prepared form (avx512) */
    for (int i = 0; i < NMAX * COLS; i++) x[i] = rnd_uniform(-2, 2);

    for (size_t ti = 0; ti < 4; ti++) {
        kernel_matrix w = {types[ti], ROWS, COLS, make_matrix(types[ti], ROWS, COLS, 0.5f), 0};
        REQUIRE(kernel_matmul_scratch_bytes(w.type, COLS, NMAX) <= sizeof scratch);
        kernel_matmul_ref(&w, x, NMAX, yref);
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            if (kernel_force_isa(isas[k]) != 0) continue;
            kernel_matmul(pools[0], &w, x, NMAX, y0, scratch);
            /* Tolerance: float accumulation, plus for Q8_0 the activation's
             * quantization error (half a step and the fp16 scale rounding per
             * value) weighted by |w|. */
            int bad = 0;
            for (int t = 0; t < NMAX; t++) {
                const float *xt = x + t * COLS;
                float wrow[COLS];
                for (int r = 0; r < ROWS; r++) {
                    kernel_dequantize_row(w.type, (uint8_t *)w.data + r * kernel_row_bytes(w.type, COLS),
                                          wrow, COLS);
                    double mag = 0, qerr = 0;
                    for (int c = 0; c < COLS; c++) mag += fabs((double)wrow[c] * xt[c]);
                    if (w.type == GGML_TYPE_Q8_0) {
                        for (int b = 0; b < COLS / 32; b++) {
                            float amax = 0;
                            double wsum = 0;
                            for (int i = 0; i < 32; i++) {
                                amax = fmaxf(amax, fabsf(xt[b * 32 + i]));
                                wsum += fabs(wrow[b * 32 + i]);
                            }
                            qerr += wsum * (amax / 127.0) * (0.5 + 127.0 * ldexp(1, -11));
                        }
                    }
                    double tol = mag * 4e-6 + qerr + 1e-5;
                    if (fabs(y0[t * ROWS + r] - yref[t * ROWS + r]) > tol) bad++;
                }
            }
            CHECK_EQ_INT(bad, 0);
            for (int p = 1; p < 3; p++) {
                kernel_matmul(pools[p], &w, x, NMAX, y, scratch);
                CHECK(memcmp(y, y0, sizeof(float) * NMAX * ROWS) == 0);
            }
            for (int t = 0; t < NMAX; t++) { /* one vector at a time: same bits */
                kernel_matmul(pools[1], &w, x + t * COLS, 1, y1, scratch);
                CHECK(memcmp(y1, y0 + t * ROWS, sizeof y1) == 0);
            }
        }
        free((void *)w.data);
    }
    kernel_force_isa(saved);
    for (int p = 0; p < 3; p++) threadpool_free(pools[p]);
}

/* A multi-product gives each product exactly what a single one gives. */
static void test_matmul_multi(void)
{
    enum { COLS = 64, N = 5 };
    char err[128];
    threadpool *pool = threadpool_create(3, err, sizeof err);
    REQUIRE(pool);
    kernel_matrix a = {GGML_TYPE_F32, 40, COLS, make_matrix(GGML_TYPE_F32, 40, COLS, 1), 0};
    kernel_matrix b = {GGML_TYPE_Q8_0, 9, COLS, make_matrix(GGML_TYPE_Q8_0, 9, COLS, 1), 0};
    kernel_matrix c = {GGML_TYPE_F16, 130, COLS, make_matrix(GGML_TYPE_F16, 130, COLS, 1), 0};
    static float x[N * COLS], ya[N * 40], yb[N * 9], yc[N * 130], za[N * 40], zb[N * 9], zc[N * 130];
    static uint8_t scratch[N * COLS * 8]; /* Q8_0 blocks and their prepared form (avx512) */
    REQUIRE(kernel_matmul_scratch_bytes(b.type, COLS, N) <= sizeof scratch);
    for (int i = 0; i < N * COLS; i++) x[i] = rnd_uniform(-1, 1);
    const kernel_matrix *w[3] = {&a, &b, &c};
    float *y[3] = {ya, yb, yc};
    kernel_matmul_multi(pool, 3, w, x, N, y, scratch);
    kernel_matmul(pool, &a, x, N, za, scratch);
    kernel_matmul(pool, &b, x, N, zb, scratch);
    kernel_matmul(pool, &c, x, N, zc, scratch);
    CHECK(memcmp(ya, za, sizeof ya) == 0);
    CHECK(memcmp(yb, zb, sizeof yb) == 0);
    CHECK(memcmp(yc, zc, sizeof yc) == 0);
    free((void *)a.data);
    free((void *)b.data);
    free((void *)c.data);
    threadpool_free(pool);
}

static void test_vector_ops(void)
{
    float x[64], w[64], out[64];
    double ss = 0;
    for (int i = 0; i < 64; i++) {
        x[i] = rnd_uniform(-2, 2);
        w[i] = rnd_uniform(0.5f, 1.5f);
        ss += (double)x[i] * x[i];
    }
    kernel_rmsnorm(out, x, w, 64, 1e-5f);
    double scale = 1.0 / sqrt(ss / 64 + 1e-5);
    for (int i = 0; i < 64; i++) CHECK(fabs(out[i] - x[i] * scale * w[i]) < 1e-5);

    float s[5] = {1, 2, 3, 1000, -INFINITY};
    kernel_softmax(s, 5);
    CHECK(fabsf(s[3] - 1.0f) < 1e-6f && s[0] == 0 && s[4] == 0);
    float s2[3] = {0, logf(2), logf(3)};
    kernel_softmax(s2, 3);
    CHECK(fabsf(s2[0] - 1 / 6.0f) < 1e-6f && fabsf(s2[2] - 0.5f) < 1e-6f);

    float g[3] = {0, 1, -1}, u[3] = {2, 2, 2};
    kernel_swiglu(g, u, 3);
    CHECK(g[0] == 0);
    CHECK(fabsf(g[1] - 2 * 0.7310586f) < 1e-6f && fabsf(g[2] + 2 * 0.2689414f) < 1e-6f);
}

/* ---- thread pool ---- */

typedef struct {
    atomic_int *hits;
    atomic_int max_thread;
    int n_threads;
    atomic_int bad_thread;
} pool_ctx;

static void count_task(void *ctx, int task, int thread)
{
    pool_ctx *c = ctx;
    atomic_fetch_add(&c->hits[task], 1);
    if (thread < 0 || thread >= c->n_threads) atomic_fetch_add(&c->bad_thread, 1);
}

static void test_threadpool(void)
{
    char err[128];
    int counts[] = {1, 2, 3, 8};
    for (size_t k = 0; k < 4; k++) {
        threadpool *pool = threadpool_create(counts[k], err, sizeof err);
        REQUIRE(pool);
        CHECK_EQ_INT(threadpool_size(pool), counts[k]);
        enum { MAXT = 300 };
        atomic_int hits[MAXT];
        int bad = 0;
        for (int round = 0; round < 2000; round++) {
            int n_tasks = round % MAXT; /* includes 0 and 1 */
            for (int i = 0; i < MAXT; i++) atomic_init(&hits[i], 0);
            pool_ctx c = {.hits = hits, .n_threads = counts[k]};
            atomic_init(&c.bad_thread, 0);
            threadpool_run(pool, n_tasks, count_task, &c);
            for (int i = 0; i < MAXT; i++)
                if (atomic_load(&hits[i]) != (i < n_tasks)) bad++;
            bad += atomic_load(&c.bad_thread);
        }
        CHECK_EQ_INT(bad, 0);
        threadpool_free(pool);
    }
    threadpool *pool = threadpool_create(0, err, sizeof err);
    REQUIRE(pool);
    CHECK(threadpool_size(pool) >= 1);
    threadpool_free(pool);
    CHECK(threadpool_create(100000, err, sizeof err) == NULL);
}

/* Sleeping workers must wake: dispatch after the spin phase has passed. */
static void test_threadpool_after_idle(void)
{
    char err[128];
    threadpool *pool = threadpool_create(3, err, sizeof err);
    REQUIRE(pool);
    atomic_int hits[16];
    for (int round = 0; round < 5; round++) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        for (int i = 0; i < 16; i++) atomic_init(&hits[i], 0);
        pool_ctx c = {.hits = hits, .n_threads = 3};
        atomic_init(&c.bad_thread, 0);
        threadpool_run(pool, 16, count_task, &c);
        for (int i = 0; i < 16; i++) CHECK_EQ_INT(atomic_load(&hits[i]), 1);
    }
    threadpool_free(pool);
}

/* SwiGLU on every ISA: within 4 float roundings of the definition in
 * double (the AVX2 exponential is a polynomial, not libm's; results under
 * 1e-35, from gates below -80, are left out: both paths flush them
 * differently), and the same bits for a value whatever its place
 * and the length of the call (a row, a slice of a thread, a tail). */
static void test_swiglu_sets(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 4099 };
    static float g[N], u[N], whole[N], piece[N];
    for (int i = 0; i < N; i++) {
        g[i] = (float)((rand() / (double)RAND_MAX - 0.5) * (i % 7 == 0 ? 200 : 20)); /* some past e^+-88 */
        u[i] = (float)((rand() / (double)RAND_MAX - 0.5) * 4);
    }
    g[0] = 0, g[1] = -0.0f, g[2] = 88.5f, g[3] = -88.5f, g[4] = 1e-30f, g[5] = -1e-30f;
    int cases = 0, far = 0, differs = 0;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        cases++;
        memcpy(whole, g, sizeof whole);
        kernel_swiglu(whole, u, N);
        for (int i = 0; i < N; i++) {
            double want = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            if (fabs(whole[i] - want) > 4 * 0x1p-24 * fabs(want) + 1e-35) far++; /* below: e^-88 territory */
        }
        /* pieces of 1 to 19 values at odd offsets */
        memcpy(piece, g, sizeof piece);
        for (int at = 0, len = 1; at < N; at += len, len = len % 19 + 1)
            kernel_swiglu(piece + at, u + at, at + len <= N ? len : N - at);
        differs += memcmp(whole, piece, sizeof whole) != 0;
    }
    kernel_force_isa(saved);
    CHECK_EQ_INT(far, 0);
    CHECK_EQ_INT(differs, 0);
    CHECK(cases >= 2);
}

/* RMSNorm on every ISA, rows of 1 to 900 values: within 3 float roundings
 * of the definition in double, and in place (per-head norms) equal to out
 * of place. */
static void test_rmsnorm_sets(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 900 };
    static float x[N], w[N], out[N], inplace[N];
    int cases = 0, far = 0, differs = 0;
    for (int n = 1; n <= N; n += n < 40 ? 1 : 97) {
        for (int i = 0; i < n; i++) {
            x[i] = (float)((rand() / (double)RAND_MAX - 0.5) * 8);
            w[i] = (float)(rand() / (double)RAND_MAX + 0.5);
        }
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double scale = 1.0 / sqrt(ss / n + 1e-6);
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            if (kernel_force_isa(isas[k]) != 0) continue;
            cases++;
            kernel_rmsnorm(out, x, w, n, 1e-6f);
            memcpy(inplace, x, sizeof(float) * (size_t)n);
            kernel_rmsnorm(inplace, inplace, w, n, 1e-6f);
            for (int i = 0; i < n; i++) {
                double want = x[i] * scale * w[i];
                if (fabs(out[i] - want) > 3 * 0x1p-24 * fabs(want) + 1e-30) far++;
            }
            differs += memcmp(out, inplace, sizeof(float) * (size_t)n) != 0;
        }
    }
    kernel_force_isa(saved);
    CHECK_EQ_INT(far, 0);
    CHECK_EQ_INT(differs, 0);
    CHECK(cases >= 2 * 40);
}

/* Softmax on every ISA, rows of 1 to 300 scores: within 4 float roundings
 * of the double definition (plus the rounding of x - max in float, which
 * exp scales by |x - max|), a score far below the largest exactly 0. */
static void test_softmax_sets(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { N = 300 };
    static float x[N], y[N];
    int cases = 0, far = 0, not_zero = 0;
    for (int n = 1; n <= N; n += n < 20 ? 1 : 37) {
        for (int i = 0; i < n; i++) x[i] = (float)((rand() / (double)RAND_MAX - 0.5) * 30);
        if (n > 3) x[n / 2] = -200, x[n - 1] = -INFINITY;
        double max = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
        for (int i = 0; i < n; i++) sum += exp((double)x[i] - max);
        for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
            if (kernel_force_isa(isas[k]) != 0) continue;
            cases++;
            memcpy(y, x, sizeof(float) * (size_t)n);
            kernel_softmax(y, n);
            for (int i = 0; i < n; i++) {
                double want = exp((double)x[i] - max) / sum;
                /* x - max rounds to float: |x - max| * 2^-24 relative after exp */
                if (fabs(y[i] - want) > (4 + fabs(x[i] - max)) * 0x1p-24 * want + 1e-30) far++;
            }
            if (n > 3) not_zero += y[n / 2] != 0 || y[n - 1] != 0;
        }
    }
    kernel_force_isa(saved);
    CHECK_EQ_INT(far, 0);
    CHECK_EQ_INT(not_zero, 0);
    CHECK(cases >= 2 * 20);
}

/* The grouped-query kernels give each head the one-head kernels' bits, on
 * every ISA: widths the fast path takes (multiples of 32 up to 256) and
 * others (8, 40, 288), groups of 1 to 9 heads. */
static void test_attention_group_kernels(void)
{
    kernel_isa isas[] = {KERNEL_ISA_SCALAR, KERNEL_ISA_AVX2, KERNEL_ISA_AVXVNNI, KERNEL_ISA_AVX512};
    kernel_isa saved = kernel_active_isa();
    enum { MAXN = 288, MAXQ = 9 };
    static const int widths[] = {8, 32, 40, 64, 96, 128, 256, 288};
    static uint16_t kv[MAXN];
    static float q[MAXQ * MAXN], out_group[MAXQ * MAXN], out_one[MAXQ * MAXN];
    float a[MAXQ], dots_group[MAXQ];
    int cases = 0, differs = 0;
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (kernel_force_isa(isas[k]) != 0) continue;
        for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++) {
            int n = widths[wi];
            for (int n_q = 1; n_q <= MAXQ; n_q++) {
                cases++;
                for (int i = 0; i < n; i++) kv[i] = kernel_fp32_to_fp16((float)(rand() / (double)RAND_MAX - 0.5) * 3);
                for (int i = 0; i < n_q * n; i++) {
                    q[i] = (float)(rand() / (double)RAND_MAX - 0.5);
                    out_group[i] = out_one[i] = (float)(rand() / (double)RAND_MAX);
                }
                for (int g = 0; g < n_q; g++) a[g] = (float)(rand() / (double)RAND_MAX);
                kernel_dot_f16_group(kv, q, n_q, n, dots_group);
                for (int g = 0; g < n_q; g++) {
                    float one = kernel_dot_f16_f32(kv, q + g * n, n);
                    differs += memcmp(&one, &dots_group[g], sizeof one) != 0;
                    kernel_axpy_f16(out_one + g * n, a[g], kv, n);
                }
                kernel_axpy_f16_group(out_group, a, kv, n_q, n);
                differs += memcmp(out_one, out_group, sizeof(float) * (size_t)(n_q * n)) != 0;
            }
        }
    }
    kernel_force_isa(saved);
    CHECK_EQ_INT(differs, 0);
    CHECK(cases >= 2 * 8 * 9);
}

int main(void)
{
    RUN(test_fp16_to_fp32_exhaustive);
    RUN(test_fp16_round_trip_and_rounding);
#ifdef __FLT16_MAX__
    RUN(test_fp16_vs_compiler);
#endif
    RUN(test_fp16_row_matches_scalar);
    RUN(test_fp32_to_fp16_row_matches_scalar);
    RUN(test_axpy_f16);
    RUN(test_bf16);
    RUN(test_q8_0_quantize);
    RUN(test_q8_0_quantize_sets_agree);
    RUN(test_argmax_sets_agree);
    RUN(test_dot_products);
    RUN(test_matmul);
    RUN(test_matmul_multi);
    RUN(test_vector_ops);
    RUN(test_swiglu_sets);
    RUN(test_rmsnorm_sets);
    RUN(test_softmax_sets);
    RUN(test_attention_group_kernels);
    RUN(test_threadpool);
    RUN(test_threadpool_after_idle);
    return testlib_finish();
}
