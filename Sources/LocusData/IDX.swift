import LocusFormat

/// One array from an IDX file (the MNIST family's format; gzip-compressed or plain).
///
/// Layout: magic `00 00 TT DD` (TT the element type, DD the number of dimensions), then DD
/// big-endian 32-bit dimension sizes, then the elements in C order, big-endian. Element types:
/// `08` uint8, `09` int8, `0B` int16, `0C` int32, `0D` float32, `0E` float64.
public struct IDXArray: Sendable {
    public enum ElementType: UInt8, Sendable, CaseIterable {
        case uint8 = 0x08, int8 = 0x09, int16 = 0x0B, int32 = 0x0C, float32 = 0x0D, float64 = 0x0E
        public var byteSize: Int {
            switch self {
            case .uint8, .int8: 1
            case .int16: 2
            case .int32, .float32: 4
            case .float64: 8
            }
        }
        public var isFloat: Bool { self == .float32 || self == .float64 }
    }

    public let type: ElementType
    public let dims: [Int]
    /// The elements as stored: big-endian, C order, `count × type.byteSize` bytes.
    public let payload: [UInt8]
    public var count: Int { dims.reduce(1, *) }

    /// Element `i` as a Double (exact for every IDX type).
    @inline(__always)
    public func value(_ i: Int) -> Double {
        payload.withUnsafeBufferPointer { p in IDXArray.decode(p, type, i) }
    }

    @inline(__always)
    static func decode(_ p: UnsafeBufferPointer<UInt8>, _ type: ElementType, _ i: Int) -> Double {
        switch type {
        case .uint8: return Double(p[i])
        case .int8: return Double(Int8(bitPattern: p[i]))
        case .int16: return Double(Int16(bitPattern: UInt16(p[2 * i]) << 8 | UInt16(p[2 * i + 1])))
        case .int32: return Double(Int32(bitPattern: be32(p, 4 * i)))
        case .float32: return Double(Float(bitPattern: be32(p, 4 * i)))
        case .float64:
            let hi = UInt64(be32(p, 8 * i)), lo = UInt64(be32(p, 8 * i + 4))
            return Double(bitPattern: hi << 32 | lo)
        }
    }

    @inline(__always)
    static func be32(_ p: UnsafeBufferPointer<UInt8>, _ o: Int) -> UInt32 {
        UInt32(p[o]) << 24 | UInt32(p[o + 1]) << 16 | UInt32(p[o + 2]) << 8 | UInt32(p[o + 3])
    }
}

public enum IDX {
    /// Parses an IDX file already in memory. Every size is checked against the bytes present:
    /// the header must fit, dimensions must be non-negative and their product must not overflow,
    /// and the data must fill the rest of the file exactly (no missing and no trailing bytes).
    public static func parse(_ bytes: [UInt8], file: String) throws -> IDXArray {
        guard bytes.count >= 4 else {
            throw LocusError(file: file, object: "IDX header", "the file has \(bytes.count) bytes, expected at least the 4-byte magic 00 00 TT DD")
        }
        let hex = bytes[0..<4].map { String($0, radix: 16).leftPadded(2) }.joined(separator: " ")
        guard bytes[0] == 0, bytes[1] == 0 else {
            throw LocusError(file: file, object: "IDX header", "magic is \(hex), expected 00 00 TT DD (an IDX file such as MNIST's *-idx3-ubyte)")
        }
        guard let type = IDXArray.ElementType(rawValue: bytes[2]) else {
            throw LocusError(file: file, object: "IDX header",
                             "element type code 0x\(String(bytes[2], radix: 16).leftPadded(2)) is unknown, expected 08 uint8, 09 int8, 0B int16, 0C int32, 0D float32 or 0E float64")
        }
        let ndim = Int(bytes[3])
        guard ndim >= 1 else { throw LocusError(file: file, object: "IDX header", "has 0 dimensions, expected at least 1") }
        let headerBytes = 4 + 4 * ndim
        guard bytes.count >= headerBytes else {
            throw LocusError(file: file, object: "IDX header",
                             "declares \(ndim) dimensions (a \(headerBytes)-byte header) but the file has only \(bytes.count) bytes")
        }
        var dims = [Int]()
        var product = 1
        for d in 0..<ndim {
            let o = 4 + 4 * d
            let v = Int32(bitPattern: UInt32(bytes[o]) << 24 | UInt32(bytes[o + 1]) << 16 | UInt32(bytes[o + 2]) << 8 | UInt32(bytes[o + 3]))
            guard v >= 0 else { throw LocusError(file: file, object: "IDX header", "dimension \(d) is \(v), expected ≥ 0") }
            dims.append(Int(v))
            let (p, overflow) = product.multipliedReportingOverflow(by: Int(v))
            guard !overflow else { throw LocusError(file: file, object: "IDX header", "dimensions \(dims) overflow a 64-bit element count") }
            product = p
        }
        let (need, overflow) = product.multipliedReportingOverflow(by: type.byteSize)
        let have = bytes.count - headerBytes
        guard !overflow, need <= have else {
            throw LocusError(file: file, object: "IDX data",
                             "is truncated: dimensions \(dims.map(String.init).joined(separator: "×")) of \(type) need \(overflow ? "more than \(Int.max)" : "\(need)") bytes after the \(headerBytes)-byte header, the file has \(have)")
        }
        guard need == have else {
            throw LocusError(file: file, object: "IDX data",
                             "has \(have - need) trailing bytes after the \(need) bytes that dimensions \(dims.map(String.init).joined(separator: "×")) of \(type) need")
        }
        return IDXArray(type: type, dims: dims, payload: Array(bytes[headerBytes...]))
    }

    /// Reads and parses an IDX file (`.gz` or plain, detected by content).
    public static func read(_ path: String, limit: Int = GzipReader.defaultLimit) throws -> IDXArray {
        try parse(try GzipReader.read(path, limit: limit), file: path)
    }

    /// Samples from an IDX images file: `[N, H, W]` becomes `[N, 1, H, W]`, `[N, F]` stays features,
    /// `[N, C, H, W]` (and higher) stays as it is. uint8 stays uint8; the integer types become uint8
    /// when every value is in 0…255 and float32 otherwise; float32/float64 become float32.
    public static func inputs(_ a: IDXArray, file: String) throws -> (inputs: LabelledData.Inputs, shape: [Int]) {
        guard a.dims.count >= 2 else {
            throw LocusError(file: file, object: "IDX header", "has dimensions \(a.dims), expected [N, H, W] images (or [N, F] features); is this a labels file?")
        }
        guard a.dims.dropFirst().allSatisfy({ $0 > 0 }) else {
            throw LocusError(file: file, object: "IDX header", "has dimensions \(a.dims): each sample would hold no values")
        }
        let shape = a.dims.count == 3 ? [a.dims[0], 1, a.dims[1], a.dims[2]] : a.dims
        let n = a.count, type = a.type
        if type == .uint8 { return (.uint8(a.payload), shape) }
        return try a.payload.withUnsafeBufferPointer { p in
            if !type.isFloat {
                var bytes = true
                for i in 0..<n { let v = IDXArray.decode(p, type, i); if v < 0 || v > 255 { bytes = false; break } }
                if bytes { return (.uint8((0..<n).map { UInt8(IDXArray.decode(p, type, $0)) }), shape) }
            }
            var out = [Float](repeating: 0, count: n)
            for i in 0..<n {
                let v = IDXArray.decode(p, type, i)
                let f = Float(v)
                guard f.isFinite else {
                    throw LocusError(file: file, object: "IDX data", "element \(i) is \(v), expected a finite float32 value")
                }
                out[i] = f
            }
            return (.float32(out), shape)
        }
    }

    /// Labels from an IDX labels file: 1-D, integer values ≥ 0 (float files must hold whole numbers).
    public static func labels(_ a: IDXArray, file: String) throws -> [Int64] {
        guard a.dims.count == 1 else {
            throw LocusError(file: file, object: "IDX header", "has dimensions \(a.dims), expected a 1-D labels array [N]; is this an images file?")
        }
        var out = [Int64](repeating: 0, count: a.count)
        try a.payload.withUnsafeBufferPointer { p in
            for i in 0..<out.count {
                let v = IDXArray.decode(p, a.type, i)
                guard v >= 0, v == v.rounded(), v < 0x1p53 else {
                    throw LocusError(file: file, object: "IDX data", "label \(i) is \(v), expected a whole number ≥ 0")
                }
                out[i] = Int64(v)
            }
        }
        return out
    }
}

extension String {
    func leftPadded(_ width: Int, with c: Character = "0") -> String {
        count >= width ? self : String(repeating: c, count: width - count) + self
    }
}
