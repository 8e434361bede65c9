import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusEngine

final class TrainingTests: EngineTestCase {
    private let data = separableData(samples: 60, features: 6, classes: 3, seed: 11, trainFraction: 0.8)

    private func config(epochs: Int = 15, lr: Float = 0.01, seed: UInt64 = 0) -> TrainingConfig {
        var c = TrainingConfig()
        c.epochs = epochs; c.batchSize = 8; c.learningRate = lr; c.seed = seed; c.deterministic = true
        return c
    }

    private func snapshot(_ m: Model) -> [String: [UInt32]] {
        Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, bits($0.value.data)) })
    }

    func testFitReachesHighAccuracyOnSeparableData() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        let val = try Batches(data, split: "val", inputShape: [6], classes: 3)
        var steps = 0
        let reports = try Training.fit(model, head: "default", train: train, validation: val, config: config()) { p in
            steps += 1
            XCTAssertTrue(p.loss.isFinite)
            XCTAssertEqual(p.stepsPerEpoch, 6)   // ceil(48 / 8)
        }
        XCTAssertEqual(steps, 15 * 6)
        XCTAssertEqual(reports.count, 15)
        XCTAssertEqual(reports.map(\.epoch), Array(1...15))
        let last = try XCTUnwrap(reports.last)
        XCTAssertGreaterThanOrEqual(last.trainAccuracy, 0.95, "train accuracy \(reports.map(\.trainAccuracy))")
        XCTAssertLessThan(last.trainLoss, reports[0].trainLoss, "the loss goes down")
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(last.validationAccuracy), 0.9)
        let e = try Training.evaluate(model, head: "default", on: train)
        XCTAssertGreaterThanOrEqual(e.accuracy, 0.95)
        XCTAssertEqual(e.samples, 48)
        XCTAssertEqual(e.perClassAccuracy.count, 3)
        XCTAssertEqual(e.classes, nil)
        // evaluate's loss is the mean CE, whatever the batch size.
        let e1 = try Training.evaluate(model, head: "default", on: train, batchSize: 5)
        XCTAssertEqual(e1.loss, e.loss, accuracy: 1e-6)
        XCTAssertEqual(e1.accuracy, e.accuracy)
    }

    func testFitCNNWithSGDAndEveryOption() throws {
        // Images [1, 6, 6]: class 0 bright on the left, class 1 bright on the right.
        var rnd = TestRandom(12)
        var x: [Float] = [], y: [Int64] = []
        for i in 0..<32 {
            let c = i % 2
            for _ in 0..<6 { for w in 0..<6 { x.append((w < 3) == (c == 0) ? 1 + 0.2 * rnd.normal() : 0.2 * rnd.normal()) } }
            y.append(Int64(c))
        }
        let d = LabelledData(inputs: .float32(x), shape: [32, 1, 6, 6], labels: y, classes: ["left", "right"], splits: ["train": Array(0..<32)])
        let arch = Architecture(input: [1, 6, 6], layers: [.conv2d(1, 3, kernel: 3, padding: 1), .relu, .maxPool2d(2), .flatten, .dropout(0.1),
                                                           .linear(27, 8), .gelu, .layerNorm(8)],
                                heads: [.init(name: "lr", inFeatures: 8, outFeatures: 2, classes: ["left", "right"])])
        let model = try Model(arch, seed: 3)
        var c = config(epochs: 8, lr: 0.05)
        c.optimizer = .sgd; c.momentum = 0.9; c.nesterov = true; c.weightDecay = 1e-4
        c.warmupFraction = 0.2; c.clipNorm = 1; c.labelSmoothing = 0.05
        let train = try Batches(d, split: "train", inputShape: [1, 6, 6], classes: 2)
        let reports = try Training.fit(model, head: "lr", train: train, validation: nil, config: c)
        XCTAssertNil(reports.last?.validationAccuracy)
        XCTAssertGreaterThanOrEqual(reports.last!.trainAccuracy, 0.95, "\(reports.map(\.trainAccuracy))")
        let e = try Training.evaluate(model, head: "lr", on: train)
        XCTAssertEqual(e.classes, ["left", "right"])
        XCTAssertGreaterThanOrEqual(e.accuracy, 0.95)
    }

    func testDeterministicRunsAreBitIdenticalAndSeedMatters() throws {
        func run(seed: UInt64) throws -> [String: [UInt32]] {
            let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
            let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
            _ = try Training.fit(model, head: "default", train: train, validation: nil, config: config(epochs: 3, seed: seed))
            return snapshot(model)
        }
        let a = try run(seed: 5), b = try run(seed: 5), c = try run(seed: 6)
        XCTAssertEqual(a, b, "same seed, deterministic: bit-identical parameters")
        XCTAssertNotEqual(a, c, "a different seed (shuffling order) changes the result")
    }

    func testBatchOrderIsSeededPermutation() throws {
        let train = try Batches(data, split: "train", inputShape: [6])
        let o1 = train.order(epoch: 0, seed: 3, shuffle: true)
        XCTAssertEqual(o1.sorted(), train.indices)
        XCTAssertEqual(o1, train.order(epoch: 0, seed: 3, shuffle: true))
        XCTAssertNotEqual(o1, train.order(epoch: 1, seed: 3, shuffle: true), "a new order each epoch")
        XCTAssertNotEqual(o1, train.order(epoch: 0, seed: 4, shuffle: true))
        XCTAssertEqual(train.order(epoch: 0, seed: 3, shuffle: false), train.indices)
    }

    func testLinearProbeLeavesBodyBitIdentical() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        let before = snapshot(model)
        var c = config(epochs: 3)
        c.trainBody = false
        c.weightDecay = 0.1   // decay must not touch frozen parameters either
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c)
        let after = snapshot(model)
        for p in model.bodyParameters { XCTAssertEqual(after[p.name], before[p.name], "\(p.name) changed in a linear probe") }
        for p in try model.head("default").parameters { XCTAssertNotEqual(after[p.name], before[p.name], "\(p.name) was not trained") }
    }

    func testTrainingOneHeadLeavesOtherHeadsAlone() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        try model.addHead("other", classes: 4, seed: 2)
        let before = snapshot(model)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        _ = try Training.fit(model, head: "default", train: train, validation: nil, config: config(epochs: 1))
        let after = snapshot(model)
        for p in try model.head("other").parameters { XCTAssertEqual(after[p.name], before[p.name]) }
    }

    func testNonFiniteLossThrowsWithEpochAndStep() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        var c = config(epochs: 20, lr: 1e9)
        c.optimizer = .sgd; c.momentum = 0
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        let e = expectEngineError(["epoch", "step", "loss"]) {
            _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c)
        }
        XCTAssertTrue(e?.description.contains("nan") == true || e?.description.contains("inf") == true, "\(String(describing: e))")
    }

    func testFitRejectsBadConfigAndUnknownHead() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        var c = config(); c.epochs = 0
        expectEngineError(["epochs"]) { _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c) }
        c = config(); c.batchSize = 0
        expectEngineError(["batch size"]) { _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c) }
        c = config(); c.learningRate = 0
        expectEngineError(["learning rate"]) { _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c) }
        expectEngineError(["nope", "default"]) { _ = try Training.fit(model, head: "nope", train: train, validation: nil, config: config()) }
        expectEngineError(["nope"]) { _ = try Training.evaluate(model, head: "nope", on: train) }
    }

    /// fit validates epochs, batch size and learning rate, but not the other hyper-parameters; out-of-range
    /// values silently train something else. torch rejects all of these (clip_grad_norm_ aside, whose
    /// negative max_norm makes the coefficient negative: gradient *ascent*, as here).
    func testFitRejectsInvalidHyperparameters() throws {
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        let cases: [(String, (inout TrainingConfig) -> Void)] = [
            ("clip", { $0.clipNorm = -1 }),
            ("smoothing", { $0.labelSmoothing = 1.5 }),
            ("smoothing", { $0.labelSmoothing = -0.1 }),
            ("momentum", { $0.optimizer = .sgd; $0.momentum = -0.5 }),
            ("decay", { $0.weightDecay = -0.1 }),
            ("warm", { $0.warmupFraction = -0.5 }),
        ]
        for (word, edit) in cases {
            var c = config(epochs: 1)
            edit(&c)
            let before = snapshot(model)
            expectEngineError([word]) { _ = try Training.fit(model, head: "default", train: train, validation: nil, config: c) }
            XCTAssertTrue(snapshot(model) == before, "\(word): a rejected configuration must not train (parameters changed)")
        }
    }

    func testNegativeClipNormWouldAscend() throws {
        // Evidence for the above: with clipNorm = −1 (and nothing rejecting it) the loss goes *up*.
        let model = try Model(.mlp(input: [6], hidden: [8], classes: 3), seed: 1)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        var c = config(epochs: 6, lr: 0.01)
        c.clipNorm = -1
        guard let reports = try? Training.fit(model, head: "default", train: train, validation: nil, config: c) else { return }  // rejected: fine
        XCTAssertLessThan(reports.last!.trainLoss, reports.first!.trainLoss, "clipNorm −1 trained uphill: \(reports.map(\.trainLoss))")
    }

    func testOneFullBatchSGDStepEqualsManualUpdate() throws {
        // Training.fit with one full batch, constant rate, plain SGD = p − lr · ∇(mean CE) from Model.backward.
        let model = try Model(.mlp(input: [6], hidden: [5], classes: 3), seed: 4)
        let twin = try Model(.mlp(input: [6], hidden: [5], classes: 3), seed: 4)
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        var c = config(epochs: 1, lr: 0.3)
        c.optimizer = .sgd; c.momentum = 0; c.batchSize = train.count; c.schedule = .constant
        let reports = try Training.fit(model, head: "default", train: train, validation: nil, config: c)
        let (x, y) = train.batch(train.indices[...])
        twin.zeroGrad()
        let r = CrossEntropy()(try twin.forward(x, head: "default", mode: .train), labels: y)
        try twin.backward(r.gradient, head: "default")
        XCTAssertEqual(reports[0].trainLoss, Double(r.loss), accuracy: 1e-5)
        for (p, q) in zip(model.parameters, twin.parameters) {
            let expected = zip(q.value.data, q.grad.data).map { Double($0) - 0.3 * Double($1) }
            assertClose(p.value.data, expected, tol: 1e-5, "\(p.name) after one step")
        }
    }

    // MARK: batches

    func testBatchesNormaliseAndReshape() throws {
        // uint8 images [N, 2, 2, 2] with per-channel mean/std.
        let raw: [UInt8] = (0..<24).map { UInt8($0 * 10) }
        let d = LabelledData(inputs: .uint8(raw), shape: [3, 2, 2, 2], labels: [0, 1, 0], classes: ["a", "b"], splits: ["all": [0, 1, 2]],
                             normalization: Normalization(scale: 1.0 / 255, mean: [0.5, 0.25], std: [0.5, 0.25]))
        let b = try Batches(d, split: "all", inputShape: [2, 2, 2], classes: 2)
        let (x, y) = b.batch([2, 0])
        XCTAssertEqual(x.shape, [2, 2, 2, 2])
        XCTAssertEqual(y, [0, 0])
        for (r, id) in [2, 0].enumerated() { for j in 0..<8 {
            let ch = j / 4
            let expected = (Double(raw[id * 8 + j]) / 255 - [0.5, 0.25][ch]) / [0.5, 0.25][ch]
            XCTAssertEqual(Double(x.data[r * 8 + j]), expected, accuracy: 1e-6)
        } }
        // The same samples feed a flat model input ([8]).
        let flat = try Batches(d, split: nil, inputShape: [8])
        XCTAssertEqual(flat.batch([0, 1]).x.shape, [2, 8])
        XCTAssertEqual(flat.count, 3)
    }
}
