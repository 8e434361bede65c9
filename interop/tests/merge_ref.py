"""Independent numpy reference of every `locus merge` method (docs/talos.md §Merging task vectors,
`locus merge --help`).

Reads the HDF5 files with h5py only (spec/FORMAT.md §2, §3, §5), computes in float64 and rounds to the
output dtype once, with round-to-nearest-even (RNE). No Locus code and no locus_h5 reader is used.

Where the result depends on a *decision* (TIES trim threshold, Breadcrumbs ranking, TALL mask
inequality) the magnitudes compared are the float32 numbers Locus compares
(float32(value · scale) · float32(weight)), so that ties created by rounding are the same ties; every
sum, mean and the final θ0 + λ·τ are float64. Method and option names are the ones `locus merge --help` lists (docs/merging.md): task_arithmetic,
ties, dare_linear, dare_ties, breadcrumbs, breadcrumbs_ties, tall, consensus, fisher, della, della_linear, model_stock,
nuslerp, sce; density, scope, drop_rate, rescale, seed, gamma, epsilon, filter_wise, nuslerp_flatten, nuslerp_row_wise, select_topk, tall_lambda, k, floor, normalize, weight, lambda, dtype. DARE's generator is re-implemented
from its documentation: SplitMix64 seeded with seed ^ FNV-1a(tensor name) ^ vector·0x9E3779B97F4A7C15,
unit = (next >> 11)·2⁻⁵³, keep when unit ≥ p, one draw per stored entry in index order.
"""
import math
from urllib.parse import unquote

import h5py
import numpy as np

FLOATS = ("float64", "float32", "float16", "bfloat16")
M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


# ------------------------------------------------------------------ reading (spec only)

def _is_bf16(ds):
    t = ds.id.get_type()
    return t.get_class() == h5py.h5t.FLOAT and t.get_size() == 2 and t.get_fields()[1] == 7


def _read_values(ds):
    """Dataset → float64 (bfloat16 bits read with the file type, widened exactly)."""
    if _is_bf16(ds):
        bits = np.empty(ds.shape, dtype="<u2")
        if bits.size:
            ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=ds.id.get_type())
        return (bits.astype("<u4") << np.uint32(16)).view("<f4").astype(np.float64)
    return np.asarray(ds[()]).astype(np.float64)


def read_raw(ds):
    if _is_bf16(ds):
        bits = np.empty(ds.shape, dtype="<u2")
        if bits.size:
            ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, bits, mtype=ds.id.get_type())
        return bits.tobytes()
    return np.ascontiguousarray(ds[()]).tobytes()


def _s(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def read_checkpoint(path):
    """name → dict(dtype, shape, value (float64 array of the shape, floats only), raw bytes), in file order."""
    out = {}
    with h5py.File(path, "r") as f:
        for link, ds in f["tensors"].items():
            dtype = _s(ds.attrs["dtype"])
            out[unquote(link)] = {"dtype": dtype, "shape": tuple(ds.shape), "raw": read_raw(ds),
                                  "value": _read_values(ds).reshape(ds.shape) if dtype in FLOATS else None}
    return out


def read_task_vector(path):
    """dict(scale, base, tensors: name → dict(shape, count, encoding, dtype, idx, val)).

    idx/val are the entries the merge walks, in index order: coo → every stored index (explicit zeros
    included), bitmask → every set bit, dense → the non-zero entries (what Locus's reader returns)."""
    with h5py.File(path, "r") as f:
        scale = float(f.attrs["scale"])
        base = _s(f.attrs["base-fingerprint"])
        tensors = {}
        for link, g in f["tensors"].items():
            shape = tuple(int(d) for d in g.attrs["shape"])
            n, enc = int(g.attrs["count"]), _s(g.attrs["encoding-type"])
            vals = _read_values(g["values"]).reshape(-1)
            if enc == "coo":
                idx = g["indices"][()].astype(np.int64)
            elif enc == "bitmask":
                idx = np.flatnonzero(np.unpackbits(g["mask"][()], bitorder="little", count=n))
            else:
                idx = np.flatnonzero(vals != 0)
                vals = vals[idx]
            tensors[unquote(link)] = {"shape": shape, "count": n, "encoding": enc, "dtype": _s(g.attrs["dtype"]),
                                      "idx": idx.astype(np.int64), "val": vals}
    return {"scale": scale, "base": base, "tensors": tensors}


def read_scores(path):
    with h5py.File(path, "r") as f:
        return {"samples": int(f.attrs["samples"]), "reduction": _s(f.attrs["reduction"]),
                "tensors": {unquote(k): ds[()].astype(np.float64) for k, ds in f["tensors"].items()}}


def read_mask(path):
    with h5py.File(path, "r") as f:
        return {unquote(k): np.unpackbits(ds[()], bitorder="little", count=int(ds.attrs["count"])).astype(bool)
                .reshape(tuple(int(d) for d in ds.attrs["shape"])) for k, ds in f["tensors"].items()}


# ------------------------------------------------------------------ rounding

_FMT = {"float16": (11, -24, 65504.0), "bfloat16": (8, -133, float.fromhex("0x1.fep127"))}


def round_to(x, dtype):
    """float64 → nearest value of `dtype` (RNE, subnormals, overflow → ±inf), returned as float64."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return x.copy()
    if dtype == "float32":
        return x.astype(np.float32).astype(np.float64)
    p, qmin, big = _FMT[dtype]
    _, e = np.frexp(x)                                 # |x| = m·2^e, m ∈ [0.5, 1)
    q = np.maximum(e.astype(np.int64) - p, qmin)       # exponent of the last kept bit
    r = np.ldexp(np.rint(np.ldexp(x, -q)), q)          # rint = RNE, exact in float64
    with np.errstate(over="ignore"):
        return np.where(np.abs(r) > big, np.copysign(np.inf, x), r)


def neighbours(r, dtype):
    """The `dtype` values just below and just above r (r must be a value of `dtype`)."""
    if dtype == "float16":
        h = np.float16(r)
        return float(np.nextafter(h, np.float16(-np.inf))), float(np.nextafter(h, np.float16(np.inf)))
    if dtype == "bfloat16":
        f = np.float32(r)
        return _bf16_step(f, -1), _bf16_step(f, 1)
    t = np.float32 if dtype == "float32" else np.float64
    return float(np.nextafter(t(r), t(-np.inf))), float(np.nextafter(t(r), t(np.inf)))


def _bf16_step(f, direction):
    """Next bfloat16 after f (a bfloat16 value held in float32) towards direction·inf."""
    u = int(np.array(f, "<f4").view("<u4")) >> 16
    if f == 0:
        u = 0x0001 if direction > 0 else 0x8001
    elif (f > 0) == (direction > 0):
        u += 1
    else:
        u -= 1
    return float(np.array(u << 16, "<u4").view("<f4"))


def midpoint_distance(x, dtype):
    """Absolute distance of x to the nearest midpoint between two neighbouring `dtype` values (0 = on a tie)."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return np.full(x.shape, np.inf)
    p = {"float32": 24, "float16": 11, "bfloat16": 8}[dtype]
    qmin = {"float32": -149, "float16": -24, "bfloat16": -133}[dtype]
    _, e = np.frexp(x)
    q = np.maximum(e.astype(np.int64) - p, qmin)
    scaled = np.ldexp(x, -q)
    return np.abs(scaled - np.floor(scaled) - 0.5) * np.ldexp(1.0, q)


# ------------------------------------------------------------------ generators and ranking

def fnv1a(name):
    h = 0xCBF29CE484222325
    for b in name.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix_units(seed, n):
    """The first n outputs of SplitMix64(seed) as (x >> 11)·2⁻⁵³ (counter form: state_i = seed + (i+1)·γ)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(GOLDEN))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def dare_keep(name, vector, n, p, seed):
    s = (seed ^ fnv1a(name) ^ ((vector * GOLDEN) & M64)) & M64
    return splitmix_units(s, n) >= p


def kth_largest(mags, k, total):
    """k-th largest of `mags` padded with zeros to `total` entries; +inf for k ≤ 0."""
    if k <= 0:
        return math.inf
    if k > len(mags):
        return 0.0
    return float(np.sort(np.asarray(mags, dtype=np.float64))[::-1][k - 1])


def rank_desc(v):
    """Positions ordered by |v| descending, ties by position."""
    return np.lexsort((np.arange(len(v)), -np.abs(v)))


# ------------------------------------------------------------------ the methods

def _f32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32)


class Inputs:
    """The base and the task vectors, with each vector's entries as float32 (value·scale) numbers."""

    def __init__(self, base_path, tv_paths, weights=None):
        self.base = read_checkpoint(base_path)
        self.tvs = [read_task_vector(p) for p in tv_paths]
        self.w = list(weights) if weights is not None else [1.0] * len(self.tvs)
        self.float_total = sum(int(np.prod(t["shape"], dtype=np.int64)) for t in self.base.values() if t["dtype"] in FLOATS)

    def entries(self, t, name):
        """(idx, e32) of vector t for tensor name: e32 = float32(stored value · scale), unweighted."""
        tv = self.tvs[t]
        if name not in tv["tensors"]:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        e = tv["tensors"][name]
        return e["idx"], _f32(e["val"] * tv["scale"])

    def weighted(self, t, name):
        idx, e32 = self.entries(t, name)
        return idx, (e32 * np.float32(self.w[t])).astype(np.float32)

    def touched(self, name, scores=None):
        return any(name in tv["tensors"] for tv in self.tvs) or bool(scores and any(name in s["tensors"] for s in scores))


def _after_dare(inp, t, name, idx, v32, o):
    p = o.get("drop_rate", 0.9)
    keep = dare_keep(name, t, len(idx), p, o.get("seed", 0))
    factor = np.float32(1.0 / (1.0 - p)) if o.get("rescale", True) else np.float32(1.0)
    return idx[keep], (v32[keep] * factor).astype(np.float32)


def della_probabilities(vals, n, density, epsilon):
    """DELLA's keep probability of each stored value of one row of n entries (Deep, Bhardwaj & Poria,
    2024, §3): ranks by |value| ascending over the whole row (its n − nnz zeros first, equal magnitudes
    by position), p = (density − ε) + r/(n − 1)·2ε for rank r (density when n = 1). Stored zeros get
    density − ε (they are dropped whatever the draw)."""
    vals = np.asarray(vals, dtype=np.float64)
    p = np.full(len(vals), density - epsilon)
    nz = np.flatnonzero(vals != 0)
    order = nz[np.lexsort((nz, np.abs(vals[nz])))]
    ranks = (n - len(nz)) + np.arange(len(order))
    p[order] = (density - epsilon) + (ranks / (n - 1)) * 2 * epsilon if n > 1 else density
    return p


def della_units(name, vector, n, seed):
    """The draws of DELLA's drop: the DARE generator of this vector and tensor, one per stored entry."""
    return splitmix_units((seed ^ fnv1a(name) ^ ((vector * GOLDEN) & M64)) & M64, n)


def _after_magprune(inp, t, name, idx, e32, o):
    """DELLA's drop on the unweighted float32 entries of vector t: per row (rank ≥ 2; rank ≤ 1: the
    tensor), kept when the draw is < p, divided by p in float64 then rounded to float32 (rescale)."""
    d, eps = o.get("density", 0.2), o.get("epsilon", 0.15)
    if d >= 1 or len(idx) == 0:
        return idx, e32
    shape = inp.base[name]["shape"]
    n = int(np.prod(shape, dtype=np.int64))
    row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else n
    p = np.empty(len(idx))
    rows = idx // row
    for r in np.unique(rows):
        sel = np.flatnonzero(rows == r)
        p[sel] = della_probabilities(e32[sel], row, d, eps)
    keep = (della_units(name, t, len(idx), o.get("seed", 0)) < p) & (e32 != 0)
    v = e32[keep]
    if o.get("rescale", True):
        v = _f32(v.astype(np.float64) / p[keep])
    return idx[keep], v.astype(np.float32)


def _vector_entries(inp, t, name, o):
    """Weighted (and, for DARE, dropped/rescaled; for DELLA, dropped then weighted) entries of vector t for one tensor."""
    if o["method"] in ("della", "della_linear"):
        idx, e32 = _after_magprune(inp, t, name, *inp.entries(t, name), o)
        return idx, (e32 * np.float32(inp.w[t])).astype(np.float32)
    idx, v32 = inp.weighted(t, name)
    if o["method"] in ("dare_linear", "dare_ties"):
        idx, v32 = _after_dare(inp, t, name, idx, v32, o)
    return idx, v32


def ties_thresholds(inp, o):
    """Global trim: per vector, the k-th largest |τ| over the whole model, k = ⌊density · N⌋."""
    k = int(o.get("density", 0.2) * inp.float_total)
    out = []
    for t, tv in enumerate(inp.tvs):
        mags = [np.abs(_vector_entries(inp, t, name, o)[1]).astype(np.float64) for name in tv["tensors"]]
        out.append(kth_largest(np.concatenate(mags) if mags else np.zeros(0), k, inp.float_total))
    return out


def sign_elect(stack):
    """TIES's elect + disjoint mean over a (vectors × n) stack: the mean of the entries whose sign
    agrees with the sign of the column sum (Yadav et al., 2023, §3)."""
    gamma = np.sign(stack.sum(axis=0))                      # elected sign
    agree = (np.sign(stack) == gamma) & (stack != 0) & (gamma != 0)
    cnt = agree.sum(axis=0)
    s = np.where(agree, stack, 0.0).sum(axis=0)
    return np.where(cnt > 0, s / np.maximum(cnt, 1), 0.0)


def direction(inp, name, o, thresholds=None):
    """τ_m (float64, flat) of one tensor for the linear methods; for tall/consensus also the masks."""
    shape = inp.base[name]["shape"]
    n = int(np.prod(shape, dtype=np.int64))
    m = o["method"]
    T = len(inp.tvs)
    if m == "task_arithmetic":
        d = np.zeros(n)
        for t in range(T):
            idx, e32 = inp.entries(t, name)
            np.add.at(d, idx, inp.w[t] * e32.astype(np.float64))
        return d, None
    if m == "sce":
        V = np.zeros((T, n))
        for t in range(T):
            idx, e32 = inp.entries(t, name)
            V[t, idx] = e32.astype(np.float64)
        return sce(V, o.get("select_topk", 1.0)), None
    if m == "nuslerp":
        v0, v1 = [np.zeros(n), np.zeros(n)]
        for t, v in enumerate((v0, v1)):
            idx, e32 = inp.entries(t, name)
            v[idx] = e32.astype(np.float64)
        w = inp.w
        t = 0.5 if abs(w[0] + w[1]) < 1e-6 else w[1] / (w[0] + w[1])
        if o.get("nuslerp_flatten", True) or len(shape) <= 1:
            return nuslerp(t, v0, v1), None
        if o.get("nuslerp_row_wise", False):   # slices along the first axis: the columns of (rows, rest)
            cols = lambda v: v.reshape(shape[0], -1).T
            return np.array([nuslerp(t, a, b) for a, b in zip(cols(v0), cols(v1))]).T.reshape(-1), None
        rows = lambda v: v.reshape(-1, shape[-1])
        return np.array([nuslerp(t, a, b) for a, b in zip(rows(v0), rows(v1))]).reshape(-1), None
    if m == "model_stock":
        vecs = []
        for t in range(T):
            idx, e32 = inp.entries(t, name)
            dense = np.zeros(n)
            dense[idx] = e32.astype(np.float64)
            vecs.append(dense)
        seg = int(shape[-1]) if o.get("filter_wise", False) and len(shape) > 1 else max(n, 1)
        d = np.zeros(n)
        for s0 in range(0, n, seg):
            part = [v[s0:s0 + seg] for v in vecs]
            d[s0:s0 + seg] = model_stock_ratio(part) * np.mean(part, axis=0)
        return d, None
    if m in ("della", "della_linear"):
        kept = []
        for t in range(T):
            idx, v32 = _vector_entries(inp, t, name, o)
            dense = np.zeros(n)
            dense[idx] = v32.astype(np.float64)
            kept.append(dense)
        if m == "della_linear":
            return np.sum(kept, axis=0) if kept else np.zeros(n), None
        return sign_elect(np.array(kept) if kept else np.zeros((0, n))), None
    if m in ("ties", "dare_linear", "dare_ties"):
        use_ties = m in ("ties", "dare_ties")
        kept = []
        for t in range(T):
            idx, v32 = _vector_entries(inp, t, name, o)
            if use_ties:
                if o.get("scope", "global") == "global":
                    thr = thresholds[t]
                else:
                    thr = kth_largest(np.abs(v32).astype(np.float64), int(o.get("density", 0.2) * n), n)
                sel = (np.abs(v32).astype(np.float64) >= thr) & (v32 != 0)
                idx, v32 = idx[sel], v32[sel]
            dense = np.zeros(n)
            dense[idx] = v32.astype(np.float64)
            kept.append(dense)
        if not use_ties:
            return np.sum(kept, axis=0) if kept else np.zeros(n), None
        return sign_elect(np.array(kept) if kept else np.zeros((0, n))), None
    if m in ("breadcrumbs", "breadcrumbs_ties"):
        # Each vector's mask is ranked on its unweighted entries; the kept entries are weighted (float32
        # products, as Locus holds them), then summed (breadcrumbs) or sign-elected (breadcrumbs_ties).
        beta, gam = o.get("density", 0.2), o.get("gamma", 0.1)
        seg = (int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else n) if o.get("scope", "row") == "row" else n
        seg = max(1, seg)
        d = np.zeros(n)
        kept = []
        for t in range(T):
            idx, e32 = inp.entries(t, name)
            dense = np.zeros(n, np.float32)
            dense[idx] = e32
            mine = np.zeros(n)
            for s0 in range(0, n, seg):
                part = dense[s0:s0 + seg]
                L = len(part)
                order = rank_desc(part.astype(np.float64))
                drop, take = int(gam * L), int(beta * L)
                chosen = order[drop:drop + take]
                chosen = chosen[part[chosen] != 0]
                if m == "breadcrumbs":
                    d[s0 + chosen] += inp.w[t] * part[chosen].astype(np.float64)
                else:
                    mine[s0 + chosen] = (part[chosen] * np.float32(inp.w[t])).astype(np.float64)
            kept.append(mine)
        if m == "breadcrumbs":
            return d, None
        return sign_elect(np.array(kept) if kept else np.zeros((0, n))), None
    if m in ("tall", "consensus"):
        lam = o.get("tall_lambda", 0.4)
        vecs = []
        for t in range(T):
            idx, v32 = inp.weighted(t, name)
            dense = np.zeros(n, np.float32)
            dense[idx] = v32
            vecs.append(dense.astype(np.float64))
        mtl = np.sum(vecs, axis=0) if vecs else np.zeros(n)
        masks = [(v != 0) & (np.abs(v) >= lam * np.abs(mtl - v)) for v in vecs]
        # margin of the inequality, to tell float32 boundary cases apart
        margins = [np.abs(np.abs(v) - lam * np.abs(mtl - v)) / np.maximum(np.abs(v), 1e-30) for v in vecs]
        if m == "tall":
            return mtl, (masks, margins)
        votes = np.sum(masks, axis=0) if masks else np.zeros(n)
        return np.where(votes >= o.get("k", 2), mtl, 0.0), (masks, margins)
    raise ValueError(m)


def sce(V, select_topk):
    """SCE (Wan et al., 2025) on a (vectors × n) stack: select the top ⌊select_topk · (entries of nonzero
    variance)⌋ entries by population variance across the vectors (float32, ties by position), weight
    each vector by its mean squared value after selection (normalized; 1/N each when the sum is below
    1e-6), keep each entry's values whose sign is that of the column sum (≥ 0 → +), weighted mean
    with the divisor floored at 1e-6."""
    if select_topk < 1:
        var32 = V.var(axis=0).astype(np.float32)
        k = int(int(np.count_nonzero(var32)) * select_topk)
        keep = np.zeros(V.shape[1], bool)
        keep[np.lexsort((np.arange(V.shape[1]), -var32.astype(np.float64)))[:k]] = True
        V = V * keep
    w = (V ** 2).mean(axis=1) if V.shape[1] else np.zeros(V.shape[0])
    w = np.full(V.shape[0], 1.0 / V.shape[0]) if abs(w.sum()) < 1e-6 else w / w.sum()
    majority = np.where(V.sum(axis=0) >= 0, 1.0, -1.0)
    agree = np.sign(V) == majority
    return (V * w[:, None] * agree).sum(axis=0) / np.maximum((w[:, None] * agree).sum(axis=0), 1e-6)


def nuslerp(t, v0, v1):
    """Spherical interpolation of two flat vectors as mergekit's nuslerp defines it: the norms floored at
    1e-7, cos Ω clamped to [−1, 1], the linear interpolation when 1 − cos²Ω ≤ 1e-16."""
    u0 = v0 / max(float(np.linalg.norm(v0)), 1e-7)
    u1 = v1 / max(float(np.linalg.norm(v1)), 1e-7)
    cos = min(1.0, max(-1.0, float(np.sum(u0 * u1))))
    if 1 - cos * cos <= 1e-16:
        return (1 - t) * v0 + t * v1
    omega = math.acos(cos)
    return (math.sin((1 - t) * omega) * v0 + math.sin(t * omega) * v1) / math.sin(omega)


def model_stock_ratio(vs):
    """Model Stock's t (Jang, Yun & Han, 2024, §3) from N ≥ 2 flat task vectors: cos θ the mean over pairs
    of ⟨a, b⟩ / max(‖a‖‖b‖, 1e-6) clamped to [−1, 1], t = N cos θ / (1 + (N − 1) cos θ), 0 when that
    denominator is below 1e-6 in magnitude."""
    cs = []
    for a in range(len(vs)):
        for b in range(a + 1, len(vs)):
            c = float(np.dot(vs[a], vs[b])) / max(float(np.linalg.norm(vs[a])) * float(np.linalg.norm(vs[b])), 1e-6)
            cs.append(min(1.0, max(-1.0, c)))
    cos = sum(cs) / len(cs)
    den = 1 + (len(vs) - 1) * cos
    return 0.0 if abs(den) < 1e-6 else len(vs) * cos / den


def fisher(inp, name, scores, o):
    theta0 = inp.base[name]["value"].reshape(-1)
    n = theta0.size
    num, den = np.zeros(n), np.zeros(n)
    for t in range(len(inp.tvs)):
        idx, e32 = inp.entries(t, name)
        theta = theta0.copy()
        theta[idx] += e32.astype(np.float64)
        sc = scores[t]
        if name in sc["tensors"]:
            F = sc["tensors"][name].reshape(-1)
            norm = 1.0 / sc["samples"] if o.get("normalize") and sc["samples"] > 0 and sc["reduction"] == "sum" else 1.0
            F = np.maximum(F * norm, o.get("floor", 1e-6))
        else:
            F = np.ones(n)
        F = F * inp.w[t]
        num += F * theta
        den += F
    return np.where(den != 0, num / np.where(den != 0, den, 1), 0.0)


def merge(base_path, tv_paths, options, scores_paths=()):
    """The merged checkpoint as name → dict(dtype, shape, value float64 exact result before rounding,
    rounded float64 in the output dtype, raw for copied tensors), plus TALL per-task masks/models."""
    o = dict(options)
    o.setdefault("lambda", 1.0)
    inp = Inputs(base_path, tv_paths, o.get("weight"))
    scores = [read_scores(p) for p in scores_paths] if o["method"] == "fisher" else None
    thresholds = None
    if o["method"] in ("ties", "dare_ties") and o.get("scope", "global") == "global":
        thresholds = ties_thresholds(inp, o)
    out, tall_masks, tall_models = {}, [{} for _ in inp.tvs], [{} for _ in inp.tvs]
    for name, b in inp.base.items():
        if b["dtype"] not in FLOATS or not inp.touched(name, scores):
            out[name] = {"dtype": b["dtype"], "shape": b["shape"], "raw": b["raw"], "copied": True}
            for t in range(len(inp.tvs)):
                tall_models[t][name] = out[name]
            continue
        theta0 = b["value"].reshape(-1)
        dt = o.get("dtype") or b["dtype"]
        margins = None
        # Σ_t |w_t τ_t| (after DARE): the size of the float32 sums Locus accumulates, for tolerances
        mag = np.zeros(theta0.size)
        if o["method"] != "fisher":
            for t in range(len(inp.tvs)):
                idx, v32 = _vector_entries(inp, t, name, o)
                np.add.at(mag, idx, np.abs(v32).astype(np.float64))
        if o["method"] == "fisher":
            exact = fisher(inp, name, scores, o)
        else:
            d, extra = direction(inp, name, o, thresholds)
            exact = np.where(d != 0, theta0 + o["lambda"] * d, theta0)
            if extra is not None:
                masks, margins = extra
                for t in range(len(inp.tvs)):
                    tall_masks[t][name] = {"mask": masks[t].reshape(b["shape"]), "margin": margins[t].reshape(b["shape"])}
                    own = np.where(masks[t] & (d != 0), theta0 + d, theta0)
                    tall_models[t][name] = {"dtype": dt, "shape": b["shape"], "exact": own.reshape(b["shape"]),
                                            "theta0": theta0.reshape(b["shape"]), "mag": mag.reshape(b["shape"]),
                                            "value": round_to(own, dt).reshape(b["shape"]), "copied": False}
        out[name] = {"dtype": dt, "shape": b["shape"], "exact": exact.reshape(b["shape"]),
                     "theta0": theta0.reshape(b["shape"]), "mag": (abs(o["lambda"]) * mag).reshape(b["shape"]),
                     "value": round_to(exact, dt).reshape(b["shape"]), "copied": False}
    return {"tensors": out, "tall_masks": tall_masks, "tall_models": tall_models, "inputs": inp}


# ------------------------------------------------------------------ methods on full models (no base)

def combine_models(method, xs, o):
    """One tensor (flat float64 arrays, one per model) → (exact result, size of the summands):
    linear (Σ w_i x_i, divided by Σ w_i unless normalize is false), slerp (two models) or karcher."""
    if method == "linear":
        w = o.get("weight") or [1.0] * len(xs)
        acc = np.zeros_like(xs[0])
        mag = np.zeros_like(xs[0])
        for wi, x in zip(w, xs):
            acc = acc + wi * x
            mag = mag + np.abs(wi * x)
        if o.get("normalize", True):
            total = sum(w)
            return acc / total, mag / abs(total)
        return acc, mag
    if method == "karcher":
        out = karcher(xs, o.get("max_iter", 10), o.get("tol", 1e-5))
        return out, np.sum([np.abs(x) for x in xs], axis=0)
    if method == "slerp":
        t = o.get("t", 0.5)
        v0, v1 = xs
        s0, s1 = slerp_coefficients(t, v0, v1)
        return s0 * v0 + s1 * v1, np.abs(s0 * v0) + np.abs(s1 * v1)
    raise ValueError(method)


def karcher(xs, max_iter, tol):
    """The Karcher mean of flat tensors on the unit sphere (Karcher, 1977), iterated on the vectors
    themselves as mergekit's karcher describes it: unit vectors of the tensors whose norm exceeds tol,
    start at their normalized mean, Riemannian gradient steps (exp map) until the step is below tol
    or max_iter steps, then scaled by the mean norm of all tensors."""
    if len(xs) == 1:
        return xs[0].copy()
    norms = [float(np.linalg.norm(x)) for x in xs]
    valid = [i for i, nrm in enumerate(norms) if nrm > tol]
    if not valid:
        return np.zeros_like(xs[0])
    units = [xs[i] / norms[i] for i in valid]
    a = 1.0 / len(valid)
    mean = sum(a * u for u in units)
    mn = float(np.linalg.norm(mean))
    mean = units[0].copy() if mn < tol else mean / mn
    for _ in range(max_iter):
        tangent = np.zeros_like(mean)
        for u in units:
            d = min(1.0, max(-1.0, float(np.dot(mean, u))))
            th = math.acos(d)
            if th < tol:
                continue
            tangent += a * (th / math.sin(th)) * (u - d * mean)
        tn = float(np.linalg.norm(tangent))
        if tn < tol:
            break
        mean = math.cos(tn) * mean + math.sin(tn) * (tangent / tn)
        un = float(np.linalg.norm(mean))
        if un > tol:
            mean = mean / un
    return (sum(norms) / len(xs)) * mean


def slerp_coefficients(t, v0, v1, parallel=0.9995, eps=1e-8):
    """Spherical interpolation of two flattened tensors (Shoemake, 1985): the angle Ω between the
    directions of v0 and v1 (each divided by its norm when that exceeds eps), and
    sin((1−t)Ω)/sin Ω, sin(tΩ)/sin Ω; when |cos Ω| > 0.9995 the linear weights 1−t, t."""
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    u0 = v0 / n0 if n0 > eps else v0
    u1 = v1 / n1 if n1 > eps else v1
    cos = float(np.sum(u0 * u1))
    if abs(cos) > parallel:
        return 1.0 - t, t
    omega = math.acos(cos)
    return math.sin((1 - t) * omega) / math.sin(omega), math.sin(t * omega) / math.sin(omega)


def merge_models(paths, options):
    """The merged checkpoint of full models, in the form `merge` returns (non-float tensors copied
    from the first model)."""
    o = dict(options)
    models = [read_checkpoint(p) for p in paths]
    out = {}
    for name, first in models[0].items():
        if first["dtype"] not in FLOATS:
            out[name] = {"dtype": first["dtype"], "shape": first["shape"], "raw": first["raw"], "copied": True}
            continue
        xs = [m[name]["value"].reshape(-1) for m in models]
        exact, mag = combine_models(o["method"], xs, o)
        dt = o.get("dtype") or first["dtype"]
        out[name] = {"dtype": dt, "shape": first["shape"], "exact": exact.reshape(first["shape"]), "mag": mag.reshape(first["shape"]),
                     "value": round_to(exact, dt).reshape(first["shape"]), "copied": False}
    return {"tensors": out}


# ------------------------------------------------------------------ mergekit semantics (locus merge --config)

def mergekit_della_probabilities(delta, density, epsilon):
    """Keep probabilities of mergekit 0.1.5's `della_magprune` (sparsify.py) for one δ, float32 as it
    computes them: a tensor of rank < 2 is one row; otherwise entries are ranked by |δ| ascending along
    axis 1 (equal magnitudes by position, where torch's sort leaves the order open), and
    p = f32(density − ε) + (f32(r) / f32(n − 1) · 2) · f32(ε) for rank r = 0 … n − 1 of n."""
    x = np.asarray(delta, dtype=np.float32)
    x = x.reshape(1, -1) if x.ndim < 2 else x
    n = x.shape[1]
    order = np.argsort(np.abs(x), axis=1, kind="stable")
    ranks = np.empty(x.shape, dtype=np.int64)
    positions = np.arange(n).reshape((1, n) + (1,) * (x.ndim - 2))
    np.put_along_axis(ranks, order, np.broadcast_to(positions, x.shape), axis=1)
    rank_norm = ranks.astype(np.float32) / np.float32(n - 1)
    p = np.float32(density - epsilon) + (rank_norm * np.float32(2)) * np.float32(epsilon)
    return p.astype(np.float32).reshape(np.shape(delta))


def mergekit_della_units(delta, name, vector, seed):
    """Locus's draws for its mergekit della (docs/merging.md §Configs): one unit per non-zero entry of δ
    in index order, from the DARE generator of this input and tensor; 1 (never kept) at the zeros."""
    flat = np.asarray(delta).reshape(-1)
    units = np.ones(flat.size)
    nz = np.flatnonzero(flat)
    units[nz] = della_units(name, vector, nz.size, seed)
    return units.reshape(np.shape(delta))
