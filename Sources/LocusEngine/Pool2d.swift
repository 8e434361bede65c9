/// Max or average pooling over [B, C, H, W] windows, no padding, floor of the output size
/// (PyTorch's defaults). Max pooling sends the gradient to the first maximum of each window.
public final class Pool2d: ParameterFree {
    public let spec: LayerSpec
    public let isMax: Bool
    public let kernel: Int, stride: Int
    private var argmax: [Int32] = []
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?

    init(spec: LayerSpec, max: Bool, kernel: Int, stride: Int) { self.spec = spec; isMax = max; self.kernel = kernel; self.stride = stride }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 3, input[1] >= kernel, input[2] >= kernel else {
            throw EngineError("\(spec.type): expects [C, H, W] of at least \(kernel)×\(kernel) per sample, got \(input)")
        }
        return [input[0], (input[1] - kernel) / stride + 1, (input[2] - kernel) / stride + 1]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1
        let (k, st) = (kernel, stride)
        if !isMax {
            let inv = 1 / Float(k * k)
            return Tensor(shape: [x.shape[0], x.shape[1], ho, wo]) { y in x.data.withUnsafeBufferPointer { src in Parallel.chunks(planes, minimum: 8) { range in
                for pl in range { for oh in 0..<ho { for ow in 0..<wo {
                    let top = pl * h * w + oh * st * w + ow * st
                    var sum: Float = 0
                    for kh in 0..<k { for kw in 0..<k { sum += src[top + kh * w + kw] } }
                    y[(pl * ho + oh) * wo + ow] = sum * inv
                } } }
            } } }
        }
        // Max: remember where each maximum came from (offset within the plane) for backward.
        var arg = [Int32](repeating: 0, count: planes * ho * wo)
        let y = Tensor(shape: [x.shape[0], x.shape[1], ho, wo]) { y in x.data.withUnsafeBufferPointer { src in arg.withUnsafeMutableBufferPointer { am in
          Parallel.chunks(planes, minimum: 8) { range in   // planes are independent
            for pl in range {
                let base = pl * h * w
                for oh in 0..<ho {
                    let row = base + oh * st * w
                    for ow in 0..<wo {
                        let o = (pl * ho + oh) * wo + ow
                        var at = row + ow * st, best = src[at]
                        if k == 2 {   // the common case, unrolled
                            let c1 = at + 1, c2 = at + w, c3 = at + w + 1
                            if src[c1] > best { best = src[c1]; at = c1 }
                            if src[c2] > best { best = src[c2]; at = c2 }
                            if src[c3] > best { best = src[c3]; at = c3 }
                        } else {
                            for kh in 0..<k { for kw in 0..<k {
                                let i = row + ow * st + kh * w + kw
                                if src[i] > best { best = src[i]; at = i }
                            } }
                        }
                        y[o] = best; am[o] = Int32(at - base)
                    }
                }
            }
          }
        } } }
        argmax = arg
        return y
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let x = lastInput!
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = gy.shape[2], wo = gy.shape[3]
        var gx = Tensor(zeros: x.shape)
        let inv = 1 / Float(kernel * kernel)
        let (isMax, kernel, stride) = (self.isMax, self.kernel, self.stride)
        gx.data.withUnsafeMutableBufferPointer { dst in gy.data.withUnsafeBufferPointer { g in argmax.withUnsafeBufferPointer { argmax in
          Parallel.chunks(planes, minimum: 8) { range in   // each plane's gradient stays in its plane
            for pl in range {
                let base = pl * h * w
                for oh in 0..<ho { for ow in 0..<wo {
                    let o = (pl * ho + oh) * wo + ow
                    if isMax { dst[base + Int(argmax[o])] += g[o] } else {
                        for kh in 0..<kernel { for kw in 0..<kernel { dst[base + (oh * stride + kh) * w + ow * stride + kw] += g[o] * inv } }
                    }
                } }
            }
          }
        } } }
        return gx
    }
}
