/* fuzz_token.c: token_decode on arbitrary text. Whatever decodes must encode
 * back to a token that decodes to the same thing (no lossy acceptance). */
#include <stdlib.h>
#include <string.h>

#include "mesh/token.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    token t, again;
    char err[256], out[TOKEN_MAX_TEXT];
    if (token_decode(text, &t, err, sizeof err) == 0) {
        if (token_encode(&t, out, sizeof out) < 0) abort();
        if (token_decode(out, &again, err, sizeof err) != 0) abort();
        if (memcmp(t.id, again.id, sizeof t.id) || memcmp(t.secret, again.secret, sizeof t.secret) ||
            t.n_addrs != again.n_addrs)
            abort();
        for (int i = 0; i < t.n_addrs; i++)
            if (addr_compare(&t.addrs[i], &again.addrs[i]) != 0) abort();
    }
    free(text);
    return 0;
}
