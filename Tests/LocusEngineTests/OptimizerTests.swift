import Foundation
import LocusTestSupport
import XCTest

@testable import LocusEngine

/// SGD, AdamW, the learning-rate schedule and gradient clipping against torch.optim's documented
/// update rules, written out here in Double.
final class OptimizerTests: EngineTestCase {
    private func parameter(_ name: String, _ values: [Float], grad: [Float]) -> Parameter {
        let p = Parameter(name: name, value: Tensor(shape: [values.count], data: values))
        p.grad = Tensor(shape: [grad.count], data: grad)
        return p
    }

    /// torch.optim.SGD (maximize=False), one parameter element at a time:
    ///   d = g + wd·p; if μ≠0: buf = d (first step) else μ·buf + (1−δ)·d; d = nesterov ? d + μ·buf : buf; p −= lr·d
    private struct TorchSGD {
        var lr: Double, momentum: Double, dampening: Double, weightDecay: Double, nesterov: Bool
        var buf: [Double]? = nil
        mutating func step(_ p: inout [Double], _ g: [Double]) {
            var d = zip(g, p).map { $0 + weightDecay * $1 }
            if momentum != 0 {
                if let b = buf { buf = zip(b, d).map { momentum * $0 + (1 - dampening) * $1 } } else { buf = d }
                d = nesterov ? zip(d, buf!).map { $0 + momentum * $1 } : buf!
            }
            p = zip(p, d).map { $0 - lr * $1 }
        }
    }

    func testSGDAgainstTorchFormula() throws {
        // (momentum, dampening, weight decay, nesterov)
        let configs: [(Float, Float, Float, Bool)] = [
            (0, 0, 0, false), (0, 0, 0.1, false), (0.9, 0, 0, false), (0.9, 0.5, 0, false),
            (0.9, 0, 0.01, true), (0.8, 0, 0.05, false), (0.5, 0.3, 0.02, false),
        ]
        for (n, c) in configs.enumerated() {
            var rnd = TestRandom(200 + UInt64(n))
            let count = 7
            let p = parameter("w", (0..<count).map { _ in rnd.uniform() }, grad: (0..<count).map { _ in rnd.uniform() })
            let q = parameter("b", (0..<3).map { _ in rnd.uniform() }, grad: (0..<3).map { _ in rnd.uniform() })
            let sgd = SGD(momentum: c.0, dampening: c.1, weightDecay: c.2, nesterov: c.3)
            var refP = TorchSGD(lr: 0.1, momentum: Double(c.0), dampening: Double(c.1), weightDecay: Double(c.2), nesterov: c.3)
            var refQ = refP
            var wp = p.value.data.map(Double.init), wq = q.value.data.map(Double.init)
            // Three steps with different gradients and learning rates: the first initialises the buffer,
            // the next ones use it (dampening only applies from step 2, as in torch).
            for (s, lr) in [0.1, 0.05, 0.2].enumerated() {
                if s > 0 {
                    p.grad = rnd.tensor([count]); q.grad = rnd.tensor([3])
                }
                refP.lr = lr; refQ.lr = lr
                refP.step(&wp, p.grad.data.map(Double.init))
                refQ.step(&wq, q.grad.data.map(Double.init))
                sgd.step([p, q], lr: Float(lr))
                assertClose(p.value.data, wp, tol: 1e-6, "SGD \(c) step \(s + 1) (w)")
                assertClose(q.value.data, wq, tol: 1e-6, "SGD \(c) step \(s + 1) (b)")
            }
        }
    }

    func testSGDSingleStepByHand() {
        // One element, numbers small enough to do by hand: p = 1, g = 0.5, wd = 0.1, μ = 0.9, lr = 0.1.
        let p = parameter("w", [1], grad: [0.5])
        let sgd = SGD(momentum: 0.9, weightDecay: 0.1, nesterov: true)
        sgd.step([p], lr: 0.1)
        // d = 0.5 + 0.1 = 0.6; buf = 0.6; nesterov d = 0.6 + 0.9·0.6 = 1.14; p = 1 − 0.114 = 0.886
        XCTAssertEqual(p.value.data[0], 0.886, accuracy: 1e-6)
        p.grad.data = [0.2]
        sgd.step([p], lr: 0.1)
        // d = 0.2 + 0.0886 = 0.2886; buf = 0.9·0.6 + 0.2886 = 0.8286; d = 0.2886 + 0.9·0.8286 = 1.03434; p = 0.886 − 0.103434
        XCTAssertEqual(Double(p.value.data[0]), 0.886 - 0.103434, accuracy: 1e-6)
    }

    /// torch.optim.AdamW (amsgrad=False, maximize=False):
    ///   p ← p(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; p ← p − lr/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)
    func testAdamWAgainstTorchFormula() {
        for (n, c) in [(0.9, 0.999, 1e-8, 0.0), (0.9, 0.999, 1e-8, 0.01), (0.8, 0.99, 1e-3, 0.1)].enumerated() {
            var rnd = TestRandom(300 + UInt64(n))
            let count = 9
            let p = parameter("w", (0..<count).map { _ in rnd.uniform() }, grad: [Float](repeating: 0, count: count))
            let opt = AdamW(beta1: Float(c.0), beta2: Float(c.1), eps: Float(c.2), weightDecay: Float(c.3))
            var w = p.value.data.map(Double.init)
            var m = [Double](repeating: 0, count: count), v = m
            for t in 1...6 {
                let lr = [1e-2, 3e-3, 1e-2, 5e-2, 1e-3, 2e-2][t - 1]
                p.grad = rnd.tensor([count])
                if t == 3 { p.grad.data[0] = 0 }   // a zero gradient still decays and moves by momentum
                let g = p.grad.data.map(Double.init)
                for i in 0..<count {
                    w[i] *= 1 - lr * c.3
                    m[i] = c.0 * m[i] + (1 - c.0) * g[i]
                    v[i] = c.1 * v[i] + (1 - c.1) * g[i] * g[i]
                    let bc1 = 1 - pow(c.0, Double(t)), bc2 = 1 - pow(c.1, Double(t))
                    w[i] -= lr / bc1 * m[i] / (v[i].squareRoot() / bc2.squareRoot() + c.2)
                }
                opt.step([p], lr: Float(lr))
                // Float state vs Double reference: relative to the size of the update, not of w.
                let e = zip(p.value.data, w).map { abs(Double($0) - $1) }.max()!
                XCTAssertLessThanOrEqual(e, 2e-6, "AdamW \(c) step \(t): max |Δ| \(e)")
            }
        }
    }

    func testAdamWFirstStepMovesByLearningRate() {
        // At t = 1 with ε ≪ |g|, the bias-corrected update is lr·sign(g), whatever |g| is.
        let p = parameter("w", [0, 0, 0], grad: [3, -1e-3, 0.5])
        AdamW(weightDecay: 0).step([p], lr: 0.01)
        XCTAssertEqual(p.value.data[0], -0.01, accuracy: 1e-7)
        XCTAssertEqual(p.value.data[1], 0.01, accuracy: 1e-6)
        XCTAssertEqual(p.value.data[2], -0.01, accuracy: 1e-7)
    }

    func testOptimizersKeepStatePerParameter() {
        // Two parameters stepped by the same optimizer must not share momentum buffers.
        let a = parameter("a", [1], grad: [1]), b = parameter("b", [1], grad: [-1])
        let sgd = SGD(momentum: 0.9)
        sgd.step([a, b], lr: 0.1)
        sgd.step([a, b], lr: 0.1)
        XCTAssertEqual(a.value.data[0], 1 - 0.1 - 0.19, accuracy: 1e-6)
        XCTAssertEqual(b.value.data[0], 1 + 0.1 + 0.19, accuracy: 1e-6)
    }

    // MARK: schedule

    func testScheduleWarmupThenCosine() {
        let s = LearningRateSchedule(base: 0.1, shape: .cosine, warmup: 4, total: 20)
        // Linear warm-up: (step + 1)/warmup · base, reaching base at the last warm-up step.
        for step in 0..<4 { XCTAssertEqual(s.rate(at: step), 0.1 * Float(step + 1) / 4, accuracy: 1e-7, "warm-up step \(step)") }
        // Cosine from base (at the first step after warm-up) down to 0 at `total`.
        for step in 4...20 {
            let expected = 0.1 * 0.5 * (1 + cos(Double.pi * Double(step - 4) / 16))
            XCTAssertEqual(Double(s.rate(at: step)), expected, accuracy: 1e-7, "cosine step \(step)")
        }
        XCTAssertEqual(s.rate(at: 4), 0.1, accuracy: 1e-7)
        XCTAssertEqual(s.rate(at: 12), 0.05, accuracy: 1e-7, "half way the rate is base/2")
        XCTAssertEqual(s.rate(at: 20), 0, accuracy: 1e-7)
        XCTAssertEqual(s.rate(at: 25), 0, accuracy: 1e-7, "past the end it stays at 0")
        // Every step that training actually takes (0..<total) has a positive rate.
        for step in 0..<20 { XCTAssertGreaterThan(s.rate(at: step), 0) }
        // Monotone: up during warm-up, down after.
        for step in 1..<4 { XCTAssertGreaterThan(s.rate(at: step), s.rate(at: step - 1)) }
        for step in 5..<20 { XCTAssertLessThan(s.rate(at: step), s.rate(at: step - 1)) }
    }

    func testScheduleConstantAndNoWarmup() {
        let c = LearningRateSchedule(base: 0.3, shape: .constant, warmup: 2, total: 10)
        XCTAssertEqual(c.rate(at: 0), 0.15, accuracy: 1e-7)
        XCTAssertEqual(c.rate(at: 1), 0.3, accuracy: 1e-7)
        for step in 2..<10 { XCTAssertEqual(c.rate(at: step), 0.3) }
        let cos0 = LearningRateSchedule(base: 1, shape: .cosine, warmup: 0, total: 4)
        XCTAssertEqual(cos0.rate(at: 0), 1)
        XCTAssertEqual(Double(cos0.rate(at: 1)), 0.5 * (1 + cos(Double.pi / 4)), accuracy: 1e-7)
        XCTAssertEqual(Double(cos0.rate(at: 2)), 0.5, accuracy: 1e-7)
        // A single-step run trains at the base rate.
        XCTAssertEqual(LearningRateSchedule(base: 0.2, shape: .cosine, warmup: 0, total: 1).rate(at: 0), 0.2)
    }

    // MARK: clipping

    func testClipGradientsMatchesTorchClipGradNorm() {
        var rnd = TestRandom(400)
        let a = parameter("a", [0, 0, 0, 0], grad: (0..<4).map { _ in rnd.uniform(-3, 3) })
        let b = parameter("b", [0, 0, 0], grad: (0..<3).map { _ in rnd.uniform(-3, 3) })
        let before = (a.grad.data + b.grad.data).map(Double.init)
        let norm = before.map { $0 * $0 }.reduce(0, +).squareRoot()
        XCTAssertGreaterThan(norm, 1)
        Training.clipGradients([a, b], maxNorm: 1)
        // clip_grad_norm_: g ← g · min(1, max_norm / (‖g‖₂ + 1e-6))
        let coef = 1 / (norm + 1e-6)
        assertClose(a.grad.data + b.grad.data, before.map { $0 * coef }, tol: 1e-6, "clipped gradients")
        let after = (a.grad.data + b.grad.data).map { Double($0) * Double($0) }.reduce(0, +).squareRoot()
        XCTAssertEqual(after, 1, accuracy: 1e-5)
        // Below the threshold nothing changes, bit for bit.
        let small = parameter("s", [0, 0], grad: [0.3, -0.4])
        Training.clipGradients([small], maxNorm: 1)
        XCTAssertEqual(bits(small.grad.data), bits([0.3, -0.4]))
        // Zero gradients stay zero (no division by zero).
        let zero = parameter("z", [0, 0], grad: [0, 0])
        Training.clipGradients([zero], maxNorm: 0.5)
        XCTAssertEqual(zero.grad.data, [0, 0])
    }
}
