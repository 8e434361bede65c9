#if canImport(Glibc)
import Glibc
#endif
import LocusKernels

/// Multi-head scaled dot-product self-attention without parameters: [B, T, 3D] (a fused qkv
/// projection, laid out per token as q | k | v, each head-major as timm's `qkv.reshape(B, T, 3, H,
/// D/H)`) → [B, T, D] (heads concatenated, as timm's `transpose(1, 2).reshape(B, T, D)`).
/// The projections around it are ordinary Linear layers, so they are trained and scored as such.
public final class SelfAttention: ParameterFree {
    public let spec: LayerSpec
    public let width: Int, heads: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    /// softmax(QKᵀ/√d) of the last forward, [B, H, T, T]; the backward pass needs it.
    private var probabilities: [Float] = []

    init(spec: LayerSpec, width: Int, heads: Int) {
        self.spec = spec; self.width = width; self.heads = heads
    }

    var headWidth: Int { width / heads }
    var scale: Float { 1 / Float(headWidth).squareRoot() }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2, input[1] == 3 * width else {
            throw EngineError("attention: expects [tokens, \(3 * width)] per sample, got \(input)")
        }
        return [input[0], width]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let b = x.shape[0], t = x.shape[1], d = width, dh = headWidth, h = heads
        // Inference needs one head's T×T scores at a time (per half); a backward pass needs all of them.
        let keep = mode.keepsActivations
        let size = keep ? b * h * t * t : 2 * t * t
        var probs = [Float](unsafeUninitializedCapacity: size) { _, c in c = size }
        defer { probabilities = keep ? probs : [] }
        let scale = self.scale
        return Tensor(shape: [b, t, d]) { out in x.data.withUnsafeBufferPointer { qkv in probs.withUnsafeMutableBufferPointer { probs in
            BLAS.inTwoHalves(b * h) { half, pairs in
                for pair in pairs {
                    let s = pair / h, head = pair % h
                    let q = qkv.baseAddress! + s * t * 3 * d + head * dh, k = q + d, v = q + 2 * d
                    let p = probs.baseAddress! + (keep ? pair : half) * t * t
                    // S = scale · Q Kᵀ, then a row softmax in place.
                    BLAS.gemm(transB: true, m: t, n: t, k: dh, alpha: scale, a: q, lda: 3 * d, b: k, ldb: 3 * d, c: p, ldc: t)
                    FastMath.softmaxRows(p, rows: t, count: t)
                    // O = P V, written straight into this head's columns of the output.
                    BLAS.gemm(m: t, n: dh, k: t, a: p, lda: t, b: v, ldb: 3 * d, c: out.baseAddress! + s * t * d + head * dh, ldc: d)
                }
            }
        } } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("SelfAttention.backward before forward") }
        lastOutputGradient = gy
        let b = x.shape[0], t = x.shape[1], d = width, dh = headWidth, h = heads
        let scale = self.scale
        var dp = [Float](unsafeUninitializedCapacity: 2 * t * t) { _, c in c = 2 * t * t }   // one T×T scratch per half
        return Tensor(shape: x.shape) { gx in x.data.withUnsafeBufferPointer { qkv in gy.data.withUnsafeBufferPointer { go in
            probabilities.withUnsafeBufferPointer { probs in dp.withUnsafeMutableBufferPointer { dpb in
                BLAS.inTwoHalves(b * h) { half, pairs in for pair in pairs {
                    let s = pair / h, head = pair % h
                    let off = s * t * 3 * d + head * dh
                    let q = qkv.baseAddress! + off, k = q + d, v = q + 2 * d
                    let dq = gx.baseAddress! + off, dk = dq + d, dv = dq + 2 * d
                    let p = probs.baseAddress! + pair * t * t
                    let dO = go.baseAddress! + s * t * d + head * dh
                    let dS = dpb.baseAddress! + half * t * t
                    // dV = Pᵀ dO;  dP = dO Vᵀ
                    BLAS.gemm(transA: true, m: t, n: dh, k: t, a: p, lda: t, b: dO, ldb: d, c: dv, ldc: 3 * d)
                    BLAS.gemm(transB: true, m: t, n: t, k: dh, a: dO, lda: d, b: v, ldb: 3 * d, c: dS, ldc: t)
                    // Softmax backward per row: dS = P ⊙ (dP − ⟨dP, P⟩).
                    locus_softmax_backward_rows(p, dS, t, t)
                    // dQ = scale · dS K;  dK = scale · dSᵀ Q
                    BLAS.gemm(m: t, n: dh, k: t, alpha: scale, a: dS, lda: t, b: k, ldb: 3 * d, c: dq, ldc: 3 * d)
                    BLAS.gemm(transA: true, m: t, n: dh, k: t, alpha: scale, a: dS, lda: t, b: q, ldb: 3 * d, c: dk, ldc: 3 * d)
                } }
            } }
        } } }
    }
}

/// A pre-LayerNorm transformer block, timm's `Block`:
///   h = x + attn.proj(attention(attn.qkv(norm1(x))))
///   y = h + mlp.fc2(act(mlp.fc1(norm2(h))))   (act: exact GELU, or QuickGELU for OpenAI's CLIP)
/// Parameters are named as timm's (`blocks.3.attn.qkv.weight` [3D, D], `blocks.3.mlp.fc1.weight`
/// [hidden, D], ...). Its parts are ordinary layers, exposed as `sublayers` so that scoring finds
/// each parameter's own input and output gradient.
public final class TransformerBlock: CompositeLayer {
    public let spec: LayerSpec
    public let norm1: LayerNorm, qkv: Linear, attention: SelfAttention, proj: Linear
    public let norm2: LayerNorm, fc1: Linear, activation: any Layer, fc2: Linear
    public let width: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?

    public var sublayers: [any Layer] { [norm1, qkv, attention, proj, norm2, fc1, activation, fc2] }

    init(spec: LayerSpec, prefix: String, width d: Int, heads: Int, hidden: Int, qkvBias: Bool, eps: Float, quickGelu: Bool = false, seed: UInt64) {
        self.spec = spec; self.width = d
        func seedFor(_ i: UInt64) -> UInt64 { SplitMix64.derivedSeed(seed, i) }
        let init_ = Linear.Initialisation.normal(std: 0.02)   // timm's init_weights_vit_timm
        norm1 = LayerNorm(spec: .layerNorm(d), prefix: parameterName(prefix, "norm1"), features: d, eps: eps)
        qkv = Linear(spec: .linear(d, 3 * d, bias: qkvBias), prefix: parameterName(prefix, "attn.qkv"), inFeatures: d, outFeatures: 3 * d,
                     bias: qkvBias, seed: seedFor(1), initialisation: init_)
        var a = LayerSpec(type: "attention"); a.embedDim = d; a.numHeads = heads
        attention = SelfAttention(spec: a, width: d, heads: heads)
        proj = Linear(spec: .linear(d, d), prefix: parameterName(prefix, "attn.proj"), inFeatures: d, outFeatures: d, bias: true,
                      seed: seedFor(2), initialisation: init_)
        norm2 = LayerNorm(spec: .layerNorm(d), prefix: parameterName(prefix, "norm2"), features: d, eps: eps)
        fc1 = Linear(spec: .linear(d, hidden), prefix: parameterName(prefix, "mlp.fc1"), inFeatures: d, outFeatures: hidden, bias: true,
                     seed: seedFor(3), initialisation: init_)
        activation = quickGelu ? QuickGELU(spec: .quickGelu) : GELU(spec: .gelu)
        fc2 = Linear(spec: .linear(hidden, d), prefix: parameterName(prefix, "mlp.fc2"), inFeatures: hidden, outFeatures: d, bias: true,
                     seed: seedFor(4), initialisation: init_)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2, input[1] == width else {
            throw EngineError("\(norm1.weight.name): a transformer block expects [tokens, \(width)] per sample, got \(input)")
        }
        return input
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        var h = proj.forward(attention.forward(qkv.forward(norm1.forward(x, mode: mode), mode: mode), mode: mode), mode: mode)
        h.add(x)
        var y = fc2.forward(activation.forward(fc1.forward(norm2.forward(h, mode: mode), mode: mode), mode: mode), mode: mode)
        y.add(h)
        return y
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        var gh = norm2.backward(fc1.backward(activation.backward(fc2.backward(gy))))
        gh.add(gy)
        var gx = norm1.backward(qkv.backward(attention.backward(proj.backward(gh))))
        gx.add(gh)
        return gx
    }
}

extension Tensor {
    /// self += other (same shape): the residual connections.
    mutating func add(_ other: Tensor) {
        precondition(count == other.count, "add: \(shape) + \(other.shape)")
        data.withUnsafeMutableBufferPointer { a in other.data.withUnsafeBufferPointer { b in locus_add(a.baseAddress, b.baseAddress, a.count) } }
    }
}
