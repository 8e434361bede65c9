import HDF5
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// Entries of one block: offsets (relative to the block's first flat index) and values, in
/// increasing offset order. The storage is allocated once for the largest block and reused;
/// pages that are never written are never touched.
public final class EntryBlock {
    public let capacity: Int
    public let offsets: UnsafeMutablePointer<Int32>
    public let values: UnsafeMutablePointer<Float>
    /// With `exact`: the values in float64, exactly as stored (times the stream's scale), for
    /// arithmetic that must reproduce float64 task vectors bit for bit (`apply`).
    public let values64: UnsafeMutablePointer<Double>?
    public var count = 0

    public init(capacity: Int, exact: Bool = false) {
        self.capacity = max(capacity, 1)
        offsets = .allocate(capacity: self.capacity)
        values = .allocate(capacity: self.capacity)
        values64 = exact ? .allocate(capacity: self.capacity) : nil
    }
    deinit { offsets.deallocate(); values.deallocate(); values64?.deallocate() }
}

/// Reusable windows and scratch for `TaskVectorEntryStream`s read one after another.
public final class EntryStreamBuffers {
    var maskWindow: [UInt8] = [], indexWindow: [UInt64] = []
    var doubleScratch: [Double] = [], floatScratch: [Float] = []
    public init() {}
}

/// Reads one task-vector tensor's stored entries in consecutive ranges of flat indices, holding
/// only a fixed window of the mask or the indices (≤ 2 MB) besides the caller's block — memory
/// does not depend on the tensor's size. Every check `TaskVectorReader.readSparse` makes is made on
/// the way (finite values, indices in range and strictly increasing, padding bits clear, as many
/// stored values as set mask bits); a violation throws when the range holding it is read.
/// Values are delivered scaled by `scale` as `Float(Double(v) · scale)`, and for `dense` storage
/// only the nonzero ones, exactly as `readSparse64` followed by that scaling.
public final class TaskVectorEntryStream {
    public let tensor: TaskVectorTensor
    public let path: String
    let scale: Double
    let valuesDS: Dataset
    let storedValues: Int
    let maskDS: Dataset?
    /// The mask's chunks, decoded on this thread rather than inside libhdf5 (`RawChunkReader`).
    let maskChunks: RawChunkReader?
    let indicesDS: Dataset?
    /// For float32 values stored contiguously, little-endian: the descriptor libhdf5 reads the
    /// file through and the values' byte offset in it. They are then read with `pread`, outside
    /// libhdf5's one-call-at-a-time lock.
    private let valueSpan: (descriptor: Int32, offset: Int)?
    let rowLength: Int
    /// Flat index where the next range starts.
    public private(set) var position = 0
    private var valuePosition = 0
    private let buffers: EntryStreamBuffers
    private var windowStart = 0, windowEnd = 0
    private var previousIndex: UInt64? = nil

    /// Window sizes: 1 MiB of mask bytes (8 Mi entries), 256 Ki indices — the chunk sizes Locus writes.
    static let maskWindowBytes = 1 << 20
    static let indexWindowCount = 1 << 18

    /// `buffers` can be shared by streams that are not read at the same time (one vector's tensors, one after another).
    public init(_ reader: TaskVectorReader, _ t: TaskVectorTensor, scale: Double, buffers: EntryStreamBuffers = EntryStreamBuffers()) throws {
        tensor = t
        self.buffers = buffers
        path = reader.path
        self.scale = scale
        rowLength = t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : 1
        let object = t.objectPath
        let g = try withContext(file: path, object: object) { try reader.group.openGroup(t.link) }
        valuesDS = try withContext(file: path, object: object + "/values") { try g.openDataset("values") }
        storedValues = valuesDS.elementCount
        switch t.encoding {
        case .dense: maskDS = nil; indicesDS = nil
        case .coo: maskDS = nil; indicesDS = try withContext(file: path, object: object + "/indices") { try g.openDataset("indices") }
        case .bitmask:
            // Its length was checked against `count` when the reader described the tensor.
            maskDS = try withContext(file: path, object: object + "/mask") { try g.openDataset("mask") }
            indicesDS = nil
        }
        maskChunks = maskDS.flatMap { RawChunkReader($0) }
        valueSpan = TaskVectorEntryStream.contiguousFloat32(valuesDS, count: storedValues, encoding: t.encoding, file: reader.artifact.file)
    }

    /// Where the values can be read directly: a sparse tensor's float32 little-endian values in one
    /// contiguous block of exactly their size (what Locus writes), in a file read through a descriptor.
    private static func contiguousFloat32(_ ds: Dataset, count: Int, encoding: TaskVectorEncoding, file: File) -> (descriptor: Int32, offset: Int)? {
        guard encoding != .dense, count > 0, 1.littleEndian == 1 else { return nil }
        let type = ds.type
        guard LocusDType.matching(type) == .float32, type.isLittleEndian, ds.creationProperties.layout == .contiguous,
              let offset = ds.dataOffset, ds.storageSize == count * 4, let fd = file.descriptor else { return nil }
        return (fd, offset)
    }

    /// Counts of mask chunks decoded on the reading thread and of mask ranges read through libhdf5.
    public var maskChunkReads: (decoded: Int, throughLibrary: Int) { (maskChunks?.decodedChunks ?? 0, maskChunks?.libraryReads ?? 0) }
    /// Whether stored values are read with `pread` rather than through libhdf5.
    public var readsValuesDirectly: Bool { valueSpan != nil }

    /// Appends to `block` the entries with flat index in [position, end), offsets relative to
    /// `position`, and moves `position` to `end`. `block` must have room for `end − position` entries.
    /// For `dense` storage of rank > 1, `position` and `end` must be whole rows.
    public func next(upTo end: Int, into block: EntryBlock) throws {
        let a = position
        precondition(end >= a && end <= tensor.count && end - a <= block.capacity - block.count && end - a <= Int(Int32.max))
        switch tensor.encoding {
        case .dense: try nextDense(a, end, block)
        case .coo: try nextCOO(a, end, block)
        case .bitmask: try nextBitmask(a, end, block)
        }
        position = end
        if end == tensor.count { try finish() }
    }

    // MARK: values

    /// Reads stored values [start, start + n) of the 1-D values dataset and writes them, scaled, to `out`.
    private func readValues(_ start: Int, _ n: Int, to out: UnsafeMutablePointer<Float>, exact out64: UnsafeMutablePointer<Double>? = nil) throws {
        guard n > 0 else { return }
        let object = tensor.objectPath + "/values"
        if tensor.dtype == .float32 {
            let dst = UnsafeMutableBufferPointer(start: out, count: n)
            if let (fd, offset) = valueSpan {
                // Within the dataset's storage, whose size was checked against the count at open.
                let at = offset + 4 * start
                switch FileIO.readFully(fd, into: UnsafeMutableRawBufferPointer(dst), at: at) {
                case .complete: break
                case .endOfFile: throw LocusError(file: path, object: object, "cannot read values \(start)..<\(start + n) at byte \(at): the file ends first")
                case .failed(let code): throw LocusError(file: path, object: object, "cannot read values \(start)..<\(start + n) at byte \(at): \(String(cString: strerror(code)))")
                }
            } else {
                try withContext(file: path, object: object) {
                    try valuesDS.read(into: UnsafeMutableRawBufferPointer(dst), memType: .nativeFloat, start: [start], count: [n])
                }
            }
            for j in 0..<n where !dst[j].isFinite {
                throw LocusError(file: path, object: object, "value \(start + j) is \(dst[j]); task vectors must be finite")
            }
            if let out64 { for j in 0..<n { out64[j] = Double(dst[j]) * scale } }
            if scale != 1 { let s = scale; for j in 0..<n { dst[j] = Float(Double(dst[j]) * s) } }
        } else {
            if buffers.doubleScratch.count < n { buffers.doubleScratch = [Double](repeating: 0, count: n) }
            try buffers.doubleScratch.withUnsafeMutableBufferPointer { d in
                let part = UnsafeMutableBufferPointer(rebasing: d[0..<n])
                try withContext(file: path, object: object) {
                    try valuesDS.read(into: UnsafeMutableRawBufferPointer(part), memType: .nativeDouble, start: [start], count: [n])
                }
                for j in 0..<n {
                    guard part[j].isFinite else { throw LocusError(file: path, object: object, "value \(start + j) is \(part[j]); task vectors must be finite") }
                    out[j] = Float(part[j] * scale)
                    out64?[j] = part[j] * scale
                }
            }
        }
    }

    private func nextDense(_ a: Int, _ b: Int, _ block: EntryBlock) throws {
        let n = b - a
        guard n > 0 else { return }
        let object = tensor.objectPath + "/values"
        let start: [Int], count: [Int]
        if tensor.shape.isEmpty { start = []; count = [] } else if tensor.shape.count == 1 { start = [a]; count = [n] } else {
            precondition(a % rowLength == 0 && b % rowLength == 0, "dense task-vector blocks must be whole rows")
            start = [a / rowLength] + Array(repeating: 0, count: tensor.shape.count - 1)
            count = [n / rowLength] + tensor.shape.dropFirst()
        }
        func read<T>(_ buffer: inout [T], _ type: Datatype) throws {
            try buffer.withUnsafeMutableBytes { raw in
                let part = UnsafeMutableRawBufferPointer(rebasing: raw[0..<(n * MemoryLayout<T>.stride)])
                try withContext(file: path, object: object) {
                    if tensor.shape.isEmpty { try valuesDS.read(into: part, memType: type) } else { try valuesDS.read(into: part, memType: type, start: start, count: count) }
                }
            }
        }
        var k = block.count
        if tensor.dtype == .float32 {
            if buffers.floatScratch.count < n { buffers.floatScratch = [Float](repeating: 0, count: n) }
            try read(&buffers.floatScratch, .nativeFloat)
            try buffers.floatScratch.withUnsafeBufferPointer { v in
                for j in 0..<n where v[j] != 0 || !v[j].isFinite {
                    guard v[j].isFinite else { throw LocusError(file: path, object: object, "value \(a + j) is \(v[j]); task vectors must be finite") }
                    block.offsets[k] = Int32(j); block.values[k] = scale == 1 ? v[j] : Float(Double(v[j]) * scale)
                    block.values64?[k] = Double(v[j]) * scale; k += 1
                }
            }
        } else {
            if buffers.doubleScratch.count < n { buffers.doubleScratch = [Double](repeating: 0, count: n) }
            try read(&buffers.doubleScratch, .nativeDouble)
            try buffers.doubleScratch.withUnsafeBufferPointer { v in
                for j in 0..<n where v[j] != 0 || !v[j].isFinite {
                    guard v[j].isFinite else { throw LocusError(file: path, object: object, "value \(a + j) is \(v[j]); task vectors must be finite") }
                    block.offsets[k] = Int32(j); block.values[k] = Float(v[j] * scale)
                    block.values64?[k] = v[j] * scale; k += 1
                }
            }
        }
        block.count = k
    }

    private func nextCOO(_ a: Int, _ b: Int, _ block: EntryBlock) throws {
        let ds = indicesDS!, object = tensor.objectPath + "/indices"
        var k = block.count
        let first = k
        let limit = UInt64(b), count = UInt64(tensor.count)
        scan: while valuePosition + (k - first) < storedValues {
            let p = valuePosition + (k - first)
            if p < windowStart || p >= windowEnd {
                windowStart = p
                windowEnd = min(storedValues, p + TaskVectorEntryStream.indexWindowCount)
                if buffers.indexWindow.count < windowEnd - windowStart { buffers.indexWindow = [UInt64](repeating: 0, count: windowEnd - windowStart) }
                let n = windowEnd - windowStart
                try buffers.indexWindow.withUnsafeMutableBytes { raw in
                    try withContext(file: path, object: object) {
                        try ds.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<(8 * n)]), memType: .nativeUInt64, start: [windowStart], count: [n])
                    }
                }
            }
            let stop: Bool = try buffers.indexWindow.withUnsafeBufferPointer { w in
                var q = p
                while q < windowEnd {
                    let i = w[q - windowStart]
                    if i >= count { throw LocusError(file: path, object: object, "index \(i) at position \(q) is out of range [0, \(tensor.count))") }
                    if let prev = previousIndex, i <= prev {
                        throw LocusError(file: path, object: object, "indices are not strictly increasing at position \(q) (\(prev) then \(i))")
                    }
                    if i >= limit { return true }
                    previousIndex = i
                    block.offsets[k] = Int32(Int(i) - a); k += 1
                    q += 1
                }
                return false
            }
            if stop { break scan }
        }
        try readValues(valuePosition, k - first, to: block.values + first, exact: block.values64.map { $0 + first })
        valuePosition += k - first
        block.count = k
    }

    private func nextBitmask(_ a: Int, _ b: Int, _ block: EntryBlock) throws {
        guard b > a else { return }
        let ds = maskDS!, object = tensor.objectPath + "/mask"
        let totalBytes = ds.elementCount
        var k = block.count
        let first = k
        let firstByte = a >> 3, lastByte = (b - 1) >> 3
        var byte = firstByte
        while byte <= lastByte {
            if byte < windowStart || byte >= windowEnd {
                let w = TaskVectorEntryStream.maskWindowBytes
                windowStart = (byte / w) * w
                windowEnd = min(totalBytes, windowStart + w)
                if buffers.maskWindow.count < windowEnd - windowStart { buffers.maskWindow = [UInt8](repeating: 0, count: windowEnd - windowStart) }
                let n = windowEnd - windowStart
                try buffers.maskWindow.withUnsafeMutableBytes { raw in
                    try withContext(file: path, object: object) {
                        let window = UnsafeMutableRawBufferPointer(rebasing: raw[0..<n])
                        if let chunks = maskChunks { try chunks.read(from: windowStart, into: window) } else {
                            try ds.read(into: window, memType: .nativeUInt8, start: [windowStart], count: [n])
                        }
                    }
                }
            }
            let segmentEnd = min(lastByte, windowEnd - 1)
            buffers.maskWindow.withUnsafeBytes { w in
                // Eight mask bytes (64 positions) at a time, little-endian: bit j of the word is position 8·i + j.
                let offsets = block.offsets
                var i = byte
                while i <= segmentEnd {
                    let m = min(8, segmentEnd - i + 1)
                    var word: UInt64
                    if m == 8 { word = UInt64(littleEndian: w.loadUnaligned(fromByteOffset: i - windowStart, as: UInt64.self)) } else {
                        word = 0
                        for q in 0..<m { word |= UInt64(w[i - windowStart + q]) << UInt64(8 * q) }
                    }
                    if word != 0 {
                        let first = i << 3
                        if first < a { word &= ~0 << UInt64(a - first) }
                        if b - first < 64 { word &= (1 << UInt64(b - first)) &- 1 }
                        let base = Int32(first - a)
                        while word != 0 {
                            offsets[k] = base &+ Int32(word.trailingZeroBitCount); k += 1
                            word &= word &- 1
                        }
                    }
                    i += m
                }
            }
            if b == tensor.count && segmentEnd == lastByte {
                let last = buffers.maskWindow[lastByte - windowStart]
                if tensor.count & 7 != 0 && last >> UInt8(tensor.count & 7) != 0 {
                    throw LocusError(file: path, object: object, "padding bits after bit \(tensor.count) are set (they must be 0)")
                }
            }
            byte = segmentEnd + 1
        }
        let n = k - first
        guard valuePosition + n <= storedValues else { throw try mismatch() }
        try readValues(valuePosition, n, to: block.values + first, exact: block.values64.map { $0 + first })
        valuePosition += n
        block.count = k
    }

    /// The mask's set bits do not match the stored values: the same message `readSparse` gives.
    private func mismatch() throws -> LocusError {
        let packed = try PackedBits.read(maskDS!, bits: tensor.count, path: path, object: tensor.objectPath + "/mask")
        return LocusError(file: path, object: tensor.objectPath + "/values", "holds \(storedValues) values but the mask has \(BitPacking.popcount(packed)) set bits")
    }

    private func finish() throws {
        switch tensor.encoding {
        case .dense: break
        case .bitmask: if valuePosition != storedValues { throw try mismatch() }
        case .coo:
            if valuePosition != storedValues {
                // The scan stopped at an index ≥ count (or never reached it): report it as readSparse does.
                var i: UInt64 = 0
                try withContext(file: path, object: tensor.objectPath + "/indices") {
                    try withUnsafeMutableBytes(of: &i) { try indicesDS!.read(into: $0, memType: .nativeUInt64, start: [valuePosition], count: [1]) }
                }
                throw LocusError(file: path, object: tensor.objectPath + "/indices", "index \(i) at position \(valuePosition) is out of range [0, \(tensor.count))")
            }
        }
    }

    /// Calls `body` with consecutive chunks of the tensor's stored values in entry order (scaled;
    /// for `dense` storage only the nonzero ones) — the values without their positions, for
    /// passes that need only magnitudes. Reads ≤ 256 Ki values at a time. Positions are checked by
    /// the pass that uses them (`next`).
    public func forEachValueChunk(_ body: (UnsafeBufferPointer<Float>) throws -> Void) throws {
        let chunk = 1 << 18
        if tensor.encoding == .dense {
            guard tensor.count > 0 else { return }
            let rowsPerChunk = tensor.shape.count > 1 ? max(1, chunk / max(rowLength, 1)) : chunk
            let step = tensor.shape.count > 1 ? rowsPerChunk * rowLength : (tensor.shape.isEmpty ? 1 : chunk)
            let block = EntryBlock(capacity: min(step, tensor.count))
            var a = 0
            while a < tensor.count {
                let b = min(tensor.count, a + step)
                block.count = 0
                try nextDense(a, b, block)
                try body(UnsafeBufferPointer(start: block.values, count: block.count))
                a = b
            }
            return
        }
        var out = [Float](repeating: 0, count: min(chunk, max(storedValues, 1)))
        var p = 0
        while p < storedValues {
            let n = min(chunk, storedValues - p)
            try out.withUnsafeMutableBufferPointer { o in
                try readValues(p, n, to: o.baseAddress!)
                try body(UnsafeBufferPointer(rebasing: o[0..<n]))
            }
            p += n
        }
    }
}
