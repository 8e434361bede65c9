import LocusTestSupport
import XCTest

@testable import SafeTensors

final class StrictJSONTests: XCTestCase {
    private func parse(_ text: String, maxDepth: Int = StrictJSONParser.defaultMaxDepth) throws -> JSONValue {
        try StrictJSONParser.parse(Array(text.utf8), maxDepth: maxDepth)
    }

    private func parseError(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        do throws(JSONParseError) {
            let value = try StrictJSONParser.parse(bytes)
            XCTFail("expected a parse error, got \(value)", file: file, line: line)
            return nil
        } catch {
            return error
        }
    }

    private func parseError(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> JSONParseError? {
        parseError(Array(text.utf8), file: file, line: line)
    }

    private func string(_ json: String, file: StaticString = #filePath, line: UInt = #line) throws -> String? {
        guard case .string(let text) = try parse(json) else {
            XCTFail("not a string: \(json)", file: file, line: line)
            return nil
        }
        return text
    }

    // MARK: Structure

    func testLiteralsAndContainers() throws {
        XCTAssertEqual(try parse("true"), .bool(true))
        XCTAssertEqual(try parse("false"), .bool(false))
        XCTAssertEqual(try parse("null"), .null)
        XCTAssertEqual(try parse(" \t\r\n[ ] \n"), .array([]))
        XCTAssertEqual(try parse("{}"), .object([]))
        XCTAssertEqual(
            try parse(#"{"a" : [1, "x", true, null, {"b": -2.5e3}], "c": {}}"#),
            .object([
                JSONMember(
                    key: "a",
                    value: .array([
                        .number(JSONNumber(literal: "1")), .string("x"), .bool(true), .null,
                        .object([JSONMember(key: "b", value: .number(JSONNumber(literal: "-2.5e3")))]),
                    ])),
                JSONMember(key: "c", value: .object([])),
            ]))
    }

    func testObjectMemberOrderIsKept() throws {
        guard case .object(let members) = try parse(#"{"z":1,"a":2,"m":3}"#) else { return XCTFail() }
        XCTAssertEqual(members.map(\.key), ["z", "a", "m"])
    }

    func testSyntaxErrors() {
        let cases = [
            "", "   ", "{", "[1", "{\"a\"", "{\"a\":}", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "[,1]", "{1:2}",
            "{'a':1}", "[1 2]", "tru", "nul", "True", "[NaN]", "[Infinity]", "{\"a\":1 \"b\":2}", "]",
        ]
        for text in cases {
            let error = parseError(text)
            XCTAssertEqual(error?.kind, .syntax, "for \(text.debugDescription): \(String(describing: error))")
        }
        XCTAssertEqual(parseError("{\"a\":}")?.byteOffset, 5)
        XCTAssertTrue(parseError("{\"a\" 1}")?.message.contains("expected ':'") ?? false)
    }

    func testTrailingData() {
        XCTAssertNoThrow(try parse("{}    \n\t\r "))
        for text in ["{} x", "{}{}", "{}\0", "1 2", "[] ,"] {
            XCTAssertEqual(parseError(text)?.kind, .trailingData, text.debugDescription)
        }
        XCTAssertEqual(parseError("{}  x")?.byteOffset, 4)
    }

    func testDepthLimit() throws {
        let depth = StrictJSONParser.defaultMaxDepth
        XCTAssertEqual(depth, 64)
        let ok = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        XCTAssertNoThrow(try parse(ok))
        let tooDeep = String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1)
        XCTAssertEqual(parseError(tooDeep)?.kind, .depthLimitExceeded)

        let objects = String(repeating: "{\"a\":", count: depth) + "1" + String(repeating: "}", count: depth)
        XCTAssertNoThrow(try parse(objects))
        let deepObjects = String(repeating: "{\"a\":", count: depth + 1) + "1" + String(repeating: "}", count: depth + 1)
        XCTAssertEqual(parseError(deepObjects)?.kind, .depthLimitExceeded)

        // A custom limit, and a huge unbalanced input fails fast instead of overflowing the stack.
        XCTAssertThrowsError(try parse("[[[]]]", maxDepth: 2))
        XCTAssertNoThrow(try parse("[[[]]]", maxDepth: 3))
        let hostile = Array(repeating: UInt8(ascii: "["), count: 1_000_000)
        XCTAssertEqual(parseError(hostile)?.kind, .depthLimitExceeded)
    }

    // MARK: Duplicates

    func testDuplicateKeys() {
        let top = parseError(#"{"a":1,"a":2}"#)
        XCTAssertEqual(top?.kind, .duplicateKey(key: "a", path: []))
        XCTAssertEqual(top?.byteOffset, 7)
        XCTAssertTrue(top?.message.contains("duplicate key 'a' in the top-level object at byte 7") ?? false, "\(String(describing: top))")

        let nested = parseError(#"{"x":[{"k":1},{"k":1,"k":2}]}"#)
        XCTAssertEqual(nested?.kind, .duplicateKey(key: "k", path: [.key("x"), .index(1)]))
        XCTAssertTrue(nested?.message.contains("['x'][1]") ?? false, "\(String(describing: nested))")

        // Keys are compared after unescaping.
        XCTAssertEqual(parseError(#"{"a":1,"\u0061":2}"#)?.kind, .duplicateKey(key: "a", path: []))
        // The same key in different objects is fine.
        XCTAssertNoThrow(try parse(#"{"a":{"a":1},"b":{"a":2}}"#))
    }

    /// Keys are compared as UTF-8 bytes, like the reference implementation: "é" precomposed and
    /// decomposed are two different keys (two different state-dict names), not a duplicate.
    func testCanonicallyEquivalentKeysAreDistinct() throws {
        guard case .object(let members) = try parse(#"{"\u00e9":1,"e\u0301":2}"#) else { return XCTFail("expected an object") }
        XCTAssertEqual(members.count, 2)
        XCTAssertFalse(members[0].key.utf8.elementsEqual(members[1].key.utf8))
    }

    // MARK: Strings

    func testStringEscapes() throws {
        XCTAssertEqual(try string(#""\" \\ \/ \b \f \n \r \t""#), "\" \\ / \u{8} \u{C} \n \r \t")
        XCTAssertEqual(try string(#""\u0041\u00e9\u00E9\u20AC""#), "Aéé€")
        XCTAssertEqual(try string(#""\u0000""#), "\u{0}")
        XCTAssertEqual(try string(#""plain 日本 😀""#), "plain 日本 😀")
        XCTAssertEqual(try string(#""mixed 日本\n😀\t""#), "mixed 日本\n😀\t")
        XCTAssertEqual(try string(#""""#), "")
    }

    func testSurrogatePairs() throws {
        XCTAssertEqual(try string(#""\uD83D\uDE00""#), "😀")
        XCTAssertEqual(try string(#""\ud83d\ude00""#), "😀")
        XCTAssertEqual(try string(#""a\uD800\uDC00b""#), "a\u{10000}b")
        XCTAssertEqual(try string(#""\uDBFF\uDFFF""#), "\u{10FFFF}")
    }

    func testBadStrings() {
        let cases: [(String, String)] = [
            (#""\uD83D""#, "not followed by a \\u low surrogate"),
            (#""\uD83Dx""#, "not followed by a \\u low surrogate"),
            (#""\uD83D\n""#, "not followed by a \\u low surrogate"),
            (#""\uD83D\u0041""#, "not a low surrogate"),
            (#""\uD83D\uD83D""#, "not a low surrogate"),
            (#""\uDE00""#, "unpaired low surrogate"),
            (#""\u12G4""#, "needs 4 hex digits"),
            (#""\u12""#, "needs 4 hex digits"),
            (#""\x""#, "invalid escape"),
            (#""\'""#, "invalid escape"),
            ("\"abc", "unterminated string"),
            ("\"abc\\", "unterminated string"),
            ("\"a\u{1}b\"", "unescaped control character 0x01"),
            ("\"a\tb\"", "unescaped control character 0x09"),
            ("\"a\\n\nb\"", "unescaped control character 0x0A"),
        ]
        for (text, fragment) in cases {
            let error = parseError(text)
            XCTAssertEqual(error?.kind, .syntax, text.debugDescription)
            XCTAssertTrue(error?.message.contains(fragment) ?? false, "\(text.debugDescription): \(String(describing: error))")
        }
    }

    // MARK: Numbers

    func testNumberGrammar() throws {
        for text in ["0", "-0", "123", "-123", "1.5", "1e10", "1E+2", "1e-2", "0.5e1", "-0.0", "10"] {
            XCTAssertEqual(try parse(text), .number(JSONNumber(literal: text)), text)
        }
        for text in ["01", "-01", "00", "-", "1.", ".5", "+1", "1e", "1e+", "--1", "0x10", "1.e5", "-a", "1.5.2"] {
            XCTAssertNotNil(parseError(text), text)
        }
    }

    func testExactIntegerValues() {
        let cases: [(String, JSONNumber.IntegerValue)] = [
            ("0", .exact(0)), ("-0", .exact(0)), ("0.000", .exact(0)), ("0e999999999999999999", .exact(0)),
            ("16", .exact(16)), ("1.6e1", .exact(16)), ("160e-1", .exact(16)), ("1.0", .exact(1)),
            ("1e0", .exact(1)), ("100e-2", .exact(1)), ("-42", .exact(-42)), ("1E3", .exact(1000)),
            ("0.000000000000000000001e21", .exact(1)),
            ("12345678901234567890e-1", .exact(1_234_567_890_123_456_789)),
            ("9223372036854775807", .exact(Int.max)), ("-9223372036854775808", .exact(Int.min)),
            ("1e18", .exact(1_000_000_000_000_000_000)),
            ("1.5", .notIntegral), ("15e-1", .notIntegral), ("1.50", .notIntegral), ("0.1", .notIntegral),
            ("1e-999999999999999", .notIntegral), ("9007199254740993.5", .notIntegral),
            ("9223372036854775808", .outOfRange), ("-9223372036854775809", .outOfRange), ("1e19", .outOfRange),
            ("1e999999999999999999", .outOfRange), ("99999999999999999999", .outOfRange),
        ]
        for (literal, expected) in cases {
            XCTAssertEqual(JSONNumber(literal: literal).integerValue, expected, literal)
        }
    }

    // MARK: UTF-8

    func testInvalidUTF8IsRejectedWithOffset() {
        let cases: [([UInt8], Int)] = [
            ([0x22, 0xFF, 0x22], 1),  // never valid
            ([0x22, 0xC0, 0xAF, 0x22], 1),  // overlong "/"
            ([0x22, 0xE0, 0x80, 0xAF, 0x22], 1),  // overlong 3-byte
            ([0x22, 0xED, 0xA0, 0x80, 0x22], 1),  // encoded surrogate U+D800
            ([0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], 1),  // above U+10FFFF
            ([0x22, 0x61, 0xE2, 0x82, 0x22], 2),  // truncated sequence
            ([0x22, 0x80, 0x22], 1),  // stray continuation byte
            ([0x22, 0x22, 0x20, 0xF8], 3),  // even in trailing padding
        ]
        for (bytes, offset) in cases {
            let error = parseError(bytes)
            XCTAssertEqual(error?.kind, .invalidUTF8, "\(bytes)")
            XCTAssertEqual(error?.byteOffset, offset, "\(bytes)")
        }
        XCTAssertNil(UTF8Validation.firstInvalidOffset([0xF0, 0x9F, 0x98, 0x80, 0xEF, 0xBF, 0xBF, 0xC2, 0x80, 0x41]))
        XCTAssertNil(UTF8Validation.firstInvalidOffset([0xF4, 0x8F, 0xBF, 0xBF, 0xED, 0x9F, 0xBF]))
    }
}
