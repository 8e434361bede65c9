import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusEngine

/// The engine against an independent numpy implementation (interop/tests/engine_ref.py, float64) and,
/// when installed, torch: logits, loss, every parameter gradient, and every layer's activation and
/// output gradient (what per-sample statistics are built from). The weights travel the way users'
/// do: Model.save → Locus checkpoint → safetensors export → looked up by state-dict name in Python.
final class ReferenceTests: EngineTestCase {
    private struct Case: Encodable {
        var architecture: Architecture
        var x: [Float]
        var x_shape: [Int]
        var labels: [Int]
        var head: String
        var label_smoothing: Float
        var mode: String
    }

    private struct RefResult: Decodable {
        var logits: [Double]
        var loss: Double
        var grads: [String: [Double]]
        var input_grad: [Double]
        var activations: [[Double]]
        var output_grads: [[Double]]
    }

    private struct RefOutput: Decodable {
        var numpy: RefResult
        var torch: RefResult?
        var torch_error: String?
    }

    private struct EngineResult {
        var logits: [Float], loss: Float
        var grads: [String: [Float]]
        var activations: [[Float]], outputGrads: [[Float]]
    }

    private static let script = repositoryRoot + "/interop/tests/engine_ref.py"

    private func mlp() -> Architecture { .mlp(input: [1, 4, 4], hidden: [8, 6], classes: 3) }
    private func lenet() throws -> Architecture { try .lenet(input: [2, 12, 12], channels: [3, 4], hidden: [8], classes: 3) }
    /// Every layer type: strided padded conv, GELU, overlapping max-pool, bias-free conv, ReLU, avg-pool,
    /// flatten, LayerNorm, Linear, dropout (evaluation mode) and two heads.
    private func everything() -> Architecture {
        Architecture(input: [2, 8, 8], layers: [
            .conv2d(2, 3, kernel: 3, stride: 2, padding: 1), .gelu, .maxPool2d(2, stride: 1),
            .conv2d(3, 4, kernel: 2, stride: 1, padding: 1, bias: false), .relu, .avgPool2d(2), .flatten,
            .layerNorm(16), .linear(16, 6), .gelu, .dropout(0.2),
        ], heads: [.init(name: "a", inFeatures: 6, outFeatures: 3), .init(name: "b", inFeatures: 6, outFeatures: 2)])
    }

    /// Runs the engine and the reference on one case; returns both.
    private func compute(_ arch: Architecture, name: String, batch: Int, head: String, smoothing: Float, mode: Mode,
                         torch: Bool) throws -> (EngineResult, RefOutput) {
        let model = try Model(arch, seed: 42)
        var rnd = TestRandom(UInt64(name.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }))
        // Non-trivial LayerNorm γ, β so their gradient paths matter.
        for case let ln as LayerNorm in model.body {
            ln.weight.value = rnd.tensor(ln.weight.value.shape, 0.5, 1.5)
            ln.bias.value = rnd.tensor(ln.bias.value.shape)
        }
        let checkpoint = path("\(name).h5"), exported = path("\(name).safetensors")
        try model.save(checkpoint)
        try Conversion.exportSafeTensors(from: checkpoint, to: exported)

        let classes = arch.heads.first { $0.name == head }!.outFeatures
        let x = rnd.normalTensor([batch] + arch.input)
        let labels = (0..<batch).map { $0 % classes }
        model.zeroGrad()
        let logits = try model.forward(x, head: head, mode: mode)
        let ce = CrossEntropy(labelSmoothing: smoothing)(logits, labels: labels)
        try model.backward(ce.gradient, head: head)
        let hd = try model.head(head)
        let activations = model.body.indices.map { i in (i + 1 < model.body.count ? model.body[i + 1].lastInput! : hd.lastInput!).data }
        let engine = EngineResult(logits: logits.data, loss: ce.loss,
                                  grads: Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.grad.data) }),
                                  activations: activations, outputGrads: model.body.map { $0.lastOutputGradient?.data ?? [] })

        let casePath = path("\(name).json"), outPath = path("\(name)-out.json")
        let c = Case(architecture: arch, x: x.data, x_shape: x.shape, labels: labels, head: head, label_smoothing: smoothing,
                     mode: mode == .train ? "train" : "eval")
        try JSONEncoder().encode(c).write(to: URL(fileURLWithPath: casePath))
        let r = try run(["python3", ReferenceTests.script, casePath, exported, outPath] + (torch ? ["--torch"] : []))
        guard r.status == 0 else {
            XCTFail("engine_ref.py failed (exit \(r.status)):\n\(r.output)")
            throw XCTSkip("reference failed")
        }
        let out = try JSONDecoder().decode(RefOutput.self, from: Data(contentsOf: URL(fileURLWithPath: outPath)))
        return (engine, out)
    }

    /// Compares everything; returns the worst normalized error.
    @discardableResult
    private func compare(_ e: EngineResult, _ ref: RefResult, _ what: String, tol: Double = 1e-4,
                         file: StaticString = #filePath, line: UInt = #line) -> Double {
        var worst = 0.0
        func check(_ a: [Float], _ b: [Double], _ label: String) {
            guard a.count == b.count else { XCTFail("\(what) \(label): \(a.count) vs \(b.count) values", file: file, line: line); return }
            let err = normalizedError(a, b)
            worst = max(worst, err)
            XCTAssertLessThanOrEqual(err, tol, "\(what) \(label): normalized error \(err)", file: file, line: line)
        }
        check(e.logits, ref.logits, "logits")
        let lossErr = abs(Double(e.loss) - ref.loss) / max(abs(ref.loss), 1e-12)
        worst = max(worst, lossErr)
        XCTAssertLessThanOrEqual(lossErr, tol, "\(what) loss \(e.loss) vs \(ref.loss)", file: file, line: line)
        // Exactly the parameters the reference knows, no more, no fewer (head-only gradients for other heads are zero).
        let used = Set(ref.grads.keys)
        for (name, g) in e.grads.sorted(by: { $0.key < $1.key }) {
            if let r = ref.grads[name] { check(g, r, "d loss/d \(name)") } else {
                XCTAssertTrue(g.allSatisfy { $0 == 0 }, "\(what): \(name) is not used by this head but has a gradient", file: file, line: line)
            }
        }
        XCTAssertTrue(used.isSubset(of: Set(e.grads.keys)), "\(what): reference parameters \(used.subtracting(e.grads.keys)) missing in the engine")
        XCTAssertEqual(e.activations.count, ref.activations.count, file: file, line: line)
        for (i, (a, b)) in zip(e.activations, ref.activations).enumerated() { check(a, b, "activation of layer \(i)") }
        // Backpropagation stops at the first layer with parameters (nobody needs d loss / d input),
        // so layers before it have no output gradient.
        for (i, (a, b)) in zip(e.outputGrads, ref.output_grads).enumerated() where !a.isEmpty { check(a, b, "output gradient of layer \(i)") }
        return worst
    }

    private func requireNumpy() throws {
        try requirePython("numpy", hint: "the numpy reference needs numpy (`pip install numpy`)")
    }

    func testMLPAgainstNumpy() throws {
        try requireNumpy()
        let (e, out) = try compute(mlp(), name: "mlp", batch: 4, head: "default", smoothing: 0, mode: .train, torch: false)
        let worst = compare(e, out.numpy, "mlp vs numpy")
        print("reference agreement: mlp vs numpy: worst normalized error \(worst)")
    }

    func testLeNetAgainstNumpy() throws {
        try requireNumpy()
        let (e, out) = try compute(try lenet(), name: "lenet", batch: 3, head: "default", smoothing: 0.1, mode: .train, torch: false)
        let worst = compare(e, out.numpy, "lenet vs numpy")
        print("reference agreement: lenet vs numpy: worst normalized error \(worst)")
    }

    func testEveryLayerAgainstNumpy() throws {
        try requireNumpy()
        for head in ["a", "b"] {
            let (e, out) = try compute(everything(), name: "everything-\(head)", batch: 3, head: head, smoothing: 0.2, mode: .eval, torch: false)
            let worst = compare(e, out.numpy, "every layer (head \(head)) vs numpy")
            print("reference agreement: every layer, head \(head), vs numpy: worst normalized error \(worst)")
        }
    }

    func testAgainstTorch() throws {
        try requireNumpy()
        try requirePython("torch", hint: "torch is not installed (`pip install torch`); the numpy reference still ran")
        for (name, arch, head, smoothing, mode) in [("t-mlp", mlp(), "default", Float(0), Mode.train),
                                                    ("t-lenet", try lenet(), "default", Float(0.1), Mode.train),
                                                    ("t-every", everything(), "b", Float(0.2), Mode.eval)] {
            let (e, out) = try compute(arch, name: name, batch: 3, head: head, smoothing: smoothing, mode: mode, torch: true)
            if let err = out.torch_error { throw XCTSkip(err) }
            let t = try XCTUnwrap(out.torch, "no torch result")
            let worst = compare(e, t, "\(name) vs torch")
            // And the two references agree with each other to float64 precision.
            XCTAssertEqual(t.loss, out.numpy.loss, accuracy: 1e-10 * max(1, abs(t.loss)))
            for (k, g) in t.grads {
                let n = try XCTUnwrap(out.numpy.grads[k])
                XCTAssertLessThanOrEqual(normalizedError(g.map(Float.init), n), 1e-6, "numpy vs torch \(k)")
            }
            XCTAssertLessThanOrEqual(normalizedError(t.input_grad.map(Float.init), out.numpy.input_grad), 1e-6, "numpy vs torch input gradient")
            print("reference agreement: \(name) vs torch: worst normalized error \(worst)")
        }
    }
}
