/// A trainable tensor with its gradient. `forwardScale`, when set, multiplies the value in the
/// forward pass (TaLoS calibration scales dropped weights by 0.1 between rounds); gradients are
/// then with respect to the unscaled value.
public final class Parameter {
    public let name: String
    public var value: Tensor
    public var grad: Tensor
    public var forwardScale: [Float]?

    public init(name: String, value: Tensor) {
        self.name = name; self.value = value; self.grad = Tensor(zeros: value.shape)
    }

    /// The value the forward pass uses.
    public var effective: Tensor {
        guard let s = forwardScale else { return value }
        var t = value
        t.data.withUnsafeMutableBufferPointer { v in s.withUnsafeBufferPointer { m in for i in 0..<v.count { v[i] *= m[i] } } }
        return t
    }

    public func zeroGrad() {
        grad.data.withUnsafeMutableBufferPointer { g in for i in 0..<g.count { g[i] = 0 } }
    }
}

/// train: dropout on; eval: dropout off, and every layer keeps what its backward pass needs (scoring
/// backpropagates through evaluation-mode forwards); inference: as eval, but nothing is kept, so a
/// deep model's activations are freed layer by layer (evaluation only: no backward may follow).
public enum Mode: Sendable {
    case train, eval, inference
    public var keepsActivations: Bool { self != .inference }
}

/// Set while scoring: backward passes then only propagate gradients (each layer keeps its input
/// and output gradient) and skip accumulating parameter gradients, which scoring never reads.
/// A task-local value, so concurrent work elsewhere is unaffected.
public enum GradientAccumulation {
    @TaskLocal public static var enabled = true
}

/// One layer: forward and backward side by side. A layer remembers what its backward pass needs
/// from the last forward (`lastInput`) and the gradient it last received (`lastOutputGradient`),
/// which is what per-sample gradient statistics are built from.
///
/// A layer that holds parameters declares them and computes their per-sample statistics for
/// scoring (`addSquaredPerSampleGradients`) in its own file, next to its forward and backward.
/// Neither has a default: a layer without parameters says so by adopting `ParameterFree`, a layer
/// made of other layers by adopting `CompositeLayer`; any other layer that omits the hook does not compile.
public protocol Layer: AnyObject {
    /// The architecture entry this layer was built from.
    var spec: LayerSpec { get }
    /// The parameters this layer holds (a composite layer's are its sublayers'), in model order.
    var parameters: [Parameter] { get }
    var lastInput: Tensor? { get }
    var lastOutputGradient: Tensor? { get }
    /// Per-sample output shape for a per-sample input shape; throws on a mismatch.
    func outputShape(for input: [Int]) throws -> [Int]
    func forward(_ x: Tensor, mode: Mode) -> Tensor
    /// Accumulates parameter gradients and returns the gradient with respect to the input.
    func backward(_ gy: Tensor) -> Tensor
    /// The layers a composite layer (a transformer block) is made of; their parameters are its
    /// parameters.
    var sublayers: [any Layer] { get }
    /// Adds Σ_n G_n ⊙ G_n to `sum` (one entry per element of `p`), where G_n is the gradient of
    /// sample n's term of the last backward pass with respect to the value the forward pass used
    /// (`p.effective`), for a batch of `batch` samples: what every scoring estimator sums
    /// (docs/talos.md §Estimators; the scorer applies `forwardScale`). The batch's statistic is
    /// added with one addition per element (`addingOnce`), so a scorer may pass its running sums
    /// straight in and get the bits it would get by adding a separate batch result. It reads only what the
    /// last forward (in `.eval` or `.train` mode) and backward kept; throws when they kept nothing
    /// or when `p` is not one of this layer's parameters.
    func addSquaredPerSampleGradients(of p: Parameter, batch: Int, into sum: inout [Float]) throws
}

extension Layer {
    public var sublayers: [any Layer] { [] }
    /// This layer and, recursively, the layers it is made of.
    public var allLayers: [any Layer] { [self] + sublayers.flatMap(\.allLayers) }

    /// The last input and output gradient, which every per-sample statistic is built from.
    func perSampleData(for p: Parameter) throws -> (input: Tensor, outputGradient: Tensor) {
        guard let delta = lastOutputGradient, let x = lastInput else {
            throw EngineError("\(p.name): no per-sample data (is it before the first trainable layer?)")
        }
        return (x, delta)
    }

    /// Runs `body` on zeros the size of `sum`, then adds what it built to `sum` once per element:
    /// for statistics built sample by sample.
    func addingOnce(to sum: inout [Float], _ body: (inout [Float]) throws -> Void) rethrows {
        var batch = [Float](repeating: 0, count: sum.count)
        try body(&batch)
        sum.withUnsafeMutableBufferPointer { s in batch.withUnsafeBufferPointer { v in for j in 0..<s.count { s[j] += v[j] } } }
    }

    func notMine(_ p: Parameter) -> EngineError {
        EngineError("\(p.name) is not a parameter of this \(spec.type) layer")
    }
}

/// A layer without parameters (activations, pooling, attention's softmax, dropout).
public protocol ParameterFree: Layer {}

extension ParameterFree {
    public var parameters: [Parameter] { [] }
    public func addSquaredPerSampleGradients(of p: Parameter, batch: Int, into sum: inout [Float]) throws { throw notMine(p) }
}

/// A layer made of other layers (a transformer block, the patch embedding): its parameters are its
/// sublayers', and each sublayer computes the statistics of its own.
public protocol CompositeLayer: Layer {}

extension CompositeLayer {
    public var parameters: [Parameter] { sublayers.flatMap(\.parameters) }
    public func addSquaredPerSampleGradients(of p: Parameter, batch: Int, into sum: inout [Float]) throws {
        guard let owner = sublayers.first(where: { $0.parameters.contains { $0 === p } }) else { throw notMine(p) }
        try owner.addSquaredPerSampleGradients(of: p, batch: batch, into: &sum)
    }
}

/// A layer that can skip its input gradient. The model switches it off in its first trainable
/// layer: nobody needs the gradient of the input data, and it costs as much as the weight gradient.
public protocol InputGradientOptional: Layer {
    var computesInputGradient: Bool { get set }
}

/// `prefix.local`, or just `local` for top-level parameters (timm's `cls_token`).
func parameterName(_ prefix: String, _ local: String) -> String { prefix.isEmpty ? local : "\(prefix).\(local)" }
