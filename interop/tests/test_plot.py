"""`locus inspect FILE --plot OUT.svg` on the h5py fixtures: the SVG parses with xml.etree and shows one
row per tensor with the numbers the fixture holds; kinds without a plot fail with one clear line."""
import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import h5py
import numpy as np
import pytest

from conftest import FIXTURES, assert_error, assert_ok, snapshot

SVG = "{http://www.w3.org/2000/svg}"


def plot(locus, tmp_path, fixture, *extra):
    out = tmp_path / (fixture.replace(".h5", ".svg"))
    r = assert_ok(locus("inspect", FIXTURES / fixture, "--plot", out, *extra))
    assert f"plot written to {out}" in r.out
    assert not [p for p in tmp_path.iterdir() if "locus-tmp" in p.name], "temporary file left behind"
    root = ET.parse(out).getroot()
    assert root.tag == SVG + "svg"
    assert float(root.get("width")) == 960 and float(root.get("height")) > 100
    return out, root


def rows(root):
    return {g.get("data-name"): g for g in root.iter(SVG + "g") if g.get("class") == "tensor"}


def text_of(g, cls):
    return [t.text for t in g.iter(SVG + "text") if t.get("class") == cls]


def pct(x):
    """Inspector's percentage: one decimal place, halves rounded away from zero."""
    return f"{math.floor(x * 100 * 10 + 0.5) / 10:.1f}%"


def test_mask_plot(locus, tmp_path):
    _, root = plot(locus, tmp_path, "mask.h5")
    with h5py.File(FIXTURES / "mask.h5") as f:
        expected = {unquote(k): (int(ds.attrs["ones"]), int(ds.attrs["count"])) for k, ds in f["tensors"].items()}
        total_ones, total = int(f.attrs["ones"]), int(f.attrs["count"])
    r = rows(root)
    assert set(r) == set(expected)
    assert sum(1 for e in root.iter(SVG + "rect") if e.get("class") == "bar") == len(expected)
    widths = {}
    for name, (ones, count) in expected.items():
        assert text_of(r[name], "count") == [f"{ones}/{count}"]
        assert text_of(r[name], "percent") == ["empty" if count == 0 else pct(ones / count)]
        bar = [e for e in r[name].iter(SVG + "rect") if e.get("class") == "bar"]
        assert len(bar) == 1
        widths[name] = (float(bar[0].get("width")), ones / count if count else 0)
    full = max(w for w, d in widths.values() if d == 1)
    for w, d in widths.values():
        assert w == pytest.approx(full * d, abs=0.2)
    assert any(t.text == f"overall {pct(total_ones / total)}" for t in root.iter(SVG + "text"))
    assert any(e.get("class") == "overall" for e in root.iter(SVG + "line"))


def test_task_vector_plot(locus, tmp_path):
    _, root = plot(locus, tmp_path, "task_vector.h5")
    with h5py.File(FIXTURES / "task_vector.h5") as f:
        expected = {unquote(k): (int(g.attrs["nnz"]), int(g.attrs["count"])) for k, g in f["tensors"].items()}
    r = rows(root)
    assert set(r) == set(expected)
    for name, (nnz, count) in expected.items():
        assert text_of(r[name], "count") == [f"{nnz}/{count}"]
        assert text_of(r[name], "percent") == [pct(nnz / count)]


def test_scores_plot(locus, tmp_path):
    _, root = plot(locus, tmp_path, "scores.h5")
    with h5py.File(FIXTURES / "scores.h5") as f:
        values = {unquote(k): ds[()].ravel() for k, ds in f["tensors"].items()}
    everything = np.concatenate(list(values.values()))
    r = rows(root)
    assert set(r) == set(values)
    bins = [e for e in root.iter(SVG + "rect") if e.get("class") == "bin"]
    assert len(bins) == 41, "40 bins over the non-zero range and one '= 0' bar"
    boxes = [g for g in root.iter(SVG + "g") if g.get("class") == "box"]
    assert len(boxes) == sum(1 for v in values.values() if v.size)
    zeros, positive = int((everything == 0).sum()), int((everything > 0).sum())
    sub = f"{everything.size} values in {len(values)} tensors: {zeros} zero"
    assert any(t.text and t.text.startswith(sub) and f"{positive} non-zero" in t.text for t in root.iter(SVG + "text"))
    # The bin tooltips carry the counts: they add up to the non-zero values, and the zero bar's to the zeros.
    counts = [int(t.text.rsplit(": ", 1)[1].split()[0]) for g in root.iter(SVG + "g") for t in g.findall(SVG + "title")
              if any(e.get("class") == "bin" for e in g.findall(SVG + "rect"))]
    assert sum(counts) == zeros + positive
    # Same histogram computed here: 40 equal bins of log10 over [min>0, max].
    pos = everything[everything > 0].astype(np.float64)
    lo, hi = np.log10(pos.min()), np.log10(pos.max())
    idx = np.clip(((np.log10(pos) - lo) / (hi - lo) * 40).astype(int), 0, 39)
    assert counts[0] == zeros
    assert counts[1:] == np.bincount(idx, minlength=40).tolist()


def test_json_output_stays_json_with_plot(locus, tmp_path):
    out = tmp_path / "m.svg"
    r = assert_ok(locus("inspect", FIXTURES / "mask.h5", "--json", "--plot", out))
    assert r.json()["kind"] == "mask"
    ET.parse(out)


@pytest.mark.parametrize("fixture,kind", [("checkpoint.h5", "checkpoint"), ("dataset.h5", "dataset")])
def test_no_plot_for_other_kinds(locus, tmp_path, fixture, kind):
    before = snapshot(tmp_path)
    out = tmp_path / "x.svg"
    r = locus("inspect", FIXTURES / fixture, "--plot", out)
    line = assert_error(r, FIXTURES / fixture)
    assert f"no plot for kind {kind}" in line
    assert r.out == ""
    assert snapshot(tmp_path) == before


def test_plot_renders_to_png(locus, tmp_path):
    """Rendered by a real SVG renderer when one is installed (rsvg-convert or ImageMagick)."""
    out, _ = plot(locus, tmp_path, "scores.h5")
    png = tmp_path / "scores.png"
    if shutil.which("rsvg-convert"):
        cmd = ["rsvg-convert", str(out), "-o", str(png)]
    elif shutil.which("convert") and subprocess.run(["convert", "-version"], capture_output=True, text=True).stdout.startswith("Version: ImageMagick"):
        cmd = ["convert", str(out), str(png)]
    else:
        pytest.skip("no SVG renderer (rsvg-convert or ImageMagick convert)")
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == 960
