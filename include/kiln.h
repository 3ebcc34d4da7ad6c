/* kiln.h - the public API of libkiln, Kiln's inference engine as a C library.
 *
 * Everything a client (the CLI, the server, an application) may use is declared
 * here; nothing outside this header is stable. Functions return a kiln_status
 * (0 = ok); constructors return NULL and report a status. The message for the
 * most recent failure on the calling thread is available from
 * kiln_last_error(); it names what was wrong (file, field, byte offset).
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION "0.1.0"

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARG, /* a caller passed a bad value */
    KILN_ERR_IO,          /* open/read/write/mmap failed */
    KILN_ERR_FORMAT,      /* a file is malformed, truncated or hostile */
    KILN_ERR_UNSUPPORTED, /* valid but not supported (tensor type, architecture) */
    KILN_ERR_NOMEM,       /* an allocation failed */
    KILN_ERR_NOT_FOUND,   /* a named key, tensor or model does not exist */
    KILN_ERR_RANGE,       /* a value is outside what is allowed (context, shape) */
    KILN_ERR_INTERNAL,    /* an invariant failed */
    KILN_STATUS_COUNT
} kiln_status;

/* A short, static description of a status ("format error"). Thread-safe. */
const char *kiln_status_str(kiln_status st);

/* The detailed message of the last failure on the calling thread, or "" when
 * none was recorded. The pointer stays valid until the thread's next failure. */
const char *kiln_last_error(void);

/* The library version string, KILN_VERSION. */
const char *kiln_version(void);

/* Tensor element types. The values are GGML's, so they can be stored in GGUF
 * files unchanged. Only some are supported by Kiln's kernels; see
 * kiln_type_supported(). */
typedef enum kiln_type {
    KILN_TYPE_F32 = 0,
    KILN_TYPE_F16 = 1,
    KILN_TYPE_Q4_0 = 2,
    KILN_TYPE_Q4_1 = 3,
    KILN_TYPE_Q5_0 = 6,
    KILN_TYPE_Q5_1 = 7,
    KILN_TYPE_Q8_0 = 8,
    KILN_TYPE_Q8_1 = 9,
    KILN_TYPE_Q2_K = 10,
    KILN_TYPE_Q3_K = 11,
    KILN_TYPE_Q4_K = 12,
    KILN_TYPE_Q5_K = 13,
    KILN_TYPE_Q6_K = 14,
    KILN_TYPE_Q8_K = 15,
    KILN_TYPE_IQ2_XXS = 16,
    KILN_TYPE_IQ2_XS = 17,
    KILN_TYPE_IQ3_XXS = 18,
    KILN_TYPE_IQ1_S = 19,
    KILN_TYPE_IQ4_NL = 20,
    KILN_TYPE_IQ3_S = 21,
    KILN_TYPE_IQ2_S = 22,
    KILN_TYPE_IQ4_XS = 23,
    KILN_TYPE_I8 = 24,
    KILN_TYPE_I16 = 25,
    KILN_TYPE_I32 = 26,
    KILN_TYPE_I64 = 27,
    KILN_TYPE_F64 = 28,
    KILN_TYPE_IQ1_M = 29,
    KILN_TYPE_BF16 = 30,
    KILN_TYPE_TQ1_0 = 34,
    KILN_TYPE_TQ2_0 = 35,
    KILN_TYPE_MXFP4 = 39,
    KILN_TYPE_COUNT = 40
} kiln_type;

/* The type's GGML name ("q4_K"), or NULL for an unknown value. */
const char *kiln_type_name(kiln_type t);

/* Parses a type name, case-insensitively ("Q4_K", "q8_0", "f16").
 * Returns KILN_OK and sets *out, or KILN_ERR_NOT_FOUND. */
kiln_status kiln_type_from_name(const char *name, kiln_type *out);

/* 1 when Kiln can dequantize and multiply tensors of this type. */
int kiln_type_supported(kiln_type t);

/* ---- models, contexts and text generation ----
 *
 * A kiln_model is a loaded GGUF model: weights mapped read-only from the file
 * and its tokenizer. It is immutable and may be shared by any number of
 * threads and contexts. A kiln_ctx is one sequence's state on a model: the
 * KV cache, scratch buffers and a thread pool, all allocated at creation. A
 * context is used by one thread at a time; different contexts may run
 * concurrently. Today's engine supports llama-family decoders (llama, qwen2)
 * with SentencePiece ("llama") tokenizers. */

typedef struct kiln_model kiln_model;
typedef struct kiln_ctx kiln_ctx;

/* Loads the model at path. NULL on failure with *st set (when st is not
 * NULL) and kiln_last_error() naming the file and what was wrong (missing
 * file, unsupported architecture, tokenizer or tensor type, bad shape).
 * Free with kiln_model_free after every context on it is freed. */
kiln_model *kiln_model_load(const char *path, kiln_status *st);
void kiln_model_free(kiln_model *m);

int32_t kiln_model_n_vocab(const kiln_model *m);
/* The context length the model was trained with (<arch>.context_length). */
int32_t kiln_model_n_ctx_train(const kiln_model *m);
/* general.architecture ("llama"). */
const char *kiln_model_arch(const kiln_model *m);

int32_t kiln_token_bos(const kiln_model *m); /* -1 when none */
int32_t kiln_token_eos(const kiln_model *m); /* -1 when none */
/* 1 when id ends a generation (EOS, EOT), else 0. */
int kiln_token_is_eog(const kiln_model *m, int32_t id);

/* Tokenizes len bytes of text. add_special adds BOS/EOS as the model's
 * metadata asks; special-token text in the input is treated as plain text.
 * Writes at most cap ids and sets *n_ids to the number needed: KILN_ERR_RANGE
 * when that exceeds cap (len + 2 always suffices). Thread-safe. */
kiln_status kiln_tokenize(const kiln_model *m, const char *text, size_t len, int add_special,
                          int32_t *ids, size_t cap, size_t *n_ids);

/* The bytes of token id (special: also render control tokens such as
 * "<s>"). Writes min(needed, cap) bytes, no NUL; returns the number needed.
 * A piece may be part of a UTF-8 character. Thread-safe. */
size_t kiln_token_to_piece(const kiln_model *m, int32_t id, int special, char *buf, size_t cap);

typedef struct kiln_ctx_params {
    int32_t n_ctx;     /* positions in the KV cache; 0: min(training context, 4096) */
    int32_t n_batch;   /* most tokens per prefill step; 0: 512 */
    int32_t n_threads; /* 0: the physical cores */
} kiln_ctx_params;

kiln_ctx_params kiln_ctx_default_params(void);

/* A context on m (borrowed; it must outlive the context). NULL and *st on
 * failure (KILN_ERR_RANGE for a bad size, KILN_ERR_NOMEM). */
kiln_ctx *kiln_ctx_create(const kiln_model *m, const kiln_ctx_params *p, kiln_status *st);
void kiln_ctx_free(kiln_ctx *c);

int32_t kiln_ctx_n_ctx(const kiln_ctx *c);
int32_t kiln_ctx_n_threads(const kiln_ctx *c);
/* Positions filled so far; kiln_ctx_reset empties the KV cache. */
int32_t kiln_ctx_n_past(const kiln_ctx *c);
void kiln_ctx_reset(kiln_ctx *c);

/* Low level: runs tokens[0..n) at the next positions, appending them to the
 * KV cache, and writes the logits of the last token (all_logits == 0:
 * n_vocab floats) or of every token (n * n_vocab floats, token i at
 * logits + i * n_vocab); logits may be NULL. KILN_ERR_RANGE when the tokens
 * do not fit in the context or an id is outside the vocabulary. */
kiln_status kiln_decode(kiln_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                        int all_logits);

typedef struct kiln_sampling {
    float temp;            /* <= 0: greedy (argmax, lowest id on a tie) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* tokens the penalty looks back over */
    uint64_t seed;
} kiln_sampling;

typedef struct kiln_gen_params {
    int32_t n_predict; /* most tokens to generate; generation also stops when the context is full */
    int stop_at_eog;   /* stop (without emitting it) at an end-of-generation token */
    kiln_sampling sampling;
} kiln_gen_params;

/* n_predict 128, stop_at_eog 1, temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0 over 64 tokens, seed 0. */
kiln_gen_params kiln_gen_default_params(void);

/* Where a generation's time went (seconds) and how many tokens it saw. */
typedef struct kiln_gen_stats {
    int32_t n_prompt, n_gen;
    double t_tokenize, t_prefill, t_decode, t_sample, t_detok;
} kiln_gen_stats;

/* Called for each generated token, in order, on the generating thread, with
 * the new text it completes: always whole, valid UTF-8 (bytes of a partial
 * character are held until it completes; invalid bytes become U+FFFD), so
 * len may be 0. A final call with id -1 may deliver held-back bytes. Return
 * 0 to continue, non-zero to stop. */
typedef int (*kiln_token_fn)(void *user, int32_t id, const char *text, size_t len);

/* Generates from prompt (tokenized with BOS as the model asks) on c: resets
 * the KV cache, prefills the prompt in batches, then samples and decodes
 * one token at a time until n_predict tokens, an end-of-generation token,
 * a full context or a non-zero callback. stats (may be NULL) receives the
 * counts and timings. KILN_ERR_RANGE, naming both numbers, when the prompt
 * is longer than the context. */
kiln_status kiln_generate(kiln_ctx *c, const char *prompt, size_t len, const kiln_gen_params *p,
                          kiln_token_fn on_token, void *user, kiln_gen_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
