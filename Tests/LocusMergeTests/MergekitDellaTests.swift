import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusMerge

/// mergekit's `della` / `della_linear` in the mergekit driver and `nuslerp` without a base
/// (docs/merging.md §Configs): the keep probabilities (float32, ranked along the second axis)
/// against a brute-force ranking, merges through configs against the same formulas written out
/// here with the driver's documented draws, and bad configs refused before any output. The
/// comparisons with mergekit itself are in interop/tests/test_merge_mergekit_della.py.
final class MergekitDellaTests: ScratchDirectoryTestCase {
    private func message(_ body: () throws -> Void) -> String {
        do { try body(); return "" } catch let e as LocusError { return e.description } catch { return "\(error)" }
    }

    private func writeCheckpoint(_ name: String, _ tensors: [(String, [Int], [Float])]) throws -> String {
        let w = try CheckpointWriter(path: path(name))
        for (n, s, v) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) { try w.add(name: n, values: v, shape: s, dtype: .float32) }
        _ = try w.finish()
        return path(name)
    }

    private func read(_ file: String) throws -> [String: [Float]] {
        let r = try CheckpointReader(path: file)
        return Dictionary(uniqueKeysWithValues: try r.tensors.map { ($0.name, try r.readFloat32($0)) })
    }

    private var state: UInt64 = 3
    private func next() -> Float {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
    }

    private let shapes: [(String, [Int])] = [("a.w", [3, 8]), ("b", [10]), ("c.w", [2, 5, 3])]

    /// A base and `count` fine-tuned models; δ has zeros (about one entry in five).
    private func models(_ count: Int) throws -> (base: [String: [Float]], ft: [[String: [Float]]]) {
        let base = Dictionary(uniqueKeysWithValues: shapes.map { ($0.0, (0..<$0.1.reduce(1, *)).map { _ in next() }) })
        let ft = (0..<count).map { _ in
            Dictionary(uniqueKeysWithValues: shapes.map { n, _ in (n, base[n]!.map { v in let d = 0.1 * next(); return abs(d) < 0.02 ? v : v + d }) })
        }
        _ = try writeCheckpoint("base.h5", shapes.map { ($0.0, $0.1, base[$0.0]!) })
        for (i, f) in ft.enumerated() { _ = try writeCheckpoint("ft\(i).h5", shapes.map { ($0.0, $0.1, f[$0.0]!) }) }
        return (base, ft)
    }

    /// mergekit's keep probability of entry `j` of a tensor of `shape`: its rank r among the n entries of
    /// its slice along axis 1 (the whole tensor for rank ≤ 1), by |v| ascending then position.
    private func probability(_ v: [Float], _ shape: [Int], _ j: Int, density: Double, epsilon: Double) -> Float {
        let n = shape.count < 2 ? v.count : shape[1]
        let inner = shape.count < 2 ? 1 : shape.dropFirst(2).reduce(1, *)
        let sliceStart = shape.count < 2 ? 0 : (j / (n * inner)) * n * inner + j % inner
        let members = (0..<n).map { sliceStart + $0 * inner }
        let r = members.filter { abs(v[$0]) < abs(v[j]) || (abs(v[$0]) == abs(v[j]) && $0 < j) }.count
        return Float(density - epsilon) + (Float(r) / Float(n - 1) * 2) * Float(epsilon)
    }

    func testKeepProbabilitiesRankEachSliceAlongTheSecondAxisInFloat32() {
        for shape in [[12], [3, 7], [2, 5, 3], [2, 3, 2, 2]] {
            let count = shape.reduce(1, *)
            var v = (0..<count).map { _ in next() }
            v[1] = 0; v[count - 1] = 0; v[2] = -v[0]   // zeros and an equal magnitude
            let m = MergekitMagPrune(tensor: "x", shape: shape, count: count, density: 0.45, epsilon: 0.2, random: SplitMix64(seed: 1))
            let got = v.withUnsafeBufferPointer { m.probabilities($0) }
            for j in 0..<count {
                XCTAssertEqual(got[j], probability(v, shape, j, density: 0.45, epsilon: 0.2), "\(shape)[\(j)]")
            }
            XCTAssertEqual(got.min(), Float(0.45 - 0.2))
            XCTAssertEqual(Double(got.max()!), 0.65, accuracy: 1e-6)
        }
    }

    /// The merge of one model with `della_linear`, written out: kept where the draw is below p (one draw per
    /// non-zero δ entry in index order), scaled to δ's L1 norm with `rescale`, times w and λ.
    func testDellaLinearKeepsWhatTheDrawsSayAndRescalesToTheL1Norm() throws {
        let (base, ft) = try models(1)
        for rescale in [true, false] {
            let yaml = """
                merge_method: della_linear
                base_model: base.h5
                models:
                  - model: ft0.h5
                    parameters: {weight: 0.5, density: 0.5, epsilon: 0.2}
                parameters: {lambda: 2.0, seed: 7, rescale: \(rescale)}
                """
            try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
            let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
            let out = path("m-\(rescale).h5")
            try Merger.merge(base: b!, taskVectors: paths, output: out, options: o)
            let got = try read(out)
            var dropped = 0
            for (n, shape) in shapes {
                let delta = zip(ft[0][n]!, base[n]!).map { $0 - $1 }
                var g = Merger.dareRandom(vector: 0, tensor: n, options: o)
                var kept = delta
                for j in delta.indices where delta[j] != 0 {
                    if !(g.unitDouble() < Double(probability(delta, shape, j, density: 0.5, epsilon: 0.2))) { kept[j] = 0; dropped += 1 }
                }
                let l1 = delta.reduce(0.0) { $0 + Double(abs($1)) }, l1Kept = kept.reduce(0.0) { $0 + Double(abs($1)) }
                let scale = rescale ? Float(l1 / l1Kept) : 1
                for j in delta.indices {
                    let want = Double(base[n]![j]) + 2 * Double(kept[j] * scale * 0.5)
                    XCTAssertEqual(Double(got[n]![j]), want, accuracy: 1e-6, "rescale \(rescale) \(n)[\(j)]")
                }
            }
            XCTAssertGreaterThan(dropped, 10)
        }
    }

    /// slerp of two flat vectors as mergekit's nuslerp defines it.
    private func slerp(_ t: Double, _ a: [Double], _ b: [Double]) -> [Double] {
        let na = max(a.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-7), nb = max(b.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-7)
        let cosine = min(1, max(-1, zip(a, b).reduce(0) { $0 + $1.0 * $1.1 } / (na * nb)))
        guard 1 - cosine * cosine > 1e-16 else { return zip(a, b).map { (1 - t) * $0 + t * $1 } }
        let omega = acos(cosine)
        return zip(a, b).map { (sin((1 - t) * omega) * $0 + sin(t * omega) * $1) / sin(omega) }
    }

    func testNuslerpWithoutBaseInterpolatesTheTwoModelsWholeByRowOrByFirstAxisSlice() throws {
        let (_, ft) = try models(2)
        for (flatten, rowWise) in [(true, false), (false, false), (false, true)] {
            let yaml = """
                merge_method: nuslerp
                models:
                  - model: ft0.h5
                    parameters: {weight: 1.0}
                  - model: ft1.h5
                    parameters: {weight: 3.0}
                parameters: {nuslerp_flatten: \(flatten), nuslerp_row_wise: \(rowWise)}
                """
            try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
            let (b, paths, o) = try MergeConfig.load(path("c.yml")).plan()
            XCTAssertNil(b)
            XCTAssertEqual(o.method.inputs, .models(count: 2))
            let out = path("n-\(flatten)-\(rowWise).h5")
            try Merger.merge(models: paths, output: out, options: o)
            let got = try read(out)
            for (n, shape) in shapes {
                let a = ft[0][n]!.map(Double.init), c = ft[1][n]!.map(Double.init)
                // The segments: index lists of the slices interpolated together.
                var segments: [[Int]]
                if flatten || shape.count == 1 { segments = [Array(a.indices)] }
                else if rowWise { let row = a.count / shape[0]; segments = (0..<row).map { k in (0..<shape[0]).map { $0 * row + k } } }
                else { let l = shape.last!; segments = (0..<(a.count / l)).map { r in Array((r * l)..<((r + 1) * l)) } }
                for s in segments {
                    let want = slerp(0.75, s.map { a[$0] }, s.map { c[$0] })
                    for (k, j) in s.enumerated() { XCTAssertEqual(Double(got[n]![j]), want[k], accuracy: 1e-6, "\(flatten) \(rowWise) \(n)[\(j)]") }
                }
            }
        }
    }

    func testBadConfigsFailBeforeAnyOutput() throws {
        _ = try models(3)
        func plan(_ yaml: String) throws -> (String?, [String], MergeOptions) {
            try yaml.write(toFile: path("c.yml"), atomically: true, encoding: .utf8)
            return try MergeConfig.load(path("c.yml")).plan()
        }
        // density ± ε outside (0, 1): mergekit's ValueError, here before anything is opened.
        var m = message { _ = try plan("merge_method: della\nbase_model: base.h5\nmodels:\n  - model: ft0.h5\n    parameters: {weight: 1, density: 0.1}\n") }
        XCTAssertTrue(m.contains("c.yml") && m.contains("density ± epsilon inside (0, 1)") && m.contains("epsilon 0.15"), m)
        // …or per tensor, through a filter.
        let (b, paths, o) = try plan("merge_method: della_linear\nbase_model: base.h5\nmodels:\n  - model: ft0.h5\n"
                                     + "    parameters: {weight: 1, density: [{filter: c.w, value: 0.9}, {value: 0.5}]}\n")
        m = message { try Merger.merge(base: b!, taskVectors: paths, output: self.path("out.h5"), options: o) }
        XCTAssertTrue(m.contains("tensor 'c.w'") && m.contains("density 0.9"), m)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.h5")))
        // A slice of one entry along the second axis cannot be ranked (mergekit fails on it).
        _ = try writeCheckpoint("b1.h5", [("col", [4, 1], [1, 2, 3, 4]), ("w", [2, 2], [1, 2, 3, 4])])
        _ = try writeCheckpoint("f1.h5", [("col", [4, 1], [2, 2, 2, 2]), ("w", [2, 2], [2, 1, 2, 1])])
        let (b1, p1, o1) = try plan("merge_method: della\nbase_model: b1.h5\nmodels:\n  - model: f1.h5\n    parameters: {weight: 1, density: 0.5}\n")
        m = message { try Merger.merge(base: b1!, taskVectors: p1, output: self.path("out.h5"), options: o1) }
        XCTAssertTrue(m.contains("'col'") && m.contains("[4, 1]") && m.contains("exclude it"), m)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.h5")))
        // nuslerp without a base: exactly two models.
        m = message { _ = try plan("merge_method: nuslerp\nmodels:\n" + (0..<3).map { "  - model: ft\($0).h5\n    parameters: {weight: 1}\n" }.joined()) }
        XCTAssertTrue(m.contains("exactly 2 models, got 3"), m)
        m = message { _ = try plan("merge_method: nuslerp\nmodels:\n  - model: ft0.h5\n    parameters: {weight: 1}\n") }
        XCTAssertTrue(m.contains("exactly 2 models, got 1"), m)
    }

    func testMethodsListingNamesBothDellaVariantsAndNuslerpsTwoModelForm() {
        let table = MergeMethods.helpTable()
        let words = table.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        XCTAssertTrue(words.contains("the paper's: per row") && words.contains("A mergekit config (--config) runs mergekit's della instead"), table)
        XCTAssertTrue(table.contains("nuslerp  (BASE TASK-VECTOR…, or 2 models)"), table)
        for line in table.split(separator: "\n") { XCTAssertLessThanOrEqual(line.count, 80, String(line)) }
    }
}
