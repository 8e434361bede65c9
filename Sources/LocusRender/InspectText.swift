import Foundation
import LocusFormat

/// The text renderings of `locus inspect`: the report table and the `--verify` check list.
public enum InspectText {
    /// A compact human-readable rendering.
    public static func report(_ r: InspectReport) -> String {
        var lines: [String] = []
        if r.producer == "-" {
            lines.append("\(r.path): \(r.encodingVersion) checkpoint, \(TextFormat.bytes(r.fileBytes)) on disk (read in place)")
            if r.fingerprint == nil { lines.append("  fingerprint not stored (--stats computes it)") }
        } else {
            lines.append("\(r.path): Locus \(r.kind) (encoding \(r.encodingVersion)), \(TextFormat.bytes(r.fileBytes)) on disk")
            lines.append("  producer \(r.producer), created \(r.created)")
        }
        if let f = r.fingerprint { lines.append("  fingerprint \(f)") }
        if let f = r.baseFingerprint { lines.append("  base        \(f)") }
        if let e = r.estimator { lines.append("  estimator \(e), \(r.samples ?? 0) samples × \(r.draws ?? 1) draws, values are \(r.reduction == "sum" ? "sums" : "means")") }
        if let s = r.scale { lines.append("  scale \(s)") }
        if let a = r.absentTensors { lines.append("  tensors without a mask are \(a)") }
        if let m = r.metadata, !m.isEmpty { lines.append("  metadata " + m.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")) }
        if let p = r.provenance, !p.command.isEmpty { lines.append("  made by: " + p.command.joined(separator: " ")) }
        if let d = r.dataset {
            lines.append("  inputs \(d.inputDtype) \(d.inputShape), \(d.classes.count) classes: \(d.classes.prefix(12).joined(separator: ", "))\(d.classes.count > 12 ? ", …" : "")")
            lines.append("  splits " + d.splits.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
            lines.append("  normalisation (x · \(d.normalization.scale) − \(d.normalization.mean)) / \(d.normalization.std)")
            return lines.joined(separator: "\n")
        }
        var header = ["tensor", "shape", "dtype", "encoding"]
        let kind = r.kind
        switch kind {
        case "mask": header += ["ones", "density"]
        case "task-vector": header += ["nnz", "density", "l2"]
        case "scores": header += ["min", "median", "max"]
        default: if r.tensors.contains(where: { $0.min != nil }) { header += ["min", "max", "mean"] }
        }
        header += ["on disk", "ratio"]
        var rows = [header]
        for t in r.tensors {
            var row = [t.name, "[" + t.shape.map(String.init).joined(separator: ",") + "]", t.dtype, t.encoding]
            switch kind {
            case "mask": row += ["\(t.ones ?? 0)", TextFormat.percent(t.density)]
            case "task-vector": row += ["\(t.nnz ?? 0)", TextFormat.percent(t.density), TextFormat.number(t.l2Norm)]
            case "scores": row += [TextFormat.number(t.quantiles?.first), TextFormat.number(t.quantiles.flatMap { $0.count == 5 ? $0[2] : nil }), TextFormat.number(t.quantiles?.last)]
            default: if header.contains("mean") { row += [TextFormat.number(t.min), TextFormat.number(t.max), TextFormat.number(t.mean)] }
            }
            row += [TextFormat.bytes(t.bytesOnDisk), t.bytesOnDisk == 0 ? "-" : String(format1: Double(t.logicalBytes) / Double(t.bytesOnDisk)) + "×"]
            rows.append(row)
        }
        let widths = (0..<header.count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        for row in rows {
            lines.append("  " + row.enumerated().map { c, cell in
                c == 0 || c == 2 || c == 3 ? cell.padding(widths[c]) : cell.leftPadding(widths[c])
            }.joined(separator: "  "))
        }
        let t = r.totals
        var total = "  total: \(t.tensorCount) tensors, \(t.count) elements, \(TextFormat.bytes(t.bytesOnDisk)) on disk for \(TextFormat.bytes(t.logicalBytes)) of data"
        if let ones = t.ones { total += ", \(ones) ones (density \(TextFormat.percent(t.density)))" }
        if let nnz = t.nnz { total += ", nnz \(nnz) (density \(TextFormat.percent(t.density))), ‖τ‖₂ \(TextFormat.number(t.l2Norm))" }
        if let lo = t.min, let hi = t.max { total += ", scores in [\(TextFormat.number(lo)), \(TextFormat.number(hi))]" }
        lines.append(total)
        return lines.joined(separator: "\n")
    }

    /// `inspect --verify`: one line per stored check (`ok`, `MISMATCH` or `unchecked`), then a total.
    public static func verification(_ r: VerificationReport) -> String {
        var lines = ["\(r.file): \(r.kind)" + (r.note.map { ", \($0)" } ?? "")]
        let width = r.items.map(\.object.count).max() ?? 0
        for item in r.items {
            let status = item.status == .ok ? "ok       " : item.status == .mismatch ? "MISMATCH " : "unchecked"
            let what = item.status == .mismatch ? "\(item.check): \(item.message)" : item.status == .ok ? item.check : item.message
            lines.append("  \(status)  \(item.object.padding(width))  \(what)")
        }
        let count = { (s: VerificationItem.Status) in r.items.filter { $0.status == s }.count }
        lines.append("  total: \(r.items.count) checks, \(count(.ok)) ok, \(count(.mismatch)) mismatched, \(count(.unchecked)) without a digest")
        return lines.joined(separator: "\n")
    }
}
