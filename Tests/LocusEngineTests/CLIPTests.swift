import Foundation
import LocusTestSupport
import XCTest
import LocusFormat

@testable import LocusEngine

/// CLIP's image tower (docs/clip.md): QuickGELU, the bias-free patch embedding, the output projection
/// `proj` and the fixed zero-shot head — forward values against direct Double computations, gradients
/// against central differences (through both normalisations of the zero-shot head), the whole model's
/// wiring, and training that leaves the zero-shot head alone. open_clip itself is the reference in
/// interop/tests/test_clip.py.
final class CLIPTests: EngineTestCase {
    static func clipArchitecture(classes: Int = 3, activation: String? = "quick_gelu") throws -> Architecture {
        var v = Architecture.ViTVariant()
        v.activation = activation; v.patchBias = false; v.normPre = true; v.eps = 1e-5; v.projection = 6; v.zeroShot = true
        return try .vit(imageSize: 4, patch: 2, channels: 2, width: 4, depth: 2, heads: 2, mlpRatio: 2, classes: classes, head: "zs", variant: v)
    }

    func testQuickGELU() throws {
        var rnd = TestRandom(1)
        let l = try LayerSpec.quickGelu.build(prefix: "a", seed: 0)
        var x = rnd.tensor([3, 7], -4, 4)
        x.data[0] = -100; x.data[1] = 100; x.data[2] = 0   // far tails and zero
        let y = l.forward(x, mode: .train)
        let ref = x.data.map { v -> Double in let d = Double(v); return d / (1 + Foundation.exp(-1.702 * d)) }
        assertClose(y.data, ref, tol: 1e-6, "quick_gelu forward")
        XCTAssertTrue(y.data.allSatisfy(\.isFinite))
        gradientCheck(l, input: rnd.tensor([3, 7], -4, 4), seed: 2, h: 1e-2, label: "quick_gelu")
        // The block's activation follows act_layer; exact GELU stays the default.
        let quick = try XCTUnwrap(try LayerSpec.transformerBlock(0, width: 4, heads: 2, activation: "quick_gelu").build(prefix: "b", seed: 0) as? TransformerBlock)
        XCTAssertTrue(quick.activation is QuickGELU)
        let plain = try XCTUnwrap(try LayerSpec.transformerBlock(0, width: 4, heads: 2).build(prefix: "b", seed: 0) as? TransformerBlock)
        XCTAssertTrue(plain.activation is GELU)
        var rnd2 = TestRandom(3)
        for l in [quick.qkv, quick.proj, quick.fc1, quick.fc2] { l.weight.value.data = l.weight.value.data.map { $0 * 10 } }
        gradientCheck(quick, input: rnd2.tensor([2, 3, 4], -2, 2), seed: 4, h: 5e-3, tol: 2e-3, label: "vit block with QuickGELU")
    }

    func testPatchEmbeddingWithoutBias() throws {
        var rnd = TestRandom(5)
        let spec = LayerSpec.patchEmbed(imageSize: 6, patch: 3, channels: 2, width: 5, bias: false)
        XCTAssertEqual(spec.bias, false)
        XCTAssertNil(LayerSpec.patchEmbed(imageSize: 6, patch: 3, channels: 2, width: 5).bias, "the default leaves the key out")
        let pe = try XCTUnwrap(try spec.build(prefix: "patch_embed", seed: 6) as? PatchEmbedding)
        XCTAssertEqual(pe.parameters.map(\.name), ["patch_embed.proj.weight"])
        let x = rnd.tensor([2, 2, 6, 6])
        gradientCheck(pe, input: x, seed: 7, label: "patch embedding without bias")
        let conv = try XCTUnwrap(try LayerSpec.conv2d(2, 5, kernel: 3, stride: 3, bias: false).build(prefix: "c", seed: 0) as? Conv2d)
        conv.weight.value = pe.proj.weight.value
        let yc = conv.forward(x, mode: .eval), yp = pe.forward(x, mode: .eval)
        var ref = [Double]()
        for s in 0..<2 { for n in 0..<4 { for o in 0..<5 { ref.append(Double(yc.data[(s * 5 + o) * 4 + n])) } } }
        assertClose(yp.data, ref, tol: 1e-6, "bias-free patch embedding = bias-free strided conv")
    }

    func testProjection() throws {
        var rnd = TestRandom(8)
        let l = try XCTUnwrap(try LayerSpec.projection(5, 3).build(prefix: "", seed: 9) as? Projection)
        XCTAssertEqual(l.parameters.map(\.name), ["proj"])
        XCTAssertEqual(l.weight.value.shape, [5, 3], "open_clip's layout [width, output_dim], not a Linear's [out, in]")
        XCTAssertEqual(try l.outputShape(for: [5]), [3])
        expectEngineError(["proj", "[5]"]) { _ = try l.outputShape(for: [2, 5]) }
        let x = rnd.tensor([4, 5])
        let y = l.forward(x, mode: .eval)
        var ref = [Double]()
        for n in 0..<4 { for j in 0..<3 { ref.append((0..<5).reduce(0.0) { $0 + Double(x.data[n * 5 + $1]) * Double(l.weight.value.data[$1 * 3 + j]) }) } }
        assertClose(y.data, ref, tol: 1e-6, "x @ proj")
        gradientCheck(l, input: x, seed: 10, label: "projection")
    }

    /// The head has parameters that never get gradients; the layer seen without them has its input gradient checked.
    final class InputOnly: ParameterFree {
        let inner: any Layer
        init(_ inner: any Layer) { self.inner = inner }
        var spec: LayerSpec { inner.spec }
        var lastInput: Tensor? { inner.lastInput }
        var lastOutputGradient: Tensor? { inner.lastOutputGradient }
        func outputShape(for input: [Int]) throws -> [Int] { try inner.outputShape(for: input) }
        func forward(_ x: Tensor, mode: Mode) -> Tensor { inner.forward(x, mode: mode) }
        func backward(_ gy: Tensor) -> Tensor { inner.backward(gy) }
    }

    func testZeroShotHead() throws {
        var rnd = TestRandom(11)
        let head = ZeroShotHead(prefix: "heads.zs", features: 6, classes: 4, seed: 12)
        XCTAssertEqual(head.parameters.map(\.name), ["heads.zs.text_embeddings", "heads.zs.logit_scale"])
        XCTAssertEqual(head.parameters.map(\.value.shape), [[4, 6], []])
        XCTAssertFalse(head.isTrainable)
        head.logitScale.value.data = [Float(Foundation.log(7.5))]
        let x = rnd.tensor([3, 6], -2, 2)
        let y = head.forward(x, mode: .eval)
        // s · ⟨f/‖f‖, t_c/‖t_c‖⟩ in Double.
        let t = head.textEmbeddings.value.data
        func norm(_ v: ArraySlice<Float>) -> Double { v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
        var ref = [Double]()
        for n in 0..<3 { for c in 0..<4 {
            let f = x.data[(n * 6)..<(n * 6 + 6)], tc = t[(c * 6)..<(c * 6 + 6)]
            ref.append(7.5 * zip(f, tc).reduce(0.0) { $0 + Double($1.0) * Double($1.1) } / (norm(f) * norm(tc)))
        } }
        assertClose(y.data, ref, tol: 1e-6, "zero-shot logits")
        // The text embeddings' own norms do not matter (they are normalised), the features' do not either.
        let scaled = ZeroShotHead(prefix: "heads.zs", features: 6, classes: 4, seed: 12)
        scaled.logitScale.value = head.logitScale.value
        scaled.textEmbeddings.value.data = t.map { $0 * 3 }
        assertClose(scaled.forward(Tensor(shape: x.shape, data: x.data.map { $0 * 0.25 }), mode: .eval).data, ref, tol: 1e-6, "scale invariance")
        gradientCheck(InputOnly(head), input: x, seed: 13, h: 1e-3, label: "zero-shot head (input gradient through the normalisations)")
        head.parameters.forEach { $0.zeroGrad() }
        _ = head.forward(x, mode: .eval); _ = head.backward(rnd.tensor([3, 4]))
        XCTAssertTrue(head.parameters.allSatisfy { $0.grad.data.allSatisfy { $0 == 0 } }, "a fixed head accumulates no gradient")
        // A zero feature vector: normalize gives 0 (F.normalize clamps the norm at 1e-12), not NaN.
        let z = head.forward(Tensor(zeros: [1, 6]), mode: .eval)
        XCTAssertEqual(z.data, [0, 0, 0, 0])
        XCTAssertTrue(head.backward(Tensor(shape: [1, 4], repeating: 1)).data.allSatisfy(\.isFinite))
    }

    /// The fixed head's per-sample statistics against central differences of its function in Double:
    /// for each sample n, G_n = ∂(Σ_c δ_nc y_nc)/∂θ, summed as Σ_n G_n².
    func testZeroShotHeadPerSampleSquaredGradients() throws {
        var rnd = TestRandom(21)
        let head = ZeroShotHead(prefix: "heads.zs", features: 5, classes: 3, seed: 22)
        head.logitScale.value.data = [Float(Foundation.log(4.0))]
        head.textEmbeddings.value.data[5..<10] = [0, 0, 0, 0, 0]   // a zero class row: its norm is clamped at ε
        let b = 4, x = rnd.tensor([b, 5], -2, 2), delta = rnd.tensor([b, 3])
        _ = head.forward(x, mode: .eval); _ = head.backward(delta)
        func output(_ n: Int, _ t: [Double], _ l: Double) -> Double {
            func normalized(_ v: [Double]) -> [Double] { let r = max(v.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12); return v.map { $0 / r } }
            let f = normalized((0..<5).map { Double(x.data[n * 5 + $0]) })
            return (0..<3).reduce(0.0) { acc, c in
                let tc = normalized(Array(t[(c * 5)..<(c * 5 + 5)]))
                return acc + Double(delta.data[n * 3 + c]) * Foundation.exp(l) * zip(f, tc).reduce(0) { $0 + $1.0 * $1.1 }
            }
        }
        let t0 = head.textEmbeddings.value.data.map(Double.init), l0 = Double(head.logitScale.value.data[0]), h = 1e-6
        var refT = [Double](repeating: 0, count: 15), refL = [0.0]
        for n in 0..<b {
            for i in 0..<15 where !(5..<10).contains(i) {
                var up = t0, down = t0; up[i] += h; down[i] -= h
                let g = (output(n, up, l0) - output(n, down, l0)) / (2 * h)
                refT[i] += g * g
            }
            let g = (output(n, t0, l0 + h) - output(n, t0, l0 - h)) / (2 * h)
            refL[0] += g * g
        }
        // The zero row: F.normalize divides by ε there, so ∂/∂T_c = s δ_nc u_n / ε (differences would blow up).
        for n in 0..<b {
            let f = (0..<5).map { Double(x.data[n * 5 + $0]) }, r = f.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for j in 0..<5 { let g = 4 * Double(delta.data[n * 3 + 1]) * f[j] / r / 1e-12; refT[5 + j] += g * g }
        }
        var gotT = [Float](repeating: 0, count: 15), gotL: [Float] = [0]
        try head.addSquaredPerSampleGradients(of: head.textEmbeddings, batch: b, into: &gotT)
        try head.addSquaredPerSampleGradients(of: head.logitScale, batch: b, into: &gotL)
        assertClose(Array(gotT[0..<5] + gotT[10..<15]), Array(refT[0..<5] + refT[10..<15]), tol: 1e-5, "text embeddings")
        assertClose(Array(gotT[5..<10]), Array(refT[5..<10]), tol: 1e-5, "text embeddings, zero row")
        assertClose(gotL, refL, tol: 1e-5, "logit scale")
    }

    /// The whole CLIP tower: the loss gradient of a few entries of every parameter through the zero-shot head.
    func testWholeModelGradients() throws {
        let arch = try Self.clipArchitecture()
        let model = try Model(arch, seed: 3)
        XCTAssertEqual(model.parameters.map(\.name).filter { !$0.hasPrefix("blocks.") },
                       ["patch_embed.proj.weight", "cls_token", "pos_embed", "norm_pre.weight", "norm_pre.bias", "norm.weight", "norm.bias", "proj",
                        "heads.zs.text_embeddings", "heads.zs.logit_scale"])
        var rnd = TestRandom(14)
        for case let ln as LayerNorm in model.body.flatMap(\.allLayers) {
            ln.weight.value = rnd.tensor(ln.weight.value.shape, 0.5, 1.5); ln.bias.value = rnd.tensor(ln.bias.value.shape, -0.5, 0.5)
        }
        let zs = try XCTUnwrap(try model.head("zs") as? ZeroShotHead)
        zs.logitScale.value.data = [Float(Foundation.log(5.0))]
        let x = rnd.tensor([2, 2, 4, 4]), y = [0, 2]
        func loss() throws -> Double {
            let z = try model.forward(x, head: "zs", mode: .eval)
            var total = 0.0
            for n in 0..<2 {
                let row = (0..<3).map { Double(z.data[n * 3 + $0]) }, m = row.max()!
                total += m + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - m) }) - row[y[n]]
            }
            return total / 2
        }
        let z = try model.forward(x, head: "zs", mode: .eval)
        model.zeroGrad()
        try model.backward(CrossEntropy()(z, labels: y).gradient, head: "zs")
        var worst = 0.0
        for p in model.bodyParameters {
            for i in Set([0, p.value.count / 2, p.value.count - 1]) {
                let v = p.value.data[i], h: Float = 1e-3
                p.value.data[i] = v + h; let up = try loss()
                p.value.data[i] = v - h; let dn = try loss()
                p.value.data[i] = v
                let num = (up - dn) / (Double(v + h) - Double(v - h)), a = Double(p.grad.data[i])
                let err = abs(num - a) / max(abs(num), 0.05)
                worst = max(worst, err)
                XCTAssertLessThanOrEqual(err, 2e-2, "\(p.name)[\(i)]: analytic \(a), numeric \(num)")
            }
        }
        print("clip whole-model gradient check: worst relative error \(worst)")
    }

    func testArchitectureDescription() throws {
        let arch = try Self.clipArchitecture()
        try arch.validate()
        XCTAssertEqual(arch.layers.map(\.type), ["patch_embed", "class_token_position", "layernorm", "vit_block", "vit_block", "layernorm",
                                                 "class_token_pool", "projection"])
        XCTAssertEqual(arch.layers[2].name, "norm_pre")
        XCTAssertEqual(arch.heads[0].type, "zero_shot")
        XCTAssertEqual(arch.heads[0].inFeatures, 6)
        let decoded = try JSONDecoder().decode(Architecture.self, from: Data(try arch.json().utf8))
        XCTAssertEqual(decoded, arch)
        // timm's ViT description has none of the new keys, so it reads as before.
        let timm = try Architecture.vit(imageSize: 8, patch: 4, channels: 3, width: 12, depth: 1, heads: 3, classes: 5)
        let text = try timm.json()
        for key in ["act_layer", "\"bias\"", "projection", "\"type\":\"zero_shot\"", "norm_pre"] { XCTAssertFalse(text.contains(key), key) }
        var bad = arch
        bad.layers[3].actLayer = "swish"
        expectEngineError(["act_layer", "swish", "quick_gelu"]) { try bad.validate() }
        bad = arch
        bad.heads[0].type = "cosine"
        expectEngineError(["zs", "cosine", "zero_shot"]) { try bad.validate() }
        bad = arch
        bad.heads[0].inFeatures = 4
        expectEngineError(["zs", "4 features", "[6]"]) { try bad.validate() }
    }

    /// Dense training (body) and sparse fine-tuning leave the zero-shot head bit for bit; it cannot be trained.
    func testTrainingLeavesTheZeroShotHeadFixed() throws {
        let model = try Model(try Self.clipArchitecture(classes: 2), seed: 4)
        var rnd = TestRandom(15)
        let n = 8
        let x = rnd.tensor([n, 2, 4, 4])
        let data = LabelledData(inputs: .float32(x.data), shape: [n, 2, 4, 4], labels: (0..<n).map { Int64($0 % 2) }, classes: ["a", "b"],
                                splits: ["train": Array(0..<n)])
        let train = try Batches(data, split: "train", inputShape: [2, 4, 4], classes: 2)
        let head = try model.head("zs")
        let before = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, bits($0.value.data)) })
        var c = TrainingConfig(); c.epochs = 1; c.batchSize = 4; c.learningRate = 0.05; c.optimizer = .sgd
        _ = try Training.fit(model, head: "zs", train: train, validation: nil, config: c)
        for p in head.parameters { XCTAssertEqual(bits(p.value.data), before[p.name], "\(p.name) changed in training") }
        XCTAssertTrue(model.bodyParameters.contains { bits($0.value.data) != before[$0.name] }, "the body was not trained")
        c.trainBody = false
        expectEngineError(["zs", "zero-shot", "nothing to train"]) { _ = try Training.fit(model, head: "zs", train: train, validation: nil, config: c) }
        c.trainBody = true
        expectEngineError(["zs", "zero-shot"]) {
            _ = try Training.fitSparse(model, head: "zs", train: train, validation: nil, config: c, masks: [], trainHead: true)
        }
        // A mask that lists the head's tensors as trainable does not make them so.
        let mid = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, bits($0.value.data)) })
        let masks = [(model.bodyParameters[0], ParameterMask.dense)] + head.parameters.map { ($0, ParameterMask.dense) }
        _ = try Training.fitSparse(model, head: "zs", train: train, validation: nil, config: c, masks: masks, trainHead: false)
        for p in head.parameters { XCTAssertEqual(bits(p.value.data), mid[p.name], "\(p.name) changed in sparse fine-tuning") }
        XCTAssertNotEqual(bits(model.bodyParameters[0].value.data), mid[model.bodyParameters[0].name])
    }

    /// Saved and loaded: the architecture and every tensor, the scalar logit_scale included.
    func testCheckpointRoundTrip() throws {
        let model = try Model(try Self.clipArchitecture(), seed: 5)
        let p = path("clip.h5")
        try model.save(p)
        let back = try Model.load(p)
        XCTAssertEqual(back.architecture, model.architecture)
        XCTAssertEqual(back.parameters.map(\.name), model.parameters.map(\.name))
        for (a, b) in zip(back.parameters, model.parameters) { XCTAssertEqual(a.value, b.value, a.name) }
    }
}
