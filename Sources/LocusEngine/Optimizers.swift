import Foundation
import LocusKernels

/// The optimizers `locus train` offers, with PyTorch's update rules.
public enum OptimizerKind: String, Sendable, CaseIterable, Codable { case sgd, adamw }

public protocol Optimizer: AnyObject {
    /// One update of every parameter from its `grad`, at learning rate `lr`.
    func step(_ parameters: [Parameter], lr: Float)
}

/// Per-parameter optimizer state, held by reference so updates happen in place.
final class Moments {
    var first: [Float]
    var second: [Float]
    var steps = 0
    init(count: Int, second: Bool) {
        first = [Float](repeating: 0, count: count)
        self.second = second ? [Float](repeating: 0, count: count) : []
    }
}

/// SGD with momentum, dampening, Nesterov and (coupled) weight decay — torch.optim.SGD:
/// d = g + λp; buf = d on the first step, else μ·buf + (1−δ)·d; d = d + μ·buf (Nesterov) or buf; p −= lr·d.
public final class SGD: Optimizer {
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    private var state: [ObjectIdentifier: Moments] = [:]

    public init(momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.momentum = momentum; self.dampening = dampening; self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step(_ parameters: [Parameter], lr: Float) {
        let (mu, damp, wd) = (momentum, 1 - dampening, weightDecay)
        for p in parameters {
            guard mu != 0 else {
                p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in
                    for i in 0..<w.count { w[i] -= lr * (g[i] + wd * w[i]) }
                } }
                continue
            }
            let s = state[ObjectIdentifier(p)] ?? { let m = Moments(count: p.value.count, second: false); state[ObjectIdentifier(p)] = m; return m }()
            let first = s.steps == 0
            s.steps += 1
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in s.first.withUnsafeMutableBufferPointer { b in
                locus_sgd_momentum(w.baseAddress, g.baseAddress, b.baseAddress, w.count, lr, mu, damp, wd, nesterov ? 1 : 0, first ? 1 : 0)
            } } }
        }
    }
}

/// AdamW — torch.optim.AdamW: p ← p·(1 − lr·λ); m, v moving averages of g and g²;
/// p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
public final class AdamW: Optimizer {
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    private var state: [ObjectIdentifier: Moments] = [:]

    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    public func step(_ parameters: [Parameter], lr: Float) {
        for p in parameters {
            let s = state[ObjectIdentifier(p)] ?? { let m = Moments(count: p.value.count, second: true); state[ObjectIdentifier(p)] = m; return m }()
            s.steps += 1
            let bc1 = 1 - Float(pow(Double(beta1), Double(s.steps))), bc2 = 1 - Float(pow(Double(beta2), Double(s.steps)))
            let stepSize = lr / bc1, inverseRootBC2 = 1 / bc2.squareRoot()
            let (b1, b2, e, decay) = (beta1, beta2, eps, 1 - lr * weightDecay)
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in
                s.first.withUnsafeMutableBufferPointer { m in s.second.withUnsafeMutableBufferPointer { v in
                    locus_adamw(w.baseAddress, g.baseAddress, m.baseAddress, v.baseAddress, w.count, stepSize, inverseRootBC2, b1, b2, e, decay)
                } }
            } }
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
