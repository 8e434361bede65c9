import ArgumentParser
import LocusFormat

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check files against every rule of spec/FORMAT.md.",
        discussion: """
        Reads all data: recomputes the checkpoint fingerprint and every stored summary, checks index order,
        padding bits, value ranges, filters and byte order. Prints one line per violation as
        '<file>: <object>: <message>' ('warning: ' first for SHOULD rules). Exit status 1 if any file has an error.
        """)

    @Argument(help: "Files to check.") var files: [String]
    @Flag(help: "Print findings as JSON.") var json = false
    @Flag(help: "Do not print warnings.") var noWarnings = false

    func run() throws {
        var all: [Finding] = []
        for f in files {
            let findings = Validator.validate(f)
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

import Foundation
func jsonText<T: Encodable>(_ v: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try e.encode(v), as: UTF8.self)
}
