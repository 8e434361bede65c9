import ArgumentParser
import Foundation
import LocusFormat
import LocusMerge
import LocusWorkflows

struct NegateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "negate",
        abstract: "Task negation: subtract a task vector as far as a control task allows.",
        usage: "locus negate <base> <task-vector> --eval <d> --control <d> --alpha-grid <a:b:s> -o <out>",
        discussion: """
        Evaluates θ = θ0 − g·τ for every g of --alpha-grid (α = −g) on the task's data (--eval, with \
        the vector's task-head) and on --control, and writes the model with the most negative α whose \
        control accuracy is ≥ --keep × the base model's: the protocol of Ilharco et al. (2023, §3), \
        which TaLoS follows (docs/talos.md §Choosing α). Prints the table; --alpha-json and --plot \
        write it. Refuses a vector made from another base unless --force.

        Example:
          locus negate base.h5 tau-mnist.h5 --eval mnist.h5 --control fashion.h5 \\
              --alpha-grid 0:2:0.25 -o forgot.h5
        """)

    @Argument(help: "Base checkpoint.") var base: String
    @Argument(help: "Task vector to negate.") var taskVector: String
    @Option(name: .shortAndLong, help: "Output checkpoint.") var output: String
    @Option(help: ArgumentHelp("The task's dataset (its accuracy should drop).", valueName: "data")) var eval: String
    @Option(help: ArgumentHelp("The control task's dataset.", valueName: "data")) var control: String
    @Option(help: ArgumentHelp("Magnitudes g ≥ 0 to try, α = −g.", valueName: "a:b:step")) var alphaGrid: AlphaGrid
    @Option(help: ArgumentHelp("Keep ≥ this fraction of the base's control accuracy.", valueName: "f")) var keep: Double = 0.95
    @Option(help: ArgumentHelp("Heads of task and control (default: task-head, the one that fits).", valueName: "h1,h2"))
    var heads: String?
    @Option(help: ArgumentHelp("Split evaluated.", valueName: "split")) var evalSplit: String = "val"
    @Option(help: ArgumentHelp("Write the table as JSON.", valueName: "file")) var alphaJson: String?
    @Option(help: ArgumentHelp("Plot accuracy vs α (SVG).", valueName: "file")) var plot: String?
    @Flag(help: "Use a vector made from another base (warns).") var force = false

    @OptionGroup(title: "Reading checkpoints") var source: SourceOptions
    @OptionGroup(title: "Writing checkpoints") var out: OutputOptions

    func validate() throws {
        guard alphaGrid.values.allSatisfy({ $0 >= 0 }) else { throw ValidationError("--alpha-grid takes magnitudes g ≥ 0 (α = −g), e.g. 0:2:0.25") }
        guard keep > 0, keep <= 1 else { throw ValidationError("--keep must be in (0, 1], got \(keep)") }
        if let heads, !(1...2).contains(heads.split(separator: ",").count) { throw ValidationError("--heads names the task's head and the control's") }
    }

    func run() throws {
        try source.scoped {
            try protectInputs()
            var o = MergeOptions()
            o.force = force
            var r = NegationRequest(base: base, taskVector: taskVector, target: eval, control: control, grid: alphaGrid.values, options: o)
            let h = heads?.split(separator: ",").map(String.init) ?? []
            r.head = h.first; r.controlHead = h.count > 1 ? h[1] : nil; r.split = evalSplit; r.keep = keep
            let warn: (String) -> Void = { StandardStream.error.write("locus: warning: \($0)\n") }
            let result = try r.execute(warn: warn)
            print(result.table)
            if let alphaJson { try writeText(try result.json(), to: alphaJson) }
            if let plot { try writeText(result.svg(method: "task_arithmetic"), to: plot) }
            guard let best = result.best else {
                throw LocusError(file: control, "no α of the grid keeps the control accuracy ≥ \(fmt(result.threshold, 4)) (\(fmt(keep * 100, 2)) % of the base's)")
            }
            o = result.apply(to: o)
            var params = MergeMethods.provenance(o)
            params.merge(result.provenance) { a, _ in a }
            params.merge(try source.parameters()) { a, _ in a }
            let prov = provenance(inputs: [.init(role: "base", path: base, fingerprint: try openCheckpoint(path: base).fingerprint),
                                           .init(role: "task-vector", path: taskVector, fingerprint: nil),
                                           .init(role: "data", path: eval, fingerprint: nil), .init(role: "control", path: control, fingerprint: nil)],
                                  parameters: params)
            let w = try Merger.merge(base: base, taskVectors: [taskVector], output: output, options: o, warn: warn, provenance: prov,
                                     outputFormat: out.format(for: output), shardBytes: try out.shardBytes())
            print("\(output): θ0 \(best.alpha < 0 ? "−" : "+") \(abs(best.alpha))·τ, \(w.tensorsMerged) tensors merged, \(w.tensorsCopied) copied, \(w.fingerprint)")
        }
    }
}
