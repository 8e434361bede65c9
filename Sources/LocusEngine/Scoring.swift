import Foundation

/// Sensitivity estimators (Iurada et al., 2025; docs/talos.md §Estimators; spec §3 `estimator`).
public enum ScoreEstimator: String, Sendable, CaseIterable, Codable {
    /// TaLoS: ŷ ~ softmax(f(x)), squared gradient of the raw logit f_ŷ(x), `draws` per input.
    case talos
    /// Its expectation Σ_c p_c (∂f_c/∂θ)², deterministic.
    case talosExact = "talos-exact"
    /// (∇ log p(y_data | x))².
    case fisherEmpirical = "fisher-empirical"
    /// ŷ ~ p, (∇ log p_ŷ)², `draws` per input.
    case fisherMC = "fisher-mc"
    /// Σ_c p_c (∇ log p_c)².
    case fisherExact = "fisher-exact"

    public var isSampled: Bool { self == .talos || self == .fisherMC }
}

/// Accumulates Σ over samples (and draws) of per-sample squared gradients of chosen parameters.
///
/// Every estimator is a sum, over "passes", of squared per-sample gradients where the gradient of
/// the model output (the logits) for sample n in a pass is a vector g_n: e_ŷ for `talos`,
/// √p_c·e_c for every class c for `talos-exact`, e_y − p for `fisher-empirical`, and so on
/// (`outputGradients`). One forward pass and one backward pass per pass give every layer its
/// input x_n and output gradient δ_n per sample; each layer then adds the squared per-sample
/// gradients of its own parameters (`Layer.addSquaredPerSampleGradients`, in the layer's file),
/// without forming per-sample gradients where there is no weight sharing — for a Linear layer
/// Σ_n (δ_n x_nᵀ)² = (δ²)ᵀ(x²), one GEMM — and forming them per sample where there is (tokens
/// sharing a Linear weight, positions sharing a convolution's). The scorer applies `forwardScale`.
/// `accumulateNaive` does the same with one backward pass per sample: the reference the scoring tests
/// and `locus-bench score` (bench/score_bench.py) compare the efficient path with.
public final class Scorer {
    public let model: Model
    public let head: String
    public let estimator: ScoreEstimator
    public let draws: Int
    /// The scored parameters, in model order.
    public let parameters: [Parameter]
    /// Running sums, one per scored parameter (same order).
    public private(set) var sums: [[Float]]
    /// Inputs seen so far.
    public private(set) var samples = 0
    private var rng: SplitMix64
    /// The body layer holding each scored parameter (looked up once, not per pass).
    private let owners: [ObjectIdentifier: any Layer]

    /// `parameters` defaults to `Scorer.defaultParameters(model)`.
    public init(model: Model, head: String, estimator: ScoreEstimator, draws: Int = 1, seed: UInt64 = 0, parameters: [Parameter]? = nil) throws {
        _ = try model.head(head)
        guard draws >= 1 else { throw EngineError("draws must be ≥ 1") }
        self.model = model; self.head = head; self.estimator = estimator; self.draws = draws
        self.parameters = parameters ?? Scorer.defaultParameters(model)
        guard !self.parameters.isEmpty else { throw EngineError("no parameters to score") }
        sums = self.parameters.map { [Float](repeating: 0, count: $0.value.count) }
        rng = SplitMix64(seed: seed)
        var owners: [ObjectIdentifier: any Layer] = [:]
        for layer in model.body { for p in layer.parameters { owners[ObjectIdentifier(p)] = layer } }
        self.owners = owners
    }

    /// Every body parameter (inside transformer blocks and the patch embedding too), in model
    /// order; never a head's.
    public static func defaultParameters(_ model: Model) -> [Parameter] { model.bodyParameters }

    /// Starts from existing sums (for `--append`).
    public func resume(sums existing: [[Float]], samples: Int) throws {
        guard existing.count == sums.count, zip(existing, sums).allSatisfy({ $0.count == $1.count }) else {
            throw EngineError("existing scores do not match the scored parameters")
        }
        sums = existing; self.samples = samples
    }

    /// The output gradients of each pass for a batch: [passes][B × C].
    public func outputGradients(logits: Tensor, labels: [Int]) -> [[Float]] {
        let b = logits.rows, c = logits.rowSize
        let p = CrossEntropy()(logits, labels: labels.map { max(0, min($0, c - 1)) }).probabilities.data
        func sample(_ n: Int) -> Int {
            let u = rng.unitFloat()
            var acc: Float = 0
            for j in 0..<c { acc += p[n * c + j]; if u < acc { return j } }
            return c - 1
        }
        var passes: [[Float]] = []
        switch estimator {
        case .talos, .fisherMC:
            for _ in 0..<draws {
                var g = [Float](repeating: 0, count: b * c)
                for n in 0..<b {
                    let y = sample(n)
                    if estimator == .fisherMC { for j in 0..<c { g[n * c + j] = -p[n * c + j] } }
                    g[n * c + y] += 1
                }
                passes.append(g)
            }
        case .fisherEmpirical:
            var g = [Float](repeating: 0, count: b * c)
            for n in 0..<b { for j in 0..<c { g[n * c + j] = (j == labels[n] ? 1 : 0) - p[n * c + j] } }
            passes.append(g)
        case .talosExact, .fisherExact:
            for k in 0..<c {
                var g = [Float](repeating: 0, count: b * c)
                for n in 0..<b {
                    let w = p[n * c + k].squareRoot()
                    if estimator == .fisherExact { for j in 0..<c { g[n * c + j] = w * ((j == k ? 1 : 0) - p[n * c + j]) } }
                    else { g[n * c + k] = w }
                }
                passes.append(g)
            }
        }
        return passes
    }

    /// Efficient path: one forward pass, one backward pass per output-gradient pass.
    public func accumulate(_ x: Tensor, labels: [Int]) throws {
        let logits = try model.forward(x, head: head, mode: .eval)
        let b = logits.rows, c = logits.rowSize
        for g in outputGradients(logits: logits, labels: labels) {
            // Only each layer's input and output gradient are needed, not the batch-summed parameter gradients.
            try GradientAccumulation.$enabled.withValue(false) { try model.backward(Tensor(shape: [b, c], data: g), head: head) }
            for (i, p) in parameters.enumerated() { try addSquaredPerSampleGradient(of: p, into: &sums[i], batch: b) }
        }
        samples += b
    }

    /// Reference path: a backward pass per sample and pass, squaring whole parameter gradients.
    public func accumulateNaive(_ x: Tensor, labels: [Int]) throws {
        let logits = try model.forward(x, head: head, mode: .eval)
        let b = logits.rows, c = logits.rowSize
        let passes = outputGradients(logits: logits, labels: labels)
        let per = x.rowSize
        for n in 0..<b {
            let xn = Tensor(shape: [1] + Array(x.shape.dropFirst()), data: Array(x.data[(n * per)..<((n + 1) * per)]))
            _ = try model.forward(xn, head: head, mode: .eval)
            for g in passes {
                model.zeroGrad()
                try model.backward(Tensor(shape: [1, c], data: Array(g[(n * c)..<((n + 1) * c)])), head: head)
                for (i, p) in parameters.enumerated() {
                    sums[i].withUnsafeMutableBufferPointer { s in p.grad.data.withUnsafeBufferPointer { d in
                        for j in 0..<s.count { s[j] += d[j] * d[j] }
                    } }
                }
            }
        }
        samples += b
    }


    private func addSquaredPerSampleGradient(of p: Parameter, into sum: inout [Float], batch b: Int) throws {
        guard let layer = owners[ObjectIdentifier(p)] else {
            throw EngineError("\(p.name): no per-sample data (is it before the first trainable layer?)")
        }
        // The gradient with respect to the stored value is the effective one times the forward scale;
        // without one, the layer adds straight into the sum, saving a zeroed copy of it and a pass
        // to add that copy, per parameter and batch.
        guard let scale = p.forwardScale else { return try layer.addSquaredPerSampleGradients(of: p, batch: b, into: &sum) }
        var local = [Float](repeating: 0, count: sum.count)
        try layer.addSquaredPerSampleGradients(of: p, batch: b, into: &local)
        sum.withUnsafeMutableBufferPointer { s in for j in 0..<s.count { s[j] += local[j] * (scale[j] * scale[j]) } }
    }
}

extension Scorer {
    /// Scores the first `maxBatches` batches of `data` (all when nil), in split order.
    public func run(over data: Batches, batchSize: Int, maxBatches: Int? = nil, progress: ((Int, Int) -> Void)? = nil) throws {
        guard batchSize >= 1 else { throw EngineError("batch size must be ≥ 1") }
        let ids = data.indices
        let batches = min((ids.count + batchSize - 1) / batchSize, maxBatches ?? Int.max)
        guard batches > 0 else { throw EngineError("the scoring set is empty") }
        for i in 0..<batches {
            let (x, y) = data.batch(ids[(i * batchSize)..<min(ids.count, (i + 1) * batchSize)])
            try accumulate(x, labels: y)
            progress?(i + 1, batches)
        }
    }
}
