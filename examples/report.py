#!/usr/bin/env python3
"""Turns the demo's results.jsonl into results.md (tables) and density.svg (standard library only).

Normalized accuracy of a merge = the mean over tasks of (merged test accuracy / that task's own
fine-tuned test accuracy), with each family normalized by its own single-task models.
"""
import json, os, sys
from collections import defaultdict

res_path, out = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(res_path) if l.strip()]
base = next(r for r in rows if r["kind"] == "base")
model = next((r["description"] for r in rows if r["kind"] == "model"), "MLP 784-256-256")
heads = {r["task"]: r["test"] for r in rows if r["kind"] == "heads-only"}
single = {(r["family"], r["density"], r["task"]): r for r in rows if r["kind"] == "single"}
merged = {r["name"]: r for r in rows if r["kind"] == "merged"}
tasks = list(heads)
mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
pct = lambda x: f"{100 * x:.1f}"

def family_row(label, fam, dens, merge_name):
    s = [single[(fam, dens, t)]["test"] for t in tasks]
    m = merged.get(merge_name)
    mt = [m["test"][t] for t in tasks] if m else []
    norm = [a / b for a, b in zip(mt, s)] if m else []
    tv = mean([single[(fam, dens, t)]["tv_bytes"] for t in tasks])
    return label, s, mt, norm, (m or {}).get("alpha"), tv

lines = ["# TaLoS demo results", "",
         f"Base: {model} pre-trained on Fashion-MNIST, {pct(base['fashion_test'])} % Fashion-MNIST test accuracy. "
         f"Tasks: {', '.join(tasks)}. Test accuracy in %, each method's learning rate chosen on validation, "
         "α chosen on validation by average normalized accuracy.", ""]
fams = [("TaLoS mask 10 %", "talos", 0.1, "talos-0.1"), ("random mask 10 %", "random", 0.1, "random-0.1"),
        ("highest-score mask 10 %", "highest", 0.1, "highest-0.1"), ("dense fine-tuning", "dense", 1, "dense")]
header = "| method | " + " | ".join(f"{t} single / merged" for t in tasks) + " | avg single | avg merged | normalized | α | task-vector bytes |"
lines += [header, "|" + "---|" * (header.count("|") - 1)]
dense_bytes = None
for label, fam, d, mname in fams:
    label, s, mt, norm, alpha, tv = family_row(label, fam, d, mname)
    if fam == "dense": dense_bytes = tv
    cells = [f"{pct(a)} / {pct(b)}" for a, b in zip(s, mt)]
    lines.append(f"| {label} | " + " | ".join(cells) + f" | {pct(mean(s))} | {pct(mean(mt))} | {mean(norm):.3f} | {alpha} | {tv:,.0f} |")
lines.append(f"| heads only (α = 0) | " + " | ".join(f"{pct(heads[t])}" for t in tasks) + f" | {pct(mean(list(heads.values())))} | | | | |")
for name, label in [("ties-dense", "TIES on the dense vectors"), ("consensus-talos-0.1", "consensus (TALL k=2) on TaLoS vectors")]:
    if name in merged:
        m = merged[name]; fam, d = ("dense", 1) if "dense" in name else ("talos", 0.1)
        mt = [m["test"][t] for t in tasks]; s = [single[(fam, d, t)]["test"] for t in tasks]
        lines.append(f"| {label} | " + " | ".join(f"– / {pct(x)}" for x in mt) + f" | | {pct(mean(mt))} | {mean([a / b for a, b in zip(mt, s)]):.3f} | {m['alpha']} | |")
lines.append("")

# density sweep
sweep = defaultdict(dict)
for (fam, d, t), r in single.items():
    if fam in ("talos", "random"): sweep[fam].setdefault(d, {})[t] = r["test"]
lines += ["## Density sweep", "", "| mask | density | avg single | merged abs | merged normalized |", "|---|---|---|---|---|"]
points = defaultdict(list)
for fam in ("talos", "random"):
    for d in sorted(sweep[fam]):
        s = [sweep[fam][d][t] for t in tasks if t in sweep[fam][d]]
        m = merged.get(f"{fam}-{d}")
        if not m or len(s) != len(tasks): continue
        mt = [m["test"][t] for t in tasks]
        norm = mean([a / b for a, b in zip(mt, s)])
        points[fam].append((d, mean(s), mean(mt), norm))
        lines.append(f"| {fam} | {d} | {pct(mean(s))} | {pct(mean(mt))} | {norm:.3f} |")
lines.append("")

# negation
neg = [r for r in rows if r["kind"] == "negation"]
if neg:
    lines += ["## Task negation (MNIST vector subtracted; Fashion-MNIST control must keep ≥ 95 % of the base)", "",
              "| vector | α | MNIST val accuracy | Fashion val accuracy | control kept? |", "|---|---|---|---|---|"]
    for r in neg:
        ok = r["control_val"] >= 0.95 * r["control_base_test"]
        lines.append(f"| {r['family']} | {r['alpha']} | {pct(r['target_val'])} | {pct(r['control_val'])} | {'yes' if ok else 'no'} |")
    for fam in sorted({r["family"] for r in neg}):
        ok = [r for r in neg if r["family"] == fam and r["control_val"] >= 0.95 * r["control_base_test"]]
        if ok:
            b = min(ok, key=lambda r: r["target_val"])
            lines.append(f"\nBest {fam} negation: α = {b['alpha']}, MNIST {pct(b['target_val'])} % with Fashion-MNIST at {pct(b['control_val'])} %.")
    lines.append("")

# SVG: merged normalized and absolute accuracy vs density
W, H, L, R, T, B = 640, 380, 60, 170, 40, 50
ds = sorted({p[0] for v in points.values() for p in v}) or [0.1]
ys = [v for ps in points.values() for p in ps for v in (p[2], p[3])] or [1]
lo, hi = max(0.0, int((min(ys) - 0.02) * 20) / 20), min(1.0, max(ys) + 0.02) if max(ys) <= 1 else max(ys)
x = lambda d: L + (ds.index(d) / max(1, len(ds) - 1)) * (W - L - R)
y = lambda v: T + (1 - (v - lo) / (hi - lo)) * (H - T - B)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       '<rect width="100%" height="100%" fill="white"/>', f'<text x="{L}" y="22" font-size="15">Merged accuracy vs mask density</text>']
for k in range(6):
    v = lo + (hi - lo) * k / 5
    svg.append(f'<line x1="{L}" x2="{W - R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/><text x="{L - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
for d in ds:
    svg.append(f'<text x="{x(d):.1f}" y="{H - B + 18}" text-anchor="middle">{100 * d:g} %</text>')
row = 0
for fam, color in (("talos", "#d62728"), ("random", "#1f77b4")):
    for idx, dash, what in ((3, "", "normalized"), (2, "5 3", "absolute")):
        pts = " ".join(f"{x(p[0]):.1f},{y(p[idx]):.1f}" for p in points.get(fam, []))
        svg.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
        svg.append(f'<line x1="{W - R + 12}" x2="{W - R + 36}" y1="{T + 18 * row}" y2="{T + 18 * row}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>'
                   f'<text x="{W - R + 42}" y="{T + 18 * row + 4}">{fam} {what}</text>')
        row += 1
svg.append("</svg>")
open(os.path.join(out, "density.svg"), "w").write("\n".join(svg) + "\n")
lines += ["Figures: `density.svg` (merged accuracy vs density), `alpha-*.svg` (accuracy vs α per merge).", ""]
open(os.path.join(out, "results.md"), "w").write("\n".join(lines))
print("\n".join(lines))
