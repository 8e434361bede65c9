import LocusFormat

/// The merged direction of one tensor for generalized task arithmetic without outlier
/// sparsification (task arithmetic, TIES, DARE-linear, DARE-TIES, DELLA), computed in consecutive blocks
/// of flat indices. Per block it holds the block's direction, its stored entries of one vector (no
/// sparsification) or of every vector after sparsifying (they are needed twice, for the sign
/// election and for the disjoint mean), and, with sign election, a sign byte and a 16-bit count
/// per entry of the block; each vector is read once, through a `TaskVectorEntryStream`. Every
/// per-entry operation is the one the whole-tensor formulation does, in the same order, so the
/// result does not depend on the block size.
final class BlockDirection {
    let plain: Bool
    let streams: [TaskVectorEntryStream?]
    let weights: [Float]
    let trim: Bool
    let elect: Bool
    /// Per vector, the |τ| a kept entry must reach (TIES); nil without trimming.
    let thresholds: [Float]?
    let dare: Bool
    let dareScale: Float
    let dropRate: Double
    var random: [SplitMix64]
    /// DELLA's magnitude-ranked drop; nil without it.
    var magPrune: MagPrune?
    let blocks: [EntryBlock]
    let scratch: MergeScratch
    public private(set) var position = 0

    init(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], composition c: GTAComposition, options o: MergeOptions,
         globalThresholds: [Float]?, scratch: MergeScratch? = nil) throws {
        plain = !c.random && !c.magnitude && !c.signElection && !c.magPrune
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        streams = try Merger.entryStreams(inputs, tensor: name, buffers: scratch.streamBuffers)
        weights = o.vectorWeights(inputs.count).map { Float($0) }
        trim = c.magnitude
        elect = c.signElection
        dare = c.random
        dareScale = o.dareRescale ? Float(1 / (1 - o.dareDropRate)) : 1
        dropRate = o.dareDropRate
        random = inputs.indices.map { Merger.dareRandom(vector: $0, tensor: name, options: o) }
        magPrune = c.magPrune ? try MagPrune(tensor: name, shape: shape, count: count, inputs: inputs, options: o) : nil
        let block = max(1, min(maxBlock, count))
        blocks = scratch.entryBlocks(plain ? 1 : inputs.count, capacity: block)
        self.scratch = scratch
        if elect { scratch.ensureSignElection(block) }
        if trim {
            if o.tiesScope == .global, let g = globalThresholds {
                thresholds = g
            } else {
                // Per tensor: the top ⌊density · count⌋ of each vector's (weighted, DARE-dropped) |τ| in this tensor.
                let keep = Int(o.tiesDensity * Double(count))
                thresholds = try inputs.indices.map { t in
                    guard let tensor = inputs[t].byName[name] else { return .infinity }
                    return try Merger.magnitudeThreshold(inputs[t], [tensor], vector: t, keep: keep, random: c.random, options: o)
                }
            }
        } else {
            thresholds = nil
        }
    }

    /// Fills `dir` (of `end − position` entries) with the merged direction of [position, end).
    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - position
        precondition(dir.count == n && n <= blocks[0].capacity)
        for j in 0..<n { dir[j] = 0 }
        if plain {
            let b = blocks[0]
            for (t, stream) in streams.enumerated() {
                guard let stream else { continue }
                b.count = 0
                try stream.next(upTo: end, into: b)
                let wt = weights[t], off = b.offsets, val = b.values
                for j in 0..<b.count { dir[Int(off[j])] += wt * val[j] }
            }
            position = end
            return
        }
        // Sparsified: prepare each vector's entries (weight, random drop, magnitude trim), summing them.
        for (t, stream) in streams.enumerated() {
            let b = blocks[t]
            b.count = 0
            guard let stream else { continue }
            try stream.next(upTo: end, into: b)
            magPrune?.apply(b, vector: t)
            let off = b.offsets, val = b.values
            let wt = weights[t]
            if wt != 1 { for j in 0..<b.count { val[j] *= wt } }
            var kept = 0
            let thr = thresholds?[t] ?? 0
            for j in 0..<b.count {
                var v = val[j]
                if dare {
                    guard random[t].unitDouble() >= dropRate else { continue }
                    v *= dareScale
                }
                if trim && !(abs(v) >= thr && v != 0) { continue }
                off[kept] = off[j]; val[kept] = v; kept += 1
            }
            b.count = kept
            for j in 0..<kept { dir[Int(off[j])] += val[j] }
        }
        position = end
        if elect { scratch.electSign(blocks, n: n, dir: dir) }
    }
}

/// Generalized task arithmetic: which sparsifications a method applies to each task vector, in
/// this order (magnitude-ranked random drop, random drop, magnitude trim, per-row outliers), and
/// whether the sparsified vectors are combined by sign election (TIES's elect + disjoint mean) or summed.
struct GTAComposition: Sendable {
    var random = false
    var magnitude = false
    var outliers = false
    var signElection = false
    /// DELLA's MagPrune: a random drop whose keep probability grows with the entry's |τ| rank in its row.
    var magPrune = false
}

/// DELLA's MagPrune (Deep, Bhardwaj & Poria, 2024, §3, "Drop"): within each row of a tensor (the whole
/// tensor for rank ≤ 1), the entries are ranked by |τ| ascending — the zeros of the row first,
/// then the nonzero entries, equal magnitudes by position — and the entry of rank r among n is
/// kept with probability p_r = (density − ε) + r/(n − 1) · 2ε (density itself when n = 1), then
/// divided by p_r (`rescale`), so its expected value is unchanged. One draw per stored entry in
/// index order, from the generator DARE uses for that vector and tensor (`Merger.dareRandom`):
/// kept when the draw is < p_r. density = 1 keeps every entry as it is (no draws).
/// Rows lie whole inside a block (blocks are whole rows); a tensor of rank ≤ 1 is one row, whose
/// probabilities are computed when the tensor starts (one Double per stored entry and vector).
struct MagPrune {
    let density: Double, epsilon: Double, rescale: Bool
    /// Entries per ranked row (rank ≥ 2).
    let rowLength: Int
    var random: [SplitMix64]
    /// Rank ≤ 1: per vector, the keep probability of each stored entry, in index order, and how many were used.
    var wholeTensor: [[Double]]?
    var cursor: [Int]
    var order: [Int] = [], probability: [Double] = []
}

extension MagPrune {
    init(tensor name: String, shape: [Int], count: Int, inputs: [Merger.Input], options o: MergeOptions) throws {
        density = o.dellaDensity; epsilon = o.dellaEpsilon; rescale = o.dellaRescale
        random = inputs.indices.map { Merger.dareRandom(vector: $0, tensor: name, options: o) }
        cursor = Array(repeating: 0, count: inputs.count)
        if shape.count > 1 {
            rowLength = shape.dropFirst().reduce(1, *)
            wholeTensor = nil
        } else {
            rowLength = count
            var all: [[Double]] = []
            for input in inputs {
                guard let t = input.byName[name], o.dellaDensity < 1 else { all.append([]); continue }
                var values: [Float] = []
                try TaskVectorEntryStream(input.reader, t, scale: input.reader.scale).forEachValueChunk { values.append(contentsOf: $0) }
                all.append(MagPrune.probabilities(values, rowLength: count, density: density, epsilon: epsilon))
            }
            wholeTensor = all
        }
    }

    /// p of each of `values` (the stored entries of one row, in index order) in a row of `rowLength` entries.
    static func probabilities(_ values: [Float], rowLength n: Int, density d: Double, epsilon e: Double) -> [Double] {
        var order: [Int] = [], out: [Double] = []
        values.withUnsafeBufferPointer { probabilities($0, rowLength: n, density: d, epsilon: e, order: &order, into: &out) }
        return out
    }

    static func probabilities(_ v: UnsafeBufferPointer<Float>, rowLength n: Int, density d: Double, epsilon e: Double,
                              order: inout [Int], into out: inout [Double]) {
        order.removeAll(keepingCapacity: true)
        for j in v.indices where v[j] != 0 { order.append(j) }
        order.sort { abs(v[$0]) != abs(v[$1]) ? abs(v[$0]) < abs(v[$1]) : $0 < $1 }
        out.removeAll(keepingCapacity: true)
        out.append(contentsOf: repeatElement(d - e, count: v.count))   // stored zeros rank among the row's zeros
        let zeros = n - order.count
        for (k, j) in order.enumerated() { out[j] = probability(rank: zeros + k, of: n, density: d, epsilon: e) }
    }

    static func probability(rank r: Int, of n: Int, density d: Double, epsilon e: Double) -> Double {
        n > 1 ? (d - e) + (Double(r) / Double(n - 1)) * 2 * e : d
    }

    /// Drops (and rescales) vector `t`'s entries of one block in place; `b` holds them unweighted.
    mutating func apply(_ b: EntryBlock, vector t: Int) {
        guard density < 1, b.count > 0 else { return }
        let off = b.offsets, val = b.values
        var kept = 0
        func decide(_ j: Int, _ p: Double) {
            guard random[t].unitDouble() < p, val[j] != 0 else { return }
            off[kept] = off[j]; val[kept] = rescale ? Float(Double(val[j]) / p) : val[j]; kept += 1
        }
        if let whole = wholeTensor {
            for j in 0..<b.count { decide(j, whole[t][cursor[t]]); cursor[t] += 1 }
        } else {
            var j = 0
            while j < b.count {
                let row = Int(off[j]) / rowLength, start = j
                while j < b.count && Int(off[j]) / rowLength == row { j += 1 }
                MagPrune.probabilities(UnsafeBufferPointer(start: val + start, count: j - start), rowLength: rowLength,
                                       density: density, epsilon: epsilon, order: &order, into: &probability)
                for k in start..<j { decide(k, probability[k - start]) }
            }
        }
        b.count = kept
    }
}

/// Buffers reused from tensor to tensor (and block to block) of one merge, so that the memory
/// of a merge is allocated once, at the size of the largest block.
final class MergeScratch {
    let streamBuffers: [EntryStreamBuffers]
    private var blocks: [EntryBlock] = []
    var sign: [Int8] = [], agreeing: [UInt16] = []

    func ensureSignElection(_ block: Int) {
        if sign.count < block {
            sign = [Int8](repeating: 0, count: block)
            agreeing = [UInt16](repeating: 0, count: block)
        }
    }

    /// Sign election over a block: `dir` holds Σ_t of the kept entries in `blocks` (one per
    /// vector, already weighted and sparsified); it becomes the mean of the entries whose sign
    /// agrees with the sign of that sum (Yadav et al., 2023, §3: elect, then disjoint merge).
    func electSign(_ blocks: [EntryBlock], n: Int, dir: UnsafeMutableBufferPointer<Float>) {
        sign.withUnsafeMutableBufferPointer { s in
            agreeing.withUnsafeMutableBufferPointer { c in
                for j in 0..<n { s[j] = dir[j] > 0 ? 1 : (dir[j] < 0 ? -1 : 0); dir[j] = 0; c[j] = 0 }
                for b in blocks {
                    let off = b.offsets, val = b.values
                    for j in 0..<b.count {
                        let i = Int(off[j]), v = val[j]
                        if (v > 0 && s[i] > 0) || (v < 0 && s[i] < 0) { dir[i] += v; c[i] &+= 1 }
                    }
                }
                for j in 0..<n where c[j] > 0 { dir[j] /= Float(c[j]) }
            }
        }
    }
    /// Two direction blocks (one being computed on one thread while the other is written on the
    /// other: plain memory, not arrays, so the two threads never access one Swift variable), θ0 and
    /// the output bytes of a block.
    private(set) var directions: [UnsafeMutableBufferPointer<Float>] = []
    var theta: [Float] = [], bits: [UInt32] = []

    init(vectors: Int) { streamBuffers = (0..<vectors).map { _ in EntryStreamBuffers() } }
    deinit { for d in directions { d.deallocate() }; for m in masks { m.deallocate() } }

    func ensureDirections(_ capacity: Int) {
        guard directions.isEmpty || directions[0].count < capacity else { return }
        for d in directions { d.deallocate() }
        directions = (0..<2).map { _ in UnsafeMutableBufferPointer<Float>.allocate(capacity: capacity) }
    }

    /// TALL / consensus: one run of mask bits per vector for a block.
    private var masks: [UnsafeMutableBufferPointer<Bool>] = []
    func maskBlocks(_ n: Int, capacity: Int) -> [UnsafeMutableBufferPointer<Bool>] {
        if masks.count < n || masks.contains(where: { $0.count < capacity }) {
            let c = max(capacity, masks.map(\.count).max() ?? 0)
            for m in masks { m.deallocate() }
            masks = (0..<max(n, masks.count)).map { _ in UnsafeMutableBufferPointer<Bool>.allocate(capacity: c) }
        }
        return Array(masks.prefix(n))
    }

    func entryBlocks(_ n: Int, capacity: Int) -> [EntryBlock] {
        if blocks.count < n || blocks.contains(where: { $0.capacity < capacity }) {
            let c = max(capacity, blocks.map(\.capacity).max() ?? 0)
            blocks = (0..<max(n, blocks.count)).map { _ in EntryBlock(capacity: c) }
        }
        return Array(blocks.prefix(n))
    }
}

extension Merger {
    /// The generator of DARE's keep decisions for one vector's tensor (one draw per stored entry, in order).
    static func dareRandom(vector: Int, tensor: String, options o: MergeOptions) -> SplitMix64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325   // FNV-1a of the tensor name: streams do not depend on tensor order
        for b in tensor.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return SplitMix64(seed: o.seed ^ h ^ (UInt64(vector) &* 0x9E37_79B9_7F4A_7C15))
    }

    /// TIES trim threshold of one vector over `tensors`: the |w·τ| (after DARE's drop, when
    /// merging with DARE) keeping the top `keep` entries, by two streaming passes over the stored
    /// values (positions are not needed for it).
    static func magnitudeThreshold(_ input: Input, _ tensors: [TaskVectorTensor], vector t: Int, keep: Int, random dare: Bool,
                                   options o: MergeOptions) throws -> Float {
        let wt = Float((o.weights ?? [])[safe: t] ?? 1)
        let dareScale: Float = o.dareRescale ? Float(1 / (1 - o.dareDropRate)) : 1
        var failure: (any Error)?
        var magnitudes = [Float](repeating: 0, count: 1 << 18)
        let thr = ExactTopK.threshold(chunks: { body in
            for tensor in tensors where failure == nil {
                do {
                    var rng = dareRandom(vector: t, tensor: tensor.name, options: o)
                    try TaskVectorEntryStream(input.reader, tensor, scale: input.reader.scale).forEachValueChunk { chunk in
                        if magnitudes.count < chunk.count { magnitudes = [Float](repeating: 0, count: chunk.count) }
                        magnitudes.withUnsafeMutableBufferPointer { m in
                            var k = 0
                            for v in chunk {
                                var x = v * wt
                                if dare {
                                    guard rng.unitDouble() >= o.dareDropRate else { continue }
                                    x *= dareScale
                                }
                                m[k] = abs(x); k += 1
                            }
                            body(UnsafeBufferPointer(rebasing: m[0..<k]))
                        }
                    }
                } catch { failure = error }
            }
        }, keep: keep)
        if let failure { throw failure }
        return thr
    }
}

extension Array {
    subscript(safe i: Int) -> Element? { indices.contains(i) ? self[i] : nil }
}
