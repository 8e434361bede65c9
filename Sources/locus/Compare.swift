import ArgumentParser
import LocusFormat
import LocusRender
import LocusMerge
import LocusWorkflows

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
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
            case .masks(let m): print(json ? try jsonText(m) : ComparisonText.masks(m, labels: r.labels))
            case .taskVectors(let t): print(json ? try jsonText(t) : ComparisonText.taskVectors(t, labels: r.labels))
            }
        }
    }
}
