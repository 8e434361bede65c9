import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// Unit tests of the merge building blocks (docs/talos.md §Merging task vectors):
/// `ExactTopK` against sorting (ties, zeros, keep ≥ n, many magnitudes), `Breadcrumbs.keep` against
/// a sort-based reference, `Merger.dareKeepMask` determinism, and `TaskArithmetic.diff` / `apply`
/// round trips in float32 and bfloat16.
final class MergeTests: ScratchDirectoryTestCase {
    // MARK: - ExactTopK

    /// The k-th largest by sorting (the definition), +∞ for k ≤ 0; for k ≥ n any t ≤ min keeps all.
    private func sortedThreshold(_ v: [Float], _ k: Int) -> Float? {
        guard k > 0 else { return .infinity }
        guard k < v.count else { return nil }   // "keep everything": checked by counting
        return v.sorted(by: >)[k - 1]
    }

    private func checkTopK(_ v: [Float], _ k: Int, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let t = ExactTopK.threshold(values: v, keep: k)
        let kept = v.filter { $0 >= t }.count
        if k <= 0 {
            XCTAssertEqual(t, .infinity, "\(what): keep 0 → +∞", file: file, line: line)
            XCTAssertEqual(kept, 0, file: file, line: line)
        } else if let want = sortedThreshold(v, k) {
            XCTAssertEqual(t.bitPattern, want.bitPattern, "\(what): k=\(k) n=\(v.count) threshold \(t) != sorted \(want)", file: file, line: line)
            XCTAssertGreaterThanOrEqual(kept, k, "\(what): at least k kept", file: file, line: line)
            XCTAssertLessThan(v.filter { $0 > t }.count, k, "\(what): fewer than k strictly above", file: file, line: line)
        } else {
            XCTAssertEqual(kept, v.count, "\(what): keep=\(k) ≥ n=\(v.count) keeps everything", file: file, line: line)
        }
        // Streaming form, fed in uneven chunks, must agree with the array form.
        let chunked = ExactTopK.threshold(passes: { body in
            var s = 0, c = 1
            while s < v.count { let e = min(v.count, s + c); body(Array(v[s..<e])); s = e; c = c * 2 + 1 }
        }, keep: k)
        XCTAssertEqual(chunked.bitPattern, t.bitPattern, "\(what): streaming form differs (k=\(k))", file: file, line: line)
    }

    func testExactTopKMatchesSortingOnRandomValues() {
        var rng = SplitMix(7)
        for n in [1, 2, 3, 10, 257, 5000] {
            let v = (0..<n).map { _ in Float(abs(rng.normal())) }
            for k in Set([0, 1, 2, n / 3, n / 2, n - 1, n, n + 1, n + 50]) where k >= 0 { checkTopK(v, k, "normal n=\(n)") }
        }
    }

    func testExactTopKWithTiesAndZeros() {
        var rng = SplitMix(11)
        // Few distinct values (many ties), a third of them zero: the threshold is a tied value and
        // "≥ t" keeps every copy of it.
        let v = (0..<3000).map { _ -> Float in rng.unit() < 0.33 ? 0 : Float(Int(rng.unit() * 7)) * 0.25 }
        for k in [1, 5, 100, 999, 1000, 1500, 2000, 2010, 2999, 3000, 4000] { checkTopK(v, k, "ties") }
        let same = [Float](repeating: 0.5, count: 64)
        for k in [1, 32, 63, 64, 65] {
            checkTopK(same, k, "all equal")
            XCTAssertEqual(same.filter { $0 >= ExactTopK.threshold(values: same, keep: k) }.count, 64, "ties keep all copies")
        }
        let zeros = [Float](repeating: 0, count: 10)
        checkTopK(zeros, 3, "all zero")
        XCTAssertEqual(ExactTopK.threshold(values: [], keep: 1), 0, "nothing to rank: keep all (= nothing)")
        XCTAssertEqual(ExactTopK.threshold(values: [1, 2], keep: 0), .infinity, "keep 0 → +∞")
    }

    func testExactTopKOverManyMagnitudesAndWithinOneBucket() {
        var rng = SplitMix(3)
        // Values from subnormals to 1e30: many histogram buckets.
        var v = (0..<4000).map { _ in Float(pow(10.0, rng.unit() * 60 - 30)) }
        v += [Float.leastNonzeroMagnitude, Float.leastNormalMagnitude, Float.greatestFiniteMagnitude, 0, 0]
        for k in [1, 2, 17, 2000, 3999, 4004, 4005] { checkTopK(v, k, "magnitudes") }
        // Values that share their top 16 bits (one bucket): the second pass must order them exactly.
        let one = (0..<1000).map { i in Float(bitPattern: 0x3F80_0000 | UInt32((i * 37) % 65536)) }
        for k in [1, 10, 500, 999] { checkTopK(one, k, "one bucket") }
        // Neighbouring buckets straddling the threshold.
        let two = (0..<200).map { i in Float(bitPattern: 0x3F80_FFF0 &+ UInt32(i % 32)) }
        for k in [1, 16, 100, 150, 199] { checkTopK(two, k, "two buckets") }
    }

    /// `ExactTopK.ranks` (the value at a rank and how many values exceed it, with implicit zeros)
    /// against sorting, and the per-tensor Breadcrumbs rule built on it — streamed in position order,
    /// ties at the boundaries by position — against `Breadcrumbs.keep`.
    func testExactRanksAndStreamedBreadcrumbsRuleMatchSorting() {
        var rng = SplitMix(19)
        for (n, stored) in [(1, 1), (10, 4), (300, 300), (3000, 1200)] {
            // Few distinct magnitudes (many ties), signs mixed, some stored zeros; the rest implicit zeros.
            var dense = [Float](repeating: 0, count: n)
            var positions = Array(0..<n)
            for i in stride(from: n - 1, to: 0, by: -1) { positions.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
            for i in positions.prefix(stored) { dense[i] = Float(Int(rng.unit() * 6)) * 0.25 * (rng.unit() < 0.5 ? -1 : 1) }
            let storedValues = (0..<n).filter { positions.prefix(stored).contains($0) }.map { abs(dense[$0]) }
            let sorted = dense.map { abs($0) }.sorted(by: >)
            let wanted = Array(Set([0, n / 3, n / 2, n - 1].filter { $0 >= 0 && $0 < n })).sorted()
            for r in wanted {
                for pair in [[r], [0, r]] {
                    let found = ExactTopK.ranks(pair, total: n) { body in storedValues.withUnsafeBufferPointer { body($0) } }
                    let last = found.last!
                    XCTAssertEqual(last.value, sorted[r], "n=\(n) rank \(r)")
                    XCTAssertEqual(last.greater, sorted.filter { $0 > sorted[r] }.count, "n=\(n) rank \(r): greater")
                }
            }
            for (beta, gamma) in [(0.2, 0.1), (0.5, 0.5), (0.3, 0.0), (1.0, 0.0), (0.05, 0.02)] {
                let want = Breadcrumbs.keep(dense, beta: beta, gamma: gamma)
                let drop = Int(gamma * Double(n)), end = min(n, drop + Int(beta * Double(n)))
                var rule = BreadcrumbsDirection.TensorRule(drop: drop, end: end, total: n)
                var ranks: [Int] = []
                if drop > 0 { ranks.append(drop - 1) }
                if end < n && end > drop { ranks.append(end - 1) }
                let found = ExactTopK.ranks(ranks, total: n) { body in storedValues.withUnsafeBufferPointer { body($0) } }
                var k = 0
                if drop > 0 { rule.dropValue = found[k].value; rule.dropTies = drop - found[k].greater; k += 1 }
                if end < n && end > drop { rule.endValue = found[k].value; rule.endTies = end - found[k].greater }
                let got = (0..<n).map { i in positions.prefix(stored).contains(i) ? rule.keep(dense[i]) : false }
                XCTAssertEqual(got, want, "n=\(n) β=\(beta) γ=\(gamma)")
            }
        }
    }

    // MARK: - Breadcrumbs

    /// Reference: stable sort by |v| descending (ties: earlier position first), drop ⌊γn⌋, keep the
    /// next ⌊βn⌋ that are non-zero.
    private func breadcrumbsReference(_ v: [Float], beta: Double, gamma: Double) -> [Bool] {
        let n = v.count
        let order = (0..<n).map { ($0, abs(v[$0])) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }.map(\.0)
        let drop = Int(gamma * Double(n)), take = Int(beta * Double(n))
        var out = [Bool](repeating: false, count: n)
        for r in drop..<min(n, drop + take) where v[order[r]] != 0 { out[order[r]] = true }
        return out
    }

    func testBreadcrumbsKeepDropsTheTopGammaAndKeepsTheNextBeta() {
        // Hand-checked: |v| ranks 9 8 7 6 5 4 3 2 1 0 → γ = 0.1 drops one (the 9), β = 0.3 keeps 8, 7, 6.
        let v: [Float] = [1, -9, 0, 4, 7, -3, 2, 8, -6, 5]
        XCTAssertEqual(Breadcrumbs.keep(v, beta: 0.3, gamma: 0.1),
                       [false, false, false, false, true, false, false, true, true, false])
        // Ties by position: equal magnitudes, earlier first.
        let t: [Float] = [2, -2, 2, -2, 1, 1]
        XCTAssertEqual(Breadcrumbs.keep(t, beta: 0.5, gamma: 0.0), [true, true, true, false, false, false])
        XCTAssertEqual(Breadcrumbs.keep(t, beta: 0.34, gamma: 0.34), [false, false, true, true, false, false])
        // Zeros are never "kept" (they contribute nothing), and β + γ = 1 covers everything else.
        XCTAssertEqual(Breadcrumbs.keep([0, 0, 3, 0], beta: 1, gamma: 0), [false, false, true, false])
        XCTAssertEqual(Breadcrumbs.keep([5, 1, 3, 2], beta: 0.75, gamma: 0.25), [false, true, true, true])
        XCTAssertEqual(Breadcrumbs.keep([5, 1, 3], beta: 0.67, gamma: 0.33), [true, false, true], "⌊0.33·3⌋ = 0 dropped, ⌊0.67·3⌋ = 2 kept")
        XCTAssertEqual(Breadcrumbs.keep([], beta: 0.2, gamma: 0.1), [])
        XCTAssertEqual(Breadcrumbs.keep([4], beta: 0.2, gamma: 0.1), [false], "⌊0.2·1⌋ = 0 kept")
    }

    func testBreadcrumbsKeepMatchesReferenceOnRandomSegments() {
        var rng = SplitMix(5)
        for n in [1, 7, 10, 33, 100, 1000] {
            for (beta, gamma) in [(0.2, 0.1), (0.5, 0.0), (0.3, 0.7), (0.05, 0.25), (1.0, 0.0)] {
                // Quantised values: plenty of ties and zeros.
                let v = (0..<n).map { _ -> Float in rng.unit() < 0.2 ? 0 : Float(Int(rng.normal() * 4)) * 0.5 }
                XCTAssertEqual(Breadcrumbs.keep(v, beta: beta, gamma: gamma), breadcrumbsReference(v, beta: beta, gamma: gamma),
                               "n=\(n) β=\(beta) γ=\(gamma)")
            }
        }
    }

    // MARK: - DARE keep mask

    func testDareKeepMaskIsDeterministicAndHasTheRightRate() {
        var o = MergeOptions()
        o.dareDropRate = 0.7; o.seed = 42
        let a = Merger.dareKeepMask(count: 20000, vector: 1, tensor: "layers.0.weight", options: o)
        XCTAssertEqual(a, Merger.dareKeepMask(count: 20000, vector: 1, tensor: "layers.0.weight", options: o), "same inputs, same mask")
        XCTAssertEqual(Array(a.prefix(100)), Merger.dareKeepMask(count: 100, vector: 1, tensor: "layers.0.weight", options: o), "prefix-stable")
        XCTAssertNotEqual(a, Merger.dareKeepMask(count: 20000, vector: 0, tensor: "layers.0.weight", options: o), "vector changes the stream")
        XCTAssertNotEqual(a, Merger.dareKeepMask(count: 20000, vector: 1, tensor: "layers.0.bias", options: o), "tensor name changes the stream")
        let rate = Double(a.filter { $0 }.count) / 20000
        XCTAssertEqual(rate, 0.3, accuracy: 0.02, "keep rate ≈ 1 − p")
        o.dareDropRate = 0
        XCTAssertTrue(Merger.dareKeepMask(count: 1000, vector: 3, tensor: "x", options: o).allSatisfy { $0 }, "p = 0 keeps all")
        // Reproduce the documented generator: SplitMix64 seeded with seed ^ FNV-1a(name) ^ vector·golden.
        o.dareDropRate = 0.5; o.seed = 9
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in "w".utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        var s = SplitMix(9 ^ h ^ (2 &* 0x9E37_79B9_7F4A_7C15))
        let want = (0..<64).map { _ in s.unit() >= 0.5 }
        XCTAssertEqual(Merger.dareKeepMask(count: 64, vector: 2, tensor: "w", options: o), want)
    }

    // MARK: - diff / apply round trip

    private func writeCheckpoint(_ name: String, _ tensors: [(String, LocusDType, [Int], [Float])]) throws -> String {
        let p = path(name)
        let w = try CheckpointWriter(path: p)
        for (n, dtype, shape, values) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) {
            try w.add(name: n, values: values, shape: shape, dtype: dtype)
        }
        _ = try w.finish()
        return p
    }

    private func rawTensors(_ file: String) throws -> [String: [UInt8]] {
        let r = try CheckpointReader(path: file)
        return Dictionary(uniqueKeysWithValues: try r.tensors.map { ($0.name, try r.readRaw($0)) })
    }

    private func roundTrip(_ dtype: LocusDType, seed: UInt64) throws {
        var rng = SplitMix(seed)
        func normals(_ n: Int) -> [Float] { (0..<n).map { _ in Float(rng.normal()) } }
        let shapes: [(String, [Int])] = [("a.weight", [17, 9]), ("a.bias", [17]), ("conv", [3, 2, 3, 3]), ("s", [])]
        let base = shapes.map { ($0.0, dtype, $0.1, normals(max(1, $0.1.reduce(1, *)))) }
        // Fine-tuned: a third of the entries move (some by one ulp of the dtype, some a lot).
        let ft = base.map { (n, d, s, v) -> (String, LocusDType, [Int], [Float]) in
            (n, d, s, v.map { x -> Float in
                let u = rng.unit()
                if u < 0.2 { return x + Float(rng.normal()) * 0.01 }
                if u < 0.3 { return d == .bfloat16 ? x * (1 + 1.0 / 128) : x.nextUp }
                if u < 0.33 { return -x }
                return x
            })
        }
        let bp = try writeCheckpoint("base-\(dtype)-\(seed).h5", base), fp = try writeCheckpoint("ft-\(dtype)-\(seed).h5", ft)
        let tv = path("tv-\(dtype)-\(seed).h5")
        let summary = try TaskArithmetic.diff(base: bp, finetuned: fp, output: tv)
        XCTAssertGreaterThan(summary.nnz, 0)
        let back = path("back-\(dtype)-\(seed).h5")
        try TaskArithmetic.apply(base: bp, taskVector: tv, alpha: 1, output: back)
        XCTAssertEqual(try rawTensors(back), try rawTensors(fp), "\(dtype): base + τ reproduces the fine-tuned bits")
        XCTAssertEqual(try CheckpointReader(path: back).fingerprint, try CheckpointReader(path: fp).fingerprint)
        let zero = path("zero-\(dtype)-\(seed).h5")
        try TaskArithmetic.apply(base: bp, taskVector: tv, alpha: 0, output: zero)
        XCTAssertEqual(try rawTensors(zero), try rawTensors(bp), "\(dtype): α = 0 gives the base")
        // Negation then addition: θ0 − τ + τ through two applies lands back on the base for exact τ
        // whenever θ0 − τ is representable; at least the τ of each entry is θ_ft − θ_0 exactly.
        let r = try TaskVectorReader(path: tv), b = try CheckpointReader(path: bp), f = try CheckpointReader(path: fp)
        for t in r.tensors {
            let (idx, val) = try r.readSparse64(t)
            let b64 = try b.readFloat64(b.tensor(named: t.name)!), f64 = try f.readFloat64(f.tensor(named: t.name)!)
            // τ is exact or, when stored as float32, exact enough that θ0 + τ rounds back to θ_ft in the dtype
            for (i, v) in zip(idx, val) {
                let back = [Float(b64[i] + v)].withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }
                let want = [Float(f64[i])].withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }
                XCTAssertEqual(back, want, "\(t.name)[\(i)]: θ0 + τ = θ_ft")
            }
            let changed = (0..<b64.count).filter { b64[$0] != f64[$0] }
            XCTAssertEqual(idx, changed, "\(t.name): exactly the changed entries are stored")
        }
    }

    func testDiffApplyRoundTripFloat32() throws { try roundTrip(.float32, seed: 1); try roundTrip(.float32, seed: 2) }
    func testDiffApplyRoundTripBFloat16() throws { try roundTrip(.bfloat16, seed: 3); try roundTrip(.bfloat16, seed: 4) }
}

/// SplitMix64 with a Box–Muller normal: the documented DARE generator, also used for test data.
private struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    mutating func normal() -> Double {
        let u = max(unit(), 1e-300), v = unit()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
}
