/* bench.h - kiln bench, the load generator for OpenAI-compatible servers:
 * workloads (request bodies), the SSE stream parser, the load engine on
 * libcurl's multi interface, statistics and reports. Internal to Kiln (the
 * CLI in src/cli/bench.c and the tests use it); not part of kiln.h.
 *
 * Times inside a run are nanoseconds on CLOCK_MONOTONIC relative to the
 * run's start; latencies in reports are milliseconds. Nothing here is
 * thread-safe: one run is driven by one thread.
 */
#ifndef KILN_BENCH_BENCH_H
#define KILN_BENCH_BENCH_H

#include "kiln.h"
#include "obs/hist.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- workloads ---------------------------------------------------------- */

typedef enum bench_kind {
    BENCH_CHAT,
    BENCH_COMPLETIONS,
    BENCH_EMBEDDINGS,
} bench_kind;

const char *bench_kind_name(bench_kind k);
/* false for an unknown name. */
bool bench_kind_from_name(const char *name, bench_kind *out);

/* How --ignore-eos is said: llama.cpp's, vLLM's and Kiln's "ignore_eos":
 * true, and vLLM's "min_tokens": max_tokens (servers that reject unknown
 * fields, like Kiln and OpenAI, need the first alone). */
#define BENCH_EOS_IGNORE_EOS 1u
#define BENCH_EOS_MIN_TOKENS 2u

typedef struct bench_workload_opts {
    bench_kind kind;
    const char *model;       /* "model" field; NULL: omitted */
    const char *prompt_file; /* JSONL; NULL: synthetic prompts */
    int input_tokens;        /* synthetic prompt length in words (~tokens) */
    int n_prompts;           /* distinct synthetic prompts (default 1024) */
    int max_tokens;          /* 0: the file's or the server's default */
    bool ignore_eos;         /* ask for exactly max_tokens, with eos_fields */
    unsigned eos_fields;     /* BENCH_EOS_* flags: which fields say so (0: both) */
    json_t *extra;           /* an object merged into every body (borrowed); NULL: none */
    bool stream;             /* chat/completions: SSE with include_usage */
    int inputs_per_request;  /* embeddings: strings per request (>= 1) */
    uint64_t seed;
} bench_workload_opts;

typedef struct bench_body {
    char *json; /* the request body (owned) */
    size_t len;
    int input_tokens; /* estimated prompt words (for reports when no usage) */
    int max_tokens;   /* the max_tokens sent; 0 when none */
} bench_body;

typedef struct bench_workload {
    bench_workload_opts o;
    bench_body *bodies; /* cycled through by request index */
    size_t n_bodies;
} bench_workload;

/* Builds every request body up front (so a run does no JSON work to send).
 * JSONL lines hold {"prompt": str} or {"messages": [...]} and optionally
 * "max_tokens"; blank lines are skipped. KILN_ERR_IO for an unreadable file,
 * KILN_ERR_FORMAT naming the line for a bad one, KILN_ERR_INVALID_ARG for
 * an empty file or bad option. bench_workload_free frees (also on failure). */
kiln_status bench_workload_init(bench_workload *w, const bench_workload_opts *o);
void bench_workload_free(bench_workload *w);
/* The body for request number i (cycles). */
const bench_body *bench_workload_body(const bench_workload *w, uint64_t i);
/* Fills buf (cap bytes) with n synthetic words that each tokenize to about
 * one token in common BPE/SPM vocabularies; deterministic in *rng. Returns
 * the length written (always NUL-terminated; cut short when cap is small). */
size_t bench_synth_words(char *buf, size_t cap, int n, uint64_t *rng);

/* ---- server-sent events -------------------------------------------------- */

/* What one SSE "data:" payload of an OpenAI stream said. */
typedef struct bench_sse_event {
    bool done;                                /* data: [DONE] */
    bool bad;                                 /* not JSON, or an "error" object */
    size_t content_len;                       /* bytes of choices[0].delta.content / .text */
    int64_t prompt_tokens, completion_tokens; /* from "usage"; -1 absent */
} bench_sse_event;

typedef void (*bench_sse_fn)(void *ud, const bench_sse_event *ev);

/* A line splitter for text/event-stream bodies fed in arbitrary pieces
 * (chunks may split lines, even "\r\n"). */
typedef struct bench_sse {
    char *line;
    size_t len, cap;
    bool overflow; /* a line exceeded the limit (reported as bad) */
} bench_sse;

void bench_sse_init(bench_sse *s);
void bench_sse_free(bench_sse *s);
void bench_sse_reset(bench_sse *s);
/* Feeds n bytes; calls fn once per complete "data:" line with what it said.
 * Other fields (event:, id:, comments) are ignored. Returns false on out
 * of memory. */
bool bench_sse_feed(bench_sse *s, const char *p, size_t n, bench_sse_fn fn, void *ud);
/* Interprets one data payload (without "data:"), for streams and tests. */
void bench_sse_parse(const char *payload, size_t n, bench_sse_event *ev);

/* ---- the load engine ----------------------------------------------------- */

typedef enum bench_err {
    BENCH_OK,
    BENCH_ERR_CONNECT, /* connection refused / no route / DNS */
    BENCH_ERR_TIMEOUT, /* --timeout passed */
    BENCH_ERR_HTTP_4XX,
    BENCH_ERR_HTTP_5XX,
    BENCH_ERR_BAD_RESPONSE, /* unparsable, error event, empty stream */
    BENCH_ERR_NETWORK,      /* connection reset, closed early, other */
    BENCH_ERR_COUNT
} bench_err;

const char *bench_err_name(bench_err e);

/* One request's measurements; times in ns from the run's start, -1 when not
 * reached. */
typedef struct bench_record {
    uint64_t index;                /* order of scheduling, warm-up included */
    bool warmup;                   /* excluded from the statistics */
    int64_t t_sched;               /* when it was due to be sent (open loop: arrival) */
    int64_t t_send;                /* when it was handed to curl */
    int64_t t_first;               /* first non-empty content (streams) */
    int64_t t_done;                /* completion (success or failure) */
    int64_t in_tokens, out_tokens; /* usage, else estimated / counted */
    bool usage;                    /* token counts came from the server's usage */
    uint32_t n_chunks;             /* non-empty content events */
    double itl_sum_ms, itl_max_ms; /* over the n_chunks - 1 gaps */
    int http_status;               /* 0 when no response */
    double overhead_ms;            /* the tool's own share of e2e: lag, curl's work before
                                      the request is written (connecting excluded), and
                                      from the loop's wake-up in which the last bytes
                                      were read to completion */
    bench_err err;
} bench_record;

typedef enum bench_mode {
    BENCH_CLOSED, /* `concurrency` clients, each sends when its last ends */
    BENCH_OPEN,   /* arrivals at `rate` per second */
} bench_mode;

typedef struct bench_run_opts {
    const char *url;     /* full endpoint URL */
    const char *api_key; /* Bearer token; NULL: none */
    bench_mode mode;
    int concurrency;     /* closed loop */
    double rate;         /* open loop, requests/s */
    bool poisson;        /* open loop: exponential gaps (else constant) */
    int burst;           /* open loop: requests per arrival (>= 1) */
    double duration_s;   /* 0: bounded by n_requests */
    uint64_t n_requests; /* measured requests; 0: bounded by duration */
    uint64_t warmup;     /* requests before these, excluded */
    double timeout_s;    /* per request (0: none) */
    int max_connections; /* curl's cap on open connections (0: unlimited) */
    bool progress;       /* progress line on stderr */
    int spin_us;         /* open loop: poll this long before each arrival instead of
                            sleeping (< 0: the default, 100; 0: never) */
    uint64_t seed;
    /* The workload body of the first request (warm-up included); request k
     * takes body first_body + k. A sweep starts each level where the last
     * one stopped, so no prompt is sent twice while the pool lasts and a
     * server's prompt cache cannot flatter the later levels. */
    uint64_t first_body;
    volatile int *stop; /* when set and *stop becomes non-zero (a signal
                           handler), the run ends at once: requests in
                           flight count as timeouts */
} bench_run_opts;

/* Timeline buckets over the run, by completion time (measured requests). */
typedef struct bench_tick {
    uint32_t done, errors;
    uint64_t out_tokens;
    double ttft_sum_ms; /* over `ttft_n` */
    uint32_t ttft_n;
} bench_tick;

typedef struct bench_run {
    bench_record *recs; /* every request scheduled, in index order */
    size_t n_recs, cap_recs;
    hist itl;             /* every inter-token gap of measured requests, ms */
    double itl_sumsq;     /* for its standard deviation */
    int64_t t_end;        /* when the run finished (ns) */
    double cpu_s;         /* user + system CPU the process used during the run */
    uint64_t n_cancelled; /* still in flight at the hard stop (counted as timeouts) */
    int max_in_flight;    /* the most requests curl held at once */
} bench_run;

/* Runs the load against o->url with bodies from w until the bound (requests
 * or duration) is met and in-flight requests finish, or a hard stop at the
 * bound + timeout + 2 s, or *o->stop. Never blocks longer. Fills *r (bench_run_free
 * frees). Errors of requests are recorded, not returned; the return is
 * KILN_ERR_INVALID_ARG for bad options, KILN_ERR_NOMEM, KILN_ERR_INTERNAL
 * when curl or epoll cannot be set up (the message says which). */
kiln_status bench_run_load(const bench_run_opts *o, const bench_workload *w, bench_run *r);
void bench_run_free(bench_run *r);

/* Raises the soft open-file limit to the hard limit; returns the new soft
 * limit (or the old one when it cannot). */
long bench_raise_nofile(void);

/* GET url with a timeout, the body parsed as JSON, or NULL. */
json_t *bench_http_get_json(const char *url, const char *api_key, double timeout_s);

/* ---- statistics ---------------------------------------------------------- */

typedef struct bench_slo {
    double ttft_ms, tpot_ms, e2e_ms; /* 0: no objective */
} bench_slo;

/* Parses "ttft=500ms,tpot=50ms,e2e=2s" (units ms, s, us; bare numbers are
 * ms). false naming nothing; the CLI prints the usage. */
bool bench_slo_parse(const char *s, bench_slo *out);

typedef struct bench_metric {
    hist h;       /* milliseconds */
    double sumsq; /* for the standard deviation */
} bench_metric;

typedef struct bench_stats {
    uint64_t n;            /* measured requests */
    uint64_t n_ok, n_good; /* succeeded; met every SLO */
    uint64_t n_err[BENCH_ERR_COUNT];
    uint64_t in_tokens, out_tokens;
    double window_s; /* first measured schedule to last done */
    double rps, out_tps, total_tps, goodput_rps;
    double cpu_pct;                         /* of one core over the run */
    int max_in_flight;                      /* the most requests in flight at once */
    bench_metric ttft, itl, tpot, e2e, lag; /* lag: send - scheduled */
    bench_metric overhead;                  /* bench_record.overhead_ms */
} bench_stats;

/* Aggregates a run's measured (non-warm-up) records. Heap-allocated (the
 * histograms are large); free() it. NULL on out of memory. */
bench_stats *bench_stats_compute(const bench_run *r, const bench_slo *slo);
double bench_metric_sd(const bench_metric *m);
/* Whether a request met every objective set in slo. */
bool bench_record_good(const bench_record *rec, const bench_slo *slo);
/* TTFT, TPOT, e2e of one record in ms; -1 when undefined. */
double bench_rec_ttft_ms(const bench_record *rec);
double bench_rec_tpot_ms(const bench_record *rec);
double bench_rec_e2e_ms(const bench_record *rec);

/* ---- reports ------------------------------------------------------------- */

/* One line "NAME  count=..., mean=...ms, min=..., max=..., p50=..., p90=...,
 * p95=..., p99=..." into buf. */
void bench_metric_line(char *buf, size_t cap, const char *name, const bench_metric *m);
/* The summary table of one run on f. */
void bench_print_summary(FILE *f, const bench_stats *s, const bench_slo *slo);
/* JSON object for one run: "summary", "timeline", "cdf" (new reference). */
json_t *bench_run_json(const bench_run *r, const bench_stats *s);
/* Writes one CSV row per request of every run (level column first). */
kiln_status bench_write_csv(const char *path, const bench_run *const *runs, const double *levels,
                            size_t n_runs);
/* Writes doc (as made by the CLI: params, runs, ...) as a self-contained
 * HTML report. */
kiln_status bench_write_html(const char *path, const json_t *doc);
/* Writes doc (as kiln trace compare makes it: files, spans, steps; see
 * trace_html.c) as a self-contained HTML report of the comparison. */
kiln_status bench_write_trace_html(const char *path, const json_t *doc);

/* The HTML report kit (html.c): writes a self-contained page to path -
 * title (plain text, no markup), the shared style, body (the page's HTML
 * containers, between the title with its #meta line and #status), doc as
 * JSON in <script id="data">, and script, the page's own code, run with D
 * (the parsed doc) and the helpers esc(s), f(v, decimals), nice(max),
 * chart(el, title, xlabel, ylabel, series, step) and COL in scope. After
 * script the page writes "report rendered" into #status; script errors
 * land in #errors. KILN_ERR_IO naming the path, KILN_ERR_NOMEM. */
kiln_status bench_html_write(const char *path, const char *title, const char *body,
                             const json_t *doc, const char *script);

/* `kiln bench compare A.json B.json` on f: both runs side by side, ratios,
 * and a flag where the difference exceeds the runs' noise (see compare.c).
 * Returns the number of flagged differences, or -1 (message recorded) when
 * a file cannot be read. */
int bench_compare(FILE *f, const char *path_a, const char *path_b);

#endif
