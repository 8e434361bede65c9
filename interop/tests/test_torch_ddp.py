"""examples/torch/talos_ddp.py on 2 processes (torchrun, gloo, CPU) against 1 process: the same scores
file (sums within 1e-6, identical sample count), the same mask, task vectors that `locus validate`
accepts and `locus merge` merges. torch is required (no skip)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (fail, not skip, without torch)

import locus_h5
from conftest import REPO, assert_ok, assert_valid

EXAMPLE = REPO / "examples" / "torch" / "talos_ddp.py"


def _run(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def runs(locus, locus_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((3, 20)) * 1.5
    y = np.arange(90) % 3
    x = (centres[y] + rng.standard_normal((90, 20))).astype(np.float32)
    locus_h5.write_dataset(d / "task.h5", x, y, ["a", "b", "c"], {"train": np.arange(70), "test": np.arange(70, 90)})
    assert_ok(locus("init", "--preset", "mlp", "--hidden", "32,16", "--data", d / "task.h5", "--seed", "4", "-o", d / "base.h5"))
    args = [EXAMPLE, d / "base.h5", d / "task.h5", "--batch-size", "16", "--density", "0.2", "--epochs", "2", "--lr", "0.05",
            "--draws", "2", "--seed", "7"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = _run([sys.executable, *args, "--out", d / "one"], env)
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args, "--out", d / "two"], env)
    assert "on 2 process(es)" in two and "on 1 process(es)" in one
    return d


def test_two_processes_write_the_scores_of_one(runs):
    a, b = locus_h5.load(runs / "one" / "scores.h5"), locus_h5.load(runs / "two" / "scores.h5")
    assert a["attrs"]["samples"] == b["attrs"]["samples"] == 70
    assert a["attrs"]["estimator"] == b["attrs"]["estimator"] == "talos" and a["attrs"]["draws"] == b["attrs"]["draws"] == 2
    assert set(a["tensors"]) == set(b["tensors"])
    for k in a["tensors"]:
        ref = a["tensors"][k].astype(np.float64)
        assert np.abs(b["tensors"][k] - ref).max() <= 1e-6 * np.abs(ref).max(), k


def test_two_processes_calibrate_the_same_mask(runs):
    a, b = locus_h5.load(runs / "one" / "mask.h5")["tensors"], locus_h5.load(runs / "two" / "mask.h5")["tensors"]
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert locus_h5.mask_fingerprint(runs / "one" / "mask.h5") == locus_h5.mask_fingerprint(runs / "two" / "mask.h5")


def test_outputs_validate_and_merge(locus, runs, tmp_path):
    files = [runs / w / f for w in ("one", "two") for f in ("scores.h5", "mask.h5", "ft.h5", "tau.h5")]
    assert_valid(locus("validate", *files))
    tau1, tau2 = locus_h5.load(runs / "one" / "tau.h5"), locus_h5.load(runs / "two" / "tau.h5")
    assert tau2["attrs"]["mask-fingerprint"] == locus_h5.mask_fingerprint(runs / "two" / "mask.h5")
    mask = locus_h5.load(runs / "two" / "mask.h5")["tensors"]
    for k, v in tau2["tensors"].items():
        assert not np.any(v[~mask[k]]), f"{k}: τ outside the mask"
        assert np.abs(v - tau1["tensors"][k]).max() <= 1e-4 * np.abs(tau1["tensors"][k]).max(), k
    out = tmp_path / "merged.h5"
    assert_ok(locus("merge", runs / "base.h5", runs / "two" / "tau.h5", runs / "one" / "tau.h5", "-o", out))
    assert_valid(locus("validate", out))
    assert_ok(locus("eval", out, runs / "task.h5", "--split", "test"))
