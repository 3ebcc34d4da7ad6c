/* memory.c - memory estimates for running a model (formulas in memory.h). */
#include "model/memory.h"
#include "base/mem.h"
#include "base/status.h"
#include "compute/types.h"

uint64_t mem_weight_bytes(const gguf_file *f) {
    uint64_t sum = 0;
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) sum += gguf_tensor_at(f, i)->size;
    return sum;
}

static uint64_t max_u64(uint64_t a, uint64_t b) {
    return a > b ? a : b;
}

static kiln_status kv_bytes(const struct arch_hparams *hp, const struct mem_params *p,
                            uint64_t *out) {
    *out = 0;
    if (!(hp->arch->flags & ARCH_F_CAUSAL)) return KILN_OK;
    const struct kiln_type_info *ti = kiln_type_info(p->kv_type);
    uint64_t n_kv = arch_n_embd_kv(hp);
    if (n_kv % (uint64_t)ti->blck)
        return kiln_fail(KILN_ERR_RANGE,
                         "KV row of %llu elements is not a multiple of %s's block %lld",
                         (unsigned long long)n_kv, ti->name, (long long)ti->blck);
    uint64_t row = kiln_row_size(p->kv_type, (int64_t)n_kv), v = 2 * (uint64_t)hp->n_layer;
    if (!kiln_mul_ok(v, row, &v) || !kiln_mul_ok(v, p->n_ctx, &v) || !kiln_mul_ok(v, p->n_seq, &v))
        return kiln_fail(KILN_ERR_RANGE, "KV cache size overflows");
    *out = v;
    return KILN_OK;
}

static uint64_t compute_bytes(const struct arch_hparams *hp, const struct mem_params *p) {
    const uint64_t f = 4, nb = p->n_batch, embd = hp->n_embd;
    uint64_t ffn = nb * hp->n_ff * f * ((hp->arch->flags & ARCH_F_GATED_FFN) ? 2 : 1);
    if (hp->arch->flags & ARCH_F_CAUSAL) { /* tiled attention: no scores */
        uint64_t attn = nb * (arch_n_embd_q(hp) + 2ull * arch_n_embd_kv(hp)) * f;
        uint64_t act = max_u64(embd, hp->n_ff), prep = (act + 511) / 512 * 512 * 5 / 4;
        return 2 * nb * embd * f + max_u64(attn, ffn) + nb * hp->n_rot * f + nb * act * 2 +
               nb * prep + (uint64_t)p->n_seq * hp->n_vocab * f;
    }
    uint64_t kv_len = p->n_batch < p->n_ctx ? p->n_batch : p->n_ctx;
    uint64_t attn = nb * (arch_n_embd_q(hp) + 2ull * arch_n_embd_kv(hp) + embd) * f +
                    (uint64_t)hp->n_head * nb * kv_len * f;
    uint64_t quant = nb * max_u64(embd, hp->n_ff) * f;
    return 2 * nb * embd * f + max_u64(attn, ffn) + quant + nb * embd * f;
}

kiln_status mem_estimate(const struct arch_hparams *hp, uint64_t weight_bytes,
                         const struct mem_params *p, struct mem_estimate *out) {
    if (!p->n_ctx || !p->n_seq || !p->n_batch)
        return kiln_fail(KILN_ERR_INVALID_ARG, "memory estimate: context, sequences and batch "
                                               "must be at least 1");
    if (p->kv_type != KILN_TYPE_F16 && p->kv_type != KILN_TYPE_F32 && p->kv_type != KILN_TYPE_Q8_0)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "memory estimate: KV type %s is not f16, f32 or q8_0",
                         kiln_type_name(p->kv_type) ? kiln_type_name(p->kv_type) : "?");
    out->weights = weight_bytes;
    kiln_status st = kv_bytes(hp, p, &out->kv_cache);
    if (st) return st;
    out->compute = compute_bytes(hp, p);
    out->total = out->weights + out->kv_cache + out->compute;
    return KILN_OK;
}
