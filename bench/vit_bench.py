#!/usr/bin/env python3
"""Vision-transformer benchmark (issue: ViTs in the engine). Ratios against baselines measured in this run.

Model: ViT-Ti/16 in timm's default shape (width 192, depth 12, 3 heads, MLP 768, 224×224×3 input, 1000-class
head: 5 717 416 parameters), `locus init --preset vit` with seed 0; its weights go to PyTorch through
`locus convert` → safetensors → load_state_dict(strict=True) into the timm-structured module of
interop/tests/vit_ref.py (float32, F.scaled_dot_product_attention, nn.GELU exact, nn.LayerNorm eps 1e-6).

1. Training-step throughput: forward + cross-entropy + backward with parameter gradients (no optimizer step), batch
   32 of seeded random inputs; `locus-bench step` (release) vs PyTorch CPU (torch.set_num_threads(2)), in R
   interleaved rounds (default 5): each round times S steps (default 3, after a warm-up step) of Locus, then S of
   PyTorch, so a busy machine slows both alike. Reported: the median over rounds of each round's median step, the
   spread (fastest and slowest round), and the median of the per-round ratios. Goal: Locus ≥ 1.0× PyTorch.
2. Scoring: `locus-bench score` on the same model and a 224×224 dataset of seeded random images: the efficient
   Scorer (one forward + one backward per batch, per-sample gradients of token-shared weights formed per sample
   with one GEMM each, then squared) vs the naive per-sample loop of the same engine (one forward and one backward
   per sample), estimator talos, batch 32. Goal: ≥ 20×. For context, the reference per-sample PyTorch loop (docs/talos.md) on the same
   weights (per sample: forward, sample ŷ ~ softmax, backward of the logit f_ŷ, p.grad² accumulated), 8 samples.

Usage: bench/vit_bench.py LOCUS LOCUS_BENCH [--rounds R] [--steps S] [--no-score] [--json OUT]
"""
import argparse, json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "interop" / "python"))
sys.path.insert(0, str(REPO / "interop" / "tests"))
import locus_h5  # noqa: E402


def run(cmd):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True)


def torch_model(model_h5, locus, tmp):
    """The Locus model's weights in the timm-structured torch module (float32, 2 threads), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    import engine_ref
    import vit_ref
    torch.set_num_threads(2)
    st = Path(tmp) / "vit.safetensors"
    run([locus, "convert", model_h5, st])
    arch = locus_h5.load(model_h5)["architecture"]
    return vit_ref.torch_vit(arch, engine_ref.read_safetensors(st), "heads.default").float()


def torch_step(net, batch, repeats):
    import torch
    import torch.nn.functional as F
    net.train()
    g = torch.Generator().manual_seed(1)
    x = torch.randn((batch, 3, 224, 224), generator=g)
    y = torch.arange(batch) % 1000

    def once():
        t = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return time.perf_counter() - t
    net.zero_grad()
    once()
    times = sorted(once() for _ in range(repeats))
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "best_seconds": times[0],
            "median_seconds": float(np.median(times)), "samples_per_s_best": batch / times[0],
            "samples_per_s_median": batch / float(np.median(times))}


def spread(values):
    v = sorted(values)
    return {"median": float(np.median(v)), "min": v[0], "max": v[-1], "rounds": v}


def torch_per_sample_loop(net, samples=8):
    """The reference per-sample PyTorch scoring loop (docs/talos.md): per sample, forward, ŷ ~ softmax, backward of f_ŷ, p.grad² summed."""
    import torch
    net.eval()
    body = [p for n, p in net.named_parameters() if not n.startswith("head.")]
    scores = [torch.zeros_like(p) for p in body]
    g = torch.Generator().manual_seed(2)
    x = torch.randn((samples, 3, 224, 224), generator=g)
    t = time.perf_counter()
    for n in range(samples):
        net.zero_grad()
        z = net(x[n:n + 1])[0]
        y = torch.multinomial(torch.softmax(z.detach(), 0), 1, generator=g).item()
        z[y].backward()
        for s, p in zip(scores, body):
            s += p.grad ** 2
    return samples / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus")
    ap.add_argument("locus_bench")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--no-score", action="store_true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "vit-ti.h5"
        run([a.locus, "init", "--preset", "vit", "--input", "3,224,224", "--classes", "1000", "--patch-size", "16", "--width", "192",
             "--depth", "12", "--num-heads", "3", "--seed", "0", "-o", model])
        net = torch_model(model, a.locus, tmp)
        rounds = []
        for r in range(a.rounds):
            swift = json.loads(run([a.locus_bench, "step", model, "--batch-size", a.batch, "--repeats", a.steps]).stdout)
            torch = torch_step(net, a.batch, a.steps) if net is not None else None
            rounds.append((swift, torch))
            print(f"round {r + 1}/{a.rounds}: locus {swift['samples_per_s_median']:.1f} samples/s"
                  + (f", torch {torch['samples_per_s_median']:.1f}, ratio {swift['samples_per_s_median'] / torch['samples_per_s_median']:.2f}"
                     if torch else ""), file=sys.stderr)
        swift = rounds[0][0]
        locus_rate = spread([s_["samples_per_s_median"] for s_, _ in rounds])
        out = {"model": "ViT-Ti/16", "parameters": swift["parameters"], "batch": a.batch, "rounds": a.rounds, "steps_per_round": a.steps,
               "locus_samples_per_s": locus_rate, "locus_rounds": [s_ for s_, _ in rounds], "torch_rounds": [t for _, t in rounds]}
        print(f"ViT-Ti/16 ({swift['parameters']} parameters), batch {a.batch}, forward + backward, {a.rounds} interleaved rounds of {a.steps} steps:")
        print(f"  locus   {locus_rate['median']:7.1f} samples/s median [{locus_rate['min']:.1f}–{locus_rate['max']:.1f}], {swift['threads']} threads")
        if net is not None:
            torch_rate = spread([t["samples_per_s_median"] for _, t in rounds])
            ratio = spread([s_["samples_per_s_median"] / t["samples_per_s_median"] for s_, t in rounds])
            out["torch_samples_per_s"] = torch_rate
            out["locus_over_torch"] = ratio
            print(f"  torch   {torch_rate['median']:7.1f} samples/s median [{torch_rate['min']:.1f}–{torch_rate['max']:.1f}], torch {rounds[0][1]['torch']}")
            print(f"  ratio   {ratio['median']:.2f}× PyTorch median of rounds [{ratio['min']:.2f}–{ratio['max']:.2f}] (goal ≥ 1.0×)")
        else:
            print("  torch is not importable: the PyTorch baseline is skipped")
        if a.no_score:
            if a.json:
                Path(a.json).write_text(json.dumps(out, indent=2))
            return

        # Scoring set: 3 batches of seeded random images (as float32, normalised as stored).
        n = 3 * a.batch
        rng = np.random.default_rng(0)
        data = Path(tmp) / "images.h5"
        locus_h5.write_dataset(data, rng.standard_normal((n, 3, 224, 224)).astype(np.float32), np.arange(n) % 1000,
                               [f"c{i}" for i in range(1000)], {"train": np.arange(n)}, scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        score = json.loads(run([a.locus_bench, "score", model, data, "--batches", "3", "--naive-batches", "1", "--batch-size", a.batch,
                                "--repeats", max(a.rounds, 5), "--estimator", "talos"]).stdout)
        out["score"] = score
        torch_rate = torch_per_sample_loop(net) if net is not None else None
        out["torch_seed_loop_samples_per_s"] = torch_rate
        print(f"scoring (talos, batch {a.batch}): efficient {score['efficient_samples_per_s']:.1f} samples/s, "
              f"per-sample loop {score['naive_samples_per_s']:.1f} samples/s → {score['efficient_over_naive']:.2f}× (goal ≥ 20×); "
              f"one training epoch {score['train_samples_per_s']:.1f} samples/s; scoring takes "
              f"{score['median_efficient_over_train_time']:.2f}× an epoch's time, median of rounds (goal ≤ 1.1×); max |efficient − naive| "
              f"{score['max_abs_difference_efficient_vs_naive']:.2e} of max score {score['max_abs_score']:.2e}")
        if torch_rate:
            print(f"  the reference per-sample PyTorch loop: {torch_rate:.1f} samples/s → Locus efficient scoring "
                  f"{score['efficient_samples_per_s'] / torch_rate:.1f}× that")
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
