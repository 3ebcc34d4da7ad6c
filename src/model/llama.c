/* llama.c - the llama-family forward pass (see llama.h).
 *
 * Layout and invariants of a context:
 *   - activations are row-major per token: x[i * n_embd ...] is token i of
 *     the current batch (n <= n_batch tokens);
 *   - the KV cache holds, per layer, n_ctx rows of n_embd_kv floats:
 *     k_cache[(il * n_ctx + pos) * n_embd_kv + kv_head * head_dim + d]; rows
 *     [0, n_past) are valid;
 *   - every buffer is sized at creation for n_batch tokens, and the matmul
 *     workspace for the largest weight at n_batch columns, so decoding
 *     never allocates;
 *   - weights were checked against the kernel table at load time, so a
 *     matrix product cannot fail for a missing kernel mid-pass.
 * The numerics follow ggml's where cheap (RMSNorm sum in double, rotation
 * angles by repeated multiplication in float, softmax sum in double), so
 * results stay close to llama.cpp's.
 */
#include "model/llama.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/types.h"

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

struct llama_ctx {
    const llama_model *m;
    const struct kiln_kernels *kern;
    kiln_pool *pool;
    kiln_matmul_ctx *mm;
    int32_t n_ctx, n_batch, n_past, n_threads;
    float *k_cache, *v_cache;
    float *x, *xn, *q, *k, *v, *att, *gate, *up; /* per-token activations */
    float *rope;                                 /* n_batch rows of n_rot floats: cos, sin pairs */
    float *scores;                               /* n_threads rows of n_ctx floats */
};

static float *alloc_floats(uint64_t n, kiln_status *s) {
    uint64_t bytes;
    if (*s) return NULL;
    float *p = NULL;
    if (kiln_mul_ok(n ? n : 1, sizeof(float), &bytes) && bytes <= SIZE_MAX)
        p = kiln_aligned_alloc(KILN_CACHE_LINE, (size_t)bytes);
    if (!p)
        *s = kiln_fail(KILN_ERR_NOMEM, "llama: cannot allocate %llu floats of context state",
                       (unsigned long long)n);
    return p;
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

static kiln_status alloc_state(llama_ctx *c) {
    const struct arch_hparams *hp = c->m->hp;
    uint64_t nb = (uint64_t)c->n_batch, d = hp->n_embd, dq = arch_n_embd_q(hp);
    uint64_t dkv = arch_n_embd_kv(hp), ff = hp->n_ff;
    uint64_t cache = (uint64_t)hp->n_layer * (uint64_t)c->n_ctx * dkv;
    kiln_status s = KILN_OK;
    c->k_cache = alloc_floats(cache, &s);
    c->v_cache = alloc_floats(cache, &s);
    c->x = alloc_floats(nb * d, &s);
    c->xn = alloc_floats(nb * (d > dq ? d : dq), &s);
    c->q = alloc_floats(nb * dq, &s);
    c->k = alloc_floats(nb * dkv, &s);
    c->v = alloc_floats(nb * dkv, &s);
    c->att = alloc_floats(nb * dq, &s);
    c->gate = alloc_floats(nb * ff, &s);
    c->up = alloc_floats(nb * ff, &s);
    c->rope = alloc_floats(nb * hp->n_rot, &s);
    c->scores = alloc_floats((uint64_t)c->n_threads * (uint64_t)c->n_ctx, &s);
    return s;
}

llama_ctx *llama_ctx_create(const llama_model *m, int32_t n_ctx, int32_t n_batch, kiln_pool *pool,
                            kiln_status *st) {
    kiln_status s = KILN_OK;
    llama_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        s = kiln_fail(KILN_ERR_NOMEM, "llama: out of memory for a context");
        goto fail;
    }
    if (n_ctx <= 0 || n_batch <= 0) {
        s = kiln_fail(KILN_ERR_INVALID_ARG, "llama: context %d and batch %d must be positive",
                      n_ctx, n_batch);
        goto fail;
    }
    c->m = m;
    c->pool = pool;
    c->n_threads = pool ? kiln_pool_size(pool) : 1;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch < n_ctx ? n_batch : n_ctx;
    c->kern = kiln_kernels_best();
    KILN_ASSERT(c->kern->vec_dot[KILN_TYPE_F32]); /* attention's dot products */
    if ((s = alloc_state(c))) goto fail;
    c->mm = kiln_matmul_ctx_create(pool, c->kern, work_size(m, c->n_batch), &s);
    if (!c->mm) goto fail;
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
    float *bufs[] = {c->k_cache, c->v_cache, c->x,    c->xn, c->q,    c->k,
                     c->v,       c->att,     c->gate, c->up, c->rope, c->scores};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kiln_aligned_free(bufs[i]);
    free(c);
}

int32_t llama_ctx_n_ctx(const llama_ctx *c) {
    return c->n_ctx;
}
int32_t llama_ctx_n_past(const llama_ctx *c) {
    return c->n_past;
}
void llama_ctx_reset(llama_ctx *c) {
    c->n_past = 0;
}

/* ---- operations ---- */

/* y[i] = x[i] / rms(x) * w[i] for each of n rows of d floats. */
static void rmsnorm_rows(float *y, const float *x, const float *w, int32_t n, int64_t d,
                         float eps) {
    for (int32_t r = 0; r < n; r++) {
        const float *xr = x + r * d;
        float *yr = y + r * d;
        double ss = 0;
        for (int64_t i = 0; i < d; i++) ss += (double)(xr[i] * xr[i]);
        float scale = 1.0f / sqrtf((float)(ss / (double)d) + eps);
        for (int64_t i = 0; i < d; i++) yr[i] = (xr[i] * scale) * w[i];
    }
}

static void add_rows(float *y, const float *x, int64_t count) {
    for (int64_t i = 0; i < count; i++) y[i] += x[i];
}

static void add_bias(float *y, const float *b, int32_t n, int64_t d) {
    if (!b) return;
    for (int32_t r = 0; r < n; r++) add_rows(y + r * d, b, d);
}

/* gate = silu(gate) * up. */
static void swiglu(float *gate, const float *up, int64_t count) {
    for (int64_t i = 0; i < count; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* y = W x for n tokens (columns). */
static void matmul(llama_ctx *c, const struct llama_w *w, const float *x, int32_t n, float *y,
                   int64_t y_stride) {
    struct kiln_matmul_op op = {.type = w->type,
                                .w = w->data,
                                .w_stride = w->row_bytes,
                                .nr = w->n_out,
                                .n = w->n_in,
                                .x = x,
                                .nc = n,
                                .y = y,
                                .y_stride = y_stride};
    kiln_status s = kiln_matmul_run(c->mm, &op);
    KILN_ASSERT(s == KILN_OK); /* shapes and kernels were checked at load */
}

static void embed(llama_ctx *c, const int32_t *tokens, int32_t n) {
    const struct llama_w *e = &c->m->tok_embd;
    for (int32_t i = 0; i < n; i++) {
        const char *row = (const char *)e->data + (size_t)tokens[i] * e->row_bytes;
        c->kern->to_float[e->type](row, c->x + (int64_t)i * e->n_in, e->n_in);
    }
}

/* cos/sin of each rotated pair for positions pos0 .. pos0 + n - 1. */
static void rope_table(llama_ctx *c, int32_t pos0, int32_t n) {
    const struct arch_hparams *hp = c->m->hp;
    int32_t half = (int32_t)hp->n_rot / 2;
    float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    for (int32_t i = 0; i < n; i++) {
        float *cs = c->rope + (int64_t)i * hp->n_rot, theta = (float)(pos0 + i);
        for (int32_t j = 0; j < half; j++) {
            cs[2 * j] = cosf(theta);
            cs[2 * j + 1] = sinf(theta);
            theta *= theta_scale;
        }
    }
}

/* Rotates the first n_rot dims of each of n_heads heads of every token:
 * pairs (2j, 2j+1) (NORM) or (j, j + n_rot/2) (NEOX). */
static void rope_apply(const llama_ctx *c, float *v, int32_t n, uint32_t n_heads) {
    const struct arch_hparams *hp = c->m->hp;
    bool neox = hp->arch->flags & ARCH_F_ROPE_NEOX;
    int32_t half = (int32_t)hp->n_rot / 2, hd = (int32_t)hp->head_dim;
    for (int32_t i = 0; i < n; i++) {
        const float *cs = c->rope + (int64_t)i * hp->n_rot;
        for (uint32_t h = 0; h < n_heads; h++) {
            float *x = v + ((int64_t)i * n_heads + h) * hd;
            for (int32_t j = 0; j < half; j++) {
                int32_t i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
                float x0 = x[i0], x1 = x[i1], co = cs[2 * j], si = cs[2 * j + 1];
                x[i0] = x0 * co - x1 * si;
                x[i1] = x0 * si + x1 * co;
            }
        }
    }
}

/* o += w * v; unrolled by 8 so the compiler's straight-line vectorizer takes it. */
static void axpy(float *restrict o, const float *restrict v, float w, int64_t n) {
    int64_t d = 0;
    for (; d + 8 <= n; d += 8)
        for (int j = 0; j < 8; j++) o[d + j] += w * v[d + j];
    for (; d < n; d++) o[d] += w * v[d];
}

struct attn_task {
    llama_ctx *c;
    int32_t il, n, pos0;
};

/* One (token, head) pair: softmax(q . K / sqrt(d)) V over positions 0..pos. */
static void attend_one(const llama_ctx *c, int32_t il, int32_t i, uint32_t h, int32_t pos,
                       float *s) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t hd = hp->head_dim, dq = arch_n_embd_q(hp), dkv = arch_n_embd_kv(hp);
    int64_t kvh = h / (hp->n_head / hp->n_head_kv);
    const float *q = c->q + i * dq + h * hd;
    const float *kb = c->k_cache + (int64_t)il * c->n_ctx * dkv + kvh * hd;
    const float *vb = c->v_cache + (int64_t)il * c->n_ctx * dkv + kvh * hd;
    kiln_vec_dot_fn dot = c->kern->vec_dot[KILN_TYPE_F32];
    float scale = 1.0f / sqrtf((float)hd), max = -INFINITY;
    for (int32_t t = 0; t <= pos; t++) {
        s[t] = dot(hd, kb + t * dkv, q) * scale;
        if (s[t] > max) max = s[t];
    }
    double sum = 0;
    for (int32_t t = 0; t <= pos; t++) {
        s[t] = expf(s[t] - max);
        sum += s[t];
    }
    float inv = (float)(1.0 / sum), *o = c->att + i * dq + h * hd;
    memset(o, 0, (size_t)hd * sizeof *o);
    for (int32_t t = 0; t <= pos; t++) axpy(o, vb + t * dkv, s[t] * inv, hd);
}

static void attn_worker(void *arg, int ith, int nth) {
    const struct attn_task *t = arg;
    const llama_ctx *c = t->c;
    uint32_t n_head = c->m->hp->n_head;
    int64_t items = (int64_t)t->n * n_head;
    int64_t lo = items * ith / nth, hi = items * (ith + 1) / nth;
    float *s = c->scores + (int64_t)ith * c->n_ctx;
    for (int64_t it = lo; it < hi; it++) {
        int32_t i = (int32_t)(it / n_head);
        attend_one(c, t->il, i, (uint32_t)(it % n_head), t->pos0 + i, s);
    }
}

/* ---- the pass ---- */

static void attention_block(llama_ctx *c, int32_t il, int32_t n, int32_t pos0) {
    const struct arch_hparams *hp = c->m->hp;
    const struct llama_layer *L = &c->m->layers[il];
    int64_t d = hp->n_embd, dq = arch_n_embd_q(hp), dkv = arch_n_embd_kv(hp);

    rmsnorm_rows(c->xn, c->x, L->attn_norm, n, d, hp->norm_eps);
    matmul(c, &L->wq, c->xn, n, c->q, 0);
    matmul(c, &L->wk, c->xn, n, c->k, 0);
    matmul(c, &L->wv, c->xn, n, c->v, 0);
    add_bias(c->q, L->bq, n, dq);
    add_bias(c->k, L->bk, n, dkv);
    add_bias(c->v, L->bv, n, dkv);
    rope_apply(c, c->q, n, hp->n_head);
    rope_apply(c, c->k, n, hp->n_head_kv);

    size_t row0 = ((size_t)il * (size_t)c->n_ctx + (size_t)pos0) * (size_t)dkv;
    memcpy(c->k_cache + row0, c->k, (size_t)n * (size_t)dkv * sizeof(float));
    memcpy(c->v_cache + row0, c->v, (size_t)n * (size_t)dkv * sizeof(float));

    struct attn_task task = {c, il, n, pos0};
    if (c->pool)
        kiln_pool_run(c->pool, attn_worker, &task);
    else
        attn_worker(&task, 0, 1);

    matmul(c, &L->wo, c->att, n, c->xn, 0);
    add_rows(c->x, c->xn, n * d);
}

static void ffn_block(llama_ctx *c, int32_t il, int32_t n) {
    const struct arch_hparams *hp = c->m->hp;
    const struct llama_layer *L = &c->m->layers[il];
    int64_t d = hp->n_embd;

    rmsnorm_rows(c->xn, c->x, L->ffn_norm, n, d, hp->norm_eps);
    matmul(c, &L->gate, c->xn, n, c->gate, 0);
    matmul(c, &L->up, c->xn, n, c->up, 0);
    swiglu(c->gate, c->up, n * (int64_t)hp->n_ff);
    matmul(c, &L->down, c->gate, n, c->xn, 0);
    add_rows(c->x, c->xn, n * d);
}

/* Final norm and output projection: every token's logits or the last one's. */
static void output_block(llama_ctx *c, int32_t n, float *logits, bool all) {
    const struct arch_hparams *hp = c->m->hp;
    int64_t d = hp->n_embd;
    const float *x = all ? c->x : c->x + (int64_t)(n - 1) * d;
    int32_t rows = all ? n : 1;
    rmsnorm_rows(c->xn, x, c->m->output_norm, rows, d, hp->norm_eps);
    matmul(c, &c->m->output, c->xn, rows, logits, 0);
}

/* One batch of n <= n_batch tokens that fits in the cache. */
static void forward(llama_ctx *c, const int32_t *tokens, int32_t n, float *logits, bool all) {
    int32_t pos0 = c->n_past;
    embed(c, tokens, n);
    rope_table(c, pos0, n);
    for (int32_t il = 0; il < (int32_t)c->m->hp->n_layer; il++) {
        attention_block(c, il, n, pos0);
        ffn_block(c, il, n);
    }
    c->n_past += n;
    if (logits) output_block(c, n, logits, all);
}

kiln_status llama_decode(llama_ctx *c, const int32_t *tokens, int32_t n, float *logits, bool all) {
    int32_t n_vocab = (int32_t)c->m->hp->n_vocab;
    if (n < 0 || n > c->n_ctx - c->n_past)
        return kiln_fail(KILN_ERR_RANGE,
                         "decode: %d tokens at position %d do not fit in the context of %d", n,
                         c->n_past, c->n_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= n_vocab)
            return kiln_fail(KILN_ERR_RANGE,
                             "decode: token %d at index %d is outside the "
                             "vocabulary of %d",
                             tokens[i], i, n_vocab);
    for (int32_t off = 0; off < n; off += c->n_batch) {
        int32_t nb = n - off < c->n_batch ? n - off : c->n_batch;
        float *out = NULL;
        if (logits && all)
            out = logits + (int64_t)off * n_vocab;
        else if (logits && off + nb == n)
            out = logits;
        forward(c, tokens + off, nb, out, all);
    }
    return KILN_OK;
}
