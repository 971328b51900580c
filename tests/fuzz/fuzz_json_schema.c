/* fuzz_json_schema.c: libFuzzer target for the JSON schema compiler and the
 * matcher it feeds (engine/json_grammar.h).
 *
 * The input is a schema. When it compiles, the grammar is exercised: a few
 * fixed JSON texts are fed byte by byte, and a short generation walks the
 * token mask over a small vocabulary (structural tokens, digits, letters,
 * keywords, partial UTF-8), always taking the first admitted token, and
 * checks that every admitted token is really fed without refusal. Errors are
 * fine; crashes, sanitizer reports, leaks, hangs and a mask that admits a
 * token the matcher then refuses are bugs. Without libFuzzer,
 * tests/fuzz/replay_main.c replays tests/fuzz/corpus/json_schema as a test.
 * Dictionary: tests/fuzz/dict/json_schema.dict (libFuzzer -dict=). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_grammar.h"

static const char *const texts[] = {
    "{\"a\": 1, \"b\": [true, null, \"x\\u00e9\"]}", "\"abc\"", "12.5e-3", "[[], {}, [1, 2]]",
    "null", "{\"name\":\"bob\",\"age\":42}", "-0", "[\"a\",\"b\",\"c\"]",
};

static const char *const vocab[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\":", "\",", "{\"", " ", "\n  ", "0", "1", "-", ".", "e",
    "12", "true", "false", "null", "a", "b", "name", "\\", "\\u", "00e9", "\xc3", "\xa9", "é", "x",
};
#define N_VOCAB ((int)(sizeof vocab / sizeof vocab[0]))

static int vocab_bytes(void *ctx, int32_t id, char *out, size_t cap)
{
    (void)ctx;
    size_t n = strlen(vocab[id]);
    memcpy(out, vocab[id], n < cap ? n : cap);
    return (int)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256];
    json_grammar *g = json_grammar_from_schema((const char *)data, size, err, sizeof err);
    if (!g) return 0;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        json_match *m = json_match_new(g);
        for (const char *p = texts[i]; m && *p && json_match_feed(m, p, 1) == 0; p++) {}
        if (m) (void)json_match_accepting(m);
        json_match_free(m);
    }
    static json_vocab *v;
    if (!v) v = json_vocab_new(N_VOCAB, vocab_bytes, NULL);
    json_match *m = json_match_new(g);
    uint8_t allowed[N_VOCAB];
    for (int step = 0; m && v && step < 64 && !json_match_done(m); step++) {
        if (json_match_mask(m, v, allowed) <= 0) break;
        int pick = (step * 7 + (int)size) % N_VOCAB;
        while (!allowed[pick]) pick = (pick + 1) % N_VOCAB;
        if (json_match_feed(m, vocab[pick], strlen(vocab[pick])) != 0) abort(); /* mask lied */
    }
    json_match_free(m);
    json_grammar_free(g);
    return 0;
}
