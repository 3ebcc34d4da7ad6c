/* sampler.c - the sampling chain (see sampler.h).
 *
 * Invariants: cand[0..n) holds the surviving candidates of the current draw
 * in no particular order; candidates are totally ordered by (logit
 * descending, id ascending), so selection results do not depend on pivot
 * choices. hist is a ring of the last hist_n accepted tokens (hist_n <=
 * repeat_last_n). counts is an open-addressing hash map (linear probing,
 * map_cap a power of two >= 2 * repeat_last_n, so it is never full) from a
 * token to its occurrences in hist, rebuilt at each draw that penalizes.
 * bias holds the logit bias entries in the order given (a token listed twice
 * gets both biases).
 *
 * A stop_matcher's held[0..n_held) is a proper prefix of at least one stop
 * string (so n_held < max_len) and never contains a complete one.
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

struct count_slot {
    int32_t id; /* -1: empty */
    int32_t count;
};

struct sampler {
    int32_t n_vocab;
    struct sampler_params par;
    float *work;
    struct cand *cand;
    struct count_slot *counts;
    uint32_t map_cap;
    int32_t *hist;
    int32_t hist_n, hist_pos;
    kiln_logit_bias *bias;
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
    if (n_vocab <= 0 || !(p->repeat_penalty > 0) || p->repeat_last_n < 0 ||
        p->repeat_last_n > (1 << 24) || isnan(p->temp) || isnan(p->top_p) || isnan(p->min_p) ||
        !isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty) || p->n_logit_bias < 0 ||
        (p->n_logit_bias > 0 && !p->logit_bias)) {
        s = kiln_fail(KILN_ERR_INVALID_ARG,
                      "sampler: bad parameters (n_vocab %d, repeat_penalty %g, repeat_last_n %d, "
                      "presence_penalty %g, frequency_penalty %g, %d logit biases)",
                      n_vocab, p->repeat_penalty, p->repeat_last_n, p->presence_penalty,
                      p->frequency_penalty, p->n_logit_bias);
        goto fail;
    }
    for (int32_t i = 0; i < p->n_logit_bias; i++) {
        const kiln_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab || isnan(b->bias) || b->bias == INFINITY) {
            s = kiln_fail(KILN_ERR_INVALID_ARG,
                          "sampler: logit bias %g for token %d: the token must be in the "
                          "vocabulary of %d and the bias a number or -inf",
                          b->bias, b->token, n_vocab);
            goto fail;
        }
    }
    if (p->n_logit_bias >= n_vocab) {
        /* Banning every token would leave only banned ones to sample. */
        unsigned char *banned = calloc((size_t)n_vocab, 1);
        if (!banned) goto nomem;
        int32_t n_banned = 0;
        for (int32_t i = 0; i < p->n_logit_bias; i++) {
            const kiln_logit_bias *b = &p->logit_bias[i];
            if (b->bias == -INFINITY && !banned[b->token]) banned[b->token] = 1, n_banned++;
        }
        free(banned);
        if (n_banned == n_vocab) {
            s = kiln_fail(KILN_ERR_INVALID_ARG,
                          "logit_bias bans every token of the vocabulary (%d): no token can be "
                          "sampled",
                          n_vocab);
            goto fail;
        }
    }
    sm = calloc(1, sizeof *sm);
    if (!sm) goto nomem;
    sm->n_vocab = n_vocab;
    sm->par = *p;
    sm->map_cap = 4;
    while (sm->map_cap < 2u * (uint32_t)p->repeat_last_n) sm->map_cap *= 2;
    sm->work = malloc((size_t)n_vocab * sizeof *sm->work);
    sm->cand = malloc((size_t)n_vocab * sizeof *sm->cand);
    sm->counts = malloc(sm->map_cap * sizeof *sm->counts);
    sm->hist = malloc((size_t)(p->repeat_last_n > 0 ? p->repeat_last_n : 1) * sizeof *sm->hist);
    sm->bias = malloc((size_t)(p->n_logit_bias > 0 ? p->n_logit_bias : 1) * sizeof *sm->bias);
    if (!sm->work || !sm->cand || !sm->counts || !sm->hist || !sm->bias) goto nomem;
    if (p->n_logit_bias > 0)
        memcpy(sm->bias, p->logit_bias, (size_t)p->n_logit_bias * sizeof *sm->bias);
    sm->par.logit_bias = sm->bias;
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
    free(s->counts);
    free(s->hist);
    free(s->bias);
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

static bool has_penalty(const struct sampler_params *p) {
    return p->repeat_penalty != 1.0f || p->presence_penalty != 0 || p->frequency_penalty != 0;
}

/* Counts the window's tokens into the hash map. */
static void count_window(sampler *s) {
    uint32_t mask = s->map_cap - 1;
    for (uint32_t i = 0; i < s->map_cap; i++) s->counts[i].id = -1;
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t id = s->hist[i];
        uint32_t h = ((uint32_t)id * 2654435761u) & mask;
        while (s->counts[h].id != -1 && s->counts[h].id != id) h = (h + 1) & mask;
        if (s->counts[h].id == -1) s->counts[h] = (struct count_slot){id, 0};
        s->counts[h].count++;
    }
}

/* Applies the penalties to work[] for each distinct token of the window. */
static void apply_penalties(sampler *s) {
    const struct sampler_params *p = &s->par;
    if (!has_penalty(p) || s->hist_n == 0) return;
    count_window(s);
    for (uint32_t i = 0; i < s->map_cap; i++) {
        if (s->counts[i].id < 0) continue;
        float *l = &s->work[s->counts[i].id];
        if (p->repeat_penalty != 1.0f)
            *l = *l > 0 ? *l / p->repeat_penalty : *l * p->repeat_penalty;
        *l -= p->presence_penalty + p->frequency_penalty * (float)s->counts[i].count;
    }
}

static void apply_bias(sampler *s) {
    for (int32_t i = 0; i < s->par.n_logit_bias; i++) s->work[s->bias[i].token] += s->bias[i].bias;
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

/* Keeps the candidates whose probability is at least min_p times the best's.
 * That ratio is exp(logit - max logit), so it is decided on the logits,
 * without exponentials or normalizing. */
static int32_t apply_min_p(struct cand *c, int32_t n, float min_p) {
    float lmax = c[0].logit;
    for (int32_t i = 1; i < n; i++)
        if (c[i].logit > lmax) lmax = c[i].logit;
    float thr = lmax + logf(min_p);
    int32_t k = 0;
    for (int32_t i = 0; i < n; i++)
        if (c[i].logit >= thr) c[k++] = c[i];
    return k > 0 ? k : 1;
}

/* Restores the min-heap (worst candidate at the root) below slot i. */
static void heap_down(struct cand *h, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && ranks_before(&h[m], &h[l])) m = l;
        if (r < n && ranks_before(&h[m], &h[r])) m = r;
        if (m == i) return;
        swap(&h[i], &h[m]);
        i = m;
    }
}

/* The k best of x[0..n) into c[0..k) (unordered), in one pass that keeps
 * them in a min-heap: for small k almost every element is rejected by one
 * comparison with the heap's worst. Ids ascend, so a tie never displaces. */
static void heap_top_k(const float *x, int32_t n, int32_t k, struct cand *c) {
    for (int32_t i = 0; i < k; i++) c[i] = (struct cand){i, x[i], 0};
    for (int32_t i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    float worst = c[0].logit;
    for (int32_t i = k; i < n; i++) {
        if (!(x[i] > worst)) continue;
        c[0] = (struct cand){i, x[i], 0};
        heap_down(c, k, 0);
        worst = c[0].logit;
    }
}

int32_t sampler_sample(sampler *s, const float *logits) {
    const struct sampler_params *p = &s->par;
    int32_t n = s->n_vocab;
    if (!(p->temp > 0) && (!has_penalty(p) || s->hist_n == 0) && p->n_logit_bias == 0)
        return sampler_argmax(logits, n); /* plain greedy: no copy */
    memcpy(s->work, logits, (size_t)n * sizeof *s->work);
    apply_bias(s);
    apply_penalties(s);
    if (!(p->temp > 0)) return sampler_argmax(s->work, n);

    struct cand *c = s->cand;
    if (p->top_k > 0 && p->top_k <= 256 && p->top_k < n) {
        heap_top_k(s->work, n, p->top_k, c);
        n = p->top_k;
    } else {
        for (int32_t i = 0; i < n; i++) c[i] = (struct cand){i, s->work[i], 0};
        if (p->top_k > 0 && p->top_k < n) {
            select_top_k(c, n, p->top_k);
            n = p->top_k;
        }
    }
    if (p->top_p < 1.0f) {
        softmax(c, n, 1.0f);
        n = select_top_p(c, n, p->top_p);
    }
    if (p->min_p > 0) n = apply_min_p(c, n, p->min_p);
    softmax(c, n, p->temp);

    double u = next_unit(&s->rng), acc = 0;
    int32_t last = 0; /* rounding can leave u above the total: take the last possible one */
    for (int32_t i = 0; i < n; i++) {
        acc += c[i].p;
        if (u < acc) return c[i].id;
        if (c[i].p > 0) last = i;
    }
    return c[last].id;
}

/* ---- stop strings ---- */

struct stop_matcher {
    char **str;
    size_t *len;
    int32_t n;
    size_t max_len;
    char *held;
    size_t n_held;
    bool done;
};

stop_matcher *stop_create(const char *const *strs, int32_t n, kiln_status *st) {
    stop_matcher *m = calloc(1, sizeof *m);
    if (!m) goto nomem;
    if (n > 0) {
        m->str = calloc((size_t)n, sizeof *m->str);
        m->len = calloc((size_t)n, sizeof *m->len);
        if (!m->str || !m->len) goto nomem;
    }
    for (int32_t i = 0; i < n; i++) {
        size_t l = strs[i] ? strlen(strs[i]) : 0;
        if (l == 0) continue;
        if (!(m->str[m->n] = malloc(l))) goto nomem;
        memcpy(m->str[m->n], strs[i], l);
        m->len[m->n++] = l;
        if (l > m->max_len) m->max_len = l;
    }
    if (!(m->held = malloc(m->max_len + 1))) goto nomem;
    if (st) *st = KILN_OK;
    return m;
nomem:
    stop_free(m);
    kiln_status s = kiln_fail(KILN_ERR_NOMEM, "stop strings: out of memory");
    if (st) *st = s;
    return NULL;
}

void stop_free(stop_matcher *m) {
    if (!m) return;
    for (int32_t i = 0; i < m->n; i++) free(m->str[i]);
    free(m->str);
    free(m->len);
    free(m->held);
    free(m);
}

void stop_reset(stop_matcher *m) {
    m->n_held = 0;
    m->done = false;
}

size_t stop_max_len(const stop_matcher *m) {
    return m->max_len;
}

/* 1 when text[0..n) is a prefix of some stop string (n < its length). */
static bool is_stop_prefix(const stop_matcher *m, const char *text, size_t n) {
    for (int32_t i = 0; i < m->n; i++)
        if (n < m->len[i] && !memcmp(text, m->str[i], n)) return true;
    return false;
}

size_t stop_feed(stop_matcher *m, const char *in, size_t len, char *out, bool *hit) {
    *hit = m->done;
    if (m->done) return 0;
    /* the candidate text is held + in, assembled in out */
    memcpy(out, m->held, m->n_held);
    if (len) memcpy(out + m->n_held, in, len);
    size_t n = m->n_held + len, first = n;
    m->n_held = 0;
    for (int32_t i = 0; i < m->n; i++) { /* the earliest complete match wins */
        size_t l = m->len[i];
        for (size_t p = 0; p + l <= n && p < first; p++)
            if (out[p] == m->str[i][0] && !memcmp(out + p, m->str[i], l)) {
                first = p;
                break;
            }
    }
    if (first < n) {
        m->done = *hit = true;
        return first;
    }
    /* hold back the longest tail that could still grow into a stop string */
    size_t keep = m->max_len > 0 ? m->max_len - 1 : 0;
    for (size_t start = n > keep ? n - keep : 0; start < n; start++)
        if (is_stop_prefix(m, out + start, n - start)) {
            m->n_held = n - start;
            memcpy(m->held, out + start, m->n_held);
            return start;
        }
    return n;
}

size_t stop_flush(stop_matcher *m, char *out) {
    size_t n = m->done ? 0 : m->n_held;
    memcpy(out, m->held, n);
    m->n_held = 0;
    return n;
}
