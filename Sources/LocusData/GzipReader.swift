import CZlib
import LocusFormat
#if canImport(Glibc)
import Glibc
#endif

/// Reads a whole file into memory, inflating it first when it is gzip-compressed.
///
/// Whether a file is compressed is decided by its first two bytes (the gzip magic `1f 8b`), never by
/// its name, so `data.csv` holding gzip bytes and `data.gz` holding plain text both read correctly.
/// Concatenated gzip members (what `cat a.gz b.gz` makes) are read one after another, like `zcat`.
/// The decompressed size is capped (`limit`, default 2 GiB): a stream that would inflate beyond it
/// is refused before the memory is allocated. Corrupt, truncated or trailing-garbage streams are
/// errors naming the file and the compressed byte offset.
public enum GzipReader {
    /// Default cap on the bytes a file may hold once decompressed: 2 GiB.
    public static let defaultLimit = 2 << 30

    /// True when `bytes` starts with the gzip magic `1f 8b`.
    public static func isGzip<C: Collection>(_ bytes: C) -> Bool where C.Element == UInt8 {
        var it = bytes.makeIterator()
        return it.next() == 0x1f && it.next() == 0x8b
    }

    /// The contents of `path`, decompressed when it is a gzip file.
    public static func read(_ path: String, limit: Int = defaultLimit) throws -> [UInt8] {
        let raw = try readFile(path, limit: limit)
        return isGzip(raw) ? try decompress(raw, file: path, limit: limit) : raw
    }

    /// The bytes of a file as stored (no decompression). Refuses directories, unreadable files and
    /// files larger than `limit`.
    public static func readFile(_ path: String, limit: Int = defaultLimit) throws -> [UInt8] {
        let fd = open(path, O_RDONLY | O_NONBLOCK)   // a FIFO must not block the open; it is refused below
        guard fd >= 0 else { throw LocusError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw LocusError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw LocusError(file: path, "is not a regular file") }
        let size = Int(st.st_size)
        guard size <= limit else {
            throw LocusError(file: path, "is \(size) bytes, more than the limit of \(limit) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var got = 0
        try bytes.withUnsafeMutableBytes { buf in
            while got < size {
                let n = Glibc.read(fd, buf.baseAddress! + got, min(size - got, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw LocusError(file: path, "read failed after \(got) bytes: \(String(cString: strerror(errno)))")
                }
                if n == 0 { break }
                got += n
            }
        }
        if got < size { bytes.removeLast(size - got) }   // the file shrank while we read it
        return bytes
    }

    /// Inflates gzip data (one or more members). `file` names the source in errors.
    public static func decompress(_ data: [UInt8], file: String, limit: Int = defaultLimit) throws -> [UInt8] {
        guard isGzip(data) else { throw LocusError(file: file, object: "gzip stream", "does not start with the gzip magic 1f 8b") }
        precondition(limit >= 0, "negative limit")
        // The trailer's ISIZE (size mod 2^32 of the last member) is only a hint for the first
        // allocation, trusted when it is plausible: deflate cannot expand more than ~1032:1.
        var capacity = 1 << 16
        if data.count >= 18 {
            let n = data.count
            let le = Int(data[n - 4]) | Int(data[n - 3]) << 8 | Int(data[n - 2]) << 16 | Int(data[n - 1]) << 24
            if le <= limit, le <= data.count.multipliedReportingOverflow(by: 1032).partialValue { capacity = max(capacity, le + 1) }
        }
        capacity = min(capacity, limit + 1)

        var strm = z_stream()
        guard locus_inflate_init_gzip(&strm) == Z_OK else {
            throw LocusError(file: file, object: "gzip stream", "zlib could not be initialised (out of memory?)")
        }
        defer { inflateEnd(&strm) }

        var out = [UInt8](repeating: 0, count: capacity)
        var produced = 0
        var fed = 0                     // input bytes handed to zlib so far
        let chunk = 1 << 30             // avail_in / avail_out are 32-bit
        func consumed() -> Int { fed - Int(strm.avail_in) }
        func zmsg() -> String { strm.msg.map { String(cString: $0) } ?? "unknown error" }

        return try data.withUnsafeBufferPointer { input -> [UInt8] in
            let inBase = UnsafeMutablePointer(mutating: input.baseAddress!)
            while true {
                if strm.avail_in == 0 && fed < input.count {
                    let n = min(chunk, input.count - fed)
                    strm.next_in = inBase + fed
                    strm.avail_in = UInt32(n)
                    fed += n
                }
                if produced == out.count {
                    guard out.count <= limit else {
                        throw LocusError(file: file, object: "gzip stream",
                                         "decompresses to more than the limit of \(limit) bytes")
                    }
                    let grown = min(limit + 1, max(out.count * 2, 1 << 16))
                    out.append(contentsOf: repeatElement(0, count: grown - out.count))
                }
                let room = min(chunk, out.count - produced)
                let rc = out.withUnsafeMutableBufferPointer { o -> Int32 in
                    strm.next_out = o.baseAddress! + produced
                    strm.avail_out = UInt32(room)
                    return inflate(&strm, Z_NO_FLUSH)
                }
                produced += room - Int(strm.avail_out)
                switch rc {
                case Z_STREAM_END:
                    let at = consumed()
                    if at == input.count {
                        if produced > limit {
                            throw LocusError(file: file, object: "gzip stream", "decompresses to more than the limit of \(limit) bytes")
                        }
                        out.removeLast(out.count - produced)
                        return out
                    }
                    // Another member follows, or garbage.
                    guard input.count - at >= 2, input[at] == 0x1f, input[at + 1] == 0x8b else {
                        throw LocusError(file: file, object: "gzip stream",
                                         "has \(input.count - at) unexpected trailing bytes after the end of the compressed data at byte \(at)")
                    }
                    guard inflateReset(&strm) == Z_OK else { throw LocusError(file: file, object: "gzip stream", "zlib reset failed") }
                case Z_OK, Z_BUF_ERROR:
                    if strm.avail_in == 0 && fed == input.count && strm.avail_out > 0 {
                        throw LocusError(file: file, object: "gzip stream",
                                         "is truncated: the data ends after \(input.count) compressed bytes (\(produced) decompressed) before the end-of-stream marker")
                    }
                case Z_DATA_ERROR:
                    throw LocusError(file: file, object: "gzip stream",
                                     "is corrupt near compressed byte \(consumed()): \(zmsg())")
                case Z_MEM_ERROR:
                    throw LocusError(file: file, object: "gzip stream", "zlib ran out of memory")
                case Z_NEED_DICT:
                    throw LocusError(file: file, object: "gzip stream", "needs a preset dictionary, which gzip files never use")
                default:
                    throw LocusError(file: file, object: "gzip stream", "zlib error \(rc): \(zmsg())")
                }
            }
        }
    }
}
