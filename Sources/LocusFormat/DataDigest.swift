import HDF5

/// Per-dataset digests of stored data (spec §1.8): the §1.5 tensor digest (SHA-256 over the SHA-256
/// of 1 MiB leaves) of a dataset's raw little-endian bytes, stored as its `digest` attribute,
/// `"sha256:" + hex`. A checkpoint's fingerprint already covers its tensors; scores and task
/// vectors carry summaries that a changed bit may leave within rounding, so their datasets carry a
/// digest, and a changed bit anywhere in their data is reported with the dataset's name.
enum DataDigest {
    static let attribute = "digest"

    static func of(_ bytes: UnsafeRawBufferPointer) -> String {
        var d = TensorDigester()
        d.update(bytes)
        return "sha256:" + d.finalize().map { String(format2hex: $0) }.joined()
    }

    /// The attribute value for bytes fed to `d` in order (streaming writers).
    static func finalize(_ d: inout TensorDigester) -> String {
        "sha256:" + d.finalize().map { String(format2hex: $0) }.joined()
    }

    static func store(_ ds: Dataset, _ bytes: UnsafeRawBufferPointer) throws {
        try ds.setAttribute(attribute, of(bytes))
    }

    /// The digest of what the dataset stores, read with its own file type as memory type (no
    /// conversion: the stored bytes) in blocks of whole rows.
    static func compute(_ ds: Dataset, blockBytes: Int = 64 << 20) throws -> String {
        let type = ds.type
        let shape = ds.shape
        guard type.size > 0, let count = checkedProduct(shape), count.multipliedReportingOverflow(by: type.size).overflow == false else {
            throw LocusError(file: ds.filePath, object: ds.path, "shape \(shape) is too large")
        }
        var d = TensorDigester()
        try CheckpointReader.readRowBlocks(ds, shape: shape, elementBytes: type.size, memType: type, blockBytes: blockBytes,
                                           path: ds.filePath, object: ds.path) { d.update($0) }
        return "sha256:" + d.finalize().map { String(format2hex: $0) }.joined()
    }
}
