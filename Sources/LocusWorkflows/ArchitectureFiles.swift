import Foundation
import LocusFormat
import LocusEngine

/// Model descriptions against the tensors of files, for `validate` and `convert --architecture`;
/// both use the one decoder (`ArchitectureDescription`) and the one checker (`ArchitectureCheck`)
/// that `Model.load` uses.
public enum ArchitectureFiles {
    /// §2.1 rules that need the engine, for a Locus checkpoint whose other rules hold: the stored
    /// description decodes and builds, and /tensors holds every parameter it implies. One finding
    /// per problem, naming the tensor. A file without a description gives none.
    public static func findings(_ path: String) -> [Finding] {
        func problem(_ object: String, _ message: String) -> Finding { Finding(severity: .error, file: path, object: object, message: message) }
        guard let reader = try? CheckpointReader(path: path), let text = try? reader.architecture() else { return [] }
        let model: Model
        do {
            let arch = try ArchitectureDescription.decode(text, file: path)
            model = try Model(arch, seed: 0)
        } catch {
            let e = LocusError.wrap(error, file: path, object: "/architecture")
            return [problem(e.object ?? "/architecture", e.message)]
        }
        return ArchitectureCheck.mismatches(model, in: reader).map { problem($0.object ?? "/tensors", $0.description) }
    }

    /// The description in `architecture` (a JSON file or a checkpoint), checked against `source`:
    /// every parameter it implies present, same shape, floating point. Returns the description as
    /// JSON and the source's tensors it does not use (kept as they are).
    public static func checked(_ architecture: String, against source: any CheckpointSource, sourcePath: String) throws -> (json: String, unused: [String]) {
        let arch = try ArchitectureDescription.load(architecture)
        let model = try engine(file: architecture) { try Model(arch, seed: 0) }
        let problems = ArchitectureCheck.mismatches(model, in: source)
        guard problems.isEmpty else {
            throw LocusError(file: sourcePath, "does not fit the architecture of \(architecture) (\(problems.count) problem(s)): "
                                               + problems.prefix(8).map(\.description).joined(separator: "; "))
        }
        let used = Set(model.parameters.map(\.name))
        return (try arch.json(), source.tensors.map(\.name).filter { !used.contains($0) })
    }
}
