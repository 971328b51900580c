/* test_json_grammar.c: the schema compiler (supported keywords, refusals
 * that name the keyword), the matcher (valid texts admitted, invalid ones
 * refused, byte by byte), and the token mask against a brute-force check of
 * every token, followed by random generation that must always end in JSON
 * that parses and fits the schema. */
#include "testlib.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_grammar.h"

static json_grammar *schema(const char *text)
{
    char err[256];
    json_grammar *g = json_grammar_from_schema(text, strlen(text), err, sizeof err);
    if (!g) fprintf(stderr, "  schema: %s\n", err);
    return g;
}

/* 1 when the whole text is admitted and is a complete value. */
static int admits(const json_grammar *g, const char *text)
{
    json_match *m = json_match_new(g);
    int ok = json_match_feed(m, text, strlen(text)) == 0 && json_match_accepting(m);
    json_match_free(m);
    return ok;
}

static const char person[] =
    "{\"type\": \"object\", \"title\": \"person\", \"properties\": {"
    "\"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 5, \"description\": \"who\"},"
    "\"age\": {\"type\": \"integer\"},"
    "\"tags\": {\"type\": \"array\", \"items\": {\"enum\": [\"a\", \"b\"]}, \"maxItems\": 2},"
    "\"pet\": {\"anyOf\": [{\"type\": \"string\", \"maxLength\": 3}, {\"type\": \"null\"}]}},"
    "\"required\": [\"name\", \"age\"], \"additionalProperties\": false}";

static void test_compile_refusals(void)
{
    static const struct { const char *schema, *named; } cases[] = {
        {"{\"type\": \"string\", \"pattern\": \"^a\"}", "'pattern'"},
        {"{\"type\": \"string\", \"format\": \"date-time\"}", "'format'"},
        {"{\"type\": \"number\", \"minimum\": 3}", "'minimum'"},
        {"{\"type\": \"object\", \"properties\": {\"a\": {}}, \"required\": [\"b\"]}", "'b'"},
        {"{\"type\": \"thing\"}", "'thing'"},
        {"{\"$ref\": \"http://example.com/s.json\"}", "$ref"},
        {"{\"$ref\": \"#/$defs/missing\"}", "names no definition"},
        {"{\"type\": \"object\", \"additionalProperties\": {\"type\": \"string\"}}", "additionalProperties"},
        {"{\"allOf\": [{}, {}]}", "allOf"},
        {"{\"type\": \"string\", \"enum\": []}", "enum"},
        {"[1]", "must be an object"},
        {"{\"type\": \"string\"", "not valid JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        json_grammar *g = json_grammar_from_schema(cases[i].schema, strlen(cases[i].schema), err, sizeof err);
        CHECK(g == NULL);
        if (!strstr(err, cases[i].named)) fprintf(stderr, "  case %zu: %s\n", i, err);
        CHECK(strstr(err, cases[i].named) != NULL);
        json_grammar_free(g);
    }
    /* Nesting is bounded. */
    char deep[4096] = "";
    for (int i = 0; i < 40; i++) strcat(deep, "{\"type\": \"array\", \"items\": ");
    strcat(deep, "{}");
    for (int i = 0; i < 40; i++) strcat(deep, "}");
    char err[256];
    CHECK(json_grammar_from_schema(deep, strlen(deep), err, sizeof err) == NULL);
}

static void test_schema_matching(void)
{
    json_grammar *g = schema(person);
    REQUIRE(g);
    CHECK(admits(g, "{\"name\":\"bob\",\"age\":42}"));
    CHECK(admits(g, "{\"name\": \"bob\", \"age\": -7, \"tags\": [\"a\", \"b\"], \"pet\": null}"));
    CHECK(admits(g, "{\n  \"name\": \"b\\u00e9\",\n  \"age\": 0,\n  \"pet\": \"cat\"\n}"));
    CHECK(admits(g, "{\"name\":\"\xc3\xa9t\xc3\xa9\",\"age\":1}"));   /* 3 characters, 5 bytes */
    CHECK(!admits(g, "{\"age\":42,\"name\":\"bob\"}"));            /* schema order */
    CHECK(!admits(g, "{\"name\":\"bobbyb\",\"age\":42}"));         /* maxLength */
    CHECK(!admits(g, "{\"name\":\"\",\"age\":42}"));               /* minLength */
    CHECK(!admits(g, "{\"name\":\"bob\"}"));                       /* age required */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":4.5}"));           /* integer */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":1,\"tags\":[\"a\",\"a\",\"b\"]}")); /* maxItems */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":1,\"tags\":[\"c\"]}"));              /* enum */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":1,\"x\":1}"));      /* no other keys */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":1,}"));             /* trailing comma */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":01}"));             /* leading zero */
    CHECK(!admits(g, "{\"name\":\"bob\",\"age\":1} "));             /* nothing after the root */
    CHECK(!admits(g, "{\"name\":\"b\x01\",\"age\":1}"));            /* control byte */
    CHECK(!admits(g, "{\"name\":\"\xff\",\"age\":1}"));             /* not UTF-8 */
    /* Well-formed UTF-8 only (a decoder would turn each byte of the others
     * into U+FFFD, past maxLength): the edges of RFC 3629's table. */
    CHECK(admits(g, "{\"name\":\"\xe0\xa0\x80\xed\x9f\xbf\",\"age\":1}"));         /* U+0800, U+D7FF */
    CHECK(admits(g, "{\"name\":\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\",\"age\":1}")); /* U+10000, U+10FFFF */
    CHECK(!admits(g, "{\"name\":\"\xe0\x80\x80\",\"age\":1}"));  /* overlong */
    CHECK(!admits(g, "{\"name\":\"\xed\xa0\x80\",\"age\":1}"));  /* surrogate */
    CHECK(!admits(g, "{\"name\":\"\xf0\x8f\xbf\xbf\",\"age\":1}")); /* overlong */
    CHECK(!admits(g, "{\"name\":\"\xf4\x90\x80\x80\",\"age\":1}")); /* past U+10FFFF */
    CHECK(!admits(g, "{\"name\":\"\xc0\xaf\",\"age\":1}"));       /* overlong '/' */
    CHECK(!admits(g, "{                 \"name\":\"b\",\"age\":1}")); /* whitespace run bound */
    /* A prefix is admitted but not accepting; the closed value is done. */
    json_match *m = json_match_new(g);
    CHECK(json_match_feed(m, "{\"name\":\"b\",\"age\":12", 19) == 0);
    CHECK(!json_match_accepting(m) && !json_match_done(m));
    CHECK(json_match_feed(m, "x", 1) == -1);                 /* refused: unchanged */
    CHECK(json_match_feed(m, "}", 1) == 0);
    CHECK(json_match_accepting(m) && json_match_done(m));
    json_match_free(m);
    json_grammar_free(g);

    /* Enum values that are prefixes of one another; root numbers. */
    g = schema("{\"enum\": [1, 12, \"x\", {\"a\": true}]}");
    REQUIRE(g);
    CHECK(admits(g, "1") && admits(g, "12") && admits(g, "\"x\"") && admits(g, "{\"a\":true}"));
    CHECK(!admits(g, "123") && !admits(g, "2") && !admits(g, "{\"a\": true}"));
    json_grammar_free(g);

    /* $defs and recursion. */
    g = schema("{\"$defs\": {\"node\": {\"type\": \"object\", \"properties\": {\"v\": {\"type\": \"integer\"},"
               "\"next\": {\"anyOf\": [{\"$ref\": \"#/$defs/node\"}, {\"type\": \"null\"}]}},"
               "\"required\": [\"v\", \"next\"]}}, \"$ref\": \"#/$defs/node\"}");
    REQUIRE(g);
    CHECK(admits(g, "{\"v\":1,\"next\":{\"v\":2,\"next\":null}}"));
    CHECK(!admits(g, "{\"v\":1,\"next\":{\"v\":2}}"));
    json_grammar_free(g);

    /* A reference cycle that consumes nothing admits nothing, and ends. */
    g = schema("{\"$defs\": {\"a\": {\"$ref\": \"#/$defs/b\"}, \"b\": {\"anyOf\": [{\"$ref\": \"#/$defs/a\"},"
               "{\"$ref\": \"#/$defs/a\"}]}}, \"$ref\": \"#/$defs/a\"}");
    if (g) {
        CHECK(!admits(g, "1"));
        json_grammar_free(g);
    }
}

static void test_json_object(void)
{
    char err[256];
    json_grammar *g = json_grammar_object(err, sizeof err);
    REQUIRE(g);
    CHECK(admits(g, "{}"));
    CHECK(admits(g, "{\"a\": [1, 2.5e-3, {\"b\": null}, true, false, \"s\\n\"], \"c\": {}}"));
    CHECK(!admits(g, "[1]"));
    CHECK(!admits(g, "\"x\""));
    CHECK(!admits(g, "{\"a\":}"));
    CHECK(!admits(g, "{\"a\" 1}"));
    CHECK(!admits(g, "{\"a\":[1,]}"));
    CHECK(!admits(g, "{\"a\":tru}"));
    /* Nesting beyond the bound is refused, not overflowed. */
    char deep[64] = "{\"a\":";
    for (int i = 0; i < 20; i++) strcat(deep, "[");
    json_match *m = json_match_new(g);
    CHECK(json_match_feed(m, deep, strlen(deep)) == -1);
    json_match_free(m);
    json_grammar_free(g);
}

/* ---- masks -----------------------------------------------------------------*/

/* A small vocabulary with what makes masks hard: multi-byte tokens that
 * cross structure ("\":", "},"), quotes inside, partial UTF-8, whitespace
 * runs, digits, keywords, and a token with no bytes. */
static const char *const vocab[] = {
    "{", "}", "[", "]", ",", ":", "\"", "\":", "\",", "},", "\"}", "{\"", " ", "  ", "\n", "\n  ",
    "0", "1", "2", "12", "-", ".", "e", "5.", "true", "false", "null", "tr", "ue", "n", "ull",
    "a", "b", "name", "age", "tags", "pet", "cat", "bob", "\"name", "\"age", "\\", "\\n", "\\u",
    "00e9", "é", "\xc3", "\xa9", "\xe0", "\xa0\x80", "\x80\x80", "\xed\xa0", "hello world", "x\"y", "\x01", "", "\"a\"", "\"b\"", "nu", "ll",
    /* single letters, as a byte-level vocabulary has every byte: any
     * admitted prefix can then be finished */
    "c", "d", "f", "g", "h", "i", "j", "k", "l", "m", "o", "p", "q", "r", "s", "t", "u", "v", "w",
    "x", "y", "z", "3", "4", "6", "7", "8", "9", "E", "+",
};
#define N_VOCAB ((int)(sizeof vocab / sizeof vocab[0]))

static int vocab_bytes(void *ctx, int32_t id, char *out, size_t cap)
{
    (void)ctx;
    if (id < 0 || id >= N_VOCAB) return -1;
    size_t n = strlen(vocab[id]);
    memcpy(out, vocab[id], n < cap ? n : cap);
    return (int)n;
}

/* The mask equals feeding every token on its own to the same match. */
static int mask_is_exact(json_match *m, const json_grammar *g, const char *prefix, size_t plen,
                         const json_vocab *v, uint8_t *allowed)
{
    int n = json_match_mask(m, v, allowed), count = 0, exact = 1;
    for (int id = 0; id < N_VOCAB; id++) {
        json_match *probe = json_match_new(g);
        json_match_feed(probe, prefix, plen);
        int ok = vocab[id][0] && json_match_feed(probe, vocab[id], strlen(vocab[id])) == 0;
        json_match_free(probe);
        count += ok;
        if (ok != allowed[id]) {
            fprintf(stderr, "  after '%.*s': token '%s' brute %d mask %d\n", (int)plen, prefix, vocab[id], ok,
                    allowed[id]);
            exact = 0;
        }
    }
    return exact && count == n;
}

/* Random generation under the mask until the value is done: the text must
 * parse, and check() must hold for it. */
static void generate(const json_grammar *g, const json_vocab *v, unsigned seed, int (*check)(cJSON *))
{
    json_match *m = json_match_new(g);
    uint8_t allowed[N_VOCAB];
    char text[4096];
    size_t len = 0;
    int steps = 0, exact = 1;
    srand(seed);
    while (!json_match_done(m) && steps++ < 400) {
        exact &= mask_is_exact(m, g, text, len, v, allowed);
        int pick[N_VOCAB], n = 0;
        for (int id = 0; id < N_VOCAB; id++)
            if (allowed[id]) pick[n++] = id;
        /* Past 60 steps, prefer closing tokens so the walk ends. */
        if (n == 0) break;
        int id = pick[rand() % n];
        static const char *const closing[] = {"\"}", "\"", "}", "]", ":", "0", "null", NULL};
        for (int k = 0; steps > 60 && closing[k]; k++)
            {
                int found = -1;
                for (int t = 0; t < N_VOCAB && found < 0; t++)
                    if (allowed[t] && !strcmp(vocab[t], closing[k])) found = t;
                if (found >= 0) { id = found; break; }
            }
        size_t tl = strlen(vocab[id]);
        if (len + tl >= sizeof text) break;
        REQUIRE(json_match_feed(m, vocab[id], tl) == 0);
        memcpy(text + len, vocab[id], tl);
        len += tl;
    }
    text[len] = 0;
    CHECK(exact);
    CHECK(json_match_done(m));
    cJSON *j = cJSON_Parse(text);
    if (!j || !check(j)) fprintf(stderr, "  seed %u: %s\n", seed, text);
    CHECK(j && check(j));
    cJSON_Delete(j);
    json_match_free(m);
}

static int check_person(cJSON *j)
{
    cJSON *name = cJSON_GetObjectItem(j, "name"), *age = cJSON_GetObjectItem(j, "age");
    return cJSON_IsObject(j) && cJSON_IsString(name) && cJSON_IsNumber(age) &&
           age->valuedouble == (double)(long long)age->valuedouble;
}

static int check_object(cJSON *j) { return cJSON_IsObject(j); }

static void test_mask_matches_brute_force(void)
{
    json_vocab *v = json_vocab_new(N_VOCAB, vocab_bytes, NULL);
    REQUIRE(v);
    json_grammar *g = schema(person);
    REQUIRE(g);
    for (unsigned seed = 1; seed <= 20; seed++) generate(g, v, seed, check_person);
    json_grammar_free(g);
    char err[256];
    g = json_grammar_object(err, sizeof err);
    REQUIRE(g);
    for (unsigned seed = 1; seed <= 20; seed++) generate(g, v, seed, check_object);
    json_grammar_free(g);
    json_vocab_free(v);
}

int main(void)
{
    RUN(test_compile_refusals);
    RUN(test_schema_matching);
    RUN(test_json_object);
    RUN(test_mask_matches_brute_force);
    return testlib_finish();
}
