/* multipart.h: GGUF models in several files (NAME-00001-of-00003.gguf), as
 * llama.cpp's gguf-split writes them and the hub hosts large models: every
 * part carries `split.no` (0-based), `split.count` and
 * `split.tensors.count`; the first part carries the model's metadata; the
 * tensors are spread over the parts in order.
 *
 * llmesh serves such a model as one file: the parts are joined once into a
 * GGUF of the model's id in a directory the caller names (the node's
 * $home/cache/joined/), with the split.* keys left out, the metadata and the
 * tensors in their order. Why a joined copy rather than an engine that reads
 * several files: everything downstream (the weights hash, serving layers to
 * peers, the stage loader, mmap zero-copy) works on one file, and the copy
 * costs disk, not a second code path; it is made once and reused while it
 * is newer than every part.
 *
 * Threading: blocking, any thread. */
#ifndef LLMESH_MODELS_MULTIPART_H
#define LLMESH_MODELS_MULTIPART_H

#include <stddef.h>

/* Checks that parts[0..n) are the parts 0..n-1 of one model (split.no,
 * split.count, the tensor count adding up to split.tensors.count, no tensor
 * twice) and writes them joined to out_path (through out_path.tmp, renamed).
 * Reuses out_path when it is newer than every part. 0, or -1 with err. */
int multipart_join(const char *const *parts, int n, const char *out_path, char *err, size_t errlen);

/* Writes the model at in_path as n parts NAME-0000k-of-0000n.gguf into
 * out_dir (NAME: out_stem), the tensors spread evenly by count, the
 * metadata in the first part: what gguf-split does, for tests and tools.
 * 0, or -1 with err. */
int multipart_split(const char *in_path, int n, const char *out_dir, const char *out_stem, char *err,
                    size_t errlen);

#endif
