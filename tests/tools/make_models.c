/* make_models.c: writes the synthetic GGUF files that tests/e2e/reference
 * feeds to llmesh and to llama.cpp (tests/integration/llamacpp_reference.sh).
 *
 *   make_models vocabs DIR        tokenizer test files, one per pre-tokenizer
 *                                 (bpe-NAME.gguf) and two SentencePiece ones
 *   make_models list              names of the logits models, one a line
 *   make_models model NAME PATH   one logits model: real layer widths of a
 *                                 known model, two layers, random weights
 *   make_models list-split        names of the split-test models (small widths,
 *                                 six layers; `model NAME PATH` writes them)
 *   make_models model bench-qwen2.5-0.5b-q8_0 PATH
 *                                 Qwen2.5-0.5B's widths and 24 layers, for
 *                                 bench/split_bench.sh
 *   make_models templated TEMPLATE PATH
 *                                 a one-layer random llama (byte-level vocabulary)
 *                                 with the chat template in file TEMPLATE, for
 *                                 tests/integration/agents_client.sh
 *   make_models list-shape        names of the whole-model shapes (every layer
 *                                 and the real vocabulary) for
 *                                 bench/vs_llamacpp.sh
 *
 * Vocabularies: byte-level BPE merges and SentencePiece pieces are trained
 * here on a small multilingual corpus (below, written for this tool), so the
 * merges are realistic (words, digit runs, CJK characters, whitespace runs)
 * without shipping any real tokenizer. Each vocabulary also has CONTROL
 * tokens (<|bos|>, <|endoftext|>, <|im_start|>, <|im_end|>), one
 * USER_DEFINED token ("<tool>") and a few whole-word tokens that no merge
 * reaches (they matter only for pre-tokenizers with ignore_merges). The
 * model part is a one-layer llama with zero weights, so that both programs
 * load the file as a model.
 * Deterministic: same program, same bytes. Bounded: every loop runs over the
 * corpus or a fixed count. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"
#include "model_writer.h"

#define BPE_MERGES 700     /* merges trained at most */
#define SPM_PIECES 900     /* multi-character pieces at most */
#define SPM_MAX_CHARS 6    /* longest piece, in characters */
#define MAX_TOKENS 4096

static const char corpus[] =
    "The quick brown fox jumps over the lazy dog. The dog didn't mind; it's used to it.\n"
    "We'll meet at 10:30 on 2024-05-17, and I'd say we're late by 15 minutes or 1,250 seconds.\n"
    "They've paid $3.99, then 12.5% more: 4,096 bytes cost 123456789 units in 1999 and 2000.\n"
    "    def main():\n        return 0  # four spaces, then eight\n\tTabs\tand\ttabs\n\n\n"
    "Hello, world! HELLO WORLD!!! hello... world??? (hello) [world] {hello: world}\n"
    "Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9 fa\xc3\xa7" "ade \xc3\xbc" "ber Stra\xc3\x9f" "e \xc3\xa9t\xc3\xa9 "
    "\xc3\xa9t\xc3\xa9 \xc3\xa0 la caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e\n"
    /* Greek, Russian */
    "\xce\x9a\xce\xb1\xce\xbb\xce\xb7\xce\xbc\xce\xad\xcf\x81\xce\xb1 \xce\xba\xcf\x8c\xcf\x83\xce\xbc\xce\xb5 "
    "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80 \xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82\n"
    /* Chinese: 你好世界 我们 中国 中国人 你好 */
    "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c\xe3\x80\x82\xe6\x88\x91\xe4\xbb\xac\xe5\x9c\xa8"
    "\xe4\xb8\xad\xe5\x9b\xbd\xef\xbc\x8c\xe4\xb8\xad\xe5\x9b\xbd\xe4\xba\xba\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xbd\xa0\xe5\xa5\xbd\n"
    /* Japanese: こんにちは世界 カタカナ */
    "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\xe4\xb8\x96\xe7\x95\x8c "
    "\xe3\x82\xab\xe3\x82\xbf\xe3\x82\xab\xe3\x83\x8a \xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf\n"
    /* Korean: 안녕하세요 안녕 */
    "\xec\x95\x88\xeb\x85\x95\xed\x95\x98\xec\x84\xb8\xec\x9a\x94 \xec\x95\x88\xeb\x85\x95\n"
    /* emoji: thumbs up twice, smile twice, rocket once */
    "ok \xf0\x9f\x91\x8d\xf0\x9f\x91\x8d great \xf0\x9f\x98\x80 \xf0\x9f\x98\x80 launch \xf0\x9f\x9a\x80\n"
    "The the THE tHe; I'm you're she'll he'd it's IT'S we've\r\n\r\nend of file...   \n";

/* ---- small helpers ----------------------------------------------------------- */

static void die(const char *msg)
{
    fprintf(stderr, "make_models: %s\n", msg);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) die("out of memory");
    return p;
}

static int utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

/* A token list: texts (owned), types, scores. */
typedef struct {
    char *text[MAX_TOKENS];
    int32_t type[MAX_TOKENS];
    float score[MAX_TOKENS];
    int n;
} vocab;

static int vocab_find(const vocab *v, const char *s)
{
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->text[i], s)) return i;
    return -1;
}

static int vocab_add(vocab *v, const char *s, int32_t type, float score)
{
    if (v->n == MAX_TOKENS) die("vocabulary full");
    v->text[v->n] = xstrdup(s);
    v->type[v->n] = type;
    v->score[v->n] = score;
    return v->n++;
}

static void vocab_clear(vocab *v)
{
    for (int i = 0; i < v->n; i++) free(v->text[i]);
    v->n = 0;
}

/* A one-layer llama with zero weights for n_vocab tokens. */
static void add_zero_llama(gguf_writer *w, int n_vocab)
{
    const uint64_t E = 32, F = 64;
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_str(w, "general.name", "llmesh-reference-vocab");
    gguf_writer_add_u32(w, "llama.context_length", 512);
    gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)E);
    gguf_writer_add_u32(w, "llama.block_count", 1);
    gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)F);
    gguf_writer_add_u32(w, "llama.attention.head_count", 4);
    gguf_writer_add_u32(w, "llama.attention.head_count_kv", 4);
    gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    struct { const char *name; uint64_t ne0, ne1; } t[] = {
        {"token_embd.weight", E, (uint64_t)n_vocab}, {"output_norm.weight", E, 1},
        {"blk.0.attn_norm.weight", E, 1}, {"blk.0.attn_q.weight", E, E},
        {"blk.0.attn_k.weight", E, E}, {"blk.0.attn_v.weight", E, E},
        {"blk.0.attn_output.weight", E, E}, {"blk.0.ffn_norm.weight", E, 1},
        {"blk.0.ffn_gate.weight", E, F}, {"blk.0.ffn_up.weight", E, F},
        {"blk.0.ffn_down.weight", F, E},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        uint64_t ne[2] = {t[i].ne0, t[i].ne1};
        uint32_t nd = t[i].ne1 == 1 ? 1 : 2;
        gguf_writer_add_tensor(w, t[i].name, nd, ne, GGML_TYPE_F32, NULL,
                               gguf_writer_tensor_nbytes(nd, ne, GGML_TYPE_F32));
    }
}

/* The special and extra tokens every vocabulary ends with; returns bos id. */
static int add_specials(vocab *v, const char *const *whole_words, int n_whole)
{
    for (int i = 0; i < n_whole; i++)
        if (vocab_find(v, whole_words[i]) < 0) vocab_add(v, whole_words[i], 1, -30.0f);
    int bos = vocab_add(v, "<|bos|>", 3, 0);
    vocab_add(v, "<|endoftext|>", 3, 0);
    vocab_add(v, "<|im_start|>", 3, 0);
    vocab_add(v, "<|im_end|>", 3, 0);
    vocab_add(v, "<tool>", 4, 0);
    return bos;
}

static void write_file(gguf_writer *w, const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (gguf_writer_write_file(w, path)) die("cannot write a file");
    gguf_writer_free(w);
    printf("%s\n", path);
}

/* ---- byte-level BPE ----------------------------------------------------------- */

enum { CL_LETTER, CL_DIGIT, CL_SPACE, CL_NL, CL_PUNCT };

static int byte_class(unsigned char c)
{
    if (c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CL_LETTER;
    if (c >= '0' && c <= '9') return CL_DIGIT;
    if (c == ' ' || c == '\t') return CL_SPACE;
    if (c == '\n' || c == '\r') return CL_NL;
    return CL_PUNCT;
}

#define MAX_WORDS 2048
#define MAX_WORD_SYMS 64

typedef struct {
    int sym[MAX_WORD_SYMS];
    int n;
} word;

/* Cuts the corpus into words (a run of one class; one space joins the next
 * non-space run, GPT-2 style) of byte tokens 0..255. */
static int corpus_words(word *words)
{
    int n = 0;
    size_t len = sizeof corpus - 1, i = 0;
    while (i < len && n < MAX_WORDS) {
        size_t start = i;
        if (corpus[i] == ' ' && i + 1 < len && byte_class((unsigned char)corpus[i + 1]) != CL_SPACE)
            i++;
        int cl = byte_class((unsigned char)corpus[i]);
        while (i < len && byte_class((unsigned char)corpus[i]) == cl && i - start < MAX_WORD_SYMS) i++;
        words[n].n = (int)(i - start);
        for (size_t k = start; k < i; k++) words[n].sym[k - start] = (unsigned char)corpus[k];
        n++;
    }
    return n;
}

/* Trains merges on the corpus: vocab gets the 256 byte symbols and one token
 * per merge; merges[] the "A B" strings in rank order. Returns the count. */
static int train_bpe(vocab *v, char **merges)
{
    static word words[MAX_WORDS];
    int n_words = corpus_words(words);
    for (int b = 0; b < 256; b++) {
        char sym[3];
        gguf_writer_byte_symbol(b, sym);
        vocab_add(v, sym, 1, 0);
    }
    enum { side = 1024 }; /* pair counts of ids below side (256 + BPE_MERGES fit) */
    int *count = xmalloc(sizeof *count * side * side);
    int n_merges = 0;
    for (int m = 0; m < BPE_MERGES && v->n < side; m++) {
        memset(count, 0, sizeof *count * (size_t)side * (size_t)side);
        int best_a = -1, best_b = -1, best = 0;
        for (int w = 0; w < n_words; w++)
            for (int k = 0; k + 1 < words[w].n; k++) {
                int a = words[w].sym[k], b = words[w].sym[k + 1];
                int c = ++count[a * side + b];
                if (c > best || (c == best && best_a >= 0 && (a < best_a || (a == best_a && b < best_b)))) {
                    best = c;
                    best_a = a;
                    best_b = b;
                }
            }
        if (best_a < 0) break;
        char text[256], merge[256];
        snprintf(text, sizeof text, "%s%s", v->text[best_a], v->text[best_b]);
        snprintf(merge, sizeof merge, "%s %s", v->text[best_a], v->text[best_b]);
        int id = vocab_find(v, text);
        if (id < 0) id = vocab_add(v, text, 1, 0);
        merges[n_merges++] = xstrdup(merge);
        for (int w = 0; w < n_words; w++) { /* apply the merge left to right */
            int o = 0;
            for (int k = 0; k < words[w].n; k++) {
                if (k + 1 < words[w].n && words[w].sym[k] == best_a && words[w].sym[k + 1] == best_b) {
                    words[w].sym[o++] = id;
                    k++;
                } else {
                    words[w].sym[o++] = words[w].sym[k];
                }
            }
            words[w].n = o;
        }
    }
    free(count);
    return n_merges;
}

static void write_bpe_vocabs(const char *dir)
{
    static vocab v;
    static char *merges[BPE_MERGES];
    int n_merges = train_bpe(&v, merges);
    /* Whole words no merge builds (byte-level text: \xc4\xa0 is the space symbol). */
    static const char *const whole[] = {"\xc4\xa0unreachable", "Hello", "\xc4\xa0jumps!", "123"};
    int bos = add_specials(&v, whole, 4);
    static const char *const pres[] = {"gpt-2", "llama-bpe", "dbrx", "qwen2", "smollm", "falcon", NULL};
    for (size_t p = 0; p < sizeof pres / sizeof pres[0]; p++) {
        gguf_writer *w = gguf_writer_new();
        add_zero_llama(w, v.n);
        gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
        if (pres[p]) gguf_writer_add_str(w, "tokenizer.ggml.pre", pres[p]);
        gguf_writer_add_str_array(w, "tokenizer.ggml.tokens", (const char *const *)v.text, (uint64_t)v.n);
        gguf_writer_add_array(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v.type, (uint64_t)v.n);
        gguf_writer_add_str_array(w, "tokenizer.ggml.merges", (const char *const *)merges, (uint64_t)n_merges);
        gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
        gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)bos + 1);
        gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 1);
        char name[64];
        snprintf(name, sizeof name, "bpe-%s.gguf", pres[p] ? pres[p] : "nopre");
        write_file(w, dir, name);
    }
    for (int i = 0; i < n_merges; i++) free(merges[i]);
    vocab_clear(&v);
}

/* ---- SentencePiece --------------------------------------------------------------- */

/* The corpus as SentencePiece sees it: spaces as U+2581, a U+2581 first. */
static char *spm_text(size_t *len)
{
    size_t n = sizeof corpus - 1;
    char *s = xmalloc(3 * n + 4), *o = s;
    memcpy(o, "\xe2\x96\x81", 3);
    o += 3;
    for (size_t i = 0; i < n; i++) {
        if (corpus[i] == ' ') {
            memcpy(o, "\xe2\x96\x81", 3);
            o += 3;
        } else {
            *o++ = corpus[i];
        }
    }
    *len = (size_t)(o - s);
    return s;
}

typedef struct {
    char *text;
    int count, chars;
} piece;

static int piece_cmp(const void *a, const void *b)
{
    const piece *x = a, *y = b;
    long kx = (long)x->count * x->chars, ky = (long)y->count * y->chars;
    if (kx != ky) return kx > ky ? -1 : 1;
    return strcmp(x->text, y->text);
}

static void write_spm_vocabs(const char *dir)
{
    static vocab v;
    vocab_add(&v, "<unk>", 2, 0);
    vocab_add(&v, "<s>", 3, 0);
    vocab_add(&v, "</s>", 3, 0);
    for (int b = 0; b < 256; b++) {
        char t[8];
        snprintf(t, sizeof t, "<0x%02X>", b);
        vocab_add(&v, t, 6, 0);
    }
    size_t len;
    char *s = spm_text(&len);
    /* Every substring of 1..SPM_MAX_CHARS characters without CR/LF, counted. */
    int cap = 65536, n = 0;
    piece *p = xmalloc(sizeof *p * (size_t)cap);
    for (size_t i = 0; i < len; i += (size_t)utf8_len((unsigned char)s[i])) {
        size_t j = i;
        for (int c = 1; c <= SPM_MAX_CHARS && j < len; c++) {
            if (s[j] == '\n' || s[j] == '\r') break;
            j += (size_t)utf8_len((unsigned char)s[j]);
            if (j > len) break;
            int k = 0;
            while (k < n && (strlen(p[k].text) != j - i || memcmp(p[k].text, s + i, j - i))) k++;
            if (k == n) {
                if (n == cap) die("too many substrings");
                p[n].text = strndup(s + i, j - i);
                if (!p[n].text) die("out of memory");
                p[n].chars = c;
                n++;
            }
            p[k].count++;
        }
    }
    qsort(p, (size_t)n, sizeof *p, piece_cmp);
    /* Single characters seen twice or more (a once-seen emoji falls back to
     * bytes), then the best multi-character pieces seen three times or more.
     * Score: log count plus a bonus per character; ties do happen. */
    for (int pass = 0; pass < 2; pass++) {
        int added = 0;
        for (int k = 0; k < n && added < SPM_PIECES; k++) {
            int single = p[k].chars == 1;
            if (single != (pass == 0) || p[k].count < (single ? 2 : 3)) continue;
            if (vocab_find(&v, p[k].text) >= 0) continue;
            float score = -10.0f + logf((float)p[k].count) + 0.5f * (float)p[k].chars;
            vocab_add(&v, p[k].text, 1, roundf(score * 4.0f) / 4.0f);
            added++;
        }
    }
    for (int k = 0; k < n; k++) free(p[k].text);
    free(p);
    free(s);
    vocab_add(&v, "<|im_start|>", 3, 0);
    vocab_add(&v, "<|im_end|>", 3, 0);
    vocab_add(&v, "<tool>", 4, 0);
    vocab_add(&v, "\xe2\x96\x81unreachable", 1, -1.0f);
    for (int prefix = 1; prefix >= 0; prefix--) {
        gguf_writer *w = gguf_writer_new();
        add_zero_llama(w, v.n);
        gguf_writer_add_spm_tokenizer(w, (const char *const *)v.text, v.score, v.type, v.n, prefix);
        write_file(w, dir, prefix ? "spm.gguf" : "spm-noprefix.gguf");
    }
    vocab_clear(&v);
}

/* ---- logits models ------------------------------------------------------------------ */

typedef struct {
    const char *name;
    model_writer_params p;
} model_spec;

/* Layer widths of real models, two layers, random weights, a 32000-token
 * vocabulary (the real ones only add rows to the embedding and the output,
 * and the F32 copies the check makes of these files would be ~1 GB). Q8_0
 * files are checked as they are and through their F32 dequantization (see
 * tests/e2e/reference/logits.mjs); the F16 one shows llama.cpp's F16 path. */
#define Q8 .type = GGML_TYPE_Q8_0, .fast_random = 1
static const model_spec specs[] = {
    {"llama-3.2-1b-q8_0", {.arch = "llama", .n_embd = 2048, .n_head = 32, .n_head_kv = 8, .n_ff = 8192,
                           .n_vocab = 32000, .tied_output = 1, .rope_freqs = 1,
                           .rope_freq_base = 500000.0f, Q8, .seed = 11}},
    {"qwen2.5-0.5b-q8_0", {.arch = "qwen2", .n_embd = 896, .n_head = 14, .n_head_kv = 2, .n_ff = 4864,
                           .n_vocab = 32000, .tied_output = 1, .qkv_bias = 1,
                           .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, Q8, .seed = 13}},
    {"qwen2.5-0.5b-f16", {.arch = "qwen2", .n_embd = 896, .n_head = 14, .n_head_kv = 2, .n_ff = 4864,
                          .n_vocab = 32000, .tied_output = 1, .qkv_bias = 1, .rope_freq_base = 1000000.0f,
                          .rms_eps = 1e-6f, .type = GGML_TYPE_F16, .seed = 15}},
    {"qwen3-0.6b-q8_0", {.arch = "qwen3", .n_embd = 1024, .n_head = 16, .n_head_kv = 8, .head_dim = 128,
                         .n_ff = 3072, .n_vocab = 32000, .tied_output = 1, .qk_norm = 1,
                         .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, Q8, .seed = 16}},
    {"gemma3-1b-q8_0", {.arch = "gemma3", .n_embd = 1152, .n_head = 4, .n_head_kv = 1, .head_dim = 256,
                        .n_ff = 6912, .n_vocab = 32000, .tied_output = 1, .qk_norm = 1, .n_swa = 512,
                        .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, Q8, .seed = 18}},
    {"llama-untied-q8_0", {.arch = "llama", .n_embd = 512, .n_head = 8, .n_head_kv = 4, .n_ff = 1536,
                           .n_vocab = 32000, .qkv_bias = 1, .out_bias = 1, Q8, .seed = 19}},
    /* Phi-3-mini-4k: fused attn_qkv and gate/up; the sliding_window key is
     * written as the converter does (neither program applies it). Tied
     * (Phi-3 is not) to keep the F32 copy at 1.3 GB. */
    {"phi3-mini-4k-q8_0", {.arch = "phi3", .n_embd = 3072, .n_head = 32, .n_head_kv = 32, .n_ff = 8192,
                           .n_vocab = 32000, .tied_output = 1, .n_swa = 2047, Q8, .seed = 21}},
    /* LongRoPE as Phi-3.5-mini / Phi-4-mini have it (factor tensors,
     * attn_factor), with Phi-4-mini's grouped heads of 128 and partial
     * rotation (96 of 128) at a smaller width; original context 16, so that
     * both programs use the long factors for these 24 positions (llmesh's
     * context is the prompt, llama.cpp's 256). */
    {"phi3-longrope-q8_0", {.arch = "phi3", .n_embd = 512, .n_head = 4, .n_head_kv = 2, .n_ff = 1536,
                            .n_vocab = 32000, .n_rot = 96, .longrope = 1, .n_ctx_orig = 16,
                            .attn_factor = 1.19f, .n_swa = 262144, Q8, .seed = 23}},
};

/* Small models of several layers, one per architecture and a few types, for
 * the split tests (tests/integration/split.sh): stages run on separate
 * processes and must answer exactly as one process does. */
static const model_spec split_specs[] = {
    {"split-llama-f32", {.arch = "llama", .n_embd = 256, .n_head = 8, .n_head_kv = 4, .n_ff = 512,
                         .n_vocab = 512, .rope_freqs = 1, .type = GGML_TYPE_F32, .seed = 31}},
    {"split-qwen2-q8_0", {.arch = "qwen2", .n_embd = 256, .n_head = 4, .n_head_kv = 2, .n_ff = 512,
                          .n_vocab = 512, .tied_output = 1, .qkv_bias = 1, Q8, .seed = 32}},
    {"split-qwen3-f16", {.arch = "qwen3", .n_embd = 256, .n_head = 4, .n_head_kv = 2, .head_dim = 64,
                         .n_ff = 512, .n_vocab = 512, .qk_norm = 1, .type = GGML_TYPE_F16, .seed = 33}},
    {"split-gemma3-q8_0", {.arch = "gemma3", .n_embd = 256, .n_head = 4, .n_head_kv = 1, .head_dim = 64,
                           .n_ff = 512, .n_vocab = 512, .tied_output = 1, .qk_norm = 1, .n_swa = 8,
                           Q8, .seed = 34}},
    {"split-phi3-q8_0", {.arch = "phi3", .n_embd = 256, .n_head = 4, .n_head_kv = 4, .n_ff = 512,
                         .n_vocab = 512, .tied_output = 1, Q8, .seed = 35}},
};

/* For bench/split_bench.sh: Qwen2.5-0.5B's widths and all of its 24 layers
 * (the vocabulary cut to 32000 rows), Q8_0: ~0.4 GB, compute like the real one. */
static const model_spec bench_specs[] = {
    {"bench-qwen2.5-0.5b-q8_0", {.arch = "qwen2", .n_embd = 896, .n_head = 14, .n_head_kv = 2,
                                 .n_ff = 4864, .n_vocab = 32000, .tied_output = 1, .qkv_bias = 1,
                                 .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, Q8, .seed = 41}},
};

/* For bench/vs_llamacpp.sh: the whole shape of a real model, every layer and
 * the full vocabulary (whose classifier is a large part of a small model's
 * decode), Q8_0; the script makes the other types with `llmesh quantize`.
 * Files of ~0.5 and ~1.3 GB. n_layer is the spec's own. */
static const model_spec shape_specs[] = {
    {"shape-qwen2.5-0.5b-q8_0", {.arch = "qwen2", .n_embd = 896, .n_layer = 24, .n_head = 14,
                                 .n_head_kv = 2, .n_ff = 4864, .n_vocab = 151936, .tied_output = 1,
                                 .qkv_bias = 1, .rope_freq_base = 1000000.0f, .rms_eps = 1e-6f, Q8,
                                 .seed = 51}},
    {"shape-llama-3.2-1b-q8_0", {.arch = "llama", .n_embd = 2048, .n_layer = 16, .n_head = 32,
                                 .n_head_kv = 8, .n_ff = 8192, .n_vocab = 128256, .tied_output = 1,
                                 .rope_freqs = 1, .rope_freq_base = 500000.0f, Q8, .seed = 52}},
};
#undef Q8

/* Writes the spec called name from table with n_layer layers (0: the spec's
 * own) and an n_ctx context to path: 1 when written, 0 when the table has no
 * such name. */
static int write_spec(const model_spec *table, size_t n, const char *name, int n_layer, int n_ctx,
                      const char *path)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(table[i].name, name)) continue;
        model_writer_params p = table[i].p;
        if (n_layer > 0) p.n_layer = n_layer;
        p.n_ctx = n_ctx;
        if (model_writer_write(path, &p)) die("cannot write the model");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "vocabs")) {
        write_bpe_vocabs(argv[2]);
        write_spm_vocabs(argv[2]);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "list")) {
        for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) printf("%s\n", specs[i].name);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "list-split")) {
        for (size_t i = 0; i < sizeof split_specs / sizeof split_specs[0]; i++) printf("%s\n", split_specs[i].name);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "list-shape")) {
        for (size_t i = 0; i < sizeof shape_specs / sizeof shape_specs[0]; i++) printf("%s\n", shape_specs[i].name);
        return 0;
    }
    if (argc == 4 && !strcmp(argv[1], "model")) {
        if (write_spec(specs, sizeof specs / sizeof specs[0], argv[2], 2, 4096, argv[3]) ||
            write_spec(split_specs, sizeof split_specs / sizeof split_specs[0], argv[2], 6, 512, argv[3]) ||
            write_spec(bench_specs, sizeof bench_specs / sizeof bench_specs[0], argv[2], 24, 4096, argv[3]) ||
            write_spec(shape_specs, sizeof shape_specs / sizeof shape_specs[0], argv[2], 0, 4096, argv[3]))
            return 0;
        die("unknown model name (see 'make_models list', 'list-split' and 'list-shape')");
    }
    if (argc == 4 && !strcmp(argv[1], "templated")) { /* a small random model with a chat template */
        FILE *f = fopen(argv[2], "rb");
        if (!f) die("cannot read the template file");
        static char tmpl[1 << 16];
        size_t n = fread(tmpl, 1, sizeof tmpl - 1, f);
        fclose(f);
        tmpl[n] = 0;
        model_writer_params p = {.arch = "llama", .n_embd = 32, .n_layer = 1, .n_head = 4, .n_head_kv = 2,
                                 .n_ff = 64, .n_vocab = 300, .n_ctx = 2048, .type = GGML_TYPE_F32,
                                 .seed = 7, .chat_template = tmpl};
        if (model_writer_write(argv[3], &p)) die("cannot write the model");
        return 0;
    }
    fprintf(stderr, "usage: make_models vocabs DIR | list | list-split | list-shape | model NAME PATH |"
                    " templated TEMPLATE_FILE PATH\n");
    return 2;
}
