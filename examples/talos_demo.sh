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
# and SVG figures. SCALE=small (the test suite) shrinks every step. SCALE=full (make demo-full) also
# runs the learning-rate grid at every sweep density; the default (make demo) reuses the rate chosen
# at 10 % for the same family and task (the full run chose the same rate in 47 of 48 sweep runs).
#
# Independent commands run as LANES background jobs (default 2) of one engine thread each: the
# engine's results are bit-identical with any thread count (docs/engine-kernels.md), and two
# single-threaded processes use 2 cores better than one two-threaded process on these small models.
# Every step prints its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCUS=${LOCUS:-.build/release/locus}
OUT=${OUT:-out/demo}
SCALE=${SCALE:-demo}
MODEL=${MODEL:-mlp}
LANES=${LANES:-2}
FASHION=${FASHION:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"
Q=--quiet
T0=$SECONDS; TS=""
step() {   # ends the running step with its wall time, starts the next
  [ -z "$TS" ] || printf '   (%d s)\n' $((SECONDS - TS)) >&2
  TS=$SECONDS; [ $# = 0 ] || printf '\n\033[1m== %s\033[0m\n' "$*" >&2
}
L() { "$LOCUS" "$@"; }
# jnum FILE KEY: the last number stored under "KEY" in a JSON file (the files here are locus's own).
jnum() { local v; v=$(grep -o "\"$2\" *: *[-0-9.eE+]*" "$1" | tail -1 | sed 's/.*: *//'); [ -n "$v" ] || { echo "no $2 in $1" >&2; exit 1; }; echo "$v"; }
gt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a > b) }'; }

# job CMD…: runs CMD in the background with one engine thread, at most LANES at once; `joined`
# waits for all of them and stops the demo if one failed.
FAILED="$OUT/.failed"; rm -f "$FAILED"
job() {
  while [ "$(jobs -rp | wc -l)" -ge "$LANES" ]; do wait -n || true; done
  ( export LOCUS_THREADS=1; "$@" || { echo "failed: $*" >&2; touch "$FAILED"; } ) &
}
joined() { wait; [ ! -e "$FAILED" ] || { echo "a step failed (see above)" >&2; exit 1; }; }

if [ "$SCALE" = small ]; then
  BASE_EPOCHS=1; PROBE_EPOCHS=2; FT_EPOCHS=1; LRS="3e-3"; DENSITIES="0.1 0.5"; SCORE_BATCHES=4; GRID=0:1:0.25; TASKS="mnist digits"
else
  BASE_EPOCHS=3; PROBE_EPOCHS=5; FT_EPOCHS=5; LRS="1e-3 3e-3"; DENSITIES="0.05 0.1 0.3 0.5"; SCORE_BATCHES=20; GRID=0:1:0.05; TASKS="mnist digits rotated fashinv"
fi
SEED=0
RES="$OUT/results.jsonl"; : > "$RES"
record() { echo "$1" >> "$RES"; }

step "1. Data: import the real sets and derive the tasks"
job L data import "$FASHION/train-images-idx3-ubyte.gz" "$FASHION/train-labels-idx1-ubyte.gz" \
  "$FASHION/t10k-images-idx3-ubyte.gz" "$FASHION/t10k-labels-idx1-ubyte.gz" -o "$OUT/fashion.h5" $Q \
  --class-names "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
job L data import "$FASHION/t10k-images-idx3-ubyte.gz" "$FASHION/t10k-labels-idx1-ubyte.gz" --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/fashion-t10k.h5" $Q
job L data import fixtures/data/mnist_5k.csv.gz --image-shape 1,28,28 --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/mnist.h5" $Q
job L data import fixtures/data/digits.csv.gz --image-shape 1,8,8 --scale 1/16 --split 0.7,0.15,0.15 --seed $SEED -o "$OUT/digits8.h5" $Q
joined
job L data derive "$OUT/digits8.h5" --transform resize=28,28 -o "$OUT/digits.h5" $Q
job L data derive "$OUT/mnist.h5" --transform rotate90 -o "$OUT/rotated.h5" $Q
job L data derive "$OUT/fashion-t10k.h5" --transform invert -o "$OUT/fashinv.h5" $Q
joined
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
record "{\"kind\": \"base\", \"fashion_test\": $(jnum "$OUT/base-fashion.json" accuracy)}"

step "3. A head per task, linear-probed on the frozen base (then kept frozen)"
for t in $TASKS; do
  L train "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --add-head --linear-probe --epochs $PROBE_EPOCHS --lr 1e-2 --seed $SEED -o "$OUT/base.h5" $Q | tail -1
done
eval_test() { L eval "$1" "$OUT/$2.h5" --head "$2" --split test --json > "$3"; }
for t in $TASKS; do job eval_test "$OUT/base.h5" "$t" "$OUT/heads-only-$t.json"; done
joined
for t in $TASKS; do record "{\"kind\": \"heads-only\", \"task\": \"$t\", \"test\": $(jnum "$OUT/heads-only-$t.json" accuracy)}"; done

# make_mask FAMILY DENSITY TASK → $OUT/mask-FAMILY-DENSITY-TASK.h5
make_mask() {
  local fam=$1 d=$2 t=$3 out="$OUT/mask-$1-$2-$3.h5"
  case $fam in
    talos)   L mask "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --density "$d" --batches $SCORE_BATCHES --seed $SEED -o "$out" $Q >/dev/null ;;
    highest) L mask "$OUT/base.h5" "$OUT/$t.h5" --head "$t" --density "$d" --keep highest --batches $SCORE_BATCHES --seed $SEED -o "$out" $Q >/dev/null ;;
    random)  L mask "$OUT/base.h5" --method random --density "$d" --seed $SEED -o "$out" $Q >/dev/null ;;
    dense)   L mask "$OUT/base.h5" --method random --density 1 -o "$out" $Q >/dev/null ;;
  esac
}

# finetune_lr FAMILY DENSITY TASK LR → ft-/tv-FAMILY-DENSITY-TASK-LR.h5 and its per-epoch JSON
finetune_lr() {
  local fam=$1 d=$2 t=$3 lr=$4
  L finetune "$OUT/base.h5" "$OUT/$t.h5" --mask "$OUT/mask-$fam-$d-$t.h5" --head "$t" --epochs $FT_EPOCHS --lr "$lr" \
    --seed $SEED -o "$OUT/ft-$fam-$d-$t-$lr.h5" --task-vector "$OUT/tv-$fam-$d-$t-$lr.h5" $Q --json > "$OUT/ft-$fam-$d-$t-$lr.json"
}

# finetuned "FAMILY:DENSITY …": per family, density and task, a mask, then fine-tuning at each
# learning rate (LR_OF[fam-task] when set: the rate chosen before), the best on validation kept as
# tv-/ft-FAMILY-DENSITY-TASK.h5, its test accuracy and task-vector size recorded.
declare -A LR_OF BEST_LR
finetuned() {
  local fd fam d t lr
  for t in $TASKS; do for fd in $1; do job make_mask "${fd%:*}" "${fd#*:}" "$t"; done; done
  joined
  for t in $TASKS; do for fd in $1; do
    fam=${fd%:*}; d=${fd#*:}
    for lr in ${LR_OF[$fam-$t]:-$LRS}; do job finetune_lr "$fam" "$d" "$t" "$lr"; done
  done; done
  joined
  for t in $TASKS; do for fd in $1; do
    fam=${fd%:*}; d=${fd#*:}
    local best="" bestacc=-1 acc
    for lr in ${LR_OF[$fam-$t]:-$LRS}; do
      acc=$(jnum "$OUT/ft-$fam-$d-$t-$lr.json" validationAccuracy)
      if gt "$acc" "$bestacc"; then best=$lr; bestacc=$acc; fi
    done
    BEST_LR[$fam-$d-$t]=$best
    cp "$OUT/tv-$fam-$d-$t-$best.h5" "$OUT/tv-$fam-$d-$t.h5"
    cp "$OUT/ft-$fam-$d-$t-$best.h5" "$OUT/ft-$fam-$d-$t.h5"
    job eval_test "$OUT/ft-$fam-$d-$t.h5" "$t" "$OUT/single-$fam-$d-$t.json"
  done; done
  joined
  for t in $TASKS; do for fd in $1; do
    fam=${fd%:*}; d=${fd#*:}; lr=${BEST_LR[$fam-$d-$t]}
    record "{\"kind\": \"single\", \"family\": \"$fam\", \"density\": $d, \"task\": \"$t\", \"lr\": $lr, \"val\": $(jnum "$OUT/ft-$fam-$d-$t-$lr.json" validationAccuracy), \"test\": $(jnum "$OUT/single-$fam-$d-$t.json" accuracy), \"tv_bytes\": $(stat -c %s "$OUT/tv-$fam-$d-$t.h5")}"
  done; done
}

# merge_one METHOD NAME PREFIX: α on validation → merged-NAME.h5 and alpha-NAME.json / .svg
merge_one() {
  local method=$1 name=$2 prefix=$3 vecs=() evals=() t
  for t in $TASKS; do vecs+=("$OUT/$prefix-$t.h5"); evals+=("$OUT/$t.h5"); done
  L merge "$OUT/base.h5" "${vecs[@]}" --method "$method" --alpha-grid $GRID --eval "${evals[@]}" \
    --alpha-json "$OUT/alpha-$name.json" --plot "$OUT/alpha-$name.svg" -o "$OUT/merged-$name.h5" > "$OUT/merge-$name.txt"
}

# merged "METHOD:NAME:PREFIX …": the merges, then every task's test accuracy at the α chosen
merged() {
  local m t tests
  for m in $1; do IFS=: read -r method name prefix <<< "$m"; job merge_one "$method" "$name" "$prefix"; done
  joined
  for m in $1; do IFS=: read -r method name prefix <<< "$m"
    for t in $TASKS; do job eval_test "$OUT/merged-$name.h5" "$t" "$OUT/merged-$name-$t.json"; done
  done
  joined
  for m in $1; do IFS=: read -r method name prefix <<< "$m"
    tests=""
    for t in $TASKS; do tests="$tests\"$t\": $(jnum "$OUT/merged-$name-$t.json" accuracy),"; done
    record "{\"kind\": \"merged\", \"name\": \"$name\", \"method\": \"$method\", \"alpha\": $(jnum "$OUT/alpha-$name.json" best_alpha), \"test\": {${tests%,}}}"
  done
}

step "4. Per task: TaLoS mask → sparse fine-tuning, and the baselines (dense, random, highest-score)"
finetuned "talos:0.1 random:0.1 highest:0.1 dense:1"

step "5. Merges, α chosen on validation"
merged "task-arithmetic:talos-0.1:tv-talos-0.1 task-arithmetic:random-0.1:tv-random-0.1 task-arithmetic:highest-0.1:tv-highest-0.1
        task-arithmetic:dense:tv-dense-1 ties:ties-dense:tv-dense-1 consensus:consensus-talos-0.1:tv-talos-0.1"

step "6. Density sweep (TaLoS and random masks)"
if [ "$SCALE" != full ]; then   # the learning rate chosen at 10 % for the same family and task
  for t in $TASKS; do for fam in talos random; do LR_OF[$fam-$t]=${BEST_LR[$fam-0.1-$t]}; done; done
fi
SWEEP="" SWEEP_MERGES=""
for d in $DENSITIES; do
  [ "$d" = 0.1 ] && continue
  SWEEP="$SWEEP talos:$d random:$d"
  SWEEP_MERGES="$SWEEP_MERGES task-arithmetic:talos-$d:tv-talos-$d task-arithmetic:random-$d:tv-random-$d"
done
finetuned "$SWEEP"
merged "$SWEEP_MERGES"

step "7. Task negation: subtract the MNIST vector, Fashion-MNIST as the control"
ctrl0=$(jnum "$OUT/base-fashion.json" accuracy)
NEG_ALPHAS="0.25 0.5 1 1.5 2"
negated() {
  local fam=$1 a=$2 tv="$OUT/tv-$1-$([ $1 = dense ] && echo 1 || echo 0.1)-mnist.h5"
  L apply "$OUT/base.h5" "$tv" --alpha=-$a -o "$OUT/neg-$fam-$a.h5" >/dev/null
  L eval "$OUT/neg-$fam-$a.h5" "$OUT/mnist.h5" --head mnist --split val --json > "$OUT/neg-$fam-$a-mnist.json"
  L eval "$OUT/neg-$fam-$a.h5" "$OUT/fashion.h5" --head fashion --split val --json > "$OUT/neg-$fam-$a-fashion.json"
}
for fam in talos dense; do for a in $NEG_ALPHAS; do job negated $fam $a; done; done
joined
for fam in talos dense; do for a in $NEG_ALPHAS; do
  record "{\"kind\": \"negation\", \"family\": \"$fam\", \"alpha\": -$a, \"target_val\": $(jnum "$OUT/neg-$fam-$a-mnist.json" accuracy), \"control_val\": $(jnum "$OUT/neg-$fam-$a-fashion.json" accuracy), \"control_base_test\": $ctrl0}"
done; done

step "8. What a sparse task vector and a mask look like"
L inspect "$OUT/tv-talos-0.1-mnist.h5"
L inspect "$OUT/mask-talos-0.1-mnist.h5" | tail -3

step "9. Results"
python3 examples/report.py "$RES" "$OUT"
step
printf '\ndemo (%s, MODEL=%s, SCALE=%s): %d s\n' "$OUT" "$MODEL" "$SCALE" $((SECONDS - T0)) >&2
