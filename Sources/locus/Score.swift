import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine

extension ScoreEstimator: ExpressibleByArgument {}

/// Options shared by `score` and `mask` for choosing the scoring set.
struct ScoringSetOptions: ParsableArguments {
    @Option(help: "Estimator (docs/talos.md §Estimators).")
    var estimator: ScoreEstimator = .talos
    @Option(help: "Head whose logits are scored.") var head: String = "default"
    @Option(help: "Split the scoring samples come from.") var split: String = "train"
    @Option(help: "Use only the first N batches of the split.") var batches: Int?
    @Option(help: ArgumentHelp("Batch size of the scoring passes.", valueName: "n")) var batchSize: Int = 64
    @Option(help: "Draws per input (talos, fisher-mc).") var draws: Int = 1
    @Option(help: "Seed of the class sampling.") var seed: UInt64 = 0
    @Option(help: ArgumentHelp("Regex of parameter names not to score.", valueName: "regex")) var exclude: String?

    func parameters(_ model: Model) throws -> [Parameter] {
        var ps = Scorer.defaultParameters(model)
        if let exclude {
            let re = try NSRegularExpression(pattern: exclude)
            ps = ps.filter { re.firstMatch(in: $0.name, range: NSRange($0.name.startIndex..., in: $0.name)) == nil }
        }
        return ps
    }

    var provenance: [String: JSONValue] {
        ["estimator": .string(estimator.rawValue), "head": .string(head), "split": .string(split), "batches": batches.map { .integer(Int64($0)) } ?? .null,
         "batch_size": .integer(Int64(batchSize)), "draws": .integer(Int64(draws)), "seed": .integer(Int64(seed))]
    }
}

struct Score: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compute per-parameter sensitivity scores (diagonal Fisher / TaLoS) of a model on data.",
        discussion: """
        Scores are sums over samples (and draws) of squared per-sample gradients, stored as float32 per \
        tensor with reduction "sum" (spec §3). Scored by default: every body parameter (Linear, Conv2d, \
        LayerNorm; in a vision transformer also the patch embedding, every block, cls_token and \
        pos_embed), never the heads; the model runs in evaluation mode. Weights shared across tokens get \
        per-sample gradients summed over the tokens before squaring (docs/talos.md §Per-sample squared \
        gradients in one backward pass).

        talos follows the TaLoS reference: ŷ ~ softmax(f(x)) per input and draw, gradient of the raw \
        logit f_ŷ, computed with one backward pass per batch and draw instead of one per sample; \
        talos-exact and fisher-exact do one backward pass per class (docs/talos.md §Estimators). \
        --append adds samples to an existing scores file after checking estimator, draws, tensors and \
        base fingerprint.

        Example: locus score model.h5 task.h5 --head task --batches 20 -o scores.h5
        """)

    @Argument(help: "Model checkpoint.") var model: String
    @Argument(help: "Dataset artifact.") var data: String
    @Option(name: .shortAndLong, help: "Output scores file.") var output: String
    @OptionGroup var scoring: ScoringSetOptions
    @Flag(help: "Add to the scores already in OUTPUT.") var append = false
    @Flag(help: "No progress bar.") var quiet = false

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try reportingErrors(source) {
            try protectInputs()
            let m = try Model.load(model)
            let d = try DatasetArtifact.read(data)
            let params = try scoring.parameters(m)
            let scorer = try engine(file: model) {
                try Scorer(model: m, head: scoring.head, estimator: scoring.estimator, draws: scoring.draws, seed: scoring.seed, parameters: params)
            }
            let fingerprint = m.sourceFingerprint ?? ""
            // Deterministic estimators have one "draw" per input whatever --draws says (spec §3).
            let recordedDraws = scoring.estimator.isSampled ? scoring.draws : 1
            if append {
                let old = try ScoresReader(path: output)
                guard old.info.estimator == scoring.estimator.rawValue else {
                    throw LocusError(file: output, object: "/@estimator", "is '\(old.info.estimator)', cannot append '\(scoring.estimator.rawValue)' scores")
                }
                guard old.info.baseFingerprint == fingerprint else {
                    throw LocusError(file: output, object: "/@base-fingerprint", "belongs to another model (\(old.info.baseFingerprint)), not \(model) (\(fingerprint))")
                }
                guard old.info.draws == Int64(recordedDraws), old.info.reduction == .sum else {
                    throw LocusError(file: output, "was made with \(old.info.draws) draws and reduction \(old.info.reduction.rawValue); append needs the same draws and sums")
                }
                guard old.tensors.map(\.name) == params.map(\.name).sorted(by: TensorName.byteOrder),
                      params.allSatisfy({ p in old.tensor(named: p.name)?.shape == p.value.shape }) else {
                    throw LocusError(file: output, "scores a different set of tensors (or shapes) than this run")
                }
                let byName = Dictionary(uniqueKeysWithValues: old.tensors.map { ($0.name, $0) })
                try scorer.resume(sums: params.map { try old.read(byName[$0.name]!) }, samples: Int(old.info.samples))
            }
            let set = try Batches(d, split: scoring.split, inputShape: m.architecture.input, classes: try engine(file: model) { try m.head(scoring.head).outFeatures }, file: data)
            let bar = ProgressBar(quiet: quiet)
            try engine(file: data) {
                try scorer.run(over: set, batchSize: scoring.batchSize, maxBatches: scoring.batches) { i, n in
                    bar.update("scoring", fraction: Double(i) / Double(n), detail: "batch \(i)/\(n)")
                }
            }
            bar.finish()
            let w = try ScoresWriter(path: output, info: .init(baseFingerprint: fingerprint, estimator: scoring.estimator.rawValue,
                                                                samples: Int64(scorer.samples), draws: Int64(recordedDraws), reduction: .sum),
                                     provenance: provenance(inputs: [.init(role: "model", path: model, fingerprint: fingerprint), .init(role: "data", path: data, fingerprint: nil)],
                                                            parameters: scoring.provenance))
            for (p, s) in zip(scorer.parameters, scorer.sums) { try w.add(name: p.name, shape: p.value.shape, values: s) }
            try w.finish()
            print("\(output): \(scoring.estimator.rawValue) scores of \(params.count) tensors over \(scorer.samples) samples")
        }
    }
}
