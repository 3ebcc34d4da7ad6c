/* eval.c - what benchmarks and evaluations need from the engine (kiln.h,
 * "benchmarks and evaluation"): a model's size and work per token from its
 * tensor table, the machine's limits (compute/peaks.c on a pool of the
 * requested size), and the arithmetic of perplexity and model comparison
 * (log-sum-exp, top-k, KL divergence against a top-k summary), and the
 * kernel choices made so far (compute/tune.c holds them). Stateless;
 * every function is thread-safe. */
#include "engine/eval.h"

#include "base/status.h"
#include "compute/peaks.h"
#include "compute/threadpool.h"
#include "compute/tune.h"
#include "compute/types.h"
#include "engine/embed.h"
#include "model/quantize.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Lookup tables are indexed, not multiplied; the token embedding is
 * multiplied too when a decoder ties its output matrix to it. */
static int is_lookup(const char *name) {
    return !strcmp(name, "token_embd.weight") || !strcmp(name, "position_embd.weight") ||
           !strcmp(name, "token_types.weight");
}

kiln_status kiln_model_describe(const kiln_model *m, kiln_model_desc *out) {
    if (!m || !out) return kiln_fail(KILN_ERR_INVALID_ARG, "model describe: NULL argument");
    memset(out, 0, sizeof *out);
    const gguf_file *f = engine_model_gguf(m);
    int decoder = engine_model_bert(m) == NULL;
    int tied = decoder && !gguf_find_tensor(f, "output.weight");
    uint64_t type_bytes[KILN_TYPE_COUNT] = {0};
    for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        out->n_params += t->n_elems;
        out->n_bytes += t->size;
        if (t->n_dims < 2) continue;
        if (is_lookup(t->name) && !(tied && !strcmp(t->name, "token_embd.weight"))) continue;
        out->n_matmul_params += t->n_elems;
        if ((unsigned)t->type < KILN_TYPE_COUNT) type_bytes[t->type] += t->size;
    }
    int main_type = KILN_TYPE_F32;
    for (int t = 0; t < KILN_TYPE_COUNT; t++)
        if (type_bytes[t] > type_bytes[main_type]) main_type = t;
    kiln_type vdt = kiln_vec_dot_type((kiln_type)main_type);
    out->int8_dot = vdt == KILN_TYPE_Q8_0 || vdt == KILN_TYPE_Q8_1 || vdt == KILN_TYPE_Q8_K;

    uint32_t ft;
    const char *name = NULL;
    if (gguf_get_u32(f, "general.file_type", &ft) == KILN_OK)
        for (int i = 0; i < quant_ftype_count() && !name; i++)
            if (quant_ftype_at(i)->ftype == ft) name = quant_ftype_at(i)->name;
    if (!name) name = kiln_type_name((kiln_type)main_type);
    snprintf(out->ftype, sizeof out->ftype, "%s", name ? name : "?");
    return KILN_OK;
}

kiln_status kiln_machine_measure(int32_t n_threads, int quick, kiln_machine_limits *out) {
    kiln_status st;
    if (!out || n_threads < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "machine measure: bad arguments (threads %d)",
                         n_threads);
    kiln_pool *pool = kiln_pool_create(n_threads, &st);
    if (!pool) return st;
    struct kiln_peaks pk;
    st = kiln_peaks_measure(pool, &pk, quick);
    if (st == KILN_OK)
        *out = (kiln_machine_limits){.n_threads = kiln_pool_size(pool),
                                     .read_gbs = pk.bw_gbs,
                                     .fma_gflops = pk.fma_gflops,
                                     .vnni_gops = pk.vnni_gops,
                                     .fma_isa = pk.fma_isa};
    kiln_pool_destroy(pool);
    return st;
}

int32_t kiln_kernel_choices(kiln_kernel_choice *out, int32_t cap) {
    struct kiln_tune_choice c[64];
    int n = kiln_tune_choices(c, 64);
    for (int i = 0; i < n && i < 64 && i < cap; i++) {
        kiln_kernel_choice *o = &out[i];
        memset(o, 0, sizeof *o);
        o->type = c[i].type;
        o->n_threads = c[i].n_threads;
        o->matvec_isa = kiln_isa_name(c[i].mv);
        o->matmul_isa = kiln_isa_name(c[i].mm);
        o->source = kiln_tune_source_name(c[i].source);
        for (int k = KILN_ISA_COUNT - 1; k >= 0 && o->n_measured < 4; k--)
            if (c[i].mv_gbs[k] > 0 || c[i].mm_gops[k] > 0) {
                o->isa[o->n_measured] = kiln_isa_name((enum kiln_isa)k);
                o->matvec_gbs[o->n_measured] = c[i].mv_gbs[k];
                o->matmul_gops[o->n_measured++] = c[i].mm_gops[k];
            }
        snprintf(o->when, sizeof o->when, "%s", c[i].when);
        kiln_tune_describe(&c[i], o->reason, sizeof o->reason);
    }
    return n;
}

double kiln_logsumexp(const float *x, int32_t n) {
    if (n <= 0) return -INFINITY;
    float mx = x[0];
    for (int32_t i = 1; i < n; i++)
        if (x[i] > mx) mx = x[i];
    if (isinf(mx)) return mx; /* all -inf, or a +inf */
    double s = 0;
    for (int32_t i = 0; i < n; i++) s += exp((double)x[i] - mx);
    return (double)mx + log(s);
}

/* a ranks before b: larger, or equal and lower index */
static int ranks_before(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

int32_t kiln_top_k(const float *x, int32_t n, int32_t k, int32_t *ids, float *vals) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    /* A min-heap on ids[0..h) of the best k so far: its root is the worst
     * kept, which a new candidate must beat. */
    int32_t h = 0;
    for (int32_t i = 0; i < n; i++) {
        if (h == k && !ranks_before(x[i], i, x[ids[0]], ids[0])) continue;
        int32_t pos;
        if (h < k) { /* sift up from the end */
            pos = h++;
            while (pos > 0) {
                int32_t parent = (pos - 1) / 2;
                if (!ranks_before(x[ids[parent]], ids[parent], x[i], i)) break;
                ids[pos] = ids[parent];
                pos = parent;
            }
        } else { /* replace the root, sift down */
            pos = 0;
            for (;;) {
                int32_t c = 2 * pos + 1;
                if (c >= h) break;
                if (c + 1 < h && ranks_before(x[ids[c]], ids[c], x[ids[c + 1]], ids[c + 1])) c++;
                if (!ranks_before(x[i], i, x[ids[c]], ids[c])) break;
                ids[pos] = ids[c];
                pos = c;
            }
        }
        ids[pos] = i;
    }
    /* heap sort: pop the worst to the end */
    for (int32_t end = h - 1; end > 0; end--) {
        int32_t worst = ids[0], last = ids[end], pos = 0;
        ids[end] = worst;
        for (;;) {
            int32_t c = 2 * pos + 1;
            if (c >= end) break;
            if (c + 1 < end && ranks_before(x[ids[c]], ids[c], x[ids[c + 1]], ids[c + 1])) c++;
            if (!ranks_before(x[last], last, x[ids[c]], ids[c])) break;
            ids[pos] = ids[c];
            pos = c;
        }
        ids[pos] = last;
    }
    if (vals)
        for (int32_t i = 0; i < h; i++) vals[i] = x[ids[i]];
    return h;
}

kiln_status kiln_kl_top_k(const int32_t *p_ids, const float *p_logits, int32_t k, double p_lse,
                          const float *q_logits, int32_t n_vocab, double q_lse, double *kl) {
    double sum = 0, p_mass = 0, q_mass = 0;
    for (int32_t i = 0; i < k; i++) {
        if (p_ids[i] < 0 || p_ids[i] >= n_vocab)
            return kiln_fail(KILN_ERR_RANGE, "KL: token id %d outside the vocabulary of %d",
                             p_ids[i], n_vocab);
        double lp = (double)p_logits[i] - p_lse, lq = (double)q_logits[p_ids[i]] - q_lse;
        double p = exp(lp);
        p_mass += p;
        q_mass += exp(lq);
        if (p > 0) sum += p * (lp - lq);
    }
    /* the tail bucket; rounding may push a mass a hair past 1 */
    double p_rest = 1.0 - p_mass, q_rest = 1.0 - q_mass;
    if (p_rest > 1e-12) sum += p_rest * (log(p_rest) - log(q_rest > 1e-300 ? q_rest : 1e-300));
    *kl = sum > 0 ? sum : 0; /* a KL is never negative; tiny negatives are rounding */
    return KILN_OK;
}
