"""The engine through the CLI (`locus init` / `train` / `eval`), checked against the independent numpy
model of engine_ref.py (and torch, when installed) on dataset artifacts written by locus_h5.

Weights reach Python the way a user's do: `locus convert model.h5 model.safetensors`, then looked up
by their PyTorch state-dict names.
"""
import json

import numpy as np
import pytest

import engine_ref
import locus_h5
from conftest import assert_error, assert_nothing_new, assert_ok, assert_valid, snapshot

CLASSES = ["left", "middle", "right"]


def _images(n, classes, seed):
    """uint8 [n, 1, 12, 12]: class c has a bright vertical band at a class-dependent column block, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(n, 1, 12, 12)).astype(np.uint8)
    y = np.arange(n) % classes
    width = 12 // classes
    for i, c in enumerate(y):
        x[i, 0, :, c * width:(c + 1) * width] += 150
    return x, y


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Image datasets (3 and 5 classes), a flat one, and their numpy content."""
    d = tmp_path_factory.mktemp("engine-data")
    x, y = _images(36, 3, seed=1)
    img = d / "img.h5"
    locus_h5.write_dataset(img, x, y, CLASSES, {"train": np.arange(24), "val": np.arange(24, 30), "test": np.arange(30, 36)},
                           mean=(0.2,), std=(0.3,))
    x5, y5 = _images(20, 5, seed=2)
    img5 = d / "img5.h5"
    locus_h5.write_dataset(img5, x5, y5, [f"k{i}" for i in range(5)], {"train": np.arange(15), "test": np.arange(15, 20)})
    flat = d / "flat.h5"
    rng = np.random.default_rng(3)
    locus_h5.write_dataset(flat, rng.standard_normal((12, 10)).astype(np.float32), np.arange(12) % 3, CLASSES,
                           {"train": np.arange(8), "test": np.arange(8, 12)})
    img2 = d / "img2.h5"
    x2 = np.random.default_rng(4).standard_normal((15, 2, 12, 12)).astype(np.float32) * 3 + 1
    locus_h5.write_dataset(img2, x2, np.arange(15) % 3, CLASSES, {"test": np.arange(15)}, scale=0.5, mean=(0.1, 0.7), std=(0.9, 2.5))
    return {"dir": d, "img": img, "img5": img5, "flat": flat, "img2": img2, "x": x, "y": y}


def _init(locus, out, *args):
    assert_ok(locus("init", "-o", out, *args))
    assert_valid(locus("validate", out))
    return out


def _state(locus, model, tmp_path):
    """The model's tensors via `locus convert` → safetensors → parsed by hand (float64)."""
    st = tmp_path / (model.stem + ".safetensors")
    assert_ok(locus("convert", model, st))
    return engine_ref.read_safetensors(st)


def _arch(model):
    return locus_h5.load(model)["architecture"]


def _inputs(dataset, idx=None):
    d = locus_h5.load(dataset)
    a = d["inputs_attrs"]
    x = engine_ref.normalise(d["inputs"], float(a["scale"]), a["mean"], a["std"])
    y = d["labels"]
    if idx is not None:
        x, y = x[d["splits"][idx]], y[d["splits"][idx]]
    return x, y


def _tensors(path):
    return locus_h5.load(path)["tensors"]


# ------------------------------------------------------------------ init

def test_init_mlp_from_data(locus, data, tmp_path):
    out = tmp_path / "mlp.h5"
    r = assert_ok(locus("init", "--preset", "mlp", "--hidden", "16,8", "--data", data["img"], "--head", "shapes", "-o", out))
    assert_valid(locus("validate", out))
    arch = _arch(out)
    assert arch["format"] == "locus-sequential" and arch["version"] == 1 and arch["preset"] == "mlp"
    assert arch["input"] == [1, 12, 12]
    assert [l["type"] for l in arch["layers"]] == ["flatten", "linear", "relu", "linear", "relu"]
    assert arch["heads"] == [{"name": "shapes", "in_features": 8, "out_features": 3, "classes": CLASSES}]
    t = _tensors(out)
    shapes = {k: v.shape for k, v in t.items()}
    assert shapes == {"layers.1.weight": (16, 144), "layers.1.bias": (16,), "layers.3.weight": (8, 16), "layers.3.bias": (8,),
                      "heads.shapes.weight": (3, 8), "heads.shapes.bias": (3,)}
    assert all(v.dtype == np.float32 for v in t.values())
    # PyTorch's default bounds U(±1/√fan_in).
    assert np.abs(t["layers.1.weight"]).max() <= 1 / np.sqrt(144) and np.abs(t["heads.shapes.bias"]).max() <= 1 / np.sqrt(8)
    assert str(sum(v.size for v in t.values())) in r.out


def test_init_lenet(locus, tmp_path):
    out = _init(locus, tmp_path / "lenet.h5", "--preset", "lenet", "--input", "1,12,12", "--classes", "4", "--channels", "2,3",
                "--hidden", "8")
    arch = _arch(out)
    assert [l["type"] for l in arch["layers"]] == ["conv2d", "relu", "maxpool2d", "conv2d", "relu", "maxpool2d", "flatten", "linear", "relu"]
    assert arch["layers"][0]["padding"] == 2 and arch["layers"][0]["kernel_size"] == 5
    assert arch["heads"][0]["name"] == "default" and arch["heads"][0]["out_features"] == 4
    shapes = {k: v.shape for k, v in _tensors(out).items()}
    assert shapes == {"layers.0.weight": (2, 1, 5, 5), "layers.0.bias": (2,), "layers.3.weight": (3, 2, 5, 5), "layers.3.bias": (3,),
                      "layers.7.weight": (8, 3), "layers.7.bias": (8,), "heads.default.weight": (4, 8), "heads.default.bias": (4,)}


EVERYTHING = {
    "format": "locus-sequential",
    "version": 1,
    "input": [2, 8, 8],
    "layers": [
        {"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
        {"type": "gelu"},
        {"type": "maxpool2d", "kernel_size": 2, "stride": 1},
        {"type": "conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 2, "padding": 1, "bias": False},
        {"type": "relu"},
        {"type": "avgpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "layernorm", "normalized_shape": 16},
        {"type": "linear", "in_features": 16, "out_features": 6},
        {"type": "dropout", "p": 0.2},
    ],
    "heads": [{"name": "a", "in_features": 6, "out_features": 3}, {"name": "b-2", "in_features": 6, "out_features": 2}],
}


def test_init_config(locus, tmp_path):
    cfg = tmp_path / "arch.json"
    cfg.write_text(json.dumps(EVERYTHING))
    out = _init(locus, tmp_path / "c.h5", "--config", cfg, "--seed", "3")
    arch = _arch(out)
    assert arch["input"] == EVERYTHING["input"] and [h["name"] for h in arch["heads"]] == ["a", "b-2"]
    assert [l["type"] for l in arch["layers"]] == [l["type"] for l in EVERYTHING["layers"]]
    t = _tensors(out)
    assert "layers.3.bias" not in t and t["layers.3.weight"].shape == (4, 3, 2, 2)
    assert np.all(t["layers.7.weight"] == 1) and np.all(t["layers.7.bias"] == 0), "LayerNorm starts at γ = 1, β = 0"
    assert set(t) == {"layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.7.weight", "layers.7.bias", "layers.8.weight",
                      "layers.8.bias", "heads.a.weight", "heads.a.bias", "heads.b-2.weight", "heads.b-2.bias"}


def test_init_config_without_format_and_version(locus, tmp_path):
    """`format` and `version` have defaults in the engine; a hand-written file without them must either
    work or fail with one line that names the file (not a Swift DecodingError about 'locus')."""
    cfg = tmp_path / "arch.json"
    cfg.write_text(json.dumps({k: v for k, v in EVERYTHING.items() if k not in ("format", "version")}))
    out = tmp_path / "c.h5"
    r = locus("init", "--config", cfg, "-o", out)
    if r.code != 0:
        assert_error(r, cfg)
        assert not out.exists()


def test_init_seed(locus, tmp_path):
    args = ["--preset", "mlp", "--input", "6", "--classes", "2", "--hidden", "4"]
    a = _tensors(_init(locus, tmp_path / "a.h5", *args, "--seed", "5"))
    b = _tensors(_init(locus, tmp_path / "b.h5", *args, "--seed", "5"))
    c = _tensors(_init(locus, tmp_path / "c.h5", *args, "--seed", "6"))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------ eval vs numpy

def _numpy_eval(model_path, state, dataset, split):
    x, y = _inputs(dataset, split)
    arch = _arch(model_path)
    head = arch["heads"][0]["name"]
    z = engine_ref.NumpyModel(arch, state, mode="eval").logits(x, head)
    loss, _ = engine_ref.softmax_cross_entropy(z, y)
    pred = z.argmax(axis=1)
    per = [float(np.mean(pred[y == c] == c)) if np.any(y == c) else None for c in range(z.shape[1])]
    return loss, float(np.mean(pred == y)), per, z


@pytest.mark.parametrize("preset,dataset", [("mlp", "img"), ("lenet", "img"), ("mlp", "img2"), ("lenet", "img2")])
def test_eval_matches_numpy(locus, data, tmp_path, preset, dataset):
    """img: uint8, one channel; img2: float32, two channels with per-channel mean/std and a scale."""
    extra = ["--hidden", "12"] + (["--channels", "2,4"] if preset == "lenet" else [])
    model = _init(locus, tmp_path / f"{preset}.h5", "--preset", preset, "--data", data[dataset], "--seed", "9", *extra)
    state = _state(locus, model, tmp_path)
    n = {"img": 36, "img2": 15}[dataset]
    for split in ["test", ""]:
        r = locus("eval", model, data[dataset], "--json", "--split", split).json()
        assert len(r) == 1 and r[0]["head"] == "default" and r[0]["classes"] == CLASSES
        loss, acc, per, _ = _numpy_eval(model, state, data[dataset], split or None)
        assert r[0]["samples"] == (n if not split or dataset == "img2" else 6)
        assert r[0]["loss"] == pytest.approx(loss, rel=1e-5), f"split {split!r}: locus {r[0]['loss']} vs numpy {loss}"
        assert r[0]["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert r[0]["perClassAccuracy"] == pytest.approx(per, abs=1e-12)


def test_eval_text_and_per_class(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8", "--head", "shapes")
    r = assert_ok(locus("eval", model, data["img"], "--per-class"))
    lines = r.out.strip().splitlines()
    assert lines[0].startswith("shapes: accuracy ") and "on 6 samples (test)" in lines[0]
    assert [ln.split(":")[0].strip() for ln in lines[1:]] == CLASSES
    # --head names the head explicitly.
    assert locus("eval", model, data["img"], "--head", "shapes", "--json").json()[0]["head"] == "shapes"


def test_torch_loads_the_exported_state_dict(locus, data, tmp_path):
    import torch  # make deps installs it: a missing torch fails, never skips
    cfg = tmp_path / "arch.json"
    cfg.write_text(json.dumps(EVERYTHING))
    model = _init(locus, tmp_path / "c.h5", "--config", cfg, "--seed", "4")
    state = _state(locus, model, tmp_path)
    arch = _arch(model)
    # load_state_dict(strict=True) into `layers = nn.Sequential(...)`, `heads = nn.ModuleDict(...)`: the naming claim.
    m = engine_ref.torch_module(arch, state)
    assert set(m.state_dict()) == set(state)
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8))
    m.eval()
    with torch.no_grad():
        zt = m(torch.from_numpy(x), "b-2").numpy()
    zn = engine_ref.NumpyModel(arch, state, mode="eval").logits(x, "b-2")
    np.testing.assert_allclose(zt, zn, rtol=1e-10, atol=1e-12)


def test_torch_matches_locus_eval(locus, data, tmp_path):
    import torch  # make deps installs it: a missing torch fails, never skips
    import torch.nn.functional as F
    model = _init(locus, tmp_path / "l.h5", "--preset", "lenet", "--data", data["img"], "--channels", "3,4", "--hidden", "10", "--seed", "2")
    state = _state(locus, model, tmp_path)
    m = engine_ref.torch_module(_arch(model), state).eval()
    x, y = _inputs(data["img"], "test")
    with torch.no_grad():
        z = m(torch.from_numpy(x), "default")
        loss = float(F.cross_entropy(z, torch.from_numpy(np.asarray(y))))
        acc = float((z.argmax(1).numpy() == y).mean())
    r = locus("eval", model, data["img"], "--json").json()[0]
    assert r["loss"] == pytest.approx(loss, rel=1e-5)
    assert r["accuracy"] == pytest.approx(acc)


# ------------------------------------------------------------------ train

def test_train_writes_output_and_json_report(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "16", "--head", "shapes")
    out = tmp_path / "trained.h5"
    r = assert_ok(locus("train", model, data["img"], "--head", "shapes", "--epochs", "6", "--lr", "0.01", "--batch-size", "8",
                        "--json", "--deterministic", "--quiet", "-o", out))
    reports = json.loads(r.out)
    assert [e["epoch"] for e in reports] == list(range(1, 7))
    assert set(reports[0]) >= {"epoch", "trainLoss", "trainAccuracy", "validationLoss", "validationAccuracy", "seconds", "samplesPerSecond"}
    assert reports[-1]["trainLoss"] < reports[0]["trainLoss"]
    assert reports[-1]["trainAccuracy"] >= 0.95, reports
    assert_valid(locus("validate", out))
    before, after = _tensors(model), _tensors(out)
    assert set(before) == set(after) and all(not np.array_equal(before[k], after[k]) for k in before)
    assert _arch(out) == _arch(model)
    # The trained model evaluates as well as it trained, and its stored val accuracy is what eval says.
    e = locus("eval", out, data["img"], "--split", "val", "--json").json()[0]
    assert e["accuracy"] == pytest.approx(reports[-1]["validationAccuracy"])
    assert e["loss"] == pytest.approx(reports[-1]["validationLoss"], rel=1e-6)
    # Provenance records the source model.
    prov = locus_h5.load(out)["provenance"]
    assert prov is not None and "train" in json.dumps(prov)


def test_train_one_full_batch_sgd_step_matches_numpy(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "10", "--seed", "1")
    out = tmp_path / "step.h5"
    r = assert_ok(locus("train", model, data["img"], "--optimizer", "sgd", "--momentum", "0", "--lr", "0.5", "--schedule", "constant",
                        "--batch-size", "1000", "--epochs", "1", "--val-split", "", "--json", "--quiet", "-o", out))
    state = _state(locus, model, tmp_path)
    x, y = _inputs(data["img"], "train")
    ref = engine_ref.NumpyModel(_arch(model), state).loss_and_grads(x, y, "default")
    report = json.loads(r.out)[0]
    assert report["trainLoss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert report.get("validationLoss") is None
    before, after = _tensors(model), _tensors(out)
    worst = 0.0
    for k, g in ref["grads"].items():
        delta = after[k].astype(np.float64) - before[k].astype(np.float64)
        err = np.abs(delta + 0.5 * g).max() / max(np.abs(0.5 * g).max(), 1e-12)
        worst = max(worst, err)
        assert err <= 1e-4, f"{k}: update differs from −lr·∇ by {err}"
    print(f"one SGD step vs numpy: worst normalized error {worst:.2e}")


def test_train_deterministic_and_seeded(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    args = ["--epochs", "2", "--batch-size", "5", "--deterministic", "--quiet", "--lr", "0.01"]
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        assert_ok(locus("train", model, data["img"], *args, "--seed", seed, "-o", tmp_path / f"{name}.h5"))
    a, b, c = (_tensors(tmp_path / f"{n}.h5") for n in "abc")
    assert all(np.array_equal(a[k], b[k]) for k in a), "same seed, --deterministic: identical tensors"
    assert not all(np.array_equal(a[k], c[k]) for k in a), "another seed shuffles differently"


def test_train_add_head(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8", "--head", "shapes")
    out = tmp_path / "five.h5"
    assert_ok(locus("train", model, data["img5"], "--head", "five", "--add-head", "--epochs", "1", "--quiet", "--val-split", "", "-o", out))
    assert_valid(locus("validate", out))
    arch = _arch(out)
    assert [h["name"] for h in arch["heads"]] == ["shapes", "five"]
    assert arch["heads"][1] == {"name": "five", "in_features": 8, "out_features": 5, "classes": [f"k{i}" for i in range(5)]}
    before, after = _tensors(model), _tensors(out)
    assert after["heads.five.weight"].shape == (5, 8) and after["heads.five.bias"].shape == (5,)
    for k in ["heads.shapes.weight", "heads.shapes.bias"]:
        assert np.array_equal(before[k], after[k]), f"{k}: training another head must not touch it"
    assert not np.array_equal(before["layers.1.weight"], after["layers.1.weight"]), "the body trains (no --linear-probe)"
    # The new head evaluates on its dataset by default (class count match), the old one on its own.
    assert [e["head"] for e in locus("eval", out, data["img5"], "--json").json()] == ["five"]
    assert [e["head"] for e in locus("eval", out, data["img"], "--json").json()] == ["shapes"]


def test_train_linear_probe(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8", "--head", "shapes")
    out = tmp_path / "probe.h5"
    assert_ok(locus("train", model, data["img5"], "--head", "five", "--add-head", "--linear-probe", "--epochs", "2", "--weight-decay", "0.1",
                    "--quiet", "-o", out))
    before, after = _tensors(model), _tensors(out)
    for k in before:
        assert np.array_equal(before[k], after[k]), f"{k} changed in a linear probe"
    assert set(after) - set(before) == {"heads.five.weight", "heads.five.bias"}


def test_train_in_place(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    before = _tensors(model)
    assert_ok(locus("train", model, data["img"], "--epochs", "1", "--quiet", "-o", model))
    after = _tensors(model)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert_valid(locus("validate", model))


# ------------------------------------------------------------------ bad input: exit ≠ 0, one line, no output

def _fails(locus, out, *args, names, contains=()):
    before = snapshot(out.parent)
    r = locus(*args)
    line = assert_error(r, names[0])
    for n in list(names[1:]) + list(contains):
        assert str(n) in line, f"error line does not mention {n}:\n{r!r}"
    assert_nothing_new(out.parent, before, out)
    assert not out.exists()
    return line


def test_bad_unknown_preset(locus, tmp_path):
    out = tmp_path / "x.h5"
    _fails(locus, out, "init", "--preset", "resnet", "--input", "1,12,12", "--classes", "3", "-o", out, names=[out], contains=["resnet"])


def test_bad_init_arguments(locus, data, tmp_path):
    out = tmp_path / "x.h5"
    _fails(locus, out, "init", "--preset", "mlp", "--classes", "3", "-o", out, names=[out], contains=["--input"])
    _fails(locus, out, "init", "--preset", "mlp", "--input", "4", "-o", out, names=[out], contains=["--classes"])
    _fails(locus, out, "init", "--preset", "lenet", "--input", "144", "--classes", "3", "-o", out, names=[out])
    _fails(locus, out, "init", "--preset", "lenet", "--input", "1,8,8", "--classes", "3", "-o", out, names=[out])
    _fails(locus, out, "init", "--preset", "mlp", "--input", "4", "--classes", "3", "--head", "a/b", "-o", out, names=[out], contains=["a/b"])


@pytest.mark.parametrize("case", ["unknown-layer", "no-chain", "head-mismatch", "bad-head-name", "not-json", "missing-file"])
def test_bad_config(locus, tmp_path, case):
    arch = json.loads(json.dumps(EVERYTHING))
    expect = {"unknown-layer": "lstm", "no-chain": "layer 8", "head-mismatch": "head 'a'", "bad-head-name": "a.b", "not-json": None,
              "missing-file": None}[case]
    if case == "unknown-layer":
        arch["layers"][1] = {"type": "lstm"}
    elif case == "no-chain":
        arch["layers"][8]["in_features"] = 15
    elif case == "head-mismatch":
        arch["heads"][0]["in_features"] = 7
    elif case == "bad-head-name":
        arch["heads"][0]["name"] = "a.b"
    cfg = tmp_path / "arch.json"
    if case != "missing-file":
        cfg.write_text("{not json" if case == "not-json" else json.dumps(arch))
    out = tmp_path / "x.h5"
    _fails(locus, out, "init", "--config", cfg, "-o", out, names=[cfg], contains=[expect] if expect else [])


def test_bad_shape_mismatch(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    out = tmp_path / "out.h5"
    _fails(locus, out, "train", model, data["flat"], "--quiet", "-o", out, names=[data["flat"], "/inputs"], contains=["[10]", "[1, 12, 12]"])
    r = locus("eval", model, data["flat"], "--head", "default")
    line = assert_error(r, data["flat"])
    assert "/inputs" in line


def test_bad_labels_out_of_range(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8", "--head", "shapes")
    out = tmp_path / "out.h5"
    _fails(locus, out, "train", model, data["img5"], "--head", "shapes", "--quiet", "-o", out, names=[data["img5"], "/labels"],
           contains=["3 classes"])
    line = assert_error(locus("eval", model, data["img5"], "--head", "shapes"), data["img5"])
    assert "/labels" in line
    # Without --head, eval finds no head with 5 classes.
    line = assert_error(locus("eval", model, data["img5"]), model)
    assert "5 classes" in line and "--head" in line


def test_bad_missing_head_without_add_head(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8", "--head", "shapes")
    out = tmp_path / "out.h5"
    _fails(locus, out, "train", model, data["img5"], "--head", "five", "--quiet", "-o", out, names=[model], contains=["five", "--add-head"])
    assert_error(locus("eval", model, data["img"], "--head", "five"), model)


def test_bad_add_head_name(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    out = tmp_path / "out.h5"
    _fails(locus, out, "train", model, data["img5"], "--head", "a.b", "--add-head", "--quiet", "-o", out, names=[model], contains=["a.b"])


def test_bad_nan_loss(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    out = tmp_path / "out.h5"
    line = _fails(locus, out, "train", model, data["img"], "--optimizer", "sgd", "--lr", "1e9", "--epochs", "20", "--quiet", "-o", out,
                  names=[data["img"]], contains=["epoch", "step"])
    assert "nan" in line or "inf" in line
    # In place: the model file is left exactly as it was.
    raw = model.read_bytes()
    before = snapshot(model.parent)
    r = locus("train", model, data["img"], "--optimizer", "sgd", "--lr", "1e9", "--epochs", "20", "--quiet", "-o", model)
    assert_error(r, data["img"])
    assert model.read_bytes() == raw and snapshot(model.parent) == before


def test_bad_training_options(locus, data, tmp_path):
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    out = tmp_path / "out.h5"
    _fails(locus, out, "train", model, data["img"], "--epochs", "0", "--quiet", "-o", out, names=[data["img"]], contains=["epochs"])
    _fails(locus, out, "train", model, data["img"], "--split", "nope", "--quiet", "-o", out, names=[data["img"]], contains=["nope"])
    _fails(locus, out, "train", model, data["img"], "--batch-size", "0", "--quiet", "-o", out, names=[data["img"]], contains=["batch size"])


@pytest.mark.parametrize("option", ["--clip-norm=-1", "--label-smoothing=1.5", "--label-smoothing=-0.1", "--weight-decay=-0.1"])
def test_bad_training_hyperparameters(locus, data, tmp_path, option):
    """Out-of-range hyper-parameters must be refused, not silently used (a negative --clip-norm flips every
    gradient: the loss goes up)."""
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    out = tmp_path / "out.h5"
    before = snapshot(out.parent)
    r = locus("train", model, data["img"], option, "--epochs", "3", "--quiet", "--json", "-o", out)
    detail = ""
    if r.code == 0:
        detail = " (trained: " + ", ".join(f"{e['trainLoss']:.3f}" for e in json.loads(r.out)) + ")"
    assert r.code != 0, f"{option} was accepted{detail}"
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, repr(r)
    assert_nothing_new(out.parent, before, out)


@pytest.mark.parametrize("size", ["0", "-1"])
def test_bad_eval_batch_size(locus, data, tmp_path, size):
    """`eval --batch-size 0` must fail at once (Training.evaluate never advances: an endless loop);
    a negative size must not trap (an invalid range)."""
    import subprocess
    model = _init(locus, tmp_path / "m.h5", "--data", data["img"], "--hidden", "8")
    try:
        r = locus("eval", model, data["img"], f"--batch-size={size}", timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"locus eval --batch-size={size} did not finish in 10 s (endless loop)")
    assert r.code != 0, repr(r)
    assert len([ln for ln in r.err.splitlines() if ln.strip()]) == 1, repr(r)


def test_seed_changes_dropout(locus, tmp_path):
    """`locus train --help`: "--seed: Seed of shuffling, dropout and new heads". With a single training
    sample shuffling cannot matter, so two seeds differ only if the dropout masks follow --seed."""
    arch = {"format": "locus-sequential", "version": 1, "input": [6],
            "layers": [{"type": "linear", "in_features": 6, "out_features": 16}, {"type": "dropout", "p": 0.5}],
            "heads": [{"name": "default", "in_features": 16, "out_features": 2}]}
    cfg = tmp_path / "arch.json"
    cfg.write_text(json.dumps(arch))
    model = _init(locus, tmp_path / "m.h5", "--config", cfg)
    d = tmp_path / "one.h5"
    locus_h5.write_dataset(d, np.ones((1, 6), np.float32), [1], ["a", "b"], {"train": [0]})
    for seed in ("1", "2"):
        assert_ok(locus("train", model, d, "--seed", seed, "--optimizer", "sgd", "--lr", "0.1", "--quiet", "-o", tmp_path / f"s{seed}.h5"))
    a, b = _tensors(tmp_path / "s1.h5"), _tensors(tmp_path / "s2.h5")
    assert not all(np.array_equal(a[k], b[k]) for k in a), "--seed does not change the dropout masks"
