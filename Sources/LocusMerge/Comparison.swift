import LocusFormat

/// What several masks or task vectors of one base have in common, from the files alone: the
/// overlap that decides whether sparse task vectors compose (Iurada et al., 2025, §4: TaLoS masks
/// of different tasks barely overlap) and the sign conflicts that TIES resolves (Yadav et al.,
/// 2023, §3). Streams tensor by tensor (task vectors in blocks of entries); memory is one tensor's
/// packed bits per mask, or one block per task vector.
public enum Comparison {
    public struct MaskTensorRow: Codable, Sendable, Equatable {
        public var name: String
        public var count: Int
        /// Selected entries in each mask.
        public var ones: [Int]
        /// Entries selected by every mask.
        public var selectedByAll: Int
        /// Mean Jaccard index over the pairs of masks, for this tensor.
        public var meanJaccard: Double
    }

    public struct MaskReport: Codable, Sendable, Equatable {
        public var kind = "mask"
        public var files: [String]
        public var count: Int
        public var densities: [Double]
        /// |A ∩ B| for every pair (the diagonal is |A|).
        public var intersections: [[Int]]
        /// |A ∩ B| / |A ∪ B| (1 when both are empty).
        public var jaccard: [[Double]]
        /// `selectedBy[k]`: entries selected by exactly k of the masks, k = 0 … n.
        public var selectedBy: [Int]
        public var tensors: [MaskTensorRow]
    }

    public struct TaskVectorTensorRow: Codable, Sendable, Equatable {
        public var name: String
        public var count: Int
        /// ‖τ‖₂ of each vector on this tensor (scale applied).
        public var norms: [Double]
        /// Entries where at least two vectors are nonzero.
        public var overlap: Int
        /// Of those, entries where the nonzero values do not all have the same sign.
        public var signConflicts: Int
        public var signConflictRate: Double
    }

    public struct TaskVectorReport: Codable, Sendable, Equatable {
        public var kind = "task-vector"
        public var files: [String]
        public var count: Int
        public var norms: [Double]
        /// cos(τ_i, τ_j) over the whole model (0 when either is zero).
        public var cosine: [[Double]]
        public var overlap: Int
        public var signConflicts: Int
        public var signConflictRate: Double
        public var tensors: [TaskVectorTensorRow]
    }

    /// Tensor names in the fingerprint's order with shape and count, over the union of the inputs;
    /// a tensor must have the same shape wherever it appears.
    static func unionOfTensors(_ lists: [(path: String, tensors: [(name: String, shape: [Int], count: Int)])]) throws -> [(name: String, shape: [Int], count: Int)] {
        var byKey: [[UInt8]: (name: String, shape: [Int], count: Int, path: String)] = [:]
        for (path, tensors) in lists {
            for t in tensors {
                let key = TensorName.key(t.name)
                if let seen = byKey[key] {
                    guard seen.shape == t.shape else {
                        throw LocusError(file: path, object: "tensor '\(t.name)'", "has shape \(t.shape), \(seen.path) has \(seen.shape)")
                    }
                } else { byKey[key] = (t.name, t.shape, t.count, path) }
            }
        }
        return byKey.values.map { ($0.name, $0.shape, $0.count) }.sorted { TensorName.byteOrder($0.name, $1.name) }
    }

    static func requireOneBase(_ files: [(path: String, base: String)]) throws {
        guard let first = files.first else { return }
        for f in files.dropFirst() where f.base != first.base {
            throw LocusError(file: f.path, object: "/@base-fingerprint", "is \(f.base), but \(first.path) was made from \(first.base): compare files of one base model")
        }
    }

    // MARK: masks

    public static func masks(_ paths: [String]) throws -> MaskReport {
        guard paths.count >= 2 else { throw LocusError(file: paths.first ?? "compare", "compare needs at least two masks") }
        let readers = try paths.map { try MaskReader(path: $0) }
        try requireOneBase(readers.map { ($0.path, $0.baseFingerprint) })
        let n = readers.count
        let tensors = try unionOfTensors(readers.map { r in (r.path, r.tensors.map { ($0.name, $0.shape, $0.count) }) })
        var report = MaskReport(files: paths, count: 0, densities: Array(repeating: 0, count: n),
                                intersections: Array(repeating: Array(repeating: 0, count: n), count: n),
                                jaccard: [], selectedBy: Array(repeating: 0, count: n + 1), tensors: [])
        for t in tensors {
            // Each mask's packed bits; a tensor a mask does not list is all-frozen or all-trainable (§4).
            let packed: [[UInt8]] = try readers.map { r in
                if let mt = r.tensor(named: t.name) { return try r.readPacked(mt) }
                var bits = [UInt8](repeating: r.absentTensors == .trainable ? 0xFF : 0, count: (t.count + 7) / 8)
                if r.absentTensors == .trainable, t.count & 7 != 0 { bits[bits.count - 1] = UInt8((1 << (t.count & 7)) - 1) }
                return bits
            }
            var inter = Array(repeating: Array(repeating: 0, count: n), count: n)
            for i in 0..<n {
                for j in i..<n {
                    var c = 0
                    packed[i].withUnsafeBufferPointer { a in
                        packed[j].withUnsafeBufferPointer { b in for k in 0..<a.count { c += (a[k] & b[k]).nonzeroBitCount } }
                    }
                    inter[i][j] = c; inter[j][i] = c
                }
            }
            // How many masks select each entry: per byte, add each mask's bits into eight counters.
            var byCount = [Int](repeating: 0, count: n + 1)
            var counters = [Int](repeating: 0, count: 8)
            for k in 0..<((t.count + 7) / 8) {
                for b in 0..<8 { counters[b] = 0 }
                for m in 0..<n {
                    var byte = packed[m][k]
                    while byte != 0 { counters[byte.trailingZeroBitCount] += 1; byte &= byte - 1 }
                }
                let bitsHere = min(8, t.count - 8 * k)
                for b in 0..<bitsHere { byCount[counters[b]] += 1 }
            }
            var pairs = 0.0, jaccardSum = 0.0
            for i in 0..<n { for j in (i + 1)..<n { pairs += 1; jaccardSum += jaccard(inter[i][j], inter[i][i], inter[j][j]) } }
            report.tensors.append(MaskTensorRow(name: t.name, count: t.count, ones: (0..<n).map { inter[$0][$0] },
                                                selectedByAll: byCount[n], meanJaccard: pairs > 0 ? jaccardSum / pairs : 1))
            for i in 0..<n { for j in 0..<n { report.intersections[i][j] += inter[i][j] } }
            for k in 0...n { report.selectedBy[k] += byCount[k] }
            report.count += t.count
        }
        report.densities = (0..<n).map { report.count == 0 ? 0 : Double(report.intersections[$0][$0]) / Double(report.count) }
        report.jaccard = (0..<n).map { i in (0..<n).map { j in jaccard(report.intersections[i][j], report.intersections[i][i], report.intersections[j][j]) } }
        return report
    }

    static func jaccard(_ both: Int, _ a: Int, _ b: Int) -> Double {
        let union = a + b - both
        return union == 0 ? 1 : Double(both) / Double(union)
    }

    // MARK: task vectors

    public static func taskVectors(_ paths: [String], blockElements: Int = 1 << 20) throws -> TaskVectorReport {
        guard paths.count >= 2 else { throw LocusError(file: paths.first ?? "compare", "compare needs at least two task vectors") }
        let readers = try paths.map { try TaskVectorReader(path: $0) }
        try requireOneBase(readers.map { ($0.path, $0.baseFingerprint) })
        let n = readers.count
        let tensors = try unionOfTensors(readers.map { r in (r.path, r.tensors.map { ($0.name, $0.shape, $0.count) }) })
        var dots = Array(repeating: Array(repeating: 0.0, count: n), count: n)
        var report = TaskVectorReport(files: paths, count: 0, norms: [], cosine: [], overlap: 0, signConflicts: 0, signConflictRate: 0, tensors: [])
        let buffers = (0..<n).map { _ in EntryStreamBuffers() }
        for t in tensors {
            let streams: [TaskVectorEntryStream?] = try (0..<n).map { i in
                try readers[i].tensor(named: t.name).map { try TaskVectorEntryStream(readers[i], $0, scale: readers[i].scale, buffers: buffers[i]) }
            }
            let rowLength = t.shape.count > 1 ? t.count / max(t.shape[0], 1) : 1
            let step = t.shape.count > 1 ? max(1, blockElements / max(rowLength, 1)) * rowLength : max(1, blockElements)
            let width = min(step, max(t.count, 1))
            let blocks = (0..<n).map { _ in EntryBlock(capacity: width, exact: true) }
            var dense = [[Double]](repeating: [Double](repeating: 0, count: width), count: n)
            var tensorDots = Array(repeating: Array(repeating: 0.0, count: n), count: n)
            var overlap = 0, conflicts = 0
            var a = 0
            while a < t.count {
                let b = min(t.count, a + step)
                for i in 0..<n {
                    blocks[i].count = 0
                    try streams[i]?.next(upTo: b, into: blocks[i])
                    let v = blocks[i].values64!
                    for k in 0..<blocks[i].count { dense[i][Int(blocks[i].offsets[k])] = v[k] }
                }
                for p in 0..<(b - a) {
                    var nonzero = 0, positive = false, negative = false
                    for i in 0..<n where dense[i][p] != 0 {
                        nonzero += 1
                        if dense[i][p] > 0 { positive = true } else { negative = true }
                        for j in i..<n where dense[j][p] != 0 { tensorDots[i][j] += dense[i][p] * dense[j][p] }
                    }
                    if nonzero >= 2 { overlap += 1; if positive && negative { conflicts += 1 } }
                }
                for i in 0..<n { for k in 0..<blocks[i].count { dense[i][Int(blocks[i].offsets[k])] = 0 } }
                a = b
            }
            for i in 0..<n { for j in i..<n { dots[i][j] += tensorDots[i][j]; if i != j { dots[j][i] = dots[i][j] } } }
            report.tensors.append(TaskVectorTensorRow(name: t.name, count: t.count, norms: (0..<n).map { tensorDots[$0][$0].squareRoot() },
                                                      overlap: overlap, signConflicts: conflicts,
                                                      signConflictRate: overlap == 0 ? 0 : Double(conflicts) / Double(overlap)))
            report.overlap += overlap; report.signConflicts += conflicts; report.count += t.count
        }
        report.norms = (0..<n).map { dots[$0][$0].squareRoot() }
        report.cosine = (0..<n).map { i in (0..<n).map { j in
            let d = report.norms[i] * report.norms[j]
            return d == 0 ? 0 : dots[i][j] / d
        } }
        report.signConflictRate = report.overlap == 0 ? 0 : Double(report.signConflicts) / Double(report.overlap)
        return report
    }
}
