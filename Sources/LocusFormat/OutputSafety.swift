import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Names what kind of file a `st_mode` describes, for error messages.
enum FileKind {
    static func describe(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFREG: "a regular file"
        case S_IFDIR: "a directory"
        case S_IFIFO: "a FIFO (named pipe)"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        case S_IFLNK: "a symbolic link"
        default: "not a regular file"
        }
    }
}

/// A file's identity on this machine: device and inode, after following symbolic links. Two
/// paths with the same identity are the same file, whatever links and hard links lie between.
public struct FileIdentity: Hashable, Sendable {
    let device: UInt64
    let inode: UInt64

    /// nil when nothing exists at `path`.
    public init?(path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino)
    }
}

/// Refuses a command's outputs that would destroy one of its inputs (spec/FORMAT.md §7):
/// an output that is the same file as an input — through a symbolic link, a hard link or another
/// spelling of the path — or two outputs that are the same file.
public enum OutputSafety {
    /// One file a command reads (`role` names it in errors: "base", "task vector 2", …).
    public struct Input: Sendable {
        public var role: String, path: String
        public init(_ role: String, _ path: String) { self.role = role; self.path = path }
    }
    /// One file a command writes; `rewritesInput` names the input it may replace on purpose
    /// (`train BASE -o BASE` rewrites its checkpoint in place, atomically).
    public struct Output: Sendable {
        public var role: String, path: String, rewritesInput: String?
        public init(_ role: String, _ path: String, rewritesInput: String? = nil) {
            self.role = role; self.path = path; self.rewritesInput = rewritesInput
        }
    }

    /// Throws before anything is written if an output would overwrite an input or another output.
    public static func check(outputs: [Output], inputs: [Input]) throws {
        let known = inputs.compactMap { input in FileIdentity(path: input.path).map { (input, $0) } }
        var claimed: [(Output, String)] = []
        for output in outputs {
            if let id = FileIdentity(path: output.path) {
                for (input, inputID) in known where inputID == id && output.rewritesInput != input.role {
                    throw LocusError(file: output.path, "the \(output.role) is the same file as the \(input.role) '\(input.path)'; writing it would destroy an input — choose another output path")
                }
            }
            let resolved = AtomicOutput.canonicalTarget(output.path)
            if let (other, _) = claimed.first(where: { $0.1 == resolved }) {
                throw LocusError(file: output.path, "the \(output.role) and the \(other.role) ('\(other.path)') are the same file; give them different paths")
            }
            claimed.append((output, resolved))
        }
    }
}

/// Temporary files (and folders) of writers that died without cleaning up (SIGKILL, power loss) are named
/// `.NAME.locus-tmp-HOST-PID-RANDOM`; the next writer into the same directory removes those of
/// its own host whose process no longer exists.
enum StaleTemporaries {
    static let marker = ".locus-tmp-"

    static var host: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The host is one field of the name: keep it to characters that cannot be confused with the separators.
        let safe = name.map { $0.isLetter || $0.isNumber || $0 == "." ? $0 : "_" }
        return safe.isEmpty ? "localhost" : String(safe)
    }

    static func name(base: String) -> String {
        ".\(base)\(marker)\(host)-\(getpid())-\(String(UInt64.random(in: 0...UInt64.max), radix: 16))"
    }

    /// The (host, pid) a temporary name records, or nil if `name` is not one of ours.
    static func owner(of name: String) -> (host: String, pid: pid_t)? {
        guard name.hasPrefix("."), let range = name.firstRange(of: marker) else { return nil }
        let fields = name[range.upperBound...].split(separator: "-", omittingEmptySubsequences: false)
        guard fields.count == 3, let pid = pid_t(fields[1]), pid > 0, UInt64(fields[2], radix: 16) != nil else { return nil }
        return (String(fields[0]), pid)
    }

    /// Removes the stale temporaries in `directory`; never those of a living process or another host.
    static func removeStale(in directory: String) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        let me = host
        var stale: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let (h, pid) = owner(of: name), h == me, pid != getpid() else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH { stale.append(name) }
        }
        for name in stale {
            let path = (directory == "/" ? "" : directory) + "/" + name
            // A folder output's temporary is a directory (AtomicFolder): remove it with its files.
            if unlink(path) != 0 && errno == EISDIR { try? FileManager.default.removeItem(atPath: path) }
        }
    }
}
