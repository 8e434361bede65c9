import HDF5

/// A user-facing failure: which file, which object inside it, and what was expected.
/// `description` is always one line, so the CLI can print it as is.
public struct LocusError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var object: String?
    public var message: String

    public init(file: String, object: String? = nil, _ message: String) {
        self.file = file; self.object = object; self.message = message
    }

    public var description: String {
        let text = [file, object, message].compactMap { $0 }.joined(separator: ": ")
        return text.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// Wraps any error as a LocusError about `file` (HDF5 errors keep their own object path).
    public static func wrap(_ error: any Error, file: String, object: String? = nil) -> LocusError {
        switch error {
        case let e as LocusError: return e
        case let e as HDF5Error:
            return LocusError(file: e.file ?? file, object: e.object ?? object,
                              e.stack.isEmpty ? "\(e.operation) failed" : "\(e.operation) failed: \(e.stack)")
        default: return LocusError(file: file, object: object, "\(error)")
        }
    }
}

/// Runs `body`, turning any error it throws into a LocusError about `file`.
@inline(__always)
func withContext<R>(file: String, object: String? = nil, _ body: () throws -> R) throws -> R {
    do { return try body() } catch { throw LocusError.wrap(error, file: file, object: object) }
}
