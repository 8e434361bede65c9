#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import OneLineText

/// Writes a safetensors file as a stream: the header goes out first, computed from the tensor
/// specs alone, then the caller appends each tensor's bytes in the order given, in as many
/// chunks as it likes. Tensors never need to be in memory all at once.
///
/// Layout matches the reference writer: tensors are contiguous in the given order, the header is
/// compact JSON (`__metadata__` first, then tensors in the given order), and it is padded with
/// spaces so the data section starts at a multiple of 8 bytes.
///
/// The writer writes directly to `path` (created or truncated); atomic replacement via a
/// temporary file and rename is the caller's job. Copies of a writer share one underlying file
/// and progress, like a file handle, so writing through either copy continues the same stream.
public struct SafeTensorsWriter {
    public struct TensorSpec: Sendable, Equatable {
        public var name: String
        public var dtype: SafeTensorsDType
        public var shape: [Int]

        public init(name: String, dtype: SafeTensorsDType, shape: [Int]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
        }
    }

    public let path: String
    /// The tensors as they will appear in the file, in the order given (which is file order).
    public let entries: [SafeTensorsEntry]
    /// N, the padded JSON header length.
    public let headerByteCount: Int
    private let state: State

    /// Validates the specs (duplicate or reserved names, negative dimensions, size overflow),
    /// then creates or truncates `path` and writes the header. Nothing is created if validation
    /// fails.
    public init(path: String, tensors: [TensorSpec], metadata: [String: String]?) throws {
        let encoded = try Self.encodeHeader(path: path, tensors: tensors, metadata: metadata)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let code = errno
            throw SafeTensorsError.file(path, "cannot create for writing: \(systemErrorText(code))", errno: code)
        }
        self.path = path
        self.entries = encoded.entries
        self.headerByteCount = encoded.headerByteCount
        self.state = State(path: path, fd: fd, entries: encoded.entries)
        try state.append(encoded.prefixAndHeader)
        state.skipCompletedTensors()
    }

    /// The tensor the next `write` goes to, or nil once every tensor is complete.
    public var currentTensor: SafeTensorsEntry? {
        state.tensorIndex < entries.count ? entries[state.tensorIndex] : nil
    }

    /// Appends `bytes` to the current tensor. A chunk may not run past the end of the current
    /// tensor (so a bug in the caller's size arithmetic is caught at the tensor where it happens);
    /// once a tensor is complete the next call continues with the next one. Zero-sized tensors
    /// are complete from the start and need no call.
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws {
        try state.write(bytes)
    }

    public mutating func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try state.write($0) }
    }

    /// Checks that every tensor is complete, flushes, optionally fsyncs, and closes the file.
    /// If a tensor is incomplete this throws and leaves the writer usable, so the caller may
    /// still write the missing bytes and call `finish` again.
    public mutating func finish(fsync: Bool = true) throws {
        try state.finish(fsync: fsync)
    }

    // MARK: Header encoding

    struct EncodedHeader {
        /// 8-byte little-endian length, then the padded JSON.
        var prefixAndHeader: [UInt8]
        var headerByteCount: Int
        var entries: [SafeTensorsEntry]
    }

    /// Computes the layout and the exact header bytes. Pure, so tests can check it byte for byte.
    static func encodeHeader(
        path: String, tensors: [TensorSpec], metadata: [String: String]?,
        maxHeaderBytes: Int = SafeTensorsReader.defaultMaxHeaderBytes
    ) throws(SafeTensorsError) -> EncodedHeader {
        var entries: [SafeTensorsEntry] = []
        entries.reserveCapacity(tensors.count)
        var positionByName: [[UInt8]: Int] = [:]  // exact bytes, not canonical equivalence
        var offset = 0
        for (position, spec) in tensors.enumerated() {
            func fail(_ message: String) -> SafeTensorsError { .tensor(path, spec.name, message) }
            if spec.name == HeaderValidation.metadataKey {
                throw fail("the name \(HeaderValidation.metadataKey) is reserved for the header's metadata")
            }
            if let earlier = positionByName.updateValue(position, forKey: Array(spec.name.utf8)) {
                throw fail("duplicate tensor name (tensors \(earlier) and \(position) of the list)")
            }
            if let index = spec.shape.firstIndex(where: { $0 < 0 }) {
                throw fail("shape[\(index)] is negative (\(spec.shape[index])) in shape \(describeShape(spec.shape))")
            }
            guard let elementCount = checkedElementCount(spec.shape) else {
                throw fail("shape \(describeShape(spec.shape)) has more elements than fit in a 64-bit integer")
            }
            let (byteCount, overflow) = elementCount.multipliedReportingOverflow(by: spec.dtype.byteSize)
            guard !overflow else {
                throw fail("shape \(describeShape(spec.shape)) of \(spec.dtype.rawValue) is more bytes than fit in a 64-bit integer")
            }
            let (end, endOverflow) = offset.addingReportingOverflow(byteCount)
            guard !endOverflow else {
                throw fail("the tensors up to and including this one total more bytes than fit in a 64-bit integer")
            }
            entries.append(
                SafeTensorsEntry(name: spec.name, dtype: spec.dtype, shape: spec.shape, dataBegin: offset, dataEnd: end))
            offset = end
        }

        var json: [UInt8] = []
        json.append(UInt8(ascii: "{"))
        var needsComma = false
        if let metadata {
            appendJSONString(HeaderValidation.metadataKey, to: &json)
            json.append(contentsOf: ":{".utf8)
            // Dictionaries have no order; sorting keys makes the output reproducible.
            for (index, key) in metadata.keys.sorted().enumerated() {
                if index > 0 { json.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &json)
                json.append(UInt8(ascii: ":"))
                appendJSONString(metadata[key] ?? "", to: &json)
            }
            json.append(UInt8(ascii: "}"))
            needsComma = true
        }
        for entry in entries {
            if needsComma { json.append(UInt8(ascii: ",")) }
            needsComma = true
            appendJSONString(entry.name, to: &json)
            json.append(contentsOf: ":{\"dtype\":\"\(entry.dtype.rawValue)\",\"shape\":[".utf8)
            json.append(contentsOf: entry.shape.map(String.init).joined(separator: ",").utf8)
            json.append(contentsOf: "],\"data_offsets\":[\(entry.dataBegin),\(entry.dataEnd)]}".utf8)
        }
        json.append(UInt8(ascii: "}"))
        // Pad so 8 + N is a multiple of 8: the data section (and so every tensor whose offset is
        // a multiple of its element size) is then aligned for direct mapping.
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))

        guard json.count <= maxHeaderBytes else {
            throw .header(
                path, "the header would be \(json.count) bytes, over the \(maxHeaderBytes)-byte limit readers accept")
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + json.count)
        let length = UInt64(json.count)
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8(truncatingIfNeeded: length >> UInt64(shift))) }
        bytes.append(contentsOf: json)
        return EncodedHeader(prefixAndHeader: bytes, headerByteCount: json.count, entries: entries)
    }
}

/// JSON string with the mandatory escapes only; everything else is emitted as UTF-8, which
/// Swift strings always are (they cannot hold lone surrogates).
private func appendJSONString(_ text: String, to json: inout [UInt8]) {
    json.append(UInt8(ascii: "\""))
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "\""): json.append(contentsOf: "\\\"".utf8)
        case UInt8(ascii: "\\"): json.append(contentsOf: "\\\\".utf8)
        case 0x0A: json.append(contentsOf: "\\n".utf8)
        case 0x0D: json.append(contentsOf: "\\r".utf8)
        case 0x09: json.append(contentsOf: "\\t".utf8)
        case 0x08: json.append(contentsOf: "\\b".utf8)
        case 0x0C: json.append(contentsOf: "\\f".utf8)
        case 0x00..<0x20:
            let hex = String(byte, radix: 16, uppercase: false)
            json.append(contentsOf: ("\\u00" + (hex.count == 1 ? "0" + hex : hex)).utf8)
        default: json.append(byte)
        }
    }
    json.append(UInt8(ascii: "\""))
}

/// Named differently from `finish(fsync:)`'s parameter, which would otherwise shadow `fsync`.
private func syncToDisk(_ fd: Int32) -> Int32 { fsync(fd) }

/// Mutable state of a writer. A class so the descriptor is closed in `deinit` if the caller
/// abandons the writer (say, after an error), and so copies of the struct share one stream.
private final class State {
    /// Small writes are gathered so per-row writes do not cost a syscall each.
    static let bufferCapacity = 1 << 20

    enum Phase {
        case open
        /// An I/O error happened; the file is closed and its contents unknown.
        case failed(SafeTensorsError)
        case finished
    }

    let path: String
    var fd: Int32
    let entries: [SafeTensorsEntry]
    var tensorIndex = 0
    var writtenInTensor = 0
    var buffer: [UInt8] = []
    var phase = Phase.open

    init(path: String, fd: Int32, entries: [SafeTensorsEntry]) {
        self.path = path
        self.fd = fd
        self.entries = entries
        buffer.reserveCapacity(Self.bufferCapacity)
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try checkOpen()
        if bytes.isEmpty { return }
        guard tensorIndex < entries.count else {
            throw SafeTensorsError.file(
                path, "write of \(bytes.count) bytes after all \(entries.count) tensors are complete")
        }
        let entry = entries[tensorIndex]
        let remaining = entry.byteCount - writtenInTensor
        guard bytes.count <= remaining else {
            throw SafeTensorsError.tensor(
                path, entry.name,
                "write of \(bytes.count) bytes exceeds the \(remaining) bytes the tensor still needs (\(entry.byteCount) in all); a write may not span two tensors"
            )
        }
        try append(bytes)
        writtenInTensor += bytes.count
        skipCompletedTensors()
    }

    func skipCompletedTensors() {
        while tensorIndex < entries.count, writtenInTensor == entries[tensorIndex].byteCount {
            tensorIndex += 1
            writtenInTensor = 0
        }
    }

    func append(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try append($0) }
    }

    func append(_ bytes: UnsafeRawBufferPointer) throws {
        if buffer.count + bytes.count <= Self.bufferCapacity {
            buffer.append(contentsOf: bytes)
            return
        }
        try flush()
        if bytes.count >= Self.bufferCapacity {
            try writeOrFail(bytes)  // Large chunks skip the copy.
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    func flush() throws {
        if buffer.isEmpty { return }
        try buffer.withUnsafeBytes { try writeOrFail($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    func finish(fsync: Bool) throws {
        try checkOpen()
        if tensorIndex < entries.count {
            let entry = entries[tensorIndex]
            let missingTensors = entries.count - tensorIndex - 1
            throw SafeTensorsError.tensor(
                path, entry.name,
                "incomplete: \(writtenInTensor) of \(entry.byteCount) bytes written"
                    + (missingTensors > 0 ? ", and \(missingTensors) later tensor(s) not started" : ""))
        }
        try flush()
        if fsync, syncToDisk(fd) != 0 {
            let code = errno
            throw fail(SafeTensorsError.file(path, "fsync failed: \(systemErrorText(code))", errno: code))
        }
        let descriptor = fd
        fd = -1
        // On Linux the descriptor is released even when close reports EINTR, so never retry;
        // data was already flushed (and fsynced if asked), so EINTR loses nothing.
        if close(descriptor) != 0 {
            let code = errno
            if code != EINTR {
                let error = SafeTensorsError.file(path, "close failed: \(systemErrorText(code))", errno: code)
                phase = .failed(error)
                throw error
            }
        }
        phase = .finished
    }

    private func checkOpen() throws {
        switch phase {
        case .open:
            return
        case .finished:
            throw SafeTensorsError.file(path, "the writer is already finished")
        case .failed(let error):
            throw SafeTensorsError(
                path: path, scope: error.scope, object: error.object,
                message: "the writer failed earlier: \(error.message)", systemErrorCode: error.systemErrorCode)
        }
    }

    private func writeOrFail(_ bytes: UnsafeRawBufferPointer) throws {
        if let code = FileIO.writeFully(fd, bytes) {
            throw fail(SafeTensorsError.file(path, "write failed: \(systemErrorText(code))", errno: code))
        }
        // The file is fsynced when it is finished: start writing it back now, a few MB at a time.
        unsynced += bytes.count
        if unsynced >= 4 * WriteBehind.minimumBytes {
            WriteBehind.start(fd)
            unsynced = 0
        }
    }

    /// Bytes written since writeback was last started.
    private var unsynced = 0

    /// Makes an I/O error sticky: after one, the file's contents are unknown, so every later
    /// call reports it instead of writing more.
    private func fail(_ error: SafeTensorsError) -> SafeTensorsError {
        phase = .failed(error)
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        return error
    }
}
