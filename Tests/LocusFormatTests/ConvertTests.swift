import Foundation
import HDF5
import LocusFormat
import SafeTensors
import LocusTestSupport
import XCTest

final class ConvertTests: LocusTestCase {

    /// Writes a safetensors file holding `tensors` in the given order.
    private func writeSafeTensors(_ p: String, _ tensors: [RawTensor], metadata: [String: String]? = nil,
                                  dtypes: [String: SafeTensorsDType] = [:]) throws {
        var w = try SafeTensorsWriter(path: p, tensors: tensors.map {
            .init(name: $0.name, dtype: dtypes[$0.name] ?? $0.dtype.safeTensors, shape: $0.shape)
        }, metadata: metadata)
        for t in tensors where !t.bytes.isEmpty { try w.write(t.bytes) }
        try w.finish(fsync: false)
    }

    private func sampleTensors() -> [RawTensor] {
        var rng = SplitMix64(seed: 201)
        var list = LocusDType.allCases.enumerated().map { i, d in randomTensor("model.layers.\(i).\(d.rawValue)", d, [5, 1 + i % 4], &rng) }
        list.append(randomTensor("scalar", .float64, [], &rng))
        list.append(randomTensor("empty", .bfloat16, [0, 3], &rng))
        list.append(randomTensor("a/b%c", .float32, [7], &rng))
        list.append(randomTensor(".", .uint8, [3], &rng))
        return list.reversed()   // not in name order in the source file
    }

    func testSafeTensorsToCheckpointToSafeTensorsIsBitExact() throws {
        let source = path("in.safetensors"), ckpt = path("model.locus"), back = path("out.safetensors")
        let tensors = sampleTensors()
        let metadata = ["format": "pt", "note": "kept verbatim ✓"]
        try writeSafeTensors(source, tensors, metadata: metadata)

        var options = Conversion.ImportOptions()
        options.blockBytes = 24   // exercise row-block streaming
        try Conversion.importSafeTensors(from: source, to: ckpt, options: options)
        let r = try CheckpointReader(path: ckpt)
        XCTAssertEqual(try r.fingerprint, referenceFingerprint(tensors))
        XCTAssertEqual(try r.metadata(), metadata)
        for t in tensors {
            let d = try XCTUnwrap(r.tensor(named: t.name))
            XCTAssertEqual(d.dtype, t.dtype)
            XCTAssertEqual(d.shape, t.shape)
            XCTAssertEqual(try r.readRaw(d), t.bytes, t.name)
        }
        let prov = try XCTUnwrap(r.artifact.header.provenance)
        XCTAssertTrue(prov.inputs.contains { $0.role == "source" && $0.path == source })
        assertClean(ckpt)

        try Conversion.exportSafeTensors(from: ckpt, to: back, blockBytes: 40)
        let st = try SafeTensorsReader(path: back)
        XCTAssertEqual(st.metadata, metadata)
        XCTAssertEqual(Set(st.entries.map(\.name)), Set(tensors.map(\.name)))
        let original = try SafeTensorsReader(path: source)
        for t in tensors {
            let e = try XCTUnwrap(st.entry(named: t.name))
            XCTAssertEqual(e.dtype, t.dtype.safeTensors, t.name)
            XCTAssertEqual(e.shape, t.shape, t.name)
            XCTAssertEqual(try st.readBytes(e), t.bytes, t.name)
            XCTAssertEqual(try st.readBytes(e), try original.readBytes(named: t.name), t.name)
        }
        // And back again: same fingerprint.
        try Conversion.importSafeTensors(from: back, to: path("again.locus"))
        XCTAssertEqual(try CheckpointReader(path: path("again.locus")).fingerprint, try r.fingerprint)
        XCTAssertEqual(Set(try listing()), ["in.safetensors", "model.locus", "out.safetensors", "again.locus"])
    }

    func testNoMetadataStaysNoMetadata() throws {
        let source = path("in.safetensors"), ckpt = path("m.locus"), back = path("out.safetensors")
        try writeSafeTensors(source, [RawTensor(name: "x", dtype: .int32, shape: [2], bytes: [1, 0, 0, 0, 2, 0, 0, 0])])
        try Conversion.importSafeTensors(from: source, to: ckpt)
        XCTAssertNil(try CheckpointReader(path: ckpt).metadata())
        try Conversion.exportSafeTensors(from: ckpt, to: back)
        XCTAssertNil(try SafeTensorsReader(path: back).metadata)
    }

    // MARK: Derived kinds against a base

    private func makeBase() throws -> (path: String, fingerprint: String) {
        let source = path("base.safetensors"), p = path("base.locus")
        var rng = SplitMix64(seed: 202)
        try writeSafeTensors(source, [randomTensor("enc/w", .float32, [4, 5], &rng), randomTensor("enc.b", .float32, [5], &rng),
                                      randomTensor("head", .bfloat16, [3, 2], &rng)])
        try Conversion.importSafeTensors(from: source, to: p)
        return (p, try CheckpointReader(path: p).fingerprint)
    }

    func testImportScoresMaskAndTaskVectorAgainstABase() throws {
        let base = try makeBase()
        var rng = SplitMix64(seed: 203)

        // Scores.
        let s1 = rng.floats(20, in: 0...3), s2 = rng.floats(5, in: 0...1)
        try writeSafeTensors(path("scores.safetensors"), [RawTensor(name: "enc/w", dtype: .float32, shape: [4, 5], bytes: floatBytes(s1)),
                                                          RawTensor(name: "enc.b", dtype: .float32, shape: [5], bytes: floatBytes(s2))])
        var o = Conversion.ImportOptions()
        o.kind = .scores; o.basePath = base.path; o.estimator = "fisher-empirical"; o.samples = 64; o.draws = 2; o.reduction = .mean
        try Conversion.importSafeTensors(from: path("scores.safetensors"), to: path("scores.locus"), options: o)
        let sr = try ScoresReader(path: path("scores.locus"))
        XCTAssertEqual(sr.info, ScoresInfo(baseFingerprint: base.fingerprint, estimator: "fisher-empirical", samples: 64, draws: 2, reduction: .mean))
        XCTAssertEqual(try sr.read(sr.tensor(named: "enc/w")!), s1)
        XCTAssertEqual(try sr.read(sr.tensor(named: "enc.b")!), s2)
        XCTAssertTrue(sr.artifact.header.provenance?.inputs.contains { $0.role == "base" && $0.fingerprint == base.fingerprint } ?? false)
        assertClean(path("scores.locus"))

        // Mask (BOOL and U8 0/1).
        let bits = (0..<20).map { _ in rng.next() & 1 == 1 }
        try writeSafeTensors(path("mask.safetensors"), [RawTensor(name: "enc/w", dtype: .bool, shape: [4, 5], bytes: bits.map { $0 ? 1 : 0 }),
                                                        RawTensor(name: "head", dtype: .uint8, shape: [3, 2], bytes: [1, 0, 0, 1, 1, 1])])
        o = Conversion.ImportOptions(); o.kind = .mask; o.basePath = base.path; o.absentTensors = .trainable
        try Conversion.importSafeTensors(from: path("mask.safetensors"), to: path("mask.locus"), options: o)
        let mr = try MaskReader(path: path("mask.locus"))
        XCTAssertEqual(mr.baseFingerprint, base.fingerprint)
        XCTAssertEqual(mr.absentTensors, .trainable)
        XCTAssertEqual(try mr.read(mr.tensor(named: "enc/w")!), bits)
        XCTAssertEqual(try mr.read(mr.tensor(named: "head")!), [true, false, false, true, true, true])
        assertClean(path("mask.locus"))

        // Task vector with float32, float16 and bfloat16 values; dtypes are kept.
        var dense = [Float](repeating: 0, count: 20)
        dense[3] = 0.5; dense[17] = -1.25
        let half: [Float] = [0.5, 0, -2, 0, 0.125]
        let bf: [Float] = [0, 0, 1, 0, -3, 0]
        let halfBytes = half.withUnsafeBufferPointer { HalfPrecision.encode($0, as: .float16) }
        let bfBytes = bf.withUnsafeBufferPointer { HalfPrecision.encode($0, as: .bfloat16) }
        try writeSafeTensors(path("tv.safetensors"), [RawTensor(name: "enc/w", dtype: .float32, shape: [4, 5], bytes: floatBytes(dense)),
                                                      RawTensor(name: "enc.b", dtype: .float16, shape: [5], bytes: halfBytes),
                                                      RawTensor(name: "head", dtype: .bfloat16, shape: [3, 2], bytes: bfBytes)])
        o = Conversion.ImportOptions(); o.kind = .taskVector; o.basePath = base.path
        try Conversion.importSafeTensors(from: path("tv.safetensors"), to: path("tv.locus"), options: o)
        let tr = try TaskVectorReader(path: path("tv.locus"))
        XCTAssertEqual(tr.baseFingerprint, base.fingerprint)
        XCTAssertEqual(tr.scale, 1)
        XCTAssertEqual(tr.tensor(named: "enc/w")?.dtype, .float32)
        XCTAssertEqual(tr.tensor(named: "enc.b")?.dtype, .float16)
        XCTAssertEqual(tr.tensor(named: "head")?.dtype, .bfloat16)
        XCTAssertEqual(try tr.readDense(tr.tensor(named: "enc/w")!), dense)
        XCTAssertEqual(try tr.readDense(tr.tensor(named: "enc.b")!), half)
        XCTAssertEqual(try tr.readDense(tr.tensor(named: "head")!), bf)
        XCTAssertEqual(tr.tensor(named: "enc/w")?.nnz, 2)
        assertClean(path("tv.locus"))

        // Exporting the task vector gives dense tensors of the value dtype, bit-exact.
        try Conversion.exportSafeTensors(from: path("tv.locus"), to: path("tv-out.safetensors"))
        let back = try SafeTensorsReader(path: path("tv-out.safetensors"))
        XCTAssertEqual(try back.readBytes(named: "enc.b"), halfBytes)
        XCTAssertEqual(try back.readBytes(named: "head"), bfBytes)
        XCTAssertEqual(back.metadata?["locus.kind"], "task-vector")
        XCTAssertEqual(back.metadata?["locus.base-fingerprint"], base.fingerprint)
    }

    func testMismatchWithTheBaseListsEveryProblemAndWritesNothing() throws {
        let base = try makeBase()
        try writeSafeTensors(path("bad.safetensors"), [
            RawTensor(name: "enc/w", dtype: .float32, shape: [5, 4], bytes: floatBytes([Float](repeating: 1, count: 20))),
            RawTensor(name: "extra.weight", dtype: .float32, shape: [1], bytes: floatBytes([1])),
            RawTensor(name: "enc.b", dtype: .float32, shape: [5], bytes: floatBytes([1, 1, 1, 1, 1])),
        ])
        let before = try listing()
        for kind in [ArtifactKind.scores, .taskVector] {
            var o = Conversion.ImportOptions()
            o.kind = kind; o.basePath = base.path; o.estimator = "talos"; o.samples = 1
            let e = expectLocusError(mentioning: path("bad.safetensors")) {
                try Conversion.importSafeTensors(from: self.path("bad.safetensors"), to: self.path("out.locus"), options: o)
            }
            let message = e?.message ?? ""
            XCTAssertTrue(message.contains("2 tensor(s)"), message)
            XCTAssertTrue(message.contains("'enc/w' has shape [5, 4], the base has [4, 5]"), message)
            XCTAssertTrue(message.contains("'extra.weight' is not in the base"), message)
            XCTAssertFalse(message.contains("'enc.b'"), message)
            XCTAssertEqual(try listing(), before)
        }
        // A mask of the wrong dtype is refused too, naming the tensor.
        try writeSafeTensors(path("fmask.safetensors"), [RawTensor(name: "enc.b", dtype: .float32, shape: [5], bytes: floatBytes([1, 0, 1, 0, 1]))])
        var o = Conversion.ImportOptions(); o.kind = .mask; o.basePath = base.path
        let e = expectLocusError(mentioning: path("fmask.safetensors")) {
            try Conversion.importSafeTensors(from: self.path("fmask.safetensors"), to: self.path("out.locus"), options: o)
        }
        XCTAssertTrue(e?.object?.contains("enc.b") ?? false)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.locus")))
        // No base at all.
        o.basePath = nil
        LocusTestSupport.expectError(RemediableError.self, mentioning: [path("fmask.safetensors")]) {
            try Conversion.importSafeTensors(from: self.path("fmask.safetensors"), to: self.path("out.locus"), options: o)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("out.locus")))
    }

    func testFP8TensorIsRefusedNamingIt() throws {
        let source = path("fp8.safetensors")
        try writeSafeTensors(source, [RawTensor(name: "ok", dtype: .float32, shape: [1], bytes: floatBytes([1])),
                                      RawTensor(name: "quant/w8", dtype: .uint8, shape: [4], bytes: [1, 2, 3, 4])],
                             dtypes: ["quant/w8": .F8_E4M3])
        let e = expectLocusError(mentioning: source) { try Conversion.importSafeTensors(from: source, to: self.path("out.locus")) }
        XCTAssertTrue(e?.description.contains("quant/w8") ?? false, "\(String(describing: e))")
        XCTAssertTrue(e?.message.contains("F8_E4M3") ?? false, "\(String(describing: e))")
        XCTAssertEqual(try listing(), ["fp8.safetensors"])
    }

    func testExportOfEveryKind() throws {
        let base = try makeBase()
        let sp = path("s.locus")
        let sw = try ScoresWriter(path: sp, info: .init(baseFingerprint: base.fingerprint, estimator: "talos", samples: 3))
        try sw.add(name: "enc.b", shape: [5], values: [1, 2, 3, 4, 5])
        try sw.finish()
        try Conversion.exportSafeTensors(from: sp, to: path("s.safetensors"))
        let s = try SafeTensorsReader(path: path("s.safetensors"))
        XCTAssertEqual(try s.readBytes(named: "enc.b"), floatBytes([1, 2, 3, 4, 5]))
        XCTAssertEqual(s.metadata?["locus.estimator"], "talos")
        XCTAssertEqual(s.metadata?["locus.samples"], "3")

        let mp = path("m.locus")
        let mw = try MaskWriter(path: mp, baseFingerprint: base.fingerprint)
        try mw.add(name: "head", shape: [3, 2], bits: [true, false, true, false, false, true])
        try mw.finish()
        try Conversion.exportSafeTensors(from: mp, to: path("m.safetensors"))
        let m = try SafeTensorsReader(path: path("m.safetensors"))
        XCTAssertEqual(m.entry(named: "head")?.dtype, .BOOL)
        XCTAssertEqual(try m.readBytes(named: "head"), [1, 0, 1, 0, 0, 1])
        XCTAssertEqual(m.metadata?["locus.absent-tensors"], "frozen")

        let dp = path("d.locus")
        try DatasetArtifact.write(LabelledData(inputs: .uint8([1, 2]), shape: [2, 1], labels: [0, 0], classes: ["a"], splits: [:]), to: dp)
        expectLocusError(mentioning: dp) { try Conversion.exportSafeTensors(from: dp, to: self.path("d.safetensors")) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path("d.safetensors")))
    }
}
