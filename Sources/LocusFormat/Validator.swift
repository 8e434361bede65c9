import HDF5

/// One rule violation found by `Validator`.
public struct Finding: Sendable, Equatable, Codable, CustomStringConvertible {
    public enum Severity: String, Sendable, Codable { case error, warning }
    public var severity: Severity
    public var file: String
    public var object: String
    public var message: String
    public init(severity: Severity, file: String, object: String, message: String) {
        self.severity = severity; self.file = file; self.object = object; self.message = message
    }
    public var description: String {
        (severity == .warning ? "warning: " : "") + LocusError(file: file, object: object, message).description
    }
}

/// Checks a file against every rule of spec/FORMAT.md, reading all data (fingerprints, summaries,
/// index order, padding bits). It reports as many independent violations as it can instead of
/// stopping at the first.
public struct Validator {
    public let path: String
    /// Also count NaN and ±inf in checkpoint tensors and dataset inputs (a warning per tensor that
    /// holds any: the format allows them there, unlike in scores and task vectors).
    public let stats: Bool
    public private(set) var findings: [Finding] = []
    /// Tensor digests computed while checking `digest` attributes, by object path, so that the
    /// fingerprint of a checkpoint whose tensors carry digests does not read them a second time.
    /// Keyed by the path's bytes: Swift strings compare canonically equivalent names (NFC, NFD) equal.
    private var computedDigests: [[UInt8]: [UInt8]] = [:]

    public static func validate(_ path: String, stats: Bool = false) -> [Finding] {
        var v = Validator(path: path, stats: stats)
        v.run()
        return v.findings
    }

    init(path: String, stats: Bool = false) { self.path = path; self.stats = stats }

    mutating func error(_ object: String, _ message: String) { findings.append(.init(severity: .error, file: path, object: object, message: message)) }
    mutating func warning(_ object: String, _ message: String) { findings.append(.init(severity: .warning, file: path, object: object, message: message)) }
    mutating func record(_ e: any Error, object: String) {
        let le = LocusError.wrap(e, file: path, object: object)
        findings.append(.init(severity: .error, file: le.file, object: le.object ?? object, message: le.message))
    }

    /// Runs `body`, turning a thrown error into a finding.
    mutating func attempt(_ object: String, _ body: (inout Validator) throws -> Void) {
        do { try body(&self) } catch { record(error, object: object) }
    }

    mutating func run() {
        let artifact: ArtifactFile
        do { artifact = try ArtifactFile.open(path) } catch {
            let le = LocusError.wrap(error, file: path)
            findings.append(.init(severity: .error, file: path, object: le.object ?? "/", message: le.message))
            return
        }
        for name in ["producer", "created"] where !artifact.root.hasAttribute(name) {
            error("/@\(name)", "required attribute is missing")
        }
        if [.scores, .mask, .taskVector].contains(artifact.header.kind) {
            if let fp = artifact.header.baseFingerprint { checkFingerprintSyntax(fp, "/@base-fingerprint") }
            else { error("/@base-fingerprint", "required attribute is missing") }
        }
        attempt("/") { v in try v.checkStorageRules(artifact.root) }
        switch artifact.header.kind {
        case .checkpoint: checkCheckpoint(artifact)
        case .scores: checkScores(artifact)
        case .mask: checkMask(artifact)
        case .taskVector: checkTaskVector(artifact)
        case .dataset:
            attempt("/") { _ in _ = try DatasetArtifact.read(artifact) }
            if stats, artifact.root.kind(of: "inputs") == .dataset {
                attempt("/inputs") { v in
                    let ds = try artifact.root.openDataset("inputs")
                    guard ds.type.typeClass == .float, let dtype = LocusDType.matching(ds.type) else { return }
                    var counts = NonFiniteCounts()
                    try withContext(file: v.path, object: "/inputs") {
                        try DataDigest.forEachStoredBlock(ds) { counts.add($0, dtype: dtype) }
                    }
                    if counts.total > 0 { v.warning("/inputs", "holds \(counts) among \(ds.elementCount) values") }
                }
            }
        }
    }

    mutating func checkFingerprintSyntax(_ fp: String, _ object: String) {
        let hex = fp.dropFirst("sha256:".count)
        if !fp.hasPrefix("sha256:") || hex.count != 64 || !hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) {
            error(object, "'\(fp)' is not 'sha256:' followed by 64 lowercase hex digits")
        }
    }

    /// Filters, byte order and chunking of every dataset in the file (spec §1.1).
    /// The layout nests groups at most three deep (`/tensors/NAME/…`); a deeper walk means a
    /// corrupt link that points back up the tree, which would otherwise recurse forever.
    mutating func checkStorageRules(_ group: Group, depth: Int = 0) throws {
        guard depth <= 8 else {
            error(group.path, "groups nest deeper than any Locus layout (a link points back up the tree: the file is corrupt)")
            return
        }
        for name in try group.childNames() {
            switch group.kind(of: name) {
            case .group: try checkStorageRules(try group.openGroup(name), depth: depth + 1)
            case .dataset:
                let ds = try group.openDataset(name)
                let t = ds.type
                if (t.typeClass == .integer || t.typeClass == .float), t.size > 1, !t.isLittleEndian {
                    error(ds.path, "numbers must be little-endian")
                }
                let dcpl = ds.creationProperties
                let filters = dcpl.filters
                if let bad = filters.first(where: { ![1, 2, 3].contains($0) }) {
                    error(ds.path, "uses HDF5 filter \(bad); only deflate (1), shuffle (2) and fletcher32 (3) are allowed")
                }
                if dcpl.layout == .chunked && !filters.contains(3) { warning(ds.path, "chunked data should carry fletcher32") }
                if ds.hasAttribute(DataDigest.attribute) {
                    let stored = try ds.stringAttribute(DataDigest.attribute)
                    var d = TensorDigester()
                    try withContext(file: path, object: ds.path) { try DataDigest.forEachStoredBlock(ds) { d.update($0) } }
                    let digest = d.finalize()
                    // Stored bytes are the fingerprint's raw bytes when they are little-endian.
                    if t.isLittleEndian || t.size == 1 { computedDigests[Array(ds.path.utf8)] = digest }
                    let actual = DataDigest.text(digest)
                    if stored != actual {
                        error(ds.path, "the data does not match its digest (\(stored), the data gives \(actual)): a stored value changed after writing")
                    }
                }
            default: error(group.path == "/" ? "/\(name)" : "\(group.path)/\(name)", "is neither a group nor a dataset")
            }
        }
    }

    mutating func summary(_ obj: some HDF5Object, _ name: String, int expected: Int) {
        attempt("\(obj.path)@\(name)") { v in
            guard obj.hasAttribute(name) else { return v.error("\(obj.path)@\(name)", "required attribute is missing") }
            let got = try obj.int64Attribute(name)
            if got != Int64(expected) { v.error("\(obj.path)@\(name)", "is \(got), the data gives \(expected)") }
        }
    }

    mutating func summary(_ obj: some HDF5Object, _ name: String, double expected: [Double], scalar: Bool = true) {
        attempt("\(obj.path)@\(name)") { v in
            guard obj.hasAttribute(name) else { return v.error("\(obj.path)@\(name)", "required attribute is missing") }
            let got = try obj.doubleAttributes(name, maxCount: 16)
            if got.contains(where: { !$0.isFinite }), expected.allSatisfy(\.isFinite) {
                let shown = scalar && got.count == 1 ? NonFiniteCounts.text(got[0]) : "[" + got.map(NonFiniteCounts.text).joined(separator: ", ") + "]"
                return v.error("\(obj.path)@\(name)", "is \(shown), the data gives \(expected.count == 1 ? "\(expected[0])" : "\(expected)"): a summary of finite values is finite")
            }
            if got.count != expected.count || zip(got, expected).contains(where: { !Summaries.close($0, $1) }) {
                v.error("\(obj.path)@\(name)", "is \(scalar && got.count == 1 ? "\(got[0])" : "\(got)"), the data gives \(scalar && expected.count == 1 ? "\(expected[0])" : "\(expected)")")
            }
        }
    }

    /// NaN and ±inf among a float dataset's stored values, streamed in row blocks.
    func nonFinite(_ ds: Dataset, dtype: LocusDType, object: String) throws -> NonFiniteCounts {
        var c = NonFiniteCounts()
        try withContext(file: path, object: object) { try DataDigest.forEachStoredBlock(ds) { c.add($0, dtype: dtype) } }
        return c
    }

    func failed(since index: Int) -> Bool { findings[index...].contains { $0.severity == .error } }

    mutating func links(_ a: ArtifactFile) -> [(name: String, link: String)]? {
        do { return try a.tensorLinks() } catch { record(error, object: "/tensors"); return nil }
    }

    mutating func checkCheckpoint(_ a: ArtifactFile) {
        guard let links = links(a) else { return }
        let group: Group
        do { group = try a.tensorsGroup() } catch { return record(error, object: "/tensors") }
        var tensors: [CheckpointTensor] = []
        for (name, link) in links {
            attempt("/tensors/\(link)") { v in
                let t = try CheckpointReader.describe(group, name: name, link: link, path: a.path)
                tensors.append(t)
                let ds = try group.openDataset(link)
                if t.count > 0 {
                    if ds.creationProperties.layout != .contiguous { v.warning(t.objectPath, "dense tensors should be contiguous (not chunked or compressed)") }
                    else if let off = ds.dataOffset, off % LocusSpec.alignment != 0 { v.warning(t.objectPath, "data starts at file offset \(off), not a multiple of \(LocusSpec.alignment)") }
                }
            }
        }
        summary(a.root, "tensor-count", int: links.count)
        summary(a.root, "element-count", int: tensors.reduce(0) { $0 + $1.count })
        guard tensors.count == links.count else { return }   // data checks need every tensor to be sound
        attempt("/") { v in
            let reader = try CheckpointReader(a)
            for t in reader.tensors where t.dtype == .bool {
                let bytes = try reader.readRaw(t)
                if let bad = bytes.firstIndex(where: { $0 > 1 }) { v.error(t.objectPath, "bool element \(bad) is \(bytes[bad]), expected 0 or 1") }
            }
            // One pass: tensor digests (reused from the digest check when it made them), the
            // fingerprint from them and, with stats, the non-finite counts.
            var hasher = FingerprintHasher()
            for t in reader.tensors {
                let countValues = v.stats && t.dtype.isFloatingPoint
                if !countValues, let digest = v.computedDigests[Array(t.objectPath.utf8)] {
                    hasher.addTensor(name: t.name, dtype: t.dtype, shape: t.shape, digest: digest)
                    continue
                }
                var d = TensorDigester(), counts = NonFiniteCounts()
                try reader.forEachBlock(t) { block in
                    d.update(block)
                    if countValues { counts.add(block, dtype: t.dtype) }
                }
                hasher.addTensor(name: t.name, dtype: t.dtype, shape: t.shape, digest: d.finalize())
                if counts.total > 0 { v.warning(t.objectPath, "holds \(counts) among \(t.count) values") }
            }
            let computed = hasher.finalize()
            if !a.root.hasAttribute("fingerprint") { v.error("/@fingerprint", "required attribute is missing") }
            else {
                let stored = try a.root.stringAttribute("fingerprint")
                if stored != computed { v.error("/@fingerprint", "is \(stored), the data gives \(computed)") }
            }
            if a.root.contains("metadata") { _ = try reader.metadata() }
            if let arch = try reader.architecture() {
                switch try? JSON.decode(JSONValue.self, from: arch) {
                case .object(let o)?:
                    if o["format"] != .string("locus-sequential") || o["version"] != .integer(1) {
                        v.error("/architecture", "format/version must be \"locus-sequential\" / 1 (spec §2.1)")
                    }
                case nil: v.error("/architecture", "is not valid JSON")
                default: v.error("/architecture", "must be a JSON object (spec §2.1)")
                }
            }
        }
    }

    mutating func checkScores(_ a: ArtifactFile) {
        let reader: ScoresReader
        do { reader = try ScoresReader(a) } catch { return record(error, object: "/") }
        var total = 0.0, lo = Double.infinity, hi = -Double.infinity, count = 0
        let before = findings.count
        for t in reader.tensors {
            attempt(t.objectPath) { v in
                // Counted from the stored bits first: the reader stops at the first non-finite score.
                let counts = try v.nonFinite(try reader.dataset(t), dtype: .float32, object: t.objectPath)
                if counts.total > 0 { return v.error(t.objectPath, "holds \(counts) among \(t.count) values; scores must be finite and ≥ 0") }
                let values = try reader.read(t)
                if let bad = values.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                    v.error(t.objectPath, "score \(bad) is \(values[bad]); scores must be finite and ≥ 0")
                    return
                }
                let (q, s) = values.withUnsafeBufferPointer { (Summaries.quantiles($0), Summaries.sum($0)) }
                let ds = try reader.dataset(t)
                v.summary(ds, "quantiles", double: q, scalar: false)
                v.summary(ds, "sum", double: [s])
                total += s; count += t.count
                if let f = q.first, let l = q.last { lo = min(lo, f); hi = max(hi, l) }
            }
        }
        guard !failed(since: before) else { return }   // totals over broken tensors would only add noise
        summary(a.root, "tensor-count", int: reader.tensors.count)
        summary(a.root, "element-count", int: count)
        summary(a.root, "sum", double: [total])
        if count > 0 { summary(a.root, "min", double: [lo]); summary(a.root, "max", double: [hi]) }
    }

    mutating func checkMask(_ a: ArtifactFile) {
        guard let links = links(a) else { return }
        do { _ = try a.string(a.root, "absent-tensors") } catch { record(error, object: "/@absent-tensors") }
        let group: Group
        do { group = try a.tensorsGroup() } catch { return record(error, object: "/tensors") }
        var count = 0, ones = 0
        let before = findings.count
        for (name, link) in links {
            attempt("/tensors/\(link)") { v in
                let t = try MaskReader.describe(group, artifact: a, name: name, link: link)
                let packed = try PackedBits.read(try group.openDataset(link), bits: t.count, path: a.path, object: t.objectPath)
                let pop = BitPacking.popcount(packed)
                if pop != t.ones { v.error(t.objectPath + "@ones", "is \(t.ones), the mask has \(pop) set bits") }
                count += t.count; ones += pop
            }
        }
        guard !failed(since: before) else { return }
        summary(a.root, "tensor-count", int: links.count)
        summary(a.root, "count", int: count)
        summary(a.root, "ones", int: ones)
    }

    mutating func checkTaskVector(_ a: ArtifactFile) {
        guard let links = links(a) else { return }
        for name in ["finetuned-fingerprint", "mask-fingerprint"] where a.root.hasAttribute(name) {
            if let fp = try? a.root.stringAttribute(name) { checkFingerprintSyntax(fp, "/@\(name)") } else { error("/@\(name)", "must be a string") }
        }
        if a.root.hasAttribute("task-accuracy") {
            let acc = try? a.root.doubleAttribute("task-accuracy")
            if acc == nil || !(0...1).contains(acc!) { error("/@task-accuracy", "must be a number in [0, 1]") }
        }
        if !a.root.hasAttribute("scale") { error("/@scale", "required attribute is missing") }
        else {
            do {
                let s = try a.root.doubleAttribute("scale")
                if !s.isFinite { error("/@scale", "is \(s), expected a finite number") }
            } catch { record(error, object: "/@scale") }
        }
        let group: Group
        do { group = try a.tensorsGroup() } catch { return record(error, object: "/tensors") }
        var count = 0, nnz = 0, squares = 0.0
        let before = findings.count
        for (name, link) in links {
            attempt("/tensors/\(link)") { v in
                let t = try TaskVectorReader.describe(group, artifact: a, name: name, link: link)
                // Counted from the stored bits first: the reader stops at the first non-finite value.
                let valuesSet = try withContext(file: a.path, object: t.objectPath + "/values") { try group.openGroup(link).openDataset("values") }
                let counts = try v.nonFinite(valuesSet, dtype: t.dtype, object: t.objectPath + "/values")
                if counts.total > 0 {
                    return v.error(t.objectPath + "/values", "holds \(counts) among \(valuesSet.elementCount) stored values; task-vector values must be finite (spec §5)")
                }
                let (_, values) = try TaskVectorReader.readSparse(t, in: group, path: a.path)
                let n = values.reduce(0) { $0 + ($1 != 0 ? 1 : 0) }
                let sq = values.reduce(0.0) { $0 + $1 * $1 }
                if n != t.nnz { v.error(t.objectPath + "@nnz", "is \(t.nnz), the data has \(n) nonzero values") }
                v.summary(try group.openGroup(link), "l2-norm", double: [sq.squareRoot()])
                count += t.count; nnz += n; squares += sq
            }
        }
        guard !failed(since: before) else { return }
        summary(a.root, "tensor-count", int: links.count)
        summary(a.root, "count", int: count)
        summary(a.root, "nnz", int: nnz)
        summary(a.root, "l2-norm", double: [squares.squareRoot()])
    }
}

/// NaN and ±inf among floating-point values, counted from their little-endian bit patterns (no
/// conversion, so float16 and bfloat16 are counted as stored).
public struct NonFiniteCounts: Sendable, Equatable, CustomStringConvertible {
    public var nan = 0, positiveInfinity = 0, negativeInfinity = 0
    public var total: Int { nan + positiveInfinity + negativeInfinity }
    public init() {}

    public init(counting bytes: UnsafeRawBufferPointer, dtype: LocusDType) { add(bytes, dtype: dtype) }

    /// Adds the values of `bytes`, raw little-endian elements of `dtype` (integers hold none).
    public mutating func add(_ bytes: UnsafeRawBufferPointer, dtype: LocusDType) {
        HalfPrecision.forEachNonFinite(bytes, dtype: dtype) { _, kind in
            switch kind {
            case .nan: nan += 1
            case .positiveInfinity: positiveInfinity += 1
            case .negativeInfinity: negativeInfinity += 1
            }
            return true
        }
    }

    /// Streams a checkpoint tensor (any source) in blocks of whole rows.
    public static func of(_ source: any CheckpointSource, _ t: CheckpointTensor, blockBytes: Int = 64 << 20) throws -> NonFiniteCounts {
        var c = NonFiniteCounts()
        try source.forEachBlock(t, blockBytes: blockBytes) { c.add($0, dtype: t.dtype) }
        return c
    }

    /// "2 nan, 1 +inf" (only the kinds present), the words inspect prints.
    public var description: String {
        [(nan, "nan"), (positiveInfinity, "+inf"), (negativeInfinity, "-inf")].filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
    }

    /// A number as inspect prints it: nan, inf, -inf for the non-finite ones.
    static func text(_ x: Double) -> String { x.isNaN ? "nan" : x.isInfinite ? (x < 0 ? "-inf" : "inf") : "\(x)" }
}
