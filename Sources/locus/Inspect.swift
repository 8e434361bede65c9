import ArgumentParser
import LocusFormat
import LocusRender
import LocusWorkflows

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a Locus artifact holds: kind, provenance and a table of its tensors.",
        usage: "locus inspect <file> [--stats] [--tensor <name>] [--verify] [--json] [<options>]",
        discussion: """
        By default only metadata is read (shapes, dtypes, encodings and the summaries writers store as
        attributes), so inspecting a multi-GB checkpoint takes milliseconds. --stats reads the values and
        recomputes the summaries (and adds min / max / mean / L2 norm for checkpoint tensors).
        Columns: 'on disk' is the bytes HDF5 stores for the tensor; 'ratio' is logical bytes ÷ bytes
        on disk (the dense size for task vectors, ceil(n/8) for masks).
        --plot writes an SVG: per-tensor density bars for a mask or task vector (with the overall density);
        for scores a histogram of log10(score) over all values (zeros in a separate bar; the values are read
        one tensor at a time) and a per-tensor box chart of the stored quantiles on the same axis.

        --verify recomputes every stored digest (spec §1.8), a checkpoint's fingerprint and a mask's
        bit counts, and prints one line per check ('ok', 'MISMATCH' naming the tensor, 'unchecked'
        for data no digest covers); exit status 1 on any mismatch (docs/reliability.md).

        Example: locus inspect mask.h5 --plot mask.svg
        """)

    @Argument(help: "A Locus artifact (.h5).") var file: String
    @Flag(help: "Read the values and recompute summaries, not trusting stored attributes.") var stats = false
    @Option(help: "Show only this tensor.") var tensor: String?
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(help: ArgumentHelp("Also write an SVG plot of a mask, scores or task-vector file (atomically).", valueName: "out.svg"))
    var plot: String?

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func validate() throws {
        if source.verify, stats || plot != nil || tensor != nil {
            throw ValidationError("--verify checks the file's stored digests; give it without --stats, --plot or --tensor")
        }
    }

    func run() throws {
        if source.verify {
            // Lists every check instead of stopping at the first mismatch, as other commands do.
            let report = try CheckpointOpenOptions.$current.withValue(try source.openOptions()) { try DataVerifier.report(file) }
            print(json ? try Inspector.verificationJSON(report) : InspectText.verification(report))
            if !report.mismatches.isEmpty { throw ExitCode.failure }
            return
        }
        try source.scoped {
            let report = try Inspector.inspect(file, tensor: tensor, stats: stats || tensor != nil)
            if let plot { try InspectPlot.write(try InspectPlot.svg(report), to: plot) }
            print(json ? try Inspector.json(report) : InspectText.report(report) + (plot.map { "\n  plot written to \($0)" } ?? ""))
        }
    }
}
