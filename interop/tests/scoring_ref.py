#!/usr/bin/env python3
"""An independent numpy (float64) reference for Locus's sensitivity scores and mask selection,
written from the definitions (docs/talos.md §Estimators and §Mask calibration; Iurada et al.,
ICLR 2025), not from the Swift code.

Per-sample gradients are formed explicitly, one sample and one class at a time: for sample n the
network runs forward on x_n alone, then for every class c one backward pass of e_c from the logits
gives the Jacobian row J_c = ∂f_c(x_n)/∂θ of every scored tensor (Linear: the outer product δ xᵀ of
that single sample; Conv2d: Σ over positions of δ_t x_tᵀ; LayerNorm: δ ⊙ x̂ and δ). The estimators
are then built from those rows, with p = softmax(f(x_n)) and L_k = ∇ log p_k = J_k − Σ_c p_c J_c:

    talos             Σ_n Σ_draws J_ŷ²           (ŷ supplied: the classes the Swift side sampled)
    talos-exact       Σ_n Σ_c p_c J_c²
    fisher-empirical  Σ_n L_{y_n}²
    fisher-mc         Σ_n Σ_draws L_ŷ²           (ŷ supplied)
    fisher-exact      Σ_n Σ_k p_k L_k²

Scored tensors: weights and biases of the body's Linear, Conv2d and LayerNorm layers (never a head).

Used two ways:
  * as a library by interop/tests/test_scoring.py (`RefModel`, `scores`, `select`, ...);
  * as a script by the Swift tests (Tests/LocusEngineTests/ScoringTests.swift):

        scoring_ref.py CASE.json MODEL.h5 OUT.json

    CASE.json: {"x": [...], "x_shape": [B, ...], "labels": [...], "head": "NAME",
                "runs": [{"key": "k", "estimator": "talos", "classes": [[ŷ per sample] per draw] | null}]}
    OUT.json:  {"scores": {key: {name: [...]}}, "probabilities": [[...] per sample]}

    MODEL.h5 is a Locus checkpoint (read with h5py through interop/python/locus_h5).
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import locus_h5  # noqa: E402

ESTIMATORS = ("talos", "talos-exact", "fisher-empirical", "fisher-mc", "fisher-exact")
SAMPLED = ("talos", "fisher-mc")


# ------------------------------------------------------------------ single-sample layers (no batch axis)

class Linear:
    scored = True

    def __init__(self, name, w, b):
        self.name, self.w, self.b = name, w, b

    def params(self):
        return [self.name + "weight"] + ([self.name + "bias"] if self.b is not None else [])

    def forward(self, x):
        self.x = x
        y = self.w @ x
        return y + self.b if self.b is not None else y

    def backward(self, d):
        g = {self.name + "weight": np.outer(d, self.x)}          # the per-sample gradient, explicitly
        if self.b is not None:
            g[self.name + "bias"] = d.copy()
        return self.w.T @ d, g


class Conv2d:
    """x [C, H, W]; zero padding; one kernel offset at a time."""
    scored = True

    def __init__(self, name, w, b, stride, padding):
        self.name, self.w, self.b, self.s, self.p = name, w, b, stride, padding

    def params(self):
        return [self.name + "weight"] + ([self.name + "bias"] if self.b is not None else [])

    def _win(self, xp, kh, kw):
        s, (ho, wo) = self.s, self.hw
        return xp[:, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s]

    def forward(self, x):
        self.x = x
        k, p = self.w.shape[2], self.p
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        self.hw = ((xp.shape[1] - k) // self.s + 1, (xp.shape[2] - k) // self.s + 1)
        y = np.zeros((self.w.shape[0],) + self.hw)
        for kh in range(k):
            for kw in range(k):
                y += np.einsum("chw,oc->ohw", self._win(xp, kh, kw), self.w[:, :, kh, kw])
        if self.b is not None:
            y += self.b[:, None, None]
        return y

    def backward(self, d):
        k, p = self.w.shape[2], self.p
        xp = np.pad(self.x, ((0, 0), (p, p), (p, p)))
        gxp, gw = np.zeros_like(xp), np.zeros_like(self.w)
        s, (ho, wo) = self.s, self.hw
        for kh in range(k):
            for kw in range(k):
                gw[:, :, kh, kw] = np.einsum("ohw,chw->oc", d, self._win(xp, kh, kw))
                gxp[:, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s] += np.einsum("ohw,oc->chw", d, self.w[:, :, kh, kw])
        g = {self.name + "weight": gw}
        if self.b is not None:
            g[self.name + "bias"] = d.sum(axis=(1, 2))
        h, w = self.x.shape[1], self.x.shape[2]
        return gxp[:, p:p + h, p:p + w], g


class LayerNorm:
    scored = True

    def __init__(self, name, g, b, eps):
        self.name, self.g, self.b, self.eps = name, g, b, eps

    def params(self):
        return [self.name + "weight", self.name + "bias"]

    def forward(self, x):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        self.inv = 1 / np.sqrt(var + self.eps)
        self.xh = (x - mu) * self.inv
        return self.xh * self.g + self.b

    def backward(self, d):
        red = tuple(range(d.ndim - 1))
        g = {self.name + "weight": (d * self.xh).sum(axis=red) if red else d * self.xh,
             self.name + "bias": d.sum(axis=red) if red else d.copy()}
        n = d.shape[-1]
        gh = d * self.g
        gx = self.inv / n * (n * gh - gh.sum(-1, keepdims=True) - self.xh * (gh * self.xh).sum(-1, keepdims=True))
        return gx, g


class Act:
    scored = False

    def __init__(self, kind):
        self.kind = kind

    def params(self):
        return []

    def forward(self, x):
        self.x = x
        if self.kind == "relu":
            return np.maximum(x, 0)
        if self.kind == "gelu":
            return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
        return x

    def backward(self, d):
        x = self.x
        if self.kind == "relu":
            return d * (x > 0), {}
        if self.kind == "gelu":
            cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
            return d * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)), {}
        return d, {}


class Flatten:
    scored = False

    def params(self):
        return []

    def forward(self, x):
        self.shape = x.shape
        return x.reshape(-1)

    def backward(self, d):
        return d.reshape(self.shape), {}


class AvgPool:
    scored = False

    def __init__(self, k, s):
        self.k, self.s = k, s

    def params(self):
        return []

    def forward(self, x):
        self.shape = x.shape
        c, h, w = x.shape
        k, s = self.k, self.s
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        return np.array([[[x[ch, i * s:i * s + k, j * s:j * s + k].mean() for j in range(wo)] for i in range(ho)] for ch in range(c)])

    def backward(self, d):
        gx = np.zeros(self.shape)
        k, s = self.k, self.s
        for i in range(d.shape[1]):
            for j in range(d.shape[2]):
                gx[:, i * s:i * s + k, j * s:j * s + k] += d[:, i, j][:, None, None] / (k * k)
        return gx, {}


class MaxPool:
    """No padding, floor mode; the gradient goes to the first maximum of each window (as torch)."""
    scored = False

    def __init__(self, k, s):
        self.k, self.s = k, s

    def params(self):
        return []

    def forward(self, x):
        self.shape = x.shape
        c, h, w = x.shape
        k, s = self.k, self.s
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        y, self.arg = np.zeros((c, ho, wo)), {}
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    win = x[ch, i * s:i * s + k, j * s:j * s + k]
                    a = int(np.argmax(win))
                    self.arg[ch, i, j] = (i * s + a // k, j * s + a % k)
                    y[ch, i, j] = win.flat[a]
        return y

    def backward(self, d):
        gx = np.zeros(self.shape)
        for (ch, i, j), (r, c) in self.arg.items():
            gx[ch, r, c] += d[ch, i, j]
        return gx, {}


# ------------------------------------------------------------------ the model

class RefModel:
    def __init__(self, arch, state):
        self.arch = arch
        self.layers = []
        for i, spec in enumerate(arch["layers"]):
            t, pre = spec["type"], f"layers.{i}."
            bias = spec.get("bias", True)
            if t == "linear":
                self.layers.append(Linear(pre, state[pre + "weight"], state[pre + "bias"] if bias else None))
            elif t == "conv2d":
                self.layers.append(Conv2d(pre, state[pre + "weight"], state[pre + "bias"] if bias else None,
                                          spec.get("stride") or 1, spec.get("padding") or 0))
            elif t == "layernorm":
                self.layers.append(LayerNorm(pre, state[pre + "weight"], state[pre + "bias"], spec.get("eps", 1e-5)))
            elif t in ("relu", "gelu", "dropout"):
                self.layers.append(Act(t))
            elif t == "flatten":
                self.layers.append(Flatten())
            elif t == "avgpool2d":
                self.layers.append(AvgPool(spec["kernel_size"], spec.get("stride") or spec["kernel_size"]))
            elif t == "maxpool2d":
                self.layers.append(MaxPool(spec["kernel_size"], spec.get("stride") or spec["kernel_size"]))
            else:
                raise ValueError(f"scoring_ref: layer type {t} is not supported")
        self.heads = {h["name"]: (state[f"heads.{h['name']}.weight"], state[f"heads.{h['name']}.bias"]) for h in arch["heads"]}

    @classmethod
    def load(cls, checkpoint):
        d = locus_h5.load(checkpoint)
        return cls(d["architecture"], {k: np.asarray(v, dtype=np.float64) for k, v in d["tensors"].items()})

    def scored(self):
        """Names of the scored tensors, in model order."""
        return [n for l in self.layers if l.scored for n in l.params()]

    def logits(self, x, head):
        """x: one sample (per-sample shape)."""
        h = np.asarray(x, dtype=np.float64).reshape(self.arch["input"])
        for l in self.layers:
            h = l.forward(h)
        w, b = self.heads[head]
        return w @ h + b

    def jacobian(self, x, head):
        """(p, {name: J [C, *shape]}): J[c] = ∂f_c(x)/∂θ, one backward pass per class."""
        z = self.logits(x, head)
        p = np.exp(z - z.max())
        p /= p.sum()
        w, _ = self.heads[head]
        names = self.scored()
        rows = {n: [] for n in names}
        for c in range(len(z)):
            d = w[c].copy()                       # e_cᵀ through the head: ∂f_c/∂h = W[c]
            grads = {}
            for l in reversed(self.layers):
                d, g = l.backward(d)
                grads.update(g)
            for n in names:
                rows[n].append(grads[n])
        return p, {n: np.stack(v) for n, v in rows.items()}


def scores(model, x, labels, head, estimator, classes=None):
    """{name: float64 array} of the estimator over the batch x [B, ...]. classes: [draws][B] sampled
    classes for talos / fisher-mc."""
    if estimator not in ESTIMATORS:
        raise ValueError(estimator)
    if estimator in SAMPLED and classes is None:
        raise ValueError(f"{estimator} needs the sampled classes")
    out = {n: 0.0 for n in model.scored()}
    for i in range(len(x)):
        p, J = model.jacobian(x[i], head)
        for n, j in J.items():
            shape = (-1,) + (1,) * (j.ndim - 1)
            mean = (p.reshape(shape) * j).sum(axis=0)          # Σ_c p_c J_c = E[J]
            if estimator == "talos":
                s = sum(j[draw[i]] ** 2 for draw in classes)
            elif estimator == "talos-exact":
                s = (p.reshape(shape) * j ** 2).sum(axis=0)
            elif estimator == "fisher-empirical":
                s = (j[int(labels[i])] - mean) ** 2
            elif estimator == "fisher-mc":
                s = sum((j[draw[i]] - mean) ** 2 for draw in classes)
            else:
                s = (p.reshape(shape) * (j - mean) ** 2).sum(axis=0)
            out[n] = out[n] + s
    return {n: np.asarray(v, dtype=np.float64) for n, v in out.items()}


def probabilities(model, x, head):
    out = []
    for xi in x:
        z = model.logits(xi, head)
        e = np.exp(z - z.max())
        out.append(e / e.sum())
    return np.array(out)


# ------------------------------------------------------------------ mask selection (Locus's Selection, from its rules)

def select(tensors, density, keep="lowest", scope="global", eligible=None):
    """Exactly int(density · n) entries by score (n = all entries in scope; never more than are eligible);
    ties broken by position: tensors in the given order, C order inside. Returns bool arrays."""
    if scope == "local":
        return [select([t], density, keep, "global", None if eligible is None else [eligible[i]])[0] for i, t in enumerate(tensors)]
    flat = np.concatenate([np.ravel(np.asarray(t, dtype=np.float32)) for t in tensors]) if tensors else np.zeros(0, np.float32)
    ok = np.ones(flat.size, bool) if eligible is None else np.concatenate([np.ravel(e) for e in eligible])
    key = flat if keep == "lowest" else -flat
    k = min(int(density * flat.size), int(ok.sum()))
    pos = np.nonzero(ok)[0]
    order = pos[np.argsort(key[pos], kind="stable")]
    sel = np.zeros(flat.size, bool)
    sel[order[:k]] = True
    out, start = [], 0
    for t in tensors:
        n = np.asarray(t).size
        out.append(sel[start:start + n].reshape(np.shape(t)))
        start += n
    return out


# ------------------------------------------------------------------ script entry point

def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        case = json.load(fh)
    model = RefModel.load(argv[2])
    x = np.asarray(case["x"], dtype=np.float32).astype(np.float64).reshape(case["x_shape"])
    labels, head = case["labels"], case["head"]
    out = {"scores": {}, "probabilities": probabilities(model, x, head).tolist()}
    for run in case["runs"]:
        s = scores(model, x, labels, head, run["estimator"], run.get("classes"))
        out["scores"][run["key"]] = {n: np.ravel(v).tolist() for n, v in s.items()}
    with open(argv[3], "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
