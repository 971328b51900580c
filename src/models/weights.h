/* weights.h: the identity of a GGUF model's weights, and its manifest.
 *
 * A model hash names what a file computes, whatever the file is called or
 * where its tensors lie: SHA-256 over a domain string, the chunk size, a hash
 * of the metadata that matters (every key/value except the descriptive
 * general.* ones), and, per tensor in file order, its name, type, shape and
 * data hash. A tensor's data hash is the SHA-256 of the hashes of its chunks:
 * fixed-size pieces of its data (the last one shorter), so a peer can send one
 * chunk at a time and the receiver can check each on arrival. docs/weights.md
 * says why each choice is what it is.
 *
 * A manifest is what it takes to check and rebuild (parts of) a file: the
 * model hash, the metadata bytes as in the file, and per tensor its name,
 * type, shape, size, data hash and (when known) its chunk hashes.
 * weights_manifest_finish recomputes every hash from those fields, so the
 * same code decides identity on the side that hashes a file and on the side
 * that receives a manifest from a peer.
 *
 * Not here: the cache on disk and fetching (weights_store.h), the bytes on
 * the wire (fetch_wire.h). Threading: pure functions over caller-owned data;
 * any thread. weights_set_chunk_bytes is a process-wide setting for tests. */
#ifndef LLMESH_MODELS_WEIGHTS_H
#define LLMESH_MODELS_WEIGHTS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

#define WEIGHTS_HASH_BYTES 32
#define WEIGHTS_HASH_HEX 65                   /* 64 hex digits + NUL */
#define WEIGHTS_DOMAIN "llmesh weights v1"    /* hashed with its NUL */
#define WEIGHTS_CHUNK_DEFAULT (1u << 20)
#define WEIGHTS_CHUNK_MIN (4u << 10)
#define WEIGHTS_CHUNK_MAX (8u << 20)          /* a chunk and its 9-byte head fit a 16 MiB frame */
/* Bounds on what a manifest may describe; a peer's claims beyond them are refused. */
#define WEIGHTS_MAX_TENSORS 65536u
#define WEIGHTS_MAX_NAME 256u                 /* as the GGUF reader */
#define WEIGHTS_MAX_META (64u << 20)          /* a 256k-token vocabulary with merges is ~10 MiB */
#define WEIGHTS_MAX_KV (1u << 20)
#define WEIGHTS_MAX_TENSOR_BYTES (1ull << 46) /* 64 TiB */
#define WEIGHTS_MAX_LAYERS 65536
#define WEIGHTS_MAX_ALIGNMENT 65536u

/* Where a tensor goes in a part of the model (weights_select). */
typedef enum {
    WEIGHTS_ROLE_LAYER = 0,  /* blk.N.*: in the parts whose range holds N */
    WEIGHTS_ROLE_SHARED = 1, /* rope_freqs / rope_factors_*: every layer's attention reads them */
    WEIGHTS_ROLE_HEAD = 2,   /* every other tensor: token_embd, output_norm, output, ... */
} weights_role;

typedef struct {
    char *name;                      /* NUL-terminated, 1..WEIGHTS_MAX_NAME bytes, no NUL inside */
    uint32_t type;                   /* ggml_type */
    uint32_t n_dims;                 /* 1..GGUF_MAX_DIMS */
    uint64_t ne[GGUF_MAX_DIMS];      /* unused dims 1 */
    uint64_t nbytes;                 /* implied by type and shape */
    uint8_t data_hash[WEIGHTS_HASH_BYTES];
    uint32_t n_chunks;               /* ceil(nbytes / chunk_bytes) */
    uint8_t (*chunks)[WEIGHTS_HASH_BYTES]; /* n_chunks hashes, or NULL when this manifest lacks them */
    /* Filled by weights_manifest_finish: */
    weights_role role;
    int layer;                       /* N of blk.N.*, -1 for other roles */
} weights_tensor;

typedef struct {
    uint8_t model_hash[WEIGHTS_HASH_BYTES];
    uint32_t chunk_bytes;            /* a power of two in [WEIGHTS_CHUNK_MIN, WEIGHTS_CHUNK_MAX] */
    uint64_t n_kv;
    uint8_t *meta;                   /* the key/value section of the file, byte for byte */
    size_t meta_len;
    uint32_t n_tensors;
    weights_tensor *tensors;         /* file order */
    /* Filled by weights_manifest_finish: */
    uint8_t meta_hash[WEIGHTS_HASH_BYTES];
    int n_layers;                    /* <arch>.block_count, or more if blk.N names say so */
    uint64_t alignment;              /* general.alignment, or GGUF's default */
    uint64_t data_bytes;             /* sum of every tensor's nbytes */
} weights_manifest;

/* The chunk size new manifests are computed with (WEIGHTS_CHUNK_DEFAULT).
 * Tests lower it to get many chunks from small files; it is part of every
 * hash, so manifests made with another size simply name other models. Set
 * it before any hashing starts (not thread-safe against a running hash). */
uint32_t weights_chunk_bytes(void);
int weights_set_chunk_bytes(uint32_t bytes); /* 0, or -1 when not a power of two in range */

/* Hashes the file at path (opened with gguf_open, so it is validated first)
 * with n_threads threads (<= 0: one per CPU). *cancel (may be NULL) is read
 * between chunks: when it turns non-zero the hash stops with an error.
 * bytes_hashed (may be NULL) gets the tensor bytes read. NULL with err on
 * failure. The caller frees the result with weights_manifest_free. */
weights_manifest *weights_manifest_compute(const char *path, int n_threads, const atomic_int *cancel,
                                           uint64_t *bytes_hashed, char *err, size_t errlen);
/* The same for a file already open. */
weights_manifest *weights_manifest_from_gguf(const gguf_file *f, int n_threads, const atomic_int *cancel,
                                             uint64_t *bytes_hashed, char *err, size_t errlen);
void weights_manifest_free(weights_manifest *m);

/* Checks a manifest whose fields were filled from outside (a peer, a cache
 * file) and fills the derived ones: the metadata must parse as GGUF
 * metadata (every length bounded, as gguf_open does) and end exactly at
 * meta_len; names unique; every tensor with chunk hashes must have data_hash
 * = SHA-256 of them; and the model hash recomputed from all of it must equal
 * model_hash. With compute set, model_hash is written instead of checked
 * (the side that hashed the file itself). 0; -1 with a message when a field
 * is malformed; -2 with a message when every field is well-formed (and the
 * derived ones are filled) but a hash does not match. */
int weights_manifest_finish(weights_manifest *m, int compute, char *err, size_t errlen);

/* Marks in wanted[n_tensors] (0/1) the tensors of a part holding layers
 * [first, end), plus the head tensors when head: WEIGHTS_ROLE_LAYER tensors
 * of those layers, every WEIGHTS_ROLE_SHARED tensor, and WEIGHTS_ROLE_HEAD
 * ones when head. Returns how many, or -1 with a message when the range is
 * not 0 <= first <= end <= n_layers with at least one layer or the head. */
int weights_select(const weights_manifest *m, int first, int end, int head, uint8_t *wanted,
                   char *err, size_t errlen);

/* The GGUF header of a part file holding the metadata and the wanted tensors
 * (in file order): bytes up to the first tensor's data (malloc'ed, caller
 * frees), each wanted tensor's absolute data offset in data_offsets[n_tensors]
 * (others untouched), and the file's size. The metadata is copied through
 * the GGUF reader and writer, so the part is what gguf_open accepts. */
int weights_part_layout(const weights_manifest *m, const uint8_t *wanted, uint8_t **header,
                        size_t *header_len, uint64_t *data_offsets, uint64_t *file_size, char *err,
                        size_t errlen);

/* Chunk c of tensor t: its offset from the start of the tensor's data and length. */
uint64_t weights_chunk_offset(const weights_manifest *m, uint32_t c);
uint32_t weights_chunk_len(const weights_manifest *m, const weights_tensor *t, uint32_t c);

/* SHA-256 of data (GnuTLS; SHA-NI where the CPU has it). */
void weights_sha256(const void *data, size_t len, uint8_t out[WEIGHTS_HASH_BYTES]);
/* Hashes n pieces (offsets[i], lens[i]) of base, or when base is NULL of
 * the file fd (read with pread), into out[i], with n_threads threads (<= 0:
 * one per CPU). *cancel as above. 0; -1 when cancelled; -2 on a read error
 * (short file) or when out of memory. */
int weights_hash_pieces(int fd, const uint8_t *base, size_t n, const uint64_t *offsets, const uint32_t *lens,
                        uint8_t (*out)[WEIGHTS_HASH_BYTES], int n_threads, const atomic_int *cancel);

/* Lowercase hex (65 bytes with the NUL), and back: 0, or -1 for anything but
 * exactly 64 hex digits. */
void weights_hex(const uint8_t hash[WEIGHTS_HASH_BYTES], char out[WEIGHTS_HASH_HEX]);
int weights_parse_hex(const char *hex, uint8_t out[WEIGHTS_HASH_BYTES]);

#endif
