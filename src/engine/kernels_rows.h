/* kernels_rows.h (private to src/engine): multi-row matrix-vector kernels,
 * the inner loop of generation, and their tiled forms for prompts (several
 * rows x several tokens per pass).
 *
 * A rows kernel computes out[r] = dot(row r, act) for r < nrows (1 ..
 * KERNEL_ROWS), the rows at w + r * stride, act one input vector in the
 * layout the weight type takes (floats for F16, Q8_K blocks for Q4_K, Q5_K
 * and Q6_K; Q4_0, Q5_0 and Q8_0 run in row lanes, below). Working on several rows per pass lets
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
#include <stdint.h>

#include "engine/gguf.h"

#define KERNEL_ROWS 4

/* Interleaved groups (kernel_interleave, kernels.h). When a matrix is
 * interleaved, each whole group of KERNEL_ROWS rows holds its rows' blocks
 * side by side: block i of the group's row r at group + (i * KERNEL_ROWS +
 * r) * unit, unit being one block of the type (F16: 16 values). The caller
 * passes such a group to a rows or tile kernel or a slab's unpack with
 * nrows == KERNEL_ROWS and KERNEL_STRIDE_IL set in stride (the row bytes
 * stay in the other bits: the next group still starts KERNEL_ROWS rows
 * later); a kernel reads the same values in the same order either way, so
 * the two layouts give the same bits. Partial groups (a matrix's last rows
 * % KERNEL_ROWS) are never interleaved and never flagged. */
#define KERNEL_STRIDE_IL ((size_t)1 << 62)

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

/* A slab: for large batches, a group of up to KERNEL_ROWS weight rows is
 * unpacked once into a buffer of bytes the tile kernel's inner loop loads
 * as they are (no nibble masking, shifts or lane shuffles per tile), and a
 * slab tile kernel runs every token of the batch over it. The slab's layout
 * belongs to the set (and width) that wrote it; a row takes at most
 * KERNEL_SLAB_ROW_BYTES(n). Contract: the slab tile kernel gives every output
 * the very bits the same set's rows kernel gives (the same integer lanes and
 * float operations; only where the levels are read from differs). Q4_K
 * for now: a Q4_K block's d, dmin, 8 scales, 8 mins and 256 levels take 276
 * bytes per 256 values (34.5 per 32; the bound below allows 35 per 32). */
#define KERNEL_SLAB_ROW_BYTES(n) ((size_t)((n) / 32 + 1) * 35)
typedef void (*kernel_unpack_fn)(const void *w, size_t stride, int nrows, int n, void *slab);
typedef struct {
    kernel_unpack_fn unpack; /* rows -> slab, row r at slab + r * KERNEL_SLAB_ROW_BYTES(n) */
    kernel_tile_fn tile;     /* the tile kernel over a slab (stride: KERNEL_SLAB_ROW_BYTES(n)) */
} kernel_slab;
/* The slab of type t matching each set's rows kernel (same width), or
 * {NULL, NULL} where there is none. */
kernel_slab kernel_slab_avx2(ggml_type t);
kernel_slab kernel_slab_avxvnni(ggml_type t);
kernel_slab kernel_slab_avx512(ggml_type t);

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

/* Row lanes (docs/engine.md, "Row lanes"). A type in the lane layout (Q4_0)
 * keeps each whole group of KERNEL_LANE_ROWS rows as its blocks in order, a
 * group's block holding every row's scale and levels so that one 32-bit
 * vector lane is one row. Its activations are prepared once per product:
 * per token, one kernel_lane_act per block of 32 values. */
#define KERNEL_LANE_ROWS 16
typedef struct {
    float d;        /* the Q8_0 block's scale, fp16 -> f32 */
    int32_t sum;    /* the sum of its 32 bytes (the unsigned levels' offset correction) */
    int8_t qs[32];  /* its bytes */
} kernel_lane_act;

/* Q8_0 blocks of n values -> kernel_lane_act blocks (n % 32 == 0). */
void kernel_lane_prep(const void *q8_0, kernel_lane_act *out, int n);

/* A lane kernel: out[t * out_stride + r] = dot(row r, token t) for r <
 * KERNEL_LANE_ROWS and t < ntok, the group's bytes at group, token t's
 * prepared activations at act + t * act_stride (bytes). Every output is the
 * type's canonical value (docs/engine.md): the bits of the scalar one-row
 * dot product, on every ISA, whatever ntok. */
typedef void (*kernel_lane_fn)(const void *group, const void *act, size_t act_stride, int ntok, int n,
                               float *out, size_t out_stride);
/* The lane kernel of type t for each set, or NULL. */
kernel_lane_fn kernel_lane_avx2(ggml_type t);
kernel_lane_fn kernel_lane_avxvnni(ggml_type t);
kernel_lane_fn kernel_lane_avx512(ggml_type t);
/* AVX-512's lane kernel at a width (256: the 256-bit body in EVEX form), for
 * tests and benchmarks. */
kernel_lane_fn kernel_lane_avx512_width(ggml_type t, int bits);

#endif
