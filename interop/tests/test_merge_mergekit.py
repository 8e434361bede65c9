"""`locus merge` against mergekit's own code (the PyPI package `mergekit`, installed by `make deps`;
never skipped). mergekit merges Hugging Face models through a task graph, so the comparison calls the
functions its methods are built from on the same tensors Locus reads:

- ties, per tensor: `mergekit.sparsify.sparsify(..., magnitude)` on each task vector, the sign mask
  `generalized_task_arithmetic.get_mask(..., "sum")`, and the disjoint mean Σ(δ·mask) / Σ(w·mask)
  that mergekit's generalized task arithmetic divides by (unit weights);
- slerp: `mergekit.merge_methods.slerp.slerp` on each tensor taken whole (one row), including
  nearly parallel and opposite tensors, where both fall back to linear interpolation.

Current mergekit interpolates each row of a matrix separately (the leading axis is an output batch);
Locus interpolates each tensor whole (docs/merging.md), so the second test also shows that the two
differ on matrices when mergekit is given the rows.
"""
import numpy as np
import pytest
import torch
from mergekit.merge_methods.generalized_task_arithmetic import get_mask
from mergekit.merge_methods.slerp import slerp as mergekit_slerp
from mergekit.sparsify import SparsificationMethod, sparsify

import merge_ref as ref
from conftest import assert_ok, locus_h5


def test_ties_per_tensor_matches_mergekit(locus, tmp_path):
    rng = np.random.default_rng(21)
    shapes = {"a.weight": (16, 24), "b.weight": (40,), "c.weight": (3, 4, 5)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    taus = []
    for t in range(3):
        tau = {}
        for n, s in shapes.items():
            v = rng.standard_normal(s).astype(np.float32) * 0.1
            v[rng.random(s) < 0.3] = 0          # sparse, as task vectors of sparse fine-tuning are
            tau[n] = v
        taus.append(tau)
        locus_h5.write_task_vector(tmp_path / f"t{t}.h5", tau, base=tmp_path / "base.h5")
    density, lam = 0.3, 0.7
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", *[tmp_path / f"t{t}.h5" for t in range(3)], "--method", "ties",
                    f"--density={density}", "--scope=tensor", f"--lambda={lam}", "-o", out))
    got = ref.read_checkpoint(out)
    for n in shapes:
        deltas = torch.stack([sparsify(torch.from_numpy(tau[n]), density, SparsificationMethod.magnitude) for tau in taus])
        mask = get_mask(deltas, "sum")
        mixed = (deltas * mask).sum(dim=0)
        divisor = mask.to(deltas.dtype).sum(dim=0)
        divisor[divisor == 0] = 1
        want = (torch.from_numpy(base[n]) + lam * (mixed / divisor)).numpy().astype(np.float64)
        scale = np.abs(base[n]).max()
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * scale, err_msg=n)
        assert (got[n]["value"] != base[n]).sum() > 0, f"{n}: nothing merged"


def test_slerp_matches_mergekit_per_tensor(locus, tmp_path):
    rng = np.random.default_rng(22)
    a = {"w": rng.standard_normal((6, 50)), "v": rng.standard_normal(40), "near": rng.standard_normal((4, 8)),
         "opposite": rng.standard_normal((5, 5))}
    b = {"w": rng.standard_normal((6, 50)), "v": rng.standard_normal(40),
         "near": a["near"] * 1.5 + 1e-4 * rng.standard_normal((4, 8)), "opposite": -2 * a["opposite"]}
    a = {k: v.astype(np.float32) for k, v in a.items()}
    b = {k: v.astype(np.float32) for k, v in b.items()}
    locus_h5.write_checkpoint(tmp_path / "a.h5", a)
    locus_h5.write_checkpoint(tmp_path / "b.h5", b)
    t = 0.3
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "a.h5", tmp_path / "b.h5", "--method", "slerp", f"--t={t}", "-o", out))
    got = ref.read_checkpoint(out)
    for n in a:
        x, y = torch.from_numpy(a[n].astype(np.float64)), torch.from_numpy(b[n].astype(np.float64))
        whole = mergekit_slerp(torch.tensor(t), x.reshape(1, -1), y.reshape(1, -1)).reshape(a[n].shape).numpy()
        np.testing.assert_allclose(got[n]["value"], whole, rtol=1e-6, atol=1e-7, err_msg=n)
    rows = mergekit_slerp(torch.tensor(t), torch.from_numpy(a["w"].astype(np.float64)), torch.from_numpy(b["w"].astype(np.float64))).numpy()
    assert np.abs(rows - got["w"]["value"]).max() > 1e-4, "mergekit's per-row slerp should differ from a whole-tensor slerp"
