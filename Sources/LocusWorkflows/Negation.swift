import Foundation
import LocusRender
import LocusFormat
import LocusEngine
import LocusMerge

/// Task negation with a control task (Ilharco et al., ICLR 2023, §3; TaLoS, Iurada et al., 2025,
/// follows it): θ = θ0 + α·τ for α = −g, g over the grid; the α kept is the most negative one whose
/// control accuracy stays ≥ keep × the base model's (95 % in both papers), which is where the
/// target task is forgotten most while the control task is kept. τ is the method's direction for
/// the one task vector (task arithmetic: w·τ).
public struct NegationRequest {
    public var base: String
    public var taskVector: String
    /// The negated task's dataset (evaluated with `head`).
    public var target: String
    /// The target's head; nil for the vector's `task-head` attribute.
    public var head: String?
    /// The control task's dataset.
    public var control: String
    /// The control's head; nil for the one head whose class count fits the control data.
    public var controlHead: String?
    public var split = "val"
    /// Magnitudes g ≥ 0; α = −g.
    public var grid: [Double]
    /// Fraction of the base's control accuracy that must be kept.
    public var keep = 0.95
    public var options: MergeOptions

    public init(base: String, taskVector: String, target: String, control: String, grid: [Double], options: MergeOptions) {
        self.base = base; self.taskVector = taskVector; self.target = target; self.control = control; self.grid = grid; self.options = options
    }

    func check() throws {
        guard options.semantics == .locus else {
            throw RequestError("semantics", "negation scales λ with Locus's rules, not mergekit's: give the merge Locus semantics")
        }
        guard options.method.parameter("lambda") != nil else {
            throw RequestError("grid", "negation scales λ, which \(options.method.name) does not have")
        }
        guard !grid.isEmpty, grid.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
            throw RequestError("grid", "negation needs magnitudes g ≥ 0 (α = −g), got \(grid.map { fmt($0, 6) }.joined(separator: ", "))")
        }
        guard keep > 0, keep <= 1 else { throw RequestError("keep", "must be in (0, 1], got \(keep)") }
    }

    public func execute(warn: (String) -> Void = { _ in }) throws -> NegationResult {
        try check()
        let m = try Model.load(base)
        let reader = try openCheckpoint(path: base)
        let direction = StoredDirection(try Merger.directions(base: reader, taskVectors: [taskVector], options: options, warn: warn))
        let tv = try TaskVectorReader(path: taskVector)
        let targetHead = try TaskSets.heads([tv], given: head.map { [$0] })[0]
        let controlData = try DatasetArtifact.read(control)
        let ctrlHead: String
        if let controlHead { ctrlHead = controlHead } else {
            let fits = m.architecture.heads.filter { $0.outFeatures == controlData.classes.count }.map(\.name)
            guard fits.count == 1 else {
                throw RequestError("controlHead", fits.isEmpty ? "no head of \(base) has \(controlData.classes.count) classes like \(control); name one"
                                                               : "heads \(fits.joined(separator: ", ")) all fit \(control); name one")
            }
            ctrlHead = fits[0]
        }
        let targetSet = try TaskSets.batches(model: m, modelPath: base, dataset: target, head: targetHead, split: split)
        let controlSet = try Batches(controlData, split: split, inputShape: m.architecture.input,
                                     classes: try engine(file: base) { try m.head(ctrlHead) }.outFeatures, file: control)
        let merged = MergedModel(model: m, directions: [direction])
        merged.load([0])
        let baseTarget = try merged.accuracy(head: targetHead, on: targetSet, file: target)
        let baseControl = try merged.accuracy(head: ctrlHead, on: controlSet, file: control)
        let threshold = keep * baseControl
        var rows: [NegationResult.Row] = []
        for g in grid {
            let alpha = g == 0 ? 0 : -g
            merged.load([alpha])
            let t = try merged.accuracy(head: targetHead, on: targetSet, file: target)
            let c = try merged.accuracy(head: ctrlHead, on: controlSet, file: control)
            rows.append(.init(alpha: alpha, target: t, control: c, kept: c >= threshold))
        }
        return NegationResult(task: taskLabel(taskVector), head: targetHead, controlHead: ctrlHead, keep: keep,
                              baseTarget: baseTarget, baseControl: baseControl, rows: rows)
    }
}

public struct NegationResult {
    public struct Row: Codable, Sendable, Equatable {
        public var alpha: Double
        /// Target-task accuracy (to be low).
        public var target: Double
        /// Control-task accuracy (to stay ≥ keep × the base's).
        public var control: Double
        public var kept: Bool
    }
    public var task: String
    public var head: String
    public var controlHead: String
    public var keep: Double
    /// The base model's accuracies (α = 0).
    public var baseTarget: Double
    public var baseControl: Double
    public var rows: [Row]

    /// The most negative α whose control accuracy is kept; nil when none is.
    public var best: Row? { rows.filter(\.kept).min { $0.alpha < $1.alpha } }
    public var threshold: Double { keep * baseControl }

    public func apply(to options: MergeOptions) -> MergeOptions {
        var o = options
        if let best { o.lambda = best.alpha }
        return o
    }

    public var provenance: [String: JSONValue] {
        ["negation": .object([
            "task": .string(task), "keep": .number(keep), "base_control_accuracy": .number(baseControl),
            "rows": .array(rows.map { .object(["alpha": .number($0.alpha), "target": .number($0.target), "control": .number($0.control)]) }),
        ])]
    }

    public var table: String {
        func pad(_ s: String, _ n: Int) -> String { s.padding(toLength: max(n, s.count), withPad: " ", startingAt: 0) }
        var lines = ["negating \(task) (head \(head)); control head \(controlHead) must keep ≥ \(fmt(keep * 100, 2)) % of the base's "
                     + "\(fmt(baseControl, 4)), i.e. ≥ \(fmt(threshold, 4))"]
        lines.append(pad("α", 8) + pad("target", 9) + pad("control", 9) + "kept")
        lines.append(pad("base", 8) + pad(fmt(baseTarget, 4), 9) + pad(fmt(baseControl, 4), 9))
        let b = best
        for r in rows {
            var line = pad(String(r.alpha), 8) + pad(fmt(r.target, 4), 9) + pad(fmt(r.control, 4), 9) + (r.kept ? "yes" : "no")
            if r == b { line += "  ← best" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    public func json() throws -> String {
        struct Out: Encodable {
            var task: String; var head: String; var controlHead: String; var keep: Double
            var baseTargetAccuracy: Double; var baseControlAccuracy: Double; var controlThreshold: Double
            var bestAlpha: Double?; var rows: [Row]
            enum CodingKeys: String, CodingKey {
                case task, head, controlHead = "control_head", keep, baseTargetAccuracy = "base_target_accuracy"
                case baseControlAccuracy = "base_control_accuracy", controlThreshold = "control_threshold", bestAlpha = "best_alpha", rows
            }
        }
        return try jsonText(Out(task: task, head: head, controlHead: controlHead, keep: keep, baseTargetAccuracy: baseTarget,
                                baseControlAccuracy: baseControl, controlThreshold: threshold, bestAlpha: best?.alpha, rows: rows))
    }

    /// Target and control accuracy vs α, the control threshold as a guide, the chosen α marked.
    public func svg(method: String) -> String {
        let c = LineChart.palette
        var chart = LineChart(title: "\(method): negating \(task)", xLabel: "α", xs: rows.map(\.alpha),
                              series: [.init(label: "target (\(head))", values: rows.map(\.target), color: c[3], dash: ""),
                                       .init(label: "control (\(controlHead))", values: rows.map(\.control), color: c[0], dash: "")],
                              yMax: max(1, rows.flatMap { [$0.target, $0.control] }.max() ?? 1))
        chart.guides = [(threshold, "control × \(fmt(keep, 3))")]
        if let b = best { chart.marked = (b.alpha, "α = \(fmt(b.alpha, 4))") }
        return chart.svg()
    }
}
