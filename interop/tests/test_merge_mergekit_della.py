"""`locus merge --config` with mergekit's `della`, `della_linear` and base-less `nuslerp`, against the
installed mergekit (its `run_merge` on small Llama models, or its method functions on tensors of rank
1 to 4) and the numpy reference (merge_ref.py).

DELLA's drop is random: mergekit draws with torch's generator, Locus with its own seeded one. The
deterministic parts are compared exactly:

- the keep probabilities: mergekit's own `della_magprune` computes them (captured from its
  `torch.bernoulli`) and they equal the numpy port of its formula (float32, ranks along axis 1);
- the whole merge with the same draws: mergekit's `della_magprune` runs with its `torch.bernoulli`
  replaced by the mask Locus's documented draws give for mergekit's own probabilities (u < p, one
  draw per non-zero δ entry in index order), so a wrong rank, axis, window, L1 rescale, weight,
  election or normalization shows as a difference (≤ 1e-6 of the tensor's largest value);
- density 1 (nothing dropped) and density 0 (everything dropped) against unpatched mergekit.

nuslerp without `base_model` interpolates the two models' full weights; compared with unpatched
mergekit for the whole tensor (`nuslerp_flatten`, mergekit's default), rows of the last axis and
slices along the first axis (`nuslerp_row_wise`), and the command line's two-model form against
mergekit's `nuslerp` function on tensors of rank 1 to 3. Bad inputs are refused before any output.
"""
import numpy as np
import pytest
import torch
import yaml
from mergekit import sparsify as mergekit_sparsify
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.merge_methods import registry
from mergekit.merge_methods.base import TensorGroup
from mergekit.merge_methods.nuslerp import nuslerp as mergekit_nuslerp
from mergekit.options import MergeOptions

import merge_ref as ref
from conftest import assert_error, assert_ok, locus_h5
from test_merge_mergekit import assert_same, llama, tensors  # noqa: F401  (llama is a fixture)


def fixed_magprune(deltas, seed):
    """mergekit's `della_magprune` whose `torch.bernoulli` returns the mask of Locus's draws for the
    probabilities mergekit computes; `deltas` maps (input, tensor name) to δ, to know whose δ it is."""
    original = mergekit_sparsify.della_magprune

    def magprune(tensor, density, epsilon, rescale_norm=None):
        a = tensor.numpy()
        found = [key for key, d in deltas.items() if d.shape == a.shape and np.array_equal(d, a)]
        assert len(found) == 1, "δ not recognised"
        vector, name = found[0]
        units = ref.mergekit_della_units(a, name, vector, seed)
        real = torch.bernoulli

        def bernoulli(probs, *args, **kwargs):
            return (torch.from_numpy(units.reshape(probs.shape)) < probs.double()).to(probs.dtype)

        torch.bernoulli = bernoulli
        try:
            return original(tensor, density, epsilon, rescale_norm)
        finally:
            torch.bernoulli = real
    return magprune


def run_both(locus, llama, tmp_path, config, seed=0, fixed=True):
    """mergekit's run_merge and `locus merge --config` on `config` (paths relative to the llama folder)."""
    absolute = dict(config, models=[dict(m, model=str(llama / m["model"])) for m in config["models"]])
    if "base_model" in config:
        absolute["base_model"] = str(llama / config["base_model"])
    text = yaml.safe_dump(absolute)
    (tmp_path / "c.yml").write_text(text)
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    original = mergekit_sparsify.della_magprune
    if fixed:
        base = tensors(llama / config["base_model"])
        inputs = [m["model"] for m in config["models"] if m["model"] != config["base_model"]]
        deltas = {(i, n): tensors(llama / m)[n] - base[n] for i, m in enumerate(inputs) for n in base}
        mergekit_sparsify.della_magprune = fixed_magprune(deltas, seed)
    try:
        run_merge(cfg, str(tmp_path / "mk"), MergeOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=True, quiet=True))
    finally:
        mergekit_sparsify.della_magprune = original
    r = assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", f"{tmp_path}/lo/"))
    return tensors(tmp_path / "mk"), tensors(tmp_path / "lo"), r


# ------------------------------------------------------------------ keep probabilities

@pytest.mark.parametrize("shape", [(40,), (6, 30), (3, 7, 4), (2, 5, 3, 2)])
def test_keep_probabilities_of_the_reference_are_mergekits(monkeypatch, shape):
    rng = np.random.default_rng(sum(shape))
    delta = rng.standard_normal(shape).astype(np.float32)
    delta[rng.random(shape) < 0.3] = 0
    density, epsilon = 0.45, 0.2
    seen = []

    def bernoulli(probs, *args, **kwargs):
        seen.append(probs.clone())
        return torch.ones_like(probs)

    monkeypatch.setattr(torch, "bernoulli", bernoulli)
    kept = mergekit_sparsify.della_magprune(torch.from_numpy(delta), density, epsilon, None)
    assert len(seen) == 1 and np.array_equal(kept.numpy(), delta)
    want = seen[0].numpy().reshape(shape)
    got = ref.mergekit_della_probabilities(delta, density, epsilon)
    nz = delta != 0                       # the zeros' ranks among themselves are torch's sort order, and they stay zero
    np.testing.assert_array_equal(got[nz], want[nz])
    assert got.dtype == want.dtype == np.float32
    assert abs(float(got[nz].min()) - (density - epsilon)) < 0.2 and got[nz].max() <= density + epsilon + 1e-6


# ------------------------------------------------------------------ della configs, end to end

DELLA = {
    "della-defaults": {
        "merge_method": "della",
        "models": [{"model": "ft0", "parameters": {"weight": 1.0, "density": 0.5}},
                   {"model": "ft1", "parameters": {"weight": 0.5, "density": 0.4}}]},
    "della-shared-parameters": {
        "merge_method": "della",
        "models": [{"model": "base"}, {"model": "ft0", "parameters": {"weight": 0.6, "epsilon": 0.3}},
                   {"model": "ft1", "parameters": {"weight": 1.5}}, {"model": "ft2", "parameters": {"weight": -0.4}}],
        "parameters": {"density": 0.6, "epsilon": 0.1, "lambda": 0.8, "normalize": False, "seed": 5}},
    "della-filters-gradients": {
        "merge_method": "della",
        "models": [{"model": "ft0", "parameters": {"weight": [0.2, 1.0],
                                                   "density": [{"filter": "self_attn", "value": 0.3}, {"value": [0.7, 0.4]}]}},
                   {"model": "ft1", "parameters": {"weight": 1.0, "density": 0.5, "epsilon": [0.05, 0.25]}}],
        "parameters": {"rescale": False, "seed": 17}},
    "della-linear": {
        "merge_method": "della_linear",
        "models": [{"model": "ft0", "parameters": {"weight": 0.7, "density": 0.55}},
                   {"model": "ft1", "parameters": {"weight": 0.3, "density": 0.35, "epsilon": 0.05}}],
        "parameters": {"lambda": 1.2}},
    "della-linear-normalize-no-rescale": {
        "merge_method": "della_linear",
        "models": [{"model": "ft0", "parameters": {"weight": 2.0}}, {"model": "ft1", "parameters": {"weight": 1.0}},
                   {"model": "ft2", "parameters": {"weight": 1.0, "density": 0.7}}],
        "parameters": {"density": 0.3, "epsilon": 0.2, "normalize": True, "rescale": False, "seed": 3}},
}


@pytest.mark.parametrize("name", DELLA)
def test_della_config_matches_mergekit_with_the_same_draws(locus, llama, tmp_path, name):
    config = dict(DELLA[name], dtype="float32", base_model="base")
    seed = config.get("parameters", {}).get("seed", 0)
    want, got, r = run_both(locus, llama, tmp_path, config, seed=seed)
    assert "warning" not in r.err, r.err
    assert_same(want, got, tensors(llama / "base"))
    # Something was dropped: the merge is not the plain weighted sum of the deltas.
    base = tensors(llama / "base")
    n = "model.layers.1.mlp.up_proj.weight"
    plain = sum(tensors(llama / m["model"])[n] - base[n] for m in config["models"] if m["model"] != "base")
    assert (np.abs(got[n] - base[n] - plain) > 1e-4).mean() > 0.2


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_density_1_and_0_match_unpatched_mergekit(locus, llama, tmp_path, method):
    """density 1 keeps δ, density 0 drops it: no draws, mergekit runs as installed."""
    config = {"merge_method": method, "base_model": "base", "dtype": "float32",
              "models": [{"model": "ft0", "parameters": {"weight": 0.8, "density": 1.0}},
                         {"model": "ft1", "parameters": {"weight": 1.3, "density": [{"filter": "mlp", "value": 0.0}, {"value": 1.0}]}},
                         {"model": "ft2", "parameters": {"weight": 0.5}}],
              "parameters": {"lambda": 0.9}}
    want, got, _ = run_both(locus, llama, tmp_path, config, fixed=False)
    assert_same(want, got, tensors(llama / "base"))


def test_della_on_tensors_of_rank_1_to_4_matches_mergekits_method(locus, tmp_path):
    """mergekit ranks along the second axis (each slice along axis 1 of a tensor of rank ≥ 3) and a vector
    whole; its `della` method on each tensor group, with the same draws, against `locus merge --config`."""
    rng = np.random.default_rng(41)
    shapes = {"a.weight": (6, 20), "b.bias": (50,), "c.weight": (4, 9, 5), "d.weight": (3, 6, 2, 4)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    fts = []
    for _ in range(2):
        ft = {}
        for n, s in shapes.items():
            d = (rng.standard_normal(s) * 0.1).astype(np.float32)
            d[rng.random(s) < 0.2] = 0
            ft[n] = base[n] + d
        fts.append(ft)
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    for i, ft in enumerate(fts):
        locus_h5.write_checkpoint(tmp_path / f"ft{i}.h5", ft)
    (tmp_path / "c.yml").write_text(
        "merge_method: della\nbase_model: base.h5\nmodels:\n"
        "  - model: ft0.h5\n    parameters: {weight: 1.0, density: 0.5, epsilon: 0.3}\n"
        "  - model: ft1.h5\n    parameters: {weight: 0.6, density: 0.4}\n"
        "parameters: {lambda: 0.9, seed: 23}\n")
    out = tmp_path / "m.h5"
    assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", out))
    got = ref.read_checkpoint(out)
    deltas = {(i, n): fts[i][n] - base[n] for i in range(2) for n in shapes}
    original = mergekit_sparsify.della_magprune
    mergekit_sparsify.della_magprune = fixed_magprune(deltas, 23)
    try:
        for n in shapes:
            group = TensorGroup.from_tensors([torch.from_numpy(base[n])] + [torch.from_numpy(ft[n]) for ft in fts], base_index=0)
            want = registry.get("della").merge_group(group, density={1: 0.5, 2: 0.4}, epsilon={1: 0.3, 2: 0.15}, weight={1: 1.0, 2: 0.6},
                                                     normalize=True, rescale=True, int8_mask=False, **{"lambda": 0.9}).numpy()
            np.testing.assert_allclose(got[n]["value"], want.astype(np.float64), rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=n)
    finally:
        mergekit_sparsify.della_magprune = original


# ------------------------------------------------------------------ nuslerp without a base

NUSLERP = {
    "flatten": {"models": [{"model": "ft0", "parameters": {"weight": 0.3}}, {"model": "ft1", "parameters": {"weight": 0.9}}]},
    "rows": {"models": [{"model": "ft1", "parameters": {"weight": [0.2, 1.0]}}, {"model": "ft2", "parameters": {"weight": 0.5}}],
             "parameters": {"nuslerp_flatten": False}},
    "row-wise": {"models": [{"model": "ft0", "parameters": {"weight": 1.0}}, {"model": "ft2", "parameters": {"weight": 2.0}}],
                 "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}},
    "weights-summing-to-0": {"models": [{"model": "ft0", "parameters": {"weight": 1.0}}, {"model": "ft1", "parameters": {"weight": -1.0}}],
                             "parameters": {"nuslerp_flatten": False}},
}


@pytest.mark.parametrize("name", NUSLERP)
def test_nuslerp_without_base_matches_mergekit(locus, llama, tmp_path, name):
    config = dict(NUSLERP[name], merge_method="nuslerp", dtype="float32")
    want, got, r = run_both(locus, llama, tmp_path, config, fixed=False)
    assert "warning" not in r.err, r.err
    a, b = tensors(llama / config["models"][0]["model"]), tensors(llama / config["models"][1]["model"])
    assert_same(want, got, a)
    assert all(not np.array_equal(got[n], b[n]) for n in got)


def test_nuslerp_of_two_models_on_the_command_line_matches_mergekits_function(locus, tmp_path):
    rng = np.random.default_rng(43)
    shapes = {"m": (7, 12), "v": (30,), "t": (3, 4, 5), "near": (5, 6)}
    a = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    b = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    b["near"] = (a["near"] * 1.5).astype(np.float32)          # parallel: the linear interpolation
    locus_h5.write_checkpoint(tmp_path / "a.h5", a)
    locus_h5.write_checkpoint(tmp_path / "b.h5", b)
    w = (0.3, 0.9)
    for flags, dim, flatten in [((), -1, True), (("--no-nuslerp-flatten",), -1, False),
                                (("--no-nuslerp-flatten", "--nuslerp-row-wise"), 0, False)]:
        out = tmp_path / f"m{len(flags)}.h5"
        r = assert_ok(locus("merge", "--method", "nuslerp", tmp_path / "a.h5", tmp_path / "b.h5", "--weight=0.3,0.9", *flags, "-o", out))
        assert "of 2 models" in r.out, r.out
        got = ref.read_checkpoint(out)
        for n in shapes:
            x, y = torch.from_numpy(a[n].astype(np.float64)), torch.from_numpy(b[n].astype(np.float64))
            want = mergekit_nuslerp(w[1] / sum(w), x, y, dim=dim, flatten=flatten).numpy()
            np.testing.assert_allclose(got[n]["value"], want, rtol=0, atol=1e-6 * np.abs(want).max(), err_msg=f"{n} {flags}")


# ------------------------------------------------------------------ bad input

def write(tmp_path, text):
    (tmp_path / "c.yml").write_text(text)
    return tmp_path / "c.yml"


BAD = {
    "della-epsilon-window": ("merge_method: della\nbase_model: {d}/base\nmodels:\n  - model: {d}/ft0\n    parameters: {{weight: 1.0, density: 0.1}}\n",
                             "density ± epsilon inside (0, 1)"),
    "della-window-per-tensor": ("merge_method: della_linear\nbase_model: {d}/base\nmodels:\n  - model: {d}/ft0\n"
                                "    parameters: {{weight: 1.0, density: [{{filter: mlp, value: 0.9}}, {{value: 0.5}}]}}\n",
                                "tensor 'model.layers.0.mlp"),
    "nuslerp-three-models": ("merge_method: nuslerp\nmodels:\n" + "".join(f"  - model: {{d}}/ft{i}\n    parameters: {{{{weight: 1.0}}}}\n" for i in range(3)),
                             "exactly 2 models, got 3"),
    "nuslerp-one-model": ("merge_method: nuslerp\nmodels:\n  - model: {d}/ft0\n    parameters: {{weight: 1.0}}\n", "exactly 2 models, got 1"),
    "nuslerp-no-weight": ("merge_method: nuslerp\nmodels:\n  - model: {d}/ft0\n  - model: {d}/ft1\n", "no weight"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_configs_are_refused_before_any_output(locus, llama, tmp_path, name):
    text, mention = BAD[name]
    config = write(tmp_path, text.format(d=llama))
    out = tmp_path / "out"
    r = locus("merge", "--config", config, "-o", f"{out}/")
    assert_error(r, config)
    assert mention in r.err, r.err
    assert not out.exists()
    if name == "della-epsilon-window":      # mergekit refuses it too
        cfg = MergeConfiguration.model_validate(yaml.safe_load(config.read_text()))
        with pytest.raises(Exception, match="Epsilon"):
            run_merge(cfg, str(tmp_path / "mk"), MergeOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=True, quiet=True))


def test_della_refuses_a_tensor_it_cannot_rank_and_nuslerp_a_task_vector(locus, tmp_path):
    rng = np.random.default_rng(5)
    shapes = {"w": (4, 6), "column": (5, 1)}
    base = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    ft = {n: v + 0.1 for n, v in base.items()}
    locus_h5.write_checkpoint(tmp_path / "base.h5", base)
    locus_h5.write_checkpoint(tmp_path / "ft.h5", ft)
    config = write(tmp_path, "merge_method: della\nbase_model: base.h5\nmodels:\n  - model: ft.h5\n    parameters: {weight: 1.0, density: 0.5}\n")
    r = locus("merge", "--config", config, "-o", tmp_path / "out.h5")
    assert_error(r, config)
    assert "'column'" in r.err and "exclude it" in r.err, r.err
    assert not (tmp_path / "out.h5").exists()
    # Excluded, it is copied from the base and the rest merges.
    config.write_text(config.read_text() + "exclude: [column]\n")
    assert_ok(locus("merge", "--config", config, "-o", tmp_path / "out.h5"))
    assert np.array_equal(ref.read_checkpoint(tmp_path / "out.h5")["column"]["value"], base["column"])
    # A model and a task vector are not two models: read as BASE and one task vector, which nuslerp refuses.
    assert_ok(locus("diff", tmp_path / "base.h5", tmp_path / "ft.h5", "-o", tmp_path / "tv.h5"))
    r = locus("merge", "--method", "nuslerp", tmp_path / "base.h5", tmp_path / "tv.h5", "-o", tmp_path / "n.h5")
    assert_error(r, tmp_path / "n.h5")
    assert "exactly 2 task vectors" in r.err, r.err
    assert not (tmp_path / "n.h5").exists()
