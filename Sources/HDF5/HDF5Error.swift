import CHDF5

/// A failed HDF5 call, carrying the library's own error stack and the object it concerned.
public struct HDF5Error: Error, CustomStringConvertible, Sendable {
    /// The file the operation concerned, when known.
    public var file: String?
    /// The object path inside the file (`/tensors/x`), when known.
    public var object: String?
    /// What the wrapper was doing, e.g. "open dataset".
    public var operation: String
    /// HDF5's error stack, innermost first.
    public var stack: String

    public var description: String {
        var parts: [String] = []
        if let file { parts.append(file) }
        if let object { parts.append(object) }
        parts.append(stack.isEmpty ? "\(operation) failed" : "\(operation) failed: \(stack)")
        return parts.joined(separator: ": ")
    }
}

/// Process-wide settings of the HDF5 library.
public enum HDF5Runtime {
    /// Stops libhdf5 from closing still-open files in its own `atexit` handler. A write that failed
    /// (a full disk) leaves a file whose close failed; the library's shutdown would close it again
    /// and crash after the error was reported. Locus closes every file it writes explicitly, and
    /// removes the temporary files of failed writes itself, so nothing is lost by skipping it.
    /// Call first thing in `main`, before any other HDF5 call (later calls have no effect).
    public static func skipShutdownAtExit() { _ = H5dont_atexit() }
}

enum HDF5Library {
    /// HDF5 prints every error stack to stderr by default; we turn that off and turn stacks into
    /// Swift errors instead. The setting is per thread in thread-safe builds, so it is re-applied
    /// at every entry point (it costs a few nanoseconds).
    static func silence() { locus_h5_silence_errors() }

    static func takeErrorStack() -> String {
        var buffer = [CChar](repeating: 0, count: 1024)
        _ = locus_h5_error_stack(&buffer, buffer.count)
        return condenseSystemError(decodeCString(buffer))
    }

    /// A failed read or write of the file itself (full disk, I/O error) is reported by the sec2
    /// driver as a long record with the errno buried inside; users need only the system's reason.
    static func condenseSystemError(_ stack: String) -> String {
        guard let e = stack.firstRange(of: "errno = "), let m = stack[e.upperBound...].firstRange(of: "error message = '"),
              let end = stack[m.upperBound...].firstIndex(of: "'") else { return stack }
        let errno = stack[e.upperBound...].prefix { $0.isNumber }
        return "\(stack[m.upperBound..<end]) (errno \(errno))"
    }

    static func error(_ operation: String, file: String?, object: String?) -> HDF5Error {
        HDF5Error(file: file, object: object, operation: operation, stack: takeErrorStack())
    }

    /// Checks an `hid_t` result.
    @discardableResult
    static func check(_ id: hid_t, _ operation: String, file: String? = nil, object: String? = nil) throws -> hid_t {
        if id < 0 { throw error(operation, file: file, object: object) }
        return id
    }

    /// Checks an `herr_t` (or any signed status) result.
    static func check<T: BinaryInteger>(status: T, _ operation: String, file: String? = nil, object: String? = nil) throws {
        if status < 0 { throw error(operation, file: file, object: object) }
    }
}

/// Decodes a NUL-terminated C buffer as UTF-8 (invalid bytes become U+FFFD).
func decodeCString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
