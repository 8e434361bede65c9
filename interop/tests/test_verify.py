"""`--verify`: every command checks what it reads against the digests its writer stored (spec §1.8,
§7; docs/reliability.md) before using a value, and refuses a changed bit naming the file and the
tensor; without the flag nothing changes. `inspect --verify` lists every check. `validate` reports
non-finite numbers (and counts them in checkpoint tensors with --stats).

Bits are flipped with plain byte edits at the offset h5py reports for a contiguous dataset (what a
failing disk or a bad copy does), never through Locus."""
import shutil
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pytest

from conftest import assert_ok, make_mlp_pipeline, snapshot, spec_fingerprint, st_from_numpy, st_write


@pytest.fixture(scope="module")
def work(locus, tmp_path_factory):
    return make_mlp_pipeline(locus, tmp_path_factory.mktemp("verify"))


def contiguous_datasets(path):
    """(object path, file offset, stored bytes) of every contiguous numeric dataset with data."""
    out = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu" and obj.id.get_offset() is not None \
                    and obj.id.get_storage_size() > 0:
                out.append(("/" + name, obj.id.get_offset(), obj.id.get_storage_size()))
        f.visititems(visit)
    return out


def flip(src, dst, obj, byte=0, bit=0):
    """Copies `src` to `dst` with one bit of dataset `obj`'s stored data flipped; returns dst."""
    shutil.copyfile(src, dst)
    [(_, offset, size)] = [c for c in contiguous_datasets(dst) if c[0] == obj]
    assert byte < size
    with open(dst, "r+b") as fh:
        fh.seek(offset + byte)
        b = fh.read(1)[0]
        fh.seek(offset + byte)
        fh.write(bytes([b ^ (1 << bit)]))
    return dst


def first(path, prefix, suffix=""):
    """The first contiguous dataset under `prefix` whose path ends with `suffix`."""
    return next(o for o, _, _ in contiguous_datasets(path) if o.startswith(prefix) and o.endswith(suffix))


def refused(r, file, obj):
    """One error line naming the file and the object, exit != 0."""
    assert r.code != 0, repr(r)
    lines = [l for l in r.err.splitlines() if l.startswith("locus: error:")]
    assert len(lines) == 1, repr(r)
    assert f"{file}: {obj}: " in lines[0] and "changed after writing" in lines[0], repr(r)


def tensors_of(path):
    with h5py.File(path, "r") as f:
        return {unquote(k): np.asarray(v[()]) for k, v in f["tensors"].items()}


# ------------------------------------------------------------------ every kind, several commands

def test_writers_store_digests_that_h5py_recomputes(work):
    """The digests are the spec's §1.8 formula over the stored bytes, here recomputed with hashlib."""
    from conftest import h5_stored_bytes, tensor_digest
    for name in ["base.h5", "ft.h5", "tau.h5", "mask.h5", "scores.h5", "d.h5"]:
        seen = 0
        with h5py.File(work / name, "r") as f:
            def visit(_, obj):
                nonlocal seen
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu":
                    assert obj.attrs["digest"] == "sha256:" + tensor_digest(h5_stored_bytes(obj)).hex(), (name, obj.name)
                    seen += 1
            f.visititems(visit)
        assert seen > 0, name


def test_unchanged_files_pass_and_outputs_are_the_same(locus, work):
    d = work
    assert_ok(locus("apply", d / "base.h5", d / "tau.h5", "--alpha", "0.5", "-o", d / "plain.h5"))
    r = assert_ok(locus("apply", d / "base.h5", d / "tau.h5", "--alpha", "0.5", "-o", d / "checked.h5", "--verify"))
    assert "note:" not in r.err, repr(r)
    a, b = tensors_of(d / "plain.h5"), tensors_of(d / "checked.h5")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    for name in ["base.h5", "tau.h5", "mask.h5", "scores.h5", "d.h5"]:
        r = assert_ok(locus("inspect", "--verify", d / name))
        assert "MISMATCH" not in r.out and " ok " in r.out and "0 mismatched" in r.out, repr(r)


def test_changed_checkpoint_bit_is_refused_with_the_tensor_named(locus, work, tmp_path):
    d = work
    obj = first(d / "base.h5", "/tensors/")
    bad = flip(d / "base.h5", tmp_path / "base.h5", obj, byte=0, bit=0)   # lowest mantissa bit of element 0
    assert spec_fingerprint(bad) != spec_fingerprint(d / "base.h5")
    before = snapshot(tmp_path)
    refused(locus("apply", bad, d / "tau.h5", "-o", tmp_path / "out.h5", "--verify"), bad, obj)
    refused(locus("merge", bad, d / "tau.h5", "-o", tmp_path / "out.h5", "--verify"), bad, obj)
    refused(locus("eval", bad, d / "d.h5", "--verify"), bad, obj)
    refused(locus("diff", bad, d / "ft.h5", "-o", tmp_path / "out.h5", "--verify"), bad, obj)
    refused(locus("convert", bad, tmp_path / "out.safetensors", "--verify"), bad, obj)
    assert snapshot(tmp_path) == before, "no output may be written"
    r = locus("inspect", "--verify", bad)
    assert r.code != 0, repr(r)
    mism = [l for l in r.out.splitlines() if "MISMATCH" in l]
    assert len(mism) == 2 and obj in mism[0] and "/@fingerprint" in mism[1], repr(r)
    assert sum(" ok " in l for l in r.out.splitlines()) == len(tensors_of(bad)) - 1
    # Without --verify the same commands run as before.
    assert_ok(locus("apply", bad, d / "tau.h5", "-o", tmp_path / "out.h5"))
    assert_ok(locus("eval", bad, d / "d.h5"))


def test_changed_task_vector_bit_is_refused(locus, work, tmp_path):
    d = work
    obj = first(d / "tau.h5", "/tensors/", "/values")
    bad = flip(d / "tau.h5", tmp_path / "tau.h5", obj, byte=0, bit=0)
    # A flipped lowest mantissa bit hides inside the stored summaries' tolerance: only the digest sees it.
    refused(locus("apply", d / "base.h5", bad, "-o", tmp_path / "out.h5", "--verify"), bad, obj)
    refused(locus("merge", d / "base.h5", bad, d / "tau.h5", "--method", "ties", "-o", tmp_path / "out.h5", "--verify"), bad, obj)
    assert not (tmp_path / "out.h5").exists()
    r = locus("inspect", "--verify", bad)
    assert r.code == 1 and [l for l in r.out.splitlines() if "MISMATCH" in l][0].split()[1] == obj, repr(r)
    assert_ok(locus("apply", d / "base.h5", bad, "-o", tmp_path / "out.h5"))


def test_changed_mask_bit_is_refused(locus, work, tmp_path):
    d = work
    obj = first(d / "mask.h5", "/tensors/")
    bad = flip(d / "mask.h5", tmp_path / "mask.h5", obj, byte=0, bit=3)
    r = locus("finetune", d / "base.h5", d / "d.h5", "--mask", bad, "--epochs", "1", "--quiet",
              "-o", tmp_path / "ft.h5", "--verify")
    refused(r, bad, obj)
    assert not (tmp_path / "ft.h5").exists()
    r = locus("inspect", "--verify", bad)
    assert r.code == 1 and obj in r.out and "MISMATCH" in r.out, repr(r)
    assert_ok(locus("inspect", bad))


def test_changed_mask_bit_without_digest_is_caught_by_the_bit_count(locus, work, tmp_path):
    """Masks written before digests: the per-tensor `ones` still catches a single changed bit."""
    d = work
    old = tmp_path / "old-mask.h5"
    shutil.copyfile(d / "mask.h5", old)
    with h5py.File(old, "r+") as f:
        for ds in f["tensors"].values():
            del ds.attrs["digest"]
    obj = first(old, "/tensors/")
    bad = flip(old, tmp_path / "mask.h5", obj, byte=0, bit=5)
    r = locus("inspect", "--verify", bad)
    assert r.code == 1 and "set bits" in r.out and obj in r.out, repr(r)


def test_changed_scores_bit_is_refused(locus, work, tmp_path):
    d = work
    obj = first(d / "scores.h5", "/tensors/")
    bad = flip(d / "scores.h5", tmp_path / "scores.h5", obj, byte=1, bit=0)
    refused(locus("mask", d / "base.h5", "--from-scores", bad, "--density", "0.1", "-o", tmp_path / "m.h5", "--verify"), bad, obj)
    refused(locus("merge", d / "base.h5", d / "tau.h5", "--method", "fisher", "--fisher-scores", bad,
                  "-o", tmp_path / "m.h5", "--verify"), bad, obj)
    assert not (tmp_path / "m.h5").exists()
    assert_ok(locus("mask", d / "base.h5", "--from-scores", bad, "--density", "0.1", "-o", tmp_path / "m.h5"))


def test_changed_dataset_bit_is_refused(locus, work, tmp_path):
    d = work
    bad = flip(d / "d.h5", tmp_path / "d.h5", "/labels", byte=0, bit=0)
    refused(locus("eval", d / "base.h5", bad, "--verify"), bad, "/labels")
    assert_ok(locus("eval", d / "base.h5", bad))


def test_python_writers_store_the_digests_locus_checks(locus, tmp_path):
    """locus_h5 (the independent writer) stores a digest on every checkpoint tensor, mask tensor and
    dataset array; `inspect --verify` checks each one and finds a flipped bit in each kind."""
    import locus_h5
    rng = np.random.default_rng(4)
    ck = tmp_path / "py-ck.h5"
    locus_h5.write_checkpoint(ck, {"w": rng.standard_normal((4, 3)).astype(np.float32),
                                   "b": rng.standard_normal(3).astype(np.float32)}, dtypes={"b": "bfloat16"})
    mk = tmp_path / "py-mask.h5"
    locus_h5.write_mask(mk, {"w": rng.random((4, 3)) < 0.5}, base=ck)
    ds = tmp_path / "py-data.h5"
    locus_h5.write_dataset(ds, rng.integers(0, 255, (6, 1, 2, 2), dtype=np.uint8), np.arange(6) % 2, ["a", "b"],
                           {"train": [0, 1, 2, 3], "val": [4, 5]})
    for path, objects in [(ck, ["/tensors/w", "/tensors/b"]), (mk, ["/tensors/w"]), (ds, ["/inputs", "/labels", "/splits/train"])]:
        r = assert_ok(locus("inspect", "--verify", path))
        assert "unchecked" not in r.out and "0 mismatched" in r.out, r.out
        for obj in objects:
            bad = flip(path, tmp_path / ("bad-" + path.name), obj, byte=0, bit=1)
            r = locus("inspect", "--verify", bad)
            assert r.code == 1 and "MISMATCH" in r.out and obj in r.out, repr(r)


# ------------------------------------------------------------------ files that carry no digests

def test_checkpoint_without_tensor_digests_falls_back_to_the_fingerprint(locus, work, tmp_path):
    d = work
    old = tmp_path / "old.h5"
    shutil.copyfile(d / "base.h5", old)
    with h5py.File(old, "r+") as f:
        for ds in f["tensors"].values():
            del ds.attrs["digest"]
    r = assert_ok(locus("eval", old, d / "d.h5", "--verify"))
    assert "locus: note:" in r.err and "fingerprint" in r.err, repr(r)
    bad = flip(old, tmp_path / "bad.h5", first(old, "/tensors/"), byte=2, bit=6)
    r = locus("eval", bad, d / "d.h5", "--verify")
    refused(r, bad, "/@fingerprint")


def test_safetensors_input_passes_with_a_note(locus, work, tmp_path):
    st = tmp_path / "m.safetensors"
    st_write(st, st_from_numpy({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}))
    r = assert_ok(locus("convert", st, tmp_path / "m.h5", "--verify"))
    assert "stores no digests" in r.err, repr(r)
    st2 = tmp_path / "m2.safetensors"
    st_write(st2, st_from_numpy({"w": np.ones((2, 3), dtype=np.float32)}))
    assert_ok(locus("diff", st, st2, "-o", tmp_path / "t.h5"))
    r = assert_ok(locus("merge", st, tmp_path / "t.h5", "-o", tmp_path / "merged.h5", "--verify"))
    assert r.err.count(f"locus: note: {st}: a safetensors file stores no digests") == 1, repr(r)   # base opened twice, noted once
    r = assert_ok(locus("inspect", "--verify", st))
    assert "stores no digests" in r.out, repr(r)


def test_help_mentions_verify_within_100_columns(locus):
    import os
    import subprocess
    from conftest import LOCUS_BIN
    for cmd in ["inspect", "apply", "merge", "eval", "mask", "score", "finetune", "train", "convert", "diff", "init"]:
        for cols in ("80", "160"):
            p = subprocess.run([str(LOCUS_BIN), cmd, "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": cols})
            assert p.returncode == 0 and "--verify" in p.stdout, (cmd, p.stdout)
            whole = cols == "80" or cmd == "inspect"
            lines = p.stdout.splitlines() if whole else [l for l in p.stdout.splitlines() if "verify" in l]
            assert max(len(l) for l in lines) <= 100, (cmd, cols)
    for cols in ("80", "160"):
        p = subprocess.run([str(LOCUS_BIN), "validate", "--help"], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": cols})
        assert "--stats" in p.stdout and max(len(l) for l in p.stdout.splitlines()) <= 100, p.stdout


# ------------------------------------------------------------------ non-finite numbers

def test_validate_stats_counts_nan_and_inf_in_checkpoint_tensors(locus, tmp_path):
    import locus_h5
    w = np.zeros((3, 4), dtype=np.float32)
    w[0, 1], w[1, 2], w[2, 3], w[2, 0] = np.nan, np.inf, -np.inf, np.nan
    h = np.array([1.0, np.inf], dtype=np.float16)
    path = tmp_path / "nan.h5"
    locus_h5.write_checkpoint(path, {"w": w, "h": h, "ok": np.ones(3, dtype=np.float32)})
    r = assert_ok(locus("validate", path))
    assert "warning" not in r.out, repr(r)
    r = assert_ok(locus("validate", "--stats", path))
    lines = [l for l in r.out.splitlines() if l.startswith("warning:")]
    assert len(lines) == 2, repr(r)
    assert "/tensors/w" in lines[1] and "2 nan, 1 +inf, 1 -inf among 12 values" in lines[1], repr(r)
    assert "/tensors/h" in lines[0] and "1 +inf among 2 values" in lines[0], repr(r)


def test_validate_refuses_non_finite_task_vector_values_and_summaries(locus, work, tmp_path):
    from conftest import h5_stored_bytes, tensor_digest
    d = work
    tv = tmp_path / "tau.h5"
    shutil.copyfile(d / "tau.h5", tv)
    obj = first(tv, "/tensors/", "/values")
    with h5py.File(tv, "r+") as f:
        v = f[obj]
        a = v[()]
        a[0], a[-1] = np.nan, np.inf
        v[...] = a
        v.attrs["digest"] = "sha256:" + tensor_digest(h5_stored_bytes(v)).hex()   # a writer that stored NaN
    r = locus("validate", tv)
    assert r.code == 1 and obj in r.out and "1 nan, 1 +inf among" in r.out and "must be finite" in r.out, repr(r)

    s = tmp_path / "summ.h5"
    shutil.copyfile(d / "tau.h5", s)
    group = obj.rsplit("/", 1)[0]
    with h5py.File(s, "r+") as f:
        f[group].attrs["l2-norm"] = np.nan
    r = locus("validate", s)
    assert r.code == 1 and f"{s}: {group}@l2-norm: is nan, the data gives" in r.out, repr(r)
    with h5py.File(s, "r+") as f:
        f[group].attrs["l2-norm"] = np.float64(np.sqrt(np.sum(np.square(f[obj][()].astype(np.float64)))))
        f.attrs["l2-norm"] = np.inf
    r = locus("validate", s)
    assert r.code == 1 and f"{s}: /@l2-norm: is inf, the data gives" in r.out, repr(r)
    with h5py.File(s, "r+") as f:
        f[group].attrs["l2-norm"] = np.nan
    r = assert_ok(locus("inspect", s))
    name = unquote(group.split("/")[-1])
    row = next(l for l in r.out.splitlines() if l.strip().startswith(name + " "))
    assert row.split()[6] == "nan" and "‖τ‖₂ nan" in r.out, r.out
    j = assert_ok(locus("inspect", s, "--json")).json()
    assert next(t for t in j["tensors"] if t["name"] == name)["l2_norm"] == "nan", j


def test_validate_counts_non_finite_scores(locus, work, tmp_path):
    from conftest import h5_stored_bytes, tensor_digest
    s = tmp_path / "scores.h5"
    shutil.copyfile(work / "scores.h5", s)
    obj = first(s, "/tensors/")
    with h5py.File(s, "r+") as f:
        v = f[obj]
        a = v[()]
        a.flat[0], a.flat[1], a.flat[2] = np.nan, np.nan, np.inf
        v[...] = a
        v.attrs["digest"] = "sha256:" + tensor_digest(h5_stored_bytes(v)).hex()
    r = locus("validate", s)
    assert r.code == 1 and obj in r.out and "2 nan, 1 +inf among" in r.out, repr(r)


def test_inspect_prints_non_finite_score_summaries(locus, work, tmp_path):
    s = tmp_path / "scores.h5"
    shutil.copyfile(work / "scores.h5", s)
    obj = first(s, "/tensors/")
    with h5py.File(s, "r+") as f:
        f[obj].attrs["quantiles"] = np.array([np.nan, 0, 1, 2, -np.inf])
    name = unquote(obj.split("/")[-1])
    r = assert_ok(locus("inspect", s))
    row = next(l for l in r.out.splitlines() if l.strip().startswith(name + " "))
    assert row.split()[4] == "nan" and row.split()[6] == "-inf", r.out
    j = assert_ok(locus("inspect", s, "--json")).json()
    assert next(t for t in j["tensors"] if t["name"] == name)["quantiles"] == ["nan", 0, 1, 2, "-inf"], j
    r = locus("validate", s)
    assert r.code == 1 and f"{s}: {obj}@quantiles: is [nan, 0.0, 1.0, 2.0, -inf], the data gives" in r.out, repr(r)
