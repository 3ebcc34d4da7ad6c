/* testutil.c - helpers shared by the cmocka tests (see testutil.h). */
#include "testutil.h"
#include "model/gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *test_data_path(const char *rel, char *buf, size_t cap) {
    const char *dir = getenv("KILN_TEST_DATA");
    if (!dir || !*dir) return NULL;
    snprintf(buf, cap, "%s/%s", dir, rel);
    return access(buf, R_OK) == 0 ? buf : NULL;
}

bool test_ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

void test_print_ids(const char *what, const int32_t *ids, size_t n) {
    print_message("    %s (%zu):", what, n);
    for (size_t i = 0; i < n && i < 40; i++) print_message(" %d", ids[i]);
    print_message("%s\n", n > 40 ? " ..." : "");
}

int test_hexnib(char c) {
    return c <= '9' ? c - '0' : (c | 32) - 'a' + 10;
}

char *test_read_file(const char *path, size_t *len) {
    if (!path) return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n + 1 : 1);
    *len = buf && n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
    if (buf) buf[*len] = 0;
    fclose(f);
    return buf;
}

const char *test_tmp_path(const char *name, char *buf, size_t cap) {
    const char *dir = getenv("KILN_TEST_TMP"); /* set by CTest: the test build folder */
    if (!dir || !*dir) dir = getenv("TMPDIR");
    snprintf(buf, cap, "%s/%s", dir && *dir ? dir : P_tmpdir, name);
    return buf;
}

uint64_t test_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float test_rand_normal(uint64_t *s) {
    double u1 = ((double)(test_rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = (double)(test_rand_u64(s) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

json_t *test_load_json(const char *rel) {
    char path[1024];
    if (!test_data_path(rel, path, sizeof path)) return NULL;
    json_error_t err;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
    if (!root) print_message("  %s:%d: %s\n", rel, err.line, err.text);
    assert_non_null(root);
    return root;
}

double test_json_num(const json_t *v) {
    return json_is_boolean(v) ? (json_is_true(v) ? 1.0 : 0.0) : json_number_value(v);
}

size_t test_json_ids(const json_t *arr, int32_t *out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(arr) && n < cap; i++)
        out[n++] = (int32_t)json_number_value(json_array_get(arr, i));
    return n;
}

kiln_model *test_load_model(const char *path) {
    kiln_status st;
    kiln_model *m = kiln_model_load(path, &st);
    if (!m) print_error("load %s: %s\n", path, kiln_last_error());
    assert_non_null(m);
    return m;
}

kiln_embed_ctx *test_embed_ctx(const kiln_model *m, kiln_embed_params p) {
    kiln_status st;
    if (!p.n_threads) p.n_threads = 2;
    kiln_embed_ctx *e = kiln_embed_ctx_create(m, &p, &st);
    if (!e) print_error("embed ctx: %s\n", kiln_last_error());
    assert_non_null(e);
    return e;
}

kiln_embeddings *test_embed_ok(kiln_embed_ctx *e, const char *const *texts, int32_t n) {
    kiln_embeddings *r = NULL;
    kiln_status st = kiln_embed(e, texts, NULL, n, &r, NULL);
    if (st) print_error("embed: %s\n", kiln_last_error());
    assert_int_equal(st, KILN_OK);
    return r;
}

double test_max_abs_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

double test_rel_diff(const float *a, const float *b, size_t n) {
    double md = 0, mb = 1;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

const char *test_write_synth(const char *name, const struct synth_params *sp, char *buf,
                             size_t cap) {
    test_tmp_path(name, buf, cap);
    struct synth_params p = *sp; /* the check fills head_dim and n_rot, which the writer uses */
    assert_int_equal(arch_hparams_check(&p.hp, name), KILN_OK);
    kiln_status st = synth_write(&p, buf);
    if (st) print_error("synth %s: %s\n", name, kiln_last_error());
    assert_int_equal(st, KILN_OK);
    return buf;
}

struct arch_hparams test_tiny_encoder_hp(enum arch_id arch) {
    return (struct arch_hparams){.arch = arch_get(arch),
                                 .n_embd = 64,
                                 .n_layer = 2,
                                 .n_head = 4,
                                 .n_head_kv = 4,
                                 .n_ff = 128,
                                 .n_ctx_train = 64,
                                 .n_vocab = 400,
                                 .n_token_types = 2,
                                 .pooling_type = 1,
                                 .rope_freq_base = 1000.0f,
                                 .norm_eps = 1e-12f};
}

struct arch_hparams test_tiny_decoder_hp(int32_t n_ctx) {
    return (struct arch_hparams){.arch = arch_get(ARCH_LLAMA),
                                 .n_embd = 64,
                                 .n_layer = 2,
                                 .n_head = 4,
                                 .n_head_kv = 2,
                                 .n_ff = 128,
                                 .n_ctx_train = n_ctx,
                                 .n_vocab = 320,
                                 .rope_freq_base = 10000.0f,
                                 .norm_eps = 1e-5f};
}

gguf_writer *test_gguf_copy_kvs(const gguf_file *f) {
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    for (int64_t i = 0; i < gguf_kv_count(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        assert_int_equal(gguf_set_value(w, kv->key, &kv->value), KILN_OK);
    }
    return w;
}
