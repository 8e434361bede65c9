"""`locus convert`: Locus-written artifacts of every kind, read back by h5py / locus_h5 with identical numbers."""
import json
import math

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conftest import (FIXTURES, METADATA, ST_DTYPES, assert_error, assert_nothing_new, assert_ok, assert_valid,
                      bf16_type_ok, h5_stored_bytes, locus_h5, snapshot, spec_fingerprint, st_fingerprint, st_read,
                      st_write)

REL = 1e-6
H5_TYPES = {"float64": h5py.h5t.IEEE_F64LE, "float32": h5py.h5t.IEEE_F32LE, "int64": h5py.h5t.STD_I64LE,
            "int32": h5py.h5t.STD_I32LE, "int16": h5py.h5t.STD_I16LE, "int8": h5py.h5t.STD_I8LE,
            "uint64": h5py.h5t.STD_U64LE, "uint32": h5py.h5t.STD_U32LE, "uint16": h5py.h5t.STD_U16LE,
            "uint8": h5py.h5t.STD_U8LE, "bool": h5py.h5t.STD_U8LE}


def check_h5_type(ds, dtype):
    tid = ds.id.get_type()
    if dtype == "bfloat16":
        assert bf16_type_ok(tid), ds.name
    elif dtype == "float16":
        assert tid.get_class() == h5py.h5t.FLOAT and tid.get_size() == 2 and tid.get_order() == h5py.h5t.ORDER_LE
        assert tid.get_fields() == (15, 10, 5, 0, 10) and tid.get_ebias() == 15, ds.name
    else:
        assert tid.equal(H5_TYPES[dtype]), (ds.name, dtype)


def tensors_of(path):
    with h5py.File(path) as f:
        return {locus_h5.unescape(k): v.name for k, v in f["tensors"].items()}


# ------------------------------------------------------------------ checkpoint

def test_checkpoint_bit_exact(locus, converted):
    st = converted["st"]["base"]
    path = converted["base"]
    assert_valid(locus("validate", path))
    with h5py.File(path) as f:
        assert f.attrs["kind"] == "checkpoint" and f.attrs["encoding-type"] == "locus"
        assert f.attrs["encoding-version"].split(".")[0] == "1"
        links = set(f["tensors"])
        assert {"head%2Fout.weight", "weird%2Fna.me%25", "%2E"} <= links
        assert {locus_h5.unescape(k) for k in links} == set(st)
        for name, (dt, shape, raw) in st.items():
            ds = f["tensors"][locus_h5.escape(name)]
            assert isinstance(ds, h5py.Dataset) and ds.shape == shape, name
            assert ds.attrs["dtype"] == ST_DTYPES[dt][0], name
            check_h5_type(ds, ST_DTYPES[dt][0])
            assert h5_stored_bytes(ds) == raw, name
        assert json.loads(f["metadata"][()]) == METADATA
        assert f.attrs["tensor-count"] == len(st)
        assert f.attrs["element-count"] == sum(math.prod(s) for _, s, _ in st.values())
        assert f.attrs["fingerprint"] == st_fingerprint(st) == spec_fingerprint(path)
    j = locus("inspect", path, "--json").json()
    assert j["fingerprint"] == st_fingerprint(st)


def test_checkpoint_read_by_locus_h5(converted):
    want = converted["numpy"]["base"]
    r = locus_h5.load(converted["base"], bf16_as_bits=True)
    assert r["metadata"] == METADATA
    for name, a in want.items():
        got = r["tensors"][name]
        if name in ("head/out.weight", "small.bf16", "tv.bf"):
            assert r["dtypes"][name] == "bfloat16"
            np.testing.assert_array_equal(got, locus_h5.bf16_bits(a))
        else:
            assert got.dtype == a.dtype, name
            np.testing.assert_array_equal(got, a)


def test_checkpoint_back_to_safetensors(locus, converted, tmp_path):
    back = tmp_path / "back.safetensors"
    assert_ok(locus("convert", converted["base"], back))
    meta, tensors = st_read(back)
    assert meta == METADATA
    assert tensors == converted["st"]["base"]          # names, dtypes, shapes and bytes
    again = tmp_path / "again.h5"
    assert_ok(locus("convert", back, again))
    with h5py.File(again) as f, h5py.File(converted["base"]) as g:
        assert f.attrs["fingerprint"] == g.attrs["fingerprint"]


def test_checkpoint_from_save_file(locus, tmp_path):
    """A file written by safetensors.numpy.save_file itself."""
    rng = np.random.default_rng(5)
    t = {"layer.0.weight": rng.standard_normal((6, 5)).astype(np.float32),
         "layer.0.bias": rng.standard_normal(5).astype(np.float16),
         "steps": np.array([3, 1 << 40, -5], dtype=np.int64), "keep": np.array([True, False]),
         "scalar": np.array(1.25, np.float32), "nothing": np.zeros((0,), np.float32)}
    save_file(t, str(tmp_path / "m.safetensors"), metadata={"format": "pt"})
    assert_ok(locus("convert", tmp_path / "m.safetensors", tmp_path / "m.h5", "--kind", "checkpoint"))
    assert_valid(locus("validate", tmp_path / "m.h5"))
    with h5py.File(tmp_path / "m.h5") as f:
        for name, a in t.items():
            ds = f["tensors"][name]
            assert ds.shape == a.shape and ds.dtype == (np.uint8 if a.dtype == bool else a.dtype), name
            np.testing.assert_array_equal(ds[()], a)
        assert json.loads(f["metadata"][()]) == {"format": "pt"}
    assert_ok(locus("convert", tmp_path / "m.h5", tmp_path / "back.safetensors"))
    back = load_file(str(tmp_path / "back.safetensors"))
    assert back.keys() == t.keys()
    for name, a in t.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        np.testing.assert_array_equal(back[name], a)


def test_fixture_checkpoint_to_safetensors(locus, tmp_path):
    out = tmp_path / "ck.safetensors"
    assert_ok(locus("convert", FIXTURES / "checkpoint.h5", out))
    meta, tensors = st_read(out)
    assert meta == {"format": "pt", "source": "make_fixtures_h5py"}
    rev = {v[0]: k for k, v in ST_DTYPES.items()}
    with h5py.File(FIXTURES / "checkpoint.h5") as f:
        want = {locus_h5.unescape(k): (rev[ds.attrs["dtype"]], ds.shape, h5_stored_bytes(ds)) for k, ds in f["tensors"].items()}
        assert tensors == want
        assert st_fingerprint(tensors) == f.attrs["fingerprint"]


# ------------------------------------------------------------------ scores

def test_scores(locus, converted):
    path, want = converted["scores"], converted["numpy"]["scores"]
    assert_valid(locus("validate", path))
    with h5py.File(path) as f, h5py.File(converted["base"]) as b:
        a = f.attrs
        assert a["kind"] == "scores" and a["base-fingerprint"] == b.attrs["fingerprint"]
        assert (a["estimator"], a["samples"], a["draws"], a["reduction"]) == ("fisher-mc", 32, 4, "mean")
        assert a["tensor-count"] == len(want) and a["element-count"] == sum(v.size for v in want.values())
        allv = np.concatenate([v.astype(np.float64).reshape(-1) for v in want.values()])
        assert a["min"] == pytest.approx(allv.min(), rel=REL) and a["max"] == pytest.approx(allv.max(), rel=REL)
        assert a["sum"] == pytest.approx(allv.sum(), rel=REL)
        assert tensors_of(path).keys() == want.keys()
        for name, v in want.items():
            ds = f["tensors"][locus_h5.escape(name)]
            assert ds.attrs["dtype"] == "float32" and ds.shape == v.shape
            check_h5_type(ds, "float32")
            np.testing.assert_array_equal(ds[()], v.astype(np.float32))   # float16 -> float32 is exact
            v64 = v.astype(np.float64).reshape(-1)
            assert ds.attrs["sum"] == pytest.approx(v64.sum(), rel=REL)
            q = ds.attrs["quantiles"]
            if v.size:
                np.testing.assert_allclose(q, np.quantile(v64, [0, .25, .5, .75, 1]), rtol=REL)
            else:
                assert np.size(q) == 0
    r = locus_h5.load(path)
    for name, v in want.items():
        np.testing.assert_array_equal(r["tensors"][name], v.astype(np.float32))


def test_scores_to_safetensors(locus, converted, tmp_path):
    out = tmp_path / "s.safetensors"
    assert_ok(locus("convert", converted["scores"], out))
    back = load_file(str(out))
    want = converted["numpy"]["scores"]
    assert back.keys() == want.keys()
    for name, v in want.items():
        assert back[name].dtype == np.float32
        np.testing.assert_array_equal(back[name], v.astype(np.float32))


# ------------------------------------------------------------------ mask

def test_mask(locus, converted):
    path, want = converted["mask"], converted["numpy"]["mask"]
    assert_valid(locus("validate", path))
    with h5py.File(path) as f, h5py.File(converted["base"]) as b:
        a = f.attrs
        assert a["kind"] == "mask" and a["base-fingerprint"] == b.attrs["fingerprint"]
        assert a["absent-tensors"] == "trainable"
        assert a["tensor-count"] == len(want)
        assert a["count"] == sum(v.size for v in want.values())
        assert a["ones"] == sum(int(np.sum(v)) for v in want.values())
        for name, m in want.items():
            ds = f["tensors"][locus_h5.escape(name)]
            assert ds.id.get_type().equal(h5py.h5t.STD_U8LE) and ds.shape == ((m.size + 7) // 8,), name
            assert ds.attrs["encoding-type"] == "packed-bits" and ds.attrs["bitorder"] == "little"
            assert list(ds.attrs["shape"]) == list(m.shape) and ds.attrs["count"] == m.size
            assert ds.attrs["ones"] == int(np.sum(m))
            assert ds[()].tobytes() == np.packbits(m.astype(bool).reshape(-1), bitorder="little").tobytes(), name
    r = locus_h5.load(path)
    for name, m in want.items():
        np.testing.assert_array_equal(r["tensors"][name], m.astype(bool))


def test_mask_to_safetensors(locus, converted, tmp_path):
    out = tmp_path / "m.safetensors"
    assert_ok(locus("convert", converted["mask"], out))
    back = load_file(str(out))
    want = converted["numpy"]["mask"]
    assert back.keys() == want.keys()
    for name, m in want.items():
        assert back[name].dtype == np.bool_ and back[name].shape == m.shape
        np.testing.assert_array_equal(back[name], m.astype(bool))


def test_fixture_mask_and_scores_to_safetensors(locus, tmp_path):
    for name, dt in (("mask.h5", np.bool_), ("scores.h5", np.float32)):
        out = tmp_path / (name + ".safetensors")
        assert_ok(locus("convert", FIXTURES / name, out))
        back, want = load_file(str(out)), locus_h5.load(FIXTURES / name)["tensors"]
        assert back.keys() == want.keys()
        for k, v in want.items():
            assert back[k].dtype == dt
            np.testing.assert_array_equal(back[k], v)


# ------------------------------------------------------------------ task vector

def test_task_vector(locus, converted):
    path, want = converted["task-vector"], converted["numpy"]["task-vector"]
    st = converted["st"]["task-vector"]
    assert_valid(locus("validate", path))
    with h5py.File(path) as f, h5py.File(converted["base"]) as b:
        a = f.attrs
        assert a["kind"] == "task-vector" and a["base-fingerprint"] == b.attrs["fingerprint"]
        assert a["scale"] == 1.0 and a["tensor-count"] == len(want)
        enc = {}
        sq = 0.0
        for name, (dt, shape, raw) in st.items():
            dtype, npdt = ST_DTYPES[dt]
            vals = np.frombuffer(raw, dtype=npdt)
            v64 = (locus_h5.bits_to_float32(vals) if dtype == "bfloat16" else vals).astype(np.float64)
            g = f["tensors"][locus_h5.escape(name)]
            assert isinstance(g, h5py.Group), name
            ga = g.attrs
            assert ga["dtype"] == dtype and list(ga["shape"]) == list(shape) and ga["count"] == vals.size, name
            assert ga["nnz"] == np.count_nonzero(v64), name
            assert ga["l2-norm"] == pytest.approx(np.sqrt(np.sum(v64 ** 2)), rel=REL, abs=1e-300), name
            sq += float(np.sum(v64 ** 2))
            enc[name] = ga["encoding-type"]
            assert enc[name] == locus_h5.choose_encoding(vals.size, int(np.count_nonzero(v64)), vals.itemsize), name
            check_h5_type(g["values"], dtype)
            # densify from the stored bits
            dense = np.zeros(vals.size, dtype=npdt)
            stored = np.frombuffer(h5_stored_bytes(g["values"]), dtype=npdt)
            if enc[name] == "coo":
                idx = g["indices"][()]
                assert g["indices"].id.get_type().equal(h5py.h5t.STD_U32LE)
                assert np.all(np.diff(idx.astype(np.int64)) > 0) and (idx.size == 0 or idx[-1] < vals.size)
                dense[idx] = stored
            elif enc[name] == "bitmask":
                sel = np.unpackbits(g["mask"][()], bitorder="little", count=vals.size).astype(bool)
                dense[sel] = stored
            else:
                assert g["values"].shape == shape
                dense[:] = stored.reshape(-1)
            assert dense.tobytes() == raw, name      # bit-exact, value dtype kept
        assert a["nnz"] == sum(int(g.attrs["nnz"]) for g in f["tensors"].values())
        assert a["count"] == sum(int(g.attrs["count"]) for g in f["tensors"].values())
        assert a["l2-norm"] == pytest.approx(math.sqrt(sq), rel=REL)
    # densities 1 %, 10 %, 99 % of float32: the spec's rule predicts coo, bitmask, dense
    assert (enc["tv.d1"], enc["tv.d10"], enc["tv.d99"]) == ("coo", "bitmask", "dense")
    # ties: coo == bitmask -> bitmask; bitmask == dense -> dense
    assert (enc["tie.a"], enc["tie.b"]) == ("bitmask", "dense")
    assert enc["enc.w"] == "coo" and enc["scale"] == "dense"   # all zero -> empty coo; scalar -> dense
    r = locus_h5.load(path)
    for name, v in want.items():
        exp = locus_h5.bits_to_float32(locus_h5.bf16_bits(v)) if name == "tv.bf" else v
        np.testing.assert_array_equal(r["tensors"][name], exp)


def test_task_vector_inspect(locus, converted):
    j = locus("inspect", converted["task-vector"], "--json").json()
    with h5py.File(converted["task-vector"]) as f:
        t = {x["name"]: x for x in j["tensors"]}
        for name, g in ((locus_h5.unescape(k), g) for k, g in f["tensors"].items()):
            assert t[name]["encoding"] == g.attrs["encoding-type"] and t[name]["nnz"] == g.attrs["nnz"]
            assert t[name]["l2_norm"] == pytest.approx(g.attrs["l2-norm"], rel=REL, abs=1e-300)
        assert j["totals"]["l2_norm"] == pytest.approx(f.attrs["l2-norm"], rel=REL)
        assert j["totals"]["nnz"] == f.attrs["nnz"]


def test_task_vector_to_safetensors(locus, converted, tmp_path):
    out = tmp_path / "tv.safetensors"
    assert_ok(locus("convert", converted["task-vector"], out))
    meta, tensors = st_read(out)
    assert tensors == converted["st"]["task-vector"]   # dense, unscaled, value dtype kept (BF16 bits too)
    with h5py.File(converted["base"]) as b:
        assert meta["locus.kind"] == "task-vector" and meta["locus.base-fingerprint"] == b.attrs["fingerprint"]
    assert float(meta["locus.scale"]) == 1.0


def test_fixture_task_vector_to_safetensors(locus, tmp_path):
    """h5py-written: coo with a stored zero, bfloat16 bitmask, float16 dense, scalar; scale 0.5."""
    out = tmp_path / "tv.safetensors"
    assert_ok(locus("convert", FIXTURES / "task_vector.h5", out))
    meta, tensors = st_read(out)
    assert meta["locus.kind"] == "task-vector" and float(meta["locus.scale"]) == 0.5
    assert meta["locus.base-fingerprint"] == spec_fingerprint(FIXTURES / "checkpoint.h5")
    want = locus_h5.load(FIXTURES / "task_vector.h5", scaled=False, bf16_as_bits=True)
    rev = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
    assert tensors.keys() == want["tensors"].keys()
    for name, a in want["tensors"].items():
        dt, shape, raw = tensors[name]
        assert (dt, shape) == (rev[want["dtypes"][name]], a.shape), name
        assert raw == np.asarray(a).tobytes(), name


# ------------------------------------------------------------------ what --base pins; invalid values never make an invalid file

def convert_fails_cleanly(locus, args, out, *names):
    """convert must fail: one stderr line naming one of `names`, no OUT and no temp file."""
    before = snapshot(out.parent)
    r = locus("convert", *args)
    line = assert_error(r, names[0]) if len(names) == 1 else assert_error(r, "")
    assert any(str(n) in line for n in names), f"error line names none of {names}:\n{r!r}"
    assert_nothing_new(out.parent, before, out)
    return line


def test_derived_kind_needs_base(locus, converted, tmp_path):
    out = tmp_path / "s.h5"
    src = converted["dir"] / "scores.safetensors"
    convert_fails_cleanly(locus, [src, out, "--kind", "scores", "--estimator", "x", "--samples", "1",
                                  "--draws", "1", "--reduction", "sum"], out, src, "base")


@pytest.mark.parametrize("problem", ["missing-name", "wrong-shape"])
def test_derived_tensor_must_match_base(locus, converted, tmp_path, problem):
    t = {"missing-name": {"not.in.base": ("F32", (2,), np.ones(2, np.float32).tobytes())},
         "wrong-shape": {"enc.w": ("F32", (16, 8), np.ones(128, np.float32).tobytes())}}[problem]
    src = st_write(tmp_path / "s.safetensors", t)
    out = tmp_path / "s.h5"
    line = convert_fails_cleanly(locus, [src, out, "--kind", "scores", "--base", converted["base"], "--estimator",
                                         "x", "--samples", "1", "--draws", "1", "--reduction", "sum"],
                                 out, src, converted["base"])
    assert list(t)[0] in line


@pytest.mark.parametrize("kind,dt,values", [
    ("scores", "F32", [1.0, -2.0]), ("scores", "F32", [1.0, float("nan")]), ("scores", "F32", [float("inf"), 0.0]),
    ("mask", "U8", [0, 2]), ("task-vector", "F32", [0.0, float("nan")]), ("task-vector", "I64", [0, 3]),
])
def test_invalid_values_never_make_an_invalid_file(locus, converted, tmp_path, kind, dt, values):
    """The contract does not say whether Locus rejects or repairs these; it may only write a valid file."""
    npdt = ST_DTYPES[dt][1]
    base_shape = (2,)
    src = st_write(tmp_path / "x.safetensors", {"tv.probe": (dt, base_shape, np.array(values, npdt).tobytes())})
    base_st = tmp_path / "b.safetensors"
    st_write(base_st, {"tv.probe": ("F32", base_shape, np.zeros(2, np.float32).tobytes())})
    assert_ok(locus("convert", base_st, tmp_path / "b.h5"))
    out = tmp_path / "x.h5"
    extra = {"scores": ["--estimator", "x", "--samples", "1", "--draws", "1", "--reduction", "sum"], "mask": [],
             "task-vector": []}[kind]
    before = snapshot(tmp_path)
    r = locus("convert", src, out, "--kind", kind, "--base", tmp_path / "b.h5", *extra)
    if r.code == 0:
        assert_valid(locus("validate", out))
    else:
        line = assert_error(r, "")
        # the contract does not say which file such an error names: the input, the base, or the output
        assert any(str(p) in line for p in (src, tmp_path / "b.h5", out)), f"error names no file:\n{r!r}"
        assert_nothing_new(tmp_path, before, out)


# ------------------------------------------------------------------ names, layouts and encodings Locus must cope with

# byte order differs from Unicode canonical order for "w.e\u0301x" < "w.\u00e9a"; names with '%' and '/' escape
UNICODE_NAMES = ["w.e\u0301x", "w.\u00e9a", "w.\U0001F600", "w.\uFFFD", "w.\uFF21", "w.Z", "w.a", "w.%2F", "w.%",
                 "w/x", "W"]
ODD_NAMES = ["a\tb", "..", " ", "a\\b", "%2E", ".", "%", "x/", "/x", "%25"]
# NFC and NFD spellings of one word: canonically equivalent, but different bytes, so different state-dict keys
NFC_NFD = ["w.caf\u00e9", "w.cafe\u0301"]


@pytest.mark.parametrize("names", [UNICODE_NAMES, ODD_NAMES, NFC_NFD], ids=["byte-order", "odd", "nfc-nfd"])
def test_unicode_names_kept_verbatim_and_sorted_by_bytes(locus, tmp_path, names):
    st = {n: ("F32", (2,), np.array([i, -i], np.float32).tobytes()) for i, n in enumerate(names)}
    src = st_write(tmp_path / "u.safetensors", st, {"k": "v"})
    assert_ok(locus("convert", src, tmp_path / "u.h5"))
    assert_valid(locus("validate", tmp_path / "u.h5"))
    with h5py.File(tmp_path / "u.h5") as f:
        assert sorted(locus_h5.unescape(k) for k in f["tensors"]) == sorted(names)
        assert f.attrs["fingerprint"] == st_fingerprint(st) == spec_fingerprint(tmp_path / "u.h5")
    j = locus("inspect", tmp_path / "u.h5", "--json").json()
    assert sorted(t["name"] for t in j["tensors"]) == sorted(names)
    assert_ok(locus("convert", tmp_path / "u.h5", tmp_path / "back.safetensors"))
    assert st_read(tmp_path / "back.safetensors")[1] == st


@pytest.mark.parametrize("names", [UNICODE_NAMES, ODD_NAMES, NFC_NFD], ids=["byte-order", "odd", "nfc-nfd"])
def test_unicode_names_written_by_h5py(locus, tmp_path, names):
    t = {n: np.array([i], np.float32) for i, n in enumerate(names)}
    locus_h5.write_checkpoint(tmp_path / "u.h5", t)
    assert_valid(locus("validate", tmp_path / "u.h5"))
    assert locus("inspect", tmp_path / "u.h5", "--json").json()["fingerprint"] == locus_h5.fingerprint(tmp_path / "u.h5")


def test_empty_name_rejected(locus, tmp_path):
    """§1.3: names MUST be non-empty."""
    src = st_write(tmp_path / "e.safetensors", {"": ("F32", (1,), b"\0\0\0\0")})
    out = tmp_path / "e.h5"
    before = snapshot(tmp_path)
    line = assert_error(locus("convert", src, out), "")
    assert str(src) in line or str(out) in line
    assert_nothing_new(tmp_path, before, out)


@pytest.mark.parametrize("bad", ["a\nb", "x\n"])
def test_name_with_newline_refused(locus, tmp_path, bad):
    """§1.3: names MUST NOT contain a newline (it would make the fingerprint stream ambiguous)."""
    src = st_write(tmp_path / "n.safetensors", {bad: ("F32", (1,), b"\0\0\0\0")})
    out = tmp_path / "n.h5"
    before = snapshot(tmp_path)
    r = locus("convert", src, out)
    assert r.code != 0 and "newline" in r.err and str(src) in r.err, repr(r)
    assert_nothing_new(tmp_path, before, out)


def test_name_with_nul(locus, tmp_path):
    """An HDF5 link name cannot hold NUL and §1.3 has no escape for it: Locus must refuse, or write a file that is
    valid and gives the name back verbatim; never a file with a different name (and a fingerprint that fails)."""
    st = {"a\u0000b": ("F32", (1,), b"\0\0\x80\x3f"), "c": ("F32", (1,), b"\0\0\0\0")}
    src = st_write(tmp_path / "n.safetensors", st)
    out = tmp_path / "n.h5"
    before = snapshot(tmp_path)
    r = locus("convert", src, out)
    if r.code == 0:
        assert_valid(locus("validate", out))
        with h5py.File(out) as f:
            assert sorted(locus_h5.unescape(k) for k in f["tensors"]) == sorted(st)
    else:
        line = assert_error(r, "")
        assert str(src) in line or str(out) in line
        assert_nothing_new(tmp_path, before, out)


def test_uint64_coo_indices_accepted(locus, tmp_path):
    """§5: coo indices MAY be H5T_STD_U64LE."""
    p = tmp_path / "tv.h5"
    p.write_bytes((FIXTURES / "task_vector.h5").read_bytes())
    with h5py.File(p, "r+") as f:
        g = f["tensors/encoder.layer.0.attention.query.weight"]
        idx = g["indices"][()].astype("<u8")
        del g["indices"]
        g.create_dataset("indices", data=idx)
    assert_valid(locus("validate", p))
    assert_ok(locus("convert", p, tmp_path / "tv.safetensors"))
    assert st_read(tmp_path / "tv.safetensors")[1] == st_read(_fixture_tv_st(locus, tmp_path))[1]


def _fixture_tv_st(locus, tmp_path):
    out = tmp_path / "fixture_tv.safetensors"
    assert_ok(locus("convert", FIXTURES / "task_vector.h5", out))
    return out


def test_fixed_length_metadata_string(locus, tmp_path):
    """§1.1: readers MUST accept fixed-length strings, here /metadata."""
    p = tmp_path / "ck.h5"
    p.write_bytes((FIXTURES / "checkpoint.h5").read_bytes())
    with h5py.File(p, "r+") as f:
        text = f["metadata"][()]
        del f["metadata"]
        f.create_dataset("metadata", data=np.bytes_(text))
        assert f["metadata"].dtype.kind == "S"
    assert_ok(locus("convert", p, tmp_path / "ck.safetensors"))
    assert st_read(tmp_path / "ck.safetensors")[0] == {"format": "pt", "source": "make_fixtures_h5py"}


def test_no_tensors(locus, tmp_path):
    """An empty state dict: convert fails cleanly, or writes a valid checkpoint with the empty fingerprint."""
    src = st_write(tmp_path / "e.safetensors", {}, {"format": "pt"})
    out = tmp_path / "e.h5"
    before = snapshot(tmp_path)
    r = locus("convert", src, out)
    if r.code == 0:
        assert_valid(locus("validate", out))
        assert spec_fingerprint(out) == st_fingerprint({})
    else:
        assert_error(r, src)
        assert_nothing_new(tmp_path, before, out)


def _filters(ds):
    plist = ds.id.get_create_plist()
    return {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}


def test_only_allowed_filters_and_hdf5_1_10(locus, converted, tmp_path):
    """§1.1 MUSTs on every Locus-written file: filters 1, 2, 3 only; readable by HDF5 1.10 (h5dump 1.10 is
    exercised in test_h5tools.py)."""
    rng = np.random.default_rng(9)
    big = {"big": ("F32", (40000,), rng.standard_normal(40000).astype(np.float32).tobytes())}
    st_write(tmp_path / "b.safetensors", big)
    assert_ok(locus("convert", tmp_path / "b.safetensors", tmp_path / "b.h5"))
    st_write(tmp_path / "m.safetensors", {"big": ("BOOL", (40000,), (rng.random(40000) < .5).astype("u1").tobytes())})
    assert_ok(locus("convert", tmp_path / "m.safetensors", tmp_path / "m.h5", "--kind", "mask", "--base", tmp_path / "b.h5"))
    tau = np.where(rng.random(40000) < 0.02, rng.standard_normal(40000), 0).astype(np.float32)
    st_write(tmp_path / "t.safetensors", {"big": ("F32", (40000,), tau.tobytes())})
    assert_ok(locus("convert", tmp_path / "t.safetensors", tmp_path / "t.h5", "--kind", "task-vector",
                    "--base", tmp_path / "b.h5"))
    paths = [converted[k] for k in ("base", "scores", "mask", "task-vector")] + [tmp_path / n for n in ("b.h5", "m.h5", "t.h5")]
    for path in paths:
        with h5py.File(path) as f:
            def check(name, obj):
                if isinstance(obj, h5py.Dataset):
                    assert _filters(obj) <= {1, 2, 3}, (path, name, _filters(obj))
            f.visititems(check)
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["tensors/big"].attrs["encoding-type"] == "coo"
        assert f["tensors/big/values"].compression is None          # §5: values are not compressed
    assert_valid(locus("validate", *paths))


def test_should_layout(locus, converted, tmp_path):
    """SHOULDs of §2 / §1.6 / §5 (what Locus writes): contiguous 4096-aligned checkpoint tensors; packed and index
    datasets over 4 KiB chunked with deflate + fletcher32, plus shuffle for multi-byte indices (shuffle is a no-op on
    single bytes, so packed bits do without)."""
    rng = np.random.default_rng(10)
    st_write(tmp_path / "b.safetensors", {"big": ("F32", (40000,), rng.standard_normal(40000).astype(np.float32).tobytes())})
    assert_ok(locus("convert", tmp_path / "b.safetensors", tmp_path / "b.h5"))
    st_write(tmp_path / "m.safetensors", {"big": ("BOOL", (40000,), (rng.random(40000) < .5).astype("u1").tobytes())})
    assert_ok(locus("convert", tmp_path / "m.safetensors", tmp_path / "m.h5", "--kind", "mask", "--base", tmp_path / "b.h5"))
    tau = np.zeros(40000, np.float32)
    tau[rng.choice(40000, 1100, replace=False)] = 1.0      # 2.75 % < 1/32: coo with 4400 bytes of indices
    st_write(tmp_path / "t.safetensors", {"big": ("F32", (40000,), tau.tobytes())})
    assert_ok(locus("convert", tmp_path / "t.safetensors", tmp_path / "t.h5", "--kind", "task-vector", "--base", tmp_path / "b.h5"))
    with h5py.File(tmp_path / "b.h5") as f:
        ds = f["tensors/big"]
        assert ds.chunks is None and _filters(ds) == set() and ds.id.get_offset() % 4096 == 0
    problems = []
    for path, obj, want in ((tmp_path / "m.h5", "tensors/big", {1, 3}), (tmp_path / "t.h5", "tensors/big/indices", {1, 2, 3})):
        with h5py.File(path) as f:
            ds = f[obj]
            assert ds.nbytes > 4096
            if ds.chunks is None or _filters(ds) != want:
                problems.append(f"{path.name}:/{obj}: chunks {ds.chunks}, filters {sorted(_filters(ds))}, want {sorted(want)}")
    assert not problems, problems


@pytest.mark.parametrize("unwritten", [False, True], ids=["chunked-compact", "unwritten"])
def test_any_hdf5_layout_is_read(locus, tmp_path, unwritten):
    """Checkpoint tensors MAY be chunked (allowed filters), compact, or never written (HDF5 reads the fill value 0;
    no MUST asks for allocated storage): the fingerprint does not depend on layout, and Locus reads them all
    bit-exactly (warnings allowed)."""
    rng = np.random.default_rng(12)
    t = {"chunked": rng.standard_normal((37, 11)).astype(np.float32), "compact": np.arange(6, dtype=np.int16),
         "unwritten": np.zeros((3, 5), np.float32), "chunked.bf16": rng.standard_normal((9, 7)).astype(np.float32),
         "plain": rng.standard_normal(4).astype(np.float16)}
    p = tmp_path / "ck.h5"
    locus_h5.write_checkpoint(p, t, dtypes={"chunked.bf16": "bfloat16"})
    want_fp = locus_h5.fingerprint(p)
    with h5py.File(p, "r+") as f:
        g = f["tensors"]
        del g["chunked"]
        g.create_dataset("chunked", data=t["chunked"], chunks=(8, 4), shuffle=True, compression="gzip",
                         fletcher32=True).attrs["dtype"] = "float32"
        del g["compact"]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        sid = h5py.h5s.create_simple((6,))
        h5py.h5d.create(g.id, b"compact", h5py.h5t.STD_I16LE, sid, dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, t["compact"])
        g["compact"].attrs["dtype"] = "int16"
        if unwritten:
            del g["unwritten"]
            g.create_dataset("unwritten", shape=(3, 5), dtype="<f4").attrs["dtype"] = "float32"
        bits = g["chunked.bf16"]
        raw = np.empty(bits.shape, "<u2")
        bits.id.read(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=bits.id.get_type())
        tid = bits.id.get_type()
        del g["chunked.bf16"]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk((4, 4))
        dcpl.set_fletcher32()
        h5py.h5d.create(g.id, b"chunked.bf16", tid, h5py.h5s.create_simple((9, 7)), dcpl=dcpl).write(
            h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=tid)
        g["chunked.bf16"].attrs["dtype"] = "bfloat16"
        assert (g["unwritten"].id.get_offset() is None) == unwritten and g["chunked"].chunks == (8, 4)
    assert locus_h5.fingerprint(p) == want_fp
    assert_valid(locus("validate", p))
    assert locus("inspect", p, "--json").json()["fingerprint"] == want_fp
    assert_ok(locus("convert", p, tmp_path / "ck.safetensors"))
    _, got = st_read(tmp_path / "ck.safetensors")
    assert st_fingerprint(got) == want_fp
    assert got["chunked"][2] == t["chunked"].tobytes() and got["unwritten"][2] == bytes(60)
    assert got["chunked.bf16"][0] == "BF16" and got["chunked.bf16"][2] == locus_h5.bf16_bits(t["chunked.bf16"]).tobytes()


def test_fingerprint_leaf_boundaries(locus, tmp_path):
    """§1.5: tensors of exactly 1 MiB, 1 MiB + 1 byte and several leaves; Locus agrees with Python and back."""
    rng = np.random.default_rng(13)
    st = {"one.leaf": ("U8", (1 << 20,), rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()),
          "leaf.plus.one": ("U8", ((1 << 20) + 1,), rng.integers(0, 256, (1 << 20) + 1, dtype=np.uint8).tobytes()),
          "three.leaves": ("F32", (640, 1024), rng.standard_normal((640, 1024)).astype(np.float32).tobytes()),
          "bf16.two.leaves": ("BF16", (600, 1000), locus_h5.bf16_bits(rng.standard_normal((600, 1000))).tobytes()),
          "tiny": ("I64", (1,), np.array([7], np.int64).tobytes())}
    src = st_write(tmp_path / "big.safetensors", st)
    assert_ok(locus("convert", src, tmp_path / "big.h5"))
    want = st_fingerprint(st)
    assert spec_fingerprint(tmp_path / "big.h5") == want
    assert locus("inspect", tmp_path / "big.h5", "--json").json()["fingerprint"] == want
    assert_valid(locus("validate", tmp_path / "big.h5"))
