"""`locus validate` / `locus inspect` on files Locus did not write: the h5py fixtures and locus_h5 output."""
import json
import os

import h5py
import numpy as np
import pytest

from conftest import (FIXTURES, FIXTURE_FILES, LOCUS_BIN, assert_error, assert_ok, assert_valid, copy_fixture, locus_h5,
                      spec_fingerprint)

FP = spec_fingerprint(FIXTURES / "checkpoint.h5")
REL = 1e-6


def by_name(report):
    tensors = report["tensors"]
    assert isinstance(tensors, list)
    out = {t["name"]: t for t in tensors}
    assert len(out) == len(tensors), "duplicate tensor names in inspect --json"
    return out


def test_locus_binary_exists():
    """FAILS (rather than only erroring in setup) with how to build it when the Swift binary is missing."""
    if not (LOCUS_BIN.is_file() and os.access(LOCUS_BIN, os.X_OK)):
        pytest.fail(f"locus binary not found at {LOCUS_BIN}: build it first (`swift build` or `make`), "
                    f"or point $LOCUS_BIN at it", pytrace=False)


def test_validate_all_fixtures_at_once(locus):
    assert_valid(locus("validate", *[FIXTURES / n for n in FIXTURE_FILES]))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_validate_fixture(locus, name):
    assert_valid(locus("validate", FIXTURES / name))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_inspect_json_common(locus, name):
    j = locus("inspect", FIXTURES / name, "--json").json()
    want = locus_h5.load(FIXTURES / name)["attrs"]
    assert j["kind"] == want["kind"]
    assert j["encoding_version"] == {"vit_checkpoint.h5": "1.2", "clip_checkpoint.h5": "1.3"}.get(name, "1.0")
    assert j["producer"] == want["producer"] and j["created"] == want["created"]
    assert str(FIXTURES / name) in j["path"] or j["path"].endswith(name)
    if name == "scores.h5":
        assert j["provenance"]["command"] == ["make_fixtures_h5py.py", "scores"]
        assert j["provenance"]["parameters"] == {"batch-size": 8, "seed": 20260101}
    else:
        assert j["provenance"] is None
    if name in ("scores.h5", "mask.h5", "task_vector.h5"):
        assert j["base_fingerprint"] == FP


def test_inspect_json_checkpoint(locus):
    j = locus("inspect", FIXTURES / "checkpoint.h5", "--json").json()
    assert j["fingerprint"] == FP
    ck = locus_h5.load(FIXTURES / "checkpoint.h5")
    t = by_name(j)
    assert set(t) == set(ck["tensors"])       # names decoded: "head/proj.weight", not "head%2Fproj.weight"
    for name, a in ck["tensors"].items():
        assert t[name]["shape"] == list(a.shape), name
        assert t[name]["dtype"] == ck["dtypes"][name], name
        assert t[name]["count"] == a.size, name
        for k in ("bytes_on_disk", "logical_bytes"):
            assert isinstance(t[name][k], int) and t[name][k] >= 0
    assert t["logit_scale"]["shape"] == [] and t["empty.buffer"]["shape"] == [0, 5]
    assert t["head/proj.weight"]["dtype"] == "bfloat16" and t["attention.causal_mask"]["dtype"] == "bool"
    tot = j["totals"]
    assert tot["tensor_count"] == 7 and tot["count"] == sum(a.size for a in ck["tensors"].values())
    assert isinstance(tot["bytes_on_disk"], int) and isinstance(tot["logical_bytes"], int)


def test_inspect_json_scores(locus):
    j = locus("inspect", FIXTURES / "scores.h5", "--json").json()
    sc = locus_h5.load(FIXTURES / "scores.h5")
    t = by_name(j)
    assert set(t) == set(sc["tensors"])
    allv = np.concatenate([v.reshape(-1).astype(np.float64) for v in sc["tensors"].values()])
    for name, v in sc["tensors"].items():
        assert t[name]["shape"] == list(v.shape) and t[name]["dtype"] == "float32" and t[name]["count"] == v.size
        if v.size:
            q = np.quantile(v.astype(np.float64).reshape(-1), [0, .25, .5, .75, 1])
            np.testing.assert_allclose(t[name]["quantiles"], q, rtol=REL)
    assert j["totals"]["tensor_count"] == 4 and j["totals"]["count"] == allv.size
    assert j["totals"]["min"] == pytest.approx(allv.min(), rel=REL)
    assert j["totals"]["max"] == pytest.approx(allv.max(), rel=REL)


def test_inspect_json_mask(locus):
    j = locus("inspect", FIXTURES / "mask.h5", "--json").json()
    mk = locus_h5.load(FIXTURES / "mask.h5")
    t = by_name(j)
    assert set(t) == set(mk["tensors"])
    for name, m in mk["tensors"].items():
        assert t[name]["shape"] == list(m.shape) and t[name]["count"] == m.size, name
        assert t[name]["ones"] == int(m.sum()), name
        if m.size:
            assert t[name]["density"] == pytest.approx(m.sum() / m.size, rel=REL), name
    count, ones = sum(m.size for m in mk["tensors"].values()), sum(int(m.sum()) for m in mk["tensors"].values())
    tot = j["totals"]
    assert tot["tensor_count"] == 5 and tot["count"] == count and tot["ones"] == ones
    assert tot["density"] == pytest.approx(ones / count, rel=REL)


def test_inspect_json_task_vector(locus):
    j = locus("inspect", FIXTURES / "task_vector.h5", "--json").json()
    t = by_name(j)
    with h5py.File(FIXTURES / "task_vector.h5") as f:
        g = {locus_h5.unescape(k): v for k, v in f["tensors"].items()}
        assert set(t) == set(g)
        for name, grp in g.items():
            a = grp.attrs
            assert t[name]["shape"] == list(a["shape"]) and t[name]["count"] == a["count"], name
            assert t[name]["dtype"] == a["dtype"] and t[name]["encoding"] == a["encoding-type"], name
            assert t[name]["nnz"] == a["nnz"], name
            assert t[name]["density"] == pytest.approx(a["nnz"] / a["count"], rel=REL), name
            # the file stores ||tau|| before scale (0.5 here); the contract does not say which one inspect shows
            assert t[name]["l2_norm"] == pytest.approx(a["l2-norm"], rel=REL) or \
                t[name]["l2_norm"] == pytest.approx(a["l2-norm"] * 0.5, rel=REL), name
        tot = j["totals"]
        assert tot["tensor_count"] == 4 and tot["count"] == f.attrs["count"] == 43 and tot["nnz"] == f.attrs["nnz"]
        assert tot["density"] == pytest.approx(f.attrs["nnz"] / 43, rel=REL)
    # the explicitly stored zero in the coo tensor is not counted
    assert t["encoder.layer.0.attention.query.weight"]["nnz"] == 4
    assert {n: v["encoding"] for n, v in t.items()} == {
        "encoder.layer.0.attention.query.weight": "coo", "head/proj.weight": "bitmask",
        "encoder.layer.0.attention.query.bias": "dense", "logit_scale": "dense"}


def test_inspect_dataset(locus):
    j = locus("inspect", FIXTURES / "dataset.h5", "--json").json()
    assert j["kind"] == "dataset"
    assert_ok(locus("inspect", FIXTURES / "dataset.h5"))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_inspect_text_and_stats(locus, name):
    assert_ok(locus("inspect", FIXTURES / name))
    assert_ok(locus("inspect", FIXTURES / name, "--stats"))


def test_inspect_one_tensor_with_escaped_name(locus):
    r = assert_ok(locus("inspect", FIXTURES / "checkpoint.h5", "--tensor", "head/proj.weight"))
    assert "head/proj.weight" in r.out
    j = locus("inspect", FIXTURES / "checkpoint.h5", "--json", "--tensor", "head/proj.weight").json()
    t = by_name(j)["head/proj.weight"] if "tensors" in j else j   # the contract does not say how --json shows one tensor
    assert t["name"] == "head/proj.weight" and t["shape"] == [3, 4] and t["dtype"] == "bfloat16"


def test_inspect_unknown_tensor_fails(locus):
    path = FIXTURES / "checkpoint.h5"
    assert_error(locus("inspect", path, "--tensor", "no.such.tensor"), path)


# ------------------------------------------------------------------ spec MUSTs on reading (h5py-modified fixtures)

def test_higher_minor_version_accepted(locus, tmp_path):
    p = copy_fixture("mask.h5", tmp_path)
    with h5py.File(p, "r+") as f:
        f.attrs["encoding-version"] = "1.7"
    assert_valid(locus("validate", p))
    assert locus("inspect", p, "--json").json()["kind"] == "mask"


def test_fixed_length_strings_accepted(locus, tmp_path):
    """§1.1: readers MUST also accept fixed-length ASCII/UTF-8 strings."""
    p = copy_fixture("mask.h5", tmp_path)
    with h5py.File(p, "r+") as f:
        for k in ("encoding-type", "encoding-version", "kind", "producer", "created", "base-fingerprint", "absent-tensors"):
            f.attrs.create(k, np.bytes_(f.attrs[k].encode()))
        for ds in f["tensors"].values():
            for k in ("encoding-type", "bitorder"):
                ds.attrs.create(k, np.bytes_(ds.attrs[k].encode()))
    j = locus("inspect", p, "--json").json()
    assert j["kind"] == "mask" and j["base_fingerprint"] == FP
    assert j["totals"]["ones"] == locus_h5.load(FIXTURES / "mask.h5")["attrs"]["ones"]


# ------------------------------------------------------------------ files written by locus_h5

@pytest.fixture(scope="module")
def locus_h5_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("locus_h5")
    rng = np.random.default_rng(3)
    ck = {"enc.w": rng.standard_normal((16, 8)).astype(np.float32), "enc.b": rng.standard_normal(8).astype(np.float16),
          "head/out": rng.standard_normal((4, 8)).astype(np.float32), "ids": np.arange(5, dtype=np.int64),
          "flags": np.array([True, False, True]), "temp": np.float64(0.7), "none": np.zeros((3, 0), np.float32),
          ".": np.ones(2, np.uint8), "big": rng.standard_normal((200, 200)).astype(np.float32)}
    locus_h5.write_checkpoint(d / "checkpoint.h5", ck, dtypes={"head/out": "bfloat16"}, metadata={"format": "pt"},
                              provenance={"command": ["train.py"], "inputs": [], "parameters": {"lr": 0.1}})
    base = d / "checkpoint.h5"
    locus_h5.write_scores(d / "scores.h5", {k: np.abs(ck[k]).astype(np.float32) for k in ("enc.w", "enc.b", "head/out", "none", "big")},
                          base=base, estimator="fisher-empirical", samples=64, reduction="sum")
    locus_h5.write_mask(d / "mask.h5", {"enc.w": rng.random((16, 8)) < 0.2, "temp": np.array(False),
                                        "big": rng.random((200, 200)) < 0.05, "flags": np.array([1, 1, 0], np.uint8)},
                        base=base, absent_tensors="frozen")
    big = np.where(rng.random((200, 200)) < 0.01, rng.standard_normal((200, 200)), 0).astype(np.float32)
    locus_h5.write_task_vector(d / "task_vector.h5",
                               {"enc.w": np.where(rng.random((16, 8)) < 0.5, 1.5, 0).astype(np.float32),
                                "enc.b": rng.standard_normal(8).astype(np.float16),
                                "head/out": np.where(rng.random((4, 8)) < 0.3, 0.5, 0).astype(np.float32),
                                "big": big, "temp": np.float64(0.0)},
                               base=base, scale=0.3, dtypes={"head/out": "bfloat16"})
    x = rng.integers(0, 256, (200, 3, 4, 4), dtype=np.uint8)   # > 4 KiB: chunked + filtered
    locus_h5.write_dataset(d / "dataset.h5", x, rng.integers(0, 5, 200), list("abcde"),
                           {"train": np.arange(150), "test": np.arange(150, 200)},
                           mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.2])
    f = rng.standard_normal((30, 5)).astype(np.float32)        # [N, F] float32 features, per-feature mean/std
    locus_h5.write_dataset(d / "features.h5", f, rng.integers(0, 2, 30), ["no", "yes"],
                           {"train": np.arange(0, 30, 2), "val": np.arange(1, 30, 4), "test": np.arange(3, 30, 4)},
                           mean=f.mean(0), std=f.std(0) + 0.1)
    vit = locus_h5.load(FIXTURES / "vit_checkpoint.h5")           # a ViT description (§2.1, 1.2) with its tensors
    locus_h5.write_checkpoint(d / "vit_checkpoint.h5", vit["tensors"], architecture=vit["architecture"])
    clip = locus_h5.load(FIXTURES / "clip_checkpoint.h5")         # a CLIP tower with a zero-shot head (§2.1, 1.3)
    locus_h5.write_checkpoint(d / "clip_checkpoint.h5", clip["tensors"], architecture=clip["architecture"])
    return d


def test_locus_h5_files_validate(locus, locus_h5_files):
    assert_valid(locus("validate", *[locus_h5_files / n for n in FIXTURE_FILES + ["features.h5"]]))


@pytest.mark.parametrize("name", FIXTURE_FILES)
def test_locus_h5_files_inspect(locus, locus_h5_files, name):
    p = locus_h5_files / name
    j = locus("inspect", p, "--json").json()
    r = locus_h5.load(p)
    assert j["kind"] == r["kind"] and j["producer"] == locus_h5.PRODUCER
    if name == "checkpoint.h5":
        assert j["fingerprint"] == locus_h5.fingerprint(p) == spec_fingerprint(p)
        assert j["provenance"]["parameters"] == {"lr": 0.1}
    elif name in ("vit_checkpoint.h5", "clip_checkpoint.h5"):
        assert j["fingerprint"] == locus_h5.fingerprint(p) == spec_fingerprint(p)
    elif name != "dataset.h5":
        assert j["base_fingerprint"] == locus_h5.fingerprint(locus_h5_files / "checkpoint.h5")
    if name != "dataset.h5":
        t = by_name(j)
        assert set(t) == set(r["tensors"])
        for n, a in r["tensors"].items():
            assert t[n]["shape"] == list(a.shape) and t[n]["count"] == a.size
        if name == "mask.h5":
            assert j["totals"]["ones"] == r["attrs"]["ones"]
        if name == "task_vector.h5":
            assert j["totals"]["nnz"] == r["attrs"]["nnz"]
            assert t["big"]["encoding"] == "coo" and t["enc.w"]["encoding"] == "bitmask"
    json.dumps(j)
