import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

extension LocusDType: ExpressibleByArgument {}

/// `a:b:step` → [a, a+step, …, b].
struct AlphaGrid: ExpressibleByArgument {
    var values: [Double]
    init?(argument: String) {
        let p = argument.split(separator: ":").compactMap { Double($0) }
        guard p.count == 3, p[2] > 0, p[1] >= p[0] else { return nil }
        let n = Int(((p[1] - p[0]) / p[2]).rounded()) + 1
        values = (0..<n).map { ((p[0] + Double($0) * p[2]) * 1e9).rounded() / 1e9 }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge task vectors into a base model, or full models into one (methods below).",
        discussion: Merge.discussion)

    /// The help text: fixed paragraphs and the methods table, each wrapped to 78 columns (so that
    /// the help reads the same in an 80-column terminal and a wider one).
    static var discussion: String {
        let paragraphs = [
            """
            Inputs: BASE TASK-VECTOR… for the task-vector methods (τ_t = θ_t − θ_0; w_t = --weight, default 1; \
            λ = --lambda), MODEL… (full checkpoints of one architecture, no base) for linear and slerp. Each \
            method's parameters follow it below as --flag = default, range: meaning; give them as --flag VALUE \
            or --flag=VALUE, booleans as --flag / --no-flag. A --config recipe uses the same method names and \
            parameter names as keys (weight and scores per model); the output's provenance records them too. \
            docs/merging.md describes each method and how they compose.
            """,
            """
            Safety: before anything is written, every task vector's base fingerprint must equal BASE's (--force \
            merges anyway, with a warning) and every tensor must exist in BASE with the same shape (for models: \
            in the first model, same shapes); all problems are listed at once. Task-vector methods accumulate \
            in float32 (float64 for θ0 + λ·τ), Fisher, linear and slerp in float64; the result is written in \
            --dtype (default: each tensor's input dtype).
            """,
            """
            Memory (every method): every tensor streams in blocks of whole rows of at most 2^19 entries (one row \
            when a row is longer). Per block: two float32 directions (the next one is computed on a second \
            thread while the current one is written; TALL computes them in turn), θ0 and the output — 8 to 16 \
            MB — and the block's stored entries (8 B each) of one vector (task arithmetic, Breadcrumbs) or of \
            all k vectors (TIES, DARE, Breadcrumbs-TIES, TALL, consensus: at most 4 MB per vector, plus 3 B per \
            entry for the sign election and 1 B per entry and vector for the TALL/consensus masks). Fisher: θ0, \
            θ_t, Σ F θ, Σ F and the result in float64 (20 MB) and one scores block. Linear and slerp: each \
            model's block and the result in float64 (4 MB per model, plus 4 MB); slerp reads each tensor twice \
            (norms first). TALL also writes each task's mask and model block by block. Per vector: a window of \
            at most 2 MB over its mask or indices (plus 4 MB when its values are not float32) and HDF5's chunk \
            and metadata caches. The peak is bounded by k and the block size (and the longest row), not by the \
            model or its largest tensor (8 vectors on all-MiniLM-L6-v2: 102 MB resident for task arithmetic, \
            112 MB for TIES, of which 35 MB is this program). Global TIES thresholds and per-tensor Breadcrumbs \
            ranks: an exact two-level histogram, two streaming passes over each vector's stored values, \
            constant memory; per-row Breadcrumbs sorts one row's stored entries at a time.
            """,
            """
            α search (task-vector methods with a λ): --alpha-grid 0:1:0.05 --eval TASK1.h5 TASK2.h5 … (one \
            dataset per vector, same order) evaluates θ0 + α·τ_m for each α with each task's own head (the \
            vector's task-head attribute, or --heads) on --eval-split, and keeps the α with the best average \
            normalized accuracy = mean over tasks of merged accuracy ÷ the task's own fine-tuned accuracy (the \
            vector's task-accuracy attribute, measured when absent) — the protocol of the task-vectors and \
            TaLoS papers. The table is printed and written with --alpha-json; --plot draws accuracy vs α.
            """,
        ]
        var lines: [String] = []
        lines += MergeMethods.wrap(paragraphs[0], indent: "", hanging: "")
        lines += ["", "Methods:", MergeMethods.helpTable(), ""]
        for p in paragraphs.dropFirst() { lines += MergeMethods.wrap(p, indent: "", hanging: "") }
        lines += ["", "Examples:", "  locus merge base.h5 t1.h5 t2.h5 --method ties --density 0.2 -o merged.h5",
                  "  locus merge a.h5 b.h5 --method slerp --t 0.3 -o merged.h5"]
        return lines.joined(separator: "\n")
    }

    @Argument(parsing: .allUnrecognized,
              help: ArgumentHelp("BASE and task vectors, or the models; then the method's parameters.",
                                 valueName: "inputs-and-parameters"))
    var inputsAndParameters: [String] = []
    @Option(help: "A mergekit-style YAML recipe instead of inputs and parameters.") var config: String?
    @Option(name: .shortAndLong, help: "Output checkpoint.") var output: String
    @Option(name: .customLong("method"), help: "Merging method (below).") var methodOption: String = "task_arithmetic"
    @Option(help: ArgumentHelp("Output dtype: float32, float16, bfloat16 or float64.", valueName: "dtype")) var dtype: String?
    @Flag(help: "Merge task vectors made from another base (with a warning).") var force = false
    @OptionGroup(title: "Coefficient search on validation data") var alpha: AlphaSearchOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    /// The base (nil for model methods), the inputs and the options, from the command line or the recipe.
    func resolve() throws -> (base: String?, inputs: [String], options: MergeOptions) {
        var resolved: (base: String?, inputs: [String], options: MergeOptions)
        if let config {
            guard inputsAndParameters.isEmpty else {
                throw LocusError(file: config, "give either --config or inputs and method parameters, not both (got \(inputsAndParameters.joined(separator: " ")))")
            }
            resolved = try MergeRecipe.load(config).resolve(recipePath: config)
        } else {
            guard let method = MergeMethods.named(methodOption) else {
                throw LocusError(file: output, "--method \(methodOption) is not one of \(MergeMethods.names.joined(separator: ", "))")
            }
            var o = MergeOptions()
            o.method = method
            let positional: [String]
            do { positional = try MergeMethods.parseCommandLine(inputsAndParameters, into: &o) } catch { throw LocusError(file: output, error.message) }
            switch method.inputs {
            case .taskVectors:
                guard positional.count >= 2 else { throw LocusError(file: output, "give BASE and at least one task vector (or --config)") }
                resolved = (positional[0], Array(positional.dropFirst()), o)
            case .models:
                guard !positional.isEmpty else { throw LocusError(file: output, "\(method.name) needs the models to merge (or --config)") }
                resolved = (nil, positional, o)
            }
        }
        if let dtype {
            guard let d = LocusDType(rawValue: dtype), d.isFloatingPoint else {
                throw LocusError(file: output, "--dtype must be a floating-point type (float32, float16, bfloat16, float64), not \(dtype)")
            }
            resolved.options.dtype = d
        }
        resolved.options.force = force
        return resolved
    }

    func run() throws {
        try source.scoped {
            var (base, inputs, o) = try resolve()
            let method = o.method
            let role = base == nil ? "model" : "task vector"
            try protectInputs(base: base, inputs: inputs, role: role, scores: o.fisherScores)
            let warn: (String) -> Void = { StandardStream.error.write("locus: warning: \($0)\n") }
            let searched = try alpha.search(base: base, taskVectors: inputs, options: o, method: method.name, output: output, warn: warn)
            o = searched.options
            var params = MergeMethods.provenance(o)
            if let config { params["config"] = .string(config) }
            params.merge(searched.provenance) { a, _ in a }
            params.merge(try source.parameters()) { a, _ in a }
            var records: [Provenance.Input] = []
            if let base {
                records.append(.init(role: "base", path: base, fingerprint: try openCheckpoint(path: base).fingerprint))
                for t in inputs { records.append(.init(role: "task-vector", path: t, fingerprint: nil)) }
            } else {
                for m in inputs { records.append(.init(role: "model", path: m, fingerprint: try openCheckpoint(path: m).fingerprint)) }
            }
            for s in o.fisherScores { records.append(.init(role: "scores", path: s, fingerprint: nil)) }
            let prov = provenance(inputs: records, parameters: params)
            if let base {
                let r = try Merger.merge(base: base, taskVectors: inputs, output: output, options: o, warn: warn, provenance: prov,
                                         outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
                let scale = method.parameter("lambda") != nil ? " (λ = \(o.lambda))" : ""
                print("\(output): \(method.name) of \(inputs.count) task vectors\(scale), \(r.tensorsMerged) tensors merged, \(r.tensorsCopied) copied, \(r.fingerprint)")
            } else {
                let r = try Merger.merge(models: inputs, output: output, options: o, provenance: prov,
                                         outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
                print("\(output): \(method.name) of \(inputs.count) models, \(r.tensorsMerged) tensors merged, \(r.tensorsCopied) copied, \(r.fingerprint)")
            }
        }
    }
}
