/* test_gguf.c - GGUF reader and writer: real files from the shared data,
 * write/read round trips of every value type, and hostile inputs (truncation
 * at every byte, corrupted fields) that must fail cleanly with a message that
 * names the field and byte offset. */
#include "testutil.h"

#include "base/file.h"
#include "compute/types.h"
#include "model/gguf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_real_models(void **state) {
    (void)state;
    char buf[1024];
    const char *p = TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    kiln_status st;
    gguf_file *f = gguf_open(p, &st);
    assert_non_null(f);
    assert_int_equal(st, KILN_OK);
    gguf_str arch;
    assert_int_equal(gguf_get_str(f, "general.architecture", &arch), KILN_OK);
    assert_int_equal(arch.len, 5);
    assert_memory_equal(arch.ptr, "llama", 5);
    uint32_t n_embd;
    assert_int_equal(gguf_get_u32(f, "llama.embedding_length", &n_embd), KILN_OK);
    assert_int_equal(n_embd, 64);
    const gguf_value *toks;
    assert_int_equal(gguf_get_arr(f, "tokenizer.ggml.tokens", GGUF_VT_STRING, &toks), KILN_OK);
    assert_int_equal(toks->arr.n, 512);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, KILN_TYPE_F32);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal((uintptr_t)t->data % gguf_alignment(f), 0);
    /* wrong-type getter names the key and both types */
    assert_int_equal(gguf_get_str(f, "llama.embedding_length", &arch), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "llama.embedding_length"));
    assert_int_equal(gguf_get_u32(f, "no.such.key", &n_embd), KILN_ERR_NOT_FOUND);
    gguf_close(f);
}

static void test_all_shared_models_open(void **state) {
    (void)state;
    static const char *files[] = {
        "models/TinyStories-656K-Q8_0.gguf",   "models/TinyStories-656K-Q3_K_M.gguf",
        "models/mini-bert-Q8_0.gguf",          "models/mini-llama-bpe-Q8_0.gguf",
        "models/mini-llama-spm-Q2_K.gguf",     "models/mini-llama-spm-Q4_K_M.gguf",
        "models/mini-nomic-bert-F16.gguf",     "models/mini-qwen2-Q8_0.gguf",
        "models/quant/quant-conformance.gguf", "models/vocab/ggml-vocab-bert-bge.gguf",
        "models/vocab/ggml-vocab-gpt-2.gguf"};
    char buf[1024];
    TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        const char *p = test_data_path(files[i], buf, sizeof buf);
        assert_non_null(p);
        gguf_file *f = gguf_open(p, NULL);
        if (!f) fail_msg("%s: %s", files[i], kiln_last_error());
        gguf_close(f);
    }
}

/* Writes a file with every value type, nested arrays and tensors of several
 * types, then checks that reading gives back exactly what was written. */
static const char *write_sample(char *path, size_t cap, uint32_t align) {
    test_tmp_path(align == 32 ? "sample.gguf" : "sample64.gguf", path, cap);
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    if (align != 32) assert_int_equal(gguf_set_u32(w, "general.alignment", align), KILN_OK);
    assert_int_equal(gguf_set_str(w, "general.architecture", "llama"), KILN_OK);
    assert_int_equal(gguf_set_u32(w, "a.u32", 4000000000u), KILN_OK);
    assert_int_equal(gguf_set_i32(w, "a.i32", -7), KILN_OK);
    assert_int_equal(gguf_set_u64(w, "a.u64", 1ull << 40), KILN_OK);
    assert_int_equal(gguf_set_f32(w, "a.f32", 0.125f), KILN_OK);
    assert_int_equal(gguf_set_bool(w, "a.bool", true), KILN_OK);
    const char *strs[] = {"<s>", "", "\xe2\x96\x81hello"};
    assert_int_equal(gguf_set_arr_str(w, "a.strs", strs, 3), KILN_OK);
    const float fl[] = {1.5f, -2.0f};
    assert_int_equal(gguf_set_arr_data(w, "a.floats", GGUF_VT_FLOAT32, fl, 2), KILN_OK);
    const int8_t i8[] = {-1, 2, 3};
    assert_int_equal(gguf_set_arr_data(w, "a.i8", GGUF_VT_INT8, i8, 3), KILN_OK);
    /* nested: array of 2 arrays of uint16 */
    uint16_t in0[] = {1, 2}, in1[] = {3};
    gguf_value items[2] = {{.type = GGUF_VT_ARRAY, .arr = {GGUF_VT_UINT16, 2, in0, NULL}},
                           {.type = GGUF_VT_ARRAY, .arr = {GGUF_VT_UINT16, 1, in1, NULL}}};
    gguf_value nested = {.type = GGUF_VT_ARRAY, .arr = {GGUF_VT_ARRAY, 2, NULL, items}};
    assert_int_equal(gguf_set_value(w, "a.nested", &nested), KILN_OK);
    assert_int_equal(gguf_set_i32(w, "a.i32", -8), KILN_OK); /* replaces */

    static float f32[3 * 64];
    static uint8_t q8[2 * 34 * 2];
    for (int i = 0; i < 3 * 64; i++) f32[i] = (float)i * 0.5f;
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)(i * 7);
    int64_t ne_f[] = {64, 3}, ne_q[] = {64, 2};
    assert_int_equal(gguf_add_tensor(w, "t.f32", KILN_TYPE_F32, 2, ne_f, f32, sizeof f32), KILN_OK);
    assert_int_equal(gguf_add_tensor(w, "t.q80", KILN_TYPE_Q8_0, 2, ne_q, q8, sizeof q8), KILN_OK);
    /* wrong size is refused */
    assert_int_equal(gguf_add_tensor(w, "t.bad", KILN_TYPE_Q8_0, 2, ne_q, q8, 10),
                     KILN_ERR_INVALID_ARG);
    assert_int_equal(gguf_writer_write(w, path), KILN_OK);
    gguf_writer_destroy(w);
    return path;
}

static void check_sample(gguf_file *f, uint32_t align) {
    assert_int_equal(gguf_version(f), 3);
    assert_int_equal(gguf_alignment(f), align);
    uint32_t u32;
    int64_t i64;
    uint64_t u64;
    float f32v;
    bool b;
    assert_int_equal(gguf_get_u32(f, "a.u32", &u32), KILN_OK);
    assert_int_equal(u32, 4000000000u);
    assert_int_equal(gguf_get_i64(f, "a.i32", &i64), KILN_OK);
    assert_int_equal(i64, -8);
    assert_int_equal(gguf_get_u64(f, "a.i32", &u64), KILN_ERR_FORMAT); /* negative */
    assert_int_equal(gguf_get_u64(f, "a.u64", &u64), KILN_OK);
    assert_true(u64 == 1ull << 40);
    assert_int_equal(gguf_get_f32(f, "a.f32", &f32v), KILN_OK);
    assert_true(f32v == 0.125f);
    assert_int_equal(gguf_get_bool(f, "a.bool", &b), KILN_OK);
    assert_true(b);
    const gguf_value *a;
    assert_int_equal(gguf_get_arr(f, "a.strs", GGUF_VT_STRING, &a), KILN_OK);
    assert_int_equal(a->arr.n, 3);
    assert_int_equal(a->arr.items[1].str.len, 0);
    assert_memory_equal(a->arr.items[2].str.ptr, "\xe2\x96\x81hello", 8);
    assert_int_equal(gguf_get_arr(f, "a.floats", GGUF_VT_FLOAT32, &a), KILN_OK);
    assert_true(gguf_arr_f64(a, 1) == -2.0);
    assert_int_equal(gguf_get_arr(f, "a.i8", GGUF_VT_INT8, &a), KILN_OK);
    assert_int_equal(gguf_arr_i64(a, 0), -1);
    assert_int_equal(gguf_get_arr(f, "a.nested", GGUF_VT_ARRAY, &a), KILN_OK);
    assert_int_equal(a->arr.n, 2);
    assert_int_equal(a->arr.items[0].arr.n, 2);
    assert_int_equal(gguf_arr_i64(&a->arr.items[0], 1), 2);
    assert_int_equal(gguf_arr_i64(&a->arr.items[1], 0), 3);
    const gguf_tensor *t = gguf_find_tensor(f, "t.f32");
    assert_non_null(t);
    assert_int_equal((uintptr_t)((const char *)t->data - (const char *)NULL) % 1, 0);
    assert_int_equal((gguf_data_offset(f) + t->offset) % align, 0);
    assert_true(((const float *)t->data)[5] == 2.5f);
    t = gguf_find_tensor(f, "t.q80");
    assert_non_null(t);
    assert_int_equal(t->type, KILN_TYPE_Q8_0);
    assert_int_equal(t->size, 2 * 2 * 34);
    assert_int_equal((gguf_data_offset(f) + t->offset) % align, 0);
    assert_int_equal(((const uint8_t *)t->data)[3], 21);
}

static void test_roundtrip(void **state) {
    (void)state;
    char path[1024];
    for (uint32_t align = 32; align <= 64; align += 32) {
        write_sample(path, sizeof path, align);
        gguf_file *f = gguf_open(path, NULL);
        if (!f) fail_msg("%s", kiln_last_error());
        check_sample(f, align);

        /* copy everything through the writer: the bytes must be identical */
        gguf_writer *w = gguf_writer_create();
        for (int64_t i = 0; i < gguf_kv_count(f); i++)
            assert_int_equal(gguf_set_value(w, gguf_kv_at(f, i)->key, &gguf_kv_at(f, i)->value),
                             KILN_OK);
        for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            assert_int_equal(
                gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->size), KILN_OK);
        }
        char copy[1024];
        test_tmp_path("copy.gguf", copy, sizeof copy);
        assert_int_equal(gguf_writer_write(w, copy), KILN_OK);
        gguf_writer_destroy(w);
        FILE *a = fopen(path, "rb"), *b = fopen(copy, "rb");
        int ca, cb;
        do {
            ca = fgetc(a);
            cb = fgetc(b);
            assert_int_equal(ca, cb);
        } while (ca != EOF);
        fclose(a);
        fclose(b);
        gguf_close(f);
    }
}

static void test_real_model_rewrite(void **state) {
    (void)state;
    char buf[1024], out[1024];
    const char *p = TEST_DATA_OR_SKIP("models/TinyStories-656K-Q3_K_M.gguf", buf);
    gguf_file *f = gguf_open(p, NULL);
    assert_non_null(f);
    gguf_writer *w = gguf_writer_create();
    for (int64_t i = 0; i < gguf_kv_count(f); i++)
        assert_int_equal(gguf_set_value(w, gguf_kv_at(f, i)->key, &gguf_kv_at(f, i)->value),
                         KILN_OK);
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        assert_int_equal(gguf_add_tensor(w, t->name, t->type, t->n_dims, t->ne, t->data, t->size),
                         KILN_OK);
    }
    assert_int_equal(gguf_writer_write(w, test_tmp_path("rewrite.gguf", out, sizeof out)), KILN_OK);
    gguf_writer_destroy(w);
    gguf_file *g = gguf_open(out, NULL);
    assert_non_null(g);
    assert_int_equal(gguf_kv_count(g), gguf_kv_count(f));
    assert_int_equal(gguf_tensor_count(g), gguf_tensor_count(f));
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *a = gguf_tensor_at(f, i), *b = gguf_find_tensor(g, a->name);
        assert_non_null(b);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->size, b->size);
        assert_memory_equal(a->data, b->data, a->size);
    }
    gguf_close(g);
    gguf_close(f);
}

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *p = malloc(*n);
    assert_int_equal(fread(p, 1, *n, fp), *n);
    fclose(fp);
    return p;
}

/* Every truncation of a valid file fails with a format error (or, past the
 * header, succeeds only when nothing was cut that the file needs). */
static void test_truncation(void **state) {
    (void)state;
    char path[1024];
    write_sample(path, sizeof path, 32);
    size_t n;
    uint8_t *img = slurp(path, &n);
    for (size_t len = 0; len < n; len++) {
        uint8_t *copy = malloc(len ? len : 1); /* exact size so ASan catches overreads */
        memcpy(copy, img, len);
        kiln_status st;
        gguf_file *f = gguf_open_memory(copy, len, "cut.gguf", &st);
        /* the last tensor's padding may be cut without harm */
        if (f)
            assert_true(len >= n - 32);
        else {
            assert_int_equal(st, KILN_ERR_FORMAT);
            assert_non_null(strstr(kiln_last_error(), "cut.gguf"));
        }
        gguf_close(f);
        free(copy);
    }
    free(img);
}

static void expect_fail(uint8_t *img, size_t n, const char *needle) {
    kiln_status st;
    uint8_t *copy = malloc(n);
    memcpy(copy, img, n);
    gguf_file *f = gguf_open_memory(copy, n, "bad.gguf", &st);
    if (f) fail_msg("accepted a corrupt file (expected '%s')", needle);
    if (!strstr(kiln_last_error(), needle))
        fail_msg("message '%s' lacks '%s'", kiln_last_error(), needle);
    free(copy);
}

static void put64(uint8_t *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static void put32(uint8_t *p, uint32_t v) {
    memcpy(p, &v, 4);
}

static size_t find_bytes(const uint8_t *img, size_t n, const char *s) {
    size_t l = strlen(s);
    for (size_t i = 0; i + l <= n; i++)
        if (!memcmp(img + i, s, l)) return i;
    fail_msg("'%s' not in image", s);
    return 0;
}

static void test_corruptions(void **state) {
    (void)state;
    char path[1024];
    write_sample(path, sizeof path, 32);
    size_t n;
    uint8_t *img = slurp(path, &n), *m = malloc(n);
#define MUTATE(stmt, needle)                                                                       \
    do {                                                                                           \
        memcpy(m, img, n);                                                                         \
        stmt;                                                                                      \
        expect_fail(m, n, needle);                                                                 \
    } while (0)
    MUTATE(m[0] = 'X', "not a GGUF file");
    MUTATE(put32(m + 4, 1), "version 1");
    MUTATE(put32(m + 4, 77), "version 77");
    MUTATE(put64(m + 8, 1ull << 60), "tensor count");
    MUTATE(put64(m + 16, 1ull << 60), "metadata count");
    size_t k = find_bytes(img, n, "a.u32") - 8; /* key length field */
    MUTATE(put64(m + k, 1ull << 62), "metadata key at byte");
    MUTATE(put32(m + k + 8 + 5, 99), "value type 99");
    size_t arr = find_bytes(img, n, "a.strs") + 6; /* type, elem type, n */
    MUTATE(put64(m + arr + 8, 1ull << 61), "array length");
    MUTATE(put32(m + arr + 4, 42), "array element type 42");
    size_t bo = find_bytes(img, n, "a.bool") + 6 + 4;
    MUTATE(m[bo] = 7, "bool");
    size_t dup = find_bytes(img, n, "a.bool");
    MUTATE(memcpy(m + dup, "a.strs", 6), "appears twice");
    size_t t = find_bytes(img, n, "t.q80") + 5; /* n_dims */
    MUTATE(put32(m + t, 0), "n_dims 0");
    MUTATE(put32(m + t, 9), "n_dims 9");
    MUTATE(put64(m + t + 4, 1ull << 30), "past the end");
    MUTATE(put64(m + t + 4, 33), "not a multiple of q8_0's block size");
    MUTATE(put64(m + t + 12, 1ull << 40); put64(m + t + 4, 1ull << 40), "overflows");
    MUTATE(put32(m + t + 20, 5), "type 5");
    MUTATE(put64(m + t + 24, 8), "not a multiple of the alignment");
    MUTATE(put64(m + t + 24, 0), "overlap");
    MUTATE(put64(m + t + 24, 1ull << 50), "past the end");
    size_t tf = find_bytes(img, n, "t.q80");
    MUTATE(memcpy(m + tf, "t.f32", 5), "appears twice");
#undef MUTATE
    free(m);
    free(img);
}

static void test_bad_alignment_and_nesting(void **state) {
    (void)state;
    char path[1024];
    gguf_writer *w = gguf_writer_create();
    assert_int_equal(gguf_set_u32(w, "general.alignment", 3), KILN_ERR_INVALID_ARG);
    /* 3 is refused by the writer: smuggle it in as a value copy of another type */
    gguf_value v = {.type = GGUF_VT_INT32, .i64 = 64};
    assert_int_equal(gguf_set_value(w, "general.alignment", &v), KILN_OK);
    assert_int_equal(gguf_writer_write(w, test_tmp_path("align.gguf", path, sizeof path)), KILN_OK);
    gguf_writer_destroy(w);
    assert_null(gguf_open(path, NULL));
    assert_non_null(strstr(kiln_last_error(), "general.alignment"));

    /* arrays nested 6 deep are refused */
    gguf_value lv[6];
    uint8_t leaf = 1;
    lv[0] = (gguf_value){.type = GGUF_VT_ARRAY, .arr = {GGUF_VT_UINT8, 1, &leaf, NULL}};
    for (int i = 1; i < 6; i++)
        lv[i] = (gguf_value){.type = GGUF_VT_ARRAY, .arr = {GGUF_VT_ARRAY, 1, NULL, &lv[i - 1]}};
    w = gguf_writer_create();
    assert_int_equal(gguf_set_value(w, "deep", &lv[5]), KILN_OK);
    assert_int_equal(gguf_writer_write(w, path), KILN_OK);
    gguf_writer_destroy(w);
    assert_null(gguf_open(path, NULL));
    assert_non_null(strstr(kiln_last_error(), "nested"));

    assert_null(gguf_open("/nonexistent/dir/x.gguf", NULL));
    assert_non_null(strstr(kiln_last_error(), "cannot open"));
    w = gguf_writer_create();
    assert_int_equal(gguf_writer_write(w, "/nonexistent/dir/x.gguf"), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent/dir/x.gguf"));
    gguf_writer_destroy(w);
}

/* kiln_map_load: a file of KILN_MAP_COPY_MIN bytes and more is copied into
 * huge pages where the kernel offers them (and mapped with KILN_MMAP=1); a
 * small one is mapped; every byte reads back either way. (The copy also
 * needs twice its size available, ~130 MB: any machine that runs the suite.) */
static void test_map_load(void **state) {
    (void)state;
    char path[1024], small[1024];
    size_t size = KILN_MAP_COPY_MIN + 12345;
    uint8_t *want = malloc(size);
    assert_non_null(want);
    uint64_t z = 88172645463325252ull;
    for (size_t i = 0; i < size; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        want[i] = (uint8_t)z;
    }
    FILE *f = fopen(test_tmp_path("big.bin", path, sizeof path), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(want, 1, size, f), size);
    assert_int_equal(fclose(f), 0);
    int offered = 0;
    FILE *thp = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (thp) {
        char line[128] = "";
        offered = fgets(line, sizeof line, thp) && !strstr(line, "[never]");
        fclose(thp);
    }
    kiln_map m;
    assert_int_equal(kiln_map_load(path, &m), KILN_OK);
    assert_int_equal(m.size, size);
    assert_true(offered ? m.copy >= size : m.copy == 0);
    assert_memory_equal(m.data, want, size);
    kiln_map_close(&m);
    assert_null(m.data);

    setenv("KILN_MMAP", "1", 1);
    assert_int_equal(kiln_map_load(path, &m), KILN_OK);
    unsetenv("KILN_MMAP");
    assert_int_equal(m.copy, 0);
    assert_int_equal(m.size, size);
    assert_memory_equal(m.data, want, size);
    kiln_map_close(&m);

    f = fopen(test_tmp_path("small.bin", small, sizeof small), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(want, 1, 4096, f), 4096);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(kiln_map_load(small, &m), KILN_OK);
    assert_int_equal(m.copy, 0);
    assert_memory_equal(m.data, want, 4096);
    kiln_map_close(&m);

    assert_int_equal(kiln_map_load("/nonexistent/dir/x.gguf", &m), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "cannot open"));
    assert_int_equal(kiln_map_load("/", &m), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "not a regular file"));
    remove(path);
    remove(small);
    free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_models),
        cmocka_unit_test(test_all_shared_models_open),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_real_model_rewrite),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_corruptions),
        cmocka_unit_test(test_bad_alignment_and_nesting),
        cmocka_unit_test(test_map_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
