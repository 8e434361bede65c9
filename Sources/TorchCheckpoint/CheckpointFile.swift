#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import OneLineText

/// An open regular file read only with `pread`, so the descriptor has no shared position and
/// nothing is ever loaded whole. Every read is checked against the size seen when it was opened.
final class CheckpointFile: @unchecked Sendable {
    let path: String
    let byteCount: Int
    private let descriptor: Int32

    init(path: String) throws(TorchCheckpointError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw .system(path: path, message: "cannot open for reading: \(systemErrorText(code))", errno: code)
        }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let code = errno
            close(fd)
            throw .system(path: path, message: "cannot stat: \(systemErrorText(code))", errno: code)
        }
        // Every bound below is checked against the size, which pipes and devices do not have.
        guard status.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw .unsupportedFormat(path: path, message: "not a regular file")
        }
        self.path = path
        self.descriptor = fd
        self.byteCount = Int(status.st_size)
    }

    deinit { close(descriptor) }

    /// Whether `[offset, offset + count)` lies inside the file, without overflow.
    func contains(offset: Int, count: Int) -> Bool {
        guard offset >= 0, count >= 0, offset <= byteCount else { return false }
        return count <= byteCount - offset
    }

    /// Fills `buffer` from absolute `offset`; `what` names the object for the error message.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int, what: () -> String) throws(TorchCheckpointError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        guard contains(offset: offset, count: buffer.count) else {
            throw .archive(
                path: path, member: nil,
                message: "\(what()): bytes [\(offset), +\(buffer.count)) lie outside the file of \(byteCount) bytes")
        }
        var done = 0
        while done < buffer.count {
            let result = pread(descriptor, base + done, buffer.count - done, off_t(offset + done))
            if result < 0 {
                let code = errno
                if code == EINTR { continue }
                throw .system(
                    path: path, message: "\(what()): read of \(buffer.count) bytes at offset \(offset) failed: \(systemErrorText(code))",
                    errno: code)
            }
            if result == 0 {
                throw .archive(
                    path: path, member: nil,
                    message: "\(what()): the file ended after \(offset + done) bytes; it was \(byteCount) bytes when opened and has since shrunk")
            }
            done += result
        }
    }

    func readBytes(count: Int, at offset: Int, what: () -> String) throws(TorchCheckpointError) -> [UInt8] {
        guard contains(offset: offset, count: count) else {
            throw .archive(
                path: path, member: nil,
                message: "\(what()): bytes [\(offset), +\(count)) lie outside the file of \(byteCount) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: TorchCheckpointError?
        bytes.withUnsafeMutableBytes { buffer in
            do throws(TorchCheckpointError) { try read(into: buffer, at: offset, what: what) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }
}

/// Little-endian integers from a byte array; callers check bounds first.
extension Array where Element == UInt8 {
    func u16(_ at: Int) -> UInt16 { UInt16(self[at]) | UInt16(self[at + 1]) << 8 }
    func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(self[at + $1]) << (8 * UInt32($1)) } }
    func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(self[at + $1]) << (8 * UInt64($1)) } }
}
