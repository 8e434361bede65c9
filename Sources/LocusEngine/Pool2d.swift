/// Max or average pooling over [B, C, H, W] windows, no padding, floor of the output size
/// (PyTorch's defaults). Max pooling sends the gradient to the first maximum of each window.
public final class Pool2d: Layer {
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
        lastInput = x
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = (h - kernel) / stride + 1, wo = (w - kernel) / stride + 1
        if isMax { argmax = [Int32](repeating: 0, count: planes * ho * wo) }
        let inv = 1 / Float(kernel * kernel)
        return Tensor(shape: [x.shape[0], x.shape[1], ho, wo]) { y in x.data.withUnsafeBufferPointer { src in
            for pl in 0..<planes {
                let base = pl * h * w
                for oh in 0..<ho { for ow in 0..<wo {
                    let o = (pl * ho + oh) * wo + ow
                    if isMax {
                        var best = -Float.infinity, at = 0
                        for kh in 0..<kernel { for kw in 0..<kernel {
                            let i = base + (oh * stride + kh) * w + ow * stride + kw
                            if src[i] > best || (src[i].isNaN && !best.isNaN) { best = src[i]; at = i }
                        } }
                        y[o] = best; argmax[o] = Int32(at - base)
                    } else {
                        var s: Float = 0
                        for kh in 0..<kernel { for kw in 0..<kernel { s += src[base + (oh * stride + kh) * w + ow * stride + kw] } }
                        y[o] = s * inv
                    }
                } }
            }
        } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let x = lastInput!
        let planes = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = gy.shape[2], wo = gy.shape[3]
        var gx = Tensor(zeros: x.shape)
        let inv = 1 / Float(kernel * kernel)
        gx.data.withUnsafeMutableBufferPointer { dst in gy.data.withUnsafeBufferPointer { g in
            for pl in 0..<planes {
                let base = pl * h * w
                for oh in 0..<ho { for ow in 0..<wo {
                    let o = (pl * ho + oh) * wo + ow
                    if isMax { dst[base + Int(argmax[o])] += g[o] } else {
                        for kh in 0..<kernel { for kw in 0..<kernel { dst[base + (oh * stride + kh) * w + ow * stride + kw] += g[o] * inv } }
                    }
                } }
            }
        } }
        return gx
    }
}
