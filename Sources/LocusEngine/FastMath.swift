import Dispatch

/// Vectorisable element-wise math for the transformer's hot loops (GELU, QuickGELU, softmax) and a two-way split of long element-wise loops across cores.
///
/// exp: Cody–Waite range reduction x = n·ln2 + r and cephes' degree-6 polynomial for e^r (relative
/// error ~1e-7 on the clamped range [−87.3, 88.3], i.e. no denormal results: e^x below 2^-126 comes
/// out as ~1e-38 instead of 0, which no softmax or GELU here can tell apart).
/// Φ (GELU's normal CDF): erfc from Numerical Recipes' Chebyshev fit (relative error < 1.2e-7 in exact
/// arithmetic); evaluated in float32 with the exp above, Φ's relative error measured against math.erfc
/// is ≤ 8e-7 for |x| < 5 and ≤ 2.1e-6 in the far tail (Φ ~ 1e-19).
enum FastMath {
    // Written as scalar functions without calls or branches (selects only), inlined into plain loops
    // over buffers, so that LLVM's loop vectoriser turns them into SIMD code; Swift's generic SIMD
    // types were measured slower here (lane-wise rounding and conversions were not inlined).

    @inline(__always)
    static func exp(_ v: Float) -> Float {
        var x = v < -87.3 ? -87.3 : v
        x = x > 88.3 ? 88.3 : x
        // n = round(x / ln2) by the 1.5·2^23 trick: the sum's low mantissa bits hold n itself.
        let shifted = x * 1.442_695_04 + 12_582_912
        let n = shifted - 12_582_912
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        let y = p * r * r + r + 1
        let exponent = (Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000 &+ 127) &<< 23
        return y * Float(bitPattern: UInt32(bitPattern: exponent))
    }

    /// Φ(x) = ½(1 + erf(x/√2)) = ½ erfc(−x/√2), and e^(−x²/2), which GELU's derivative needs.
    /// erfc(z) for z ≥ 0 from the Chebyshev fit of Numerical Recipes (erfcc: relative error < 1.2e-7
    /// everywhere, so the tail Φ(−5) ≈ 2.9e-7 keeps its relative accuracy — unlike 1 − erf).
    @inline(__always)
    static func normalCDFAndKernel(_ x: Float) -> (cdf: Float, kernel: Float) {
        let (t, p) = erfcFit(x)
        let e = exp(-0.5 * x * x)
        let half = 0.5 * t * e * exp(p)                 // ½ erfc(|x|/√2) = ½ t·exp(−z² + P(t))
        return (x >= 0 ? 1 - half : half, e)
    }

    /// Φ(x) alone (GELU's forward): the same fit with one exp instead of two.
    @inline(__always)
    static func normalCDF(_ x: Float) -> Float {
        let (t, p) = erfcFit(x)
        let half = 0.5 * t * exp(p - 0.5 * x * x)
        return x >= 0 ? 1 - half : half
    }

    /// t = 1/(1 + z/2) and the fit's exponent P(t), z = |x|/√2: erfc(z) = t·exp(−z² + P(t)).
    @inline(__always)
    static func erfcFit(_ x: Float) -> (t: Float, p: Float) {
        let z = (x < 0 ? -x : x) * 0.707_106_781_186_547_52
        let t = 1 / (1 + 0.5 * z)
        var p: Float = 0.170_872_77
        p = p * t - 0.822_152_23
        p = p * t + 1.488_515_87
        p = p * t - 1.135_203_98
        p = p * t + 0.278_868_07
        p = p * t - 0.186_288_06
        p = p * t + 0.096_784_18
        p = p * t + 0.374_091_96
        p = p * t + 1.000_023_68
        p = p * t - 1.265_512_23
        return (t, p)
    }

    /// y = x·Φ(x) over n values.
    static func gelu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) {
        parallelChunks(n) { range in
            for i in range { let v = x[i]; y[i] = v * normalCDF(v) }
        }
    }

    /// g = dy · (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π).
    static func geluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count n: Int) {
        parallelChunks(n) { range in
            for i in range {
                let v = x[i]
                let (cdf, e) = normalCDFAndKernel(v)
                g[i] = dy[i] * (cdf + v * e * 0.398_942_280_401_432_68)
            }
        }
    }

    /// σ(1.702 x), QuickGELU's gate. exp's clamping keeps it finite: for x < −51.9 it is ~1e-38, not 0.
    @inline(__always)
    static func quickGeluGate(_ x: Float) -> Float { 1 / (1 + exp(-1.702 * x)) }

    /// y = x·σ(1.702 x) over n values.
    static func quickGelu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) {
        parallelChunks(n) { range in
            for i in range { let v = x[i]; y[i] = v * quickGeluGate(v) }
        }
    }

    /// g = dy · (σ + 1.702·x·σ·(1 − σ)), σ = σ(1.702 x).
    static func quickGeluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count n: Int) {
        parallelChunks(n) { range in
            for i in range {
                let v = x[i], s = quickGeluGate(v)
                g[i] = dy[i] * (s + 1.702 * v * s * (1 - s))
            }
        }
    }

    /// In-place softmax of one row.
    static func softmaxRow(_ row: UnsafeMutablePointer<Float>, count n: Int) {
        var m = -Float.infinity
        for j in 0..<n { m = row[j] > m ? row[j] : m }
        for j in 0..<n { row[j] = exp(row[j] - m) }
        var sum: Float = 0
        for j in 0..<n { sum += row[j] }
        let inv = 1 / sum
        for j in 0..<n { row[j] *= inv }
    }
    /// Runs `body` over [0, n) split into two halves on two threads when n is large enough to pay
    /// for it (element-wise work between matrix products would otherwise leave a core idle).
    /// The split depends only on n, so results do not depend on timing.
    static func parallelChunks(_ n: Int, minimum: Int = 1 << 16, _ body: (Range<Int>) -> Void) {
        guard n >= minimum else { body(0..<n); return }
        let half = (n / 2 + 7) / 8 * 8
        // The halves touch disjoint ranges of the caller's buffers; the box only carries the closure across.
        struct Box: @unchecked Sendable { let body: (Range<Int>) -> Void }
        withoutActuallyEscaping(body) { body in
            let box = Box(body: body)
            DispatchQueue.concurrentPerform(iterations: 2) { k in box.body(k == 0 ? 0..<half : half..<n) }
        }
    }
}
