import Foundation
import LocusFormat
import LocusMerge
import LocusRender

/// `locus compare`: masks (Jaccard, selected by k of n) or task vectors (cosine, sign conflicts) of
/// one base, and optionally the matrix as an SVG heatmap.
public struct CompareRequest {
    public var files: [String]
    /// Write the Jaccard or cosine matrix here as an SVG heatmap.
    public var heatmap: String?
    public init(files: [String]) { self.files = files }

    public enum Outcome {
        case masks(Comparison.MaskReport)
        case taskVectors(Comparison.TaskVectorReport)
    }

    /// How tables and the heatmap label each file: its name without folder and `.h5`.
    public var labels: [String] {
        files.map { path in
            let name = path.split(separator: "/").last.map(String.init) ?? path
            return name.hasSuffix(".h5") ? String(name.dropLast(3)) : name
        }
    }

    public func execute() throws -> Outcome {
        guard files.count >= 2 else { throw RequestError("files", "comparing needs at least two files, got \(files.count)") }
        let kinds = try files.map { f in (f, try ArtifactFile.open(f).header.kind) }
        if kinds.allSatisfy({ $0.1 == .mask }) {
            let r = try Comparison.masks(files)
            if let heatmap {
                try InspectPlot.write(Heatmap.svg(title: "Mask overlap: Jaccard index of \(files.count) masks",
                                                  subtitle: "cell = |A ∩ B| / |A ∪ B| over \(r.count) entries", labels: labels, values: r.jaccard), to: heatmap)
            }
            return .masks(r)
        }
        if kinds.allSatisfy({ $0.1 == .taskVector }) {
            let r = try Comparison.taskVectors(files)
            if let heatmap {
                try InspectPlot.write(Heatmap.svg(title: "Task vectors: cosine similarity of \(files.count) vectors",
                                                  subtitle: "cell = cos(τ_i, τ_j) over \(r.count) entries", labels: labels, values: r.cosine, low: -1), to: heatmap)
            }
            return .taskVectors(r)
        }
        let other = kinds.first { $0.1 != kinds[0].1 } ?? kinds[0]
        throw LocusError(file: other.0, "is a \(other.1.rawValue) file; compare takes masks only or task vectors only (\(kinds[0].0) is a \(kinds[0].1.rawValue))")
    }
}
