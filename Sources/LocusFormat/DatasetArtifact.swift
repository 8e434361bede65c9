import HDF5

/// How raw inputs become network inputs: `(raw · scale − mean) / std`, per channel when
/// `mean`/`std` have one entry per channel (spec §6).
public struct Normalization: Sendable, Equatable, Codable {
    public var scale: Double
    public var mean: [Double]
    public var std: [Double]
    public init(scale: Double = 1, mean: [Double] = [0], std: [Double] = [1]) { self.scale = scale; self.mean = mean; self.std = std }
}

/// A labelled dataset held in memory (the engine's training sets are small enough).
public struct LabelledData: Sendable {
    public enum Inputs: Sendable {
        case uint8([UInt8])
        case float32([Float])
    }
    public var inputs: Inputs
    /// Shape of `inputs`: [N, F] or [N, C, H, W].
    public var shape: [Int]
    public var labels: [Int64]
    public var classes: [String]
    public var splits: [String: [Int]]
    public var normalization: Normalization
    public var sampleCount: Int { shape.first ?? 0 }

    public init(inputs: Inputs, shape: [Int], labels: [Int64], classes: [String], splits: [String: [Int]], normalization: Normalization = .init()) {
        self.inputs = inputs; self.shape = shape; self.labels = labels; self.classes = classes
        self.splits = splits; self.normalization = normalization
    }

    /// Checks every rule of spec §6 that concerns values; `describe` names the offending object.
    public func check(file: String) throws {
        guard shape.count >= 2, let n = checkedProduct(shape) else { throw LocusError(file: file, object: "/inputs", "shape \(shape) must be [N, ...] with at least 2 dimensions") }
        let stored: Int
        switch inputs { case .uint8(let a): stored = a.count; case .float32(let a): stored = a.count }
        guard stored == n else { throw LocusError(file: file, object: "/inputs", "\(stored) values do not fill shape \(shape)") }
        guard labels.count == sampleCount else { throw LocusError(file: file, object: "/labels", "\(labels.count) labels for \(sampleCount) samples") }
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= Int64(classes.count) }) {
            throw LocusError(file: file, object: "/labels", "label \(labels[bad]) of sample \(bad) is outside [0, \(classes.count))")
        }
        let k = shape[1]
        for (name, v) in [("mean", normalization.mean), ("std", normalization.std)] where v.count != 1 && v.count != k {
            throw LocusError(file: file, object: "/inputs@\(name)", "has \(v.count) entries, expected 1 or \(k)")
        }
        if normalization.std.contains(where: { !($0 > 0) }) { throw LocusError(file: file, object: "/inputs@std", "must be > 0") }
        var owner = [Int: String]()
        for (name, idx) in splits.sorted(by: { $0.key < $1.key }) {
            for (j, i) in idx.enumerated() {
                guard i >= 0, i < sampleCount else { throw LocusError(file: file, object: "/splits/\(name)", "index \(i) is outside [0, \(sampleCount))") }
                guard j == 0 || i > idx[j - 1] else { throw LocusError(file: file, object: "/splits/\(name)", "indices are not strictly increasing at position \(j)") }
                if let other = owner.updateValue(name, forKey: i) {
                    throw LocusError(file: file, object: "/splits/\(name)", "sample \(i) is also in split '\(other)'")
                }
            }
        }
    }
}

public enum DatasetArtifact {
    /// Writes `data` as a dataset artifact (atomically). `attributes` adds root string attributes such as `source`.
    public static func write(_ data: LabelledData, to path: String, attributes: [String: String] = [:], provenance: Provenance? = Provenance()) throws {
        try data.check(file: path)
        let w = try ArtifactWriter(target: path, kind: .dataset, aligned: false, baseFingerprint: nil, provenance: provenance)
        try w.guarded {
            let root = w.root
            try root.setAttribute("sample-count", Int64(data.sampleCount))
            try root.setAttribute("class-count", Int64(data.classes.count))
            for (k, v) in attributes.sorted(by: { $0.key < $1.key }) { try root.setAttribute(k, v) }
            let dtype: LocusDType
            switch data.inputs { case .uint8: dtype = .uint8; case .float32: dtype = .float32 }
            let type = try dtype.hdf5Type()
            let dcpl = try PropertyList.datasetCreate()
            let rowElements = data.shape.dropFirst().reduce(1, *)
            let rowsPerChunk = max(1, min(data.sampleCount, (1 << 20) / max(1, rowElements * dtype.byteSize)))
            if data.sampleCount > 0 {
                try dcpl.setChunk([rowsPerChunk] + data.shape.dropFirst())
                if dtype.byteSize > 1 { try dcpl.addShuffle() }
                try dcpl.addDeflate(level: 4)
                try dcpl.addFletcher32()
            }
            let inputs = try root.createDataset("inputs", type: type, shape: data.shape, properties: data.sampleCount > 0 ? dcpl : nil)
            switch data.inputs {
            case .uint8(let a): try a.withUnsafeBytes { try inputs.write($0, memType: .nativeUInt8); try DataDigest.store(inputs, $0) }
            case .float32(let a): try a.withUnsafeBytes { try inputs.write($0, memType: .nativeFloat); try DataDigest.store(inputs, $0) }
            }
            try inputs.setAttribute("dtype", dtype.rawValue)
            try inputs.setAttribute("scale", data.normalization.scale)
            try inputs.setAttribute("mean", data.normalization.mean)
            try inputs.setAttribute("std", data.normalization.std)
            let labels = try root.createDataset("labels", type: .int64LE, shape: [data.labels.count])
            try data.labels.withUnsafeBytes { try labels.write($0, memType: .nativeInt64); try DataDigest.store(labels, $0) }
            try root.createStringDataset("classes", data.classes)
            let splits = try root.createGroup("splits")
            for (name, idx) in data.splits.sorted(by: { $0.key < $1.key }) {
                let ds = try splits.createDataset(TensorName.linkName(for: name), type: .int64LE, shape: [idx.count])
                let v = idx.map(Int64.init)
                try v.withUnsafeBytes { try ds.write($0, memType: .nativeInt64); try DataDigest.store(ds, $0) }
            }
        }
        try w.finish()
    }

    /// Reads and checks a dataset artifact.
    public static func read(_ path: String) throws -> LabelledData {
        let a = try ArtifactFile.open(path, expecting: .dataset)
        return try read(a)
    }

    public static func read(_ a: ArtifactFile) throws -> LabelledData {
        let path = a.path, root = a.root
        let n = Int(try a.int64(root, "sample-count"))
        let c = Int(try a.int64(root, "class-count"))
        for name in ["inputs", "labels", "classes"] where root.kind(of: name) != .dataset {
            throw LocusError(file: path, object: "/\(name)", "required dataset is missing")
        }
        return try withContext(file: path) {
            let inputs = try root.openDataset("inputs")
            let shape = inputs.shape
            guard shape.count >= 2, shape[0] == n else { throw LocusError(file: path, object: "/inputs", "has shape \(shape), expected [\(n), ...]") }
            let dtypeText = try a.string(inputs, "dtype")
            guard let dtype = LocusDType(rawValue: dtypeText), dtype == .uint8 || dtype == .float32, dtype.accepts(inputs.type) else {
                throw LocusError(file: path, object: "/inputs", "must be uint8 or float32 with a matching dtype attribute (found '\(dtypeText)')")
            }
            let count = inputs.elementCount
            try CheckpointReader.checkStorage(inputs, logicalBytes: count * dtype.byteSize, path: path, object: "/inputs")
            let values: LabelledData.Inputs
            if dtype == .uint8 {
                var v = [UInt8](repeating: 0, count: count)
                try v.withUnsafeMutableBytes { try inputs.read(into: $0, memType: .nativeUInt8) }
                values = .uint8(v)
            } else {
                var v = [Float](repeating: 0, count: count)
                try v.withUnsafeMutableBytes { try inputs.read(into: $0, memType: .nativeFloat) }
                values = .float32(v)
            }
            let norm = Normalization(
                scale: inputs.hasAttribute("scale") ? try inputs.doubleAttribute("scale") : 1,
                mean: inputs.hasAttribute("mean") ? try inputs.doubleAttributes("mean", maxCount: 4096) : [0],
                std: inputs.hasAttribute("std") ? try inputs.doubleAttributes("std", maxCount: 4096) : [1])
            let lds = try root.openDataset("labels")
            guard LocusDType.matching(lds.type) == .int64, lds.shape == [n] else {
                throw LocusError(file: path, object: "/labels", "must be int64 of shape [\(n)], found shape \(lds.shape)")
            }
            var labels = [Int64](repeating: 0, count: n)
            try labels.withUnsafeMutableBytes { try lds.read(into: $0, memType: .nativeInt64) }
            let classes = try root.openDataset("classes").readStrings(maxCount: 1 << 20)
            guard classes.count == c else { throw LocusError(file: path, object: "/classes", "has \(classes.count) names, expected class-count \(c)") }
            var splits: [String: [Int]] = [:]
            if root.kind(of: "splits") == .group {
                let g = try root.openGroup("splits")
                for link in try g.childNames() {
                    let ds = try g.openDataset(link)
                    guard LocusDType.matching(ds.type) == .int64, ds.shape.count == 1, ds.elementCount <= n else {
                        throw LocusError(file: path, object: "/splits/\(link)", "must be a 1-D int64 dataset of at most \(n) indices")
                    }
                    var v = [Int64](repeating: 0, count: ds.elementCount)
                    try v.withUnsafeMutableBytes { try ds.read(into: $0, memType: .nativeInt64) }
                    splits[TensorName.name(forLink: link)] = v.map { Int(clamping: $0) }
                }
            }
            let data = LabelledData(inputs: values, shape: shape, labels: labels, classes: classes, splits: splits, normalization: norm)
            try data.check(file: path)
            return data
        }
    }
}
