"""`locus data import | derive` checked against numpy (and scikit-learn / torch when importable).

Every expected value here is computed from the source files with numpy alone: the CSVs with np.loadtxt, the
IDX files with np.frombuffer, the splits with an independent Python SplitMix64 following the algorithm in
Sources/LocusData/Splits.swift, the resize with interpolation matrices (not the per-pixel loop Locus uses).
"""
import gzip
import json
import math
import os
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO, assert_error, assert_nothing_new, assert_ok, assert_valid, snapshot

DATA = REPO / "fixtures" / "data"
DIGITS = DATA / "digits.csv.gz"
MNIST5K = DATA / "mnist_5k.csv.gz"
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"


# ------------------------------------------------------------------ the split algorithm, independently

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, bound):
        threshold = (1 << 64) % bound
        while True:
            r = self.next()
            if r >= threshold:
                return r % bound

    def shuffle(self, a):
        for i in range(len(a) - 1, 0, -1):
            j = self.below(i + 1)
            a[i], a[j] = a[j], a[i]


def expected_splits(labels, fractions, seed=0, stratified=True, among=None):
    names = {1: ["train"], 2: ["train", "test"], 3: ["train", "val", "test"]}[len(fractions)] \
        if not isinstance(fractions, dict) else list(fractions)
    values = list(fractions.values()) if isinstance(fractions, dict) else list(fractions)
    labels = np.asarray(labels)
    pool = np.arange(len(labels)) if among is None else np.asarray(among)
    groups = [sorted(pool[labels[pool] == c].tolist()) for c in np.unique(labels[pool])] if stratified else [sorted(pool.tolist())]
    rng = SplitMix64(seed)
    out = {n: [] for n in names}
    for g in groups:
        rng.shuffle(g)
        n, start, cum = len(g), 0, 0.0
        for k, (name, f) in enumerate(zip(names, values)):
            cum += f
            end = n if k == len(names) - 1 else min(n, max(start, math.floor(n * cum + 0.5)))
            out[name] += g[start:end]
            start = end
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in out.items()}


# ------------------------------------------------------------------ helpers

def read_artifact(path):
    with h5py.File(path, "r") as f:
        a = f["inputs"].attrs
        return {
            "kind": f.attrs["kind"], "n": int(f.attrs["sample-count"]), "c": int(f.attrs["class-count"]),
            "x": f["inputs"][()], "dtype": a["dtype"], "y": f["labels"][()],
            "classes": [s.decode() if isinstance(s, bytes) else s for s in f["classes"][()]],
            "splits": {k: v[()] for k, v in f["splits"].items()},
            "scale": float(a["scale"]), "mean": np.asarray(a["mean"]), "std": np.asarray(a["std"]),
            "provenance": json.loads(f["provenance"][()]) if "provenance" in f else None,
            "source": f.attrs.get("source"),
        }


def expected_norm(x, train, scale):
    """Per-channel (axis 1) mean/std of raw·scale over the train split, population std; 0 → 1."""
    v = x[train].astype(np.float64) * scale
    axes = (0,) + tuple(range(2, x.ndim))
    mean, std = v.mean(axis=axes), v.std(axis=axes)
    std[std == 0] = 1
    return mean, std


def check_common(locus, path, x, y, classes, splits, scale):
    """h5py sees exactly these values; `locus validate` passes."""
    assert_valid(locus("validate", path))
    a = read_artifact(path)
    assert a["kind"] == "dataset"
    assert a["n"] == len(y) and a["c"] == len(classes)
    assert a["x"].dtype == x.dtype and a["x"].shape == x.shape
    np.testing.assert_array_equal(a["x"], x)
    assert a["dtype"] == {np.dtype("u1"): "uint8", np.dtype("<f4"): "float32"}[x.dtype]
    assert a["y"].dtype == np.int64
    np.testing.assert_array_equal(a["y"], y)
    assert a["classes"] == list(classes)
    assert sorted(a["splits"]) == sorted(splits)
    for k, v in splits.items():
        np.testing.assert_array_equal(a["splits"][k], v, err_msg=f"split {k}")
    mean, std = expected_norm(x, splits.get("train", np.arange(len(y))), scale)
    assert a["scale"] == pytest.approx(scale, rel=1e-15)
    np.testing.assert_allclose(a["mean"], mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a["std"], std, rtol=1e-9, atol=1e-12)
    return a


def load_csv(path):
    with gzip.open(path, "rt") as fh:
        return np.loadtxt(fh, delimiter=",")


def idx_bytes(a):
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}[a.dtype.type]
    head = bytes([0, 0, code, a.ndim]) + struct.pack(">" + "i" * a.ndim, *a.shape)
    return head + np.ascontiguousarray(a, dtype=a.dtype.newbyteorder(">")).tobytes()


def write_idx(path, a, gz=False):
    b = idx_bytes(a)
    Path(path).write_bytes(gzip.compress(b) if gz else b)
    return path


def read_idx_gz(path):
    b = gzip.open(path, "rb").read()
    ndim = b[3]
    dims = struct.unpack(">" + "i" * ndim, b[4:4 + 4 * ndim])
    return np.frombuffer(b, dtype=">u1", offset=4 + 4 * ndim).reshape(dims)


def bilinear_numpy(x, oh, ow):
    """Independent resize: half-pixel centres (align_corners=False) as interpolation matrices, out = Ry · x · Rxᵀ."""
    def matrix(n_in, n_out):
        r = np.zeros((n_out, n_in))
        s = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
        i0 = np.minimum(np.floor(s).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = s - i0
        np.add.at(r, (np.arange(n_out), i0), 1 - lam)
        np.add.at(r, (np.arange(n_out), i1), lam)
        return r
    ry, rx = matrix(x.shape[2], oh), matrix(x.shape[3], ow)
    return np.einsum("ih,nchw,jw->ncij", ry, x.astype(np.float64), rx).astype(np.float32)


# ------------------------------------------------------------------ bundled CSVs

def test_digits_csv_matches_numpy_and_sklearn(locus, tmp_path):
    out = tmp_path / "digits.h5"
    r = assert_ok(locus("data", "import", DIGITS, "--image-shape", "1,8,8", "-o", out))
    assert "1797 samples" in r.out
    raw = load_csv(DIGITS)
    x = raw[:, :64].astype(np.uint8).reshape(-1, 1, 8, 8)
    y = raw[:, 64].astype(np.int64)
    assert (raw[:, :64] == x.reshape(-1, 64)).all()
    splits = expected_splits(y, [0.8, 0.1, 0.1], seed=0)
    a = check_common(locus, out, x, y, [str(i) for i in range(10)], splits, 1 / 255)
    prov = a["provenance"]
    assert prov["inputs"][0]["path"] == str(DIGITS) and prov["parameters"]["format"] == "csv"
    assert prov["parameters"]["header"] is False and prov["parameters"]["label-column"] == 64
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return
    d = load_digits()
    np.testing.assert_array_equal(a["x"][:, 0].astype(np.float64), d.images)
    np.testing.assert_array_equal(a["y"], d.target)


def test_digits_features_custom_split_and_scale(locus, tmp_path):
    out = tmp_path / "digits-flat.h5"
    assert_ok(locus("data", "import", DIGITS, "--split", "0.6,0.4", "--seed", "12345", "--no-stratify",
                    "--scale", "1/16", "-o", out))
    raw = load_csv(DIGITS)
    x, y = raw[:, :64].astype(np.uint8), raw[:, 64].astype(np.int64)
    splits = expected_splits(y, [0.6, 0.4], seed=12345, stratified=False)
    a = check_common(locus, out, x, y, [str(i) for i in range(10)], splits, 1 / 16)
    assert a["mean"].shape == (64,)          # one entry per feature for [N, F]


def test_mnist5k_csv_matches_numpy(locus, tmp_path):
    out = tmp_path / "mnist5k.h5"
    assert_ok(locus("data", "import", MNIST5K, "--image-shape", "1,28,28", "--split", "0.7,0.15,0.15", "--seed", "3", "-o", out))
    raw = load_csv(MNIST5K)
    x = raw[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = raw[:, 784].astype(np.int64)
    assert (raw[:, :784] == x.reshape(-1, 784)).all()
    check_common(locus, out, x, y, [str(i) for i in range(10)], expected_splits(y, [0.7, 0.15, 0.15], seed=3), 1 / 255)


def test_csv_header_label_by_name_float_features(locus, tmp_path):
    rng = np.random.default_rng(4)
    n = 40
    feats = rng.standard_normal((n, 3)).astype(np.float32)
    species = rng.choice(["setosa", "versicolor", "virginica"], n)
    src = tmp_path / "iris-like.csv"
    with open(src, "w") as fh:
        fh.write("sepal,species,petal,width\n")
        for f, s in zip(feats, species):
            fh.write(f"{float(f[0])!r},{s},{float(f[1])!r},{float(f[2])!r}\n")
    out = tmp_path / "iris.h5"
    assert_ok(locus("data", "import", src, "--label-column", "species", "-o", out))
    classes = sorted(set(species))
    y = np.array([classes.index(s) for s in species], dtype=np.int64)
    x = np.loadtxt(src, delimiter=",", skiprows=1, usecols=(0, 2, 3)).astype(np.float32)
    check_common(locus, out, x, y, classes, expected_splits(y, [0.8, 0.1, 0.1]), 1.0)


# ------------------------------------------------------------------ IDX

@pytest.mark.parametrize("gz", [False, True])
def test_idx_pairs_written_with_numpy(locus, tmp_path, gz):
    rng = np.random.default_rng(7)
    ext = "-ubyte.gz" if gz else "-ubyte"
    tr_x = rng.integers(0, 256, (90, 5, 4), dtype=np.uint8)
    tr_y = (np.arange(90) % 4).astype(np.uint8)
    te_x = rng.integers(0, 256, (20, 5, 4), dtype=np.uint8)
    te_y = rng.integers(0, 4, 20).astype(np.uint8)
    files = [write_idx(tmp_path / f"{n}{ext}", a, gz) for n, a in
             [("train-images-idx3", tr_x), ("train-labels-idx1", tr_y), ("t10k-images-idx3", te_x), ("t10k-labels-idx1", te_y)]]
    out = tmp_path / "pair.h5"
    assert_ok(locus("data", "import", *files, "--val-fraction", "0.25", "--seed", "9", "-o", out))
    x = np.concatenate([tr_x, te_x])[:, None]
    y = np.concatenate([tr_y, te_y]).astype(np.int64)
    splits = expected_splits(y, {"train": 1 - 0.25, "val": 0.25}, seed=9, among=np.arange(90))
    splits["test"] = np.arange(90, 110)
    check_common(locus, out, x, y, ["0", "1", "2", "3"], splits, 1 / 255)
    # One pair alone: the default 0.8/0.1/0.1 split.
    out1 = tmp_path / "one.h5"
    assert_ok(locus("data", "import", files[0], files[1], "--class-names", "a,b,c,d", "-o", out1))
    check_common(locus, out1, tr_x[:, None], tr_y.astype(np.int64), ["a", "b", "c", "d"],
                 expected_splits(tr_y, [0.8, 0.1, 0.1]), 1 / 255)


@pytest.mark.parametrize("dtype", ["int8", ">i2", ">i4", ">f4", ">f8"])
def test_idx_other_element_types(locus, tmp_path, dtype):
    rng = np.random.default_rng(1)
    imgs = (rng.standard_normal((12, 3, 3)) * 50).astype(dtype)
    labels = (np.arange(12) % 3).astype(np.uint8)
    a, b = write_idx(tmp_path / "x-images.idx", imgs), write_idx(tmp_path / "x-labels.idx", labels)
    out = tmp_path / "t.h5"
    assert_ok(locus("data", "import", a, b, "-o", out))
    expect = imgs.astype(np.float32)[:, None]       # negative values: never uint8
    check_common(locus, out, expect, labels.astype(np.int64), ["0", "1", "2"], expected_splits(labels, [0.8, 0.1, 0.1]), 1.0)


@pytest.mark.skipif(not (FASHION / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_t10k(locus, tmp_path):
    imgs, labels = FASHION / "t10k-images-idx3-ubyte.gz", FASHION / "t10k-labels-idx1-ubyte.gz"
    out = tmp_path / "fashion-t10k.h5"
    assert_ok(locus("data", "import", imgs, labels, "--class-names", FASHION_CLASSES, "-o", out))
    x = read_idx_gz(imgs)[:, None].astype(np.uint8)
    y = read_idx_gz(labels).astype(np.int64)
    assert x.shape == (10000, 1, 28, 28)
    check_common(locus, out, x, y, FASHION_CLASSES.split(","), expected_splits(y, [0.8, 0.1, 0.1]), 1 / 255)


# ------------------------------------------------------------------ h5py sources

def test_h5py_dataset_is_accepted_and_resplit(locus, tmp_path):
    src = REPO / "fixtures" / "h5py" / "dataset.h5"
    with h5py.File(src, "r") as f:
        x, y = f["inputs"][()], f["labels"][()]
        classes = [s.decode() if isinstance(s, bytes) else s for s in f["classes"][()]]
        given = {k: v[()] for k, v in f["splits"].items()}
        scale = float(f["inputs"].attrs["scale"])
    kept = tmp_path / "kept.h5"
    assert_ok(locus("data", "import", src, "-o", kept))
    check_common(locus, kept, x, y, classes, given, scale)
    resplit = tmp_path / "resplit.h5"
    assert_ok(locus("data", "import", src, "--split", "0.5,0.25,0.25", "--seed", "2", "-o", resplit))
    check_common(locus, resplit, x, y, classes, expected_splits(y, [0.5, 0.25, 0.25], seed=2), scale)


# ------------------------------------------------------------------ derive

@pytest.fixture(scope="module")
def digits_h5(locus, tmp_path_factory):
    out = tmp_path_factory.mktemp("derive") / "digits.h5"
    assert_ok(locus("data", "import", DIGITS, "--image-shape", "1,8,8", "-o", out))
    return out


def test_derive_subset_relabels(locus, tmp_path, digits_h5):
    src = read_artifact(digits_h5)
    out = tmp_path / "sub.h5"
    assert_ok(locus("data", "derive", digits_h5, "--classes", "7,3,5", "-o", out))
    keep = np.isin(src["y"], [7, 3, 5])
    old_to_new = {7: 0, 3: 1, 5: 2}
    y = np.array([old_to_new[v] for v in src["y"][keep]], dtype=np.int64)
    renumber = np.cumsum(keep) - 1
    splits = {k: renumber[v[keep[v]]] for k, v in src["splits"].items()}
    a = check_common(locus, out, src["x"][keep], y, ["7", "3", "5"], splits, 1 / 255)
    assert a["provenance"]["parameters"]["classes"] == ["7", "3", "5"]
    assert a["provenance"]["inputs"][0]["path"] == str(digits_h5)


@pytest.mark.parametrize("transforms,numpy_fn", [
    (["rotate90"], lambda x: np.rot90(x, 1, axes=(2, 3))),
    (["rotate90=-1"], lambda x: np.rot90(x, -1, axes=(2, 3))),
    (["rotate90=2", "flip-horizontal"], lambda x: np.flip(np.rot90(x, 2, axes=(2, 3)), axis=3)),
    (["invert"], lambda x: 255 - x),
])
def test_derive_pixel_transforms(locus, tmp_path, digits_h5, transforms, numpy_fn):
    src = read_artifact(digits_h5)
    out = tmp_path / "t.h5"
    assert_ok(locus("data", "derive", digits_h5, *[a for t in transforms for a in ("--transform", t)], "-o", out))
    x = np.ascontiguousarray(numpy_fn(src["x"]))
    a = check_common(locus, out, x, src["y"], src["classes"], src["splits"], 1 / 255)
    assert a["provenance"]["parameters"]["transforms"] == [("rotate90=1" if t == "rotate90" else t) for t in transforms]


def test_derive_resize_matches_numpy_and_torch(locus, tmp_path, digits_h5):
    src = read_artifact(digits_h5)
    out = tmp_path / "r.h5"
    assert_ok(locus("data", "derive", digits_h5, "--transform", "resize=28,28", "--transform", "invert", "-o", out))
    a = read_artifact(out)
    assert a["x"].dtype == np.float32 and a["x"].shape == (1797, 1, 28, 28)
    expect = 255 - bilinear_numpy(src["x"], 28, 28)
    np.testing.assert_allclose(a["x"], expect, rtol=0, atol=2e-4)
    check_common(locus, out, a["x"], src["y"], src["classes"], src["splits"], 1 / 255)
    try:
        import torch
    except ImportError:
        return
    t = torch.nn.functional.interpolate(torch.from_numpy(src["x"].astype(np.float32)), size=(28, 28),
                                        mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(a["x"], 255 - t, rtol=0, atol=2e-4)


def test_derive_non_square_resize_and_subset_of_mnist(locus, tmp_path):
    m = tmp_path / "m.h5"
    assert_ok(locus("data", "import", MNIST5K, "--image-shape", "1,28,28", "-o", m))
    out = tmp_path / "m2.h5"
    assert_ok(locus("data", "derive", m, "--classes", "0,1", "--transform", "resize=10,17", "-o", out))
    src = read_artifact(m)
    keep = src["y"] < 2
    a = read_artifact(out)
    np.testing.assert_allclose(a["x"], bilinear_numpy(src["x"][keep], 10, 17), rtol=0, atol=2e-4)
    np.testing.assert_array_equal(a["y"], src["y"][keep])
    assert_valid(locus("validate", out))


# ------------------------------------------------------------------ bad inputs

def _good_idx(tmp_path):
    return (write_idx(tmp_path / "ok-images-idx3-ubyte", np.zeros((4, 2, 2), np.uint8)),
            write_idx(tmp_path / "ok-labels-idx1-ubyte", np.arange(4, dtype=np.uint8)))


BAD_CASES = {
    "corrupt-gzip": ("bad.csv.gz", lambda: bytearray(gzip.compress(b"1,2,0\n" * 500))[:10] + b"\xff" * 40, [], "gzip stream"),
    "truncated-gzip": ("cut.csv.gz", lambda: gzip.compress(b"1,2,0\n" * 500)[:-12], [], "truncated"),
    "non-numeric": ("nn.csv", lambda: b"1,2,0\n3,x,1\n", [], "line 2, column 2"),
    "ragged": ("rag.csv", lambda: b"1,2,0\n3,1\n", [], "line 2"),
    "empty": ("empty.csv", lambda: b"", [], "empty"),
    "header-only": ("h.csv", lambda: b"a,b,c\n", [], "no data rows"),
    "wrong-magic": ("m-images-idx3-ubyte", lambda: b"\x01\x02\x08\x03" + b"\x00" * 12, ["LABELS"], "magic"),
    "unknown-dtype": ("d-images-idx3-ubyte", lambda: b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", ["LABELS"], "element type"),
    "truncated-idx": ("t-images-idx3-ubyte", lambda: idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-1], ["LABELS"], "truncated"),
    "trailing-idx": ("x-images-idx3-ubyte", lambda: idx_bytes(np.zeros((4, 2, 2), np.uint8)) + b"\x00", ["LABELS"], "trailing"),
    "count-mismatch": ("c-labels-idx1-ubyte", lambda: idx_bytes(np.zeros(3, np.uint8)), ["IMAGES-FIRST"], "3 labels"),
    "unknown-format": ("data.bin", lambda: b"1,2,3\n", [], "--format"),
    "image-shape": ("s.csv", lambda: b"1,2,3,0\n", ["--image-shape", "1,2,2"], "--image-shape"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_fail_cleanly(locus, tmp_path, case):
    name, make, extra, words = BAD_CASES[case]
    bad = tmp_path / name
    bad.write_bytes(bytes(make()))
    good_images, good_labels = _good_idx(tmp_path)
    if extra == ["LABELS"]:
        args = [bad, good_labels]
    elif extra == ["IMAGES-FIRST"]:
        args = [good_images, bad]
    else:
        args = [bad, *extra]
    out = tmp_path / "out.h5"
    before = snapshot(tmp_path)
    r = locus("data", "import", *args, "-o", out)
    line = assert_error(r, bad)
    assert words in line, line
    assert_nothing_new(tmp_path, before, out)


def test_bad_derive_requests(locus, tmp_path, digits_h5):
    out = tmp_path / "out.h5"
    before = snapshot(tmp_path)
    assert "no class 'cat'" in assert_error(locus("data", "derive", digits_h5, "--classes", "3,cat", "-o", out), digits_h5)
    features = tmp_path / "flat.h5"
    assert_ok(locus("data", "import", DIGITS, "-o", features, "--quiet"))
    before = snapshot(tmp_path)
    assert "needs images" in assert_error(locus("data", "derive", features, "--transform", "rotate90", "-o", out), features)
    ckpt = REPO / "fixtures" / "h5py" / "checkpoint.h5"
    assert_error(locus("data", "derive", ckpt, "--transform", "invert", "-o", out), ckpt)
    r = locus("data", "derive", digits_h5, "--transform", "blur", "-o", out)
    assert r.code != 0 and "not a transform" in r.err
    assert_nothing_new(tmp_path, before, out)


def test_existing_output_is_untouched_on_failure(locus, tmp_path):
    out = tmp_path / "keep.h5"
    out.write_bytes(b"precious")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"1,2,0\n1,2\n")
    assert_error(locus("data", "import", bad, "-o", out), bad)
    assert out.read_bytes() == b"precious"
