import ArgumentParser
import LocusEngine
import LocusFormat
import LocusWorkflows

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
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
            var findings: [Finding]
            if let kind = try? detectCheckpointKind(path: f), kind != .locus {
                findings = CheckpointOpenOptions.$current.withValue(options) { sourceFindings(f, stats: stats) }
            } else {
                findings = Validator.validate(f, stats: stats)
                if !findings.contains(where: { $0.severity == .error }) { findings += ArchitectureFiles.findings(f) }
            }
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

/// A checkpoint that is not a Locus file (safetensors, a Hugging Face folder, a PyTorch file) is
/// valid when it opens (a folder's shards agree with its index) and every tensor's bytes can be
/// read: the fingerprint is computed over all of them.
func sourceFindings(_ path: String, stats: Bool = false) -> [Finding] {
    do {
        let source = try openCheckpoint(path: path)
        _ = try source.computeFingerprint()
        guard stats else { return [] }
        var out: [Finding] = []
        for t in source.tensors where t.dtype.isFloatingPoint {
            let counts = try NonFiniteCounts.of(source, t)
            let l = source.location(of: t)
            if counts.total > 0 { out.append(Finding(severity: .warning, file: l.file, object: l.object, message: "holds \(counts) among \(t.count) values")) }
        }
        return out
    } catch {
        let e = LocusError.wrap(error, file: path)
        return [Finding(severity: .error, file: e.file, object: e.object ?? "", message: e.message)]
    }
}
