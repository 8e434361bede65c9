#!/usr/bin/env python3
"""Reading a torch.save state dict: TorchCheckpointReader (Swift, release build) vs torch.load.

Writes a ~92 MB state dict (100 tensors of 1024x224 float32, as pytorch_model.bin), warms the
page cache, then measures in ROUNDS interleaved rounds (so load from other jobs on a shared
machine hits every variant alike):

first load in a new process (what a command-line tool pays; every tensor lands in newly
allocated memory, so page faults are included):
  torch.load            python: import torch, load a tiny checkpoint (warm-up), then time
                        torch.load(path, weights_only=True) — torch's restricted loader
  Swift                 bench/torch-checkpoint: open the file once untimed (warm-up), then time
                        open + read every tensor into its own new buffer, all kept alive

steady state inside one process:
  torch.load            repeated calls; glibc reuses the memory freed by the previous result
  Swift reuse           open + read every tensor into one pre-touched buffer: the reader's own
                        cost (zip, pickle, checks, copies out of the page cache)

Then the same steady-state pair on 20,000 tensors of 4 float32 each (per-tensor overhead: zip
members, pickle, checks). Prints median and minimum per variant. Run from the repository root:
    flock /tmp/locus-build.lock python3 bench/torch_read_bench.py
"""
import json, os, statistics, subprocess, sys, tempfile, time

import torch

ROUNDS = int(os.environ.get("ROUNDS", "7"))

TORCH_FIRST_LOAD = r"""
import sys, time, torch
torch.set_num_threads(1)
torch.load(sys.argv[2], weights_only=True)
start = time.perf_counter()
loaded = torch.load(sys.argv[1], weights_only=True)
print(time.perf_counter() - start)
assert len(loaded) == 100
"""


def main():
    torch.set_num_threads(1)
    subprocess.run(["swift", "build", "-c", "release", "--product", "torch-checkpoint-bench"], check=True,
                   stdout=subprocess.DEVNULL)
    binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], check=True,
                            capture_output=True, text=True).stdout.strip() + "/torch-checkpoint-bench"
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "pytorch_model.bin")
        tiny = os.path.join(directory, "tiny.pt")
        generator = torch.Generator().manual_seed(0)
        state = {f"layers.{i}.weight": torch.randn(1024, 224, generator=generator) for i in range(100)}
        torch.save(state, path)
        torch.save({"w": torch.ones(2)}, tiny)
        size = os.path.getsize(path)
        with open(path, "rb") as f:  # warm the page cache for everyone
            while f.read(1 << 24):
                pass
        environment = dict(os.environ, OMP_NUM_THREADS="1")

        def swift(mode, runs):
            run = subprocess.run([binary, path, str(runs), mode], check=True, capture_output=True, text=True)
            result = json.loads(run.stdout)
            assert result["tensors"] == 100 and result["bytes"] == 100 * 1024 * 224 * 4, result
            return result["seconds"][-1]

        def torch_first():
            run = subprocess.run([sys.executable, "-c", TORCH_FIRST_LOAD, path, tiny], check=True,
                                 capture_output=True, text=True, env=environment)
            return float(run.stdout.strip())

        def torch_steady():
            start = time.perf_counter()
            loaded = torch.load(path, weights_only=True)
            elapsed = time.perf_counter() - start
            assert len(loaded) == 100
            return elapsed

        torch_steady()
        results = {"first: torch.load": [], "first: Swift": [], "steady: torch.load": [], "steady: Swift reuse": []}
        for _ in range(ROUNDS):
            results["first: torch.load"].append(torch_first())
            results["first: Swift"].append(swift("fresh", 1))
            results["steady: torch.load"].append(torch_steady())
            results["steady: Swift reuse"].append(swift("reuse", 3))

        print(f"file: {size / 1e6:.1f} MB, 100 tensors 1024x224 float32; torch {torch.__version__}; "
              f"{ROUNDS} interleaved rounds, warm page cache, one thread")
        print(f"  {'variant':22s} {'median':>9s} {'min':>9s}  {'GB/s (median)':>13s}")
        for label, times in results.items():
            median = statistics.median(times)
            print(f"  {label:22s} {median * 1e3:7.1f}ms {min(times) * 1e3:7.1f}ms  {size / median / 1e9:13.2f}")
        for kind, swift_label in [("first", "first: Swift"), ("steady", "steady: Swift reuse")]:
            ratio = statistics.median(results[swift_label]) / statistics.median(results[f"{kind}: torch.load"])
            print(f"  {kind}: Swift / torch.load median time: {ratio:.2f}")

        many = os.path.join(directory, "many.pt")
        torch.save({f"blocks.{i}.w": torch.full((4,), float(i)) for i in range(20000)}, many)
        torch.load(many, weights_only=True)
        small = {"torch.load": [], "Swift reuse": []}
        for _ in range(max(3, ROUNDS // 2)):
            start = time.perf_counter()
            assert len(torch.load(many, weights_only=True)) == 20000
            small["torch.load"].append(time.perf_counter() - start)
            run = subprocess.run([binary, many, "2", "reuse"], check=True, capture_output=True, text=True)
            result = json.loads(run.stdout)
            assert result["tensors"] == 20000, result
            small["Swift reuse"].append(result["seconds"][-1])
        print(f"file: {os.path.getsize(many) / 1e6:.1f} MB, 20000 tensors of 4 float32")
        for label, times in small.items():
            print(f"  {label:22s} {statistics.median(times) * 1e3:7.1f}ms {min(times) * 1e3:7.1f}ms")
        print(f"  Swift / torch.load median time: {statistics.median(small['Swift reuse']) / statistics.median(small['torch.load']):.2f}")


if __name__ == "__main__":
    sys.exit(main())
