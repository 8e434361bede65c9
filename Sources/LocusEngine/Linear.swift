/// y = x Wᵀ + b over the last dimension, with W of shape [out, in] (PyTorch's layout). Inputs may
/// carry extra dimensions before the features ([B, T, in] for tokens), as with `nn.Linear`.
public final class Linear: InputGradientOptional {
    public let spec: LayerSpec
    public let weight: Parameter
    public let bias: Parameter?
    public let inFeatures: Int, outFeatures: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// False for the first layer of a model (see InputGradientOptional).
    public var computesInputGradient = true

    /// How fresh weights are drawn: PyTorch's nn.Linear default, or timm's transformer init
    /// (weights N(0, std²) — timm's trunc_normal_ bounds of ±2 never bind at std 0.02 — biases 0).
    public enum Initialisation: Sendable { case pytorchDefault, normal(std: Float) }

    init(spec: LayerSpec, prefix: String, inFeatures: Int, outFeatures: Int, bias: Bool, seed: UInt64,
         initialisation: Initialisation = .pytorchDefault) {
        self.spec = spec; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        var rng = SplitMix64(seed: seed)
        let draw: () -> Float, biasDraw: () -> Float
        switch initialisation {
        case .pytorchDefault:
            // PyTorch: kaiming_uniform(a=√5) for W and U(±1/√fan_in) for b, both bound 1/√fan_in.
            let bound = 1 / Float(inFeatures).squareRoot()
            draw = { rng.uniform(-bound, bound) }; biasDraw = draw
        case .normal(let std):
            draw = { std * rng.normal() }; biasDraw = { 0 }
        }
        weight = Parameter(name: parameterName(prefix, "weight"), value: Tensor(shape: [outFeatures, inFeatures]) { w in
            for i in 0..<w.count { w[i] = draw() } })
        self.bias = bias ? Parameter(name: parameterName(prefix, "bias"), value: Tensor(shape: [outFeatures]) { b in
            for i in 0..<b.count { b[i] = biasDraw() } }) : nil
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.last == inFeatures else { throw EngineError("\(weight.name): expects \(inFeatures) features per sample, got shape \(input)") }
        return Array(input.dropLast()) + [outFeatures]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let batch = x.count / inFeatures   // rows: samples × tokens
        lastInput = mode.keepsActivations ? x : nil
        let w = weight.effective
        // Start from the broadcast bias (or zeros) and let the product accumulate onto it.
        let b = bias?.effective.data
        var y = Tensor(shape: Array(x.shape.dropLast()) + [outFeatures]) { out in
            let o = outFeatures
            if let b { b.withUnsafeBufferPointer { bp in for r in 0..<batch { (out.baseAddress! + r * o).update(from: bp.baseAddress!, count: o) } } }
            else { out.initialize(repeating: 0) }
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
        let batch = x.count / inFeatures
        if GradientAccumulation.enabled { accumulateParameterGradients(gy, x, batch: batch) }
        guard computesInputGradient else { return Tensor(zeros: [0]) }
        let w = weight.effective
        var gx = Tensor(shape: x.shape) { _ in }
        gy.data.withUnsafeBufferPointer { g in w.data.withUnsafeBufferPointer { wp in gx.data.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(m: batch, n: inFeatures, k: outFeatures, a: g.baseAddress!, lda: outFeatures, b: wp.baseAddress!, ldb: inFeatures,
                      c: out.baseAddress!, ldc: inFeatures)
        } } }
        return gx
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
            var sums = [Float](repeating: 0, count: outFeatures)
            gy.data.withUnsafeBufferPointer { g in sums.withUnsafeMutableBufferPointer { acc in
                for r in 0..<batch { let row = g.baseAddress! + r * outFeatures; for j in 0..<outFeatures { acc[j] += row[j] } }
            } }
            let s = bias.forwardScale
            bias.grad.data.withUnsafeMutableBufferPointer { db in for j in 0..<outFeatures { db[j] += sums[j] * (s?[j] ?? 1) } }
        }
    }

    /// Per-sample squared gradients (see `Layer`). One sample's rows x_n, δ_n:
    ///   one row per sample: Σ_n (δ_n x_nᵀ)² = (δ²)ᵀ(x²), one GEMM; bias Σ_n δ_n²;
    ///   T token rows per sample ([B, T, in]: transformer blocks, the patch embedding): the weight is
    ///   shared by the tokens, so G_n = Σ_t δ_nt x_ntᵀ = δ_nᵀ X_n is formed first (one GEMM per
    ///   sample) and then squared, since (δ²)ᵀ(x²) would miss the cross-token terms; bias (Σ_t δ_nt)².
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === weight || p === bias else { throw notMine(p) }
        let (x, delta) = try perSampleData(for: p)
        if x.count != b * inFeatures { addingOnce(to: &local) { local in
            // Tokens share the weight: G_n = δ_nᵀ X_n ([out, T] · [T, in]) per sample, then squared.
            let t = x.count / (b * inFeatures), o = outFeatures, i = inFeatures
            if p === weight {
                var g = [Float](repeating: 0, count: o * i)
                delta.data.withUnsafeBufferPointer { dp in x.data.withUnsafeBufferPointer { xp in g.withUnsafeMutableBufferPointer { gp in
                    local.withUnsafeMutableBufferPointer { acc in
                        for n in 0..<b {
                            BLAS.gemm(transA: true, m: o, n: i, k: t, a: dp.baseAddress! + n * t * o, lda: o,
                                      b: xp.baseAddress! + n * t * i, ldb: i, c: gp.baseAddress!, ldc: i)
                            for j in 0..<gp.count { acc[j] += gp[j] * gp[j] }
                        }
                    }
                } } }
            } else {
                delta.data.withUnsafeBufferPointer { dp in
                    for n in 0..<b {
                        var acc = [Float](repeating: 0, count: o)
                        for r in 0..<t { for j in 0..<o { acc[j] += dp[(n * t + r) * o + j] } }
                        for j in 0..<o { local[j] += acc[j] * acc[j] }
                    }
                }
            }
        } } else if p === weight {
            // (δ²)ᵀ (x²): [out, B] · [B, in], added to what `local` holds (beta 1: one rounding per element).
            let d2 = delta.data.map { $0 * $0 }, x2 = x.data.map { $0 * $0 }
            d2.withUnsafeBufferPointer { dp in x2.withUnsafeBufferPointer { xp in local.withUnsafeMutableBufferPointer { out in
                BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: b, a: dp.baseAddress!, lda: outFeatures,
                          b: xp.baseAddress!, ldb: inFeatures, beta: 1, c: out.baseAddress!, ldc: inFeatures)
            } } }
        } else {
            addingOnce(to: &local) { local in
                for n in 0..<b { for j in 0..<outFeatures { let v = delta.data[n * outFeatures + j]; local[j] += v * v } }
            }
        }
    }

    static func accumulateWeightGrad(_ gy: Tensor, _ x: Tensor, into g: inout Tensor, outFeatures: Int, inFeatures: Int, batch: Int) {
        gy.data.withUnsafeBufferPointer { gp in x.data.withUnsafeBufferPointer { xp in g.data.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(transA: true, m: outFeatures, n: inFeatures, k: batch, a: gp.baseAddress!, lda: outFeatures,
                      b: xp.baseAddress!, ldb: inFeatures, beta: 1, c: out.baseAddress!, ldc: inFeatures)
        } } }
    }
}
