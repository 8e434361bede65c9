import Foundation
import LocusFormat

/// The histogram of log10(score) over a scores file, built by reading one tensor at a time.
public struct ScoreHistogram: Sendable, Equatable {
    /// Values equal to 0.
    public var zeros = 0
    /// Counts of positive values in equal-width bins of log10(score) over [lo, hi]; empty when no value is positive.
    public var counts: [Int] = []
    /// log10 of the smallest and largest positive value.
    public var lo = 0.0, hi = 0.0
    public var minPositive: Double?, maxPositive: Double?
    /// Negative or non-finite values (never in a valid file).
    public var invalid = 0
    public var total: Int { zeros + invalid + counts.reduce(0, +) }

    /// The x range to draw: [lo, hi], widened when it is a single point or empty.
    public var displayRange: (Double, Double) {
        if counts.isEmpty { return (-1, 1) }
        return hi > lo ? (lo, hi) : (lo - 0.5, hi + 0.5)
    }

    /// Reads the tensors `names` of the scores file at `path`. The positive range comes from the stored
    /// quantiles where a tensor's minimum is positive, and from the values otherwise; if the values turn out
    /// to lie outside it (stale attributes), the binning is redone with the range the values show.
    public static func read(_ path: String, tensors names: [String], quantiles: [[Double]?], bins: Int = 40) throws -> ScoreHistogram {
        let s = try ScoresReader(path: path)
        let byName = Dictionary(s.tensors.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let tensors = try names.map { n in
            guard let t = byName[n] ?? s.tensor(named: n) else { throw LocusError(file: path, object: "/tensors", "no tensor named '\(n)'") }
            return t
        }
        func positiveRange(_ v: [Float]) -> (Double, Double)? {
            var lo = Float.infinity, hi: Float = 0
            for x in v where x > 0 && x.isFinite { lo = min(lo, x); hi = max(hi, x) }
            return hi > 0 ? (Double(lo), Double(hi)) : nil
        }
        // Pass 1: the positive range.
        var lo = Double.infinity, hi = 0.0
        for (t, q) in zip(tensors, quantiles) where t.count > 0 {
            if let q, q.count == 5, q[0] > 0, q[4].isFinite {
                lo = min(lo, q[0]); hi = max(hi, q[4])
            } else if let r = positiveRange(try s.read(t)) {
                lo = min(lo, r.0); hi = max(hi, r.1)
            }
        }
        // Pass 2: the counts (at most twice, see above).
        for _ in 0..<2 {
            var h = ScoreHistogram()
            if hi > 0 {
                h.minPositive = lo; h.maxPositive = hi
                h.lo = log10(lo); h.hi = log10(hi)
                h.counts = [Int](repeating: 0, count: bins)
            }
            let width = h.hi - h.lo
            var seenLo = Double.infinity, seenHi = 0.0
            for t in tensors where t.count > 0 {
                let v = try s.read(t)
                v.withUnsafeBufferPointer { p in
                    for x in p {
                        if x == 0 { h.zeros += 1; continue }
                        guard x > 0, x.isFinite else { h.invalid += 1; continue }
                        let d = Double(x)
                        seenLo = min(seenLo, d); seenHi = max(seenHi, d)
                        guard !h.counts.isEmpty else { continue }
                        let i = width > 0 ? Int((log10(d) - h.lo) / width * Double(bins)) : bins / 2
                        h.counts[min(bins - 1, max(0, i))] += 1
                    }
                }
            }
            if seenHi == 0 || (seenLo >= lo && seenHi <= hi) { return h }
            lo = seenLo; hi = seenHi
        }
        throw LocusError(file: path, "the scores changed while they were being read")
    }
}
