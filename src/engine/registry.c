/* registry.c - kiln.h's kiln_registry: the models a server offers, by name,
 * loaded on first use (or by kiln_registry_load_all) and unloaded least
 * recently used first when loading another would pass the memory budget.
 * A decoder is served by a kiln_sched, an encoder by a kiln_embed_batcher.
 *
 * Memory of a loaded model: its file's bytes (the weights are mapped, and
 * they are what a model mostly is) plus its scheduler's KV cache and compute
 * buffers (kiln_sched_get_state) or its batcher's compute buffers. Before a
 * load the same is estimated from the file (model/memory.h, the figures
 * `kiln info` prints) and reserved while the load runs.
 *
 * Invariants (under the mutex): an entry is UNLOADED (no model), LOADING
 * (one thread loads it outside the mutex; its estimate is counted in `used`;
 * other acquirers wait on the condvar and never load it a second time) or
 * LOADED (model and its server set; its measured bytes counted in `used`).
 * Only a LOADED entry with no holders and no pin is ever unloaded; its
 * server and model are detached under the mutex and destroyed outside it.
 * Entries are never removed, so names, paths and kiln_served handles stay
 * valid while the registry lives.
 */
#include "base/log.h"
#include "base/status.h"
#include "base/time.h"
#include "engine/embed.h"
#include "kiln.h"
#include "model/arch.h"
#include "model/gguf.h"
#include "model/memory.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB(x)     ((double)(x) / (1024.0 * 1024.0))
#define ERROR_SIZE 512

enum reg_state { REG_UNLOADED, REG_LOADING, REG_LOADED };

struct reg_entry {
    kiln_served served; /* first: kiln_registry_release finds the entry from it */
    char *name, *path;
    int pin;
    int is_encoder, probed;
    uint64_t file_bytes, estimate;
    enum reg_state state;
    kiln_model *model;
    kiln_sched *sched;
    kiln_embed_batcher *embed;
    uint64_t bytes; /* measured, when loaded */
    int32_t holders;
    double last_used;
    uint64_t n_loads;                /* attempts finished (for waiters) */
    kiln_status load_status;         /* of the last attempt */
    char load_error[2 * ERROR_SIZE]; /* its message */
};

struct kiln_registry {
    kiln_registry_params p;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a load finished */
    struct reg_entry **e;
    int32_t n, cap;
    uint64_t used; /* bytes of loaded models plus the estimates of those loading */
};

/* What an unload detached, to be destroyed outside the mutex. */
struct victim {
    kiln_model *model;
    kiln_sched *sched;
    kiln_embed_batcher *embed;
};

kiln_registry_params kiln_registry_default_params(void) {
    kiln_registry_params p;
    memset(&p, 0, sizeof p);
    p.sched = kiln_sched_default_params();
    p.batcher = kiln_batcher_default_params();
    return p;
}

kiln_registry *kiln_registry_create(const kiln_registry_params *p, kiln_status *st) {
    kiln_status s = KILN_OK;
    kiln_registry *r = calloc(1, sizeof *r);
    int mu_ok = 0;
    if (!r) {
        s = kiln_fail(KILN_ERR_NOMEM, "registry: out of memory");
        goto fail;
    }
    r->p = p ? *p : kiln_registry_default_params();
    if (pthread_mutex_init(&r->mu, NULL)) {
        s = kiln_fail(KILN_ERR_NOMEM, "registry: cannot create a mutex");
        goto fail;
    }
    mu_ok = 1;
    if (pthread_cond_init(&r->cv, NULL)) {
        s = kiln_fail(KILN_ERR_NOMEM, "registry: cannot create a condition variable");
        goto fail;
    }
    if (st) *st = KILN_OK;
    return r;
fail:
    if (r && mu_ok) pthread_mutex_destroy(&r->mu);
    free(r);
    if (st) *st = s;
    return NULL;
}

static void victim_destroy(struct victim *v) {
    kiln_sched_destroy(v->sched);
    kiln_embed_batcher_destroy(v->embed);
    kiln_model_free(v->model);
}

/* Detaches a loaded entry's server and model into *v; under the mutex. */
static void detach(kiln_registry *r, struct reg_entry *e, struct victim *v) {
    v->model = e->model;
    v->sched = e->sched;
    v->embed = e->embed;
    r->used -= e->bytes;
    e->model = NULL;
    e->sched = NULL;
    e->embed = NULL;
    e->served.model = NULL;
    e->served.sched = NULL;
    e->served.embed = NULL;
    e->bytes = 0;
    e->state = REG_UNLOADED;
}

void kiln_registry_destroy(kiln_registry *r) {
    if (!r) return;
    for (int32_t i = 0; i < r->n; i++) {
        struct reg_entry *e = r->e[i];
        KILN_ASSERT(e->holders == 0 && e->state != REG_LOADING);
        if (e->state == REG_LOADED) {
            struct victim v;
            detach(r, e, &v);
            victim_destroy(&v);
        }
        free(e->name);
        free(e->path);
        free(e);
    }
    free(r->e);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* The memory estimate of f's model served with r's parameters: file bytes
 * plus the KV cache and compute buffers; *is_encoder from its architecture.
 * When the hyperparameters cannot be read, the file size alone (the load
 * will report what is wrong). */
static uint64_t estimate_bytes(const kiln_registry *r, const gguf_file *f, int *is_encoder,
                               int *probed) {
    uint64_t file = gguf_file_size(f);
    struct arch_hparams hp;
    *probed = 0;
    if (arch_hparams_load(f, &hp)) return file;
    *probed = 1;
    *is_encoder = !(hp.arch->flags & ARCH_F_CAUSAL);
    struct mem_params mp;
    struct mem_estimate est;
    uint64_t cap = 0;
    if (*is_encoder) {
        const kiln_embed_params *ep = &r->p.batcher.embed;
        mp = (struct mem_params){hp.n_ctx_train, 1,
                                 ep->batch_tokens > 0 ? (uint32_t)ep->batch_tokens : 2048,
                                 KILN_TYPE_F16};
        cap = ep->mem_budget ? ep->mem_budget : 512ull << 20; /* the batch shrinks to fit it */
    } else {
        const kiln_sched_params *sp = &r->p.sched;
        uint32_t n_ctx = sp->n_ctx > 0           ? (uint32_t)sp->n_ctx
                         : hp.n_ctx_train < 4096 ? hp.n_ctx_train
                                                 : 4096;
        mp = (struct mem_params){n_ctx, sp->n_slots > 0 ? (uint32_t)sp->n_slots : 4,
                                 sp->n_batch > 0 ? (uint32_t)sp->n_batch : 512, sp->type_k};
    }
    if (mem_estimate(&hp, 0, &mp, &est)) return file;
    uint64_t compute = cap && est.compute > cap ? cap : est.compute;
    return file + est.kv_cache + compute;
}

kiln_status kiln_registry_add(kiln_registry *r, const char *name, const char *path, int pin) {
    kiln_status s = KILN_OK;
    struct reg_entry *e = NULL;
    gguf_file *f = NULL;
    if (!name || !*name || !path || !*path)
        return kiln_fail(KILN_ERR_INVALID_ARG, "registry: a model needs a name and a path");
    if (!(f = gguf_open(path, &s))) {
        char why[ERROR_SIZE];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        return kiln_fail(s, "registry: model '%s': %s", name, why);
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->name = strdup(name)) || !(e->path = strdup(path))) {
        s = kiln_fail(KILN_ERR_NOMEM, "registry: out of memory adding '%s'", name);
        goto fail;
    }
    e->pin = pin;
    e->file_bytes = gguf_file_size(f);
    e->estimate = estimate_bytes(r, f, &e->is_encoder, &e->probed);
    e->served.name = e->name;
    gguf_close(f);
    f = NULL;
    pthread_mutex_lock(&r->mu);
    for (int32_t i = 0; i < r->n; i++)
        if (!strcmp(r->e[i]->name, name)) {
            pthread_mutex_unlock(&r->mu);
            s = kiln_fail(KILN_ERR_INVALID_ARG, "registry: a model named '%s' is already added",
                          name);
            goto fail;
        }
    if (r->n == r->cap) {
        int32_t cap = r->cap ? r->cap * 2 : 8;
        struct reg_entry **p = realloc(r->e, (size_t)cap * sizeof *p);
        if (!p) {
            pthread_mutex_unlock(&r->mu);
            s = kiln_fail(KILN_ERR_NOMEM, "registry: out of memory adding '%s'", name);
            goto fail;
        }
        r->e = p, r->cap = cap;
    }
    r->e[r->n++] = e;
    pthread_mutex_unlock(&r->mu);
    KILN_LOGD("registry: added '%s' (%s, %s, %.1f MiB estimated)", name, path,
              !e->probed      ? "unknown kind"
              : e->is_encoder ? "encoder"
                              : "decoder",
              MIB(e->estimate));
    return KILN_OK;
fail:
    gguf_close(f);
    if (e) {
        free(e->name);
        free(e->path);
        free(e);
    }
    return s;
}

/* The entry named name, or NULL; under the mutex. */
static struct reg_entry *find(kiln_registry *r, const char *name) {
    for (int32_t i = 0; i < r->n; i++)
        if (!strcmp(r->e[i]->name, name)) return r->e[i];
    return NULL;
}

/* KILN_ERR_NOT_FOUND naming name and listing the models; under the mutex. */
static kiln_status not_found(kiln_registry *r, const char *name) {
    char list[ERROR_SIZE];
    size_t o = 0;
    list[0] = 0;
    for (int32_t i = 0; i < r->n && o < sizeof list; i++) {
        int k = snprintf(list + o, sizeof list - o, "%s'%s'", i ? ", " : "", r->e[i]->name);
        if (k < 0) break;
        o += (size_t)k;
    }
    return kiln_fail(KILN_ERR_NOT_FOUND, "registry: no model named '%s'; available: %s", name,
                     r->n ? list : "none");
}

/* Makes room for need bytes by unloading least recently used, unpinned,
 * unheld models into victims (at most r->n); under the mutex. evict 0: no
 * unloading, only the check. KILN_ERR_NOMEM, naming the numbers, when it
 * cannot fit. */
static kiln_status make_room(kiln_registry *r, struct reg_entry *want, uint64_t need, int evict,
                             struct victim *victims, int32_t *n_victims) {
    uint64_t budget = r->p.mem_budget;
    *n_victims = 0;
    if (!budget) return KILN_OK;
    if (need > budget)
        return kiln_fail(KILN_ERR_NOMEM,
                         "registry: model '%s' needs about %.1f MiB, more than the memory budget "
                         "of %.1f MiB even alone",
                         want->name, MIB(need), MIB(budget));
    uint64_t freeable = 0;
    for (int32_t i = 0; i < r->n; i++) {
        struct reg_entry *e = r->e[i];
        if (e->state == REG_LOADED && !e->pin && !e->holders) freeable += e->bytes;
    }
    if (r->used + need > budget && (!evict || r->used - freeable + need > budget))
        return kiln_fail(KILN_ERR_NOMEM,
                         "registry: model '%s' needs about %.1f MiB; the memory budget is %.1f MiB "
                         "and %.1f MiB are in use by models that are %s",
                         want->name, MIB(need), MIB(budget), MIB(r->used - (evict ? freeable : 0)),
                         evict ? "held by requests, pinned or loading" : "loaded");
    while (r->used + need > budget) {
        struct reg_entry *lru = NULL;
        for (int32_t i = 0; i < r->n; i++) {
            struct reg_entry *e = r->e[i];
            if (e->state != REG_LOADED || e->pin || e->holders) continue;
            if (!lru || e->last_used < lru->last_used) lru = e;
        }
        KILN_ASSERT(lru); /* freeable covered the difference */
        KILN_LOGI("registry: unloading '%s' (%.1f MiB, least recently used) to fit '%s'", lru->name,
                  MIB(lru->bytes), want->name);
        detach(r, lru, &victims[(*n_victims)++]);
    }
    return KILN_OK;
}

/* Loads e's model and server; outside the mutex. */
static kiln_status load_model(const kiln_registry *r, struct reg_entry *e, struct victim *out,
                              uint64_t *bytes, int *is_encoder) {
    kiln_status s = KILN_OK;
    memset(out, 0, sizeof *out);
    if (!(out->model = kiln_model_load(e->path, &s))) return s;
    *is_encoder = engine_model_bert(out->model) != NULL;
    if (*is_encoder) {
        out->embed = kiln_embed_batcher_create(out->model, &r->p.batcher, &s);
        if (out->embed) {
            kiln_batcher_state bs;
            kiln_embed_batcher_get_state(out->embed, &bs);
            *bytes = e->file_bytes + bs.compute_bytes;
        }
    } else {
        out->sched = kiln_sched_create(out->model, &r->p.sched, &s);
        if (out->sched) {
            kiln_sched_state ss;
            kiln_sched_get_state(out->sched, &ss);
            *bytes = e->file_bytes + ss.kv_bytes + ss.compute_bytes;
            if (r->p.decoder_embeddings) { /* embeddings from the same weights */
                out->embed = kiln_embed_batcher_create(out->model, &r->p.batcher, &s);
                if (out->embed) {
                    kiln_batcher_state bs;
                    kiln_embed_batcher_get_state(out->embed, &bs);
                    *bytes += bs.compute_bytes;
                } else {
                    kiln_sched_destroy(out->sched);
                    out->sched = NULL;
                }
            }
        }
    }
    if (s) {
        char why[ERROR_SIZE];
        snprintf(why, sizeof why, "%s", kiln_last_error());
        kiln_model_free(out->model);
        out->model = NULL;
        return kiln_fail(s, "%s", why);
    }
    return KILN_OK;
}

/* Brings e to LOADED (loading it, or waiting for the load in progress) and,
 * with hold, holds it. Called and returns with the mutex held; unlocks it
 * while loading. evict 0: fail with KILN_ERR_NOMEM rather than unload. */
static kiln_status ensure_loaded(kiln_registry *r, struct reg_entry *e, int evict, int hold) {
    for (;;) {
        if (e->state == REG_LOADED) {
            if (hold) e->holders++;
            e->last_used = kiln_now_s();
            return KILN_OK;
        }
        if (e->state == REG_LOADING) {
            uint64_t seen = e->n_loads;
            while (e->state == REG_LOADING) pthread_cond_wait(&r->cv, &r->mu);
            if (e->state != REG_LOADED && e->n_loads != seen && e->load_status)
                return kiln_fail(e->load_status, "%s", e->load_error);
            continue;
        }
        /* unloaded: this thread loads it */
        struct victim *victims = calloc((size_t)r->n + 1, sizeof *victims);
        int32_t n_victims = 0;
        if (!victims) return kiln_fail(KILN_ERR_NOMEM, "registry: out of memory");
        uint64_t need = e->estimate;
        kiln_status s = make_room(r, e, need, evict, victims, &n_victims);
        if (s) {
            free(victims);
            return s;
        }
        e->state = REG_LOADING;
        r->used += need;
        pthread_mutex_unlock(&r->mu);
        for (int32_t i = 0; i < n_victims; i++) victim_destroy(&victims[i]);
        free(victims);
        KILN_LOGI("registry: loading '%s' from %s (about %.1f MiB)", e->name, e->path, MIB(need));
        double t0 = kiln_now_s();
        struct victim loaded;
        uint64_t bytes = 0;
        int is_encoder = 0;
        s = load_model(r, e, &loaded, &bytes, &is_encoder);
        char why[ERROR_SIZE];
        if (s) {
            snprintf(why, sizeof why, "%s", kiln_last_error());
            KILN_LOGE("registry: loading '%s' failed: %s", e->name, why);
        } else {
            KILN_LOGI("registry: loaded '%s' (%s) in %.2f s, %.1f MiB", e->name,
                      is_encoder ? "encoder, embeddings batcher" : "decoder, scheduler",
                      kiln_now_s() - t0, MIB(bytes));
        }
        pthread_mutex_lock(&r->mu);
        r->used -= need;
        e->n_loads++;
        e->load_status = s;
        if (s) {
            snprintf(e->load_error, sizeof e->load_error, "registry: model '%s': %s", e->name, why);
            e->state = REG_UNLOADED;
            pthread_cond_broadcast(&r->cv);
            return kiln_fail(s, "%s", e->load_error);
        }
        e->load_error[0] = 0;
        e->model = loaded.model;
        e->sched = loaded.sched;
        e->embed = loaded.embed;
        e->served.model = loaded.model;
        e->served.sched = loaded.sched;
        e->served.embed = loaded.embed;
        e->is_encoder = is_encoder;
        e->probed = 1;
        e->bytes = bytes;
        r->used += bytes;
        e->state = REG_LOADED;
        pthread_cond_broadcast(&r->cv);
    }
}

kiln_status kiln_registry_acquire(kiln_registry *r, const char *name, kiln_served **out) {
    *out = NULL;
    if (!name) return kiln_fail(KILN_ERR_INVALID_ARG, "registry: no model name");
    pthread_mutex_lock(&r->mu);
    struct reg_entry *e = find(r, name);
    kiln_status s = e ? ensure_loaded(r, e, 1, 1) : not_found(r, name);
    if (!s) *out = &e->served;
    pthread_mutex_unlock(&r->mu);
    return s;
}

void kiln_registry_release(kiln_registry *r, kiln_served *h) {
    if (!h) return;
    struct reg_entry *e = (struct reg_entry *)((char *)h - offsetof(struct reg_entry, served));
    pthread_mutex_lock(&r->mu);
    KILN_ASSERT(e->holders > 0);
    e->holders--;
    e->last_used = kiln_now_s();
    pthread_mutex_unlock(&r->mu);
}

kiln_status kiln_registry_load_all(kiln_registry *r) {
    kiln_status first = KILN_OK;
    char first_msg[ERROR_SIZE] = "";
    pthread_mutex_lock(&r->mu);
    int32_t n = r->n, loaded = 0;
    if (r->p.mem_budget)
        KILN_LOGI("registry: loading %d model%s within a budget of %.1f MiB", n, n == 1 ? "" : "s",
                  MIB(r->p.mem_budget));
    else
        KILN_LOGI("registry: loading %d model%s (no memory budget)", n, n == 1 ? "" : "s");
    for (int32_t i = 0; i < n; i++) {
        struct reg_entry *e = r->e[i];
        if (e->state == REG_UNLOADED && r->p.mem_budget &&
            r->used + e->estimate > r->p.mem_budget) {
            /* does not fit next to the others: it loads on first use */
            KILN_LOGI("registry: '%s' (about %.1f MiB) does not fit now (%.1f of %.1f MiB in "
                      "use); it loads on first use",
                      e->name, MIB(e->estimate), MIB(r->used), MIB(r->p.mem_budget));
            continue;
        }
        kiln_status s = ensure_loaded(r, e, 0, 0);
        if (s) {
            if (!first) {
                first = s;
                snprintf(first_msg, sizeof first_msg, "%s", kiln_last_error());
            }
            continue;
        }
        loaded++;
    }
    KILN_LOGI("registry: %d of %d model%s loaded, %.1f MiB in use", loaded, n, n == 1 ? "" : "s",
              MIB(r->used));
    pthread_mutex_unlock(&r->mu);
    return first ? kiln_fail(first, "%s", first_msg) : KILN_OK;
}

int32_t kiln_registry_list(kiln_registry *r, kiln_registry_entry *out, int32_t cap) {
    pthread_mutex_lock(&r->mu);
    int32_t n = r->n;
    for (int32_t i = 0; i < n && i < cap; i++) {
        const struct reg_entry *e = r->e[i];
        out[i] = (kiln_registry_entry){
            .name = e->name,
            .path = e->path,
            .loaded = e->state == REG_LOADED,
            .pinned = e->pin,
            .loading = e->state == REG_LOADING,
            .is_encoder = e->is_encoder,
            .bytes = e->state == REG_LOADED ? e->bytes : e->estimate,
            .n_holders = e->holders,
            .last_used = e->last_used,
        };
        if (e->state == REG_LOADED && e->model) kiln_model_describe(e->model, &out[i].desc);
        if (e->state == REG_LOADED && e->sched) kiln_sched_get_state(e->sched, &out[i].sched);
        if (e->state == REG_LOADED && e->embed)
            kiln_embed_batcher_get_state(e->embed, &out[i].batcher);
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}
