/* kvcache.c - the per-slot KV cache (layout and contracts in kvcache.h). */
#include "model/kvcache.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/types.h"

#include <stdlib.h>
#include <string.h>

bool kv_type_ok(kiln_type t) {
    return t == KILN_TYPE_F32 || t == KILN_TYPE_F16 || t == KILN_TYPE_Q8_0;
}

static kiln_status check_type(kiln_type t, const char *which, int32_t head_dim) {
    if (!kv_type_ok(t))
        return kiln_fail(KILN_ERR_INVALID_ARG, "KV cache: %s type %s is not f32, f16 or q8_0",
                         which, kiln_type_name(t) ? kiln_type_name(t) : "(unknown)");
    int64_t blck = kiln_type_info(t)->blck;
    if (head_dim % blck)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "KV cache: %s type %s needs the head size to be a multiple of %lld; "
                         "this model's is %d (use f16 or f32)",
                         which, kiln_type_name(t), (long long)blck, head_dim);
    return KILN_OK;
}

static char *alloc_rows(uint64_t rows, size_t row, kiln_status *s) {
    uint64_t bytes;
    char *p = NULL;
    if (*s) return NULL;
    if (!kiln_mul_ok(rows, row, &bytes) || bytes > SIZE_MAX) {
        *s = kiln_fail(KILN_ERR_RANGE, "KV cache: %llu rows of %zu bytes overflow",
                       (unsigned long long)rows, row);
        return NULL;
    }
    p = kiln_aligned_alloc(KILN_CACHE_LINE, bytes ? (size_t)bytes : 1);
    if (!p)
        *s = kiln_fail(KILN_ERR_NOMEM, "KV cache: cannot allocate %llu bytes",
                       (unsigned long long)bytes);
    return p;
}

kiln_status kv_init(struct kv_cache *kv, kiln_type type_k, kiln_type type_v, int32_t n_layer,
                    int32_t n_head_kv, int32_t head_dim, int32_t n_ctx, int32_t n_slots) {
    memset(kv, 0, sizeof *kv);
    kiln_status s;
    if (n_layer <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_ctx <= 0 || n_slots <= 0)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "KV cache: layers %d, heads %d, head size %d, context %d and "
                         "sequences %d must be positive",
                         n_layer, n_head_kv, head_dim, n_ctx, n_slots);
    if ((s = check_type(type_k, "K", head_dim)) || (s = check_type(type_v, "V", head_dim)))
        return s;
    *kv = (struct kv_cache){.type_k = type_k,
                            .type_v = type_v,
                            .n_layer = n_layer,
                            .n_head_kv = n_head_kv,
                            .head_dim = head_dim,
                            .n_ctx = n_ctx,
                            .n_slots = n_slots,
                            .row_k = kiln_row_size(type_k, head_dim),
                            .row_v = kiln_row_size(type_v, head_dim)};
    uint64_t rows = (uint64_t)n_slots * (uint64_t)n_layer * (uint64_t)n_head_kv;
    if (!kiln_mul_ok(rows, (uint64_t)n_ctx, &rows))
        return kiln_fail(KILN_ERR_RANGE, "KV cache: size overflows");
    kv->k = alloc_rows(rows, kv->row_k, &s);
    kv->v = alloc_rows(rows, kv->row_v, &s);
    if (!s) {
        kv->n_past = calloc((size_t)n_slots, sizeof *kv->n_past);
        kv->used = calloc((size_t)n_slots, sizeof *kv->used);
        if (!kv->n_past || !kv->used)
            s = kiln_fail(KILN_ERR_NOMEM, "KV cache: out of memory for %d slots", n_slots);
    }
    if (s) kv_free(kv);
    return s;
}

void kv_free(struct kv_cache *kv) {
    kiln_aligned_free(kv->k);
    kiln_aligned_free(kv->v);
    free(kv->n_past);
    free(kv->used);
    memset(kv, 0, sizeof *kv);
}

uint64_t kv_bytes(const struct kv_cache *kv) {
    uint64_t rows = (uint64_t)kv->n_slots * (uint64_t)kv->n_layer * (uint64_t)kv->n_head_kv *
                    (uint64_t)kv->n_ctx;
    return rows * (uint64_t)(kv->row_k + kv->row_v);
}

kiln_status kv_slot_claim(struct kv_cache *kv, int32_t *slot) {
    for (int32_t i = 0; i < kv->n_slots; i++)
        if (!kv->used[i]) {
            kv->used[i] = true;
            kv->n_past[i] = 0;
            *slot = i;
            return KILN_OK;
        }
    return kiln_fail(KILN_ERR_RANGE, "KV cache: all %d sequences are in use (n_seq_max)",
                     kv->n_slots);
}

kiln_status kv_slot_claim_at(struct kv_cache *kv, int32_t slot) {
    if (slot < 0 || slot >= kv->n_slots || kv->used[slot])
        return kiln_fail(KILN_ERR_INVALID_ARG, "KV cache: sequence %d is not free", slot);
    kv->used[slot] = true;
    kv->n_past[slot] = 0;
    return KILN_OK;
}

kiln_status kv_slot_check(const struct kv_cache *kv, int32_t slot, const char *what) {
    if (slot < 0 || slot >= kv->n_slots)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "%s: sequence id %d is out of range (the context has %d)", what, slot,
                         kv->n_slots);
    if (!kv->used[slot])
        return kiln_fail(KILN_ERR_INVALID_ARG, "%s: sequence %d was not created (or was freed)",
                         what, slot);
    return KILN_OK;
}

void kv_slot_release(struct kv_cache *kv, int32_t slot) {
    if (slot < 0 || slot >= kv->n_slots) return;
    kv->used[slot] = false;
    kv->n_past[slot] = 0;
}
