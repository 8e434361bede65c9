#!/usr/bin/env python3
"""Reading a torch.save state dict: TorchCheckpointReader (Swift, release build) vs torch.load.

Writes a ~92 MB state dict (100 tensors of 1024x224 float32, as pytorch_model.bin), then times,
on a warm page cache, `repeats` runs of:
  - torch.load(path, weights_only=True)              (torch's restricted loader; default in 2.x)
  - torch.load(path, weights_only=True, mmap=True) + touching every tensor's pages
  - torch-checkpoint-bench: open + read every tensor into its own buffer
and prints medians. Run from the repository root (builds the bench binary in release first):
    flock /tmp/locus-build.lock python3 bench/torch_read_bench.py
"""
import json, os, statistics, subprocess, sys, tempfile, time

import torch

REPEATS = int(os.environ.get("REPEATS", "7"))


def main():
    torch.set_num_threads(1)
    subprocess.run(["swift", "build", "-c", "release", "--product", "torch-checkpoint-bench"], check=True,
                   stdout=subprocess.DEVNULL)
    binary = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], check=True,
                            capture_output=True, text=True).stdout.strip() + "/torch-checkpoint-bench"
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "pytorch_model.bin")
        generator = torch.Generator().manual_seed(0)
        state = {f"layers.{i}.weight": torch.randn(1024, 224, generator=generator) for i in range(100)}
        torch.save(state, path)
        size = os.path.getsize(path)
        with open(path, "rb") as f:  # warm the page cache for everyone
            while f.read(1 << 24):
                pass

        def torch_load():
            loaded = torch.load(path, weights_only=True)
            assert len(loaded) == 100

        def torch_load_mmap():
            loaded = torch.load(path, weights_only=True, mmap=True)
            total = 0.0
            for t in loaded.values():
                total += float(t[:, 0].sum()) + float(t.view(-1)[::1024].sum())  # touch every page
            assert len(loaded) == 100

        results = {}
        for label, function in [("torch.load", torch_load), ("torch.load mmap", torch_load_mmap)]:
            function()  # warm-up
            times = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                function()
                times.append(time.perf_counter() - start)
            results[label] = times

        run = subprocess.run([binary, path, str(REPEATS + 1)], check=True, capture_output=True, text=True)
        swift = json.loads(run.stdout)
        assert swift["tensors"] == 100 and swift["bytes"] == 100 * 1024 * 224 * 4, swift
        results["TorchCheckpointReader"] = swift["seconds"][1:]  # first run is the warm-up

        print(f"file: {size / 1e6:.1f} MB, 100 tensors 1024x224 float32; torch {torch.__version__}; "
              f"median of {REPEATS} warm-cache runs")
        for label, times in results.items():
            median = statistics.median(times)
            print(f"  {label:24s} {median * 1e3:8.1f} ms   {size / median / 1e9:6.2f} GB/s")
        base = statistics.median(results["torch.load"])
        print(f"  TorchCheckpointReader / torch.load time ratio: {statistics.median(results['TorchCheckpointReader']) / base:.2f}")


if __name__ == "__main__":
    sys.exit(main())
