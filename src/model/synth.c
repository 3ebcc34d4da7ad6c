/* synth.c - synthetic model writer: named shapes, seeded weights, generated
 * or copied vocabularies, GGUF metadata llama.cpp expects (see synth.h). */
#include "model/synth.h"
#include "base/status.h"
#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "compute/types.h"
#include "model/gguf.h"
#include "model/quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct synth_shape shapes[] = {
    {"tinyllama-1.1b", ARCH_LLAMA, 2048, 22, 32, 4, 5632, 2048, 32000, 10000.0f, 1e-5f, 0},
    {"llama-mini", ARCH_LLAMA, 256, 4, 8, 4, 768, 2048, 32000, 10000.0f, 1e-5f, 0},
    {"qwen2-0.5b", ARCH_QWEN2, 896, 24, 14, 2, 4864, 32768, 151936, 1000000.0f, 1e-6f, 0},
    {"qwen2-mini", ARCH_QWEN2, 256, 2, 8, 2, 768, 2048, 50257, 1000000.0f, 1e-6f, 0},
    {"bge-small", ARCH_BERT, 384, 12, 12, 12, 1536, 512, 30522, 10000.0f, 1e-12f, 2},
    {"minilm-l6", ARCH_BERT, 384, 6, 12, 12, 1536, 512, 30522, 10000.0f, 1e-12f, 1},
    {"nomic-mini", ARCH_NOMIC_BERT, 256, 4, 8, 8, 768, 2048, 30522, 1000.0f, 1e-12f, 1},
    {"nomic-embed-v1.5", ARCH_NOMIC_BERT, 768, 12, 12, 12, 3072, 2048, 30522, 1000.0f, 1e-12f, 1},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

int synth_shape_count(void) {
    return N_SHAPES;
}

const struct synth_shape *synth_shape_at(int i) {
    return i >= 0 && i < N_SHAPES ? &shapes[i] : NULL;
}

const struct synth_shape *synth_shape_find(const char *name) {
    for (int i = 0; i < N_SHAPES; i++)
        if (!strcmp(shapes[i].name, name)) return &shapes[i];
    return NULL;
}

kiln_status synth_shape_hparams(const struct synth_shape *s, struct arch_hparams *hp) {
    *hp = (struct arch_hparams){
        .arch = arch_get(s->arch),
        .n_embd = s->n_embd,
        .n_layer = s->n_layer,
        .n_head = s->n_head,
        .n_head_kv = s->n_head_kv,
        .n_ff = s->n_ff,
        .n_ctx_train = s->n_ctx,
        .n_vocab = s->n_vocab,
        .n_token_types = 2,
        .pooling_type = s->pooling_type,
        .rope_freq_base = s->rope_freq_base,
        .norm_eps = s->norm_eps,
    };
    return arch_hparams_check(hp, s->name);
}

/* ---- deterministic normals ---- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

/* Fills row[0..n) with N(0, sigma^2) from a stream seeded by (seed, row). */
static void fill_normal(float *row, int64_t n, uint64_t seed, int64_t r, float sigma) {
    uint64_t s = seed ^ ((uint64_t)r * 0xd1b54a32d192ed03ull);
    splitmix(&s);
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((double)(splitmix(&s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
        double u2 = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
        double m = sqrt(-2.0 * log(u1)) * sigma;
        row[i] = (float)(m * cos(6.283185307179586 * u2));
        if (i + 1 < n) row[i + 1] = (float)(m * sin(6.283185307179586 * u2));
    }
}

/* ---- generated vocabularies ---- */

struct vocab {
    char *pool; /* NUL-terminated pieces back to back */
    size_t len, cap;
    const char **tokens;
    float *scores;
    int32_t *types; /* 1 normal, 2 unknown, 3 control, 6 byte */
    uint32_t n, n_max;
};

static bool vocab_add(struct vocab *v, const char *piece, float score, int32_t type) {
    size_t n = strlen(piece) + 1;
    if (v->n >= v->n_max || v->len + n > v->cap) return false;
    memcpy(v->pool + v->len, piece, n);
    v->tokens[v->n] = (const char *)(uintptr_t)v->len; /* offset; made a pointer at the end */
    v->scores[v->n] = score;
    v->types[v->n] = type;
    v->len += n;
    v->n++;
    return true;
}

/* "a".."z", "aa".."zz", ... for i = 0, 1, ... */
static void base26(uint32_t i, char *out) {
    char tmp[16];
    int n = 0;
    uint64_t x = (uint64_t)i + 1;
    while (x) {
        x--;
        tmp[n++] = (char)('a' + x % 26);
        x /= 26;
    }
    for (int k = 0; k < n; k++) out[k] = tmp[n - 1 - k];
    out[n] = 0;
}

static bool vocab_fill_spm(struct vocab *v) {
    char piece[32];
    bool ok =
        vocab_add(v, "<unk>", 0, 2) && vocab_add(v, "<s>", 0, 3) && vocab_add(v, "</s>", 0, 3);
    for (int b = 0; ok && b < 256; b++) {
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        ok = vocab_add(v, piece, 0, 6);
    }
    for (uint32_t i = 0; ok && v->n < v->n_max; i++) {
        if (i == 0)
            snprintf(piece, sizeof piece, "\xe2\x96\x81"); /* U+2581, SPM's space */
        else if (i < 95)
            snprintf(piece, sizeof piece, "%c", (char)(32 + i));
        else {
            memcpy(piece, "\xe2\x96\x81", 3);
            base26(i - 95, piece + 3);
        }
        ok = vocab_add(v, piece, -(float)i, 1);
    }
    return ok;
}

static bool vocab_fill_wpm(struct vocab *v) {
    static const char *const special[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
    char piece[32];
    bool ok = true;
    for (int i = 0; ok && i < 5; i++) ok = vocab_add(v, special[i], 0, 3);
    for (int c = 33; ok && c < 127; c++) {
        snprintf(piece, sizeof piece, "%c", c);
        ok = vocab_add(v, piece, 0, 1);
    }
    for (int c = 33; ok && c < 127; c++) {
        snprintf(piece, sizeof piece, "##%c", c);
        ok = vocab_add(v, piece, 0, 1);
    }
    for (uint32_t i = 26; ok && v->n < v->n_max; i++) { /* two letters and more */
        base26(i, piece);
        ok = vocab_add(v, piece, 0, 1);
    }
    return ok;
}

static kiln_status set_vocab(gguf_writer *w, struct vocab *v, bool spm) {
    for (uint32_t i = 0; i < v->n; i++) v->tokens[i] = v->pool + (uintptr_t)v->tokens[i];
    kiln_status st;
    if ((st = gguf_set_str(w, "tokenizer.ggml.model", spm ? "llama" : "bert")) ||
        (st = gguf_set_str(w, "tokenizer.ggml.pre", "default")) ||
        (st = gguf_set_arr_str(w, "tokenizer.ggml.tokens", v->tokens, v->n)) ||
        (st = gguf_set_arr_data(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, v->scores, v->n)) ||
        (st = gguf_set_arr_data(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, v->types, v->n)))
        return st;
    if (spm) {
        if ((st = gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) ||
            (st = gguf_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
            (st = gguf_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
            (st = gguf_set_bool(w, "tokenizer.ggml.add_bos_token", true)) ||
            (st = gguf_set_bool(w, "tokenizer.ggml.add_eos_token", false)))
            return st;
        return KILN_OK;
    }
    if ((st = gguf_set_u32(w, "tokenizer.ggml.token_type_count", 2)) ||
        (st = gguf_set_u32(w, "tokenizer.ggml.padding_token_id", 0)) ||
        (st = gguf_set_u32(w, "tokenizer.ggml.unknown_token_id", 1)) ||
        (st = gguf_set_u32(w, "tokenizer.ggml.cls_token_id", 2)) ||
        (st = gguf_set_u32(w, "tokenizer.ggml.seperator_token_id", 3)) ||
        (st = gguf_set_u32(w, "tokenizer.ggml.mask_token_id", 4)))
        return st;
    return KILN_OK;
}

/* Writes a generated vocabulary of hp->n_vocab tokens. */
static kiln_status write_vocab(gguf_writer *w, const struct arch_hparams *hp) {
    bool spm = hp->arch->flags & ARCH_F_CAUSAL;
    uint32_t min = spm ? 259 : 193;
    if (hp->n_vocab < min)
        return kiln_fail(KILN_ERR_RANGE,
                         "a generated %s vocabulary needs at least %u tokens, not %u",
                         spm ? "SPM" : "WordPiece", min, hp->n_vocab);
    struct vocab v = {.n_max = hp->n_vocab, .cap = (size_t)hp->n_vocab * 16 + 64};
    v.pool = malloc(v.cap);
    v.tokens = malloc(v.n_max * sizeof *v.tokens);
    v.scores = malloc(v.n_max * sizeof *v.scores);
    v.types = malloc(v.n_max * sizeof *v.types);
    kiln_status st = KILN_OK;
    if (!v.pool || !v.tokens || !v.scores || !v.types)
        st = kiln_fail(KILN_ERR_NOMEM, "no memory for a vocabulary of %u tokens", v.n_max);
    else if (!(spm ? vocab_fill_spm(&v) : vocab_fill_wpm(&v)) || v.n != v.n_max)
        st =
            kiln_fail(KILN_ERR_INTERNAL, "vocabulary generation stopped at %u of %u", v.n, v.n_max);
    else
        st = set_vocab(w, &v, spm);
    free(v.pool);
    free(v.tokens);
    free(v.scores);
    free(v.types);
    return st;
}

/* Copies every tokenizer.* key of path into w; *n_vocab = its token count. */
static kiln_status copy_vocab(gguf_writer *w, const char *path, uint32_t *n_vocab) {
    kiln_status st;
    gguf_file *f = gguf_open(path, &st);
    if (!f) return st;
    const gguf_value *tokens;
    st = gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &tokens);
    if (st == KILN_ERR_NOT_FOUND)
        st = kiln_fail(KILN_ERR_FORMAT, "%s: no tokenizer.ggml.tokens to copy a vocabulary from",
                       path);
    else if (!st && (tokens->arr.n == 0 || tokens->arr.n > UINT32_MAX))
        st = kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.tokens has %llu tokens", path,
                       (unsigned long long)tokens->arr.n);
    for (int64_t i = 0; !st && i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (!strncmp(kv->key, "tokenizer.", 10)) st = gguf_set_value(w, kv->key, &kv->value);
    }
    if (!st) *n_vocab = (uint32_t)tokens->arr.n;
    gguf_close(f); /* the writer copied every value */
    return st;
}

/* ---- metadata ---- */

static kiln_status set_key_u32(gguf_writer *w, const char *arch, const char *suffix, uint32_t v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_set_u32(w, key, v);
}

static kiln_status set_key_f32(gguf_writer *w, const char *arch, const char *suffix, float v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_set_f32(w, key, v);
}

static kiln_status write_general(gguf_writer *w, const struct synth_params *p) {
    const struct arch_def *a = p->hp.arch;
    uint32_t ftype = quant_ftype_of_type(p->type);
    kiln_status st;
    if ((st = gguf_set_str(w, "general.architecture", a->name)) ||
        (st = gguf_set_str(w, "general.name", p->name ? p->name : a->name)) ||
        (ftype != UINT32_MAX && (st = gguf_set_u32(w, "general.file_type", ftype))) ||
        (kiln_type_info(p->type)->blck > 1 &&
         (st = gguf_set_u32(w, "general.quantization_version", 2))))
        return st;
    return KILN_OK;
}

static kiln_status write_hparams(gguf_writer *w, const struct arch_hparams *hp) {
    const char *a = hp->arch->name;
    unsigned fl = hp->arch->flags;
    kiln_status st;
    if ((st = set_key_u32(w, a, "context_length", hp->n_ctx_train)) ||
        (st = set_key_u32(w, a, "embedding_length", hp->n_embd)) ||
        (st = set_key_u32(w, a, "block_count", hp->n_layer)) ||
        (st = set_key_u32(w, a, "feed_forward_length", hp->n_ff)) ||
        (st = set_key_u32(w, a, "attention.head_count", hp->n_head)) ||
        (st = set_key_f32(w, a, hp->arch->eps_key, hp->norm_eps)))
        return st;
    if ((fl & ARCH_F_CAUSAL) &&
        ((st = set_key_u32(w, a, "attention.head_count_kv", hp->n_head_kv)) ||
         (st = set_key_u32(w, a, "rope.dimension_count", hp->n_rot))))
        return st;
    if ((fl & ARCH_F_ROPE) && (st = set_key_f32(w, a, "rope.freq_base", hp->rope_freq_base)))
        return st;
    if (!(fl & ARCH_F_CAUSAL)) {
        char key[128];
        snprintf(key, sizeof key, "%s.attention.causal", a);
        if ((st = gguf_set_bool(w, key, false)) ||
            (st = set_key_u32(w, a, "pooling_type", hp->pooling_type)))
            return st;
    }
    return KILN_OK;
}

/* ---- tensors ---- */

struct gen_task {
    kiln_from_float_fn from_float;
    int64_t ne0, nrows;
    uint8_t *dst;
    size_t dst_row;
    enum arch_init init;
    float sigma, sigma_v; /* sigma_v: rows >= v_row0 (fused qkv) */
    int64_t v_row0;
    uint64_t seed;
    float *scratch; /* ne0 floats per thread */
};

static void gen_worker(void *arg, int ith, int nth) {
    const struct gen_task *t = arg;
    float *row = t->scratch + (size_t)ith * (size_t)t->ne0;
    for (int64_t r = t->nrows * ith / nth; r < t->nrows * (ith + 1) / nth; r++) {
        if (t->init == ARCH_INIT_ONE || t->init == ARCH_INIT_ZERO) {
            float v = t->init == ARCH_INIT_ONE ? 1.0f : 0.0f;
            for (int64_t i = 0; i < t->ne0; i++) row[i] = v;
        } else {
            fill_normal(row, t->ne0, t->seed, r, r >= t->v_row0 ? t->sigma_v : t->sigma);
        }
        t->from_float(row, t->dst + (size_t)r * t->dst_row, t->ne0);
    }
}

static float init_sigma(enum arch_init init, const struct arch_def *a) {
    switch (init) {
    case ARCH_INIT_QK:
    case ARCH_INIT_QKV:
        return 0.08f;
    case ARCH_INIT_VO:
        return a->sigma_vo;
    case ARCH_INIT_FFN:
        return 0.05f;
    default:
        return 0.02f;
    }
}

struct gen_ctx {
    const struct synth_params *p;
    const struct arch_hparams *hp;
    gguf_writer *w;
    kiln_pool *pool;
    void **bufs;
    int index, count;
};

/* Generates role t of layer il into a new buffer and adds it to the writer. */
static kiln_status gen_tensor(struct gen_ctx *c, enum arch_tensor t, int il) {
    const struct arch_tensor_info *ti = arch_tensor_info(t);
    char name[128];
    int64_t ne[2];
    int nd = arch_tensor_shape(c->hp, t, ne);
    arch_tensor_name(t, il, name, sizeof name);
    kiln_type type = ti->matrix ? quant_fallback_type(c->p->type, ne[0]) : KILN_TYPE_F32;
    struct gen_task g = {
        .from_float = kiln_kernels_best()->from_float[type],
        .ne0 = ne[0],
        .nrows = ne[1],
        .dst_row = kiln_row_size(type, ne[0]),
        .init = ti->init,
        .sigma = init_sigma(ti->init, c->hp->arch),
        .v_row0 = ti->init == ARCH_INIT_QKV ? arch_n_embd_q(c->hp) + arch_n_embd_kv(c->hp) : ne[1],
        .sigma_v = c->hp->arch->sigma_vo,
        .seed = c->p->seed * 0x9e3779b97f4a7c15ull ^ name_hash(name),
    };
    if (!g.from_float)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "tensor '%s': no quantizer for type %s in the %s kernels", name,
                         kiln_type_name(type), kiln_isa_name(kiln_kernels_best()->isa));
    uint64_t size = (uint64_t)g.dst_row * (uint64_t)ne[1];
    int nth = kiln_pool_size(c->pool) < ne[1] ? kiln_pool_size(c->pool) : (int)ne[1];
    g.dst = c->bufs[c->index] = malloc(size);
    g.scratch = malloc((size_t)nth * (size_t)ne[0] * sizeof(float));
    kiln_status st = KILN_OK;
    if (!g.dst || !g.scratch)
        st = kiln_fail(KILN_ERR_NOMEM, "tensor '%s': no memory for %llu bytes", name,
                       (unsigned long long)size);
    else
        kiln_pool_run_n(c->pool, nth, gen_worker, &g);
    free(g.scratch);
    if (!st) st = gguf_add_tensor(c->w, name, type, nd, ne, g.dst, size);
    if (!st && c->p->progress)
        c->p->progress(c->p->ud, c->index, c->count, name, type, size, ne[0], nd == 2 ? ne[1] : 1);
    c->index++;
    return st;
}

/* Tensors in llama.cpp's order: embeddings, layers, output norm and output. */
static kiln_status gen_all(struct gen_ctx *c) {
    const struct arch_def *a = c->hp->arch;
    kiln_status st = KILN_OK;
    for (int t = 0; !st && t < ARCH_T_OUTPUT_NORM; t++)
        if (a->tensors[t] == ARCH_REQUIRED) st = gen_tensor(c, (enum arch_tensor)t, 0);
    for (uint32_t il = 0; !st && il < c->hp->n_layer; il++)
        for (int t = ARCH_T_LAYER_FIRST; !st && t < ARCH_T_COUNT; t++)
            if (a->tensors[t] == ARCH_REQUIRED) st = gen_tensor(c, (enum arch_tensor)t, (int)il);
    for (int t = ARCH_T_OUTPUT_NORM; !st && t < ARCH_T_LAYER_FIRST; t++)
        if (a->tensors[t] == ARCH_REQUIRED) st = gen_tensor(c, (enum arch_tensor)t, 0);
    return st;
}

static int count_tensors(const struct arch_hparams *hp) {
    int n_global = 0, n_layer = 0;
    for (int t = 0; t < ARCH_T_COUNT; t++)
        if (hp->arch->tensors[t] == ARCH_REQUIRED)
            *(t < ARCH_T_LAYER_FIRST ? &n_global : &n_layer) += 1;
    return n_global + n_layer * (int)hp->n_layer;
}

kiln_status synth_write(const struct synth_params *p, const char *path) {
    struct arch_hparams hp = p->hp;
    struct gen_ctx c = {.p = p, .hp = &hp};
    kiln_status st;
    if (!hp.arch || !kiln_type_info(p->type))
        return kiln_fail(KILN_ERR_INVALID_ARG, "synth: no architecture or an unknown type");
    if ((st = arch_hparams_check(&hp, "synth")) || (st = quant_check_output(path))) return st;
    if (!(c.w = gguf_writer_create())) return kiln_fail(KILN_ERR_NOMEM, "synth: no memory");
    if ((st = write_general(c.w, p)) || (st = write_hparams(c.w, &hp))) goto done;
    st = p->vocab_from ? copy_vocab(c.w, p->vocab_from, &hp.n_vocab) : write_vocab(c.w, &hp);
    if (st || (st = arch_hparams_check(&hp, "synth"))) goto done;
    c.count = count_tensors(&hp);
    if (!(c.bufs = calloc((size_t)c.count, sizeof *c.bufs))) {
        st = kiln_fail(KILN_ERR_NOMEM, "synth: no memory");
        goto done;
    }
    if (!(c.pool = kiln_pool_create(p->n_threads, &st))) goto done;
    if ((st = gen_all(&c))) goto done;
    st = gguf_writer_write(c.w, path);
done:
    for (int i = 0; c.bufs && i < c.count; i++) free(c.bufs[i]);
    free(c.bufs);
    kiln_pool_destroy(c.pool);
    gguf_writer_destroy(c.w);
    return st;
}
