import Foundation
import LocusFormat

/// SCE: select the entries where the task vectors vary most, weight each vector by its mean squared
/// change, erase the entries whose sign disagrees with the majority, and average.
struct SceMethod: MergeMethodDefinition {
    let name = "sce"
    let summary = [
        "per tensor: select the top --select-topk of the entries with nonzero variance across the N vectors",
        "(population variance, ties by position; 1 selects all); w_t = mean of τ_t² over the tensor after",
        "selection, divided by Σ w (1/N each when Σ w < 1e-6); erase τ_t where its sign is not that of Σ_t τ_t",
        "(≥ 0 counts as +); θ = θ0 + Σ_t w_t τ_t / max(Σ_t w_t over the kept, 1e-6), as mergekit's sce",
    ]
    let citation = "Wan, Zhong, Yang, Chen, Quan (2025), FuseChat: Knowledge Fusion of Chat Models, EMNLP 2025 (arXiv:2408.07990): the SCE merge (select, calculate, erase) of its merging stage."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [.number("select_topk", \.sceSelectTopK, range: "(0, 1]", help: "fraction of the varying entries of a tensor kept",
                 valid: { $0 > 0 && $0 <= 1 })]
    }
    var producer: MergeProducer { .direction(SceKernel()) }
}

struct SceKernel: DirectionKernel {
    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks {
        try SceDirection(tensor: name, count: count, maxBlock: maxBlock, inputs: inputs, options: o, context: context, scratch: scratch)
    }

    /// The population variance of entry j across the vectors, in float32 for ranking.
    static func variance<Vector: RandomAccessCollection<Double>>(_ dense: [Vector], _ j: Int) -> Float where Vector.Index == Int {
        var mean = 0.0
        for v in dense { mean += v[j] }
        mean /= Double(dense.count)
        var s = 0.0
        for v in dense { s += (v[j] - mean) * (v[j] - mean) }
        return Float(s / Double(dense.count))
    }
}

/// SCE in blocks. Before the first block, with select_topk < 1: two passes over the vectors for the
/// variance at the selection boundary (an exact two-level histogram of the float32 variances) and one
/// for the weights; without selection, one pass for the weights. The blocks then select, erase and
/// average in one pass, resolving ties at the boundary by position as they stream in order.
final class SceDirection: DirectionBlocks {
    let vectors: DenseTaskVectorBlocks
    let select: Bool
    /// Selected ⟺ variance > boundary, or = boundary among the first `boundaryTies` such entries.
    var boundary: Float = 0, boundaryTies = 0, boundarySeen = 0
    var weights: [Double] = []

    init(tensor name: String, count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions, context: DirectionContext,
         scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        let block = max(1, min(maxBlock, count))
        let entries = scratch.entryBlocks(inputs.count, capacity: block)
        let n = context.vectorCount(inputs)
        // The passes add up per entry in order, whatever the block: checkpoints' τ go through in
        // smaller blocks (less memory while the next tensor is prepared beside this one's blocks).
        let passBlock = context.deltas == nil ? block : min(block, 1 << 17)
        func pass(_ body: (DenseTaskVectorBlocks, Int, Int) -> Void) throws {
            try DenseTaskVectorBlocks.pass(tensor: name, count: count, block: passBlock, inputs: inputs, entries: entries, context: context, body)
        }
        let select = o.sceSelectTopK < 1
        var boundary: Float = 0, boundaryTies = 0
        if select {
            var nonzero = 0
            try pass { v, _, m in for x in v.variances(m) where x != 0 { nonzero += 1 } }
            let k = Int(Double(nonzero) * o.sceSelectTopK)
            if k == 0 {
                boundary = .infinity   // nothing selected
            } else {
                var failure: (any Error)?
                let found = ExactTopK.ranks([k - 1], total: count) { body in
                    do {
                        try pass { v, _, m in body(v.variances(m)) }
                    } catch { if failure == nil { failure = error } }
                }
                if let failure { throw failure }
                boundary = found[0].value; boundaryTies = k - found[0].greater
            }
        }
        // The weights: mean of τ_t² over the tensor after selection (the same decisions, replayed in order).
        var squares = [Double](repeating: 0, count: n)
        var rule = (boundary, boundaryTies, 0)
        try pass { v, _, m in
            if select {
                let variance = v.variances(m)
                for j in 0..<m where SceDirection.selected(variance[j], &rule) { for t in 0..<n { squares[t] += v.dense[t][j] * v.dense[t][j] } }
            } else {
                for t in 0..<n { let x = v.dense[t]; var s = squares[t]; for j in 0..<m { s += x[j] * x[j] }; squares[t] = s }
            }
        }
        let w = squares.map { $0 / Double(max(count, 1)) }
        let total = w.reduce(0, +)
        weights = abs(total) < 1e-6 ? Array(repeating: 1 / Double(n), count: n) : w.map { $0 / total }
        self.select = select; self.boundary = boundary; self.boundaryTies = boundaryTies
        vectors = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: scratch.streamBuffers, entries: entries,
                                            context: context)
    }

    /// The selection rule on the next entry in order: variance > boundary, or equal and among the first `ties`.
    static func selected(_ v: Float, _ rule: inout (Float, Int, Int)) -> Bool {
        if v > rule.0 { return true }
        guard v == rule.0 else { return false }
        rule.2 += 1
        return rule.2 <= rule.1
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let n = end - vectors.position
        try vectors.next(upTo: end)
        let dense = vectors.dense
        var rule = (boundary, boundaryTies, boundarySeen)
        let variance = select ? vectors.variances(n) : UnsafeBufferPointer(start: nil, count: 0)
        let weights = self.weights
        for j in 0..<n {
            dir[j] = 0
            if select && !SceDirection.selected(variance[j], &rule) { continue }
            var sum = 0.0
            for v in dense { sum += v[j] }
            let majority = sum >= 0 ? 1.0 : -1.0
            var num = 0.0, den = 0.0
            for (t, v) in dense.enumerated() where v[j] != 0 && (v[j] > 0) == (majority > 0) {
                num += weights[t] * v[j]; den += weights[t]
            }
            dir[j] = Float(num / max(den, 1e-6))
        }
        boundarySeen = rule.2
    }
}
