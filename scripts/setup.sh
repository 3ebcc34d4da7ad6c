#!/usr/bin/env bash
# setup.sh - installs the Debian 12 packages Kiln needs to build and test
# (python3 checks JSON output in the command-line tests; node/npm run the
# official openai client against the server, promtool from prometheus checks
# /metrics, chromium renders kiln bench's HTML report, wrk benchmarks HTTP).
# Run as root (or with sudo) to install what is missing; as another user it
# only checks and prints the command to run. Idempotent and quick when all
# packages are present.
set -euo pipefail

PKGS=(build-essential cmake pkg-config clang libclang-rt-14-dev libcmocka-dev libpcre2-dev libutf8proc-dev libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev zlib1g-dev
      python3 curl prometheus chromium wrk)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js may come from Debian (nodejs + npm) or elsewhere (NodeSource's
# nodejs bundles npm and conflicts with Debian's): only the commands matter.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "kiln setup: missing Debian packages: ${missing[*]}" >&2
    echo "kiln setup: install them with:  sudo apt-get install -y ${missing[*]}" >&2
    echo "kiln setup: (or run this script as root: sudo $0)" >&2
    exit 1
fi
echo "kiln setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
echo "kiln setup: done" >&2
