#if canImport(Glibc)
import Glibc
#endif

/// open_clip's output projection of the pooled features, `x @ proj` with `proj` [D, E] stored as
/// open_clip stores it (input-major, the transpose of a Linear weight) and no bias: [B, D] → [B, E].
/// Parameter `{p}proj` (top-level `proj` when the layer's `name` is empty).
public final class Projection: Layer {
    public let spec: LayerSpec
    public let weight: Parameter
    public let inFeatures: Int, outFeatures: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [weight] }

    init(spec: LayerSpec, prefix: String, inFeatures: Int, outFeatures: Int, seed: UInt64) {
        self.spec = spec; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        var rng = SplitMix64(seed: seed)
        // open_clip: proj = width^-0.5 · randn(width, output_dim).
        let scale = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(name: parameterName(prefix, "proj"), value: Tensor(shape: [inFeatures, outFeatures]) { w in
            for i in 0..<w.count { w[i] = scale * rng.normal() } })
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input == [inFeatures] else {
            throw EngineError("\(weight.name): projects pooled features [\(inFeatures)] per sample, got \(input)")
        }
        return [outFeatures]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let b = x.count / inFeatures, w = weight.effective
        var y = Tensor(zeros: [b, outFeatures])
        x.data.withUnsafeBufferPointer { xp in w.data.withUnsafeBufferPointer { wp in y.data.withUnsafeMutableBufferPointer { yp in
            BLAS.gemm(m: b, n: outFeatures, k: inFeatures, a: xp.baseAddress!, lda: inFeatures, b: wp.baseAddress!, ldb: outFeatures,
                      c: yp.baseAddress!, ldc: outFeatures)
        } } }
        return y
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("Projection.backward before forward") }
        lastOutputGradient = gy
        let b = x.count / inFeatures, w = weight.effective
        if GradientAccumulation.enabled {
            // dW = xᵀ gy ([D, B] · [B, E]), times the forward scale (y used W ⊙ s).
            var g = [Float](repeating: 0, count: inFeatures * outFeatures)
            x.data.withUnsafeBufferPointer { xp in gy.data.withUnsafeBufferPointer { gp in g.withUnsafeMutableBufferPointer { out in
                BLAS.gemm(transA: true, m: inFeatures, n: outFeatures, k: b, a: xp.baseAddress!, lda: inFeatures, b: gp.baseAddress!,
                          ldb: outFeatures, c: out.baseAddress!, ldc: outFeatures)
            } } }
            let s = weight.forwardScale
            weight.grad.data.withUnsafeMutableBufferPointer { d in for i in 0..<d.count { d[i] += g[i] * (s?[i] ?? 1) } }
        }
        var gx = Tensor(zeros: x.shape)
        gy.data.withUnsafeBufferPointer { gp in w.data.withUnsafeBufferPointer { wp in gx.data.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(transB: true, m: b, n: inFeatures, k: outFeatures, a: gp.baseAddress!, lda: outFeatures, b: wp.baseAddress!,
                      ldb: outFeatures, c: out.baseAddress!, ldc: inFeatures)
        } } }
        return gx
    }
}

extension Projection {
    /// Per-sample squared gradients (see `Layer`): y = x W with W [in, out], so G_n = x_n δ_nᵀ and
    /// Σ_n G_n² = (x²)ᵀ (δ²): [in, B] · [B, out], one GEMM.
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === weight else { throw notMine(p) }
        let (x, delta) = try perSampleData(for: p)
        let d2 = delta.data.map { $0 * $0 }, x2 = x.data.map { $0 * $0 }
        d2.withUnsafeBufferPointer { dp in x2.withUnsafeBufferPointer { xp in local.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(transA: true, m: inFeatures, n: outFeatures, k: b, a: xp.baseAddress!, lda: inFeatures,
                      b: dp.baseAddress!, ldb: outFeatures, beta: 1, c: out.baseAddress!, ldc: outFeatures)
        } } }
    }
}

/// A task's classifier on the body's features: a trainable linear head, or a fixed zero-shot head.
public protocol ClassifierHead: Layer {
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// False for a head that is never trained (a zero-shot head's text embeddings): training,
    /// sparse fine-tuning and scoring leave its tensors alone, so it is in no mask or task vector.
    var isTrainable: Bool { get }
}

extension Linear: ClassifierHead {
    public var isTrainable: Bool { true }
}

/// CLIP's zero-shot classifier: logits = s · normalize(f) · normalize(T)ᵀ, with f [B, E] the image
/// features, T [C, E] one text embedding per class (the text tower's output for the class's prompts)
/// and s = exp(logit_scale) (open_clip stores the logarithm). normalize is F.normalize: x / max(‖x‖, 1e-12).
/// Tensors `{prefix}.text_embeddings` [C, E] and `{prefix}.logit_scale` [] (a scalar). The head is
/// fixed, as in TaLoS (Iurada et al., 2025), which fine-tunes only the image encoder: it gets no
/// parameter gradients, only passes the gradient through both normalisations to the features.
public final class ZeroShotHead: ClassifierHead {
    public let spec: LayerSpec
    public let textEmbeddings: Parameter, logitScale: Parameter
    public let inFeatures: Int, outFeatures: Int
    public var isTrainable: Bool { false }
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [textEmbeddings, logitScale] }
    /// F.normalize's ε.
    static let epsilon: Float = 1e-12
    /// From the last forward: normalised features [B, E], their norms ‖f‖ clamped at ε, normalised T
    /// and its row norms (clamped the same way), s.
    private var normalized: [Float] = [], norms: [Float] = [], classes: [Float] = [], classNorms: [Float] = [], scale: Float = 1

    /// Fresh text embeddings are N(0, 1) rows (placeholders until real ones are put in); the scale is
    /// CLIP's trained value, s = 100 (`logit_scale` = ln 100).
    init(prefix: String, features: Int, classes: Int, seed: UInt64) {
        var s = LayerSpec(type: "zero_shot"); s.inFeatures = features; s.outFeatures = classes
        self.spec = s; self.inFeatures = features; self.outFeatures = classes
        var rng = SplitMix64(seed: seed)
        textEmbeddings = Parameter(name: parameterName(prefix, "text_embeddings"), value: Tensor(shape: [classes, features]) { v in
            for i in 0..<v.count { v[i] = rng.normal() } })
        logitScale = Parameter(name: parameterName(prefix, "logit_scale"), value: Tensor(shape: [], data: [Float(log(100.0))]))
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input == [inFeatures] else { throw EngineError("\(textEmbeddings.name): expects \(inFeatures) features per sample, got \(input)") }
        return [outFeatures]
    }

    /// Rows of `x` divided by max(‖row‖, ε); returns them with the clamped norms.
    static func normalizeRows(_ x: [Float], width: Int) -> (rows: [Float], norms: [Float]) {
        let n = x.count / width
        var out = x, norms = [Float](repeating: 0, count: n)
        for r in 0..<n {
            var sq: Float = 0
            for j in 0..<width { sq += x[r * width + j] * x[r * width + j] }
            let norm = max(sq.squareRoot(), epsilon)
            norms[r] = norm
            for j in 0..<width { out[r * width + j] = x[r * width + j] / norm }
        }
        return (out, norms)
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let b = x.count / inFeatures, e = inFeatures, c = outFeatures
        let (u, fn) = ZeroShotHead.normalizeRows(x.data, width: e)
        let (t, tn) = ZeroShotHead.normalizeRows(textEmbeddings.effective.data, width: e)
        let s = Float(exp(Double(logitScale.effective.data[0])))
        var y = Tensor(zeros: [b, c])
        u.withUnsafeBufferPointer { up in t.withUnsafeBufferPointer { tp in y.data.withUnsafeMutableBufferPointer { yp in
            BLAS.gemm(transB: true, m: b, n: c, k: e, alpha: s, a: up.baseAddress!, lda: e, b: tp.baseAddress!, ldb: e, c: yp.baseAddress!, ldc: c)
        } } }
        if mode.keepsActivations { normalized = u; norms = fn; classes = t; classNorms = tn; scale = s }
        else { normalized = []; norms = []; classes = []; classNorms = [] }
        return y
    }

    /// Per-sample squared gradients (see `Layer`). The head is fixed — its backward pass accumulates
    /// nothing for its tensors and default scoring leaves heads out — but its statistics follow from
    /// what the forward and backward passes keep. With y_nc = s⟨u_n, t̂_c⟩ and δ the output gradient:
    ///   logit_scale ℓ (s = e^ℓ): G_n = Σ_c δ_nc y_nc
    ///   T_c: G_n = s δ_nc (u_n − t̂_c⟨t̂_c, u_n⟩) / ‖T_c‖   (s δ_nc u_n / ε when ‖T_c‖ ≤ ε)
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === textEmbeddings || p === logitScale else { throw notMine(p) }
        let delta = try perSampleData(for: p).outputGradient
        let e = inFeatures, c = outFeatures
        addingOnce(to: &local) { local in for n in 0..<b {
            if p === logitScale {
                var g: Float = 0
                for k in 0..<c {
                    var dot: Float = 0
                    for j in 0..<e { dot += normalized[n * e + j] * classes[k * e + j] }
                    g += delta.data[n * c + k] * scale * dot
                }
                local[0] += g * g
            } else {
                for k in 0..<c {
                    let d = delta.data[n * c + k], norm = classNorms[k], row = k * e
                    var dot: Float = 0
                    if norm > ZeroShotHead.epsilon { for j in 0..<e { dot += classes[row + j] * normalized[n * e + j] } }
                    for j in 0..<e {
                        let g = scale * d * (normalized[n * e + j] - classes[row + j] * dot) / norm
                        local[row + j] += g * g
                    }
                }
            }
        } }
    }

    /// d/df of u = f / ‖f‖ applied to g_u: (g_u − u ⟨u, g_u⟩) / ‖f‖ (for ‖f‖ < ε, u = f/ε and it is g_u / ε).
    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("ZeroShotHead.backward before forward") }
        lastOutputGradient = gy
        let b = x.count / inFeatures, e = inFeatures, c = outFeatures
        var gu = [Float](repeating: 0, count: b * e)
        gy.data.withUnsafeBufferPointer { gp in classes.withUnsafeBufferPointer { tp in gu.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(m: b, n: e, k: c, alpha: scale, a: gp.baseAddress!, lda: c, b: tp.baseAddress!, ldb: e, c: out.baseAddress!, ldc: e)
        } } }
        return Tensor(shape: x.shape) { gx in
            for r in 0..<b {
                let row = r * e, norm = norms[r]
                var dot: Float = 0
                if norm > ZeroShotHead.epsilon { for j in 0..<e { dot += normalized[row + j] * gu[row + j] } }
                for j in 0..<e { gx[row + j] = (gu[row + j] - normalized[row + j] * dot) / norm }
            }
        }
    }
}
