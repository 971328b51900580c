/* quants.h: ggml's quantized block types other than Q8_0 (which lives in
 * kernels.h): Q4_0, Q4_1, Q5_0, Q5_1 (blocks of 32) and the K-quants Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256), byte for byte as ggml lays
 * them out, so GGUF files written by other tools load as they are; plus Q8_K,
 * the 8-bit activation layout the K-quant dot products take.
 *
 * For each type: a reference dequantizer, a quantizer, and a dot product
 * against activations quantized per block to 8 bits (Q8_0 for the 32-blocks,
 * Q8_K for the K-quants), in portable C and, where written, AVX2.
 * Not here: choosing the ISA and running products over matrices (kernels.c,
 * which looks types up with quant_get_traits), choosing a type per tensor
 * (cli/cmd_quantize.c).
 *
 * Threading: every function is pure and reentrant. */
#ifndef LLMESH_QUANTS_H
#define LLMESH_QUANTS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

#define QUANT_BLOCK 32   /* elements of a Q4_0/Q4_1/Q5_0/Q5_1 block */
#define QUANT_K 256      /* elements of a K-quant super-block */

/* All scales are IEEE binary16 (uint16_t bits) unless said otherwise; x is
 * the block's i-th value. Nibble layouts: in a 32-block, qs[j] holds element
 * j in its low nibble and element j + 16 in its high nibble. */

/* x = d * (q - 8), q in 0..15. 18 bytes. */
typedef struct {
    uint16_t d;
    uint8_t qs[QUANT_BLOCK / 2];
} quant_block_q4_0;

/* x = d * q + m, q in 0..15. 20 bytes. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qs[QUANT_BLOCK / 2];
} quant_block_q4_1;

/* x = d * (q - 16), q in 0..31: the low 4 bits as in Q4_0, bit 4 of element
 * j is bit j of qh read as a little-endian uint32. 22 bytes. */
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QUANT_BLOCK / 2];
} quant_block_q5_0;

/* x = d * q + m, q in 0..31, bits as in Q5_0. 24 bytes. */
typedef struct {
    uint16_t d;
    uint16_t m;
    uint8_t qh[4];
    uint8_t qs[QUANT_BLOCK / 2];
} quant_block_q5_1;

/* K-quant element addressing (e = 0..255 within the super-block). For the
 * 2-bit fields of Q2_K/Q3_K and the 6-bit values of Q6_K: half h = e / 128,
 * r = e % 128, quarter k = r / 32, lane l = r % 32. */

/* Q2_K: 16 sub-blocks of 16. x = d * (scales[s] & 15) * q - dmin * (scales[s] >> 4),
 * s = e / 16, q = (qs[32h + l] >> 2k) & 3. 84 bytes. */
typedef struct {
    uint8_t scales[QUANT_K / 16];
    uint8_t qs[QUANT_K / 4];
    uint16_t d;
    uint16_t dmin;
} quant_block_q2_k;

/* Q3_K: 16 sub-blocks of 16 with signed 6-bit scales sc[s] - 32 packed in
 * 12 bytes: low 4 bits from scales[s] (s < 8) or scales[s - 8] >> 4, high 2
 * bits from scales[8 + s % 4] >> (2 * (s / 4)). x = d * (sc[s] - 32) * (q - 4)
 * with q = ((qs[32h + l] >> 2k) & 3) | (bit 4h + k of hmask[l]) << 2. 110 bytes. */
typedef struct {
    uint8_t hmask[QUANT_K / 8];
    uint8_t qs[QUANT_K / 4];
    uint8_t scales[12];
    uint16_t d;
} quant_block_q3_k;

/* Q4_K: 8 sub-blocks of 32 with 6-bit scale sc[s] and min m[s] packed in 12
 * bytes (for s < 4: sc = scales[s] & 63, m = scales[s + 4] & 63; for s >= 4:
 * sc = (scales[s + 4] & 15) | (scales[s - 4] >> 6) << 4, m = (scales[s + 4] >> 4)
 * | (scales[s] >> 6) << 4). x = d * sc[s] * q - dmin * m[s], s = e / 32, q the
 * low (e % 64 < 32) or high nibble of qs[32 * (e / 64) + e % 32]. 144 bytes. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qs[QUANT_K / 2];
} quant_block_q4_k;

/* Q5_K: Q4_K plus a fifth bit: bit s = e / 32 of qh[e % 32]. 176 bytes. */
typedef struct {
    uint16_t d;
    uint16_t dmin;
    uint8_t scales[12];
    uint8_t qh[QUANT_K / 8];
    uint8_t qs[QUANT_K / 2];
} quant_block_q5_k;

/* Q6_K: 16 sub-blocks of 16 with int8 scales. x = d * scales[e / 16] * (q - 32),
 * q = low 4 bits from ql[64h + l + 32 * (k & 1)] (low nibble for k < 2, high
 * for k >= 2) | ((qh[32h + l] >> 2k) & 3) << 4. 210 bytes. */
typedef struct {
    uint8_t ql[QUANT_K / 2];
    uint8_t qh[QUANT_K / 4];
    int8_t scales[QUANT_K / 16];
    uint16_t d;
} quant_block_q6_k;

/* Q8_K (activations only; ggml's size, our rounding): x = d * qs[i], d a
 * float = max|x| / 127 so qs is in [-127, 127] (the AVX2 kernels negate
 * activations); bsums[j] = sum of qs[16j .. 16j + 15], for the min terms. */
typedef struct {
    float d;
    int8_t qs[QUANT_K];
    int16_t bsums[QUANT_K / 16];
} quant_block_q8_k;

/* The canonical order of the K-quants' dot products (docs/engine.md, "K-quants
 * in row lanes"): per super-block, the integer sums are exact in int32 (isum =
 * sum over sub-blocks of the sub-block scale times the levels' integer dot;
 * for Q3_K and Q6_K their offset comes off it as 4 or 32 times sum(sc *
 * bsums); msum = sum over sub-blocks of the min times the activations' sum),
 * then one fused multiply-add per super-block into the row's one float
 * accumulator, starting at 0, super-blocks in order:
 *   acc = fma(float(isum), d * dy, acc)         (Q3_K, Q6_K: that alone)
 *   acc = fma(-float(msum), dmin * dy, acc)     (Q2_K, Q4_K, Q5_K: then this)
 * d, dmin the block's fp16 scales as floats, dy the Q8_K block's float scale,
 * d * dy one float product. Every kernel of every instruction set (scalar,
 * AVX2, AVX-VNNI, AVX-512; one row, rows, tiles, slabs, row lanes) computes
 * exactly this, so all give the same bits. fmaf is exact whether the
 * compiler emits the instruction or calls libm. */
static inline float quant_k_fma(float acc, int32_t isum, float d, float dy)
{
    return __builtin_fmaf((float)isum, d * dy, acc);
}

/* The row-lane layout of Q4_K and Q6_K (docs/engine.md, "K-quants in row
 * lanes"): a group of QUANT_LANES rows stored super-block by super-block so
 * that one vector lane holds one row. quant_lanes_block_bytes: the bytes of
 * one super-block of a group (2368 for Q4_K, 3360 for Q6_K), 0 for a type
 * without the layout. quant_lanes_pack: QUANT_LANES rows of n values (row r
 * at src + r * stride, GGUF blocks) into a group at dst (n / 256 times the
 * block bytes). quant_lanes_row: row r of a group back into GGUF blocks at
 * dst. n % 256 == 0. */
#define QUANT_LANES 16
size_t quant_lanes_block_bytes(ggml_type t);
void quant_lanes_pack(ggml_type t, const void *src, size_t stride, int n, void *dst);
void quant_lanes_row(ggml_type t, const void *group, int r, int n, void *dst);

/* n % 256 == 0. */
void quant_quantize_row_q8_k(const float *x, quant_block_q8_k *out, int n);

/* w: one row of weights of the type; act: the same row length of
 * activations in the type's act_type layout. */
typedef float (*quant_dot_fn)(const void *w, const void *act, int n);

typedef struct {
    ggml_type type;
    int block_elems;
    int block_bytes;
    ggml_type act_type;   /* GGML_TYPE_Q8_0 or GGML_TYPE_Q8_K */
    /* Reference: n values (a multiple of block_elems). */
    void (*dequantize_row)(const void *src, float *dst, int n);
    /* Our quantizer (see quants.c for the method per type). */
    void (*quantize_row)(const float *src, void *dst, int n);
    quant_dot_fn dot_scalar;
    quant_dot_fn dot_avx2; /* NULL when there is no AVX2 kernel (or build lacks it) */
} quant_traits;

/* The traits of Q4_0 .. Q6_K; NULL for any other type (F32, F16, BF16 and
 * Q8_0 are handled in kernels.c). */
const quant_traits *quant_get_traits(ggml_type t);

#endif
