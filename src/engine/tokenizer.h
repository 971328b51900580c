/* tokenizer.h: text <-> token ids, from a GGUF file's tokenizer metadata.
 *
 * Supported: byte-level BPE (tokenizer.ggml.model = "gpt2") with the
 * pre-tokenizers llama.cpp knows by tokenizer.ggml.pre (gpt-2, llama-bpe,
 * qwen2, dbrx, starcoder/smollm, falcon, default and their aliases), and
 * SentencePiece-style vocabularies ("llama": scores, <0xXX> byte fallback,
 * U+2581 for spaces). Results match llama.cpp's llama_tokenize; see
 * docs/engine-gguf-tokenizer.md for the exact rules and the few differences.
 * Thread-safety: a tokenizer is immutable after load; every function may run
 * on any number of threads at once. */
#ifndef LLMESH_TOKENIZER_H
#define LLMESH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/gguf.h"

typedef struct tokenizer tokenizer;

/* GGUF token types (tokenizer.ggml.token_type), as llama.cpp numbers them;
 * 0 stands for any other value. */
enum {
    TOKENIZER_TYPE_NORMAL = 1,
    TOKENIZER_TYPE_UNKNOWN = 2,
    TOKENIZER_TYPE_CONTROL = 3,
    TOKENIZER_TYPE_USER_DEFINED = 4,
    TOKENIZER_TYPE_UNUSED = 5,
    TOKENIZER_TYPE_BYTE = 6,
};

/* Flags of tokenizer_encode_ex. */
enum {
    TOKENIZER_ADD_BOS = 1,        /* put the BOS first (if the vocabulary has one) */
    TOKENIZER_PARSE_SPECIAL = 2,  /* CONTROL, UNKNOWN and USER_DEFINED token texts
                                   * in the text become those tokens (llama.cpp's
                                   * parse_special = true) */
    TOKENIZER_PARSE_USER = 4,     /* only USER_DEFINED ones: what llama.cpp does
                                   * with parse_special = false */
};

/* Reads tokens, token types, scores, merges, the pre-tokenizer, special ids
 * and flags from f. The tokenizer copies what it needs: f may be closed
 * afterwards. An unknown tokenizer.ggml.pre is an error (a missing one means
 * llama.cpp's "default"). */
tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen);
void tokenizer_free(tokenizer *t);

int tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t);     /* -1 if none */
int32_t tokenizer_eos(const tokenizer *t);     /* -1 if none */
int32_t tokenizer_eot(const tokenizer *t);     /* end of turn: eot_token_id or by text; -1 */
int32_t tokenizer_unk(const tokenizer *t);     /* -1 if none */
int tokenizer_add_bos(const tokenizer *t);     /* tokenizer.ggml.add_bos_token or default */
/* SentencePiece: a space is put before the text (tokenizer.ggml.add_space_prefix,
 * default 1). A whole-text decoder drops one leading space of the first piece
 * when this is set and the ids do not start with BOS (llama.cpp's detokenize). */
int tokenizer_add_space_prefix(const tokenizer *t);
/* "spm", or the pre-tokenizer's canonical name ("gpt-2", "llama-bpe", ...). */
const char *tokenizer_pre_name(const tokenizer *t);

/* TOKENIZER_TYPE_* of id (after llama.cpp's overrides: end-of-generation texts
 * such as "<|im_end|>" are CONTROL), 0 for other values, -1 out of range. */
int tokenizer_token_type(const tokenizer *t, int32_t id);
/* 1 when id ends generation: EOS, EOT, EOM and the tokens llama.cpp knows by
 * text (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>,
 * <|eom_id|>, <EOT>, FIM pad/repo/file-separator). */
int tokenizer_is_eog(const tokenizer *t, int32_t id);
/* The id of the token whose stored text is exactly text (NUL-terminated),
 * e.g. "<|im_end|>"; -1 if none. The lowest id wins among duplicates. */
int32_t tokenizer_find_token(const tokenizer *t, const char *text);
/* The token's text as stored in the GGUF (byte-level symbols, U+2581, ...);
 * returns its length (may be > cap: nothing is written past cap), -1 out of range. */
int tokenizer_token_text(const tokenizer *t, int32_t id, char *out, size_t cap);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is encoded byte by
 * byte) with no special-token parsing; a BOS is put first when add_bos is set
 * and the vocabulary has one. Writes at most cap ids to out and returns the
 * number of ids the text needs (which may be > cap: call again with more
 * room), or -1 on an internal error. Same as tokenizer_encode_ex with flags
 * add_bos ? TOKENIZER_ADD_BOS : 0. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos,
                     int32_t *out, int cap);
/* The same with TOKENIZER_* flags. With TOKENIZER_PARSE_SPECIAL and
 * TOKENIZER_ADD_BOS this is llama_tokenize(add_special, parse_special). Work
 * is O(n log n) in the text plus one scan of it per special token whose
 * first byte occurs in it. */
int tokenizer_encode_ex(const tokenizer *t, const char *text, size_t len, unsigned flags,
                        int32_t *out, int cap);

/* The pre-tokenizer's split of text (for tests and debugging): writes the end
 * offset of each piece (a piece starts where the previous one ended; the
 * first at 0) to ends, at most cap of them, and returns the number of pieces
 * (which may be > cap), or -1 on an internal error. Runs of invalid UTF-8
 * come out as pieces of their own. SentencePiece: the whole text is one piece. */
int tokenizer_split(const tokenizer *t, const char *text, size_t len, size_t *ends, int cap);

/* The bytes token id stands for when generated (llama.cpp's token_to_piece
 * with special = false): CONTROL, UNKNOWN, UNUSED tokens are nothing;
 * USER_DEFINED ones their text; BPE tokens are byte-level decoded;
 * SentencePiece tokens have U+2581 as space and <0xXX> as that byte (no
 * leading space is stripped). Returns the byte count (which may be > cap:
 * nothing is written past cap) or -1 for an id out of range. */
int tokenizer_token_bytes(const tokenizer *t, int32_t id, char *out, size_t cap);

/* Streaming: the length of the longest prefix of buf that does not end in
 * the middle of a UTF-8 character, i.e. len minus a trailing valid-but-
 * incomplete sequence (1 to 3 bytes). Invalid bytes are never held back, so
 * a caller that emits buf[0, result) and keeps the rest never splits a
 * character and never stalls. */
size_t tokenizer_utf8_complete_len(const char *buf, size_t len);

#endif
