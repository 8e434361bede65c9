#if canImport(Glibc)
import Glibc
#endif

/// Writes go to a hidden temporary file beside the target; `commit()` fsyncs it, renames it over
/// the target and fsyncs the directory. Until then the target is untouched, and a failed or
/// abandoned write removes the temporary file. A crash can leave only the temporary file, never a
/// half-written target.
public final class AtomicOutput {
    public let target: String
    public let temporaryPath: String
    private var finished = false

    public init(target: String) throws {
        self.target = target
        var st = stat()
        if stat(target, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            throw LocusError(file: target, "is a directory, expected a file path for the output")
        }
        let (dir, base) = AtomicOutput.split(target)
        var dst = stat()
        guard stat(dir, &dst) == 0, (dst.st_mode & S_IFMT) == S_IFDIR else {
            throw LocusError(file: target, "output directory '\(dir)' does not exist")
        }
        guard access(dir, W_OK) == 0 else { throw LocusError(file: target, "output directory '\(dir)' is not writable") }
        let tag = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        temporaryPath = (dir == "." && !target.hasPrefix("./") ? "" : dir + "/") + ".\(base).locus-tmp-\(getpid())-\(tag)"
        registration = InterruptCleanup.register(temporaryPath)
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
        let synced = fsync(fd)
        close(fd)
        guard synced == 0 else { abandon(); throw LocusError(file: target, "fsync failed: \(String(cString: strerror(errno)))") }
        guard rename(temporaryPath, target) == 0 else {
            let reason = String(cString: strerror(errno))
            abandon()
            throw LocusError(file: target, "cannot move the finished output into place: \(reason)")
        }
        finished = true
        InterruptCleanup.unregister(registration)
        let dfd = open(AtomicOutput.split(target).dir, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
    }

    /// Removes the temporary file; the target stays as it was.
    public func abandon() {
        finished = true
        unlink(temporaryPath)
        InterruptCleanup.unregister(registration)
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
