/* synth.h - synthetic (random-weight) models of a supported architecture and
 * shape, written as GGUF files llama.cpp can load: for tests that need a
 * model of a given shape and type, and for capacity planning.
 *
 * Weights follow the recipe of the shared test models: matrices are N(0, s^2)
 * with s by role (arch.h, enum arch_init), norm weights 1.0, norm biases 0.0,
 * linear biases N(0, 0.02^2); 1-D tensors, token_types and position_embd are
 * F32; matrices are converted with the kernel table's from_float to the
 * requested type (or its fallback when a row does not fit its blocks).
 * Embeddings are tied (no output.weight). Values depend only on the seed, the
 * tensor's name and the row, so output is byte-identical for a seed whatever
 * the thread count. The tokenizer is copied from another GGUF (every
 * tokenizer.* key, verbatim) or generated: a byte-fallback SPM vocabulary
 * ("llama": <unk>, <s>, </s>, 256 <0xNN> tokens, filler pieces) for decoders
 * and a WordPiece one ("bert": [PAD] [UNK] [CLS] [SEP] [MASK], characters,
 * ##characters, fillers) for encoders. */
#ifndef KILN_MODEL_SYNTH_H
#define KILN_MODEL_SYNTH_H

#include "kiln.h"
#include "model/arch.h"

#include <stdint.h>

/* A named shape ("tinyllama-1.1b"). */
struct synth_shape {
    const char *name;
    enum arch_id arch;
    uint32_t n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx, n_vocab;
    float rope_freq_base, norm_eps;
    uint32_t pooling_type; /* encoders: 1 mean, 2 cls */
};

int synth_shape_count(void);
const struct synth_shape *synth_shape_at(int i);
const struct synth_shape *synth_shape_find(const char *name); /* NULL when unknown */

/* Hyperparameters for a shape, checked (arch_hparams_check). */
kiln_status synth_shape_hparams(const struct synth_shape *s, struct arch_hparams *hp);

/* Called after each tensor is generated. */
typedef void (*synth_progress_fn)(void *ud, int index, int count, const char *name, kiln_type type,
                                  uint64_t bytes, int64_t ne0, int64_t ne1);

struct synth_params {
    struct arch_hparams hp; /* checked; n_vocab is replaced by vocab_from's */
    kiln_type type;         /* type of the weight matrices */
    const char *vocab_from; /* GGUF to copy tokenizer.* from; NULL: generate one */
    uint64_t seed;
    const char *name; /* general.name; NULL: the architecture's name */
    int n_threads;    /* <= 0: physical cores */
    synth_progress_fn progress;
    void *ud;
};

/* Writes the model to path. Holds the converted tensors in memory until the
 * write (the size of the output file). Errors: KILN_ERR_FORMAT for bad
 * hyperparameters (named), KILN_ERR_RANGE when a generated vocabulary would
 * be smaller than its fixed tokens (259 SPM, 193 WordPiece), the reader's
 * status for a bad vocab_from, KILN_ERR_UNSUPPORTED when the kernel table has
 * no quantizer for the type, KILN_ERR_IO for an unwritable path. */
kiln_status synth_write(const struct synth_params *p, const char *path);

#endif
