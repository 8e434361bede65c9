"""Bad input: every case exits != 0 with one error line naming the file (and the object), never traps,
and leaves no output (or temp) file behind. Corrupt files are made here with h5py or by hand."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest

from conftest import (FIXTURES, assert_error, assert_invalid, assert_nothing_new, assert_ok, assert_valid,
                      copy_fixture, names_object, replace_dataset, snapshot, st_fingerprint, st_write, truncated_copy)

W = "encoder.layer.0.attention.query.weight"
SCORES_ARGS = ["--kind", "scores", "--estimator", "fisher-empirical", "--samples", "1", "--draws", "1",
               "--reduction", "sum"]


def fails_cleanly(locus, out, *args, names=()):
    """Run `locus *args`; it must fail with one stderr line naming every path in `names`, leaving no new files
    in OUT's directory."""
    before = snapshot(out.parent)
    r = locus(*args)
    line = assert_error(r, names[0] if names else "")
    for n in names[1:]:
        assert str(n) in line, f"error line does not name {n}:\n{r!r}"
    assert_nothing_new(out.parent, before, out)
    return line


# ------------------------------------------------------------------ files that are not (readable) HDF5

def unreadable(case, d):
    p = d / f"{case}.h5"
    if case == "truncated":
        truncated_copy(FIXTURES / "checkpoint.h5", p)
    elif case == "truncated-derived":
        truncated_copy(FIXTURES / "task_vector.h5", p)
    elif case == "not-hdf5":
        p.write_text("this is not an HDF5 file\n" * 40)
    elif case == "empty-file":
        p.write_bytes(b"")
    elif case == "directory":
        p.mkdir()
    elif case == "missing":
        pass
    return p


UNREADABLE = ["truncated", "truncated-derived", "not-hdf5", "empty-file", "directory", "missing"]


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_validate(locus, tmp_path, case):
    p = unreadable(case, tmp_path)
    assert_invalid(locus("validate", p), p)


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_inspect(locus, tmp_path, case):
    p = unreadable(case, tmp_path)
    assert_error(locus("inspect", p, "--json"), p)
    assert_error(locus("inspect", p), p)


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_convert(locus, tmp_path, case):
    p = unreadable(case, tmp_path)
    out = tmp_path / "out.safetensors"
    fails_cleanly(locus, out, "convert", p, out, names=[p])


@pytest.mark.parametrize("case", ["truncated", "not-hdf5", "directory", "missing"])
def test_unreadable_base(locus, tmp_path, case):
    base = unreadable(case, tmp_path)
    src = st_write(tmp_path / "s.safetensors", {W: ("F32", (4, 6), np.ones(24, np.float32).tobytes())})
    out = tmp_path / "s.h5"
    fails_cleanly(locus, out, "convert", src, out, *SCORES_ARGS, "--base", base, names=[base])


def test_validate_many_files_one_bad(locus, tmp_path):
    bad = unreadable("truncated", tmp_path)
    good = FIXTURES / "mask.h5"
    assert_invalid(locus("validate", good, bad, FIXTURES / "scores.h5"), bad)


def test_existing_output_untouched_on_error(locus, tmp_path):
    bad = unreadable("truncated", tmp_path)
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"precious")
    before = snapshot(tmp_path)
    assert_error(locus("convert", bad, out), bad)
    assert out.read_bytes() == b"precious"
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ wrong kind given as --base

@pytest.mark.parametrize("fixture", ["mask.h5", "scores.h5", "task_vector.h5", "dataset.h5"])
def test_wrong_kind_as_base(locus, tmp_path, fixture):
    base = copy_fixture(fixture, tmp_path)
    src = st_write(tmp_path / "s.safetensors", {W: ("F32", (4, 6), np.ones(24, np.float32).tobytes())})
    out = tmp_path / "s.h5"
    fails_cleanly(locus, out, "convert", src, out, *SCORES_ARGS, "--base", base, names=[base])


def test_safetensors_as_base(locus, tmp_path):
    # Any checkpoint source may be the base (read in place); its fingerprint is computed from the data.
    raw = np.ones(24, np.float32).tobytes()
    base = st_write(tmp_path / "base.safetensors", {W: ("F32", (4, 6), raw)})
    src = st_write(tmp_path / "s.safetensors", {W: ("F32", (4, 6), raw)})
    out = tmp_path / "s.h5"
    assert_ok(locus("convert", src, out, *SCORES_ARGS, "--base", base))
    assert locus("inspect", out, "--json").json()["base_fingerprint"] == st_fingerprint({W: ("F32", (4, 6), raw)})
    # A file that is no checkpoint at all still fails cleanly.
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint at all")
    out2 = tmp_path / "s2.h5"
    fails_cleanly(locus, out2, "convert", src, out2, *SCORES_ARGS, "--base", junk, names=[junk])


# ------------------------------------------------------------------ HDF5 files that break a MUST (h5py-modified fixtures)

def _mask_bitcount(p):       # 24 bits need 3 bytes; store 4
    replace_dataset(p, f"tensors/{W}", np.zeros(4, np.uint8))


def _mask_padding(p):        # head/proj.weight has 12 bits: bit 15 is padding
    with h5py.File(p, "r+") as f:
        ds = f["tensors/head%2Fproj.weight"]
        a = ds[()]
        a[1] |= 0x80
        ds[...] = a


def _mask_ones(p):
    with h5py.File(p, "r+") as f:
        f[f"tensors/{W}"].attrs["ones"] = np.int64(f[f"tensors/{W}"].attrs["ones"] + 1)


def _mask_lzf(p):            # lzf is a filter the spec forbids
    with h5py.File(p, "r+") as f:
        ds = f[f"tensors/{W}"]
        data, attrs = ds[()], dict(ds.attrs)
        del f[f"tensors/{W}"]
        n = f.create_dataset(f"tensors/{W}", data=data, chunks=(3,), compression="lzf")
        n.attrs.update(attrs)


def _indices(values):
    def fn(p):
        with h5py.File(p, "r+") as f:
            f[f"tensors/{W}/indices"][...] = np.array(values, dtype=np.uint32)
    return fn


def _tv_dense_shape(p):
    replace_dataset(p, "tensors/encoder.layer.0.attention.query.bias/values", np.zeros(5, np.float16))


def _tv_bitmask_values(p):   # 5 set bits but 7 values
    with h5py.File(p, "r+") as f:
        g = f["tensors/head%2Fproj.weight"]
        t = g["values"].id.get_type()
        del g["values"]
        sid = h5py.h5s.create_simple((7,))
        ds = h5py.h5d.create(g.id, b"values", t, sid)
        ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.full(7, 0x3F80, np.uint16), mtype=t)


def _tv_nan(p):
    with h5py.File(p, "r+") as f:
        f[f"tensors/{W}/values"][0] = np.float32("nan")


def _ck_value(p):            # fingerprint no longer matches
    with h5py.File(p, "r+") as f:
        f["tensors/logit_scale"][()] = np.float32(1.0)


def _ck_dtype_attr(p):
    with h5py.File(p, "r+") as f:
        f[f"tensors/{W}"].attrs["dtype"] = "float64"


def _ck_bool_value(p):
    with h5py.File(p, "r+") as f:
        f["tensors/attention.causal_mask"][0, 0] = 2


def _ck_duplicate_name(p):   # "head%2fproj.weight" decodes to the same name as "head%2Fproj.weight"
    with h5py.File(p, "r+") as f:
        f.copy(f["tensors/head%2Fproj.weight"], f["tensors"], "head%2fproj.weight")


def _ck_big_endian(p):      # §1.4: float32 is H5T_IEEE_F32LE
    replace_dataset(p, f"tensors/{W}", np.ones((4, 6)), dtype=">f4")


def _tensors_not_group(p):
    with h5py.File(p, "r+") as f:
        del f["tensors"]
        f["tensors"] = np.zeros(3, np.float32)


def _mask_attr(attr, value):
    def fn(p):
        with h5py.File(p, "r+") as f:
            f[f"tensors/{W}"].attrs[attr] = np.asarray(value, dtype=np.int64)
    return fn


def _tv_huge_count(p):       # dense values (6,) but shape/count claim 2**40 elements
    with h5py.File(p, "r+") as f:
        g = f["tensors/encoder.layer.0.attention.query.bias"]
        g.attrs["shape"] = np.array([1 << 40], np.int64)
        g.attrs["count"] = np.int64(1 << 40)


def _scores_negative(p):
    with h5py.File(p, "r+") as f:
        f[f"tensors/{W}"][0, 0] = np.float32(-1.0)


def _scores_sum(p):
    with h5py.File(p, "r+") as f:
        f[f"tensors/{W}"].attrs["sum"] = np.float64(f[f"tensors/{W}"].attrs["sum"] * 1.01)


def _scores_dtype(p):        # same values, stored as H5T_IEEE_F64LE: only the HDF5 type is wrong
    with h5py.File(p, "r") as f:
        v = f[f"tensors/{W}"][()]
    replace_dataset(p, f"tensors/{W}", v.astype(np.float64), dtype=np.float64)


def _root(attr, value):
    def fn(p):
        with h5py.File(p, "r+") as f:
            if value is None:
                del f.attrs[attr]
            else:
                f.attrs[attr] = value
    return fn


def _ds_labels(p):
    with h5py.File(p, "r+") as f:
        f["labels"][0] = 3


def _ds_overlap(p):
    with h5py.File(p, "r+") as f:
        v = np.union1d(f["splits/val"][()], f["splits/test"][:1]).astype(np.int64)   # sorted, shares one index
        del f["splits/val"]
        f["splits/val"] = v


def _ds_std(p):
    with h5py.File(p, "r+") as f:
        f["inputs"].attrs["std"] = np.array([0.0])


# (fixture, mutation, object path the violation must name or None, reader must reject it)
CASES = {
    "mask-bit-count": ("mask.h5", _mask_bitcount, f"tensors/{W}", True),
    "mask-padding-bits": ("mask.h5", _mask_padding, "tensors/head%2Fproj.weight", False),
    "mask-ones-summary": ("mask.h5", _mask_ones, f"tensors/{W}", False),
    "mask-lzf-filter": ("mask.h5", _mask_lzf, f"tensors/{W}", False),
    "tv-index-out-of-range": ("task_vector.h5", _indices([1, 5, 6, 17, 24]), f"tensors/{W}", True),
    "tv-index-huge": ("task_vector.h5", _indices([1, 5, 6, 17, 2 ** 32 - 1]), f"tensors/{W}", True),
    "tv-index-unsorted": ("task_vector.h5", _indices([1, 6, 5, 17, 23]), f"tensors/{W}", False),
    "tv-index-duplicate": ("task_vector.h5", _indices([1, 5, 5, 17, 23]), f"tensors/{W}", False),
    "tv-dense-shape": ("task_vector.h5", _tv_dense_shape, "tensors/encoder.layer.0.attention.query.bias", True),
    "tv-bitmask-values": ("task_vector.h5", _tv_bitmask_values, "tensors/head%2Fproj.weight", True),
    "tv-nan-value": ("task_vector.h5", _tv_nan, f"tensors/{W}", False),
    "ck-fingerprint": ("checkpoint.h5", _ck_value, None, False),
    "ck-dtype-attr": ("checkpoint.h5", _ck_dtype_attr, f"tensors/{W}", False),
    "ck-bool-value": ("checkpoint.h5", _ck_bool_value, "tensors/attention.causal_mask", False),
    "ck-duplicate-name": ("checkpoint.h5", _ck_duplicate_name, None, False),
    "ck-big-endian": ("checkpoint.h5", _ck_big_endian, f"tensors/{W}", False),
    "tensors-not-a-group": ("scores.h5", _tensors_not_group, "tensors", True),
    "mask-shape-count-mismatch": ("mask.h5", _mask_attr("shape", [5, 6]), f"tensors/{W}", True),
    "mask-count-huge": ("mask.h5", _mask_attr("count", 1 << 62), f"tensors/{W}", True),
    "mask-shape-overflow": ("mask.h5", _mask_attr("shape", [1 << 32, 1 << 32, 1 << 32]), f"tensors/{W}", True),
    "mask-negative-shape": ("mask.h5", _mask_attr("shape", [-4, -6]), f"tensors/{W}", True),
    "tv-count-huge": ("task_vector.h5", _tv_huge_count, "tensors/encoder.layer.0.attention.query.bias", True),
    "scores-negative": ("scores.h5", _scores_negative, f"tensors/{W}", False),
    "scores-sum-summary": ("scores.h5", _scores_sum, f"tensors/{W}", False),
    "scores-not-float32": ("scores.h5", _scores_dtype, f"tensors/{W}", False),
    "major-version": ("scores.h5", _root("encoding-version", "2.0"), None, True),
    "unknown-kind": ("scores.h5", _root("kind", "weights"), None, True),
    "not-locus": ("mask.h5", _root("encoding-type", "anndata"), None, True),
    "no-base-fingerprint": ("mask.h5", _root("base-fingerprint", None), None, False),
    "tv-no-scale": ("task_vector.h5", _root("scale", None), None, False),
    "dataset-label-range": ("dataset.h5", _ds_labels, "labels", False),
    "dataset-split-overlap": ("dataset.h5", _ds_overlap, "splits", False),
    "dataset-std-zero": ("dataset.h5", _ds_std, "inputs", False),
}


def make_case(case, d):
    fixture, fn, obj, _ = CASES[case]
    p = copy_fixture(fixture, d)
    fn(p)
    return p, obj


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_reports_violation(locus, tmp_path, case):
    p, obj = make_case(case, tmp_path)
    assert_invalid(locus("validate", p), p, obj)


@pytest.mark.parametrize("case", sorted(c for c in CASES if CASES[c][0] != "dataset.h5"))
def test_convert_invalid_h5(locus, tmp_path, case):
    """Cases a conforming reader MUST reject (§7) fail; for the others, convert may succeed but never traps
    and on failure leaves nothing behind."""
    p, obj = make_case(case, tmp_path)
    out = tmp_path / "out.safetensors"
    if CASES[case][3]:
        line = fails_cleanly(locus, out, "convert", p, out, names=[p])
        if obj:
            assert names_object(line, obj), line
    else:
        before = snapshot(tmp_path)
        r = locus("convert", p, out)
        if r.code != 0:
            assert_error(r, p)
            assert_nothing_new(tmp_path, before, out)


@pytest.mark.parametrize("case", ["major-version", "unknown-kind", "not-locus", "tv-index-huge", "mask-bit-count"])
def test_inspect_rejects(locus, tmp_path, case):
    p, _ = make_case(case, tmp_path)
    if case in ("tv-index-huge", "mask-bit-count"):   # inspect reads summaries only; it may not see these
        r = locus("inspect", p, "--json")
        if r.code != 0:
            assert_error(r, p)
        return
    assert_error(locus("inspect", p, "--json"), p)


# ------------------------------------------------------------------ bad safetensors

def _f32(n):
    return np.arange(n, dtype=np.float32).tobytes()


def bad_safetensors(case, p):
    hdr = lambda d: json.dumps(d)  # noqa: E731
    if case == "overlapping-offsets":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}), data=_f32(6))
    elif case == "out-of-bounds-offsets":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}), data=_f32(2))
    elif case == "offsets-shape-mismatch":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}), data=_f32(3))
    elif case == "reversed-offsets":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}), data=_f32(2))
    elif case == "duplicate-names":
        st_write(p, None, header='{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                 '"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}', data=_f32(4))
    elif case == "header-larger-than-file":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}), data=_f32(1),
                 header_len=1 << 20)
    elif case == "header-length-huge":
        st_write(p, None, header=hdr({}), header_len=(1 << 64) - 8)
    elif case == "bad-json":
        st_write(p, None, header='{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]', data=_f32(1))
    elif case == "unknown-dtype":
        st_write(p, None, header=hdr({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 4]}}), data=_f32(1))
    elif case == "negative-shape":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}), data=_f32(1))
    elif case == "shape-overflow":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [1 << 62, 1 << 62], "data_offsets": [0, 4]}}),
                 data=_f32(1))
    elif case == "header-not-utf8":
        st_write(p, None, header="{}", data=b"")
        blob = bytearray(p.read_bytes())
        blob[8:10] = b"\xff\xfe"
        p.write_bytes(bytes(blob))
    elif case == "header-not-object":
        st_write(p, None, header="[1, 2, 3]", data=b"")
    elif case == "missing-dtype":
        st_write(p, None, header=hdr({"a": {"shape": [1], "data_offsets": [0, 4]}}), data=_f32(1))
    elif case == "offsets-not-integers":
        st_write(p, None, header=hdr({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.5, 4.5]}}), data=_f32(2))
    elif case == "shorter-than-8-bytes":
        p.write_bytes(b"\x10\x00\x00")
    elif case == "truncated":
        st_write(p, {"a": ("F32", (64,), _f32(64))})
        p.write_bytes(p.read_bytes()[:-100])
    return p


BAD_ST = ["overlapping-offsets", "out-of-bounds-offsets", "offsets-shape-mismatch", "reversed-offsets",
          "duplicate-names", "header-larger-than-file", "header-length-huge", "bad-json", "unknown-dtype",
          "negative-shape", "shape-overflow", "shorter-than-8-bytes", "truncated", "header-not-utf8", "header-not-object",
          "missing-dtype", "offsets-not-integers"]


@pytest.mark.parametrize("case", BAD_ST)
def test_bad_safetensors(locus, tmp_path, case):
    src = bad_safetensors(case, tmp_path / f"{case}.safetensors")
    out = tmp_path / "out.h5"
    fails_cleanly(locus, out, "convert", src, out, names=[src])


@pytest.mark.parametrize("case", ["overlapping-offsets", "duplicate-names", "header-larger-than-file"])
def test_bad_safetensors_keeps_existing_output(locus, tmp_path, case):
    src = bad_safetensors(case, tmp_path / f"{case}.safetensors")
    out = tmp_path / "out.h5"
    shutil.copyfile(FIXTURES / "checkpoint.h5", out)
    before = snapshot(tmp_path)
    assert_error(locus("convert", src, out), src)
    assert out.read_bytes() == (FIXTURES / "checkpoint.h5").read_bytes()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["missing", "directory", "not-safetensors"])
def test_unreadable_safetensors(locus, tmp_path, case):
    src = tmp_path / "in.safetensors"
    if case == "directory":
        src.mkdir()
    elif case == "not-safetensors":
        src.write_text("hello world, not a safetensors file at all\n")
    out = tmp_path / "out.h5"
    fails_cleanly(locus, out, "convert", src, out, names=[src])


def test_output_into_missing_directory(locus, tmp_path):
    src = st_write(tmp_path / "a.safetensors", {"a": ("F32", (2,), _f32(2))})
    out = tmp_path / "no" / "such" / "dir" / "a.h5"
    assert_error(locus("convert", src, out), out.parent)   # names OUT or its directory
    assert not (tmp_path / "no").exists()


def test_metadata_not_strings(locus, tmp_path):
    """safetensors __metadata__ is str -> str and so is /metadata: convert fails, or writes a valid file."""
    src = st_write(tmp_path / "m.safetensors", None, data=_f32(1), header=json.dumps(
        {"__metadata__": {"a": 1}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}))
    out = tmp_path / "m.h5"
    before = snapshot(tmp_path)
    r = locus("convert", src, out)
    if r.code == 0:
        assert_valid(locus("validate", out))
    else:
        assert_error(r, src)
        assert_nothing_new(tmp_path, before, out)


def test_valid_after_all(locus, tmp_path):
    """Sanity check for this module: the unmodified copies are valid."""
    for name in ("mask.h5", "task_vector.h5", "scores.h5", "checkpoint.h5", "dataset.h5"):
        assert_valid(locus("validate", copy_fixture(name, tmp_path)))
    assert_ok(locus("convert", st_write(tmp_path / "ok.safetensors", {"a": ("F32", (2,), _f32(2))}), tmp_path / "ok.h5"))
    assert os.path.exists(tmp_path / "ok.h5")


@pytest.mark.parametrize("names", [("junk.bin", "b.h5"), ("mask.h5", "b.h5"), ("mask.h5", "out/")])   # no checkpoint to convert
def test_unknown_conversion_direction(locus, tmp_path, names):
    src, out = tmp_path / names[0], str(tmp_path / names[1]) + ("/" if names[1].endswith("/") else "")
    if names[0] == "mask.h5":
        shutil.copyfile(FIXTURES / "mask.h5", src)
    else:
        src.write_bytes(b"neither HDF5, safetensors nor a PyTorch archive")
    before = snapshot(tmp_path)
    r = locus("convert", src, out)
    line = assert_error(r, "")
    assert str(src) in line or str(out) in line, repr(r)
    assert_nothing_new(tmp_path, before, out.rstrip("/"))


def test_inputs_are_recognised_by_content(locus, tmp_path):
    # A safetensors file named .bin and a checkpoint .h5 → .h5 copy: the kind comes from the bytes.
    src = st_write(tmp_path / "a.bin", {"a": ("F32", (2,), _f32(2))})
    assert_ok(locus("convert", src, tmp_path / "a.h5"))
    shutil.copyfile(FIXTURES / "checkpoint.h5", tmp_path / "c.h5")
    assert_ok(locus("convert", tmp_path / "c.h5", tmp_path / "copy.h5"))
    assert (locus("inspect", tmp_path / "copy.h5", "--json").json()["fingerprint"]
            == locus("inspect", tmp_path / "c.h5", "--json").json()["fingerprint"])
