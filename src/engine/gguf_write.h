/* gguf_write.h: writes GGUF v3 files: metadata copied from a file being read
 * (or set here), tensor infos, then tensor data streamed tensor by tensor from
 * a caller's callback, each tensor starting on an aligned offset.
 *
 * For: `llmesh quantize` (engine/quantize.c) and any tool that rewrites a
 * model. Not for: test fixtures with deliberate defects (tests/unit/gguf_writer.h).
 * Every size and offset written is computed here from shapes and types, so a
 * written file always satisfies what gguf_open checks.
 *
 * Threading: a gguf_write is used by one thread. */
#ifndef LLMESH_GGUF_WRITE_H
#define LLMESH_GGUF_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct gguf_write gguf_write;

/* NULL when out of memory. Alignment starts at GGUF_DEFAULT_ALIGNMENT and
 * follows a copied or set general.alignment. */
gguf_write *gguf_write_new(void);
void gguf_write_free(gguf_write *w);

/* Copies a key/value read by gguf.c (any type, arrays included). A key
 * already present is replaced in place, keeping the original order. */
int gguf_write_copy_kv(gguf_write *w, const gguf_kv *kv, char *err, size_t errlen);
int gguf_write_set_u32(gguf_write *w, const char *key, uint32_t v, char *err, size_t errlen);

/* Declares the next tensor: n_dims (1..4) dimensions ne[] (unused ones 1),
 * ne[0] a multiple of the type's block. Tensors are written in this order. */
int gguf_write_add_tensor(gguf_write *w, gguf_str name, uint32_t n_dims, const uint64_t *ne,
                          ggml_type type, char *err, size_t errlen);
/* Bytes tensor i takes (as its type and shape imply). */
uint64_t gguf_write_tensor_nbytes(const gguf_write *w, size_t i);

/* The bytes before the tensor data, exactly as gguf_write_file writes them:
 * header, key/values, tensor infos and the zero padding up to the aligned
 * start of the data (malloc'ed into *out, *len bytes; the caller frees).
 * data_offsets (NULL, or one per tensor) gets where each tensor's data starts
 * from the start of the file, and file_size (may be NULL) the whole file's
 * size, every tensor padded to the alignment. For writers that place the
 * data themselves (models/: a part fetched from peers chunk by chunk). */
int gguf_write_layout(const gguf_write *w, uint8_t **out, size_t *len, uint64_t *data_offsets,
                      uint64_t *file_size, char *err, size_t errlen);

/* Fills dst with the nbytes of tensor `index`; returns 0 or -1 with a message. */
typedef int (*gguf_write_fill_fn)(void *ctx, size_t index, void *dst, uint64_t nbytes, char *err,
                                  size_t errlen);

/* Writes the file at path (through path + ".tmp", renamed when complete, so
 * a failed write leaves no partial model behind). Returns 0 or -1 with a
 * message naming the path. */
int gguf_write_file(const gguf_write *w, const char *path, gguf_write_fill_fn fill, void *ctx,
                    char *err, size_t errlen);

#endif
