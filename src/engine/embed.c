/* embed.c - the embeddings engine behind kiln.h's kiln_embed*: validation
 * and tokenization of the texts, packing them into batches of whole texts
 * (no padding; the forward pass keeps attention within each text), pooling,
 * Matryoshka truncation and L2 normalisation, the batch size from a memory
 * budget with halving on allocation failure, and the batch-size finder;
 * plus, for the embeddings batcher (engine/batcher.c), the per-input
 * validation and tokenization on its own and embedding of pre-tokenized
 * id sequences through the same packing, forward and pooling code.
 *
 * Two forward passes sit behind one interface (ctx_reserve, forward): an
 * encoder's (model/bert.c: bidirectional attention, WordPiece with [CLS]
 * and [SEP]) and a decoder's (model/llama.c's llama_embed, the generation
 * engine's blocks: causal attention within each text, the model's own
 * tokenizer with BOS/EOS as its metadata asks; the vector of a token is its
 * final hidden state after the output norm). Everything else - packing,
 * batch size and halving, pooling, truncation, normalisation - is shared.
 *
 * Invariants: a kiln_embed_ctx owns its pool and its bert_ctx or llama_ctx;
 * their buffers only grow (to the largest batch seen; a llama_ctx is
 * replaced by a larger one), except that a failed reservation halves
 * `batch` at most MAX_HALVINGS times over the context's life; per-call
 * memory (ids, results) is allocated once per call. A text's tokens are
 * never split across batches, so its vector does not depend on which batch
 * it landed in.
 *
 * Trace spans (obs/trace.h; cat "embed"): tokenize per kiln_embed call,
 * embed_batch per packed batch (inputs, tokens) holding its forward and
 * pool; the forward pass adds its per-layer spans at detail=ops.
 */
#include "engine/embed.h"
#include "base/status.h"
#include "base/time.h"
#include "compute/threadpool.h"
#include "engine/eval.h"
#include "model/llama.h"
#include "model/memory.h"
#include "obs/trace.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_HALVINGS   3
#define DEFAULT_BUDGET (512ull << 20)
#define BATCH_MIN      64
#define BATCH_MAX      2048

struct kiln_embed_ctx {
    const kiln_model *m;
    const bert_model *bm; /* an encoder: bm, tok and bc */
    const tok_wpm *tok;
    const llama_model *lm; /* a decoder: lm and lc */
    kiln_pool *pool;
    bert_ctx *bc;
    llama_ctx *lc;    /* NULL until the first reservation */
    int32_t bos, eos; /* ids added to a text's ends (decoders: as the metadata asks), or -1 */
    int32_t n_vocab;
    kiln_embed_params p;
    kiln_pooling pooling;
    int32_t dim, n_embd, n_ctx;
    int32_t batch;      /* tokens per pass now */
    int32_t n_halvings; /* over the context's life */
};

const char *kiln_pooling_name(kiln_pooling p) {
    switch (p) {
    case KILN_POOLING_NONE:
        return "none";
    case KILN_POOLING_MEAN:
        return "mean";
    case KILN_POOLING_CLS:
        return "cls";
    case KILN_POOLING_LAST:
        return "last";
    default:
        return NULL;
    }
}

kiln_embed_params kiln_embed_default_params(void) {
    return (kiln_embed_params){.pooling = KILN_POOLING_MODEL, .normalize = 1};
}

bool embed_arch_is_encoder(const gguf_file *f) {
    gguf_str s;
    char name[64];
    if (gguf_get_str(f, "general.architecture", &s) || s.len >= sizeof name) return false;
    memcpy(name, s.ptr, s.len);
    name[s.len] = 0;
    const struct arch_def *a = arch_find(name);
    return a && !(a->flags & ARCH_F_CAUSAL);
}

/* The largest power of two in [BATCH_MIN, BATCH_MAX] whose compute estimate
 * (model/memory.h) fits the budget; BATCH_MIN when none does. */
static int32_t batch_from_budget(const struct arch_hparams *hp, uint64_t budget) {
    int32_t best = BATCH_MIN;
    for (int32_t b = BATCH_MIN; b <= BATCH_MAX; b *= 2) {
        struct mem_params mp = {hp->n_ctx_train, 1, (uint32_t)b, KILN_TYPE_F16};
        struct mem_estimate est;
        if (mem_estimate(hp, 0, &mp, &est) == KILN_OK && est.compute <= budget) best = b;
    }
    return best;
}

static kiln_pooling model_pooling(const struct arch_hparams *hp) {
    switch (hp->pooling_type) {
    case 0:
        return KILN_POOLING_NONE;
    case 2:
        return KILN_POOLING_CLS;
    case 3:
        return KILN_POOLING_LAST;
    default: /* 1 (mean); unknown types too */
        return KILN_POOLING_MEAN;
    }
}

/* A decoder's pooling: <arch>.pooling_type when the file has it, else the
 * last token (what llama.cpp does for decoder embedding models). */
static kiln_pooling decoder_pooling(const kiln_model *m, const struct arch_hparams *hp) {
    char key[96];
    uint32_t v;
    snprintf(key, sizeof key, "%s.pooling_type", hp->arch->name);
    if (gguf_get_u32(engine_model_gguf(m), key, &v) != KILN_OK) return KILN_POOLING_LAST;
    return model_pooling(hp);
}

/* The ids a decoder's tokenizer adds around a text (BOS, EOS; -1 when it
 * adds none): a probe text tokenized with add_special is the plain tokens
 * with at most one id before and one after. (Comparing beats looking at
 * ids alone: BOS and EOS are often the same id.) */
static kiln_status decoder_specials(kiln_embed_ctx *e) {
    int32_t with[16], plain[16];
    size_t nw = 0, np = 0;
    e->bos = e->eos = -1;
    kiln_status s = kiln_tokenize(e->m, "a", 1, 1, with, 16, &nw);
    if (!s) s = kiln_tokenize(e->m, "a", 1, 0, plain, 16, &np);
    if (s) return s;
    size_t front = nw > np && memcmp(with + 1, plain, np * sizeof *plain) == 0 ? 1 : 0;
    if (front) e->bos = with[0];
    if (nw == front + np + 1) e->eos = with[nw - 1];
    return KILN_OK;
}

static kiln_status check_params(const kiln_embed_params *p, uint32_t n_embd) {
    if (p->pooling < KILN_POOLING_MODEL || p->pooling > KILN_POOLING_LAST)
        return kiln_fail(KILN_ERR_INVALID_ARG, "embed: unknown pooling %d", (int)p->pooling);
    if (p->dim < 0 || (uint32_t)p->dim > n_embd)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "embed: dimension %d is not between 1 and the model's %u", p->dim, n_embd);
    if (p->batch_tokens < 0 || p->n_threads < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "embed: batch size %d and threads %d must not be negative",
                         p->batch_tokens, p->n_threads);
    return KILN_OK;
}

kiln_embed_ctx *kiln_embed_ctx_create(const kiln_model *m, const kiln_embed_params *p,
                                      kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_embed_params d = p ? *p : kiln_embed_default_params();
    kiln_embed_ctx *e = calloc(1, sizeof *e);
    if (!e) {
        s = kiln_fail(KILN_ERR_NOMEM, "embed: out of memory");
        goto fail;
    }
    e->m = m;
    e->bm = engine_model_bert(m);
    e->tok = engine_model_wpm(m);
    e->lm = engine_model_llama(m);
    if (!(e->bm && e->tok) && !e->lm) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "embed: the model's architecture '%s' has no embeddings forward pass "
                      "(encoders: bert, nomic-bert; decoders: llama, qwen2)",
                      kiln_model_arch(m));
        goto fail;
    }
    const struct arch_hparams *hp = e->bm ? e->bm->hp : e->lm->hp;
    if ((s = check_params(&d, hp->n_embd))) goto fail;
    if (!d.mem_budget) d.mem_budget = DEFAULT_BUDGET;
    e->p = d;
    kiln_pooling mp = e->bm ? model_pooling(hp) : decoder_pooling(m, hp);
    e->pooling = d.pooling == KILN_POOLING_MODEL ? mp : d.pooling;
    e->n_vocab = kiln_model_n_vocab(m);
    if (e->bm) {
        e->bos = tok_wpm_cls(e->tok);
        e->eos = tok_wpm_sep(e->tok);
    } else if ((s = decoder_specials(e))) {
        goto fail;
    }
    e->n_embd = (int32_t)hp->n_embd;
    e->dim = d.dim ? d.dim : e->n_embd;
    e->n_ctx = (int32_t)hp->n_ctx_train;
    e->batch = d.batch_tokens ? d.batch_tokens : batch_from_budget(hp, d.mem_budget);
    if (!(e->pool = kiln_pool_create(d.n_threads, &s))) goto fail;
    if (e->bm && !(e->bc = bert_ctx_create(e->bm, e->pool, &s))) goto fail;
    if (st) *st = KILN_OK;
    return e;
fail:
    kiln_embed_ctx_free(e);
    if (st) *st = s;
    return NULL;
}

void kiln_embed_ctx_free(kiln_embed_ctx *e) {
    if (!e) return;
    bert_ctx_free(e->bc);
    llama_ctx_free(e->lc);
    kiln_pool_destroy(e->pool);
    free(e);
}

int32_t kiln_embed_dim(const kiln_embed_ctx *e) {
    return e->dim;
}
kiln_pooling kiln_embed_pooling(const kiln_embed_ctx *e) {
    return e->pooling;
}
int32_t kiln_embed_batch_tokens(const kiln_embed_ctx *e) {
    return e->batch;
}

void kiln_embeddings_free(kiln_embeddings *r) {
    if (!r) return;
    free(r->data);
    free(r->row);
    free(r->n_tokens);
    free(r->truncated_from);
    free(r);
}

/* ---- one call ---- */

struct call {
    kiln_embed_ctx *e;
    kiln_embed_stats *st;
    int32_t n;
    const int32_t *ids; /* every text's (possibly truncated) tokens, end to end */
    int64_t *start;     /* text i: ids[start[i] .. start[i + 1]) */
    kiln_embeddings *r;
};

/* Offset of the first byte that is not valid UTF-8, or len. */
static size_t utf8_invalid_at(const char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &c);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return len;
}

/* Grows *buf (capacity *cap ids) to hold at least need ids. */
static kiln_status grow_ids(int32_t **buf, size_t *cap, size_t need, int32_t index) {
    if (need <= *cap) return KILN_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    int32_t *p = realloc(*buf, c * sizeof *p);
    if (!p) return kiln_fail(KILN_ERR_NOMEM, "embed: out of memory tokenizing input %d", index);
    *buf = p, *cap = c;
    return KILN_OK;
}

/* Cuts *n tokens in buf to the context (keeping a final [SEP], or a
 * decoder's EOS, last) when truncating, else fails naming the input. */
static kiln_status fit_context(const kiln_embed_ctx *e, int32_t index, int truncate, int32_t *buf,
                               size_t *n, int32_t *truncated_from) {
    *truncated_from = 0;
    if (*n <= (size_t)e->n_ctx) return KILN_OK;
    if (!truncate)
        return kiln_fail(KILN_ERR_RANGE,
                         "embed: input %d is %zu tokens, more than the model's context of %d "
                         "tokens (truncation is off)",
                         index, *n, e->n_ctx);
    *truncated_from = (int32_t)(*n > INT32_MAX ? INT32_MAX : *n);
    if (e->eos >= 0 && buf[*n - 1] == e->eos) buf[e->n_ctx - 1] = e->eos;
    *n = (size_t)e->n_ctx;
    return KILN_OK;
}

kiln_status embed_input_tokens(const kiln_embed_ctx *e, int32_t index, const char *text, size_t len,
                               const int32_t *ids, int32_t n_ids, int truncate, int32_t **buf,
                               size_t *cap, size_t *n_out, int32_t *truncated_from) {
    kiln_status s;
    size_t need = 0;
    *n_out = 0;
    *truncated_from = 0;
    if (text) {
        if (len == 0)
            return kiln_fail(KILN_ERR_INVALID_ARG, "embed: input %d is an empty string", index);
        size_t bad = utf8_invalid_at(text, len);
        if (bad < len)
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "embed: input %d is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                             index, (unsigned char)text[bad], bad);
        if (len > (SIZE_MAX / sizeof(int32_t) - 2) / 2)
            return kiln_fail(KILN_ERR_RANGE, "embed: input %d of %zu bytes is too long", index,
                             len);
        if ((s = grow_ids(buf, cap, 2 * len + 2, index))) return s;
        if ((s = e->tok ? tok_wpm_encode(e->tok, text, len, true, *buf, *cap, &need)
                        : kiln_tokenize(e->m, text, len, 1, *buf, *cap, &need)))
            return s;
        if (need == 0)
            return kiln_fail(KILN_ERR_INVALID_ARG, "embed: input %d has no tokens", index);
    } else {
        if (!ids || n_ids <= 0)
            return kiln_fail(KILN_ERR_INVALID_ARG, "embed: input %d has no text and no token ids",
                             index);
        int32_t n_vocab = e->n_vocab;
        for (int32_t k = 0; k < n_ids; k++)
            if (ids[k] < 0 || ids[k] >= n_vocab)
                return kiln_fail(KILN_ERR_RANGE,
                                 "embed: input %d: token id %d at position %d is outside the "
                                 "vocabulary of %d tokens",
                                 index, ids[k], k, n_vocab);
        int32_t cls = e->bos, sep = e->eos;
        int add_cls = cls >= 0 && ids[0] != cls, add_sep = sep >= 0 && ids[n_ids - 1] != sep;
        if ((s = grow_ids(buf, cap, (size_t)n_ids + 2, index))) return s;
        if (add_cls) (*buf)[need++] = cls;
        memcpy(*buf + need, ids, (size_t)n_ids * sizeof *ids);
        need += (size_t)n_ids;
        if (add_sep) (*buf)[need++] = sep;
    }
    if ((s = fit_context(e, index, truncate, *buf, &need, truncated_from))) return s;
    *n_out = need;
    return KILN_OK;
}

/* Tokenizes every text into c->ids, truncating or rejecting over-long ones. */
static kiln_status tokenize_all(struct call *c, const char *const *texts, const size_t *lens,
                                int32_t **owned) {
    kiln_embed_ctx *e = c->e;
    int32_t *tmp = NULL, *ids = NULL;
    size_t tmp_cap = 0, ids_cap = 0, n_ids = 0;
    kiln_status s = KILN_OK;
    for (int32_t i = 0; i < c->n && !s; i++) {
        size_t need;
        if (!texts[i]) {
            s = kiln_fail(KILN_ERR_INVALID_ARG, "embed: input %d is NULL", i);
            break;
        }
        size_t len = lens ? lens[i] : strlen(texts[i]);
        if ((s = embed_input_tokens(e, i, texts[i], len, NULL, 0, e->p.truncate, &tmp, &tmp_cap,
                                    &need, &c->r->truncated_from[i])))
            break;
        if (n_ids + need > ids_cap) {
            size_t cap = ids_cap ? ids_cap * 2 : 4096;
            while (cap < n_ids + need) cap *= 2;
            int32_t *p = realloc(ids, cap * sizeof *ids);
            if (!p) {
                s = kiln_fail(KILN_ERR_NOMEM, "embed: out of memory for %zu token ids", cap);
                break;
            }
            ids = p, ids_cap = cap;
        }
        memcpy(ids + n_ids, tmp, need * sizeof *ids);
        c->start[i] = (int64_t)n_ids;
        c->r->n_tokens[i] = (int32_t)need;
        n_ids += need;
    }
    c->start[c->n] = (int64_t)n_ids;
    free(tmp);
    c->ids = ids;
    *owned = ids;
    return s;
}

static kiln_status alloc_result(struct call *c) {
    kiln_embeddings *r = calloc(1, sizeof *r);
    c->r = r;
    if (!r) return kiln_fail(KILN_ERR_NOMEM, "embed: out of memory");
    r->n_texts = c->n;
    r->dim = c->e->dim;
    r->row = calloc((size_t)c->n, sizeof *r->row);
    r->n_tokens = calloc((size_t)c->n, sizeof *r->n_tokens);
    r->truncated_from = calloc((size_t)c->n, sizeof *r->truncated_from);
    c->start = calloc((size_t)c->n + 1, sizeof *c->start);
    if (!r->row || !r->n_tokens || !r->truncated_from || !c->start)
        return kiln_fail(KILN_ERR_NOMEM, "embed: out of memory for %d inputs", c->n);
    return KILN_OK;
}

static kiln_status alloc_rows(struct call *c) {
    kiln_embeddings *r = c->r;
    int64_t rows = 0;
    for (int32_t i = 0; i < c->n; i++) {
        r->row[i] = rows;
        rows += c->e->pooling == KILN_POOLING_NONE ? r->n_tokens[i] : 1;
    }
    r->n_rows = rows;
    r->data = malloc((size_t)(rows ? rows : 1) * (size_t)r->dim * sizeof *r->data);
    if (!r->data)
        return kiln_fail(KILN_ERR_NOMEM, "embed: out of memory for %lld vectors", (long long)rows);
    return KILN_OK;
}

/* Truncates src (n_embd floats) to dim into dst and L2-normalises it when
 * asked: a double sum of squares, then a multiply by the float reciprocal. */
void embed_finish_row(const float *src, int32_t dim, int normalize, float *dst) {
    memmove(dst, src, (size_t)dim * sizeof *dst);
    if (!normalize) return;
    double ss = 0;
    for (int32_t i = 0; i < dim; i++) ss += (double)dst[i] * dst[i];
    if (ss <= 0) return;
    float inv = (float)(1.0 / sqrt(ss));
    for (int32_t i = 0; i < dim; i++) dst[i] *= inv;
}

static void finish_vec(const kiln_embed_ctx *e, const float *src, float *dst) {
    embed_finish_row(src, e->dim, e->p.normalize, dst);
}

/* Pools text i's hidden states h (its n_tokens rows) into its result rows. */
static void pool_text(struct call *c, int32_t i, const float *h, float *acc_buf) {
    kiln_embed_ctx *e = c->e;
    int32_t L = c->r->n_tokens[i], d = e->n_embd;
    float *out = c->r->data + c->r->row[i] * e->dim;
    switch (e->pooling) {
    case KILN_POOLING_NONE:
        for (int32_t t = 0; t < L; t++)
            finish_vec(e, h + (int64_t)t * d, out + (int64_t)t * e->dim);
        return;
    case KILN_POOLING_CLS:
        finish_vec(e, h, out);
        return;
    case KILN_POOLING_LAST:
        finish_vec(e, h + (int64_t)(L - 1) * d, out);
        return;
    default: {
        for (int32_t k = 0; k < d; k++) {
            double sum = 0;
            for (int32_t t = 0; t < L; t++) sum += h[(int64_t)t * d + k];
            acc_buf[k] = (float)(sum / L);
        }
        finish_vec(e, acc_buf, out);
    }
    }
}

/* A decoder's llama_ctx for batches of n tokens: kept when it holds them,
 * else replaced by one holding max(n, batch) (the old one kept when the new
 * one cannot be had); KILN_ERR_NOMEM when it would take more than the
 * budget (cache and compute buffers) or cannot be allocated. */
static kiln_status decoder_reserve(kiln_embed_ctx *e, int32_t n) {
    if (n <= 0) return kiln_fail(KILN_ERR_RANGE, "embed: a batch of %d tokens", n);
    if (e->lc && llama_ctx_n_batch(e->lc) >= n) return KILN_OK;
    struct llama_ctx_params lp = {.n_ctx = e->n_ctx,
                                  .n_batch = n > e->batch ? n : e->batch,
                                  .n_seq = 1,
                                  .type_k = KILN_TYPE_F16,
                                  .type_v = KILN_TYPE_F16,
                                  .embed = true};
    kiln_status s;
    llama_ctx *lc = llama_ctx_create(e->lm, &lp, e->pool, &s);
    if (!lc) return s;
    uint64_t kv, compute;
    llama_ctx_memory(lc, &kv, &compute);
    if (e->p.mem_budget && kv + compute > e->p.mem_budget) {
        llama_ctx_free(lc);
        return kiln_fail(KILN_ERR_NOMEM,
                         "embed: buffers for %d tokens take %llu bytes, more than the budget of "
                         "%llu",
                         lp.n_batch, (unsigned long long)(kv + compute),
                         (unsigned long long)e->p.mem_budget);
    }
    llama_ctx_free(e->lc);
    e->lc = lc;
    return KILN_OK;
}

static kiln_status ctx_reserve(kiln_embed_ctx *e, int32_t n) {
    return e->bc ? bert_ctx_reserve(e->bc, n, e->p.mem_budget) : decoder_reserve(e, n);
}

/* One forward pass over n_seq packed texts (see bert_encode, llama_embed). */
static kiln_status forward(kiln_embed_ctx *e, const int32_t *ids, const int32_t *seq, int32_t n_seq,
                           const float **h) {
    return e->bc ? bert_encode(e->bc, ids, seq, n_seq, h) : llama_embed(e->lc, ids, seq, n_seq, h);
}

/* Reserves buffers for a batch of n tokens; on failure halves the batch
 * size (at most MAX_HALVINGS times per context) and says so with *retry. */
static kiln_status reserve(struct call *c, int32_t n, bool *retry) {
    kiln_embed_ctx *e = c->e;
    *retry = false;
    kiln_status s = ctx_reserve(e, n);
    if (s != KILN_ERR_NOMEM) return s;
    if (e->n_halvings >= MAX_HALVINGS || e->batch <= 1)
        return kiln_fail(KILN_ERR_NOMEM,
                         "embed: cannot allocate buffers for a batch of %d tokens (batch size "
                         "halved %d times to %d; memory budget %llu bytes)",
                         n, e->n_halvings, e->batch, (unsigned long long)e->p.mem_budget);
    e->batch /= 2;
    e->n_halvings++;
    c->st->n_halvings++;
    *retry = true;
    return KILN_OK;
}

/* Packs the texts into batches of at most e->batch tokens (a longer text
 * goes alone), encodes and pools each. */
static kiln_status run_batches(struct call *c) {
    kiln_embed_ctx *e = c->e;
    int32_t *seq = malloc(((size_t)c->n + 1) * sizeof *seq);
    float *acc = malloc((size_t)e->n_embd * sizeof *acc);
    kiln_status s = KILN_OK;
    if (!seq || !acc) s = kiln_fail(KILN_ERR_NOMEM, "embed: out of memory");
    for (int32_t i = 0; i < c->n && !s;) {
        int32_t j = i, total = 0;
        seq[0] = 0;
        while (j < c->n && (j == i || total + c->r->n_tokens[j] <= e->batch)) {
            total += c->r->n_tokens[j];
            seq[++j - i] = total;
        }
        bool retry;
        if ((s = reserve(c, total, &retry)) || retry) continue;
        TRACE_SCOPE_BEGIN(tb);
        double t0 = kiln_now_s();
        const float *h;
        TRACE_SCOPE_BEGIN(tf);
        s = forward(e, c->ids + c->start[i], seq, j - i, &h);
        TRACE_SCOPE_END(tf, "forward", "embed");
        double t1 = kiln_now_s();
        c->st->t_forward += t1 - t0;
        if (s) break;
        TRACE_SCOPE_BEGIN(tp);
        for (int32_t k = i; k < j; k++)
            pool_text(c, k, h + (int64_t)(c->start[k] - c->start[i]) * e->n_embd, acc);
        TRACE_SCOPE_END(tp, "pool", "embed");
        c->st->t_pool += kiln_now_s() - t1;
        if (tb) {
            trace_arg a[2] = {TRACE_I("inputs", j - i), TRACE_I("tokens", total)};
            trace_span("embed_batch", "embed", tb, trace_now() - tb, a, 2);
        }
        c->st->n_batches++;
        if (j - i > c->st->max_batch_texts) c->st->max_batch_texts = j - i;
        i = j;
    }
    free(seq);
    free(acc);
    return s;
}

/* The rest of a call once c->ids and c->start hold its tokens (s: the
 * status so far): rows, passes, stats; hands the result to *out or frees it. */
static kiln_status finish_call(struct call *c, kiln_status s, double t0, kiln_embeddings **out) {
    if (!s) s = alloc_rows(c);
    if (!s) s = run_batches(c);
    c->st->n_texts = c->n;
    c->st->n_tokens = c->start ? c->start[c->n] : 0;
    c->st->batch_tokens = c->e->batch;
    c->st->n_threads = kiln_pool_size(c->e->pool);
    c->st->t_total = kiln_now_s() - t0;
    free(c->start);
    if (s) {
        kiln_embeddings_free(c->r);
        return s;
    }
    *out = c->r;
    return KILN_OK;
}

kiln_status kiln_embed(kiln_embed_ctx *e, const char *const *texts, const size_t *lens, int32_t n,
                       kiln_embeddings **out, kiln_embed_stats *stats) {
    kiln_embed_stats local;
    struct call c = {.e = e, .st = stats ? stats : &local, .n = n};
    memset(c.st, 0, sizeof *c.st);
    *out = NULL;
    if (n <= 0 || !texts) return kiln_fail(KILN_ERR_INVALID_ARG, "embed: no inputs (%d texts)", n);
    double t0 = kiln_now_s();
    int32_t *owned = NULL;
    kiln_status s = alloc_result(&c);
    TRACE_SCOPE_BEGIN(tt);
    if (!s) s = tokenize_all(&c, texts, lens, &owned);
    if (tt) {
        trace_arg a[2] = {TRACE_I("inputs", n), TRACE_I("tokens", c.start ? c.start[n] : 0)};
        trace_span("tokenize", "embed", tt, trace_now() - tt, a, 2);
    }
    c.st->t_tokenize = kiln_now_s() - t0;
    s = finish_call(&c, s, t0, out);
    free(owned);
    return s;
}

kiln_status embed_tokens(kiln_embed_ctx *e, const int32_t *ids, const int64_t *start, int32_t n,
                         kiln_embeddings **out, kiln_embed_stats *stats) {
    kiln_embed_stats local;
    struct call c = {.e = e, .st = stats ? stats : &local, .n = n, .ids = ids};
    memset(c.st, 0, sizeof *c.st);
    *out = NULL;
    if (n <= 0 || !ids || !start)
        return kiln_fail(KILN_ERR_INVALID_ARG, "embed: no inputs (%d token sequences)", n);
    double t0 = kiln_now_s();
    kiln_status s = alloc_result(&c);
    for (int32_t i = 0; i < n && !s; i++) {
        int64_t len = start[i + 1] - start[i];
        if (start[i] < 0 || len <= 0 || len > e->n_ctx)
            s = kiln_fail(KILN_ERR_RANGE,
                          "embed: input %d has %lld tokens; it needs 1 to the model's context "
                          "of %d",
                          i, (long long)len, e->n_ctx);
        else {
            c.start[i] = start[i];
            c.r->n_tokens[i] = (int32_t)len;
        }
    }
    if (!s) c.start[n] = start[n];
    s = finish_call(&c, s, t0, out);
    return s;
}

kiln_status embed_ctx_reserve(kiln_embed_ctx *e) {
    return ctx_reserve(e, e->batch);
}

uint64_t embed_ctx_compute_bytes(const kiln_embed_ctx *e) {
    if (!e->bc) {
        uint64_t kv = 0, compute = 0;
        if (e->lc) llama_ctx_memory(e->lc, &kv, &compute);
        return kv + compute;
    }
    int32_t cap = bert_ctx_capacity(e->bc);
    return cap > 0 ? bert_ctx_bytes(e->bm, kiln_pool_size(e->pool), cap) : 0;
}

int32_t embed_ctx_n_ctx(const kiln_embed_ctx *e) {
    return e->n_ctx;
}

int32_t embed_ctx_n_embd(const kiln_embed_ctx *e) {
    return e->n_embd;
}

/* ---- the batch-size finder ---- */

kiln_status kiln_embed_find_batch(const kiln_model *m, const kiln_embed_params *p,
                                  const char *const *texts, const size_t *lens, int32_t n,
                                  const int32_t *sizes, int32_t n_sizes,
                                  kiln_embed_bench_point *points, int32_t *best) {
    kiln_embed_params q = p ? *p : kiln_embed_default_params();
    kiln_status last = KILN_OK;
    int32_t n_ok = 0;
    *best = -1;
    if (n_sizes <= 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "embed: no batch sizes to try (%d)", n_sizes);
    for (int32_t k = 0; k < n_sizes; k++) {
        kiln_embed_bench_point *pt = &points[k];
        memset(pt, 0, sizeof *pt);
        pt->batch_tokens = sizes[k];
        q.batch_tokens = sizes[k];
        kiln_status s;
        kiln_embed_ctx *e = kiln_embed_ctx_create(m, &q, &s);
        kiln_embeddings *r = NULL;
        kiln_embed_stats st;
        if (e) s = kiln_embed(e, texts, lens, n < 8 ? n : 8, &r, NULL); /* warm-up */
        kiln_embeddings_free(r);
        r = NULL;
        if (e && !s) s = kiln_embed(e, texts, lens, n, &r, &st);
        kiln_embeddings_free(r);
        kiln_embed_ctx_free(e);
        pt->status = s;
        if (s == KILN_ERR_INVALID_ARG || s == KILN_ERR_RANGE || s == KILN_ERR_UNSUPPORTED)
            return s; /* the texts or the model are at fault, not the size */
        if (s) {
            last = s;
            continue;
        }
        pt->seconds = st.t_total;
        pt->docs_per_s = st.t_total > 0 ? st.n_texts / st.t_total : 0;
        pt->tokens_per_s = st.t_total > 0 ? (double)st.n_tokens / st.t_total : 0;
        if (*best < 0 || pt->tokens_per_s > points[*best].tokens_per_s) *best = k;
        n_ok++;
    }
    if (!n_ok) {
        char why[256];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        return kiln_fail(last ? last : KILN_ERR_NOMEM, "embed: no batch size could run (%s)", why);
    }
    return KILN_OK;
}
