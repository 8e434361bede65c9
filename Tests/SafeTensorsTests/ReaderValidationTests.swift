import Foundation
import LocusTestSupport
import XCTest

@testable import SafeTensors

/// Every rejection the reader makes, on hand-crafted files.
final class ReaderValidationTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory()
    }

    private var path: String { directory + "/model.safetensors" }

    /// Writes `bytes` and expects opening it to fail.
    private func openError(
        _ bytes: [UInt8], maxHeaderBytes: Int = SafeTensorsReader.defaultMaxHeaderBytes,
        file: StaticString = #filePath, line: UInt = #line
    ) throws -> SafeTensorsError? {
        try writeFile(bytes, to: path)
        return expectSafeTensorsError({ _ = try SafeTensorsReader(path: path, maxHeaderBytes: maxHeaderBytes) }, file: file, line: line)
    }

    private func openError(
        header: String, data: [UInt8] = [], file: StaticString = #filePath, line: UInt = #line
    ) throws -> SafeTensorsError? {
        try openError(fileImage(header: header, data: data), file: file, line: line)
    }

    /// `{"a": <entry>}` with the given raw entry JSON and data size.
    private func entryError(
        _ entry: String, dataCount: Int = 0, file: StaticString = #filePath, line: UInt = #line
    ) throws -> SafeTensorsError? {
        try openError(header: "{\"a\":\(entry)}", data: [UInt8](repeating: 0, count: dataCount), file: file, line: line)
    }

    // MARK: Length prefix

    func testFileShorterThanLengthPrefix() throws {
        assertError(try openError([]), scope: .header, contains: ["the file is 0 bytes, shorter than the 8-byte header length prefix"])
        assertError(try openError([1, 2, 3, 4, 5, 6, 7]), scope: .header, contains: ["the file is 7 bytes"])
    }

    func testZeroHeaderLength() throws {
        assertError(try openError(fileImage(header: "", data: [1, 2])), scope: .header, contains: ["header length is 0"])
    }

    func testHeaderLongerThanLimit() throws {
        let error = try openError(fileImage(header: "{}      "), maxHeaderBytes: 4)
        assertError(error, scope: .header, contains: ["header length 8 exceeds the limit of 4 bytes"])
        // A corrupt prefix claiming ~2^64 bytes is caught by the limit before any allocation.
        let huge = try openError(fileImage(header: "{}", declaredLength: UInt64.max))
        assertError(huge, scope: .header, contains: ["header length 18446744073709551615 exceeds the limit of 100000000 bytes"])
    }

    func testHeaderLongerThanFile() throws {
        let error = try openError(fileImage(header: "{}", declaredLength: 100))
        assertError(error, scope: .header, contains: ["header length 100 exceeds the 2 bytes that follow the length prefix (file is 10 bytes)"])
    }

    // MARK: JSON level

    func testHeaderNotUTF8() throws {
        let header: [UInt8] = Array("{\"a".utf8) + [0xFF] + Array("\":1}".utf8)
        let error = try openError(fileImage(header: header))
        assertError(error, scope: .header, contains: ["the header is not valid UTF-8", "0xFF at byte 3"])
    }

    func testHeaderNotAnObject() throws {
        assertError(try openError(header: "[]"), scope: .header, contains: ["the header must be a JSON object, found an array"])
        assertError(try openError(header: "\"x\""), scope: .header, contains: ["found a string"])
        assertError(try openError(header: "12  "), scope: .header, contains: ["found the number 12"])
        assertError(try openError(header: "null"), scope: .header, contains: ["found null"])
    }

    func testTrailingGarbage() throws {
        assertError(try openError(header: "{} x"), scope: .header, contains: ["trailing garbage", "'x'", "at byte 3"])
        assertError(try openError(header: "{}{}"), scope: .header, contains: ["trailing garbage"])
        // Zero-byte padding is not the format's space padding.
        assertError(try openError(header: "{}\0\0\0\0\0\0"), scope: .header, contains: ["trailing garbage", "byte 0x00"])
    }

    func testInvalidJSON() throws {
        assertError(try openError(header: "{\"a\":}"), scope: .header, contains: ["invalid JSON", "at byte 5"])
        assertError(try openError(header: "{\"a\":{\"dtype\":\"F32\""), scope: .header, contains: ["invalid JSON"])
    }

    func testDepthLimit() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        let error = try openError(header: "{\"__metadata__\":{\"k\":\(deep)}}")
        assertError(error, scope: .header, contains: ["invalid JSON", "nested deeper than 64 levels"])
    }

    // MARK: Duplicates

    func testDuplicateTensorName() throws {
        let entry = entryJSON("F32", [1], 0, 4)
        let error = try openError(header: "{\"w\":\(entry),\"w\":\(entry)}", data: [0, 0, 0, 0])
        assertError(error, scope: .tensor, object: "w", contains: ["duplicate tensor name: the header lists it twice"])
        XCTAssertEqual(
            error?.description,
            "\(path): tensor 'w': duplicate tensor name: the header lists it twice (second occurrence at header byte \(6 + entry.utf8.count))"
        )
    }

    func testDuplicateKeyInEntry() throws {
        let error = try entryError(#"{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, dataCount: 4)
        assertError(error, scope: .tensor, object: "a", contains: ["duplicate key 'dtype' in the tensor's entry"])
    }

    func testDuplicateMetadataKeyAndSection() throws {
        let error = try openError(header: #"{"__metadata__":{"k":"1","k":"2"}}"#)
        assertError(error, scope: .header, contains: ["__metadata__ has duplicate key 'k'"])
        let twice = try openError(header: #"{"__metadata__":{},"__metadata__":{}}"#)
        assertError(twice, scope: .header, contains: ["__metadata__ appears twice"])
    }

    // MARK: Entry fields

    func testEntryNotAnObject() throws {
        assertError(try entryError("[1]"), scope: .tensor, object: "a", contains: ["the entry must be an object with keys dtype, shape and data_offsets, found an array"])
    }

    func testMissingAndUnknownKeys() throws {
        assertError(try entryError(#"{"shape":[],"data_offsets":[0,4]}"#), scope: .tensor, object: "a", contains: ["no 'dtype'"])
        assertError(try entryError(#"{"dtype":"F32","data_offsets":[0,4]}"#), scope: .tensor, object: "a", contains: ["no 'shape'"])
        assertError(try entryError(#"{"dtype":"F32","shape":[]}"#), scope: .tensor, object: "a", contains: ["no 'data_offsets'"])
        assertError(
            try entryError(#"{"dtype":"F32","shape":[],"data_offsets":[0,4],"extra":1}"#, dataCount: 4),
            scope: .tensor, object: "a", contains: ["unknown key 'extra' in the entry (expected only dtype, shape, data_offsets)"])
    }

    func testDTypeErrors() throws {
        assertError(try entryError(#"{"dtype":5,"shape":[],"data_offsets":[0,4]}"#), scope: .tensor, object: "a", contains: ["dtype must be a string, found the number 5"])
        assertError(try entryError(#"{"dtype":"F128","shape":[],"data_offsets":[0,4]}"#), scope: .tensor, object: "a", contains: ["unknown dtype 'F128' (supported: F64, F32"])
        // Names are case-sensitive, as in the reference.
        assertError(try entryError(#"{"dtype":"f32","shape":[],"data_offsets":[0,4]}"#), scope: .tensor, object: "a", contains: ["unknown dtype 'f32'"])
    }

    func testShapeErrors() throws {
        func shapeError(_ shape: String) throws -> SafeTensorsError? {
            try entryError("{\"dtype\":\"U8\",\"shape\":\(shape),\"data_offsets\":[0,0]}")
        }
        assertError(try shapeError("4"), scope: .tensor, object: "a", contains: ["shape must be an array of non-negative integers, found the number 4"])
        assertError(try shapeError("[2,-1]"), scope: .tensor, object: "a", contains: ["shape[1] must be a non-negative integer, found negative -1"])
        assertError(try shapeError("[1.5]"), scope: .tensor, object: "a", contains: ["shape[0] must be a non-negative integer, found non-integral 1.5"])
        assertError(try shapeError("[15e-1]"), scope: .tensor, object: "a", contains: ["non-integral 15e-1"])
        assertError(try shapeError("[1e19]"), scope: .tensor, object: "a", contains: ["shape[0] 1e19 is too large"])
        assertError(try shapeError("[9223372036854775808]"), scope: .tensor, object: "a", contains: ["is too large"])
        assertError(try shapeError("[\"2\"]"), scope: .tensor, object: "a", contains: ["shape[0] must be a non-negative integer, found a string"])
        assertError(try shapeError("[null]"), scope: .tensor, object: "a", contains: ["found null"])
    }

    func testIntegralNumbersInOtherSpellingsAreAccepted() throws {
        try writeFile(
            fileImage(header: #"{"a":{"dtype":"F32","shape":[2e0, 1.0, -0],"data_offsets":[0, 0.0e5]}}"#), to: path)
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(reader.entries.first?.shape, [2, 1, 0])
    }

    func testDataOffsetsErrors() throws {
        func offsetsError(_ offsets: String, dataCount: Int = 4) throws -> SafeTensorsError? {
            try entryError("{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":\(offsets)}", dataCount: dataCount)
        }
        assertError(try offsetsError("{}"), scope: .tensor, object: "a", contains: ["data_offsets must be an array [begin, end], found an object"])
        assertError(try offsetsError("[0]"), scope: .tensor, object: "a", contains: ["data_offsets must have exactly 2 elements [begin, end], found 1"])
        assertError(try offsetsError("[0,2,4]"), scope: .tensor, object: "a", contains: ["found 3"])
        assertError(try offsetsError("[-4,0]"), scope: .tensor, object: "a", contains: ["data_offsets[0] must be a non-negative integer, found negative -4"])
        assertError(try offsetsError("[0,4.5]"), scope: .tensor, object: "a", contains: ["data_offsets[1] must be a non-negative integer, found non-integral 4.5"])
        assertError(try offsetsError("[4,0]"), scope: .tensor, object: "a", contains: ["data_offsets begin 4 is greater than end 0"])
        assertError(try offsetsError("[0,\"4\"]"), scope: .tensor, object: "a", contains: ["data_offsets[1] must be a non-negative integer, found a string"])
    }

    func testMetadataErrors() throws {
        assertError(try openError(header: #"{"__metadata__":[]}"#), scope: .header, contains: ["__metadata__ must be an object of string to string, found an array"])
        assertError(try openError(header: #"{"__metadata__":null}"#), scope: .header, contains: ["found null"])
        assertError(try openError(header: #"{"__metadata__":{"k":1}}"#), scope: .header, contains: ["__metadata__ value for key 'k' must be a string, found the number 1"])
        assertError(try openError(header: #"{"__metadata__":{"k":{"x":"y"}}}"#), scope: .header, contains: ["found an object"])
    }

    // MARK: Sizes and layout

    func testByteCountMismatch() throws {
        assertError(
            try entryError(entryJSON("F32", [2], 0, 4), dataCount: 4), scope: .tensor, object: "a",
            contains: ["data_offsets [0, 4) span 4 bytes but shape [2] of F32 needs 8 bytes"])
        assertError(
            try entryError(entryJSON("BF16", [], 0, 4), dataCount: 4), scope: .tensor, object: "a",
            contains: ["span 4 bytes but shape [] of BF16 needs 2 bytes"])
    }

    func testSizeOverflow() throws {
        assertError(
            try entryError(entryJSON("U8", [4_294_967_296, 4_294_967_296], 0, 0)), scope: .tensor, object: "a",
            contains: ["shape [4294967296, 4294967296] has more elements than fit in a 64-bit integer"])
        assertError(
            try entryError(entryJSON("F64", [2_305_843_009_213_693_952], 0, 0)), scope: .tensor, object: "a",
            contains: ["shape [2305843009213693952] of F64 is more bytes than fit in a 64-bit integer"])
    }

    func testEndBeyondDataSection() throws {
        let error = try entryError(entryJSON("F32", [100], 0, 400), dataCount: 392)
        assertError(error, scope: .tensor, object: "a", contains: ["data_offsets end 400 exceeds the data section (392 bytes)"])
        XCTAssertEqual(error?.description, "\(path): tensor 'a': data_offsets end 400 exceeds the data section (392 bytes)")
    }

    func testGapAtStart() throws {
        let error = try entryError(entryJSON("F32", [1], 4, 8), dataCount: 8)
        assertError(error, scope: .tensor, object: "a", contains: ["data_offsets [4, 8) leave a gap of 4 bytes at the start of the data section"])
    }

    func testHoleBetweenTensors() throws {
        let header = "{\"b\":\(entryJSON("F32", [1], 8, 12)),\"a\":\(entryJSON("F32", [1], 0, 4))}"
        let error = try openError(header: header, data: [UInt8](repeating: 0, count: 12))
        assertError(error, scope: .tensor, object: "b", contains: ["data_offsets [8, 12) leave a gap of 4 bytes after tensor 'a' [0, 4)"])
    }

    func testOverlap() throws {
        let header = "{\"a\":\(entryJSON("F32", [2], 0, 8)),\"b\":\(entryJSON("F32", [2], 4, 12))}"
        let error = try openError(header: header, data: [UInt8](repeating: 0, count: 12))
        XCTAssertEqual(error?.description, "\(path): tensor 'b': data_offsets [4, 12) overlap tensor 'a' [0, 8)")

        // Identical ranges overlap too, as does a zero-sized tensor inside another one.
        let same = "{\"a\":\(entryJSON("F32", [2], 0, 8)),\"b\":\(entryJSON("F32", [2], 0, 8))}"
        assertError(try openError(header: same, data: [UInt8](repeating: 0, count: 8)), scope: .tensor, object: "b", contains: ["overlap tensor 'a' [0, 8)"])
        let inside = "{\"a\":\(entryJSON("F32", [2], 0, 8)),\"z\":\(entryJSON("F32", [0], 4, 4))}"
        assertError(try openError(header: inside, data: [UInt8](repeating: 0, count: 8)), scope: .tensor, object: "z", contains: ["data_offsets [4, 4) overlap tensor 'a' [0, 8)"])
    }

    func testTrailingDataBytes() throws {
        let error = try entryError(entryJSON("F32", [1], 0, 4), dataCount: 8)
        assertError(error, scope: .tensor, object: "a", contains: ["ends at 4 but the data section is 8 bytes: 4 trailing bytes belong to no tensor"])
    }

    func testNoTensorsButData() throws {
        assertError(
            try openError(header: "{}", data: [1, 2, 3, 4]), scope: .header,
            contains: ["the header declares no tensors but the data section has 4 bytes"])
    }

    // MARK: Valid but unusual

    func testEmptyAndMetadataOnlyFilesAreValid() throws {
        try writeFile(fileImage(header: "{}"), to: path)
        let empty = try SafeTensorsReader(path: path)
        XCTAssertEqual(empty.entries, [])
        XCTAssertNil(empty.metadata)
        XCTAssertEqual(empty.dataSectionOffset, 10)
        XCTAssertEqual(empty.dataSectionByteCount, 0)

        try writeFile(fileImage(header: #"{"__metadata__":{}}"#), to: path)
        XCTAssertEqual(try SafeTensorsReader(path: path).metadata, [:])
    }

    func testPrettyPrintedHeaderWithEscapedNames() throws {
        let header = """
            {
              "\\u00e9t\\u00e9" : {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
              "__metadata__": {"a\\"b": "line\\nbreak"}
            }\("   ")
            """
        try writeFile(fileImage(header: header, data: [7, 9]), to: path)
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(reader.entries.map(\.name), ["été"])
        XCTAssertEqual(reader.metadata, ["a\"b": "line\nbreak"])
        XCTAssertEqual(try reader.readBytes(named: "été"), [7, 9])
    }

    func testZeroSizedTensorsAnywhereAndOrder() throws {
        // Header order differs from file order; zero-sized tensors at the start, middle and end.
        let header = "{"
            + [
                "\"end\":\(entryJSON("F32", [0, 3], 6, 6))",
                "\"b\":\(entryJSON("U8", [2], 4, 6))",
                "\"start\":\(entryJSON("F64", [0], 0, 0))",
                "\"a\":\(entryJSON("I16", [2], 0, 4))",
                "\"mid\":\(entryJSON("BOOL", [5, 0], 4, 4))",
                "\"start2\":\(entryJSON("U8", [0], 0, 0))",
            ].joined(separator: ",") + "}"
        try writeFile(fileImage(header: header, data: [1, 2, 3, 4, 5, 6]), to: path)
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(reader.entries.map(\.name), ["start", "start2", "a", "mid", "b", "end"])
        XCTAssertEqual(try reader.readBytes(named: "mid"), [])
        XCTAssertEqual(try reader.readBytes(named: "b"), [5, 6])
        XCTAssertEqual(reader.entry(named: "end")?.elementCount, 0)
    }

    // MARK: File system and reading

    func testMissingFileAndDirectory() {
        let missing = expectSafeTensorsError({ _ = try SafeTensorsReader(path: directory + "/nope.safetensors") })
        assertError(missing, scope: .file, contains: ["cannot open for reading: No such file or directory"])
        XCTAssertEqual(missing?.systemErrorCode, ENOENT)
        XCTAssertEqual(missing?.description.hasPrefix(directory + "/nope.safetensors: cannot open"), true)

        let notRegular = expectSafeTensorsError({ _ = try SafeTensorsReader(path: directory) })
        assertError(notRegular, scope: .file, contains: ["not a regular file"])
    }

    func testReadRejectsWrongBufferAndForeignEntries() throws {
        try writeFile(fileImage(header: "{\"a\":\(entryJSON("U8", [4], 0, 4))}", data: [1, 2, 3, 4]), to: path)
        let reader = try SafeTensorsReader(path: path)
        let entry = try XCTUnwrap(reader.entry(named: "a"))
        var small = [UInt8](repeating: 0, count: 3)
        let sizeError = expectSafeTensorsError { try small.withUnsafeMutableBytes { try reader.read(entry, into: $0) } }
        assertError(sizeError, scope: .tensor, object: "a", contains: ["buffer is 3 bytes but the tensor needs 4 bytes"])

        let otherPath = directory + "/other.safetensors"
        try writeFile(fileImage(header: "{\"a\":\(entryJSON("U8", [8], 0, 8))}", data: [UInt8](repeating: 0, count: 8)), to: otherPath)
        let foreign = try XCTUnwrap(try SafeTensorsReader(path: otherPath).entry(named: "a"))
        assertError(
            expectSafeTensorsError { _ = try reader.readBytes(foreign) }, scope: .tensor, object: "a",
            contains: ["does not belong to this file"])
        assertError(
            expectSafeTensorsError { _ = try reader.readBytes(named: "zzz") }, scope: .tensor, object: "zzz",
            contains: ["no tensor of this name"])
    }

    func testReadFailsIfFileShrank() throws {
        let header = "{\"a\":\(entryJSON("U8", [4], 0, 4)),\"b\":\(entryJSON("U8", [4], 4, 8))}"
        try writeFile(fileImage(header: header, data: [1, 2, 3, 4, 5, 6, 7, 8]), to: path)
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(truncate(path, off_t(reader.dataSectionOffset + 6)), 0)
        XCTAssertEqual(try reader.readBytes(named: "a"), [1, 2, 3, 4])
        let error = expectSafeTensorsError { _ = try reader.readBytes(named: "b") }
        assertError(error, scope: .tensor, object: "b", contains: ["file ended after 2 of 4 bytes", "has since shrunk"])
    }

    func testDescriptionEscapesHostileNames() throws {
        let header = "{\"evil\\nname'\":\(entryJSON("U8", [1], 0, 1))}"
        let error = try openError(header: header, data: [1, 2])
        XCTAssertEqual(error?.object, "evil\nname'")
        XCTAssertEqual(error?.description.contains("tensor 'evil\\nname\\''"), true, "\(String(describing: error))")
        XCTAssertEqual(error?.description.contains("\n"), false)
    }
}
