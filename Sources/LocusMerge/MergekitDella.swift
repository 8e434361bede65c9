import LocusFormat

/// mergekit's DELLA drop (`della_magprune` of mergekit 0.1.5's `sparsify.py`, its reading of Deep,
/// Bhardwaj & Poria, 2024, *DELLA-Merging*, arXiv:2406.11617, §3) on one input's δ of one tensor,
/// for the mergekit driver (`MergeSemantics.mergekit`; docs/merging.md §Configs). It differs from
/// Locus's `MagPrune` (the paper's) in three ways:
///
/// - the slices ranked: along the tensor's second axis (a matrix: each row; rank ≥ 3: each slice
///   along axis 1), the whole tensor for rank ≤ 1 — `MagPrune` ranks each row of all axes after
///   the first;
/// - the keep probability is computed in float32 as mergekit computes it: within a slice of n
///   entries ranked r = 0 … n − 1 by |δ| ascending (zeros included; equal magnitudes by position,
///   where torch's unstable sort leaves their order open), p = f32(density − ε) + (f32(r)/f32(n − 1)·2)·f32(ε);
/// - a kept entry is not divided by p: with `rescale` (mergekit's default) the driver multiplies
///   every kept entry of the tensor by ‖δ‖₁ / ‖kept‖₁ (mergekit's L1 `rescaled_masked_tensor`).
///
/// mergekit draws the mask with torch's generator, which Locus does not reproduce: here one draw u
/// per non-zero entry of δ, in index order, from the generator DARE uses for that input and tensor
/// (`Merger.dareRandom`; docs/talos.md §DARE); the entry is kept when u < p. Rows are visited in
/// order through `prune`; `restart` rewinds the generator for another pass (the L1 pass, then the
/// merge). For rank ≤ 1 the probabilities of the whole tensor are computed first (`prepare`, one
/// Float per entry).
final class MergekitMagPrune {
    let tensor: String
    let shape: [Int]
    let count: Int
    /// f32(density − ε) and f32(ε).
    let low: Float, epsilon: Float
    let start: SplitMix64
    var random: SplitMix64
    /// Entries of δ already visited by `prune` (blocks are whole rows of the first axis).
    var position = 0
    /// Rank ≤ 1: the keep probability of every entry.
    var whole: [Float]? = nil
    private var keys: [UInt64] = []

    init(tensor: String, shape: [Int], count: Int, density: Double, epsilon: Double, random: SplitMix64) {
        self.tensor = tensor; self.shape = shape; self.count = count
        low = Float(density - epsilon); self.epsilon = Float(epsilon)
        start = random; self.random = random
    }

    /// Whether the probabilities need the whole tensor first (rank ≤ 1: one slice).
    var needsWholeTensor: Bool { shape.count < 2 }

    /// The length of a ranked slice (the second axis; the whole tensor for rank ≤ 1).
    static func sliceLength(_ shape: [Int]) -> Int { shape.count < 2 ? shape.reduce(1, *) : shape[1] }

    /// p for rank r (ascending |δ|) of a slice of n ≥ 2 entries, in float32 as mergekit computes it.
    static func probability(rank r: Int, of n: Int, low: Float, epsilon: Float) -> Float {
        low + (Float(r) / Float(n - 1) * 2) * epsilon
    }

    /// The keep probabilities of a slice: `out[base + j·stride]` for the entries `v[base + j·stride]`,
    /// j < n. Ranks come from sorting keys |v| bits << 32 | j (positive floats order as their bits).
    static func probabilities(_ v: UnsafeBufferPointer<Float>, base: Int, stride: Int, n: Int, low: Float, epsilon: Float,
                              keys: inout [UInt64], into out: UnsafeMutableBufferPointer<Float>) {
        keys.removeAll(keepingCapacity: true)
        for j in 0..<n { keys.append(UInt64(abs(v[base + j * stride]).bitPattern) << 32 | UInt64(j)) }
        keys.sort()
        for (r, k) in keys.enumerated() { out[base + Int(k & 0xFFFF_FFFF) * stride] = probability(rank: r, of: n, low: low, epsilon: epsilon) }
    }

    /// The keep probability of every entry of a block of whole first-axis rows (rank ≥ 2), or of the
    /// whole tensor (rank ≤ 1).
    func probabilities(_ v: UnsafeBufferPointer<Float>) -> [Float] {
        var out = [Float](repeating: 0, count: v.count)
        out.withUnsafeMutableBufferPointer { o in
            if shape.count < 2 {
                MergekitMagPrune.probabilities(v, base: 0, stride: 1, n: v.count, low: low, epsilon: epsilon, keys: &keys, into: o)
                return
            }
            let b = shape[1], inner = shape.dropFirst(2).reduce(1, *), row = b * inner
            for r in Swift.stride(from: 0, to: v.count, by: row) {
                for k in 0..<inner {
                    MergekitMagPrune.probabilities(v, base: r + k, stride: inner, n: b, low: low, epsilon: epsilon, keys: &keys, into: o)
                }
            }
        }
        return out
    }

    /// Rank ≤ 1: the probabilities of the whole tensor, from every block of δ in order.
    func prepare(_ pass: ((UnsafeBufferPointer<Float>) -> Void) throws -> Void) rethrows {
        var all: [Float] = []
        all.reserveCapacity(count)
        try pass { all.append(contentsOf: $0) }
        whole = all.withUnsafeBufferPointer { probabilities($0) }
    }

    /// Rewinds to the tensor's first entry and the generator's first draw.
    func restart() { random = start; position = 0 }

    /// Zeroes the dropped entries of the next block of δ (whole first-axis rows, following the last block).
    func prune(_ d: UnsafeMutableBufferPointer<Float>) {
        if let whole {
            for j in d.indices where d[j] != 0 && !(random.unitDouble() < Double(whole[position + j])) { d[j] = 0 }
        } else {
            let p = probabilities(UnsafeBufferPointer(d))
            for j in d.indices where d[j] != 0 && !(random.unitDouble() < Double(p[j])) { d[j] = 0 }
        }
        position += d.count
    }

    /// ‖δ‖₁ and ‖kept‖₁ (float64) over the whole tensor, from every block of δ in order; rewinds after.
    func l1Norms(_ pass: ((UnsafeBufferPointer<Float>) -> Void) throws -> Void) rethrows -> (before: Double, after: Double) {
        restart()
        var before = 0.0, after = 0.0, copy: [Float] = []
        try pass { chunk in
            copy.removeAll(keepingCapacity: true)
            copy.append(contentsOf: chunk)
            for v in chunk { before += Double(abs(v)) }
            copy.withUnsafeMutableBufferPointer { prune($0) }
            for v in copy { after += Double(abs(v)) }
        }
        restart()
        return (before, after)
    }
}

extension MergekitParameters {
    /// mergekit's checks of DELLA's parameters, for each input with 0 < density < 1 (density ≥ 1 keeps δ,
    /// ≤ 0 drops it): density ± ε inside (0, 1).
    static func dellaProblems(_ o: MergeOptions, inputCount k: Int) -> [String] {
        guard o.method.name == "della" || o.method.name == "della_linear" else { return [] }
        let d = o.densities ?? Array(repeating: 1, count: k), e = o.epsilons ?? Array(repeating: 0.15, count: k)
        var out: [String] = []
        for i in 0..<min(k, d.count, e.count) where d[i] > 0 && d[i] < 1 && !(d[i] - e[i] > 0 && d[i] + e[i] < 1) {
            out.append("\(o.method.name): models[\(i)] needs density ± epsilon inside (0, 1) (the keep probabilities, as mergekit requires), "
                       + "got density \(d[i]), epsilon \(e[i])")
        }
        if let e = o.epsilons, e.count != k { out.append("\(e.count) epsilons for \(k) inputs") }
        return out
    }
}

extension Merger {
    /// mergekit's della fails on a slice of one entry (rank_norm 0/0) and on a scalar tensor: such
    /// tensors are named before any output (with the config's include/exclude they can be left out).
    static func mergekitDellaProblems(_ tensors: [CheckpointTensor], inputCount k: Int, options: (String) -> MergeOptions) -> [String] {
        var out: [String] = []
        for t in tensors where t.dtype.isFloatingPoint && t.count > 0 {
            let o = options(t.name)
            guard o.merges(t.name), o.method.name == "della" || o.method.name == "della_linear" else { continue }
            let d = o.densities ?? Array(repeating: 1, count: k)
            guard d.contains(where: { $0 > 0 && $0 < 1 }) else { continue }
            if t.shape.isEmpty {
                out.append("'\(t.name)' is a scalar: mergekit's della ranks along the second axis and cannot sparsify it (exclude it)")
            } else if MergekitMagPrune.sliceLength(t.shape) < 2 {
                out.append("'\(t.name)' has shape \(t.shape): mergekit's della ranks slices of \(t.shape.count < 2 ? "the whole tensor" : "its second axis"), "
                           + "here of 1 entry, which it cannot rank (exclude it)")
            }
        }
        return out
    }
}
