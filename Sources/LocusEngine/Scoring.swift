import Foundation

/// Sensitivity estimators (Iurada et al., 2025; docs/talos.md §Estimators; spec §3 `estimator`).
public enum ScoreEstimator: String, Sendable, CaseIterable, Codable {
    /// TaLoS: ŷ ~ softmax(f(x)), squared gradient of the raw logit f_ŷ(x), `draws` per input.
    case talos
    /// Its expectation Σ_c p_c (∂f_c/∂θ)², deterministic.
    case talosExact = "talos-exact"
    /// (∇ log p(y_data | x))².
    case fisherEmpirical = "fisher-empirical"
    /// ŷ ~ p, (∇ log p_ŷ)², `draws` per input.
    case fisherMC = "fisher-mc"
    /// Σ_c p_c (∇ log p_c)².
    case fisherExact = "fisher-exact"

    public var isSampled: Bool { self == .talos || self == .fisherMC }
}

/// Accumulates Σ over samples (and draws) of per-sample squared gradients of chosen parameters.
///
/// Every estimator is a sum, over "passes", of squared per-sample gradients where the gradient of
/// the model output (the logits) for sample n in a pass is a vector g_n: e_ŷ for `talos`,
/// √p_c·e_c for every class c for `talos-exact`, e_y − p for `fisher-empirical`, and so on
/// (`outputGradients`). One forward pass and one backward pass per pass give every layer its
/// input x_n and output gradient δ_n per sample; the per-sample squared gradient then comes per
/// layer without forming per-sample gradients where there is no weight sharing:
///   Linear   Σ_n (δ_n x_nᵀ)² = (δ²)ᵀ(x²)         one GEMM
///   Linear on tokens [B, T, in] (transformer blocks, patch embedding): the weight is shared by the
///            T tokens, so the per-sample gradient G_n = Σ_t δ_nt x_ntᵀ = δ_nᵀ X_n is formed first
///            (one GEMM per sample) and then squared; (δ²)ᵀ(x²) would miss the cross-token terms.
///   Conv2d   G_n = δ_n · cols_nᵀ, Σ_n G_n²        one GEMM per sample (positions share the weight)
///   LayerNorm Σ_n (Σ_t δ_nt ⊙ x̂_nt)²,  bias Σ_n (Σ_t δ_nt)²
///   cls_token Σ_n δ_n0², pos_embed Σ_n δ_n²  (δ of the layer's output, per token)
///   proj (CLIP's x W, W [in, out])  (x²)ᵀ(δ²)    one GEMM
/// `accumulateNaive` does the same with one backward pass per sample; it exists for tests.
public final class Scorer {
    public let model: Model
    public let head: String
    public let estimator: ScoreEstimator
    public let draws: Int
    /// The scored parameters, in model order.
    public let parameters: [Parameter]
    /// Running sums, one per scored parameter (same order).
    public private(set) var sums: [[Float]]
    /// Inputs seen so far.
    public private(set) var samples = 0
    private var rng: SplitMix64
    /// The body layer owning each scored parameter (looked up once, not per pass).
    private let owners: [ObjectIdentifier: any Layer]

    /// `parameters` defaults to `Scorer.defaultParameters(model)`.
    public init(model: Model, head: String, estimator: ScoreEstimator, draws: Int = 1, seed: UInt64 = 0, parameters: [Parameter]? = nil) throws {
        _ = try model.head(head)
        guard draws >= 1 else { throw EngineError("draws must be ≥ 1") }
        self.model = model; self.head = head; self.estimator = estimator; self.draws = draws
        self.parameters = parameters ?? Scorer.defaultParameters(model)
        guard !self.parameters.isEmpty else { throw EngineError("no parameters to score") }
        sums = self.parameters.map { [Float](repeating: 0, count: $0.value.count) }
        rng = SplitMix64(seed: seed)
        var owners: [ObjectIdentifier: any Layer] = [:]
        for layer in model.body.flatMap(\.allLayers) where layer.sublayers.isEmpty {
            for p in layer.parameters { owners[ObjectIdentifier(p)] = layer }
        }
        self.owners = owners
    }

    /// Every body parameter of Linear, Conv2d and LayerNorm layers (also inside transformer blocks
    /// and the patch embedding), the class token and position embedding, and CLIP's `proj`; never a head.
    public static func defaultParameters(_ model: Model) -> [Parameter] {
        model.body.flatMap(\.allLayers).filter { $0 is Linear || $0 is Conv2d || $0 is LayerNorm || $0 is ClassTokenPosition || $0 is Projection }
            .flatMap(\.parameters)
    }

    /// Starts from existing sums (for `--append`).
    public func resume(sums existing: [[Float]], samples: Int) throws {
        guard existing.count == sums.count, zip(existing, sums).allSatisfy({ $0.count == $1.count }) else {
            throw EngineError("existing scores do not match the scored parameters")
        }
        sums = existing; self.samples = samples
    }

    /// The output gradients of each pass for a batch: [passes][B × C].
    public func outputGradients(logits: Tensor, labels: [Int]) -> [[Float]] {
        let b = logits.rows, c = logits.rowSize
        let p = CrossEntropy()(logits, labels: labels.map { max(0, min($0, c - 1)) }).probabilities.data
        func sample(_ n: Int) -> Int {
            let u = rng.unitFloat()
            var acc: Float = 0
            for j in 0..<c { acc += p[n * c + j]; if u < acc { return j } }
            return c - 1
        }
        var passes: [[Float]] = []
        switch estimator {
        case .talos, .fisherMC:
            for _ in 0..<draws {
                var g = [Float](repeating: 0, count: b * c)
                for n in 0..<b {
                    let y = sample(n)
                    if estimator == .fisherMC { for j in 0..<c { g[n * c + j] = -p[n * c + j] } }
                    g[n * c + y] += 1
                }
                passes.append(g)
            }
        case .fisherEmpirical:
            var g = [Float](repeating: 0, count: b * c)
            for n in 0..<b { for j in 0..<c { g[n * c + j] = (j == labels[n] ? 1 : 0) - p[n * c + j] } }
            passes.append(g)
        case .talosExact, .fisherExact:
            for k in 0..<c {
                var g = [Float](repeating: 0, count: b * c)
                for n in 0..<b {
                    let w = p[n * c + k].squareRoot()
                    if estimator == .fisherExact { for j in 0..<c { g[n * c + j] = w * ((j == k ? 1 : 0) - p[n * c + j]) } }
                    else { g[n * c + k] = w }
                }
                passes.append(g)
            }
        }
        return passes
    }

    /// Efficient path: one forward pass, one backward pass per output-gradient pass.
    public func accumulate(_ x: Tensor, labels: [Int]) throws {
        let logits = try model.forward(x, head: head, mode: .eval)
        let b = logits.rows, c = logits.rowSize
        for g in outputGradients(logits: logits, labels: labels) {
            // Only each layer's input and output gradient are needed, not the batch-summed parameter gradients.
            try GradientAccumulation.$enabled.withValue(false) { try model.backward(Tensor(shape: [b, c], data: g), head: head) }
            for (i, p) in parameters.enumerated() { try addSquaredPerSampleGradient(of: p, into: &sums[i], batch: b) }
        }
        samples += b
    }

    /// Reference path: a backward pass per sample and pass, squaring whole parameter gradients.
    public func accumulateNaive(_ x: Tensor, labels: [Int]) throws {
        let logits = try model.forward(x, head: head, mode: .eval)
        let b = logits.rows, c = logits.rowSize
        let passes = outputGradients(logits: logits, labels: labels)
        let per = x.rowSize
        for n in 0..<b {
            let xn = Tensor(shape: [1] + Array(x.shape.dropFirst()), data: Array(x.data[(n * per)..<((n + 1) * per)]))
            _ = try model.forward(xn, head: head, mode: .eval)
            for g in passes {
                model.zeroGrad()
                try model.backward(Tensor(shape: [1, c], data: Array(g[(n * c)..<((n + 1) * c)])), head: head)
                for (i, p) in parameters.enumerated() {
                    sums[i].withUnsafeMutableBufferPointer { s in p.grad.data.withUnsafeBufferPointer { d in
                        for j in 0..<s.count { s[j] += d[j] * d[j] }
                    } }
                }
            }
        }
        samples += b
    }


    private func addSquaredPerSampleGradient(of p: Parameter, into sum: inout [Float], batch b: Int) throws {
        guard let layer = owners[ObjectIdentifier(p)], let delta = layer.lastOutputGradient, let x = layer.lastInput else {
            throw EngineError("\(p.name): no per-sample data (is it before the first trainable layer?)")
        }
        let s2 = p.forwardScale.map { $0.map { $0 * $0 } }
        var local = [Float](repeating: 0, count: sum.count)
        switch layer {
        case let l as Linear where x.count != b * l.inFeatures:
            // Tokens share the weight: G_n = δ_nᵀ X_n ([out, T] · [T, in]) per sample, then squared.
            let t = x.count / (b * l.inFeatures), o = l.outFeatures, i = l.inFeatures
            if p === l.weight {
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
        case let l as Linear:
            if p === l.weight {
                // (δ²)ᵀ (x²): [out, B] · [B, in]
                let d2 = delta.data.map { $0 * $0 }, x2 = x.data.map { $0 * $0 }
                d2.withUnsafeBufferPointer { dp in x2.withUnsafeBufferPointer { xp in local.withUnsafeMutableBufferPointer { out in
                    BLAS.gemm(transA: true, m: l.outFeatures, n: l.inFeatures, k: b, a: dp.baseAddress!, lda: l.outFeatures,
                              b: xp.baseAddress!, ldb: l.inFeatures, c: out.baseAddress!, ldc: l.inFeatures)
                } } }
            } else {
                for n in 0..<b { for j in 0..<l.outFeatures { let v = delta.data[n * l.outFeatures + j]; local[j] += v * v } }
            }
        case let l as Projection:
            // y = x W with W [in, out]: G_n = x_n δ_nᵀ, so Σ_n G_n² = (x²)ᵀ (δ²): [in, B] · [B, out].
            let d2 = delta.data.map { $0 * $0 }, x2 = x.data.map { $0 * $0 }
            d2.withUnsafeBufferPointer { dp in x2.withUnsafeBufferPointer { xp in local.withUnsafeMutableBufferPointer { out in
                BLAS.gemm(transA: true, m: l.inFeatures, n: l.outFeatures, k: b, a: xp.baseAddress!, lda: l.inFeatures,
                          b: dp.baseAddress!, ldb: l.outFeatures, c: out.baseAddress!, ldc: l.outFeatures)
            } } }
        case let l as Conv2d:
            let o = l.outChannels, patch = l.inChannels * l.kernel * l.kernel
            let positions = delta.count / (b * o), total = b * positions
            if p === l.weight {
                var g = [Float](repeating: 0, count: o * patch)
                delta.data.withUnsafeBufferPointer { dp in l.lastColumns.withUnsafeBufferPointer { cp in
                    for n in 0..<b {
                        g.withUnsafeMutableBufferPointer { gp in
                            // G_n = δ_n [O, L] · cols_nᵀ, cols_n = columns n·L ..< (n+1)·L of [patch, B·L]
                            BLAS.gemm(transB: true, m: o, n: patch, k: positions, a: dp.baseAddress! + n * o * positions, lda: positions,
                                      b: cp.baseAddress! + n * positions, ldb: total, c: gp.baseAddress!, ldc: patch)
                        }
                        for j in 0..<g.count { local[j] += g[j] * g[j] }
                    }
                } }
            } else {
                for n in 0..<b { for c in 0..<o {
                    var s: Float = 0
                    for t in 0..<positions { s += delta.data[(n * o + c) * positions + t] }
                    local[c] += s * s
                } }
            }
        case let l as LayerNorm:
            let d = l.features, rowsPerSample = delta.count / (b * d)
            let isWeight = p === l.weight
            for n in 0..<b {
                var acc = [Float](repeating: 0, count: d)
                for r in 0..<rowsPerSample {
                    let row = (n * rowsPerSample + r) * d
                    for j in 0..<d { acc[j] += delta.data[row + j] * (isWeight ? l.lastNormalized[row + j] : 1) }
                }
                for j in 0..<d { local[j] += acc[j] * acc[j] }
            }
        case let l as ClassTokenPosition:
            // The output gradient per token is the per-sample gradient of pos_embed; token 0's is cls_token's.
            let per = l.tokens * l.width
            delta.data.withUnsafeBufferPointer { dp in
                for n in 0..<b {
                    let count = p === l.classToken ? l.width : per
                    for j in 0..<count { let v = dp[n * per + j]; local[j] += v * v }
                }
            }
        default:
            throw EngineError("\(p.name): scoring \(layer.spec.type) layers is not supported")
        }
        sum.withUnsafeMutableBufferPointer { s in
            if let s2 { for j in 0..<s.count { s[j] += local[j] * s2[j] } } else { for j in 0..<s.count { s[j] += local[j] } }
        }
    }
}

extension Scorer {
    /// Scores the first `maxBatches` batches of `data` (all when nil), in split order.
    public func run(over data: Batches, batchSize: Int, maxBatches: Int? = nil, progress: ((Int, Int) -> Void)? = nil) throws {
        guard batchSize >= 1 else { throw EngineError("batch size must be ≥ 1") }
        let ids = data.indices
        let batches = min((ids.count + batchSize - 1) / batchSize, maxBatches ?? Int.max)
        guard batches > 0 else { throw EngineError("the scoring set is empty") }
        for i in 0..<batches {
            let (x, y) = data.batch(ids[(i * batchSize)..<min(ids.count, (i + 1) * batchSize)])
            try accumulate(x, labels: y)
            progress?(i + 1, batches)
        }
    }
}
