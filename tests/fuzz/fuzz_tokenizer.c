/* fuzz_tokenizer.c: encode arbitrary bytes with a small byte-level BPE
 * vocabulary (llama-bpe pre-tokenizer, a few merges and special tokens) and a
 * small SentencePiece one, with and without special-token parsing.
 *
 * Checks: no crash or sanitizer report; the count is the same with or without
 * room for the ids; byte-level BPE decodes back to exactly the input when
 * nothing is parsed as special; with PARSE_SPECIAL it still decodes to the
 * input with the special tokens' texts removed or kept as their decoding
 * says (checked by length only: <= input); SentencePiece decodes to the input
 * with spaces kept, when the input is valid UTF-8 without U+2581 (as in
 * llama.cpp, U+2581 decodes to a space, and a lead byte before a space
 * swallows the escaped space into a byte-fallback symbol, so "\xf0 " comes
 * back as "\xf0\xe2\x96\x81"). The first input byte picks the flags. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"
/* The synthetic GGUF writer is test support, not part of llmesh_core: it is
 * compiled into this target directly so the corpus replay needs no extra
 * build wiring. */
#include "../unit/gguf_writer.c"

static tokenizer *load(gguf_writer *w)
{
    uint8_t *buf;
    size_t n;
    char err[256];
    if (gguf_writer_write_memory(w, &buf, &n) < 0) abort();
    gguf_file *f = gguf_open_memory(buf, n, err, sizeof err);
    tokenizer *t = f ? tokenizer_load(f, err, sizeof err) : NULL;
    gguf_close(f);
    free(buf);
    gguf_writer_free(w);
    if (!t) abort();
    return t;
}

static tokenizer *bpe, *spm;

static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t b = s[i];
        size_t k = b < 0x80 ? 1 : b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3
                 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
        if (k == 0 || k > n - i) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        if ((b == 0xe0 && s[i + 1] < 0xa0) || (b == 0xed && s[i + 1] > 0x9f) ||
            (b == 0xf0 && s[i + 1] < 0x90) || (b == 0xf4 && s[i + 1] > 0x8f))
            return 0;
        i += k;
    }
    return 1;
}

static void setup(void)
{
    static const char *const extra[] = {"th", "the", "\xc4\xa0the", "<|im_end|>", "ab"};
    static const char *const merges[] = {"t h", "th e", "\xc4\xa0 the", "a b"};
    gguf_writer *w = gguf_writer_new();
    gguf_writer_add_bpe_tokenizer(w, "llama-bpe", extra, 5, merges, 4, 1);
    bpe = load(w);
    static char bytes[256][8];
    const char *toks[270];
    float scores[270];
    int32_t types[270];
    int n = 0;
    toks[n] = "<unk>", scores[n] = 0, types[n++] = 2;
    toks[n] = "<s>", scores[n] = 0, types[n++] = 3;
    toks[n] = "</s>", scores[n] = 0, types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], scores[n] = 0, types[n++] = 6;
    }
    static const char *const normal[] = {"\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"), "ab",
                                         "\xe4\xb8\xad", "<u>"};
    for (int i = 0; i < 7; i++) {
        toks[n] = normal[i];
        scores[n] = -(float)i;
        types[n++] = i == 6 ? 4 : 1;
    }
    w = gguf_writer_new();
    gguf_writer_add_spm_tokenizer(w, toks, scores, types, n, -1);
    spm = load(w);
}

static char *decode_all(const tokenizer *t, const int32_t *ids, int n, size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int k = tokenizer_token_bytes(t, ids[i], NULL, 0);
        if (k < 0) abort();
        total += (size_t)k;
    }
    char *out = malloc(total + 1);
    size_t at = 0;
    for (int i = 0; i < n; i++) at += (size_t)tokenizer_token_bytes(t, ids[i], out + at, total - at);
    *len = at;
    return out;
}

static void run(const tokenizer *t, const char *text, size_t len, unsigned flags, int exact,
                const char *prefix)
{
    int n = tokenizer_encode_ex(t, text, len, flags, NULL, 0);
    if (n < 0) abort();
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    if (tokenizer_encode_ex(t, text, len, flags, ids, n) != n) abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tokenizer_n_vocab(t)) abort();
    size_t dl;
    char *dec = decode_all(t, ids, n, &dl);
    size_t pl = prefix && len ? strlen(prefix) : 0;
    if (exact && (dl != pl + len || memcmp(dec, prefix, pl) || memcmp(dec + pl, text, len)))
        abort();
    if (!exact && dl > pl + len + 64 * (size_t)n) abort();
    free(dec);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!bpe) setup();
    unsigned mode = size ? data[0] : 0;
    const char *text = (const char *)data + (size ? 1 : 0);
    size_t len = size ? size - 1 : 0;
    unsigned parse = mode & 1 ? TOKENIZER_PARSE_SPECIAL : mode & 2 ? TOKENIZER_PARSE_USER : 0;
    run(bpe, text, len, parse | (mode & 4 ? TOKENIZER_ADD_BOS : 0), parse == 0, "");
    /* SentencePiece decodes with the prefix space in front (byte fallback
     * covers every byte, so it is exact without special parsing). */
    int plain = memmem(text, len, "\xe2\x96\x81", 3) == NULL &&
                valid_utf8((const uint8_t *)text, len);
    run(spm, text, len, parse, parse == 0 && plain, " ");
    size_t ends[64];
    if (tokenizer_split(bpe, text, len, ends, 64) < 0) abort();
    (void)tokenizer_utf8_complete_len(text, len);
    return 0;
}
