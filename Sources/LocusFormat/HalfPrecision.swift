/// Float32 ⇄ bfloat16 / float16 bit conversions done in Swift, because HDF5 1.10's own
/// float32 → bfloat16 conversion double-rounds and drops the exponent carry (docs/talos.md
/// §bfloat16 rounding, spec §1.4).
public enum HalfPrecision {
    /// bfloat16 bits of `x` rounded to nearest, ties to even. NaN stays NaN (quiet, sign kept);
    /// values past the largest bfloat16 round to ±infinity as IEEE requires.
    @inline(__always)
    public static func bfloat16Bits(_ x: Float) -> UInt16 {
        let bits = x.bitPattern
        if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let lsb = (bits >> 16) & 1
        let rounded = bits &+ 0x7FFF &+ lsb   // carry into the exponent is the correct behaviour
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    @inline(__always)
    public static func float(fromBFloat16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// IEEE binary16 bits of `x`, round to nearest even (Swift's Float16 conversion is exact RNE).
    @inline(__always)
    public static func float16Bits(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    @inline(__always)
    public static func float(fromFloat16 bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    /// bfloat16 bits of a float64, rounded once (to nearest, ties to even) — going through float32
    /// first would round twice.
    public static func bfloat16Bits(double x: Double) -> UInt16 {
        let f = Float(x)
        guard x.isFinite, f.isFinite else { return bfloat16Bits(f) }
        let b = bfloat16Bits(f)
        var best = b, bestErr = abs(Double(float(fromBFloat16: b)) - x)
        for c in [b &- 1, b &+ 1] where (c ^ b) & 0x8000 == 0 {
            let v = Double(float(fromBFloat16: c))
            guard v.isFinite else { continue }
            let e = abs(v - x)
            if e < bestErr || (e == bestErr && c & 1 == 0) { best = c; bestErr = e }
        }
        return best
    }

    /// Encodes float64 values as little-endian bytes of `dtype` with a single rounding.
    public static func encode(_ values: [Double], as dtype: LocusDType) -> [UInt8] {
        switch dtype {
        case .float64: return values.withUnsafeBytes { Array($0) }
        case .float32: return values.map { Float($0) }.withUnsafeBufferPointer { encode($0, as: .float32) }
        case .float16: return values.map { Float16($0).bitPattern.littleEndian }.withUnsafeBytes { Array($0) }   // Double → Float16 is one correctly rounded step
        case .bfloat16: return values.map { bfloat16Bits(double: $0).littleEndian }.withUnsafeBytes { Array($0) }
        default: preconditionFailure("encode: \(dtype) is not a floating-point type")
        }
    }

    /// Encodes float32 values as little-endian bytes of `dtype` (a floating-point type).
    public static func encode(_ values: UnsafeBufferPointer<Float>, as dtype: LocusDType) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: values.count * dtype.byteSize)
        out.withUnsafeMutableBytes { raw in
            switch dtype {
            case .float32:
                let dst = raw.bindMemory(to: UInt32.self)
                for i in 0..<values.count { dst[i] = values[i].bitPattern.littleEndian }
            case .float64:
                let dst = raw.bindMemory(to: UInt64.self)
                for i in 0..<values.count { dst[i] = Double(values[i]).bitPattern.littleEndian }
            case .bfloat16:
                let dst = raw.bindMemory(to: UInt16.self)
                for i in 0..<values.count { dst[i] = bfloat16Bits(values[i]).littleEndian }
            case .float16:
                let dst = raw.bindMemory(to: UInt16.self)
                for i in 0..<values.count { dst[i] = float16Bits(values[i]).littleEndian }
            default:
                preconditionFailure("encode: \(dtype) is not a floating-point type")
            }
        }
        return out
    }

    /// Decodes little-endian bytes of a floating-point `dtype` to float32 (float64 rounds).
    public static func decode(_ bytes: UnsafeRawBufferPointer, dtype: LocusDType) -> [Float] {
        let n = bytes.count / dtype.byteSize
        return [Float](unsafeUninitializedCapacity: n) { out, count in
            switch dtype {
            case .float32:
                for i in 0..<n { out[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case .float64:
                for i in 0..<n { out[i] = Float(Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
            case .bfloat16:
                for i in 0..<n { out[i] = float(fromBFloat16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            case .float16:
                for i in 0..<n { out[i] = float(fromFloat16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
            default:
                preconditionFailure("decode: \(dtype) is not a floating-point type")
            }
            count = n
        }
    }
}
