"""A mutation fuzzer over every artifact kind and the commands that read them.

Each case takes a valid artifact, damages it one way (bit flips, a run of random bytes, truncation,
a zeroed range, a planted size: a large little-endian integer where HDF5 keeps lengths and
addresses), runs one `locus` command on it with a time limit, and classifies the outcome:
  ok      the command succeeded (the damage hit nothing it reads, or nothing it checks)
  error   exit status 1 and one line on stderr naming the damaged file — what Locus promises
  crash   killed by a signal or a Swift trap
  hang    no answer within the time limit
  other   any other failure shape (several lines, no file named, unexpected status)
Deterministic for a given --seed. Usage:
  python3 interop/tests/fuzz_artifacts.py --locus .build/release/locus --cases 10000 --seed 1 --save-crashes DIR
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TRAP_MARKERS = ("Fatal error", "Program crashed", "Illegal instruction", "Segmentation fault", "Bad pointer")


def build_corpus(locus, work):
    """Valid artifacts of every kind: the h5py-written fixtures and a Locus-written MLP pipeline."""
    def run(*args):
        r = subprocess.run([locus, *map(str, args)], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            sys.exit(f"corpus: locus {' '.join(map(str, args))} failed:\n{r.stderr}")
    data = work / "d.h5"
    run("data", "import", REPO / "fixtures" / "data" / "digits.csv.gz", "-o", data)
    run("init", "--preset", "mlp", "--hidden", "16", "--data", data, "-o", work / "base.h5")
    run("train", work / "base.h5", data, "--epochs", "1", "--quiet", "-o", work / "ft.h5")
    run("diff", work / "base.h5", work / "ft.h5", "-o", work / "tau.h5")
    run("diff", work / "base.h5", work / "ft.h5", "--density", "0.05", "-o", work / "tau-sparse.h5")
    run("score", work / "base.h5", data, "--quiet", "-o", work / "scores.h5")
    run("mask", work / "base.h5", data, "--density", "0.1", "--quiet", "-o", work / "mask.h5")
    return {
        "checkpoint": work / "base.h5", "task-vector": work / "tau.h5", "task-vector-sparse": work / "tau-sparse.h5",
        "scores": work / "scores.h5", "mask": work / "mask.h5", "dataset": data,
        "fixture-checkpoint": REPO / "fixtures" / "h5py" / "checkpoint.h5",
        "fixture-scores": REPO / "fixtures" / "h5py" / "scores.h5",
        "fixture-mask": REPO / "fixtures" / "h5py" / "mask.h5",
        "fixture-task-vector": REPO / "fixtures" / "h5py" / "task_vector.h5",
        "fixture-dataset": REPO / "fixtures" / "h5py" / "dataset.h5",
        "fixture-vit": REPO / "fixtures" / "h5py" / "vit_checkpoint.h5",
    }


def commands(kind, bad, clean, out):
    """The commands that read an artifact of `kind`, with the damaged file `bad` in its place."""
    c = clean
    base = ["inspect", bad], ["validate", bad], ["inspect", bad, "--verify"]
    if "checkpoint" in kind or kind == "fixture-vit":
        extra = [["inspect", bad, "--stats"]]
        if not kind.startswith("fixture"):
            extra += [["apply", bad, c["task-vector"], "-o", out], ["eval", bad, c["dataset"], "--split", "val"],
                      ["train", bad, c["dataset"], "--epochs", "1", "--quiet", "-o", out],
                      ["diff", bad, c["checkpoint"], "-o", out]]
        return [*base, *extra]
    if kind.startswith("task-vector"):
        return [*base, ["apply", c["checkpoint"], bad, "-o", out], ["merge", c["checkpoint"], bad, "--method", "ties", "-o", out],
                ["apply", "--verify", c["checkpoint"], bad, "-o", out], ["compare", bad, c["task-vector"]]]
    if kind == "scores":
        return [*base, ["mask", c["checkpoint"], "--from-scores", bad, "--density", "0.1", "-o", out]]
    if kind == "mask":
        return [*base, ["finetune", c["checkpoint"], c["dataset"], "--mask", bad, "--epochs", "1", "--quiet", "-o", out],
                ["compare", bad, c["mask"]]]
    if kind == "dataset":
        return [*base, ["eval", c["checkpoint"], bad, "--split", "val"], ["train", c["checkpoint"], bad, "--epochs", "1", "--quiet", "-o", out]]
    return list(base)


def mutate(blob, rng):
    b = bytearray(blob)
    how = rng.choice(["flip", "run", "truncate", "zero", "plant"])
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b)); b[i] ^= 1 << rng.randrange(8)
    elif how == "run":
        i = rng.randrange(len(b)); n = rng.randint(1, 64)
        b[i:i + n] = bytes(rng.randrange(256) for _ in range(min(n, len(b) - i)))
    elif how == "truncate":
        del b[rng.randrange(1, len(b)):]
    elif how == "zero":
        i = rng.randrange(len(b)); n = rng.randint(1, 4096)
        b[i:i + n] = bytes(min(n, len(b) - i))
    else:
        i = rng.randrange(max(1, len(b) - 8))
        v = rng.choice([2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, len(b) * rng.randint(2, 1000), rng.getrandbits(40)])
        width = rng.choice([4, 8])
        b[i:i + width] = (v % (1 << (8 * width))).to_bytes(width, "little")
    return bytes(b), how


def classify(r, bad, timed_out, validate=False, verify_report=False):
    if timed_out:
        return "hang"
    if r.returncode < 0 or any(m in r.stderr for m in TRAP_MARKERS):
        return "crash"
    if r.returncode == 0:
        return "ok"
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("locus: note: ")]   # notes: files without digests
    if r.returncode == 1 and len(lines) == 1 and lines[0].startswith("locus: error: "):
        return "error"   # naming the damaged file, or the output and tensor a damaged value made overflow
    if verify_report and r.returncode == 1 and "MISMATCH" in r.stdout and not lines:
        return "error"   # `inspect --verify`: the report on stdout names each mismatched object
    if validate:   # one '<file>: <object>: <message>' line per violation on stdout
        found = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        if r.returncode == 1 and found and all(ln.startswith(str(bad)) or ln.startswith("warning: ") for ln in found):
            return "error"
    return "other"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locus", default=str(REPO / ".build" / "debug" / "locus"))
    ap.add_argument("--cases", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--save-crashes", help="copy every crashing or hanging input here")
    ap.add_argument("--json", help="write the counts as JSON here")
    a = ap.parse_args(argv)
    rng = random.Random(a.seed)
    work = Path(tempfile.mkdtemp(prefix="locus-fuzz-"))
    try:
        clean = build_corpus(a.locus, work)
        blobs = {k: Path(p).read_bytes() for k, p in clean.items()}
        counts, by_kind, bad_cases = Counter(), defaultdict(Counter), []
        for i in range(a.cases):
            kind = rng.choice(sorted(blobs))
            data, how = mutate(blobs[kind], rng)
            bad = work / f"case-{kind}.h5"
            bad.write_bytes(data)
            out = work / "out.h5"
            args = rng.choice(commands(kind, bad, clean, out))
            try:
                r = subprocess.run([a.locus, *map(str, args)], capture_output=True, text=True, timeout=a.timeout,
                                   stdin=subprocess.DEVNULL, errors="replace")
                outcome = classify(r, bad, False, validate=args[0] == "validate", verify_report=args[:3] == ["inspect", bad, "--verify"])
            except subprocess.TimeoutExpired:
                r, outcome = None, "hang"
            counts[outcome] += 1
            by_kind[kind][outcome] += 1
            if outcome in ("crash", "hang", "other"):
                bad_cases.append({"case": i, "kind": kind, "mutation": how, "command": [str(x) for x in args[:1]],
                                  "outcome": outcome, "stderr": (r.stderr[-400:] if r else "")})
                if a.save_crashes and outcome != "other":
                    Path(a.save_crashes).mkdir(parents=True, exist_ok=True)
                    shutil.copy(bad, Path(a.save_crashes) / f"{outcome}-{i:05d}-{kind}-{args[0]}.h5")
            for p in work.glob("out.h5"):
                p.unlink()
        print(f"{a.cases} cases, seed {a.seed}: " + ", ".join(f"{k} {counts[k]}" for k in ["ok", "error", "crash", "hang", "other"]))
        for kind in sorted(by_kind):
            print(f"  {kind:22s} " + ", ".join(f"{k} {v}" for k, v in sorted(by_kind[kind].items())))
        for c in bad_cases[:20]:
            print(f"  case {c['case']} {c['kind']} {c['mutation']} {c['command'][0]}: {c['outcome']}: {c['stderr'].strip()[:200]!r}")
        if a.json:
            Path(a.json).write_text(json.dumps({"counts": counts, "by_kind": by_kind, "bad": bad_cases}, indent=1))
        return 0 if counts["crash"] == 0 and counts["hang"] == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
