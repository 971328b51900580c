/* tokenizer.h: text <-> token ids, from a GGUF file's tokenizer metadata.
 *
 * Supported now: byte-level BPE (tokenizer.ggml.model = "gpt2") with the GPT-2
 * pre-tokenizer regex, run through PCRE2 (with JIT when available). Later:
 * SentencePiece-style "llama" vocabularies and other pre-tokenizers.
 * Thread-safety: a tokenizer is immutable after load; encode/decode may run on
 * any number of threads at once. */
#ifndef LLMESH_TOKENIZER_H
#define LLMESH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct tokenizer tokenizer;

/* Reads tokens, merges, token types, bos/eos ids and add_bos from f. The
 * tokenizer copies what it needs: f may be closed afterwards. */
tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

int tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);     /* -1 if none */
int32_t tokenizer_eos(const tokenizer *t);     /* -1 if none */
int tokenizer_add_bos(const tokenizer *t);     /* tokenizer.ggml.add_bos_token */

/* Encodes len bytes of text (any bytes; invalid UTF-8 is encoded byte by
 * byte) with no special-token parsing; a BOS is put first when add_bos is set
 * and the vocabulary has one. Writes at most cap ids to out and returns the
 * number of ids the text needs (which may be > cap: call again with more
 * room), or -1 on an internal error. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos,
                     int32_t *out, int cap);

/* The pre-tokenizer's split of text (for tests and debugging): writes the end
 * offset of each piece (a piece starts where the previous one ended; the
 * first at 0) to ends, at most cap of them, and returns the number of pieces
 * (which may be > cap), or -1 on an internal error. Runs of invalid UTF-8
 * come out as pieces of their own. */
int tokenizer_split(const tokenizer *t, const char *text, size_t len, size_t *ends, int cap);

/* The bytes token id stands for (byte-level decoding undone). Control tokens
 * (BOS, EOS, ...) decode to nothing. Returns the byte count (which may be >
 * cap: nothing is written past cap) or -1 for an id out of range. */
int tokenizer_token_bytes(const tokenizer *t, int32_t id, char *out, size_t cap);

#endif
