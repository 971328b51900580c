/* kernels_rows_avxvnni.c: the rows kernels (kernels_rows.h) for AVX2 + FMA +
 * F16C + AVX-VNNI (VEX-encoded 256-bit dpbusd/dpwssd: Alder Lake and later,
 * Zen 5; also present on this project's AVX-512 machine). */
#include "engine/kernels_rows.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "engine/kernels.h"
#include "engine/quants.h"

#define ROWS_TARGET "avx2,fma,f16c,avxvnni"
#define ROWS_VNNI 1
/* 16 vector registers: a tile of 4 rows x 2 tokens keeps its 8
 * accumulators and the unpacked weights in registers. F16's 4 x 2 would
 * need 16 accumulators: it spilled and ran slower than the rows kernels
 * (0.92x, kernels_bench --prompt), so F16 goes one token at a time. */
#define ROWS_TILE_T 2
#define ROWS_TILE_T_F16 1
/* Row lanes: tokens per pass over a group's block (an int32 and a float
 * accumulator each, with the block's two unpacked halves: 13 registers). */
#define ROWS_LANE_T 4
#include "engine/kernels_rows256.inc"

kernel_rows_fn kernel_rows_avxvnni(ggml_type t) { return rows256_get(t); }
kernel_tile_fn kernel_tile_avxvnni(ggml_type t) { return tile256_get(t); }
kernel_slab kernel_slab_avxvnni(ggml_type t) { return slab256_get(t); }
kernel_lane_fn kernel_lane_avxvnni(ggml_type t) { return lane256_get(t); }
#else
kernel_rows_fn kernel_rows_avxvnni(ggml_type t)
{
    (void)t;
    return NULL;
}
kernel_tile_fn kernel_tile_avxvnni(ggml_type t)
{
    (void)t;
    return NULL;
}
kernel_slab kernel_slab_avxvnni(ggml_type t)
{
    (void)t;
    return (kernel_slab){NULL, NULL};
}
kernel_lane_fn kernel_lane_avxvnni(ggml_type t)
{
    (void)t;
    return NULL;
}
#endif
