import HDF5

/// What a tensor without a mask entry is (spec §4).
public enum AbsentTensors: String, Sendable, CaseIterable, Codable { case frozen, trainable }

/// One tensor's mask as its metadata describes it.
public struct MaskTensor: StoredTensor, Sendable, Equatable {
    public var name: String
    public var link: String
    public var shape: [Int]
    public var count: Int
    public var ones: Int
    public var density: Double { count == 0 ? 0 : Double(ones) / Double(count) }
}

/// Writes a mask artifact: bitpacked uint8 per tensor, 1 = trainable / selected.
public final class MaskWriter {
    private let writer: ArtifactWriter
    private var totalCount = 0, totalOnes = 0, tensorCount = 0
    private var names = Set<[UInt8]>()
    public var target: String { writer.target }

    public init(path: String, baseFingerprint: String, absentTensors: AbsentTensors = .frozen, provenance: Provenance? = Provenance()) throws {
        writer = try ArtifactWriter(target: path, kind: .mask, aligned: false, baseFingerprint: baseFingerprint, provenance: provenance)
        try writer.guarded { try writer.root.setAttribute("absent-tensors", absentTensors.rawValue) }
    }

    public func add(name: String, shape: [Int], bits: [Bool]) throws {
        try add(name: name, shape: shape, packed: BitPacking.pack(bits))
    }

    /// Adds an already packed mask (spec §1.6 bit order).
    public func add(name: String, shape: [Int], packed: [UInt8]) throws {
        let link = TensorName.linkName(for: name)
        let object = "/tensors/\(link)"
        try writer.guarded(object: object) {
            let count = try checkedNewTensor(name, shape: shape, object: object)
            guard packed.count == BitPacking.byteCount(bits: count) else {
                throw LocusError(file: target, object: object, "\(packed.count) packed bytes for \(count) bits, expected \(BitPacking.byteCount(bits: count))")
            }
            guard BitPacking.paddingIsClear(packed, count: count) else {
                throw LocusError(file: target, object: object, "padding bits after bit \(count) are set")
            }
            let ones = BitPacking.popcount(packed)
            let ds = try createDataset(link, shape: shape, count: count)
            try packed.withUnsafeBytes { try ds.write($0, memType: .nativeUInt8); try DataDigest.store(ds, $0) }
            try ds.setAttribute("ones", Int64(ones))
            totalCount += count; totalOnes += ones; tensorCount += 1
        }
    }

    /// A mask written in pieces: `beginTensor`, then `appendBits` with consecutive runs of bits
    /// (of any length: a partial byte is carried to the next run). A `DatasetAppender` writes the
    /// packed bytes in whole chunks and digests them (§1.8). The dataset and its attributes are
    /// those `add` writes; `ones` is set when the last bit arrives.
    private var open: (object: String, dataset: Dataset, appender: DatasetAppender, count: Int, bitsDone: Int, ones: Int)?
    private var carry: UInt8 = 0

    public func beginTensor(name: String, shape: [Int]) throws {
        let link = TensorName.linkName(for: name)
        let object = "/tensors/\(link)"
        try writer.guarded(object: object) {
            guard open == nil else { throw LocusError(file: target, object: object, "previous mask '\(open!.object)' is incomplete") }
            let count = try checkedNewTensor(name, shape: shape, object: object)
            let ds = try createDataset(link, shape: shape, count: count)
            let bytes = BitPacking.byteCount(bits: count)
            open = (object, ds, DatasetAppender(ds, elementBytes: 1, memType: .nativeUInt8,
                                                chunkElements: ArtifactWriter.chunkElements(count: bytes, elementBytes: 1)), count, 0, 0)
            carry = 0
            if count == 0 { try endTensor() }
        }
    }

    /// Appends the next bits of the open mask (spec §1.6 order).
    public func appendBits(_ bits: UnsafeBufferPointer<Bool>) throws {
        guard !bits.isEmpty else { return }
        guard let o = open else { return try writer.guarded { throw LocusError(file: target, "no mask is open for writing") } }
        try writer.guarded(object: o.object) {
            guard o.bitsDone + bits.count <= o.count else { throw LocusError(file: target, object: o.object, "more bits than the shape holds") }
            var bit = o.bitsDone, ones = o.ones
            var packed: [UInt8] = []
            packed.reserveCapacity(bits.count / 8 + 1)
            for b in bits {
                if b { carry |= 1 << UInt8(bit & 7); ones += 1 }
                bit += 1
                if bit & 7 == 0 || bit == o.count { packed.append(carry); carry = 0 }
            }
            try packed.withUnsafeBytes { try o.appender.append($0) }
            open = (o.object, o.dataset, o.appender, o.count, bit, ones)
            if bit == o.count { try endTensor() }
        }
    }

    /// The element count of a new mask tensor, after checking its name (valid, not seen before) and shape.
    private func checkedNewTensor(_ name: String, shape: [Int], object: String) throws -> Int {
        if let problem = TensorName.problem(with: name) { throw LocusError(file: target, object: object, problem) }
        guard names.insert(TensorName.key(name)).inserted else { throw LocusError(file: target, object: object, "duplicate tensor name") }
        guard let count = checkedProduct(shape) else { throw LocusError(file: target, object: object, "invalid shape \(shape)") }
        return count
    }

    /// The packed-bits dataset of a mask tensor with every attribute but `ones` (spec §4).
    private func createDataset(_ link: String, shape: [Int], count: Int) throws -> Dataset {
        let ds = try writer.createCompressible(writer.tensors, link, type: .uint8LE, count: BitPacking.byteCount(bits: count))
        try ds.setAttribute("encoding-type", "packed-bits")
        try ds.setAttribute("bitorder", "little")
        try ds.setAttribute("shape", shape.map(Int64.init))
        try ds.setAttribute("count", Int64(count))
        return ds
    }

    private func endTensor() throws {
        guard let o = open else { return }
        try o.dataset.setAttribute("ones", Int64(o.ones))
        try o.appender.finish()
        totalCount += o.count; totalOnes += o.ones; tensorCount += 1
        open = nil
    }

    public func finish() throws {
        try writer.guarded {
            if let o = open { throw LocusError(file: target, object: o.object, "mask data is incomplete") }
            try writer.root.setAttribute("tensor-count", Int64(tensorCount))
            try writer.root.setAttribute("count", Int64(totalCount))
            try writer.root.setAttribute("ones", Int64(totalOnes))
        }
        try writer.finish()
    }
}

/// Reads a mask artifact.
public final class MaskReader {
    public let artifact: ArtifactFile
    public let baseFingerprint: String
    public let absentTensors: AbsentTensors
    public let tensors: [MaskTensor]
    private let group: Group
    public var path: String { artifact.path }

    public convenience init(path: String) throws { try self.init(ArtifactFile.open(path, expecting: .mask)) }

    public init(_ artifact: ArtifactFile) throws {
        self.artifact = artifact
        let path = artifact.path
        baseFingerprint = try artifact.requiredBaseFingerprint()
        let absentText = try artifact.string(artifact.root, "absent-tensors")
        guard let absent = AbsentTensors(rawValue: absentText) else {
            throw LocusError(file: path, object: "/@absent-tensors", "is '\(absentText)', expected 'frozen' or 'trainable'")
        }
        absentTensors = absent
        (group, tensors) = try artifact.describeTensors { try MaskReader.describe($0, artifact: artifact, name: $1, link: $2) }
    }

    static func describe(_ group: Group, artifact: ArtifactFile, name: String, link: String) throws -> MaskTensor {
        let path = artifact.path, object = "/tensors/\(link)"
        guard let ds = group.datasetIfPresent(link) else { throw LocusError(file: path, object: object, "expected a packed-bits dataset") }
        try PackedBits.check(ds, artifact: artifact, object: object, encodingAttribute: true)
        let shape = try artifact.shapeAttribute(ds)
        let count = try artifact.countAttribute(ds, shape: shape, object: object)
        try PackedBits.checkLength(ds, bits: count, path: path, object: object)
        let ones = try artifact.int64(ds, "ones")
        guard ones <= Int64(count) else { throw LocusError(file: path, object: object + "@ones", "is \(ones), more than count \(count)") }
        return MaskTensor(name: name, link: link, shape: shape, count: count, ones: Int(ones))
    }

    public func tensor(named name: String) -> MaskTensor? { tensors.first { TensorName.same($0.name, name) } }

    /// The mask fingerprint (spec §4): §1.5 over the packed-bits datasets taken as uint8 tensors of
    /// shape [ceil(count/8)], so it identifies exactly which entries are selected.
    public func fingerprint() throws -> String {
        var h = FingerprintHasher()
        for t in tensors {
            let packed = try readPacked(t)
            h.beginTensor(name: t.name, dtype: .uint8, shape: [packed.count])
            packed.withUnsafeBytes { h.update(bytes: $0) }
        }
        return h.finalize()
    }

    /// The packed bytes, with the padding-bit rule checked.
    public func readPacked(_ t: MaskTensor) throws -> [UInt8] {
        let ds = try withContext(file: path, object: t.objectPath) { try group.openDataset(t.link) }
        return try PackedBits.read(ds, bits: t.count, path: path, object: t.objectPath)
    }

    public func read(_ t: MaskTensor) throws -> [Bool] { BitPacking.unpack(try readPacked(t), count: t.count) }
}

/// Reading and checking packed-bits datasets (masks and bitmask task-vector entries).
enum PackedBits {
    static func check(_ ds: Dataset, artifact: ArtifactFile, object: String, encodingAttribute: Bool) throws {
        let path = artifact.path
        guard LocusDType.matching(ds.type) == .uint8 else {
            throw LocusError(file: path, object: object, "packed bits must be stored as uint8 (H5T_STD_U8LE)")
        }
        guard ds.space.kind == .simple, ds.shape.count == 1 else {
            throw LocusError(file: path, object: object, "packed bits must be a 1-D dataset, found shape \(ds.shape)")
        }
        if encodingAttribute {
            let enc = try artifact.string(ds, "encoding-type")
            guard enc == "packed-bits" else { throw LocusError(file: path, object: object + "@encoding-type", "is '\(enc)', expected 'packed-bits'") }
            let order = try artifact.string(ds, "bitorder")
            guard order == "little" else { throw LocusError(file: path, object: object + "@bitorder", "is '\(order)', expected 'little'") }
        }
    }

    static func checkLength(_ ds: Dataset, bits: Int, path: String, object: String) throws {
        let expected = BitPacking.byteCount(bits: bits)
        guard ds.elementCount == expected else {
            throw LocusError(file: path, object: object, "holds \(ds.elementCount) bytes, expected ceil(\(bits)/8) = \(expected)")
        }
        try CheckpointReader.checkStorage(ds, logicalBytes: expected, path: path, object: object)
    }

    static func read(_ ds: Dataset, bits: Int, path: String, object: String) throws -> [UInt8] {
        try checkLength(ds, bits: bits, path: path, object: object)
        var out = [UInt8](repeating: 0, count: ds.elementCount)
        try withContext(file: path, object: object) { try out.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeUInt8) } }
        guard BitPacking.paddingIsClear(out, count: bits) else {
            throw LocusError(file: path, object: object, "padding bits after bit \(bits) are set (they must be 0)")
        }
        return out
    }
}
