#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Starts writing a file's dirty pages to disk while the writer goes on producing more, so that
/// the fsync before the rename into place waits only for the last pages
/// instead of the whole file (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`: asynchronous, no
/// durability promise; the fsync still gives that). A no-op where the call does not exist. Used by
/// this module's writer and by the Locus writers (LocusFormat).
public enum WriteBehind {
    private typealias SyncFileRange = @convention(c) (Int32, Int64, Int64, UInt32) -> Int32
    private static let syncFileRange: SyncFileRange? = {
        guard let symbol = dlsym(nil, "sync_file_range") else { return nil }
        return unsafeBitCast(symbol, to: SyncFileRange.self)
    }()
    /// SYNC_FILE_RANGE_WRITE of <fcntl.h>.
    private static let write: UInt32 = 2
    /// Writes smaller than this are left to the final fsync.
    public static let minimumBytes = 1 << 20

    /// Starts writeback of every dirty page of the file open on `fd` (errors are ignored: the
    /// fsync at commit reports them).
    public static func start(_ fd: Int32) {
        _ = syncFileRange?(fd, 0, 0, write)
    }
}
