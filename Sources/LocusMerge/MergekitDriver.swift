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
/// Both phases run on every core without changing a bit: the inputs' passes (and, per block, their
/// sparsification, whose random draws and tie counts go in index order per input) side by side, one
/// input per thread; then the entries of the block (sign election, sums in input order, θ0 + λ·mixed)
/// in two halves.
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
        let (w, dtypeFor) = try outputSink(like: base, options: o, path: output, format: outputFormat, provenance: provenance,
                                        shardBytes: shardBytes)
        var report = Report()
        let buffers = sources.map { _ in EntryStreamBuffers() }
        let k = sources.count
        // Per input: its δ block, its entry block and the raw rows of its checkpoint (each input is
        // handled by one thread at a time; the inputs run on both cores).
        let deltas = (0..<k).map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: blockEntries) }
        let raws = (0..<k).map { _ in CheckpointDeltas.RawScratch() }
        var entryBlocks = [EntryBlock?](repeating: nil, count: k)
        let theta0Raw = CheckpointDeltas.RawScratch()
        let theta0 = UnsafeMutableBufferPointer<Double>.allocate(capacity: blockEntries)
        let mixed = UnsafeMutableBufferPointer<Float>.allocate(capacity: blockEntries)
        var out = [UInt32](repeating: 0, count: blockEntries)
        defer { for d in deltas { d.deallocate() }; theta0.deallocate(); mixed.deallocate() }
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
            let blockCapacity = min(rows, perBlock) * rowLength
            // A row longer than a block: the buffers grow to one row.
            let grown = blockCapacity > blockEntries
            let deltaBuffers = grown ? (0..<k).map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: blockCapacity) } : deltas
            let theta0Block = grown ? UnsafeMutableBufferPointer<Double>.allocate(capacity: blockCapacity) : theta0
            let mixedBlock = grown ? UnsafeMutableBufferPointer<Float>.allocate(capacity: blockCapacity) : mixed
            defer { if grown { for d in deltaBuffers { d.deallocate() }; theta0Block.deallocate(); mixedBlock.deallocate() } }
            if out.count < blockCapacity { out = [UInt32](repeating: 0, count: blockCapacity) }
            for i in 0..<k {
                if case .taskVector = sources[i], (entryBlocks[i]?.capacity ?? 0) < blockCapacity { entryBlocks[i] = EntryBlock(capacity: blockCapacity) }
            }
            let checkpointTensors: [CheckpointTensor?] = sources.map { s in
                if case .checkpoint(_, let m) = s { return m.tensor(named: t.name)! } else { return nil }
            }
            /// δ of input i, rows [r, r + count), into `into` (zeros where a vector stores none); θ0's
            /// rows in `theta0Rows` (float64) for checkpoints.
            func delta(_ i: Int, _ r: Int, _ count: Int, _ stream: TaskVectorEntryStream?, theta0Rows: UnsafeBufferPointer<Double>,
                       into d: UnsafeMutableBufferPointer<Float>) throws {
                let n = count * rowLength
                switch sources[i] {
                case .taskVector:
                    for j in 0..<n { d[j] = 0 }
                    guard let stream else { return }
                    let block = entryBlocks[i]!
                    block.count = 0
                    try stream.next(upTo: (r + count) * rowLength, into: block)
                    for j in 0..<block.count { d[Int(block.offsets[j])] = block.values[j] }
                case .checkpoint(_, let m):
                    let u = checkpointTensors[i]!
                    if u.dtype == .float32 && !u.shape.isEmpty {
                        let bytes = n * 4
                        let raw = UnsafeMutableRawBufferPointer(rebasing: raws[i].reserve(bytes)[0..<bytes])
                        try m.readRows(u, start: r, count: count, into: raw)
                        let f = raw.baseAddress!.assumingMemoryBound(to: UInt32.self)
                        for j in 0..<n { d[j] = Float(bitPattern: UInt32(littleEndian: f[j])) - Float(theta0Rows[j]) }
                    } else {
                        let theta = UnsafeMutableBufferPointer<Double>.allocate(capacity: n)
                        defer { theta.deallocate() }
                        try readRowsDouble(m, u, r, count, raw: raws[i], into: theta)
                        for j in 0..<n { d[j] = Float(theta[j]) - Float(theta0Rows[j]) }
                    }
                }
            }
            func stream(_ i: Int) throws -> TaskVectorEntryStream? {
                guard case .taskVector(let v) = sources[i] else { return nil }
                return try v.entryStream(t.name, buffers: buffers[i])
            }
            /// Every block of input i's δ, in order (its own θ0 buffer: passes of inputs run side by side).
            func pass(_ i: Int, _ body: (UnsafeBufferPointer<Float>) -> Void) throws {
                let s = try stream(i)
                let rowsTheta0 = UnsafeMutableBufferPointer<Double>.allocate(capacity: blockCapacity)
                defer { rowsTheta0.deallocate() }
                let raw = CheckpointDeltas.RawScratch()
                let d = deltaBuffers[i]
                for r in stride(from: 0, to: rows, by: perBlock) {
                    let count = min(perBlock, rows - r), n = count * rowLength
                    if case .checkpoint = sources[i] { try readRowsDouble(base, t, r, count, raw: raw, into: rowsTheta0) }
                    try delta(i, r, count, s, theta0Rows: UnsafeBufferPointer(rowsTheta0), into: d)
                    body(UnsafeBufferPointer(rebasing: d[0..<n]))
                }
            }
            // Each input's keep rule and rescale factor for this tensor (the inputs side by side).
            let weights = to.vectorWeights(k)
            let densities = to.densities ?? Array(repeating: 1, count: k)
            let gammas = to.gammas ?? Array(repeating: 0.01, count: k)
            let rescale = to.mergekitRescale ?? (sparsification == .random || sparsification == .magPrune)
            let normalize = to.mergekitNormalize ?? (name == "ties" || name == "della")
            func ruleAndScale(_ i: Int) throws -> (MergekitKeep, Float) {
                let d = densities[i], n = t.count
                var rule: MergekitKeep
                // |δ_i| chunk by chunk for ExactTopK, whose passes cannot throw: the first read error is kept.
                var failure: (any Error)?
                let magnitudes = UnsafeMutableBufferPointer<Float>.allocate(capacity: blockCapacity)
                defer { magnitudes.deallocate() }
                func magnitudeChunks(_ body: (UnsafeBufferPointer<Float>) -> Void) {
                    do {
                        try pass(i) { chunk in
                            for j in 0..<chunk.count { magnitudes[j] = abs(chunk[j]) }
                            body(UnsafeBufferPointer(rebasing: magnitudes[0..<chunk.count]))
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
                return (rule, scale)
            }
            var rules = [MergekitKeep](repeating: .all, count: k)
            var scales = [Float](repeating: 1, count: k)
            try rules.withUnsafeMutableBufferPointer { rb in
                try scales.withUnsafeMutableBufferPointer { sb in
                    nonisolated(unsafe) let rb = rb, sb = sb
                    try Merger.onEveryInput(k) { i in (rb[i], sb[i]) = try ruleAndScale(i) }
                }
            }
            // The merge, block by block: each input's sparsified, weighted δ on its own thread, then
            // the entries (in two halves), then θ0 + λ·mixed written.
            let streams = try (0..<k).map { try stream($0) }
            let totalWeight: Float = { let s = weights.reduce(Float(0)) { $0 + Float($1) }; return abs(s) < 1e-8 ? 1 : s }()
            let floatWeights = weights.map { Float($0) }
            let dtype = dtypeFor(t), lambda = to.lambda
            try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape)
            for r in stride(from: 0, to: rows, by: perBlock) {
                let count = min(perBlock, rows - r), n = count * rowLength
                try readRowsDouble(base, t, r, count, raw: theta0Raw, into: theta0Block)
                let theta0Rows = UnsafeBufferPointer(theta0Block)
                try rules.withUnsafeMutableBufferPointer { rb in
                    nonisolated(unsafe) let rb = rb
                    try Merger.onEveryInput(k) { i in
                        let d = deltaBuffers[i]
                        try delta(i, r, count, streams[i], theta0Rows: theta0Rows, into: d)
                        if case .magPrune(let m) = rb[i] { m.prune(UnsafeMutableBufferPointer(rebasing: d[0..<n])) }
                        let wt = floatWeights[i], sc = scales[i]
                        switch rb[i] {
                        case .all: for j in 0..<n { let v = d[j]; d[j] = v != 0 ? v * sc * wt : v }
                        case .nothing: for j in 0..<n { d[j] = 0 }
                        case .threshold(let th): for j in 0..<n { let v = d[j]; d[j] = v != 0 && abs(v) >= th ? v * sc * wt : 0 }
                        default: for j in 0..<n where d[j] != 0 { d[j] = rb[i].keep(d[j]) ? d[j] * sc * wt : 0 }
                        }
                    }
                }
                let m = mixedBlock
                let parts = n >= 1 << 15 ? 2 : 1
                try out.withUnsafeMutableBufferPointer { ob in
                    nonisolated(unsafe) let ob = ob
                    let failures = UnsafeMutableBufferPointer<Int>.allocate(capacity: parts)
                    defer { failures.deallocate() }
                    try Merger.onEveryInput(parts) { part in
                        let lo = part * n / parts, hi = (part + 1) * n / parts
                        if election {
                            for j in lo..<hi {
                                var sum: Float = 0
                                for i in 0..<k { sum += deltaBuffers[i][j] }
                                let positive = sum >= 0
                                var mix: Float = 0, divisor: Float = 0
                                for i in 0..<k {
                                    let v = deltaBuffers[i][j]
                                    if (v > 0 && positive) || (v < 0 && !positive) { mix += v; divisor += floatWeights[i] }
                                }
                                if normalize { mix /= divisor == 0 ? 1 : divisor }
                                m[j] = mix
                            }
                        } else {
                            for j in lo..<hi { m[j] = 0 }
                            for i in 0..<k { let d = deltaBuffers[i]; for j in lo..<hi { m[j] += d[j] } }
                            if normalize { for j in lo..<hi { m[j] /= totalWeight } }
                        }
                        // θ0 + λ·mixed in float64, rounded to float32; the first non-finite entry (or -1).
                        var bad = -1
                        if dtype == .float32 {
                            for j in lo..<hi {
                                let y = Float(theta0Rows[j] + lambda * Double(m[j]))
                                if !y.isFinite && bad < 0 { bad = j }
                                ob[j] = y.bitPattern.littleEndian
                            }
                        }
                        failures[part] = bad
                    }
                    if dtype == .float32, let bad = failures.first(where: { $0 >= 0 }) {
                        let value = theta0Rows[bad] + lambda * Double(m[bad])
                        throw LocusError(file: output, object: t.objectPath,
                                         value.isFinite ? "merged entry \(r * rowLength + bad) overflows \(dtype.rawValue)"
                                                        : "merged entry \(r * rowLength + bad) is not finite")
                    }
                }
                if dtype == .float32 {
                    try out.withUnsafeBytes { try w.writeRows(UnsafeRawBufferPointer(rebasing: $0[0..<(4 * n)])) }
                } else {
                    let v = (0..<n).map { theta0Rows[$0] + lambda * Double(m[$0]) }
                    try writeBlock(w, t, v, offset: r * rowLength, dtype: dtype, output: output)
                }
            }
        }
        report.fingerprint = try w.finish()
        return report
    }

    /// Runs `body(i)` for i in 0..<count on the pool's threads (each i once, on one thread); the
    /// first error (by i) is thrown after all have run.
    static func onEveryInput(_ count: Int, _ body: (Int) throws -> Void) throws {
        nonisolated(unsafe) let failures = UnsafeMutableBufferPointer<(any Error)?>.allocate(capacity: count)
        failures.initialize(repeating: nil)
        defer { failures.deallocate() }
        withoutActuallyEscaping(body) { body in
            nonisolated(unsafe) let body = body
            DispatchQueue.concurrentPerform(iterations: count) { i in
                do { try body(i) } catch { failures[i] = error }
            }
        }
        if let e = failures.lazy.compactMap({ $0 }).first { throw e }
    }

    /// Rows [r, r + count) of a tensor (a scalar tensor: its one value) in float64, into `out`.
    static func readRowsDouble(_ s: any CheckpointSource, _ t: CheckpointTensor, _ r: Int, _ count: Int, raw: CheckpointDeltas.RawScratch,
                               into out: UnsafeMutableBufferPointer<Double>) throws {
        let rowLength = t.shape.isEmpty ? 1 : t.count / t.shape[0]
        try CheckpointDeltas.read(s, t, r * rowLength, (r + count) * rowLength, into: out, raw: raw)
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
