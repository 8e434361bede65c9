import ArgumentParser
import Foundation
import LocusFormat
import LocusMerge
import LocusWorkflows

/// `locus merge`'s validation searches over merge coefficients (docs/talos.md §Choosing α): one α
/// for all tasks, one per task (coordinate or random search), or a task's negation against a control
/// task. The work is `AlphaSearchRequest` / `NegationRequest` (LocusWorkflows).
struct AlphaSearchOptions: ParsableArguments {
    enum Mode: String, ExpressibleByArgument, CaseIterable { case single, coordinate, random }

    @Option(help: "α grid a:b:step for the validation search.") var alphaGrid: AlphaGrid?
    @Option(parsing: .upToNextOption, help: "One dataset per task vector for the α search.") var eval: [String] = []
    @Option(help: "Comma-separated heads (default: each vector's task-head).") var heads: String?
    @Option(help: "Split used by the α search.") var evalSplit: String = "val"
    @Option(help: "Write the α table as JSON here.") var alphaJson: String?
    @Option(help: "Write accuracy vs α as an SVG plot here.") var plot: String?
    @Option(help: ArgumentHelp("single α, or one per task: coordinate, random.", valueName: "mode"))
    var alphaMode: Mode = .single
    @Option(help: ArgumentHelp("coordinate: most rounds over the tasks.", valueName: "n")) var alphaRounds: Int = 3
    @Option(help: ArgumentHelp("random: coefficient vectors evaluated.", valueName: "n")) var alphaBudget: Int = 32
    @Option(help: ArgumentHelp("random: seed of the draws.", valueName: "seed")) var alphaSeed: UInt64 = 0
    @Option(help: ArgumentHelp("Negate the task of this dataset: α = −g over the grid.", valueName: "data"))
    var negate: String?
    @Option(help: ArgumentHelp("Negation: the control task's dataset.", valueName: "data")) var control: String?
    @Option(help: ArgumentHelp("Negation: the head for --control (default: the one that fits).", valueName: "head"))
    var controlHead: String?
    @Option(help: ArgumentHelp("Negation: keep ≥ this fraction of the base's control accuracy.", valueName: "f"))
    var keep: Double = 0.95

    func validate() throws {
        let searching = alphaGrid != nil
        if !searching, negate != nil || control != nil || alphaMode != .single || !eval.isEmpty {
            throw ValidationError("--eval, --negate, --control and --alpha-mode need --alpha-grid")
        }
        if (negate == nil) != (control == nil) { throw ValidationError("--negate and --control go together") }
        if negate != nil {
            guard eval.isEmpty, alphaMode == .single else { throw ValidationError("--negate evaluates its own dataset: leave out --eval and --alpha-mode") }
            guard let g = alphaGrid, g.values.allSatisfy({ $0 >= 0 }) else {
                throw ValidationError("--negate takes magnitudes g ≥ 0 in --alpha-grid (α = −g), e.g. 0:2:0.25")
            }
        }
        guard keep > 0, keep <= 1 else { throw ValidationError("--keep must be in (0, 1], got \(keep)") }
        guard alphaRounds >= 1 else { throw ValidationError("--alpha-rounds must be ≥ 1, got \(alphaRounds)") }
        guard alphaBudget >= 1 else { throw ValidationError("--alpha-budget must be ≥ 1, got \(alphaBudget)") }
    }

    var isRequested: Bool { alphaGrid != nil }

    /// The files the search reads and writes (for `OutputSafety`).
    var inputs: [OutputSafety.Input] {
        eval.enumerated().map { .init("evaluation dataset \($0.offset + 1)", $0.element) }
            + [negate.map { OutputSafety.Input("negated task's dataset", $0) }, control.map { OutputSafety.Input("control dataset", $0) }].compactMap { $0 }
    }
    var outputs: [OutputSafety.Output] {
        [alphaJson.map { OutputSafety.Output("α table", $0) }, plot.map { OutputSafety.Output("plot", $0) }].compactMap { $0 }
    }

    /// Runs the search asked for, prints its table, writes its JSON and plot, and returns the merge
    /// options to write with and what the provenance records. Problems with the request name
    /// `output`, the file the command was to write.
    func search(base: String?, taskVectors: [String], options: MergeOptions, method: String, output: String,
                warn: (String) -> Void) throws -> (options: MergeOptions, provenance: [String: JSONValue]) {
        guard let grid = alphaGrid?.values else { return (options, [:]) }
        guard let base else { throw FlagError("--alpha-grid", "searches λ of task-vector methods; \(method) merges models", context: output) }
        do {
            if let negate, let control {
                guard taskVectors.count == 1 else {
                    throw FlagError("--negate", "negates one task vector; \(taskVectors.count) were given", context: output)
                }
                var r = NegationRequest(base: base, taskVector: taskVectors[0], target: negate, control: control, grid: grid, options: options)
                r.head = heads; r.controlHead = controlHead; r.split = evalSplit; r.keep = keep
                let result = try r.execute(warn: warn)
                print(result.table)
                if let alphaJson { try writeText(try result.json(), to: alphaJson) }
                if let plot { try writeText(result.svg(method: method), to: plot) }
                guard result.best != nil else {
                    throw LocusError(file: control, "no α of the grid keeps the control accuracy ≥ \(fmt(result.threshold, 4)) (\(fmt(keep * 100, 2)) % of the base's)")
                }
                return (result.apply(to: options), result.provenance)
            }
            var r = AlphaSearchRequest(base: base, taskVectors: taskVectors, datasets: eval, grid: grid, options: options)
            r.heads = heads?.split(separator: ",").map(String.init); r.split = evalSplit
            switch alphaMode {
            case .single: r.strategy = .single
            case .coordinate: r.strategy = .coordinate(rounds: alphaRounds)
            case .random: r.strategy = .random(budget: alphaBudget, seed: alphaSeed)
            }
            let result = try r.execute(warn: warn)
            print(result.table)
            if let alphaJson { try writeText(try result.json(), to: alphaJson) }
            if let plot { try writeText(result.svg(method: method), to: plot) }
            return (result.apply(to: options), result.provenance)
        } catch let e as RequestError {
            throw FlagError(ErrorReport.flag(for: e.setting), e.message, context: output)
        }
    }
}
