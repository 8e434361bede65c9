import ArgumentParser
import LocusEngine
import LocusFormat
import LocusWorkflows

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check files against every rule of spec/FORMAT.md.",
        usage: "locus validate <file> … [--json] [--no-warnings] [--stats] [<options>]",
        discussion: """
        Locus files: reads all data, recomputes the checkpoint fingerprint, every stored summary \
        and digest, and checks index order, padding bits, value ranges, filters and byte order. \
        A checkpoint's /architecture is checked against the engine's rules (§2.1) and against \
        /tensors. NaN or ±inf in scores or task-vector values is an error; --stats also counts \
        them in checkpoint tensors and dataset inputs, as warnings naming the tensor.

        A safetensors file, Hugging Face folder or PyTorch file is checked by opening it (a \
        folder's shards against its index, with the renaming options below) and reading every \
        tensor.

        Prints one line per violation, '<file>: <object>: <message>' ('warning: ' first for \
        SHOULD rules). Exit status 1 if any file has an error.

        Example: locus validate *.h5 --stats
        """)

    @Argument(help: "Files to check.") var files: [String]
    @Flag(help: "Print findings as JSON.") var json = false
    @Flag(help: "Do not print warnings.") var noWarnings = false
    @Flag(help: "Also count NaN/±inf in checkpoint tensors and dataset inputs (warnings).")
    var stats = false
    @OptionGroup(title: "Reading checkpoints (safetensors, folders, PyTorch files)") var opening: OpeningOptions

    func run() throws {
        let options = try opening.openOptions()
        var all: [Finding] = []
        for f in files {
            let findings = CheckpointOpenOptions.$current.withValue(options) { FileValidation.findings(f, stats: stats) }
            all += findings
            if !json {
                for x in findings where !(noWarnings && x.severity == .warning) { print(x) }
                if !findings.contains(where: { $0.severity == .error }) { print("\(f): valid") }
            }
        }
        if json {
            struct Out: Encodable { var valid: Bool; var findings: [Finding] }
            print(try jsonText(Out(valid: !all.contains { $0.severity == .error }, findings: all)))
        }
        if all.contains(where: { $0.severity == .error }) { throw ExitCode.failure }
    }
}
