import LocusMerge

/// The text rendering of `locus compare`.
public enum ComparisonText {
    public static func matrix(_ m: [[Double]], labels: [String]) -> [String] {
        let w = max(8, labels.map(\.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        var lines = [String(repeating: " ", count: w) + labels.map { " " + pad(String($0.suffix(8)), 8) }.joined()]
        for (i, row) in m.enumerated() { lines.append(pad(labels[i], w) + row.map { " " + pad(TextFormat.fixed($0, 3), 8) }.joined()) }
        return lines
    }

    public static func masks(_ r: Comparison.MaskReport, labels: [String]) -> String {
        var lines = ["\(r.files.count) masks, \(r.count) entries; densities " + r.densities.map { TextFormat.fixed($0 * 100, 3) + " %" }.joined(separator: ", "),
                     "", "Jaccard index"]
        lines += matrix(r.jaccard, labels: labels)
        lines += ["", "entries selected by k of \(r.files.count) masks"]
        for (k, c) in r.selectedBy.enumerated() { lines.append("  k = \(k): \(c) (\(TextFormat.fixed(r.count == 0 ? 0 : Double(c) / Double(r.count) * 100, 3)) %)") }
        lines += ["", "per tensor: selected by each mask, by all, mean Jaccard"]
        for t in r.tensors {
            lines.append("  \(t.name) [\(t.count)]: \(t.ones.map(String.init).joined(separator: " / ")), all \(t.selectedByAll), Jaccard \(TextFormat.fixed(t.meanJaccard, 3))")
        }
        return lines.joined(separator: "\n")
    }

    public static func taskVectors(_ r: Comparison.TaskVectorReport, labels: [String]) -> String {
        var lines = ["\(r.files.count) task vectors, \(r.count) entries; norms " + r.norms.map { TextFormat.fixed($0, 4) }.joined(separator: ", "),
                     "", "cosine similarity"]
        lines += matrix(r.cosine, labels: labels)
        lines += ["", "sign conflicts: \(r.signConflicts) of \(r.overlap) entries where two or more vectors are nonzero (\(TextFormat.fixed(r.signConflictRate * 100, 2)) %)",
                  "", "per tensor: norms, overlap, sign conflicts"]
        for t in r.tensors {
            lines.append("  \(t.name) [\(t.count)]: \(t.norms.map { TextFormat.fixed($0, 4) }.joined(separator: " / ")), overlap \(t.overlap), conflicts \(t.signConflicts) (\(TextFormat.fixed(t.signConflictRate * 100, 2)) %)")
        }
        return lines.joined(separator: "\n")
    }
}
