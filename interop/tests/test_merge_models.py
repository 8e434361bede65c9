"""`locus merge` of full models (no base, no task vectors) checked against numpy (merge_ref.py):
linear (weighted average, Wortsman et al., 2022). Models of one architecture are made with h5py
through locus_h5 (test_merge's mixed shapes and dtypes), each with other values.
"""
import json

import h5py
import numpy as np
import pytest

import merge_ref as ref
from conftest import assert_error, assert_ok, locus_h5, snapshot
from test_merge import BASE_SPEC, compare, make_base


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return [make_base(d / f"m{i}.h5", seed=10 + i) for i in range(3)]


def run(locus, paths, o, out):
    a = ["merge", *paths, "--method", o["method"]]
    for key, value in o.items():
        if key in ("method",):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            a.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            a.append(flag + "=" + ",".join(repr(float(w)) for w in value))
        else:
            a.append(f"{flag}={value}")
    return locus(*a, "-o", out)


LINEAR = {
    "uniform": {"method": "linear"},
    "weighted": {"method": "linear", "weight": [0.5, 2.0, 1.5]},
    "negative-weight": {"method": "linear", "weight": [1.0, -0.25, 0.5]},
    "no-normalize": {"method": "linear", "weight": [0.2, 0.3, -0.1], "normalize": False},
    "bfloat16-out": {"method": "linear", "weight": [1.0, 2.0, 3.0], "dtype": "bfloat16"},
}


@pytest.mark.parametrize("label", list(LINEAR))
def test_linear_matches_numpy(locus, models, tmp_path, label):
    o = LINEAR[label]
    out = tmp_path / "m.h5"
    assert_ok(run(locus, models, o, out))
    compare(out, ref.merge_models(models, o)["tensors"], label)


def test_linear_of_two_models_is_their_midpoint(locus, models, tmp_path):
    """Uniform weights over two models: every float32 entry is (a + b) / 2 rounded once, the integer and
    boolean tensors are the first model's."""
    out = tmp_path / "m.h5"
    assert_ok(run(locus, models[:2], {"method": "linear"}, out))
    got, a, b = (ref.read_checkpoint(p) for p in (out, *models[:2]))
    for name, (dtype, _) in BASE_SPEC.items():
        if dtype == "float32":
            want = ((a[name]["value"] + b[name]["value"]) / 2).astype(np.float32)
            np.testing.assert_array_equal(got[name]["value"], want.astype(np.float64), err_msg=name)
        elif dtype in ("int64", "bool"):
            assert got[name]["raw"] == a[name]["raw"], name


def test_linear_records_models_and_parameters(locus, models, tmp_path):
    out = tmp_path / "m.h5"
    assert_ok(run(locus, models, {"method": "linear", "weight": [1.0, 2.0, 3.0]}, out))
    with h5py.File(out) as f:
        prov = json.loads(f["provenance"][()].decode())
    assert prov["parameters"]["method"] == "linear" and prov["parameters"]["weight"] == [1.0, 2.0, 3.0]
    assert prov["parameters"]["normalize"] is True and "lambda" not in prov["parameters"]
    assert [i["role"] for i in prov["inputs"]] == ["model"] * 3
    assert prov["inputs"][1]["fingerprint"] == locus_h5.fingerprint(models[1])


def test_linear_recipe_equals_the_command_line(locus, models, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("models:\n" + "".join(f"  - model: {m}\n    parameters: {{weight: {w}}}\n" for m, w in zip(models, (1, 2, 3)))
                      + "merge_method: linear\nparameters: {normalize: true}\n")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert_ok(locus("merge", "--config", recipe, "-o", a))
    assert_ok(run(locus, models, {"method": "linear", "weight": [1.0, 2.0, 3.0]}, b))
    assert ref.read_checkpoint(a).keys() == ref.read_checkpoint(b).keys()
    assert all(x["raw"] == y["raw"] for x, y in zip(ref.read_checkpoint(a).values(), ref.read_checkpoint(b).values()))


def expect_refusal(locus, args, directory, out, file, mention=()):
    before = snapshot(directory)
    r = locus(*args, "-o", out)
    assert_error(r, file)
    for m in mention:
        assert m in r.err, f"{m!r} not in {r.err!r}"
    assert snapshot(directory) == before, f"left behind: {snapshot(directory) - before}"


def test_models_of_another_architecture_are_refused(locus, models, tmp_path):
    """Every problem at once: a tensor with another shape, a missing one, an extra one."""
    other = tmp_path / "other.h5"
    src = ref.read_checkpoint(models[1])
    t = {n: v["value"].astype(np.float32) for n, v in src.items() if v["dtype"] == "float32" and n != "mat"}
    t["vec"] = np.zeros(5, np.float32)
    t["extra"] = np.ones(3, np.float32)
    locus_h5.write_checkpoint(other, t)
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", models[0], other, "--method", "linear"], tmp_path, out, models[0],
                   mention=("'vec' has shape [5]", "'extra' is not in", "tensor 'bf.b' is missing"))


@pytest.mark.parametrize("args,mention", [
    (["--method", "linear", "--weight=1,-1,0"], "sum to 0"),
    (["--method", "linear", "--weight=1,2"], "2 weights for 3 inputs"),
    (["--method", "linear", "--lambda=0.5"], "not a parameter of linear"),
    (["--method", "linear", "--dtype", "int32"], "floating-point"),
], ids=["weights-sum-0", "weight-count", "lambda", "dtype"])
def test_bad_linear_parameters_are_refused(locus, models, tmp_path, args, mention):
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", *models, *args], tmp_path, out, out, mention=(mention,))
