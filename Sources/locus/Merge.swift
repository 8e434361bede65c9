import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

extension MergeMethod: ExpressibleByArgument {}
extension MergeOptions.Scope: ExpressibleByArgument {}
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
        abstract: "Merge task vectors into a base model (task arithmetic, TIES, DARE, Breadcrumbs, Fisher, TALL, consensus).",
        discussion: """
        Methods (τ_t = θ_t − θ_0; w_t = --weights, default 1; λ = --lambda):
          task-arithmetic  θ = θ0 + λ Σ w_t τ_t (a negative weight negates a task)
          ties             trim each τ_t to its top --ties-density of |τ| (--ties-scope global over the model, as in
                           the paper, or tensor, as in mergekit), elect the sign of Σ trimmed τ_t, average the entries
                           that agree with it (disjoint mean); θ = θ0 + λ τ_m. Trim keeps |τ| ≥ the k-th largest.
          dare             drop each stored entry with probability --dare-drop (seeded by --seed), rescale by 1/(1−p)
                           (--no-dare-rescale: mergekit's variant without it), then --dare-then task-arithmetic | ties
          breadcrumbs      per row (paper; --breadcrumbs-scope tensor: mergekit) drop the top --gamma of |τ| and keep
                           the next --beta, then task arithmetic
          fisher           θ* = Σ w_t F_t θ_t / Σ w_t F_t from --fisher-scores (one scores file per vector, same base),
                           F floored at --fisher-floor; --fisher-normalize divides summed scores by their sample count
          tall             m_t = 1[|τ_t| ≥ --tall-lambda · |τ_MTL − τ_t|], τ_MTL = Σ τ_t; writes per-task masks and
                           models θ0 + m_t ⊙ τ_MTL into --tall-dir; the output is θ0 + λ τ_MTL
          consensus        m = 1[Σ_t m_t ≥ --consensus-k]; θ = θ0 + λ (m ⊙ τ_MTL)
        Safety: before anything is written, every task vector's base fingerprint must equal BASE's (--force
        merges anyway, with a warning) and every tensor must exist in BASE with the same shape; all problems
        are listed at once. Values are accumulated in float32 (float64 for θ0 + λ·τ) and written in --dtype
        (default: each tensor's base dtype). The output records method, parameters and inputs.
        Memory (every method): every tensor streams in blocks of whole rows of at most 2^19 entries (one row when
        a row is longer). Per block: two float32 directions (the next one is computed on a second thread while
        the current one is written; TALL computes them in turn), θ0 and the output — 8 to 16 MB — and the
        block's stored entries (8 B each) of one vector (task arithmetic, Breadcrumbs) or of all k vectors (TIES,
        DARE, TALL, consensus: at most 4 MB per vector, plus 3 B per entry for the TIES sign election and 1 B
        per entry and vector for the TALL/consensus masks). Fisher: θ0, θ_t, Σ F θ, Σ F and the result in float64 (20 MB)
        and one scores block. TALL also writes each task's mask and model block by block. Per vector: a window
        of at most 2 MB over its mask or indices (plus 4 MB when its values are not float32) and HDF5's chunk
        and metadata caches. The peak is bounded by k and the block size (and the longest row), not by the
        model or its largest tensor (8 vectors on all-MiniLM-L6-v2: 102 MB resident for task arithmetic,
        112 MB for TIES, of which 35 MB is this program). Global TIES thresholds and per-tensor Breadcrumbs
        ranks: an exact two-level histogram, two streaming passes over each vector's stored values, constant
        memory; per-row Breadcrumbs sorts one row's stored entries at a time.
        α search: --alpha-grid 0:1:0.05 --eval TASK1.h5 TASK2.h5 … (one dataset per vector, same order) evaluates
        θ0 + α·τ_m for each α with each task's own head (the vector's task-head attribute, or --heads) on
        --eval-split, and keeps the α with the best average normalized accuracy = mean over tasks of merged
        accuracy ÷ the task's own fine-tuned accuracy (the vector's task-accuracy attribute, measured when
        absent) — the protocol of the task-vectors and TaLoS papers. The table is printed and written with
        --alpha-json; --plot draws accuracy vs α.

        Example: locus merge base.h5 t1.h5 t2.h5 --method ties --alpha-grid 0:1.5:0.1 --eval d1.h5 d2.h5 -o merged.h5
        """)

    @Argument(help: ArgumentHelp("Base checkpoint (or give --config).", valueName: "base")) var baseArgument: String?
    @Argument(help: ArgumentHelp("Task vectors.", valueName: "task-vector")) var taskVectorArguments: [String] = []
    @Option(help: "A mergekit-style YAML recipe (base_model, models, merge_method, parameters, dtype) instead of the arguments and method options.") var config: String?
    @Option(name: .shortAndLong, help: "Output checkpoint.") var output: String
    @Option(name: .customLong("method"), help: "Merging method.") var methodOption: MergeMethod = .taskArithmetic
    @Option(help: "λ, the scale of the merged direction (ignored with --alpha-grid).") var lambda: Double = 1
    @Option(help: "Comma-separated weight per task vector.") var weights: String?
    @Option(help: "TIES: fraction kept per vector.") var tiesDensity: Double = 0.2
    @Option(help: "TIES: global or tensor trimming.") var tiesScope: MergeOptions.Scope = .global
    @Option(help: "DARE: drop probability p.") var dareDrop: Double = 0.9
    @Flag(help: "DARE: do not rescale by 1/(1−p).") var noDareRescale = false
    @Option(help: "DARE: then task-arithmetic or ties.") var dareThen: MergeMethod = .taskArithmetic
    @Option(help: "Breadcrumbs: fraction kept (β).") var beta: Double = 0.2
    @Option(help: "Breadcrumbs: top fraction dropped (γ).") var gamma: Double = 0.1
    @Option(help: "Breadcrumbs: row or tensor.") var breadcrumbsScope: MergeOptions.Scope = .row
    @Option(parsing: .upToNextOption, help: "Fisher: one scores file per task vector.") var fisherScores: [String] = []
    @Option(help: "Fisher: floor on F.") var fisherFloor: Double = 1e-6
    @Flag(help: "Fisher: divide summed scores by their sample count.") var fisherNormalize = false
    @Option(help: "TALL: λ_t.") var tallLambda: Double = 0.4
    @Option(help: "TALL: directory for per-task masks and models.") var tallDir: String?
    @Option(help: "Consensus: minimum number of tasks.") var consensusK: Int = 2
    @Option(help: "Seed (DARE).") var seed: UInt64 = 0
    @Option(help: "Output dtype for floating-point tensors.") var dtype: LocusDType?
    @Flag(help: "Merge task vectors made from another base (with a warning).") var force = false
    @Option(help: "α grid a:b:step for the validation search.") var alphaGrid: AlphaGrid?
    @Option(parsing: .upToNextOption, help: "One dataset per task vector for the α search.") var eval: [String] = []
    @Option(help: "Comma-separated heads (default: each vector's task-head).") var heads: String?
    @Option(help: "Split used by the α search.") var evalSplit: String = "val"
    @Option(help: "Write the α table as JSON here.") var alphaJson: String?
    @Option(help: "Write accuracy vs α as an SVG plot here.") var plot: String?

    func options() throws -> MergeOptions {
        var o = MergeOptions()
        o.method = methodOption; o.lambda = lambda; o.tiesDensity = tiesDensity; o.tiesScope = tiesScope
        o.dareDropRate = dareDrop; o.dareRescale = !noDareRescale; o.dareThen = dareThen; o.seed = seed
        o.breadcrumbsBeta = beta; o.breadcrumbsGamma = gamma; o.breadcrumbsScope = breadcrumbsScope
        o.fisherScores = fisherScores; o.fisherFloor = fisherFloor; o.fisherNormalize = fisherNormalize
        o.tallLambda = tallLambda; o.consensusK = consensusK; o.dtype = dtype; o.force = force
        if let weights {
            let w = weights.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard w.allSatisfy({ $0 != nil && $0!.isFinite }) else { throw LocusError(file: output, "--weights must be numbers, got '\(weights)'") }
            o.weights = w.map { $0! }
        }
        return o
    }

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    func run() throws {
        try reportingErrors(source) {
            let base: String, taskVectors: [String]
            var o: MergeOptions
            if let config {
                guard baseArgument == nil, taskVectorArguments.isEmpty else { throw LocusError(file: config, "give either --config or BASE and task vectors, not both") }
                (base, taskVectors, o) = try MergeRecipe.load(config).resolve(recipePath: config)
                o.force = force
            } else {
                guard let b = baseArgument, !taskVectorArguments.isEmpty else { throw LocusError(file: output, "give BASE and at least one task vector (or --config)") }
                base = b; taskVectors = taskVectorArguments
                o = try options()
            }
            try protectInputs(base: base, taskVectors: taskVectors)
            let method = o.method
            let warn: (String) -> Void = { FileHandle.standardError.write("locus: warning: \($0)\n") }
            var table: [AlphaSearch.Row] = []
            if let grid = alphaGrid {
                guard eval.count == taskVectors.count else {
                    throw LocusError(file: output, "--alpha-grid needs one --eval dataset per task vector (\(eval.count) for \(taskVectors.count))")
                }
                let search = try AlphaSearch(base: base, taskVectors: taskVectors, datasets: eval, heads: heads?.split(separator: ",").map(String.init),
                                             split: evalSplit, options: o, warn: warn)
                table = try search.run(grid.values)
                let best = table.max { $0.averageNormalized < $1.averageNormalized }!
                o.lambda = best.alpha
                print(AlphaSearch.format(table, tasks: search.taskNames, own: search.ownAccuracy, best: best.alpha))
                if let alphaJson { try AlphaSearch.writeJSON(table, search: search, best: best.alpha, to: alphaJson) }
                if let plot { try AlphaSearch.writePlot(table, tasks: search.taskNames, method: method.rawValue, to: plot) }
            }
            var params: [String: JSONValue] = ["method": .string(method.rawValue), "lambda": .number(o.lambda)]
            if let w = o.weights { params["weights"] = .array(w.map { .number($0) }) }
            switch method {
            case .ties: params["ties_density"] = .number(o.tiesDensity); params["ties_scope"] = .string(o.tiesScope.rawValue)
            case .dare: params["dare_drop"] = .number(o.dareDropRate); params["dare_rescale"] = .bool(o.dareRescale); params["dare_then"] = .string(o.dareThen.rawValue); params["seed"] = .integer(Int64(bitPattern: o.seed))
                if o.dareThen == .ties { params["ties_density"] = .number(o.tiesDensity); params["ties_scope"] = .string(o.tiesScope.rawValue) }
            case .breadcrumbs: params["beta"] = .number(o.breadcrumbsBeta); params["gamma"] = .number(o.breadcrumbsGamma); params["scope"] = .string(o.breadcrumbsScope.rawValue)
            case .fisher: params["fisher_floor"] = .number(o.fisherFloor); params["fisher_normalize"] = .bool(o.fisherNormalize)
            case .tall, .consensus: params["tall_lambda"] = .number(o.tallLambda); params["consensus_k"] = .integer(Int64(o.consensusK))
            case .taskArithmetic: break
            }
            if let config { params["config"] = .string(config) }
            if alphaGrid != nil { params["alpha_search"] = .array(table.map { .object(["alpha": .number($0.alpha), "average_normalized": .number($0.averageNormalized)]) }) }
            params.merge(try source.parameters()) { a, _ in a }
            var inputs: [Provenance.Input] = [.init(role: "base", path: base, fingerprint: try openCheckpoint(path: base).fingerprint)]
            for t in taskVectors { inputs.append(.init(role: "task-vector", path: t, fingerprint: nil)) }
            for s in o.fisherScores { inputs.append(.init(role: "scores", path: s, fingerprint: nil)) }
            let r = try Merger.merge(base: base, taskVectors: taskVectors, output: output, options: o, tallDirectory: tallDir, warn: warn,
                                     provenance: provenance(inputs: inputs, parameters: params),
                                     outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
            print("\(output): \(method.rawValue) of \(taskVectors.count) task vectors (λ = \(o.lambda)), \(r.tensorsMerged) tensors merged, \(r.tensorsCopied) copied, \(r.fingerprint)")
        }
    }
}
