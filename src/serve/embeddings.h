/* embeddings.h: POST /v1/embeddings in OpenAI's dialect: the request
 * (`input` a string, an array of strings, an array of token ids or an array
 * of such arrays; `encoding_format` float or base64) and the answer's items.
 * The vectors come from the engine (engine_request.embed); the router runs
 * the inputs one after another on a lane (router_run_embeddings) and
 * forwards a request for a model served elsewhere like a completion.
 *
 * Not here: pooling and normalisation (engine.c, embed_tokens), where a
 * request runs (router.c). Threading: event-loop thread. */
#ifndef LLMESH_EMBEDDINGS_H
#define LLMESH_EMBEDDINGS_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "mesh/mesh.h"

#define EMBEDDINGS_MAX_INPUTS 256   /* inputs in one request */

typedef struct {
    char model[MESH_MAX_NAME];
    int n_inputs;
    char **texts;            /* (n_inputs) a text input, or NULL where ids are given */
    int32_t **ids;           /* (n_inputs) a token-id input, or NULL */
    int *n_ids;
    int base64;              /* encoding_format "base64" */
    int max_id;              /* largest token id given (-1: none) */
} embeddings_request;

/* Parses a body. 0 with *out (caller frees), or -1 with a message for a 400. */
int embeddings_parse(const char *body, size_t len, embeddings_request **out, char *err, size_t errlen);
void embeddings_request_free(embeddings_request *r);

/* One item of the answer's data: {"object": "embedding", "index", "embedding"}
 * with the vector as numbers or, base64, as the little-endian float32 bytes
 * in standard base64 (what OpenAI's clients decode). NULL out of memory. */
cJSON *embeddings_item(int index, const float *v, int n, int base64);
/* The whole answer: {"object": "list", "data", "model", "usage"}; takes data. */
cJSON *embeddings_answer(cJSON *data, const char *model, int prompt_tokens);

#endif
