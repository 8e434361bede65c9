import Foundation
import LocusFormat

/// The Karcher mean: per tensor, the mean direction of the models on the unit sphere (found by
/// Riemannian gradient steps), scaled by their mean norm.
struct KarcherMethod: MergeMethodDefinition {
    let name = "karcher"
    let summary = [
        "per tensor, u_i = θ_i/‖θ_i‖ (models with ‖θ_i‖ ≤ --tol left out of the direction); start from the",
        "normalized mean of the u_i, then up to --max-iter steps m ← exp_m(mean_i Ω_i/sin Ω_i",
        "(u_i − cos Ω_i m)), Ω_i the angle from m to u_i, stopping when the step is below --tol;",
        "θ = (Σ_i ‖θ_i‖/N) · m, as mergekit's karcher; no base, no weights",
    ]
    let citation = "Karcher (1977), Riemannian center of mass and mollifier smoothing, Communications on Pure and Applied Mathematics 30(5), pp. 509–541: the centre of mass on a manifold, here the unit sphere of each tensor, as mergekit's karcher."
    let inputs = MergeInputKind.models(count: nil)
    var parameters: [MergeParameter] {
        [.integer("max_iter", \.karcherMaxIterations, range: "[0, ∞)", help: "most gradient steps on the sphere"),
         .number("tol", \.karcherTolerance, range: "(0, ∞)", help: "norms, angles and steps below it count as zero",
                 valid: { $0 > 0 && $0.isFinite })]
    }
    var producer: MergeProducer { .models(KarcherKernel()) }
}

struct KarcherKernel: ModelKernel {
    /// One pass for the Gram matrix ⟨θ_i, θ_j⟩ (float64), then the coefficients of θ = Σ_i c_i θ_i.
    func combiner(for t: CheckpointTensor, options o: MergeOptions, blocks: (([[Double]]) throws -> Void) throws -> Void) throws -> ModelBlockCombiner {
        var gram: [[Double]] = []
        try blocks { m in
            let k = m.count
            if gram.isEmpty { gram = Array(repeating: Array(repeating: 0, count: k), count: k) }
            // Each product of the block summed in order from 0, then added: the rows a of the pairs
            // run on the pool's threads.
            var sums = [Double](repeating: 0, count: k * k)
            sums.withUnsafeMutableBufferPointer { out in
                nonisolated(unsafe) let out = out
                let work = { (a: Int) in
                    // Array storage stays put while `m` is alive and unchanged.
                    let bases = m.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
                    let sums = Merger.dotProducts(bases[a], Array(bases[a...]), m[a].count)
                    for b in a..<k { out[a * k + b] = sums[b - a] }
                }
                if k > 1 && m[0].count * k >= 1 << 16 { try? Merger.onEveryInput(k, work) } else { for a in 0..<k { work(a) } }
            }
            for a in 0..<k {
                for b in a..<k {
                    let s = sums[a * k + b]
                    gram[a][b] += s
                    if b != a { gram[b][a] += s }
                }
            }
        }
        let c = gram.isEmpty ? [] : KarcherKernel.coefficients(gram: gram, maxIterations: o.karcherMaxIterations, tolerance: o.karcherTolerance)
        return { m in
            var out = [Double](repeating: 0, count: m[0].count)
            for (i, x) in m.enumerated() where i < c.count && c[i] != 0 { for j in out.indices { out[j] += c[i] * x[j] } }
            return out
        }
    }

    /// The Karcher mean of N tensors from their Gram matrix, as coefficients c with θ = Σ_i c_i θ_i.
    /// Every iterate m lies in the span of the unit vectors u_i = θ_i/‖θ_i‖, so it is held as
    /// m = Σ_i β_i u_i and every inner product comes from G_ij = ⟨u_i, u_j⟩ — the iteration needs no
    /// further pass over the tensors.
    static func coefficients(gram: [[Double]], maxIterations: Int, tolerance tol: Double) -> [Double] {
        let n = gram.count
        guard n > 1 else { return [1] }
        let norms = (0..<n).map { gram[$0][$0].squareRoot() }
        let valid = (0..<n).filter { norms[$0] > tol }
        guard let first = valid.first else { return Array(repeating: 0, count: n) }
        // G over the unit vectors (a zero-norm tensor's unit vector is zero).
        let g: [[Double]] = (0..<n).map { i in (0..<n).map { j in norms[i] == 0 || norms[j] == 0 ? 0 : gram[i][j] / (norms[i] * norms[j]) } }
        func dot(_ x: [Double], _ y: [Double]) -> Double {
            var s = 0.0
            for i in 0..<n where x[i] != 0 { for j in 0..<n where y[j] != 0 { s += x[i] * y[j] * g[i][j] } }
            return s
        }
        func inner(_ x: [Double], unit i: Int) -> Double { (0..<n).reduce(0) { $0 + x[$1] * g[$1][i] } }
        let alpha = 1 / Double(valid.count)   // 1/N renormalized over the valid tensors
        var mean = [Double](repeating: 0, count: n)
        for i in valid { mean[i] = alpha }
        let start = dot(mean, mean).squareRoot()
        if start < tol { mean = [Double](repeating: 0, count: n); mean[first] = 1 } else { mean = mean.map { $0 / start } }
        for _ in 0..<maxIterations {
            var tangent = [Double](repeating: 0, count: n)
            for i in valid {
                let c = min(1, max(-1, inner(mean, unit: i))), omega = acos(c)
                guard omega >= tol else { continue }
                let k = alpha * omega / sin(omega)
                tangent[i] += k
                for j in 0..<n { tangent[j] -= k * c * mean[j] }
            }
            let step = dot(tangent, tangent).squareRoot()
            guard step >= tol else { break }
            mean = (0..<n).map { cos(step) * mean[$0] + sin(step) * tangent[$0] / step }
            let length = dot(mean, mean).squareRoot()
            if length > tol { mean = mean.map { $0 / length } }
        }
        let scale = norms.reduce(0, +) / Double(n)
        return (0..<n).map { norms[$0] == 0 ? 0 : scale * mean[$0] / norms[$0] }
    }
}
