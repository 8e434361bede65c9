import Foundation
import LocusKernels
import LocusTestSupport
import XCTest

@testable import LocusEngine

/// The C kernels (LocusKernels) at both instruction sets: the AVX2 build and the x86-64 baseline must
/// give the same bits (no contraction, reductions in eight fixed lanes), and both must agree with
/// plain double-precision references. The thread pool must not change results either.
final class KernelDispatchTests: EngineTestCase {
    /// Runs `body` once per SIMD level this CPU runs (the baseline always; AVX2 when present) and
    /// returns the results in that order; the level in use is restored afterwards.
    func atEveryLevel<T>(_ body: () throws -> T) rethrows -> [T] {
        let saved = locus_simd_level()
        defer { locus_simd_set(saved) }
        var out: [T] = []
        for level in [Int32(LOCUS_SIMD_BASELINE), Int32(LOCUS_SIMD_AVX2)] where level <= locus_simd_best() {
            XCTAssertEqual(locus_simd_set(level), level)
            out.append(try body())
        }
        return out
    }

    /// Same bits at every level (and at least the baseline ran).
    func assertSameBitsAtEveryLevel(_ what: String, _ body: () -> [Float], file: StaticString = #filePath, line: UInt = #line) -> [Float] {
        let results = atEveryLevel(body)
        XCTAssertFalse(results.isEmpty, file: file, line: line)
        for r in results.dropFirst() { XCTAssertEqual(bits(r), bits(results[0]), "\(what): AVX2 and baseline differ", file: file, line: line) }
        return results[0]
    }

    /// Lengths around the vector widths and the thread split, and one long enough to be split.
    let lengths = [1, 3, 7, 8, 9, 16, 17, 31, 100, 1000, 70_001]

    func testSIMDLevelCanBeForcedToTheBaseline() {
        let saved = locus_simd_level()
        defer { locus_simd_set(saved) }
        XCTAssertEqual(locus_simd_set(Int32(LOCUS_SIMD_BASELINE)), Int32(LOCUS_SIMD_BASELINE))
        XCTAssertEqual(locus_simd_level(), Int32(LOCUS_SIMD_BASELINE))
        // A level above what the CPU runs is clamped to it.
        XCTAssertEqual(locus_simd_set(99), locus_simd_best())
    }

    func testElementwiseKernelsAgreeAcrossLevelsAndWithDoubleReferences() {
        var r = TestRandom(1)
        for n in lengths {
            let x = (0..<n).map { _ in r.uniform(-6, 6) }, dy = (0..<n).map { _ in r.uniform(-1, 1) }
            func run(_ f: (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> [Float] {
                var y = [Float](repeating: .nan, count: n)
                x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in f(xp.baseAddress!, yp.baseAddress!, n) } }
                return y
            }
            func runBackward(_ f: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void) -> [Float] {
                var g = [Float](repeating: .nan, count: n)
                x.withUnsafeBufferPointer { xp in dy.withUnsafeBufferPointer { dp in g.withUnsafeMutableBufferPointer { gp in
                    f(xp.baseAddress!, dp.baseAddress!, gp.baseAddress!, n) } } }
                return g
            }
            func phi(_ v: Double) -> Double { 0.5 * erfc(-v / 2.0.squareRoot()) }
            let gelu = assertSameBitsAtEveryLevel("gelu n=\(n)") { run { locus_gelu($0, $1, $2) } }
            assertClose(gelu, x.map { Double($0) * phi(Double($0)) }, tol: 2e-6, "gelu n=\(n)")
            let geluB = assertSameBitsAtEveryLevel("gelu backward n=\(n)") { runBackward { locus_gelu_backward($0, $1, $2, $3) } }
            assertClose(geluB, zip(x, dy).map { v, d in
                let v = Double(v); return Double(d) * (phi(v) + v * exp(-v * v / 2) / (2 * Double.pi).squareRoot()) }, tol: 2e-6, "gelu backward n=\(n)")
            func sig(_ v: Double) -> Double { 1 / (1 + exp(-1.702 * v)) }
            let q = assertSameBitsAtEveryLevel("quick gelu n=\(n)") { run { locus_quick_gelu($0, $1, $2) } }
            assertClose(q, x.map { Double($0) * sig(Double($0)) }, tol: 2e-6, "quick gelu n=\(n)")
            let qB = assertSameBitsAtEveryLevel("quick gelu backward n=\(n)") { runBackward { locus_quick_gelu_backward($0, $1, $2, $3) } }
            assertClose(qB, zip(x, dy).map { v, d in
                let v = Double(v), s = sig(v); return Double(d) * (s + 1.702 * v * s * (1 - s)) }, tol: 2e-6, "quick gelu backward n=\(n)")
            // ReLU is exact: same bits as the plain Swift expressions.
            let relu = assertSameBitsAtEveryLevel("relu n=\(n)") { run { locus_relu($0, $1, $2) } }
            XCTAssertEqual(bits(relu), bits(x.map { max($0, 0) }))
            let reluB = assertSameBitsAtEveryLevel("relu backward n=\(n)") { runBackward { locus_relu_backward($0, $1, $2, $3) } }
            XCTAssertEqual(bits(reluB), bits(zip(x, dy).map { $0 > 0 ? $1 : 0 }))
            let sum = assertSameBitsAtEveryLevel("sum n=\(n)") { [x.withUnsafeBufferPointer { locus_sum($0.baseAddress!, n) }] }
            XCTAssertEqual(Double(sum[0]), x.reduce(0.0) { $0 + Double($1) }, accuracy: 1e-6 * Double(n) * 6)
        }
        // NaN passes through ReLU (a diverging loss must stay visible).
        var y: [Float] = [0]
        locus_relu([Float.nan], &y, 1)
        XCTAssertTrue(y[0].isNaN)
    }

    func testSoftmaxAndItsBackwardAgreeAcrossLevelsAndWithDoubleReferences() {
        var r = TestRandom(2)
        for n in [1, 5, 8, 13, 197] {
            let rows = 7
            let x = (0..<(rows * n)).map { _ in r.uniform(-20, 20) }, d = (0..<(rows * n)).map { _ in r.uniform(-1, 1) }
            let p = assertSameBitsAtEveryLevel("softmax n=\(n)") {
                var y = x
                y.withUnsafeMutableBufferPointer { locus_softmax_rows($0.baseAddress!, rows, n) }
                return y
            }
            var expected: [Double] = []
            for row in 0..<rows {
                let v = x[(row * n)..<((row + 1) * n)].map(Double.init), m = v.max()!
                let e = v.map { exp($0 - m) }, s = e.reduce(0, +)
                expected += e.map { $0 / s }
            }
            assertClose(p, expected, tol: 1e-6, "softmax n=\(n)")
            let ds = assertSameBitsAtEveryLevel("softmax backward n=\(n)") {
                var g = d
                p.withUnsafeBufferPointer { pp in g.withUnsafeMutableBufferPointer { locus_softmax_backward_rows(pp.baseAddress!, $0.baseAddress!, rows, n) } }
                return g
            }
            var want: [Double] = []
            for row in 0..<rows {
                let pr = p[(row * n)..<((row + 1) * n)].map(Double.init), dr = d[(row * n)..<((row + 1) * n)].map(Double.init)
                let dot = zip(pr, dr).reduce(0) { $0 + $1.0 * $1.1 }
                want += zip(pr, dr).map { $0 * ($1 - dot) }
            }
            assertClose(ds, want, tol: 1e-6, "softmax backward n=\(n)")
        }
    }

    func testLayerNormKernelsAgreeAcrossLevelsAndWithDoubleReferences() {
        var r = TestRandom(3)
        for (rows, d) in [(3, 1), (5, 7), (300, 192), (9, 33)] {
            let x = (0..<(rows * d)).map { _ in r.uniform(-3, 3) + 0.5 }, dy = (0..<(rows * d)).map { _ in r.uniform(-1, 1) }
            let gamma = (0..<d).map { _ in r.uniform(0.5, 1.5) }, beta = (0..<d).map { _ in r.uniform(-0.5, 0.5) }
            let eps: Float = 1e-6
            var xhat = [Float](repeating: 0, count: rows * d), inv = [Float](repeating: 0, count: rows)
            let y = assertSameBitsAtEveryLevel("layer norm \(rows)×\(d)") {
                var y = [Float](repeating: 0, count: rows * d)
                locus_layer_norm(x, gamma, beta, eps, &xhat, &inv, &y, rows, d)
                return y
            }
            var want: [Double] = [], wantHat: [Double] = [], wantInv: [Double] = []
            for row in 0..<rows {
                let v = x[(row * d)..<((row + 1) * d)].map(Double.init)
                let m = v.reduce(0, +) / Double(d), s = 1 / (v.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(d) + Double(eps)).squareRoot()
                wantInv.append(s)
                for j in 0..<d { let h = (v[j] - m) * s; wantHat.append(h); want.append(h * Double(gamma[j]) + Double(beta[j])) }
            }
            assertClose(y, want, tol: 2e-6, "layer norm \(rows)×\(d)")
            assertClose(xhat, wantHat, tol: 2e-6, "x̂ \(rows)×\(d)")
            assertClose(inv, wantInv, tol: 2e-6, "1/σ \(rows)×\(d)")
            let back = assertSameBitsAtEveryLevel("layer norm backward \(rows)×\(d)") {
                var dx = [Float](repeating: 0, count: rows * d), dg = [Float](repeating: 0, count: d), db = [Float](repeating: 0, count: d)
                locus_layer_norm_backward(dy, xhat, inv, gamma, &dx, &dg, &db, rows, d)
                return dx + dg + db
            }
            var wantDx: [Double] = [], wantDg = [Double](repeating: 0, count: d), wantDb = [Double](repeating: 0, count: d)
            for row in 0..<rows {
                let o = row * d
                let gh = (0..<d).map { Double(dy[o + $0]) * Double(gamma[$0]) }
                let m1 = gh.reduce(0, +) / Double(d), m2 = (0..<d).reduce(0.0) { $0 + gh[$1] * Double(xhat[o + $1]) } / Double(d)
                for j in 0..<d {
                    wantDx.append(Double(inv[row]) * (gh[j] - m1 - Double(xhat[o + j]) * m2))
                    wantDg[j] += Double(dy[o + j]) * Double(xhat[o + j]); wantDb[j] += Double(dy[o + j])
                }
            }
            assertClose(Array(back[0..<(rows * d)]), wantDx, tol: 2e-6, "dx \(rows)×\(d)")
            assertClose(Array(back[(rows * d)...]), wantDg + wantDb, tol: 2e-6, "dγ, dβ \(rows)×\(d)")
        }
    }

    /// The optimizer kernels apply torch's formulas element by element in the order the Swift loops
    /// did, so they match a scalar Swift transcription bit for bit, at both levels; frozen entries keep
    /// their bits (−0.0 and a NaN gradient included).
    func testOptimizerKernelsMatchScalarFormulasBitForBitAtEveryLevel() {
        var r = TestRandom(4)
        let n = 20_011
        var w0 = (0..<n).map { _ in r.uniform(-1, 1) }
        w0[3] = -0.0
        var g = (0..<n).map { _ in r.uniform(-0.1, 0.1) }
        g[5] = .nan
        let mask: [Float] = (0..<n).map { $0 == 5 || $0 == 3 ? 0 : (r.below(3) == 0 ? 0 : 1) }
        let idx = (0..<n).filter { mask[$0] != 0 }.map(Int32.init)
        let (lr, mu, damp, wd): (Float, Float, Float, Float) = (0.05, 0.9, 0.9, 0.01)
        for nesterov in [false, true] {
            // Two steps (the first initialises the buffer).
            let got = assertSameBitsAtEveryLevel("sparse sgdm") {
                var w = w0, b = [Float](repeating: 0, count: n)
                for first in [true, false] { locus_sparse_sgdm(&w, g, &b, mask, n, lr, mu, damp, wd, nesterov ? 1 : 0, first ? 1 : 0) }
                return w + b
            }
            var w = w0, b = [Float](repeating: 0, count: n)
            for first in [true, false] { for i in 0..<n where mask[i] != 0 {
                let d = g[i] + wd * w[i]
                b[i] = first ? d : mu * b[i] + damp * d
                w[i] -= lr * (nesterov ? d + mu * b[i] : b[i])
            } }
            XCTAssertEqual(bits(got), bits(w + b), "sparse sgdm, nesterov \(nesterov)")
            XCTAssertEqual(got[3].bitPattern, (-0.0 as Float).bitPattern)
            XCTAssertEqual(got[5].bitPattern, w0[5].bitPattern)
            // The index form over the same entries gives the same parameters.
            let viaIndex = assertSameBitsAtEveryLevel("sparse sgdm entries") {
                var w = w0, b = [Float](repeating: 0, count: idx.count)
                for first in [true, false] { locus_sparse_sgdm_entries(&w, g, &b, idx, idx.count, lr, mu, damp, wd, nesterov ? 1 : 0, first ? 1 : 0) }
                return w
            }
            XCTAssertEqual(bits(viaIndex), bits(Array(got[0..<n])))
            // Dense SGD with momentum (no mask).
            let dense = assertSameBitsAtEveryLevel("sgd") {
                var w = w0, b = [Float](repeating: 0, count: n)
                for first in [true, false] { locus_sgd_momentum(&w, g, &b, n, lr, mu, damp, wd, nesterov ? 1 : 0, first ? 1 : 0) }
                return w
            }
            var wd0 = w0, bd = [Float](repeating: 0, count: n)
            for first in [true, false] { for i in 0..<n {
                bd[i] = first ? g[i] + wd * wd0[i] : mu * bd[i] + damp * (g[i] + wd * wd0[i])
                wd0[i] -= lr * (nesterov ? (g[i] + wd * wd0[i]) + mu * bd[i] : bd[i])
            } }
            XCTAssertEqual(bits(dense), bits(wd0), "sgd, nesterov \(nesterov)")
        }
        // Masked AdamW and AdamW.
        let (step, irb, b1, b2, e): (Float, Float, Float, Float, Float) = (0.01, 1.3, 0.9, 0.999, 1e-8)
        let masked = assertSameBitsAtEveryLevel("masked adamw") {
            var w = w0, m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
            for _ in 0..<2 { locus_masked_adamw(&w, g, &m, &v, mask, n, step, irb, b1, b2, e, lr * wd) }
            return w
        }
        var wm = w0, mm = [Float](repeating: 0, count: n), vm = [Float](repeating: 0, count: n)
        for _ in 0..<2 { for i in 0..<n {
            mm[i] = b1 * mm[i] + (1 - b1) * g[i]
            vm[i] = b2 * vm[i] + (1 - b2) * g[i] * g[i]
            guard mask[i] != 0 else { continue }
            wm[i] -= lr * wd * wm[i]
            wm[i] -= step * mm[i] / (vm[i].squareRoot() * irb + e)
        } }
        XCTAssertEqual(bits(masked), bits(wm))
        let maskedIdx = assertSameBitsAtEveryLevel("masked adamw entries") {
            var w = w0, m = [Float](repeating: 0, count: idx.count), v = [Float](repeating: 0, count: idx.count)
            for _ in 0..<2 { locus_masked_adamw_entries(&w, g, &m, &v, idx, idx.count, step, irb, b1, b2, e, lr * wd) }
            return w
        }
        XCTAssertEqual(bits(maskedIdx), bits(wm))
        let finite = g.map { $0.isNaN ? 0 : $0 }
        let adam = assertSameBitsAtEveryLevel("adamw") {
            var w = w0, m = [Float](repeating: 0, count: n), v = [Float](repeating: 0, count: n)
            locus_adamw(&w, finite, &m, &v, n, step, irb, b1, b2, e, 1 - lr * wd)
            return w
        }
        var wa = w0
        for i in 0..<n {
            wa[i] *= 1 - lr * wd
            let m = (1 - b1) * finite[i], v = (1 - b2) * finite[i] * finite[i]
            wa[i] -= step * m / (v.squareRoot() * irb + e)
        }
        XCTAssertEqual(bits(adam), bits(wa))
    }

    /// Products are cut by shape alone: one thread and two give the same bits, and the result agrees
    /// with a double-precision product.
    func testSplitProductsGiveTheSameBitsWithOneThreadOrTwo() throws {
        try BLAS.ensureLoaded()
        let saved = BLAS.threads
        defer { BLAS.setThreads(saved) }
        var r = TestRandom(5)
        for (m, n, k, ta, tb) in [(128, 256, 784, false, true), (256, 784, 128, true, false), (6, 3000, 25, false, false),
                                  (100, 40, 300, true, true), (3, 5, 7, false, false)] {
            let a = (0..<(m * k)).map { _ in r.uniform() }, b = (0..<(k * n)).map { _ in r.uniform() }
            let c0 = (0..<(m * n)).map { _ in r.uniform() }
            func product(threads: Int) -> [Float] {
                BLAS.setThreads(threads)
                var c = c0
                a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                    BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: ap.baseAddress!, lda: ta ? m : k,
                              b: bp.baseAddress!, ldb: tb ? k : n, beta: 2, c: cp.baseAddress!, ldc: n)
                } } }
                return c
            }
            let one = product(threads: 1), two = product(threads: 2)
            XCTAssertEqual(bits(one), bits(two), "\(m)×\(n)×\(k): threads changed the bits (split \(locus_gemm_split(Int32(m), Int32(n), Int32(k))))")
            var want = [Double](repeating: 0, count: m * n)
            for i in 0..<m { for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(ta ? a[p * m + i] : a[i * k + p]) * Double(tb ? b[j * k + p] : b[p * n + j]) }
                want[i * n + j] = 0.5 * s + 2 * Double(c0[i * n + j])
            } }
            assertClose(two, want, tol: 1e-5, "\(m)×\(n)×\(k)")
        }
        XCTAssertNotEqual(locus_gemm_split(128, 256, 784), 0, "the MLP's products are split")
    }

    /// Every part runs exactly once, however many threads and parts; a run from inside a part runs inline.
    func testPoolRunsEveryPartOnceAndNestsInline() {
        let saved = BLAS.threads
        defer { BLAS.setThreads(saved) }
        for threads in [1, 2, 3] {
            BLAS.setThreads(threads)
            for parts in [1, 2, 5, 64] {
                var hits = [Int](repeating: 0, count: parts * 3)
                hits.withUnsafeMutableBufferPointer { h in
                    Parallel.run(parts: parts) { p in
                        h[p] += 1
                        Parallel.run(parts: 2) { q in h[parts + 2 * p + q] += 1 }
                    }
                }
                XCTAssertEqual(hits, [Int](repeating: 1, count: parts * 3), "threads \(threads), parts \(parts)")
            }
        }
    }

    /// A training step's gradients do not depend on the SIMD level or on the number of threads.
    func testViTStepIsTheSameAtEveryLevelAndThreadCount() throws {
        let saved = BLAS.threads
        defer { BLAS.setThreads(saved) }
        var r = TestRandom(6)
        let x = r.normalTensor([2, 3, 16, 16])
        func grads(threads: Int) throws -> [Float] {
            BLAS.setThreads(threads)
            let model = try Model(try Architecture.vit(imageSize: 16, patch: 4, channels: 3, width: 24, depth: 2, heads: 3, mlpRatio: 2,
                                                       classes: 5), seed: 3)
            model.zeroGrad()
            let z = try model.forward(x, head: "default", mode: .train)
            try model.backward(CrossEntropy()(z, labels: [1, 4]).gradient, head: "default")
            return model.parameters.flatMap(\.grad.data)
        }
        let perLevel = try atEveryLevel { () -> [[Float]] in [try grads(threads: 1), try grads(threads: 2)] }
        let reference = perLevel[0][0]
        XCTAssertTrue(reference.contains { $0 != 0 })
        for run in perLevel { for g in run { XCTAssertEqual(bits(g), bits(reference)) } }
    }
}
