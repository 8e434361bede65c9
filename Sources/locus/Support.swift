import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
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

/// Engine errors become LocusErrors about the file that caused them.
func engine<R>(file: String, _ body: () throws -> R) throws -> R {
    do { return try body() } catch let e as EngineError { throw LocusError(file: file, e.description) }
}

/// A one-line account of a JSON decoding error.
func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, let ctx): return "missing key '\(key.stringValue)' at \(path(ctx.codingPath))"
    case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx): return "\(ctx.debugDescription) at \(path(ctx.codingPath))"
    case DecodingError.dataCorrupted(let ctx): return "invalid JSON (\(ctx.debugDescription)) at \(path(ctx.codingPath))"
    default: return "\(error)"
    }
}
private func path(_ keys: [any CodingKey]) -> String { keys.isEmpty ? "the top level" : keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }

func fmt(_ x: Double, _ digits: Int = 4) -> String {
    let p = pow(10.0, Double(digits))
    return String((x * p).rounded() / p)
}

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
    @Flag(help: "One BLAS thread: bit-identical results run to run.") var deterministic = false
    @Flag(help: "No progress bar.") var quiet = false
    @Flag(help: "Print the per-epoch report as JSON.") var json = false

    func config(trainBody: Bool = true) throws -> TrainingConfig {
        guard dampening >= 0, dampening <= 1 else { throw LocusError(file: "--dampening", "must be in [0, 1], got \(dampening)") }
        var c = TrainingConfig()
        c.epochs = epochs; c.batchSize = batchSize; c.learningRate = lr; c.optimizer = optimizer; c.momentum = momentum
        c.dampening = dampening; c.nesterov = nesterov; c.weightDecay = weightDecay; c.schedule = schedule
        c.warmupFraction = warmup; c.clipNorm = clipNorm; c.labelSmoothing = labelSmoothing; c.seed = seed
        c.trainBody = trainBody; c.deterministic = deterministic
        return c
    }

    /// The validation split to use: the one asked for, else 'val' when the data has one.
    func validationSplit(_ d: LabelledData) -> String { valSplit ?? (d.splits["val"] != nil ? "val" : "") }

    var parameters: [String: JSONValue] {
        ["epochs": .integer(Int64(epochs)), "batch_size": .integer(Int64(batchSize)), "lr": .number(Double(lr)),
         "optimizer": .string(optimizer.rawValue), "momentum": .number(Double(momentum)), "dampening": .number(Double(dampening)),
         "nesterov": .bool(nesterov), "weight_decay": .number(Double(weightDecay)), "schedule": .string(schedule.rawValue),
         "warmup": .number(Double(warmup)), "clip_norm": clipNorm.map { .number(Double($0)) } ?? .null,
         "label_smoothing": .number(Double(labelSmoothing)), "seed": .integer(Int64(seed)), "deterministic": .bool(deterministic)]
    }

    func progressBar() -> ProgressBar { ProgressBar(quiet: quiet) }

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

/// A model description from a JSON file (spec §2.1) or from a Locus checkpoint's /architecture, validated.
func loadArchitecture(_ path: String) throws -> Architecture {
    let text: String
    guard let bytes = FileManager.default.contents(atPath: path) else { throw LocusError(file: path, "cannot read the architecture file") }
    if !bytes.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A]) {   // not HDF5: a JSON file
        guard let t = String(data: bytes, encoding: .utf8) else { throw LocusError(file: path, "is neither UTF-8 JSON nor an HDF5 checkpoint") }
        text = t
    } else {
        guard let t = try CheckpointReader(path: path).architecture() else {
            throw LocusError(file: path, object: "/architecture", "the checkpoint has no model description")
        }
        text = t
    }
    let decoded: Architecture
    do { decoded = try JSONDecoder().decode(Architecture.self, from: Data(text.utf8)) } catch {
        throw LocusError(file: path, "is not an architecture description (spec/FORMAT.md §2.1): \(describe(error))")
    }
    return try engine(file: path) { try decoded.validate(); return decoded }
}
