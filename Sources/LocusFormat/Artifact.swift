import Foundation
import HDF5

/// The artifact kinds of spec §2–§6.
public enum ArtifactKind: String, Sendable, CaseIterable, Codable {
    case checkpoint, scores, mask
    case taskVector = "task-vector"
    case dataset
}

/// Constants of the layout version this code reads and writes.
public enum LocusSpec {
    public static let encodingType = "locus"
    public static let encodingVersion = "1.3"
    public static let major = 1
    public static let producer = "locus 0.1.0"
    /// Dense tensors start at multiples of this many bytes (mmap-friendly).
    public static let alignment = 4096
    /// Datasets bigger than this are chunked and compressed when they compress (packed bits, indices).
    public static let compressionThreshold = 4096
}

/// The root attributes every artifact carries (spec §1.2).
public struct ArtifactHeader: Sendable {
    public var kind: ArtifactKind
    public var encodingVersion: String
    public var producer: String
    public var created: String
    /// `base-fingerprint` of scores, masks and task vectors.
    public var baseFingerprint: String?
    public var provenance: Provenance?
}

/// An artifact opened for reading, with its header checked.
public final class ArtifactFile {
    public let path: String
    public let file: File
    public let root: Group
    public let header: ArtifactHeader

    /// Opens `path`, checks that it is a Locus artifact of a version we read (and of `kind`, if given).
    /// With `ReadVerification.current.enabled`, every stored digest is checked here, before any
    /// value of the file can be used (`DataVerifier`).
    public static func open(_ path: String, expecting kind: ArtifactKind? = nil) throws -> ArtifactFile {
        try checkReadable(path)
        let artifact = try withContext(file: path) {
            let file = try File.open(path)
            // Before libhdf5 reads any string: it trusts the global heap, and a corrupt one makes it hang or crash.
            // Inside `rememberingCheckedFiles`, a file already checked there (same device, inode,
            // size and modification time, from the descriptor libhdf5 reads through) is not
            // walked again: a merge opens each of its inputs more than once.
            let remembered = HeapCheckedFiles.current
            let identity = remembered == nil ? nil : file.descriptor.flatMap { FileVersion(descriptor: $0) }
            if identity == nil || !remembered!.contains(identity!) {
                do { try GlobalHeapCheck.verify(file) } catch let p as GlobalHeapCheck.Problem {
                    throw LocusError(file: path, p.description)
                }
                if let identity { remembered!.insert(identity) }
            }
            let root = try file.root
            let header = try readHeader(root, path: path)
            if let kind, header.kind != kind {
                throw LocusError(file: path, "is a \(header.kind.rawValue) artifact, expected a \(kind.rawValue)")
            }
            return ArtifactFile(path: path, file: file, root: root, header: header)
        }
        let verification = ReadVerification.current
        if verification.enabled { try DataVerifier.verifyOnOpen(artifact, verification) }
        return artifact
    }

    /// Runs `body` with the global-heap check of `open` made once per file: for commands that open
    /// the same inputs several times and do not change them meanwhile (merge).
    public static func rememberingCheckedFiles<R>(_ body: () throws -> R) rethrows -> R {
        if HeapCheckedFiles.current != nil { return try body() }
        return try HeapCheckedFiles.$current.withValue(HeapCheckedFiles(), operation: body)
    }

    private init(path: String, file: File, root: Group, header: ArtifactHeader) {
        self.path = path; self.file = file; self.root = root; self.header = header
    }

    /// Clear messages for the common ways a path is not an HDF5 file at all.
    static func checkReadable(_ path: String) throws {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw LocusError(file: path, errno == ENOENT ? "no such file" : "cannot access: \(String(cString: strerror(errno)))")
        }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw LocusError(file: path, "is a directory, expected a Locus HDF5 file") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw LocusError(file: path, "is \(FileKind.describe(st.st_mode)), expected a Locus HDF5 file (a regular file)")
        }
        guard access(path, R_OK) == 0 else { throw LocusError(file: path, "is not readable") }
        if st.st_size == 0 { throw LocusError(file: path, "is empty, expected a Locus HDF5 file") }
        guard File.isHDF5(path) else { throw LocusError(file: path, "is not an HDF5 file (no HDF5 signature found)") }
    }

    static func readHeader(_ root: Group, path: String) throws -> ArtifactHeader {
        guard let encodingType = try root.attributeIfPresent("encoding-type") else {
            throw LocusError(file: path, object: "/", "not a Locus artifact: root attribute 'encoding-type' is missing")
        }
        let encoding = try encodingType.string()
        guard encoding == LocusSpec.encodingType else {
            throw LocusError(file: path, object: "/@encoding-type", "is '\(encoding)', expected '\(LocusSpec.encodingType)'")
        }
        let version = try requireString(root, "encoding-version", path)
        guard let major = Int(version.split(separator: ".").first ?? ""), version.split(separator: ".").count == 2,
              Int(version.split(separator: ".")[1]) != nil else {
            throw LocusError(file: path, object: "/@encoding-version", "'\(version)' is not MAJOR.MINOR")
        }
        guard major == LocusSpec.major else {
            throw LocusError(file: path, object: "/@encoding-version", "version \(version) is not supported (this Locus reads \(LocusSpec.major).x)")
        }
        let kindText = try requireString(root, "kind", path)
        guard let kind = ArtifactKind(rawValue: kindText) else {
            throw LocusError(file: path, object: "/@kind", "unknown kind '\(kindText)' (expected one of \(ArtifactKind.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var provenance: Provenance?
        if root.contains("provenance") {
            let text = try root.openDataset("provenance").readStrings(maxCount: 1).first ?? ""
            do { provenance = try JSON.decode(Provenance.self, from: text) } catch {
                throw LocusError(file: path, object: "/provenance", "is not a JSON provenance object: \(error)")
            }
        }
        return ArtifactHeader(
            kind: kind, encodingVersion: version,
            producer: try root.attributeIfPresent("producer")?.string() ?? "",
            created: try root.attributeIfPresent("created")?.string() ?? "",
            baseFingerprint: try root.attributeIfPresent("base-fingerprint")?.string(),
            provenance: provenance)
    }

    static func requireString(_ obj: some HDF5Object, _ name: String, _ path: String) throws -> String {
        try required(obj, name, path).string()
    }

    /// The attribute `name` of `obj` in the file at `path`, which the layout requires.
    static func required(_ obj: some HDF5Object, _ name: String, _ path: String) throws -> Attribute {
        guard let a = try obj.attributeIfPresent(name) else {
            throw LocusError(file: path, object: "\(obj.path)@\(name)", "required attribute is missing")
        }
        return a
    }

    /// The `/tensors` group.
    public func tensorsGroup() throws -> Group {
        switch root.kind(of: "tensors") {
        case .group: break
        case nil: throw LocusError(file: path, object: "/tensors", "required group is missing")
        default: throw LocusError(file: path, object: "/tensors", "must be a group, found another kind of object")
        }
        return try withContext(file: path) { try root.openGroup("tensors") }
    }

    /// (tensor name, link name) of every entry of `/tensors`, in ascending byte order of the names.
    public func tensorLinks() throws -> [(name: String, link: String)] {
        let g = try tensorsGroup()
        let links = try withContext(file: path) { try g.childNames() }
        var seen = Set<[UInt8]>()
        var out: [(name: String, link: String)] = []
        for link in links {
            let name = TensorName.name(forLink: link)
            if let problem = TensorName.problem(with: name) { throw LocusError(file: path, object: "/tensors/\(link)", problem) }
            guard TensorName.decodesToValidUTF8(link) else { throw LocusError(file: path, object: "/tensors/\(link)", "link name does not decode to valid UTF-8") }
            guard seen.insert(TensorName.key(name)).inserted else {
                throw LocusError(file: path, object: "/tensors/\(link)", "decodes to the tensor name '\(name)' of another link")
            }
            out.append((name, link))
        }
        return out.sorted { TensorName.byteOrder($0.name, $1.name) }
    }

    /// The `/@base-fingerprint` every derived kind (scores, mask, task vector) must carry.
    func requiredBaseFingerprint() throws -> String {
        guard let base = header.baseFingerprint else {
            throw LocusError(file: path, object: "/@base-fingerprint", "required attribute is missing")
        }
        return base
    }

    /// The `/tensors` group and each entry described by `describe(group, name, link)`, in the
    /// order of `tensorLinks()`.
    func describeTensors<T>(_ describe: (Group, String, String) throws -> T) throws -> (Group, [T]) {
        let group = try tensorsGroup()
        return (group, try tensorLinks().map { try describe(group, $0.name, $0.link) })
    }

    /// The `count` attribute of `obj`, which must equal the number of elements of `shape`.
    func countAttribute(_ obj: some HDF5Object, shape: [Int], object: String) throws -> Int {
        let count = try int64(obj, "count")
        guard Int(count) == checkedProduct(shape) else {
            throw LocusError(file: path, object: object + "@count", "is \(count), expected \(checkedProduct(shape)!) for shape \(shape)")
        }
        return Int(count)
    }

    /// Required int64 attribute with a bound check.
    func int64(_ obj: some HDF5Object, _ name: String, atLeast lower: Int64 = 0) throws -> Int64 {
        let v = try withContext(file: path) { try required(obj, name).int64() }
        guard v >= lower else { throw LocusError(file: path, object: "\(obj.path)@\(name)", "is \(v), expected ≥ \(lower)") }
        return v
    }

    func string(_ obj: some HDF5Object, _ name: String) throws -> String {
        try withContext(file: path) { try required(obj, name).string() }
    }

    func double(_ obj: some HDF5Object, _ name: String) throws -> Double {
        try withContext(file: path) { try required(obj, name).double() }
    }

    func required(_ obj: some HDF5Object, _ name: String) throws -> Attribute { try ArtifactFile.required(obj, name, path) }

    /// Reads a `shape` attribute and checks it against `count` when given.
    func shapeAttribute(_ obj: some HDF5Object) throws -> [Int] {
        let dims = try withContext(file: path) { try required(obj, "shape").int64s(maxCount: 32) }
        guard dims.allSatisfy({ $0 >= 0 }) else {
            throw LocusError(file: path, object: "\(obj.path)@shape", "has a negative dimension: \(dims)")
        }
        guard let _ = checkedProduct(dims.map(Int.init)) else {
            throw LocusError(file: path, object: "\(obj.path)@shape", "element count of \(dims) overflows")
        }
        return dims.map(Int.init)
    }
}

/// Product of dimensions, nil on overflow.
public func checkedProduct(_ dims: [Int]) -> Int? {
    var n = 1
    for d in dims {
        guard d >= 0 else { return nil }
        let (r, o) = n.multipliedReportingOverflow(by: d)
        if o { return nil }
        n = r
    }
    return n
}

/// Creates an artifact: a temporary file with the common root attributes and `/tensors`,
/// committed to the target by `finish()`.
final class ArtifactWriter {
    let output: AtomicOutput
    let file: File
    let root: Group
    let tensors: Group
    let kind: ArtifactKind
    var target: String { output.target }

    init(target: String, kind: ArtifactKind, aligned: Bool, baseFingerprint: String?, provenance: Provenance?) throws {
        output = try AtomicOutput(target: target)
        self.kind = kind
        do {
            file = try File.create(output.temporaryPath, options: aligned ? .init(alignment: LocusSpec.alignment) : .init())
            root = try file.root
            try root.setAttribute("encoding-type", LocusSpec.encodingType)
            try root.setAttribute("encoding-version", LocusSpec.encodingVersion)
            try root.setAttribute("kind", kind.rawValue)
            try root.setAttribute("producer", LocusSpec.producer)
            try root.setAttribute("created", ArtifactWriter.timestamp())
            if let baseFingerprint { try root.setAttribute("base-fingerprint", baseFingerprint) }
            if let provenance { try root.createStringDataset("provenance", try JSON.encode(provenance)) }
            tensors = kind == .dataset ? root : try root.createGroup("tensors")
        } catch {
            output.abandon()
            throw LocusError.wrap(error, file: target).retargeted(from: output.temporaryPath, to: target)
        }
    }

    /// Now in UTC as `YYYY-MM-DDThh:mm:ssZ` (RFC 3339), from the C library: Foundation's date
    /// formatter loads time-zone files, which took longer than writing a small artifact.
    static func timestamp(_ seconds: time_t = time(nil)) -> String {
        var t = seconds
        var parts = tm()
        gmtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
    }

    /// Runs `body`; on error the temporary file is removed and the error names the target.
    func guarded<R>(object: String? = nil, _ body: () throws -> R) throws -> R {
        do { return try body() } catch {
            output.abandon()
            throw LocusError.wrap(error, file: target, object: object).retargeted(from: output.temporaryPath, to: target)
        }
    }

    /// Closes the file and moves it into place.
    func finish() throws {
        try guarded { try file.close() }
        try output.commit()
    }

    /// A 1-D dataset chunked + compressed when over the threshold (packed bits, indices).
    /// Chunks of 1 MiB (streaming writers append whole chunks: `DatasetAppender`).
    static func chunkElements(count: Int, elementBytes: Int) -> Int { max(1, min(count, (1 << 20) / max(elementBytes, 1))) }

    func createCompressible(_ group: Group, _ name: String, type: Datatype, count: Int) throws -> Dataset {
        let bytes = count * type.size
        guard bytes > LocusSpec.compressionThreshold else { return try group.createDataset(name, type: type, shape: [count]) }
        let dcpl = try PropertyList.datasetCreate()
        let chunkElements = ArtifactWriter.chunkElements(count: count, elementBytes: type.size)
        try dcpl.setChunk([chunkElements])
        if type.size > 1 { try dcpl.addShuffle() }
        try dcpl.addDeflate(level: 4)
        try dcpl.addFletcher32()
        return try group.createDataset(name, type: type, shape: [count], properties: dcpl)
    }
}

extension LocusError {
    /// Errors raised while writing mention the temporary file; users know the target.
    func retargeted(from temp: String, to target: String) -> LocusError {
        var e = self
        if e.file == temp { e.file = target }
        e.message = e.message.replacingOccurrences(of: temp, with: target)
        return e
    }
}

/// A tensor of an artifact's `/tensors` group, as its metadata describes it.
public protocol StoredTensor {
    var name: String { get }
    /// The HDF5 link name (spec §1.3 escaping of `name`).
    var link: String { get }
    var count: Int { get }
}

extension StoredTensor {
    public var objectPath: String { "/tensors/\(link)" }
}
