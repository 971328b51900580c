/* base64.c: see base64.h. */
#include "lib/base64.h"

#include <assert.h>
#include <limits.h>

static const char base64_url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int base64_url_encode(const uint8_t *data, size_t len, char *out, size_t cap)
{
    assert(data || len == 0);
    if (len > (size_t)INT_MAX / 2 || cap < BASE64_URL_ENCODED_LEN(len) + 1) return -1;
    size_t o = 0, i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        out[o++] = base64_url_alphabet[v >> 18];
        out[o++] = base64_url_alphabet[(v >> 12) & 63];
        out[o++] = base64_url_alphabet[(v >> 6) & 63];
        out[o++] = base64_url_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        out[o++] = base64_url_alphabet[v >> 18];
        out[o++] = base64_url_alphabet[(v >> 12) & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        out[o++] = base64_url_alphabet[v >> 18];
        out[o++] = base64_url_alphabet[(v >> 12) & 63];
        out[o++] = base64_url_alphabet[(v >> 6) & 63];
    }
    assert(o == BASE64_URL_ENCODED_LEN(len));
    out[o] = 0;
    return (int)o;
}

/* Value of one character, or -1. */
static int base64_url_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

int base64_url_decode(const char *text, size_t len, uint8_t *out, size_t cap)
{
    assert(text || len == 0);
    if (len % 4 == 1 || len > (size_t)INT_MAX) return -1;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > cap) return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = base64_url_value((unsigned char)text[i]);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero: otherwise two texts would decode alike. */
    if (acc != 0) return -1;
    assert(o == need);
    return (int)o;
}
