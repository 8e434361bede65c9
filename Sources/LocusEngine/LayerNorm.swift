import LocusKernels

/// Normalises each row over its last dimension: y = (x − μ)/√(σ² + ε) · γ + β (biased variance, as PyTorch).
public final class LayerNorm: Layer {
    public let spec: LayerSpec
    public let weight: Parameter
    public let bias: Parameter
    public let features: Int
    public let eps: Float
    /// x̂ of the last forward (what per-sample LayerNorm gradients are built from) and 1/σ per row.
    private var lastNormalized: [Float] = []
    private var inverseStd: [Float] = []
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [weight, bias] }

    init(spec: LayerSpec, prefix: String, features: Int, eps: Float) {
        self.spec = spec; self.features = features; self.eps = eps
        weight = Parameter(name: parameterName(prefix, "weight"), value: Tensor(shape: [features], repeating: 1))
        bias = Parameter(name: parameterName(prefix, "bias"), value: Tensor(zeros: [features]))
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.last == features else { throw EngineError("\(weight.name): last dimension must be \(features), got \(input)") }
        return input
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let rows = x.count / features, d = features
        var normalized = [Float](unsafeUninitializedCapacity: x.count) { _, c in c = x.count }
        var inverse = [Float](unsafeUninitializedCapacity: rows) { _, c in c = rows }
        let g = weight.effective.data, b = bias.effective.data
        let y = Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { src in
            normalized.withUnsafeMutableBufferPointer { xh in inverse.withUnsafeMutableBufferPointer { inv in
                g.withUnsafeBufferPointer { g in b.withUnsafeBufferPointer { b in
                    locus_layer_norm(src.baseAddress, g.baseAddress, b.baseAddress, eps, xh.baseAddress, inv.baseAddress,
                                     y.baseAddress, rows, d)
                } }
            } }
        } }
        lastNormalized = mode.keepsActivations ? normalized : []
        inverseStd = mode.keepsActivations ? inverse : []
        return y
    }

    /// Per-sample squared gradients (see `Layer`), summing over a sample's rows (tokens) before
    /// squaring: weight Σ_n (Σ_t δ_nt ⊙ x̂_nt)², bias Σ_n (Σ_t δ_nt)².
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === weight || p === bias else { throw notMine(p) }
        let delta = try perSampleData(for: p).outputGradient
        let d = features, rowsPerSample = delta.count / (b * d)
        let isWeight = p === weight
        addingOnce(to: &local) { local in for n in 0..<b {
            var acc = [Float](repeating: 0, count: d)
            for r in 0..<rowsPerSample {
                let row = (n * rowsPerSample + r) * d
                for j in 0..<d { acc[j] += delta.data[row + j] * (isWeight ? lastNormalized[row + j] : 1) }
            }
            for j in 0..<d { local[j] += acc[j] * acc[j] }
        } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let rows = gy.count / features, d = features
        let g = weight.effective.data
        // Σ dy ⊙ x̂ and Σ dy over the rows, as partial sums over two fixed halves added in order
        // (results do not depend on timing or on the number of threads).
        var partial = [Float](repeating: 0, count: 2 * d)
        let gx = Tensor(shape: gy.shape) { out in gy.data.withUnsafeBufferPointer { dy in
            lastNormalized.withUnsafeBufferPointer { xh in inverseStd.withUnsafeBufferPointer { inv in
                g.withUnsafeBufferPointer { g in partial.withUnsafeMutableBufferPointer { part in
                    locus_layer_norm_backward(dy.baseAddress, xh.baseAddress, inv.baseAddress, g.baseAddress, out.baseAddress,
                                              part.baseAddress, part.baseAddress! + d, rows, d)
                } }
            } }
        } }
        let sw = weight.forwardScale, sb = bias.forwardScale
        if GradientAccumulation.enabled { for j in 0..<d {
            weight.grad.data[j] += partial[j] * (sw?[j] ?? 1)
            bias.grad.data[j] += partial[d + j] * (sb?[j] ?? 1)
        } }
        return gx
    }
}
