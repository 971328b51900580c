/* json_schema.c: compiles a JSON schema (the subset docs/constrained-output.md
 * lists) into the node graph json_grammar.c follows.
 *
 * The schema is outside input (a request's response_format or a tool's
 * parameters): its size, node count, nesting, properties, enum values and
 * literal lengths are bounded (json_grammar.h), and every keyword is either
 * implemented, a known annotation that cannot change what is valid (title,
 * description, ...), or an error naming it: a constraint the grammar could
 * not enforce is never dropped silently.
 *
 * Decisions: properties are generated in the schema's order (required ones
 * always, optional ones maybe); additionalProperties true (or absent) next
 * to properties admits no other keys, which is narrower than the schema but
 * always valid; oneOf is followed as anyOf (the outputs differ only when the
 * alternatives overlap); $ref resolves "#/$defs/NAME" and
 * "#/definitions/NAME" (recursion allowed: a reference becomes the node its
 * definition compiles to, compiled once).
 *
 * Threading: any; nothing global. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/json_grammar_private.h"

/* ---- building blocks -------------------------------------------------------*/

static int grow(void **p, int *cap, int need, size_t size)
{
    if (need <= *cap) return 0;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * size);
    if (!q) return -1;
    *p = q;
    *cap = nc;
    return 0;
}

int jg_add_node(json_grammar *g, const jg_node *n)
{
    if (g->n_nodes >= JSON_GRAMMAR_MAX_NODES ||
        grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes))
        return -1;
    g->nodes[g->n_nodes] = *n;
    return g->n_nodes++;
}

int jg_add_literal(json_grammar *g, const char *bytes, size_t len)
{
    if (len == 0 || len > JSON_GRAMMAR_MAX_LITERAL ||
        grow((void **)&g->lits, &g->cap_lits, g->n_lits + 1, sizeof *g->lits))
        return -1;
    char *copy = malloc(len);
    if (!copy) return -1;
    memcpy(copy, bytes, len);
    g->lits[g->n_lits] = (jg_literal){copy, (uint32_t)len};
    return g->n_lits++;
}

json_grammar *jg_new(void)
{
    json_grammar *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    atomic_init(&g->refs, 1);
    if (jg_add_literal(g, "true", 4) != JG_LIT_TRUE || jg_add_literal(g, "false", 5) != JG_LIT_FALSE ||
        jg_add_literal(g, "null", 4) != JG_LIT_NULL) {
        json_grammar_free(g);
        return NULL;
    }
    jg_node any = {.kind = JN_ANY, .max = -1, .items = -1};
    g->any = jg_add_node(g, &any);
    any.items = g->any;
    g->nodes[g->any] = any;
    return g;
}

json_grammar *json_grammar_retain(json_grammar *g)
{
    if (g) atomic_fetch_add(&g->refs, 1);
    return g;
}

void json_grammar_free(json_grammar *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) > 1) return;
    for (int i = 0; i < g->n_lits; i++) free(g->lits[i].bytes);
    free(g->lits);
    free(g->nodes);
    free(g->alts);
    free(g->prop_nodes);
    free(g);
}

json_grammar *json_grammar_object(char *err, size_t errlen)
{
    json_grammar *g = jg_new();
    jg_node obj = {.kind = JN_OBJECT, .max = -1, .items = -1};
    if (!g || (g->root = jg_add_node(g, &obj)) < 0) {
        json_grammar_free(g);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return g;
}

/* ---- the compiler ----------------------------------------------------------*/

typedef struct {
    json_grammar *g;
    const cJSON *doc;      /* the whole schema, for $ref */
    char *err;
    size_t errlen;
    /* $ref memo: a definition's object and the node it compiled to */
    const cJSON *ref_obj[JSON_GRAMMAR_MAX_NODES / 8];
    int ref_node[JSON_GRAMMAR_MAX_NODES / 8];
    int n_refs;
} compiler;

static int fail(compiler *c, const char *fmt, const char *what)
{
    snprintf(c->err, c->errlen, fmt, what);
    return -1;
}

static int compile(compiler *c, const cJSON *s, int depth);

/* Keywords that describe a schema without changing what is valid. */
static const char *const annotations[] = {
    "title", "description", "$schema", "$id", "$comment", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "$defs", "definitions", NULL,
};

/* Keywords compiled here. */
static const char *const implemented[] = {
    "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
    "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", NULL,
};

static int in_list(const char *const *l, const char *s)
{
    for (; *l; l++)
        if (!strcmp(*l, s)) return 1;
    return 0;
}

/* A non-negative integer keyword, or def when absent. */
static int opt_count(compiler *c, const cJSON *s, const char *name, int def, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s, name);
    *out = def;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6 || v->valuedouble != (int)v->valuedouble)
        return fail(c, "schema keyword '%s' must be a non-negative integer (at most 1000000)", name);
    *out = (int)v->valuedouble;
    return 0;
}

/* A literal for a JSON value as generation must write it (cJSON's compact
 * form), or -1. */
static int value_literal(compiler *c, const cJSON *v)
{
    char *text = cJSON_PrintUnformatted(v);
    if (!text) return fail(c, "%s", "out of memory");
    int id = jg_add_literal(c->g, text, strlen(text));
    free(text);
    if (id < 0)
        return fail(c, "an enum or const value is longer than %s bytes, or there are too many",
                    "1024");
    return id;
}

static int compile_enum(compiler *c, const cJSON *values, int is_const)
{
    int n = is_const ? 1 : cJSON_GetArraySize(values);
    if (!is_const && (!cJSON_IsArray(values) || n < 1 || n > JSON_GRAMMAR_MAX_ENUM))
        return fail(c, "schema keyword 'enum' must be an array of 1 to %s values", "64");
    jg_node node = {.kind = JN_ENUM, .first = c->g->n_lits, .count = n, .items = -1, .max = -1};
    for (int i = 0; i < n; i++) {
        const cJSON *v = is_const ? values : cJSON_GetArrayItem(values, i);
        if (value_literal(c, v) < 0) return -1;
    }
    int id = jg_add_node(c->g, &node);
    return id < 0 ? fail(c, "the schema has more than %s nodes", "2048") : id;
}

/* One node that matches any of kids[0, n) (n >= 1; just kids[0] when n is 1).
 * The node id, or -1 with the reason in c. */
static int any_of(compiler *c, const int32_t *kids, int n)
{
    if (n == 1) return kids[0];
    json_grammar *g = c->g;
    if (grow((void **)&g->alts, &g->cap_alts, g->n_alts + n, sizeof *g->alts))
        return fail(c, "%s", "out of memory");
    jg_node node = {.kind = JN_ANYOF, .first = g->n_alts, .count = n, .items = -1, .max = -1};
    memcpy(g->alts + g->n_alts, kids, sizeof(int32_t) * (size_t)n);
    g->n_alts += n;
    int id = jg_add_node(g, &node);
    return id < 0 ? fail(c, "the schema has more than %s nodes", "2048") : id;
}

static int compile_alternatives(compiler *c, const cJSON *list, const char *name, int depth)
{
    int n = cJSON_GetArraySize(list);
    if (!cJSON_IsArray(list) || n < 1 || n > JSON_GRAMMAR_MAX_ENUM)
        return fail(c, "schema keyword '%s' must be an array of 1 to 64 schemas", name);
    int32_t kids[JSON_GRAMMAR_MAX_ENUM];
    for (int i = 0; i < n; i++) {
        kids[i] = compile(c, cJSON_GetArrayItem(list, i), depth + 1);
        if (kids[i] < 0) return -1;
    }
    return any_of(c, kids, n);
}

static int compile_object(compiler *c, const cJSON *s, int depth)
{
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(s, "additionalProperties");
    if (props && !cJSON_IsObject(props)) return fail(c, "schema keyword '%s' must be an object", "properties");
    if (req && !cJSON_IsArray(req)) return fail(c, "schema keyword '%s' must be an array of names", "required");
    if (add && !cJSON_IsBool(add) && !(cJSON_IsObject(add) && !add->child))
        return fail(c, "schema keyword '%s' is supported as true, false or {} only", "additionalProperties");
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (n > JSON_GRAMMAR_MAX_PROPS) return fail(c, "an object schema has more than %s properties", "64");
    json_grammar *g = c->g;
    jg_node node = {.kind = JN_OBJECT, .items = -1, .max = -1};
    node.closed = n > 0 || cJSON_IsFalse(add);
    if (!node.closed) { /* any keys, any values */
        int id = jg_add_node(g, &node);
        return id < 0 ? fail(c, "the schema has more than %s nodes", "2048") : id;
    }
    /* Every required name must be a property: the grammar writes only those. */
    const cJSON *r;
    cJSON_ArrayForEach(r, req) {
        if (!cJSON_IsString(r)) return fail(c, "schema keyword '%s' must be an array of names", "required");
        if (!cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
            return fail(c, "required property '%.200s' is not among the schema's properties", r->valuestring);
    }
    node.first = g->n_lits;
    node.count = n;
    int i = 0;
    const cJSON *p;
    cJSON_ArrayForEach(p, props) {
        cJSON *key = cJSON_CreateString(p->string);
        int lit = key ? value_literal(c, key) : fail(c, "%s", "out of memory");
        cJSON_Delete(key);
        if (lit < 0) return -1;
        cJSON_ArrayForEach(r, req)
            if (!strcmp(r->valuestring, p->string)) node.required |= 1ull << i;
        i++;
    }
    int32_t kids[JSON_GRAMMAR_MAX_PROPS];
    i = 0;
    cJSON_ArrayForEach(p, props) {
        kids[i] = compile(c, p, depth + 1);
        if (kids[i] < 0) return -1;
        i++;
    }
    if (grow((void **)&g->prop_nodes, &g->cap_prop_nodes, g->n_prop_nodes + n, sizeof *g->prop_nodes))
        return fail(c, "%s", "out of memory");
    node.props = g->n_prop_nodes;
    /* An object without properties has no kids, and prop_nodes may still
     * be NULL: NULL + 0 is undefined (found by fuzz_api). */
    if (n > 0) memcpy(g->prop_nodes + g->n_prop_nodes, kids, sizeof(int32_t) * (size_t)n);
    g->n_prop_nodes += n;
    int id = jg_add_node(g, &node);
    return id < 0 ? fail(c, "the schema has more than %s nodes", "2048") : id;
}

/* One type name with the schema's other keywords. */
static int compile_type(compiler *c, const cJSON *s, const char *type, int depth)
{
    jg_node node = {.items = -1, .max = -1};
    if (!strcmp(type, "object")) return compile_object(c, s, depth);
    if (!strcmp(type, "array")) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        node.kind = JN_ARRAY;
        if (opt_count(c, s, "minItems", 0, &node.min) || opt_count(c, s, "maxItems", -1, &node.max)) return -1;
        if (node.max >= 0 && node.min > node.max) return fail(c, "%s", "minItems is above maxItems");
        node.items = items ? compile(c, items, depth + 1) : c->g->any;
        if (node.items < 0) return -1;
    } else if (!strcmp(type, "string")) {
        node.kind = JN_STRING;
        if (opt_count(c, s, "minLength", 0, &node.min) || opt_count(c, s, "maxLength", -1, &node.max)) return -1;
        if (node.max >= 0 && node.min > node.max) return fail(c, "%s", "minLength is above maxLength");
    } else if (!strcmp(type, "number")) {
        node.kind = JN_NUMBER;
    } else if (!strcmp(type, "integer")) {
        node.kind = JN_INTEGER;
    } else if (!strcmp(type, "boolean")) {
        node.kind = JN_BOOLEAN;
    } else if (!strcmp(type, "null")) {
        node.kind = JN_NULL;
    } else {
        return fail(c, "schema type '%.64s' is not a JSON schema type", type);
    }
    int id = jg_add_node(c->g, &node);
    return id < 0 ? fail(c, "the schema has more than %s nodes", "2048") : id;
}

static int compile_ref(compiler *c, const cJSON *ref, int depth)
{
    if (!cJSON_IsString(ref)) return fail(c, "schema keyword '%s' must be a string", "$ref");
    const char *r = ref->valuestring, *name;
    const cJSON *defs;
    if (!strncmp(r, "#/$defs/", 8)) {
        defs = cJSON_GetObjectItemCaseSensitive(c->doc, "$defs");
        name = r + 8;
    } else if (!strncmp(r, "#/definitions/", 14)) {
        defs = cJSON_GetObjectItemCaseSensitive(c->doc, "definitions");
        name = r + 14;
    } else if (!strcmp(r, "#")) {
        defs = NULL;
        name = NULL;
    } else {
        return fail(c, "$ref '%.200s' is not supported (only #, #/$defs/NAME and #/definitions/NAME)", r);
    }
    const cJSON *target = name ? cJSON_GetObjectItemCaseSensitive(defs, name) : c->doc;
    if (!target) return fail(c, "$ref '%.200s' names no definition", r);
    for (int i = 0; i < c->n_refs; i++)
        if (c->ref_obj[i] == target) return c->ref_node[i];
    if (c->n_refs >= (int)(sizeof c->ref_obj / sizeof c->ref_obj[0]))
        return fail(c, "the schema has more than %s distinct $ref targets", "256");
    /* Reserve the node first, so that a recursive reference finds it: an
     * anyOf of one alternative, patched once the definition is compiled. */
    json_grammar *g = c->g;
    if (grow((void **)&g->alts, &g->cap_alts, g->n_alts + 1, sizeof *g->alts))
        return fail(c, "%s", "out of memory");
    int slot = g->n_alts++;
    jg_node fwd = {.kind = JN_ANYOF, .first = slot, .count = 1, .items = -1, .max = -1};
    int id = jg_add_node(g, &fwd);
    if (id < 0) return fail(c, "the schema has more than %s nodes", "2048");
    c->ref_obj[c->n_refs] = target;
    c->ref_node[c->n_refs++] = id;
    int body = compile(c, target, depth + 1);
    if (body < 0) return -1;
    if (body == id) return fail(c, "$ref '%.200s' refers to itself", r);
    c->g->alts[slot] = body;
    return id;
}

static int compile(compiler *c, const cJSON *s, int depth)
{
    if (depth > JSON_GRAMMAR_MAX_SCHEMA_DEPTH) return fail(c, "the schema is nested more than %s deep", "32");
    if (cJSON_IsTrue(s) || (cJSON_IsObject(s) && !s->child)) return c->g->any;
    if (!cJSON_IsObject(s)) return fail(c, "%s", "a schema must be an object (or true)");
    const cJSON *k;
    cJSON_ArrayForEach(k, s) {
        if (in_list(implemented, k->string) || in_list(annotations, k->string)) continue;
        return fail(c, "schema keyword '%.64s' is not supported (docs/constrained-output.md lists "
                       "those that are)", k->string);
    }
    const cJSON *ref = cJSON_GetObjectItemCaseSensitive(s, "$ref");
    const cJSON *en = cJSON_GetObjectItemCaseSensitive(s, "enum");
    const cJSON *cn = cJSON_GetObjectItemCaseSensitive(s, "const");
    const cJSON *any = cJSON_GetObjectItemCaseSensitive(s, "anyOf");
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(s, "oneOf");
    const cJSON *all = cJSON_GetObjectItemCaseSensitive(s, "allOf");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(s, "type");
    /* One way to say what the value is: combining them would need an
     * intersection of grammars, which this compiler does not do. */
    int ways = !!ref + !!(en || cn) + !!any + !!one + !!all;
    if (ways > 1 || (ways == 1 && type && !en && !cn))
        return fail(c, "%s", "a schema combining $ref, enum/const, anyOf, oneOf, allOf (or one of "
                             "them with 'type') is not supported");
    if (ref) return compile_ref(c, ref, depth);
    if (cn) return compile_enum(c, cn, 1);
    if (en) return compile_enum(c, en, 0);
    if (any) return compile_alternatives(c, any, "anyOf", depth);
    if (one) return compile_alternatives(c, one, "oneOf", depth);
    if (all) {
        if (!cJSON_IsArray(all) || cJSON_GetArraySize(all) != 1)
            return fail(c, "schema keyword '%s' is supported with exactly one schema", "allOf");
        return compile(c, all->child, depth + 1);
    }
    if (!type) { /* by the keywords present, else anything */
        if (cJSON_GetObjectItemCaseSensitive(s, "properties") ||
            cJSON_GetObjectItemCaseSensitive(s, "additionalProperties") ||
            cJSON_GetObjectItemCaseSensitive(s, "required"))
            return compile_object(c, s, depth);
        if (cJSON_GetObjectItemCaseSensitive(s, "items")) return compile_type(c, s, "array", depth);
        if (cJSON_GetObjectItemCaseSensitive(s, "minLength") || cJSON_GetObjectItemCaseSensitive(s, "maxLength"))
            return compile_type(c, s, "string", depth);
        return c->g->any;
    }
    if (cJSON_IsString(type)) return compile_type(c, s, type->valuestring, depth);
    int n = cJSON_GetArraySize(type);
    if (!cJSON_IsArray(type) || n < 1 || n > 7)
        return fail(c, "schema keyword '%s' must be a type name or an array of them", "type");
    int32_t kids[7];
    for (int i = 0; i < n; i++) {
        const cJSON *t = cJSON_GetArrayItem(type, i);
        if (!cJSON_IsString(t)) return fail(c, "schema keyword '%s' must be a type name or an array of them", "type");
        if ((kids[i] = compile_type(c, s, t->valuestring, depth)) < 0) return -1;
    }
    return any_of(c, kids, n);
}

json_grammar *json_grammar_from_schema(const char *schema, size_t len, char *err, size_t errlen)
{
    if (len > JSON_GRAMMAR_MAX_SCHEMA) {
        snprintf(err, errlen, "the schema is %zu bytes; at most %u are accepted", len, JSON_GRAMMAR_MAX_SCHEMA);
        return NULL;
    }
    cJSON *doc = cJSON_ParseWithLength(schema, len);
    if (!doc) {
        snprintf(err, errlen, "the schema is not valid JSON");
        return NULL;
    }
    compiler *c = calloc(1, sizeof *c);
    json_grammar *g = jg_new();
    if (!c || !g) {
        snprintf(err, errlen, "out of memory");
        free(c);
        json_grammar_free(g);
        cJSON_Delete(doc);
        return NULL;
    }
    *c = (compiler){.g = g, .doc = doc, .err = err, .errlen = errlen};
    g->root = compile(c, doc, 0);
    free(c);
    cJSON_Delete(doc);
    if (g->root < 0) {
        json_grammar_free(g);
        return NULL;
    }
    return g;
}
