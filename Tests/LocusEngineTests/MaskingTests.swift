import Foundation
import LocusTestSupport
import XCTest

@testable import LocusEngine

/// Mask selection (`Selection`) and TaLoS calibration (`Calibration`), docs/talos.md §Mask calibration:
/// exactly ⌊density · n⌋ entries, ties by position (tensors in order, C order inside), keep lowest/highest,
/// global/local, eligibility; rounds with densities d^(r/R), dropped entries never return and are scaled
/// by 0.1 in the forward pass while later rounds score; errors for bad densities and non-finite scores.
final class MaskingTests: EngineTestCase {
    // MARK: reference

    /// The rule, written directly: order the eligible entries by (key, position) and take the first k.
    func reference(_ scores: [[Float]], eligible: [[Bool]]? = nil, k: Int, keep: KeepRule) -> [[Bool]] {
        var entries: [(key: Float, pos: Int, t: Int, i: Int)] = []
        var pos = 0
        for (t, s) in scores.enumerated() {
            for (i, v) in s.enumerated() {
                if eligible?[t][i] ?? true { entries.append((keep == .lowest ? v : -v, pos, t, i)) }
                pos += 1
            }
        }
        entries.sort { ($0.key, $0.pos) < ($1.key, $1.pos) }
        var out = scores.map { [Bool](repeating: false, count: $0.count) }
        for e in entries.prefix(k) { out[e.t][e.i] = true }
        return out
    }

    func ones(_ m: [[Bool]]) -> Int { m.reduce(0) { $0 + $1.filter { $0 }.count } }
    func floorCount(_ d: Double, _ n: Int) -> Int { Int((d * Double(n)).rounded(.down)) }

    let shapes = [7, 13, 5]   // n = 25

    func scores(seed: UInt64, levels: Int? = nil, shapes: [Int]? = nil) -> [[Float]] {
        var rnd = TestRandom(seed)
        return (shapes ?? self.shapes).map { c in (0..<c).map { _ in levels.map { Float(rnd.below($0)) * 0.5 } ?? rnd.uniform(0, 3) } }
    }

    // MARK: Selection

    func testExactCountAndRuleGlobal() throws {
        // Hand-checked counts for n = 25: ⌊d · 25⌋.
        let expected: [(Double, Int)] = [(0.03, 0), (0.04, 1), (0.1, 2), (0.2, 5), (0.33, 8), (0.5, 12), (0.77, 19), (0.99, 24), (1.0, 25)]
        for levels in [nil, 4, 1] as [Int?] {          // distinct, many ties, all equal
            let s = scores(seed: 3, levels: levels)
            for keep in KeepRule.allCases {
                for (d, k) in expected {
                    let m = Selection.select(scores: s, eligible: nil, density: d, keep: keep, scope: .global)
                    XCTAssertEqual(m.map(\.count), shapes)
                    XCTAssertEqual(ones(m), k, "global density \(d) keep \(keep) levels \(levels.map(String.init) ?? "distinct")")
                    XCTAssertEqual(m, reference(s, k: k, keep: keep), "global density \(d) keep \(keep) levels \(levels.map(String.init) ?? "distinct"): selection rule")
                    // The count-based entry point agrees.
                    XCTAssertEqual(Selection.select(scores: s, eligible: nil, count: k, keep: keep), m)
                }
            }
        }
    }

    func testExactCountAndRuleLocal() throws {
        for levels in [nil, 3, 1] as [Int?] {
            let s = scores(seed: 4, levels: levels)
            for keep in KeepRule.allCases {
                for d in [0.1, 0.2, 0.3, 0.5, 0.6, 0.9, 1.0] {
                    let m = Selection.select(scores: s, eligible: nil, density: d, keep: keep, scope: .local)
                    for (t, c) in shapes.enumerated() {
                        XCTAssertEqual(m[t].filter { $0 }.count, floorCount(d, c), "local density \(d) tensor \(t) (\(c) entries)")
                        XCTAssertEqual(m[t], reference([s[t]], k: floorCount(d, c), keep: keep)[0], "local density \(d) keep \(keep) tensor \(t): rule")
                    }
                }
            }
        }
    }

    func testAllEqualScoresSelectTheFirstPositions() throws {
        let s = shapes.map { [Float](repeating: 2.5, count: $0) }
        for keep in KeepRule.allCases {
            // Global: the first k positions in model order (tensor 0 entirely, then tensor 1 in C order, …).
            let m = Selection.select(scores: s, eligible: nil, density: 0.4, keep: keep, scope: .global)   // k = 10
            XCTAssertEqual(m[0], [Bool](repeating: true, count: 7))
            XCTAssertEqual(m[1], [true, true, true] + [Bool](repeating: false, count: 10))
            XCTAssertEqual(m[2], [Bool](repeating: false, count: 5))
            // Local: the first ⌊d·n_t⌋ of every tensor.
            let l = Selection.select(scores: s, eligible: nil, density: 0.4, keep: keep, scope: .local)
            for (t, c) in shapes.enumerated() {
                let k = floorCount(0.4, c)
                XCTAssertEqual(l[t], [Bool](repeating: true, count: k) + [Bool](repeating: false, count: c - k), "local tensor \(t), keep \(keep)")
            }
        }
        // Ties only at the threshold: the strictly better ones all, then the tied ones by position.
        let t: [[Float]] = [[5, 1, 3, 3], [3, 0, 3]]
        XCTAssertEqual(Selection.select(scores: t, eligible: nil, count: 4, keep: .lowest), [[false, true, true, true], [false, true, false]])
        XCTAssertEqual(Selection.select(scores: t, eligible: nil, count: 3, keep: .highest), [[true, false, true, true], [false, false, false]])
        // −0 and +0 are the same score.
        XCTAssertEqual(Selection.select(scores: [[0, -0.0, 0, 1]], eligible: nil, count: 2, keep: .lowest), [[true, true, false, false]])
    }

    func testKeepLowestVersusHighest() throws {
        var rnd = TestRandom(9)
        let perm = rnd.rng.permutation(25).map(Float.init)   // distinct scores 0…24
        let s = [Array(perm[0..<7]), Array(perm[7..<20]), Array(perm[20..<25])]
        let low = Selection.select(scores: s, eligible: nil, density: 0.2, keep: .lowest, scope: .global)   // 5 smallest
        let high = Selection.select(scores: s, eligible: nil, density: 0.8, keep: .highest, scope: .global) // 20 largest
        for t in s.indices {
            for i in s[t].indices {
                XCTAssertEqual(low[t][i], s[t][i] < 5, "lowest keeps the 5 smallest scores")
                XCTAssertEqual(high[t][i], s[t][i] >= 5, "highest keeps the 20 largest scores")
                XCTAssertNotEqual(low[t][i], high[t][i], "complements")
            }
        }
    }

    func testEligibility() throws {
        let s = scores(seed: 12)
        var rnd = TestRandom(13)
        let eligible = shapes.map { c in (0..<c).map { _ in rnd.below(3) != 0 } }
        let nEligible = ones(eligible)
        for keep in KeepRule.allCases {
            for d in [0.1, 0.3, 0.5, 0.9, 1.0] {
                let m = Selection.select(scores: s, eligible: eligible, density: d, keep: keep, scope: .global)
                let k = min(nEligible, floorCount(d, 25))   // a fraction of all entries, never more than eligible
                XCTAssertEqual(ones(m), k, "density \(d): ⌊d · total⌋ capped by the eligible count")
                XCTAssertEqual(m, reference(s, eligible: eligible, k: k, keep: keep))
                for t in s.indices { for i in s[t].indices where !eligible[t][i] { XCTAssertFalse(m[t][i], "an ineligible entry is never selected") } }
                let l = Selection.select(scores: s, eligible: eligible, density: d, keep: keep, scope: .local)
                for t in s.indices {
                    let kt = min(eligible[t].filter { $0 }.count, floorCount(d, s[t].count))
                    XCTAssertEqual(l[t], reference([s[t]], eligible: [eligible[t]], k: kt, keep: keep)[0], "local tensor \(t) density \(d)")
                }
            }
        }
        // Ineligible entries with the best scores are skipped, not counted.
        let m = Selection.select(scores: [[0, 0, 5, 6, 7]], eligible: [[false, false, true, true, true]], count: 2, keep: .lowest)
        XCTAssertEqual(m, [[false, false, true, true, false]])
    }

    func testRandomMasks() throws {
        let counts = [7, 13, 5, 40]
        for scope in MaskScope.allCases {
            for d in [0.05, 0.1, 0.25, 0.5, 1.0] {
                let a = Selection.random(shapes: counts, density: d, scope: scope, seed: 7)
                XCTAssertEqual(a.map(\.count), counts)
                if scope == .global { XCTAssertEqual(ones(a), floorCount(d, 65), "random global density \(d)") }
                else { for (t, c) in counts.enumerated() { XCTAssertEqual(a[t].filter { $0 }.count, floorCount(d, c), "random local density \(d) tensor \(t)") } }
                XCTAssertEqual(Selection.random(shapes: counts, density: d, scope: scope, seed: 7), a, "seeded: reproducible")
                if d < 1 { XCTAssertNotEqual(Selection.random(shapes: counts, density: d, scope: scope, seed: 8), a, "another seed, another mask") }
            }
        }
        // Uniform over positions: each of 65 positions is picked ≈ d of the time over many seeds.
        let seeds = 400, d = 0.2
        var freq = [Int](repeating: 0, count: 65)
        for seed in 0..<seeds {
            for (j, b) in Selection.random(shapes: counts, density: d, scope: .global, seed: UInt64(seed)).flatMap({ $0 }).enumerated() where b { freq[j] += 1 }
        }
        let expected = Double(seeds) * Double(floorCount(d, 65)) / 65, sigma = (expected * (1 - expected / Double(seeds))).squareRoot()
        for (j, f) in freq.enumerated() { XCTAssertLessThanOrEqual(abs(Double(f) - expected), 5 * sigma, "random position \(j) picked \(f) times, expected ≈ \(expected)") }
    }

    // MARK: Calibration

    func makeParameters(_ shapes: [[Int]] = [[8, 5], [7], [3, 2, 2]]) -> [Parameter] {
        var rnd = TestRandom(1)
        return shapes.enumerated().map { k, s in Parameter(name: "p\(k)", value: rnd.tensor(s)) }
    }

    func testDefaultOptions() {
        let o = Calibration.Options(density: 0.1)
        XCTAssertEqual(o.rounds, 4); XCTAssertEqual(o.keep, .lowest); XCTAssertEqual(o.scope, .global); XCTAssertEqual(o.dropScale, 0.1)
    }

    func testRoundScheduleAndCounts() throws {
        let params = makeParameters()
        let total = params.reduce(0) { $0 + $1.value.count }   // 59
        for (d, rounds) in [(0.1, 4), (0.3, 4), (0.25, 2), (0.5, 1), (0.05, 3), (1.0, 4)] {
            var rounds_: [Calibration.Round] = []
            var o = Calibration.Options(density: d); o.rounds = rounds
            var r = 0
            let result = try Calibration.run(parameters: params, options: o, score: {
                r += 1
                return self.scores(seed: UInt64(100 + r), shapes: params.map(\.value.count))
            }, progress: { rounds_.append($0) })
            XCTAssertEqual(r, rounds, "every round re-scores")
            XCTAssertEqual(rounds_.map(\.round), Array(1...rounds))
            for x in rounds_ {
                let target = pow(d, Double(x.round) / Double(rounds))
                XCTAssertEqual(x.targetDensity, target, accuracy: 1e-15, "round \(x.round)/\(rounds): density d^(r/R)")
                XCTAssertEqual(x.ones, floorCount(target, total), "round \(x.round)/\(rounds) of d = \(d): ⌊target · total⌋ ones")
                XCTAssertEqual(x.total, total)
            }
            XCTAssertEqual(rounds_.last?.targetDensity, d, "the last round hits d exactly")
            XCTAssertEqual(ones(result.mask), floorCount(d, total))
            XCTAssertEqual(result.mask.map(\.count), params.map(\.value.count))
            XCTAssertTrue(params.allSatisfy { $0.forwardScale == nil }, "no forward scale is left behind")
        }
        // The TaLoS schedule for d = 0.1: 56.2 % → 31.6 % → 17.8 % → 10 %.
        var seen: [Double] = []
        _ = try Calibration.run(parameters: params, options: .init(density: 0.1), score: { self.scores(seed: 1, shapes: params.map(\.value.count)) },
                                progress: { seen.append($0.targetDensity) })
        XCTAssertEqual(seen.map { ($0 * 1000).rounded() / 10 }, [56.2, 31.6, 17.8, 10.0])
    }

    /// Dropped entries never come back even when their score becomes the best; during the remaining rounds
    /// their forward scale is 0.1 (alive: 1); after calibration every forwardScale is nil again. Each round's
    /// selection is the rule applied to that round's scores among the entries still alive.
    private func checkNeverReturn(keep: KeepRule, scope: MaskScope, file: StaticString = #filePath, line: UInt = #line) throws {
        let params = makeParameters()
        let counts = params.map(\.value.count), total = counts.reduce(0, +)
        var o = Calibration.Options(density: 0.1); o.keep = keep; o.scope = scope
        var round = 0
        var alive: [[[Bool]]] = []            // alive[r-1] = selection of round r (seen through forwardScale in round r+1)
        var roundScores: [[[Float]]] = []
        var rnd = TestRandom(77)
        var progress: [Calibration.Round] = []
        let result = try Calibration.run(parameters: params, options: o, score: {
            round += 1
            if round == 1 {
                XCTAssertTrue(params.allSatisfy { $0.forwardScale == nil }, "round 1 scores the unscaled model", file: file, line: line)
            } else {
                var a: [[Bool]] = []
                for p in params {
                    guard let s = p.forwardScale else { XCTFail("round \(round): \(p.name) has no forwardScale", file: file, line: line); a.append([]); continue }
                    XCTAssertEqual(s.count, p.value.count, file: file, line: line)
                    XCTAssertTrue(s.allSatisfy { $0 == 1 || $0 == Float(0.1) }, "round \(round): scales are 1 (alive) or 0.1 (dropped)", file: file, line: line)
                    a.append(s.map { $0 == 1 })
                }
                alive.append(a)
                XCTAssertEqual(self.ones(a), progress.last?.ones, "round \(round): alive entries = ones of the previous round", file: file, line: line)
                if alive.count >= 2 {
                    for (now, before) in zip(a.joined(), alive[alive.count - 2].joined()) where now {
                        XCTAssertTrue(before, "round \(round): an entry dropped earlier came back", file: file, line: line)
                    }
                }
            }
            // Dropped entries get the most attractive score (lowest for keep lowest, highest for keep highest).
            let best: Float = keep == .lowest ? 0 : 1000
            let s: [[Float]] = params.enumerated().map { t, p in
                (0..<p.value.count).map { i in
                    let dropped = round > 1 && !(alive.last![t][i])
                    return dropped ? best : rnd.uniform(1, 2)
                }
            }
            roundScores.append(s)
            return s
        }, progress: { progress.append($0) })
        XCTAssertEqual(round, 4, file: file, line: line)
        XCTAssertTrue(params.allSatisfy { $0.forwardScale == nil }, "forwardScale is nil after calibration", file: file, line: line)
        let selections = alive + [result.mask]
        for r in 1...4 {
            let target = pow(0.1, Double(r) / 4)
            let eligible = r == 1 ? nil : selections[r - 2]
            let expected: [[Bool]]
            if scope == .global {
                expected = reference(roundScores[r - 1], eligible: eligible, k: floorCount(target, total), keep: keep)
            } else {
                expected = counts.indices.map { t in
                    self.reference([roundScores[r - 1][t]], eligible: eligible.map { [$0[t]] }, k: self.floorCount(target, counts[t]), keep: keep)[0]
                }
            }
            XCTAssertEqual(selections[r - 1], expected, "round \(r) (\(keep), \(scope)): the rule among the entries still alive", file: file, line: line)
            if r > 1 {
                for (now, before) in zip(selections[r - 1].joined(), selections[r - 2].joined()) where now {
                    XCTAssertTrue(before, "round \(r): never-return", file: file, line: line)
                }
            }
        }
        if scope == .global { XCTAssertEqual(ones(result.mask), floorCount(0.1, total), file: file, line: line) }
        XCTAssertEqual(result.lastScores, roundScores.last!, file: file, line: line)
    }

    func testNeverReturnAndDropScaleKeepLowest() throws { try checkNeverReturn(keep: .lowest, scope: .global) }
    func testNeverReturnAndDropScaleKeepHighest() throws { try checkNeverReturn(keep: .highest, scope: .global) }
    func testNeverReturnAndDropScaleLocal() throws { try checkNeverReturn(keep: .lowest, scope: .local) }

    func testInvalidDensityAndRounds() throws {
        let params = makeParameters()
        for d in [0, -0.5, 1.5, 1.0000001, .nan, .infinity] {
            var called = false
            expectEngineError(["density"]) {
                _ = try Calibration.run(parameters: params, options: .init(density: d), score: { called = true; return [] })
            }
            XCTAssertFalse(called, "density \(d): refused before scoring")
        }
        var o = Calibration.Options(density: 0.5); o.rounds = 0
        expectEngineError(["rounds"]) { _ = try Calibration.run(parameters: params, options: o, score: { [] }) }
        // density 1: everything trainable.
        let all = try Calibration.run(parameters: params, options: .init(density: 1), score: { self.scores(seed: 2, shapes: params.map(\.value.count)) })
        XCTAssertTrue(all.mask.allSatisfy { $0.allSatisfy { $0 } })
    }

    func testNonFiniteScoresAreErrors() throws {
        let params = makeParameters()
        for (badRound, value) in [(1, Float.nan), (3, Float.infinity), (2, -Float.infinity)] {
            var r = 0
            expectEngineError([params[1].name, "finite"]) {
                _ = try Calibration.run(parameters: params, options: .init(density: 0.2), score: {
                    r += 1
                    var s = self.scores(seed: UInt64(r), shapes: params.map(\.value.count))
                    if r == badRound { s[1][3] = value }
                    return s
                })
            }
            XCTAssertEqual(r, badRound, "stops in the round that produced \(value)")
            XCTAssertTrue(params.allSatisfy { $0.forwardScale == nil }, "forwardScale is reset after an error")
        }
    }

    /// Calibration with the real scorer on a small MLP: exact counts, forward scales honoured by the scores.
    func testCalibrationWithScorer() throws {
        let model = try Model(.mlp(input: [12], hidden: [8, 6], classes: 4), seed: 3)
        var rnd = TestRandom(5)
        let x = rnd.normalTensor([5, 12], scale: 1.5), y = [0, 1, 2, 3, 1]
        let params = Scorer.defaultParameters(model)
        let total = params.reduce(0) { $0 + $1.value.count }
        var perRound: [[[Float]]] = []
        var o = Calibration.Options(density: 0.1); o.rounds = 4
        var progress: [Calibration.Round] = []
        let result = try Calibration.run(parameters: params, options: o, score: {
            let s = try Scorer(model: model, head: "default", estimator: .talosExact, parameters: params)
            try s.accumulate(x, labels: y)
            perRound.append(s.sums)
            return s.sums
        }, progress: { progress.append($0) })
        XCTAssertEqual(progress.map(\.ones), (1...4).map { floorCount(pow(0.1, Double($0) / 4), total) })
        XCTAssertEqual(ones(result.mask), floorCount(0.1, total))
        XCTAssertTrue(params.allSatisfy { $0.forwardScale == nil })
        XCTAssertNotEqual(perRound[0], perRound[1], "round 2 scores the model with dropped entries scaled by 0.1")
        // Round 1 is a plain selection of the unscaled scores.
        let s1 = try Scorer(model: model, head: "default", estimator: .talosExact)
        try s1.accumulate(x, labels: y)
        XCTAssertEqual(s1.sums.map(bits), perRound[0].map(bits))
    }
}
