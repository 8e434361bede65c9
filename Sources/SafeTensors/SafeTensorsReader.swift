#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import OneLineText

/// Reads a safetensors file: validates the whole header at init, then reads tensor bytes on
/// demand with `pread`.
///
/// The reader keeps the file open for its lifetime (closed in `deinit`). All state is immutable
/// and `pread` does not move a shared file position, so one reader may be used from many tasks
/// at once; hence `Sendable`.
public final class SafeTensorsReader: Sendable {
    /// The reference implementation's limit (100 MB); real headers are at most a few MB.
    public static let defaultMaxHeaderBytes = 100_000_000

    public let path: String
    /// The `__metadata__` object, or nil if the header has none.
    public let metadata: [String: String]?
    /// All tensors, ordered by `dataBegin` (file order); zero-sized ties keep header order.
    public let entries: [SafeTensorsEntry]
    /// N, the length of the JSON header including any padding.
    public let headerByteCount: Int
    /// Absolute file offset of the data section: 8 + N.
    public let dataSectionOffset: Int
    /// Size of the data section: file size − 8 − N. Equals the sum of all tensors' byte counts.
    public let dataSectionByteCount: Int
    /// File size when the reader was opened.
    public let fileByteCount: Int

    private let fileDescriptor: Int32
    /// The open descriptor every read goes through (valid while the reader lives); map this one,
    /// not the path, to read the same file the header came from.
    public var descriptor: Int32 { fileDescriptor }
    private let indexByName: [[UInt8]: Int]  // keyed by UTF-8 bytes: names are compared exactly

    /// Opens `path` and reads and fully validates its header. No tensor data is read.
    /// - Parameter maxHeaderBytes: headers longer than this are rejected before being read, so a
    ///   corrupt length prefix cannot make the reader allocate gigabytes.
    public init(path: String, maxHeaderBytes: Int = 100_000_000) throws {
        // O_NONBLOCK: opening a FIFO must not wait for a writer; `load` refuses anything but a
        // regular file, for which the flag changes nothing.
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let code = errno
            throw SafeTensorsError.file(path, "cannot open for reading: \(systemErrorText(code))", errno: code)
        }
        let loaded: Loaded
        do {
            loaded = try Self.load(fd: fd, path: path, maxHeaderBytes: maxHeaderBytes)
        } catch {
            close(fd)
            throw error
        }
        self.path = path
        self.fileDescriptor = fd
        self.metadata = loaded.header.metadata
        self.entries = loaded.header.entries
        self.headerByteCount = loaded.headerByteCount
        self.dataSectionOffset = 8 + loaded.headerByteCount
        self.dataSectionByteCount = loaded.fileByteCount - 8 - loaded.headerByteCount
        self.fileByteCount = loaded.fileByteCount
        var indexByName: [[UInt8]: Int] = [:]
        for (index, entry) in loaded.header.entries.enumerated() { indexByName[Array(entry.name.utf8)] = index }
        self.indexByName = indexByName
    }

    deinit {
        close(fileDescriptor)
    }

    /// The entry for `name`, or nil if the file has no such tensor.
    public func entry(named name: String) -> SafeTensorsEntry? {
        indexByName[Array(name.utf8)].map { entries[$0] }
    }

    /// Reads the tensor's bytes into `buffer`, whose size must be exactly `entry.byteCount`.
    /// Fails (rather than returning partial data) if the file shrank since it was opened.
    public func read(_ entry: SafeTensorsEntry, into buffer: UnsafeMutableRawBufferPointer) throws {
        guard buffer.count == entry.byteCount else {
            throw SafeTensorsError.tensor(
                path, entry.name, "buffer is \(buffer.count) bytes but the tensor needs \(entry.byteCount) bytes")
        }
        try read(entry, fromByte: 0, into: buffer)
    }

    /// Reads `buffer.count` bytes of the tensor starting at byte `start` of its data, so large
    /// tensors can be streamed in blocks.
    public func read(_ entry: SafeTensorsEntry, fromByte start: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkBelongsToFile(entry)
        guard start >= 0, start <= entry.byteCount, buffer.count <= entry.byteCount - start else {
            throw SafeTensorsError.tensor(
                path, entry.name, "byte range [\(start), \(start + buffer.count)) is outside the tensor's \(entry.byteCount) bytes")
        }
        // Cannot overflow: all terms are bounded by the file size seen at init.
        let offset = dataSectionOffset + entry.dataBegin + start
        switch FileIO.readFully(fileDescriptor, into: buffer, at: offset) {
        case .complete:
            return
        case .endOfFile(let bytesRead):
            throw SafeTensorsError.tensor(
                path, entry.name,
                "file ended after \(bytesRead) of \(buffer.count) bytes at file offset \(offset); it was \(fileByteCount) bytes when opened and has since shrunk"
            )
        case .failed(let code):
            throw SafeTensorsError(
                path: path, scope: .tensor, object: entry.name,
                message: "read of \(buffer.count) bytes at file offset \(offset) failed: \(systemErrorText(code))",
                systemErrorCode: code)
        }
    }

    /// The tensor's bytes as a new array.
    public func readBytes(_ entry: SafeTensorsEntry) throws -> [UInt8] {
        // Check before allocating: a foreign entry could claim any size.
        try checkBelongsToFile(entry)
        return try [UInt8](unsafeUninitializedCapacity: entry.byteCount) { buffer, initializedCount in
            try read(entry, into: UnsafeMutableRawBufferPointer(buffer))
            initializedCount = entry.byteCount
        }
    }

    /// The bytes of the tensor called `name`; errors if there is none.
    public func readBytes(named name: String) throws -> [UInt8] {
        guard let entry = entry(named: name) else {
            throw SafeTensorsError.tensor(path, name, "no tensor of this name in the file")
        }
        return try readBytes(entry)
    }

    /// Entries are plain values, so one from another reader (or another file) could be passed
    /// in; only offsets this reader validated may be used to read.
    private func checkBelongsToFile(_ entry: SafeTensorsEntry) throws {
        guard let index = indexByName[Array(entry.name.utf8)], entries[index] == entry else {
            throw SafeTensorsError.tensor(
                path, entry.name, "the entry does not belong to this file (it comes from another reader)")
        }
    }

    // MARK: Loading

    private struct Loaded {
        var header: ValidatedHeader
        var headerByteCount: Int
        var fileByteCount: Int
    }

    private static func load(fd: Int32, path: String, maxHeaderBytes: Int) throws(SafeTensorsError) -> Loaded {
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            let code = errno
            throw .file(path, "cannot stat: \(systemErrorText(code))", errno: code)
        }
        // Sizes of pipes and devices are meaningless, and every check below relies on the size.
        guard status.st_mode & S_IFMT == S_IFREG else {
            throw .file(path, "not a regular file")
        }
        let fileByteCount = Int(status.st_size)
        guard fileByteCount >= 8 else {
            throw .header(path, "the file is \(fileByteCount) bytes, shorter than the 8-byte header length prefix")
        }

        var prefix = [UInt8](repeating: 0, count: 8)
        try readHeaderBytes(fd: fd, path: path, into: &prefix, at: 0, what: "the header length prefix")
        // Little-endian u64, assembled byte by byte so host endianness does not matter.
        let declaredLength = prefix.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }

        guard declaredLength > 0 else {
            throw .header(path, "header length is 0; a header must hold at least a JSON object")
        }
        guard declaredLength <= UInt64(max(maxHeaderBytes, 0)) else {
            throw .header(path, "header length \(declaredLength) exceeds the limit of \(maxHeaderBytes) bytes")
        }
        let available = UInt64(fileByteCount - 8)
        guard declaredLength <= available else {
            throw .header(
                path,
                "header length \(declaredLength) exceeds the \(available) bytes that follow the length prefix (file is \(fileByteCount) bytes)"
            )
        }
        let headerByteCount = Int(declaredLength)  // <= maxHeaderBytes, so fits.

        var header = [UInt8](repeating: 0, count: headerByteCount)
        try readHeaderBytes(fd: fd, path: path, into: &header, at: 8, what: "the header")
        let validated = try HeaderValidation.validate(
            header: header, dataSectionByteCount: fileByteCount - 8 - headerByteCount, path: path)
        return Loaded(header: validated, headerByteCount: headerByteCount, fileByteCount: fileByteCount)
    }

    private static func readHeaderBytes(
        fd: Int32, path: String, into bytes: inout [UInt8], at offset: Int, what: String
    ) throws(SafeTensorsError) {
        let count = bytes.count
        let outcome = bytes.withUnsafeMutableBytes { FileIO.readFully(fd, into: $0, at: offset) }
        switch outcome {
        case .complete:
            return
        case .endOfFile(let bytesRead):
            throw .header(path, "file ended after \(bytesRead) of the \(count) bytes of \(what) (it shrank while being opened)")
        case .failed(let code):
            throw .file(path, "read of \(what) failed: \(systemErrorText(code))", errno: code)
        }
    }
}
