/* api_gen.c - POST /v1/chat/completions and /v1/completions: request to
 * prompt tokens (chat template + tokenizer), submission to the model's
 * scheduler, the engine callback, and the answer: one JSON document, or
 * Server-Sent Events in OpenAI's chat.completion.chunk / text_completion
 * format ending with "data: [DONE]".
 *
 * The engine callback (engine thread) only appends text to r->text under
 * r->mu and wakes the connection; JSON is built on MHD's threads. */
#include "base/log.h"
#include "base/time.h"
#include "obs/trace.h"
#include "server/openai.h"
#include "server/srv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the engine side */

static const char *finish_str(kiln_finish f);

static void on_event(void *user, const kiln_sched_event *ev) {
    srv_req *r = user;
    srv *s = r->s;
    if (ev->kind == KILN_SCHED_TOKEN) {
        double t = kiln_now_s(), gap = -1;
        pthread_mutex_lock(&r->mu);
        if (ev->len) strbuf_put(&r->text, ev->text, ev->len);
        if (r->t_last_token > 0) gap = t - r->t_last_token;
        r->t_last_token = t;
        pthread_mutex_unlock(&r->mu);
        const char *mv[] = {r->model_name, NULL};
        if (gap >= 0) metric_observe(s->m.itl, mv, gap), srv_diag_itl(s, gap);
        srv_logs_token(s, gap);
        /* only a stream has use for a token now; a waiting non-streaming
         * connection is woken by DONE alone */
        if (ev->len && r->stream) srv_req_wake(r);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (ev->len) strbuf_put(&r->text, ev->text, ev->len);
    if (ev->stats) r->stats = *ev->stats;
    r->status_engine = ev->status;
    if (ev->status != KILN_OK && ev->error) {
        size_t n = strlen(ev->error);
        if ((r->error = malloc(n + 1))) memcpy(r->error, ev->error, n + 1);
    }
    r->done = true;
    pthread_mutex_unlock(&r->mu);
    {
        const char *why = ev->status != KILN_OK                              ? "error"
                          : !ev->stats                                       ? "stop"
                          : ev->stats->finish == KILN_FINISH_CANCELLED       ? "cancelled"
                          : !strcmp(finish_str(ev->stats->finish), "length") ? "length"
                                                                             : "stop";
        const char *v[] = {r->model_name, why, NULL};
        metric_inc(s->m.finished, v, 1);
    }
    if (ev->stats && ev->status == KILN_OK) {
        const kiln_request_stats *st = ev->stats;
        const char *mv[] = {r->model_name, NULL};
        metric_observe(s->m.prompt_len, mv, st->n_prompt);
        metric_observe(s->m.output_len, mv, st->n_gen);
        metric_observe(s->m.queue, mv, st->t_queue);
        if (st->n_gen > 0) {
            metric_observe(s->m.ttft, mv, st->t_first_token);
            metric_observe(s->m.decode, mv, st->t_decode);
        }
        metric_observe(s->m.prefill, mv, st->t_prefill);
        metric_inc(s->m.prompt_tokens, mv, st->n_prompt);
        metric_inc(s->m.gen_tokens, mv, st->n_gen);
    }
    srv_gen_untrack(r);
    srv_req_wake(r);
    srv_req_unref(r); /* the engine's reference */
}

/* ---- prompt */

/* The chat template family for m: the server's --chat-template, else the
 * model's own, else chatml. */
static const char *family_of(srv *s, const kiln_model *m) {
    if (s->chat_template) return s->chat_template;
    size_t len;
    return kiln_model_chat_template(m, &len) ? NULL : "chatml";
}

/* Positions per slot of the model's scheduler: the most prompt tokens it takes. */
static int32_t slot_ctx(const kiln_served *sv) {
    kiln_sched_state st;
    kiln_sched_get_state(sv->sched, &st);
    return st.n_slots > 0 ? (int32_t)(st.kv_total / st.n_slots) : 0;
}

/* Renders and tokenizes the prompt into *ids (malloc'd). Answers itself on
 * failure (returns false, *res set). Chat contents are tokenized as plain
 * text (kiln_chat_tokenize): only the template's markup makes control
 * tokens. A completions prompt is plain text unless the request asked for
 * parse_special. Both are bounded by the slot's context: a prompt that
 * cannot fit is answered at once, without tokenizing all of it (a long
 * prompt would otherwise hold this HTTP thread for seconds). */
static bool build_prompt(srv_req *r, srv_gen_req *g, int32_t **ids, int32_t *n,
                         enum MHD_Result *res) {
    const kiln_model *m = r->served->model;
    const char *param = g->chat ? "messages" : "prompt";
    size_t n_ids = 0;
    kiln_status st;
    *ids = NULL;
    if (!g->chat && g->prompt_ids) {
        int32_t nv = kiln_model_n_vocab(m);
        for (int32_t i = 0; i < g->n_prompt_ids; i++)
            if (g->prompt_ids[i] >= nv) {
                *res = srv_error(r, 400, "invalid_request_error", "prompt", "invalid_value",
                                 "prompt token %d (at %d) is outside the vocabulary of %d",
                                 g->prompt_ids[i], i, nv);
                return false;
            }
        *ids = g->prompt_ids, *n = g->n_prompt_ids;
        g->prompt_ids = NULL;
        return true;
    }
    int32_t n_ctx = slot_ctx(r->served);
    size_t cap = n_ctx > 0 ? (size_t)n_ctx : 1;
    if (!(*ids = malloc(cap * sizeof **ids))) {
        *res = srv_error(r, 500, "server_error", NULL, NULL, "out of memory");
        return false;
    }
    if (g->chat) {
        const char *tmpl = family_of(r->s, m);
        const char *family = kiln_chat_template_family(m, tmpl);
        if (!family) {
            *res = srv_error(r, 500, "server_error", NULL, NULL, "chat template: %s",
                             kiln_last_error());
            goto fail;
        }
        st = kiln_chat_tokenize(m, tmpl, g->msgs, g->n_msgs, 1, 1, *ids, cap, &n_ids);
        if (st == KILN_OK)
            for (const char *const *ss = kiln_chat_stop_strings(family);
                 *ss && g->gen.n_stop < SRV_MAX_STOP + 8; ss++)
                g->stop[g->gen.n_stop++] = *ss;
    } else {
        st = kiln_tokenize_bounded(m, g->prompt, g->prompt_len, 1, g->parse_special, *ids, cap,
                                   &n_ids);
    }
    if (st == KILN_ERR_RANGE) {
        *res = srv_error(r, 400, "invalid_request_error", param, "context_length_exceeded",
                         "the prompt needs at least %zu tokens, more than the context of %d "
                         "tokens of model '%s'",
                         n_ids, n_ctx, r->served->name);
        goto fail;
    }
    if (st != KILN_OK) {
        if (st == KILN_ERR_INVALID_ARG) /* a conversation the template cannot render */
            *res = srv_error(r, 400, "invalid_request_error", param, "invalid_value", "%s",
                             kiln_last_error());
        else if (st == KILN_ERR_NOMEM)
            *res = srv_error(r, 500, "server_error", NULL, NULL, "%s", kiln_last_error());
        else
            *res = srv_error(r, 400, "invalid_request_error", param, NULL,
                             "tokenizing the prompt: %s", kiln_last_error());
        goto fail;
    }
    *n = (int32_t)n_ids;
    return true;
fail:
    free(*ids);
    *ids = NULL;
    return false;
}

/* ---- responses */

static const char *finish_str(kiln_finish f) {
    return f == KILN_FINISH_LENGTH || f == KILN_FINISH_CTX || f == KILN_FINISH_TIMEOUT ? "length"
                                                                                       : "stop";
}

static json_t *timings_json(const srv_req *r) {
    const kiln_request_stats *st = &r->stats;
    return json_pack("{s:f,s:i,s:i,s:f,s:i,s:f,s:f}", "queue_ms", st->t_queue * 1e3, "prompt_n",
                     st->n_prompt, "cache_n", st->n_cached, "prompt_ms", st->t_prefill * 1e3,
                     "predicted_n", st->n_gen, "predicted_ms", st->t_decode * 1e3,
                     "predicted_per_token_ms", st->n_gen ? st->t_decode * 1e3 / st->n_gen : 0.0);
}

static json_t *usage_json(const srv_req *r) {
    return json_pack("{s:i,s:i,s:i}", "prompt_tokens", r->n_prompt, "completion_tokens",
                     r->stats.n_gen, "total_tokens", r->n_prompt + r->stats.n_gen);
}

static json_t *envelope(const srv_req *r, const char *object) {
    return json_pack("{s:s,s:s,s:I,s:s,s:s}", "id", r->id, "object", object, "created",
                     (json_int_t)r->created, "model", r->model_name, "system_fingerprint",
                     "kiln-" KILN_VERSION);
}

static json_t *text_value(const char *p, size_t n) {
    json_t *j = json_stringn(p ? p : "", n);
    return j ? j : json_string("");
}

/* Why a cancelled request was cancelled, for its client. */
static const char *cancel_message(const srv_req *r, const char **code) {
    switch (atomic_load(&r->cancel_reason)) {
    case SRV_CANCEL_SHUTDOWN:
        *code = "server_shutting_down";
        return "the request was cancelled at the shutdown deadline (the server is draining; see "
               "--shutdown-timeout); retry on another instance";
    case SRV_CANCEL_CLIENT_GONE:
        *code = "client_disconnected";
        return "the request was cancelled: the client's connection was reset";
    default:
        *code = "cancelled";
        return "the request was cancelled";
    }
}

/* The engine's failure as an HTTP status and message (non-streaming). */
static enum MHD_Result engine_error(srv_req *r) {
    const char *msg = r->error ? r->error : kiln_status_str(r->status_engine);
    if (r->status_engine == KILN_OK && r->stats.finish == KILN_FINISH_CANCELLED) {
        const char *code, *why = cancel_message(r, &code);
        return srv_error(r, 503, "unavailable_error", NULL, code, "%s", why);
    }
    return srv_error_status(
        r, r->status_engine == KILN_ERR_RANGE ? KILN_ERR_INTERNAL : r->status_engine, msg);
}

enum MHD_Result srv_finish_generate(srv_req *r) {
    pthread_mutex_lock(&r->mu);
    bool done = r->done, force = r->force_end;
    if (!done && !force) srv_req_suspend_locked(r); /* woken early: wait again */
    pthread_mutex_unlock(&r->mu);
    if (!done && force) return srv_stopped(r);
    if (!done) return MHD_YES;
    if (r->status_engine != KILN_OK || r->stats.finish == KILN_FINISH_CANCELLED)
        return engine_error(r);
    json_t *j = envelope(r, r->chat ? "chat.completion" : "text_completion");
    json_t *choice;
    if (r->chat)
        choice = json_pack("{s:i,s:{s:s,s:o},s:n,s:s}", "index", 0, "message", "role", "assistant",
                           "content", text_value(r->text.p, r->text.n), "logprobs", "finish_reason",
                           finish_str(r->stats.finish));
    else
        choice = json_pack("{s:o,s:i,s:n,s:s}", "text", text_value(r->text.p, r->text.n), "index",
                           0, "logprobs", "finish_reason", finish_str(r->stats.finish));
    json_object_set_new(j, "choices", json_pack("[o]", choice));
    json_object_set_new(j, "usage", usage_json(r));
    json_object_set_new(j, "timings", timings_json(r));
    return srv_respond_json(r, 200, j);
}

/* Appends one SSE event holding j (stolen). */
static void sse_put(srv_req *r, json_t *j) {
    char *txt = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(j);
    if (!txt) {
        r->out.oom = true;
        return;
    }
    strbuf_puts(&r->out, "data: ");
    strbuf_puts(&r->out, txt);
    strbuf_puts(&r->out, "\n\n");
    free(txt);
}

/* A chunk with one choice (content text or NULL, finish reason or NULL). */
static void sse_chunk(srv_req *r, const char *text, size_t n, bool role, const char *finish) {
    json_t *j = envelope(r, r->chat ? "chat.completion.chunk" : "text_completion");
    json_t *c;
    json_t *fin = finish ? json_string(finish) : json_null();
    if (r->chat) {
        json_t *delta = json_object();
        if (role) json_object_set_new(delta, "role", json_string("assistant"));
        if (text || role) json_object_set_new(delta, "content", text_value(text, n));
        c = json_pack("{s:i,s:o,s:n,s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason",
                      fin);
    } else {
        c = json_pack("{s:o,s:i,s:n,s:o}", "text", text_value(text, n), "index", 0, "logprobs",
                      "finish_reason", fin);
    }
    json_object_set_new(j, "choices", json_pack("[o]", c));
    if (finish) json_object_set_new(j, "timings", timings_json(r));
    if (r->include_usage) json_object_set_new(j, "usage", json_null());
    sse_put(r, j);
}

/* Formats what the engine produced since the last call into r->out. */
static void stream_format(srv_req *r, strbuf *text, bool done) {
    if (!r->role_sent) {
        r->role_sent = true;
        if (r->chat) sse_chunk(r, NULL, 0, true, NULL);
    }
    if (text->n) sse_chunk(r, text->p, text->n, false, NULL);
    if (!done) return;
    r->final_sent = true;
    if (r->status_engine != KILN_OK || r->stats.finish == KILN_FINISH_CANCELLED) {
        /* The stream ends as a finished one would (a final chunk with its
         * finish_reason, which clients wait for), then says why. */
        const char *code = NULL, *msg = r->error ? r->error : kiln_status_str(r->status_engine);
        if (r->status_engine == KILN_OK) msg = cancel_message(r, &code);
        sse_chunk(r, NULL, 0, false, "length");
        sse_put(r, json_pack("{s:{s:s,s:s,s:n,s:o}}", "error", "message", msg, "type",
                             code ? "unavailable_error" : "server_error", "param", "code",
                             code ? json_string(code) : json_null()));
    } else {
        sse_chunk(r, NULL, 0, false, finish_str(r->stats.finish));
        if (r->include_usage) {
            json_t *j = envelope(r, r->chat ? "chat.completion.chunk" : "text_completion");
            json_object_set_new(j, "choices", json_array());
            json_object_set_new(j, "usage", usage_json(r));
            sse_put(r, j);
        }
    }
    strbuf_puts(&r->out, "data: [DONE]\n\n");
}

/* libmicrohttpd asks for the stream's next bytes: SSE events formatted from
 * what the engine appended. A call that hands over bytes is an http_write
 * span. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    srv_req *r = cls;
    (void)pos;
    TRACE_SCOPE_BEGIN(tw);
    while (r->out_off == r->out.n) {
        r->out.n = r->out_off = 0;
        if (r->final_sent) return MHD_CONTENT_READER_END_OF_STREAM;
        pthread_mutex_lock(&r->mu);
        strbuf text = r->text;
        r->text = (strbuf){0};
        bool done = r->done;
        if (!text.n && !done && r->role_sent && r->probe_due) {
            /* the watcher saw the client's end of stream: a comment line,
             * which a closed peer answers with a reset */
            r->probe_due = false;
            pthread_mutex_unlock(&r->mu);
            strbuf_free(&text);
            strbuf_puts(&r->out, ": ping\n\n");
            continue;
        }
        if (!text.n && !done && r->role_sent && r->force_end) {
            pthread_mutex_unlock(&r->mu);
            strbuf_free(&text);
            return MHD_CONTENT_READER_END_WITH_ERROR; /* the server is stopping */
        }
        if (!text.n && !done && r->role_sent) {
            /* nothing to send: sleep until the engine wakes us */
            srv_req_suspend_locked(r);
            pthread_mutex_unlock(&r->mu);
            strbuf_free(&text);
            return 0;
        }
        pthread_mutex_unlock(&r->mu);
        stream_format(r, &text, done);
        strbuf_free(&text);
        if (r->out.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = r->out.n - r->out_off;
    if (n > max) n = max;
    memcpy(buf, r->out.p + r->out_off, n);
    r->out_off += n;
    srv_trace_http("http_write", tw, 0, (int64_t)n);
    return (ssize_t)n;
}

/* ---- the endpoint */

static enum MHD_Result submit(srv_req *r, srv_gen_req *g, int32_t *ids, int32_t n) {
    srv *s = r->s;
    if (g->max_tokens_set) {
        /* As OpenAI: a prompt and token limit that cannot both fit is an
         * error, not an answer silently cut at the context's end. */
        kiln_sched_state ss;
        kiln_sched_get_state(r->served->sched, &ss);
        int64_t n_ctx = ss.n_slots ? ss.kv_total / ss.n_slots : 0;
        if (n_ctx && (int64_t)n + g->gen.n_predict > n_ctx)
            return srv_error(
                r, 400, "invalid_request_error", r->chat ? "max_completion_tokens" : "max_tokens",
                "context_length_exceeded",
                "This model's maximum context length is %lld tokens. However, you "
                "requested %lld tokens (%d in the %s, %d in the completion). Please "
                "reduce the length of the %s or completion.",
                (long long)n_ctx, (long long)n + g->gen.n_predict, n,
                r->chat ? "messages" : "prompt", g->gen.n_predict, r->chat ? "messages" : "prompt");
    }
    if (!g->seed_set)
        g->gen.sampling.seed = (uint64_t)time(NULL) ^ (atomic_fetch_add(&s->next_id, 1) << 20);
    pthread_mutex_lock(&r->mu);
    r->refs++; /* the engine's reference, dropped by DONE */
    pthread_mutex_unlock(&r->mu);
    r->n_prompt = n;
    srv_gen_track(r);
    uint64_t id = 0;
    TRACE_SCOPE_BEGIN(tq); /* encloses the enqueue flow's start */
    kiln_status st = kiln_sched_submit(r->served->sched, ids, n, &g->gen, on_event, r, &id);
    srv_trace_http("submit", tq, 0, -1);
    if (st != KILN_OK) {
        srv_gen_untrack(r);
        pthread_mutex_lock(&r->mu);
        r->refs--; /* on_event will never run; MHD still holds its reference */
        pthread_mutex_unlock(&r->mu);
        return srv_error_status(r, st, kiln_last_error());
    }
    /* from now on the watcher, shutdown and MHD's completion may cancel it */
    pthread_mutex_lock(&r->mu);
    r->sched_id = id;
    r->submitted = true;
    pthread_mutex_unlock(&r->mu);
    if (r->stream) {
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_reader, r, NULL);
        if (!resp) return MHD_NO;
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        MHD_add_response_header(resp, "X-Accel-Buffering", "no");
        enum MHD_Result ret = srv_respond(r, 200, resp);
        r->phase = SRV_P_STREAM;
        return ret;
    }
    pthread_mutex_lock(&r->mu);
    r->phase = SRV_P_WAIT;
    bool done = r->done;
    if (!done) srv_req_suspend_locked(r);
    pthread_mutex_unlock(&r->mu);
    return done ? srv_finish_generate(r) : MHD_YES;
}

enum MHD_Result srv_handle_generate(srv_req *r) {
    srv *s = r->s;
    srv_gen_req g;
    srv_perr e;
    enum MHD_Result res;
    int32_t *ids = NULL, n = 0;
    bool chat = r->route == SRV_R_CHAT;
    TRACE_SCOPE_BEGIN(tp);
    bool parsed = srv_parse_gen(r->body.p ? r->body.p : "", r->body.n, chat, &g, &e);
    srv_trace_http("http_parse", tp, 0, (int64_t)r->body.n);
    if (!parsed) {
        res = srv_error(r, e.status, e.type, e.param, e.code, "%s", e.msg);
        goto done;
    }
    if (!srv_acquire(r, g.model, &res)) goto done;
    if (!r->served->sched) {
        res = srv_error(r, 400, "invalid_request_error", "model", "model_not_supported",
                        "model '%s' is an embeddings model; use /v1/embeddings", r->served->name);
        goto done;
    }
    int32_t nv = kiln_model_n_vocab(r->served->model);
    for (int32_t i = 0; i < g.gen.sampling.n_logit_bias; i++)
        if (g.bias[i].token >= nv) {
            res = srv_error(r, 400, "invalid_request_error", "logit_bias", "invalid_value",
                            "logit_bias token %d is outside the vocabulary of %d", g.bias[i].token,
                            nv);
            goto done;
        }
    double t0 = kiln_now_s();
    TRACE_SCOPE_BEGIN(tt);
    if (!build_prompt(r, &g, &ids, &n, &res)) goto done;
    srv_trace_http("tokenize", tt, 0, -1);
    r->t_tokenize = kiln_now_s() - t0;
    metric_observe(s->m.tokenize, (const char *const[]){r->served->name, NULL}, r->t_tokenize);
    if (n == 0) {
        res = srv_error(r, 400, "invalid_request_error", chat ? "messages" : "prompt",
                        "invalid_value", "the prompt is empty");
        goto done;
    }
    size_t nl = strlen(r->served->name);
    if (!(r->model_name = malloc(nl + 1))) {
        res = MHD_NO;
        goto done;
    }
    memcpy(r->model_name, r->served->name, nl + 1);
    r->chat = chat;
    r->created = (int64_t)time(NULL);
    r->stream = g.stream;
    r->include_usage = g.include_usage;
    snprintf(r->id, sizeof r->id, "%s-%llx%06llx", chat ? "chatcmpl" : "cmpl",
             (unsigned long long)s->started, (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    res = submit(r, &g, ids, n);
done:
    free(ids);
    srv_gen_req_free(&g);
    return res;
}
