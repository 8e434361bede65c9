#!/usr/bin/env bash
# Runs every benchmark against the given (release) locus binary and prints ratios measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${1:-.build/release/locus}
mkdir -p bench/out
# Every benchmark runs R interleaved rounds (BENCH_ROUNDS, default 5): contender and baseline back to
# back in each round, medians and spread [min–max] reported, and whether each goal is met.
ROUNDS=${BENCH_ROUNDS:-5}
# Format layer: convert vs cp (and cp + fsync), inspect, mask size, on the real MiniLM checkpoint.
python3 bench/format_bench.py "$LOCUS" --rounds "$ROUNDS" --json bench/out/format.json
# Task-arithmetic and TIES merges vs the numpy + safetensors baseline; peak RSS.
python3 bench/merge_bench.py "$LOCUS" --rounds "$ROUNDS" --json bench/out/merge.json
# locus merge --config vs mergekit itself on the same configs (MiniLM and 8 fine-tuned models): every method.
python3 bench/mergekit_bench.py "$LOCUS" --rounds "$ROUNDS" --json bench/out/mergekit.json

# Fashion-MNIST as a dataset artifact (Debian package dataset-fashion-mnist), made once into bench/out/.
LOCUS_BENCH=${LOCUS_BENCH:-$(dirname "$LOCUS")/locus-bench}
FASHION=bench/out/fashion.h5
FASHION_IDX=/usr/share/datasets/fashion-mnist
if [ ! -f "$FASHION" ]; then
  if [ ! -f "$FASHION_IDX/train-images-idx3-ubyte.gz" ]; then
    echo "bench/run.sh: $FASHION_IDX is missing: apt-get install dataset-fashion-mnist" >&2
    exit 1
  fi
  "$LOCUS" data import "$FASHION_IDX/train-images-idx3-ubyte.gz" "$FASHION_IDX/train-labels-idx1-ubyte.gz" \
    "$FASHION_IDX/t10k-images-idx3-ubyte.gz" "$FASHION_IDX/t10k-labels-idx1-ubyte.gz" -o "$FASHION"
fi
# Training throughput vs PyTorch CPU (MLP and LeNet, batch 64 and 128) and the sgemm check:
python3 bench/engine_bench.py "$LOCUS" "$LOCUS_BENCH" "$FASHION" --rounds "$ROUNDS" --json bench/out/engine.json
# TaLoS scoring: efficient vs per-sample (same engine), vs the reference per-sample PyTorch loop
# (docs/talos.md), vs one training epoch.
python3 bench/score_bench.py "$LOCUS" "$LOCUS_BENCH" "$FASHION" --repeats "$((ROUNDS > 15 ? ROUNDS : 15))" --json bench/out/score.json
# Sparse optimizer steps (SparseSGDM, masked AdamW) vs a memcpy of the bytes they touch.
python3 bench/finetune_bench.py "$LOCUS" "$LOCUS_BENCH" --only step --json bench/out/finetune.json
# Vision transformer (ViT-Ti/16): training step vs PyTorch CPU, scoring vs the per-sample loop.
python3 bench/vit_bench.py "$LOCUS" "$LOCUS_BENCH" --rounds "$ROUNDS" --json bench/out/vit.json
# The PyTorch bridge: TaLoSScorer (locus_h5.torch) vs a per-sample backward loop and one training epoch, CPU.
python3 bench/torch_score_bench.py --rounds "$ROUNDS" --json bench/out/torch_score.json
# Reading torch.save state dicts: TorchCheckpointReader vs torch.load.
ROUNDS="$((ROUNDS > 7 ? ROUNDS : 7))" python3 bench/torch_read_bench.py
# Hugging Face folders in and out (a synthetic 2 GiB sharded bfloat16 model) vs cp, peak RSS; MiniLM .bin vs torch.load.
python3 bench/checkpoint_io_bench.py "$LOCUS" --rounds "$ROUNDS" --json bench/out/checkpoint_io.json
