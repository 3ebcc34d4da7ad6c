#!/usr/bin/env bash
# serve_prometheus.sh - a real Prometheus scrapes `kiln serve --diagnostics`
# (issue 12): the Debian `prometheus` server scrapes /metrics on loopback
# every second while a bounded load runs (30 completions, 4 at a time);
# once it has scraped all of them, histogram_quantile(0.99) over the TTFT
# buckets must agree with the performance snapshot's exact TTFT p99 within
# one bucket (Prometheus interpolates inside the bucket that holds the rank,
# so the two lie in the same bucket or in neighbouring ones).
# Usage: bash serve_prometheus.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_prometheus.sh /path/to/kiln}
TEST_NAME=serve-prometheus
. "$(dirname "$0")/../server/lib.sh"
PROM_PID=
PROM_WATCH=
trap 'kill $PROM_PID 2>/dev/null; kill $PROM_WATCH 2>/dev/null; kill_server; rm -rf "$T"' EXIT
command -v python3 >/dev/null || {
    echo "SKIP: python3 is not installed"
    exit 0
}
command -v prometheus >/dev/null || {
    echo "SKIP: prometheus is not installed"
    exit 0
}
J='Content-Type: application/json'
NREQ=30
# pq EXPR: the value of Prometheus' instant query EXPR (empty when none)
pq() {
    local q
    q=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1")
    curl -s -m 10 "http://127.0.0.1:$PROMPORT/api/v1/query?query=$q" | python3 -c '
import json, sys
try:
    r = json.load(sys.stdin)["data"]["result"]
    print(r[0]["value"][1] if r else "")
except Exception:
    print("")'
}

synth_models
start_server prom -m "$T/llama.gguf" --ctx 256 -np 2 -t 1 --diagnostics
KILNPORT=${URL##*:}

PROMPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/prom.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: kiln
    metrics_path: /metrics
    static_configs:
      - targets: ['127.0.0.1:$KILNPORT']
EOF
promtool check config "$T/prom.yml" >"$T/promtool.log" 2>&1 || fail "promtool: $(cat "$T/promtool.log")"
prometheus --config.file="$T/prom.yml" --storage.tsdb.path="$T/tsdb" \
    --web.listen-address=127.0.0.1:$PROMPORT >"$T/prometheus.log" 2>&1 &
PROM_PID=$!
(sleep 300 && kill -9 $PROM_PID) >/dev/null 2>&1 &
PROM_WATCH=$!
ok=
for i in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PROMPORT/-/ready")" = 200 ] && {
        ok=1
        break
    }
    kill -0 $PROM_PID 2>/dev/null || break
    sleep 0.1
done
[ -n "$ok" ] || { tail -20 "$T/prometheus.log"; fail "prometheus never became ready"; }

# the bounded load: NREQ completions, 4 at a time
seq $NREQ | xargs -P 4 -I{} curl -s -m 120 -o /dev/null -w '%{http_code}\n' -H "$J" \
    "$URL/v1/completions" -d '{"prompt":"hi","max_tokens":16,"ignore_eos":true}' >"$T/codes"
[ "$(grep -c '^200$' "$T/codes")" = $NREQ ] || fail "load: $(sort "$T/codes" | uniq -c)"
[ "$(metric 'kiln_time_to_first_token_seconds_count{model="llama"}')" = $NREQ ] ||
    fail "/metrics TTFT count: $(metric 'kiln_time_to_first_token_seconds_count{model="llama"}')"

# Prometheus has scraped all of them (the buckets come from that same scrape)
n=
for i in $(seq 60); do
    n=$(pq kiln_time_to_first_token_seconds_count)
    [ "$n" = $NREQ ] && break
    sleep 0.5
done
[ "$n" = $NREQ ] || { tail -20 "$T/prometheus.log"; fail "prometheus scraped TTFT count '$n', want $NREQ"; }

# the counters are cumulative since the start: the raw buckets are the load
PQ=$(pq 'histogram_quantile(0.99, sum by (le) (kiln_time_to_first_token_seconds_bucket))')
curl -s -m 10 "$URL/diagnostics/performance?window=600" >"$T/perf.json"
curl -s -m 10 "$URL/metrics" >"$T/metrics.txt"
python3 - "$T/perf.json" "$T/metrics.txt" "$PQ" $NREQ <<'PY' || fail "TTFT p99: prometheus '$PQ' vs snapshot $(head -c 400 "$T/perf.json")"
import json, math, re, sys
ttft = json.load(open(sys.argv[1]))["window"]["ttft_ms"]
assert ttft["count"] == int(sys.argv[4]), ttft
snap = ttft["p99"] / 1000.0
prom = float(sys.argv[3])
bounds = sorted(
    float(m.group(1))
    for m in re.finditer(r'^kiln_time_to_first_token_seconds_bucket\{model="llama",le="([^"]+)"\}', open(sys.argv[2]).read(), re.M)
)
assert bounds and bounds[-1] == math.inf, bounds
def bucket(v):
    return next(i for i, le in enumerate(bounds) if v <= le)
bs, bp = bucket(snap), bucket(prom)
print("TTFT p99: snapshot %.6f s (bucket le=%g), prometheus %.6f s (bucket le=%g)"
      % (snap, bounds[bs], prom, bounds[bp]))
assert math.isfinite(prom) and prom > 0, prom
assert abs(bs - bp) <= 1, (bs, bp)
PY

kill $PROM_PID 2>/dev/null
wait $PROM_PID 2>/dev/null
PROM_PID=
stop_server
echo "serve_prometheus: ok"
