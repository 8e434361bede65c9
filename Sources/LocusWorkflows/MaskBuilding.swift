import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

/// `locus mask`: a bitpacked mask of trainable entries, by TaLoS calibration on data, from a
/// stored scores file, or a random / magnitude baseline with the same count (docs/talos.md §Mask
/// calibration).
public struct MaskRequest {
    public enum Method: String, CaseIterable, Sendable { case talos, random, magnitude }
    public var model: String
    /// Dataset artifact (TaLoS calibration only).
    public var data: String?
    public var output: String
    public var method: Method = .talos
    /// Trainable fraction of the scored entries, in (0, 1].
    public var density: Double
    public var rounds = 4
    public var keep: KeepRule = .lowest
    public var scope: MaskScope = .global
    /// Select once from this scores file (no calibration rounds).
    public var fromScores: String?
    public var absentTensors: AbsentTensors = .frozen
    /// Select the largest |τ| of this task vector of the model instead (LoTA; `MaskOperations`).
    public var fromTaskVector: String?
    public var set = ScoringSet()
    public var command: [String] = []
    public init(model: String, output: String, density: Double) { self.model = model; self.output = output; self.density = density }

    public struct Outcome { public var ones: Int; public var total: Int; public var tensors: Int }

    /// `scoring(batch, batches)` during each scoring pass; `round` after each calibration round.
    public func execute(scoring: ((Int, Int) -> Void)? = nil, round: ((Calibration.Round, Int) -> Void)? = nil) throws -> Outcome {
        let d = density
        if let fromTaskVector { return try maskFromTaskVector(fromTaskVector) }
        let m = try Model.load(model)
        let params = try set.parameters(m)
        guard !params.isEmpty else { throw RequestError("exclude", "no parameters of \(model) are left to mask") }
        var selected: [[Bool]]
        var params2 = params
        var info: [String: JSONValue] = ["method": .string(method.rawValue), "density": .number(d), "keep": .string(keep.rawValue), "scope": .string(scope.rawValue)]
        var inputs: [Provenance.Input] = [.init(role: "model", path: model, fingerprint: m.sourceFingerprint)]
        if let fromScores {
            let s = try ScoresReader(path: fromScores)
            guard s.info.baseFingerprint == m.sourceFingerprint else {
                throw LocusError(file: fromScores, object: "/@base-fingerprint", "belongs to another model than \(model)")
            }
            let byName = Dictionary(uniqueKeysWithValues: s.tensors.map { ($0.name, $0) })
            params2 = params.filter { byName[$0.name] != nil }
            for p in params2 where byName[p.name]!.shape != p.value.shape {
                throw LocusError(file: fromScores, object: byName[p.name]!.objectPath, "has shape \(byName[p.name]!.shape), the model's parameter \(p.value.shape)")
            }
            guard !params2.isEmpty else { throw LocusError(file: fromScores, "scores none of the model's scored tensors") }
            let scores = try params2.map { try s.read(byName[$0.name]!) }
            if let (t, _) = scores.enumerated().first(where: { $0.element.contains { !$0.isFinite } }) {
                throw LocusError(file: fromScores, object: "/tensors/\(params2[t].name)", "holds non-finite scores")
            }
            selected = Selection.select(scores: scores, eligible: nil, density: d, keep: keep, scope: scope)
            inputs.append(.init(role: "scores", path: fromScores, fingerprint: s.info.baseFingerprint))
            info["from_scores"] = .string(fromScores)
        } else {
            switch method {
            case .random:
                selected = Selection.random(shapes: params.map(\.value.count), density: d, scope: scope, seed: set.seed)
                info["seed"] = .integer(Int64(set.seed))
            case .magnitude:
                selected = Selection.select(scores: params.map { $0.value.data.map(abs) }, eligible: nil, density: d, keep: keep, scope: scope)
            case .talos:
                guard let data else { throw RequestError("data", "TaLoS calibration needs a dataset (or stored scores)") }
                let task = TaskData(model: m, modelPath: model, data: try DatasetArtifact.read(data), dataPath: data)
                let batches = try task.batches(head: set.head, split: set.split)
                var o = Calibration.Options(density: d); o.rounds = rounds; o.keep = keep; o.scope = scope
                let result = try engine(file: data) {
                    try Calibration.run(parameters: params, options: o, score: {
                        let scorer = try set.scorer(m, parameters: params, file: model)
                        try scorer.run(over: batches, batchSize: set.batchSize, maxBatches: set.batches) { i, n in scoring?(i, n) }
                        return scorer.sums
                    }, progress: { r in round?(r, o.rounds) })
                }
                selected = result.mask
                for (k, v) in set.provenance { info[k] = v }
                info["rounds"] = .integer(Int64(rounds))
                inputs.append(.init(role: "data", path: data, fingerprint: nil))
            }
        }
        let w = try MaskWriter(path: output, baseFingerprint: m.sourceFingerprint ?? "", absentTensors: absentTensors,
                               provenance: Provenance(command: command, inputs: inputs, parameters: info))
        for (p, bits) in zip(params2, selected) { try w.add(name: p.name, shape: p.value.shape, bits: bits) }
        try w.finish()
        let ones = selected.reduce(0) { $0 + $1.filter { $0 }.count }, total = params2.reduce(0) { $0 + $1.value.count }
        return Outcome(ones: ones, total: total, tensors: params2.count)
    }

    /// The top-|τ| mask of a task vector made from `model`.
    func maskFromTaskVector(_ tv: String) throws -> Outcome {
        let fingerprint = try openCheckpoint(path: model).fingerprint
        let base = try TaskVectorReader(path: tv).baseFingerprint
        guard base == fingerprint else {
            throw LocusError(file: tv, object: "/@base-fingerprint", "is \(base), expected \(fingerprint): it was not made from \(model)")
        }
        let s = try MaskOperations.fromTaskVector(tv, density: density, scope: scope == .global ? .global : .local, output: output,
                                                  provenance: Provenance(command: command, inputs: [.init(role: "model", path: model, fingerprint: fingerprint)],
                                                                         parameters: ["method": .string("task-vector-magnitude")]))
        return Outcome(ones: s.ones, total: s.count, tensors: s.tensors)
    }
}
