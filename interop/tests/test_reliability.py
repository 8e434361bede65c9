"""Reliability: inputs are never clobbered, replaced files keep their mode, links are written
through, non-regular files are refused at once, a full disk ends in one error line (never a crash),
several outputs are published all or none, and stale temporaries of dead writers are removed.

The rules are spec/FORMAT.md §7. The full-disk cases mount a small tmpfs and so need root; they
skip with a message otherwise (CI runs as root)."""
import os
from pathlib import Path
import socket
import stat
import subprocess

import h5py
import pytest

from conftest import assert_error, assert_ok, make_mlp_pipeline, snapshot

DIGITS = __import__("conftest").REPO / "fixtures" / "data" / "digits.csv.gz"


@pytest.fixture(scope="module")
def workdir(locus, tmp_path_factory):
    return make_mlp_pipeline(locus, tmp_path_factory.mktemp("rel"))


def digest(path):
    with open(path, "rb") as fh:
        return fh.read()


# ------------------------------------------------------------------ inputs are sacred

def test_output_naming_an_input_is_refused(locus, workdir):
    d = workdir
    os.symlink(d / "tau.h5", d / "tau-link.h5")
    os.link(d / "tau.h5", d / "tau-hard.h5")
    before = {p: digest(d / p) for p in ["tau.h5", "d.h5", "base.h5", "ft.h5", "mask.h5"]}
    cases = [
        (["merge", d / "base.h5", d / "tau.h5", "-o", d / "tau.h5"], d / "tau.h5"),
        (["merge", d / "base.h5", d / "tau.h5", "-o", d / "tau-link.h5"], d / "tau-link.h5"),
        (["apply", d / "base.h5", d / "tau.h5", "-o", d / "tau-hard.h5"], d / "tau-hard.h5"),
        (["score", d / "base.h5", d / "d.h5", "--quiet", "-o", d / "d.h5"], d / "d.h5"),
        (["diff", d / "base.h5", d / "ft.h5", "-o", f"{d}/./sub/../base.h5"], None),
        (["diff", d / "base.h5", d / "ft.h5", "-o", f"{d}/../{d.name}/ft.h5"], None),
        (["mask", d / "base.h5", "--from-scores", d / "mask.h5", "--density", "0.1", "-o", d / "mask.h5"], d / "mask.h5"),
        (["finetune", d / "base.h5", d / "d.h5", "--mask", d / "mask.h5", "--quiet", "-o", d / "x.h5", "--task-vector", d / "x.h5"], d / "x.h5"),
        (["finetune", d / "base.h5", d / "d.h5", "--mask", d / "mask.h5", "--quiet", "-o", d / "base.h5", "--task-vector", d / "t.h5"], d / "base.h5"),
    ]
    for args, named in cases:
        r = locus(*args)
        assert r.code != 0, repr(r)
        if named is not None:
            assert_error(r, named)
    for p, content in before.items():
        assert digest(d / p) == content, f"{p} was changed"
    assert not (d / "x.h5").exists() and not (d / "t.h5").exists()


def test_documented_in_place_rewrite_keeps_mode(locus, workdir):
    d = workdir
    m = d / "private.h5"
    m.write_bytes(digest(d / "ft.h5"))
    os.chmod(m, 0o600)
    assert_ok(locus("train", m, d / "d.h5", "--epochs", "1", "--quiet", "-o", m))
    assert stat.S_IMODE(os.stat(m).st_mode) == 0o600
    g = d / "group.h5"
    g.write_bytes(b"old")
    os.chmod(g, 0o640)
    assert_ok(locus("apply", d / "base.h5", d / "tau.h5", "-o", g))
    assert stat.S_IMODE(os.stat(g).st_mode) == 0o640


def test_writing_to_a_symlink_replaces_its_target(locus, workdir):
    d = workdir
    os.symlink("real-target.h5", d / "out-link.h5")          # dangling: the output creates it
    assert_ok(locus("apply", d / "base.h5", d / "tau.h5", "-o", d / "out-link.h5"))
    assert os.path.islink(d / "out-link.h5") and os.readlink(d / "out-link.h5") == "real-target.h5"
    assert (d / "real-target.h5").is_file()
    assert_ok(locus("validate", d / "out-link.h5"))


def test_non_regular_files_fail_at_once(locus, workdir):
    d = workdir
    fifo = d / "fifo.h5"
    os.mkfifo(fifo)
    for args in (["inspect", fifo], ["validate", fifo], ["apply", d / "base.h5", fifo, "-o", d / "y.h5"],
                 ["apply", d / "base.h5", d / "tau.h5", "-o", fifo], ["data", "import", fifo, "-o", d / "y.h5"]):
        r = locus(*args, timeout=20)   # a hang fails the test through the timeout
        assert r.code != 0, repr(r)
        assert "FIFO" in r.err or "not a regular file" in r.err or "valid" not in r.out, repr(r)
    assert not (d / "y.h5").exists()


# ------------------------------------------------------------------ litter

def test_stale_temporaries_of_dead_writers_are_removed(locus, workdir, tmp_path):
    host = "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname())
    dead = subprocess.Popen(["true"]); dead.wait()          # a pid that no longer runs
    stale = tmp_path / f".a.h5.locus-tmp-{host}-{dead.pid}-1f"
    alive = tmp_path / f".b.h5.locus-tmp-{host}-{os.getpid()}-2f"
    other = tmp_path / f".c.h5.locus-tmp-otherhost-{dead.pid}-3f"
    for p in (stale, alive, other):
        p.write_bytes(b"x")
    assert_ok(locus("apply", workdir / "base.h5", workdir / "tau.h5", "-o", tmp_path / "out.h5"))
    assert not stale.exists(), "a dead writer's temporary file was left"
    assert alive.exists() and other.exists(), "a live or foreign temporary file was removed"


# ------------------------------------------------------------------ full disk

@pytest.fixture
def full_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the full-disk cases mount a tmpfs, which needs root")
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        (mnt / "existing.h5").write_bytes(b"old contents")
        os.chmod(mnt / "existing.h5", 0o600)
        with open(mnt / "filler", "wb") as fh:           # leave one 4 KiB page free
            fh.write(b"\0" * (248 * 1024))
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_full_disk_gives_one_clean_error(locus, workdir, full_disk):
    d, f = workdir, full_disk
    if not (d / "big.h5").exists():
        assert_ok(locus("init", "--preset", "mlp", "--hidden", "512,512", "--data", d / "d.h5", "-o", d / "big.h5"))
    scenarios = {
        "convert": ["convert", d / "big.h5", f / "a.safetensors"],
        "merge": ["merge", d / "base.h5", d / "tau.h5", "-o", f / "existing.h5"],
        "apply": ["apply", d / "base.h5", d / "tau.h5", "-o", f / "b.h5"],
        "diff": ["diff", d / "base.h5", d / "ft.h5", "-o", f / "c.h5"],
        "train": ["train", d / "base.h5", d / "d.h5", "--epochs", "1", "--quiet", "-o", f / "e.h5"],
        "finetune": ["finetune", d / "base.h5", d / "d.h5", "--mask", d / "mask.h5", "--quiet", "-o", d / "ft-full.h5",
                     "--task-vector", f / "g.h5"],
        "score": ["score", d / "base.h5", d / "d.h5", "--quiet", "-o", f / "h.h5"],
        "mask": ["mask", d / "base.h5", d / "d.h5", "--density", "0.1", "--quiet", "-o", f / "i.h5"],
        "data import": ["data", "import", DIGITS, "-o", f / "j.h5"],
        "init": ["init", "--preset", "mlp", "--hidden", "512,512", "--data", d / "d.h5", "-o", f / "k.h5"],
        "merge tall": ["merge", d / "base.h5", d / "tau.h5", "--method", "tall", "--tall-dir", f, "-o", d / "tall-merged.h5"],
    }
    before = snapshot(f)
    for name, args in scenarios.items():
        r = locus(*args)
        line = assert_error(r, args[-1] if name != "merge tall" else f)
        assert "No space left on device" in line, f"{name}: {line}"
        assert ".locus-tmp-" not in line, f"{name}: the error names the temporary file: {line}"
        assert snapshot(f) == before, f"{name}: left {sorted(snapshot(f) - before)}"
    assert (f / "existing.h5").read_bytes() == b"old contents"
    assert stat.S_IMODE(os.stat(f / "existing.h5").st_mode) == 0o600
    # Two outputs, one of them on the full disk: neither is published.
    assert not (d / "ft-full.h5").exists() and not (d / "tall-merged.h5").exists()


# ------------------------------------------------------------------ concurrent readers

def test_reader_sees_old_or_new_file_never_a_mixture(locus, workdir):
    """`validate` recomputes the fingerprint from the data: metadata of one file with data of the
    other fails it. Another thread keeps atomically replacing the path with one of two checkpoints."""
    import threading
    d = workdir
    a, b = d / "swap-a.h5", d / "swap-b.h5"
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "256,256", "--data", d / "d.h5", "-o", a))
    assert_ok(locus("train", a, d / "d.h5", "--epochs", "1", "--quiet", "-o", b))
    target = d / "swapped.h5"
    target.write_bytes(a.read_bytes())
    blobs = [a.read_bytes(), b.read_bytes()]
    stop, rewrites = threading.Event(), [0]

    def swap():
        while not stop.is_set():
            tmp = d / f".swap-{rewrites[0] % 2}"
            tmp.write_bytes(blobs[rewrites[0] % 2])
            os.replace(tmp, target)
            rewrites[0] += 1

    t = threading.Thread(target=swap)
    t.start()
    try:
        reads = int(os.environ.get("LOCUS_RELIABILITY_READS", "60"))
        failures = [r for r in (locus("validate", target) for _ in range(reads)) if r.code != 0]
    finally:
        stop.set()
        t.join()
    assert rewrites[0] >= 10, f"only {rewrites[0]} rewrites happened during the reads"
    assert not failures, f"{len(failures)} of {reads} reads saw a mixture:\n{failures[0]!r}"


# ------------------------------------------------------------------ damaged files

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"


@pytest.mark.parametrize("case", sorted(p.name for p in CORPUS.glob("*.h5")))
def test_damaged_files_found_by_the_fuzzer_fail_cleanly(locus, workdir, case, tmp_path):
    """Each file once crashed libhdf5 (a corrupt global heap: null-pointer reads, endless loops) or
    recursed forever (a group link pointing up the tree); now each is one clean error line."""
    bad = CORPUS / case
    command = case.rsplit("-", 1)[1].removesuffix(".h5")
    args = {"apply": ["apply", workdir / "base.h5", bad, "-o", tmp_path / "o.h5"],
            "merge": ["merge", workdir / "base.h5", bad, "-o", tmp_path / "o.h5"],
            "train": ["train", workdir / "base.h5", bad, "--quiet", "-o", tmp_path / "o.h5"],
            "finetune": ["finetune", workdir / "base.h5", workdir / "d.h5", "--mask", bad, "--quiet", "-o", tmp_path / "o.h5"],
            "mask": ["mask", workdir / "base.h5", "--from-scores", bad, "--density", "0.1", "-o", tmp_path / "o.h5"],
            "verify": ["inspect", bad, "--verify"],
            }.get(command, [command, bad])
    r = locus(*args, timeout=20)
    assert r.code == 1, repr(r)
    lines = [ln for ln in (r.out + r.err).splitlines() if ln.strip()]
    assert lines and all(str(bad) in ln for ln in lines if "warning" not in ln), repr(r)
    assert not (tmp_path / "o.h5").exists()


def test_fuzzer_finds_no_crash_or_hang(locus_bin):
    """A short fixed-seed run of interop/tests/fuzz_artifacts.py (`make reliability` runs 10 000)."""
    import fuzz_artifacts
    assert fuzz_artifacts.main(["--locus", str(locus_bin), "--cases", "150", "--seed", "11", "--timeout", "20"]) == 0


# ------------------------------------------------------------------ data corruption

def _stored_bytes(ds):
    """spec §1.8: the dataset's bytes as stored (file type as memory type)."""
    import numpy as np
    a = np.empty(ds.shape, dtype=f"V{ds.id.get_type().get_size()}")
    ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, a, mtype=ds.id.get_type())
    return a.tobytes()


def _contiguous_data(path):
    """(object path, file offset, byte count) of every contiguous dataset under /tensors with a digest."""
    out = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and "digest" in obj.attrs and obj.id.get_offset() is not None and obj.id.get_storage_size() > 0:
                out.append(("/tensors/" + name, obj.id.get_offset(), obj.id.get_storage_size()))
        f["tensors"].visititems(visit)
    return out


def test_digests_follow_the_spec_snippet(workdir):
    from conftest import tensor_digest
    for artifact in ("tau.h5", "scores.h5"):
        with h5py.File(workdir / artifact, "r") as f:
            seen = []
            f["tensors"].visititems(lambda n, o: seen.append(o) if isinstance(o, h5py.Dataset) else None)
            assert seen and all("digest" in ds.attrs for ds in seen), artifact
            for ds in seen:
                assert ds.attrs["digest"] == "sha256:" + tensor_digest(_stored_bytes(ds)).hex(), ds.name


@pytest.mark.parametrize("kind", ["scores", "task-vector"])
def test_every_flipped_data_bit_is_reported_with_its_dataset(locus, workdir, kind, tmp_path):
    d = workdir
    src = d / ("scores.h5" if kind == "scores" else "tau.h5")
    regions = _contiguous_data(src)
    assert regions, f"{src} has no contiguous data with a digest"
    blob = src.read_bytes()
    rng = __import__("random").Random(5)
    flips = int(os.environ.get("LOCUS_RELIABILITY_FLIPS", "40"))
    for k in range(flips):
        obj, offset, size = regions[rng.randrange(len(regions))]
        at = offset + rng.randrange(size)
        b = bytearray(blob)
        b[at] ^= 1 << rng.randrange(8)
        bad = tmp_path / f"flip-{k}.h5"
        bad.write_bytes(bytes(b))
        r = locus("validate", bad)
        assert r.code == 1, f"flip {k} at byte {at} of {obj} passed validation:\n{r!r}"
        assert any(obj.split("/tensors/")[1].split("/")[0] in ln and "digest" in ln for ln in r.out.splitlines()), \
            f"flip {k} at byte {at}: no digest finding names {obj}:\n{r!r}"
        bad.unlink()


def test_stale_temporary_folders_are_removed_too(locus, workdir, tmp_path):
    """A killed folder output (`convert M out/`) leaves a temporary directory; the next writer removes it."""
    host = "".join(c if c.isalnum() or c == "." else "_" for c in socket.gethostname())
    dead = subprocess.Popen(["true"]); dead.wait()
    stale = tmp_path / f".out.locus-tmp-{host}-{dead.pid}-4f"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert_ok(locus("convert", workdir / "base.h5", f"{tmp_path}/out/"))   # the trailing / asks for a folder
    assert not stale.exists(), "a dead writer's temporary folder was left"
    assert (tmp_path / "out").is_dir() and not [p for p in tmp_path.iterdir() if ".locus-tmp-" in p.name]
