import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
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

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try reportingErrors(source) {
            try protectInputs()
            let m = try Model.load(base)
            let baseFP = m.sourceFingerprint ?? ""
            let mr = try MaskReader(path: mask)
            if mr.baseFingerprint != baseFP {
                let msg = "was made from another base (\(mr.baseFingerprint)) than \(base) (\(baseFP))"
                guard force else { throw LocusError(file: mask, object: "/@base-fingerprint", msg + "; use --force to use it anyway") }
                StandardStream.error.write("locus: warning: \(mask): \(msg)\n")
            }
            let headLayer = try engine(file: base) { try m.head(head) }
            if trainHead, !headLayer.isTrainable {
                throw LocusError(file: base, object: head, "is a fixed zero-shot head (text embeddings, docs/clip.md); it is not trained — leave out --train-head")
            }
            // Mask entries ↔ parameters, all mismatches at once.
            var problems: [String] = []
            let params = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0) })
            var masks: [(Parameter, ParameterMask)] = []
            var covered = Set<String>()
            for t in mr.tensors {
                guard let p = params[t.name] else { problems.append("'\(t.name)' is not a parameter of the model"); continue }
                guard p.value.shape == t.shape else { problems.append("'\(t.name)' has shape \(t.shape), the parameter \(p.value.shape)"); continue }
                masks.append((p, ParameterMask.from(bits: try mr.read(t))))
                covered.insert(t.name)
            }
            guard problems.isEmpty else { throw LocusError(file: mask, "\(problems.count) mask tensor(s) do not fit \(base): \(problems.prefix(6).joined(separator: "; "))") }
            let headNames = Set(headLayer.parameters.map(\.name))
            if mr.absentTensors == .trainable {
                for p in m.bodyParameters where !covered.contains(p.name) { masks.append((p, .dense)) }
            }
            masks = masks.filter { !headNames.contains($0.0.name) || trainHead }
            let ones = masks.reduce(0) { n, pm in
                switch pm.1 { case .dense: n + pm.0.value.count; case .entries(let e): n + e.count; case .multiplier(let v): n + v.filter { $0 != 0 }.count }
            }
            guard ones > 0 || trainHead else { throw LocusError(file: mask, "selects no trainable entries for this model") }

            let d = try DatasetArtifact.read(data)
            let classes = headLayer.outFeatures
            let train = try Batches(d, split: training.split, inputShape: m.architecture.input, classes: classes, file: data)
            let valName = training.validationSplit(d)
            let val = valName.isEmpty ? nil : try Batches(d, split: valName, inputShape: m.architecture.input, classes: classes, file: data)
            let c = try training.config()
            let bar = training.progressBar()
            let reports = try engine(file: data) {
                try Training.fitSparse(m, head: head, train: train, validation: val, config: c, masks: masks, trainHead: trainHead) { p in
                    bar.update("epoch \(p.epoch)/\(p.epochs)", fraction: Double(p.step) / Double(p.stepsPerEpoch), detail: "loss \(fmt(p.loss))")
                }
            }
            bar.finish()
            let accuracy = reports.last?.validationAccuracy
            let maskFP = try mr.fingerprint()
            var params2 = training.parameters
            params2["optimizer"] = .string(training.optimizer == .sgd ? "sparse-sgdm" : "masked-adamw")
            params2["head"] = .string(head); params2["train_head"] = .bool(trainHead)
            params2["trainable_entries"] = .integer(Int64(ones)); params2["mask_fingerprint"] = .string(maskFP)
            if let accuracy { params2["task_accuracy"] = .number(accuracy); params2["task_split"] = .string(valName) }
            let inputs: [Provenance.Input] = [.init(role: "base", path: base, fingerprint: baseFP), .init(role: "mask", path: mask, fingerprint: maskFP),
                                              .init(role: "data", path: data, fingerprint: nil)]
            // The checkpoint and its task vector are published together or not at all.
            let ftFP = try OutputGroup.publishTogether { () throws -> String in
                let ftFP = try m.save(output, provenance: provenance(inputs: inputs, parameters: params2))
                if let taskVector {
                    var attrs = ["mask-fingerprint": maskFP, "task-head": head]
                    var numbers: [String: Double] = [:]
                    if let accuracy { numbers["task-accuracy"] = accuracy; attrs["task-split"] = valName }
                    let written = OutputGroup.pendingPath(for: output) ?? output
                    let s = try TaskArithmetic.diff(base: base, finetuned: written, output: taskVector, attributes: attrs, numbers: numbers,
                                                    provenance: provenance(inputs: inputs + [.init(role: "finetuned", path: output, fingerprint: ftFP)], parameters: params2))
                    if !training.json { print("\(taskVector): task vector, \(s.nnz) nonzero of \(s.count) entries in \(s.tensors) tensors") }
                }
                return ftFP
            }
            try training.report(reports, validation: valName, trailer: "\(output): \(ones) trainable entries, \(ftFP)")
        }
    }
}
