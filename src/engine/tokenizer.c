/* tokenizer.c: text <-> token ids for GGUF vocabularies, see tokenizer.h.
 *
 * For: turning text into ids and ids back into bytes exactly as llama.cpp
 * does for byte-level BPE ("gpt2") and SentencePiece-style ("llama")
 * vocabularies, for any input bytes. Not for: chat templates, WordPiece or
 * Unigram vocabularies, or the engine's UTF-8 sanitising of streamed output
 * (tokenizer_utf8_complete_len is the building block it can use).
 *
 * Encoding runs in up to three steps.
 * 0. Special tokens (only when the caller asks): the text is cut at
 *    occurrences of CONTROL / USER_DEFINED / UNKNOWN token texts, longest
 *    token first, the way llama.cpp's tokenizer_st_partition does; the spans
 *    between are encoded as below, each on its own.
 * 1. Pre-tokenizing (BPE only): the regexes of the vocabulary's pre-tokenizer
 *    (tokenizer.ggml.pre, see pre_table) split the text into pieces, through
 *    PCRE2 in UTF + UCP mode, JIT-compiled when the library allows (the
 *    interpreter otherwise, and as a fallback if the JIT stack runs out).
 *    A pipeline of several regexes splits each piece of the previous stage
 *    again, matches and the gaps between them alike (llama.cpp's
 *    unicode_regex_split). Invalid UTF-8: the patterns are compiled with
 *    PCRE2_MATCH_INVALID_UTF, so invalid sequences never match; each maximal
 *    run of bytes between two matches (which can only be invalid sequences,
 *    since every pipeline's last regex covers every valid character) becomes
 *    a piece of its own. Its bytes still map to the 256 byte tokens, so every
 *    input round-trips exactly.
 * 2. BPE per piece: symbols start as the byte tokens; the adjacent pair with
 *    the lowest merge rank (leftmost on ties) is merged until no pair has a
 *    rank. Symbols live in a linked list and candidate pairs in a binary heap,
 *    so a piece of n bytes costs O(n log n): a 100 KB "word" is fine. Merging
 *    the best pair first, leftmost first, gives the same result as GPT-2's
 *    "merge every occurrence of the best pair" loop whenever every merge's
 *    parts come from earlier merges, which is how BPE merges are trained.
 *    SentencePiece vocabularies instead merge by score (spm_fragment).
 *
 * Everything hot is looked up by id: the merge table maps (left id, right id)
 * to (rank, merged id). Token texts are kept (with a hash index) for the
 * lookups that need text: SentencePiece pairs, ignore_merges, special tokens,
 * tokenizer_find_token. Decoding uses each token's bytes, decoded at load. */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZER_MAX_VOCAB (1 << 24)
#define MAX_STAGES 4

/* ------------------------------------------------------------------------- */
/* Pre-tokenizers                                                              */

/* The regexes are llama.cpp's (llama-vocab.cpp, llm_tokenizer_bpe), which are
 * the HF tokenizer.json ones with "(?i:'s|...)" spelled "'[sS]|..." (so the
 * long s U+017F and the Kelvin sign never count as contraction letters, as in
 * llama.cpp; HF's case folding would let "'ſ" match), with one change: \s
 * becomes [\s\x{85}]. PCRE2's UCP \s is the Z categories plus \t\n\v\f\r;
 * Unicode White_Space, which llama.cpp, Python's regex and Oniguruma use,
 * also has U+0085 (NEL). Both are Unicode 14.0 here (PCRE2 10.42). */
#define WS "\\s\\x{85}"
#define GPT2_RE                                                                  \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS \
    "]+(?![^" WS "])|[" WS "]+"
#define LLAMA3_RE(digits)                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?" \
    "\\p{L}+|" digits "| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|[" WS "]*[\\r\\n]+|[" WS      \
    "]+(?![^" WS "])|[" WS "]+"

/* One pre-tokenizer: its regex pipeline, whether a piece that is itself a
 * token skips BPE (HF ignore_merges), and add_bos when the file does not say. */
typedef struct {
    const char *name;
    const char *regex[MAX_STAGES];
    int ignore_merges;
    int add_bos;
} pre_tokenizer;

/* llama.cpp's GPT-2 regex has no final "|\s+": what it leaves unmatched
 * becomes a piece anyway, and the alternative makes exactly those pieces, so
 * both split alike. */
static const pre_tokenizer pre_gpt2 = {"gpt-2", {GPT2_RE}, 0, 0};
static const pre_tokenizer pre_llama3 = {"llama-bpe", {LLAMA3_RE("\\p{N}{1,3}")}, 1, 1};
static const pre_tokenizer pre_dbrx = {"dbrx", {LLAMA3_RE("\\p{N}{1,3}")}, 0, 0};
static const pre_tokenizer pre_qwen2 = {"qwen2", {LLAMA3_RE("\\p{N}")}, 0, 0};
static const pre_tokenizer pre_starcoder = {"starcoder", {"\\p{N}", GPT2_RE}, 0, 0};
static const pre_tokenizer pre_falcon = {
    "falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]"}, 0, 0};
/* What llama.cpp uses when tokenizer.ggml.pre is missing or "default". */
static const pre_tokenizer pre_default = {
    "default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"}, 0, 0};

/* tokenizer.ggml.pre -> pre-tokenizer, as llama.cpp maps them. To add one:
 * copy the regexes and flags from llama-vocab.cpp, add a row, add vectors to
 * test_tokenizer.c. Names not here are refused (as llama.cpp does), since a
 * wrong split silently changes ids. */
static const struct {
    const char *name;
    const pre_tokenizer *pre;
} pre_table[] = {
    {"default", &pre_default},
    {"gpt-2", &pre_gpt2},       {"phi-2", &pre_gpt2},        {"jina-es", &pre_gpt2},
    {"jina-de", &pre_gpt2},     {"gigachat", &pre_gpt2},     {"jina-v1-en", &pre_gpt2},
    {"jina-v2-es", &pre_gpt2},  {"jina-v2-de", &pre_gpt2},   {"jina-v2-code", &pre_gpt2},
    {"roberta-bpe", &pre_gpt2}, {"mpt", &pre_gpt2},          {"olmo", &pre_gpt2},
    {"jais", &pre_gpt2},
    {"llama3", &pre_llama3},    {"llama-v3", &pre_llama3},   {"llama-bpe", &pre_llama3},
    {"falcon3", &pre_llama3},
    {"dbrx", &pre_dbrx},        {"smaug-bpe", &pre_dbrx},
    {"qwen2", &pre_qwen2},      {"stablelm2", &pre_qwen2},   {"megrez", &pre_qwen2},
    {"deepseek-r1-qwen", &pre_qwen2},
    {"starcoder", &pre_starcoder}, {"refact", &pre_starcoder}, {"command-r", &pre_starcoder},
    {"smollm", &pre_starcoder}, {"codeshell", &pre_starcoder}, {"exaone", &pre_starcoder},
    {"minerva-7b", &pre_starcoder},
    {"falcon", &pre_falcon},
};

/* Token texts llama.cpp treats as end of generation (and forces to CONTROL)
 * whatever the file says: end-of-turn markers and the FIM pad/repo/file
 * separators. */
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>", "<|fim_pad|>", "<fim-pad>", "<PAD>", "<|fim_repo|>", "<|repo_name|>",
    "<fim-repo>", "<REPO>", "<|file_sep|>",
};
/* The first of these present becomes the EOT id when the file names none. */
static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>",
    "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>",
};

typedef struct {
    uint32_t left, right;  /* token ids; left == UINT32_MAX marks an empty slot */
    uint32_t rank;
    int32_t merged;
} merge_slot;

enum { KIND_BPE, KIND_SPM };


struct tokenizer {
    int kind;
    int n_vocab;
    int32_t bos, eos, eot, eom, unk;
    int add_bos, add_space_prefix;
    uint8_t *type;           /* TOKENIZER_TYPE_* of each token (0: undefined) */
    uint8_t *eog;            /* 1 for end-of-generation tokens */
    float *score;            /* SentencePiece scores (NULL for BPE) */
    char *text;              /* every token's text as stored, back to back */
    uint64_t *text_off;      /* n_vocab + 1 offsets into text */
    uint32_t *text_slots;    /* hash index text -> id + 1 (0 empty), first id wins */
    uint64_t text_mask;
    size_t max_text_len;
    uint8_t *bytes;          /* every token's decoded bytes, back to back */
    uint64_t *bytes_off;     /* n_vocab + 1 offsets into bytes */
    int32_t byte_token[256]; /* the token of each single byte (-1: none, SPM only) */
    merge_slot *merges;      /* open addressing, a power of two slots */
    uint64_t merge_mask;
    int32_t *special;        /* CONTROL/USER_DEFINED/UNKNOWN ids, longest text first */
    int n_special;
    const pre_tokenizer *pre;
    pcre2_code *re[MAX_STAGES];
    int n_re;
    int jit[MAX_STAGES];     /* 1 when re[i] was JIT-compiled */
};

__attribute__((format(printf, 3, 4)))
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t hash_pair(uint32_t a, uint32_t b)
{
    uint64_t x = ((uint64_t)a << 32 | b) * 0x9e3779b97f4a7c15ull;
    return x ^ (x >> 29);
}

/* ------------------------------------------------------------------------- */
/* GPT-2 byte <-> unicode symbols                                              */

/* GPT-2 shows every byte as a printable character: bytes that already are one
 * (33-126, 161-172, 174-255) stand for themselves, the other 68 get U+0100
 * upward in byte order. */
static int byte_is_printable(int b)
{
    return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
}

static void byte_symbols(uint32_t byte_to_cp[256], int16_t cp_to_byte[324])
{
    for (int cp = 0; cp < 324; cp++) cp_to_byte[cp] = -1;
    int next = 256;
    for (int b = 0; b < 256; b++) {
        byte_to_cp[b] = byte_is_printable(b) ? (uint32_t)b : (uint32_t)next++;
        cp_to_byte[byte_to_cp[b]] = (int16_t)b;
    }
    assert(next == 324);
}

/* Decodes one UTF-8 character at s[0..n); returns its length, 0 if invalid. */
static size_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
    if (n == 0) return 0;
    uint8_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4 || len > n) return 0;
    uint32_t v = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10ffff)) ||
        (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

/* What a token stands for when decoded (llama.cpp's token_to_piece without
 * "special"): CONTROL, UNKNOWN, UNUSED and undefined-type tokens are nothing;
 * USER_DEFINED tokens are their text as is. BPE NORMAL (and BYTE) tokens are
 * byte-level decoded when every character is a byte symbol, else their text
 * as is (llama.cpp writes "[UNK_BYTE_...]" there instead). SentencePiece
 * NORMAL tokens are their text with U+2581 turned into spaces; BYTE tokens
 * "<0xXX>" are that byte. Writes at most text.len bytes (never grows). */
static size_t token_decode(int kind, const int16_t cp_to_byte[324], gguf_str text, int type,
                           uint8_t *out)
{
    const uint8_t *s = (const uint8_t *)text.ptr;
    size_t n = 0;
    if (type == TOKENIZER_TYPE_USER_DEFINED) goto raw;
    if (type != TOKENIZER_TYPE_NORMAL && type != TOKENIZER_TYPE_BYTE) return 0;
    if (kind == KIND_SPM) {
        if (type == TOKENIZER_TYPE_BYTE) {
            unsigned v;
            char tail;
            char buf[8];
            if (text.len == 6 && (memcpy(buf, s, 6), buf[6] = 0, 1) &&
                sscanf(buf, "<0x%2X%c", &v, &tail) == 2 && tail == '>') {
                out[0] = (uint8_t)v;
                return 1;
            }
            return 0;
        }
        for (uint64_t i = 0; i < text.len;) {
            if (i + 3 <= text.len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                out[n++] = ' ';
                i += 3;
            } else {
                out[n++] = s[i++];
            }
        }
        return n;
    }
    for (uint64_t i = 0; i < text.len;) {
        uint32_t cp;
        size_t k = utf8_decode(s + i, (size_t)(text.len - i), &cp);
        if (k == 0 || cp >= 324 || cp_to_byte[cp] < 0) goto raw;
        out[n++] = (uint8_t)cp_to_byte[cp];
        i += k;
    }
    return n;
raw:
    if (text.len) memcpy(out, s, (size_t)text.len);
    return (size_t)text.len;
}

/* ------------------------------------------------------------------------- */
/* Loading                                                                     */

static int32_t vocab_find(const tokenizer *t, const char *s, size_t n)
{
    if (n > t->max_text_len) return -1;
    for (uint64_t i = hash_bytes(s, n) & t->text_mask; t->text_slots[i];
         i = (i + 1) & t->text_mask) {
        uint32_t id = t->text_slots[i] - 1;
        uint64_t off = t->text_off[id];
        if (t->text_off[id + 1] - off == n && (n == 0 || memcmp(t->text + off, s, n) == 0))
            return (int32_t)id;
    }
    return -1;
}

/* Copies the texts and indexes them; duplicate texts keep their first
 * (lowest) id. */
static int load_texts(tokenizer *t, const gguf_kv *tokens)
{
    uint64_t total = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        gguf_str s;
        if (gguf_arr_str(tokens, (uint64_t)id, &s) < 0) return -1;
        total += s.len;
        if (s.len > t->max_text_len) t->max_text_len = (size_t)s.len;
    }
    uint64_t n_slots = 16;
    while (n_slots < 2 * (uint64_t)t->n_vocab) n_slots *= 2;
    t->text = malloc(total ? total : 1);
    t->text_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->text_off);
    t->text_slots = calloc(n_slots, sizeof *t->text_slots);
    if (!t->text || !t->text_off || !t->text_slots) return -1;
    t->text_mask = n_slots - 1;
    uint64_t off = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        gguf_str s;
        gguf_arr_str(tokens, (uint64_t)id, &s);
        t->text_off[id] = off;
        if (s.len) memcpy(t->text + off, s.ptr, (size_t)s.len);
        off += s.len;
    }
    t->text_off[t->n_vocab] = off;
    for (int id = 0; id < t->n_vocab; id++) {
        const char *s = t->text + t->text_off[id];
        size_t n = (size_t)(t->text_off[id + 1] - t->text_off[id]);
        if (vocab_find(t, s, n) >= 0) continue;
        uint64_t i = hash_bytes(s, n) & t->text_mask;
        while (t->text_slots[i]) i = (i + 1) & t->text_mask;
        t->text_slots[i] = (uint32_t)id + 1;
    }
    return 0;
}

static const merge_slot *merge_find(const tokenizer *t, uint32_t left, uint32_t right)
{
    for (uint64_t i = hash_pair(left, right) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *m = &t->merges[i];
        if (m->left == UINT32_MAX) return NULL;
        if (m->left == left && m->right == right) return m;
    }
}

/* Symbol text of byte b, as UTF-8 (1 or 2 bytes). */
static size_t byte_symbol_utf8(const uint32_t byte_to_cp[256], int b, char out[2])
{
    uint32_t cp = byte_to_cp[b];
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
}

static int load_merges(tokenizer *t, const gguf_file *f, char *err, size_t errlen)
{
    const gguf_kv *kv = gguf_find(f, "tokenizer.ggml.merges");
    uint64_t n = 0;
    if (kv) {
        if (kv->type != GGUF_TYPE_ARRAY || kv->elem_type != GGUF_TYPE_STRING) {
            set_err(err, errlen, "tokenizer.ggml.merges is not an array of strings");
            return -1;
        }
        n = kv->count;
    }
    if (n > (uint64_t)INT32_MAX) {
        set_err(err, errlen, "tokenizer.ggml.merges has %llu entries, too many",
                (unsigned long long)n);
        return -1;
    }
    uint64_t n_slots = 16;
    while (n_slots < 2 * n) n_slots *= 2;
    t->merges = malloc(n_slots * sizeof *t->merges);
    if (!t->merges) {
        set_err(err, errlen, "out of memory for %llu merges", (unsigned long long)n);
        return -1;
    }
    for (uint64_t i = 0; i < n_slots; i++) t->merges[i].left = UINT32_MAX;
    t->merge_mask = n_slots - 1;

    char *joined = NULL;
    size_t joined_cap = 0;
    int rc = -1;
    for (uint64_t rank = 0; rank < n; rank++) {
        gguf_str m;
        if (gguf_arr_str(kv, rank, &m) < 0) goto out;
        /* "A B": search from index 1, so that A may itself be a space. */
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', (size_t)m.len - 1) : NULL;
        char shown[80];
        if (!sp) {
            set_err(err, errlen, "merge %llu ('%s') is not two tokens separated by a space",
                    (unsigned long long)rank, gguf_str_printable(m, shown, sizeof shown));
            goto out;
        }
        size_t la = (size_t)(sp - m.ptr), lb = (size_t)m.len - la - 1;
        if (la + lb > joined_cap) {
            joined_cap = 2 * (la + lb);
            char *p = realloc(joined, joined_cap);
            if (!p) { set_err(err, errlen, "out of memory"); goto out; }
            joined = p;
        }
        memcpy(joined, m.ptr, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t a = vocab_find(t, m.ptr, la), b = vocab_find(t, sp + 1, lb);
        int32_t ab = vocab_find(t, joined, la + lb);
        if (a < 0 || b < 0 || ab < 0) {
            gguf_str missing = a < 0 ? (gguf_str){m.ptr, la}
                             : b < 0 ? (gguf_str){sp + 1, lb} : (gguf_str){joined, la + lb};
            char shown_missing[80];
            set_err(err, errlen, "merge %llu ('%s'): '%s' is not in the vocabulary",
                    (unsigned long long)rank, gguf_str_printable(m, shown, sizeof shown),
                    gguf_str_printable(missing, shown_missing, sizeof shown_missing));
            goto out;
        }
        uint64_t i = hash_pair((uint32_t)a, (uint32_t)b) & t->merge_mask;
        for (; t->merges[i].left != UINT32_MAX; i = (i + 1) & t->merge_mask)
            if (t->merges[i].left == (uint32_t)a && t->merges[i].right == (uint32_t)b) break;
        if (t->merges[i].left != UINT32_MAX) continue; /* a repeated pair keeps its best rank */
        t->merges[i] = (merge_slot){(uint32_t)a, (uint32_t)b, (uint32_t)rank, ab};
    }
    rc = 0;
out:
    free(joined);
    return rc;
}

/* *out keeps its default when the key is absent. */
static int load_special(tokenizer *t, const gguf_file *f, const char *key, int32_t *out,
                        char *err, size_t errlen)
{
    if (!gguf_find(f, key)) return 0;
    uint32_t id;
    if (gguf_get_u32(f, key, &id) < 0 || id >= (uint32_t)t->n_vocab) {
        set_err(err, errlen, "%s is not a token id below the vocabulary size %d", key,
                t->n_vocab);
        return -1;
    }
    *out = (int32_t)id;
    return 0;
}

static int compile_pipeline(tokenizer *t, char *err, size_t errlen)
{
    for (int i = 0; i < MAX_STAGES && t->pre->regex[i]; i++) {
        int code;
        PCRE2_SIZE at;
        t->re[i] = pcre2_compile((PCRE2_SPTR)t->pre->regex[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &at,
                                 NULL);
        if (!t->re[i]) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(code, msg, sizeof msg);
            set_err(err, errlen, "pre-tokenizer '%s' regex %d does not compile at %zu: %s",
                    t->pre->name, i, (size_t)at, (const char *)msg);
            return -1;
        }
        t->n_re = i + 1;
        /* JIT is an optimisation: a library built without it still tokenizes.
         * Building with -DTOKENIZER_NO_JIT exercises the interpreter path. */
#ifndef TOKENIZER_NO_JIT
        t->jit[i] = pcre2_jit_compile(t->re[i], PCRE2_JIT_COMPLETE) == 0;
#endif
    }
    return 0;
}

static int choose_pre(tokenizer *t, const gguf_file *f, char *err, size_t errlen)
{
    gguf_str pre;
    if (!gguf_find(f, "tokenizer.ggml.pre")) {
        t->pre = &pre_default; /* llama.cpp: "missing pre-tokenizer type, using 'default'" */
        return 0;
    }
    if (gguf_get_str(f, "tokenizer.ggml.pre", &pre) < 0) {
        set_err(err, errlen, "tokenizer.ggml.pre is not a string");
        return -1;
    }
    for (size_t i = 0; i < sizeof pre_table / sizeof pre_table[0]; i++)
        if (gguf_str_eq(pre, pre_table[i].name)) {
            t->pre = pre_table[i].pre;
            return 0;
        }
    char shown[80];
    set_err(err, errlen,
            "pre-tokenizer '%s' (tokenizer.ggml.pre) is not supported; known: gpt-2, "
            "llama-bpe, qwen2, dbrx, starcoder, smollm, falcon, default and aliases",
            gguf_str_printable(pre, shown, sizeof shown));
    return -1;
}

static int cmp_special(const void *a, const void *b, void *ctx)
{
    const tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint64_t lx = t->text_off[x + 1] - t->text_off[x], ly = t->text_off[y + 1] - t->text_off[y];
    if (lx != ly) return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* EOT/EOG detection by text and the special-token list (see eog_texts). */
static int finish_specials(tokenizer *t)
{
    if (t->eot < 0)
        for (size_t i = 0; i < sizeof eot_texts / sizeof eot_texts[0] && t->eot < 0; i++)
            t->eot = vocab_find(t, eot_texts[i], strlen(eot_texts[i]));
    for (size_t i = 0; i < sizeof eog_texts / sizeof eog_texts[0]; i++) {
        int32_t id = vocab_find(t, eog_texts[i], strlen(eog_texts[i]));
        if (id < 0) continue;
        t->eog[id] = 1;
        t->type[id] = TOKENIZER_TYPE_CONTROL;
    }
    if (t->eos >= 0) t->eog[t->eos] = 1;
    if (t->eot >= 0) t->eog[t->eot] = 1;
    if (t->eom >= 0) t->eog[t->eom] = 1;
    int n = 0;
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->type[id] == TOKENIZER_TYPE_CONTROL || t->type[id] == TOKENIZER_TYPE_USER_DEFINED ||
             t->type[id] == TOKENIZER_TYPE_UNKNOWN) && t->text_off[id + 1] > t->text_off[id])
            n++;
    t->special = malloc((size_t)(n ? n : 1) * sizeof *t->special);
    if (!t->special) return -1;
    for (int id = 0; id < t->n_vocab; id++)
        if ((t->type[id] == TOKENIZER_TYPE_CONTROL || t->type[id] == TOKENIZER_TYPE_USER_DEFINED ||
             t->type[id] == TOKENIZER_TYPE_UNKNOWN) && t->text_off[id + 1] > t->text_off[id])
            t->special[t->n_special++] = id;
    qsort_r(t->special, (size_t)t->n_special, sizeof *t->special, cmp_special, t);
    return 0;
}

tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen)
{
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) < 0) {
        set_err(err, errlen, "no tokenizer: tokenizer.ggml.model is missing or not a string");
        return NULL;
    }
    int kind;
    if (gguf_str_eq(model, "gpt2")) kind = KIND_BPE;
    else if (gguf_str_eq(model, "llama")) kind = KIND_SPM;
    else {
        char shown[80];
        set_err(err, errlen,
                "tokenizer model '%s' is not supported (only 'gpt2', byte-level BPE, and "
                "'llama', SentencePiece)",
                gguf_str_printable(model, shown, sizeof shown));
        return NULL;
    }
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    if (!tokens || tokens->type != GGUF_TYPE_ARRAY || tokens->elem_type != GGUF_TYPE_STRING ||
        tokens->count == 0 || tokens->count > TOKENIZER_MAX_VOCAB) {
        set_err(err, errlen, "tokenizer.ggml.tokens must be an array of 1 to %d strings",
                TOKENIZER_MAX_VOCAB);
        return NULL;
    }
    const gguf_kv *types = gguf_find(f, "tokenizer.ggml.token_type");
    if (types && (types->type != GGUF_TYPE_ARRAY || types->count != tokens->count)) {
        set_err(err, errlen, "tokenizer.ggml.token_type must be an array of %llu integers",
                (unsigned long long)tokens->count);
        return NULL;
    }
    const gguf_kv *scores = gguf_find(f, "tokenizer.ggml.scores");
    if (scores && (scores->type != GGUF_TYPE_ARRAY || scores->count != tokens->count)) {
        set_err(err, errlen, "tokenizer.ggml.scores must be an array of %llu numbers",
                (unsigned long long)tokens->count);
        return NULL;
    }

    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    t->kind = kind;
    t->n_vocab = (int)tokens->count;
    t->type = malloc((size_t)t->n_vocab);
    t->eog = calloc((size_t)t->n_vocab, 1);
    if (!t->type || !t->eog || load_texts(t, tokens) < 0) goto oom;
    for (int id = 0; id < t->n_vocab; id++) {
        int64_t type = TOKENIZER_TYPE_NORMAL;
        if (types && gguf_arr_i64(types, (uint64_t)id, &type) < 0) {
            set_err(err, errlen, "tokenizer.ggml.token_type[%d] is not an integer", id);
            goto err;
        }
        t->type[id] = type >= 1 && type <= 6 ? (uint8_t)type : 0;
    }
    if (kind == KIND_SPM) {
        /* llama.cpp reads missing scores as 0 (every merge then ties, and the
         * leftmost pair wins). NaN would break the heap order: refused. */
        t->score = calloc((size_t)t->n_vocab, sizeof *t->score);
        if (!t->score) goto oom;
        for (int id = 0; scores && id < t->n_vocab; id++) {
            float v;
            if (gguf_arr_f32(scores, (uint64_t)id, &v) < 0 || isnan(v)) {
                set_err(err, errlen, "tokenizer.ggml.scores[%d] is not a number", id);
                goto err;
            }
            t->score[id] = v;
        }
    }

    /* Decoded bytes of every token; decoding never makes a token longer. */
    uint64_t total = t->text_off[t->n_vocab];
    t->bytes = malloc(total ? total : 1);
    t->bytes_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->bytes_off);
    if (!t->bytes || !t->bytes_off) goto oom;

    t->bos = t->eos = t->eot = t->eom = t->unk = -1;
    if (kind == KIND_SPM) {
        /* llama.cpp's SentencePiece defaults: <unk> 0, <s> 1, </s> 2. */
        t->unk = 0;
        t->bos = t->n_vocab > 1 ? 1 : -1;
        t->eos = t->n_vocab > 2 ? 2 : -1;
        t->add_bos = 1;
        t->add_space_prefix = 1;
    }
    if (load_special(t, f, "tokenizer.ggml.bos_token_id", &t->bos, err, errlen) < 0 ||
        load_special(t, f, "tokenizer.ggml.eos_token_id", &t->eos, err, errlen) < 0 ||
        load_special(t, f, "tokenizer.ggml.eot_token_id", &t->eot, err, errlen) < 0 ||
        load_special(t, f, "tokenizer.ggml.eom_token_id", &t->eom, err, errlen) < 0 ||
        load_special(t, f, "tokenizer.ggml.unknown_token_id", &t->unk, err, errlen) < 0)
        goto err;
    if (finish_specials(t) < 0) goto oom;

    uint32_t byte_to_cp[256];
    int16_t cp_to_byte[324];
    byte_symbols(byte_to_cp, cp_to_byte);
    uint64_t off = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        gguf_str s = {t->text + t->text_off[id], t->text_off[id + 1] - t->text_off[id]};
        t->bytes_off[id] = off;
        off += token_decode(kind, cp_to_byte, s, t->type[id], t->bytes + off);
        assert(off <= total);
    }
    t->bytes_off[t->n_vocab] = off;

    if (kind == KIND_BPE) {
        for (int b = 0; b < 256; b++) {
            char sym[2];
            size_t n = byte_symbol_utf8(byte_to_cp, b, sym);
            t->byte_token[b] = vocab_find(t, sym, n);
            if (t->byte_token[b] < 0) {
                set_err(err, errlen, "byte 0x%02x has no token: not a byte-level BPE vocabulary",
                        b);
                goto err;
            }
        }
        if (load_merges(t, f, err, errlen) < 0) goto err;
        if (choose_pre(t, f, err, errlen) < 0) goto err;
        /* GPT-2 itself never adds a BOS; llama.cpp's default depends on the
         * pre-tokenizer (Llama 3 adds one). */
        t->add_bos = t->pre->add_bos;
        if (compile_pipeline(t, err, errlen) < 0) goto err;
    } else {
        /* Byte fallback: "<0xXX>" (upper-case hex, as SentencePiece writes
         * them), else the byte itself as a token text (llama.cpp's fallback);
         * a byte with neither encodes as the unknown token. */
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_token[b] = vocab_find(t, name, 6);
            if (t->byte_token[b] < 0) {
                char c = (char)b;
                t->byte_token[b] = vocab_find(t, &c, 1);
            }
        }
    }
    int v;
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &v) == 0) t->add_bos = v;
    if (gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &v) == 0) t->add_space_prefix = v;
    return t;
oom:
    set_err(err, errlen, "out of memory loading a vocabulary of %d tokens", t->n_vocab);
err:
    tokenizer_free(t);
    return NULL;
}

void tokenizer_free(tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < MAX_STAGES; i++) pcre2_code_free(t->re[i]);
    free(t->merges);
    free(t->bytes);
    free(t->bytes_off);
    free(t->text);
    free(t->text_off);
    free(t->text_slots);
    free(t->type);
    free(t->eog);
    free(t->score);
    free(t->special);
    free(t);
}

int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int32_t tokenizer_eot(const tokenizer *t) { return t->eot; }
int32_t tokenizer_unk(const tokenizer *t) { return t->unk; }
int tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
int tokenizer_add_space_prefix(const tokenizer *t) { return t->add_space_prefix; }
const char *tokenizer_pre_name(const tokenizer *t)
{
    return t->kind == KIND_SPM ? "spm" : t->pre->name;
}

int tokenizer_token_type(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->type[id] : -1;
}

int tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

int32_t tokenizer_find_token(const tokenizer *t, const char *text)
{
    return text ? vocab_find(t, text, strlen(text)) : -1;
}

int tokenizer_token_text(const tokenizer *t, int32_t id, char *out, size_t cap)
{
    if (id < 0 || id >= t->n_vocab) return -1;
    uint64_t start = t->text_off[id], n = t->text_off[id + 1] - start;
    if (n > INT_MAX) return -1;
    size_t k = n < cap ? (size_t)n : cap;
    if (k) memcpy(out, t->text + start, k);
    return (int)n;
}

int tokenizer_token_bytes(const tokenizer *t, int32_t id, char *out, size_t cap)
{
    if (id < 0 || id >= t->n_vocab) return -1;
    uint64_t start = t->bytes_off[id], n = t->bytes_off[id + 1] - start;
    if (n > INT_MAX) return -1;
    size_t k = n < cap ? (size_t)n : cap;
    if (k) memcpy(out, t->bytes + start, k);
    return (int)n;
}
/* ------------------------------------------------------------------------- */
/* BPE                                                                         */

typedef struct {
    uint32_t rank;
    uint32_t left;            /* symbol index of the pair's left side */
    uint32_t left_id, right_id; /* the ids when pushed: a stale entry no longer matches */
} pair_entry;

/* Per-call scratch, grown as pieces need it (never shared between threads). */
typedef struct {
    int32_t *id;
    uint32_t *prev, *next;   /* UINT32_MAX = none */
    pair_entry *heap;
    size_t n_heap, cap_sym, cap_heap;
} bpe_scratch;

static int pair_less(const pair_entry *a, const pair_entry *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(bpe_scratch *s, pair_entry e)
{
    assert(s->n_heap < s->cap_heap);
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_less(&e, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
}

static pair_entry heap_pop(bpe_scratch *s)
{
    assert(s->n_heap > 0);
    pair_entry top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_less(&s->heap[c + 1], &s->heap[c])) c++;
        if (!pair_less(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void push_pair(const tokenizer *t, bpe_scratch *s, uint32_t left)
{
    uint32_t right = s->next[left];
    if (right == UINT32_MAX) return;
    const merge_slot *m = merge_find(t, (uint32_t)s->id[left], (uint32_t)s->id[right]);
    if (m) heap_push(s, (pair_entry){m->rank, left, (uint32_t)s->id[left], (uint32_t)s->id[right]});
}

static int scratch_reserve(bpe_scratch *s, size_t n)
{
    if (n <= s->cap_sym) return 0;
    size_t cap = s->cap_sym ? s->cap_sym : 64;
    while (cap < n) cap *= 2;
    /* Each merge removes one symbol and pushes at most two pairs, on top of
     * the n - 1 initial pairs: the heap never holds more than 3n entries. */
    int32_t *id = realloc(s->id, cap * sizeof *id);
    if (id) s->id = id;
    uint32_t *prev = realloc(s->prev, cap * sizeof *prev);
    if (prev) s->prev = prev;
    uint32_t *next = realloc(s->next, cap * sizeof *next);
    if (next) s->next = next;
    pair_entry *heap = realloc(s->heap, 3 * cap * sizeof *heap);
    if (heap) s->heap = heap;
    if (!id || !prev || !next || !heap) return -1;
    s->cap_sym = cap;
    s->cap_heap = 3 * cap;
    return 0;
}

/* Appends the ids of one piece; *n_out counts all ids, *out gets those < cap. */
static int bpe_piece(const tokenizer *t, bpe_scratch *s, const uint8_t *p, size_t n,
                     int32_t *out, int cap, int *n_out)
{
    assert(n > 0);
    if (n > UINT32_MAX - 1 || scratch_reserve(s, n) < 0) return -1;
    for (size_t i = 0; i < n; i++) {
        s->id[i] = t->byte_token[p[i]];
        s->prev[i] = i ? (uint32_t)i - 1 : UINT32_MAX;
        s->next[i] = i + 1 < n ? (uint32_t)i + 1 : UINT32_MAX;
    }
    s->n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, s, (uint32_t)i);
    while (s->n_heap) {
        pair_entry e = heap_pop(s);
        uint32_t left = e.left, right = s->next[left];
        /* Entries go stale when a neighbour merged first: a merged-away symbol
         * is unlinked (it is nobody's next), and a symbol that merged has a
         * longer token, so a changed id on either side shows up here. */
        if (s->id[left] < 0 || right == UINT32_MAX || (uint32_t)s->id[left] != e.left_id ||
            (uint32_t)s->id[right] != e.right_id)
            continue;
        const merge_slot *m = merge_find(t, e.left_id, e.right_id);
        assert(m && m->rank == e.rank);
        s->id[left] = m->merged;
        s->id[right] = -1;
        s->next[left] = s->next[right];
        if (s->next[right] != UINT32_MAX) s->prev[s->next[right]] = left;
        if (s->prev[left] != UINT32_MAX) push_pair(t, s, s->prev[left]);
        push_pair(t, s, left);
    }
    for (uint32_t i = 0; i != UINT32_MAX; i = s->next[i]) {
        assert(s->id[i] >= 0);
        if (*n_out == INT_MAX) return -1;
        if (*n_out < cap) out[*n_out] = s->id[i];
        (*n_out)++;
    }
    return 0;
}

/* Calls fn(ctx, start, end) for each piece of text[start, end), in order; the
 * pieces tile it exactly. Stage s splits with regex s; matches and the gaps
 * between them both go on to stage s + 1, and the last stage's pieces to fn.
 * Each regex sees the piece as the whole subject, so "(?!\S)" at a piece's
 * end sees the end of text, as in llama.cpp. Returns 0, or -1 when fn or
 * PCRE2 fails. */
typedef int (*piece_fn)(void *ctx, size_t start, size_t end);

static int split_stage(const tokenizer *t, pcre2_match_data *md, int stage, const uint8_t *p,
                       size_t start, size_t end, piece_fn fn, void *ctx)
{
    if (stage >= t->n_re || stage >= MAX_STAGES) return fn(ctx, start, end); /* bound visible to -O3 */
    uint32_t options = t->jit[stage] ? 0 : PCRE2_NO_JIT;
    int rc = 0;
    size_t pos = start;
    while (pos < end && rc == 0) {
        int m = pcre2_match(t->re[stage], p, end, pos, options, md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
            options |= PCRE2_NO_JIT; /* the interpreter keeps its frames on the heap */
            continue;
        }
        size_t ms = end, me = end;
        if (m >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            ms = ov[0];
            me = ov[1];
            if (ms < pos || me <= ms || me > end) return -1;
        } else if (m != PCRE2_ERROR_NOMATCH) {
            return -1;
        }
        /* Bytes the regex skipped (in the last stage: invalid UTF-8). */
        if (ms > pos) rc = split_stage(t, md, stage + 1, p, pos, ms, fn, ctx);
        if (rc == 0 && me > ms) rc = split_stage(t, md, stage + 1, p, ms, me, fn, ctx);
        pos = me;
    }
    return rc;
}

static int for_each_piece(const tokenizer *t, const uint8_t *p, size_t start, size_t end,
                          piece_fn fn, void *ctx)
{
    if (end <= start) return 0;
    /* One match data serves every stage: offsets are copied out before the
     * next stage runs. */
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md) return -1;
    int rc = split_stage(t, md, 0, p, start, end, fn, ctx);
    pcre2_match_data_free(md);
    return rc;
}

/* ------------------------------------------------------------------------- */
/* SentencePiece                                                               */

/* llama.cpp's SPM encoder (itself the original llama tokenizer's): symbols
 * are UTF-8 characters (their length read from the lead byte alone, so bytes
 * of invalid UTF-8 become 1-byte symbols or swallow what follows, exactly as
 * there); the adjacent pair whose concatenation is a token with the highest
 * score merges first, the leftmost on ties; a final symbol that is not a
 * token becomes its bytes' tokens (byte fallback). O(n log n): a pair longer
 * than the longest token is never looked up. */
typedef struct {
    float score;
    uint32_t left, right, size;
} spm_pair;

typedef struct {
    char *buf;
    size_t cap_buf;
    uint32_t *start, *len, *prev, *next;
    spm_pair *heap;
    size_t n_heap, cap_sym;
} spm_scratch;

static int spm_better(const spm_pair *a, const spm_pair *b)
{
    return a->score != b->score ? a->score > b->score : a->left < b->left;
}

static void spm_push(spm_scratch *s, spm_pair e)
{
    assert(s->n_heap < 3 * s->cap_sym);
    size_t i = s->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!spm_better(&e, &s->heap[parent])) break;
        s->heap[i] = s->heap[parent];
        i = parent;
    }
    s->heap[i] = e;
}

static spm_pair spm_pop(spm_scratch *s)
{
    spm_pair top = s->heap[0], last = s->heap[--s->n_heap];
    size_t i = 0, n = s->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && spm_better(&s->heap[c + 1], &s->heap[c])) c++;
        if (!spm_better(&s->heap[c], &last)) break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n) s->heap[i] = last;
    return top;
}

static void spm_try_pair(const tokenizer *t, spm_scratch *s, uint32_t left, uint32_t right)
{
    if (left == UINT32_MAX || right == UINT32_MAX) return;
    size_t n = (size_t)s->len[left] + s->len[right];
    if (n > t->max_text_len) return;
    int32_t id = vocab_find(t, s->buf + s->start[left], n);
    if (id < 0) return;
    spm_push(s, (spm_pair){t->score[id], left, right, (uint32_t)n});
}

static int emit(int32_t id, int32_t *out, int cap, int *n_out)
{
    if (*n_out == INT_MAX) return -1;
    if (*n_out < cap) out[*n_out] = id;
    (*n_out)++;
    return 0;
}

static int spm_fragment(const tokenizer *t, spm_scratch *s, const uint8_t *p, size_t n,
                        int space_prefix, int32_t *out, int cap, int *n_out)
{
    /* Escaped text: an optional leading U+2581, every ' ' as U+2581. */
    if (n > (UINT32_MAX - 3) / 3) return -1;
    size_t need = 3 + 3 * n;
    if (need > s->cap_buf) {
        char *b = realloc(s->buf, need);
        if (!b) return -1;
        s->buf = b;
        s->cap_buf = need;
    }
    size_t m = 0;
    if (space_prefix) { memcpy(s->buf, "\xe2\x96\x81", 3); m = 3; }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == ' ') { memcpy(s->buf + m, "\xe2\x96\x81", 3); m += 3; }
        else s->buf[m++] = (char)p[i];
    }
    if (m == 0) return 0;
    if (m > s->cap_sym) {
        size_t n_cap = s->cap_sym ? s->cap_sym : 64;
        while (n_cap < m) n_cap *= 2;
        uint32_t *a = realloc(s->start, n_cap * sizeof *a);
        if (a) s->start = a;
        uint32_t *b = realloc(s->len, n_cap * sizeof *b);
        if (b) s->len = b;
        uint32_t *c = realloc(s->prev, n_cap * sizeof *c);
        if (c) s->prev = c;
        uint32_t *d = realloc(s->next, n_cap * sizeof *d);
        if (d) s->next = d;
        /* n - 1 initial pairs, at most two more per merge: below 3n. */
        spm_pair *h = realloc(s->heap, 3 * n_cap * sizeof *h);
        if (h) s->heap = h;
        if (!a || !b || !c || !d || !h) return -1;
        s->cap_sym = n_cap;
    }
    static const uint8_t lead_len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    uint32_t n_sym = 0;
    for (size_t off = 0; off < m; n_sym++) {
        size_t k = lead_len[(uint8_t)s->buf[off] >> 4];
        if (k > m - off) k = m - off;
        s->start[n_sym] = (uint32_t)off;
        s->len[n_sym] = (uint32_t)k;
        s->prev[n_sym] = n_sym ? n_sym - 1 : UINT32_MAX;
        s->next[n_sym] = off + k < m ? n_sym + 1 : UINT32_MAX;
        off += k;
    }
    s->n_heap = 0;
    for (uint32_t i = 1; i < n_sym; i++) spm_try_pair(t, s, i - 1, i);
    while (s->n_heap) {
        spm_pair e = spm_pop(s);
        uint32_t l = e.left, r = e.right;
        /* Symbols only grow, so a stale pair shows as a changed total size. */
        if (s->len[l] == 0 || s->len[r] == 0 || s->len[l] + s->len[r] != e.size) continue;
        s->len[l] += s->len[r];
        s->len[r] = 0;
        s->next[l] = s->next[r];
        if (s->next[r] != UINT32_MAX) s->prev[s->next[r]] = l;
        spm_try_pair(t, s, s->prev[l], l);
        spm_try_pair(t, s, l, s->next[l]);
    }
    for (uint32_t i = 0; i != UINT32_MAX; i = s->next[i]) {
        const char *sym = s->buf + s->start[i];
        int32_t id = vocab_find(t, sym, s->len[i]);
        if (id >= 0) {
            if (emit(id, out, cap, n_out) < 0) return -1;
            continue;
        }
        for (uint32_t k = 0; k < s->len[i]; k++) {
            int32_t b = t->byte_token[(uint8_t)sym[k]];
            if (b < 0) b = t->unk;
            if (b >= 0 && emit(b, out, cap, n_out) < 0) return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Special tokens                                                              */

typedef struct {
    size_t start, end;
    int32_t token;  /* -1: text */
    uint32_t next;  /* UINT32_MAX: last */
} segment;

typedef struct {
    segment *v;
    uint32_t n, cap;
} segment_list;

static uint32_t segment_add(segment_list *l, segment s)
{
    if (l->n == l->cap) {
        uint32_t cap = l->cap ? 2 * l->cap : 16;
        segment *v = realloc(l->v, cap * sizeof *v);
        if (!v) return UINT32_MAX;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = s;
    return l->n++;
}

/* llama.cpp's tokenizer_st_partition: for each special token, longest text
 * first (equal lengths by id), every text segment is cut at the token's
 * leftmost non-overlapping occurrences. The order matters: a longer token
 * wins over a shorter one even when the shorter occurs further left. Costs
 * one memmem pass per eligible token whose first byte occurs in the text. */
static int partition(const tokenizer *t, const char *text, size_t len, unsigned flags,
                     segment_list *l)
{
    l->n = 0;
    if (segment_add(l, (segment){0, len, -1, UINT32_MAX}) == UINT32_MAX) return -1;
    if (!(flags & (TOKENIZER_PARSE_SPECIAL | TOKENIZER_PARSE_USER))) return 0;
    uint8_t present[256] = {0};
    for (size_t i = 0; i < len; i++) present[(uint8_t)text[i]] = 1;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        if (!(flags & TOKENIZER_PARSE_SPECIAL) && t->type[id] != TOKENIZER_TYPE_USER_DEFINED)
            continue;
        const char *tok = t->text + t->text_off[id];
        size_t tl = (size_t)(t->text_off[id + 1] - t->text_off[id]);
        if (!present[(uint8_t)tok[0]]) continue;
        for (uint32_t i = 0; i != UINT32_MAX;) {
            uint32_t after = l->v[i].next; /* segments made below lie before it */
            uint32_t cur = i;
            while (l->v[cur].token < 0) {
                segment sg = l->v[cur];
                const char *hit = memmem(text + sg.start, sg.end - sg.start, tok, tl);
                if (!hit) break;
                size_t at = (size_t)(hit - text), rest = at + tl;
                uint32_t tk;
                if (at == sg.start) {
                    l->v[cur].token = id;
                    l->v[cur].end = rest;
                    tk = cur;
                } else {
                    l->v[cur].end = at;
                    tk = segment_add(l, (segment){at, rest, id, sg.next});
                    if (tk == UINT32_MAX) return -1;
                    l->v[cur].next = tk;
                }
                if (rest == sg.end) break;
                cur = segment_add(l, (segment){rest, sg.end, -1, l->v[tk].next});
                if (cur == UINT32_MAX) return -1;
                l->v[tk].next = cur;
            }
            i = after;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Encoding                                                                    */

typedef struct {
    const tokenizer *t;
    const uint8_t *text;
    bpe_scratch scratch;
    char *sym;               /* a piece as byte-level symbols (ignore_merges) */
    size_t cap_sym;
    int32_t *out;
    int cap, n_out;
} encode_ctx;

static int encode_piece(void *ctx, size_t start, size_t end)
{
    encode_ctx *e = ctx;
    const tokenizer *t = e->t;
    size_t n = end - start;
    /* ignore_merges (Llama 3): a piece that is a token as a whole is that
     * token, whatever the merges would make of it. */
    if (t->pre->ignore_merges && n <= t->max_text_len) {
        if (2 * n > e->cap_sym) {
            char *p = realloc(e->sym, 2 * n);
            if (!p) return -1;
            e->sym = p;
            e->cap_sym = 2 * n;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const char *s = t->text + t->text_off[t->byte_token[e->text[start + i]]];
            size_t k = (size_t)(t->text_off[t->byte_token[e->text[start + i]] + 1] -
                                t->text_off[t->byte_token[e->text[start + i]]]);
            memcpy(e->sym + m, s, k);
            m += k;
        }
        int32_t id = vocab_find(t, e->sym, m);
        if (id >= 0) return emit(id, e->out, e->cap, &e->n_out);
    }
    return bpe_piece(t, &e->scratch, e->text + start, n, e->out, e->cap, &e->n_out);
}

int tokenizer_encode_ex(const tokenizer *t, const char *text, size_t len, unsigned flags,
                        int32_t *out, int cap)
{
    if (len && !text) return -1;
    encode_ctx e = {.t = t, .text = (const uint8_t *)text, .out = out, .cap = cap < 0 ? 0 : cap};
    spm_scratch spm = {0};
    segment_list segs = {0};
    int rc = 0;
    if ((flags & TOKENIZER_ADD_BOS) && t->bos >= 0) rc = emit(t->bos, out, e.cap, &e.n_out);
    if (rc == 0 && len > 0) rc = partition(t, text, len, flags, &segs);
    /* SentencePiece: a space goes before the text at the start and after
     * each special token (llama.cpp's is_prev_special). */
    int prev_special = 1;
    for (uint32_t i = 0; rc == 0 && len > 0 && i != UINT32_MAX; i = segs.v[i].next) {
        segment sg = segs.v[i];
        if (sg.token >= 0) {
            rc = emit(sg.token, out, e.cap, &e.n_out);
            prev_special = 1;
        } else if (t->kind == KIND_SPM) {
            rc = spm_fragment(t, &spm, e.text + sg.start, sg.end - sg.start,
                              t->add_space_prefix && prev_special, out, e.cap, &e.n_out);
            prev_special = 0;
        } else {
            rc = for_each_piece(t, e.text, sg.start, sg.end, encode_piece, &e);
        }
    }
    free(segs.v);
    free(e.sym);
    free(e.scratch.id);
    free(e.scratch.prev);
    free(e.scratch.next);
    free(e.scratch.heap);
    free(spm.buf);
    free(spm.start);
    free(spm.len);
    free(spm.prev);
    free(spm.next);
    free(spm.heap);
    return rc < 0 ? -1 : e.n_out;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos,
                     int32_t *out, int cap)
{
    return tokenizer_encode_ex(t, text, len, add_bos ? TOKENIZER_ADD_BOS : 0, out, cap);
}

typedef struct {
    size_t *ends;
    int cap, n;
} split_ctx;

static int split_piece(void *ctx, size_t start, size_t end)
{
    split_ctx *sc = ctx;
    (void)start;
    if (sc->n == INT_MAX) return -1;
    if (sc->n < sc->cap) sc->ends[sc->n] = end;
    sc->n++;
    return 0;
}

int tokenizer_split(const tokenizer *t, const char *text, size_t len, size_t *ends, int cap)
{
    if (len && !text) return -1;
    split_ctx sc = {ends, cap < 0 ? 0 : cap, 0};
    if (t->kind == KIND_SPM) return len ? split_piece(&sc, 0, len) == 0 ? sc.n : -1 : 0;
    return for_each_piece(t, (const uint8_t *)text, 0, len, split_piece, &sc) < 0 ? -1 : sc.n;
}

/* ------------------------------------------------------------------------- */
/* Streaming                                                                   */

size_t tokenizer_utf8_complete_len(const char *buf, size_t len)
{
    /* Find the last lead byte among the final three; hold it back when what
     * follows it is a valid but unfinished prefix (Unicode's maximal subpart:
     * E0 needs A0-BF next, ED 80-9F, F0 90-BF, F4 80-8F). */
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        uint8_t b = (uint8_t)buf[len - k];
        if (b >= 0x80 && b < 0xc0) continue; /* a continuation byte: look further back */
        size_t need = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3
                    : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
        if (need <= k) return len;           /* ASCII, invalid, or complete */
        uint8_t lo = 0x80, hi = 0xbf;
        if (b == 0xe0) lo = 0xa0;
        if (b == 0xed) hi = 0x9f;
        if (b == 0xf0) lo = 0x90;
        if (b == 0xf4) hi = 0x8f;
        for (size_t i = 1; i < k; i++) {
            uint8_t c = (uint8_t)buf[len - k + i];
            if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) return len;
        }
        return len - k;
    }
    return len;
}
