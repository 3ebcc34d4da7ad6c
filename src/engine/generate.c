/* generate.c - the public model/context/generation API of kiln.h: loading a
 * model (GGUF file, tokenizer, forward-pass bindings), contexts (KV cache,
 * thread pool, logits buffer) and the prompt -> tokens -> prefill ->
 * sample/decode -> detokenize loop with per-stage timings.
 *
 * Invariants: a kiln_model owns its gguf_file, which outlives the tokenizer
 * and the llama bindings that borrow from it; a kiln_ctx owns its pool,
 * llama_ctx and a logits buffer of n_vocab floats. Per-generation buffers
 * (prompt ids, sampler, piece and text buffers) are allocated once per call,
 * never per token.
 */
#include "base/status.h"
#include "base/time.h"
#include "compute/threadpool.h"
#include "kiln.h"
#include "model/gguf.h"
#include "model/llama.h"
#include "text/sampler.h"
#include "model/vocab.h"
#include "text/tok_spm.h"

#include <stdlib.h>
#include <string.h>

struct kiln_model {
    gguf_file *f;
    llama_model *lm;
    tok_spm *tok;
};

struct kiln_ctx {
    const kiln_model *m;
    kiln_pool *pool;
    llama_ctx *lc;
    float *logits;
};

kiln_model *kiln_model_load(const char *path, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (!(m->f = gguf_open(path, &s))) goto fail;
    if (!(m->lm = llama_model_load(m->f, &s))) goto fail;
    if (!(m->tok = vocab_load_spm(m->f, &s))) goto fail;
    if (tok_spm_n_vocab(m->tok) != (int32_t)m->lm->hp->n_vocab) {
        s = kiln_fail(KILN_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model %u", path,
                      tok_spm_n_vocab(m->tok), m->lm->hp->n_vocab);
        goto fail;
    }
    if (st) *st = KILN_OK;
    return m;
fail:
    kiln_model_free(m);
    if (st) *st = s;
    return NULL;
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    tok_spm_free(m->tok);
    llama_model_free(m->lm);
    gguf_close(m->f);
    free(m);
}

int32_t kiln_model_n_vocab(const kiln_model *m) {
    return (int32_t)m->lm->hp->n_vocab;
}
int32_t kiln_model_n_ctx_train(const kiln_model *m) {
    return (int32_t)m->lm->hp->n_ctx_train;
}
const char *kiln_model_arch(const kiln_model *m) {
    return m->lm->hp->arch->name;
}
int32_t kiln_token_bos(const kiln_model *m) {
    return tok_spm_bos(m->tok);
}
int32_t kiln_token_eos(const kiln_model *m) {
    return tok_spm_eos(m->tok);
}
int kiln_token_is_eog(const kiln_model *m, int32_t id) {
    return tok_spm_is_eog(m->tok, id);
}

kiln_status kiln_tokenize(const kiln_model *m, const char *text, size_t len, int add_special,
                          int32_t *ids, size_t cap, size_t *n_ids) {
    return tok_spm_encode(m->tok, text, len, add_special != 0, ids, cap, n_ids);
}

size_t kiln_token_to_piece(const kiln_model *m, int32_t id, int special, char *buf, size_t cap) {
    return tok_spm_piece(m->tok, id, special != 0, buf, cap);
}

/* ---- contexts ---- */

kiln_ctx_params kiln_ctx_default_params(void) {
    return (kiln_ctx_params){.n_ctx = 0, .n_batch = 0, .n_threads = 0};
}

kiln_ctx *kiln_ctx_create(const kiln_model *m, const kiln_ctx_params *p, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_ctx_params d = p ? *p : kiln_ctx_default_params();
    kiln_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        s = kiln_fail(KILN_ERR_NOMEM, "context: out of memory");
        goto fail;
    }
    if (d.n_ctx < 0 || d.n_batch < 0 || d.n_threads < 0) {
        s = kiln_fail(KILN_ERR_RANGE,
                      "context: n_ctx %d, n_batch %d and n_threads %d must not "
                      "be negative",
                      d.n_ctx, d.n_batch, d.n_threads);
        goto fail;
    }
    if (d.n_ctx == 0) d.n_ctx = kiln_model_n_ctx_train(m) < 4096 ? kiln_model_n_ctx_train(m) : 4096;
    if (d.n_batch == 0) d.n_batch = 512;
    c->m = m;
    if (!(c->pool = kiln_pool_create(d.n_threads, &s))) goto fail;
    if (!(c->lc = llama_ctx_create(m->lm, d.n_ctx, d.n_batch, c->pool, &s))) goto fail;
    c->logits = malloc((size_t)kiln_model_n_vocab(m) * sizeof *c->logits);
    if (!c->logits) {
        s = kiln_fail(KILN_ERR_NOMEM, "context: out of memory for logits");
        goto fail;
    }
    if (st) *st = KILN_OK;
    return c;
fail:
    kiln_ctx_free(c);
    if (st) *st = s;
    return NULL;
}

void kiln_ctx_free(kiln_ctx *c) {
    if (!c) return;
    free(c->logits);
    llama_ctx_free(c->lc);
    kiln_pool_destroy(c->pool);
    free(c);
}

int32_t kiln_ctx_n_ctx(const kiln_ctx *c) {
    return llama_ctx_n_ctx(c->lc);
}
int32_t kiln_ctx_n_threads(const kiln_ctx *c) {
    return kiln_pool_size(c->pool);
}
int32_t kiln_ctx_n_past(const kiln_ctx *c) {
    return llama_ctx_n_past(c->lc);
}
void kiln_ctx_reset(kiln_ctx *c) {
    llama_ctx_reset(c->lc);
}

kiln_status kiln_decode(kiln_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                        int all_logits) {
    return llama_decode(c->lc, tokens, n, logits, all_logits != 0);
}

/* ---- generation ---- */

kiln_gen_params kiln_gen_default_params(void) {
    return (kiln_gen_params){.n_predict = 128,
                             .stop_at_eog = 1,
                             .sampling = {.temp = 0.8f,
                                          .top_k = 40,
                                          .top_p = 0.95f,
                                          .min_p = 0.05f,
                                          .repeat_penalty = 1.0f,
                                          .repeat_last_n = 64,
                                          .seed = 0}};
}

/* State of one kiln_generate call. */
struct gen {
    kiln_ctx *c;
    const kiln_gen_params *p;
    kiln_gen_stats *st;
    int32_t *ids;
    sampler *smp;
    char *piece, *text;
    size_t piece_cap;
    tok_utf8_stream utf8;
};

static kiln_status tokenize_prompt(struct gen *g, const char *prompt, size_t len) {
    double t0 = kiln_now_s();
    size_t n;
    if (len > SIZE_MAX / sizeof(int32_t) - 2)
        return kiln_fail(KILN_ERR_RANGE, "generate: prompt of %zu bytes is too long", len);
    if (!(g->ids = malloc((len + 2) * sizeof *g->ids)))
        return kiln_fail(KILN_ERR_NOMEM, "generate: out of memory for the prompt");
    kiln_status s = kiln_tokenize(g->c->m, prompt, len, 1, g->ids, len + 2, &n);
    g->st->t_tokenize += kiln_now_s() - t0;
    if (s) return s;
    int32_t n_ctx = kiln_ctx_n_ctx(g->c);
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "generate: the prompt has no tokens");
    if (n > (size_t)n_ctx)
        return kiln_fail(KILN_ERR_RANGE,
                         "generate: the prompt is %zu tokens, longer than the context of %d "
                         "tokens",
                         n, n_ctx);
    g->st->n_prompt = (int32_t)n;
    return KILN_OK;
}

static kiln_status prepare(struct gen *g) {
    const struct kiln_sampling *sp = &g->p->sampling;
    struct sampler_params par = {sp->temp,           sp->top_k,         sp->top_p, sp->min_p,
                                 sp->repeat_penalty, sp->repeat_last_n, sp->seed};
    kiln_status s;
    if (!(g->smp = sampler_create(kiln_model_n_vocab(g->c->m), &par, &s))) return s;
    for (int32_t i = 0; i < g->st->n_prompt; i++) sampler_accept(g->smp, g->ids[i]);
    g->piece_cap = tok_spm_max_piece(g->c->m->tok);
    g->piece = malloc(g->piece_cap);
    g->text = malloc(TOK_UTF8_OUT_MAX(g->piece_cap));
    if (!g->piece || !g->text) return kiln_fail(KILN_ERR_NOMEM, "generate: out of memory");
    return KILN_OK;
}

/* Detokenizes id and hands its text to the callback; returns its verdict. */
static int emit_token(struct gen *g, int32_t id, kiln_token_fn on_token, void *user) {
    double t0 = kiln_now_s();
    size_t n = kiln_token_to_piece(g->c->m, id, 0, g->piece, g->piece_cap);
    size_t w = tok_utf8_feed(&g->utf8, g->piece, n < g->piece_cap ? n : g->piece_cap, g->text);
    g->st->t_detok += kiln_now_s() - t0;
    return on_token ? on_token(user, id, g->text, w) : 0;
}

static kiln_status run_loop(struct gen *g, kiln_token_fn on_token, void *user) {
    kiln_ctx *c = g->c;
    double t0 = kiln_now_s();
    kiln_status s = kiln_decode(c, g->ids, g->st->n_prompt, c->logits, 0);
    g->st->t_prefill += kiln_now_s() - t0;
    if (s) return s;
    for (int32_t i = 0; i < g->p->n_predict; i++) {
        t0 = kiln_now_s();
        int32_t id = sampler_sample(g->smp, c->logits);
        sampler_accept(g->smp, id);
        g->st->t_sample += kiln_now_s() - t0;
        if (g->p->stop_at_eog && kiln_token_is_eog(c->m, id)) break;
        g->st->n_gen++;
        if (emit_token(g, id, on_token, user)) break;
        if (i + 1 == g->p->n_predict || kiln_ctx_n_past(c) >= kiln_ctx_n_ctx(c)) break;
        t0 = kiln_now_s();
        s = kiln_decode(c, &id, 1, c->logits, 0);
        g->st->t_decode += kiln_now_s() - t0;
        if (s) return s;
    }
    size_t w = tok_utf8_flush(&g->utf8, g->text);
    if (w && on_token) on_token(user, -1, g->text, w);
    return KILN_OK;
}

kiln_status kiln_generate(kiln_ctx *c, const char *prompt, size_t len, const kiln_gen_params *p,
                          kiln_token_fn on_token, void *user, kiln_gen_stats *stats) {
    kiln_gen_stats local;
    kiln_gen_params dflt = kiln_gen_default_params();
    struct gen g = {.c = c, .p = p ? p : &dflt, .st = stats ? stats : &local};
    memset(g.st, 0, sizeof *g.st);
    kiln_ctx_reset(c);
    kiln_status s = tokenize_prompt(&g, prompt, len);
    if (!s) s = prepare(&g);
    if (!s) s = run_loop(&g, on_token, user);
    free(g.ids);
    sampler_free(g.smp);
    free(g.piece);
    free(g.text);
    return s;
}
