import Foundation
import SafeTensors
#if canImport(Glibc)
import Glibc
#endif

/// Where tensors of a new checkpoint go: a Locus `.h5` (`CheckpointWriter`) or a Hugging Face
/// folder (`HuggingFaceFolderWriter`). Tensors are fed in order, each as whole rows.
public protocol CheckpointSink: AnyObject {
    var target: String { get }
    func beginTensor(name: String, dtype: LocusDType, shape: [Int]) throws
    func writeRows(_ bytes: UnsafeRawBufferPointer) throws
    /// Writes everything and commits; returns the base fingerprint of what was written.
    @discardableResult func finish() throws -> String
}

extension CheckpointSink {
    public func add(name: String, dtype: LocusDType, shape: [Int], bytes: UnsafeRawBufferPointer) throws {
        let expected = (checkedProduct(shape) ?? -1) * dtype.byteSize
        guard bytes.count == expected else {
            throw LocusError(file: target, object: "tensor '\(name)'", "\(bytes.count) bytes given for shape \(shape) of \(dtype.rawValue) (\(expected) expected)")
        }
        try beginTensor(name: name, dtype: dtype, shape: shape)
        if expected > 0 { try writeRows(bytes) }
    }
}

extension CheckpointWriter: CheckpointSink {}

/// A checkpoint output: `.h5` file, or a Hugging Face folder when `format` says so or the path
/// ends in `/` or names an existing folder.
public enum CheckpointOutputFormat: String, Sendable, CaseIterable {
    case h5, hf
    public static func infer(path: String, explicit: CheckpointOutputFormat?) -> CheckpointOutputFormat {
        if let explicit { return explicit }
        if path.hasSuffix("/") { return .hf }
        var st = stat()
        if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { return .hf }
        return .h5
    }
}

public struct TensorPlan: Sendable, Equatable {
    public var name: String
    public var dtype: LocusDType
    public var shape: [Int]
    public init(name: String, dtype: LocusDType, shape: [Int]) { self.name = name; self.dtype = dtype; self.shape = shape }
    public var byteCount: Int { (checkedProduct(shape) ?? 0) * dtype.byteSize }
}

/// Opens the sink for `path` in `format`; a folder needs the tensors up front (`plan`, in the
/// order they will be written) because each shard's header comes before its data.
public func makeCheckpointSink(path: String, format: CheckpointOutputFormat, plan: [TensorPlan], provenance: Provenance?,
                               metadata: [String: String]?, architecture: String?,
                               shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes) throws -> any CheckpointSink {
    switch format {
    case .h5: return try CheckpointWriter(path: path, provenance: provenance, metadata: metadata, architecture: architecture)
    case .hf:
        var meta = metadata ?? [:]
        if let architecture { meta[ByteRangeSource.architectureKey] = architecture }
        if let provenance { meta["locus.provenance"] = try JSON.encode(provenance) }
        return try HuggingFaceFolderWriter(target: path, plan: plan, shardBytes: shardBytes, metadata: meta)
    }
}

/// Writes a Hugging Face model folder the way `transformers` does: shards
/// `model-0000i-of-0000N.safetensors` of at most `shardBytes` each (a bigger tensor gets a shard
/// of its own) with `model.safetensors.index.json`, or a single `model.safetensors` when
/// everything fits one shard. Every shard carries `{"format": "pt"}` metadata (transformers
/// checks it). The folder appears at `target` only on `finish()` (see `AtomicFolder`).
public final class HuggingFaceFolderWriter: CheckpointSink {
    public static let defaultShardBytes = 5_000_000_000
    public let target: String
    private let folder: AtomicFolder
    private let plan: [TensorPlan]
    private let shards: [(file: String, range: Range<Int>)]
    private let indexMetadata: [String: String]
    private var shardWriter: SafeTensorsWriter?
    private var shardIndex = -1
    private var next = 0
    private var rowsLeft = 0
    private var hasher = FingerprintHasher()
    private var inNameOrder = true
    private var extraFiles: [(source: String, name: String)] = []

    public init(target: String, plan: [TensorPlan], shardBytes: Int = defaultShardBytes, metadata: [String: String] = [:]) throws {
        var t = target
        while t.count > 1 && t.hasSuffix("/") { t.removeLast() }
        self.target = t
        self.plan = plan
        var seen = Set<[UInt8]>()
        for p in plan {
            if let problem = TensorName.problem(with: p.name) { throw LocusError(file: t, object: "tensor '\(p.name)'", problem) }
            guard seen.insert(TensorName.key(p.name)).inserted else { throw LocusError(file: t, object: "tensor '\(p.name)'", "duplicate tensor name") }
            guard checkedProduct(p.shape) != nil else { throw LocusError(file: t, object: "tensor '\(p.name)'", "invalid shape \(p.shape)") }
        }
        guard shardBytes > 0 else { throw RequestError("shardSize", "must be positive (writing \(t))") }
        var groups: [Range<Int>] = [], start = 0, size = 0
        for (i, p) in plan.enumerated() {
            if i > start && size + p.byteCount > shardBytes { groups.append(start..<i); start = i; size = 0 }
            size += p.byteCount
        }
        if !plan.isEmpty || groups.isEmpty { groups.append(start..<plan.count) }
        let n = groups.count
        shards = groups.enumerated().map { i, r in
            (n == 1 ? "model.safetensors" : "model-\(HuggingFaceFolderWriter.pad(i + 1))-of-\(HuggingFaceFolderWriter.pad(n)).safetensors", r)
        }
        indexMetadata = metadata
        folder = try AtomicFolder(target: t)
        inNameOrder = zip(plan, plan.dropFirst()).allSatisfy { TensorName.byteOrder($0.name, $1.name) }
    }

    static func pad(_ i: Int) -> String { let s = String(i); return String(repeating: "0", count: max(0, 5 - s.count)) + s }

    /// Copies `source` into the folder as `name` (config.json, tokenizer files) when committing.
    public func addFile(from source: String, as name: String) { extraFiles.append((source, name)) }

    private func shardMetadata(_ i: Int) -> [String: String] {
        var m: [String: String] = ["format": "pt"]
        if shards.count == 1 { for (k, v) in indexMetadata where k != "total_size" { m[k] = v } }
        else if let f = indexMetadata["format"] { m["format"] = f }
        return m
    }

    private func openShard(_ i: Int) throws {
        if var w = shardWriter { try w.finish(fsync: true); shardWriter = nil }
        shardIndex = i
        let specs = plan[shards[i].range].map { SafeTensorsWriter.TensorSpec(name: $0.name, dtype: $0.dtype.safeTensors, shape: $0.shape) }
        let path = try folder.register(shards[i].file)
        shardWriter = try wrap { try SafeTensorsWriter(path: path, tensors: specs, metadata: shardMetadata(i)) }
    }

    private func wrap<R>(_ body: () throws -> R) throws -> R {
        do { return try body() } catch let e as SafeTensorsError {
            folder.abandon()
            throw LocusError(file: target, object: e.object.map { "tensor '\($0)'" }, e.message)
        } catch { folder.abandon(); throw error }
    }

    public func beginTensor(name: String, dtype: LocusDType, shape: [Int]) throws {
        guard rowsLeft == 0 else { folder.abandon(); throw LocusError(file: target, object: "tensor '\(plan[next - 1].name)'", "tensor data is incomplete") }
        guard next < plan.count, TensorName.same(plan[next].name, name), plan[next].dtype == dtype, plan[next].shape == shape else {
            folder.abandon()
            throw LocusError(file: target, object: "tensor '\(name)'", "is not the next tensor planned for the folder (\(next < plan.count ? plan[next].name : "none left"))")
        }
        if shardIndex < 0 || !shards[shardIndex].range.contains(next) {
            guard let i = shards.firstIndex(where: { $0.range.contains(next) }) else { return }
            try openShard(i)
        }
        if inNameOrder { hasher.beginTensor(name: name, dtype: dtype, shape: shape) }
        rowsLeft = plan[next].byteCount == 0 ? 0 : (shape.first ?? 1)
        next += 1
    }

    public func writeRows(_ bytes: UnsafeRawBufferPointer) throws {
        guard next > 0, rowsLeft > 0 else { folder.abandon(); throw LocusError(file: target, "no tensor is open for writing") }
        let p = plan[next - 1]
        let rowBytes = p.shape.isEmpty ? p.byteCount : p.shape.dropFirst().reduce(1, *) * p.dtype.byteSize
        guard rowBytes > 0, bytes.count % rowBytes == 0, bytes.count / rowBytes <= rowsLeft else {
            folder.abandon()
            throw LocusError(file: target, object: "tensor '\(p.name)'", "\(bytes.count) bytes is not a whole number of the \(rowsLeft) remaining \(rowBytes)-byte rows")
        }
        if p.dtype == .bool, let bad = bytes.firstIndex(where: { $0 > 1 }) {
            folder.abandon()
            throw LocusError(file: target, object: "tensor '\(p.name)'", "bool element \(bad) is \(bytes[bad]), expected 0 or 1")
        }
        try wrap {
            if inNameOrder && bytes.count >= CheckpointWriter.concurrentHashBytes {
                try Concurrently.run({ self.hasher.update(bytes: bytes) }, { try self.shardWriter?.write(bytes) })
            } else {
                try shardWriter?.write(bytes)
                if inNameOrder { hasher.update(bytes: bytes) }
            }
        }
        rowsLeft -= bytes.count / rowBytes
    }

    @discardableResult
    public func finish() throws -> String {
        guard next == plan.count, rowsLeft == 0 else {
            folder.abandon()
            throw LocusError(file: target, "the folder is incomplete: \(plan.count - next) planned tensor(s) were never written")
        }
        // Shards holding only zero-sized tensors (or an empty model) never got a write.
        while shardIndex + 1 < shards.count { try openShard(shardIndex + 1) }
        if var w = shardWriter { try wrap { try w.finish(fsync: true) }; shardWriter = nil }
        if shards.count > 1 {
            var weightMap: [String: String] = [:]
            for s in shards { for i in s.range { weightMap[plan[i].name] = s.file } }
            var meta: [String: Any] = [:]
            for (k, v) in indexMetadata where k != "total_size" { meta[k] = v }
            meta["total_size"] = plan.reduce(0) { $0 + $1.byteCount }
            let json = try JSONSerialization.data(withJSONObject: ["metadata": meta, "weight_map": weightMap], options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            try folder.writeFile("model.safetensors.index.json", Array(json) + [10])
        }
        for (source, name) in extraFiles {
            guard let data = FileManager.default.contents(atPath: source) else {
                folder.abandon()
                throw LocusError(file: source, "cannot read (to copy into \(target))")
            }
            try folder.writeFile(name, Array(data))
        }
        var fp: String
        if inNameOrder { fp = hasher.finalize() } else { fp = "" }
        try folder.commit()
        if !inNameOrder { fp = try openCheckpointUnrenamed(path: target).fingerprint }
        return fp
    }
}

/// A folder written as a whole: files go into a hidden temporary folder beside the target, are
/// fsynced, and the folder is renamed into place at `commit()`; an existing target folder is
/// moved aside first and removed only after the new one is in place. On failure, or on SIGINT /
/// SIGTERM / SIGHUP, the temporary folder is removed and the old target stays as it was.
public final class AtomicFolder {
    public let target: String
    public let temporaryPath: String
    private var registrations: [Int?] = []
    private var files: [String] = []
    private var finished = false

    public init(target: String) throws {
        self.target = target
        var st = stat()
        if stat(target, &st) == 0, (st.st_mode & S_IFMT) != S_IFDIR {
            throw LocusError(file: target, "exists and is not a folder; a Hugging Face output must be a folder")
        }
        let (dir, base) = AtomicOutput.split(target)
        var dst = stat()
        guard stat(dir, &dst) == 0, (dst.st_mode & S_IFMT) == S_IFDIR else {
            throw LocusError(file: target, "output directory '\(dir)' does not exist")
        }
        guard access(dir, W_OK) == 0 else { throw LocusError(file: target, "output directory '\(dir)' is not writable") }
        StaleTemporaries.removeStale(in: dir)
        temporaryPath = (dir == "." && !target.hasPrefix("./") ? "" : dir + "/") + StaleTemporaries.name(base: base)
        guard mkdir(temporaryPath, 0o755) == 0 else {
            throw LocusError(file: target, "cannot create the temporary folder: \(String(cString: strerror(errno)))")
        }
        registrations.append(InterruptCleanup.register(temporaryPath))
    }

    deinit { if !finished { abandon() } }

    /// The path of a new file `name` inside the temporary folder (removed again on failure).
    public func register(_ name: String) throws -> String {
        let p = temporaryPath + "/" + name
        files.append(p)
        registrations.append(InterruptCleanup.register(p))
        return p
    }

    public func writeFile(_ name: String, _ bytes: [UInt8]) throws {
        let p = try register(name)
        let fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { abandon(); throw LocusError(file: target, object: name, "cannot create: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            guard n > 0 else { abandon(); throw LocusError(file: target, object: name, "write failed: \(String(cString: strerror(errno)))") }
            done += n
        }
        guard fsync(fd) == 0 else { abandon(); throw LocusError(file: target, object: name, "fsync failed: \(String(cString: strerror(errno)))") }
    }

    public func commit() throws {
        guard !finished else { throw LocusError(file: target, "the output was already abandoned or committed (an earlier step failed)") }
        let dfd = open(temporaryPath, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
        var st = stat()
        var aside: String? = nil
        if stat(target, &st) == 0 {
            let old = temporaryPath.replacingOccurrences(of: ".locus-tmp-", with: ".locus-old-")
            guard rename(target, old) == 0 else {
                let reason = String(cString: strerror(errno))
                abandon()
                throw LocusError(file: target, "cannot move the existing folder aside: \(reason)")
            }
            aside = old
        }
        guard rename(temporaryPath, target) == 0 else {
            let reason = String(cString: strerror(errno))
            if let aside { _ = rename(aside, target) }
            abandon()
            throw LocusError(file: target, "cannot move the finished folder into place: \(reason)")
        }
        finished = true
        for r in registrations { InterruptCleanup.unregister(r) }
        let pfd = open(AtomicOutput.split(target).dir, O_RDONLY | O_DIRECTORY)
        if pfd >= 0 { _ = fsync(pfd); close(pfd) }
        if let aside { try? FileManager.default.removeItem(atPath: aside) }
    }

    /// Removes the temporary folder; the target stays as it was.
    public func abandon() {
        guard !finished else { return }
        finished = true
        try? FileManager.default.removeItem(atPath: temporaryPath)
        for r in registrations { InterruptCleanup.unregister(r) }
    }
}
