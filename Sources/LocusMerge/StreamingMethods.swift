import LocusFormat

/// A merged direction computed in consecutive blocks of flat indices (of whole rows).
protocol DirectionBlocks: AnyObject {
    /// Fills `dir` (of `end − position` entries) with the merged direction of [position, end).
    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws
    /// Per task, the mask bits of the last block (TALL writes them with per-task models); nil for
    /// methods without per-task masks.
    var taskMasks: [UnsafeMutableBufferPointer<Bool>]? { get }
}

extension DirectionBlocks {
    var taskMasks: [UnsafeMutableBufferPointer<Bool>]? { nil }
}

extension BlockDirection: DirectionBlocks {}

/// Model-wide values a direction method computes before the first tensor (global TIES thresholds).
struct DirectionContext {
    var globalThresholds: [Float]? = nil
    /// Fine-tuned checkpoints whose task vectors are computed while reading (kernels that read
    /// `DenseTaskVectorBlocks`); the inputs are then empty.
    var deltas: CheckpointDeltas? = nil

    /// How many vectors are merged: the checkpoints', else the task vectors'.
    func vectorCount(_ inputs: [Merger.Input]) -> Int { deltas?.models.count ?? inputs.count }
}

/// How a direction method (θ = θ0 + λ·d) computes d: one `DirectionBlocks` per tensor.
protocol DirectionKernel: Sendable {
    /// Model-wide values, computed before any output exists.
    func prepare(base: any CheckpointSource, inputs: [Merger.Input], options: MergeOptions) throws -> DirectionContext
    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks
    /// Whether its blocks have per-task masks, written with per-task models (TALL).
    var writesTaskModels: Bool { get }
}

extension DirectionKernel {
    var writesTaskModels: Bool { false }
    /// Most kernels need nothing model-wide.
    func prepare(base: any CheckpointSource, inputs: [Merger.Input], options: MergeOptions) throws -> DirectionContext { DirectionContext() }
}

/// How a method writes each tensor itself from θ0 and the vectors (Fisher).
protocol TaskVectorBlockKernel: Sendable {
    /// Checks and opens what the method needs besides the vectors, before any output exists, and
    /// returns the job that writes every tensor of the output.
    func prepare(base: any CheckpointSource, basePath: String, inputs: [Merger.Input], options: MergeOptions, output: String) throws -> TaskVectorBlockJob
}

typealias TaskVectorBlockJob = (_ w: any CheckpointSink, _ dtypeFor: (CheckpointTensor) -> LocusDType, _ report: inout Merger.Report) throws -> Void

/// How a method combines full models (linear, SLERP), one tensor at a time, block by block.
protocol ModelKernel: Sendable {
    /// The combiner of one floating-point tensor. `blocks` streams the tensor's row blocks of every
    /// model (float64, one array per model), for methods that need a pass over the whole tensor first.
    func combiner(for t: CheckpointTensor, options: MergeOptions, blocks: (([[Double]]) throws -> Void) throws -> Void) throws -> ModelBlockCombiner
}

/// Combines one row block of every model (float64, same positions) into the output block.
typealias ModelBlockCombiner = ([[Double]]) -> [Double]

/// How a method produces its output in the streaming driver (one of three drivers).
public struct MergeProducer: Sendable {
    enum Kind: Sendable {
        case direction(any DirectionKernel)
        case taskVectorBlocks(any TaskVectorBlockKernel)
        case models(any ModelKernel)
    }
    let kind: Kind
    static func direction(_ k: any DirectionKernel) -> MergeProducer { MergeProducer(kind: .direction(k)) }
    static func taskVectorBlocks(_ k: any TaskVectorBlockKernel) -> MergeProducer { MergeProducer(kind: .taskVectorBlocks(k)) }
    static func models(_ k: any ModelKernel) -> MergeProducer { MergeProducer(kind: .models(k)) }

    /// The direction kernel of a θ0 + λ·d method, nil for the others.
    var directionKernel: (any DirectionKernel)? { if case .direction(let k) = kind { return k }; return nil }
}

/// Breadcrumbs in blocks of rows. Per row (tensors of rank > 1, `--breadcrumbs-scope row`): the
/// stored nonzero entries of the row are ranked by |τ| descending, position ascending — the order
/// the whole-row sort gives them, since zeros rank last — and ranks [⌊γ·n⌋, ⌊γ·n⌋ + ⌊β·n⌋) are kept.
/// Per tensor (and for tensors of rank ≤ 1): the magnitudes at the two boundary ranks and how many
/// entries exceed them come from an exact two-level histogram (two streaming passes per vector);
/// ties at a boundary are then resolved by position while the entries stream in order. With sign
/// election (Breadcrumbs-TIES) each vector's kept entries of the block are held, weighted, for the
/// election; without it they are added to the direction as they are read.
final class BreadcrumbsDirection: DirectionBlocks {
    struct TensorRule {
        /// rank < drop ⟺ |v| > dropValue, or |v| = dropValue and among the first `dropTies` such entries.
        var drop: Int, dropValue: Float = 0, dropTies = 0, dropSeen = 0
        /// rank < end ⟺ |v| > endValue, or |v| = endValue and among the first `endTies` such entries.
        var end: Int, endValue: Float = 0, endTies = 0, endSeen = 0
        var total: Int

        mutating func keep(_ v: Float) -> Bool {
            let a = abs(v)
            var dropped = false
            if drop > 0 {
                if a > dropValue { dropped = true } else if a == dropValue { dropped = dropSeen < dropTies; dropSeen += 1 }
            }
            var inside = true
            if end < total {
                if a > endValue { inside = true } else if a == endValue { inside = endSeen < endTies; endSeen += 1 } else { inside = false }
            }
            return end > drop && !dropped && inside && v != 0
        }
    }

    let streams: [TaskVectorEntryStream?]
    let weights: [Float]
    let blocks: [EntryBlock]
    let rowLength: Int
    let perRow: Bool
    let beta: Double, gamma: Double
    let elect: Bool
    let scratch: MergeScratch
    var rules: [TensorRule?]
    var position = 0
    var order: [Int] = []
    var kept: [Bool] = []

    init(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], signElection: Bool, options o: MergeOptions,
         scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        self.scratch = scratch
        streams = try Merger.entryStreams(inputs, tensor: name, buffers: scratch.streamBuffers)
        weights = o.vectorWeights(inputs.count).map { Float($0) }
        elect = signElection
        let block = max(1, min(maxBlock, count))
        blocks = scratch.entryBlocks(elect ? inputs.count : 1, capacity: block)
        if elect { scratch.ensureSignElection(block) }
        beta = o.breadcrumbsBeta; gamma = o.breadcrumbsGamma
        perRow = o.breadcrumbsScope == .row && shape.count > 1
        rowLength = shape.count > 1 ? shape.dropFirst().reduce(1, *) : count
        if perRow {
            rules = Array(repeating: nil, count: inputs.count)
        } else {
            let n = count
            let drop = Int(gamma * Double(n)), end = min(n, drop + Int(beta * Double(n)))
            rules = try inputs.indices.map { t in
                guard let tensor = inputs[t].byName[name], end > drop else { return TensorRule(drop: drop, end: end, total: n) }
                var wanted: [Int] = []
                if drop > 0 { wanted.append(drop - 1) }
                if end < n { wanted.append(end - 1) }
                var failure: (any Error)?
                var magnitudes = [Float](repeating: 0, count: 1 << 18)
                let found = ExactTopK.ranks(wanted, total: n) { body in
                    do {
                        try TaskVectorEntryStream(inputs[t].reader, tensor, scale: inputs[t].reader.scale).forEachValueChunk { chunk in
                            if magnitudes.count < chunk.count { magnitudes = [Float](repeating: 0, count: chunk.count) }
                            magnitudes.withUnsafeMutableBufferPointer { m in
                                for j in 0..<chunk.count { m[j] = abs(chunk[j]) }
                                body(UnsafeBufferPointer(rebasing: m[0..<chunk.count]))
                            }
                        }
                    } catch { if failure == nil { failure = error } }
                }
                if let failure { throw failure }
                var rule = TensorRule(drop: drop, end: end, total: n)
                var k = 0
                if drop > 0 { rule.dropValue = found[k].value; rule.dropTies = drop - found[k].greater; k += 1 }
                if end < n { rule.endValue = found[k].value; rule.endTies = end - found[k].greater }
                return rule
            }
        }
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - position
        precondition(dir.count == n && n <= blocks[0].capacity)
        for j in 0..<n { dir[j] = 0 }
        for (t, stream) in streams.enumerated() {
            let b = blocks[elect ? t : 0]
            b.count = 0
            guard let stream else { continue }
            try stream.next(upTo: end, into: b)
            let off = b.offsets, val = b.values, wt = weights[t]
            // Without election a kept entry is added at once; with it, it is marked and kept below.
            if elect {
                if kept.count < b.count { kept = [Bool](repeating: false, count: b.count) }
                for j in 0..<b.count { kept[j] = false }
            }
            if !perRow {
                for j in 0..<b.count where rules[t]!.keep(val[j]) {
                    if elect { kept[j] = true } else { dir[Int(off[j])] += wt * val[j] }
                }
            } else {
                // Per row: the rows of this block start at multiples of rowLength (blocks are whole rows).
                let drop = Int(gamma * Double(rowLength)), take = Int(beta * Double(rowLength))
                let stop = min(rowLength, drop + take)
                var j = 0
                while j < b.count {
                    let row = Int(off[j]) / rowLength
                    order.removeAll(keepingCapacity: true)
                    while j < b.count && Int(off[j]) / rowLength == row {
                        if val[j] != 0 { order.append(j) }
                        j += 1
                    }
                    guard stop > drop, order.count > drop else { continue }
                    order.sort { abs(val[$0]) != abs(val[$1]) ? abs(val[$0]) > abs(val[$1]) : $0 < $1 }
                    for r in drop..<min(order.count, stop) {
                        let e = order[r]
                        if elect { kept[e] = true } else { dir[Int(off[e])] += wt * val[e] }
                    }
                }
            }
            guard elect else { continue }
            var k = 0
            for j in 0..<b.count where kept[j] { off[k] = off[j]; val[k] = wt * val[j]; k += 1 }
            b.count = k
            for j in 0..<k { dir[Int(off[j])] += val[j] }
        }
        position = end
        if elect { scratch.electSign(blocks, n: n, dir: dir) }
    }
}

/// TALL and consensus in blocks: τ_MTL = Σ w_t τ_t over the block, each task's mask
/// m_t = 1[τ_t ≠ 0 ∧ |τ_t| ≥ λ_t |τ_MTL − τ_t|] for the block (`masks`, one run of bits per vector),
/// and the direction τ_MTL (TALL) or τ_MTL where at least k masks agree (consensus).
final class TallDirection: DirectionBlocks {
    let streams: [TaskVectorEntryStream?]
    let weights: [Float]
    let blocks: [EntryBlock]
    let lambda: Float
    let consensusK: Int?
    /// The masks of the last block, `masks[t][0..<n]`.
    let masks: [UnsafeMutableBufferPointer<Bool>]
    /// Owns `masks`.
    let scratch: MergeScratch
    var position = 0
    var taskMasks: [UnsafeMutableBufferPointer<Bool>]? { masks }

    init(tensor name: String, count: Int, maxBlock: Int, inputs: [Merger.Input], consensusK: Int?, options o: MergeOptions, scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        streams = try Merger.entryStreams(inputs, tensor: name, buffers: scratch.streamBuffers)
        weights = o.vectorWeights(inputs.count).map { Float($0) }
        let block = max(1, min(maxBlock, count))
        blocks = scratch.entryBlocks(inputs.count, capacity: block)
        lambda = Float(o.tallLambda)
        self.consensusK = consensusK
        masks = scratch.maskBlocks(inputs.count, capacity: block)
        self.scratch = scratch
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - position
        precondition(dir.count == n && n <= blocks[0].capacity)
        for j in 0..<n { dir[j] = 0 }
        for (t, stream) in streams.enumerated() {
            let b = blocks[t]
            b.count = 0
            guard let stream else { continue }
            try stream.next(upTo: end, into: b)
            let off = b.offsets, val = b.values, wt = weights[t]
            for j in 0..<b.count { val[j] = wt * val[j]; dir[Int(off[j])] += val[j] }
        }
        for (t, b) in blocks.enumerated() {
            let m = masks[t], off = b.offsets, val = b.values
            for j in 0..<n { m[j] = false }
            for j in 0..<b.count {
                let i = Int(off[j]), v = val[j]
                m[i] = v != 0 && abs(v) >= lambda * abs(dir[i] - v)
            }
        }
        if let k = consensusK {
            for i in 0..<n {
                var agree = 0
                for m in masks where m[i] { agree += 1 }
                if agree < k { dir[i] = 0 }
            }
        }
        position = end
    }
}

extension ExactTopK {
    /// For each 0-based rank r (in descending order) among `total` non-negative values — those
    /// `chunks` feeds, the rest zeros — the value at rank r and how many values are strictly greater.
    /// `chunks` is called twice; memory is constant.
    static func ranks(_ ranks: [Int], total: Int, chunks: ((UnsafeBufferPointer<Float>) -> Void) -> Void) -> [(value: Float, greater: Int)] {
        guard !ranks.isEmpty else { return [] }
        var high = [Int](repeating: 0, count: 1 << 16)
        var fed = 0
        high.withUnsafeMutableBufferPointer { h in
            chunks { chunk in for v in chunk { h[Int(v.bitPattern >> 16)] += 1 }; fed += chunk.count }
        }
        high[0] += total - fed
        var located: [(bucket: Int, above: Int)] = []
        for r in ranks {
            precondition(r >= 0 && r < total)
            var above = 0, bucket = high.count - 1
            while bucket > 0 && above + high[bucket] <= r { above += high[bucket]; bucket -= 1 }
            located.append((bucket, above))
        }
        let b0 = UInt32(located[0].bucket), b1 = UInt32(located.last!.bucket)
        var low0 = [Int](repeating: 0, count: 1 << 16), low1 = [Int](repeating: 0, count: 1 << 16)
        low0.withUnsafeMutableBufferPointer { l0 in
            low1.withUnsafeMutableBufferPointer { l1 in
                chunks { chunk in
                    for v in chunk {
                        let hb = v.bitPattern >> 16
                        if hb == b0 { l0[Int(v.bitPattern & 0xFFFF)] += 1 }
                        if hb == b1 { l1[Int(v.bitPattern & 0xFFFF)] += 1 }
                    }
                }
            }
        }
        if b0 == 0 { low0[0] += total - fed }
        if b1 == 0 { low1[0] += total - fed }
        return zip(ranks, located).map { r, loc in
            let low = UInt32(loc.bucket) == b0 ? low0 : low1
            var rest = r - loc.above, greater = loc.above, lo = low.count - 1
            while lo > 0 && low[lo] <= rest { rest -= low[lo]; greater += low[lo]; lo -= 1 }
            return (Float(bitPattern: UInt32(loc.bucket) << 16 | UInt32(lo)), greater)
        }
    }
}
