"""Masks made from other files, against numpy: `locus mask-set` (union, intersection, difference,
with absent tensors of either rule) and `locus mask --from-task-vector` (top-k of |τ|, ties by
position, global and per tensor, every task-vector encoding). Outputs keep the base fingerprint,
name their inputs' fingerprints, validate, and bad input leaves no file."""
import json

import h5py
import numpy as np
import pytest

import locus_h5
from conftest import assert_error, assert_ok

SHAPES = {"blocks.0.w": (9, 13), "blocks.0.b": (13,), "head": (3, 5, 4), "s": ()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("maskops")
    rng = np.random.default_rng(11)
    p = d / "base.h5"
    locus_h5.write_checkpoint(p, {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()})
    return d, p


def mask_arrays(p):
    out = {}
    with h5py.File(p, "r") as f:
        for link, ds in f["tensors"].items():
            shape = tuple(int(x) for x in ds.attrs["shape"])
            n = int(ds.attrs["count"])
            out[locus_h5.unescape(link)] = np.unpackbits(ds[()], bitorder="little", count=n).astype(bool).reshape(shape)
        absent = f.attrs["absent-tensors"]
        absent = absent.decode() if isinstance(absent, bytes) else str(absent)
        base_fp = f.attrs["base-fingerprint"]
        base_fp = base_fp.decode() if isinstance(base_fp, bytes) else str(base_fp)
        prov = json.loads(f["provenance"][()].decode())
    return out, absent, base_fp, prov


@pytest.mark.parametrize("op", ["union", "intersection", "difference"])
@pytest.mark.parametrize("absent", ["frozen", "trainable"])
def test_mask_set_matches_numpy(locus, base, op, absent):
    d, b = base
    rng = np.random.default_rng({"union": 1, "intersection": 2, "difference": 3}[op])
    specs = [{n: rng.random(s) < p for n, s in SHAPES.items()} for p in (0.2, 0.5, 0.7)]
    del specs[1]["head"]      # absent from the second mask: counts as its rule
    paths = []
    for i, m in enumerate(specs):
        p = d / f"{op}-{absent}-{i}.h5"
        locus_h5.write_mask(p, m, base=b, absent_tensors=absent)
        paths.append(p)
    out = d / f"{op}-{absent}-out.h5"
    assert_ok(locus("mask-set", op, *paths, "-o", out))
    got, got_absent, base_fp, prov = mask_arrays(out)
    full = [{n: np.asarray(m[n]) if n in m else np.full(s, absent == "trainable") for n, s in SHAPES.items()} for m in specs]
    for n in SHAPES:
        stack = np.stack([np.asarray(f[n], bool) for f in full])
        want = {"union": stack.any(0), "intersection": stack.all(0), "difference": stack[0] & ~stack[1:].any(0)}[op]
        np.testing.assert_array_equal(got[n], want, err_msg=f"{op} {n}")
    assert got_absent == absent
    assert base_fp == locus_h5.fingerprint(b)
    assert [i["fingerprint"] for i in prov["inputs"]] == [locus_h5.mask_fingerprint(p) for p in paths]
    assert prov["parameters"]["operation"] == op
    assert_ok(locus("validate", out))


def test_mask_set_refuses_other_bases_and_rules(locus, base, tmp_path):
    d, b = base
    other = tmp_path / "other.h5"
    locus_h5.write_checkpoint(other, {n: np.ones(s, np.float32) for n, s in SHAPES.items()})
    m = {n: np.ones(s, bool) for n, s in SHAPES.items()}
    a, c, t = tmp_path / "a.h5", tmp_path / "c.h5", tmp_path / "t.h5"
    locus_h5.write_mask(a, m, base=b)
    locus_h5.write_mask(c, m, base=other)
    locus_h5.write_mask(t, m, base=b, absent_tensors="trainable")
    out = tmp_path / "out.h5"
    assert_error(locus("mask-set", "union", a, c, "-o", out), c, "/@base-fingerprint")
    assert_error(locus("mask-set", "union", a, t, "-o", out), t, "/@absent-tensors")
    assert_error(locus("mask-set", "union", a, a, "-o", a), a)
    assert locus("mask-set", "union", a, "-o", out).code != 0
    assert not out.exists()


def reference_topk(tau, density, scope):
    """numpy: the ⌊d·n⌋ entries of largest |τ| in tensor order then flat order, ties by position."""
    names = sorted(tau, key=lambda n: n.encode("utf-8"))
    def pick(keys, k):
        order = np.lexsort((np.arange(keys.size), -keys))    # |τ| descending, then position
        sel = np.zeros(keys.size, bool)
        sel[order[:k]] = True
        return sel
    if scope == "global":
        keys = np.concatenate([np.abs(np.asarray(tau[n], np.float64)).reshape(-1) for n in names])
        sel = pick(keys, int(density * keys.size))
        out, at = {}, 0
        for n in names:
            size = np.asarray(tau[n]).size
            out[n] = sel[at:at + size].reshape(np.shape(tau[n])); at += size
        return out
    return {n: pick(np.abs(np.asarray(tau[n], np.float64)).reshape(-1), int(density * np.asarray(tau[n]).size)).reshape(np.shape(tau[n]))
            for n in names}


@pytest.mark.parametrize("scope", ["global", "local"])
@pytest.mark.parametrize("encoding", ["coo", "bitmask", "dense"])
def test_mask_from_task_vector_matches_numpy(locus, base, scope, encoding):
    d, b = base
    rng = np.random.default_rng(7)
    tau = {}
    for n, s in SHAPES.items():
        v = rng.standard_normal(s).astype(np.float32) * (rng.random(s) < 0.6)
        v = np.where(rng.random(s) < 0.1, np.float32(0.5), v)       # ties at 0.5 go by position
        tau[n] = v.astype(np.float32)
    tv = d / f"tau-{encoding}.h5"
    locus_h5.write_task_vector(tv, tau, base=b, scale=1.0, encoding=encoding)
    for density in (0.05, 0.3, 0.9):           # 0.9 reaches the zeros: they tie, by position
        out = d / f"lota-{scope}-{encoding}-{density}.h5"
        flags = ["--scope", scope] if scope == "local" else []
        assert_ok(locus("mask", b, "--from-task-vector", tv, "--density", density, "-o", out, *flags))
        got, absent, base_fp, prov = mask_arrays(out)
        want = reference_topk(tau, density, scope)
        for n in SHAPES:
            np.testing.assert_array_equal(got[n], want[n], err_msg=f"{scope} {encoding} {density} {n}")
        assert base_fp == locus_h5.fingerprint(b) and absent == "frozen"
        assert_ok(locus("validate", out))


def test_mask_from_task_vector_scale_and_bad_input(locus, base, tmp_path):
    d, b = base
    rng = np.random.default_rng(8)
    tau = {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}
    tv = tmp_path / "tau.h5"
    locus_h5.write_task_vector(tv, tau, base=b, scale=-2.0)   # the scale multiplies every |τ| alike
    out = tmp_path / "m.h5"
    assert_ok(locus("mask", b, "--from-task-vector", tv, "--density", 0.25, "-o", out))
    got, *_ = mask_arrays(out)
    want = reference_topk(tau, 0.25, "global")
    for n in SHAPES:
        np.testing.assert_array_equal(got[n], want[n])
    other = tmp_path / "other.h5"
    locus_h5.write_checkpoint(other, {n: np.ones(s, np.float32) for n, s in SHAPES.items()})
    bad = tmp_path / "bad.h5"
    assert_error(locus("mask", other, "--from-task-vector", tv, "--density", 0.1, "-o", bad), tv, "/@base-fingerprint")
    assert not bad.exists()
    assert locus("mask", b, "--from-task-vector", tv, "--density", 0.1, "--method", "random", "-o", bad).code != 0
    assert not bad.exists()
