import Foundation

/// A line chart as plain SVG text (the α searches' plots): one polyline per series over shared x
/// values, a legend on the right, optional horizontal guides and one marked x.
public struct LineChart {
    public struct Series {
        public var label: String
        public var values: [Double]
        public var color: String
        /// SVG stroke-dasharray ("" for a solid line).
        public var dash: String
        public init(label: String, values: [Double], color: String, dash: String) {
            self.label = label; self.values = values; self.color = color; self.dash = dash
        }
    }
    public static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    public var title: String
    public var xLabel: String
    public var xs: [Double]
    public var series: [Series]
    /// Top of the y axis (the bottom is 0).
    public var yMax: Double
    /// Horizontal dashed guides: (y, label).
    public var guides: [(y: Double, label: String)] = []
    /// An x to mark with a vertical line (the chosen α).
    public var marked: (x: Double, label: String)? = nil

    public init(title: String, xLabel: String, xs: [Double], series: [Series], yMax: Double) {
        self.title = title; self.xLabel = xLabel; self.xs = xs; self.series = series; self.yMax = yMax
    }

    public func svg() -> String {
        let w = 720.0, h = 420.0, left = 60.0, right = 180.0, top = 40.0, bottom = 50.0
        let a0 = xs.min() ?? 0, a1 = max(xs.max() ?? 1, a0 + 1e-9)
        let ymax = yMax
        func x(_ a: Double) -> Double { left + (a - a0) / (a1 - a0) * (w - left - right) }
        func y(_ v: Double) -> Double { top + (1 - v / ymax) * (h - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(left)\" y=\"22\" font-size=\"15\">\(Self.escape(title))</text>\n"
        for k in 0...5 {
            let v = ymax * Double(k) / 5
            svg += "<line x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(y(v))\" y2=\"\(y(v))\" stroke=\"#ddd\"/><text x=\"\(left - 8)\" y=\"\(y(v) + 4)\" text-anchor=\"end\">\(TextFormat.fixed(v, 2))</text>\n"
        }
        let labelEvery = max(1, (xs.count + 10) / 11)   // at most ~11 labels, so they never overlap
        for (k, a) in xs.enumerated() where k % labelEvery == 0 || k == xs.count - 1 {
            svg += "<text x=\"\(x(a))\" y=\"\(h - bottom + 18)\" text-anchor=\"middle\">\(TextFormat.fixed(a, 2))</text>\n"
        }
        svg += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 10)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        for g in guides {
            svg += "<line class=\"guide\" x1=\"\(left)\" x2=\"\(w - right)\" y1=\"\(y(g.y))\" y2=\"\(y(g.y))\" stroke=\"#d62728\" stroke-dasharray=\"6 3\"/>"
                + "<text x=\"\(w - right - 4)\" y=\"\(y(g.y) - 4)\" text-anchor=\"end\" fill=\"#d62728\">\(Self.escape(g.label))</text>\n"
        }
        if let m = marked {
            svg += "<line class=\"marker\" x1=\"\(x(m.x))\" x2=\"\(x(m.x))\" y1=\"\(top)\" y2=\"\(h - bottom)\" stroke=\"#2ca02c\" stroke-width=\"1.5\"/>"
                + "<text x=\"\(x(m.x) + 4)\" y=\"\(top + 12)\" fill=\"#2ca02c\">\(Self.escape(m.label))</text>\n"
        }
        for (row, s) in series.enumerated() {
            let pts = zip(xs, s.values).map { "\(x($0)),\(y($1))" }.joined(separator: " ")
            svg += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\" stroke-dasharray=\"\(s.dash)\"/>\n" +
                "<line x1=\"\(w - right + 12)\" x2=\"\(w - right + 36)\" y1=\"\(top + 18.0 * Double(row))\" y2=\"\(top + 18.0 * Double(row))\" stroke=\"\(s.color)\" stroke-width=\"2\" stroke-dasharray=\"\(s.dash)\"/>" +
                "<text x=\"\(w - right + 42)\" y=\"\(top + 18.0 * Double(row) + 4)\">\(Self.escape(s.label))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
