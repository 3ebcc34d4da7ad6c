# chromium.sh - sourced by the tests of Kiln's HTML reports (tests/cli/
# bench_html.sh, tests/cli/trace.sh): CHROME, the headless browser found
# (empty when none), and render HTML, which loads the page in it and prints
# the DOM after its scripts ran (5 s of virtual time). Needs $T (a scratch
# folder); the browser's complaints go to $T/chrome.err.
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)

render() { # render FILE.html > dom
    mkdir -p "$T/home"
    HOME="$T/home" timeout 60 "$CHROME" --headless --no-sandbox --disable-gpu \
        --disable-dev-shm-usage --no-first-run --user-data-dir="$T/profile" \
        --virtual-time-budget=5000 --dump-dom "file://$1" 2>"$T/chrome.err"
}
