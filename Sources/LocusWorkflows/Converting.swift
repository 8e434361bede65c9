import Foundation
import LocusFormat
import LocusEngine

/// `locus convert`: checkpoints between Locus .h5, safetensors, Hugging Face folders and PyTorch
/// files (streamed, atomic), a safetensors file into a scores, mask or task-vector artifact, and a
/// Locus artifact out to one .safetensors file (docs/checkpoints.md).
public struct ConvertRequest {
    public var input: String
    public var output: String
    /// The kind made from a safetensors input (`.checkpoint` for checkpoint conversion).
    public var kind: ArtifactKind = .checkpoint
    public var importOptions = Conversion.ImportOptions()
    public var format: CheckpointOutputFormat = .h5
    /// A model description (JSON file or checkpoint) to store, checked against the tensors.
    public var architecture: String?
    /// Folder outputs: copy config.json and tokenizer files from here.
    public var configFrom: String?
    public var dtype: LocusDType?
    public var shardBytes = HuggingFaceFolderWriter.defaultShardBytes
    public var provenance = Provenance()
    public init(input: String, output: String) { self.input = input; self.output = output }

    public enum Outcome {
        /// An artifact imported from, or exported to, safetensors.
        case artifact
        /// A checkpoint written: tensor count and fingerprint.
        case checkpoint(tensors: Int, fingerprint: String)
    }

    /// `note` receives what the user should know but is not an error: tensors a prefix dropped,
    /// tensors the description does not use.
    public func execute(note: (String) -> Void = { _ in }) throws -> Outcome {
        let inputKind = try detectCheckpointKind(path: input)
        if kind != .checkpoint {
            guard inputKind == .safetensors, format == .h5 else {
                throw RequestError("kind", "\(kind.rawValue) is imported from a .safetensors file into a Locus .h5 file; \(input) is \(inputKind.rawValue)")
            }
            var o = importOptions
            o.kind = kind
            try Conversion.importSafeTensors(from: input, to: output, options: o, provenance: provenance)
            return .artifact
        }
        if output.hasSuffix(".safetensors") && format == .h5 {
            guard inputKind == .locus, CheckpointOpenOptions.current.renaming == nil else {
                throw LocusError(file: output, "a single .safetensors output is exported from a Locus .h5 file without renaming; write a folder (OUT/) instead")
            }
            guard dtype == nil, configFrom == nil else { throw RequestError("dtype", "a dtype and a config folder apply to .h5 and folder outputs, not \(output)") }
            try Conversion.exportSafeTensors(from: input, to: output)
            return .artifact
        }
        let src = try openCheckpoint(path: input)
        if let r = src as? RenamedSource, r.droppedCount > 0 {
            note("\(input): the prefix dropped \(r.droppedCount) tensor(s) without it")
        }
        var arch = try src.architecture()
        if let architecture {
            let checked = try ArchitectureFiles.checked(architecture, against: src, sourcePath: input)
            if !checked.unused.isEmpty {
                note("\(input): \(checked.unused.count) tensor(s) the architecture does not use are kept as they are: \(checked.unused.prefix(6).joined(separator: ", "))")
            }
            arch = checked.json
        }
        let fp = try Conversion.write(src, to: output, architecture: arch, format: format, dtype: dtype,
                                      shardBytes: shardBytes, configFrom: configFrom, provenance: provenance)
        return .checkpoint(tensors: src.tensors.count, fingerprint: fp)
    }
}
