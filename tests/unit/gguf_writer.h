/* gguf_writer.h: builds synthetic GGUF v3 files for tests.
 *
 * For: unit tests of the reader, the tokenizer, the model and the kernels,
 * which need files of any shape, type and content, including broken ones
 * (write a valid file, then patch bytes). Not for: production output; there is
 * no streaming, everything is held in memory, and misuse (an unknown type, a
 * data size that does not match the shape) aborts the test with a message.
 *
 * Layout written: header, the key/values in the order added, tensor infos in
 * the order added, padding to the alignment, tensor data each starting on an
 * aligned offset. The last tensor is NOT padded after its data, so every
 * strict prefix of a file with tensors is invalid (handy for truncation tests).
 *
 * Usage:
 *   gguf_writer *w = gguf_writer_new();
 *   gguf_writer_add_str(w, "general.architecture", "llama");
 *   uint64_t ne[2] = {64, 32};
 *   gguf_writer_add_tensor(w, "x.weight", 2, ne, GGML_TYPE_F32, data, 64 * 32 * 4);
 *   gguf_writer_write_file(w, path);
 *   gguf_writer_free(w);
 *
 * Threading: a writer is used by one thread; the free functions are pure. */
#ifndef LLMESH_TEST_GGUF_WRITER_H
#define LLMESH_TEST_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct gguf_writer gguf_writer;

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);

/* Header version (default 3). */
void gguf_writer_set_version(gguf_writer *w, uint32_t version);
/* Lays tensor data out on multiples of alignment and adds the key
 * general.alignment (uint32). Call before adding tensors. */
void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment);

/* Scalar key/values. Keys and strings are copied. */
void gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v);
void gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v);
void gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v);
void gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v);
void gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_writer_add_f32(gguf_writer *w, const char *key, float v);
void gguf_writer_add_bool(gguf_writer *w, const char *key, int v);
void gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v);
void gguf_writer_add_f64(gguf_writer *w, const char *key, double v);
void gguf_writer_add_str(gguf_writer *w, const char *key, const char *v);
/* A string with explicit length (may hold NUL or any bytes). */
void gguf_writer_add_str_n(gguf_writer *w, const char *key, const char *v, size_t len);

/* An array of count fixed-size elements of elem_type (any scalar type),
 * given as a C array of that type (uint8_t, int32_t, float, double, ...;
 * bool elements are one byte each). */
void gguf_writer_add_array(gguf_writer *w, const char *key, gguf_type elem_type,
                           const void *elems, uint64_t count);
/* An array of NUL-terminated strings. */
void gguf_writer_add_str_array(gguf_writer *w, const char *key, const char *const *strs,
                               uint64_t count);

/* A tensor of n_dims (1..4) dimensions ne[] (ne[0] the row length) and type;
 * data (nbytes, which must equal the size the shape and type imply) is copied.
 * data may be NULL: the tensor is then zero-filled. */
void gguf_writer_add_tensor(gguf_writer *w, const char *name, uint32_t n_dims,
                            const uint64_t *ne, ggml_type type, const void *data,
                            size_t nbytes);
/* Bytes a tensor of this shape and type takes (0 if the type is unknown or
 * ne[0] is not a multiple of its block). */
size_t gguf_writer_tensor_nbytes(uint32_t n_dims, const uint64_t *ne, ggml_type type);

/* Serialises into a malloc'ed buffer (the caller frees *out) or a file.
 * Return 0, or -1 (file: with errno set). */
int gguf_writer_write_memory(const gguf_writer *w, uint8_t **out, size_t *size);
int gguf_writer_write_file(const gguf_writer *w, const char *path);

/* ---- Conversions the writer uses, public so tests can predict results ---- */

/* IEEE binary16 from float, round to nearest even (overflow -> inf, NaN kept). */
uint16_t gguf_writer_f32_to_f16(float x);
float gguf_writer_f16_to_f32(uint16_t h);
/* n (a multiple of 32) floats to Q8_0 blocks: per 32 values an fp16 scale
 * d = max|x| / 127 and int8 q = round(x / d); out holds n / 32 * 34 bytes. */
void gguf_writer_quantize_q8_0(const float *x, size_t n, void *out);

/* ---- Tokenizer metadata ---- */

/* The GPT-2 byte-level symbol of byte b as UTF-8 (1 or 2 bytes) into out,
 * NUL-terminated; returns its length. E.g. 'a' -> "a", ' ' -> "Ġ". */
size_t gguf_writer_byte_symbol(int b, char out[3]);

/* Adds a "gpt2" tokenizer: ids 0..255 are the byte symbols in byte order,
 * then the n_extra tokens given (byte-level symbol text such as "Ġthe",
 * normal type), then "<|bos|>" and "<|endoftext|>" (control type), which are
 * the bos and eos ids; merges are "A B" strings in rank order. Adds
 * tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id,
 * eos_token_id, add_bos_token}. Returns the vocabulary size. */
int gguf_writer_add_gpt2_tokenizer(gguf_writer *w, const char *const *extra, int n_extra,
                                   const char *const *merges, int n_merges, int add_bos);

/* The same with tokenizer.ggml.pre set to pre ("llama-bpe", "qwen2", ...;
 * NULL: no key). */
int gguf_writer_add_bpe_tokenizer(gguf_writer *w, const char *pre, const char *const *extra,
                                  int n_extra, const char *const *merges, int n_merges,
                                  int add_bos);

/* Adds a SentencePiece-style "llama" tokenizer: the n_tokens texts as given
 * (U+2581 for spaces, "<0xXX>" byte tokens), their float scores and int32
 * types; add_space_prefix 0/1 writes tokenizer.ggml.add_space_prefix, -1
 * leaves it out. No bos/eos keys (llama.cpp's defaults 1 and 2 apply).
 * Returns n_tokens. */
int gguf_writer_add_spm_tokenizer(gguf_writer *w, const char *const *tokens,
                                  const float *scores, const int32_t *types, int n_tokens,
                                  int add_space_prefix);

/* ---- A whole tiny llama model ---- */

/* The byte-level vocabulary every tiny model gets: ids 0..255 are the bytes
 * (GPT-2 byte-to-unicode symbols, in byte order), then merges of common
 * English letter pairs ("t h", "h e", "Ġ t", ...), then unused filler tokens
 * when n_vocab asks for more, then "<|bos|>" (BOS, control) and
 * "<|endoftext|>" (EOS, control) as the last two ids. add_bos_token is true. */
typedef struct {
    int n_embd;         /* a multiple of n_head (and of 32 for Q8_0) */
    int n_layer;
    int n_head;
    int n_head_kv;      /* divides n_head */
    int n_ff;           /* a multiple of 32 for Q8_0 */
    int n_vocab;        /* >= 258 */
    int n_ctx;          /* llama.context_length; 0 means 256 */
    ggml_type type;     /* F32, F16 or Q8_0 for the matrices; norms are always F32 */
    uint64_t seed;      /* same seed, same bytes */
    int tied_output;    /* 1: no output.weight (token_embd is reused) */
    float rope_freq_base;   /* 0 means 10000 */
    float rms_eps;          /* 0 means 1e-5 */
} gguf_writer_llama_params;

/* Writes a llama-architecture GGUF with random weights (uniform, scaled by
 * 1/sqrt(fan_in); norm weights near 1) and the llama.* keys llama.cpp reads.
 * Returns 0, or -1 for impossible parameters or a write error. */
int gguf_writer_tiny_llama_ex(const char *path, const gguf_writer_llama_params *p);
int gguf_writer_tiny_llama(const char *path, int n_embd, int n_layer, int n_head,
                           int n_head_kv, int n_ff, int n_vocab, ggml_type type,
                           uint64_t seed);

#endif
