#if canImport(Glibc)
import Glibc
#endif
import LocusKernels

/// max(x, 0).
public final class ReLU: ParameterFree {
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec) { self.spec = spec }
    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        return Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { s in locus_relu(s.baseAddress, y.baseAddress, s.count) } }
    }
    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let x = lastInput!
        precondition(x.count == gy.count, "ReLU.backward: \(gy.shape) for input \(x.shape)")
        return Tensor(shape: gy.shape) { g in x.data.withUnsafeBufferPointer { s in gy.data.withUnsafeBufferPointer { d in
            locus_relu_backward(s.baseAddress, d.baseAddress, g.baseAddress, s.count) } } }
    }
}

/// The exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)) (PyTorch's default, not the tanh approximation),
/// computed with vectorisable exp and erfc approximations of float32 accuracy (see FastMath).
public final class GELU: ParameterFree {
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec) { self.spec = spec }
    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        return Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { s in
            FastMath.gelu(s.baseAddress!, y.baseAddress!, count: s.count) } }
    }
    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let x = lastInput!
        // d/dx x·Φ(x) = Φ(x) + x·φ(x)
        return Tensor(shape: gy.shape) { g in x.data.withUnsafeBufferPointer { s in gy.data.withUnsafeBufferPointer { d in
            FastMath.geluBackward(s.baseAddress!, d.baseAddress!, g.baseAddress!, count: s.count) } } }
    }
}

/// QuickGELU, x · σ(1.702 x): the sigmoid approximation of GELU that OpenAI's CLIP was trained with
/// (open_clip's `QuickGELU`, `quick_gelu=True`); a model trained with it must be run with it.
/// Computed with the same vectorisable exp as GELU (see FastMath).
public final class QuickGELU: ParameterFree {
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec) { self.spec = spec }
    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        return Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { s in
            FastMath.quickGelu(s.baseAddress!, y.baseAddress!, count: s.count) } }
    }
    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        guard let x = lastInput else { preconditionFailure("QuickGELU.backward before forward") }
        return Tensor(shape: gy.shape) { g in x.data.withUnsafeBufferPointer { s in gy.data.withUnsafeBufferPointer { d in
            FastMath.quickGeluBackward(s.baseAddress!, d.baseAddress!, g.baseAddress!, count: s.count) } } }
    }
}

/// [B, d1, d2, …] → [B, d1·d2·…].
public final class Flatten: ParameterFree {
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec) { self.spec = spec }
    public func outputShape(for input: [Int]) throws -> [Int] { [input.reduce(1, *)] }
    public func forward(_ x: Tensor, mode: Mode) -> Tensor { lastInput = mode.keepsActivations ? x : nil; return x.reshaped([x.rows, x.rowSize]) }
    public func backward(_ gy: Tensor) -> Tensor { lastOutputGradient = gy; return gy.reshaped(lastInput!.shape) }
}

/// Inverted dropout: in training, zero each element with probability p and scale the rest by
/// 1/(1−p); in evaluation, the identity. The mask comes from a seeded generator.
public final class Dropout: ParameterFree {
    public let spec: LayerSpec
    public let p: Float
    private var rng: SplitMix64
    private var keep: [Float] = []
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec, p: Float, seed: UInt64) { self.spec = spec; self.p = p; rng = SplitMix64(seed: seed) }
    /// Restarts the mask generator (training seeds it from its own seed).
    public func reseed(_ seed: UInt64) { rng = SplitMix64(seed: seed) }
    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        guard mode == .train, p > 0 else { keep = []; return x }
        let scale = 1 / (1 - p)
        keep = (0..<x.count).map { _ in rng.unitFloat() < p ? 0 : scale }
        return Tensor(shape: x.shape) { y in for i in 0..<y.count { y[i] = x.data[i] * keep[i] } }
    }
    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        guard !keep.isEmpty else { return gy }
        return Tensor(shape: gy.shape) { g in for i in 0..<g.count { g[i] = gy.data[i] * keep[i] } }
    }
}
