/// A pickle interpreter that only builds values: it knows a fixed set of opcodes and a fixed set
/// of globals (collections.OrderedDict, torch's tensor/parameter rebuild functions, typed-storage
/// classes, dtypes, torch.Size), and it "calls" those by constructing the equivalent value itself.
/// Nothing from the pickle is ever executed or imported; any other global is refused by name.
///
/// Hostile input is bounded: every opcode consumes at least one byte, so the work is linear in the
/// pickle's size; the stack, the mark stack and the memo have explicit limits; values nest at most
/// `maxDepth` deep; and a list or dict may not be modified after it was placed inside another
/// value, which rules out reference cycles (and with them unbounded depth) entirely.
struct RestrictedUnpickler {
    static let maxDepth = 100
    static let maxStack = 10_000_000
    static let maxMarks = 1_000_000
    static let maxRank = 64

    let path: String
    let member: String
    private let bytes: [UInt8]
    private var position = 0
    private var opcodeOffset = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [UInt32: PickleValue] = [:]

    init(bytes: [UInt8], path: String, member: String) {
        self.bytes = bytes
        self.path = path
        self.member = member
    }

    private func fail(_ message: String) -> TorchCheckpointError {
        .pickle(path: path, member: member, offset: opcodeOffset, message: message)
    }

    // MARK: Reading the stream

    private mutating func take(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - position else {
            throw fail("\(what) needs \(count) bytes but the pickle has \(bytes.count - position) left")
        }
        defer { position += count }
        return bytes[position..<position + count]
    }

    private mutating func littleEndian(_ count: Int, _ what: String) throws -> UInt64 {
        let slice = try take(count, what)
        return slice.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// A length prefix that must fit in what is left of the pickle (so it bounds the allocation).
    private mutating func length(_ count: Int, _ what: String) throws -> Int {
        let value = try littleEndian(count, what)
        guard value <= UInt64(bytes.count - position) else {
            throw fail("\(what) of \(value) bytes exceeds the \(bytes.count - position) bytes left in the pickle")
        }
        return Int(value)
    }

    private mutating func text(_ count: Int, _ what: String) throws -> String {
        let slice = try take(count, what)
        guard let string = String(validating: slice, as: UTF8.self) else { throw fail("\(what) is not valid UTF-8") }
        return string
    }

    private mutating func line(_ what: String) throws -> String {
        guard let newline = bytes[position...].firstIndex(of: 0x0A) else { throw fail("\(what) has no terminating newline") }
        let string = try text(newline - position, what)
        position += 1
        return string
    }

    // MARK: Stack

    private mutating func push(_ value: PickleValue) throws {
        guard stack.count < Self.maxStack else { throw fail("the stack exceeds \(Self.maxStack) values") }
        stack.append(value)
    }

    private mutating func pop(_ what: String) throws -> PickleValue {
        guard let value = stack.popLast(), stack.count >= (marks.last ?? 0) else {
            throw fail("\(what) needs a value but the stack (above the last mark) is empty")
        }
        return value
    }

    private mutating func popToMark(_ what: String) throws -> [PickleValue] {
        guard let mark = marks.popLast() else { throw fail("\(what) needs a MARK but there is none") }
        let items = Array(stack[mark...])
        stack.removeSubrange(mark...)
        return items
    }

    /// Places `value` inside another value: freezes it and checks the resulting depth.
    private func nest(_ values: [PickleValue]) throws -> Int {
        var depth = 0
        for value in values {
            value.freeze()
            depth = max(depth, value.depth)
        }
        guard depth + 1 <= Self.maxDepth else { throw fail("values nest more than \(Self.maxDepth) levels deep") }
        return depth + 1
    }

    private func dictKey(_ value: PickleValue) throws -> DictKey {
        switch value {
        case .string(let string): return .string(string)
        case .int(let int): return .int(int)
        default: throw fail("a dict key is \(value.kind); only strings and integers are accepted as keys")
        }
    }

    // The frozen checks come after nesting the new items: inserting a container into itself
    // freezes it first, so cycles are refused too.
    private func setItems(_ pairs: ArraySlice<PickleValue>, into dict: PickleDict) throws {
        guard pairs.count % 2 == 0 else { throw fail("SETITEMS has an odd number (\(pairs.count)) of keys and values") }
        var index = pairs.startIndex
        while index < pairs.endIndex {
            let key = try dictKey(pairs[index])
            let value = pairs[index + 1]
            let depth = try nest([value])
            guard !dict.frozen else {
                throw fail("modifies a dict after it was placed inside another value (or inserts it into itself); a state dict never does that")
            }
            dict.depth = max(dict.depth, depth)
            dict.set(key, value)
            index += 2
        }
    }

    private func append(_ items: [PickleValue], to list: PickleList) throws {
        let depth = try nest(items)
        guard !list.frozen else {
            throw fail("modifies a list after it was placed inside another value (or inserts it into itself); a state dict never does that")
        }
        list.depth = max(list.depth, depth)
        list.items += items
    }

    // MARK: Interpreting

    mutating func run() throws -> PickleValue {
        while true {
            opcodeOffset = position
            guard position < bytes.count else { throw fail("the pickle ends without a STOP opcode") }
            let opcode = bytes[position]
            position += 1
            switch opcode {
            case 0x80:  // PROTO
                let version = try take(1, "PROTO").first ?? 0
                guard (2...5).contains(version) else { throw fail("pickle protocol \(version); protocols 2 to 5 are read") }
            case 0x95:  // FRAME: only a hint for buffered readers
                _ = try length(8, "FRAME")
            case 0x2E:  // STOP
                let result = try pop("STOP")
                guard stack.isEmpty, marks.isEmpty else {
                    throw fail("STOP leaves \(stack.count) values and \(marks.count) marks behind")
                }
                return result
            case 0x28:  // MARK
                guard marks.count < Self.maxMarks else { throw fail("more than \(Self.maxMarks) open MARKs") }
                marks.append(stack.count)
            case 0x30:  // POP
                _ = try pop("POP")
            case 0x31:  // POP_MARK
                _ = try popToMark("POP_MARK")
            case 0x32:  // DUP
                let top = try pop("DUP")
                try push(top)
                try push(top)
            case 0x4E: try push(.none)
            case 0x88: try push(.bool(true))
            case 0x89: try push(.bool(false))
            case 0x4B:  // BININT1
                try push(.int(Int(try littleEndian(1, "BININT1"))))
            case 0x4D:  // BININT2
                try push(.int(Int(try littleEndian(2, "BININT2"))))
            case 0x4A:  // BININT: signed 32-bit
                try push(.int(Int(Int32(truncatingIfNeeded: try littleEndian(4, "BININT")))))
            case 0x8A, 0x8B:  // LONG1, LONG4: little-endian two's complement
                let count = try length(opcode == 0x8A ? 1 : 4, "LONG")
                let slice = try take(count, "LONG")
                if count == 0 {
                    try push(.int(0))
                } else if count <= 8 {
                    var value = slice.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    if count < 8, let last = slice.last, last & 0x80 != 0 { value |= ~UInt64(0) << (8 * UInt64(count)) }
                    try push(.int(Int(Int64(bitPattern: value))))
                } else {
                    try push(.bigInt)
                }
            case 0x47:  // BINFLOAT: big-endian double
                let slice = try take(8, "BINFLOAT")
                try push(.float(Double(bitPattern: slice.reduce(UInt64(0)) { $0 << 8 | UInt64($1) })))
            case 0x58: try push(.string(try text(try length(4, "BINUNICODE"), "BINUNICODE")))
            case 0x8C: try push(.string(try text(try length(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE")))
            case 0x8D: try push(.string(try text(try length(8, "BINUNICODE8"), "BINUNICODE8")))
            case 0x42, 0x43, 0x8E:  // BINBYTES, SHORT_BINBYTES, BINBYTES8: contents are never needed
                let count = try length(opcode == 0x43 ? 1 : opcode == 0x42 ? 4 : 8, "BINBYTES")
                _ = try take(count, "BINBYTES")
                try push(.bytes)
            case 0x7D: try push(.dict(PickleDict()))
            case 0x5D: try push(.list(PickleList()))
            case 0x29: try push(.tuple([], depth: 1))
            case 0x74:  // TUPLE
                let items = try popToMark("TUPLE")
                try push(.tuple(items, depth: try nest(items)))
            case 0x85, 0x86, 0x87:  // TUPLE1..3
                let count = Int(opcode - 0x84)
                var items: [PickleValue] = []
                for _ in 0..<count { items.insert(try pop("TUPLE\(count)"), at: 0) }
                try push(.tuple(items, depth: try nest(items)))
            case 0x6C:  // LIST
                let items = try popToMark("LIST")
                let list = PickleList()
                try append(items, to: list)
                try push(.list(list))
            case 0x64:  // DICT
                let items = try popToMark("DICT")
                let dict = PickleDict()
                try setItems(items[...], into: dict)
                try push(.dict(dict))
            case 0x61:  // APPEND
                let item = try pop("APPEND")
                guard case .list(let list) = try pop("APPEND") else { throw fail("APPEND to something that is not a list") }
                try append([item], to: list)
                try push(.list(list))
            case 0x65:  // APPENDS
                let items = try popToMark("APPENDS")
                guard case .list(let list) = try pop("APPENDS") else { throw fail("APPENDS to something that is not a list") }
                try append(items, to: list)
                try push(.list(list))
            case 0x73:  // SETITEM
                let value = try pop("SETITEM")
                let key = try pop("SETITEM")
                guard case .dict(let dict) = try pop("SETITEM") else { throw fail("SETITEM on something that is not a dict") }
                try setItems([key, value], into: dict)
                try push(.dict(dict))
            case 0x75:  // SETITEMS
                let items = try popToMark("SETITEMS")
                guard case .dict(let dict) = try pop("SETITEMS") else { throw fail("SETITEMS on something that is not a dict") }
                try setItems(items[...], into: dict)
                try push(.dict(dict))
            case 0x71, 0x72, 0x94:  // BINPUT, LONG_BINPUT, MEMOIZE
                let index: UInt32
                if opcode == 0x94 {
                    index = UInt32(truncatingIfNeeded: memo.count)
                } else {
                    index = UInt32(try littleEndian(opcode == 0x71 ? 1 : 4, "BINPUT"))
                }
                guard let top = stack.last, stack.count > (marks.last ?? 0) else { throw fail("memoizes from an empty stack") }
                memo[index] = top
            case 0x68, 0x6A:  // BINGET, LONG_BINGET
                let index = UInt32(try littleEndian(opcode == 0x68 ? 1 : 4, "BINGET"))
                guard let value = memo[index] else { throw fail("BINGET of memo entry \(index), which was never stored") }
                try push(value)
            case 0x63:  // GLOBAL
                let module = try line("GLOBAL module")
                let name = try line("GLOBAL name")
                try push(.global(try resolveGlobal(module, name)))
            case 0x93:  // STACK_GLOBAL
                guard case .string(let name) = try pop("STACK_GLOBAL"), case .string(let module) = try pop("STACK_GLOBAL") else {
                    throw fail("STACK_GLOBAL needs two strings (module and name)")
                }
                try push(.global(try resolveGlobal(module, name)))
            case 0x52:  // REDUCE
                guard case .tuple(let arguments, _) = try pop("REDUCE") else { throw fail("REDUCE arguments are not a tuple") }
                guard case .global(let callable) = try pop("REDUCE") else { throw fail("REDUCE of something that is not an allowed global") }
                _ = try nest(arguments)
                try push(try call(callable, arguments))
            case 0x62:  // BUILD
                let state = try pop("BUILD")
                guard let target = stack.last, stack.count > (marks.last ?? 0) else { throw fail("BUILD on an empty stack") }
                try checkBuild(target: target, state: state)
            case 0x51:  // BINPERSID
                try push(try persistentLoad(try pop("BINPERSID")))
            case 0x81, 0x92, 0x69, 0x6F:
                throw fail("opcode 0x\(String(opcode, radix: 16)) (creating an object of a class) is refused: only state dicts of tensors are read; nothing was executed")
            case 0x82, 0x83, 0x84:
                throw fail("opcode 0x\(String(opcode, radix: 16)) (extension-registry global) is refused: only state dicts of tensors are read; nothing was executed")
            default:
                throw fail("opcode 0x\(String(opcode, radix: 16)) is not supported: a state dict saved by torch.save does not use it")
            }
        }
    }

    private func resolveGlobal(_ module: String, _ name: String) throws -> TorchGlobal {
        let global: TorchGlobal?
        switch (module, name) {
        case ("collections", "OrderedDict"): global = .orderedDict
        case ("torch._utils", "_rebuild_tensor"): global = .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): global = .rebuildTensorV2
        case ("torch._utils", "_rebuild_tensor_v3"): global = .rebuildTensorV3
        case ("torch._utils", "_rebuild_parameter"): global = .rebuildParameter
        case ("torch._utils", "_rebuild_parameter_with_state"): global = .rebuildParameterWithState
        case ("torch", "Size"): global = .size
        case ("torch", _):
            if name.hasSuffix("Storage"), let dtype = TorchDType(storageClass: name) {
                global = .storageClass(dtype)
            } else {
                global = TorchDType(dtypeGlobal: name).map { .dtype($0) }
            }
        default: global = nil
        }
        guard let global else {
            throw TorchCheckpointError.refusedGlobal(path: path, member: member, offset: opcodeOffset, module: module, name: name)
        }
        return global
    }

    // MARK: The allowed globals, applied without executing anything

    private func call(_ callable: TorchGlobal, _ arguments: [PickleValue]) throws -> PickleValue {
        switch callable {
        case .orderedDict:
            let dict = PickleDict()
            if arguments.isEmpty { return .dict(dict) }
            // OrderedDict(pairs): a list or tuple of 2-element tuples or lists.
            guard arguments.count == 1 else { throw fail("OrderedDict takes at most one argument, got \(arguments.count)") }
            let pairs: [PickleValue]
            switch arguments[0] {
            case .list(let list): pairs = list.items
            case .tuple(let items, _): pairs = items
            default: throw fail("OrderedDict's argument is \(arguments[0].kind), not a list of pairs")
            }
            var flat: [PickleValue] = []
            for pair in pairs {
                switch pair {
                case .tuple(let items, _) where items.count == 2: flat += items
                case .list(let list) where list.items.count == 2: flat += list.items
                default: throw fail("OrderedDict's argument holds \(pair.kind), not a key-value pair")
                }
            }
            try setItems(flat[...], into: dict)
            return .dict(dict)
        case .size:
            guard arguments.count == 1, case .tuple(let items, let depth) = arguments[0] else {
                throw fail("torch.Size takes one tuple of integers")
            }
            return .tuple(items, depth: depth)
        case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3:
            return .tensor(try rebuildTensor(callable, arguments))
        case .rebuildParameter, .rebuildParameterWithState:
            let expected = callable == .rebuildParameter ? 3 : 4
            guard arguments.count == expected, case .tensor(let tensor) = arguments[0] else {
                throw fail("_rebuild_parameter needs (tensor, requires_grad, hooks\(expected == 4 ? ", state" : "")), got \(arguments.count) arguments")
            }
            return .tensor(tensor)
        case .storageClass, .dtype:
            throw fail("REDUCE on \(callable) would construct a torch object directly; torch.save never does that")
        }
    }

    private func integer(_ value: PickleValue, _ what: String) throws -> Int {
        guard case .int(let int) = value else { throw fail("\(what) is \(value.kind), not an integer") }
        return int
    }

    private func integers(_ value: PickleValue, _ what: String) throws -> [Int] {
        guard case .tuple(let items, _) = value else { throw fail("\(what) is \(value.kind), not a tuple of integers") }
        guard items.count <= Self.maxRank else { throw fail("\(what) has \(items.count) dimensions; at most \(Self.maxRank) are read") }
        return try items.map { try integer($0, what) }
    }

    private func rebuildTensor(_ callable: TorchGlobal, _ arguments: [PickleValue]) throws -> TensorValue {
        let counts: ClosedRange<Int>
        switch callable {
        case .rebuildTensor: counts = 4...4
        case .rebuildTensorV2: counts = 6...7
        default: counts = 7...8
        }
        guard counts.contains(arguments.count) else {
            throw fail("\(callable) takes \(counts.lowerBound)\(counts.count > 1 ? " or \(counts.upperBound)" : "") arguments, got \(arguments.count)")
        }
        guard case .storage(let storage) = arguments[0] else {
            throw fail("\(callable)'s first argument is \(arguments[0].kind), not a storage")
        }
        let offset = try integer(arguments[1], "storage offset")
        let shape = try integers(arguments[2], "size")
        let strides = try integers(arguments[3], "stride")
        guard offset >= 0 else { throw fail("storage offset \(offset) is negative") }
        guard shape.count == strides.count else {
            throw fail("size has \(shape.count) dimensions but stride has \(strides.count)")
        }
        guard shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw fail("size \(shape) or stride \(strides) has a negative entry")
        }
        if arguments.count > 4, case .bool = arguments[4] {} else if arguments.count > 4 {
            throw fail("requires_grad is \(arguments[4].kind), not a bool")
        }
        var dtype = storage.dtype
        if callable == .rebuildTensorV3 {
            guard case .global(.dtype(let explicit)) = arguments[6] else {
                throw fail("_rebuild_tensor_v3's dtype argument is \(arguments[6].kind), not a torch dtype")
            }
            dtype = explicit
        }
        return TensorValue(storage: storage, dtype: dtype, storageOffset: offset, shape: shape, strides: strides, pickleOffset: opcodeOffset)
    }

    /// torch.save's persistent id of a storage: ('storage', <storage class>, key, location, numel).
    private func persistentLoad(_ id: PickleValue) throws -> PickleValue {
        guard case .tuple(let items, _) = id, items.count == 5, case .string("storage") = items[0] else {
            throw fail("persistent id is \(id.kind), not ('storage', class, key, location, size)")
        }
        guard case .global(.storageClass(let dtype)) = items[1] else {
            throw fail("persistent id names \(items[1].kind), not a torch storage class")
        }
        guard case .string(let key) = items[2], case .string = items[3] else {
            throw fail("persistent id's key and location are not strings")
        }
        let count = try integer(items[4], "storage size")
        guard count >= 0 else { throw fail("storage size \(count) is negative") }
        return .storage(StorageReference(key: key, dtype: dtype, elementCount: count))
    }

    /// BUILD sets an object's attributes. The only object torch.save builds in a state dict is an
    /// OrderedDict carrying `_metadata` (module versions), which a reader of tensors ignores.
    private func checkBuild(target: PickleValue, state: PickleValue) throws {
        guard case .dict = target else {
            throw fail("BUILD on \(target.kind): only attributes of an OrderedDict (such as _metadata) are accepted")
        }
        func isAttributeState(_ value: PickleValue) -> Bool {
            switch value {
            case .dict, .none: return true
            default: return false
            }
        }
        switch state {
        case .dict, .none: break
        case .tuple(let items, _) where items.count == 2 && items.allSatisfy(isAttributeState): break
        default: throw fail("BUILD with \(state.kind) as state: only an attribute dict is accepted")
        }
        state.freeze()
    }
}

// MARK: Values

enum TorchGlobal: Equatable, CustomStringConvertible {
    case orderedDict, size
    case rebuildTensor, rebuildTensorV2, rebuildTensorV3, rebuildParameter, rebuildParameterWithState
    case storageClass(TorchDType)
    case dtype(TorchDType)

    var description: String {
        switch self {
        case .orderedDict: return "collections.OrderedDict"
        case .size: return "torch.Size"
        case .rebuildTensor: return "torch._utils._rebuild_tensor"
        case .rebuildTensorV2: return "torch._utils._rebuild_tensor_v2"
        case .rebuildTensorV3: return "torch._utils._rebuild_tensor_v3"
        case .rebuildParameter: return "torch._utils._rebuild_parameter"
        case .rebuildParameterWithState: return "torch._utils._rebuild_parameter_with_state"
        case .storageClass(let dtype): return "torch storage class of \(dtype.rawValue)"
        case .dtype(let dtype): return "torch.\(dtype.rawValue)"
        }
    }
}

struct StorageReference: Equatable {
    /// The storage's key: its data lives in the zip member `<archive>/data/<key>`.
    let key: String
    let dtype: TorchDType
    let elementCount: Int
}

/// A strided view of a storage, as `_rebuild_tensor_v2` describes it (all in elements).
struct TensorValue: Equatable {
    let storage: StorageReference
    let dtype: TorchDType
    let storageOffset: Int
    let shape: [Int]
    let strides: [Int]
    let pickleOffset: Int
}

enum DictKey: Hashable, CustomStringConvertible {
    case string(String)
    case int(Int)

    var description: String {
        switch self {
        case .string(let string): return string
        case .int(let int): return String(int)
        }
    }
}

final class PickleList {
    var items: [PickleValue] = []
    var frozen = false
    var depth = 1
}

/// An insertion-ordered dict, like Python's: setting an existing key keeps its position.
final class PickleDict {
    private(set) var keys: [DictKey] = []
    private(set) var values: [PickleValue] = []
    private var index: [DictKey: Int] = [:]
    var frozen = false
    var depth = 1

    func set(_ key: DictKey, _ value: PickleValue) {
        if let existing = index[key] {
            values[existing] = value
        } else {
            index[key] = keys.count
            keys.append(key)
            values.append(value)
        }
    }

    func value(for key: DictKey) -> PickleValue? { index[key].map { values[$0] } }
}

indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer wider than 64 bits (never a size; kept only as a leaf to be skipped).
    case bigInt
    case float(Double)
    case string(String)
    case bytes
    case tuple([PickleValue], depth: Int)
    case list(PickleList)
    case dict(PickleDict)
    case global(TorchGlobal)
    case storage(StorageReference)
    case tensor(TensorValue)

    var depth: Int {
        switch self {
        case .tuple(_, let depth): return depth
        case .list(let list): return list.depth
        case .dict(let dict): return dict.depth
        default: return 0
        }
    }

    func freeze() {
        switch self {
        case .list(let list): list.frozen = true
        case .dict(let dict): dict.frozen = true
        default: break
        }
    }

    var kind: String {
        switch self {
        case .none: return "None"
        case .bool: return "a bool"
        case .int, .bigInt: return "an integer"
        case .float: return "a float"
        case .string: return "a string"
        case .bytes: return "bytes"
        case .tuple: return "a tuple"
        case .list: return "a list"
        case .dict: return "a dict"
        case .global(let global): return String(describing: global)
        case .storage: return "a storage"
        case .tensor: return "a tensor"
        }
    }
}
