import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

/// The spec §5 rule, written out independently: sizes coo (i+v)·s, bitmask count/8 + v·s,
/// dense v·count; smallest wins; ties prefer dense, then bitmask.
func specEncoding(count: Int, stored: Int, valueBytes v: Int) -> TaskVectorEncoding {
    let i = count <= 1 << 32 ? 4.0 : 8.0
    let sizes: [(TaskVectorEncoding, Double)] = [
        (.dense, Double(v) * Double(count)),
        (.bitmask, Double(count) / 8 + Double(v) * Double(stored)),
        (.coo, (i + Double(v)) * Double(stored)),
    ]
    let best = sizes.map(\.1).min()!
    return sizes.first { $0.1 == best }!.0   // first in preference order among the smallest
}

final class SummariesAndEncodingTests: XCTestCase {

    func testQuantilesMatchASortBasedReference() {
        var rng = SplitMix64(seed: 21)
        for n in [1, 2, 3, 4, 5, 10, 101, 1000, 4097] {
            let v = rng.floats(n, in: 0...50)
            let q = v.withUnsafeBufferPointer { Summaries.quantiles($0) }
            assertClose(q, referenceQuantiles(v))
            XCTAssertEqual(q.first, Double(v.min()!))
            XCTAssertEqual(q.last, Double(v.max()!))
        }
        XCTAssertEqual([Float]().withUnsafeBufferPointer { Summaries.quantiles($0) }, [])
        // numpy: np.quantile([1, 2, 3, 4], [0, .25, .5, .75, 1]) = [1, 1.75, 2.5, 3.25, 4]
        XCTAssertEqual([Float](arrayLiteral: 4, 1, 3, 2).withUnsafeBufferPointer { Summaries.quantiles($0) }, [1, 1.75, 2.5, 3.25, 4])
        XCTAssertEqual([Float](arrayLiteral: 7).withUnsafeBufferPointer { Summaries.quantiles($0) }, [7, 7, 7, 7, 7])
    }

    func testSumsNormsAndNonzeroCounts() {
        let v: [Float] = [3, -4, 0, 0, 1e-30, -0.0]
        v.withUnsafeBufferPointer { b in
            XCTAssertEqual(Summaries.sum(b), -1 + Double(Float(1e-30)))
            XCTAssertEqual(Summaries.sumOfSquares(b), 25 + Double(Float(1e-30)) * Double(Float(1e-30)))
            XCTAssertEqual(Summaries.nonzeroCount(b), 3)
        }
        XCTAssertTrue(Summaries.close(1, 1 + 1e-7))
        XCTAssertFalse(Summaries.close(1, 1 + 1e-5))
        XCTAssertTrue(Summaries.close(0, 0))
    }

    func testEncodingChoiceFollowsTheSpecCostRule() {
        for count in [1000, 3200, 10_000] {
            for density in [0.01, 0.10, 0.99, 1.0] {
                let stored = Int((Double(count) * density).rounded())
                for v in [2, 4, 8] {
                    XCTAssertEqual(TaskVectorEncoding.choose(count: count, stored: stored, valueBytes: v),
                                   specEncoding(count: count, stored: stored, valueBytes: v), "count \(count) density \(density) v \(v)")
                }
            }
        }
        // float32 at count 1000: 1 % coo, 10 % bitmask, 99 % and 100 % dense (bitmask only pays up to ≈ 0.97).
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1000, stored: 10, valueBytes: 4), .coo)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1000, stored: 100, valueBytes: 4), .bitmask)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1000, stored: 990, valueBytes: 4), .dense)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1000, stored: 1000, valueBytes: 4), .dense)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1000, stored: 960, valueBytes: 4), .bitmask)
        // The boundaries the spec quotes for float32: coo below 1/32, ties go to bitmask, then dense.
        XCTAssertEqual(TaskVectorEncoding.choose(count: 3200, stored: 99, valueBytes: 4), .coo)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 3200, stored: 100, valueBytes: 4), .bitmask, "tie coo = bitmask = 800")
        XCTAssertEqual(TaskVectorEncoding.choose(count: 3200, stored: 3100, valueBytes: 4), .dense, "tie bitmask = dense = 12800")
        XCTAssertEqual(TaskVectorEncoding.choose(count: 0, stored: 0, valueBytes: 4), .dense)
        // Over 2^32 elements indices take 8 bytes.
        let huge = (1 << 33)
        for stored in [1 << 20, 1 << 25, 1 << 26] {
            XCTAssertEqual(TaskVectorEncoding.choose(count: huge, stored: stored, valueBytes: 4),
                           specEncoding(count: huge, stored: stored, valueBytes: 4), "stored \(stored)")
        }
        // Between count/64 and count/32 stored values the index width decides: 8-byte indices
        // make coo (12·s) dearer than bitmask (count/8 + 4·s); with 4-byte ones coo would win.
        XCTAssertEqual(TaskVectorEncoding.choose(count: huge, stored: huge / 48, valueBytes: 4), .bitmask)
        XCTAssertEqual(TaskVectorEncoding.choose(count: 1 << 32, stored: (1 << 32) / 48, valueBytes: 4), .coo)
    }
}

final class ScoresTests: LocusTestCase {

    func testScoresRoundTripAndSummaries() throws {
        let p = path("scores.locus")
        var rng = SplitMix64(seed: 31)
        let tensors: [(String, [Int], [Float])] = [
            ("layer/1.w", [4, 5], rng.floats(20, in: 0...2)),
            ("b", [7], rng.floats(7, in: 0...1e-3)),
            ("scalar", [], [0.5]),
            ("empty", [0, 3], []),
            ("zeros", [3], [0, 0, 0]),
        ]
        let info = ScoresInfo(baseFingerprint: someFingerprint, estimator: "fisher-mc", samples: 128, draws: 4, reduction: .mean)
        let w = try ScoresWriter(path: p, info: info)
        for (n, s, v) in tensors { try w.add(name: n, shape: s, values: v) }
        try w.finish()
        XCTAssertEqual(try listing(), ["scores.locus"])

        let r = try ScoresReader(path: p)
        XCTAssertEqual(r.info, info)
        XCTAssertEqual(r.artifact.header.baseFingerprint, someFingerprint)
        XCTAssertEqual(r.tensors.map(\.name), ["b", "empty", "layer/1.w", "scalar", "zeros"])
        let f = try File.open(p)
        let g = try f.root.openGroup("tensors")
        var all: [Float] = []
        for (n, s, v) in tensors {
            let t = try XCTUnwrap(r.tensor(named: n))
            XCTAssertEqual(t.shape, s)
            XCTAssertEqual(t.count, v.count)
            XCTAssertEqual(try r.read(t), v)
            let ds = try g.openDataset(TensorName.linkName(for: n))
            XCTAssertEqual(try ds.stringAttribute("dtype"), "float32")
            XCTAssertTrue(ds.type.isEqual(to: .float32LE))
            assertClose(try ds.doubleAttributes("quantiles"), referenceQuantiles(v))
            XCTAssertEqual(try ds.doubleAttributes("quantiles").count, v.isEmpty ? 0 : 5)
            assertClose([try ds.doubleAttribute("sum")], [v.reduce(0.0) { $0 + Double($1) }])
            all += v
        }
        XCTAssertEqual(try f.root.stringAttribute("estimator"), "fisher-mc")
        XCTAssertEqual(try f.root.int64Attribute("samples"), 128)
        XCTAssertEqual(try f.root.int64Attribute("draws"), 4)
        XCTAssertEqual(try f.root.stringAttribute("reduction"), "mean")
        XCTAssertEqual(try f.root.int64Attribute("tensor-count"), 5)
        XCTAssertEqual(try f.root.int64Attribute("element-count"), Int64(all.count))
        XCTAssertEqual(try f.root.doubleAttribute("min"), Double(all.min()!))
        XCTAssertEqual(try f.root.doubleAttribute("max"), Double(all.max()!))
        assertClose([try f.root.doubleAttribute("sum")], [all.reduce(0.0) { $0 + Double($1) }])
        assertClean(p)
    }

    func testScoresRejectNegativeAndNonFiniteValues() throws {
        for bad: Float in [-1e-9, .nan, .infinity] {
            let p = path("bad.locus")
            let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
            let e = expectLocusError(mentioning: p) { try w.add(name: "x", shape: [2], values: [1, bad]) }
            XCTAssertEqual(e?.object, "/tensors/x")
            XCTAssertEqual(try listing(), [])
        }
        expectLocusError(mentioning: path("s.locus")) {
            _ = try ScoresWriter(path: self.path("s.locus"), info: .init(baseFingerprint: someFingerprint, estimator: "e", samples: -1))
        }
        expectLocusError(mentioning: path("s.locus")) {
            _ = try ScoresWriter(path: self.path("s.locus"), info: .init(baseFingerprint: someFingerprint, estimator: "e", samples: 1, draws: 0))
        }
        XCTAssertEqual(try listing(), [])
    }
}

final class MaskTests: LocusTestCase {

    func testMaskRoundTrip() throws {
        let p = path("mask.locus")
        var rng = SplitMix64(seed: 41)
        func bits(_ n: Int, _ density: Double) -> [Bool] { (0..<n).map { _ in rng.unit() < density } }
        let tensors: [(String, [Int], [Bool])] = [
            ("w/0", [3, 5], bits(15, 0.5)),
            ("big", [200, 200], bits(40_000, 0.1)),      // 5000 packed bytes: chunked + compressed
            ("scalar", [], [true]),
            ("empty", [0], []),
            ("all", [9], [Bool](repeating: true, count: 9)),
            ("none", [2, 4], [Bool](repeating: false, count: 8)),
        ]
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint, absentTensors: .trainable)
        for (n, s, b) in tensors { try w.add(name: n, shape: s, bits: b) }
        try w.finish()

        let r = try MaskReader(path: p)
        XCTAssertEqual(r.baseFingerprint, someFingerprint)
        XCTAssertEqual(r.absentTensors, .trainable)
        XCTAssertEqual(r.tensors.map(\.name), ["all", "big", "empty", "none", "scalar", "w/0"])
        let f = try File.open(p)
        let g = try f.root.openGroup("tensors")
        for (n, s, b) in tensors {
            let t = try XCTUnwrap(r.tensor(named: n))
            XCTAssertEqual(t.shape, s)
            XCTAssertEqual(t.count, b.count)
            XCTAssertEqual(t.ones, b.filter { $0 }.count)
            XCTAssertEqual(try r.read(t), b, n)
            XCTAssertEqual(try r.readPacked(t), BitPacking.pack(b))
            let ds = try g.openDataset(TensorName.linkName(for: n))
            XCTAssertEqual(ds.shape, [(b.count + 7) / 8])
            XCTAssertTrue(ds.type.isEqual(to: .uint8LE))
            XCTAssertEqual(try ds.stringAttribute("encoding-type"), "packed-bits")
            XCTAssertEqual(try ds.stringAttribute("bitorder"), "little")
            XCTAssertEqual(try ds.int64Attributes("shape"), s.map(Int64.init))
            XCTAssertEqual(try ds.int64Attribute("count"), Int64(b.count))
            XCTAssertEqual(try ds.int64Attribute("ones"), Int64(b.filter { $0 }.count))
        }
        let bigDS = try g.openDataset("big")
        XCTAssertEqual(bigDS.creationProperties.layout, .chunked)
        XCTAssertTrue(bigDS.creationProperties.filters.contains(1))
        XCTAssertTrue(bigDS.creationProperties.filters.contains(3))
        XCTAssertEqual(try g.openDataset("w%2F0").creationProperties.layout, .contiguous)
        XCTAssertEqual(try f.root.int64Attribute("tensor-count"), 6)
        XCTAssertEqual(try f.root.int64Attribute("count"), Int64(tensors.reduce(0) { $0 + $1.2.count }))
        XCTAssertEqual(try f.root.int64Attribute("ones"), Int64(tensors.reduce(0) { $0 + $1.2.filter { $0 }.count }))
        XCTAssertEqual(try f.root.stringAttribute("absent-tensors"), "trainable")
        assertClean(p)
    }

    func testPackedAddChecksLengthAndPadding() throws {
        let p = path("m.locus")
        do {
            let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
            let e = expectLocusError(mentioning: p) { try w.add(name: "x", shape: [10], packed: [0xFF]) }
            XCTAssertEqual(e?.object, "/tensors/x")
        }
        XCTAssertEqual(try listing(), [])
        do {
            let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
            expectLocusError(mentioning: p) { try w.add(name: "x", shape: [10], packed: [0xFF, 0x04]) }
        }
        XCTAssertEqual(try listing(), [])
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "x", shape: [10], packed: [0xFF, 0x03])
        try w.finish()
        XCTAssertEqual(try MaskReader(path: p).tensors.first?.ones, 10)
        XCTAssertEqual(try MaskReader(path: p).absentTensors, .frozen)
    }
}

final class TaskVectorTests: LocusTestCase {

    /// A dense tensor of `count` values with exactly round(count · density) nonzeros.
    private func sparse(_ count: Int, density: Double, _ rng: inout SplitMix64) -> [Float] {
        var v = [Float](repeating: 0, count: count)
        let k = Int((Double(count) * density).rounded())
        var positions = Array(0..<count)
        positions.shuffle(using: &rng)
        for i in positions.prefix(k) { v[i] = Float(rng.unit() * 2 - 1) + (rng.next() & 1 == 0 ? 0.5 : -0.5) }
        return v
    }

    func testTaskVectorRoundTripEncodingsAndSummaries() throws {
        let p = path("tv.locus")
        var rng = SplitMix64(seed: 51)
        let tensors: [(String, [Int], [Float])] = [
            ("d1", [10, 100], sparse(1000, density: 0.01, &rng)),
            ("d10", [1000], sparse(1000, density: 0.10, &rng)),
            ("d99", [20, 50], sparse(1000, density: 0.99, &rng)),
            ("d100", [1000], sparse(1000, density: 1.0, &rng)),
            ("big/coo", [40_000], sparse(40_000, density: 0.03, &rng)),     // 1200 indices: 4800 bytes, chunked
            ("zero", [5], [0, 0, 0, 0, 0]),
            ("scalar", [], [2.5]),
            ("empty", [0, 4], []),
        ]
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint, scale: 0.5, attributes: ["finetuned-fingerprint": someFingerprint])
        for (n, s, v) in tensors { try w.add(name: n, shape: s, dense: v) }
        try w.finish()

        let r = try TaskVectorReader(path: p)
        XCTAssertEqual(r.scale, 0.5)
        XCTAssertEqual(r.baseFingerprint, someFingerprint)
        let f = try File.open(p)
        XCTAssertEqual(try f.root.stringAttribute("finetuned-fingerprint"), someFingerprint)
        let g = try f.root.openGroup("tensors")
        var totalSquares = 0.0, totalNNZ = 0, totalCount = 0
        for (n, s, v) in tensors {
            let t = try XCTUnwrap(r.tensor(named: n))
            let nnz = v.filter { $0 != 0 }.count
            let squares = v.reduce(0.0) { $0 + Double($1) * Double($1) }
            XCTAssertEqual(t.shape, s)
            XCTAssertEqual(t.count, v.count)
            XCTAssertEqual(t.dtype, .float32)
            XCTAssertEqual(t.nnz, nnz, n)
            assertClose([t.l2Norm], [squares.squareRoot()])
            XCTAssertEqual(t.encoding, specEncoding(count: v.count, stored: nnz, valueBytes: 4), n)
            XCTAssertEqual(try r.readDense(t), v, n)
            let (idx, vals) = try r.readSparse(t)
            XCTAssertEqual(idx, v.indices.filter { v[$0] != 0 })
            XCTAssertEqual(vals, v.filter { $0 != 0 })
            let sub = try g.openGroup(TensorName.linkName(for: n))
            XCTAssertEqual(try sub.stringAttribute("encoding-type"), t.encoding.rawValue)
            XCTAssertEqual(try sub.int64Attributes("shape"), s.map(Int64.init))
            XCTAssertEqual(try sub.int64Attribute("count"), Int64(v.count))
            XCTAssertEqual(try sub.stringAttribute("dtype"), "float32")
            switch t.encoding {
            case .coo:
                XCTAssertEqual(try sub.childNames(), ["indices", "values"])
                XCTAssertTrue(try sub.openDataset("indices").type.isEqual(to: .uint32LE))
            case .bitmask: XCTAssertEqual(try sub.childNames(), ["mask", "values"])
            case .dense:
                XCTAssertEqual(try sub.childNames(), ["values"])
                XCTAssertEqual(try sub.openDataset("values").shape, s)
            }
            totalSquares += squares; totalNNZ += nnz; totalCount += v.count
        }
        XCTAssertEqual(r.tensor(named: "d1")?.encoding, .coo)
        XCTAssertEqual(r.tensor(named: "d10")?.encoding, .bitmask)
        XCTAssertEqual(r.tensor(named: "d99")?.encoding, .dense)
        XCTAssertEqual(r.tensor(named: "d100")?.encoding, .dense)
        XCTAssertEqual(r.tensor(named: "big/coo")?.encoding, .coo)
        let bigIndices = try g.openGroup("big%2Fcoo").openDataset("indices")
        XCTAssertEqual(bigIndices.creationProperties.layout, .chunked)
        XCTAssertEqual(bigIndices.creationProperties.filters, [2, 1, 3])
        XCTAssertEqual(try g.openGroup("big%2Fcoo").openDataset("values").creationProperties.filters, [], "values are not compressed")
        XCTAssertEqual(try f.root.int64Attribute("tensor-count"), Int64(tensors.count))
        XCTAssertEqual(try f.root.int64Attribute("count"), Int64(totalCount))
        XCTAssertEqual(try f.root.int64Attribute("nnz"), Int64(totalNNZ))
        assertClose([try f.root.doubleAttribute("l2-norm")], [totalSquares.squareRoot()])
        XCTAssertEqual(try f.root.doubleAttribute("scale"), 0.5)
        assertClean(p)
    }

    func testIndexedAddAndHalfPrecisionValues() throws {
        let p = path("half.locus")
        var rng = SplitMix64(seed: 61)
        let dense = sparse(600, density: 0.2, &rng).map { $0 * 3 } + [1e-10, -1e-10, 0, 0]   // tiny values round to 0 in float16
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "h", shape: [dense.count], dense: dense, dtype: .float16)
        try w.add(name: "bf", shape: [4, dense.count / 4], dense: dense, dtype: .bfloat16)
        try w.add(name: "f64", shape: [dense.count], dense: dense, dtype: .float64)
        try w.add(name: "ix", shape: [5, 5], indices: [0, 7, 24], values: [1.5, -2, 0.25], dtype: .bfloat16)
        try w.finish()

        let r = try TaskVectorReader(path: p)
        func rounded(_ v: [Float], _ dtype: LocusDType) -> [Float] {
            v.withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }.withUnsafeBytes { HalfPrecision.decode($0, dtype: dtype) }
        }
        for (n, dtype) in [("h", LocusDType.float16), ("bf", .bfloat16), ("f64", .float64)] {
            let t = try XCTUnwrap(r.tensor(named: n))
            XCTAssertEqual(t.dtype, dtype)
            let expected = rounded(dense, dtype)
            XCTAssertEqual(try r.readDense(t).map(\.bitPattern), expected.map(\.bitPattern), n)
            XCTAssertEqual(t.nnz, expected.filter { $0 != 0 }.count, "\(n): nnz counts what is stored, after rounding")
            assertClose([t.l2Norm], [expected.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()])
        }
        XCTAssertEqual(r.tensor(named: "h")!.nnz, dense.filter { $0 != 0 }.count - 2, "1e-10 is 0 in float16")
        XCTAssertEqual(r.tensor(named: "bf")!.nnz, dense.filter { $0 != 0 }.count, "1e-10 survives in bfloat16")
        let ix = try XCTUnwrap(r.tensor(named: "ix"))
        XCTAssertEqual(ix.encoding, specEncoding(count: 25, stored: 3, valueBytes: 2))
        XCTAssertEqual(ix.encoding, .bitmask, "25/8 + 2·3 < 6·3")
        XCTAssertEqual(try r.readSparse(ix).indices, [0, 7, 24])
        XCTAssertEqual(try r.readSparse(ix).values, [1.5, -2, 0.25])
        let f = try File.open(p)
        let values = try f.root.openGroup("tensors").openGroup("bf").openDataset("values")
        XCTAssertTrue(values.type.isEqual(to: try .bfloat16LE()))
        assertClean(p)
    }

    func testIndexedAddRejectsBadIndices() throws {
        let p = path("bad.locus")
        let cases: [([Int], [Float])] = [([3, 1], [1, 1]), ([1, 1], [1, 1]), ([25], [1]), ([-1], [1]), ([1, 2], [1])]
        for (idx, vals) in cases {
            let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
            let e = expectLocusError(mentioning: p) { try w.add(name: "t", shape: [5, 5], indices: idx, values: vals) }
            XCTAssertEqual(e?.object, "/tensors/t", "\(idx)")
            XCTAssertEqual(try listing(), [])
        }
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
        expectLocusError(mentioning: p) { try w.add(name: "t", shape: [2], dense: [1, 2], dtype: .int32) }
        expectLocusError(mentioning: p) { _ = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint, scale: .nan) }
        XCTAssertEqual(try listing(), [])
    }

    /// Spec §5: values MUST be finite. A finite float32 that overflows the value type (70000 in
    /// float16, 3.4e38 in bfloat16) must not end up stored as infinity.
    func testValuesThatOverflowTheValueTypeAreNotStoredAsInfinity() throws {
        for (dtype, big) in [(LocusDType.float16, Float(70_000)), (.bfloat16, Float.greatestFiniteMagnitude)] {
            let p = path("overflow-\(dtype).locus")
            do {
                let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
                try w.add(name: "t", shape: [4], dense: [1, 0, big, 0], dtype: dtype)
                try w.finish()
            } catch let e as LocusError {
                XCTAssertTrue(e.description.contains(p))
                XCTAssertFalse(FileManager.default.fileExists(atPath: p))
                continue   // refusing is an acceptable answer
            }
            // Written: then it must be a valid file.
            assertClean(p)
        }
    }
}

final class DatasetArtifactTests: LocusTestCase {

    private func images(_ rng: inout SplitMix64) -> LabelledData {
        let n = 12
        return LabelledData(inputs: .uint8(rng.bytes(n * 3 * 2 * 2)), shape: [n, 3, 2, 2],
                            labels: (0..<n).map { Int64($0 % 3) }, classes: ["cat", "dog", "é/✓"],
                            splits: ["train": Array(0..<8), "val": [8, 9], "test": [10, 11]],
                            normalization: .init(scale: 1.0 / 255, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3]))
    }

    private func assertSame(_ a: LabelledData, _ b: LabelledData, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.shape, b.shape, file: file, line: line)
        XCTAssertEqual(a.labels, b.labels, file: file, line: line)
        XCTAssertEqual(a.classes, b.classes, file: file, line: line)
        XCTAssertEqual(a.splits, b.splits, file: file, line: line)
        XCTAssertEqual(a.normalization, b.normalization, file: file, line: line)
        switch (a.inputs, b.inputs) {
        case let (.uint8(x), .uint8(y)): XCTAssertEqual(x, y, file: file, line: line)
        case let (.float32(x), .float32(y)): XCTAssertEqual(x.map(\.bitPattern), y.map(\.bitPattern), file: file, line: line)
        default: XCTFail("input types differ", file: file, line: line)
        }
    }

    func testImageDatasetRoundTrip() throws {
        let p = path("images.locus")
        var rng = SplitMix64(seed: 71)
        let data = images(&rng)
        try DatasetArtifact.write(data, to: p, attributes: ["source": "unit test"])
        XCTAssertEqual(try listing(), ["images.locus"])
        assertSame(try DatasetArtifact.read(p), data)
        let f = try File.open(p)
        XCTAssertEqual(try f.root.stringAttribute("kind"), "dataset")
        XCTAssertEqual(try f.root.stringAttribute("source"), "unit test")
        XCTAssertEqual(try f.root.int64Attribute("sample-count"), 12)
        XCTAssertEqual(try f.root.int64Attribute("class-count"), 3)
        let inputs = try f.root.openDataset("inputs")
        XCTAssertEqual(try inputs.stringAttribute("dtype"), "uint8")
        XCTAssertEqual(try inputs.doubleAttributes("mean"), [0.5, 0.4, 0.3])
        XCTAssertEqual(inputs.creationProperties.layout, .chunked)
        XCTAssertTrue(inputs.creationProperties.filters.contains(3))
        XCTAssertEqual(try f.root.openDataset("classes").readStrings(), ["cat", "dog", "é/✓"])
        XCTAssertEqual(try f.root.openGroup("splits").childNames(), ["test", "train", "val"])
        assertClean(p)
    }

    func testFeatureDatasetRoundTripAndEmptyDataset() throws {
        var rng = SplitMix64(seed: 72)
        let features = LabelledData(inputs: .float32(rng.floats(5 * 4, in: -1...1)), shape: [5, 4],
                                    labels: [0, 1, 1, 0, 1], classes: ["no", "yes"], splits: ["all": [0, 1, 2, 3, 4], "none": []])
        let p = path("features.locus")
        try DatasetArtifact.write(features, to: p)
        assertSame(try DatasetArtifact.read(p), features)
        assertClean(p)

        let empty = LabelledData(inputs: .float32([]), shape: [0, 4], labels: [], classes: ["a"], splits: [:])
        let q = path("empty.locus")
        try DatasetArtifact.write(empty, to: q)
        assertSame(try DatasetArtifact.read(q), empty)
        assertClean(q)
    }

    func testInvalidDataIsRefusedBeforeAnythingIsWritten() throws {
        var rng = SplitMix64(seed: 73)
        let good = images(&rng)
        var cases: [(String, LabelledData)] = []
        var d = good; d.labels[3] = 3; cases.append(("/labels", d))
        d = good; d.labels[0] = -1; cases.append(("/labels", d))
        d = good; d.splits["val"] = [7, 8]; cases.append(("/splits/", d))
        d = good; d.splits["val"] = [9, 8]; cases.append(("/splits/val", d))
        d = good; d.splits["test"] = [12]; cases.append(("/splits/test", d))
        d = good; d.normalization.std = [1, 0, 1]; cases.append(("/inputs@std", d))
        d = good; d.normalization.mean = [0, 0]; cases.append(("/inputs@mean", d))
        d = good; d.shape = [12, 3, 2, 3]; cases.append(("/inputs", d))
        d = good; d.labels.removeLast(); cases.append(("/labels", d))
        for (object, data) in cases {
            let p = path("bad.locus")
            let e = expectLocusError(mentioning: p) { try DatasetArtifact.write(data, to: p) }
            XCTAssertTrue(e?.object?.hasPrefix(object) ?? false, "\(String(describing: e)) should concern \(object)")
            XCTAssertEqual(try listing(), [])
        }
    }
}
