import CHDF5
#if canImport(Glibc)
import Glibc
#endif

/// An open HDF5 file (H5F). Closes itself when released; `close()` closes it now and reports errors.
public final class File: HDF5Object, @unchecked Sendable {
    public private(set) var id: hid_t
    public let filePath: String
    public var path: String { "/" }
    private var isOpen = true

    private init(id: hid_t, path: String) { self.id = id; self.filePath = path }
    deinit { if isOpen, H5Iis_valid(id) > 0 { H5Fclose(id) } }

    public enum Mode: Sendable { case readOnly, readWrite }

    /// Opens an existing file.
    public static func open(_ path: String, mode: Mode = .readOnly) throws -> File {
        HDF5Library.silence()
        let flags = mode == .readOnly ? locus_H5F_ACC_RDONLY() : locus_H5F_ACC_RDWR()
        let id = H5Fopen(path, flags, locus_H5P_DEFAULT())
        if id < 0 { throw HDF5Library.error("open HDF5 file", file: path, object: nil) }
        return File(id: id, path: path)
    }

    /// Options for a new file.
    public struct CreateOptions: Sendable {
        /// Start every allocation of at least `alignmentThreshold` bytes at a multiple of `alignment` (nil: no alignment).
        public var alignment: Int? = nil
        public var alignmentThreshold: Int = 1
        public init(alignment: Int? = nil, alignmentThreshold: Int = 1) {
            self.alignment = alignment; self.alignmentThreshold = alignmentThreshold
        }
    }

    /// Creates (truncates) a file whose objects are readable by HDF5 ≥ 1.10.
    public static func create(_ path: String, options: CreateOptions = .init()) throws -> File {
        HDF5Library.silence()
        let fapl = try PropertyList.fileAccess()
        try fapl.limitFormatToV110()
        try fapl.closeStrongly()
        if let a = options.alignment { try fapl.setAlignment(threshold: options.alignmentThreshold, alignment: a) }
        let id = H5Fcreate(path, locus_H5F_ACC_TRUNC(), locus_H5P_DEFAULT(), fapl.id)
        if id < 0 { throw HDF5Library.error("create HDF5 file", file: path, object: nil) }
        return File(id: id, path: path)
    }

    /// Whether HDF5 recognises `path` as an HDF5 file (false for missing or unreadable files).
    public static func isHDF5(_ path: String) -> Bool {
        HDF5Library.silence()
        let r = H5Fis_hdf5(path)
        if r < 0 { _ = HDF5Library.takeErrorStack() }
        return r > 0
    }

    public var root: Group {
        get throws {
            HDF5Library.silence()
            let g = try check(H5Gopen2(id, "/", locus_H5P_DEFAULT()), "open root group")
            return Group(id: g, filePath: filePath, path: "/")
        }
    }

    /// Size of the file in bytes as HDF5 sees it.
    public var size: Int {
        var s: hsize_t = 0
        H5Fget_filesize(id, &s)
        return Int(clamping: s)
    }

    /// The operating-system descriptor libhdf5 reads the file through (its default sec2 driver),
    /// or nil for another driver. Mapping this descriptor, rather than opening the path again,
    /// guarantees that data and metadata come from the same file even if the path is replaced.
    public var descriptor: Int32? {
        HDF5Library.silence()
        var handle: UnsafeMutableRawPointer? = nil
        guard H5Fget_vfd_handle(id, locus_H5P_DEFAULT(), &handle) >= 0, let handle else {
            _ = HDF5Library.takeErrorStack()
            return nil
        }
        return handle.assumingMemoryBound(to: Int32.self).pointee
    }

    public func flush() throws {
        HDF5Library.silence()
        try check(status: H5Fflush(id, H5F_SCOPE_GLOBAL), "flush file")
    }

    /// Closes the file; afterwards every object opened from it is invalid.
    public func close() throws {
        guard isOpen else { return }
        isOpen = false
        HDF5Library.silence()
        try check(status: H5Fclose(id), "close file")
    }
}
