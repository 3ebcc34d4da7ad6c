/* kvcache.h - the key/value cache of a decoder context: one fixed region per
 * sequence slot, each holding n_ctx positions of every layer's keys and
 * values in F32, F16 or Q8_0.
 *
 * Layout: a row is one (slot, layer, KV head, position) vector of head_dim
 * elements in the cache type, kiln_row_size(type, head_dim) bytes. Rows of
 * one (slot, layer, head) are consecutive by position, so attention over a
 * head streams one contiguous block per sequence:
 *   row index = ((slot * n_layer + layer) * n_head_kv + head) * n_ctx + pos.
 * Q8_0 needs head_dim to be a multiple of its block (32), so that every row is
 * whole blocks.
 *
 * Slots: a slot is either free or in use; each has a fill level (n_past):
 * positions [0, n_past) hold valid rows. The cache does not track which
 * tokens are there (the engine does). Not thread-safe by itself: the forward
 * pass writes disjoint rows from several threads, and only the owning
 * context changes slots and fill levels. */
#ifndef KILN_MODEL_KVCACHE_H
#define KILN_MODEL_KVCACHE_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kv_cache {
    kiln_type type_k, type_v;
    int32_t n_layer, n_head_kv, head_dim, n_ctx, n_slots;
    size_t row_k, row_v; /* bytes per row */
    char *k, *v;
    int32_t *n_past; /* per slot */
    bool *used;      /* per slot */
};

/* 1 when t may be a cache type (F32, F16, Q8_0). */
bool kv_type_ok(kiln_type t);

/* Allocates the cache. KILN_ERR_INVALID_ARG for a type that is not F32, F16
 * or Q8_0 (named); KILN_ERR_UNSUPPORTED when head_dim is not a multiple of
 * the type's block (both numbers); KILN_ERR_RANGE when a size overflows;
 * KILN_ERR_NOMEM. On success every slot is free and empty. */
kiln_status kv_init(struct kv_cache *kv, kiln_type type_k, kiln_type type_v, int32_t n_layer,
                    int32_t n_head_kv, int32_t head_dim, int32_t n_ctx, int32_t n_slots);
void kv_free(struct kv_cache *kv);

/* Bytes the cache's K and V rows take (what kv_init allocated for them). */
uint64_t kv_bytes(const struct kv_cache *kv);

/* The first row of (slot, layer, head); position pos is pos rows further. */
static inline char *kv_k_rows(const struct kv_cache *kv, int32_t slot, int32_t il, int32_t h) {
    size_t r =
        (((size_t)slot * (size_t)kv->n_layer + (size_t)il) * (size_t)kv->n_head_kv + (size_t)h) *
        (size_t)kv->n_ctx;
    return kv->k + r * kv->row_k;
}
static inline char *kv_v_rows(const struct kv_cache *kv, int32_t slot, int32_t il, int32_t h) {
    size_t r =
        (((size_t)slot * (size_t)kv->n_layer + (size_t)il) * (size_t)kv->n_head_kv + (size_t)h) *
        (size_t)kv->n_ctx;
    return kv->v + r * kv->row_v;
}

/* Claims the lowest free slot: KILN_OK and *slot, or KILN_ERR_RANGE when all
 * are in use (the message gives the count). The slot starts empty. */
kiln_status kv_slot_claim(struct kv_cache *kv, int32_t *slot);
/* Claims a given slot if free (KILN_ERR_INVALID_ARG when in use). */
kiln_status kv_slot_claim_at(struct kv_cache *kv, int32_t slot);
/* KILN_OK when slot is a valid id of a slot in use, else KILN_ERR_INVALID_ARG
 * naming the id and `what` (the caller). */
kiln_status kv_slot_check(const struct kv_cache *kv, int32_t slot, const char *what);
/* Releases a slot in use and empties it. */
void kv_slot_release(struct kv_cache *kv, int32_t slot);

#endif
