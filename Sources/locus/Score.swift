import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows

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

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be ≥ 1, got \(batchSize)") }
        guard draws >= 1 else { throw ValidationError("--draws must be ≥ 1, got \(draws)") }
        if let batches, batches < 1 { throw ValidationError("--batches must be ≥ 1, got \(batches)") }
        if let exclude, (try? NSRegularExpression(pattern: exclude)) == nil { throw ValidationError("--exclude '\(exclude)' is not a regular expression") }
    }

    var set: ScoringSet {
        var s = ScoringSet()
        s.estimator = estimator; s.head = head; s.split = split; s.batches = batches; s.batchSize = batchSize
        s.draws = draws; s.seed = seed; s.exclude = exclude
        return s
    }
}

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
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
        try source.scoped {
            try protectInputs()
            var r = ScoreRequest(model: model, data: data, output: output)
            r.set = scoring.set; r.append = append; r.command = ["locus"] + Array(CommandLine.arguments.dropFirst())
            let bar = ProgressBar(quiet: quiet)
            let outcome = try r.execute { i, n in bar.update("scoring", fraction: Double(i) / Double(n), detail: "batch \(i)/\(n)") }
            bar.finish()
            print("\(output): \(scoring.estimator.rawValue) scores of \(outcome.tensors) tensors over \(outcome.samples) samples")
        }
    }
}
