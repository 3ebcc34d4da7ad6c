/* api_embed.c - POST /v1/embeddings: inputs (strings or token ids) to the
 * model's embeddings batcher, and the answer in OpenAI's list format with
 * each vector as floats or base64 (little-endian float32), the usage, a
 * timings object and x-queue-time / x-tokenization-time / x-inference-time
 * headers (ms). The engine callback copies the vectors and wakes the
 * connection; JSON is built on MHD's threads. */
#include "base/time.h"
#include "obs/trace.h"
#include "server/openai.h"
#include "server/srv.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void on_result(void *user, const kiln_embed_result *res) {
    srv_req *r = user;
    srv *s = r->s;
    pthread_mutex_lock(&r->mu);
    r->status_engine = res->status;
    if (res->status == KILN_OK && res->emb) {
        const kiln_embeddings *e = res->emb;
        size_t n = (size_t)e->n_texts * (size_t)e->dim;
        if ((r->emb = malloc((n ? n : 1) * sizeof *r->emb))) {
            for (int32_t i = 0; i < e->n_texts; i++)
                memcpy(r->emb + (size_t)i * e->dim, e->data + e->row[i] * e->dim,
                       (size_t)e->dim * sizeof *r->emb);
            r->n_emb = e->n_texts;
            r->dim = e->dim;
        } else {
            r->status_engine = KILN_ERR_NOMEM;
        }
    } else if (res->error) {
        size_t n = strlen(res->error);
        if ((r->error = malloc(n + 1))) memcpy(r->error, res->error, n + 1);
    }
    r->emb_tokens = res->n_tokens;
    r->t_queue = res->t_queue;
    r->t_emb_tok = res->t_tokenize;
    r->t_inference = res->t_inference;
    r->done = true;
    pthread_mutex_unlock(&r->mu);
    if (res->status == KILN_OK) {
        const char *mv[] = {r->model_name, NULL};
        metric_observe(s->m.queue, mv, res->t_queue);
        metric_observe(s->m.tokenize, mv, res->t_tokenize);
        if (res->first_in_batch) { /* once per merged forward pass, not per request */
            metric_observe(s->m.emb_batch, mv, res->batch_texts);
            metric_observe(s->m.emb_batch_latency, mv, res->t_inference);
        }
        metric_inc(s->m.emb_tokens, mv, (double)res->n_tokens);
    }
    srv_req_wake(r);
    srv_req_unref(r); /* the engine's reference */
}

static json_t *vector_json(const srv_req *r, int32_t i) {
    const float *v = r->emb + (size_t)i * r->dim;
    if (r->b64) {
        /* little-endian float32 bytes (x86 and arm64 are little-endian) */
        strbuf b = {0};
        srv_base64(&b, (const unsigned char *)v, (size_t)r->dim * sizeof *v);
        json_t *j = b.oom ? NULL : json_stringn(b.p ? b.p : "", b.n);
        strbuf_free(&b);
        return j;
    }
    json_t *a = json_array();
    for (int32_t k = 0; k < r->dim; k++) json_array_append_new(a, json_real((double)v[k]));
    return a;
}

static void add_ms_header(struct MHD_Response *resp, const char *name, double s) {
    char v[32];
    snprintf(v, sizeof v, "%.3f", s * 1e3);
    MHD_add_response_header(resp, name, v);
}

enum MHD_Result srv_finish_embeddings(srv_req *r) {
    pthread_mutex_lock(&r->mu);
    bool done = r->done, force = r->force_end;
    if (!done && !force) srv_req_suspend_locked(r); /* woken early: wait again */
    pthread_mutex_unlock(&r->mu);
    if (!done && force) return srv_stopped(r);
    if (!done) return MHD_YES;
    if (r->status_engine != KILN_OK)
        return srv_error_status(r, r->status_engine,
                                r->error ? r->error : kiln_status_str(r->status_engine));
    TRACE_SCOPE_BEGIN(tw); /* http_write: the vectors' JSON, queued */
    json_t *data = json_array();
    for (int32_t i = 0; i < r->n_emb; i++)
        json_array_append_new(data, json_pack("{s:s,s:i,s:o}", "object", "embedding", "index", i,
                                              "embedding", vector_json(r, i)));
    json_t *j = json_pack(
        "{s:s,s:o,s:s,s:{s:I,s:I},s:{s:f,s:f,s:I,s:f,s:i,s:f,s:f}}", "object", "list", "data", data,
        "model", r->model_name, "usage", "prompt_tokens", (json_int_t)r->emb_tokens, "total_tokens",
        (json_int_t)r->emb_tokens, "timings", "queue_ms", r->t_queue * 1e3, "tokenization_ms",
        r->t_emb_tok * 1e3, "prompt_n", (json_int_t)r->emb_tokens, "prompt_ms",
        r->t_inference * 1e3, "predicted_n", 0, "predicted_ms", 0.0, "predicted_per_token_ms", 0.0);
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    struct MHD_Response *resp =
        txt ? MHD_create_response_from_buffer(strlen(txt), txt, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!resp) {
        free(txt);
        return srv_error(r, 500, "server_error", NULL, NULL, "out of memory");
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    add_ms_header(resp, "x-queue-time", r->t_queue);
    add_ms_header(resp, "x-tokenization-time", r->t_emb_tok);
    add_ms_header(resp, "x-inference-time", r->t_inference);
    size_t bytes = strlen(txt);
    enum MHD_Result ret = srv_respond(r, 200, resp);
    srv_trace_http("http_write", tw, 200, (int64_t)bytes);
    return ret;
}

enum MHD_Result srv_handle_embeddings(srv_req *r) {
    srv_emb_req q;
    srv_perr e;
    enum MHD_Result res;
    TRACE_SCOPE_BEGIN(tp);
    bool parsed = srv_parse_emb(r->body.p ? r->body.p : "", r->body.n, &q, &e);
    srv_trace_http("http_parse", tp, 0, (int64_t)r->body.n);
    if (!parsed) {
        res = srv_error(r, e.status, e.type, e.param, e.code, "%s", e.msg);
        goto done;
    }
    if (!srv_acquire(r, q.model, &res)) goto done;
    if (!r->served->embed) {
        res =
            srv_error(r, 400, "invalid_request_error", "model", "model_not_supported",
                      "model '%s' is a generation model, not an embeddings model", r->served->name);
        goto done;
    }
    int32_t full = kiln_embed_batcher_dim(r->served->embed);
    if (q.dim > full) {
        res = srv_error(r, 400, "invalid_request_error", "dimensions", "invalid_value",
                        "'dimensions' is %d; model '%s' gives vectors of %d", q.dim,
                        r->served->name, full);
        goto done;
    }
    int32_t nv = kiln_model_n_vocab(r->served->model);
    for (int32_t i = 0; i < q.n; i++)
        for (int32_t k = 0; !q.in[i].text && k < q.in[i].n_ids; k++)
            if (q.in[i].ids[k] >= nv) {
                res = srv_error(r, 400, "invalid_request_error", "input", "invalid_value",
                                "input %d: token %d is outside the vocabulary of %d", i,
                                q.in[i].ids[k], nv);
                goto done;
            }
    size_t nl = strlen(r->served->name);
    if (!(r->model_name = malloc(nl + 1))) {
        res = MHD_NO;
        goto done;
    }
    memcpy(r->model_name, r->served->name, nl + 1);
    r->b64 = q.b64;
    pthread_mutex_lock(&r->mu);
    r->refs++; /* the engine's reference, dropped by on_result */
    r->phase = SRV_P_WAIT;
    pthread_mutex_unlock(&r->mu);
    kiln_status st =
        kiln_embed_batcher_submit(r->served->embed, q.in, q.n, q.dim, 1, 0, on_result, r);
    if (st != KILN_OK) {
        pthread_mutex_lock(&r->mu);
        r->refs--;
        pthread_mutex_unlock(&r->mu);
        r->phase = SRV_P_BODY;
        res = srv_error_status(r, st, kiln_last_error());
        goto done;
    }
    pthread_mutex_lock(&r->mu);
    bool fin = r->done;
    if (!fin) srv_req_suspend_locked(r);
    pthread_mutex_unlock(&r->mu);
    res = fin ? srv_finish_embeddings(r) : MHD_YES;
done:
    srv_emb_req_free(&q);
    return res;
}
