#!/usr/bin/env bash
# The TaLoS pipeline on real data, as a script of `locus` commands (make demo runs it).
#
#   base model:  MLP 784-256-256 (MODEL=mlp, the default) or a tiny vision transformer (MODEL=vit:
#                7×7 patches of the 28×28 images, width 64, 4 blocks of 4 heads, MLP ratio 2; timm's
#                layout), pre-trained on Fashion-MNIST (Debian's dataset-fashion-mnist)
#   four tasks:  MNIST-5k, scikit-learn digits upsampled to 28x28, MNIST-5k rotated 90°,
#                Fashion-MNIST test images inverted — each with its own head, linear-probed on the
#                base and then frozen
#   per task:    score → mask (TaLoS, 4 rounds) → sparse finetune → sparse task vector, and the
#                baselines with the same budget: dense fine-tuning, a random mask and the
#                highest-score mask of the same density; learning rate chosen on validation
#   merges:      task arithmetic of every family, TIES on the dense vectors, consensus on TaLoS;
#                α chosen on validation by average normalized accuracy
#   sweep:       density 5 / 10 / 30 / 50 % for TaLoS and random masks
#   negation:    subtract the MNIST vector, keeping Fashion-MNIST (control) ≥ 95 % of the base
#
# Artifacts land in out/demo/; examples/report.py turns the JSON results into out/demo/results.md
# and SVG figures. SCALE=small (the test suite) shrinks every step.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${LOCUS:-.build/release/locus}
OUT=${OUT:-out/demo}
SCALE=${SCALE:-full}
MODEL=${MODEL:-mlp}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
Q=--quiet
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
L() { "$LOCUS" "$@"; }
json_get() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

if [ "$SCALE" = small ]; then
  BASE_EPOCHS=1; PROBE_EPOCHS=2; FT_EPOCHS=1; LRS="3e-3"; DENSITIES="0.1 0.5"; SCORE_BATCHES=4; GRID=0:1:0.25; TASKS="mnist digits"
else
  BASE_EPOCHS=3; PROBE_EPOCHS=5; FT_EPOCHS=5; LRS="1e-3 3e-3"; DENSITIES="0.05 0.1 0.3 0.5"; SCORE_BATCHES=20; GRID=0:1:0.05; TASKS="mnist digits rotated fashinv"
fi
SEED=0
RES="$OUT/results.jsonl"; : > "$RES"
record() { echo "$1" >> "$RES"; }

step "1. Data: import the real sets and derive the tasks"
L data import "$FASHION/train-images-idx3-ubyte.gz" "$FASHION/train-labels-idx1-ubyte.gz" \
  "$FASHION/t10k-images-idx3-ubyte.gz" "$FASHION/t10k-labels-idx1-ubyte.gz" -o "$OUT/fashion.h5" $Q \
  --class-names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
L data import "$FASHION/t10k-images-idx3-ubyte.gz" "$FASHION/t10k-labels-idx1-ubyte.gz" --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/fashion-t10k.h5" $Q
L data import fixtures/data/mnist_5k.csv.gz --image-shape 1,28,28 --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/mnist.h5" $Q
L data import fixtures/data/digits.csv.gz --image-shape 1,8,8 --scale 1/16 --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/digits8.h5" $Q
L data derive "$OUT/digits8.h5" --transform resize=28,28 -o "$OUT/digits.h5" $Q
L data derive "$OUT/mnist.h5" --transform rotate90 -o "$OUT/rotated.h5" $Q
L data derive "$OUT/fashion-t10k.h5" --transform invert -o "$OUT/fashinv.h5" $Q
for t in $TASKS; do L inspect "$OUT/$t.h5" | sed -n 5,6p; done

case $MODEL in
  mlp) step "2. Base model: MLP 784-256-256 pre-trained on Fashion-MNIST"
       L init --preset mlp --hidden 256,256 --data "$OUT/fashion.h5" --head fashion --seed $SEED -o "$OUT/base0.h5" >/dev/null
       BASE_LR=1e-3; BASE_EXTRA="" ;;
  vit) step "2. Base model: a tiny ViT (patch 7, width 64, depth 4, 4 heads) pre-trained on Fashion-MNIST"
       L init --preset vit --patch-size 7 --width 64 --depth 4 --num-heads 4 --mlp-ratio 2 --data "$OUT/fashion.h5" --head fashion \
         --seed $SEED -o "$OUT/base0.h5" >/dev/null
       BASE_LR=2e-3; BASE_EXTRA="--warmup 0.05" ;;   # transformers want a warm-up
  *) echo "MODEL must be mlp or vit" >&2; exit 2 ;;
esac
record "{\"kind\": \"model\", \"model\": \"$MODEL\", \"description\": \"$([ $MODEL = vit ] && echo 'tiny ViT (7×7 patches, width 64, 4 blocks × 4 heads, timm layout)' || echo 'MLP 784-256-256')\"}"
L train "$OUT/base0.h5" "$OUT/fashion.h5" --head fashion --epochs $BASE_EPOCHS --lr $BASE_LR $BASE_EXTRA --seed $SEED -o "$OUT/base.h5" $Q | tail -2
L eval "$OUT/base.h5" "$OUT/fashion.h5" --head fashion --split test --json > "$OUT/base-fashion.json"
record "{\"kind\": \"base\", \"fashion_test\": $(json_get "$OUT/base-fashion.json" 'd[0]["accuracy"]')}"

step "3. A head per task, linear-probed on the frozen base (then kept frozen)"
for t in $TASKS; do
  L train "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --add-head --linear-probe --epochs $PROBE_EPOCHS --lr 1e-2 --seed $SEED -o "$OUT/base.h5" $Q | tail -1
done
for t in $TASKS; do
  L eval "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --split test --json > "$OUT/heads-only-$t.json"
  record "{\"kind\": \"heads-only\", \"task\": \"$t\", \"test\": $(json_get "$OUT/heads-only-$t.json" 'd[0]["accuracy"]')}"
done

# mask FAMILY DENSITY TASK → $OUT/mask-FAMILY-DENSITY-TASK.h5
make_mask() {
  local fam=$1 d=$2 t=$3 out="$OUT/mask-$1-$2-$3.h5"
  case $fam in
    talos)   L mask "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --density "$d" --batches $SCORE_BATCHES --seed $SEED -o "$out" $Q >/dev/null ;;
    highest) L mask "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --density "$d" --keep highest --batches $SCORE_BATCHES --seed $SEED -o "$out" $Q >/dev/null ;;
    random)  L mask "$OUT/base.h5" --method random --density "$d" --seed $SEED -o "$out" $Q >/dev/null ;;
    dense)   L mask "$OUT/base.h5" --method random --density 1 -o "$out" $Q >/dev/null ;;
  esac
}

# finetune FAMILY DENSITY TASK: the learning-rate grid, best on validation → tv-FAMILY-DENSITY-TASK.h5
finetune_best() {
  local fam=$1 d=$2 t=$3 best="" bestacc=-1
  for lr in $LRS; do
    local ft="$OUT/ft-$fam-$d-$t-$lr.h5" tv="$OUT/tv-$fam-$d-$t-$lr.h5"
    L finetune "$OUT/base.h5" "$OUT/$t.h5" --mask "$OUT/mask-$fam-$d-$t.h5" --head "$t" --epochs $FT_EPOCHS --lr "$lr" \
      --seed $SEED -o "$ft" --task-vector "$tv" $Q --json > "$OUT/ft-$fam-$d-$t-$lr.json"
    local acc; acc=$(json_get "$OUT/ft-$fam-$d-$t-$lr.json" 'd[-1]["validationAccuracy"]')
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$acc" "$bestacc"; then best=$lr; bestacc=$acc; fi
  done
  cp "$OUT/tv-$fam-$d-$t-$best.h5" "$OUT/tv-$fam-$d-$t.h5"
  cp "$OUT/ft-$fam-$d-$t-$best.h5" "$OUT/ft-$fam-$d-$t.h5"
  L eval "$OUT/ft-$fam-$d-$t.h5" "$OUT/$t.h5" --head "$t" --split test --json > "$OUT/single-$fam-$d-$t.json"
  local bytes; bytes=$(stat -c %s "$OUT/tv-$fam-$d-$t.h5")
  record "{\"kind\": \"single\", \"family\": \"$fam\", \"density\": $d, \"task\": \"$t\", \"lr\": $best, \"val\": $bestacc, \"test\": $(json_get "$OUT/single-$fam-$d-$t.json" 'd[0]["accuracy"]'), \"tv_bytes\": $bytes}"
}

# merge METHOD NAME VECTORS…: α on validation, then test accuracy of every task at that α
merge_eval() {
  local method=$1 name=$2; shift 2
  local vecs=() evals=()
  for t in $TASKS; do vecs+=("$OUT/$1-$t.h5"); evals+=("$OUT/$t.h5"); done
  L merge "$OUT/base.h5" "${vecs[@]}" --method "$method" --alpha-grid $GRID --eval "${evals[@]}" \
    --alpha-json "$OUT/alpha-$name.json" --plot "$OUT/alpha-$name.svg" -o "$OUT/merged-$name.h5" > "$OUT/merge-$name.txt"
  local tests=""
  for t in $TASKS; do
    L eval "$OUT/merged-$name.h5" "$OUT/$t.h5" --head "$t" --split test --json > "$OUT/merged-$name-$t.json"
    tests="$tests\"$t\": $(json_get "$OUT/merged-$name-$t.json" 'd[0]["accuracy"]'),"
  done
  record "{\"kind\": \"merged\", \"name\": \"$name\", \"method\": \"$method\", \"alpha\": $(json_get "$OUT/alpha-$name.json" 'd["best_alpha"]'), \"test\": {${tests%,}}}"
}

step "4. Per task: TaLoS mask → sparse fine-tuning, and the baselines (dense, random, highest-score)"
for t in $TASKS; do
  for fam in talos random highest; do make_mask $fam 0.1 $t; finetune_best $fam 0.1 $t; done
  make_mask dense 1 $t; finetune_best dense 1 $t
  echo "  $t done" >&2
done

step "5. Merges, α chosen on validation"
merge_eval task-arithmetic talos-0.1 tv-talos-0.1
merge_eval task-arithmetic random-0.1 tv-random-0.1
merge_eval task-arithmetic highest-0.1 tv-highest-0.1
merge_eval task-arithmetic dense tv-dense-1
merge_eval ties ties-dense tv-dense-1
merge_eval consensus consensus-talos-0.1 tv-talos-0.1

step "6. Density sweep (TaLoS and random masks)"
for d in $DENSITIES; do
  [ "$d" = 0.1 ] && continue
  for t in $TASKS; do for fam in talos random; do make_mask $fam $d $t; finetune_best $fam $d $t; done; done
  merge_eval task-arithmetic talos-$d tv-talos-$d
  merge_eval task-arithmetic random-$d tv-random-$d
done

step "7. Task negation: subtract the MNIST vector, Fashion-MNIST as the control"
ctrl0=$(json_get "$OUT/base-fashion.json" 'd[0]["accuracy"]')
for fam in talos dense; do
  tv="$OUT/tv-$fam-$([ $fam = dense ] && echo 1 || echo 0.1)-mnist.h5"
  for a in 0.25 0.5 1 1.5 2; do
    L apply "$OUT/base.h5" "$tv" --alpha=-$a -o "$OUT/neg-$fam-$a.h5" >/dev/null
    tgt=$(L eval "$OUT/neg-$fam-$a.h5" "$OUT/mnist.h5" --head mnist --split val --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['accuracy'])")
    ctl=$(L eval "$OUT/neg-$fam-$a.h5" "$OUT/fashion.h5" --head fashion --split val --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['accuracy'])")
    record "{\"kind\": \"negation\", \"family\": \"$fam\", \"alpha\": -$a, \"target_val\": $tgt, \"control_val\": $ctl, \"control_base_test\": $ctrl0}"
  done
done

step "8. What a sparse task vector and a mask look like"
L inspect "$OUT/tv-talos-0.1-mnist.h5"
L inspect "$OUT/mask-talos-0.1-mnist.h5" | tail -3

step "9. Results"
python3 examples/report.py "$RES" "$OUT"
