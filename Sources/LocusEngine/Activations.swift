#if canImport(Glibc)
import Glibc
#endif
import LocusKernels

/// An activation computed entry by entry: one kernel for y = f(x), one for g = f′(x) · dy (the
/// LocusKernels C kernels, at the CPU's vector width). It keeps its input for the backward pass.
public class PointwiseActivation: ParameterFree {
    typealias Value = (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    typealias Gradient = (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    private let value: Value
    private let gradient: Gradient
    init(spec: LayerSpec, value: @escaping Value, gradient: @escaping Gradient) {
        self.spec = spec; self.value = value; self.gradient = gradient
    }
    public func outputShape(for input: [Int]) throws -> [Int] { input }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        return Tensor(shape: x.shape) { y in x.data.withUnsafeBufferPointer { s in value(s.baseAddress!, y.baseAddress!, s.count) } }
    }
    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        guard let x = lastInput else { preconditionFailure("\(type(of: self)).backward before forward") }
        precondition(x.count == gy.count, "\(type(of: self)).backward: \(gy.shape) for input \(x.shape)")
        return Tensor(shape: gy.shape) { g in x.data.withUnsafeBufferPointer { s in gy.data.withUnsafeBufferPointer { d in
            gradient(s.baseAddress!, d.baseAddress!, g.baseAddress!, s.count) } } }
    }
}

/// max(x, 0).
public final class ReLU: PointwiseActivation {
    init(spec: LayerSpec) { super.init(spec: spec, value: { locus_relu($0, $1, $2) }, gradient: { locus_relu_backward($0, $1, $2, $3) }) }
}

/// The exact GELU, x · Φ(x) = x/2 · (1 + erf(x/√2)) (PyTorch's default, not the tanh approximation),
/// computed with vectorisable exp and erfc approximations of float32 accuracy (see FastMath);
/// d/dx x·Φ(x) = Φ(x) + x·φ(x).
public final class GELU: PointwiseActivation {
    init(spec: LayerSpec) {
        super.init(spec: spec, value: { FastMath.gelu($0, $1, count: $2) }, gradient: { FastMath.geluBackward($0, $1, $2, count: $3) })
    }
}

/// QuickGELU, x · σ(1.702 x): the sigmoid approximation of GELU that OpenAI's CLIP was trained with
/// (open_clip's `QuickGELU`, `quick_gelu=True`); a model trained with it must be run with it.
/// Computed with the same vectorisable exp as GELU (see FastMath).
public final class QuickGELU: PointwiseActivation {
    init(spec: LayerSpec) {
        super.init(spec: spec, value: { FastMath.quickGelu($0, $1, count: $2) }, gradient: { FastMath.quickGeluBackward($0, $1, $2, count: $3) })
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
