import ArgumentParser
import LocusFormat
import LocusMerge
import LocusWorkflows

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare masks or task vectors of one base: overlap, similarity, sign conflicts.",
        usage: "locus compare <file> <file> … [--json] [--svg <heatmap.svg>]",
        discussion: """
        Masks: the Jaccard index |A∩B|/|A∪B| of every pair, how many entries k of the n masks \
        select, and per tensor the selected counts and the mean pairwise Jaccard. TaLoS masks of \
        different tasks barely overlap (Iurada et al., 2025, §4); that is what lets their task \
        vectors add up.

        Task vectors: the cosine similarity of every pair, norms, and per tensor the entries \
        where two or more vectors are nonzero and how many of those disagree in sign: the \
        conflicts TIES resolves (Yadav et al., 2023, §3).

        The files must all be masks or all task vectors, of one base model.

        Example: locus compare mask-a.h5 mask-b.h5 mask-c.h5 --svg overlap.svg
        """)

    @Argument(help: "Two or more masks, or two or more task vectors.") var files: [String]
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(help: ArgumentHelp("Also draw the Jaccard or cosine matrix as an SVG heatmap.", valueName: "file"))
    var svg: String?
    @OptionGroup var verification: VerifyOptions

    func validate() throws {
        guard files.count >= 2 else { throw ValidationError("give at least two files to compare") }
    }

    func run() throws {
        try verification.scoped {
            try protectInputs()
            var r = CompareRequest(files: files)
            r.heatmap = svg
            switch try r.execute() {
            case .masks(let m): print(json ? try jsonText(m) : CompareText.masks(m, labels: r.labels))
            case .taskVectors(let t): print(json ? try jsonText(t) : CompareText.taskVectors(t, labels: r.labels))
            }
        }
    }
}

/// The text rendering of `locus compare`.
enum CompareText {
    static func matrix(_ m: [[Double]], labels: [String]) -> [String] {
        let w = max(8, labels.map(\.count).max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { String(repeating: " ", count: max(0, n - s.count)) + s }
        var lines = [String(repeating: " ", count: w) + labels.map { " " + pad(String($0.suffix(8)), 8) }.joined()]
        for (i, row) in m.enumerated() { lines.append(pad(labels[i], w) + row.map { " " + pad(fmt($0, 3), 8) }.joined()) }
        return lines
    }

    static func masks(_ r: Comparison.MaskReport, labels: [String]) -> String {
        var lines = ["\(r.files.count) masks, \(r.count) entries; densities " + r.densities.map { fmt($0 * 100, 3) + " %" }.joined(separator: ", "),
                     "", "Jaccard index"]
        lines += matrix(r.jaccard, labels: labels)
        lines += ["", "entries selected by k of \(r.files.count) masks"]
        for (k, c) in r.selectedBy.enumerated() { lines.append("  k = \(k): \(c) (\(fmt(r.count == 0 ? 0 : Double(c) / Double(r.count) * 100, 3)) %)") }
        lines += ["", "per tensor: selected by each mask, by all, mean Jaccard"]
        for t in r.tensors {
            lines.append("  \(t.name) [\(t.count)]: \(t.ones.map(String.init).joined(separator: " / ")), all \(t.selectedByAll), Jaccard \(fmt(t.meanJaccard, 3))")
        }
        return lines.joined(separator: "\n")
    }

    static func taskVectors(_ r: Comparison.TaskVectorReport, labels: [String]) -> String {
        var lines = ["\(r.files.count) task vectors, \(r.count) entries; norms " + r.norms.map { fmt($0, 4) }.joined(separator: ", "),
                     "", "cosine similarity"]
        lines += matrix(r.cosine, labels: labels)
        lines += ["", "sign conflicts: \(r.signConflicts) of \(r.overlap) entries where two or more vectors are nonzero (\(fmt(r.signConflictRate * 100, 2)) %)",
                  "", "per tensor: norms, overlap, sign conflicts"]
        for t in r.tensors {
            lines.append("  \(t.name) [\(t.count)]: \(t.norms.map { fmt($0, 4) }.joined(separator: " / ")), overlap \(t.overlap), conflicts \(t.signConflicts) (\(fmt(t.signConflictRate * 100, 2)) %)")
        }
        return lines.joined(separator: "\n")
    }
}
