#!/usr/bin/env bash
# overhead.sh - measures kiln bench's own cost (docs/bench.md): CPU use and
# added latency at 1,000 requests/s against tests/bench/instant_server.c,
# a libmicrohttpd server that answers every request at once.
#   bash tests/bench/overhead.sh build/kiln [seconds]
# Prints, for each variant (normal scheduling; the same with the tool and the
# server pinned to different cores by taskset; and SCHED_FIFO via chrt when
# allowed, which keeps other processes on a shared machine from preempting
# the tool and the server):
#   - open loop, 1000 req/s Poisson: bench cpu, lag (send - scheduled), the
#     tool's own share of each latency ("tool": lag + curl's work before
#     writing the request + last byte -> completion) and e2e quantiles
#     (scheduled send -> completion: tool + kernel + server);
#   - closed loop, 1 client: the round trip p50/p99 when nothing sleeps
#     (bounds the tool's per-request processing);
#   - curl's own command-line tool on the same server and connection reuse,
#     as a reference client (time_total per transfer).
# Not a CI test: timings on a busy machine are noisy.
set -eu
KILN=$(realpath "$1")
SECS=${2:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d)
trap 'kill $SRV 2>/dev/null; rm -rf "$T"' EXIT
cc -O2 -o "$T/instant_server" "$HERE/instant_server.c" $(pkg-config --cflags --libs libmicrohttpd)
"$T/instant_server" >"$T/port" 2>"$T/srv.err" &
SRV=$!
for _ in $(seq 100); do PORT=$(awk '/^PORT/{print $2}' "$T/port"); [ -n "$PORT" ] && break; sleep 0.05; done
URL=http://127.0.0.1:$PORT
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

body='{"model":"instant","messages":[{"role":"user","content":"hi"}],"max_tokens":1,"stream":true}'
for i in $(seq 2000); do
    printf 'url = "%s/v1/chat/completions"\noutput = "/dev/null"\n' "$URL"
done >"$T/curl.cfg"
quant() { python3 -c "
import sys; v = sorted(float(x) * 1000 for x in open(sys.argv[1]))[200:]; n = len(v)
print('p50=%.3fms p90=%.3fms p99=%.3fms (n=%d)' % (v[n // 2], v[int(n * .9)], v[int(n * .99)], n))" "$1"; }

variant() { # label, prefix command...
    local label=$1
    shift
    echo "== $label =="
    "$@" "$KILN" bench -q --url "$URL" --rate 1000 --duration "$SECS" --warmup 200 --max-tokens 1 \
        --json "$T/open.json" | grep -E '^(requests|e2e|lag|tool|bench cpu)' | sed 's/^/open loop 1000\/s: /'
    "$@" "$KILN" bench -q --url "$URL" --concurrency 1 --requests 5000 --warmup 200 --max-tokens 1 \
        | grep -E '^e2e' | sed 's/^/closed loop c=1: /'
    "$@" curl -s -H 'Content-Type: application/json' --data "$body" -w '%{time_total}\n' \
        -K "$T/curl.cfg" >"$T/curl.times"
    echo "curl CLI reference, one at a time: $(quant "$T/curl.times")"
}
variant "normal scheduling" env
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    # the server's threads on the last core, the tool on the first: normal
    # scheduling, but the two no longer wait for each other's core
    taskset -a -cp "$(($(nproc) - 1))" "$SRV" >/dev/null
    variant "normal scheduling, tool on core 0, server on core $(($(nproc) - 1)) (taskset)" taskset -c 0
    taskset -a -cp "0-$(($(nproc) - 1))" "$SRV" >/dev/null
fi
if [ "$(id -u)" = 0 ] && command -v chrt >/dev/null; then
    chrt -f -p 50 "$SRV" >/dev/null
    variant "SCHED_FIFO (chrt -f 50) for tool and server" chrt -f 50
fi
