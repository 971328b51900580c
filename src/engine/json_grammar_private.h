/* json_grammar_private.h: the compiled form of a schema, shared by
 * json_schema.c (which builds it) and json_grammar.c (which follows it);
 * nothing else includes it. */
#ifndef LLMESH_JSON_GRAMMAR_PRIVATE_H
#define LLMESH_JSON_GRAMMAR_PRIVATE_H

#include <stdint.h>

#include "engine/json_grammar.h"

/* What a node admits. */
enum {
    JN_ANY,      /* any JSON value */
    JN_OBJECT,   /* an object: closed (its properties, in order) or free (any keys, any values) */
    JN_ARRAY,    /* items of node `items`, count in [min, max] */
    JN_STRING,   /* characters in [min, max] */
    JN_NUMBER,
    JN_INTEGER,
    JN_BOOLEAN,
    JN_NULL,
    JN_ENUM,     /* one of the literals [first, first + count) */
    JN_ANYOF,    /* one of the nodes alts[first .. first + count) */
};

typedef struct {
    uint8_t kind;
    uint8_t closed;      /* object: only its properties */
    int32_t first;       /* object: first key literal (props follow in order); enum: first
                            literal; anyOf: first entry in alts */
    int32_t count;       /* properties, literals or alternatives */
    int32_t items;       /* array: item node */
    int32_t min, max;    /* array items or string characters; max < 0: none */
    uint64_t required;   /* object: bit i = property i is required */
    int32_t props;       /* object: first entry in prop_nodes (property i's node) */
} jg_node;

typedef struct {
    char *bytes;
    uint32_t len;
} jg_literal;

/* Literals every grammar has, at these indices. */
enum { JG_LIT_TRUE, JG_LIT_FALSE, JG_LIT_NULL, JG_LIT_FIXED };

struct json_grammar {
    jg_node *nodes;
    int n_nodes, cap_nodes;
    jg_literal *lits;
    int n_lits, cap_lits;
    int32_t *alts;       /* anyOf entries */
    int n_alts, cap_alts;
    int32_t *prop_nodes; /* object property nodes */
    int n_prop_nodes, cap_prop_nodes;
    int root;
    int any;             /* a JN_ANY node (items and values of free containers) */
};

/* Builders (json_schema.c): -1 out of room (a bound or memory). */
int jg_add_node(json_grammar *g, const jg_node *n);
int jg_add_literal(json_grammar *g, const char *bytes, size_t len);
json_grammar *jg_new(void);

#endif
