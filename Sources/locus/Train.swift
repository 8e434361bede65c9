import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model (dense) on a dataset artifact and write the trained checkpoint.",
        discussion: """
        Trains the body and the head --head on --split, evaluating on --val-split after every epoch.
        --linear-probe freezes the body and trains only the head (how task heads are fitted before sparse
        fine-tuning). --add-head creates the head first, sized for the dataset's classes.
        Optimizers follow PyTorch: sgd (momentum, Nesterov, coupled weight decay) and adamw (decoupled weight
        decay). The learning rate warms up linearly over --warmup × all steps, then follows --schedule.
        Shuffling is seeded (--seed), so runs repeat; --deterministic also pins OpenBLAS to one thread, which makes
        runs bit-identical on any machine load. A non-finite loss stops training with an error; nothing is written.

        Example: locus train mlp.h5 digits.h5 --head digits --epochs 20 --lr 1e-3 -o mlp-trained.h5
        """)

    @Argument(help: "Model checkpoint.") var model: String
    @Argument(help: "Dataset artifact.") var data: String
    @Option(name: .shortAndLong, help: "Output checkpoint (may equal MODEL; written atomically).") var output: String
    @Option(help: "Head to train.") var head: String = "default"
    @Flag(help: "Create --head for this dataset's classes if the model does not have it.") var addHead = false
    @Flag(help: "Train only the head (the body stays frozen).") var linearProbe = false
    @Option(help: "Split to train on.") var split: String = "train"
    @Option(help: "Split to evaluate on after each epoch (default: 'val' when the data has it; '' for none).") var valSplit: String?
    @Option(help: "Epochs.") var epochs: Int = 1
    @Option(help: "Batch size.") var batchSize: Int = 64
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "sgd or adamw.") var optimizer: OptimizerKind = .adamw
    @Option(help: "SGD momentum.") var momentum: Float = 0.9
    @Flag(help: "SGD with Nesterov momentum.") var nesterov = false
    @Option(help: "Weight decay (coupled for sgd, decoupled for adamw).") var weightDecay: Float = 0
    @Option(help: "cosine or constant after warm-up.") var schedule: LearningRateSchedule.Shape = .cosine
    @Option(help: "Warm-up as a fraction of all steps.") var warmup: Float = 0
    @Option(help: "Clip the global gradient norm to this value.") var clipNorm: Float?
    @Option(help: "Label smoothing ε.") var labelSmoothing: Float = 0
    @Option(help: "Seed of shuffling, dropout and new heads.") var seed: UInt64 = 0
    @Flag(help: "One BLAS thread: bit-identical results run to run.") var deterministic = false
    @Flag(help: "No progress bar.") var quiet = false
    @Flag(help: "Print the per-epoch report as JSON.") var json = false

    func run() throws {
        try reportingErrors {
            let m = try Model.load(model)
            let d = try DatasetArtifact.read(data)
            if m.heads[head] == nil {
                guard addHead else {
                    throw LocusError(file: model, "has no head '\(head)' (heads: \(m.headNames.joined(separator: ", "))); pass --add-head to create it")
                }
                try engine(file: model) { try m.addHead(head, classes: d.classes.count, classNames: d.classes, seed: seed) }
            }
            let classes = try m.head(head).outFeatures
            let input = m.architecture.input
            let train = try Batches(d, split: split, inputShape: input, classes: classes, file: data)
            let valName = valSplit ?? (d.splits["val"] != nil ? "val" : "")
            let val = valName.isEmpty ? nil : try Batches(d, split: valName, inputShape: input, classes: classes, file: data)
            var c = TrainingConfig()
            c.epochs = epochs; c.batchSize = batchSize; c.learningRate = lr; c.optimizer = optimizer; c.momentum = momentum
            c.nesterov = nesterov; c.weightDecay = weightDecay; c.schedule = schedule; c.warmupFraction = warmup
            c.clipNorm = clipNorm; c.labelSmoothing = labelSmoothing; c.seed = seed; c.trainBody = !linearProbe
            c.deterministic = deterministic
            let bar = ProgressBar(quiet: quiet)
            let reports = try engine(file: data) {
                try Training.fit(m, head: head, train: train, validation: val, config: c) { p in
                    bar.update("epoch \(p.epoch)/\(p.epochs)", fraction: Double(p.step) / Double(p.stepsPerEpoch), detail: "loss \(fmt(p.loss))")
                }
            }
            bar.finish()
            let params: [String: JSONValue] = [
                "head": .string(head), "epochs": .integer(Int64(epochs)), "batch_size": .integer(Int64(batchSize)),
                "lr": .number(Double(lr)), "optimizer": .string(optimizer.rawValue), "weight_decay": .number(Double(weightDecay)),
                "schedule": .string(schedule.rawValue), "warmup": .number(Double(warmup)), "seed": .integer(Int64(seed)),
                "linear_probe": .bool(linearProbe), "final_val_accuracy": reports.last?.validationAccuracy.map { .number($0) } ?? .null,
            ]
            let fp = try m.save(output, provenance: provenance(inputs: [.init(role: "model", path: model, fingerprint: m.sourceFingerprint),
                                                                         .init(role: "data", path: data, fingerprint: nil)], parameters: params))
            if json { print(try jsonText(reports)) } else {
                for r in reports {
                    var line = "epoch \(r.epoch): train loss \(fmt(r.trainLoss)) acc \(fmt(r.trainAccuracy))"
                    if let a = r.validationAccuracy, let l = r.validationLoss { line += ", \(valName) loss \(fmt(l)) acc \(fmt(a))" }
                    line += ", \(Int(r.samplesPerSecond)) samples/s"
                    print(line)
                }
                print("\(output): \(fp)")
            }
        }
    }
}
