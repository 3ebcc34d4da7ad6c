/* trace_opts.h - the tracing options `kiln run`, `kiln embed` and `kiln
 * bench-model` share: --trace FILE and --trace-detail steps|ops, starting
 * the trace recorder (obs/trace.h) before the work and writing the Chrome
 * trace after it, with a one-line report on stderr. */
#ifndef KILN_CLI_TRACE_OPTS_H
#define KILN_CLI_TRACE_OPTS_H

#include "obs/trace.h"

#include <jansson.h>
#include <stdio.h>

struct cli_trace_opts {
    const char *file;    /* --trace FILE (borrowed from argv), or NULL: no trace */
    trace_detail detail; /* --trace-detail: TRACE_DETAIL_STEPS (default) or _OPS */
    bool detail_set;
};

/* No trace, detail steps. */
void cli_trace_opts_init(struct cli_trace_opts *o);

/* Applies option a with value v. 1: applied; 0: not a trace option; -1: a
 * bad value (a message naming it is on stderr, prefixed with cmd). */
int cli_trace_opt(struct cli_trace_opts *o, const char *cmd, const char *a, const char *v);

/* After parsing: 0, or 2 with a message when --trace-detail came without
 * --trace. */
int cli_trace_check(const struct cli_trace_opts *o, const char *cmd);

/* Prints the options' help lines; what: what the trace records. */
void cli_trace_usage(FILE *out, const char *what);

/* Starts recording when o->file is set, naming the calling thread "main".
 * Returns the session, or NULL: no --trace (*failed false) or the recorder
 * did not start (*failed true, a message on stderr). */
trace_session *cli_trace_start(const struct cli_trace_opts *o, const char *cmd, bool *failed);

/* Writes ts (NULL: nothing to do, 0) to o->file with other (stolen; may be
 * NULL) as its otherData and reports "trace  FILE: N events[, M dropped]"
 * on stderr. 0, or 1 with a message on stderr. Does not free ts. */
int cli_trace_write(trace_session *ts, const struct cli_trace_opts *o, const char *cmd,
                    json_t *other);

#endif
