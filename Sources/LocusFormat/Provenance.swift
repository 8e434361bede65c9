import Foundation

/// Any JSON value, for free-form hyper-parameters.
public enum JSONValue: Codable, Sendable, Equatable, CustomStringConvertible {
    case null, bool(Bool), integer(Int64), number(Double), string(String)
    case array([JSONValue]), object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .integer(i) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .integer(let i): try c.encode(i)
        case .number(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public var description: String {
        switch self {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .string(let s): s
        case .array, .object: (try? JSON.encode(self)) ?? "?"
        }
    }
}

/// Where an artifact came from (spec §1.2, `/provenance`).
public struct Provenance: Codable, Sendable, Equatable {
    public struct Input: Codable, Sendable, Equatable {
        public var role: String
        public var path: String
        public var fingerprint: String?
        public init(role: String, path: String, fingerprint: String?) { self.role = role; self.path = path; self.fingerprint = fingerprint }
        public func encode(to encoder: any Encoder) throws {   // an unknown fingerprint is written as null, not left out
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(role, forKey: .role)
            try c.encode(path, forKey: .path)
            try c.encode(fingerprint, forKey: .fingerprint)
        }
    }
    public var command: [String]
    public var inputs: [Input]
    public var parameters: [String: JSONValue]

    public init(command: [String] = CommandLine.arguments, inputs: [Input] = [], parameters: [String: JSONValue] = [:]) {
        self.command = command; self.inputs = inputs; self.parameters = parameters
    }

    // Readers tolerate missing keys (spec §1.2).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        command = try c.decodeIfPresent([String].self, forKey: .command) ?? []
        inputs = try c.decodeIfPresent([Input].self, forKey: .inputs) ?? []
        parameters = try c.decodeIfPresent([String: JSONValue].self, forKey: .parameters) ?? [:]
    }
}

enum JSON {
    static func encode<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        // JSON has no NaN or infinity; a non-finite summary prints as text (spec §7), it is no error.
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return String(decoding: try e.encode(value), as: UTF8.self)
    }
    static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }
}
