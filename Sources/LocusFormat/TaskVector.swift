import HDF5

/// Per-tensor encodings of a task vector (spec §5).
public enum TaskVectorEncoding: String, Sendable, CaseIterable, Codable {
    case coo, bitmask, dense

    /// The spec's cost rule: the smallest estimated size wins; ties prefer dense, then bitmask.
    public static func choose(count: Int, stored: Int, valueBytes: Int) -> TaskVectorEncoding {
        let indexBytes = count <= (1 << 32) ? 4 : 8
        let dense = Double(valueBytes * count)
        let bitmask = Double(count) / 8 + Double(valueBytes * stored)
        let coo = Double((indexBytes + valueBytes) * stored)
        if dense <= bitmask && dense <= coo { return .dense }
        if bitmask <= coo { return .bitmask }
        return .coo
    }
}

/// One tensor of a task vector as its metadata describes it.
public struct TaskVectorTensor: StoredTensor, Sendable, Equatable {
    public var name: String
    public var link: String
    public var shape: [Int]
    public var count: Int
    public var encoding: TaskVectorEncoding
    public var dtype: LocusDType
    public var nnz: Int
    public var l2Norm: Double
    public var density: Double { count == 0 ? 0 : Double(nnz) / Double(count) }
}

/// Writes a task vector; each tensor gets the encoding the spec's cost rule picks.
public final class TaskVectorWriter {
    private let writer: ArtifactWriter
    private var totalCount = 0, totalNNZ = 0, tensorCount = 0, sumSquares = 0.0
    private var names = Set<[UInt8]>()
    private var open: TaskVectorTensorWriter?
    public var target: String { writer.target }

    /// `attributes` adds optional root string attributes (e.g. `finetuned-fingerprint`).
    public init(path: String, baseFingerprint: String, scale: Double = 1, attributes: [String: String] = [:],
                numbers: [String: Double] = [:], provenance: Provenance? = Provenance()) throws {
        guard scale.isFinite else { throw LocusError(file: path, "scale must be finite, got \(scale)") }
        writer = try ArtifactWriter(target: path, kind: .taskVector, aligned: false, baseFingerprint: baseFingerprint, provenance: provenance)
        try writer.guarded {
            try writer.root.setAttribute("scale", scale)
            for (k, v) in attributes.sorted(by: { $0.key < $1.key }) { try writer.root.setAttribute(k, v) }
            for (k, v) in numbers.sorted(by: { $0.key < $1.key }) { try writer.root.setAttribute(k, v) }
        }
    }

    /// Adds a tensor from dense values; exact zeros are not stored.
    public func add(name: String, shape: [Int], dense: [Float], dtype: LocusDType = .float32) throws {
        var indices: [Int] = []
        var values: [Float] = []
        for (i, v) in dense.enumerated() where v != 0 { indices.append(i); values.append(v) }
        guard checkedProduct(shape) == dense.count else {
            throw LocusError(file: target, object: "/tensors/\(TensorName.linkName(for: name))", "\(dense.count) values do not fill shape \(shape)")
        }
        try add(name: name, shape: shape, indices: indices, values: values.map(Double.init), dtype: dtype, dense: dense)
    }

    /// Adds a tensor from sorted unique flat indices and their values.
    public func add(name: String, shape: [Int], indices: [Int], values: [Float], dtype: LocusDType = .float32) throws {
        try add(name: name, shape: shape, indices: indices, values: values.map(Double.init), dtype: dtype, dense: nil)
    }

    /// Adds a tensor from sorted unique flat indices and float64 values (stored as `dtype`; exact for float64).
    public func add(name: String, shape: [Int], indices: [Int], values64 values: [Double], dtype: LocusDType) throws {
        try add(name: name, shape: shape, indices: indices, values: values, dtype: dtype, dense: nil)
    }

    static func encode(_ values: [Double], as dtype: LocusDType) -> [UInt8] { HalfPrecision.encode(values, as: dtype) }

    /// Values of encoded bytes, for checking what would be stored.
    public static func decodeForCheck(_ bytes: [UInt8], dtype: LocusDType) -> [Double] { decode(bytes, dtype: dtype) }

    static func decode(_ bytes: [UInt8], dtype: LocusDType) -> [Double] {
        if dtype == .float64 {
            return (0..<(bytes.count / 8)).map { i in bytes.withUnsafeBytes { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) } }
        }
        return bytes.withUnsafeBytes { HalfPrecision.decode($0, dtype: dtype) }.map(Double.init)
    }

    private func add(name: String, shape: [Int], indices: [Int], values: [Double], dtype: LocusDType, dense: [Float]?) throws {
        let object = "/tensors/\(TensorName.linkName(for: name))"
        try writer.guarded(object: object) {
            guard indices.count == values.count else { throw LocusError(file: target, object: object, "\(indices.count) indices but \(values.count) values") }
        }
        let t = try beginTensor(name: name, shape: shape, dtype: dtype, stored: values.count)
        try indices.withUnsafeBufferPointer { i in
            try values.withUnsafeBufferPointer { v in try t.append(upTo: t.count, indices: i, values: v) }
        }
        try t.finish()
    }

    /// Starts a tensor whose `stored` entries arrive in order through `append` (see
    /// `TaskVectorTensorWriter`); the encoding is chosen now by the spec's cost rule. Memory stays
    /// bounded by the largest append, whatever the tensor's size.
    public func beginTensor(name: String, shape: [Int], dtype: LocusDType, stored: Int) throws -> TaskVectorTensorWriter {
        let link = TensorName.linkName(for: name)
        let object = "/tensors/\(link)"
        return try writer.guarded(object: object) {
            guard open == nil else { throw LocusError(file: target, object: object, "the previous tensor is incomplete") }
            guard dtype.isFloatingPoint else { throw LocusError(file: target, object: object, "task-vector values must be floating point, not \(dtype.rawValue)") }
            if let problem = TensorName.problem(with: name) { throw LocusError(file: target, object: object, problem) }
            guard names.insert(TensorName.key(name)).inserted else { throw LocusError(file: target, object: object, "duplicate tensor name") }
            guard let count = checkedProduct(shape) else { throw LocusError(file: target, object: object, "invalid shape \(shape)") }
            guard stored >= 0, stored <= count else { throw LocusError(file: target, object: object, "\(stored) stored entries for \(count) elements") }
            let t = try TaskVectorTensorWriter(parent: self, group: try writer.tensors.createGroup(link), object: object,
                                               shape: shape, count: count, dtype: dtype, stored: stored)
            open = t
            return t
        }
    }

    /// Called by a tensor writer when its last entry is written.
    func close(_ t: TaskVectorTensorWriter, nnz: Int, squares: Double) throws {
        try guarded(object: t.object) {
            try t.group.setAttribute("encoding-type", t.encoding.rawValue)
            try t.group.setAttribute("shape", t.shape.map(Int64.init))
            try t.group.setAttribute("count", Int64(t.count))
            try t.group.setAttribute("dtype", t.dtype.rawValue)
            try t.group.setAttribute("nnz", Int64(nnz))
            try t.group.setAttribute("l2-norm", squares.squareRoot())
        }
        totalCount += t.count; totalNNZ += nnz; sumSquares += squares; tensorCount += 1
        open = nil
    }

    func guarded<R>(object: String, _ body: () throws -> R) throws -> R { try writer.guarded(object: object, body) }
    func compressible(_ g: Group, _ name: String, type: Datatype, count: Int) throws -> Dataset {
        try writer.createCompressible(g, name, type: type, count: count)
    }

    public func finish() throws {
        try writer.guarded {
            if let open { throw LocusError(file: target, object: open.object, "tensor is incomplete: \(open.position) of \(open.count) elements written") }
            try writer.root.setAttribute("tensor-count", Int64(tensorCount))
            try writer.root.setAttribute("count", Int64(totalCount))
            try writer.root.setAttribute("nnz", Int64(totalNNZ))
            try writer.root.setAttribute("l2-norm", sumSquares.squareRoot())
        }
        try writer.finish()
    }
}

/// Reads a task vector, checking each tensor's layout before allocating for it.
public final class TaskVectorReader {
    public let artifact: ArtifactFile
    public let baseFingerprint: String
    public let scale: Double
    public let tensors: [TaskVectorTensor]
    let group: Group
    public var path: String { artifact.path }

    public convenience init(path: String) throws { try self.init(ArtifactFile.open(path, expecting: .taskVector)) }

    public init(_ artifact: ArtifactFile) throws {
        self.artifact = artifact
        let path = artifact.path
        baseFingerprint = try artifact.requiredBaseFingerprint()
        guard artifact.root.hasAttribute("scale") else { throw LocusError(file: path, object: "/@scale", "required attribute is missing") }
        scale = try withContext(file: path, object: "/@scale") { try artifact.root.doubleAttribute("scale") }
        guard scale.isFinite else { throw LocusError(file: path, object: "/@scale", "is \(scale), expected a finite number") }
        (group, tensors) = try artifact.describeTensors { try TaskVectorReader.describe($0, artifact: artifact, name: $1, link: $2) }
    }

    static func describe(_ group: Group, artifact: ArtifactFile, name: String, link: String) throws -> TaskVectorTensor {
        let path = artifact.path, object = "/tensors/\(link)"
        guard let g = group.groupIfPresent(link) else { throw LocusError(file: path, object: object, "expected a group holding one encoded tensor") }
        let encText = try artifact.string(g, "encoding-type")
        guard let encoding = TaskVectorEncoding(rawValue: encText) else {
            throw LocusError(file: path, object: object + "@encoding-type", "unknown encoding '\(encText)' (expected coo, bitmask or dense)")
        }
        let shape = try artifact.shapeAttribute(g)
        let count = try artifact.countAttribute(g, shape: shape, object: object)
        let dtypeText = try artifact.string(g, "dtype")
        guard let dtype = LocusDType(rawValue: dtypeText), dtype.isFloatingPoint else {
            throw LocusError(file: path, object: object + "@dtype", "is '\(dtypeText)', expected float32, float64, float16 or bfloat16")
        }
        let nnz = try artifact.int64(g, "nnz")
        guard nnz <= Int64(count) else { throw LocusError(file: path, object: object + "@nnz", "is \(nnz), more than count \(count)") }
        let norm = try artifact.double(g, "l2-norm")
        let t = TaskVectorTensor(name: name, link: link, shape: shape, count: count, encoding: encoding, dtype: dtype, nnz: Int(nnz), l2Norm: norm)
        try checkLayout(g, t, path: path)
        return t
    }

    /// Dataset presence, types and lengths for the tensor's encoding.
    static func checkLayout(_ g: Group, _ t: TaskVectorTensor, path: String) throws {
        let object = t.objectPath
        func dataset(_ name: String) throws -> Dataset {
            guard let ds = g.datasetIfPresent(name) else { throw LocusError(file: path, object: "\(object)/\(name)", "required dataset is missing") }
            return ds
        }
        let values = try dataset("values")
        guard t.dtype.accepts(values.type) else {
            throw LocusError(file: path, object: object + "/values", "HDF5 type does not match dtype '\(t.dtype.rawValue)'")
        }
        switch t.encoding {
        case .dense:
            guard values.space.dims == t.shape, values.space.kind != .null else {
                throw LocusError(file: path, object: object + "/values", "has shape \(values.shape), expected \(t.shape)")
            }
        case .coo:
            let ix = try dataset("indices")
            let m = LocusDType.matching(ix.type)
            guard m == .uint32 || m == .uint64 else { throw LocusError(file: path, object: object + "/indices", "must be uint32 or uint64") }
            if m == .uint32 && t.count > (1 << 32) { throw LocusError(file: path, object: object + "/indices", "uint32 indices cannot address \(t.count) elements") }
            guard ix.shape.count == 1, values.shape.count == 1, ix.elementCount == values.elementCount else {
                throw LocusError(file: path, object: object, "indices \(ix.shape) and values \(values.shape) must be 1-D of equal length")
            }
            guard ix.elementCount <= t.count else { throw LocusError(file: path, object: object + "/indices", "\(ix.elementCount) entries exceed count \(t.count)") }
        case .bitmask:
            let m = try dataset("mask")
            guard LocusDType.matching(m.type) == .uint8, m.shape.count == 1 else {
                throw LocusError(file: path, object: object + "/mask", "packed bits must be a 1-D uint8 dataset")
            }
            try PackedBits.checkLength(m, bits: t.count, path: path, object: object + "/mask")
            guard values.shape.count == 1, values.elementCount <= t.count else {
                throw LocusError(file: path, object: object + "/values", "must be 1-D with at most \(t.count) values")
            }
        }
        try CheckpointReader.checkStorage(values, logicalBytes: values.elementCount * t.dtype.byteSize, path: path, object: object + "/values")
    }

    public func tensor(named name: String) -> TaskVectorTensor? { tensors.first { TensorName.same($0.name, name) } }

    /// Stored entries as (sorted flat indices, values), unscaled; invariants checked.
    public func readSparse(_ t: TaskVectorTensor) throws -> (indices: [Int], values: [Float]) {
        let (i, v) = try TaskVectorReader.readSparse(t, in: group, path: path)
        return (i, v.map(Float.init))
    }

    /// Stored entries with float64 values (exact for every value dtype).
    public func readSparse64(_ t: TaskVectorTensor) throws -> (indices: [Int], values: [Double]) {
        try TaskVectorReader.readSparse(t, in: group, path: path)
    }

    static func readSparse(_ t: TaskVectorTensor, in group: Group, path: String) throws -> (indices: [Int], values: [Double]) {
        let object = t.objectPath
        return try withContext(file: path, object: object) {
            let g = try group.openGroup(t.link)
            let vds = try g.openDataset("values")
            var values = [Double](repeating: 0, count: vds.elementCount)
            try values.withUnsafeMutableBytes { try vds.read(into: $0, memType: .nativeDouble) }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw LocusError(file: path, object: object + "/values", "value \(bad) is \(values[bad]); task vectors must be finite")
            }
            switch t.encoding {
            case .dense:
                var idx: [Int] = [], vals: [Double] = []
                for (i, v) in values.enumerated() where v != 0 { idx.append(i); vals.append(v) }
                return (idx, vals)
            case .coo:
                let ids = try g.openDataset("indices")
                var raw = [UInt64](repeating: 0, count: ids.elementCount)
                try raw.withUnsafeMutableBytes { try ids.read(into: $0, memType: .nativeUInt64) }
                for k in raw.indices {
                    guard raw[k] < UInt64(t.count) else {
                        throw LocusError(file: path, object: object + "/indices", "index \(raw[k]) at position \(k) is out of range [0, \(t.count))")
                    }
                    guard k == 0 || raw[k] > raw[k - 1] else {
                        throw LocusError(file: path, object: object + "/indices", "indices are not strictly increasing at position \(k) (\(raw[k - 1]) then \(raw[k]))")
                    }
                }
                return (raw.map { Int($0) }, values)
            case .bitmask:
                let packed = try PackedBits.read(try g.openDataset("mask"), bits: t.count, path: path, object: object + "/mask")
                let ones = BitPacking.popcount(packed)
                guard ones == values.count else {
                    throw LocusError(file: path, object: object + "/values", "holds \(values.count) values but the mask has \(ones) set bits")
                }
                var idx: [Int] = []
                idx.reserveCapacity(ones)
                for (byteIndex, byte) in packed.enumerated() where byte != 0 {   // skip empty bytes: sparse masks are mostly zero
                    var bits = byte
                    while bits != 0 {
                        idx.append(byteIndex << 3 | bits.trailingZeroBitCount)
                        bits &= bits - 1
                    }
                }
                return (idx, values)
            }
        }
    }

    /// The tensor as dense float32 values (unscaled).
    public func readDense(_ t: TaskVectorTensor) throws -> [Float] {
        let (idx, vals) = try readSparse(t)
        var out = [Float](repeating: 0, count: t.count)
        for (i, v) in zip(idx, vals) { out[i] = v }
        return out
    }
}
