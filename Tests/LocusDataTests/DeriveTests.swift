import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

final class DeriveTests: DataTestCase {
    func testClassSubsetRelabelsInTheOrderGiven() throws {
        var d = imageData(n: 20, h: 2, w: 2, classes: 10)       // labels i % 10, names class0…class9
        d.splits = ["train": Array(0..<14), "test": Array(14..<20)]
        let s = try Derive.subset(d, classes: ["7", "class3", "5"], file: "d.h5")   // by index, by name, by index
        XCTAssertEqual(s.classes, ["class7", "class3", "class5"])
        let kept = [3, 5, 7, 13, 15, 17]
        XCTAssertEqual(s.labels, [1, 2, 0, 1, 2, 0])
        XCTAssertEqual(s.shape, [6, 1, 2, 2])
        XCTAssertEqual(s.bytes, kept.flatMap { Array(d.bytes[($0 * 4)..<($0 * 4 + 4)]) })
        XCTAssertEqual(s.splits["train"], [0, 1, 2, 3])             // samples 3, 5, 7, 13
        XCTAssertEqual(s.splits["test"], [4, 5])                    // 15, 17
        XCTAssertNoThrow(try s.check(file: "x"))
        // Names that are digits match names first: a dataset whose classes are "0"…"9".
        var digits = d
        digits.classes = (0..<10).map(String.init)
        XCTAssertEqual(try Derive.subset(digits, classes: ["3", "5", "7"], file: "d").labels, [0, 1, 2, 0, 1, 2])
        expectError("d.h5", "/classes", "no class 'cat'") { _ = try Derive.subset(d, classes: ["cat"], file: "d.h5") }
        expectError("d.h5", "names a class twice") { _ = try Derive.subset(d, classes: ["3", "class3"], file: "d.h5") }
        expectError("no class '10'") { _ = try Derive.subset(d, classes: ["10"], file: "d.h5") }
    }

    /// rotate90 against the direct index formula of numpy.rot90(x, k, axes=(2, 3)).
    func testRotate90MatchesIndexFormula() throws {
        let (n, c, h, w) = (3, 2, 4, 5)
        let d = imageData(n: n, c: c, h: h, w: w, classes: 3)
        let x = d.bytes
        func at(_ a: [UInt8], _ sh: [Int], _ i: Int, _ ch: Int, _ y: Int, _ xx: Int) -> UInt8 { a[((i * sh[1] + ch) * sh[2] + y) * sh[3] + xx] }
        for k in [-1, 0, 1, 2, 3, 4, 5] {
            let r = try Derive.apply(.rotate90(k), to: d, file: "d")
            let kk = ((k % 4) + 4) % 4
            XCTAssertEqual(r.shape, kk % 2 == 1 ? [n, c, w, h] : [n, c, h, w])
            for i in 0..<n { for ch in 0..<c { for y in 0..<r.shape[2] { for xx in 0..<r.shape[3] {
                let want: UInt8
                switch kk {
                case 0: want = at(x, d.shape, i, ch, y, xx)
                case 1: want = at(x, d.shape, i, ch, xx, w - 1 - y)
                case 2: want = at(x, d.shape, i, ch, h - 1 - y, w - 1 - xx)
                default: want = at(x, d.shape, i, ch, h - 1 - xx, y)
                }
                XCTAssertEqual(at(r.bytes, r.shape, i, ch, y, xx), want, "k=\(k)")
            } } } }
        }
        // Four quarter turns are the identity; 1 then 3 too.
        let back = try Derive.apply(.rotate90(3), to: Derive.apply(.rotate90(1), to: d, file: "d"), file: "d")
        XCTAssertEqual(back.bytes, x)
        XCTAssertEqual(back.shape, d.shape)
    }

    func testFlipHorizontal() throws {
        let d = LabelledData(inputs: .uint8([1, 2, 3, 4, 5, 6]), shape: [1, 1, 2, 3], labels: [0], classes: ["a"], splits: [:])
        XCTAssertEqual(try Derive.apply(.flipHorizontal, to: d, file: "d").bytes, [3, 2, 1, 6, 5, 4])
    }

    func testInvert() throws {
        var u = LabelledData(inputs: .uint8([0, 1, 254, 255]), shape: [1, 4], labels: [0], classes: ["a"], splits: [:])
        u.normalization.scale = 1.0 / 255.0
        XCTAssertEqual(try Derive.apply(.invert, to: u, file: "d").bytes, [255, 254, 1, 0])
        var digits = LabelledData(inputs: .uint8([0, 3, 16]), shape: [1, 3], labels: [0], classes: ["a"], splits: [:])
        digits.normalization.scale = 1.0 / 16.0
        XCTAssertEqual(try Derive.apply(.invert, to: digits, file: "d").bytes, [16, 13, 0])
        digits.normalization.scale = 1.0 / 10.0
        expectError("d", "/inputs", "value 16", "exceeds 1/scale = 10") { _ = try Derive.apply(.invert, to: digits, file: "d") }
        digits.normalization.scale = 1.0 / 300.0
        expectError("d", "/inputs@scale", "1…255") { _ = try Derive.apply(.invert, to: digits, file: "d") }
        let f = LabelledData(inputs: .float32([0, 0.25, 1]), shape: [1, 3], labels: [0], classes: ["a"], splits: [:])
        XCTAssertEqual(try Derive.apply(.invert, to: f, file: "d").floats, [1, 0.75, 0])
    }

    func testResizeKnownValues() throws {
        // torch.nn.functional.interpolate(arange(4).view(1,1,2,2).float(), size=(4,4), mode="bilinear", align_corners=False)
        let d = LabelledData(inputs: .uint8([0, 1, 2, 3]), shape: [1, 1, 2, 2], labels: [0], classes: ["a"], splits: [:])
        let r = try Derive.apply(.resize(height: 4, width: 4), to: d, file: "d")
        XCTAssertEqual(r.shape, [1, 1, 4, 4])
        XCTAssertEqual(r.floats, [0.00, 0.25, 0.75, 1.00,
                                  0.50, 0.75, 1.25, 1.50,
                                  1.50, 1.75, 2.25, 2.50,
                                  2.00, 2.25, 2.75, 3.00])
        // Downsampling 4×4 → 2×2 with half-pixel centres averages 2×2 blocks' centres: source 0.5 and 2.5.
        let big = LabelledData(inputs: .float32((0..<16).map(Float.init)), shape: [1, 1, 4, 4], labels: [0], classes: ["a"], splits: [:])
        XCTAssertEqual(try Derive.apply(.resize(height: 2, width: 2), to: big, file: "d").floats, [2.5, 4.5, 10.5, 12.5])
        // Same size is the identity; 1×3 → 1×2 (non-square, ratio 1.5: sources 0.25 and 1.75).
        XCTAssertEqual(try Derive.apply(.resize(height: 4, width: 4), to: big, file: "d").floats, (0..<16).map(Float.init))
        let row = LabelledData(inputs: .float32([0, 10, 20]), shape: [1, 1, 1, 3], labels: [0], classes: ["a"], splits: [:])
        XCTAssertEqual(try Derive.apply(.resize(height: 1, width: 2), to: row, file: "d").floats, [2.5, 17.5])
        // 8×8 → 28×28 on two channels keeps each channel separate.
        var two = imageData(n: 2, c: 2, h: 8, w: 8, classes: 2)
        two.inputs = .uint8((0..<256).map { $0 < 128 && ($0 / 64) % 2 == 0 ? 0 : 200 })
        let big2 = try Derive.apply(.resize(height: 28, width: 28), to: two, file: "d")
        XCTAssertEqual(big2.shape, [2, 2, 28, 28])
        XCTAssertEqual(Set(big2.floats[0..<784]), [0])
        XCTAssertEqual(Set(big2.floats[784..<1568]), [200])
    }

    func testImageTransformsNeedImages() {
        let f = LabelledData(inputs: .float32([1, 2]), shape: [1, 2], labels: [0], classes: ["a"], splits: [:])
        let e = LocusTestSupport.expectError(RemediableError.self, mentioning: ["d", "rotate90=1 needs images [N, C, H, W]"]) {
            _ = try Derive.apply(.rotate90(1), to: f, file: "d")
        }
        XCTAssertEqual(e?.remedy, .use(setting: "imageShape", purpose: "import CSV features as images C,H,W"))
    }

    func testTransformParsing() throws {
        XCTAssertEqual(try InputTransform(parsing: "rotate90"), .rotate90(1))
        XCTAssertEqual(try InputTransform(parsing: "rotate90=-3"), .rotate90(-3))
        XCTAssertEqual(try InputTransform(parsing: "resize=28,28"), .resize(height: 28, width: 28))
        XCTAssertEqual(try InputTransform(parsing: "flip-horizontal"), .flipHorizontal)
        XCTAssertEqual(try InputTransform(parsing: "invert"), .invert)
        for (text, reason) in [("blur", "not a transform"), ("resize=28", "resize=H,W"), ("resize=0,5", "resize=H,W"), ("rotate90=x", "quarter turns")] {
            do {
                _ = try InputTransform(parsing: text)
                XCTFail("\(text) was accepted")
            } catch {
                XCTAssertEqual(error.text, text)
                XCTAssertTrue(error.reason.contains(reason), "\(error)")
                XCTAssertFalse(error.description.contains("--"), "\(error) names a command-line flag")
            }
        }
    }

    func testDeriveRecomputesNormalisationAndWritesProvenance() throws {
        var d = imageData(n: 30, h: 3, w: 3, classes: 3)
        d.splits = ["train": Array(0..<20), "test": Array(20..<30)]
        d.normalization = Normalization(scale: 1.0 / 255.0, mean: [0.123], std: [0.456])
        let src = path("src.h5")
        try DatasetArtifact.write(d, to: src)
        let out = path("out.h5")
        let derived = try DataImport.deriveFile(src, to: out, classes: ["class2", "class0"], transforms: [.invert, .resize(height: 6, width: 6)],
                                                command: ["locus", "data", "derive"])
        let back = try DatasetArtifact.read(out)
        XCTAssertEqual(back.shape, [20, 1, 6, 6])
        XCTAssertEqual(back.classes, ["class2", "class0"])
        XCTAssertEqual(back.floats, derived.floats)
        let expected = NormalizationStats.compute(back, scale: 1.0 / 255.0, samples: back.splits["train"])
        XCTAssertEqual(back.normalization, expected)
        XCTAssertNotEqual(back.normalization.mean, [0.123])
        let a = try ArtifactFile.open(out)
        let prov = try XCTUnwrap(a.header.provenance)
        XCTAssertEqual(prov.inputs.map(\.path), [src])
        XCTAssertEqual(prov.parameters["transforms"], .array([.string("invert"), .string("resize=6,6")]))
        XCTAssertEqual(prov.parameters["classes"], .array([.string("class2"), .string("class0")]))
        XCTAssertEqual(Validator.validate(out).filter { $0.severity == .error }, [])
    }
}
