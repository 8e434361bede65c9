#!/usr/bin/env python3
"""Sparse fine-tuning benchmarks: accuracy of TaLoS-masked fine-tuning, and the cost of one sparse optimizer step.

  accuracy  Fashion-MNIST, MLP 784-256-256. The base body is trained on classes 0–4 (head t1); task 2 is
            classes 5–9 with a new head t2 that is linear-probed first (`locus train --linear-probe --add-head`),
            then frozen. From that base: a TaLoS mask at density 10 % (`locus mask`, 4 rounds) and a density-100 %
            mask (`locus mask --method random --density 1`), plus a random 10 % mask as a reference; each fine-tuned
            with `locus finetune` (masked AdamW) with the same budget, lr ∈ {1e-3, 3e-3}. Prints val/test accuracy
            of t2, and the accuracy t1 keeps on classes 0–4 (the body is shared; t1's head is untouched).
  step      `locus-bench sparse-step`: one SparseSGDM / MaskedAdamW step at densities 100/50/10/1 % vs a memcpy that
            touches the same bytes (the memory-bandwidth bound), on 4 M parameters and on a set too large for the
            cache.

Usage: bench/finetune_bench.py LOCUS LOCUS_BENCH [--work DIR] [--json OUT] [--only accuracy|step]
       (release binaries: swift build -c release, then .build/release/locus and .build/release/locus-bench)
Every command is printed before it runs.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

FASHION = "/usr/share/datasets/fashion-mnist"

# The fine-tuning budget shared by every method: epochs, batch, schedule, optimizer, regularisation.
BUDGET = ["--epochs", "3", "--batch-size", "128", "--optimizer", "adamw", "--weight-decay", "0.1", "--schedule", "cosine",
          "--warmup", "0.1", "--clip-norm", "1.0", "--seed", "0"]
LRS = ["1e-3", "3e-3"]


def run(cmd, log, quiet=False):
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    log.append({"command": cmd, "seconds": dt})
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    if not quiet and p.stdout.strip():
        print("  " + p.stdout.strip().replace("\n", "\n  "), file=sys.stderr)
    return p.stdout


def evaluate(locus, model, data, head, split, log):
    return json.loads(run([locus, "eval", model, data, "--head", head, "--split", split, "--json"], log, quiet=True))[0]["accuracy"]


def accuracy(locus, work, log):
    f = FASHION
    fashion, a, b = f"{work}/fashion.h5", f"{work}/fashion-0to4.h5", f"{work}/fashion-5to9.h5"
    if not os.path.exists(fashion):
        run([locus, "data", "import", f"{f}/train-images-idx3-ubyte.gz", f"{f}/train-labels-idx1-ubyte.gz",
             f"{f}/t10k-images-idx3-ubyte.gz", f"{f}/t10k-labels-idx1-ubyte.gz", "-o", fashion], log)
    run([locus, "data", "derive", fashion, "--classes", "0,1,2,3,4", "-o", a], log)
    run([locus, "data", "derive", fashion, "--classes", "5,6,7,8,9", "-o", b], log)
    # The base: body + head t1 trained on classes 0–4; then head t2 linear-probed on classes 5–9 (body frozen).
    init, body, base = f"{work}/init.h5", f"{work}/body.h5", f"{work}/base.h5"
    run([locus, "init", "--preset", "mlp", "--hidden", "256,256", "--data", a, "--head", "t1", "--seed", "0", "-o", init], log)
    run([locus, "train", init, a, "--head", "t1", "--epochs", "3", "--batch-size", "128", "--lr", "1e-3", "--optimizer", "adamw",
         "--quiet", "-o", body], log)
    run([locus, "train", body, b, "--head", "t2", "--add-head", "--linear-probe", "--epochs", "3", "--batch-size", "128",
         "--lr", "3e-3", "--optimizer", "adamw", "--quiet", "-o", base], log)
    masks = {
        "TaLoS 10 %": [locus, "mask", base, b, "--head", "t2", "--method", "talos", "--density", "0.1", "--rounds", "4",
                       "--batches", "100", "--quiet", "-o", f"{work}/mask-talos.h5"],
        "random 10 %": [locus, "mask", base, "--method", "random", "--density", "0.1", "--seed", "1", "-o", f"{work}/mask-random.h5"],
        "dense (100 %)": [locus, "mask", base, "--method", "random", "--density", "1", "-o", f"{work}/mask-dense.h5"],
    }
    files = {}
    for name, cmd in masks.items():
        t = time.perf_counter()
        run(cmd, log)
        files[name] = (cmd[-1], time.perf_counter() - t)
    rows = [{"method": "linear probe only (base)", "lr": None, "val": evaluate(locus, base, b, "t2", "val", log),
             "test": evaluate(locus, base, b, "t2", "test", log), "t1_test": evaluate(locus, base, a, "t1", "test", log), "nnz": 0,
             "seconds": None}]
    for name, (mask, mask_seconds) in files.items():
        for lr in LRS:
            tag = f"{name.split()[0].lower()}-{lr}"
            ft, tv = f"{work}/ft-{tag}.h5", f"{work}/tv-{tag}.h5"
            t = time.perf_counter()
            out = run([locus, "finetune", base, b, "--mask", mask, "--head", "t2", "--lr", lr, *BUDGET, "--quiet", "--json",
                       "-o", ft, "--task-vector", tv], log, quiet=True)
            seconds = time.perf_counter() - t
            reports = json.loads(out[out.index("["):])
            nnz = int(run(["python3", "-c", "import h5py,sys; print(int(h5py.File(sys.argv[1])['/'].attrs['nnz']))", tv], log, quiet=True))
            rows.append({"method": name, "lr": float(lr), "val": reports[-1]["validationAccuracy"],
                         "test": evaluate(locus, ft, b, "t2", "test", log), "t1_test": evaluate(locus, ft, a, "t1", "test", log),
                         "nnz": nnz, "seconds": seconds, "mask_seconds": mask_seconds})
    return rows


def print_accuracy(rows):
    print("\nFashion-MNIST classes 5–9 (head t2 linear-probed, then frozen), MLP 784-256-256 body pre-trained on classes 0–4;")
    print("masked AdamW, " + " ".join(BUDGET) + "\n")
    print(f"| {'method':<26} | {'lr':>6} | {'val acc':>7} | {'test acc':>8} | {'t1 test acc (0–4)':>17} | {'τ nnz':>8} | {'time s':>6} |")
    print(f"|{'-' * 28}|{'-' * 8}|{'-' * 9}|{'-' * 10}|{'-' * 19}|{'-' * 10}|{'-' * 8}|")
    for r in rows:
        lr = f"{r['lr']:g}" if r["lr"] else "—"
        sec = f"{r['seconds']:.1f}" if r["seconds"] else "—"
        print(f"| {r['method']:<26} | {lr:>6} | {r['val']:7.4f} | {r['test']:8.4f} | {r['t1_test']:17.4f} | {r['nnz']:8d} | {sec:>6} |")
    best = {}
    for r in rows[1:]:
        if r["method"] not in best or r["val"] > best[r["method"]]["val"]:
            best[r["method"]] = r
    print("\nbest lr on val per method → test: " + "; ".join(f"{m}: lr {r['lr']:g} → {r['test']:.4f}" for m, r in best.items()))


def step(bench, log):
    out = {}
    for n in (4 << 20, 32 << 20):
        out[str(n)] = json.loads(run([bench, "sparse-step", "--params", n, "--repeats", 15 if n > 4 << 20 else 30,
                                      "--densities", "1,0.5,0.1,0.01"], log, quiet=True))
    return out


def print_step(res):
    for n, r in res.items():
        print(f"\nOptimizer step, {int(n):,} float32 parameters in tensors of {', '.join(f'{s:,}' for s in r['tensor_sizes'])}"
              f" (best of {r['repeats']}; SparseSGDM μ 0.9 λ 0.01, MaskedAdamW λ 0.01)\n")
        print("| optimizer | density | representation | step ms (best / median) | params/s | bytes touched | GB/s | bound ms (memcpy same bytes) | of bound | speed-up vs 100 % |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for s in r["steps"]:
            bound = f"{s['bound_seconds'] * 1e3:.2f}" if "bound_seconds" in s else ""
            frac = f"{s['fraction_of_bound'] * 100:.0f} %" if "fraction_of_bound" in s else ""
            print(f"| {s['optimizer']} | {s['density'] * 100:g} % | {s['representation']} | {s['seconds_best'] * 1e3:.2f} / {s['seconds_median'] * 1e3:.2f} | "
                  f"{s['parameters_per_s'] / 1e9:.2f} G | {s['bytes_touched'] / 1e6:.1f} MB | {s['gb_per_s']:.1f} | {bound} | {frac} | {s['speedup_vs_dense']:.1f}× |")
        for opt, m in r["memcpy"].items():
            print(f"memcpy for {opt}: {m['bytes'] / 2 / 1e6:.1f} MB copied in {m['memcpy_half_seconds'] * 1e3:.2f} ms "
                  f"({m['memcpy_gb_per_s_read_plus_write']:.1f} GB/s read+write); memcpy of all {m['bytes'] / 1e6:.1f} MB: {m['memcpy_full_seconds'] * 1e3:.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus"); ap.add_argument("bench")
    ap.add_argument("--work", default="/tmp/locus-finetune-bench")
    ap.add_argument("--json")
    ap.add_argument("--only", choices=["accuracy", "step"])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    log, out = [], {}
    if a.only != "accuracy":
        out["step"] = step(a.bench, log)
        print_step(out["step"])
    if a.only != "step":
        out["accuracy"] = accuracy(a.locus, a.work, log)
        print_accuracy(out["accuracy"])
    out["commands"] = log
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
