/* test_model.c - the model layer above the GGUF reader: the architecture
 * table against every shared model, named errors for missing and
 * inconsistent hyperparameters and tensors, memory estimates by hand
 * arithmetic, synthetic models (deterministic, complete, loadable) and
 * requantization round trips. */
#include "testutil.h"

#include "compute/kernels.h"
#include "compute/types.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/memory.h"
#include "model/quantize.h"
#include "model/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---- */

/* A small model of arch written by synth to `name` in the scratch folder. */
static const char *write_synth(enum arch_id arch, kiln_type type, uint64_t seed, const char *name,
                               char *buf, size_t cap) {
    struct synth_shape s = {"test", arch, 64, 2, 4, 2, 128, 64, 300, 10000.0f, 1e-5f, 1};
    if (arch == ARCH_BERT || arch == ARCH_NOMIC_BERT) s.n_head_kv = s.n_head;
    struct synth_params p = {.type = type, .seed = seed, .n_threads = 2};
    assert_int_equal(synth_shape_hparams(&s, &p.hp), KILN_OK);
    test_tmp_path(name, buf, cap);
    kiln_status st = synth_write(&p, buf);
    if (st) fail_msg("synth_write: %s", kiln_last_error());
    return buf;
}

struct edit {
    const char *drop_key; /* metadata key to leave out */
    const char *set_key;  /* u32 key to set (after copying) */
    uint32_t set_val;
    const char *str_key; /* string key to set */
    const char *str_val;
    const char *drop_tensor; /* tensor to leave out */
    const char *flat_tensor; /* tensor written as 1-D (wrong shape) */
};

/* Copies src to dst with the edits applied. */
static void rewrite(const char *src, const char *dst, const struct edit *e) {
    gguf_file *f = gguf_open(src, NULL);
    assert_non_null(f);
    gguf_writer *w = gguf_writer_create();
    for (int64_t i = 0; i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        if (e->drop_key && !strcmp(kv->key, e->drop_key)) continue;
        assert_int_equal(gguf_set_value(w, kv->key, &kv->value), KILN_OK);
    }
    if (e->set_key) assert_int_equal(gguf_set_u32(w, e->set_key, e->set_val), KILN_OK);
    if (e->str_key) assert_int_equal(gguf_set_str(w, e->str_key, e->str_val), KILN_OK);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (e->drop_tensor && !strcmp(t->name, e->drop_tensor)) continue;
        int64_t flat[1] = {(int64_t)t->n_elems};
        bool fl = e->flat_tensor && !strcmp(t->name, e->flat_tensor);
        assert_int_equal(gguf_add_tensor(w, t->name, t->type, fl ? 1 : t->n_dims, fl ? flat : t->ne,
                                         t->data, t->size),
                         KILN_OK);
    }
    assert_int_equal(gguf_writer_write(w, dst), KILN_OK);
    gguf_writer_destroy(w);
    gguf_close(f);
}

/* Loads path as a model; returns the status, message in kiln_last_error(). */
static kiln_status load_status(const char *path) {
    gguf_file *f = gguf_open(path, NULL);
    assert_non_null(f);
    struct arch_model m;
    kiln_status st = arch_model_load(f, &m);
    if (!st) arch_model_free(&m);
    gguf_close(f);
    return st;
}

static void *read_all(const char *path, size_t *size) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *size = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    void *p = malloc(*size);
    assert_int_equal(fread(p, 1, *size, fp), *size);
    fclose(fp);
    return p;
}

/* ---- the table against the shared models ---- */

static void test_shared_hparams(void **state) {
    (void)state;
    static const struct {
        const char *file;
        enum arch_id arch;
        uint32_t embd, layers, head, head_kv, ff, ctx, vocab;
        bool tied;
    } cases[] = {
        {"models/stories260K.gguf", ARCH_LLAMA, 64, 5, 8, 4, 172, 2048, 512, false},
        {"models/TinyStories-656K-Q8_0.gguf", ARCH_LLAMA, 128, 2, 8, 4, 384, 512, 2048, true},
        {"models/TinyStories-656K-Q3_K_M.gguf", ARCH_LLAMA, 128, 2, 8, 4, 384, 512, 2048, true},
        {"models/mini-llama-spm-Q8_0.gguf", ARCH_LLAMA, 256, 4, 8, 4, 768, 2048, 32000, true},
        {"models/mini-llama-spm-Q2_K.gguf", ARCH_LLAMA, 256, 4, 8, 4, 768, 2048, 32000, true},
        {"models/mini-llama-bpe-Q8_0.gguf", ARCH_LLAMA, 256, 2, 8, 2, 768, 2048, 49152, true},
        {"models/mini-qwen2-Q8_0.gguf", ARCH_QWEN2, 256, 2, 8, 2, 768, 2048, 50257, true},
        {"models/mini-bert-Q8_0.gguf", ARCH_BERT, 384, 6, 12, 12, 1536, 512, 30522, false},
        {"models/mini-nomic-bert-F16.gguf", ARCH_NOMIC_BERT, 256, 4, 8, 8, 768, 2048, 30522, false},
    };
    char buf[1024];
    TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *p = test_data_path(cases[i].file, buf, sizeof buf);
        assert_non_null(p);
        gguf_file *f = gguf_open(p, NULL);
        assert_non_null(f);
        struct arch_model m;
        if (arch_model_load(f, &m)) fail_msg("%s: %s", cases[i].file, kiln_last_error());
        const struct arch_hparams *hp = &m.hp;
        assert_int_equal(hp->arch->id, cases[i].arch);
        assert_int_equal(hp->n_embd, cases[i].embd);
        assert_int_equal(hp->n_layer, cases[i].layers);
        assert_int_equal(hp->n_head, cases[i].head);
        assert_int_equal(hp->n_head_kv, cases[i].head_kv);
        assert_int_equal(hp->n_ff, cases[i].ff);
        assert_int_equal(hp->n_ctx_train, cases[i].ctx);
        assert_int_equal(hp->n_vocab, cases[i].vocab);
        assert_int_equal(m.tied_output, cases[i].tied);
        assert_non_null(m.global[ARCH_T_TOKEN_EMBD]);
        assert_non_null(arch_layer_tensor(&m, (int)hp->n_layer - 1, ARCH_T_FFN_DOWN));
        arch_model_free(&m);
        gguf_close(f);
    }
    /* A vocab-only file has valid hyperparameters but no tensors. */
    const char *p = test_data_path("models/vocab/ggml-vocab-bert-bge.gguf", buf, sizeof buf);
    assert_non_null(p);
    gguf_file *f = gguf_open(p, NULL);
    struct arch_hparams hp;
    assert_int_equal(arch_hparams_load(f, &hp), KILN_OK);
    assert_int_equal(hp.n_vocab, 30522);
    struct arch_model m;
    assert_int_equal(arch_model_load(f, &m), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "token_embd.weight"));
    gguf_close(f);
}

static void test_shared_extras(void **state) {
    (void)state;
    char buf[1024];
    const char *p = TEST_DATA_OR_SKIP("models/mini-qwen2-Q8_0.gguf", buf);
    gguf_file *f = gguf_open(p, NULL);
    struct arch_hparams hp;
    assert_int_equal(arch_hparams_load(f, &hp), KILN_OK);
    assert_true(fabsf(hp.rope_freq_base - 1e6f) < 1.0f);
    assert_true(fabsf(hp.norm_eps - 1e-6f) < 1e-9f);
    assert_int_equal(hp.n_rot, 32);
    gguf_close(f);
    p = test_data_path("models/mini-bert-Q8_0.gguf", buf, sizeof buf);
    f = gguf_open(p, NULL);
    assert_int_equal(arch_hparams_load(f, &hp), KILN_OK);
    assert_int_equal(hp.pooling_type, 1);
    assert_int_equal(hp.n_token_types, 2);
    gguf_close(f);
}

/* ---- named errors ---- */

static void expect_error(const char *src, const struct edit *e, kiln_status want,
                         const char *needle) {
    char dst[1024];
    test_tmp_path("model-bad.gguf", dst, sizeof dst);
    rewrite(src, dst, e);
    kiln_status st = load_status(dst);
    if (st != want || !strstr(kiln_last_error(), needle))
        fail_msg("want status %d naming '%s'; got %d: %s", want, needle, st, kiln_last_error());
    remove(dst);
}

static void test_bad_hparams(void **state) {
    (void)state;
    char src[1024];
    write_synth(ARCH_LLAMA, KILN_TYPE_F32, 1, "model-good.gguf", src, sizeof src);
    assert_int_equal(load_status(src), KILN_OK);
    expect_error(src, &(struct edit){.drop_key = "llama.embedding_length"}, KILN_ERR_FORMAT,
                 "llama.embedding_length");
    expect_error(src, &(struct edit){.drop_key = "llama.attention.layer_norm_rms_epsilon"},
                 KILN_ERR_FORMAT, "llama.attention.layer_norm_rms_epsilon");
    expect_error(src, &(struct edit){.drop_key = "general.architecture"}, KILN_ERR_FORMAT,
                 "general.architecture");
    expect_error(src, &(struct edit){.set_key = "llama.attention.head_count", .set_val = 7},
                 KILN_ERR_FORMAT, "llama.attention.head_count 7");
    expect_error(src, &(struct edit){.set_key = "llama.attention.head_count_kv", .set_val = 3},
                 KILN_ERR_FORMAT, "llama.attention.head_count_kv 3");
    expect_error(src, &(struct edit){.set_key = "llama.block_count", .set_val = 0}, KILN_ERR_FORMAT,
                 "llama.block_count");
    expect_error(src, &(struct edit){.str_key = "general.architecture", .str_val = "gpt-j"},
                 KILN_ERR_UNSUPPORTED, "gpt-j");
    expect_error(src, &(struct edit){.drop_tensor = "blk.1.ffn_up.weight"}, KILN_ERR_FORMAT,
                 "blk.1.ffn_up.weight");
    expect_error(src, &(struct edit){.flat_tensor = "blk.0.attn_k.weight"}, KILN_ERR_FORMAT,
                 "blk.0.attn_k.weight");
    /* one more layer than there are tensors */
    expect_error(src, &(struct edit){.set_key = "llama.block_count", .set_val = 3}, KILN_ERR_FORMAT,
                 "blk.2.");
    /* wrong width: attn_q no longer matches 2 * 64 */
    expect_error(src, &(struct edit){.set_key = "llama.embedding_length", .set_val = 128},
                 KILN_ERR_FORMAT, "token_embd.weight");
    remove(src);
}

static void test_table_names(void **state) {
    (void)state;
    char buf[64];
    assert_string_equal(arch_tensor_name(ARCH_T_ATTN_Q, 3, buf, sizeof buf), "blk.3.attn_q.weight");
    assert_string_equal(arch_tensor_name(ARCH_T_TOKEN_EMBD, 3, buf, sizeof buf),
                        "token_embd.weight");
    assert_null(arch_tensor_name(ARCH_T_LAYER_OUT_NORM_B, 12, buf, 8));
    assert_ptr_equal(arch_find("nomic-bert"), arch_get(ARCH_NOMIC_BERT));
    assert_null(arch_find("gemma"));
    for (int a = 0; a < ARCH_COUNT; a++) {
        const struct arch_def *d = arch_get((enum arch_id)a);
        assert_int_equal(d->id, a);
        assert_int_equal(d->tensors[ARCH_T_TOKEN_EMBD], ARCH_REQUIRED);
        assert_non_null(strstr(arch_names(), d->name));
    }
}

/* ---- memory ---- */

static void test_memory_estimate(void **state) {
    (void)state;
    struct arch_hparams hp = {.arch = arch_get(ARCH_LLAMA),
                              .n_embd = 64,
                              .n_layer = 2,
                              .n_head = 4,
                              .n_head_kv = 2,
                              .n_ff = 128,
                              .n_ctx_train = 64,
                              .n_vocab = 100,
                              .rope_freq_base = 10000,
                              .norm_eps = 1e-5f};
    assert_int_equal(arch_hparams_check(&hp, "t"), KILN_OK);
    assert_int_equal(hp.head_dim, 16);
    struct mem_params p = {.n_ctx = 16, .n_seq = 2, .n_batch = 8, .kv_type = KILN_TYPE_F16};
    struct mem_estimate e;
    assert_int_equal(mem_estimate(&hp, 1000, &p, &e), KILN_OK);
    /* K and V x 2 layers x 32-wide rows x 16 positions x 2 sequences x 2 bytes */
    assert_int_equal(e.kv_cache, 2 * 2 * 32 * 16 * 2 * 2);
    /* residual 2*8*64*4 = 4096; attention 8*(64+32+32)*4 = 4096 (tiled: no scores);
     * FFN 8*128*4*2 = 8192; rotation 8*16*4 = 512; converted 8*128*2 = 2048;
     * prepared 8*512*5/4 = 5120; logits 2*100*4 = 800 */
    assert_int_equal(e.compute, 4096 + 8192 + 512 + 2048 + 5120 + 800);
    assert_int_equal(e.weights, 1000);
    assert_int_equal(e.total, 1000 + 8192 + 20768);
    p.kv_type = KILN_TYPE_Q8_0; /* 32 elements = one 34-byte block */
    assert_int_equal(mem_estimate(&hp, 0, &p, &e), KILN_OK);
    assert_int_equal(e.kv_cache, 2 * 2 * 34 * 16 * 2);
    p.kv_type = KILN_TYPE_F32;
    assert_int_equal(mem_estimate(&hp, 0, &p, &e), KILN_OK);
    assert_int_equal(e.kv_cache, 2 * 2 * 32 * 16 * 2 * 4);
    p.kv_type = KILN_TYPE_Q4_K;
    assert_int_equal(mem_estimate(&hp, 0, &p, &e), KILN_ERR_INVALID_ARG);
    /* an encoder keeps no cache and attends within the batch */
    hp.arch = arch_get(ARCH_BERT);
    hp.n_head_kv = 4;
    assert_int_equal(arch_hparams_check(&hp, "t"), KILN_OK);
    p.kv_type = KILN_TYPE_F16;
    assert_int_equal(mem_estimate(&hp, 0, &p, &e), KILN_OK);
    assert_int_equal(e.kv_cache, 0);
    /* 4096 + max(8*(64*4)*4 + 4*8*8*4 = 9216, 8*128*4 = 4096) + 4096 + 8*64*4 */
    assert_int_equal(e.compute, 4096 + 9216 + 4096 + 2048);
}

/* ---- synthetic models ---- */

static void test_synth_deterministic(void **state) {
    (void)state;
    char a[1024], b[1024], c[1024];
    size_t na, nb, nc;
    write_synth(ARCH_LLAMA, KILN_TYPE_Q8_0, 42, "synth-a.gguf", a, sizeof a);
    write_synth(ARCH_LLAMA, KILN_TYPE_Q8_0, 42, "synth-b.gguf", b, sizeof b);
    write_synth(ARCH_LLAMA, KILN_TYPE_Q8_0, 43, "synth-c.gguf", c, sizeof c);
    void *pa = read_all(a, &na), *pb = read_all(b, &nb), *pc = read_all(c, &nc);
    assert_int_equal(na, nb);
    assert_memory_equal(pa, pb, na);
    assert_int_equal(na, nc);
    assert_memory_not_equal(pa, pc, na);
    free(pa);
    free(pb);
    free(pc);
    remove(a);
    remove(b);
    remove(c);
}

/* Every table tensor is present with its shape; matrices have `type`, the
 * rest F32; norms are 1, weights have about the recipe's sigma. */
static void check_synth(enum arch_id arch, kiln_type type) {
    char path[1024];
    write_synth(arch, type, 5, "synth-check.gguf", path, sizeof path);
    gguf_file *f = gguf_open(path, NULL);
    assert_non_null(f);
    struct arch_model m;
    if (arch_model_load(f, &m)) fail_msg("%s", kiln_last_error());
    const struct arch_def *d = m.hp.arch;
    int64_t n_req = 0;
    for (int t = 0; t < ARCH_T_COUNT; t++) {
        if (d->tensors[t] != ARCH_REQUIRED) continue;
        bool layer = t >= ARCH_T_LAYER_FIRST;
        n_req += layer ? m.hp.n_layer : 1;
        const gguf_tensor *gt = layer ? arch_layer_tensor(&m, 1, (enum arch_tensor)t) : m.global[t];
        assert_non_null(gt);
        assert_int_equal(gt->type,
                         arch_tensor_info((enum arch_tensor)t)->matrix ? type : KILN_TYPE_F32);
    }
    assert_int_equal(gguf_tensor_count(f), n_req);
    const gguf_tensor *norm = arch_layer_tensor(
        &m, 0, d->flags & ARCH_F_POST_NORM ? ARCH_T_LAYER_OUT_NORM : ARCH_T_ATTN_NORM);
    assert_true(((const float *)norm->data)[7] == 1.0f);
    const gguf_tensor *ff = arch_layer_tensor(&m, 0, ARCH_T_FFN_UP);
    float *x = malloc(ff->n_elems * sizeof *x);
    kiln_kernels_best()->to_float[ff->type](ff->data, x, (int64_t)ff->n_elems);
    double ss = 0;
    for (uint64_t i = 0; i < ff->n_elems; i++) ss += (double)x[i] * x[i];
    double sd = sqrt(ss / (double)ff->n_elems);
    assert_true(sd > 0.045 && sd < 0.055);
    free(x);
    arch_model_free(&m);
    gguf_close(f);
    remove(path);
}

static void test_synth_readback(void **state) {
    (void)state;
    check_synth(ARCH_LLAMA, KILN_TYPE_F16);
    check_synth(ARCH_QWEN2, KILN_TYPE_Q8_0);
    check_synth(ARCH_BERT, KILN_TYPE_F32);
    check_synth(ARCH_NOMIC_BERT, KILN_TYPE_Q4_0);
}

static void test_synth_vocab_from(void **state) {
    (void)state;
    char vocab[1024], out[1024];
    const char *v = TEST_DATA_OR_SKIP("models/vocab/ggml-vocab-llama-spm.gguf", vocab);
    const struct synth_shape *s = synth_shape_find("llama-mini");
    assert_non_null(s);
    struct synth_params p = {.type = KILN_TYPE_Q8_0, .vocab_from = v, .seed = 1, .n_threads = 1};
    assert_int_equal(synth_shape_hparams(s, &p.hp), KILN_OK);
    p.hp.n_layer = 1;
    test_tmp_path("synth-vocab.gguf", out, sizeof out);
    assert_int_equal(synth_write(&p, out), KILN_OK);
    gguf_file *src = gguf_open(v, NULL), *f = gguf_open(out, NULL);
    assert_non_null(f);
    struct arch_hparams hp;
    assert_int_equal(arch_hparams_load(f, &hp), KILN_OK);
    assert_int_equal(hp.n_vocab, 32000);
    for (int64_t i = 0; i < gguf_kv_count(src); i++) {
        const gguf_kv *kv = gguf_kv_at(src, i);
        if (strncmp(kv->key, "tokenizer.", 10)) continue;
        const gguf_kv *copy = gguf_find_kv(f, kv->key);
        assert_non_null(copy);
        assert_int_equal(copy->value.type, kv->value.type);
    }
    gguf_close(src);
    gguf_close(f);
    remove(out);
}

static void test_synth_errors(void **state) {
    (void)state;
    char out[1024];
    struct synth_shape s = {"tiny", ARCH_LLAMA, 64, 1, 4, 4, 128, 64, 100, 1e4f, 1e-5f, 0};
    struct synth_params p = {.type = KILN_TYPE_F16};
    assert_int_equal(synth_shape_hparams(&s, &p.hp), KILN_OK);
    test_tmp_path("synth-err.gguf", out, sizeof out);
    assert_int_equal(synth_write(&p, out), KILN_ERR_RANGE); /* vocab 100 < 259 */
    p.hp.n_vocab = 300;
    assert_int_equal(synth_write(&p, "/nonexistent-dir/x.gguf"), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent-dir/x.gguf"));
    s.n_head = 5;
    assert_int_equal(synth_shape_hparams(&s, &p.hp), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "head_count"));
}

/* ---- quantization ---- */

static void test_ftypes_and_fallback(void **state) {
    (void)state;
    struct quant_ftype ft;
    assert_int_equal(quant_ftype_parse("q4_k_m", &ft), KILN_OK);
    assert_int_equal(ft.ftype, 15);
    assert_int_equal(ft.type, KILN_TYPE_Q4_K);
    assert_int_equal(quant_ftype_parse("Q8_0", &ft), KILN_OK);
    assert_int_equal(ft.ftype, 7);
    assert_int_equal(quant_ftype_parse("bf16", &ft), KILN_OK);
    assert_int_equal(ft.ftype, 32);
    assert_int_equal(quant_ftype_parse("IQ4_XS", &ft), KILN_OK);
    assert_int_equal(ft.ftype, 30);
    assert_int_equal(quant_ftype_parse("q9_9", &ft), KILN_ERR_NOT_FOUND);
    assert_non_null(strstr(kiln_last_error(), "Q4_K_M"));
    assert_int_equal(quant_ftype_of_type(KILN_TYPE_Q5_0), 8);
    assert_int_equal(quant_ftype_of_type(KILN_TYPE_Q4_K), 15);
    assert_int_equal(quant_ftype_of_type(KILN_TYPE_Q8_1), UINT32_MAX);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q4_K, 256), KILN_TYPE_Q4_K);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q4_K, 128), KILN_TYPE_Q5_0);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q5_K, 896), KILN_TYPE_Q5_1);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q6_K, 128), KILN_TYPE_Q8_0);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q3_K, 128), KILN_TYPE_IQ4_NL);
    assert_int_equal(quant_fallback_type(KILN_TYPE_Q4_0, 100), KILN_TYPE_F16);
    assert_true(quant_tensor_wanted("blk.0.attn_q.weight", 2));
    assert_false(quant_tensor_wanted("blk.0.attn_norm.weight", 1));
    assert_false(quant_tensor_wanted("token_types.weight", 2));
    assert_false(quant_tensor_wanted("position_embd.weight", 2));
}

static void test_quantize_roundtrip(void **state) {
    (void)state;
    char src[1024], dst[1024];
    write_synth(ARCH_QWEN2, KILN_TYPE_F32, 9, "quant-src.gguf", src, sizeof src);
    test_tmp_path("quant-dst.gguf", dst, sizeof dst);
    struct quant_params p = {.n_threads = 2};
    assert_int_equal(quant_ftype_parse("q8_0", &p.ftype), KILN_OK);
    struct quant_stats s;
    if (quant_file(src, dst, &p, &s)) fail_msg("%s", kiln_last_error());
    gguf_file *a = gguf_open(src, NULL), *b = gguf_open(dst, NULL);
    assert_non_null(b);
    assert_int_equal(gguf_tensor_count(a), gguf_tensor_count(b));
    assert_int_equal(s.n_converted + s.n_copied, gguf_tensor_count(a));
    uint32_t ftype;
    assert_int_equal(gguf_get_u32(b, "general.file_type", &ftype), KILN_OK);
    assert_int_equal(ftype, 7);
    assert_non_null(gguf_find_kv(b, "tokenizer.ggml.tokens"));
    for (int64_t i = 0; i < gguf_tensor_count(a); i++) {
        const gguf_tensor *ta = gguf_tensor_at(a, i), *tb = gguf_find_tensor(b, ta->name);
        assert_non_null(tb);
        bool mat = ta->n_dims == 2;
        assert_int_equal(tb->type, mat ? KILN_TYPE_Q8_0 : KILN_TYPE_F32);
        float *y = malloc(ta->n_elems * sizeof *y);
        kiln_kernels_best()->to_float[tb->type](tb->data, y, (int64_t)ta->n_elems);
        const float *x = ta->data;
        for (uint64_t j = 0; j < ta->n_elems; j++) {
            /* Q8_0 error is at most half a step: amax/127/2 <= 0.5/254 here */
            if (fabsf(x[j] - y[j]) > (mat ? 0.5f / 254.0f : 0.0f))
                fail_msg("%s[%llu]: %g vs %g", ta->name, (unsigned long long)j, x[j], y[j]);
        }
        free(y);
    }
    gguf_close(a);
    gguf_close(b);
    /* Q8_0 -> F16 converts again; the unwritable output is named */
    assert_int_equal(quant_ftype_parse("f16", &p.ftype), KILN_OK);
    assert_int_equal(quant_file(dst, src, &p, NULL), KILN_OK);
    assert_int_equal(quant_file(src, "/nonexistent-dir/out.gguf", &p, NULL), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent-dir/out.gguf"));
    assert_int_equal(quant_file("/nonexistent-dir/in.gguf", dst, &p, NULL), KILN_ERR_IO);
    remove(src);
    remove(dst);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_hparams),     cmocka_unit_test(test_shared_extras),
        cmocka_unit_test(test_bad_hparams),        cmocka_unit_test(test_table_names),
        cmocka_unit_test(test_memory_estimate),    cmocka_unit_test(test_synth_deterministic),
        cmocka_unit_test(test_synth_readback),     cmocka_unit_test(test_synth_vocab_from),
        cmocka_unit_test(test_synth_errors),       cmocka_unit_test(test_ftypes_and_fallback),
        cmocka_unit_test(test_quantize_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
