import CHDF5

/// An HDF5 dataspace (H5S): scalar, simple (n-dimensional) or null.
public final class Dataspace: @unchecked Sendable {
    public let id: hid_t
    init(owning id: hid_t) { self.id = id }
    deinit { if H5Iis_valid(id) > 0 { H5Sclose(id) } }

    public static func scalar() throws -> Dataspace {
        HDF5Library.silence()
        return Dataspace(owning: try HDF5Library.check(H5Screate(H5S_SCALAR), "create scalar dataspace"))
    }

    /// A fixed-size simple dataspace; an empty `dims` gives a scalar dataspace.
    public static func simple(_ dims: [Int]) throws -> Dataspace {
        if dims.isEmpty { return try scalar() }
        HDF5Library.silence()
        var d = dims.map { hsize_t($0) }
        return Dataspace(owning: try HDF5Library.check(H5Screate_simple(Int32(d.count), &d, nil), "create dataspace \(dims)"))
    }

    public enum Kind: Sendable, Equatable { case scalar, simple, null }
    public var kind: Kind {
        switch H5Sget_simple_extent_type(id) {
        case H5S_SCALAR: return .scalar
        case H5S_NULL: return .null
        default: return .simple
        }
    }

    /// The shape; `[]` for scalar and null dataspaces.
    public var dims: [Int] {
        let n = Int(H5Sget_simple_extent_ndims(id))
        guard n > 0 else { return [] }
        var d = [hsize_t](repeating: 0, count: n)
        H5Sget_simple_extent_dims(id, &d, nil)
        return d.map { Int(clamping: $0) }
    }

    /// Number of elements (1 for scalar, 0 for null).
    public var elementCount: Int { Int(clamping: H5Sget_simple_extent_npoints(id)) }

    /// Selects the block `[start, start + count)` of a simple dataspace.
    public func selectHyperslab(start: [Int], count: [Int]) throws {
        let rank = dims.count
        guard start.count == rank, count.count == rank else {
            throw HDF5Error(file: nil, object: nil, operation: "select hyperslab", stack: "start \(start) and count \(count) must have \(rank) entries, the dataspace's rank")
        }
        var s = start.map { hsize_t($0) }, c = count.map { hsize_t($0) }
        try HDF5Library.check(status: H5Sselect_hyperslab(id, H5S_SELECT_SET, &s, nil, &c, nil), "select hyperslab")
    }
}
