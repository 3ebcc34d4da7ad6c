/* bench.c - `kiln bench`: load against any OpenAI-compatible server (chat,
 * completions or embeddings), closed loop at given concurrencies or open
 * loop at given request rates, a summary table per level (and the knee of a
 * sweep), and JSON / CSV / HTML reports; `kiln bench compare A.json B.json`
 * puts two runs side by side. The work is in src/bench/.
 * Exit status: 0 when the runs completed (failed requests are counted in
 * the report, not an exit status), 1 on a runtime error (bad prompt file,
 * unwritable output), 2 on a usage error. */
#include "bench/bench.h"
#include "cli/commands.h"
#include "kiln.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LEVELS 64

struct bench_cli {
    const char *url, *json_path, *csv_path, *html_path, *slo_spec;
    bench_workload_opts wo;
    bench_run_opts ro;
    bench_slo slo;
    double levels[MAX_LEVELS];
    int n_levels;
    bool have_conc, have_rate, no_models;
    json_t *extra; /* --extra-body (owned) */
    double slo_target;
};

static void bench_usage(FILE *out) {
    fprintf(out,
            "usage: kiln bench --url URL [options]\n"
            "       kiln bench compare A.json B.json\n\n"
            "Sends load to an OpenAI-compatible server (Kiln, llama-server, vLLM, Ollama...)\n"
            "and reports TTFT, inter-token latency (ITL), time per output token (TPOT),\n"
            "end-to-end latency, throughput and goodput.\n\n"
            "Target and workload:\n"
            "  --url URL               server base URL (http://host:port) or full endpoint\n"
            "  --workload W            chat (default), completions or embeddings\n"
            "  --model NAME            model field (default: first of GET /v1/models)\n"
            "  --api-key KEY           sent as a Bearer token (default: $OPENAI_API_KEY)\n"
            "  --prompts FILE          JSONL: {\"prompt\": ...} or {\"messages\": [...]},\n"
            "                          optional \"max_tokens\" (default: synthetic prompts)\n"
            "  --input-tokens N        synthetic prompt length in ~1-token words (default 32)\n"
            "  --prompt-size S         small (32), medium (256) or large (1024) tokens\n"
            "  --max-tokens N          max_tokens for every request (default 64; 0: file's)\n"
            "  --ignore-eos            ask for exactly max_tokens: send \"ignore_eos\": true\n"
            "                          (llama.cpp, vLLM, Kiln) and \"min_tokens\" (vLLM)\n"
            "  --eos-fields LIST       which of those to send (default ignore_eos,min_tokens;\n"
            "                          servers that reject unknown fields need ignore_eos)\n"
            "  --extra-body JSON       fields merged into every request, e.g.\n"
            "                          '{\"temperature\": 0}'\n"
            "  --no-stream             chat/completions without streaming (no TTFT/ITL)\n"
            "  --inputs-per-request N  embeddings: inputs per request (default 1)\n"
            "  --seed N                synthetic prompts and arrival times\n\n"
            "Load (a list like 1,2,4,8 runs a sweep, one level after another):\n"
            "  --concurrency C[,..]    closed loop: C clients back to back (default 1)\n"
            "  --rate R[,..]           open loop: R requests/s, Poisson arrivals\n"
            "  --constant-rate         open loop with even gaps instead of Poisson\n"
            "  --burst B               open loop: B requests per arrival (default 1)\n"
            "  --requests N            measured requests per level (default 100)\n"
            "  --duration S            or: seconds per level (from the first measured send)\n"
            "  --warmup N              requests before the measured ones, not counted\n"
            "  --timeout S             per request (default 60; 0: none)\n"
            "  --max-connections N     cap on open connections (default: none)\n"
            "  --spin-us N             open loop: poll instead of sleeping N us before each\n"
            "                          arrival, so sends are on time (default 100; 0: off)\n\n"
            "Objectives and reports:\n"
            "  --slo SPEC              e.g. ttft=500ms,tpot=50ms,e2e=10s (units us, ms, s)\n"
            "  --slo-target F          a level meets the SLOs when this fraction of its\n"
            "                          requests does (default 0.95); the knee is the\n"
            "                          highest level that meets them\n"
            "  --json FILE             every aggregate, parameters, the server's models\n"
            "  --csv FILE              one row per request\n"
            "  --html FILE             self-contained report with plots\n"
            "  --no-models             do not GET /v1/models first\n"
            "  -q, --quiet             no progress line\n\n"
            "Latency counts from the scheduled send time, so a server that falls behind an\n"
            "open-loop rate shows its queueing. Failed requests are counted by kind\n"
            "(connect, timeout, http_4xx, http_5xx, bad_response, network).\n");
}

static bool parse_num(const char *s, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

static bool parse_list(struct bench_cli *c, const char *s, double lo) {
    char buf[1024];
    if (strlen(s) >= sizeof buf) return false;
    memcpy(buf, s, strlen(s) + 1);
    c->n_levels = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (c->n_levels == MAX_LEVELS || !parse_num(t, lo, 1e7, &c->levels[c->n_levels]))
            return false;
        c->n_levels++;
    }
    return c->n_levels > 0;
}

static int bad_value(const char *opt, const char *v) {
    fprintf(stderr, "kiln bench: bad value '%s' for %s\n", v, opt);
    return 2;
}

/* One option at argv[*i]; 0 ok, 2 usage error (printed). */
static int parse_opt(int argc, char **argv, int *i, struct bench_cli *c) {
    const char *a = argv[*i];
    double d;
    if (!strcmp(a, "--ignore-eos")) return c->wo.ignore_eos = true, 0;
    if (!strcmp(a, "--no-stream")) return c->wo.stream = false, 0;
    if (!strcmp(a, "--constant-rate")) return c->ro.poisson = false, 0;
    if (!strcmp(a, "--no-models")) return c->no_models = true, 0;
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) return c->ro.progress = false, 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "kiln bench: %s needs a value\n", a);
        return 2;
    }
    const char *v = argv[++*i];
    if (!strcmp(a, "--url")) return c->url = v, 0;
    if (!strcmp(a, "--model")) return c->wo.model = v, 0;
    if (!strcmp(a, "--api-key")) return c->ro.api_key = v, 0;
    if (!strcmp(a, "--prompts")) return c->wo.prompt_file = v, 0;
    if (!strcmp(a, "--json")) return c->json_path = v, 0;
    if (!strcmp(a, "--csv")) return c->csv_path = v, 0;
    if (!strcmp(a, "--html")) return c->html_path = v, 0;
    if (!strcmp(a, "--eos-fields")) {
        c->wo.eos_fields = 0;
        for (const char *p = v; *p;) {
            size_t n = strcspn(p, ",");
            if (n == 10 && !strncmp(p, "ignore_eos", n))
                c->wo.eos_fields |= BENCH_EOS_IGNORE_EOS;
            else if (n == 10 && !strncmp(p, "min_tokens", n))
                c->wo.eos_fields |= BENCH_EOS_MIN_TOKENS;
            else
                return bad_value(a, v);
            p += n + (p[n] == ',');
        }
        return c->wo.eos_fields ? 0 : bad_value(a, v);
    }
    if (!strcmp(a, "--extra-body")) {
        json_decref(c->extra);
        c->extra = json_loads(v, 0, NULL);
        if (!json_is_object(c->extra)) {
            fprintf(stderr, "kiln bench: --extra-body needs a JSON object, got '%s'\n", v);
            return 2;
        }
        c->wo.extra = c->extra;
        return 0;
    }
    if (!strcmp(a, "--workload")) return bench_kind_from_name(v, &c->wo.kind) ? 0 : bad_value(a, v);
    if (!strcmp(a, "--slo")) {
        c->slo_spec = v;
        return bench_slo_parse(v, &c->slo) ? 0 : bad_value(a, v);
    }
    if (!strcmp(a, "--prompt-size")) {
        if (!strcmp(v, "small")) return c->wo.input_tokens = 32, 0;
        if (!strcmp(v, "medium")) return c->wo.input_tokens = 256, 0;
        if (!strcmp(v, "large")) return c->wo.input_tokens = 1024, 0;
        return bad_value(a, v);
    }
    if (!strcmp(a, "--concurrency")) {
        c->have_conc = true;
        return parse_list(c, v, 1) ? 0 : bad_value(a, v);
    }
    if (!strcmp(a, "--rate")) {
        c->have_rate = true;
        return parse_list(c, v, 1e-3) ? 0 : bad_value(a, v);
    }
    enum { I32, U64, DBL };
    struct {
        const char *name;
        double lo, hi;
        int type;
        void *dst;
    } nums[] = {
        {"--input-tokens", 1, 1 << 20, I32, &c->wo.input_tokens},
        {"--max-tokens", 0, 1 << 20, I32, &c->wo.max_tokens},
        {"--inputs-per-request", 1, 1 << 16, I32, &c->wo.inputs_per_request},
        {"--seed", 0, 1e15, U64, &c->ro.seed},
        {"--burst", 1, 1 << 20, I32, &c->ro.burst},
        {"--requests", 1, 1e12, U64, &c->ro.n_requests},
        {"--duration", 1e-3, 1e7, DBL, &c->ro.duration_s},
        {"--warmup", 0, 1e12, U64, &c->ro.warmup},
        {"--timeout", 0, 1e6, DBL, &c->ro.timeout_s},
        {"--max-connections", 1, 1 << 20, I32, &c->ro.max_connections},
        {"--slo-target", 0, 1, DBL, &c->slo_target},
        {"--spin-us", 0, 1e6, I32, &c->ro.spin_us},
    };
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        if (strcmp(a, nums[k].name)) continue;
        if (!parse_num(v, nums[k].lo, nums[k].hi, &d)) return bad_value(a, v);
        if (nums[k].type == I32)
            *(int *)nums[k].dst = (int)d;
        else if (nums[k].type == U64)
            *(uint64_t *)nums[k].dst = (uint64_t)d;
        else
            *(double *)nums[k].dst = d;
        if (nums[k].dst == &c->ro.seed) c->wo.seed = c->ro.seed;
        return 0;
    }
    fprintf(stderr, "kiln bench: unknown option %s\n", a);
    return 2;
}

static int parse_args(int argc, char **argv, struct bench_cli *c) {
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            bench_usage(stdout);
            return -1;
        }
        int r = parse_opt(argc, argv, &i, c);
        if (r) return r;
    }
    if (!c->url) {
        fprintf(stderr, "kiln bench: --url is required (kiln bench --help)\n");
        return 2;
    }
    if (c->have_conc && c->have_rate) {
        fprintf(stderr, "kiln bench: give --concurrency or --rate, not both\n");
        return 2;
    }
    if (!c->have_conc && !c->have_rate) c->levels[0] = 1, c->n_levels = 1;
    for (int i = 0; i < c->n_levels && !c->have_rate; i++)
        if (c->levels[i] != floor(c->levels[i]) || c->levels[i] > 1000000) {
            fprintf(stderr, "kiln bench: concurrency %g is not a whole number of clients\n",
                    c->levels[i]);
            return 2;
        }
    c->ro.mode = c->have_rate ? BENCH_OPEN : BENCH_CLOSED;
    if (!c->ro.n_requests && !(c->ro.duration_s > 0)) c->ro.n_requests = 100;
    return 0;
}

/* The endpoint for the workload and the models URL from --url. */
static void make_urls(const char *url, bench_kind kind, char *ep, size_t ep_cap, char *models,
                      size_t m_cap) {
    const char *path = kind == BENCH_CHAT          ? "/chat/completions"
                       : kind == BENCH_COMPLETIONS ? "/completions"
                                                   : "/embeddings";
    size_t n = strlen(url);
    while (n && url[n - 1] == '/') n--;
    const char *v1 = NULL;
    for (const char *p = url; (p = strstr(p, "/v1")) && p < url + n; p++)
        if (p + 3 == url + n || p[3] == '/') v1 = p;
    if (v1 && v1 + 3 < url + n) { /* a full endpoint was given */
        snprintf(ep, ep_cap, "%.*s", (int)n, url);
        snprintf(models, m_cap, "%.*s/models", (int)(v1 + 3 - url), url);
    } else if (v1) {
        snprintf(ep, ep_cap, "%.*s%s", (int)n, url, path);
        snprintf(models, m_cap, "%.*s/models", (int)n, url);
    } else {
        snprintf(ep, ep_cap, "%.*s/v1%s", (int)n, url, path);
        snprintf(models, m_cap, "%.*s/v1/models", (int)n, url);
    }
}

static json_t *params_json(const struct bench_cli *c, const char *endpoint) {
    json_t *levels = json_array();
    for (int i = 0; i < c->n_levels; i++) json_array_append_new(levels, json_real(c->levels[i]));
    json_t *slo = json_pack("{s:f, s:f, s:f, s:f}", "ttft_ms", c->slo.ttft_ms, "tpot_ms",
                            c->slo.tpot_ms, "e2e_ms", c->slo.e2e_ms, "target", c->slo_target);
    json_t *p = json_pack(
        "{s:s, s:s, s:s, s:o, s:f, s:I, s:I, s:f, s:i, s:i, s:b, s:b, s:i, s:b, s:i, s:I, s:o}",
        "url", endpoint, "workload", bench_kind_name(c->wo.kind), "mode",
        c->ro.mode == BENCH_OPEN ? "rate" : "concurrency", "levels", levels, "duration_s",
        c->ro.duration_s, "requests", (json_int_t)c->ro.n_requests, "warmup",
        (json_int_t)c->ro.warmup, "timeout_s", c->ro.timeout_s, "max_tokens", c->wo.max_tokens,
        "input_tokens", c->wo.prompt_file ? 0 : c->wo.input_tokens, "ignore_eos", c->wo.ignore_eos,
        "stream", c->wo.stream && c->wo.kind != BENCH_EMBEDDINGS, "inputs_per_request",
        c->wo.inputs_per_request, "poisson", c->ro.poisson, "burst", c->ro.burst, "seed",
        (json_int_t)c->ro.seed, "slo", slo);
    json_object_set_new(p, "model", c->wo.model ? json_string(c->wo.model) : json_null());
    json_t *eos = json_array();
    if (c->wo.eos_fields & BENCH_EOS_IGNORE_EOS)
        json_array_append_new(eos, json_string("ignore_eos"));
    if (c->wo.eos_fields & BENCH_EOS_MIN_TOKENS)
        json_array_append_new(eos, json_string("min_tokens"));
    json_object_set_new(p, "eos_fields", eos);
    json_object_set_new(p, "extra_body", c->extra ? json_deep_copy(c->extra) : json_null());
    json_object_set_new(p, "prompts",
                        c->wo.prompt_file ? json_string(c->wo.prompt_file) : json_null());
    return p;
}

static bool meets(const bench_stats *s, const struct bench_cli *c) {
    return s->n && (double)s->n_good / (double)s->n >= c->slo_target;
}

static void table_header(FILE *f, bool rate) {
    fprintf(f, "%-8s %7s %6s %9s %10s %9s %9s %9s %9s %9s %9s %8s\n", rate ? "rate" : "conc", "ok",
            "errors", "req/s", "out tok/s", "ttft p50", "ttft p99", "tpot p50", "tpot p99",
            "e2e p50", "e2e p99", "goodput");
}

static void table_row(FILE *f, double level, const bench_stats *s) {
    fprintf(f, "%-8g %7llu %6llu %9.2f %10.1f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %7.1f%%\n", level,
            (unsigned long long)s->n_ok, (unsigned long long)(s->n - s->n_ok), s->rps, s->out_tps,
            hist_quantile(&s->ttft.h, 0.5), hist_quantile(&s->ttft.h, 0.99),
            hist_quantile(&s->tpot.h, 0.5), hist_quantile(&s->tpot.h, 0.99),
            hist_quantile(&s->e2e.h, 0.5), hist_quantile(&s->e2e.h, 0.99),
            s->n ? 100.0 * (double)s->n_good / (double)s->n : 0.0);
}

static int write_json_file(const char *path, json_t *doc) {
    if (json_dump_file(doc, path, JSON_INDENT(1) | JSON_REAL_PRECISION(10))) {
        fprintf(stderr, "kiln bench: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

/* Ctrl-C ends the current level early; the reports are still written. A
 * second one kills the process (the handler is reset). */
static volatile int interrupted;
static void on_sigint(int sig) {
    interrupted = 1;
    signal(sig, SIG_DFL);
}

static int run_levels(struct bench_cli *c, bench_workload *w, json_t *doc) {
    bench_run *runs = calloc(MAX_LEVELS, sizeof *runs); /* ~66 KiB each (a histogram) */
    bench_stats *stats[MAX_LEVELS] = {0};
    int n_done = 0, rc = 0;
    if (!runs) {
        fprintf(stderr, "kiln bench: out of memory\n");
        return 1;
    }
    bool rate = c->ro.mode == BENCH_OPEN;
    json_t *jruns = json_array();
    json_object_set_new(doc, "runs", jruns);
    c->ro.stop = &interrupted;
    signal(SIGINT, on_sigint);
    uint64_t next_body = 0; /* each level's prompts follow the previous level's */
    for (int i = 0; i < c->n_levels && !interrupted; i++) {
        bench_run_opts ro = c->ro;
        ro.first_body = next_body;
        if (rate)
            ro.rate = c->levels[i];
        else
            ro.concurrency = (int)c->levels[i];
        printf("== %s %g ==\n", rate ? "rate" : "concurrency", c->levels[i]);
        fflush(stdout);
        kiln_status st = bench_run_load(&ro, w, &runs[i]);
        if (st) {
            fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
            bench_run_free(&runs[i]);
            rc = 1;
            break;
        }
        n_done++;
        next_body += runs[i].n_recs;
        stats[i] = bench_stats_compute(&runs[i], &c->slo);
        if (!stats[i]) {
            fprintf(stderr, "kiln bench: out of memory\n");
            rc = 1;
            break;
        }
        bench_print_summary(stdout, stats[i], &c->slo);
        json_t *jr = bench_run_json(&runs[i], stats[i]);
        json_object_set_new(jr, "level", json_real(c->levels[i]));
        json_array_append_new(jruns, jr);
        fflush(stdout);
    }
    signal(SIGINT, SIG_DFL);
    if (interrupted) fprintf(stderr, "kiln bench: interrupted; reporting what was measured\n");
    bool have_slo = c->slo.ttft_ms > 0 || c->slo.tpot_ms > 0 || c->slo.e2e_ms > 0;
    int knee = -1, best = -1;
    /* peak throughput in output tokens/s, or requests/s for embeddings */
    bool by_tokens = false;
    for (int i = 0; i < n_done && stats[i]; i++) by_tokens |= stats[i]->out_tps > 0;
    for (int i = 0; i < n_done && stats[i]; i++) {
        if (have_slo && meets(stats[i], c) && (knee < 0 || c->levels[i] > c->levels[knee]))
            knee = i;
        double t = by_tokens ? stats[i]->out_tps : stats[i]->rps;
        if (best < 0 || t > (by_tokens ? stats[best]->out_tps : stats[best]->rps)) best = i;
    }
    if (n_done > 1) {
        printf("\n");
        table_header(stdout, rate);
        for (int i = 0; i < n_done && stats[i]; i++) table_row(stdout, c->levels[i], stats[i]);
        if (!have_slo)
            printf("knee: n/a (give --slo to find the highest level meeting it)\n");
        else if (knee < 0)
            printf("knee: none (no level meets the SLOs for %.0f%% of requests)\n",
                   100 * c->slo_target);
        else
            printf("knee: %s %g (highest level where %.0f%% of requests meet the SLOs)\n",
                   rate ? "rate" : "concurrency", c->levels[knee], 100 * c->slo_target);
        if (best >= 0)
            printf("peak throughput: %s %g\n", rate ? "rate" : "concurrency", c->levels[best]);
    }
    json_object_set_new(doc, "knee", knee >= 0 ? json_real(c->levels[knee]) : json_null());
    if (!rc && c->csv_path) {
        const bench_run *rp[MAX_LEVELS];
        for (int i = 0; i < n_done; i++) rp[i] = &runs[i];
        if (bench_write_csv(c->csv_path, rp, c->levels, (size_t)n_done)) {
            fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
            rc = 1;
        }
    }
    for (int i = 0; i < n_done; i++) {
        bench_run_free(&runs[i]);
        free(stats[i]);
    }
    free(runs);
    return rc;
}

static int cmd_compare(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: kiln bench compare A.json B.json\n");
        return 2;
    }
    int n = bench_compare(stdout, argv[1], argv[2]);
    if (n < 0) {
        fprintf(stderr, "kiln bench compare: %s\n", kiln_last_error());
        return 1;
    }
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "compare")) return cmd_compare(argc - 1, argv + 1);
    struct bench_cli c = {
        .wo = {.kind = BENCH_CHAT,
               .input_tokens = 32,
               .max_tokens = 64,
               .stream = true,
               .inputs_per_request = 1,
               .eos_fields = BENCH_EOS_IGNORE_EOS | BENCH_EOS_MIN_TOKENS},
        .ro = {.poisson = true, .burst = 1, .timeout_s = 60, .progress = true, .spin_us = -1},
        .slo_target = 0.95};
    c.ro.api_key = getenv("OPENAI_API_KEY");
    int r = parse_args(argc, argv, &c);
    if (r) {
        json_decref(c.extra);
        return r < 0 ? 0 : r;
    }
    char endpoint[2048], models_url[2048];
    make_urls(c.url, c.wo.kind, endpoint, sizeof endpoint, models_url, sizeof models_url);
    c.ro.url = endpoint;
    json_t *models = c.no_models ? NULL : bench_http_get_json(models_url, c.ro.api_key, 3);
    const char *first = json_string_value(
        json_object_get(json_array_get(json_object_get(models, "data"), 0), "id"));
    if (!c.wo.model && first) c.wo.model = first;
    bench_workload w;
    if (bench_workload_init(&w, &c.wo)) {
        fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
        json_decref(models);
        json_decref(c.extra);
        return 1;
    }
    long nofile = bench_raise_nofile();
    double top = 0;
    for (int i = 0; i < c.n_levels; i++) top = c.levels[i] > top ? c.levels[i] : top;
    if (c.ro.mode == BENCH_CLOSED && nofile > 0 && top + 16 > nofile)
        fprintf(stderr, "kiln bench: warning: concurrency %g is above the open-file limit %ld\n",
                top, nofile);
    printf("kiln bench %s: %s %s, model %s, %s\n", kiln_version(), bench_kind_name(c.wo.kind),
           endpoint, c.wo.model ? c.wo.model : "(none)",
           c.ro.n_requests ? "bounded by requests" : "bounded by duration");
    char started[64];
    time_t now = time(NULL);
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    json_t *doc =
        json_pack("{s:s, s:s, s:s, s:o}", "tool", "kiln bench", "kiln_version", kiln_version(),
                  "started_at", started, "params", params_json(&c, endpoint));
    json_object_set_new(doc, "server_models", models ? models : json_null());
    int rc = run_levels(&c, &w, doc);
    if (!rc && c.json_path) rc = write_json_file(c.json_path, doc);
    if (!rc && c.html_path && bench_write_html(c.html_path, doc)) {
        fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
        rc = 1;
    }
    json_decref(doc);
    bench_workload_free(&w);
    json_decref(c.extra);
    return rc;
}
