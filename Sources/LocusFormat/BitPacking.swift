/// Packed bits (spec §1.6): element i is bit (i & 7) of byte (i >> 3), least significant first.
public enum BitPacking {
    public static func byteCount(bits: Int) -> Int { (bits + 7) / 8 }

    public static func pack(_ bits: UnsafeBufferPointer<Bool>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: byteCount(bits: bits.count))
        for i in 0..<bits.count where bits[i] { out[i >> 3] |= 1 << UInt8(i & 7) }
        return out
    }
    public static func pack(_ bits: [Bool]) -> [UInt8] { bits.withUnsafeBufferPointer { pack($0) } }

    public static func unpack(_ bytes: [UInt8], count: Int) -> [Bool] {
        (0..<count).map { (bytes[$0 >> 3] >> UInt8($0 & 7)) & 1 == 1 }
    }

    public static func popcount(_ bytes: [UInt8]) -> Int { bytes.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// Whether the bits past `count` in the last byte are all zero, as the spec requires.
    public static func paddingIsClear(_ bytes: [UInt8], count: Int) -> Bool {
        let r = count & 7
        guard r != 0, let last = bytes.last else { return true }
        return last >> UInt8(r) == 0
    }
}
