import LocusTestSupport
import XCTest

@testable import LocusEngine

/// `Parameter.forwardScale` s: the forward pass uses value ⊙ s; the gradient is with respect to the
/// unscaled value, i.e. (gradient w.r.t. the effective tensor) ⊙ s.
final class ForwardScaleTests: EngineTestCase {
    /// Builds the layer twice with the same seed: `scaled` gets forwardScale on the parameters in `which`,
    /// `plain` gets value ⊙ s baked in. Their forward outputs and input gradients must match bit for bit,
    /// and scaled.grad == plain.grad ⊙ s; central differences w.r.t. the raw value must agree too.
    private func check(_ spec: LayerSpec, input shape: [Int], which: Set<String>, seed: UInt64,
                       setUp: ((any Layer, inout TestRandom) -> Void)? = nil,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        var rnd = TestRandom(seed)
        let scaled = try spec.build(prefix: "layers.0", seed: seed)
        let plain = try spec.build(prefix: "layers.0", seed: seed)
        if let setUp {
            var r1 = rnd, r2 = rnd
            setUp(scaled, &r1); setUp(plain, &r2); rnd = r1
        }
        var scales: [String: [Float]] = [:]
        for (p, q) in zip(scaled.parameters, plain.parameters) where which.contains(p.name) {
            let s = rnd.scales(p.value.count)
            scales[p.name] = s
            p.forwardScale = s
            q.value.data = zip(q.value.data, s).map { $0 * $1 }
            XCTAssertEqual(bits(p.effective.data), bits(q.value.data), "\(p.name): effective = value ⊙ s", file: file, line: line)
        }
        XCTAssertEqual(Set(scales.keys), which, "parameters named in the test exist", file: file, line: line)
        let x = rnd.tensor(shape)
        let y1 = scaled.forward(x, mode: .train), y2 = plain.forward(x, mode: .train)
        let fwdErr = normalizedError(y1.data, y2.data)
        XCTAssertLessThanOrEqual(fwdErr, 1e-6, "\(spec.type) \(which.sorted()): forward must use value ⊙ scale (error \(fwdErr))", file: file, line: line)
        let gy = rnd.tensor(y1.shape)
        scaled.parameters.forEach { $0.zeroGrad() }; plain.parameters.forEach { $0.zeroGrad() }
        let gx1 = scaled.backward(gy), gx2 = plain.backward(gy)
        XCTAssertLessThanOrEqual(normalizedError(gx1.data, gx2.data), 1e-6, "\(spec.type): input gradient uses the effective weight", file: file, line: line)
        for (p, q) in zip(scaled.parameters, plain.parameters) {
            let s = scales[p.name] ?? [Float](repeating: 1, count: p.value.count)
            let expected = zip(q.grad.data, s).map { Double($0) * Double($1) }
            let e = normalizedError(p.grad.data, expected)
            XCTAssertLessThanOrEqual(e, 1e-6, "\(p.name): grad must be (grad w.r.t. effective) ⊙ scale (error \(e))", file: file, line: line)
            // Zero scale → zero gradient, exactly.
            for (i, si) in s.enumerated() where si == 0 {
                XCTAssertEqual(p.grad.data[i], 0, "\(p.name)[\(i)] has scale 0 but gradient \(p.grad.data[i])", file: file, line: line)
            }
        }
        // Accumulation with a scale: a second backward adds the same again.
        let once = scaled.parameters.map { $0.grad.data }
        _ = scaled.backward(gy)
        for (p, g) in zip(scaled.parameters, once) {
            XCTAssertLessThanOrEqual(normalizedError(p.grad.data, g.map { 2 * Double($0) }), 1e-6, "\(p.name): accumulates with a scale", file: file, line: line)
        }
        // And the gradient is d f / d value by central differences (f = Σ y ⊙ gy).
        _ = scaled.forward(x, mode: .train)
        gradientCheck(scaled, input: x, seed: seed + 1, label: "\(spec.type) with forwardScale on \(which.sorted())", file: file, line: line)
    }

    func testLinearWeightScale() throws {
        try check(.linear(5, 4), input: [3, 5], which: ["layers.0.weight"], seed: 1)
        try check(.linear(6, 3, bias: false), input: [2, 6], which: ["layers.0.weight"], seed: 2)
    }

    func testConv2dWeightScale() throws {
        try check(.conv2d(2, 3, kernel: 3, stride: 1, padding: 1), input: [2, 2, 6, 6], which: ["layers.0.weight"], seed: 3)
        try check(.conv2d(2, 2, kernel: 3, stride: 2, padding: 0, bias: false), input: [2, 2, 6, 6], which: ["layers.0.weight"], seed: 4)
    }

    func testLayerNormWeightAndBiasScale() throws {
        let setUp: (any Layer, inout TestRandom) -> Void = { l, r in
            let ln = l as! LayerNorm
            ln.weight.value = r.tensor([5], 0.5, 1.5); ln.bias.value = r.tensor([5])
        }
        try check(.layerNorm(5), input: [3, 5], which: ["layers.0.weight"], seed: 5, setUp: setUp)
        try check(.layerNorm(5), input: [3, 5], which: ["layers.0.weight", "layers.0.bias"], seed: 6, setUp: setUp)
    }

    /// The Parameter contract is generic ("multiplies the value in the forward pass"), and LayerNorm honours
    /// it for its bias; Linear and Conv2d must too (TaLoS masks may cover biases).
    func testBiasScaleLinear() throws {
        try check(.linear(5, 4), input: [3, 5], which: ["layers.0.weight", "layers.0.bias"], seed: 7)
    }

    func testBiasScaleConv2d() throws {
        try check(.conv2d(2, 3, kernel: 3, padding: 1), input: [2, 2, 6, 6], which: ["layers.0.weight", "layers.0.bias"], seed: 8)
    }

    func testScaleInsideAModel() throws {
        // Through Model.forward/backward: scaling a head weight by 0 freezes its contribution and its gradient.
        let arch = Architecture.mlp(input: [4], hidden: [6], classes: 3)
        let model = try Model(arch, seed: 1)
        var rnd = TestRandom(9)
        let x = rnd.tensor([2, 4])
        let head = try model.linearHead("default")
        let w0 = head.weight.value
        head.weight.forwardScale = [Float](repeating: 0, count: w0.count)
        model.zeroGrad()
        let logits = try model.forward(x, head: "default", mode: .train)
        // With W_eff = 0 the logits are the bias.
        for r in 0..<2 { XCTAssertEqual(Array(logits.data[r * 3..<(r + 1) * 3]), head.bias!.value.data) }
        let ce = CrossEntropy()(logits, labels: [0, 2])
        try model.backward(ce.gradient, head: "default")
        XCTAssertTrue(head.weight.grad.data.allSatisfy { $0 == 0 })
        // Nothing reaches the body either (dx = g · W_eff = 0).
        XCTAssertTrue(model.bodyParameters.allSatisfy { $0.grad.data.allSatisfy { $0 == 0 } })
        XCTAssertEqual(head.weight.value, w0, "forwardScale never changes the stored value")
    }
}
