/* sampler.h - choosing the next token from a vector of logits, and finding
 * stop strings in the generated text.
 *
 * The chain, applied in this order: logit bias (added; -inf bans a token),
 * then the penalties over the last repeat_last_n accepted tokens, each
 * distinct token once: the repetition penalty (a positive logit is divided
 * by it, a negative one multiplied) and OpenAI's presence and frequency
 * penalties (logit -= presence * [count > 0] + frequency * count, count being
 * the token's occurrences in the window). With temp <= 0 it is greedy: the
 * argmax of the biased, penalized logits, the lowest id winning a tie.
 * Otherwise top-k, top-p (nucleus), min-p, temperature, then a draw from the
 * remaining distribution with the sampler's seeded generator (splitmix64:
 * the same seed and inputs give the same tokens on every machine).
 *
 * Cost per token is linear in the vocabulary: top-k and top-p use selection
 * by partitioning (expected O(n)), never a full sort; the penalties touch
 * only the window's tokens, counted in a small hash map rebuilt per draw
 * (O(repeat_last_n)). All scratch is allocated by sampler_create; sampling
 * never allocates. A sampler is used by one thread at a time.
 */
#ifndef KILN_TEXT_SAMPLER_H
#define KILN_TEXT_SAMPLER_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sampler_params {
    float temp;           /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;
    uint64_t seed;
    float presence_penalty;            /* 0: off */
    float frequency_penalty;           /* 0: off */
    const kiln_logit_bias *logit_bias; /* n_logit_bias entries; copied by sampler_create */
    int32_t n_logit_bias;
};

typedef struct sampler sampler;

/* A sampler for n_vocab logits. NULL and *st on failure (bad parameters or a
 * logit bias for a token outside the vocabulary: KILN_ERR_INVALID_ARG naming
 * it; KILN_ERR_NOMEM). */
sampler *sampler_create(int32_t n_vocab, const struct sampler_params *p, kiln_status *st);
void sampler_free(sampler *s);

/* Forgets the accepted tokens and reseeds the generator with p->seed. */
void sampler_reset(sampler *s);

/* Records a token (prompt or generated) for the penalties' window. */
void sampler_accept(sampler *s, int32_t id);

/* The next token for logits[0..n_vocab) (not modified). */
int32_t sampler_sample(sampler *s, const float *logits);

/* The index of the largest of x[0..n), the lowest index on a tie. n >= 1. */
int32_t sampler_argmax(const float *x, int32_t n);

/* ---- stop strings ----
 *
 * A stop_matcher watches a stream of text (the detokenized output, fed in
 * pieces of any size) for any of a set of stop strings, which may span
 * pieces. It passes text through, except that it holds back a tail that
 * could still become the start of a stop string until later text decides;
 * when a stop string completes, the text before it is released and the stop
 * string and everything after it are dropped. Created with its strings
 * (copied); used by one thread at a time. */
typedef struct stop_matcher stop_matcher;

/* A matcher for strs[0..n) (NUL-terminated; empty ones are ignored). NULL
 * and *st on failure (KILN_ERR_NOMEM). n may be 0: it then passes everything. */
stop_matcher *stop_create(const char *const *strs, int32_t n, kiln_status *st);
void stop_free(stop_matcher *m);
/* Forgets held text and a completed match. */
void stop_reset(stop_matcher *m);
/* The longest stop string's length: the most text stop_feed may hold back. */
size_t stop_max_len(const stop_matcher *m);

/* Feeds len bytes. Writes the text now safe to emit to out, which must have
 * room for stop_max_len(m) + len bytes, and returns its length. Sets *hit
 * when a stop string completed (then out ends just before it, and later
 * calls emit nothing until stop_reset). */
size_t stop_feed(stop_matcher *m, const char *in, size_t len, char *out, bool *hit);
/* Ends the stream: writes the held-back text (at most stop_max_len(m)
 * bytes) to out and returns its length. */
size_t stop_flush(stop_matcher *m, char *out);

#endif
