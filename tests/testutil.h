/* testutil.h - shared helpers for Kiln's cmocka tests: where the shared test
 * data lives, skipping with a printed reason, and scratch files. */
#ifndef KILN_TESTUTIL_H
#define KILN_TESTUTIL_H

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>

#include "kiln.h"
#include "model/arch.h"
#include "model/synth.h"

/* Full path of a file under $KILN_TEST_DATA (e.g. "models/stories260K.gguf")
 * in buf, or NULL when the data is absent. */
const char *test_data_path(const char *rel, char *buf, size_t cap);

/* Skips the current test, printing why, when the shared data file is absent.
 * Use: const char *p = TEST_DATA_OR_SKIP("models/x.gguf", buf); */
#define TEST_DATA_OR_SKIP(rel, buf)                                                                \
    ({                                                                                             \
        const char *p_ = test_data_path(rel, buf, sizeof buf);                                     \
        if (!p_) {                                                                                 \
            print_message("SKIP: %s not found (set KILN_TEST_DATA to the shared data folder)\n",   \
                          rel);                                                                    \
            skip();                                                                                \
        }                                                                                          \
        p_;                                                                                        \
    })

/* The whole file at path, NUL-terminated (malloc'd; free it), its length in
 * *len; NULL when it cannot be opened. */
char *test_read_file(const char *path, size_t *len);

/* Token id arrays: equality, and a short listing (at most 40 ids) for
 * failure messages. */
bool test_ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb);
void test_print_ids(const char *what, const int32_t *ids, size_t n);
/* The value of one hexadecimal digit. */
int test_hexnib(char c);

/* A path for a scratch file named `name` in the test build folder. */
const char *test_tmp_path(const char *name, char *buf, size_t cap);

/* Deterministic pseudo-random numbers for tests (splitmix64). */
uint64_t test_rand_u64(uint64_t *state);
/* Standard normal via Box-Muller. */
float test_rand_normal(uint64_t *state);

/* The JSON file at data-relative path rel (jansson; strings may hold NUL),
 * or NULL when the data is absent. Fails the test when the file does not
 * parse. The caller json_decref()s it. */
json_t *test_load_json(const char *rel);

/* A JSON number as a double; true/false read as 1/0, anything else as 0. */
double test_json_num(const json_t *v);

/* The numbers of a JSON array as int32 ids into out (at most cap); returns
 * the count (0 when arr is not an array). */
size_t test_json_ids(const json_t *arr, int32_t *out, size_t cap);

/* The model at path; fails the test, printing why, when it does not load. */
kiln_model *test_load_model(const char *path);
/* An embedding context on m with p (n_threads 0 becomes 2); fails the test
 * when it cannot be made. */
kiln_embed_ctx *test_embed_ctx(const kiln_model *m, kiln_embed_params p);
/* kiln_embed of texts[0..n) (NUL-terminated), asserted to succeed. */
kiln_embeddings *test_embed_ok(kiln_embed_ctx *e, const char *const *texts, int32_t n);
/* max |a[i] - b[i]| over i < n. */
double test_max_abs_diff(const float *a, const float *b, int64_t n);
/* max |a[i] - b[i]| over max(1, max |b[i]|), i < n. */
double test_rel_diff(const float *a, const float *b, size_t n);

/* Writes a synthetic model with *sp (its hparams checked first) to
 * test_tmp_path(name) and returns that path, kept in buf; fails the test,
 * printing why, when it cannot. */
const char *test_write_synth(const char *name, const struct synth_params *sp, char *buf,
                             size_t cap);
/* The tiny encoder most tests use: 64 wide, 2 layers, 4 heads, n_ff 128,
 * context 64, 400 tokens, 2 token types, mean pooling. */
struct arch_hparams test_tiny_encoder_hp(enum arch_id arch);
/* The tiny llama decoder the scheduler, generation and trace tests use: 64
 * wide, 2 layers, 4 heads (2 KV heads), n_ff 128, 320 tokens, n_ctx. */
struct arch_hparams test_tiny_decoder_hp(int32_t n_ctx);

/* A GGUF writer holding every key-value of f (no tensors), for tests that
 * write a copy of a file with some keys changed. */
struct gguf_writer *test_gguf_copy_kvs(const struct gguf_file *f);

#endif
