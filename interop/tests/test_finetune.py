"""Sparse fine-tuning through the CLI (`locus finetune`, `diff`, `apply`), checked against the independent
numpy optimizers of finetune_ref.py on engine_ref's numpy model, and task vectors read with h5py by the
spec's own recipes (FORMAT.md §4–§5).

Weights reach numpy the way a user's do: `locus convert model.h5 model.safetensors`.
"""
import hashlib
import json
from urllib.parse import unquote

import h5py
import numpy as np
import pytest

import engine_ref
import finetune_ref
import locus_h5
from conftest import (assert_error, assert_nothing_new, assert_ok, assert_valid, h5_stored_bytes, snapshot, spec_fingerprint,
                      tensor_digest)

N_TRAIN = 40
CLASSES = ["a", "b", "c"]


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def setup(locus, tmp_path_factory):
    """A flat 3-class dataset, an MLP base, and a mask exercising every ParameterMask representation:
    layer 1 weight 30 % (index list), layer 1 bias 75 % (multiplier), layer 3 weight all ones (dense),
    layer 3 bias all zero (frozen, no state)."""
    d = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((3, 20)) * 1.2
    y = np.arange(60) % 3
    x = (centres[y] + rng.standard_normal((60, 20))).astype(np.float32)
    data = d / "data.h5"
    locus_h5.write_dataset(data, x, y, CLASSES, {"train": np.arange(N_TRAIN), "val": np.arange(40, 50), "test": np.arange(50, 60)})
    base = d / "base.h5"
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "16,12", "--data", data, "--seed", "1", "-o", base))
    tensors = locus_h5.load(base)["tensors"]
    w1, b1, w3, b3 = "layers.1.weight", "layers.1.bias", "layers.3.weight", "layers.3.bias"
    assert sorted(k for k in tensors if k.startswith("layers.")) == sorted([w1, b1, w3, b3]), sorted(tensors)
    masks = {w1: rng.random(tensors[w1].shape) < 0.3, b1: rng.random(tensors[b1].shape) < 0.75,
             w3: np.ones(tensors[w3].shape, bool), b3: np.zeros(tensors[b3].shape, bool)}
    mask = d / "mask.h5"
    locus_h5.write_mask(mask, masks, base=str(base))
    other = d / "other.h5"
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "16,12", "--data", data, "--seed", "2", "-o", other))
    return {"dir": d, "data": data, "base": base, "mask": mask, "masks": masks, "other": other, "x": x, "y": y,
            "arch": locus_h5.load(base)["architecture"]}


def _body_names(setup):
    return list(setup["masks"])


def _state(locus, model, tmp):
    st = tmp / (model.stem + ".safetensors")
    assert_ok(locus("convert", model, st))
    return engine_ref.read_safetensors(st)


def _finetune(locus, setup, out, *args, mask=None, steps=1, extra=()):
    """Full-batch `locus finetune` (constant lr, deterministic); returns the per-epoch JSON report."""
    r = assert_ok(locus("finetune", setup["base"], setup["data"], "--mask", mask or setup["mask"], "-o", out, "--epochs", steps,
                        "--batch-size", N_TRAIN, "--schedule", "constant", "--deterministic", "--quiet", "--json", *args, *extra))
    return json.loads(r.out[r.out.index("["):])


def _train_xy(setup):
    return setup["x"][:N_TRAIN].astype(np.float64), setup["y"][:N_TRAIN]


# ------------------------------------------------------------------ 2. one and several full-batch steps vs numpy

CONFIGS = {
    "sgd": (["--optimizer", "sgd", "--lr", "0.5", "--momentum", "0"], lambda: finetune_ref.SparseSGDM(lr=finetune_ref.f32(0.5))),
    "sgd-momentum-wd": (["--optimizer", "sgd", "--lr", "0.3", "--momentum", "0.9", "--weight-decay", "0.01"],
                        lambda: finetune_ref.SparseSGDM(lr=finetune_ref.f32(0.3), momentum=finetune_ref.f32(0.9), weight_decay=finetune_ref.f32(0.01))),
    "sgd-dampening": (["--optimizer", "sgd", "--lr", "0.3", "--momentum", "0.8", "--dampening", "0.5", "--weight-decay", "0.05"],
                      lambda: finetune_ref.SparseSGDM(lr=finetune_ref.f32(0.3), momentum=finetune_ref.f32(0.8), dampening=0.5,
                                                      weight_decay=finetune_ref.f32(0.05))),
    "sgd-nesterov": (["--optimizer", "sgd", "--lr", "0.2", "--momentum", "0.9", "--nesterov", "--weight-decay", "0.02"],
                     lambda: finetune_ref.SparseSGDM(lr=finetune_ref.f32(0.2), momentum=finetune_ref.f32(0.9), nesterov=True,
                                                     weight_decay=finetune_ref.f32(0.02))),
    "adamw": (["--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.1"],
              lambda: finetune_ref.AdaptW(lr=finetune_ref.f32(0.01), weight_decay=finetune_ref.f32(0.1))),
    "adamw-nowd": (["--optimizer", "adamw", "--lr", "0.003"], lambda: finetune_ref.AdaptW(lr=finetune_ref.f32(0.003))),
}


@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_full_batch_steps_match_numpy(locus, setup, tmp_path, name, steps):
    args, make = CONFIGS[name]
    out = tmp_path / "ft.h5"
    report = _finetune(locus, setup, out, *args, steps=steps)
    base = _state(locus, setup["base"], tmp_path)
    got = _state(locus, out, tmp_path)
    x, y = _train_xy(setup)
    ref, losses = finetune_ref.finetune(setup["arch"], base, x, y, "default", setup["masks"], make(), steps)
    # The loss of every epoch (full batch) is the loss at the weights before that step.
    assert [e["trainLoss"] for e in report] == pytest.approx(losses, rel=1e-5)
    worst_w = worst_d = 0.0
    for k, m in setup["masks"].items():
        w_err = np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()
        delta_ref = ref[k] - base[k]
        d_err = np.abs((got[k] - base[k]) - delta_ref).max() / max(np.abs(delta_ref).max(), 1e-30)
        worst_w, worst_d = max(worst_w, w_err), max(worst_d, d_err if m.any() else 0)
        assert w_err <= 1e-6, f"{name}, {steps} step(s): {k} differs from numpy by {w_err:.2e} (relative to max |w|)"
        assert d_err <= 1e-4 or not m.any(), f"{name}, {steps} step(s): {k} update differs from numpy by {d_err:.2e} (relative to max |Δ|)"
        # Frozen entries: bit for bit the base.
        b32, g32 = base[k].astype(np.float32), got[k].astype(np.float32)
        assert np.array_equal(b32[~m].view(np.uint32), g32[~m].view(np.uint32)), f"{name}: {k} frozen entries moved"
    for k in ("heads.default.weight", "heads.default.bias"):
        assert np.array_equal(got[k], base[k]), f"{name}: the head is frozen by default"
    print(f"{name}, {steps} step(s): worst weight error {worst_w:.2e}, worst update error {worst_d:.2e}")


def test_train_head_and_absent_trainable_match_numpy(locus, setup, tmp_path):
    """--train-head trains the head densely; a mask with absent-tensors=trainable trains unlisted body tensors densely."""
    names = _body_names(setup)
    partial = {k: v for k, v in setup["masks"].items() if k != names[2]}   # drop the all-ones tensor: absent → trainable
    mask = tmp_path / "absent.h5"
    locus_h5.write_mask(mask, partial, base=str(setup["base"]), absent_tensors="trainable")
    out = tmp_path / "ft.h5"
    args, make = CONFIGS["sgd-nesterov"]
    _finetune(locus, setup, out, *args, "--train-head", mask=mask, steps=3)
    base, got = _state(locus, setup["base"], tmp_path), _state(locus, out, tmp_path)
    x, y = _train_xy(setup)
    ref, _ = finetune_ref.finetune(setup["arch"], base, x, y, "default", setup["masks"], make(), 3, train_head=True)
    for k in ref:
        err = np.abs(got[k] - ref[k]).max() / np.abs(ref[k]).max()
        assert err <= 1e-6, f"{k}: {err:.2e}"
    assert not np.array_equal(got["heads.default.weight"], base["heads.default.weight"])


def test_head_listed_in_the_mask_with_train_head(locus, setup, tmp_path):
    """A mask that also lists the head (any mask made outside `locus mask`, e.g. by `locus convert --kind mask`)
    plus --train-head: the head trains densely, once per step — the same result as without the head in the mask."""
    masks = dict(setup["masks"])
    rng = np.random.default_rng(3)
    masks["heads.default.weight"] = rng.random((3, 12)) < 0.2       # index-list representation
    masks["heads.default.bias"] = np.array([True, True, False])     # multiplier
    with_head = tmp_path / "with-head.h5"
    locus_h5.write_mask(with_head, masks, base=str(setup["base"]))
    for opt in (CONFIGS["sgd-momentum-wd"][0], CONFIGS["adamw"][0]):
        a, b = tmp_path / "a.h5", tmp_path / "b.h5"
        _finetune(locus, setup, a, *opt, "--train-head", mask=with_head, steps=3)
        _finetune(locus, setup, b, *opt, "--train-head", steps=3)
        ta, tb = locus_h5.load(a)["tensors"], locus_h5.load(b)["tensors"]
        for k in tb:
            assert np.array_equal(ta[k], tb[k]), f"{opt[1]}: {k} differs when the mask also lists the head"


# ------------------------------------------------------------------ 3. task vectors: finetune --task-vector, diff, apply

def _read_tv_spec(g):
    """FORMAT.md §5 `read_tv`, verbatim."""
    shape, n, enc = tuple(g.attrs["shape"]), int(g.attrs["count"]), g.attrs["encoding-type"]
    out = np.zeros(n, dtype=g["values"].dtype)
    if enc == "coo":
        out[g["indices"][()]] = g["values"][()]
    elif enc == "bitmask":
        out[np.unpackbits(g["mask"][()], bitorder="little", count=n).astype(bool)] = g["values"][()]
    else:
        out[:] = g["values"][()].reshape(-1)
    return out.reshape(shape)


def _spec_tau(path):
    with h5py.File(path, "r") as f:
        return {unquote(k): f.attrs["scale"] * _read_tv_spec(g) for k, g in f["tensors"].items()}


def _mask_fingerprint(path):
    """FORMAT.md §4: the §1.5 fingerprint over the packed-bits datasets taken as uint8 tensors [ceil(count/8)]."""
    with h5py.File(path, "r") as f:
        items = sorted(((unquote(k), ds) for k, ds in f["tensors"].items()), key=lambda kv: kv[0].encode())
        h = hashlib.sha256(b"locus-fingerprint-v1\n")
        for name, ds in items:
            h.update(f"{name}\nuint8\n{ds.shape[0]}\n".encode())
            h.update(tensor_digest(ds[()].astype("u1").tobytes()))
        return "sha256:" + h.hexdigest()


def _datasets(path):
    """{tensor: {dataset: stored bytes}, attrs} of a task vector, for exact comparisons."""
    out = {}
    with h5py.File(path, "r") as f:
        for k, g in f["tensors"].items():
            out[unquote(k)] = ({n: h5_stored_bytes(ds) for n, ds in g.items()},
                               {a: (v.tolist() if hasattr(v, "tolist") else v) for a, v in g.attrs.items()})
    return out


@pytest.fixture(scope="module")
def tuned(locus, setup, tmp_path_factory):
    d = tmp_path_factory.mktemp("tuned")
    ft, tv = d / "ft.h5", d / "tv.h5"
    r = assert_ok(locus("finetune", setup["base"], setup["data"], "--mask", setup["mask"], "-o", ft, "--task-vector", tv,
                        "--epochs", 3, "--batch-size", 8, "--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0.1",
                        "--deterministic", "--quiet", "--json"))
    report = json.loads(r.out[r.out.index("["):])
    return {"dir": d, "ft": ft, "tv": tv, "report": report}


def test_task_vector_equals_diff(locus, setup, tuned, tmp_path):
    assert_valid(locus("validate", tuned["tv"]))
    assert_valid(locus("validate", tuned["ft"]))
    d = tmp_path / "diff.h5"
    assert_ok(locus("diff", setup["base"], tuned["ft"], "-o", d))
    a, b = _datasets(tuned["tv"]), _datasets(d)
    assert set(a) == set(b), "same tensors"
    for k in a:
        assert a[k][0] == b[k][0], f"{k}: indices / mask / values differ between finetune --task-vector and diff"
        assert a[k][1] == b[k][1], f"{k}: attributes differ"
    with h5py.File(tuned["tv"]) as f, h5py.File(d) as g:
        for attr in ("base-fingerprint", "finetuned-fingerprint", "nnz", "count", "tensor-count", "scale"):
            assert f.attrs[attr] == g.attrs[attr], attr
        assert f.attrs["l2-norm"] == pytest.approx(g.attrs["l2-norm"], rel=1e-12)


def test_task_vector_content_and_attributes(locus, setup, tuned, tmp_path):
    tau = _spec_tau(tuned["tv"])
    base = locus_h5.load(setup["base"])["tensors"]
    ft = locus_h5.load(tuned["ft"])["tensors"]
    masks = setup["masks"]
    ones = sum(int(m.sum()) for m in masks.values())
    with h5py.File(tuned["tv"]) as f:
        nnz = int(f.attrs["nnz"])
        assert nnz <= ones, f"nnz {nnz} > mask ones {ones}"
        assert f.attrs["base-fingerprint"] == spec_fingerprint(setup["base"])
        assert f.attrs["finetuned-fingerprint"] == spec_fingerprint(tuned["ft"])
        assert f.attrs["mask-fingerprint"] == _mask_fingerprint(setup["mask"])
        assert f.attrs["task-head"] == "default" and f.attrs["task-split"] == "val"
        acc = float(f.attrs["task-accuracy"])
    assert acc == pytest.approx(tuned["report"][-1]["validationAccuracy"])
    e = locus("eval", tuned["ft"], setup["data"], "--split", "val", "--json").json()[0]
    assert e["accuracy"] == pytest.approx(acc), "task-accuracy is the fine-tuned model's accuracy on val"
    assert set(tau) <= set(masks), f"τ has tensors outside the mask: {set(tau) - set(masks)}"
    total = 0
    for k, t in tau.items():
        assert np.all(t[~masks[k]] == 0), f"{k}: τ nonzero where the mask is 0"
        np.testing.assert_array_equal(base[k].astype(np.float64) + t, ft[k].astype(np.float64), err_msg=f"{k}: base + τ ≠ ft")
        total += int(np.count_nonzero(t))
    assert total == nnz
    for k in set(base) - set(tau):
        assert np.array_equal(base[k], ft[k]), f"{k} changed but is not in τ"


def test_apply_reproduces_the_fine_tuned_checkpoint(locus, setup, tuned, tmp_path):
    out = tmp_path / "applied.h5"
    assert_ok(locus("apply", setup["base"], tuned["tv"], "-o", out))
    assert_valid(locus("validate", out))
    with h5py.File(out) as f, h5py.File(tuned["ft"]) as g:
        assert set(f["tensors"]) == set(g["tensors"])
        for k in g["tensors"]:
            assert h5_stored_bytes(f["tensors"][k]) == h5_stored_bytes(g["tensors"][k]), f"{k}: α = 1 is not bit for bit"
        assert f.attrs["fingerprint"] == g.attrs["fingerprint"]
    assert spec_fingerprint(out) == spec_fingerprint(tuned["ft"])
    zero = tmp_path / "zero.h5"
    assert_ok(locus("apply", setup["base"], tuned["tv"], "-o", zero, "--alpha", "0"))
    assert spec_fingerprint(zero) == spec_fingerprint(setup["base"])
    # α = 0.5 in float64, rounded once to float32.
    half = tmp_path / "half.h5"
    assert_ok(locus("apply", setup["base"], tuned["tv"], "-o", half, "--alpha", "0.5"))
    tau, base, h = _spec_tau(tuned["tv"]), locus_h5.load(setup["base"])["tensors"], locus_h5.load(half)["tensors"]
    for k in base:
        want = (base[k].astype(np.float64) + 0.5 * tau.get(k, 0)).astype(np.float32)
        assert np.array_equal(h[k], want), k


@pytest.mark.parametrize("how,value", [("density", 0.01), ("density", 0.05), ("density", 0.2), ("density", 1.0),
                                       ("threshold", 0.0), ("threshold", 0.005), ("threshold", 0.02), ("threshold", 1.0)])
def test_diff_density_and_threshold_match_numpy(locus, setup, tuned, tmp_path, how, value):
    d = tmp_path / "sparse.h5"
    assert_ok(locus("diff", setup["base"], tuned["ft"], "-o", d, f"--{how}", value))
    base, ft = locus_h5.load(setup["base"])["tensors"], locus_h5.load(tuned["ft"])["tensors"]
    names = sorted(base, key=lambda s: s.encode())
    full = {k: ft[k].astype(np.float64) - base[k].astype(np.float64) for k in names}
    if how == "density":
        want = finetune_ref.top_density(full, value)
    else:
        want = {k: np.flatnonzero((np.abs(v) >= value) & (v != 0)) for k, v in full.items()}
        want = {k: v for k, v in want.items() if v.size}
    got = _spec_tau(d)
    assert set(got) == set(want), f"--{how} {value}: tensors {sorted(got)} vs numpy {sorted(want)}"
    for k, idx in want.items():
        g = np.ravel(got[k])
        assert np.array_equal(np.flatnonzero(g), idx), f"--{how} {value}: {k} keeps other entries than numpy"
        assert np.array_equal(g[idx], np.ravel(full[k])[idx]), f"{k}: kept values must be exact"


def test_in_place_finetune_with_task_vector(locus, setup, tmp_path):
    """`-o BASE` (in place, as `locus train` allows) with --task-vector: τ must still be θ_ft − θ_base of the
    *original* base (its base-fingerprint the original's), or the command must refuse and leave BASE alone."""
    import shutil
    work = tmp_path / "base.h5"
    shutil.copyfile(setup["base"], work)
    original = spec_fingerprint(work)
    tv = tmp_path / "tv.h5"
    r = locus("finetune", work, setup["data"], "--mask", setup["mask"], "-o", work, "--task-vector", tv, "--quiet", "--epochs", "2",
              "--lr", "0.01")
    if r.code != 0:
        assert_error(r, work)
        assert spec_fingerprint(work) == original, "a refused in-place run must leave the base untouched"
        return
    with h5py.File(tv) as f:
        assert f.attrs["base-fingerprint"] == original, "τ of an in-place run names the fine-tuned model as its base"
        assert int(f.attrs["nnz"]) > 0, "τ of an in-place run is empty (diffed the fine-tuned file against itself)"
    out = tmp_path / "applied.h5"
    assert_ok(locus("apply", setup["base"], tv, "-o", out))
    assert spec_fingerprint(out) == spec_fingerprint(work)


# ------------------------------------------------------------------ 4. bad input: exit ≠ 0, one line, no output

def _fails(locus, out, *args, names, contains=(), also_absent=()):
    before = snapshot(out.parent)
    r = locus(*args)
    line = assert_error(r, names[0])
    for n in list(names[1:]) + list(contains):
        assert str(n) in line, f"error line does not mention {n}:\n{r!r}"
    assert_nothing_new(out.parent, before, out)
    for p in also_absent:
        assert not p.exists(), f"{p} was written"
    return line


def test_mask_from_another_base(locus, setup, tmp_path):
    mask = tmp_path / "m-other.h5"
    locus_h5.write_mask(mask, setup["masks"], base=str(setup["other"]))
    out, tv = tmp_path / "ft.h5", tmp_path / "tv.h5"
    _fails(locus, out, "finetune", setup["base"], setup["data"], "--mask", mask, "-o", out, "--task-vector", tv, "--quiet",
           names=[mask], contains=["--force"], also_absent=[tv])
    r = assert_ok(locus("finetune", setup["base"], setup["data"], "--mask", mask, "-o", out, "--task-vector", tv, "--quiet", "--force"))
    assert "warning" in r.err and str(mask) in r.err
    assert out.exists() and tv.exists()


def test_mask_shape_mismatch_and_unknown_tensor(locus, setup, tmp_path):
    names = _body_names(setup)
    bad = dict(setup["masks"])
    bad[names[0]] = np.ones((3, 3), bool)
    mask = tmp_path / "m-shape.h5"
    locus_h5.write_mask(mask, bad, base=str(setup["base"]))
    out = tmp_path / "ft.h5"
    _fails(locus, out, "finetune", setup["base"], setup["data"], "--mask", mask, "-o", out, "--quiet", names=[mask], contains=[names[0], "[3, 3]"])
    extra = dict(setup["masks"])
    extra["layers.9.weight"] = np.ones(4, bool)
    mask2 = tmp_path / "m-extra.h5"
    locus_h5.write_mask(mask2, extra, base=str(setup["base"]))
    _fails(locus, out, "finetune", setup["base"], setup["data"], "--mask", mask2, "-o", out, "--quiet", names=[mask2], contains=["layers.9.weight"])


def test_mask_with_nothing_trainable(locus, setup, tmp_path):
    mask = tmp_path / "m-zero.h5"
    locus_h5.write_mask(mask, {k: np.zeros_like(v) for k, v in setup["masks"].items()}, base=str(setup["base"]))
    out, tv = tmp_path / "ft.h5", tmp_path / "tv.h5"
    _fails(locus, out, "finetune", setup["base"], setup["data"], "--mask", mask, "-o", out, "--task-vector", tv, "--quiet",
           names=[mask], also_absent=[tv])
    # With --train-head the head is trainable: it trains, the body does not move.
    assert_ok(locus("finetune", setup["base"], setup["data"], "--mask", mask, "-o", out, "--task-vector", tv, "--quiet", "--train-head",
                    "--epochs", "2", "--lr", "0.01"))
    b, f = locus_h5.load(setup["base"])["tensors"], locus_h5.load(out)["tensors"]
    for k in setup["masks"]:
        assert np.array_equal(b[k].view(np.uint32), f[k].view(np.uint32)), k
    assert not np.array_equal(b["heads.default.weight"], f["heads.default.weight"])
    assert set(_spec_tau(tv)) == {"heads.default.weight", "heads.default.bias"}


def test_unknown_head(locus, setup, tmp_path):
    out = tmp_path / "ft.h5"
    _fails(locus, out, "finetune", setup["base"], setup["data"], "--mask", setup["mask"], "-o", out, "--head", "nope", "--quiet",
           names=[setup["base"]], contains=["nope"])


def test_apply_task_vector_of_another_base(locus, setup, tuned, tmp_path):
    out = tmp_path / "x.h5"
    _fails(locus, out, "apply", setup["other"], tuned["tv"], "-o", out, names=[tuned["tv"]], contains=["--force"])
    r = assert_ok(locus("apply", setup["other"], tuned["tv"], "-o", out, "--force"))
    assert "warning" in r.err
    o, t = locus_h5.load(setup["other"])["tensors"], _spec_tau(tuned["tv"])
    got = locus_h5.load(out)["tensors"]
    for k in o:
        assert np.array_equal(got[k], (o[k].astype(np.float64) + t.get(k, 0)).astype(np.float32)), k


def test_apply_result_overflowing_float32_is_refused(locus, setup, tuned, tmp_path):
    """θ + α·τ that overflows float32 must fail like any other non-finite result, not write ±inf."""
    out = tmp_path / "big.h5"
    _fails(locus, out, "apply", setup["base"], tuned["tv"], "-o", out, "--alpha", "1e300", names=[out])


def test_diff_of_checkpoints_with_different_tensors(locus, setup, tmp_path):
    out = tmp_path / "d.h5"
    small = tmp_path / "small.h5"
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "8", "--data", setup["data"], "-o", small))
    _fails(locus, out, "diff", setup["base"], small, "-o", out, names=[small])
    t = locus_h5.load(setup["base"])["tensors"]
    renamed = tmp_path / "renamed.h5"
    locus_h5.write_checkpoint(renamed, {("x." + k if k.startswith("heads") else k): v for k, v in t.items()})
    _fails(locus, out, "diff", setup["base"], renamed, "-o", out, names=[renamed], contains=["heads.default.weight"])
    _fails(locus, out, "diff", setup["base"], setup["base"], "-o", out, "--density", "0.1", "--threshold", "0.1", names=[out])
