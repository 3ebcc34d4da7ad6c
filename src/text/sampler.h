/* sampler.h - choosing the next token from a vector of logits.
 *
 * The chain, applied in this order when temp > 0: repetition penalty over
 * the last repeat_last_n accepted tokens (each distinct token once: a
 * positive logit is divided by the penalty, a negative one multiplied),
 * top-k, top-p (nucleus), min-p, temperature, then a draw from the
 * remaining distribution with the sampler's seeded generator. With temp <= 0
 * it is greedy: the argmax after the penalty, the lowest id winning a tie.
 *
 * Cost is linear in the vocabulary: top-k and top-p use selection by
 * partitioning (expected O(n)), never a full sort. All scratch is allocated
 * by sampler_create; sampling never allocates. A sampler is used by one
 * thread at a time.
 */
#ifndef KILN_TEXT_SAMPLER_H
#define KILN_TEXT_SAMPLER_H

#include "kiln.h"

#include <stdint.h>

struct sampler_params {
    float temp;           /* <= 0: greedy */
    int32_t top_k;        /* <= 0: off */
    float top_p;          /* >= 1: off */
    float min_p;          /* <= 0: off */
    float repeat_penalty; /* 1: off */
    int32_t repeat_last_n;
    uint64_t seed;
};

typedef struct sampler sampler;

/* A sampler for n_vocab logits. NULL and *st on failure (bad parameters:
 * KILN_ERR_INVALID_ARG naming the parameter; KILN_ERR_NOMEM). */
sampler *sampler_create(int32_t n_vocab, const struct sampler_params *p, kiln_status *st);
void sampler_free(sampler *s);

/* Forgets the accepted tokens and reseeds the generator with p->seed. */
void sampler_reset(sampler *s);

/* Records a token (prompt or generated) for the repetition penalty. */
void sampler_accept(sampler *s, int32_t id);

/* The next token for logits[0..n_vocab) (not modified). */
int32_t sampler_sample(sampler *s, const float *logits);

/* The index of the largest of x[0..n), the lowest index on a tie. n >= 1. */
int32_t sampler_argmax(const float *x, int32_t n);

#endif
