/* sampler.c - the sampling chain (see sampler.h).
 *
 * Invariants: cand[0..n) holds the surviving candidates of the current draw
 * in no particular order; candidates are totally ordered by (logit
 * descending, id ascending), so selection results do not depend on pivot
 * choices. hist is a ring of the last hist_n accepted tokens (hist_n <=
 * repeat_last_n). stamp[id] == stamp_gen marks a token already penalized in
 * this draw.
 */
#include "text/sampler.h"
#include "base/status.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cand {
    int32_t id;
    float logit;
    float p;
};

struct sampler {
    int32_t n_vocab;
    struct sampler_params par;
    float *work;
    struct cand *cand;
    uint32_t *stamp;
    uint32_t stamp_gen;
    int32_t *hist;
    int32_t hist_n, hist_pos;
    uint64_t rng;
};

static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double next_unit(uint64_t *s) {
    return (double)(next_u64(s) >> 11) * 0x1.0p-53;
}

sampler *sampler_create(int32_t n_vocab, const struct sampler_params *p, kiln_status *st) {
    kiln_status s = KILN_OK;
    sampler *sm = NULL;
    if (n_vocab <= 0 || !(p->repeat_penalty > 0) || p->repeat_last_n < 0 || isnan(p->temp) ||
        isnan(p->top_p) || isnan(p->min_p)) {
        s = kiln_fail(KILN_ERR_INVALID_ARG,
                      "sampler: bad parameters (n_vocab %d, repeat_penalty %g, repeat_last_n %d)",
                      n_vocab, p->repeat_penalty, p->repeat_last_n);
        goto fail;
    }
    sm = calloc(1, sizeof *sm);
    if (!sm) goto nomem;
    sm->n_vocab = n_vocab;
    sm->par = *p;
    sm->work = malloc((size_t)n_vocab * sizeof *sm->work);
    sm->cand = malloc((size_t)n_vocab * sizeof *sm->cand);
    sm->stamp = calloc((size_t)n_vocab, sizeof *sm->stamp);
    sm->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *sm->hist);
    if (!sm->work || !sm->cand || !sm->stamp || !sm->hist) goto nomem;
    sampler_reset(sm);
    if (st) *st = KILN_OK;
    return sm;
nomem:
    s = kiln_fail(KILN_ERR_NOMEM, "sampler: out of memory for %d candidates", n_vocab);
fail:
    sampler_free(sm);
    if (st) *st = s;
    return NULL;
}

void sampler_free(sampler *s) {
    if (!s) return;
    free(s->work);
    free(s->cand);
    free(s->stamp);
    free(s->hist);
    free(s);
}

void sampler_reset(sampler *s) {
    s->hist_n = s->hist_pos = 0;
    s->rng = s->par.seed;
}

void sampler_accept(sampler *s, int32_t id) {
    int32_t cap = s->par.repeat_last_n;
    if (cap <= 0 || id < 0 || id >= s->n_vocab) return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->hist_n < cap) s->hist_n++;
}

int32_t sampler_argmax(const float *x, int32_t n) {
    /* the maximum over 16 independent lanes (vectorizable), then its first index */
    float lane[16], max = x[0];
    int32_t i = 0;
    if (n >= 16) {
        memcpy(lane, x, sizeof lane);
        for (i = 16; i + 16 <= n; i += 16)
            for (int j = 0; j < 16; j++) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
        for (int j = 0; j < 16; j++) max = lane[j] > max ? lane[j] : max;
    }
    for (; i < n; i++) max = x[i] > max ? x[i] : max;
    for (i = 0; i < n; i++)
        if (x[i] == max) return i;
    return 0; /* all NaN */
}

static void apply_penalty(sampler *s) {
    float pen = s->par.repeat_penalty;
    if (pen == 1.0f || s->hist_n == 0) return;
    if (++s->stamp_gen == 0) { /* wrapped: clear the marks */
        memset(s->stamp, 0, (size_t)s->n_vocab * sizeof *s->stamp);
        s->stamp_gen = 1;
    }
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t id = s->hist[i];
        if (s->stamp[id] == s->stamp_gen) continue;
        s->stamp[id] = s->stamp_gen;
        s->work[id] = s->work[id] > 0 ? s->work[id] / pen : s->work[id] * pen;
    }
}

/* a ranks before b: larger logit, then smaller id. */
static int ranks_before(const struct cand *a, const struct cand *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static void swap(struct cand *a, struct cand *b) {
    struct cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi) (hi - lo >= 2) around a median-of-three pivot; returns
 * the pivot's final index m: c[lo..m) rank before it, c(m..hi) after. */
static int32_t partition(struct cand *c, int32_t lo, int32_t hi) {
    int32_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (ranks_before(&c[mid], &c[lo])) swap(&c[mid], &c[lo]);
    if (ranks_before(&c[last], &c[lo])) swap(&c[last], &c[lo]);
    if (ranks_before(&c[mid], &c[last])) swap(&c[mid], &c[last]); /* pivot = median, at last */
    int32_t m = lo;
    for (int32_t i = lo; i < last; i++)
        if (ranks_before(&c[i], &c[last])) swap(&c[i], &c[m++]);
    swap(&c[m], &c[last]);
    return m;
}

/* Moves the k best candidates of c[0..n) to c[0..k) (0 < k < n). */
static void select_top_k(struct cand *c, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n;
    while (hi - lo > 1) {
        int32_t m = partition(c, lo, hi);
        if (m == k || m + 1 == k) return;
        if (m > k)
            hi = m;
        else
            lo = m + 1;
    }
}

/* Moves the smallest best-first set of c[0..n) whose probability mass
 * reaches top_p to the front; returns its size (>= 1). */
static int32_t select_top_p(struct cand *c, int32_t n, double top_p) {
    int32_t lo = 0, hi = n;
    double acc = 0; /* mass of c[0..lo), all of which is kept; acc < top_p */
    while (hi - lo > 1) {
        int32_t m = partition(c, lo, hi);
        double before = 0;
        for (int32_t i = lo; i < m; i++) before += c[i].p;
        if (acc + before >= top_p) {
            hi = m;
            continue;
        }
        acc += before + c[m].p;
        if (acc >= top_p) return m + 1;
        lo = m + 1;
    }
    return hi > lo ? lo + 1 : (lo > 0 ? lo : 1);
}

/* Sets p to the softmax of logit / temp over c[0..n); returns the sum before normalizing. */
static double softmax(struct cand *c, int32_t n, float temp) {
    float max = c[0].logit;
    for (int32_t i = 1; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        c[i].p = expf((c[i].logit - max) / temp);
        sum += c[i].p;
    }
    for (int32_t i = 0; i < n; i++) c[i].p = (float)(c[i].p / sum);
    return sum;
}

static int32_t apply_min_p(struct cand *c, int32_t n, float min_p) {
    float pmax = 0;
    for (int32_t i = 0; i < n; i++)
        if (c[i].p > pmax) pmax = c[i].p;
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (c[i].p >= min_p * pmax) c[k++] = c[i];
    return k > 0 ? k : 1;
}

int32_t sampler_sample(sampler *s, const float *logits) {
    const struct sampler_params *p = &s->par;
    int32_t n = s->n_vocab;
    if (!(p->temp > 0) && (p->repeat_penalty == 1.0f || s->hist_n == 0))
        return sampler_argmax(logits, n); /* plain greedy: no copy */
    memcpy(s->work, logits, (size_t)n * sizeof *s->work);
    apply_penalty(s);
    if (!(p->temp > 0)) return sampler_argmax(s->work, n);

    struct cand *c = s->cand;
    for (int32_t i = 0; i < n; i++) c[i] = (struct cand){i, s->work[i], 0};
    if (p->top_k > 0 && p->top_k < n) {
        select_top_k(c, n, p->top_k);
        n = p->top_k;
    }
    if (p->top_p < 1.0f || p->min_p > 0) softmax(c, n, 1.0f);
    if (p->top_p < 1.0f) n = select_top_p(c, n, p->top_p);
    if (p->min_p > 0) n = apply_min_p(c, n, p->min_p);
    softmax(c, n, p->temp);

    double u = next_unit(&s->rng), acc = 0;
    for (int32_t i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) return c[i].id;
    }
    return c[n - 1].id;
}
