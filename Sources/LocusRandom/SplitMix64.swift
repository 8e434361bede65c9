#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SplitMix64 (Steele, Lea & Flood 2014): Locus's one seeded generator. Tiny, fast and the same on
/// every machine, so seeded runs (initialisation, shuffling, dropout, splits, sampled estimators,
/// DARE) reproduce bit for bit. Output k (k = 1, 2, ...) is mix(seed + k·γ), γ = 0x9E3779B97F4A7C15.
///
/// Derived draws, each a function of the outputs only (interop/python/locus_h5/torch.py follows them):
///   unitFloat   (x >> 40) · 2⁻²⁴          unitDouble (x >> 11) · 2⁻⁵³
///   below(n)    the first output x with x ≥ 2⁶⁴ mod n, reduced mod n (no modulo bias: the rejected
///               range is the short remainder; for a power of two n nothing is ever rejected, and for
///               n ≤ 2³² a draw is rejected with probability < 2⁻³²)
///   permutation Fisher–Yates: for i from n−1 down to 1, swap i with below(i + 1)
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }

    public static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15

    public mutating func next() -> UInt64 {
        state &+= SplitMix64.gamma
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable as Float).
    public mutating func unitFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
    /// Uniform in [0, 1) with 53 random bits (exactly representable as Double).
    public mutating func unitDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * unitFloat() }
    /// Standard normal (Box–Muller on two 24-bit uniforms; the first draw is kept away from 0).
    public mutating func normal() -> Float {
        let u1 = (Float(next() >> 40) + 0.5) * (1.0 / 16_777_216.0), u2 = unitFloat()
        return (-2 * logf(u1)).squareRoot() * cosf(2 * Float.pi * u2)
    }

    /// Uniform in `0..<bound` without modulo bias: outputs below `2⁶⁴ mod bound` are rejected, the
    /// first other one is reduced modulo `bound`.
    public mutating func below(_ bound: UInt64) -> UInt64 {
        precondition(bound > 0, "empty range")
        let threshold = (0 &- bound) % bound
        while true {
            let r = next()
            if r >= threshold { return r % bound }
        }
    }

    /// Uniform in `0..<bound` (`bound` ≥ 1), as `below(UInt64(bound))`.
    public mutating func below(_ bound: Int) -> Int { Int(below(UInt64(bound))) }

    /// Fisher–Yates: for i from count−1 down to 1, swap element i with element `below(i + 1)`.
    public mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) { a.swapAt(i, below(i + 1)) }
    }

    /// A Fisher–Yates shuffle of 0..<n (`shuffle` of [0, 1, ..., n−1]).
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        shuffle(&p)
        return p
    }

    /// An independent stream derived from `seed` and a label (e.g. a layer index or an epoch):
    /// SplitMix64(seed ^ label·0xD1B54A32D192ED03) with its first output skipped.
    public static func derived(seed: UInt64, _ label: UInt64) -> SplitMix64 {
        var r = SplitMix64(seed: seed ^ (label &* 0xD1B5_4A32_D192_ED03))
        _ = r.next()
        return r
    }

    /// A seed for an independent stream: the first output of `derived(seed:label)`.
    public static func derivedSeed(_ seed: UInt64, _ label: UInt64) -> UInt64 {
        var r = derived(seed: seed, label)
        return r.next()
    }
}
