/// The summary statistics writers store as attributes (spec §1.7), computed in float64.
public enum Summaries {
    /// min, 25 %, 50 %, 75 %, max with numpy's default linear interpolation; empty for no values.
    public static func quantiles(_ values: UnsafeBufferPointer<Float>) -> [Double] {
        guard !values.isEmpty else { return [] }
        // IEEE total order: NaNs sort to the ends instead of breaking the comparison sort.
        let sorted = values.map(Double.init).sorted { !$1.isTotallyOrdered(belowOrEqualTo: $0) }
        return [0, 0.25, 0.5, 0.75, 1].map { q in
            let pos = q * Double(sorted.count - 1)
            let lo = Int(pos.rounded(.down)), hi = min(lo + 1, sorted.count - 1)
            let t = pos - Double(lo)
            return sorted[lo] + (sorted[hi] - sorted[lo]) * t
        }
    }

    public static func sum(_ values: UnsafeBufferPointer<Float>) -> Double {
        var s = 0.0
        for v in values { s += Double(v) }
        return s
    }

    public static func sumOfSquares(_ values: UnsafeBufferPointer<Float>) -> Double {
        var s = 0.0
        for v in values { s += Double(v) * Double(v) }
        return s
    }

    public static func nonzeroCount(_ values: UnsafeBufferPointer<Float>) -> Int {
        var n = 0
        for v in values where v != 0 { n += 1 }
        return n
    }

    /// Relative comparison used by the validator for stored float summaries.
    public static func close(_ a: Double, _ b: Double, relative: Double = 1e-6) -> Bool {
        if a == b { return true }
        return abs(a - b) <= relative * max(abs(a), abs(b)) + 1e-300
    }
}
