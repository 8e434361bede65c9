import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

/// What `train` and `finetune` share: where the data comes from, the optimizer settings, and what
/// the output's provenance records.
public struct TrainingRun {
    /// Split trained on.
    public var split = "train"
    /// Split evaluated after every epoch: nil for `val` when the data has one, "" for none.
    public var validationSplit: String? = nil
    public var config = TrainingConfig()
    /// The training settings as the provenance records them (spec §1.2).
    public var parameters: [String: JSONValue] = [:]
    /// The command that ran (provenance).
    public var command: [String] = []
    public init() {}

    func provenance(_ inputs: [Provenance.Input], _ parameters: [String: JSONValue]) -> Provenance {
        Provenance(command: command, inputs: inputs, parameters: parameters)
    }
}

/// What a training run reports.
public struct TrainingOutcome {
    public var reports: [EpochReport]
    /// The validation split used ("" for none).
    public var validationSplit: String
    /// The written checkpoint's fingerprint.
    public var fingerprint: String
}

/// `locus train`: dense training of the body and a head, or of the head alone (linear probe).
public struct TrainRequest {
    public var model: String
    public var data: String
    public var output: String
    public var head = "default"
    /// Create the head for the dataset's classes when the model has none of that name.
    public var addHead = false
    /// Train only the head (the body stays frozen).
    public var linearProbe = false
    public var run = TrainingRun()
    public init(model: String, data: String, output: String) { self.model = model; self.data = data; self.output = output }

    public func execute(progress: ((LocusEngine.Progress) -> Void)? = nil) throws -> TrainingOutcome {
        let task = try TaskData(model: model, data: data)
        let m = task.model
        if m.heads[head] == nil {
            guard addHead else {
                throw RemediableError(LocusError(file: model, "has no head '\(head)' (heads: \(m.headNames.joined(separator: ", ")))"),
                                      .use(setting: "addHead", purpose: "create it"))
            }
            try engine(file: model) { try m.addHead(head, classes: task.data.classes.count, classNames: task.data.classes, seed: run.config.seed) }
        }
        if linearProbe, let h = m.heads[head], !h.isTrainable {
            throw RemediableError(LocusError(file: model, object: head, "is a fixed zero-shot head (docs/clip.md): a linear probe would train nothing"),
                                  .leaveOut(setting: "linearProbe"))
        }
        let valName = task.validationSplit(run.validationSplit)
        let sets = try task.trainingSets(head: head, split: run.split, validation: valName)
        var config = run.config
        config.trainBody = !linearProbe
        let reports = try engine(file: data) {
            try Training.fit(m, head: head, train: sets.train, validation: sets.validation, config: config, progress: progress)
        }
        var params = run.parameters
        params["head"] = .string(head); params["linear_probe"] = .bool(linearProbe)
        params["final_val_accuracy"] = reports.last?.validationAccuracy.map { JSONValue.number($0) } ?? .null
        let fp = try m.save(output, provenance: run.provenance([.init(role: "model", path: model, fingerprint: m.sourceFingerprint),
                                                               .init(role: "data", path: data, fingerprint: nil)], params))
        return TrainingOutcome(reports: reports, validationSplit: valName, fingerprint: fp)
    }
}

/// Which entries of which parameters a mask file makes trainable for one model (mask ↔ parameter
/// matching): every mask tensor must be a parameter of the same shape, all mismatches reported at
/// once; tensors the mask leaves out are trainable or frozen as its `absent-tensors` says; the
/// task's head is dropped unless it trains too.
public struct MaskBinding {
    public var masks: [(Parameter, ParameterMask)]
    /// Trainable entries in all.
    public var ones: Int

    public static func bind(_ mask: MaskReader, to model: Model, modelPath: String, head: String, trainHead: Bool) throws -> MaskBinding {
        let headLayer = try engine(file: modelPath) { try model.head(head) }
        var problems: [String] = []
        let params = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0) })
        var masks: [(Parameter, ParameterMask)] = []
        var covered = Set<String>()
        for t in mask.tensors {
            guard let p = params[t.name] else { problems.append("'\(t.name)' is not a parameter of the model"); continue }
            guard p.value.shape == t.shape else { problems.append("'\(t.name)' has shape \(t.shape), the parameter \(p.value.shape)"); continue }
            masks.append((p, ParameterMask.from(bits: try mask.read(t))))
            covered.insert(t.name)
        }
        guard problems.isEmpty else {
            throw LocusError(file: mask.path, "\(problems.count) mask tensor(s) do not fit \(modelPath): \(problems.prefix(6).joined(separator: "; "))")
        }
        let headNames = Set(headLayer.parameters.map(\.name))
        if mask.absentTensors == .trainable {
            for p in model.bodyParameters where !covered.contains(p.name) { masks.append((p, .dense)) }
        }
        masks = masks.filter { !headNames.contains($0.0.name) || trainHead }
        let ones = masks.reduce(0) { n, pm in
            switch pm.1 { case .dense: n + pm.0.value.count; case .entries(let e): n + e.count; case .multiplier(let v): n + v.filter { $0 != 0 }.count }
        }
        return MaskBinding(masks: masks, ones: ones)
    }
}

/// `locus finetune`: sparse fine-tuning of the entries a mask selects, and the task vector.
public struct FinetuneRequest {
    public var base: String
    public var data: String
    public var mask: String
    public var output: String
    /// Also write τ = θ_ft − θ_base here (published together with the checkpoint).
    public var taskVector: String?
    public var head = "default"
    public var trainHead = false
    /// Use a mask made from another base (with a warning).
    public var force = false
    public var run = TrainingRun()
    public init(base: String, data: String, mask: String, output: String) {
        self.base = base; self.data = data; self.mask = mask; self.output = output
    }

    public struct Outcome {
        public var training: TrainingOutcome
        public var trainableEntries: Int
        public var taskVector: TaskArithmetic.Summary?
    }

    public func execute(warn: (String) -> Void = { _ in }, progress: ((LocusEngine.Progress) -> Void)? = nil) throws -> Outcome {
        let m = try Model.load(base)
        let baseFP = m.sourceFingerprint ?? ""
        let mr = try MaskReader(path: mask)
        if mr.baseFingerprint != baseFP {
            let msg = "was made from another base (\(mr.baseFingerprint)) than \(base) (\(baseFP))"
            guard force else { throw RemediableError(LocusError(file: mask, object: "/@base-fingerprint", msg), .use(setting: "force", purpose: "use it anyway")) }
            warn("\(mask): \(msg)")
        }
        let headLayer = try engine(file: base) { try m.head(head) }
        if trainHead, !headLayer.isTrainable {
            throw RemediableError(LocusError(file: base, object: head, "is a fixed zero-shot head (text embeddings, docs/clip.md); it is not trained"),
                                  .leaveOut(setting: "trainHead"))
        }
        let binding = try MaskBinding.bind(mr, to: m, modelPath: base, head: head, trainHead: trainHead)
        guard binding.ones > 0 || trainHead else { throw LocusError(file: mask, "selects no trainable entries for this model") }

        let task = TaskData(model: m, modelPath: base, data: try DatasetArtifact.read(data), dataPath: data)
        let valName = task.validationSplit(run.validationSplit)
        let sets = try task.trainingSets(head: head, split: run.split, validation: valName)
        let reports = try engine(file: data) {
            try Training.fitSparse(m, head: head, train: sets.train, validation: sets.validation, config: run.config,
                                   masks: binding.masks, trainHead: trainHead, progress: progress)
        }
        let accuracy = reports.last?.validationAccuracy
        let maskFP = try mr.fingerprint()
        var params = run.parameters
        params["optimizer"] = .string(run.config.optimizer == .sgd ? "sparse-sgdm" : "masked-adamw")
        params["head"] = .string(head); params["train_head"] = .bool(trainHead)
        params["trainable_entries"] = .integer(Int64(binding.ones)); params["mask_fingerprint"] = .string(maskFP)
        if let accuracy { params["task_accuracy"] = .number(accuracy); params["task_split"] = .string(valName) }
        let inputs: [Provenance.Input] = [.init(role: "base", path: base, fingerprint: baseFP), .init(role: "mask", path: mask, fingerprint: maskFP),
                                          .init(role: "data", path: data, fingerprint: nil)]
        // The checkpoint and its task vector are published together or not at all.
        var summary: TaskArithmetic.Summary?
        let ftFP = try OutputGroup.publishTogether { () throws -> String in
            let ftFP = try m.save(output, provenance: run.provenance(inputs, params))
            if let taskVector {
                var attrs = ["mask-fingerprint": maskFP, "task-head": head]
                var numbers: [String: Double] = [:]
                if let accuracy { numbers["task-accuracy"] = accuracy; attrs["task-split"] = valName }
                let written = OutputGroup.pendingPath(for: output) ?? output
                summary = try TaskArithmetic.diff(base: base, finetuned: written, output: taskVector, attributes: attrs, numbers: numbers,
                                                  provenance: run.provenance(inputs + [.init(role: "finetuned", path: output, fingerprint: ftFP)], params))
            }
            return ftFP
        }
        return Outcome(training: TrainingOutcome(reports: reports, validationSplit: valName, fingerprint: ftFP),
                       trainableEntries: binding.ones, taskVector: summary)
    }
}
