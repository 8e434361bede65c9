import CHDF5

/// What files, groups and datasets share: an id, where they are (for error messages) and attributes.
public protocol HDF5Object: AnyObject {
    var id: hid_t { get }
    /// Path of the file on disk.
    var filePath: String { get }
    /// Path of the object inside the file.
    var path: String { get }
}

extension HDF5Object {
    func fail(_ operation: String, _ name: String? = nil) -> HDF5Error {
        HDF5Library.error(operation, file: filePath, object: name.map { childPath($0) } ?? path)
    }
    func check(_ id: hid_t, _ operation: String, _ name: String? = nil) throws -> hid_t {
        if id < 0 { throw fail(operation, name) }
        return id
    }
    func check<T: BinaryInteger>(status: T, _ operation: String, _ name: String? = nil) throws {
        if status < 0 { throw fail(operation, name) }
    }
    func childPath(_ name: String) -> String { path == "/" ? "/" + name : path + "/" + name }
}
