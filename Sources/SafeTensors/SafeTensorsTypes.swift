/// Element types of the safetensors format.
///
/// The raw values are the exact strings the format uses in a header's `"dtype"` field, so
/// `SafeTensorsDType(rawValue:)` is the parser and `rawValue` the serializer.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16
    case I64, I32, I16, I8
    case U64, U32, U16, U8
    case BOOL
    case F8_E4M3, F8_E5M2

    /// Bytes per element. Every dtype listed here is byte-addressable (the format's sub-byte
    /// types are deliberately not supported), so a tensor's size is always elements × byteSize.
    public var byteSize: Int {
        switch self {
        case .F64, .I64, .U64: return 8
        case .F32, .I32, .U32: return 4
        case .F16, .BF16, .I16, .U16: return 2
        case .I8, .U8, .BOOL, .F8_E4M3, .F8_E5M2: return 1
        }
    }
}

/// One tensor described by a validated safetensors header.
///
/// Entries are only created by `SafeTensorsReader` after its header validation, which checks
/// that the element count and byte count fit in `Int` and that `dataEnd - dataBegin` equals
/// `elementCount * dtype.byteSize`. That invariant is why the computed properties below may use
/// plain (trapping) arithmetic: it cannot overflow for any value this module hands out.
public struct SafeTensorsEntry: Sendable, Equatable {
    public let name: String
    public let dtype: SafeTensorsDType
    /// Dimensions, outermost first. `[]` is a scalar (one element).
    public let shape: [Int]
    /// Start of the tensor's bytes, relative to the start of the data section.
    public let dataBegin: Int
    /// End (exclusive) of the tensor's bytes, relative to the start of the data section.
    public let dataEnd: Int

    init(name: String, dtype: SafeTensorsDType, shape: [Int], dataBegin: Int, dataEnd: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.dataBegin = dataBegin
        self.dataEnd = dataEnd
    }

    /// Product of `shape` (1 for a scalar, 0 if any dimension is 0).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Size of the tensor's data in bytes.
    public var byteCount: Int { dataEnd - dataBegin }
}

/// Overflow-checked product of dimensions; nil if it does not fit in `Int`.
/// Shared by the reader's validation and the writer's layout so both agree exactly.
func checkedElementCount(_ shape: [Int]) -> Int? {
    var product = 1
    for dimension in shape {
        let (next, overflow) = product.multipliedReportingOverflow(by: dimension)
        if overflow { return nil }
        product = next
    }
    return product
}

/// Renders a shape the way messages show it: `[2, 3]`, `[]` for a scalar.
func describeShape(_ shape: [Int]) -> String {
    "[" + shape.map(String.init).joined(separator: ", ") + "]"
}
