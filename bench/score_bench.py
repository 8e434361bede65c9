#!/usr/bin/env python3
"""Scoring benchmark (issue: TaLoS scoring). Ratios against baselines measured in this run.

Model: the MLP 784-256-256-10 (`locus init --preset mlp --hidden 256,256`, seed 0) on Fashion-MNIST, batch 64,
estimator talos (one sampled class per input, squared gradient of its raw logit), scored tensors = the body's
weights and biases (266 752 values; the head is not scored, as in TaLoS). The scoring set is the first N batches
of the train split in stored order, i.e. exactly what `locus score --batches N` scores.

Goals: the efficient path is >= 20x faster than the per-sample loop, and takes <= 1.1x the time of one plain
training epoch over the same samples (medians of the interleaved rounds).

What is measured, and why this way:
  1. In process (`locus-bench score`, the clean comparison): the same loaded model, the same N batches, assembled
     before any clock starts, best of R runs after a warm-up:
       efficient  Scorer.accumulate       one forward + one backward per batch, per-sample squares per layer
       naive      Scorer.accumulateNaive  one backward pass per sample (the reference's algorithm, same engine),
                                          timed on the first M batches and compared per sample
       train      Training.fit, 1 epoch   the loop `locus train` runs (forward, cross-entropy, backward, SGD
                                          momentum 0.9 step) over a split holding exactly the same N*64 samples
     Timing the training epoch in the same process, on the same samples, avoids comparing different process
     start-up, data loading and output writing, which `locus score` and `locus train` do not share equally.
     locus-bench also checks that both scoring paths give the same sums (same seed, same sampled classes).
  2. The reference per-sample PyTorch loop of docs/talos.md (when `import torch` works; torch.set_num_threads(2)): the same weights (read
     from the Locus checkpoint), the same N*64 normalised samples, batch 64, model in eval mode, head frozen; per
     batch logits = model(x), y ~ Categorical(logits), samples = logits.gather(1, y), and per sample zero_grad,
     backward(samples[idx], retain_graph=True), scores += clone(p.grad ** 2) for the body's Linear parameters.
     A plain PyTorch training epoch over the same samples (SGD momentum 0.9) is timed too, for context.
  3. End to end, for the record: wall time of `locus score ... --batches N --batch-size 64 --quiet` and of
     `locus train ... --epochs 1` on a copy of the dataset whose train split holds the same N*64 samples (both
     include process start, reading the 70 000-sample artifact and writing the output).

Usage: bench/score_bench.py LOCUS LOCUS_BENCH FASHION.h5 [--batches N] [--naive-batches M] [--repeats R] [--json OUT]
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time

import h5py
import numpy as np


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def wall(cmd, repeats):
    """Best wall-clock seconds of `repeats` runs (after one warm-up run that fills the page cache)."""
    run(cmd)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        run(cmd)
        best = min(best, time.perf_counter() - t)
    return best


def scoring_samples(data, n):
    """The first n samples of the train split in stored order, normalised as the engine does, and their labels."""
    with h5py.File(data) as f:
        idx = f["splits"]["train"][()][:n]
        a = f["inputs"].attrs
        x = f["inputs"][np.sort(idx)].astype(np.float32)   # h5py wants increasing indices; splits are sorted
        x = ((x * a["scale"] - a["mean"][0]) / a["std"][0]).astype(np.float32)
        y = f["labels"][()][idx]
    return x, y, idx


def subset_dataset(data, idx, out):
    """A copy of the dataset artifact whose only split, train, holds `idx`."""
    shutil.copyfile(data, out)
    with h5py.File(out, "r+") as f:
        for name in list(f["splits"]):
            del f["splits"][name]
        f["splits"].create_dataset("train", data=np.asarray(idx, dtype=np.int64))
    return out


def torch_mlp(model_path):
    import torch
    from torch import nn
    body = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
    head = nn.Linear(256, 10)
    with h5py.File(model_path) as f:
        t = {k: torch.from_numpy(f["tensors"][k][()]) for k in f["tensors"]}
    with torch.no_grad():
        for i in (1, 3):
            body[i].weight.copy_(t[f"layers.{i}.weight"]); body[i].bias.copy_(t[f"layers.{i}.bias"])
        head.weight.copy_(t["heads.default.weight"]); head.bias.copy_(t["heads.default.bias"])
    return nn.Sequential(body, head), [body[1], body[3]], head


def torch_per_sample_loop(model_path, x, y, batch):
    """The reference per-sample PyTorch TaLoS score loop (docs/talos.md); returns (seconds, samples)."""
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, scored, head = torch_mlp(model_path)
    model.eval()
    for p in head.parameters():
        p.requires_grad_(False)          # the head is frozen and not scored (TaLoS)
    params = [p for m in scored for p in (m.weight, m.bias)]
    scores = {id(p): torch.zeros_like(p) for p in params}
    xs = torch.from_numpy(x)

    def one_batch(inputs):
        logits = model(inputs)
        outdx = torch.distributions.Categorical(logits=logits).sample().unsqueeze(1).detach()
        samples = logits.gather(1, outdx)
        for idx in range(inputs.size(0)):
            model.zero_grad()
            torch.autograd.backward(samples[idx], retain_graph=True)
            for p in params:
                if p.requires_grad and p.grad is not None:
                    scores[id(p)] += torch.clone(p.grad.data.pow(2)).detach().cpu()

    one_batch(xs[:batch])                # warm-up
    t = time.perf_counter()
    for s in range(0, len(xs) - batch + 1, batch):
        one_batch(xs[s:s + batch])
    return time.perf_counter() - t, (len(xs) // batch) * batch


def torch_train_epoch(model_path, x, y, batch, repeats):
    """One plain training epoch over the same samples (SGD momentum 0.9), best of `repeats`."""
    import torch
    from torch import nn
    torch.set_num_threads(2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    best = float("inf")
    for r in range(repeats + 1):         # run 0 warms up
        model, _, _ = torch_mlp(model_path)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss = nn.CrossEntropyLoss()
        order = torch.randperm(len(ys), generator=torch.Generator().manual_seed(r))
        t = time.perf_counter()
        for s in range(0, len(ys), batch):
            ids = order[s:s + batch]
            opt.zero_grad()
            loss(model(xs[ids]), ys[ids]).backward()
            opt.step()
        if r:
            best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("locus"); ap.add_argument("bench"); ap.add_argument("data")
    ap.add_argument("--batches", type=int, default=20, help="scoring batches of 64 (default 20)")
    ap.add_argument("--naive-batches", type=int, default=4, help="batches the naive path is timed on (default 4)")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved timed rounds; medians and the fastest are reported (default 15)")
    ap.add_argument("--json")
    a = ap.parse_args()
    batch, n = 64, a.batches * 64
    out = {"model": "mlp 784-256-256-10", "batch_size": batch, "batches": a.batches, "samples": n}
    with tempfile.TemporaryDirectory() as tmp:
        model = os.path.join(tmp, "mlp.h5")
        run([a.locus, "init", "--preset", "mlp", "--hidden", "256,256", "--data", a.data, "-o", model, "--seed", "0"])

        # 1. In process.
        r = json.loads(run([a.bench, "score", model, a.data, "--batches", a.batches, "--naive-batches", a.naive_batches,
                            "--batch-size", batch, "--repeats", a.repeats]).stdout)
        out["in_process"] = r
        eff = r["efficient_samples_per_s"]
        out["ratios"] = {
            "efficient_over_naive_speed": r["efficient_over_naive"],
            "efficient_time_over_train_epoch_time": r["efficient_over_train_time"],
            "median_rounds_efficient_over_naive_speed": r["median_efficient_over_naive"],
            "median_rounds_efficient_time_over_train_epoch_time": r["median_efficient_over_train_time"],
        }
        print(json.dumps({"in_process": r}), file=sys.stderr)

        # 2. The reference per-sample PyTorch loop.
        x, y, idx = scoring_samples(a.data, n)
        try:
            import torch  # noqa: F401
            have_torch = True
        except Exception as e:  # torch absent or unusable
            have_torch = False
            out["torch"] = f"not importable: {e}"
        if have_torch:
            seconds, samples = torch_per_sample_loop(model, x, y, batch)
            train = torch_train_epoch(model, x, y, batch, 5)
            out["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                            "seed_loop_seconds": seconds, "seed_loop_samples_per_s": samples / seconds,
                            "train_epoch_seconds": train, "train_samples_per_s": n / train}
            out["ratios"]["efficient_over_torch_seed_loop_speed"] = eff / (samples / seconds)
            out["ratios"]["torch_seed_loop_time_over_torch_train_epoch_time"] = (n / (samples / seconds)) / train
            print(json.dumps({"torch": out["torch"]}), file=sys.stderr)

        # 3. End to end.
        sub = subset_dataset(a.data, np.sort(idx), os.path.join(tmp, "subset.h5"))
        reps = 3
        score_cmd = [a.locus, "score", model, a.data, "--batches", a.batches, "--batch-size", batch, "--quiet",
                     "-o", os.path.join(tmp, "scores.h5")]
        train_cmd = [a.locus, "train", model, sub, "--split", "train", "--val-split", "", "--epochs", "1",
                     "--batch-size", batch, "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9",
                     "--quiet", "--json", "-o", os.path.join(tmp, "trained.h5")]
        score_wall, train_wall = wall(score_cmd, reps), wall(train_cmd, reps)
        out["end_to_end"] = {"locus_score_seconds": score_wall, "locus_train_epoch_seconds": train_wall,
                             "score_over_train": score_wall / train_wall,
                             "commands": [" ".join(map(str, score_cmd)), " ".join(map(str, train_cmd))]}

    # Goals on the medians of the interleaved rounds (the best round is reported too).
    med = out["ratios"]
    goals = {"efficient >= 20x the per-sample loop (same engine), median": med["median_rounds_efficient_over_naive_speed"] >= 20,
             "efficient <= 1.1x one training epoch, median": med["median_rounds_efficient_time_over_train_epoch_time"] <= 1.1}
    if "efficient_over_torch_seed_loop_speed" in out["ratios"]:
        goals["efficient >= 20x the reference per-sample PyTorch loop"] = out["ratios"]["efficient_over_torch_seed_loop_speed"] >= 20
    out["goals"] = goals
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
