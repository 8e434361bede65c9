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

The config tests run mergekit itself (`mergekit.merge.run_merge`, CPU, lazy loading) and
`locus merge --config` on the same YAML and the same small Llama models (Hugging Face folders made
by transformers), and compare every tensor: per-model weight and density, filters and gradients,
normalize true and false, for task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs,
breadcrumbs_ties, linear and slerp (mergekit's pipeline interpolates each tensor whole, as Locus
does; the per-tensor t of the config is a filter list of gradients). DARE's draws are random in mergekit; those cases either keep everything
(density 1) or replace mergekit's Bernoulli draws by Locus's (docs/talos.md §DARE, reimplemented in
merge_ref), keeping mergekit's masking and L1 rescaling.
"""
import numpy as np
import pytest
import torch
import yaml
from mergekit import sparsify as mergekit_sparsify
from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge
from mergekit.options import MergeOptions
from mergekit.merge_methods.generalized_task_arithmetic import get_mask
from mergekit.merge_methods.slerp import slerp as mergekit_slerp
from mergekit.sparsify import SparsificationMethod, sparsify

import merge_ref as ref
from conftest import assert_error, assert_ok, locus_h5
from safetensors.numpy import load_file


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


# ------------------------------------------------------------------ mergekit configs, end to end

LAYERS = 3


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny Llama base and three fine-tuned copies (every entry moved), as Hugging Face folders."""
    import transformers
    d = tmp_path_factory.mktemp("llama")
    cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=LAYERS,
                                   num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False,
                                   max_position_embeddings=32)
    torch.manual_seed(31)
    base = transformers.LlamaForCausalLM(cfg)
    base.save_pretrained(d / "base", safe_serialization=True)
    for i in range(3):
        m = transformers.LlamaForCausalLM(cfg)
        m.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.02)
        m.save_pretrained(d / f"ft{i}", safe_serialization=True)
    return d


def tensors(folder):
    return load_file(str(folder / "model.safetensors"))


def locus_dare(deltas, seed):
    """mergekit's `bernoulli` with Locus's draws: one per non-zero entry in index order, kept when
    unit ≥ 1 − density, for the input and tensor whose δ this is; masking and rescaling stay mergekit's."""
    def bernoulli(tensor, density, rescale_norm=None):
        if density >= 1:
            return tensor
        a = tensor.numpy()
        found = [key for key, d in deltas.items() if d.shape == a.shape and np.array_equal(d, a)]
        assert len(found) == 1, "δ not recognised"
        vector, name = found[0]
        flat = a.reshape(-1)
        nz = np.flatnonzero(flat)
        mask = np.zeros(flat.size, dtype=np.float32)
        mask[nz[ref.dare_keep(name, vector, len(nz), 1 - density, seed)]] = 1
        return mergekit_sparsify.rescaled_masked_tensor(tensor, torch.from_numpy(mask.reshape(a.shape)), rescale_norm)
    return bernoulli


def run_both(locus, llama, tmp_path, config, fixed_draws=False, seed=0):
    """Runs mergekit and locus on `config` (model paths relative to the llama folder); returns both outputs."""
    absolute = dict(config, models=[dict(m, model=str(llama / m["model"])) for m in config["models"]])
    if "base_model" in config:
        absolute["base_model"] = str(llama / config["base_model"])
    text = yaml.safe_dump(absolute)
    (tmp_path / "c.yml").write_text(text)
    cfg = MergeConfiguration.model_validate(yaml.safe_load(text))
    original = mergekit_sparsify.bernoulli
    if fixed_draws:
        base = tensors(llama / "base")
        inputs = [m["model"] for m in config["models"] if m["model"] != config.get("base_model")]
        deltas = {(i, n): tensors(llama / m)[n] - base[n] for i, m in enumerate(inputs) for n in base}
        mergekit_sparsify.bernoulli = locus_dare(deltas, seed)
    try:
        run_merge(cfg, str(tmp_path / "mk"), MergeOptions(copy_tokenizer=False, write_model_card=False, lazy_unpickle=True, quiet=True))
    finally:
        mergekit_sparsify.bernoulli = original
    r = assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", f"{tmp_path}/lo/"))
    return tensors(tmp_path / "mk"), tensors(tmp_path / "lo"), r


def assert_same(want, got, base, changed=True):
    assert want.keys() == got.keys()
    moved = 0
    for n in want:
        scale = max(np.abs(want[n]).max(), 1e-30)
        np.testing.assert_allclose(got[n].astype(np.float64), want[n].astype(np.float64), rtol=0, atol=1e-6 * scale, err_msg=n)
        moved += int((want[n] != base[n]).any())
    assert not changed or moved == len(want), f"only {moved} of {len(want)} tensors merged"


ATTN_DENSITY = [{"filter": "self_attn", "value": 0.3}, {"filter": "mlp", "value": [0.9, 0.4]}, {"value": 0.7}]

CONFIGS = {
    "ties-filters-gradients": {
        "merge_method": "ties",
        "models": [{"model": "ft0", "parameters": {"weight": 1.0, "density": ATTN_DENSITY}},
                   {"model": "ft1", "parameters": {"weight": [0.2, 1.0], "density": 0.5}},
                   {"model": "ft2", "parameters": {"weight": [{"filter": "up_proj", "value": -0.5}, {"value": 0.8}], "density": [0.2, 0.9, 0.6]}}],
        "parameters": {"normalize": True}},
    "ties-no-normalize-shared-density": {
        "merge_method": "ties",
        "models": [{"model": "base"}, {"model": "ft0", "parameters": {"weight": 0.6}}, {"model": "ft1", "parameters": {"weight": 1.5}}],
        "parameters": {"normalize": False, "density": 0.4, "lambda": 0.7}},
    "ties-rescale": {
        "merge_method": "ties",
        "models": [{"model": "ft0"}, {"model": "ft1"}],
        "parameters": {"weight": 1.0, "density": [0.3, 0.8], "rescale": True}},
    "task-arithmetic": {
        "merge_method": "task_arithmetic",
        "models": [{"model": "ft0", "parameters": {"weight": [1.0, 0.0]}},
                   {"model": "ft1", "parameters": {"weight": [{"filter": "lm_head", "value": 2.0}, {"value": 0.5}]}}],
        "parameters": {"lambda": 0.9}},
    "task-arithmetic-normalize": {
        "merge_method": "task_arithmetic",
        "models": [{"model": "ft0", "parameters": {"weight": 3.0}}, {"model": "ft1", "parameters": {"weight": [0.5, 1.5]}}],
        "parameters": {"normalize": True}},
    "dare-ties-density-1": {
        "merge_method": "dare_ties",
        "models": [{"model": "ft0", "parameters": {"weight": 0.7}}, {"model": "ft1", "parameters": {"weight": [0.3, 1.0]}},
                   {"model": "ft2", "parameters": {"weight": 1.0}}],
        "parameters": {"density": 1.0, "normalize": True}},
    "breadcrumbs": {
        "merge_method": "breadcrumbs",
        "models": [{"model": "ft0", "parameters": {"weight": 1.0, "density": 0.5, "gamma": [{"filter": "mlp", "value": 0.2}, {"value": 0.05}]}},
                   {"model": "ft1", "parameters": {"weight": 0.5, "density": [0.3, 0.9], "gamma": 0.1}}]},
    "breadcrumbs-ties": {
        "merge_method": "breadcrumbs_ties",
        "models": [{"model": "ft0", "parameters": {"weight": 1.0}}, {"model": "ft1", "parameters": {"weight": 2.0}}],
        "parameters": {"density": 0.6, "gamma": 0.05, "normalize": True}},
    "linear": {
        "merge_method": "linear",
        "models": [{"model": "ft0", "parameters": {"weight": [{"filter": "norm", "value": 0.1}, {"value": 1.0}]}},
                   {"model": "ft1", "parameters": {"weight": [1.0, 3.0]}}]},
    "slerp": {
        "merge_method": "slerp", "base_model": "ft1",
        "models": [{"model": "ft0"}, {"model": "ft1"}],
        "parameters": {"t": [{"filter": "self_attn", "value": [0, 0.5, 1]}, {"filter": "mlp", "value": [1, 0.5, 0]}, {"value": 0.3}]}},
    # Methods with a kernel of their own: the config lists fine-tuned checkpoints, Locus merges their exact task vectors.
    "model-stock": {
        "merge_method": "model_stock",
        "models": [{"model": "base"}, {"model": "ft0"}, {"model": "ft1"}, {"model": "ft2"}]},
    "model-stock-filter-wise": {
        "merge_method": "model_stock",
        "models": [{"model": "ft0"}, {"model": "ft1"}],
        "parameters": {"filter_wise": True}},
    "nuslerp": {
        "merge_method": "nuslerp",
        "models": [{"model": "ft0", "parameters": {"weight": 0.3}}, {"model": "ft1", "parameters": {"weight": 0.9}}]},
    "sce": {
        "merge_method": "sce",
        "models": [{"model": "ft0"}, {"model": "ft1"}, {"model": "ft2"}],
        "parameters": {"select_topk": 0.4}},
    "karcher": {
        "merge_method": "karcher",
        "models": [{"model": "ft0"}, {"model": "ft1"}, {"model": "ft2"}],
        "parameters": {"max_iter": 20, "tol": 1e-7}},
}


@pytest.mark.parametrize("name", CONFIGS)
def test_config_matches_mergekit(locus, llama, tmp_path, name):
    config = dict(CONFIGS[name], dtype="float32")
    config.setdefault("base_model", None if config["merge_method"] in ("linear", "slerp", "karcher") else "base")
    if config["base_model"] is None:
        del config["base_model"]
    want, got, r = run_both(locus, llama, tmp_path, config)
    assert "warning" not in r.err, r.err
    assert_same(want, got, tensors(llama / "base"))


@pytest.mark.parametrize("method,rescale", [("dare_ties", None), ("dare_linear", None), ("dare_linear", False)])
def test_dare_config_matches_mergekit_with_the_same_draws(locus, llama, tmp_path, method, rescale):
    config = {"merge_method": method, "base_model": "base", "dtype": "float32",
              "models": [{"model": "ft0", "parameters": {"weight": 1.0, "density": [{"filter": "self_attn", "value": 0.3}, {"value": 0.6}]}},
                         {"model": "ft1", "parameters": {"weight": 0.5, "density": [0.5, 0.8]}}],
              "parameters": {"seed": 11, "normalize": method == "dare_ties"}}
    if rescale is not None:
        config["parameters"]["rescale"] = rescale
    want, got, _ = run_both(locus, llama, tmp_path, config, fixed_draws=True, seed=11)
    assert_same(want, got, tensors(llama / "base"))


def test_exclude_keeps_the_base_and_merges_the_rest_as_mergekit(locus, llama, tmp_path):
    config = dict(CONFIGS["ties-filters-gradients"], dtype="float32", base_model="base")
    want, _, _ = run_both(locus, llama, tmp_path, config)
    text = (tmp_path / "c.yml").read_text() + "exclude: ['*embed_tokens*']\n"
    (tmp_path / "c.yml").write_text(text)
    assert_ok(locus("merge", "--config", tmp_path / "c.yml", "--exclude", "lm_head.*", "-o", f"{tmp_path}/ex/"))
    got, base = tensors(tmp_path / "ex"), tensors(llama / "base")
    kept = {"model.embed_tokens.weight", "lm_head.weight"}
    for n in kept:
        assert np.array_equal(got[n], base[n]), n
    assert_same({n: v for n, v in want.items() if n not in kept}, {n: v for n, v in got.items() if n not in kept}, base)


def test_task_vectors_as_inputs_give_the_checkpoints_result(locus, llama, tmp_path):
    """A config may list Locus task vectors (locus diff) instead of the fine-tuned checkpoints."""
    config = dict(CONFIGS["ties-filters-gradients"], dtype="float32", base_model="base")
    want, _, _ = run_both(locus, llama, tmp_path, config)
    text = (tmp_path / "c.yml").read_text()
    for i in range(3):
        assert_ok(locus("diff", llama / "base", llama / f"ft{i}", "-o", tmp_path / f"tv{i}.h5"))
        text = text.replace(f"model: {llama}/ft{i}\n", f"model: {tmp_path}/tv{i}.h5\n")
    (tmp_path / "c.yml").write_text(text)
    assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", f"{tmp_path}/tv/"))
    assert_same(want, tensors(tmp_path / "tv"), tensors(llama / "base"))


@pytest.mark.parametrize("name", ["model-stock", "sce", "nuslerp"])
def test_kernel_methods_on_checkpoints_write_no_task_vectors(locus, llama, tmp_path, name):
    """model_stock, sce and nuslerp compute the checkpoints' task vectors while reading: nothing but
    the output appears beside it at any time during the merge (the output folder is watched), and the
    bits equal those of the same config on the checkpoints' task vectors (`locus diff`)."""
    import subprocess, threading
    config = dict(CONFIGS[name], dtype="float32", base_model="base")
    models = [m for m in config["models"] if m["model"] != "base"]
    text = yaml.safe_dump(dict(config, base_model=str(llama / "base"), models=[dict(m, model=str(llama / m["model"])) for m in config["models"]]))
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "c.yml").write_text(text)
    seen, done = set(), threading.Event()

    def watch():
        while not done.is_set():
            seen.update(p.name for p in out.iterdir())
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", f"{out}/m/"))
    finally:
        done.set()
        watcher.join()
    assert {n for n in seen if not n.startswith(".m.locus-")} <= {"m"}, sorted(seen)
    assert sorted(p.name for p in out.iterdir()) == ["m"]
    for m in models:
        assert_ok(locus("diff", llama / "base", llama / m["model"], "-o", tmp_path / f"{m['model']}.h5"))
        text = text.replace(f"model: {llama}/{m['model']}\n", f"model: {tmp_path}/{m['model']}.h5\n")
    (tmp_path / "c.yml").write_text(text)
    assert_ok(locus("merge", "--config", tmp_path / "c.yml", "-o", f"{tmp_path}/tv/"))
    got, want = tensors(out / "m"), tensors(tmp_path / "tv")
    assert got.keys() == want.keys()
    for n in want:
        assert np.array_equal(got[n].view(np.uint32), want[n].view(np.uint32)), n


BAD = {
    "unknown-key": ("merge_methd: ties\n", "merge_methd"),
    "tokenizer-source": ("tokenizer_source: union\n", "tokenizer_source"),
    "chat-template": ("chat_template: chatml\n", "chat_template"),
    "slices": ("slices: []\n", "slices"),
    "unknown-parameter": ("parameters: {densty: 0.5}\n", "densty"),
    "gradient-too-long": ("parameters: {density: [0.1, 0.2, 0.3, 0.4, 0.5]}\n", "gradient of 5 values for 3 layers"),
    "locus-only-method": (None, "semantics: locus"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_configs_are_refused_before_any_output(locus, llama, tmp_path, name):
    extra, mention = BAD[name]
    text = (f"merge_method: {'tall' if extra is None else 'ties'}\nbase_model: {llama}/base\n"
            f"models:\n  - model: {llama}/ft0\n    parameters: {{weight: 1.0}}\n" + (extra or ""))
    (tmp_path / "c.yml").write_text(text)
    out = tmp_path / "out"
    r = locus("merge", "--config", tmp_path / "c.yml", "-o", f"{out}/")
    assert_error(r, tmp_path / "c.yml")
    assert mention in r.err, r.err
    assert not out.exists()


def test_a_filter_matching_no_tensor_is_a_warning_naming_it(locus, llama, tmp_path):
    config = {"merge_method": "ties", "base_model": "base", "dtype": "float32",
              "models": [{"model": "ft0", "parameters": {"weight": 1.0, "density": [{"filter": "self_atn", "value": 0.3}, {"value": 0.5}]}}]}
    want, got, r = run_both(locus, llama, tmp_path, config)
    assert "self_atn" in r.err and "matches no tensor" in r.err, r.err
    assert_same(want, got, tensors(llama / "base"))
