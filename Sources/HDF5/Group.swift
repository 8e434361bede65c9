import CHDF5

/// An HDF5 group (H5G). The file's root group is `file.root`.
public final class Group: HDF5Object, @unchecked Sendable {
    public let id: hid_t
    public let filePath: String
    public let path: String
    init(id: hid_t, filePath: String, path: String) { self.id = id; self.filePath = filePath; self.path = path }
    deinit { if H5Iis_valid(id) > 0 { H5Gclose(id) } }

    public enum ChildKind: Sendable, Equatable { case group, dataset, other }

    /// Whether a direct child link `name` exists.
    public func contains(_ name: String) -> Bool {
        HDF5Library.silence()
        let r = H5Lexists(id, name, locus_H5P_DEFAULT())
        if r < 0 { _ = HDF5Library.takeErrorStack() }
        return r > 0
    }

    /// What the child link `name` points at, or nil if there is no such link.
    public func kind(of name: String) -> ChildKind? {
        guard contains(name) else { return nil }
        // The object header's type, without opening the object (opening a dataset decodes its
        // layout, type, space and filters, which the caller does again when it opens it).
        var info = H5O_info_t()
        guard H5Oget_info_by_name2(id, name, &info, UInt32(H5O_INFO_BASIC), locus_H5P_DEFAULT()) >= 0 else {
            _ = HDF5Library.takeErrorStack(); return .other
        }
        switch info.type {
        case H5O_TYPE_GROUP: return .group
        case H5O_TYPE_DATASET: return .dataset
        default: return .other
        }
    }

    /// Names of the direct children in ascending byte order of their names.
    public func childNames() throws -> [String] {
        // One pass of H5Literate. Asking for the i-th name (H5Lget_name_by_idx) walks the group's
        // index from its start each time, which made listing a group of n links cost n² steps.
        final class Names { var list: [String] = [] }
        let names = Names()
        HDF5Library.silence()
        var index: hsize_t = 0
        let status = withExtendedLifetime(names) {
            H5Literate(id, H5_INDEX_NAME, H5_ITER_INC, &index, { _, name, _, data in
                guard let name, let data else { return -1 }
                Unmanaged<Names>.fromOpaque(data).takeUnretainedValue().list.append(String(cString: name))
                return 0
            }, Unmanaged.passUnretained(names).toOpaque())
        }
        try check(status: status, "list group")
        return names.list
    }

    /// A direct child opened as what it is, in one call (H5Oopen), instead of asking its kind first.
    public enum Child { case group(Group), dataset(Dataset), other }

    /// The child `name` if it is a dataset that opens, else nil.
    public func datasetIfPresent(_ name: String) -> Dataset? {
        if case .dataset(let ds)? = try? openChild(name) { return ds }
        _ = HDF5Library.takeErrorStack()
        return nil
    }

    /// The child `name` if it is a group that opens, else nil.
    public func groupIfPresent(_ name: String) -> Group? {
        if case .group(let g)? = try? openChild(name) { return g }
        _ = HDF5Library.takeErrorStack()
        return nil
    }

    /// Opens the child `name`: a group, a dataset, or `.other` (a committed datatype, which is closed).
    public func openChild(_ name: String) throws -> Child {
        HDF5Library.silence()
        let o = try check(H5Oopen(id, name, locus_H5P_DEFAULT()), "open object", name)
        switch H5Iget_type(o) {
        case H5I_GROUP: return .group(Group(id: o, filePath: filePath, path: childPath(name)))
        case H5I_DATASET: return .dataset(Dataset(id: o, filePath: filePath, path: childPath(name)))
        default: H5Oclose(o); return .other
        }
    }

    public func openGroup(_ name: String) throws -> Group {
        HDF5Library.silence()
        let g = try check(H5Gopen2(id, name, locus_H5P_DEFAULT()), "open group", name)
        return Group(id: g, filePath: filePath, path: childPath(name))
    }

    public func createGroup(_ name: String) throws -> Group {
        HDF5Library.silence()
        let g = try check(H5Gcreate2(id, name, locus_H5P_DEFAULT(), locus_H5P_DEFAULT(), locus_H5P_DEFAULT()), "create group", name)
        return Group(id: g, filePath: filePath, path: childPath(name))
    }

    public func openDataset(_ name: String) throws -> Dataset {
        HDF5Library.silence()
        let d = try check(H5Dopen2(id, name, locus_H5P_DEFAULT()), "open dataset", name)
        return Dataset(id: d, filePath: filePath, path: childPath(name))
    }

    /// Creates a dataset of `shape` (`[]` = scalar). Without `properties` the dataset is contiguous
    /// with storage allocated at once and no fill, the layout that can be memory-mapped.
    public func createDataset(_ name: String, type: Datatype, shape: [Int], properties: PropertyList? = nil) throws -> Dataset {
        HDF5Library.silence()
        let space = try Dataspace.simple(shape)
        let dcpl: PropertyList
        if let properties { dcpl = properties } else {
            dcpl = try .datasetCreate()
            try dcpl.setContiguous()
            try dcpl.allocateEarlyWithoutFill()
        }
        let d = try check(H5Dcreate2(id, name, type.id, space.id, locus_H5P_DEFAULT(), dcpl.id, locus_H5P_DEFAULT()), "create dataset", name)
        return Dataset(id: d, filePath: filePath, path: childPath(name))
    }

    /// Writes a scalar variable-length UTF-8 string dataset (used for JSON documents).
    @discardableResult
    public func createStringDataset(_ name: String, _ value: String) throws -> Dataset {
        try createStringDataset(name, [value], scalar: true)
    }

    /// Writes a 1-D (or scalar) variable-length UTF-8 string dataset.
    @discardableResult
    public func createStringDataset(_ name: String, _ values: [String], scalar: Bool = false) throws -> Dataset {
        let t = try Datatype.variableUTF8String()
        let dcpl = try PropertyList.datasetCreate()
        let d = try createDataset(name, type: t, shape: scalar ? [] : [values.count], properties: dcpl)
        if values.isEmpty { return d }
        try StringIO.withCStrings(values) { p in
            try d.check(status: H5Dwrite(d.id, t.id, locus_H5S_ALL(), locus_H5S_ALL(), locus_H5P_DEFAULT(), p), "write strings")
        }
        return d
    }
}
