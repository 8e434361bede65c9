import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model (dense) on a dataset artifact and write the trained checkpoint.",
        discussion: """
        Trains the body and the head --head on --split, evaluating on --val-split after every epoch. \
        --linear-probe freezes the body and trains only the head (how task heads are fitted before \
        sparse fine-tuning); --add-head first creates the head, sized for the dataset's classes. A \
        zero-shot head (docs/clip.md) is fixed: only the body trains (--linear-probe is refused).

        Optimizers follow PyTorch: sgd (momentum, Nesterov, coupled weight decay) and adamw (decoupled \
        weight decay). The learning rate warms up linearly over --warmup × all steps, then follows \
        --schedule. Shuffling is seeded (--seed); --deterministic also pins OpenBLAS to one thread, for \
        bit-identical runs. A non-finite loss stops training with an error; nothing is written.

        Example: locus train mlp.h5 digits.h5 --head digits --epochs 20 -o trained.h5
        """)

    @Argument(help: "Model checkpoint.") var model: String
    @Argument(help: "Dataset artifact.") var data: String
    @Option(name: .shortAndLong, help: "Output checkpoint (may be MODEL; written atomically).") var output: String
    @Option(help: "Head to train.") var head: String = "default"
    @Flag(help: "Create --head for the dataset's classes if missing.") var addHead = false
    @Flag(help: "Train only the head (the body stays frozen).") var linearProbe = false
    @OptionGroup var training: TrainingOptions

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try reportingErrors(source) {
            try protectInputs()
            let m = try Model.load(model)
            let d = try DatasetArtifact.read(data)
            if m.heads[head] == nil {
                guard addHead else {
                    throw LocusError(file: model, "has no head '\(head)' (heads: \(m.headNames.joined(separator: ", "))); pass --add-head to create it")
                }
                try engine(file: model) { try m.addHead(head, classes: d.classes.count, classNames: d.classes, seed: training.seed) }
            }
            if linearProbe, let h = m.heads[head], !h.isTrainable {
                throw LocusError(file: model, object: head, "is a fixed zero-shot head (docs/clip.md): --linear-probe would train nothing")
            }
            let classes = try m.head(head).outFeatures
            let input = m.architecture.input
            let train = try Batches(d, split: training.split, inputShape: input, classes: classes, file: data)
            let valName = training.validationSplit(d)
            let val = valName.isEmpty ? nil : try Batches(d, split: valName, inputShape: input, classes: classes, file: data)
            let c = try training.config(trainBody: !linearProbe)
            let bar = training.progressBar()
            let reports = try engine(file: data) {
                try Training.fit(m, head: head, train: train, validation: val, config: c) { p in
                    bar.update("epoch \(p.epoch)/\(p.epochs)", fraction: Double(p.step) / Double(p.stepsPerEpoch), detail: "loss \(fmt(p.loss))")
                }
            }
            bar.finish()
            var params = training.parameters
            params["head"] = .string(head); params["linear_probe"] = .bool(linearProbe)
            params["final_val_accuracy"] = reports.last?.validationAccuracy.map { .number($0) } ?? .null
            let fp = try m.save(output, provenance: provenance(inputs: [.init(role: "model", path: model, fingerprint: m.sourceFingerprint),
                                                                         .init(role: "data", path: data, fingerprint: nil)], parameters: params))
            try training.report(reports, validation: valName, trailer: "\(output): \(fp)")
        }
    }
}
