/* shim_registry.c - TEMPORARY stand-ins for kiln_registry_* and
 * kiln_embed_batcher_* (helper "batcher" owns the real ones in
 * src/engine/), so the server can be tested before they land. Delete this
 * file when they are merged. No LRU, no budget; the batcher runs one
 * request per kiln_embed call (texts only). Uses only kiln.h. */
#include "kiln.h"
#include "base/status.h"
#include "base/time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- batcher */

typedef struct bjob {
    struct bjob *next;
    char **texts;
    size_t *lens;
    int32_t n, dim;
    kiln_embed_fn fn;
    void *user;
    double t_submit;
} bjob;

struct kiln_embed_batcher {
    kiln_embed_ctx *e;
    const kiln_model *m;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bjob *head, *tail;
    int32_t queued;
    uint64_t batches;
    int stop;
};

kiln_batcher_params kiln_batcher_default_params(void) {
    kiln_batcher_params p = {0};
    p.embed = kiln_embed_default_params();
    return p;
}

static void bjob_free(bjob *j) {
    for (int32_t i = 0; i < j->n; i++) free(j->texts[i]);
    free(j->texts);
    free(j->lens);
    free(j);
}

static void *bengine(void *arg) {
    kiln_embed_batcher *b = arg;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop) pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head) break;
        bjob *j = b->head;
        b->head = j->next;
        if (!b->head) b->tail = NULL;
        b->queued -= j->n;
        pthread_mutex_unlock(&b->mu);
        kiln_embed_result r = {0};
        kiln_embeddings *emb = NULL;
        kiln_embed_stats st = {0};
        r.t_queue = kiln_now_s() - j->t_submit;
        r.status = kiln_embed(b->e, (const char *const *)j->texts, j->lens, j->n, &emb, &st);
        if (r.status) r.error = kiln_last_error();
        if (emb && j->dim > 0 && j->dim < emb->dim) {
            /* Matryoshka: keep dim, renormalise (rows are contiguous) */
            for (int64_t i = 0; i < emb->n_rows; i++) {
                float *src = emb->data + i * emb->dim, *dst = emb->data + i * j->dim;
                double ss = 0;
                for (int32_t k = 0; k < j->dim; k++) ss += (double)src[k] * src[k];
                float inv = ss > 0 ? (float)(1.0 / __builtin_sqrt(ss)) : 0;
                for (int32_t k = 0; k < j->dim; k++) dst[k] = src[k] * inv;
            }
            emb->dim = j->dim;
        }
        r.emb = emb;
        r.n_tokens = st.n_tokens;
        r.t_tokenize = st.t_tokenize;
        r.t_inference = st.t_forward + st.t_pool;
        r.batch_texts = j->n;
        j->fn(j->user, &r);
        kiln_embeddings_free(emb);
        bjob_free(j);
        pthread_mutex_lock(&b->mu);
        b->batches++;
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

kiln_embed_batcher *kiln_embed_batcher_create(const kiln_model *m, const kiln_batcher_params *p,
                                              kiln_status *st) {
    kiln_embed_batcher *b = calloc(1, sizeof *b);
    b->m = m;
    if (!(b->e = kiln_embed_ctx_create(m, &p->embed, st))) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    pthread_create(&b->th, NULL, bengine, b);
    return b;
}

void kiln_embed_batcher_destroy(kiln_embed_batcher *b) {
    if (!b) return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->th, NULL);
    kiln_embed_ctx_free(b->e);
    free(b);
}

kiln_status kiln_embed_batcher_submit(kiln_embed_batcher *b, const kiln_embed_input *in, int32_t n,
                                      int32_t dim, int normalize, int truncate, kiln_embed_fn fn,
                                      void *user) {
    if (n <= 0) return kiln_fail(KILN_ERR_INVALID_ARG, "no inputs");
    if (dim > kiln_embed_dim(b->e))
        return kiln_fail(KILN_ERR_RANGE, "dimensions %d is larger than the model's %d", dim,
                         kiln_embed_dim(b->e));
    bjob *j = calloc(1, sizeof *j);
    j->texts = calloc((size_t)n, sizeof *j->texts);
    j->lens = calloc((size_t)n, sizeof *j->lens);
    j->n = n;
    j->dim = dim;
    for (int32_t i = 0; i < n; i++) {
        if (!in[i].text) {
            /* ids: detokenize (approximation, good enough for the shim) */
            char buf[4096];
            size_t at = 0;
            for (int32_t k = 0; k < in[i].n_ids && at < sizeof buf - 64; k++)
                at += kiln_token_to_piece(b->m, in[i].ids[k], 0, buf + at, sizeof buf - 64 - at);
            j->texts[i] = malloc(at + 1);
            memcpy(j->texts[i], buf, at);
            j->texts[i][at] = 0;
            j->lens[i] = at;
        } else {
            j->texts[i] = malloc(in[i].len + 1);
            memcpy(j->texts[i], in[i].text, in[i].len);
            j->texts[i][in[i].len] = 0;
            j->lens[i] = in[i].len;
        }
    }
    j->fn = fn;
    j->user = user;
    j->t_submit = kiln_now_s();
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = j;
    else
        b->head = j;
    b->tail = j;
    b->queued += n;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    (void)normalize;
    (void)truncate;
    return KILN_OK;
}

int32_t kiln_embed_batcher_dim(const kiln_embed_batcher *b) {
    return kiln_embed_dim(b->e);
}

void kiln_embed_batcher_get_state(kiln_embed_batcher *b, kiln_batcher_state *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&b->mu);
    out->queued = b->queued;
    out->n_batches = b->batches;
    pthread_mutex_unlock(&b->mu);
}

/* ---- registry */

typedef struct rentry {
    char *name, *path;
    int pin, loaded, is_encoder, holders;
    kiln_model *m;
    kiln_served served;
    double last_used;
} rentry;

struct kiln_registry {
    kiln_registry_params p;
    pthread_mutex_t mu;
    rentry e[64];
    int n;
};

kiln_registry_params kiln_registry_default_params(void) {
    kiln_registry_params p = {0};
    p.sched = kiln_sched_default_params();
    p.batcher = kiln_batcher_default_params();
    return p;
}

kiln_registry *kiln_registry_create(const kiln_registry_params *p, kiln_status *st) {
    kiln_registry *r = calloc(1, sizeof *r);
    r->p = *p;
    pthread_mutex_init(&r->mu, NULL);
    if (st) *st = KILN_OK;
    return r;
}

void kiln_registry_destroy(kiln_registry *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        kiln_sched_destroy(r->e[i].served.sched);
        kiln_embed_batcher_destroy(r->e[i].served.embed);
        kiln_model_free(r->e[i].m);
        free(r->e[i].name);
        free(r->e[i].path);
    }
    free(r);
}

kiln_status kiln_registry_add(kiln_registry *r, const char *name, const char *path, int pin) {
    FILE *f = fopen(path, "rb");
    if (!f) return kiln_fail(KILN_ERR_IO, "%s: cannot open", path);
    fclose(f);
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->e[i].name, name))
            return kiln_fail(KILN_ERR_INVALID_ARG, "duplicate model name %s", name);
    r->e[r->n].name = strdup(name);
    r->e[r->n].path = strdup(path);
    r->e[r->n].pin = pin;
    r->n++;
    return KILN_OK;
}

static kiln_status load(kiln_registry *r, rentry *e) {
    kiln_status st;
    if (e->loaded) return KILN_OK;
    if (!(e->m = kiln_model_load(e->path, &st))) return st;
    const char *arch = kiln_model_arch(e->m);
    e->is_encoder = !strcmp(arch, "bert") || !strcmp(arch, "nomic-bert");
    e->served.name = e->name;
    e->served.model = e->m;
    if (e->is_encoder)
        e->served.embed = kiln_embed_batcher_create(e->m, &r->p.batcher, &st);
    else
        e->served.sched = kiln_sched_create(e->m, &r->p.sched, &st);
    if (!e->served.embed && !e->served.sched) {
        kiln_model_free(e->m);
        e->m = NULL;
        return st;
    }
    e->loaded = 1;
    return KILN_OK;
}

kiln_status kiln_registry_load_all(kiln_registry *r) {
    pthread_mutex_lock(&r->mu);
    kiln_status st = KILN_OK;
    for (int i = 0; i < r->n && !st; i++) st = load(r, &r->e[i]);
    pthread_mutex_unlock(&r->mu);
    return st;
}

kiln_status kiln_registry_acquire(kiln_registry *r, const char *name, kiln_served **out) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        if (strcmp(r->e[i].name, name)) continue;
        kiln_status st = load(r, &r->e[i]);
        if (!st) {
            r->e[i].holders++;
            r->e[i].last_used = kiln_now_s();
            *out = &r->e[i].served;
        }
        pthread_mutex_unlock(&r->mu);
        return st;
    }
    char list[1024];
    size_t at = 0;
    for (int i = 0; i < r->n && at < sizeof list; i++)
        at += (size_t)snprintf(list + at, sizeof list - at, "%s%s", i ? ", " : "", r->e[i].name);
    pthread_mutex_unlock(&r->mu);
    return kiln_fail(KILN_ERR_NOT_FOUND, "model '%s' not found; available: %s", name, list);
}

void kiln_registry_release(kiln_registry *r, kiln_served *h) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++)
        if (&r->e[i].served == h) r->e[i].holders--;
    pthread_mutex_unlock(&r->mu);
}

int32_t kiln_registry_list(kiln_registry *r, kiln_registry_entry *out, int32_t cap) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n && i < cap; i++)
        out[i] = (kiln_registry_entry){r->e[i].name,
                                       r->e[i].path,
                                       r->e[i].loaded,
                                       r->e[i].pin,
                                       0,
                                       r->e[i].is_encoder,
                                       0,
                                       r->e[i].holders,
                                       r->e[i].last_used};
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}
