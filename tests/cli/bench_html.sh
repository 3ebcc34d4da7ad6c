#!/usr/bin/env bash
# kiln bench --html: the self-contained report (no external resources)
# renders in headless Chromium without script errors: its script writes
# "report rendered" into #status after drawing the SVG charts, and
# window.onerror writes any error into #errors. A copy with a thrown error
# shows the check catches failures. Skips when chromium is absent.
set -u
KILN=$1
T=${KILN_TEST_TMP:-/tmp}/cli-bench-html-$$
mkdir -p "$T"
fail() { echo "FAIL: $*"; exit 1; }
source "$(dirname "$0")/../bench/stub.sh"
source "$(dirname "$0")/../bench/chromium.sh"
[ -n "$CHROME" ] || { echo "SKIP: chromium not found (setup installs Debian's chromium)"; exit 0; }

# the model name lands in the page: make it hostile
timeout 60 "$KILN" bench -q --url "$STUB_URL/ttft=40/itl=5" --concurrency 1,4 --requests 12 \
    --model '</script><script>document.title="pwned"</script><b>m' \
    --max-tokens 6 --slo ttft=500ms --html "$T/r.html" --json "$T/r.json" >"$T/out" 2>&1 ||
    fail "bench exit $? ($(cat "$T/out"))"
grep -qE '<(link|img|iframe)[^>]* (src|href)=|<script[^>]* src=' "$T/r.html" &&
    fail "report loads external resources"
grep -qF '</script' <(python3 -c "
import re,sys; h=open('$T/r.html').read(); m=re.search(r'<script id=\"data\"[^>]*>(.*?)</script>', h, re.S)
print(m.group(1) if m else '</script MISSING')") && fail "embedded data broken"

render "$T/r.html" >"$T/dom.html" || fail "chromium exit $? ($(tail -5 "$T/chrome.err"))"
grep -qF '<div id="status">report rendered</div>' "$T/dom.html" ||
    fail "report did not render: $(grep -o '<div id="errors">[^<]*' "$T/dom.html")"
grep -qF '<div id="errors"></div>' "$T/dom.html" ||
    fail "script errors: $(grep -o '<div id="errors">[^<]*' "$T/dom.html")"
n_svg=$(grep -o '<svg' "$T/dom.html" | wc -l)
[ "$n_svg" -ge 8 ] || fail "expected >= 8 charts, got $n_svg"
grep -qF 'c=4' "$T/dom.html" || fail "levels not in the report"
grep -qF 'pwned</title>' "$T/dom.html" && fail "the model name was run as a script"
grep -qF '&lt;/script&gt;&lt;script&gt;document.title' "$T/dom.html" || fail "model name not shown escaped"

# a run where every request failed (nothing to plot) renders too, with embeddings
timeout 60 "$KILN" bench -q --url "$DEAD_URL" --no-models --workload embeddings --requests 3 \
    --html "$T/dead.html" >"$T/out" 2>&1 || fail "bench on a dead port exit $? ($(cat "$T/out"))"
render "$T/dead.html" >"$T/dead.dom" || fail "chromium exit $? on the failed run"
grep -qF '<div id="status">report rendered</div>' "$T/dead.dom" &&
    grep -qF '<div id="errors"></div>' "$T/dead.dom" ||
    fail "failed run's report: $(grep -o '<div id="errors">[^<]*' "$T/dead.dom")"
grep -qF 'connect 3' "$T/dead.dom" || fail "failed run's report lacks the error counts"

# the check catches a failing script
sed 's/var D=JSON.parse/throw new Error("planted");var D=JSON.parse/' "$T/r.html" >"$T/broken.html"
render "$T/broken.html" >"$T/broken.dom" || fail "chromium exit $? on the broken copy"
grep -qF '<div id="errors">script error: Uncaught Error: planted' "$T/broken.dom" || fail "planted error not caught"
grep -qF '<div id="status">report rendered' "$T/broken.dom" && fail "broken copy claims to be rendered"
echo "PASS ($n_svg charts)"
