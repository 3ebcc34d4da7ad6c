# lib.sh - helpers for the `kiln serve` shell tests (tests/cli/serve_*.sh):
# make synthetic models, start a server on a free port (--port 0, the port
# read from its start-up log), make requests with curl, stop it with SIGTERM
# and check that it exits 0. Sourced; expects KILN (the binary) and either
# TEST_NAME - then it sets up the rest: T (a scratch folder, removed at
# exit with the server stopped), SRV_PID and fail() - or, without
# TEST_NAME, T and a fail() function of the caller's own.

if [ -n "${TEST_NAME:-}" ]; then
    T=${KILN_TEST_TMP:-/tmp}/cli-$TEST_NAME-$$
    mkdir -p "$T"
    SRV_PID=
    trap 'kill_server; rm -rf "$T"' EXIT
    fail() {
        echo "FAIL: $*"
        exit 1
    }
fi

command -v curl >/dev/null || {
    echo "SKIP: curl is not installed"
    exit 0
}

# Generous limits: the tests also run under ASan on a busy machine.
SRV_START_TIMEOUT=${SRV_START_TIMEOUT:-60}

# synth_models: $T/llama.gguf (decoder, ctx 256) and $T/bert.gguf (encoder).
synth_models() {
    "$KILN" synth --arch llama --n-embd 64 --n-layer 2 --n-head 4 --n-ff 128 --ctx 256 \
        --vocab 300 -q -o "$T/llama.gguf" >/dev/null || fail "synth llama"
    "$KILN" synth --arch bert --n-embd 64 --n-layer 2 --n-head 4 --n-ff 128 --ctx 64 \
        --vocab 400 --type q8_0 -q -o "$T/bert.gguf" >/dev/null || fail "synth bert"
}

# start_server NAME ARGS...: starts `kiln serve ARGS --port 0` (logging to
# $T/NAME.log), waits until /health answers 200 (unless SRV_NO_WAIT is
# set); sets SRV_PID and URL.
start_server() {
    local name=$1
    shift
    SRV_LOG=$T/$name.log
    "$KILN" serve "$@" --port 0 >"$SRV_LOG" 2>&1 &
    SRV_PID=$!
    # a watchdog: no server outlives its test by much, whatever happens
    (sleep 300 && kill -9 $SRV_PID) >/dev/null 2>&1 &
    SRV_WATCH=$!
    local port="" i
    for i in $(seq $((SRV_START_TIMEOUT * 10))); do
        port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$SRV_LOG" | head -1)
        [ -n "$port" ] && break
        kill -0 $SRV_PID 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$SRV_LOG"; fail "server $name did not start"; }
    URL=http://127.0.0.1:$port
    [ -n "${SRV_NO_WAIT:-}" ] && return 0
    for i in $(seq $((SRV_START_TIMEOUT * 10))); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")" = 200 ] && return 0
        sleep 0.1
    done
    cat "$SRV_LOG"
    fail "server $name never became healthy"
}

# stop_server: SIGTERM, then the exit status must be 0 within 60 s.
stop_server() {
    kill -TERM $SRV_PID 2>/dev/null
    local i
    for i in $(seq 600); do
        kill -0 $SRV_PID 2>/dev/null || break
        sleep 0.1
    done
    wait $SRV_PID
    local rc=$?
    kill $SRV_WATCH 2>/dev/null
    SRV_PID=
    [ $rc -eq 0 ] || { tail -30 "$SRV_LOG"; fail "server exited $rc after SIGTERM"; }
    grep -q "stopped" "$SRV_LOG" || fail "server log lacks 'stopped'"
}

# req METHOD PATH [BODY [curl args...]]: the status in $CODE, the body in
# $T/resp, the headers in $T/hdr.
req() {
    local method=$1 path=$2 body=${3-}
    shift 3 2>/dev/null || shift $#
    if [ -n "$body" ]; then
        CODE=$(curl -s -m 60 -X "$method" -o "$T/resp" -D "$T/hdr" -w '%{http_code}' \
            -H 'Content-Type: application/json' --data-binary "$body" "$@" "$URL$path")
    else
        CODE=$(curl -s -m 60 -X "$method" -o "$T/resp" -D "$T/hdr" -w '%{http_code}' "$@" \
            "$URL$path")
    fi
}

# expect_error WHAT STATUS TYPE PARAM CODE: the last response has that
# status (checked now) and is an OpenAI error with that type, param and code
# ('-': not checked; 'null': JSON null), checked by check_errors (one python
# run for all of them: python starts slowly on a busy machine).
N_ERR=0
expect_error() {
    local what=$1 status=$2
    [ "$CODE" = "$status" ] || fail "$what: status $CODE, want $status: $(head -c 300 "$T/resp")"
    N_ERR=$((N_ERR + 1))
    cp "$T/resp" "$T/err_$N_ERR.json"
    printf '%s\t%s\t%s\t%s\t%s\n' "$T/err_$N_ERR.json" "$1" "$3" "$4" "$5" >>"$T/errors.tsv"
}

check_errors() {
    [ -f "$T/errors.tsv" ] || return 0
    python3 - "$T/errors.tsv" <<'PY' || fail "error bodies"
import json, sys
bad = 0
for line in open(sys.argv[1]):
    path, what, *want = line.rstrip("\n").split("\t")
    try:
        e = json.load(open(path))["error"]
        assert isinstance(e["message"], str) and e["message"], "no message"
        for key, w in zip(("type", "param", "code"), want):
            if w == "-":
                continue
            got = e[key]
            assert (got is None and w == "null") or got == w, (key, got, w)
    except Exception as ex:
        print("FAIL: %s: %r: %s" % (what, ex, open(path).read()[:300]))
        bad += 1
sys.exit(1 if bad else 0)
PY
}

# kill_server: for the EXIT trap: SIGTERM, then SIGKILL after 10 s.
kill_server() {
    [ -n "${SRV_PID:-}" ] || return 0
    kill -TERM $SRV_PID 2>/dev/null
    local i
    for i in $(seq 100); do
        kill -0 $SRV_PID 2>/dev/null || break
        sleep 0.1
    done
    kill -9 $SRV_PID 2>/dev/null
    kill $SRV_WATCH 2>/dev/null
}

# metric NAME_WITH_LABELS: its value in /metrics (empty when absent).
metric() {
    curl -s -m 30 "$URL/metrics" | awk -v n="$1" '$1 == n {print $2}'
}

# wait_metric NAME_WITH_LABELS VALUE: true once /metrics shows that value
# (within 10 s: gauges follow the engine's step and MHD's completion).
wait_metric() {
    local i
    for i in $(seq 100); do
        [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}
