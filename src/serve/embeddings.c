/* embeddings.c: OpenAI's /v1/embeddings request and answer. See
 * embeddings.h.
 *
 * Decisions: `dimensions` (shortening a vector) is refused with 400: the
 * model's width is what it is, and cutting a normalised vector is not the
 * same vector. Every input is embedded on its own from an empty cache, so
 * an input's vector never depends on what else is in the request. Base64
 * uses GnuTLS's encoder (already linked for the mesh's TLS); lib/base64.c
 * is the url-safe, unpadded variant of invite tokens. */
#include "serve/embeddings.h"

#include <gnutls/gnutls.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/openai.h"

void embeddings_request_free(embeddings_request *r)
{
    if (!r) return;
    for (int i = 0; i < r->n_inputs; i++) {
        if (r->texts) free(r->texts[i]);
        if (r->ids) free(r->ids[i]);
    }
    free(r->texts);
    free(r->ids);
    free(r->n_ids);
    free(r);
}

/* One input: a non-empty string or a non-empty array of token ids. */
static int parse_input(const cJSON *v, embeddings_request *r, int i, char *err, size_t errlen)
{
    if (cJSON_IsString(v)) {
        if (!v->valuestring[0]) {
            snprintf(err, errlen, "'input' must not hold an empty string");
            return -1;
        }
        r->texts[i] = strdup(v->valuestring);
        if (!r->texts[i]) snprintf(err, errlen, "out of memory");
        return r->texts[i] ? 0 : -1;
    }
    if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) {
        r->ids[i] = openai_read_token_ids((cJSON *)v, "input", &r->n_ids[i], &r->max_id, err, errlen);
        return r->ids[i] ? 0 : -1;
    }
    snprintf(err, errlen, "'input' must be a string, an array of strings, an array of token ids, or an "
                          "array of such arrays (none empty)");
    return -1;
}

int embeddings_parse(const char *body, size_t len, embeddings_request **out, char *err, size_t errlen)
{
    static const char *const fields[] = {"model", "input", "encoding_format", NULL};
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(root)) {
        snprintf(err, errlen, root ? "request body must be a JSON object" : "request body is not valid JSON");
        cJSON_Delete(root);
        return -1;
    }
    embeddings_request *r = calloc(1, sizeof *r);
    int rc = -1;
    if (!r) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    r->max_id = -1;
    if (openai_check_fields(root, fields, NULL, err, errlen)) goto done;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsString(model) || !model->valuestring[0] || strlen(model->valuestring) >= MESH_MAX_NAME) {
        snprintf(err, errlen, "'model' must be a non-empty string (at most %d bytes)", MESH_MAX_NAME - 1);
        goto done;
    }
    snprintf(r->model, sizeof r->model, "%s", model->valuestring);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    if (fmt && !cJSON_IsNull(fmt)) {
        if (!cJSON_IsString(fmt) || (strcmp(fmt->valuestring, "float") && strcmp(fmt->valuestring, "base64"))) {
            snprintf(err, errlen, "'encoding_format' must be \"float\" or \"base64\"");
            goto done;
        }
        r->base64 = !strcmp(fmt->valuestring, "base64");
    }
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
    /* A list of inputs: an array of strings or of arrays; an array of
     * numbers is one input of token ids. */
    int list = cJSON_IsArray(input) && cJSON_GetArraySize(input) > 0 &&
               !cJSON_IsNumber(cJSON_GetArrayItem(input, 0));
    int n = list ? cJSON_GetArraySize(input) : 1;
    if (!input || n > EMBEDDINGS_MAX_INPUTS) {
        snprintf(err, errlen, "'input' is required (at most %d inputs)", EMBEDDINGS_MAX_INPUTS);
        goto done;
    }
    r->texts = calloc((size_t)n, sizeof *r->texts);
    r->ids = calloc((size_t)n, sizeof *r->ids);
    r->n_ids = calloc((size_t)n, sizeof *r->n_ids);
    if (!r->texts || !r->ids || !r->n_ids) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    r->n_inputs = n;
    for (int i = 0; i < n; i++)
        if (parse_input(list ? cJSON_GetArrayItem(input, i) : input, r, i, err, errlen)) goto done;
    rc = 0;
done:
    cJSON_Delete(root);
    if (rc == 0) *out = r;
    else embeddings_request_free(r);
    return rc;
}

cJSON *embeddings_item(int index, const float *v, int n, int base64)
{
    cJSON *item = cJSON_CreateObject();
    if (!item) return NULL;
    cJSON_AddStringToObject(item, "object", "embedding");
    cJSON_AddNumberToObject(item, "index", index);
    if (base64) {
        unsigned char *bytes = malloc((size_t)n * 4 + 1);
        gnutls_datum_t raw = {bytes, (unsigned)n * 4}, text = {NULL, 0};
        for (int i = 0; bytes && i < n; i++) { /* little-endian float32, whatever the host */
            uint32_t u;
            memcpy(&u, &v[i], 4);
            for (int k = 0; k < 4; k++) bytes[i * 4 + k] = (unsigned char)(u >> (8 * k));
        }
        if (!bytes || gnutls_base64_encode2(&raw, &text) != 0) {
            free(bytes);
            cJSON_Delete(item);
            return NULL;
        }
        char *s = malloc(text.size + 1);
        if (s) {
            memcpy(s, text.data, text.size);
            s[text.size] = 0;
            cJSON_AddStringToObject(item, "embedding", s);
        }
        free(s);
        gnutls_free(text.data);
        free(bytes);
        if (!s) {
            cJSON_Delete(item);
            return NULL;
        }
    } else {
        /* Each float printed so that it reads back as the very same float
         * (and as the same double as base64's float32 gives): cJSON's own
         * printer stops at 15 digits when they are "close enough". */
        cJSON *arr = cJSON_AddArrayToObject(item, "embedding");
        char num[32];
        for (int i = 0; i < n; i++) {
            snprintf(num, sizeof num, "%.17g", isfinite(v[i]) ? (double)v[i] : 0.0);
            cJSON_AddItemToArray(arr, cJSON_CreateRaw(num));
        }
    }
    return item;
}

cJSON *embeddings_answer(cJSON *data, const char *model, int prompt_tokens)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON_AddItemToObject(o, "data", data);
    cJSON_AddStringToObject(o, "model", model);
    cJSON *usage = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(usage, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(usage, "total_tokens", prompt_tokens);
    return o;
}
