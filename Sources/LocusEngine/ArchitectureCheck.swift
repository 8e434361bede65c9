import Foundation
import LocusFormat

/// The one reading of a model description (spec/FORMAT.md §2.1) and the one check of a tensor
/// listing against it. `Model.load`, `locus validate` and `locus convert --architecture` all go
/// through here, so a description means the same thing and a mismatch reads the same everywhere.
public enum ArchitectureDescription {
    /// Decodes `text` and checks the engine's rules (`Architecture.validate`). Errors name `file`
    /// and `object` (where the text came from) and say what was expected.
    public static func decode(_ text: String, file: String, object: String? = "/architecture") throws -> Architecture {
        let arch: Architecture
        do { arch = try JSONDecoder().decode(Architecture.self, from: Data(text.utf8)) } catch {
            throw LocusError(file: file, object: object, "is not a model description (spec/FORMAT.md §2.1): \(describeDecoding(error))")
        }
        do { try arch.validate() } catch let e as EngineError { throw LocusError(file: file, object: object, e.description) }
        return arch
    }

    /// The description stored in a checkpoint (`/architecture`, or a folder's metadata), or nil
    /// when it holds none.
    public static func stored(in source: any CheckpointSource) throws -> Architecture? {
        guard let text = try source.architecture() else { return nil }
        return try decode(text, file: source.path, object: "/architecture")
    }

    /// A description from a JSON file, or from a Locus checkpoint's `/architecture` (told apart by
    /// the HDF5 signature).
    public static func load(_ path: String) throws -> Architecture {
        guard let bytes = FileManager.default.contents(atPath: path) else { throw LocusError(file: path, "cannot read the architecture file") }
        if bytes.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {
            guard let arch = try stored(in: try CheckpointReader(path: path)) else {
                throw LocusError(file: path, object: "/architecture", "the checkpoint has no model description")
            }
            return arch
        }
        guard let text = String(data: bytes, encoding: .utf8) else { throw LocusError(file: path, "is neither UTF-8 JSON nor an HDF5 checkpoint") }
        return try decode(text, file: path, object: nil)
    }

    /// A one-line account of a JSON decoding error: what is wrong and at which key path.
    public static func describeDecoding(_ error: any Error) -> String {
        func path(_ keys: [any CodingKey]) -> String {
            keys.isEmpty ? "the top level" : keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case DecodingError.keyNotFound(let key, let ctx): return "missing key '\(key.stringValue)' at \(path(ctx.codingPath))"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx): return "\(ctx.debugDescription) at \(path(ctx.codingPath))"
        case DecodingError.dataCorrupted(let ctx): return "invalid JSON (\(ctx.debugDescription)) at \(path(ctx.codingPath))"
        default: return "\(error)"
        }
    }
}

/// One parameter a description implies that a tensor listing does not hold as it should.
public struct ParameterMismatch: Sendable, Equatable, CustomStringConvertible {
    public enum Problem: Sendable, Equatable {
        /// No tensor of that name.
        case missing
        /// The tensor has another shape.
        case shape(found: [Int])
        /// The tensor is not floating point.
        case dtype(found: String)
    }
    /// The parameter's name, as the description implies it.
    public var parameter: String
    /// The shape the description implies.
    public var expectedShape: [Int]
    public var problem: Problem
    /// Where the offending tensor is (its file and object path); nil when it is missing.
    public var file: String?
    public var object: String?

    public init(parameter: String, expectedShape: [Int], problem: Problem, file: String? = nil, object: String? = nil) {
        self.parameter = parameter; self.expectedShape = expectedShape; self.problem = problem
        self.file = file; self.object = object
    }

    public var description: String {
        switch problem {
        case .missing: "missing \(parameter) \(expectedShape), which the architecture implies"
        case .shape(let found): "\(parameter) has shape \(found), the architecture implies \(expectedShape)"
        case .dtype(let found): "\(parameter) is \(found), model parameters must be floating point"
        }
    }
}

public enum ArchitectureCheck {
    /// Every parameter of `model` that `source` lacks, holds with another shape, or holds in a
    /// non-floating-point dtype, in parameter order. Extra tensors are not problems.
    public static func mismatches(_ model: Model, in source: any CheckpointSource) -> [ParameterMismatch] {
        var out: [ParameterMismatch] = []
        for p in model.parameters {
            guard let t = source.tensor(named: p.name) else {
                out.append(ParameterMismatch(parameter: p.name, expectedShape: p.value.shape, problem: .missing)); continue
            }
            let at = source.location(of: t)
            if t.shape != p.value.shape {
                out.append(ParameterMismatch(parameter: p.name, expectedShape: p.value.shape, problem: .shape(found: t.shape), file: at.file, object: at.object))
            }
            if !t.dtype.isFloatingPoint {
                out.append(ParameterMismatch(parameter: p.name, expectedShape: p.value.shape, problem: .dtype(found: t.dtype.rawValue), file: at.file, object: at.object))
            }
        }
        return out
    }

    /// The mismatches as one error about `file`: every problem named (the first `limit`), the
    /// object that of the first misfit tensor, or /tensors when only parameters are missing.
    public static func error(_ problems: [ParameterMismatch], file: String, limit: Int = 8) -> LocusError {
        let object = problems.first { $0.object != nil }?.object ?? "/tensors"
        let shown = problems.prefix(limit).map(\.description).joined(separator: "; ") + (problems.count > limit ? "; …" : "")
        return LocusError(file: file, object: object, "\(problems.count) parameter(s) do not fit the architecture: \(shown)")
    }
}
