/* arch.c - the architecture table, tensor roles and their shapes, and loading
 * and validating a model's hyperparameters and tensors (see arch.h).
 *
 * Invariant: every arch_def lists ARCH_T_TOKEN_EMBD as required, so a
 * model's vocabulary size can always be checked against its embedding. */
#include "model/arch.h"
#include "base/status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define E   ARCH_D_EMBD
#define ONE ARCH_D_1

static const struct arch_tensor_info tensor_infos[ARCH_T_COUNT] = {
    [ARCH_T_TOKEN_EMBD] = {"token_embd.weight", {E, ARCH_D_VOCAB}, ARCH_INIT_EMBD, true},
    [ARCH_T_TOKEN_TYPES] = {"token_types.weight", {E, ARCH_D_TYPES}, ARCH_INIT_EMBD, false},
    [ARCH_T_POS_EMBD] = {"position_embd.weight", {E, ARCH_D_CTX}, ARCH_INIT_EMBD, false},
    [ARCH_T_EMBD_NORM] = {"token_embd_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_EMBD_NORM_B] = {"token_embd_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
    [ARCH_T_OUTPUT_NORM] = {"output_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_OUTPUT_NORM_B] = {"output_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
    [ARCH_T_OUTPUT] = {"output.weight", {E, ARCH_D_VOCAB}, ARCH_INIT_EMBD, true},
    [ARCH_T_ATTN_NORM] = {"attn_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_ATTN_NORM_B] = {"attn_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
    [ARCH_T_ATTN_Q] = {"attn_q.weight", {E, ARCH_D_Q}, ARCH_INIT_QK, true},
    [ARCH_T_ATTN_Q_B] = {"attn_q.bias", {ARCH_D_Q, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_ATTN_K] = {"attn_k.weight", {E, ARCH_D_KV}, ARCH_INIT_QK, true},
    [ARCH_T_ATTN_K_B] = {"attn_k.bias", {ARCH_D_KV, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_ATTN_V] = {"attn_v.weight", {E, ARCH_D_KV}, ARCH_INIT_VO, true},
    [ARCH_T_ATTN_V_B] = {"attn_v.bias", {ARCH_D_KV, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_ATTN_QKV] = {"attn_qkv.weight", {E, ARCH_D_QKV}, ARCH_INIT_QKV, true},
    [ARCH_T_ATTN_QKV_B] = {"attn_qkv.bias", {ARCH_D_QKV, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_ATTN_OUT] = {"attn_output.weight", {ARCH_D_Q, E}, ARCH_INIT_VO, true},
    [ARCH_T_ATTN_OUT_B] = {"attn_output.bias", {E, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_ATTN_OUT_NORM] = {"attn_output_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_ATTN_OUT_NORM_B] = {"attn_output_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
    [ARCH_T_FFN_NORM] = {"ffn_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_FFN_NORM_B] = {"ffn_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
    [ARCH_T_FFN_GATE] = {"ffn_gate.weight", {E, ARCH_D_FF}, ARCH_INIT_FFN, true},
    [ARCH_T_FFN_UP] = {"ffn_up.weight", {E, ARCH_D_FF}, ARCH_INIT_FFN, true},
    [ARCH_T_FFN_UP_B] = {"ffn_up.bias", {ARCH_D_FF, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_FFN_DOWN] = {"ffn_down.weight", {ARCH_D_FF, E}, ARCH_INIT_FFN, true},
    [ARCH_T_FFN_DOWN_B] = {"ffn_down.bias", {E, ONE}, ARCH_INIT_BIAS, false},
    [ARCH_T_LAYER_OUT_NORM] = {"layer_output_norm.weight", {E, ONE}, ARCH_INIT_ONE, false},
    [ARCH_T_LAYER_OUT_NORM_B] = {"layer_output_norm.bias", {E, ONE}, ARCH_INIT_ZERO, false},
};

#undef E
#undef ONE

#define R ARCH_REQUIRED
#define O ARCH_OPTIONAL

/* Decoders: pre-norm RMSNorm blocks with separate q/k/v and a SwiGLU FFN. */
#define DECODER_TENSORS                                                                            \
    [ARCH_T_TOKEN_EMBD] = R, [ARCH_T_OUTPUT_NORM] = R, [ARCH_T_OUTPUT] = O,                        \
    [ARCH_T_ATTN_NORM] = R, [ARCH_T_ATTN_Q] = R, [ARCH_T_ATTN_K] = R, [ARCH_T_ATTN_V] = R,         \
    [ARCH_T_ATTN_OUT] = R, [ARCH_T_FFN_NORM] = R, [ARCH_T_FFN_GATE] = R, [ARCH_T_FFN_UP] = R,      \
    [ARCH_T_FFN_DOWN] = R

/* Encoders: embeddings LayerNorm, post-norm blocks with LayerNorms. */
#define ENCODER_TENSORS                                                                            \
    [ARCH_T_TOKEN_EMBD] = R, [ARCH_T_TOKEN_TYPES] = R, [ARCH_T_EMBD_NORM] = R,                     \
    [ARCH_T_EMBD_NORM_B] = R, [ARCH_T_ATTN_OUT] = R, [ARCH_T_ATTN_OUT_NORM] = R,                   \
    [ARCH_T_ATTN_OUT_NORM_B] = R, [ARCH_T_FFN_UP] = R, [ARCH_T_FFN_DOWN] = R,                      \
    [ARCH_T_LAYER_OUT_NORM] = R, [ARCH_T_LAYER_OUT_NORM_B] = R

static const struct arch_def archs[ARCH_COUNT] = {
    [ARCH_LLAMA] = {ARCH_LLAMA,
                    "llama",
                    ARCH_F_CAUSAL | ARCH_F_ROPE | ARCH_F_GATED_FFN | ARCH_F_TIED_OUTPUT,
                    "attention.layer_norm_rms_epsilon",
                    10000.0f,
                    0.02f,
                    {DECODER_TENSORS}},
    [ARCH_QWEN2] =
        {ARCH_QWEN2,
         "qwen2",
         ARCH_F_CAUSAL | ARCH_F_ROPE | ARCH_F_ROPE_NEOX | ARCH_F_GATED_FFN | ARCH_F_TIED_OUTPUT,
         "attention.layer_norm_rms_epsilon",
         1000000.0f,
         0.02f,
         {DECODER_TENSORS, [ARCH_T_ATTN_Q_B] = R, [ARCH_T_ATTN_K_B] = R, [ARCH_T_ATTN_V_B] = R}},
    [ARCH_BERT] =
        {ARCH_BERT,
         "bert",
         ARCH_F_LAYERNORM | ARCH_F_POST_NORM,
         "attention.layer_norm_epsilon",
         10000.0f,
         0.05f,
         {ENCODER_TENSORS, [ARCH_T_POS_EMBD] = R, [ARCH_T_ATTN_Q] = R, [ARCH_T_ATTN_Q_B] = R,
          [ARCH_T_ATTN_K] = R, [ARCH_T_ATTN_K_B] = R, [ARCH_T_ATTN_V] = R, [ARCH_T_ATTN_V_B] = R,
          [ARCH_T_ATTN_OUT_B] = R, [ARCH_T_FFN_UP_B] = R, [ARCH_T_FFN_DOWN_B] = R}},
    [ARCH_NOMIC_BERT] = {ARCH_NOMIC_BERT,
                         "nomic-bert",
                         ARCH_F_LAYERNORM | ARCH_F_POST_NORM | ARCH_F_ROPE | ARCH_F_ROPE_NEOX |
                             ARCH_F_GATED_FFN,
                         "attention.layer_norm_epsilon",
                         1000.0f,
                         0.05f,
                         {ENCODER_TENSORS, [ARCH_T_ATTN_QKV] = R, [ARCH_T_FFN_GATE] = R}},
};

#undef R
#undef O

const struct arch_def *arch_get(enum arch_id id) {
    return (unsigned)id < ARCH_COUNT ? &archs[id] : NULL;
}

const struct arch_def *arch_find(const char *name) {
    for (int i = 0; i < ARCH_COUNT; i++)
        if (!strcmp(archs[i].name, name)) return &archs[i];
    return NULL;
}

const char *arch_names(void) {
    return "llama, qwen2, bert, nomic-bert";
}

const struct arch_tensor_info *arch_tensor_info(enum arch_tensor t) {
    return (unsigned)t < ARCH_T_COUNT ? &tensor_infos[t] : NULL;
}

const char *arch_tensor_name(enum arch_tensor t, int il, char *buf, size_t cap) {
    int n = t < ARCH_T_LAYER_FIRST ? snprintf(buf, cap, "%s", tensor_infos[t].name)
                                   : snprintf(buf, cap, "blk.%d.%s", il, tensor_infos[t].name);
    return n >= 0 && (size_t)n < cap ? buf : NULL;
}

int64_t arch_dim_value(const struct arch_hparams *hp, enum arch_dim d) {
    switch (d) {
    case ARCH_D_1:
        return 1;
    case ARCH_D_EMBD:
        return hp->n_embd;
    case ARCH_D_Q:
        return arch_n_embd_q(hp);
    case ARCH_D_KV:
        return arch_n_embd_kv(hp);
    case ARCH_D_QKV:
        return (int64_t)arch_n_embd_q(hp) + 2 * (int64_t)arch_n_embd_kv(hp);
    case ARCH_D_FF:
        return hp->n_ff;
    case ARCH_D_VOCAB:
        return hp->n_vocab;
    case ARCH_D_CTX:
        return hp->n_ctx_train;
    case ARCH_D_TYPES:
        return hp->n_token_types;
    }
    return 0;
}

int arch_tensor_shape(const struct arch_hparams *hp, enum arch_tensor t, int64_t ne[2]) {
    const struct arch_tensor_info *ti = &tensor_infos[t];
    ne[0] = arch_dim_value(hp, ti->ne[0]);
    ne[1] = arch_dim_value(hp, ti->ne[1]);
    return ti->ne[1] == ARCH_D_1 ? 1 : 2;
}

kiln_status arch_hparams_check(struct arch_hparams *hp, const char *what) {
    const char *p = hp->arch->name;
    const struct {
        const char *key;
        uint32_t v;
    } nz[] = {{"embedding_length", hp->n_embd},     {"block_count", hp->n_layer},
              {"attention.head_count", hp->n_head}, {"attention.head_count_kv", hp->n_head_kv},
              {"feed_forward_length", hp->n_ff},    {"context_length", hp->n_ctx_train},
              {"vocab size", hp->n_vocab}};
    for (size_t i = 0; i < sizeof nz / sizeof nz[0]; i++)
        if (nz[i].v == 0) return kiln_fail(KILN_ERR_FORMAT, "%s: %s.%s is 0", what, p, nz[i].key);
    if (hp->n_embd % hp->n_head)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: %s.attention.head_count %u does not divide %s.embedding_length %u",
                         what, p, hp->n_head, p, hp->n_embd);
    if (hp->n_head % hp->n_head_kv)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: %s.attention.head_count_kv %u does not divide "
                         "%s.attention.head_count %u",
                         what, p, hp->n_head_kv, p, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (!hp->n_rot) hp->n_rot = hp->head_dim;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: %s.rope.dimension_count %u must be even and at most the head "
                         "dimension %u",
                         what, p, hp->n_rot, hp->head_dim);
    if (!(hp->norm_eps > 0.0f) || hp->norm_eps > 1.0f)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s.%s %g is not in (0, 1]", what, p,
                         hp->arch->eps_key, (double)hp->norm_eps);
    if (!(hp->rope_freq_base > 0.0f))
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s.rope.freq_base %g is not positive", what, p,
                         (double)hp->rope_freq_base);
    return KILN_OK;
}

/* Reads "<arch>.<suffix>" into *out. An absent key is KILN_ERR_FORMAT naming
 * it when required, else leaves *out (the default) alone. */
static kiln_status get_u32(const gguf_file *f, const char *arch, const char *suffix, bool required,
                           uint32_t *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    kiln_status st = gguf_get_u32(f, key, out);
    if (st == KILN_ERR_NOT_FOUND) {
        if (!required) return KILN_OK;
        return kiln_fail(KILN_ERR_FORMAT, "%s: missing required key '%s'", gguf_path(f), key);
    }
    return st;
}

static kiln_status get_f32(const gguf_file *f, const char *arch, const char *suffix, bool required,
                           float *out) {
    char key[256];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    kiln_status st = gguf_get_f32(f, key, out);
    if (st == KILN_ERR_NOT_FOUND) {
        if (!required) return KILN_OK;
        return kiln_fail(KILN_ERR_FORMAT, "%s: missing required key '%s'", gguf_path(f), key);
    }
    return st;
}

/* Looks up general.architecture in the table. */
static kiln_status load_arch(const gguf_file *f, const struct arch_def **out) {
    gguf_str s;
    kiln_status st = gguf_get_str(f, "general.architecture", &s);
    if (st == KILN_ERR_NOT_FOUND)
        return kiln_fail(KILN_ERR_FORMAT, "%s: missing required key 'general.architecture'",
                         gguf_path(f));
    if (st) return st;
    char name[64];
    if (s.len >= sizeof name)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: unsupported architecture '%.*s...'",
                         gguf_path(f), 40, s.ptr);
    memcpy(name, s.ptr, s.len);
    name[s.len] = 0;
    if (!(*out = arch_find(name)))
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: unsupported architecture '%s' (supported: %s)",
                         gguf_path(f), name, arch_names());
    return KILN_OK;
}

/* Vocabulary size: tokenizer.ggml.tokens, else token_embd's rows, else
 * <arch>.vocab_size. */
static kiln_status load_vocab(const gguf_file *f, struct arch_hparams *hp) {
    const gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
    const gguf_tensor *te = gguf_find_tensor(f, tensor_infos[ARCH_T_TOKEN_EMBD].name);
    if (kv && kv->value.type == GGUF_VT_ARRAY && kv->value.arr.n <= UINT32_MAX) {
        hp->n_vocab = (uint32_t)kv->value.arr.n;
    } else if (kv) {
        return kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens is not an array of strings",
                         gguf_path(f));
    } else if (te && te->ne[1] > 0 && te->ne[1] <= UINT32_MAX) {
        hp->n_vocab = (uint32_t)te->ne[1];
    } else {
        kiln_status st = get_u32(f, hp->arch->name, "vocab_size", false, &hp->n_vocab);
        if (st) return st;
        if (!hp->n_vocab)
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: no vocabulary size (no tokenizer.ggml.tokens, token_embd.weight "
                             "or %s.vocab_size)",
                             gguf_path(f), hp->arch->name);
    }
    return KILN_OK;
}

static kiln_status load_sizes(const gguf_file *f, struct arch_hparams *hp) {
    const char *a = hp->arch->name;
    kiln_status st;
    if ((st = get_u32(f, a, "embedding_length", true, &hp->n_embd)) ||
        (st = get_u32(f, a, "block_count", true, &hp->n_layer)) ||
        (st = get_u32(f, a, "attention.head_count", true, &hp->n_head)) ||
        (st = get_u32(f, a, "feed_forward_length", true, &hp->n_ff)) ||
        (st = get_u32(f, a, "context_length", true, &hp->n_ctx_train)))
        return st;
    hp->n_head_kv = hp->n_head;
    hp->n_token_types = 2;
    if ((st = get_u32(f, a, "attention.head_count_kv", false, &hp->n_head_kv)) ||
        (st = get_u32(f, a, "rope.dimension_count", false, &hp->n_rot)) ||
        (st = get_u32(f, a, "pooling_type", false, &hp->pooling_type)))
        return st;
    st = gguf_get_u32(f, "tokenizer.ggml.token_type_count", &hp->n_token_types);
    if (st && st != KILN_ERR_NOT_FOUND) return st;
    const gguf_tensor *tt = gguf_find_tensor(f, tensor_infos[ARCH_T_TOKEN_TYPES].name);
    if (st == KILN_ERR_NOT_FOUND && tt && tt->ne[1] > 0 && tt->ne[1] <= UINT32_MAX)
        hp->n_token_types = (uint32_t)tt->ne[1];
    return KILN_OK;
}

kiln_status arch_hparams_load(const gguf_file *f, struct arch_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kiln_status st = load_arch(f, &hp->arch);
    if (st) return st;
    const char *a = hp->arch->name;
    hp->rope_freq_base = hp->arch->rope_freq_base_default;
    if ((st = load_sizes(f, hp)) || (st = get_f32(f, a, hp->arch->eps_key, true, &hp->norm_eps)) ||
        (st = get_f32(f, a, "rope.freq_base", false, &hp->rope_freq_base)) ||
        (st = load_vocab(f, hp)))
        return st;
    return arch_hparams_check(hp, gguf_path(f));
}

/* Binds one tensor of role t (layer il) and checks its shape. */
static kiln_status bind(const gguf_file *f, const struct arch_hparams *hp, enum arch_tensor t,
                        int il, const gguf_tensor **out) {
    char name[128];
    arch_tensor_name(t, il, name, sizeof name);
    const gguf_tensor *gt = gguf_find_tensor(f, name);
    *out = gt;
    if (!gt) {
        if (hp->arch->tensors[t] == ARCH_REQUIRED)
            return kiln_fail(KILN_ERR_FORMAT, "%s: missing required tensor '%s'", gguf_path(f),
                             name);
        return KILN_OK;
    }
    int64_t ne[2];
    int nd = arch_tensor_shape(hp, t, ne);
    bool ok = gt->ne[0] == ne[0] && gt->ne[1] == ne[1] && gt->ne[2] == 1 && gt->ne[3] == 1;
    if (!ok) {
        char want[64];
        if (nd == 1)
            snprintf(want, sizeof want, "[%lld]", (long long)ne[0]);
        else
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)ne[0], (long long)ne[1]);
        return kiln_fail(KILN_ERR_FORMAT,
                         "%s: tensor '%s' has shape [%lld, %lld, %lld, %lld], expected %s",
                         gguf_path(f), name, (long long)gt->ne[0], (long long)gt->ne[1],
                         (long long)gt->ne[2], (long long)gt->ne[3], want);
    }
    return KILN_OK;
}

kiln_status arch_model_load(const gguf_file *f, struct arch_model *m) {
    memset(m, 0, sizeof *m);
    kiln_status st = arch_hparams_load(f, &m->hp);
    if (st) return st;
    const struct arch_def *a = m->hp.arch;
    for (int t = 0; t < ARCH_T_LAYER_FIRST; t++)
        if (a->tensors[t] && (st = bind(f, &m->hp, (enum arch_tensor)t, 0, &m->global[t])))
            return st;
    m->layers = calloc((size_t)m->hp.n_layer * ARCH_T_LAYER_COUNT, sizeof *m->layers);
    if (!m->layers)
        return kiln_fail(KILN_ERR_NOMEM, "%s: no memory for tensor index", gguf_path(f));
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        for (int t = ARCH_T_LAYER_FIRST; t < ARCH_T_COUNT; t++) {
            const gguf_tensor **slot =
                &m->layers[il * ARCH_T_LAYER_COUNT + (t - ARCH_T_LAYER_FIRST)];
            if (a->tensors[t] && (st = bind(f, &m->hp, (enum arch_tensor)t, (int)il, slot)))
                goto fail;
        }
    if (!m->global[ARCH_T_OUTPUT] && (a->flags & ARCH_F_TIED_OUTPUT)) {
        m->global[ARCH_T_OUTPUT] = m->global[ARCH_T_TOKEN_EMBD];
        m->tied_output = true;
    }
    return KILN_OK;
fail:
    arch_model_free(m);
    return st;
}

void arch_model_free(struct arch_model *m) {
    free(m->layers);
    m->layers = NULL;
}

static void add_shape(const gguf_tensor *t, struct kiln_tune_shape *out, int cap, int *n) {
    if (!t || t->n_dims != 2) return;
    for (int i = 0; i < *n && i < cap; i++)
        if (out[i].type == t->type && out[i].n == t->ne[0] && out[i].nr == t->ne[1]) {
            out[i].count++;
            return;
        }
    if (*n < cap) out[*n] = (struct kiln_tune_shape){t->type, t->ne[0], t->ne[1], 1};
    (*n)++;
}

int arch_model_shapes(const struct arch_model *m, struct kiln_tune_shape *out, int cap) {
    int n = 0;
    for (int t = 0; t < ARCH_T_LAYER_FIRST; t++)
        if (t != ARCH_T_TOKEN_EMBD && arch_tensor_info((enum arch_tensor)t)->matrix)
            add_shape(m->global[t], out, cap, &n);
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        for (int t = ARCH_T_LAYER_FIRST; t < ARCH_T_COUNT; t++)
            if (arch_tensor_info((enum arch_tensor)t)->matrix)
                add_shape(m->layers[il * ARCH_T_LAYER_COUNT + (t - ARCH_T_LAYER_FIRST)], out, cap,
                          &n);
    return n;
}

void arch_model_kernels(const struct arch_model *m, kiln_pool *pool, struct kiln_kernels *out) {
    struct kiln_tune_shape shapes[64];
    int n = arch_model_shapes(m, shapes, 64);
    kiln_tune_select(pool, 1, shapes, n < 64 ? n : 64, 0, out, NULL, 0);
}
