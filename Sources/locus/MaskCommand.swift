import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

extension KeepRule: ExpressibleByArgument {}
extension MaskScope: ExpressibleByArgument {}

struct MaskCommand: ParsableCommand {
    enum Method: String, ExpressibleByArgument, CaseIterable { case talos, random, magnitude }

    static let configuration = CommandConfiguration(
        commandName: "mask",
        abstract: "A mask of trainable parameters (1 = fine-tuned): TaLoS or a baseline.",
        discussion: """
        --method talos calibrates on DATA in --rounds rounds with target densities d^(r/R); \
        entries that drop out are scaled by 0.1 and never come back (docs/talos.md). --keep lowest \
        (TaLoS) keeps the least sensitive entries, highest makes pruning masks. --from-scores \
        selects once from scores; --method random | magnitude are baselines; --from-task-vector \
        takes the largest |τ| of a task vector of MODEL (LoTA; Panda et al., 2024, §3). Ties go by \
        position: exactly ⌊density · n⌋ ones (per tensor with --scope local). Unscored tensors get \
        no entry (--absent-tensors). `locus mask-set` combines masks.

        Examples:
          locus mask model.h5 task.h5 --head task --density 0.1 -o mask.h5
          locus mask model.h5 --from-task-vector tau.h5 --density 0.05 -o mask.h5
        """)

    @Argument(help: "Model checkpoint.") var model: String
    @Argument(help: "Dataset artifact (talos calibration only).") var data: String?
    @Option(name: .shortAndLong, help: "Output mask file.") var output: String
    @Option(help: "talos, random or magnitude.") var method: Method = .talos
    @Option(help: ArgumentHelp("Trainable fraction of the scored entries, in (0, 1].", valueName: "d")) var density: Double?
    @Option(help: ArgumentHelp("1 − density (give one of the two).", valueName: "s")) var sparsity: Double?
    @Option(help: "Calibration rounds.") var rounds: Int = 4
    @Option(help: "lowest (TaLoS) or highest.") var keep: KeepRule = .lowest
    @Option(help: "Threshold.") var scope: MaskScope = .global
    @Option(help: ArgumentHelp("Select once from this scores file (no rounds).", valueName: "file")) var fromScores: String?
    @Option(help: ArgumentHelp("Tensors without a mask entry.", valueName: "rule")) var absentTensors: AbsentTensors = .frozen
    @Option(help: ArgumentHelp("Select the largest |τ| of this task vector of MODEL (LoTA).", valueName: "file"))
    var fromTaskVector: String?
    @OptionGroup var scoring: ScoringSetOptions
    @Flag(help: "No progress output.") var quiet = false

    func targetDensity() throws -> Double {
        switch (density, sparsity) {
        case (let d?, nil): guard d > 0, d <= 1 else { throw LocusError(file: output, "--density must be in (0, 1], got \(d)") }; return d
        case (nil, let s?): guard s >= 0, s < 1 else { throw LocusError(file: output, "--sparsity must be in [0, 1), got \(s)") }; return ((1 - s) * 1e12).rounded() / 1e12   // 1 − 0.9 is 0.0999…98 in binary; keep ⌊d·n⌋ what users expect
        case (nil, nil): throw LocusError(file: output, "give --density (fraction trainable) or --sparsity")
        default: throw LocusError(file: output, "give only one of --density and --sparsity")
        }
    }

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try reportingErrors(source) {
            try protectInputs()
            let d = try targetDensity()
            if let fromTaskVector { return try maskFromTaskVector(fromTaskVector, density: d) }
            let m = try Model.load(model)
            let params = try scoring.parameters(m)
            guard !params.isEmpty else { throw LocusError(file: model, "no parameters left to mask after --exclude") }
            var selected: [[Bool]]
            var params2 = params
            var info: [String: JSONValue] = ["method": .string(method.rawValue), "density": .number(d), "keep": .string(keep.rawValue), "scope": .string(scope.rawValue)]
            var inputs: [Provenance.Input] = [.init(role: "model", path: model, fingerprint: m.sourceFingerprint)]
            if let fromScores {
                guard method == .talos else { throw LocusError(file: fromScores, "--from-scores selects by stored scores; it cannot be combined with --method \(method.rawValue)") }
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
                    selected = Selection.random(shapes: params.map(\.value.count), density: d, scope: scope, seed: scoring.seed)
                    info["seed"] = .integer(Int64(scoring.seed))
                case .magnitude:
                    selected = Selection.select(scores: params.map { $0.value.data.map(abs) }, eligible: nil, density: d, keep: keep, scope: scope)
                case .talos:
                    guard let data else { throw LocusError(file: output, "TaLoS calibration needs DATA (or use --from-scores)") }
                    let ds = try DatasetArtifact.read(data)
                    let set = try Batches(ds, split: scoring.split, inputShape: m.architecture.input,
                                          classes: try engine(file: model) { try m.head(scoring.head).outFeatures }, file: data)
                    var o = Calibration.Options(density: d); o.rounds = rounds; o.keep = keep; o.scope = scope
                    let bar = ProgressBar(quiet: quiet)
                    let result = try engine(file: data) {
                        try Calibration.run(parameters: params, options: o, score: {
                            let scorer = try Scorer(model: m, head: scoring.head, estimator: scoring.estimator, draws: scoring.draws, seed: scoring.seed, parameters: params)
                            try scorer.run(over: set, batchSize: scoring.batchSize, maxBatches: scoring.batches) { i, n in
                                bar.update("scoring", fraction: Double(i) / Double(n), detail: "batch \(i)/\(n)")
                            }
                            return scorer.sums
                        }, progress: { r in
                            bar.finish()
                            if !quiet { StandardStream.error.write("round \(r.round)/\(o.rounds): target density \(fmt(r.targetDensity * 100, 2)) %, \(r.ones) of \(r.total) trainable\n") }
                        })
                    }
                    selected = result.mask
                    for (k, v) in scoring.provenance { info[k] = v }
                    info["rounds"] = .integer(Int64(rounds))
                    inputs.append(.init(role: "data", path: data, fingerprint: nil))
                }
            }
            let w = try MaskWriter(path: output, baseFingerprint: m.sourceFingerprint ?? "", absentTensors: absentTensors,
                                   provenance: provenance(inputs: inputs, parameters: info))
            for (p, bits) in zip(params2, selected) { try w.add(name: p.name, shape: p.value.shape, bits: bits) }
            try w.finish()
            let ones = selected.reduce(0) { $0 + $1.filter { $0 }.count }, total = params2.reduce(0) { $0 + $1.value.count }
            print("\(output): \(ones) of \(total) scored parameters trainable (\(fmt(Double(ones) / Double(total) * 100, 3)) %), \(params2.count) tensors; absent tensors are \(absentTensors.rawValue)")
        }
    }

    /// `--from-task-vector`: the top-|τ| mask of a task vector made from `model`.
    func maskFromTaskVector(_ tv: String, density d: Double) throws {
        guard data == nil, fromScores == nil, method == .talos, keep == .lowest else {
            throw ValidationError("--from-task-vector selects by |τ|: give it without DATA, --from-scores, --method or --keep")
        }
        let fingerprint = try openCheckpoint(path: model).fingerprint
        let base = try TaskVectorReader(path: tv).baseFingerprint
        guard base == fingerprint else {
            throw LocusError(file: tv, object: "/@base-fingerprint", "is \(base), expected \(fingerprint): it was not made from \(model)")
        }
        let s = try MaskOperations.fromTaskVector(tv, density: d, scope: scope == .global ? .global : .local, output: output,
                                                  provenance: provenance(inputs: [.init(role: "model", path: model, fingerprint: fingerprint)],
                                                                         parameters: ["method": .string("task-vector-magnitude")]))
        print("\(output): \(s.ones) of \(s.count) entries selected by |τ| (\(fmt(s.density * 100, 3)) %), \(s.tensors) tensors")
    }
}
