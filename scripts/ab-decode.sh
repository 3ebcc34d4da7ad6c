#!/bin/bash
# ab-decode.sh - decode speed of two or more kiln builds or settings, measured
# alternately so that they share the host's moods (its memory bandwidth moves
# by 10-20% from minute to minute), with the median of each.
#
# usage: scripts/ab-decode.sh ROUNDS MODEL VARIANT...
#   VARIANT  LABEL=KILN_BINARY, optionally followed by :ENV=VALUE[,ENV=VALUE]
#            and by @ARG[,ARG...] (more arguments for kiln run)
# e.g.   scripts/ab-decode.sh 4 model.gguf old=/tmp/kiln-old new=build/kiln \
#            mapped=build/kiln:KILN_MMAP=1 traced=build/kiln@--trace,/tmp/t.json
# Each round runs every variant once: kiln run -p "Once upon a time" -n 96
# -t 2 --ignore-eos (N=... and THREADS=... in the environment change -n and
# -t), and reads the generation tokens/s of its summary.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '6,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
rounds=$1 model=$2
shift 2
declare -A got
for ((r = 0; r < rounds; r++)); do
    for v in "$@"; do
        label=${v%%=*} rest=${v#*=} args=""
        [[ $rest == *@* ]] && args=${rest#*@} rest=${rest%%@*}
        bin=${rest%%:*} envs=""
        [[ $rest == *:* ]] && envs=${rest#*:}
        tps=$(env ${envs//,/ } "$bin" run -m "$model" -p "Once upon a time" -n "${N:-96}" \
            -t "${THREADS:-2}" --ignore-eos ${args//,/ } 2>&1 >/dev/null |
            awk '/^generation/ {print $(NF-1)}' || true)
        [ -n "$tps" ] || { echo "ab-decode: $label: no generation line from $bin" >&2; exit 1; }
        got[$label]="${got[$label]:-} $tps"
    done
done
for v in "$@"; do
    label=${v%%=*}
    sorted=$(tr ' ' '\n' <<<"${got[$label]}" | sed '/^$/d' | sort -g | tr '\n' ' ')
    awk -v l="$label" -v all="${got[$label]}" -v s="$sorted" 'BEGIN {
        n = split(s, x, " "); m = n % 2 ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
        sub(/^ /, "", all); printf "%-12s median %6.1f tokens/s  [%s]\n", l, m, all }'
done
