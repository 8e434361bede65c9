"""locus_h5 — read and write Locus artifacts (spec/FORMAT.md, version 1.3) with h5py + numpy only.

Install with ``pip install ./interop/python`` (or put interop/python on sys.path)::

    import locus_h5
    ck = locus_h5.load("base.h5")                 # {"kind", "attrs", "tensors", "dtypes", ...}
    masks = locus_h5.load("mask.h5")["tensors"]   # name -> bool array of the tensor's shape
    locus_h5.write_scores("scores.h5", {"fc.weight": fisher}, base="base.h5", estimator="fisher-empirical", samples=512)

The PyTorch bridge (scores, masks, sparse optimizers, task vectors computed with torch) is the
submodule ``locus_h5.torch``; it is imported only when asked for, so this module needs no torch.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import tempfile
from urllib.parse import unquote

import h5py
import numpy as np

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["LocusError", "load", "fingerprint", "fingerprint_arrays", "mask_fingerprint", "escape", "unescape", "bf16_bits", "bits_to_float32",
           "choose_encoding", "write_checkpoint", "write_scores", "write_mask", "write_task_vector",
           "write_task_vector_entries", "write_dataset", "VERSION", "__version__"]

#: The file-format version written (spec/FORMAT.md); the package version is MAJOR.MINOR of it plus a patch.
VERSION = "1.3"
__version__ = "1.3.0"
PRODUCER = f"locus_h5 {__version__}"
PathLike = Union[str, "os.PathLike[str]"]
KINDS = ("checkpoint", "scores", "mask", "task-vector", "dataset")
LIBVER = ("earliest", "v110")
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
_NUMPY = {"float64": "<f8", "float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "bool": "u1",
          "int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1",
          "uint64": "<u8", "uint32": "<u4", "uint16": "<u2", "uint8": "u1"}


class LocusError(ValueError):
    """A file that violates the format: message is '<file>: <object>: <what>'."""


# ---------------------------------------------------------------- names, bfloat16, bits

def escape(name: str) -> str:
    """Tensor name -> HDF5 link name (§1.3)."""
    if not name:
        raise ValueError("tensor names must be non-empty")
    if "\0" in name or "\n" in name:
        raise ValueError(f"tensor name {name!r} contains a NUL byte or a newline (§1.3)")
    return "%2E" if name == "." else name.replace("%", "%25").replace("/", "%2F")


def unescape(link: str) -> str:
    """HDF5 link name -> tensor name (§1.3)."""
    return unquote(link)


def _bf16_type():
    t = h5py.h5t.IEEE_F32LE.copy()
    t.set_fields(15, 7, 8, 0, 7)
    t.set_size(2)
    t.set_ebias(127)
    return t


def bf16_bits(a: Any) -> np.ndarray:
    """float array -> bfloat16 bit patterns (uint16), round to nearest even; NaN stays NaN."""
    u = np.asarray(a, dtype="<f4", order="C").view("<u4")
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype("<u2")
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> np.uint32(16)) | np.uint32(0x0040)).astype("<u2"), rounded)


def bits_to_float32(bits: Any) -> np.ndarray:
    """bfloat16 bit patterns -> float32 (exact)."""
    return (np.asarray(bits, dtype="<u2").astype("<u4") << np.uint32(16)).view("<f4")


def _pack(a):
    return np.packbits(np.asarray(a, dtype=bool).reshape(-1), bitorder="little")


def _read_raw(ds):
    """Stored values of a tensor dataset; bfloat16 as its uint16 bit patterns."""
    if ds.attrs.get("dtype") == "bfloat16" or (ds.dtype.kind == "f" and ds.id.get_type().get_size() == 2
                                               and ds.id.get_type().get_fields()[1] == 7):
        a = np.empty(ds.shape, dtype="<u2")
        if a.size:
            ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=ds.id.get_type())
        return a
    return ds[()]


def _s(v):
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _json_ds(f, name):
    return json.loads(_s(f[name][()])) if name in f else None


# ---------------------------------------------------------------- fingerprint (§1.5)

_LEAF = 1 << 20


def _tensor_digest(raw):
    """SHA-256 of the SHA-256 digests of the 1 MiB leaves of a tensor's raw bytes (§1.5)."""
    return hashlib.sha256(b"".join(hashlib.sha256(raw[i:i + _LEAF]).digest() for i in range(0, len(raw), _LEAF))).digest()


def fingerprint(path_or_file: Union[PathLike, h5py.File, h5py.Group]) -> str:
    """Fingerprint (§1.5) of the /tensors of a checkpoint, given a path or an open h5py.File."""
    if not isinstance(path_or_file, (h5py.File, h5py.Group)):
        with h5py.File(path_or_file, "r") as f:
            return fingerprint(f)
    items = sorted(((unescape(k), ds) for k, ds in path_or_file["tensors"].items()), key=lambda it: it[0].encode("utf-8"))
    h = hashlib.sha256(b"locus-fingerprint-v1\n")
    for name, ds in items:
        dtype = _s(ds.attrs["dtype"])
        h.update(f"{name}\n{dtype}\n{','.join(str(d) for d in ds.shape)}\n".encode("utf-8"))
        h.update(_tensor_digest(np.asarray(_read_raw(ds), dtype=_NUMPY[dtype]).tobytes()))  # bool: 0/1 bytes; bfloat16: bits
    return "sha256:" + h.hexdigest()


def mask_fingerprint(path_or_file: Union[PathLike, h5py.File]) -> str:
    """Mask fingerprint (§4): §1.5 over the packed-bits datasets taken as uint8 tensors [ceil(count/8)]."""
    if not isinstance(path_or_file, (h5py.File, h5py.Group)):
        with h5py.File(path_or_file, "r") as f:
            return mask_fingerprint(f)
    items = sorted(((unescape(k), ds) for k, ds in path_or_file["tensors"].items()), key=lambda it: it[0].encode("utf-8"))
    h = hashlib.sha256(b"locus-fingerprint-v1\n")
    for name, ds in items:
        h.update(f"{name}\nuint8\n{ds.shape[0]}\n".encode("utf-8"))
        h.update(_tensor_digest(np.asarray(ds[()], dtype="u1").tobytes()))
    return "sha256:" + h.hexdigest()


def fingerprint_arrays(tensors: Mapping[str, Any], dtypes: Optional[Mapping[str, str]] = None) -> str:
    """Fingerprint (§1.5) of in-memory tensors: name -> numpy array (bfloat16 given as uint16 bits with
    dtypes[name] = "bfloat16", or as float arrays that are rounded to bfloat16 first). Equal to
    ``fingerprint`` of the checkpoint ``write_checkpoint`` would write from the same arguments."""
    dtypes = dtypes or {}
    h = hashlib.sha256(b"locus-fingerprint-v1\n")
    for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
        a, dtype = _logical(tensors[name], dtypes.get(name))
        h.update(f"{name}\n{dtype}\n{','.join(str(d) for d in a.shape)}\n".encode("utf-8"))
        h.update(_tensor_digest(np.ascontiguousarray(a).tobytes()))
    return "sha256:" + h.hexdigest()


# ---------------------------------------------------------------- reading

def _check_shape(path, obj, ds, shape, what):
    if tuple(ds.shape) != tuple(shape):
        raise LocusError(f"{path}: {obj}: dataspace {tuple(ds.shape)} does not match {what} {tuple(shape)}")


def _read_mask(path, obj, ds):
    shape = tuple(int(d) for d in ds.attrs["shape"])
    n = int(ds.attrs["count"])
    if n != math.prod(shape):
        raise LocusError(f"{path}: {obj}: count {n} != product of shape {shape}")
    _check_shape(path, obj, ds, ((n + 7) // 8,), "ceil(count/8)")
    packed = ds[()]
    if n % 8 and packed[-1] >> (n % 8):
        raise LocusError(f"{path}: {obj}: padding bits after count {n} are not 0")
    return np.unpackbits(packed, bitorder="little", count=n).astype(bool).reshape(shape)


def _read_tv(path, obj, g, bits):
    shape = tuple(int(d) for d in g.attrs["shape"])
    n, enc, dtype = int(g.attrs["count"]), _s(g.attrs["encoding-type"]), _s(g.attrs["dtype"])
    if n != math.prod(shape) or dtype not in FLOAT_DTYPES:
        raise LocusError(f"{path}: {obj}: bad count {n} or dtype {dtype!r} for shape {shape}")
    out = np.zeros(n, dtype=_NUMPY[dtype])
    if enc == "coo":
        if g["indices"].ndim != 1 or g["indices"].shape[0] > n:
            raise LocusError(f"{path}: {obj}/indices: more than count={n} indices")
        idx = g["indices"][()].astype(np.int64)
        _check_shape(path, obj + "/values", g["values"], idx.shape, "indices")
        if idx.size and (idx.min() < 0 or idx.max() >= n or np.any(np.diff(idx) <= 0)):
            raise LocusError(f"{path}: {obj}/indices: indices must be strictly increasing and < {n}")
        out[idx] = _read_raw(g["values"])
    elif enc == "bitmask":
        _check_shape(path, obj + "/mask", g["mask"], ((n + 7) // 8,), "ceil(count/8)")
        sel = np.unpackbits(g["mask"][()], bitorder="little", count=n).astype(bool)
        _check_shape(path, obj + "/values", g["values"], (int(sel.sum()),), "set bits")
        out[sel] = _read_raw(g["values"])
    elif enc == "dense":
        _check_shape(path, obj + "/values", g["values"], shape, "shape")
        out[:] = _read_raw(g["values"]).reshape(-1)
    else:
        raise LocusError(f"{path}: {obj}: unknown encoding-type {enc!r}")
    if not bits and dtype == "bfloat16":
        out = bits_to_float32(out)
    return out.reshape(shape), dtype


def load(path: PathLike, *, bf16_as_bits: bool = False, scaled: bool = True) -> Dict[str, Any]:
    """Read any Locus artifact into a dict.

    Always: kind, attrs (root attributes), provenance (dict or None).
    Tensor kinds: tensors (name -> numpy array), dtypes (name -> Locus dtype).
      checkpoint: stored dtypes (bool as bool; bfloat16 as float32, or uint16 bits with bf16_as_bits=True),
      plus metadata / architecture (dict or None); scores: float32; mask: bool arrays of the tensor shape;
      task-vector: dense arrays of the value dtype (× scale unless scaled=False; bfloat16 as float32).
    dataset: inputs, labels, classes (list of str), splits (name -> int64 array), inputs_attrs.
    """
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        attrs = {k: (_s(v) if isinstance(v, (str, bytes)) else v) for k, v in f.attrs.items()}
        if attrs.get("encoding-type") != "locus":
            raise LocusError(f"{path}: /: encoding-type is {attrs.get('encoding-type')!r}, expected 'locus'")
        version = str(attrs.get("encoding-version", ""))
        if version.split(".")[0] != VERSION.split(".")[0]:
            raise LocusError(f"{path}: /: unsupported encoding-version {version!r}")
        kind = attrs.get("kind")
        if kind not in KINDS:
            raise LocusError(f"{path}: /: unknown kind {kind!r}")
        out = {"kind": kind, "attrs": attrs, "provenance": _json_ds(f, "provenance")}
        if kind == "dataset":
            inputs = f["inputs"]
            out.update(inputs=inputs[()], labels=f["labels"][()], classes=[_s(c) for c in f["classes"][()]],
                       splits={k: ds[()] for k, ds in f["splits"].items()} if "splits" in f else {},
                       inputs_attrs={k: (_s(v) if isinstance(v, (str, bytes)) else v) for k, v in inputs.attrs.items()})
            return out
        tensors, dtypes = {}, {}
        if "tensors" not in f:
            raise LocusError(f"{path}: /tensors: missing")
        scale = float(attrs.get("scale", 1.0))
        for link, obj in f["tensors"].items():
            name, opath = unescape(link), f"/tensors/{link}"
            try:
                if kind == "mask":
                    if _s(obj.attrs["encoding-type"]) != "packed-bits":
                        raise LocusError(f"{path}: {opath}: unknown encoding-type {_s(obj.attrs['encoding-type'])!r}")
                    tensors[name], dtypes[name] = _read_mask(path, opath, obj), "bool"
                elif kind == "task-vector":
                    a, dtypes[name] = _read_tv(path, opath, obj, bf16_as_bits)
                    tensors[name] = (a * scale).astype(a.dtype) if scaled and scale != 1.0 else a
                else:
                    dtypes[name] = dtype = _s(obj.attrs["dtype"])
                    a = _read_raw(obj)
                    if dtype == "bfloat16" and not bf16_as_bits:
                        a = bits_to_float32(a)
                    tensors[name] = np.asarray(a, dtype=bool) if dtype == "bool" else np.asarray(a)
            except KeyError as e:
                raise LocusError(f"{path}: {opath}: missing {e}") from None
        out.update(tensors=tensors, dtypes=dtypes)
        if kind == "checkpoint":
            out.update(metadata=_json_ds(f, "metadata"), architecture=_json_ds(f, "architecture"))
        return out


# ---------------------------------------------------------------- writing helpers

def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _AtomicH5:
    """h5py.File on a temp file in the target's directory; fsync + os.replace on success."""

    def __init__(self, path, kind, provenance, base=None):
        self.path, self.kind, self.provenance, self.base = os.fspath(path), kind, provenance, base

    def __enter__(self):
        d = os.path.dirname(os.path.abspath(self.path))
        fd, self.tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(self.path) + ".", suffix=".tmp")
        os.close(fd)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        # checkpoints: every allocation on a 4096 boundary, so tensors can be mmapped (§2)
        align = dict(alignment_threshold=1, alignment_interval=4096) if self.kind == "checkpoint" else {}
        try:
            self.f = h5py.File(self.tmp, "w", libver=LIBVER, **align)
        except BaseException:
            os.unlink(self.tmp)
            raise
        a = self.f.attrs
        a["encoding-type"], a["encoding-version"], a["kind"] = "locus", VERSION, self.kind
        a["producer"], a["created"] = PRODUCER, _now()
        if self.base is not None:
            a["base-fingerprint"] = self.base
        if self.provenance is not None:
            self.f.create_dataset("provenance", data=json.dumps(self.provenance))
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            self.f.close()
            if exc_type is None:
                with open(self.tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.tmp, self.path)
                dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
        return False


def _base(base):
    """A 'sha256:…' fingerprint, or a checkpoint path whose fingerprint is taken."""
    return base if isinstance(base, str) and base.startswith("sha256:") else fingerprint(base)


def _logical(a, dtype=None):
    """(numpy array as stored, Locus dtype); bfloat16 comes back as uint16 bits."""
    a = np.asarray(a)
    if dtype is None:
        dtype = "bfloat16" if a.dtype.name == "bfloat16" else "bool" if a.dtype == bool else a.dtype.name
    if dtype not in _NUMPY:
        raise ValueError(f"unsupported dtype {dtype}")
    if dtype == "bfloat16":  # uint16 (or ml_dtypes.bfloat16) arrays are taken as bits, floats are rounded
        bits = a.dtype == np.uint16 or a.dtype.name == "bfloat16"
        return np.asarray(a.view("<u2") if bits else bf16_bits(a), order="C"), dtype
    return np.asarray(a, dtype=_NUMPY[dtype], order="C"), dtype


def _put(parent, name, a, dtype, packed=False, digest=False):
    """Dataset `name` with the §1.4 file type; packed/index data chunked + filtered when > 4 KiB.
    With `digest`, the §1.8 `digest` attribute of the stored bytes (what `locus` writers store on
    every tensor and array, and `--verify` checks)."""
    ds = _put_data(parent, name, a, dtype, packed)
    return _digest(ds) if digest else ds


def _digest(ds):
    ds.attrs["digest"] = "sha256:" + _tensor_digest(_stored_bytes(ds)).hex()
    return ds


def _stored_bytes(ds):
    """The dataset's bytes as stored (§1.8): read with its file type as the memory type."""
    a = np.empty(ds.shape, dtype=f"V{ds.id.get_type().get_size()}")
    if a.size:
        ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=ds.id.get_type())
    return a.tobytes()


def _put_data(parent, name, a, dtype, packed):
    if dtype == "bfloat16":
        space = h5py.h5s.create(h5py.h5s.SCALAR) if a.ndim == 0 else h5py.h5s.create_simple(a.shape)
        t = _bf16_type()
        dsid = h5py.h5d.create(parent.id, name.encode("utf-8"), t, space)
        if a.size:
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=t)
        return parent[name]
    if packed and a.nbytes > 4096:
        return parent.create_dataset(name, data=a, chunks=(min(a.shape[0], 65536),),
                                     shuffle=True, compression="gzip", compression_opts=4, fletcher32=True)
    return parent.create_dataset(name, data=a, shape=a.shape, dtype=a.dtype)


def _float64(a, dtype):
    return (bits_to_float32(a) if dtype == "bfloat16" else a).astype(np.float64).reshape(-1)


# ---------------------------------------------------------------- writers

def write_checkpoint(path: PathLike, tensors: Mapping[str, Any], *, dtypes: Optional[Mapping[str, str]] = None,
                     metadata: Optional[Mapping[str, str]] = None, architecture: Optional[Mapping[str, Any]] = None,
                     provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Checkpoint from name -> array. dtypes={name: "bfloat16"} stores float arrays (or uint16 bits) as bfloat16."""
    dtypes = dtypes or {}
    with _AtomicH5(path, "checkpoint", provenance) as f:
        g, total = f.create_group("tensors"), 0
        for name, arr in tensors.items():
            a, dtype = _logical(arr, dtypes.get(name))
            _put(g, escape(name), a, dtype, digest=True).attrs["dtype"] = dtype
            total += a.size
        if metadata is not None:
            f.create_dataset("metadata", data=json.dumps(metadata))
        if architecture is not None:
            f.create_dataset("architecture", data=json.dumps(architecture))
        f.attrs["tensor-count"], f.attrs["element-count"] = np.int64(len(tensors)), np.int64(total)
        f.attrs["fingerprint"] = fingerprint(f)


def write_scores(path: PathLike, scores: Mapping[str, Any], *, base: Union[str, PathLike], estimator: str, samples: int,
                 draws: int = 1, reduction: str = "sum", provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Scores (finite, ≥ 0) from name -> array; stored as float32 with quantiles/sum summaries."""
    if reduction not in ("sum", "mean") or int(draws) < 1 or int(samples) < 0:
        raise ValueError("reduction must be sum|mean, draws >= 1, samples >= 0")
    with _AtomicH5(path, "scores", provenance, _base(base)) as f:
        g, total, lo, hi, s = f.create_group("tensors"), 0, math.inf, -math.inf, 0.0
        for name, arr in scores.items():
            a = np.asarray(arr, dtype="<f4", order="C")
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"{name}: scores must be finite and >= 0")
            v = a.astype(np.float64).reshape(-1)
            ds = _put(g, escape(name), a, "float32", digest=True)
            ds.attrs["dtype"] = "float32"
            ds.attrs["quantiles"] = np.quantile(v, [0, .25, .5, .75, 1]) if v.size else np.zeros(0)
            ds.attrs["sum"] = np.float64(v.sum())
            total, s = total + v.size, s + float(v.sum())
            if v.size:
                lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
        a = f.attrs
        a["estimator"], a["reduction"] = estimator, reduction
        a["samples"], a["draws"] = np.int64(samples), np.int64(draws)
        a["tensor-count"], a["element-count"] = np.int64(len(scores)), np.int64(total)
        a["min"], a["max"], a["sum"] = np.float64(lo if total else 0.0), np.float64(hi if total else 0.0), np.float64(s)


def write_mask(path: PathLike, masks: Mapping[str, Any], *, base: Union[str, PathLike], absent_tensors: str = "frozen",
               provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Mask from name -> bool array (1 = trainable) as packed bits."""
    if absent_tensors not in ("frozen", "trainable"):
        raise ValueError("absent_tensors must be frozen|trainable")
    with _AtomicH5(path, "mask", provenance, _base(base)) as f:
        g, count, ones = f.create_group("tensors"), 0, 0
        for name, arr in masks.items():
            m = np.asarray(arr)
            if m.dtype != bool and not np.isin(m, (0, 1)).all():
                raise ValueError(f"{name}: mask values must be 0 or 1")
            m = m.astype(bool)
            ds = _put(g, escape(name), _pack(m), "uint8", packed=True, digest=True)
            ds.attrs["encoding-type"], ds.attrs["bitorder"] = "packed-bits", "little"
            ds.attrs["shape"] = np.array(m.shape, dtype=np.int64)
            ds.attrs["count"], ds.attrs["ones"] = np.int64(m.size), np.int64(m.sum())
            count, ones = count + m.size, ones + int(m.sum())
        f.attrs["absent-tensors"] = absent_tensors
        f.attrs["tensor-count"], f.attrs["count"], f.attrs["ones"] = np.int64(len(masks)), np.int64(count), np.int64(ones)


def choose_encoding(count: int, nnz: int, value_bytes: int) -> str:
    """§5 cost rule: coo (i+v)·s, bitmask count/8 + v·s, dense v·count; smallest wins, ties dense > bitmask > coo."""
    i = 4 if count <= 2 ** 32 else 8
    costs = {"dense": value_bytes * count, "bitmask": count / 8 + value_bytes * nnz, "coo": (i + value_bytes) * nnz}
    return min(("dense", "bitmask", "coo"), key=lambda e: costs[e])  # min keeps the first of equals


def write_task_vector(path: PathLike, tau: Mapping[str, Any], *, base: Union[str, PathLike], scale: float = 1.0,
                      dtypes: Optional[Mapping[str, str]] = None, encoding: Optional[str] = None,
                      provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Task vector from name -> dense float array τ (zeros are dropped); encoding by the §5 rule unless given."""
    dtypes = dtypes or {}
    with _AtomicH5(path, "task-vector", provenance, _base(base)) as f:
        g, count, nnz, sq = f.create_group("tensors"), 0, 0, 0.0
        for name, arr in tau.items():
            a, dtype = _logical(arr, dtypes.get(name))
            if dtype not in FLOAT_DTYPES:
                raise ValueError(f"{name}: task-vector values must be float, got {dtype}")
            v = _float64(a, dtype)
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{name}: task-vector values must be finite")
            flat, sel = a.reshape(-1), v != 0
            k = int(sel.sum())
            enc = encoding or choose_encoding(a.size, k, np.dtype(_NUMPY[dtype]).itemsize)
            t = g.create_group(escape(name))
            if enc == "coo":
                idx = np.flatnonzero(sel).astype("<u4" if a.size <= 2 ** 32 else "<u8")
                _put(t, "indices", idx, idx.dtype.name, packed=True, digest=True)
                _put(t, "values", flat[sel], dtype, digest=True)
            elif enc == "bitmask":
                _put(t, "mask", _pack(sel), "uint8", packed=True, digest=True)
                _put(t, "values", flat[sel], dtype, digest=True)
            else:
                _put(t, "values", a, dtype, digest=True)
            norm = float(np.sqrt(np.sum(v * v)))
            t.attrs["encoding-type"], t.attrs["dtype"] = enc, dtype
            t.attrs["shape"] = np.array(a.shape, dtype=np.int64)
            t.attrs["count"], t.attrs["nnz"], t.attrs["l2-norm"] = np.int64(a.size), np.int64(k), np.float64(norm)
            count, nnz, sq = count + a.size, nnz + k, sq + float(np.sum(v * v))
        f.attrs["scale"] = np.float64(scale)
        f.attrs["tensor-count"], f.attrs["count"], f.attrs["nnz"] = np.int64(len(tau)), np.int64(count), np.int64(nnz)
        f.attrs["l2-norm"] = np.float64(math.sqrt(sq))


def write_task_vector_entries(path: PathLike, entries: Mapping[str, Tuple[Sequence[int], Any, Any, str]], *,
                              base: Union[str, PathLike], scale: float = 1.0,
                              attributes: Optional[Mapping[str, str]] = None, numbers: Optional[Mapping[str, float]] = None,
                              provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Task vector from explicitly stored entries, the way ``locus diff`` writes one.

    entries: name -> (shape, flat indices (strictly increasing), values (float64 or the value dtype), dtype)
    where dtype is one of float32, float64, float16, bfloat16. Every listed entry is stored, explicit zeros
    included (a −0.0 → +0.0 change is a stored zero); the encoding follows the §5 cost rule on the number of
    stored values; `nnz` and `l2-norm` are taken from the values after rounding to dtype.
    attributes / numbers: extra root string / float64 attributes (finetuned-fingerprint, task-accuracy, ...).
    """
    fp = _base(base)
    with _AtomicH5(path, "task-vector", provenance, fp) as f:
        f.attrs["scale"] = np.float64(scale)
        for k, v in sorted((attributes or {}).items()):
            f.attrs[k] = str(v)
        for k, v in sorted((numbers or {}).items()):
            f.attrs[k] = np.float64(v)
        g, count, nnz, sq = f.create_group("tensors"), 0, 0, 0.0
        for name, (shape, idx, vals, dtype) in entries.items():
            shape = tuple(int(d) for d in shape)
            n = math.prod(shape)
            if dtype not in FLOAT_DTYPES:
                raise ValueError(f"{path}: /tensors/{escape(name)}: task-vector values must be float, not {dtype}")
            idx = np.asarray(idx, dtype=np.int64).reshape(-1)
            if idx.size and (idx[0] < 0 or idx[-1] >= n or np.any(np.diff(idx) <= 0)):
                raise ValueError(f"{path}: /tensors/{escape(name)}: indices must be strictly increasing in [0, {n})")
            stored, dt = _logical(np.asarray(vals, dtype=np.float64).astype(np.float32) if dtype == "bfloat16"
                                  else np.asarray(vals).astype(_NUMPY[dtype]), dtype)
            if stored.shape != idx.shape:
                raise ValueError(f"{path}: /tensors/{escape(name)}: {idx.size} indices but {stored.size} values")
            rounded = _float64(stored, dt)
            if not np.all(np.isfinite(rounded)):
                raise ValueError(f"{path}: /tensors/{escape(name)}: task-vector values must be finite")
            enc = choose_encoding(n, idx.size, np.dtype(_NUMPY[dtype]).itemsize)
            t = g.create_group(escape(name))
            if enc == "coo":
                ix = idx.astype("<u4" if n <= 2 ** 32 else "<u8")
                _put(t, "indices", ix, ix.dtype.name, packed=True, digest=True)
                _put(t, "values", stored, dtype, digest=True)
            elif enc == "bitmask":
                sel = np.zeros(n, dtype=bool)
                sel[idx] = True
                _put(t, "mask", _pack(sel), "uint8", packed=True, digest=True)
                _put(t, "values", stored, dtype, digest=True)
            else:
                full = np.zeros(n, dtype=stored.dtype)
                full[idx] = stored
                _put(t, "values", full.reshape(shape), dtype, digest=True)
            k, s2 = int(np.count_nonzero(rounded)), float(np.sum(rounded * rounded))
            t.attrs["encoding-type"], t.attrs["dtype"] = enc, dtype
            t.attrs["shape"] = np.array(shape, dtype=np.int64)
            t.attrs["count"], t.attrs["nnz"], t.attrs["l2-norm"] = np.int64(n), np.int64(k), np.float64(math.sqrt(s2))
            count, nnz, sq = count + n, nnz + k, sq + s2
        f.attrs["tensor-count"], f.attrs["count"], f.attrs["nnz"] = np.int64(len(entries)), np.int64(count), np.int64(nnz)
        f.attrs["l2-norm"] = np.float64(math.sqrt(sq))


def write_dataset(path: PathLike, inputs: Any, labels: Any, classes: Sequence[str], splits: Mapping[str, Any], *,
                  scale: Optional[float] = None, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
                  provenance: Optional[Mapping[str, Any]] = None) -> None:
    """Dataset: inputs uint8/float32 [N, ...], labels int64 [N] in [0, C), class names, name -> index splits."""
    x, y = np.asarray(inputs), np.asarray(labels, dtype="<i8")
    if x.dtype not in (np.uint8, np.float32) or x.ndim < 2 or y.shape != (x.shape[0],):
        raise ValueError("inputs must be uint8/float32 [N, ...] and labels [N]")
    if y.size and (y.min() < 0 or y.max() >= len(classes)):
        raise ValueError("labels must be in [0, class count)")
    seen = np.zeros(x.shape[0], dtype=bool)
    for name, idx in splits.items():
        idx = np.asarray(idx, dtype=np.int64)
        if np.any(np.diff(idx) <= 0) or (idx.size and (idx[0] < 0 or idx[-1] >= x.shape[0])) or seen[idx].any():
            raise ValueError(f"split {name}: indices must be strictly increasing, in range and disjoint")
        seen[idx] = True
    mean, std = np.asarray(mean, dtype=np.float64).reshape(-1), np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.size not in (1, x.shape[1]) or std.size != mean.size or np.any(std <= 0):
        raise ValueError("mean/std must have 1 or shape[1] entries and std > 0")
    with _AtomicH5(path, "dataset", provenance) as f:
        f.attrs["sample-count"], f.attrs["class-count"] = np.int64(x.shape[0]), np.int64(len(classes))
        if x.nbytes > 4096:  # chunked along N, ~64 KiB per chunk
            rows = min(x.shape[0], max(1, 65536 // max(1, x[0].nbytes)))
            ds = f.create_dataset("inputs", data=x, chunks=(rows, *x.shape[1:]), shuffle=True,
                                  compression="gzip", fletcher32=True)
        else:
            ds = f.create_dataset("inputs", data=x)
        ds.attrs["dtype"] = x.dtype.name
        ds.attrs["scale"] = np.float64(scale if scale is not None else (1 / 255 if x.dtype == np.uint8 else 1.0))
        ds.attrs["mean"], ds.attrs["std"] = mean, std
        _digest(ds)
        _digest(f.create_dataset("labels", data=y))
        f.create_dataset("classes", data=list(classes), dtype=h5py.string_dtype())
        sg = f.create_group("splits")
        for name, idx in splits.items():
            _digest(sg.create_dataset(name, data=np.asarray(idx, dtype="<i8")))
