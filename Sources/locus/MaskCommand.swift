import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows

extension KeepRule: ExpressibleByArgument {}
extension MaskScope: ExpressibleByArgument {}

struct MaskCommand: ParsableCommand {

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
    @Option(help: "talos, random or magnitude.") var method: MaskRequest.Method = .talos
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

    /// The density asked for: --density, or 1 − --sparsity.
    var targetDensity: Double {
        if let density { return density }
        return ((1 - (sparsity ?? 0)) * 1e12).rounded() / 1e12   // 1 − 0.9 is 0.0999…98 in binary; keep ⌊d·n⌋ what users expect
    }

    func validate() throws {
        switch (density, sparsity) {
        case (let d?, nil): guard d > 0, d <= 1 else { throw ValidationError("--density must be in (0, 1], got \(d)") }
        case (nil, let s?): guard s >= 0, s < 1 else { throw ValidationError("--sparsity must be in [0, 1), got \(s)") }
        case (nil, nil): throw ValidationError("give --density (fraction trainable) or --sparsity")
        default: throw ValidationError("give only one of --density and --sparsity")
        }
        guard rounds >= 1 else { throw ValidationError("--rounds must be ≥ 1, got \(rounds)") }
        if fromScores != nil, method != .talos {
            throw ValidationError("--from-scores selects by stored scores; it cannot be combined with --method \(method.rawValue)")
        }
        if fromTaskVector != nil {
            guard data == nil, fromScores == nil, method == .talos, keep == .lowest else {
                throw ValidationError("--from-task-vector selects by |τ|: give it without DATA, --from-scores, --method or --keep")
            }
        } else if fromScores == nil, method == .talos, data == nil {
            throw ValidationError("TaLoS calibration needs DATA (or use --from-scores)")
        }
    }

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions

    func run() throws {
        try source.scoped {
            try protectInputs()
            var r = MaskRequest(model: model, output: output, density: targetDensity)
            r.data = data; r.method = method; r.rounds = rounds; r.keep = keep; r.scope = scope; r.fromScores = fromScores
            r.absentTensors = absentTensors; r.set = scoring.set; r.command = ["locus"] + Array(CommandLine.arguments.dropFirst())
            r.fromTaskVector = fromTaskVector
            let bar = ProgressBar(quiet: quiet)
            let o = try r.execute(scoring: { i, n in bar.update("scoring", fraction: Double(i) / Double(n), detail: "batch \(i)/\(n)") },
                                  round: { round, rounds in
                                      bar.finish()
                                      if !quiet {
                                          StandardStream.error.write("round \(round.round)/\(rounds): target density \(fmt(round.targetDensity * 100, 2)) %, "
                                                                     + "\(round.ones) of \(round.total) trainable\n")
                                      }
                                  })
            if fromTaskVector != nil {
                print("\(output): \(o.ones) of \(o.total) entries selected by |τ| (\(fmt(Double(o.ones) / Double(o.total) * 100, 3)) %), \(o.tensors) tensors")
            } else {
                print("\(output): \(o.ones) of \(o.total) scored parameters trainable (\(fmt(Double(o.ones) / Double(o.total) * 100, 3)) %), "
                      + "\(o.tensors) tensors; absent tensors are \(absentTensors.rawValue)")
            }
        }
    }

}

extension MaskRequest.Method: ExpressibleByArgument {}
