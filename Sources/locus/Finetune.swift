import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sparse fine-tuning: train only the entries a mask selects, and optionally write the task vector.",
        discussion: """
        Optimizers (--optimizer):
          sgd    SparseSGDM with the seed notebook's exact rule: d = g + λp; d ⊙= m; buf = d (first step) or
                 μ·buf + (1−δ)·d; buf ⊙= m; d = d + μ·buf (Nesterov) or buf; p −= lr·d.
          adamw  masked AdamW as TaLoS's AdaptW: moments from the unmasked gradient; the update and the decoupled
                 weight decay are multiplied by the mask.
        Entries whose mask bit is 0 keep their base values bit for bit. Tensors with an all-zero mask get no
        optimizer state; below 50 % density the optimizer keeps state for, and loops over, the trainable entries
        only, so a step costs O(ones) (the backward pass itself stays dense). Tensors the mask file does not list
        follow its absent-tensors attribute (frozen or trainable).
        The head: by default the task's head (--head) stays frozen — it must already exist, e.g. fitted with
        `locus train --linear-probe --add-head`. That is the TaLoS / task-arithmetic protocol: the task vector then
        describes only the shared body, so vectors of different tasks can be added, while each task keeps its
        own head. --train-head also trains the head (densely); the head is then part of the task vector.
        The fine-tuned checkpoint records the base and mask fingerprints, the hyper-parameters and the task's
        accuracy on --val-split; --task-vector also writes τ = θ_ft − θ_base (as `locus diff` would) with them.

        Example: locus finetune base.h5 task.h5 --mask mask.h5 --head task --epochs 3 --lr 1e-3 -o ft.h5 --task-vector tau.h5
        """)

    @Argument(help: "Base model checkpoint.") var base: String
    @Argument(help: "Dataset artifact of the task.") var data: String
    @Option(help: "Mask file (1 = trainable) made from BASE.") var mask: String
    @Option(name: .shortAndLong, help: "Output fine-tuned checkpoint.") var output: String
    @Option(help: "Also write the task vector here.") var taskVector: String?
    @Option(help: "The task's head.") var head: String = "default"
    @Flag(help: "Train the head too (densely) instead of keeping it frozen.") var trainHead = false
    @Flag(help: "Use the mask even though it was made from another base.") var force = false
    @Option(help: "Split to train on.") var split: String = "train"
    @Option(help: "Split for the task's own accuracy (default 'val' when present).") var valSplit: String?
    @Option(help: "Epochs.") var epochs: Int = 1
    @Option(help: "Batch size.") var batchSize: Int = 64
    @Option(help: "Peak learning rate.") var lr: Float = 1e-3
    @Option(help: "sgd (SparseSGDM) or adamw (masked AdamW).") var optimizer: OptimizerKind = .adamw
    @Option(help: "Momentum (sgd).") var momentum: Float = 0.9
    @Option(help: "Dampening (sgd).") var dampening: Float = 0
    @Flag(help: "Nesterov momentum (sgd).") var nesterov = false
    @Option(help: "Weight decay.") var weightDecay: Float = 0
    @Option(help: "cosine or constant after warm-up.") var schedule: LearningRateSchedule.Shape = .cosine
    @Option(help: "Warm-up as a fraction of all steps.") var warmup: Float = 0
    @Option(help: "Clip the global gradient norm.") var clipNorm: Float?
    @Option(help: "Label smoothing ε.") var labelSmoothing: Float = 0
    @Option(help: "Seed of shuffling and dropout.") var seed: UInt64 = 0
    @Flag(help: "One BLAS thread: bit-identical results.") var deterministic = false
    @Flag(help: "No progress bar.") var quiet = false
    @Flag(help: "Print the per-epoch report as JSON.") var json = false

    func run() throws {
        try reportingErrors {
            let m = try Model.load(base)
            let baseFP = m.sourceFingerprint ?? ""
            let mr = try MaskReader(path: mask)
            if mr.baseFingerprint != baseFP {
                let msg = "was made from another base (\(mr.baseFingerprint)) than \(base) (\(baseFP))"
                guard force else { throw LocusError(file: mask, object: "/@base-fingerprint", msg + "; use --force to use it anyway") }
                FileHandle.standardError.write("locus: warning: \(mask): \(msg)\n")
            }
            let headLayer = try engine(file: base) { try m.head(head) }
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
            let train = try Batches(d, split: split, inputShape: m.architecture.input, classes: classes, file: data)
            let valName = valSplit ?? (d.splits["val"] != nil ? "val" : "")
            let val = valName.isEmpty ? nil : try Batches(d, split: valName, inputShape: m.architecture.input, classes: classes, file: data)
            var c = TrainingConfig()
            c.epochs = epochs; c.batchSize = batchSize; c.learningRate = lr; c.optimizer = optimizer; c.momentum = momentum
            c.nesterov = nesterov; c.weightDecay = weightDecay; c.schedule = schedule; c.warmupFraction = warmup
            c.clipNorm = clipNorm; c.labelSmoothing = labelSmoothing; c.seed = seed; c.deterministic = deterministic
            guard dampening >= 0, dampening <= 1 else { throw LocusError(file: output, "--dampening must be in [0, 1]") }
            c.dampening = dampening
            let bar = ProgressBar(quiet: quiet)
            let reports = try engine(file: data) {
                try Training.fitSparse(m, head: head, train: train, validation: val, config: c, masks: masks, trainHead: trainHead) { p in
                    bar.update("epoch \(p.epoch)/\(p.epochs)", fraction: Double(p.step) / Double(p.stepsPerEpoch), detail: "loss \(fmt(p.loss))")
                }
            }
            bar.finish()
            let accuracy = reports.last?.validationAccuracy
            let maskFP = try mr.fingerprint()
            var params2: [String: JSONValue] = [
                "head": .string(head), "train_head": .bool(trainHead), "epochs": .integer(Int64(epochs)), "batch_size": .integer(Int64(batchSize)),
                "lr": .number(Double(lr)), "optimizer": .string(optimizer == .sgd ? "sparse-sgdm" : "masked-adamw"), "momentum": .number(Double(momentum)),
                "dampening": .number(Double(dampening)), "nesterov": .bool(nesterov), "weight_decay": .number(Double(weightDecay)),
                "schedule": .string(schedule.rawValue), "warmup": .number(Double(warmup)), "seed": .integer(Int64(seed)),
                "trainable_entries": .integer(Int64(ones)), "mask_fingerprint": .string(maskFP),
            ]
            if let accuracy { params2["task_accuracy"] = .number(accuracy); params2["task_split"] = .string(valName) }
            let inputs: [Provenance.Input] = [.init(role: "base", path: base, fingerprint: baseFP), .init(role: "mask", path: mask, fingerprint: maskFP),
                                              .init(role: "data", path: data, fingerprint: nil)]
            let ftFP = try m.save(output, provenance: provenance(inputs: inputs, parameters: params2))
            if let taskVector {
                var attrs = ["mask-fingerprint": maskFP, "task-head": head]
                var numbers: [String: Double] = [:]
                if let accuracy { numbers["task-accuracy"] = accuracy; attrs["task-split"] = valName }
                let s = try TaskArithmetic.diff(base: base, finetuned: output, output: taskVector, attributes: attrs, numbers: numbers,
                                                provenance: provenance(inputs: inputs + [.init(role: "finetuned", path: output, fingerprint: ftFP)], parameters: params2))
                if !json { print("\(taskVector): task vector, \(s.nnz) nonzero of \(s.count) entries in \(s.tensors) tensors") }
            }
            if json { print(try jsonText(reports)) } else {
                for r in reports {
                    var line = "epoch \(r.epoch): train loss \(fmt(r.trainLoss)) acc \(fmt(r.trainAccuracy))"
                    if let a = r.validationAccuracy, let l = r.validationLoss { line += ", \(valName) loss \(fmt(l)) acc \(fmt(a))" }
                    print(line + ", \(Int(r.samplesPerSecond)) samples/s")
                }
                print("\(output): \(ones) trainable entries, \(ftFP)")
            }
        }
    }
}
