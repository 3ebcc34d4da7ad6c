#!/usr/bin/env bash
# serve_openai.sh - `kiln serve` with the official `openai` npm package as
# the client (tests/server/openai_client.mjs): chat and completions, with
# and without streaming, and embeddings as floats and base64, must equal
# what `kiln chat`, `kiln run` and `kiln embed` print for the same inputs
# at temperature 0. The package is installed with npm into
# $KILN_TEST_TMP/npm (kept between runs); without node/npm or the registry
# the test prints SKIP and the reason.
# Usage: bash serve_openai.sh /path/to/kiln
set -u
KILN=${1:?usage: serve_openai.sh /path/to/kiln}
TMP=${KILN_TEST_TMP:-/tmp}
T=$TMP/cli-serve-openai-$$
mkdir -p "$T"
SRV_PID=
trap 'kill_server; rm -rf "$T"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../server/lib.sh"

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "SKIP: node or npm is not installed"
    exit 0
}
NPM=$TMP/npm
if [ ! -f "$NPM/node_modules/openai/package.json" ]; then
    if ! timeout 180 npm install --prefix "$NPM" --cache "$TMP/npm-cache" --no-audit --no-fund \
        --loglevel=error openai >"$T/npm.log" 2>&1; then
        echo "SKIP: npm install openai failed (no registry?): $(tail -3 "$T/npm.log")"
        exit 0
    fi
fi

synth_models
# embeddings: the shared mini-bert (a real vocabulary) when present
BERT=$T/bert.gguf
if [ -n "${KILN_TEST_DATA:-}" ] && [ -f "$KILN_TEST_DATA/models/mini-bert-Q8_0.gguf" ]; then
    BERT=$KILN_TEST_DATA/models/mini-bert-Q8_0.gguf
else
    echo "note: KILN_TEST_DATA has no mini-bert; embeddings use a synthetic bert"
fi
N=12
CHAT_PROMPT="Hello, who are you?"
COMP_PROMPT="Once upon a time"
printf '%s\n' "$CHAT_PROMPT" | "$KILN" chat -m "$T/llama.gguf" --chat-template chatml -n $N \
    --temp 0 -t 1 >"$T/chat.out" 2>"$T/chat.err" || fail "kiln chat: $(cat "$T/chat.err")"
"$KILN" run -m "$T/llama.gguf" -p "$COMP_PROMPT" -n $N --temp 0 -t 1 >"$T/run.out" \
    2>"$T/run.err" || fail "kiln run: $(cat "$T/run.err")"
"$KILN" embed -m "$BERT" -t 1 "hello world" "the cat sat on the mat" >"$T/embed.json" \
    2>"$T/embed.err" || fail "kiln embed: $(cat "$T/embed.err")"
python3 - "$T" "$N" "$CHAT_PROMPT" "$COMP_PROMPT" <<'PY' || fail "cannot write the expected answers"
import json, sys
t, n, chat_prompt, comp_prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
read = lambda p: open(p, encoding="utf-8", errors="surrogateescape").read()
chat = read(t + "/chat.out")
run = read(t + "/run.out")
assert chat.endswith("\n") and run.startswith(comp_prompt) and run.endswith("\n")
assert len(chat) > 1 and len(run) > len(comp_prompt) + 1, "empty answers prove nothing"
emb = json.load(open(t + "/embed.json"))
json.dump({"n": n, "chat_prompt": chat_prompt, "chat": chat[:-1],
           "completion_prompt": comp_prompt, "completion": run[len(comp_prompt):-1],
           "embed_inputs": ["hello world", "the cat sat on the mat"],
           "embeddings": [d["embedding"] for d in emb["data"]]},
          open(t + "/expected.json", "w"))
PY

KEY=test-key
start_server openai -m "$T/llama.gguf" -m emb="$BERT" --chat-template chatml -t 1 \
    --api-key "$KEY"
timeout 120 node "$HERE/../server/openai_client.mjs" "$NPM" "$URL" "$KEY" "$T/expected.json" ||
    fail "openai client checks"
stop_server
echo "PASS"
