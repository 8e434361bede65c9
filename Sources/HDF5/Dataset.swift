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

    /// Reads the whole dataset converted to `memType`; `buffer` must hold exactly the data.
    public func read(into buffer: UnsafeMutableRawBufferPointer, memType: Datatype) throws {
        HDF5Library.silence()
        let (n, overflow) = elementCount.multipliedReportingOverflow(by: memType.size)
        guard !overflow, buffer.count == n else {
            throw HDF5Error(file: filePath, object: path, operation: "read dataset", stack: "buffer of \(buffer.count) bytes, dataset needs \(n)")
        }
        if n == 0 { return }
        try check(status: H5Dread(id, memType.id, locus_H5S_ALL(), locus_H5S_ALL(), locus_H5P_DEFAULT(), buffer.baseAddress), "read dataset")
    }

    /// Reads the block `[start, start + count)` (one entry per dimension).
    public func read(into buffer: UnsafeMutableRawBufferPointer, memType: Datatype, start: [Int], count: [Int]) throws {
        HDF5Library.silence()
        let n = count.reduce(1, *) * memType.size
        guard buffer.count == n else {
            throw HDF5Error(file: filePath, object: path, operation: "read dataset block", stack: "buffer of \(buffer.count) bytes, block needs \(n)")
        }
        if n == 0 { return }
        let fileSpace = space
        try fileSpace.selectHyperslab(start: start, count: count)
        let memSpace = try Dataspace.simple(count)
        try check(status: H5Dread(id, memType.id, memSpace.id, fileSpace.id, locus_H5P_DEFAULT(), buffer.baseAddress), "read dataset block \(start)+\(count)")
    }

    /// Writes the whole dataset from `buffer`, holding values of `memType`.
    public func write(_ buffer: UnsafeRawBufferPointer, memType: Datatype) throws {
        HDF5Library.silence()
        let n = elementCount * memType.size
        guard buffer.count == n else {
            throw HDF5Error(file: filePath, object: path, operation: "write dataset", stack: "buffer of \(buffer.count) bytes, dataset needs \(n)")
        }
        if n == 0 { return }
        try check(status: H5Dwrite(id, memType.id, locus_H5S_ALL(), locus_H5S_ALL(), locus_H5P_DEFAULT(), buffer.baseAddress), "write dataset")
    }

    /// Writes the block `[start, start + count)`.
    public func write(_ buffer: UnsafeRawBufferPointer, memType: Datatype, start: [Int], count: [Int]) throws {
        HDF5Library.silence()
        let n = count.reduce(1, *) * memType.size
        guard buffer.count == n else {
            throw HDF5Error(file: filePath, object: path, operation: "write dataset block", stack: "buffer of \(buffer.count) bytes, block needs \(n)")
        }
        if n == 0 { return }
        let fileSpace = space
        try fileSpace.selectHyperslab(start: start, count: count)
        let memSpace = try Dataspace.simple(count)
        try check(status: H5Dwrite(id, memType.id, memSpace.id, fileSpace.id, locus_H5P_DEFAULT(), buffer.baseAddress), "write dataset block")
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
