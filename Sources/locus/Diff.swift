import ArgumentParser
import LocusFormat
import LocusMerge
import LocusWorkflows

struct DiffCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Write the task vector τ = θ_finetuned − θ_base of two checkpoints.",
        usage: "locus diff <base> <finetuned> -o <output> [<options>]",
        discussion: """
        Exact by default: every nonzero difference is kept, in float32 when θ_base + τ reproduces θ_ft exactly in \
        float32 (the usual case) and in float64 otherwise, so `locus apply BASE TV` gives back FINETUNED bit for bit. \
        Each tensor is stored as coo, bitmask or dense, whichever is smallest (spec §5); unchanged tensors are \
        left out. Integer tensors must be equal. --density keeps the largest |τ| entries over the whole model \
        (ties by position); --threshold keeps |τ| ≥ t.

        Example: locus diff base.h5 finetuned.h5 -o tau.h5 --density 0.05
        """)

    @Argument(help: "Base checkpoint.") var base: String
    @Argument(help: "Fine-tuned checkpoint (same tensors).") var finetuned: String
    @Option(name: .shortAndLong, help: "Output task vector.") var output: String
    @Option(help: "Keep only this fraction of entries, by magnitude.") var density: Double?
    @Option(help: "Keep only entries with |τ| ≥ this.") var threshold: Double?

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func validate() throws {
        if density != nil, threshold != nil { throw ValidationError("\(output): give at most one of --density and --threshold") }
    }

    func run() throws {
        try source.scoped {
            try protectInputs()
            let sparsify: TaskArithmetic.Sparsify = density.map { .density($0) } ?? threshold.map { .threshold($0) } ?? .none
            var params: [String: JSONValue] = [:]
            if let density { params["density"] = .number(density) }
            if let threshold { params["threshold"] = .number(threshold) }
            params.merge(try source.parameters()) { a, _ in a }
            let s = try TaskArithmetic.diff(base: base, finetuned: finetuned, output: output, sparsify: sparsify,
                                            provenance: provenance(inputs: [.init(role: "base", path: base, fingerprint: nil),
                                                                            .init(role: "finetuned", path: finetuned, fingerprint: nil)], parameters: params))
            print("\(output): \(s.nnz) nonzero of \(s.count) entries (\(fmt(Double(s.nnz) / Double(max(s.count, 1)) * 100, 3)) %) in \(s.tensors) tensors")
        }
    }
}

struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Add a task vector to a base checkpoint: θ = θ_base + α · scale · τ.",
        usage: "locus apply <base> <task-vector> -o <output> [--alpha <α>] [<options>]",
        discussion: """
        Refuses a task vector whose base fingerprint is not BASE's (--force applies it anyway, with a warning). \
        Arithmetic in float64, result in each tensor's dtype (round-to-nearest-even for float16/bfloat16), so α = 1 \
        reproduces the fine-tuned checkpoint exactly for float32. Negative α negates a task.

        Example: locus apply base.h5 tau.h5 --alpha 0.5 -o edited.h5
        """)

    @Argument(help: "Base checkpoint.") var base: String
    @Argument(help: "Task vector.") var taskVector: String
    @Option(name: .shortAndLong, help: "Output checkpoint (.h5, or a folder: see --format).") var output: String
    @Option(help: "Scaling coefficient α.") var alpha: Double = 1
    @Flag(help: "Apply even if the task vector was made from another base.") var force = false
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try source.scoped {
            try protectInputs()
            try TaskArithmetic.apply(base: base, taskVector: taskVector, alpha: alpha, output: output, force: force,
                                     warn: { StandardStream.error.write("locus: warning: \($0)\n") },
                                     provenance: provenance(inputs: [.init(role: "base", path: base, fingerprint: nil),
                                                                     .init(role: "task-vector", path: taskVector, fingerprint: nil)],
                                                            parameters: ["alpha": .number(alpha), "force": .bool(force)].merging(try source.parameters()) { a, _ in a }),
                                     outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
            print("\(output): \(base) + \(alpha) · \(taskVector)")
        }
    }
}
