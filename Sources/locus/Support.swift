import ArgumentParser
import LocusFormat
import LocusEngine
#if canImport(Glibc)
import Glibc
#endif

/// Comma-separated integers, e.g. `1,28,28`.
struct IntList: ExpressibleByArgument, CustomStringConvertible {
    var values: [Int]
    init?(argument: String) {
        let parts = argument.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parts.isEmpty, parts.allSatisfy({ $0 != nil && $0! > 0 }) else { return nil }
        values = parts.map { $0! }
    }
    init(_ v: [Int]) { values = v }
    var description: String { values.map(String.init).joined(separator: ",") }
}

extension OptimizerKind: ExpressibleByArgument {}
extension LearningRateSchedule.Shape: ExpressibleByArgument {}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal and not --quiet.
struct ProgressBar {
    let enabled: Bool
    init(quiet: Bool) { enabled = !quiet && isatty(2) != 0 }

    func update(_ label: String, fraction: Double, detail: String) {
        guard enabled else { return }
        let width = 30, filled = Int(fraction * Double(width))
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write("\r\(label) \(bar) \(Int(fraction * 100))% \(detail)\u{1B}[K")
    }
    func finish() { if enabled { FileHandle.standardError.write("\r\u{1B}[K") } }
}

func provenance(inputs: [Provenance.Input], parameters: [String: JSONValue]) -> Provenance {
    Provenance(command: ["locus"] + Array(CommandLine.arguments.dropFirst()), inputs: inputs, parameters: parameters)
}

/// Engine errors become LocusErrors about the file that caused them.
func engine<R>(file: String, _ body: () throws -> R) throws -> R {
    do { return try body() } catch let e as EngineError { throw LocusError(file: file, e.description) }
}

/// A one-line account of a JSON decoding error.
func describe(_ error: any Error) -> String {
    switch error {
    case DecodingError.keyNotFound(let key, let ctx): return "missing key '\(key.stringValue)' at \(path(ctx.codingPath))"
    case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx): return "\(ctx.debugDescription) at \(path(ctx.codingPath))"
    case DecodingError.dataCorrupted(let ctx): return "invalid JSON (\(ctx.debugDescription)) at \(path(ctx.codingPath))"
    default: return "\(error)"
    }
}
private func path(_ keys: [any CodingKey]) -> String { keys.isEmpty ? "the top level" : keys.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".") }

func fmt(_ x: Double, _ digits: Int = 4) -> String {
    let p = pow(10.0, Double(digits))
    return String((x * p).rounded() / p)
}
