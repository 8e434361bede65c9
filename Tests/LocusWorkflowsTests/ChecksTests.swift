import Foundation
import LocusEngine
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusWorkflows

/// The one architecture decoder and checker, mask ↔ parameter matching, and `score --append`
/// compatibility.
final class ChecksTests: WorkflowTestCase {
    func writeCheckpoint(_ file: String, arch: Architecture?, tensors: [(String, [Float], [Int])], int32: Set<String> = []) throws {
        let w = try CheckpointWriter(path: file, architecture: try arch?.json())
        for (name, values, shape) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) {
            if int32.contains(name) {
                try values.map { Int32($0) }.withUnsafeBytes { try w.add(name: name, dtype: .int32, shape: shape, bytes: $0) }
            } else {
                try w.add(name: name, values: values, shape: shape)
            }
        }
        _ = try w.finish()
    }

    /// Every problem found at once, in parameter order, with expected and found; the same from
    /// `Model.load` (an error) and from `ArchitectureFiles.findings` (one finding each).
    func testMismatchesAreAllListedTheSameWayEverywhere() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        var tensors = model.parameters.map { ($0.name, $0.value.data, $0.value.shape) }
        tensors.removeAll { $0.0 == "layers.1.bias" }                                     // missing
        tensors = tensors.map { $0.0 == "heads.default.weight" ? ($0.0, [Float](repeating: 0, count: 8), [2, 4]) : $0 }   // shape
        tensors.append(("unused", [1], [1]))                                             // extra: fine
        let file = path("bad.h5")
        try writeCheckpoint(file, arch: model.architecture, tensors: tensors, int32: ["layers.1.weight"])   // dtype
        let reader = try CheckpointReader(path: file)
        let found = ArchitectureCheck.mismatches(model, in: reader)
        XCTAssertEqual(found.map(\.parameter), ["layers.1.weight", "layers.1.bias", "heads.default.weight"])
        XCTAssertEqual(found.map(\.problem), [.dtype(found: "int32"), .missing, .shape(found: [2, 4])])
        XCTAssertEqual(found[2].expectedShape, [2, 3])
        XCTAssertEqual(found[2].object, reader.tensor(named: "heads.default.weight")!.objectPath)
        XCTAssertNil(found[1].object)
        let e = expectLocusError([file, "3 parameter(s)", "layers.1.bias", "[2, 4]", "[2, 3]", "int32"]) { _ = try Model.load(file) }
        XCTAssertEqual(e?.object, reader.tensor(named: "layers.1.weight")!.objectPath)
        let findings = ArchitectureFiles.findings(file)
        XCTAssertEqual(findings.map(\.message), found.map(\.description))
        XCTAssertEqual(findings.map(\.object), [found[0].object!, "/tensors", found[2].object!])
        // convert --architecture: the same problems, naming the source.
        expectLocusError(["src.safetensors", "does not fit", "missing layers.1.bias"]) {
            _ = try ArchitectureFiles.checked(file, against: reader, sourcePath: "src.safetensors")
        }
        // A good file: no problems, extra tensors reported as unused.
        let good = path("good.h5")
        try writeCheckpoint(good, arch: model.architecture, tensors: model.parameters.map { ($0.name, $0.value.data, $0.value.shape) } + [("unused", [1], [1])])
        XCTAssertEqual(ArchitectureFiles.findings(good), [])
        let checked = try ArchitectureFiles.checked(good, against: try CheckpointReader(path: good), sourcePath: good)
        XCTAssertEqual(checked.unused, ["unused"])
        XCTAssertEqual(try ArchitectureDescription.decode(checked.json, file: "x"), model.architecture)
    }

    /// One decoder: JSON files and checkpoints give the same description; bad text names the file,
    /// the object and the key path; a description that does not build is refused at decoding.
    func testOneDecoder() throws {
        let arch = Architecture.mlp(input: [4], hidden: [3], classes: 2)
        let json = path("arch.json")
        try arch.json().write(toFile: json, atomically: true, encoding: .utf8)
        XCTAssertEqual(try ArchitectureDescription.load(json), arch)
        let ck = path("ck.h5")
        try Model(arch, seed: 1).save(ck)
        XCTAssertEqual(try ArchitectureDescription.load(ck), arch)
        XCTAssertEqual(try ArchitectureDescription.stored(in: try openCheckpoint(path: ck)), arch)
        expectLocusError(["x.json", "/architecture", "missing key 'layers'"]) {
            _ = try ArchitectureDescription.decode("{\"input\": [4]}", file: "x.json")
        }
        expectLocusError(["x.json", "input shape"]) {
            _ = try ArchitectureDescription.decode("{\"input\": [0], \"layers\": []}", file: "x.json", object: nil)
        }
        let plain = path("plain.h5")
        try writeCheckpoint(plain, arch: nil, tensors: [("w", [1], [1])])
        expectLocusError([plain, "/architecture", "no model description"]) { _ = try ArchitectureDescription.load(plain) }
        XCTAssertNil(try ArchitectureDescription.stored(in: try openCheckpoint(path: plain)))
        XCTAssertEqual(ArchitectureFiles.findings(plain), [])
    }

    /// Mask ↔ parameter matching: unknown and misshapen mask tensors are all reported; absent
    /// tensors follow the mask's rule; the task's head trains only when asked.
    func testMaskBinding() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        func mask(_ name: String, absent: AbsentTensors, _ tensors: [(String, [Bool], [Int])]) throws -> MaskReader {
            let w = try MaskWriter(path: path(name), baseFingerprint: "x", absentTensors: absent)
            for (n, bits, shape) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) { try w.add(name: n, shape: shape, bits: bits) }
            try w.finish()
            return try MaskReader(path: path(name))
        }
        let bad = try mask("bad.h5", absent: .frozen, [("nope", [true], [1]), ("layers.1.bias", [true, false], [2]), ("layers.1.weight", Array(repeating: true, count: 12), [3, 4])])
        expectLocusError([path("bad.h5"), "2 mask tensor(s)", "'nope' is not a parameter", "'layers.1.bias' has shape [2], the parameter [3]"]) {
            _ = try MaskBinding.bind(bad, to: model, modelPath: "m.h5", head: "default", trainHead: false)
        }
        let bits = (0..<12).map { $0 % 3 == 0 }
        let frozen = try mask("frozen.h5", absent: .frozen, [("layers.1.weight", bits, [3, 4]), ("heads.default.weight", [true, true, true, true, true, true], [2, 3])])
        let b = try MaskBinding.bind(frozen, to: model, modelPath: "m.h5", head: "default", trainHead: false)
        XCTAssertEqual(b.masks.map(\.0.name), ["layers.1.weight"])
        XCTAssertEqual(b.ones, 4)
        let withHead = try MaskBinding.bind(frozen, to: model, modelPath: "m.h5", head: "default", trainHead: true)
        XCTAssertEqual(withHead.masks.map(\.0.name), ["heads.default.weight", "layers.1.weight"])
        let open = try mask("open.h5", absent: .trainable, [("layers.1.weight", bits, [3, 4])])
        let o = try MaskBinding.bind(open, to: model, modelPath: "m.h5", head: "default", trainHead: false)
        XCTAssertEqual(Set(o.masks.map(\.0.name)), ["layers.1.weight", "layers.1.bias"])
        XCTAssertEqual(o.ones, 4 + 3)
        expectLocusError(["m.h5", "nohead"]) { _ = try MaskBinding.bind(open, to: model, modelPath: "m.h5", head: "nohead", trainHead: false) }
    }

    /// `score --append` adds to a file only when estimator, model, draws, reduction and tensors agree.
    func testScoresAppendCompatibility() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        let params = Scorer.defaultParameters(model)
        let file = path("s.h5")
        let w = try ScoresWriter(path: file, info: .init(baseFingerprint: "fp", estimator: "talos", samples: 7, draws: 1, reduction: .sum))
        for p in params.sorted(by: { TensorName.byteOrder($0.name, $1.name) }) {
            try w.add(name: p.name, shape: p.value.shape, values: (0..<p.value.count).map { Float($0) })
        }
        try w.finish()
        let old = try ScoresReader(path: file)
        let r = try ScoresAppend.resume(from: old, estimator: "talos", fingerprint: "fp", model: "m.h5", draws: 1, parameters: params)
        XCTAssertEqual(r.samples, 7)
        XCTAssertEqual(r.sums.map(\.count), params.map(\.value.count))
        XCTAssertEqual(r.sums[0], (0..<params[0].value.count).map { Float($0) })
        expectLocusError([file, "/@estimator", "fisher-mc"]) {
            _ = try ScoresAppend.resume(from: old, estimator: "fisher-mc", fingerprint: "fp", model: "m.h5", draws: 1, parameters: params)
        }
        expectLocusError([file, "/@base-fingerprint", "m.h5"]) {
            _ = try ScoresAppend.resume(from: old, estimator: "talos", fingerprint: "other", model: "m.h5", draws: 1, parameters: params)
        }
        expectLocusError([file, "1 draws"]) {
            _ = try ScoresAppend.resume(from: old, estimator: "talos", fingerprint: "fp", model: "m.h5", draws: 4, parameters: params)
        }
        expectLocusError([file, "different set of tensors"]) {
            _ = try ScoresAppend.resume(from: old, estimator: "talos", fingerprint: "fp", model: "m.h5", draws: 1, parameters: Array(params.dropLast()))
        }
    }

    /// compare: two masks give their Jaccard index and a heatmap; mixed kinds are refused naming the odd file.
    func testCompareRequest() throws {
        for (name, bits) in [("a.h5", [true, true, false, false]), ("b.h5", [true, false, true, false])] {
            let w = try MaskWriter(path: path(name), baseFingerprint: "x")
            try w.add(name: "w", shape: [4], bits: bits)
            try w.finish()
        }
        var r = CompareRequest(files: [path("a.h5"), path("b.h5")])
        r.heatmap = path("h.svg")
        XCTAssertEqual(r.labels, ["a", "b"])
        guard case .masks(let m) = try r.execute() else { return XCTFail("not a mask report") }
        XCTAssertEqual(m.jaccard[0][1], 1.0 / 3.0, accuracy: 1e-12)   // |{0}| / |{0, 1, 2}|
        XCTAssertTrue(try String(contentsOfFile: path("h.svg"), encoding: .utf8).contains("Jaccard"))
        let tv = try TaskVectorWriter(path: path("t.h5"), baseFingerprint: "x")
        try tv.add(name: "w", shape: [4], dense: [0, 1, 0, 0])
        try tv.finish()
        expectLocusError([path("t.h5"), "task-vector", "masks only"]) { _ = try CompareRequest(files: [path("a.h5"), path("t.h5")]).execute() }
        expectRequestError("files", "at least two") { _ = try CompareRequest(files: [path("a.h5")]).execute() }
    }
}
