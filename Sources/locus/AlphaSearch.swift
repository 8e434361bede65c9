import Foundation
import LocusFormat
import LocusEngine
import LocusMerge

/// The validation search for the merge coefficient α (task-vectors / TaLoS protocol).
struct AlphaSearch {
    struct Row: Codable {
        var alpha: Double
        var accuracies: [Double]
        var normalized: [Double]
        var averageAbsolute: Double
        var averageNormalized: Double
    }

    let model: Model
    let theta0: [String: [Float]]
    let direction: [String: [Float]]
    let taskNames: [String]
    let heads: [String]
    let sets: [Batches]
    let ownAccuracy: [Double]

    init(base: String, taskVectors: [String], datasets: [String], heads given: [String]?, split: String, options: MergeOptions, warn: (String) -> Void) throws {
        let m = try Model.load(base)
        let start = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.value.data) })
        let reader = try openCheckpoint(path: base)
        let dir = try Merger.directions(base: reader, taskVectors: taskVectors, options: options, warn: warn)
        let tvs = try taskVectors.map { try TaskVectorReader(path: $0) }
        if let given, given.count != tvs.count { throw LocusError(file: base, "--heads names \(given.count) heads for \(tvs.count) task vectors") }
        let hs: [String] = try tvs.enumerated().map { i, tv in
            if let given { return given[i] }
            guard tv.artifact.root.hasAttribute("task-head") else {
                throw LocusError(file: tv.path, object: "/@task-head", "is missing; name the heads with --heads")
            }
            return try tv.artifact.root.stringAttribute("task-head")
        }
        var batches: [Batches] = []
        for (i, d) in datasets.enumerated() {
            let data = try DatasetArtifact.read(d)
            let h = try engine(file: base) { try m.head(hs[i]) }
            batches.append(try Batches(data, split: split, inputShape: m.architecture.input, classes: h.outFeatures, file: d))
        }
        // Each task's own fine-tuned accuracy: recorded in the vector, else measured with θ0 + τ_t.
        var own: [Double] = []
        for (i, tv) in tvs.enumerated() {
            if tv.artifact.root.hasAttribute("task-accuracy"), ((try? tv.artifact.root.stringAttribute("task-split")) ?? split) == split,
               let a = try? tv.artifact.root.doubleAttribute("task-accuracy"), a > 0 {
                own.append(a); continue
            }
            var single: [String: [Float]] = [:]
            for t in tv.tensors { single[t.name] = try tv.readDense(t).map { $0 * Float(tv.scale) } }
            AlphaSearch.set(m, start, single, alpha: 1)
            let set = batches[i], head = hs[i]
            let a = try engine(file: tv.path) { try Training.evaluate(m, head: head, on: set).accuracy }
            guard a > 0 else { throw LocusError(file: tv.path, "the task's own accuracy is 0; normalized accuracy is undefined") }
            own.append(a)
        }
        model = m; theta0 = start; direction = dir; heads = hs; sets = batches; ownAccuracy = own
        taskNames = taskVectors.map { ($0.split(separator: "/").last.map(String.init) ?? $0).replacingOccurrences(of: ".h5", with: "") }
    }

    static func set(_ model: Model, _ theta0: [String: [Float]], _ dir: [String: [Float]], alpha: Double) {
        let a = Float(alpha)
        for p in model.parameters {
            var v = theta0[p.name]!
            if let d = dir[p.name] { for i in 0..<v.count { v[i] += a * d[i] } }
            p.value.data = v
        }
    }

    func run(_ grid: [Double]) throws -> [Row] {
        try grid.map { alpha in
            AlphaSearch.set(model, theta0, direction, alpha: alpha)
            let acc = try sets.indices.map { i in try engine(file: taskNames[i]) { try Training.evaluate(model, head: heads[i], on: sets[i]).accuracy } }
            let norm = zip(acc, ownAccuracy).map { $0 / $1 }
            return Row(alpha: alpha, accuracies: acc, normalized: norm,
                       averageAbsolute: acc.reduce(0, +) / Double(acc.count), averageNormalized: norm.reduce(0, +) / Double(norm.count))
        }
    }

    static func format(_ rows: [Row], tasks: [String], own: [Double], best: Double) -> String {
        var lines = ["α       " + tasks.map { $0.padding(toLength: max(8, $0.count), withPad: " ", startingAt: 0) }.joined(separator: " ") + "  avg abs  avg norm"]
        lines.append("own     " + zip(tasks, own).map { t, a in fmt(a, 4).padding(toLength: max(8, t.count), withPad: " ", startingAt: 0) }.joined(separator: " "))
        for r in rows {
            var line = String(r.alpha).padding(toLength: 8, withPad: " ", startingAt: 0)
            line += zip(tasks, r.accuracies).map { t, a in fmt(a, 4).padding(toLength: max(8, t.count), withPad: " ", startingAt: 0) }.joined(separator: " ")
            line += "  " + fmt(r.averageAbsolute, 4).padding(toLength: 7, withPad: " ", startingAt: 0) + "  " + fmt(r.averageNormalized, 4)
            if r.alpha == best { line += "  ← best" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    static func writeJSON(_ rows: [Row], search: AlphaSearch, best: Double, to path: String) throws {
        struct Out: Encodable { var tasks: [String]; var heads: [String]; var own_accuracy: [Double]; var best_alpha: Double; var rows: [Row] }
        let text = try jsonText(Out(tasks: search.taskNames, heads: search.heads, own_accuracy: search.ownAccuracy, best_alpha: best, rows: rows))
        try writeAtomically(to: path) { tmp in try text.write(toFile: tmp, atomically: false, encoding: .utf8) }
    }

    /// Accuracy vs α: one line per task (absolute), the average absolute and the average normalized.
    static func writePlot(_ rows: [Row], tasks: [String], method: String, to path: String) throws {
        let w = 720.0, h = 420.0, left = 60.0, right = 180.0, top = 40.0, bottom = 50.0
        let a0 = rows.first!.alpha, a1 = max(rows.last!.alpha, a0 + 1e-9)
        let ymax = max(1.0, rows.flatMap { $0.normalized + $0.accuracies }.max() ?? 1)
        func x(_ a: Double) -> Double { left + (a - a0) / (a1 - a0) * (w - left - right) }
        func y(_ v: Double) -> Double { top + (1 - v / ymax) * (h - top - bottom) }
        let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(left)\" y=\"22\" font-size=\"15\">\(xmlEscape(method)): accuracy vs α</text>\n"
        for k in 0...5 {
            let v = ymax * Double(k) / 5
            svg += "<line x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(y(v))\" y2=\"\(y(v))\" stroke=\"#ddd\"/><text x=\"\(left - 8)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(fmt(v, 2))</text>\n"
        }
        let labelEvery = max(1, (rows.count + 10) / 11)   // at most ~11 labels, so they never overlap
        for (k, r) in rows.enumerated() where k % labelEvery == 0 || k == rows.count - 1 {
            svg += "<text x=\"\(x(r.alpha))\" y=\"\(h - bottom + 18)\" text-anchor=\"middle\">\(fmt(r.alpha, 2))</text>\n"
        }
        svg += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 10)\" text-anchor=\"middle\">α</text>\n"
        func polyline(_ values: [Double], _ color: String, _ dash: String, _ label: String, _ row: Int) -> String {
            let pts = zip(rows, values).map { "\(x($0.alpha)),\(y($1))" }.joined(separator: " ")
            return "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"\(dash)\"/>\n" +
                "<line x1=\"\(w - right + 12)\" x2=\"\(w - right + 36)\" y1=\"\(top + 18.0 * Double(row))\" y2=\"\(top + 18.0 * Double(row))\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"\(dash)\"/>" +
                "<text x=\"\(w - right + 42)\" y=\"\(top + 18.0 * Double(row) + 4)\">\(xmlEscape(label))</text>\n"
        }
        for (i, t) in tasks.enumerated() { svg += polyline(rows.map { $0.accuracies[i] }, colors[i % colors.count], "4 3", t, i) }
        svg += polyline(rows.map(\.averageAbsolute), "#000", "", "average absolute", tasks.count)
        svg += polyline(rows.map(\.averageNormalized), "#000", "1 3", "average normalized", tasks.count + 1)
        svg += "</svg>\n"
        try writeAtomically(to: path) { tmp in try svg.write(toFile: tmp, atomically: false, encoding: .utf8) }
    }

    static func xmlEscape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
