/// Normalises each row over its last dimension: y = (x − μ)/√(σ² + ε) · γ + β (biased variance, as PyTorch).
public final class LayerNorm: Layer {
    public let spec: LayerSpec
    public let weight: Parameter
    public let bias: Parameter
    public let features: Int
    public let eps: Float
    /// x̂ of the last forward (what per-sample LayerNorm gradients are built from) and 1/σ per row.
    public private(set) var lastNormalized: [Float] = []
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
        lastInput = x
        let rows = x.count / features, d = features
        lastNormalized = [Float](repeating: 0, count: x.count)
        inverseStd = [Float](repeating: 0, count: rows)
        let g = weight.effective.data, b = bias.effective.data
        return Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { src in
            for r in 0..<rows {
                var mean: Float = 0
                for j in 0..<d { mean += src[r * d + j] }
                mean /= Float(d)
                var v: Float = 0
                for j in 0..<d { let c = src[r * d + j] - mean; v += c * c }
                let inv = 1 / (v / Float(d) + eps).squareRoot()
                inverseStd[r] = inv
                for j in 0..<d {
                    let n = (src[r * d + j] - mean) * inv
                    lastNormalized[r * d + j] = n
                    y[r * d + j] = n * g[j] + b[j]
                }
            }
        } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let rows = gy.count / features, d = features
        let g = weight.effective.data
        var dg = [Float](repeating: 0, count: d), db = [Float](repeating: 0, count: d)
        let gx = Tensor(shape: gy.shape) { out in gy.data.withUnsafeBufferPointer { dy in
            for r in 0..<rows {
                // dx = (1/σ)(ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)), ĝ = dy ⊙ γ
                var m1: Float = 0, m2: Float = 0
                for j in 0..<d {
                    let i = r * d + j, gh = dy[i] * g[j]
                    m1 += gh; m2 += gh * lastNormalized[i]
                    dg[j] += dy[i] * lastNormalized[i]; db[j] += dy[i]
                }
                m1 /= Float(d); m2 /= Float(d)
                for j in 0..<d {
                    let i = r * d + j
                    out[i] = inverseStd[r] * (dy[i] * g[j] - m1 - lastNormalized[i] * m2)
                }
            }
        } }
        let sw = weight.forwardScale, sb = bias.forwardScale
        if GradientAccumulation.enabled { for j in 0..<d {
            weight.grad.data[j] += dg[j] * (sw?[j] ?? 1)
            bias.grad.data[j] += db[j] * (sb?[j] ?? 1)
        } }
        return gx
    }
}
