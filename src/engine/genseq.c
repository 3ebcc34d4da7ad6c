/* genseq.c - the per-sequence generation state of genseq.h: sampler, stop
 * matcher and detokenization buffers of one generated sequence. */
#include "engine/genseq.h"

#include "base/status.h"

#include <stdlib.h>
#include <string.h>

struct sampler_params genseq_sampler_params(const kiln_gen_params *p) {
    const struct kiln_sampling *sp = &p->sampling;
    return (struct sampler_params){.temp = sp->temp,
                                   .top_k = sp->top_k,
                                   .top_p = sp->top_p,
                                   .min_p = sp->min_p,
                                   .repeat_penalty = sp->repeat_penalty,
                                   .repeat_last_n = sp->repeat_last_n,
                                   .seed = sp->seed,
                                   .presence_penalty = sp->presence_penalty,
                                   .frequency_penalty = sp->frequency_penalty,
                                   .logit_bias = sp->logit_bias,
                                   .n_logit_bias = sp->n_logit_bias};
}

kiln_status genseq_init(struct genseq *g, const kiln_model *m, const kiln_gen_params *p,
                        const int32_t *ids, int32_t n) {
    struct sampler_params par = genseq_sampler_params(p);
    kiln_status s;
    memset(g, 0, sizeof *g);
    g->m = m;
    if (!(g->smp = sampler_create(kiln_model_n_vocab(m), &par, &s))) return s;
    if (!(g->stop = stop_create(p->stop, p->n_stop > 0 ? p->n_stop : 0, &s))) return s;
    for (int32_t i = 0; i < n; i++) sampler_accept(g->smp, ids[i]);
    g->piece_cap = engine_model_max_piece(m);
    g->piece = malloc(g->piece_cap);
    g->text = malloc(TOK_UTF8_OUT_MAX(g->piece_cap));
    g->out = malloc(TOK_UTF8_OUT_MAX(g->piece_cap) + stop_max_len(g->stop));
    if (!g->piece || !g->text || !g->out)
        return kiln_fail(KILN_ERR_NOMEM, "generate: out of memory for the text buffers");
    return KILN_OK;
}

int32_t genseq_sample(struct genseq *g, const float *logits) {
    int32_t id = sampler_sample(g->smp, logits);
    sampler_accept(g->smp, id);
    return id;
}

size_t genseq_detok(struct genseq *g, int32_t id, bool *hit) {
    *hit = false;
    if (g->stopped) return 0;
    size_t n = kiln_token_to_piece(g->m, id, 0, g->piece, g->piece_cap);
    size_t w = tok_utf8_feed(&g->utf8, g->piece, n < g->piece_cap ? n : g->piece_cap, g->text);
    w = stop_feed(g->stop, g->text, w, g->out, hit);
    if (*hit) g->stopped = true;
    return w;
}

size_t genseq_flush(struct genseq *g) {
    if (g->stopped) return 0;
    size_t w = tok_utf8_flush(&g->utf8, g->text);
    bool hit = false;
    w = stop_feed(g->stop, g->text, w, g->out, &hit);
    if (hit)
        g->stopped = true;
    else
        w += stop_flush(g->stop, g->out + w);
    return w;
}

void genseq_free(struct genseq *g) {
    sampler_free(g->smp);
    stop_free(g->stop);
    free(g->piece);
    free(g->text);
    free(g->out);
    memset(g, 0, sizeof *g);
}
