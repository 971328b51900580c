/* token.c: see token.h. */
#include "mesh/token.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "lib/base64.h"

_Static_assert(TOKEN_MAX_TEXT > BASE64_URL_ENCODED_LEN(TOKEN_MAX_BYTES), "token text buffer too small");

int token_encode(const token *t, char *out, size_t cap)
{
    if (t->n_addrs < 1 || t->n_addrs > MESH_MAX_ADDRS) return -1;
    uint8_t bin[TOKEN_MAX_BYTES];
    size_t n = 0;
    bin[n++] = TOKEN_VERSION;
    memcpy(bin + n, t->id, MESH_ID_BYTES);
    n += MESH_ID_BYTES;
    memcpy(bin + n, t->secret, TOKEN_SECRET_BYTES);
    n += TOKEN_SECRET_BYTES;
    bin[n++] = (uint8_t)t->n_addrs;
    for (int i = 0; i < t->n_addrs; i++) n += addr_encode(&t->addrs[i], bin + n);
    assert(n <= sizeof bin);
    int rc = base64_url_encode(bin, n, out, cap);
    explicit_bzero(bin, sizeof bin);
    return rc;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int token_decode(const char *text, token *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t len = strlen(text);
    while (len && is_space(*text)) { text++; len--; }
    while (len && is_space(text[len - 1])) len--;
    if (len == 0) {
        snprintf(err, errlen, "the token is empty");
        return -1;
    }
    uint8_t bin[TOKEN_MAX_BYTES];
    if (len > BASE64_URL_ENCODED_LEN(TOKEN_MAX_BYTES)) {
        snprintf(err, errlen, "the token is too long (%zu characters) to be a llmesh token", len);
        return -1;
    }
    int n = base64_url_decode(text, len, bin, sizeof bin);
    if (n < 0) {
        snprintf(err, errlen, "the token is not valid base64url text (was it cut or altered?)");
        return -1;
    }
    if (n >= 1 && bin[0] == 1) {
        snprintf(err, errlen, "this is a version 1 token, which carries no mesh secret: nodes of this "
                 "llmesh admit only holders of the secret; use a new token, printed by a node of "
                 "this version (token: line, or /api/status on its loopback console)");
        return -1;
    }
    if (n < 1 || bin[0] != TOKEN_VERSION) {
        snprintf(err, errlen, "unknown token version %d (this llmesh reads version %d)",
                 n >= 1 ? bin[0] : -1, TOKEN_VERSION);
        return -1;
    }
    size_t p = 1;
    if ((size_t)n < p + MESH_ID_BYTES + TOKEN_SECRET_BYTES + 1) {
        snprintf(err, errlen, "the token is truncated");
        goto fail;
    }
    memcpy(out->id, bin + p, MESH_ID_BYTES);
    p += MESH_ID_BYTES;
    memcpy(out->secret, bin + p, TOKEN_SECRET_BYTES);
    p += TOKEN_SECRET_BYTES;
    int count = bin[p++];
    if (count < 1 || count > MESH_MAX_ADDRS) {
        snprintf(err, errlen, "the token lists %d addresses (1 to %d allowed)", count, MESH_MAX_ADDRS);
        goto fail;
    }
    for (int i = 0; i < count; i++) {
        int used = addr_decode(bin + p, (size_t)n - p, &out->addrs[i]);
        if (used < 0) {
            snprintf(err, errlen, "address %d of the token is truncated or malformed", i + 1);
            goto fail;
        }
        p += (size_t)used;
    }
    if (p != (size_t)n) {
        snprintf(err, errlen, "the token has %zu unexpected bytes at its end", (size_t)n - p);
        goto fail;
    }
    out->n_addrs = count;
    explicit_bzero(bin, sizeof bin);
    return 0;
fail:
    /* A rejected token's secret is not kept either. */
    explicit_bzero(bin, sizeof bin);
    explicit_bzero(out, sizeof *out);
    return -1;
}
