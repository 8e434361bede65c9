import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

final class IDXTests: DataTestCase {
    /// Values representable in every type, and their big-endian encodings per type code.
    let values: [Double] = [0, 1, 7, 100, 127, -3, -128, 42]

    func encode(_ type: IDXArray.ElementType, _ v: [Double]) -> [UInt8] {
        switch type {
        case .uint8: return v.map { UInt8(UInt8(clamping: Int($0))) }
        case .int8: return v.map { UInt8(bitPattern: Int8($0)) }
        case .int16: return bigEndian(v.map { Int16($0) })
        case .int32: return bigEndian(v.map { Int32($0) })
        case .float32: return bigEndian(v.map { Float($0).bitPattern })
        case .float64: return bigEndian(v.map { $0.bitPattern })
        }
    }

    func testEveryElementTypeRoundTripsPlainAndGzip() throws {
        for type in IDXArray.ElementType.allCases {
            let v = type == .uint8 ? values.map { max(0, $0) } : values + (type.isFloat ? [0.5, -2.25] : [])
            let bytes = idxFile(type: type.rawValue, dims: [Int32(v.count)], payload: encode(type, v))
            for gz in [false, true] {
                let p = try write("t\(type.rawValue)\(gz ? ".gz" : "")", gz ? gzip(bytes) : bytes)
                let a = try IDX.read(p)
                XCTAssertEqual(a.type, type)
                XCTAssertEqual(a.dims, [v.count])
                XCTAssertEqual((0..<a.count).map(a.value), v, "\(type) gz=\(gz)")
            }
        }
    }

    func testMultiDimensionalAndExtremes() throws {
        let i32: [Int32] = [Int32.min, -1, 0, Int32.max, 5, 6]
        let a = try IDX.parse(idxFile(type: 0x0C, dims: [2, 3], payload: bigEndian(i32)), file: "x")
        XCTAssertEqual(a.dims, [2, 3])
        XCTAssertEqual((0..<6).map(a.value), i32.map(Double.init))
        let f64: [Double] = [.pi, -1e300, .leastNonzeroMagnitude]
        let b = try IDX.parse(idxFile(type: 0x0E, dims: [3], payload: bigEndian(f64.map(\.bitPattern))), file: "x")
        XCTAssertEqual((0..<3).map(b.value), f64)
        // A zero-sized array is valid.
        let z = try IDX.parse(idxFile(type: 0x08, dims: [0, 28, 28], payload: []), file: "x")
        XCTAssertEqual(z.count, 0)
    }

    func testImagesBecomeNCHWAndKeepOrPromoteTheirType() throws {
        var r = TestRNG(3)
        let px = r.bytes(2 * 3 * 4)
        let a = try IDX.parse(idxFile(type: 0x08, dims: [2, 3, 4], payload: px), file: "x")
        let (inputs, shape) = try IDX.inputs(a, file: "x")
        XCTAssertEqual(shape, [2, 1, 3, 4])
        guard case .uint8(let got) = inputs else { return XCTFail("expected uint8") }
        XCTAssertEqual(got, px)
        // int16 within 0…255 → uint8; with a negative value → float32; float64 → float32.
        let small = try IDX.inputs(IDX.parse(idxFile(type: 0x0B, dims: [1, 2], payload: bigEndian([Int16(0), 255])), file: "x"), file: "x")
        guard case .uint8([0, 255]) = small.inputs else { return XCTFail("expected uint8 [0, 255], got \(small.inputs)") }
        XCTAssertEqual(small.shape, [1, 2])
        let neg = try IDX.inputs(IDX.parse(idxFile(type: 0x0B, dims: [1, 2], payload: bigEndian([Int16(-1), 300])), file: "x"), file: "x")
        guard case .float32([-1, 300]) = neg.inputs else { return XCTFail("expected float32, got \(neg.inputs)") }
        let f = try IDX.inputs(IDX.parse(idxFile(type: 0x0E, dims: [1, 1, 2], payload: bigEndian([0.25, 1.5].map(\.bitPattern))), file: "x"), file: "x")
        guard case .float32([0.25, 1.5]) = f.inputs else { return XCTFail("expected float32, got \(f.inputs)") }
        XCTAssertEqual(f.shape, [1, 1, 1, 2])
    }

    func testBadHeaders() throws {
        expectError("bad.idx", "IDX header", "at least the 4-byte magic") { _ = try IDX.parse([0, 0, 8], file: "bad.idx") }
        expectError("bad.idx", "magic is 01 00 08 01") { _ = try IDX.parse([1, 0, 8, 1, 0, 0, 0, 0], file: "bad.idx") }
        expectError("bad.idx", "magic is 1f 8b") { _ = try IDX.parse([0x1f, 0x8b, 8, 0], file: "bad.idx") }
        expectError("bad.idx", "element type code 0x0a is unknown") { _ = try IDX.parse([0, 0, 0x0A, 1, 0, 0, 0, 0], file: "bad.idx") }
        expectError("bad.idx", "0 dimensions") { _ = try IDX.parse([0, 0, 8, 0], file: "bad.idx") }
        expectError("bad.idx", "declares 3 dimensions", "only 8 bytes") { _ = try IDX.parse([0, 0, 8, 3, 0, 0, 0, 1], file: "bad.idx") }
        expectError("bad.idx", "dimension 1 is -1") {
            _ = try IDX.parse(idxFile(type: 8, dims: [1, -1], payload: []), file: "bad.idx")
        }
        expectError("bad.idx", "overflow") {
            _ = try IDX.parse(idxFile(type: 8, dims: [Int32.max, Int32.max, Int32.max], payload: []), file: "bad.idx")
        }
        // The product fits but the bytes (× 8 for float64) do not.
        expectError("bad.idx", "truncated") {
            _ = try IDX.parse(idxFile(type: 0x0E, dims: [Int32.max, Int32.max, 2], payload: []), file: "bad.idx")
        }
    }

    func testTruncatedAndTrailingData() throws {
        let good = idxFile(type: 0x0B, dims: [2, 3], payload: bigEndian([Int16](repeating: 9, count: 6)))
        XCTAssertNoThrow(try IDX.parse(good, file: "ok"))
        expectError("short.idx", "IDX data", "is truncated", "need 12 bytes", "has 11") {
            _ = try IDX.parse(Array(good.dropLast()), file: "short.idx")
        }
        expectError("long.idx", "IDX data", "3 trailing bytes") { _ = try IDX.parse(good + [1, 2, 3], file: "long.idx") }
        // The same through a gzip file.
        let p = try write("short.gz", gzip(Array(good.dropLast(5))))
        expectError("short.gz", "truncated") { _ = try IDX.read(p) }
    }

    func testLabels() throws {
        let l = try IDX.labels(IDX.parse(idxFile(type: 8, dims: [4], payload: [0, 9, 3, 255]), file: "l"), file: "l")
        XCTAssertEqual(l, [0, 9, 3, 255])
        expectError("l", "label 1 is -2") { _ = try IDX.labels(IDX.parse(idxFile(type: 9, dims: [2], payload: [1, 0xFE]), file: "l"), file: "l") }
        expectError("l", "label 0 is 0.5") {
            _ = try IDX.labels(IDX.parse(idxFile(type: 0x0D, dims: [1], payload: bigEndian([Float(0.5).bitPattern])), file: "l"), file: "l")
        }
        expectError("l", "expected a 1-D labels array") { _ = try IDX.labels(IDX.parse(idxFile(type: 8, dims: [1, 1], payload: [0]), file: "l"), file: "l") }
        expectError("i", "expected [N, H, W] images") { _ = try IDX.inputs(IDX.parse(idxFile(type: 8, dims: [1], payload: [0]), file: "i"), file: "i") }
    }

    // MARK: import of a pair / two pairs

    /// Writes images [n, h, w] (pixel = (i·31 + k) mod 256) and labels i mod classes.
    func writePair(_ prefix: String, n: Int, h: Int = 3, w: Int = 2, classes: Int = 3, gz: Bool = true, labelShift: Int = 0) throws -> (String, String) {
        let px = (0..<(n * h * w)).map { UInt8(($0 / (h * w) * 31 + $0 % (h * w)) % 256) }
        let labels = (0..<n).map { UInt8(($0 + labelShift) % classes) }
        let i = idxFile(type: 8, dims: [Int32(n), Int32(h), Int32(w)], payload: px)
        let l = idxFile(type: 8, dims: [Int32(n)], payload: labels)
        let ext = gz ? "-ubyte.gz" : "-ubyte"
        return (try write("\(prefix)-images-idx3\(ext)", gz ? gzip(i) : i), try write("\(prefix)-labels-idx1\(ext)", gz ? gzip(l) : l))
    }

    func testImportTrainAndTestPairs() throws {
        let (ti, tl) = try writePair("train", n: 60)
        let (ei, el) = try writePair("t10k", n: 12, gz: false, labelShift: 1)
        var o = DataImport.Options()
        o.valFraction = 0.2
        let r = try DataImport.load([ti, tl, ei, el], options: o)
        XCTAssertEqual(r.format, .idx)
        let d = r.data
        XCTAssertEqual(d.shape, [72, 1, 3, 2])
        XCTAssertEqual(d.classes, ["0", "1", "2"])
        XCTAssertEqual(d.labels, (0..<60).map { Int64($0 % 3) } + (0..<12).map { Int64(($0 + 1) % 3) })
        XCTAssertEqual(d.bytes[6 * 61 + 5], UInt8((61 - 60) * 31 % 256 + 5))   // sample 61 = test item 1
        XCTAssertEqual(d.splits["test"], Array(60..<72))
        XCTAssertEqual(d.splits["val"]!.count, 12)                       // 20 % of each class of 20
        XCTAssertEqual(d.splits["train"]!.count, 48)
        XCTAssertEqual(Set(d.splits["train"]!).union(d.splits["val"]!), Set(0..<60))
        for c in 0..<3 { XCTAssertEqual(d.splits["val"]!.filter { d.labels[$0] == Int64(c) }.count, 4) }
        XCTAssertEqual(d.normalization.scale, 1.0 / 255.0)
        XCTAssertEqual(d.normalization.mean.count, 1)

        o.valFraction = 0
        XCTAssertEqual(try DataImport.load([ti, tl, ei, el], options: o).data.splits.keys.sorted(), ["test", "train"])
        o.classNames = ["a", "b", "c"]
        XCTAssertEqual(try DataImport.load([ti, tl], options: o).data.classes, ["a", "b", "c"])
    }

    func testImportErrors() throws {
        let (ti, tl) = try writePair("train", n: 10)
        let (_, shortLabels) = try writePair("short", n: 9)
        let (bigImages, bigLabels) = try writePair("big", n: 4, h: 4)
        expectError(shortLabels, "has 9 labels", "10 images") { _ = try DataImport.load([ti, shortLabels]) }
        expectError(tl, "pass the images file first") { _ = try DataImport.load([tl, ti]) }
        expectError(bigImages, "test samples have shape [1, 4, 2]") { _ = try DataImport.load([ti, tl, bigImages, bigLabels]) }
        var o = DataImport.Options()
        o.classNames = ["a", "b"]
        expectError(tl, "label 2 of item 2 is outside [0, 2)") { _ = try DataImport.load([ti, tl], options: o) }
        expectError(ti, "2 files", "or 4") { _ = try DataImport.load([ti, tl, ti]) }
        let empty = try write("empty-images-idx3-ubyte", idxFile(type: 8, dims: [0, 2, 2], payload: []))
        let noLabels = try write("empty-labels-idx1-ubyte", idxFile(type: 8, dims: [0], payload: []))
        expectError("empty-images-idx3-ubyte", "holds no samples") { _ = try DataImport.load([empty, noLabels]) }
        let flat = try write("flat-images-idx3-ubyte", idxFile(type: 8, dims: [2, 0, 3], payload: []))
        expectError("flat-images-idx3-ubyte", "each sample would hold no values") { _ = try DataImport.load([flat, tl]) }
        let bigLabel = try write("huge-labels-idx1-ubyte", idxFile(type: 0x0C, dims: [10], payload: bigEndian([Int32](repeating: 1 << 24, count: 10))))
        expectError("huge-labels-idx1-ubyte", "label 16777216 of item 0 is too large") { _ = try DataImport.load([ti, bigLabel]) }
        let noName = try write("mystery.bin", [0])
        let unknown = LocusTestSupport.expectError(RemediableError.self, mentioning: ["mystery.bin", "cannot tell the format"]) { _ = try DataImport.load([noName]) }
        XCTAssertEqual(unknown?.remedy, .name(setting: "format"))
    }

    func testWrittenArtifactReadsBackAndFailuresLeaveNothing() throws {
        let (ti, tl) = try writePair("train", n: 30)
        let out = path("out.h5")
        let r = try DataImport.importFiles([ti, tl], to: out, command: ["test"])
        let back = try DatasetArtifact.read(out)
        XCTAssertEqual(back.bytes, r.data.bytes)
        XCTAssertEqual(back.labels, r.data.labels)
        XCTAssertEqual(back.splits, r.data.splits)
        XCTAssertEqual(back.normalization, r.data.normalization)
        XCTAssertEqual(Validator.validate(out).filter { $0.severity == .error }, [])
        let before = try listing()
        let bad = try write("bad-images-idx3-ubyte", [0, 0, 8, 3])
        expectError("bad-images-idx3-ubyte") { try DataImport.importFiles([bad, tl], to: self.path("fail.h5")) }
        XCTAssertEqual(Set(try listing()), Set(before + ["bad-images-idx3-ubyte"]))
    }
}
