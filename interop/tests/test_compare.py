"""`locus compare` against numpy: mask overlap (Jaccard, selected-by-k, per tensor) and task-vector
similarity (cosine, norms, sign conflicts), on files written by the reference writer (locus_h5),
with absent tensors, scales, float64 values, every encoding; plus the SVG heatmap and bad input."""
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import locus_h5
from conftest import assert_error, assert_ok

SHAPES = {"blocks.0.w": (7, 13), "blocks.0.b": (13,), "head": (3, 5, 4), "s": ()}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(3)
    p = d / "base.h5"
    locus_h5.write_checkpoint(p, {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()})
    return d, p


def full_masks(masks, absent, shapes):
    return {n: np.asarray(masks[n], bool) if n in masks else np.full(s, absent == "trainable") for n, s in shapes.items()}


def test_masks_match_numpy(locus, base):
    d, b = base
    rng = np.random.default_rng(5)
    specs = [({n: rng.random(s) < p for n, s in SHAPES.items()}, "frozen") for p in (0.1, 0.3)]
    specs.append(({n: rng.random(s) < 0.5 for n, s in SHAPES.items() if n != "head"}, "trainable"))   # 'head' absent: all ones
    specs.append(({"blocks.0.w": np.zeros(SHAPES["blocks.0.w"], bool)}, "frozen"))                    # nearly empty
    paths = []
    for i, (m, absent) in enumerate(specs):
        p = d / f"m{i}.h5"
        locus_h5.write_mask(p, m, base=b, absent_tensors=absent)
        paths.append(p)
    r = json.loads(assert_ok(locus("compare", *paths, "--json")).out)
    full = [full_masks(m, a, SHAPES) for m, a in specs]
    names = sorted(SHAPES, key=lambda n: n.encode())
    flat = [np.concatenate([f[n].reshape(-1) for n in names]) for f in full]
    n = len(flat)
    inter = np.array([[int((flat[i] & flat[j]).sum()) for j in range(n)] for i in range(n)])
    union = np.array([[int((flat[i] | flat[j]).sum()) for j in range(n)] for i in range(n)])
    assert r["intersections"] == inter.tolist()
    np.testing.assert_allclose(r["jaccard"], np.where(union == 0, 1.0, inter / np.maximum(union, 1)), rtol=1e-12)
    k = np.sum(flat, axis=0)
    assert r["selectedBy"] == [int((k == j).sum()) for j in range(n + 1)]
    assert r["count"] == flat[0].size
    for row in r["tensors"]:
        ms = [f[row["name"]].reshape(-1) for f in full]
        assert row["ones"] == [int(m.sum()) for m in ms]
        assert row["selectedByAll"] == int(np.logical_and.reduce(ms).sum())
        js = [(ms[i] & ms[j]).sum() / max((ms[i] | ms[j]).sum(), 1) if (ms[i] | ms[j]).any() else 1.0
              for i in range(n) for j in range(i + 1, n)]
        assert row["meanJaccard"] == pytest.approx(np.mean(js), rel=1e-12)
    assert [row["name"] for row in r["tensors"]] == names
    text = assert_ok(locus("compare", *paths[:2])).out
    assert "Jaccard index" in text and "selected by k of 2" in text


def test_task_vectors_match_numpy(locus, base, tmp_path):
    d, b = base
    rng = np.random.default_rng(9)
    taus, paths = [], []
    for i, (density, scale, enc) in enumerate([(0.05, 1.0, None), (0.4, 0.5, "bitmask"), (1.0, -1.5, "dense"), (0.2, 2.0, "coo")]):
        tau = {}
        for n, s in SHAPES.items():
            v = rng.standard_normal(s) * (rng.random(s) < density)
            tau[n] = v.astype(np.float64 if n == "head" else np.float32)
        if i == 3:
            del tau["s"]                                             # absent: zero
        p = tmp_path / f"tv{i}.h5"
        locus_h5.write_task_vector(p, tau, base=b, scale=scale, encoding=enc,
                                   dtypes={"head": "float64"})
        taus.append({n: tau.get(n, np.zeros(SHAPES[n])).astype(np.float64) * scale for n in SHAPES})
        paths.append(p)
    r = json.loads(assert_ok(locus("compare", *paths, "--json")).out)
    names = sorted(SHAPES, key=lambda n: n.encode())
    flat = [np.concatenate([t[n].reshape(-1) for n in names]) for t in taus]
    norms = [np.linalg.norm(f) for f in flat]
    np.testing.assert_allclose(r["norms"], norms, rtol=1e-12)
    cos = [[flat[i] @ flat[j] / (norms[i] * norms[j]) for j in range(4)] for i in range(4)]
    np.testing.assert_allclose(r["cosine"], cos, rtol=1e-10, atol=1e-15)
    stack = np.stack(flat)
    nz = stack != 0
    both = nz.sum(0) >= 2
    conflict = both & (stack > 0).any(0) & (stack < 0).any(0)
    assert r["overlap"] == int(both.sum()) and r["signConflicts"] == int(conflict.sum())
    for row in r["tensors"]:
        s = np.stack([t[row["name"]].reshape(-1) for t in taus])
        bt = (s != 0).sum(0) >= 2
        assert row["overlap"] == int(bt.sum())
        assert row["signConflicts"] == int((bt & (s > 0).any(0) & (s < 0).any(0)).sum())
        np.testing.assert_allclose(row["norms"], np.linalg.norm(s, axis=1), rtol=1e-12)
    svg = tmp_path / "cos.svg"
    assert_ok(locus("compare", *paths, "--svg", svg))
    cells = [g for g in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "cell"]
    assert len(cells) == 16
    np.testing.assert_allclose(sorted(float(c.get("data-value")) for c in cells), sorted(np.ravel(cos)), rtol=1e-10, atol=1e-15)


def test_bad_input(locus, base, tmp_path):
    d, b = base
    locus_h5.write_mask(tmp_path / "m.h5", {"s": np.ones((), bool)}, base=b)
    locus_h5.write_task_vector(tmp_path / "t.h5", {"s": np.ones((), np.float32)}, base=b)
    other = tmp_path / "other.h5"
    locus_h5.write_checkpoint(other, {"s": np.zeros((), np.float32)})
    locus_h5.write_mask(tmp_path / "m2.h5", {"s": np.ones((), bool)}, base=other)
    assert_error(locus("compare", tmp_path / "m.h5", tmp_path / "t.h5"), tmp_path / "t.h5")            # kinds mixed
    assert_error(locus("compare", tmp_path / "m.h5", tmp_path / "m2.h5"), tmp_path / "m2.h5", "base-fingerprint")
    r = locus("compare", tmp_path / "m.h5")
    assert r.code != 0 and "at least two" in r.err
    locus_h5.write_mask(tmp_path / "m3.h5", {"s": np.ones((2,), bool)}, base=b)
    assert_error(locus("compare", tmp_path / "m.h5", tmp_path / "m3.h5"), tmp_path / "m3.h5")           # shapes differ
    assert not (tmp_path / "x.svg").exists()
