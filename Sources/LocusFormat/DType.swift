import HDF5
import SafeTensors

/// The element types a Locus tensor can have (spec §1.4).
public enum LocusDType: String, Sendable, CaseIterable, Codable {
    case float64, float32, float16, bfloat16
    case int64, int32, int16, int8
    case uint64, uint32, uint16, uint8
    case bool

    public var byteSize: Int {
        switch self {
        case .float64, .int64, .uint64: 8
        case .float32, .int32, .uint32: 4
        case .float16, .bfloat16, .int16, .uint16: 2
        case .int8, .uint8, .bool: 1
        }
    }

    public var isFloatingPoint: Bool { [.float64, .float32, .float16, .bfloat16].contains(self) }

    /// The HDF5 file type the spec prescribes (always little-endian).
    public func hdf5Type() throws -> Datatype {
        switch self {
        case .float64: .float64LE
        case .float32: .float32LE
        case .float16: try .float16LE()
        case .bfloat16: try .bfloat16LE()
        case .int64: .int64LE
        case .int32: .int32LE
        case .int16: .int16LE
        case .int8: .int8LE
        case .uint64: .uint64LE
        case .uint32: .uint32LE
        case .uint16: .uint16LE
        case .uint8, .bool: .uint8LE
        }
    }

    /// Recognises an HDF5 type as one of ours (ignoring byte order); `bool` cannot be told from
    /// `uint8` by type alone, so the `dtype` attribute decides between them.
    public static func matching(_ t: Datatype) -> LocusDType? {
        switch t.typeClass {
        case .integer:
            switch (t.size, t.isSigned) {
            case (8, true): return .int64
            case (4, true): return .int32
            case (2, true): return .int16
            case (1, true): return .int8
            case (8, false): return .uint64
            case (4, false): return .uint32
            case (2, false): return .uint16
            case (1, false): return .uint8
            default: return nil
            }
        case .float:
            guard let l = t.floatLayout else { return nil }
            switch (t.size, l.exponentSize, l.mantissaSize, l.bias) {
            case (8, 11, 52, 1023): return .float64
            case (4, 8, 23, 127): return .float32
            case (2, 5, 10, 15): return .float16
            case (2, 8, 7, 127): return .bfloat16
            default: return nil
            }
        default:
            return nil
        }
    }

    /// Whether the HDF5 type `t` is what the spec allows for a tensor declared as `self`.
    public func accepts(_ t: Datatype) -> Bool {
        let m = LocusDType.matching(t)
        return self == .bool ? m == .uint8 : m == self
    }

    public var safeTensors: SafeTensorsDType {
        switch self {
        case .float64: .F64
        case .float32: .F32
        case .float16: .F16
        case .bfloat16: .BF16
        case .int64: .I64
        case .int32: .I32
        case .int16: .I16
        case .int8: .I8
        case .uint64: .U64
        case .uint32: .U32
        case .uint16: .U16
        case .uint8: .U8
        case .bool: .BOOL
        }
    }

    public init?(safeTensors d: SafeTensorsDType) {
        guard let m = LocusDType.allCases.first(where: { $0.safeTensors == d }) else { return nil }
        self = m
    }
}
