import LocusTestSupport
import XCTest

@testable import LocusEngine

/// Analytic gradients of every layer against central differences of f = Σ layer(x) ⊙ R.
final class GradientCheckTests: EngineTestCase {
    private func layer(_ spec: LayerSpec, seed: UInt64 = 1) throws -> any Layer { try spec.build(prefix: "layers.0", seed: seed) }

    func testLinearWithBias() throws {
        var rnd = TestRandom(1)
        let l = try layer(.linear(5, 4))
        XCTAssertEqual(l.parameters.map(\.name), ["layers.0.weight", "layers.0.bias"])
        XCTAssertEqual(l.parameters.map(\.value.shape), [[4, 5], [4]])
        gradientCheck(l, input: rnd.tensor([3, 5]), seed: 2, label: "linear 5→4")
    }

    func testLinearWithoutBias() throws {
        var rnd = TestRandom(3)
        let l = try layer(.linear(6, 3, bias: false))
        XCTAssertEqual(l.parameters.map(\.name), ["layers.0.weight"])
        gradientCheck(l, input: rnd.tensor([4, 6]), seed: 4, label: "linear 6→3 no bias")
    }

    func testLinearForwardValues() throws {
        // y = x Wᵀ + b, checked element by element in Double.
        var rnd = TestRandom(5)
        let l = try XCTUnwrap(try layer(.linear(5, 3)) as? Linear)
        let x = rnd.tensor([2, 5])
        let y = l.forward(x, mode: .eval)
        XCTAssertEqual(y.shape, [2, 3])
        var ref = [Double]()
        for r in 0..<2 { for o in 0..<3 {
            var s = Double(l.bias!.value.data[o])
            for i in 0..<5 { s += Double(x.data[r * 5 + i]) * Double(l.weight.value.data[o * 5 + i]) }
            ref.append(s)
        } }
        assertClose(y.data, ref, tol: 1e-6, "linear forward")
    }

    func testConv2dConfigurations() throws {
        // (in, out, kernel, stride, padding, bias, H, W)
        let cases: [(Int, Int, Int, Int, Int, Bool, Int, Int)] = [
            (2, 3, 3, 1, 0, true, 6, 6),
            (2, 3, 3, 2, 1, true, 6, 6),
            (3, 2, 2, 2, 0, true, 6, 6),
            (1, 4, 5, 1, 2, true, 6, 6),
            (2, 2, 3, 2, 0, false, 7, 5),    // odd, non-square input; no bias
            (2, 3, 3, 1, 1, true, 5, 6),
            (2, 2, 2, 3, 0, true, 7, 7),     // stride > kernel: input pixels no window touches get zero gradient
            (1, 2, 3, 2, 2, true, 4, 4),     // padding larger than half the kernel
        ]
        var worst = 0.0
        for (n, c) in cases.enumerated() {
            let (ci, co, k, s, p, bias, h, w) = c
            var rnd = TestRandom(10 + UInt64(n))
            let l = try layer(.conv2d(ci, co, kernel: k, stride: s, padding: p, bias: bias), seed: UInt64(n))
            XCTAssertEqual(l.parameters.map(\.value.shape), [[co, ci, k, k]] + (bias ? [[co]] : []))
            let expected = [co, (h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1]
            XCTAssertEqual(try l.outputShape(for: [ci, h, w]), expected)
            let x = rnd.tensor([2, ci, h, w])
            XCTAssertEqual(l.forward(x, mode: .train).shape, [2] + expected)
            let r = gradientCheck(l, input: x, seed: 100 + UInt64(n), label: "conv2d \(c)")
            worst = max(worst, r.worst)
        }
        print("conv2d gradient check: worst normalized error \(worst)")
    }

    func testConv2dForwardAgainstDirectSum() throws {
        var rnd = TestRandom(20)
        let l = try XCTUnwrap(try layer(.conv2d(2, 3, kernel: 3, stride: 2, padding: 1)) as? Conv2d)
        let (b, ci, h, w) = (2, 2, 6, 5)
        let x = rnd.tensor([b, ci, h, w])
        let y = l.forward(x, mode: .eval)
        let ho = (h + 2 - 3) / 2 + 1, wo = (w + 2 - 3) / 2 + 1
        XCTAssertEqual(y.shape, [b, 3, ho, wo])
        var ref = [Double]()
        for s in 0..<b { for o in 0..<3 { for oh in 0..<ho { for ow in 0..<wo {
            var acc = Double(l.bias!.value.data[o])
            for c in 0..<ci { for kh in 0..<3 { for kw in 0..<3 {
                let ih = oh * 2 - 1 + kh, iw = ow * 2 - 1 + kw
                guard ih >= 0, ih < h, iw >= 0, iw < w else { continue }
                acc += Double(x.data[((s * ci + c) * h + ih) * w + iw]) * Double(l.weight.value.data[((o * ci + c) * 3 + kh) * 3 + kw])
            } } }
            ref.append(acc)
        } } } }
        assertClose(y.data, ref, tol: 1e-6, "conv2d forward vs direct sum")
    }

    func testReLUAwayFromZero() throws {
        var rnd = TestRandom(30)
        let l = try layer(.relu)
        let x = rnd.awayFromZero([3, 7])
        let y = l.forward(x, mode: .train)
        XCTAssertEqual(y.data, x.data.map { max($0, 0) })
        gradientCheck(l, input: x, seed: 31, label: "relu")
        // 4-D input keeps its shape.
        let x4 = rnd.awayFromZero([2, 2, 3, 3])
        gradientCheck(l, input: x4, seed: 32, label: "relu 4-D")
    }

    func testGELU() throws {
        var rnd = TestRandom(40)
        let l = try layer(.gelu)
        let x = rnd.tensor([3, 6], -3, 3)
        let y = l.forward(x, mode: .train)
        // Exact GELU x·Φ(x) (PyTorch's default), not the tanh approximation.
        let ref = x.data.map { v -> Double in let d = Double(v); return 0.5 * d * (1 + erf(d / 2.0.squareRoot())) }
        assertClose(y.data, ref, tol: 1e-6, "gelu forward")
        let r = gradientCheck(l, input: x, seed: 41, h: 1e-2, label: "gelu")
        print("gelu gradient check: \(r.inputError ?? -1)")
    }

    func testFlatten() throws {
        var rnd = TestRandom(50)
        let l = try layer(.flatten)
        XCTAssertEqual(try l.outputShape(for: [2, 3, 4]), [24])
        let x = rnd.tensor([2, 2, 3, 4])
        let y = l.forward(x, mode: .train)
        XCTAssertEqual(y.shape, [2, 24])
        XCTAssertEqual(y.data, x.data)
        gradientCheck(l, input: x, seed: 51, label: "flatten")
        let g = l.backward(y)
        XCTAssertEqual(g.shape, x.shape)
    }

    func testMaxPoolNoTies() throws {
        // (kernel, stride, H, W): non-overlapping, overlapping, and a size the windows do not cover exactly.
        for (n, c) in [(2, 2, 6, 6), (3, 2, 7, 7), (2, 1, 5, 5), (2, 2, 5, 6), (3, 3, 6, 6)].enumerated() {
            var rnd = TestRandom(60 + UInt64(n))
            let l = try layer(.maxPool2d(c.0, stride: c.1))
            let x = rnd.distinct([2, 3, c.2, c.3])
            let ho = (c.2 - c.0) / c.1 + 1, wo = (c.3 - c.0) / c.1 + 1
            let y = l.forward(x, mode: .train)
            XCTAssertEqual(y.shape, [2, 3, ho, wo])
            // Forward: the window maximum.
            var ref = [Double]()
            for pl in 0..<6 { for oh in 0..<ho { for ow in 0..<wo {
                var m = -Float.infinity
                for kh in 0..<c.0 { for kw in 0..<c.0 { m = max(m, x.data[pl * c.2 * c.3 + (oh * c.1 + kh) * c.3 + ow * c.1 + kw]) } }
                ref.append(Double(m))
            } } }
            assertClose(y.data, ref, tol: 0, "maxpool forward \(c)")
            gradientCheck(l, input: x, seed: 70 + UInt64(n), label: "maxpool \(c)")
        }
    }

    func testAvgPool() throws {
        for (n, c) in [(2, 2, 6, 6), (3, 2, 7, 7), (2, 1, 5, 5), (3, 3, 7, 6)].enumerated() {
            var rnd = TestRandom(80 + UInt64(n))
            let l = try layer(.avgPool2d(c.0, stride: c.1))
            let x = rnd.tensor([2, 2, c.2, c.3])
            let ho = (c.2 - c.0) / c.1 + 1, wo = (c.3 - c.0) / c.1 + 1
            let y = l.forward(x, mode: .train)
            XCTAssertEqual(y.shape, [2, 2, ho, wo])
            var ref = [Double]()
            for pl in 0..<4 { for oh in 0..<ho { for ow in 0..<wo {
                var s = 0.0
                for kh in 0..<c.0 { for kw in 0..<c.0 { s += Double(x.data[pl * c.2 * c.3 + (oh * c.1 + kh) * c.3 + ow * c.1 + kw]) } }
                ref.append(s / Double(c.0 * c.0))
            } } }
            assertClose(y.data, ref, tol: 1e-6, "avgpool forward \(c)")
            gradientCheck(l, input: x, seed: 90 + UInt64(n), label: "avgpool \(c)")
        }
    }

    func testLayerNorm() throws {
        var rnd = TestRandom(100)
        let l = try XCTUnwrap(try layer(.layerNorm(5)) as? LayerNorm)
        XCTAssertEqual(l.parameters.map(\.name), ["layers.0.weight", "layers.0.bias"])
        XCTAssertEqual(l.weight.value.data, [1, 1, 1, 1, 1], "PyTorch's init: γ = 1")
        XCTAssertEqual(l.bias.value.data, [0, 0, 0, 0, 0], "PyTorch's init: β = 0")
        // Non-trivial γ, β so every path of the backward pass matters.
        l.weight.value = rnd.tensor([5], 0.5, 1.5)
        l.bias.value = rnd.tensor([5])
        let x = rnd.tensor([3, 5], -2, 2)
        let y = l.forward(x, mode: .train)
        var ref = [Double]()
        for r in 0..<3 {
            let row = (0..<5).map { Double(x.data[r * 5 + $0]) }
            let mean = row.reduce(0, +) / 5
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 5   // biased, as PyTorch
            for j in 0..<5 {
                ref.append((row[j] - mean) / (variance + 1e-5).squareRoot() * Double(l.weight.value.data[j]) + Double(l.bias.value.data[j]))
            }
        }
        assertClose(y.data, ref, tol: 1e-5, "layernorm forward")
        let r = gradientCheck(l, input: x, seed: 101, h: 1e-2, tol: 2e-3, label: "layernorm [3, 5]")
        print("layernorm gradient check: \(r)")
        // Over the last dimension of a 3-D input, with a large eps.
        let l3 = try XCTUnwrap(try layer(.layerNorm(4, eps: 0.1)) as? LayerNorm)
        l3.weight.value = rnd.tensor([4], 0.5, 1.5)
        l3.bias.value = rnd.tensor([4])
        XCTAssertEqual(try l3.outputShape(for: [3, 4]), [3, 4])
        gradientCheck(l3, input: rnd.tensor([2, 3, 4], -2, 2), seed: 102, tol: 2e-3, label: "layernorm [2, 3, 4] eps 0.1")
    }

    func testDropoutTrainUsesOneMaskAndScalesGradient() throws {
        var rnd = TestRandom(110)
        let p = 0.25
        let l = try layer(.dropout(p), seed: 7)
        let x = rnd.awayFromZero([4, 50])
        let y = l.forward(x, mode: .train)
        let scale = 1 / (1 - Float(p))
        var mask = [Float]()
        for i in 0..<x.count {
            XCTAssertTrue(y.data[i] == 0 || y.data[i] == x.data[i] * scale, "element \(i): \(y.data[i]) is neither 0 nor x/(1−p)")
            mask.append(y.data[i] == 0 ? 0 : scale)
        }
        let dropped = Double(mask.filter { $0 == 0 }.count) / Double(mask.count)
        XCTAssertEqual(dropped, p, accuracy: 0.08, "fraction dropped")
        // Gradient = mask · scale for the mask of the last forward pass.
        let gy = rnd.tensor([4, 50])
        let gx = l.backward(gy)
        XCTAssertEqual(bits(gx.data), bits(zip(gy.data, mask).map { $0 * $1 }))
        // The gradient is exactly the derivative of that forward (f = Σ y ⊙ gy is linear in x for a fixed mask).
        XCTAssertEqual(objective(y, gy), objective(x, gx), accuracy: 1e-4)
        // A new forward draws a new mask.
        let y2 = l.forward(x, mode: .train)
        XCTAssertNotEqual(y2.data, y.data, "each training forward draws a fresh mask")
        // Same seed, same masks.
        let twin = try layer(.dropout(p), seed: 7)
        XCTAssertEqual(bits(twin.forward(x, mode: .train).data), bits(y.data))
    }

    func testDropoutEvalIsIdentity() throws {
        var rnd = TestRandom(120)
        let l = try layer(.dropout(0.5), seed: 3)
        let x = rnd.tensor([3, 8])
        _ = l.forward(x, mode: .train)   // a stale training mask must not leak into evaluation
        let y = l.forward(x, mode: .eval)
        XCTAssertEqual(bits(y.data), bits(x.data))
        let gy = rnd.tensor([3, 8])
        XCTAssertEqual(bits(l.backward(gy).data), bits(gy.data))
        gradientCheck(l, input: x, seed: 121, mode: .eval, label: "dropout eval")
        // p = 0 is the identity in training too.
        let l0 = try layer(.dropout(0), seed: 3)
        XCTAssertEqual(bits(l0.forward(x, mode: .train).data), bits(x.data))
        XCTAssertEqual(bits(l0.backward(gy).data), bits(gy.data))
    }

    // MARK: cross-entropy

    /// −Σ target · log softmax, mean over rows, in Double.
    private func referenceLoss(_ z: Tensor, _ labels: [Int], smoothing: Double) -> (loss: Double, grad: [Double]) {
        let b = z.rows, c = z.rowSize
        var loss = 0.0, grad = [Double](repeating: 0, count: z.count)
        for r in 0..<b {
            let row = (0..<c).map { Double(z.data[r * c + $0]) }
            let m = row.max()!
            let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
            for j in 0..<c {
                let t = (j == labels[r] ? 1 - smoothing : 0) + smoothing / Double(c)
                loss -= t * (row[j] - lse)
                grad[r * c + j] = (exp(row[j] - lse) - t) / Double(b)
            }
        }
        return (loss / Double(b), grad)
    }

    func testCrossEntropyAgainstNumericalGradient() throws {
        for (n, eps) in [0.0, 0.1, 0.3].enumerated() {
            var rnd = TestRandom(130 + UInt64(n))
            let z = rnd.tensor([4, 5], -3, 3)
            let labels = [0, 3, 4, 3]
            let ce = CrossEntropy(labelSmoothing: Float(eps))
            let r = ce(z, labels: labels)
            let ref = referenceLoss(z, labels, smoothing: eps)
            XCTAssertEqual(Double(r.loss), ref.loss, accuracy: 1e-6 * max(1, ref.loss), "loss, ε = \(eps)")
            assertClose(r.gradient.data, ref.grad, tol: 1e-6, "gradient formula, ε = \(eps)")
            // Central differences of the loss itself.
            let h: Float = 1e-2
            var num = [Double](repeating: 0, count: z.count)
            var zp = z
            for i in 0..<z.count {
                let v = z.data[i]
                zp.data[i] = v + h; let up = Double(zp.data[i]); let fp = Double(ce(zp, labels: labels).loss)
                zp.data[i] = v - h; let dn = Double(zp.data[i]); let fm = Double(ce(zp, labels: labels).loss)
                zp.data[i] = v
                num[i] = (fp - fm) / (up - dn)
            }
            let e = normalizedError(r.gradient.data, num)
            XCTAssertLessThanOrEqual(e, 1e-3, "CE gradient vs central differences, ε = \(eps): \(e)")
            // Probabilities sum to 1; predictions are the argmax.
            for row in 0..<4 {
                let p = r.probabilities.data[row * 5..<(row + 1) * 5]
                XCTAssertEqual(Double(p.reduce(0, +)), 1, accuracy: 1e-6)
                XCTAssertEqual(r.predictions[row], (0..<5).max { z.data[row * 5 + $0] < z.data[row * 5 + $1] }!)
            }
            XCTAssertEqual(r.correct, zip(r.predictions, labels).filter { $0 == $1 }.count)
        }
    }

    func testCrossEntropyIsStableForLargeLogits() {
        let z = Tensor(shape: [2, 3], data: [1000, 0, -1000, -500, 500, 499])
        let r = CrossEntropy()(z, labels: [0, 2])
        XCTAssertTrue(r.loss.isFinite)
        let ref = referenceLoss(z, [0, 2], smoothing: 0)
        XCTAssertEqual(Double(r.loss), ref.loss, accuracy: 1e-4)
        XCTAssertTrue(r.gradient.data.allSatisfy(\.isFinite))
        assertClose(r.gradient.data, ref.grad, tol: 1e-6, "large-logit gradient")
        // Label smoothing with a −1000 logit: finite (ε/C · 2000 ≈ large but finite).
        let s = CrossEntropy(labelSmoothing: 0.1)(z, labels: [0, 2])
        XCTAssertTrue(s.loss.isFinite)
        XCTAssertEqual(Double(s.loss), referenceLoss(z, [0, 2], smoothing: 0.1).loss, accuracy: 1e-3)
    }

    /// A whole model with smooth layers (conv → GELU → avg-pool → flatten → LayerNorm → linear → GELU → head):
    /// d loss / d parameter for every parameter of body and head against central differences of the CE loss.
    func testWholeModelGradientsAgainstCentralDifferences() throws {
        let arch = Architecture(input: [2, 6, 6], layers: [
            .conv2d(2, 3, kernel: 3, stride: 1, padding: 1), .gelu, .avgPool2d(2), .flatten,
            .layerNorm(27), .linear(27, 5), .gelu, .dropout(0.3),
        ], heads: [.init(name: "t", inFeatures: 5, outFeatures: 3)])
        let model = try Model(arch, seed: 9)
        var rnd = TestRandom(140)
        let x = rnd.tensor([3, 2, 6, 6])
        let labels = [2, 0, 1]
        let ce = CrossEntropy(labelSmoothing: 0.1)
        // Evaluation mode: dropout is the identity, so the loss is a deterministic function of the parameters.
        model.zeroGrad()
        let r = ce(try model.forward(x, head: "t", mode: .eval), labels: labels)
        try model.backward(r.gradient, head: "t")
        let h: Float = 1e-2
        var worst = 0.0
        for p in model.parameters {
            let analytic = p.grad.data
            var num = [Double](repeating: 0, count: p.value.count)
            for i in 0..<p.value.count {
                let v = p.value.data[i]
                p.value.data[i] = v + h; let up = Double(p.value.data[i])
                let fp = Double(ce(try model.forward(x, head: "t", mode: .eval), labels: labels).loss)
                p.value.data[i] = v - h; let dn = Double(p.value.data[i])
                let fm = Double(ce(try model.forward(x, head: "t", mode: .eval), labels: labels).loss)
                p.value.data[i] = v
                num[i] = (fp - fm) / (up - dn)
            }
            let e = normalizedError(analytic, num)
            worst = max(worst, e)
            XCTAssertLessThanOrEqual(e, 5e-3, "\(p.name): normalized error \(e)")
        }
        print("whole-model gradient check: worst normalized error \(worst)")
    }
}
