/* serve.c - `kiln serve`: the OpenAI-compatible HTTP server. Parses the
 * options (and --config FILE, a JSON object with the same keys, applied
 * first so the command line overrides it), starts the server
 * (src/server/server.h), logs what it serves and where, and waits for
 * SIGINT/SIGTERM to stop gracefully: stop accepting, let requests in flight
 * finish within a deadline, exit 0.
 * Exit status: 0 after a signal, 1 on a runtime error (one line on
 * stderr), 2 on a usage error. */
#include "cli/commands.h"
#include "compute/kernels.h"
#include "compute/threadpool.h"
#include "base/log.h"
#include "kiln.h"
#include "server/server.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVE_MAX_MODELS 64
#define SERVE_MAX_CORS   32

struct serve_opts {
    srv_config c;
    srv_model_cfg models[SERVE_MAX_MODELS];
    char *names[SERVE_MAX_MODELS]; /* owned default names */
    const char *cors[SERVE_MAX_CORS + 1];
    char *cors_buf; /* the last --cors list, split in place */
    json_t *config; /* the --config document (strings point into it) */
    int32_t threads, ctx, parallel, queue;
    double timeout_s, shutdown_s;
};

static void serve_usage(FILE *out) {
    fprintf(out,
            "usage: kiln serve -m [NAME=]MODEL.gguf [-m ...] [options]\n\n"
            "Serves the models over an OpenAI-compatible HTTP API: /v1/chat/completions,\n"
            "/v1/completions, /v1/embeddings, /v1/models, /health and /metrics.\n\n"
            "  -m, --model [NAME=]FILE  a model (repeatable); NAME defaults to the file name\n"
            "                           without .gguf; the first is the default model\n"
            "      --config FILE        JSON with the same keys (models: [{name, path, pin}])\n"
            "      --host ADDR          address to bind (default 127.0.0.1)\n"
            "      --port N             port (default 8080; 0 picks a free one)\n"
            "  -t, --threads N          engine threads per model (default: physical cores)\n"
            "  -c, --ctx N              context positions per slot (default: the model's, at "
            "most 4096)\n"
            "  -np, --parallel N        generation slots per model (default 4)\n"
            "      --queue N            requests waiting for a slot before 429 (default 256)\n"
            "      --timeout S          a request's time limit in seconds (default: none)\n"
            "      --idle-timeout S     close keep-alive connections idle this long (default "
            "60)\n"
            "      --header-timeout S   a request's line and headers must arrive within S "
            "(default 10)\n"
            "      --body-min-rate B    bytes/s a body must average after the header timeout\n"
            "                           (default 1024; 0: no minimum)\n"
            "      --max-connections N  open connections before new requests get 503 and idle\n"
            "                           ones are closed (default 1024)\n"
            "      --max-conns-per-ip N connections from one address (default 64; 0: no "
            "limit,\n"
            "                           e.g. behind a reverse proxy)\n"
            "      --api-key KEY        require Authorization: Bearer KEY on /v1/* (and "
            "/metrics)\n"
            "      --metrics-key KEY    the key /metrics requires (default: the API key)\n"
            "      --public-metrics     /metrics needs no key even with --api-key\n"
            "      --diagnostics        serve /diagnostics/performance and\n"
            "                           /diagnostics/bottleneck-analysis (behind the API key)\n"
            "      --max-body BYTES     request body limit (default 8 MiB; 413 above)\n"
            "      --mem-budget BYTES   memory for loaded models; LRU unload above (default: no "
            "limit)\n"
            "      --cors ORIGIN,...    allow these browser origins ('*': any; default: off)\n"
            "      --embeddings         decoders (llama, qwen2) serve /v1/embeddings too "
            "(last-token\n"
            "                           pooling unless the model says otherwise)\n"
            "      --embed-wait-ms MS   longest an embedding request waits for company "
            "(default 2)\n"
            "      --http-threads N     HTTP worker threads (default 4)\n"
            "      --chat-template NAME chat template family for every model (default: each\n"
            "                           model's own; chatml when it has none)\n"
            "      --shutdown-timeout S time given to requests in flight at SIGTERM (default "
            "30)\n"
            "      --log-format F       text or json (one object per line) (default text)\n"
            "      --log-stats-interval S\n"
            "                           a stats line every S seconds while busy (default 10; 0: "
            "off)\n"
            "      --slow-request-ms N  log requests slower than N ms end-to-end with their\n"
            "                           breakdown, and count them (default 0: off)\n");
}

static bool parse_i64(const char *s, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_dbl(const char *s, double lo, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo)) return false;
    *out = v;
    return true;
}

/* NAME=FILE or FILE (name: the file name without .gguf). */
static int add_model(struct serve_opts *o, const char *spec, const char *name, int pin) {
    if (o->c.n_models == SERVE_MAX_MODELS) {
        fprintf(stderr, "kiln serve: too many models (at most %d)\n", SERVE_MAX_MODELS);
        return 2;
    }
    const char *path = spec;
    const char *eq = strchr(spec, '=');
    if (!name && eq && eq > spec && !memchr(spec, '/', (size_t)(eq - spec))) {
        path = eq + 1;
        name = spec; /* up to '=' */
    }
    size_t nlen;
    if (name == spec) {
        nlen = (size_t)(eq - spec);
    } else if (name) {
        nlen = strlen(name);
    } else {
        const char *base = strrchr(path, '/');
        name = base ? base + 1 : path;
        nlen = strlen(name);
        if (nlen > 5 && !strcmp(name + nlen - 5, ".gguf")) nlen -= 5;
    }
    char *n = malloc(nlen + 1);
    if (!n) return 1;
    memcpy(n, name, nlen);
    n[nlen] = 0;
    if (!*n || !*path) {
        free(n);
        fprintf(stderr, "kiln serve: bad model '%s' (want [NAME=]FILE)\n", spec);
        return 2;
    }
    o->names[o->c.n_models] = n;
    o->models[o->c.n_models++] = (srv_model_cfg){n, path, pin};
    return 0;
}

static int set_cors(struct serve_opts *o, const char *v) {
    size_t n = strlen(v);
    free(o->cors_buf);
    if (!(o->cors_buf = malloc(n + 1))) return 1;
    memcpy(o->cors_buf, v, n + 1);
    int k = 0;
    for (char *save = NULL, *t = strtok_r(o->cors_buf, ",", &save); t;
         t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        if (!*t) continue;
        if (k == SERVE_MAX_CORS) {
            fprintf(stderr, "kiln serve: --cors: at most %d origins\n", SERVE_MAX_CORS);
            return 2;
        }
        o->cors[k++] = t;
    }
    o->cors[k] = NULL;
    o->c.cors = k ? o->cors : NULL;
    return 0;
}

/* One option with value v (shared by argv and the config file). 0: ok; 2:
 * bad value or unknown option (printed). */
static int apply(struct serve_opts *o, const char *a, const char *v) {
    long long l;
    double d;
    bool ok = true;
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
        return add_model(o, v, NULL, 0);
    else if (!strcmp(a, "--host"))
        o->c.host = v;
    else if (!strcmp(a, "--port"))
        ok = parse_i64(v, 0, 65535, &l) && ((o->c.port = (int)l), true);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        ok = parse_i64(v, 1, 1024, &l) && ((o->threads = (int32_t)l), true);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        ok = parse_i64(v, 8, 1 << 24, &l) && ((o->ctx = (int32_t)l), true);
    else if (!strcmp(a, "-np") || !strcmp(a, "--parallel"))
        ok = parse_i64(v, 1, 1024, &l) && ((o->parallel = (int32_t)l), true);
    else if (!strcmp(a, "--queue"))
        ok = parse_i64(v, 1, 1 << 20, &l) && ((o->queue = (int32_t)l), true);
    else if (!strcmp(a, "--timeout"))
        ok = parse_dbl(v, 0, &o->timeout_s);
    else if (!strcmp(a, "--idle-timeout"))
        ok = parse_dbl(v, 1, &o->c.conn_timeout_s);
    else if (!strcmp(a, "--header-timeout"))
        ok = parse_dbl(v, 1, &o->c.header_timeout_s);
    else if (!strcmp(a, "--body-min-rate"))
        ok = parse_dbl(v, 0, &d) && ((o->c.body_min_rate = d > 0 ? d : -1), true);
    else if (!strcmp(a, "--max-connections"))
        ok = parse_i64(v, 1, 1 << 20, &l) && ((o->c.max_conns = (int)l), true);
    else if (!strcmp(a, "--max-conns-per-ip"))
        ok = parse_i64(v, 0, 1 << 20, &l) && ((o->c.max_conns_per_ip = l ? (int)l : -1), true);
    else if (!strcmp(a, "--metrics-key"))
        ok = *v && ((o->c.metrics_key = v), true);
    else if (!strcmp(a, "--shutdown-timeout"))
        ok = parse_dbl(v, 0, &o->shutdown_s);
    else if (!strcmp(a, "--api-key"))
        ok = *v && ((o->c.api_key = v), true);
    else if (!strcmp(a, "--max-body"))
        ok = parse_i64(v, 1, 1LL << 40, &l) && ((o->c.max_body = (size_t)l), true);
    else if (!strcmp(a, "--mem-budget"))
        ok = parse_i64(v, 0, 1LL << 50, &l) && ((o->c.reg.mem_budget = (uint64_t)l), true);
    else if (!strcmp(a, "--cors")) {
        int r = set_cors(o, v);
        if (r) return r;
    } else if (!strcmp(a, "--embed-wait-ms"))
        ok = parse_dbl(v, -1, &d) && ((o->c.reg.batcher.max_wait_ms = d < 0 ? -1 : d), true);
    else if (!strcmp(a, "--http-threads"))
        ok = parse_i64(v, 1, 256, &l) && ((o->c.http_threads = (int)l), true);
    else if (!strcmp(a, "--chat-template"))
        o->c.chat_template = v;
    else if (!strcmp(a, "--log-format")) {
        int f = kiln_log_format_parse(v);
        ok = f >= 0;
        if (ok) kiln_log_set_format((enum kiln_log_format)f); /* before any thread starts */
    } else if (!strcmp(a, "--log-stats-interval"))
        ok = parse_dbl(v, 0, &o->c.log_stats_interval_s);
    else if (!strcmp(a, "--slow-request-ms"))
        ok = parse_dbl(v, 0, &o->c.slow_request_ms);
    else {
        fprintf(stderr, "kiln serve: unknown option: %s (kiln serve --help)\n", a);
        return 2;
    }
    if (ok) return 0;
    fprintf(stderr, "kiln serve: bad value for %s: '%s'\n", a, v);
    return 2;
}

/* The config file: {"models": [{"name", "path", "pin"}], "host": ..., ...}
 * with the long option names as keys (underscores or dashes). */
static int load_config(struct serve_opts *o, const char *file) {
    json_error_t je;
    if (!(o->config = json_load_file(file, JSON_REJECT_DUPLICATES, &je))) {
        fprintf(stderr, "kiln serve: --config %s: %s (line %d)\n", file, je.text, je.line);
        return 2;
    }
    if (!json_is_object(o->config)) {
        fprintf(stderr, "kiln serve: --config %s: want a JSON object\n", file);
        return 2;
    }
    const char *key;
    json_t *v;
    json_object_foreach(o->config, key, v) {
        if (!strcmp(key, "models")) {
            size_t i;
            json_t *m;
            if (!json_is_array(v)) goto bad;
            json_array_foreach(v, i, m) {
                json_t *p = json_object_get(m, "path"), *n = json_object_get(m, "name");
                if (!json_is_string(p) || (n && !json_is_string(n))) goto bad;
                int r = add_model(o, json_string_value(p), n ? json_string_value(n) : NULL,
                                  json_is_true(json_object_get(m, "pin")));
                if (r) return r;
            }
            continue;
        }
        if (!strcmp(key, "embeddings")) {
            if (!json_is_boolean(v)) goto bad;
            o->c.reg.decoder_embeddings = json_is_true(v);
            continue;
        }
        if (!strcmp(key, "diagnostics")) {
            if (!json_is_boolean(v)) goto bad;
            o->c.diagnostics = json_is_true(v);
            continue;
        }
        if (!strcmp(key, "public_metrics") || !strcmp(key, "public-metrics")) {
            if (!json_is_boolean(v)) goto bad;
            o->c.public_metrics = json_is_true(v);
            continue;
        }
        char opt[64], val[64];
        snprintf(opt, sizeof opt, "--%s", key);
        for (char *c = opt; *c; c++)
            if (*c == '_') *c = '-';
        const char *sv = val;
        if (json_is_string(v))
            sv = json_string_value(v);
        else if (json_is_integer(v))
            snprintf(val, sizeof val, "%lld", (long long)json_integer_value(v));
        else if (json_is_real(v))
            snprintf(val, sizeof val, "%.17g", json_real_value(v));
        else if (json_is_array(v) && !strcmp(key, "cors")) {
            /* an array of origins: joined with commas */
            size_t i, n = 0;
            json_t *x;
            char *buf = val;
            json_array_foreach(v, i, x) {
                if (!json_is_string(x)) goto bad;
                int w =
                    snprintf(buf + n, sizeof val - n, "%s%s", i ? "," : "", json_string_value(x));
                if (w < 0 || (size_t)w >= sizeof val - n) goto bad;
                n += (size_t)w;
            }
        } else
            goto bad;
        if (!strcmp(opt, "--config")) goto bad;
        /* options kept as strings point into the document: a number
         * formatted into val would not outlive this loop */
        static const char *const keep[] = {"--host",          "--api-key",    "--metrics-key",
                                           "--chat-template", "--log-format", NULL};
        for (const char *const *k = keep; *k; k++)
            if (!strcmp(opt, *k) && !json_is_string(v)) goto bad;
        int r = apply(o, opt, sv);
        if (r) return r;
        continue;
    bad:
        fprintf(stderr, "kiln serve: --config %s: bad value for '%s'\n", file, key);
        return 2;
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct serve_opts *o) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            serve_usage(stdout);
            return -1;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "kiln serve: --config needs a value\n");
                return 2;
            }
            int r = load_config(o, argv[i + 1]);
            if (r) return r;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--embeddings")) { /* the options without a value */
            o->c.reg.decoder_embeddings = 1;
            continue;
        }
        if (!strcmp(a, "--public-metrics")) {
            o->c.public_metrics = 1;
            continue;
        }
        if (!strcmp(a, "--diagnostics")) {
            o->c.diagnostics = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "kiln serve: %s needs a value (kiln serve --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--config")) continue;
        int r = apply(o, a, v);
        if (r) return r;
    }
    if (!o->c.n_models) {
        fprintf(stderr, "kiln serve: no models (give -m [NAME=]FILE or --config FILE)\n\n");
        serve_usage(stderr);
        return 2;
    }
    for (int i = 0; i < o->c.n_models; i++)
        for (int k = 0; k < i; k++)
            if (!strcmp(o->models[i].name, o->models[k].name)) {
                fprintf(stderr, "kiln serve: two models are named '%s' (use NAME=FILE)\n",
                        o->models[i].name);
                return 2;
            }
    return 0;
}

/* Start-up lines go through the log (its format and prefix). */
static void log_start(const struct serve_opts *o) {
    const kiln_sched_params *sp = &o->c.reg.sched;
    char list[2048];
    size_t n = 0;
    for (int i = 0; i < o->c.n_models && n < sizeof list; i++) {
        int w = snprintf(list + n, sizeof list - n, " %s=%s%s", o->models[i].name,
                         o->models[i].path, o->models[i].pin ? " (pinned)" : "");
        if (w < 0) break;
        n += (size_t)w;
    }
    if (n >= sizeof list) n = sizeof list - 1;
    list[n] = 0;
    KILN_LOGI("kiln serve %s: %d model(s):%s", kiln_version(), o->c.n_models, list);
    char ctx[48] = "the model's context (at most 4096)";
    if (sp->n_ctx > 0) snprintf(ctx, sizeof ctx, "%d", (int)sp->n_ctx);
    KILN_LOGI("kiln serve: engine threads %d%s, kernels %s (by ISA rank; per weight type as "
              "measured where tuned), %d slot(s) of %s positions, queue %d, "
              "HTTP threads %d%s%s",
              sp->n_threads > 0 ? (int)sp->n_threads : kiln_cpu_physical_cores(),
              sp->n_threads > 0 ? "" : " (the physical cores)",
              kiln_isa_name(kiln_kernels_best()->isa), sp->n_slots, ctx, sp->max_queue,
              o->c.http_threads ? o->c.http_threads : 4, o->c.api_key ? ", API key required" : "",
              o->c.cors ? ", CORS on" : "");
}

static void log_address(const struct serve_opts *o, int port) {
    const char *h = o->c.host ? o->c.host : "127.0.0.1";
    bool v6 = strchr(h, ':') != NULL;
    KILN_LOGI("kiln serve: listening on http://%s%s%s:%d", v6 ? "[" : "", h, v6 ? "]" : "", port);
}

int cmd_serve(int argc, char **argv) {
    struct serve_opts o;
    memset(&o, 0, sizeof o);
    o.c.port = 8080;
    o.c.models = o.models;
    o.c.reg = kiln_registry_default_params();
    o.shutdown_s = 30;
    o.c.log_stats_interval_s = 10;
    srv *s = NULL;
    int rc = parse_args(argc, argv, &o);
    if (rc) {
        rc = rc < 0 ? 0 : rc;
        goto done;
    }
    kiln_sched_params *sp = &o.c.reg.sched;
    if (o.threads) sp->n_threads = o.threads, o.c.reg.batcher.embed.n_threads = o.threads;
    if (o.ctx) sp->n_ctx = o.ctx;
    if (o.parallel) sp->n_slots = o.parallel;
    if (o.queue) sp->max_queue = o.queue;
    if (o.timeout_s > 0) sp->timeout_s = o.timeout_s;

    /* Signals are taken by sigwait below: block them in every thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    kiln_status st;
    log_start(&o);
    if (!(s = srv_create(&o.c, &st))) {
        KILN_LOGE("kiln serve: %s", kiln_last_error());
        rc = 1;
        goto done;
    }
    log_address(&o, srv_port(s));
    int sig = 0;
    sigwait(&set, &sig);
    KILN_LOGI("kiln serve: %s: stopping (up to %.0f s for requests in flight)",
              sig == SIGINT ? "SIGINT" : "SIGTERM", o.shutdown_s);
    srv_shutdown(s, o.shutdown_s);
    KILN_LOGI("kiln serve: stopped");
    rc = 0;
done:
    srv_destroy(s);
    for (int i = 0; i < o.c.n_models; i++) free(o.names[i]);
    free(o.cors_buf);
    json_decref(o.config);
    return rc;
}
