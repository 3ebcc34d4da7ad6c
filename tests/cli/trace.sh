#!/usr/bin/env bash
# trace.sh - tracing from the command line: `kiln run --trace` on synthetic
# llama models (kiln synth; no shared data needed) writes a trace the strict
# validator accepts, `kiln trace summary` reads it back, and `kiln trace
# compare` finds no difference between runs of one setup (alternated) but
# finds the forward passes of a four-times-wider model slower. Gzip: a
# FILE.gz trace is gzip and reads back; the readers detect gzip by its magic
# bytes, not by the name. compare --html: the page renders in headless
# Chromium (skipped without it) with the span names, the significant
# differences marked, and the step-time distributions.
# --trace-detail ops adds per-layer spans: n_layer attention and ffn spans
# (each with its phases) and one output head inside every forward span, on
# run, embed (encoder and decoder) and bench-model traces; none of them
# needed the writer's nesting repair.
# Usage: bash trace.sh /path/to/kiln
set -u
KILN=${1:?usage: trace.sh /path/to/kiln}
V="$(cd "$(dirname "$0")/.." && pwd)/trace_validate.py"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
source "$(dirname "$0")/../bench/chromium.sh"

"$KILN" trace >/dev/null 2>&1
[ $? -eq 2 ] || fail "kiln trace without a subcommand should exit 2"
"$KILN" trace --help | grep -q "kiln trace summary" || fail "kiln trace --help"
for c in run embed bench-model; do
    "$KILN" $c --help | grep -q -- "--trace FILE" || fail "kiln $c --help lacks --trace"
    "$KILN" $c --help | grep -q -- "--trace-detail" || fail "kiln $c --help lacks --trace-detail"
done
"$KILN" trace summary "$T/missing.json" >/dev/null 2>"$T/e"
[ $? -eq 1 ] || fail "summary of a missing file should exit 1"
"$KILN" trace compare "$T/a.json" >/dev/null 2>&1
[ $? -eq 2 ] || fail "compare with one file should exit 2"

"$KILN" synth --arch llama --n-embd 128 --n-layer 2 --n-head 4 --n-ff 256 --ctx 256 --vocab 300 \
    --type q8_0 -q -o "$T/small.gguf" >/dev/null || fail "synth small"
"$KILN" synth --arch llama --n-embd 512 --n-layer 4 --n-head 8 --n-ff 1024 --ctx 256 --vocab 300 \
    --type q8_0 -q -o "$T/wide.gguf" >/dev/null || fail "synth wide"

run() { # run MODEL OUT.json
    "$KILN" run -m "$1" -p "hello world" -n 48 --ignore-eos --seed 1 -t 1 --trace "$2" \
        >/dev/null 2>"$T/err" || fail "run $1: exit $?: $(cat "$T/err")"
}
run "$T/small.gguf" "$T/a.json"
grep -q "trace .*a.json: [0-9]* events" "$T/err" || fail "run does not report the trace: $(cat "$T/err")"
python3 "$V" "$T/a.json" || fail "the trace of kiln run is not valid"
python3 - "$T/a.json" <<'PY' || fail "trace content"
import json, sys
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
names = {e["name"] for e in ev if e["ph"] == "X"}
for n in ("tokenize", "prefill", "step", "sample", "forward", "detokenize", "emit"):
    assert n in names, n
steps = [e for e in ev if e["ph"] == "X" and e["name"] == "step"]
assert len(steps) == 48, len(steps)
assert all("kv_used" in e["args"] for e in steps)
assert any(e["ph"] == "M" and e["args"]["name"] == "main" for e in ev)
od = d["otherData"]
assert od["schedule"] == "kiln run" and od["dropped_events"] == 0 and "version" in od
PY

"$KILN" trace summary "$T/a.json" >"$T/sum" 2>&1 || fail "summary exit $?"
grep -q "^step  *48 " "$T/sum" || fail "summary: no 48 steps: $(cat "$T/sum")"
grep -q "^forward  *48 " "$T/sum" || fail "summary: no 48 forwards (prefill and 47 decodes)"
grep -q "^main .*%" "$T/sum" || fail "summary: no busy fraction for main"
grep -q "step time (ms) over 48 steps" "$T/sum" || fail "summary: no step distribution"

# gzip: FILE.gz is written compressed; readers go by the magic bytes
run "$T/small.gguf" "$T/z.json.gz"
[ "$(head -c 2 "$T/z.json.gz" | od -An -tx1 | tr -d ' ')" = 1f8b ] || fail "z.json.gz is not gzip"
python3 "$V" "$T/z.json.gz" || fail "the gzip trace is not valid"
python3 -c 'import gzip, json, sys; d = json.loads(gzip.open(sys.argv[1]).read())
assert sum(e["name"] == "step" for e in d["traceEvents"]) == 48' "$T/z.json.gz" ||
    fail "the gzip trace's content"
"$KILN" trace summary "$T/z.json.gz" >"$T/zsum" 2>&1 || fail "summary of .gz exit $?"
grep -q "^step  *48 " "$T/zsum" || fail "summary of .gz: $(cat "$T/zsum")"
gzip -c "$T/a.json" >"$T/a-gzip-named.json" # gzip under a plain name
cp "$T/a.json" "$T/a-plain-named.gz"        # plain under a gzip name
for f in a-gzip-named.json a-plain-named.gz; do
    "$KILN" trace summary "$T/$f" 2>&1 | tail -n +2 >"$T/sum.$f" || fail "summary of $f"
    tail -n +2 "$T/sum" | cmp -s - "$T/sum.$f" || fail "summary of $f differs from a.json's"
done
head -c 300 "$T/z.json.gz" >"$T/cut.json.gz"
"$KILN" trace summary "$T/cut.json.gz" >/dev/null 2>"$T/e"
[ $? -eq 1 ] && grep -q "cut.json.gz" "$T/e" || fail "a truncated gzip should exit 1 naming it: $(cat "$T/e")"

# detail=ops: per-layer spans nested in each forward span
# check_ops FILE N_LAYER HEAD: HEAD (lm_head, output_norm or -) once per forward
check_ops() {
    python3 - "$@" <<'PY'
import json, sys
path, n_layer, head = sys.argv[1], int(sys.argv[2]), sys.argv[3]
d = json.load(open(path))
od = d["otherData"]
assert od["detail"] == "ops" and od["fixed_nesting"] == 0 and od["dropped_events"] == 0, od
xs = [e for e in d["traceEvents"] if e["ph"] == "X"]
fwd = [e for e in xs if e["name"] == "forward"]
assert fwd, "no forward spans"
PARTS = {"attention": ("attn_qkv", "attn_rope", "attn_core", "attn_out"),
         "ffn": ("ffn_gate_up", "ffn_act", "ffn_down")}
def inside(e, p):
    return (e["tid"] == p["tid"] and e is not p and e["ts"] >= p["ts"] - 1e-3
            and e["ts"] + e["dur"] <= p["ts"] + p["dur"] + 1e-3)
ops = [e for e in xs if e.get("cat") == "op"]
for f in fwd:
    mine = [e for e in ops if inside(e, f)]
    for g, parts in PARTS.items():
        groups = [e for e in mine if e["name"] == g]
        assert len(groups) == n_layer, (g, len(groups), n_layer, f)
        assert sorted(e["args"]["layer"] for e in groups) == list(range(n_layer)), groups
        for grp in groups:
            kids = {e["name"] for e in mine if inside(e, grp)}
            assert set(parts) <= kids, (g, kids)
    if head != "-":
        assert sum(e["name"] == head for e in mine) == 1, (head, f)
# every op span sits in a forward span of its thread
for e in ops:
    assert any(inside(e, f) for f in fwd), ("op outside forward", e)
print(len(fwd), len(ops))
PY
}
"$KILN" run -m "$T/small.gguf" -p "hello world" -n 8 --ignore-eos --seed 1 -t 2 --trace "$T/ops.json" \
    --trace-detail ops >/dev/null 2>"$T/err" || fail "run --trace-detail ops: $(cat "$T/err")"
python3 "$V" "$T/ops.json" || fail "the ops trace of kiln run is not valid"
check_ops "$T/ops.json" 2 lm_head >/dev/null || fail "run: per-layer spans"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
assert d["otherData"]["detail"] == "steps"
assert not any(e.get("cat") == "op" for e in d["traceEvents"])' "$T/a.json" ||
    fail "a detail=steps trace has per-layer spans"
"$KILN" trace summary "$T/ops.json" >"$T/sum" 2>&1 || fail "summary of the ops trace: exit $?"
# 8 forward passes (prefill and 7 decodes) of 2 layers each
for s in "attention  *16 " "ffn  *16 " "attn_core  *16 " "ffn_act  *16 " "lm_head  *8 "; do
    grep -q "^$s" "$T/sum" || fail "ops summary lacks '$s': $(cat "$T/sum")"
done
"$KILN" run -m "$T/small.gguf" -p x --trace-detail ops >/dev/null 2>&1
[ $? -eq 2 ] || fail "--trace-detail without --trace should exit 2"
"$KILN" run -m "$T/small.gguf" -p x --trace "$T/x.json" --trace-detail all >/dev/null 2>&1
[ $? -eq 2 ] || fail "--trace-detail all should exit 2"

# kiln embed: an encoder (bert: no head) and a decoder (llama_embed: output_norm)
"$KILN" synth --arch bert --n-embd 64 --n-layer 3 --n-head 4 --n-ff 128 --ctx 64 --vocab 400 \
    --type q8_0 -q -o "$T/bert.gguf" >/dev/null || fail "synth bert"
for d in steps ops; do
    "$KILN" embed -m "$T/bert.gguf" -t 2 --batch-size 64 --trace "$T/e_$d.json" --trace-detail $d \
        "hello world" "a b c" "one more text to embed" >/dev/null 2>"$T/err" ||
        fail "embed --trace-detail $d: $(cat "$T/err")"
    grep -q "trace .*e_$d.json: [0-9]* events" "$T/err" || fail "embed does not report the trace"
    python3 "$V" "$T/e_$d.json" || fail "the $d trace of kiln embed is not valid"
done
python3 - "$T/e_steps.json" <<'PY' || fail "embed trace content"
import json, sys
d = json.load(open(sys.argv[1]))
xs = [e for e in d["traceEvents"] if e["ph"] == "X"]
names = {e["name"] for e in xs}
for n in ("tokenize", "embed_batch", "forward", "pool"):
    assert n in names, n
b = [e for e in xs if e["name"] == "embed_batch"]
assert sum(e["args"]["inputs"] for e in b) == 3 and all(e["args"]["tokens"] > 0 for e in b), b
assert not any(e.get("cat") == "op" for e in xs)
assert d["otherData"]["schedule"] == "kiln embed"
PY
check_ops "$T/e_ops.json" 3 - >/dev/null || fail "embed (bert): per-layer spans"
"$KILN" embed -m "$T/small.gguf" -t 2 --trace "$T/ed.json" --trace-detail ops "hello" "world" \
    >/dev/null 2>"$T/err" || fail "embed (decoder) --trace: $(cat "$T/err")"
python3 "$V" "$T/ed.json" || fail "the trace of kiln embed (decoder) is not valid"
check_ops "$T/ed.json" 2 output_norm >/dev/null || fail "embed (decoder): per-layer spans"

# kiln bench-model: a pp and a tg span per run (rep 0: the warm-up), forward per decode call
"$KILN" bench-model -m "$T/small.gguf" -p 16 -n 8 -r 2 -t 2 --quick --trace "$T/bench.json" \
    --trace-detail ops >/dev/null 2>"$T/err" || fail "bench-model --trace: $(cat "$T/err")"
grep -q "trace .*bench.json: [0-9]* events" "$T/err" || fail "bench-model does not report the trace"
python3 "$V" "$T/bench.json" || fail "the trace of kiln bench-model is not valid"
check_ops "$T/bench.json" 2 - >/dev/null || fail "bench-model: per-layer spans"
python3 - "$T/bench.json" <<'PY' || fail "bench-model trace content"
import json, sys
d = json.load(open(sys.argv[1]))
xs = [e for e in d["traceEvents"] if e["ph"] == "X"]
pp = [e for e in xs if e["name"] == "pp"]
tg = [e for e in xs if e["name"] == "tg"]
assert sorted(e["args"]["rep"] for e in pp) == [0, 1, 2], pp
assert sorted(e["args"]["rep"] for e in tg) == [0, 1, 2], tg
fwd = [e for e in xs if e["name"] == "forward"]
assert len(fwd) == 3 * (1 + 8), len(fwd)
assert d["otherData"]["schedule"] == "kiln bench-model" and d["otherData"]["threads"] == 2
PY
"$KILN" bench-model -m "$T/bert.gguf" --embed --batch-sizes 4 -r 1 --query-reps 2 -t 1 --quick \
    --trace "$T/bench_e.json" >/dev/null 2>"$T/err" || fail "bench-model --embed --trace: $(cat "$T/err")"
python3 "$V" "$T/bench_e.json" || fail "the trace of kiln bench-model --embed is not valid"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
n = {e["name"] for e in d["traceEvents"] if e["ph"] == "X"}
assert {"embed_run", "embed_batch", "forward", "pool", "tokenize"} <= n, n' "$T/bench_e.json" ||
    fail "bench-model --embed trace content"

# A/B: three runs per side, alternated
for i in 1 2 3; do
    run "$T/small.gguf" "$T/a$i.json"
    run "$T/small.gguf" "$T/b$i.json"
    run "$T/wide.gguf" "$T/w$i.json"
done
python3 "$V" "$T"/a?.json "$T"/w?.json || fail "A/B traces not valid"
# one setup: no difference beyond 30% (a shared, loaded CI machine drifts:
# a run that met a busy core for part of it moves the mean by 10-20%; the
# wide model's forward passes below are several times slower)
"$KILN" trace compare --min-change 30 --a "$T"/a?.json --b "$T"/b?.json >"$T/same" 2>&1 || fail "compare exit $?"
for s in step forward; do
    grep -q "^$s .*within noise" "$T/same" || fail "same setup: $s flagged: $(cat "$T/same")"
done
grep -q "no significant difference\|significant difference" "$T/same" || fail "no verdict line"
"$KILN" trace compare --a "$T"/a?.json --b "$T"/w?.json >"$T/diff" 2>&1 || fail "compare exit $?"
for s in step forward; do
    grep -q "^$s .*SLOWER" "$T/diff" || fail "wider model: $s not SLOWER: $(cat "$T/diff")"
done
grep -q "significant differences (B vs A)" "$T/diff" || fail "no count of differences"
# gzip and plain traces mix; the text is the same whatever the files' form
gzip -k "$T"/w?.json
"$KILN" trace compare --a "$T"/a?.json --b "$T"/w?.json.gz >"$T/diffz" 2>&1 || fail "compare .gz exit $?"
cmp -s "$T/diff" "$T/diffz" || fail "compare of .gz traces differs: $(diff "$T/diff" "$T/diffz")"

# compare --html: a self-contained page; a hostile file name stays text
cp "$T/a1.json" "$T/<b>a1.json"
"$KILN" trace compare --a "$T/<b>a1.json" "$T"/a[23].json --b "$T"/w?.json --html "$T/d.html" \
    >"$T/diffh" 2>&1 || fail "compare --html exit $?"
"$KILN" trace compare --min-change 30 --a "$T"/a?.json --b "$T"/b?.json --html "$T/s.html" \
    >/dev/null 2>&1 || fail "compare --html (same setup) exit $?"
[ -s "$T/d.html" ] || fail "no HTML report"
grep -qE '<(link|img|iframe)[^>]* (src|href)=|<script[^>]* src=' "$T/d.html" &&
    fail "the report loads external resources"
if [ -z "$CHROME" ]; then
    echo "note: chromium not found; the HTML report was not rendered"
else
    render "$T/d.html" >"$T/d.dom" || fail "chromium exit $? ($(tail -3 "$T/chrome.err"))"
    grep -qF '<div id="status">report rendered</div>' "$T/d.dom" &&
        grep -qF '<div id="errors"></div>' "$T/d.dom" ||
        fail "report did not render: $(grep -o '<div id="errors">[^<]*' "$T/d.dom")"
    for s in step forward sample prefill; do
        grep -q "<tr data-span=\"$s\"><td>$s</td>" "$T/d.dom" || fail "no row for $s in the page"
    done
    for s in step forward; do
        grep -o "<tr data-span=\"$s\">.*" "$T/d.dom" | sed 's|</tr>.*||' |
            grep -qF '<td class="sig">SLOWER</td>' || fail "$s not marked SLOWER in the page"
    done
    grep -qE '<div id="verdict"><b class="sig">[0-9]+ significant differences' "$T/d.dom" ||
        fail "no verdict line in the page"
    grep -q '<svg' "$T/d.dom" && grep -q 'Step time (CDF)' "$T/d.dom" || fail "no step-time chart"
    grep -qF '&lt;b&gt;a1.json' "$T/d.dom" || fail "file name not shown escaped"
    sed 's|<script id="data"[^>]*>.*</script>||' "$T/d.dom" | grep -qF '<b>a1.json' &&
        fail "file name rendered as markup"
    render "$T/s.html" >"$T/s.dom" || fail "chromium exit $? on the same-setup page"
    grep -qF '<div id="status">report rendered</div>' "$T/s.dom" || fail "same-setup page did not render"
    for s in step forward; do
        grep -o "<tr data-span=\"$s\">.*" "$T/s.dom" | sed 's|</tr>.*||' |
            grep -qF 'within noise' || fail "same setup: $s not within noise in the page"
    done
fi

[ $fails -eq 0 ] && echo "ok: kiln run --trace, trace summary and trace compare"
[ $fails -eq 0 ]
