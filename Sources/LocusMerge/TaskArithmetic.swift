import LocusFormat

/// τ = θ_finetuned − θ_base and its inverse, tensor by tensor from files.
public enum TaskArithmetic {
    /// How `diff` sparsifies τ (besides dropping exact zeros).
    public enum Sparsify: Sendable, Equatable {
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

    /// Entries per block when streaming a tensor: whole rows, about 1 Mi entries (8 MiB as float64).
    public static let blockElements = 1 << 20

    /// Calls `body` with consecutive blocks of whole rows covering `t` (rows and flat indices);
    /// a scalar is one block.
    static func forEachRowBlock(_ t: CheckpointTensor, elements: Int = blockElements, _ body: (Range<Int>, Range<Int>) throws -> Void) throws {
        guard let rows = t.shape.first else { return try body(0..<1, 0..<t.count) }
        guard rows > 0, t.count > 0 else { return }
        let rowLength = t.count / rows
        let step = max(1, elements / rowLength)
        var r = 0
        while r < rows {
            let n = min(step, rows - r)
            try body(r..<(r + n), (r * rowLength)..<((r + n) * rowLength))
            r += n
        }
    }

    /// Raw little-endian bytes of rows `rows` of `t`, in a buffer reused from block to block.
    static func readRows(_ s: any CheckpointSource, _ t: CheckpointTensor, _ rows: Range<Int>, _ buffer: inout [UInt8]) throws {
        let bytes = t.shape.isEmpty ? t.byteCount : rows.count * t.rowByteCount
        if buffer.count != bytes { buffer = [UInt8](repeating: 0, count: bytes) }
        try buffer.withUnsafeMutableBytes { try s.readRows(t, start: rows.lowerBound, count: rows.count, into: $0) }
    }

    /// Streams the same rows of a tensor from two checkpoints (same dtype) and calls `body` with the
    /// elements whose bits differ, as (flat index, base value, fine-tuned value) in float64 (exact
    /// for every float dtype); `block` is told each block's range first. Elements with equal bits
    /// have τ = 0 with no sign change: no selection keeps them, so they are never decoded.
    static func forEachChange(_ base: any CheckpointSource, _ tb: CheckpointTensor, _ ft: any CheckpointSource, _ t: CheckpointTensor,
                              elements: Int, block: (Range<Int>) throws -> Void = { _ in },
                              _ body: (_ i: Int, _ b: Double, _ f: Double) throws -> Void) throws {
        var rawB: [UInt8] = [], rawF: [UInt8] = []
        let dtype = t.dtype
        try forEachRowBlock(t, elements: elements) { rows, flat in
            try readRows(base, tb, rows, &rawB)
            try readRows(ft, t, rows, &rawF)
            try block(flat)
            try rawB.withUnsafeBytes { b in
                try rawF.withUnsafeBytes { f in
                    try HalfPrecision.forEachDifferingElement(b, f, elementBytes: dtype.byteSize) { i in
                        try body(flat.lowerBound + i, HalfPrecision.element(b, i, dtype: dtype), HalfPrecision.element(f, i, dtype: dtype))
                    }
                }
            }
        }
    }

    /// Which differences `diff` stores, entry by entry in tensor order then flat-index order.
    struct Selection {
        var sparsify: Sparsify
        /// `.density`: the k-th largest |τ| as a bit pattern, and how many entries equal to it are
        /// still to be kept (ties go to the earlier position).
        var top = TopKSelection()

        /// Whether τ = f − b is stored. An unchanged value can still be a change of sign bit
        /// (−0.0 → +0.0): exact diffs keep it as an explicit zero (spec §5 allows them) so apply
        /// reproduces the bits.
        @inline(__always) mutating func keeps(_ v: Double, _ b: Double, _ f: Double) -> Bool {
            switch sparsify {
            case .none: return v != 0 || Float(b).bitPattern != Float(f).bitPattern
            case .threshold(let th): return v != 0 && abs(v) >= th
            case .density: return top.keeps(v.magnitude.bitPattern) && v != 0
            }
        }
    }

    /// Writes the task vector of `finetuned` relative to `base`. Values are stored as float32 when
    /// θ_base + τ reproduces θ_ft exactly in float32 for every entry of the tensor (the usual case),
    /// else as float64, so `apply` at α = 1 gives back the fine-tuned weights bit for bit.
    ///
    /// Streams blocks of rows: each tensor is read twice (count and value type, then write), and
    /// `--density`'s global top-k is found by a radix select over |τ| (`densityThreshold`), so
    /// memory does not depend on the model's or the largest tensor's size.
    @discardableResult
    public static func diff(base basePath: String, finetuned ftPath: String, output: String, sparsify: Sparsify = .none,
                            attributes: [String: String] = [:], numbers: [String: Double] = [:],
                            provenance: Provenance = Provenance(), blockElements elements: Int = blockElements,
                            collectLimit: Int = 1 << 22) throws -> Summary {
        let base = try openCheckpoint(path: basePath), ft = try openCheckpoint(path: ftPath)
        try checkSameLayout(base, ft)
        if case .threshold(let th) = sparsify, !(th >= 0) { throw RequestError("threshold", "must be ≥ 0") }
        if case .density(let d) = sparsify, !(d > 0 && d <= 1) { throw RequestError("density", "must be in (0, 1], got \(d)") }
        var floats: [(base: CheckpointTensor, ft: CheckpointTensor)] = []
        for t in ft.tensors {
            let tb = base.tensor(named: t.name)!
            guard t.dtype.isFloatingPoint else { try checkEqual(base, tb, ft, t); continue }
            floats.append((tb, t))
        }
        var selection = Selection(sparsify: sparsify)
        if case .density(let d) = sparsify {
            let total = floats.reduce(0) { $0 + $1.ft.count }
            (selection.top.thresholdKey, selection.top.ties) = try densityThreshold(base, ft, floats, count: Int(d * Double(total)),
                                                                            elements: elements, collectLimit: collectLimit)
        }
        var attrs = attributes
        attrs["finetuned-fingerprint"] = try ft.fingerprint
        let w = try TaskVectorWriter(path: output, baseFingerprint: try base.fingerprint, attributes: attrs, numbers: numbers, provenance: provenance)
        var summary = Summary(tensors: 0, count: 0, nnz: 0)
        for (tb, t) in floats {
            summary.count += t.count
            // Pass 1: how many entries, and whether float32 values reproduce θ_ft.
            let start = selection
            var stored = 0, needs64 = false
            try forEachChange(base, tb, ft, t, elements: elements) { i, b, f in
                let v = f - b
                guard selection.keeps(v, b, f) else { return }
                stored += 1
                if t.dtype != .float64 && Float(b) + Float(v) != Float(f) {
                    needs64 = true
                    // apply computes θ_base + τ in float64 and rounds; that must give θ_ft back exactly.
                    if Float(b + v) != Float(f) {
                        throw LocusError(file: ft.path, object: t.objectPath, "entry \(i) changed from \(Float(b)) to \(Float(f)): the difference is not representable exactly even in float64 (exponent gap too wide)")
                    }
                }
            }
            if stored == 0 { continue }   // an unchanged tensor is simply absent (= zero)
            // Pass 2: the same selection again, written block by block.
            selection = start
            let tw = try w.beginTensor(name: t.name, shape: t.shape, dtype: t.dtype == .float64 || needs64 ? .float64 : .float32, stored: stored)
            var idx: [Int] = [], vals: [Double] = []
            var range: Range<Int>? = nil
            func flush() throws {
                guard let r = range else { return }
                try idx.withUnsafeBufferPointer { i in try vals.withUnsafeBufferPointer { try tw.append(upTo: r.upperBound, indices: i, values: $0) } }
                idx.removeAll(keepingCapacity: true); vals.removeAll(keepingCapacity: true)
            }
            try forEachChange(base, tb, ft, t, elements: elements, block: { try flush(); range = $0 }) { i, b, f in
                let v = f - b
                if selection.keeps(v, b, f) { idx.append(i); vals.append(v) }
            }
            try flush()
            try tw.finish()
            summary.tensors += 1; summary.nnz += stored
        }
        try w.finish()
        return summary
    }

    /// Integer and bool tensors carry no task vector: they must be equal, compared block by block.
    static func checkEqual(_ base: any CheckpointSource, _ tb: CheckpointTensor, _ ft: any CheckpointSource, _ t: CheckpointTensor) throws {
        var rawB: [UInt8] = [], rawF: [UInt8] = []
        try forEachRowBlock(t) { rows, _ in
            try readRows(base, tb, rows, &rawB)
            try readRows(ft, t, rows, &rawF)
            if rawB != rawF {
                throw LocusError(file: ft.path, object: t.objectPath, "\(t.dtype.rawValue) tensor differs from the base; task vectors cover floating-point tensors only")
            }
        }
    }

    /// The k-th largest |τ| over all tensors (as the bit pattern of a non-negative double, whose
    /// order is the numbers' order) and how many entries equal to it the top k take, by
    /// `RadixSelect` over the changed entries: memory is a histogram, never the model.
    static func densityThreshold(_ base: any CheckpointSource, _ ft: any CheckpointSource,
                                 _ floats: [(base: CheckpointTensor, ft: CheckpointTensor)], count k: Int,
                                 elements: Int, collectLimit: Int) throws -> (key: UInt64, ties: Int) {
        guard k > 0 else { return (.max, 0) }
        /// Every entry's key: `body` for the changed ones, `zeros(n)` for the n unchanged (key 0) of a block.
        func forEachKey(_ body: (UInt64) -> Void, zeros: (Int) -> Void) throws {
            for (tb, t) in floats {
                var changed = 0, range = 0..<0
                try forEachChange(base, tb, ft, t, elements: elements, block: { zeros(range.count - changed); range = $0; changed = 0 }) { _, b, f in
                    body((f - b).magnitude.bitPattern); changed += 1
                }
                zeros(range.count - changed)
            }
        }
        return try RadixSelect.kthLargest(k, of: floats.reduce(0) { $0 + $1.ft.count }, collectLimit: collectLimit, forEachKey: forEachKey)
    }

    /// θ = θ_base + α · scale · τ, written in each tensor's own dtype (RNE for 16-bit types; float32
    /// math in float64 so α = 1 reproduces the fine-tuned weights exactly). Refuses a task vector made
    /// from another base unless `force`.
    public static func apply(base basePath: String, taskVector tvPath: String, alpha: Double = 1, output: String,
                             force: Bool = false, warn: (String) -> Void = { _ in }, provenance: Provenance = Provenance(),
                             outputFormat: CheckpointOutputFormat = .h5, shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes,
                             blockElements elements: Int = blockElements) throws {
        guard alpha.isFinite else { throw RequestError("alpha", "must be finite") }
        let base = try openCheckpoint(path: basePath)
        let tv = try TaskVectorReader(path: tvPath)
        func checkBase(_ fp: String) throws {
            guard tv.baseFingerprint != fp else { return }
            let message = "was made from a different base (\(tv.baseFingerprint)) than \(basePath) (\(fp))"
            guard force else { throw RemediableError(LocusError(file: tvPath, object: "/@base-fingerprint", message), .use(setting: "force", purpose: "apply it anyway")) }
            warn("\(tvPath): \(message); applying anyway (forced)")
        }
        // A base whose fingerprint is not stored (safetensors, a folder, a PyTorch file) is hashed
        // on the way through the one pass below, and checked before the output is published.
        var hasher: FingerprintHasher? = nil
        if base.fingerprintIsKnown { try checkBase(try base.fingerprint) } else { hasher = FingerprintHasher() }
        try Conversion.checkAgainstBase(tv.tensors.map { ($0.name, $0.shape) }, base: base, source: tvPath)
        for t in tv.tensors {
            let b = base.tensor(named: t.name)!
            guard b.dtype.isFloatingPoint else { throw LocusError(file: tvPath, object: t.objectPath, "targets \(b.dtype.rawValue) tensor '\(t.name)' of the base") }
        }
        let byName = Dictionary(uniqueKeysWithValues: tv.tensors.map { ($0.name, $0) })
        let factor = alpha * tv.scale
        let plan = base.tensors.map { TensorPlan(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let w = try makeCheckpointSink(path: output, format: outputFormat, plan: plan, provenance: provenance,
                                       metadata: try base.metadata(), architecture: try base.architecture(), shardBytes: shardBytes)
        // Block by block: memory is one block of rows and the task vector's entries in it, not a tensor.
        let buffers = EntryStreamBuffers()
        var raw: [UInt8] = []
        for t in base.tensors {
            hasher?.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
            try w.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
            if t.count == 0 { continue }
            guard let tt = byName[t.name], factor != 0 else {   // untouched tensors are copied bit for bit
                try base.forEachBlock(t, blockBytes: elements * 8) { hasher?.update(bytes: $0); try w.writeRows($0) }
                continue
            }
            let stream = try TaskVectorEntryStream(tv, tt, scale: 1, buffers: buffers)
            let entries = EntryBlock(capacity: min(t.count, max(elements, t.count / max(t.shape.first ?? 1, 1))), exact: true)
            try forEachRowBlock(t, elements: elements) { rows, flat in
                try readRows(base, t, rows, &raw)
                raw.withUnsafeBytes { hasher?.update(bytes: $0) }
                entries.count = 0
                try stream.next(upTo: flat.upperBound, into: entries)
                let v64 = entries.values64!
                try raw.withUnsafeMutableBytes { r in
                    // θ + α·τ in float64, one rounding to the dtype, only where τ has entries; every
                    // other element keeps its bits. Checked in the output precision: a finite float64
                    // can still overflow float32 / 16-bit types, and a non-finite base value stays so.
                    var bad = HalfPrecision.firstNonFinite(UnsafeRawBufferPointer(r), dtype: t.dtype) ?? Int.max
                    for k in 0..<entries.count {
                        let i = Int(entries.offsets[k])
                        let stored = HalfPrecision.setElement(r, i, HalfPrecision.element(UnsafeRawBufferPointer(r), i, dtype: t.dtype) + factor * v64[k], dtype: t.dtype)
                        if !stored.isFinite { bad = min(bad, i); break }
                    }
                    if bad != Int.max {
                        throw LocusError(file: output, object: t.objectPath, "entry \(flat.lowerBound + bad) is not finite in \(t.dtype.rawValue) after applying the task vector")
                    }
                }
                try raw.withUnsafeBytes { try w.writeRows($0) }
            }
        }
        if var h = hasher { try checkBase(h.finalize()) }
        try w.finish()
    }
}
