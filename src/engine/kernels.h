/* kernels.h: the engine's numeric building blocks: element types (F32, F16,
 * BF16, Q8_0) and their conversions, dot products, the matrix-vector product
 * that dominates inference, and the small vector operations of a transformer.
 *
 * Every product has a plain reference path (dequantize to float, dot in
 * double) that tests compare the fast paths against. Fast paths are chosen at
 * run time from the CPU's features (scalar C; on x86-64 AVX2+FMA+F16C,
 * AVX-VNNI or AVX-512; see kernel_isa).
 * Not here: what the tensors mean (model.c), memory mapping (gguf.c).
 *
 * Determinism: every output element of kernel_matmul is computed by one
 * thread with the same code, whatever the thread count and batch size, so
 * results are bit-identical across thread counts and batchings on one machine
 * and ISA. Different ISAs may differ in the last bits.
 *
 * Threading: all functions are reentrant; kernel_matmul uses the given pool,
 * so the usual threadpool rule applies (one run at a time per pool).
 * kernel_force_isa must not run concurrently with any kernel. */
#ifndef LLMESH_KERNELS_H
#define LLMESH_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"
#include "lib/threadpool.h"

/* ---- scalar conversions (exact IEEE, round to nearest even) ------------- */

float kernel_fp16_to_fp32(uint16_t h);
uint16_t kernel_fp32_to_fp16(float f);  /* NaN stays NaN (quieted), overflow -> inf */
float kernel_bf16_to_fp32(uint16_t h);
uint16_t kernel_fp32_to_bf16(float f);

/* Bulk fp16 -> fp32 and fp32 -> fp16 (F16C when the CPU has it; the same
 * bits as the scalar conversions either way, NaN payloads aside). */
void kernel_fp16_to_fp32_row(const uint16_t *src, float *dst, int n);
void kernel_fp32_to_fp16_row(const float *src, uint16_t *dst, int n);

/* ---- Q8_0: ggml's block layout ------------------------------------------ */

/* 32 values share one fp16 scale: value[i] = fp16(d) * qs[i]. 34 bytes,
 * 2-byte aligned, packed back to back in a row (as stored in GGUF). */
#define KERNEL_Q8_0_BLOCK 32
typedef struct {
    uint16_t d;
    int8_t qs[KERNEL_Q8_0_BLOCK];
} kernel_block_q8_0;

/* Quantizes n floats (n % 32 == 0) the way ggml does: d = max|x| / 127 stored
 * as fp16, q = round(x / d) (ties to even) in [-127, 127]. */
void kernel_quantize_row_q8_0(const float *x, kernel_block_q8_0 *out, int n);

/* ---- types -------------------------------------------------------------- */

/* 1 for the weight types the kernels handle: F32, F16, BF16, Q8_0 here, and
 * Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K through quants.h. */
int kernel_type_supported(ggml_type t);
/* Bytes of one row of n elements of type t (n a multiple of the block size);
 * also knows GGML_TYPE_Q8_K, the K-quants' activation layout. */
size_t kernel_row_bytes(ggml_type t, int64_t n);
/* Converts one row of n elements of a supported type to floats. */
void kernel_dequantize_row(ggml_type t, const void *src, float *dst, int n);

/* ---- dot products (dispatched to the best ISA) --------------------------- */

float kernel_dot_f32(const float *a, const float *b, int n);
float kernel_dot_f16_f32(const uint16_t *a, const float *b, int n);
float kernel_dot_bf16_f32(const uint16_t *a, const float *b, int n);
/* n % 32 == 0; the integer products of each block are summed exactly. a
 * (the weights) may hold any int8; b (the activations) must stay in
 * [-127, 127], as kernel_quantize_row_q8_0 makes them (the AVX2 path needs
 * to negate b's values). */
float kernel_dot_q8_0(const kernel_block_q8_0 *a, const kernel_block_q8_0 *b, int n);

/* ---- matrix products ----------------------------------------------------- */

/* A weight matrix: rows of `cols` elements (ne[0] = cols), row-major as
 * GGUF stores them (pointing into the mapped file), or interleaved
 * (kernel_interleave): the same bytes in another order, each whole group of
 * 4 rows with its rows' blocks side by side, so that the rows kernels read
 * one stream. */
typedef struct {
    ggml_type type;
    int rows;
    int cols;
    const void *data;
    int interleaved; /* 0: row-major; 1: kernel_interleave's layout */
} kernel_matrix;

/* Whether kernel_interleave takes a matrix of this type and width: the types
 * with rows kernels (F16 with cols % 32 == 0, Q8_0, Q4_0, Q5_0, Q2_K-Q6_K). */
int kernel_interleavable(ggml_type t, int cols);
/* Writes w's bytes (row-major) to dst (kernel_row_bytes(type, cols) * rows
 * bytes, not overlapping w->data) in the interleaved layout: in each whole
 * group of 4 rows, block i of the group's row r lands at (i * 4 + r) units
 * from the group's start (a unit is one block of the type; F16: 16 values);
 * the last rows % 4 rows stay as they are. Every product gives the same
 * bits on either layout (the kernels read the same values in the same
 * order). */
void kernel_interleave(const kernel_matrix *w, void *dst);
/* Row r of w in row-major form: a pointer into w->data, or, when w is
 * interleaved, buf (kernel_row_bytes(type, cols) bytes) filled with it. */
const void *kernel_matrix_row(const kernel_matrix *w, int r, void *buf);

/* Scratch bytes kernel_matmul needs for n input vectors against w's type (the
 * input converted to the layout the weight type's dot product wants: Q8_0
 * blocks for Q8_0 weights, nothing for the float types). */
size_t kernel_matmul_scratch_bytes(ggml_type t, int cols, int n);

/* y = W x for n vectors at once: x is [n][cols], y is [n][rows] (both dense
 * row-major floats, not overlapping). Rows are spread over the pool's
 * threads. For Q8_0 weights x is first quantized to Q8_0 blocks in scratch,
 * which lets each block be an integer dot product (as ggml does); the cost is
 * the activation's rounding error, ~0.4% of a block's largest value. */
void kernel_matmul(threadpool *pool, const kernel_matrix *w, const float *x, int n, float *y,
                   void *scratch);

/* Several products of the same input in one dispatch (q, k and v; gate and
 * up): the input is converted once and the threads synchronise once. All
 * matrices have the same cols; y[i] is [n][w[i]->rows]. Scratch as for the
 * largest requirement among the matrices' types. */
#define KERNEL_MATMUL_MAX 4
void kernel_matmul_multi(threadpool *pool, int n_mats, const kernel_matrix *const *w,
                         const float *x, int n, float *const *y, void *scratch);

/* Reference for tests: dequantizes each row and dots it with x in double,
 * single-threaded, no quantization of x. */
void kernel_matmul_ref(const kernel_matrix *w, const float *x, int n, float *y);

/* ---- vector operations --------------------------------------------------- */

/* out = x / sqrt(mean(x^2) + eps) * w; out may equal x. */
void kernel_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* In-place softmax over n values (max subtracted first). */
void kernel_softmax(float *x, int n);
/* x[i] = silu(x[i]) * y[i] (the SwiGLU gate). */
void kernel_swiglu(float *x, const float *y, int n);
/* x += y */
void kernel_add(float *x, const float *y, int n);
/* out[i] += a * v[i] */
void kernel_axpy(float *out, float a, const float *v, int n);
/* out[i] += a * v[i], v in fp16 (an F16 KV cache's values) */
void kernel_axpy_f16(float *out, float a, const uint16_t *v, int n);
/* Grouped-query attention, the query heads of one kv head at once (q and out
 * are n_q rows of n): out[g] = kernel_dot_f16_f32(k, q + g * n, n), and
 * out + g * n += a[g] * v (kernel_axpy_f16), with the bits of those one-head
 * kernels; the F16 row is read and converted once for the group. */
void kernel_dot_f16_group(const uint16_t *k, const float *q, int n_q, int n, float *out);
void kernel_axpy_f16_group(float *out, const float *a, const uint16_t *v, int n_q, int n);
/* The first index of the largest of x[0, n) (NaN never wins; 0 when
 * nothing beats -inf), the same at every ISA. */
int32_t kernel_argmax(const float *x, int n);

/* ---- instruction sets ---------------------------------------------------- */

/* Ordered: each level includes the ones below it; a level uses its own
 * kernels where it has them and the level below's otherwise. */
typedef enum {
    KERNEL_ISA_SCALAR = 0,   /* portable C (auto-vectorised by the compiler) */
    KERNEL_ISA_AVX2 = 1,     /* x86-64 AVX2 + FMA + F16C */
    KERNEL_ISA_AVXVNNI = 2,  /* AVX2 + AVX-VNNI (256-bit byte dot products) */
    KERNEL_ISA_AVX512 = 3,   /* AVX2 + AVX-512 F, BW, VL, VNNI */
} kernel_isa;
#define KERNEL_ISA_COUNT 4

/* The ISA in use: the best the CPU supports, unless forced, or named by the
 * environment variable LLMESH_ISA (scalar, avx2, avxvnni, avx512; read once,
 * at the first kernel call; a name this CPU lacks, or an unknown one, is
 * ignored: kernel_active_isa tells what runs). */
kernel_isa kernel_active_isa(void);
const char *kernel_isa_name(kernel_isa isa);
/* The ISA called name (as kernel_isa_name spells it), or -1. */
int kernel_isa_from_name(const char *name);
/* 1 if this CPU and build can run isa. */
int kernel_isa_available(kernel_isa isa);
/* Forces an ISA (tests, benchmarks). Returns -1 if this CPU or build lacks it. */
int kernel_force_isa(kernel_isa isa);

#endif
