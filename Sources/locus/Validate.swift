import ArgumentParser
import LocusEngine
import LocusFormat

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check files against every rule of spec/FORMAT.md.",
        discussion: """
        Reads all data: recomputes the checkpoint fingerprint and every stored summary, checks index order,
        padding bits, value ranges, filters and byte order. A checkpoint's /architecture is checked against the
        engine's rules (§2.1: known layers, shapes that chain, unique names) and against /tensors (every parameter
        it implies present with its shape and a float dtype). Prints one line per violation as
        '<file>: <object>: <message>' ('warning: ' first for SHOULD rules). Exit status 1 if any file has an error.
        """)

    @Argument(help: "Files to check.") var files: [String]
    @Flag(help: "Print findings as JSON.") var json = false
    @Flag(help: "Do not print warnings.") var noWarnings = false

    func run() throws {
        var all: [Finding] = []
        for f in files {
            var findings = Validator.validate(f)
            if !findings.contains(where: { $0.severity == .error }) { findings += architectureFindings(f) }
            all += findings
            if !json {
                for x in findings where !(noWarnings && x.severity == .warning) { print(x) }
                if !findings.contains(where: { $0.severity == .error }) { print("\(f): valid") }
            }
        }
        if json {
            struct Out: Encodable { var valid: Bool; var findings: [Finding] }
            print(try jsonText(Out(valid: !all.contains { $0.severity == .error }, findings: all)))
        }
        if all.contains(where: { $0.severity == .error }) { throw ExitCode.failure }
    }
}

/// §2.1 rules that need the engine: the description builds, and /tensors holds what it implies.
func architectureFindings(_ path: String) -> [Finding] {
    func problem(_ object: String, _ message: String) -> Finding { Finding(severity: .error, file: path, object: object, message: message) }
    guard let reader = try? CheckpointReader(path: path), let text = try? reader.architecture() else { return [] }
    let arch: Architecture
    do { arch = try JSONDecoder().decode(Architecture.self, from: Data(text.utf8)) } catch {
        return [problem("/architecture", "is not a model description (spec §2.1): \(describe(error))")]
    }
    let model: Model
    do { model = try Model(arch, seed: 0) } catch { return [problem("/architecture", "\(error)")] }
    var out: [Finding] = []
    for p in model.parameters {
        guard let t = reader.tensor(named: p.name) else { out.append(problem("/tensors", "missing \(p.name) \(p.value.shape), which /architecture implies")); continue }
        if t.shape != p.value.shape { out.append(problem(t.objectPath, "has shape \(t.shape), /architecture implies \(p.value.shape)")) }
        if !t.dtype.isFloatingPoint { out.append(problem(t.objectPath, "is \(t.dtype.rawValue); model parameters must be floating point")) }
    }
    return out
}

import Foundation
func jsonText<T: Encodable>(_ v: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(v), as: UTF8.self)
}
