/// Element types of the tensors this reader returns. Raw values are torch's names.
public enum TorchDType: String, Sendable, CaseIterable {
    case float64, float32, float16, bfloat16, int64, int32, int16, int8, uint8, bool

    public var byteSize: Int {
        switch self {
        case .float64, .int64: return 8
        case .float32, .int32: return 4
        case .float16, .bfloat16, .int16: return 2
        case .int8, .uint8, .bool: return 1
        }
    }

    /// The typed-storage class torch.save names in a storage's persistent id.
    init?(storageClass name: String) {
        switch name {
        case "DoubleStorage": self = .float64
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "LongStorage": self = .int64
        case "IntStorage": self = .int32
        case "ShortStorage": self = .int16
        case "CharStorage": self = .int8
        case "ByteStorage", "UntypedStorage": self = .uint8
        case "BoolStorage": self = .bool
        default: return nil
        }
    }

    /// A `torch.<name>` dtype global (how a `torch.dtype` pickles), including torch's aliases.
    init?(dtypeGlobal name: String) {
        switch name {
        case "float64", "double": self = .float64
        case "float32", "float": self = .float32
        case "float16", "half": self = .float16
        case "bfloat16": self = .bfloat16
        case "int64", "long": self = .int64
        case "int32", "int": self = .int32
        case "int16", "short": self = .int16
        case "int8": self = .int8
        case "uint8": self = .uint8
        case "bool": self = .bool
        default: return nil
        }
    }
}

/// One tensor of the state dict: its key, element type and shape. The bytes `read` returns are
/// always the contiguous row-major layout of this shape, whatever view torch saved.
public struct TorchTensorEntry: Sendable, Equatable {
    /// The state-dict key, verbatim (for example "layers.0.weight").
    public let name: String
    public let dtype: TorchDType
    public let shape: [Int]
    /// Product of `shape` (1 for a 0-d tensor, 0 for an empty one).
    public let elementCount: Int
    /// `elementCount * dtype.byteSize`.
    public let byteCount: Int

    init(name: String, dtype: TorchDType, shape: [Int], elementCount: Int, byteCount: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.elementCount = elementCount
        self.byteCount = byteCount
    }
}
