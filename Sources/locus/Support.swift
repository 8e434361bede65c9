import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows
#if canImport(Glibc)
import Glibc
#endif

/// Comma-separated integers, e.g. `1,28,28`.
struct IntList: ExpressibleByArgument, CustomStringConvertible {
    var values: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil && $0! > 0 }) else { return nil }
        values = parts.map { $0! }
    }
    init(_ v: [Int]) { values = v }
    var description: String { values.map(String.init).joined(separator: ",") }
}

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Shape: ExpressibleByArgument {}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and not --quiet.
struct ProgressBar {
    let enabled: Bool
    init(quiet: Bool) { enabled = !quiet && isatty(2) != 0 }

    func update(_ label: String, fraction: Double, detail: String) {
        guard enabled else { return }
        let width = 30, filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        StandardStream.error.write("\r\(label) \(bar) \(Int(fraction * 100))% \(detail)\u{1B}[K")
    }
    func finish() { if enabled { StandardStream.error.write("\r\u{1B}[K") } }
}

func provenance(inputs: [Provenance.Input], parameters: [String: JSONValue]) -> Provenance {
    Provenance(command: ["locus"] + Array(CommandLine.arguments.dropFirst()), inputs: inputs, parameters: parameters)
}

/// A one-line account of a JSON or YAML decoding error.
func describe(_ error: any Error) -> String { ArchitectureDescription.describeDecoding(error) }

/// The training options `train` and `finetune` share.
struct TrainingOptions: ParsableArguments {
    @Option(help: "Split to train on.") var split: String = "train"
    @Option(help: ArgumentHelp("Split evaluated each epoch (val if any; '' for none).", valueName: "split")) var valSplit: String?
    @Option(help: "Epochs.") var epochs: Int = 1
    @Option(help: ArgumentHelp("Batch size.", valueName: "n")) var batchSize: Int = 64
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "Optimizer.") var optimizer: OptimizerKind = .adamw
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Option(help: "SGD dampening.") var dampening: Float = 0
    @Flag(help: "SGD with Nesterov momentum.") var nesterov = false
    @Option(help: ArgumentHelp("Weight decay.", valueName: "wd")) var weightDecay: Float = 0
    @Option(help: "LR decay.") var schedule: LearningRateSchedule.Shape = .cosine
    @Option(help: "Warm-up as a fraction of all steps.") var warmup: Float = 0
    @Option(help: "Clip the global gradient norm to this value.") var clipNorm: Float?
    @Option(help: ArgumentHelp("Label smoothing ε.", valueName: "ε")) var labelSmoothing: Float = 0
    @Option(help: "Seed of shuffling, dropout and new heads.") var seed: UInt64 = 0
    @Flag(help: "One engine thread (the same bits as two, slower).") var deterministic = false
    @Flag(help: "No progress bar.") var quiet = false
    @Flag(help: "Print the per-epoch report as JSON.") var json = false
    /// How the checkpoints are read (train and finetune read one model the same way).
    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func validate() throws {
        guard dampening >= 0, dampening <= 1 else { throw ValidationError("--dampening must be in [0, 1], got \(dampening)") }
        if let clipNorm, !(clipNorm > 0) { throw ValidationError("--clip-norm must be > 0, got \(clipNorm)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be > 0, got \(lr)") }
        guard momentum >= 0 else { throw ValidationError("--momentum must be ≥ 0, got \(momentum)") }
        guard weightDecay >= 0 else { throw ValidationError("--weight-decay must be ≥ 0, got \(weightDecay)") }
        guard (0...1).contains(labelSmoothing) else { throw ValidationError("--label-smoothing must be in [0, 1], got \(labelSmoothing)") }
        guard (0...1).contains(warmup) else { throw ValidationError("--warmup must be a fraction in [0, 1], got \(warmup)") }
    }

    /// The run: split, validation split, optimizer settings and what the provenance records.
    var run: TrainingRun {
        var r = TrainingRun()
        r.split = split; r.validationSplit = valSplit; r.config = config; r.parameters = parameters
        r.command = ["locus"] + Array(CommandLine.arguments.dropFirst())
        return r
    }

    var config: TrainingConfig {
        var c = TrainingConfig()
        c.epochs = epochs; c.batchSize = batchSize; c.learningRate = lr; c.optimizer = optimizer; c.momentum = momentum
        c.dampening = dampening; c.nesterov = nesterov; c.weightDecay = weightDecay; c.schedule = schedule
        c.warmupFraction = warmup; c.clipNorm = clipNorm; c.labelSmoothing = labelSmoothing; c.seed = seed
        c.deterministic = deterministic
        return c
    }

    var parameters: [String: JSONValue] {
        ["epochs": .integer(Int64(epochs)), "batch_size": .integer(Int64(batchSize)), "lr": .number(Double(lr)),
         "optimizer": .string(optimizer.rawValue), "momentum": .number(Double(momentum)), "dampening": .number(Double(dampening)),
         "nesterov": .bool(nesterov), "weight_decay": .number(Double(weightDecay)), "schedule": .string(schedule.rawValue),
         "warmup": .number(Double(warmup)), "clip_norm": clipNorm.map { .number(Double($0)) } ?? .null,
         "label_smoothing": .number(Double(labelSmoothing)), "seed": .integer(Int64(seed)), "deterministic": .bool(deterministic)]
    }

    func progressBar() -> ProgressBar { ProgressBar(quiet: quiet) }

    /// Runs a training request: inside the reading options' scope, after `protect` (the command's
    /// input protection), with the epoch progress bar drawn from the request's progress reports.
    func execute<R>(protect: () throws -> Void, _ request: (@escaping (LocusEngine.Progress) -> Void) throws -> R) throws -> R {
        try source.scoped {
            try protect()
            let bar = progressBar()
            let outcome = try request { p in
                bar.update("epoch \(p.epoch)/\(p.epochs)", fraction: Double(p.step) / Double(p.stepsPerEpoch), detail: "loss \(fmt(p.loss))")
            }
            bar.finish()
            return outcome
        }
    }

    func report(_ reports: [EpochReport], validation: String, trailer: String) throws {
        if json { print(try jsonText(reports)); return }
        for r in reports {
            var line = "epoch \(r.epoch): train loss \(fmt(r.trainLoss)) acc \(fmt(r.trainAccuracy))"
            if let a = r.validationAccuracy, let l = r.validationLoss { line += ", \(validation) loss \(fmt(l)) acc \(fmt(a))" }
            print(line + ", \(Int(r.samplesPerSecond)) samples/s")
        }
        print(trailer)
    }
}
