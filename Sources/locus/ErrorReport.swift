import ArgumentParser
import LocusData
import LocusFormat
import LocusWorkflows
#if canImport(Glibc)
import Glibc
#endif

/// A command-line option misused in a way only `run()` can see (it depends on the other inputs):
/// reported like ArgumentParser's validation errors, as a usage error. `context` is the file the
/// command was to write or read, when the message reads better naming it.
struct FlagError: Error, CustomStringConvertible {
    var flag: String
    var message: String
    var context: String?
    init(_ flag: String, _ message: String, context: String? = nil) { self.flag = flag; self.message = message; self.context = context }
    var description: String { [context, flag].compactMap { $0 }.joined(separator: ": ") + ": " + message }
}

/// The one place a failure becomes output and an exit status (sysexits.h):
///
///   0   success (also --help, --version)
///   64  EX_USAGE: the command line is wrong — an unknown option, a value that does not parse or
///       is out of range, options that do not go together; nothing was read or written
///   1   the command ran and failed: an input file that is missing, damaged or does not fit
///       (naming the file and the object inside it), an output that cannot be written, a
///       `validate` or `inspect --verify` that found errors
///
/// Every failure is one line on stderr, `locus: error: …`.
enum ErrorReport {
    static let usage: Int32 = 64
    static let failure: Int32 = 1

    /// Prints `error` and returns the exit status.
    static func report(_ error: any Error) -> Int32 {
        switch error {
        case let code as ExitCode:
            return code.rawValue                       // the command printed its own report
        case let e as FlagError:
            return line(e.description, usage)
        case let e as RequestError:
            return line("\(flag(for: e.setting)): \(e.message)", usage)
        case let e as RemediableError:
            let remedy: String
            switch e.remedy {
            case .use(let s, let purpose): remedy = "use \(flag(for: s)) to \(purpose)"
            case .leaveOut(let s): remedy = "leave out \(flag(for: s))"
            case .name(let s): remedy = "name it with \(flag(for: s))"
            }
            return line("\(e.error.description); \(remedy)", failure)
        case let e as SpecificationError:
            return line("\(e.subject == .split ? "--split" : "--transform") \(e)", usage)
        default:
            break
        }
        let code = Locus.exitCode(for: error)
        if code == .success {                          // --help, --version: ArgumentParser prints them
            Locus.exit(withError: error)
        }
        if code == .validationFailure {                // ArgumentParser's parse and validate() errors
            return line(Locus.message(for: error) + hint(), usage)
        }
        return line(LocusError.wrap(error, file: "locus").description, failure)
    }

    private static func line(_ text: String, _ code: Int32) -> Int32 {
        let one = text.split(whereSeparator: \.isNewline).joined(separator: " ")
        StandardStream.error.write("locus: error: \(one)\n")
        return code
    }

    /// Settings of library requests, as the options that set them.
    static let flags = ["heads": "--heads", "addHead": "--add-head", "linearProbe": "--linear-probe", "trainHead": "--train-head",
                        "force": "--force", "datasets": "--eval", "grid": "--alpha-grid", "strategy": "--alpha-mode",
                        "rounds": "--alpha-mode", "budget": "--alpha-mode", "keep": "--keep", "controlHead": "--heads",
                        "exclude": "--exclude", "data": "DATA", "semantics": "--config (add 'semantics: locus')",
                        "valFraction": "--val-fraction", "classNames": "--class-names", "labelColumn": "--label-column",
                        "imageShape": "--image-shape", "clipNorm": "--clip-norm", "shardSize": "--shard-size",
                        "configFrom": "--config-from", "estimator": "--estimator and --samples"]
    static func flag(for setting: String) -> String { flags[setting] ?? "--\(setting)" }

    /// " (see 'locus SUB --help')" for the subcommand the arguments name.
    private static func hint() -> String {
        var path = ["locus"]
        var command: any ParsableCommand.Type = Locus.self
        for arg in CommandLine.arguments.dropFirst() {
            guard let sub = command.configuration.subcommands.first(where: { $0._commandName == arg }) else { break }
            path.append(arg); command = sub
        }
        return " (see '\(path.joined(separator: " ")) --help')"
    }
}
