"""`locus merge` of the methods added after the first registry (docs/merging.md): della and
della_linear (DELLA's magnitude-ranked drop), model_stock, nuslerp, sce (task vectors) and karcher
(full models), checked two ways:

- against the numpy reference (merge_ref.py) on test_merge's base and five task vectors, or three
  models of its layout (mixed shapes, dtypes, encodings, scales; the reference reproduces Locus's
  seeded SplitMix64 draws from their documentation, no Locus code);
- against the installed mergekit's own code (`mergekit.merge_methods.registry`, the method's
  `merge_group` on one tensor group); for DELLA, mergekit's `torch.bernoulli` is made to return the
  mask that Locus's draws give for mergekit's own keep probabilities (u < p), so both sides drop the
  same entries.

Bad inputs (out-of-range parameters, a parameter of another method) are refused with exit ≠ 0 and no
output file.
"""
import numpy as np
import pytest
import torch
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import PerInputValues, TensorGroup

import merge_ref as ref
from conftest import assert_error, assert_ok, locus_h5, snapshot
from test_merge import W5, compare, make_base, run_merge, setup  # noqa: F401  (setup is a fixture)

# ------------------------------------------------------------------ della vs numpy

DELLA = {
    "della": {"method": "della"},
    "della-wide": {"method": "della", "density": 0.5, "epsilon": 0.3, "seed": 11, "lambda": 0.8},
    "della-weights": {"method": "della", "density": 0.4, "epsilon": 0.1, "weight": W5, "lambda": 1.3, "seed": 2 ** 64 - 1},
    "della-no-rescale": {"method": "della", "density": 0.3, "epsilon": 0.2, "rescale": False},
    "della-epsilon-0": {"method": "della", "density": 0.6, "epsilon": 0.0, "seed": 5},
    "della-density-1": {"method": "della", "density": 1.0},
    "della-linear": {"method": "della_linear"},
    "della-linear-weights": {"method": "della_linear", "density": 0.7, "epsilon": 0.25, "weight": W5, "lambda": 0.5, "seed": 3},
    "della-linear-bf16": {"method": "della_linear", "density": 0.35, "dtype": "bfloat16"},
}


@pytest.mark.parametrize("label", list(DELLA))
def test_della_matches_numpy(locus, setup, tmp_path, label):
    o = DELLA[label]
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], o, out))
    st = compare(out, ref.merge(setup["base"], setup["tvs"], o)["tensors"], label)
    assert st["tensors"] >= 9
    assert_ok(locus("validate", out))


def test_della_draws_depend_on_the_seed_and_density_1_is_the_plain_merge(locus, setup, tmp_path):
    """Two seeds drop different entries; density 1 drops nothing, so della_linear is task arithmetic
    and della is TIES's election without trimming (ties with density 1)."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], {"method": "della_linear", "seed": 1}, a))
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], {"method": "della_linear", "seed": 2}, b))
    ga, gb = ref.read_checkpoint(a), ref.read_checkpoint(b)
    assert any(not np.array_equal(ga[n]["value"], gb[n]["value"]) for n in ga if ga[n]["value"] is not None)
    for della, plain in (({"method": "della_linear", "density": 1.0}, {"method": "task_arithmetic"}),
                         ({"method": "della", "density": 1.0}, {"method": "ties", "density": 1.0})):
        assert_ok(run_merge(locus, setup["base"], setup["tvs"], della, a))
        assert_ok(run_merge(locus, setup["base"], setup["tvs"], plain, b))
        ga, gb = ref.read_checkpoint(a), ref.read_checkpoint(b)
        assert all(ga[n]["raw"] == gb[n]["raw"] for n in ga), della["method"]


def test_della_keeps_large_entries_more_often(locus, tmp_path):
    """MagPrune's point: over many rows, the kept fraction rises with |τ| rank from density − ε to
    density + ε (here 0.1 → 0.5), and the mean kept fraction is density."""
    rng = np.random.default_rng(5)
    rows, n = 400, 50
    base = {"w": np.zeros((rows, n), np.float32)}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    tau = rng.standard_normal((rows, n)).astype(np.float32)
    locus_h5.write_task_vector(tmp_path / "t.h5", {"w": tau}, base=tmp_path / "base.h5")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", tmp_path / "t.h5", "--method", "della_linear", "--density=0.3",
                    "--epsilon=0.2", "--no-rescale", "-o", out))
    kept = ref.read_checkpoint(out)["w"]["value"] != 0
    ranks = np.argsort(np.argsort(np.abs(tau), axis=1), axis=1)
    small, large = kept[ranks < 10].mean(), kept[ranks >= n - 10].mean()
    assert abs(kept.mean() - 0.3) < 0.02, kept.mean()
    assert 0.07 < small < 0.17 and 0.43 < large < 0.57, (small, large)
    np.testing.assert_array_equal(ref.read_checkpoint(out)["w"]["value"][kept], tau[kept].astype(np.float64))


# ------------------------------------------------------------------ della vs mergekit

def mergekit_merge(method, base, models, **params):
    """mergekit's `merge_group` of `method` on one tensor (base first, then the models), float64 out."""
    group = TensorGroup.from_tensors([torch.from_numpy(base)] + [torch.from_numpy(m) for m in models], base_index=0)
    return registry.get(method).merge_group(group, **params).numpy().astype(np.float64)


def sparse_vectors(rng, shapes, count, zero_fraction=0.3):
    taus = []
    for _ in range(count):
        tau = {}
        for n, s in shapes.items():
            v = rng.standard_normal(s).astype(np.float32) * 0.1
            v[rng.random(s) < zero_fraction] = 0
            tau[n] = v
        taus.append(tau)
    return taus


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_matches_mergekit_with_the_same_draws(locus, tmp_path, monkeypatch, method):
    """1-D and 2-D tensors (mergekit ranks a matrix per row and a vector whole, as Locus does), three
    task vectors with zeros, unit weights, rescale off (mergekit 0.1.5 rescales to the L1 norm, Locus by
    1/p: docs/merging.md). mergekit runs its whole della on θ_t = τ_t over a zero base (so its deltas
    are τ_t exactly) and computes its own keep probabilities; its `torch.bernoulli` is patched to turn
    them into a mask with Locus's documented draws (u < p), one call per vector in order, so a wrong
    rank, window, election or sum shows as a difference."""
    rng = np.random.default_rng(31)
    shapes = {"a.weight": (16, 24), "b.bias": (40,), "c.weight": (7, 9)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    taus = sparse_vectors(rng, shapes, 3)
    for t, tau in enumerate(taus):
        locus_h5.write_task_vector(tmp_path / f"t{t}.h5", tau, base=tmp_path / "base.h5")
    density, eps, lam, seed = 0.45, 0.2, 0.7, 9
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", *[tmp_path / f"t{t}.h5" for t in range(3)], "--method", method,
                    f"--density={density}", f"--epsilon={eps}", "--no-rescale", f"--lambda={lam}", f"--seed={seed}", "-o", out))
    got = ref.read_checkpoint(out)
    draws = []

    def bernoulli(probs, *a, **k):
        return (torch.from_numpy(draws.pop(0).reshape(probs.shape)) < probs.double()).to(probs.dtype)

    monkeypatch.setattr(torch, "bernoulli", bernoulli)
    ids = (1, 2, 3)
    for n, s in shapes.items():
        for t in range(3):
            flat = taus[t][n].reshape(-1)
            idx = np.flatnonzero(flat)
            units = np.ones(flat.size)            # unstored (zero) entries: never kept, and zero anyway
            units[idx] = ref.della_units(n, t, idx.size, seed)
            draws.append(units)
        moved = mergekit_merge(method, np.zeros(s, np.float32), [taus[t][n] for t in range(3)],
                               density={i: density for i in ids}, epsilon={i: eps for i in ids}, weight={i: 1.0 for i in ids},
                               normalize=method == "della", rescale=False, int8_mask=False, **{"lambda": lam})
        assert not draws, "mergekit drew once per vector"
        want = base[n].astype(np.float64) + moved
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)
        assert (got[n]["value"] != base[n]).sum() > 0, f"{n}: nothing merged"


# ------------------------------------------------------------------ model_stock

STOCK = {
    "model-stock": ({"method": "model_stock"}, None),
    "model-stock-filter-wise": ({"method": "model_stock", "filter_wise": True}, None),
    "model-stock-two": ({"method": "model_stock"}, [0, 2]),
    "model-stock-three-filter-wise": ({"method": "model_stock", "filter_wise": True}, [0, 1, 3]),
    "model-stock-bf16": ({"method": "model_stock", "dtype": "bfloat16"}, [1, 2, 3]),
}


@pytest.mark.parametrize("label", list(STOCK))
def test_model_stock_matches_numpy(locus, setup, tmp_path, label):
    o, which = STOCK[label]
    tvs = setup["tvs"] if which is None else [setup["tvs"][i] for i in which]
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], tvs, o, out))
    st = compare(out, ref.merge(setup["base"], tvs, o)["tensors"], label)
    assert st["tensors"] >= 9
    assert_ok(locus("validate", out))


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("count", [2, 3])
def test_model_stock_matches_mergekit(locus, tmp_path, filter_wise, count):
    """mergekit's model_stock on base_model + the fine-tuned models θ_i = θ0 + τ_i (float64, so its
    offsets are τ_i), per tensor or per row of the last axis, on a matrix, a vector and a 3-D tensor
    of unrelated vectors (cos θ near 0, t near 0) and a matrix whose vectors share a direction (t near 1)."""
    rng = np.random.default_rng(40 + count)
    shapes = {"a.weight": (12, 20), "b.bias": (30,), "c.weight": (3, 4, 5), "d.weight": (6, 6)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    taus = sparse_vectors(rng, shapes, count)
    shared = rng.standard_normal((6, 6)).astype(np.float32) * 0.1
    for t, tau in enumerate(taus):
        tau["d.weight"] = (shared + tau["d.weight"] * 0.5).astype(np.float32)
        locus_h5.write_task_vector(tmp_path / f"t{t}.h5", tau, base=tmp_path / "base.h5")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", *[tmp_path / f"t{t}.h5" for t in range(count)], "--method", "model_stock",
                    "--filter-wise" if filter_wise else "--no-filter-wise", "-o", out))
    got = ref.read_checkpoint(out)
    for n in shapes:
        b64 = base[n].astype(np.float64)
        want = mergekit_merge("model_stock", b64, [b64 + taus[t][n].astype(np.float64) for t in range(count)], filter_wise=filter_wise)
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)
        assert (got[n]["value"] != base[n]).sum() > 0, f"{n}: nothing merged"


# ------------------------------------------------------------------ nuslerp

NUSLERP = {
    "nuslerp": ({"method": "nuslerp"}, [0, 1]),
    "nuslerp-weights": ({"method": "nuslerp", "weight": [1.0, 3.0]}, [0, 2]),
    "nuslerp-rows": ({"method": "nuslerp", "nuslerp_flatten": False, "weight": [2.0, 1.0]}, [1, 2]),
    "nuslerp-first-axis": ({"method": "nuslerp", "nuslerp_flatten": False, "nuslerp_row_wise": True}, [0, 3]),
    "nuslerp-weights-sum-0": ({"method": "nuslerp", "weight": [1.0, -1.0]}, [2, 3]),
    "nuslerp-bf16": ({"method": "nuslerp", "nuslerp_flatten": False, "dtype": "bfloat16"}, [0, 2]),
}


@pytest.mark.parametrize("label", list(NUSLERP))
def test_nuslerp_matches_numpy(locus, setup, tmp_path, label):
    o, which = NUSLERP[label]
    tvs = [setup["tvs"][i] for i in which]
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], tvs, o, out))
    st = compare(out, ref.merge(setup["base"], tvs, o)["tensors"], label)
    assert st["tensors"] >= 9
    assert_ok(locus("validate", out))


@pytest.mark.parametrize("flatten,row_wise", [(True, False), (False, False), (False, True)])
def test_nuslerp_matches_mergekit(locus, tmp_path, flatten, row_wise):
    """mergekit's nuslerp with base_model on θ_i = θ0 + τ_i (float64), weights 1 and 3 (t = 0.75),
    whole tensors, rows of the last axis or slices along the first axis, on a matrix, a vector, a 3-D
    tensor and a matrix whose two vectors nearly agree."""
    rng = np.random.default_rng(50)
    shapes = {"a.weight": (12, 20), "b.bias": (30,), "c.weight": (3, 4, 5), "d.weight": (6, 7)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    taus = sparse_vectors(rng, shapes, 2)
    taus[1]["d.weight"] = (taus[0]["d.weight"] * 1.5 + 0.01 * rng.standard_normal((6, 7))).astype(np.float32)
    for t, tau in enumerate(taus):
        locus_h5.write_task_vector(tmp_path / f"t{t}.h5", tau, base=tmp_path / "base.h5")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", tmp_path / "t0.h5", tmp_path / "t1.h5", "--method", "nuslerp", "--weight=1,3",
                    "--nuslerp-flatten" if flatten else "--no-nuslerp-flatten",
                    "--nuslerp-row-wise" if row_wise else "--no-nuslerp-row-wise", "-o", out))
    got = ref.read_checkpoint(out)
    for n in shapes:
        b64 = base[n].astype(np.float64)
        want = mergekit_merge("nuslerp", b64, [b64 + taus[t][n].astype(np.float64) for t in range(2)],
                              weight=PerInputValues([(1, 1.0), (2, 3.0)]), nuslerp_flatten=flatten, nuslerp_row_wise=row_wise)
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)
        assert (got[n]["value"] != base[n]).sum() > 0, f"{n}: nothing merged"


def test_nuslerp_ends_are_the_two_vectors(locus, setup, tmp_path):
    """Weights (1, 0) give t = 0, so sin((1 − t)Ω)/sin Ω = 1 and sin(tΩ) = 0: exactly θ0 + τ0, the bits
    of task arithmetic of τ0 alone; (0, 1) likewise gives θ0 + τ1."""
    for w, alone in (([1.0, 0.0], 0), ([0.0, 1.0], 1)):
        a, b = tmp_path / "a.h5", tmp_path / "b.h5"
        assert_ok(run_merge(locus, setup["base"], setup["tvs"][:2], {"method": "nuslerp", "weight": w}, a))
        assert_ok(run_merge(locus, setup["base"], [setup["tvs"][alone]], {"method": "task_arithmetic"}, b))
        ga, gb = ref.read_checkpoint(a), ref.read_checkpoint(b)
        assert all(ga[n]["raw"] == gb[n]["raw"] for n in gb), w


# ------------------------------------------------------------------ sce

SCE = {
    "sce": ({"method": "sce"}, None),
    "sce-select": ({"method": "sce", "select_topk": 0.3}, None),
    "sce-select-three": ({"method": "sce", "select_topk": 0.7}, [0, 2, 3]),
    "sce-select-two": ({"method": "sce", "select_topk": 0.5}, [1, 2]),
    "sce-one": ({"method": "sce"}, [2]),
    "sce-f16": ({"method": "sce", "select_topk": 0.4, "dtype": "float16"}, [0, 1, 2]),
}


@pytest.mark.parametrize("label", list(SCE))
def test_sce_matches_numpy(locus, setup, tmp_path, label):
    o, which = SCE[label]
    tvs = setup["tvs"] if which is None else [setup["tvs"][i] for i in which]
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], tvs, o, out))
    st = compare(out, ref.merge(setup["base"], tvs, o)["tensors"], label)
    assert st["tensors"] >= 9
    assert_ok(locus("validate", out))


@pytest.mark.parametrize("select_topk", [1.0, 0.5, 0.1])
def test_sce_matches_mergekit(locus, tmp_path, select_topk):
    """mergekit's sce with base_model on θ_t = θ0 + τ_t (float64), three task vectors with zeros
    (so some entries have zero variance), on a matrix, a vector and a 3-D tensor."""
    rng = np.random.default_rng(70)
    shapes = {"a.weight": (12, 20), "b.bias": (30,), "c.weight": (3, 4, 5)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    taus = sparse_vectors(rng, shapes, 3, zero_fraction=0.5)
    taus[1] = {n: (v * 3).astype(np.float32) for n, v in taus[1].items()}   # a vector with larger changes weighs more
    for t, tau in enumerate(taus):
        locus_h5.write_task_vector(tmp_path / f"t{t}.h5", tau, base=tmp_path / "base.h5")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", tmp_path / "base.h5", *[tmp_path / f"t{t}.h5" for t in range(3)], "--method", "sce",
                    f"--select-topk={select_topk}", "-o", out))
    got = ref.read_checkpoint(out)
    for n in shapes:
        b64 = base[n].astype(np.float64)
        want = mergekit_merge("sce", b64, [b64 + taus[t][n].astype(np.float64) for t in range(3)], select_topk=select_topk, int8_mask=False)
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)
        assert (got[n]["value"] != base[n]).sum() > 0, f"{n}: nothing merged"


# ------------------------------------------------------------------ karcher

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return [make_base(d / f"m{i}.h5", seed=10 + i) for i in range(3)]


KARCHER = {
    "karcher": ({"method": "karcher"}, 3),
    "karcher-two": ({"method": "karcher", "max_iter": 50, "tol": 1e-9}, 2),
    "karcher-one-step": ({"method": "karcher", "max_iter": 1}, 3),
    "karcher-no-step": ({"method": "karcher", "max_iter": 0}, 3),
    "karcher-one-model": ({"method": "karcher"}, 1),
    "karcher-bf16": ({"method": "karcher", "dtype": "bfloat16"}, 3),
}


@pytest.mark.parametrize("label", list(KARCHER))
def test_karcher_matches_numpy(locus, models, tmp_path, label):
    o, count = KARCHER[label]
    out = tmp_path / "m.h5"
    a = ["merge", *models[:count], "--method", "karcher"]
    a += [f"--{k.replace('_', '-')}={v}" for k, v in o.items() if k != "method"]
    assert_ok(locus(*a, "-o", out))
    compare(out, ref.merge_models(models[:count], o)["tensors"], label)
    assert_ok(locus("validate", out))


@pytest.mark.parametrize("max_iter,tol", [(10, 1e-5), (3, 1e-5), (100, 1e-10)])
def test_karcher_matches_mergekit(locus, tmp_path, max_iter, tol):
    """mergekit's karcher on the same float64 tensors: four models of a matrix, a vector and a 3-D
    tensor, with other norms, plus a tensor that is zero in one model (left out of the direction,
    counted in the scale)."""
    rng = np.random.default_rng(60)
    shapes = {"a.weight": (10, 12), "b.bias": (25,), "c.weight": (2, 3, 4), "z.weight": (5, 5)}
    centre = {n: rng.standard_normal(s) for n, s in shapes.items()}
    ms = []
    for i in range(4):
        m = {n: (centre[n] + 0.8 * rng.standard_normal(s)) * (1 + i) for n, s in shapes.items()}
        if i == 2:
            m["z.weight"] = np.zeros((5, 5))
        ms.append({n: v.astype(np.float32) for n, v in m.items()})
        locus_h5.write_checkpoint(tmp_path / f"m{i}.h5", ms[-1])
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", *[tmp_path / f"m{i}.h5" for i in range(4)], "--method", "karcher", f"--max-iter={max_iter}",
                    f"--tol={tol}", "-o", out))
    got = ref.read_checkpoint(out)
    for n in shapes:
        group = TensorGroup.from_tensors([torch.from_numpy(m[n].astype(np.float64)) for m in ms])
        want = registry.get("karcher").merge_group(group, max_iter=max_iter, tol=tol).numpy()
        np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)


# ------------------------------------------------------------------ bad inputs

@pytest.mark.parametrize("args,mention", [
    (["--method", "della", "--density=0.1", "--epsilon=0.15"], "density ± epsilon in (0, 1)"),
    (["--method", "della_linear", "--density=0.9", "--epsilon=0.1"], "density ± epsilon in (0, 1)"),
    (["--method", "della", "--density=0"], "density must be in"),
    (["--method", "della", "--epsilon=-0.1"], "epsilon must be in"),
    (["--method", "della_linear", "--drop-rate=0.5"], "not a parameter of della_linear"),
    (["--method", "model_stock", "--lambda=0.5"], "not a parameter of model_stock"),
    (["--method", "nuslerp", "--weight=1,2,3"], "3 weights for 2 inputs"),
    (["--method", "nuslerp", "--nuslerp-flatten=maybe"], "true or false"),
    (["--method", "sce", "--select-topk=0"], "select_topk must be in (0, 1]"),
    (["--method", "sce", "--select-topk=1.5"], "select_topk must be in (0, 1]"),
], ids=["della-window-below-0", "della-window-above-1", "della-density-0", "della-epsilon-negative", "della-drop-rate",
        "model-stock-lambda", "nuslerp-weight-count", "nuslerp-flatten-value",
        "sce-select-0", "sce-select-above-1"])
def test_bad_parameters_are_refused(locus, setup, tmp_path, args, mention):
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("merge", setup["base"], *setup["tvs"][:2], *args, "-o", out)
    assert_error(r, out)
    assert mention in r.err, r.err
    assert not out.exists() and snapshot(tmp_path) == before


@pytest.mark.parametrize("method,count,mention", [("model_stock", 1, "at least 2 task vectors"),
                                                  ("nuslerp", 1, "exactly 2 task vectors"), ("nuslerp", 3, "exactly 2 task vectors")])
def test_wrong_number_of_task_vectors_is_refused(locus, setup, tmp_path, method, count, mention):
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("merge", setup["base"], *setup["tvs"][:count], "--method", method, "-o", out)
    assert_error(r, out)
    assert mention in r.err, r.err
    assert not out.exists() and snapshot(tmp_path) == before


@pytest.mark.parametrize("args,mention", [(["--tol=0"], "tol must be in (0, ∞)"), (["--max-iter=-1"], "integer ≥ 0"),
                                          (["--lambda=1"], "not a parameter of karcher")], ids=["tol-0", "max-iter-negative", "lambda"])
def test_bad_karcher_parameters_are_refused(locus, models, tmp_path, args, mention):
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("merge", *models, "--method", "karcher", *args, "-o", out)
    assert_error(r, out)
    assert mention in r.err, r.err
    assert not out.exists() and snapshot(tmp_path) == before
