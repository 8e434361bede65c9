import Foundation
import LocusFormat
import LocusEngine

/// `locus eval`: accuracy, loss and per-class accuracy of heads on a split, and optionally the
/// logits of a single head.
public struct EvalRequest {
    public var model: String
    public var data: String
    /// Heads to evaluate; empty for every head whose class count fits the data.
    public var head: [String] = []
    /// Split evaluated; nil for every sample.
    public var split: String? = "test"
    public var batchSize = 256
    /// Collect the logits (float32 [samples, classes], in split order); needs exactly one head.
    public var collectLogits = false
    public init(model: String, data: String) { self.model = model; self.data = data }

    public struct Outcome {
        public var results: [Evaluation]
        /// Row-major [samples, classes] when `collectLogits`.
        public var logits: (values: [Float], shape: [Int])?
    }

    public func execute() throws -> Outcome {
        let task = try TaskData(model: model, data: data)
        let names = head.isEmpty ? task.model.architecture.heads.filter { $0.outFeatures == task.data.classes.count }.map(\.name) : head
        guard !names.isEmpty else {
            throw RemediableError(LocusError(file: model, "no head has \(task.data.classes.count) classes like \(data)"), .name(setting: "head"))
        }
        if collectLogits, names.count != 1 {
            throw RemediableError(LocusError(file: model, "logits are collected for exactly one head; heads here: \(names.joined(separator: ", "))"),
                                  .name(setting: "head"))
        }
        var results: [Evaluation] = []
        var collected: [Float] = []
        for h in names {
            let b = try task.batches(head: h, split: split)
            results.append(try engine(file: model) {
                try Training.evaluate(task.model, head: h, on: b, batchSize: batchSize, logits: collectLogits ? { collected += $0.data } : nil)
            })
        }
        var logits: (values: [Float], shape: [Int])?
        if collectLogits, let r = results.first { logits = (collected, [r.samples, collected.count / max(r.samples, 1)]) }
        return Outcome(results: results, logits: logits)
    }
}

/// Whether new scores may be added to an existing scores file (`score --append`): same estimator,
/// same base model, same draws, sums, and the same tensors with the same shapes. Returns the sums
/// and sample count to resume from.
public enum ScoresAppend {
    public static func resume(from old: ScoresReader, estimator: String, fingerprint: String, model: String, draws: Int,
                              parameters: [Parameter]) throws -> (sums: [[Float]], samples: Int) {
        let output = old.path
        guard old.info.estimator == estimator else {
            throw LocusError(file: output, object: "/@estimator", "is '\(old.info.estimator)', cannot append '\(estimator)' scores")
        }
        guard old.info.baseFingerprint == fingerprint else {
            throw LocusError(file: output, object: "/@base-fingerprint", "belongs to another model (\(old.info.baseFingerprint)), not \(model) (\(fingerprint))")
        }
        guard old.info.draws == Int64(draws), old.info.reduction == .sum else {
            throw LocusError(file: output, "was made with \(old.info.draws) draws and reduction \(old.info.reduction.rawValue); append needs the same draws and sums")
        }
        guard old.tensors.map(\.name) == parameters.map(\.name).sorted(by: TensorName.byteOrder),
              parameters.allSatisfy({ p in old.tensor(named: p.name)?.shape == p.value.shape }) else {
            throw LocusError(file: output, "scores a different set of tensors (or shapes) than this run")
        }
        let byName = Dictionary(uniqueKeysWithValues: old.tensors.map { ($0.name, $0) })
        return (try parameters.map { try old.read(byName[$0.name]!) }, Int(old.info.samples))
    }
}

/// Which samples score a model, with which estimator (shared by `score` and `mask`).
public struct ScoringSet {
    public var estimator: ScoreEstimator = .talos
    public var head = "default"
    public var split = "train"
    /// Only the first N batches of the split.
    public var batches: Int?
    public var batchSize = 64
    public var draws = 1
    public var seed: UInt64 = 0
    /// Regular expression of parameter names not to score.
    public var exclude: String?
    public init() {}

    /// The parameters scored: the scorer's default set minus `exclude`.
    public func parameters(_ model: Model) throws -> [Parameter] {
        var ps = Scorer.defaultParameters(model)
        if let exclude {
            let re: NSRegularExpression
            do { re = try NSRegularExpression(pattern: exclude) } catch { throw RequestError("exclude", "'\(exclude)' is not a regular expression") }
            ps = ps.filter { re.firstMatch(in: $0.name, range: NSRange($0.name.startIndex..., in: $0.name)) == nil }
        }
        return ps
    }

    /// Deterministic estimators have one "draw" per input whatever `draws` says (spec §3).
    public var recordedDraws: Int { estimator.isSampled ? draws : 1 }

    public var provenance: [String: JSONValue] {
        ["estimator": .string(estimator.rawValue), "head": .string(head), "split": .string(split), "batches": batches.map { .integer(Int64($0)) } ?? .null,
         "batch_size": .integer(Int64(batchSize)), "draws": .integer(Int64(draws)), "seed": .integer(Int64(seed))]
    }

    func scorer(_ model: Model, parameters: [Parameter], file: String) throws -> Scorer {
        try engine(file: file) { try Scorer(model: model, head: head, estimator: estimator, draws: draws, seed: seed, parameters: parameters) }
    }
}

/// `locus score`: per-parameter sensitivity scores of a model on data, optionally added to an
/// existing scores file.
public struct ScoreRequest {
    public var model: String
    public var data: String
    public var output: String
    public var set = ScoringSet()
    public var append = false
    public var command: [String] = []
    public init(model: String, data: String, output: String) { self.model = model; self.data = data; self.output = output }

    public struct Outcome { public var tensors: Int; public var samples: Int }

    /// `progress(batch, batches)` after every batch.
    public func execute(progress: ((Int, Int) -> Void)? = nil) throws -> Outcome {
        let task = try TaskData(model: model, data: data)
        let m = task.model
        let params = try set.parameters(m)
        let scorer = try set.scorer(m, parameters: params, file: model)
        let fingerprint = m.sourceFingerprint ?? ""
        if append {
            let r = try ScoresAppend.resume(from: try ScoresReader(path: output), estimator: set.estimator.rawValue, fingerprint: fingerprint,
                                            model: model, draws: set.recordedDraws, parameters: params)
            try scorer.resume(sums: r.sums, samples: r.samples)
        }
        let batches = try task.batches(head: set.head, split: set.split)
        try engine(file: data) {
            try scorer.run(over: batches, batchSize: set.batchSize, maxBatches: set.batches) { i, n in progress?(i, n) }
        }
        let w = try ScoresWriter(path: output, info: .init(baseFingerprint: fingerprint, estimator: set.estimator.rawValue,
                                                            samples: Int64(scorer.samples), draws: Int64(set.recordedDraws), reduction: .sum),
                                 provenance: Provenance(command: command, inputs: [.init(role: "model", path: model, fingerprint: fingerprint),
                                                                                   .init(role: "data", path: data, fingerprint: nil)],
                                                        parameters: set.provenance))
        for (p, s) in zip(scorer.parameters, scorer.sums) { try w.add(name: p.name, shape: p.value.shape, values: s) }
        try w.finish()
        return Outcome(tensors: params.count, samples: scorer.samples)
    }
}
