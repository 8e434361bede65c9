"""Exit status of `locus` (README §Exit status, docs/architecture.md §Errors), per sysexits.h:

  0   success, --help, --version
  64  EX_USAGE: the command line is wrong (unknown option, unparsable or out-of-range value, options that
      do not go together); nothing is read or written
  1   the command ran and failed: a missing, damaged or unfitting input file, an output that cannot be
      written, `validate` / `inspect --verify` finding errors

Every failure is exactly one line on stderr, `locus: error: …`, naming the flag (usage) or the file
(and object) at fault."""
import os

import h5py
import pytest

from conftest import FIXTURES, REPO, assert_ok, snapshot

DIGITS = REPO / "fixtures" / "data" / "digits.csv.gz"


@pytest.fixture(scope="module")
def work(locus, tmp_path_factory):
    d = tmp_path_factory.mktemp("codes")
    assert_ok(locus("data", "import", DIGITS, "--image-shape", "1,8,8", "-o", d / "d.h5", "--quiet"))
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "8", "--data", d / "d.h5", "-o", d / "m.h5"))
    return d


def one_error_line(r):
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("locus: error: "), r
    return lines[0]


USAGE = [
    # ArgumentParser's own parse errors
    (["train", "{m}", "{d}", "-o", "{o}", "--no-such-flag"], "--no-such-flag"),
    (["train", "{m}"], "<data>"),
    (["train", "{m}", "{d}", "-o", "{o}", "--epochs", "many"], "--epochs"),
    (["mask", "{m}", "{d}", "-o", "{o}", "--scope", "sideways"], "--scope"),
    # validate(): values out of range, options that do not go together
    (["mask", "{m}", "{d}", "-o", "{o}"], "--density"),
    (["mask", "{m}", "{d}", "-o", "{o}", "--density", "0.1", "--sparsity", "0.9"], "--sparsity"),
    (["mask", "{m}", "{d}", "-o", "{o}", "--density", "1.5"], "--density"),
    (["train", "{m}", "{d}", "-o", "{o}", "--dampening", "2"], "--dampening"),
    (["diff", "{m}", "{m}", "-o", "{o}", "--density", "0.1", "--threshold", "0.1"], "--threshold"),
    (["convert", "{m}", "{o}", "--shard-size", "lots"], "--shard-size"),
    (["score", "{m}", "{d}", "-o", "{o}", "--exclude", "("], "--exclude"),
    # library specifications parsed for a flag: a typed error the command line names the flag of
    (["data", "import", str(DIGITS), "-o", "{o}", "--split", "0.5,0.6"], "--split"),
    (["data", "derive", "{d}", "-o", "{o}", "--transform", "blur"], "--transform"),
    (["data", "derive", "{d}", "-o", "{o}", "--transform", "resize=28"], "--transform"),
    (["data", "import", str(DIGITS), "-o", "{o}", "--delimiter", "ab"], "--delimiter"),
]


@pytest.mark.parametrize("args,flag", USAGE, ids=[" ".join(a[:1] + [f]) for a, f in USAGE])
def test_usage_errors_exit_64(locus, work, tmp_path, args, flag):
    out = tmp_path / "out.h5"
    before = snapshot(tmp_path)
    r = locus(*[a.format(m=work / "m.h5", d=work / "d.h5", o=out) for a in args])
    assert r.code == 64, r
    assert flag in one_error_line(r), r
    assert snapshot(tmp_path) == before


def test_runtime_errors_exit_1(locus, work, tmp_path):
    out = tmp_path / "out.h5"
    # a missing input file
    r = locus("eval", tmp_path / "nope.h5", work / "d.h5")
    assert r.code == 1 and "nope.h5" in one_error_line(r), r
    # an input that is not what the command needs (a dataset given as the model)
    r = locus("train", work / "d.h5", work / "d.h5", "-o", out, "--quiet")
    assert r.code == 1 and "d.h5" in one_error_line(r), r
    # a damaged input: a truncated checkpoint
    bad = tmp_path / "bad.h5"
    bad.write_bytes((work / "m.h5").read_bytes()[:600])
    r = locus("eval", bad, work / "d.h5")
    assert r.code == 1 and "bad.h5" in one_error_line(r), r
    # a file that does not fit the flags' meaning: a split the dataset does not have
    r = locus("eval", work / "m.h5", work / "d.h5", "--split", "nosuch")
    assert r.code == 1 and "nosuch" in one_error_line(r), r
    # an output that cannot be written
    os.makedirs(tmp_path / "ro")
    os.chmod(tmp_path / "ro", 0o500)
    try:
        if not os.access(tmp_path / "ro", os.W_OK):    # (root writes anywhere)
            r = locus("init", "--preset", "mlp", "--hidden", "4", "--data", work / "d.h5", "-o", tmp_path / "ro" / "m.h5")
            assert r.code == 1 and "ro/m.h5" in one_error_line(r), r
    finally:
        os.chmod(tmp_path / "ro", 0o700)
    assert not out.exists()


def test_findings_exit_1_and_success_0(locus, work, tmp_path):
    assert locus("validate", FIXTURES / "checkpoint.h5").code == 0
    assert locus("train", "--help").code == 0
    assert locus("--version").code == 0
    bad = tmp_path / "invalid.h5"
    bad.write_bytes((work / "m.h5").read_bytes())
    with h5py.File(bad, "r+") as f:
        del f.attrs["encoding-version"]
    r = locus("validate", bad)
    assert r.code == 1 and "encoding-version" in r.out, r
