import LocusKernels

/// The transformer's hot element-wise loops (GELU, QuickGELU, softmax), now C kernels compiled for
/// the x86-64 baseline and for AVX2 and chosen at run time (LocusKernels, docs/engine-kernels.md),
/// split across the engine's thread pool for long arrays.
///
/// exp: Cody–Waite range reduction x = n·ln2 + r and cephes' degree-6 polynomial for e^r (relative
/// error ~1e-7 on the clamped range [−87.3, 88.3], i.e. no denormal results: e^x below 2^-126 comes
/// out as ~1e-38 instead of 0, which no softmax or GELU here can tell apart).
/// Φ (GELU's normal CDF): erfc from Numerical Recipes' Chebyshev fit (relative error < 1.2e-7 in exact
/// arithmetic); evaluated in float32 with the exp above, Φ's relative error measured against math.erfc
/// is ≤ 8e-7 for |x| < 5 and ≤ 2.1e-6 in the far tail (Φ ~ 1e-19).
enum FastMath {
    /// y = x·Φ(x) over n values.
    static func gelu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) { locus_gelu(x, y, n) }

    /// g = dy · (Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π).
    static func geluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count n: Int) {
        locus_gelu_backward(x, dy, g, n)
    }

    /// y = x·σ(1.702 x) over n values (exp's clamping keeps σ finite: ~1e-38 for x < −51.9, not 0).
    static func quickGelu(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count n: Int) { locus_quick_gelu(x, y, n) }

    /// g = dy · (σ + 1.702·x·σ·(1 − σ)), σ = σ(1.702 x).
    static func quickGeluBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, count n: Int) {
        locus_quick_gelu_backward(x, dy, g, n)
    }

    /// In-place softmax of `rows` consecutive rows of length n.
    static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, count n: Int) { locus_softmax_rows(x, rows, n) }
}
