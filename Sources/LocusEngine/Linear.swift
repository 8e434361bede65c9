/// y = x Wᵀ + b, with W of shape [out, in] (PyTorch's layout).
public final class Linear: Layer {
    public let spec: LayerSpec
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int, outFeatures: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// False for the first layer of a model: nobody needs the gradient of the input data, and it
    /// costs as much as the weight gradient.
    public var computesInputGradient = true

    init(spec: LayerSpec, prefix: String, inFeatures: Int, outFeatures: Int, bias: Bool, seed: UInt64) {
        self.spec = spec; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        // PyTorch: kaiming_uniform(a=√5) for W and U(±1/√fan_in) for b, both bound 1/√fan_in.
        var rng = SeededRandom(seed: seed)
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(name: "\(prefix).weight", value: Tensor(shape: [outFeatures, inFeatures]) { w in
            for i in 0..<w.count { w[i] = rng.uniform(-bound, bound) } })
        self.bias = bias ? Parameter(name: "\(prefix).bias", value: Tensor(shape: [outFeatures]) { b in
            for i in 0..<b.count { b[i] = rng.uniform(-bound, bound) } }) : nil
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input == [inFeatures] else { throw EngineError("\(weight.name): expects \(inFeatures) features per sample, got shape \(input)") }
        return [outFeatures]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let batch = x.rows
        lastInput = x
        let w = weight.effective
        // Start from the broadcast bias (or zeros) and let the product accumulate onto it.
        var y = Tensor(zeros: [batch, outFeatures])
        if let b = bias?.effective.data {
            y.data.withUnsafeMutableBufferPointer { out in for r in 0..<batch { for j in 0..<outFeatures { out[r * outFeatures + j] = b[j] } } }
        }
        x.data.withUnsafeBufferPointer { xp in w.data.withUnsafeBufferPointer { wp in y.data.withUnsafeMutableBufferPointer { yp in
            BLAS.gemm(transB: true, m: batch, n: outFeatures, k: inFeatures, a: xp.baseAddress!, lda: inFeatures,
                      b: wp.baseAddress!, ldb: inFeatures, beta: 1, c: yp.baseAddress!, ldc: outFeatures)
        } } }
        return y
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("Linear.backward before forward") }
        lastOutputGradient = gy
        let batch = x.rows
        if GradientAccumulation.enabled { accumulateParameterGradients(gy, x, batch: batch) }
        guard computesInputGradient else { return Tensor(zeros: [0]) }
        let w = weight.effective
        var gx = Tensor(shape: [batch, inFeatures]) { _ in }
        gy.data.withUnsafeBufferPointer { g in w.data.withUnsafeBufferPointer { wp in gx.data.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(m: batch, n: inFeatures, k: outFeatures, a: g.baseAddress!, lda: outFeatures, b: wp.baseAddress!, ldb: inFeatures,
                      c: out.baseAddress!, ldc: inFeatures)
        } } }
        return gx.reshaped(x.shape)
    }

    private func accumulateParameterGradients(_ gy: Tensor, _ x: Tensor, batch: Int) {
        // dW += gyᵀ x (times the forward scale, since y used W ⊙ s); db += Σ_rows gy.
        if let s = weight.forwardScale {
            var g = Tensor(zeros: weight.value.shape)
            Linear.accumulateWeightGrad(gy, x, into: &g, outFeatures: outFeatures, inFeatures: inFeatures, batch: batch)
            weight.grad.data.withUnsafeMutableBufferPointer { d in for i in 0..<d.count { d[i] += g.data[i] * s[i] } }
        } else {
            Linear.accumulateWeightGrad(gy, x, into: &weight.grad, outFeatures: outFeatures, inFeatures: inFeatures, batch: batch)
        }
        if let bias {
            let s = bias.forwardScale
            bias.grad.data.withUnsafeMutableBufferPointer { db in gy.data.withUnsafeBufferPointer { g in
                for r in 0..<batch { for j in 0..<outFeatures { db[j] += g[r * outFeatures + j] * (s?[j] ?? 1) } }
            } }
        }
    }

    static func accumulateWeightGrad(_ gy: Tensor, _ x: Tensor, into g: inout Tensor, outFeatures: Int, inFeatures: Int, batch: Int) {
        gy.data.withUnsafeBufferPointer { gp in x.data.withUnsafeBufferPointer { xp in g.data.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: batch, a: gp.baseAddress!, lda: outFeatures,
                      b: xp.baseAddress!, ldb: inFeatures, beta: 1, c: out.baseAddress!, ldc: inFeatures)
        } } }
    }
}
