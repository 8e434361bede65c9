// A small, strict RFC 8259 JSON parser for safetensors headers.
//
// Why not Foundation's JSONSerialization: it silently keeps one of two duplicate keys, so a
// header with two entries for the same tensor name would be accepted and one of them ignored;
// it also turns numbers into Double/NSNumber, losing the exact integer text we need for sizes
// and offsets. This parser rejects duplicate keys in every object, keeps member order, keeps
// number literals verbatim, validates UTF-8 up front, and bounds nesting depth so hostile input
// cannot exhaust the stack.

import OneLineText

/// A parsed JSON value. Objects keep member order as written.
enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object([JSONMember])

    /// "a string", "an array"… for messages of the form "expected X, found Y".
    var kindDescription: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number(let number): return "the number \(number.literal)"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// One `"key": value` pair of a JSON object.
struct JSONMember: Equatable, Sendable {
    var key: String
    var value: JSONValue
}

/// A JSON number kept as its literal text, with its exact integer value if it has one.
struct JSONNumber: Equatable, Sendable {
    enum IntegerValue: Equatable, Sendable {
        /// The number is mathematically an integer that fits in `Int` (`16`, `1.6e1`, `-0`).
        case exact(Int)
        /// The number has a non-zero fractional part (`1.5`, `15e-1`).
        case notIntegral
        /// The number is an integer too large in magnitude for `Int` (`1e19`).
        case outOfRange
    }

    /// The literal as written, already checked against the RFC 8259 number grammar.
    let literal: String
    let integerValue: IntegerValue

    init(literal: String) {
        self.literal = literal
        self.integerValue = JSONNumber.exactInteger(Array(literal.utf8))
    }

    /// Decides integrality exactly, in decimal, without going through Double (which would turn
    /// 9007199254740993 into ...992 and accept 1.0000000000000001 as 1).
    /// `bytes` must match the JSON number grammar.
    static func exactInteger(_ bytes: [UInt8]) -> IntegerValue {
        var index = 0
        var negative = false
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        // value = digits × 10^scale
        var digits: [UInt8] = []
        var scale = 0
        while index < bytes.count, isDigit(bytes[index]) {
            digits.append(bytes[index] - UInt8(ascii: "0"))
            index += 1
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            while index < bytes.count, isDigit(bytes[index]) {
                digits.append(bytes[index] - UInt8(ascii: "0"))
                scale -= 1
                index += 1
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            var exponentNegative = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") {
                index += 1
            } else if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
                exponentNegative = true
                index += 1
            }
            // Clamp absurd exponents: past 10^9 the answer (out of range / not integral / zero)
            // no longer depends on the exact value, and clamping keeps the sums below in range.
            var exponent = 0
            while index < bytes.count, isDigit(bytes[index]) {
                if exponent < 1_000_000_000 {
                    exponent = exponent * 10 + Int(bytes[index] - UInt8(ascii: "0"))
                }
                index += 1
            }
            scale += exponentNegative ? -exponent : exponent
        }

        let firstSignificant = digits.firstIndex(where: { $0 != 0 }) ?? digits.count
        digits.removeFirst(firstSignificant)
        if digits.isEmpty { return .exact(0) }  // 0, -0, 0.000, 0e99999
        while digits.last == 0 {
            digits.removeLast()
            scale += 1
        }
        // The last significant digit is non-zero, so a negative scale leaves a fraction.
        if scale < 0 { return .notIntegral }
        // Int.max has 19 digits; anything longer cannot fit (and this bounds the loops below).
        if digits.count + scale > 19 { return .outOfRange }

        var magnitude: UInt64 = 0
        for digit in digits + [UInt8](repeating: 0, count: scale) {
            let (times10, overflow1) = magnitude.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(UInt64(digit))
            if overflow1 || overflow2 { return .outOfRange }
            magnitude = sum
        }
        let intMaxMagnitude = UInt64(Int.max)
        if !negative {
            return magnitude <= intMaxMagnitude ? .exact(Int(magnitude)) : .outOfRange
        }
        if magnitude <= intMaxMagnitude { return .exact(-Int(magnitude)) }
        if magnitude == intMaxMagnitude + 1 { return .exact(Int.min) }
        return .outOfRange
    }
}

/// One step of the path to a value, for locating duplicate keys: `.key("a")`, `.index(2)`.
enum JSONPathComponent: Equatable, Sendable {
    case key(String)
    case index(Int)
}

struct JSONParseError: Error, Equatable, Sendable {
    enum Kind: Equatable, Sendable {
        case invalidUTF8
        case syntax
        /// Something other than JSON whitespace follows the complete top-level value.
        case trailingData
        case depthLimitExceeded
        /// `path` leads to the object that holds `key` twice (`[]` for the top-level object).
        case duplicateKey(key: String, path: [JSONPathComponent])
    }

    let kind: Kind
    /// Offset in the input where the problem was detected.
    let byteOffset: Int
    /// Human-readable, ends with "at byte N".
    let message: String
}

/// Parser for one complete JSON text (RFC 8259), rejecting duplicate keys.
struct StrictJSONParser {
    static let defaultMaxDepth = 64

    /// Parses `bytes` as one JSON text: optional whitespace, one value, optional whitespace
    /// (space, tab, LF, CR, per RFC 8259; safetensors pads with spaces, which this covers).
    /// Arrays and objects may nest at most `maxDepth` levels (the top-level container is level 1).
    static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError> = bytes.withUnsafeBufferPointer { buffer in
            var parser = StrictJSONParser(bytes: buffer, maxDepth: maxDepth)
            do throws(JSONParseError) {
                return .success(try parser.parseDocument())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private let bytes: UnsafeBufferPointer<UInt8>
    private let maxDepth: Int
    private var position = 0
    /// Keys and indices leading to the value being parsed; only read when reporting a duplicate.
    private var path: [JSONPathComponent] = []

    private init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    private mutating func parseDocument() throws(JSONParseError) -> JSONValue {
        if let bad = UTF8Validation.firstInvalidOffset(bytes) {
            throw JSONParseError(
                kind: .invalidUTF8, byteOffset: bad,
                message: "invalid UTF-8 sequence starting with byte \(hexByte(bytes[bad])) at byte \(bad)")
        }
        skipWhitespace()
        let value = try parseValue(depth: 0)
        skipWhitespace()
        if position < bytes.count {
            throw JSONParseError(
                kind: .trailingData, byteOffset: position,
                message: "unexpected \(describeByte(at: position)) after the end of the JSON value at byte \(position)")
        }
        return value
    }

    // MARK: Values

    private mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard position < bytes.count else {
            throw syntaxError("unexpected end of input, expected a JSON value")
        }
        switch bytes[position] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .number(try parseNumber())
        default:
            throw syntaxError("unexpected \(describeByte(at: position)), expected a JSON value")
        }
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        try checkDepth(depth)
        position += 1  // "{"
        skipWhitespace()
        var members: [JSONMember] = []
        if peek() == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        // Swift compares strings by canonical equivalence, so "é" precomposed and decomposed
        // count as the same key here. That is stricter than byte comparison, on purpose: two
        // such tensor names would collide in any String-keyed lookup, so they are rejected.
        var seenKeys = Set<[UInt8]>()  // bytes, not Swift string equality (which merges NFC/NFD forms)
        while true {
            guard peek() == UInt8(ascii: "\"") else {
                throw syntaxError("expected a string key, found \(describeByte(at: position))")
            }
            let keyOffset = position
            let key = try parseString()
            guard seenKeys.insert(Array(key.utf8)).inserted else {
                throw JSONParseError(
                    kind: .duplicateKey(key: key, path: path), byteOffset: keyOffset,
                    message: "duplicate key \(quoted(key)) in \(describePath(path)) at byte \(keyOffset)")
            }
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else {
                throw syntaxError("expected ':' after object key, found \(describeByte(at: position))")
            }
            position += 1
            skipWhitespace()
            path.append(.key(key))
            let value = try parseValue(depth: depth)
            path.removeLast()
            members.append(JSONMember(key: key, value: value))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "}"):
                position += 1
                return .object(members)
            default:
                throw syntaxError("expected ',' or '}' in object, found \(describeByte(at: position))")
            }
        }
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        try checkDepth(depth)
        position += 1  // "["
        skipWhitespace()
        var elements: [JSONValue] = []
        if peek() == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            path.append(.index(elements.count))
            elements.append(try parseValue(depth: depth))
            path.removeLast()
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","):
                position += 1
                skipWhitespace()
            case UInt8(ascii: "]"):
                position += 1
                return .array(elements)
            default:
                throw syntaxError("expected ',' or ']' in array, found \(describeByte(at: position))")
            }
        }
    }

    private func checkDepth(_ depth: Int) throws(JSONParseError) {
        if depth > maxDepth {
            throw JSONParseError(
                kind: .depthLimitExceeded, byteOffset: position,
                message: "arrays and objects nested deeper than \(maxDepth) levels at byte \(position)")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let start = position
        let length = literal.utf8CodeUnitCount
        let matches = literal.withUTF8Buffer { expected in
            bytes.count - position >= length && (0..<length).allSatisfy { bytes[position + $0] == expected[$0] }
        }
        guard matches else {
            throw JSONParseError(
                kind: .syntax, byteOffset: start, message: "invalid literal at byte \(start), expected '\(literal)'")
        }
        position += length
    }

    // MARK: Numbers

    /// number = [ "-" ] int [ frac ] [ exp ]; int = "0" / digit1-9 *DIGIT (no leading zeros).
    private mutating func parseNumber() throws(JSONParseError) -> JSONNumber {
        let start = position
        if peek() == UInt8(ascii: "-") { position += 1 }
        guard let first = peek(), isDigit(first) else {
            throw syntaxError("expected a digit in number, found \(describeByte(at: position))")
        }
        position += 1
        if first == UInt8(ascii: "0") {
            if let next = peek(), isDigit(next) {
                throw syntaxError("leading zeros are not allowed in numbers")
            }
        } else {
            skipDigits()
        }
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard let digit = peek(), isDigit(digit) else {
                throw syntaxError("expected a digit after the decimal point, found \(describeByte(at: position))")
            }
            skipDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            guard let digit = peek(), isDigit(digit) else {
                throw syntaxError("expected a digit in the exponent, found \(describeByte(at: position))")
            }
            skipDigits()
        }
        let literal = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self)
        return JSONNumber(literal: literal)
    }

    private mutating func skipDigits() {
        while let byte = peek(), isDigit(byte) { position += 1 }
    }

    // MARK: Strings

    /// Parses a string starting at its opening quote. The input is already known to be valid
    /// UTF-8, and `"` / `\` are ASCII, so raw runs between escapes are valid UTF-8 on their own.
    private mutating func parseString() throws(JSONParseError) -> String {
        let openingQuote = position
        position += 1
        let contentStart = position
        // Fast path: no escapes.
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                let text = String(
                    decoding: UnsafeBufferPointer(rebasing: bytes[contentStart..<position]), as: UTF8.self)
                position += 1
                return text
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw controlCharacterError() }
            position += 1
        }
        var utf8 = Array(bytes[contentStart..<position])
        while position < bytes.count {
            let byte = bytes[position]
            switch byte {
            case UInt8(ascii: "\""):
                position += 1
                return String(decoding: utf8, as: UTF8.self)
            case UInt8(ascii: "\\"):
                let escapeStart = position
                position += 1
                guard let escaped = peek() else { throw unterminatedString(openingQuote) }
                position += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escaped)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"):
                    let scalar = try parseUnicodeEscape(escapeStart: escapeStart)
                    UTF8.encode(scalar) { utf8.append($0) }
                default:
                    throw JSONParseError(
                        kind: .syntax, byteOffset: escapeStart,
                        message: "invalid escape: \(describeByteRaw(escaped)) after a backslash in string at byte \(escapeStart)")
                }
            default:
                if byte < 0x20 { throw controlCharacterError() }
                utf8.append(byte)
                position += 1
            }
        }
        throw unterminatedString(openingQuote)
    }

    private func unterminatedString(_ openingQuote: Int) -> JSONParseError {
        JSONParseError(
            kind: .syntax, byteOffset: openingQuote, message: "unterminated string starting at byte \(openingQuote)")
    }

    /// Called with `position` just after `\u`. Combines a UTF-16 surrogate pair written as two
    /// escapes; a lone surrogate is an error because it cannot be represented as a Swift String
    /// (and would be silently replaced by U+FFFD otherwise).
    private mutating func parseUnicodeEscape(escapeStart: Int) throws(JSONParseError) -> Unicode.Scalar {
        let unit = try parseHex4(escapeStart: escapeStart)
        switch unit {
        case 0xD800...0xDBFF:
            let lowStart = position
            guard bytes.count - position >= 2, bytes[position] == UInt8(ascii: "\\"),
                bytes[position + 1] == UInt8(ascii: "u")
            else {
                throw JSONParseError(
                    kind: .syntax, byteOffset: escapeStart,
                    message: "high surrogate \\u\(hex4(unit)) at byte \(escapeStart) is not followed by a \\u low surrogate")
            }
            position += 2
            let low = try parseHex4(escapeStart: lowStart)
            guard (0xDC00...0xDFFF).contains(low) else {
                throw JSONParseError(
                    kind: .syntax, byteOffset: lowStart,
                    message: "high surrogate \\u\(hex4(unit)) is followed by \\u\(hex4(low)), which is not a low surrogate, at byte \(lowStart)")
            }
            let value = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            // Always valid: the range is U+10000...U+10FFFF.
            return Unicode.Scalar(value) ?? "\u{FFFD}"
        case 0xDC00...0xDFFF:
            throw JSONParseError(
                kind: .syntax, byteOffset: escapeStart,
                message: "unpaired low surrogate \\u\(hex4(unit)) at byte \(escapeStart)")
        default:
            return Unicode.Scalar(unit) ?? "\u{FFFD}"  // Never nil outside the surrogate range.
        }
    }

    private mutating func parseHex4(escapeStart: Int) throws(JSONParseError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = peek(), let digit = hexValue(byte) else {
                throw JSONParseError(
                    kind: .syntax, byteOffset: escapeStart,
                    message: "\\u escape at byte \(escapeStart) needs 4 hex digits")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    private func controlCharacterError() -> JSONParseError {
        JSONParseError(
            kind: .syntax, byteOffset: position,
            message: "unescaped control character \(hexByte(bytes[position])) in string at byte \(position)")
    }

    // MARK: Helpers

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    /// JSON whitespace: space, tab, line feed, carriage return.
    private mutating func skipWhitespace() {
        while let byte = peek(),
            byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D
        {
            position += 1
        }
    }

    private func syntaxError(_ message: String) -> JSONParseError {
        JSONParseError(kind: .syntax, byteOffset: position, message: "\(message) at byte \(position)")
    }

    private func describeByte(at offset: Int) -> String {
        guard offset < bytes.count else { return "end of input" }
        return describeByteRaw(bytes[offset])
    }
}

private func describeByteRaw(_ byte: UInt8) -> String {
    if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
    return "byte \(hexByte(byte))"
}

private func describePath(_ path: [JSONPathComponent]) -> String {
    if path.isEmpty { return "the top-level object" }
    var text = ""
    for component in path {
        switch component {
        case .key(let key): text += "[\(quoted(key))]"
        case .index(let index): text += "[\(index)]"
        }
    }
    return "the object at " + text
}

func hexByte(_ byte: UInt8) -> String {
    let digits = String(byte, radix: 16, uppercase: true)
    return "0x" + (digits.count == 1 ? "0" + digits : digits)
}

private func hex4(_ value: UInt32) -> String {
    let digits = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
}

private func isDigit(_ byte: UInt8) -> Bool {
    byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
}

private func hexValue(_ byte: UInt8) -> UInt32? {
    switch byte {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return UInt32(byte - UInt8(ascii: "0"))
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return UInt32(byte - UInt8(ascii: "a") + 10)
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return UInt32(byte - UInt8(ascii: "A") + 10)
    default: return nil
    }
}

/// Well-formedness check per the Unicode Standard, Table 3-7: rejects overlong forms, encoded
/// surrogates (ED A0..BF), code points above U+10FFFF, stray continuation bytes and truncation.
enum UTF8Validation {
    /// Offset of the first byte of the first ill-formed sequence, or nil if all of it is valid.
    static func firstInvalidOffset(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            // Allowed range for the second byte, and the total sequence length.
            let secondRange: ClosedRange<UInt8>
            let length: Int
            switch lead {
            case 0xC2...0xDF: secondRange = 0x80...0xBF; length = 2
            case 0xE0: secondRange = 0xA0...0xBF; length = 3
            case 0xE1...0xEC, 0xEE...0xEF: secondRange = 0x80...0xBF; length = 3
            case 0xED: secondRange = 0x80...0x9F; length = 3
            case 0xF0: secondRange = 0x90...0xBF; length = 4
            case 0xF1...0xF3: secondRange = 0x80...0xBF; length = 4
            case 0xF4: secondRange = 0x80...0x8F; length = 4
            default: return index
            }
            guard count - index >= length, secondRange.contains(bytes[index + 1]) else { return index }
            for offset in 2..<length where !(0x80...0xBF).contains(bytes[index + offset]) {
                return index
            }
            index += length
        }
        return nil
    }

    static func firstInvalidOffset(_ bytes: [UInt8]) -> Int? {
        bytes.withUnsafeBufferPointer { firstInvalidOffset($0) }
    }
}

/// The parts of a sharded checkpoint's `*.index.json` that readers use, parsed with the same
/// strict parser as headers (so a tensor listed twice in `weight_map` is an error, not a silent
/// choice of one shard).
public struct ShardIndexJSON: Sendable {
    /// `weight_map` in file order: tensor name → shard file name.
    public let weightMap: [(name: String, shard: String)]
    /// `metadata` members whose values are strings or numbers (numbers as written).
    public let metadata: [String: String]?

    public static func parse(_ bytes: [UInt8]) throws -> ShardIndexJSON {
        let value: JSONValue
        do { value = try StrictJSONParser.parse(bytes) } catch { throw ShardIndexJSONError(message: error.message) }
        guard case .object(let top) = value else { throw ShardIndexJSONError(message: "expected a JSON object, found \(value.kindDescription)") }
        guard let wm = top.first(where: { $0.key == "weight_map" })?.value else {
            throw ShardIndexJSONError(message: "has no weight_map")
        }
        guard case .object(let members) = wm else { throw ShardIndexJSONError(message: "weight_map: expected an object, found \(wm.kindDescription)") }
        var map: [(String, String)] = []
        for m in members {
            guard case .string(let s) = m.value else {
                throw ShardIndexJSONError(message: "weight_map: tensor '\(m.key)': expected a shard file name, found \(m.value.kindDescription)")
            }
            map.append((m.key, s))
        }
        var metadata: [String: String]? = nil
        if let meta = top.first(where: { $0.key == "metadata" })?.value, case .object(let ms) = meta {
            var out: [String: String] = [:]
            for m in ms {
                switch m.value {
                case .string(let s): out[m.key] = s
                case .number(let n): out[m.key] = n.literal
                default: break
                }
            }
            metadata = out
        }
        return ShardIndexJSON(weightMap: map, metadata: metadata)
    }
}

public struct ShardIndexJSONError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}
