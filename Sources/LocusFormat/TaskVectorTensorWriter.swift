import HDF5

/// Writes one task-vector tensor whose entries arrive in consecutive ranges of flat indices, so a
/// tensor of any size is written with memory bounded by the largest range (plus one chunk per
/// dataset). The number of stored entries is declared up front: it decides the encoding (spec §5
/// cost rule) and the datasets' lengths. Every range is checked as the in-memory writer checks a
/// whole tensor (indices in range and strictly increasing, values finite before and after rounding
/// to the value type); `nnz`, `l2-norm` and each dataset's digest (spec §1.8) are accumulated in
/// entry order, so the file is the same as one written from the whole tensor at once.
public final class TaskVectorTensorWriter {
    public let shape: [Int]
    public let count: Int
    public let dtype: LocusDType
    public let encoding: TaskVectorEncoding
    /// Entries declared for the tensor.
    public let stored: Int
    /// Flat index where the next range starts.
    public private(set) var position = 0
    let group: Group
    let object: String
    private unowned let parent: TaskVectorWriter
    private var written = 0, nnz = 0, squares = 0.0
    private var previousIndex = -1
    private let values: DatasetAppender?     // coo and bitmask: the stored values, front to back
    private let secondary: DatasetAppender?   // coo indices or bitmask mask
    private let denseValues: Dataset?
    private var denseDigest = TensorDigester()
    private var carry: UInt8 = 0               // bitmask: bits of a byte that a range ended inside

    init(parent: TaskVectorWriter, group: Group, object: String, shape: [Int], count: Int, dtype: LocusDType, stored: Int) throws {
        self.parent = parent; self.group = group; self.object = object
        self.shape = shape; self.count = count; self.dtype = dtype; self.stored = stored
        encoding = TaskVectorEncoding.choose(count: count, stored: stored, valueBytes: dtype.byteSize)
        let valueType = try dtype.hdf5Type()
        switch encoding {
        case .dense:
            denseValues = try group.createDataset("values", type: valueType, shape: shape)
            values = nil
            secondary = nil
        case .bitmask:
            let maskBytes = (count + 7) / 8
            let m = try parent.compressible(group, "mask", type: .uint8LE, count: maskBytes)
            secondary = DatasetAppender(m, elementBytes: 1, memType: .nativeUInt8, chunkElements: ArtifactWriter.chunkElements(count: maskBytes, elementBytes: 1))
            values = DatasetAppender(try group.createDataset("values", type: valueType, shape: [stored]), elementBytes: dtype.byteSize,
                                     memType: valueType, chunkElements: max(1, min(stored, (8 << 20) / dtype.byteSize)))
            denseValues = nil
        case .coo:
            let wide = count > (1 << 32)
            let ix = try parent.compressible(group, "indices", type: wide ? .uint64LE : .uint32LE, count: stored)
            secondary = DatasetAppender(ix, elementBytes: wide ? 8 : 4, memType: wide ? .nativeUInt64 : .nativeUInt32,
                                        chunkElements: ArtifactWriter.chunkElements(count: stored, elementBytes: wide ? 8 : 4))
            values = DatasetAppender(try group.createDataset("values", type: valueType, shape: [stored]), elementBytes: dtype.byteSize,
                                     memType: valueType, chunkElements: max(1, min(stored, (8 << 20) / dtype.byteSize)))
            denseValues = nil
        }
    }

    /// Adds the entries with flat index in [position, end): sorted unique absolute `indices` and
    /// their float64 `values` (stored rounded to `dtype`). For `dense` storage of rank > 1 the
    /// range must be whole rows. The last range (`end == count`) completes the tensor.
    public func append(upTo end: Int, indices: UnsafeBufferPointer<Int>, values v: UnsafeBufferPointer<Double>) throws {
        try parent.guarded(object: object) {
            let a = position
            guard end >= a, end <= count, indices.count == v.count else {
                throw LocusError(file: parent.target, object: object, "range \(a)..<\(end) of \(count) elements with \(indices.count) indices and \(v.count) values")
            }
            guard written + v.count <= stored else {
                throw LocusError(file: parent.target, object: object, "more than the \(stored) declared entries")
            }
            for k in 0..<indices.count {
                let i = indices[k]
                guard i >= 0, i < count else { throw LocusError(file: parent.target, object: object, "index \(i) is outside [0, \(count))") }
                guard i > previousIndex else { throw LocusError(file: parent.target, object: object, "indices are not strictly increasing at position \(written + k)") }
                guard i >= a, i < end else { throw LocusError(file: parent.target, object: object, "index \(i) is outside the range \(a)..<\(end)") }
                guard v[k].isFinite else { throw LocusError(file: parent.target, object: object, "value at flat index \(i) is \(v[k]); task vectors must be finite") }
                previousIndex = i
            }
            // What is stored, after rounding to the value type; statistics in entry order.
            let storedBytes = HalfPrecision.encode(Array(v), as: dtype)
            let rounded = TaskVectorWriter.decode(storedBytes, dtype: dtype)
            for k in 0..<rounded.count {
                let r = rounded[k]
                guard r.isFinite else { throw LocusError(file: parent.target, object: object, "value \(v[k]) at flat index \(indices[k]) overflows \(dtype.rawValue)") }
                if r != 0 { nnz += 1 }
                squares += r * r
            }
            switch encoding {
            case .dense: try writeDense(a, end, indices, v)
            case .bitmask:
                try storedBytes.withUnsafeBytes { try values!.append($0) }
                try appendMaskBits(a, end, indices)
            case .coo:
                try storedBytes.withUnsafeBytes { try values!.append($0) }
                if count > (1 << 32) {
                    try indices.map { UInt64($0) }.withUnsafeBytes { try secondary!.append($0) }
                } else {
                    try indices.map { UInt32($0) }.withUnsafeBytes { try secondary!.append($0) }
                }
            }
            written += v.count
            position = end
        }
    }

    /// Writes the datasets' remaining bytes and digests and the tensor's attributes.
    public func finish() throws {
        try parent.guarded(object: object) {
            guard position == count, written == stored else {
                throw LocusError(file: parent.target, object: object, "incomplete: \(position) of \(count) elements and \(written) of \(stored) entries written")
            }
            if let d = denseValues {
                try d.setAttribute(DataDigest.attribute, DataDigest.text(denseDigest.finalize()))
            } else {
                try values?.finish()
                try secondary?.finish()
            }
        }
        try parent.close(self, nnz: nnz, squares: squares)
    }

    private func writeDense(_ a: Int, _ b: Int, _ indices: UnsafeBufferPointer<Int>, _ v: UnsafeBufferPointer<Double>) throws {
        guard b > a else { return }
        let rowLength = shape.count > 1 ? shape.dropFirst().reduce(1, *) : 1
        guard shape.count <= 1 || (a % rowLength == 0 && b % rowLength == 0) else {
            throw LocusError(file: parent.target, object: object, "dense ranges must be whole rows (\(a)..<\(b), rows of \(rowLength))")
        }
        var full = [Double](repeating: 0, count: b - a)
        for k in 0..<indices.count { full[indices[k] - a] = v[k] }
        let bytes = HalfPrecision.encode(full, as: dtype)
        let ds = denseValues!
        try bytes.withUnsafeBytes { raw in
            let type = try dtype.hdf5Type()
            if shape.isEmpty || (a == 0 && b == count) {
                try ds.write(raw, memType: type)
            } else {
                try ds.write(raw, memType: type, start: [a / rowLength] + Array(repeating: 0, count: shape.count - 1),
                             count: [(b - a) / rowLength] + shape.dropFirst())
            }
            denseDigest.update(raw)
        }
    }

    private func appendMaskBits(_ a: Int, _ b: Int, _ indices: UnsafeBufferPointer<Int>) throws {
        guard b > a else { return }
        let firstByte = a >> 3, endByte = (b + 7) >> 3
        var bytes = [UInt8](repeating: 0, count: endByte - firstByte)
        if a & 7 != 0 { bytes[0] = carry }
        for i in indices { bytes[(i >> 3) - firstByte] |= 1 << UInt8(i & 7) }
        if b & 7 != 0 && b != count {
            carry = bytes.removeLast()   // the byte continues in the next range
        } else {
            carry = 0
        }
        try bytes.withUnsafeBytes { try secondary!.append($0) }
    }
}
