import LocusTestSupport
import XCTest

@testable import LocusEngine

/// The vision-transformer layers: central-difference gradient checks for each part (attention, the
/// whole pre-LN block, LayerNorm over tokens, patch embedding, class token and positions, pooling),
/// attention forward against a direct Double computation, timm's parameter names and shapes, and a
/// whole model's input gradient through every layer.
final class VisionTransformerTests: EngineTestCase {
    func testAttentionGradientAndForward() throws {
        var rnd = TestRandom(1)
        var spec = LayerSpec(type: "attention"); spec.embedDim = 6; spec.numHeads = 2
        let attn = SelfAttention(spec: spec, width: 6, heads: 2)
        let x = rnd.tensor([2, 5, 18], -1.5, 1.5)
        gradientCheck(attn, input: x, seed: 2, label: "attention 2 heads")
        // Forward against softmax(QKᵀ/√dh)V computed directly in Double.
        let y = attn.forward(x, mode: .eval)
        var ref = [Double](repeating: 0, count: 2 * 5 * 6)
        let (t, d, dh) = (5, 6, 3)
        for s in 0..<2 { for h in 0..<2 {
            func at(_ tok: Int, _ part: Int, _ i: Int) -> Double { Double(x.data[(s * t + tok) * 3 * d + part * d + h * dh + i]) }
            for r in 0..<t {
                let logits = (0..<t).map { c in (0..<dh).reduce(0.0) { $0 + at(r, 0, $1) * at(c, 1, $1) } / Double(dh).squareRoot() }
                let m = logits.max()!, e = logits.map { Foundation.exp($0 - m) }, z = e.reduce(0, +)
                for i in 0..<dh { ref[(s * t + r) * d + h * dh + i] = (0..<t).reduce(0.0) { $0 + e[$1] / z * at($1, 2, i) } }
            }
        } }
        assertClose(y.data, ref, tol: 1e-6, "attention forward")
    }

    func testTransformerBlockGradient() throws {
        var rnd = TestRandom(3)
        let block = try XCTUnwrap(try LayerSpec.transformerBlock(0, width: 6, heads: 3, mlpRatio: 2).build(prefix: "blocks.0", seed: 4) as? TransformerBlock)
        // Non-trivial LayerNorm affine parameters, so their gradients are exercised.
        for ln in [block.norm1, block.norm2] {
            ln.weight.value = rnd.tensor([6], 0.5, 1.5); ln.bias.value = rnd.tensor([6], -0.5, 0.5)
        }
        for l in [block.qkv, block.proj, block.fc1, block.fc2] { l.weight.value.data = l.weight.value.data.map { $0 * 10 } }
        XCTAssertEqual(block.parameters.map(\.name), ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
                                                     "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                                                     "mlp.fc2.weight", "mlp.fc2.bias"].map { "blocks.0.\($0)" })
        XCTAssertEqual(block.parameters.map(\.value.shape), [[6], [6], [18, 6], [18], [6, 6], [6], [6], [6], [12, 6], [12], [6, 12], [6]])
        gradientCheck(block, input: rnd.tensor([2, 4, 6], -2, 2), seed: 5, h: 5e-3, tol: 2e-3, label: "vit block")
    }

    func testLayerNormOverTokensGradient() throws {
        var rnd = TestRandom(6)
        let ln = try XCTUnwrap(try LayerSpec.layerNorm(5, eps: 1e-6).build(prefix: "norm", seed: 0) as? LayerNorm)
        ln.weight.value = rnd.tensor([5], 0.5, 1.5); ln.bias.value = rnd.tensor([5], -0.5, 0.5)
        XCTAssertEqual(ln.parameters.map(\.name), ["norm.weight", "norm.bias"])
        gradientCheck(ln, input: rnd.tensor([2, 3, 5], -2, 2), seed: 7, label: "layernorm over tokens")
    }

    func testPatchEmbeddingAndTokens() throws {
        var rnd = TestRandom(8)
        let pe = try XCTUnwrap(try LayerSpec.patchEmbed(imageSize: 6, patch: 3, channels: 2, width: 5).build(prefix: "patch_embed", seed: 9) as? PatchEmbedding)
        XCTAssertEqual(pe.parameters.map(\.name), ["patch_embed.proj.weight", "patch_embed.proj.bias"])
        XCTAssertEqual(pe.parameters.map(\.value.shape), [[5, 2, 3, 3], [5]])
        XCTAssertEqual(try pe.outputShape(for: [2, 6, 6]), [4, 5])
        let x = rnd.tensor([2, 2, 6, 6])
        gradientCheck(pe, input: x, seed: 10, label: "patch embedding")
        // Equals a stride-3 convolution with the same weight, flattened and transposed (timm's PatchEmbed).
        let conv = try XCTUnwrap(try LayerSpec.conv2d(2, 5, kernel: 3, stride: 3).build(prefix: "c", seed: 0) as? Conv2d)
        conv.weight.value = pe.proj.weight.value; conv.bias!.value = pe.proj.bias!.value
        let yc = conv.forward(x, mode: .eval), yp = pe.forward(x, mode: .eval)
        XCTAssertEqual(yp.shape, [2, 4, 5])
        var ref = [Double]()
        for s in 0..<2 { for n in 0..<4 { for o in 0..<5 { ref.append(Double(yc.data[(s * 5 + o) * 4 + n])) } } }
        assertClose(yp.data, ref, tol: 1e-6, "patch embedding = strided conv")

        let ct = try XCTUnwrap(try LayerSpec.classTokenPosition(patches: 4, width: 5).build(prefix: "", seed: 11) as? ClassTokenPosition)
        XCTAssertEqual(ct.parameters.map(\.name), ["cls_token", "pos_embed"])
        XCTAssertEqual(ct.parameters.map(\.value.shape), [[1, 1, 5], [1, 5, 5]])
        ct.classToken.value = rnd.tensor([1, 1, 5])
        gradientCheck(ct, input: rnd.tensor([3, 4, 5]), seed: 12, label: "class token + positions")
        gradientCheck(ClassTokenPool(spec: .classTokenPool), input: rnd.tensor([3, 5, 4]), seed: 13, label: "class-token pooling")
    }

    /// A whole ViT: the gradient of the loss w.r.t. a few parameter entries of every kind by central
    /// differences through every layer (the model-level wiring of the block's residuals and heads).
    func testWholeModelGradients() throws {
        let model = try Model(try .vit(imageSize: 4, patch: 2, channels: 1, width: 4, depth: 2, heads: 2, mlpRatio: 1, classes: 3), seed: 3)
        var rnd = TestRandom(14)
        let x = rnd.tensor([2, 1, 4, 4]), y = [0, 2]
        func loss() throws -> Double {
            let z = try model.forward(x, head: "default", mode: .eval)
            var total = 0.0   // mean cross-entropy in Double, so the differences are not Float-rounded
            for n in 0..<2 {
                let row = (0..<3).map { Double(z.data[n * 3 + $0]) }, m = row.max()!
                total += m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) }) - row[y[n]]
            }
            return total / 2
        }
        let z = try model.forward(x, head: "default", mode: .eval)
        model.zeroGrad()
        try model.backward(CrossEntropy()(z, labels: y).gradient, head: "default")
        XCTAssertEqual(model.parameters.count, 4 + 12 * 2 + 2 + 2)
        var worst = 0.0
        for p in model.parameters {
            for i in Set([0, p.value.count / 2, p.value.count - 1]) {
                let v = p.value.data[i], h: Float = 1e-3
                p.value.data[i] = v + h; let up = try loss()
                p.value.data[i] = v - h; let dn = try loss()
                p.value.data[i] = v
                let num = (up - dn) / (Double(v + h) - Double(v - h)), a = Double(p.grad.data[i])
                let err = abs(num - a) / max(abs(num), 0.05)   // Float forward noise is ~3e-5 absolute; gradients reach ~10
                worst = max(worst, err)
                XCTAssertLessThanOrEqual(err, 2e-2, "\(p.name)[\(i)]: analytic \(a), numeric \(num)")
            }
        }
        print("vit whole-model gradient check: worst relative error \(worst)")
    }

    func testArchitectureNamesAndErrors() throws {
        let a = try Architecture.vit(imageSize: 8, patch: 4, channels: 3, width: 12, depth: 2, heads: 3, classes: 5, head: "imagenet", headPrefix: "head")
        try a.validate()
        XCTAssertEqual(try a.featureShape(), [12])
        let m = try Model(a, seed: 0)
        let names = m.parameters.map(\.name)
        XCTAssertEqual(names.prefix(4), ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"])
        XCTAssertEqual(names.suffix(4), ["norm.weight", "norm.bias", "head.weight", "head.bias"])
        XCTAssertEqual(m.parameters.first { $0.name == "pos_embed" }?.value.shape, [1, 5, 12])
        expectEngineError(["multiple of num_heads"]) { _ = try Architecture.vit(imageSize: 8, patch: 4, channels: 3, width: 10, depth: 1, heads: 3, classes: 2).validate() }
        expectEngineError(["multiple of the patch size"]) { _ = try Architecture.vit(imageSize: 9, patch: 4, channels: 3, width: 12, depth: 1, heads: 3, classes: 2) }
        var dup = a
        dup.layers[3].name = "blocks.0"
        expectEngineError(["two parameters are named", "blocks.0.norm1.weight"]) { try dup.validate() }
        var wrong = a
        wrong.layers[1].numPatches = 3
        expectEngineError(["pos_embed", "[4, 12]"]) { try wrong.validate() }
    }

    /// Inference gives the evaluation-mode logits bit for bit and keeps no activations behind.
    func testInferenceModeKeepsNothing() throws {
        let model = try Model(try .vit(imageSize: 8, patch: 4, channels: 2, width: 8, depth: 2, heads: 2, classes: 3), seed: 1)
        var rnd = TestRandom(15)
        let x = rnd.tensor([3, 2, 8, 8])
        let e = try model.forward(x, head: "default", mode: .eval)
        XCTAssertTrue(model.body.flatMap(\.allLayers).allSatisfy { $0.lastInput != nil })
        let i = try model.forward(x, head: "default", mode: .inference)
        XCTAssertEqual(bits(i.data), bits(e.data))
        XCTAssertTrue(model.body.flatMap(\.allLayers).allSatisfy { $0.lastInput == nil }, "inference keeps no layer input")
    }
}
