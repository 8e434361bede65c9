/// A labelled square matrix as an SVG heatmap (`locus compare`): one cell per pair, its value
/// printed in it, the colour running from white (`low`) to dark blue (`high`).
public enum Heatmap {
    public static func svg(title: String, subtitle: String, labels: [String], values: [[Double]], low: Double = 0, high: Double = 1) -> String {
        let n = labels.count
        let cell = n <= 8 ? 64.0 : max(24, 512 / Double(n))
        let labelW = min(320, Double(labels.map(\.count).max() ?? 1) * SVG.charWidth(12) + 16)
        let left = 16 + labelW, top = 96.0
        var svg = SVG(height: top + Double(n) * cell + labelW + 24)
        svg.title(title)
        svg.subtitle(subtitle)
        for (i, row) in values.enumerated() {
            let y = top + Double(i) * cell
            svg.text(left - 8, y + cell / 2 + 4, labels[i], size: 12, anchor: "end", fill: "#333")
            for (j, v) in row.enumerated() {
                let x = left + Double(j) * cell
                let t = high > low ? min(1, max(0, (v - low) / (high - low))) : 0
                // White → #08306b, linear in each channel.
                let r = Int(255 - t * (255 - 8)), g = Int(255 - t * (255 - 48)), b = Int(255 - t * (255 - 107))
                svg.open("g", ["class": "cell", "data-row": labels[i], "data-column": labels[j], "data-value": String(v)])
                svg.rect(x, y, cell - 2, cell - 2, fill: "rgb(\(r),\(g),\(b))")
                if cell >= 40 { svg.text(x + cell / 2 - 1, y + cell / 2 + 4, threeDigits(v), size: 11, anchor: "middle", fill: t > 0.55 ? "#fff" : "#222") }
                svg.close("g")
            }
        }
        let bottom = top + Double(n) * cell
        for (j, label) in labels.enumerated() {
            let x = left + Double(j) * cell + cell / 2
            svg.raw("<text x=\"\(SVG.f(x))\" y=\"\(SVG.f(bottom + 8))\" font-size=\"12\" fill=\"#333\" transform=\"rotate(60 \(SVG.f(x)) \(SVG.f(bottom + 8)))\">\(xmlEscape(label))</text>")
        }
        return svg.render()
    }

    static func threeDigits(_ v: Double) -> String {
        guard v.isFinite else { return v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf") }
        let r = (v * 1000).rounded() / 1000
        var s = String(r)
        if let dot = s.firstIndex(of: "."), s.distance(from: dot, to: s.endIndex) > 4 { s = String(s[..<s.index(dot, offsetBy: 4)]) }
        return s
    }
}
