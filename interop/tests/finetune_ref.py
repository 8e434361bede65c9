#!/usr/bin/env python3
"""Independent numpy (float64) implementations of the two sparse fine-tuning optimizers, written from
their definitions (docs/talos.md §SparseSGDM and §Masked AdamW (AdaptW); Iurada et al., ICLR 2025),
not from the Swift code:

  * SparseSGDM — SGD with momentum and a mask, per parameter p with gradient g and mask m (1 = trainable):
        d = g + λ·p                 (weight decay first, when λ ≠ 0)
        d = d ⊙ m                   (mask the gradient)
        if μ ≠ 0: buf = d on the first step, else μ·buf + (1−δ)·d;  buf = buf ⊙ m
                  d = d + μ·buf (Nesterov) or buf
        p = p − lr·d
  * AdaptW — AdamW whose update and decoupled weight decay are multiplied by the mask; the moments
    follow the unmasked gradient (torch.optim.AdamW defaults β = (0.9, 0.999), ε = 1e-8):
        m = β₁m + (1−β₁)g;  v = β₂v + (1−β₂)g²
        p = p − lr·λ·(mask ⊙ p)
        p = p − lr/(1−β₁ᵗ) · mask ⊙ m / (√v/√(1−β₂ᵗ) + ε)

`finetune` runs full-batch steps of either on engine_ref.NumpyModel, with gradients from numpy's own
forward/backward, the way `locus finetune --batch-size N --schedule constant` does.
"""
import numpy as np

import engine_ref


class SparseSGDM:
    def __init__(self, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.lr, self.momentum, self.dampening, self.weight_decay, self.nesterov = lr, momentum, dampening, weight_decay, nesterov
        self.state = {}

    def step(self, params, grads, masks):
        """params/grads: name -> float64 array (params updated in place); masks: name -> 0/1 float array
        for every parameter that takes part (a missing name does not take part at all)."""
        for name, m in masks.items():
            p, d = params[name], grads[name].copy()
            if self.weight_decay != 0:
                d = d + self.weight_decay * p
            d = d * m
            if self.momentum != 0:
                if name not in self.state:
                    buf = d.copy()
                else:
                    buf = self.momentum * self.state[name] + (1 - self.dampening) * d
                buf = buf * m
                self.state[name] = buf
                d = d + self.momentum * buf if self.nesterov else buf
            p -= self.lr * d


class AdaptW:
    def __init__(self, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.state = {}

    def step(self, params, grads, masks):
        b1, b2 = self.betas
        for name, m in masks.items():
            p, g = params[name], grads[name]
            s = self.state.setdefault(name, {"t": 0, "m": np.zeros_like(p), "v": np.zeros_like(p)})
            s["t"] += 1
            s["m"] = b1 * s["m"] + (1 - b1) * g
            s["v"] = b2 * s["v"] + (1 - b2) * g * g
            bc1, bc2 = 1 - b1 ** s["t"], 1 - b2 ** s["t"]
            p -= self.lr * self.weight_decay * (m * p)
            p -= self.lr / bc1 * m * s["m"] / (np.sqrt(s["v"]) / np.sqrt(bc2) + self.eps)


def f32(x):
    """A float32 hyper-parameter as the engine sees it (the CLI parses Float)."""
    return float(np.float32(x))


def finetune(arch, state, x, y, head, masks, optimizer, steps, *, train_head=False):
    """Full-batch steps from `state` (name -> float64 array, not modified). `masks`: name -> bool array for the
    body parameters that take part; the head joins densely when train_head. Returns (new state, losses)."""
    params = {k: v.astype(np.float64).copy() for k, v in state.items()}
    part = {k: np.asarray(m, dtype=np.float64) for k, m in masks.items() if np.any(m)}
    if train_head:
        for k in (f"heads.{head}.weight", f"heads.{head}.bias"):
            part[k] = np.ones_like(params[k])
    losses = []
    for _ in range(steps):
        model = engine_ref.NumpyModel(arch, params, mode="train")
        r = model.loss_and_grads(x, y, head)
        losses.append(r["loss"])
        optimizer.step(params, r["grads"], part)
    return params, losses


def top_density(taus, density):
    """--density: over the tensors in the given order (C order inside), keep the ⌊d·n⌋ entries of largest
    |τ|, ties by position; zeros are never kept. Returns name -> sorted flat indices."""
    names = list(taus)
    flat = np.concatenate([np.ravel(taus[k]) for k in names]) if names else np.zeros(0)
    k = int(density * flat.size)
    order = np.lexsort((np.arange(flat.size), -np.abs(flat)))[:k]   # |τ| descending, then position
    keep = np.zeros(flat.size, bool)
    keep[order] = True
    keep &= flat != 0
    out, start = {}, 0
    for name in names:
        n = np.size(taus[name])
        idx = np.flatnonzero(keep[start:start + n])
        if idx.size:
            out[name] = idx
        start += n
    return out
