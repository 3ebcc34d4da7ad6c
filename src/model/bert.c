/* bert.c - the BERT-family encoder forward pass over packed batches (see
 * bert.h).
 *
 * Layout and invariants of a context:
 *   - activations are row-major per token: x[t * n_embd ...] is token t of
 *     the batch; qkv[t * n_qkv ...] holds q (n_embd_q), then k and v
 *     (n_embd_kv each) of token t, whether they come from one fused matrix or
 *     three;
 *   - every buffer holds `cap` tokens and the matmul workspace the largest
 *     weight at `cap` columns (bert_ctx_reserve), so a pass never allocates;
 *   - per-thread attention scratch (K transposed, one row of scores) is
 *     sized for the training context at creation;
 *   - weights were checked against the kernel table at load time.
 *   - a batch of n tokens runs as n_cols = n rounded up to a multiple of
 *     KILN_GEMM_MAX_C columns; the extra columns are zero rows that belong
 *     to no sequence. The gemm kernels pick their accumulation path by the
 *     width of a column tile (compute/kern_*_avx512.c: narrow tiles take a
 *     different, equally exact path with another float summation order), and
 *     matmul.c cuts columns into tiles of KILN_GEMM_MAX_C from column 0, so
 *     with whole tiles every token's column is computed the same way in any
 *     batch. Without this a 1e-7 difference flips a rounding in the next
 *     layer's int8 activations and grows to ~1e-3 in the embedding.
 * Element-wise steps (bias, activation, residual + LayerNorm, rotary) and
 * attention have an AVX-512 version and a scalar reference; which one runs
 * is fixed per context (by the kernel table's ISA), and both compute each
 * row in an order that does not depend on the other rows, so a sequence's
 * result does not depend on the batch around it.
 * Traces: at detail=ops (obs/trace.h, sampled once per pass) the calling
 * thread records each layer's phases as spans; otherwise each phase costs
 * one test of a local.
 */
#include "model/bert.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/kernels.h"
#include "compute/matmul.h"
#include "compute/types.h"
#include "obs/trace.h"

#include <immintrin.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- loading ---- */

static kiln_status check_kernels(const gguf_file *f, const struct bert_w *w, bool rows_only) {
    const struct kiln_kernels *k = kiln_kernels_best();
    kiln_type vdt = kiln_vec_dot_type(w->type);
    bool ok = rows_only ? k->to_float[w->type] != NULL
                        : vdt != KILN_TYPE_COUNT && k->vec_dot[w->type] &&
                              (vdt == KILN_TYPE_F32 || k->from_float[vdt]);
    if (!ok)
        return kiln_fail(
            KILN_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s, which the %s kernels cannot %s yet",
            gguf_path(f), w->name, kiln_type_name(w->type) ? kiln_type_name(w->type) : "?",
            kiln_isa_name(k->isa), rows_only ? "convert to F32" : "multiply");
    return KILN_OK;
}

/* Binds an optional matrix (t NULL leaves w->data NULL). */
static kiln_status bind_w(const gguf_file *f, const gguf_tensor *t, struct bert_w *w,
                          bool rows_only) {
    memset(w, 0, sizeof *w);
    if (!t) return KILN_OK;
    *w = (struct bert_w){t->name,  t->type,  t->data,
                         t->ne[0], t->ne[1], kiln_row_size(t->type, t->ne[0])};
    return check_kernels(f, w, rows_only);
}

/* An F32 tensor (norm, bias, learned embeddings); NULL t leaves *out NULL. */
static kiln_status bind_f32(const gguf_file *f, const gguf_tensor *t, const float **out) {
    *out = NULL;
    if (!t) return KILN_OK;
    if (t->type != KILN_TYPE_F32)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tensor '%s' has type %s; expected f32",
                         gguf_path(f), t->name,
                         kiln_type_name(t->type) ? kiln_type_name(t->type) : "?");
    *out = t->data;
    return KILN_OK;
}

static kiln_status require(const gguf_file *f, const void *p, const char *what, int il) {
    if (p) return KILN_OK;
    return kiln_fail(KILN_ERR_FORMAT, "%s: layer %d has no %s", gguf_path(f), il, what);
}

static kiln_status bind_layer(const gguf_file *f, const struct arch_model *am, int il,
                              struct bert_layer *L) {
    kiln_status s;
#define T(role) arch_layer_tensor(am, il, ARCH_T_##role)
    if ((s = bind_w(f, T(ATTN_Q), &L->wq, false)) || (s = bind_w(f, T(ATTN_K), &L->wk, false)) ||
        (s = bind_w(f, T(ATTN_V), &L->wv, false)) ||
        (s = bind_w(f, T(ATTN_QKV), &L->wqkv, false)) ||
        (s = bind_w(f, T(ATTN_OUT), &L->wo, false)) || (s = bind_w(f, T(FFN_UP), &L->up, false)) ||
        (s = bind_w(f, T(FFN_GATE), &L->gate, false)) ||
        (s = bind_w(f, T(FFN_DOWN), &L->down, false)) || (s = bind_f32(f, T(ATTN_Q_B), &L->bq)) ||
        (s = bind_f32(f, T(ATTN_K_B), &L->bk)) || (s = bind_f32(f, T(ATTN_V_B), &L->bv)) ||
        (s = bind_f32(f, T(ATTN_QKV_B), &L->bqkv)) || (s = bind_f32(f, T(ATTN_OUT_B), &L->bo)) ||
        (s = bind_f32(f, T(FFN_UP_B), &L->bup)) || (s = bind_f32(f, T(FFN_DOWN_B), &L->bdown)) ||
        (s = bind_f32(f, T(ATTN_OUT_NORM), &L->attn_norm)) ||
        (s = bind_f32(f, T(ATTN_OUT_NORM_B), &L->attn_norm_b)) ||
        (s = bind_f32(f, T(LAYER_OUT_NORM), &L->out_norm)) ||
        (s = bind_f32(f, T(LAYER_OUT_NORM_B), &L->out_norm_b)))
        return s;
#undef T
    bool fused = L->wqkv.data != NULL;
    bool qkv = fused || (L->wq.data && L->wk.data && L->wv.data);
    if ((s = require(f, qkv ? L : NULL, "attn_q/k/v", il)) ||
        (s = require(f, L->wo.data, "attn_output", il)) ||
        (s = require(f, L->up.data, "ffn_up", il)) ||
        (s = require(f, L->down.data, "ffn_down", il)) ||
        (s = require(f, L->attn_norm, "attn_output_norm", il)) ||
        (s = require(f, L->out_norm, "layer_output_norm", il)))
        return s;
    if ((am->hp.arch->flags & ARCH_F_GATED_FFN) && !L->gate.data)
        return require(f, NULL, "ffn_gate", il);
    return KILN_OK;
}

bert_model *bert_model_load(const gguf_file *f, kiln_status *st) {
    kiln_status s;
    bert_model *m = calloc(1, sizeof *m);
    if (!m) {
        s = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", gguf_path(f));
        goto fail;
    }
    if ((s = arch_model_load(f, &m->am))) goto fail;
    m->hp = &m->am.hp;
    unsigned flags = m->hp->arch->flags;
    if ((flags & ARCH_F_CAUSAL) || !(flags & ARCH_F_LAYERNORM) || !(flags & ARCH_F_POST_NORM)) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED,
                      "%s: architecture '%s' is not a bidirectional encoder; the encoder "
                      "path supports bert and nomic-bert",
                      gguf_path(f), m->hp->arch->name);
        goto fail;
    }
    const gguf_tensor *const *g = m->am.global;
    if ((s = bind_w(f, g[ARCH_T_TOKEN_EMBD], &m->tok_embd, true)) ||
        (s = bind_f32(f, g[ARCH_T_TOKEN_TYPES], &m->type_embd)) ||
        (s = bind_f32(f, g[ARCH_T_POS_EMBD], &m->pos_embd)) ||
        (s = bind_f32(f, g[ARCH_T_EMBD_NORM], &m->embd_norm)) ||
        (s = bind_f32(f, g[ARCH_T_EMBD_NORM_B], &m->embd_norm_b)))
        goto fail;
    if (!m->embd_norm || !m->tok_embd.data || (!(flags & ARCH_F_ROPE) && !m->pos_embd)) {
        s = kiln_fail(KILN_ERR_FORMAT,
                      "%s: missing token_embd, token_embd_norm or position_embd tensor",
                      gguf_path(f));
        goto fail;
    }
    if (flags & ARCH_F_ROPE) m->pos_embd = NULL; /* rotary positions replace learned ones */
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
    bert_model_free(m);
    if (st) *st = s;
    return NULL;
}

void bert_model_free(bert_model *m) {
    if (!m) return;
    free(m->layers);
    arch_model_free(&m->am);
    free(m);
}

/* ---- context ---- */

struct bert_ctx {
    const bert_model *m;
    const struct kiln_kernels *kern; /* &kern_tuned */
    struct kiln_kernels kern_tuned;  /* chosen for m's products at creation (arch.h) */
    kiln_pool *pool;
    kiln_matmul_ctx *mm;
    int n_threads;
    bool avx512;
    int32_t cap;                            /* tokens the buffers hold (columns) */
    int32_t n_qkv, lpad;                    /* q+k+v row width; context padded to 16 */
    float *x, *qkv, *att, *tmp, *ff, *gate; /* per-token activations */
    int32_t *pos;                           /* position of each token in its sequence */
    float *rope;                            /* n_ctx rows of n_rot floats: cos, sin pairs */
    float *scratch;                         /* per thread: K^T (head_dim x lpad), scores */
    size_t scratch_stride;
};

static int64_t ff_floats(const bert_model *m) {
    return (int64_t)m->hp->n_ff * ((m->hp->arch->flags & ARCH_F_GATED_FFN) ? 2 : 1);
}

static size_t work_size(const bert_model *m, int32_t nb) {
    size_t best = 0;
    for (uint32_t il = 0; il < m->hp->n_layer; il++) {
        const struct bert_layer *L = &m->layers[il];
        const struct bert_w *ws[] = {&L->wq, &L->wk,   &L->wv, &L->wqkv,
                                     &L->wo, &L->gate, &L->up, &L->down};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            if (!ws[i]->data) continue;
            size_t w = kiln_matmul_work_size(ws[i]->type, ws[i]->n_in, nb);
            if (w > best) best = w;
        }
    }
    return best;
}

uint64_t bert_ctx_bytes(const bert_model *m, int32_t n_threads, int32_t n_tokens) {
    const struct arch_hparams *hp = m->hp;
    uint64_t per_tok = 2ull * hp->n_embd + arch_n_embd_q(hp) * 2ull + 2ull * arch_n_embd_kv(hp) +
                       (uint64_t)ff_floats(m) + 1;
    n_tokens = (n_tokens + KILN_GEMM_MAX_C - 1) / KILN_GEMM_MAX_C * KILN_GEMM_MAX_C;
    uint64_t bytes = per_tok * 4 * (uint64_t)n_tokens + work_size(m, n_tokens);
    uint64_t lpad = (hp->n_ctx_train + 15) / 16 * 16;
    bytes += (uint64_t)(n_threads > 0 ? n_threads : 1) * (hp->head_dim + 1) * lpad * 4;
    return bytes;
}

static float *alloc_f(uint64_t n) {
    uint64_t bytes;
    if (!kiln_mul_ok(n ? n : 1, sizeof(float), &bytes) || bytes > SIZE_MAX) return NULL;
    return kiln_aligned_alloc(KILN_CACHE_LINE, (size_t)bytes);
}

/* cos/sin of each rotated pair at every position, computed as ggml does
 * (angle by repeated multiplication in float), so results track llama.cpp. */
static void rope_table(bert_ctx *c) {
    const struct arch_hparams *hp = c->m->hp;
    int32_t half = (int32_t)hp->n_rot / 2;
    float theta_scale = powf(hp->rope_freq_base, -2.0f / (float)hp->n_rot);
    for (uint32_t p = 0; p < hp->n_ctx_train; p++) {
        float *cs = c->rope + (int64_t)p * hp->n_rot, theta = (float)p;
        for (int32_t j = 0; j < half; j++) {
            cs[2 * j] = cosf(theta);
            cs[2 * j + 1] = sinf(theta);
            theta *= theta_scale;
        }
    }
}

bert_ctx *bert_ctx_create(const bert_model *m, kiln_pool *pool, kiln_status *st) {
    kiln_status s = KILN_OK;
    const struct arch_hparams *hp = m->hp;
    bert_ctx *c = calloc(1, sizeof *c);
    if (!c) goto nomem;
    c->m = m;
    c->pool = pool;
    c->n_threads = pool ? kiln_pool_size(pool) : 1;
    arch_model_kernels(&m->am, pool, &c->kern_tuned);
    c->kern = &c->kern_tuned;
    c->avx512 = c->kern->isa == KILN_ISA_AVX512 && hp->head_dim % 16 == 0;
    c->n_qkv = (int32_t)(arch_n_embd_q(hp) + 2 * arch_n_embd_kv(hp));
    c->lpad = (int32_t)((hp->n_ctx_train + 15) / 16 * 16);
    c->scratch_stride = (size_t)(hp->head_dim + 1) * (size_t)c->lpad;
    c->scratch = alloc_f((uint64_t)c->n_threads * c->scratch_stride);
    if (!c->scratch) goto nomem;
    if (hp->arch->flags & ARCH_F_ROPE) {
        if (!(c->rope = alloc_f((uint64_t)hp->n_ctx_train * hp->n_rot))) goto nomem;
        rope_table(c);
    }
    if (!(c->mm = kiln_matmul_ctx_create(pool, c->kern, 0, &s))) goto fail;
    if (st) *st = KILN_OK;
    return c;
nomem:
    s = kiln_fail(KILN_ERR_NOMEM, "bert: out of memory for a context");
fail:
    bert_ctx_free(c);
    if (st) *st = s;
    return NULL;
}

static void free_buffers(bert_ctx *c) {
    float *bufs[] = {c->x, c->qkv, c->att, c->tmp, c->ff, c->gate};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) kiln_aligned_free(bufs[i]);
    kiln_aligned_free(c->pos);
    c->x = c->qkv = c->att = c->tmp = c->ff = c->gate = NULL;
    c->pos = NULL;
    c->cap = 0;
}

void bert_ctx_free(bert_ctx *c) {
    if (!c) return;
    free_buffers(c);
    kiln_matmul_ctx_destroy(c->mm);
    kiln_aligned_free(c->rope);
    kiln_aligned_free(c->scratch);
    free(c);
}

int32_t bert_ctx_capacity(const bert_ctx *c) {
    return c->cap;
}

/* Columns a batch of n tokens runs as (see the invariants above). */
static int32_t n_cols(int32_t n) {
    return (n + KILN_GEMM_MAX_C - 1) / KILN_GEMM_MAX_C * KILN_GEMM_MAX_C;
}

kiln_status bert_ctx_reserve(bert_ctx *c, int32_t n_tokens, uint64_t max_bytes) {
    if (n_tokens <= 0 || n_tokens > INT32_MAX - KILN_GEMM_MAX_C)
        return kiln_fail(KILN_ERR_RANGE, "bert: a batch of %d tokens", n_tokens);
    n_tokens = n_cols(n_tokens);
    if (n_tokens <= c->cap) return KILN_OK;
    const struct arch_hparams *hp = c->m->hp;
    uint64_t need = bert_ctx_bytes(c->m, c->n_threads, n_tokens);
    if (max_bytes && need > max_bytes)
        return kiln_fail(KILN_ERR_NOMEM,
                         "bert: a batch of %d tokens needs %llu bytes, over the limit of %llu",
                         n_tokens, (unsigned long long)need, (unsigned long long)max_bytes);
    uint64_t nt = (uint64_t)n_tokens;
    free_buffers(c);
    c->x = alloc_f(nt * hp->n_embd);
    c->qkv = alloc_f(nt * (uint64_t)c->n_qkv);
    c->att = alloc_f(nt * arch_n_embd_q(hp));
    c->tmp = alloc_f(nt * hp->n_embd);
    c->ff = alloc_f(nt * hp->n_ff);
    if (hp->arch->flags & ARCH_F_GATED_FFN) c->gate = alloc_f(nt * hp->n_ff);
    c->pos = kiln_aligned_alloc(KILN_CACHE_LINE, (size_t)nt * sizeof *c->pos);
    kiln_status s = KILN_OK;
    if (!c->x || !c->qkv || !c->att || !c->tmp || !c->ff || !c->pos ||
        ((hp->arch->flags & ARCH_F_GATED_FFN) && !c->gate))
        s = kiln_fail(KILN_ERR_NOMEM, "bert: cannot allocate buffers for %d tokens", n_tokens);
    if (!s) s = kiln_matmul_reserve(c->mm, work_size(c->m, n_tokens));
    if (s) {
        free_buffers(c);
        return s;
    }
    c->cap = n_tokens;
    return KILN_OK;
}

/* ---- element-wise operations: scalar reference ---- */

/* y = LN(a + b + bias) * w + wb for one row of d floats (b, bias may be NULL). */
static void ln_row_ref(float *y, const float *a, const float *b, const float *bias, const float *w,
                       const float *wb, int64_t d, float eps) {
    float sum = 0;
    for (int64_t i = 0; i < d; i++) {
        float v = b ? (bias ? b[i] + bias[i] : b[i]) + a[i] : a[i];
        y[i] = v;
        sum += v;
    }
    float mean = sum / (float)d, var = 0;
    for (int64_t i = 0; i < d; i++) {
        float v = y[i] - mean;
        y[i] = v;
        var += v * v;
    }
    float scale = 1.0f / sqrtf(var / (float)d + eps);
    for (int64_t i = 0; i < d; i++) y[i] = y[i] * scale * w[i] + (wb ? wb[i] : 0.0f);
}

/* GELU (tanh form) of x + bias, in place. */
static void gelu_row_ref(float *x, const float *bias, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = bias ? x[i] + bias[i] : x[i];
        float u = 0.7978845608f * (v + 0.044715f * v * v * v);
        x[i] = v / (1.0f + expf(-2.0f * u));
    }
}

/* gate = silu(gate) * up, in place. */
static void swiglu_row_ref(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

/* Attention of one head over one sequence of L tokens: q, k, v rows at
 * stride `st` floats, output rows at stride `ost`. s: scratch of L floats. */
static void attend_ref(const float *q, const float *k, const float *v, int64_t st, float *o,
                       int64_t ost, int32_t L, int32_t hd, float *s) {
    float scale = 1.0f / sqrtf((float)hd);
    for (int32_t i = 0; i < L; i++) {
        const float *qi = q + i * st;
        float max = -INFINITY;
        for (int32_t j = 0; j < L; j++) {
            const float *kj = k + j * st;
            float dot = 0;
            for (int32_t d = 0; d < hd; d++) dot += qi[d] * kj[d];
            s[j] = dot * scale;
            if (s[j] > max) max = s[j];
        }
        float sum = 0;
        for (int32_t j = 0; j < L; j++) sum += (s[j] = expf(s[j] - max));
        float inv = 1.0f / sum, *oi = o + i * ost;
        for (int32_t d = 0; d < hd; d++) oi[d] = 0;
        for (int32_t j = 0; j < L; j++)
            for (int32_t d = 0; d < hd; d++) oi[d] += s[j] * v[j * st + d];
        for (int32_t d = 0; d < hd; d++) oi[d] *= inv;
    }
}

/* ---- element-wise operations: AVX-512 ---- */

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma")))

static AVX512 inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* e^x to about 2 ulp (Cephes' expf polynomial, 2^n by scalef). */
static AVX512 inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.3f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

static AVX512 void ln_row_avx512(float *y, const float *a, const float *b, const float *bias,
                                 const float *w, const float *wb, int64_t d, float eps) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        __m512 v = _mm512_maskz_loadu_ps(m, a + i);
        if (b) {
            __m512 t = _mm512_maskz_loadu_ps(m, b + i);
            if (bias) t = _mm512_add_ps(t, _mm512_maskz_loadu_ps(m, bias + i));
            v = _mm512_add_ps(t, v);
        }
        _mm512_mask_storeu_ps(y + i, m, v);
        acc = _mm512_add_ps(acc, v);
    }
    __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(acc) / (float)d);
    acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        __m512 v = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + i), mean);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    __m512 scale = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)d + eps));
    for (int64_t i = 0; i < d; i += 16) {
        __mmask16 m = tail_mask(d - i);
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + i), mean), scale);
        v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(m, w + i));
        if (wb) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, wb + i));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

static AVX512 void gelu_row_avx512(float *x, const float *bias, int64_t n) {
    const __m512 c0 = _mm512_set1_ps(-2.0f * 0.7978845608f), c1 = _mm512_set1_ps(0.044715f);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + i));
        __m512 u = _mm512_fmadd_ps(_mm512_mul_ps(c1, v), _mm512_mul_ps(v, v), v);
        __m512 e = exp512(_mm512_mul_ps(c0, u));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

static AVX512 void swiglu_row_avx512(float *gate, const float *up, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = tail_mask(n - i);
        __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
        __m512 r = _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(one, e)),
                                 _mm512_maskz_loadu_ps(m, up + i));
        _mm512_mask_storeu_ps(gate + i, m, r);
    }
}

/* As attend_ref, for hd a multiple of 16 (<= 256). kt: hd x lpad scratch for
 * K transposed, s: lpad floats. Scores for 16 keys at a time are hd FMAs of
 * a broadcast q element with a row of K^T; the output row is a sum of V
 * rows scaled by the softmax weights. */
static AVX512 void attend_avx512(const float *q, const float *k, const float *v, int64_t st,
                                 float *o, int64_t ost, int32_t L, int32_t hd, float *kt, float *s,
                                 int32_t lpad) {
    int32_t lp = (L + 15) / 16 * 16;
    if ((int64_t)lp * st <= INT32_MAX) {
        /* 16 keys' element d at a time (a gather), zeros past L */
        const __m512i lane =
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for (int32_t jb = 0; jb < lp; jb += 16) {
            __mmask16 m = tail_mask(L - jb);
            __m512i idx = _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(jb)),
                                             _mm512_set1_epi32((int32_t)st));
            for (int32_t d = 0; d < hd; d++)
                _mm512_store_ps(kt + (int64_t)d * lpad + jb,
                                _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, k + d, 4));
        }
    } else {
        for (int32_t j = 0; j < lp; j++)
            for (int32_t d = 0; d < hd; d++)
                kt[(int64_t)d * lpad + j] = j < L ? k[j * st + d] : 0.0f;
    }
    const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)hd));
    int nv = hd / 16;
    for (int32_t i = 0; i < L; i++) {
        const float *qi = q + i * st;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int32_t jb = 0; jb < lp; jb += 16) {
            /* two chains (even and odd d): FMA latency, not throughput, bounds one */
            __m512 acc = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
            for (int32_t d = 0; d < hd; d += 2) {
                acc = _mm512_fmadd_ps(_mm512_set1_ps(qi[d]),
                                      _mm512_load_ps(kt + (int64_t)d * lpad + jb), acc);
                acc1 = _mm512_fmadd_ps(_mm512_set1_ps(qi[d + 1]),
                                       _mm512_load_ps(kt + (int64_t)(d + 1) * lpad + jb), acc1);
            }
            acc = _mm512_mul_ps(_mm512_add_ps(acc, acc1), scale);
            __mmask16 m = tail_mask(L - jb);
            acc = _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), acc);
            _mm512_store_ps(s + jb, acc);
            mx = _mm512_max_ps(mx, acc);
        }
        __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx)), sum = _mm512_setzero_ps();
        for (int32_t jb = 0; jb < lp; jb += 16) {
            __mmask16 m = tail_mask(L - jb);
            __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_load_ps(s + jb), vmax)));
            _mm512_store_ps(s + jb, e);
            sum = _mm512_add_ps(sum, e);
        }
        /* o = sum of V rows weighted by s, 2 vectors of the row at a time in
         * registers, even and odd keys in separate accumulators (a loop over
         * an array of nv accumulators kept them in memory, latency-bound) */
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (int t = 0; t < nv; t += 2) {
            __mmask16 m1 = t + 1 < nv ? 0xffff : 0;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
            __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
            int32_t j = 0;
            for (; j + 2 <= L; j += 2) {
                const float *v0 = v + j * st + 16 * t, *v1 = v0 + st;
                __m512 p0 = _mm512_set1_ps(s[j]), p1 = _mm512_set1_ps(s[j + 1]);
                a0 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0), a0);
                a1 = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(m1, v0 + 16), a1);
                b0 = _mm512_fmadd_ps(p1, _mm512_loadu_ps(v1), b0);
                b1 = _mm512_fmadd_ps(p1, _mm512_maskz_loadu_ps(m1, v1 + 16), b1);
            }
            if (j < L) {
                const float *v0 = v + j * st + 16 * t;
                __m512 p0 = _mm512_set1_ps(s[j]);
                a0 = _mm512_fmadd_ps(p0, _mm512_loadu_ps(v0), a0);
                a1 = _mm512_fmadd_ps(p0, _mm512_maskz_loadu_ps(m1, v0 + 16), a1);
            }
            float *oi = o + i * ost + 16 * t;
            _mm512_storeu_ps(oi, _mm512_mul_ps(_mm512_add_ps(a0, b0), inv));
            _mm512_mask_storeu_ps(oi + 16, m1, _mm512_mul_ps(_mm512_add_ps(a1, b1), inv));
        }
    }
}

/* ---- parallel steps ---- */

struct pass {
    bert_ctx *c;
    const struct bert_layer *L;
    const int32_t *tokens, *seq_start;
    int32_t n, n_seq; /* n: columns (tokens and zero padding) */
    atomic_int next;  /* attention work items handed out */
    trace_lap lap;    /* the calling thread's trace chain (on at detail=ops) */
};

typedef void (*rows_fn)(struct pass *p, int32_t r0, int32_t r1, int ith);

struct rows_task {
    struct pass *p;
    rows_fn fn;
};

static void rows_worker(void *arg, int ith, int nth) {
    struct rows_task *t = arg;
    int32_t n = t->p->n;
    t->fn(t->p, (int32_t)((int64_t)n * ith / nth), (int32_t)((int64_t)n * (ith + 1) / nth), ith);
}

/* Runs fn over the batch's tokens, split across the pool. */
static void run_rows(struct pass *p, rows_fn fn) {
    struct rows_task t = {p, fn};
    if (p->c->pool && p->n > 1)
        kiln_pool_run(p->c->pool, rows_worker, &t);
    else
        fn(p, 0, p->n, 0);
}

static void ln_rows(const bert_ctx *c, float *y, const float *a, const float *b, const float *bias,
                    const float *w, const float *wb, int32_t r0, int32_t r1) {
    int64_t d = c->m->hp->n_embd;
    float eps = c->m->hp->norm_eps;
    for (int32_t r = r0; r < r1; r++) {
        const float *br = b ? b + r * d : NULL;
        if (c->avx512)
            ln_row_avx512(y + r * d, a + r * d, br, bias, w, wb, d, eps);
        else
            ln_row_ref(y + r * d, a + r * d, br, bias, w, wb, d, eps);
    }
}

/* x = LN(tok_embd + type_embd[0] + pos_embd[pos]). */
static void embed_rows(struct pass *p, int32_t r0, int32_t r1, int ith) {
    const bert_ctx *c = p->c;
    const bert_model *m = c->m;
    int64_t d = m->hp->n_embd;
    for (int32_t t = r0; t < r1; t++) {
        float *x = c->x + t * d;
        const char *row =
            (const char *)m->tok_embd.data + (size_t)p->tokens[t] * m->tok_embd.row_bytes;
        c->kern->to_float[m->tok_embd.type](row, x, d);
        if (m->type_embd)
            for (int64_t i = 0; i < d; i++) x[i] += m->type_embd[i];
        if (m->pos_embd) {
            const float *pe = m->pos_embd + (int64_t)c->pos[t] * d;
            for (int64_t i = 0; i < d; i++) x[i] += pe[i];
        }
    }
    ln_rows(c, c->x, c->x, NULL, NULL, m->embd_norm, m->embd_norm_b, r0, r1);
}

/* Rotates the first n_rot dims of each head: pairs (j, j + n_rot/2). */
static void rope_row(const bert_ctx *c, float *v, int32_t pos, uint32_t n_heads) {
    const struct arch_hparams *hp = c->m->hp;
    int32_t half = (int32_t)hp->n_rot / 2, hd = (int32_t)hp->head_dim;
    const float *cs = c->rope + (int64_t)pos * hp->n_rot;
    bool neox = hp->arch->flags & ARCH_F_ROPE_NEOX;
    for (uint32_t h = 0; h < n_heads; h++) {
        float *x = v + (int64_t)h * hd;
        for (int32_t j = 0; j < half; j++) {
            int32_t i0 = neox ? j : 2 * j, i1 = neox ? j + half : 2 * j + 1;
            float x0 = x[i0], x1 = x[i1], co = cs[2 * j], si = cs[2 * j + 1];
            x[i0] = x0 * co - x1 * si;
            x[i1] = x0 * si + x1 * co;
        }
    }
}

static void add_vec(float *y, const float *b, int64_t n) {
    if (b)
        for (int64_t i = 0; i < n; i++) y[i] += b[i];
}

/* q/k/v biases and rotary positions. */
static void qkv_rows(struct pass *p, int32_t r0, int32_t r1, int ith) {
    const bert_ctx *c = p->c;
    const struct arch_hparams *hp = c->m->hp;
    const struct bert_layer *L = p->L;
    int64_t dq = arch_n_embd_q(hp), dkv = arch_n_embd_kv(hp);
    for (int32_t t = r0; t < r1; t++) {
        float *row = c->qkv + (int64_t)t * c->n_qkv;
        add_vec(row, L->bqkv, c->n_qkv);
        add_vec(row, L->bq, dq);
        add_vec(row + dq, L->bk, dkv);
        add_vec(row + dq + dkv, L->bv, dkv);
        if (c->rope) {
            rope_row(c, row, c->pos[t], hp->n_head);
            rope_row(c, row + dq, c->pos[t], hp->n_head_kv);
        }
    }
}

static void attn_worker(void *arg, int ith, int nth) {
    struct pass *p = arg;
    const bert_ctx *c = p->c;
    const struct arch_hparams *hp = c->m->hp;
    int32_t hd = (int32_t)hp->head_dim, n_head = (int32_t)hp->n_head;
    int32_t group = (int32_t)(hp->n_head / hp->n_head_kv);
    int64_t dq = arch_n_embd_q(hp), dkv = arch_n_embd_kv(hp);
    float *kt = c->scratch + (size_t)ith * c->scratch_stride;
    float *s = kt + (size_t)hd * (size_t)c->lpad;
    int32_t items = p->n_seq * n_head;
    for (int32_t it; (it = atomic_fetch_add(&p->next, 1)) < items;) {
        int32_t sq = it / n_head, h = it % n_head;
        int32_t t0 = p->seq_start[sq], L = p->seq_start[sq + 1] - t0;
        const float *base = c->qkv + (int64_t)t0 * c->n_qkv;
        const float *q = base + (int64_t)h * hd;
        const float *k = base + dq + (int64_t)(h / group) * hd;
        const float *v = base + dq + dkv + (int64_t)(h / group) * hd;
        float *o = c->att + (int64_t)t0 * dq + (int64_t)h * hd;
        if (c->avx512)
            attend_avx512(q, k, v, c->n_qkv, o, dq, L, hd, kt, s, c->lpad);
        else
            attend_ref(q, k, v, c->n_qkv, o, dq, L, hd, s);
    }
}

/* x = LN(x + tmp + bo) with the attention output norm. */
static void attn_out_rows(struct pass *p, int32_t r0, int32_t r1, int ith) {
    const struct bert_layer *L = p->L;
    ln_rows(p->c, p->c->x, p->c->x, p->c->tmp, L->bo, L->attn_norm, L->attn_norm_b, r0, r1);
}

static void ffn_act_rows(struct pass *p, int32_t r0, int32_t r1, int ith) {
    const bert_ctx *c = p->c;
    int64_t ff = c->m->hp->n_ff;
    for (int32_t t = r0; t < r1; t++) {
        if (c->gate) {
            if (c->avx512)
                swiglu_row_avx512(c->gate + t * ff, c->ff + t * ff, ff);
            else
                swiglu_row_ref(c->gate + t * ff, c->ff + t * ff, ff);
        } else if (c->avx512) {
            gelu_row_avx512(c->ff + t * ff, p->L->bup, ff);
        } else {
            gelu_row_ref(c->ff + t * ff, p->L->bup, ff);
        }
    }
}

static void ffn_out_rows(struct pass *p, int32_t r0, int32_t r1, int ith) {
    const struct bert_layer *L = p->L;
    ln_rows(p->c, p->c->x, p->c->x, p->c->tmp, L->bdown, L->out_norm, L->out_norm_b, r0, r1);
}

/* y (row stride y_stride) = W x for n tokens; reuse: x is already converted
 * to W's partner type by the previous product. */
static void matmul(bert_ctx *c, const struct bert_w *w, const float *x, int32_t n, float *y,
                   int64_t y_stride, bool reuse) {
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
    kiln_status s = kiln_matmul_run(c->mm, &op);
    KILN_ASSERT(s == KILN_OK); /* shapes and kernels were checked at load and reserve */
}

/* One block. Each phase runs on the pool and returns when every thread is
 * done, so the calling thread's trace chain times the phases' wall time. */
static void layer(struct pass *p, const struct bert_layer *L, int32_t il) {
    bert_ctx *c = p->c;
    const struct arch_hparams *hp = c->m->hp;
    int32_t n = p->n;
    int64_t dq = arch_n_embd_q(hp), dkv = arch_n_embd_kv(hp);
    trace_lap *k = &p->lap;
    trace_arg a = TRACE_I("layer", il);
    p->L = L;
    trace_lap_open(k);
    if (L->wqkv.data) {
        matmul(c, &L->wqkv, c->x, n, c->qkv, c->n_qkv, false);
    } else {
        matmul(c, &L->wq, c->x, n, c->qkv, c->n_qkv, false);
        matmul(c, &L->wk, c->x, n, c->qkv + dq, c->n_qkv, L->wk.type == L->wq.type);
        matmul(c, &L->wv, c->x, n, c->qkv + dq + dkv, c->n_qkv, L->wv.type == L->wk.type);
    }
    trace_lap_span(k, "attn_qkv", "op", &a);
    run_rows(p, qkv_rows);
    trace_lap_span(k, "attn_rope", "op", &a); /* biases and rotation */
    atomic_store(&p->next, 0);
    if (c->pool && p->n_seq * (int32_t)hp->n_head > 1)
        kiln_pool_run(c->pool, attn_worker, p);
    else
        attn_worker(p, 0, 1);
    trace_lap_span(k, "attn_core", "op", &a);
    matmul(c, &L->wo, c->att, n, c->tmp, 0, false);
    run_rows(p, attn_out_rows);
    trace_lap_span(k, "attn_out", "op", &a); /* output product, residual and LayerNorm */
    trace_lap_close(k, "attention", "op", &a);
    trace_lap_open(k);
    matmul(c, &L->up, c->x, n, c->ff, 0, false);
    if (L->gate.data) matmul(c, &L->gate, c->x, n, c->gate, 0, L->gate.type == L->up.type);
    trace_lap_span(k, "ffn_gate_up", "op", &a);
    run_rows(p, ffn_act_rows);
    trace_lap_span(k, "ffn_act", "op", &a);
    matmul(c, &L->down, c->gate ? c->gate : c->ff, n, c->tmp, 0, false);
    run_rows(p, ffn_out_rows);
    trace_lap_span(k, "ffn_down", "op", &a); /* down product, residual and LayerNorm */
    trace_lap_close(k, "ffn", "op", &a);
}

kiln_status bert_encode(bert_ctx *c, const int32_t *tokens, const int32_t *seq_start, int32_t n_seq,
                        const float **hidden) {
    const struct arch_hparams *hp = c->m->hp;
    if (n_seq <= 0 || seq_start[0] != 0)
        return kiln_fail(KILN_ERR_RANGE, "bert: a batch of %d sequences", n_seq);
    int32_t n = seq_start[n_seq];
    if (n_cols(n) > c->cap)
        return kiln_fail(KILN_ERR_RANGE, "bert: %d tokens, more than the capacity of %d", n,
                         c->cap);
    for (int32_t i = 0; i < n_seq; i++) {
        int32_t len = seq_start[i + 1] - seq_start[i];
        if (len <= 0 || (uint32_t)len > hp->n_ctx_train)
            return kiln_fail(KILN_ERR_RANGE,
                             "bert: sequence %d has %d tokens; it must have 1 to %u", i, len,
                             hp->n_ctx_train);
        for (int32_t t = seq_start[i]; t < seq_start[i + 1]; t++) {
            if (tokens[t] < 0 || (uint32_t)tokens[t] >= hp->n_vocab)
                return kiln_fail(KILN_ERR_RANGE,
                                 "bert: token %d of sequence %d is outside the vocabulary of %u",
                                 tokens[t], i, hp->n_vocab);
            c->pos[t] = t - seq_start[i];
        }
    }
    int32_t nc = n_cols(n);
    int64_t d = hp->n_embd, dq = arch_n_embd_q(hp);
    memset(c->x + n * d, 0, (size_t)(nc - n) * (size_t)d * sizeof *c->x);
    memset(c->att + n * dq, 0, (size_t)(nc - n) * (size_t)dq * sizeof *c->att);
    for (int32_t t = n; t < nc; t++) c->pos[t] = 0;
    struct pass p = {.c = c, .tokens = tokens, .seq_start = seq_start, .n = n, .n_seq = n_seq};
    /* detail=ops: token_embd, then each layer's attention and ffn with their
     * phases, on the calling thread (inside its "forward" span) */
    trace_lap_start(&p.lap, trace_on_ops());
    trace_arg a = TRACE_I("tokens", n);
    run_rows(&p, embed_rows);
    trace_lap_span(&p.lap, "token_embd", "op", &a);
    p.n = nc;
    for (uint32_t il = 0; il < hp->n_layer; il++) layer(&p, &c->m->layers[il], (int32_t)il);
    trace_lap_end(&p.lap);
    *hidden = c->x;
    return KILN_OK;
}
