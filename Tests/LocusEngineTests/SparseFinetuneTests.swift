import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

@testable import LocusEngine

/// Sparse fine-tuning: SparseSGDM and MaskedAdamW (AdaptW) against their rules written out here in
/// Double (docs/talos.md §SparseSGDM and §Masked AdamW (AdaptW); Iurada et al., 2025), the frozen-entry
/// guarantee (bit for bit, any number of steps, every ParameterMask representation), and the wiring of
/// `Training.fitSparse`.
final class SparseFinetuneTests: EngineTestCase {

    // MARK: - references in Double

    /// SparseSGDM (docs/talos.md §SparseSGDM) for one tensor, elementwise, in Double. `m` is 0/1.
    private struct ReferenceSGDM {
        var momentum: Double, dampening: Double, weightDecay: Double, nesterov: Bool
        var buf: [Double]? = nil
        mutating func step(_ p: inout [Double], _ g: [Double], _ m: [Double], lr: Double) {
            // 1. weight decay first; 2. mask the gradient
            var d = (0..<p.count).map { (g[$0] + weightDecay * p[$0]) * m[$0] }
            if momentum != 0 {
                // 3. buffer = d on the first step, else μ·buf + (1−δ)·d; then mask the buffer
                var b = buf.map { b in (0..<p.count).map { momentum * b[$0] + (1 - dampening) * d[$0] } } ?? d
                b = (0..<p.count).map { b[$0] * m[$0] }
                buf = b
                d = nesterov ? (0..<p.count).map { d[$0] + momentum * b[$0] } : b
            }
            // 4.
            for i in 0..<p.count { p[i] -= lr * d[i] }
        }
    }

    /// TaLoS's AdaptW for one tensor in Double: AdamW whose update and decoupled decay are multiplied
    /// by the mask; the moments follow the unmasked gradient.
    private struct AdaptW {
        var beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weightDecay: Double
        var m1: [Double] = [], v: [Double] = [], t = 0
        mutating func step(_ p: inout [Double], _ g: [Double], _ m: [Double], lr: Double) {
            if m1.isEmpty { m1 = [Double](repeating: 0, count: p.count); v = m1 }
            t += 1
            let bc1 = 1 - pow(beta1, Double(t)), bc2 = 1 - pow(beta2, Double(t))
            for i in 0..<p.count {
                m1[i] = beta1 * m1[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                p[i] -= lr * weightDecay * m[i] * p[i]
                p[i] -= lr / bc1 * m[i] * m1[i] / (v[i].squareRoot() / bc2.squareRoot() + eps)
            }
        }
    }

    // MARK: - helpers

    /// SGDM configurations (μ, δ, λ, Nesterov): momentum, weight decay, dampening and Nesterov on.
    private let sgdConfigs: [(Float, Float, Float, Bool)] = [
        (0, 0, 0, false), (0, 0, 0.1, false), (0.9, 0, 0, false), (0.9, 0, 0.05, false),
        (0.9, 0.5, 0.05, false), (0.9, 0, 0.05, true), (0.5, 0.3, 0.2, true),
    ]

    private enum Representation: String, CaseIterable { case entries, multiplier, dense }

    private func randomBits(_ n: Int, density: Double, _ rnd: inout TestRandom) -> [Bool] {
        (0..<n).map { _ in Double(rnd.uniform(0, 1)) < density }
    }

    private func mask(_ bits: [Bool], as r: Representation) -> ParameterMask {
        switch r {
        case .entries: return .entries(bits.enumerated().filter(\.element).map { Int32($0.offset) })
        case .multiplier: return .multiplier(bits.map { $0 ? 1 : 0 })
        case .dense:
            precondition(bits.allSatisfy { $0 }, "a dense mask has no zeros")
            return .dense
        }
    }

    private func parameter(_ name: String, _ values: [Float]) -> Parameter {
        Parameter(name: name, value: Tensor(shape: [values.count], data: values))
    }

    /// Base values with a spread of magnitudes (never −0: see testFrozenNegativeZero…).
    private func baseValues(_ n: Int, _ rnd: inout TestRandom) -> [Float] {
        (0..<n).map { i in
            switch i % 7 {
            case 0: return 0
            case 1: return rnd.normal() * 1e-3
            case 2: return rnd.normal() * 30
            case 3: return Float.leastNormalMagnitude * 3
            default: return rnd.normal()
            }
        }
    }

    // MARK: - 1. frozen entries stay bit-identical

    func testSparseSGDMFrozenEntriesStayBitIdenticalForEveryConfigAndRepresentation() {
        for (k, c) in sgdConfigs.enumerated() {
            var rnd = TestRandom(1000 + UInt64(k))
            let n = 97
            let bitsE = randomBits(n, density: 0.2, &rnd), bitsM = randomBits(n, density: 0.7, &rnd)
            let pe = parameter("e", baseValues(n, &rnd)), pm = parameter("m", baseValues(n, &rnd))
            let pd = parameter("d", baseValues(n, &rnd)), pz = parameter("z", baseValues(n, &rnd))
            let p0 = parameter("z0", baseValues(n, &rnd))
            let before = [pe, pm, pd, pz, p0].map { bits($0.value.data) }
            let opt = SparseSGDM(momentum: c.0, dampening: c.1, weightDecay: c.2, nesterov: c.3)
            let masks: [(Parameter, ParameterMask)] = [
                (pe, mask(bitsE, as: .entries)), (pm, mask(bitsM, as: .multiplier)), (pd, .dense),
                (pz, ParameterMask.from(bits: [Bool](repeating: false, count: n))),   // all-zero: frozen
                (p0, .multiplier([Float](repeating: 0, count: n))),                   // all-zero multiplier
            ]
            for s in 0..<40 {
                for p in [pe, pm, pd, pz, p0] { p.grad = rnd.normalTensor([n], scale: s % 5 == 0 ? 10 : 1) }
                opt.step(masks, lr: [0.1, 0.01, 0.5][s % 3])
            }
            let label = "SparseSGDM μ=\(c.0) δ=\(c.1) λ=\(c.2) nesterov=\(c.3)"
            for (name, p, b, keep) in [("entries", pe, before[0], bitsE), ("multiplier", pm, before[1], bitsM)] {
                let after = bits(p.value.data)
                let moved = (0..<n).filter { !keep[$0] && after[$0] != b[$0] }
                XCTAssertEqual(moved, [], "\(label), \(name) mask: frozen entries changed after 40 steps")
                let trained = (0..<n).filter { keep[$0] && after[$0] != b[$0] }.count
                XCTAssertGreaterThan(trained, keep.filter { $0 }.count / 2, "\(label), \(name): trainable entries should move")
            }
            XCTAssertEqual(bits(pz.value.data), before[3], "\(label): all-zero mask (from bits) changed the tensor")
            XCTAssertEqual(bits(p0.value.data), before[4], "\(label): all-zero multiplier changed the tensor")
            XCTAssertTrue(zip(bits(pd.value.data), before[2]).contains { $0 != $1 }, "\(label): the dense tensor trains")
        }
    }

    func testMaskedAdamWFrozenEntriesStayBitIdentical() {
        for (k, wd) in [Float(0), 0.01, 0.1].enumerated() {
            var rnd = TestRandom(1100 + UInt64(k))
            let n = 101
            let bitsE = randomBits(n, density: 0.1, &rnd), bitsM = randomBits(n, density: 0.8, &rnd)
            let pe = parameter("e", baseValues(n, &rnd)), pm = parameter("m", baseValues(n, &rnd))
            let pz = parameter("z", baseValues(n, &rnd)), p0 = parameter("z0", baseValues(n, &rnd))
            let before = [pe, pm, pz, p0].map { bits($0.value.data) }
            let opt = MaskedAdamW(weightDecay: wd)
            let masks: [(Parameter, ParameterMask)] = [
                (pe, mask(bitsE, as: .entries)), (pm, mask(bitsM, as: .multiplier)),
                (pz, ParameterMask.from(bits: [Bool](repeating: false, count: n))), (p0, .multiplier([Float](repeating: 0, count: n))),
            ]
            for s in 0..<40 {
                for p in [pe, pm, pz, p0] { p.grad = rnd.normalTensor([n], scale: s % 4 == 0 ? 100 : 1) }
                opt.step(masks, lr: [1e-3, 1e-2, 3e-4][s % 3])
            }
            for (name, p, b, keep) in [("entries", pe, before[0], bitsE), ("multiplier", pm, before[1], bitsM)] {
                let after = bits(p.value.data)
                XCTAssertEqual((0..<n).filter { !keep[$0] && after[$0] != b[$0] }, [], "MaskedAdamW λ=\(wd), \(name): frozen entries changed")
                XCTAssertGreaterThan((0..<n).filter { keep[$0] && after[$0] != b[$0] }.count, keep.filter { $0 }.count / 2)
            }
            XCTAssertEqual(bits(pz.value.data), before[2], "MaskedAdamW λ=\(wd): all-zero mask changed the tensor")
            XCTAssertEqual(bits(p0.value.data), before[3], "MaskedAdamW λ=\(wd): all-zero multiplier changed the tensor")
        }
    }

    /// A frozen entry whose base value is −0.0 (common in pruned PyTorch checkpoints: w·0 with w < 0)
    /// must stay −0.0. With a multiplier mask the update is w −= lr·(d·0); when d·0 is −0.0 the result
    /// is −0.0 − (−0.0) = +0.0: the bit pattern changes although the value does not.
    func testFrozenNegativeZeroStaysBitIdenticalWithMultiplierMask() {
        let n = 8
        let negZero = [Float](repeating: -0.0, count: n)
        let keep = (0..<n).map { $0 == 0 || $0 == 1 || $0 == 2 || $0 == 3 || $0 == 4 }   // 5/8 > 1/2: a multiplier
        guard case .multiplier = ParameterMask.from(bits: keep) else { return XCTFail("expected a multiplier representation") }
        let grad = (0..<n).map { i in i % 2 == 0 ? Float(0.5) : -0.5 }
        for (label, step) in [
            ("SparseSGDM (no momentum)", { (p: Parameter) in SparseSGDM().step([(p, .from(bits: keep))], lr: 0.1) }),
            ("SparseSGDM (momentum, wd)", { (p: Parameter) in SparseSGDM(momentum: 0.9, weightDecay: 0.1).step([(p, .from(bits: keep))], lr: 0.1) }),
            ("MaskedAdamW (wd 0)", { (p: Parameter) in MaskedAdamW(weightDecay: 0).step([(p, .from(bits: keep))], lr: 0.1) }),
            ("MaskedAdamW (wd 0.01)", { (p: Parameter) in MaskedAdamW(weightDecay: 0.01).step([(p, .from(bits: keep))], lr: 0.1) }),
        ] as [(String, (Parameter) -> Void)] {
            let p = parameter("w", negZero)
            p.grad = Tensor(shape: [n], data: grad)
            step(p)
            let frozen = (0..<n).filter { !keep[$0] }
            XCTAssertEqual(frozen.map { p.value.data[$0].bitPattern }, frozen.map { _ in Float(-0.0).bitPattern },
                           "\(label): frozen −0.0 entries must keep their bits, got \(frozen.map { p.value.data[$0] })")
        }
    }

    /// A non-finite gradient at a frozen entry must not reach it (the index representation never reads it;
    /// a multiplier computes ∞·0 = NaN).
    func testFrozenEntriesIgnoreNonFiniteGradientsInEveryRepresentation() {
        let n = 6
        let keep = [true, true, true, true, false, false]   // 4/6: multiplier; the index list is the same set
        for r in [Representation.entries, .multiplier] {
            for (label, makeStep) in [("SparseSGDM", { (m: ParameterMask, p: Parameter) in SparseSGDM(momentum: 0.9).step([(p, m)], lr: 0.1) }),
                                      ("MaskedAdamW", { (m: ParameterMask, p: Parameter) in MaskedAdamW().step([(p, m)], lr: 0.1) })]
                    as [(String, (ParameterMask, Parameter) -> Void)] {
                let p = parameter("w", [1, 2, 3, 4, 5, 6])
                p.grad = Tensor(shape: [n], data: [0.1, 0.2, 0.3, 0.4, .infinity, .nan])
                makeStep(mask(keep, as: r), p)
                XCTAssertEqual(Array(p.value.data[4...]), [5, 6], "\(label), \(r.rawValue): frozen entries got a non-finite gradient")
            }
        }
    }

    // MARK: - 2. the update rules, against the references in Double

    func testSparseSGDMMatchesSeedRuleInDouble() {
        for (k, c) in sgdConfigs.enumerated() {
            for r in Representation.allCases {
                var rnd = TestRandom(2000 + UInt64(k))
                let n = 53
                let keep = r == .dense ? [Bool](repeating: true, count: n) : randomBits(n, density: r == .entries ? 0.3 : 0.75, &rnd)
                let p = parameter("w", (0..<n).map { _ in rnd.normal() })
                var ref = ReferenceSGDM(momentum: Double(c.0), dampening: Double(c.1), weightDecay: Double(c.2), nesterov: c.3)
                var w = p.value.data.map(Double.init)
                let m = keep.map { $0 ? 1.0 : 0.0 }
                let opt = SparseSGDM(momentum: c.0, dampening: c.1, weightDecay: c.2, nesterov: c.3)
                let pm = mask(keep, as: r)
                let base = w
                for (s, lr) in ([0.1, 0.05, 0.2, 0.1, 0.02] as [Float]).enumerated() {
                    p.grad = rnd.normalTensor([n])
                    ref.step(&w, p.grad.data.map(Double.init), m, lr: Double(lr))
                    opt.step([(p, pm)], lr: lr)
                    let label = "SparseSGDM μ=\(c.0) δ=\(c.1) λ=\(c.2) nesterov=\(c.3) \(r.rawValue), step \(s + 1)"
                    assertClose(p.value.data, w, tol: 1e-6, label + " (weights)")
                    // The update itself, relative to its own size (float32 rounding of θ limits this to ~1e-5).
                    let delta = (0..<n).map { p.value.data[$0] - Float(base[$0]) }
                    assertClose(delta, (0..<n).map { w[$0] - base[$0] }, tol: 1e-4, label + " (θ − θ₀)")
                }
            }
        }
    }

    /// The seed initialises the buffer with the first masked direction itself (no dampening), and
    /// dampening applies from the second step: checked by hand on one element.
    func testSparseSGDMFirstStepBufferInitialisationByHand() {
        let p = parameter("w", [1, 1])
        let opt = SparseSGDM(momentum: 0.9, dampening: 0.5, weightDecay: 0.1)
        p.grad = Tensor(shape: [2], data: [0.5, 0.5])
        opt.step([(p, .multiplier([1, 0]))], lr: 0.1)
        // d = 0.5 + 0.1·1 = 0.6; buf = d = 0.6 (not (1−δ)·d = 0.3); p = 1 − 0.06 = 0.94
        XCTAssertEqual(Double(p.value.data[0]), 0.94, accuracy: 1e-7)
        XCTAssertEqual(p.value.data[1], 1)
        p.grad.data = [0.2, 0.2]
        opt.step([(p, .multiplier([1, 0]))], lr: 0.1)
        // d = 0.2 + 0.094 = 0.294; buf = 0.9·0.6 + 0.5·0.294 = 0.687; p = 0.94 − 0.0687 = 0.8713
        XCTAssertEqual(Double(p.value.data[0]), 0.8713, accuracy: 1e-6)
        XCTAssertEqual(p.value.data[1], 1)
    }

    func testMaskedAdamWMatchesAdaptWInDouble() {
        for (k, wd) in [Float(0), 0.01, 0.1].enumerated() {
            for r in Representation.allCases {
                var rnd = TestRandom(3000 + UInt64(k))
                let n = 61
                let keep = r == .dense ? [Bool](repeating: true, count: n) : randomBits(n, density: r == .entries ? 0.1 : 0.9, &rnd)
                let p = parameter("w", (0..<n).map { _ in rnd.normal() })
                var ref = AdaptW(weightDecay: Double(wd))
                var w = p.value.data.map(Double.init)
                let base = w
                let m = keep.map { $0 ? 1.0 : 0.0 }
                let opt = MaskedAdamW(weightDecay: wd)
                let pm = mask(keep, as: r)
                for (s, lr) in ([1e-2, 3e-3, 1e-2, 5e-3, 1e-3, 1e-2] as [Float]).enumerated() {
                    p.grad = rnd.normalTensor([n], scale: 0.1)
                    ref.step(&w, p.grad.data.map(Double.init), m, lr: Double(lr))
                    opt.step([(p, pm)], lr: lr)
                    let label = "MaskedAdamW λ=\(wd) \(r.rawValue), step \(s + 1)"
                    assertClose(p.value.data, w, tol: 1e-6, label + " (weights)")
                    let delta = (0..<n).map { p.value.data[$0] - Float(base[$0]) }
                    assertClose(delta, (0..<n).map { w[$0] - base[$0] }, tol: 1e-4, label + " (θ − θ₀)")
                }
            }
        }
    }

    /// Index list and multiplier of the same bits, and .dense vs an all-ones multiplier, give the same
    /// bits after many steps (the index representation drops the state of frozen entries; nothing is lost).
    func testRepresentationsGiveBitIdenticalResults() {
        var rnd = TestRandom(4000)
        let n = 200
        let keep = randomBits(n, density: 0.35, &rnd)
        let w0 = (0..<n).map { _ in rnd.normal() }
        let grads = (0..<25).map { _ in rnd.normalTensor([n]) }
        func run(_ m: ParameterMask, sgd: Bool) -> [UInt32] {
            let p = parameter("w", w0)
            let s = SparseSGDM(momentum: 0.9, dampening: 0.1, weightDecay: 0.01, nesterov: true), a = MaskedAdamW(weightDecay: 0.05)
            for (i, g) in grads.enumerated() {
                p.grad = g
                let lr: Float = i % 2 == 0 ? 0.05 : 0.01
                if sgd { s.step([(p, m)], lr: lr) } else { a.step([(p, m)], lr: lr) }
            }
            return bits(p.value.data)
        }
        for sgd in [true, false] {
            let name = sgd ? "SparseSGDM" : "MaskedAdamW"
            XCTAssertEqual(run(mask(keep, as: .entries), sgd: sgd), run(mask(keep, as: .multiplier), sgd: sgd), "\(name): entries vs multiplier")
            let all = [Bool](repeating: true, count: n)
            XCTAssertEqual(run(.dense, sgd: sgd), run(mask(all, as: .multiplier), sgd: sgd), "\(name): dense vs all-ones multiplier")
            XCTAssertEqual(run(.dense, sgd: sgd), run(mask(all, as: .entries), sgd: sgd), "\(name): dense vs every index")
        }
    }

    // MARK: - all-zero masks: no change and no state

    func testParameterMaskRepresentationChoice() {
        XCTAssertTrue(ParameterMask.from(bits: [false, false, false]).isFrozen)
        guard case .entries(let e) = ParameterMask.from(bits: [false, true, false, false, true]) else { return XCTFail("below half: indices") }
        XCTAssertEqual(e, [1, 4])
        guard case .multiplier(let m) = ParameterMask.from(bits: [true, true, false]) else { return XCTFail("above half: multiplier") }
        XCTAssertEqual(m, [1, 1, 0])
        guard case .dense = ParameterMask.from(bits: [true, true]) else { return XCTFail("all ones: dense") }
        XCTAssertFalse(ParameterMask.from(bits: [true, false, false]).isFrozen)
    }

    /// A tensor whose mask is all zero gets no optimizer state: stepping it (frozen) any number of times and
    /// then unfreezing it behaves exactly like a fresh optimizer's first step (buffer = d, bias correction t = 1).
    func testAllZeroMaskKeepsNoState() {
        var rnd = TestRandom(5000)
        let n = 30
        let w0 = (0..<n).map { _ in rnd.normal() }
        let g = rnd.normalTensor([n])
        let frozen = ParameterMask.from(bits: [Bool](repeating: false, count: n))
        for sgd in [true, false] {
            let p = parameter("w", w0), fresh = parameter("w", w0)
            p.grad = g; fresh.grad = g
            let s = SparseSGDM(momentum: 0.9, dampening: 0.5, weightDecay: 0.1), a = MaskedAdamW(weightDecay: 0.1)
            for _ in 0..<5 {
                if sgd { s.step([(p, frozen)], lr: 0.1) } else { a.step([(p, frozen)], lr: 0.1) }
            }
            XCTAssertEqual(bits(p.value.data), bits(w0), "frozen tensor changed")
            if sgd { s.step([(p, .dense)], lr: 0.1); SparseSGDM(momentum: 0.9, dampening: 0.5, weightDecay: 0.1).step([(fresh, .dense)], lr: 0.1) }
            else { a.step([(p, .dense)], lr: 0.1); MaskedAdamW(weightDecay: 0.1).step([(fresh, .dense)], lr: 0.1) }
            XCTAssertEqual(bits(p.value.data), bits(fresh.value.data),
                           "\(sgd ? "SparseSGDM" : "MaskedAdamW"): a frozen tensor must have had no state (the first real step is a first step)")
        }
    }

    // MARK: - Training.fitSparse

    private let data = separableData(samples: 40, features: 6, classes: 3, seed: 21, trainFraction: 0.75)

    private func snapshot(_ m: Model) -> [String: [UInt32]] {
        Dictionary(uniqueKeysWithValues: m.parameters.map { ($0.name, bits($0.value.data)) })
    }

    /// Masks over the body: an index list, a multiplier, an all-zero tensor and a dense one.
    private func bodyMasks(_ model: Model, seed: UInt64) -> (masks: [(Parameter, ParameterMask)], bits: [String: [Bool]]) {
        var rnd = TestRandom(seed)
        var masks: [(Parameter, ParameterMask)] = [], keep: [String: [Bool]] = [:]
        for (i, p) in model.bodyParameters.enumerated() {
            let n = p.value.count
            let b: [Bool]
            switch i % 4 {
            case 0: b = randomBits(n, density: 0.25, &rnd)
            case 1: b = randomBits(n, density: 0.8, &rnd)
            case 2: b = [Bool](repeating: false, count: n)
            default: b = [Bool](repeating: true, count: n)
            }
            keep[p.name] = b
            masks.append((p, .from(bits: b)))
        }
        return (masks, keep)
    }

    /// One full-batch step of fitSparse (constant schedule) equals the Double rule applied to the base
    /// weights with the gradient the engine computes at the base: the trainer hands the optimizer the
    /// masks, the learning rate and the gradient of the step.
    func testFitSparseFullBatchStepsMatchTheRules() throws {
        for sgd in [true, false] {
            let arch = Architecture.mlp(input: [6], hidden: [7, 5], classes: 3)
            let model = try Model(arch, seed: 4)
            let (masks, keep) = bodyMasks(model, seed: 6)
            let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
            // Gradient at the base weights, full batch in stored order (the sum is order-independent up to rounding).
            let (x, y) = train.batch(ArraySlice(train.indices))
            model.zeroGrad()
            let r = CrossEntropy()(try model.forward(x, head: "default", mode: .train), labels: y)
            try model.backward(r.gradient, head: "default")
            let grads = Dictionary(uniqueKeysWithValues: model.bodyParameters.map { ($0.name, $0.grad.data.map(Double.init)) })
            let before = Dictionary(uniqueKeysWithValues: model.parameters.map { ($0.name, $0.value.data) })

            var c = TrainingConfig()
            c.epochs = 1; c.batchSize = train.count; c.schedule = .constant; c.deterministic = true
            c.learningRate = sgd ? 0.3 : 0.01; c.weightDecay = 0.05
            c.optimizer = sgd ? .sgd : .adamw; c.momentum = 0.9; c.dampening = 0.25; c.nesterov = true
            _ = try Training.fitSparse(model, head: "default", train: train, validation: nil, config: c, masks: masks, trainHead: false)
            for p in model.bodyParameters {
                var w = before[p.name]!.map(Double.init)
                let m = keep[p.name]!.map { $0 ? 1.0 : 0.0 }
                if sgd { var ref = ReferenceSGDM(momentum: 0.9, dampening: 0.25, weightDecay: 0.05, nesterov: true); ref.step(&w, grads[p.name]!, m, lr: Double(Float(0.3))) }
                else { var ref = AdaptW(weightDecay: Double(Float(0.05))); ref.step(&w, grads[p.name]!, m, lr: Double(Float(0.01))) }
                assertClose(p.value.data, w, tol: 1e-6, "fitSparse \(sgd ? "sgd" : "adamw") one full-batch step: \(p.name)")
            }
            for h in try model.head("default").parameters {
                XCTAssertEqual(bits(h.value.data), bits(before[h.name]!), "\(h.name): the frozen head changed")
            }
        }
    }

    /// Many mini-batch epochs, both optimizers: frozen entries (and the head unless --train-head) keep their bits.
    func testFitSparseKeepsFrozenEntriesAndTheHeadBitIdentical() throws {
        for (sgd, trainHead) in [(true, false), (false, false), (true, true), (false, true)] {
            let arch = Architecture(input: [6], layers: [.linear(6, 9), .relu, .layerNorm(9), .dropout(0.2), .linear(9, 5), .gelu],
                                    heads: [.init(name: "t", inFeatures: 5, outFeatures: 3, classes: nil),
                                            .init(name: "other", inFeatures: 5, outFeatures: 2, classes: nil)])
            let model = try Model(arch, seed: 8)
            let (masks, keep) = bodyMasks(model, seed: 9)
            let before = snapshot(model)
            var c = TrainingConfig()
            c.epochs = 6; c.batchSize = 7; c.learningRate = sgd ? 0.1 : 0.01; c.deterministic = true; c.weightDecay = 0.1
            c.optimizer = sgd ? .sgd : .adamw; c.momentum = 0.9; c.nesterov = true; c.dampening = 0.1; c.warmupFraction = 0.2; c.clipNorm = 0.5
            let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
            let reports = try Training.fitSparse(model, head: "t", train: train, validation: try Batches(data, split: "val", inputShape: [6], classes: 3),
                                                 config: c, masks: masks, trainHead: trainHead)
            XCTAssertEqual(reports.count, 6)
            let after = snapshot(model)
            let label = "\(sgd ? "sgd" : "adamw"), trainHead \(trainHead)"
            for p in model.bodyParameters {
                let k = keep[p.name]!, a = after[p.name]!, b = before[p.name]!
                XCTAssertEqual((0..<k.count).filter { !k[$0] && a[$0] != b[$0] }, [], "\(label): \(p.name) frozen entries moved")
                if k.contains(true) { XCTAssertNotEqual(a, b, "\(label): \(p.name) has trainable entries and should train") }
            }
            for name in ["heads.other.weight", "heads.other.bias"] { XCTAssertEqual(after[name], before[name], "\(label): another task's head changed") }
            for name in ["heads.t.weight", "heads.t.bias"] {
                if trainHead { XCTAssertNotEqual(after[name], before[name], "\(label): --train-head trains the head") }
                else { XCTAssertEqual(after[name], before[name], "\(label): the frozen head changed") }
            }
        }
    }

    func testFitSparseWithNothingTrainableThrows() throws {
        let model = try Model(.mlp(input: [6], hidden: [4], classes: 3), seed: 1)
        let masks = model.bodyParameters.map { ($0, ParameterMask.from(bits: [Bool](repeating: false, count: $0.value.count))) }
        let train = try Batches(data, split: "train", inputShape: [6], classes: 3)
        let before = snapshot(model)
        expectEngineError(["nothing trainable"]) {
            _ = try Training.fitSparse(model, head: "default", train: train, validation: nil, config: TrainingConfig(), masks: masks, trainHead: false)
        }
        XCTAssertEqual(snapshot(model), before)
        // With the head trainable there is something to train, and the body stays put.
        var c = TrainingConfig(); c.epochs = 2; c.batchSize = 8; c.deterministic = true
        _ = try Training.fitSparse(model, head: "default", train: train, validation: nil, config: c, masks: masks, trainHead: true)
        let after = snapshot(model)
        for p in model.bodyParameters { XCTAssertEqual(after[p.name], before[p.name], "\(p.name) moved under an all-zero mask") }
        XCTAssertNotEqual(after["heads.default.weight"], before["heads.default.weight"])
        expectEngineError(["no head 'nope'"]) {
            _ = try Training.fitSparse(model, head: "nope", train: train, validation: nil, config: c, masks: masks, trainHead: true)
        }
    }
}
