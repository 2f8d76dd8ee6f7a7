/*
 * grammar: constrained decoding over bytes. A grammar is a set of rules, each a small
 * automaton whose edges read one byte from a range, take no input (epsilon), or call another
 * rule (push the return node, run the callee, pop). Together they are one pushdown
 * automaton over bytes; regular expressions, GBNF grammars (engine/gbnf.c), JSON Schema
 * (server/structured.c) and literal choices all compile to it through struct gram_builder.
 *
 * A struct gram_matcher runs one output against a grammar. Its state is a set of threads
 * (node, stack); stacks are hash-consed frames, so equal stacks are equal ids and a state
 * is a small, deduplicated list. Advancing by a byte steps every thread and closes the set
 * under epsilon, call and return edges.
 *
 * Token masks (gm_fill_mask): which vocabulary tokens keep the output valid. The vocabulary
 * is a byte trie (struct gram_vocab, built once per tokenizer). For every "root" thread of
 * the state (one that no other thread of the set derives by epsilon or call) the mask is
 *   accepted(node)  | { t in uncertain(node) : t's bytes are accepted from (node, stack) },
 * where accepted/uncertain are computed once per (grammar, node) by walking the whole trie
 * from the node with an unknown stack: a token is accepted when its bytes stay inside the
 * rule's own context (or leave it exactly at its last byte), uncertain when reading it
 * needs to return below the node's frame. This is the split behind XGrammar's adaptive
 * token-mask cache: the context-independent part is a stored bitmask, only the few
 * context-dependent tokens are checked against the real stack at each step (sorted, so that
 * tokens sharing a prefix share the work).
 *
 * Threads: a grammar is immutable once built, except its per-node mask cache, whose entries
 * are built outside the grammar's own mutex (a trie walk must not hold up other threads'
 * cached masks) and stored under it; grammars are shared by reference count across
 * threads. A matcher belongs to one thread at a time; a vocabulary is read-only.
 */
#ifndef VLM_GRAMMAR_H
#define VLM_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ==== Building ==== */

/* A piece of automaton with one entry node s and one exit node e (Thompson construction).
 * Every fragment is used exactly once (sequencing or alternating it consumes it). */
struct gfrag {
    int32_t s, e;
};

struct gram_builder;

/* Limits: a grammar above these is refused by gb_finish (the message says which). */
#define GRAM_MAX_NODES (1 << 20)
#define GRAM_MAX_RULES (1 << 16)

struct gram_builder *gb_new(void);
void gb_free(struct gram_builder *b); /* NULL ok; only for a builder not passed to gb_finish */

/* True once the builder ran past a limit; gb_finish then fails. Callers building big
 * repetitions check it to stop early. */
bool gb_full(const struct gram_builder *b);

struct gfrag gb_empty(struct gram_builder *b);
struct gfrag gb_range(struct gram_builder *b, uint8_t lo, uint8_t hi); /* one byte in [lo, hi] */
/* One byte whose bit is set in set[0..256). An all-zero set matches nothing. */
struct gfrag gb_byteset(struct gram_builder *b, const uint8_t set[256]);
struct gfrag gb_lit(struct gram_builder *b, const char *s, size_t n); /* n bytes */
struct gfrag gb_seq(struct gram_builder *b, struct gfrag x, struct gfrag y);
struct gfrag gb_alt(struct gram_builder *b, struct gfrag x, struct gfrag y);
struct gfrag gb_star(struct gram_builder *b, struct gfrag x);
struct gfrag gb_plus(struct gram_builder *b, struct gfrag x);
struct gfrag gb_opt(struct gram_builder *b, struct gfrag x);
/* Any one UTF-8 encoded character of U+0080 and above (well-formed, no surrogates). */
struct gfrag gb_utf8_nonascii(struct gram_builder *b);

/* Raw nodes and epsilon edges, for automata that are not series-parallel (JSON objects with
 * optional members): a fragment may be any pair of nodes. */
int32_t gb_node(struct gram_builder *b);
void gb_eps(struct gram_builder *b, int32_t from, int32_t to);

/* A hint for counted repetitions: node's token masks are the same as those of node as,
 * for any vocabulary whose longest token has at most horizon bytes (the caller guarantees
 * that no path of fewer than horizon bytes from either node tells them apart: positions far
 * from the end of a long {m,n} count). Masks then share one cache entry instead of one walk
 * of the vocabulary per position. */
void gb_same_mask(struct gram_builder *b, int32_t node, int32_t as, int32_t horizon);

/* Rules: declare first (so that bodies may call rules defined later, or themselves), then
 * define once. gb_call makes a fragment that runs the rule and comes back. */
int32_t gb_rule(struct gram_builder *b);
void gb_define(struct gram_builder *b, int32_t rule, struct gfrag body);
struct gfrag gb_call(struct gram_builder *b, int32_t rule);

/* Regular expressions (Python re syntax, the subset listed in docs/HTTP.md, "Structured
 * outputs"): literals, ., [...] classes, \d \w \s \D \W \S and escaped punctuation,
 * groups (...) (?:...) (?P<n>...), |, * + ? {m} {m,} {m,n} (lazy forms too), ^ at the start
 * and $ at the end. */
enum {
    GB_RE_SEARCH = 1, /* JSON Schema "pattern": a match anywhere (re.search), not the whole */
    GB_RE_JSON = 2,   /* the text is inside a JSON string: characters appear JSON-escaped */
};
/* Compiles re[0..n) into *out. 0, or -1 with a message in err[0..errlen). */
int gb_regex(struct gram_builder *b, const char *re, size_t n, int flags, struct gfrag *out,
             char *err, size_t errlen);

/* EBNF grammars in the GBNF notation (llama.cpp's; vLLM's "grammar" field): rules
 * `name ::= alternatives`, the start rule named root. Names are letters, digits, '-' and
 * '_'; a rule runs until the next `name ::=`. Expressions: "strings" and [classes]
 * ([^...] negated, a-z ranges) with the escapes \n \t \r \\ \" \xHH \uHHHH \UHHHHHHHH and
 * escaped punctuation, '.' (any character), rule names, ( groups ), alternation |,
 * postfix * + ? {m} {m,} {m,n} {,n}; # comments. Characters are Unicode code points, matched
 * as UTF-8. Left recursion is refused (the message names the cycle of rules). Adds the
 * rules to b and sets *root to the root rule's id (for gb_finish). 0, or -1 with a message
 * (syntax errors say the line and column) in err[0..errlen). */
int gb_gbnf(struct gram_builder *b, const char *text, size_t n, int32_t *root, char *err,
            size_t errlen);

/* For the grammar parsers (the regex compiler, engine/gbnf.c): decodes the UTF-8 character
 * at u[0..n) into *cp and returns its length in bytes, or -1 for malformed input (a bad or
 * truncated sequence, an overlong form, a surrogate, above U+10FFFF, or n == 0). */
int gram_utf8_decode(const uint8_t *u, size_t n, uint32_t *cp);

struct grammar;

/* Freezes the builder with rule root as the start symbol and frees it (whatever the result).
 * Refuses a grammar over the limits or with left recursion (a rule that can reach a call of
 * itself without reading a byte). Returns the grammar (one reference) or NULL with a message
 * in err. */
struct grammar *gb_finish(struct gram_builder *b, int32_t root, char *err, size_t errlen);

void grammar_retain(struct grammar *g);
void grammar_release(struct grammar *g); /* NULL ok; the last reference frees */
int32_t grammar_n_nodes(const struct grammar *g);

/* ==== Vocabulary ==== */

struct gram_vocab;

/* A byte trie over tokens[0..n): tokens[i] has bytes[i][0..lens[i]); a token with no bytes
 * (NULL or length 0: special tokens, ids that name nothing) never appears in a mask. The
 * strings are copied. */
struct gram_vocab *gv_new(int32_t n, const char *const *bytes, const size_t *lens);
void gv_free(struct gram_vocab *v); /* NULL ok */
int32_t gv_size(const struct gram_vocab *v);
/* Words of a mask over this vocabulary: (size + 31) / 32. */
int32_t gv_mask_words(const struct gram_vocab *v);

/* ==== Matching ==== */

struct gram_matcher;

/* A matcher at the start of g (takes a reference on g). NULL on allocation failure. */
struct gram_matcher *gm_new(struct grammar *g);
void gm_free(struct gram_matcher *m); /* NULL ok */

/* Feeds bytes; true and the state advanced if all of them keep the output a prefix of the
 * language, else false and the state unchanged. */
bool gm_accept_bytes(struct gram_matcher *m, const uint8_t *s, size_t n);
/* The output so far is a complete sentence (EOS may come now). */
bool gm_can_end(const struct gram_matcher *m);
/* The output is complete and nothing may follow: the sequence must stop. */
bool gm_done(const struct gram_matcher *m);
/* Writes the mask of tokens of v that may come next into bits (gv_mask_words(v) words; bit
 * t%32 of word t/32). EOS is not the matcher's business: add it when gm_can_end. Returns the
 * number of tokens allowed, or -1 on allocation failure (bits then unspecified). */
int32_t gm_fill_mask(struct gram_matcher *m, const struct gram_vocab *v, uint32_t *bits);
/* True when every part of the next gm_fill_mask is cached (the grammar's per-state entries
 * for v exist): the fill costs the warm figure, not a walk of the vocabulary trie. Safe
 * while other threads fill masks from the same grammar. */
bool gm_mask_cached(const struct gram_matcher *m, const struct gram_vocab *v);
/* Feeds token t of v; same as gm_accept_bytes of its bytes (false for a token without). */
bool gm_accept_token(struct gram_matcher *m, const struct gram_vocab *v, int32_t t);

#endif
