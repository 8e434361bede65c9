import LocusFormat

/// τ = θ_finetuned − θ_base and its inverse, tensor by tensor from files.
public enum TaskArithmetic {
    /// How `diff` sparsifies τ (besides dropping exact zeros).
    public enum Sparsify: Sendable {
        case none
        /// Keep the ⌊density · n⌋ entries of largest |τ| over all tensors (ties by position).
        case density(Double)
        /// Keep entries with |τ| ≥ threshold.
        case threshold(Double)
    }

    public struct Summary: Sendable {
        public var tensors: Int
        public var count: Int
        public var nnz: Int
    }

    /// Checks that two checkpoints have the same tensors (names, shapes, dtypes); lists every mismatch.
    public static func checkSameLayout(_ a: any CheckpointSource, _ b: any CheckpointSource) throws {
        var problems: [String] = []
        for t in b.tensors {
            guard let u = a.tensor(named: t.name) else { problems.append("'\(t.name)' is not in \(a.path)"); continue }
            if u.shape != t.shape { problems.append("'\(t.name)' has shape \(t.shape), \(a.path) has \(u.shape)") }
            if u.dtype != t.dtype { problems.append("'\(t.name)' is \(t.dtype.rawValue), \(a.path) has \(u.dtype.rawValue)") }
        }
        for t in a.tensors where b.tensor(named: t.name) == nil { problems.append("'\(t.name)' is missing from \(b.path)") }
        guard problems.isEmpty else {
            throw LocusError(file: b.path, "\(problems.count) tensor(s) do not match \(a.path): \(problems.prefix(8).joined(separator: "; "))\(problems.count > 8 ? "; …" : "")")
        }
    }

    /// The exact difference per tensor, in float64 (exact for float32, float16 and bfloat16 inputs).
    static func difference(_ base: any CheckpointSource, _ ft: any CheckpointSource, _ t: CheckpointTensor) throws -> [Double] {
        let b = try readDouble(base, base.tensor(named: t.name)!), f = try readDouble(ft, t)
        return zip(f, b).map { $0 - $1 }
    }

    static func readDouble(_ r: any CheckpointSource, _ t: CheckpointTensor) throws -> [Double] { try r.readFloat64(t) }

    /// Writes the task vector of `finetuned` relative to `base`. Values are stored as float32 when
    /// θ_base + τ reproduces θ_ft exactly in float32 for every entry of the tensor (the usual case),
    /// else as float64, so `apply` at α = 1 gives back the fine-tuned weights bit for bit.
    @discardableResult
    public static func diff(base basePath: String, finetuned ftPath: String, output: String, sparsify: Sparsify = .none,
                            attributes: [String: String] = [:], numbers: [String: Double] = [:],
                            provenance: Provenance = Provenance()) throws -> Summary {
        let base = try openCheckpoint(path: basePath), ft = try openCheckpoint(path: ftPath)
        try checkSameLayout(base, ft)
        if case .threshold(let th) = sparsify, !(th >= 0) { throw LocusError(file: output, "--threshold must be ≥ 0") }
        if case .density(let d) = sparsify, !(d > 0 && d <= 1) { throw LocusError(file: output, "--density must be in (0, 1], got \(d)") }
        var floats: [CheckpointTensor] = []
        for t in ft.tensors {
            guard t.dtype.isFloatingPoint else {
                if try base.readRaw(base.tensor(named: t.name)!) != ft.readRaw(t) {
                    throw LocusError(file: ftPath, object: t.objectPath, "\(t.dtype.rawValue) tensor differs from the base; task vectors cover floating-point tensors only")
                }
                continue
            }
            floats.append(t)
        }
        // Only the global top-k of --density needs every difference at once; otherwise each tensor's
        // difference is made, written and dropped in turn, so memory follows the largest tensor.
        var globalKeep: [[Bool]]? = nil
        if case .density(let d) = sparsify {
            let taus = try floats.map { try difference(base, ft, $0) }
            globalKeep = topMagnitude(taus, count: Int(d * Double(taus.reduce(0) { $0 + $1.count })))
        }
        var attrs = attributes
        attrs["finetuned-fingerprint"] = try ft.fingerprint
        let w = try TaskVectorWriter(path: output, baseFingerprint: try base.fingerprint, attributes: attrs, numbers: numbers, provenance: provenance)
        var summary = Summary(tensors: 0, count: 0, nnz: 0)
        for (k, t) in floats.enumerated() {
            let tau = try difference(base, ft, t)
            var keep: [Bool]? = globalKeep?[k]
            if case .threshold(let th) = sparsify { keep = tau.map { abs($0) >= th && $0 != 0 } }
            var idx: [Int] = [], vals: [Double] = []
            // A zero difference can still be a change of sign bit (−0.0 → +0.0); keep it as an explicit
            // zero (spec §5 allows them) so apply reproduces the bits.
            let b32 = try base.readFloat32(base.tensor(named: t.name)!), f32 = try ft.readFloat32(t)
            for (i, v) in tau.enumerated() where (v != 0 || (keep == nil && b32[i].bitPattern != f32[i].bitPattern)) && (keep?[i] ?? true) {
                idx.append(i); vals.append(v)
            }
            summary.count += t.count
            if idx.isEmpty { continue }   // an unchanged tensor is simply absent (= zero)
            let dtype = t.dtype == .float64 ? .float64 : try valueType(b32, f32, ft, t, idx, vals)
            try w.add(name: t.name, shape: t.shape, indices: idx, values64: vals, dtype: dtype)
            summary.tensors += 1; summary.nnz += idx.count
        }
        try w.finish()
        return summary
    }

    /// float32 when it reproduces θ_ft from θ_base exactly (in the base's own precision), else float64.
    static func valueType(_ b: [Float], _ f: [Float], _ ft: any CheckpointSource, _ t: CheckpointTensor, _ idx: [Int], _ vals: [Double]) throws -> LocusDType {
        var needs64 = false
        for (i, v) in zip(idx, vals) where Float(b[i]) + Float(v) != f[i] {
            needs64 = true
            // apply computes θ_base + τ in float64 and rounds; that must give θ_ft back exactly.
            if Float(Double(b[i]) + v) != f[i] {
                throw LocusError(file: ft.path, object: t.objectPath, "entry \(i) changed from \(b[i]) to \(f[i]): the difference is not representable exactly even in float64 (exponent gap too wide)")
            }
        }
        return needs64 ? .float64 : .float32
    }

    /// Marks the `count` entries of largest |value| (ties: earlier position first).
    static func topMagnitude(_ tensors: [[Double]], count k: Int) -> [[Bool]] {
        var mags = tensors.flatMap { $0.map { -abs($0) } }   // smaller is better
        var out = tensors.map { [Bool](repeating: false, count: $0.count) }
        guard k > 0, !mags.isEmpty else { return out }
        mags.sort()
        let threshold = mags[min(k, mags.count) - 1]
        var ties = min(k, mags.count) - mags.prefix { $0 < threshold }.count
        for (t, values) in tensors.enumerated() {
            for (i, v) in values.enumerated() {
                let m = -abs(v)
                if m < threshold { out[t][i] = true } else if m == threshold && ties > 0 { out[t][i] = true; ties -= 1 }
            }
        }
        return out
    }

    /// θ = θ_base + α · scale · τ, written in each tensor's own dtype (RNE for 16-bit types; float32
    /// math in float64 so α = 1 reproduces the fine-tuned weights exactly). Refuses a task vector made
    /// from another base unless `force`.
    public static func apply(base basePath: String, taskVector tvPath: String, alpha: Double = 1, output: String,
                             force: Bool = false, warn: (String) -> Void = { _ in }, provenance: Provenance = Provenance(),
                             outputFormat: CheckpointOutputFormat = .h5, shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes) throws {
        guard alpha.isFinite else { throw LocusError(file: output, "--alpha must be finite") }
        let base = try openCheckpoint(path: basePath)
        let tv = try TaskVectorReader(path: tvPath)
        let fp = try base.fingerprint
        if tv.baseFingerprint != fp {
            let message = "was made from a different base (\(tv.baseFingerprint)) than \(basePath) (\(fp))"
            guard force else { throw LocusError(file: tvPath, object: "/@base-fingerprint", message + "; use --force to apply it anyway") }
            warn("\(tvPath): \(message); applying anyway (--force)")
        }
        try Convert.checkAgainstBase(tv.tensors.map { ($0.name, $0.shape) }, base: base, source: tvPath)
        for t in tv.tensors {
            let b = base.tensor(named: t.name)!
            guard b.dtype.isFloatingPoint else { throw LocusError(file: tvPath, object: t.objectPath, "targets \(b.dtype.rawValue) tensor '\(t.name)' of the base") }
        }
        let byName = Dictionary(uniqueKeysWithValues: tv.tensors.map { ($0.name, $0) })
        let factor = alpha * tv.scale
        let plan = base.tensors.map { TensorPlan(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let w = try makeCheckpointSink(path: output, format: outputFormat, plan: plan, provenance: provenance,
                                       metadata: try base.metadata(), architecture: try base.architecture(), shardBytes: shardBytes)
        for t in base.tensors {
            guard let tt = byName[t.name], factor != 0 else {   // untouched tensors are copied bit for bit
                let raw = try base.readRaw(t)
                try raw.withUnsafeBytes { try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) }
                continue
            }
            let (idx, vals) = try tv.readSparse64(tt)
            var values = try base.readFloat64(t)
            for (i, v) in zip(idx, vals) { values[i] += factor * v }
            let out: [UInt8]
            switch t.dtype {
            case .float64: out = values.withUnsafeBytes { Array($0) }
            default: out = HalfPrecision.encode(values, as: t.dtype)   // one rounding from float64
            }
            // Checked in the output precision: a finite float64 can still overflow float32 / 16-bit types.
            let stored = t.dtype == .float64 ? values : TaskVectorWriter.decodeForCheck(out, dtype: t.dtype)
            if let bad = stored.firstIndex(where: { !$0.isFinite }) {
                throw LocusError(file: output, object: t.objectPath, "entry \(bad) is not finite in \(t.dtype.rawValue) after applying the task vector")
            }
            try out.withUnsafeBytes { try w.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) }
        }
        try w.finish()
    }
}
