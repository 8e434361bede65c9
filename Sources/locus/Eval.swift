import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Accuracy, loss and per-class accuracy of a model's heads on a dataset split.",
        usage: "locus eval <model> <data> [--head <head> ...] [--split <split>] [<options>]",
        discussion: "Example: locus eval mlp-trained.h5 digits.h5 --head digits --split test")

    @Argument(help: "Model checkpoint.") var model: String
    @Argument(help: "Dataset artifact.") var data: String
    @Option(help: "Head to evaluate (default: every head whose class count fits the data).") var head: [String] = []
    @Option(help: "Split to evaluate ('' for every sample).") var split: String = "test"
    @Option(help: "Batch size.") var batchSize: Int = 256
    @Flag(help: "Also print per-class accuracy.") var perClass = false
    @Flag(help: "Print JSON.") var json = false
    @Option(help: "Write the logits of the (single) evaluated head as a NumPy .npy file, float32 [samples, classes], in split order.")
    var logits: String?

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be ≥ 1, got \(batchSize)") }
        if logits != nil, head.count > 1 { throw ValidationError("--logits needs exactly one head; \(head.count) given with --head") }
    }

    func run() throws {
        try source.scoped {
            try protectInputs()
            var r = EvalRequest(model: model, data: data)
            r.head = head; r.split = split.isEmpty ? nil : split; r.batchSize = batchSize; r.collectLogits = logits != nil
            let outcome = try r.execute()
            if let logits, let l = outcome.logits {
                try writeAtomically(to: logits) { tmp in try NumPy.write(l.values, shape: l.shape, to: tmp) }
            }
            if json { print(try jsonText(outcome.results)); return }
            for r in outcome.results {
                print("\(r.head): accuracy \(fmt(r.accuracy)) loss \(fmt(r.loss)) on \(r.samples) samples (\(split.isEmpty ? "all" : split))")
                if perClass {
                    for (i, a) in r.perClassAccuracy.enumerated() {
                        print("  \(r.classes?[i] ?? String(i)): \(a.map { fmt($0) } ?? "no samples")")
                    }
                }
            }
        }
    }
}
