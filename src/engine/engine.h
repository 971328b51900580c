/* engine.h: the engine's face to the rest of llmesh.
 *
 * Loads a GGUF model (weights, config, tokenizer) and generates text. The
 * engine knows nothing about the network or HTTP: serve/ calls it from its
 * own worker threads. Finer-grained pieces (gguf.h, tokenizer.h, sampler.h,
 * model.h) are public to tests and to pipeline stages.
 *
 * Lanes: a model holds n_lanes sequences, each with its own KV cache and
 * cached-prefix record; requests on different lanes may run at the same
 * time on different threads. Split: the engine can be stage 0 of a pipeline
 * (engine_set_split): it embeds, runs its first layers, hands the hidden
 * states to an engine_tail (the rest of the pipeline, written by serve/) and
 * classifies what comes back; the output is bit for bit what solo gives.
 *
 * Threading: engine_model_load/free on any thread. One request at a time per
 * lane (the caller serialises a lane); engine_run, engine_generate and
 * engine_perplexity use lane 0. The matrix products of all lanes share the
 * engine's thread pool: solo, the lanes' evaluations are batched into one
 * forward pass per step (continuous batching, engine_step.c); in a split, one
 * forward piece at a time (a mutex inside). */
#ifndef LLMESH_ENGINE_H
#define LLMESH_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "engine/chat_template.h"
#include "engine/sampler.h"

typedef struct engine_model engine_model;

/* n_threads <= 0 means one per online CPU. = engine_model_load_opts with
 * n_threads and the rest 0. */
engine_model *engine_model_load(const char *path, int n_threads, char *err, size_t errlen);

#define ENGINE_MAX_LANES 256

typedef struct {
    int n_threads;  /* <= 0: one per online CPU */
    int n_ctx;      /* positions per lane; <= 0: the model's, capped at 8192; larger than the
                       model's: an error. Every stage of a pipeline must use the same (phi3
                       picks its RoPE factors by it). */
    int n_lanes;    /* sequences that can be in flight at once, each with its own KV cache and
                       cached-prefix record; <= 0: 1; at most ENGINE_MAX_LANES */
    int layers_end; /* > 0: load only the head and layers [0, layers_end), which is all a
                       pipeline's stage 0 needs (the file may hold only those); <= 0: every layer */
    int kv_type;    /* the KV caches' element type, model.h's model_kv_type: 0 (MODEL_KV_F16,
                       the default) or MODEL_KV_F32. Every stage of a pipeline uses the same. */
} engine_load_opts;
engine_model *engine_model_load_opts(const char *path, const engine_load_opts *o, char *err,
                                     size_t errlen);
void engine_model_free(engine_model *m);

/* The model's id in the API: the file name without directory and ".gguf". */
const char *engine_model_id(const engine_model *m);
/* Bytes of weights mapped (the GGUF tensor data). */
uint64_t engine_model_bytes(const engine_model *m);
int engine_model_context_length(const engine_model *m);
int engine_model_lanes(const engine_model *m);
/* The KV caches' element type (model_kv_type) the model was loaded with. */
int engine_model_kv_type(const engine_model *m);
/* The model's layer count and width (hidden states are n_embd floats). */
int engine_model_n_layer(const engine_model *m);
int engine_model_n_embd(const engine_model *m);

/* Bounds of a request's lists (the API refuses more). */
#define ENGINE_MAX_STOP 4            /* stop strings */
#define ENGINE_MAX_STOP_BYTES 256    /* bytes of one stop string */
#define ENGINE_MAX_LOGIT_BIAS 1024   /* logit_bias entries */
#define ENGINE_MAX_TOP_LOGPROBS 20   /* alternatives reported per token */

/* Sampling parameters. Every field after max_tokens is off when zero, so a
 * designated initialiser of the first five still means plain sampling. The
 * order in which they apply is sampler.h's: penalties, logit_bias,
 * temperature, top_k, top_p, min_p. */
typedef struct {
    float temperature;  /* 0 = greedy (argmax) */
    int top_k;          /* <= 0: off */
    float top_p;        /* >= 1: off */
    uint64_t seed;      /* same seed, same prompt, same params: same output */
    int max_tokens;     /* tokens to generate at most; generation also stops at an
                           end-of-generation token or at the end of the context window */
    float min_p;                /* <= 0: off */
    float repeat_penalty;       /* <= 0 or 1: off */
    int repeat_last_n;          /* window for repeat_penalty (prompt included); <= 0: 64 */
    float presence_penalty;     /* OpenAI: on generated tokens only */
    float frequency_penalty;
    int n_logit_bias;
    sampler_bias logit_bias[ENGINE_MAX_LOGIT_BIAS]; /* bias <= -100 bans the token */
    int n_stop;
    char stop[ENGINE_MAX_STOP][ENGINE_MAX_STOP_BYTES + 1]; /* non-empty, NUL-terminated */
} engine_sampling;

void engine_sampling_defaults(engine_sampling *s); /* temp 1, top_k 0, top_p 1, seed 0, max 16, rest off */

/* Called with each new piece of text as it is produced. Pieces never split a
 * UTF-8 character (incomplete bytes are held back until the character is
 * complete). Return nonzero to stop generation (finish_reason "stop"). */
typedef int (*engine_piece_fn)(void *user, const char *piece, size_t len);

#define ENGINE_MAX_STAGES 16
typedef struct {
    char node[65];          /* the stage's node id, hex (filled by serve/) */
    int first, end;         /* its layers [first, end) */
    double compute_ms;      /* computing (stage 0: embedding and its layers) */
    double wait_ms;         /* queued there before computing (stage 0: waiting for room on the ring) */
} engine_stage_time;

typedef struct {
    int prompt_tokens;
    int completion_tokens;
    const char *finish_reason; /* "stop" (end of generation, stop string or callback) or "length" */
    int stop_string;        /* 1 + the index (in sampling.stop) of the stop string that ended it; 0: none */
    int cached_tokens;      /* prompt tokens whose keys/values the lane already held (not evaluated) */
    double prompt_ms;       /* from the start to the first token's logits (prompt evaluation) */
    double predicted_ms;    /* from then to the end (sampling and evaluating the completion) */
    /* Split models: the request's share of each stage's time (a step's time
     * shared among its lanes in proportion to their positions in it). */
    int n_stages;           /* 0: solo */
    engine_stage_time stages[ENGINE_MAX_STAGES];
    double hop_ms;          /* round trips less the stages' wait and compute: the wire and framing */
    const float *embedding;    /* an embed request's vector (its embedding buffer), else NULL */
    int n_embedding;
} engine_result;

/* Tokenizes prompt (BOS added when the model asks for it; no special-token
 * parsing), runs it, and samples up to max_tokens. Returns 0, or -1 with a
 * message in err (e.g. prompt longer than the context). The same as
 * engine_run with a text prompt and no log-probabilities. */
int engine_generate(engine_model *m, const char *prompt, size_t prompt_len,
                    const engine_sampling *s, engine_piece_fn on_piece, void *user,
                    engine_result *result, char *err, size_t errlen);

/* ---- requests with token-id prompts, stop strings, log-probabilities ---- */

typedef struct {
    int32_t id;
    float logprob;
} engine_logprob;

/* One token of the output, for log-probabilities. logprob is the natural log
 * of the token's probability under the model's own distribution: the log-
 * softmax of the raw logits, before penalties, biases, temperature and
 * truncation (what scoring needs, and what greedy decoding follows). */
typedef struct {
    int32_t id;
    int prompt;          /* an echoed prompt token (echo_logprobs) */
    float logprob;       /* NAN for the first prompt token: nothing predicts it */
    int n_top;           /* entries in top (0 for the first prompt token) */
    engine_logprob top[ENGINE_MAX_TOP_LOGPROBS]; /* most likely first, lowest id on ties */
} engine_token;

typedef struct {
    const char *prompt;        /* text, tokenized with BOS when the model asks for it */
    size_t prompt_len;
    const int32_t *prompt_ids; /* or, when non-NULL, these ids, used as given (no BOS) */
    int n_prompt_ids;
    int parse_special;         /* the text's special-token texts become those tokens
                                  (rendered chat templates) */
    engine_sampling sampling;
    int logprobs;              /* report each generated token (engine_token) */
    int top_logprobs;          /* with this many alternatives, 0..ENGINE_MAX_TOP_LOGPROBS */
    int echo_logprobs;         /* report the prompt's tokens first (needs logprobs) */
    const struct json_grammar *grammar; /* borrowed, may be NULL: only tokens it admits are
                                           sampled, and generation ends once its value is
                                           closed (engine/json_grammar.h) */
    int embed;                 /* no generation: the prompt's embedding into embedding
                                  (engine_model_n_embd floats, the caller's buffer): the final
                                  normed hidden states pooled as the model says (GGUF
                                  ARCH.pooling_type: mean when absent, cls, last), then
                                  L2-normalised */
    float *embedding;
} engine_request;

void engine_request_defaults(engine_request *r); /* empty text prompt, default sampling */

/* Output of engine_run: new text (valid UTF-8, maybe empty) and, when the
 * request asks for log-probabilities, the tokens that text completes. Text
 * that could be the start of a stop string is held back until it is known
 * not to be; text from a stop string on is never delivered, and neither are
 * tokens that lie wholly inside it. Tokens follow the text they produce
 * (a token whose bytes are still held back comes with a later call). Prompt
 * tokens (echo_logprobs) come first, with empty text. Return nonzero to
 * stop (finish_reason "stop"). While the request waits for a broken split's
 * new pipeline, it is called with nothing (len 0, no tokens) about once a
 * second: nonzero then ends the request with the error "cancelled". */
typedef int (*engine_output_fn)(void *user, const char *text, size_t len,
                                const engine_token *tokens, int n_tokens);

/* Runs a request: prompt, optional prompt scoring, then sampling. Returns 0,
 * or -1 with a message in err (token id out of range, prompt longer than the
 * context, ...). On lane 0: engine_run_lane(m, 0, ...). */
int engine_run(engine_model *m, const engine_request *r, engine_output_fn on_output, void *user,
               engine_result *result, char *err, size_t errlen);
/* engine_run on one lane (0 <= lane < engine_model_lanes): its own KV cache
 * and cached prefix. Different lanes may run concurrently on different
 * threads; one call per lane at a time. Local compute is serialised inside
 * (a mutex around each forward piece), so while one lane waits on the tail
 * another computes. */
int engine_run_lane(engine_model *m, int lane, const engine_request *r, engine_output_fn on_output,
                    void *user, engine_result *result, char *err, size_t errlen);

/* The token ids a request's prompt becomes, as engine_run_lane evaluates
 * them (text tokenized with BOS when the model asks for it, one BOS kept when
 * a chat template writes its own; ids checked against the vocabulary and the
 * context). *ids is malloc'ed (the caller frees). 0, or -1 with a message.
 * Any thread (the tokenizer is immutable). */
int engine_prompt_tokens(const engine_model *m, const engine_request *r, int32_t **ids, int *n_ids,
                         char *err, size_t errlen);
/* How many leading ids the lane's cache already holds (what a request with
 * this prompt would not evaluate again, less the last prompt token, which is
 * always evaluated). Only while no request runs on the lane (the caller
 * serialises it with the lane's runs). */
int engine_lane_cached_prefix(const engine_model *m, int lane, const int32_t *ids, int n_ids);
/* Several sequences of one prompt (a request's n choices): lane's cache is
 * made to hold ids[0, n_ids - 1) (what it lacks evaluated, in the batch
 * steps), then those keys and values are copied to the lanes to[0, n_to),
 * so that a request with this prompt on any of them evaluates only its last
 * token. Solo models only: on a split (the other stages' caches stay where
 * they are) nothing is done. Only while no request runs on these lanes (the
 * caller serialises them). Returns the positions evaluated (0: the prefix
 * was cached, or a split), or -1 with a message. */
int engine_lane_share_prompt(engine_model *m, int lane, const int32_t *ids, int n_ids, const int *to, int n_to,
                             char *err, size_t errlen);

/* The batch steps of a solo model (continuous batching: every running lane's
 * next evaluation in one forward pass). Counts since load. */
typedef struct {
    uint64_t steps;         /* forward passes */
    uint64_t seqs;          /* sequences summed over the steps (mean batch: seqs / steps) */
    uint64_t tokens;        /* positions evaluated */
    uint64_t decode_tokens; /* of which the one-token evaluations of generation */
} engine_step_stats;
void engine_model_step_stats(engine_model *m, engine_step_stats *out);

/* ---- split: this engine as stage 0 of a pipeline ---- */

#define ENGINE_TAIL_BROKEN (-2) /* the pipeline broke: resume, then replay */
#define ENGINE_TAIL_WAITING (-3) /* resume: no new pipeline yet, ask again */
/* Final hidden states a send asks back: none, the last position's, or all. */
enum { ENGINE_ROWS_NONE = 0, ENGINE_ROWS_LAST = 1, ENGINE_ROWS_ALL = 2 };

/* One lane's share of a send: positions pos .. pos+n-1 of its sequence,
 * asking for none, the last, or all n final hidden states back (rows). A
 * piece at pos means the rest of the pipeline first forgets the lane's
 * positions from pos on (pos is the number of positions it keeps: 0 after a
 * replay or a new prompt). */
typedef struct {
    int lane, pos, n, rows;
    int broken;           /* set by send: this lane's exchange was cut and the piece not
                             sent (resume, then replay) */
} engine_tail_piece;

/* The rest of the pipeline (layers [local_end, n_layer)), as serve/ runs it.
 * Its functions are called from the lanes' threads (the callers of
 * engine_run_lane), send by whichever runs the batch step, receive for
 * every lane whose piece asked rows, right after the send. */
typedef struct {
    void *ctx;
    int depth;  /* batch steps that may be on the pipeline at once (its stage count); <= 1: one.
                   With more, the generating lanes are split into that many steps, so that
                   stage 0 computes one while the later stages compute the others */
    /* Hands one batch step to the rest of the pipeline: the hidden states x
     * (sum of the pieces' n, n_embd) of n_pieces lanes' pieces (each lane
     * once, MODEL_BATCH positions in all at most), in the pieces' order. May
     * block (back-pressure: a bounded number of steps in flight). 0 (pieces
     * marked broken were not sent), -1 (error, in err: every piece's request
     * fails) or ENGINE_TAIL_BROKEN (none sent: every lane resumes).
     * local_us: the step's time here (embedding and layers [0, local_end)),
     * for the requests' timings. */
    int (*send)(void *ctx, engine_tail_piece *pieces, int n_pieces, const float *x, uint64_t local_us,
                char *err, size_t errlen);
    /* Waits for the rows asked by the sends since the last receive, in order:
     * out (n_rows, n_embd). 0, -1 or ENGINE_TAIL_BROKEN. */
    int (*receive)(void *ctx, int lane, float *out, int n_rows, char *err, size_t errlen);
    /* After BROKEN: waits for a new pipeline, about a second at most. 0 when
     * one is in place (engine_set_split has been called meanwhile);
     * ENGINE_TAIL_WAITING when none is yet: the engine asks the request
     * whether it is still wanted (an empty on_output) and calls again; -1
     * with the reason when it is known that none will come (e.g. "no memory
     * left in the mesh for layers 12-23"), which ends the request with that
     * error. The tail bounds the whole wait. */
    int (*resume)(void *ctx, int lane, char *err, size_t errlen);
    /* Optional (NULL: none). With r NULL, forgets the lane's times (a
     * request starts on it); otherwise fills r->stages with the times the
     * lane's steps spent in each stage since then. Called by the lane's
     * thread at the start and the end of engine_run_lane. */
    void (*timings)(void *ctx, int lane, engine_result *r);
} engine_tail;

/* Layers [0, local_end) run here and the rest through tail (copied; its ctx
 * must stay valid while a lane may still use it: until every lane has
 * finished the evaluation it was in when the next engine_set_split came);
 * local_end == n_layer with tail NULL: solo. 0 <= local_end <= n_layer, and
 * local_end must not exceed the layers loaded (layers_end) or evaluations
 * fail. Any thread, at any time: lanes pick it up at their next evaluation.
 * Each call starts a new split generation: a lane whose cache belongs to an
 * older one re-evaluates its whole cached prefix (positions from 0) on the
 * new split before going on, since the other stages' caches are not the old
 * ones. A request whose tail breaks calls resume, then replays every position
 * from 0 on the split in place: its output is what an unbroken run gives. */
void engine_set_split(engine_model *m, int local_end, const engine_tail *tail);

int engine_model_n_vocab(const engine_model *m);

/* A conversation as a prompt. With the model's tokenizer.chat_template (when
 * it has one that parses) rendered with add_generation_prompt and the BOS/EOS
 * token texts; *parse_special is then 1: the prompt's special-token texts
 * must become tokens. A model without one gets a plain role-prefixed
 * template ("User: ...\nAssistant:"), *parse_special 0. *out is malloc'ed
 * (the caller frees). 0, or -1 with a message (the template's own error,
 * e.g. raise_exception's). Any thread (the parsed template is immutable). */
int engine_render_chat(const engine_model *m, const chat_message *msgs, int n_msgs, char **out,
                       size_t *out_len, int *parse_special, char *err, size_t errlen);
/* engine_render_chat with the template variable `tools` set to tools_json (a
 * JSON list of OpenAI tool objects; NULL: none). A model with no usable
 * template cannot take tools: -1 with a message. With continue_final, the
 * last message (an assistant turn) is left open, its text to be continued
 * (an assistant prefill): the template renders every turn closed without
 * the generation prompt and the text is cut right after that message's
 * content (Hugging Face's continue_final_message; -1 when the template does
 * not write the content as given); an empty content opens the turn as the
 * generation prompt does; the plain template ends "Assistant: <content>". */
int engine_render_chat_tools(const engine_model *m, const chat_message *msgs, int n_msgs,
                             const char *tools_json, int continue_final, char **out, size_t *out_len,
                             int *parse_special, char *err, size_t errlen);
/* How the model's chat template asks it to write tool calls, read from the
 * template's text at load: Hermes/Qwen (<tool_call>{json}</tool_call>),
 * Llama 3.1+ (a JSON object {"name", "parameters"}), Mistral
 * ([TOOL_CALLS][{json}, ...]); NONE when the template shows none of them. */
typedef enum { ENGINE_TOOLS_NONE, ENGINE_TOOLS_HERMES, ENGINE_TOOLS_LLAMA3, ENGINE_TOOLS_MISTRAL } engine_tool_format;
engine_tool_format engine_chat_tool_format(const engine_model *m);
/* Why the model's chat template was not usable ("" when it is, or when the
 * model has none): it failed to parse at load, so the plain template is used. */
const char *engine_chat_template_error(const engine_model *m);
/* Text to ids (add_bos: put the BOS first when the vocabulary has one;
 * parse_special: special-token texts become those tokens). *ids is malloc'ed,
 * the caller frees. 0, or -1 with a message. Any thread (the tokenizer is
 * immutable). */
int engine_tokenize(const engine_model *m, const char *text, size_t len, int add_bos,
                    int parse_special, int32_t **ids, int *n_ids, char *err, size_t errlen);
/* Ids to text: the tokens' bytes as generation would print them, made valid
 * UTF-8 (invalid bytes become U+FFFD). Returns a malloc'ed NUL-terminated
 * string (length in *len), or NULL with a message (id out of range). Any thread. */
char *engine_detokenize(const engine_model *m, const int32_t *ids, int n_ids, size_t *len,
                        char *err, size_t errlen);
/* One token's raw bytes (may be part of a UTF-8 character): the byte count,
 * which may exceed cap (nothing is written past cap), or -1 out of range. */
int engine_token_bytes(const engine_model *m, int32_t id, char *out, size_t cap);
/* Copies n bytes to out (room for 3 * n + 1) with every invalid or
 * incomplete UTF-8 sequence replaced by U+FFFD; NUL-terminates; returns the
 * length. */
size_t engine_utf8_sanitize(const char *in, size_t n, char *out);

/* ---- additions (engine.c) ---- */

/* Threads in the model's pool (the caller of engine_generate included). */
int engine_model_threads(const engine_model *m);

typedef struct {
    double perplexity;  /* exp(mean_nll) */
    double mean_nll;    /* nats per scored token */
    int scored_tokens;
    int chunks;
} engine_perplexity_result;

/* Perplexity of text, measured the way models/README.md describes: the text
 * is tokenized without BOS and without special-token parsing, cut into
 * consecutive chunks of n_ctx - 1 ids, each chunk is evaluated from an empty
 * KV cache with BOS in front, and every chunk token is scored given all
 * before it in its chunk. n_ctx <= 0 means 256 or the model's context if
 * smaller; a larger n_ctx than the model's is an error. Needs a BOS token.
 * Returns 0, or -1 with a message in err.
 * On lane 0 (it empties lane 0's cache), through the split when one is set. */
int engine_perplexity(engine_model *m, const char *text, size_t len, int n_ctx,
                      engine_perplexity_result *result, char *err, size_t errlen);

#endif
