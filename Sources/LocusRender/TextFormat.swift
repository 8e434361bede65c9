import Foundation

/// Numbers and sizes as the text reports and plots print them: locale-independent, NaN and
/// infinities as numpy prints them.
public enum TextFormat {
    /// `x` rounded to `digits` decimal places, printed as Swift prints a Double.
    public static func fixed(_ x: Double, _ digits: Int = 4) -> String {
        let p = pow(10.0, Double(digits))
        return String((x * p).rounded() / p)
    }
    public static func percent(_ x: Double?) -> String { x.map { String(format1: $0 * 100) + "%" } ?? "-" }
    public static func number(_ x: Double?) -> String {
        guard let x else { return "-" }
        if x == 0 { return "0" }
        if !x.isFinite { return nonFinite(x) }
        let a = abs(x)
        if a >= 1e-3 && a < 1e5 {
            let s = String(Double((x * 10000).rounded()) / 10000)
            return s.hasSuffix(".0") ? String(s.dropLast(2)) : s
        }
        return scientific(x)
    }
    /// NaN and infinities print as numpy does, never through an integer conversion (which traps).
    public static func nonFinite(_ x: Double) -> String { x.isNaN ? "nan" : (x < 0 ? "-inf" : "inf") }
    public static func scientific(_ x: Double) -> String {
        if !x.isFinite { return nonFinite(x) }
        let e = Int(floor(log10(abs(x))))
        let m = x / pow(10, Double(e))
        return "\(Double((m * 100).rounded()) / 100)e\(e)"
    }
    public static func bytes(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n), u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format1: v) + " " + units[u]
    }
}

extension String {
    /// One decimal place, without Foundation's locale-dependent formatting.
    init(format1 x: Double) {
        let r = (x * 10).rounded() / 10
        self = r.isFinite ? String(r) : String(x)
    }
    func padding(_ w: Int) -> String { count >= w ? self : self + String(repeating: " ", count: w - count) }
    func leftPadding(_ w: Int) -> String { count >= w ? self : String(repeating: " ", count: w - count) + self }
}
