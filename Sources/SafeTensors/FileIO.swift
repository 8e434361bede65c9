#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// Thin loops around the POSIX calls. read/write may transfer fewer bytes than asked (Linux caps
// one call at 0x7FFFF000 bytes; signals interrupt them), so every caller goes through these.

public enum FileIO {
    public enum ReadOutcome: Equatable {
        case complete
        /// End of file after `bytesRead` of the requested bytes: the file is shorter than expected.
        case endOfFile(bytesRead: Int)
        case failed(errno: Int32)
    }

    /// Fills `buffer` from `fd` starting at absolute `offset`, retrying on EINTR and short reads.
    /// `pread` leaves the descriptor's file position alone, so concurrent readers are safe.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> ReadOutcome {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return .complete }
        var done = 0
        while done < buffer.count {
            let (position, overflow) = offset.addingReportingOverflow(done)
            if overflow { return .failed(errno: EOVERFLOW) }
            let result = pread(fd, base + done, buffer.count - done, off_t(position))
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                return .failed(errno: code)
            }
            if result == 0 { return .endOfFile(bytesRead: done) }
            done += result
        }
        return .complete
    }

    /// Writes all of `bytes` to `fd` at its current position, retrying on EINTR and short writes.
    /// Returns nil on success or the errno of the failing call.
    static func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return nil }
        var done = 0
        while done < bytes.count {
            let result = write(fd, base + done, bytes.count - done)
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                return code
            }
            // write(2) returning 0 for a non-empty regular-file write means no progress is
            // possible; report it rather than spin.
            if result == 0 { return EIO }
            done += result
        }
        return nil
    }
}
