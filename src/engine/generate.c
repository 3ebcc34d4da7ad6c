/* generate.c - the public model/context/generation API of kiln.h: loading a
 * model (GGUF file, tokenizer, forward-pass bindings), contexts (KV cache,
 * thread pool, logits buffer) and the prompt -> tokens -> prefill ->
 * sample/decode -> detokenize loop with per-stage timings (the per-sequence
 * sampling and detokenization state is genseq.h's, shared with sched.c).
 *
 * Sequences (kiln_seq_*, kiln_decode_batch) map onto llama_ctx's slots;
 * sequence 0 is the one the single-sequence calls and generation use, and
 * the context remembers its tokens (cached) so a new prompt reuses the
 * longest common prefix, truncating the cache after it.
 *
 * Invariants: a kiln_model owns its gguf_file, which outlives the tokenizer
 * and the llama bindings that borrow from it; a kiln_ctx owns its pool,
 * llama_ctx, a logits buffer of n_vocab floats and cached[0..n_past of
 * sequence 0), the tokens sequence 0 holds. Per-generation buffers
 * (prompt ids, the genseq's sampler and buffers) are allocated once per call,
 * never per token.
 */
#include "base/status.h"
#include "base/time.h"
#include "compute/threadpool.h"
#include "kiln.h"
#include "model/gguf.h"
#include "engine/embed.h"
#include "engine/eval.h"
#include "engine/genseq.h"
#include "model/llama.h"
#include "obs/trace.h"
#include "text/sampler.h"
#include "model/vocab.h"
#include "text/tok_spm.h"

#include <stdlib.h>
#include <string.h>

struct kiln_model {
    gguf_file *f;
    llama_model *lm;
    tok_spm *tok;
    tok_bpe *bpe;   /* byte-level BPE vocabularies: set instead of tok */
    bert_model *bm; /* encoders (bert, nomic-bert): set instead of lm and tok */
    tok_wpm *wpm;
    struct engine_special *specials; /* control tokens (engine_model_specials) */
    uint32_t special_first[257];
};

/* Hyperparameters of either kind of model. */
static const struct arch_hparams *model_hp(const kiln_model *m) {
    return m->bm ? m->bm->hp : m->lm->hp;
}

const bert_model *engine_model_bert(const kiln_model *m) {
    return m->bm;
}
const tok_wpm *engine_model_wpm(const kiln_model *m) {
    return m->wpm;
}
const llama_model *engine_model_llama(const kiln_model *m) {
    return m->lm;
}
const gguf_file *engine_model_gguf(const kiln_model *m) {
    return m->f;
}
size_t engine_model_max_piece(const kiln_model *m) {
    return m->bpe ? tok_bpe_max_piece(m->bpe) : tok_spm_max_piece(m->tok);
}

struct kiln_ctx {
    const kiln_model *m;
    kiln_pool *pool;
    llama_ctx *lc;
    float *logits;
    int32_t *cached;                /* the n_past tokens in the KV cache, for prefix reuse */
    struct llama_batch_item *items; /* n_seq_max: kiln_decode_batch's items in llama's types */
};

static int special_order(const void *a, const void *b) {
    const struct engine_special *x = a, *y = b;
    unsigned char fx = (unsigned char)x->text[0], fy = (unsigned char)y->text[0];
    if (fx != fy) return fx < fy ? -1 : 1;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Collects m's control tokens (texts up to 48 bytes) into m->specials and
 * indexes them by first byte. */
static kiln_status find_specials(kiln_model *m) {
    size_t n = 0, cap = 0;
    int32_t nv = kiln_model_n_vocab(m);
    for (int32_t id = 0; id < nv; id++) {
        char buf[48], plain[1];
        size_t l = kiln_token_to_piece(m, id, 1, buf, sizeof buf);
        if (l == 0 || l > sizeof buf || kiln_token_to_piece(m, id, 0, plain, 0) != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            struct engine_special *p = realloc(m->specials, cap * sizeof *p);
            if (!p) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
            m->specials = p;
        }
        m->specials[n] = (struct engine_special){.id = id, .len = (uint32_t)l};
        memcpy(m->specials[n].text, buf, l);
        n++;
    }
    if (n) qsort(m->specials, n, sizeof *m->specials, special_order);
    size_t i = 0;
    for (int b = 0; b < 256; b++) {
        m->special_first[b] = (uint32_t)i;
        while (i < n && (unsigned char)m->specials[i].text[0] == b) i++;
    }
    m->special_first[256] = (uint32_t)n;
    return KILN_OK;
}

const struct engine_special *engine_model_specials(const kiln_model *m, const uint32_t **first) {
    *first = m->special_first;
    return m->specials;
}

kiln_model *kiln_model_load(const char *path, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    if (!(m->f = gguf_load(path, &s))) goto fail;
    int32_t n_tok;
    uint32_t n_vocab;
    if (embed_arch_is_encoder(m->f)) { /* the embeddings engine's model (embed.c) */
        if (!(m->bm = bert_model_load(m->f, &s)) || !(m->wpm = vocab_load_wpm(m->f, &s))) goto fail;
        n_tok = tok_wpm_n_vocab(m->wpm);
        n_vocab = m->bm->hp->n_vocab;
    } else {
        if (!(m->lm = llama_model_load(m->f, &s))) goto fail;
        if (vocab_is_bpe(m->f) ? !(m->bpe = vocab_load_bpe(m->f, &s))
                               : !(m->tok = vocab_load_spm(m->f, &s)))
            goto fail;
        n_tok = m->bpe ? tok_bpe_n_vocab(m->bpe) : tok_spm_n_vocab(m->tok);
        n_vocab = m->lm->hp->n_vocab;
    }
    if (n_tok != (int32_t)n_vocab) {
        s = kiln_fail(KILN_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model %u", path,
                      n_tok, n_vocab);
        goto fail;
    }
    if ((s = find_specials(m))) goto fail;
    gguf_prefault(m->f);
    if (st) *st = KILN_OK;
    return m;
fail:
    kiln_model_free(m);
    if (st) *st = s;
    return NULL;
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    free(m->specials);
    tok_wpm_free(m->wpm);
    bert_model_free(m->bm);
    tok_spm_free(m->tok);
    tok_bpe_free(m->bpe);
    llama_model_free(m->lm);
    gguf_close(m->f);
    free(m);
}

int32_t kiln_model_n_vocab(const kiln_model *m) {
    return (int32_t)model_hp(m)->n_vocab;
}
int32_t kiln_model_n_ctx_train(const kiln_model *m) {
    return (int32_t)model_hp(m)->n_ctx_train;
}
const char *kiln_model_arch(const kiln_model *m) {
    return model_hp(m)->arch->name;
}
int32_t kiln_token_bos(const kiln_model *m) {
    if (m->wpm) return tok_wpm_cls(m->wpm);
    if (m->bpe) return tok_bpe_bos(m->bpe);
    return tok_spm_bos(m->tok);
}
int32_t kiln_token_eos(const kiln_model *m) {
    if (m->wpm) return -1;
    if (m->bpe) return tok_bpe_eos(m->bpe);
    return tok_spm_eos(m->tok);
}
int kiln_token_is_eog(const kiln_model *m, int32_t id) {
    if (m->wpm) return 0;
    if (m->bpe) return tok_bpe_is_eog(m->bpe, id);
    return tok_spm_is_eog(m->tok, id);
}

kiln_status kiln_tokenize(const kiln_model *m, const char *text, size_t len, int add_special,
                          int32_t *ids, size_t cap, size_t *n_ids) {
    if (m->wpm) return tok_wpm_encode(m->wpm, text, len, add_special != 0, ids, cap, n_ids);
    if (m->bpe) return tok_bpe_encode(m->bpe, text, len, add_special != 0, false, ids, cap, n_ids);
    return tok_spm_encode(m->tok, text, len, add_special != 0, ids, cap, n_ids);
}

int32_t kiln_model_max_token_bytes(const kiln_model *m) {
    size_t l = m->wpm   ? 0 /* WordPiece drops whitespace */
               : m->bpe ? tok_bpe_max_token_bytes(m->bpe)
                        : tok_spm_max_token_bytes(m->tok);
    return l <= INT32_MAX ? (int32_t)l : 0;
}

size_t engine_counted_bytes(const kiln_model *m, const char *text, size_t len) {
    const uint8_t *drop = m->wpm   ? NULL
                          : m->bpe ? tok_bpe_drop_bytes(m->bpe)
                                   : tok_spm_drop_bytes(m->tok);
    if (!drop) return len;
    size_t dropped = 0;
    for (size_t i = 0; i < len; i++) dropped += drop[(unsigned char)text[i]];
    return len - (dropped < len ? dropped : len);
}

size_t kiln_tokens_at_least(const kiln_model *m, const char *text, size_t len) {
    size_t per = (size_t)kiln_model_max_token_bytes(m);
    if (per == 0) return 0;
    size_t counted = engine_counted_bytes(m, text, len);
    return counted / per + (counted % per != 0);
}

kiln_status engine_tokenize_max(const kiln_model *m, const char *text, size_t len, bool add_special,
                                size_t max, int32_t *ids, size_t cap, size_t *n_ids) {
    *n_ids = 0;
    size_t at_least = max != SIZE_MAX ? kiln_tokens_at_least(m, text, len) : 0;
    if (at_least > max) {
        *n_ids = at_least;
        return kiln_fail(KILN_ERR_RANGE,
                         "tokenize: %zu bytes of text need at least %zu tokens, more than %zu", len,
                         at_least, max);
    }
    if (m->bpe)
        return tok_bpe_encode_max(m->bpe, text, len, add_special, false, max, ids, cap, n_ids);
    if (m->tok) return tok_spm_encode_max(m->tok, text, len, add_special, max, ids, cap, n_ids);
    kiln_status s = kiln_tokenize(m, text, len, add_special, ids, cap, n_ids); /* WordPiece */
    if (s == KILN_OK && *n_ids > max)
        s = kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs %zu tokens, more than %zu", *n_ids,
                      max);
    return s;
}

size_t kiln_token_to_piece(const kiln_model *m, int32_t id, int special, char *buf, size_t cap) {
    if (m->wpm) return tok_wpm_piece(m->wpm, id, special != 0, buf, cap);
    if (m->bpe) return tok_bpe_piece(m->bpe, id, special != 0, buf, cap);
    return tok_spm_piece(m->tok, id, special != 0, buf, cap);
}

/* ---- contexts ---- */

kiln_ctx_params kiln_ctx_default_params(void) {
    return (kiln_ctx_params){.n_ctx = 0,
                             .n_batch = 0,
                             .n_threads = 0,
                             .type_k = KILN_TYPE_F16,
                             .type_v = KILN_TYPE_F16,
                             .n_seq_max = 1};
}

kiln_ctx *kiln_ctx_create(const kiln_model *m, const kiln_ctx_params *p, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_ctx_params d = p ? *p : kiln_ctx_default_params();
    kiln_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        s = kiln_fail(KILN_ERR_NOMEM, "context: out of memory");
        goto fail;
    }
    if (d.n_ctx < 0 || d.n_batch < 0 || d.n_threads < 0 || d.n_seq_max < 0) {
        s = kiln_fail(KILN_ERR_RANGE,
                      "context: n_ctx %d, n_batch %d, n_threads %d and n_seq_max %d must not "
                      "be negative",
                      d.n_ctx, d.n_batch, d.n_threads, d.n_seq_max);
        goto fail;
    }
    if (d.n_ctx == 0) d.n_ctx = kiln_model_n_ctx_train(m) < 4096 ? kiln_model_n_ctx_train(m) : 4096;
    if (d.n_batch == 0) d.n_batch = 512;
    if (d.n_seq_max == 0) d.n_seq_max = 1;
    c->m = m;
    if (!m->lm) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "context: '%s' is an encoder model; it makes embeddings (kiln_embed), "
                      "not text",
                      kiln_model_arch(m));
        goto fail;
    }
    if (!(c->pool = kiln_pool_create(d.n_threads, &s))) goto fail;
    struct llama_ctx_params lp = {.n_ctx = d.n_ctx,
                                  .n_batch = d.n_batch,
                                  .n_seq = d.n_seq_max,
                                  .type_k = d.type_k,
                                  .type_v = d.type_v};
    if (!(c->lc = llama_ctx_create(m->lm, &lp, c->pool, &s))) goto fail;
    c->logits = malloc((size_t)kiln_model_n_vocab(m) * sizeof *c->logits);
    c->cached = malloc((size_t)d.n_ctx * sizeof *c->cached);
    c->items = malloc((size_t)d.n_seq_max * sizeof *c->items);
    if (!c->logits || !c->cached || !c->items) {
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
    free(c->cached);
    free(c->items);
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
    int32_t past = llama_ctx_n_past(c->lc);
    kiln_status s = llama_decode(c->lc, tokens, n, logits, all_logits != 0);
    if (!s && n > 0) memcpy(c->cached + past, tokens, (size_t)n * sizeof *tokens);
    return s;
}

void kiln_ctx_memory(const kiln_ctx *c, uint64_t *kv_cache, uint64_t *compute) {
    llama_ctx_memory(c->lc, kv_cache, compute);
    if (compute) /* the logits of generation and the tokens of sequence 0 */
        *compute += (uint64_t)kiln_model_n_vocab(c->m) * sizeof(float) +
                    (uint64_t)kiln_ctx_n_ctx(c) * sizeof(int32_t) +
                    (uint64_t)kiln_ctx_n_seq_max(c) * sizeof(struct llama_batch_item);
}
kiln_type kiln_ctx_type_k(const kiln_ctx *c) {
    return llama_ctx_kv(c->lc)->type_k;
}
kiln_type kiln_ctx_type_v(const kiln_ctx *c) {
    return llama_ctx_kv(c->lc)->type_v;
}
int32_t kiln_ctx_n_batch(const kiln_ctx *c) {
    return llama_ctx_n_batch(c->lc);
}
int32_t kiln_ctx_n_seq_max(const kiln_ctx *c) {
    return llama_ctx_n_seq(c->lc);
}

/* ---- sequences ---- */

kiln_status kiln_seq_create(kiln_ctx *c, int32_t *seq) {
    return llama_seq_claim(c->lc, seq);
}
kiln_status kiln_seq_free(kiln_ctx *c, int32_t seq) {
    return llama_seq_release(c->lc, seq);
}
int32_t kiln_seq_n_past(const kiln_ctx *c, int32_t seq) {
    return llama_seq_n_past(c->lc, seq);
}
kiln_status kiln_seq_truncate(kiln_ctx *c, int32_t seq, int32_t n) {
    return llama_seq_truncate(c->lc, seq, n);
}

kiln_status kiln_decode_batch(kiln_ctx *c, const kiln_seq_batch *items, int32_t n_items) {
    if (n_items < 0 || (n_items > 0 && !items))
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: %d items", n_items);
    if (n_items > kiln_ctx_n_seq_max(c)) /* some sequence would appear twice */
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: %d items, but the context has %d sequences",
                         n_items, kiln_ctx_n_seq_max(c));
    for (int32_t i = 0; i < n_items; i++) /* the same fields in llama's types */
        c->items[i] = (struct llama_batch_item){.seq = items[i].seq,
                                                .tokens = items[i].tokens,
                                                .n = items[i].n_tokens,
                                                .logits = items[i].logits,
                                                .all = items[i].all_logits != 0};
    int32_t past0 = llama_ctx_n_past(c->lc);
    kiln_status s = llama_decode_batch(c->lc, c->items, n_items);
    for (int32_t i = 0; !s && i < n_items; i++) /* sequence 0's tokens, for prefix reuse */
        if (items[i].seq == 0)
            memcpy(c->cached + past0, items[i].tokens, (size_t)items[i].n_tokens * sizeof(int32_t));
    return s;
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

/* State of one kiln_generate call: the prompt and the sequence's sampling
 * and detokenization state (genseq.h). */
struct gen {
    kiln_ctx *c;
    const kiln_gen_params *p;
    kiln_gen_stats *st;
    int32_t *ids; /* the prompt; owned when tokenized here */
    int32_t n_ids;
    struct genseq seq;
};

static kiln_status tokenize_prompt(struct gen *g, const char *prompt, size_t len) {
    double t0 = kiln_now_s();
    TRACE_SCOPE_BEGIN(tt);
    size_t n;
    if (len > SIZE_MAX / sizeof(int32_t) - 2)
        return kiln_fail(KILN_ERR_RANGE, "generate: prompt of %zu bytes is too long", len);
    if (!(g->ids = malloc((len + 2) * sizeof *g->ids)))
        return kiln_fail(KILN_ERR_NOMEM, "generate: out of memory for the prompt");
    kiln_status s = kiln_tokenize(g->c->m, prompt, len, 1, g->ids, len + 2, &n);
    g->st->t_tokenize += kiln_now_s() - t0;
    TRACE_SCOPE_END(tt, "tokenize", "generate");
    if (s) return s;
    if (n > (size_t)INT32_MAX)
        return kiln_fail(KILN_ERR_RANGE, "generate: the prompt is %zu tokens", n);
    g->n_ids = (int32_t)n;
    return KILN_OK;
}

static kiln_status prepare(struct gen *g) {
    return genseq_init(&g->seq, g->c->m, g->p, g->ids, g->n_ids);
}

/* Detokenizes id and hands its text, less any held back for the stop
 * strings, to the callback; returns its verdict. *hit: a stop string. */
static int emit_token(struct gen *g, int32_t id, kiln_token_fn on_token, void *user, bool *hit) {
    double t0 = kiln_now_s();
    TRACE_SCOPE_BEGIN(tt);
    size_t w = genseq_detok(&g->seq, id, hit);
    g->st->t_detok += kiln_now_s() - t0;
    TRACE_SCOPE_END(tt, "detokenize", "generate");
    TRACE_SCOPE_BEGIN(te);
    int r = on_token ? on_token(user, id, g->seq.out, w) : 0;
    TRACE_SCOPE_END(te, "emit", "generate");
    return r;
}

/* Prefills ids[0..n_ids) after the longest prefix of them the KV cache
 * holds (at most n_ids - 1 tokens: the last is run for its logits). */
static kiln_status prefill(struct gen *g) {
    kiln_ctx *c = g->c;
    int32_t past = kiln_ctx_n_past(c), n_ctx = kiln_ctx_n_ctx(c);
    if (g->n_ids == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "generate: the prompt has no tokens");
    if (g->n_ids > n_ctx)
        return kiln_fail(KILN_ERR_RANGE,
                         "generate: the prompt is %d tokens, longer than the context of %d tokens",
                         g->n_ids, n_ctx);
    int32_t keep = 0, lim = past < g->n_ids - 1 ? past : g->n_ids - 1;
    while (keep < lim && c->cached[keep] == g->ids[keep]) keep++;
    if (keep == 0)
        kiln_ctx_reset(c); /* also claims sequence 0 again if it was freed */
    else if (keep < past && llama_seq_truncate(c->lc, 0, keep) != KILN_OK)
        return kiln_fail(KILN_ERR_INTERNAL, "generate: cannot keep %d cached tokens", keep);
    past = keep;
    g->st->n_cached = past;
    g->st->n_prompt = g->n_ids - past;
    double t0 = kiln_now_s();
    TRACE_SCOPE_BEGIN(tt);
    TRACE_SCOPE_BEGIN(tf); /* the forward passes, as a decode step's (their layers nest in it) */
    kiln_status s = kiln_decode(c, g->ids + past, g->n_ids - past, c->logits, 0);
    TRACE_SCOPE_END(tf, "forward", "generate");
    g->st->t_prefill += kiln_now_s() - t0;
    if (tt) {
        trace_arg a[2] = {TRACE_I("prefill_tokens", g->n_ids - past), TRACE_I("cached", past)};
        trace_span("prefill", "generate", tt, trace_now() - tt, a, 2);
    }
    return s;
}

/* Ends the trace span of decode step i (sample, emit, forward) begun at t
 * (0: none); the loop's several exits each close it. */
static void trace_step_end(int64_t t, int32_t i, const kiln_ctx *c) {
    if (!t) return;
    trace_arg a[3] = {TRACE_I("step", i), TRACE_I("decode_tokens", 1),
                      TRACE_I("kv_used", kiln_ctx_n_past(c))};
    trace_span("step", "generate", t, trace_now() - t, a, 3);
}

static kiln_status run_loop(struct gen *g, kiln_token_fn on_token, void *user) {
    kiln_ctx *c = g->c;
    kiln_status s = prefill(g);
    if (s) return s;
    g->st->finish = KILN_FINISH_LENGTH;
    int64_t t_step = 0; /* the trace span of step i-1, still open */
    int32_t i = 0;
    for (; i < g->p->n_predict; i++) {
        trace_step_end(t_step, i - 1, c);
        t_step = trace_on() ? trace_now() : 0;
        double t0 = kiln_now_s();
        int32_t id = genseq_sample(&g->seq, c->logits);
        g->st->t_sample += kiln_now_s() - t0;
        TRACE_SCOPE_END(t_step, "sample", "generate");
        if (g->p->stop_at_eog && kiln_token_is_eog(c->m, id)) {
            g->st->finish = KILN_FINISH_EOG;
            break;
        }
        g->st->n_gen++;
        bool hit = false;
        if (emit_token(g, id, on_token, user, &hit)) {
            g->st->finish = KILN_FINISH_CALLBACK;
            break;
        }
        if (hit) {
            g->st->finish = KILN_FINISH_STOP;
            trace_step_end(t_step, i, c);
            return KILN_OK; /* the rest of the text is the stop string's */
        }
        if (i + 1 == g->p->n_predict) break;
        if (kiln_ctx_n_past(c) >= kiln_ctx_n_ctx(c)) {
            g->st->finish = KILN_FINISH_CTX;
            break;
        }
        t0 = kiln_now_s();
        TRACE_SCOPE_BEGIN(tf);
        s = kiln_decode(c, &id, 1, c->logits, 0);
        g->st->t_decode += kiln_now_s() - t0;
        TRACE_SCOPE_END(tf, "forward", "generate");
        if (s) return s;
    }
    trace_step_end(t_step, i < g->p->n_predict ? i : i - 1, c);
    size_t w = genseq_flush(&g->seq);
    if (w && on_token) on_token(user, -1, g->seq.out, w);
    return KILN_OK;
}

static void gen_free(struct gen *g, bool own_ids) {
    if (own_ids) free(g->ids);
    genseq_free(&g->seq);
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
    gen_free(&g, true);
    return s;
}

kiln_status kiln_generate_tokens(kiln_ctx *c, const int32_t *ids, int32_t n,
                                 const kiln_gen_params *p, kiln_token_fn on_token, void *user,
                                 kiln_gen_stats *stats) {
    kiln_gen_stats local;
    kiln_gen_params dflt = kiln_gen_default_params();
    struct gen g = {.c = c,
                    .p = p ? p : &dflt,
                    .st = stats ? stats : &local,
                    .ids = (int32_t *)ids,
                    .n_ids = n > 0 ? n : 0};
    memset(g.st, 0, sizeof *g.st);
    kiln_status s = prepare(&g);
    if (!s) s = run_loop(&g, on_token, user);
    gen_free(&g, false);
    return s;
}

const char *kiln_model_chat_template(const kiln_model *m, size_t *len) {
    gguf_str t;
    kiln_status st = gguf_get_str(m->f, "tokenizer.chat_template", &t);
    kiln_clear_error(); /* absent is an answer, not a failure */
    if (st || t.len == 0) return NULL;
    *len = (size_t)t.len;
    return t.ptr;
}
