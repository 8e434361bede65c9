#!/usr/bin/env python3
"""TaLoSScorer (locus_h5.torch) throughput on CPU, with baselines measured in the same run.

Models (random weights, built from Locus architectures by locus_h5.torch.build_model, float32):
  mlp     784-256-256-10 (flatten, Linear, ReLU, Linear, ReLU, head): 269 322 parameters
  vit-ti  ViT-Ti/16: 3×224×224, patch 16, width 192, depth 12, 3 heads, MLP 768, 10-class head

Per model and round, on the same seeded random inputs, estimator talos (1 draw):
  scorer  TaLoSScorer.run (per_sample="auto"): one batched forward recording each layer's input, one
          backward for the output gradients δ, then per layer (δ²)ᵀ(x²) (MLP Linear) or the per-sample
          products δ_nᵀX_n (token-shared ViT weights, in chunks bounded by --max-memory), LayerNorm and
          pos_embed / cls_token terms
  loop    the plain way: per sample a forward pass, ŷ ~ softmax, one backward of f_ŷ, p.grad² accumulated
  epoch   one training epoch over the same samples: forward, cross-entropy, backward, SGD step per batch
Rounds are interleaved (scorer, loop, epoch, scorer, ...); medians over --rounds (≥ 5) rounds.
Goals: scorer ≥ 20× the loop; scorer time ≤ 2× one epoch.
Peak memory: the largest rise of the process's resident set size (sampled every 2 ms from /proc)
above its level before the call, per method (max over rounds); memory the allocator kept from an
earlier call and reuses does not show as a rise.

Usage: bench/torch_score_bench.py [--rounds 5] [--threads 2] [--models mlp,vit-ti] [--json OUT]
"""
import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "interop" / "python"))
import locus_h5.torch as lt  # noqa: E402

PAGE = 4096


def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


class PeakRSS:
    """Largest RSS rise above the level at entry, sampled every 2 ms."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.stop = False
        self.t = threading.Thread(target=self._watch, daemon=True)
        self.t.start()
        return self

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.stop = True
        self.t.join()
        self.peak = max(self.peak, rss())
        self.rise = self.peak - self.base


def mlp_arch():
    return {"format": "locus-sequential", "version": 1, "input": [1, 28, 28], "preset": "mlp",
            "layers": [{"type": "flatten"}, {"type": "linear", "in_features": 784, "out_features": 256}, {"type": "relu"},
                       {"type": "linear", "in_features": 256, "out_features": 256}, {"type": "relu"}],
            "heads": [{"name": "default", "in_features": 256, "out_features": 10}]}


def vit_arch(depth=12, width=192, heads=3, img=224, patch=16, classes=10):
    n = (img // patch) ** 2
    layers = [{"type": "patch_embed", "name": "patch_embed", "img_size": img, "patch_size": patch, "in_chans": 3, "embed_dim": width},
              {"type": "class_token_position", "name": "", "num_patches": n, "embed_dim": width}]
    layers += [{"type": "vit_block", "name": f"blocks.{i}", "embed_dim": width, "num_heads": heads, "mlp_ratio": 4.0} for i in range(depth)]
    layers += [{"type": "layernorm", "name": "norm", "normalized_shape": width, "eps": 1e-6}, {"type": "class_token_pool"}]
    return {"format": "locus-sequential", "version": 1, "input": [3, img, img], "preset": "vit", "layers": layers,
            "heads": [{"name": "default", "in_features": width, "out_features": classes, "prefix": "head"}]}


def scorer_run(m, x, y, batch, max_memory):
    sc = lt.TaLoSScorer(m, estimator="talos", batch_size=batch, max_memory=max_memory).run(x, y)
    return sc


def loop_run(m, x, names):
    params = dict(m.named_parameters())
    sums = {n: torch.zeros_like(params[n]) for n in names}
    m.eval()
    u = lt.SplitMix64.unit_floats(0, 0, x.shape[0])
    for i in range(x.shape[0]):
        m.zero_grad(set_to_none=True)
        z = m(x[i:i + 1])[0]
        p = torch.softmax(z.detach(), 0)
        yh = int(min(int((torch.cumsum(p, 0) <= float(u[i])).sum()), p.numel() - 1))
        z[yh].backward()
        for n in names:
            sums[n] += params[n].grad ** 2
    return sums


def epoch_run(m, x, y, batch):
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    for s in range(0, x.shape[0], batch):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x[s:s + batch]), y[s:s + batch]).backward()
        opt.step()


def bench(name, arch, samples, batch, rounds, max_memory, loop_samples):
    torch.manual_seed(0)
    m = lt.build_model(arch)
    x = torch.randn(samples, *arch["input"])
    y = torch.randint(0, arch["heads"][0]["out_features"], (samples,))
    names = m.scored_parameter_names()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    times = {"scorer": [], "loop": [], "epoch": []}
    peaks = {"scorer": 0, "loop": 0, "epoch": 0}
    # warm-up: one batch of each path (first-touch page faults, lazy initialisation)
    scorer_run(m, x[:batch], y[:batch], batch, max_memory)
    loop_run(m, x[:2], names)
    epoch_run(m, x[:batch], y[:batch], batch)
    for r in range(rounds):
        for method in ("scorer", "loop", "epoch"):
            m.load_state_dict(state)
            with PeakRSS() as pk:
                t = time.perf_counter()
                if method == "scorer":
                    scorer_run(m, x, y, batch, max_memory)
                    n = samples
                elif method == "loop":
                    loop_run(m, x[:loop_samples], names)
                    n = loop_samples
                else:
                    epoch_run(m, x, y, batch)
                    n = samples
                dt = time.perf_counter() - t
            times[method].append(n / dt)
            peaks[method] = max(peaks[method], pk.rise)
    med = {k: statistics.median(v) for k, v in times.items()}
    params = sum(p.numel() for p in m.parameters())
    out = {"model": name, "parameters": params, "samples": samples, "loop_samples": loop_samples, "batch": batch,
           "rounds": rounds, "samples_per_s": med, "all": times, "peak_rss_rise_mb": {k: v / 2 ** 20 for k, v in peaks.items()},
           "scorer_vs_loop": med["scorer"] / med["loop"], "scorer_time_vs_epoch": med["epoch"] / med["scorer"],
           "max_memory_mb": max_memory / 2 ** 20}
    print(f"{name} ({params:,} parameters; {samples} samples, batch {batch}; loop on {loop_samples} samples; median of {rounds} interleaved rounds)")
    for k in ("scorer", "loop", "epoch"):
        print(f"  {k:7s} {med[k]:10.1f} samples/s   (rounds: {', '.join(f'{v:.1f}' for v in times[k])})   peak RSS rise {peaks[k] / 2 ** 20:7.1f} MB")
    print(f"  scorer / loop            {out['scorer_vs_loop']:6.1f}×   (goal ≥ 20×)")
    print(f"  scorer time / epoch time {out['scorer_time_vs_epoch']:6.2f}×   (goal ≤ 2×)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-memory", type=int, default=256 << 20, help="TaLoSScorer max_memory in bytes")
    ap.add_argument("--models", default="mlp,vit-ti", help="comma-separated: mlp, vit-ti")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.rounds < 5:
        ap.error("--rounds must be ≥ 5 (medians of at least 5)")
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    models = a.models.split(",")
    res = []
    if "mlp" in models:
        res.append(bench("mlp 784-256-256-10", mlp_arch(), 4096, 64, a.rounds, a.max_memory, 512))
    if "vit-ti" in models:
        res.append(bench("vit-ti/16", vit_arch(), 16, 8, a.rounds, a.max_memory, 8))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
