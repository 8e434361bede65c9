#!/usr/bin/env bash
# Runs every benchmark against the given (release) locus binary and prints ratios measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${1:-.build/release/locus}
mkdir -p bench/out
python3 bench/format_bench.py "$LOCUS" --json bench/out/format.json
