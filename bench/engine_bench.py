#!/usr/bin/env python3
"""Engine benchmarks (issue: engine core). Ratios against baselines measured in this run.

  1. sgemm GFLOP/s inside Locus (OPENBLAS_CORETYPE unset: Locus picks the kernel) vs OpenBLAS with
     OPENBLAS_CORETYPE=SkylakeX set by hand, and vs the generic kernel OpenBLAS falls back to on this
     CPU without help (Prescott).
  2. Training samples/s of the MLP 784-256-256-10 and the LeNet CNN at batch 64 and 128 on Fashion-MNIST
     (`locus train`, one epoch, SGD momentum 0.9) vs PyTorch CPU doing the same steps on the same data
     (skipped when torch is not importable). Both use 2 threads.

Usage: bench/engine_bench.py LOCUS LOCUS_BENCH FASHION.h5 [--json OUT] [--samples N]
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
    subprocess.run([locus, "init", "--preset", preset, *hidden, "--data", data, "-o", model, "--seed", "0"], check=True, capture_output=True)
    r = subprocess.run([locus, "train", model, data, "--split", samples_split, "--val-split", "", "--epochs", "1",
                        "--batch-size", str(batch), "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9",
                        "--quiet", "--json", "-o", os.path.join(tmp, "out.h5")], check=True, capture_output=True, text=True)
    return json.loads(r.stdout)[0]["samplesPerSecond"]


def torch_train(data, preset, batch, split):
    import torch
    from torch import nn
    torch.set_num_threads(2)
    torch.manual_seed(0)
    with h5py.File(data) as f:
        idx = f["splits"][split][()]
        x = f["inputs"][()][idx].astype(np.float32)
        a = f["inputs"].attrs
        x = ((x * a["scale"] - a["mean"][0]) / a["std"][0]).astype(np.float32)
        y = f["labels"][()][idx]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus"); ap.add_argument("bench"); ap.add_argument("data")
    ap.add_argument("--json"); ap.add_argument("--split", default="train")
    a = ap.parse_args()
    out = {"gemm": {}, "training": []}
    g_locus, g_skx, g_generic = gemm(a.bench, None), gemm(a.bench, "SkylakeX"), gemm(a.bench, "Prescott")
    out["gemm"] = dict(locus=g_locus, skylakex_by_hand=g_skx, generic=g_generic,
                       locus_over_skylakex=g_locus["gflops"] / g_skx["gflops"], locus_over_generic=g_locus["gflops"] / g_generic["gflops"])
    try:
        import torch  # noqa: F401
        have_torch = True
    except Exception as e:  # torch absent or unusable
        have_torch = False
        out["torch"] = f"not importable: {e}"
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("mlp", "lenet"):
            for batch in (64, 128):
                row = dict(model=preset, batch=batch, locus_samples_per_s=locus_train(a.locus, a.data, preset, batch, tmp, a.split))
                if have_torch:
                    row["torch_samples_per_s"] = torch_train(a.data, preset, batch, a.split)
                    row["locus_over_torch"] = row["locus_samples_per_s"] / row["torch_samples_per_s"]
                out["training"].append(row)
                print(json.dumps(row), file=sys.stderr)
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
