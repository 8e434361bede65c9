import Foundation
import LocusFormat
import LocusEngine
import LocusRender

/// A request whose settings do not fit together or do not fit the files they name — e.g. three
/// heads named for two task vectors. `setting` is the request's field (`heads`, `grid`, …); a
/// front end says which of its options that is (the command line maps it to a flag). Input files
/// that are wrong are `LocusError`s instead, naming the file and the object.
public struct RequestError: Error, Sendable, CustomStringConvertible {
    public var setting: String
    public var message: String
    public init(_ setting: String, _ message: String) { self.setting = setting; self.message = message }
    public var description: String { "\(setting): \(message)" }
}

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

/// A problem with an input file that a setting of the request would resolve: the file, object and
/// what was expected (`error`), and which setting to change (`remedy`). A front end turns the
/// remedy into its own words (the command line: the flag to give or leave out).
public struct RemediableError: Error, Sendable, CustomStringConvertible {
    public enum Remedy: Sendable, Equatable {
        /// Turn `setting` on to `purpose` (e.g. addHead, "create it").
        case use(setting: String, purpose: String)
        /// Turn `setting` off.
        case leaveOut(setting: String)
        /// Say which one with `setting` (e.g. heads).
        case name(setting: String)
    }
    public var error: LocusError
    public var remedy: Remedy
    public init(_ error: LocusError, _ remedy: Remedy) { self.error = error; self.remedy = remedy }
    public var description: String { error.description }
}
