#!/usr/bin/env bash
# trace_overhead.sh - builds tests/bench/trace_overhead.c against the
# build's libkiln and runs it (docs/perf.md, "Diagnostics and tracing
# overhead"): decode tokens/s with no trace, detail=steps and detail=ops,
# alternated block by block in one process.
#   bash tests/bench/trace_overhead.sh BUILD_DIR MODEL [ROUNDS] [TOKENS] [THREADS]
# PRE="chrt -f 50" runs it under SCHED_FIFO (root), so that other processes
# on a shared machine do not preempt it. Not a CI test: timings are noisy.
set -eu
BUILD=$(realpath "$1")
MODEL=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cc -O2 -I"$ROOT/src" -I"$ROOT/include" -o "$T/trace_overhead" "$HERE/trace_overhead.c" \
    "$BUILD/libkiln.a" -lpthread -lm \
    $(pkg-config --libs jansson libmicrohttpd libcurl libpcre2-8 libutf8proc)
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
${PRE:-} "$T/trace_overhead" "$MODEL" "$@"
