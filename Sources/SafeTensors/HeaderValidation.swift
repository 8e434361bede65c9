import OneLineText
// Turns the header bytes into validated entries. Pure (no I/O) so every rule can be tested on
// hand-made headers, and so the reader never touches the data section before all of these
// checks have passed. Mirrors the reference implementation's rules (huggingface/safetensors,
// `Metadata::validate`): the tensors must tile the data section exactly, with no gap, overlap or
// trailing byte, and every size must be overflow-checked.

struct ValidatedHeader {
    var metadata: [String: String]?
    /// Sorted by (dataBegin, dataEnd), ties kept in header order.
    var entries: [SafeTensorsEntry]
}

enum HeaderValidation {
    static let metadataKey = "__metadata__"

    /// - Parameters:
    ///   - header: the N header bytes (JSON, possibly padded with trailing spaces).
    ///   - dataSectionByteCount: file size − 8 − N.
    ///   - path: only used in error messages.
    static func validate(
        header: [UInt8], dataSectionByteCount: Int, path: String
    ) throws(SafeTensorsError) -> ValidatedHeader {
        let root: JSONValue
        do throws(JSONParseError) {
            root = try StrictJSONParser.parse(header)
        } catch {
            throw translate(error, path: path)
        }
        guard case .object(let members) = root else {
            throw .header(path, "the header must be a JSON object, found \(root.kindDescription)")
        }

        var metadata: [String: String]?
        var entries: [SafeTensorsEntry] = []
        entries.reserveCapacity(members.count)
        for member in members {
            if member.key == metadataKey {
                metadata = try validateMetadata(member.value, path: path)
            } else {
                entries.append(
                    try validateEntry(
                        name: member.key, value: member.value, dataSectionByteCount: dataSectionByteCount,
                        path: path))
            }
        }
        let sorted = try validateLayout(entries, dataSectionByteCount: dataSectionByteCount, path: path)
        return ValidatedHeader(metadata: metadata, entries: sorted)
    }

    /// Maps parser errors to messages that name what the duplicate key means in safetensors terms.
    private static func translate(_ error: JSONParseError, path: String) -> SafeTensorsError {
        switch error.kind {
        case .invalidUTF8:
            return .header(path, "the header is not valid UTF-8: \(error.message)")
        case .trailingData:
            return .header(
                path, "trailing garbage after the header's JSON object (only space padding may follow it): \(error.message)")
        case .syntax, .depthLimitExceeded:
            return .header(path, "invalid JSON: \(error.message)")
        case .duplicateKey(let key, let keyPath):
            let at = "(second occurrence at header byte \(error.byteOffset))"
            switch keyPath.first {
            case nil where key == metadataKey:
                return .header(path, "\(metadataKey) appears twice \(at)")
            case nil:
                return .tensor(path, key, "duplicate tensor name: the header lists it twice \(at)")
            case .key(let owner) where owner == metadataKey && keyPath.count == 1:
                return .header(path, "\(metadataKey) has duplicate key \(quoted(key)) \(at)")
            case .key(let owner) where owner != metadataKey && keyPath.count == 1:
                return .tensor(path, owner, "duplicate key \(quoted(key)) in the tensor's entry \(at)")
            case .key(let owner) where owner != metadataKey:
                return .tensor(path, owner, "invalid JSON: \(error.message)")
            default:
                return .header(path, "invalid JSON: \(error.message)")
            }
        }
    }

    private static func validateMetadata(_ value: JSONValue, path: String) throws(SafeTensorsError) -> [String: String] {
        guard case .object(let members) = value else {
            throw .header(path, "\(metadataKey) must be an object of string to string, found \(value.kindDescription)")
        }
        var metadata: [String: String] = [:]
        for member in members {
            guard case .string(let text) = member.value else {
                throw .header(
                    path,
                    "\(metadataKey) value for key \(quoted(member.key)) must be a string, found \(member.value.kindDescription)")
            }
            metadata[member.key] = text  // Keys are unique: the parser rejects duplicates.
        }
        return metadata
    }

    private static func validateEntry(
        name: String, value: JSONValue, dataSectionByteCount: Int, path: String
    ) throws(SafeTensorsError) -> SafeTensorsEntry {
        func fail(_ message: String) -> SafeTensorsError { .tensor(path, name, message) }

        guard case .object(let fields) = value else {
            throw fail("the entry must be an object with keys dtype, shape and data_offsets, found \(value.kindDescription)")
        }
        var dtypeValue: JSONValue?
        var shapeValue: JSONValue?
        var offsetsValue: JSONValue?
        for field in fields {
            switch field.key {
            case "dtype": dtypeValue = field.value
            case "shape": shapeValue = field.value
            case "data_offsets": offsetsValue = field.value
            default:
                throw fail("unknown key \(quoted(field.key)) in the entry (expected only dtype, shape, data_offsets)")
            }
        }
        guard let dtypeValue else { throw fail("the entry has no 'dtype'") }
        guard let shapeValue else { throw fail("the entry has no 'shape'") }
        guard let offsetsValue else { throw fail("the entry has no 'data_offsets'") }

        guard case .string(let dtypeName) = dtypeValue else {
            throw fail("dtype must be a string, found \(dtypeValue.kindDescription)")
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeName) else {
            let known = SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw fail("unknown dtype \(quoted(dtypeName)) (supported: \(known))")
        }

        guard case .array(let dimensionValues) = shapeValue else {
            throw fail("shape must be an array of non-negative integers, found \(shapeValue.kindDescription)")
        }
        var shape: [Int] = []
        shape.reserveCapacity(dimensionValues.count)
        for (index, dimensionValue) in dimensionValues.enumerated() {
            shape.append(try nonNegativeInteger(dimensionValue, field: "shape[\(index)]", fail: fail))
        }

        guard case .array(let offsetValues) = offsetsValue else {
            throw fail("data_offsets must be an array [begin, end], found \(offsetsValue.kindDescription)")
        }
        guard offsetValues.count == 2 else {
            throw fail("data_offsets must have exactly 2 elements [begin, end], found \(offsetValues.count)")
        }
        let begin = try nonNegativeInteger(offsetValues[0], field: "data_offsets[0]", fail: fail)
        let end = try nonNegativeInteger(offsetValues[1], field: "data_offsets[1]", fail: fail)
        guard begin <= end else {
            throw fail("data_offsets begin \(begin) is greater than end \(end)")
        }

        guard let elementCount = checkedElementCount(shape) else {
            throw fail("shape \(describeShape(shape)) has more elements than fit in a 64-bit integer")
        }
        let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else {
            throw fail("shape \(describeShape(shape)) of \(dtype.rawValue) is more bytes than fit in a 64-bit integer")
        }
        guard end - begin == byteCount else {
            throw fail(
                "data_offsets [\(begin), \(end)) span \(end - begin) bytes but shape \(describeShape(shape)) of \(dtype.rawValue) needs \(byteCount) bytes"
            )
        }
        guard end <= dataSectionByteCount else {
            throw fail("data_offsets end \(end) exceeds the data section (\(dataSectionByteCount) bytes)")
        }
        return SafeTensorsEntry(name: name, dtype: dtype, shape: shape, dataBegin: begin, dataEnd: end)
    }

    /// Accepts any JSON number that is exactly a non-negative integer fitting in `Int`
    /// (so `16`, `1.6e1` and `160e-1` all mean 16, but `1.5` and `1e19` are rejected).
    private static func nonNegativeInteger(
        _ value: JSONValue, field: String, fail: (String) -> SafeTensorsError
    ) throws(SafeTensorsError) -> Int {
        guard case .number(let number) = value else {
            throw fail("\(field) must be a non-negative integer, found \(value.kindDescription)")
        }
        switch number.integerValue {
        case .exact(let integer) where integer >= 0:
            return integer
        case .exact:
            throw fail("\(field) must be a non-negative integer, found negative \(number.literal)")
        case .notIntegral:
            throw fail("\(field) must be a non-negative integer, found non-integral \(number.literal)")
        case .outOfRange:
            throw fail("\(field) \(number.literal) is too large (maximum \(Int.max))")
        }
    }

    /// Sorts by position and checks the tensors tile `[0, dataSectionByteCount)` exactly.
    private static func validateLayout(
        _ entries: [SafeTensorsEntry], dataSectionByteCount: Int, path: String
    ) throws(SafeTensorsError) -> [SafeTensorsEntry] {
        // Header order breaks ties so zero-sized tensors keep a deterministic order.
        let sorted = entries.enumerated().sorted { lhs, rhs in
            (lhs.element.dataBegin, lhs.element.dataEnd, lhs.offset)
                < (rhs.element.dataBegin, rhs.element.dataEnd, rhs.offset)
        }.map(\.element)

        var expectedBegin = 0
        var previous: SafeTensorsEntry?
        for entry in sorted {
            let range = "[\(entry.dataBegin), \(entry.dataEnd))"
            if entry.dataBegin > expectedBegin {
                let gap = entry.dataBegin - expectedBegin
                if let previous {
                    throw .tensor(
                        path, entry.name,
                        "data_offsets \(range) leave a gap of \(gap) bytes after tensor \(quoted(previous.name)) [\(previous.dataBegin), \(previous.dataEnd))"
                    )
                }
                throw .tensor(
                    path, entry.name,
                    "data_offsets \(range) leave a gap of \(gap) bytes at the start of the data section (the first tensor must begin at 0)"
                )
            }
            if entry.dataBegin < expectedBegin, let previous {
                throw .tensor(
                    path, entry.name,
                    "data_offsets \(range) overlap tensor \(quoted(previous.name)) [\(previous.dataBegin), \(previous.dataEnd))"
                )
            }
            expectedBegin = entry.dataEnd
            previous = entry
        }
        if expectedBegin != dataSectionByteCount {
            // Every end was checked to be <= the data section size, so bytes are left over.
            let unused = dataSectionByteCount - expectedBegin
            guard let last = previous else {
                throw .header(
                    path, "the header declares no tensors but the data section has \(dataSectionByteCount) bytes")
            }
            throw .tensor(
                path, last.name,
                "the last tensor ends at \(last.dataEnd) but the data section is \(dataSectionByteCount) bytes: \(unused) trailing bytes belong to no tensor"
            )
        }
        return sorted
    }
}
