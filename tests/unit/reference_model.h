/* reference_model.h: a slow forward pass written from the architectures'
 * definitions (llama, qwen2, qwen3, phi3, gemma3 as llama.cpp runs them),
 * independent of the engine's, for tests.
 *
 * For: test_arch.c and test_model.c, which compare model_forward's logits
 * with it. Reads the weights of a synthetic file written by model_writer.h
 * or gguf_writer.h (same key conventions); the configuration comes from
 * the writer's parameters, not from the engine's parsing of the file.
 * Not for: real checkpoints (it assumes the writer's defaults: RoPE base
 * 10000, eps 1e-5, context 256 unless set) or speed.
 * Threading: no shared state; any thread. */
#ifndef LLMESH_TEST_REFERENCE_MODEL_H
#define LLMESH_TEST_REFERENCE_MODEL_H

#include <stdint.h>

#include "engine/gguf.h"
#include "model_writer.h"

/* Logits [n][n_vocab] of tokens[0..n) in a state of the file's training
 * context (what decides phi3's LongRoPE set). skip names one feature to
 * leave out, to show that a test would catch an engine without it: "neox"
 * (pairs llama's way), "bias", "qk_norm", "rope_factors", "window",
 * "post_norms", "local_rope"; phi3's "long_short" (the other LongRoPE set),
 * "attn_factor", "gate_up_order" (up's rows taken as the gate); NULL or ""
 * for none. */
void reference_forward(const gguf_file *f, const model_writer_params *p, const int32_t *tokens, int n,
                       double *logits, const char *skip);

#endif
