import Foundation
import HDF5
import LocusFormat
import LocusTestSupport
import XCTest

final class CheckpointTests: LocusTestCase {

    func testReferenceSHA256() {
        XCTAssertEqual(SHA256Reference.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256Reference.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256Reference.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
                       "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Vectors computed with the h5py/hashlib snippet of spec §1.5.
        XCTAssertEqual(referenceTensorDigest([]), SHA256Reference.digest([]), "no leaves: SHA-256 of the empty string")
        let pattern = (0..<2_500_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        XCTAssertEqual(referenceTensorDigest(pattern).map { String(format: "%02x", $0) }.joined(),
                       "7902ef3924054291bd98bebae8caa6c68d02eb25125acefda6c9e0314f42405c")
        let a = RawTensor(name: "a", dtype: .int16, shape: [2, 3], bytes: (0..<6).flatMap { [UInt8($0), 0] })
        let b = RawTensor(name: "b", dtype: .float32, shape: [4], bytes: floatBytes([1.5, -2, 3, 4]))
        XCTAssertEqual(referenceFingerprint([b, a]), "sha256:a5870ca0061846d8bcc6f173b3a639309783e3b18f75218bbc792defb8b4c4e8")
    }

    /// A tensor of several 1 MiB leaves, written in row blocks that straddle leaf boundaries
    /// (some big enough to be hashed concurrently with the write), fingerprints like one shot.
    func testMultiLeafTensorStreamedAcrossLeafBoundaries() throws {
        let rows = 2500, cols = 1000
        let bytes = (0..<(rows * cols)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let big = RawTensor(name: "big", dtype: .uint8, shape: [rows, cols], bytes: bytes)
        let small = RawTensor(name: "a.small", dtype: .float32, shape: [2], bytes: floatBytes([1, 2]))
        let reference = referenceFingerprint([small, big])

        let oneShot = try writeCheckpoint(path("one.locus"), [small, big])
        XCTAssertEqual(oneShot, reference)

        let w = try CheckpointWriter(path: path("rows.locus"))
        try small.bytes.withUnsafeBytes { try w.add(name: small.name, dtype: .float32, shape: [2], bytes: $0) }
        try w.beginTensor(name: "big", dtype: .uint8, shape: [rows, cols])
        var start = 0
        for n in [700, 1100, 300, 400] {
            try bytes.withUnsafeBytes { b in try w.writeRows(UnsafeRawBufferPointer(rebasing: b[(start * cols)..<((start + n) * cols)])) }
            start += n
        }
        XCTAssertEqual(try w.finish(), reference)

        for name in ["one.locus", "rows.locus"] {
            let r = try CheckpointReader(path: path(name))
            XCTAssertEqual(try r.fingerprint, reference)
            XCTAssertEqual(try r.computeFingerprint(), reference)
            XCTAssertEqual(try r.computeFingerprint(blockBytes: 300_000), reference, "leaves assembled from small blocks")
            XCTAssertEqual(try r.readRaw(r.tensor(named: "big")!), bytes)
        }
        assertClean(path("rows.locus"))
    }

    /// Tensors whose digests the caller supplies (computed meanwhile on other threads, as the
    /// safetensors import does), mixed with tensors the writer hashes itself, give the same
    /// fingerprint and per-tensor digests as the reference, in name order and out of it.
    func testSuppliedDigestsMixedWithHashedTensors() throws {
        let rows = 2100, cols = 1000
        let big = RawTensor(name: "b.big", dtype: .uint8, shape: [rows, cols], bytes: (0..<(rows * cols)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) })
        let empty = RawTensor(name: "c.empty", dtype: .float32, shape: [0, 4], bytes: [])
        let small = RawTensor(name: "a.small", dtype: .float32, shape: [2], bytes: floatBytes([1, 2]))
        let last = RawTensor(name: "d.last", dtype: .int16, shape: [3], bytes: [1, 0, 2, 0, 3, 0])
        let all = [small, big, empty, last]
        let reference = referenceFingerprint(all)
        for (file, order) in [("ordered.locus", all), ("unordered.locus", [last, big, small, empty])] {
            let w = try CheckpointWriter(path: path(file))
            for (k, t) in order.enumerated() {
                try t.bytes.withUnsafeBytes { b in
                    if k % 2 == 0 {
                        var progress: [Int] = []
                        try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: b, blockBytes: 700_000,
                                  progress: { progress.append($0) }, digest: { referenceTensorDigest(t.bytes) })
                        XCTAssertEqual(progress.last ?? 0, t.bytes.count, t.name)
                    } else {
                        try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: b)
                    }
                }
            }
            XCTAssertEqual(try w.finish(), reference, file)
            let r = try CheckpointReader(path: path(file))
            XCTAssertEqual(try r.fingerprint, reference, file)
            for t in all { XCTAssertEqual(try r.readRaw(r.tensor(named: t.name)!), t.bytes, "\(file) \(t.name)") }
            let report = try DataVerifier.report(path(file))
            XCTAssertEqual(report.mismatches.count, 0, file)
            XCTAssertEqual(report.items.filter { $0.check == "digest" && $0.status == .ok }.count, all.count, "every tensor carries its digest")
            assertClean(path(file))
        }
    }

    /// One tensor of every dtype plus the awkward shapes and names of spec §1.3.
    private func sampleTensors(seed: UInt64 = 1) -> [RawTensor] {
        var rng = SplitMix64(seed: seed)
        var list: [RawTensor] = []
        for (i, dtype) in LocusDType.allCases.enumerated() {
            list.append(randomTensor("layers.\(i).\(dtype.rawValue)", dtype, [3, 2 + i % 3], &rng))
        }
        list.append(randomTensor("scalar", .float32, [], &rng))
        list.append(randomTensor("scalar.bool", .bool, [], &rng))
        list.append(randomTensor("empty", .float16, [0, 5], &rng))
        list.append(randomTensor("empty.1d", .int64, [0], &rng))
        list.append(randomTensor("model/encoder/w", .bfloat16, [4], &rng))
        list.append(randomTensor("100%", .uint8, [2, 2, 2], &rng))
        list.append(randomTensor(".", .int8, [1], &rng))
        list.append(randomTensor("..", .int16, [1], &rng))
        list.append(randomTensor("/", .uint16, [2], &rng))
        list.append(randomTensor("%2F", .uint32, [2], &rng))
        list.append(randomTensor("é✓", .float64, [1, 1, 1], &rng))
        return list
    }

    func testRoundTripOfEveryDTypeShapeAndName() throws {
        let p = path("model.locus")
        // In name order (out-of-order writes are covered by testFingerprintIsIndependentOfInsertionOrder).
        let tensors = sampleTensors().sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        let metadata = ["format": "pt", "note": "ünïcode \"quoted\"\nnewline"]
        let architecture = #"{"format": "locus-sequential", "version": 1, "input": [784], "layers": [], "heads": []}"#
        let fp = try writeCheckpoint(p, tensors, metadata: metadata, architecture: architecture)
        XCTAssertEqual(try listing(), ["model.locus"])

        let r = try CheckpointReader(path: p)
        let sorted = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        XCTAssertEqual(r.tensors.map(\.name), sorted.map(\.name))
        for t in sorted {
            let d = try XCTUnwrap(r.tensor(named: t.name), t.name)
            XCTAssertEqual(d.dtype, t.dtype, t.name)
            XCTAssertEqual(d.shape, t.shape, t.name)
            XCTAssertEqual(d.count, t.count, t.name)
            XCTAssertEqual(d.link, TensorName.linkName(for: t.name))
            XCTAssertEqual(try r.readRaw(d), t.bytes, t.name)
        }
        XCTAssertEqual(try r.metadata(), metadata)
        XCTAssertEqual(try r.architecture(), architecture)
        XCTAssertEqual(r.artifact.header.kind, .checkpoint)
        XCTAssertEqual(r.artifact.header.encodingVersion, LocusSpec.encodingVersion)
        XCTAssertNil(r.artifact.header.baseFingerprint)

        // Fingerprint: returned, stored, recomputed and computed from scratch all agree.
        let reference = referenceFingerprint(tensors)
        XCTAssertEqual(fp, reference)
        XCTAssertEqual(try r.fingerprint, reference)
        XCTAssertEqual(try r.computeFingerprint(), reference)
        XCTAssertEqual(try r.computeFingerprint(blockBytes: 7), reference, "streamed in row blocks")

        // The HDF5 layout as the spec describes it.
        let f = try File.open(p)
        let root = try f.root
        XCTAssertEqual(try root.stringAttribute("encoding-type"), "locus")
        XCTAssertEqual(try root.stringAttribute("encoding-version"), LocusSpec.encodingVersion)
        XCTAssertEqual(try root.stringAttribute("kind"), "checkpoint")
        XCTAssertEqual(try root.int64Attribute("tensor-count"), Int64(tensors.count))
        XCTAssertEqual(try root.int64Attribute("element-count"), Int64(tensors.reduce(0) { $0 + $1.count }))
        let created = try root.stringAttribute("created")
        XCTAssertNotNil(created.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"#, options: .regularExpression), created)
        let g = try root.openGroup("tensors")
        XCTAssertEqual(Set(try g.childNames()), Set(tensors.map { TensorName.linkName(for: $0.name) }))
        XCTAssertTrue(g.contains("%2E"))
        XCTAssertTrue(g.contains("%2F"))
        XCTAssertTrue(g.contains("%252F"))
        XCTAssertTrue(g.contains("100%25"))
        XCTAssertTrue(g.contains("model%2Fencoder%2Fw"))
        for t in tensors {
            let ds = try g.openDataset(TensorName.linkName(for: t.name))
            XCTAssertEqual(try ds.stringAttribute("dtype"), t.dtype.rawValue)
            XCTAssertTrue(ds.type.isEqual(to: try t.dtype.hdf5Type()), t.name)
            XCTAssertEqual(ds.shape, t.shape)
            XCTAssertEqual(ds.space.kind, t.shape.isEmpty ? .scalar : .simple)
            XCTAssertEqual(ds.creationProperties.layout, .contiguous, t.name)
            XCTAssertEqual(ds.creationProperties.filters, [], t.name)
            if t.count > 0 {
                let offset = try XCTUnwrap(ds.dataOffset, t.name)
                XCTAssertEqual(offset % 4096, 0, "\(t.name) at \(offset)")
            }
        }
        assertClean(p)
    }

    func testBoolBytesMustBeZeroOrOne() throws {
        let w = try CheckpointWriter(path: path("b.locus"))
        let e = expectLocusError(mentioning: path("b.locus")) {
            try [UInt8]([0, 1, 2]).withUnsafeBytes { try w.add(name: "flags", dtype: .bool, shape: [3], bytes: $0) }
        }
        XCTAssertEqual(e?.object, "/tensors/flags")
    }

    func testReadFloat32ConvertsHalfTypesAndFloat64() throws {
        let p = path("floats.locus")
        var rng = SplitMix64(seed: 3)
        let values = rng.floats(40, in: -300...300) + [0, -0.0, 1e-6, 65_504, -2.5e-5, 3.0e38]
        let doubles: [Double] = (0..<values.count).map { Double(values[$0]) + 1e-9 * Double($0) }
        let w = try CheckpointWriter(path: p)
        try w.add(name: "bf", values: values, shape: [values.count], dtype: .bfloat16)
        try w.add(name: "f16", values: values, shape: [2, values.count / 2], dtype: .float16)
        try w.add(name: "f32", values: values, shape: [values.count], dtype: .float32)
        try doubles.withUnsafeBytes { try w.add(name: "f64", dtype: .float64, shape: [values.count], bytes: $0) }
        try [Int32(1), 2].withUnsafeBytes { try w.add(name: "ints", dtype: .int32, shape: [2], bytes: $0) }
        try w.finish()

        let r = try CheckpointReader(path: p)
        let bf = try r.readFloat32(r.tensor(named: "bf")!)
        XCTAssertEqual(bf.map(\.bitPattern), values.map { HalfPrecision.float(fromBFloat16: HalfPrecision.bfloat16Bits($0)).bitPattern })
        let f16 = try r.readFloat32(r.tensor(named: "f16")!)
        XCTAssertEqual(f16.map(\.bitPattern), values.map { Float(Float16($0)).bitPattern })
        XCTAssertTrue(f16.last!.isInfinite, "3e38 does not fit a half")
        XCTAssertEqual(try r.readFloat32(r.tensor(named: "f32")!).map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertEqual(try r.readFloat32(r.tensor(named: "f64")!), doubles.map { Float($0) })
        // The stored bfloat16 bits are the library's RNE bits.
        let raw = try r.readRaw(r.tensor(named: "bf")!)
        let bits = stride(from: 0, to: raw.count, by: 2).map { UInt16(raw[$0]) | UInt16(raw[$0 + 1]) << 8 }
        XCTAssertEqual(bits, values.map(HalfPrecision.bfloat16Bits))
        let e = expectLocusError(mentioning: p) { _ = try r.readFloat32(r.tensor(named: "ints")!) }
        XCTAssertEqual(e?.object, "/tensors/ints")
        assertClean(p)
    }

    func testRowStreamedWritesEqualOneShot() throws {
        var rng = SplitMix64(seed: 11)
        let big = randomTensor("big", .float32, [7, 3], &rng)
        let scalar = randomTensor("s", .int64, [], &rng)
        let cube = randomTensor("cube", .bfloat16, [5, 2, 2], &rng)
        let oneShot = path("one.locus"), streamed = path("rows.locus")
        let fp1 = try writeCheckpoint(oneShot, [big, cube, scalar])

        let w = try CheckpointWriter(path: streamed)
        try w.beginTensor(name: "big", dtype: .float32, shape: [7, 3])
        for (start, rows) in [(0, 2), (2, 4), (6, 1)] {
            try Array(big.bytes[(start * 12)..<((start + rows) * 12)]).withUnsafeBytes { try w.writeRows($0) }
        }
        try w.beginTensor(name: "cube", dtype: .bfloat16, shape: [5, 2, 2])
        for r in 0..<5 { try Array(cube.bytes[(r * 8)..<((r + 1) * 8)]).withUnsafeBytes { try w.writeRows($0) } }
        try w.beginTensor(name: "s", dtype: .int64, shape: [])
        try scalar.bytes.withUnsafeBytes { try w.writeRows($0) }
        let fp2 = try w.finish()

        XCTAssertEqual(fp1, fp2)
        XCTAssertEqual(fp2, referenceFingerprint([big, cube, scalar]))
        let a = try CheckpointReader(path: oneShot), b = try CheckpointReader(path: streamed)
        XCTAssertEqual(a.tensors, b.tensors)
        for t in a.tensors { XCTAssertEqual(try a.readRaw(t), try b.readRaw(t), t.name) }
        var block = [UInt8](repeating: 0, count: 2 * 12)
        try block.withUnsafeMutableBytes { try b.readRows(b.tensor(named: "big")!, start: 3, count: 2, into: $0) }
        XCTAssertEqual(block, Array(big.bytes[36..<60]))
        assertClean(streamed)
    }

    func testRowStreamingRejectsPartialRowsExtraRowsAndIncompleteTensors() throws {
        let p = path("bad.locus")
        do {
            let w = try CheckpointWriter(path: p)
            try w.beginTensor(name: "m", dtype: .float32, shape: [2, 3])
            let e = expectLocusError(mentioning: p) { try [UInt8](repeating: 0, count: 8).withUnsafeBytes { try w.writeRows($0) } }
            XCTAssertEqual(e?.object, "/tensors/m")
        }
        XCTAssertEqual(try listing(), [])
        do {
            let w = try CheckpointWriter(path: p)
            try w.beginTensor(name: "m", dtype: .float32, shape: [2, 3])
            expectLocusError(mentioning: p) { try [UInt8](repeating: 0, count: 36).withUnsafeBytes { try w.writeRows($0) } }
        }
        XCTAssertEqual(try listing(), [])
        do {
            let w = try CheckpointWriter(path: p)
            try w.beginTensor(name: "m", dtype: .float32, shape: [2, 3])
            try [UInt8](repeating: 0, count: 12).withUnsafeBytes { try w.writeRows($0) }
            let e = expectLocusError(mentioning: p) { try w.finish() }
            XCTAssertEqual(e?.object, "/tensors/m")
        }
        XCTAssertEqual(try listing(), [])
    }

    func testFingerprintIsIndependentOfInsertionOrder() throws {
        let tensors = sampleTensors(seed: 5)
        let inOrder = tensors.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
        let fpSorted = try writeCheckpoint(path("sorted.locus"), inOrder)
        let fpReversed = try writeCheckpoint(path("reversed.locus"), inOrder.reversed())
        var rng = SplitMix64(seed: 77)
        let fpShuffled = try writeCheckpoint(path("shuffled.locus"), tensors.shuffled(using: &rng))
        let reference = referenceFingerprint(tensors)
        XCTAssertEqual(fpSorted, reference)
        XCTAssertEqual(fpReversed, reference)
        XCTAssertEqual(fpShuffled, reference)
        for name in ["sorted.locus", "reversed.locus", "shuffled.locus"] {
            let r = try CheckpointReader(path: path(name))
            XCTAssertEqual(try r.fingerprint, reference, name)
            XCTAssertEqual(try r.computeFingerprint(), reference, name)
            assertClean(path(name))
        }
    }

    func testFingerprintChangesWithAnyByteNameDTypeOrShape() throws {
        var rng = SplitMix64(seed: 8)
        let base = [randomTensor("a", .int16, [2, 3], &rng), randomTensor("b", .float32, [4], &rng)]
        var variants: [(String, [RawTensor])] = []
        var v = base; v[0].bytes[5] ^= 0x01; variants.append(("one byte", v))
        v = base; v[1].bytes[0] ^= 0x80; variants.append(("another byte", v))
        v = base; v[1].name = "c"; variants.append(("name", v))
        v = base; v[0].name = "a "; variants.append(("name suffix", v))
        v = base; v[0].dtype = .uint16; variants.append(("dtype int16 → uint16", v))
        v = base; v[0].dtype = .float16; variants.append(("dtype int16 → float16", v))
        v = base; v[0].dtype = .bfloat16; variants.append(("dtype int16 → bfloat16", v))
        v = base; v[0].shape = [3, 2]; variants.append(("shape [2,3] → [3,2]", v))
        v = base; v[0].shape = [6]; variants.append(("shape [2,3] → [6]", v))
        v = base; v[1].shape = [4, 1]; variants.append(("shape [4] → [4,1]", v))

        let baseFP = try writeCheckpoint(path("base.locus"), base)
        XCTAssertEqual(baseFP, referenceFingerprint(base))
        var seen: Set<String> = [baseFP]
        for (i, (what, tensors)) in variants.enumerated() {
            let fp = try writeCheckpoint(path("v\(i).locus"), tensors)
            XCTAssertEqual(fp, referenceFingerprint(tensors), what)
            XCTAssertNotEqual(fp, baseFP, what)
            XCTAssertTrue(seen.insert(fp).inserted, "\(what) collides with another variant")
            XCTAssertEqual(try CheckpointReader(path: path("v\(i).locus")).computeFingerprint(), fp, what)
        }
    }

    func testMetadataAndArchitectureAreOptional() throws {
        let p = path("plain.locus")
        try writeCheckpoint(p, [RawTensor(name: "x", dtype: .uint8, shape: [1], bytes: [7])])
        let r = try CheckpointReader(path: p)
        XCTAssertNil(try r.metadata())
        XCTAssertNil(try r.architecture())
        let empty = path("empty-meta.locus")
        try writeCheckpoint(empty, [], metadata: [:])
        XCTAssertEqual(try CheckpointReader(path: empty).metadata(), [:])
        XCTAssertEqual(try CheckpointReader(path: empty).tensors, [])
        XCTAssertEqual(try CheckpointReader(path: empty).fingerprint, referenceFingerprint([]))
        assertClean(empty)
    }

    func testProvenanceRoundTrip() throws {
        let p = path("prov.locus")
        let prov = Provenance(command: ["locus", "train", "--lr", "0.1"],
                              inputs: [.init(role: "base", path: "/x/base.locus", fingerprint: "sha256:" + String(repeating: "0", count: 64)),
                                       .init(role: "data", path: "d.locus", fingerprint: nil)],
                              parameters: ["lr": .number(0.1), "epochs": .integer(3), "name": .string("run"), "flags": .array([.bool(true), .null])])
        let w = try CheckpointWriter(path: p, provenance: prov)
        try w.finish()
        XCTAssertEqual(try ArtifactFile.open(p).header.provenance, prov)
        let none = path("noprov.locus")
        try CheckpointWriter(path: none, provenance: nil).finish()
        XCTAssertNil(try ArtifactFile.open(none).header.provenance)
    }

    /// Tensor names are PyTorch state-dict keys, verbatim (spec §1.3): two names that differ in
    /// their bytes are two tensors, even when Unicode considers them canonically equivalent.
    func testCanonicallyEquivalentNamesAreDistinctTensors() throws {
        let p = path("nfc.locus")
        let nfc = RawTensor(name: "caf\u{E9}", dtype: .uint8, shape: [1], bytes: [1])
        let nfd = RawTensor(name: "cafe\u{301}", dtype: .uint8, shape: [1], bytes: [2])
        XCTAssertTrue(TensorName.byteOrder(nfd.name, nfc.name))
        let fp = try writeCheckpoint(p, [nfd, nfc])   // in name order: only the names are under test
        XCTAssertEqual(fp, referenceFingerprint([nfc, nfd]))
        let r = try CheckpointReader(path: p)
        XCTAssertEqual(r.tensors.count, 2)
        XCTAssertEqual(try r.readRaw(try XCTUnwrap(r.tensor(named: nfc.name))), [1])
        XCTAssertEqual(try r.readRaw(try XCTUnwrap(r.tensor(named: nfd.name))), [2])
        assertClean(p)
    }
}
