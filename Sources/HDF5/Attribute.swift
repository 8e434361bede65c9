import CHDF5
#if canImport(Glibc)
import Glibc
#endif

/// An HDF5 attribute (H5A) attached to a file, group or dataset.
public final class Attribute: @unchecked Sendable {
    public let id: hid_t
    public let name: String
    public let filePath: String
    /// Path of the object the attribute is attached to.
    public let ownerPath: String
    init(id: hid_t, name: String, filePath: String, ownerPath: String) {
        self.id = id; self.name = name; self.filePath = filePath; self.ownerPath = ownerPath
    }
    deinit { if H5Iis_valid(id) > 0 { H5Aclose(id) } }

    // An attribute's type and space never change once it exists: each is fetched once (every
    // H5Aget_type / H5Aget_space call makes a new id), which matters when a reader checks
    // hundreds of tensors' attributes.
    public private(set) lazy var type = Datatype(owning: H5Aget_type(id))
    public private(set) lazy var space = Dataspace(owning: H5Aget_space(id))

    var qualifiedName: String { "\(ownerPath)@\(name)" }
    func fail(_ op: String) -> HDF5Error { HDF5Library.error(op, file: filePath, object: qualifiedName) }

    /// Reads the raw values converted to `memType` into `buffer` (whose size must match).
    public func read(into buffer: UnsafeMutableRawBufferPointer, memType: Datatype) throws {
        let needed = space.elementCount * memType.size
        guard buffer.count == needed else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "buffer of \(buffer.count) bytes, need \(needed)")
        }
        if needed == 0 { return }
        if H5Aread(id, memType.id, buffer.baseAddress) < 0 { throw fail("read attribute") }
    }

    /// All values as strings (scalar → one element). Accepts variable- and fixed-length strings.
    public func readStrings(maxCount: Int = 1 << 20) throws -> [String] {
        let t = type
        guard t.typeClass == .string else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "expected a string, found another type")
        }
        let n = space.elementCount
        guard n <= maxCount else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "\(n) strings exceed the limit of \(maxCount)")
        }
        return try StringIO.read(count: n, fileType: t, filePath: filePath, object: qualifiedName) { mem, buf in
            H5Aread(id, mem, buf)
        }
    }
}

/// Reading and writing string data shared by attributes and datasets.
enum StringIO {
    static func read(count n: Int, fileType t: Datatype, filePath: String, object: String,
                     _ readFn: (hid_t, UnsafeMutableRawPointer?) -> herr_t) throws -> [String] {
        if n == 0 { return [] }
        if t.isVariableString {
            let mem = try Datatype.variableUTF8String()
            var ptrs = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
            let status = ptrs.withUnsafeMutableBytes { readFn(mem.id, $0.baseAddress) }
            if status < 0 { throw HDF5Library.error("read strings", file: filePath, object: object) }
            defer { for p in ptrs where p != nil { locus_h5_free(p) } }
            return ptrs.map { $0.map { String(cString: $0) } ?? "" }
        }
        let size = t.size
        guard size > 0, n <= Int.max / size else {
            throw HDF5Error(file: filePath, object: object, operation: "read strings", stack: "bad fixed string size \(size)")
        }
        let mem = Datatype(owning: H5Tcopy(t.id))
        var bytes = [UInt8](repeating: 0, count: n * size)
        let status = bytes.withUnsafeMutableBytes { readFn(mem.id, $0.baseAddress) }
        if status < 0 { throw HDF5Library.error("read strings", file: filePath, object: object) }
        return (0..<n).map { i in
            var s = bytes[(i * size)..<((i + 1) * size)]
            if let z = s.firstIndex(of: 0) { s = s[..<z] }
            while let last = s.last, last == 0x20, H5Tget_strpad(t.id) == H5T_STR_SPACEPAD { s = s.dropLast() }
            return String(decoding: s, as: UTF8.self)
        }
    }

    /// Runs `body` with a C array of `char *` pointing at NUL-terminated copies of `strings`.
    static func withCStrings<R>(_ strings: [String], _ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        let copies = strings.map { strdup($0) }
        defer { copies.forEach { free($0) } }
        return try copies.withUnsafeBytes { try body($0.baseAddress!) }
    }
}

// MARK: - Attribute access on files, groups and datasets

extension HDF5Object {
    public func hasAttribute(_ name: String) -> Bool {
        HDF5Library.silence()
        let r = H5Aexists(id, name)
        if r < 0 { _ = HDF5Library.takeErrorStack() }
        return r > 0
    }

    public func attribute(_ name: String) throws -> Attribute {
        HDF5Library.silence()
        let a = H5Aopen(id, name, locus_H5P_DEFAULT())
        if a < 0 { throw HDF5Library.error("open attribute", file: filePath, object: "\(path)@\(name)") }
        return Attribute(id: a, name: name, filePath: filePath, ownerPath: path)
    }

    /// The attribute `name`, or nil when the object has none: one search of the object header
    /// where `hasAttribute` followed by `attribute` makes two. An attribute that exists but
    /// cannot be opened is an error.
    public func attributeIfPresent(_ name: String) throws -> Attribute? {
        HDF5Library.silence()
        let a = H5Aopen(id, name, locus_H5P_DEFAULT())
        if a >= 0 { return Attribute(id: a, name: name, filePath: filePath, ownerPath: path) }
        let failure = HDF5Library.error("open attribute", file: filePath, object: "\(path)@\(name)")
        if hasAttribute(name) { throw failure }
        return nil
    }

    public var attributeNames: [String] {
        HDF5Library.silence()
        // Walk by index until HDF5 says there are no more (H5Oget_info's signature differs between versions).
        var names: [String] = []
        var i: hsize_t = 0
        while true {
            let len = H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, locus_H5P_DEFAULT())
            if len < 0 { _ = HDF5Library.takeErrorStack(); break }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            H5Aget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, buf.count, locus_H5P_DEFAULT())
            names.append(decodeCString(buf))
            i += 1
        }
        return names
    }

    public func deleteAttribute(_ name: String) throws {
        HDF5Library.silence()
        try check(status: H5Adelete(id, name), "delete attribute @\(name)")
    }

    private func createAttribute(_ name: String, type: Datatype, space: Dataspace) throws -> Attribute {
        HDF5Library.silence()
        if hasAttribute(name) { try deleteAttribute(name) }
        let a = H5Acreate2(id, name, type.id, space.id, locus_H5P_DEFAULT(), locus_H5P_DEFAULT())
        if a < 0 { throw HDF5Library.error("create attribute", file: filePath, object: "\(path)@\(name)") }
        return Attribute(id: a, name: name, filePath: filePath, ownerPath: path)
    }

    /// Writes a scalar variable-length UTF-8 string attribute (replacing any existing one).
    public func setAttribute(_ name: String, _ value: String) throws {
        let t = try Datatype.variableUTF8String()
        let a = try createAttribute(name, type: t, space: try .scalar())
        try StringIO.withCStrings([value]) { p in
            if H5Awrite(a.id, t.id, p) < 0 { throw a.fail("write attribute") }
        }
    }

    public func setAttribute(_ name: String, _ value: Int64) throws { try setAttribute(name, [value], scalar: true) }
    public func setAttribute(_ name: String, _ value: Double) throws { try setAttribute(name, [value], scalar: true) }

    /// Writes a 1-D int64 attribute (a zero-length one for an empty array).
    public func setAttribute(_ name: String, _ values: [Int64], scalar: Bool = false) throws {
        let a = try createAttribute(name, type: .int64LE, space: scalar ? try .scalar() : try .simple([values.count]))
        if values.isEmpty { return }
        try values.withUnsafeBytes { b in
            if H5Awrite(a.id, Datatype.nativeInt64.id, b.baseAddress) < 0 { throw a.fail("write attribute") }
        }
    }
    public func setAttribute(_ name: String, _ values: [Double], scalar: Bool = false) throws {
        let a = try createAttribute(name, type: .float64LE, space: scalar ? try .scalar() : try .simple([values.count]))
        if values.isEmpty { return }
        try values.withUnsafeBytes { b in
            if H5Awrite(a.id, Datatype.nativeDouble.id, b.baseAddress) < 0 { throw a.fail("write attribute") }
        }
    }

    // Typed reads with a clear error naming the attribute and what was expected.
    public func stringAttribute(_ name: String) throws -> String { try attribute(name).string() }
    public func int64Attributes(_ name: String, maxCount: Int = 64) throws -> [Int64] { try attribute(name).int64s(maxCount: maxCount) }
    public func int64Attribute(_ name: String) throws -> Int64 { try attribute(name).int64() }
    public func doubleAttributes(_ name: String, maxCount: Int = 64) throws -> [Double] { try attribute(name).doubles(maxCount: maxCount) }
    public func doubleAttribute(_ name: String) throws -> Double { try attribute(name).double() }
}

// MARK: - Typed reads of an open attribute

extension Attribute {
    /// One string (a scalar, or a single element).
    public func string() throws -> String {
        let values = try readStrings(maxCount: 1)
        guard space.kind == .scalar || values.count == 1, let v = values.first else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "expected one string, found \(values.count)")
        }
        return v
    }

    public func int64s(maxCount: Int = 64) throws -> [Int64] {
        try numbers(maxCount: maxCount, classes: [.integer], expected: "integers", memType: .nativeInt64)
    }
    public func int64() throws -> Int64 { try single(try int64s(maxCount: 1), expected: "integer") }
    public func doubles(maxCount: Int = 64) throws -> [Double] {
        try numbers(maxCount: maxCount, classes: [.float, .integer], expected: "numbers", memType: .nativeDouble)
    }
    public func double() throws -> Double { try single(try doubles(maxCount: 1), expected: "number") }

    /// At most `maxCount` values, whose type class must be one of `classes`, converted by HDF5
    /// to `memType` (the element type `T`).
    private func numbers<T: Numeric>(maxCount: Int, classes: [Datatype.Class], expected: String, memType: Datatype) throws -> [T] {
        guard classes.contains(type.typeClass) else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "expected \(expected)")
        }
        let n = space.elementCount
        guard n <= maxCount else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "\(n) values exceed the limit of \(maxCount)")
        }
        var out = [T](repeating: 0, count: n)
        try out.withUnsafeMutableBytes { try read(into: $0, memType: memType) }
        return out
    }

    private func single<T>(_ values: [T], expected: String) throws -> T {
        guard values.count == 1 else {
            throw HDF5Error(file: filePath, object: qualifiedName, operation: "read attribute", stack: "expected one \(expected), found \(values.count)")
        }
        return values[0]
    }
}
