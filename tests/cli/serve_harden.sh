#!/usr/bin/env bash
# serve_harden.sh - `kiln serve` against a hostile client (issue 11), each
# case in tests/server/hostile.py asserting status, body and that a normal
# request is still served promptly: slow headers, a slow request line and a
# slow body closed by the deadlines (408); a flood of stalled connections
# from another address (127.0.0.2) while a normal client is served in
# < 0.5 s, and beyond --max-connections from any address (503 with
# Retry-After at once, then served); eight multi-megabyte prompts beside
# small requests (each small one < 0.5 s); a NUL byte in the path, duplicate Content-Length, Content-Length
# beside Transfer-Encoding (400, closed), malformed Content-Length (400,
# closed); a client that half-closes after its request is answered;
# Content-Type other than JSON (415); max_tokens -1, prompt + max_tokens
# over the context, every token banned, a 1 MiB unknown key, a NUL in a
# string; a 413 read by a client that writes its whole body first; the API
# key forms, --metrics-key and --public-metrics; SIGTERM with a stream in
# flight, a kept-alive connection and a new client arriving during the
# drain. Rate-limited logging is checked on the flood's log.
# Usage: bash serve_harden.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_harden.sh /path/to/kiln}
TEST_NAME=serve-harden
. "$(dirname "$0")/../server/lib.sh"
command -v python3 >/dev/null || {
    echo "SKIP: python3 is not installed"
    exit 0
}
H="$(dirname "$0")/../server/hostile.py"
port() { echo "${URL##*:}"; }

synth_models

start_server h -m llama="$T/llama.gguf" --ctx 256 --parallel 2 -t 1 --header-timeout 2 \
    --body-min-rate 1000 --max-conns-per-ip 32 --max-body 65536
python3 "$H" "$(port)" nul_path dup_cl bad_cl content_type params body_413 half_close \
    slow_header slow_new slow_body flood || fail "hostile cases (log: $(tail -5 "$SRV_LOG"))"
# the flood's aborted connections did not flood the log
n=$(grep -c "kiln serve: " "$SRV_LOG")
[ "$n" -lt 80 ] || fail "log not rate-limited: $n lines"
stop_server

# head-of-line blocking: multi-megabyte prompts beside small requests
start_server hol -m llama="$T/llama.gguf" --ctx 256 --parallel 2 -t 1
python3 "$H" "$(port)" hol || fail "large prompts blocked small ones"
stop_server

start_server glob -m llama="$T/llama.gguf" --ctx 256 -t 1 --max-connections 40 \
    --max-conns-per-ip 0
python3 "$H" "$(port)" global || fail "global connection limit"
stop_server

start_server key -m llama="$T/llama.gguf" --ctx 256 -t 1 --api-key sekret --metrics-key mkey
python3 "$H" "$(port)" api_key metrics_key || fail "keys"
stop_server
start_server pub -m llama="$T/llama.gguf" --ctx 256 -t 1 --api-key sekret --public-metrics
python3 "$H" "$(port)" public_metrics || fail "--public-metrics"
stop_server

# drain: a model slow enough that a long stream outlives the deadline
"$KILN" synth --arch llama --n-embd 256 --n-layer 4 --n-head 4 --n-ff 1024 --ctx 8192 \
    --vocab 300 -q -o "$T/slow.gguf" >/dev/null || fail "synth slow"
start_server drain -m slow="$T/slow.gguf" --ctx 8192 --parallel 1 -t 1 --shutdown-timeout 2
SRV_PID=$SRV_PID python3 "$H" "$(port)" drain || { tail -20 "$SRV_LOG"; fail "drain"; }
for i in $(seq 300); do
    kill -0 $SRV_PID 2>/dev/null || break
    sleep 0.1
done
wait $SRV_PID
rc=$?
kill $SRV_WATCH 2>/dev/null
SRV_PID=
[ $rc -eq 0 ] || fail "drained server exited $rc"
echo "serve_harden: ok"
