"""Vision transformers through the CLI: timm's names and layout, logits, gradients and per-sample scores
against an independent numpy forward and backward pass (vit_ref), the same against torch autograd
(when torch is importable), a timm-shaped ViT-Ti/16 (5.7 M parameters) imported from safetensors with
`locus convert --architecture`, and sparse fine-tuning + merging of ViT task vectors.
"""
import json

import numpy as np
import pytest

import engine_ref
import locus_h5
import vit_ref
from conftest import assert_error, assert_nothing_new, assert_ok, assert_valid, snapshot
from test_engine import _inputs, _state as state

CLASSES = ["a", "b", "c"]
BLOCK = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
         "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]


def timm_names(depth, head="head"):
    return (["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed", "norm.weight", "norm.bias",
             f"{head}.weight", f"{head}.bias"] + [f"blocks.{i}.{n}" for i in range(depth) for n in BLOCK])


@pytest.fixture(scope="module")
def env(tmp_path_factory, locus_bin):
    """Two-channel 8×8 images in 3 classes and a small ViT (patch 4, width 12, 2 blocks of 3 heads) with
    non-trivial LayerNorm and head weights (written back through locus_h5 so the model is not just its init)."""
    d = tmp_path_factory.mktemp("vit")
    rng = np.random.default_rng(0)
    n = 36
    y = np.arange(n) % 3
    x = rng.standard_normal((n, 2, 8, 8)).astype(np.float32)
    for i, c in enumerate(y):
        x[i, c % 2, :, 2 * c:2 * c + 3] += 2.0
    data = d / "img.h5"
    locus_h5.write_dataset(data, x, y, CLASSES, {"train": np.arange(24), "val": np.arange(24, 30), "test": np.arange(30, 36)},
                           scale=1.0, mean=(0.1, -0.1), std=(1.5, 0.8))
    return {"dir": d, "data": data}


def make_vit(locus, out, data, *extra):
    assert_ok(locus("init", "--preset", "vit", "--data", data, "--patch-size", "4", "--width", "12", "--depth", "2",
                    "--num-heads", "3", "--seed", "3", "-o", out, *extra))
    assert_valid(locus("validate", out))
    return out


def perturbed(locus, model, out, seed=1):
    """The model with LayerNorm γ, β, cls_token and the head drawn away from their init (via h5py)."""
    ck = locus_h5.load(model)
    t = dict(ck["tensors"])
    rng = np.random.default_rng(seed)
    for k in t:
        if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight":
            t[k] = rng.uniform(0.5, 1.5, t[k].shape).astype(np.float32)
        elif "norm" in k and k.endswith("bias"):
            t[k] = rng.uniform(-0.5, 0.5, t[k].shape).astype(np.float32)
        elif k == "cls_token" or k.startswith("heads.") or k.startswith("head."):
            t[k] = (rng.standard_normal(t[k].shape) * 0.5).astype(np.float32)
    locus_h5.write_checkpoint(out, t, architecture=ck["architecture"])
    assert_valid(locus("validate", out))
    return out


def logits(locus, model, data, tmp_path, split="test", head="default"):
    out = tmp_path / f"logits-{model.stem}-{split}.npy"
    assert_ok(locus("eval", model, data, "--split", split, "--head", head, "--logits", out, "--batch-size", "5"))
    return np.load(out)


# ------------------------------------------------------------------ layout

def test_init_uses_timm_names(locus, env, tmp_path):
    m = make_vit(locus, tmp_path / "v.h5", env["data"])
    names = set(locus_h5.load(m)["tensors"])
    assert names == set(timm_names(2, head="heads.default"))
    t = locus_h5.load(m)["tensors"]
    assert t["patch_embed.proj.weight"].shape == (12, 2, 4, 4) and t["pos_embed"].shape == (1, 5, 12)
    assert t["cls_token"].shape == (1, 1, 12) and t["blocks.1.attn.qkv.weight"].shape == (36, 12)
    assert t["blocks.0.mlp.fc1.weight"].shape == (48, 12)
    m2 = make_vit(locus, tmp_path / "v2.h5", env["data"], "--head", "imagenet", "--head-prefix", "head")
    assert set(locus_h5.load(m2)["tensors"]) == set(timm_names(2))
    arch = locus_h5.load(m2)["architecture"]
    assert arch["heads"][0]["prefix"] == "head" and arch["preset"] == "vit"


# ------------------------------------------------------------------ numerics

def test_logits_match_numpy(locus, env, tmp_path):
    m = perturbed(locus, make_vit(locus, tmp_path / "v.h5", env["data"]), tmp_path / "p.h5")
    z = logits(locus, m, env["data"], tmp_path)
    x, _ = _inputs(env["data"], "test")
    ref = vit_ref.numpy_logits(locus_h5.load(m)["architecture"], state(locus, m, tmp_path), x, "heads.default")
    err = np.abs(z - ref).max() / np.abs(ref).max()
    print(f"vit logits vs numpy: normalized error {err:.2e}")
    assert z.shape == ref.shape and err <= 1e-5


def test_logits_and_gradients_match_torch(locus, env, tmp_path):
    import torch  # make deps installs it: a missing torch fails, never skips
    import torch.nn.functional as F
    m = perturbed(locus, make_vit(locus, tmp_path / "v.h5", env["data"]), tmp_path / "p.h5")
    s = state(locus, m, tmp_path)
    net = vit_ref.torch_vit(locus_h5.load(m)["architecture"], s, "heads.default")
    x, _ = _inputs(env["data"], "test")
    z = logits(locus, m, env["data"], tmp_path)
    with torch.no_grad():
        zt = net(torch.from_numpy(x)).numpy()
    err = np.abs(z - zt).max() / np.abs(zt).max()
    assert err <= 1e-5, err
    # One full-batch SGD step with lr 1: θ1 − θ0 = −∇ of the mean cross-entropy.
    out = tmp_path / "step.h5"
    r = assert_ok(locus("train", m, env["data"], "--head", "default", "--optimizer", "sgd", "--momentum", "0", "--lr", "1",
                        "--schedule", "constant", "--batch-size", "1000", "--epochs", "1", "--val-split", "", "--json", "--quiet", "-o", out))
    xt, yt = _inputs(env["data"], "train")
    net.zero_grad()
    loss = F.cross_entropy(net(torch.from_numpy(xt)), torch.from_numpy(np.asarray(yt)))
    loss.backward()
    assert json.loads(r.out)[0]["trainLoss"] == pytest.approx(loss.item(), rel=1e-5)
    grads = {k.replace("head.", "heads.default.", 1) if k.startswith("head.") else k: p.grad.numpy() for k, p in net.named_parameters()}
    before, after = locus_h5.load(m)["tensors"], locus_h5.load(out)["tensors"]
    worst = 0.0
    for k, g in grads.items():
        delta = after[k].astype(np.float64) - before[k].astype(np.float64)
        e = np.abs(delta + g).max() / max(np.abs(g).max(), 1e-12)
        worst = max(worst, e)
        assert e <= 1e-4, f"{k}: update differs from −∇ by {e}"
    print(f"vit one SGD step vs torch autograd: worst normalized error {worst:.2e} over {len(grads)} tensors")


@pytest.mark.parametrize("estimator", ["talos-exact", "fisher-empirical"])
def test_scores_match_torch_per_sample_gradients(locus, env, tmp_path, estimator):
    """`locus score` (batched, token-shared weights) against a torch loop over samples: one autograd pass per
    sample (and class), squared whole-parameter gradients summed — the definition, in float64."""
    import torch  # make deps installs it: a missing torch fails, never skips
    m = perturbed(locus, make_vit(locus, tmp_path / "v.h5", env["data"]), tmp_path / "p.h5")
    s = state(locus, m, tmp_path)
    net = vit_ref.torch_vit(locus_h5.load(m)["architecture"], s, "heads.default")
    out = tmp_path / "scores.h5"
    assert_ok(locus("score", m, env["data"], "-o", out, "--quiet", "--estimator", estimator, "--batch-size", "7"))
    assert_valid(locus("validate", out))
    got = locus_h5.load(out)["tensors"]
    assert set(got) == set(timm_names(2)) - {"head.weight", "head.bias"}, "every body parameter is scored, never the head"
    x, y = _inputs(env["data"], "train")
    params = dict(net.named_parameters())
    ref = {k: np.zeros(v.shape) for k, v in params.items()}
    for n in range(len(x)):
        z = net(torch.from_numpy(x[n:n + 1]))[0]
        p = torch.softmax(z, 0).detach().numpy()
        if estimator == "talos-exact":
            terms = [(p[c], z[c]) for c in range(len(p))]                      # Σ_c p_c (∂f_c)²
        else:
            terms = [(1.0, torch.log_softmax(z, 0)[int(y[n])])]                 # (∂ log p_y)²
        for w, f in terms:
            g = torch.autograd.grad(f, list(params.values()), retain_graph=True)
            for (k, _), gk in zip(params.items(), g):
                ref[k] += w * gk.numpy() ** 2
    worst = 0.0
    for k, v in got.items():
        e = np.abs(v - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-30)
        worst = max(worst, e)
        assert e <= 1e-4, f"{k}: scores differ from torch per-sample gradients by {e}"
    print(f"vit {estimator} scores vs torch per-sample loop: worst normalized error {worst:.2e}")


# ------------------------------------------------------------------ importing a timm ViT-Ti/16

def vit_ti_state(rng, classes=1000):
    d, depth, hidden = 192, 12, 768
    def w(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(np.float32)
    s = {"patch_embed.proj.weight": w(d, 3, 16, 16), "patch_embed.proj.bias": w(d), "cls_token": w(1, 1, d),
         "pos_embed": w(1, 197, d), "norm.weight": 1 + w(d), "norm.bias": w(d), "head.weight": w(classes, d), "head.bias": w(classes)}
    for i in range(depth):
        p = f"blocks.{i}."
        s.update({p + "norm1.weight": 1 + w(d), p + "norm1.bias": w(d), p + "attn.qkv.weight": w(3 * d, d), p + "attn.qkv.bias": w(3 * d),
                  p + "attn.proj.weight": w(d, d), p + "attn.proj.bias": w(d), p + "norm2.weight": 1 + w(d), p + "norm2.bias": w(d),
                  p + "mlp.fc1.weight": w(hidden, d), p + "mlp.fc1.bias": w(hidden), p + "mlp.fc2.weight": w(d, hidden), p + "mlp.fc2.bias": w(d)})
    return s


def test_timm_vit_ti_imports_and_runs(locus, tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(7)
    s = vit_ti_state(rng)
    assert sum(v.size for v in s.values()) == 5_717_416          # timm's vit_tiny_patch16_224
    st = tmp_path / "vit_tiny_patch16_224.safetensors"
    save_file(s, str(st))
    arch = tmp_path / "arch.h5"
    assert_ok(locus("init", "--preset", "vit", "--input", "3,224,224", "--classes", "1000", "--patch-size", "16", "--width", "192",
                    "--depth", "12", "--num-heads", "3", "--head", "imagenet", "--head-prefix", "head", "-o", arch))
    model = tmp_path / "vit-ti.h5"
    assert_ok(locus("convert", st, model, "--architecture", arch))
    assert_valid(locus("validate", model))
    # Four images; forward through eval (logits) and forward + backward through one training step.
    x = rng.standard_normal((4, 3, 224, 224)).astype(np.float32)
    data = tmp_path / "four.h5"
    locus_h5.write_dataset(data, x, np.array([3, 997, 5, 0]), [f"c{i}" for i in range(1000)], {"train": np.arange(2), "test": np.arange(2, 4)},
                           scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = tmp_path / "z.npy"
    assert_ok(locus("eval", model, data, "--head", "imagenet", "--logits", out))
    z = np.load(out)
    assert z.shape == (2, 1000) and np.all(np.isfinite(z))
    ref = vit_ref.numpy_logits(locus_h5.load(model)["architecture"], {k: v.astype(np.float64) for k, v in s.items()}, x[2:].astype(np.float64), "head")
    err = np.abs(z - ref).max() / np.abs(ref).max()
    print(f"ViT-Ti/16 imported from timm-named safetensors: logits vs numpy normalized error {err:.2e}")
    assert err <= 1e-4
    step = tmp_path / "step.h5"
    r = assert_ok(locus("train", model, data, "--head", "imagenet", "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "2",
                        "--val-split", "", "--json", "--quiet", "-o", step))
    assert np.isfinite(json.loads(r.out)[0]["trainLoss"])
    after = locus_h5.load(step)["tensors"]
    assert all(not np.array_equal(after[k], s[k]) for k in ["patch_embed.proj.weight", "cls_token", "pos_embed", "blocks.11.mlp.fc2.weight"])


def test_convert_with_architecture_refuses_a_mismatch(locus, tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(1)
    arch = tmp_path / "arch.h5"
    assert_ok(locus("init", "--preset", "vit", "--input", "3,32,32", "--classes", "10", "--patch-size", "16", "--width", "24",
                    "--depth", "1", "--num-heads", "2", "--head", "cifar", "--head-prefix", "head", "-o", arch))
    good = {k: v for k, v in locus_h5.load(arch)["tensors"].items()}
    bad = dict(good)
    del bad["blocks.0.attn.qkv.bias"]
    bad["pos_embed"] = rng.standard_normal((1, 4, 24)).astype(np.float32)
    st = tmp_path / "bad.safetensors"
    save_file(bad, str(st))
    out = tmp_path / "bad.h5"
    before = snapshot(tmp_path)
    line = assert_error(locus("convert", st, out, "--architecture", arch), "bad.safetensors")
    assert "blocks.0.attn.qkv.bias" in line and "pos_embed" in line and "[1, 5, 24]" in line
    assert_nothing_new(tmp_path, before, out)
    # The same tensors without the problems import, and run.
    st2 = tmp_path / "good.safetensors"
    save_file(good, str(st2))
    assert_ok(locus("convert", st2, tmp_path / "good.h5", "--architecture", arch))


# ------------------------------------------------------------------ score → mask → sparse fine-tune → diff → merge

def test_vit_talos_pipeline(locus, env, tmp_path):
    base = make_vit(locus, tmp_path / "base.h5", env["data"])
    mask = tmp_path / "mask.h5"
    assert_ok(locus("mask", base, env["data"], "-o", mask, "--density", "0.1", "--rounds", "2", "--quiet"))
    assert_valid(locus("validate", mask))
    vectors = []
    for i, lr in enumerate(["3e-3", "1e-3"]):
        ft = tmp_path / f"ft{i}.h5"
        assert_ok(locus("finetune", base, env["data"], "--mask", mask, "--epochs", "2", "--lr", lr, "--batch-size", "8", "--quiet", "-o", ft))
        tv = tmp_path / f"tv{i}.h5"
        assert_ok(locus("diff", base, ft, "-o", tv))
        assert_valid(locus("validate", tv))
        b, f = locus_h5.load(base)["tensors"], locus_h5.load(ft)["tensors"]
        masks = locus_h5.load(mask)["tensors"]
        for k, v in masks.items():
            frozen = ~np.asarray(v, bool)
            assert np.array_equal(b[k][frozen], f[k][frozen]), f"{k}: a frozen entry moved"
        vectors.append(tv)
    merged = tmp_path / "merged.h5"
    assert_ok(locus("merge", base, *vectors, "-o", merged, "--method", "task-arithmetic", "--lambda", "0.5"))
    assert_valid(locus("validate", merged))
    assert locus("eval", merged, env["data"], "--json").json()[0]["samples"] == 6


def test_validate_checks_architecture_against_tensors(locus, env, tmp_path):
    """A checkpoint written by h5py whose /architecture (a ViT) does not fit its tensors is invalid, with each problem named."""
    m = make_vit(locus, tmp_path / "v.h5", env["data"])
    ck = locus_h5.load(m)
    t = dict(ck["tensors"])
    t["pos_embed"] = np.zeros((1, 4, 12), np.float32)
    del t["blocks.1.mlp.fc2.bias"]
    bad = tmp_path / "bad.h5"
    locus_h5.write_checkpoint(bad, t, architecture=ck["architecture"])
    r = locus("validate", bad)
    assert r.code == 1, r
    assert "pos_embed" in r.out and "[1, 5, 12]" in r.out and "blocks.1.mlp.fc2.bias" in r.out, r.out
    arch = dict(ck["architecture"])
    arch["layers"] = [dict(l) for l in arch["layers"]]
    arch["layers"][2]["num_heads"] = 5                      # 12 is not a multiple of 5
    locus_h5.write_checkpoint(bad, dict(ck["tensors"]), architecture=arch)
    r = locus("validate", bad)
    assert r.code == 1 and "num_heads" in r.out, r


def test_spec_only_fixture_runs(locus, tmp_path):
    """fixtures/h5py/vit_checkpoint.h5, written by the spec-only h5py script, evaluates to the numpy reference's logits."""
    from conftest import FIXTURES
    fx = FIXTURES / "vit_checkpoint.h5"
    ck = locus_h5.load(fx)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    data = tmp_path / "d.h5"
    locus_h5.write_dataset(data, x, np.arange(5) % 3, ["a", "b", "c"], {"test": np.arange(5)}, scale=1.0)
    out = tmp_path / "z.npy"
    assert_ok(locus("eval", fx, data, "--head", "digits", "--logits", out))
    ref = vit_ref.numpy_logits(ck["architecture"], {k: v.astype(np.float64) for k, v in ck["tensors"].items()}, x.astype(np.float64), "head")
    z = np.load(out)
    assert np.abs(z - ref).max() / np.abs(ref).max() <= 1e-5


# ------------------------------------------------------------------ against the numpy backward (no torch needed)

def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_gradients_match_numpy_backward(locus, env, tmp_path):
    """One full-batch SGD step with lr 1 moves every parameter by −∇ of the mean cross-entropy, ∇ from vit_ref.NumpyViT."""
    m = perturbed(locus, make_vit(locus, tmp_path / "v.h5", env["data"]), tmp_path / "p.h5")
    out = tmp_path / "step.h5"
    assert_ok(locus("train", m, env["data"], "--head", "default", "--optimizer", "sgd", "--momentum", "0", "--lr", "1",
                    "--schedule", "constant", "--batch-size", "1000", "--epochs", "1", "--val-split", "", "--quiet", "-o", out))
    x, y = _inputs(env["data"], "train")
    ref = vit_ref.NumpyViT(locus_h5.load(m)["architecture"], state(locus, m, tmp_path), "heads.default")
    z = ref.forward(x)
    dl = _softmax(z)
    dl[np.arange(len(y)), y] -= 1
    grads = ref.backward(dl / len(y))
    before, after = locus_h5.load(m)["tensors"], locus_h5.load(out)["tensors"]
    assert set(grads) == set(before)
    worst = 0.0
    for k, g in grads.items():
        e = np.abs(after[k].astype(np.float64) - before[k] + g).max() / max(np.abs(g).max(), 1e-12)
        worst = max(worst, e)
        assert e <= 1e-4, f"{k}: update differs from −∇ by {e}"
    print(f"vit one SGD step vs numpy backward: worst normalized error {worst:.2e}")


@pytest.mark.parametrize("estimator", ["talos-exact", "fisher-empirical", "fisher-exact"])
def test_scores_match_numpy_per_sample_gradients(locus, env, tmp_path, estimator):
    """`locus score` against the definition: per sample (and class), a numpy backward pass, whole gradients squared."""
    m = perturbed(locus, make_vit(locus, tmp_path / "v.h5", env["data"]), tmp_path / "p.h5")
    out = tmp_path / "scores.h5"
    assert_ok(locus("score", m, env["data"], "-o", out, "--quiet", "--estimator", estimator, "--batch-size", "5"))
    got = locus_h5.load(out)["tensors"]
    ref_model = vit_ref.NumpyViT(locus_h5.load(m)["architecture"], state(locus, m, tmp_path), "heads.default")
    x, y = _inputs(env["data"], "train")
    ref = {}
    for n in range(len(x)):
        z = ref_model.forward(x[n:n + 1])[0]
        p = _softmax(z)
        if estimator == "talos-exact":
            passes = [(p[c], np.eye(3)[c]) for c in range(3)]                  # Σ_c p_c (∂f_c)²
        elif estimator == "fisher-empirical":
            passes = [(1.0, np.eye(3)[y[n]] - p)]                              # (∂ log p_y)²
        else:
            passes = [(p[c], np.eye(3)[c] - p) for c in range(3)]             # Σ_c p_c (∂ log p_c)²
        for w, dl in passes:
            for k, g in ref_model.backward(dl[None]).items():
                ref[k] = ref.get(k, 0) + w * g ** 2
    assert set(got) == set(ref) - {"heads.default.weight", "heads.default.bias"}
    worst = max(np.abs(v - ref[k]).max() / max(np.abs(ref[k]).max(), 1e-30) for k, v in got.items())
    print(f"vit {estimator} scores vs numpy per-sample backward: worst normalized error {worst:.2e}")
    assert worst <= 1e-4
