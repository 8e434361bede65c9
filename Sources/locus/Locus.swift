import ArgumentParser
import LocusFormat
#if canImport(Glibc)
import Glibc
#endif

@main
struct Locus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "locus",
        abstract: "Task-localized sparse model editing: checkpoints, Fisher scores, masks and sparse task vectors in HDF5.",
        discussion: """
        Every artifact is one HDF5 file following spec/FORMAT.md (readable by h5py, h5dump and h5ls without Locus). \
        Outputs are written atomically: a failed command leaves no file behind and never touches an existing one.
        """,
        version: LocusSpec.producer,
        subcommands: [InspectCommand.self, ValidateCommand.self, ConvertCommand.self, DataCommand.self,
                      InitCommand.self, TrainCommand.self, EvalCommand.self, ScoreCommand.self, MaskCommand.self,
                      MaskSetCommand.self, FinetuneCommand.self, DiffCommand.self, ApplyCommand.self, MergeCommand.self,
                      NegateCommand.self, CompareCommand.self])

    static func main() {
        ProcessSetup.prepare()
        capHelpWidth()
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            Glibc.exit(ErrorReport.report(error))
        }
    }
}

/// Help is laid out for at most 80 columns, whatever the terminal (or COLUMNS) says: ArgumentParser
/// would otherwise run option descriptions to the full width and re-wrap the texts. It takes the
/// width from COLUMNS, else from the terminal; a narrower one is kept.
func capHelpWidth(_ limit: Int = 80) {
    var width = getenv("COLUMNS").flatMap { Int(String(cString: $0)) }
    if width == nil {
        var w = winsize()
        if ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &w) == 0, w.ws_col > 0 { width = Int(w.ws_col) }
    }
    if let width, width > limit { setenv("COLUMNS", "\(limit)", 1) }
}

struct StandardStream {
    let fd: Int32
    static let error = StandardStream(fd: 2)
    static let output = StandardStream(fd: 1)
    func write(_ s: String) {
        var bytes = Array(s.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeMutableBytes { Glibc.write(fd, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { return }
            off += n
        }
    }
}
