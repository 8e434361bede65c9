import Foundation
import HDF5
import LocusFormat
import LocusRender
import LocusTestSupport
import XCTest

/// `--verify` in the library: writers store the §1.8 digests, `DataVerifier` recomputes them, and
/// with `ReadVerification.current` enabled every reader refuses a file with one changed bit,
/// naming the object, before returning anything of it. Bits are flipped in the raw file bytes at the
/// offset HDF5 reports, as a failing disk would.
final class VerifyTests: LocusTestCase {

    /// Copies `source` to `name` with bit `bit` of byte `byte` of the contiguous dataset `object` flipped.
    private func flipped(_ source: String, _ name: String, object: String, byte: Int = 0, bit: Int = 0) throws -> String {
        let dst = try copy(source, name)
        let f = try File.open(dst)
        let ds = try f.root.openDataset(String(object.dropFirst()))
        let offset = try XCTUnwrap(ds.dataOffset, "\(object) is not contiguous")
        XCTAssertLessThan(byte, ds.storageSize)
        try f.close()
        var bytes = try readBytes(dst)
        bytes[offset + byte] ^= UInt8(1 << bit)
        try writeBytes(bytes, to: dst)
        return dst
    }

    private func verifying<R>(_ body: () throws -> R, notes: NoteBox = NoteBox()) throws -> R {
        try ReadVerification.$current.withValue(ReadVerification(enabled: true) { notes.add($0) }) { try body() }
    }

    final class NoteBox: @unchecked Sendable {
        private let lock = NSLock()
        private var lines: [String] = []
        func add(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
        var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
    }

    private func stringAttribute(_ p: String, _ object: String, _ name: String) throws -> String {
        let f = try File.open(p)
        defer { try? f.close() }
        return try f.root.openDataset(String(object.dropFirst())).stringAttribute(name)
    }

    // MARK: writers

    func testCheckpointTensorsCarryTheSpecDigestInAndOutOfNameOrder() throws {
        var rng = SplitMix64(seed: 7)
        // "big" spans two 1 MiB leaves; the second file comes out of name order (digests set in finish()).
        let tensors = [randomTensor("a", .bfloat16, [3, 5], &rng), randomTensor("big", .float32, [300, 1000], &rng),
                       randomTensor("flags", .bool, [9], &rng), randomTensor("z", .float64, [0], &rng)]
        for (name, order) in [("in.h5", tensors), ("out.h5", tensors.reversed())] {
            let p = path(name)
            try writeCheckpoint(p, order)
            for t in tensors {
                let expected = "sha256:" + referenceTensorDigest(t.bytes).map { String(format: "%02x", $0) }.joined()
                XCTAssertEqual(try stringAttribute(p, "/tensors/\(t.name)", "digest"), expected, "\(name) \(t.name)")
            }
            assertClean(p)
            let report = try DataVerifier.report(p)
            XCTAssertEqual(report.items.map(\.status), Array(repeating: .ok, count: tensors.count + 1))
            XCTAssertEqual(report.items.last?.object, "/@fingerprint")
        }
    }

    func testMaskAndDatasetWritersStoreDigests() throws {
        let m = path("mask.h5")
        let w = try MaskWriter(path: m, baseFingerprint: someFingerprint)
        try w.add(name: "a", shape: [11], bits: (0..<11).map { $0 % 3 == 0 })
        try w.beginTensor(name: "b", shape: [20])
        let bits = (0..<20).map { $0 % 2 == 1 }
        try bits.withUnsafeBufferPointer { try w.appendBits(UnsafeBufferPointer(rebasing: $0[0..<7])) }
        try bits.withUnsafeBufferPointer { try w.appendBits(UnsafeBufferPointer(rebasing: $0[7...])) }
        try w.finish()
        for (name, b) in [("a", (0..<11).map { $0 % 3 == 0 }), ("b", bits)] {
            let expected = "sha256:" + referenceTensorDigest(BitPacking.pack(b)).map { String(format: "%02x", $0) }.joined()
            XCTAssertEqual(try stringAttribute(m, "/tensors/\(name)", "digest"), expected, name)
        }
        assertClean(m)

        let d = path("d.h5")
        let data = LabelledData(inputs: .float32([1, 2, 3, 4, 5, 6]), shape: [3, 2], labels: [0, 1, 0], classes: ["x", "y"],
                                splits: ["train": [0, 2], "test": [1]])
        try DatasetArtifact.write(data, to: d)
        let report = try DataVerifier.report(d)
        XCTAssertEqual(Set(report.items.map(\.object)), ["/inputs", "/labels", "/splits/train", "/splits/test"])
        XCTAssertTrue(report.items.allSatisfy { $0.status == .ok }, "\(report.items)")
    }

    // MARK: every reader refuses a changed bit when asked to verify

    private func checkpoint() throws -> String {
        var rng = SplitMix64(seed: 11)
        let p = path("ckpt.h5")
        try writeCheckpoint(p, [randomTensor("layer.bias", .float32, [4], &rng), randomTensor("layer.weight", .float32, [4, 8], &rng)])
        return p
    }

    func testChangedCheckpointBitIsRefusedNamingTheTensor() throws {
        let bad = try flipped(try checkpoint(), "bad.h5", object: "/tensors/layer.weight", byte: 20, bit: 0)
        _ = try CheckpointReader(path: bad).readFloat32(try XCTUnwrap(CheckpointReader(path: bad).tensor(named: "layer.weight")))
        let e = expectLocusError(mentioning: bad) { _ = try verifying { try openCheckpoint(path: bad) } }
        XCTAssertEqual(e?.object, "/tensors/layer.weight")
        XCTAssertTrue(e?.message.contains("digest") ?? false, "\(String(describing: e))")

        let report = try DataVerifier.report(bad)
        XCTAssertEqual(report.mismatches.map(\.object), ["/tensors/layer.weight", "/@fingerprint"])
        XCTAssertEqual(report.items.first { $0.object == "/tensors/layer.bias" }?.status, .ok)
        XCTAssertTrue(InspectText.verification(report).contains("MISMATCH   /tensors/layer.weight"), InspectText.verification(report))
    }

    func testValidatorNamesTheChangedCheckpointTensor() throws {
        let bad = try flipped(try checkpoint(), "bad.h5", object: "/tensors/layer.bias", byte: 5, bit: 2)
        let findings = Validator.validate(bad)
        XCTAssertEqual(findings.map(\.object), ["/tensors/layer.bias", "/@fingerprint"], "\(findings)")
        XCTAssertTrue(findings[0].message.contains("does not match its digest"), findings[0].message)
    }

    func testCheckpointWithoutTensorDigestsIsCheckedByItsFingerprint() throws {
        let p = try checkpoint()
        try modifyHDF5(p) { root in
            let g = try root.openGroup("tensors")
            for name in ["layer.bias", "layer.weight"] { try g.openDataset(name).deleteAttribute("digest") }
        }
        let notes = NoteBox()
        _ = try verifying({ try CheckpointReader(path: p) }, notes: notes)
        XCTAssertEqual(notes.all.count, 1)
        XCTAssertTrue(notes.all[0].contains(p) && notes.all[0].contains("fingerprint"), "\(notes.all)")
        let bad = try flipped(p, "bad.h5", object: "/tensors/layer.bias", byte: 3, bit: 7)
        let e = expectLocusError(mentioning: bad) { _ = try verifying { try CheckpointReader(path: bad) } }
        XCTAssertEqual(e?.object, "/@fingerprint")
    }

    func testChangedTaskVectorScoresAndMaskBitsAreRefused() throws {
        let tv = path("tv.h5")
        let w = try TaskVectorWriter(path: tv, baseFingerprint: someFingerprint)
        try w.add(name: "t", shape: [1000], indices: [3, 50, 400, 999], values: [0.5, -1, 2, 0.25])
        try w.add(name: "d", shape: [4], dense: [1, 2, 3, 4])
        try w.finish()
        let sc = path("scores.h5")
        let s = try ScoresWriter(path: sc, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
        try s.add(name: "w", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        try s.finish()
        let mk = path("mask.h5")
        let m = try MaskWriter(path: mk, baseFingerprint: someFingerprint)
        try m.add(name: "w", shape: [2, 8], bits: (0..<16).map { $0 < 5 })
        try m.finish()

        let cases: [(String, String, (String) throws -> Void)] = [
            (tv, "/tensors/t/values", { _ = try TaskVectorReader(path: $0) }),
            (tv, "/tensors/t/indices", { _ = try TaskVectorReader(path: $0) }),
            (tv, "/tensors/d/values", { _ = try TaskVectorReader(path: $0) }),
            (sc, "/tensors/w", { _ = try ScoresReader(path: $0) }),
            (mk, "/tensors/w", { _ = try MaskReader(path: $0) }),
        ]
        for (i, (file, object, open)) in cases.enumerated() {
            let bad = try flipped(file, "bad\(i).h5", object: object, byte: 0, bit: 0)
            try open(bad)   // unchanged behaviour without verification
            let e = expectLocusError(mentioning: bad) { try verifying { try open(bad) } }
            XCTAssertEqual(e?.object, object)
            XCTAssertEqual(try DataVerifier.report(bad).mismatches.first?.object, object)
            try verifying { try open(file) }   // the original still passes
        }
    }

    func testMaskWithoutDigestIsCheckedByItsBitCount() throws {
        let mk = path("mask.h5")
        let m = try MaskWriter(path: mk, baseFingerprint: someFingerprint)
        try m.add(name: "w", shape: [12], bits: (0..<12).map { $0 < 5 })
        try m.finish()
        try modifyHDF5(mk) { try $0.openGroup("tensors").openDataset("w").deleteAttribute("digest") }
        let bad = try flipped(mk, "bad.h5", object: "/tensors/w", byte: 0, bit: 6)
        let e = expectLocusError(mentioning: bad) { _ = try verifying { try MaskReader(path: bad) } }
        XCTAssertEqual(e?.object, "/tensors/w")
        XCTAssertTrue(e?.message.contains("6 set bits") ?? false, "\(String(describing: e))")
        let pad = try flipped(mk, "pad.h5", object: "/tensors/w", byte: 1, bit: 6)   // bit 14 of 12: padding
        XCTAssertTrue(try DataVerifier.report(pad).mismatches.first?.message.contains("padding") ?? false)
    }

    func testScoresWithoutDigestsAreNotedAndRead() throws {
        let sc = path("scores.h5")
        let s = try ScoresWriter(path: sc, info: .init(baseFingerprint: someFingerprint, estimator: "talos", samples: 1))
        try s.add(name: "w", shape: [3], values: [1, 2, 3])
        try s.finish()
        try modifyHDF5(sc) { try $0.openGroup("tensors").openDataset("w").deleteAttribute("digest") }
        let notes = NoteBox()
        let r = try verifying({ try ScoresReader(path: sc) }, notes: notes)
        XCTAssertEqual(try r.read(r.tensors[0]), [1, 2, 3])
        XCTAssertEqual(notes.all.count, 1)
        XCTAssertTrue(notes.all[0].contains("1 of 1 datasets carry no digest"), "\(notes.all)")
        let report = try DataVerifier.report(sc)
        XCTAssertEqual(report.items.map(\.status), [.unchecked])
        XCTAssertNotNil(report.note)
    }

    // MARK: non-finite numbers

    func testNonFiniteCountsFromBitPatternsOfEveryFloatDtype() throws {
        let f32: [Float] = [1, .nan, .infinity, -.infinity, -0.0, .greatestFiniteMagnitude, -.nan]
        XCTAssertEqual(f32.withUnsafeBytes { NonFiniteCounts(counting: $0, dtype: .float32) }.description, "2 nan, 1 +inf, 1 -inf")
        let f64: [Double] = [.nan, .infinity, 3, -.infinity, -.infinity]
        XCTAssertEqual(f64.withUnsafeBytes { NonFiniteCounts(counting: $0, dtype: .float64) }.description, "1 nan, 1 +inf, 2 -inf")
        // float16: 0x7C00 +inf, 0xFC00 -inf, 0x7E00 nan, 0x7BFF max finite; bfloat16: 0x7F80 +inf, 0xFFC0 nan, 0x7F7F max finite.
        let h: [UInt16] = [0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0x3C00]
        XCTAssertEqual(h.withUnsafeBytes { NonFiniteCounts(counting: $0, dtype: .float16) }.description, "1 nan, 1 +inf, 1 -inf")
        let b: [UInt16] = [0x7F80, 0xFFC0, 0x7F7F, 0x7F81]
        XCTAssertEqual(b.withUnsafeBytes { NonFiniteCounts(counting: $0, dtype: .bfloat16) }.description, "2 nan, 1 +inf")
        XCTAssertEqual([Int32(-1)].withUnsafeBytes { NonFiniteCounts(counting: $0, dtype: .int32) }.total, 0)
    }

    func testValidateStatsWarnsOnNonFiniteCheckpointTensors() throws {
        let p = path("nan.h5")
        let w = try CheckpointWriter(path: p)
        try w.add(name: "a", values: [1, .nan, .infinity, .nan], shape: [2, 2])
        try w.add(name: "b", values: [1, 2], shape: [2], dtype: .bfloat16)
        try w.add(name: "c", values: [-.infinity], shape: [1], dtype: .float16)
        try w.finish()
        XCTAssertEqual(Validator.validate(p), [])
        let findings = Validator.validate(p, stats: true)
        XCTAssertEqual(findings.map(\.object), ["/tensors/a", "/tensors/c"])
        XCTAssertTrue(findings.allSatisfy { $0.severity == .warning })
        XCTAssertEqual(findings.map(\.message), ["holds 2 nan, 1 +inf among 4 values", "holds 1 -inf among 1 values"])
    }

    func testValidateReportsNonFiniteSummariesAndTaskVectorValues() throws {
        let tv = path("tv.h5")
        let w = try TaskVectorWriter(path: tv, baseFingerprint: someFingerprint)
        try w.add(name: "d", shape: [4], dense: [1, 2, 3, 4])
        try w.finish()
        try modifyHDF5(tv) { root in
            try root.openGroup("tensors").openGroup("d").deleteAttribute("l2-norm")
            try root.openGroup("tensors").openGroup("d").setAttribute("l2-norm", Double.nan)
        }
        let f = Validator.validate(tv)
        XCTAssertEqual(f.map(\.object), ["/tensors/d@l2-norm"])
        XCTAssertTrue(f[0].message.hasPrefix("is nan, the data gives"), f[0].message)
        XCTAssertTrue(InspectText.report(try Inspector.inspect(tv)).contains("nan"))

        let bad = path("bad.h5")
        let w2 = try TaskVectorWriter(path: bad, baseFingerprint: someFingerprint)
        try w2.add(name: "d", shape: [4], dense: [1, 2, 3, 4])
        try w2.finish()
        try modifyHDF5(bad) { root in
            let v = try root.openGroup("tensors").openGroup("d").openDataset("values")
            try v.writeValues([Float.nan, 2, .infinity, 4], memType: .nativeFloat)
        }
        let g = Validator.validate(bad).filter { $0.severity == .error }
        XCTAssertTrue(g.contains { $0.object == "/tensors/d/values" && $0.message.contains("1 nan, 1 +inf among 4 stored values") }, "\(g)")
    }
}
