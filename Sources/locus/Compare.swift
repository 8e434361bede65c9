import ArgumentParser
import LocusFormat
import LocusRender
import LocusMerge

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
        try reportingErrors(verification) {
            try protectInputs()
            let kinds = try files.map { f in (f, try ArtifactFile.open(f).header.kind) }
            let labels = files.map { fileLabel($0) }
            if kinds.allSatisfy({ $0.1 == .mask }) {
                let r = try Comparison.masks(files)
                if let svg {
                    try InspectPlot.write(Heatmap.svg(title: "Mask overlap: Jaccard index of \(files.count) masks",
                                                      subtitle: "cell = |A ∩ B| / |A ∪ B| over \(r.count) entries", labels: labels, values: r.jaccard), to: svg)
                }
                print(json ? try jsonText(r) : ComparisonText.masks(r, labels: labels))
            } else if kinds.allSatisfy({ $0.1 == .taskVector }) {
                let r = try Comparison.taskVectors(files)
                if let svg {
                    try InspectPlot.write(Heatmap.svg(title: "Task vectors: cosine similarity of \(files.count) vectors",
                                                      subtitle: "cell = cos(τ_i, τ_j) over \(r.count) entries", labels: labels, values: r.cosine, low: -1), to: svg)
                }
                print(json ? try jsonText(r) : ComparisonText.taskVectors(r, labels: labels))
            } else {
                let other = kinds.first { $0.1 != kinds[0].1 } ?? kinds[0]
                throw LocusError(file: other.0, "is a \(other.1.rawValue) file; compare takes masks only or task vectors only (\(kinds[0].0) is a \(kinds[0].1.rawValue))")
            }
        }
    }

    private func fileLabel(_ path: String) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        return name.hasSuffix(".h5") ? String(name.dropLast(3)) : name
    }
}
