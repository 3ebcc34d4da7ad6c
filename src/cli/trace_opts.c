/* trace_opts.c - the tracing options of run, embed and bench-model (see
 * trace_opts.h). */
#include "cli/trace_opts.h"
#include "base/status.h"

#include <string.h>

void cli_trace_opts_init(struct cli_trace_opts *o) {
    memset(o, 0, sizeof *o);
    o->detail = TRACE_DETAIL_STEPS;
}

int cli_trace_opt(struct cli_trace_opts *o, const char *cmd, const char *a, const char *v) {
    if (!strcmp(a, "--trace")) {
        o->file = v;
        return 1;
    }
    if (strcmp(a, "--trace-detail")) return 0;
    if (!strcmp(v, "steps"))
        o->detail = TRACE_DETAIL_STEPS;
    else if (!strcmp(v, "ops"))
        o->detail = TRACE_DETAIL_OPS;
    else {
        fprintf(stderr, "kiln %s: --trace-detail is steps or ops, not '%s'\n", cmd, v);
        return -1;
    }
    o->detail_set = true;
    return 1;
}

int cli_trace_check(const struct cli_trace_opts *o, const char *cmd) {
    if (o->detail_set && !o->file) {
        fprintf(stderr, "kiln %s: --trace-detail needs --trace FILE\n", cmd);
        return 2;
    }
    return 0;
}

void cli_trace_usage(FILE *out, const char *what) {
    fprintf(out,
            "      --trace FILE        write a Chrome/Perfetto trace of %s to FILE,\n"
            "                          gzip-compressed when FILE ends in .gz (kiln trace\n"
            "                          summary FILE reads either)\n"
            "      --trace-detail D    steps (default) or ops: also each forward pass's\n"
            "                          per-layer attention and FFN and their parts\n",
            what);
}

trace_session *cli_trace_start(const struct cli_trace_opts *o, const char *cmd, bool *failed) {
    *failed = false;
    if (!o->file) return NULL;
    trace_thread_name("main");
    trace_opts to = {.detail = o->detail};
    kiln_status st;
    trace_session *ts = trace_start(&to, &st);
    if (!ts) {
        fprintf(stderr, "kiln %s: %s\n", cmd, kiln_last_error());
        *failed = true;
    }
    return ts;
}

int cli_trace_write(trace_session *ts, const struct cli_trace_opts *o, const char *cmd,
                    json_t *other) {
    if (!ts) {
        json_decref(other);
        return 0;
    }
    kiln_status st = trace_write(ts, o->file, other);
    json_decref(other);
    if (st) {
        fprintf(stderr, "kiln %s: %s\n", cmd, kiln_last_error());
        return 1;
    }
    trace_stats s;
    trace_get_stats(ts, &s);
    fprintf(stderr, "trace       %s: %lld events", o->file, (long long)s.events);
    if (s.dropped) fprintf(stderr, ", %lld dropped", (long long)s.dropped);
    fputc('\n', stderr);
    return 0;
}
