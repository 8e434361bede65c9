import Foundation
import LocusFormat

/// Model Stock: per tensor, the fine-tuned models' average pulled towards the base by how much the
/// task vectors agree.
struct ModelStockMethod: MergeMethodDefinition {
    let name = "model_stock"
    let summary = [
        "per tensor (--filter-wise: per row of its last axis), cos θ = the mean over pairs of",
        "⟨τ_i, τ_j⟩ / max(‖τ_i‖ ‖τ_j‖, 1e-6), clamped to [−1, 1]; t = N cos θ / (1 + (N−1) cos θ)",
        "(0 where that denominator is below 1e-6); θ = t · mean_i θ_i + (1−t) θ0 = θ0 + t · mean_i τ_i,",
        "as mergekit's model_stock with base_model; N ≥ 2 task vectors, no weights, no λ",
    ]
    let citation = "Jang, Yun, Han (2024), Model Stock: All we need is just a few fine-tuning steps, ECCV 2024, §3: the interpolation ratio t from the angle between fine-tuned weights, per layer."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [.bool("filter_wise", \.modelStockFilterWise, help: "one t per row of the last axis (a 1-D tensor: one t) instead of per tensor")]
    }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        inputCount >= 2 ? [] : ["model_stock needs at least 2 task vectors (the angle between them sets t), got \(inputCount)"]
    }

    var producer: MergeProducer { .direction(ModelStockKernel()) }
}

struct ModelStockKernel: DirectionKernel {
    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks {
        try ModelStockDirection(tensor: name, shape: shape, count: count, maxBlock: maxBlock, inputs: inputs, options: o, context: context,
                                scratch: scratch)
    }

    /// t from the squared norms and the pairwise dot products of N ≥ 2 vectors (`dot[a][b]`, a < b).
    static func ratio(normSquared: [Double], dot: [[Double]]) -> Double {
        let n = normSquared.count
        var sum = 0.0, pairs = 0
        for a in 0..<n {
            for b in (a + 1)..<n {
                let c = dot[a][b] / max(normSquared[a].squareRoot() * normSquared[b].squareRoot(), 1e-6)
                sum += min(1, max(-1, c)); pairs += 1
            }
        }
        guard pairs > 0 else { return 0 }
        let cosine = sum / Double(pairs), denominator = 1 + Double(n - 1) * cosine
        return abs(denominator) < 1e-6 ? 0 : Double(n) * cosine / denominator
    }
}

/// Each vector's entries of a block scattered into a dense float64 row (zeros where not stored), so
/// that per-segment norms and dot products are plain loops. Holds one float64 per entry of the block
/// and vector, besides the entry blocks. The vectors are task vector files read through entry
/// streams, or (`context.deltas`) fine-tuned checkpoints whose τ = θ_i − θ_base is computed here,
/// one vector per thread of the pool at a time.
final class DenseTaskVectorBlocks {
    let name: String
    let streams: [TaskVectorEntryStream?]
    let entries: [EntryBlock]
    let deltas: CheckpointDeltas?
    /// One buffer per vector (plain memory: the vectors are filled on several threads).
    let dense: [UnsafeMutableBufferPointer<Double>]
    private var theta0: UnsafeMutableBufferPointer<Double>
    private let raw: [CheckpointDeltas.RawScratch]
    private(set) var position = 0

    init(tensor name: String, capacity: Int, inputs: [Merger.Input], buffers: [EntryStreamBuffers], entries: [EntryBlock],
         context: DirectionContext) throws {
        self.name = name
        deltas = context.deltas
        streams = context.deltas == nil ? try Merger.entryStreams(inputs, tensor: name, buffers: buffers) : []
        self.entries = entries
        let count = context.vectorCount(inputs)
        dense = (0..<count).map { _ in
            let b = UnsafeMutableBufferPointer<Double>.allocate(capacity: capacity)
            b.initialize(repeating: 0)
            return b
        }
        theta0 = .allocate(capacity: context.deltas == nil ? 0 : capacity)
        raw = (0..<(context.deltas == nil ? 0 : count + 1)).map { _ in CheckpointDeltas.RawScratch() }
    }

    deinit { for d in dense { d.deallocate() }; theta0.deallocate(); sums.deallocate(); spread.deallocate(); varianceOut.deallocate() }

    /// One pass over entries [0, count) of the tensor in blocks of at most `block`:
    /// `body(blocks, start, n)` with `dense[t][0..<n]` holding entries [start, start + n).
    static func pass(tensor name: String, count: Int, block: Int, inputs: [Merger.Input], entries: [EntryBlock], context: DirectionContext,
                     _ body: (DenseTaskVectorBlocks, Int, Int) throws -> Void) throws {
        let v = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: inputs.map { _ in EntryStreamBuffers() },
                                          entries: entries, context: context)
        var start = 0
        while start < count {
            let end = min(count, start + block)
            try v.next(upTo: end)
            try body(v, start, end - start)
            start = end
        }
    }

    /// Reads [position, end) of every vector into `dense[t][0..<(end − position)]`.
    func next(upTo end: Int) throws {
        let n = end - position
        if let deltas {
            let baseTensor = deltas.base.tensor(named: name)!
            try CheckpointDeltas.read(deltas.base, baseTensor, position, end, into: theta0, raw: raw[0])
            // Each checkpoint's rows and τ on its own thread; every buffer belongs to one vector.
            let theta0 = UnsafeBufferPointer(self.theta0), start = position, dense = self.dense, raw = self.raw, name = self.name
            try Merger.onEveryInput(dense.count) { t in
                let d = dense[t]
                try CheckpointDeltas.read(deltas.models[t], deltas.models[t].tensor(named: name)!, start, end, into: d, raw: raw[t + 1])
                for j in 0..<n { d[j] = Double(Float(d[j] - theta0[j])) }
            }
            position = end
            return
        }
        for (t, stream) in streams.enumerated() {
            let d = dense[t]
            for j in 0..<n { d[j] = 0 }
            guard let stream else { continue }
            let b = entries[t]
            b.count = 0
            try stream.next(upTo: end, into: b)
            for j in 0..<b.count { d[Int(b.offsets[j])] = Double(b.values[j]) }
        }
        position = end
    }

    /// Σ_t dense[t][j] for j < n, each sum from 0 in the order of the vectors (scratch, valid until the next call).
    func sum(_ n: Int) -> UnsafeBufferPointer<Double> {
        if sums.count < n { sums.deallocate(); sums = .allocate(capacity: n) }
        let s = sums
        for j in 0..<n { s[j] = 0 }
        for d in dense { for j in 0..<n { s[j] += d[j] } }
        return UnsafeBufferPointer(rebasing: s[0..<n])
    }
    private var sums = UnsafeMutableBufferPointer<Double>(start: nil, count: 0)

    /// The population variance across the vectors of every entry j < n, in float32: the operations of
    /// `SceKernel.variance`, in its order, for the whole block (in two halves on the pool's threads).
    func variances(_ n: Int) -> UnsafeBufferPointer<Float> {
        if spread.count < n { spread.deallocate(); spread = .allocate(capacity: n); varianceOut.deallocate(); varianceOut = .allocate(capacity: n) }
        let mean = sum(n), s = spread, out = varianceOut, dense = self.dense, c = Double(dense.count)
        try? Merger.onEveryInput(n >= 1 << 15 ? 2 : 1) { part in
            let lo = part == 0 ? 0 : n / 2, hi = part == 0 && n >= 1 << 15 ? n / 2 : n
            for j in lo..<hi { s[j] = 0 }
            for v in dense { for j in lo..<hi { let m = mean[j] / c, d = v[j] - m; s[j] += d * d } }
            for j in lo..<hi { out[j] = Float(s[j] / c) }
        }
        return UnsafeBufferPointer(rebasing: out[0..<n])
    }
    private var spread = UnsafeMutableBufferPointer<Double>(start: nil, count: 0)
    private var varianceOut = UnsafeMutableBufferPointer<Float>(start: nil, count: 0)

    /// Squared norms and pairwise dot products over `range` of the current block, added to
    /// `normSquared` and `dot`. Each sum runs over the range in order from 0 and is then added, so
    /// the pairs can go to different threads (one row a of the pairs per part).
    func accumulate(_ range: Range<Int>, normSquared: inout [Double], dot: inout [[Double]]) {
        let k = dense.count, dense = self.dense
        var sums = [Double](repeating: 0, count: k * k)
        sums.withUnsafeMutableBufferPointer { out in
            nonisolated(unsafe) let out = out
            let work = { (a: Int) in
                // ‖τ_a‖² and ⟨τ_a, τ_b⟩ for b > a over the range, each summed in order.
                let lo = range.lowerBound
                let sums = Merger.dotProducts(UnsafePointer(dense[a].baseAddress! + lo), (a..<k).map { UnsafePointer(dense[$0].baseAddress! + lo) },
                                              range.count)
                for b in a..<k { out[a * k + b] = sums[b - a] }
            }
            if range.count * k >= 1 << 16 { try? Merger.onEveryInput(k, work) } else { for a in 0..<k { work(a) } }
        }
        for a in 0..<k {
            normSquared[a] += sums[a * k + a]
            for b in (a + 1)..<k { dot[a][b] += sums[a * k + b] }
        }
    }
}

/// Model Stock in blocks: per tensor, a first pass over the vectors for the norms and dot products
/// (then t), and the direction t · mean τ block by block; with `filter_wise` each row of the last
/// axis lies inside a block and gets its own t in the same pass.
final class ModelStockDirection: DirectionBlocks {
    let vectors: DenseTaskVectorBlocks
    let count: Int
    /// Entries per filter (filter_wise, rank ≥ 2); nil: one t for the tensor.
    let filter: Int?
    var wholeRatio = 0.0

    init(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions, context: DirectionContext,
         scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        let block = max(1, min(maxBlock, count))
        let entries = scratch.entryBlocks(inputs.count, capacity: block)
        self.count = context.vectorCount(inputs)
        filter = o.modelStockFilterWise && shape.count > 1 ? shape.last! : nil
        if filter == nil {
            var norms = [Double](repeating: 0, count: self.count)
            var dots = [[Double]](repeating: [Double](repeating: 0, count: self.count), count: self.count)
            try DenseTaskVectorBlocks.pass(tensor: name, count: count, block: block, inputs: inputs, entries: entries, context: context) { v, _, n in
                v.accumulate(0..<n, normSquared: &norms, dot: &dots)
            }
            wholeRatio = ModelStockKernel.ratio(normSquared: norms, dot: dots)
        }
        vectors = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: scratch.streamBuffers, entries: entries,
                                            context: context)
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - vectors.position
        try vectors.next(upTo: end)
        // Σ_i τ_i per entry, added in the order of the vectors (from 0).
        let sum = vectors.sum(n)
        func fill(_ range: Range<Int>, _ t: Double) {
            for j in range { dir[j] = Float(t * (sum[j] / Double(count))) }
        }
        guard let filter else { return fill(0..<n, wholeRatio) }
        for start in stride(from: 0, to: n, by: max(1, filter)) {
            var norms = [Double](repeating: 0, count: count)
            var dots = [[Double]](repeating: [Double](repeating: 0, count: count), count: count)
            let range = start..<min(n, start + filter)
            vectors.accumulate(range, normSquared: &norms, dot: &dots)
            fill(range, ModelStockKernel.ratio(normSquared: norms, dot: dots))
        }
    }
}
