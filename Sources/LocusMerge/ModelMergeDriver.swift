import Foundation
import LocusFormat

extension Merger {
    /// Merges full models (no base, no task vectors) with a method whose inputs are models (linear,
    /// SLERP), streaming: each floating-point tensor goes through in blocks of whole rows of at
    /// most `blockEntries` entries (one row when a row is longer); per block, each model's rows and
    /// the result in float64 (8 B per entry and model, plus the output). A method that needs a pass
    /// over the whole tensor first (SLERP's norms) reads it block by block too. Tensors that are not
    /// floating point are copied from the first model. Everything is checked before the first
    /// tensor is written: every model must have the first model's tensors with the same shapes.
    @discardableResult
    public static func merge(models paths: [String], output: String, options o: MergeOptions, warn: (String) -> Void = { _ in },
                             provenance: Provenance = Provenance(),
                             outputFormat: CheckpointOutputFormat = .h5, shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes) throws -> Report {
        let kernel: any ModelKernel
        switch o.method.producer.kind {
        case .models(let k): kernel = k
        case .direction, .taskVectorBlocks:
            throw LocusError(file: output, "\(o.method.name) merges task vectors into a base: give BASE and task vectors")
        }
        guard !paths.isEmpty else { throw LocusError(file: output, "no models to merge") }
        if case .models(let n?) = o.method.inputs, paths.count != n {
            throw LocusError(file: output, "\(o.method.name) merges exactly \(n) models, got \(paths.count)")
        }
        let models = try paths.map { try openCheckpoint(path: $0) }
        try checkCommon(o, inputCount: paths.count, output: output)
        let first = models[0]
        var problems: [String] = []
        for (i, m) in models.enumerated().dropFirst() {
            for t in first.tensors {
                guard let u = m.tensor(named: t.name) else { problems.append("\(paths[i]): tensor '\(t.name)' is missing"); continue }
                if u.shape != t.shape { problems.append("\(paths[i]): '\(t.name)' has shape \(u.shape), \(paths[0]) has \(t.shape)") }
                if u.dtype.isFloatingPoint != t.dtype.isFloatingPoint || (!t.dtype.isFloatingPoint && u.dtype != t.dtype) {
                    problems.append("\(paths[i]): '\(t.name)' is \(u.dtype.rawValue), \(paths[0]) has \(t.dtype.rawValue)")
                }
            }
            for t in m.tensors where first.tensor(named: t.name) == nil { problems.append("\(paths[i]): tensor '\(t.name)' is not in \(paths[0])") }
        }
        problems.sort { ($0.hasSuffix("is missing") ? 1 : 0) < ($1.hasSuffix("is missing") ? 1 : 0) }   // stable: mismatches first
        guard problems.isEmpty else {
            throw LocusError(file: paths[0], "\(problems.count) problem(s) with the models: \(problems.prefix(8).joined(separator: "; "))\(problems.count > 8 ? "; …" : "")")
        }
        // Parameters that depend on the tensor (config filters and gradients), resolved and checked now.
        var o = o
        o.perTensorOptions = try o.perTensor(first.tensors.map(\.name), inputCount: paths.count, file: o.tensorSettings?.source ?? output, warn: warn)
        let (w, dtypeFor) = try outputSink(like: first, options: o, path: output, format: outputFormat, provenance: provenance,
                                        shardBytes: shardBytes)
        var report = Report()
        for t in first.tensors {
            guard t.dtype.isFloatingPoint, o.merges(t.name) else {
                try w.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
                try first.forEachBlock(t, blockBytes: blockBytes) { try w.writeRows($0) }
                report.tensorsCopied += 1
                continue
            }
            report.tensorsMerged += 1
            let ts = models.map { $0.tensor(named: t.name)! }
            let rows = t.shape.first ?? 1
            guard !t.shape.isEmpty, rows > 0, t.count > 0 else {
                // A scalar or empty tensor: one block.
                let whole = try zip(models, ts).map { try $0.readFloat64($1) }
                let combine = try kernel.combiner(for: t, options: o.options(for: t.name), blocks: { body in try body(whole) })
                try writeTensor(w, t, combine(whole), dtype: dtypeFor(t), output: output)
                continue
            }
            let rowLength = t.count / rows
            let perBlock = max(1, blockEntries / rowLength)
            func forEachBlock(_ body: (Int, Int, [[Double]]) throws -> Void) throws {
                for r in stride(from: 0, to: rows, by: perBlock) {
                    let count = min(perBlock, rows - r)
                    // The models' rows are read and decoded on the pool's threads, one model per part.
                    var blocks = [[Double]](repeating: [], count: models.count)
                    try blocks.withUnsafeMutableBufferPointer { out in
                        nonisolated(unsafe) let out = out
                        try Merger.onEveryInput(models.count) { i in out[i] = try models[i].readRowsFloat64(ts[i], start: r, count: count) }
                    }
                    try body(r, count, blocks)
                }
            }
            let combine = try kernel.combiner(for: t, options: o.options(for: t.name), blocks: { body in try forEachBlock { _, _, m in try body(m) } })
            let dtype = dtypeFor(t)
            try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape)
            try forEachBlock { r, _, m in try writeBlock(w, t, combine(m), offset: r * rowLength, dtype: dtype, output: output) }
        }
        report.fingerprint = try w.finish()
        return report
    }
}

extension Merger {
    /// The output of a merge laid out as `reference` (its tensors in order, metadata, architecture):
    /// floating-point tensors in the requested dtype (`o.dtype`) or their own, the rest unchanged.
    static func outputSink(like reference: any CheckpointSource, options o: MergeOptions, path: String, format: CheckpointOutputFormat,
                           provenance: Provenance, shardBytes: Int) throws -> (any CheckpointSink, (CheckpointTensor) -> LocusDType) {
        let dtypeFor: (CheckpointTensor) -> LocusDType = { t in t.dtype.isFloatingPoint ? (o.dtype ?? t.dtype) : t.dtype }
        let plan = reference.tensors.map { TensorPlan(name: $0.name, dtype: dtypeFor($0), shape: $0.shape) }
        let sink = try makeCheckpointSink(path: path, format: format, plan: plan, provenance: provenance,
                                          metadata: try reference.metadata(), architecture: try reference.architecture(), shardBytes: shardBytes)
        return (sink, dtypeFor)
    }
}
