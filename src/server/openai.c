/* openai.c - parsing and validating OpenAI request bodies (see openai.h).
 * Policy for parameters: those Kiln implements are checked for type and
 * range; a few that change nothing here are accepted and ignored (user,
 * store, metadata, ...); known OpenAI parameters Kiln does not implement
 * are accepted only at their default value (logprobs false, n 1, ...);
 * anything else is a 400 naming the parameter. JSON null counts as absent. */
#include "server/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool fail(srv_perr *e, unsigned status, const char *param, const char *code, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));

static bool fail(srv_perr *e, unsigned status, const char *param, const char *code, const char *fmt,
                 ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    srv_utf8_trim(e->msg);
    e->status = status;
    e->type = "invalid_request_error";
    e->param = param;
    if (param && strlen(param) > SRV_ECHO_MAX) {
        /* never echo unbounded input (a parameter name is the client's) */
        snprintf(e->param_buf, sizeof e->param_buf, "%.*s...", SRV_ECHO_MAX, param);
        srv_utf8_trim(e->param_buf);
        e->param = e->param_buf;
    }
    e->code = code;
    return false;
}

static bool bad_type(srv_perr *e, const char *param, const char *want) {
    return fail(e, 400, param, "invalid_type", "'%s' must be %s", param, want);
}

static json_t *load(const char *body, size_t len, srv_perr *e) {
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root && json_error_code(&je) == json_error_null_character) {
        fail(e, 400, NULL, "invalid_value",
             "a string in the body contains a NUL character (\\u0000, line %d, column %d); "
             "remove it",
             je.line, je.column);
        return NULL;
    }
    if (!root) {
        fail(e, 400, NULL, "invalid_json", "malformed JSON body: %s (line %d, column %d)", je.text,
             je.line, je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        fail(e, 400, NULL, "invalid_json", "the request body must be a JSON object");
        return NULL;
    }
    return root;
}

/* A number field in [lo, hi] (absent/null: untouched). */
static bool get_num(json_t *root, const char *key, double lo, double hi, float *out, srv_perr *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_number(v)) return bad_type(e, key, "a number");
    double x = json_number_value(v);
    if (!(x >= lo && x <= hi))
        return fail(e, 400, key, "invalid_value", "'%s' is %g; it must be between %g and %g", key,
                    x, lo, hi);
    *out = (float)x;
    return true;
}

/* An integer field in [lo, hi] (absent/null: *set false). */
static bool get_int(json_t *root, const char *key, long long lo, long long hi, long long *out,
                    bool *set, srv_perr *e) {
    json_t *v = json_object_get(root, key);
    *set = false;
    if (!v || json_is_null(v)) return true;
    long long x;
    if (json_is_integer(v))
        x = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
             fabs(json_real_value(v)) < 9e15)
        x = (long long)json_real_value(v);
    else
        return bad_type(e, key, "an integer");
    if (x < lo || x > hi)
        return fail(e, 400, key, "invalid_value", "'%s' is %lld; it must be between %lld and %lld",
                    key, x, lo, hi);
    *out = x;
    *set = true;
    return true;
}

static bool get_bool(json_t *root, const char *key, bool *out, srv_perr *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return true;
    if (!json_is_boolean(v)) return bad_type(e, key, "a boolean");
    *out = json_is_true(v);
    return true;
}

static bool parse_stop(json_t *root, srv_gen_req *g, srv_perr *e) {
    json_t *v = json_object_get(root, "stop");
    if (!v || json_is_null(v)) return true;
    if (json_is_string(v)) {
        if (!json_string_length(v)) return fail(e, 400, "stop", "invalid_value", "'stop' is empty");
        g->stop[g->gen.n_stop++] = json_string_value(v);
        return true;
    }
    if (!json_is_array(v)) return bad_type(e, "stop", "a string or an array of strings");
    if (json_array_size(v) > SRV_MAX_STOP)
        return fail(e, 400, "stop", "invalid_value", "'stop' has %zu strings; at most %d",
                    json_array_size(v), SRV_MAX_STOP);
    size_t i;
    json_t *s;
    json_array_foreach(v, i, s) {
        if (!json_is_string(s)) return bad_type(e, "stop", "a string or an array of strings");
        if (!json_string_length(s))
            return fail(e, 400, "stop", "invalid_value", "'stop' holds an empty string");
        g->stop[g->gen.n_stop++] = json_string_value(s);
    }
    return true;
}

static bool parse_bias(json_t *root, srv_gen_req *g, srv_perr *e) {
    json_t *v = json_object_get(root, "logit_bias");
    if (!v || json_is_null(v)) return true;
    if (!json_is_object(v)) return bad_type(e, "logit_bias", "an object of token id -> bias");
    size_t n = json_object_size(v);
    if (n > SRV_MAX_BIAS)
        return fail(e, 400, "logit_bias", "invalid_value",
                    "'logit_bias' has %zu entries; at most %d", n, SRV_MAX_BIAS);
    if (!n) return true;
    if (!(g->bias = calloc(n, sizeof *g->bias))) return fail(e, 500, NULL, NULL, "out of memory");
    const char *key;
    json_t *b;
    int32_t k = 0;
    json_object_foreach(v, key, b) {
        char *end;
        long id = strtol(key, &end, 10);
        if (!*key || *end || id < 0 || id > INT32_MAX)
            return fail(e, 400, "logit_bias", "invalid_value",
                        "'logit_bias' key '%s' is not a token id", key);
        if (!json_is_number(b)) return bad_type(e, "logit_bias", "an object of token id -> number");
        double x = json_number_value(b);
        if (!(x >= -100 && x <= 100))
            return fail(e, 400, "logit_bias", "invalid_value",
                        "'logit_bias' of token %ld is %g; it must be between -100 and 100", id, x);
        g->bias[k].token = (int32_t)id;
        /* -100 bans the token, as OpenAI documents */
        g->bias[k++].bias = x <= -100 ? -INFINITY : (float)x;
    }
    g->gen.sampling.n_logit_bias = k;
    return true;
}

/* Keys accepted and ignored / accepted only at a default value. */
static const char *const ignored_keys[] = {
    "user", "store", "metadata", "service_tier", "cache_prompt", "parallel_tool_calls", NULL};

static bool in_list(const char *k, const char *const *list) {
    for (; *list; list++)
        if (!strcmp(k, *list)) return true;
    return false;
}

/* A known but unimplemented parameter at its default value is fine. */
static bool default_only(json_t *root, const char *key, srv_perr *e) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || json_is_false(v)) return true;
    if (!strcmp(key, "n") || !strcmp(key, "best_of")) {
        if (json_is_integer(v) && json_integer_value(v) == 1) return true;
        return fail(e, 400, key, "unsupported_value", "'%s' must be 1: Kiln returns one choice",
                    key);
    }
    if (!strcmp(key, "response_format")) {
        json_t *t = json_object_get(v, "type");
        if (json_is_string(t) && !strcmp(json_string_value(t), "text")) return true;
    }
    if (!strcmp(key, "tool_choice") && json_is_string(v) && !strcmp(json_string_value(v), "none"))
        return true;
    if ((!strcmp(key, "tools") || !strcmp(key, "functions")) && json_is_array(v) &&
        !json_array_size(v))
        return true;
    if (!strcmp(key, "suffix") && json_is_string(v) && !json_string_length(v)) return true;
    if (!strcmp(key, "logprobs") && json_is_integer(v) && json_integer_value(v) == 0) return true;
    /* vLLM's min_tokens: implied when end-of-generation tokens are ignored */
    if (!strcmp(key, "min_tokens") && json_is_integer(v) &&
        (json_integer_value(v) == 0 || json_is_true(json_object_get(root, "ignore_eos"))))
        return true;
    return fail(e, 400, key, "unsupported_parameter", "'%s' is not supported by Kiln", key);
}

static const char *const chat_keys[] = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", NULL};
static const char *const compl_keys[] = {"model",      "prompt",        "stream", "stream_options",
                                         "max_tokens", "parse_special", NULL};
static const char *const sampling_keys[] = {"temperature",
                                            "top_p",
                                            "top_k",
                                            "min_p",
                                            "presence_penalty",
                                            "frequency_penalty",
                                            "repeat_penalty",
                                            "repeat_last_n",
                                            "seed",
                                            "stop",
                                            "logit_bias",
                                            "ignore_eos",
                                            NULL};
static const char *const chat_unsupported[] = {
    "n",           "logprobs",  "top_logprobs",  "response_format", "tools",
    "tool_choice", "functions", "function_call", "min_tokens",      NULL};
static const char *const compl_unsupported[] = {"n",      "logprobs",   "echo", "best_of",
                                                "suffix", "min_tokens", NULL};

static bool check_keys(json_t *root, bool chat, srv_perr *e) {
    const char *key;
    json_t *v;
    const char *const *own = chat ? chat_keys : compl_keys;
    const char *const *uns = chat ? chat_unsupported : compl_unsupported;
    json_object_foreach(root, key, v) {
        if (in_list(key, own) || in_list(key, sampling_keys) || in_list(key, ignored_keys))
            continue;
        if (in_list(key, uns)) {
            if (!default_only(root, key, e)) return false;
            continue;
        }
        return fail(e, 400, key, "unknown_parameter",
                    "unrecognized request argument supplied: %.*s%s", SRV_ECHO_MAX, key,
                    strlen(key) > SRV_ECHO_MAX ? "..." : "");
    }
    return true;
}

static bool parse_sampling(json_t *root, srv_gen_req *g, srv_perr *e) {
    kiln_sampling *sp = &g->gen.sampling;
    long long x;
    bool set;
    if (!get_num(root, "temperature", 0, 100, &sp->temp, e) ||
        !get_num(root, "top_p", 0, 1, &sp->top_p, e) ||
        !get_num(root, "min_p", 0, 1, &sp->min_p, e) ||
        !get_num(root, "presence_penalty", -2, 2, &sp->presence_penalty, e) ||
        !get_num(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, e) ||
        !get_num(root, "repeat_penalty", 0, 100, &sp->repeat_penalty, e))
        return false;
    if (sp->repeat_penalty <= 0)
        return fail(e, 400, "repeat_penalty", "invalid_value", "'repeat_penalty' must be > 0");
    if (!get_int(root, "top_k", 0, INT32_MAX, &x, &set, e)) return false;
    if (set) sp->top_k = (int32_t)x;
    if (!get_int(root, "repeat_last_n", 0, 1 << 20, &x, &set, e)) return false;
    if (set) sp->repeat_last_n = (int32_t)x;
    if (!get_int(root, "seed", INT64_MIN, INT64_MAX, &x, &set, e)) return false;
    if (set) sp->seed = (uint64_t)x, g->seed_set = true;
    bool ignore_eos = false;
    if (!get_bool(root, "ignore_eos", &ignore_eos, e)) return false;
    if (ignore_eos) g->gen.stop_at_eog = 0;
    return parse_stop(root, g, e) && parse_bias(root, g, e);
}

static bool parse_common(json_t *root, bool chat, srv_gen_req *g, srv_perr *e) {
    json_t *v = json_object_get(root, "model");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) return bad_type(e, "model", "a string");
        g->model = json_string_value(v);
    }
    if (!get_bool(root, "stream", &g->stream, e)) return false;
    v = json_object_get(root, "stream_options");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return bad_type(e, "stream_options", "an object");
        if (!g->stream)
            return fail(e, 400, "stream_options", "invalid_value",
                        "'stream_options' is only allowed when 'stream' is true");
        json_t *u = json_object_get(v, "include_usage");
        if (u && !json_is_null(u) && !json_is_boolean(u))
            return bad_type(e, "stream_options.include_usage", "a boolean");
        g->include_usage = json_is_true(u);
    }
    long long x;
    bool set;
    g->gen.n_predict = INT32_MAX; /* until the context is full, as OpenAI */
    /* at least 1, as OpenAI (no -1 for "unlimited": leave it out) */
    if (!get_int(root, "max_tokens", 1, INT32_MAX, &x, &set, e)) return false;
    if (set) g->gen.n_predict = (int32_t)x, g->max_tokens_set = true;
    if (chat) {
        if (!get_int(root, "max_completion_tokens", 1, INT32_MAX, &x, &set, e)) return false;
        if (set) g->gen.n_predict = (int32_t)x, g->max_tokens_set = true;
    }
    return parse_sampling(root, g, e);
}

/* Content: a string, or an array of {"type":"text","text":...} parts. */
static bool message_content(json_t *c, size_t i, srv_gen_req *g, const char **out, srv_perr *e) {
    if (json_is_string(c)) {
        *out = json_string_value(c);
        return true;
    }
    if (json_is_null(c)) {
        *out = "";
        return true;
    }
    if (!json_is_array(c)) return bad_type(e, "messages.content", "a string or an array of parts");
    size_t total = 0, k;
    json_t *part;
    json_array_foreach(c, k, part) {
        json_t *t = json_object_get(part, "type"), *tx = json_object_get(part, "text");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") || !json_is_string(tx))
            return fail(e, 400, "messages.content", "unsupported_value",
                        "message %zu: only text content parts are supported", i);
        total += json_string_length(tx);
    }
    char *s = malloc(total + 1);
    if (!s) return fail(e, 500, NULL, NULL, "out of memory");
    g->owned[g->n_owned++] = s;
    size_t at = 0;
    json_array_foreach(c, k, part) {
        json_t *tx = json_object_get(part, "text");
        memcpy(s + at, json_string_value(tx), json_string_length(tx));
        at += json_string_length(tx);
    }
    s[at] = 0;
    *out = s;
    return true;
}

static bool parse_messages(json_t *root, srv_gen_req *g, srv_perr *e) {
    json_t *v = json_object_get(root, "messages");
    if (!v || json_is_null(v))
        return fail(e, 400, "messages", "missing_required_parameter", "'messages' is required");
    if (!json_is_array(v)) return bad_type(e, "messages", "an array");
    size_t n = json_array_size(v);
    if (!n) return fail(e, 400, "messages", "invalid_value", "'messages' is empty");
    g->msgs = calloc(n, sizeof *g->msgs);
    g->owned = calloc(n, sizeof *g->owned);
    if (!g->msgs || !g->owned) return fail(e, 500, NULL, NULL, "out of memory");
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
        if (!json_is_object(m)) return bad_type(e, "messages", "an array of objects");
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role)) return bad_type(e, "messages.role", "a string");
        const char *rs = json_string_value(role);
        if (!strcmp(rs, "developer")) rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return fail(e, 400, "messages.role", "unsupported_value",
                        "message %zu: role '%s' is not supported (system, user, assistant)", i, rs);
        g->msgs[i].role = rs;
        if (!message_content(json_object_get(m, "content"), i, g, &g->msgs[i].content, e))
            return false;
    }
    g->n_msgs = n;
    return true;
}

static bool parse_ids(json_t *a, srv_gen_req *g, srv_perr *e) {
    size_t n = json_array_size(a), i;
    json_t *x;
    if (!(g->prompt_ids = malloc((n ? n : 1) * sizeof *g->prompt_ids)))
        return fail(e, 500, NULL, NULL, "out of memory");
    json_array_foreach(a, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return fail(e, 400, "prompt", "invalid_type",
                        "'prompt' must be a string, an array of one string, or an array of "
                        "token ids");
        g->prompt_ids[i] = (int32_t)json_integer_value(x);
    }
    g->n_prompt_ids = (int32_t)n;
    return true;
}

static bool parse_prompt(json_t *root, srv_gen_req *g, srv_perr *e) {
    json_t *v = json_object_get(root, "prompt");
    if (!v || json_is_null(v))
        return fail(e, 400, "prompt", "missing_required_parameter", "'prompt' is required");
    /* llama.cpp's opt-in: by default control-token text is plain text */
    if (!get_bool(root, "parse_special", &g->parse_special, e)) return false;
    if (json_is_array(v) && json_array_size(v) == 1 &&
        (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0))))
        v = json_array_get(v, 0);
    if (json_is_string(v)) {
        g->prompt = json_string_value(v);
        g->prompt_len = json_string_length(v);
        return true;
    }
    if (json_is_array(v)) {
        if (json_array_size(v) > 1 && !json_is_integer(json_array_get(v, 0)))
            return fail(e, 400, "prompt", "unsupported_value",
                        "Kiln takes one prompt per request (got an array of %zu)",
                        json_array_size(v));
        return parse_ids(v, g, e);
    }
    return bad_type(e, "prompt", "a string, an array of one string, or an array of token ids");
}

bool srv_parse_gen(const char *body, size_t len, bool chat, srv_gen_req *g, srv_perr *e) {
    memset(g, 0, sizeof *g);
    g->chat = chat;
    g->gen = kiln_gen_default_params();
    g->gen.stop = g->stop;
    if (!(g->root = load(body, len, e))) return false;
    if (!check_keys(g->root, chat, e) || !parse_common(g->root, chat, g, e)) return false;
    g->gen.sampling.logit_bias = g->bias;
    return chat ? parse_messages(g->root, g, e) : parse_prompt(g->root, g, e);
}

void srv_gen_req_free(srv_gen_req *g) {
    for (size_t i = 0; i < g->n_owned; i++) free(g->owned[i]);
    free(g->owned);
    free(g->msgs);
    free(g->bias);
    free(g->prompt_ids);
    json_decref(g->root);
    memset(g, 0, sizeof *g);
}

/* ---- embeddings */

static const char *const emb_keys[] = {"model",      "input", "encoding_format",
                                       "dimensions", "user",  NULL};

static bool emb_ids(json_t *a, srv_emb_req *q, int32_t k, int32_t *at, srv_perr *e) {
    size_t i;
    json_t *x;
    if (!json_array_size(a))
        return fail(e, 400, "input", "invalid_value", "input %d is empty", (int)k);
    q->in[k].ids = q->ids_buf + *at;
    json_array_foreach(a, i, x) {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return fail(e, 400, "input", "invalid_type",
                        "input %d: token ids must be non-negative integers", (int)k);
        q->ids_buf[(*at)++] = (int32_t)json_integer_value(x);
    }
    q->in[k].n_ids = (int32_t)json_array_size(a);
    return true;
}

/* Counts the ids in input (an array of ids or of arrays of ids). */
static size_t count_ids(json_t *v) {
    size_t n = 0, i;
    json_t *x;
    json_array_foreach(v, i, x) n += json_is_array(x) ? json_array_size(x) : 1;
    return n;
}

bool srv_parse_emb(const char *body, size_t len, srv_emb_req *q, srv_perr *e) {
    memset(q, 0, sizeof *q);
    if (!(q->root = load(body, len, e))) return false;
    const char *key;
    json_t *v;
    json_object_foreach(q->root, key, v) {
        if (!in_list(key, emb_keys))
            return fail(e, 400, key, "unknown_parameter",
                        "unrecognized request argument supplied: %s", key);
    }
    v = json_object_get(q->root, "model");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) return bad_type(e, "model", "a string");
        q->model = json_string_value(v);
    }
    v = json_object_get(q->root, "encoding_format");
    if (v && !json_is_null(v)) {
        if (!json_is_string(v)) return bad_type(e, "encoding_format", "a string");
        const char *f = json_string_value(v);
        if (!strcmp(f, "base64"))
            q->b64 = true;
        else if (strcmp(f, "float"))
            return fail(e, 400, "encoding_format", "invalid_value",
                        "'encoding_format' is '%s'; it must be 'float' or 'base64'", f);
    }
    long long x;
    bool set;
    if (!get_int(q->root, "dimensions", 1, 1 << 20, &x, &set, e)) return false;
    if (set) q->dim = (int32_t)x;
    v = json_object_get(q->root, "input");
    if (!v || json_is_null(v))
        return fail(e, 400, "input", "missing_required_parameter", "'input' is required");
    const char *want = "a string, an array of strings, an array of token ids or an array of "
                       "arrays of token ids";
    if (json_is_string(v)) {
        if (!(q->in = calloc(1, sizeof *q->in))) return fail(e, 500, NULL, NULL, "out of memory");
        q->in[0].text = json_string_value(v);
        q->in[0].len = json_string_length(v);
        q->n = 1;
    } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (!n) return fail(e, 400, "input", "invalid_value", "'input' is empty");
        json_t *first = json_array_get(v, 0);
        bool ids = json_is_integer(first);
        size_t n_in = ids ? 1 : n;
        if (n_in > 2048)
            return fail(e, 400, "input", "invalid_value", "'input' has %zu items; at most 2048",
                        n_in);
        q->in = calloc(n_in, sizeof *q->in);
        q->ids_buf = malloc((count_ids(v) + 1) * sizeof *q->ids_buf);
        if (!q->in || !q->ids_buf) return fail(e, 500, NULL, NULL, "out of memory");
        int32_t at = 0;
        if (ids) {
            if (!emb_ids(v, q, 0, &at, e)) return false;
        } else {
            size_t i;
            json_t *it;
            json_array_foreach(v, i, it) {
                if (json_is_string(it)) {
                    q->in[i].text = json_string_value(it);
                    q->in[i].len = json_string_length(it);
                } else if (json_is_array(it)) {
                    if (!emb_ids(it, q, (int32_t)i, &at, e)) return false;
                } else {
                    return bad_type(e, "input", want);
                }
            }
        }
        q->n = (int32_t)n_in;
    } else {
        return bad_type(e, "input", want);
    }
    for (int32_t i = 0; i < q->n; i++)
        if (q->in[i].text && !q->in[i].len)
            return fail(e, 400, "input", "invalid_value", "input %d is an empty string", (int)i);
    return true;
}

void srv_emb_req_free(srv_emb_req *q) {
    free(q->in);
    free(q->ids_buf);
    json_decref(q->root);
    memset(q, 0, sizeof *q);
}
