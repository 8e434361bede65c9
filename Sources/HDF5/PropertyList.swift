import CHDF5

/// An HDF5 property list (H5P) with the handful of settings Locus uses, each named for what it does.
public final class PropertyList: @unchecked Sendable {
    public let id: hid_t
    init(owning id: hid_t) { self.id = id }
    deinit { if H5Iis_valid(id) > 0 { H5Pclose(id) } }

    static func create(_ cls: hid_t, _ what: String) throws -> PropertyList {
        HDF5Library.silence()
        return PropertyList(owning: try HDF5Library.check(H5Pcreate(cls), "create \(what) property list"))
    }

    public static func fileAccess() throws -> PropertyList { try create(locus_H5P_FILE_ACCESS(), "file access") }
    public static func datasetCreate() throws -> PropertyList { try create(locus_H5P_DATASET_CREATE(), "dataset create") }

    // MARK: file access
    /// Object versions no newer than HDF5 1.10, so files open in every HDF5 ≥ 1.10.
    public func limitFormatToV110() throws {
        try HDF5Library.check(status: H5Pset_libver_bounds(id, H5F_LIBVER_EARLIEST, H5F_LIBVER_V110), "set format version bounds")
    }
    /// Every allocation of at least `threshold` bytes starts at a multiple of `alignment`.
    public func setAlignment(threshold: Int, alignment: Int) throws {
        try HDF5Library.check(status: H5Pset_alignment(id, hsize_t(threshold), hsize_t(alignment)), "set alignment")
    }
    /// Closing the file closes every object still open in it, so the file is complete on disk
    /// when `close()` returns (needed before fsync + rename).
    public func closeStrongly() throws {
        try HDF5Library.check(status: H5Pset_fclose_degree(id, H5F_CLOSE_STRONG), "set close degree")
    }
    public func setMetadataBlockSize(_ bytes: Int) throws {
        try HDF5Library.check(status: H5Pset_meta_block_size(id, hsize_t(bytes)), "set metadata block size")
    }

    // MARK: dataset create
    public func setContiguous() throws { try HDF5Library.check(status: H5Pset_layout(id, H5D_CONTIGUOUS), "set contiguous layout") }
    public func setChunk(_ dims: [Int]) throws {
        var d = dims.map { hsize_t($0) }
        try HDF5Library.check(status: H5Pset_chunk(id, Int32(d.count), &d), "set chunk \(dims)")
    }
    public func addShuffle() throws { try HDF5Library.check(status: H5Pset_shuffle(id), "add shuffle filter") }
    public func addDeflate(level: Int) throws { try HDF5Library.check(status: H5Pset_deflate(id, UInt32(level)), "add deflate filter") }
    public func addFletcher32() throws { try HDF5Library.check(status: H5Pset_fletcher32(id), "add fletcher32 filter") }
    /// Allocate storage at creation (so the data offset is known) and never write fill values
    /// (every byte is written by us anyway).
    public func allocateEarlyWithoutFill() throws {
        try HDF5Library.check(status: H5Pset_alloc_time(id, H5D_ALLOC_TIME_EARLY), "set allocation time")
        try HDF5Library.check(status: H5Pset_fill_time(id, H5D_FILL_TIME_NEVER), "set fill time")
    }

    public enum Layout: Sendable, Equatable { case compact, contiguous, chunked, virtual, other }
    public var layout: Layout {
        switch H5Pget_layout(id) {
        case H5D_COMPACT: return .compact
        case H5D_CONTIGUOUS: return .contiguous
        case H5D_CHUNKED: return .chunked
        case H5D_VIRTUAL: return .virtual
        default: return .other
        }
    }
    public var chunkDims: [Int]? {
        guard layout == .chunked else { return nil }
        var d = [hsize_t](repeating: 0, count: 32)
        let n = H5Pget_chunk(id, 32, &d)
        return n > 0 ? d.prefix(Int(n)).map { Int($0) } : nil
    }

    /// Filter ids in pipeline order (1 deflate, 2 shuffle, 3 fletcher32, 4 szip, 32000 lzf, ...).
    public var filters: [Int] {
        let n = H5Pget_nfilters(id)
        guard n > 0 else { return [] }
        return (0..<n).map { i in
            var flags: UInt32 = 0, nelmts: Int = 0, config: UInt32 = 0
            var name = [CChar](repeating: 0, count: 64)
            return Int(H5Pget_filter2(id, UInt32(i), &flags, &nelmts, nil, name.count, &name, &config))
        }
    }
}
