import Foundation
import LocusFormat
import LocusTestSupport
import XCTest

/// bfloat16 bits of `x` (not NaN) by definition: of the two bfloat16 values bracketing x
/// (truncation toward zero, and one ulp further out) take the nearer, measured in Double; on a tie
/// the one with an even last mantissa bit. Past the largest finite bfloat16 the next candidate is
/// 2^128 (infinity's "value" for rounding), so overflow gives ±inf exactly as IEEE prescribes.
func referenceBFloat16(_ x: Float) -> UInt16 {
    precondition(!x.isNaN)
    let bits = x.bitPattern
    let sign = UInt16(truncatingIfNeeded: bits >> 31) << 15
    let magnitude = bits & 0x7FFF_FFFF
    let low = UInt16(truncatingIfNeeded: magnitude >> 16)
    if magnitude & 0xFFFF == 0 { return sign | low }     // exactly representable (incl. ±0, ±inf)
    let high = low + 1
    func value(_ b: UInt16) -> Double { b >= 0x7F80 ? 0x1p128 : Double(Float(bitPattern: UInt32(b) << 16)) }
    let v = Double(Float(bitPattern: magnitude))
    let below = v - value(low), above = value(high) - v
    precondition(below > 0 && above > 0)
    let pick: UInt16 = below < above ? low : above < below ? high : (low & 1 == 0 ? low : high)
    return sign | pick
}

final class HalfPrecisionTests: XCTestCase {

    private func hex(_ v: UInt32) -> String { String(format: "0x%08X", v) }
    private func hex(_ v: UInt16) -> String { String(format: "0x%04X", v) }

    func testReferenceAgreesWithHandComputedCases() {
        XCTAssertEqual(referenceBFloat16(1.0), 0x3F80)
        XCTAssertEqual(referenceBFloat16(Float(bitPattern: 0x3F80_8000)), 0x3F80)
        XCTAssertEqual(referenceBFloat16(Float(bitPattern: 0x3F81_8000)), 0x3F82)
        XCTAssertEqual(referenceBFloat16(.greatestFiniteMagnitude), 0x7F80)
        XCTAssertEqual(referenceBFloat16(-.infinity), 0xFF80)
    }

    /// All 65 536 upper halves, each with several lower halves (exact, just below / at / just above
    /// the midpoint, all ones): every rounding situation, sign, exponent and NaN is covered.
    func testBFloat16AgainstReferenceForAllUpperHalves() {
        var failures: [String] = []
        for upper in UInt32(0)...0xFFFF {
            for lower: UInt32 in [0x0000, 0x7FFF, 0x8000, 0x8001, 0xFFFF] {
                let bits = upper << 16 | lower
                let x = Float(bitPattern: bits)
                let got = HalfPrecision.bfloat16Bits(x)
                if x.isNaN {
                    let back = HalfPrecision.float(fromBFloat16: got)
                    if !back.isNaN || (got >> 15) != UInt16(bits >> 31) { failures.append("NaN \(hex(bits)) → \(hex(got))") }
                } else {
                    let want = referenceBFloat16(x)
                    if got != want { failures.append("\(hex(bits)) → \(hex(got)), expected \(hex(want))") }
                }
                if failures.count > 20 { break }
            }
        }
        XCTAssertEqual(failures, [])
    }

    func testBFloat16AgainstReferenceForRandomFloats() {
        var rng = SplitMix64(seed: 0xBF16)
        var failures: [String] = []
        for _ in 0..<100_000 {
            let bits = UInt32(truncatingIfNeeded: rng.next())
            let x = Float(bitPattern: bits)
            let got = HalfPrecision.bfloat16Bits(x)
            if x.isNaN {
                if !HalfPrecision.float(fromBFloat16: got).isNaN || got >> 15 != UInt16(bits >> 31) { failures.append(hex(bits)) }
            } else if got != referenceBFloat16(x) {
                failures.append("\(hex(bits)) → \(hex(got)), expected \(hex(referenceBFloat16(x)))")
            }
            if failures.count > 20 { break }
        }
        XCTAssertEqual(failures, [])
    }

    func testBFloat16EdgeCases() {
        func bf(_ bits: UInt32) -> UInt16 { HalfPrecision.bfloat16Bits(Float(bitPattern: bits)) }
        // Ties to even, both ways.
        XCTAssertEqual(bf(0x3F80_8000), 0x3F80, "tie, even below: stays")
        XCTAssertEqual(bf(0x3F81_8000), 0x3F82, "tie, odd below: rounds up to even")
        XCTAssertEqual(bf(0xBF81_8000), 0xBF82, "negative tie rounds away to even")
        XCTAssertEqual(bf(0x3F80_8001), 0x3F81, "just past the tie rounds up")
        XCTAssertEqual(bf(0x3F81_7FFF), 0x3F81, "just below the tie rounds down")
        // Carry from the mantissa into the exponent.
        XCTAssertEqual(bf(0x3FFF_8000), 0x4000)
        XCTAssertEqual(bf(0x3FFF_FFFF), 0x4000)
        XCTAssertEqual(bf(0xBFFF_8000), 0xC000)
        XCTAssertEqual(bf(0x3FFE_8000), 0x3FFE)
        // Overflow: past the largest bfloat16's rounding point → infinity.
        XCTAssertEqual(HalfPrecision.bfloat16Bits(.greatestFiniteMagnitude), 0x7F80)
        XCTAssertEqual(HalfPrecision.bfloat16Bits(-.greatestFiniteMagnitude), 0xFF80)
        XCTAssertEqual(bf(0x7F7F_8000), 0x7F80, "tie between max (odd) and 2^128 goes to infinity")
        // The largest bfloat16 itself, and values that round down to it, stay finite.
        XCTAssertEqual(bf(0x7F7F_0000), 0x7F7F)
        XCTAssertEqual(bf(0x7F7F_7FFF), 0x7F7F)
        XCTAssertEqual(bf(0xFF7F_0000), 0xFF7F)
        // Zeros.
        XCTAssertEqual(HalfPrecision.bfloat16Bits(0), 0x0000)
        XCTAssertEqual(HalfPrecision.bfloat16Bits(-0.0), 0x8000)
        // Subnormals, including ties and the step up into the normal range.
        XCTAssertEqual(bf(0x0000_8000), 0x0000, "subnormal tie to even zero")
        XCTAssertEqual(bf(0x0001_8000), 0x0002, "subnormal tie, odd below")
        XCTAssertEqual(bf(0x8000_8000), 0x8000, "negative subnormal tie to -0")
        XCTAssertEqual(bf(0x0000_8001), 0x0001)
        XCTAssertEqual(bf(0x007F_8000), 0x0080, "largest subnormal tie rounds to the smallest normal")
        XCTAssertEqual(bf(0x0000_0001), 0x0000)
        // Infinities.
        XCTAssertEqual(HalfPrecision.bfloat16Bits(.infinity), 0x7F80)
        XCTAssertEqual(HalfPrecision.bfloat16Bits(-.infinity), 0xFF80)
        // NaN stays NaN, sign kept, quiet — even a NaN whose payload is only in the low half.
        for bits: UInt32 in [0x7FC0_0000, 0xFFC0_0000, 0x7F80_0001, 0xFF80_0001, 0x7FA0_0000, 0x7FFF_FFFF, 0xFFFF_FFFF] {
            let r = bf(bits)
            XCTAssertTrue(HalfPrecision.float(fromBFloat16: r).isNaN, "\(hex(bits)) → \(hex(r))")
            XCTAssertEqual(r >> 15, UInt16(bits >> 31), "sign of \(hex(bits))")
            XCTAssertNotEqual(r & 0x0040, 0, "quiet NaN for \(hex(bits))")
        }
    }

    func testBFloat16DecodeIsTheUpperHalf() {
        for b in UInt32(0)...0xFFFF {
            let f = HalfPrecision.float(fromBFloat16: UInt16(b))
            XCTAssertEqual(f.bitPattern, b << 16)
            if !f.isNaN { XCTAssertEqual(HalfPrecision.bfloat16Bits(f), UInt16(b)) }
        }
    }

    func testFloat16MatchesSwiftFloat16() {
        var rng = SplitMix64(seed: 0xF16)
        for _ in 0..<20_000 {
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            let got = HalfPrecision.float16Bits(x)
            if x.isNaN { XCTAssertTrue(Float16(bitPattern: got).isNaN) } else { XCTAssertEqual(got, Float16(x).bitPattern, hex(x.bitPattern)) }
        }
        // Values in the float16 range, where rounding matters most.
        for _ in 0..<20_000 {
            let x = Float(rng.unit() * 131_072 - 65_536)
            XCTAssertEqual(HalfPrecision.float16Bits(x), Float16(x).bitPattern)
        }
        XCTAssertEqual(HalfPrecision.float16Bits(65_520), 0x7C00, "rounds to +inf")
        XCTAssertEqual(HalfPrecision.float16Bits(65_519), 0x7BFF, "largest half")
        XCTAssertEqual(HalfPrecision.float16Bits(-0.0), 0x8000)
    }

    func testFloat16RoundTripsAllPatterns() {
        for b in UInt32(0)...0xFFFF {
            let h = UInt16(b)
            let f = HalfPrecision.float(fromFloat16: h)
            let back = HalfPrecision.float16Bits(f)
            if Float16(bitPattern: h).isNaN {
                XCTAssertTrue(f.isNaN)
                XCTAssertTrue(Float16(bitPattern: back).isNaN)
                XCTAssertEqual(back >> 15, h >> 15, "sign of NaN \(hex(h))")
            } else {
                XCTAssertEqual(back, h, hex(h))
            }
        }
    }

    func testEncodeDecodeEveryFloatType() {
        var rng = SplitMix64(seed: 7)
        let values = rng.floats(257, in: -1000...1000) + [0, -0.0, 1, .infinity, -.infinity, 1e-40]
        for dtype in [LocusDType.float32, .float64, .float16, .bfloat16] {
            let bytes = values.withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }
            XCTAssertEqual(bytes.count, values.count * dtype.byteSize)
            let back = bytes.withUnsafeBytes { HalfPrecision.decode($0, dtype: dtype) }
            let expected: [Float]
            switch dtype {
            case .float16: expected = values.map { HalfPrecision.float(fromFloat16: HalfPrecision.float16Bits($0)) }
            case .bfloat16: expected = values.map { HalfPrecision.float(fromBFloat16: HalfPrecision.bfloat16Bits($0)) }
            default: expected = values
            }
            XCTAssertEqual(back.map(\.bitPattern), expected.map(\.bitPattern), "\(dtype)")
            // Little-endian layout.
            if dtype == .bfloat16 {
                let b = HalfPrecision.bfloat16Bits(values[0])
                XCTAssertEqual(bytes[0], UInt8(b & 0xFF))
                XCTAssertEqual(bytes[1], UInt8(b >> 8))
            }
        }
    }
}
