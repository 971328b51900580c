/* catalog.c: the built-in catalog of popular GGUF models (model_catalog_*
 * in ref.h): names people type, mapped to a Hugging Face repo and file. */
#include "models/ref.h"

#include <strings.h>

/* ---- the catalog ---------------------------------------------------------
 * Popular instruct models whose architectures the engine runs, each at the
 * quant most people pick (Q4_K_M; Q8_0 where the model is small). Sizes are
 * the published files' rounded to the MB, shown by `llmesh models --catalog`;
 * the fit check before a download uses the hub's exact figure and the
 * file's own header, never these. */
#define MB 1000000ull
static const model_catalog_entry catalog[] = {
    {"qwen2.5-0.5b-instruct", "Qwen", "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf",
     491 * MB, "Qwen2.5 0.5B instruct, Q4_K_M"},
    {"qwen2.5-1.5b-instruct", "Qwen", "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf",
     1117 * MB, "Qwen2.5 1.5B instruct, Q4_K_M"},
    {"qwen2.5-3b-instruct", "Qwen", "Qwen/Qwen2.5-3B-Instruct-GGUF", "qwen2.5-3b-instruct-q4_k_m.gguf",
     2104 * MB, "Qwen2.5 3B instruct, Q4_K_M"},
    {"qwen2.5-7b-instruct", "Qwen", "Qwen/Qwen2.5-7B-Instruct-GGUF",
     "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf", 4683 * MB, "Qwen2.5 7B instruct, Q4_K_M, in 2 parts"},
    {"qwen3-0.6b", "Qwen", "Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf", 639 * MB, "Qwen3 0.6B, Q8_0"},
    {"qwen3-8b", "Qwen", "Qwen/Qwen3-8B-GGUF", "Qwen3-8B-Q4_K_M.gguf", 5027 * MB, "Qwen3 8B, Q4_K_M"},
    {"llama-3.2-1b-instruct", "Llama", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf",
     808 * MB, "Llama 3.2 1B instruct, Q4_K_M"},
    {"llama-3.2-3b-instruct", "Llama", "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
     2019 * MB, "Llama 3.2 3B instruct, Q4_K_M"},
    {"llama-3.1-8b-instruct", "Llama", "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
     "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf", 4921 * MB, "Llama 3.1 8B instruct, Q4_K_M"},
    {"gemma-3-1b-it", "Gemma", "ggml-org/gemma-3-1b-it-GGUF", "gemma-3-1b-it-Q4_K_M.gguf", 806 * MB,
     "Gemma 3 1B instruct, Q4_K_M"},
    {"gemma-3-4b-it", "Gemma", "ggml-org/gemma-3-4b-it-GGUF", "gemma-3-4b-it-Q4_K_M.gguf", 2490 * MB,
     "Gemma 3 4B instruct, Q4_K_M (text only)"},
    {"gemma-3-12b-it", "Gemma", "ggml-org/gemma-3-12b-it-GGUF", "gemma-3-12b-it-Q4_K_M.gguf", 7300 * MB,
     "Gemma 3 12B instruct, Q4_K_M (text only)"},
    {"mistral-7b-instruct-v0.3", "Mistral", "bartowski/Mistral-7B-Instruct-v0.3-GGUF",
     "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf", 4372 * MB, "Mistral 7B instruct v0.3, Q4_K_M"},
    {"mistral-nemo-instruct", "Mistral", "bartowski/Mistral-Nemo-Instruct-2407-GGUF",
     "Mistral-Nemo-Instruct-2407-Q4_K_M.gguf", 7478 * MB, "Mistral Nemo 12B instruct (2407), Q4_K_M"},
    {"phi-3.5-mini-instruct", "Phi", "bartowski/Phi-3.5-mini-instruct-GGUF", "Phi-3.5-mini-instruct-Q4_K_M.gguf",
     2393 * MB, "Phi-3.5 mini instruct (3.8B), Q4_K_M"},
    {"phi-3-mini-4k-instruct", "Phi", "microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf",
     2393 * MB, "Phi-3 mini 4k instruct (3.8B), Q4_K_M by Microsoft"},
};

int model_catalog_count(void) { return (int)(sizeof catalog / sizeof catalog[0]); }

const model_catalog_entry *model_catalog_at(int i)
{
    return i >= 0 && i < model_catalog_count() ? &catalog[i] : NULL;
}

const model_catalog_entry *model_catalog_find(const char *name)
{
    for (int i = 0; i < model_catalog_count(); i++)
        if (!strcasecmp(catalog[i].name, name)) return &catalog[i];
    return NULL;
}
