/* reference_model.c: see reference_model.h.
 *
 * Plain loops in double precision over whole dequantized tensors; nothing
 * here calls the engine's forward, RoPE, norms or kernels (only the file
 * format's dequantization, kernel_dequantize_row, is shared). Slow on
 * purpose: every position recomputes from the weights, no cache. */
#define _GNU_SOURCE
#include "reference_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kernels.h"

/* A whole tensor as doubles (row-major, ne[0] per row), or NULL if absent. */
static double *tensor_f64(const gguf_file *f, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) return NULL;
    int cols = (int)t->ne[0], rows = (int)t->ne[1];
    size_t row_bytes = kernel_row_bytes(t->type, cols);
    float *row = malloc(sizeof(float) * (size_t)cols);
    double *out = malloc(sizeof(double) * (size_t)rows * cols);
    for (int r = 0; r < rows; r++) {
        kernel_dequantize_row(t->type, (const uint8_t *)t->data + (size_t)r * row_bytes, row, cols);
        for (int c = 0; c < cols; c++) out[(size_t)r * cols + c] = row[c];
    }
    free(row);
    return out;
}

static double *layer_f64(const gguf_file *f, int l, const char *suffix)
{
    char name[96];
    snprintf(name, sizeof name, "blk.%d.%s", l, suffix);
    return tensor_f64(f, name);
}

/* y[rows] = W[rows][cols] x (+ b) */
static void mv(double *y, const double *w, const double *b, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = b ? b[r] : 0;
        for (int c = 0; c < cols; c++) s += w[(size_t)r * cols + c] * x[c];
        y[r] = s;
    }
}

static void rmsnorm(double *out, const double *x, const double *w, int n, double eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += x[i] * x[i];
    double scale = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
}

/* The frequency of rotated pair j, from the definitions: base^(-2j/d),
 * divided by rope_freqs[j] when the file has it; with Llama 3.1 scaling
 * keys, Llama 3.1's rule written in its own terms (blend of freq and
 * freq / factor by wavelength). */
static double rope_freq(const gguf_file *f, const model_writer_params *p, int j, int d,
                        const char *skip)
{
    double base = p->rope_freq_base > 0 ? p->rope_freq_base : 10000.0;
    double freq = pow(base, -2.0 * j / d);
    if (!strcmp(skip, "rope_factors")) return freq;
    const gguf_tensor *t = gguf_find_tensor(f, "rope_freqs.weight");
    if (!strcmp(p->arch, "phi3")) { /* LongRoPE: the long set when the context exceeds the original */
        int ctx = p->n_ctx > 0 ? p->n_ctx : 256; /* the tests' states take the training context */
        int orig = p->n_ctx_orig > 0 ? p->n_ctx_orig : ctx;
        int want_long = (ctx > orig) != !strcmp(skip, "long_short");
        t = gguf_find_tensor(f, want_long ? "rope_factors_long.weight" : "rope_factors_short.weight");
    }
    if (t) return freq / ((const float *)t->data)[j];
    if (p->llama3_keys) {
        double factor = 8, low = 1, high = 4, orig = 64, wavelen = 2 * M_PI / freq;
        if (wavelen < orig / high) return freq;
        if (wavelen > orig / low) return freq / factor;
        double smooth = (orig / wavelen - low) / (high - low);
        return (1 - smooth) * freq / factor + smooth * freq;
    }
    return freq;
}

/* Logits [n][n_vocab] of tokens[0..n), no cache, no batching, no threads.
 * phi3 as llama.cpp runs Phi-3: q, k, v are consecutive row ranges of
 * attn_qkv; ffn_up's first n_ff rows are the gate, the next n_ff the up
 * projection; NEOX pairs over the first n_rot dimensions, each rotated
 * pair times attn_factor; no sliding window (llama.cpp ignores the key).
 * gemma3 as Gemma 3 defines it: embeddings times sqrt(n_embd), post-norms on
 * each block's output, GELU (tanh form), local layers (all but every 6th)
 * attending to the last n_swa positions with RoPE base 10000, 1/sqrt(head_dim)
 * scores; norm weights as stored (GGUF holds Gemma's 1 + w). */
void reference_forward(const gguf_file *f, const model_writer_params *p, const int32_t *tokens, int n,
                       double *logits, const char *skip)
{
    const char *ref_skip = skip ? skip : "";
    int gemma = !strcmp(p->arch, "gemma3");
    int dim = p->n_embd, hd = p->head_dim > 0 ? p->head_dim : dim / p->n_head;
    int nh = p->n_head, nkv = p->n_head_kv, q_dim = nh * hd, kv_dim = nkv * hd, V = p->n_vocab;
    int neox = strcmp(p->arch, "llama") != 0; /* qwen2, qwen3, phi3: pairs (j, j + d/2) */
    int phi3 = !strcmp(p->arch, "phi3");
    int n_rot = p->n_rot > 0 ? p->n_rot : hd;
    double mscale = p->attn_factor > 0 && strcmp(ref_skip, "attn_factor") ? p->attn_factor : 1.0;
    if (!strcmp(ref_skip, "neox")) neox = !neox;
    double eps = p->rms_eps > 0 ? p->rms_eps : 1e-5;
    double *x = calloc((size_t)n * dim, 8), *xb = calloc(dim, 8), *q = calloc((size_t)n * q_dim, 8);
    double *k = calloc((size_t)n * kv_dim, 8), *v = calloc((size_t)n * kv_dim, 8);
    double *att = calloc(q_dim, 8), *tmp = calloc(dim, 8), *s = calloc(n, 8);
    double *gate = calloc(p->n_ff, 8), *up = calloc(p->n_ff, 8);
    double *embd = tensor_f64(f, "token_embd.weight");
    for (int i = 0; i < n; i++)
        for (int e = 0; e < dim; e++)
            x[i * dim + e] = embd[(size_t)tokens[i] * dim + e] * (gemma ? sqrt((double)dim) : 1.0);
    for (int l = 0; l < p->n_layer; l++) {
        int local = gemma && l % 6 != 5;
        double *post_attn = layer_f64(f, l, "post_attention_norm.weight");
        double *post_ffn = layer_f64(f, l, "post_ffw_norm.weight");
        double *attn_norm = layer_f64(f, l, "attn_norm.weight"), *ffn_norm = layer_f64(f, l, "ffn_norm.weight");
        double *wqkv = layer_f64(f, l, "attn_qkv.weight"); /* phi3: (q_dim + 2 kv_dim, dim) */
        double *wq = wqkv ? NULL : layer_f64(f, l, "attn_q.weight"), *wk = wqkv ? NULL : layer_f64(f, l, "attn_k.weight");
        double *wv = wqkv ? NULL : layer_f64(f, l, "attn_v.weight"), *wo = layer_f64(f, l, "attn_output.weight");
        const double *q_w = wqkv ? wqkv : wq, *k_w = wqkv ? wqkv + (size_t)q_dim * dim : wk;
        const double *v_w = wqkv ? wqkv + (size_t)(q_dim + kv_dim) * dim : wv;
        double *bq = layer_f64(f, l, "attn_q.bias"), *bk = layer_f64(f, l, "attn_k.bias");
        double *bv = layer_f64(f, l, "attn_v.bias"), *bo = layer_f64(f, l, "attn_output.bias");
        double *qn = layer_f64(f, l, "attn_q_norm.weight"), *kn = layer_f64(f, l, "attn_k_norm.weight");
        if (!strcmp(ref_skip, "bias")) free(bq), free(bk), free(bv), bq = bk = bv = NULL;
        if (!strcmp(ref_skip, "qk_norm")) free(qn), free(kn), qn = kn = NULL;
        if (!strcmp(ref_skip, "post_norms")) free(post_attn), free(post_ffn), post_attn = post_ffn = NULL;
        if (!strcmp(ref_skip, "local_rope")) local = 0;
        double *wg = layer_f64(f, l, "ffn_gate.weight"), *wu = layer_f64(f, l, "ffn_up.weight");
        double *wd = layer_f64(f, l, "ffn_down.weight");
        const double *gate_w = wg, *up_w = wu; /* phi3: ffn_up is (2 n_ff, dim), gate rows first */
        if (phi3) {
            int swap = !strcmp(ref_skip, "gate_up_order");
            gate_w = wu + (size_t)(swap ? p->n_ff : 0) * dim;
            up_w = wu + (size_t)(swap ? 0 : p->n_ff) * dim;
        }
        for (int i = 0; i < n; i++) {
            rmsnorm(xb, x + i * dim, attn_norm, dim, eps);
            mv(q + i * q_dim, q_w, bq, xb, q_dim, dim);
            mv(k + i * kv_dim, k_w, bk, xb, kv_dim, dim);
            mv(v + i * kv_dim, v_w, bv, xb, kv_dim, dim);
            for (int h = 0; h < nh + nkv; h++) {
                double *vec = h < nh ? q + i * q_dim + h * hd : k + i * kv_dim + (h - nh) * hd;
                double *norm = h < nh ? qn : kn;
                if (norm) rmsnorm(vec, vec, norm, hd, eps); /* qwen3: per head, before RoPE */
                for (int j = 0; j < n_rot / 2; j++) {
                    double theta = i * (local ? pow(10000.0, -2.0 * j / n_rot) : rope_freq(f, p, j, n_rot, ref_skip));
                    int a = neox ? j : 2 * j, b = neox ? j + n_rot / 2 : 2 * j + 1;
                    double va = vec[a], vb = vec[b];
                    vec[a] = mscale * (va * cos(theta) - vb * sin(theta));
                    vec[b] = mscale * (va * sin(theta) + vb * cos(theta));
                }
            }
        }
        for (int i = 0; i < n; i++) {
            for (int h = 0; h < nh; h++) { /* causal; query head h reads kv head h / (nh / nkv) */
                int g = h / (nh / nkv);
                double max = -1e300, sum = 0;
                int t0 = local && i - p->n_swa + 1 > 0 && strcmp(ref_skip, "window") ? i - p->n_swa + 1 : 0;
                for (int t = 0; t < t0; t++) s[t] = 0; /* outside the window: weight 0 */
                for (int t = t0; t <= i; t++) {
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += q[i * q_dim + h * hd + e] * k[t * kv_dim + g * hd + e];
                    s[t] = d / sqrt(hd);
                    max = fmax(max, s[t]);
                }
                for (int t = t0; t <= i; t++) sum += s[t] = exp(s[t] - max);
                for (int e = 0; e < hd; e++) {
                    double o = 0;
                    for (int t = 0; t <= i; t++) o += s[t] / sum * v[t * kv_dim + g * hd + e];
                    att[h * hd + e] = o;
                }
            }
            mv(tmp, wo, bo, att, dim, q_dim);
            if (post_attn) rmsnorm(tmp, tmp, post_attn, dim, eps);
            for (int e = 0; e < dim; e++) x[i * dim + e] += tmp[e];
            rmsnorm(xb, x + i * dim, ffn_norm, dim, eps);
            mv(gate, gate_w, NULL, xb, p->n_ff, dim);
            mv(up, up_w, NULL, xb, p->n_ff, dim);
            for (int e = 0; e < p->n_ff; e++) {
                double g = gate[e];
                gate[e] = gemma ? 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * up[e]
                                : g / (1 + exp(-g)) * up[e];
            }
            mv(tmp, wd, NULL, gate, dim, p->n_ff);
            if (post_ffn) rmsnorm(tmp, tmp, post_ffn, dim, eps);
            for (int e = 0; e < dim; e++) x[i * dim + e] += tmp[e];
        }
        double *all[] = {attn_norm, ffn_norm, wqkv, wq, wk, wv, wo, bq, bk, bv, bo, qn, kn, wg, wu, wd,
                         post_attn, post_ffn};
        for (size_t a = 0; a < sizeof all / sizeof all[0]; a++) free(all[a]);
    }
    double *out_norm = tensor_f64(f, "output_norm.weight"), *out = tensor_f64(f, "output.weight");
    for (int i = 0; i < n; i++) {
        rmsnorm(xb, x + i * dim, out_norm, dim, eps);
        mv(logits + (size_t)i * V, out ? out : embd, NULL, xb, V, dim);
    }
    free(out_norm); free(out); free(embd);
    free(x); free(xb); free(q); free(k); free(v); free(att); free(tmp); free(s); free(gate); free(up);
}
