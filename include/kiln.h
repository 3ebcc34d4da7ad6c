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
    KILN_ERR_BUSY,        /* a bounded queue is full; try again later */
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
 * threads and contexts. A kiln_ctx is the state of one or more sequences on
 * a model (see "several sequences" below): the KV cache (F16 by default),
 * scratch buffers and a thread pool, all allocated at creation; decoding
 * does not allocate. A context is used by one thread at a time; different
 * contexts may run concurrently. Today's engine supports llama-family
 * decoders (llama, qwen2) with SentencePiece and byte-level BPE tokenizers. */

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

/* The most bytes of text one token stands for in m's tokenizer (its
 * longest token text; for SentencePiece at least 4, the bytes of a
 * character <unk> may replace), computed at load; 0 when there is no such
 * bound (WordPiece, which drops whitespace; a BPE vocabulary whose merges
 * make strings that are not tokens). Thread-safe. */
int32_t kiln_model_max_token_bytes(const kiln_model *m);

/* A lower bound of the number of tokens any tokenization of text[0..len)
 * by m holds (kiln_tokenize, kiln_tokenize_special, with or without
 * BOS/EOS, which only add): ceil(counted / kiln_model_max_token_bytes(m)),
 * where counted is len less the bytes the vocabulary may drop (bytes whose
 * token it lacks, in the BPE vocabularies missing some, or characters it
 * cannot spell in an SPM one with neither <unk> nor byte tokens). So a text
 * of len bytes cannot fit in fewer tokens, and a prompt can be refused
 * without tokenizing it. O(1) when the vocabulary drops nothing, else one
 * pass over the bytes. 0 when kiln_model_max_token_bytes is 0. Thread-safe. */
size_t kiln_tokens_at_least(const kiln_model *m, const char *text, size_t len);

/* The bytes of token id (special: also render control tokens such as
 * "<s>"). Writes min(needed, cap) bytes, no NUL; returns the number needed.
 * A piece may be part of a UTF-8 character. Thread-safe. */
size_t kiln_token_to_piece(const kiln_model *m, int32_t id, int special, char *buf, size_t cap);

typedef struct kiln_ctx_params {
    int32_t n_ctx;   /* positions in the KV cache (per sequence); 0: min(training context, 4096) */
    int32_t n_batch; /* most tokens per forward pass (prefill chunk, batched step); 0: 512 */
    int32_t n_threads; /* 0: the physical cores */
    /* KV cache element types: KILN_TYPE_F16 (kiln_ctx_default_params),
     * KILN_TYPE_F32 or KILN_TYPE_Q8_0 (head size a multiple of 32). Note that
     * KILN_TYPE_F32 is 0, so a zero-initialised struct asks for F32. */
    kiln_type type_k, type_v;
    int32_t n_seq_max; /* independent sequences, each with n_ctx positions; 0: 1 */
} kiln_ctx_params;

/* n_ctx 0, n_batch 0, n_threads 0 (the defaults above), F16 K and V, 1 sequence. */
kiln_ctx_params kiln_ctx_default_params(void);

/* A context on m (borrowed; it must outlive the context). NULL and *st on
 * failure (KILN_ERR_RANGE for a bad size, KILN_ERR_NOMEM). */
kiln_ctx *kiln_ctx_create(const kiln_model *m, const kiln_ctx_params *p, kiln_status *st);
void kiln_ctx_free(kiln_ctx *c);

int32_t kiln_ctx_n_ctx(const kiln_ctx *c);
int32_t kiln_ctx_n_threads(const kiln_ctx *c);
/* Positions filled so far in sequence 0; kiln_ctx_reset empties sequence 0
 * (creating it again if it was freed). */
int32_t kiln_ctx_n_past(const kiln_ctx *c);
void kiln_ctx_reset(kiln_ctx *c);

/* Low level: runs tokens[0..n) at the next positions of sequence 0 (in
 * chunks of n_batch), appending them to the KV cache, and writes the logits
 * of the last token (all_logits == 0: n_vocab floats) or of every token
 * (n * n_vocab floats, token i at logits + i * n_vocab); logits may be NULL.
 * KILN_ERR_RANGE when the tokens do not fit in the context or an id is
 * outside the vocabulary (nothing changes then). */
kiln_status kiln_decode(kiln_ctx *c, const int32_t *tokens, int32_t n, float *logits,
                        int all_logits);

/* Memory the context allocated, in bytes: its KV cache (every sequence) and
 * its compute buffers (activations, workspace, attention tiles, logits).
 * Either pointer may be NULL. */
void kiln_ctx_memory(const kiln_ctx *c, uint64_t *kv_cache, uint64_t *compute);
/* The KV cache's K element type, and the context's batch and sequence counts. */
kiln_type kiln_ctx_type_k(const kiln_ctx *c);
kiln_type kiln_ctx_type_v(const kiln_ctx *c);
int32_t kiln_ctx_n_batch(const kiln_ctx *c);
int32_t kiln_ctx_n_seq_max(const kiln_ctx *c);

/* ---- several sequences in one context (continuous batching) ----
 *
 * A context has n_seq_max sequence slots, ids 0 .. n_seq_max - 1, each with
 * its own region of the KV cache (n_ctx positions) and its own position.
 * Sequence 0 exists from creation: it is the one kiln_decode,
 * kiln_generate, kiln_ctx_n_past and kiln_ctx_reset use. A step runs tokens
 * of several sequences in one forward pass: the weight products see all of
 * the step's tokens at once, attention stays within each sequence, and each
 * sequence's results equal what it would get alone. Steps may mix a chunk
 * of one sequence's prompt with single decode tokens of others. Same
 * threading rule as the context: one thread at a time. */

/* Claims the lowest free sequence id into *seq; it starts empty.
 * KILN_ERR_RANGE when all n_seq_max are in use. */
kiln_status kiln_seq_create(kiln_ctx *c, int32_t *seq);
/* Frees a sequence (its cache is emptied; the id may be claimed again).
 * KILN_ERR_INVALID_ARG, naming the id, for an id out of range or not in use. */
kiln_status kiln_seq_free(kiln_ctx *c, int32_t seq);
/* Positions the sequence holds, or -1 for an id out of range or not in use. */
int32_t kiln_seq_n_past(const kiln_ctx *c, int32_t seq);
/* Keeps the first n positions of a sequence's cache and drops the rest, so
 * a prompt sharing a prefix with what the sequence holds continues after
 * it. KILN_ERR_RANGE when n is outside 0..n_past; KILN_ERR_INVALID_ARG for
 * a bad id. */
kiln_status kiln_seq_truncate(kiln_ctx *c, int32_t seq, int32_t n);

/* One sequence's part of a step. */
typedef struct kiln_seq_batch {
    int32_t seq;           /* a sequence in use */
    const int32_t *tokens; /* n_tokens ids (> 0), borrowed for the call */
    int32_t n_tokens;
    /* NULL: no logits; else the last token's (n_vocab floats), or with
     * all_logits every token's (n_tokens * n_vocab floats, token i at
     * logits + i * n_vocab). Filled when the call returns KILN_OK. */
    float *logits;
    int all_logits;
} kiln_seq_batch;

/* Runs one step: each item's tokens at its sequence's next positions,
 * appended to its cache. Everything is checked before anything runs
 * (nothing changes on error): KILN_ERR_INVALID_ARG for a sequence id out of
 * range, not in use or repeated, or an item without tokens; KILN_ERR_RANGE
 * when the step holds more than n_batch tokens, when an item does not fit
 * in its sequence's context, or for a token outside the vocabulary; each
 * message names the sequence and the numbers. */
kiln_status kiln_decode_batch(kiln_ctx *c, const kiln_seq_batch *items, int32_t n_items);

/* A bias added to one token's logit before sampling; -INFINITY bans it. */
typedef struct kiln_logit_bias {
    int32_t token;
    float bias;
} kiln_logit_bias;

typedef struct kiln_sampling {
    float temp;            /* <= 0: greedy (argmax, lowest id on a tie) */
    int32_t top_k;         /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int32_t repeat_last_n; /* tokens the penalties look back over */
    uint64_t seed;
    /* OpenAI's penalties over the same window: logit -= presence * [count > 0]
     * + frequency * count; 0: off. */
    float presence_penalty, frequency_penalty;
    const kiln_logit_bias *logit_bias; /* n_logit_bias entries, borrowed for the call */
    int32_t n_logit_bias;
} kiln_sampling;

typedef struct kiln_gen_params {
    int32_t n_predict; /* most tokens to generate; generation also stops when the context is full */
    int stop_at_eog;   /* stop (without emitting it) at an end-of-generation token */
    kiln_sampling sampling;
    /* Stop strings (n_stop of them, borrowed for the call): generation ends
     * when the output text contains one; it and what follows are not
     * delivered. Text that may be the start of one is held back until that
     * is decided, so the callback may get it one or more tokens late. */
    const char *const *stop;
    int32_t n_stop;
} kiln_gen_params;

/* n_predict 128, stop_at_eog 1, temp 0.8, top_k 40, top_p 0.95, min_p 0.05,
 * repeat_penalty 1.0 over 64 tokens, no presence/frequency penalty, logit
 * bias or stop strings, seed 0. */
kiln_gen_params kiln_gen_default_params(void);

/* Why a generation ended. */
typedef enum kiln_finish {
    KILN_FINISH_LENGTH = 0, /* n_predict tokens */
    KILN_FINISH_EOG,        /* an end-of-generation token */
    KILN_FINISH_STOP,       /* a stop string */
    KILN_FINISH_CTX,        /* the context is full */
    KILN_FINISH_CALLBACK,   /* the callback asked to stop */
    KILN_FINISH_CANCELLED,  /* kiln_sched_cancel, or the scheduler stopped */
    KILN_FINISH_TIMEOUT     /* the scheduler's per-request time limit passed */
} kiln_finish;

/* Where a generation's time went (seconds) and how many tokens it saw. */
typedef struct kiln_gen_stats {
    int32_t n_prompt, n_gen;
    double t_tokenize, t_prefill, t_decode, t_sample, t_detok;
    int32_t n_cached;   /* prompt tokens reused from the KV cache (not in n_prompt) */
    kiln_finish finish; /* meaningful when the call returned KILN_OK */
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

/* Generates from token ids[0..n) on sequence 0 of c, reusing the KV cache:
 * the longest common prefix of the tokens c holds (everything decoded since
 * the last reset) and ids is kept - at most n - 1 tokens, so the last one is
 * run again for its logits - the cache is truncated after it, and only the
 * rest of ids is prefilled (stats->n_cached says how many were reused).
 * Then samples and decodes as kiln_generate (the penalties' window starts
 * with ids); the generated tokens stay in the cache, so a follow-up prompt
 * that extends ids with them continues without recomputing. Sets
 * stats->t_tokenize to 0. KILN_ERR_RANGE when ids do not fit the context. */
kiln_status kiln_generate_tokens(kiln_ctx *c, const int32_t *ids, int32_t n,
                                 const kiln_gen_params *p, kiln_token_fn on_token, void *user,
                                 kiln_gen_stats *stats);

/* Like kiln_tokenize, but the text of a control token (such as
 * "<|im_start|>" or "[INST]", when the vocabulary has it as a control token)
 * becomes that token; the text between is tokenized as plain text. With
 * add_special, BOS is not added a second time when the text starts with the
 * BOS token's text. Same capacity rules as kiln_tokenize (*n_ids is the
 * number needed). The control tokens are indexed once, at load. */
kiln_status kiln_tokenize_special(const kiln_model *m, const char *text, size_t len,
                                  int add_special, int32_t *ids, size_t cap, size_t *n_ids);

/* kiln_tokenize (parse_special 0) or kiln_tokenize_special (1) where cap is
 * also a limit: when the text needs more than cap tokens the call returns
 * KILN_ERR_RANGE as soon as that is certain, and *n_ids is then a lower
 * bound of the count (> cap), not the count (kiln_tokenize tokenizes
 * everything to report it). The check comes first from
 * kiln_tokens_at_least (no tokenizing at all for a text over about
 * cap * kiln_model_max_token_bytes bytes), then while tokenizing: a BPE
 * vocabulary stops after the word that passed cap, a SentencePiece one
 * after the ~1 KiB chunk that did (where its pieces allow merging in
 * chunks, as SentencePiece's split_by_whitespace vocabularies do; else
 * after the text, which the byte bound keeps short). For prompts that must
 * fit a context, pass its size as cap. The ids written are unspecified on
 * KILN_ERR_RANGE. Thread-safe. */
kiln_status kiln_tokenize_bounded(const kiln_model *m, const char *text, size_t len,
                                  int add_special, int parse_special, int32_t *ids, size_t cap,
                                  size_t *n_ids);

/* ---- chat templates ----
 *
 * Kiln renders the common chat-template families natively (no Jinja
 * engine), recognising a model's tokenizer.chat_template by its content and
 * producing the same text the reference Jinja template does with
 * add_generation_prompt. Families: "chatml" (also "qwen"), "llama2",
 * "llama3", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
 * "mistral-v7-tekken", "mistral-legacy", "gemma", "phi3", "zephyr". */

typedef struct kiln_chat_message {
    const char *role; /* "system", "user" or "assistant" */
    const char *content;
} kiln_chat_message;

/* The model's tokenizer.chat_template (not NUL-terminated; *len bytes), or
 * NULL when it has none. The bytes live as long as the model. */
const char *kiln_model_chat_template(const kiln_model *m, size_t *len);

/* Renders msgs[0..n) as a prompt for m. template_name NULL: the family
 * recognised from the model's chat template (KILN_ERR_NOT_FOUND when it has
 * none, KILN_ERR_UNSUPPORTED when it is not recognised; the message says to
 * pass a name); otherwise that family (KILN_ERR_NOT_FOUND for an unknown
 * name, listing the known ones). add_assistant appends the start of an
 * assistant turn. KILN_ERR_INVALID_ARG, naming the problem, for a
 * conversation the template cannot render (roles that do not alternate
 * where the family requires it, an unsupported role). Writes the text and a
 * NUL to buf when *len + 1 <= cap, else KILN_ERR_RANGE; *len is always set
 * to the length needed. Thread-safe. */
kiln_status kiln_chat_format(const kiln_model *m, const char *template_name,
                             const kiln_chat_message *msgs, size_t n, int add_assistant, char *buf,
                             size_t cap, size_t *len);

/* Renders msgs[0..n) as kiln_chat_format does and tokenizes the text so
 * that only the template's own markup makes control tokens: message
 * contents are tokenized as plain text, so a message holding
 * "<|im_end|><|im_start|>system" or "</s>[INST]" cannot forge a turn.
 * Precisely: the result is kiln_tokenize_special(text, add_special 1),
 * except that control-token text is recognised only where it lies wholly
 * outside the contents (the template's literals, the roles, bos/eos); so a
 * conversation whose contents hold no control-token text tokenizes exactly
 * as kiln_tokenize_special does, and a content's bytes are always plain
 * text, tokenized together with the markup text around them up to the
 * nearest control tokens. Roles are markup: each must be a name (letters,
 * digits, '_', '-'), else KILN_ERR_INVALID_ARG; callers should still accept
 * only known roles. Errors as kiln_chat_format's. bounded 0: capacity as
 * kiln_tokenize (*n_ids the count, KILN_ERR_RANGE when it exceeds cap);
 * bounded 1: as kiln_tokenize_bounded (cap is a limit, checked before
 * rendering from the contents' bytes, then as tokenizing goes; on
 * KILN_ERR_RANGE *n_ids is a lower bound, > cap). Thread-safe. */
kiln_status kiln_chat_tokenize(const kiln_model *m, const char *template_name,
                               const kiln_chat_message *msgs, size_t n, int add_assistant,
                               int bounded, int32_t *ids, size_t cap, size_t *n_ids);

/* The family name kiln_chat_format would use for m (template_name as
 * there), or NULL with kiln_last_error() saying why. Thread-safe. */
const char *kiln_chat_template_family(const kiln_model *m, const char *template_name);

/* Strings that end an assistant turn in the family's text (such as
 * "<|im_end|>"), for use as stop strings when the model writes them as
 * plain text; NULL-terminated, static. Empty for an unknown name. */
const char *const *kiln_chat_stop_strings(const char *family);

/* ---- embeddings ----
 *
 * Encoders (bert, nomic-bert) and decoders (llama, qwen2: a token's vector is
 * its final hidden state after the output norm, attention causal within
 * each text) turn texts into vectors. A kiln_embed_ctx holds the buffers
 * and thread pool of one embedding engine on a model;
 * kiln_embed packs many texts of different lengths into batches with no
 * padding (attention stays within each text), pools each text's token
 * vectors into one, and normalises. A text's vector does not depend on the
 * other texts in the call. A context is used by one thread at a time; any
 * number of contexts may share a model. */

typedef enum kiln_pooling {
    KILN_POOLING_MODEL = -1, /* the model's <arch>.pooling_type (when absent: mean for
                                encoders, last for decoders) */
    KILN_POOLING_NONE = 0,   /* one vector per token */
    KILN_POOLING_MEAN = 1,   /* mean of the text's tokens, [CLS]/[SEP] (BOS/EOS) included */
    KILN_POOLING_CLS = 2,    /* the first token's vector */
    KILN_POOLING_LAST = 3    /* the last token's vector */
} kiln_pooling;

/* "none", "mean", "cls", "last"; NULL for another value. */
const char *kiln_pooling_name(kiln_pooling p);

typedef struct kiln_embed_params {
    kiln_pooling pooling; /* KILN_POOLING_MODEL by default */
    int normalize;        /* 1 (default): L2-normalise each vector */
    int32_t dim;          /* > 0: keep the first dim components (Matryoshka), then
                             normalise; 0 (default): all of them */
    int32_t batch_tokens; /* tokens per forward pass; 0 (default): the largest power of two
                             (64..2048) whose estimated compute memory fits mem_budget */
    uint64_t mem_budget;  /* bytes for compute buffers; 0: 512 MiB */
    int truncate;         /* 1: a text longer than the model's context is cut to it
                             (keeping [SEP] or EOS last); 0 (default): it is an error */
    int32_t n_threads;    /* 0: the physical cores */
} kiln_embed_params;

kiln_embed_params kiln_embed_default_params(void);

typedef struct kiln_embed_ctx kiln_embed_ctx;

/* An embedding context on m (borrowed; it must outlive the context).
 * NULL and *st on failure: KILN_ERR_UNSUPPORTED when m's architecture has
 * no embeddings forward pass (the message names it), KILN_ERR_INVALID_ARG
 * for a bad parameter (named), KILN_ERR_NOMEM. */
kiln_embed_ctx *kiln_embed_ctx_create(const kiln_model *m, const kiln_embed_params *p,
                                      kiln_status *st);
void kiln_embed_ctx_free(kiln_embed_ctx *e);

/* Length of the vectors kiln_embed returns (dim, or the model's width). */
int32_t kiln_embed_dim(const kiln_embed_ctx *e);
/* The pooling in effect (never KILN_POOLING_MODEL). */
kiln_pooling kiln_embed_pooling(const kiln_embed_ctx *e);
/* Tokens per forward pass in effect now (after any halving). */
int32_t kiln_embed_batch_tokens(const kiln_embed_ctx *e);

/* The vectors of one kiln_embed call. Text i has rows row[i] ..
 * row[i] + n_rows_of(i) - 1 of data, where a row is dim floats: one row when
 * pooled, n_tokens[i] rows with KILN_POOLING_NONE. */
typedef struct kiln_embeddings {
    int32_t n_texts, dim;
    int64_t n_rows;
    float *data;             /* n_rows * dim floats */
    int64_t *row;            /* per text: its first row */
    int32_t *n_tokens;       /* per text: tokens embedded (after truncation) */
    int32_t *truncated_from; /* per text: tokens before truncation, 0 when not cut */
} kiln_embeddings;

void kiln_embeddings_free(kiln_embeddings *r);

/* Counts and timings (seconds) of one kiln_embed call. */
typedef struct kiln_embed_stats {
    int32_t n_texts;
    int64_t n_tokens;
    int32_t n_batches;
    int32_t batch_tokens;    /* tokens per pass at the end of the call */
    int32_t max_batch_texts; /* most texts packed into one pass */
    int32_t n_halvings;      /* times an allocation failed and the batch was halved (<= 3) */
    int32_t n_threads;
    double t_tokenize, t_forward, t_pool, t_total;
} kiln_embed_stats;

/* Embeds texts[0..n) (texts[i] is lens[i] bytes of UTF-8; lens NULL: NUL-
 * terminated) and sets *out to a new kiln_embeddings (free with
 * kiln_embeddings_free). stats may be NULL. Errors, each naming the text's
 * index: KILN_ERR_INVALID_ARG for n == 0, a NULL or empty text or invalid
 * UTF-8 (with the byte offset); KILN_ERR_RANGE for a text longer than the
 * model's context (both numbers) unless truncating; KILN_ERR_NOMEM when
 * the buffers do not fit even after halving the batch 3 times. Nothing is
 * returned on error. */
kiln_status kiln_embed(kiln_embed_ctx *e, const char *const *texts, const size_t *lens, int32_t n,
                       kiln_embeddings **out, kiln_embed_stats *stats);

/* One point of kiln_embed_find_batch's sweep. */
typedef struct kiln_embed_bench_point {
    int32_t batch_tokens;
    double seconds, docs_per_s, tokens_per_s;
    kiln_status status; /* KILN_OK, or why this size could not run */
} kiln_embed_bench_point;

/* The batch-size finder: embeds texts[0..n) once per candidate batch size
 * sizes[0..n_sizes) (tokens per pass; each run after one warm-up pass of
 * the same size) with p's other settings, fills points[0..n_sizes), and
 * sets *best to the index of the highest tokens/s. Errors as kiln_embed for
 * the texts; a size that fails leaves its point's status set and the sweep
 * goes on (KILN_ERR_NOMEM overall only when every size failed). */
kiln_status kiln_embed_find_batch(const kiln_model *m, const kiln_embed_params *p,
                                  const char *const *texts, const size_t *lens, int32_t n,
                                  const int32_t *sizes, int32_t n_sizes,
                                  kiln_embed_bench_point *points, int32_t *best);

/* ---- serving: the continuous-batching scheduler ----
 *
 * A kiln_sched serves generation requests on one decoder model from its own
 * engine thread. It owns one context with n_slots sequences. Requests wait
 * in a bounded FIFO queue and are admitted into a free slot between steps;
 * each step is one kiln_decode_batch holding the next token of every slot
 * that is decoding plus chunks of the prompts being prefilled (at most
 * n_batch tokens), so a long prompt never stalls the others. Each slot
 * samples and detokenizes its own tokens (with the request's stop strings).
 * A slot keeps the tokens it last held, and a new request goes to the free
 * slot sharing the longest prefix with its prompt, which is not recomputed.
 * Results reach the request's callback on the engine thread; the callback
 * must not block (copy the text, wake the consumer). Every function here is
 * thread-safe. */

typedef struct kiln_sched kiln_sched;

typedef struct kiln_sched_params {
    int32_t n_slots;          /* requests generated together; 0: 4 */
    int32_t n_ctx;            /* positions per slot; 0: min(training context, 4096) */
    int32_t n_batch;          /* most tokens per step; 0: 512 */
    int32_t n_threads;        /* 0: the physical cores */
    int32_t max_queue;        /* requests waiting for a slot; 0: 256 */
    kiln_type type_k, type_v; /* KV cache types; F16 in the defaults */
    double timeout_s;         /* a request's limit from submission; 0: none */
} kiln_sched_params;

/* The defaults above. */
kiln_sched_params kiln_sched_default_params(void);

/* Creates the scheduler and starts its engine thread. m is borrowed and must
 * outlive it. NULL and *st on failure (KILN_ERR_UNSUPPORTED for an encoder,
 * KILN_ERR_RANGE for a bad size - a negative one, or n_batch smaller than
 * n_slots, since a step holds one token of every decoding slot -
 * KILN_ERR_NOMEM). */
kiln_sched *kiln_sched_create(const kiln_model *m, const kiln_sched_params *p, kiln_status *st);
/* Ends every request (each gets its DONE event, KILN_FINISH_CANCELLED),
 * stops the thread and frees everything. NULL is a no-op. */
void kiln_sched_destroy(kiln_sched *s);

/* What a request spent and produced; times in seconds. */
typedef struct kiln_request_stats {
    int32_t n_prompt;     /* prompt tokens */
    int32_t n_cached;     /* of which reused from the slot's cache */
    int32_t n_gen;        /* generated tokens */
    double t_queue;       /* submission to admission into a slot */
    double t_prefill;     /* admission to the first generated token */
    double t_first_token; /* submission to the first generated token */
    double t_decode;      /* the first generated token to the end */
    kiln_finish finish;
} kiln_request_stats;

typedef enum kiln_sched_event_kind {
    KILN_SCHED_TOKEN, /* a generated token and the text it completes (may be empty) */
    KILN_SCHED_DONE   /* the last event of a request */
} kiln_sched_event_kind;

typedef struct kiln_sched_event {
    kiln_sched_event_kind kind;
    int32_t token;    /* TOKEN: its id */
    const char *text; /* TOKEN: len bytes of whole UTF-8, borrowed for the call;
                         DONE: held-back text to deliver last (len may be 0) */
    size_t len;
    kiln_status status;              /* DONE: KILN_OK, or why the request failed */
    const char *error;               /* DONE with an error: the message */
    const kiln_request_stats *stats; /* DONE: borrowed for the call */
} kiln_sched_event;

typedef void (*kiln_sched_fn)(void *user, const kiln_sched_event *ev);

/* Queues a request to generate from the prompt ids[0..n) (copied) with p
 * (copied, with its stop strings and logit bias). *id (may be NULL) names it
 * for kiln_sched_cancel. fn gets TOKEN events in order, then exactly one
 * DONE, after which it is never called for this request again. Errors
 * (nothing queued, fn never called): KILN_ERR_RANGE when n is 0, an id is
 * outside the vocabulary, or the prompt does not fit a slot's context
 * (naming both numbers); KILN_ERR_BUSY when the queue is full;
 * KILN_ERR_INVALID_ARG for bad parameters (named). */
kiln_status kiln_sched_submit(kiln_sched *s, const int32_t *ids, int32_t n,
                              const kiln_gen_params *p, kiln_sched_fn fn, void *user, uint64_t *id);

/* Ends request id: it gets its DONE event (KILN_FINISH_CANCELLED) before
 * the end of the next step, and its slot is free for others. An unknown or
 * finished id is ignored. */
void kiln_sched_cancel(kiln_sched *s, uint64_t id);

/* A snapshot of the scheduler, for metrics. */
typedef struct kiln_sched_state {
    int32_t n_slots, busy_slots, queued;
    int64_t kv_used, kv_total; /* positions held by busy slots / all slots' positions */
    uint64_t kv_bytes;         /* the KV cache's allocation */
    uint64_t compute_bytes;    /* the context's other buffers */
    uint64_t n_steps;          /* steps run so far */
    /* cumulative since creation: seconds in steps, of them in the forward
     * pass (the rest is host work: batching, sampling, detokenizing,
     * callbacks); prompt and generated tokens the steps ran; KV positions
     * the decode steps attended over (summed over sequences and steps) */
    double t_busy, t_forward;
    uint64_t n_prefill_tokens, n_decode_tokens;
    int64_t kv_read;
    /* duration percentiles of the last n_recent_steps (<= 256) steps, s */
    int32_t n_recent_steps;
    double step_p50, step_p99;
} kiln_sched_state;

void kiln_sched_get_state(kiln_sched *s, kiln_sched_state *out);

/* ---- serving: the dynamic embeddings batcher ----
 *
 * A kiln_embed_batcher serves embedding requests on one encoder model from
 * its own engine thread: requests that arrive close together are merged
 * into one kiln_embed call (a pass), up to max_tokens tokens or until the
 * oldest has waited max_wait_ms, so concurrent single-sentence clients
 * share forward passes. A pass takes texts from the queued requests
 * round-robin (one text of each per round, in arrival order) up to
 * max_tokens, so a request larger than one pass is split over several and
 * the texts of requests queued behind it go into the very next pass: a
 * small request waits about two passes at most, whatever is queued before
 * it. A request's callback comes once all its texts are embedded, with its
 * vectors in input order (the same as embedding them alone). Results reach
 * the callback on the engine thread (it must not block). Every function
 * here is thread-safe. */

typedef struct kiln_embed_batcher kiln_embed_batcher;

typedef struct kiln_batcher_params {
    kiln_embed_params embed; /* pooling, threads, memory; dim and normalize are per request */
    int32_t max_tokens;      /* most tokens in one pass (whole texts; a longer text goes
                                alone); 0: 4096 */
    double max_wait_ms;      /* longest a request waits for company; 0: 2 ms; < 0: none */
    int32_t max_queue;       /* texts waiting (submitted, not yet taken into a pass); 0: 4096 */
} kiln_batcher_params;

kiln_batcher_params kiln_batcher_default_params(void);

/* m is borrowed and must outlive the batcher. NULL and *st on failure
 * (KILN_ERR_UNSUPPORTED for a decoder, KILN_ERR_INVALID_ARG, KILN_ERR_NOMEM). */
kiln_embed_batcher *kiln_embed_batcher_create(const kiln_model *m, const kiln_batcher_params *p,
                                              kiln_status *st);
/* Fails the requests still queued, partly embedded ones included
 * (KILN_ERR_BUSY, the message saying the batcher is stopping), stops the
 * thread, frees everything; a pass already running finishes and the
 * callbacks of the requests it completes run first. Not from a callback. NULL
 * is a no-op. */
void kiln_embed_batcher_destroy(kiln_embed_batcher *b);

/* One input: text (len bytes of UTF-8), or, when text is NULL, token ids
 * ids[0..n_ids) used as the tokenizer's output would be ([CLS]/[SEP] added
 * when absent and the model's tokenizer adds them). */
typedef struct kiln_embed_input {
    const char *text;
    size_t len;
    const int32_t *ids;
    int32_t n_ids;
} kiln_embed_input;

/* A request's answer, borrowed for the callback. A request embedded by one
 * pass (n_passes 1) reads as that pass; for a split one, t_queue is the
 * wait before its first pass and t_inference spans its first pass's start
 * to its last's end (passes shared with other requests, as any pass is),
 * so t_queue + t_inference is still submission to answer. */
typedef struct kiln_embed_result {
    kiln_status status;         /* KILN_OK, or why it failed */
    const char *error;          /* the message when it failed (names the inputs) */
    const kiln_embeddings *emb; /* KILN_OK: one pooled row per input, in order */
    int64_t n_tokens;           /* tokens embedded for this request */
    double t_queue;             /* submission to the start of its first pass, s */
    double t_tokenize;          /* validating and tokenizing (on the submitting thread), s */
    double t_inference;         /* its first pass's start to its last pass's end, s */
    int32_t batch_texts;        /* texts in the pass that completed it */
    int first_in_batch;         /* 1 for at most one request of each pass, one that pass
                                   embedded whole (n_passes 1), so per-pass statistics
                                   (batch_texts, t_inference) count that pass once and
                                   exactly; passes that complete no such request (the middle
                                   of a split one) mark none: n_batches counts every pass */
    int32_t n_passes;           /* passes that embedded its inputs: 1 unless split */
} kiln_embed_result;

typedef void (*kiln_embed_fn)(void *user, const kiln_embed_result *r);

/* Queues in[0..n) (copied). dim > 0 keeps the first dim components
 * (Matryoshka) before normalising; normalize 1 L2-normalises; truncate 1
 * cuts inputs longer than the context instead of failing. fn is called
 * exactly once. The inputs are validated and tokenized, and the answer's
 * memory allocated, on the calling thread, so clients tokenize in parallel.
 * Errors (nothing queued, fn not called): KILN_ERR_INVALID_ARG for n == 0,
 * an empty input or invalid UTF-8, KILN_ERR_RANGE for dim larger than the
 * model's, a token id outside the vocabulary or an input longer than the
 * context (not truncating), KILN_ERR_BUSY when the queue is full (or n
 * alone exceeds max_queue), KILN_ERR_NOMEM; each message names the input. */
kiln_status kiln_embed_batcher_submit(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n,
                                      int32_t dim, int normalize, int truncate, kiln_embed_fn fn,
                                      void *user);

/* The vector length without dim, and a snapshot for metrics. */
int32_t kiln_embed_batcher_dim(const kiln_embed_batcher *b);
typedef struct kiln_batcher_state {
    int32_t queued;     /* texts waiting (not yet taken into a pass) */
    uint64_t n_batches; /* passes (merged calls) so far */
    uint64_t compute_bytes;
} kiln_batcher_state;
void kiln_embed_batcher_get_state(kiln_embed_batcher *b, kiln_batcher_state *out);

/* A model's weights, for tables and rooflines. */
typedef struct kiln_model_desc {
    uint64_t n_params; /* elements of every tensor */
    uint64_t n_bytes;  /* bytes of every tensor's data (what a generated token reads, about) */
    /* weight elements multiplied per token: every matrix except lookup
     * tables (token, position and token-type embeddings), plus the token
     * embedding when it doubles as the output matrix. FLOPs per token are
     * about 2x this (attention, which grows with the position, aside). */
    uint64_t n_matmul_params;
    /* 1 when most matrix bytes are of a type whose products run as int8
     * dot products (the VNNI peak bounds them), 0 for float types (FMA). */
    int int8_dot;
    /* general.file_type's name ("Q4_K_M"), else the type of the most
     * matrix bytes ("q4_K"). */
    char ftype[16];
} kiln_model_desc;

/* ---- serving: the model registry ----
 *
 * The models a server offers, by name. Each is a GGUF file; a decoder is
 * served by a kiln_sched, an encoder by a kiln_embed_batcher. Models load at
 * start or on first use; when loading one would exceed the memory budget
 * (weights + KV cache + compute buffers, in bytes), the least recently used
 * unpinned models that no request holds are unloaded first. Thread-safe. */

typedef struct kiln_registry kiln_registry;

typedef struct kiln_registry_params {
    uint64_t mem_budget;         /* bytes for loaded models; 0: no limit */
    kiln_sched_params sched;     /* for decoders */
    kiln_batcher_params batcher; /* for encoders */
    /* 1: decoders get an embeddings batcher too (same params; pooling as
     * the model says, last token by default), next to their scheduler;
     * 0 (default): decoders serve generation only. */
    int decoder_embeddings;
} kiln_registry_params;

kiln_registry_params kiln_registry_default_params(void);

kiln_registry *kiln_registry_create(const kiln_registry_params *p, kiln_status *st);
/* Unloads everything (stopping each scheduler/batcher as their destroy
 * does). No request may be held. NULL is a no-op. */
void kiln_registry_destroy(kiln_registry *r);

/* Adds a model named name (unique; KILN_ERR_INVALID_ARG for a duplicate)
 * served from path. pin: never unloaded. The file is checked to exist and
 * be GGUF now (KILN_ERR_IO/KILN_ERR_FORMAT); it loads on first use. */
kiln_status kiln_registry_add(kiln_registry *r, const char *name, const char *path, int pin);

/* Loads every model that fits the budget now, in the order added; progress
 * goes to the log. Errors from a model's load are returned, naming it. */
kiln_status kiln_registry_load_all(kiln_registry *r);

/* A loaded model held by a request. */
typedef struct kiln_served {
    const char *name;
    const kiln_model *model;
    kiln_sched *sched;         /* decoders, else NULL */
    kiln_embed_batcher *embed; /* encoders (and decoders with decoder_embeddings), else NULL */
} kiln_served;

/* Finds name, loading it when needed (which may unload others), and holds
 * it until kiln_registry_release. KILN_ERR_NOT_FOUND naming the model and
 * listing the available ones; KILN_ERR_NOMEM when it cannot fit the budget
 * even alone or with the others held; a load error as kiln_model_load's. */
kiln_status kiln_registry_acquire(kiln_registry *r, const char *name, kiln_served **out);
/* Ends a hold; the model counts as used now (acquire does too), which is
 * what the least-recently-used order goes by. */
void kiln_registry_release(kiln_registry *r, kiln_served *h);

typedef struct kiln_registry_entry {
    const char *name, *path; /* valid while the registry lives */
    int loaded, pinned, loading;
    int is_encoder;    /* known once loaded or probed */
    uint64_t bytes;    /* memory in use when loaded, else the estimate */
    int32_t n_holders; /* requests holding it */
    double last_used;  /* kiln monotonic seconds; 0: never */
    /* When loaded, a snapshot of its engine (the other's is zeroed), so
     * metrics need not hold the model (holding counts as a use). */
    kiln_sched_state sched;
    kiln_batcher_state batcher;
    kiln_model_desc desc; /* when loaded: its weights (bytes, params, int8 or float) */
} kiln_registry_entry;

/* Fills out[0..min(n, cap)) in the order added; returns n, the count.
 * Neither loads a model nor counts as a use. */
int32_t kiln_registry_list(kiln_registry *r, kiln_registry_entry *out, int32_t cap);

/* ---- benchmarks and evaluation ----
 *
 * What `kiln bench-model` and `kiln perplexity` need: a model's size and
 * work per token, the machine's limits, and the arithmetic of perplexity
 * and of comparing two models' next-token distributions. */

/* Fills *out for m. Thread-safe. */
kiln_status kiln_model_describe(const kiln_model *m, kiln_model_desc *out);

/* The machine's limits as n_threads threads see them. */
typedef struct kiln_machine_limits {
    int32_t n_threads;
    double read_gbs;     /* memory read bandwidth, GB/s (1e9 bytes) */
    double fma_gflops;   /* FP32 FMA peak, GFLOP/s */
    double vnni_gops;    /* int8 dot-product peak, GOPS; 0 without VNNI */
    const char *fma_isa; /* "avx512", "avx2" or "none" */
} kiln_machine_limits;

/* Measures the limits with n_threads threads (0: the physical cores): a
 * streaming read over 1 GiB (64 MiB when quick) and register-only FMA and
 * VNNI loops; about 1 s (quick: ~0.1 s). The same measurement as `kiln
 * bench-kernels`. Other work on the machine lowers the figures.
 * KILN_ERR_NOMEM when the read buffer cannot be allocated. */
kiln_status kiln_machine_measure(int32_t n_threads, int quick, kiln_machine_limits *out);

/* How the kernels of one weight type's matrix products were chosen: which
 * variant (ISA) runs them, measured on this machine or not (`kiln tune`,
 * the first load of a model with enough of the type; see docs/perf.md,
 * "Kernel selection"). */
typedef struct kiln_kernel_choice {
    kiln_type type;
    int32_t n_threads;
    const char *matvec_isa; /* one activation column (decode): "avx2" */
    const char *matmul_isa; /* wider products (prefill, batched decode, embeddings) */
    /* "measured" (by this process), "cache" (the tune file), "forced"
     * (KILN_ISA), "off" (KILN_TUNE=off: ISA rank), "small" (too little of the
     * type to measure at load: ISA rank), "busy" (measured while other work
     * held the CPUs: ISA rank, not cached) */
    const char *source;
    int32_t n_measured; /* ISAs measured: isa[i] ran matvec_gbs[i] GB/s and matmul_gops[i] GOPS */
    const char *isa[4];
    double matvec_gbs[4], matmul_gops[4];
    char when[24];    /* UTC time of the measurement ("2026-12-07T10:11:12Z"), or "" */
    char reason[320]; /* one line, e.g. "matvec avx2 32.6 GB/s vs avx512 20.1; ..." */
} kiln_kernel_choice;

/* The kernel choices made in this process so far: one per weight type and
 * thread count of the contexts created. Writes at most cap into out;
 * returns how many there are. Static strings. Thread-safe. */
int32_t kiln_kernel_choices(kiln_kernel_choice *out, int32_t cap);

/* log(sum(exp(x[i]))) over i < n, computed without overflow (the maximum
 * is factored out), in double. -INFINITY for n <= 0. Thread-safe. */
double kiln_logsumexp(const float *x, int32_t n);

/* The k largest of x[0..n) in decreasing order (on a tie the lower index
 * first): writes min(k, n) indices to ids and values to vals (vals may be
 * NULL) and returns that count. O(n log k) time, no allocation. */
int32_t kiln_top_k(const float *x, int32_t n, int32_t k, int32_t *ids, float *vals);

/* KL(P || Q), in nats, of two next-token distributions over one
 * vocabulary, where P is known only by its top k: ids p_ids[0..k) with
 * logits p_logits and P's log-sum-exp p_lse (so P(id) = exp(logit - p_lse));
 * Q is known fully: q_logits[0..n_vocab) with q_lse. The approximation: the
 * KL of both distributions coarsened to k + 1 outcomes, P's k tokens and
 * "any other token" (mass 1 - sum of the k). That is a lower bound of the
 * true KL, exact when the tail has the same shape in P and Q; with k in
 * the tens it misses little, because the tail's mass is small. Ids outside
 * the vocabulary are KILN_ERR_RANGE (*kl untouched). Thread-safe. */
kiln_status kiln_kl_top_k(const int32_t *p_ids, const float *p_logits, int32_t k, double p_lse,
                          const float *q_logits, int32_t n_vocab, double q_lse, double *kl);

#ifdef __cplusplus
}
#endif
#endif
