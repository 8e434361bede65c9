import Foundation
import LocusTestSupport
import XCTest

@testable import SafeTensors

final class WriterTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory()
    }

    private var path: String { directory + "/out.safetensors" }

    private func spec(_ name: String, _ dtype: SafeTensorsDType, _ shape: [Int]) -> SafeTensorsWriter.TensorSpec {
        SafeTensorsWriter.TensorSpec(name: name, dtype: dtype, shape: shape)
    }

    // MARK: Header bytes

    func testExactHeaderBytes() throws {
        let encoded = try SafeTensorsWriter.encodeHeader(
            path: path, tensors: [spec("a", .F32, [2]), spec("b", .U8, [])], metadata: ["format": "pt", "a": "1"])
        let json = #"{"__metadata__":{"a":"1","format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[],"data_offsets":[8,9]}}"#
        let padded = json + String(repeating: " ", count: (8 - json.utf8.count % 8) % 8)
        XCTAssertEqual(encoded.headerByteCount, padded.utf8.count)
        XCTAssertEqual(encoded.headerByteCount % 8, 0)
        XCTAssertEqual(encoded.prefixAndHeader, fileImage(header: padded))
        XCTAssertEqual(encoded.entries.map(\.dataBegin), [0, 8])
        XCTAssertEqual(encoded.entries.map(\.dataEnd), [8, 9])
    }

    func testNoMetadataKeyWhenNil() throws {
        let encoded = try SafeTensorsWriter.encodeHeader(path: path, tensors: [spec("x", .BF16, [1, 2])], metadata: nil)
        let text = String(decoding: encoded.prefixAndHeader.dropFirst(8), as: UTF8.self)
        XCTAssertEqual(text.trimmingCharacters(in: .whitespaces), #"{"x":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]}}"#)
    }

    func testNamesAreEscapedInTheHeader() throws {
        let encoded = try SafeTensorsWriter.encodeHeader(
            path: path, tensors: [spec("q\"b\\n\n\u{1}é", .U8, [0])], metadata: nil)
        let text = String(decoding: encoded.prefixAndHeader.dropFirst(8), as: UTF8.self)
        XCTAssertTrue(text.hasPrefix(#"{"q\"b\\n\n\u0001é":"#), text)
    }

    func testHeaderSizeLimit() {
        let specs = (0..<10).map { spec("tensor\($0)", .F32, [1]) }
        let error = expectSafeTensorsError {
            _ = try SafeTensorsWriter.encodeHeader(path: self.path, tensors: specs, metadata: nil, maxHeaderBytes: 64)
        }
        assertError(error, scope: .header, contains: ["over the 64-byte limit readers accept"])
    }

    // MARK: Spec validation (nothing is created on failure)

    private func initError(_ specs: [SafeTensorsWriter.TensorSpec], metadata: [String: String]? = nil) -> SafeTensorsError? {
        let error = expectSafeTensorsError { _ = try SafeTensorsWriter(path: self.path, tensors: specs, metadata: metadata) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path), "a rejected writer must not create the file")
        return error
    }

    func testDuplicateNames() {
        assertError(
            initError([spec("a", .F32, [1]), spec("b", .F32, [1]), spec("a", .U8, [])]), scope: .tensor, object: "a",
            contains: ["duplicate tensor name (tensors 0 and 2 of the list)"])
    }

    func testReservedName() {
        assertError(initError([spec("__metadata__", .U8, [1])]), scope: .tensor, object: "__metadata__", contains: ["reserved"])
    }

    func testNegativeDimension() {
        assertError(initError([spec("a", .F32, [2, -3])]), scope: .tensor, object: "a", contains: ["shape[1] is negative (-3) in shape [2, -3]"])
    }

    func testOverflow() {
        assertError(
            initError([spec("a", .U8, [1 << 32, 1 << 32])]), scope: .tensor, object: "a",
            contains: ["more elements than fit in a 64-bit integer"])
        assertError(
            initError([spec("a", .F64, [1 << 61])]), scope: .tensor, object: "a",
            contains: ["of F64 is more bytes than fit in a 64-bit integer"])
        assertError(
            initError([spec("a", .U8, [1 << 62]), spec("b", .U8, [1 << 62])]), scope: .tensor, object: "b",
            contains: ["the tensors up to and including this one total more bytes than fit"])
    }

    func testCannotCreate() {
        let error = expectSafeTensorsError {
            _ = try SafeTensorsWriter(path: self.directory + "/missing/dir/x.safetensors", tensors: [], metadata: nil)
        }
        assertError(error, scope: .file, contains: ["cannot create for writing: No such file or directory"])
        XCTAssertEqual(error?.systemErrorCode, ENOENT)
    }

    // MARK: Streaming rules

    func testWriteBeyondTensorIsRejectedAndRecoverable() throws {
        var writer = try SafeTensorsWriter(path: path, tensors: [spec("a", .F32, [2]), spec("b", .U8, [2])], metadata: nil)
        try writer.write([1, 2, 3])
        // 6 bytes would span into "b": rejected, and nothing is written.
        let error = expectSafeTensorsError { try writer.write([4, 5, 6, 7, 8, 9]) }
        assertError(error, scope: .tensor, object: "a", contains: ["write of 6 bytes exceeds the 5 bytes the tensor still needs (8 in all)"])
        try writer.write([4, 5, 6, 7, 8])
        XCTAssertEqual(writer.currentTensor?.name, "b")
        try writer.write([9, 10])
        let extra = expectSafeTensorsError { try writer.write([11]) }
        assertError(extra, scope: .file, contains: ["write of 1 bytes after all 2 tensors are complete"])
        try writer.write([])  // Empty writes are always fine.
        try writer.finish()
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(try reader.readBytes(named: "a"), [1, 2, 3, 4, 5, 6, 7, 8])
        XCTAssertEqual(try reader.readBytes(named: "b"), [9, 10])
    }

    func testFinishWithIncompleteTensorThenComplete() throws {
        var writer = try SafeTensorsWriter(
            path: path, tensors: [spec("a", .U16, [2]), spec("b", .U8, [1]), spec("c", .U8, [1])], metadata: nil)
        try writer.write([1, 2, 3])
        let error = expectSafeTensorsError { try writer.finish() }
        assertError(error, scope: .tensor, object: "a", contains: ["incomplete: 3 of 4 bytes written, and 2 later tensor(s) not started"])
        try writer.write([4])
        try writer.write([5])
        assertError(expectSafeTensorsError { try writer.finish() }, scope: .tensor, object: "c", contains: ["incomplete: 0 of 1 bytes written"])
        try writer.write([6])
        try writer.finish(fsync: false)

        assertError(expectSafeTensorsError { try writer.finish() }, scope: .file, contains: ["already finished"])
        assertError(expectSafeTensorsError { try writer.write([1]) }, scope: .file, contains: ["already finished"])
        XCTAssertEqual(try SafeTensorsReader(path: path).readBytes(named: "c"), [6])
    }

    func testLeadingZeroSizedTensorsAreSkipped() throws {
        var writer = try SafeTensorsWriter(
            path: path, tensors: [spec("z1", .F32, [0]), spec("z2", .I8, [3, 0]), spec("x", .I8, [1]), spec("z3", .F64, [0])],
            metadata: nil)
        XCTAssertEqual(writer.currentTensor?.name, "x")
        try writer.write([42])
        XCTAssertNil(writer.currentTensor)
        try writer.finish()
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(reader.entries.map(\.name), ["z1", "z2", "x", "z3"])
    }

    func testTruncatesExistingFile() throws {
        try writeFile([UInt8](repeating: 0xAB, count: 10_000), to: path)
        var writer = try SafeTensorsWriter(path: path, tensors: [spec("a", .U8, [3])], metadata: nil)
        try writer.write([1, 2, 3])
        try writer.finish()
        let bytes = try readFile(path)
        XCTAssertEqual(bytes.count, 8 + writer.headerByteCount + 3)
        XCTAssertEqual(Array(bytes.suffix(3)), [1, 2, 3])
    }

    func testCopiesShareOneStream() throws {
        var writer = try SafeTensorsWriter(path: path, tensors: [spec("a", .U8, [2])], metadata: nil)
        var copy = writer
        try writer.write([1])
        try copy.write([2])
        XCTAssertNil(writer.currentTensor)
        try copy.finish()
        assertError(expectSafeTensorsError { try writer.finish() }, scope: .file, contains: ["already finished"])
        XCTAssertEqual(try SafeTensorsReader(path: path).readBytes(named: "a"), [1, 2])
    }

    func testAbandonedWriterDoesNotLeakOrCrash() throws {
        do {
            var writer = try SafeTensorsWriter(path: path, tensors: [spec("a", .U8, [2])], metadata: nil)
            try writer.write([1])
        }
        // The partial file exists (header may not even be flushed) and must be rejected by the reader.
        let error = expectSafeTensorsError { _ = try SafeTensorsReader(path: self.path) }
        XCTAssertNotNil(error)
    }
}
