import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge
import LocusWorkflows

struct FinetuneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Sparse fine-tuning: train only the entries a mask selects, and optionally write the task vector.",
        discussion: """
        Optimizers: sgd is SparseSGDM, adamw masked AdamW (TaLoS's AdaptW); docs/talos.md gives both. \
        Entries whose mask bit is 0 keep their base values bit for bit; below 50 % density the optimizer \
        keeps state for the trainable entries only, so a step costs O(ones) (the backward pass stays \
        dense).

        The task's head (--head) stays frozen and must exist (e.g. `locus train --linear-probe \
        --add-head`), so task vectors describe only the shared body and add up across tasks (TaLoS / \
        task arithmetic); --train-head trains it too, densely. A zero-shot head is fixed. The output \
        records base and mask fingerprints, hyper-parameters and --val-split accuracy; --task-vector \
        also writes τ = θ_ft − θ_base.

        Example: locus finetune base.h5 task.h5 --mask m.h5 --head task -o ft.h5
        """)

    @Argument(help: "Base model checkpoint.") var base: String
    @Argument(help: "Dataset artifact of the task.") var data: String
    @Option(help: "Mask file (1 = trainable) made from BASE.") var mask: String
    @Option(name: .shortAndLong, help: "Output fine-tuned checkpoint.") var output: String
    @Option(help: ArgumentHelp("Also write the task vector here.", valueName: "file")) var taskVector: String?
    @Option(help: "The task's head.") var head: String = "default"
    @Flag(help: "Train the head too (densely).") var trainHead = false
    @Flag(help: "Use a mask made from another base.") var force = false
    @OptionGroup var training: TrainingOptions

    func run() throws {
        var r = FinetuneRequest(base: base, data: data, mask: mask, output: output)
        r.taskVector = taskVector; r.head = head; r.trainHead = trainHead; r.force = force; r.run = training.run
        let outcome = try training.execute(protect: protectInputs) { progress in
            try r.execute(warn: { StandardStream.error.write("locus: warning: \($0)\n") }, progress: progress)
        }
        if let taskVector, let s = outcome.taskVector, !training.json {
            print("\(taskVector): task vector, \(s.nnz) nonzero of \(s.count) entries in \(s.tensors) tensors")
        }
        try training.report(outcome.training.reports, validation: outcome.training.validationSplit,
                            trailer: "\(output): \(outcome.trainableEntries) trainable entries, \(outcome.training.fingerprint)")
    }
}
