/* window.c - the sample rings of window.h: a circular array of (time,
 * value) under a mutex; statistics copy the window's values out and sort
 * them. */
#include "obs/window.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct win {
    pthread_mutex_t mu;
    int32_t cap;
    uint64_t n; /* samples ever added; the newest is at (n - 1) % cap */
    double *t, *v;
};

win *win_create(int32_t cap) {
    if (cap < 1) cap = 1;
    win *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->t = malloc((size_t)cap * sizeof *w->t);
    w->v = malloc((size_t)cap * sizeof *w->v);
    if (!w->t || !w->v) {
        free(w->t);
        free(w->v);
        free(w);
        return NULL;
    }
    w->cap = cap;
    pthread_mutex_init(&w->mu, NULL);
    return w;
}

void win_destroy(win *w) {
    if (!w) return;
    pthread_mutex_destroy(&w->mu);
    free(w->t);
    free(w->v);
    free(w);
}

void win_add(win *w, double t, double v) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    int32_t i = (int32_t)(w->n % (uint64_t)w->cap);
    w->t[i] = t;
    w->v[i] = v;
    w->n++;
    pthread_mutex_unlock(&w->mu);
}

static int cmp_dbl(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double rank(const double *v, uint64_t n, double q) {
    uint64_t k = (uint64_t)(q * (double)n + 0.999999); /* ceil(q n), at least 1 */
    if (k < 1) k = 1;
    if (k > n) k = n;
    return v[k - 1];
}

void win_get(win *w, double now, double window_s, win_stats *out) {
    memset(out, 0, sizeof *out);
    if (!w) return;
    double from = now - window_s;
    pthread_mutex_lock(&w->mu);
    uint64_t held = w->n < (uint64_t)w->cap ? w->n : (uint64_t)w->cap;
    double *v = malloc((size_t)(held ? held : 1) * sizeof *v);
    uint64_t n = 0;
    double oldest = now;
    bool full = w->n > (uint64_t)w->cap;
    for (uint64_t k = 0; v && k < held; k++) {
        int32_t i = (int32_t)((w->n - 1 - k) % (uint64_t)w->cap);
        if (w->t[i] <= from || w->t[i] > now) continue;
        v[n++] = w->v[i];
        if (w->t[i] < oldest) oldest = w->t[i];
    }
    pthread_mutex_unlock(&w->mu);
    /* a full ring whose oldest sample is inside the window lost older ones */
    out->covered_s = full && n == held ? now - oldest : window_s;
    if (!v || !n) {
        free(v);
        return;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_dbl);
    out->n = n;
    for (uint64_t i = 0; i < n; i++) out->sum += v[i];
    out->mean = out->sum / (double)n;
    out->p50 = rank(v, n, 0.50);
    out->p90 = rank(v, n, 0.90);
    out->p99 = rank(v, n, 0.99);
    out->max = v[n - 1];
    free(v);
}
