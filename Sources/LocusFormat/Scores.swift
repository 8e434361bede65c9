import HDF5

/// How the values of a scores file relate to the samples (spec §3).
public enum ScoreReduction: String, Sendable, CaseIterable, Codable { case sum, mean }

/// The root attributes of a scores file.
public struct ScoresInfo: Sendable, Equatable {
    public var baseFingerprint: String
    public var estimator: String
    public var samples: Int64
    public var draws: Int64
    public var reduction: ScoreReduction
    public init(baseFingerprint: String, estimator: String, samples: Int64, draws: Int64 = 1, reduction: ScoreReduction = .sum) {
        self.baseFingerprint = baseFingerprint; self.estimator = estimator; self.samples = samples
        self.draws = draws; self.reduction = reduction
    }
}

/// One scored tensor.
public struct ScoreTensor: StoredTensor, Sendable, Equatable {
    public var name: String
    public var link: String
    public var shape: [Int]
    public var count: Int
}

/// Writes a scores artifact (float32 per tensor, with quantile and sum summaries).
public final class ScoresWriter {
    private let writer: ArtifactWriter
    private var count = 0, tensorCount = 0
    private var minimum = Double.infinity, maximum = -Double.infinity, total = 0.0
    private var names = Set<[UInt8]>()
    public var target: String { writer.target }

    public init(path: String, info: ScoresInfo, provenance: Provenance? = Provenance()) throws {
        guard info.samples >= 0, info.draws >= 1 else {
            throw LocusError(file: path, "samples must be ≥ 0 and draws ≥ 1 (got \(info.samples), \(info.draws))")
        }
        writer = try ArtifactWriter(target: path, kind: .scores, aligned: true, baseFingerprint: info.baseFingerprint, provenance: provenance)
        try writer.guarded {
            try writer.root.setAttribute("estimator", info.estimator)
            try writer.root.setAttribute("samples", info.samples)
            try writer.root.setAttribute("draws", info.draws)
            try writer.root.setAttribute("reduction", info.reduction.rawValue)
        }
    }

    public func add(name: String, shape: [Int], values: [Float]) throws {
        let link = TensorName.linkName(for: name)
        try writer.guarded(object: "/tensors/\(link)") {
            if let problem = TensorName.problem(with: name) { throw LocusError(file: target, object: "/tensors/\(link)", problem) }
            guard names.insert(TensorName.key(name)).inserted else { throw LocusError(file: target, object: "/tensors/\(link)", "duplicate tensor name") }
            guard checkedProduct(shape) == values.count else {
                throw LocusError(file: target, object: "/tensors/\(link)", "\(values.count) values do not fill shape \(shape)")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                throw LocusError(file: target, object: "/tensors/\(link)", "score \(bad) is \(values[bad]); scores must be finite and ≥ 0")
            }
            let ds = try writer.tensors.createDataset(link, type: .float32LE, shape: shape)
            try values.withUnsafeBytes { try ds.write($0, memType: .nativeFloat); try DataDigest.store(ds, $0) }
            try ds.setAttribute("dtype", LocusDType.float32.rawValue)
            let (q, s) = values.withUnsafeBufferPointer { (Summaries.quantiles($0), Summaries.sum($0)) }
            try ds.setAttribute("quantiles", q)
            try ds.setAttribute("sum", s)
            if let lo = q.first, let hi = q.last { minimum = min(minimum, lo); maximum = max(maximum, hi) }
            total += s; count += values.count; tensorCount += 1
        }
    }

    public func finish() throws {
        try writer.guarded {
            try writer.root.setAttribute("tensor-count", Int64(tensorCount))
            try writer.root.setAttribute("element-count", Int64(count))
            try writer.root.setAttribute("min", count > 0 ? minimum : 0)
            try writer.root.setAttribute("max", count > 0 ? maximum : 0)
            try writer.root.setAttribute("sum", total)
        }
        try writer.finish()
    }
}

/// Reads a scores artifact.
public final class ScoresReader {
    public let artifact: ArtifactFile
    public let info: ScoresInfo
    public let tensors: [ScoreTensor]
    private let group: Group
    public var path: String { artifact.path }

    public convenience init(path: String) throws { try self.init(ArtifactFile.open(path, expecting: .scores)) }

    public init(_ artifact: ArtifactFile) throws {
        self.artifact = artifact
        let root = artifact.root, path = artifact.path
        let base = try artifact.requiredBaseFingerprint()
        let reductionText = try artifact.string(root, "reduction")
        guard let reduction = ScoreReduction(rawValue: reductionText) else {
            throw LocusError(file: path, object: "/@reduction", "is '\(reductionText)', expected 'sum' or 'mean'")
        }
        info = ScoresInfo(baseFingerprint: base, estimator: try artifact.string(root, "estimator"),
                          samples: try artifact.int64(root, "samples"), draws: try artifact.int64(root, "draws", atLeast: 1),
                          reduction: reduction)
        (group, tensors) = try artifact.describeTensors { group, name, link in
            let t = try CheckpointReader.describe(group, name: name, link: link, path: path)
            guard t.dtype == .float32 else {
                throw LocusError(file: path, object: t.objectPath, "scores must be float32, found \(t.dtype.rawValue)")
            }
            return ScoreTensor(name: name, link: link, shape: t.shape, count: t.count)
        }
    }

    public func tensor(named name: String) -> ScoreTensor? { tensors.first { TensorName.same($0.name, name) } }

    public func read(_ t: ScoreTensor) throws -> [Float] {
        var out = [Float](repeating: 0, count: t.count)
        try withContext(file: path, object: t.objectPath) {
            let ds = try group.openDataset(t.link)
            try out.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeFloat) }
        }
        if let bad = out.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
            throw LocusError(file: path, object: t.objectPath, "score \(bad) is \(out[bad]); scores must be finite and ≥ 0")
        }
        return out
    }

    /// Rows `[start, start + count)` along the first dimension (a hyperslab), with `read`'s checks;
    /// entry numbers in errors are flat indices of the tensor.
    public func readRows(_ t: ScoreTensor, start: Int, count: Int, into out: UnsafeMutableBufferPointer<Float>) throws {
        let rowLength = t.shape.dropFirst().reduce(1, *)
        precondition(!t.shape.isEmpty && out.count == count * rowLength)
        try withContext(file: path, object: t.objectPath) {
            let ds = try group.openDataset(t.link)
            try ds.read(into: UnsafeMutableRawBufferPointer(out), memType: .nativeFloat,
                        start: [start] + Array(repeating: 0, count: t.shape.count - 1), count: [count] + t.shape.dropFirst())
        }
        if let bad = out.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
            throw LocusError(file: path, object: t.objectPath, "score \(start * rowLength + bad) is \(out[bad]); scores must be finite and ≥ 0")
        }
    }

    func dataset(_ t: ScoreTensor) throws -> Dataset { try withContext(file: path) { try group.openDataset(t.link) } }
}
