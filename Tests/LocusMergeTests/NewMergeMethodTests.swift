import Foundation
import LocusFormat
import LocusRandom
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// The methods added to the registry after its first release (docs/merging.md): DELLA's
/// magnitude-ranked drop (its keep probabilities, its expectation, its place in the
/// generalized-task-arithmetic table) and end-to-end merges through files. The comparisons with
/// numpy and mergekit are in interop/tests/test_merge_methods_new.py.
final class NewMergeMethodTests: ScratchDirectoryTestCase {
    /// A float32 checkpoint of `tensors` (name → shape, values).
    @discardableResult
    private func checkpoint(_ name: String, _ tensors: [(String, [Int], [Float])]) throws -> String {
        let p = path(name)
        let w = try CheckpointWriter(path: p, metadata: ["format": "pt"])
        for (n, shape, v) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) {
            try v.withUnsafeBytes { try w.add(name: n, dtype: .float32, shape: shape, bytes: $0) }
        }
        _ = try w.finish()
        return p
    }

    private func readAll(_ file: String) throws -> [String: [Float]] {
        let r = try CheckpointReader(path: file)
        return Dictionary(uniqueKeysWithValues: try r.tensors.map { t in
            (t.name, try r.readRaw(t).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
        })
    }

    private func options(_ method: String, _ set: (inout MergeOptions) -> Void = { _ in }) -> MergeOptions {
        var o = MergeOptions()
        o.method = MergeMethods.named(method)!
        set(&o)
        return o
    }

    // MARK: - DELLA

    func testMagPruneProbabilitiesRankTheWholeRowZerosFirst() {
        // A row of 6 entries of which 5 are stored ([0, 3, −1, 0, 2] at 0…4, entry 5 absent): three zeros rank
        // 0…2, then −1, 2, 3 rank 3, 4, 5; p = 0.3 + r/5 · 0.4. Stored zeros get the lowest window value.
        let p = MagPrune.probabilities([0, 3, -1, 0, 2], rowLength: 6, density: 0.5, epsilon: 0.2)
        let want = [0.3, 0.3 + 1.0 * 0.4, 0.3 + 0.6 * 0.4, 0.3, 0.3 + 0.8 * 0.4]
        for (a, b) in zip(p, want) { XCTAssertEqual(a, b, accuracy: 1e-15) }
        // Equal magnitudes rank by position (the earlier one lower), whatever their signs.
        let tie = MagPrune.probabilities([-2, 2, 1], rowLength: 3, density: 0.5, epsilon: 0.1)
        for (a, b) in zip(tie, [0.5, 0.6, 0.4]) { XCTAssertEqual(a, b, accuracy: 1e-15) }
        // One entry: the window's centre.
        XCTAssertEqual(MagPrune.probabilities([7], rowLength: 1, density: 0.3, epsilon: 0.1), [0.3])
    }

    func testMagPruneKeepsDensityOfEachRowAndTheExpectedValue() {
        // 2000 rows of 20 equal magnitudes: ranks are positions; about density of the entries are kept,
        // the first position with about density − ε, the last with about density + ε, and dividing by
        // p keeps the expected sum.
        let rows = 2000, n = 20
        var prune = MagPrune(density: 0.4, epsilon: 0.25, rescale: true, rowLength: n, random: [SplitMix64(seed: 77)],
                             wholeTensor: nil, cursor: [0])
        let b = EntryBlock(capacity: rows * n)
        for j in 0..<(rows * n) { b.offsets[j] = Int32(j); b.values[j] = j % 3 == 0 ? -1 : 1 }
        b.count = rows * n
        prune.apply(b, vector: 0)
        var byPosition = [Int](repeating: 0, count: n)
        var sum = 0.0
        for j in 0..<b.count { byPosition[Int(b.offsets[j]) % n] += 1; sum += Double(abs(b.values[j])) }
        XCTAssertEqual(Double(b.count) / Double(rows * n), 0.4, accuracy: 0.01)
        XCTAssertEqual(Double(byPosition[0]) / Double(rows), 0.15, accuracy: 0.03)
        XCTAssertEqual(Double(byPosition[n - 1]) / Double(rows), 0.65, accuracy: 0.04)
        XCTAssertEqual(sum / Double(rows * n), 1, accuracy: 0.03, "E[kept / p] = the value")
        for j in 0..<b.count {
            let p = MagPrune.probability(rank: Int(b.offsets[j]) % n, of: n, density: 0.4, epsilon: 0.25)
            XCTAssertEqual(abs(b.values[j]), Float(1 / p), "kept entries are divided by their own p")
        }
    }

    func testDellaIsAGeneralizedTaskArithmeticComposition() {
        for (name, elect) in [("della", true), ("della_linear", false)] {
            guard let k = MergeMethods.named(name)?.producer.directionKernel as? GTAKernel else { return XCTFail(name) }
            XCTAssertTrue(k.composition.magPrune, name)
            XCTAssertEqual(k.composition.signElection, elect, name)
            XCTAssertFalse(k.composition.random || k.composition.magnitude || k.composition.outliers, name)
            XCTAssertEqual(Set(MergeMethods.provenance(options(name)).keys),
                           ["method", "lambda", "density", "epsilon", "rescale", "seed"], "weight only when given")
        }
        XCTAssertEqual(MergeMethods.problems(options("della") { $0.dellaDensity = 0.1 }, inputCount: 2),
                       ["della needs density ± epsilon in (0, 1) (the keep probabilities), got 0.1 ± 0.15"])
        XCTAssertEqual(MergeMethods.problems(options("della_linear") { $0.dellaDensity = 1; $0.dellaEpsilon = 0.5 }, inputCount: 2), [],
                       "density 1 keeps everything: no window to check")
        XCTAssertEqual(MergeMethods.problems(options("della") { $0.dellaEpsilon = 1 }, inputCount: 2).first,
                       "della: epsilon must be in [0, 1) (--epsilon)")
    }

    /// A base, its fine-tuned versions and their task vectors (through `TaskArithmetic.diff`).
    private func taskVectors(count: Int, seed: UInt64) throws -> (base: String, tvs: [String], taus: [[String: [Float]]]) {
        var rng = SplitMix64(seed: seed)
        let shapes: [(String, [Int])] = [("w", [24, 30]), ("b", [50]), ("s", [])]
        let base = shapes.map { ($0.0, $0.1, (0..<$0.1.reduce(1, *)).map { _ in rng.normal() }) }
        let basePath = try checkpoint("base.h5", base)
        var tvs: [String] = [], taus: [[String: [Float]]] = []
        for t in 0..<count {
            var tau: [String: [Float]] = [:]
            let ft = base.map { name, shape, v -> (String, [Int], [Float]) in
                let d = v.map { _ in rng.unitFloat() < 0.3 ? 0 : 0.1 * rng.normal() }
                tau[name] = d
                return (name, shape, zip(v, d).map { $0 + $1 })
            }
            let ftPath = try checkpoint("ft\(t).h5", ft)
            try TaskArithmetic.diff(base: basePath, finetuned: ftPath, output: path("tv\(t).h5"))
            tvs.append(path("tv\(t).h5")); taus.append(tau)
        }
        return (basePath, tvs, taus)
    }

    func testDellaWithDensityOneIsThePlainMergeAndSeedsMatter() throws {
        let (base, tvs, _) = try taskVectors(count: 3, seed: 4)
        func merged(_ o: MergeOptions, _ name: String) throws -> [String: [Float]] {
            try Merger.merge(base: base, taskVectors: tvs, output: path(name), options: o)
            return try readAll(path(name))
        }
        XCTAssertEqual(try merged(options("della_linear") { $0.dellaDensity = 1 }, "a.h5"), try merged(options("task_arithmetic"), "b.h5"))
        XCTAssertEqual(try merged(options("della") { $0.dellaDensity = 1 }, "c.h5"), try merged(options("ties") { $0.tiesDensity = 1 }, "d.h5"))
        let one = try merged(options("della") { $0.seed = 1 }, "e.h5"), again = try merged(options("della") { $0.seed = 1 }, "f.h5")
        let two = try merged(options("della") { $0.seed = 2 }, "g.h5")
        XCTAssertEqual(one, again, "seeded: the same seed gives the same merge")
        XCTAssertNotEqual(one["w"], two["w"])
    }

    func testDellaLinearOfOneVectorKeepsEntriesDividedByTheirProbability() throws {
        // One vector, λ = 1: every output entry is θ0 (dropped) or θ0 + τ/p with p from the entry's rank in its row.
        let (base, tvs, _) = try taskVectors(count: 1, seed: 9)
        let o = options("della_linear") { $0.dellaDensity = 0.5; $0.dellaEpsilon = 0.3; $0.seed = 5 }
        try Merger.merge(base: base, taskVectors: tvs, output: path("m.h5"), options: o)
        let got = try readAll(path("m.h5")), theta0 = try readAll(base)
        let stored = try TaskVectorReader(path: tvs[0])
        var kept = 0, dropped = 0
        for t in stored.tensors where t.shape.count == 2 {
            let (idx, val) = try stored.readSparse64(t)
            let row = t.shape[1]
            for r in 0..<t.shape[0] {
                let inRow = idx.indices.filter { idx[$0] / row == r }
                let p = MagPrune.probabilities(inRow.map { Float(val[$0]) }, rowLength: row, density: 0.5, epsilon: 0.3)
                for (k, e) in inRow.enumerated() where val[e] != 0 {
                    let i = idx[e], g = got[t.name]![i], b = theta0[t.name]![i]
                    if g == b { dropped += 1; continue }
                    kept += 1
                    XCTAssertEqual(Double(g), Double(b) + Double(Float(val[e] / p[k])), accuracy: 1e-5 * max(1, abs(Double(g))))
                }
            }
        }
        XCTAssertGreaterThan(kept, 100); XCTAssertGreaterThan(dropped, 100)
    }

    // MARK: - Model Stock

    func testModelStockRatio() {
        func ratio(_ v: [[Double]]) -> Double {
            let n = v.count
            var dot = [[Double]](repeating: [Double](repeating: 0, count: n), count: n)
            for a in 0..<n { for b in 0..<n { dot[a][b] = zip(v[a], v[b]).map(*).reduce(0, +) } }
            return ModelStockKernel.ratio(normSquared: (0..<n).map { dot[$0][$0] }, dot: dot)
        }
        XCTAssertEqual(ratio([[1, 0], [0, 2]]), 0, "orthogonal changes: the base")
        XCTAssertEqual(ratio([[1, 1], [2, 2]]), 1, accuracy: 1e-15, "parallel changes: the average")
        XCTAssertEqual(ratio([[1, 0], [0.5, 0.75.squareRoot()]]), 2 * 0.5 / 1.5, accuracy: 1e-12, "60°: 2 cos / (1 + cos)")
        XCTAssertEqual(ratio([[1, 0], [-1, 0]]), 0, "opposite pair: 1 + cos = 0, the base (as mergekit)")
        XCTAssertEqual(ratio([[1, 0, 0], [0, 1, 0], [0, 0, 1]]), 0)
        // Three vectors at cos 0.5 pairwise: 3·0.5 / (1 + 2·0.5).
        let h = 0.75.squareRoot()
        XCTAssertEqual(ratio([[1, 0, 0], [0.5, h, 0], [0.5, 0.5 / (2 * h), (1 - 0.25 - 0.25 / (4 * h * h)).squareRoot()]]), 0.75, accuracy: 1e-12)
        XCTAssertEqual(ratio([[0, 0], [1, 2]]), 0, "a zero vector: cos 0 (the norm product is floored at 1e-6)")
    }

    func testModelStockPullsTheAverageTowardsTheBase() throws {
        let (base, tvs, taus) = try taskVectors(count: 2, seed: 12)
        var o = options("model_stock")
        try Merger.merge(base: base, taskVectors: [tvs[0], tvs[0]], output: path("same.h5"), options: o)
        try Merger.merge(base: base, taskVectors: [tvs[0]], output: path("one.h5"), options: options("task_arithmetic"))
        let same = try readAll(path("same.h5")), one = try readAll(path("one.h5"))
        for (name, v) in one { for (a, b) in zip(same[name]!, v) { XCTAssertEqual(a, b, accuracy: 1e-6 * max(1, abs(b))) } }
        // Two different vectors: every tensor is θ0 + t·(τ0 + τ1)/2 with one t per tensor, t from their cosine.
        try Merger.merge(base: base, taskVectors: tvs, output: path("m.h5"), options: o)
        let got = try readAll(path("m.h5")), theta0 = try readAll(base)
        for (name, tau0) in taus[0] {
            let tau1 = taus[1][name]!
            let dot = zip(tau0, tau1).map { Double($0) * Double($1) }.reduce(0, +)
            let n0 = tau0.map { Double($0) * Double($0) }.reduce(0, +), n1 = tau1.map { Double($0) * Double($0) }.reduce(0, +)
            let t = ModelStockKernel.ratio(normSquared: [n0, n1], dot: [[n0, dot], [dot, n1]])
            for i in tau0.indices {
                let want = Double(theta0[name]![i]) + t * (Double(tau0[i]) + Double(tau1[i])) / 2
                XCTAssertEqual(Double(got[name]![i]), want, accuracy: 1e-5 * max(1, abs(want)), "\(name)[\(i)]")
            }
        }
        o.modelStockFilterWise = true
        XCTAssertEqual(MergeMethods.problems(o, inputCount: 1), ["model_stock needs at least 2 task vectors (the angle between them sets t), got 1"])
    }

    // MARK: - NuSLERP

    func testNuSlerpCoefficientsAndT() {
        XCTAssertEqual(NuSlerpKernel.t([1, 3]), 0.75)
        XCTAssertEqual(NuSlerpKernel.t([1, -1]), 0.5, "weights summing to 0: the midpoint, as mergekit")
        for t in [0.0, 0.25, 1.0] {
            let (a, b) = NuSlerpKernel.coefficients(t: t, normSquared0: 4, normSquared1: 9, dot: 0)
            XCTAssertEqual(a, cos(t * .pi / 2), accuracy: 1e-15); XCTAssertEqual(b, sin(t * .pi / 2), accuracy: 1e-15)
        }
        XCTAssertTrue(NuSlerpKernel.coefficients(t: 0.3, normSquared0: 1, normSquared1: 4, dot: 2) == (0.7, 0.3), "parallel: linear")
        XCTAssertTrue(NuSlerpKernel.coefficients(t: 0.3, normSquared0: 1, normSquared1: 1, dot: -1) == (0.7, 0.3), "opposite: linear")
        // Nearly parallel, but 1 − cos² above 1e-16: still spherical (mergekit's threshold, not slerp's 0.9995).
        let (a, b) = NuSlerpKernel.coefficients(t: 0.5, normSquared0: 1, normSquared1: 1, dot: 0.9999)
        XCTAssertNotEqual(a, 0.5); XCTAssertEqual(a, b, accuracy: 1e-12)
        XCTAssertEqual(a, sin(acos(0.9999) / 2) / sin(acos(0.9999)), accuracy: 1e-12)
    }

    func testNuSlerpOfTwoVectorsByTensorRowsAndColumns() throws {
        let (base, tvs, taus) = try taskVectors(count: 2, seed: 21)
        let theta0 = try readAll(base)
        for (flatten, rowWise) in [(true, false), (false, false), (false, true)] {
            var o = options("nuslerp")
            o.weights = [1, 3]; o.nuslerpFlatten = flatten; o.nuslerpRowWise = rowWise
            try Merger.merge(base: base, taskVectors: tvs, output: path("m.h5"), options: o)
            let got = try readAll(path("m.h5"))
            // "w" is 24 × 30: whole, its 24 rows, or its 30 columns; "b" and "s" are always whole.
            let (a, b) = (taus[0]["w"]!.map(Double.init), taus[1]["w"]!.map(Double.init))
            let groups: [[Int]] = flatten ? [Array(0..<720)]
                : rowWise ? (0..<30).map { c in (0..<24).map { $0 * 30 + c } } : (0..<24).map { r in Array((r * 30)..<(r * 30 + 30)) }
            for g in groups {
                let n0 = g.map { a[$0] * a[$0] }.reduce(0, +), n1 = g.map { b[$0] * b[$0] }.reduce(0, +)
                let dot = g.map { a[$0] * b[$0] }.reduce(0, +)
                let (s0, s1) = NuSlerpKernel.coefficients(t: 0.75, normSquared0: n0, normSquared1: n1, dot: dot)
                for i in g {
                    let want = Double(theta0["w"]![i]) + s0 * a[i] + s1 * b[i]
                    XCTAssertEqual(Double(got["w"]![i]), want, accuracy: 1e-5 * max(1, abs(want)), "flatten \(flatten) rowWise \(rowWise) [\(i)]")
                }
            }
        }
        XCTAssertEqual(MergeMethods.problems(options("nuslerp"), inputCount: 3), ["nuslerp interpolates exactly 2 task vectors, got 3"])
    }

    // MARK: - Karcher

    func testKarcherMeanOnTheSphere() {
        XCTAssertEqual(KarcherKernel.coefficients(gram: [[4]], maxIterations: 10, tolerance: 1e-5), [1], "one model: itself")
        // Orthogonal, norms 1 and 3: the geodesic midpoint (u0 + u1)/√2, times the mean norm 2.
        let two = KarcherKernel.coefficients(gram: [[1, 0], [0, 9]], maxIterations: 10, tolerance: 1e-5)
        XCTAssertEqual(two[0], 2 / 2.0.squareRoot(), accuracy: 1e-12); XCTAssertEqual(two[1], 2 / 2.0.squareRoot() / 3, accuracy: 1e-12)
        // e0, e0, e1 on one great circle: the Karcher mean is the mean angle, 30°, not the chord
        // mean's 26.57° where the iteration starts.
        let c = KarcherKernel.coefficients(gram: [[1, 1, 0], [1, 1, 0], [0, 0, 1]], maxIterations: 100, tolerance: 1e-12)
        XCTAssertEqual(c[0] + c[1], cos(Double.pi / 6), accuracy: 1e-9); XCTAssertEqual(c[2], sin(Double.pi / 6), accuracy: 1e-9)
        let start = KarcherKernel.coefficients(gram: [[1, 1, 0], [1, 1, 0], [0, 0, 1]], maxIterations: 0, tolerance: 1e-12)
        XCTAssertEqual(atan2(start[2], start[0] + start[1]), atan2(1, 2), accuracy: 1e-12, "no step: the normalized mean")
        // A zero tensor is left out of the direction but counted in the mean norm; all zero: zero.
        let withZero = KarcherKernel.coefficients(gram: [[1, 0, 0], [0, 0, 0], [0, 0, 4]], maxIterations: 10, tolerance: 1e-5)
        XCTAssertEqual(withZero[1], 0)
        XCTAssertEqual(withZero[0], 1 / 2.0.squareRoot(), accuracy: 1e-12, "scale (1 + 0 + 2)/3 = 1 along (u0 + u2)/√2")
        XCTAssertEqual(KarcherKernel.coefficients(gram: [[0, 0], [0, 0]], maxIterations: 10, tolerance: 1e-5), [0, 0])
    }

    // MARK: - SCE

    func testSceVarianceAndSelectionRule() {
        XCTAssertEqual(SceKernel.variance([[1], [3]], 0), 1, "population variance: ((1−2)² + (3−2)²)/2")
        XCTAssertEqual(SceKernel.variance([[2], [2], [2]], 0), 0)
        // Boundary 0.5 with one tie to take: above it always, the first equal one, nothing else.
        var rule: (Float, Int, Int) = (0.5, 1, 0)
        XCTAssertEqual([0.7, 0.5, 0.2, 0.5, 0.9].map { SceDirection.selected($0, &rule) }, [true, true, false, false, true])
    }

    func testSceOfOneVectorIsTheVectorAndSelectionKeepsTheMostVaryingEntries() throws {
        let (base, tvs, _) = try taskVectors(count: 2, seed: 31)
        try Merger.merge(base: base, taskVectors: [tvs[0]], output: path("sce.h5"), options: options("sce"))
        try Merger.merge(base: base, taskVectors: [tvs[0]], output: path("ta.h5"), options: options("task_arithmetic"))
        XCTAssertEqual(try readAll(path("sce.h5")), try readAll(path("ta.h5")), "weight 1, every sign agrees with itself")
        // Two vectors, select 0.2: the changed entries are exactly the top ⌊0.2 · nonzero⌋ by variance.
        try Merger.merge(base: base, taskVectors: tvs, output: path("m.h5"), options: options("sce") { $0.sceSelectTopK = 0.2 })
        let got = try readAll(path("m.h5")), theta0 = try readAll(base)
        let readers = try tvs.map { try TaskVectorReader(path: $0) }
        let w = readers[0].tensors.first { $0.name == "w" }!
        var dense = [[Double]](repeating: [Double](repeating: 0, count: w.count), count: 2)
        for (t, r) in readers.enumerated() {
            let (idx, val) = try r.readSparse64(r.tensors.first { $0.name == "w" }!)
            for (i, v) in zip(idx, val) { dense[t][i] = Double(Float(v)) }
        }
        let variances = (0..<w.count).map { SceKernel.variance(dense, $0) }
        let k = Int(Double(variances.filter { $0 != 0 }.count) * 0.2)
        let top = Set((0..<w.count).sorted { variances[$0] != variances[$1] ? variances[$0] > variances[$1] : $0 < $1 }.prefix(k))
        let changed = Set((0..<w.count).filter { got["w"]![$0] != theta0["w"]![$0] })
        XCTAssertTrue(changed.isSubset(of: top))
        XCTAssertGreaterThan(changed.count, k * 9 / 10, "almost every selected entry changes (unless its result rounds to θ0)")
    }
}
