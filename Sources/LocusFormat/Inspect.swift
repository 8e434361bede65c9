import Foundation
import HDF5

/// What `locus inspect` shows. Built from attributes and HDF5 metadata only, unless `stats` asks
/// for the values to be read (then summaries are recomputed and float tensors get min/max/mean).
public struct InspectReport: Codable, Sendable {
    public struct Tensor: Codable, Sendable {
        public var name: String
        public var shape: [Int]
        public var dtype: String
        public var encoding: String
        public var count: Int
        public var nnz: Int?
        public var ones: Int?
        public var density: Double?
        public var quantiles: [Double]?
        public var l2Norm: Double?
        public var min: Double?
        public var max: Double?
        public var mean: Double?
        public var bytesOnDisk: Int
        public var logicalBytes: Int
        enum CodingKeys: String, CodingKey {
            case name, shape, dtype, encoding, count, nnz, ones, density, quantiles, l2Norm = "l2_norm", min, max, mean
            case bytesOnDisk = "bytes_on_disk", logicalBytes = "logical_bytes"
        }
    }
    public struct Totals: Codable, Sendable {
        public var tensorCount = 0
        public var count = 0
        public var bytesOnDisk = 0
        public var logicalBytes = 0
        public var ones: Int?
        public var nnz: Int?
        public var density: Double?
        public var l2Norm: Double?
        public var min: Double?
        public var max: Double?
        public var sum: Double?
        enum CodingKeys: String, CodingKey {
            case tensorCount = "tensor_count", count, bytesOnDisk = "bytes_on_disk", logicalBytes = "logical_bytes"
            case ones, nnz, density, l2Norm = "l2_norm", min, max, sum
        }
    }
    public struct DatasetInfo: Codable, Sendable {
        public var inputShape: [Int]
        public var inputDtype: String
        public var classes: [String]
        public var splits: [String: Int]
        public var normalization: Normalization
        enum CodingKeys: String, CodingKey {
            case inputShape = "input_shape", inputDtype = "input_dtype", classes, splits, normalization
        }
    }
    public var path: String
    public var kind: String
    public var encodingVersion: String
    public var producer: String
    public var created: String
    public var fileBytes: Int
    public var fingerprint: String?
    public var baseFingerprint: String?
    public var provenance: Provenance?
    public var estimator: String?
    public var samples: Int64?
    public var draws: Int64?
    public var reduction: String?
    public var scale: Double?
    public var absentTensors: String?
    public var metadata: [String: String]?
    public var dataset: DatasetInfo?
    public var tensors: [Tensor]
    public var totals: Totals

    /// The JSON keys are the spelling of the layout's attributes (snake_case), as in h5py's view of the file.
    enum CodingKeys: String, CodingKey {
        case path, kind, encodingVersion = "encoding_version", producer, created, fileBytes = "file_bytes", fingerprint
        case baseFingerprint = "base_fingerprint", provenance, estimator, samples, draws, reduction, scale
        case absentTensors = "absent_tensors", metadata, dataset, tensors, totals
    }

    /// Keys that every report carries are written as null when unknown; kind-specific ones only when they apply.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(path, forKey: .path)
        try c.encode(kind, forKey: .kind)
        try c.encode(encodingVersion, forKey: .encodingVersion)
        try c.encode(producer, forKey: .producer)
        try c.encode(created, forKey: .created)
        try c.encode(fileBytes, forKey: .fileBytes)
        try c.encode(provenance, forKey: .provenance)
        if kind == ArtifactKind.checkpoint.rawValue { try c.encode(fingerprint, forKey: .fingerprint) }
        else if kind != ArtifactKind.dataset.rawValue { try c.encode(baseFingerprint, forKey: .baseFingerprint) }
        try c.encodeIfPresent(estimator, forKey: .estimator)
        try c.encodeIfPresent(samples, forKey: .samples)
        try c.encodeIfPresent(draws, forKey: .draws)
        try c.encodeIfPresent(reduction, forKey: .reduction)
        try c.encodeIfPresent(scale, forKey: .scale)
        try c.encodeIfPresent(absentTensors, forKey: .absentTensors)
        try c.encodeIfPresent(metadata, forKey: .metadata)
        try c.encodeIfPresent(dataset, forKey: .dataset)
        try c.encode(tensors, forKey: .tensors)
        try c.encode(totals, forKey: .totals)
    }
}

public enum Inspector {
    /// Builds the report; `tensor` restricts it to one tensor, `stats` reads values.
    public static func inspect(_ path: String, tensor only: String? = nil, stats: Bool = false) throws -> InspectReport {
        let options = CheckpointOpenOptions.current
        // What is not a checkpoint source at all gets the Locus file checks' own messages below.
        if let kind = try? detectCheckpointKind(path: path), kind != .locus || !(options.renaming?.isIdentity ?? true) {
            return try inspectSource(path, tensor: only, stats: stats)
        }
        let a = try ArtifactFile.open(path)
        let h = a.header
        var r = InspectReport(path: path, kind: h.kind.rawValue, encodingVersion: h.encodingVersion, producer: h.producer,
                              created: h.created, fileBytes: a.file.size, fingerprint: nil, baseFingerprint: h.baseFingerprint,
                              provenance: h.provenance, tensors: [], totals: .init())
        func wanted(_ name: String) -> Bool { only.map { TensorName.same($0, name) } ?? true }
        switch h.kind {
        case .checkpoint:
            let c = try CheckpointReader(a)
            r.fingerprint = try c.fingerprint
            r.metadata = try c.metadata()
            for t in c.tensors where wanted(t.name) {
                let ds = try c.dataset(t)
                var e = InspectReport.Tensor(name: t.name, shape: t.shape, dtype: t.dtype.rawValue, encoding: "dense", count: t.count,
                                             bytesOnDisk: ds.storageSize, logicalBytes: t.byteCount)
                if stats, t.dtype.isFloatingPoint, t.count > 0 { try Inspector.addStatistics(&e, c, t) }
                r.tensors.append(e)
            }
        case .scores:
            let s = try ScoresReader(a)
            r.estimator = s.info.estimator; r.samples = s.info.samples; r.draws = s.info.draws; r.reduction = s.info.reduction.rawValue
            var lo = Double.infinity, hi = -Double.infinity, sum = 0.0
            for t in s.tensors where wanted(t.name) {
                let ds = try s.dataset(t)
                var e = InspectReport.Tensor(name: t.name, shape: t.shape, dtype: "float32", encoding: "dense", count: t.count,
                                             bytesOnDisk: ds.storageSize, logicalBytes: t.count * 4)
                if stats {
                    let v = try s.read(t)
                    e.quantiles = v.withUnsafeBufferPointer { Summaries.quantiles($0) }
                    sum += v.withUnsafeBufferPointer { Summaries.sum($0) }
                } else {
                    e.quantiles = try withContext(file: path, object: t.objectPath) { try ds.doubleAttributes("quantiles", maxCount: 5) }
                    sum += try withContext(file: path, object: t.objectPath) { try ds.doubleAttribute("sum") }
                }
                if let q = e.quantiles, let f = q.first, let l = q.last { lo = min(lo, f); hi = max(hi, l) }
                r.tensors.append(e)
            }
            if lo <= hi { r.totals.min = lo; r.totals.max = hi }
            r.totals.sum = sum
        case .mask:
            let m = try MaskReader(a)
            r.absentTensors = m.absentTensors.rawValue
            let g = try a.tensorsGroup()
            var ones = 0
            for t in m.tensors where wanted(t.name) {
                let n = stats ? BitPacking.popcount(try m.readPacked(t)) : t.ones
                let ds = try withContext(file: path) { try g.openDataset(t.link) }
                r.tensors.append(.init(name: t.name, shape: t.shape, dtype: "bool", encoding: "packed-bits", count: t.count, ones: n,
                                       density: t.count == 0 ? 0 : Double(n) / Double(t.count),
                                       bytesOnDisk: ds.storageSize, logicalBytes: BitPacking.byteCount(bits: t.count)))
                ones += n
            }
            r.totals.ones = ones
        case .taskVector:
            let tv = try TaskVectorReader(a)
            r.scale = tv.scale
            let g = try a.tensorsGroup()
            var nnz = 0, squares = 0.0
            for t in tv.tensors where wanted(t.name) {
                var n = t.nnz, norm = t.l2Norm
                if stats {
                    let (_, v) = try tv.readSparse(t)
                    n = v.withUnsafeBufferPointer { Summaries.nonzeroCount($0) }
                    norm = v.withUnsafeBufferPointer { Summaries.sumOfSquares($0) }.squareRoot()
                }
                let sub = try withContext(file: path) { try g.openGroup(t.link) }
                let onDisk = try withContext(file: path) { try sub.childNames().reduce(0) { $0 + (try sub.openDataset($1).storageSize) } }
                r.tensors.append(.init(name: t.name, shape: t.shape, dtype: t.dtype.rawValue, encoding: t.encoding.rawValue, count: t.count,
                                       nnz: n, density: t.count == 0 ? 0 : Double(n) / Double(t.count), l2Norm: norm,
                                       bytesOnDisk: onDisk, logicalBytes: t.count * t.dtype.byteSize))
                nnz += n; squares += norm * norm
            }
            r.totals.nnz = nnz
            r.totals.l2Norm = squares.squareRoot()
        case .dataset:
            let d = try DatasetArtifact.read(a)
            let dtype: String
            switch d.inputs { case .uint8: dtype = "uint8"; case .float32: dtype = "float32" }
            r.dataset = .init(inputShape: d.shape, inputDtype: dtype, classes: d.classes,
                              splits: d.splits.mapValues(\.count), normalization: d.normalization)
        }
        if let only, r.tensors.isEmpty, h.kind != .dataset {
            throw LocusError(file: path, object: "/tensors", "no tensor named '\(only)'")
        }
        r.totals.tensorCount = r.tensors.count
        r.totals.count = r.tensors.reduce(0) { $0 + $1.count }
        r.totals.bytesOnDisk = r.tensors.reduce(0) { $0 + $1.bytesOnDisk }
        r.totals.logicalBytes = r.tensors.reduce(0) { $0 + $1.logicalBytes }
        if let ones = r.totals.ones { r.totals.density = r.totals.count == 0 ? 0 : Double(ones) / Double(r.totals.count) }
        if let nnz = r.totals.nnz { r.totals.density = r.totals.count == 0 ? 0 : Double(nnz) / Double(r.totals.count) }
        return r
    }

    /// A checkpoint that is not a Locus file (or is seen through a renaming), read in place. Only
    /// headers are read unless `stats`, which streams every tensor in row blocks (constant memory)
    /// and computes the base fingerprint.
    static func inspectSource(_ path: String, tensor only: String?, stats: Bool) throws -> InspectReport {
        let kind = try detectCheckpointKind(path: path)
        let source = try openCheckpoint(path: path)
        var r = InspectReport(path: path, kind: ArtifactKind.checkpoint.rawValue, encodingVersion: kind.rawValue, producer: "-", created: "-",
                              fileBytes: fileBytes(path), fingerprint: nil, baseFingerprint: nil, provenance: nil, tensors: [], totals: .init())
        r.metadata = try source.metadata()
        if stats { r.fingerprint = try source.fingerprint }
        for t in source.tensors where only.map({ TensorName.same($0, t.name) }) ?? true {
            var e = InspectReport.Tensor(name: t.name, shape: t.shape, dtype: t.dtype.rawValue, encoding: "dense", count: t.count,
                                         bytesOnDisk: t.byteCount, logicalBytes: t.byteCount)
            if stats, t.dtype.isFloatingPoint, t.count > 0 { try addStatistics(&e, source, t) }
            r.tensors.append(e)
        }
        if let only, r.tensors.isEmpty { throw LocusError(file: path, object: "tensor '\(only)'", "no tensor of this name") }
        r.totals.tensorCount = r.tensors.count
        r.totals.count = r.tensors.reduce(0) { $0 + $1.count }
        r.totals.bytesOnDisk = r.tensors.reduce(0) { $0 + $1.bytesOnDisk }
        r.totals.logicalBytes = r.tensors.reduce(0) { $0 + $1.logicalBytes }
        return r
    }

    /// min, max, mean and l2 norm of a float tensor, streamed in blocks of rows (16 MiB): memory
    /// does not follow the tensor's size.
    static func addStatistics(_ e: inout InspectReport.Tensor, _ source: any CheckpointSource, _ t: CheckpointTensor) throws {
        var lo = Float.infinity, hi = -Float.infinity, sum = 0.0, squares = 0.0
        try source.forEachBlock(t, blockBytes: 16 << 20) { bytes in
            let v = HalfPrecision.decode(bytes, dtype: t.dtype)
            v.withUnsafeBufferPointer { b in
                for x in b { lo = Swift.min(lo, x); hi = Swift.max(hi, x) }
                sum += Summaries.sum(b); squares += Summaries.sumOfSquares(b)
            }
        }
        e.min = Double(lo); e.max = Double(hi); e.mean = sum / Double(t.count); e.l2Norm = squares.squareRoot()
    }

    /// Size of a file, or of the files directly inside a folder.
    static func fileBytes(_ path: String) -> Int {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else { return 0 }
        let files = isDir.boolValue ? ((try? fm.contentsOfDirectory(atPath: path)) ?? []).map { path + "/" + $0 } : [path]
        return files.reduce(0) { $0 + (((try? fm.attributesOfItem(atPath: $1))?[.size] as? Int) ?? 0) }
    }

    public static func json(_ r: InspectReport) throws -> String { try JSON.encode(r, pretty: true) }

    public static func verificationJSON(_ r: VerificationReport) throws -> String {
        struct Out: Encodable { var file: String; var kind: String; var note: String?; var valid: Bool; var checks: [VerificationItem] }
        return try JSON.encode(Out(file: r.file, kind: r.kind, note: r.note, valid: r.mismatches.isEmpty, checks: r.items), pretty: true)
    }
}
