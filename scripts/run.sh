#!/usr/bin/env bash
# run.sh - Kiln's main job for now: generate text with `kiln run` from the
# first GGUF model found in $KILN_MODELS or ./models. Extra arguments are
# passed to `kiln run` (e.g. -p "prompt" -n 128).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
kiln="$top/build/kiln"
dirs=()
[ -n "${KILN_MODELS:-}" ] && dirs+=("$KILN_MODELS")
dirs+=("$top/models")
model=""
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    model=$(find "$d" -maxdepth 1 -name '*.gguf' -type f | sort | head -1)
    [ -n "$model" ] && break
done
if [ -z "$model" ]; then
    cat >&2 <<MSG
kiln: no model found in ${KILN_MODELS:+\$KILN_MODELS ($KILN_MODELS) or }$top/models.
To get one, either:
  - copy any Llama-family GGUF file there, for example
      mkdir -p models && cp /path/to/TinyLlama-1.1B-Chat-v1.0.Q4_K_M.gguf models/
    (download GGUF files from https://huggingface.co, e.g. TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF), or
  - point KILN_MODELS at a folder of GGUF files:  KILN_MODELS=/data/models make run
  - or write a random-weight test model (its text is gibberish):
      ./build/kiln synth --arch llama --shape llama-mini -o models/synth-llama.gguf
MSG
    exit 1
fi
echo "kiln: using $model" >&2
has_prompt=0
for a in "$@"; do case "$a" in -p|--prompt) has_prompt=1 ;; esac; done
[ $has_prompt -eq 1 ] || set -- -p "Once upon a time" "$@"
[ $# -gt 2 ] || set -- "$@" -n 64
exec "$kiln" run -m "$model" "$@"
