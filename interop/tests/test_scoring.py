"""`locus score` and `locus mask` through the CLI, checked against the independent numpy reference
(scoring_ref.py: per-sample Jacobians, the estimators from their definitions, Selection from its rule).

Files are read back with h5py the way the spec says (scores: `ds[()]`; masks:
`np.unpackbits(ds[()], bitorder="little", count=n)`), and every bad input must exit != 0 with one
error line and leave no output behind (or, for --append, leave the existing file unchanged).
"""
import re
import shutil

import h5py
import numpy as np
import pytest

import locus_h5
import scoring_ref
from conftest import assert_error, assert_nothing_new, assert_ok, assert_valid, replace_dataset, snapshot

CLASSES = ["a", "b", "c", "d"]
N_TRAIN, N_VAL = 36, 12
REL = 1e-5


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture(scope="module")
def env(locus, tmp_path_factory):
    """A small image dataset (train / val / an empty split), MLP models made by `locus init`."""
    d = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(1)
    n = N_TRAIN + N_VAL
    x = rng.integers(0, 256, size=(n, 1, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 4, size=n)
    for i, c in enumerate(y):                                 # some class structure
        x[i, 0, 2 * c:2 * c + 2, :] //= 4
    data = d / "data.h5"
    locus_h5.write_dataset(data, x, y, CLASSES, {"train": np.arange(N_TRAIN), "val": np.arange(N_TRAIN, n),
                                                 "empty": np.zeros(0, np.int64)}, mean=(0.5,), std=(0.25,))
    out = {"dir": d, "data": data}
    for key, args in {"m": ["--hidden", "16"], "m2": ["--hidden", "16,8", "--seed", "3"],
                      "other": ["--hidden", "16", "--seed", "1"]}.items():
        out[key] = d / f"{key}.h5"
        assert_ok(locus("init", "--preset", "mlp", "--data", data, "-o", out[key], *args))
    return out


def inputs(data, split):
    """Normalised network inputs (float64) and labels of a split, from the file with h5py."""
    with h5py.File(data, "r") as f:
        idx = f["splits"][split][()]
        ds = f["inputs"]
        raw = ds[()][idx].astype(np.float64)
        scale, mean, std = float(ds.attrs["scale"]), ds.attrs["mean"], ds.attrs["std"]
        labels = f["labels"][()][idx]
    return (raw * scale - mean[0]) / std[0], labels


def read_scores(path):
    """({name: float32 array}, root attrs) with h5py."""
    with h5py.File(path, "r") as f:
        tensors = {locus_h5.unescape(k): ds[()] for k, ds in f["tensors"].items()}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return tensors, attrs


def read_mask(path):
    """({name: bool array of the tensor shape}, root attrs), bits unpacked with np.unpackbits."""
    with h5py.File(path, "r") as f:
        out = {}
        for k, ds in f["tensors"].items():
            n = int(ds.attrs["count"])
            bits = np.unpackbits(ds[()], bitorder="little", count=n).astype(bool)
            assert int(ds.attrs["ones"]) == int(bits.sum())
            out[locus_h5.unescape(k)] = bits.reshape(tuple(ds.attrs["shape"]))
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return out, attrs


def rel_err(a, b):
    """max |a − b| / max |b| (per tensor)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def model_order(model):
    return scoring_ref.RefModel.load(model).scored()


def fingerprint(model):
    with h5py.File(model, "r") as f:
        v = f.attrs["fingerprint"]
    return v.decode() if isinstance(v, bytes) else v


def score(locus, env, out, *args, model="m"):
    return assert_ok(locus("score", env[model], env["data"], "-o", out, "--quiet", *args))


def fails_cleanly(locus, out, *args, names=(), unchanged=None):
    """Exit != 0, one stderr line naming names[0]; no new file next to OUT; `unchanged` keeps its bytes."""
    before = snapshot(out.parent)
    old = unchanged.read_bytes() if unchanged is not None else None
    r = locus(*args)
    line = assert_error(r, names[0] if names else "")
    for n in names[1:]:
        assert str(n) in line, f"error line does not name {n}:\n{r!r}"
    assert_nothing_new(out.parent, before, out)
    if unchanged is not None:
        assert unchanged.read_bytes() == old, f"{unchanged} was modified by a failed run"
    return line


# ------------------------------------------------------------------ locus score

@pytest.mark.parametrize("model", ["m", "m2"])
@pytest.mark.parametrize("estimator", ["talos-exact", "fisher-exact", "fisher-empirical"])
def test_score_matches_numpy(locus, env, tmp_path, model, estimator):
    out = tmp_path / "scores.h5"
    r = score(locus, env, out, "--estimator", estimator, "--batch-size", "7", model=model)
    assert_valid(locus("validate", out))
    assert str(N_TRAIN) in r.out
    got, attrs = read_scores(out)
    assert attrs["kind"] == "scores" and attrs["estimator"] == estimator and attrs["reduction"] == "sum"
    assert int(attrs["samples"]) == N_TRAIN and int(attrs["draws"]) == 1
    assert attrs["base-fingerprint"] == fingerprint(env[model])
    ref_model = scoring_ref.RefModel.load(env[model])
    assert sorted(got) == sorted(ref_model.scored()), "scored: body Linear weights and biases, never the head"
    x, y = inputs(env["data"], "train")
    ref = scoring_ref.scores(ref_model, x, y, "default", estimator)
    errs = {}
    for name, v in got.items():
        assert v.dtype == np.float32 and v.shape == ref[name].shape
        assert np.all(np.isfinite(v)) and np.all(v >= 0)
        errs[name] = rel_err(v, ref[name])
    print(f"{model} {estimator}: CLI vs numpy, normalized error per tensor {errs}")
    assert max(errs.values()) <= REL, errs


def test_score_batches_option_matches_numpy(locus, env, tmp_path):
    out = tmp_path / "s.h5"
    score(locus, env, out, "--estimator", "talos-exact", "--batch-size", "5", "--batches", "2", "--split", "val")
    got, attrs = read_scores(out)
    assert int(attrs["samples"]) == 10
    x, y = inputs(env["data"], "val")
    ref = scoring_ref.scores(scoring_ref.RefModel.load(env["m"]), x[:10], y[:10], "default", "talos-exact")
    assert max(rel_err(got[k], ref[k]) for k in got) <= REL


def test_score_talos_seeded_and_approaches_expectation(locus, env, tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    score(locus, env, a, "--estimator", "talos", "--seed", "7")
    score(locus, env, b, "--estimator", "talos", "--seed", "7")
    score(locus, env, c, "--estimator", "talos", "--seed", "8")
    sa, sb, sc = read_scores(a)[0], read_scores(b)[0], read_scores(c)[0]
    assert all(sa[k].tobytes() == sb[k].tobytes() for k in sa), "same seed: bit for bit"
    assert any(sa[k].tobytes() != sc[k].tobytes() for k in sa), "another seed samples other classes"
    many = tmp_path / "many.h5"
    score(locus, env, many, "--estimator", "talos", "--draws", "200", "--seed", "1")
    got, attrs = read_scores(many)
    assert int(attrs["draws"]) == 200 and int(attrs["samples"]) == N_TRAIN
    x, y = inputs(env["data"], "train")
    ref = scoring_ref.scores(scoring_ref.RefModel.load(env["m"]), x, y, "default", "talos-exact")
    err = max(rel_err(got[k] / 200, ref[k]) for k in got)
    print(f"talos 200 draws / 200 vs numpy talos-exact: normalized error {err:.3g}")
    assert err <= 0.1


def test_deterministic_estimator_records_one_draw(locus, env, tmp_path):
    """spec §3: draws = sampled classes per input, 1 for deterministic estimators. --draws must not be
    recorded for an estimator that samples nothing (or it must be refused)."""
    out = tmp_path / "s.h5"
    r = locus("score", env["m"], env["data"], "-o", out, "--quiet", "--estimator", "talos-exact", "--draws", "3")
    if r.code != 0:
        assert_error(r, "")
        return
    _, attrs = read_scores(out)
    assert int(attrs["draws"]) == 1, f"talos-exact scores recorded with draws = {attrs['draws']} (one pass per class, nothing sampled)"


def test_score_append(locus, env, tmp_path):
    s1, s2, app = tmp_path / "s1.h5", tmp_path / "s2.h5", tmp_path / "app.h5"
    score(locus, env, s1, "--estimator", "talos", "--seed", "0")
    score(locus, env, s2, "--estimator", "talos", "--seed", "5")
    shutil.copyfile(s1, app)
    score(locus, env, app, "--estimator", "talos", "--seed", "5", "--append")
    assert_valid(locus("validate", app))
    a, aa = read_scores(app)
    one, oa = read_scores(s1)
    two, _ = read_scores(s2)
    assert int(aa["samples"]) == 2 * int(oa["samples"]) == 2 * N_TRAIN
    assert aa["estimator"] == "talos" and int(aa["draws"]) == 1 and aa["reduction"] == "sum"
    for k in a:
        assert rel_err(a[k], one[k].astype(np.float64) + two[k]) <= 1e-6, k
    # Deterministic: appending the same scoring doubles the sums.
    e, e2 = tmp_path / "e.h5", tmp_path / "e2.h5"
    score(locus, env, e, "--estimator", "talos-exact", "--split", "val")
    shutil.copyfile(e, e2)
    score(locus, env, e2, "--estimator", "talos-exact", "--split", "val", "--append")
    s, d = read_scores(e)[0], read_scores(e2)
    assert int(d[1]["samples"]) == 2 * N_VAL
    assert all(rel_err(d[0][k], 2.0 * s[k]) <= 1e-6 for k in s)


def test_score_exclude(locus, env, tmp_path):
    out = tmp_path / "w.h5"
    score(locus, env, out, "--estimator", "talos-exact", "--exclude", r"\.bias$", model="m2")
    got, _ = read_scores(out)
    assert sorted(got) == ["layers.1.weight", "layers.3.weight"]
    full = tmp_path / "full.h5"
    score(locus, env, full, "--estimator", "talos-exact", model="m2")
    f = read_scores(full)[0]
    assert all(np.array_equal(got[k], f[k]) for k in got)


# ------------------------------------------------------------------ locus mask

ROUND = re.compile(r"round (\d+)/(\d+): target density ([\d.]+) %, (\d+) of (\d+) trainable")


@pytest.mark.parametrize("scope,keep", [("global", "lowest"), ("local", "lowest"), ("global", "highest")])
def test_mask_talos_calibration(locus, env, tmp_path, scope, keep):
    out = tmp_path / "mask.h5"
    r = assert_ok(locus("mask", env["m2"], env["data"], "-o", out, "--density", "0.1", "--scope", scope, "--keep", keep,
                        "--batch-size", "16"))
    assert_valid(locus("validate", out))
    m, attrs = read_mask(out)
    names = model_order(env["m2"])
    assert sorted(m) == sorted(names)
    n = sum(v.size for v in m.values())
    assert int(attrs["count"]) == n and attrs["absent-tensors"] == "frozen"
    assert attrs["base-fingerprint"] == fingerprint(env["m2"])
    if scope == "global":
        assert int(sum(v.sum() for v in m.values())) == int(0.1 * n) == int(attrs["ones"])
    else:
        for k, v in m.items():
            assert int(v.sum()) == int(0.1 * v.size), k
    rounds = [tuple(map(float, g)) for g in ROUND.findall(r.err)]
    assert [int(x[0]) for x in rounds] == [1, 2, 3, 4], r.err
    for rr, R, pct, ones, total in rounds:
        target = 0.1 ** (rr / R)
        assert abs(pct - round(target * 100, 2)) < 1e-9
        assert int(total) == n
        if scope == "global":
            assert int(ones) == int(target * n), f"round {rr}: {ones} ones, expected int({target} · {n})"


def test_mask_one_round_equals_selection_of_the_scores(locus, env, tmp_path):
    """--rounds 1 calibration = one selection from the same scores (what `locus score` writes)."""
    s, m = tmp_path / "s.h5", tmp_path / "m.h5"
    score(locus, env, s, "--estimator", "talos-exact", "--batch-size", "16", model="m2")
    assert_ok(locus("mask", env["m2"], env["data"], "-o", m, "--density", "0.2", "--rounds", "1", "--estimator", "talos-exact",
                    "--batch-size", "16", "--quiet"))
    scores, _ = read_scores(s)
    names = model_order(env["m2"])
    want = dict(zip(names, scoring_ref.select([scores[k] for k in names], 0.2)))
    got, _ = read_mask(m)
    assert all(np.array_equal(got[k], want[k]) for k in names)


CASES = [("global", "lowest", 0.1), ("local", "lowest", 0.25), ("global", "highest", 0.3), ("local", "highest", 0.05),
         ("global", "lowest", 1.0), ("global", "lowest", 0.001)]


@pytest.mark.parametrize("scope,keep,density", CASES)
def test_mask_from_scores_matches_selection(locus, env, tmp_path, scope, keep, density):
    s = tmp_path / "s.h5"
    score(locus, env, s, "--estimator", "fisher-empirical", model="m2")
    names = model_order(env["m2"])
    scores, _ = read_scores(s)
    # and a crafted file with heavy ties (written by h5py, quantised to 3 levels) — the tie rule decides
    rng = np.random.default_rng(4)
    tied = {k: rng.integers(0, 3, size=v.shape).astype(np.float32) for k, v in scores.items()}
    t = tmp_path / "tied.h5"
    locus_h5.write_scores(t, tied, base=str(env["m2"]), estimator="talos", samples=1)
    for src, sc in [(s, scores), (t, tied)]:
        out = tmp_path / f"mask-{src.stem}.h5"
        assert_ok(locus("mask", env["m2"], "--from-scores", src, "--density", str(density), "--scope", scope, "--keep", keep, "-o", out))
        assert_valid(locus("validate", out))
        got, attrs = read_mask(out)
        want = dict(zip(names, scoring_ref.select([sc[k] for k in names], density, keep, scope)))
        n = sum(v.size for v in got.values())
        if scope == "global":
            assert int(attrs["ones"]) == int(density * n)
        else:
            assert all(int(got[k].sum()) == int(density * got[k].size) for k in names)
        for k in names:
            assert np.array_equal(got[k], want[k]), f"{src.name} {k}: mask differs from the selection rule"


def test_mask_all_equal_scores_first_positions(locus, env, tmp_path):
    names = model_order(env["m2"])
    shapes = {k: v.shape for k, v in locus_h5.load(env["m2"])["tensors"].items()}
    flat = tmp_path / "flat.h5"
    locus_h5.write_scores(flat, {k: np.full(shapes[k], 0.5, np.float32) for k in names}, base=str(env["m2"]), estimator="talos", samples=1)
    out = tmp_path / "m.h5"
    assert_ok(locus("mask", env["m2"], "--from-scores", flat, "--density", "0.5", "-o", out))
    got, _ = read_mask(out)
    bits = np.concatenate([got[k].ravel() for k in names])
    k = int(0.5 * bits.size)
    assert bits[:k].all() and not bits[k:].any(), "ties: the first k positions in model order, C order inside"


@pytest.mark.parametrize("scope", ["global", "local"])
def test_mask_random(locus, env, tmp_path, scope):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    for out, seed in [(a, 3), (b, 3), (c, 4)]:
        assert_ok(locus("mask", env["m2"], "--method", "random", "--density", "0.1", "--seed", seed, "--scope", scope, "-o", out))
    assert_valid(locus("validate", a))
    ma, mb, mc = read_mask(a)[0], read_mask(b)[0], read_mask(c)[0]
    n = sum(v.size for v in ma.values())
    if scope == "global":
        assert int(sum(v.sum() for v in ma.values())) == int(0.1 * n)
    else:
        assert all(int(v.sum()) == int(0.1 * v.size) for v in ma.values())
    assert all(np.array_equal(ma[k], mb[k]) for k in ma), "same seed, same mask"
    assert any(not np.array_equal(ma[k], mc[k]) for k in ma), "another seed, another mask"


def test_mask_magnitude(locus, env, tmp_path):
    out = tmp_path / "mag.h5"
    assert_ok(locus("mask", env["m2"], "--method", "magnitude", "--density", "0.2", "-o", out))
    names = model_order(env["m2"])
    w = locus_h5.load(env["m2"])["tensors"]
    want = dict(zip(names, scoring_ref.select([np.abs(w[k]) for k in names], 0.2)))
    got, _ = read_mask(out)
    assert all(np.array_equal(got[k], want[k]) for k in names)


@pytest.mark.parametrize("sparsity,density", [("0.9", "0.1"), ("0.75", "0.25"), ("0.5", "0.5"), ("0.8", "0.2")])
def test_sparsity_is_one_minus_density(locus, env, tmp_path, sparsity, density):
    """--sparsity s must give the same mask as --density 1 − s, i.e. ⌊(1 − s) · n⌋ ones with 1 − s taken as
    the decimal the user means (n = 1040 here: 0.1 · 1040 = 104, 0.2 · 1040 = 208)."""
    a, b = tmp_path / "s.h5", tmp_path / "d.h5"
    assert_ok(locus("mask", env["m"], "--method", "random", "--sparsity", sparsity, "--seed", "1", "-o", a))
    assert_ok(locus("mask", env["m"], "--method", "random", "--density", density, "--seed", "1", "-o", b))
    ma, aa = read_mask(a)
    mb, ab = read_mask(b)
    n = int(aa["count"])
    assert int(ab["ones"]) == int(float(density) * n)
    assert int(aa["ones"]) == int(ab["ones"]), f"--sparsity {sparsity}: {aa['ones']} ones, --density {density}: {ab['ones']} (n = {n})"
    assert all(np.array_equal(ma[k], mb[k]) for k in ma)


# ------------------------------------------------------------------ bad input

def test_append_estimator_mismatch(locus, env, tmp_path):
    app = tmp_path / "app.h5"
    score(locus, env, app, "--estimator", "talos")
    fails_cleanly(locus, app, "score", env["m"], env["data"], "-o", app, "--quiet", "--append", "--estimator", "talos-exact",
                  names=[app], unchanged=app)


def test_append_draws_mismatch(locus, env, tmp_path):
    app = tmp_path / "app.h5"
    score(locus, env, app, "--estimator", "talos", "--draws", "2")
    fails_cleanly(locus, app, "score", env["m"], env["data"], "-o", app, "--quiet", "--append", "--estimator", "talos",
                  names=[app], unchanged=app)


def test_append_fingerprint_mismatch(locus, env, tmp_path):
    app = tmp_path / "app.h5"
    score(locus, env, app, "--estimator", "talos")
    fails_cleanly(locus, app, "score", env["other"], env["data"], "-o", app, "--quiet", "--append", "--estimator", "talos",
                  names=[app], unchanged=app)


def test_from_scores_fingerprint_mismatch(locus, env, tmp_path):
    s = tmp_path / "s.h5"
    score(locus, env, s, "--estimator", "talos")
    out = tmp_path / "mask.h5"
    fails_cleanly(locus, out, "mask", env["other"], "--from-scores", s, "--density", "0.1", "-o", out, names=[s])


@pytest.mark.parametrize("args", [["--density", "0"], ["--density", "1.5"], ["--density=-0.1"], ["--density", "nan"],
                                  ["--sparsity", "1"], ["--sparsity=-0.5"], ["--density", "0.1", "--sparsity", "0.9"], []])
@pytest.mark.parametrize("how", ["talos", "from-scores", "random"])
def test_bad_density(locus, env, tmp_path, args, how):
    out = tmp_path / "mask.h5"
    extra = {"talos": [env["data"]], "random": ["--method", "random"]}.get(how, [])
    if how == "from-scores":
        s = tmp_path / "s.h5"
        score(locus, env, s, "--estimator", "talos")
        extra = ["--from-scores", s]
    fails_cleanly(locus, out, "mask", env["m"], *extra, *args, "-o", out, "--quiet")


@pytest.mark.parametrize("bad", ["nan", "inf", "negative"])
def test_from_scores_non_finite_or_negative(locus, env, tmp_path, bad):
    s = tmp_path / "s.h5"
    score(locus, env, s, "--estimator", "talos-exact")
    v = read_scores(s)[0]["layers.1.weight"].copy()
    v[3, 5] = {"nan": np.nan, "inf": np.inf, "negative": -1.0}[bad]
    replace_dataset(s, "tensors/layers.1.weight", v)
    out = tmp_path / "mask.h5"
    fails_cleanly(locus, out, "mask", env["m"], "--from-scores", s, "--density", "0.1", "-o", out, names=[s])


@pytest.mark.parametrize("cmd", ["score", "mask"])
def test_empty_scoring_set(locus, env, tmp_path, cmd):
    out = tmp_path / "out.h5"
    extra = ["--density", "0.1"] if cmd == "mask" else []
    fails_cleanly(locus, out, cmd, env["m"], env["data"], "-o", out, "--quiet", "--split", "empty", *extra, names=[env["data"]])
    fails_cleanly(locus, out, cmd, env["m"], env["data"], "-o", out, "--quiet", "--batches", "0", *extra)
    fails_cleanly(locus, out, cmd, env["m"], env["data"], "-o", out, "--quiet", "--split", "nosuch", *extra, names=[env["data"]])


@pytest.mark.parametrize("cmd", ["score", "mask"])
def test_unknown_head(locus, env, tmp_path, cmd):
    out = tmp_path / "out.h5"
    extra = ["--density", "0.1"] if cmd == "mask" else []
    line = fails_cleanly(locus, out, cmd, env["m"], env["data"], "-o", out, "--quiet", "--head", "nope", *extra, names=[env["m"]])
    assert "nope" in line


@pytest.mark.parametrize("args", [["--draws", "0"], ["--batch-size", "0"]])
def test_bad_scoring_options(locus, env, tmp_path, args):
    out = tmp_path / "out.h5"
    fails_cleanly(locus, out, "score", env["m"], env["data"], "-o", out, "--quiet", *args)


def test_append_to_corrupt_scores(locus, env, tmp_path):
    """The existing file holds a NaN: appending must not launder it (exit != 0, file unchanged)."""
    app = tmp_path / "app.h5"
    score(locus, env, app, "--estimator", "talos")
    v = read_scores(app)[0]["layers.1.weight"].copy()
    v[0, 0] = np.nan
    replace_dataset(app, "tensors/layers.1.weight", v)
    fails_cleanly(locus, app, "score", env["m"], env["data"], "-o", app, "--quiet", "--append", "--estimator", "talos",
                  unchanged=app)


def test_append_to_missing_file(locus, env, tmp_path):
    out = tmp_path / "nothing.h5"
    fails_cleanly(locus, out, "score", env["m"], env["data"], "-o", out, "--quiet", "--append", names=[out])


def test_from_scores_wrong_shape(locus, env, tmp_path):
    """A scores file with the model's fingerprint but a tensor of another shape: refused, naming the scores file."""
    s = tmp_path / "wrong.h5"
    w = locus_h5.load(env["m"])["tensors"]
    locus_h5.write_scores(s, {"layers.1.weight": np.ones(w["layers.1.weight"].shape, np.float32),
                              "layers.1.bias": np.ones(w["layers.1.bias"].size + 1, np.float32)},
                          base=str(env["m"]), estimator="talos", samples=1)
    out = tmp_path / "mask.h5"
    fails_cleanly(locus, out, "mask", env["m"], "--from-scores", s, "--density", "0.5", "-o", out, names=[s])


@pytest.mark.parametrize("args", [["--rounds", "0"], []])
def test_bad_calibration_options(locus, env, tmp_path, args):
    """--rounds 0, and TaLoS calibration without DATA."""
    out = tmp_path / "mask.h5"
    data = [env["data"]] if args else []
    fails_cleanly(locus, out, "mask", env["m"], *data, "--density", "0.5", "-o", out, "--quiet", *args)
