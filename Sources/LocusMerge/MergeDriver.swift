import Foundation
import LocusFormat

extension Merger {
    public struct Report: Sendable {
        public var tensorsMerged = 0
        public var tensorsCopied = 0
        public var fingerprint = ""
    }

    /// Merges `taskVectors` into `base` and writes the result (and, for TALL, per-task masks and
    /// models into `tallDirectory`). Everything is checked before the first tensor is written.
    @discardableResult
    public static func merge(base basePath: String, taskVectors: [String], output: String, options o: MergeOptions,
                             tallDirectory: String? = nil, warn: (String) -> Void = { _ in }, provenance: Provenance = Provenance()) throws -> Report {
        let base = try CheckpointReader(path: basePath)
        let inputs = try open(base: base, taskVectors: taskVectors, force: o.force, warn: warn)
        if let w = o.weights, w.count != inputs.count {
            throw LocusError(file: output, "\(w.count) weights for \(inputs.count) task vectors")
        }
        guard o.lambda.isFinite else { throw LocusError(file: output, "λ must be finite") }
        if let d = o.dtype, !d.isFloatingPoint { throw LocusError(file: output, "--dtype must be a floating-point type, not \(d.rawValue)") }
        guard o.tiesScope != .row else { throw LocusError(file: output, "TIES trims globally or per tensor (--ties-scope global|tensor), not per row") }
        guard o.breadcrumbsScope != .global else { throw LocusError(file: output, "Breadcrumbs ranks per row or per tensor (--breadcrumbs-scope row|tensor), not globally") }
        guard o.dareThen == .taskArithmetic || o.dareThen == .ties else { throw LocusError(file: output, "--dare-then must be task-arithmetic or ties") }
        guard o.fisherFloor > 0 else { throw LocusError(file: output, "--fisher-floor must be > 0 (a zero floor can make Σ F = 0)") }
        guard o.tallLambda >= 0 else { throw LocusError(file: output, "--tall-lambda must be ≥ 0") }
        switch o.method {
        case .ties, .dare:
            guard o.tiesDensity > 0, o.tiesDensity <= 1 else { throw LocusError(file: output, "TIES density must be in (0, 1]") }
            guard o.dareDropRate >= 0, o.dareDropRate < 1 else { throw LocusError(file: output, "DARE drop rate must be in [0, 1)") }
        case .breadcrumbs:
            guard o.breadcrumbsBeta > 0, o.breadcrumbsGamma >= 0, o.breadcrumbsBeta + o.breadcrumbsGamma <= 1 else {
                throw LocusError(file: output, "breadcrumbs needs β > 0, γ ≥ 0 and β + γ ≤ 1")
            }
        case .consensus:
            guard o.consensusK >= 1 else { throw LocusError(file: output, "consensus k must be ≥ 1") }
        default: break
        }
        if o.method == .tall && tallDirectory == nil {
            throw LocusError(file: output, "tall writes per-task masks and models: give --tall-dir DIRECTORY")
        }
        // Fisher scores: one file per task vector, from the same base, covering tensors by name.
        var fisher: [ScoresReader] = []
        if o.method == .fisher {
            guard o.fisherScores.count == inputs.count else {
                throw LocusError(file: output, "fisher merging needs one scores file per task vector (\(o.fisherScores.count) for \(inputs.count))")
            }
            let fp = try base.fingerprint
            for p in o.fisherScores {
                let s = try ScoresReader(path: p)
                guard s.info.baseFingerprint == fp else {
                    throw LocusError(file: p, object: "/@base-fingerprint", "scores come from another model (\(s.info.baseFingerprint)), not \(basePath)")
                }
                for t in s.tensors {
                    guard let b = base.tensor(named: t.name), b.shape == t.shape else {
                        throw LocusError(file: p, object: t.objectPath, "does not match a tensor of \(basePath)")
                    }
                }
                fisher.append(s)
            }
        }
        let tiesThresholds = (o.method == .ties || (o.method == .dare && o.dareThen == .ties)) && o.tiesScope == .global
            ? try globalThresholds(base: base, inputs: inputs, options: o) : nil

        let dtypeFor: (CheckpointTensor) -> LocusDType = { t in t.dtype.isFloatingPoint ? (o.dtype ?? t.dtype) : t.dtype }
        let writer = try CheckpointWriter(path: output, provenance: provenance, metadata: try base.metadata(), architecture: try base.architecture())
        var tallWriters: [(MaskWriter, CheckpointWriter)] = []
        if o.method == .tall, let dir = tallDirectory {
            let fp = try base.fingerprint
            for (t, input) in inputs.enumerated() {
                let stem = "\(dir)/task\(t)-" + (input.path.split(separator: "/").last.map(String.init) ?? "tv").replacingOccurrences(of: ".h5", with: "")
                tallWriters.append((try MaskWriter(path: stem + "-mask.h5", baseFingerprint: fp, absentTensors: .frozen, provenance: provenance),
                                    try CheckpointWriter(path: stem + "-model.h5", provenance: provenance, metadata: try base.metadata(), architecture: try base.architecture())))
            }
        }
        var report = Report()
        for t in base.tensors {
            let touched = inputs.contains { $0.byName[t.name] != nil } || (o.method == .fisher && fisher.contains { $0.tensor(named: t.name) != nil })
            guard t.dtype.isFloatingPoint, touched else {
                let raw = try base.readRaw(t)
                try raw.withUnsafeBytes { try writer.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) }
                for (_, model) in tallWriters { try raw.withUnsafeBytes { try model.add(name: t.name, dtype: t.dtype, shape: t.shape, bytes: $0) } }
                report.tensorsCopied += 1
                continue
            }
            if o.method != .fisher && tallWriters.isEmpty {
                // The common path: θ0 and the output go through in row blocks next to one direction array.
                var masks: [[Bool]]? = nil
                let dir = try mergedDirection(t.name, count: t.count, rowLength: t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : t.count,
                                              inputs: inputs, options: o, tiesThresholds: tiesThresholds, tallMasks: &masks)
                try writeInBlocks(writer, base, t, direction: dir, lambda: o.lambda, dtype: dtypeFor(t), output: output)
                report.tensorsMerged += 1
                continue
            }
            let theta0 = try base.readFloat64(t)
            var merged: [Double]
            if o.method == .fisher {
                merged = try fisherMerge(t, theta0: theta0, inputs: inputs, scores: fisher, options: o)
            } else {
                var masks: [[Bool]]? = nil
                let dir = try mergedDirection(t.name, count: t.count, rowLength: t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : t.count,
                                              inputs: inputs, options: o, tiesThresholds: tiesThresholds, tallMasks: &masks)
                merged = theta0
                for i in 0..<t.count where dir[i] != 0 { merged[i] += o.lambda * Double(dir[i]) }
                if let masks, !tallWriters.isEmpty {
                    for (k, (mw, cw)) in tallWriters.enumerated() {
                        try mw.add(name: t.name, shape: t.shape, bits: masks[k])
                        var own = theta0
                        for i in 0..<t.count where masks[k][i] { own[i] += Double(dir[i]) }   // θ̂_t = θ0 + m_t ⊙ τ_MTL
                        try writeTensor(cw, t, own, dtype: dtypeFor(t), output: output)
                    }
                }
            }
            try writeTensor(writer, t, merged, dtype: dtypeFor(t), output: output)
            report.tensorsMerged += 1
        }
        for (mw, cw) in tallWriters { try mw.finish(); try cw.finish() }
        report.fingerprint = try writer.finish()
        return report
    }

    /// θ0 + λ·direction, read and written in blocks of rows (≈ 4 MB of float64 at a time).
    static func writeInBlocks(_ w: CheckpointWriter, _ base: CheckpointReader, _ t: CheckpointTensor, direction: [Float],
                              lambda: Double, dtype: LocusDType, output: String) throws {
        let rows = t.shape.first ?? 1, rowLength = t.shape.isEmpty ? 1 : t.count / max(rows, 1)
        guard !t.shape.isEmpty, rows > 0, rowLength > 0 else {
            var v = try base.readFloat64(t)
            for i in 0..<v.count where direction[i] != 0 { v[i] += lambda * Double(direction[i]) }
            return try writeTensor(w, t, v, dtype: dtype, output: output)
        }
        try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape)
        let perBlock = max(1, (1 << 19) / rowLength)
        var r = 0
        while r < rows {
            let k = min(perBlock, rows - r)
            var v = try base.readRowsFloat64(t, start: r, count: k)
            let offset = r * rowLength
            for j in 0..<v.count where direction[offset + j] != 0 { v[j] += lambda * Double(direction[offset + j]) }
            let bytes = HalfPrecision.encode(v, as: dtype)
            if let bad = TaskVectorWriter.decodeForCheck(bytes, dtype: dtype).firstIndex(where: { !$0.isFinite }) {
                throw LocusError(file: output, object: t.objectPath, "merged entry \(offset + bad) overflows \(dtype.rawValue)")
            }
            try bytes.withUnsafeBytes { try w.writeRows($0) }
            r += k
        }
    }

    static func writeTensor(_ w: CheckpointWriter, _ t: CheckpointTensor, _ values: [Double], dtype: LocusDType, output: String) throws {
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(bad) is not finite")
        }
        let bytes = HalfPrecision.encode(values, as: dtype)
        if let bad = TaskVectorWriter.decodeForCheck(bytes, dtype: dtype).firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(bad) overflows \(dtype.rawValue)")
        }
        try bytes.withUnsafeBytes { try w.add(name: t.name, dtype: dtype, shape: t.shape, bytes: $0) }
    }

    /// θ* = Σ_i λ_i F_i θ_i / Σ_i λ_i F_i with θ_i = θ0 + τ_i, F floored (Matena & Raffel); λ_i are the
    /// vector weights. A tensor a scores file does not cover gets F = 1 for that model (plain averaging).
    static func fisherMerge(_ t: CheckpointTensor, theta0: [Double], inputs: [Input], scores: [ScoresReader], options o: MergeOptions) throws -> [Double] {
        let w = o.weights ?? Array(repeating: 1, count: inputs.count)
        var num = [Double](repeating: 0, count: t.count), den = [Double](repeating: 0, count: t.count)
        for (k, input) in inputs.enumerated() {
            var theta = theta0
            let (idx, val) = try entries(input, t.name)
            for (i, v) in zip(idx, val) { theta[i] += Double(v) }
            var f: [Float]
            var norm = 1.0
            if let st = scores[k].tensor(named: t.name) {
                f = try scores[k].read(st)
                if o.fisherNormalize && scores[k].info.samples > 0 && scores[k].info.reduction == .sum { norm = 1 / Double(scores[k].info.samples) }
            } else {
                f = [Float](repeating: 1, count: t.count)   // not scored: plain averaging for this model
            }
            for i in 0..<t.count {
                let fi = max(Double(f[i]) * norm, o.fisherFloor) * w[k]
                num[i] += fi * theta[i]; den[i] += fi
            }
        }
        return zip(num, den).map { $1 != 0 ? $0 / $1 : 0 }
    }

    /// Global TIES: per vector, the |τ| threshold keeping ⌊density · N⌋ entries of the whole model
    /// (N = the base's floating-point entries), found with two streaming passes over the vector.
    static func globalThresholds(base: CheckpointReader, inputs: [Input], options o: MergeOptions) throws -> [Float] {
        let total = base.tensors.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.count }
        let keep = Int(o.tiesDensity * Double(total))
        let w = o.weights ?? Array(repeating: 1, count: inputs.count)
        return try inputs.enumerated().map { t, input in
            var failure: (any Error)?
            let thr = ExactTopK.threshold(passes: { body in
                for tensor in input.reader.tensors where failure == nil {
                    do {
                        var (idx, val) = try entries(input, tensor.name)
                        val = val.map { $0 * Float(w[t]) }
                        if o.method == .dare { (idx, val) = dareDrop(idx, val, vector: t, tensor: tensor.name, options: o) }
                        body(val.map(abs))
                    } catch { failure = error }
                }
            }, keep: keep)
            if let failure { throw failure }
            return thr
        }
    }
}

extension Merger {
    /// The merged direction of every touched tensor, in memory (for the α search, which evaluates
    /// whole models anyway). Not available for Fisher merging, which is not θ0 + α·direction.
    public static func directions(base: CheckpointReader, taskVectors: [String], options o: MergeOptions,
                                  warn: (String) -> Void = { _ in }) throws -> [String: [Float]] {
        guard o.method != .fisher else { throw LocusError(file: base.path, "α search does not apply to fisher merging (it has no α)") }
        let inputs = try open(base: base, taskVectors: taskVectors, force: o.force, warn: warn)
        let thresholds = (o.method == .ties || (o.method == .dare && o.dareThen == .ties)) && o.tiesScope == .global
            ? try globalThresholds(base: base, inputs: inputs, options: o) : nil
        var out: [String: [Float]] = [:]
        for t in base.tensors where t.dtype.isFloatingPoint && inputs.contains(where: { $0.byName[t.name] != nil }) {
            var masks: [[Bool]]? = nil
            out[t.name] = try mergedDirection(t.name, count: t.count, rowLength: t.shape.count > 1 ? t.shape.dropFirst().reduce(1, *) : t.count,
                                              inputs: inputs, options: o, tiesThresholds: thresholds, tallMasks: &masks)
        }
        return out
    }
}
