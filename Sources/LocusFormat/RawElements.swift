/// Element access on raw little-endian tensor bytes of a floating-point dtype, for streaming passes
/// that touch few elements of a block (apply adds a sparse τ; diff skips unchanged elements)
/// instead of decoding and re-encoding all of them.
extension HalfPrecision {
    /// Element `i` as float64 (exact for every float dtype).
    @inline(__always)
    public static func element(_ raw: UnsafeRawBufferPointer, _ i: Int, dtype: LocusDType) -> Double {
        switch dtype {
        case .float64: return Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))
        case .float32: return Double(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))))
        case .bfloat16: return Double(float(fromBFloat16: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
        case .float16: return Double(float(fromFloat16: UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
        default: preconditionFailure("element: \(dtype) is not a floating-point type")
        }
    }

    /// Stores `x` rounded once to `dtype` (RNE) as element `i`; returns the value stored.
    @inline(__always)
    @discardableResult
    public static func setElement(_ raw: UnsafeMutableRawBufferPointer, _ i: Int, _ x: Double, dtype: LocusDType) -> Double {
        switch dtype {
        case .float64:
            raw.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 8 * i, as: UInt64.self); return x
        case .float32:
            let f = Float(x)
            raw.storeBytes(of: f.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self); return Double(f)
        case .bfloat16:
            let b = bfloat16Bits(double: x)
            raw.storeBytes(of: b.littleEndian, toByteOffset: 2 * i, as: UInt16.self); return Double(float(fromBFloat16: b))
        case .float16:
            let h = Float16(x)   // Double → Float16 is one correctly rounded step
            raw.storeBytes(of: h.bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self); return Double(Float(h))
        default: preconditionFailure("setElement: \(dtype) is not a floating-point type")
        }
    }

    /// The index of the first NaN or infinity among raw little-endian elements of a floating-point `dtype`.
    public static func firstNonFinite(_ raw: UnsafeRawBufferPointer, dtype: LocusDType) -> Int? {
        precondition(dtype.isFloatingPoint, "firstNonFinite: \(dtype) is not a floating-point type")
        var first: Int?
        forEachNonFinite(raw, dtype: dtype) { i, _ in first = i; return false }
        return first
    }

    /// What a non-finite element is.
    public enum NonFiniteKind: Sendable { case nan, positiveInfinity, negativeInfinity }

    /// Calls `body(i, kind)` for each NaN or infinity among raw little-endian elements of `dtype`, in
    /// order, while `body` returns true (integer dtypes hold none). Non-finite means every exponent
    /// bit set; NaN when a mantissa bit is set too (IEEE 754 §3.4, and bfloat16 alike).
    @inline(__always)
    public static func forEachNonFinite(_ raw: UnsafeRawBufferPointer, dtype: LocusDType, _ body: (Int, NonFiniteKind) -> Bool) {
        func scan<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, exponent: T, mantissa: T) {
            let size = MemoryLayout<T>.size
            for i in 0..<(raw.count / size) {
                let bits = T(littleEndian: raw.loadUnaligned(fromByteOffset: i * size, as: T.self))
                guard bits & exponent == exponent else { continue }
                let kind: NonFiniteKind = bits & mantissa != 0 ? .nan : bits >> (T.bitWidth - 1) == 0 ? .positiveInfinity : .negativeInfinity
                if !body(i, kind) { return }
            }
        }
        switch dtype {
        case .float64: scan(UInt64.self, exponent: 0x7FF0_0000_0000_0000, mantissa: 0x000F_FFFF_FFFF_FFFF)
        case .float32: scan(UInt32.self, exponent: 0x7F80_0000, mantissa: 0x007F_FFFF)
        case .float16: scan(UInt16.self, exponent: 0x7C00, mantissa: 0x03FF)
        case .bfloat16: scan(UInt16.self, exponent: 0x7F80, mantissa: 0x007F)
        default: break
        }
    }

    /// Calls `body(i)` for every element whose bits differ between two blocks of the same dtype,
    /// in increasing order; runs of equal bytes are skipped eight bytes at a time.
    @inline(__always)
    public static func forEachDifferingElement(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, elementBytes: Int,
                                               _ body: (Int) throws -> Void) rethrows {
        precondition(a.count == b.count && elementBytes > 0 && elementBytes <= 8 && 8 % elementBytes == 0)
        let n = a.count, words = n / 8
        var w = 0
        while w < words {
            let x = a.loadUnaligned(fromByteOffset: 8 * w, as: UInt64.self) ^ b.loadUnaligned(fromByteOffset: 8 * w, as: UInt64.self)
            if x != 0 {   // little-endian: element e of the word is bits 8·e·size ..< 8·(e + 1)·size of x
                let perWord = 8 / elementBytes, mask: UInt64 = elementBytes == 8 ? .max : (1 << UInt64(8 * elementBytes)) - 1
                for e in 0..<perWord where (x >> UInt64(8 * elementBytes * e)) & mask != 0 { try body(w * perWord + e) }
            }
            w += 1
        }
        var e = 8 * words
        while e < n {
            if !a[e..<e + elementBytes].elementsEqual(b[e..<e + elementBytes]) { try body(e / elementBytes) }
            e += elementBytes
        }
    }
}
