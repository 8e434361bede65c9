import LocusRandom
import XCTest

final class SplitMix64Tests: XCTestCase {
    func testReferenceOutputs() {
        // Vigna's splitmix64.c seeded with 0: the first three outputs.
        var g = SplitMix64(seed: 0)
        XCTAssertEqual([g.next(), g.next(), g.next()], [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    func testUnitDrawsUseTheTopBits() {
        var a = SplitMix64(seed: 5), b = SplitMix64(seed: 5)
        for _ in 0..<100 {
            XCTAssertEqual(a.unitFloat(), Float(b.next() >> 40) / 16_777_216)
            XCTAssertEqual(a.unitDouble(), Double(b.next() >> 11) / 9_007_199_254_740_992)
        }
    }

    /// For a power of two nothing is rejected: below(n) is the output modulo n, draw for draw.
    func testPowerOfTwoBoundsRejectNothing() {
        for k in [1, 2, 7, 16, 40, 63] as [UInt64] {
            var a = SplitMix64(seed: 11 &* k), b = SplitMix64(seed: 11 &* k)
            for _ in 0..<200 { XCTAssertEqual(a.below(1 << k), b.next() % (1 << k)) }
            XCTAssertEqual(a.state, b.state, "2^\(k): a draw was rejected")
        }
    }

    /// Outputs below 2⁶⁴ mod n are skipped; the next one, reduced modulo n, is the draw.
    func testRejectionSkipsTheShortRemainder() {
        let bound: UInt64 = (1 << 63) + 1, threshold: UInt64 = (1 << 63) - 1   // 2⁶⁴ mod bound
        var a = SplitMix64(seed: 3), b = SplitMix64(seed: 3)
        var rejected = 0
        for _ in 0..<1000 {
            var r = b.next()
            while r < threshold { r = b.next(); rejected += 1 }
            XCTAssertEqual(a.below(bound), r % bound)
        }
        XCTAssertGreaterThan(rejected, 300, "about half of the outputs fall below the threshold")
    }

    /// n = 3·2⁶²: plain modulo would return values below 2⁶² twice as often as the others (probability
    /// 1/2 instead of 1/3); the draw is uniform.
    func testNoModuloBias() {
        let bound: UInt64 = 3 << 62
        var g = SplitMix64(seed: 17)
        let n = 30_000
        let low = (0..<n).filter { _ in g.below(bound) < (1 << 62) }.count
        XCTAssertEqual(Double(low) / Double(n), 1.0 / 3.0, accuracy: 0.015)
    }

    func testSmallBoundsAreUniformAndInRange() {
        var g = SplitMix64(seed: 23)
        var counts = [Int](repeating: 0, count: 6)
        for _ in 0..<60_000 { counts[g.below(6)] += 1 }
        for c in counts { XCTAssertEqual(Double(c), 10_000, accuracy: 400) }
    }

    /// Epoch orders (`permutation` of a derived stream) of the sizes Locus trains on are what plain
    /// modulo gave before the rejection step existed: a draw below i + 1 is rejected with
    /// probability < (i + 1)/2⁶⁴, so seeded shuffles of earlier runs reproduce.
    func testPermutationsMatchThePlainModuloShuffle() {
        for (seed, n) in [(0, 60_000), (3, 40), (1, 10_000), (42, 50_000)] as [(UInt64, Int)] {
            for epoch in 0..<2 as Range<UInt64> {
                var a = SplitMix64.derived(seed: seed, 0x5EED_0000 + epoch), b = a
                var p = Array(0..<n)
                for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(b.next() % UInt64(i + 1))) }
                XCTAssertEqual(a.permutation(n), p, "seed \(seed), n \(n), epoch \(epoch)")
            }
        }
    }

    func testPermutationIsAPermutation() {
        var g = SplitMix64(seed: 9)
        for n in [0, 1, 2, 5, 100] { XCTAssertEqual(g.permutation(n).sorted(), Array(0..<n)) }
    }

    func testDerivedStreams() {
        // derived(seed, label) = SplitMix64(seed ^ label·0xD1B54A32D192ED03) with its first output skipped.
        var d = SplitMix64.derived(seed: 7, 5), r = SplitMix64(seed: 7 ^ (5 &* 0xD1B5_4A32_D192_ED03))
        _ = r.next()
        XCTAssertEqual(d.next(), r.next())
        var e = SplitMix64.derived(seed: 7, 5)
        XCTAssertEqual(SplitMix64.derivedSeed(7, 5), e.next())
        XCTAssertNotEqual(SplitMix64.derivedSeed(7, 5), SplitMix64.derivedSeed(7, 6))
    }
}
