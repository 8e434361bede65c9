import ArgumentParser
import LocusFormat

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a Locus artifact holds: kind, provenance and a table of its tensors.",
        discussion: """
        By default only metadata is read (shapes, dtypes, encodings and the summaries writers store as
        attributes), so inspecting a multi-GB checkpoint takes milliseconds. --stats reads the values and
        recomputes the summaries (and adds min / max / mean / L2 norm for checkpoint tensors).
        Columns: 'on disk' is the bytes HDF5 stores for the tensor; 'ratio' is logical bytes ÷ bytes on disk
        (the dense size for task vectors, ceil(n/8) for masks).
        """)

    @Argument(help: "A Locus artifact (.h5).") var file: String
    @Flag(help: "Read the values and recompute summaries instead of trusting stored attributes.") var stats = false
    @Option(help: "Show only this tensor.") var tensor: String?
    @Flag(help: "Print the report as JSON.") var json = false

    func run() throws {
        try reportingErrors {
            let report = try Inspector.inspect(file, tensor: tensor, stats: stats || tensor != nil)
            print(json ? try Inspector.json(report) : Inspector.text(report))
        }
    }
}
