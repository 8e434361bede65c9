import TorchCheckpoint

/// PyTorch checkpoints (`torch.save` zip archives; `pytorch_model.bin` and
/// `pytorch_model.bin.index.json` folders), read in place through `TorchCheckpointReader`.
enum TorchSource {
    static func open(path: String, key: String?, folder: Bool) throws -> any CheckpointSource {
        if folder {
            return try openShardedFolder(path, index: "pytorch_model.bin.index.json", single: "pytorch_model.bin") { file in
                let r = try reader(file, key: key)
                return (r.entries.map(\.name), try entries(r), nil)
            }
        }
        let r = try reader(path, key: key)
        return try ByteRangeSource(path: path, entries: try entries(r), metadata: nil)
    }

    static func reader(_ path: String, key: String?) throws -> TorchCheckpointReader {
        do { return try TorchCheckpointReader(path: path, key: key) } catch let e as TorchCheckpointError { throw locusError(e) }
    }

    /// The module's one-line message as a LocusError about the same file.
    static func locusError(_ e: TorchCheckpointError) -> LocusError {
        let text = e.description
        let prefix = e.path + ": "
        return LocusError(file: e.path, text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text)
    }

    static func entries(_ r: TorchCheckpointReader) throws -> [ByteRangeSource.Entry] {
        try r.entries.map { e in
            guard let dtype = LocusDType(rawValue: e.dtype.rawValue) else {
                throw LocusError(file: r.path, object: "tensor '\(e.name)'", "dtype \(e.dtype.rawValue) has no Locus equivalent")
            }
            let t = CheckpointTensor(name: e.name, link: TensorName.linkName(for: e.name), dtype: dtype, shape: e.shape, count: e.elementCount)
            return ByteRangeSource.Entry(tensor: t, file: r.path, object: "tensor '\(e.name)'") { offset, buffer in
                do { try r.read(e, fromByte: offset, into: buffer) } catch let err as TorchCheckpointError { throw locusError(err) }
            }
        }
    }
}
