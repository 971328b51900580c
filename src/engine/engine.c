/* engine.c: engine.h on top of gguf, tokenizer, model, sampler and the
 * thread pool: loading, lanes, the one evaluation function (solo or split
 * through a tail, with replay when the pipeline breaks), the generation loop,
 * UTF-8-safe streaming, and perplexity measurement.
 * Not here: the numerics (model.c, kernels.c) or any network/API concern
 * (the tail is serve/'s).
 *
 * Each lane's KV cache is kept between requests together with the tokens it
 * holds, so a prompt that extends the previous one (a chat turn) only
 * evaluates its new tokens. This cannot change results: a token's logits do
 * not depend on how the tokens before it were batched, nor on where its
 * layers ran; a replay from position 0 computes the same bits again. */
#include "engine/engine.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine_private.h"
#include "engine/gguf.h"
#include "engine/json_grammar.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "lib/clock.h"
#include "lib/threadpool.h"

#define PERPLEXITY_DEFAULT_CTX 256
/* Models train on contexts up to 128K positions and more; a KV cache
 * that long is GBs even in F16. Generation uses at most this many positions
 * (engine_model_context_length reports the figure in use). */
#define ENGINE_MAX_CONTEXT 8192

/* A pipeline broken this many times in a row within one evaluation ends the
 * request (resume keeps saying a new one is in place, and it breaks again). */
#define ENGINE_MAX_REPLAYS 100

/* ======================================================================== */
/* loading                                                                   */
/* ======================================================================== */

/* The file name without directory and without a trailing ".gguf". */
static void model_id_from_path(const char *path, char *out, size_t cap)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".gguf") == 0) n -= 5;
    if (n >= cap) n = cap - 1;
    memcpy(out, base, n);
    out[n] = 0;
}

/* A special token's stored text for the template variables, "" when the
 * model has no such token or the text does not fit. */
static void special_text(const tokenizer *tok, int32_t id, char *out, size_t cap)
{
    int n = id >= 0 ? tokenizer_token_text(tok, id, out, cap - 1) : -1;
    out[n >= 0 && (size_t)n < cap ? n : 0] = 0;
}

/* 1 when text (len bytes, not NUL-terminated) contains needle. */
static int source_has(const char *text, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (text[i] == needle[0] && !memcmp(text + i, needle, n)) return 1;
    return 0;
}

/* Parses tokenizer.chat_template when present. A template that does not parse
 * is not fatal: the model still serves completions, and chat falls back to
 * the plain template (the reason is kept for the log). */
static void load_chat_template(engine_model *m)
{
    gguf_str src;
    special_text(m->tok, tokenizer_bos(m->tok), m->bos_text, sizeof m->bos_text);
    special_text(m->tok, tokenizer_eos(m->tok), m->eos_text, sizeof m->eos_text);
    if (gguf_get_str(m->file, "tokenizer.chat_template", &src) != 0 || src.len == 0) return;
    char err[200];
    m->chat = chat_template_parse(src.ptr, (size_t)src.len, err, sizeof err);
    if (!m->chat) snprintf(m->chat_error, sizeof m->chat_error, "tokenizer.chat_template: %s", err);
    /* The families' own markers, most specific first. */
    if (source_has(src.ptr, (size_t)src.len, "<tool_call>")) m->tool_format = ENGINE_TOOLS_HERMES;
    else if (source_has(src.ptr, (size_t)src.len, "[TOOL_CALLS]")) m->tool_format = ENGINE_TOOLS_MISTRAL;
    else if (source_has(src.ptr, (size_t)src.len, "\"parameters\"")) m->tool_format = ENGINE_TOOLS_LLAMA3;
}

engine_tool_format engine_chat_tool_format(const engine_model *m) { return m->chat ? m->tool_format : ENGINE_TOOLS_NONE; }

engine_model *engine_model_load(const char *path, int n_threads, char *err, size_t errlen)
{
    engine_load_opts o = {.n_threads = n_threads};
    return engine_model_load_opts(path, &o, err, errlen);
}

engine_model *engine_model_load_opts(const char *path, const engine_load_opts *o, char *err,
                                     size_t errlen)
{
    char inner[512];
    engine_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->compute, NULL);
    pthread_mutex_init(&m->split_lock, NULL);
    pthread_mutex_init(&m->grammar_lock, NULL);
    model_id_from_path(path, m->id, sizeof m->id);
    if (!(m->file = gguf_open(path, err, errlen))) goto fail_quiet;
    if (o->layers_end > 0) {
        model_part part = {0, o->layers_end, 1};
        m->model = model_load_part(m->file, &part, inner, sizeof inner);
    } else {
        m->model = model_load(m->file, inner, sizeof inner);
    }
    if (!m->model) goto fail;
    if (!(m->tok = tokenizer_load(m->file, inner, sizeof inner))) goto fail;
    const model_config *c = model_get_config(m->model);
    if (tokenizer_n_vocab(m->tok) != c->n_vocab) {
        snprintf(inner, sizeof inner, "tokenizer has %d tokens, the model %d",
                 tokenizer_n_vocab(m->tok), c->n_vocab);
        goto fail;
    }
    m->n_ctx = c->n_ctx_train < ENGINE_MAX_CONTEXT ? c->n_ctx_train : ENGINE_MAX_CONTEXT;
    if (o->n_ctx > c->n_ctx_train) {
        snprintf(inner, sizeof inner, "a context of %d positions exceeds the model's %d", o->n_ctx,
                 c->n_ctx_train);
        goto fail;
    }
    if (o->n_ctx > 0) m->n_ctx = o->n_ctx;
    m->n_lanes = o->n_lanes > 0 ? o->n_lanes : 1;
    if (m->n_lanes > ENGINE_MAX_LANES) {
        snprintf(inner, sizeof inner, "%d lanes: at most %d", m->n_lanes, ENGINE_MAX_LANES);
        goto fail;
    }
    if (o->kv_type != MODEL_KV_F16 && o->kv_type != MODEL_KV_F32) {
        snprintf(inner, sizeof inner, "unknown KV cache type %d", o->kv_type);
        goto fail;
    }
    m->kv_type = (model_kv_type)o->kv_type;
    if (!(m->pool = threadpool_create(o->n_threads, inner, sizeof inner))) goto fail;
    if (engine_step_init(m, inner, sizeof inner) != 0) goto fail;
    if (!(m->lanes = calloc((size_t)m->n_lanes, sizeof *m->lanes))) {
        snprintf(inner, sizeof inner, "out of memory");
        goto fail;
    }
    for (int i = 0; i < m->n_lanes; i++) {
        engine_lane *ln = &m->lanes[i];
        if (!(ln->state = model_state_new(m->model, m->n_ctx, m->kv_type, inner, sizeof inner))) goto fail;
        ln->cached = malloc(sizeof(int32_t) * (size_t)m->n_ctx);
        ln->logits = malloc(sizeof(float) * (size_t)c->n_vocab);
        ln->rows = calloc((size_t)MODEL_BATCH * c->n_embd, sizeof(float)); /* touched only in a split */
        ln->hidden = calloc((size_t)MODEL_BATCH * c->n_embd, sizeof(float));
        if (!ln->cached || !ln->logits || !ln->rows || !ln->hidden) {
            snprintf(inner, sizeof inner, "out of memory");
            goto fail;
        }
    }
    /* Solo over what is loaded; with layers_end < n_layer, evaluations fail
     * until engine_set_split names the tail. */
    m->split = (engine_split){.local_end = model_get_part(m->model)->end, .generation = 1};
    load_chat_template(m);
    return m;
fail:
    snprintf(err, errlen, "%s: %s", path, inner);
fail_quiet:
    engine_model_free(m);
    return NULL;
}

void engine_model_free(engine_model *m)
{
    if (!m) return;
    threadpool_free(m->pool);
    if (m->step_batch) engine_step_destroy(m);
    chat_template_free(m->chat);
    for (int i = 0; m->lanes && i < m->n_lanes; i++) {
        engine_lane *ln = &m->lanes[i];
        model_state_free(ln->state);
        free(ln->cached);
        free(ln->logits);
        free(ln->rows);
        free(ln->hidden);
    }
    free(m->lanes);
    tokenizer_free(m->tok);
    model_free(m->model);
    gguf_close(m->file);
    pthread_mutex_destroy(&m->compute);
    pthread_mutex_destroy(&m->split_lock);
    pthread_mutex_destroy(&m->grammar_lock);
    json_vocab_free(m->grammar_vocab);
    free(m);
}

const char *engine_model_id(const engine_model *m) { return m->id; }
uint64_t engine_model_bytes(const engine_model *m) { return model_weight_bytes(m->model); }
int engine_model_context_length(const engine_model *m) { return m->n_ctx; }
int engine_model_lanes(const engine_model *m) { return m->n_lanes; }
int engine_model_kv_type(const engine_model *m) { return (int)m->kv_type; }
int engine_model_n_layer(const engine_model *m) { return model_get_config(m->model)->n_layer; }
int engine_model_n_embd(const engine_model *m) { return model_get_config(m->model)->n_embd; }
int engine_model_threads(const engine_model *m) { return threadpool_size(m->pool); }

void engine_sampling_defaults(engine_sampling *s)
{
    memset(s, 0, sizeof *s);
    s->temperature = 1.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->seed = 0;
    s->max_tokens = 16;
}

void engine_request_defaults(engine_request *r)
{
    memset(r, 0, sizeof *r);
    r->prompt = "";
    engine_sampling_defaults(&r->sampling);
}

int engine_model_n_vocab(const engine_model *m) { return tokenizer_n_vocab(m->tok); }

const char *engine_chat_template_error(const engine_model *m) { return m->chat_error; }

/* The fallback for models without a chat template: "Role: content" lines,
 * then "Assistant:". */
static int render_plain_chat(const chat_message *msgs, int n_msgs, char **out, size_t *out_len)
{
    size_t cap = 16;
    for (int i = 0; i < n_msgs; i++)
        cap += strlen(msgs[i].role) + (msgs[i].content ? strlen(msgs[i].content) : 0) + 16;
    char *p = malloc(cap);
    if (!p) return -1;
    size_t len = 0;
    for (int i = 0; i < n_msgs; i++) {
        const char *r = msgs[i].role;
        const char *label = !strcmp(r, "system") ? "System" : !strcmp(r, "assistant") ? "Assistant"
                          : !strcmp(r, "user") ? "User" : r;
        len += (size_t)snprintf(p + len, cap - len, "%s: %s\n", label, msgs[i].content ? msgs[i].content : "");
    }
    len += (size_t)snprintf(p + len, cap - len, "Assistant:");
    *out = p;
    *out_len = len;
    return 0;
}

int engine_render_chat(const engine_model *m, const chat_message *msgs, int n_msgs, char **out,
                       size_t *out_len, int *parse_special, char *err, size_t errlen)
{
    *out = NULL;
    *parse_special = m->chat != NULL;
    if (!m->chat) {
        if (render_plain_chat(msgs, n_msgs, out, out_len) == 0) return 0;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    chat_template_vars vars = {.bos_token = m->bos_text, .eos_token = m->eos_text, .add_generation_prompt = 1};
    return chat_template_render(m->chat, msgs, n_msgs, &vars, out, out_len, err, errlen);
}

int engine_render_chat_tools(const engine_model *m, const chat_message *msgs, int n_msgs,
                             const char *tools_json, int continue_final, char **out, size_t *out_len,
                             int *parse_special, char *err, size_t errlen)
{
    *out = NULL;
    if (continue_final && (n_msgs < 1 || strcmp(msgs[n_msgs - 1].role, "assistant") != 0)) {
        snprintf(err, errlen, "the last message must be an assistant turn to continue it");
        return -1;
    }
    if (!tools_json && !continue_final)
        return engine_render_chat(m, msgs, n_msgs, out, out_len, parse_special, err, errlen);
    *parse_special = m->chat != NULL;
    if (!m->chat && !tools_json) {
        /* the plain form: "Assistant:" opens the turn, its text follows */
        const char *content = msgs[n_msgs - 1].content ? msgs[n_msgs - 1].content : "";
        char *p = NULL;
        size_t len = 0;
        if (render_plain_chat(msgs, n_msgs - 1, &p, &len) == 0) {
            char *q = realloc(p, len + strlen(content) + 2);
            if (q) {
                *out_len = len + (size_t)sprintf(q + len, "%s%s", content[0] ? " " : "", content);
                *out = q;
                return 0;
            }
            free(p);
        }
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!m->chat) {
        snprintf(err, errlen, "the model has no chat template%s%s, so it cannot take tools",
                 m->chat_error[0] ? " that parses: " : "", m->chat_error);
        return -1;
    }
    chat_template_extra tools = {.name = "tools", .json = tools_json};
    chat_template_vars vars = {.bos_token = m->bos_text, .eos_token = m->eos_text, .add_generation_prompt = 1,
                               .extra = tools_json ? &tools : NULL, .n_extra = tools_json ? 1 : 0};
    if (continue_final) return chat_template_render_continue(m->chat, msgs, n_msgs, &vars, out, out_len, err, errlen);
    return chat_template_render(m->chat, msgs, n_msgs, &vars, out, out_len, err, errlen);
}

/* ======================================================================== */
/* UTF-8 sanitising                                                          */
/* ======================================================================== */

/* Byte-level tokens can split a character across tokens, and a model can
 * emit byte sequences that are not UTF-8 at all. The stream holds back an
 * incomplete character until it completes, and replaces invalid bytes (and a
 * character still incomplete at the end) with U+FFFD, using the "maximal
 * subpart" rule of Unicode 3.9, so every piece is valid UTF-8 that JSON
 * encoders and terminals accept. */
typedef struct {
    unsigned char held[4];
    int n_held;
    char *out;       /* the last write's output */
    size_t out_cap;
} utf8_stream;

/* Length of the valid prefix of the sequence at s (n bytes available):
 * returns the full length when complete and valid, 0 when it is a valid but
 * incomplete prefix, or -k when its first k bytes are an invalid subpart. */
static int utf8_sequence(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    int len;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (b < 0x80) return 1;
    else if (b >= 0xc2 && b <= 0xdf) len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0) lo = 0xa0;        /* no overlongs */
        if (b == 0xed) hi = 0x9f;        /* no surrogates */
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0) lo = 0x90;        /* no overlongs */
        if (b == 0xf4) hi = 0x8f;        /* nothing above U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char c = s[i];
        if (i == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xbf)) return -i;
    }
    return len;
}

/* Converts [in, in + total) to valid UTF-8 in out (room for 3 * total). An
 * incomplete tail is left unconverted unless at_end; returns the bytes
 * written and sets *used to the input consumed. */
static size_t utf8_convert(const unsigned char *in, size_t total, int at_end, char *out, size_t *used)
{
    size_t o = 0, i = 0;
    while (i < total) {
        int r = utf8_sequence(in + i, total - i);
        if (r > 0) {
            memcpy(out + o, in + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
        } else if (r == 0 && !at_end) { /* incomplete: the caller holds it */
            break;
        } else {                         /* invalid, or incomplete at the very end */
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += r < 0 ? (size_t)-r : total - i;
        }
    }
    *used = i;
    return o;
}

size_t engine_utf8_sanitize(const char *in, size_t n, char *out)
{
    size_t used;
    size_t o = utf8_convert((const unsigned char *)in, n, 1, out, &used);
    out[o] = 0;
    return o;
}

/* Converts held bytes + the new ones into st->out; at_end flushes an
 * incomplete tail as U+FFFD. Returns the output length, or -1 on allocation
 * failure. */
static long utf8_stream_write(utf8_stream *st, const char *bytes, size_t n, int at_end)
{
    size_t total = (size_t)st->n_held + n;
    unsigned char stackbuf[256];
    unsigned char *in = total <= sizeof stackbuf ? stackbuf : malloc(total);
    if (!in) return -1;
    memcpy(in, st->held, (size_t)st->n_held);
    if (n) memcpy(in + st->n_held, bytes, n);
    st->n_held = 0;
    size_t need = total * 3 + 4; /* worst case: every byte becomes U+FFFD */
    if (need > st->out_cap) {
        char *o = realloc(st->out, need);
        if (!o) {
            if (in != stackbuf) free(in);
            return -1;
        }
        st->out = o;
        st->out_cap = need;
    }
    size_t used;
    size_t o = utf8_convert(in, total, at_end, st->out, &used);
    assert(total - used <= sizeof st->held);
    st->n_held = (int)(total - used);
    memcpy(st->held, in + used, (size_t)st->n_held);
    if (in != stackbuf) free(in);
    return (long)o;
}

/* ======================================================================== */
/* tokens and text                                                           */
/* ======================================================================== */

/* Tokenizes into a malloc'ed array (caller frees); *n gets the count. */
static int32_t *tokenize(const tokenizer *tok, const char *text, size_t len, unsigned flags, int *n,
                         char *err, size_t errlen)
{
    int cap = (int)(len < 1000000 ? len : 1000000) + 2;
    for (;;) {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
        if (!ids) {
            snprintf(err, errlen, "out of memory tokenizing %zu bytes", len);
            return NULL;
        }
        int got = tokenizer_encode_ex(tok, text, len, flags, ids, cap);
        if (got < 0) {
            free(ids);
            snprintf(err, errlen, "tokenizer failed");
            return NULL;
        }
        if (got <= cap) {
            *n = got;
            return ids;
        }
        free(ids);
        cap = got;
    }
}

int engine_tokenize(const engine_model *m, const char *text, size_t len, int add_bos,
                    int parse_special, int32_t **ids, int *n_ids, char *err, size_t errlen)
{
    unsigned flags = (add_bos ? TOKENIZER_ADD_BOS : 0) | (parse_special ? TOKENIZER_PARSE_SPECIAL : 0);
    *ids = tokenize(m->tok, text, len, flags, n_ids, err, errlen);
    return *ids ? 0 : -1;
}

int engine_token_bytes(const engine_model *m, int32_t id, char *out, size_t cap)
{
    return tokenizer_token_bytes(m->tok, id, out, cap);
}

char *engine_detokenize(const engine_model *m, const int32_t *ids, int n_ids, size_t *len,
                        char *err, size_t errlen)
{
    size_t raw_len = 0, cap = 256;
    char *raw = malloc(cap);
    for (int i = 0; raw && i < n_ids; i++) {
        int nb = tokenizer_token_bytes(m->tok, ids[i], NULL, 0);
        if (nb < 0) {
            free(raw);
            snprintf(err, errlen, "token id %ld is out of range [0, %d)", (long)ids[i],
                     tokenizer_n_vocab(m->tok));
            return NULL;
        }
        if (raw_len + (size_t)nb > cap) {
            while (raw_len + (size_t)nb > cap) cap *= 2;
            char *p = realloc(raw, cap);
            if (!p) { free(raw); raw = NULL; break; }
            raw = p;
        }
        tokenizer_token_bytes(m->tok, ids[i], raw + raw_len, (size_t)nb);
        raw_len += (size_t)nb;
    }
    char *out = raw ? malloc(raw_len * 3 + 1) : NULL;
    if (!out) {
        free(raw);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *len = engine_utf8_sanitize(raw, raw_len, out);
    free(raw);
    return out;
}

/* ======================================================================== */
/* generation                                                                */
/* ======================================================================== */

/* ======================================================================== */
/* evaluation: solo or split, with replay                                    */
/* ======================================================================== */

void engine_set_split(engine_model *m, int local_end, const engine_tail *tail)
{
    int n_layer = model_get_config(m->model)->n_layer;
    assert(local_end >= 0 && local_end <= n_layer);
    assert(!tail == (local_end == n_layer)); /* a tail exactly when layers run elsewhere */
    assert(!tail || (tail->send && tail->receive && tail->resume));
    pthread_mutex_lock(&m->split_lock);
    m->split.local_end = local_end;
    m->split.has_tail = tail != NULL;
    if (tail) m->split.tail = *tail;
    m->split.generation++;
    pthread_mutex_unlock(&m->split_lock);
}

/* Forgets the lane's positions from keep on (keep <= n_cached). The state may
 * hold fewer (none when no layer runs here) or, after a failed evaluation,
 * more: it only ever needs to be cut. */
static void lane_truncate(engine_lane *ln, int keep)
{
    assert(keep >= 0 && keep <= ln->n_cached);
    ln->n_cached = keep;
    int held = model_state_n_past(ln->state);
    model_state_truncate(ln->state, keep < held ? keep : held);
}

/* Positions [start, n) of the lane's record, solo or through the split sp,
 * in the batch steps shared with the other lanes (engine_step.c); [start,
 * from) are a replay whose logits nobody needs. 0, -1 or ENGINE_TAIL_BROKEN. */
static int eval_steps(engine_model *m, int lane, const engine_split *sp, int start, int from, int n,
                      float *all, float *rows, char *err, size_t errlen)
{
    const model_part *part = model_get_part(m->model);
    int n_layer = model_get_config(m->model)->n_layer;
    if (!sp->has_tail && part->end < n_layer) {
        snprintf(err, errlen, "layers [%d, %d) are not loaded here and no split is set", part->end, n_layer);
        return -1;
    }
    assert(!sp->has_tail || sp->local_end == 0 || model_state_n_past(m->lanes[lane].state) == start);
    return engine_step_eval(m, lane, sp, start, from, n, all, rows, err, errlen);
}

/* The one place that evaluates. Appends tokens[from..n) to the lane's
 * sequence, whose record holds tokens[0..from) (n_cached == from), and
 * computes the logits of the last position into ln->logits, or with all those
 * of every new position into all (n - from, n_vocab), or (a split, for
 * embeddings) with rows every new position's final normed hidden state into
 * rows (n - from, n_embd). A lane whose caches
 * belong to an older split generation first replays its record from position
 * 0 on the current split; a pipeline that breaks is resumed and the whole
 * evaluation replayed from 0. On error the record stays (tokens[0..from)) and
 * the lane is marked for a replay: the other stages' caches are unknown. */
static int lane_evaluate_rows(engine_model *m, int lane, const int32_t *tokens, int from, int n, float *all,
                              float *rows, char *err, size_t errlen)
{
    engine_lane *ln = &m->lanes[lane];
    assert(ln->n_cached == from && from < n);
    if (n > m->n_ctx) {
        snprintf(err, errlen, "context full: %d positions used, %d more do not fit in %d", from,
                 n - from, m->n_ctx);
        return -1;
    }
    if (tokens != ln->cached) memcpy(ln->cached + from, tokens + from, sizeof(int32_t) * (size_t)(n - from));
    for (int breaks = 0;;) {
        engine_split sp;
        pthread_mutex_lock(&m->split_lock);
        sp = m->split;
        pthread_mutex_unlock(&m->split_lock);
        int start = from;
        if (ln->generation != sp.generation) { /* caches from another pipeline: replay all */
            start = 0;
            model_state_truncate(ln->state, 0);
            ln->generation = sp.generation;
        }
        int rc = eval_steps(m, lane, &sp, start, from, n, all, rows, err, errlen);
        if (rc == 0) {
            ln->n_cached = n;
            return 0;
        }
        ln->generation = 0;
        if (rc != ENGINE_TAIL_BROKEN) return -1;
        if (++breaks > ENGINE_MAX_REPLAYS) {
            snprintf(err, errlen, "the pipeline broke %d times in a row", breaks);
            return -1;
        }
        for (;;) {
            int r = sp.tail.resume(sp.tail.ctx, lane, err, errlen);
            if (r == 0) break;
            if (r != ENGINE_TAIL_WAITING) return -1;
            /* A client that left should not hold the lane until a new
             * pipeline loads (which may mean fetching gigabytes). */
            if (ln->wanted && ln->wanted(ln->wanted_user, "", 0, NULL, 0)) {
                snprintf(err, errlen, "cancelled");
                return -1;
            }
        }
    }
}

static int lane_evaluate(engine_model *m, int lane, const int32_t *tokens, int from, int n, float *all,
                         char *err, size_t errlen)
{
    return lane_evaluate_rows(m, lane, tokens, from, n, all, NULL, err, errlen);
}

/* Fills t with the log-probability of id under logits (log-softmax, NaN as
 * -inf) and the n_top most likely tokens (more likely first, lower id on
 * ties: a strict comparison while scanning ids upwards). */
static void token_logprobs(const float *logits, int n_vocab, int32_t id, int n_top, engine_token *t)
{
    float max = -INFINITY;
    for (int v = 0; v < n_vocab; v++) max = logits[v] > max ? logits[v] : max;
    double sum = 0;
    for (int v = 0; v < n_vocab; v++)
        if (logits[v] > -INFINITY) sum += exp((double)logits[v] - max); /* NaN fails the test */
    double lse = (double)max + log(sum);
    float l = logits[id];
    t->id = id;
    t->prompt = 0; /* score_prompt marks its records */
    t->logprob = isnan(l) ? -INFINITY : (float)(l - lse);
    t->n_top = 0;
    if (n_top > n_vocab) n_top = n_vocab;
    for (int v = 0; v < n_vocab && n_top > 0; v++) {
        float x = isnan(logits[v]) ? -INFINITY : logits[v];
        if (t->n_top == n_top && !(x > t->top[n_top - 1].logprob)) continue;
        int i = t->n_top < n_top ? t->n_top++ : n_top - 1;
        while (i > 0 && x > t->top[i - 1].logprob) {
            t->top[i] = t->top[i - 1];
            i--;
        }
        t->top[i].id = v;
        t->top[i].logprob = x; /* a raw logit until the loop ends */
    }
    for (int i = 0; i < t->n_top; i++) t->top[i].logprob = (float)(t->top[i].logprob - lse);
}

/* What generation has produced but not yet delivered: raw token bytes held
 * back (a possible stop-string start) and the tokens they belong to. */
typedef struct {
    engine_output_fn fn;
    void *user;
    const engine_sampling *s;
    utf8_stream utf8;
    char *raw;               /* bytes not yet released */
    size_t raw_len, raw_cap;
    engine_token *toks;      /* tokens not yet released (logprobs only) */
    size_t *tok_end;         /* end of each token's bytes in raw */
    int n_toks, toks_cap;
    int stopped;             /* the callback asked to stop */
} gen_output;

/* Delivers raw[0, upto) (through the UTF-8 stream) with the first n_tok
 * pending tokens, and drops them from the pending state. */
static int output_release(gen_output *g, size_t upto, int n_tok, int at_end)
{
    long n = utf8_stream_write(&g->utf8, g->raw, upto, at_end);
    if (n < 0) return -1;
    if ((n > 0 || n_tok > 0) && !g->stopped && g->fn(g->user, g->utf8.out, (size_t)n, g->toks, n_tok))
        g->stopped = 1;
    memmove(g->raw, g->raw + upto, g->raw_len - upto);
    g->raw_len -= upto;
    for (int i = n_tok; i < g->n_toks; i++) {
        g->toks[i - n_tok] = g->toks[i];
        g->tok_end[i - n_tok] = g->tok_end[i] - upto;
    }
    g->n_toks -= n_tok;
    return 0;
}

/* Appends one generated token's bytes (and its record, if any); releases
 * what can no longer be part of a stop string. Sets *stop_hit to 1 + the
 * index of the stop string that completed (the earliest in the text): the
 * text before it is released, the rest dropped. */
static int output_add(gen_output *g, const char *bytes, size_t n, const engine_token *t, int *stop_hit)
{
    if (g->raw_len + n > g->raw_cap) {
        size_t cap = g->raw_cap ? g->raw_cap : 256;
        while (cap < g->raw_len + n) cap *= 2;
        char *p = realloc(g->raw, cap);
        if (!p) return -1;
        g->raw = p;
        g->raw_cap = cap;
    }
    memcpy(g->raw + g->raw_len, bytes, n);
    g->raw_len += n;
    if (t) {
        if (g->n_toks == g->toks_cap) {
            int cap = g->toks_cap ? g->toks_cap * 2 : 16;
            engine_token *nt = realloc(g->toks, sizeof *nt * (size_t)cap);
            if (!nt) return -1;
            g->toks = nt;
            size_t *ne = realloc(g->tok_end, sizeof *ne * (size_t)cap);
            if (!ne) return -1;
            g->tok_end = ne;
            g->toks_cap = cap;
        }
        g->toks[g->n_toks] = *t;
        g->tok_end[g->n_toks++] = g->raw_len;
    }
    /* The earliest complete stop string. Only unreleased bytes can hold one:
     * any start of a match is held back below until it is decided. */
    size_t cut = SIZE_MAX;
    int which = 0;
    for (int i = 0; i < g->s->n_stop; i++) {
        size_t sl = strlen(g->s->stop[i]);
        for (size_t at = 0; sl && at + sl <= g->raw_len && at < cut; at++)
            if (!memcmp(g->raw + at, g->s->stop[i], sl)) {
                cut = at;
                which = i;
                break;
            }
    }
    if (cut != SIZE_MAX) {
        int n_tok = 0; /* tokens that put at least one byte before the stop */
        while (n_tok < g->n_toks && (n_tok == 0 ? 0 : g->tok_end[n_tok - 1]) < cut) n_tok++;
        *stop_hit = 1 + which;
        int rc = output_release(g, cut, n_tok, 1);
        g->raw_len = 0; /* the stop string and whatever followed it are dropped */
        g->n_toks = 0;
        return rc;
    }
    /* Hold back the longest tail that begins some stop string. */
    size_t hold = 0;
    for (int i = 0; i < g->s->n_stop; i++) {
        size_t sl = strlen(g->s->stop[i]);
        if (sl == 0) continue;
        for (size_t k = sl - 1 < g->raw_len ? sl - 1 : g->raw_len; k > hold; k--)
            if (!memcmp(g->raw + g->raw_len - k, g->s->stop[i], k)) {
                hold = k;
                break;
            }
    }
    size_t upto = g->raw_len - hold;
    int n_tok = 0;
    while (n_tok < g->n_toks && g->tok_end[n_tok] <= upto) n_tok++;
    return upto > 0 || n_tok > 0 ? output_release(g, upto, n_tok, 0) : 0;
}

/* Scores prompt tokens from an empty cache in chunks (logits of every
 * position are needed, so no cached prefix is reused) and delivers their
 * records; leaves the last position's logits in the lane's logits. */
#define ECHO_CHUNK 64
static int score_prompt(engine_model *m, int lane, const int32_t *ids, int n, int n_top, gen_output *g,
                        char *err, size_t errlen)
{
    engine_lane *ln = &m->lanes[lane];
    int n_vocab = tokenizer_n_vocab(m->tok);
    float *logits = malloc(sizeof(float) * ECHO_CHUNK * (size_t)n_vocab); /* (ECHO_CHUNK, n_vocab) */
    engine_token *recs = malloc(sizeof *recs * ECHO_CHUNK);
    if (!logits || !recs) {
        free(logits);
        free(recs);
        snprintf(err, errlen, "out of memory for %d x %d logits", ECHO_CHUNK, n_vocab);
        return -1;
    }
    lane_truncate(ln, 0);
    int rc = 0;
    for (int start = 0; start < n && !g->stopped; start += ECHO_CHUNK) {
        int count = n - start < ECHO_CHUNK ? n - start : ECHO_CHUNK;
        /* Token i is predicted by the logits of position i - 1: for the
         * chunk's first token that is the previous chunk's last row, which
         * the lane's logits hold; nothing predicts the very first token. */
        if (start == 0) {
            memset(&recs[0], 0, sizeof recs[0]);
            recs[0].id = ids[0];
            recs[0].logprob = NAN;
        } else {
            token_logprobs(ln->logits, n_vocab, ids[start], n_top, &recs[0]);
        }
        if (lane_evaluate(m, lane, ids, start, start + count, logits, err, errlen) != 0) {
            rc = -1;
            break;
        }
        for (int j = 1; j < count; j++)
            token_logprobs(logits + (size_t)(j - 1) * n_vocab, n_vocab, ids[start + j], n_top, &recs[j]);
        memcpy(ln->logits, logits + (size_t)(count - 1) * n_vocab, sizeof(float) * (size_t)n_vocab);
        for (int j = 0; j < count; j++) recs[j].prompt = 1;
        if (g->fn(g->user, "", 0, recs, count)) g->stopped = 1;
    }
    free(logits);
    free(recs);
    return rc;
}

int engine_prompt_tokens(const engine_model *m, const engine_request *r, int32_t **out, int *n_out,
                         char *err, size_t errlen)
{
    int n_ctx = m->n_ctx, n_vocab = tokenizer_n_vocab(m->tok);
    int n_prompt = 0;
    int32_t *ids;
    *out = NULL;
    *n_out = 0;
    if (r->prompt_ids) {
        if (r->n_prompt_ids < 0 || r->n_prompt_ids > n_ctx) {
            snprintf(err, errlen, "prompt is %d tokens; the context holds %d", r->n_prompt_ids, n_ctx);
            return -1;
        }
        for (int i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] < 0 || r->prompt_ids[i] >= n_vocab) {
                snprintf(err, errlen, "prompt token id %ld is out of range [0, %d)",
                         (long)r->prompt_ids[i], n_vocab);
                return -1;
            }
        n_prompt = r->n_prompt_ids;
        ids = malloc(sizeof(int32_t) * (size_t)(n_prompt ? n_prompt : 1));
        if (!ids) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        if (n_prompt) memcpy(ids, r->prompt_ids, sizeof(int32_t) * (size_t)n_prompt);
    } else {
        int add_bos = tokenizer_add_bos(m->tok) && tokenizer_bos(m->tok) >= 0;
        unsigned flags = (add_bos ? TOKENIZER_ADD_BOS : 0) | (r->parse_special ? TOKENIZER_PARSE_SPECIAL : 0);
        ids = tokenize(m->tok, r->prompt, r->prompt_len, flags, &n_prompt, err, errlen);
        if (!ids) return -1;
    }
    if (r->parse_special && !r->prompt_ids && n_prompt >= 2 && ids[0] == tokenizer_bos(m->tok) &&
        ids[1] == ids[0]) {
        /* A chat template that writes bos_token itself, on a model that also
         * adds one: keep a single BOS (llama.cpp would warn and keep both). */
        memmove(ids, ids + 1, sizeof(int32_t) * (size_t)--n_prompt);
    }
    if (n_prompt == 0) {
        free(ids);
        snprintf(err, errlen, "empty prompt (and the model adds no BOS token)");
        return -1;
    }
    if (n_prompt > n_ctx) {
        free(ids);
        snprintf(err, errlen, "prompt is %d tokens; the context holds %d", n_prompt, n_ctx);
        return -1;
    }
    *out = ids;
    *n_out = n_prompt;
    return 0;
}

int engine_lane_cached_prefix(const engine_model *m, int lane, const int32_t *ids, int n_ids)
{
    if (lane < 0 || lane >= m->n_lanes) return 0;
    const engine_lane *ln = &m->lanes[lane];
    int keep = 0;
    while (keep < ln->n_cached && keep < n_ids - 1 && ln->cached[keep] == ids[keep]) keep++;
    return keep;
}

int engine_lane_share_prompt(engine_model *m, int lane, const int32_t *ids, int n_ids, const int *to, int n_to,
                             char *err, size_t errlen)
{
    if (lane < 0 || lane >= m->n_lanes || n_ids < 2) return 0;
    engine_split sp;
    pthread_mutex_lock(&m->split_lock);
    sp = m->split;
    pthread_mutex_unlock(&m->split_lock);
    /* Split: the other stages' caches of the lanes cannot be copied from
     * here; each choice evaluates its prompt (in the same steps). */
    if (sp.has_tail || model_get_part(m->model)->end < model_get_config(m->model)->n_layer) return 0;
    engine_lane *ln = &m->lanes[lane];
    int n = n_ids - 1; /* the last token is each sequence's own first evaluation */
    int keep = engine_lane_cached_prefix(m, lane, ids, n_ids);
    lane_truncate(ln, keep);
    int evaluated = 0;
    if (keep < n) {
        if (lane_evaluate(m, lane, ids, keep, n, NULL, err, errlen) != 0) return -1;
        evaluated = n - keep;
    }
    for (int i = 0; i < n_to; i++) {
        if (to[i] < 0 || to[i] >= m->n_lanes || to[i] == lane) continue;
        engine_lane *dst = &m->lanes[to[i]];
        model_state_copy_prefix(dst->state, ln->state, n);
        memcpy(dst->cached, ids, sizeof(int32_t) * (size_t)n);
        dst->n_cached = n;
        dst->generation = ln->generation;
    }
    return evaluated;
}

/* ---- constrained sampling (engine/json_grammar.h) ---- */

/* A constrained request's state: where its output is in the grammar, and
 * the buffers of the mask. */
typedef struct {
    json_match *match;
    float *masked;        /* (n_vocab) the logits with refused tokens at -inf */
    uint8_t *allowed;     /* (n_vocab) */
} constrained;

static int vocab_token_bytes(void *ctx, int32_t id, char *out, size_t cap)
{
    return tokenizer_token_bytes(ctx, id, out, cap);
}

static int constrained_begin(engine_model *m, const json_grammar *grammar, constrained *c, char *err,
                             size_t errlen)
{
    int n_vocab = tokenizer_n_vocab(m->tok);
    pthread_mutex_lock(&m->grammar_lock);
    if (!m->grammar_vocab) m->grammar_vocab = json_vocab_new(n_vocab, vocab_token_bytes, m->tok);
    pthread_mutex_unlock(&m->grammar_lock);
    c->match = m->grammar_vocab ? json_match_new(grammar) : NULL;
    c->masked = malloc(sizeof(float) * (size_t)n_vocab);
    c->allowed = malloc((size_t)n_vocab);
    if (!c->match || !c->masked || !c->allowed) {
        json_match_free(c->match);
        free(c->masked);
        free(c->allowed);
        c->match = NULL;
        snprintf(err, errlen, "out of memory for constrained output");
        return -1;
    }
    return 0;
}

static void constrained_end(constrained *c)
{
    json_match_free(c->match);
    free(c->masked);
    free(c->allowed);
}

/* Samples among the tokens the grammar admits next (an end-of-generation
 * token only where the value may end). 0 with *tok, 1 when the value is
 * closed (nothing may follow), -1 with a message. */
static int constrained_pick(engine_model *m, constrained *c, sampler *smp, const float *logits,
                            int32_t *tok, char *err, size_t errlen)
{
    if (json_match_done(c->match)) return 1;
    int n_vocab = tokenizer_n_vocab(m->tok);
    int n = json_match_mask(c->match, m->grammar_vocab, c->allowed);
    int accepting = json_match_accepting(c->match);
    if (n < 0) {
        snprintf(err, errlen, "out of memory for constrained output");
        return -1;
    }
    if (n == 0) {
        if (accepting) return 1;
        snprintf(err, errlen, "constrained output: the model's vocabulary cannot continue the value");
        return -1;
    }
    for (int v = 0; v < n_vocab; v++)
        c->masked[v] = c->allowed[v] || (accepting && tokenizer_is_eog(m->tok, v)) ? logits[v] : -INFINITY;
    *tok = sampler_sample(smp, c->masked);
    return 0;
}

int engine_run(engine_model *m, const engine_request *r, engine_output_fn on_output, void *user,
               engine_result *result, char *err, size_t errlen)
{
    return engine_run_lane(m, 0, r, on_output, user, result, err, errlen);
}

/* ---- embeddings ---- */

/* GGUF ARCH.pooling_type, as llama.cpp numbers it. */
enum { POOL_NONE = 0, POOL_MEAN = 1, POOL_CLS = 2, POOL_LAST = 3 };

static int pooling_type(const engine_model *m)
{
    gguf_str arch;
    uint32_t v;
    char key[96];
    if (gguf_get_str(m->file, "general.architecture", &arch) != 0 || arch.len > 64) return POOL_MEAN;
    snprintf(key, sizeof key, "%.*s.pooling_type", (int)arch.len, arch.ptr);
    if (gguf_get_u32(m->file, key, &v) != 0 || v == POOL_NONE) return POOL_MEAN; /* generative models */
    return (int)v;
}

/* The embedding of ids[0, n) on lane ln, from an empty cache (the lane's
 * cached prefix is dropped): each MODEL_BATCH piece embedded, run through
 * every layer, normed like the classifier's input, and pooled; then
 * L2-normalised into out (n_embd). Solo models only. */
/* out (dim) = the L2-normalised pooling of final normed hidden states. */
static void pool_normalise(const double *acc, int dim, float *out)
{
    double norm = 0;
    for (int d = 0; d < dim; d++) norm += acc[d] * acc[d];
    norm = sqrt(norm);
    for (int d = 0; d < dim; d++) out[d] = norm > 0 ? (float)(acc[d] / norm) : 0.0f;
}

/* An embedding through a split: the input goes through the batch steps
 * like any prompt, its pieces asking every position's final hidden state
 * back from the last stage (ENGINE_ROWS_ALL), and stage 0 applies the
 * final norm (it holds the head) and pools. A pipeline that breaks is
 * resumed and the input replayed, as a prompt's. */
static int embed_tokens_split(engine_model *m, engine_lane *ln, const int32_t *ids, int n, int pool, float *out,
                              char *err, size_t errlen)
{
    int lane = (int)(ln - m->lanes), dim = model_get_config(m->model)->n_embd;
    float *rows = malloc(sizeof(float) * (size_t)n * (size_t)dim);
    double *acc = calloc((size_t)dim, sizeof *acc);
    if (!rows || !acc) {
        free(rows);
        free(acc);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* From position 0 (from an empty cache, as solo: a vector never
     * depends on what ran on the lane before). The lane's record then holds
     * the input, as after a prompt. */
    lane_truncate(ln, 0);
    int rc = lane_evaluate_rows(m, lane, ids, 0, n, NULL, rows, err, errlen);
    for (int p = 0; rc == 0 && p < n; p++)
        if (pool == POOL_MEAN || (pool == POOL_CLS && p == 0) || (pool == POOL_LAST && p == n - 1))
            for (int d = 0; d < dim; d++) acc[d] += rows[(size_t)p * dim + d];
    if (rc == 0) pool_normalise(acc, dim, out);
    free(rows);
    free(acc);
    return rc == 0 ? 0 : -1;
}

static int embed_tokens(engine_model *m, engine_lane *ln, const int32_t *ids, int n, float *out, char *err,
                        size_t errlen)
{
    const model_config *c = model_get_config(m->model);
    int dim = c->n_embd, pool = pooling_type(m);
    if (pool != POOL_MEAN && pool != POOL_CLS && pool != POOL_LAST) {
        snprintf(err, errlen, "the model's pooling type %d is not supported (mean, cls, last are)", pool);
        return -1;
    }
    engine_split sp;
    pthread_mutex_lock(&m->split_lock);
    sp = m->split;
    pthread_mutex_unlock(&m->split_lock);
    if (sp.has_tail) return embed_tokens_split(m, ln, ids, n, pool, out, err, errlen);
    if (model_get_part(m->model)->end < c->n_layer) {
        snprintf(err, errlen, "layers [%d, %d) are not loaded here and no split is set", model_get_part(m->model)->end,
                 c->n_layer);
        return -1;
    }
    float *x = malloc(sizeof(float) * MODEL_BATCH * (size_t)dim);
    double *acc = calloc((size_t)dim, sizeof *acc);
    if (!x || !acc) {
        free(x);
        free(acc);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    lane_truncate(ln, 0);
    ln->generation = 0; /* the cache no longer matches the record */
    int rc = 0;
    for (int pos = 0; pos < n && rc == 0; pos += MODEL_BATCH) {
        int nb = n - pos < MODEL_BATCH ? n - pos : MODEL_BATCH;
        pthread_mutex_lock(&m->compute);
        rc = model_embed(m->model, ids + pos, nb, x, err, errlen);
        if (rc == 0) rc = model_forward_layers(m->model, ln->state, m->pool, 0, c->n_layer, x, nb, err, errlen);
        pthread_mutex_unlock(&m->compute);
        if (rc == 0) rc = model_final_norm(m->model, x, nb, x, err, errlen);
        for (int i = 0; rc == 0 && i < nb; i++) {
            int p = pos + i;
            if (pool == POOL_MEAN || (pool == POOL_CLS && p == 0) || (pool == POOL_LAST && p == n - 1))
                for (int d = 0; d < dim; d++) acc[d] += x[(size_t)i * dim + d];
        }
    }
    model_state_truncate(ln->state, 0);
    pool_normalise(acc, dim, out);
    free(x);
    free(acc);
    return rc;
}

static int run_lane(engine_model *m, int lane, const engine_request *r, engine_output_fn on_output,
                    void *user, engine_result *result, char *err, size_t errlen);

/* The request's per-stage times come from the tail (the split in place at
 * its start, then at its end: a failover may move it). */
int engine_run_lane(engine_model *m, int lane, const engine_request *r, engine_output_fn on_output,
                    void *user, engine_result *result, char *err, size_t errlen)
{
    engine_split sp;
    pthread_mutex_lock(&m->split_lock);
    sp = m->split;
    pthread_mutex_unlock(&m->split_lock);
    int lane_ok = lane >= 0 && lane < m->n_lanes;
    if (lane_ok && sp.has_tail && sp.tail.timings) sp.tail.timings(sp.tail.ctx, lane, NULL);
    int rc = run_lane(m, lane, r, on_output, user, result, err, errlen);
    pthread_mutex_lock(&m->split_lock);
    sp = m->split;
    pthread_mutex_unlock(&m->split_lock);
    if (lane_ok && sp.has_tail && sp.tail.timings) sp.tail.timings(sp.tail.ctx, lane, result);
    return rc;
}

static int run_lane(engine_model *m, int lane, const engine_request *r, engine_output_fn on_output,
                    void *user, engine_result *result, char *err, size_t errlen)
{
    const engine_sampling *s = &r->sampling;
    result->prompt_tokens = 0;
    result->completion_tokens = 0;
    result->finish_reason = "length";
    if (lane < 0 || lane >= m->n_lanes) {
        snprintf(err, errlen, "lane %d does not exist (the model has %d)", lane, m->n_lanes);
        return -1;
    }
    engine_lane *ln = &m->lanes[lane];
    ln->wanted = on_output;
    ln->wanted_user = user;
    int n_vocab = tokenizer_n_vocab(m->tok);
    int n_ctx = m->n_ctx;
    memset(result, 0, sizeof *result);
    result->finish_reason = "length";
    int n_top = r->top_logprobs < 0 ? 0 : r->top_logprobs > ENGINE_MAX_TOP_LOGPROBS
                                        ? ENGINE_MAX_TOP_LOGPROBS : r->top_logprobs;
    if (s->n_stop < 0 || s->n_stop > ENGINE_MAX_STOP || s->n_logit_bias < 0 ||
        s->n_logit_bias > ENGINE_MAX_LOGIT_BIAS) {
        snprintf(err, errlen, "too many stop strings or logit biases");
        return -1;
    }
    int n_prompt = 0;
    int32_t *ids;
    uint64_t t_start = clock_ns();
    if (engine_prompt_tokens(m, r, &ids, &n_prompt, err, errlen) != 0) return -1;
    result->prompt_tokens = n_prompt;
    if (r->embed) {
        int rc = r->embedding ? embed_tokens(m, ln, ids, n_prompt, r->embedding, err, errlen) : -1;
        if (!r->embedding) snprintf(err, errlen, "no buffer for the embedding");
        free(ids);
        result->embedding = rc == 0 ? r->embedding : NULL;
        result->n_embedding = rc == 0 ? model_get_config(m->model)->n_embd : 0;
        result->finish_reason = "stop";
        return rc;
    }
    int echo = r->logprobs && r->echo_logprobs;
    if (s->max_tokens <= 0 && !echo) {
        free(ids);
        return 0;
    }

    gen_output g = {.fn = on_output, .user = user, .s = s};
    int rc;
    if (echo) {
        rc = score_prompt(m, lane, ids, n_prompt, n_top, &g, err, errlen);
    } else {
        /* Reuse the cached prefix; at least the last prompt token is
         * evaluated again, since its logits are what the first sample needs. */
        int keep = engine_lane_cached_prefix(m, lane, ids, n_prompt);
        lane_truncate(ln, keep);
        result->cached_tokens = keep;
        rc = lane_evaluate(m, lane, ids, keep, n_prompt, NULL, err, errlen);
    }
    uint64_t t_prompt = clock_ns();
    result->prompt_ms = (double)(t_prompt - t_start) * 1e-6;
    if (rc != 0 || g.stopped || s->max_tokens <= 0) {
        free(ids);
        if (g.stopped) result->finish_reason = "stop";
        return rc;
    }

    sampler_params sp = {.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p,
                         .seed = s->seed, .min_p = s->min_p, .repeat_penalty = s->repeat_penalty,
                         .repeat_last_n = s->repeat_last_n, .presence_penalty = s->presence_penalty,
                         .frequency_penalty = s->frequency_penalty, .bias = s->logit_bias,
                         .n_bias = s->n_logit_bias};
    sampler *smp = sampler_new(n_vocab, &sp);
    if (!smp) {
        free(ids);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n_prompt; i++) sampler_accept(smp, ids[i], 0);
    free(ids);
    constrained cons = {0};
    if (r->grammar && constrained_begin(m, r->grammar, &cons, err, errlen) != 0) {
        sampler_free(smp);
        return -1;
    }
    engine_step_set_decoding(m, lane, 1);
    char piece_buf[256];
    for (;;) {
        int32_t tok;
        if (cons.match) {
            int c = constrained_pick(m, &cons, smp, ln->logits, &tok, err, errlen);
            if (c < 0) {
                rc = -1;
                break;
            }
            if (c == 1) { /* the value is closed: nothing may follow */
                result->finish_reason = "stop";
                break;
            }
        } else {
            tok = sampler_sample(smp, ln->logits);
        }
        if (tokenizer_is_eog(m->tok, tok)) {
            result->finish_reason = "stop";
            break;
        }
        sampler_accept(smp, tok, 1);
        result->completion_tokens++;
        engine_token rec;
        if (r->logprobs) token_logprobs(ln->logits, n_vocab, tok, n_top, &rec);
        int nb = tokenizer_token_bytes(m->tok, tok, piece_buf, sizeof piece_buf);
        char *piece = piece_buf;
        if (nb > (int)sizeof piece_buf) { /* a very long token: fetch it whole */
            piece = malloc((size_t)nb);
            if (piece) tokenizer_token_bytes(m->tok, tok, piece, (size_t)nb);
        }
        int stop_hit = 0;
        if (cons.match && (nb <= 0 || !piece || json_match_feed(cons.match, piece, (size_t)nb) != 0)) {
            /* only when logit_bias banned every admitted token */
            if (piece != piece_buf) free(piece);
            snprintf(err, errlen, "constrained output: the sampling settings left no admitted token");
            rc = -1;
            break;
        }
        int wrc = nb < 0 || !piece ? -1 : output_add(&g, piece, (size_t)nb, r->logprobs ? &rec : NULL, &stop_hit);
        if (piece != piece_buf) free(piece);
        if (wrc != 0) {
            snprintf(err, errlen, "cannot decode token %d", (int)tok);
            rc = -1;
            break;
        }
        if (g.stopped || stop_hit) {
            result->finish_reason = "stop";
            result->stop_string = stop_hit;
            break;
        }
        if (result->completion_tokens >= s->max_tokens || ln->n_cached >= n_ctx) break; /* "length" */
        ln->cached[ln->n_cached] = tok;
        if (lane_evaluate(m, lane, ln->cached, ln->n_cached, ln->n_cached + 1, NULL, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    engine_step_set_decoding(m, lane, 0);
    /* The end: whatever is still held back was no stop string after all. */
    if (rc == 0 && !g.stopped && output_release(&g, g.raw_len, g.n_toks, 1) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    result->predicted_ms = (double)(clock_ns() - t_prompt) * 1e-6;
    free(g.utf8.out);
    free(g.raw);
    free(g.toks);
    free(g.tok_end);
    sampler_free(smp);
    constrained_end(&cons);
    return rc;
}

/* engine_generate's callback adapter: text only. */
typedef struct {
    engine_piece_fn fn;
    void *user;
} piece_adapter;

static int piece_adapter_output(void *user, const char *text, size_t len, const engine_token *tokens,
                                int n_tokens)
{
    (void)tokens;
    (void)n_tokens;
    piece_adapter *pa = user;
    return len > 0 && pa->fn ? pa->fn(pa->user, text, len) : 0;
}

int engine_generate(engine_model *m, const char *prompt, size_t prompt_len,
                    const engine_sampling *s, engine_piece_fn on_piece, void *user,
                    engine_result *result, char *err, size_t errlen)
{
    engine_request *r = malloc(sizeof *r); /* ~10 KB: not on a worker's stack */
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    engine_request_defaults(r);
    r->prompt = prompt;
    r->prompt_len = prompt_len;
    r->sampling = *s;
    piece_adapter pa = {on_piece, user};
    int rc = engine_run(m, r, piece_adapter_output, &pa, result, err, errlen);
    free(r);
    return rc;
}

/* ======================================================================== */
/* perplexity                                                                */
/* ======================================================================== */

int engine_perplexity(engine_model *m, const char *text, size_t len, int n_ctx,
                      engine_perplexity_result *result, char *err, size_t errlen)
{
    memset(result, 0, sizeof *result);
    m->lanes[0].wanted = NULL; /* nobody to ask: a replaced split is waited for */
    int model_ctx = m->n_ctx;
    if (n_ctx <= 0) n_ctx = PERPLEXITY_DEFAULT_CTX < model_ctx ? PERPLEXITY_DEFAULT_CTX : model_ctx;
    if (n_ctx < 2 || n_ctx > model_ctx) {
        snprintf(err, errlen, "context %d is outside [2, %d] (the model's context)", n_ctx, model_ctx);
        return -1;
    }
    int32_t bos = tokenizer_bos(m->tok);
    if (bos < 0) {
        snprintf(err, errlen, "the model has no BOS token to start each chunk with");
        return -1;
    }
    int n_ids = 0;
    int32_t *ids = tokenize(m->tok, text, len, 0, &n_ids, err, errlen);
    if (!ids) return -1;
    if (n_ids == 0) {
        free(ids);
        snprintf(err, errlen, "the text has no tokens");
        return -1;
    }
    int n_vocab = tokenizer_n_vocab(m->tok);
    int32_t *chunk = malloc(sizeof(int32_t) * (size_t)n_ctx);
    float *logits = malloc(sizeof(float) * (size_t)n_ctx * (size_t)n_vocab); /* (n_ctx, n_vocab) */
    if (!chunk || !logits) {
        free(ids);
        free(chunk);
        free(logits);
        snprintf(err, errlen, "out of memory for %d x %d logits", n_ctx, n_vocab);
        return -1;
    }
    int rc = 0;
    double nll = 0;
    for (int start = 0; start < n_ids; start += n_ctx - 1) {
        int n = n_ids - start < n_ctx - 1 ? n_ids - start : n_ctx - 1;
        chunk[0] = bos;
        memcpy(chunk + 1, ids + start, sizeof(int32_t) * (size_t)n);
        lane_truncate(&m->lanes[0], 0);
        if (lane_evaluate(m, 0, chunk, 0, n + 1, logits, err, errlen) != 0) {
            rc = -1;
            break;
        }
        /* The logits at position j predict chunk[j + 1]: -log softmax. */
        for (int j = 0; j < n; j++) {
            const float *row = logits + (size_t)j * n_vocab;
            float max = row[0];
            for (int v = 1; v < n_vocab; v++) max = row[v] > max ? row[v] : max;
            double sum = 0;
            for (int v = 0; v < n_vocab; v++) sum += exp((double)row[v] - max);
            nll += log(sum) + max - row[chunk[j + 1]];
        }
        result->scored_tokens += n;
        result->chunks++;
    }
    lane_truncate(&m->lanes[0], 0);
    free(ids);
    free(chunk);
    free(logits);
    if (rc != 0) return -1;
    result->mean_nll = nll / result->scored_tokens;
    result->perplexity = exp(result->mean_nll);
    return 0;
}
