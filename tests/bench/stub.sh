# stub.sh - sourced by tests/cli/bench_*.sh: starts tests/bench/stub_server.py
# on a free port (STUB_URL, STUB_PID), frees a port nobody listens on
# (DEAD_URL), and stops the stub on exit. Needs $T (a scratch folder) and
# fail() from the sourcing script; skips (exit 0) without python3.
STUB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v python3 >/dev/null || { echo "SKIP: python3 not found (the stub server needs it)"; exit 0; }
python3 "$STUB_DIR/stub_server.py" >"$T/stub.port" 2>"$T/stub.err" &
STUB_PID=$!
trap 'kill $STUB_PID 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
for _ in $(seq 200); do
    STUB_PORT=$(awk '/^PORT/{print $2}' "$T/stub.port")
    [ -n "$STUB_PORT" ] && break
    sleep 0.05
done
[ -n "$STUB_PORT" ] || fail "stub server did not start: $(cat "$T/stub.err")"
STUB_URL=http://127.0.0.1:$STUB_PORT
# a port that refuses connections: bound by the kernel, then closed
DEAD_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
DEAD_URL=http://127.0.0.1:$DEAD_PORT
