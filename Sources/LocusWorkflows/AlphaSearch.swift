import Foundation
import LocusRender
import LocusFormat
import LocusEngine
import LocusMerge

// The validation searches for merge coefficients (docs/talos.md §Choosing α):
//
//   single      one α for every task, each grid value tried: θ = θ0 + α·τ_m, τ_m the method's merged
//               direction (Ilharco et al., 2023, §4; TaLoS, Iurada et al., 2025, §5), kept by average
//               normalized accuracy.
//   coordinate  one α_t per task (task arithmetic: θ = θ0 + Σ_t α_t·w_t·τ_t): starting from the best
//               single α, each task's α_t in turn tries every grid value with the others fixed and keeps
//               the best; rounds repeat until one changes nothing (or --rounds).
//   random      one α_t per task, each drawn uniformly from the grid values with SplitMix64(seed), until
//               `budget` distinct coefficient vectors are evaluated (random search: Bergstra & Bengio,
//               JMLR 2012).
//
// Only one merged model exists at a time: the model being evaluated. Besides it the search keeps θ0 and
// the directions, each stored sparse (indices and values) when fewer than half of its entries are nonzero.

/// One set of coefficients evaluated on every task's validation split.
public struct AlphaCandidate: Codable, Sendable, Equatable {
    /// One α for all tasks (single), or one per task.
    public var alphas: [Double]
    public var accuracies: [Double]
    /// Accuracy ÷ the task's own fine-tuned accuracy.
    public var normalized: [Double]
    public var averageAbsolute: Double
    public var averageNormalized: Double
}

/// A direction in parameter space: per tensor, dense or as (index, value) pairs.
struct StoredDirection {
    enum Entries { case dense([Float]), sparse([Int32], [Float]) }
    var tensors: [String: Entries] = [:]

    init(_ dense: [String: [Float]]) {
        for (name, d) in dense {
            let nnz = d.reduce(0) { $1 != 0 ? $0 + 1 : $0 }
            if nnz * 2 < d.count, d.count <= Int(Int32.max) {
                var idx: [Int32] = [], val: [Float] = []
                idx.reserveCapacity(nnz); val.reserveCapacity(nnz)
                for (i, v) in d.enumerated() where v != 0 { idx.append(Int32(i)); val.append(v) }
                tensors[name] = .sparse(idx, val)
            } else {
                tensors[name] = .dense(d)
            }
        }
    }
}

/// The one merged model of a search: θ = θ0 + Σ_k c_k·d_k written into the model's parameters (in
/// float32, directions in order), then evaluated.
final class MergedModel {
    let model: Model
    let theta0: [String: [Float]]
    let directions: [StoredDirection]

    /// `model` must hold θ0 now.
    init(model: Model, directions: [StoredDirection]) {
        self.model = model
        theta0 = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.data) })
        self.directions = directions
    }

    func load(_ coefficients: [Double]) { load(coefficients, of: directions) }

    func load(_ coefficients: [Double], of directions: [StoredDirection]) {
        precondition(coefficients.count == directions.count)
        for p in model.parameters {
            var v = theta0[p.name]!
            for (k, d) in directions.enumerated() {
                let a = Float(coefficients[k])
                switch d.tensors[p.name] {
                case .dense(let e)?: for i in 0..<v.count { v[i] += a * e[i] }
                case .sparse(let idx, let val)?: for (i, x) in zip(idx, val) { v[Int(i)] += a * x }
                case nil: break
                }
            }
            p.value.data = v
        }
    }

    func accuracy(head: String, on set: Batches, file: String) throws -> Double {
        try engine(file: file) { try Training.evaluate(model, head: head, on: set).accuracy }
    }
}

/// The validation sets of the tasks a search scores: one dataset, head and own accuracy per task vector.
struct TaskSets {
    var names: [String]
    var heads: [String]
    var datasets: [String]
    var sets: [Batches]

    /// Heads are given, or each vector's `task-head` attribute.
    static func heads(_ vectors: [TaskVectorReader], given: [String]?) throws -> [String] {
        if let given, given.count != vectors.count {
            throw RequestError("heads", "names \(given.count) heads for \(vectors.count) task vectors")
        }
        return try vectors.enumerated().map { i, tv in
            if let given { return given[i] }
            guard tv.artifact.root.hasAttribute("task-head") else {
                throw RemediableError(LocusError(file: tv.path, object: "/@task-head", "is missing"), .name(setting: "heads"))
            }
            return try tv.artifact.root.stringAttribute("task-head")
        }
    }

    static func batches(model: Model, modelPath: String, dataset: String, head: String, split: String) throws -> Batches {
        let data = try DatasetArtifact.read(dataset)
        let h = try engine(file: modelPath) { try model.head(head) }
        return try Batches(data, split: split, inputShape: model.architecture.input, classes: h.outFeatures, file: dataset)
    }
}

/// `merge --alpha-grid … --eval …`: the search over merge coefficients on validation data.
public struct AlphaSearchRequest {
    public enum Strategy: Sendable, Equatable {
        /// One α for all tasks, every grid value.
        case single
        /// One α per task, coordinate search over the grid from the best single α.
        case coordinate(rounds: Int)
        /// One α per task drawn from the grid, `budget` distinct evaluations.
        case random(budget: Int, seed: UInt64)

        public var name: String {
            switch self { case .single: "single"; case .coordinate: "coordinate"; case .random: "random" }
        }
        public var perTask: Bool { self != .single }
    }

    public var base: String
    public var taskVectors: [String]
    /// One dataset artifact per task vector, same order.
    public var datasets: [String]
    /// Heads per task; nil for each vector's `task-head` attribute.
    public var heads: [String]?
    public var split = "val"
    public var grid: [Double]
    public var strategy: Strategy = .single
    public var options: MergeOptions

    public init(base: String, taskVectors: [String], datasets: [String], grid: [Double], options: MergeOptions) {
        self.base = base; self.taskVectors = taskVectors; self.datasets = datasets; self.grid = grid; self.options = options
    }

    func check() throws {
        guard options.semantics == .locus else {
            throw RequestError("semantics", "the α search scales λ with Locus's rules, not mergekit's: give the merge Locus semantics")
        }
        guard options.method.parameter("lambda") != nil else {
            throw RequestError("grid", "the α search scales λ, which \(options.method.name) does not have")
        }
        guard datasets.count == taskVectors.count else {
            throw RequestError("datasets", "the α search needs one evaluation dataset per task vector (\(datasets.count) for \(taskVectors.count))")
        }
        guard !grid.isEmpty, grid.allSatisfy(\.isFinite) else { throw RequestError("grid", "needs at least one finite value") }
        switch strategy {
        case .single: break
        case .coordinate(let rounds):
            guard rounds >= 1 else { throw RequestError("rounds", "must be ≥ 1, got \(rounds)") }
        case .random(let budget, _):
            guard budget >= 1 else { throw RequestError("budget", "must be ≥ 1, got \(budget)") }
        }
        if strategy.perTask, options.method.name != "task_arithmetic" {
            throw RequestError("strategy", "per-task coefficients scale each task's vector, which \(options.method.name) does not merge "
                                          + "separately; use task_arithmetic or one α for all")
        }
    }

    public func execute(warn: (String) -> Void = { _ in }) throws -> AlphaSearchResult {
        try check()
        let m = try Model.load(base)
        let reader = try openCheckpoint(path: base)
        // The directions: the method's merged one (single), or each task's w_t·τ_t (per task).
        let directions: [StoredDirection]
        if strategy.perTask {
            directions = try taskVectors.indices.map { t in
                var o = options
                o.weights = options.weights.map { [$0[t]] }
                return StoredDirection(try Merger.directions(base: reader, taskVectors: [taskVectors[t]], options: o, warn: warn))
            }
        } else {
            directions = [StoredDirection(try Merger.directions(base: reader, taskVectors: taskVectors, options: options, warn: warn))]
        }
        let vectors = try taskVectors.map { try TaskVectorReader(path: $0) }
        let heads = try TaskSets.heads(vectors, given: self.heads)
        let sets = try datasets.indices.map { try TaskSets.batches(model: m, modelPath: base, dataset: datasets[$0], head: heads[$0], split: split) }
        let merged = MergedModel(model: m, directions: directions)
        // Each task's own fine-tuned accuracy: recorded in the vector, else measured with θ0 + τ_t.
        var own: [Double] = []
        for (i, tv) in vectors.enumerated() {
            if tv.artifact.root.hasAttribute("task-accuracy"), ((try? tv.artifact.root.stringAttribute("task-split")) ?? split) == split,
               let a = try? tv.artifact.root.doubleAttribute("task-accuracy"), a > 0 {
                own.append(a); continue
            }
            var single: [String: [Float]] = [:]
            for t in tv.tensors { single[t.name] = try tv.readDense(t).map { $0 * Float(tv.scale) } }
            merged.load([1], of: [StoredDirection(single)])
            let a = try merged.accuracy(head: heads[i], on: sets[i], file: tv.path)
            guard a > 0 else { throw LocusError(file: tv.path, "the task's own accuracy is 0; normalized accuracy is undefined") }
            own.append(a)
        }
        var search = Search(merged: merged, heads: heads, sets: sets, datasets: datasets, own: own)
        let candidates: [AlphaCandidate]
        switch strategy {
        case .single:
            candidates = try grid.map { try search.evaluate([$0]) }
        case .coordinate(let rounds):
            candidates = try search.coordinate(grid: grid, tasks: taskVectors.count, rounds: rounds)
        case .random(let budget, let seed):
            candidates = try search.random(grid: grid, tasks: taskVectors.count, budget: budget, seed: seed)
        }
        return AlphaSearchResult(strategy: strategy, tasks: taskVectors.map(taskLabel), heads: heads, ownAccuracy: own, candidates: candidates)
    }
}

/// The evaluations of one search, memoized by coefficients.
struct Search {
    let merged: MergedModel
    let heads: [String]
    let sets: [Batches]
    let datasets: [String]
    let own: [Double]
    var seen: [[Double]: AlphaCandidate] = [:]

    /// Evaluates one coefficient vector: one α (applied to the single direction, or to every task's)
    /// or one per task.
    mutating func evaluate(_ alphas: [Double]) throws -> AlphaCandidate {
        if let c = seen[alphas] { return c }
        let coefficients = alphas.count == merged.directions.count ? alphas : Array(repeating: alphas[0], count: merged.directions.count)
        merged.load(coefficients)
        let acc = try sets.indices.map { i in try merged.accuracy(head: heads[i], on: sets[i], file: datasets[i]) }
        let norm = zip(acc, own).map { $0 / $1 }
        let c = AlphaCandidate(alphas: alphas, accuracies: acc, normalized: norm,
                               averageAbsolute: acc.reduce(0, +) / Double(acc.count), averageNormalized: norm.reduce(0, +) / Double(norm.count))
        seen[alphas] = c
        return c
    }

    /// Coordinate search: the single-α pass, then per task every grid value with the others fixed.
    mutating func coordinate(grid: [Double], tasks: Int, rounds: Int) throws -> [AlphaCandidate] {
        var order: [AlphaCandidate] = []
        for g in grid { order.append(try evaluate(Array(repeating: g, count: tasks))) }
        var best = order.max(by: Self.worse)!
        for _ in 0..<rounds {
            let start = best.alphas
            for t in 0..<tasks {
                for g in grid where g != best.alphas[t] {
                    var a = best.alphas
                    a[t] = g
                    let known = seen[a] != nil
                    let c = try evaluate(a)
                    if !known { order.append(c) }
                    if c.averageNormalized > best.averageNormalized { best = c }
                }
            }
            if best.alphas == start { break }
        }
        return order
    }

    /// Random search: α_t drawn uniformly from the grid until `budget` distinct vectors are evaluated
    /// (or every combination is).
    mutating func random(grid: [Double], tasks: Int, budget: Int, seed: UInt64) throws -> [AlphaCandidate] {
        var rng = SplitMix64(seed: seed)
        let combinations = pow(Double(grid.count), Double(tasks))
        let target = Int(min(Double(budget), combinations))
        var order: [AlphaCandidate] = []
        var draws = 0
        while order.count < target, draws < target * 1000 {
            draws += 1
            let a = (0..<tasks).map { _ in grid[rng.below(grid.count)] }
            if seen[a] != nil { continue }
            order.append(try evaluate(a))
        }
        return order
    }

    /// Orders candidates by average normalized accuracy, the earlier one winning ties.
    static func worse(_ a: AlphaCandidate, _ b: AlphaCandidate) -> Bool { a.averageNormalized < b.averageNormalized }
}

/// What an α search found, and how to report it.
public struct AlphaSearchResult {
    public var strategy: AlphaSearchRequest.Strategy
    public var tasks: [String]
    public var heads: [String]
    public var ownAccuracy: [Double]
    /// In evaluation order.
    public var candidates: [AlphaCandidate]

    /// The best average normalized accuracy; the first evaluated wins ties.
    public var best: AlphaCandidate { candidates.max(by: Search.worse)! }

    /// The merge to write: λ = α (single), or weights α_t·w_t with λ = 1 (per task).
    public func apply(to options: MergeOptions) -> MergeOptions {
        var o = options
        if strategy.perTask {
            let w = options.weights ?? Array(repeating: 1, count: best.alphas.count)
            o.weights = zip(best.alphas, w).map { $0 * $1 }
            o.lambda = 1
        } else {
            o.lambda = best.alphas[0]
        }
        return o
    }

    /// What the output's provenance records of the search.
    public var provenance: [String: JSONValue] {
        if !strategy.perTask {
            return ["alpha_search": .array(candidates.map { .object(["alpha": .number($0.alphas[0]), "average_normalized": .number($0.averageNormalized)]) })]
        }
        var p: [String: JSONValue] = [
            "alpha_search": .array(candidates.map { .object(["alphas": .array($0.alphas.map { .number($0) }), "average_normalized": .number($0.averageNormalized)]) }),
            "alpha_strategy": .string(strategy.name),
        ]
        if case .random(let budget, let seed) = strategy { p["alpha_budget"] = .integer(Int64(budget)); p["alpha_seed"] = .integer(Int64(seed)) }
        if case .coordinate(let rounds) = strategy { p["alpha_rounds"] = .integer(Int64(rounds)) }
        return p
    }

    // MARK: table

    public var table: String {
        let b = best
        func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
        if !strategy.perTask {
            var lines = ["α       " + tasks.map { pad($0, max(8, $0.count)) }.joined(separator: " ") + "  avg abs  avg norm"]
            lines.append("own     " + zip(tasks, ownAccuracy).map { t, a in pad(fmt(a, 4), max(8, t.count)) }.joined(separator: " "))
            for r in candidates {
                var line = pad(String(r.alphas[0]), 8)
                line += zip(tasks, r.accuracies).map { t, a in pad(fmt(a, 4), max(8, t.count)) }.joined(separator: " ")
                line += "  " + pad(fmt(r.averageAbsolute, 4), 7) + "  " + fmt(r.averageNormalized, 4)
                if r.alphas[0] == b.alphas[0] { line += "  ← best" }
                lines.append(line)
            }
            return lines.joined(separator: "\n")
        }
        let widths = tasks.map { max(8, $0.count + 2) }
        var lines = ["\(strategy.name) search over per-task α: \(candidates.count) evaluations"]
        lines.append(pad("#", 5) + zip(tasks, widths).map { pad("α " + $0, $1) }.joined(separator: " ") + "  "
                     + zip(tasks, widths).map { pad($0, $1) }.joined(separator: " ") + "  avg abs  avg norm")
        lines.append(pad("own", 5) + widths.map { pad("", $0) }.joined(separator: " ") + "  "
                     + zip(ownAccuracy, widths).map { pad(fmt($0, 4), $1) }.joined(separator: " "))
        for (k, c) in candidates.enumerated() {
            var line = pad(String(k + 1), 5) + zip(c.alphas, widths).map { pad(fmt($0, 4), $1) }.joined(separator: " ") + "  "
            line += zip(c.accuracies, widths).map { pad(fmt($0, 4), $1) }.joined(separator: " ")
            line += "  " + pad(fmt(c.averageAbsolute, 4), 7) + "  " + fmt(c.averageNormalized, 4)
            if c == b { line += "  ← best" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    // MARK: JSON

    public func json() throws -> String {
        if !strategy.perTask {
            struct Row: Encodable { var alpha: Double; var accuracies: [Double]; var normalized: [Double]; var averageAbsolute: Double; var averageNormalized: Double }
            struct Out: Encodable { var tasks: [String]; var heads: [String]; var ownAccuracy: [Double]; var bestAlpha: Double; var rows: [Row]
                enum CodingKeys: String, CodingKey { case tasks, heads, ownAccuracy = "own_accuracy", bestAlpha = "best_alpha", rows }
            }
            let rows = candidates.map { Row(alpha: $0.alphas[0], accuracies: $0.accuracies, normalized: $0.normalized,
                                            averageAbsolute: $0.averageAbsolute, averageNormalized: $0.averageNormalized) }
            return try jsonText(Out(tasks: tasks, heads: heads, ownAccuracy: ownAccuracy, bestAlpha: best.alphas[0], rows: rows))
        }
        struct Out: Encodable {
            var strategy: String; var tasks: [String]; var heads: [String]; var ownAccuracy: [Double]
            var bestAlphas: [Double]; var bestAverageNormalized: Double; var rows: [AlphaCandidate]
            enum CodingKeys: String, CodingKey {
                case strategy, tasks, heads, ownAccuracy = "own_accuracy", bestAlphas = "best_alphas"
                case bestAverageNormalized = "best_average_normalized", rows
            }
        }
        return try jsonText(Out(strategy: strategy.name, tasks: tasks, heads: heads, ownAccuracy: ownAccuracy,
                                bestAlphas: best.alphas, bestAverageNormalized: best.averageNormalized, rows: candidates))
    }

    // MARK: plot

    /// Single: accuracy vs α (one line per task, the average absolute and the average normalized).
    /// Per task: per evaluation, each task's accuracy, the average normalized and the best so far.
    public func svg(method: String) -> String {
        let colors = LineChart.palette
        if !strategy.perTask {
            var series = tasks.enumerated().map { i, t in LineChart.Series(label: t, values: candidates.map { $0.accuracies[i] }, color: colors[i % colors.count], dash: "4 3") }
            series.append(.init(label: "average absolute", values: candidates.map(\.averageAbsolute), color: "#000", dash: ""))
            series.append(.init(label: "average normalized", values: candidates.map(\.averageNormalized), color: "#000", dash: "1 3"))
            let ymax = max(1.0, candidates.flatMap { $0.normalized + $0.accuracies }.max() ?? 1)
            return LineChart(title: "\(method): accuracy vs α", xLabel: "α", xs: candidates.map { $0.alphas[0] }, series: series, yMax: ymax).svg()
        }
        var series = tasks.enumerated().map { i, t in LineChart.Series(label: t, values: candidates.map { $0.accuracies[i] }, color: colors[i % colors.count], dash: "4 3") }
        series.append(.init(label: "average normalized", values: candidates.map(\.averageNormalized), color: "#000", dash: "1 3"))
        var bestSoFar: [Double] = []
        for c in candidates { bestSoFar.append(max(bestSoFar.last ?? -Double.infinity, c.averageNormalized)) }
        series.append(.init(label: "best so far", values: bestSoFar, color: "#000", dash: ""))
        let ymax = max(1.0, candidates.flatMap { $0.normalized + $0.accuracies }.max() ?? 1)
        return LineChart(title: "\(method): \(strategy.name) search over per-task α", xLabel: "evaluation",
                         xs: candidates.indices.map { Double($0 + 1) }, series: series, yMax: ymax).svg()
    }
}
