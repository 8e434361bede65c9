import Foundation

/// Hyper-parameters of dense training (`locus train`).
public struct TrainingConfig: Codable, Sendable {
    public var epochs = 1
    public var batchSize = 64
    public var learningRate: Float = 1e-3
    public var optimizer: OptimizerKind = .adamw
    public var momentum: Float = 0.9
    /// SGD dampening δ (sparse SGDM only; dense SGD uses 0 like torch's default).
    public var dampening: Float = 0
    public var nesterov = false
    public var weightDecay: Float = 0
    public var schedule: LearningRateSchedule.Shape = .cosine
    /// Fraction of all steps spent warming up linearly.
    public var warmupFraction: Float = 0
    /// Clip the global gradient L2 norm to this value (torch.nn.utils.clip_grad_norm_).
    public var clipNorm: Float?
    public var labelSmoothing: Float = 0
    public var seed: UInt64 = 0
    /// Train the body as well as the head (false = linear probe: the body is frozen).
    public var trainBody = true
    /// One thread for the engine's pool (OpenBLAS is single-threaded in any case). Runs are bit-identical
    /// whatever the machine's load, and the same bits as with more threads (docs/engine-kernels.md).
    public var deterministic = false
    public init() {}
}

/// What one epoch did.
public struct EpochReport: Codable, Sendable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var validationLoss: Double?
    public var validationAccuracy: Double?
    public var seconds: Double
    public var samplesPerSecond: Double
}

/// Accuracy and loss of one head on one split.
public struct Evaluation: Codable, Sendable {
    public var head: String
    public var samples: Int
    public var loss: Double
    public var accuracy: Double
    /// Accuracy per class (nil for a class with no samples).
    public var perClassAccuracy: [Double?]
    public var classes: [String]?
}

/// Progress of a long run, for a progress bar.
public struct Progress: Sendable {
    public var epoch: Int, epochs: Int, step: Int, stepsPerEpoch: Int
    public var loss: Double
}

public enum Training {
    /// Trains `head` (and the body unless `config.trainBody` is false) on `train`; evaluates on
    /// `validation` after every epoch. A non-finite loss stops training with an error that says when.
    public static func fit(_ model: Model, head: String, train: Batches, validation: Batches?, config: TrainingConfig,
                           progress: ((Progress) -> Void)? = nil) throws -> [EpochReport] {
        try check(config)
        let headLayer = try model.head(head)
        // A fixed head (zero-shot) is never trained; then only the body is.
        let params = (config.trainBody ? model.bodyParameters : []) + (headLayer.isTrainable ? headLayer.parameters : [])
        guard !params.isEmpty else {
            throw EngineError("head '\(head)' is a fixed zero-shot head and the body is frozen: nothing to train (train the body, or add a linear head)")
        }
        let optimizer: any Optimizer = config.optimizer == .sgd
            ? SGD(momentum: config.momentum, dampening: config.dampening, weightDecay: config.weightDecay, nesterov: config.nesterov)
            : AdamW(weightDecay: config.weightDecay)
        return try loop(model, head: head, train: train, validation: validation, config: config, trainable: params,
                        bodyMode: config.trainBody ? .train : .eval, headOnly: !config.trainBody,
                        step: { optimizer.step(params, lr: $0) }, progress: progress)
    }

    /// Sparse fine-tuning: only the entries `masks` allow change, with SparseSGDM (`config.optimizer == .sgd`)
    /// or masked AdamW (AdaptW). The head trains densely when `trainHead`, else stays frozen.
    public static func fitSparse(_ model: Model, head: String, train: Batches, validation: Batches?, config: TrainingConfig,
                                 masks: [(Parameter, ParameterMask)], trainHead: Bool,
                                 progress: ((Progress) -> Void)? = nil) throws -> [EpochReport] {
        try check(config)
        let headLayer = try model.head(head)
        if trainHead, !headLayer.isTrainable {
            throw EngineError("head '\(head)' is a fixed zero-shot head (text embeddings); it is not trained, so it cannot be trained densely")
        }
        // A trained head is dense; any mask entries for it are superseded (never listed twice).
        let headIDs = Set(headLayer.parameters.map(ObjectIdentifier.init))
        // Fixed heads (zero-shot, of any task) stay fixed whatever the mask says.
        let fixed = Set(model.heads.values.filter { !$0.isTrainable }.flatMap(\.parameters).map(ObjectIdentifier.init))
        let active = masks.filter { !$0.1.isFrozen && !fixed.contains(ObjectIdentifier($0.0)) && !(trainHead && headIDs.contains(ObjectIdentifier($0.0))) }
            + (trainHead ? headLayer.parameters.map { ($0, ParameterMask.dense) } : [])
        guard !active.isEmpty else { throw EngineError("the mask leaves nothing trainable") }
        let sgd = SparseSGDM(momentum: config.momentum, dampening: config.dampening, weightDecay: config.weightDecay, nesterov: config.nesterov)
        let adam = MaskedAdamW(weightDecay: config.weightDecay)
        return try loop(model, head: head, train: train, validation: validation, config: config, trainable: active.map(\.0),
                        bodyMode: .train, headOnly: false,
                        step: { lr in config.optimizer == .sgd ? sgd.step(active, lr: lr) : adam.step(active, lr: lr) }, progress: progress)
    }

    static func check(_ config: TrainingConfig) throws {
        guard config.epochs >= 1, config.batchSize >= 1 else { throw EngineError("epochs and batch size must be ≥ 1") }
        guard config.learningRate > 0, config.learningRate.isFinite else { throw EngineError("the learning rate must be > 0, got \(config.learningRate)") }
        guard config.momentum >= 0, config.weightDecay >= 0 else { throw EngineError("momentum and weight decay must be ≥ 0") }
        guard (0...1).contains(config.labelSmoothing) else { throw EngineError("label smoothing must be in [0, 1], got \(config.labelSmoothing)") }
        guard (0...1).contains(config.warmupFraction) else { throw EngineError("warm-up must be a fraction in [0, 1], got \(config.warmupFraction)") }
        if let c = config.clipNorm, !(c > 0) { throw EngineError("the gradient clip norm must be > 0, got \(c)") }
    }

    /// The epoch loop shared by dense and sparse training; `step` applies one optimizer update.
    static func loop(_ model: Model, head: String, train: Batches, validation: Batches?, config: TrainingConfig,
                     trainable params: [Parameter], bodyMode: Mode, headOnly: Bool,
                     step: (Float) -> Void, progress: ((Progress) -> Void)?) throws -> [EpochReport] {
        let headLayer = try model.head(head)
        if config.deterministic { BLAS.setThreads(1) }
        for (i, layer) in model.body.enumerated() { (layer as? Dropout)?.reseed(SplitMix64.derivedSeed(config.seed, 0xD0_0000 + UInt64(i))) }
        let steps = (train.count + config.batchSize - 1) / config.batchSize
        let schedule = LearningRateSchedule(base: config.learningRate, shape: config.schedule,
                                            warmup: Int(config.warmupFraction * Float(steps * config.epochs)), total: steps * config.epochs)
        let loss = CrossEntropy(labelSmoothing: config.labelSmoothing)
        var reports: [EpochReport] = []
        var globalStep = 0
        for epoch in 0..<config.epochs {
            let start = Date()
            let order = train.order(epoch: epoch, seed: config.seed, shuffle: true)
            var lossSum = 0.0, correct = 0
            for s in 0..<steps {
                let ids = order[(s * config.batchSize)..<min(order.count, (s + 1) * config.batchSize)]
                let (x, y) = train.batch(ids)
                model.zeroGrad()
                let logits = headLayer.forward(try model.features(x, mode: bodyMode), mode: .train)
                let r = loss(logits, labels: y)
                guard r.loss.isFinite else {
                    throw EngineError("the loss became \(r.loss) at epoch \(epoch + 1), step \(s + 1) (learning rate \(schedule.rate(at: globalStep))); training stopped and nothing was written — try a lower learning rate or clipping the gradient norm")
                }
                try model.backward(r.gradient, head: head, headOnly: headOnly)
                if let maxNorm = config.clipNorm { clipGradients(params, maxNorm: maxNorm) }
                step(schedule.rate(at: globalStep))
                globalStep += 1
                lossSum += Double(r.loss) * Double(ids.count)
                correct += r.correct
                progress?(Progress(epoch: epoch + 1, epochs: config.epochs, step: s + 1, stepsPerEpoch: steps, loss: Double(r.loss)))
            }
            let seconds = Date().timeIntervalSince(start)
            var report = EpochReport(epoch: epoch + 1, trainLoss: lossSum / Double(train.count), trainAccuracy: Double(correct) / Double(train.count),
                                     seconds: seconds, samplesPerSecond: Double(train.count) / seconds)
            if let validation {
                let e = try evaluate(model, head: head, on: validation, batchSize: max(config.batchSize, 256))
                report.validationLoss = e.loss; report.validationAccuracy = e.accuracy
            }
            reports.append(report)
        }
        return reports
    }

    /// torch.nn.utils.clip_grad_norm_: scale every gradient by min(1, max / (‖g‖₂ + 1e-6)).
    public static func clipGradients(_ params: [Parameter], maxNorm: Float) {
        var total = 0.0
        for p in params { for g in p.grad.data { total += Double(g) * Double(g) } }
        let norm = Float(total.squareRoot())
        let coef = maxNorm / (norm + 1e-6)
        guard coef < 1 else { return }
        for p in params { p.grad.data.withUnsafeMutableBufferPointer { g in for i in 0..<g.count { g[i] *= coef } } }
    }

    /// `logits`, when given, receives each batch's logits [B, classes] in split order.
    public static func evaluate(_ model: Model, head: String, on data: Batches, batchSize: Int = 256,
                                logits: ((Tensor) -> Void)? = nil) throws -> Evaluation {
        guard batchSize >= 1 else { throw EngineError("batch size must be ≥ 1, got \(batchSize)") }
        let h = try model.head(head)
        let classes = h.outFeatures
        var lossSum = 0.0, correct = 0
        var perClass = [Int](repeating: 0, count: classes), perClassRight = [Int](repeating: 0, count: classes)
        let ids = data.indices
        var start = 0
        while start < ids.count {
            let slice = ids[start..<min(ids.count, start + batchSize)]
            let (x, y) = data.batch(slice)
            let z = try model.forward(x, head: head, mode: .inference)
            logits?(z)
            let r = CrossEntropy()(z, labels: y)
            lossSum += Double(r.loss) * Double(slice.count)
            correct += r.correct
            for (label, pred) in zip(y, r.predictions) { perClass[label] += 1; if label == pred { perClassRight[label] += 1 } }
            start += batchSize
        }
        return Evaluation(head: head, samples: ids.count, loss: lossSum / Double(ids.count), accuracy: Double(correct) / Double(ids.count),
                          perClassAccuracy: (0..<classes).map { perClass[$0] == 0 ? nil : Double(perClassRight[$0]) / Double(perClass[$0]) },
                          classes: model.architecture.heads.first { $0.name == head }?.classes)
    }
}
