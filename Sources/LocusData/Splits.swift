import LocusFormat

/// Named fractions such as `train 0.8, val 0.1, test 0.1`.
public struct SplitFractions: Sendable, Equatable, CustomStringConvertible {
    public var parts: [(name: String, fraction: Double)]

    public static func == (a: SplitFractions, b: SplitFractions) -> Bool {
        a.parts.map(\.name) == b.parts.map(\.name) && a.parts.map(\.fraction) == b.parts.map(\.fraction)
    }

    /// Fractions that must each be ≥ 0 and add up to 1 (within 1e-9).
    public init(_ parts: [(name: String, fraction: Double)]) throws(SpecificationError) {
        let text = parts.map { "\($0.name)=\($0.fraction)" }.joined(separator: ",")
        guard !parts.isEmpty else { throw SpecificationError(.split, text: text, reason: "needs at least one fraction") }
        for p in parts where !(p.fraction >= 0 && p.fraction <= 1) {
            throw SpecificationError(.split, text: text, reason: "fraction \(p.fraction) for '\(p.name)' is outside [0, 1]")
        }
        let sum = parts.reduce(0) { $0 + $1.fraction }
        guard abs(sum - 1) <= 1e-9 else {
            throw SpecificationError(.split, text: text, reason: "fractions \(parts.map { "\($0.fraction)" }.joined(separator: ",")) add up to \(sum), expected 1")
        }
        guard Set(parts.map(\.name)).count == parts.count else { throw SpecificationError(.split, text: text, reason: "split names repeat") }
        self.parts = parts
    }

    /// `"0.8,0.1,0.1"` → train/val/test; `"0.9,0.1"` → train/test; `"1"` → train.
    public init(parsing text: String) throws(SpecificationError) {
        let values = text.split(separator: ",", omittingEmptySubsequences: false).map { Double($0.trimmingSpaces()) }
        guard (1...3).contains(values.count), values.allSatisfy({ $0 != nil }) else {
            throw SpecificationError(.split, text: text, reason: "is not 1 to 3 comma-separated fractions such as 0.8,0.1,0.1 (train,val,test) or 0.9,0.1 (train,test)")
        }
        let names = [["train"], ["train", "test"], ["train", "val", "test"]][values.count - 1]
        do { try self.init(zip(names, values.map { $0! }).map { (name: $0, fraction: $1) }) } catch {
            throw SpecificationError(.split, text: text, reason: error.reason)
        }
    }

    public var description: String { parts.map { "\($0.name)=\($0.fraction)" }.joined(separator: ",") }
}

/// Deterministic splits.
///
/// Algorithm (reproducible from this description, e.g. in numpy — see interop/tests/test_data_import.py):
/// one `SplitMix64(seed)` stream serves the whole call. Stratified: for each class c in ascending
/// order, take the indices of `among` whose label is c (ascending), shuffle them with Fisher–Yates
/// (`SplitMix64.shuffle`) and cut them at the boundaries `floor(n_c · F_k + 0.5)`, where F_k is the
/// running sum of the fractions in the order given (the last boundary is n_c). Not stratified:
/// the same with all of `among` as one group. Each split is then sorted. Splits are disjoint and
/// cover `among` exactly; stratified splits keep every class's proportion up to rounding.
public enum Splits {
    public static func make(labels: [Int64], among: [Int]? = nil, fractions: SplitFractions,
                            seed: UInt64, stratified: Bool = true) -> [String: [Int]] {
        let pool = among ?? Array(labels.indices)
        var groups: [[Int]]
        if stratified {
            let byClass = Dictionary(grouping: pool, by: { labels[$0] })
            groups = byClass.keys.sorted().map { byClass[$0]!.sorted() }
        } else {
            groups = [pool.sorted()]
        }
        var rng = SplitMix64(seed: seed)
        var out = [String: [Int]]()
        for p in fractions.parts { out[p.name] = [] }
        for var g in groups {
            rng.shuffle(&g)
            let n = g.count
            var start = 0, cumulative = 0.0
            for (k, p) in fractions.parts.enumerated() {
                cumulative += p.fraction
                let end = k == fractions.parts.count - 1 ? n : min(n, max(start, Int((Double(n) * cumulative + 0.5).rounded(.down))))
                out[p.name]!.append(contentsOf: g[start..<end])
                start = end
            }
        }
        for k in out.keys { out[k]!.sort() }
        return out
    }
}
