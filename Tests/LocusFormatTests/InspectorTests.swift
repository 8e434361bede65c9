import Foundation
import HDF5
import LocusFormat
import LocusRender
import LocusTestSupport
import XCTest

final class InspectorTests: LocusTestCase {

    private func fileSize(_ p: String) throws -> Int { (try FileManager.default.attributesOfItem(atPath: p)[.size] as? Int) ?? -1 }

    private func assertCommon(_ r: InspectReport, _ p: String, kind: String, file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(r.path, p, file: file, line: line)
        XCTAssertEqual(r.kind, kind, file: file, line: line)
        XCTAssertEqual(r.encodingVersion, LocusSpec.encodingVersion, file: file, line: line)
        XCTAssertEqual(r.producer, LocusSpec.producer, file: file, line: line)
        XCTAssertNotNil(r.created.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"#, options: .regularExpression), r.created, file: file, line: line)
        XCTAssertEqual(r.fileBytes, try fileSize(p), file: file, line: line)
        XCTAssertEqual(r.totals.tensorCount, r.tensors.count, file: file, line: line)
        XCTAssertEqual(r.totals.count, r.tensors.reduce(0) { $0 + $1.count }, file: file, line: line)
        XCTAssertEqual(r.totals.logicalBytes, r.tensors.reduce(0) { $0 + $1.logicalBytes }, file: file, line: line)
        XCTAssertEqual(r.totals.bytesOnDisk, r.tensors.reduce(0) { $0 + $1.bytesOnDisk }, file: file, line: line)
        // Renderings work and JSON parses.
        XCTAssertFalse(InspectText.report(r).isEmpty, file: file, line: line)
        let json = try Inspector.json(r)
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        XCTAssertEqual(object?["kind"] as? String, kind, file: file, line: line)
    }

    func testCheckpointReport() throws {
        let p = path("c.locus")
        let w = try CheckpointWriter(path: p, metadata: ["format": "pt"])
        try w.add(name: "h", values: [0.5, 1.5], shape: [2], dtype: .bfloat16)
        try [Int64(7)].withUnsafeBytes { try w.add(name: "step", dtype: .int64, shape: [], bytes: $0) }
        try w.add(name: "w", values: [1, -2, 3, 4, 5, 6], shape: [2, 3])
        let fp = try w.finish()

        let r = try Inspector.inspect(p)
        try assertCommon(r, p, kind: "checkpoint")
        XCTAssertEqual(r.fingerprint, fp)
        XCTAssertNil(r.baseFingerprint)
        XCTAssertEqual(r.metadata, ["format": "pt"])
        XCTAssertEqual(r.tensors.map(\.name), ["h", "step", "w"])
        XCTAssertEqual(r.tensors.map(\.shape), [[2], [], [2, 3]])
        XCTAssertEqual(r.tensors.map(\.dtype), ["bfloat16", "int64", "float32"])
        XCTAssertEqual(r.tensors.map(\.count), [2, 1, 6])
        XCTAssertEqual(r.tensors.map(\.logicalBytes), [4, 8, 24])
        XCTAssertEqual(r.tensors.map(\.bytesOnDisk), [4, 8, 24])
        XCTAssertEqual(r.tensors.map(\.encoding), ["dense", "dense", "dense"])
        XCTAssertNil(r.tensors[2].min, "no values are read without stats")

        let s = try Inspector.inspect(p, stats: true)
        let wT = try XCTUnwrap(s.tensors.first { $0.name == "w" })
        XCTAssertEqual(wT.min, -2)
        XCTAssertEqual(wT.max, 6)
        XCTAssertEqual(try XCTUnwrap(wT.mean), 17.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(wT.l2Norm), (1.0 + 4 + 9 + 16 + 25 + 36).squareRoot(), accuracy: 1e-12)
        XCTAssertNil(s.tensors.first { $0.name == "step" }?.min, "integers get no float stats")

        let only = try Inspector.inspect(p, tensor: "h")
        XCTAssertEqual(only.tensors.map(\.name), ["h"])
        XCTAssertEqual(only.totals.tensorCount, 1)
        XCTAssertEqual(only.totals.logicalBytes, 4)

        let e = expectLocusError(mentioning: p) { _ = try Inspector.inspect(p, tensor: "nope") }
        XCTAssertEqual(e?.object, "/tensors")
        XCTAssertTrue(e?.message.contains("nope") ?? false)
    }

    func testScoresReport() throws {
        let p = path("s.locus")
        let v1: [Float] = [0.5, 0.1, 0.9, 0.3], v2: [Float] = [2, 4]
        let w = try ScoresWriter(path: p, info: .init(baseFingerprint: someFingerprint, estimator: "fisher-mc", samples: 9, draws: 3, reduction: .mean))
        try w.add(name: "a", shape: [2, 2], values: v1)
        try w.add(name: "b", shape: [2], values: v2)
        try w.finish()
        for stats in [false, true] {
            let r = try Inspector.inspect(p, stats: stats)
            try assertCommon(r, p, kind: "scores")
            XCTAssertEqual(r.baseFingerprint, someFingerprint)
            XCTAssertNil(r.fingerprint)
            XCTAssertEqual(r.estimator, "fisher-mc")
            XCTAssertEqual(r.samples, 9)
            XCTAssertEqual(r.draws, 3)
            XCTAssertEqual(r.reduction, "mean")
            XCTAssertEqual(r.tensors.map(\.name), ["a", "b"])
            assertClose(try XCTUnwrap(r.tensors[0].quantiles), referenceQuantiles(v1))
            assertClose(try XCTUnwrap(r.tensors[1].quantiles), referenceQuantiles(v2))
            XCTAssertEqual(try XCTUnwrap(r.totals.min), Double(Float(0.1)), accuracy: 1e-12)
            XCTAssertEqual(r.totals.max, 4)
            XCTAssertEqual(try XCTUnwrap(r.totals.sum), (v1 + v2).reduce(0.0) { $0 + Double($1) }, accuracy: 1e-9)
            XCTAssertEqual(r.tensors.map(\.logicalBytes), [16, 8])
        }
        let only = try Inspector.inspect(p, tensor: "b")
        XCTAssertEqual(only.tensors.map(\.name), ["b"])
        XCTAssertEqual(only.totals.min, 2)
        expectLocusError(mentioning: p) { _ = try Inspector.inspect(p, tensor: "c") }
    }

    func testMaskReport() throws {
        let p = path("m.locus")
        let w = try MaskWriter(path: p, baseFingerprint: someFingerprint, absentTensors: .trainable)
        try w.add(name: "x/y", shape: [10], bits: [true, true, false, false, false, false, false, false, false, true])
        try w.add(name: "z", shape: [2, 2], bits: [false, false, false, false])
        try w.finish()
        for stats in [false, true] {
            let r = try Inspector.inspect(p, stats: stats)
            try assertCommon(r, p, kind: "mask")
            XCTAssertEqual(r.absentTensors, "trainable")
            XCTAssertEqual(r.tensors.map(\.name), ["x/y", "z"])
            XCTAssertEqual(r.tensors.map(\.ones), [3, 0])
            XCTAssertEqual(r.tensors.map(\.density), [0.3, 0])
            XCTAssertEqual(r.tensors.map(\.encoding), ["packed-bits", "packed-bits"])
            XCTAssertEqual(r.tensors.map(\.logicalBytes), [2, 1])
            XCTAssertEqual(r.totals.ones, 3)
            XCTAssertEqual(try XCTUnwrap(r.totals.density), 3.0 / 14, accuracy: 1e-12)
        }
        XCTAssertEqual(try Inspector.inspect(p, tensor: "x/y").tensors.map(\.ones), [3])
        expectLocusError(mentioning: p) { _ = try Inspector.inspect(p, tensor: "x") }
    }

    func testTaskVectorReport() throws {
        let p = path("t.locus")
        var dense = [Float](repeating: 0, count: 1000)
        dense[10] = 3; dense[500] = -4
        let w = try TaskVectorWriter(path: p, baseFingerprint: someFingerprint, scale: 0.25)
        try w.add(name: "sparse", shape: [1000], dense: dense)
        try w.add(name: "full", shape: [2], dense: [1, 1], dtype: .float16)
        try w.finish()
        for stats in [false, true] {
            let r = try Inspector.inspect(p, stats: stats)
            try assertCommon(r, p, kind: "task-vector")
            XCTAssertEqual(r.scale, 0.25)
            XCTAssertEqual(r.baseFingerprint, someFingerprint)
            XCTAssertEqual(r.tensors.map(\.name), ["full", "sparse"])
            XCTAssertEqual(r.tensors.map(\.encoding), ["dense", "coo"])
            XCTAssertEqual(r.tensors.map(\.dtype), ["float16", "float32"])
            XCTAssertEqual(r.tensors.map(\.nnz), [2, 2])
            XCTAssertEqual(r.tensors.map(\.logicalBytes), [4, 4000])
            XCTAssertEqual(try XCTUnwrap(r.tensors[1].l2Norm), 5, accuracy: 1e-12)
            XCTAssertEqual(try XCTUnwrap(r.tensors[1].density), 0.002, accuracy: 1e-12)
            XCTAssertEqual(r.tensors[1].bytesOnDisk, 2 * (4 + 4), "coo: two uint32 indices and two float32 values")
            XCTAssertEqual(r.totals.nnz, 4)
            XCTAssertEqual(try XCTUnwrap(r.totals.l2Norm), (25.0 + 2).squareRoot(), accuracy: 1e-12)
            XCTAssertEqual(try XCTUnwrap(r.totals.density), 4.0 / 1002, accuracy: 1e-12)
        }
        XCTAssertEqual(try Inspector.inspect(p, tensor: "sparse").totals.nnz, 2)
        expectLocusError(mentioning: p) { _ = try Inspector.inspect(p, tensor: "Sparse") }
    }

    func testDatasetReport() throws {
        let p = path("d.locus")
        let data = LabelledData(inputs: .float32([Float](repeating: 0.5, count: 12)), shape: [4, 3], labels: [0, 1, 1, 0],
                                classes: ["neg", "pos"], splits: ["train": [0, 1, 2], "test": [3]],
                                normalization: .init(scale: 2, mean: [0.1, 0.2, 0.3], std: [1, 2, 3]))
        try DatasetArtifact.write(data, to: p)
        let r = try Inspector.inspect(p)
        try assertCommon(r, p, kind: "dataset")
        let d = try XCTUnwrap(r.dataset)
        XCTAssertEqual(d.inputShape, [4, 3])
        XCTAssertEqual(d.inputDtype, "float32")
        XCTAssertEqual(d.classes, ["neg", "pos"])
        XCTAssertEqual(d.splits, ["train": 3, "test": 1])
        XCTAssertEqual(d.normalization, data.normalization)
        XCTAssertEqual(r.tensors.count, 0)
    }

    func testProvenanceAppearsInTheReport() throws {
        let p = path("c.locus")
        let prov = Provenance(command: ["locus", "unit-test"], inputs: [.init(role: "source", path: "x.safetensors", fingerprint: nil)],
                              parameters: ["k": .integer(1)])
        try CheckpointWriter(path: p, provenance: prov).finish()
        let r = try Inspector.inspect(p)
        XCTAssertEqual(r.provenance, prov)
        XCTAssertTrue(InspectText.report(r).contains("locus unit-test"))
    }
}
