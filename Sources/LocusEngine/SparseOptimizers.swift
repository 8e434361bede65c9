import LocusKernels

/// Where a parameter may change during sparse fine-tuning.
public enum ParameterMask: Sendable {
    /// Every entry is trainable (no mask, or a tensor the mask file leaves trainable).
    case dense
    /// Only these flat indices (sorted) are trainable. An empty list freezes the tensor.
    case entries([Int32])
    /// A 0/1 multiplier per entry, used when many entries are trainable (cheaper than indices).
    case multiplier([Float])

    /// The representation Locus uses for `bits`: indices below half density, a multiplier above.
    public static func from(bits: [Bool]) -> ParameterMask {
        let ones = bits.reduce(0) { $0 + ($1 ? 1 : 0) }
        if ones == bits.count { return .dense }
        if ones * 2 < bits.count {
            var idx: [Int32] = []
            idx.reserveCapacity(ones)
            for (i, b) in bits.enumerated() where b { idx.append(Int32(i)) }
            return .entries(idx)
        }
        return .multiplier(bits.map { $0 ? 1 : 0 })
    }

    public var isFrozen: Bool { if case .entries(let e) = self { return e.isEmpty }; return false }
}

/// SparseSGDM (docs/talos.md §SparseSGDM), per parameter p, gradient g, mask m:
///   d = g + λp;  d = d ⊙ m;  buf = d (first step) or μ·buf + (1−δ)·d;  buf = buf ⊙ m;
///   d = d + μ·buf (Nesterov) or buf;  p −= lr·d.
/// Entries with m = 0 never change (bit for bit). With an index mask the step touches only the
/// trainable entries, and the momentum buffer holds only them, so the cost of a step follows the
/// number of ones (the buffer is zero on the others by construction, so nothing is lost).
public final class SparseSGDM {
    public let momentum: Float, dampening: Float, weightDecay: Float, nesterov: Bool
    private var buffers: [ObjectIdentifier: [Float]] = [:]

    public init(momentum: Float = 0, dampening: Float = 0, weightDecay: Float = 0, nesterov: Bool = false) {
        self.momentum = momentum; self.dampening = dampening; self.weightDecay = weightDecay; self.nesterov = nesterov
    }

    public func step(_ params: [(Parameter, ParameterMask)], lr: Float) {
        let (mu, damp, wd, nest) = (momentum, 1 - dampening, weightDecay, nesterov)
        for (p, mask) in params where !mask.isFrozen {
            let key = ObjectIdentifier(p)
            let n: Int
            switch mask { case .entries(let e): n = e.count; default: n = p.value.count }
            let first = buffers[key] == nil
            if first && mu != 0 { buffers[key] = [Float](repeating: 0, count: n) }
            var buf = buffers.removeValue(forKey: key) ?? []   // take it out: no copy on write
            // A mask value 0 leaves w (and its buffer slot) untouched rather than adding 0: that keeps −0.0
            // and survives a non-finite gradient, so frozen entries stay bit-identical (LocusKernels).
            let (nest_, first_) = (nest ? Int32(1) : 0, first ? Int32(1) : 0)
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in buf.withUnsafeMutableBufferPointer { b in
                let bp = b.baseAddress   // nil without momentum (no buffer)
                switch mask {
                case .dense: locus_sparse_sgdm(w.baseAddress, g.baseAddress, bp, nil, w.count, lr, mu, damp, wd, nest_, first_)
                case .multiplier(let m): m.withUnsafeBufferPointer { m in
                    locus_sparse_sgdm(w.baseAddress, g.baseAddress, bp, m.baseAddress, w.count, lr, mu, damp, wd, nest_, first_) }
                case .entries(let e): e.withUnsafeBufferPointer { e in
                    locus_sparse_sgdm_entries(w.baseAddress, g.baseAddress, bp, e.baseAddress, e.count, lr, mu, damp, wd, nest_, first_) }
                }
            } } }
            if mu != 0 { buffers[key] = buf }
        }
    }
}

/// Masked AdamW as TaLoS's AdaptW: the moments follow the unmasked gradient, and both the update
/// and the decoupled weight decay are multiplied by the mask:
///   m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  p ← p − lr·λ·(mask ⊙ p) − lr/(1−β₁ᵗ) · mask ⊙ m/(√v/√(1−β₂ᵗ) + ε).
/// Moments at frozen entries never reach the parameters, so an index mask keeps them only for the
/// trainable entries: same result, cost and memory proportional to the ones.
public final class MaskedAdamW {
    public let beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    private var state: [ObjectIdentifier: Moments] = [:]

    public init(beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8, weightDecay: Float = 0.01) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }

    public func step(_ params: [(Parameter, ParameterMask)], lr: Float) {
        for (p, mask) in params where !mask.isFrozen {
            let key = ObjectIdentifier(p)
            let n: Int
            switch mask { case .entries(let e): n = e.count; default: n = p.value.count }
            let s = state[key] ?? { let m = Moments(count: n, second: true); state[key] = m; return m }()
            s.steps += 1
            let bc1 = 1 - Float(pow(Double(beta1), Double(s.steps))), bc2 = 1 - Float(pow(Double(beta2), Double(s.steps)))
            let stepSize = lr / bc1, inverseRootBC2 = 1 / bc2.squareRoot()
            let (b1, b2, e, decay) = (beta1, beta2, eps, lr * weightDecay)
            p.value.data.withUnsafeMutableBufferPointer { w in p.grad.data.withUnsafeBufferPointer { g in
                s.first.withUnsafeMutableBufferPointer { m1 in s.second.withUnsafeMutableBufferPointer { v in
                    switch mask {
                    case .dense: locus_masked_adamw(w.baseAddress, g.baseAddress, m1.baseAddress, v.baseAddress, nil, w.count,
                                                    stepSize, inverseRootBC2, b1, b2, e, decay)
                    case .multiplier(let mk): mk.withUnsafeBufferPointer { mk in
                        locus_masked_adamw(w.baseAddress, g.baseAddress, m1.baseAddress, v.baseAddress, mk.baseAddress, w.count,
                                           stepSize, inverseRootBC2, b1, b2, e, decay) }
                    case .entries(let ix): ix.withUnsafeBufferPointer { ix in
                        locus_masked_adamw_entries(w.baseAddress, g.baseAddress, m1.baseAddress, v.baseAddress, ix.baseAddress, ix.count,
                                                   stepSize, inverseRootBC2, b1, b2, e, decay) }
                    }
                } }
            } }
        }
    }
}

import Foundation
