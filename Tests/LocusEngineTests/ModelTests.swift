import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusEngine

final class ModelTests: EngineTestCase {
    private func smallCNN() throws -> Architecture {
        try Architecture.lenet(input: [1, 12, 12], channels: [2, 3], hidden: [8], classes: 4, head: "digits",
                               classNames: ["a", "b", "c", "d"])
    }

    // MARK: construction and naming

    func testPresetsAndParameterNames() throws {
        let mlp = Architecture.mlp(input: [1, 4, 4], hidden: [8, 6], classes: 3)
        XCTAssertEqual(mlp.layers.map(\.type), ["flatten", "linear", "relu", "linear", "relu"])
        let m = try Model(mlp, seed: 0)
        XCTAssertEqual(m.parameters.map(\.name), ["layers.1.weight", "layers.1.bias", "layers.3.weight", "layers.3.bias",
                                                  "heads.default.weight", "heads.default.bias"])
        XCTAssertEqual(m.parameters.map(\.value.shape), [[8, 16], [8], [6, 8], [6], [3, 6], [3]])
        let cnn = try Model(try smallCNN(), seed: 0)
        XCTAssertEqual(cnn.parameters.map(\.name), ["layers.0.weight", "layers.0.bias", "layers.3.weight", "layers.3.bias",
                                                    "layers.7.weight", "layers.7.bias", "heads.digits.weight", "heads.digits.bias"])
        // 12 →(pad 2) 12 → pool 6 → conv5 2 → pool 1: 3·1·1 features.
        XCTAssertEqual(cnn.parameters.map(\.value.shape), [[2, 1, 5, 5], [2], [3, 2, 5, 5], [3], [8, 3], [8], [4, 8], [4]])
        XCTAssertEqual(try cnn.architecture.featureShape(), [8])
        // PyTorch's default init bounds: U(±1/√fan_in).
        for p in cnn.parameters {
            let fanIn = p.name.hasPrefix("heads") ? 8 : (p.name.hasPrefix("layers.0") ? 25 : (p.name.hasPrefix("layers.3") ? 50 : 3))
            let bound = 1 / Float(fanIn).squareRoot()
            XCTAssertTrue(p.value.data.allSatisfy { abs($0) <= bound }, "\(p.name) outside ±\(bound)")
        }
        // Seeds: same seed, same weights; another seed, other weights; layers get independent streams.
        XCTAssertEqual(try Model(mlp, seed: 0).parameters.map(\.value), m.parameters.map(\.value))
        XCTAssertNotEqual(try Model(mlp, seed: 1).parameters.map(\.value), m.parameters.map(\.value))
        XCTAssertThrowsError(try Architecture.lenet(input: [144], classes: 2))
        XCTAssertThrowsError(try Architecture.lenet(input: [1, 12, 12], channels: [2], classes: 2))
        XCTAssertThrowsError(try Architecture.lenet(input: [1, 8, 8], classes: 2), "8×8 is too small for two 5×5 convs")
    }

    func testArchitectureJSONUsesPyTorchFieldNames() throws {
        let arch = try smallCNN()
        let json = String(decoding: try JSONEncoder().encode(arch), as: UTF8.self)
        for key in ["\"in_channels\"", "\"out_channels\"", "\"kernel_size\"", "\"in_features\"", "\"out_features\"", "\"locus-sequential\""] {
            XCTAssertTrue(json.contains(key), "\(key) missing in \(json)")
        }
        XCTAssertEqual(try JSONDecoder().decode(Architecture.self, from: Data(json.utf8)), arch)
    }

    // MARK: save / load

    func testSaveLoadRoundTripAndValidates() throws {
        let model = try Model(try smallCNN(), seed: 7)
        try model.addHead("extra", classes: 2, classNames: ["x", "y"], seed: 3)
        let file = path("model.h5")
        let fp = try model.save(file)
        XCTAssertTrue(fp.hasPrefix("sha256:"))
        let findings = Validator.validate(file)
        XCTAssertEqual(findings.filter { $0.severity == .error }, [], "\(findings.map(\.description))")
        let loaded = try Model.load(file)
        XCTAssertEqual(loaded.architecture, model.architecture)
        XCTAssertEqual(loaded.headNames, ["digits", "extra"])
        XCTAssertEqual(loaded.parameters.map(\.name), model.parameters.map(\.name))
        for (a, b) in zip(loaded.parameters, model.parameters) {
            XCTAssertEqual(a.value.shape, b.value.shape)
            XCTAssertEqual(bits(a.value.data), bits(b.value.data), a.name)
        }
        XCTAssertEqual(loaded.sourceFingerprint, fp)
        // Same outputs.
        var rnd = TestRandom(1)
        let x = rnd.tensor([2, 1, 12, 12])
        XCTAssertEqual(bits(try loaded.forward(x, head: "extra", mode: .eval).data), bits(try model.forward(x, head: "extra", mode: .eval).data))
        // Saving again over the same path replaces it; the reader sees the new values.
        loaded.parameters[0].value.data[0] += 1
        try loaded.save(file)
        XCTAssertEqual(try Model.load(file).parameters[0].value.data[0], loaded.parameters[0].value.data[0])
    }

    func testAddHead() throws {
        let model = try Model(.mlp(input: [5], hidden: [4], classes: 3), seed: 0)
        try model.addHead("task-2", classes: 6, seed: 1)
        let h = try model.linearHead("task-2")
        XCTAssertEqual(h.weight.name, "heads.task-2.weight")
        XCTAssertEqual(h.weight.value.shape, [6, 4])
        XCTAssertEqual(h.bias?.value.shape, [6])
        XCTAssertEqual(model.architecture.heads.last, .init(name: "task-2", inFeatures: 4, outFeatures: 6))
        XCTAssertEqual(model.parameters.suffix(2).map(\.name), ["heads.task-2.weight", "heads.task-2.bias"])
        var rnd = TestRandom(2)
        XCTAssertEqual(try model.forward(rnd.tensor([3, 5]), head: "task-2", mode: .eval).shape, [3, 6])
        expectEngineError(["already", "task-2"]) { try model.addHead("task-2", classes: 2, seed: 0) }
        for bad in ["", "a b", "x/y", "a.b", "é"] {
            expectEngineError(["head name"]) { try model.addHead(bad, classes: 2, seed: 0) }
            XCTAssertNil(model.heads[bad], "a rejected head must not be added")
        }
        expectEngineError(["no classes"]) { try model.addHead("empty", classes: 0, seed: 0) }
        XCTAssertEqual(model.headNames, ["default", "task-2"], "failed addHead calls leave the architecture alone")
        // A body whose output is not a vector cannot take a head.
        let conv = try Model(Architecture(input: [1, 6, 6], layers: [.conv2d(1, 2, kernel: 3)], heads: []), seed: 0)
        expectEngineError(["feature vector"]) { try conv.addHead("h", classes: 2, seed: 0) }
    }

    /// Model.forward is public and already throws (unknown head) but never checks the batch against the
    /// architecture's input: a wider input is silently read with the wrong row stride (garbage logits),
    /// and a smaller one is read out of bounds. (Only the safe, larger cases are exercised here.)
    func testForwardRejectsInputOfWrongShape() throws {
        let mlp = try Model(.mlp(input: [16], hidden: [4], classes: 2), seed: 0)
        var rnd = TestRandom(3)
        XCTAssertNoThrow(try mlp.forward(rnd.tensor([2, 16]), head: "default", mode: .eval))
        expectEngineError(["16"]) { _ = try mlp.forward(rnd.tensor([2, 20]), head: "default", mode: .eval) }
        let cnn = try Model(Architecture(input: [2, 6, 6], layers: [.conv2d(2, 2, kernel: 3), .flatten], heads: [.init(name: "h", inFeatures: 32, outFeatures: 2)]), seed: 0)
        XCTAssertNoThrow(try cnn.forward(rnd.tensor([2, 2, 6, 6]), head: "h", mode: .eval))
        expectEngineError(["[2, 6, 6]"]) { _ = try cnn.forward(rnd.tensor([2, 3, 6, 6]), head: "h", mode: .eval) }
    }

    // MARK: architecture errors

    func testUnknownLayerType() throws {
        var spec = LayerSpec(type: "lstm")
        spec.inFeatures = 3
        let arch = Architecture(input: [3], layers: [spec], heads: [])
        expectEngineError(["lstm", "unknown layer type", "linear"]) { _ = try Model(arch, seed: 0) }
    }

    /// Shape errors say which layer is wrong ("layer 3 (linear): …"); errors from building a layer
    /// (unknown type, missing or invalid field) should too, or a long architecture file is hard to fix.
    func testBuildErrorsNameTheLayerIndex() throws {
        let unknown = Architecture(input: [4], layers: [.relu, .relu, LayerSpec(type: "lstm")], heads: [])
        expectEngineError(["lstm", "layer 2"]) { _ = try Model(unknown, seed: 0) }
        var missing = LayerSpec(type: "linear"); missing.inFeatures = 4
        expectEngineError(["out_features", "layer 1"]) { _ = try Model(Architecture(input: [4], layers: [.relu, missing], heads: []), seed: 0) }
    }

    func testShapesThatDoNotChain() throws {
        let arch = Architecture(input: [1, 4, 4], layers: [.flatten, .linear(15, 4)], heads: [])
        expectEngineError(["layer 1", "layers.1.weight", "15"]) { _ = try Model(arch, seed: 0) }
        let conv = Architecture(input: [3, 6, 6], layers: [.conv2d(2, 4, kernel: 3)], heads: [])
        expectEngineError(["layer 0", "conv2d"]) { _ = try Model(conv, seed: 0) }
        let pool = Architecture(input: [1, 6, 6], layers: [.conv2d(1, 1, kernel: 5), .maxPool2d(3)], heads: [])
        expectEngineError(["layer 1", "maxpool2d"]) { _ = try Model(pool, seed: 0) }
        let ln = Architecture(input: [6], layers: [.layerNorm(5)], heads: [])
        expectEngineError(["layer 0"]) { _ = try Model(ln, seed: 0) }
        let big = Architecture(input: [1, 3, 3], layers: [.conv2d(1, 1, kernel: 5)], heads: [])
        expectEngineError(["smaller"]) { _ = try Model(big, seed: 0) }
        var missing = LayerSpec(type: "linear"); missing.inFeatures = 4
        expectEngineError(["out_features"]) { _ = try Model(Architecture(input: [4], layers: [missing], heads: []), seed: 0) }
        expectEngineError(["stride"]) { _ = try Model(Architecture(input: [1, 6, 6], layers: [.conv2d(1, 1, kernel: 3, stride: 0)], heads: []), seed: 0) }
        expectEngineError(["dropout"]) { _ = try Model(Architecture(input: [4], layers: [.dropout(1)], heads: []), seed: 0) }
        expectEngineError(["input shape"]) { _ = try Model(Architecture(input: [0], layers: [], heads: []), seed: 0) }
        var badFormat = Architecture(input: [4], layers: [], heads: [])
        badFormat.version = 2
        expectEngineError(["version"]) { _ = try Model(badFormat, seed: 0) }
    }

    func testHeadErrors() throws {
        let body: [LayerSpec] = [.flatten, .linear(16, 4), .relu]
        expectEngineError(["head 'h'", "5", "[4]"]) {
            _ = try Model(Architecture(input: [16], layers: body, heads: [.init(name: "h", inFeatures: 5, outFeatures: 2)]), seed: 0)
        }
        expectEngineError(["head name", "a/b"]) {
            _ = try Model(Architecture(input: [16], layers: body, heads: [.init(name: "a/b", inFeatures: 4, outFeatures: 2)]), seed: 0)
        }
        expectEngineError(["duplicate", "h"]) {
            _ = try Model(Architecture(input: [16], layers: body, heads: [.init(name: "h", inFeatures: 4, outFeatures: 2),
                                                                         .init(name: "h", inFeatures: 4, outFeatures: 3)]), seed: 0)
        }
        expectEngineError(["names 3 classes", "2 outputs"]) {
            _ = try Model(Architecture(input: [16], layers: body, heads: [.init(name: "h", inFeatures: 4, outFeatures: 2, classes: ["a", "b", "c"])]), seed: 0)
        }
        let m = try Model(Architecture(input: [16], layers: body, heads: []), seed: 0)
        expectEngineError(["no head 'x'", "none"]) { _ = try m.head("x") }
    }

    // MARK: checkpoint errors

    /// Writes a checkpoint with the architecture of `arch` and the tensors of `model`, after `edit`.
    private func writeCheckpoint(_ file: String, arch: Architecture, tensors: [(String, [Float], [Int])]) throws {
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let w = try CheckpointWriter(path: file, architecture: String(decoding: try enc.encode(arch), as: UTF8.self))
        for (name, values, shape) in tensors.sorted(by: { TensorName.byteOrder($0.0, $1.0) }) {
            try w.add(name: name, values: values, shape: shape)
        }
        try w.finish()
    }

    func testCheckpointMissingParameter() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        let file = path("missing.h5")
        try writeCheckpoint(file, arch: model.architecture,
                            tensors: model.parameters.filter { $0.name != "layers.1.bias" }.map { ($0.name, $0.value.data, $0.value.shape) })
        expectLocusError([file, "missing", "layers.1.bias"]) { _ = try Model.load(file) }
    }

    func testCheckpointWrongShape() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        let file = path("shape.h5")
        try writeCheckpoint(file, arch: model.architecture, tensors: model.parameters.map {
            $0.name == "heads.default.weight" ? ($0.name, [Float](repeating: 0, count: 8), [2, 4]) : ($0.name, $0.value.data, $0.value.shape)
        })
        expectLocusError([file, "heads.default.weight", "[2, 4]", "[2, 3]"]) { _ = try Model.load(file) }
    }

    func testCheckpointWithoutOrWithBadArchitecture() throws {
        let plain = path("plain.h5")
        let w = try CheckpointWriter(path: plain)
        try w.add(name: "w", values: [1, 2], shape: [2])
        try w.finish()
        expectLocusError([plain, "/architecture", "locus init"]) { _ = try Model.load(plain) }
        let bad = path("bad.h5")
        let w2 = try CheckpointWriter(path: bad, architecture: "{\"format\": 3}")
        try w2.add(name: "w", values: [1, 2], shape: [2])
        try w2.finish()
        expectLocusError([bad, "/architecture"]) { _ = try Model.load(bad) }
        // An architecture that decodes but does not chain.
        let arch = Architecture(input: [4], layers: [.linear(5, 2)], heads: [])
        let chain = path("chain.h5")
        try writeCheckpoint(chain, arch: arch, tensors: [("layers.0.weight", [Float](repeating: 0, count: 10), [2, 5])])
        expectLocusError([chain, "/architecture", "layer 0"]) { _ = try Model.load(chain) }
    }

    func testCheckpointInHalfPrecisionLoadsAndIntegerTensorIsRejected() throws {
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        // Values exact in float16 and bfloat16, so the round trip is exact.
        for p in model.parameters { p.value.data = p.value.data.map { ($0 * 64).rounded() / 64 } }
        for dtype in [LocusDType.float16, .bfloat16, .float64] {
            let file = path("\(dtype.rawValue).h5")
            let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
            let w = try CheckpointWriter(path: file, architecture: String(decoding: try enc.encode(model.architecture), as: UTF8.self))
            for p in model.parameters.sorted(by: { TensorName.byteOrder($0.name, $1.name) }) {
                try w.add(name: p.name, values: p.value.data, shape: p.value.shape, dtype: dtype)
            }
            try w.finish()
            let loaded = try Model.load(file)
            XCTAssertEqual(loaded.parameters.map(\.value), model.parameters.map(\.value), "\(dtype)")
        }
        let file = path("int.h5")
        let enc = JSONEncoder(); enc.outputFormatting = [.sortedKeys]
        let w = try CheckpointWriter(path: file, architecture: String(decoding: try enc.encode(model.architecture), as: UTF8.self))
        for p in model.parameters.sorted(by: { TensorName.byteOrder($0.name, $1.name) }) {
            if p.name == "layers.1.bias" {
                let ints = [Int32](repeating: 1, count: p.value.count)
                try ints.withUnsafeBytes { try w.add(name: p.name, dtype: .int32, shape: p.value.shape, bytes: $0) }
            } else {
                try w.add(name: p.name, values: p.value.data, shape: p.value.shape)
            }
        }
        try w.finish()
        expectLocusError([file, "layers.1.bias", "int32", "float"]) { _ = try Model.load(file) }
    }

    func testCheckpointWithExtraTensorsLoads() throws {
        // Extra tensors (e.g. optimizer state a converter kept) are ignored.
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2), seed: 0)
        let file = path("extra.h5")
        try writeCheckpoint(file, arch: model.architecture,
                            tensors: model.parameters.map { ($0.name, $0.value.data, $0.value.shape) } + [("unused.buffer", [1], [1])])
        let loaded = try Model.load(file)
        XCTAssertEqual(loaded.parameters.map(\.value), model.parameters.map(\.value))
    }

    // MARK: dataset errors

    func testBatchesShapeMismatch() throws {
        let d = separableData(samples: 10, features: 6, classes: 2, seed: 1)
        expectLocusError(["data.h5", "/inputs", "[6]", "[7]"]) { _ = try Batches(d, split: "train", inputShape: [7], file: "data.h5") }
        expectLocusError(["/inputs", "[2, 4]"]) { _ = try Batches(d, split: "train", inputShape: [2, 4], file: "data.h5") }
        // Flat data can feed an image model of the same size.
        XCTAssertNoThrow(try Batches(d, split: "train", inputShape: [1, 2, 3]))
        expectLocusError(["/splits/test", "no such split", "train"]) { _ = try Batches(d, split: "test", inputShape: [6], file: "data.h5") }
        let empty = LabelledData(inputs: .float32([1, 2]), shape: [1, 2], labels: [0], classes: ["a"], splits: ["e": []])
        expectLocusError(["/splits/e", "no samples"]) { _ = try Batches(empty, split: "e", inputShape: [2], file: "data.h5") }
        // Image data of another layout.
        let img = LabelledData(inputs: .float32([Float](repeating: 0, count: 2 * 36)), shape: [2, 1, 6, 6], labels: [0, 0], classes: ["a"], splits: [:])
        expectLocusError(["/inputs", "[1, 6, 6]", "[2, 3, 6]"]) { _ = try Batches(img, split: nil, inputShape: [2, 3, 6], file: "data.h5") }
        XCTAssertNoThrow(try Batches(img, split: nil, inputShape: [36]))
    }

    func testBatchesLabelOutOfRange() throws {
        let d = separableData(samples: 12, features: 3, classes: 4, seed: 1)
        expectLocusError(["data.h5", "/labels", "label 3", "3 classes"]) { _ = try Batches(d, split: "train", inputShape: [3], classes: 3, file: "data.h5") }
        XCTAssertNoThrow(try Batches(d, split: "train", inputShape: [3], classes: 4))
    }

    /// LabelledData built in memory is not checked by DatasetArtifact.read; Batches is the engine's
    /// last gate, and a negative label would index out of range in CrossEntropy / evaluate (a crash).
    func testBatchesRejectsNegativeLabel() throws {
        let d = LabelledData(inputs: .float32([1, 2, 3, 4]), shape: [2, 2], labels: [0, -1], classes: ["a", "b"], splits: [:])
        expectLocusError(["/labels", "-1"]) { _ = try Batches(d, split: nil, inputShape: [2], classes: 2, file: "data.h5") }
    }

    func testDatasetFileRoundTripIntoTraining() throws {
        // The full file path: DatasetArtifact.write → read → Batches → evaluate.
        let d = separableData(samples: 20, features: 4, classes: 2, seed: 3, trainFraction: 0.5)
        let file = path("data.h5")
        try DatasetArtifact.write(d, to: file)
        let back = try DatasetArtifact.read(file)
        let model = try Model(.mlp(input: [4], hidden: [3], classes: 2, classNames: back.classes), seed: 0)
        let e = try Training.evaluate(model, head: "default", on: try Batches(back, split: "val", inputShape: [4], classes: 2, file: file))
        XCTAssertEqual(e.samples, 10)
        XCTAssertEqual(e.classes, ["c0", "c1"])
    }
}
