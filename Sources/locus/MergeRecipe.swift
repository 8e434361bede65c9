import Foundation
import LocusFormat
import LocusMerge
import Yams

/// A mergekit-style YAML recipe for `locus merge --config`:
///
///     base_model: base.h5
///     models:
///       - model: mnist-tau.h5
///         parameters: {weight: 1.0}
///       - model: digits-tau.h5
///         parameters: {weight: 0.5, scores: digits-scores.h5}   # scores: Fisher merging
///     merge_method: ties          # task_arithmetic | ties | dare_linear | dare_ties | breadcrumbs | fisher | tall | consensus
///     parameters: {lambda: 1.0, density: 0.2, scope: global, seed: 0}
///     dtype: float32
///
/// Keys follow mergekit where it has them (`density` = fraction kept for TIES and DARE, `gamma`
/// for Breadcrumbs' dropped top fraction); Locus-only ones are `lambda`, `scope`, `tall_lambda`,
/// `k`, `rescale`, `floor`, `normalize`. Unknown keys are errors, not silently ignored.
struct MergeRecipe: Decodable {
    struct Model: Decodable {
        var model: String
        var parameters: [String: Scalar]?
    }
    enum Scalar: Decodable {
        case number(Double), bool(Bool), text(String)
        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else { self = .text(try c.decode(String.self)) }
        }
        var number: Double? { if case .number(let d) = self { return d }; return nil }
        var text: String? { switch self { case .text(let s): s; case .number(let d): String(d); case .bool(let b): String(b) } }
        var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    }
    var base_model: String
    var models: [Model]
    var merge_method: String
    var parameters: [String: Scalar]?
    var dtype: String?

    static func load(_ path: String) throws -> MergeRecipe {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LocusError(file: path, "cannot read the merge recipe") }
        do { return try YAMLDecoder().decode(MergeRecipe.self, from: text) } catch {
            throw LocusError(file: path, "is not a merge recipe (base_model, models, merge_method, parameters, dtype): \(describe(error))")
        }
    }

    /// The task vectors, and the options the recipe asks for (relative paths are relative to the recipe).
    func resolve(recipePath: String) throws -> (base: String, taskVectors: [String], options: MergeOptions) {
        let dir = (recipePath as NSString).deletingLastPathComponent
        func path(_ p: String) -> String { p.hasPrefix("/") || dir.isEmpty ? p : dir + "/" + p }
        var o = MergeOptions()
        func fail(_ m: String) -> LocusError { LocusError(file: recipePath, m) }
        switch merge_method.replacingOccurrences(of: "-", with: "_") {
        case "task_arithmetic", "linear": o.method = .taskArithmetic
        case "ties": o.method = .ties
        case "dare_linear": o.method = .dare; o.dareThen = .taskArithmetic
        case "dare_ties": o.method = .dare; o.dareThen = .ties
        case "breadcrumbs": o.method = .breadcrumbs
        case "fisher": o.method = .fisher
        case "tall": o.method = .tall
        case "consensus": o.method = .consensus
        default: throw fail("merge_method '\(merge_method)' is not one of task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, fisher, tall, consensus")
        }
        for (key, value) in parameters ?? [:] {
            func num() throws -> Double { guard let n = value.number else { throw fail("parameters.\(key) must be a number") }; return n }
            switch key {
            case "lambda": o.lambda = try num()
            case "density":
                let d = try num()
                if o.method == .dare { o.dareDropRate = 1 - d; o.tiesDensity = d } else if o.method == .breadcrumbs { o.breadcrumbsBeta = d } else { o.tiesDensity = d }
            case "gamma": o.breadcrumbsGamma = try num()
            case "drop_rate": o.dareDropRate = try num()
            case "rescale": guard let b = value.bool else { throw fail("parameters.rescale must be true or false") }; o.dareRescale = b
            case "seed": o.seed = UInt64(try num())
            case "scope":
                guard let s = value.text.flatMap(MergeOptions.Scope.init(rawValue:)) else { throw fail("parameters.scope must be global, tensor or row") }
                if o.method == .breadcrumbs { o.breadcrumbsScope = s } else { o.tiesScope = s }
            case "tall_lambda": o.tallLambda = try num()
            case "k": o.consensusK = Int(try num())
            case "floor": o.fisherFloor = try num()
            case "normalize": guard let b = value.bool else { throw fail("parameters.normalize must be true or false") }; o.fisherNormalize = b
            default: throw fail("unknown key parameters.\(key)")
            }
        }
        var weights: [Double] = []
        for (i, m) in models.enumerated() {
            var w = 1.0
            for (key, value) in m.parameters ?? [:] {
                switch key {
                case "weight": guard let n = value.number else { throw fail("models[\(i)].parameters.weight must be a number") }; w = n
                case "scores": guard let s = value.text else { throw fail("models[\(i)].parameters.scores must be a path") }; o.fisherScores.append(path(s))
                default: throw fail("unknown key models[\(i)].parameters.\(key) (per-model keys: weight, scores)")
                }
            }
            weights.append(w)
        }
        o.weights = weights
        if let dtype {
            guard let d = LocusDType(rawValue: dtype), d.isFloatingPoint else { throw fail("dtype '\(dtype)' is not float32, float16, bfloat16 or float64") }
            o.dtype = d
        }
        return (path(base_model), models.map { path($0.model) }, o)
    }
}
