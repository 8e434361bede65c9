import Foundation
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// How to open a checkpoint source: a key inside nested PyTorch containers and a renaming.
public struct CheckpointOpenOptions: Sendable {
    /// A dotted path to the state dict inside a PyTorch file (e.g. `state_dict` or `model.ema`).
    public var key: String?
    public var renaming: TensorRenaming?
    public init(key: String? = nil, renaming: TensorRenaming? = nil) { self.key = key; self.renaming = renaming }

    /// What the command line asked for, for every checkpoint a command opens; a task-local so
    /// that library functions taking paths honour it without threading it through every call.
    @TaskLocal public static var current = CheckpointOpenOptions()
}

/// The kinds of input `openCheckpoint` recognises, by content.
public enum CheckpointSourceKind: String, Sendable {
    case locus, safetensors, safetensorsFolder = "safetensors-folder", torch, torchFolder = "torch-folder"
}

/// Opens any checkpoint source (see `CheckpointSource`), detected by content, not extension.
public func openCheckpoint(path: String, options: CheckpointOpenOptions = CheckpointOpenOptions.current) throws -> any CheckpointSource {
    let raw = try openCheckpointUnrenamed(path: path, key: options.key)
    guard let renaming = options.renaming, !renaming.isIdentity else { return raw }
    return try RenamedSource(raw, renaming: renaming)
}

/// Opens the source without renaming (what `openCheckpoint` wraps).
public func openCheckpointUnrenamed(path: String, key: String? = nil) throws -> any CheckpointSource {
    let kind = try detectCheckpointKind(path: path)
    if key != nil && kind != .torch && kind != .torchFolder {
        throw RemediableError(LocusError(file: path, "is a \(kind.rawValue) source; a key selects a state dict inside a PyTorch file only"), .leaveOut(setting: "key"))
    }
    let verification = ReadVerification.current
    if verification.enabled && kind != .locus { DataVerifier.noteSource(path, kind, verification) }
    switch kind {
    case .locus: return try CheckpointReader(path: path)
    case .safetensors: return try SafeTensorsSource.file(path)
    case .safetensorsFolder: return try SafeTensorsSource.folder(path)
    case .torch, .torchFolder: return try TorchSource.open(path: path, key: key, folder: kind == .torchFolder)
    }
}

/// Decides what `path` holds from its first bytes (a folder from the files in it).
public func detectCheckpointKind(path: String) throws -> CheckpointSourceKind {
    var st = stat()
    guard stat(path, &st) == 0 else { throw LocusError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
    if (st.st_mode & S_IFMT) == S_IFDIR {
        for (file, kind) in [("model.safetensors.index.json", CheckpointSourceKind.safetensorsFolder), ("model.safetensors", .safetensorsFolder),
                             ("pytorch_model.bin.index.json", .torchFolder), ("pytorch_model.bin", .torchFolder)]
        where FileManager.default.fileExists(atPath: path + "/" + file) {
            return kind
        }
        throw LocusError(file: path, "is a folder without model.safetensors(.index.json) or pytorch_model.bin(.index.json); expected a Hugging Face model folder")
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else { throw LocusError(file: path, "is not a regular file or folder") }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw LocusError(file: path, "cannot open for reading: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var head = [UInt8](repeating: 0, count: 16)
    let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 16, 0) }
    let bytes = Array(head.prefix(max(n, 0)))
    if bytes.starts(with: [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]) { return .locus }
    if bytes.starts(with: [0x50, 0x4b, 0x03, 0x04]) { return .torch }   // zip: torch.save's format
    if bytes.count >= 9, bytes[8] == UInt8(ascii: "{") { return .safetensors }
    if bytes.first == 0x80 { return .torch }   // a pickle protocol marker: legacy torch.save
    throw LocusError(file: path, "is neither a Locus .h5 checkpoint, a safetensors file, nor a PyTorch checkpoint (unrecognised first bytes)")
}

/// A safetensors file, or a Hugging Face folder of them, read in place.
public enum SafeTensorsSource {
    static func open(_ path: String) throws -> SafeTensorsReader {
        do { return try SafeTensorsReader(path: path) } catch let e as SafeTensorsError {
            throw LocusError(file: e.path, object: e.object.map { "tensor '\($0)'" }, e.message)
        }
    }

    static func dtype(_ e: SafeTensorsEntry, file: String) throws -> LocusDType {
        guard let d = LocusDType(safeTensors: e.dtype) else {
            throw LocusError(file: file, object: "tensor '\(e.name)'", "dtype \(e.dtype.rawValue) has no Locus equivalent (supported: \(LocusDType.allCases.map { $0.safeTensors.rawValue }.joined(separator: ", ")))")
        }
        return d
    }

    static func entries(_ reader: SafeTensorsReader, only wanted: ((String) -> Bool)? = nil) throws -> [ByteRangeSource.Entry] {
        // Reading straight from a map saves a copy per block; a file that shrank since the header
        // was checked is caught by the bounds of the map (then reads fall back to pread and fail there).
        let map = MappedFile(descriptor: reader.descriptor)
        return try reader.entries.filter { wanted?($0.name) ?? true }.map { e in
            let d = try dtype(e, file: reader.path)
            let t = CheckpointTensor(name: e.name, link: e.name, dtype: d, shape: e.shape, count: e.elementCount)
            var entry = ByteRangeSource.Entry(tensor: t, file: reader.path, object: "tensor '\(e.name)'") { offset, buffer in
                do { try reader.read(e, fromByte: offset, into: buffer) } catch let err as SafeTensorsError {
                    throw LocusError(file: err.path, object: err.object.map { "tensor '\($0)'" }, err.message)
                }
            }
            if let map, let bytes = map.slice(offset: reader.dataSectionOffset + e.dataBegin, count: e.byteCount) { entry.mapped = (map, bytes) }
            return entry
        }
    }

    public static func file(_ path: String) throws -> ByteRangeSource {
        let r = try open(path)
        return try ByteRangeSource(path: path, entries: try entries(r), metadata: r.metadata)
    }

    /// A folder with `model.safetensors.index.json` (every shard checked against the index) or a
    /// single `model.safetensors`.
    public static func folder(_ dir: String) throws -> ByteRangeSource {
        try openShardedFolder(dir, index: "model.safetensors.index.json", single: "model.safetensors") { file in
            let r = try open(file)
            return (r.entries.map(\.name), try entries(r), r.metadata)
        }
    }
}

/// Opens a Hugging Face folder: `single` alone, or the shards `index` lists, each checked against
/// the index (missing shard, a tensor in two shards, a tensor in a shard but not in the index or
/// the other way round, shard names leaving the folder).
func openShardedFolder(_ dir: String, index indexName: String, single: String,
                       openShard: (String) throws -> (names: [String], entries: [ByteRangeSource.Entry], metadata: [String: String]?)) throws -> ByteRangeSource {
    let indexPath = dir + "/" + indexName
    guard FileManager.default.fileExists(atPath: indexPath) else {
        let s = try openShard(dir + "/" + single)
        return try ByteRangeSource(path: dir, entries: s.entries, metadata: s.metadata)
    }
    let index = try ShardIndex.read(indexPath)
    var list: [ByteRangeSource.Entry] = []
    var metadata = index.metadata
    for shard in index.shards {
        let file = dir + "/" + shard
        guard FileManager.default.fileExists(atPath: file) else {
            let example = index.weightMap.keys.sorted(by: TensorName.byteOrder).first { index.weightMap[$0] == shard } ?? "?"
            throw LocusError(file: indexPath, object: "tensor '\(example)'", "its shard '\(shard)' is missing from the folder")
        }
        let s = try openShard(file)
        let held = Set(s.names)
        for name in s.names {
            guard let listed = index.weightMap[name] else {
                throw LocusError(file: file, object: "tensor '\(name)'", "is in the shard but not in \(indexPath)")
            }
            guard listed == shard else {
                throw LocusError(file: file, object: "tensor '\(name)'", "is also in this shard, but \(indexPath) places it in '\(listed)' (listed twice)")
            }
        }
        for (name, sh) in index.weightMap where sh == shard && !held.contains(name) {
            throw LocusError(file: file, object: "tensor '\(name)'", "\(indexPath) places it in this shard, which does not hold it")
        }
        if shard == index.shards.first, let m = s.metadata { metadata = m.merging(metadata ?? [:]) { _, index in index } }
        list += s.entries
    }
    return try ByteRangeSource(path: dir, entries: list, metadata: metadata)
}

/// `*.index.json` of a sharded Hugging Face checkpoint: `weight_map` (tensor → shard file) and
/// optional `metadata`.
public struct ShardIndex {
    public var weightMap: [String: String]
    public var metadata: [String: String]?
    /// Distinct shard files in the order of first appearance in sorted tensor names.
    public var shards: [String]

    public static func read(_ path: String) throws -> ShardIndex {
        guard let data = FileManager.default.contents(atPath: path) else { throw LocusError(file: path, "cannot read") }
        let parsed: ShardIndexJSON
        do { parsed = try ShardIndexJSON.parse(Array(data)) } catch { throw LocusError(file: path, "\(error)") }
        var weightMap: [String: String] = [:]
        for (name, shard) in parsed.weightMap {
            if let problem = shardProblem(shard) { throw LocusError(file: path, object: "tensor '\(name)'", "shard '\(shard)' \(problem)") }
            weightMap[name] = shard
        }
        var shards: [String] = [], seen = Set<String>()
        for name in weightMap.keys.sorted(by: TensorName.byteOrder) where seen.insert(weightMap[name]!).inserted { shards.append(weightMap[name]!) }
        return ShardIndex(weightMap: weightMap, metadata: parsed.metadata, shards: shards)
    }

    /// Shards must be plain files inside the folder: no absolute path, no `..`, no subfolder.
    static func shardProblem(_ shard: String) -> String? {
        if shard.isEmpty { return "is empty" }
        if shard.hasPrefix("/") { return "is an absolute path; shards must be inside the folder" }
        if shard.contains("/") || shard.contains("\\") || shard == "." || shard == ".." {
            return "points outside the folder or into a subfolder; shards must be plain file names"
        }
        if shard.utf8.contains(0) { return "contains a NUL byte" }
        return nil
    }
}
