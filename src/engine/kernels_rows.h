/* kernels_rows.h (private to src/engine): multi-row matrix-vector kernels,
 * the inner loop of generation, and their tiled forms for prompts (several
 * rows x several tokens per pass).
 *
 * A rows kernel computes out[r] = dot(row r, act) for r < nrows (1 ..
 * KERNEL_ROWS), the rows at w + r * stride, act one input vector in the
 * layout the weight type takes (floats for F16, Q8_0 blocks for Q8_0, Q4_0
 * and Q5_0, Q8_K blocks for Q4_K, Q5_K and Q6_K). Working on several rows per pass lets
 * one activation load serve every row and gives the core independent
 * accumulator chains (a single row's chain of fused multiply-adds is bound by
 * their latency, not by memory).
 *
 * Contract, which the determinism guarantee rests on: the value of a row is
 * computed by the same sequence of operations whatever nrows is and whatever
 * its position in the group, so grouping (which depends on how a matrix is
 * split into tasks) never changes a bit. tests/unit/test_quants.c checks it.
 *
 * One file per instruction set, each compiled with its own target attribute:
 * kernels_rows_avx2.c (AVX2, VNNI's byte dot emulated with maddubs + madd),
 * kernels_rows_avxvnni.c (AVX-VNNI, 256-bit), kernels_rows_avx512.c
 * (AVX-512 F/BW/VL/VNNI: 512-bit kernels where they were measured faster,
 * the 256-bit ones in their EVEX form elsewhere). The 256-bit kernels are one
 * body, kernels_rows256.inc, included by each. */
#ifndef LLMESH_KERNELS_ROWS_H
#define LLMESH_KERNELS_ROWS_H

#include <stddef.h>

#include "engine/gguf.h"

#define KERNEL_ROWS 4

typedef void (*kernel_rows_fn)(const void *w, size_t stride, int nrows, const void *act, int n,
                               float *out);

/* A tile kernel is the matrix-matrix form: out[t * out_stride + r] =
 * dot(row r, token t) for r < nrows (1 .. KERNEL_ROWS) and t < ntok (any
 * count), token t's activations at act + t * act_stride. It keeps a tile of
 * KERNEL_ROWS rows x a few tokens of accumulators in registers and unpacks
 * each weight block once per tile instead of once per token.
 *
 * Contract: every output has the very bits the same ISA's rows kernel gives
 * that row and token (each (row, token) pair has its own accumulators and
 * goes through the rows kernel's operations in the same order), so a prompt
 * computed in one batch equals the same tokens computed one at a time. */
typedef void (*kernel_tile_fn)(const void *w, size_t stride, int nrows, const void *act,
                               size_t act_stride, int ntok, int n, float *out, size_t out_stride);

/* The rows kernel of type t for each instruction set, or NULL when there is
 * none (the caller then uses the type's one-row dot product). Only call a
 * set's function when the CPU has that set. */
kernel_rows_fn kernel_rows_avx2(ggml_type t);
kernel_rows_fn kernel_rows_avxvnni(ggml_type t);
kernel_rows_fn kernel_rows_avx512(ggml_type t);
/* AVX-512's kernel of type t at a given width (256 or 512), whichever
 * kernel_rows_avx512 picks; NULL when that width has none. */
kernel_rows_fn kernel_rows_avx512_width(ggml_type t, int bits);

/* The tile kernel matching each rows kernel above (same set, same width), or
 * NULL where there is none. */
kernel_tile_fn kernel_tile_avx2(ggml_type t);
kernel_tile_fn kernel_tile_avxvnni(ggml_type t);
kernel_tile_fn kernel_tile_avx512(ggml_type t);
kernel_tile_fn kernel_tile_avx512_width(ggml_type t, int bits);

/* Prepared activations. kernel_prep_avx512 gives, for a type whose 512-bit
 * kernels also come in a form that takes its activations prepared once per
 * product (Q4_0: the per-block work on the activations, done once instead
 * of once per group of rows), the function that prepares one token's Q8_0
 * blocks of n values (kernel_prep_bytes(n) bytes, n % 32 == 0), and sets
 * *rows and *tile to the kernels that take them. Their outputs have the bits
 * of kernel_rows_avx512_width(t, 512) on the unprepared blocks. NULL (and
 * nothing set) for other types. Only call it when the CPU has AVX-512. */
typedef void (*kernel_prep_fn)(const void *q8_0, void *out, int n);
size_t kernel_prep_bytes(int n);
kernel_prep_fn kernel_prep_avx512(ggml_type t, kernel_rows_fn *rows, kernel_tile_fn *tile);

#endif
