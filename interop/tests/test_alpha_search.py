"""Coefficient searches on validation data (docs/talos.md §Choosing α), checked against numpy and h5py:
`locus merge --alpha-mode` (per-task coefficients by coordinate and by seeded random search) and
`locus negate` (task negation with a control task, Ilharco et al., ICLR 2023, §3).

Each test recomputes from the JSON what the pick must be, rebuilds the written model in numpy from the
base and the task vectors, and has `locus eval` score the output, so neither the table nor the output is
taken on trust."""
import json
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

import merge_ref as ref
from conftest import assert_error, assert_ok, make_two_digit_tasks

NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def tasks(locus, tmp_path_factory):
    """digits → two 5-class tasks; an MLP pre-trained 1 epoch on all digits; linear-probed heads t1, t2;
    TaLoS masks (30 %); sparse fine-tuning writes τ1, τ2 (with task-head / task-accuracy)."""
    d = tmp_path_factory.mktemp("alpha")
    make_two_digit_tasks(locus, d)
    return d


def numpy_merge(base, taus, coefficients):
    """θ0 + Σ_t c_t · scale_t · τ_t in float64, per tensor (only tensors some vector touches)."""
    b = ref.read_checkpoint(base)
    out = {}
    for tau, c in zip(taus, coefficients):
        tv = ref.read_task_vector(tau)
        for name, t in tv["tensors"].items():
            v = out.setdefault(name, b[name]["value"].reshape(-1).copy())
            v[t["idx"]] += c * tv["scale"] * t["val"].astype(np.float64)
    return {k: v.reshape(b[k]["shape"]) for k, v in out.items()}


def assert_written(out, want):
    got = ref.read_checkpoint(out)
    for name, w in want.items():
        np.testing.assert_allclose(got[name]["value"], w, rtol=1e-6, atol=1e-6, err_msg=name)


def val_accuracy(locus, model, data, head):
    (r,) = json.loads(assert_ok(locus("eval", model, data, "--head", head, "--split", "val", "--json")).out)
    return r["accuracy"]


@pytest.mark.parametrize("mode,spec", [("coordinate", "coordinate:2"), ("random", "random:10:3")])
def test_per_task_coefficients(locus, tasks, tmp_path, mode, spec):
    d = tasks
    out, aj, svg = tmp_path / "merged.h5", tmp_path / "alpha.json", tmp_path / "alpha.svg"
    grid = [0, 0.25, 0.5, 0.75, 1.0]
    r = assert_ok(locus("merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "--alpha-grid", "0:1:0.25", "--alpha-mode", spec,
                        "--eval", d / "d1.h5", d / "d2.h5", "--alpha-json", aj, "--plot", svg, "-o", out))
    j = json.loads(aj.read_text())
    assert j["strategy"] == mode and j["heads"] == ["t1", "t2"]
    rows = j["rows"]
    keys = [tuple(row["alphas"]) for row in rows]
    assert len(set(keys)) == len(keys), "a coefficient vector was evaluated twice"
    assert all(len(k) == 2 and all(a in grid for a in k) for k in keys)
    if mode == "coordinate":
        assert keys[:5] == [(a, a) for a in grid]          # the single-α pass comes first
        for k in keys[5:]:                                 # then one coordinate at a time
            assert any(sum(x != y for x, y in zip(k, p)) == 1 for p in keys), k
    else:
        assert len(rows) == 10
        again = tmp_path / "again.json"
        assert_ok(locus("merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "--alpha-grid", "0:1:0.25", "--alpha-mode", spec,
                        "--eval", d / "d1.h5", d / "d2.h5", "--alpha-json", again, "-o", tmp_path / "again.h5"))
        assert json.loads(again.read_text())["rows"] == rows   # seeded: the same draws
    # the pick, recomputed: best average normalized accuracy, the first evaluated on ties
    avg = []
    for row in rows:
        norm = [a / o for a, o in zip(row["accuracies"], j["own_accuracy"])]
        assert row["averageNormalized"] == pytest.approx(sum(norm) / 2, abs=1e-12)
        avg.append(sum(norm) / 2)
    best = rows[int(np.argmax(avg))]
    assert j["best_alphas"] == best["alphas"]
    assert sum("← best" in ln for ln in r.out.splitlines()) == 1
    # the output is θ0 + Σ α_t τ_t, recorded as per-vector weights with λ = 1
    with h5py.File(out) as f:
        prov = json.loads(f["provenance"][()].decode())
    assert prov["parameters"]["alpha_strategy"] == mode
    assert prov["parameters"]["lambda"] == 1
    assert_written(out, numpy_merge(d / "base.h5", [d / "tau1.h5", d / "tau2.h5"], best["alphas"]))
    for i, (data, head) in enumerate(((d / "d1.h5", "t1"), (d / "d2.h5", "t2"))):
        assert val_accuracy(locus, out, data, head) == pytest.approx(best["accuracies"][i], abs=1e-9)
    # the plot: each task, the average normalized and the best so far, one point per evaluation
    polys = ET.parse(svg).getroot().findall(f"{NS}polyline")
    assert len(polys) == 4 and all(len(p.attrib["points"].split()) == len(rows) for p in polys)


def test_negation_with_a_control_task(locus, tasks, tmp_path):
    d = tasks
    out, aj, svg = tmp_path / "neg.h5", tmp_path / "neg.json", tmp_path / "neg.svg"
    r = assert_ok(locus("negate", d / "base.h5", d / "tau2.h5", "--alpha-grid", "0:4:0.5", "--eval", d / "d2.h5",
                        "--control", d / "d1.h5", "--heads", "t2,t1", "--keep", "0.95", "--alpha-json", aj, "--plot", svg, "-o", out))
    j = json.loads(aj.read_text())
    assert j["head"] == "t2" and j["control_head"] == "t1"
    rows = j["rows"]
    assert [row["alpha"] for row in rows] == [-g for g in np.arange(0, 4.01, 0.5)]
    assert j["base_control_accuracy"] == pytest.approx(val_accuracy(locus, d / "base.h5", d / "d1.h5", "t1"), abs=1e-12)
    threshold = 0.95 * j["base_control_accuracy"]
    for row in rows:
        assert row["kept"] == (row["control"] >= threshold)
    kept = [row["alpha"] for row in rows if row["control"] >= threshold]
    assert j["best_alpha"] == min(kept)                    # the most negative α that keeps the control task
    best = next(row for row in rows if row["alpha"] == j["best_alpha"])
    assert "← best" in next(ln for ln in r.out.splitlines() if ln.startswith(str(best["alpha"])))
    with h5py.File(out) as f:
        assert json.loads(f["provenance"][()].decode())["parameters"]["lambda"] == best["alpha"]
    assert_written(out, numpy_merge(d / "base.h5", [d / "tau2.h5"], [best["alpha"]]))
    assert val_accuracy(locus, out, d / "d2.h5", "t2") == pytest.approx(best["target"], abs=1e-9)
    assert val_accuracy(locus, out, d / "d1.h5", "t1") == pytest.approx(best["control"], abs=1e-9)
    root = ET.parse(svg).getroot()
    assert len(root.findall(f"{NS}polyline")) == 2
    assert any(e.attrib.get("class") == "guide" for e in root.iter(f"{NS}line"))


def test_search_options_that_do_not_fit(locus, tasks, tmp_path):
    d = tasks
    out = tmp_path / "x.h5"
    merge = ["merge", d / "base.h5", d / "tau1.h5", d / "tau2.h5", "-o", out]
    negate = ["negate", d / "base.h5", d / "tau2.h5", "--eval", d / "d2.h5", "--control", d / "d1.h5", "-o", out]
    cases = [
        (merge + ["--alpha-grid", "0:1:0.5", "--eval", d / "d1.h5", d / "d2.h5", "--method", "ties", "--alpha-mode", "random"], "--alpha-mode"),
        (merge + ["--alpha-grid", "0:1:0.5", "--eval", d / "d1.h5", d / "d2.h5", "--alpha-mode", "coordinate:0"], "--alpha-mode"),
        (merge + ["--alpha-mode", "random"], "--alpha-grid"),
        (negate + ["--alpha-grid", "0:1:0.5", "--keep", "1.5"], "--keep"),
        (negate + ["--alpha-grid", "-1:1:0.5"], "--alpha-grid"),
        (negate, "--alpha-grid"),
        (negate + ["--alpha-grid", "0:1:0.5"], "--heads"),   # both heads have 5 classes: the control's must be named
    ]
    for args, flag in cases:
        r = locus(*args)
        assert r.code == 64, r                              # a usage error, before anything is written
        lines = [ln for ln in r.err.splitlines() if ln.strip()]
        assert len(lines) == 1 and flag in lines[0], r
        assert not out.exists()
