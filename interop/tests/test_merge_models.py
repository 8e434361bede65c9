"""`locus merge` of full models (no base, no task vectors) checked against numpy (merge_ref.py):
linear (weighted average, Wortsman et al., 2022) and slerp (Shoemake, 1985, per tensor, with the
linear fallback for nearly parallel tensors). Models of one architecture are made with h5py
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


# ------------------------------------------------------------------ slerp

@pytest.mark.parametrize("o", [{"method": "slerp"}, {"method": "slerp", "t": 0.3}, {"method": "slerp", "t": 0.85, "dtype": "float32"}],
                         ids=["default", "t0.3", "t0.85-float32"])
def test_slerp_matches_numpy(locus, models, tmp_path, o):
    out = tmp_path / "m.h5"
    assert_ok(run(locus, models[:2], o, out))
    compare(out, ref.merge_models(models[:2], o)["tensors"], "slerp")


@pytest.mark.parametrize("t,which", [(0, 0), (1, 1)])
def test_slerp_ends_are_the_models(locus, models, tmp_path, t, which):
    """t = 0 is the first model and t = 1 the second, bit for bit (sin Ω / sin Ω = 1, sin 0 = 0)."""
    out = tmp_path / "m.h5"
    assert_ok(run(locus, models[:2], {"method": "slerp", "t": t}, out))
    got, want = ref.read_checkpoint(out), ref.read_checkpoint(models[which])
    for name in BASE_SPEC:
        if BASE_SPEC[name][0] in ref.FLOATS:
            assert got[name]["raw"] == want[name]["raw"], name


def test_slerp_of_parallel_tensors_falls_back_to_linear(locus, tmp_path):
    """|cos Ω| > 0.9995: 2·a (parallel), −a (opposite) and a + tiny noise are interpolated linearly, as
    mergekit does (the spherical formula divides by sin Ω ≈ 0); a tensor at 90° is interpolated on the
    circle, so its norm stays that of the inputs instead of shrinking."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((8, 16)).astype(np.float32)
    b = rng.standard_normal((8, 16)).astype(np.float32)
    ortho = b - (np.sum(a.astype(np.float64) * b) / np.sum(a.astype(np.float64) ** 2)) * a
    ortho = (ortho * np.linalg.norm(a) / np.linalg.norm(ortho)).astype(np.float32)
    noise = (a + 1e-4 * rng.standard_normal(a.shape)).astype(np.float32)
    m0, m1 = tmp_path / "a.h5", tmp_path / "b.h5"
    locus_h5.write_checkpoint(m0, {"double": a, "opposite": a, "near": a, "ortho": a})
    locus_h5.write_checkpoint(m1, {"double": 2 * a, "opposite": -a, "near": noise, "ortho": ortho})
    out = tmp_path / "m.h5"
    t = 0.25
    assert_ok(run(locus, [m0, m1], {"method": "slerp", "t": t}, out))
    got = {k: v["value"] for k, v in ref.read_checkpoint(out).items()}
    a64 = a.astype(np.float64)
    np.testing.assert_allclose(got["double"], 1.25 * a64, rtol=1e-6)
    np.testing.assert_allclose(got["opposite"], 0.5 * a64, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got["near"], 0.75 * a64 + 0.25 * noise.astype(np.float64), rtol=1e-6, atol=1e-7)
    lerp = 0.75 * a64 + 0.25 * ortho.astype(np.float64)
    assert np.linalg.norm(got["ortho"]) == pytest.approx(np.linalg.norm(a64), rel=1e-5)
    assert np.linalg.norm(lerp) < 0.8 * np.linalg.norm(a64)
    np.testing.assert_allclose(got["ortho"], math_slerp(a64, ortho.astype(np.float64), t), rtol=1e-5, atol=1e-6)


def math_slerp(a, b, t):
    """Slerp of two orthogonal vectors of equal norm: cos(tπ/2)·a + sin(tπ/2)·b."""
    return np.cos(t * np.pi / 2) * a + np.sin(t * np.pi / 2) * b


@pytest.mark.parametrize("count,args,mention", [(3, [], "exactly 2 models"), (1, [], "exactly 2 models"),
                                                 (2, ["--t=1.5"], "t must be in [0, 1]"), (2, ["--weight=1,2"], "not a parameter of slerp")],
                         ids=["three", "one", "t-range", "weight"])
def test_bad_slerp_inputs_are_refused(locus, models, tmp_path, count, args, mention):
    out = tmp_path / "m.h5"
    expect_refusal(locus, ["merge", *models[:count], "--method", "slerp", *args], tmp_path, out, out, mention=(mention,))


def test_slerp_recipe_puts_base_model_first(locus, models, tmp_path):
    """As in mergekit, a slerp recipe's base_model is one of the models and is the t = 0 end."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base_model: {models[1]}\nmodels:\n  - model: {models[0]}\n  - model: {models[1]}\n"
                      "merge_method: slerp\nparameters: {t: 0.0}\n")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", "--config", recipe, "-o", out))
    got, want = ref.read_checkpoint(out), ref.read_checkpoint(models[1])
    assert all(got[n]["raw"] == want[n]["raw"] for n in want)
