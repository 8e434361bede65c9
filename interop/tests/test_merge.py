"""`locus merge` checked against an independent numpy implementation (merge_ref.py).

Every method (docs/talos.md §Merging task vectors) on random tensors of mixed shapes
(scalar, 1-D, 2-D, 4-D) and base dtypes (float32, float16, bfloat16, float64), with weights, λ,
negation, empty / fully dense / scaled task vectors; the h5py fixture vectors; errors before any
output exists; the α search.

Tolerances: float32/float64 outputs must be within 1e-6 of the float64 reference relative to the
size of the numbers involved, max(|θ|, |θ0|, |λτ_m|, |λ|·Σ_t|w_t τ_t|): Locus accumulates τ_m in
float32 (so where the weighted sum cancels, the error is relative to the summands, not to the sum)
and adds θ0 + λ·τ_m in float64. 16-bit outputs must equal the RNE rounding of the float64 reference, except
where the exact value lies within that same error bound of a rounding midpoint, where float32
accumulation may legitimately fall on the other side (then one ulp is allowed). Set MERGE_STATS=path to get the
observed errors as JSON.
"""
import json
import math
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

import merge_ref as ref
from conftest import FIXTURES, assert_error, assert_ok, locus_h5, snapshot, make_two_digit_tasks

STATS = {}


@pytest.fixture(scope="session", autouse=True)
def _write_stats():
    yield
    if os.environ.get("MERGE_STATS"):
        Path(os.environ["MERGE_STATS"]).write_text(json.dumps(STATS, indent=1, sort_keys=True))


# ------------------------------------------------------------------ inputs

BASE_SPEC = {   # name -> (dtype, shape)
    "scalar": ("float32", ()),
    "vec": ("float32", (37,)),
    "mat": ("float32", (12, 20)),
    "conv.weight": ("float32", (4, 3, 3, 3)),
    "half.w": ("float16", (40, 50)),
    "bf.w": ("bfloat16", (30, 64)),
    "bf.b": ("bfloat16", (16,)),
    "bf.s": ("bfloat16", ()),
    "f64.w": ("float64", (5, 5)),
    "head/out.weight": ("float32", (3, 5)),
    "ids": ("int64", (1, 8)),
    "flags": ("bool", (6,)),
    "untouched": ("float32", (10,)),
    "empty": ("float32", (0, 4)),
}
FLOAT_NAMES = [n for n, (d, _) in BASE_SPEC.items() if d in ref.FLOATS and n not in ("untouched", "empty")]


def make_base(path, seed=0, perturb=False):
    rng = np.random.default_rng(seed)
    tensors, dtypes = {}, {}
    for name, (dtype, shape) in BASE_SPEC.items():
        if dtype == "int64":
            a = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
        elif dtype == "bool":
            a = rng.random(shape) < 0.5
        else:
            a = rng.standard_normal(shape)
            a = a.astype(np.float32) if dtype == "bfloat16" else a.astype(dtype)
        if perturb and dtype == "float32" and a.size:
            a = a.copy()
            a.reshape(-1)[0] += 1
        tensors[name], dtypes[name] = a, dtype
    locus_h5.write_checkpoint(path, tensors, dtypes=dtypes, metadata={"format": "pt", "who": "test_merge"},
                              architecture=None)
    return path


def sparse(rng, shape, density, scale=0.5, dtype=np.float32):
    n = int(np.prod(shape))
    a = np.zeros(n)
    k = int(round(density * n)) if density < 1 else n
    sel = rng.choice(n, k, replace=False) if n else np.zeros(0, np.int64)
    a[sel] = rng.standard_normal(k) * scale
    a[sel] = np.where(a[sel] == 0, 0.25, a[sel])
    return a.reshape(shape).astype(dtype)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """base.h5 and five task vectors: sparse float32; scaled 0.5 with 16-bit value dtypes; fully dense;
    coo with scale −1.5 and float64 values; empty (no tensors)."""
    d = tmp_path_factory.mktemp("merge")
    base = make_base(d / "base.h5")
    rng = np.random.default_rng(1)
    tv = {}
    t0 = {n: sparse(rng, BASE_SPEC[n][1], 0.3) for n in FLOAT_NAMES}
    locus_h5.write_task_vector(d / "tv0.h5", t0, base=base)
    t1 = {n: sparse(rng, BASE_SPEC[n][1], 0.5) for n in FLOAT_NAMES if n != "scalar"}
    locus_h5.write_task_vector(d / "tv1.h5", t1, base=base, scale=0.5,
                               dtypes={"bf.w": "bfloat16", "half.w": "float16", "vec": "bfloat16"})
    t2 = {n: sparse(rng, BASE_SPEC[n][1], 1.0) for n in FLOAT_NAMES}          # every entry non-zero
    t2["empty"] = np.zeros((0, 4), np.float32)                                 # a zero-element tensor
    locus_h5.write_task_vector(d / "tv2.h5", t2, base=base)
    t3 = {n: sparse(rng, BASE_SPEC[n][1], 0.1, scale=0.8, dtype=np.float64 if n == "mat" else np.float32)
          for n in ("mat", "conv.weight", "bf.w", "head/out.weight", "f64.w")}
    locus_h5.write_task_vector(d / "tv3.h5", t3, base=base, scale=-1.5, encoding="coo")
    locus_h5.write_task_vector(d / "tv4.h5", {}, base=base)                   # empty
    tvs = [d / f"tv{i}.h5" for i in range(5)]
    with h5py.File(tvs[2]) as f:   # the dense vector really is dense-encoded
        assert {f["tensors"][k].attrs["encoding-type"] for k in f["tensors"] if k != "empty"} == {"dense"}
    # Fisher scores, one file per vector: some tensors missing (plain averaging), zeros (floor),
    # one tensor no vector touches ("untouched": merged as θ0).
    scores = []
    for i in range(5):
        sc = {n: np.abs(rng.standard_normal(BASE_SPEC[n][1])).astype(np.float32) * (10 ** (i - 2))
              for n in FLOAT_NAMES if ((len(n) + i) % 4 != 0 or n == "mat")}
        sc["mat"].reshape(-1)[:7] = 0
        if i == 1:
            sc["untouched"] = np.abs(rng.standard_normal(10)).astype(np.float32)
        p = d / f"scores{i}.h5"
        locus_h5.write_scores(p, sc, base=base, estimator="fisher-empirical", samples=8 * (i + 1),
                              reduction="sum" if i % 2 == 0 else "mean")
        scores.append(p)
    return {"dir": d, "base": base, "tvs": tvs, "scores": scores}


# ------------------------------------------------------------------ running and comparing

def cli_args(o):
    """The command line of an option dict: every key is a parameter name of `locus merge --help`
    (the flag is --name with _ → -; weight is comma-separated; booleans are --name / --no-name)."""
    a = ["--method", o["method"]]
    for key, value in o.items():
        if key == "method":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            a.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, (list, tuple)):
            a.append(flag + "=" + ",".join(repr(float(w)) for w in value))
        else:
            a.append(f"{flag}={value!r}" if isinstance(value, float) else f"{flag}={value}")
    return a


def run_merge(locus, base, tvs, o, out, scores=(), extra=()):
    args = ["merge", base, *tvs, *cli_args(o), *extra]
    if scores:
        args += ["--scores", *scores]
    return locus(*args, "-o", out)


def compare(out_path, want, label, tol=1e-6):
    """Locus output vs the reference; returns stats and asserts the tolerances of the module docstring."""
    got = ref.read_checkpoint(out_path)
    assert list(sorted(got)) == list(sorted(want)), f"{label}: tensor names differ"
    st = {"max_rel_scaled": 0.0, "max_rel_plain": 0.0, "half_exact": 0, "half_total": 0, "half_near_tie_ulp": 0,
          "copied": 0, "tensors": 0}
    for name, w in want.items():
        g = got[name]
        assert g["shape"] == tuple(w["shape"]), f"{label}: {name} shape"
        assert g["dtype"] == w["dtype"], f"{label}: {name} dtype {g['dtype']} != {w['dtype']}"
        if w["copied"]:
            assert g["raw"] == w["raw"], f"{label}: {name} should be copied bit for bit"
            st["copied"] += 1
            continue
        st["tensors"] += 1
        a = g["value"].reshape(-1)
        exact = w["exact"].reshape(-1)
        theta0 = w["theta0"].reshape(-1) if "theta0" in w else exact
        mag = w["mag"].reshape(-1) if "mag" in w else np.zeros(exact.shape)
        size = np.maximum.reduce([np.abs(exact), np.abs(theta0), np.abs(exact - theta0), mag, np.full(exact.shape, 1e-30)])
        if w["dtype"] in ("float32", "float64"):
            err = np.abs(a - exact)
            rel = err / size
            if rel.size:
                st["max_rel_scaled"] = max(st["max_rel_scaled"], float(rel.max()))
                nz = exact != 0
                if nz.any():
                    st["max_rel_plain"] = max(st["max_rel_plain"], float((err[nz] / np.abs(exact[nz])).max()))
                bad = np.flatnonzero(rel > tol)
                assert bad.size == 0, (f"{label}: {name}[{bad[:5]}] locus {a[bad[:5]]} vs numpy {exact[bad[:5]]} "
                                       f"(rel {rel[bad[:5]]})")
        else:
            r = ref.round_to(exact, w["dtype"])
            same = (a == r) | (np.isnan(a) & np.isnan(r))
            st["half_total"] += a.size
            st["half_exact"] += int(same.sum())
            # float32 accumulation may move a value that is within tol·size of a rounding midpoint across it
            near = ref.midpoint_distance(exact, w["dtype"]) <= tol * size
            bad = np.flatnonzero(~same & ~near)
            assert bad.size == 0, (f"{label}: {name} ({w['dtype']}) [{bad[:5]}] locus {a[bad[:5]]} vs RNE(numpy) "
                                   f"{r[bad[:5]]} (exact {exact[bad[:5]]})")
            for i in np.flatnonzero(~same & near):
                st["half_near_tie_ulp"] += 1
                lo, hi = ref.neighbours(r[i], w["dtype"])
                assert lo <= a[i] <= hi, f"{label}: {name}[{i}] more than one ulp off"
    return st


def record(label, st):
    STATS[label] = st


# ------------------------------------------------------------------ 1. every method vs numpy

W5 = [1.0, -1.0, 0.5, 2.0, 1.0]
CONFIGS = {
    "ta": {"method": "task_arithmetic"},
    "ta-weights-lambda": {"method": "task_arithmetic", "weight": W5, "lambda": 0.7},
    "ta-negative-lambda": {"method": "task_arithmetic", "lambda": -0.5},
    "ties-global": {"method": "ties", "density": 0.2},
    "ties-global-weights": {"method": "ties", "density": 0.35, "weight": [1.0, -0.5, 2.0, 1.0, 3.0], "lambda": 1.3},
    "ties-tensor": {"method": "ties", "density": 0.3, "scope": "tensor", "lambda": 0.8},
    "ties-density-1": {"method": "ties", "density": 1.0},
    "ties-density-tiny": {"method": "ties", "density": 0.01},
    "dare-ta": {"method": "dare_linear", "drop_rate": 0.5, "seed": 7},
    "dare-ta-default-p": {"method": "dare_linear"},
    "dare-ta-norescale": {"method": "dare_linear", "drop_rate": 0.3, "rescale": False, "seed": 123456789012345, "weight": W5},
    "dare-ties-global": {"method": "dare_ties", "drop_rate": 0.6, "density": 0.3, "seed": 3},
    "dare-ties-tensor": {"method": "dare_ties", "drop_rate": 0.4, "scope": "tensor", "density": 0.25,
                         "seed": 2 ** 63 - 1, "rescale": False, "lambda": 0.9},
    "breadcrumbs-row": {"method": "breadcrumbs"},
    "breadcrumbs-row-wide": {"method": "breadcrumbs", "density": 0.5, "gamma": 0.25, "weight": W5, "lambda": 0.4},
    "breadcrumbs-tensor": {"method": "breadcrumbs", "scope": "tensor", "density": 0.3, "gamma": 0.1},
    "breadcrumbs-ties-row": {"method": "breadcrumbs_ties"},
    "breadcrumbs-ties-row-wide": {"method": "breadcrumbs_ties", "density": 0.5, "gamma": 0.25, "weight": W5, "lambda": 0.4},
    "breadcrumbs-ties-tensor": {"method": "breadcrumbs_ties", "scope": "tensor", "density": 0.3, "gamma": 0.1, "lambda": 1.2},
    "tall": {"method": "tall", "tall_lambda": 0.4},
    "tall-weights": {"method": "tall", "tall_lambda": 0.2, "weight": W5, "lambda": 0.6},
    "consensus-2": {"method": "consensus", "k": 2},
    "consensus-1": {"method": "consensus", "k": 1, "tall_lambda": 0.6},
    "consensus-3": {"method": "consensus", "k": 3, "tall_lambda": 0.2, "lambda": 1.5},
    "fisher": {"method": "fisher"},
    "fisher-normalize-floor": {"method": "fisher", "normalize": True, "floor": 1e-3},
    "fisher-weights": {"method": "fisher", "weight": [1.0, 2.0, 0.5, 1.0, 3.0]},
}


@pytest.mark.parametrize("label", list(CONFIGS))
def test_method_matches_numpy(locus, setup, tmp_path, label):
    o = CONFIGS[label]
    scores = setup["scores"] if o["method"] == "fisher" else ()
    extra = ["--tall-dir", tmp_path] if o["method"] == "tall" else []
    out = tmp_path / "merged.h5"
    r = assert_ok(run_merge(locus, setup["base"], setup["tvs"], o, out, scores, extra))
    want = ref.merge(setup["base"], setup["tvs"], o, scores)
    st = compare(out, want["tensors"], label)
    record(label, st)
    assert st["tensors"] >= 9, "every touched float tensor compared"
    # the output is a valid checkpoint
    assert_ok(locus("validate", out))
    assert "merged" in r.out


def test_dense_vector_alone_equals_apply(locus, setup, tmp_path):
    """Task arithmetic of one fully dense vector at λ = 1 is `locus apply` (θ0 + τ, rounded once)."""
    out, applied = tmp_path / "m.h5", tmp_path / "a.h5"
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][2]], {"method": "task_arithmetic"}, out))
    assert_ok(locus("apply", setup["base"], setup["tvs"][2], "-o", applied))
    want = ref.merge(setup["base"], [setup["tvs"][2]], {"method": "task_arithmetic"})
    record("dense-alone", compare(out, want["tensors"], "dense-alone"))
    a, b = ref.read_checkpoint(out), ref.read_checkpoint(applied)
    assert {k: v["raw"] for k, v in a.items()} == {k: v["raw"] for k, v in b.items()}


def test_negation_with_weight_minus_one(locus, setup, tmp_path):
    """w = −1 negates: θ0 − τ; equal to λ = −1."""
    out1, out2 = tmp_path / "w.h5", tmp_path / "l.h5"
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][0]], {"method": "task_arithmetic", "weight": [-1.0]}, out1))
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][0]], {"method": "task_arithmetic", "lambda": -1.0}, out2))
    want = ref.merge(setup["base"], [setup["tvs"][0]], {"method": "task_arithmetic", "weight": [-1.0]})
    record("negation", compare(out1, want["tensors"], "negation"))
    base = ref.read_checkpoint(setup["base"])
    tau = ref.read_task_vector(setup["tvs"][0])
    got = ref.read_checkpoint(out1)
    # θ0 − τ directly from the spec's reading of the vector
    t = tau["tensors"]["mat"]
    dense = np.zeros(t["count"])
    dense[t["idx"]] = t["val"] * tau["scale"]
    np.testing.assert_allclose(got["mat"]["value"].reshape(-1), base["mat"]["value"].reshape(-1) - dense, rtol=1e-6, atol=0)
    assert {k: v["raw"] for k, v in got.items()} == {k: v["raw"] for k, v in ref.read_checkpoint(out2).items()}


def test_empty_vector_alone_reproduces_the_base(locus, setup, tmp_path):
    out = tmp_path / "e.h5"
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][4]], {"method": "ties"}, out))
    assert locus_h5.fingerprint(out) == locus_h5.fingerprint(setup["base"])
    with h5py.File(out) as f:
        assert json.loads(f["metadata"][()].decode()) == {"format": "pt", "who": "test_merge"}


def test_empty_vectors_do_not_change_the_result(locus, setup, tmp_path):
    """Adding the empty vector changes nothing for task arithmetic (bit for bit)."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"][:4], {"method": "task_arithmetic", "lambda": 0.3}, a))
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], {"method": "task_arithmetic", "lambda": 0.3}, b))
    assert locus_h5.fingerprint(a) == locus_h5.fingerprint(b)


def test_scale_is_applied(locus, setup, tmp_path):
    """A vector with scale s merges like the same values × s written with scale 1."""
    tv = ref.read_task_vector(setup["tvs"][3])
    dense = {}
    for name, t in tv["tensors"].items():
        a = np.zeros(t["count"])
        a[t["idx"]] = t["val"] * tv["scale"]
        dense[name] = a.reshape(t["shape"])
    p = tmp_path / "scaled1.h5"
    locus_h5.write_task_vector(p, dense, base=setup["base"], dtypes={n: "float64" for n in dense})
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][3]], {"method": "task_arithmetic", "lambda": 0.7}, a))
    assert_ok(run_merge(locus, setup["base"], [p], {"method": "task_arithmetic", "lambda": 0.7}, b))
    assert locus_h5.fingerprint(a) == locus_h5.fingerprint(b)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16"])
def test_output_dtype(locus, setup, tmp_path, dtype):
    o = {"method": "ties", "density": 0.4, "dtype": dtype}
    out = tmp_path / "d.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], o, out))
    want = ref.merge(setup["base"], setup["tvs"], o)
    for w in want["tensors"].values():
        assert w["copied"] or w["dtype"] == dtype
    record(f"dtype-{dtype}", compare(out, want["tensors"], f"dtype-{dtype}"))


@pytest.mark.parametrize("p,seed", [(0.5, 0), (0.9, 11)])
def test_dare_mask_is_the_documented_generator(locus, setup, tmp_path, p, seed):
    """With --no-rescale and one vector of all-equal values the output *is* the keep mask: compare it
    entry by entry with SplitMix64 reproduced in Python."""
    n = 500
    base = tmp_path / "b.h5"
    locus_h5.write_checkpoint(base, {"w": np.zeros(n, np.float32), "v": np.zeros((5, 7), np.float32)})
    tv = tmp_path / "t.h5"
    locus_h5.write_task_vector(tv, {"w": np.ones(n, np.float32), "v": np.ones((5, 7), np.float32)}, base=base)
    empty = tmp_path / "e.h5"
    locus_h5.write_task_vector(empty, {}, base=base)
    out = tmp_path / "m.h5"
    # the vector is the *second* input: its stream uses vector index 1
    assert_ok(locus("merge", base, empty, tv, "--method", "dare_linear", f"--drop-rate={p}", f"--seed={seed}", "--no-rescale", "-o", out))
    got = ref.read_checkpoint(out)
    for name, count in (("w", n), ("v", 35)):
        keep = ref.dare_keep(name, 1, count, p, seed)
        assert np.array_equal(got[name]["value"].reshape(-1) == 1, keep), name
        assert abs(keep.mean() - (1 - p)) < 0.1


@pytest.mark.parametrize("method", [{"method": "dare_linear", "drop_rate": 0.5, "seed": 5},
                                    {"method": "dare_ties", "drop_rate": 0.5, "density": 0.3}])
def test_dare_does_not_depend_on_the_encoding(locus, setup, tmp_path, method):
    """The same τ (no explicitly stored zeros) as coo, bitmask or dense gives the same DARE merge."""
    rng = np.random.default_rng(9)
    tau = {n: sparse(rng, BASE_SPEC[n][1], 0.6) for n in ("mat", "conv.weight", "bf.w", "vec")}
    outs = []
    for enc in ("coo", "bitmask", "dense"):
        p = tmp_path / f"{enc}.h5"
        locus_h5.write_task_vector(p, tau, base=setup["base"], encoding=enc)
        out = tmp_path / f"m-{enc}.h5"
        assert_ok(run_merge(locus, setup["base"], [setup["tvs"][0], p], method, out))
        outs.append(locus_h5.fingerprint(out))
        want = ref.merge(setup["base"], [setup["tvs"][0], p], method)
        compare(out, want["tensors"], f"dare-{enc}")
    assert len(set(outs)) == 1


def test_tall_masks_and_models(locus, setup, tmp_path):
    o = {"method": "tall", "tall_lambda": 0.3, "lambda": 0.9, "weight": W5}
    d = tmp_path / "tall"
    d.mkdir()
    out = tmp_path / "merged.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], o, out, extra=["--tall-dir", d]))
    want = ref.merge(setup["base"], setup["tvs"], o)
    record("tall-merged", compare(out, want["tensors"], "tall-merged"))
    files = sorted(os.listdir(d))
    assert files == sorted([f"task{t}-tv{t}-mask.h5" for t in range(5)] + [f"task{t}-tv{t}-model.h5" for t in range(5)]), files
    fp = locus_h5.fingerprint(setup["base"])
    boundary = 0
    for t in range(5):
        mpath, cpath = d / f"task{t}-tv{t}-mask.h5", d / f"task{t}-tv{t}-model.h5"
        assert_ok(locus("validate", mpath, cpath))
        m = locus_h5.load(mpath)
        assert m["kind"] == "mask" and m["attrs"]["base-fingerprint"] == fp
        wm = want["tall_masks"][t]
        assert set(m["tensors"]) == set(wm), f"task {t}: mask tensors"
        for name, bits in m["tensors"].items():
            exp, margin = wm[name]["mask"], wm[name]["margin"]
            diff = bits != exp
            boundary += int(diff.sum())
            assert not (diff & (margin > 1e-5)).any(), f"task {t} {name}: mask bits differ away from the boundary"
        st = compare(cpath, want["tall_models"][t], f"tall-model-{t}")
        record(f"tall-model-{t}", st)
    STATS["tall-mask-boundary-differences"] = boundary


# ------------------------------------------------------------------ double rounding to 16-bit outputs

@pytest.mark.parametrize("dtype,tau,want_bits", [
    ("bfloat16", 2.0 ** -8 + 2.0 ** -30, 0x3F81),    # 1 + 2^-8 + 2^-30 → RNE 1 + 2^-7, not 1.0
    ("float16", 2.0 ** -11 + 2.0 ** -30, 0x3C01),    # 1 + 2^-11 + 2^-30 → RNE 1 + 2^-10, not 1.0
])
def test_sixteen_bit_output_is_rounded_once(locus, tmp_path, dtype, tau, want_bits):
    """θ0 + λ·τ is computed in float64 and must be rounded to the 16-bit base dtype once (RNE, spec §1.4).
    Rounding through float32 first lands exactly on the midpoint and ties to even: 1.0 instead of
    the nearest value."""
    base = tmp_path / "b.h5"
    locus_h5.write_checkpoint(base, {"w": np.array([1.0, 1.0], np.float32)}, dtypes={"w": dtype})
    tv = tmp_path / "t.h5"
    locus_h5.write_task_vector(tv, {"w": np.array([tau, 0.5], np.float32)}, base=base)
    assert np.float32(tau) == tau
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", base, tv, "-o", out))
    with h5py.File(out) as f:
        bits = np.frombuffer(ref.read_raw(f["tensors/w"]), "<u2")
    exact = 1.0 + tau
    assert ref.round_to(np.array([exact]), dtype)[0] == (1 + 2.0 ** -7 if dtype == "bfloat16" else 1 + 2.0 ** -10)
    assert bits[0] == want_bits, f"{dtype}: got bits {bits[0]:#06x}, RNE of {exact!r} is {want_bits:#06x}"


# ------------------------------------------------------------------ 2. the h5py fixture vectors

@pytest.mark.parametrize("o", [{"method": "task_arithmetic"}, {"method": "task_arithmetic", "lambda": 0.6, "weight": [-1.0]},
                               {"method": "ties", "density": 0.2}, {"method": "ties", "scope": "tensor", "density": 0.5},
                               {"method": "dare_linear", "drop_rate": 0.5, "seed": 4}, {"method": "breadcrumbs", "density": 0.5, "gamma": 0.2}],
                         ids=["ta", "negate", "ties", "ties-tensor", "dare", "breadcrumbs"])
def test_h5py_fixture_vector(locus, tmp_path, o):
    base, tv = FIXTURES / "checkpoint.h5", FIXTURES / "task_vector.h5"
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, base, [tv], o, out))
    want = ref.merge(base, [tv], o)
    record("fixture-" + o["method"] + str(len(o)), compare(out, want["tensors"], f"fixture {o}"))


def test_h5py_fixture_vector_by_the_spec_snippet(locus, tmp_path):
    """Task arithmetic of the fixture twice (λ = 1, two copies) checked with FORMAT.md §5's own read_tv."""
    from urllib.parse import unquote
    base, tv = FIXTURES / "checkpoint.h5", FIXTURES / "task_vector.h5"
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", base, tv, tv, "-o", out))

    def read_tv(g):   # spec/FORMAT.md §5, verbatim apart from bfloat16 → float32 via read_values
        shape, n, enc = tuple(g.attrs["shape"]), int(g.attrs["count"]), g.attrs["encoding-type"]
        out = np.zeros(n, dtype=np.float64)
        vals = ref._read_values(g["values"]).reshape(-1)
        if enc == "coo":
            out[g["indices"][()]] = vals
        elif enc == "bitmask":
            out[np.unpackbits(g["mask"][()], bitorder="little", count=n).astype(bool)] = vals
        else:
            out[:] = vals
        return out.reshape(shape)
    with h5py.File(tv) as f:
        tau = {unquote(k): f.attrs["scale"] * read_tv(g) for k, g in f["tensors"].items()}
    b, m = ref.read_checkpoint(base), ref.read_checkpoint(out)
    for name, t in b.items():
        if name in tau:
            want = ref.round_to(t["value"] + 2 * tau[name], t["dtype"])
            np.testing.assert_array_equal(m[name]["value"], want, err_msg=name)
        else:
            assert m[name]["raw"] == t["raw"], name


# ------------------------------------------------------------------ 3. errors before any output exists

def expect_refusal(locus, args, directory, out, file, *, mention=()):
    before = snapshot(directory)
    r = locus(*args, "-o", out)
    line = assert_error(r, file)
    for m in mention:
        assert m in line, f"{m!r} not in {line!r}"
    assert not os.path.exists(out), f"{out} was written"
    assert snapshot(directory) == before, f"left behind: {snapshot(directory) - before}"
    return line


def test_wrong_base_is_refused_and_force_merges_with_a_warning(locus, setup, tmp_path):
    other = make_base(tmp_path / "other.h5", perturb=True)
    tv = tmp_path / "foreign.h5"
    locus_h5.write_task_vector(tv, {"mat": np.ones((12, 20), np.float32)}, base=other)
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], tv], tmp_path, out, tv, mention=("fingerprint",))
    r = assert_ok(locus("merge", setup["base"], setup["tvs"][0], tv, "--force", "-o", out))
    assert "warning" in r.err and str(tv) in r.err
    want = ref.merge(setup["base"], [setup["tvs"][0], tv], {"method": "task_arithmetic"})
    compare(out, want["tensors"], "force")


@pytest.mark.parametrize("case", ["shape", "missing-tensor", "nan", "inf-in-bitmask", "nan-in-dense-late"])
def test_bad_vector_is_refused(locus, setup, tmp_path, case):
    tv = tmp_path / f"{case}.h5"
    if case == "shape":
        locus_h5.write_task_vector(tv, {"mat": np.ones((20, 12), np.float32)}, base=setup["base"])
        mention = ("mat",)
    elif case == "missing-tensor":
        locus_h5.write_task_vector(tv, {"not.in.base": np.ones(3, np.float32)}, base=setup["base"])
        mention = ("not.in.base",)
    else:
        # NaN / inf written with h5py directly (locus_h5 and the validator refuse them)
        enc = {"nan": "coo", "inf-in-bitmask": "bitmask", "nan-in-dense-late": "dense"}[case]
        rng = np.random.default_rng(3)
        tau = {n: sparse(rng, BASE_SPEC[n][1], 0.5) for n in ("mat", "vec", "untouched" if case == "nan-in-dense-late" else "scalar")}
        locus_h5.write_task_vector(tv, tau, base=setup["base"], encoding=enc)
        target = "untouched" if case == "nan-in-dense-late" else "mat"   # 'untouched' is the last float tensor merged
        with h5py.File(tv, "r+") as f:
            ds = f[f"tensors/{target}/values"]
            v = ds[()]
            v.reshape(-1)[-1] = np.inf if case.startswith("inf") else np.nan
            ds[...] = v
        mention = ()
    out = tmp_path / "m.h5"
    for method in ("task-arithmetic", "ties", "fisher"):
        extra = ["--fisher-scores", setup["scores"][0], setup["scores"][1]] if method == "fisher" else []
        expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], tv, "--method", method, *extra], tmp_path, out, tv, mention=mention)


def test_tall_leaves_nothing_behind_on_error(locus, setup, tmp_path):
    """A NaN met half-way through a TALL merge: no merged output, no per-task masks/models, no temp files."""
    tv = tmp_path / "late-nan.h5"
    rng = np.random.default_rng(4)
    locus_h5.write_task_vector(tv, {"mat": sparse(rng, (12, 20), 0.5), "vec": sparse(rng, (37,), 0.5)}, base=setup["base"],
                               encoding="dense")
    with h5py.File(tv, "r+") as f:
        v = f["tensors/vec/values"][()]
        v[-1] = np.nan
        f["tensors/vec/values"][...] = v
    d = tmp_path / "tall"
    d.mkdir()
    expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], tv, "--method", "tall", "--tall-dir", d],
                   tmp_path, tmp_path / "m.h5", tv)
    assert os.listdir(d) == []
    # a --tall-dir that does not exist: one line, nothing written
    expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], "--method", "tall", "--tall-dir", tmp_path / "nope"],
                   tmp_path, tmp_path / "m.h5", tmp_path / "nope")


def test_existing_output_is_untouched_on_error(locus, setup, tmp_path):
    tv = tmp_path / "bad.h5"
    locus_h5.write_task_vector(tv, {"mat": np.ones((20, 12), np.float32)}, base=setup["base"])
    out = tmp_path / "m.h5"
    out.write_bytes(b"keep me")
    r = locus("merge", setup["base"], tv, "-o", out)
    assert_error(r, tv)
    assert out.read_bytes() == b"keep me"


def test_scores_of_another_model_are_refused(locus, setup, tmp_path):
    other = make_base(tmp_path / "other.h5", perturb=True)
    sc = tmp_path / "foreign-scores.h5"
    locus_h5.write_scores(sc, {"mat": np.ones((12, 20), np.float32)}, base=other, estimator="fisher-empirical", samples=4)
    expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], setup["tvs"][1], "--method", "fisher",
                           "--fisher-scores", setup["scores"][0], sc], tmp_path, tmp_path / "m.h5", sc)


def test_scores_with_a_wrong_shape_are_refused(locus, setup, tmp_path):
    sc = tmp_path / "bad-scores.h5"
    locus_h5.write_scores(sc, {"mat": np.ones((20, 12), np.float32)}, base=setup["base"], estimator="fisher-empirical", samples=4)
    expect_refusal(locus, ["merge", setup["base"], setup["tvs"][0], "--method", "fisher", "--fisher-scores", sc],
                   tmp_path, tmp_path / "m.h5", sc)


def test_wrong_number_of_weights_or_scores(locus, setup, tmp_path):
    out = tmp_path / "m.h5"
    line = expect_refusal(locus, ["merge", setup["base"], *setup["tvs"][:3], "--weights=1,2"], tmp_path, out, out)
    assert "weight" in line
    line = expect_refusal(locus, ["merge", setup["base"], *setup["tvs"][:3], "--method", "fisher", "--fisher-scores",
                                  *setup["scores"][:2]], tmp_path, out, out)
    assert "scores" in line
    line = expect_refusal(locus, ["merge", setup["base"], *setup["tvs"][:2], "--method", "fisher"], tmp_path, out, out)
    assert "scores" in line


def test_tall_needs_a_directory(locus, setup, tmp_path):
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", setup["base"], *setup["tvs"][:2], "--method", "tall"], tmp_path, out, out, mention=("--tall-dir",))


@pytest.mark.parametrize("args", [["--ties-density=0"], ["--ties-density=1.5"], ["--method", "dare_linear", "--drop-rate=1"],
                                  ["--method", "breadcrumbs", "--beta=0.8", "--gamma=0.3"], ["--method", "consensus", "--consensus-k=0"],
                                  ["--lambda=nan"]],
                         ids=["density0", "density>1", "drop1", "beta+gamma>1", "k0", "lambda-nan"])
def test_bad_parameters_are_refused(locus, setup, tmp_path, args):
    if args[0].startswith("--ties"):
        args = ["--method", "ties", *args]
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("merge", setup["base"], *setup["tvs"][:2], *args, "-o", out)
    assert_error(r, out)
    assert not out.exists() and snapshot(tmp_path) == before


def test_fisher_entries_without_any_score_are_not_zeroed(locus, setup, tmp_path):
    """--fisher-floor 0 with entries every scores file gives F = 0 (setup: mat[0, :7]): Σ F = 0 there, and
    the merged weight must not become 0 — either the floor must be > 0 (refused) or such entries fall back
    to plain averaging."""
    out = tmp_path / "m.h5"
    r = locus("merge", setup["base"], *setup["tvs"][:3], "--method", "fisher", "--fisher-floor=0",
              "--fisher-scores", *setup["scores"][:3], "-o", out)
    if r.code != 0:
        assert_error(r, out)
        return
    got = ref.read_checkpoint(out)["mat"]["value"].reshape(-1)[:7]
    plain = ref.merge(setup["base"], setup["tvs"][:3], {"method": "task_arithmetic", "lambda": 1 / 3})["tensors"]["mat"]["exact"]
    np.testing.assert_allclose(got, plain.reshape(-1)[:7], rtol=1e-6,
                               err_msg="entries with Σ F = 0 were set to 0 instead of the plain average")


@pytest.mark.parametrize("args", [["--dtype", "int64"], ["--dtype", "bool"]], ids=["dtype-int64", "dtype-bool"])
def test_non_float_output_dtype_is_refused_cleanly(locus, setup, tmp_path, args):
    """--dtype lists every Locus dtype; an integer output dtype must be refused with one line, not trap."""
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("merge", setup["base"], setup["tvs"][0], *args, "-o", out)
    assert_error(r, out)
    assert snapshot(tmp_path) == before, f"left behind: {snapshot(tmp_path) - before}"


@pytest.mark.parametrize("args", [["--method", "ties", "--ties-scope", "row"],
                                  ["--method", "breadcrumbs", "--breadcrumbs-scope", "global"],
                                  ["--method", "ties", "--gamma", "0.1"], ["--method", "ties", "--density"],
                                  ["--method", "no_such_method"]],
                         ids=["ties-scope-row", "breadcrumbs-scope-global", "parameter-of-another-method", "missing-value",
                              "unknown-method"])
def test_unsupported_option_values_are_refused(locus, setup, tmp_path, args):
    """The option parsers accept every Scope / MergeMethod value; the unsupported ones must not silently
    fall back to another behaviour (ties row → tensor, breadcrumbs global → tensor), and a parameter the
    method does not have must not be silently ignored."""
    out = tmp_path / "m.h5"
    r = locus("merge", setup["base"], *setup["tvs"][:2], *args, "-o", out)
    assert r.code != 0, f"accepted {args} silently:\n{r!r}"
    assert not out.exists()


def test_dare_seed_above_int64_max(locus, setup, tmp_path):
    """--seed is a UInt64 (the help says so); seeds ≥ 2^63 must work, not trap while recording provenance."""
    o = {"method": "dare_linear", "drop_rate": 0.4, "seed": 2 ** 64 - 1}
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"], o, out))
    compare(out, ref.merge(setup["base"], setup["tvs"], o)["tensors"], "seed-max")


def tensors_raw(path):
    return {k: v["raw"] for k, v in ref.read_checkpoint(path).items()}


@pytest.mark.parametrize("scope", ["row", "tensor"])
def test_breadcrumbs_ties_of_one_vector_is_breadcrumbs(locus, setup, tmp_path, scope):
    """With one vector nothing disagrees: the sign election keeps every kept entry as it is, so
    breadcrumbs_ties and breadcrumbs write the same bytes (and differ once the vectors disagree)."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    o = {"density": 0.4, "gamma": 0.1, "scope": scope, "weight": [-1.5]}
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][0]], {"method": "breadcrumbs_ties", **o}, a))
    assert_ok(run_merge(locus, setup["base"], [setup["tvs"][0]], {"method": "breadcrumbs", **o}, b))
    assert tensors_raw(a) == tensors_raw(b)
    o["weight"] = [1.0, 1.0, 1.0]
    assert_ok(run_merge(locus, setup["base"], setup["tvs"][:3], {"method": "breadcrumbs_ties", **o}, a))
    assert_ok(run_merge(locus, setup["base"], setup["tvs"][:3], {"method": "breadcrumbs", **o}, b))
    assert tensors_raw(a) != tensors_raw(b)


@pytest.mark.parametrize("canonical,older", [
    (["--method", "task_arithmetic", "--weight=1,-0.5,2,1,3"], ["--method", "task-arithmetic", "--weights=1,-0.5,2,1,3"]),
    (["--method", "ties", "--density=0.3", "--scope=tensor"], ["--method", "ties", "--ties-density=0.3", "--ties-scope=tensor"]),
    (["--method", "dare_linear", "--drop-rate=0.4", "--no-rescale", "--seed=5"],
     ["--method", "dare_linear", "--dare-drop=0.4", "--no-dare-rescale", "--seed=5"]),
    (["--method", "breadcrumbs", "--density=0.5", "--gamma=0.2", "--scope=tensor"],
     ["--method", "breadcrumbs", "--beta=0.5", "--gamma=0.2", "--breadcrumbs-scope=tensor"]),
    (["--method", "consensus", "--k=3"], ["--method", "consensus", "--consensus-k", "3"]),
], ids=["task-arithmetic", "ties", "dare", "breadcrumbs", "consensus"])
def test_older_spellings_merge_identically(locus, setup, tmp_path, canonical, older):
    """The parameter tables accept the flags of earlier releases as aliases: same bytes."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(locus("merge", setup["base"], *setup["tvs"], *canonical, "-o", a))
    assert_ok(locus("merge", setup["base"], *setup["tvs"], *older, "-o", b))
    assert tensors_raw(a) == tensors_raw(b)


def test_recipe_matches_the_command_line(locus, setup, tmp_path):
    """A config with `semantics: locus` names the method and its parameters as `--methods` does; the merge,
    and the provenance's parameters, equal the command line's. Unknown keys are refused with their name."""
    tvs = setup["tvs"][:3]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base_model: {setup['base']}\nmodels:\n"
                      + "".join(f"  - model: {t}\n    parameters: {{weight: {w}}}\n" for t, w in zip(tvs, (1.0, -0.5, 2.0)))
                      + "semantics: locus\nmerge_method: dare_ties\nparameters: {drop_rate: 0.6, density: 0.3, seed: 3, lambda: 0.8, rescale: false}\n")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(locus("merge", "--config", recipe, "-o", a))
    assert_ok(run_merge(locus, setup["base"], tvs, {"method": "dare_ties", "drop_rate": 0.6, "density": 0.3, "seed": 3, "lambda": 0.8,
                                                    "rescale": False, "weight": [1.0, -0.5, 2.0]}, b))
    assert tensors_raw(a) == tensors_raw(b)
    prov = []
    for p in (a, b):
        with h5py.File(p) as f:
            prov.append(json.loads(f["provenance"][()].decode())["parameters"])
    assert prov[0].pop("config") == str(recipe)
    assert prov[0] == prov[1]
    assert prov[0]["method"] == "dare_ties" and prov[0]["weight"] == [1.0, -0.5, 2.0]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("drop_rate", "droprate"))
    r = locus("merge", "--config", bad, "-o", tmp_path / "c.h5")
    assert_error(r, bad)
    assert not (tmp_path / "c.h5").exists()
    assert "droprate" in r.err and "drop_rate" in r.err


# ------------------------------------------------------------------ provenance

def test_provenance_records_method_parameters_and_inputs(locus, setup, tmp_path):
    o = CONFIGS["dare-ties-global"]
    out = tmp_path / "m.h5"
    assert_ok(run_merge(locus, setup["base"], setup["tvs"][:2], o, out))
    with h5py.File(out) as f:
        prov = json.loads(f["provenance"][()].decode())
    p = prov["parameters"]
    assert p["method"] == "dare_ties" and p["lambda"] == 1 and p["drop_rate"] == 0.6 and p["seed"] == 3
    assert p["density"] == 0.3 and p["scope"] == "global" and p["rescale"] is True
    roles = [(i["role"], os.path.basename(i["path"])) for i in prov["inputs"]]
    assert roles == [("base", "base.h5"), ("task-vector", "tv0.h5"), ("task-vector", "tv1.h5")]
    assert prov["inputs"][0]["fingerprint"] == locus_h5.fingerprint(setup["base"])
    assert prov["command"][:2] == ["locus", "merge"]


# ------------------------------------------------------------------ 4. α search

@pytest.fixture(scope="module")
def two_tasks(locus, tmp_path_factory):
    """digits → two 5-class tasks; MLP pre-trained 1 epoch on all digits; linear-probe heads t1, t2;
    TaLoS masks (30 %); sparse fine-tuning writes τ1, τ2 (with task-head / task-accuracy)."""
    d = tmp_path_factory.mktemp("alpha")
    make_two_digit_tasks(locus, d)
    return d


def test_alpha_search(locus, two_tasks, tmp_path):
    d = two_tasks
    out, aj, svg = tmp_path / "merged.h5", tmp_path / "alpha.json", tmp_path / "alpha.svg"
    r = assert_ok(locus("merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "--alpha-grid", "0:1:0.25",
                        "--eval", d / "d1.h5", d / "d2.h5", "--alpha-json", aj, "--plot", svg, "-o", out))
    j = json.loads(aj.read_text())
    alphas = [row["alpha"] for row in j["rows"]]
    assert alphas == [0, 0.25, 0.5, 0.75, 1.0]
    assert j["heads"] == ["t1", "t2"]
    # own accuracy = the vectors' task-accuracy attribute
    for i, t in enumerate(("tau1", "tau2")):
        with h5py.File(d / f"{t}.h5") as f:
            assert f.attrs["task-head"] == f"t{i + 1}"
            assert j["own_accuracy"][i] == pytest.approx(float(f.attrs["task-accuracy"]), abs=1e-12)
    # recompute the normalized averages and the pick in Python (first α wins ties)
    avg = []
    for row in j["rows"]:
        norm = [a / o for a, o in zip(row["accuracies"], j["own_accuracy"])]
        assert row["normalized"] == pytest.approx(norm, abs=1e-12)
        assert row["averageNormalized"] == pytest.approx(sum(norm) / 2, abs=1e-12)
        assert row["averageAbsolute"] == pytest.approx(sum(row["accuracies"]) / 2, abs=1e-12)
        avg.append(sum(norm) / 2)
    best = alphas[int(np.argmax(avg))]
    assert j["best_alpha"] == best
    STATS["alpha-search"] = {"alphas": alphas, "avg_norm": avg, "best": best}
    # the table
    lines = r.out.splitlines()
    assert lines[0].startswith("α") and "avg norm" in lines[0]
    assert lines[1].startswith("own")
    rows = [ln for ln in lines[2:7]]
    for ln, a, row in zip(rows, alphas, j["rows"]):
        assert float(ln.split()[0]) == a
        assert float(ln.split()[-1 if "best" not in ln else -3]) == pytest.approx(row["averageNormalized"], abs=6e-5)
    assert [("← best" in ln) for ln in rows] == [a == best for a in alphas]
    # SVG: well-formed, one polyline per task + two averages, one point per α
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    polys = root.findall(f"{ns}polyline")
    assert len(polys) == 4
    for pl in polys:
        assert len(pl.attrib["points"].split()) == 5
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "tau1" in texts and "tau2" in texts and "average normalized" in texts
    # the output is θ0 + best·(τ1 + τ2) and its provenance says λ = best
    with h5py.File(out) as f:
        prov = json.loads(f["provenance"][()].decode())
    assert prov["parameters"]["lambda"] == best
    assert [row["alpha"] for row in prov["parameters"]["alpha_search"]] == alphas
    want = ref.merge(d / "base.h5", [d / "tau1.h5", d / "tau2.h5"], {"method": "task_arithmetic", "lambda": best})
    compare(out, want["tensors"], "alpha-output")
    # and the chosen α's accuracies are what `locus eval` reports for the output (the table is not made up)
    k = alphas.index(best)
    for i, (data, head) in enumerate(((d / "d1.h5", "t1"), (d / "d2.h5", "t2"))):
        e = assert_ok(locus("eval", out, data, "--head", head, "--split", "val", "--json"))
        (rep,) = json.loads(e.out)
        assert rep["head"] == head
        assert rep["accuracy"] == pytest.approx(j["rows"][k]["accuracies"][i], abs=1e-9)


def test_alpha_grid_with_a_nonzero_start(locus, two_tasks, tmp_path):
    """--alpha-grid a:b:step must give a, a+step, …, b for any a (not only a = 0)."""
    d = two_tasks
    aj = tmp_path / "alpha.json"
    assert_ok(locus("merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "--alpha-grid", "0.5:1:0.25",
                    "--eval", d / "d1.h5", d / "d2.h5", "--alpha-json", aj, "-o", tmp_path / "m.h5"))
    alphas = [row["alpha"] for row in json.loads(aj.read_text())["rows"]]
    assert alphas == [0.5, 0.75, 1.0]


def test_alpha_search_needs_one_dataset_per_vector(locus, two_tasks, tmp_path):
    d = two_tasks
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "--alpha-grid", "0:1:0.5", "--eval", d / "d1.h5"],
                   tmp_path, out, out)
