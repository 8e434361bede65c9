import Foundation

/// Where the name column, plot area and right-hand label column go for a list of tensors.
struct RowLayout {
    let margin = 16.0
    let plotX: Double, plotW: Double
    let nameChars: Int

    init(names: [String], rightLabels: [String], minimumPlotX: Double = 0) {
        let cw = SVG.charWidth(12)
        let right = Double(min(32, rightLabels.map(\.count).max() ?? 0)) * cw + 16
        let available = InspectPlot.width - 2 * margin - right
        // Names get at most 48 characters and never squeeze the plot below 55 % of the width.
        let longest = min(48, names.map(\.count).max() ?? 0)
        let maxChars = Int((available * 0.45 - 12) / cw)
        nameChars = max(8, min(longest, maxChars))
        plotX = max(minimumPlotX, margin + Double(nameChars) * cw + 12)
        plotW = InspectPlot.width - margin - right - plotX
    }

    /// The name, shortened in the middle with "…" when it does not fit.
    func fitName(_ name: String) -> String {
        guard name.count > nameChars else { return name }
        let keep = nameChars - 1, head = keep / 2, tail = keep - head
        return String(name.prefix(head)) + "…" + String(name.suffix(tail))
    }
}

/// A minimal SVG document builder. All text goes through `xmlEscape`.
struct SVG {
    let height: Double
    private var parts: [String] = []
    static let sans = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"
    static let mono = "DejaVu Sans Mono, Menlo, Consolas, monospace"

    init(height: Double) { self.height = height.rounded(.up) }

    /// Advance of one monospace character at `size` px (DejaVu Sans Mono: 0.602 em).
    static func charWidth(_ size: Double) -> Double { size * 0.61 }

    static func f(_ x: Double) -> String {
        let r = (x * 10).rounded() / 10
        let s = String(r)
        return s.hasSuffix(".0") ? String(s.dropLast(2)) : s
    }

    private static func attrs(_ a: [String: String]) -> String {
        a.sorted { $0.key < $1.key }.map { " \($0.key)=\"\(xmlEscape($0.value))\"" }.joined()
    }

    mutating func raw(_ s: String) { parts.append(s) }
    mutating func open(_ tag: String, _ a: [String: String]) { parts.append("<\(tag)\(SVG.attrs(a))>") }
    mutating func close(_ tag: String) { parts.append("</\(tag)>") }

    mutating func rect(_ x: Double, _ y: Double, _ w: Double, _ h: Double, fill: String, stroke: String? = nil,
                       attributes: [String: String] = [:]) {
        var a = attributes
        a["x"] = SVG.f(x); a["y"] = SVG.f(y); a["width"] = SVG.f(max(0, w)); a["height"] = SVG.f(max(0, h)); a["fill"] = fill
        if let stroke { a["stroke"] = stroke }
        parts.append("<rect\(SVG.attrs(a))/>")
    }

    mutating func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, stroke: String, width: Double = 1, dash: String? = nil,
                       attributes: [String: String] = [:]) {
        var a = attributes
        a["x1"] = SVG.f(x1); a["y1"] = SVG.f(y1); a["x2"] = SVG.f(x2); a["y2"] = SVG.f(y2)
        a["stroke"] = stroke; a["stroke-width"] = SVG.f(width)
        if let dash { a["stroke-dasharray"] = dash }
        parts.append("<line\(SVG.attrs(a))/>")
    }

    mutating func text(_ x: Double, _ y: Double, _ s: String, size: Double, anchor: String = "start", fill: String = "#000",
                       weight: String? = nil, mono: Bool = false, attributes: [String: String] = [:]) {
        var a = attributes
        a["x"] = SVG.f(x); a["y"] = SVG.f(y); a["font-size"] = SVG.f(size); a["fill"] = fill
        if anchor != "start" { a["text-anchor"] = anchor }
        if let weight { a["font-weight"] = weight }
        if mono { a["font-family"] = SVG.mono }
        parts.append("<text\(SVG.attrs(a))>\(xmlEscape(s))</text>")
    }

    mutating func title(_ s: String) {
        parts.append("<title>\(xmlEscape(s))</title>")
        text(16, 30, s, size: 16, fill: "#111", weight: "bold")
    }
    mutating func subtitle(_ s: String) { text(16, 52, s, size: 12, fill: "#555") }

    func render() -> String {
        let w = SVG.f(InspectPlot.width), h = SVG.f(height)
        return """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(w)" height="\(h)" viewBox="0 0 \(w) \(h)" font-family="\(SVG.sans)">
        <rect x="0" y="0" width="\(w)" height="\(h)" fill="#ffffff"/>
        \(parts.joined(separator: "\n"))
        </svg>

        """
    }
}

/// Escapes text for XML content and attribute values; characters XML 1.0 cannot hold become U+FFFD.
func xmlEscape(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.utf8.count)
    for u in s.unicodeScalars {
        switch u {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&apos;"
        case "\t", "\n", "\r": out.unicodeScalars.append(u)
        default:
            let v = u.value
            if v < 0x20 || (0xFFFE...0xFFFF).contains(v) { out += "\u{FFFD}" } else { out.unicodeScalars.append(u) }
        }
    }
    return out
}
