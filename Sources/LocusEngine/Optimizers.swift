import Foundation

/// The optimizers `locus train` offers, with PyTorch's update rules.
public enum OptimizerKind: String, Sendable, CaseIterable, Codable { case sgd, adamw }

public protocol Optimizer: AnyObject {
    /// One update of every parameter from its `grad`, at learning rate `lr`.
    func step(_ parameters: [Parameter], lr: Float)
}

/// SGD with momentum, dampening, Nesterov and (coupled) weight decay — torch.optim.SGD:
/// d = g + λp; buf = d on the first step, else μ·buf + (1−δ)·d; d = d + μ·buf (Nesterov) or buf; p −= lr·d.
public final class SGD: Optimizer {
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    private var buffers: [ObjectIdentifier: [Float]] = [:]

    public init(momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.momentum = momentum; self.dampening = dampening; self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step(_ parameters: [Parameter], lr: Float) {
        for p in parameters {
            let key = ObjectIdentifier(p)
            var buf = buffers[key] ?? []
            let first = buf.isEmpty
            if momentum != 0 && first { buf = [Float](repeating: 0, count: p.value.count) }
            let (mu, damp, wd, nest) = (momentum, dampening, weightDecay, nesterov)
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in buf.withUnsafeMutableBufferPointer { b in
                for i in 0..<w.count {
                    var d = g[i] + wd * w[i]
                    if mu != 0 {
                        b[i] = first ? d : mu * b[i] + (1 - damp) * d
                        d = nest ? d + mu * b[i] : b[i]
                    }
                    w[i] -= lr * d
                }
            } } }
            if momentum != 0 { buffers[key] = buf }
        }
    }
}

/// AdamW — torch.optim.AdamW: p ← p·(1 − lr·λ); m, v moving averages of g and g²;
/// p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
public final class AdamW: Optimizer {
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    private var state: [ObjectIdentifier: (m: [Float], v: [Float], t: Int)] = [:]

    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter], lr: Float) {
        for p in parameters {
            let key = ObjectIdentifier(p)
            var s = state[key] ?? ([Float](repeating: 0, count: p.value.count), [Float](repeating: 0, count: p.value.count), 0)
            s.t += 1
            let bc1 = 1 - Float(pow(Double(beta1), Double(s.t))), bc2 = 1 - Float(pow(Double(beta2), Double(s.t)))
            let stepSize = lr / bc1, rootBC2 = bc2.squareRoot()
            let (b1, b2, e, decay) = (beta1, beta2, eps, 1 - lr * weightDecay)
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in
                s.m.withUnsafeMutableBufferPointer { m in s.v.withUnsafeMutableBufferPointer { v in
                    for i in 0..<w.count {
                        w[i] *= decay
                        m[i] = b1 * m[i] + (1 - b1) * g[i]
                        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
                        w[i] -= stepSize * m[i] / (v[i].squareRoot() / rootBC2 + e)
                    }
                } }
            } }
            state[key] = s
        }
    }
}

/// Learning rate at `step` of `total`: linear warm-up over `warmup` steps, then cosine decay to 0
/// (or constant after warm-up).
public struct LearningRateSchedule: Sendable {
    public enum Shape: String, Sendable, CaseIterable, Codable { case cosine, constant }
    public var base: Float
    public var shape: Shape
    public var warmup: Int
    public var total: Int

    public init(base: Float, shape: Shape = .cosine, warmup: Int = 0, total: Int) {
        self.base = base; self.shape = shape; self.warmup = warmup; self.total = total
    }

    public func rate(at step: Int) -> Float {
        if step < warmup { return base * Float(step + 1) / Float(warmup) }
        switch shape {
        case .constant: return base
        case .cosine:
            let span = max(1, total - warmup)
            let progress = Double(min(step - warmup, span)) / Double(span)
            return base * Float(0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
