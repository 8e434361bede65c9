import Foundation
import LocusFormat

/// One merge method (one file each under Methods/, registered in `MergeMethods.all`).
///
/// `name` is the one spelling of the method: the CLI's `--method` value, the recipe's
/// `merge_method` and the provenance's `method`. `parameters` is the method's table of options:
/// command-line flags, recipe keys, validation, provenance and the `--help` methods table all come
/// from it. `producer` says how the output is made by the streaming driver (docs/merging.md).
public protocol MergeMethodDefinition: Sendable {
    var name: String { get }
    /// Older spellings accepted for `name` (never written).
    var aliases: [String] { get }
    /// The method's semantics, for `--help` (short lines).
    var summary: [String] { get }
    /// The paper(s): authors, year, section.
    var citation: String { get }
    var inputs: MergeInputKind { get }
    var parameters: [MergeParameter] { get }
    /// Checks across parameters and inputs that the per-parameter ranges cannot express.
    func validate(_ o: MergeOptions, inputCount: Int) -> [String]
    var producer: MergeProducer { get }
    /// The same method on full models, taken when no base is given (nil: the method needs one).
    var withoutBase: (any MergeMethodDefinition)? { get }
}

extension MergeMethodDefinition {
    public var aliases: [String] { [] }
    public func validate(_ o: MergeOptions, inputCount: Int) -> [String] { [] }
    public var withoutBase: (any MergeMethodDefinition)? { nil }
    /// This method's parameter named `name` (its canonical name or a command-line alias).
    public func parameter(_ name: String) -> MergeParameter? {
        parameters.first { $0.name == name || $0.cliAliases.contains(name) || $0.flag == name }
    }
}

/// What the positional inputs of a method are.
public enum MergeInputKind: Sendable, Equatable {
    /// A base checkpoint and task vectors made from it.
    case taskVectors
    /// Full checkpoints of one architecture, no base; `count` models exactly when given.
    case models(count: Int?)
}

/// A value of a parameter as given (command line text, or a recipe scalar).
public enum MergeRawValue: Sendable {
    case text(String), number(Double), bool(Bool)
    public var string: String {
        switch self {
        case .text(let s): s
        case .number(let d): d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .bool(let b): String(b)
        }
    }
}

/// One parameter of a method: its name (recipe and provenance key; the command-line flag is
/// `--name` with `_` → `-`), type, default (the `MergeOptions` field's initial value), range and help.
public struct MergeParameter: Sendable {
    public enum Kind: Sendable {
        case number, unsigned, integer, bool, path
        case choice([String])
        /// One number per input (command line: comma-separated; recipe: per model).
        case numbersPerInput
        /// One path per input (command line: space-separated; recipe: per model).
        case pathsPerInput
    }
    public let name: String
    /// Older command-line spellings (without `--`).
    public let cliAliases: [String]
    public let kind: Kind
    /// The valid range in words, e.g. "(0, 1]"; empty when any value of the kind is valid.
    public let range: String
    public let help: String
    /// Whether the method needs it given (no default).
    public let required: Bool
    let valid: @Sendable (MergeOptions) -> Bool
    let set: @Sendable (inout MergeOptions, MergeValue) -> Void
    let get: @Sendable (MergeOptions) -> JSONValue?

    /// The command-line flag, without `--`.
    public var flag: String { name.replacingOccurrences(of: "_", with: "-") }

    /// A number parameter bound to a `MergeOptions` field.
    public static func number(_ name: String, _ field: WritableKeyPath<MergeOptions, Double> & Sendable, aliases: [String] = [], range: String = "",
                              help: String, valid: @escaping @Sendable (Double) -> Bool = { $0.isFinite }) -> MergeParameter {
        MergeParameter(name: name, cliAliases: aliases, kind: .number, range: range, help: help, required: false,
                       valid: { valid($0[keyPath: field]) }, set: { o, v in if case .number(let d) = v { o[keyPath: field] = d } },
                       get: { .number($0[keyPath: field]) })
    }

    public static func unsigned(_ name: String, _ field: WritableKeyPath<MergeOptions, UInt64> & Sendable, aliases: [String] = [], range: String = "",
                                help: String, valid: @escaping @Sendable (UInt64) -> Bool = { _ in true }) -> MergeParameter {
        MergeParameter(name: name, cliAliases: aliases, kind: .unsigned, range: range, help: help, required: false,
                       valid: { valid($0[keyPath: field]) }, set: { o, v in if case .unsigned(let u) = v { o[keyPath: field] = u } },
                       get: { .integer(Int64(bitPattern: $0[keyPath: field])) })
    }

    public static func integer(_ name: String, _ field: WritableKeyPath<MergeOptions, Int> & Sendable, aliases: [String] = [], range: String = "",
                               help: String, valid: @escaping @Sendable (Int) -> Bool = { _ in true }) -> MergeParameter {
        MergeParameter(name: name, cliAliases: aliases, kind: .integer, range: range, help: help, required: false,
                       valid: { valid($0[keyPath: field]) }, set: { o, v in if case .unsigned(let u) = v { o[keyPath: field] = Int(u) } },
                       get: { .integer(Int64($0[keyPath: field])) })
    }

    public static func bool(_ name: String, _ field: WritableKeyPath<MergeOptions, Bool> & Sendable, aliases: [String] = [], help: String) -> MergeParameter {
        MergeParameter(name: name, cliAliases: aliases, kind: .bool, range: "", help: help, required: false,
                       valid: { _ in true }, set: { o, v in if case .bool(let b) = v { o[keyPath: field] = b } }, get: { .bool($0[keyPath: field]) })
    }

    public static func choice<T: RawRepresentable & Sendable>(_ name: String, _ field: WritableKeyPath<MergeOptions, T> & Sendable, _ values: [T],
                                                             aliases: [String] = [], help: String) -> MergeParameter where T.RawValue == String {
        MergeParameter(name: name, cliAliases: aliases, kind: .choice(values.map(\.rawValue)), range: values.map(\.rawValue).joined(separator: "|"),
                       help: help, required: false, valid: { o in values.map(\.rawValue).contains(o[keyPath: field].rawValue) },
                       set: { o, v in if case .text(let s) = v, let x = T(rawValue: s) { o[keyPath: field] = x } },
                       get: { .string($0[keyPath: field].rawValue) })
    }

    /// The default, as `--help` shows it.
    public var defaultText: String {
        if required { return "required" }
        switch get(MergeOptions()) {
        case .number(let d)?: return d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .integer(let i)?: return String(i)
        case .bool(let b)?: return String(b)
        case .string(let s)?: return s
        default: return kind.isPerInput ? (name == "weight" ? "1 each" : "none") : "none"
        }
    }

    /// Parses a given value into `o` (the range is checked by `MergeMethods.validate`).
    public func apply(_ raw: [MergeRawValue], to o: inout MergeOptions) throws(MergeParameterError) {
        func bad(_ what: String) -> MergeParameterError { MergeParameterError("\(name) must be \(what), got '\(raw.map(\.string).joined(separator: " "))'") }
        switch kind {
        case .number:
            guard raw.count == 1 else { throw bad("one number") }
            let d: Double?
            if case .number(let x) = raw[0] { d = x } else { d = Double(raw[0].string) }
            guard let d, d.isFinite else { throw bad("a finite number") }
            set(&o, .number(d))
        case .unsigned:
            guard raw.count == 1 else { throw bad("one integer") }
            let u: UInt64?
            if case .number(let x) = raw[0] { u = x >= 0 && x == x.rounded() && x < 1.8e19 ? UInt64(x) : nil } else { u = UInt64(raw[0].string) }
            guard let u else { throw bad("an integer ≥ 0") }
            set(&o, .unsigned(u))
        case .integer:
            guard raw.count == 1 else { throw bad("one integer") }
            let u: UInt64?
            if case .number(let x) = raw[0] { u = x >= 0 && x == x.rounded() && x < 1e15 ? UInt64(x) : nil } else { u = UInt64(raw[0].string) }
            guard let u, u <= UInt64(Int.max) else { throw bad("an integer ≥ 0") }
            set(&o, .unsigned(u))
        case .bool:
            guard raw.count == 1 else { throw bad("true or false") }
            let b: Bool?
            if case .bool(let x) = raw[0] { b = x } else { b = ["true": true, "false": false][raw[0].string.lowercased()] }
            guard let b else { throw bad("true or false") }
            set(&o, .bool(b))
        case .path:
            guard raw.count == 1 else { throw bad("one path") }
            set(&o, .text(raw[0].string))
        case .choice(let values):
            guard raw.count == 1, values.contains(raw[0].string) else { throw bad("one of \(values.joined(separator: ", "))") }
            set(&o, .text(raw[0].string))
        case .numbersPerInput:
            let parts = raw.flatMap { r -> [String] in
                if case .number(let d) = r { return [String(d)] }
                return r.string.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            }
            let numbers = parts.map { Double($0) }
            guard !numbers.isEmpty, numbers.allSatisfy({ $0 != nil && $0!.isFinite }) else { throw bad("numbers (comma-separated)") }
            set(&o, .numbers(numbers.map { $0! }))
        case .pathsPerInput:
            guard !raw.isEmpty else { throw bad("paths") }
            set(&o, .paths(raw.map(\.string)))
        }
    }
}

extension MergeParameter.Kind {
    public var isPerInput: Bool { switch self { case .numbersPerInput, .pathsPerInput: true; default: false } }
    var takesValue: Bool { if case .bool = self { return false }; return true }
}

/// A parsed parameter value.
public enum MergeValue: Sendable {
    case number(Double), unsigned(UInt64), bool(Bool), text(String), numbers([Double]), paths([String])
}

public struct MergeParameterError: Error, Sendable {
    public let message: String
    init(_ message: String) { self.message = message }
}

/// The registered methods.
public enum MergeMethods {
    /// Registration: one line per method file.
    public static let all: [any MergeMethodDefinition] = [
        GTAMethod.taskArithmetic, GTAMethod.ties, GTAMethod.dareLinear, GTAMethod.dareTies, GTAMethod.breadcrumbs, GTAMethod.breadcrumbsTies,
        TallMethod(), ConsensusMethod(), FisherMethod(), LinearMethod(), SlerpMethod(),
        GTAMethod.della, GTAMethod.dellaLinear, ModelStockMethod(), NuSlerpMethod(), KarcherMethod(), SceMethod(),
    ]

    public static var names: [String] { all.map(\.name) }

    /// The method named `name` (or one of its aliases).
    public static func named(_ name: String) -> (any MergeMethodDefinition)? {
        all.first { $0.name == name || $0.aliases.contains(name) }
    }

    /// Every problem of `o` for its method with `inputCount` inputs: each parameter's range, then
    /// the method's own checks.
    public static func problems(_ o: MergeOptions, inputCount: Int) -> [String] {
        let m = o.method
        var out: [String] = []
        for p in m.parameters where !p.valid(o) {
            if p.required { out.append("\(m.name) needs --\(p.flag) (\(p.help))") }
            else { out.append("\(m.name): \(p.name) must be \(p.range.isEmpty ? "valid" : "in \(p.range)") (--\(p.flag))") }
        }
        return out + m.validate(o, inputCount: inputCount)
    }

    /// The parameters recorded in the output's provenance: the method, then each of its parameters.
    public static func provenance(_ o: MergeOptions) -> [String: JSONValue] {
        var out: [String: JSONValue] = ["method": .string(o.method.name)]
        for p in MergeConfig.table(o.method, o.semantics) { if let v = p.get(o) { out[p.name] = v } }
        if o.semantics != .locus { out["semantics"] = .string(o.semantics.rawValue) }
        if o.tensorSettings?.variesByTensor == true { out["per_tensor"] = .bool(true) }   // filters or gradients: the config has them
        if !o.include.isEmpty { out["include"] = .array(o.include.map { .string($0) }) }
        if !o.exclude.isEmpty { out["exclude"] = .array(o.exclude.map { .string($0) }) }
        return out
    }

    /// Parses the method's parameters from command-line tokens (`--flag value`, `--flag=value`,
    /// `--flag`/`--no-flag` for booleans, `--flag A B …` up to the next option for paths); every
    /// other token is returned as a positional input, in order.
    public static func parseCommandLine(_ tokens: [String], into o: inout MergeOptions) throws(MergeParameterError) -> [String] {
        let m = o.method
        var positional: [String] = []
        var i = 0
        while i < tokens.count {
            let tok = tokens[i]
            guard tok.hasPrefix("--"), tok.count > 2 else { positional.append(tok); i += 1; continue }
            var key = String(tok.dropFirst(2)), inline: String? = nil
            if let eq = key.firstIndex(of: "=") { inline = String(key[key.index(after: eq)...]); key = String(key[..<eq]) }
            var negated = false
            var p = m.parameter(key)
            if p == nil, key.hasPrefix("no-"), let q = m.parameter(String(key.dropFirst(3))), !q.kind.takesValue { p = q; negated = true }
            guard let p else {
                let known = m.parameters.map { "--\($0.flag)" }.joined(separator: ", ")
                let owners = all.filter { $0.parameter(key) != nil }.map(\.name)
                throw MergeParameterError("--\(key) is not a parameter of \(m.name) (its parameters: \(known.isEmpty ? "none" : known))"
                                          + (owners.isEmpty ? "" : "; it belongs to \(owners.joined(separator: ", "))"))
            }
            i += 1
            var values: [MergeRawValue] = []
            if let inline { values = [.text(inline)] }
            else if !p.kind.takesValue { values = [.bool(!negated)] }
            else if case .pathsPerInput = p.kind {
                while i < tokens.count && !tokens[i].hasPrefix("--") { values.append(.text(tokens[i])); i += 1 }
            } else {
                guard i < tokens.count else { throw MergeParameterError("--\(key) needs a value") }
                values = [.text(tokens[i])]; i += 1
            }
            if negated && inline != nil { throw MergeParameterError("--\(key) takes no value") }
            try p.apply(values, to: &o)
        }
        return positional
    }

    /// The `--help` table: each method's semantics, citation and parameters (name, default, range, help).
    public static func helpTable() -> String {
        var lines: [String] = []
        for m in all {
            var inputs: String
            switch m.inputs {
            case .taskVectors: inputs = "BASE TASK-VECTOR…"
            case .models(let n?): inputs = "\(n) models"
            case .models(nil): inputs = "MODEL…"
            }
            if let alone = m.withoutBase, case .models(let n?) = alone.inputs { inputs += ", or \(n) models" }
            lines.append("  \(m.name)  (\(inputs)\(m.aliases.isEmpty ? "" : "; also --method \(m.aliases.joined(separator: ", "))"))")
            lines.append(contentsOf: wrap(m.summary.joined(separator: " "), indent: "      "))
            lines.append(contentsOf: wrap(m.citation, indent: "      "))
            for p in m.parameters {
                var flag = "--\(p.flag)"
                if case .bool = p.kind { flag = "--[no-]\(p.flag)" }
                let range = p.range.isEmpty ? "" : ", \(p.range)"
                let alias = p.cliAliases.isEmpty ? "" : " (also --\(p.cliAliases.joined(separator: ", --")))"
                lines.append(contentsOf: wrap("\(flag) = \(p.defaultText)\(range): \(p.help)\(alias)", indent: "        "))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Words of `text` in lines of at most `width` columns (continuation lines indented 2 more).
    public static func wrap(_ text: String, indent: String, width: Int = 78, hanging: String = "  ") -> [String] {
        var out: [String] = [], line = indent
        for word in text.split(separator: " ") {
            if line.count + word.count + 1 > width && line != indent { out.append(line); line = indent + hanging }
            line += (line.hasSuffix(" ") || line == indent ? "" : " ") + word
        }
        if line.trimmingCharacters(in: .whitespaces) != "" { out.append(line) }
        return out
    }
}
