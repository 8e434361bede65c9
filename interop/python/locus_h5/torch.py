"""locus_h5.torch — the PyTorch bridge: Locus artifacts computed with torch (CPU or CUDA, DDP).

Everything here writes the same artifacts the Locus command-line tool writes from the same inputs
(spec/FORMAT.md; docs/python.md has a walk-through):

* ``save_checkpoint`` / ``load_state_dict`` / ``load_model`` — checkpoints, tensor by tensor, every
  dtype (bfloat16 included), names verbatim; ``build_model`` turns a Locus ``/architecture`` into an
  ``nn.Module`` whose state-dict keys are the checkpoint's tensor names (timm's for a ViT).
* ``load_mask`` / ``save_mask`` — masks as ``torch.bool`` tensors.
* ``save_task_vector`` — τ = θ_ft − θ_base stored entry for entry like ``locus diff``.
* ``SparseSGDM`` / ``MaskedAdamW`` — ``torch.optim.Optimizer`` s with the update rules of
  ``locus finetune`` (frozen entries stay bit-identical; state only for trainable entries).
* ``TaLoSScorer`` — the five estimators of ``locus score`` with per-sample gradients from
  ``torch.func`` (vmap over vjp), in memory-bounded chunks, sharded over torch.distributed ranks.
* ``calibrate_mask`` — the TaLoS calibration rounds of ``locus mask``.

The sampled estimators (talos, fisher-mc) draw their classes from the same SplitMix64 stream as
Locus, indexed by the sample's position in the scoring set, so a seed gives the same draws on one
process, on N ranks and in ``locus score``.
"""
from __future__ import annotations

import math
import os
import re
import sys
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError("locus_h5.torch needs PyTorch: pip install 'locus-h5[torch]' (or pip install torch)") from e

import locus_h5 as _core
from locus_h5 import LocusError, PathLike

__all__ = ["build_model", "LocusModel", "save_checkpoint", "load_state_dict", "load_model", "load_dataset",
           "LocusMask", "load_mask", "save_mask", "save_task_vector", "SparseSGDM", "MaskedAdamW",
           "TaLoSScorer", "ESTIMATORS", "calibrate_mask", "select", "SplitMix64", "epoch_order", "learning_rate",
           "state_fingerprint"]

ESTIMATORS = ("talos", "talos-exact", "fisher-empirical", "fisher-mc", "fisher-exact")
SAMPLED = ("talos", "fisher-mc")

_TORCH_TO_LOCUS = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                   torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
                   torch.uint8: "uint8", torch.bool: "bool"}
for _n in ("uint16", "uint32", "uint64"):
    if hasattr(torch, _n):
        _TORCH_TO_LOCUS[getattr(torch, _n)] = _n
_LOCUS_TO_TORCH = {v: k for k, v in _TORCH_TO_LOCUS.items()}
_U64 = np.uint64


# ================================================================ SplitMix64 (Sources/LocusRandom)

class SplitMix64:
    """Locus's seeded generator (SplitMix64). The k-th output (k = 0, 1, ...) depends only on the seed
    and k, so any position of the stream can be computed directly (``unit_floats``)."""

    GAMMA = 0x9E3779B97F4A7C15
    MASK = (1 << 64) - 1

    def __init__(self, seed: int) -> None:
        self.state = int(seed) & self.MASK

    @staticmethod
    def _mix(z: int) -> int:
        m = SplitMix64.MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
        return z ^ (z >> 31)

    def next(self) -> int:
        self.state = (self.state + self.GAMMA) & self.MASK
        return self._mix(self.state)

    @classmethod
    def derived(cls, seed: int, label: int) -> "SplitMix64":
        """SplitMix64.derived(seed:label): an independent stream for a label (e.g. an epoch)."""
        r = cls(int(seed) ^ ((int(label) * 0xD1B54A32D192ED03) & cls.MASK))
        r.next()
        return r

    def below(self, bound: int) -> int:
        """Uniform in 0..<bound without modulo bias: outputs below 2**64 mod bound are rejected, the
        first other one is reduced modulo bound (SplitMix64.below)."""
        threshold = (1 << 64) % bound
        while True:
            r = self.next()
            if r >= threshold:
                return r % bound

    def permutation(self, n: int) -> List[int]:
        """Fisher–Yates shuffle of 0..<n, as Locus draws it: swap i with below(i + 1), i = n−1 ... 1."""
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p

    @staticmethod
    def unit_floats(seed: int, start: int, count: int) -> np.ndarray:
        """Outputs start ..< start+count of the stream of `seed` as unitFloat(): float32 in [0, 1), 24 bits."""
        k = np.arange(start + 1, start + count + 1, dtype=_U64)
        with np.errstate(over="ignore"):
            z = _U64(int(seed) & SplitMix64.MASK) + k * _U64(SplitMix64.GAMMA)
            z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
            z = z ^ (z >> _U64(31))
        return (z >> _U64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)


def epoch_order(indices: Sequence[int], epoch: int, seed: int, shuffle: bool = True) -> List[int]:
    """The sample order of one epoch of ``locus train`` / ``locus finetune`` (Batches.order)."""
    idx = [int(i) for i in indices]
    if not shuffle:
        return idx
    return [idx[j] for j in SplitMix64.derived(seed, 0x5EED0000 + int(epoch)).permutation(len(idx))]


def learning_rate(step: int, base: float, total: int, schedule: str = "cosine", warmup: int = 0) -> float:
    """LearningRateSchedule.rate(at:) of Locus: linear warm-up, then cosine decay to 0 or constant.
    Returned as the float32 value Locus uses."""
    b = np.float32(base)
    if step < warmup:
        return float(b * np.float32(step + 1) / np.float32(warmup))
    if schedule == "constant":
        return float(b)
    if schedule != "cosine":
        raise ValueError(f"schedule must be cosine or constant, not {schedule!r}")
    span = max(1, total - warmup)
    progress = min(step - warmup, span) / span
    return float(b * np.float32(0.5 * (1 + math.cos(math.pi * progress))))


# ================================================================ models from a Locus architecture

class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        qkv = self.qkv(x).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q * (d // h) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(b, t, d))


class _Mlp(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    """timm's pre-LayerNorm transformer block (spec §2.1 vit_block)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        d, eps = spec["embed_dim"], spec.get("eps", 1e-6)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = _Attention(d, spec["num_heads"], spec.get("qkv_bias", True))
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = _Mlp(d, int(d * spec.get("mlp_ratio", 4.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        p = spec["patch_size"]
        self.proj = nn.Conv2d(spec["in_chans"], spec["embed_dim"], p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Holder(nn.Module):
    """A plain container, so that parameters get dotted names like ``blocks.0.norm1.weight``."""


def _layer(spec: Mapping[str, Any]) -> Optional[nn.Module]:
    t = spec["type"]
    if t == "linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec.get("bias", True))
    if t == "conv2d":
        return nn.Conv2d(spec["in_channels"], spec["out_channels"], spec["kernel_size"], stride=spec.get("stride") or 1,
                         padding=spec.get("padding") or 0, bias=spec.get("bias", True))
    if t == "layernorm":
        return nn.LayerNorm(spec["normalized_shape"], eps=spec.get("eps", 1e-5))
    if t == "relu":
        return nn.ReLU()
    if t == "gelu":
        return nn.GELU()
    if t == "flatten":
        return nn.Flatten()
    if t in ("maxpool2d", "avgpool2d"):
        cls = nn.MaxPool2d if t == "maxpool2d" else nn.AvgPool2d
        return cls(spec["kernel_size"], stride=spec.get("stride") or spec["kernel_size"])
    if t == "dropout":
        return nn.Dropout(spec.get("p") if spec.get("p") is not None else 0.5)
    if t == "patch_embed":
        return _PatchEmbed(spec)
    if t == "vit_block":
        return _Block(spec)
    if t in ("class_token_position", "class_token_pool"):
        return None
    raise ValueError(f"architecture: layer type {t!r} is not supported")


def _attach(root: nn.Module, dotted: str, module: nn.Module) -> None:
    parts = dotted.split(".")
    parent = root
    for p in parts[:-1]:
        if not hasattr(parent, p) or not isinstance(getattr(parent, p), nn.Module):
            parent.add_module(p, _Holder())
        parent = getattr(parent, p)
    parent.add_module(parts[-1], module)


class LocusModel(nn.Module):
    """A Locus ``locus-sequential`` architecture (spec §2.1) as an nn.Module.

    ``forward(x, head=None)`` returns the logits of ``head`` (default: the architecture's first head).
    ``state_dict()`` keys are the Locus tensor names; ``locus_parameter_names()`` lists the parameters in
    Locus's model order (body layers in order, then heads), the order the scorer and masks use.
    """

    def __init__(self, architecture: Mapping[str, Any]) -> None:
        super().__init__()
        if architecture.get("format") != "locus-sequential":
            raise ValueError(f"architecture: format is {architecture.get('format')!r}, expected 'locus-sequential'")
        self.architecture = dict(architecture)
        self.input_shape = tuple(architecture["input"])
        self._plan: List[Tuple[str, str, Optional[nn.Module], Mapping[str, Any]]] = []
        self._order: List[str] = []
        # An identity after each class_token_position: its output gradient is the per-sample gradient of
        # pos_embed (and, at token 0, of cls_token). No parameters, so the state dict is unchanged.
        self._token_taps: Dict[int, str] = {}
        for i, spec in enumerate(architecture["layers"]):
            prefix = spec.get("name")
            prefix = f"layers.{i}" if prefix is None else prefix
            t = spec["type"]
            m = _layer(spec)
            if t == "class_token_position":
                d, n = spec["embed_dim"], spec["num_patches"]
                holder: nn.Module = self if prefix == "" else _Holder()
                holder.register_parameter("cls_token", nn.Parameter(torch.zeros(1, 1, d)))
                holder.register_parameter("pos_embed", nn.Parameter(torch.zeros(1, n + 1, d)))
                if prefix != "":
                    _attach(self, prefix, holder)
                m = holder
                self._token_taps[i] = f"token_tap_{i}"
                self.add_module(self._token_taps[i], nn.Identity())
            elif m is not None and any(True for _ in m.parameters()):
                if prefix == "":
                    raise ValueError(f"architecture: layer {i} ({t}) cannot have an empty name")
                _attach(self, prefix, m)
            pre = prefix + "." if prefix else ""
            if t == "class_token_position":
                self._order += [pre + "cls_token", pre + "pos_embed"]
            elif m is not None:
                self._order += [pre + n for n, _ in m.named_parameters()]
            self._plan.append((t, prefix, m, spec))
        self._heads: Dict[str, str] = {}
        for h in architecture["heads"]:
            prefix = h.get("prefix") or f"heads.{h['name']}"
            lin = nn.Linear(h["in_features"], h["out_features"])
            _attach(self, prefix, lin)
            self._heads[h["name"]] = prefix
            self._order += [prefix + ".weight", prefix + ".bias"]

    @property
    def head_names(self) -> List[str]:
        return list(self._heads)

    def head_module(self, head: Optional[str] = None) -> nn.Linear:
        name = head or next(iter(self._heads))
        if name not in self._heads:
            raise ValueError(f"the model has no head {name!r} (heads: {', '.join(self._heads)})")
        return self.get_submodule(self._heads[name])  # type: ignore[return-value]

    def locus_parameter_names(self) -> List[str]:
        return list(self._order)

    def head_parameter_names(self, head: Optional[str] = None) -> List[str]:
        name = head or next(iter(self._heads))
        return [self._heads[name] + ".weight", self._heads[name] + ".bias"]

    def scored_parameter_names(self) -> List[str]:
        """What ``locus score`` scores: body Linear/Conv2d/LayerNorm parameters (also inside transformer
        blocks and the patch embedding), cls_token and pos_embed; never a head. Model order."""
        out = []
        for t, prefix, m, _ in self._plan:
            pre = prefix + "." if prefix else ""
            if t == "class_token_position":
                out += [pre + "cls_token", pre + "pos_embed"]
            elif t in ("linear", "conv2d", "layernorm", "patch_embed", "vit_block"):
                out += [pre + n for n, _ in m.named_parameters()]  # type: ignore[union-attr]
        return out

    def score_taps(self) -> List[Tuple[str, str, nn.Module, Optional[str], Optional[str]]]:
        """(key, kind, module, weight-like name, bias-like name) of every body module whose per-sample squared
        gradients the scorer forms from its input and output gradient: linear, conv2d, layernorm, and
        'tokens' (the identity after class_token_position: pos_embed, cls_token). Each is used once per
        forward pass."""
        out: List[Tuple[str, str, nn.Module, Optional[str], Optional[str]]] = []
        for i, (t, prefix, m, _) in enumerate(self._plan):
            pre = prefix + "." if prefix else ""
            if t == "class_token_position":
                out.append((self._token_taps[i], "tokens", getattr(self, self._token_taps[i]), pre + "pos_embed", pre + "cls_token"))
                continue
            if m is None:
                continue
            for sub, mod in m.named_modules():
                sp = pre + (sub + "." if sub else "")
                kind = {nn.Linear: "linear", nn.Conv2d: "conv2d", nn.LayerNorm: "layernorm"}.get(type(mod))
                if kind is None:
                    continue
                w = sp + "weight" if getattr(mod, "weight", None) is not None else None
                b = sp + "bias" if getattr(mod, "bias", None) is not None else None
                out.append((sp.rstrip("."), kind, mod, w, b))
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], *self.input_shape)
        for i, (t, _, m, _) in enumerate(self._plan):
            if t == "class_token_position":
                h = torch.cat([m.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + m.pos_embed  # type: ignore[union-attr]
                h = getattr(self, self._token_taps[i])(h)
            elif t == "class_token_pool":
                h = h[:, 0]
            else:
                h = m(h)  # type: ignore[misc]
        return h

    def forward(self, x: torch.Tensor, head: Optional[str] = None) -> torch.Tensor:
        return self.head_module(head)(self.features(x))


def build_model(architecture: Mapping[str, Any]) -> LocusModel:
    """The nn.Module of a Locus architecture (random init; load weights with ``load_state_dict``)."""
    return LocusModel(architecture)


# ================================================================ tensors <-> numpy

def _dtype_name(t: torch.Tensor, name: str) -> str:
    d = _TORCH_TO_LOCUS.get(t.dtype)
    if d is None:
        raise ValueError(f"{name}: dtype {t.dtype} has no Locus equivalent (spec §1.4)")
    return d


def _to_numpy(t: torch.Tensor, name: str) -> Tuple[np.ndarray, str]:
    """(stored array, Locus dtype); bfloat16 as its uint16 bit patterns."""
    dtype = _dtype_name(t, name)
    t = t.detach().to("cpu").contiguous()
    if dtype == "bfloat16":
        return t.view(torch.int16).numpy().view("<u2"), dtype
    return t.numpy(), dtype


def _from_numpy(a: np.ndarray, dtype: str, device: Any = "cpu") -> torch.Tensor:
    a = np.array(a, copy=True, order="C")          # (ascontiguousarray would turn a scalar into shape [1])
    if dtype == "bfloat16":
        t = torch.from_numpy(a.astype("<u2").view(np.int16)).view(torch.bfloat16)
    elif dtype == "bool":
        t = torch.from_numpy(a.astype(bool))
    elif dtype in ("uint16", "uint32", "uint64") and dtype in _LOCUS_TO_TORCH:
        t = torch.from_numpy(a.astype(np.dtype(dtype).newbyteorder("=")).view(np.dtype(dtype.replace("u", "")))).view(_LOCUS_TO_TORCH[dtype])
    else:
        t = torch.from_numpy(a.astype(a.dtype.newbyteorder("=")))
    return t.to(device)


def _state(obj: Any) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, nn.Module):
        return OrderedDict(obj.state_dict())
    if isinstance(obj, (str, os.PathLike)):
        return load_state_dict(obj)
    if isinstance(obj, Mapping):
        return OrderedDict(obj)
    raise TypeError(f"expected an nn.Module, a state dict or a checkpoint path, not {type(obj).__name__}")


def state_fingerprint(state: Union[nn.Module, Mapping[str, torch.Tensor]]) -> str:
    """Fingerprint (§1.5) of a module's state dict or of named tensors: equal to the ``fingerprint`` of
    the checkpoint ``save_checkpoint`` writes from them."""
    items = []
    for name, t in _state(state).items():
        a, dtype = _to_numpy(t, name)
        items.append((name, dtype, a.shape, _core._tensor_digest(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes())))
    return _fingerprint_of(items)


def _fingerprint_of(items: Iterable[Tuple[str, str, Tuple[int, ...], bytes]]) -> str:
    import hashlib
    h = hashlib.sha256(b"locus-fingerprint-v1\n")
    for name, dtype, shape, digest in sorted(items, key=lambda it: it[0].encode("utf-8")):
        h.update(f"{name}\n{dtype}\n{','.join(str(d) for d in shape)}\n".encode("utf-8"))
        h.update(digest)
    return "sha256:" + h.hexdigest()


def _base_fp(base: Any) -> str:
    """A 'sha256:…' string, a checkpoint path, or in-memory weights -> base fingerprint."""
    if isinstance(base, str) and base.startswith("sha256:"):
        return base
    if isinstance(base, (str, os.PathLike)):
        return _core.fingerprint(base)
    return state_fingerprint(base)


# ================================================================ checkpoints

def save_checkpoint(path: PathLike, module_or_state_dict: Union[nn.Module, Mapping[str, torch.Tensor]],
                    architecture: Optional[Mapping[str, Any]] = None, *, metadata: Optional[Mapping[str, str]] = None,
                    provenance: Optional[Mapping[str, Any]] = None) -> str:
    """Write a Locus checkpoint tensor by tensor (one tensor in host memory at a time); names verbatim,
    every dtype (bfloat16 as bfloat16). A LocusModel brings its own architecture. Returns the fingerprint."""
    if architecture is None and isinstance(module_or_state_dict, LocusModel):
        architecture = module_or_state_dict.architecture
    state = module_or_state_dict.state_dict() if isinstance(module_or_state_dict, nn.Module) else module_or_state_dict
    items = []
    with _core._AtomicH5(path, "checkpoint", provenance) as f:
        g, total = f.create_group("tensors"), 0
        for name, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{path}: {name}: not a tensor ({type(t).__name__})")
            a, dtype = _to_numpy(t, name)
            link = _core.escape(name)
            if link in g:
                raise ValueError(f"{path}: {name}: duplicate tensor name")
            _core._put(g, link, np.asarray(a, dtype=_core._NUMPY[dtype]), dtype, digest=True).attrs["dtype"] = dtype
            items.append((name, dtype, tuple(a.shape), _core._tensor_digest(np.ascontiguousarray(a, dtype=_core._NUMPY[dtype]).tobytes())))
            total += a.size
        if metadata is not None:
            f.create_dataset("metadata", data=_core.json.dumps(dict(metadata)))
        if architecture is not None:
            f.create_dataset("architecture", data=_core.json.dumps(dict(architecture)))
        f.attrs["tensor-count"], f.attrs["element-count"] = np.int64(len(items)), np.int64(total)
        fp = _fingerprint_of(items)
        f.attrs["fingerprint"] = fp
    return fp


def _open(path: PathLike, kind: str) -> h5py.File:
    path = os.fspath(path)
    f = h5py.File(path, "r")
    a = f.attrs
    enc, ver, k = (_core._s(a.get(x, "")) for x in ("encoding-type", "encoding-version", "kind"))
    if enc != "locus" or ver.split(".")[0] != _core.VERSION.split(".")[0]:
        f.close()
        raise LocusError(f"{path}: /: not a Locus {_core.VERSION.split('.')[0]}.x file (encoding-type {enc!r}, version {ver!r})")
    if k != kind:
        f.close()
        raise LocusError(f"{path}: /@kind: is {k!r}, expected {kind!r}")
    if "tensors" not in f:
        f.close()
        raise LocusError(f"{path}: /tensors: missing")
    return f


def load_state_dict(path: PathLike, device: Any = "cpu") -> "OrderedDict[str, torch.Tensor]":
    """The tensors of a Locus checkpoint as torch tensors on `device`, read one at a time, names verbatim,
    dtypes as stored (bfloat16 stays bfloat16)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    with _open(path, "checkpoint") as f:
        for link, ds in f["tensors"].items():
            name = _core.unescape(link)
            if "dtype" not in ds.attrs:
                raise LocusError(f"{os.fspath(path)}: /tensors/{link}@dtype: missing")
            dtype = _core._s(ds.attrs["dtype"])
            if dtype not in _core._NUMPY:
                raise LocusError(f"{os.fspath(path)}: /tensors/{link}@dtype: unknown dtype {dtype!r}")
            out[name] = _from_numpy(np.asarray(_core._read_raw(ds)), dtype, device)
    return out


def load_model(path: PathLike, device: Any = "cpu") -> LocusModel:
    """The LocusModel of a checkpoint's /architecture with its weights (strict), on `device`."""
    with _open(path, "checkpoint") as f:
        if "architecture" not in f:
            raise LocusError(f"{os.fspath(path)}: /architecture: missing; build the module yourself and use load_state_dict")
        arch = _core._json_ds(f, "architecture")
    m = build_model(arch)
    m.load_state_dict(load_state_dict(path), strict=True)
    return m.to(device)


def load_dataset(path: PathLike, split: Optional[str] = "train", input_shape: Optional[Sequence[int]] = None,
                 device: Any = "cpu") -> Tuple[torch.Tensor, torch.Tensor]:
    """(inputs float32 [N, ...], labels int64 [N]) of a Locus dataset split, normalised exactly as the
    Locus engine feeds them: raw·(scale/std) − mean/std in float32 (spec §6)."""
    d = _core.load(path)
    if d["kind"] != "dataset":
        raise LocusError(f"{os.fspath(path)}: /@kind: is {d['kind']!r}, expected 'dataset'")
    x, y = d["inputs"], d["labels"]
    if split is not None:
        if split not in d["splits"]:
            raise LocusError(f"{os.fspath(path)}: /splits/{split}: no such split (splits: {', '.join(sorted(d['splits']))})")
        idx = d["splits"][split]
        x, y = x[idx], y[idx]
    a = d["inputs_attrs"]
    scale = np.float32(a.get("scale", 1.0))
    std = np.asarray(a.get("std", [1.0]), dtype=np.float64).reshape(-1)
    mean = np.asarray(a.get("mean", [0.0]), dtype=np.float64).reshape(-1)
    inv = (1 / std).astype(np.float32)
    mul = scale * inv
    add = -(mean.astype(np.float32) * inv)
    shape = (-1,) + (1,) * (x.ndim - 2) if mul.size > 1 else (1,)
    xf = x.astype(np.float32) * mul.reshape(shape) + add.reshape(shape)
    if input_shape is not None:
        xf = xf.reshape(xf.shape[0], *input_shape)
    return torch.from_numpy(np.ascontiguousarray(xf, dtype=np.float32)).to(device), torch.from_numpy(y.astype(np.int64)).to(device)


# ================================================================ masks

class LocusMask(dict):
    """name -> torch.bool tensor (True = trainable), plus the file's ``base_fingerprint`` and
    ``absent_tensors`` ('frozen' or 'trainable': what a tensor without an entry is)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], base_fingerprint: str = "", absent_tensors: str = "frozen",
                 path: Optional[str] = None) -> None:
        super().__init__(tensors)
        self.base_fingerprint, self.absent_tensors, self.path = base_fingerprint, absent_tensors, path


def load_mask(path: PathLike, *, base: Any = None, device: Any = "cpu") -> LocusMask:
    """A Locus mask as {name: torch.bool tensor of the parameter's shape}. With `base` (checkpoint path,
    fingerprint, module or state dict) the mask must have been made from that base."""
    path = os.fspath(path)
    d = _core.load(path)
    if d["kind"] != "mask":
        raise LocusError(f"{path}: /@kind: is {d['kind']!r}, expected 'mask'")
    fp = _core._s(d["attrs"].get("base-fingerprint", ""))
    if base is not None:
        want = _base_fp(base)
        if fp != want:
            raise LocusError(f"{path}: /@base-fingerprint: the mask was made from another base ({fp}), not this model ({want})")
    return LocusMask({k: torch.from_numpy(v).to(device) for k, v in d["tensors"].items()}, fp,
                     _core._s(d["attrs"].get("absent-tensors", "frozen")), path)


def save_mask(path: PathLike, masks: Mapping[str, Any], *, base: Any, absent_tensors: str = "frozen",
              provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Write {name: bool tensor/array} as a Locus mask of `base` (checkpoint path, fingerprint, module or state dict)."""
    arrays = {k: (v.detach().to("cpu").numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in masks.items()}
    _core.write_mask(path, arrays, base=_base_fp(base), absent_tensors=absent_tensors, provenance=provenance)


# ================================================================ task vectors (locus diff)

def save_task_vector(path: PathLike, finetuned: Any, base: Any, *, attributes: Optional[Mapping[str, str]] = None,
                     numbers: Optional[Mapping[str, float]] = None, provenance: Optional[Mapping[str, Any]] = None) -> Dict[str, int]:
    """τ = θ_finetuned − θ_base written exactly as ``locus diff BASE FINETUNED`` writes it.

    finetuned / base: nn.Module, state dict or checkpoint path (same names, shapes and dtypes). Per
    floating-point tensor the entries stored are those with τ ≠ 0 or whose float32 bit pattern changed
    (a −0.0 → +0.0 change is an explicit zero); a tensor with none is absent. Values are float32 when
    θ_base + τ gives θ_ft back exactly in float32 for every stored entry, else float64 (float64 tensors:
    always float64); the encoding (coo / bitmask / dense) follows the spec §5 cost rule. Other dtypes must
    be unchanged. Root attributes: finetuned-fingerprint plus `attributes` / `numbers`.
    Returns {"tensors", "count", "nnz"}.
    """
    path = os.fspath(path)
    b, ft = _state(base), _state(finetuned)
    problems = []
    for name, t in ft.items():
        if name not in b:
            problems.append(f"'{name}' is not in the base")
        elif tuple(b[name].shape) != tuple(t.shape):
            problems.append(f"'{name}' has shape {tuple(t.shape)}, the base {tuple(b[name].shape)}")
        elif b[name].dtype != t.dtype:
            problems.append(f"'{name}' is {_dtype_name(t, name)}, the base {_dtype_name(b[name], name)}")
    problems += [f"'{n}' is missing from the fine-tuned weights" for n in b if n not in ft]
    if problems:
        raise ValueError(f"{path}: {len(problems)} tensor(s) do not match the base: {'; '.join(problems[:8])}")
    entries, summary = {}, {"tensors": 0, "count": 0, "nnz": 0}
    for name, t in ft.items():
        tb = b[name]
        if not t.is_floating_point():
            if not torch.equal(tb.detach().cpu(), t.detach().cpu()):
                raise ValueError(f"{path}: /tensors/{_core.escape(name)}: {_dtype_name(t, name)} tensor '{name}' differs from the base; "
                                 f"task vectors cover floating-point tensors only")
            continue
        bd = tb.detach().cpu().double().reshape(-1).numpy()
        fd = t.detach().cpu().double().reshape(-1).numpy()
        tau = fd - bd
        b32, f32 = bd.astype(np.float32), fd.astype(np.float32)
        sel = (tau != 0) | (b32.view(np.uint32) != f32.view(np.uint32))
        summary["count"] += tau.size
        idx = np.flatnonzero(sel)
        if idx.size == 0:
            continue
        vals = tau[idx]
        if t.dtype == torch.float64:
            dtype = "float64"
        else:
            exact32 = (b32[idx] + vals.astype(np.float32)) == f32[idx]
            dtype = "float32" if exact32.all() else "float64"
            if not exact32.all():
                bad = idx[~exact32][(b32[idx][~exact32].astype(np.float64) + vals[~exact32]).astype(np.float32) != f32[idx][~exact32]]
                if bad.size:
                    raise ValueError(f"{path}: /tensors/{_core.escape(name)}: entry {int(bad[0])} of '{name}' changed by a difference "
                                     f"not representable even in float64")
        entries[name] = (tuple(t.shape), idx, vals, dtype)
        summary["tensors"] += 1
        summary["nnz"] += int(idx.size)
    attrs = dict(attributes or {})
    attrs.setdefault("finetuned-fingerprint", _base_fp(finetuned if not isinstance(finetuned, Mapping) else ft))
    _core.write_task_vector_entries(path, entries, base=_base_fp(base if not isinstance(base, Mapping) else b),
                                    attributes=attrs, numbers=numbers, provenance=provenance)
    return summary


# ================================================================ sparse optimizers (locus finetune)

_FROZEN = "frozen"


def _f32(x: float) -> np.float32:
    return np.float32(x)


class _MaskedOptimizer(torch.optim.Optimizer):
    """Shared set-up: named parameters + a Locus mask -> per parameter: dense, trainable flat indices,
    or frozen (no state, never touched)."""

    def __init__(self, named_parameters: Iterable[Tuple[str, torch.Tensor]], masks: Optional[Mapping[str, Any]],
                 defaults: Dict[str, Any], absent_tensors: Optional[str], dense: Iterable[str]) -> None:
        named = list(named_parameters)
        if not named or not all(isinstance(it, tuple) and len(it) == 2 and isinstance(it[0], str) for it in named):
            raise TypeError("pass model.named_parameters() (an iterable of (name, parameter) pairs)")
        masks = masks if masks is not None else {}
        absent = absent_tensors or getattr(masks, "absent_tensors", None) or ("trainable" if not masks else "frozen")
        if absent not in ("frozen", "trainable"):
            raise ValueError(f"absent_tensors must be 'frozen' or 'trainable', not {absent!r}")
        dense = set(dense)
        by_name = dict(named)
        problems = [f"'{n}' is not a parameter of the model" for n in masks if n not in by_name]
        self._selection: Dict[torch.Tensor, Any] = {}
        self._names: Dict[torch.Tensor, str] = {}
        for name, p in named:
            if not p.is_floating_point():
                raise ValueError(f"{name}: parameter is {p.dtype}, sparse optimizers need floating-point parameters")
            self._names[p] = name
            if name in dense:
                self._selection[p] = None
                continue
            if name in masks:
                m = masks[name]
                m = m if isinstance(m, torch.Tensor) else torch.as_tensor(np.asarray(m))
                if tuple(m.shape) != tuple(p.shape):
                    problems.append(f"'{name}' has mask shape {tuple(m.shape)}, the parameter {tuple(p.shape)}")
                    continue
                if m.dtype != torch.bool:
                    if not bool(((m == 0) | (m == 1)).all()):
                        problems.append(f"'{name}': mask values must be 0 or 1")
                        continue
                    m = m != 0
                ones = int(m.sum())
                if ones == 0:
                    self._selection[p] = _FROZEN
                elif ones == m.numel():
                    self._selection[p] = None
                else:
                    self._selection[p] = torch.nonzero(m.reshape(-1).to(p.device)).reshape(-1)
            else:
                self._selection[p] = None if absent == "trainable" else _FROZEN
        if problems:
            src = getattr(masks, "path", None) or "mask"
            raise ValueError(f"{src}: {len(problems)} mask tensor(s) do not fit the model: {'; '.join(problems[:6])}")
        super().__init__([p for _, p in named], defaults)

    def trainable_entries(self) -> int:
        """Number of entries the optimizer may change."""
        n = 0
        for p, s in self._selection.items():
            n += 0 if isinstance(s, str) else (p.numel() if s is None else int(s.numel()))
        return n

    def _take(self, p: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]:
        sel = self._selection.get(p, _FROZEN)
        if isinstance(sel, str):
            return None
        flat = p.data.view(-1)
        g = p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(flat)   # Locus: an unreached parameter has a zero gradient
        if sel is None:
            return flat.clone(), g, None
        return flat[sel], g[sel], sel

    @staticmethod
    def _put(p: torch.Tensor, w: torch.Tensor, sel: Optional[torch.Tensor]) -> None:
        flat = p.data.view(-1)
        if sel is None:
            flat.copy_(w)
        else:
            flat.index_copy_(0, sel, w)


class SparseSGDM(_MaskedOptimizer):
    """SparseSGDM (the optimizer of ``locus finetune --optimizer sgd``), per parameter p, gradient g, mask m:

        d = g + λp;  d = d ⊙ m;  buf = d (first step) or μ·buf + (1−δ)·d;  buf = buf ⊙ m;
        d = d + μ·buf (Nesterov) or buf;  p ← p − lr·d

    computed in the parameter's dtype at the trainable entries only: entries with m = 0 are never
    written (bit-identical, even −0.0), and the momentum buffer holds only the trainable entries.
    Tensors whose mask is all zero get no state. `masks`: {name: bool tensor} (e.g. ``load_mask``);
    parameters without an entry follow `absent_tensors` (default: the mask file's, else 'frozen');
    names in `dense` train densely (``--train-head``). A parameter without a gradient counts as a zero
    gradient (as in Locus), so weight decay still applies to it.
    """

    def __init__(self, named_parameters: Iterable[Tuple[str, torch.Tensor]], masks: Optional[Mapping[str, Any]] = None, *,
                 lr: float, momentum: float = 0.0, dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 absent_tensors: Optional[str] = None, dense: Iterable[str] = ()) -> None:
        if not lr > 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr must be > 0, momentum and weight_decay >= 0")
        super().__init__(named_parameters, masks, dict(lr=lr, momentum=momentum, dampening=dampening,
                                                       weight_decay=weight_decay, nesterov=nesterov), absent_tensors, dense)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                taken = self._take(p)
                if taken is None:
                    continue
                w, g, sel = taken
                c = lambda v: torch.tensor(v, dtype=p.dtype, device=p.device)  # noqa: E731
                lr, mu, wd = c(_f32(group["lr"])), c(_f32(group["momentum"])), c(_f32(group["weight_decay"]))
                damp = c(_f32(1) - _f32(group["dampening"]))
                d = g + wd * w
                if group["momentum"] == 0:
                    w = w - lr * d
                else:
                    st = self.state[p]
                    if "momentum_buffer" not in st:
                        buf = d.clone()
                    else:
                        buf = mu * st["momentum_buffer"] + damp * d
                    st["momentum_buffer"] = buf
                    w = w - lr * ((d + mu * buf) if group["nesterov"] else buf)
                self._put(p, w, sel)
        return loss


class MaskedAdamW(_MaskedOptimizer):
    """Masked AdamW (``locus finetune --optimizer adamw``, TaLoS's AdaptW): the moments follow the
    gradient, the update and the decoupled weight decay only touch the trainable entries:

        m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
        p ← p − lr·λ·p;  p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)      (trainable entries)

    Moments are kept for the trainable entries only (they never reach a frozen one), so frozen entries
    stay bit-identical and tensors with an all-zero mask get no state. Arguments as ``SparseSGDM``.
    """

    def __init__(self, named_parameters: Iterable[Tuple[str, torch.Tensor]], masks: Optional[Mapping[str, Any]] = None, *,
                 lr: float, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01,
                 absent_tensors: Optional[str] = None, dense: Iterable[str] = ()) -> None:
        if not lr > 0 or weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        super().__init__(named_parameters, masks, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay), absent_tensors, dense)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                taken = self._take(p)
                if taken is None:
                    continue
                w, g, sel = taken
                st = self.state[p]
                if "step" not in st:
                    st["step"], st["exp_avg"], st["exp_avg_sq"] = 0, torch.zeros_like(w), torch.zeros_like(w)
                st["step"] += 1
                t = st["step"]
                # Locus's arithmetic, in float32: bias corrections from float64 powers, then rounded.
                lr32 = _f32(group["lr"])
                bc1, bc2 = _f32(1 - float(_f32(b1)) ** t), _f32(1 - float(_f32(b2)) ** t)   # pow(Double(Float β), t)
                step_size = lr32 / bc1
                inv_root_bc2 = _f32(1) / np.sqrt(bc2)
                decay = lr32 * _f32(group["weight_decay"])
                c = lambda v: torch.tensor(v, dtype=p.dtype, device=p.device)  # noqa: E731
                m = c(_f32(b1)) * st["exp_avg"] + c(_f32(1) - _f32(b1)) * g
                v = c(_f32(b2)) * st["exp_avg_sq"] + (c(_f32(1) - _f32(b2)) * g) * g
                st["exp_avg"], st["exp_avg_sq"] = m, v
                w = w - c(decay) * w
                w = w - (c(step_size) * m) / (torch.sqrt(v) * c(inv_root_bc2) + c(_f32(group["eps"])))
                self._put(p, w, sel)
        return loss


# ================================================================ scoring (locus score)

def _distributed() -> Tuple[int, int]:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _softmax32(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True, dtype=np.float32)).astype(np.float32)


def output_gradients(estimator: str, logits: np.ndarray, labels: np.ndarray, draws: int, seed: int, stream_offset: int) -> np.ndarray:
    """The output gradients g_n of every pass for one batch, [passes, B, C] float32 (Locus's Scorer):
    talos e_ŷ and fisher-mc e_ŷ − p per draw (ŷ ~ p from the SplitMix64 stream of `seed` at positions
    stream_offset + draw·B + n), fisher-empirical e_y − p, talos-exact √p_k·e_k and fisher-exact
    √p_k·(e_k − p) for every class k. The per-sample squared gradient of g_n·f(x_n) summed over passes
    is the estimator."""
    p = _softmax32(logits)
    b, c = p.shape
    eye = np.eye(c, dtype=np.float32)
    if estimator in SAMPLED:
        u = SplitMix64.unit_floats(seed, stream_offset, draws * b).reshape(draws, b)
        cum = np.cumsum(p, axis=1, dtype=np.float32)
        # first j with u < acc_j, else the last class
        y = np.where(u[:, :, None] < cum[None], np.arange(c)[None, None], c - 1).min(axis=2)
        g = eye[y]
        return g - p[None] if estimator == "fisher-mc" else g
    if estimator == "fisher-empirical":
        return (eye[np.asarray(labels, dtype=np.int64)] - p)[None]
    w = np.sqrt(p).T[:, :, None]          # [C(k), B, 1]
    if estimator == "talos-exact":
        return w * eye[:, None, :]
    return w * (eye[:, None, :] - p[None])


class TaLoSScorer:
    """Sums of squared per-sample gradients — the estimators of ``locus score`` — with torch.func.

    model: a LocusModel (``load_model``); or any nn.Module with `parameters` (names, in the order masks
    break ties in) and `forward` (``forward(model, x) -> logits``). head: the head whose logits are scored.
    estimator: talos | talos-exact | fisher-empirical | fisher-mc | fisher-exact. draws / seed: the
    class sampling of talos and fisher-mc (Locus's SplitMix64 stream, positions by sample index, so
    the same seed gives the draws of ``locus score --seed``). exclude: regular expression of parameter
    names not to score (``--exclude``). batch_size: the scoring batches (the sampling stream and the
    sharding over ranks are per batch). max_memory: bytes for the per-sample gradients of one chunk.
    forward_scale: {name: tensor} multiplying parameters in the forward pass (TaLoS calibration).
    per_sample: 'auto' (below) or 'vmap' (every tensor through torch.func).

    Per batch: one forward pass gives p = softmax(f(x)) and the output gradients of every pass. For a
    LocusModel (per_sample='auto') that pass also records each Linear / Conv2d / LayerNorm's input and
    the class-token output, one backward pass per output-gradient pass gives their output gradients δ,
    and the per-sample squared gradients follow per module: (δ²)ᵀ(x²) for a Linear on [B, in]; the
    per-sample product G_n = δ_nᵀ X_n (tokens) or δ_n·cols_nᵀ (conv positions), squared, where a weight
    is shared; Σ_t δ ⊙ x̂ for LayerNorm; δ itself for pos_embed / cls_token. Any other model or tensor
    gets its per-sample gradients chunk by chunk from ``torch.func``: ``vmap`` over samples of the
    ``vjp`` of the sample's logits, applied (``vmap`` again) to its output gradients, squared and summed.
    Sums are float64; ``save`` stores float32 with reduction 'sum'.
    """

    def __init__(self, model: nn.Module, *, head: Optional[str] = None, estimator: str = "talos", draws: int = 1, seed: int = 0,
                 parameters: Optional[Sequence[str]] = None, exclude: Optional[str] = None, batch_size: int = 64,
                 max_memory: int = 256 << 20, forward_scale: Optional[Mapping[str, torch.Tensor]] = None,
                 per_sample: str = "auto") -> None:
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {', '.join(ESTIMATORS)}, not {estimator!r}")
        if int(draws) < 1 or int(batch_size) < 1:
            raise ValueError("draws and batch_size must be >= 1")
        if per_sample not in ("auto", "vmap"):
            raise ValueError("per_sample must be 'auto' or 'vmap'")
        self.per_sample = per_sample
        self._taps: Optional[List[Tuple[str, str, nn.Module, Optional[str], Optional[str]]]] = None
        self.model, self.estimator, self.draws, self.seed = model, estimator, int(draws), int(seed)
        self.batch_size, self.max_memory = int(batch_size), int(max_memory)
        if isinstance(model, LocusModel):
            model.head_module(head)
            self.head = head or model.head_names[0]
            names = list(parameters) if parameters is not None else model.scored_parameter_names()
        else:
            self.head = head or "default"
            names = list(parameters) if parameters is not None else [n for n, p in model.named_parameters() if p.requires_grad]
        if exclude:
            rx = re.compile(exclude)
            names = [n for n in names if not rx.search(n)]
        params = dict(model.named_parameters())
        for n in names:
            if n not in params:
                raise ValueError(f"{n}: not a parameter of the model")
            if not params[n].is_floating_point():
                raise ValueError(f"{n}: parameter is {params[n].dtype}; only floating-point parameters can be scored")
        if not names:
            raise ValueError("no parameters to score")
        self.parameters = names
        self.forward_scale = {k: v for k, v in (forward_scale or {}).items()}
        dev = params[names[0]].device
        self._sums = {n: torch.zeros(params[n].shape, dtype=torch.float64, device=dev) for n in names}
        # Per-batch sums are added in the parameters' dtype and folded into the float64 totals every
        # _FOLD batches (a mixed-precision add of every score per batch would cost as much as the GEMMs).
        self._pending: Dict[str, torch.Tensor] = {}
        self._pending_batches = 0
        self.samples = 0
        self._stream = 0
        self._per_sample = int(sum(params[n].numel() for n in names))

    @property
    def recorded_draws(self) -> int:
        """What the scores file records: draws for sampled estimators, else 1 (spec §3)."""
        return self.draws if self.estimator in SAMPLED else 1

    # -------------------------------------------------------------- one batch

    def accumulate(self, x: torch.Tensor, labels: torch.Tensor, *, stream_offset: Optional[int] = None) -> None:
        """Adds one batch. stream_offset: the batch's position in the sampling stream (default: right
        after the previous batch), draws × (samples before this batch in the scoring set)."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            self._accumulate(x, labels, self._stream if stream_offset is None else int(stream_offset))
        finally:
            model.train(was_training)

    def _accumulate(self, x: torch.Tensor, labels: torch.Tensor, offset: int) -> None:
        from torch.func import vjp, vmap
        model = self.model
        b = x.shape[0]
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        scored = {n: params[n].detach() for n in self.parameters}
        fixed = {n: p.detach() for n, p in params.items() if n not in scored}
        scales = {n: s.to(params[n].device, params[n].dtype) for n, s in self.forward_scale.items() if n in params}
        for n, s in scales.items():
            if n in fixed:
                fixed[n] = fixed[n] * s

        def effective(th: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
            return {n: (v * scales[n] if n in scales else v) for n, v in th.items()}

        # One batched forward pass records the input x and output of every tapped module of a LocusModel;
        # one backward pass per output-gradient pass then gives their output gradients δ, and the per-sample
        # squared gradients follow per module without differentiating per sample:
        #   Linear on [B, in]      Σ_n (δ_n x_nᵀ)² = (δ²)ᵀ(x²)
        #   Linear on [B, T, in]   G_n = δ_nᵀ X_n (the T tokens share the weight), Σ_n G_n²
        #   Conv2d                 G_n = δ_n · cols_nᵀ (positions share the weight), Σ_n G_n²
        #   LayerNorm              Σ_n (Σ_t δ_nt ⊙ x̂_nt)², bias Σ_n (Σ_t δ_nt)²
        #   pos_embed / cls_token  Σ_n δ_n² / Σ_n δ_n0² (δ of the class_token_position output)
        # Anything else (other modules, per_sample="vmap") goes through vmap over vjp below.
        if self._taps is None:
            self._taps = []
            if isinstance(model, LocusModel) and self.per_sample == "auto":
                self._taps = [t for t in model.score_taps() if (t[3] is None or t[3] in scored) and (t[4] is None or t[4] in scored)
                              and (t[3] is not None or t[4] is not None)
                              and not (t[1] == "conv2d" and (t[2].groups != 1 or t[2].padding_mode != "zeros"
                                                             or isinstance(t[2].padding, str)))]
        taps = self._taps
        captured: Dict[str, Tuple[torch.Tensor, torch.Tensor]] = {}
        handles = [mod.register_forward_hook(lambda m_, i_, o_, key=key: captured.__setitem__(key, (i_[0].detach(), o_)))
                   for key, _, mod, _, _ in taps]
        try:
            if taps and not scales and all(params[n].requires_grad for n in scored):
                with torch.enable_grad():    # the module itself: the backward below asks for output gradients only
                    logits = model(x, head=self.head)
            else:
                with torch.enable_grad() if taps else torch.no_grad():
                    live = {n: (v.detach().requires_grad_(True) if taps else v) for n, v in scored.items()}
                    logits = self._call(fixed, effective(live), buffers, x)
        finally:
            for h in handles:
                h.remove()
        G = output_gradients(self.estimator, logits.detach().float().cpu().numpy(), labels.detach().cpu().numpy(),
                             self.draws, self.seed, offset)
        Gt = torch.from_numpy(np.ascontiguousarray(G)).to(device=x.device, dtype=logits.dtype)   # [K, B, C]
        k = Gt.shape[0]
        taps = [t for t in taps if t[0] in captured and captured[t[0]][1].requires_grad]
        fast_params = {n for t in taps for n in t[3:] if n is not None}
        if taps:
            outs = [captured[t[0]][1] for t in taps]
            local: Dict[str, torch.Tensor] = {}

            def add(name: Optional[str], value: Callable[[], torch.Tensor]) -> None:
                if name is not None:
                    local[name] = value() if name not in local else local[name].add_(value())

            for j in range(k):
                deltas = torch.autograd.grad(logits, outs, grad_outputs=Gt[j], retain_graph=j + 1 < k, allow_unused=True)
                for (key, kind, mod, wn, bn), d in zip(taps, deltas):
                    if d is None:
                        d = torch.zeros_like(captured[key][1])
                    self._tap_squares(kind, mod, captured[key][0], d, wn, bn, add)
            for n, v in local.items():
                # the gradient of the underlying weight carries the forward scale once: squared, s²
                self._add(n, v * (scales[n] * scales[n]) if n in scales else v)
        del logits, captured

        general = [n for n in self.parameters if n not in fast_params]
        if general:
            th0 = {n: scored[n] for n in general}
            fixed2 = {**fixed, **effective({n: scored[n] for n in fast_params})}

            def per_sample(th: Dict[str, torch.Tensor], xn: torch.Tensor, gn: torch.Tensor) -> Dict[str, torch.Tensor]:
                def f(t: Dict[str, torch.Tensor]) -> torch.Tensor:
                    return self._call(fixed2, effective(t), buffers, xn.unsqueeze(0))[0]
                _, pullback = vjp(f, th)
                (grads,) = vmap(pullback)(gn)                 # name -> [K, *shape]
                return {n: (gr * gr).sum(0) for n, gr in grads.items()}

            batched = vmap(per_sample, in_dims=(None, 0, 1))
            elem = max(1, torch.finfo(Gt.dtype).bits // 8)
            per = int(sum(scored[n].numel() for n in general))
            chunk = max(1, min(b, self.max_memory // max(1, 3 * k * per * elem)))
            for s in range(0, b, chunk):
                sq = batched(th0, x[s:s + chunk], Gt[:, s:s + chunk])
                for n in general:
                    self._add(n, sq[n].sum(0))
        self.samples += b
        self._stream = offset + self.draws * b if self.estimator in SAMPLED else self._stream
        self._pending_batches += 1
        if self._pending_batches >= self._FOLD:
            self._fold()

    _FOLD = 32

    def _add(self, name: str, value: torch.Tensor) -> None:
        p = self._pending.get(name)
        if p is None:
            self._pending[name] = value.clone() if value._base is not None or not value.is_contiguous() else value
        else:
            p.add_(value)

    def _fold(self) -> None:
        for n, v in self._pending.items():
            self._sums[n].add_(v)
        self._pending.clear()
        self._pending_batches = 0

    @property
    def sums(self) -> Dict[str, torch.Tensor]:
        """name -> float64 tensor: the running sums of squared per-sample gradients."""
        self._fold()
        return self._sums

    def _tap_squares(self, kind: str, mod: nn.Module, xin: torch.Tensor, d: torch.Tensor, wn: Optional[str], bn: Optional[str],
                     add: Callable[[Optional[str], Callable[[], torch.Tensor]], None]) -> None:
        """Adds Σ_n (per-sample gradient)² of one tapped module, for one output-gradient pass."""
        b = d.shape[0]
        elem = max(1, torch.finfo(d.dtype).bits // 8)
        if kind == "linear" and xin.dim() == 2:
            d2 = d * d
            add(wn, lambda: d2.transpose(0, 1) @ (xin * xin))
            add(bn, lambda: d2.sum(0))
            return
        if kind == "tokens":
            add(wn, lambda: (d * d).sum(0, keepdim=True))
            add(bn, lambda: (d[:, :1] * d[:, :1]).sum(0, keepdim=True))
            return
        if kind == "layernorm":
            ns = tuple(mod.normalized_shape)
            xh = F.layer_norm(xin, ns, eps=mod.eps)
            gw = (d * xh).reshape(b, -1, *ns).sum(1)
            gb = d.reshape(b, -1, *ns).sum(1)
            add(wn, lambda: (gw * gw).sum(0))
            add(bn, lambda: (gb * gb).sum(0))
            return
        if kind == "linear":                      # tokens share the weight: [B, T, in]
            xt = xin.reshape(b, -1, xin.shape[-1])
            dt = d.reshape(b, -1, d.shape[-1])
            add(bn, lambda: (dt.sum(1) ** 2).sum(0))
            if wn is not None:
                chunk = max(1, self.max_memory // max(1, 2 * dt.shape[-1] * xt.shape[-1] * elem))
                for s in range(0, b, chunk):
                    g = torch.bmm(dt[s:s + chunk].transpose(1, 2), xt[s:s + chunk])
                    add(wn, lambda g=g: (g * g).sum(0))
            return
        if kind == "conv2d":
            dt = d.reshape(b, d.shape[1], -1)                           # [B, O, L]
            add(bn, lambda: (dt.sum(2) ** 2).sum(0))
            if wn is not None:
                w = mod.weight
                per = w.shape[1] * w.shape[2] * w.shape[3]
                chunk = max(1, self.max_memory // max(1, 2 * (w.shape[0] * per + per * dt.shape[2]) * elem))
                for s in range(0, b, chunk):
                    cols = F.unfold(xin[s:s + chunk], w.shape[2:], dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
                    g = torch.bmm(dt[s:s + chunk], cols.transpose(1, 2))  # [b, O, C·k·k]
                    add(wn, lambda g=g: (g * g).sum(0).reshape(w.shape))
            return
        raise AssertionError(kind)

    def _call(self, fixed: Dict[str, torch.Tensor], scored: Dict[str, torch.Tensor], buffers: Dict[str, torch.Tensor],
              x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call
        state = {**fixed, **scored, **buffers}
        if isinstance(self.model, LocusModel):
            return functional_call(self.model, state, (x,), {"head": self.head})
        return functional_call(self.model, state, (x,))

    # -------------------------------------------------------------- a whole scoring set, sharded over ranks

    def run(self, inputs: torch.Tensor, labels: torch.Tensor, *, max_batches: Optional[int] = None,
            device: Any = None) -> "TaLoSScorer":
        """Scores the first `max_batches` batches (all when None) of (inputs, labels) in order, like
        ``locus score --batch-size B --batches N``. Under torch.distributed every rank takes batches
        rank, rank + world, ... (pass the same full set on every rank) and the sums and sample count are
        all-reduced, so every rank ends with the totals of the whole set."""
        n = int(inputs.shape[0])
        if n == 0 or int(labels.shape[0]) != n:
            raise ValueError("the scoring set is empty, or inputs and labels differ in length")
        nb = -(-n // self.batch_size)
        if max_batches is not None:
            nb = min(nb, int(max_batches))
        rank, world = _distributed()
        dev = device if device is not None else next(iter(self.sums.values())).device
        start_samples = self.samples
        before = {p: self.sums[p].clone() for p in self.parameters} if world > 1 else {}
        for i in range(rank, nb, world):
            lo, hi = i * self.batch_size, min(n, (i + 1) * self.batch_size)
            self.accumulate(inputs[lo:hi].to(dev), labels[lo:hi], stream_offset=self.draws * lo)
        if world > 1:
            import torch.distributed as dist
            # Only this run's part is reduced: every rank already holds the same earlier sums (resume).
            count = torch.tensor([self.samples - start_samples], dtype=torch.float64, device=dev)
            flat = torch.cat([(self.sums[p] - before[p]).reshape(-1) for p in self.parameters] + [count])
            dist.all_reduce(flat)
            off = 0
            for p in self.parameters:
                m = self.sums[p].numel()
                self._sums[p] = before[p] + flat[off:off + m].reshape(self._sums[p].shape)
                off += m
            self.samples = start_samples + int(round(float(flat[-1])))
        self._stream = self.draws * min(n, nb * self.batch_size)
        return self

    # -------------------------------------------------------------- files

    def resume(self, path: PathLike, *, base: Any = None) -> "TaLoSScorer":
        """Starts from the sums and sample count of a scores file (``locus score --append``): same
        estimator, draws, reduction 'sum', tensors and shapes, and (with `base`) base fingerprint."""
        path = os.fspath(path)
        old = self._check_append(path, base)
        for n in self.parameters:
            self._sums[n] = torch.from_numpy(old["tensors"][n].astype(np.float64)).to(self.sums[n].device)
        self.samples = int(old["attrs"]["samples"])
        return self

    def _check_append(self, path: str, base: Any) -> Dict[str, Any]:
        old = _core.load(path)
        a = old["attrs"]
        if old["kind"] != "scores":
            raise LocusError(f"{path}: /@kind: is {old['kind']!r}, expected 'scores'")
        if _core._s(a.get("estimator", "")) != self.estimator:
            raise LocusError(f"{path}: /@estimator: is '{_core._s(a.get('estimator', ''))}', cannot append '{self.estimator}' scores")
        if base is not None and _core._s(a.get("base-fingerprint", "")) != _base_fp(base):
            raise LocusError(f"{path}: /@base-fingerprint: belongs to another model ({_core._s(a.get('base-fingerprint', ''))})")
        if int(a.get("draws", 0)) != self.recorded_draws or _core._s(a.get("reduction", "")) != "sum":
            raise LocusError(f"{path}: was made with {int(a.get('draws', 0))} draws and reduction {_core._s(a.get('reduction', ''))}; "
                             f"append needs {self.recorded_draws} draws and sums")
        params = dict(self.model.named_parameters())
        if sorted(old["tensors"], key=lambda s: s.encode()) != sorted(self.parameters, key=lambda s: s.encode()):
            raise LocusError(f"{path}: scores a different set of tensors than this scorer ({len(old['tensors'])} vs {len(self.parameters)})")
        for n in self.parameters:
            if tuple(old["tensors"][n].shape) != tuple(params[n].shape):
                raise LocusError(f"{path}: /tensors/{_core.escape(n)}: has shape {tuple(old['tensors'][n].shape)}, "
                                 f"the parameter {tuple(params[n].shape)}")
        return old

    def scores(self) -> Dict[str, torch.Tensor]:
        """The sums as float32 tensors (what the file stores), in parameter order."""
        return {n: self.sums[n].float() for n in self.parameters}

    def save(self, path: PathLike, *, base: Any, append: bool = False, provenance: Optional[Mapping[str, Any]] = None) -> None:
        """Writes the scores file (reduction 'sum', float32). base: the scored checkpoint (path or
        fingerprint; or the module / state dict). append=True adds to the file's sums and count, after
        the checks of ``locus score --append`` (the file is replaced atomically). Under torch.distributed
        only rank 0 writes; every rank waits for it."""
        rank, world = _distributed()
        fp = _base_fp(base)
        error: Optional[BaseException] = None
        if rank == 0:
            try:
                sums, samples = {n: self.sums[n].cpu().numpy() for n in self.parameters}, self.samples
                if append:
                    old = self._check_append(os.fspath(path), fp)
                    sums = {n: old["tensors"][n].astype(np.float64) + sums[n] for n in self.parameters}
                    samples += int(old["attrs"]["samples"])
                prov = dict(provenance) if provenance is not None else {
                    "command": [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", "locus_h5.torch.TaLoSScorer"],
                    "inputs": [{"role": "model", "path": base if isinstance(base, str) and not base.startswith("sha256:") else "",
                                "fingerprint": fp}],
                    "parameters": {"estimator": self.estimator, "head": self.head, "batch_size": self.batch_size,
                                   "draws": self.draws, "seed": self.seed, "world_size": world}}
                _core.write_scores(path, {n: np.asarray(sums[n], dtype=np.float32) for n in self.parameters}, base=fp,
                                   estimator=self.estimator, samples=samples, draws=self.recorded_draws, reduction="sum",
                                   provenance=prov)
            except BaseException as e:  # re-raised below, after the other ranks were released
                error = e
        if world > 1:
            import torch.distributed as dist
            flag = [error is None]
            dist.broadcast_object_list(flag, src=0)
            if not flag[0] and rank != 0:
                raise RuntimeError(f"{os.fspath(path)}: rank 0 could not write the scores file")
        if error is not None:
            raise error


# ================================================================ masks by calibration (locus mask)

def select(scores: Sequence[np.ndarray], count: int, *, keep: str = "lowest", eligible: Optional[Sequence[np.ndarray]] = None) -> List[np.ndarray]:
    """Exactly min(count, eligible) entries by float32 score — Locus's Selection: the k-th best eligible
    score is the threshold; everything better is selected, and of the entries equal to it the first ones
    by position (tensors in the given order, C order inside) fill up to k."""
    if keep not in ("lowest", "highest"):
        raise ValueError("keep must be 'lowest' or 'highest'")
    sizes = [int(np.asarray(s).size) for s in scores]
    flat = np.concatenate([np.asarray(s, dtype=np.float32).reshape(-1) for s in scores]) if scores else np.zeros(0, np.float32)
    key = flat if keep == "lowest" else -flat
    ok = np.ones(flat.size, bool) if eligible is None else np.concatenate([np.asarray(e, bool).reshape(-1) for e in eligible])
    out = np.zeros(flat.size, bool)
    cand = key[ok]
    if count > 0 and cand.size:
        take = min(int(count), cand.size)
        threshold = np.partition(cand, take - 1)[take - 1]
        below = ok & (key < threshold)
        ties = np.flatnonzero(ok & (key == threshold))[:take - int(below.sum())]
        out[below] = True
        out[ties] = True
    res, start = [], 0
    for s, n in zip(scores, sizes):
        res.append(out[start:start + n].reshape(np.shape(s)))
        start += n
    return res


def _select_density(scores: List[np.ndarray], eligible: Optional[List[np.ndarray]], density: float, keep: str, scope: str) -> List[np.ndarray]:
    if scope == "global":
        total = sum(s.size for s in scores)
        n = total if eligible is None else int(sum(int(e.sum()) for e in eligible))
        return select(scores, min(n, int(density * total)), keep=keep, eligible=eligible)
    if scope == "local":
        return [select([s], int(density * s.size), keep=keep, eligible=None if eligible is None else [eligible[i]])[0]
                for i, s in enumerate(scores)]
    raise ValueError("scope must be 'global' or 'local'")


def calibrate_mask(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, density: float, rounds: int = 4,
                   keep: str = "lowest", scope: str = "global", drop_scale: float = 0.1,
                   progress: Optional[Callable[[int, float, int, int], None]] = None, **scorer_args: Any) -> LocusMask:
    """TaLoS mask calibration exactly as ``locus mask --method talos``: R rounds with target densities
    d^(r/R); each round re-scores the set (``TaLoSScorer(model, **scorer_args).run``) with the entries
    dropped so far multiplied by `drop_scale` in the forward pass, and selects ⌊target·n⌋ entries among
    those still in play (they never come back), by the tie rule of ``select``. Under torch.distributed
    every round's scores are summed over the ranks, so every rank gets the same mask.
    scorer_args: head, estimator, draws, seed, parameters, exclude, batch_size, max_memory, max_batches.
    Returns {name: bool tensor} (CPU) for the scored parameters, in model order."""
    if not (0 < density <= 1):
        raise ValueError(f"density must be in (0, 1], got {density}")
    if int(rounds) < 1:
        raise ValueError("rounds must be >= 1")
    max_batches = scorer_args.pop("max_batches", None)
    alive: Optional[List[np.ndarray]] = None
    scale: Dict[str, torch.Tensor] = {}
    names: List[str] = []
    for r in range(1, int(rounds) + 1):
        target = density ** (r / rounds)
        sc = TaLoSScorer(model, forward_scale=scale, **scorer_args).run(inputs, labels, max_batches=max_batches)
        names = sc.parameters
        scores = [sc.sums[n].float().cpu().numpy() for n in names]
        for n, s in zip(names, scores):
            if not np.all(np.isfinite(s)):
                raise ValueError(f"{n}: scores are not finite in round {r}")
        alive = _select_density(scores, alive, target, keep, scope)
        if r < rounds:
            scale = {n: torch.from_numpy(np.where(m, np.float32(1), np.float32(drop_scale)).astype(np.float32)) for n, m in zip(names, alive)}
        if progress is not None:
            progress(r, target, int(sum(int(m.sum()) for m in alive)), int(sum(m.size for m in alive)))
    return LocusMask({n: torch.from_numpy(m) for n, m in zip(names, alive or [])}, "", "frozen")
