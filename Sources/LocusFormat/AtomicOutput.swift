#if canImport(Glibc)
import Glibc
#endif

/// Writes go to a hidden temporary file beside the target; `commit()` fsyncs it, renames it over
/// the target and fsyncs the directory. Until then the target is untouched, and a failed or
/// abandoned write removes the temporary file. A crash can leave only the temporary file, never a
/// half-written target — and the next writer into that directory removes it (`StaleTemporaries`).
///
/// The rules for existing targets (spec/FORMAT.md §7): a symbolic link is followed and its final
/// target is replaced atomically (the link stays a link); a replaced file keeps its permission bits,
/// owner and group; anything but a regular file (directory, FIFO, device) is refused.
public final class AtomicOutput {
    public let target: String
    /// The file that is actually replaced: `target` with symbolic links followed.
    public let resolvedTarget: String
    public let temporaryPath: String
    private var finished = false

    public init(target: String) throws {
        self.target = target
        resolvedTarget = AtomicOutput.resolvedTarget(target)
        var st = stat()
        if stat(resolvedTarget, &st) == 0, (st.st_mode & S_IFMT) != S_IFREG {
            throw LocusError(file: target, "is \(FileKind.describe(st.st_mode)), expected a regular file or a new path for the output")
        }
        let (dir, base) = AtomicOutput.split(resolvedTarget)
        var dst = stat()
        guard stat(dir, &dst) == 0, (dst.st_mode & S_IFMT) == S_IFDIR else {
            throw LocusError(file: target, "output directory '\(dir)' does not exist")
        }
        guard access(dir, W_OK) == 0 else { throw LocusError(file: target, "output directory '\(dir)' is not writable") }
        StaleTemporaries.removeStale(in: dir)
        temporaryPath = (dir == "." && !resolvedTarget.hasPrefix("./") ? "" : dir + "/") + StaleTemporaries.name(base: base)
        registration = InterruptCleanup.register(temporaryPath)
    }

    /// The resolved target with its directory spelled canonically (no `.`, `..` or links), so
    /// that two spellings of one output path compare equal.
    static func canonicalTarget(_ path: String) -> String {
        let resolved = resolvedTarget(path)
        let (dir, base) = split(resolved)
        guard let real = realpath(dir, nil) else { return resolved }
        defer { free(real) }
        let canonicalDir = String(cString: real)
        return (canonicalDir == "/" ? "" : canonicalDir) + "/" + base
    }

    /// `path` with every symbolic link of its last component followed (at most 40, as the kernel
    /// does); a dangling link resolves to the path it names, which the output then creates.
    static func resolvedTarget(_ path: String) -> String {
        var current = path
        for _ in 0..<40 {
            var st = stat()
            guard lstat(current, &st) == 0, (st.st_mode & S_IFMT) == S_IFLNK else { return current }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(current, &buffer, buffer.count - 1)
            guard n > 0 else { return current }
            let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let dir = split(current).dir
            current = link.hasPrefix("/") || (dir == "." && !current.hasPrefix("./")) ? link : dir + "/" + link
        }
        return current
    }

    deinit { if !finished { abandon() } }

    private var registration: Int?

    static func split(_ path: String) -> (dir: String, base: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, String(path[path.index(after: slash)...]))
    }

    /// Makes the temporary file the target. Call only after every handle on it is closed.
    public func commit() throws {
        guard !finished else { throw LocusError(file: target, "the output was already abandoned or committed (an earlier step failed)") }
        let fd = open(temporaryPath, O_RDONLY)
        guard fd >= 0 else { throw LocusError(file: target, "cannot reopen the temporary output: \(String(cString: strerror(errno)))") }
        // A replaced file keeps its permission bits, owner and group: rewriting a private
        // checkpoint must not make it world-readable. (chown needs privileges when the owner
        // differs; without them the file keeps the writer's owner, as `cp` does.)
        var old = stat()
        if stat(resolvedTarget, &old) == 0 {
            _ = fchown(fd, old.st_uid, old.st_gid)
            guard fchmod(fd, old.st_mode & 0o7777) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd); abandon()
                throw LocusError(file: target, "cannot give the new file the mode of the old one: \(reason)")
            }
        }
        let synced = fsync(fd)
        let syncError = errno
        close(fd)
        guard synced == 0 else { abandon(); throw LocusError(file: target, "fsync failed: \(String(cString: strerror(syncError)))") }
        if OutputGroup.defer(self) { return }
        try publish()
    }

    /// The rename that makes a prepared (closed, synced) temporary file the target.
    fileprivate func publish() throws {
        guard rename(temporaryPath, resolvedTarget) == 0 else {
            let reason = String(cString: strerror(errno))
            abandon()
            throw LocusError(file: target, "cannot move the finished output into place: \(reason)")
        }
        finished = true
        InterruptCleanup.unregister(registration)
        let dfd = open(AtomicOutput.split(resolvedTarget).dir, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Removes the temporary file; the target stays as it was.
    public func abandon() {
        finished = true
        unlink(temporaryPath)
        InterruptCleanup.unregister(registration)
    }
}

/// Several outputs of one command published all together or not at all (`finetune -o M
/// --task-vector T`, `merge --tall-dir`): inside `publishTogether`, a committed output is closed and
/// synced but stays a temporary file; when the body returns, every one is renamed into place, and
/// when it throws (or the process is interrupted), every one is removed.
public enum OutputGroup {
    nonisolated(unsafe) private static var pending: [AtomicOutput]? = nil
    private static let lock = PthreadMutex()

    public static func publishTogether<R>(_ body: () throws -> R) throws -> R {
        lock.withLock { pending = [] }
        let result: R
        do { result = try body() } catch {
            let outputs = lock.withLock { () -> [AtomicOutput] in defer { pending = nil }; return pending ?? [] }
            for o in outputs { o.abandon() }
            throw error
        }
        let outputs = lock.withLock { () -> [AtomicOutput] in defer { pending = nil }; return pending ?? [] }
        for (i, o) in outputs.enumerated() {
            do { try o.publish() } catch {
                for rest in outputs[(i + 1)...] { rest.abandon() }
                throw error
            }
        }
        return result
    }

    /// Where a committed but not yet published output can be read meanwhile (its temporary file).
    public static func pendingPath(for target: String) -> String? {
        lock.withLock { pending?.last { $0.target == target }?.temporaryPath }
    }

    /// Holds `output` for the group's end; false when no group is open.
    fileprivate static func `defer`(_ output: AtomicOutput) -> Bool {
        lock.withLock {
            guard pending != nil else { return false }
            pending!.append(output)
            return true
        }
    }
}

/// Runs `body` with a temporary path, then commits it to `target`; on any error nothing is left.
public func writeAtomically<R>(to target: String, _ body: (String) throws -> R) throws -> R {
    let out = try AtomicOutput(target: target)
    do {
        let r = try body(out.temporaryPath)
        try out.commit()
        return r
    } catch {
        out.abandon()
        throw error
    }
}

/// Removes in-progress temporary files when the process is interrupted (SIGINT, SIGTERM,
/// SIGHUP), then dies of the same signal. The handler only calls unlink and raise, which are
/// async-signal-safe; the slots are plain C strings so the handler never touches Swift objects.
enum InterruptCleanup {
    static let slotCount = 256
    nonisolated(unsafe) static var slots = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: slotCount)
    nonisolated(unsafe) static var installed = false
    static let lock = PthreadMutex()

    static func register(_ path: String) -> Int? {
        lock.withLock {
            if !installed {
                slots.initialize(repeating: nil, count: slotCount)
                for sig in [SIGINT, SIGTERM, SIGHUP] { signal(sig, handler) }
                installed = true
            }
            guard let i = (0..<slotCount).first(where: { slots[$0] == nil }) else { return nil }
            slots[i] = strdup(path)
            return i
        }
    }

    static func unregister(_ slot: Int?) {
        guard let slot else { return }
        lock.withLock {
            let p = slots[slot]
            slots[slot] = nil
            free(p)
        }
    }

    static let handler: @convention(c) (Int32) -> Void = { sig in
        // Files first, then folders (an output folder's temporary directory, now empty).
        for i in 0..<InterruptCleanup.slotCount { if let p = InterruptCleanup.slots[i] { unlink(p) } }
        for i in 0..<InterruptCleanup.slotCount { if let p = InterruptCleanup.slots[i] { rmdir(p) } }
        signal(sig, SIG_DFL)
        raise(sig)
    }
}

/// A plain pthread mutex.
final class PthreadMutex: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }
}
