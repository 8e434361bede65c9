import LocusData
import LocusFormat
import LocusTestSupport
import XCTest

final class CSVTests: DataTestCase {
    func parse(_ text: String, _ configure: (inout CSVImporter.Options) -> Void = { _ in }) throws -> (data: LabelledData, report: CSVImporter.Report) {
        var o = CSVImporter.Options()
        configure(&o)
        return try CSVImporter.parse(Array(text.utf8), file: "t.csv", options: o)
    }

    func testNoHeaderLabelLastUint8() throws {
        let (d, r) = try parse("0,1,2,1\n255,4,5,0\n")
        XCTAssertFalse(r.hadHeader)
        XCTAssertEqual(d.shape, [2, 3])
        XCTAssertEqual(d.bytes, [0, 1, 2, 255, 4, 5])
        XCTAssertEqual(d.labels, [1, 0])
        XCTAssertEqual(d.classes, ["0", "1"])
        XCTAssertEqual(d.splits, [:])
    }

    func testHeaderAutoDetection() throws {
        XCTAssertTrue(try parse("a,b,label\n1,2,0\n3,4,1\n").report.hadHeader)
        XCTAssertFalse(try parse("1,2,0\n3,4,1\n").report.hadHeader)
        // String labels alone do not make a header.
        let s = try parse("1,2,cat\n3,4,dog\n")
        XCTAssertFalse(s.report.hadHeader)
        XCTAssertEqual(s.data.classes, ["cat", "dog"])
        // Explicit modes win.
        XCTAssertEqual(try parse("1,2,0\n3,4,1\n") { $0.header = .yes }.data.sampleCount, 1)
        expectError("line 1, column 1", "'a' is not a number") { _ = try self.parse("a,b,label\n1,2,0\n") { $0.header = .no } }
        // One row only.
        XCTAssertEqual(try parse("1,2,0").data.sampleCount, 1)
    }

    func testLabelColumnByIndexAndName() throws {
        let text = "label,x,y\n2,10,20\n0,30,40\n1,50,60\n"
        let byIndex = try parse(text) { $0.labelColumn = .index(0) }
        XCTAssertEqual(byIndex.data.labels, [2, 0, 1])
        XCTAssertEqual(byIndex.data.bytes, [10, 20, 30, 40, 50, 60])
        XCTAssertEqual(byIndex.report.labelColumnName, "label")
        let byName = try parse(text) { $0.labelColumn = .name("label") }
        XCTAssertEqual(byName.data.labels, [2, 0, 1])
        let byY = try parse(text) { $0.labelColumn = CSVImporter.LabelColumn(parsing: "y") }
        XCTAssertEqual(byY.data.classes.count, 61)
        XCTAssertEqual(byY.data.bytes, [2, 10, 0, 30, 1, 50])
        let negative = try parse(text) { $0.labelColumn = .index(-2) }
        XCTAssertEqual(negative.data.labels, [10, 30, 50])
        expectError("t.csv", "no header column is named 'z'", "'label', 'x', 'y'") { _ = try self.parse(text) { $0.labelColumn = .name("z") } }
        expectError("label column 3 does not exist") { _ = try self.parse(text) { $0.labelColumn = .index(3) } }
        LocusTestSupport.expectError(RequestError.self, mentioning: ["names a column", "without a header"]) {
            _ = try self.parse(text) { $0.labelColumn = .name("label"); $0.header = .no }
        }
    }

    func testUint8VersusFloat32() throws {
        XCTAssertEqual(try parse("1.5,2,0\n3,4,1\n").data.floats, [1.5, 2, 3, 4])
        XCTAssertEqual(try parse("256,2,0\n").data.floats, [256, 2])
        XCTAssertEqual(try parse("-1,2,0\n").data.floats, [-1, 2])
        XCTAssertEqual(try parse("1.0, 2.00 ,0\n").data.bytes, [1, 2])       // whole numbers written as floats
        XCTAssertEqual(try parse("1e2,-0.125e1,0\n").data.floats, [100, -1.25])
        XCTAssertEqual(try parse("123456789012345678,0.1,0\n").data.floats, [Float(123456789012345678.0), 0.1])
    }

    func testRaggedRowsAndBadCells() throws {
        expectError("t.csv", "line 3", "has 2 fields, expected 3 like line 1") { _ = try self.parse("1,2,0\n3,4,1\n5,1\n") }
        expectError("t.csv", "line 2, column 2", "'x7' is not a number") { _ = try self.parse("1,2,0\n3,x7,1\n") }
        expectError("t.csv", "line 4, column 1", "is empty") { _ = try self.parse("a,b,c\n1,2,0\n\n,4,1\n") }   // blank line 3 is skipped
        expectError("t.csv", "'nan' is not a number") { _ = try self.parse("nan,2,0\n") }
        expectError("t.csv", "'inf' is not a number") { _ = try self.parse("inf,2,0\n") }
        expectError("t.csv", "outside the float32 range") { _ = try self.parse("1e39,2,0\n") }
        expectError("t.csv", "'0x10' is not a number") { _ = try self.parse("0x10,2,0\n") }
        expectError("t.csv", "is empty, expected CSV rows") { _ = try self.parse("") }
        expectError("t.csv", "is empty") { _ = try self.parse("\n\r\n\n") }
        expectError("t.csv", "header row but no data rows") { _ = try self.parse("a,b,c\n") }
        expectError("t.csv", "at least one feature column") { _ = try self.parse("1\n2\n") }
        expectError("t.csv", "line 2, column 3", "label 5000000 is too large for a class index") { _ = try self.parse("1,2,0\n3,4,5000000\n") }
        expectError("t.csv", "line 2, column 2", "never closed") { _ = try self.parse("1,2,0\n3,\"4,1\n") }
    }

    func testQuotesCRLFBomAndDelimiter() throws {
        let (d, r) = try parse("\u{FEFF}\"x, one\",\"y \"\"two\"\"\",label\r\n1,\"2\",\"a,b\"\r\n3,4,c\r\n")
        XCTAssertTrue(r.hadHeader)
        XCTAssertEqual(d.bytes, [1, 2, 3, 4])
        XCTAssertEqual(d.classes, ["a,b", "c"])
        let tabs = try parse("1\t2\t0\n3\t4\t1\n") { $0.delimiter = UInt8(ascii: "\t") }
        XCTAssertEqual(tabs.data.bytes, [1, 2, 3, 4])
    }

    func testClassNamesAndImageShape() throws {
        let names = try parse("1,2,1\n3,4,0\n") { $0.classNames = ["zero", "one", "two"] }
        XCTAssertEqual(names.data.classes, ["zero", "one", "two"])
        expectError("line 1, column 3", "label 5 needs at least 6 class names") { _ = try self.parse("1,2,5\n") { $0.classNames = ["a"] } }
        let strings = try parse("1,2,dog\n3,4,cat\n") { $0.classNames = ["dog", "cat", "bird"] }
        XCTAssertEqual(strings.data.labels, [0, 1])
        expectError("line 2, column 3", "'cow' is not one of the 2 given class names") { _ = try self.parse("1,2,dog\n3,4,cow\n") { $0.classNames = ["dog", "cat"] } }
        let img = try parse("1,2,3,4,5,6,0\n") { $0.imageShape = [1, 2, 3] }
        XCTAssertEqual(img.data.shape, [1, 1, 2, 3])
        let e = LocusTestSupport.expectError(RequestError.self, mentioning: ["1,2,2 holds 4 values per sample", "6 feature columns"]) {
            _ = try self.parse("1,2,3,4,5,6,0\n") { $0.imageShape = [1, 2, 2] }
        }
        XCTAssertEqual(e?.setting, "imageShape")
    }

    func testGzipCSVFile() throws {
        let p = try write("g.csv.gz", gzip(Array("5,6,1\n7,8,0\n".utf8)))
        let (d, _) = try CSVImporter.read(p)
        XCTAssertEqual(d.bytes, [5, 6, 7, 8])
    }

    /// The bundled scikit-learn digits: 1797 rows, 64 pixels 0…16 then the label, no header.
    func testBundledDigits() throws {
        let file = repositoryRoot + "/fixtures/data/digits.csv.gz"
        var o = DataImport.Options()
        o.csv.imageShape = [1, 8, 8]
        let r = try DataImport.load([file], options: o)
        let d = r.data
        XCTAssertEqual(r.format, .csv)
        XCTAssertEqual(d.shape, [1797, 1, 8, 8])
        XCTAssertEqual(d.classes, (0...9).map(String.init))
        XCTAssertEqual(Array(d.bytes.prefix(16)), [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0])
        XCTAssertEqual(Array(d.labels.prefix(5)), [0, 1, 2, 3, 4])
        XCTAssertEqual(d.bytes.max(), 16)
        XCTAssertEqual(d.labels.filter { $0 == 0 }.count, 178)
        // Default 0.8/0.1/0.1, stratified, covering.
        XCTAssertEqual(d.splits.values.map(\.count).reduce(0, +), 1797)
        XCTAssertEqual(Set(d.splits.values.joined()).count, 1797)
        XCTAssertEqual(d.splits["val"]!.filter { d.labels[$0] == 0 }.count, 18)   // round(178·0.9) − round(178·0.8) = 160 − 142
        let expected = NormalizationStats.compute(d, scale: 1.0 / 255.0, samples: d.splits["train"])
        XCTAssertEqual(d.normalization, expected)
        XCTAssertNoThrow(try DatasetArtifact.write(d, to: path("digits.h5")))
    }
}
