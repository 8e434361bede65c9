import Foundation
import LocusEngine
import LocusFormat
import LocusMerge
import LocusTestSupport
import XCTest

@testable import LocusWorkflows

final class AlphaSearchTests: WorkflowTestCase {
    func request(_ t: TwoTasks, grid: [Double], strategy: AlphaSearchRequest.Strategy = .single) -> AlphaSearchRequest {
        var r = AlphaSearchRequest(base: t.base, taskVectors: [t.tauA, t.tauB], datasets: [t.dataA, t.dataB], grid: grid, options: MergeOptions())
        r.strategy = strategy
        return r
    }

    /// Every row of a single-α search is what the merged file, written and evaluated on its own, scores.
    func testSingleSearchRowsMatchTheWrittenMerges() throws {
        let t = try TwoTasks.make(in: directory)
        let grid = [0, 0.5, 1]
        let result = try request(t, grid: grid).execute()
        XCTAssertEqual(result.candidates.map(\.alphas), grid.map { [$0] })
        XCTAssertEqual(result.heads, ["a", "b"])
        // Own accuracy comes from the vectors' task-accuracy attribute.
        for (i, tau) in [t.tauA, t.tauB].enumerated() {
            XCTAssertEqual(result.ownAccuracy[i], try TaskVectorReader(path: tau).artifact.root.doubleAttribute("task-accuracy"))
        }
        for c in result.candidates {
            var o = MergeOptions(); o.lambda = c.alphas[0]
            let out = path("m\(c.alphas[0]).h5")
            _ = try Merger.merge(base: t.base, taskVectors: [t.tauA, t.tauB], output: out, options: o)
            XCTAssertEqual(c.accuracies, [try accuracy(of: out, data: t.dataA, head: "a"), try accuracy(of: out, data: t.dataB, head: "b")], "α = \(c.alphas[0])")
            XCTAssertEqual(c.normalized, zip(c.accuracies, result.ownAccuracy).map { $0 / $1 })
            XCTAssertEqual(c.averageNormalized, c.normalized.reduce(0, +) / 2)
        }
        // The pick: the best average normalized accuracy, the first on ties; the merge gets λ = α.
        let best = result.candidates.first { $0.averageNormalized == result.candidates.map(\.averageNormalized).max() }!
        XCTAssertEqual(result.best, best)
        XCTAssertEqual(result.apply(to: MergeOptions()).lambda, best.alphas[0])
        XCTAssertNil(result.apply(to: MergeOptions()).weights)
        // The table marks exactly the best row; the JSON has the historic shape.
        XCTAssertEqual(result.table.split(separator: "\n").filter { $0.contains("← best") }.count, 1)
        let json = try JSONSerialization.jsonObject(with: Data(try result.json().utf8)) as! [String: Any]
        XCTAssertEqual(Set(json.keys), ["tasks", "heads", "own_accuracy", "best_alpha", "rows"])
        XCTAssertEqual(json["best_alpha"] as? Double, best.alphas[0])
        // The plot: a polyline per task plus the two averages, one point per α.
        let svg = result.svg(method: "task_arithmetic")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 4)
        XCTAssertTrue(svg.contains(">tau-a<") && svg.contains(">average normalized<"))
    }

    /// Coordinate search: the single-α diagonal first, then one task at a time; it never ends below
    /// the best single α, every α is from the grid, and the winner's coefficients become the merge's
    /// per-vector weights, which the written merge reproduces.
    func testCoordinateSearch() throws {
        let t = try TwoTasks.make(in: directory)
        let grid = [0, 0.5, 1, 1.5]
        let single = try request(t, grid: grid).execute()
        let result = try request(t, grid: grid, strategy: .coordinate(rounds: 2)).execute()
        XCTAssertEqual(Array(result.candidates.prefix(grid.count)).map(\.alphas), grid.map { [$0, $0] })
        XCTAssertEqual(Array(result.candidates.prefix(grid.count)).map(\.accuracies), single.candidates.map(\.accuracies))
        XCTAssertGreaterThanOrEqual(result.best.averageNormalized, single.best.averageNormalized)
        XCTAssertTrue(result.candidates.allSatisfy { $0.alphas.count == 2 && $0.alphas.allSatisfy(grid.contains) })
        XCTAssertEqual(Set(result.candidates.map(\.alphas)).count, result.candidates.count, "a coefficient vector evaluated twice")
        // Every candidate after the diagonal differs from some earlier best in one coordinate only.
        for c in result.candidates.dropFirst(grid.count) {
            XCTAssertTrue(result.candidates.contains { p in zip(p.alphas, c.alphas).filter { $0 != $1 }.count == 1 }, "\(c.alphas)")
        }
        let o = result.apply(to: MergeOptions())
        XCTAssertEqual(o.weights, result.best.alphas)
        XCTAssertEqual(o.lambda, 1)
        let out = path("coord.h5")
        _ = try Merger.merge(base: t.base, taskVectors: [t.tauA, t.tauB], output: out, options: o)
        XCTAssertEqual(result.best.accuracies, [try accuracy(of: out, data: t.dataA, head: "a"), try accuracy(of: out, data: t.dataB, head: "b")])
        XCTAssertTrue(result.table.contains("coordinate search over per-task α"))
        let json = try JSONSerialization.jsonObject(with: Data(try result.json().utf8)) as! [String: Any]
        XCTAssertEqual(json["best_alphas"] as? [Double], result.best.alphas)
        XCTAssertEqual(result.provenance["alpha_strategy"], .string("coordinate"))
    }

    /// Random search: seeded (same seed, same draws), exactly `budget` distinct vectors from the grid,
    /// capped at the number of combinations.
    func testRandomSearchIsSeededAndKeepsItsBudget() throws {
        let t = try TwoTasks.make(in: directory)
        let grid = [0, 0.25, 0.5, 0.75, 1]
        let a = try request(t, grid: grid, strategy: .random(budget: 6, seed: 7)).execute()
        let b = try request(t, grid: grid, strategy: .random(budget: 6, seed: 7)).execute()
        let c = try request(t, grid: grid, strategy: .random(budget: 6, seed: 8)).execute()
        XCTAssertEqual(a.candidates, b.candidates)
        XCTAssertNotEqual(a.candidates.map(\.alphas), c.candidates.map(\.alphas))
        XCTAssertEqual(a.candidates.count, 6)
        XCTAssertEqual(Set(a.candidates.map(\.alphas)).count, 6)
        XCTAssertTrue(a.candidates.allSatisfy { $0.alphas.allSatisfy(grid.contains) })
        // The draws are SplitMix64(seed).below(grid.count) per task, in order.
        var rng = SplitMix64(seed: 7)
        XCTAssertEqual(a.candidates[0].alphas, [grid[rng.below(grid.count)], grid[rng.below(grid.count)]])
        let all = try request(t, grid: [0, 1], strategy: .random(budget: 50, seed: 1)).execute()
        XCTAssertEqual(Set(all.candidates.map(\.alphas)), [[0, 0], [0, 1], [1, 0], [1, 1]])
    }

    func testRequestsThatDoNotFit() throws {
        let t = try TwoTasks.make(in: directory)
        var r = request(t, grid: [0, 1])
        r.heads = ["a"]
        expectRequestError("heads", "1 heads for 2 task vectors") { _ = try r.execute() }
        r = request(t, grid: [0, 1])
        r.datasets = [t.dataA]
        expectRequestError("datasets", "(1 for 2)") { _ = try r.execute() }
        r = request(t, grid: [0, 1], strategy: .coordinate(rounds: 1))
        r.options.method = MergeMethods.named("ties")!
        expectRequestError("strategy", "ties") { _ = try r.execute() }
        r = request(t, grid: [0, 1])
        r.options.method = MergeMethods.named("fisher")!
        expectRequestError("grid", "fisher") { _ = try r.execute() }
        var n = NegationRequest(base: t.base, taskVector: t.tauB, target: t.dataB, control: t.dataA, grid: [0, -1], options: MergeOptions())
        expectRequestError("grid", "g ≥ 0") { _ = try n.execute() }
        n.grid = [0, 1]; n.keep = 1.5
        expectRequestError("keep", "(0, 1]") { _ = try n.execute() }
    }

    /// Negation: θ0 − g·τ for every g; the α kept is the most negative one whose control accuracy is
    /// ≥ keep × the base's; each row is what the applied file scores.
    func testNegationKeepsTheControlTask() throws {
        let t = try TwoTasks.make(in: directory)
        var r = NegationRequest(base: t.base, taskVector: t.tauB, target: t.dataB, control: t.dataA, grid: [0, 0.5, 1, 2, 4, 8], options: MergeOptions())
        r.keep = 0.95
        // Both heads have 3 classes: the control head must be named.
        expectRequestError("controlHead", "name one") { _ = try r.execute() }
        r.controlHead = "a"
        let result = try r.execute()
        XCTAssertEqual(result.rows.map(\.alpha), [0, -0.5, -1, -2, -4, -8])
        XCTAssertEqual(result.head, "b")
        XCTAssertEqual(result.controlHead, "a")
        XCTAssertEqual(result.baseControl, try accuracy(of: t.base, data: t.dataA, head: "a"))
        XCTAssertEqual(result.rows[0].control, result.baseControl)
        for row in result.rows {
            XCTAssertEqual(row.kept, row.control >= 0.95 * result.baseControl)
            let out = path("neg\(row.alpha).h5")
            try TaskArithmetic.apply(base: t.base, taskVector: t.tauB, alpha: row.alpha, output: out)
            XCTAssertEqual(row.target, try accuracy(of: out, data: t.dataB, head: "b"), "α = \(row.alpha)")
            XCTAssertEqual(row.control, try accuracy(of: out, data: t.dataA, head: "a"), "α = \(row.alpha)")
        }
        let kept = result.rows.filter(\.kept)
        XCTAssertEqual(result.best, kept.min { $0.alpha < $1.alpha })
        XCTAssertEqual(result.apply(to: MergeOptions()).lambda, result.best!.alpha)
        let svg = result.svg(method: "task_arithmetic")
        XCTAssertEqual(svg.components(separatedBy: "<polyline").count - 1, 2)
        XCTAssertTrue(svg.contains("class=\"guide\"") && svg.contains("class=\"marker\""))
    }

    /// The selection rule alone, on rows made by hand: the most negative kept α, even past a dip.
    func testNegationPicksTheMostNegativeKeptAlpha() {
        func row(_ a: Double, _ c: Double) -> NegationResult.Row { .init(alpha: a, target: 0.5, control: c, kept: c >= 0.95 * 0.8) }
        var r = NegationResult(task: "t", head: "h", controlHead: "c", keep: 0.95, baseTarget: 0.9, baseControl: 0.8,
                               rows: [row(0, 0.8), row(-1, 0.79), row(-2, 0.70), row(-3, 0.77), row(-4, 0.5)])
        XCTAssertEqual(r.best?.alpha, -3)
        XCTAssertEqual(r.threshold, 0.76, accuracy: 1e-12)
        r.rows = [row(-1, 0.1)]
        XCTAssertNil(r.best)
    }

    /// The merged model is θ0 + Σ c_k·d_k whether a direction is stored dense or sparse.
    func testStoredDirectionsSparseAndDense() throws {
        let m = try Model(.mlp(input: [3], hidden: [4], classes: 2), seed: 1)
        let names = m.parameters.map(\.name)
        var dense: [String: [Float]] = [:], sparse: [String: [Float]] = [:]
        var rng = SplitMix64(seed: 5)
        for p in m.parameters {
            dense[p.name] = (0..<p.value.count).map { _ in rng.uniform(-1, 1) }
            sparse[p.name] = (0..<p.value.count).map { $0 % 5 == 0 ? rng.uniform(-1, 1) : 0 }
        }
        let stored = [StoredDirection(dense), StoredDirection(sparse)]
        XCTAssertTrue(names.allSatisfy { if case .dense = stored[0].tensors[$0]! { true } else { false } })
        // One entry in five is nonzero: sparse wherever that is fewer than half (every tensor of ≥ 3 entries).
        for p in m.parameters where p.value.count >= 3 {
            guard case .sparse(let idx, _) = stored[1].tensors[p.name]! else { XCTFail("\(p.name) stored dense"); continue }
            XCTAssertEqual(idx.count, (p.value.count + 4) / 5)
        }
        let theta0 = Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, $0.value.data) })
        let merged = MergedModel(model: m, directions: stored)
        merged.load([0.5, -2])
        for p in m.parameters {
            let want = (0..<p.value.count).map { i in theta0[p.name]![i] + Float(0.5) * dense[p.name]![i] + Float(-2) * sparse[p.name]![i] }
            XCTAssertEqual(p.value.data, want, p.name)
        }
        merged.load([0, 0])
        for p in m.parameters { XCTAssertEqual(p.value.data, theta0[p.name]!, p.name) }
    }
}
