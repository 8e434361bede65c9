import Foundation
import LocusFormat
import LocusMerge
import Yams

/// A mergekit-style YAML recipe for `locus merge --config`:
///
///     base_model: base.h5         # task-vector methods; for linear and slerp, one of the models (first)
///     models:
///       - model: mnist-tau.h5
///         parameters: {weight: 1.0}
///       - model: digits-tau.h5
///         parameters: {weight: 0.5, scores: digits-scores.h5}   # scores: Fisher merging
///     merge_method: ties          # any name of `locus merge --help`'s methods table
///     parameters: {lambda: 1.0, density: 0.2, scope: global}
///     dtype: float32
///
/// `merge_method` and the keys of `parameters` are the method's name and its parameter names, as
/// the methods table lists them (the same names the command line and the provenance use); the
/// per-model keys are the per-input parameters (weight, scores). Unknown keys are errors, not
/// silently ignored.
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
        var raw: MergeRawValue { switch self { case .number(let d): .number(d); case .bool(let b): .bool(b); case .text(let s): .text(s) } }
    }
    var base_model: String?
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

    /// The base (nil for model methods), the inputs, and the options the recipe asks for (relative
    /// paths are relative to the recipe).
    func resolve(recipePath: String) throws -> (base: String?, inputs: [String], options: MergeOptions) {
        let dir = (recipePath as NSString).deletingLastPathComponent
        func path(_ p: String) -> String { p.hasPrefix("/") || dir.isEmpty ? p : dir + "/" + p }
        func fail(_ m: String) -> LocusError { LocusError(file: recipePath, m) }
        guard let method = MergeMethods.named(merge_method) else {
            throw fail("merge_method '\(merge_method)' is not one of \(MergeMethods.names.joined(separator: ", "))")
        }
        var o = MergeOptions()
        o.method = method
        let global = method.parameters.filter { !$0.kind.isPerInput }, perModel = method.parameters.filter { $0.kind.isPerInput }
        for (key, value) in (parameters ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let p = global.first(where: { $0.name == key }) else {
                throw fail("unknown key parameters.\(key) for \(method.name) (its keys: \(global.map(\.name).joined(separator: ", ")))")
            }
            do { try p.apply([value.raw], to: &o) } catch { throw fail("parameters.\(error.message)") }
        }
        var given: [String: [Int: MergeRawValue]] = [:]
        for (i, m) in models.enumerated() {
            for (key, value) in m.parameters ?? [:] {
                guard perModel.contains(where: { $0.name == key }) else {
                    throw fail("unknown key models[\(i)].parameters.\(key) for \(method.name) (per-model keys: \(perModel.map(\.name).joined(separator: ", ")))")
                }
                given[key, default: [:]][i] = value.raw
            }
        }
        for p in perModel {
            guard let values = given[p.name] else { continue }
            var list: [MergeRawValue] = []
            for i in models.indices {
                if let v = values[i] {
                    if case .pathsPerInput = p.kind { list.append(.text(path(v.string))) } else { list.append(v) }
                } else if case .numbersPerInput = p.kind {
                    list.append(.number(1))   // a model without a weight weighs 1
                } else {
                    throw fail("models[\(i)].parameters.\(p.name) is missing (given for other models)")
                }
            }
            do { try p.apply(list, to: &o) } catch { throw fail("models[].parameters.\(error.message)") }
        }
        if let dtype {
            guard let d = LocusDType(rawValue: dtype), d.isFloatingPoint else { throw fail("dtype '\(dtype)' is not float32, float16, bfloat16 or float64") }
            o.dtype = d
        }
        switch method.inputs {
        case .taskVectors:
            guard let base_model else { throw fail("\(method.name) merges task vectors into base_model, which is missing") }
            return (path(base_model), models.map { path($0.model) }, o)
        case .models:
            // As in mergekit, base_model may name one of the models: it becomes the first (slerp's t = 0).
            var list = models.map { path($0.model) }
            if let base_model {
                guard let i = list.firstIndex(of: path(base_model)) else {
                    throw fail("\(method.name) merges the listed models: base_model must be one of them or absent")
                }
                list.insert(list.remove(at: i), at: 0)
                if var w = o.weights { w.insert(w.remove(at: i), at: 0); o.weights = w }
            }
            return (nil, list, o)
        }
    }
}
