/* fuzz_stage.c: the pipeline's frame decoders (serve/stage_wire.h) on
 * arbitrary bytes: every decoder gets every input. */
#include <stdlib.h>
#include <string.h>

#include "serve/stage_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256], msg[STAGE_MAX_MESSAGE + 1];
    stage_assign a;
    if (stage_decode_assign(data, size, &a, err, sizeof err) == 0 &&
        (a.first >= a.end || a.end > a.n_layer || a.stage >= a.n_stages))
        abort();
    stage_status st;
    if (stage_decode_status(data, size, &st, err, sizeof err) == 0 && st.fetched_bytes > st.total_bytes)
        abort();
    stage_stats ss;
    (void)stage_decode_stats(data, size, &ss, err, sizeof err);
    uint16_t lane;
    if (stage_decode_message(data, size, &lane, msg, sizeof msg, err, sizeof err) == 0 &&
        strlen(msg) > STAGE_MAX_MESSAGE)
        abort();
    stage_hello h;
    (void)stage_decode_hello(data, size, &h, err, sizeof err);
    static const uint32_t widths[] = {1, 3, 8, 64};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        stage_states s;
        if (stage_decode_states(data, size, widths[i], &s, err, sizeof err) == 0) {
            if (s.data < data || s.data + s.data_len != data + size) abort();
            if (s.data_len != (size_t)s.n_rows * widths[i] * stage_dtype_size(s.dtype)) abort();
            uint32_t rows = 0;
            if (s.n_pieces > STAGE_MAX_PIECES) abort();
            for (int k = 0; k < s.n_pieces; k++) {
                if (s.pieces[k].n < 1 || s.pieces[k].lane >= STAGE_MAX_LANES || s.pieces[k].rows > 2) abort();
                for (int j = 0; j < k; j++)
                    if (s.pieces[j].lane == s.pieces[k].lane) abort();
                rows += s.pieces[k].n;
            }
            if (rows != s.n_rows || rows > STAGE_MAX_TOKENS || s.n_trail > STAGE_MAX_TRAIL) abort();
        }
    }
    return 0;
}
