import HDF5
import SafeTensors

/// One tensor of a checkpoint as its metadata describes it.
public struct CheckpointTensor: StoredTensor, Sendable, Equatable {
    public var name: String
    public var link: String
    public var dtype: LocusDType
    public var shape: [Int]
    public var count: Int
    public var byteCount: Int { count * dtype.byteSize }
    /// Bytes of one slice along the first dimension (the whole tensor for a scalar).
    public var rowByteCount: Int { shape.isEmpty ? byteCount : (shape.dropFirst().reduce(1, *) * dtype.byteSize) }
}

/// Reads a checkpoint tensor by tensor; nothing is loaded until asked for.
public final class CheckpointReader {
    public let artifact: ArtifactFile
    public let tensors: [CheckpointTensor]
    public var path: String { artifact.path }
    private let group: Group

    public convenience init(path: String) throws { try self.init(ArtifactFile.open(path, expecting: .checkpoint)) }

    public init(_ artifact: ArtifactFile) throws {
        guard artifact.header.kind == .checkpoint else {
            throw LocusError(file: artifact.path, "is a \(artifact.header.kind.rawValue) artifact, expected a checkpoint")
        }
        self.artifact = artifact
        group = try artifact.tensorsGroup()
        var list: [CheckpointTensor] = []
        for (name, link) in try artifact.tensorLinks() {
            list.append(try CheckpointReader.describe(group, name: name, link: link, path: artifact.path))
        }
        tensors = list
    }

    /// Validates a tensor dataset's metadata against the spec before anything is allocated for it.
    static func describe(_ group: Group, name: String, link: String, path: String) throws -> CheckpointTensor {
        let object = "/tensors/\(link)"
        guard let ds = group.datasetIfPresent(link) else { throw LocusError(file: path, object: object, "expected a dataset") }
        return try withContext(file: path, object: object) {
            let text = try ArtifactFile.requireString(ds, "dtype", path)
            guard let dtype = LocusDType(rawValue: text) else {
                throw LocusError(file: path, object: object + "@dtype", "unknown dtype '\(text)'")
            }
            let type = ds.type
            guard dtype.accepts(type) else {
                throw LocusError(file: path, object: object, "HDF5 type (class \(type.typeClass), \(type.size) bytes) does not match dtype '\(dtype.rawValue)'")
            }
            let space = ds.space
            guard space.kind != .null else { throw LocusError(file: path, object: object, "has a null dataspace, expected a tensor") }
            let shape = space.dims
            guard let count = checkedProduct(shape), count.multipliedReportingOverflow(by: dtype.byteSize).overflow == false else {
                throw LocusError(file: path, object: object, "shape \(shape) is too large")
            }
            try checkStorage(ds, logicalBytes: count * dtype.byteSize, path: path, object: object)
            return CheckpointTensor(name: name, link: link, dtype: dtype, shape: shape, count: count)
        }
    }

    /// A dataset claiming far more data than the file can hold is corrupt: refuse before allocating.
    static func checkStorage(_ ds: Dataset, logicalBytes: Int, path: String, object: String) throws {
        guard logicalBytes > 0 else { return }
        let stored = ds.storageSize
        switch ds.creationProperties.layout {
        case .contiguous:
            // 0 = never written: HDF5 reads the fill value (zeros), which is a valid tensor. Storage
            // that has an address but a size of 0 is a damaged layout message: libhdf5 1.10 would
            // copy from an empty sieve buffer (a null pointer).
            guard stored == logicalBytes || (stored == 0 && ds.dataOffset == nil) else {
                throw LocusError(file: path, object: object, "stores \(stored) bytes on disk, expected \(logicalBytes) for its shape and type")
            }
        case .compact:
            // The data lives in the object header; libhdf5 1.10 copies the dataspace's worth of
            // bytes out of it without comparing the two (newer versions refuse such a header).
            guard stored == logicalBytes else {
                throw LocusError(file: path, object: object, "holds \(stored) bytes in its header, expected \(logicalBytes) for its shape and type")
            }
        case .chunked:
            // deflate cannot beat ~1032:1; anything beyond is a lie about the size.
            guard logicalBytes / 1100 <= stored + (1 << 20) else {
                throw LocusError(file: path, object: object, "claims \(logicalBytes) bytes but stores only \(stored)")
            }
        default:
            break
        }
    }

    public func tensor(named name: String) -> CheckpointTensor? { tensors.first { TensorName.same($0.name, name) } }

    func dataset(_ t: CheckpointTensor) throws -> Dataset { try withContext(file: path) { try group.openDataset(t.link) } }

    /// The recorded fingerprint (root attribute `fingerprint`).
    public var fingerprint: String {
        get throws { try artifact.string(artifact.root, "fingerprint") }
    }

    /// `__metadata__` carried from safetensors, if any.
    public func metadata() throws -> [String: String]? {
        guard artifact.root.contains("metadata") else { return nil }
        let text = try withContext(file: path, object: "/metadata") { try artifact.root.openDataset("metadata").readStrings(maxCount: 1).first ?? "" }
        do { return try JSON.decode([String: String].self, from: text) } catch {
            throw LocusError(file: path, object: "/metadata", "expected a JSON object of strings: \(error)")
        }
    }

    /// The model description the engine stores, if any (raw JSON).
    public func architecture() throws -> String? {
        guard artifact.root.contains("architecture") else { return nil }
        return try withContext(file: path, object: "/architecture") { try artifact.root.openDataset("architecture").readStrings(maxCount: 1).first }
    }

    /// The tensor's raw little-endian bytes (bfloat16 as its 16-bit patterns, bool as 0/1 bytes).
    public func readRaw(_ t: CheckpointTensor) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: t.byteCount)
        try out.withUnsafeMutableBytes { try readRaw(t, into: $0) }
        return out
    }

    public func readRaw(_ t: CheckpointTensor, into buffer: UnsafeMutableRawBufferPointer) throws {
        try withContext(file: path, object: t.objectPath) {
            try dataset(t).read(into: buffer, memType: try t.dtype.hdf5Type())
        }
    }

    /// Rows `[start, start + count)` along the first dimension, raw (for streaming big tensors).
    public func readRows(_ t: CheckpointTensor, start: Int, count: Int, into buffer: UnsafeMutableRawBufferPointer) throws {
        if t.shape.isEmpty { return try readRaw(t, into: buffer) }
        try withContext(file: path, object: t.objectPath) {
            try dataset(t).read(into: buffer, memType: try t.dtype.hdf5Type(),
                                start: [start] + Array(repeating: 0, count: t.shape.count - 1),
                                count: [count] + t.shape.dropFirst())
        }
    }

    /// A floating-point tensor as float32 (HDF5 converts float16/bfloat16 exactly; float64 rounds).
    public func readFloat32(_ t: CheckpointTensor) throws -> [Float] { try readConverted(t, memType: .nativeFloat) }

    /// A floating-point tensor as float64 (exact for every float dtype).
    public func readFloat64(_ t: CheckpointTensor) throws -> [Double] { try readConverted(t, memType: .nativeDouble) }

    /// The whole floating-point tensor `t`, converted by HDF5 to `memType` (the element type `T`).
    private func readConverted<T: BinaryFloatingPoint>(_ t: CheckpointTensor, memType: Datatype) throws -> [T] {
        guard t.dtype.isFloatingPoint else {
            throw LocusError(file: path, object: t.objectPath, "dtype \(t.dtype.rawValue) is not floating point")
        }
        var out = [T](repeating: 0, count: t.count)
        try withContext(file: path, object: t.objectPath) {
            try out.withUnsafeMutableBytes { try dataset(t).read(into: $0, memType: memType) }
        }
        return out
    }

    /// Rows `[start, start + count)` along the first dimension as float64 (a floating-point tensor).
    public func readRowsFloat64(_ t: CheckpointTensor, start: Int, count: Int) throws -> [Double] {
        guard t.dtype.isFloatingPoint, !t.shape.isEmpty, start >= 0, count >= 0, start + count <= t.shape[0] else {
            throw LocusError(file: path, object: t.objectPath, "rows \(start)..<\(start + count) of a \(t.dtype.rawValue) tensor of shape \(t.shape) cannot be read as float64")
        }
        let rowLength = t.shape.dropFirst().reduce(1, *)
        var out = [Double](repeating: 0, count: count * rowLength)
        try withContext(file: path, object: t.objectPath) {
            try out.withUnsafeMutableBytes {
                try dataset(t).read(into: $0, memType: .nativeDouble, start: [start] + Array(repeating: 0, count: t.shape.count - 1), count: [count] + t.shape.dropFirst())
            }
        }
        return out
    }

    /// A map of the file, made on first use; nil when mapping is impossible.
    private lazy var mapped: MappedFile? = artifact.file.descriptor.flatMap { MappedFile(descriptor: $0) }

    /// The tensor's bytes straight from the file map when its storage is a plain contiguous
    /// little-endian block inside the file (what Locus writes); nil otherwise.
    func mappedBytes(_ t: CheckpointTensor) throws -> UnsafeRawBufferPointer? {
        let ds = try dataset(t)
        guard ds.creationProperties.layout == .contiguous, ds.creationProperties.filters.isEmpty,
              ds.type.isLittleEndian || t.dtype.byteSize == 1,
              let offset = ds.dataOffset, ds.storageSize == t.byteCount else { return nil }
        return mapped?.slice(offset: offset, count: t.byteCount)
    }

    /// Calls `body` with consecutive raw blocks of whole rows covering the tensor (straight
    /// from the file map when possible, else read through HDF5 into one reused buffer).
    public func forEachBlock(_ t: CheckpointTensor, blockBytes: Int = 64 << 20, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        if t.count == 0 { return }
        if let m = try mappedBytes(t) {
            var start = 0
            let step = max(t.rowByteCount, (blockBytes / max(t.rowByteCount, 1)) * t.rowByteCount)
            while start < m.count {
                let end = min(m.count, start + step)
                let block = UnsafeRawBufferPointer(rebasing: m[start..<end])
                try body(block)
                mapped?.release(block)
                start = end
            }
            return
        }
        try CheckpointReader.readBlocks(try dataset(t), t, blockBytes: blockBytes, path: path, body)
    }

    /// Reads a tensor dataset through HDF5 in blocks of whole rows into one reused buffer.
    static func readBlocks(_ ds: Dataset, _ t: CheckpointTensor, blockBytes: Int, path: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try readRowBlocks(ds, shape: t.shape, elementBytes: t.dtype.byteSize, memType: try t.dtype.hdf5Type(),
                          blockBytes: blockBytes, path: path, object: t.objectPath, body)
    }

    /// Reads any dataset of `shape` with `memType` (elements of `elementBytes`) in blocks of whole
    /// rows of at most `blockBytes` (at least one row) into one reused buffer.
    static func readRowBlocks(_ ds: Dataset, shape: [Int], elementBytes: Int, memType type: Datatype, blockBytes: Int,
                              path: String, object: String, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        guard let count = checkedProduct(shape), count > 0 else { return }
        let byteCount = count * elementBytes
        if shape.isEmpty || byteCount <= blockBytes {
            var bytes = [UInt8](repeating: 0, count: byteCount)
            try withContext(file: path, object: object) { try bytes.withUnsafeMutableBytes { try ds.read(into: $0, memType: type) } }
            return try bytes.withUnsafeBytes { try body($0) }
        }
        let rows = shape[0], rowBytes = byteCount / rows
        let perBlock = max(1, blockBytes / max(rowBytes, 1))
        var buffer = [UInt8](repeating: 0, count: perBlock * rowBytes)
        var r = 0
        while r < rows {
            let k = min(perBlock, rows - r)
            try buffer.withUnsafeMutableBytes { b in
                let slice = UnsafeMutableRawBufferPointer(rebasing: b[0..<(k * rowBytes)])
                try withContext(file: path, object: object) {
                    try ds.read(into: slice, memType: type, start: [r] + Array(repeating: 0, count: shape.count - 1), count: [k] + shape.dropFirst())
                }
                try body(UnsafeRawBufferPointer(slice))
            }
            r += k
        }
    }
}

/// Writes a checkpoint tensor by tensor (optionally in row blocks), atomically.
/// Feed tensors in ascending byte order of their names and the fingerprint is computed on the
/// way; otherwise `finish()` reads the data back once to compute it. Each tensor gets the §1.8
/// `digest` (its tensor digest, which the fingerprint hashes anyway), so `--verify` can name a
/// tensor that changed.
public final class CheckpointWriter {
    private let writer: ArtifactWriter
    private var hasher = FingerprintHasher()
    /// Blocks at least this big are hashed on a second thread while HDF5 writes them.
    static let concurrentHashBytes = 1 << 20
    private var written: [CheckpointTensor] = []
    private var names = Set<[UInt8]>()
    private var inNameOrder = true
    private var open: (tensor: CheckpointTensor, dataset: Dataset, rowsDone: Int)?
    public var target: String { writer.target }
    /// Tensors whose digest the caller supplies (`add(name:dtype:shape:bytes:digest:)`), resolved by `finish()`.
    private var supplied: [(tensor: CheckpointTensor, digest: () -> [UInt8])] = []
    /// The tensor digest of every tensor written so far that has one, by link name.
    private var digests: [String: [UInt8]] = [:]
    /// The descriptor libhdf5 writes through, for starting writeback early (`WriteBehind`).
    private lazy var descriptor: Int32? = writer.file.descriptor
    private var unsynced = 0

    public init(path: String, provenance: Provenance? = Provenance(), metadata: [String: String]? = nil, architecture: String? = nil) throws {
        writer = try ArtifactWriter(target: path, kind: .checkpoint, aligned: true, baseFingerprint: nil, provenance: provenance)
        try writer.guarded {
            if let metadata { try writer.root.createStringDataset("metadata", try JSON.encode(metadata)) }
            if let architecture { try writer.root.createStringDataset("architecture", architecture) }
        }
    }

    /// Starts a tensor; its data follows through `writeRows`.
    public func beginTensor(name: String, dtype: LocusDType, shape: [Int]) throws {
        try beginTensor(name: name, dtype: dtype, shape: shape, hashed: true)
    }

    private func beginTensor(name: String, dtype: LocusDType, shape: [Int], hashed: Bool) throws {
        let object = "/tensors/\(TensorName.linkName(for: name))"
        try writer.guarded(object: object) {
            guard open == nil else { throw LocusError(file: target, object: object, "previous tensor '\(open!.tensor.name)' is incomplete") }
            if let problem = TensorName.problem(with: name) { throw LocusError(file: target, object: object, problem) }
            guard names.insert(TensorName.key(name)).inserted else { throw LocusError(file: target, object: object, "duplicate tensor name '\(name)'") }
            guard let count = checkedProduct(shape) else { throw LocusError(file: target, object: object, "invalid shape \(shape)") }
            if let last = written.last, !TensorName.byteOrder(last.name, name) { inNameOrder = false }
            let t = CheckpointTensor(name: name, link: TensorName.linkName(for: name), dtype: dtype, shape: shape, count: count)
            let ds = try writer.tensors.createDataset(t.link, type: try dtype.hdf5Type(), shape: shape)
            try ds.setAttribute("dtype", dtype.rawValue)
            if inNameOrder && hashed { hasher.beginTensor(name: name, dtype: dtype, shape: shape) }
            open = (t, ds, 0)
            hashing = hashed
            if count == 0 { try endTensor() }
        }
    }

    /// Whether the open tensor is hashed as it is written (else its digest is supplied).
    private var hashing = true

    /// Appends whole rows (slices along the first dimension) of raw little-endian bytes.
    public func writeRows(_ bytes: UnsafeRawBufferPointer) throws {
        guard let (t, ds, done) = open else { return try writer.guarded { throw LocusError(file: target, "no tensor is open for writing") } }
        try writer.guarded(object: t.objectPath) {
            let rowBytes = t.rowByteCount
            guard rowBytes > 0, bytes.count % rowBytes == 0 else {
                throw LocusError(file: target, object: t.objectPath, "\(bytes.count) bytes is not a whole number of \(rowBytes)-byte rows")
            }
            let k = bytes.count / rowBytes
            let rows = t.shape.first ?? 1
            guard done + k <= rows else { throw LocusError(file: target, object: t.objectPath, "more data than the shape \(t.shape) holds") }
            if t.dtype == .bool, let bad = bytes.firstIndex(where: { $0 > 1 }) {
                throw LocusError(file: target, object: t.objectPath, "bool element \(done * rowBytes + bad) is \(bytes[bad]), expected 0 or 1")
            }
            let type = try t.dtype.hdf5Type()
            let write = {
                if t.shape.isEmpty || (done == 0 && k == rows) {
                    try ds.write(bytes, memType: type)
                } else {
                    try ds.write(bytes, memType: type, start: [done] + Array(repeating: 0, count: t.shape.count - 1), count: [k] + t.shape.dropFirst())
                }
            }
            let hash = inNameOrder && hashing
            if hash && bytes.count >= CheckpointWriter.concurrentHashBytes {
                // Hashing costs about as much as writing; on two cores they overlap.
                try Concurrently.run({ self.hasher.update(bytes: bytes) }, write)
            } else {
                try write()
                if hash { hasher.update(bytes: bytes) }
            }
            // The output is fsynced when it is committed: start writing it back already.
            unsynced += bytes.count
            if unsynced >= 4 * WriteBehind.minimumBytes, let fd = descriptor {
                WriteBehind.start(fd)
                unsynced = 0
            }
            open = (t, ds, done + k)
            if done + k == rows { try endTensor() }
        }
    }

    /// Writes a whole tensor at once.
    public func add(name: String, dtype: LocusDType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        try writer.guarded {
            let expected = (checkedProduct(shape) ?? -1) * dtype.byteSize
            guard bytes.count == expected else {
                throw LocusError(file: target, object: "/tensors/\(TensorName.linkName(for: name))", "\(bytes.count) bytes given for shape \(shape) of \(dtype.rawValue) (\(expected) expected)")
            }
        }
        try beginTensor(name: name, dtype: dtype, shape: shape)
        if open != nil { try writeRows(bytes) }
    }

    /// Writes a whole tensor without hashing it: `digest` returns its tensor digest (§1.5) and is
    /// called by `finish()`, so the caller can compute it on other threads meanwhile (from bytes
    /// that stay valid, such as a memory map of the source). `progress(bytes)` is told how much
    /// of the tensor is written after each block of rows (at most `blockBytes`, at least a row).
    public func add(name: String, dtype: LocusDType, shape: [Int], bytes: UnsafeRawBufferPointer, blockBytes: Int = 8 << 20,
                    progress: (Int) -> Void = { _ in }, digest: @escaping () -> [UInt8]) throws {
        try writer.guarded {
            let expected = (checkedProduct(shape) ?? -1) * dtype.byteSize
            guard bytes.count == expected else {
                throw LocusError(file: target, object: "/tensors/\(TensorName.linkName(for: name))", "\(bytes.count) bytes given for shape \(shape) of \(dtype.rawValue) (\(expected) expected)")
            }
        }
        try beginTensor(name: name, dtype: dtype, shape: shape, hashed: false)
        guard let t = open?.tensor else { return supplied.append((written.last!, digest)) }
        let step = max(t.rowByteCount, blockBytes / max(t.rowByteCount, 1) * t.rowByteCount)
        var start = 0
        while start < bytes.count {
            let end = min(bytes.count, start + step)
            try writeRows(UnsafeRawBufferPointer(rebasing: bytes[start..<end]))
            progress(end)
            start = end
        }
        supplied.append((t, digest))
    }

    /// Convenience: a float32 tensor from values, stored as `dtype` (RNE for 16-bit types).
    public func add(name: String, values: [Float], shape: [Int], dtype: LocusDType = .float32) throws {
        let bytes = values.withUnsafeBufferPointer { HalfPrecision.encode($0, as: dtype) }
        try bytes.withUnsafeBytes { try add(name: name, dtype: dtype, shape: shape, bytes: $0) }
    }

    /// Tensors whose §1.8 `digest` is stored (those hashed on the way, in name order).
    private var digested = Set<String>()

    private func endTensor() throws {
        guard let (t, ds, _) = open else { return }
        if inNameOrder, hashing, let digest = hasher.endTensor() {
            try ds.setAttribute(DataDigest.attribute, DataDigest.text(digest))
            digested.insert(t.link)
            digests[t.link] = digest
        }
        written.append(t)
        open = nil
    }

    /// Writes the summaries and fingerprint, closes and commits. Returns the fingerprint.
    @discardableResult
    public func finish() throws -> String {
        let fingerprint: String = try writer.guarded {
            if let (t, _, _) = open { throw LocusError(file: target, object: t.objectPath, "tensor data is incomplete") }
            // Supplied digests (computed elsewhere meanwhile) are stored now.
            for (t, digest) in supplied {
                let d = digest()
                try writer.tensors.openDataset(t.link).setAttribute(DataDigest.attribute, DataDigest.text(d))
                digested.insert(t.link)
                digests[t.link] = d
            }
            let fp: String
            if inNameOrder && !supplied.isEmpty {
                // The fingerprint from every tensor's digest, in name order (the order written).
                var h = FingerprintHasher()
                for t in written { h.addTensor(name: t.name, dtype: t.dtype, shape: t.shape, digest: digests[t.link]!) }
                fp = h.finalize()
            } else if inNameOrder { fp = hasher.finalize() } else {
                // Tensors came out of name order: hash them again, in order, from the open file.
                var h = FingerprintHasher()
                for t in written.sorted(by: { TensorName.byteOrder($0.name, $1.name) }) {
                    h.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
                    let ds = try writer.tensors.openDataset(t.link)
                    try CheckpointReader.readBlocks(ds, t, blockBytes: 64 << 20, path: target) { h.update(bytes: $0) }
                    if let digest = h.endTensor(), !digested.contains(t.link) { try ds.setAttribute(DataDigest.attribute, DataDigest.text(digest)) }
                }
                fp = h.finalize()
            }
            try writer.root.setAttribute("fingerprint", fp)
            try writer.root.setAttribute("tensor-count", Int64(written.count))
            try writer.root.setAttribute("element-count", Int64(written.reduce(0) { $0 + $1.count }))
            return fp
        }
        try writer.finish()
        return fingerprint
    }
}
