import Foundation
import SafeTensors

/// safetensors ⇄ Locus conversion, streaming tensor by tensor (and large tensors in row blocks).
public enum Conversion {
    /// What a safetensors file becomes on import.
    public struct ImportOptions: Sendable {
        public var kind: ArtifactKind = .checkpoint
        /// The checkpoint derived artifacts (scores, mask, task vector) refer to.
        public var basePath: String?
        public var estimator: String?
        public var samples: Int64?
        public var draws: Int64 = 1
        public var reduction: ScoreReduction = .sum
        public var absentTensors: AbsentTensors = .frozen
        /// Checkpoints: the model description (spec §2.1 JSON) to store as /architecture.
        public var architecture: String?
        /// Bytes read and written at a time for large tensors; bounds memory use.
        public var blockBytes: Int = 64 << 20
        public init() {}
    }

    static func wrapSafeTensors<R>(_ body: () throws -> R) throws -> R {
        do { return try body() } catch let e as SafeTensorsError {
            throw LocusError(file: e.path, object: e.object.map { "tensor '\($0)'" }, e.message)
        }
    }

    /// Imports `source` (a .safetensors file) as a Locus artifact at `target`.
    public static func importSafeTensors(from source: String, to target: String, options: ImportOptions = .init(),
                                         provenance: Provenance? = nil) throws {
        let reader = try wrapSafeTensors { try SafeTensorsReader(path: source) }
        let entries = reader.entries.sorted { TensorName.byteOrder($0.name, $1.name) }
        for e in entries {
            if let problem = TensorName.problem(with: e.name) { throw LocusError(file: source, object: "tensor '\(e.name)'", problem) }
        }
        for e in entries where LocusDType(safeTensors: e.dtype) == nil {
            throw LocusError(file: source, object: "tensor '\(e.name)'", "dtype \(e.dtype.rawValue) has no Locus equivalent (supported: \(LocusDType.allCases.map { $0.safeTensors.rawValue }.joined(separator: ", ")))")
        }
        var prov = provenance ?? Provenance()
        prov.inputs.append(.init(role: "source", path: source, fingerprint: nil))

        if options.kind == .checkpoint {
            let w = try CheckpointWriter(path: target, provenance: prov, metadata: reader.metadata, architecture: options.architecture)
            // The source is read through a memory map (no copy) when possible, else with pread
            // into one reused buffer; either way in blocks of whole rows of at most blockBytes.
            let map = MappedFile(descriptor: reader.descriptor)
            let slices = entries.map { map?.slice(offset: reader.dataSectionOffset + $0.dataBegin, count: $0.byteCount) }
            if let map, slices.allSatisfy({ $0 != nil }) {
                // Mapped: the tensor digests are computed on a second thread from the map while
                // this one writes (and hashes whenever the other falls behind).
                let digests = BackgroundTensorDigests(slices.map { $0! }, map: map)
                defer { digests.stop() }
                for (i, e) in entries.enumerated() {
                    try w.add(name: e.name, dtype: LocusDType(safeTensors: e.dtype)!, shape: e.shape, bytes: slices[i]!,
                              blockBytes: min(options.blockBytes, 8 << 20),
                              progress: { digests.keepUp(writtenThrough: i, bytes: $0) }, digest: { digests.digest(i) })
                    digests.keepUp(writtenThrough: i + 1, bytes: 0)
                }
                digests.finishAll()
                try w.finish()
                return
            }
            var buffer: [UInt8] = []
            for e in entries {
                let dtype = LocusDType(safeTensors: e.dtype)!
                try w.beginTensor(name: e.name, dtype: dtype, shape: e.shape)
                if e.byteCount == 0 { continue }
                let rowBytes = e.shape.isEmpty ? e.byteCount : e.shape.dropFirst().reduce(1, *) * dtype.byteSize
                let step = min(e.byteCount, max(1, options.blockBytes / max(rowBytes, 1)) * rowBytes)
                let mapped = map?.slice(offset: reader.dataSectionOffset + e.dataBegin, count: e.byteCount)
                if mapped == nil && buffer.count < step { buffer = [UInt8](repeating: 0, count: step) }
                var offset = 0
                while offset < e.byteCount {
                    let n = min(step, e.byteCount - offset)
                    if let mapped {
                        try w.writeRows(UnsafeRawBufferPointer(rebasing: mapped[offset..<(offset + n)]))
                    } else {
                        try buffer.withUnsafeMutableBytes { b in
                            let slice = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                            try wrapSafeTensors { try reader.read(e, fromByte: offset, into: slice) }
                            try w.writeRows(UnsafeRawBufferPointer(slice))
                        }
                    }
                    offset += n
                }
            }
            try w.finish()
            return
        }

        guard let basePath = options.basePath else {
            throw RemediableError(LocusError(file: source, "importing a \(options.kind.rawValue) needs the checkpoint it belongs to"), .name(setting: "base"))
        }
        let base = try openCheckpoint(path: basePath)
        let baseFingerprint = try base.fingerprint
        prov.inputs.append(.init(role: "base", path: basePath, fingerprint: baseFingerprint))
        try checkAgainstBase(entries.map { ($0.name, $0.shape) }, base: base, source: source)

        switch options.kind {
        case .scores:
            guard let estimator = options.estimator, let samples = options.samples else {
                throw RequestError("estimator", "importing scores from \(source) needs the estimator and the number of samples (how the scores were computed)")
            }
            let w = try ScoresWriter(path: target, info: .init(baseFingerprint: baseFingerprint, estimator: estimator, samples: samples,
                                                                draws: options.draws, reduction: options.reduction), provenance: prov)
            for e in entries {
                let values = try floats(reader, e, source: source)
                try w.add(name: e.name, shape: e.shape, values: values)
            }
            try w.finish()
        case .mask:
            let w = try MaskWriter(path: target, baseFingerprint: baseFingerprint, absentTensors: options.absentTensors, provenance: prov)
            for e in entries {
                guard e.dtype == .BOOL || e.dtype == .U8 else {
                    throw LocusError(file: source, object: "tensor '\(e.name)'", "mask tensors must be BOOL or U8 (0/1), found \(e.dtype.rawValue)")
                }
                let bytes = try wrapSafeTensors { try reader.readBytes(e) }
                if let bad = bytes.firstIndex(where: { $0 > 1 }) {
                    throw LocusError(file: source, object: "tensor '\(e.name)'", "element \(bad) is \(bytes[bad]), expected 0 or 1")
                }
                try w.add(name: e.name, shape: e.shape, bits: bytes.map { $0 == 1 })
            }
            try w.finish()
        case .taskVector:
            let w = try TaskVectorWriter(path: target, baseFingerprint: baseFingerprint, provenance: prov)
            for e in entries {
                let values = try floats(reader, e, source: source)
                try w.add(name: e.name, shape: e.shape, dense: values, dtype: LocusDType(safeTensors: e.dtype)!)
            }
            try w.finish()
        case .checkpoint, .dataset:
            throw LocusError(file: source, "cannot import safetensors as a \(options.kind.rawValue)")
        }
    }

    static func floats(_ reader: SafeTensorsReader, _ e: SafeTensorsEntry, source: String) throws -> [Float] {
        guard let dtype = LocusDType(safeTensors: e.dtype), dtype.isFloatingPoint else {
            throw LocusError(file: source, object: "tensor '\(e.name)'", "expected a floating-point tensor, found \(e.dtype.rawValue)")
        }
        let bytes = try wrapSafeTensors { try reader.readBytes(e) }
        let values = bytes.withUnsafeBytes { HalfPrecision.decode($0, dtype: dtype) }
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: source, object: "tensor '\(e.name)'", "element \(bad) is \(values[bad]); values must be finite")
        }
        return values
    }

    /// Every name must exist in the base with the same shape; all mismatches are reported at once.
    public static func checkAgainstBase(_ tensors: [(name: String, shape: [Int])], base: any CheckpointSource, source: String) throws {
        var problems: [String] = []
        for (name, shape) in tensors {
            guard let b = base.tensor(named: name) else { problems.append("'\(name)' is not in the base"); continue }
            if b.shape != shape { problems.append("'\(name)' has shape \(shape), the base has \(b.shape)") }
        }
        guard problems.isEmpty else {
            let shown = problems.prefix(8).joined(separator: "; ")
            throw LocusError(file: source, "\(problems.count) tensor(s) do not match the base \(base.path): \(shown)\(problems.count > 8 ? "; …" : "")")
        }
    }

    /// Exports any tensor-holding Locus artifact to safetensors (see `locus convert --help`).
    public static func exportSafeTensors(from source: String, to target: String, blockBytes: Int = 64 << 20) throws {
        let artifact = try ArtifactFile.open(source)
        try writeAtomically(to: target) { temp in
            do {
                try export(artifact, to: temp, blockBytes: blockBytes)
            } catch let e as SafeTensorsError {
                throw LocusError(file: target, object: e.object.map { "tensor '\($0)'" }, e.message)
            }
        }
    }

    private static func export(_ artifact: ArtifactFile, to temp: String, blockBytes: Int) throws {
        var meta: [String: String] = ["locus.kind": artifact.header.kind.rawValue]
        if let b = artifact.header.baseFingerprint { meta["locus.base-fingerprint"] = b }
        switch artifact.header.kind {
        case .checkpoint:
            let r = try CheckpointReader(artifact)
            var w = try SafeTensorsWriter(path: temp, tensors: r.tensors.map { .init(name: $0.name, dtype: $0.dtype.safeTensors, shape: $0.shape) },
                                          metadata: try r.metadata())
            for t in r.tensors { try r.forEachBlock(t, blockBytes: blockBytes) { try w.write($0) } }
            try w.finish()
        case .scores:
            let r = try ScoresReader(artifact)
            meta["locus.estimator"] = r.info.estimator
            meta["locus.samples"] = String(r.info.samples)
            meta["locus.draws"] = String(r.info.draws)
            meta["locus.reduction"] = r.info.reduction.rawValue
            var w = try SafeTensorsWriter(path: temp, tensors: r.tensors.map { .init(name: $0.name, dtype: .F32, shape: $0.shape) }, metadata: meta)
            for t in r.tensors { try r.read(t).withUnsafeBytes { try w.write($0) } }
            try w.finish()
        case .mask:
            let r = try MaskReader(artifact)
            meta["locus.absent-tensors"] = r.absentTensors.rawValue
            var w = try SafeTensorsWriter(path: temp, tensors: r.tensors.map { .init(name: $0.name, dtype: .BOOL, shape: $0.shape) }, metadata: meta)
            for t in r.tensors { try w.write(try r.read(t).map { $0 ? UInt8(1) : 0 }) }
            try w.finish()
        case .taskVector:
            let r = try TaskVectorReader(artifact)
            meta["locus.scale"] = String(r.scale)
            var w = try SafeTensorsWriter(path: temp, tensors: r.tensors.map { .init(name: $0.name, dtype: $0.dtype.safeTensors, shape: $0.shape) }, metadata: meta)
            for t in r.tensors {
                let dense = try r.readDense(t)
                try w.write(dense.withUnsafeBufferPointer { HalfPrecision.encode($0, as: t.dtype) })
            }
            try w.finish()
        case .dataset:
            throw LocusError(file: artifact.path, "a dataset artifact has no tensors to export to safetensors")
        }
    }
}

extension Conversion {
    /// Copies every tensor of `source` into `sink` in row blocks (float tensors converted to
    /// `dtype` when given, with one rounding), then commits. Returns the output's fingerprint.
    @discardableResult
    public static func copy(_ source: any CheckpointSource, to sink: any CheckpointSink, dtype: LocusDType? = nil,
                            blockBytes: Int = 64 << 20) throws -> String {
        for t in source.tensors {
            let out = outputDType(t.dtype, dtype)
            try sink.beginTensor(name: t.name, dtype: out, shape: t.shape)
            if t.count == 0 { continue }
            try source.forEachBlock(t, blockBytes: blockBytes) { bytes in
                if out == t.dtype { return try sink.writeRows(bytes) }
                let converted = HalfPrecision.encode(HalfPrecision.decode64(bytes, dtype: t.dtype), as: out)
                try converted.withUnsafeBytes { try sink.writeRows($0) }
            }
        }
        return try sink.finish()
    }

    static func outputDType(_ d: LocusDType, _ wanted: LocusDType?) -> LocusDType {
        guard let wanted, d.isFloatingPoint else { return d }
        return wanted
    }

    /// The output plan for copying `source` (with `dtype` applied to float tensors).
    public static func plan(_ source: any CheckpointSource, dtype: LocusDType? = nil) -> [TensorPlan] {
        source.tensors.map { TensorPlan(name: $0.name, dtype: outputDType($0.dtype, dtype), shape: $0.shape) }
    }

    /// Files `--config-from` copies beside the weights: the model config and, if present,
    /// generation and tokenizer files.
    public static let configFiles = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                                     "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model",
                                     "added_tokens.json", "preprocessor_config.json"]

    /// Writes `source` as a Locus `.h5` or a Hugging Face folder.
    @discardableResult
    public static func write(_ source: any CheckpointSource, to target: String, architecture: String?, format: CheckpointOutputFormat, dtype: LocusDType? = nil,
                             shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes, configFrom: String? = nil,
                             provenance: Provenance, blockBytes: Int = 64 << 20) throws -> String {
        if let d = dtype, !d.isFloatingPoint { throw RequestError("dtype", "must be a floating-point type, not \(d.rawValue)") }
        var configs: [String] = []
        if let dir = configFrom {
            guard format == .hf else { throw RequestError("configFrom", "applies to folder outputs only, not \(dir)") }
            guard FileManager.default.fileExists(atPath: dir + "/config.json") else {
                throw LocusError(file: dir, "has no config.json to copy")
            }
            configs = configFiles.filter { FileManager.default.fileExists(atPath: dir + "/" + $0) }
        }
        let sink = try makeCheckpointSink(path: target, format: format, plan: plan(source, dtype: dtype), provenance: provenance,
                                          metadata: try source.metadata(), architecture: architecture, shardBytes: shardBytes)
        if let folder = sink as? HuggingFaceFolderWriter, let dir = configFrom {
            for f in configs { folder.addFile(from: dir + "/" + f, as: f) }
        }
        return try copy(source, to: sink, dtype: dtype, blockBytes: blockBytes)
    }
}
