"""The stock HDF5 1.10 tools read every Locus-written kind (libver bounds, types, escaping)."""
import subprocess

import numpy as np
import pytest

from conftest import SMALL, h5dump_values, locus_h5

KINDS = ["base", "scores", "mask", "task-vector"]


@pytest.mark.parametrize("kind", KINDS)
def test_h5dump_and_h5ls_read_locus_files(converted, kind):
    path = str(converted[kind])
    for cmd in (["h5dump", path], ["h5ls", "-r", path]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}"
        assert "error" not in p.stderr.lower(), p.stderr[-2000:]


@pytest.mark.parametrize("name", ["small.f32", "small.f16", "small.bf16"])
def test_h5dump_prints_float_values(converted, name):
    assert h5dump_values(converted["base"], f"/tensors/{name}") == SMALL


def test_h5dump_escaped_name_and_scalar(converted):
    assert h5dump_values(converted["base"], "/tensors/weird%2Fna.me%25") == [3.0]
    assert h5dump_values(converted["base"], "/tensors/scale") == [0.75]


def test_h5dump_task_vector_bfloat16_values(converted):
    want = locus_h5.bits_to_float32(locus_h5.bf16_bits(converted["numpy"]["task-vector"]["tv.bf"]))
    got = h5dump_values(converted["task-vector"], "/tensors/tv.bf/values")
    np.testing.assert_allclose(got, want[want != 0], rtol=1e-5)   # h5dump prints 6 significant digits
