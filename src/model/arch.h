/* arch.h - the table of supported model architectures: for each, its GGUF key
 * prefix (general.architecture), the hyperparameters it requires, the way
 * its forward pass is built (norm kind, rope, FFN activation, causal or not)
 * and which tensors it has, with their names and shapes.
 *
 * Tensors are identified by role (enum arch_tensor), not by name: a role has
 * one GGUF name ("blk.N.attn_q.weight") and one symbolic shape ([n_embd,
 * n_embd_q]) shared by every architecture that uses it; an architecture says
 * per role whether it is required, optional or absent. Forward passes look
 * tensors up by role through struct arch_model, so adding an architecture
 * (gemma, phi3, qwen3) is one arch_def entry plus any new roles it needs.
 *
 * Everything here is immutable and thread-safe, except that arch_model_load
 * fills a caller-owned struct. */
#ifndef KILN_MODEL_ARCH_H
#define KILN_MODEL_ARCH_H

#include "compute/tune.h"
#include "kiln.h"
#include "model/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum arch_id { ARCH_LLAMA, ARCH_QWEN2, ARCH_BERT, ARCH_NOMIC_BERT, ARCH_COUNT };

/* Tensor roles. Those before ARCH_T_LAYER_FIRST occur once per model; the
 * rest once per layer ("blk.N." prefix). _B roles are the matching biases. */
enum arch_tensor {
    ARCH_T_TOKEN_EMBD,
    ARCH_T_TOKEN_TYPES,
    ARCH_T_POS_EMBD,
    ARCH_T_EMBD_NORM,
    ARCH_T_EMBD_NORM_B,
    ARCH_T_OUTPUT_NORM,
    ARCH_T_OUTPUT_NORM_B,
    ARCH_T_OUTPUT,
    ARCH_T_LAYER_FIRST,
    ARCH_T_ATTN_NORM = ARCH_T_LAYER_FIRST,
    ARCH_T_ATTN_NORM_B,
    ARCH_T_ATTN_Q,
    ARCH_T_ATTN_Q_B,
    ARCH_T_ATTN_K,
    ARCH_T_ATTN_K_B,
    ARCH_T_ATTN_V,
    ARCH_T_ATTN_V_B,
    ARCH_T_ATTN_QKV,
    ARCH_T_ATTN_QKV_B,
    ARCH_T_ATTN_OUT,
    ARCH_T_ATTN_OUT_B,
    ARCH_T_ATTN_OUT_NORM,
    ARCH_T_ATTN_OUT_NORM_B,
    ARCH_T_FFN_NORM,
    ARCH_T_FFN_NORM_B,
    ARCH_T_FFN_GATE,
    ARCH_T_FFN_UP,
    ARCH_T_FFN_UP_B,
    ARCH_T_FFN_DOWN,
    ARCH_T_FFN_DOWN_B,
    ARCH_T_LAYER_OUT_NORM,
    ARCH_T_LAYER_OUT_NORM_B,
    ARCH_T_COUNT
};
#define ARCH_T_LAYER_COUNT (ARCH_T_COUNT - ARCH_T_LAYER_FIRST)

/* Symbolic dimensions of tensor shapes, resolved against hyperparameters. */
enum arch_dim {
    ARCH_D_1,     /* unused dimension */
    ARCH_D_EMBD,  /* n_embd */
    ARCH_D_Q,     /* n_head * head_dim */
    ARCH_D_KV,    /* n_head_kv * head_dim */
    ARCH_D_QKV,   /* D_Q + 2 * D_KV (fused projection) */
    ARCH_D_FF,    /* n_ff */
    ARCH_D_VOCAB, /* n_vocab */
    ARCH_D_CTX,   /* n_ctx_train (learned positions) */
    ARCH_D_TYPES  /* n_token_types */
};

/* How synthetic weights of a role are drawn (see synth.h). */
enum arch_init {
    ARCH_INIT_EMBD, /* N(0, 0.02^2) */
    ARCH_INIT_QK,   /* N(0, 0.08^2) */
    ARCH_INIT_VO,   /* N(0, sigma_vo^2), sigma_vo from the arch */
    ARCH_INIT_QKV,  /* fused: q and k rows as QK, v rows as VO */
    ARCH_INIT_FFN,  /* N(0, 0.05^2) */
    ARCH_INIT_BIAS, /* N(0, 0.02^2) */
    ARCH_INIT_ONE,  /* norm weights: 1.0 */
    ARCH_INIT_ZERO  /* norm biases: 0.0 */
};

struct arch_tensor_info {
    const char *name;    /* GGUF name; per-layer names follow "blk.N." */
    enum arch_dim ne[2]; /* ne[1] == ARCH_D_1: a 1-D tensor */
    enum arch_init init;
    bool matrix; /* a weight matrix (quantizable); else stays F32 */
};

enum arch_presence { ARCH_ABSENT = 0, ARCH_REQUIRED, ARCH_OPTIONAL };

/* Forward-pass features. */
enum arch_flag {
    ARCH_F_CAUSAL = 1 << 0,     /* decoder with a KV cache; else a bidirectional encoder */
    ARCH_F_LAYERNORM = 1 << 1,  /* LayerNorm with bias; else RMSNorm */
    ARCH_F_POST_NORM = 1 << 2,  /* norm after each residual add (BERT); else before */
    ARCH_F_ROPE = 1 << 3,       /* rotary positions; else learned position_embd */
    ARCH_F_ROPE_NEOX = 1 << 4,  /* rotate halves (NEOX) rather than pairs (NORM) */
    ARCH_F_GATED_FFN = 1 << 5,  /* SwiGLU: down(silu(gate x) * up x); else down(gelu(up x)) */
    ARCH_F_TIED_OUTPUT = 1 << 6 /* output.weight may be absent: use token_embd */
};

struct arch_def {
    enum arch_id id;
    const char *name;    /* general.architecture and the key prefix */
    unsigned flags;      /* enum arch_flag */
    const char *eps_key; /* key suffix of the norm epsilon */
    float rope_freq_base_default;
    float sigma_vo;                /* synthetic attn_v/attn_output sigma */
    uint8_t tensors[ARCH_T_COUNT]; /* enum arch_presence per role */
};

/* Hyperparameters of a model, validated (arch_hparams_check). */
struct arch_hparams {
    const struct arch_def *arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train, n_vocab;
    uint32_t head_dim;      /* n_embd / n_head */
    uint32_t n_rot;         /* rope.dimension_count; head_dim by default */
    uint32_t n_token_types; /* encoders: rows of token_types (default 2) */
    uint32_t pooling_type;  /* encoders: <arch>.pooling_type (0 none, 1 mean, 2 cls) */
    float rope_freq_base;
    float norm_eps;
};

/* A model's tensors bound by role. layers[il * ARCH_T_LAYER_COUNT + (role -
 * ARCH_T_LAYER_FIRST)]; NULL where a role is absent. Pointers borrow from the
 * gguf_file, which must outlive the model. */
struct arch_model {
    struct arch_hparams hp;
    const gguf_tensor *global[ARCH_T_LAYER_FIRST];
    const gguf_tensor **layers;
    bool tied_output; /* output.weight absent; global[ARCH_T_OUTPUT] is token_embd */
};

/* Table access. arch_get returns NULL for an out-of-range id; arch_find NULL
 * for an unknown name. */
const struct arch_def *arch_get(enum arch_id id);
const struct arch_def *arch_find(const char *name);
/* "llama, qwen2, bert, nomic-bert" - for messages. */
const char *arch_names(void);

const struct arch_tensor_info *arch_tensor_info(enum arch_tensor t);

/* The GGUF name of role t in layer il (ignored for global roles) into buf.
 * Returns buf, or NULL when it does not fit. */
const char *arch_tensor_name(enum arch_tensor t, int il, char *buf, size_t cap);

/* The value of a symbolic dimension. */
int64_t arch_dim_value(const struct arch_hparams *hp, enum arch_dim d);
/* The shape of role t under hp: ne[0], ne[1] and the number of dims (1 or 2). */
int arch_tensor_shape(const struct arch_hparams *hp, enum arch_tensor t, int64_t ne[2]);

/* Widths derived from the hyperparameters. */
static inline uint32_t arch_n_embd_q(const struct arch_hparams *hp) {
    return hp->n_head * hp->head_dim;
}
static inline uint32_t arch_n_embd_kv(const struct arch_hparams *hp) {
    return hp->n_head_kv * hp->head_dim;
}

/* Checks hp for consistency: nonzero sizes, n_head divides n_embd, n_head_kv
 * divides n_head, n_rot <= head_dim and even. Fills hp->head_dim. `what`
 * names the model in messages. KILN_ERR_FORMAT naming the bad value. */
kiln_status arch_hparams_check(struct arch_hparams *hp, const char *what);

/* Reads and validates the hyperparameters of f. KILN_ERR_FORMAT naming the
 * key that is missing, of the wrong type or inconsistent; KILN_ERR_UNSUPPORTED
 * naming an unknown general.architecture. Does not look at tensors, except
 * token_embd for the vocabulary size when there is no tokenizer.ggml.tokens. */
kiln_status arch_hparams_load(const gguf_file *f, struct arch_hparams *hp);

/* arch_hparams_load, then binds every tensor role: a required tensor that is
 * missing, or any present one whose shape differs from the table, is
 * KILN_ERR_FORMAT naming the tensor (and both shapes). On success the caller
 * frees with arch_model_free. */
kiln_status arch_model_load(const gguf_file *f, struct arch_model *m);
void arch_model_free(struct arch_model *m);
/* The weight products of m for the kernel tuner: one entry per distinct
 * (type, n = ne[0], rows = ne[1]) among the matrices that are multiplied
 * (every role marked matrix, token_embd only as a tied output), with how
 * many there are. Writes at most cap; returns how many entries there are. */
int arch_model_shapes(const struct arch_model *m, struct kiln_tune_shape *out, int cap);
/* The kernel table for m's products on pool (borrowed; NULL: the calling
 * thread): kiln_tune_select over arch_model_shapes, which may measure (see
 * compute/tune.h) and cannot fail. */
void arch_model_kernels(const struct arch_model *m, kiln_pool *pool, struct kiln_kernels *out);

/* The tensor of a per-layer role, or NULL when absent. */
static inline const gguf_tensor *arch_layer_tensor(const struct arch_model *m, int il,
                                                   enum arch_tensor t) {
    return m->layers[(size_t)il * ARCH_T_LAYER_COUNT + (size_t)(t - ARCH_T_LAYER_FIRST)];
}

#endif
