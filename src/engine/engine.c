/* engine.c: engine.h on top of gguf, tokenizer, model, sampler and the
 * thread pool: loading, the generation loop, UTF-8-safe streaming, and
 * perplexity measurement.
 * Not here: the numerics (model.c, kernels.c) or any network/API concern.
 *
 * The KV cache is kept between engine_generate calls together with the
 * tokens it holds, so a prompt that extends the previous one (a chat turn)
 * only evaluates its new tokens. This cannot change results: a token's
 * logits do not depend on how the tokens before it were batched. */
#include "engine/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "lib/threadpool.h"

#define PERPLEXITY_DEFAULT_CTX 256
/* Models train on contexts up to 128K positions and more; an F32 KV cache
 * that long is tens of GB. Generation uses at most this many positions
 * (engine_model_context_length reports the figure in use). */
#define ENGINE_MAX_CONTEXT 8192

struct engine_model {
    gguf_file *file;      /* the mapping the model's weights point into */
    tokenizer *tok;
    model *model;
    model_state *state;
    threadpool *pool;
    char id[256];
    int32_t *cached;      /* (n_ctx) the tokens whose keys/values are in the state */
    int n_cached;
    float *logits;        /* (n_vocab) */
};

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

engine_model *engine_model_load(const char *path, int n_threads, char *err, size_t errlen)
{
    char inner[512];
    engine_model *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    model_id_from_path(path, m->id, sizeof m->id);
    if (!(m->file = gguf_open(path, err, errlen))) goto fail_quiet;
    if (!(m->model = model_load(m->file, inner, sizeof inner))) goto fail;
    if (!(m->tok = tokenizer_load(m->file, inner, sizeof inner))) goto fail;
    const model_config *c = model_get_config(m->model);
    if (tokenizer_n_vocab(m->tok) != c->n_vocab) {
        snprintf(inner, sizeof inner, "tokenizer has %d tokens, the model %d",
                 tokenizer_n_vocab(m->tok), c->n_vocab);
        goto fail;
    }
    int n_ctx = c->n_ctx_train < ENGINE_MAX_CONTEXT ? c->n_ctx_train : ENGINE_MAX_CONTEXT;
    if (!(m->state = model_state_new(m->model, n_ctx, inner, sizeof inner))) goto fail;
    if (!(m->pool = threadpool_create(n_threads, inner, sizeof inner))) goto fail;
    m->cached = malloc(sizeof(int32_t) * (size_t)model_state_n_ctx(m->state));
    m->logits = malloc(sizeof(float) * (size_t)c->n_vocab);
    if (!m->cached || !m->logits) {
        snprintf(inner, sizeof inner, "out of memory");
        goto fail;
    }
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
    model_state_free(m->state);
    tokenizer_free(m->tok);
    model_free(m->model);
    gguf_close(m->file);
    free(m->cached);
    free(m->logits);
    free(m);
}

const char *engine_model_id(const engine_model *m) { return m->id; }
uint64_t engine_model_bytes(const engine_model *m) { return model_weight_bytes(m->model); }
int engine_model_context_length(const engine_model *m) { return model_state_n_ctx(m->state); }
int engine_model_threads(const engine_model *m) { return threadpool_size(m->pool); }

void engine_sampling_defaults(engine_sampling *s)
{
    s->temperature = 1.0f;
    s->top_k = 0;
    s->top_p = 1.0f;
    s->seed = 0;
    s->max_tokens = 16;
}

/* ======================================================================== */
/* UTF-8 streaming                                                           */
/* ======================================================================== */

/* Byte-level tokens can split a character across tokens, and a model can
 * emit byte sequences that are not UTF-8 at all. The stream holds back an
 * incomplete character until it completes, and replaces invalid bytes (and a
 * character still incomplete at the end) with U+FFFD, using the "maximal
 * subpart" rule of Unicode 3.9, so every piece is valid UTF-8 that JSON
 * encoders and terminals accept. */
typedef struct {
    engine_piece_fn fn;
    void *user;
    unsigned char held[4];
    int n_held;
    char *out;       /* scratch for one piece */
    size_t out_cap;
    int stopped;     /* the callback asked to stop */
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

/* Sends held bytes + the new ones (through the sanitiser) to the callback;
 * at_end flushes an incomplete tail as U+FFFD. Returns -1 on allocation
 * failure. */
static int utf8_stream_write(utf8_stream *st, const char *bytes, size_t n, int at_end)
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
    size_t o = 0, i = 0;
    while (i < total) {
        int r = utf8_sequence(in + i, total - i);
        if (r > 0) {
            memcpy(st->out + o, in + i, (size_t)r);
            o += (size_t)r;
            i += (size_t)r;
        } else if (r == 0 && !at_end) { /* incomplete: hold until more bytes come */
            st->n_held = (int)(total - i);
            memcpy(st->held, in + i, (size_t)st->n_held);
            break;
        } else {                         /* invalid, or incomplete at the very end */
            memcpy(st->out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i += r < 0 ? (size_t)-r : total - i;
        }
    }
    if (in != stackbuf) free(in);
    if (o > 0 && st->fn && !st->stopped && st->fn(st->user, st->out, o) != 0) st->stopped = 1;
    return 0;
}

/* ======================================================================== */
/* generation                                                                */
/* ======================================================================== */

/* Tokenizes into a malloc'ed array (caller frees); *n gets the count. */
static int32_t *tokenize(const tokenizer *tok, const char *text, size_t len, int add_bos, int *n,
                         char *err, size_t errlen)
{
    int cap = (int)(len < 1000000 ? len : 1000000) + 2;
    for (;;) {
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
        if (!ids) {
            snprintf(err, errlen, "out of memory tokenizing %zu bytes", len);
            return NULL;
        }
        int got = tokenizer_encode(tok, text, len, add_bos, ids, cap);
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

/* Evaluates tokens[from..n) on top of the cached tokens[0..from), keeping
 * the cached-token record in step; logits of the last token go to m->logits. */
static int evaluate(engine_model *m, const int32_t *tokens, int from, int n, char *err, size_t errlen)
{
    if (model_forward(m->model, m->state, m->pool, tokens + from, n - from, m->logits, 0, err,
                      errlen) != 0)
        return -1; /* the state is unchanged: model_forward checks before it writes */
    if (tokens != m->cached) memcpy(m->cached + from, tokens + from, sizeof(int32_t) * (size_t)(n - from));
    m->n_cached = n;
    return 0;
}

int engine_generate(engine_model *m, const char *prompt, size_t prompt_len,
                    const engine_sampling *s, engine_piece_fn on_piece, void *user,
                    engine_result *result, char *err, size_t errlen)
{
    result->prompt_tokens = 0;
    result->completion_tokens = 0;
    result->finish_reason = "length";
    int add_bos = tokenizer_add_bos(m->tok) && tokenizer_bos(m->tok) >= 0;
    int n_prompt = 0;
    int32_t *ids = tokenize(m->tok, prompt, prompt_len, add_bos, &n_prompt, err, errlen);
    if (!ids) return -1;
    int n_ctx = model_state_n_ctx(m->state);
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
    result->prompt_tokens = n_prompt;
    if (s->max_tokens <= 0) {
        free(ids);
        return 0;
    }

    /* Reuse the cached prefix; at least the last prompt token is evaluated
     * again, since its logits are what the first sample needs. */
    int keep = 0;
    while (keep < m->n_cached && keep < n_prompt - 1 && m->cached[keep] == ids[keep]) keep++;
    model_state_truncate(m->state, keep);
    m->n_cached = keep;
    int rc = evaluate(m, ids, keep, n_prompt, err, errlen);
    free(ids);
    if (rc != 0) return -1;

    sampler_params sp = {.temperature = s->temperature, .top_k = s->top_k, .top_p = s->top_p, .seed = s->seed};
    sampler *smp = sampler_new(tokenizer_n_vocab(m->tok), &sp);
    utf8_stream st = {.fn = on_piece, .user = user};
    char piece_buf[256];
    int32_t eos = tokenizer_eos(m->tok);
    if (!smp) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    rc = 0;
    for (;;) {
        int32_t tok = sampler_sample(smp, m->logits);
        if (tok == eos) {
            result->finish_reason = "stop";
            break;
        }
        result->completion_tokens++;
        int nb = tokenizer_token_bytes(m->tok, tok, piece_buf, sizeof piece_buf);
        char *piece = piece_buf;
        if (nb > (int)sizeof piece_buf) { /* a very long token: fetch it whole */
            piece = malloc((size_t)nb);
            if (piece) tokenizer_token_bytes(m->tok, tok, piece, (size_t)nb);
        }
        int wrc = nb < 0 || !piece ? -1 : utf8_stream_write(&st, piece, (size_t)nb, 0);
        if (piece != piece_buf) free(piece);
        if (wrc != 0) {
            snprintf(err, errlen, "cannot decode token %d", (int)tok);
            rc = -1;
            break;
        }
        if (st.stopped) {
            result->finish_reason = "stop";
            break;
        }
        if (result->completion_tokens >= s->max_tokens || m->n_cached >= n_ctx) break; /* "length" */
        m->cached[m->n_cached] = tok;
        if (evaluate(m, m->cached, m->n_cached, m->n_cached + 1, err, errlen) != 0) {
            rc = -1;
            break;
        }
    }
    if (rc == 0 && !st.stopped && utf8_stream_write(&st, NULL, 0, 1) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    free(st.out);
    sampler_free(smp);
    return rc;
}

/* ======================================================================== */
/* perplexity                                                                */
/* ======================================================================== */

int engine_perplexity(engine_model *m, const char *text, size_t len, int n_ctx,
                      engine_perplexity_result *result, char *err, size_t errlen)
{
    memset(result, 0, sizeof *result);
    int model_ctx = model_state_n_ctx(m->state);
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
        model_state_truncate(m->state, 0);
        m->n_cached = 0;
        if (model_forward(m->model, m->state, m->pool, chunk, n + 1, logits, 1, err, errlen) != 0) {
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
    model_state_truncate(m->state, 0);
    m->n_cached = 0;
    free(ids);
    free(chunk);
    free(logits);
    if (rc != 0) return -1;
    result->mean_nll = nll / result->scored_tokens;
    result->perplexity = exp(result->mean_nll);
    return 0;
}
