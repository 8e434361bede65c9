import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
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

    func run() throws {
        var r = TrainRequest(model: model, data: data, output: output)
        r.head = head; r.addHead = addHead; r.linearProbe = linearProbe; r.run = training.run
        let outcome = try training.execute(protect: protectInputs) { try r.execute(progress: $0) }
        try training.report(outcome.reports, validation: outcome.validationSplit, trailer: "\(output): \(outcome.fingerprint)")
    }
}
