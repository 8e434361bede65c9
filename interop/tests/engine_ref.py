#!/usr/bin/env python3
"""An independent numpy (float64) implementation of the LocusEngine model: forward and backward of
the sequential body, the linear heads and the softmax cross-entropy, written from the PyTorch
definitions (not from the Swift code), plus an optional torch twin built from the same weights.

Used two ways:
  * as a library by interop/tests/test_engine.py (`NumpyModel`, `read_safetensors`, ...);
  * as a script by the Swift tests (Tests/LocusEngineTests/ReferenceTests.swift):

        engine_ref.py CASE.json MODEL.safetensors OUT.json [--torch]

    CASE.json: {"architecture": {...}, "x": [...], "x_shape": [...], "labels": [...], "head": "NAME",
                "label_smoothing": eps, "mode": "train" | "eval"}
    OUT.json:  {"numpy": RESULT, "torch": RESULT | null, "torch_error": str | null}
    RESULT:    {"logits": [...], "loss": float, "grads": {name: [...]}, "input_grad": [...],
                "activations": [[...] per body layer output], "output_grads": [[...] per body layer]}

The weights come from a safetensors file (what `locus convert model.h5 model.safetensors` writes),
looked up by their PyTorch state-dict names (`layers.N.weight`, `heads.NAME.bias`).
"""
import json
import math
import struct
import sys

import numpy as np

_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "u1"}


def read_safetensors(path):
    """{name: float64 array} from a safetensors file, parsed by hand (BF16 widened to float32 first)."""
    with open(path, "rb") as fh:
        blob = fh.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        raw = data[a:b]
        if e["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=_ST_DTYPES[e["dtype"]])
        out[name] = arr.astype(np.float64).reshape(e["shape"])
    return out


# ------------------------------------------------------------------ layers (forward returns a cache for backward)

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _pad(x, p):
    return np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x


class Linear:
    def __init__(self, w, b):
        self.w, self.b = w, b                      # w [out, in] as torch

    def forward(self, x):
        self.x = x
        y = x @ self.w.T
        return y + self.b if self.b is not None else y

    def backward(self, gy):
        grads = {"weight": gy.T @ self.x}
        if self.b is not None:
            grads["bias"] = gy.sum(axis=0)
        return gy @ self.w, grads


class Conv2d:
    """Cross-correlation of the zero-padded input, one kernel offset (kh, kw) at a time."""

    def __init__(self, w, b, stride, padding):
        self.w, self.b, self.s, self.p = w, b, stride, padding   # w [O, C, k, k]

    def _windows(self, xp, kh, kw, ho, wo):
        s = self.s
        return xp[:, :, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s]   # [B, C, Ho, Wo]

    def forward(self, x):
        self.x = x
        k = self.w.shape[2]
        xp = _pad(x, self.p)
        ho = (xp.shape[2] - k) // self.s + 1
        wo = (xp.shape[3] - k) // self.s + 1
        self.out_hw = (ho, wo)
        y = np.zeros((x.shape[0], self.w.shape[0], ho, wo))
        for kh in range(k):
            for kw in range(k):
                y += np.einsum("bchw,oc->bohw", self._windows(xp, kh, kw, ho, wo), self.w[:, :, kh, kw])
        if self.b is not None:
            y += self.b[None, :, None, None]
        return y

    def backward(self, gy):
        k, (ho, wo), s, p = self.w.shape[2], self.out_hw, self.s, self.p
        xp = _pad(self.x, p)
        gxp = np.zeros_like(xp)
        gw = np.zeros_like(self.w)
        for kh in range(k):
            for kw in range(k):
                gw[:, :, kh, kw] = np.einsum("bohw,bchw->oc", gy, self._windows(xp, kh, kw, ho, wo))
                gxp[:, :, kh:kh + s * (ho - 1) + 1:s, kw:kw + s * (wo - 1) + 1:s] += np.einsum("bohw,oc->bchw", gy, self.w[:, :, kh, kw])
        grads = {"weight": gw}
        if self.b is not None:
            grads["bias"] = gy.sum(axis=(0, 2, 3))
        h, w = self.x.shape[2], self.x.shape[3]
        return gxp[:, :, p:p + h, p:p + w], grads


class Pool2d:
    """No padding, floor mode (torch defaults); max sends the gradient to the first maximum."""

    def __init__(self, kind, k, stride):
        self.kind, self.k, self.s = kind, k, stride

    def forward(self, x):
        self.x = x
        b, c, h, w = x.shape
        k, s = self.k, self.s
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        y = np.zeros((b, c, ho, wo))
        self.arg = np.zeros((b, c, ho, wo), dtype=np.int64)
        for i in range(ho):
            for j in range(wo):
                win = x[:, :, i * s:i * s + k, j * s:j * s + k].reshape(b, c, k * k)
                if self.kind == "max":
                    self.arg[:, :, i, j] = np.argmax(win, axis=2)
                    y[:, :, i, j] = np.max(win, axis=2)
                else:
                    y[:, :, i, j] = win.mean(axis=2)
        return y

    def backward(self, gy):
        gx = np.zeros_like(self.x)
        b, c, ho, wo = gy.shape
        k, s = self.k, self.s
        for i in range(ho):
            for j in range(wo):
                if self.kind == "max":
                    a = self.arg[:, :, i, j]
                    for bi in range(b):
                        for ci in range(c):
                            gx[bi, ci, i * s + a[bi, ci] // k, j * s + a[bi, ci] % k] += gy[bi, ci, i, j]
                else:
                    gx[:, :, i * s:i * s + k, j * s:j * s + k] += gy[:, :, i, j][:, :, None, None] / (k * k)
        return gx, {}


class ReLU:
    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, gy):
        return gy * (self.x > 0), {}


class GELU:
    """Exact GELU x·Φ(x)."""

    def forward(self, x):
        self.x = x
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))

    def backward(self, gy):
        x = self.x
        return gy * (0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)), {}


class Flatten:
    def forward(self, x):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, gy):
        return gy.reshape(self.shape), {}


class LayerNorm:
    def __init__(self, g, b, eps):
        self.g, self.b, self.eps = g, b, eps

    def forward(self, x):
        mu = x.mean(axis=-1, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
        self.inv = 1 / np.sqrt(var + self.eps)
        self.xh = (x - mu) * self.inv
        return self.xh * self.g + self.b

    def backward(self, gy):
        d = gy.shape[-1]
        red = tuple(range(gy.ndim - 1))
        grads = {"weight": (gy * self.xh).sum(axis=red), "bias": gy.sum(axis=red)}
        gh = gy * self.g
        gx = self.inv / d * (d * gh - gh.sum(-1, keepdims=True) - self.xh * (gh * self.xh).sum(-1, keepdims=True))
        return gx, grads


class Identity:
    def forward(self, x):
        return x

    def backward(self, gy):
        return gy, {}


def softmax_cross_entropy(z, labels, eps=0.0):
    """Mean over rows of −Σ_j t_j log softmax(z)_j with t = (1−ε)·onehot + ε/C; returns (loss, dz)."""
    b, c = z.shape
    m = z.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    logp = z - lse
    t = np.full((b, c), eps / c)
    t[np.arange(b), labels] += 1 - eps
    loss = -(t * logp).sum() / b
    return loss, (np.exp(logp) - t) / b


# ------------------------------------------------------------------ the model

class NumpyModel:
    """layers = the body, heads = {name: Linear}, parameters by their state-dict names."""

    def __init__(self, arch, state, mode="train"):
        self.arch, self.state = arch, state
        self.layers = []
        for i, spec in enumerate(arch["layers"]):
            t, pre = spec["type"], f"layers.{i}."
            if t == "linear":
                layer = Linear(state[pre + "weight"], state.get(pre + "bias") if spec.get("bias", True) else None)
            elif t == "conv2d":
                layer = Conv2d(state[pre + "weight"], state.get(pre + "bias") if spec.get("bias", True) else None,
                               spec.get("stride") or 1, spec.get("padding") or 0)
            elif t in ("maxpool2d", "avgpool2d"):
                layer = Pool2d(t[:3], spec["kernel_size"], spec.get("stride") or spec["kernel_size"])
            elif t == "relu":
                layer = ReLU()
            elif t == "gelu":
                layer = GELU()
            elif t == "flatten":
                layer = Flatten()
            elif t == "layernorm":
                layer = LayerNorm(state[pre + "weight"], state[pre + "bias"], spec.get("eps", 1e-5))
            elif t == "dropout":
                if mode == "train" and (spec.get("p") if spec.get("p") is not None else 0.5) > 0:
                    raise ValueError("the reference has no dropout masks: use mode 'eval' for models with dropout")
                layer = Identity()
            else:
                raise ValueError(f"unknown layer type {t}")
            self.layers.append((pre, layer))
        self.heads = {h["name"]: Linear(state[f"heads.{h['name']}.weight"], state[f"heads.{h['name']}.bias"])
                      for h in arch["heads"]}

    def features(self, x):
        self.activations = []
        for _, layer in self.layers:
            x = layer.forward(x)
            self.activations.append(x)
        return x

    def logits(self, x, head):
        return self.heads[head].forward(self.features(x))

    def loss_and_grads(self, x, labels, head, eps=0.0):
        z = self.logits(x, head)
        loss, gz = softmax_cross_entropy(z, np.asarray(labels), eps)
        g, hg = self.heads[head].backward(gz)
        grads = {f"heads.{head}.{k}": v for k, v in hg.items()}
        out_grads = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            pre, layer = self.layers[i]
            out_grads[i] = g
            g, lg = layer.backward(g)
            grads.update({pre + k: v for k, v in lg.items()})
        return {"logits": z, "loss": loss, "grads": grads, "input_grad": g,
                "activations": list(self.activations), "output_grads": out_grads}


def normalise(raw, scale, mean, std):
    """Dataset inputs → network inputs: (raw · scale − mean) / std, per channel (axis 1) when mean has > 1 entry."""
    x = raw.astype(np.float64) * scale
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    if mean.size > 1 or std.size > 1:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return (x - mean.reshape(shape)) / std.reshape(shape)
    return (x - mean[0]) / std[0]


# ------------------------------------------------------------------ torch twin

def torch_module(arch, state):
    """nn.Module with `layers = nn.Sequential(...)` and `heads = nn.ModuleDict(...)`, loaded with
    load_state_dict(strict=True) from the safetensors names: proves the naming claim."""
    import torch
    from torch import nn

    mods = []
    for spec in arch["layers"]:
        t = spec["type"]
        if t == "linear":
            mods.append(nn.Linear(spec["in_features"], spec["out_features"], bias=spec.get("bias", True)))
        elif t == "conv2d":
            mods.append(nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"], stride=spec.get("stride") or 1,
                                  padding=spec.get("padding") or 0, bias=spec.get("bias", True)))
        elif t == "maxpool2d":
            mods.append(nn.MaxPool2d(spec["kernel_size"], stride=spec.get("stride") or spec["kernel_size"]))
        elif t == "avgpool2d":
            mods.append(nn.AvgPool2d(spec["kernel_size"], stride=spec.get("stride") or spec["kernel_size"]))
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "gelu":
            mods.append(nn.GELU())
        elif t == "flatten":
            mods.append(nn.Flatten())
        elif t == "layernorm":
            mods.append(nn.LayerNorm(spec["normalized_shape"], eps=spec.get("eps", 1e-5)))
        elif t == "dropout":
            mods.append(nn.Dropout(spec.get("p") if spec.get("p") is not None else 0.5))
        else:
            raise ValueError(f"unknown layer type {t}")

    class LocusModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.Sequential(*mods)
            self.heads = nn.ModuleDict({h["name"]: nn.Linear(h["in_features"], h["out_features"]) for h in arch["heads"]})

        def forward(self, x, head):
            return self.heads[head](self.layers(x))

    m = LocusModule().double()
    m.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    return m


def torch_result(arch, state, x, labels, head, eps, mode):
    import torch
    import torch.nn.functional as F

    m = torch_module(arch, state)
    m.train(mode == "train")
    if mode == "train" and any(s["type"] == "dropout" and (s.get("p") if s.get("p") is not None else 0.5) > 0 for s in arch["layers"]):
        raise ValueError("dropout in train mode cannot be compared")
    acts = []

    def keep(_module, _inputs, output):      # a forward hook must return None (anything else replaces the output)
        output.retain_grad()
        acts.append(output)

    hooks = [layer.register_forward_hook(keep) for layer in m.layers]
    xt = torch.from_numpy(x).requires_grad_(True)
    z = m(xt, head)
    loss = F.cross_entropy(z, torch.as_tensor(np.asarray(labels, dtype=np.int64)), label_smoothing=eps)
    loss.backward()
    for h in hooks:
        h.remove()
    named = dict(m.named_parameters())
    return {"logits": z.detach().numpy(), "loss": float(loss), "input_grad": xt.grad.numpy(),
            "grads": {k: p.grad.numpy() for k, p in named.items() if p.grad is not None},
            "activations": [a.detach().numpy() for a in acts], "output_grads": [a.grad.numpy() for a in acts]}


# ------------------------------------------------------------------ script entry point

def _flat(r):
    return {"logits": np.ravel(r["logits"]).tolist(), "loss": float(r["loss"]),
            "grads": {k: np.ravel(v).tolist() for k, v in r["grads"].items()},
            "input_grad": np.ravel(r["input_grad"]).tolist(),
            "activations": [np.ravel(a).tolist() for a in r["activations"]],
            "output_grads": [np.ravel(g).tolist() for g in r["output_grads"]]}


def main(argv):
    if len(argv) not in (4, 5) or (len(argv) == 5 and argv[4] != "--torch"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        case = json.load(fh)
    arch = case["architecture"]
    state = read_safetensors(argv[2])
    x = np.asarray(case["x"], dtype=np.float32).astype(np.float64).reshape(case["x_shape"])
    labels, head, mode = case["labels"], case["head"], case.get("mode", "train")
    eps = float(np.float32(case.get("label_smoothing", 0.0)))     # the engine's ε is a Float
    out = {"numpy": _flat(NumpyModel(arch, state, mode).loss_and_grads(x, labels, head, eps)), "torch": None, "torch_error": None}
    if len(argv) == 5:
        try:
            out["torch"] = _flat(torch_result(arch, state, x, labels, head, eps, mode))
        except ImportError as e:
            out["torch_error"] = f"torch is not installed ({e})"
    with open(argv[3], "w") as fh:
        json.dump(out, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
