import CHDF5

/// An HDF5 dataset (H5D).
public final class Dataset: HDF5Object, @unchecked Sendable {
    public let id: hid_t
    public let filePath: String
    public let path: String
    init(id: hid_t, filePath: String, path: String) { self.id = id; self.filePath = filePath; self.path = path }
    deinit { if H5Iis_valid(id) > 0 { H5Dclose(id) } }

    public var type: Datatype { Datatype(owning: H5Dget_type(id)) }
    public var space: Dataspace { Dataspace(owning: H5Dget_space(id)) }
    public var shape: [Int] { space.dims }
    public var elementCount: Int { space.elementCount }
    public var creationProperties: PropertyList { PropertyList(owning: H5Dget_create_plist(id)) }

    /// Bytes the dataset occupies in the file (after compression).
    public var storageSize: Int { Int(clamping: H5Dget_storage_size(id)) }

    /// File offset of the raw data of a contiguous dataset with allocated storage, else nil.
    public var dataOffset: Int? {
        HDF5Library.silence()
        let o = H5Dget_offset(id)
        if o == haddr_t.max { _ = HDF5Library.takeErrorStack(); return nil }
        return Int(clamping: o)
    }

    /// Reads the stored (filtered) bytes of the chunk whose first element is at `coordinate` into
    /// `buffer` (resized as needed), as they are in the file, without undoing any filter. Returns
    /// their length and the mask of the filters that were skipped for this chunk (bit i: filter i),
    /// or nil when the chunk is not stored or its size is over `limit`. A short call, for decoding
    /// chunks outside libhdf5, whose thread-safe build runs one call at a time.
    public func readRawChunk(at coordinate: [Int], limit: Int, into buffer: inout [UInt8]) throws -> (count: Int, skippedFilters: UInt32)? {
        var offset = coordinate.map { hsize_t($0) }
        var size: hsize_t = 0
        HDF5Library.silence()
        guard H5Dget_chunk_storage_size(id, &offset, &size) >= 0 else { _ = HDF5Library.takeErrorStack(); return nil }
        guard size > 0, size <= hsize_t(limit) else { return nil }
        let n = Int(size)
        if buffer.count < n { buffer = [UInt8](repeating: 0, count: n) }
        var mask: UInt32 = 0
        let status = buffer.withUnsafeMutableBytes { H5Dread_chunk(id, locus_H5P_DEFAULT(), &offset, &mask, $0.baseAddress) }
        try check(status: status, "read raw chunk at \(coordinate)")
        return (n, mask)
    }

    /// Reads the whole dataset, or the block `[start, start + count)` (one entry per dimension),
    /// converted to `memType`; `buffer` must hold exactly the selected elements.
    public func read(into buffer: UnsafeMutableRawBufferPointer, memType: Datatype, start: [Int]? = nil, count: [Int]? = nil) throws {
        try transfer(buffer.count, memType: memType, block: start.map { ($0, count ?? []) }, operation: start == nil ? "read dataset" : "read dataset block") {
            H5Dread(id, memType.id, $0, $1, locus_H5P_DEFAULT(), buffer.baseAddress)
        }
    }

    /// Writes the whole dataset, or the block `[start, start + count)`, from `buffer` holding values of `memType`.
    public func write(_ buffer: UnsafeRawBufferPointer, memType: Datatype, start: [Int]? = nil, count: [Int]? = nil) throws {
        try transfer(buffer.count, memType: memType, block: start.map { ($0, count ?? []) }, operation: start == nil ? "write dataset" : "write dataset block") {
            H5Dwrite(id, memType.id, $0, $1, locus_H5P_DEFAULT(), buffer.baseAddress)
        }
    }

    /// One H5Dread/H5Dwrite (`call(memSpace, fileSpace)`) of the whole dataset or of `block`, after
    /// checking that the caller's buffer of `bufferBytes` holds exactly the selected elements.
    private func transfer(_ bufferBytes: Int, memType: Datatype, block: (start: [Int], count: [Int])?, operation: String,
                          _ call: (hid_t, hid_t) -> herr_t) throws {
        HDF5Library.silence()
        var n = 0, overflow = false
        if let block {
            guard block.start.count == block.count.count else {
                throw HDF5Error(file: filePath, object: path, operation: operation, stack: "a block needs a start and a count per dimension")
            }
            (n, overflow) = block.count.reduce(1, *).multipliedReportingOverflow(by: memType.size)
        } else {
            (n, overflow) = elementCount.multipliedReportingOverflow(by: memType.size)
        }
        guard !overflow, bufferBytes == n else {
            throw HDF5Error(file: filePath, object: path, operation: operation,
                            stack: "buffer of \(bufferBytes) bytes, \(block == nil ? "dataset" : "block") needs \(n)")
        }
        if n == 0 { return }
        guard let block else { return try check(status: call(locus_H5S_ALL(), locus_H5S_ALL()), operation) }
        let fileSpace = space
        try fileSpace.selectHyperslab(start: block.start, count: block.count)
        let memSpace = try Dataspace.simple(block.count)
        try check(status: call(memSpace.id, fileSpace.id), "\(operation) \(block.start)+\(block.count)")
    }

    /// All values as strings (scalar → one element).
    public func readStrings(maxCount: Int = 1 << 24) throws -> [String] {
        HDF5Library.silence()
        let t = type
        guard t.typeClass == .string else {
            throw HDF5Error(file: filePath, object: path, operation: "read dataset", stack: "expected strings, found another type")
        }
        let n = elementCount
        guard n <= maxCount else {
            throw HDF5Error(file: filePath, object: path, operation: "read dataset", stack: "\(n) strings exceed the limit of \(maxCount)")
        }
        return try StringIO.read(count: n, fileType: t, filePath: filePath, object: path) { mem, buf in
            H5Dread(id, mem, locus_H5S_ALL(), locus_H5S_ALL(), locus_H5P_DEFAULT(), buf)
        }
    }
}
