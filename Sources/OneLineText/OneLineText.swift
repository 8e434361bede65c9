#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Text for one-line error messages, shared by the strict readers (SafeTensors, TorchCheckpoint):
// names read from a file are quoted and escaped so that no file can break a message over lines.

/// `'name'` with backslash, quote and control characters escaped, for embedding user-controlled
/// names in one-line messages.
public func quoted(_ name: String) -> String {
    var result = "'"
    for scalar in name.unicodeScalars {
        switch scalar {
        case "\\": result += "\\\\"
        case "'": result += "\\'"
        default: appendEscapingControl(scalar, to: &result)
        }
    }
    return result + "'"
}

/// Escapes only what would break a single line (control characters and Unicode line/paragraph
/// separators); used on the path and on the already-composed message as a last line of defence.
public func escapingControlCharacters(_ text: String) -> String {
    var result = ""
    for scalar in text.unicodeScalars { appendEscapingControl(scalar, to: &result) }
    return result
}

private func appendEscapingControl(_ scalar: Unicode.Scalar, to result: inout String) {
    switch scalar {
    case "\n": result += "\\n"
    case "\r": result += "\\r"
    case "\t": result += "\\t"
    default:
        let value = scalar.value
        if value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029 {
            result += "\\u{" + String(value, radix: 16, uppercase: true) + "}"
        } else {
            result.unicodeScalars.append(scalar)
        }
    }
}

/// Text of `strerror(code)`, e.g. "No such file or directory".
public func systemErrorText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text) + " (errno \(code))"
}
