#if canImport(Glibc)
import Glibc
#endif

/// A read-only memory map of a whole file. Dense Locus tensors are contiguous and aligned
/// precisely so that they can be used from such a map without copying; safetensors data too.
final class MappedFile: @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    private let base: UnsafeMutableRawPointer?

    /// Maps the file open on `descriptor` (which stays the caller's). Always map the descriptor
    /// the metadata was read through: opening the path a second time could reach another file if
    /// the path was replaced in between, and data would not match metadata.
    /// nil if the file cannot be mapped (then callers read through HDF5 / pread instead).
    init?(descriptor fd: Int32) {
        guard fd >= 0 else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_size > 0 else { return nil }
        let size = Int(st.st_size)
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else { return nil }
        _ = madvise(p, size, MADV_SEQUENTIAL)
        base = p
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    deinit { if let base { munmap(base, bytes.count) } }

    /// Drops the pages wholly inside `slice` from this process's resident set once they have been
    /// consumed (they are clean file pages: the next access reads them again), so streaming a
    /// multi-GB file through the map keeps resident memory bounded.
    func release(_ slice: UnsafeRawBufferPointer) {
        guard let start = slice.baseAddress, slice.count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lo = (Int(bitPattern: start) + page - 1) / page * page
        let hi = (Int(bitPattern: start) + slice.count) / page * page
        guard hi > lo, let p = UnsafeMutableRawPointer(bitPattern: lo) else { return }
        _ = madvise(p, hi - lo, MADV_DONTNEED)
    }

    /// The bytes `[offset, offset + count)`, or nil if they are not all inside the file.
    func slice(offset: Int, count: Int) -> UnsafeRawBufferPointer? {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else { return nil }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
}
