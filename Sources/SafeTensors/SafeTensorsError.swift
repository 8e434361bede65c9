#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import OneLineText

/// Every failure in this module: bad input, misuse, or an operating-system error.
///
/// The description is always a single line that names the file, then what was wrong with it:
///
///     model.safetensors: tensor 'a.weight': data_offsets [8, 24) overlap tensor 'b' [0, 16)
///     model.safetensors: header: header length is 0; a header must hold at least a JSON object
///     model.safetensors: cannot open for reading: No such file or directory
///
/// Names inside messages are quoted with `'…'` and control characters are escaped, so a
/// hostile tensor name cannot break the line or forge another message.
public struct SafeTensorsError: Error, CustomStringConvertible, Sendable {
    /// What part of the file the error is about.
    public enum Scope: Sendable, Equatable {
        /// The file as a whole or an operating-system call (open, read, write, fsync…).
        case file
        /// The length prefix, the JSON header, or a header field that is not a tensor
        /// (for example `__metadata__`).
        case header
        /// The tensor named by `object`.
        case tensor
    }

    /// The path given to the reader or writer.
    public let path: String
    /// The tensor the error is about, or nil when it concerns the header or the file as a whole.
    public let object: String?
    /// What was found and what was expected, without the path/object prefix.
    public let message: String
    public let scope: Scope
    /// `errno` of the failing system call, for callers that want to tell, say, ENOENT apart.
    public let systemErrorCode: Int32?

    init(path: String, scope: Scope, object: String? = nil, message: String, systemErrorCode: Int32? = nil) {
        self.path = path
        self.scope = scope
        self.object = object
        self.message = message
        self.systemErrorCode = systemErrorCode
    }

    static func file(_ path: String, _ message: String, errno code: Int32? = nil) -> SafeTensorsError {
        SafeTensorsError(path: path, scope: .file, message: message, systemErrorCode: code)
    }

    static func header(_ path: String, _ message: String) -> SafeTensorsError {
        SafeTensorsError(path: path, scope: .header, message: message)
    }

    static func tensor(_ path: String, _ name: String, _ message: String) -> SafeTensorsError {
        SafeTensorsError(path: path, scope: .tensor, object: name, message: message)
    }

    public var description: String {
        let prefix: String
        switch scope {
        case .file: prefix = ""
        case .header: prefix = "header: "
        case .tensor: prefix = "tensor \(quoted(object ?? "")): "
        }
        return escapingControlCharacters(path) + ": " + prefix + escapingControlCharacters(message)
    }
}
