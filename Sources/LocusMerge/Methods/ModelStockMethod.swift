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
        try ModelStockDirection(tensor: name, shape: shape, count: count, maxBlock: maxBlock, inputs: inputs, options: o, scratch: scratch)
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
/// and vector, besides the entry blocks.
final class DenseTaskVectorBlocks {
    let streams: [TaskVectorEntryStream?]
    let entries: [EntryBlock]
    var dense: [[Double]]
    private(set) var position = 0

    init(tensor name: String, capacity: Int, inputs: [Merger.Input], buffers: [EntryStreamBuffers], entries: [EntryBlock]) throws {
        streams = try Merger.entryStreams(inputs, tensor: name, buffers: buffers)
        self.entries = entries
        dense = inputs.map { _ in [Double](repeating: 0, count: capacity) }
    }

    /// One pass over entries [0, count) of the tensor in blocks of at most `block`:
    /// `body(blocks, start, n)` with `dense[t][0..<n]` holding entries [start, start + n).
    static func pass(tensor name: String, count: Int, block: Int, inputs: [Merger.Input], entries: [EntryBlock],
                     _ body: (DenseTaskVectorBlocks, Int, Int) throws -> Void) throws {
        let v = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: inputs.map { _ in EntryStreamBuffers() },
                                          entries: entries)
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
        for (t, stream) in streams.enumerated() {
            dense[t].withUnsafeMutableBufferPointer { d in for j in 0..<n { d[j] = 0 } }
            guard let stream else { continue }
            let b = entries[t]
            b.count = 0
            try stream.next(upTo: end, into: b)
            dense[t].withUnsafeMutableBufferPointer { d in for j in 0..<b.count { d[Int(b.offsets[j])] = Double(b.values[j]) } }
        }
        position = end
    }

    /// Squared norms and pairwise dot products over `range` of the current block, added to `normSquared` and `dot`.
    func accumulate(_ range: Range<Int>, normSquared: inout [Double], dot: inout [[Double]]) {
        for a in dense.indices {
            var s = 0.0
            for j in range { s += dense[a][j] * dense[a][j] }
            normSquared[a] += s
            for b in (a + 1)..<dense.count {
                var d = 0.0
                for j in range { d += dense[a][j] * dense[b][j] }
                dot[a][b] += d
            }
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

    init(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions, scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        let block = max(1, min(maxBlock, count))
        let entries = scratch.entryBlocks(inputs.count, capacity: block)
        self.count = inputs.count
        filter = o.modelStockFilterWise && shape.count > 1 ? shape.last! : nil
        if filter == nil {
            var norms = [Double](repeating: 0, count: inputs.count)
            var dots = [[Double]](repeating: [Double](repeating: 0, count: inputs.count), count: inputs.count)
            try DenseTaskVectorBlocks.pass(tensor: name, count: count, block: block, inputs: inputs, entries: entries) { v, _, n in
                v.accumulate(0..<n, normSquared: &norms, dot: &dots)
            }
            wholeRatio = ModelStockKernel.ratio(normSquared: norms, dot: dots)
        }
        vectors = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: scratch.streamBuffers, entries: entries)
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - vectors.position
        try vectors.next(upTo: end)
        func fill(_ range: Range<Int>, _ t: Double) {
            for j in range {
                var s = 0.0
                for v in vectors.dense { s += v[j] }
                dir[j] = Float(t * (s / Double(count)))
            }
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
