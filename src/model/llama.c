/* llama.c - the llama-family forward pass (see llama.h).
 *
 * Layout and invariants of a context:
 *   - activations are row-major per token: x[i * n_embd ...] is token i of
 *     the current step (n_tok <= n_batch tokens, the items' tokens one after
 *     another); tok_slot/tok_pos give each token's sequence and position;
 *   - the KV cache (kvcache.h) holds each sequence's rows per (layer, KV
 *     head), consecutive by position; rows [0, n_past) of a slot are valid;
 *     an embed context's cache is instead one layer of slot 0, n_batch
 *     rows, where token j of the packed step writes row j and attends to
 *     rows j - pos .. j (its sequence so far), rewritten by every layer;
 *     its padding columns (tok_slot -1) are zero rows that write and attend
 *     to nothing and stay zero through every block;
 *   - q/k/v and gate/up share one arena (attention and FFN never overlap);
 *     the arena's room past v (the FFN's, larger) holds each thread's
 *     block attention scratch during attention;
 *     attention writes its output over q, and every block's output goes to
 *     xn, which the next phase adds into the residual x;
 *   - every buffer is sized at creation for n_batch tokens, and the matmul
 *     workspace for the largest weight at n_batch columns, so a step never
 *     allocates; every product was checked (kiln_matmul_check) at creation,
 *     so a step cannot fail once its items are validated;
 *   - a step is one kiln_pool_run: each phase (norm, products, rope and
 *     cache writes, attention, ...) splits its work by (ith, nth) and ends
 *     with a pool barrier, so no thread reads what another is still writing.
 * The numerics follow ggml's where cheap (RMSNorm sum in double, rotation
 * angles by repeated multiplication in float, softmax sum in double), so
 * results stay close to llama.cpp's.
 * Traces: at detail=ops (obs/trace.h, sampled once per pass into
 * trace_ops) thread 0 records each phase as a span (step_task); otherwise
 * each phase costs one test of a local.
 */
#include "model/llama.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/types.h"
#include "obs/trace.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ---- */

static kiln_status check_kernels(const gguf_file *f, const struct llama_w *w, bool rows_only) {
    const struct kiln_kernels *k = kiln_kernels_best();
    kiln_type vdt = kiln_vec_dot_type(w->type);
    bool ok = rows_only ? k->to_float[w->type] != NULL
                        : vdt != KILN_TYPE_COUNT && k->vec_dot[w->type] &&
                              (vdt == KILN_TYPE_F32 || k->from_float[vdt]);
    if (!ok)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "%s: tensor '%s' has type %s, which the %s kernels "
                         "cannot %s yet",
                         gguf_path(f), w->name,
                         kiln_type_name(w->type) ? kiln_type_name(w->type) : "?",
                         kiln_isa_name(k->isa), rows_only ? "convert to F32" : "multiply");
    return KILN_OK;
}

static kiln_status bind_w(const gguf_file *f, const gguf_tensor *t, const char *role,
                          struct llama_w *w, bool rows_only) {
    if (!t) return kiln_fail(KILN_ERR_FORMAT, "%s: missing tensor %s", gguf_path(f), role);
    *w = (struct llama_w){t->name,  t->type,  t->data,
                          t->ne[0], t->ne[1], kiln_row_size(t->type, t->ne[0])};
    return check_kernels(f, w, rows_only);
}

/* A 1-D F32 tensor (norm weight or bias); NULL t leaves *out NULL. */
static kiln_status bind_vec(const gguf_file *f, const gguf_tensor *t, const float **out) {
    *out = NULL;
    if (!t) return KILN_OK;
    if (t->type != KILN_TYPE_F32)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s; expected f32",
                         gguf_path(f), t->name,
                         kiln_type_name(t->type) ? kiln_type_name(t->type) : "?");
    *out = t->data;
    return KILN_OK;
}

static kiln_status bind_layer(const gguf_file *f, const struct arch_model *am, int il,
                              struct llama_layer *L) {
    kiln_status s;
#define T(role) arch_layer_tensor(am, il, ARCH_T_##role)
    if ((s = bind_vec(f, T(ATTN_NORM), &L->attn_norm)) ||
        (s = bind_vec(f, T(FFN_NORM), &L->ffn_norm)) || (s = bind_vec(f, T(ATTN_Q_B), &L->bq)) ||
        (s = bind_vec(f, T(ATTN_K_B), &L->bk)) || (s = bind_vec(f, T(ATTN_V_B), &L->bv)) ||
        (s = bind_w(f, T(ATTN_Q), "attn_q", &L->wq, false)) ||
        (s = bind_w(f, T(ATTN_K), "attn_k", &L->wk, false)) ||
        (s = bind_w(f, T(ATTN_V), "attn_v", &L->wv, false)) ||
        (s = bind_w(f, T(ATTN_OUT), "attn_output", &L->wo, false)) ||
        (s = bind_w(f, T(FFN_GATE), "ffn_gate", &L->gate, false)) ||
        (s = bind_w(f, T(FFN_UP), "ffn_up", &L->up, false)) ||
        (s = bind_w(f, T(FFN_DOWN), "ffn_down", &L->down, false)))
        return s;
#undef T
    if (!L->attn_norm || !L->ffn_norm)
        return kiln_fail(KILN_ERR_FORMAT, "%s: layer %d lacks attn_norm or ffn_norm", gguf_path(f),
                         il);
    return KILN_OK;
}

llama_model *llama_model_load(const gguf_file *f, kiln_status *st) {
    kiln_status s;
    llama_model *m = calloc(1, sizeof *m);
    if (!m) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", gguf_path(f));
        goto fail;
    }
    if ((s = arch_model_load(f, &m->am))) goto fail;
    m->hp = &m->am.hp;
    const unsigned need = ARCH_F_CAUSAL | ARCH_F_ROPE | ARCH_F_GATED_FFN;
    const unsigned other = ARCH_F_LAYERNORM | ARCH_F_POST_NORM;
    if ((m->hp->arch->flags & need) != need || (m->hp->arch->flags & other)) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "%s: architecture '%s' is not a llama-style decoder; text generation "
                      "supports llama and qwen2",
                      gguf_path(f), m->hp->arch->name);
        goto fail;
    }
    const gguf_tensor *const *g = m->am.global;
    if ((s = bind_w(f, g[ARCH_T_TOKEN_EMBD], "token_embd", &m->tok_embd, true)) ||
        (s = bind_w(f, g[ARCH_T_OUTPUT], "output", &m->output, false)) ||
        (s = bind_vec(f, g[ARCH_T_OUTPUT_NORM], &m->output_norm)))
        goto fail;
    if (!m->output_norm) {
        s = kiln_fail(KILN_ERR_FORMAT, "%s: missing tensor output_norm.weight", gguf_path(f));
        goto fail;
    }
    m->layers = calloc(m->hp->n_layer, sizeof *m->layers);
    if (!m->layers) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory for %u layers", gguf_path(f),
                      m->hp->n_layer);
        goto fail;
    }
    for (uint32_t il = 0; il < m->hp->n_layer; il++)
        if ((s = bind_layer(f, &m->am, (int)il, &m->layers[il]))) goto fail;
    if (st) *st = KILN_OK;
    return m;
fail:
    llama_model_free(m);
    if (st) *st = s;
    return NULL;
}

void llama_model_free(llama_model *m) {
    if (!m) return;
    free(m->layers);
    arch_model_free(&m->am);
    free(m);
}

/* ---- context ---- */

/* Keys per attention tile: the scores of a tile for each query head of a
 * group, and the tile's K and V rows, stay in L1 while they are used. */
#define ATT_TILE 64
/* Most query tokens per prompt attention block: consecutive tokens of one
 * sequence (times the query heads of a KV group: 128 rows for TinyLlama)
 * share each K and V tile, converted to F32 once, through two small
 * products (kernels.h attn_gemm). A context's own limit (att_qtok) is lower
 * when the arena's spare room cannot hold every thread's block scratch. */
#define ATT_QTOK 16

struct llama_ctx {
    const llama_model *m;
    const struct kiln_kernels *kern; /* &kern_tuned */
    struct kiln_kernels kern_tuned;  /* chosen for m's products at creation (arch.h) */
    kiln_pool *pool;
    kiln_matmul_ctx *mm;
    int32_t n_ctx, n_batch, n_seq, n_threads;
    bool embed;    /* made for llama_embed: one-layer scratch cache, no logits */
    int32_t n_pad; /* embed: a step's columns are a multiple of this */
    struct kv_cache kv;
    float *x, *xn; /* n_batch rows of n_embd: residual stream, normed / block output */
    float *arena;  /* attention (q, k, v) or FFN (gate, up) activations, never both */
    float *q, *k, *v, *gate, *up; /* views into arena */
    float *rope;                  /* n_batch rows of n_rot floats: cos, sin pairs */
    float *logits;                /* n_seq rows of n_vocab: a step's last-token logits
                                     (none for embed) */
    char *tiles;                  /* per thread: attention scratch of tile_bytes */
    size_t tile_bytes;
    /* per thread: block attention scratch of blk_bytes, in the arena past v
     * (room the FFN needs but attention does not); att_qtok: tokens per
     * block, 1 when there is no such room (every token attends alone) */
    char *blk_scratch;
    size_t blk_bytes;
    int32_t att_qtok;
    int32_t *tok_id, *tok_slot, *tok_pos; /* per token of the step: id, sequence (-1: a
                                             padding column of embed), position */
    int32_t *out_src;                     /* per logits row of the step: its token index */
    int32_t *blk, n_blk; /* attention blocks of the step: block b is tokens [blk[b], blk[b + 1]),
                            consecutive positions of one sequence, at most att_qtok */
    uint32_t *stamp, step_no; /* per slot: the last step it appeared in (duplicates) */
    uint64_t compute_bytes;
    /* the step being run */
    const struct llama_batch_item *items;
    int32_t n_items, n_tok, n_last, n_out;
    bool trace_ops; /* trace_on_ops() when the pass began: thread 0 records its phases */
};

static void *alloc_bytes(uint64_t bytes, llama_ctx *c, kiln_status *s) {
    if (*s) return NULL;
    void *p = NULL;
    if (bytes <= SIZE_MAX) p = kiln_aligned_alloc(KILN_CACHE_LINE, bytes ? (size_t)bytes : 1);
    if (!p)
        *s = kiln_fail(KILN_ERR_NOMEM, "llama: cannot allocate %llu bytes of context state",
                       (unsigned long long)bytes);
    else
        c->compute_bytes += bytes;
    return p;
}

static float *alloc_floats(uint64_t n, llama_ctx *c, kiln_status *s) {
    uint64_t bytes;
    if (!*s && !kiln_mul_ok(n, sizeof(float), &bytes))
        *s = kiln_fail(KILN_ERR_NOMEM, "llama: %llu floats of context state overflow",
                       (unsigned long long)n);
    return *s ? NULL : alloc_bytes(bytes, c, s);
}

static size_t work_size(const llama_model *m, int32_t nb) {
    size_t best = kiln_matmul_work_size(m->output.type, m->output.n_in, nb);
    for (uint32_t il = 0; il < m->hp->n_layer; il++) {
        const struct llama_layer *L = &m->layers[il];
        const struct llama_w *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t w = kiln_matmul_work_size(ws[i]->type, ws[i]->n_in, nb);
            if (w > best) best = w;
        }
    }
    return best;
}

/* Every product of a step must pass kiln_matmul_check at n_batch columns, so
 * the pass itself cannot fail. */
static kiln_status check_products(llama_ctx *c) {
    const llama_model *m = c->m;
    float dummy = 0;
    for (uint32_t il = 0; il <= m->hp->n_layer; il++) {
        const struct llama_layer *L = il < m->hp->n_layer ? &m->layers[il] : NULL;
        const struct llama_w *ws[] = {&m->output,        L ? &L->wq : NULL,  L ? &L->wk : NULL,
                                      L ? &L->wv : NULL, L ? &L->wo : NULL,  L ? &L->gate : NULL,
                                      L ? &L->up : NULL, L ? &L->down : NULL};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i]) continue;
            struct kiln_matmul_op op = {.type = ws[i]->type,
                                        .w = ws[i]->data,
                                        .w_stride = ws[i]->row_bytes,
                                        .nr = ws[i]->n_out,
                                        .n = ws[i]->n_in,
                                        .x = &dummy,
                                        .nc = c->n_batch,
                                        .y = &dummy};
            kiln_status s = kiln_matmul_check(c->mm, &op);
            if (s) return s;
        }
    }
    return KILN_OK;
}

static kiln_status alloc_state(llama_ctx *c) {
    const struct arch_hparams *hp = c->m->hp;
    uint64_t nb = (uint64_t)c->n_batch, d = hp->n_embd, dq = arch_n_embd_q(hp);
    uint64_t dkv = arch_n_embd_kv(hp), ff = hp->n_ff;
    uint64_t attn = nb * (dq + 2 * dkv), ffn = 2 * nb * ff;
    kiln_status s = KILN_OK;
    c->x = alloc_floats(nb * d, c, &s);
    c->xn = alloc_floats(nb * d, c, &s);
    c->arena = alloc_floats(attn > ffn ? attn : ffn, c, &s);
    c->rope = alloc_floats(nb * hp->n_rot, c, &s);
    c->logits = alloc_floats(c->embed ? 1 : (uint64_t)c->n_seq * hp->n_vocab, c, &s);
    int32_t group = (int32_t)(hp->n_head / hp->n_head_kv);
    c->tile_bytes = llama_attend_scratch((int32_t)hp->head_dim, group);
    c->tiles = alloc_bytes((uint64_t)c->n_threads * c->tile_bytes, c, &s);
    c->tok_id = alloc_bytes(nb * sizeof(int32_t), c, &s);
    c->tok_slot = alloc_bytes(nb * sizeof(int32_t), c, &s);
    c->tok_pos = alloc_bytes(nb * sizeof(int32_t), c, &s);
    c->out_src = alloc_bytes(nb * sizeof(int32_t), c, &s);
    c->blk = alloc_bytes((nb + 1) * sizeof(int32_t), c, &s);
    c->stamp = alloc_bytes((uint64_t)c->n_seq * sizeof(uint32_t), c, &s);
    if (s) return s;
    memset(c->stamp, 0, (size_t)c->n_seq * sizeof(uint32_t));
    c->q = c->arena;
    c->k = c->q + nb * dq;
    c->v = c->k + nb * dkv;
    c->gate = c->arena;
    c->up = c->gate + nb * ff;
    /* block attention scratch in the arena's room past v, as many query
     * tokens per block as fit for every thread (none: 1) */
    uint64_t used = kiln_align_up(attn * sizeof(float), KILN_CACHE_LINE);
    uint64_t room = (attn > ffn ? attn : ffn) * sizeof(float);
    room = room > used ? room - used : 0;
    c->att_qtok = 1;
    c->blk_scratch = (char *)c->arena + used;
    for (int32_t n = ATT_QTOK < c->n_batch ? ATT_QTOK : c->n_batch; n >= 2; n--) {
        uint64_t b = kiln_align_up(llama_attend_block_scratch((int32_t)hp->head_dim, n, group),
                                   KILN_CACHE_LINE);
        if (b * (uint64_t)c->n_threads <= room) {
            c->att_qtok = n;
            c->blk_bytes = (size_t)b;
            break;
        }
    }
    return KILN_OK;
}

/* An embed context's column padding and batch: n_pad is one column tile, or
 * one per thread when some weight has fewer rows than matmul.c needs to
 * split rows over every thread (ROW_SPLIT: it then splits columns at
 * nc * ith / nth, which is a tile boundary only when nc is a multiple of
 * n_pad); n_batch is p's, not capped at n_ctx, rounded up to a multiple of
 * n_pad. */
#define ROW_SPLIT(nth) ((int64_t)(nth) * (int64_t)(KILN_CACHE_LINE / sizeof(float)))
static kiln_status embed_geometry(llama_ctx *c, const struct llama_ctx_params *p) {
    const llama_model *m = c->m;
    if (p->n_seq != 1)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "llama: an embeddings context has 1 sequence slot, not %d", p->n_seq);
    int64_t min_rows = INT64_MAX;
    for (uint32_t il = 0; il < m->hp->n_layer; il++) {
        const struct llama_layer *L = &m->layers[il];
        const struct llama_w *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            if (ws[i]->n_out < min_rows) min_rows = ws[i]->n_out;
    }
    c->n_pad = KILN_GEMM_MAX_C * (min_rows < ROW_SPLIT(c->n_threads) ? c->n_threads : 1);
    int64_t nb = ((int64_t)p->n_batch + c->n_pad - 1) / c->n_pad * c->n_pad;
    if (nb > INT32_MAX / 2)
        return kiln_fail(KILN_ERR_RANGE, "llama: an embeddings batch of %d tokens is too large",
                         p->n_batch);
    c->n_batch = (int32_t)nb;
    return KILN_OK;
}

llama_ctx *llama_ctx_create(const llama_model *m, const struct llama_ctx_params *p, kiln_pool *pool,
                            kiln_status *st) {
    kiln_status s = KILN_OK;
    const struct arch_hparams *hp = m->hp;
    llama_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        s = kiln_fail(KILN_ERR_NOMEM, "llama: out of memory for a context");
        goto fail;
    }
    if (p->n_ctx <= 0 || p->n_batch <= 0 || p->n_seq <= 0) {
        s = kiln_fail(KILN_ERR_INVALID_ARG,
                      "llama: context %d, batch %d and sequences %d must be positive", p->n_ctx,
                      p->n_batch, p->n_seq);
        goto fail;
    }
    c->m = m;
    c->pool = pool;
    c->n_threads = pool ? kiln_pool_size(pool) : 1;
    c->n_ctx = p->n_ctx;
    c->n_seq = p->n_seq;
    c->embed = p->embed;
    /* a step never holds more tokens than all the sequences have positions
     * (except in embed, whose step packs any number of sequences) */
    int64_t most = (int64_t)p->n_ctx * p->n_seq;
    c->n_batch = p->n_batch < most ? p->n_batch : (int32_t)most;
    if (c->embed && (s = embed_geometry(c, p))) goto fail;
    arch_model_kernels(&m->am, pool, &c->kern_tuned);
    c->kern = &c->kern_tuned;
    /* embed: one layer's keys and values of the packed step, reused by every layer */
    if ((s = kv_init(&c->kv, p->type_k, p->type_v, c->embed ? 1 : (int32_t)hp->n_layer,
                     (int32_t)hp->n_head_kv, (int32_t)hp->head_dim,
                     c->embed ? c->n_batch : p->n_ctx, p->n_seq)))
        goto fail;
    kiln_type qt = kiln_vec_dot_type(p->type_k);
    if (!c->kern->vec_dot[p->type_k] || !c->kern->from_float[qt] ||
        !c->kern->from_float[p->type_k] || !c->kern->from_float[p->type_v] ||
        !c->kern->axpy[p->type_v] || !c->kern->exp_sum || !c->kern->attn_gemm || !c->kern->swiglu ||
        !c->kern->to_float[p->type_k] || !c->kern->to_float[p->type_v] || !c->kern->to_float[qt]) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "llama: the %s kernels lack a KV cache or attention kernel for %s/%s",
                      kiln_isa_name(c->kern->isa), kiln_type_name(p->type_k),
                      kiln_type_name(p->type_v));
        goto fail;
    }
    if ((s = alloc_state(c))) goto fail;
    size_t ws = work_size(m, c->n_batch);
    c->mm = kiln_matmul_ctx_create(pool, c->kern, ws, &s);
    if (!c->mm) goto fail;
    c->compute_bytes += ws;
    if ((s = check_products(c))) goto fail;
    kv_slot_claim_at(&c->kv, 0);
    if (st) *st = KILN_OK;
    return c;
fail:
    llama_ctx_free(c);
    if (st) *st = s;
    return NULL;
}

void llama_ctx_free(llama_ctx *c) {
    if (!c) return;
    kiln_matmul_ctx_destroy(c->mm);
    kv_free(&c->kv);
    void *bufs[] = {c->x,      c->xn,       c->arena,   c->rope,    c->logits, c->tiles,
                    c->tok_id, c->tok_slot, c->tok_pos, c->out_src, c->blk,    c->stamp};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kiln_aligned_free(bufs[i]);
    free(c);
}

int32_t llama_ctx_n_ctx(const llama_ctx *c) {
    return c->n_ctx;
}
int32_t llama_ctx_n_batch(const llama_ctx *c) {
    return c->n_batch;
}
int32_t llama_ctx_n_seq(const llama_ctx *c) {
    return c->n_seq;
}
const struct kv_cache *llama_ctx_kv(const llama_ctx *c) {
    return &c->kv;
}
void llama_ctx_memory(const llama_ctx *c, uint64_t *kv_bytes_out, uint64_t *compute_bytes) {
    if (kv_bytes_out) *kv_bytes_out = kv_bytes(&c->kv);
    if (compute_bytes) *compute_bytes = c->compute_bytes;
}

kiln_status llama_seq_claim(llama_ctx *c, int32_t *seq) {
    return kv_slot_claim(&c->kv, seq);
}
kiln_status llama_seq_release(llama_ctx *c, int32_t seq) {
    kiln_status s = kv_slot_check(&c->kv, seq, "free sequence");
    if (!s) kv_slot_release(&c->kv, seq);
    return s;
}
kiln_status llama_seq_truncate(llama_ctx *c, int32_t seq, int32_t n) {
    kiln_status s = kv_slot_check(&c->kv, seq, "truncate sequence");
    if (s) return s;
    if (n < 0 || n > c->kv.n_past[seq])
        return kiln_fail(KILN_ERR_RANGE, "truncate sequence: %d is outside 0..%d (sequence %d)", n,
                         c->kv.n_past[seq], seq);
    c->kv.n_past[seq] = n;
    return KILN_OK;
}
int32_t llama_seq_n_past(const llama_ctx *c, int32_t seq) {
    if (seq < 0 || seq >= c->n_seq || !c->kv.used[seq]) return -1;
    return c->kv.n_past[seq];
}
int32_t llama_ctx_n_past(const llama_ctx *c) {
    return c->kv.used[0] ? c->kv.n_past[0] : 0;
}
void llama_ctx_reset(llama_ctx *c) {
    c->kv.used[0] = true;
    c->kv.n_past[0] = 0;
}

/* ---- operations (each on the part of the step one thread owns) ---- */

static void barrier(const llama_ctx *c) {
    if (c->pool) kiln_pool_barrier(c->pool);
}

/* [lo, hi) of count items for thread ith of nth. */
static void split(int64_t count, int ith, int nth, int64_t *lo, int64_t *hi) {
    *lo = count * ith / nth;
    *hi = count * (ith + 1) / nth;
}

/* y = x / rms(x) * w over d floats. The sum of squares is taken in double
 * in four interleaved partial sums (one running sum would wait on every
 * addition; in double the order does not matter at float precision). */
static void rmsnorm(float *y, const float *x, const float *w, int64_t d, float eps) {
    double part[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= d; i += 4)
        for (int k = 0; k < 4; k++) part[k] += (double)(x[i + k] * x[i + k]);
    for (; i < d; i++) part[0] += (double)(x[i] * x[i]);
    double ss = (part[0] + part[1]) + (part[2] + part[3]);
    float scale = 1.0f / sqrtf((float)(ss / (double)d) + eps);
    for (i = 0; i < d; i++) y[i] = (x[i] * scale) * w[i];
}

/* For this thread's rows: x += xn (when add), then xn = rmsnorm(x) * w. */
static void add_norm_part(llama_ctx *c, const float *w, bool add, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t d = hp->n_embd, lo, hi;
    split(c->n_tok, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *x = c->x + r * d, *xn = c->xn + r * d;
        if (add)
            for (int64_t i = 0; i < d; i++) x[i] += xn[i];
        rmsnorm(xn, x, w, d, hp->norm_eps);
    }
}

/* y = W x for the step's n columns. prev: the product just before in this
 * phase on the same x (its converted activations are reused when the
 * partner types agree; otherwise this waits for it before converting). */
static void mm(llama_ctx *c, const struct llama_w *w, const float *x, int32_t n, float *y,
               int64_t y_stride, const struct llama_w *prev, int ith, int nth) {
    kiln_type vdt = kiln_vec_dot_type(w->type);
    bool reuse = prev && kiln_vec_dot_type(prev->type) == vdt;
    if (prev && !reuse) barrier(c);
    struct kiln_matmul_op op = {.type = w->type,
                                .w = w->data,
                                .w_stride = w->row_bytes,
                                .nr = w->n_out,
                                .n = w->n_in,
                                .x = x,
                                .nc = n,
                                .y = y,
                                .y_stride = y_stride,
                                .reuse_x = reuse};
    kiln_matmul_task(c->mm, &op, ith, nth);
}

static void embed_part(llama_ctx *c, const int32_t *tokens, int ith, int nth) {
    const struct llama_w *e = &c->m->tok_embd;
    int64_t lo, hi;
    split(c->n_tok, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        if (c->tok_slot[i] < 0) { /* a padding column: zero, and it stays zero */
            memset(c->x + i * e->n_in, 0, (size_t)e->n_in * sizeof *c->x);
            continue;
        }
        const char *row = (const char *)e->data + (size_t)tokens[i] * e->row_bytes;
        c->kern->to_float[e->type](row, c->x + i * e->n_in, e->n_in);
    }
}

/* cos/sin of each rotated pair at each token's position. */
static void rope_part(llama_ctx *c, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    int32_t half = (int32_t)hp->n_rot / 2;
    float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    int64_t lo, hi;
    split(c->n_tok, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        float *cs = c->rope + i * hp->n_rot, theta = (float)c->tok_pos[i];
        for (int32_t j = 0; j < half; j++) {
            cs[2 * j] = cosf(theta);
            cs[2 * j + 1] = sinf(theta);
            theta *= theta_scale;
        }
    }
}

/* Rotates the first n_rot dims of one head: pairs (2j, 2j+1) (NORM) or
 * (j, j + n_rot/2) (NEOX). */
static void rope_head(const struct arch_hparams *hp, float *x, const float *cs) {
    bool neox = hp->arch->flags & ARCH_F_ROPE_NEOX;
    int32_t half = (int32_t)hp->n_rot / 2;
    for (int32_t j = 0; j < half; j++) {
        int32_t i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
        float x0 = x[i0], x1 = x[i1], co = cs[2 * j], si = cs[2 * j + 1];
        x[i0] = x0 * co - x1 * si;
        x[i1] = x0 * si + x1 * co;
    }
}

static void add_vec(float *y, const float *b, int64_t n) {
    if (b)
        for (int64_t i = 0; i < n; i++) y[i] += b[i];
}

/* Biases and rotation of each (token, head) of q and k, and the new k and v
 * rows into their sequences' caches: row pos of the slot's layer il, or for
 * embed row j (the token's place in the packed step) of the one scratch
 * layer. Padding columns are left alone (their q, k and v are zero). */
static void qkv_part(llama_ctx *c, int32_t il, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    const struct llama_layer *L = &c->m->layers[il];
    const struct kiln_kernels *kern = c->kern;
    int64_t hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, per = nh + nkv;
    int64_t dq = nh * hd, dkv = nkv * hd;
    /* items interleaved over the threads: a K/V head (rotated, converted and
     * stored twice) costs more than a query head, and a contiguous split
     * would give them all to the last thread */
    for (int64_t it = ith; it < c->n_tok * per; it += nth) {
        int64_t j = it / per, h = it % per;
        if (c->tok_slot[j] < 0) continue;
        const float *cs = c->rope + j * hp->n_rot;
        if (h < nh) {
            float *q = c->q + j * dq + h * hd;
            add_vec(q, L->bq ? L->bq + h * hd : NULL, hd);
            rope_head(hp, q, cs);
            continue;
        }
        h -= nh;
        float *k = c->k + j * dkv + h * hd, *v = c->v + j * dkv + h * hd;
        add_vec(k, L->bk ? L->bk + h * hd : NULL, hd);
        add_vec(v, L->bv ? L->bv + h * hd : NULL, hd);
        rope_head(hp, k, cs);
        int32_t slot = c->tok_slot[j], kl = c->embed ? 0 : il;
        size_t row = (size_t)(c->embed ? j : c->tok_pos[j]);
        kern->from_float[c->kv.type_k](
            k, kv_k_rows(&c->kv, slot, kl, (int32_t)h) + row * c->kv.row_k, hd);
        kern->from_float[c->kv.type_v](
            v, kv_v_rows(&c->kv, slot, kl, (int32_t)h) + row * c->kv.row_v, hd);
    }
}

/* Scratch layout for n_q heads: the queries in K's partner type, n_q
 * tiles of scores, n_q accumulators, and n_q running maxima and sums. */
struct att_scratch {
    char *qc;
    float *s, *o;
    double *max, *sum;
};

/* The next cache-line-aligned piece of `bytes` of the buffer b (NULL when
 * b is NULL: sizing only), advancing *off past it. */
static void *carve(char *b, uint64_t *off, uint64_t bytes) {
    void *p = b ? b + *off : NULL;
    *off += kiln_align_up(bytes, KILN_CACHE_LINE);
    return p;
}

static struct att_scratch att_layout(void *scratch, int64_t hd, int64_t n_q, size_t *size) {
    char *b = scratch;
    uint64_t off = 0;
    struct att_scratch a;
    a.qc = carve(b, &off, (uint64_t)(n_q * hd) * 4);
    a.s = carve(b, &off, (uint64_t)(n_q * ATT_TILE) * 4);
    a.o = carve(b, &off, (uint64_t)(n_q * hd) * 4);
    a.max = carve(b, &off, (uint64_t)n_q * 8);
    a.sum = carve(b, &off, (uint64_t)n_q * 8);
    *size = (size_t)off;
    return a;
}

size_t llama_attend_scratch(int32_t head_dim, int32_t n_q) {
    size_t size;
    att_layout(NULL, head_dim, n_q, &size);
    return size;
}

/* Keys are taken ATT_TILE at a time with a running maximum and sum per
 * head, so the scores of the whole context never exist at once; a head's
 * accumulated output is rescaled whenever a tile raises its maximum. The n_q
 * heads share each tile's K and V rows while they are in L1; V rows are
 * accumulated straight from the cache's type (the axpy kernels). */
void llama_attend(const struct kiln_kernels *kern, kiln_type type_k, kiln_type type_v,
                  int32_t head_dim, int32_t n_q, const float *q, const char *k_rows,
                  const char *v_rows, int32_t n_keys, float *out, void *scratch) {
    int64_t hd = head_dim;
    size_t row_k = kiln_row_size(type_k, hd), row_v = kiln_row_size(type_v, hd), unused;
    kiln_type qt = kiln_vec_dot_type(type_k);
    size_t qrow = kiln_row_size(qt, hd);
    kiln_vec_dot_fn dot = kern->vec_dot[type_k];
    kiln_matvec_fn mv = kern->matvec[type_k]; /* vec_dot over several rows, bit for bit */
    kiln_axpy_fn axpy = kern->axpy[type_v];
    struct att_scratch a = att_layout(scratch, hd, n_q, &unused);
    for (int32_t i = 0; i < n_q; i++) {
        if (qt == KILN_TYPE_F32)
            memcpy(a.qc + (size_t)i * qrow, q + i * hd, qrow);
        else
            kern->from_float[qt](q + i * hd, a.qc + (size_t)i * qrow, hd);
        a.max[i] = -INFINITY;
        a.sum[i] = 0;
    }
    memset(a.o, 0, (size_t)(n_q * hd) * sizeof(float));
    float scale = 1.0f / sqrtf((float)hd);
    for (int32_t t0 = 0; t0 < n_keys; t0 += ATT_TILE) {
        int32_t nt = n_keys - t0 < ATT_TILE ? n_keys - t0 : ATT_TILE;
        const char *kt = k_rows + (size_t)t0 * row_k;
        const char *vt = v_rows + (size_t)t0 * row_v;
        /* the V tile comes from memory while the scores are computed (the
         * matvec entries prefetch K themselves) */
        for (size_t o = 0; o < (size_t)nt * row_v; o += KILN_CACHE_LINE)
            __builtin_prefetch(vt + o, 0, 3);
        for (int32_t i = 0; i < n_q; i++) {
            float *s = a.s + i * ATT_TILE, tmax = -INFINITY;
            const char *qc = a.qc + (size_t)i * qrow;
            if (mv)
                mv(hd, kt, row_k, nt, qc, s);
            else
                for (int32_t t = 0; t < nt; t++) s[t] = dot(hd, kt + (size_t)t * row_k, qc);
            for (int32_t t = 0; t < nt; t++) {
                s[t] *= scale;
                if (s[t] > tmax) tmax = s[t];
            }
            float max = (float)a.max[i];
            if (tmax > max) { /* rescale what was accumulated under the old maximum */
                float corr = expf(max - tmax), *o = a.o + i * hd;
                for (int64_t d = 0; d < hd; d++) o[d] *= corr;
                a.sum[i] *= corr;
                a.max[i] = max = tmax;
            }
            a.sum[i] += kern->exp_sum(s, nt, max);
        }
        for (int32_t i = 0; i < n_q; i++) axpy(hd, a.o + i * hd, vt, row_v, a.s + i * ATT_TILE, nt);
    }
    for (int32_t i = 0; i < n_q; i++) {
        float inv = (float)(1.0 / a.sum[i]);
        for (int64_t d = 0; d < hd; d++) out[i * hd + d] = a.o[i * hd + d] * inv;
    }
}

/* Scratch of a query block of nq = n_tok x n_q rows: one query in K's
 * partner type (qc), the queries rounded through that type in F32 (qf),
 * the K tile transposed (kt, head_dim x ATT_TILE), the K then V tile in
 * F32 (vf, ATT_TILE x head_dim), nq rows of scores (s) and accumulators
 * (o), and per row the running maximum and sum. */
struct att_block_scratch {
    char *qc;
    float *qf, *kt, *vf, *s, *o, *max;
    double *sum;
};

static struct att_block_scratch att_block_layout(void *scratch, int64_t hd, int64_t nq,
                                                 size_t *size) {
    char *b = scratch;
    uint64_t off = 0;
    struct att_block_scratch a;
    a.qc = carve(b, &off, (uint64_t)hd * 4);
    a.qf = carve(b, &off, (uint64_t)(nq * hd) * 4);
    a.kt = carve(b, &off, (uint64_t)hd * ATT_TILE * 4);
    a.vf = carve(b, &off, (uint64_t)hd * ATT_TILE * 4);
    a.s = carve(b, &off, (uint64_t)nq * ATT_TILE * 4);
    a.o = carve(b, &off, (uint64_t)(nq * hd) * 4);
    a.max = carve(b, &off, (uint64_t)nq * 4);
    a.sum = carve(b, &off, (uint64_t)nq * 8);
    *size = (size_t)off;
    return a;
}

/* The largest of s[0..n), n >= 1, in eight independent lanes (a scalar
 * running maximum would wait on every comparison). */
static float row_max(const float *s, int64_t n) {
    float m[8];
    for (int i = 0; i < 8; i++) m[i] = s[0];
    int64_t t = 0;
    for (; t + 8 <= n; t += 8)
        for (int i = 0; i < 8; i++) m[i] = s[t + i] > m[i] ? s[t + i] : m[i];
    for (; t < n; t++) m[0] = s[t] > m[0] ? s[t] : m[0];
    for (int i = 1; i < 8; i++) m[0] = m[i] > m[0] ? m[i] : m[0];
    return m[0];
}

size_t llama_attend_block_scratch(int32_t head_dim, int32_t n_tok, int32_t n_q) {
    size_t size;
    att_block_layout(NULL, head_dim, (int64_t)n_tok * n_q, &size);
    return size;
}

/* llama_attend for a block of consecutive query tokens: each K tile is
 * converted to F32 and transposed once for all n_tok x n_q rows, the
 * scores of every row come from one product with it, and the rows' weighted
 * sums of the V tile (converted once) from another. A row's keys past its
 * token's position are never multiplied (at the causal edge each token's
 * rows take only the tile's keys it sees). Rows are token-major (row
 * t * n_q + i), so the rows that see a tile at all (the later tokens) are
 * contiguous. The result of a row is llama_attend's
 * for that token up to summation order. */
void llama_attend_block(const struct kiln_kernels *kern, kiln_type type_k, kiln_type type_v,
                        int32_t head_dim, int32_t n_tok, int32_t n_q, const float *q,
                        int64_t q_stride, const char *k_rows, const char *v_rows, int32_t n_keys,
                        float *out, void *scratch) {
    int64_t hd = head_dim, nq = (int64_t)n_tok * n_q;
    size_t row_k = kiln_row_size(type_k, hd), row_v = kiln_row_size(type_v, hd), unused;
    kiln_type qt = kiln_vec_dot_type(type_k);
    struct att_block_scratch a = att_block_layout(scratch, hd, nq, &unused);
    for (int64_t r = 0; r < nq; r++) {
        const float *src = q + r / n_q * q_stride + r % n_q * hd;
        if (qt == KILN_TYPE_F32) {
            memcpy(a.qf + r * hd, src, (size_t)hd * sizeof(float));
        } else { /* the values a vec_dot with the K rows would see */
            kern->from_float[qt](src, a.qc, hd);
            kern->to_float[qt](a.qc, a.qf + r * hd, hd);
        }
        a.max[r] = -INFINITY;
        a.sum[r] = 0;
    }
    memset(a.o, 0, (size_t)(nq * hd) * sizeof(float));
    /* the scale goes into the queries (exact when head_dim is a power of 4) */
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t i = 0; i < nq * hd; i++) a.qf[i] *= scale;
    int32_t last = n_keys + n_tok - 1; /* the keys of the last token */
    for (int32_t t0 = 0; t0 < last; t0 += ATT_TILE) {
        int32_t nt = last - t0 < ATT_TILE ? last - t0 : ATT_TILE;
        for (int32_t t = 0; t < nt; t++)
            kern->to_float[type_k](k_rows + (size_t)(t0 + t) * row_k, a.vf + t * hd, hd);
        for (int64_t d = 0; d < hd; d++)
            for (int32_t t = 0; t < nt; t++) a.kt[d * ATT_TILE + t] = a.vf[t * hd + d];
        /* tokens before tok_lo see no key of this tile, tokens from tok_full
         * on all of it; those between (the causal edge) see a prefix of it
         * and are multiplied token by token over just that prefix */
        int64_t tok_lo = t0 >= n_keys ? t0 - n_keys + 1 : 0, r0 = tok_lo * n_q;
        int64_t tok_full = (int64_t)t0 + nt - n_keys;
        if (tok_full < tok_lo) tok_full = tok_lo;
        if (tok_full > n_tok) tok_full = n_tok;
        for (int64_t tok = tok_lo; tok < tok_full; tok++)
            kern->attn_gemm(n_q, n_keys + tok - t0, hd, a.qf + tok * n_q * hd, (size_t)hd, 1, a.kt,
                            ATT_TILE, a.s + tok * n_q * ATT_TILE, ATT_TILE, 0);
        if (tok_full < n_tok)
            kern->attn_gemm((n_tok - tok_full) * n_q, nt, hd, a.qf + tok_full * n_q * hd,
                            (size_t)hd, 1, a.kt, ATT_TILE, a.s + tok_full * n_q * ATT_TILE,
                            ATT_TILE, 0);
        for (int64_t r = r0; r < nq; r++) {
            int64_t vis = n_keys + r / n_q - t0;
            if (vis > nt) vis = nt;
            float *s = a.s + r * ATT_TILE, tmax = row_max(s, vis);
            if (a.max[r] == -INFINITY) {
                a.max[r] = tmax;          /* nothing accumulated yet */
            } else if (tmax > a.max[r]) { /* rescale what was accumulated under the old maximum */
                float corr = expf(a.max[r] - tmax), *o = a.o + r * hd;
                for (int64_t d = 0; d < hd; d++) o[d] *= corr;
                a.sum[r] *= corr;
                a.max[r] = tmax;
            }
            a.sum[r] += kern->exp_sum(s, vis, a.max[r]);
        }
        for (int32_t t = 0; t < nt; t++)
            kern->to_float[type_v](v_rows + (size_t)(t0 + t) * row_v, a.vf + t * hd, hd);
        for (int64_t tok = tok_lo; tok < tok_full; tok++)
            kern->attn_gemm(n_q, hd, n_keys + tok - t0, a.s + tok * n_q * ATT_TILE, ATT_TILE, 1,
                            a.vf, (size_t)hd, a.o + tok * n_q * hd, (size_t)hd, 1);
        if (tok_full < n_tok)
            kern->attn_gemm((n_tok - tok_full) * n_q, hd, nt, a.s + tok_full * n_q * ATT_TILE,
                            ATT_TILE, 1, a.vf, (size_t)hd, a.o + tok_full * n_q * hd, (size_t)hd,
                            1);
    }
    for (int64_t r = 0; r < nq; r++) {
        float inv = (float)(1.0 / a.sum[r]), *dst = out + r / n_q * q_stride + r % n_q * hd;
        for (int64_t d = 0; d < hd; d++) dst[d] = a.o[r * hd + d] * inv;
    }
}

/* The step's attention blocks (c->blk): runs of at most att_qtok tokens of
 * one sequence at consecutive positions (a padding column of embed is a
 * block of its own). Called before the pass, on the calling thread. */
static void make_blocks(llama_ctx *c) {
    int32_t n = 0;
    for (int32_t j = 0; j < c->n_tok; j++) {
        bool join = j > 0 && c->tok_slot[j] >= 0 && c->tok_slot[j] == c->tok_slot[j - 1] &&
                    c->tok_pos[j] == c->tok_pos[j - 1] + 1 && j - c->blk[n - 1] < c->att_qtok;
        if (!join) c->blk[n++] = j;
    }
    c->blk[n] = c->n_tok;
    c->n_blk = n;
}

/* Heads per attention work item: a KV head's whole group of query heads
 * (they share its K and V tiles, read from memory once), split further only
 * when the step has too few (block, KV head) pairs to keep every thread
 * busy: not when the pairs already share out evenly (decode of one
 * sequence with 4 KV heads on 2 or 4 threads). */
static int32_t att_heads_per_item(const llama_ctx *c) {
    const struct arch_hparams *hp = c->m->hp;
    int32_t group = (int32_t)(hp->n_head / hp->n_head_kv);
    int64_t pairs = (int64_t)c->n_blk * hp->n_head_kv, want = 4 * (int64_t)c->n_threads;
    if (pairs >= want || (pairs >= c->n_threads && pairs % c->n_threads == 0)) return group;
    int64_t parts = (want + pairs - 1) / pairs;
    int32_t per = (int32_t)((group + parts - 1) / parts);
    return per < 1 ? 1 : per;
}

/* Work items (block, KV head, run of query heads), interleaved over the
 * threads so that later (longer) positions of a prompt are shared out
 * evenly. A token attends to its sequence's rows 0..pos; for embed those
 * are rows j - pos .. j of the scratch layer. A block of one token (decode)
 * takes llama_attend, a longer one llama_attend_block. Padding columns
 * attend to nothing (their q stays zero). */
static void attn_part(llama_ctx *c, int32_t il, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t hd = hp->head_dim, nh = hp->n_head, nkv = hp->n_head_kv, group = nh / nkv;
    int32_t per = att_heads_per_item(c);
    int64_t runs = (group + per - 1) / per, items = (int64_t)c->n_blk * nkv * runs;
    char *scratch = c->tiles + (size_t)ith * c->tile_bytes;
    for (int64_t it = ith; it < items; it += nth) {
        int64_t b = it / (nkv * runs), g = it / runs % nkv, h0 = g * group + it % runs * per;
        int32_t n_q = (int32_t)(g * group + group - h0 < per ? g * group + group - h0 : per);
        int32_t j = c->blk[b], n_tok = c->blk[b + 1] - j;
        int32_t slot = c->tok_slot[j], kl = c->embed ? 0 : il;
        if (slot < 0) continue;
        size_t first = c->embed ? (size_t)(j - c->tok_pos[j]) : 0;
        float *q = c->q + (j * nh + h0) * hd;
        const char *k_rows = kv_k_rows(&c->kv, slot, kl, (int32_t)g) + first * c->kv.row_k;
        const char *v_rows = kv_v_rows(&c->kv, slot, kl, (int32_t)g) + first * c->kv.row_v;
        if (n_tok == 1)
            llama_attend(c->kern, c->kv.type_k, c->kv.type_v, (int32_t)hd, n_q, q, k_rows, v_rows,
                         c->tok_pos[j] + 1, q, scratch);
        else
            llama_attend_block(c->kern, c->kv.type_k, c->kv.type_v, (int32_t)hd, n_tok, n_q, q,
                               nh * hd, k_rows, v_rows, c->tok_pos[j] + 1, q,
                               c->blk_scratch + (size_t)ith * c->blk_bytes);
    }
}

/* gate = silu(gate) * up over this thread's share (the swiglu kernel). */
static void swiglu_part(llama_ctx *c, int ith, int nth) {
    int64_t lo, hi;
    split((int64_t)c->n_tok * c->m->hp->n_ff, ith, nth, &lo, &hi);
    if (hi > lo) c->kern->swiglu(c->gate + lo, c->up + lo, hi - lo);
}

/* ---- the pass ---- */

/* One block. k: the pass's trace chain (thread 0's, on at detail=ops;
 * off elsewhere): each phase is timed up to the barrier that ends it, which
 * every thread has reached, so thread 0's spans are the phases' wall time. */
static void layer(llama_ctx *c, int32_t il, trace_lap *k, int ith, int nth) {
    const struct llama_layer *L = &c->m->layers[il];
    int32_t n = c->n_tok;
    trace_arg a = TRACE_I("layer", il);
    /* attention: the previous layer's FFN output joins the residual first */
    trace_lap_open(k);
    add_norm_part(c, L->attn_norm, il > 0, ith, nth);
    barrier(c);
    trace_lap_span(k, "attn_norm", "op", &a);
    mm(c, &L->wq, c->xn, n, c->q, 0, NULL, ith, nth);
    mm(c, &L->wk, c->xn, n, c->k, 0, &L->wq, ith, nth);
    mm(c, &L->wv, c->xn, n, c->v, 0, &L->wk, ith, nth);
    barrier(c);
    trace_lap_span(k, "attn_qkv", "op", &a);
    qkv_part(c, il, ith, nth);
    barrier(c);
    trace_lap_span(k, "attn_rope", "op", &a); /* rotation and the KV cache writes */
    attn_part(c, il, ith, nth);
    barrier(c);
    trace_lap_span(k, "attn_core", "op", &a);
    mm(c, &L->wo, c->q, n, c->xn, 0, NULL, ith, nth);
    barrier(c);
    trace_lap_span(k, "attn_out", "op", &a);
    trace_lap_close(k, "attention", "op", &a);
    /* FFN */
    trace_lap_open(k);
    add_norm_part(c, L->ffn_norm, true, ith, nth);
    barrier(c);
    trace_lap_span(k, "ffn_norm", "op", &a);
    mm(c, &L->gate, c->xn, n, c->gate, 0, NULL, ith, nth);
    mm(c, &L->up, c->xn, n, c->up, 0, &L->gate, ith, nth);
    barrier(c);
    trace_lap_span(k, "ffn_gate_up", "op", &a);
    swiglu_part(c, ith, nth);
    barrier(c);
    trace_lap_span(k, "ffn_act", "op", &a);
    mm(c, &L->down, c->gate, n, c->xn, 0, NULL, ith, nth);
    barrier(c);
    trace_lap_span(k, "ffn_down", "op", &a);
    trace_lap_close(k, "ffn", "op", &a);
}

/* The final residual and output norm of the rows that want an output: row r
 * of xn becomes token out_src[r]'s final hidden state. */
static void final_norm_part(llama_ctx *c, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t d = hp->n_embd, lo, hi;
    split((int64_t)c->n_tok * d, ith, nth, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) c->x[i] += c->xn[i];
    barrier(c);
    split(c->n_out, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        rmsnorm(c->xn + r * d, c->x + (int64_t)c->out_src[r] * d, c->m->output_norm, d,
                hp->norm_eps);
}

/* The final norm and output projection of the rows that want logits: rows
 * [0, n_last) into the context's buffer, then each item that wants every
 * token's logits straight into its own buffer. */
static void output_part(llama_ctx *c, int ith, int nth) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t d = hp->n_embd;
    final_norm_part(c, ith, nth);
    barrier(c);
    bool first = true;
    if (c->n_last) {
        mm(c, &c->m->output, c->xn, c->n_last, c->logits, hp->n_vocab, NULL, ith, nth);
        first = false;
    }
    int32_t row = c->n_last;
    for (int32_t i = 0; i < c->n_items; i++) {
        const struct llama_batch_item *it = &c->items[i];
        if (!it->logits || !it->all) continue;
        if (!first) barrier(c); /* the workspace is converted anew */
        mm(c, &c->m->output, c->xn + (int64_t)row * d, it->n, it->logits, hp->n_vocab, NULL, ith,
           nth);
        first = false;
        row += it->n;
    }
}

/* The pass. At detail=ops thread 0 (the caller's thread, inside its
 * "forward" span) records token_embd, each layer's attention and ffn with
 * their phases, and lm_head (output_norm for embed). */
static void step_task(void *arg, int ith, int nth) {
    llama_ctx *c = arg;
    trace_lap k;
    trace_lap_start(&k, c->trace_ops && ith == 0);
    trace_arg a = TRACE_I("tokens", c->n_tok);
    embed_part(c, c->tok_id, ith, nth);
    rope_part(c, ith, nth);
    barrier(c);
    trace_lap_span(&k, "token_embd", "op", &a);
    for (int32_t il = 0; il < (int32_t)c->m->hp->n_layer; il++) layer(c, il, &k, ith, nth);
    /* the pass ends without a barrier (kiln_pool_run waits for every
     * thread); traced, one more barrier times the last phase on thread 0 */
    a = TRACE_I("tokens", c->n_out);
    if (c->embed) {
        final_norm_part(c, ith, nth);
        if (c->trace_ops) barrier(c);
        trace_lap_span(&k, "output_norm", "op", &a);
    } else if (c->n_out) {
        output_part(c, ith, nth);
        if (c->trace_ops) barrier(c);
        trace_lap_span(&k, "lm_head", "op", &a);
    }
    trace_lap_end(&k);
}

/* ---- steps ---- */

static kiln_status check_item(llama_ctx *c, const struct llama_batch_item *it, int32_t i) {
    int32_t n_vocab = (int32_t)c->m->hp->n_vocab;
    kiln_status s = kv_slot_check(&c->kv, it->seq, "decode");
    if (s) return s;
    if (c->stamp[it->seq] == c->step_no)
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: sequence %d appears twice in the step",
                         it->seq);
    c->stamp[it->seq] = c->step_no;
    if (!it->tokens || it->n <= 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: item %d (sequence %d) has no tokens", i,
                         it->seq);
    int32_t past = c->kv.n_past[it->seq];
    if (it->n > c->n_ctx - past)
        return kiln_fail(KILN_ERR_RANGE,
                         "decode: %d tokens at position %d do not fit in the context of %d "
                         "(sequence %d)",
                         it->n, past, c->n_ctx, it->seq);
    for (int32_t t = 0; t < it->n; t++)
        if (it->tokens[t] < 0 || it->tokens[t] >= n_vocab)
            return kiln_fail(KILN_ERR_RANGE,
                             "decode: token %d at index %d is outside the vocabulary of %d "
                             "(sequence %d)",
                             it->tokens[t], t, n_vocab, it->seq);
    return KILN_OK;
}

kiln_status llama_decode_batch(llama_ctx *c, const struct llama_batch_item *items,
                               int32_t n_items) {
    if (n_items < 0 || (n_items > 0 && !items))
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: %d items", n_items);
    if (c->embed)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "decode: the context was made for embeddings (llama_embed)");
    if (++c->step_no == 0) { /* wrapped: forget old stamps */
        memset(c->stamp, 0, (size_t)c->n_seq * sizeof *c->stamp);
        c->step_no = 1;
    }
    int64_t total = 0;
    for (int32_t i = 0; i < n_items; i++) {
        kiln_status s = check_item(c, &items[i], i);
        if (s) return s;
        total += items[i].n;
    }
    if (total > c->n_batch)
        return kiln_fail(KILN_ERR_RANGE,
                         "decode: the step has %lld tokens, more than the batch of %d",
                         (long long)total, c->n_batch);
    if (total == 0) return KILN_OK;
    /* the step's tokens, their sequences and positions, and the logits rows:
     * first each last-token row, then every row of the all-logits items */
    int32_t j = 0, n_last = 0;
    for (int32_t i = 0; i < n_items; i++) {
        const struct llama_batch_item *it = &items[i];
        memcpy(c->tok_id + j, it->tokens, (size_t)it->n * sizeof *it->tokens);
        for (int32_t t = 0; t < it->n; t++, j++) {
            c->tok_slot[j] = it->seq;
            c->tok_pos[j] = c->kv.n_past[it->seq] + t;
        }
        if (it->logits && !it->all) c->out_src[n_last++] = j - 1;
    }
    int32_t n_out = n_last;
    j = 0;
    for (int32_t i = 0; i < n_items; i++) {
        if (items[i].logits && items[i].all)
            for (int32_t t = 0; t < items[i].n; t++) c->out_src[n_out++] = j + t;
        j += items[i].n;
    }
    c->items = items;
    c->n_items = n_items;
    c->n_tok = (int32_t)total;
    c->n_last = n_last;
    c->n_out = n_out;
    make_blocks(c);
    c->trace_ops = trace_on_ops(); /* once per pass */
    if (c->pool)
        kiln_pool_run(c->pool, step_task, c);
    else
        step_task(c, 0, 1);
    int32_t r = 0;
    for (int32_t i = 0; i < n_items; i++) {
        const struct llama_batch_item *it = &items[i];
        c->kv.n_past[it->seq] += it->n;
        if (it->logits && !it->all)
            memcpy(it->logits, c->logits + (size_t)r++ * c->m->hp->n_vocab,
                   (size_t)c->m->hp->n_vocab * sizeof(float));
    }
    c->items = NULL;
    return KILN_OK;
}

kiln_status llama_decode(llama_ctx *c, const int32_t *tokens, int32_t n, float *logits, bool all) {
    if (n < 0 || (n > 0 && !tokens)) return kiln_fail(KILN_ERR_INVALID_ARG, "decode: %d tokens", n);
    if (c->embed)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "decode: the context was made for embeddings (llama_embed)");
    if (!c->kv.used[0])
        return kiln_fail(KILN_ERR_INVALID_ARG, "decode: sequence 0 was freed (kiln_ctx_reset "
                                               "claims it again)");
    int32_t n_vocab = (int32_t)c->m->hp->n_vocab, past = c->kv.n_past[0];
    if (n > c->n_ctx - past)
        return kiln_fail(KILN_ERR_RANGE,
                         "decode: %d tokens at position %d do not fit in the context of %d", n,
                         past, c->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return kiln_fail(KILN_ERR_RANGE,
                             "decode: token %d at index %d is outside the vocabulary of %d",
                             tokens[i], i, n_vocab);
    for (int32_t off = 0; off < n; off += c->n_batch) {
        int32_t nb = n - off < c->n_batch ? n - off : c->n_batch;
        struct llama_batch_item it = {.seq = 0, .tokens = tokens + off, .n = nb, .all = all};
        if (logits && all)
            it.logits = logits + (int64_t)off * n_vocab;
        else if (logits && off + nb == n)
            it.logits = logits;
        kiln_status s = llama_decode_batch(c, &it, 1);
        KILN_ASSERT(s == KILN_OK); /* everything was checked above */
    }
    return KILN_OK;
}

/* ---- embeddings ---- */

kiln_status llama_embed(llama_ctx *c, const int32_t *tokens, const int32_t *seq_start,
                        int32_t n_seq, const float **hidden) {
    int32_t n_vocab = (int32_t)c->m->hp->n_vocab;
    if (!c->embed)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "embed: the context was not made for embeddings (llama_ctx_params.embed)");
    if (n_seq <= 0 || !tokens || !seq_start || seq_start[0] != 0)
        return kiln_fail(KILN_ERR_RANGE, "embed: a batch of %d sequences", n_seq);
    int32_t n = seq_start[n_seq];
    if (n > c->n_batch)
        return kiln_fail(KILN_ERR_RANGE, "embed: %d tokens, more than the batch of %d", n,
                         c->n_batch);
    for (int32_t i = 0; i < n_seq; i++) {
        int32_t len = seq_start[i + 1] - seq_start[i];
        if (len <= 0 || len > c->n_ctx)
            return kiln_fail(KILN_ERR_RANGE,
                             "embed: sequence %d has %d tokens; it must have 1 to %d", i, len,
                             c->n_ctx);
        for (int32_t t = seq_start[i]; t < seq_start[i + 1]; t++) {
            if (tokens[t] < 0 || tokens[t] >= n_vocab)
                return kiln_fail(KILN_ERR_RANGE,
                                 "embed: token %d of sequence %d is outside the vocabulary of %d",
                                 tokens[t], i, n_vocab);
            c->tok_id[t] = tokens[t];
            c->tok_slot[t] = 0;
            c->tok_pos[t] = t - seq_start[i];
            c->out_src[t] = t;
        }
    }
    int32_t nc = (n + c->n_pad - 1) / c->n_pad * c->n_pad; /* <= n_batch, a multiple of n_pad */
    for (int32_t t = n; t < nc; t++) {
        c->tok_id[t] = 0;
        c->tok_slot[t] = -1;
        c->tok_pos[t] = 0;
    }
    c->items = NULL;
    c->n_items = 0;
    c->n_tok = nc;
    c->n_last = 0;
    c->n_out = n;
    make_blocks(c);
    c->trace_ops = trace_on_ops(); /* once per pass */
    if (c->pool)
        kiln_pool_run(c->pool, step_task, c);
    else
        step_task(c, 0, 1);
    c->kv.n_past[0] = 0;
    *hidden = c->xn;
    return KILN_OK;
}
