import Foundation
import LocusFormat

/// SVG plots for `locus inspect --plot`: plain SVG text, no dependencies.
///
///   mask          one horizontal bar per tensor, length = density (ones / count), plus the overall density
///   task-vector   the same from nnz / count
///   scores        a histogram of log10(score) over all tensors (zeros in a separate "= 0" bar), read tensor
///                 by tensor so memory stays O(largest tensor), and per-tensor boxes (min · q25 · median ·
///                 q75 · max from the quantiles in the report) on the same axis
///
/// Every per-tensor row is a `<g class="tensor" data-name="…">` so tools and tests can find them;
/// density bars are `<rect class="bar">`, histogram bins `<rect class="bin">`, boxes `<g class="box">`.
public enum InspectPlot {
    public static let plottableKinds = [ArtifactKind.mask.rawValue, ArtifactKind.scores.rawValue, ArtifactKind.taskVector.rawValue]
    /// Width of every plot in pixels; the height follows from the number of tensors.
    public static let width = 960.0
    public static let histogramBins = 40

    /// The SVG text for `report` (from `Inspector.inspect`). For scores the values are read again from
    /// `report.path`, one tensor at a time, for the histogram.
    public static func svg(_ report: InspectReport) throws -> String {
        switch report.kind {
        case ArtifactKind.mask.rawValue, ArtifactKind.taskVector.rawValue:
            return densityChart(report)
        case ArtifactKind.scores.rawValue:
            let h = try ScoreHistogram.read(report.path, tensors: report.tensors.map(\.name), quantiles: report.tensors.map(\.quantiles),
                                            bins: histogramBins)
            return scoresChart(report, h)
        default:
            throw LocusError(file: report.path, "no plot for kind \(report.kind) (plots exist for \(plottableKinds.joined(separator: ", ")) files)")
        }
    }

    /// Writes `svg` to `path` atomically (temporary file, fsync, rename).
    public static func write(_ svg: String, to path: String) throws {
        try writeAtomically(to: path) { tmp in
            do { try Data(svg.utf8).write(to: URL(fileURLWithPath: tmp)) } catch {
                throw LocusError(file: path, "cannot write the plot: \(error.localizedDescription)")
            }
        }
    }

    // MARK: - density bars (mask, task vector)

    static func densityChart(_ r: InspectReport) -> String {
        let isMask = r.kind == ArtifactKind.mask.rawValue
        let what = isMask ? "ones" : "nnz"
        let t = r.totals
        let hits = (isMask ? t.ones : t.nnz) ?? 0
        let overall = t.count == 0 ? 0 : Double(hits) / Double(t.count)
        func hitsOf(_ e: InspectReport.Tensor) -> Int { (isMask ? e.ones : e.nnz) ?? 0 }
        let counts = r.tensors.map { e in "\(hitsOf(e))/\(e.count)" }
        let percents = r.tensors.map { e in e.count == 0 ? "empty" : TextFormat.percent(e.density) }
        let labels = zip(counts, percents).map { $0 + "  " + $1 }

        var subtitle = isMask ? "bar = ones / elements of each tensor (1 = trainable)"
                              : "bar = non-zeros / elements of each tensor"
        if let a = r.absentTensors { subtitle += "; tensors without a mask are \(a)" }
        if let s = r.scale { subtitle += "; scale \(TextFormat.number(s))" }
        if let l2 = t.l2Norm { subtitle += "; ‖τ‖₂ \(TextFormat.number(l2))" }

        let layout = RowLayout(names: r.tensors.map(\.name), rightLabels: labels)
        let rowH = 22.0, barH = 14.0
        let top = 96.0
        let bottom = top + Double(r.tensors.count) * rowH
        var svg = SVG(height: bottom + 52)
        svg.title(fileName(r.path) + " — \(r.kind): \(r.tensors.count) tensor\(r.tensors.count == 1 ? "" : "s"), "
                  + "\(what) \(hits) of \(t.count) (\(TextFormat.percent(overall)))")
        svg.subtitle(subtitle)
        // Axis: 0 … 100 %.
        for p in stride(from: 0, through: 100, by: 25) {
            let x = layout.plotX + Double(p) / 100 * layout.plotW
            svg.line(x, top - 4, x, bottom, stroke: p == 0 ? "#9aa4ae" : "#dde2e7")
            svg.text(x, top - 10, "\(p)%", size: 11, anchor: "middle", fill: "#555")
        }
        svg.text(layout.plotX + layout.plotW / 2, top - 28, "density", size: 12, anchor: "middle", fill: "#333")
        for (i, e) in r.tensors.enumerated() {
            let y = top + Double(i) * rowH
            svg.open("g", ["class": "tensor", "data-name": e.name])
            svg.raw("<title>\(xmlEscape(e.name)): \(xmlEscape(labels[i]))</title>")
            if i % 2 == 0 { svg.rect(layout.margin, y, width - 2 * layout.margin, rowH, fill: "#f5f7f9") }
            svg.text(layout.plotX - 8, y + rowH / 2 + 4, layout.fitName(e.name), size: 12, anchor: "end", fill: "#222", mono: true)
            let by = y + (rowH - barH) / 2
            svg.rect(layout.plotX, by, layout.plotW, barH, fill: "#e3e8ed")
            let d = min(1, max(0, e.density ?? 0))
            svg.rect(layout.plotX, by, d * layout.plotW, barH, fill: isMask ? "#4c78a8" : "#54a24b", attributes: ["class": "bar"])
            svg.text(layout.plotX + layout.plotW + 8, y + rowH / 2 + 4, counts[i], size: 12, fill: "#555", mono: true,
                     attributes: ["class": "count"])
            svg.text(width - layout.margin - 4, y + rowH / 2 + 4, percents[i], size: 12, anchor: "end", fill: "#111", mono: true,
                     attributes: ["class": "percent"])
            svg.close("g")
        }
        // The overall density.
        let ox = layout.plotX + min(1, max(0, overall)) * layout.plotW
        svg.line(ox, top - 4, ox, bottom + 4, stroke: "#d62728", width: 1.5, dash: "5,3", attributes: ["class": "overall"])
        let label = "overall \(TextFormat.percent(overall))"
        let lw = Double(label.count) * SVG.charWidth(11)
        let lx = min(max(ox, layout.plotX + lw / 2), layout.plotX + layout.plotW - lw / 2)
        svg.text(lx, bottom + 18, label, size: 11, anchor: "middle", fill: "#d62728", weight: "bold")
        return svg.render()
    }

    // MARK: - scores: histogram and quantile boxes

    static func scoresChart(_ r: InspectReport, _ h: ScoreHistogram) -> String {
        let medians = r.tensors.map { e -> String in
            guard let q = e.quantiles, q.count == 5 else { return "empty" }
            return "median " + TextFormat.number(q[2])
        }
        let layout = RowLayout(names: r.tensors.map(\.name), rightLabels: medians, minimumPlotX: 96)
        let zeroW = 34.0, gap = 16.0
        let zeroX = layout.plotX, axisX = layout.plotX + zeroW + gap, axisW = layout.plotW - zeroW - gap
        let (lo, hi) = h.displayRange
        func xOf(_ v: Double) -> Double {
            if v <= 0 { return zeroX + zeroW / 2 }
            return axisX + min(1, max(0, (log10(v) - lo) / (hi - lo))) * axisW
        }

        let histTop = 104.0, histH = 200.0, histBottom = histTop + histH
        let boxTop = histBottom + 96, rowH = 20.0
        let bottom = boxTop + Double(r.tensors.count) * rowH
        var svg = SVG(height: bottom + 28)

        var title = fileName(r.path) + " — scores"
        if let e = r.estimator {
            title += ": \(e), \(r.samples ?? 0) samples × \(r.draws ?? 1) draw\((r.draws ?? 1) == 1 ? "" : "s"), \(r.reduction == "mean" ? "means" : "sums")"
        }
        svg.title(title)
        let positive = h.counts.reduce(0, +)
        var sub = "\(h.total) values in \(r.tensors.count) tensor\(r.tensors.count == 1 ? "" : "s"): \(h.zeros) zero"
        if h.total > 0 {
            let f = Double(h.zeros) / Double(h.total)
            sub += " (\(f > 0 && f < 0.0005 ? "<0.1%" : TextFormat.percent(f)))"
        }
        sub += ", \(positive) non-zero"
        if let a = h.minPositive, let b = h.maxPositive { sub += " from \(TextFormat.number(a)) to \(TextFormat.number(b))" }
        if h.invalid > 0 { sub += "; \(h.invalid) negative or non-finite values not shown" }
        svg.subtitle(sub)

        // Histogram: y axis (counts), then bars.
        let maxCount = max(1, h.counts.max() ?? 0, h.zeros)
        let step = niceStep(Double(maxCount) / 4, integer: true)
        let yMax = (Double(maxCount) / step).rounded(.up) * step
        func yOf(_ c: Double) -> Double { histBottom - c / yMax * histH }
        svg.text(layout.margin, histTop - 22, "histogram of log10(score) over all tensors (\(h.counts.count) bins; zeros apart)",
                 size: 12, fill: "#333", weight: "bold")
        for c in stride(from: 0.0, through: yMax, by: step) {
            let y = yOf(c)
            svg.line(zeroX, y, layout.plotX + layout.plotW, y, stroke: c == 0 ? "#9aa4ae" : "#e3e8ed")
            svg.text(zeroX - 6, y + 4, compactCount(c), size: 11, anchor: "end", fill: "#555")
        }
        svg.text(zeroX - 52, histTop + histH / 2, "values per bin", size: 11, anchor: "middle", fill: "#555",
                 attributes: ["transform": "rotate(-90 \(SVG.f(zeroX - 52)) \(SVG.f(histTop + histH / 2)))"])
        // The zero bar.
        svg.open("g", ["class": "zero"])
        svg.raw("<title>= 0: \(h.zeros) values</title>")
        let zh = h.zeros == 0 ? 0 : max(1.5, Double(h.zeros) / yMax * histH)
        svg.rect(zeroX + 4, histBottom - zh, zeroW - 8, zh, fill: "#8c8c8c", attributes: ["class": "bin"])
        svg.text(zeroX + zeroW / 2, yOf(Double(h.zeros)) - 4, compactCount(Double(h.zeros)), size: 10, anchor: "middle", fill: "#444")
        svg.close("g")
        svg.text(zeroX + zeroW / 2, histBottom + 16, "= 0", size: 11, anchor: "middle", fill: "#555")
        // Bins over the non-zero range.
        let bw = axisW / Double(max(1, h.counts.count))
        for (i, c) in h.counts.enumerated() {
            let a = h.lo + Double(i) * (h.hi - h.lo) / Double(h.counts.count), b = a + (h.hi - h.lo) / Double(h.counts.count)
            let x0 = axisX + (a - lo) / (hi - lo) * axisW
            svg.open("g", [:])
            svg.raw("<title>\(TextFormat.number(pow(10, a))) … \(TextFormat.number(pow(10, b))): \(c) values</title>")
            // A bin that holds anything stays visible (at least 1.5 px) however tall the others are.
            let bh = c == 0 ? 0 : max(1.5, Double(c) / yMax * histH)
            svg.rect(x0 + 0.5, histBottom - bh, max(0.5, bw - 1), bh, fill: "#4c78a8", attributes: ["class": "bin"])
            svg.close("g")
        }
        if h.counts.isEmpty {
            svg.text(axisX + axisW / 2, histTop + histH / 2, "no non-zero scores", size: 13, anchor: "middle", fill: "#777")
        }
        // Log x axis, shared with the boxes below.
        let ticks = logTicks(lo, hi)
        for (x, label) in ticks {
            let px = axisX + (x - lo) / (hi - lo) * axisW
            svg.line(px, histBottom, px, histBottom + 4, stroke: "#555")
            svg.line(px, boxTop - 6, px, bottom, stroke: "#e3e8ed")
            svg.text(px, histBottom + 16, label, size: 11, anchor: "middle", fill: "#555")
            svg.text(px, boxTop - 10, label, size: 11, anchor: "middle", fill: "#555")
        }
        svg.line(axisX, histBottom, axisX + axisW, histBottom, stroke: "#9aa4ae")
        svg.text(axisX + axisW / 2, histBottom + 34, "score (log scale)", size: 12, anchor: "middle", fill: "#333")

        // Per-tensor boxes.
        svg.text(layout.margin, boxTop - 38, "per tensor (stored quantiles, same axis): whiskers min … max, box 25 % … 75 %, dark bar = median",
                 size: 12, fill: "#333", weight: "bold")
        svg.line(zeroX + zeroW + gap / 2, boxTop - 6, zeroX + zeroW + gap / 2, bottom, stroke: "#c4cbd2", dash: "2,3")
        svg.text(zeroX + zeroW / 2, boxTop - 10, "0", size: 11, anchor: "middle", fill: "#555")
        for (i, e) in r.tensors.enumerated() {
            let y = boxTop + Double(i) * rowH, mid = y + rowH / 2
            svg.open("g", ["class": "tensor", "data-name": e.name])
            let qText = e.quantiles.map { $0.map { TextFormat.number($0) }.joined(separator: " · ") } ?? "-"
            svg.raw("<title>\(xmlEscape(e.name)): \(xmlEscape(qText))</title>")
            if i % 2 == 0 { svg.rect(layout.margin, y, width - 2 * layout.margin, rowH, fill: "#f5f7f9") }
            svg.text(layout.plotX - 8, mid + 4, layout.fitName(e.name), size: 12, anchor: "end", fill: "#222", mono: true)
            if let q = e.quantiles, q.count == 5 {
                let xs = q.map(xOf)
                svg.open("g", ["class": "box"])
                svg.line(xs[0], mid, xs[4], mid, stroke: "#555")
                svg.line(xs[0], mid - 5, xs[0], mid + 5, stroke: "#555")
                svg.line(xs[4], mid - 5, xs[4], mid + 5, stroke: "#555")
                svg.rect(xs[1], mid - 6, max(1, xs[3] - xs[1]), 12, fill: "#a6c8e8", stroke: "#4c78a8")
                svg.line(xs[2], mid - 7, xs[2], mid + 7, stroke: "#1f3b5a", width: 2.5)
                svg.close("g")
            }
            svg.text(layout.plotX + layout.plotW + 8, mid + 4, medians[i], size: 12, fill: "#222", mono: true, attributes: ["class": "value"])
            svg.close("g")
        }
        return svg.render()
    }

    // MARK: - helpers

    static func fileName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

    /// 1, 2, 2.5, 5 × 10^k at or above `raw` (≥ 1 when `integer`).
    static func niceStep(_ raw: Double, integer: Bool = false) -> Double {
        guard raw > 0, raw.isFinite else { return 1 }
        let p = pow(10, floor(log10(raw)))
        let step = [1, 2, 2.5, 5, 10].map { $0 * p }.first { $0 >= raw } ?? 10 * p
        return integer ? max(1, step.rounded(.up)) : step
    }

    /// Tick positions (in log10 units) and labels for [lo, hi]: whole decades when the range spans two or more,
    /// otherwise 1-2-5 (or finer) multiples of powers of ten, and linear ticks for a very narrow range.
    static func logTicks(_ lo: Double, _ hi: Double) -> [(Double, String)] {
        let span = hi - lo
        var out: [(Double, String)] = []
        if span >= 2 {
            let step = max(1, niceStep(span / 8).rounded(.up))
            var k = (lo / step).rounded(.up) * step
            while k <= hi + 1e-9 {
                let e = Int(k.rounded())
                out.append((Double(e), (-3...3).contains(e) ? tickLabel(pow(10, Double(e))) : "1e\(e)"))
                k += step
            }
            return out
        }
        for mantissas in [[1.0, 2, 5], [1, 2, 3, 5, 7], [1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9]] {
            out = []
            for e in Int(floor(lo))...Int(ceil(hi)) {
                for m in mantissas {
                    let x = log10(m) + Double(e)
                    if x >= lo - 1e-9 && x <= hi + 1e-9 { out.append((x, tickLabel(m * pow(10, Double(e))))) }
                }
            }
            if out.count >= 3 { return out }
        }
        let a = pow(10, lo), b = pow(10, hi), step = niceStep((b - a) / 4)
        out = []
        var v = (a / step).rounded(.up) * step
        while v <= b * (1 + 1e-12) && out.count < 12 { out.append((log10(v), tickLabel(v))); v += step }
        return out
    }

    /// A short label: at most 3 significant digits.
    static func tickLabel(_ v: Double) -> String {
        guard v > 0, v.isFinite else { return TextFormat.number(v) }
        let e = Int(floor(log10(v)))
        let p = pow(10, Double(e - 2))
        let r = (v / p).rounded() * p
        if e >= -3 && e < 5 {
            let digits = max(0, 2 - e)
            var s = String(format: "%.\(digits)f", r)
            if s.contains(".") { while s.hasSuffix("0") { s.removeLast() }; if s.hasSuffix(".") { s.removeLast() } }
            return s
        }
        var m = String(format: "%.2f", r / pow(10, Double(e)))
        while m.hasSuffix("0") { m.removeLast() }
        if m.hasSuffix(".") { m.removeLast() }
        return "\(m)e\(e)"
    }

    static func compactCount(_ c: Double) -> String {
        let units: [(Double, String)] = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        for (v, u) in units where c >= v {
            let x = c / v
            let s = x >= 100 ? String(Int(x.rounded())) : String(format1: x)
            return (s.hasSuffix(".0") ? String(s.dropLast(2)) : s) + u
        }
        return String(Int(c))
    }
}
