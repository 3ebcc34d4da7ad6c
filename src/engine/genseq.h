/* genseq.h - the per-sequence state of a generation, shared by
 * kiln_generate (generate.c) and the continuous-batching scheduler
 * (sched.c): the sampler with its penalties' window, the stop-string
 * matcher, the incremental UTF-8 decoder and the piece/text buffers that
 * turn sampled ids into deliverable text.
 *
 * Invariants: every buffer is allocated by genseq_init, sized from the
 * model's longest token piece and the longest stop string, so sampling and
 * detokenizing never allocate. Once a stop string has completed, nothing
 * more is delivered (genseq_detok and genseq_flush return 0). A genseq is
 * used by one thread at a time; a zeroed one may be passed to genseq_free.
 */
#ifndef KILN_ENGINE_GENSEQ_H
#define KILN_ENGINE_GENSEQ_H

#include "kiln.h"
#include "text/sampler.h"
#include "text/tok_spm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct genseq {
    const kiln_model *m;
    sampler *smp;
    stop_matcher *stop;
    char *piece; /* piece_cap bytes: one token's piece */
    char *text;  /* the piece as whole UTF-8 */
    char *out;   /* the text safe to deliver: what genseq_detok/flush wrote */
    size_t piece_cap;
    tok_utf8_stream utf8;
    bool stopped; /* a stop string completed */
};

/* Defined in generate.c: an upper bound on kiln_token_to_piece's result for
 * any id of decoder m. */
size_t engine_model_max_piece(const kiln_model *m);

/* A control token: one whose text shows only when specials are rendered. */
struct engine_special {
    int32_t id;
    uint32_t len;
    char text[48];
};

/* Defined in generate.c: model m's control tokens, found once at load,
 * sorted by first byte and, within one, longest first; *first gets 257
 * offsets: the tokens starting with byte b are [first[b], first[b + 1]). */
const struct engine_special *engine_model_specials(const kiln_model *m, const uint32_t **first);

/* Defined in generate.c: len less the bytes of text[0..len) m's tokenizer
 * may drop (tok_spm_drop_bytes, tok_bpe_drop_bytes); a lower bound of the
 * bytes its tokens stand for. One pass over text, none when nothing drops. */
size_t engine_counted_bytes(const kiln_model *m, const char *text, size_t len);

/* Defined in generate.c: kiln_tokenize that gives up as soon as the text is
 * certain to need more than max tokens - before tokenizing, when
 * kiln_tokens_at_least says so, else while tokenizing (BPE
 * stops after the word that passed max) - returning KILN_ERR_RANGE with
 * *n_ids a lower bound of the count (> max). max SIZE_MAX: no limit.
 * Otherwise as kiln_tokenize (cap and *n_ids). */
kiln_status engine_tokenize_max(const kiln_model *m, const char *text, size_t len, bool add_special,
                                size_t max, int32_t *ids, size_t cap, size_t *n_ids);

/* The sampler's parameters taken from p's sampling settings. */
struct sampler_params genseq_sampler_params(const kiln_gen_params *p);

/* Sets up g for decoder m with p's sampling parameters and stop strings
 * (both copied; p is not kept) and records the prompt ids[0..n) in the
 * penalties' window. Errors: the sampler's (KILN_ERR_INVALID_ARG naming a
 * bad parameter or logit bias), KILN_ERR_NOMEM. On error g holds what was
 * made; genseq_free releases it. */
kiln_status genseq_init(struct genseq *g, const kiln_model *m, const kiln_gen_params *p,
                        const int32_t *ids, int32_t n);

/* Samples the next token from logits[0..n_vocab) and records it in the
 * penalties' window. */
int32_t genseq_sample(struct genseq *g, const float *logits);

/* Detokenizes id and writes the text now safe to deliver (whole UTF-8, less
 * any tail that may start a stop string) to g->out; returns its length.
 * Sets *hit when a stop string completed (the text before it is in out). */
size_t genseq_detok(struct genseq *g, int32_t id, bool *hit);

/* Ends the stream: writes the held-back text (an incomplete UTF-8 sequence
 * as U+FFFD, text held for the stop strings) to g->out and returns its
 * length; 0 after a stop string. */
size_t genseq_flush(struct genseq *g);

void genseq_free(struct genseq *g);

#endif
