import Foundation
import LocusFormat
import Yams

/// Whose rules a merge follows (docs/merging.md §Configs).
///
/// - `locus`: the papers' rules, the command line's: TIES trims over the whole model (`scope global`)
///   and averages the agreeing entries (their count), DARE drops with `drop_rate` and rescales by
///   1/(1 − p), `dare_ties` trims after dropping.
/// - `mergekit`: mergekit's, for configs written for it: every sparsification is per tensor with a
///   per-model `density` (the kept fraction; for DARE the keep probability), `normalize` divides by the
///   sum of the weights (of the agreeing entries, with sign election), `rescale` matches the L1 norm.
public enum MergeSemantics: String, Sendable, CaseIterable { case locus, mergekit }

/// One parameter value as a mergekit config writes it: a scalar, a gradient (values interpolated
/// across the layers), or a list of name filters with values (the first that matches wins).
public indirect enum ParameterSetting: Sendable {
    case scalar(MergeRawValue)
    case gradient([MergeRawValue])
    case filtered([Conditional])

    public struct Conditional: Sendable {
        /// A substring of the tensor name (nil or "*": every tensor).
        public var filter: String?
        public var value: ParameterSetting
        public init(filter: String?, value: ParameterSetting) { self.filter = filter; self.value = value }
    }

    /// The value for tensor `name` at layer position `t` ∈ [0, 1] (nil: no filter matches). As
    /// mergekit: a gradient of n numbers gives, with s = t·(n − 1), i = ⌊s⌋, f = s − i, the value
    /// (1 − f)·v[i] + f·v[min(i + 1, n − 1)]; a gradient of other values gives v[⌊t·(n − 1)⌋].
    public func value(tensor name: String, t: Double) -> MergeRawValue? {
        switch self {
        case .scalar(let v): return v
        case .gradient(let values):
            guard !values.isEmpty else { return nil }
            let numbers = values.compactMap { v -> Double? in if case .number(let d) = v { return d } else { return nil } }
            let scaled = t * Double(values.count - 1)
            let i0 = Int(scaled)
            guard numbers.count == values.count else { return values[i0] }
            let i1 = min(values.count - 1, i0 + 1), frac = scaled - Double(i0)
            return .number((1 - frac) * numbers[i0] + frac * numbers[i1])
        case .filtered(let conditions):
            for c in conditions where c.filter == nil || c.filter == "*" || (!name.isEmpty && name.contains(c.filter!)) {
                return c.value.value(tensor: name, t: t)
            }
            return nil
        }
    }

    public var isScalar: Bool { if case .scalar = self { return true } else { return false } }

    /// Every filter string (except "*") and every gradient length, nested ones included.
    var filters: [String] {
        switch self {
        case .scalar, .gradient: return []
        case .filtered(let c): return c.flatMap { ($0.filter.map { $0 == "*" ? [] : [$0] } ?? []) + $0.value.filters }
        }
    }
    var gradientLengths: [Int] {
        switch self {
        case .scalar: return []
        case .gradient(let v): return [v.count]
        case .filtered(let c): return c.flatMap(\.value.gradientLengths)
        }
    }
}

/// Where a tensor lies in the stack of layers, for gradients: the layer index of a tensor is the
/// first component of its dotted name made of digits only (`model.layers.3.mlp.up_proj.weight` → 3);
/// the number of layers L is one more than the largest index. As mergekit, a layer tensor's position
/// is t = i / (L − 1) (t = 1 when L = 1) and a tensor outside the layers (embeddings, final norm,
/// head) has t = 0.
public struct Layering: Sendable {
    public let index: [String: Int]
    public let count: Int

    public init(tensorNames: [String]) {
        var index: [String: Int] = [:]
        for n in tensorNames {
            if let c = n.split(separator: ".").first(where: { !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }), let i = Int(c) {
                index[n] = i
            }
        }
        self.index = index
        count = (index.values.max() ?? -1) + 1
    }

    public func position(of name: String) -> Double {
        guard let i = index[name] else { return 0 }
        return count > 1 ? Double(i) / Double(count - 1) : 1
    }
}

/// Parameter values that depend on the tensor: resolved per tensor into a copy of the merge's
/// options (the method kernels read one `MergeOptions` per tensor and know nothing of filters).
public final class TensorSettings: Sendable {
    /// The merge's parameters (`parameters:`), by key.
    public let shared: [String: ParameterSetting]
    /// Each input's own parameters (`models[i].parameters`), by key.
    public let perInput: [[String: ParameterSetting]]
    /// The parameter table the keys are resolved through.
    let table: [MergeParameter]
    /// Per-input parameters that need a value for every input (mergekit's `weight`).
    let requiredPerInput: Set<String>
    /// The value an input gets when neither it nor `parameters:` gives one.
    let perInputDefault: [String: Double]
    /// The config, for messages.
    public let source: String

    init(shared: [String: ParameterSetting], perInput: [[String: ParameterSetting]], table: [MergeParameter],
         requiredPerInput: Set<String>, perInputDefault: [String: Double], source: String) {
        self.shared = shared; self.perInput = perInput; self.table = table
        self.requiredPerInput = requiredPerInput; self.perInputDefault = perInputDefault; self.source = source
    }

    /// Whether any value depends on the tensor (a filter or a gradient).
    public var variesByTensor: Bool {
        (Array(shared.values) + perInput.flatMap(\.values)).contains { !$0.isScalar }
    }

    /// `o` with every parameter resolved for tensor `name` at layer position `t`: an input's own
    /// setting first, then the merge's, then the default (as mergekit resolves them).
    public func options(for name: String, t: Double, from o: MergeOptions) throws(MergeParameterError) -> MergeOptions {
        var o = o
        for p in table {
            if p.kind.isPerInput {
                if case .pathsPerInput = p.kind { continue }   // scores files: scalars, set once
                var list: [MergeRawValue] = []
                var any = false
                for (i, own) in perInput.enumerated() {
                    if let v = own[p.name]?.value(tensor: name, t: t) ?? shared[p.name]?.value(tensor: name, t: t) {
                        list.append(v); any = true
                    } else if requiredPerInput.contains(p.name) {
                        throw MergeParameterError("models[\(i)] has no \(p.name) for tensor '\(name)' (give it under the model's parameters or under parameters)")
                    } else {
                        list.append(.number(perInputDefault[p.name] ?? 1))
                    }
                }
                if any || requiredPerInput.contains(p.name) { try p.apply(list, to: &o) }
            } else if let v = shared[p.name]?.value(tensor: name, t: t) {
                try p.apply([v], to: &o)
            }
        }
        return o
    }

    /// The range problems of `o` for this table (mergekit semantics; Locus's are the method's own checks).
    func problems(_ o: MergeOptions, inputCount: Int) -> [String] {
        guard o.semantics == .mergekit, !MergeConfig.ownTableMethods.contains(o.method.name) else { return MergeMethods.problems(o, inputCount: inputCount) }
        var out = table.filter { !$0.valid(o) }.map { "\(o.method.name): \($0.name) must be \($0.range.isEmpty ? "valid" : "in \($0.range)") (\($0.help))" }
        out += MergekitParameters.dellaProblems(o, inputCount: inputCount)
        if let w = o.weights, w.count != inputCount { out.append("\(w.count) weights for \(inputCount) inputs") }
        return out
    }

    /// The settings that are plain values, without the keys any place gives per tensor.
    var scalarsOnly: TensorSettings {
        let varying = Set((Array(shared) + perInput.flatMap { $0 }).filter { !$0.value.isScalar }.map(\.key))
        return TensorSettings(shared: shared.filter { !varying.contains($0.key) }, perInput: perInput.map { $0.filter { !varying.contains($0.key) } },
                              table: table.filter { !varying.contains($0.name) }, requiredPerInput: requiredPerInput, perInputDefault: perInputDefault,
                              source: source)
    }

    /// Every filter not found in any tensor name (each with where it is given), and the first
    /// gradient longer than the number of layers.
    func check(_ layering: Layering, tensorNames: [String]) -> (unmatched: [String], tooLong: String?) {
        var unmatched: [String] = [], tooLong: String? = nil
        var places: [(String, ParameterSetting)] = shared.sorted { $0.key < $1.key }.map { ("parameters.\($0.key)", $0.value) }
        for (i, own) in perInput.enumerated() { places += own.sorted { $0.key < $1.key }.map { ("models[\(i)].parameters.\($0.key)", $0.value) } }
        for (place, s) in places {
            for f in s.filters where !tensorNames.contains(where: { $0.contains(f) }) { unmatched.append("\(place): filter '\(f)'") }
            if tooLong == nil, let n = s.gradientLengths.first(where: { $0 > max(1, layering.count) }) {
                tooLong = "\(place): a gradient of \(n) values for \(layering.count) layer\(layering.count == 1 ? "" : "s") (layer tensors are named …​.<index>.…; "
                    + "a gradient has at most one value per layer)"
            }
        }
        return (unmatched, tooLong)
    }
}

extension MergeOptions {
    /// Whether tensor `name` is merged: it matches an `include` glob (or there is none) and no
    /// `exclude` glob (fnmatch patterns: `*`, `?`, `[…]`).
    public func merges(_ name: String) -> Bool {
        (include.isEmpty || include.contains { fnmatch($0, name, 0) == 0 }) && !exclude.contains { fnmatch($0, name, 0) == 0 }
    }

    /// The options of every tensor of `names` that is merged and whose parameters depend on the
    /// tensor, checked (ranges, the method's checks) before anything is written. A filter matching
    /// no tensor, or an include/exclude glob matching none, is a warning; a gradient longer than the
    /// number of layers is an error. `file` names the config in messages.
    public func perTensor(_ names: [String], inputCount: Int, file: String, warn: (String) -> Void) throws -> [String: MergeOptions] {
        for g in include where !names.contains(where: { fnmatch(g, $0, 0) == 0 }) { warn("\(file): include '\(g)' matches no tensor") }
        for g in exclude where !names.contains(where: { fnmatch(g, $0, 0) == 0 }) { warn("\(file): exclude '\(g)' matches no tensor") }
        guard let s = tensorSettings else { return [:] }
        let layering = Layering(tensorNames: names)
        let (unmatched, tooLong) = s.check(layering, tensorNames: names)
        if let tooLong { throw LocusError(file: s.source, tooLong) }
        for u in unmatched { warn("\(s.source): \(u) matches no tensor") }
        guard s.variesByTensor else { return [:] }
        var out: [String: MergeOptions] = [:]
        for n in names where merges(n) {
            let o: MergeOptions
            do { o = try s.options(for: n, t: layering.position(of: n), from: self) } catch { throw LocusError(file: s.source, error.message) }
            let problems = s.problems(o, inputCount: inputCount)
            guard problems.isEmpty else { throw LocusError(file: s.source, "tensor '\(n)': " + problems.joined(separator: "; ")) }
            out[n] = o
        }
        return out
    }
}

/// A merge config (`locus merge --config FILE`): mergekit's YAML format.
///
///     merge_method: ties
///     base_model: base.h5                 # a checkpoint (HF folder, safetensors, Locus, torch)
///     models:
///       - model: ft-a/                    # a fine-tuned checkpoint, or a Locus task vector
///         parameters: {weight: 1.0, density: [{filter: attn, value: 0.3}, {value: 0.7}]}
///       - model: ft-b/
///         parameters: {weight: [0.2, 1.0], density: 0.5}   # a gradient across the layers
///     parameters: {normalize: true, lambda: 1.0}
///     dtype: float32
///     exclude: ["*embed*", "lm_head*"]    # Locus: tensors copied from the base unchanged
///
/// Every numeric parameter may be a scalar, a gradient or a list of filters; per-model parameters
/// may also be given under `parameters` for all models. Keys mergekit has and Locus does not
/// implement (`slices`, `modules`, `tokenizer_source`, `tokenizer`, `chat_template`) are refused, as
/// are unknown keys, with the key's name.
public struct MergeConfig: Sendable {
    public struct Model: Sendable {
        public var path: String
        public var parameters: [String: ParameterSetting]
    }
    public var path: String
    public var semantics: MergeSemantics
    public var method: any MergeMethodDefinition
    public var baseModel: String?
    public var models: [Model]
    public var parameters: [String: ParameterSetting]
    public var dtype: LocusDType?
    public var outDtype: LocusDType?
    public var include: [String] = []
    public var exclude: [String] = []

    /// Top-level keys of mergekit that Locus refuses, and why.
    static let refused: [String: String] = [
        "slices": "layer slices (stacking layer ranges) are not implemented; list whole models under models",
        "modules": "per-module configs are not implemented; list whole models under models",
        "tokenizer_source": "Locus merges tensors only and does not build a tokenizer or resize embeddings",
        "tokenizer": "Locus merges tensors only and does not build a tokenizer or resize embeddings",
        "chat_template": "Locus writes no tokenizer files or chat template",
    ]
    static let keys = ["merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "semantics", "include", "exclude"]

    /// The methods a mergekit-semantics config can name (mergekit's names).
    public static let mergekitMethods = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear",
                                         "linear", "slerp", "model_stock", "nuslerp", "karcher", "sce"]
    /// Of those, the methods whose own parameter table already uses mergekit's keys and semantics.
    static let ownTableMethods: Set<String> = ["model_stock", "nuslerp", "karcher", "sce"]

    public static func load(_ path: String) throws -> MergeConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw LocusError(file: path, "cannot read the merge config") }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> MergeConfig {
        func fail(_ m: String) -> LocusError { LocusError(file: path, m) }
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw fail("is not valid YAML: \(error)") }
        guard let root, let top = root.mapping else { throw fail("is not a merge config: expected a mapping with merge_method and models") }
        var given: [String: Node] = [:]
        for (k, v) in top {
            guard let key = k.string else { throw fail("has a key that is not a string") }
            if let why = refused[key] { throw fail("key '\(key)' is not supported by locus merge: \(why)") }
            guard keys.contains(key) else { throw fail("unknown key '\(key)' (known: \(keys.joined(separator: ", ")))") }
            given[key] = v
        }
        let dir = (path as NSString).deletingLastPathComponent
        func resolvePath(_ p: String) -> String { p.hasPrefix("/") || dir.isEmpty ? p : dir + "/" + p }
        func string(_ key: String) throws -> String? {
            guard let n = given[key] else { return nil }
            guard case .scalar = n, let s = n.string, n.null == nil else { throw fail("\(key) must be a string") }
            return s
        }
        func strings(_ key: String) throws -> [String] {
            guard let n = given[key] else { return [] }
            if case .scalar = n, let s = n.string { return [s] }
            guard case .sequence(let seq) = n else { throw fail("\(key) must be a glob or a list of globs") }
            return try seq.map { e in guard case .scalar = e, let s = e.string else { throw fail("\(key) must list globs (strings)") }; return s }
        }
        let semantics: MergeSemantics
        if let s = try string("semantics") {
            guard let x = MergeSemantics(rawValue: s) else { throw fail("semantics '\(s)' is not one of locus, mergekit") }
            semantics = x
        } else {
            semantics = .mergekit
        }
        guard let methodName = try string("merge_method") else { throw fail("merge_method is missing") }
        guard let method = MergeMethods.named(methodName) else {
            let known = semantics == .mergekit ? mergekitMethods : MergeMethods.names
            throw fail("merge_method '\(methodName)' is not supported (\(semantics.rawValue) semantics: \(known.joined(separator: ", ")))")
        }
        if semantics == .mergekit && !mergekitMethods.contains(method.name) {
            throw fail("merge_method '\(method.name)' is a Locus method, not a mergekit one: add 'semantics: locus' to the config")
        }
        func dtype(_ key: String) throws -> LocusDType? {
            guard let s = try string(key) else { return nil }
            guard let d = LocusDType(rawValue: s), d.isFloatingPoint else { throw fail("\(key) '\(s)' is not float32, float16, bfloat16 or float64") }
            return d
        }
        let table = MergeConfig.table(method, semantics)
        let perInputNames = Set(table.filter { $0.kind.isPerInput }.map(\.name))
        func settings(_ node: Node?, place: String, perModel: Bool) throws -> [String: ParameterSetting] {
            guard let node else { return [:] }
            if node.null != nil { return [:] }
            guard let m = node.mapping else { throw fail("\(place) must be a mapping of parameter names to values") }
            var out: [String: ParameterSetting] = [:]
            for (k, v) in m {
                guard let key = k.string else { throw fail("\(place) has a key that is not a string") }
                guard let p = table.first(where: { $0.name == key }) else {
                    throw fail("unknown key \(place).\(key) for \(method.name) (\(semantics.rawValue) semantics; its keys: \(table.map(\.name).joined(separator: ", ")))")
                }
                if perModel && !perInputNames.contains(key) {
                    throw fail("\(place).\(key): \(key) is a parameter of the whole merge; give it under parameters")
                }
                var s = try setting(v, place: "\(place).\(key)", fail: fail)
                if case .pathsPerInput = p.kind {
                    guard case .scalar(let raw) = s else { throw fail("\(place).\(key) must be one path") }
                    s = .scalar(.text(resolvePath(raw.string)))
                }
                // Type errors of scalar values now (filters and gradients are checked per tensor).
                if case .scalar(let raw) = s, !p.kind.isPerInput {
                    var scratch = MergeOptions()
                    do { try p.apply([raw], to: &scratch) } catch { throw fail("\(place).\(error.message)") }
                }
                out[key] = s
            }
            return out
        }
        let parameters = try settings(given["parameters"], place: "parameters", perModel: false)
        var models: [Model] = []
        guard let list = given["models"], case .sequence(let seq) = list, !seq.isEmpty else { throw fail("models must list the models to merge") }
        for (i, e) in seq.enumerated() {
            guard let m = e.mapping else { throw fail("models[\(i)] must be a mapping with model (and parameters)") }
            var path: String?, params: Node?
            for (k, v) in m {
                switch k.string {
                case "model": guard case .scalar = v, let s = v.string else { throw fail("models[\(i)].model must be a path") }; path = s
                case "parameters": params = v
                default: throw fail("unknown key models[\(i)].\(k.string ?? "?") (known: model, parameters)")
                }
            }
            guard let path else { throw fail("models[\(i)].model is missing") }
            models.append(Model(path: resolvePath(path), parameters: try settings(params, place: "models[\(i)].parameters", perModel: true)))
        }
        return MergeConfig(path: path, semantics: semantics, method: method, baseModel: try string("base_model").map(resolvePath), models: models,
                           parameters: parameters, dtype: try dtype("dtype"), outDtype: try dtype("out_dtype"),
                           include: try strings("include"), exclude: try strings("exclude"))
    }

    static func setting(_ node: Node, place: String, fail: (String) -> LocusError) throws -> ParameterSetting {
        func raw(_ n: Node) -> MergeRawValue? {
            guard case .scalar(let s) = n else { return nil }
            if s.style != .plain { return .text(s.string) }   // quoted: a string
            if n.null != nil { return nil }
            if let b = n.bool { return .bool(b) }
            if let d = n.float { return .number(d) }
            return .text(s.string)
        }
        func conditional(_ m: Node.Mapping) throws -> ParameterSetting.Conditional {
            var filter: String?, value: ParameterSetting?
            for (k, v) in m {
                switch k.string {
                case "filter": guard case .scalar = v, let s = v.string else { throw fail("\(place): filter must be a string") }; filter = s
                case "value": value = try setting(v, place: place, fail: fail)
                default: throw fail("\(place): unknown key '\(k.string ?? "?")' in a filtered value (known: filter, value)")
                }
            }
            guard let value else { throw fail("\(place): a filtered value needs value") }
            return .init(filter: filter, value: value)
        }
        switch node {
        case .scalar:
            guard let r = raw(node) else { throw fail("\(place) has no value") }
            return .scalar(r)
        case .mapping(let m):
            return .filtered([try conditional(m)])
        case .sequence(let seq):
            if seq.allSatisfy({ if case .scalar = $0 { return true } else { return false } }) {
                return .gradient(try seq.map { n in guard let r = raw(n) else { throw fail("\(place): a gradient value is empty") }; return r })
            }
            return .filtered(try seq.map { n in
                guard let m = n.mapping else { throw fail("\(place): a list is either a gradient (values) or filters ({filter, value}), not both") }
                return try conditional(m)
            })
        }
    }

    /// The parameter table a config's keys are resolved through: the method's own (Locus
    /// semantics) or mergekit's names for it (mergekit semantics).
    static func table(_ method: any MergeMethodDefinition, _ semantics: MergeSemantics) -> [MergeParameter] {
        guard semantics == .mergekit, !ownTableMethods.contains(method.name) else { return method.parameters }
        return MergekitParameters.table(method.name)
    }

    /// The base (nil for model methods), the inputs and the options. Inputs equal to the base are
    /// left out of a task-vector merge (mergekit lists the base among the models too).
    public func plan() throws -> (base: String?, inputs: [String], options: MergeOptions) {
        func fail(_ m: String) -> LocusError { LocusError(file: path, m) }
        var o = MergeOptions()
        // A method with a form on full models (nuslerp) takes it when the config has no base_model.
        let method = baseModel == nil ? self.method.withoutBase ?? self.method : self.method
        o.method = method
        o.semantics = semantics
        o.include = include
        o.exclude = exclude
        if let d = outDtype ?? dtype { o.dtype = d }
        var models = self.models
        var base: String? = nil
        switch method.inputs {
        case .taskVectors:
            guard let baseModel else { throw fail("\(method.name) merges into base_model, which is missing") }
            base = baseModel
            models.removeAll { $0.path == baseModel }
            guard !models.isEmpty else { throw fail("models lists no model besides base_model") }
        case .models:
            if let baseModel {
                guard let i = models.firstIndex(where: { $0.path == baseModel }) else {
                    throw fail("\(method.name) merges the listed models: base_model must be one of them or absent")
                }
                models.insert(models.remove(at: i), at: 0)   // mergekit's base is slerp's t = 0 end
            }
        }
        let table = MergeConfig.table(method, semantics)
        let settings = TensorSettings(shared: parameters, perInput: models.map(\.parameters), table: table,
                                      requiredPerInput: semantics == .mergekit && table.contains { $0.name == "weight" } ? ["weight"] : [],
                                      perInputDefault: ["weight": 1, "density": 1, "gamma": 0.01, "epsilon": 0.15], source: path)
        // Scores files (Fisher) are per model and fixed.
        for p in table { if case .pathsPerInput = p.kind {
            let given = models.map { $0.parameters[p.name] }
            guard given.contains(where: { $0 != nil }) else { continue }
            var list: [MergeRawValue] = []
            for (i, g) in given.enumerated() {
                guard case .scalar(let v)? = g else { throw fail("models[\(i)].parameters.\(p.name) is missing (given for other models)") }
                list.append(v)
            }
            do { try p.apply(list, to: &o) } catch { throw fail("models[].parameters.\(error.message)") }
        } }
        // Values that do not depend on the tensor are set once (and recorded in the provenance);
        // the others are resolved per tensor by the driver.
        do { o = try settings.scalarsOnly.options(for: "", t: 0, from: o) } catch { throw fail(error.message) }
        let problems = settings.problems(o, inputCount: models.count)
        guard problems.isEmpty else { throw fail(problems.joined(separator: "; ")) }
        if settings.variesByTensor || semantics == .mergekit { o.tensorSettings = settings }
        return (base, models.map(\.path), o)
    }
}

/// mergekit's parameter names for the methods it shares with Locus, bound to `MergeOptions`.
enum MergekitParameters {
    static func perInput(_ name: String, _ field: WritableKeyPath<MergeOptions, [Double]?> & Sendable, range: String = "", help: String,
                         valid: @escaping @Sendable (Double) -> Bool) -> MergeParameter {
        MergeParameter(name: name, cliAliases: [], kind: .numbersPerInput, range: range, help: help, required: false,
                       valid: { $0[keyPath: field]?.allSatisfy(valid) ?? true },
                       set: { o, v in if case .numbers(let w) = v { o[keyPath: field] = w } },
                       get: { o in o[keyPath: field].map { .array($0.map { .number($0) }) } })
    }
    static func optionalBool(_ name: String, _ field: WritableKeyPath<MergeOptions, Bool?> & Sendable, help: String) -> MergeParameter {
        MergeParameter(name: name, cliAliases: [], kind: .bool, range: "", help: help, required: false, valid: { _ in true },
                       set: { o, v in if case .bool(let b) = v { o[keyPath: field] = b } }, get: { o in o[keyPath: field].map { .bool($0) } })
    }
    static let weight = perInput("weight", \.weights, help: "the model's weight (required)", valid: { $0.isFinite })

    static func table(_ method: String) -> [MergeParameter] {
        switch method {
        case "linear": return [weight, .bool("normalize", \.linearNormalize, help: "divide by the sum of the weights")]
        case "slerp": return [.number("t", \.slerpT, range: "[0, 1]", help: "interpolation factor", valid: { $0 >= 0 && $0 <= 1 })]
        default:
            var p: [MergeParameter] = [
                weight,
                perInput("density", \.densities, range: "[0, ∞)", help: "fraction kept (DARE: keep probability); 1 keeps all",
                         valid: { $0.isFinite && $0 >= 0 }),
                .number("lambda", \.lambda, help: "scale of the merged delta"),
                optionalBool("normalize", \.mergekitNormalize, help: "divide by the sum of the (agreeing) weights"),
                optionalBool("rescale", \.mergekitRescale, help: "rescale sparsified deltas to their L1 norm"),
                MergeParameter(name: "int8_mask", cliAliases: [], kind: .bool, range: "", help: "mergekit's mask storage (no effect on the result)",
                               required: false, valid: { _ in true }, set: { _, _ in }, get: { _ in nil }),
                .unsigned("seed", \.seed, help: "seed of DARE's and DELLA's drop decisions (Locus's generator; docs/talos.md §DARE)"),
            ]
            if method.hasPrefix("breadcrumbs") {
                p.append(perInput("gamma", \.gammas, range: "[0, 1]", help: "fraction of largest |δ| removed", valid: { $0.isFinite && $0 >= 0 && $0 <= 1 }))
            }
            if method.hasPrefix("della") {
                p.append(perInput("epsilon", \.epsilons, range: "density ± epsilon in (0, 1)",
                                  help: "half the spread of keep probabilities over the |δ| ranks (default 0.15)", valid: { $0.isFinite }))
            }
            return p
        }
    }
}
