#if canImport(Glibc)
import Glibc
#endif

/// SplitMix64: tiny, fast and the same on every machine, so seeded runs reproduce bit for bit.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 random bits (exactly representable as Float).
    public mutating func unitFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
    public mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * unitFloat() }
    /// Standard normal (Box–Muller on two 24-bit uniforms; the first draw is kept away from 0).
    public mutating func normal() -> Float {
        let u1 = (Float(next() >> 40) + 0.5) * (1.0 / 16_777_216.0), u2 = unitFloat()
        return (-2 * logf(u1)).squareRoot() * cosf(2 * Float.pi * u2)
    }
    /// Uniform integer in [0, n).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    /// Fisher–Yates shuffle of 0..<n.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, below(i + 1)) } }
        return p
    }

    /// A seed for an independent stream, derived from `seed` and a label (e.g. a layer index).
    public static func derivedSeed(_ seed: UInt64, _ label: UInt64) -> UInt64 {
        var r = derived(seed: seed, label)
        return r.next()
    }

    /// An independent stream derived from this seed and a label (e.g. a layer index).
    public static func derived(seed: UInt64, _ label: UInt64) -> SeededRandom {
        var r = SeededRandom(seed: seed ^ (label &* 0xD1B5_4A32_D192_ED03))
        _ = r.next()
        return r
    }
}
