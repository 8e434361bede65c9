"""locus_h5.torch against the Swift engine: the same model and data through `locus score`, `locus mask`,
`locus finetune` and `locus diff` on one side and the torch bridge on the other (MLP, LeNet, a small
ViT), plus checkpoints of every dtype, the optimizer rules against the independent numpy optimizers of
finetune_ref.py, and bad input.

torch is required: without it this module fails to import (an error, never a skip).
"""
import os

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import finetune_ref
import locus_h5
import locus_h5.torch as lt
from conftest import assert_ok, assert_valid, spec_fingerprint

ESTIMATORS = ["talos", "talos-exact", "fisher-empirical", "fisher-mc", "fisher-exact"]
CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def env(locus, tmp_path_factory):
    """Three small models made by `locus init` (MLP on features, LeNet on 16×16 uint8 images, a ViT on
    2×8×8 float images with per-channel normalisation) and their datasets."""
    d = tmp_path_factory.mktemp("torchbridge")
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 20)) * 1.2
    y = np.arange(60) % 3
    x = (centres[y] + rng.standard_normal((60, 20))).astype(np.float32)
    locus_h5.write_dataset(d / "feat.h5", x, y, CLASSES, {"train": np.arange(40), "val": np.arange(40, 50), "test": np.arange(50, 60)})
    n = 36
    y = np.arange(n) % 3
    x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, c % 2, :, 2 * c:2 * c + 3] += 2.0
    locus_h5.write_dataset(d / "img.h5", x, y, CLASSES, {"train": np.arange(24), "test": np.arange(24, 36)},
                           scale=1.0, mean=(0.1, -0.1), std=(1.5, 0.8))
    x = rng.integers(0, 256, (40, 1, 16, 16)).astype(np.uint8)
    locus_h5.write_dataset(d / "img16.h5", x, np.arange(40) % 3, CLASSES, {"train": np.arange(30), "test": np.arange(30, 40)})
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "16,12", "--data", d / "feat.h5", "--seed", "1", "-o", d / "mlp.h5"))
    assert_ok(locus("init", "--preset", "lenet", "--hidden", "20", "--data", d / "img16.h5", "--seed", "2", "-o", d / "lenet.h5"))
    assert_ok(locus("init", "--preset", "vit", "--data", d / "img.h5", "--patch-size", "4", "--width", "12", "--depth", "2",
                    "--num-heads", "3", "--seed", "3", "-o", d / "vit.h5"))
    return {"dir": d, "mlp": (d / "mlp.h5", d / "feat.h5"), "lenet": (d / "lenet.h5", d / "img16.h5"), "vit": (d / "vit.h5", d / "img.h5")}


def _rel(a, b):
    """max |a − b| / max |b| (0 when both are all zero)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max() if b.size else 0.0
    return float(np.abs(a - b).max() / scale) if scale > 0 else float(np.abs(a - b).max() if a.size else 0.0)


def _scorer(model_path, data_path, **kw):
    m = lt.load_model(model_path)
    x, y = lt.load_dataset(data_path, "train", m.input_shape)
    return m, x, y


# ------------------------------------------------------------------ model and data feed

@pytest.mark.parametrize("name", ["mlp", "lenet", "vit"])
def test_model_logits_match_locus_eval(locus, env, tmp_path, name):
    model, data = env[name]
    out = tmp_path / "logits.npy"
    assert_ok(locus("eval", model, data, "--split", "test", "--logits", out))
    m = lt.load_model(model)
    assert set(m.state_dict()) == set(locus_h5.load(model)["tensors"]), "state-dict keys are the checkpoint's names"
    x, _ = lt.load_dataset(data, "test", m.input_shape)
    with torch.no_grad():
        got = m.eval()(x).numpy()
    assert _rel(got, np.load(out)) <= 1e-5


# ------------------------------------------------------------------ scores

@pytest.mark.parametrize("name", ["mlp", "lenet", "vit"])
def test_scores_match_locus_score(locus, env, tmp_path, name):
    """Every estimator: sums ≤ 1e-5 of locus's (relative to the tensor's largest score), same samples,
    draws and estimator. The sampled ones draw the same classes (Locus's SplitMix64 stream), so they
    are compared to locus too, not only to themselves."""
    model, data = env[name]
    m, x, y = _scorer(model, data)
    worst = {}
    for est in ESTIMATORS:
        ref_path = tmp_path / f"ref-{est}.h5"
        assert_ok(locus("score", model, data, "--estimator", est, "--batch-size", "16", "--draws", "2", "--seed", "5",
                        "-o", ref_path, "--quiet"))
        sc = lt.TaLoSScorer(m, estimator=est, draws=2, seed=5, batch_size=16).run(x, y)
        # the generic path (vmap over vjp for every tensor) gives the same sums
        generic = lt.TaLoSScorer(m, estimator=est, draws=2, seed=5, batch_size=16, per_sample="vmap").run(x, y)
        assert max(_rel(generic.sums[k], sc.sums[k]) for k in sc.parameters) <= 1e-5, f"{name} {est}: vmap path"
        got_path = tmp_path / f"got-{est}.h5"
        sc.save(got_path, base=str(model))
        assert_valid(locus("validate", got_path))
        ref, got = locus_h5.load(ref_path), locus_h5.load(got_path)
        for k in ("estimator", "samples", "draws", "reduction", "base-fingerprint", "tensor-count", "element-count"):
            assert got["attrs"][k] == ref["attrs"][k], f"{est}: {k}"
        assert set(got["tensors"]) == set(ref["tensors"])
        worst[est] = max(_rel(got["tensors"][k], ref["tensors"][k]) for k in ref["tensors"])
        assert worst[est] <= 1e-5, f"{name} {est}: scores differ from locus score by {worst[est]:.2e}"
        if est in ("talos", "fisher-mc"):   # a fixed seed reproduces bit for bit
            again = lt.TaLoSScorer(m, estimator=est, draws=2, seed=5, batch_size=16).run(x, y)
            assert all(torch.equal(again.sums[k], sc.sums[k]) for k in sc.parameters)
            other = lt.TaLoSScorer(m, estimator=est, draws=2, seed=6, batch_size=16).run(x, y)
            assert any(not torch.equal(other.sums[k], sc.sums[k]) for k in sc.parameters), "the seed must matter"
    print(f"{name}: worst relative difference to locus score per estimator: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))


@pytest.mark.parametrize("per_sample", ["auto", "vmap"])
@pytest.mark.parametrize("name", ["mlp", "lenet", "vit"])
def test_per_sample_gradients_match_one_backward_per_sample(env, name, per_sample):
    """Both paths (per-module formulas from one batched backward; vmap over vjp) equal the plain loop:
    one autograd backward per sample and class."""
    model, data = env[name]
    m, x, y = _scorer(model, data)
    x, y = x[:6], y[:6]
    sc = lt.TaLoSScorer(m, estimator="fisher-exact", batch_size=6, per_sample=per_sample, max_memory=1 << 16).run(x, y)
    ref = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in m.named_parameters() if n in sc.parameters}
    params = dict(m.named_parameters())
    m.eval()
    for i in range(6):
        z = m(x[i:i + 1])[0]
        p = torch.softmax(z.detach(), 0)
        for k in range(3):
            g = torch.sqrt(p[k]) * (F.one_hot(torch.tensor(k), 3).float() - p)
            grads = torch.autograd.grad((z * g).sum(), [params[n] for n in ref], retain_graph=True)
            for n, gr in zip(ref, grads):
                ref[n] += gr.double() ** 2
    for n in ref:
        assert _rel(sc.sums[n], ref[n]) <= 1e-5, n


def test_append_matches_locus_append(locus, env, tmp_path):
    model, data = env["mlp"]
    m, x, y = _scorer(model, data)
    ref = tmp_path / "ref.h5"
    args = ("--estimator", "talos", "--batch-size", "8", "--batches", "3", "--seed", "2", "--quiet")
    assert_ok(locus("score", model, data, "-o", ref, *args))
    mine = tmp_path / "mine.h5"
    import shutil
    shutil.copyfile(ref, mine)                                         # torch appends to a file locus wrote
    assert_ok(locus("score", model, data, "-o", ref, "--append", *args))
    lt.TaLoSScorer(m, estimator="talos", seed=2, batch_size=8).run(x, y, max_batches=3).save(mine, base=str(model), append=True)
    a, b = locus_h5.load(mine), locus_h5.load(ref)
    assert a["attrs"]["samples"] == b["attrs"]["samples"] == 48
    assert max(_rel(a["tensors"][k], b["tensors"][k]) for k in b["tensors"]) <= 1e-5
    # resume() then run() is the same as save(append=True)
    r = lt.TaLoSScorer(m, estimator="talos", seed=2, batch_size=8).resume(tmp_path / "mine.h5", base=str(model))
    assert r.samples == 48


# ------------------------------------------------------------------ masks

@pytest.mark.parametrize("name,estimator,extra", [("mlp", "talos", ()), ("lenet", "talos", ()), ("vit", "talos", ()),
                                                  ("mlp", "fisher-exact", ("--keep", "highest")),
                                                  ("vit", "fisher-mc", ("--keep", "highest")),
                                                  ("lenet", "fisher-empirical", ("--scope", "local")),
                                                  ("vit", "fisher-mc", ("--scope", "local"))])
def test_calibrate_mask_matches_locus_mask(locus, env, tmp_path, name, estimator, extra):
    model, data = env[name]
    m, x, y = _scorer(model, data)
    ref = tmp_path / "ref.h5"
    assert_ok(locus("mask", model, data, "--density", "0.1", "--estimator", estimator, "--batch-size", "16", "--draws", "2",
                    "--seed", "5", "-o", ref, "--quiet", *extra))
    kw = {"keep": extra[1]} if extra and extra[0] == "--keep" else {"scope": extra[1]} if extra else {}
    mask = lt.calibrate_mask(m, x, y, density=0.1, estimator=estimator, batch_size=16, draws=2, seed=5, **kw)
    want = locus_h5.load(ref)["tensors"]
    assert list(mask) == m.scored_parameter_names() and set(mask) == set(want)
    differs = {k: mask[k].numpy() != want[k] for k in want}
    if name == "vit" and scope_is_local(extra):
        # The key bias (qkv.bias[D:2D]) has a zero gradient in exact arithmetic (softmax ignores a constant
        # added to every key's score), so its scores are rounding noise (~1e-19) in both engines; a local
        # threshold inside that noise picks noise. Everywhere else the bits are identical, and so are the counts.
        for k in differs:
            if k.endswith("attn.qkv.bias"):
                d = differs[k].size // 3
                assert int(mask[k].numpy()[d:2 * d].sum()) == int(want[k][d:2 * d].sum())
                differs[k][d:2 * d] = False
    diff = {k: int(v.sum()) for k, v in differs.items()}
    assert sum(diff.values()) == 0, f"{name}: mask bits differ from locus mask: {diff}"
    out = tmp_path / "mine.h5"
    lt.save_mask(out, mask, base=str(model))
    assert_valid(locus("validate", out))
    if sum(int((mask[k].numpy() != want[k]).sum()) for k in want) == 0:
        assert locus_h5.mask_fingerprint(out) == locus_h5.mask_fingerprint(ref)


def scope_is_local(extra):
    return tuple(extra) == ("--scope", "local")


def test_select_tie_rule():
    s = [np.array([0.0, 1.0, 0.0], np.float32), np.array([[0.0, 2.0]], np.float32)]
    got = lt.select(s, 2)
    assert got[0].tolist() == [True, False, True] and got[1].tolist() == [[False, False]]
    got = lt.select(s, 2, eligible=[np.array([False, True, True]), np.array([[True, True]])])
    assert got[0].tolist() == [False, False, True] and got[1].tolist() == [[True, False]]
    assert [g.sum() for g in lt.select(s, 1, keep="highest")] == [0, 1]


# ------------------------------------------------------------------ sparse fine-tuning

@pytest.fixture(scope="module")
def ft_env(locus, env):
    """The MLP and a mask with an index-list tensor (30 %), a multiplier tensor (75 %), an all-ones and an all-zero tensor."""
    model, data = env["mlp"]
    rng = np.random.default_rng(7)
    t = locus_h5.load(model)["tensors"]
    masks = {"layers.1.weight": rng.random(t["layers.1.weight"].shape) < 0.3, "layers.1.bias": rng.random(16) < 0.75,
             "layers.3.weight": np.ones(t["layers.3.weight"].shape, bool), "layers.3.bias": np.zeros(12, bool)}
    mask = env["dir"] / "ftmask.h5"
    locus_h5.write_mask(mask, masks, base=str(model))
    return {"model": model, "data": data, "mask": mask, "masks": masks}


OPTIMIZERS = {
    "sgd": (["--optimizer", "sgd", "--lr", "0.3", "--momentum", "0.9", "--dampening", "0.1", "--weight-decay", "0.01", "--nesterov"],
            lambda body, mask: lt.SparseSGDM(body, mask, lr=0.3, momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=True), 0.3),
    "sgd-plain": (["--optimizer", "sgd", "--lr", "0.5", "--momentum", "0"],
                  lambda body, mask: lt.SparseSGDM(body, mask, lr=0.5), 0.5),
    "adamw": (["--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.1"],
              lambda body, mask: lt.MaskedAdamW(body, mask, lr=0.001, weight_decay=0.1), 0.001),
}


def _torch_finetune(ft_env, make, base_lr, epochs, batch_size, seed=3):
    """locus finetune's loop in torch: Locus's shuffled order, cosine schedule, mean cross-entropy."""
    m = lt.load_model(ft_env["model"])
    x, y = lt.load_dataset(ft_env["data"], "train", m.input_shape)
    mask = lt.load_mask(ft_env["mask"], base=str(ft_env["model"]))
    body = [(n, p) for n, p in m.named_parameters() if n not in m.head_parameter_names()]
    opt = make(body, mask)
    steps = -(-x.shape[0] // batch_size)
    for epoch in range(epochs):
        order = lt.epoch_order(range(x.shape[0]), epoch, seed)
        for s in range(steps):
            ids = order[s * batch_size:(s + 1) * batch_size]
            opt.zero_grad()
            F.cross_entropy(m(x[ids]), y[ids]).backward()
            for g in opt.param_groups:
                g["lr"] = lt.learning_rate(epoch * steps + s, base_lr, epochs * steps)
            opt.step()
    return m, opt


@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sparse_optimizers_match_locus_finetune(locus, ft_env, tmp_path, name, steps):
    args, make, lr = OPTIMIZERS[name]
    epochs, bs = (1, 40) if steps == 1 else (2, 8)          # 40 training samples: 1 step, or 2 epochs of 5 shuffled batches
    ref = tmp_path / "ft.h5"
    assert_ok(locus("finetune", ft_env["model"], ft_env["data"], "--mask", ft_env["mask"], "-o", ref, "--epochs", epochs,
                    "--batch-size", bs, "--seed", "3", "--deterministic", "--quiet", *args))
    m, opt = _torch_finetune(ft_env, make, lr, epochs, bs)
    want, base = locus_h5.load(ref)["tensors"], locus_h5.load(ft_env["model"])["tensors"]
    params = dict(m.named_parameters())
    for k, w in m.state_dict().items():
        w = w.numpy()
        assert _rel(w, want[k]) <= 1e-6, f"{name}, {steps} step(s): {k} differs from locus finetune by {_rel(w, want[k]):.2e}"
        frozen = ~ft_env["masks"][k] if k in ft_env["masks"] else np.ones(w.shape, bool)
        assert np.array_equal(w[frozen].view(np.uint32), base[k][frozen].view(np.uint32)), f"{name}: frozen entries of {k} moved"
        has_state = len(opt.state.get(params[k], {})) > 0
        trainable = k in ft_env["masks"] and ft_env["masks"][k].any() and name != "sgd-plain"   # plain SGD keeps no state
        assert has_state == trainable, f"{name}: {k} state {has_state}, trainable {trainable}"
    sel = ft_env["masks"]["layers.1.weight"]
    for v in opt.state[params["layers.1.weight"]].values():
        if isinstance(v, torch.Tensor):
            assert v.numel() == sel.sum(), "state holds only the trainable entries"


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_rule_matches_numpy_reference(ft_env, name):
    """Same gradients into finetune_ref's float64 optimizers and the torch ones: 10 steps agree to float32 rounding."""
    m = lt.load_model(ft_env["model"])
    x, y = lt.load_dataset(ft_env["data"], "train", m.input_shape)
    masks = ft_env["masks"]
    body = [(n, p) for n, p in m.named_parameters() if n in masks]
    if name == "sgd":
        opt = lt.SparseSGDM(body, masks, lr=0.2, momentum=0.9, dampening=0.2, weight_decay=0.05, nesterov=True)
        ref = finetune_ref.SparseSGDM(lr=finetune_ref.f32(0.2), momentum=finetune_ref.f32(0.9), dampening=finetune_ref.f32(0.2),
                                      weight_decay=finetune_ref.f32(0.05), nesterov=True)
    else:
        opt = lt.MaskedAdamW(body, masks, lr=0.01, weight_decay=0.1)
        ref = finetune_ref.AdaptW(lr=finetune_ref.f32(0.01), weight_decay=finetune_ref.f32(0.1),
                                  betas=(finetune_ref.f32(0.9), finetune_ref.f32(0.999)))   # the float32 β the engine uses
    params = {n: p.detach().double().numpy().copy() for n, p in body}
    part = {n: masks[n].astype(np.float64) for n in masks if masks[n].any()}
    rng = np.random.default_rng(1)
    for _ in range(10):
        grads = {n: rng.standard_normal(p.shape).astype(np.float32) for n, p in body}
        for n, p in body:
            p.grad = torch.from_numpy(grads[n])
        opt.step()
        ref.step(params, {n: g.astype(np.float64) for n, g in grads.items()}, part)
    for n, p in body:
        assert _rel(p.detach().numpy(), params[n]) <= 1e-6, n


# ------------------------------------------------------------------ task vectors

def test_task_vector_equals_locus_diff(locus, ft_env, tmp_path):
    ft = tmp_path / "ft.h5"
    assert_ok(locus("finetune", ft_env["model"], ft_env["data"], "--mask", ft_env["mask"], "-o", ft, "--epochs", "1",
                    "--batch-size", "8", "--optimizer", "sgd", "--lr", "0.3", "--quiet"))
    m = lt.load_model(ft)
    _compare_task_vectors(locus, tmp_path, ft_env["model"], ft, m)


def test_task_vector_edge_cases_equal_locus_diff(locus, tmp_path):
    """−0.0 → +0.0 (a stored zero), a change needing float64, float16 / bfloat16 / float64 tensors,
    an unchanged tensor (absent), a dense, a bitmask and a coo tensor, an int tensor left alone."""
    rng = np.random.default_rng(3)
    base = {"dense": torch.randn(8, 8), "bitmask": torch.randn(64), "coo": torch.randn(4000), "same": torch.randn(5),
            "signs": torch.tensor([-0.0, 1.0, 2.0]), "wide": torch.tensor([1.0, 1.0, 3.0]),
            "half": torch.randn(40).half(), "bf": torch.randn(40).bfloat16(), "f64": torch.randn(6, dtype=torch.float64),
            "steps": torch.arange(4)}
    ft = {k: v.clone() for k, v in base.items()}
    ft["dense"] += 0.5
    ft["bitmask"][torch.from_numpy(rng.random(64) < 0.5)] += 1.0
    ft["coo"][[3, 17, 3999]] -= 0.25
    ft["signs"][0] = 0.0
    ft["wide"][0] = 2.0 ** -30     # τ = 2^-30 − 1 needs float64 to give θ_ft back
    ft["half"][::3] += 1
    ft["bf"][::2] *= 2
    ft["f64"][1] += 1e-9
    b, f = tmp_path / "base.h5", tmp_path / "ft.h5"
    lt.save_checkpoint(b, base)
    lt.save_checkpoint(f, ft)
    _compare_task_vectors(locus, tmp_path, b, f, ft)
    with h5py.File(tmp_path / "mine.h5") as h:
        assert h["tensors/signs"].attrs["nnz"] == 0 and h["tensors/signs/values"].shape == (1,), "−0.0 → +0.0 is a stored zero"
        assert h["tensors/wide"].attrs["dtype"] == "float64" and h["tensors/half"].attrs["dtype"] == "float32"
        assert {h["tensors"][k].attrs["encoding-type"] for k in ("dense", "bitmask", "coo")} == {"dense", "bitmask", "coo"}
        assert "same" not in h["tensors"] and "steps" not in h["tensors"]


def _compare_task_vectors(locus, tmp_path, base, ft_path, ft_weights):
    ref, mine = tmp_path / "ref.h5", tmp_path / "mine.h5"
    assert_ok(locus("diff", base, ft_path, "-o", ref))
    lt.save_task_vector(mine, ft_weights, str(base))
    assert_valid(locus("validate", mine))
    with h5py.File(ref) as r, h5py.File(mine) as g:
        for k in ("base-fingerprint", "finetuned-fingerprint", "tensor-count", "count", "nnz", "scale"):
            assert g.attrs[k] == r.attrs[k], k
        assert g.attrs["l2-norm"] == pytest.approx(r.attrs["l2-norm"], rel=1e-12)
        assert sorted(g["tensors"]) == sorted(r["tensors"])
        for name in r["tensors"]:
            a, b = g["tensors"][name], r["tensors"][name]
            for k in ("encoding-type", "dtype", "nnz", "count"):
                assert a.attrs[k] == b.attrs[k], (name, k)
            assert list(a.attrs["shape"]) == list(b.attrs["shape"])
            assert sorted(a) == sorted(b), name
            for ds in b:
                assert a[ds].dtype == b[ds].dtype and np.array_equal(a[ds][()].view(np.uint8), b[ds][()].view(np.uint8)), (name, ds)
    r = assert_ok(locus("apply", base, mine, "-o", tmp_path / "back.h5"))
    assert spec_fingerprint(tmp_path / "back.h5") == spec_fingerprint(ft_path), "base + τ gives the fine-tuned weights back"
    return r


# ------------------------------------------------------------------ checkpoints

def test_checkpoint_every_dtype_round_trip(locus, tmp_path):
    state = {"f32": torch.randn(3, 4), "f64": torch.randn(2, dtype=torch.float64), "f16": torch.randn(5).half(),
             "bf16": torch.randn(2, 3).bfloat16(), "i64": torch.arange(-3, 3), "i32": torch.tensor([7], dtype=torch.int32),
             "i16": torch.tensor([-2], dtype=torch.int16), "i8": torch.tensor([-128, 127], dtype=torch.int8),
             "u8": torch.tensor([0, 255], dtype=torch.uint8), "flags": torch.tensor([True, False]), "scalar": torch.tensor(0.5),
             "empty": torch.zeros(0, 3), "odd/na.me%": torch.ones(1), ".": torch.zeros(2)}
    p = tmp_path / "ck.h5"
    fp = lt.save_checkpoint(p, state, metadata={"note": "x"})
    assert_valid(locus("validate", p))
    assert fp == spec_fingerprint(p) == locus_h5.fingerprint(p) == lt.state_fingerprint(state)
    back = lt.load_state_dict(p)
    assert set(back) == set(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
        assert torch.equal(back[k].view(torch.int16) if v.dtype == torch.bfloat16 else back[k],
                           v.view(torch.int16) if v.dtype == torch.bfloat16 else v), k
    with h5py.File(p) as f:   # bfloat16 stored as the spec's 2-byte float; h5py reads it as float32 exactly
        np.testing.assert_array_equal(f["tensors/bf16"][()], state["bf16"].float().numpy())


def test_locus_model_checkpoint_carries_architecture(locus, env, tmp_path):
    model, data = env["vit"]
    m = lt.load_model(model)
    out = tmp_path / "vit2.h5"
    lt.save_checkpoint(out, m)
    assert_valid(locus("validate", out))
    assert lt.state_fingerprint(m) == locus_h5.fingerprint(model) == locus_h5.fingerprint(out)
    assert_ok(locus("eval", out, data, "--split", "test"))


# ------------------------------------------------------------------ bad input

def test_mask_from_another_base_is_refused(locus, env, ft_env, tmp_path):
    other = tmp_path / "other.h5"
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "16,12", "--data", env["mlp"][1], "--seed", "9", "-o", other))
    with pytest.raises(locus_h5.LocusError, match=r"ftmask\.h5: /@base-fingerprint: the mask was made from another base"):
        lt.load_mask(ft_env["mask"], base=str(other))


def test_mask_shape_mismatch_names_the_tensor(ft_env):
    m = lt.load_model(ft_env["model"])
    bad = dict(lt.load_mask(ft_env["mask"]))
    bad["layers.1.bias"] = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"'layers\.1\.bias' has mask shape \(3,\), the parameter \(16,\)"):
        lt.SparseSGDM(m.named_parameters(), bad, lr=0.1)
    bad = {"layers.9.weight": torch.ones(2, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"'layers\.9\.weight' is not a parameter"):
        lt.MaskedAdamW(m.named_parameters(), bad, lr=0.1)


def test_append_with_another_estimator_is_refused_and_leaves_the_file(locus, env, tmp_path):
    model, data = env["mlp"]
    path = tmp_path / "s.h5"
    assert_ok(locus("score", model, data, "--estimator", "fisher-exact", "--batches", "1", "-o", path, "--quiet"))
    before = path.read_bytes()
    m, x, y = _scorer(model, data)
    sc = lt.TaLoSScorer(m, estimator="talos", batch_size=8).run(x, y, max_batches=1)
    with pytest.raises(locus_h5.LocusError, match=r"s\.h5: /@estimator: is 'fisher-exact', cannot append 'talos' scores"):
        sc.save(path, base=str(model), append=True)
    with pytest.raises(locus_h5.LocusError, match="estimator"):
        lt.TaLoSScorer(m, estimator="talos").resume(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_non_float_parameter_is_refused(ft_env):
    m = lt.load_model(ft_env["model"])
    m.register_parameter("steps", torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False))
    with pytest.raises(ValueError, match=r"^steps: parameter is torch\.int64"):
        lt.SparseSGDM(m.named_parameters(), {}, lr=0.1)
    with pytest.raises(ValueError, match=r"^steps: parameter is torch\.int64; only floating-point"):
        lt.TaLoSScorer(m, parameters=["layers.1.weight", "steps"])


def test_task_vector_of_a_changed_int_tensor_writes_nothing(tmp_path):
    base = {"w": torch.ones(3), "step": torch.tensor([1])}
    ft = {"w": torch.zeros(3), "step": torch.tensor([2])}
    with pytest.raises(ValueError, match=r"tau\.h5: /tensors/step: int64 tensor 'step' differs from the base"):
        lt.save_task_vector(tmp_path / "tau.h5", ft, base)
    with pytest.raises(ValueError, match=r"'w' has shape \(4,\), the base \(3,\)"):
        lt.save_task_vector(tmp_path / "tau.h5", {"w": torch.zeros(4), "step": torch.tensor([1])}, base)
    assert os.listdir(tmp_path) == []
