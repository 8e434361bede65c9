import Foundation
import LocusFormat

/// Generalized task arithmetic with mergekit's rules (`MergeSemantics.mergekit`; docs/merging.md
/// §Configs), streaming. Inputs are fine-tuned checkpoints (δ = θ_t − θ0 computed block by block, in
/// float32) or Locus task vectors. Per tensor and per input, as mergekit's generalized task
/// arithmetic does:
///
/// 1. sparsify δ with the input's `density` d for this tensor (d ≥ 1: unchanged): `ties` keeps the
///    top max(1, ⌊d·N⌋) of |δ| (N: the tensor's entries; entries tied at the threshold are all kept);
///    `dare_*` keeps each non-zero entry with probability d (Locus's seeded generator, one draw per
///    non-zero entry in index order; docs/talos.md §DARE); `breadcrumbs*` keeps, of the entries
///    sorted by |δ|, the ⌊d·N⌋ below the top ⌊γ·N⌋ (fewer outliers removed when they do not fit);
///    `della*` keeps each non-zero entry with a probability from its |δ| rank along the second axis
///    (`MergekitMagPrune`); with `rescale`, the kept entries are scaled so that their L1 norm is δ's;
/// 2. multiply by the input's `weight` w;
/// 3. with sign election (ties, dare_ties, breadcrumbs_ties, della): per entry the sign of Σ w δ̃ (+ when
///    the sum is 0) wins; mixed = Σ of the agreeing entries, divisor = Σ of their weights; without:
///    mixed = Σ w δ̃, divisor = Σ w;
/// 4. with `normalize` (mergekit's default: ties and della), mixed / divisor (a divisor of 0, or of
///    |Σ w| < 1e-8 without election, counts as 1); θ = θ0 + λ · mixed.
///
/// Per block of whole rows (at most 2¹⁹ entries): each input's δ rows (float32), θ0 and the output.
/// Thresholds, ranks and L1 norms come from passes over each input's tensor before its first block.
extension Merger {
    enum MergekitSparsification { case none, magnitude, random, outliers, magPrune }

    /// One input of a mergekit-semantics merge.
    enum DeltaSource {
        case taskVector(Input)
        case checkpoint(path: String, source: any CheckpointSource)
    }

    /// Whether `path` is a Locus task vector (anything else is opened as a checkpoint).
    public static func isTaskVector(_ path: String) throws -> Bool {
        guard try detectCheckpointKind(path: path) == .locus else { return false }
        return try ArtifactFile.open(path).header.kind == .taskVector
    }

    static func mergeMergekit(base basePath: String, inputs paths: [String], output: String, options o: MergeOptions, warn: (String) -> Void,
                              provenance: Provenance, outputFormat: CheckpointOutputFormat, shardBytes: Int) throws -> Report {
        let name = o.method.name
        let sparsification: MergekitSparsification =
            name == "ties" ? .magnitude : name.hasPrefix("dare") ? .random : name.hasPrefix("breadcrumbs") ? .outliers
            : name.hasPrefix("della") ? .magPrune : .none
        let election = ["ties", "dare_ties", "breadcrumbs_ties", "della"].contains(name)
        let base = try openCheckpoint(path: basePath)
        guard !paths.isEmpty else { throw LocusError(file: basePath, "no models to merge") }
        // Open and check everything before any output exists.
        let kinds = try paths.map { try isTaskVector($0) }
        let vectorPaths = zip(paths, kinds).filter(\.1).map(\.0)
        var vectors = vectorPaths.isEmpty ? [] : try open(base: base, taskVectors: vectorPaths, force: o.force, warn: warn)
        var sources: [DeltaSource] = []
        var problems: [String] = []
        for (p, isVector) in zip(paths, kinds) {
            if isVector { sources.append(.taskVector(vectors.removeFirst())); continue }
            let m = try openCheckpoint(path: p)
            for t in base.tensors where t.dtype.isFloatingPoint && o.merges(t.name) {
                guard let u = m.tensor(named: t.name) else { problems.append("\(p): tensor '\(t.name)' is missing"); continue }
                if u.shape != t.shape { problems.append("\(p): '\(t.name)' has shape \(u.shape), the base has \(t.shape)") }
                if !u.dtype.isFloatingPoint { problems.append("\(p): '\(t.name)' is \(u.dtype.rawValue), the base's is floating point") }
            }
            sources.append(.checkpoint(path: p, source: m))
        }
        guard problems.isEmpty else {
            throw LocusError(file: basePath, "\(problems.count) problem(s) with the models: \(problems.prefix(8).joined(separator: "; "))\(problems.count > 8 ? "; …" : "")")
        }
        try checkCommon(o, inputCount: paths.count, output: output)
        let perTensor = try o.perTensor(base.tensors.map(\.name), inputCount: paths.count, file: o.tensorSettings?.source ?? output, warn: warn)
        let dellaProblems = mergekitDellaProblems(base.tensors, inputCount: paths.count) { perTensor[$0] ?? o }
        guard dellaProblems.isEmpty else { throw LocusError(file: o.tensorSettings?.source ?? basePath, dellaProblems.joined(separator: "; ")) }
        let dtypeFor: (CheckpointTensor) -> LocusDType = { t in t.dtype.isFloatingPoint ? (o.dtype ?? t.dtype) : t.dtype }
        let plan = base.tensors.map { TensorPlan(name: $0.name, dtype: dtypeFor($0), shape: $0.shape) }
        let w = try makeCheckpointSink(path: output, format: outputFormat, plan: plan, provenance: provenance,
                                       metadata: try base.metadata(), architecture: try base.architecture(), shardBytes: shardBytes)
        var report = Report()
        let buffers = sources.map { _ in EntryStreamBuffers() }
        for t in base.tensors {
            let touched = sources.contains { s in if case .taskVector(let v) = s { return v.byName[t.name] != nil } else { return true } }
            guard t.dtype.isFloatingPoint, t.count > 0, o.merges(t.name), touched else {
                try w.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
                try base.forEachBlock(t, blockBytes: blockBytes) { try w.writeRows($0) }
                report.tensorsCopied += 1
                continue
            }
            report.tensorsMerged += 1
            let to = perTensor[t.name] ?? o
            let rows = t.shape.isEmpty ? 1 : t.shape[0], rowLength = t.count / rows
            let perBlock = max(1, blockEntries / rowLength)
            // δ of input i, rows [r, r + count), into `out` (n entries, zeros where a vector stores none).
            var theta0: [Double] = [], theta0Row = -1
            var block = EntryBlock(capacity: 1)
            func delta(_ i: Int, _ r: Int, _ count: Int, _ stream: TaskVectorEntryStream?, into out: inout [Float]) throws {
                let n = count * rowLength
                if out.count < n { out = [Float](repeating: 0, count: n) }
                switch sources[i] {
                case .taskVector:
                    for j in 0..<n { out[j] = 0 }
                    guard let stream else { return }
                    if block.capacity < n { block = EntryBlock(capacity: n) }
                    block.count = 0
                    try stream.next(upTo: (r + count) * rowLength, into: block)
                    for j in 0..<block.count { out[Int(block.offsets[j])] = block.values[j] }
                case .checkpoint(_, let m):
                    if theta0Row != r { theta0 = try readRows(base, t, r, count); theta0Row = r }
                    let theta = try readRows(m, m.tensor(named: t.name)!, r, count)
                    for j in 0..<n { out[j] = Float(theta[j]) - Float(theta0[j]) }
                }
            }
            func stream(_ i: Int) throws -> TaskVectorEntryStream? {
                guard case .taskVector(let v) = sources[i] else { return nil }
                return try v.entryStream(t.name, buffers: buffers[i])
            }
            /// Every block of input i's δ, in order.
            func pass(_ i: Int, _ body: (UnsafeBufferPointer<Float>) -> Void) throws {
                let s = try stream(i)
                var d: [Float] = []
                for r in stride(from: 0, to: rows, by: perBlock) {
                    let count = min(perBlock, rows - r)
                    try delta(i, r, count, s, into: &d)
                    d.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[0..<(count * rowLength)])) }
                }
            }
            // Each input's keep rule and rescale factor for this tensor.
            let k = sources.count
            let weights = to.vectorWeights(k)
            let densities = to.densities ?? Array(repeating: 1, count: k)
            let gammas = to.gammas ?? Array(repeating: 0.01, count: k)
            let rescale = to.mergekitRescale ?? (sparsification == .random || sparsification == .magPrune)
            let normalize = to.mergekitNormalize ?? (name == "ties" || name == "della")
            var rules: [MergekitKeep] = []
            var scales: [Float] = []
            for i in 0..<k {
                let d = densities[i], n = t.count
                var rule: MergekitKeep
                // |δ_i| chunk by chunk for ExactTopK, whose passes cannot throw: the first read error is kept.
                var failure: (any Error)?
                var magnitudes: [Float] = []
                func magnitudeChunks(_ body: (UnsafeBufferPointer<Float>) -> Void) {
                    do {
                        try pass(i) { chunk in
                            if magnitudes.count < chunk.count { magnitudes = [Float](repeating: 0, count: chunk.count) }
                            for j in 0..<chunk.count { magnitudes[j] = abs(chunk[j]) }
                            magnitudes.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[0..<chunk.count])) }
                        }
                    } catch { if failure == nil { failure = error } }
                }
                switch sparsification {
                case _ where d >= 1, .none: rule = .all
                case .magnitude:
                    if d <= 0 { rule = .nothing; break }
                    let thr = ExactTopK.threshold(chunks: magnitudeChunks, keep: max(1, Int(d * Double(n))))
                    if let failure { throw failure }
                    rule = .threshold(thr)
                case .random:
                    rule = .random(dareRandom(vector: i, tensor: t.name, options: to), dropRate: 1 - d)
                case .outliers:
                    let target = Int(d * Double(n)), top = Int(gammas[i] * Double(n)), bottom = max(0, n - target - top)
                    let drop = n - bottom - target, end = n - bottom
                    var r = BreadcrumbsDirection.TensorRule(drop: drop, end: end, total: n)
                    if end > drop {
                        var wanted: [Int] = []
                        if drop > 0 { wanted.append(drop - 1) }
                        if end < n { wanted.append(end - 1) }
                        let found = ExactTopK.ranks(wanted, total: n, chunks: magnitudeChunks)
                        if let failure { throw failure }
                        var q = 0
                        if drop > 0 { r.dropValue = found[q].value; r.dropTies = drop - found[q].greater; q += 1 }
                        if end < n { r.endValue = found[q].value; r.endTies = end - found[q].greater }
                    }
                    rule = .rank(r)
                case .magPrune:
                    if d <= 0 { rule = .nothing; break }
                    let m = MergekitMagPrune(tensor: t.name, shape: t.shape, count: n, density: d, epsilon: (to.epsilons ?? [])[safe: i] ?? 0.15,
                                             random: dareRandom(vector: i, tensor: t.name, options: to))
                    if m.needsWholeTensor { try m.prepare { try pass(i, $0) } }
                    rule = .magPrune(m)
                }
                var scale: Float = 1
                if rescale, case .all = rule {} else if rescale {
                    // L1 of δ and of its kept entries (mergekit's rescale_norm l1; norms under 1e-7 are not divided by).
                    var before = 0.0, after = 0.0, copy = rule
                    if case .magPrune(let m) = rule {
                        (before, after) = try m.l1Norms { try pass(i, $0) }
                    } else {
                        try pass(i) { chunk in
                            for v in chunk where v != 0 { before += Double(abs(v)); if copy.keep(v) { after += Double(abs(v)) } }
                        }
                    }
                    if before >= 1e-7 && after >= 1e-7 { scale = Float(before / after) }
                }
                rules.append(rule); scales.append(scale)
            }
            // The merge, block by block.
            let streams = try (0..<k).map { try stream($0) }
            var deltas = [[Float]](repeating: [], count: k)
            let totalWeight: Float = { let s = weights.reduce(Float(0)) { $0 + Float($1) }; return abs(s) < 1e-8 ? 1 : s }()
            let dtype = dtypeFor(t), lambda = to.lambda
            try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape)
            for r in stride(from: 0, to: rows, by: perBlock) {
                let count = min(perBlock, rows - r), n = count * rowLength
                for i in 0..<k {
                    try delta(i, r, count, streams[i], into: &deltas[i])
                    if case .magPrune(let m) = rules[i] { deltas[i].withUnsafeMutableBufferPointer { m.prune(UnsafeMutableBufferPointer(rebasing: $0[0..<n])) } }
                    let wt = Float(weights[i]), sc = scales[i]
                    deltas[i].withUnsafeMutableBufferPointer { d in
                        for j in 0..<n where d[j] != 0 { d[j] = rules[i].keep(d[j]) ? d[j] * sc * wt : 0 }
                    }
                }
                var mixed = [Float](repeating: 0, count: n)
                if election {
                    var divisor = [Float](repeating: 0, count: n)
                    for j in 0..<n {
                        var sum: Float = 0
                        for i in 0..<k { sum += deltas[i][j] }
                        let positive = sum >= 0
                        for i in 0..<k {
                            let v = deltas[i][j]
                            if (v > 0 && positive) || (v < 0 && !positive) { mixed[j] += v; divisor[j] += Float(weights[i]) }
                        }
                        if normalize { mixed[j] /= divisor[j] == 0 ? 1 : divisor[j] }
                    }
                } else {
                    for i in 0..<k { for j in 0..<n { mixed[j] += deltas[i][j] } }
                    if normalize { for j in 0..<n { mixed[j] /= totalWeight } }
                }
                var v = try readRows(base, t, r, count)
                for j in 0..<n { v[j] += lambda * Double(mixed[j]) }
                try writeBlock(w, t, v, offset: r * rowLength, dtype: dtype, output: output)
            }
        }
        report.fingerprint = try w.finish()
        return report
    }

    /// Rows [r, r + count) of a tensor in float64 (a scalar tensor: its one value).
    static func readRows(_ s: any CheckpointSource, _ t: CheckpointTensor, _ r: Int, _ count: Int) throws -> [Double] {
        t.shape.isEmpty ? try s.readFloat64(t) : try s.readRowsFloat64(t, start: r, count: count)
    }
}

/// Which entries of one input's δ a mergekit sparsification keeps, visited in index order (the
/// random draws and the ties at a rank boundary depend on the order).
enum MergekitKeep {
    case all, nothing
    case threshold(Float)
    case random(SplitMix64, dropRate: Double)
    case rank(BreadcrumbsDirection.TensorRule)
    /// mergekit's DELLA drop: applied to each block before `keep` (which then keeps what is left).
    case magPrune(MergekitMagPrune)

    /// Whether the non-zero entry `v` is kept.
    mutating func keep(_ v: Float) -> Bool {
        switch self {
        case .all, .magPrune: return true
        case .nothing: return false
        case .threshold(let t): return abs(v) >= t
        case .random(var g, let p):
            let kept = g.unitDouble() >= p
            self = .random(g, dropRate: p)
            return kept
        case .rank(var r):
            let kept = r.keep(v)
            self = .rank(r)
            return kept
        }
    }
}
