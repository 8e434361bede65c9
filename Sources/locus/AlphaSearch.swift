import ArgumentParser
import Foundation
import LocusFormat
import LocusMerge
import LocusWorkflows

/// `--alpha-mode`: `single` (one α for all tasks), `coordinate[:ROUNDS]` or `random[:BUDGET[:SEED]]`
/// (one α per task; docs/talos.md §Choosing α).
struct AlphaMode: ExpressibleByArgument {
    var strategy: AlphaSearchRequest.Strategy
    init?(argument: String) {
        let p = argument.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        switch (p[0], p.count) {
        case ("single", 1): strategy = .single
        case ("coordinate", 1...2):
            guard let r = p.count == 2 ? Int(p[1]) : 3, r >= 1 else { return nil }
            strategy = .coordinate(rounds: r)
        case ("random", 1...3):
            guard let n = p.count >= 2 ? Int(p[1]) : 32, n >= 1, let seed = p.count == 3 ? UInt64(p[2]) : 0 else { return nil }
            strategy = .random(budget: n, seed: seed)
        default: return nil
        }
    }
}

/// `locus merge`'s validation search over merge coefficients (docs/talos.md §Choosing α): one α for
/// all tasks, or one per task by coordinate or random search. The work is `AlphaSearchRequest`
/// (LocusWorkflows); task negation is `locus negate`.
struct AlphaSearchOptions: ParsableArguments {
    @Option(help: ArgumentHelp("α values for the search of λ.", valueName: "a:b:step")) var alphaGrid: AlphaGrid?
    @Option(parsing: .upToNextOption, help: ArgumentHelp("One dataset per vector (α search).", valueName: "data")) var eval: [String] = []
    @Option(help: ArgumentHelp("Heads (default: each vector's task-head).", valueName: "h1,h2")) var heads: String?
    @Option(help: ArgumentHelp("Split of the α search.", valueName: "split")) var evalSplit: String = "val"
    @Option(help: ArgumentHelp("Write the α table as JSON.", valueName: "file")) var alphaJson: String?
    @Option(help: ArgumentHelp("Plot accuracy vs α (SVG).", valueName: "file")) var plot: String?
    @Option(help: ArgumentHelp("Per-task α: coordinate[:rounds] or random[:n[:seed]].", valueName: "mode"))
    var alphaMode: AlphaMode?

    func validate() throws {
        if alphaGrid == nil, !eval.isEmpty || alphaMode != nil { throw ValidationError("--eval and --alpha-mode need --alpha-grid") }
    }

    /// The files the search reads and writes (for `OutputSafety`).
    var inputs: [OutputSafety.Input] { eval.enumerated().map { .init("evaluation dataset \($0.offset + 1)", $0.element) } }
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
        var r = AlphaSearchRequest(base: base, taskVectors: taskVectors, datasets: eval, grid: grid, options: options)
        r.heads = heads?.split(separator: ",").map(String.init); r.split = evalSplit
        r.strategy = alphaMode?.strategy ?? .single
        do {
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
