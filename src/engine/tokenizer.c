/* tokenizer.c: byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"), see tokenizer.h.
 *
 * For: turning text into ids and ids back into bytes, exactly as GPT-2 style
 * tokenizers do, for any input bytes. Not for: special-token parsing, chat
 * templates, SentencePiece vocabularies (not yet), or streaming UTF-8
 * reassembly (the engine holds back incomplete characters).
 *
 * Encoding runs in two steps.
 * 1. Pre-tokenizing: the GPT-2 regex splits the text into pieces, through
 *    PCRE2 in UTF + UCP mode, JIT-compiled when the library allows (the
 *    interpreter otherwise, and as a fallback if the JIT stack runs out).
 *    Invalid UTF-8: the pattern is compiled with PCRE2_MATCH_INVALID_UTF, so
 *    invalid sequences never match any pattern item; each maximal run of bytes
 *    between two matches (which can only be invalid sequences, since the
 *    pattern's alternatives cover every valid character) becomes a piece of
 *    its own. Its bytes still map to the 256 byte tokens, so every input
 *    round-trips exactly.
 * 2. BPE per piece: symbols start as the byte tokens; the adjacent pair with
 *    the lowest merge rank (leftmost on ties) is merged until no pair has a
 *    rank. Symbols live in a linked list and candidate pairs in a binary heap,
 *    so a piece of n bytes costs O(n log n): a 100 KB "word" is fine. Merging
 *    the best pair first, leftmost first, gives the same result as GPT-2's
 *    "merge every occurrence of the best pair" loop whenever every merge's
 *    parts come from earlier merges, which is how BPE merges are trained.
 *
 * Everything is looked up by id: the merge table maps (left id, right id) to
 * (rank, merged id), so encoding never touches token strings. Decoding uses
 * each token's bytes, decoded once at load. */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/tokenizer.h"

#include <assert.h>
#include <limits.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* GGUF token types (tokenizer.ggml.token_type), as llama.cpp numbers them. */
enum {
    TOKEN_TYPE_NORMAL = 1,
    TOKEN_TYPE_UNKNOWN = 2,
    TOKEN_TYPE_CONTROL = 3,
    TOKEN_TYPE_USER_DEFINED = 4,
    TOKEN_TYPE_UNUSED = 5,
    TOKEN_TYPE_BYTE = 6,
};

#define TOKENIZER_MAX_VOCAB (1 << 24)

static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct {
    uint32_t left, right;  /* token ids; left == UINT32_MAX marks an empty slot */
    uint32_t rank;
    int32_t merged;
} merge_slot;

struct tokenizer {
    int n_vocab;
    int32_t bos, eos;
    int add_bos;
    uint8_t *bytes;          /* every token's decoded bytes, back to back */
    uint64_t *bytes_off;     /* n_vocab + 1 offsets into bytes */
    int32_t byte_token[256]; /* the token of each single byte */
    merge_slot *merges;      /* open addressing, a power of two slots */
    uint64_t merge_mask;
    pcre2_code *re;
    int jit;                 /* 1 when re was JIT-compiled */
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

/* A token's bytes: byte-level decoded when every character is a byte symbol,
 * else its text as is (added tokens such as "<|unused_0|>" or user-defined
 * ones are plain text). Writes at most len bytes (decoding never grows). */
static size_t token_decode(const int16_t cp_to_byte[324], gguf_str text, int type, uint8_t *out)
{
    if (type == TOKEN_TYPE_CONTROL) return 0;
    const uint8_t *s = (const uint8_t *)text.ptr;
    size_t n = 0;
    if (type != TOKEN_TYPE_USER_DEFINED) {
        for (uint64_t i = 0; i < text.len;) {
            uint32_t cp;
            size_t k = utf8_decode(s + i, (size_t)(text.len - i), &cp);
            if (k == 0 || cp >= 324 || cp_to_byte[cp] < 0) goto raw;
            out[n++] = (uint8_t)cp_to_byte[cp];
            i += k;
        }
        return n;
    }
raw:
    if (text.len) memcpy(out, s, (size_t)text.len);
    return (size_t)text.len;
}

/* ------------------------------------------------------------------------- */
/* Loading                                                                     */

/* Token text -> id, used only while loading (texts point into the GGUF). */
typedef struct {
    const gguf_kv *tokens;
    uint32_t *slots;        /* id + 1, 0 = empty */
    uint64_t mask;
} vocab_index;

static int32_t vocab_find(const vocab_index *vi, const char *s, size_t n)
{
    for (uint64_t i = hash_bytes(s, n) & vi->mask; vi->slots[i]; i = (i + 1) & vi->mask) {
        gguf_str t;
        int rc = gguf_arr_str(vi->tokens, vi->slots[i] - 1, &t);
        assert(rc == 0);
        (void)rc;
        if (t.len == n && (n == 0 || memcmp(t.ptr, s, n) == 0)) return (int32_t)(vi->slots[i] - 1);
    }
    return -1;
}

/* Duplicate texts keep their first (lowest) id. */
static int vocab_index_build(vocab_index *vi, const gguf_kv *tokens, int n_vocab)
{
    uint64_t n_slots = 16;
    while (n_slots < 2 * (uint64_t)n_vocab) n_slots *= 2;
    vi->tokens = tokens;
    vi->mask = n_slots - 1;
    vi->slots = calloc(n_slots, sizeof *vi->slots);
    if (!vi->slots) return -1;
    for (int id = 0; id < n_vocab; id++) {
        gguf_str t;
        if (gguf_arr_str(tokens, (uint64_t)id, &t) < 0) return -1;
        if (vocab_find(vi, t.ptr, (size_t)t.len) >= 0) continue;
        uint64_t i = hash_bytes(t.ptr, (size_t)t.len) & vi->mask;
        while (vi->slots[i]) i = (i + 1) & vi->mask;
        vi->slots[i] = (uint32_t)id + 1;
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

static int load_merges(tokenizer *t, const gguf_file *f, const vocab_index *vi, char *err,
                       size_t errlen)
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
        int32_t a = vocab_find(vi, m.ptr, la), b = vocab_find(vi, sp + 1, lb);
        int32_t ab = vocab_find(vi, joined, la + lb);
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

static int load_special(tokenizer *t, const gguf_file *f, const char *key, int32_t *out,
                        char *err, size_t errlen)
{
    *out = -1;
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

static int compile_pattern(tokenizer *t, char *err, size_t errlen)
{
    int code;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &at, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        set_err(err, errlen, "pre-tokenizer regex does not compile at %zu: %s", (size_t)at,
                (const char *)msg);
        return -1;
    }
    /* JIT is an optimisation: a library built without it still tokenizes.
     * Building with -DTOKENIZER_NO_JIT exercises the interpreter path. */
#ifndef TOKENIZER_NO_JIT
    t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0;
#endif
    return 0;
}

tokenizer *tokenizer_load(const gguf_file *f, char *err, size_t errlen)
{
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model) < 0) {
        set_err(err, errlen, "no tokenizer: tokenizer.ggml.model is missing or not a string");
        return NULL;
    }
    if (!gguf_str_eq(model, "gpt2")) {
        char shown[80];
        set_err(err, errlen, "tokenizer model '%s' is not supported (only 'gpt2', byte-level BPE)",
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

    tokenizer *t = calloc(1, sizeof *t);
    vocab_index vi = {0};
    if (!t) {
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    t->n_vocab = (int)tokens->count;

    /* Decoded bytes of every token. Decoding never makes a token longer, so
     * the sum of the text lengths bounds the arena. */
    uint64_t total = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        gguf_str s;
        if (gguf_arr_str(tokens, (uint64_t)id, &s) < 0) goto oom;
        total += s.len;
    }
    t->bytes = malloc(total ? total : 1);
    t->bytes_off = malloc(((size_t)t->n_vocab + 1) * sizeof *t->bytes_off);
    if (!t->bytes || !t->bytes_off) goto oom;
    uint32_t byte_to_cp[256];
    int16_t cp_to_byte[324];
    byte_symbols(byte_to_cp, cp_to_byte);
    uint64_t off = 0;
    for (int id = 0; id < t->n_vocab; id++) {
        gguf_str s;
        int64_t type = TOKEN_TYPE_NORMAL;
        gguf_arr_str(tokens, (uint64_t)id, &s);
        if (types && gguf_arr_i64(types, (uint64_t)id, &type) < 0) {
            set_err(err, errlen, "tokenizer.ggml.token_type[%d] is not an integer", id);
            goto err;
        }
        t->bytes_off[id] = off;
        off += token_decode(cp_to_byte, s, (int)type, t->bytes + off);
        assert(off <= total);
    }
    t->bytes_off[t->n_vocab] = off;

    if (vocab_index_build(&vi, tokens, t->n_vocab) < 0) goto oom;
    for (int b = 0; b < 256; b++) {
        char sym[2];
        size_t n = byte_symbol_utf8(byte_to_cp, b, sym);
        t->byte_token[b] = vocab_find(&vi, sym, n);
        if (t->byte_token[b] < 0) {
            set_err(err, errlen, "byte 0x%02x has no token: not a byte-level BPE vocabulary", b);
            goto err;
        }
    }
    if (load_merges(t, f, &vi, err, errlen) < 0) goto err;
    if (load_special(t, f, "tokenizer.ggml.bos_token_id", &t->bos, err, errlen) < 0) goto err;
    if (load_special(t, f, "tokenizer.ggml.eos_token_id", &t->eos, err, errlen) < 0) goto err;
    /* GPT-2 itself never adds a BOS, so a file that does not say is taken to
     * mean "no". */
    if (gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &t->add_bos) < 0) t->add_bos = 0;
    if (compile_pattern(t, err, errlen) < 0) goto err;
    free(vi.slots);
    return t;
oom:
    set_err(err, errlen, "out of memory loading a vocabulary of %d tokens", t->n_vocab);
err:
    free(vi.slots);
    tokenizer_free(t);
    return NULL;
}

void tokenizer_free(tokenizer *t)
{
    if (!t) return;
    pcre2_code_free(t->re);
    free(t->merges);
    free(t->bytes);
    free(t->bytes_off);
    free(t);
}

int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
int tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }

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

/* Calls fn(ctx, start, end) for each piece of text, in order; the pieces
 * tile the text exactly. Returns 0, or -1 when fn or PCRE2 fails. */
typedef int (*piece_fn)(void *ctx, size_t start, size_t end);

static int for_each_piece(const tokenizer *t, const uint8_t *p, size_t len, piece_fn fn,
                          void *ctx)
{
    if (len == 0) return 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(t->re, NULL);
    if (!md) return -1;
    uint32_t options = t->jit ? 0 : PCRE2_NO_JIT;
    int rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        int m = pcre2_match(t->re, p, len, pos, options, md, NULL);
        if (m == PCRE2_ERROR_JIT_STACKLIMIT && !(options & PCRE2_NO_JIT)) {
            options |= PCRE2_NO_JIT; /* the interpreter keeps its frames on the heap */
            continue;
        }
        size_t start = len, end = len;
        if (m >= 0) {
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            start = ov[0];
            end = ov[1];
            if (start < pos || end <= start || end > len) { rc = -1; break; }
        } else if (m != PCRE2_ERROR_NOMATCH) {
            rc = -1;
            break;
        }
        /* Bytes the pattern skipped are invalid UTF-8: one piece per run. */
        if (start > pos) rc = fn(ctx, pos, start);
        if (rc == 0 && end > start) rc = fn(ctx, start, end);
        pos = end;
    }
    pcre2_match_data_free(md);
    return rc;
}

typedef struct {
    const tokenizer *t;
    const uint8_t *text;
    bpe_scratch scratch;
    int32_t *out;
    int cap, n_out;
} encode_ctx;

static int encode_piece(void *ctx, size_t start, size_t end)
{
    encode_ctx *e = ctx;
    return bpe_piece(e->t, &e->scratch, e->text + start, end - start, e->out, e->cap, &e->n_out);
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, int add_bos,
                     int32_t *out, int cap)
{
    if (len && !text) return -1;
    encode_ctx e = {.t = t, .text = (const uint8_t *)text, .out = out, .cap = cap < 0 ? 0 : cap};
    if (add_bos && t->bos >= 0) {
        if (e.cap > 0) out[0] = t->bos;
        e.n_out = 1;
    }
    int rc = for_each_piece(t, e.text, len, encode_piece, &e);
    free(e.scratch.id);
    free(e.scratch.prev);
    free(e.scratch.next);
    free(e.scratch.heap);
    return rc < 0 ? -1 : e.n_out;
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
    return for_each_piece(t, (const uint8_t *)text, len, split_piece, &sc) < 0 ? -1 : sc.n;
}
