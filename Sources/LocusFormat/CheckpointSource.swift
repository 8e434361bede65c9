#if canImport(Glibc)
import Glibc
#endif

/// A model's tensors, wherever they are stored: a Locus `.h5` checkpoint, a `.safetensors` file,
/// a Hugging Face folder (sharded or not, safetensors or PyTorch), or a PyTorch file. Every
/// command that reads a model reads it through this, in place and tensor by tensor.
///
/// `tensors` come in ascending byte order of their names (the fingerprint's order, spec §1.5).
public protocol CheckpointSource: AnyObject {
    /// What the user named (file or folder).
    var path: String { get }
    var tensors: [CheckpointTensor] { get }
    /// The base fingerprint (spec §1.5): stored by a Locus checkpoint, computed from the data for
    /// every other source — the same value for the same tensors whatever holds them.
    var fingerprint: String { get throws }
    /// Whether `fingerprint` is at hand without reading the data (stored, or computed already):
    /// a command that streams every tensor anyway can compute it on the way instead.
    var fingerprintIsKnown: Bool { get }
    /// String metadata carried with the tensors (safetensors `__metadata__`, the index's metadata).
    func metadata() throws -> [String: String]?
    /// The model description (spec §2.1 JSON), if the source carries one.
    func architecture() throws -> String?
    /// The file holding the tensor and how to name it in an error message.
    func location(of t: CheckpointTensor) -> (file: String, object: String)
    /// Rows `[start, start + count)` along the first dimension, raw little-endian bytes.
    func readRows(_ t: CheckpointTensor, start: Int, count: Int, into buffer: UnsafeMutableRawBufferPointer) throws
    /// Consecutive raw blocks of whole rows covering the tensor, each at most `blockBytes` (at least one row).
    func forEachBlock(_ t: CheckpointTensor, blockBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws
    func readRaw(_ t: CheckpointTensor, into buffer: UnsafeMutableRawBufferPointer) throws
    func readFloat32(_ t: CheckpointTensor) throws -> [Float]
    func readFloat64(_ t: CheckpointTensor) throws -> [Double]
    func readRowsFloat64(_ t: CheckpointTensor, start: Int, count: Int) throws -> [Double]
}

/// The fingerprint of a source that does not store one: computed from the data on first use
/// (a whole read), then remembered.
final class LazyFingerprint {
    private var known: String?
    var isKnown: Bool { known != nil }
    func value(_ compute: () throws -> String) rethrows -> String {
        if let known { return known }
        let fp = try compute()
        known = fp
        return fp
    }
}

extension CheckpointSource {
    public func tensor(named name: String) -> CheckpointTensor? { tensors.first { TensorName.same($0.name, name) } }

    /// The tensor's raw little-endian bytes.
    public func readRaw(_ t: CheckpointTensor) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: t.byteCount)
        try out.withUnsafeMutableBytes { try readRaw(t, into: $0) }
        return out
    }

    public func readRaw(_ t: CheckpointTensor, into buffer: UnsafeMutableRawBufferPointer) throws {
        try readRows(t, start: 0, count: t.shape.first ?? 1, into: buffer)
    }

    func requireFloat(_ t: CheckpointTensor) throws {
        guard t.dtype.isFloatingPoint else {
            let place = location(of: t)
            throw LocusError(file: place.file, object: place.object, "dtype \(t.dtype.rawValue) is not floating point")
        }
    }

    public func readFloat32(_ t: CheckpointTensor) throws -> [Float] {
        try requireFloat(t)
        return try readRaw(t).withUnsafeBytes { HalfPrecision.decode($0, dtype: t.dtype) }
    }

    public func readFloat64(_ t: CheckpointTensor) throws -> [Double] {
        try requireFloat(t)
        return try readRaw(t).withUnsafeBytes { HalfPrecision.decode64($0, dtype: t.dtype) }
    }

    public func readRowsFloat64(_ t: CheckpointTensor, start: Int, count: Int) throws -> [Double] {
        guard t.dtype.isFloatingPoint, !t.shape.isEmpty, start >= 0, count >= 0, start <= t.shape[0], count <= t.shape[0] - start else {
            let l = location(of: t)
            throw LocusError(file: l.file, object: l.object, "rows \(start)..<\(start + count) of a \(t.dtype.rawValue) tensor of shape \(t.shape) cannot be read as float64")
        }
        var raw = [UInt8](repeating: 0, count: count * t.rowByteCount)
        try raw.withUnsafeMutableBytes { try readRows(t, start: start, count: count, into: $0) }
        return raw.withUnsafeBytes { HalfPrecision.decode64($0, dtype: t.dtype) }
    }

    /// Recomputes the fingerprint from the data (spec §1.5), streaming in blocks of rows.
    public func computeFingerprint(blockBytes: Int = 64 << 20) throws -> String {
        var hasher = FingerprintHasher()
        for t in tensors {
            hasher.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
            try forEachBlock(t, blockBytes: blockBytes) { hasher.update(bytes: $0) }
        }
        return hasher.finalize()
    }
}

extension HalfPrecision {
    /// Decodes little-endian bytes of a floating-point `dtype` to float64 (exact for every float dtype).
    public static func decode64(_ bytes: UnsafeRawBufferPointer, dtype: LocusDType) -> [Double] {
        let n = bytes.count / dtype.byteSize
        return [Double](unsafeUninitializedCapacity: n) { out, count in
            switch dtype {
            case .float64:
                for i in 0..<n { out[i] = Double(bitPattern: UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
            case .float32:
                for i in 0..<n { out[i] = Double(Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))) }
            case .bfloat16:
                for i in 0..<n { out[i] = Double(float(fromBFloat16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
            case .float16:
                for i in 0..<n { out[i] = Double(float(fromFloat16: UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
            default:
                preconditionFailure("decode64: \(dtype) is not a floating-point type")
            }
            count = n
        }
    }
}

extension CheckpointReader: CheckpointSource {
    public var fingerprintIsKnown: Bool { true }   // stored (spec §1.5)
    public func location(of t: CheckpointTensor) -> (file: String, object: String) { (path, t.objectPath) }
}

/// A source whose tensors are byte ranges read on demand (safetensors files and shards, PyTorch
/// archives): one reused buffer, `pread`-style reads, never a memory map, so what the process
/// keeps resident is bounded by the block size and not by the model.
public final class ByteRangeSource: CheckpointSource {
    /// One tensor: where it lives and how to read `buffer.count` bytes of it from a byte offset.
    public struct Entry {
        public var tensor: CheckpointTensor
        public var file: String
        public var object: String
        public var read: (Int, UnsafeMutableRawBufferPointer) throws -> Void
        /// The tensor's bytes in a memory map of its file, when they lie there contiguously (blocks
        /// are then passed straight from the map, and their pages dropped once used).
        var mapped: (map: MappedFile, bytes: UnsafeRawBufferPointer)?
        public init(tensor: CheckpointTensor, file: String, object: String, read: @escaping (Int, UnsafeMutableRawBufferPointer) throws -> Void) {
            self.tensor = tensor; self.file = file; self.object = object; self.read = read
        }
    }

    public let path: String
    public let tensors: [CheckpointTensor]
    private let entries: [[UInt8]: Entry]
    private let storedMetadata: [String: String]?
    private let lazyFingerprint = LazyFingerprint()

    /// Tensors are checked for distinct, valid names here; `kindOfSource` goes into error messages.
    public init(path: String, entries list: [Entry], metadata: [String: String]?) throws {
        self.path = path
        var map: [[UInt8]: Entry] = [:]
        for e in list {
            if let problem = TensorName.problem(with: e.tensor.name) { throw LocusError(file: e.file, object: e.object, problem) }
            if let other = map[TensorName.key(e.tensor.name)] {
                throw LocusError(file: e.file, object: e.object, "is listed twice (also in \(other.file))")
            }
            map[TensorName.key(e.tensor.name)] = e
        }
        entries = map
        tensors = list.map(\.tensor).sorted { TensorName.byteOrder($0.name, $1.name) }
        storedMetadata = metadata
    }

    public var fingerprintIsKnown: Bool { lazyFingerprint.isKnown }
    public var fingerprint: String { get throws { try lazyFingerprint.value { try computeFingerprint() } } }

    public func metadata() throws -> [String: String]? {
        // The description and the provenance of the folder are Locus's own, and total_size is recomputed by writers.
        storedMetadata?.filter { ![ByteRangeSource.architectureKey, "locus.provenance", "total_size"].contains($0.key) }
    }

    /// Locus stores a model description in the metadata of the folders and files it writes.
    public static let architectureKey = "locus.architecture"

    public func architecture() throws -> String? { storedMetadata?[ByteRangeSource.architectureKey] }

    private func entry(_ t: CheckpointTensor) throws -> Entry {
        guard let e = entries[TensorName.key(t.name)], e.tensor == t else {
            throw LocusError(file: path, object: "tensor '\(t.name)'", "is not a tensor of this checkpoint")
        }
        return e
    }

    public func location(of t: CheckpointTensor) -> (file: String, object: String) {
        if let e = entries[TensorName.key(t.name)] { return (e.file, e.object) }
        return (path, "tensor '\(t.name)'")
    }

    public func readRows(_ t: CheckpointTensor, start: Int, count: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        let e = try entry(t)
        let rows = t.shape.first ?? 1
        guard start >= 0, count >= 0, start <= rows, count <= rows - start, buffer.count == count * t.rowByteCount else {
            throw LocusError(file: e.file, object: e.object, "rows \(start)..<\(start + count) into \(buffer.count) bytes do not fit shape \(t.shape)")
        }
        if buffer.isEmpty { return }
        try wrapping(e) { try e.read(start * t.rowByteCount, buffer) }
    }

    public func forEachBlock(_ t: CheckpointTensor, blockBytes: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let e = try entry(t)
        if t.byteCount == 0 { return }
        let rowBytes = max(t.rowByteCount, 1)
        let step = min(t.byteCount, max(rowBytes, (blockBytes / rowBytes) * rowBytes))
        if let (map, bytes) = e.mapped, bytes.count == t.byteCount {
            var offset = 0
            while offset < bytes.count {
                let block = UnsafeRawBufferPointer(rebasing: bytes[offset..<min(bytes.count, offset + step)])
                try body(block)
                map.release(block)
                offset += block.count
            }
            return
        }
        var buffer = [UInt8](repeating: 0, count: step)
        var offset = 0
        while offset < t.byteCount {
            let n = min(step, t.byteCount - offset)
            try buffer.withUnsafeMutableBytes { b in
                let slice = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                try wrapping(e) { try e.read(offset, slice) }
                try body(UnsafeRawBufferPointer(slice))
            }
            offset += n
        }
    }

    private func wrapping(_ e: Entry, _ body: () throws -> Void) throws {
        do { try body() } catch let error as LocusError { throw error } catch {
            throw LocusError(file: e.file, object: e.object, "\(error)")
        }
    }
}
