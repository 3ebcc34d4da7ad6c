#!/usr/bin/env bash
# kiln bench against the stub server (tests/bench/stub_server.py) streaming
# its first token after 100 ms and one every 20 ms: measured TTFT and
# inter-token gaps match those delays (medians within 15 ms), also when
# every SSE event arrives split in two reads; usage counts are read;
# warm-up requests are excluded; completions, non-streaming chat and
# embeddings work; a sweep prints one row per level and the knee; JSON and
# CSV parse with the expected fields; `bench compare` flags a slower run
# and not a run against itself.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-bench-stream-$$
mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
source "$(dirname "$0")/../bench/stub.sh"

run() { # out_prefix, args...
    local out=$1
    shift
    timeout 60 "$KILN" bench -q "$@" >"$out.txt" 2>"$out.err" || fail "bench $* exit $? ($(cat "$out.err"))"
}

# 1) closed loop, 4 clients, 24 requests of 8 tokens, 2 warm-up
run "$T/a" --url "$STUB_URL/ttft=100/itl=20" --concurrency 4 --requests 24 --warmup 2 \
    --max-tokens 8 --slo ttft=400ms,tpot=60ms --json "$T/a.json" --csv "$T/a.csv"
for want in "ttft  count=24, mean=" "itl   count=168," "p50=" "p90=" "p95=" "p99=" \
    "requests: 24 ok, 0 errors" "bench cpu:" "goodput:" "output tok/s" "tool  count=24"; do
    grep -qF -- "$want" "$T/a.txt" || fail "summary lacks '$want': $(cat "$T/a.txt")"
done
python3 - "$T/a.json" "$T/a.csv" <<'PY' || fail "a.json / a.csv"
import csv, json, statistics, sys
d = json.load(open(sys.argv[1]))
assert d["tool"] == "kiln bench" and d["kiln_version"], d.keys()
assert d["server_models"]["data"][0]["id"] == "stub-model"
p = d["params"]
assert p["model"] == "stub-model" and p["mode"] == "concurrency" and p["levels"] == [4]
assert p["requests"] == 24 and p["warmup"] == 2 and p["slo"]["ttft_ms"] == 400
s = d["runs"][0]["summary"]
assert s["requests"] == 24 and s["ok"] == 24 and sum(s["errors"].values()) == 0, s
assert s["out_tokens"] == 24 * 8, s["out_tokens"]          # from the stub's usage
for m in ("ttft", "itl", "tpot", "e2e", "lag", "overhead"):
    for k in ("count", "mean", "sd", "min", "max", "p50", "p90", "p95", "p99"):
        assert k in s[m], (m, k)
assert abs(s["ttft"]["p50"] - 100) <= 15, s["ttft"]
assert abs(s["itl"]["p50"] - 20) <= 15, s["itl"]
assert abs(s["tpot"]["p50"] - 20) <= 15, s["tpot"]
assert abs(s["e2e"]["p50"] - 240) <= 30, s["e2e"]
assert s["ttft"]["min"] >= 99, s["ttft"]                      # never before the stub sent it
assert s["good"] == 24 and s["goodput_rps"] > 0 and s["rps"] > 0 and s["output_tps"] > 0
assert s["max_in_flight"] == 4, s["max_in_flight"]
assert 0 <= s["overhead"]["p50"] < 5 and s["overhead"]["count"] == 24, s["overhead"]
assert d["runs"][0]["timeline"] and d["runs"][0]["cdf"]["ttft"][-1][1] == 1.0
rows = list(csv.DictReader(open(sys.argv[2])))
assert len(rows) == 26, len(rows)                             # warm-up rows included, marked
assert sum(r["warmup"] == "1" for r in rows) == 2
meas = [r for r in rows if r["warmup"] == "0"]
assert all(r["error"] == "ok" and r["http_status"] == "200" and r["out_tokens"] == "8"
           and r["chunks"] == "8" and r["usage"] == "1" for r in meas)
assert abs(statistics.median(float(r["ttft_ms"]) for r in meas) - 100) <= 15
assert abs(statistics.median(float(r["itl_mean_ms"]) for r in meas) - 20) <= 15
PY

# 2) every event split across two reads: same timings, every chunk counted
run "$T/s" --url "$STUB_URL/ttft=100/itl=20/split=1" --concurrency 2 --requests 6 \
    --max-tokens 6 --json "$T/s.json" --csv "$T/s.csv"
python3 - "$T/s.json" "$T/s.csv" <<'PY' || fail "split events"
import csv, json, sys
s = json.load(open(sys.argv[1]))["runs"][0]["summary"]
assert s["ok"] == 6 and s["itl"]["count"] == 6 * 5, s
assert abs(s["ttft"]["p50"] - 100) <= 15 and abs(s["itl"]["p50"] - 20) <= 15, s
assert all(r["chunks"] == "6" for r in csv.DictReader(open(sys.argv[2])))
PY

# 3) completions, non-streaming chat, embeddings with 4 inputs per request
run "$T/c" --url "$STUB_URL/ttft=30/itl=5" --workload completions --requests 4 --max-tokens 4 \
    --json "$T/c.json"
run "$T/n" --url "$STUB_URL/ttft=30/itl=5" --no-stream --requests 4 --max-tokens 4 \
    --json "$T/n.json"
run "$T/e" --url "$STUB_URL/ttft=10" --workload embeddings --inputs-per-request 4 \
    --concurrency 2 --requests 6 --json "$T/e.json"
python3 - "$T" <<'PY' || fail "completions / no-stream / embeddings"
import json, sys
t = sys.argv[1]
c = json.load(open(t + "/c.json"))
assert c["params"]["url"].endswith("/v1/completions"), c["params"]["url"]
assert c["runs"][0]["summary"]["ok"] == 4 and c["runs"][0]["summary"]["ttft"]["count"] == 4
n = json.load(open(t + "/n.json"))["runs"][0]["summary"]
assert n["ok"] == 4 and n["ttft"]["count"] == 0 and n["out_tokens"] == 16, n
e = json.load(open(t + "/e.json"))
assert e["params"]["url"].endswith("/v1/embeddings") and e["params"]["inputs_per_request"] == 4
s = e["runs"][0]["summary"]
assert s["ok"] == 6 and s["in_tokens"] == 6 * 16 and s["e2e"]["p50"] >= 10, s
PY

# API keys: sent as a Bearer token (--api-key, else $OPENAI_API_KEY)
run "$T/k1" --url "$STUB_URL/auth=s3cret/ttft=5/itl=1" --api-key s3cret --requests 2 \
    --max-tokens 2 --json "$T/k1.json"
OPENAI_API_KEY=s3cret run "$T/k2" --url "$STUB_URL/auth=s3cret/ttft=5/itl=1" --requests 2 \
    --max-tokens 2 --json "$T/k2.json"
OPENAI_API_KEY= run "$T/k3" --url "$STUB_URL/auth=s3cret/ttft=5/itl=1" --requests 2 \
    --max-tokens 2 --json "$T/k3.json"
python3 - "$T" <<'PY' || fail "api key"
import json, sys
ok = [json.load(open("%s/k%d.json" % (sys.argv[1], i)))["runs"][0]["summary"] for i in (1, 2, 3)]
assert ok[0]["ok"] == 2 and ok[1]["ok"] == 2, ok[:2]
assert ok[2]["ok"] == 0 and ok[2]["errors"]["http_4xx"] == 2, ok[2]
PY

# --ignore-eos against a server that rejects unknown fields: min_tokens is
# refused, --eos-fields ignore_eos passes; --extra-body fields are sent
run "$T/x1" --url "$STUB_URL/strict=1/ttft=5/itl=1" --requests 2 --max-tokens 3 --ignore-eos \
    --json "$T/x1.json"
run "$T/x2" --url "$STUB_URL/strict=1/ttft=5/itl=1" --requests 2 --max-tokens 3 --ignore-eos \
    --eos-fields ignore_eos --extra-body '{"temperature": 0}' --json "$T/x2.json"
run "$T/x3" --url "$STUB_URL/strict=1/ttft=5/itl=1" --requests 2 --max-tokens 3 \
    --extra-body '{"seed_of_doom": 1}' --json "$T/x3.json"
python3 - "$T" <<'PY' || fail "eos fields / extra body"
import json, sys
s = [json.load(open("%s/x%d.json" % (sys.argv[1], i))) for i in (1, 2, 3)]
assert s[0]["runs"][0]["summary"]["errors"]["http_4xx"] == 2, s[0]["runs"][0]["summary"]
assert s[1]["runs"][0]["summary"]["ok"] == 2 and s[1]["runs"][0]["summary"]["out_tokens"] == 6
assert s[1]["params"]["eos_fields"] == ["ignore_eos"]
assert s[1]["params"]["extra_body"] == {"temperature": 0}
assert s[2]["runs"][0]["summary"]["errors"]["http_4xx"] == 2   # the extra field was sent
PY

# 4) sweep: one row per level, the knee
run "$T/w" --url "$STUB_URL/ttft=50/itl=10" --concurrency 1,2,4 --requests 8 --max-tokens 4 \
    --slo ttft=1s --json "$T/w.json"
grep -qE '^conc +ok +errors' "$T/w.txt" || fail "sweep table header: $(cat "$T/w.txt")"
for c in 1 2 4; do grep -qE "^$c +8 +0 " "$T/w.txt" || fail "sweep row $c: $(cat "$T/w.txt")"; done
grep -qF "knee: concurrency 4" "$T/w.txt" || fail "knee: $(cat "$T/w.txt")"
python3 -c "
import json; d = json.load(open('$T/w.json'))
assert [r['level'] for r in d['runs']] == [1, 2, 4] and d['knee'] == 4" || fail "sweep JSON"

# 5) compare: a run with TTFT 200 ms against a (with itself: no flags)
run "$T/b" --url "$STUB_URL/ttft=200/itl=20" --concurrency 4 --requests 24 --warmup 2 \
    --max-tokens 8 --json "$T/b.json"
timeout 20 "$KILN" bench compare "$T/a.json" "$T/b.json" >"$T/cmp.txt" 2>&1 || fail "compare exit $?"
grep -E '^ttft mean ms .*\* higher' "$T/cmp.txt" >/dev/null || fail "ttft not flagged: $(cat "$T/cmp.txt")"
grep -E '^itl mean ms .*\*' "$T/cmp.txt" >/dev/null && fail "itl flagged: $(cat "$T/cmp.txt")"
grep -qF "B/A" "$T/cmp.txt" || fail "compare lacks ratios"
timeout 20 "$KILN" bench compare "$T/a.json" "$T/a.json" >"$T/same.txt" 2>&1 || fail "compare self"
grep -qF "0 differences beyond noise" "$T/same.txt" || fail "self compare: $(cat "$T/same.txt")"
echo "PASS"
