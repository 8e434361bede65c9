"""interop/python is an installable distribution (locus-h5): pip installs it into a fresh directory,
and the installed package (core and torch bridge) imports from there with the spec's version."""
import os
import re
import subprocess
import sys

from conftest import REPO, SPEC

PKG = REPO / "interop" / "python"


def test_pip_install_and_import(tmp_path):
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(PKG)], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (target / "locus_h5" / "__init__.py").is_file() and (target / "locus_h5" / "torch.py").is_file()
    assert (target / "locus_h5" / "py.typed").is_file()
    code = ("import locus_h5, locus_h5.torch as lt, sys; "
            "print(locus_h5.__file__); print(locus_h5.__version__); print(lt.TaLoSScorer.__name__); "
            "print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0].startswith(str(target)), f"imported {lines[0]}, not the installed copy"
    spec_version = re.search(r"version (\d+\.\d+)", SPEC.read_text()).group(1)
    assert lines[1].rsplit(".", 1)[0] == spec_version, f"package {lines[1]} vs spec {spec_version}"
    toml = (PKG / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', toml, re.M).group(1) == lines[1]


def test_core_imports_without_torch(tmp_path):
    """`import locus_h5` never imports torch (the bridge is an optional extra)."""
    code = "import sys; sys.path.insert(0, %r); import locus_h5; print('torch' in sys.modules)" % str(PKG)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stdout + out.stderr
