#!/usr/bin/env bash
# fuzz.sh [SECONDS] - builds the libFuzzer target for the GGUF reader with
# clang (ASan+UBSan) and runs it for SECONDS (default 60). Seeds: GGUF files
# from $KILN_TEST_DATA (../shared by default) when present, plus a file the
# test suite writes. Fails if the fuzzer finds a crash, leak or overread.
set -euo pipefail
secs=${1:-60}
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=fuzzer \
    -DKILN_FUZZ=ON -DKILN_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_gguf >/dev/null
corpus=build-fuzz/corpus
mkdir -p "$corpus"
data=${KILN_TEST_DATA:-$top/../shared}
if [ -d "$data/models" ]; then
    # small files only: libFuzzer mutates the first -max_len bytes anyway
    find "$data/models" -name '*.gguf' -size -5M -exec cp -n {} "$corpus/" \;
else
    echo "fuzz: no shared models at $data; seeding with a minimal header only" >&2
fi
printf 'GGUF\003\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$corpus/empty-v3.gguf"
echo "fuzz: running fuzz_gguf for ${secs}s on $(ls "$corpus" | wc -l) seeds" >&2
./build-fuzz/fuzz/fuzz_gguf -max_total_time="$secs" -max_len=262144 -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 "$corpus" 2>build-fuzz/fuzz.log || {
    tail -50 build-fuzz/fuzz.log >&2
    echo "fuzz: the fuzzer found a failure (log: build-fuzz/fuzz.log)" >&2
    exit 1
}
grep -E 'stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb' build-fuzz/fuzz.log >&2 || true
echo "fuzz: no failures in ${secs}s" >&2
