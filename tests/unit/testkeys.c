/* testkeys.c: see testkeys.h. */
#include "testkeys.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void testkeys_ed25519(uint8_t priv[32], uint8_t pub[32])
{
    gnutls_privkey_t k;
    gnutls_datum_t x = {0}, d = {0};
    gnutls_ecc_curve_t curve;
    if (gnutls_privkey_init(&k) != 0 ||
        gnutls_privkey_generate(k, GNUTLS_PK_EDDSA_ED25519,
                                GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_ED25519), 0) != 0 ||
        gnutls_privkey_export_ecc_raw2(k, &curve, &x, NULL, &d, 0) != 0 || x.size != 32 ||
        d.size != 32) {
        fprintf(stderr, "key generation failed\n");
        exit(2);
    }
    memcpy(pub, x.data, 32);
    memcpy(priv, d.data, 32);
    gnutls_free(x.data);
    gnutls_free(d.data);
    gnutls_privkey_deinit(k);
}

void testkeys_hex(char *out, const uint8_t *in, size_t n)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", in[i]);
}

void testkeys_unhex(uint8_t *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned v = 0;
        sscanf(in + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}
