import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

final class AtomicityTests: LocusTestCase {

    private let original = Array("the previous contents of the target, which must survive\n".utf8)

    /// Runs a write that must fail: afterwards the directory holds exactly what it held before
    /// (no temporary file, no new target) and an existing target is byte-identical.
    private func assertFailedWriteLeavesNothing(existingTarget: Bool, file: StaticString = #filePath, line: UInt = #line,
                                                _ write: (String) throws -> Void) throws {
        let target = path("out.locus")
        if existingTarget { try writeBytes(original, to: target) } else { try? FileManager.default.removeItem(atPath: target) }
        let before = try listing()
        let e = expectLocusError(mentioning: target, { try write(target) }, sourceFile: file, line: line)
        XCTAssertNotNil(e, file: file, line: line)
        let after = try listing()
        XCTAssertEqual(after, before, "left behind: \(after)", file: file, line: line)
        if existingTarget { XCTAssertEqual(try readBytes(target), original, file: file, line: line) }
        else { XCTAssertFalse(FileManager.default.fileExists(atPath: target), file: file, line: line) }
    }

    /// Runs `failing` (which must throw) while `writer` is still alive, and requires that the
    /// temporary file is already gone when the error arrives — not only once the writer is released.
    private func whileAlive<W>(_ writer: W, file: StaticString = #filePath, line: UInt = #line,
                               _ failing: (W) throws -> Void) throws {
        try withExtendedLifetime(writer) {
            do { try failing(writer) } catch {
                let temporaries = try listing().filter { $0.contains(".locus-tmp-") }
                XCTAssertEqual(temporaries, [], "temporary file still present after: \(error)", file: file, line: line)
                throw error
            }
        }
    }

    func testDuplicateCheckpointTensor() throws {
        for existing in [false, true] {
            try assertFailedWriteLeavesNothing(existingTarget: existing) { target in
                let w = try CheckpointWriter(path: target)
                try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try w.add(name: "a", dtype: .float32, shape: [1], bytes: $0) }
                // The temporary file exists while the write is in progress…
                XCTAssertEqual(try self.listing().filter { $0.contains("locus-tmp") }.count, 1)
                try whileAlive(w) { w in
                    try [UInt8](repeating: 0, count: 4).withUnsafeBytes { try w.add(name: "a", dtype: .float32, shape: [1], bytes: $0) }
                }
            }
        }
    }

    func testBoolByteTwo() throws {
        try assertFailedWriteLeavesNothing(existingTarget: true) { target in
            let w = try CheckpointWriter(path: target)
            try whileAlive(w) { w in
                try [UInt8]([1, 0, 2]).withUnsafeBytes { try w.add(name: "mask", dtype: .bool, shape: [3], bytes: $0) }
            }
        }
    }

    func testNaNInTaskVector() throws {
        for existing in [false, true] {
            try assertFailedWriteLeavesNothing(existingTarget: existing) { target in
                let w = try TaskVectorWriter(path: target, baseFingerprint: someFingerprint)
                try w.add(name: "ok", shape: [2], dense: [1, 0])
                try whileAlive(w) { w in try w.add(name: "bad", shape: [3], dense: [1, .nan, 0]) }
            }
        }
    }

    func testNegativeScoreAndBadMask() throws {
        try assertFailedWriteLeavesNothing(existingTarget: true) { target in
            let w = try ScoresWriter(path: target, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
            try whileAlive(w) { w in try w.add(name: "s", shape: [1], values: [-1]) }
        }
        try assertFailedWriteLeavesNothing(existingTarget: true) { target in
            let w = try MaskWriter(path: target, baseFingerprint: someFingerprint)
            try whileAlive(w) { w in try w.add(name: "m", shape: [9], packed: [0xFF]) }
        }
        try assertFailedWriteLeavesNothing(existingTarget: true) { target in
            let bad = LabelledData(inputs: .uint8([1, 2]), shape: [2, 1], labels: [0, 5], classes: ["a"], splits: [:])
            try DatasetArtifact.write(bad, to: target)
        }
    }

    func testEmptyAndInvalidNames() throws {
        try assertFailedWriteLeavesNothing(existingTarget: false) { target in
            let w = try CheckpointWriter(path: target)
            try whileAlive(w) { w in try [UInt8]([1]).withUnsafeBytes { try w.add(name: "", dtype: .uint8, shape: [1], bytes: $0) } }
        }
        try assertFailedWriteLeavesNothing(existingTarget: false) { target in
            let w = try MaskWriter(path: target, baseFingerprint: someFingerprint)
            try whileAlive(w) { w in try w.add(name: "", shape: [1], bits: [true]) }
        }
    }

    func testNamesWithNewlineOrNULAreRefusedByEveryWriter() throws {
        for name in ["a\nb", "nul\u{0}"] {
            try assertFailedWriteLeavesNothing(existingTarget: true) { target in
                let w = try CheckpointWriter(path: target)
                try whileAlive(w) { w in try [UInt8]([1]).withUnsafeBytes { try w.add(name: name, dtype: .uint8, shape: [1], bytes: $0) } }
            }
            try assertFailedWriteLeavesNothing(existingTarget: false) { target in
                let w = try ScoresWriter(path: target, info: .init(baseFingerprint: someFingerprint, estimator: "e", samples: 1))
                try whileAlive(w) { w in try w.add(name: name, shape: [1], values: [1]) }
            }
            try assertFailedWriteLeavesNothing(existingTarget: false) { target in
                let w = try MaskWriter(path: target, baseFingerprint: someFingerprint)
                try whileAlive(w) { w in try w.add(name: name, shape: [1], bits: [true]) }
            }
            try assertFailedWriteLeavesNothing(existingTarget: false) { target in
                let w = try TaskVectorWriter(path: target, baseFingerprint: someFingerprint)
                try whileAlive(w) { w in try w.add(name: name, shape: [1], dense: [1]) }
            }
        }
    }

    /// A zero-size tensor given bytes is a failed add like any other: the output is abandoned at
    /// once (not only when the writer is released), as for every other failed add.
    func testZeroSizeTensorGivenBytesAbandonsTheOutput() throws {
        try assertFailedWriteLeavesNothing(existingTarget: true) { target in
            let w = try CheckpointWriter(path: target)
            try whileAlive(w) { w in
                try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try w.add(name: "z", dtype: .float32, shape: [0, 2], bytes: $0) }
            }
        }
    }

    func testAbandonedWriterLeavesNothing() throws {
        let target = path("out.locus")
        try writeBytes(original, to: target)
        do {
            let w = try CheckpointWriter(path: target)
            try [UInt8]([1]).withUnsafeBytes { try w.add(name: "x", dtype: .uint8, shape: [1], bytes: $0) }
            // never finished
        }
        XCTAssertEqual(try listing(), ["out.locus"])
        XCTAssertEqual(try readBytes(target), original)
    }

    func testSuccessfulWriteLeavesExactlyTheTarget() throws {
        try writeBytes(Array("unrelated".utf8), to: path("neighbour.txt"))
        let target = path("out.locus")
        try writeBytes(original, to: target)
        try writeCheckpoint(target, [RawTensor(name: "x", dtype: .int8, shape: [2], bytes: [1, 255])])
        XCTAssertEqual(try listing(), ["neighbour.txt", "out.locus"])
        XCTAssertNotEqual(try readBytes(target), original)
        XCTAssertEqual(try CheckpointReader(path: target).tensors.map(\.name), ["x"])

        for kind in ["scores", "mask", "tv", "data"] {
            let p = path("\(kind).locus")
            switch kind {
            case "scores":
                let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "e", samples: 0))
                try w.finish()
            case "mask":
                try MaskWriter(path: p, baseFingerprint: someFingerprint).finish()
            case "tv":
                try TaskVectorWriter(path: p, baseFingerprint: someFingerprint).finish()
            default:
                try DatasetArtifact.write(LabelledData(inputs: .uint8([1]), shape: [1, 1], labels: [0], classes: ["a"], splits: [:]), to: p)
            }
            assertClean(p)
        }
        XCTAssertEqual(try listing(), ["data.locus", "mask.locus", "neighbour.txt", "out.locus", "scores.locus", "tv.locus"])
    }

    func testOutputPathProblemsAreReported() throws {
        expectLocusError(mentioning: path("no/such/dir/out.locus")) { _ = try CheckpointWriter(path: self.path("no/such/dir/out.locus")) }
        try FileManager.default.createDirectory(atPath: path("adir"), withIntermediateDirectories: false)
        expectLocusError(mentioning: path("adir")) { _ = try CheckpointWriter(path: self.path("adir")) }
        XCTAssertEqual(try listing(), ["adir"])
    }
}
