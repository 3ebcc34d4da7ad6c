#!/usr/bin/env bash
# run.sh - Kiln's main job: `kiln serve` with every GGUF model found in
# $KILN_MODELS and ./models (names: the file names without .gguf). With none,
# it writes two small random-weight demo models with `kiln synth` (a llama
# for chat/completions and a bert for embeddings) under build/demo and serves
# those, saying loudly that their output is meaningless. Extra arguments go
# to `kiln serve` (e.g. --port 9000 --parallel 8); KILN_HOST/KILN_PORT set
# the address (default 127.0.0.1:8080).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
kiln="$top/build/kiln"
dirs=()
[ -n "${KILN_MODELS:-}" ] && dirs+=("$KILN_MODELS")
dirs+=("$top/models")
models=()
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    while IFS= read -r f; do models+=("$f"); done < <(find "$d" -maxdepth 1 -name '*.gguf' -type f | sort)
done
if [ ${#models[@]} -eq 0 ]; then
    demo="$top/build/demo"
    mkdir -p "$demo"
    [ -f "$demo/demo-llama.gguf" ] || "$kiln" synth --shape llama-mini --quiet -o "$demo/demo-llama.gguf"
    [ -f "$demo/demo-bert.gguf" ] || "$kiln" synth --shape minilm-l6 --type q8_0 --quiet -o "$demo/demo-bert.gguf"
    models=("$demo/demo-llama.gguf" "$demo/demo-bert.gguf")
    cat >&2 <<MSG
################################################################################
kiln: NO MODEL FOUND in ${KILN_MODELS:+\$KILN_MODELS ($KILN_MODELS) or }$top/models.
kiln: serving two RANDOM-WEIGHT DEMO MODELS written by 'kiln synth':
kiln:   demo-llama (chat, completions) and demo-bert (embeddings).
kiln: THEIR OUTPUT IS MEANINGLESS. They show that the API works, nothing more.
kiln: To serve a real model, put GGUF files in $top/models, e.g.
kiln:   mkdir -p models && cp /path/to/TinyLlama-1.1B-Chat-v1.0.Q4_K_M.gguf models/
kiln: (GGUF files: https://huggingface.co, e.g. TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF)
kiln: or point KILN_MODELS at a folder of them:  KILN_MODELS=/data/models make run
################################################################################
MSG
fi
args=()
for m in "${models[@]}"; do args+=(-m "$m"); done
echo "kiln: serving ${models[*]}" >&2
exec "$kiln" serve "${args[@]}" --host "${KILN_HOST:-127.0.0.1}" --port "${KILN_PORT:-8080}" "$@"
