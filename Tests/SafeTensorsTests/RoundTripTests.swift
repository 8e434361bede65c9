import Foundation
import LocusTestSupport
import XCTest

@testable import SafeTensors

/// Writer → reader round trips.
final class RoundTripTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        directory = try makeTemporaryDirectory()
    }

    /// Writes each spec's bytes in one call, finishes, and returns the reader.
    private func writeAndOpen(
        _ specs: [SafeTensorsWriter.TensorSpec], data: [[UInt8]], metadata: [String: String]?,
        name: String = "model.safetensors"
    ) throws -> SafeTensorsReader {
        let path = directory + "/" + name
        var writer = try SafeTensorsWriter(path: path, tensors: specs, metadata: metadata)
        for bytes in data { try writer.write(bytes) }
        try writer.finish()
        return try SafeTensorsReader(path: path)
    }

    func testEveryDTypeWithScalarAndZeroSizedTensors() throws {
        var specs: [SafeTensorsWriter.TensorSpec] = []
        var data: [[UInt8]] = []
        let shapes: [[Int]] = [[3, 5], [], [0], [2, 0, 3], [7], [1, 1, 2, 3]]
        for (dtypeIndex, dtype) in SafeTensorsDType.allCases.enumerated() {
            for (shapeIndex, shape) in shapes.enumerated() {
                let spec = SafeTensorsWriter.TensorSpec(name: "\(dtype.rawValue).\(shapeIndex)", dtype: dtype, shape: shape)
                specs.append(spec)
                let count = shape.reduce(1, *) * dtype.byteSize
                data.append(randomBytes(count, seed: UInt64(dtypeIndex * 100 + shapeIndex)))
            }
        }
        let metadata = ["format": "pt", "quote\"back\\slash": "line\nbreak\ttab", "unicode é": "日本 😀", "": ""]
        let reader = try writeAndOpen(specs, data: data, metadata: metadata)

        XCTAssertEqual(reader.metadata, metadata)
        XCTAssertEqual(reader.entries.count, specs.count)
        XCTAssertEqual(reader.dataSectionOffset % 8, 0, "the data section must be 8-byte aligned")
        XCTAssertEqual(reader.dataSectionOffset, 8 + reader.headerByteCount)
        XCTAssertEqual(reader.dataSectionByteCount, data.reduce(0) { $0 + $1.count })
        for (spec, bytes) in zip(specs, data) {
            let entry = try XCTUnwrap(reader.entry(named: spec.name))
            XCTAssertEqual(entry.dtype, spec.dtype)
            XCTAssertEqual(entry.shape, spec.shape)
            XCTAssertEqual(entry.elementCount, spec.shape.reduce(1, *))
            XCTAssertEqual(entry.byteCount, bytes.count)
            XCTAssertEqual(try reader.readBytes(entry), bytes, spec.name)
        }
        // File order is the given order (zero-sized tensors tie on offsets; header order breaks ties).
        XCTAssertEqual(reader.entries.map(\.name), specs.map(\.name))
    }

    func testReaderEntriesEqualWriterLayout() throws {
        let path = directory + "/layout.safetensors"
        let specs = [
            SafeTensorsWriter.TensorSpec(name: "b", dtype: .F16, shape: [3]),
            SafeTensorsWriter.TensorSpec(name: "a", dtype: .I64, shape: [2]),
        ]
        var writer = try SafeTensorsWriter(path: path, tensors: specs, metadata: nil)
        try writer.write(randomBytes(6, seed: 1))
        try writer.write(randomBytes(16, seed: 2))
        try writer.finish(fsync: false)
        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(reader.entries, writer.entries)
        XCTAssertEqual(reader.headerByteCount, writer.headerByteCount)
        XCTAssertNil(reader.metadata)
        XCTAssertEqual(reader.entries.map(\.dataBegin), [0, 6])
        XCTAssertEqual(reader.fileByteCount, 8 + reader.headerByteCount + 22)
    }

    func testMultiChunkWritesIncludingLargeChunks() throws {
        let path = directory + "/chunks.safetensors"
        // Larger than the writer's 1 MiB buffer, so both the buffered and direct paths run.
        let big = randomBytes(3 * 1024 * 1024 + 5, seed: 42)
        let small = randomBytes(1000, seed: 43)
        let specs = [
            SafeTensorsWriter.TensorSpec(name: "small", dtype: .F32, shape: [250]),
            SafeTensorsWriter.TensorSpec(name: "empty", dtype: .F32, shape: [0]),
            SafeTensorsWriter.TensorSpec(name: "big", dtype: .U8, shape: [big.count]),
        ]
        var writer = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["chunks": "yes"])
        // Uneven chunk sizes, including empty writes.
        var offset = 0
        for size in [1, 0, 3, 7, 100, 889] {
            try small[offset..<offset + size].withUnsafeBytes { try writer.write($0) }
            offset += size
        }
        XCTAssertEqual(offset, small.count)
        XCTAssertEqual(writer.currentTensor?.name, "big", "the zero-sized tensor needs no write")
        offset = 0
        for size in [10, 1_500_000, 300_000, 2 * 1024 * 1024] where offset < big.count {
            let end = min(offset + size, big.count)
            try big[offset..<end].withUnsafeBytes { try writer.write($0) }
            offset = end
        }
        try big[offset...].withUnsafeBytes { try writer.write($0) }
        XCTAssertNil(writer.currentTensor)
        try writer.finish()

        let reader = try SafeTensorsReader(path: path)
        XCTAssertEqual(try reader.readBytes(named: "small"), small)
        XCTAssertEqual(try reader.readBytes(named: "empty"), [])
        XCTAssertEqual(try reader.readBytes(named: "big"), big)
        XCTAssertEqual(reader.metadata, ["chunks": "yes"])
    }

    func testNoTensors() throws {
        let reader = try writeAndOpen([], data: [], metadata: nil)
        XCTAssertEqual(reader.entries, [])
        XCTAssertEqual(reader.headerByteCount, 8)  // "{}" padded to 8
        let withMetadata = try writeAndOpen([], data: [], metadata: ["k": "v"], name: "meta.safetensors")
        XCTAssertEqual(withMetadata.metadata, ["k": "v"])
        let emptyMetadata = try writeAndOpen([], data: [], metadata: [:], name: "empty-meta.safetensors")
        XCTAssertEqual(emptyMetadata.metadata, [:])
    }

    func testUnusualNamesRoundTrip() throws {
        let names = ["", "a\"b", "back\\slash", "new\nline", "ctl\u{1}\u{1F}", "é vs e\u{301}x", "😀", "/path/like.weight", "__metadata"]
        let specs = names.map { SafeTensorsWriter.TensorSpec(name: $0, dtype: .U8, shape: [1]) }
        let data = names.indices.map { [UInt8($0)] }
        let reader = try writeAndOpen(specs, data: data, metadata: nil)
        XCTAssertEqual(reader.entries.map(\.name), names)
        for (name, bytes) in zip(names, data) {
            XCTAssertEqual(try reader.readBytes(named: name), bytes, name.debugDescription)
        }
    }

    func testConcurrentReads() throws {
        let specs = (0..<16).map { SafeTensorsWriter.TensorSpec(name: "t\($0)", dtype: .F32, shape: [1000]) }
        let data = (0..<16).map { randomBytes(4000, seed: UInt64($0)) }
        let reader = try writeAndOpen(specs, data: data, metadata: nil)
        let results = ResultsBox(count: specs.count)
        DispatchQueue.concurrentPerform(iterations: specs.count) { index in
            let bytes = try? reader.readBytes(named: "t\(index)")
            results.set(index, bytes)
        }
        for index in 0..<specs.count {
            XCTAssertEqual(results.get(index), data[index])
        }
    }
}

/// Lock-protected result slots for the concurrency test.
private final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [[UInt8]?]

    init(count: Int) { values = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ value: [UInt8]?) {
        lock.lock()
        values[index] = value
        lock.unlock()
    }

    func get(_ index: Int) -> [UInt8]? {
        lock.lock()
        defer { lock.unlock() }
        return values[index]
    }
}
