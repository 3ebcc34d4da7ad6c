#!/usr/bin/env bash
# trace_viewers.sh - third-party viewers read Kiln's traces offline (issue
# 12): a `kiln run --trace` trace and a `kiln serve --diagnostics` profiler
# trace (two models, so two engine threads, and the http-prep threads that
# submit requests), both first accepted by trace_validate.py, are
#  - loaded into speedscope's bundled web app (npm speedscope) in headless
#    Chromium, the way its own command line does (a file:// page and a
#    #localProfilePath script that hands it the trace), and the rendered DOM
#    must list one profile per thread with slices, named from Kiln's
#    metadata: "kiln (pid P), engine (tid T)";
#  - parsed by Chrome DevTools' trace engine (npm @paulirish/trace_engine,
#    tests/tools/trace_engine_check.mjs): bounds, names and slices as the
#    file says.
# A copy with the thread names removed must fail both checks. The packages
# are pinned and installed with npm into $KILN_TEST_TMP/npm-viewers (kept
# between runs); without node, npm, chromium or the registry the test
# prints SKIP and the reason.
# Usage: bash trace_viewers.sh /path/to/kiln
set -u
KILN=${1:?usage: trace_viewers.sh /path/to/kiln}
TEST_NAME=trace-viewers
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../server/lib.sh"
TMP=${KILN_TEST_TMP:-/tmp}
VALIDATE=$HERE/../trace_validate.py
SPEEDSCOPE_VERSION=1.25.0
TRACE_ENGINE_VERSION=0.0.65

command -v python3 >/dev/null || {
    echo "SKIP: python3 is not installed"
    exit 0
}
command -v node >/dev/null && command -v npm >/dev/null || {
    echo "SKIP: node or npm is not installed"
    exit 0
}
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$CHROME" ] || {
    echo "SKIP: chromium not found (setup installs Debian's chromium)"
    exit 0
}

# the pinned packages, and what they pull in pinned too (trace_engine asks
# for "latest" of two data packages)
NPM=$TMP/npm-viewers
installed() { # installed PACKAGE VERSION
    [ "$(node -p "require('$NPM/node_modules/$1/package.json').version" 2>/dev/null)" = "$2" ]
}
if ! installed speedscope $SPEEDSCOPE_VERSION ||
    ! installed @paulirish/trace_engine $TRACE_ENGINE_VERSION; then
    mkdir -p "$NPM"
    cat >"$NPM/package.json" <<EOF
{"private": true, "description": "trace viewers for Kiln's tests/cli/trace_viewers.sh",
 "dependencies": {"speedscope": "$SPEEDSCOPE_VERSION",
                  "@paulirish/trace_engine": "$TRACE_ENGINE_VERSION"},
 "overrides": {"third-party-web": "0.30.0", "legacy-javascript": "0.0.1"}}
EOF
    if ! timeout 300 npm install --prefix "$NPM" --cache "$TMP/npm-cache" --no-audit --no-fund \
        --fetch-retry-mintimeout 2000 --fetch-retry-maxtimeout 10000 \
        --loglevel=error >"$T/npm.log" 2>&1; then
        echo "SKIP: npm install of speedscope and @paulirish/trace_engine failed (no registry?):" \
            "$(grep -m2 'npm error' "$T/npm.log" | tr '\n' ' ')"
        exit 0
    fi
    installed speedscope $SPEEDSCOPE_VERSION &&
        installed @paulirish/trace_engine $TRACE_ENGINE_VERSION ||
        fail "npm did not install the pinned versions: $(cat "$T/npm.log")"
fi
APP=$NPM/node_modules/speedscope/dist/release
[ -f "$APP/index.html" ] || fail "speedscope has no bundled app at $APP"

# the traces: kiln run, then the server's profiler over requests to two models
synth_models
"$KILN" run -m "$T/llama.gguf" -p "hello world" -n 32 --ignore-eos --seed 1 -t 1 \
    --trace "$T/run.json" >/dev/null 2>"$T/run.err" || fail "kiln run: $(cat "$T/run.err")"
J='Content-Type: application/json'
start_server prof -m a="$T/llama.gguf" -m b="$T/llama.gguf" --ctx 256 -t 1 --diagnostics
curl -s -m 30 -X POST -H "$J" -d '' "$URL/diagnostics/profiler/start?active_steps=10000" \
    >"$T/start.json" || fail "profiler start"
grep -q '"state":"recording"' "$T/start.json" || fail "profiler start: $(cat "$T/start.json")"
for m in a b a b; do
    body="{\"model\":\"$m\",\"prompt\":\"q\",\"max_tokens\":8,\"ignore_eos\":true,\"stream\":true}"
    curl -s -m 60 -N -o /dev/null -H "$J" "$URL/v1/completions" -d "$body" || fail "request to $m"
done
curl -s -m 30 -X POST -H "$J" -d '' "$URL/diagnostics/profiler/stop" >"$T/stop.json"
grep -q '"state":"stopped"' "$T/stop.json" || fail "profiler stop: $(cat "$T/stop.json")"
ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <"$T/stop.json")
curl -s -m 30 -o "$T/serve.json" "$URL/diagnostics/profiler/traces/$ID" || fail "get trace $ID"
stop_server
python3 "$VALIDATE" "$T/run.json" "$T/serve.json" || fail "trace_validate"
# the control: the run's trace without its thread names
python3 - "$T/run.json" "$T/nonames.json" <<'PY' || fail "cannot write the control"
import json, sys
d = json.load(open(sys.argv[1]))
d["traceEvents"] = [e for e in d["traceEvents"] if e.get("name") != "thread_name"]
json.dump(d, open(sys.argv[2], "w"))
PY

# Chrome DevTools' trace engine
timeout 120 node "$HERE/../tools/trace_engine_check.mjs" "$NPM" "$T/run.json" main \
    "$T/serve.json" engine,http-prep || fail "trace_engine"
timeout 120 node "$HERE/../tools/trace_engine_check.mjs" "$NPM" "$T/nonames.json" main \
    >"$T/nonames.te" 2>&1 && fail "trace_engine check passed a trace without thread names"
grep -q '^FAIL: .*no thread named "main"' "$T/nonames.te" ||
    fail "trace_engine control: $(cat "$T/nonames.te")"

# speedscope: TRACE -> $T/TRACE.dom, the page once the profile is imported
render() {
    local name=$1
    python3 - "$T/$name.json" "$T/$name.js" >"$T/$name.url" <<'PY' || fail "loader for $name"
import base64, json, os, sys, urllib.parse
# what speedscope's command line writes: a script that hands the app the file
data = base64.b64encode(open(sys.argv[1], "rb").read()).decode()
open(sys.argv[2], "w").write("speedscope.loadFileFromBase64(%s, %s)\n"
                             % (json.dumps(os.path.basename(sys.argv[1])), json.dumps(data)))
print("#localProfilePath=" + urllib.parse.quote(sys.argv[2]))
PY
    mkdir -p "$T/home"
    HOME="$T/home" timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu \
        --disable-dev-shm-usage --no-first-run --user-data-dir="$T/profile" \
        --virtual-time-budget=10000 --dump-dom "file://$APP/index.html$(cat "$T/$name.url")" \
        >"$T/$name.dom" 2>"$T/chrome.err" ||
        fail "chromium exit $? on $name ($(tail -5 "$T/chrome.err"))"
}
# speedscope_check TRACE DOM: the profiles speedscope names from TRACE's
# metadata (one per thread with slices) are all in DOM
speedscope_check() {
    python3 - "$1" "$2" <<'PY'
import html, json, os, re, sys
doc = json.load(open(sys.argv[1]))
dom = open(sys.argv[2], encoding="utf-8").read()
ev = doc["traceEvents"]
procs = {e["pid"]: e["args"]["name"] for e in ev if e["ph"] == "M" and e["name"] == "process_name"}
threads = {(e["pid"], e["tid"]): e["args"]["name"]
           for e in ev if e["ph"] == "M" and e["name"] == "thread_name"}
want = []
for pid, tid in sorted({(e["pid"], e["tid"]) for e in ev if e["ph"] in ("B", "E", "X")}):
    p, t = procs.get(pid), threads.get((pid, tid))
    assert p == "kiln" and t, "the trace itself lacks names for %d/%d" % (pid, tid)
    want.append("%s (pid %d), %s (tid %d)" % (p, pid, t, tid))
assert want, "no thread has slices"
shown = sorted(set(re.findall(r'kiln \(pid[^<"]*', dom)))
bad = []
loaded = os.path.basename(sys.argv[2])[: -len(".dom")] + ".json"
if "<title>%s - speedscope</title>" % loaded not in dom:
    bad.append("speedscope did not load it (title)")
bad += ["no profile %r" % w for w in want if html.escape(w) not in dom]
if len(want) > 1 and "(1/%d)" % len(want) not in dom:
    bad.append("not %d profiles" % len(want))
for b in bad:
    print("FAIL: speedscope: %s: %s; it shows %s" % (os.path.basename(sys.argv[2]), b, shown))
if not bad:
    print("%s: speedscope shows %s" % (os.path.basename(sys.argv[1]), "; ".join(want)))
sys.exit(1 if bad else 0)
PY
}
for name in run serve nonames; do render $name; done
speedscope_check "$T/run.json" "$T/run.dom" || fail "speedscope on kiln run's trace"
speedscope_check "$T/serve.json" "$T/serve.dom" || fail "speedscope on the profiler's trace"
speedscope_check "$T/run.json" "$T/nonames.dom" >"$T/nonames.ss" &&
    fail "speedscope check passed a trace without thread names"
grep -q "^FAIL: speedscope: nonames.dom: no profile 'kiln (pid [0-9]*), main" "$T/nonames.ss" ||
    fail "speedscope control: $(cat "$T/nonames.ss")"
echo "PASS (speedscope $SPEEDSCOPE_VERSION, @paulirish/trace_engine $TRACE_ENGINE_VERSION)"
