import LocusKernels

/// 2-D convolution over [B, C, H, W] with a square kernel, stride and zero padding; weight
/// [out, in, k, k] as in PyTorch. Computed as one GEMM over the im2col matrix of the whole batch.
public final class Conv2d: InputGradientOptional {
    public let spec: LayerSpec
    public let weight: Parameter
    public let bias: Parameter?
    public let inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    /// im2col of the last input: [C·k·k, B·Ho·Wo]; column b·L + l holds sample b's patch l.
    private var lastColumns: [Float] = []
    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }
    /// False for the first layer of a model (see InputGradientOptional).
    public var computesInputGradient = true
    var patch: Int { inChannels * kernel * kernel }

    init(spec: LayerSpec, prefix: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int, padding: Int, bias: Bool, seed: UInt64) {
        self.spec = spec; self.inChannels = inChannels; self.outChannels = outChannels
        self.kernel = kernel; self.stride = stride; self.padding = padding
        var rng = SplitMix64(seed: seed)
        let bound = 1 / Float(inChannels * kernel * kernel).squareRoot()   // PyTorch's default bounds
        weight = Parameter(name: parameterName(prefix, "weight"), value: Tensor(shape: [outChannels, inChannels, kernel, kernel]) { w in
            for i in 0..<w.count { w[i] = rng.uniform(-bound, bound) } })
        self.bias = bias ? Parameter(name: parameterName(prefix, "bias"), value: Tensor(shape: [outChannels]) { b in
            for i in 0..<b.count { b[i] = rng.uniform(-bound, bound) } }) : nil
    }

    func outputSize(_ h: Int, _ w: Int) -> (Int, Int) {
        ((h + 2 * padding - kernel) / stride + 1, (w + 2 * padding - kernel) / stride + 1)
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3, input[0] == inChannels else {
            throw EngineError("\(weight.name): expects [\(inChannels), H, W] per sample, got \(input)")
        }
        guard input[1] + 2 * padding >= kernel, input[2] + 2 * padding >= kernel else {
            throw EngineError("\(weight.name): input \(input[1])×\(input[2]) is smaller than the \(kernel)×\(kernel) kernel")
        }
        let (ho, wo) = outputSize(input[1], input[2])
        return [outChannels, ho, wo]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        let b = x.rows, h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let l = ho * wo, n = b * l
        lastInput = mode.keepsActivations ? x : nil
        let columns = Conv2d.im2col(x, channels: inChannels, kernel: kernel, stride: stride, padding: padding)
        lastColumns = mode.keepsActivations ? columns : []
        // BLAS with beta = 0 overwrites C, so no zero-fill first.
        var y2 = [Float](unsafeUninitializedCapacity: outChannels * n) { _, c in c = outChannels * n }
        let wt = weight.effective
        wt.data.withUnsafeBufferPointer { wp in columns.withUnsafeBufferPointer { cp in y2.withUnsafeMutableBufferPointer { yp in
            BLAS.gemm(m: outChannels, n: n, k: patch, a: wp.baseAddress!, lda: patch, b: cp.baseAddress!, ldb: n, c: yp.baseAddress!, ldc: n)
        } } }
        let biasValues = bias?.effective.data
        // [O, B·L] → [B, O, L], adding the bias.
        let oc = outChannels
        return Tensor(shape: [b, outChannels, ho, wo]) { out in
            y2.withUnsafeBufferPointer { src in
                Parallel.chunks(b) { samples in
                    for s in samples { for o in 0..<oc {
                        let bo = biasValues?[o] ?? 0
                        let from = o * n + s * l, to = (s * oc + o) * l
                        for i in 0..<l { out[to + i] = src[from + i] + bo }
                    } }
                }
            }
        }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("Conv2d.backward before forward") }
        lastOutputGradient = gy
        let b = x.rows, h = x.shape[2], w = x.shape[3]
        let (ho, wo) = outputSize(h, w)
        let l = ho * wo, n = b * l
        // [B, O, L] → [O, B·L]
        let oc = outChannels
        let g2 = [Float](unsafeUninitializedCapacity: outChannels * n) { buf, c in
            gy.data.withUnsafeBufferPointer { src in
                Parallel.chunks(b) { samples in
                    for s in samples { for o in 0..<oc {
                        let from = (s * oc + o) * l, to = o * n + s * l
                        for i in 0..<l { buf[to + i] = src[from + i] }
                    } }
                }
            }
            c = outChannels * n
        }
        if GradientAccumulation.enabled { accumulateParameterGradients(g2, n: n) }
        guard computesInputGradient else { return Tensor(zeros: [0]) }
        // dcols = W_effᵀ · G, then fold back.
        var gcols = [Float](unsafeUninitializedCapacity: patch * n) { _, c in c = patch * n }
        let wt = weight.effective
        wt.data.withUnsafeBufferPointer { wp in g2.withUnsafeBufferPointer { gp in gcols.withUnsafeMutableBufferPointer { out in
            BLAS.gemm(transA: true, m: patch, n: n, k: outChannels, a: wp.baseAddress!, lda: patch, b: gp.baseAddress!, ldb: n,
                      c: out.baseAddress!, ldc: n)
        } } }
        return Conv2d.col2im(gcols, shape: x.shape, kernel: kernel, stride: stride, padding: padding)
    }

    /// db += Σ G over positions; dW += G · colsᵀ (times the forward scale).
    private func accumulateParameterGradients(_ g2: [Float], n: Int) {
        if let bias {
            bias.grad.data.withUnsafeMutableBufferPointer { db in g2.withUnsafeBufferPointer { g in
                for o in 0..<outChannels { db[o] += locus_sum(g.baseAddress! + o * n, n) * (bias.forwardScale?[o] ?? 1) }
            } }
        }
        // dW += G · colsᵀ, straight into the gradient unless it must be scaled first.
        func accumulate(into g: inout [Float]) {
            g2.withUnsafeBufferPointer { gp in lastColumns.withUnsafeBufferPointer { cp in g.withUnsafeMutableBufferPointer { out in
                BLAS.gemm(transB: true, m: outChannels, n: patch, k: n, a: gp.baseAddress!, lda: n, b: cp.baseAddress!, ldb: n,
                          beta: 1, c: out.baseAddress!, ldc: patch)
            } } }
        }
        if let s = weight.forwardScale {
            var gw = [Float](repeating: 0, count: weight.value.count)
            accumulate(into: &gw)
            weight.grad.data.withUnsafeMutableBufferPointer { d in for i in 0..<d.count { d[i] += gw[i] * s[i] } }
        } else {
            accumulate(into: &weight.grad.data)
        }
    }

    /// Per-sample squared gradients (see `Layer`). The positions share the weight, so each sample's
    /// G_n = δ_n · cols_nᵀ is formed first (one GEMM per sample) and then squared; bias (Σ_positions δ_n)².
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === weight || p === bias else { throw notMine(p) }
        let delta = try perSampleData(for: p).outputGradient
        let o = outChannels
        let positions = delta.count / (b * o), total = b * positions
        addingOnce(to: &local) { local in if p === weight {
            var g = [Float](repeating: 0, count: o * patch)
            delta.data.withUnsafeBufferPointer { dp in lastColumns.withUnsafeBufferPointer { cp in
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
        } }
    }

    /// Output columns `ow` whose input column `ow·stride − p + kw` lies inside [0, w).
    @inline(__always)
    static func validColumns(kw: Int, stride: Int, padding p: Int, width w: Int, outWidth wo: Int) -> Range<Int> {
        func ceilDiv(_ a: Int, _ b: Int) -> Int { a <= 0 ? 0 : (a + b - 1) / b }
        let lo = min(wo, ceilDiv(p - kw, stride))          // first ow with ow·stride ≥ p − kw
        let hi = min(wo, ceilDiv(w + p - kw, stride))      // first ow with ow·stride − p + kw ≥ w
        return lo..<max(lo, hi)
    }

    /// [B, C, H, W] → [C·k·k, B·Ho·Wo] (zero padding): LocusKernels' copy loop, split over samples.
    static func im2col(_ x: Tensor, channels c: Int, kernel k: Int, stride: Int, padding p: Int) -> [Float] {
        let b = x.shape[0], h = x.shape[2], w = x.shape[3]
        let ho = (h + 2 * p - k) / stride + 1, wo = (w + 2 * p - k) / stride + 1
        let count = c * k * k * b * ho * wo
        return [Float](unsafeUninitializedCapacity: count) { cols, initialized in
            x.data.withUnsafeBufferPointer { src in
                locus_im2col(src.baseAddress, Int32(b), Int32(c), Int32(h), Int32(w), Int32(k), Int32(stride), Int32(p), cols.baseAddress)
            }
            initialized = count
        }
    }

    /// Adjoint of im2col: sums each column entry back into the input position it came from.
    static func col2im(_ cols: [Float], shape: [Int], kernel k: Int, stride: Int, padding p: Int) -> Tensor {
        let b = shape[0], c = shape[1], h = shape[2], w = shape[3]
        return Tensor(shape: shape) { out in cols.withUnsafeBufferPointer { src in
            locus_col2im(src.baseAddress, Int32(b), Int32(c), Int32(h), Int32(w), Int32(k), Int32(stride), Int32(p), out.baseAddress)
        } }
    }
}
