import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
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

    func run() throws {
        try reportingErrors(source) {
            try protectInputs()
            let m = try Model.load(model)
            let d = try DatasetArtifact.read(data)
            let names = head.isEmpty ? m.architecture.heads.filter { $0.out_features == d.classes.count }.map(\.name) : head
            guard !names.isEmpty else {
                throw LocusError(file: model, "no head has \(d.classes.count) classes like \(data); name one with --head")
            }
            if logits != nil, names.count != 1 {
                throw LocusError(file: model, "--logits needs exactly one head; choose one with --head (heads here: \(names.joined(separator: ", ")))")
            }
            var results: [Evaluation] = []
            var collected: [Float] = []
            for h in names {
                let b = try Batches(d, split: split.isEmpty ? nil : split, inputShape: m.architecture.input,
                                    classes: try engine(file: model) { try m.head(h).outFeatures }, file: data)
                results.append(try engine(file: model) {
                    try Training.evaluate(m, head: h, on: b, batchSize: batchSize, logits: logits == nil ? nil : { collected += $0.data })
                })
            }
            if let logits, let r = results.first {
                let classes = collected.count / max(r.samples, 1)
                try writeAtomically(to: logits) { tmp in try NumPy.write(collected, shape: [r.samples, classes], to: tmp) }
            }
            if json { print(try jsonText(results)); return }
            for r in results {
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
