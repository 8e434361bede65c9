import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

final class OpenErrorTests: LocusTestCase {

    /// Every way of opening must fail with a one-line LocusError naming the path.
    private func assertAllOpenersFail(_ p: String, contains fragment: String? = nil, file: StaticString = #filePath, line: UInt = #line) {
        let openers: [(String, () throws -> Void)] = [
            ("ArtifactFile", { _ = try ArtifactFile.open(p) }),
            ("CheckpointReader", { _ = try CheckpointReader(path: p) }),
            ("ScoresReader", { _ = try ScoresReader(path: p) }),
            ("MaskReader", { _ = try MaskReader(path: p) }),
            ("TaskVectorReader", { _ = try TaskVectorReader(path: p) }),
            ("DatasetArtifact", { _ = try DatasetArtifact.read(p) }),
            ("Inspector", { _ = try Inspector.inspect(p) }),
        ]
        for (what, open) in openers {
            let e = expectLocusError(mentioning: p, open, sourceFile: file, line: line)
            if let fragment, let e {
                XCTAssertTrue(e.message.contains(fragment), "\(what): '\(e)' lacks '\(fragment)'", file: file, line: line)
            }
            XCTAssertEqual(e?.file, p, what, file: file, line: line)
        }
        let findings = Validator.validate(p)
        XCTAssertEqual(findings.count, 1, "\(findings)", file: file, line: line)
        XCTAssertEqual(findings.first?.severity, .error, file: file, line: line)
        XCTAssertTrue(findings.first?.description.contains(p) ?? false, file: file, line: line)
        XCTAssertFalse(findings.first?.description.contains("\n") ?? true, file: file, line: line)
    }

    func testMissingFile() {
        assertAllOpenersFail(path("missing.locus"), contains: "no such file")
    }

    func testDirectory() throws {
        let p = path("a-directory.locus")
        try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: false)
        assertAllOpenersFail(p, contains: "directory")
    }

    func testEmptyFile() throws {
        let p = path("empty.locus")
        try writeBytes([], to: p)
        assertAllOpenersFail(p, contains: "empty")
    }

    func testNonHDF5File() throws {
        let p = path("text.locus")
        try writeBytes(Array(String(repeating: "{\"not\": \"hdf5\"}\n", count: 100).utf8), to: p)
        assertAllOpenersFail(p, contains: "not an HDF5 file")
    }

    func testTruncatedLocusFile() throws {
        let p = path("truncated.locus")
        var rng = SplitMix64(seed: 5)
        try writeCheckpoint(p, [randomTensor("b", .float32, [64], &rng), randomTensor("w", .float32, [64, 64], &rng)])
        let bytes = try readBytes(p)
        try writeBytes(Array(bytes.prefix(bytes.count / 2)), to: p)
        assertAllOpenersFail(p)
    }

    func testWrongKind() throws {
        let p = path("mask.locus")
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
        try w.finish()
        let e = expectLocusError(mentioning: p) { _ = try ArtifactFile.open(p, expecting: .checkpoint) }
        XCTAssertTrue(e?.message.contains("mask") ?? false)
        XCTAssertTrue(e?.message.contains("checkpoint") ?? false)
        expectLocusError(mentioning: p) { _ = try CheckpointReader(path: p) }
        expectLocusError(mentioning: p) { _ = try ScoresReader(path: p) }
        expectLocusError(mentioning: p) { _ = try TaskVectorReader(path: p) }
        expectLocusError(mentioning: p) { _ = try DatasetArtifact.read(p) }
        XCTAssertEqual(try ArtifactFile.open(p, expecting: .mask).header.kind, .mask)
        XCTAssertEqual(try MaskReader(path: p).tensors, [])
    }

    func testErrorDescriptionIsOneLine() {
        let e = LocusError(file: "/x.locus", object: "/tensors/a", "first line\nsecond line\r\nthird")
        XCTAssertFalse(e.description.contains("\n"))
        XCTAssertFalse(e.description.contains("\r"))
        XCTAssertTrue(e.description.hasPrefix("/x.locus: /tensors/a: first line"))
    }
}
