import Foundation
import LocusFormat
import LocusEngine
import LocusRender

/// Engine errors become LocusErrors about the file that caused them.
public func engine<R>(file: String, _ body: () throws -> R) throws -> R {
    do { return try body() } catch let e as EngineError { throw LocusError(file: file, e.description) }
}

/// `x` rounded to `digits` decimals, as text (reports and tables): `TextFormat.fixed`.
public func fmt(_ x: Double, _ digits: Int = 4) -> String { TextFormat.fixed(x, digits) }

/// Pretty-printed JSON with sorted keys: what every `--json` report and JSON side file holds.
public func jsonText<T: Encodable>(_ v: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(v), as: UTF8.self)
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename).
public func writeText(_ text: String, to path: String) throws {
    try writeAtomically(to: path) { tmp in
        do { try text.write(toFile: tmp, atomically: false, encoding: .utf8) } catch {
            throw LocusError(file: path, "cannot write: \(error.localizedDescription)")
        }
    }
}

/// A file's name without its folder and without `.h5`: how tables and plots label a task.
public func taskLabel(_ path: String) -> String {
    (path.split(separator: "/").last.map(String.init) ?? path).replacingOccurrences(of: ".h5", with: "")
}

