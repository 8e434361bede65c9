import Foundation
import LocusFormat
import LocusEngine

/// `locus validate` for one file: a Locus artifact against every rule of spec/FORMAT.md (and, for a
/// checkpoint without other errors, its /architecture against its tensors); any other checkpoint
/// source (safetensors, a Hugging Face folder, a PyTorch file) by opening it as
/// `CheckpointOpenOptions.current` says and reading every tensor.
public enum FileValidation {
    public static func findings(_ path: String, stats: Bool = false) -> [Finding] {
        if let kind = try? detectCheckpointKind(path: path), kind != .locus { return sourceFindings(path, stats: stats) }
        var findings = Validator.validate(path, stats: stats)
        if !findings.contains(where: { $0.severity == .error }) { findings += ArchitectureFiles.findings(path) }
        return findings
    }

    /// A checkpoint that is not a Locus file (safetensors, a Hugging Face folder, a PyTorch file) is
    /// valid when it opens (a folder's shards agree with its index) and every tensor's bytes can be
    /// read: the fingerprint is computed over all of them.
    public static func sourceFindings(_ path: String, stats: Bool = false) -> [Finding] {
        do {
            let source = try openCheckpoint(path: path)
            _ = try source.computeFingerprint()
            guard stats else { return [] }
            var out: [Finding] = []
            for t in source.tensors where t.dtype.isFloatingPoint {
                let counts = try NonFiniteCounts.of(source, t)
                let l = source.location(of: t)
                if counts.total > 0 { out.append(Finding(severity: .warning, file: l.file, object: l.object, message: "holds \(counts) among \(t.count) values")) }
            }
            return out
        } catch {
            let e = LocusError.wrap(error, file: path)
            return [Finding(severity: .error, file: e.file, object: e.object ?? "", message: e.message)]
        }
    }
}
