import CHDF5
import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

/// Every corruption starts from a valid Locus-written file, changes one thing through the HDF5
/// wrapper, and checks that the validator reports an error at the right object.
final class ValidatorTests: LocusTestCase {

    // MARK: Fixtures (each validated clean first)

    private func checkpoint() throws -> String {
        let p = path("ckpt.locus")
        var rng = SplitMix64(seed: 101)
        // In name order (out-of-order writes are covered by CheckpointTests).
        try writeCheckpoint(p, [randomTensor("b", .bfloat16, [3], &rng), randomTensor("flags", .bool, [5], &rng),
                                randomTensor("w", .float32, [4, 3], &rng)], metadata: ["format": "pt"])
        assertClean(p)
        return p
    }

    private func mask() throws -> String {
        let p = path("mask.locus")
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "m", shape: [2, 5], bits: [true, false, true, true, false, false, true, false, true, true])
        try w.add(name: "other", shape: [8], bits: [Bool](repeating: true, count: 8))
        try w.finish()
        assertClean(p)
        return p
    }

    private func taskVector() throws -> String {
        let p = path("tv.locus")
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint)
        try w.add(name: "t", shape: [1000], indices: [3, 50, 400, 999], values: [0.5, -1, 2, 0.25])
        try w.add(name: "d", shape: [4], dense: [1, 2, 3, 4])
        try w.finish()
        assertClean(p)
        XCTAssertEqual(try TaskVectorReader(path: p).tensor(named: "t")?.encoding, .coo)
        return p
    }

    private func scores() throws -> String {
        let p = path("scores.locus")
        let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 10))
        try w.add(name: "s", shape: [2, 3], values: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
        try w.add(name: "u", shape: [2], values: [1, 2])
        try w.finish()
        assertClean(p)
        return p
    }

    private func dataset() throws -> String {
        let p = path("data.locus")
        let data = LabelledData(inputs: .uint8((0..<40).map { UInt8($0) }), shape: [10, 4], labels: [0, 1, 2, 0, 1, 2, 0, 1, 2, 0],
                                classes: ["a", "b", "c"], splits: ["train": [0, 1, 2, 3, 4, 5], "val": [7, 8]])
        try DatasetArtifact.write(data, to: p)
        assertClean(p)
        return p
    }

    private func tensors(_ root: Group) throws -> Group { try root.openGroup("tensors") }

    // MARK: Masks

    func testMaskWithWrongByteCount() throws {
        let p = try mask()
        try modifyHDF5(p) { root in
            let g = try tensors(root)
            deleteLink(g, "m")
            let ds = try g.createDataset("m", type: .uint8LE, shape: [3])   // 10 bits need 2 bytes
            try ds.writeValues([UInt8(0x4D), 0x03, 0], memType: .nativeUInt8)
            try ds.setAttribute("encoding-type", "packed-bits")
            try ds.setAttribute("bitorder", "little")
            try ds.setAttribute("shape", [Int64(2), 5])
            try ds.setAttribute("count", Int64(10))
            try ds.setAttribute("ones", Int64(6))
        }
        assertFinding(p, object: "/tensors/m", contains: "bytes")
    }

    func testMaskWithNonzeroPaddingBits() throws {
        let p = try mask()
        try modifyHDF5(p) { root in
            try tensors(root).openDataset("m").writeValues([UInt8(0x80 | 0x03)], memType: .nativeUInt8, start: 1)
        }
        assertFinding(p, object: "/tensors/m", contains: "padding")
        expectLocusError(mentioning: p) { let r = try MaskReader(path: p); _ = try r.read(r.tensor(named: "m")!) }
    }

    func testMaskWithWrongOnes() throws {
        let p = try mask()
        try modifyHDF5(p) { root in try tensors(root).openDataset("m").setAttribute("ones", Int64(5)) }
        assertFinding(p, object: "/tensors/m@ones")
    }

    func testMaskWithWrongRootTotals() throws {
        let p = try mask()
        try modifyHDF5(p) { root in try root.setAttribute("ones", Int64(1)) }
        assertFinding(p, object: "/@ones")
    }

    // MARK: Task vectors

    func testTaskVectorWithUnsortedIndices() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in
            try tensors(root).openGroup("t").openDataset("indices").writeValues([UInt32(50), 3, 400, 999], memType: .nativeUInt32)
        }
        assertFinding(p, object: "/tensors/t/indices", contains: "increasing")
    }

    func testTaskVectorWithOutOfRangeIndex() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in
            try tensors(root).openGroup("t").openDataset("indices").writeValues([UInt32(3), 50, 400, 1000], memType: .nativeUInt32)
        }
        assertFinding(p, object: "/tensors/t/indices", contains: "1000")
    }

    func testTaskVectorWithNNZMismatch() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in try tensors(root).openGroup("t").setAttribute("nnz", Int64(3)) }
        assertFinding(p, object: "/tensors/t@nnz")
    }

    func testTaskVectorWithNaNValue() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in
            try tensors(root).openGroup("t").openDataset("values").writeValues([Float.nan], memType: .nativeFloat, start: 1)
        }
        assertFinding(p, object: "/tensors/t/values", contains: "nan")
    }

    func testTaskVectorWithWrongL2Norm() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in try tensors(root).openGroup("d").setAttribute("l2-norm", 1.0) }
        assertFinding(p, object: "/tensors/d@l2-norm")
    }

    func testTaskVectorWithUnknownEncoding() throws {
        let p = try taskVector()
        try modifyHDF5(p) { root in try tensors(root).openGroup("d").setAttribute("encoding-type", "csr") }
        assertFinding(p, object: "/tensors/d@encoding-type", contains: "csr")
    }

    // MARK: Checkpoints

    func testCheckpointFingerprintMismatchAfterOverwritingOneValue() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in
            let ds = try tensors(root).openDataset("w")
            try [Float(12345.5)].withUnsafeBytes { try ds.write($0, memType: .nativeFloat, start: [2, 1], count: [1, 1]) }
        }
        assertFinding(p, object: "/@fingerprint")
    }

    func testCheckpointWithWrongDTypeAttribute() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in try tensors(root).openDataset("w").setAttribute("dtype", "int32") }
        assertFinding(p, object: "/tensors/w", contains: "int32")
    }

    func testCheckpointWithUnknownDType() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in try tensors(root).openDataset("b").setAttribute("dtype", "float8") }
        assertFinding(p, object: "/tensors/b@dtype", contains: "float8")
    }

    func testCheckpointBFloat16DeclaredAsFloat16() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in try tensors(root).openDataset("b").setAttribute("dtype", "float16") }
        assertFinding(p, object: "/tensors/b")
    }

    func testCheckpointBoolByteOutOfRange() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in try tensors(root).openDataset("flags").writeValues([UInt8(2)], memType: .nativeUInt8, start: 3) }
        assertFinding(p, object: "/tensors/flags", contains: "bool")
    }

    func testCheckpointWithWrongTensorCount() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in try root.setAttribute("tensor-count", Int64(4)) }
        assertFinding(p, object: "/@tensor-count")
    }

    /// Renames `/tensors/<from>` to the raw link-name bytes `to`, then re-stamps a self-consistent
    /// fingerprint so that only the name can be at fault.
    private func renameTensorLink(_ p: String, from: String, to bytes: [UInt8]) throws {
        try modifyHDF5(p) { root in
            let g = try tensors(root)
            let cName = bytes.map { CChar(bitPattern: $0) } + [0]
            XCTAssertGreaterThanOrEqual(H5Lmove(g.id, from, g.id, cName, locus_H5P_DEFAULT(), locus_H5P_DEFAULT()), 0)
        }
        // (A raw non-UTF-8 link cannot even be opened through the lossily decoded name.)
        if let fp = try? CheckpointReader(path: p).computeFingerprint() {
            try modifyHDF5(p) { root in try root.setAttribute("fingerprint", fp) }
        }
    }

    func testLinkDecodingToANewlineOrNULIsReported() throws {
        for (i, link) in ["a%0Ab", "%00"].enumerated() {
            let p = try checkpoint()
            try modifyHDF5(p) { root in
                let g = try tensors(root)
                XCTAssertGreaterThanOrEqual(H5Lmove(g.id, "w", g.id, link, locus_H5P_DEFAULT(), locus_H5P_DEFAULT()), 0)
            }
            assertFinding(p, object: "/tensors/\(link)")
            expectLocusError(mentioning: p) { _ = try CheckpointReader(path: p) }
            try FileManager.default.removeItem(atPath: p)
            _ = i
        }
    }

    /// Spec §1.3: names MUST be valid UTF-8. A link whose decoded bytes are not UTF-8 (escaped
    /// `%FF`, or a raw 0xFF byte in the link) must be reported, not silently turned into U+FFFD.
    func testLinkDecodingToInvalidUTF8IsReported() throws {
        for (i, bytes) in [Array("%FF".utf8), Array("a".utf8) + [0xFF]].enumerated() {
            let p = try checkpoint()
            try renameTensorLink(p, from: "w", to: bytes)
            let findings = Validator.validate(p)
            XCTAssertTrue(findings.contains { $0.severity == .error && $0.object.hasPrefix("/tensors/") },
                          "case \(i): no error for a tensor name that is not UTF-8; findings: \(findings.map(\.description))")
            try FileManager.default.removeItem(atPath: p)
        }
    }

    // MARK: Scores

    func testScoresWithNegativeValue() throws {
        let p = try scores()
        try modifyHDF5(p) { root in
            let ds = try tensors(root).openDataset("s")
            try [Float(-0.5)].withUnsafeBytes { try ds.write($0, memType: .nativeFloat, start: [1, 2], count: [1, 1]) }
        }
        assertFinding(p, object: "/tensors/s", contains: "-0.5")
    }

    func testScoresWithWrongQuantiles() throws {
        let p = try scores()
        try modifyHDF5(p) { root in try tensors(root).openDataset("s").setAttribute("quantiles", [0.1, 0.2, 0.3, 0.4, 0.5]) }
        assertFinding(p, object: "/tensors/s@quantiles")
    }

    func testScoresWithWrongSum() throws {
        let p = try scores()
        try modifyHDF5(p) { root in try root.setAttribute("sum", 100.0) }
        assertFinding(p, object: "/@sum")
    }

    // MARK: Header

    func testWrongEncodingVersionMajor() throws {
        let p = try scores()
        try modifyHDF5(p) { root in try root.setAttribute("encoding-version", "2.0") }
        assertFinding(p, object: "/@encoding-version", contains: "2.0")
        let e = expectLocusError(mentioning: p) { _ = try ArtifactFile.open(p) }
        XCTAssertEqual(e?.object, "/@encoding-version")
    }

    func testHigherMinorVersionIsAccepted() throws {
        let p = try mask()
        try modifyHDF5(p) { root in try root.setAttribute("encoding-version", "1.7") }
        assertClean(p)
        XCTAssertEqual(try MaskReader(path: p).artifact.header.encodingVersion, "1.7")
    }

    func testMalformedVersion() throws {
        let p = try mask()
        try modifyHDF5(p) { root in try root.setAttribute("encoding-version", "1") }
        assertFinding(p, object: "/@encoding-version")
    }

    func testUnknownKind() throws {
        let p = try mask()
        try modifyHDF5(p) { root in try root.setAttribute("kind", "weights") }
        assertFinding(p, object: "/@kind", contains: "weights")
    }

    func testNotALocusFile() throws {
        let p = path("plain.h5")
        let f = try File.create(p)
        try f.root.setAttribute("x", Int64(1))
        try f.close()
        assertFinding(p, object: "/", contains: "encoding-type")
    }

    func testFixedLengthStringHeaderIsAccepted() throws {
        // Readers MUST accept fixed-length strings (spec §1.1); replace `absent-tensors` with one.
        let p = try mask()
        try modifyHDF5(p) { root in
            try root.deleteAttribute("absent-tensors")
            try writeFixedString(root, "absent-tensors", "frozen")
        }
        assertClean(p)
    }

    // MARK: Datasets

    func testDatasetLabelOutOfRange() throws {
        let p = try dataset()
        try modifyHDF5(p) { root in try root.openDataset("labels").writeValues([Int64(3)], memType: .nativeInt64, start: 4) }
        assertFinding(p, object: "/labels", contains: "3")
    }

    func testDatasetOverlappingSplits() throws {
        let p = try dataset()
        try modifyHDF5(p) { root in try root.openGroup("splits").openDataset("val").writeValues([Int64(2), 8], memType: .nativeInt64) }
        assertFinding(p, object: "/splits/", prefix: true, contains: "train")
    }

    func testDatasetUnsortedSplit() throws {
        let p = try dataset()
        try modifyHDF5(p) { root in try root.openGroup("splits").openDataset("val").writeValues([Int64(8), 7], memType: .nativeInt64) }
        assertFinding(p, object: "/splits/val")
    }

    func testDatasetClassCountMismatch() throws {
        let p = try dataset()
        try modifyHDF5(p) { root in try root.setAttribute("class-count", Int64(4)) }
        assertFinding(p, object: "/classes")
    }

    // MARK: Storage rules

    func testDisallowedLayoutOrFilterIsReported() throws {
        // A chunked checkpoint tensor without fletcher32 only warns; the file stays valid.
        let p = try checkpoint()
        try modifyHDF5(p) { root in
            let g = try tensors(root)
            deleteLink(g, "w")
            let dcpl = try PropertyList.datasetCreate()
            try dcpl.setChunk([2, 3])
            try dcpl.addDeflate(level: 1)
            let ds = try g.createDataset("w", type: .float32LE, shape: [4, 3], properties: dcpl)
            try ds.writeValues([Float](repeating: 0, count: 12), memType: .nativeFloat)
            try ds.setAttribute("dtype", "float32")
        }
        let findings = Validator.validate(p)
        XCTAssertTrue(findings.contains { $0.severity == .warning && $0.object == "/tensors/w" }, "\(findings)")
        XCTAssertTrue(findings.contains { $0.severity == .error && $0.object == "/@fingerprint" }, "the values changed: \(findings)")
    }
}

/// Writes a scalar fixed-length, NUL-padded string attribute through the C API.
func writeFixedString(_ obj: some HDF5Object, _ name: String, _ value: String) throws {
    try writeFixedStringC(obj.id, name, value)
}
