import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

final class SplitTests: DataTestCase {
    func testFractionsParsing() throws {
        XCTAssertEqual(try SplitFractions(parsing: "0.8,0.1,0.1").parts.map(\.name), ["train", "val", "test"])
        XCTAssertEqual(try SplitFractions(parsing: "0.9, 0.1").parts.map(\.name), ["train", "test"])
        XCTAssertEqual(try SplitFractions(parsing: "1").parts.map(\.fraction), [1])
        // A typed error carrying the text given, and nothing about where it came from.
        for (text, reason) in [("0.8,0.1", "add up to"), ("0.5,0.2,0.2,0.1", "not 1 to 3"), ("a,b", "not 1 to 3"), ("1.5,-0.5", "outside [0, 1]")] {
            do {
                _ = try SplitFractions(parsing: text)
                XCTFail("\(text) was accepted")
            } catch {
                XCTAssertEqual(error.text, text)
                XCTAssertTrue(error.reason.contains(reason), "\(error)")
                XCTAssertFalse(error.description.contains("--"), "\(error) names a command-line flag")
            }
        }
    }

    func labels(_ n: Int, classes: Int, seed: UInt64 = 3) -> [Int64] {
        var r = TestRNG(seed)
        return (0..<n).map { _ in Int64(r.int(classes)) }
    }

    func testDeterministicDisjointCoveringSorted() throws {
        let y = labels(1000, classes: 7)
        let f = try SplitFractions(parsing: "0.7,0.2,0.1")
        for stratified in [true, false] {
            let a = Splits.make(labels: y, fractions: f, seed: 42, stratified: stratified)
            XCTAssertEqual(a, Splits.make(labels: y, fractions: f, seed: 42, stratified: stratified))
            XCTAssertNotEqual(a, Splits.make(labels: y, fractions: f, seed: 43, stratified: stratified))
            XCTAssertEqual(a.keys.sorted(), ["test", "train", "val"])
            var seen = Set<Int>()
            for (_, idx) in a {
                XCTAssertEqual(idx, idx.sorted())
                for i in idx { XCTAssertTrue(seen.insert(i).inserted, "index \(i) in two splits") }
            }
            XCTAssertEqual(seen, Set(0..<1000))
            XCTAssertEqual(a["train"]!.count, stratified ? a["train"]!.count : 700)
            XCTAssertEqual(a["val"]!.count + a["test"]!.count, 1000 - a["train"]!.count)
        }
    }

    func testStratifiedKeepsClassProportions() throws {
        let y = labels(2000, classes: 5)
        let f = try SplitFractions(parsing: "0.8,0.1,0.1")
        let s = Splits.make(labels: y, fractions: f, seed: 0, stratified: true)
        for c in 0..<5 {
            let n = y.filter { $0 == Int64(c) }.count
            let train = s["train"]!.filter { y[$0] == Int64(c) }.count
            let val = s["val"]!.filter { y[$0] == Int64(c) }.count
            XCTAssertEqual(train, Int((Double(n) * 0.8 + 0.5).rounded(.down)))
            XCTAssertEqual(train + val, Int((Double(n) * (0.8 + 0.1) + 0.5).rounded(.down)))
        }
    }

    func testRestrictedPoolAndTinyClasses() throws {
        let y: [Int64] = [0, 1, 1, 2, 0, 0, 1, 2, 2, 2]
        let pool = [0, 2, 4, 6, 8]
        let s = Splits.make(labels: y, among: pool, fractions: try SplitFractions(parsing: "0.5,0.5"), seed: 1)
        XCTAssertEqual(Set(s["train"]! + s["test"]!), Set(pool))
        XCTAssertEqual(s["train"]!.count + s["test"]!.count, 5)
        XCTAssertEqual(Splits.make(labels: [], fractions: try SplitFractions(parsing: "0.8,0.2"), seed: 0), ["train": [], "test": []])
    }

    /// The exact algorithm, step by step, for a small case (mirrors the Python reimplementation in interop).
    func testAlgorithmByHand() throws {
        let y: [Int64] = [1, 0, 1, 0, 1, 0]
        let f = try SplitFractions(parsing: "0.5,0.5")
        var g = SplitMix64(seed: 9)
        var class0 = [1, 3, 5], class1 = [0, 2, 4]
        g.shuffle(&class0); g.shuffle(&class1)
        // floor(3·0.5 + 0.5) = 2 go to train.
        let expected = ["train": (Array(class0[0..<2]) + Array(class1[0..<2])).sorted(),
                        "test": [class0[2], class1[2]].sorted()]
        XCTAssertEqual(Splits.make(labels: y, fractions: f, seed: 9), expected)
    }
}

final class NormalizationTests: DataTestCase {
    /// Direct per-channel mean/std of raw·scale over `rows`.
    func direct(_ values: (Int) -> Double, shape: [Int], rows: [Int], scale: Double) -> (mean: [Double], std: [Double]) {
        let k = shape[1], inner = shape.dropFirst(2).reduce(1, *)
        var mean = [Double](), std = [Double]()
        for c in 0..<k {
            var v = [Double]()
            for i in rows { for j in 0..<inner { v.append(values((i * k + c) * inner + j) * scale) } }
            let m = v.reduce(0, +) / Double(v.count)
            mean.append(m)
            std.append((v.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(v.count)).squareRoot())
        }
        return (mean, std)
    }

    func assertClose(_ a: [Double], _ b: [Double], _ tol: Double = 1e-12, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, line: line)
        for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: tol * max(1, abs(y)), line: line) }
    }

    func testUint8PerChannelOnTrainSplit() {
        var d = imageData(n: 40, c: 3, h: 4, w: 5, classes: 2)
        d.splits = ["train": Array(stride(from: 0, to: 40, by: 3)), "test": [1, 2]]
        let n = NormalizationStats.compute(d, scale: 1.0 / 255.0, samples: d.splits["train"])
        let px = d.bytes
        let e = direct({ Double(px[$0]) }, shape: d.shape, rows: d.splits["train"]!, scale: 1.0 / 255.0)
        XCTAssertEqual(n.scale, 1.0 / 255.0)
        assertClose(n.mean, e.mean)
        assertClose(n.std, e.std)
        XCTAssertEqual(n.mean.count, 3)
    }

    func testFloatFeaturesAndConstantChannel() {
        var r = TestRNG(5)
        let n = 25, f = 4
        var x = (0..<(n * f)).map { _ in Float(r.unit() * 10 - 3) }
        for i in 0..<n { x[i * f + 2] = 1.5 }   // a constant feature
        let d = LabelledData(inputs: .float32(x), shape: [n, f], labels: [Int64](repeating: 0, count: n), classes: ["a"], splits: [:])
        let norm = NormalizationStats.compute(d, scale: 1, samples: nil)
        let e = direct({ Double(x[$0]) }, shape: [n, f], rows: Array(0..<n), scale: 1)
        assertClose(norm.mean, e.mean)
        XCTAssertEqual(norm.std[2], 1, "a constant channel gets std 1")
        assertClose([norm.std[0], norm.std[1], norm.std[3]], [e.std[0], e.std[1], e.std[3]])
        let empty = NormalizationStats.compute(d, scale: 2, samples: [])
        XCTAssertEqual(empty, Normalization(scale: 2, mean: [0, 0, 0, 0], std: [1, 1, 1, 1]))
    }
}
