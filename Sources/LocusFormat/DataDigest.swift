import Foundation
import HDF5

/// Per-dataset digests of stored data (spec §1.8): the §1.5 tensor digest (SHA-256 over the SHA-256
/// of 1 MiB leaves) of a dataset's raw little-endian bytes, stored as its `digest` attribute,
/// `"sha256:" + hex`. Summaries can miss a changed bit (a low mantissa bit moves a sum by less than
/// their tolerance); a digest does not, and it names the dataset that changed.
enum DataDigest {
    static let attribute = "digest"

    static func text(_ digest: [UInt8]) -> String { "sha256:" + digest.map { String(format2hex: $0) }.joined() }

    static func of(_ bytes: UnsafeRawBufferPointer) -> String {
        var d = TensorDigester()
        d.update(bytes)
        return text(d.finalize())
    }

    static func store(_ ds: Dataset, _ bytes: UnsafeRawBufferPointer) throws {
        try ds.setAttribute(attribute, of(bytes))
    }

    /// Calls `body` with the dataset's stored bytes (read with its own file type as memory type: no
    /// conversion) in blocks of whole rows, through one reused buffer.
    static func forEachStoredBlock(_ ds: Dataset, blockBytes: Int = 64 << 20, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let type = ds.type
        let shape = ds.shape
        guard type.size > 0, let count = checkedProduct(shape), count.multipliedReportingOverflow(by: type.size).overflow == false else {
            throw LocusError(file: ds.filePath, object: ds.path, "shape \(shape) is too large")
        }
        // Locus stores numbers of at most 8 bytes; a larger element size is a damaged datatype, and
        // the storage must hold what the shape and type say before a buffer is sized from them.
        guard type.size <= 16 else {
            throw LocusError(file: ds.filePath, object: ds.path, "has elements of \(type.size) bytes, expected a number type of at most 8")
        }
        try CheckpointReader.checkStorage(ds, logicalBytes: count * type.size, path: ds.filePath, object: ds.path)
        try CheckpointReader.readRowBlocks(ds, shape: shape, elementBytes: type.size, memType: type, blockBytes: blockBytes,
                                           path: ds.filePath, object: ds.path, body)
    }

    /// "sha256:0123456789ab…": enough of a digest to tell two apart in a one-line message.
    static func short(_ digest: String) -> String { digest.count > 19 ? String(digest.prefix(19)) + "…" : digest }
}

/// Opt-in checking of what a command reads against what its writer stored (spec §7, docs/reliability.md).
/// When `enabled`, every Locus artifact is checked as it is opened (`ArtifactFile.open`), before any
/// of its values can be used: each dataset's `digest` (§1.8), a checkpoint's `fingerprint` (§1.5)
/// and a mask's per-tensor `ones`. The first mismatch is thrown as an error naming the file and the
/// object. A task-local, like `CheckpointOpenOptions.current`, so that every reader honours it
/// without threading it through every call; a file already verified in this process (same device,
/// inode, size and modification time) is not read again.
public struct ReadVerification: Sendable {
    public var enabled: Bool
    /// Receives one line per file that holds data no stored digest covers (or none at all).
    public var note: @Sendable (String) -> Void
    public init(enabled: Bool = false, note: @escaping @Sendable (String) -> Void = { _ in }) {
        self.enabled = enabled; self.note = note
    }

    @TaskLocal public static var current = ReadVerification()
}

/// One stored check of a file and its outcome.
public struct VerificationItem: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable { case ok, mismatch, unchecked }
    /// `/tensors/NAME`, `/tensors/NAME/values`, `/@fingerprint`, …
    public var object: String
    /// `digest`, `fingerprint`, `ones` or `none` (data that nothing stored covers).
    public var check: String
    public var status: Status
    public var message: String
}

/// Everything `DataVerifier.report` checked in one file.
public struct VerificationReport: Sendable, Codable {
    public var file: String
    /// The artifact kind, or the source kind of a checkpoint that is not a Locus file.
    public var kind: String
    public var items: [VerificationItem]
    /// Set when there is nothing stored to check against (safetensors, PyTorch, older files).
    public var note: String?
    public var mismatches: [VerificationItem] { items.filter { $0.status == .mismatch } }
}

/// Recomputes the digests, fingerprints and bit counts a file stores, streaming each dataset in
/// blocks of whole rows (at most 64 MiB, at least one row) so memory does not grow with the file.
public enum DataVerifier {
    static let blockBytes = 64 << 20

    /// Every check of one file, in file order. Mismatches are listed, not thrown; a file that does
    /// not open (or a dataset that cannot be read) throws.
    public static func report(_ path: String) throws -> VerificationReport {
        let kind = try detectCheckpointKind(path: path)
        guard kind == .locus else {
            return VerificationReport(file: path, kind: kind.rawValue, items: [], note: sourceNote(kind))
        }
        let a = try ReadVerification.$current.withValue(ReadVerification()) { try ArtifactFile.open(path) }
        var items: [VerificationItem] = []
        try walk(a) { items.append($0) }
        let note = items.contains { $0.status == .ok } ? nil : "stores no digests (written before encoding 1.3 or by another writer)"
        return VerificationReport(file: path, kind: a.header.kind.rawValue, items: items, note: note)
    }

    /// Notes, once per file and process, that a checkpoint source that is not a Locus file is read unchecked.
    static func noteSource(_ path: String, _ kind: CheckpointSourceKind, _ options: ReadVerification) {
        if let v = FileVersion(path), !VerifiedFiles.shared.firstNote(v) { return }
        options.note("\(path): \(sourceNote(kind))")
    }

    /// What `--verify` says about a checkpoint source that is not a Locus file.
    static func sourceNote(_ kind: CheckpointSourceKind) -> String {
        let what: String
        switch kind {
        case .safetensors: what = "a safetensors file"
        case .safetensorsFolder: what = "a safetensors folder"
        case .torch, .torchFolder: what = "a PyTorch checkpoint"
        case .locus: what = "this file"
        }
        return "\(what) stores no digests; --verify cannot check it (read as it is)"
    }

    /// The check `ArtifactFile.open` runs when `ReadVerification.current.enabled`: throws the first
    /// mismatch, notes data that nothing stored covers, remembers files that passed.
    static func verifyOnOpen(_ a: ArtifactFile, _ options: ReadVerification) throws {
        let identity = FileVersion(a.path)
        if let identity, VerifiedFiles.shared.contains(identity) { return }
        var unchecked: [String] = [], data = 0
        try walk(a) { item in
            switch item.status {
            case .mismatch: throw LocusError(file: a.path, object: item.object, item.message)
            case .unchecked: unchecked.append(item.object); data += 1
            case .ok: if item.check == "digest" { data += 1 }
            }
        }
        if !unchecked.isEmpty {
            let fingerprinted = a.header.kind == .checkpoint
            options.note("\(a.path): \(unchecked.count) of \(data) datasets carry no digest (written before encoding 1.3 or "
                + "by another writer)" + (fingerprinted ? "; they were checked as a whole by the fingerprint, which cannot name a changed tensor"
                                                          : "; they were read unchecked"))
        }
        if let identity { VerifiedFiles.shared.insert(identity) }
    }

    /// Calls `body` with each check of the artifact; a throwing `body` stops the walk.
    static func walk(_ a: ArtifactFile, _ body: (VerificationItem) throws -> Void) throws {
        if a.header.kind == .checkpoint { return try walkCheckpoint(a, body) }
        try walkDatasets(a.root, a, depth: 0, body)
    }

    static func mismatch(_ object: String, stored: String, actual: String) -> VerificationItem {
        VerificationItem(object: object, check: "digest", status: .mismatch,
                         message: "the data does not match its stored digest (\(DataDigest.short(stored)), the data gives "
                             + "\(DataDigest.short(actual))): a stored value changed after writing")
    }

    /// Checkpoint tensors in name order: each tensor's digest, and the fingerprint from them.
    static func walkCheckpoint(_ a: ArtifactFile, _ body: (VerificationItem) throws -> Void) throws {
        let reader = try CheckpointReader(a)
        let group = try a.tensorsGroup()
        var hasher = FingerprintHasher()
        for t in reader.tensors {
            var d = TensorDigester()
            try reader.forEachBlock(t, blockBytes: blockBytes) { d.update($0) }
            let digest = d.finalize()
            hasher.addTensor(name: t.name, dtype: t.dtype, shape: t.shape, digest: digest)
            let ds = try withContext(file: a.path, object: t.objectPath) { try group.openDataset(t.link) }
            if ds.hasAttribute(DataDigest.attribute) {
                let stored = try withContext(file: a.path, object: t.objectPath + "@digest") { try ds.stringAttribute(DataDigest.attribute) }
                let actual = DataDigest.text(digest)
                try body(stored == actual ? VerificationItem(object: t.objectPath, check: "digest", status: .ok, message: "")
                                          : mismatch(t.objectPath, stored: stored, actual: actual))
            } else {
                try body(VerificationItem(object: t.objectPath, check: "none", status: .unchecked, message: "carries no digest"))
            }
        }
        let stored = try reader.fingerprint
        let actual = hasher.finalize()
        try body(stored == actual
            ? VerificationItem(object: "/@fingerprint", check: "fingerprint", status: .ok, message: "")
            : VerificationItem(object: "/@fingerprint", check: "fingerprint", status: .mismatch,
                               message: "is \(DataDigest.short(stored)), the tensors give \(DataDigest.short(actual)): "
                                   + "a stored value changed after writing"))
    }

    /// Every numeric dataset of the file: its digest if it has one, else listed as unchecked; a
    /// mask tensor's set bits against its `ones` and padding, in the same pass.
    static func walkDatasets(_ group: Group, _ a: ArtifactFile, depth: Int, _ body: (VerificationItem) throws -> Void) throws {
        guard depth <= 8 else { throw LocusError(file: a.path, object: group.path, "groups nest deeper than any Locus layout") }
        for name in try withContext(file: a.path, object: group.path, { try group.childNames() }) {
            switch group.kind(of: name) {
            case .group:
                try walkDatasets(try withContext(file: a.path) { try group.openGroup(name) }, a, depth: depth + 1, body)
            case .dataset:
                let ds = try withContext(file: a.path) { try group.openDataset(name) }
                try check(ds, a, body)
            default: continue
            }
        }
    }

    static func check(_ ds: Dataset, _ a: ArtifactFile, _ body: (VerificationItem) throws -> Void) throws {
        let object = ds.path
        let numeric = ds.type.typeClass == .integer || ds.type.typeClass == .float
        let hasDigest = ds.hasAttribute(DataDigest.attribute)
        let isMaskTensor = a.header.kind == .mask && group(of: object) == "/tensors" && ds.hasAttribute("ones") && ds.hasAttribute("count")
        guard numeric || hasDigest else { return }   // strings: provenance, class names, JSON
        if !hasDigest && !isMaskTensor {
            return try body(VerificationItem(object: object, check: "none", status: .unchecked, message: "carries no digest"))
        }
        var d = TensorDigester()
        var ones = 0, last: UInt8 = 0
        try withContext(file: a.path, object: object) {
            try DataDigest.forEachStoredBlock(ds, blockBytes: blockBytes) { block in
                d.update(block)
                if isMaskTensor, !block.isEmpty {
                    ones += block.reduce(0) { $0 + $1.nonzeroBitCount }
                    last = block[block.count - 1]
                }
            }
        }
        if hasDigest {
            let stored = try withContext(file: a.path, object: object + "@digest") { try ds.stringAttribute(DataDigest.attribute) }
            let actual = DataDigest.text(d.finalize())
            try body(stored == actual ? VerificationItem(object: object, check: "digest", status: .ok, message: "")
                                      : mismatch(object, stored: stored, actual: actual))
        }
        if isMaskTensor {
            let count = try a.int64(ds, "count"), stated = try a.int64(ds, "ones")
            let used = Int(count % 8)
            if used != 0, last >> UInt8(used) != 0 {
                try body(VerificationItem(object: object, check: "ones", status: .mismatch,
                                          message: "padding bits after bit \(count) are set: a stored bit changed after writing"))
            } else if Int64(ones) != stated {
                try body(VerificationItem(object: object, check: "ones", status: .mismatch,
                                          message: "has \(ones) set bits, its 'ones' attribute says \(stated): a stored bit changed after writing"))
            } else {
                try body(VerificationItem(object: object, check: "ones", status: .ok, message: ""))
            }
        }
    }

    static func group(of object: String) -> String {
        guard let slash = object.lastIndex(of: "/"), slash != object.startIndex else { return "/" }
        return String(object[..<slash])
    }
}

/// Identifies a file's contents well enough to skip verifying it twice in one process: a file
/// replaced by rename has a new inode, one rewritten in place a new modification time.
struct FileVersion: Hashable, Sendable {
    var device: UInt64, inode: UInt64, size: Int64, seconds: Int, nanoseconds: Int
    init?(_ path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        self.init(st)
    }

    /// The file open on `descriptor` (no second lookup of a path that may have been replaced).
    init?(descriptor: Int32) {
        var st = stat()
        guard fstat(descriptor, &st) == 0 else { return nil }
        self.init(st)
    }

    private init(_ st: stat) {
        device = UInt64(st.st_dev); inode = UInt64(st.st_ino); size = Int64(st.st_size)
        seconds = Int(st.st_mtim.tv_sec); nanoseconds = Int(st.st_mtim.tv_nsec)
    }
}

/// Files whose global heap collections `GlobalHeapCheck` has verified, inside
/// `ArtifactFile.rememberingCheckedFiles` (nil outside: every open checks).
final class HeapCheckedFiles: @unchecked Sendable {
    @TaskLocal static var current: HeapCheckedFiles? = nil
    private let lock = NSLock()
    private var files = Set<FileVersion>()
    func contains(_ f: FileVersion) -> Bool { lock.lock(); defer { lock.unlock() }; return files.contains(f) }
    func insert(_ f: FileVersion) { lock.lock(); defer { lock.unlock() }; files.insert(f) }
}

final class VerifiedFiles: @unchecked Sendable {
    static let shared = VerifiedFiles()
    private let lock = NSLock()
    private var files = Set<FileVersion>()
    func contains(_ f: FileVersion) -> Bool { lock.lock(); defer { lock.unlock() }; return files.contains(f) }
    func insert(_ f: FileVersion) { lock.lock(); defer { lock.unlock() }; files.insert(f) }
    /// True the first time for a file: a source opened twice by one command is noted once.
    func firstNote(_ f: FileVersion) -> Bool { lock.lock(); defer { lock.unlock() }; return noted.insert(f).inserted }
    private var noted = Set<FileVersion>()
}
