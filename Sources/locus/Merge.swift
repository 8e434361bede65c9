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

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge task vectors into a base model, or full models into one.",
        discussion: MergeCommand.discussion)

    /// The help text, each paragraph wrapped to 78 columns (the same in an 80-column terminal and
    /// a wider one). The methods and their parameters are `--methods`'s listing.
    static var discussion: String {
        let paragraphs = [
            """
            Inputs: BASE and task vectors (made by locus diff) for the task-vector methods, the models for \
            linear, slerp, karcher and nuslerp without BASE (two models); then the method's parameters, --flag VALUE. \
            `locus merge --methods` lists the methods, papers and parameters (docs/merging.md).
            """,
            """
            --config FILE runs a mergekit YAML config with mergekit's rules (per-model weight and density, \
            trimming per tensor, normalize by the weights; models may be fine-tuned checkpoints or task \
            vectors). A top-level 'semantics: locus' selects Locus's rules, those of the command line. Any \
            parameter may be a value, a gradient across the layers ([0.2, 0.8]) or filters on tensor names \
            ([{filter: attn, value: 0.3}, {value: 0.7}]).
            """,
            """
            Inputs are checked against BASE (fingerprint, names, shapes) before anything is written. Tensors \
            stream in row blocks (docs/merging.md §Memory). --alpha-grid picks λ by average normalized \
            accuracy on the --eval datasets.
            """,
        ]
        var lines: [String] = []
        for p in paragraphs { lines += MergeMethods.wrap(p, indent: "", hanging: "") + [""] }
        lines += ["Examples:", "  locus merge base.h5 t1.h5 t2.h5 --method ties --density 0.2 -o merged.h5",
                  "  locus merge --config mergekit.yml --exclude 'lm_head*' -o merged/"]
        return lines.joined(separator: "\n")
    }

    /// `--methods`: every method, its paper and its parameters.
    static var methodsListing: String {
        let intro = """
            Methods of locus merge (--method NAME, or merge_method in a config with 'semantics: locus'). Each \
            parameter: --flag = default, range: meaning (a config's key is the name with _). A mergekit config \
            (the default for --config) uses mergekit's keys instead: weight, density, gamma, epsilon, \
            lambda, normalize, rescale, and mergekit's della (docs/merging.md §Configs).
            """
        return (MergeMethods.wrap(intro, indent: "", hanging: "") + ["", MergeMethods.helpTable()]).joined(separator: "\n")
    }

    @Argument(parsing: .allUnrecognized,
              help: ArgumentHelp("BASE TASK-VECTOR… or MODEL…, then parameters.",
                                 valueName: "inputs-and-parameters"))
    var inputsAndParameters: [String] = []
    @Option(help: ArgumentHelp("A mergekit YAML config (instead of inputs).", valueName: "file")) var config: String?
    @Option(name: [.customShort("o"), .customLong("output")], help: "Output checkpoint.") var outputOption: String?
    var output: String { outputOption ?? "" }
    @Option(name: .customLong("method"), help: "See --methods.") var methodOption: String = "task_arithmetic"
    @Flag(help: "List the methods and their parameters, and exit.") var methods = false
    @Option(help: ArgumentHelp("Merge only tensors matching GLOB (repeatable).", valueName: "glob")) var include: [String] = []
    @Option(help: ArgumentHelp("Copy tensors matching GLOB from the base.", valueName: "glob")) var exclude: [String] = []
    @Option(help: ArgumentHelp("Output dtype: float32, float16, bfloat16 or float64.", valueName: "dtype")) var dtype: String?
    @Flag(help: "Merge vectors made from another base (warns).") var force = false
    @OptionGroup var alpha: AlphaSearchOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    /// The base (nil for model methods), the inputs and the options, from the command line or the recipe.
    func resolve() throws -> (base: String?, inputs: [String], options: MergeOptions) {
        var resolved: (base: String?, inputs: [String], options: MergeOptions)
        if let config {
            guard inputsAndParameters.isEmpty else {
                throw LocusError(file: config, "give either --config or inputs and method parameters, not both (got \(inputsAndParameters.joined(separator: " ")))")
            }
            resolved = try MergeConfig.load(config).plan()
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
                // Two models and no task vector: the method's base-less form (nuslerp of full weights).
                if let alone = method.withoutBase, case .models(let n?) = alone.inputs, positional.count == n,
                   try positional.allSatisfy({ try !Merger.isTaskVector($0) }) {
                    o.method = alone   // nuslerp of two models, no base
                    resolved = (nil, positional, o)
                    break
                }
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
        resolved.options.include += include
        resolved.options.exclude += exclude
        return resolved
    }

    func run() throws {
        if methods { print(MergeCommand.methodsListing); return }
        guard outputOption != nil else { throw ValidationError("Missing expected argument '--output <output>'") }
        // The provenance records, the α search and the merge each open the inputs: their
        // structure is checked the first time only.
        try source.scoped { try ArtifactFile.rememberingCheckedFiles {
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
                for t in inputs {
                    // A mergekit config may list fine-tuned checkpoints (δ = θ_t − θ0 on the fly).
                    if try Merger.isTaskVector(t) { records.append(.init(role: "task-vector", path: t, fingerprint: nil)) }
                    else { records.append(.init(role: "model", path: t, fingerprint: try openCheckpoint(path: t).fingerprint)) }
                }
            } else {
                for m in inputs { records.append(.init(role: "model", path: m, fingerprint: try openCheckpoint(path: m).fingerprint)) }
            }
            for s in o.fisherScores { records.append(.init(role: "scores", path: s, fingerprint: nil)) }
            let prov = provenance(inputs: records, parameters: params)
            if let base {
                let r = try Merger.merge(base: base, taskVectors: inputs, output: output, options: o, warn: warn, provenance: prov,
                                         outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
                let scale = method.parameter("lambda") != nil ? " (λ = \(o.lambda))" : ""
                let what = records.contains { $0.role == "model" } ? "inputs" : "task vectors"
                print("\(output): \(method.name) of \(inputs.count) \(what)\(scale), \(r.tensorsMerged) tensors merged, \(r.tensorsCopied) copied, \(r.fingerprint)")
            } else {
                let r = try Merger.merge(models: inputs, output: output, options: o, warn: warn, provenance: prov,
                                         outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
                print("\(output): \(method.name) of \(inputs.count) models, \(r.tensorsMerged) tensors merged, \(r.tensorsCopied) copied, \(r.fingerprint)")
            }
        } }
    }
}
