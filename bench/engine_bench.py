#!/usr/bin/env python3
"""Engine benchmarks (issue: engine core). Ratios against baselines measured in this run.

  1. sgemm GFLOP/s inside Locus (OPENBLAS_CORETYPE unset: Locus picks the kernel) vs OpenBLAS with
     that same kernel set by hand in OPENBLAS_CORETYPE, and vs the generic kernel OpenBLAS falls back to
     on a CPU it does not know (Prescott).
  2. Training samples/s of the MLP 784-256-256-10 and the LeNet CNN at batch 64 and 128 on Fashion-MNIST
     (`locus train`, one epoch, SGD momentum 0.9) vs PyTorch CPU doing the same steps on the same data
     (skipped when torch is not importable). Both use 2 threads. R interleaved rounds (default 5): in each
     round every configuration runs once in Locus and once in PyTorch, back to back, so a busy machine slows
     both alike; reported are the median, minimum and maximum samples/s of each and the median of the
     per-round ratios.

Usage: bench/engine_bench.py LOCUS LOCUS_BENCH FASHION.h5 [--json OUT] [--rounds R] [--only mlp|lenet]
"""
import argparse, json, os, subprocess, sys, tempfile, time

import h5py
import numpy as np


def gemm(bench, env_core, n=2048, repeats=5):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    if env_core:
        env["OPENBLAS_CORETYPE"] = env_core
    out = subprocess.run([bench, "gemm", str(n), str(repeats)], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def locus_train(locus, data, preset, batch, tmp, samples_split):
    model = os.path.join(tmp, f"{preset}.h5")
    hidden = ["--hidden", "256,256"] if preset == "mlp" else []
    if not os.path.exists(model):
        subprocess.run([locus, "init", "--preset", preset, *hidden, "--data", data, "-o", model, "--seed", "0"], check=True, capture_output=True)
    r = subprocess.run([locus, "train", model, data, "--split", samples_split, "--val-split", "", "--epochs", "1",
                        "--batch-size", str(batch), "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9",
                        "--quiet", "--json", "-o", os.path.join(tmp, "out.h5")], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)[0]["samplesPerSecond"]


def torch_data(data, split):
    import torch
    with h5py.File(data) as f:
        idx = f["splits"][split][()]
        x = f["inputs"][()][idx].astype(np.float32)
        a = f["inputs"].attrs
        x = ((x * a["scale"] - a["mean"][0]) / a["std"][0]).astype(np.float32)
        y = f["labels"][()][idx]
    return torch.from_numpy(x), torch.from_numpy(y)


def torch_train(xy, preset, batch):
    import torch
    from torch import nn
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x, y = xy
    if preset == "mlp":
        body = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        body = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    opt = torch.optim.SGD(body.parameters(), lr=0.01, momentum=0.9)
    loss = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    t = time.perf_counter()
    for s in range(0, len(y), batch):
        ids = order[s:s + batch]
        opt.zero_grad()
        l = loss(body(x[ids]), y[ids])
        l.backward()
        opt.step()
    return len(y) / (time.perf_counter() - t)


def summary(values):
    v = sorted(values)
    return dict(median=float(np.median(v)), min=v[0], max=v[-1], rounds=v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus"); ap.add_argument("bench"); ap.add_argument("data")
    ap.add_argument("--json"); ap.add_argument("--split", default="train")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=["mlp", "lenet"])
    ap.add_argument("--no-gemm", action="store_true")
    a = ap.parse_args()
    out = {"gemm": {}, "training": [], "rounds": a.rounds}
    if not a.no_gemm:
        # The kernel Locus picks on this CPU, set by hand (a CPU without AVX-512 cannot run SkylakeX).
        g_locus = gemm(a.bench, None)
        g_hand, g_generic = gemm(a.bench, g_locus["core"]), gemm(a.bench, "Prescott")
        out["gemm"] = dict(locus=g_locus, same_core_by_hand=g_hand, generic=g_generic,
                           locus_over_by_hand=g_locus["gflops"] / g_hand["gflops"], locus_over_generic=g_locus["gflops"] / g_generic["gflops"])
        print(f"sgemm 2048³: locus {g_locus['gflops']:.1f} GFLOP/s ({g_locus['core']}), {g_locus['core']} by hand {g_hand['gflops']:.1f}, "
              f"generic {g_generic['gflops']:.1f}", file=sys.stderr)
    try:
        import torch  # noqa: F401
        have_torch = True
    except Exception as e:  # torch absent or unusable
        have_torch = False
        out["torch"] = f"not importable: {e}"
    configs = [(p, b) for p in ("mlp", "lenet") if a.only in (None, p) for b in (64, 128)]
    xy = torch_data(a.data, a.split) if have_torch else None
    runs = {c: {"locus": [], "torch": [], "ratio": []} for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            for c in configs:
                got = runs[c]
                got["locus"].append(locus_train(a.locus, a.data, c[0], c[1], tmp, a.split))
                if have_torch:
                    got["torch"].append(torch_train(xy, c[0], c[1]))
                    got["ratio"].append(got["locus"][-1] / got["torch"][-1])
                print(f"round {r + 1}/{a.rounds} {c[0]} batch {c[1]}: locus {got['locus'][-1]:.0f} samples/s"
                      + (f", torch {got['torch'][-1]:.0f}, ratio {got['ratio'][-1]:.2f}" if have_torch else ""), file=sys.stderr)
    for c in configs:
        got = runs[c]
        row = dict(model=c[0], batch=c[1], locus_samples_per_s=summary(got["locus"]))
        if have_torch:
            row["torch_samples_per_s"] = summary(got["torch"])
            row["locus_over_torch"] = summary(got["ratio"])
        out["training"].append(row)
        line = f"{c[0]:5s} batch {c[1]:3d}: locus {row['locus_samples_per_s']['median']:7.0f} samples/s median " \
               f"[{row['locus_samples_per_s']['min']:.0f}–{row['locus_samples_per_s']['max']:.0f}]"
        if have_torch:
            line += f", torch {row['torch_samples_per_s']['median']:7.0f} [{row['torch_samples_per_s']['min']:.0f}–" \
                    f"{row['torch_samples_per_s']['max']:.0f}], locus/torch {row['locus_over_torch']['median']:.2f}× median " \
                    f"[{row['locus_over_torch']['min']:.2f}–{row['locus_over_torch']['max']:.2f}]"
        print(line, file=sys.stderr)
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
