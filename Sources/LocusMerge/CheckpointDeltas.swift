import Foundation
import LocusFormat

/// The task vectors τ_i = θ_i − θ_base of fine-tuned checkpoints, computed while reading, block by
/// block: what a direction kernel that reads dense τ (model_stock, sce, nuslerp) merges when a
/// mergekit config lists fine-tuned models instead of task vectors. Each entry is the value
/// `locus diff` stores and a task vector stream gives back, Float(θ_i − θ_base) with the
/// difference taken in float64, so the merge equals merging the inputs' exact task vectors —
/// without writing them (docs/merging.md §Configs).
final class CheckpointDeltas: @unchecked Sendable {
    let base: any CheckpointSource
    let models: [any CheckpointSource]

    init(base: any CheckpointSource, models: [any CheckpointSource]) {
        self.base = base
        self.models = models
    }

    /// Entries [start, end) of tensor `name` of `source` in float64, into `out[0..<(end − start)]`;
    /// `raw` holds the covering rows.
    static func read(_ source: any CheckpointSource, _ t: CheckpointTensor, _ start: Int, _ end: Int,
                     into out: UnsafeMutableBufferPointer<Double>, raw: RawScratch) throws {
        let n = end - start
        guard n > 0 else { return }
        guard let rows = t.shape.first, rows > 0 else {
            let all = try source.readFloat64(t)
            for j in 0..<n { out[j] = all[start + j] }
            return
        }
        let rowLength = t.count / rows
        let first = start / rowLength, last = (end - 1) / rowLength
        let skip = start - first * rowLength
        let bytes = (last - first + 1) * t.rowByteCount
        let r = UnsafeMutableRawBufferPointer(rebasing: raw.reserve(bytes)[0..<bytes])
        try source.readRows(t, start: first, count: last - first + 1, into: r)
        if t.dtype == .float32 {
            let f = r.baseAddress!.assumingMemoryBound(to: UInt32.self) + skip
            for j in 0..<n { out[j] = Double(Float(bitPattern: UInt32(littleEndian: f[j]))) }
        } else {
            let values = HalfPrecision.decode64(UnsafeRawBufferPointer(r), dtype: t.dtype)
            for j in 0..<n { out[j] = values[skip + j] }
        }
    }

    /// A growing byte buffer, owned by one thread at a time.
    final class RawScratch: @unchecked Sendable {
        private var buffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        func reserve(_ bytes: Int) -> UnsafeMutableRawBufferPointer {
            if buffer.count < bytes {
                buffer.deallocate()
                buffer = .allocate(byteCount: bytes, alignment: 16)
            }
            return buffer
        }
        deinit { buffer.deallocate() }
    }
}

extension Merger {
    /// Σ_j x[j]·y[j] over j < n for each y, each summed in order from 0 (the bits of one plain loop
    /// per y); four y at a time, so that the four sums are independent chains.
    static func dotProducts(_ x: UnsafePointer<Double>, _ ys: [UnsafePointer<Double>], _ n: Int) -> [Double] {
        var out = [Double](repeating: 0, count: ys.count)
        var b = 0
        while b + 4 <= ys.count {
            let y0 = ys[b], y1 = ys[b + 1], y2 = ys[b + 2], y3 = ys[b + 3]
            var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
            for j in 0..<n {
                let v = x[j]
                s0 += v * y0[j]; s1 += v * y1[j]; s2 += v * y2[j]; s3 += v * y3[j]
            }
            out[b] = s0; out[b + 1] = s1; out[b + 2] = s2; out[b + 3] = s3
            b += 4
        }
        while b < ys.count {
            let y = ys[b]
            var s = 0.0
            for j in 0..<n { s += x[j] * y[j] }
            out[b] = s
            b += 1
        }
        return out
    }

    /// A direction kernel that reads its vectors through `DenseTaskVectorBlocks`, so it can merge
    /// fine-tuned checkpoints' task vectors computed on the fly.
    static func readsDenseVectors(_ kernel: any DirectionKernel) -> Bool {
        kernel is ModelStockKernel || kernel is SceKernel || kernel is NuSlerpKernel
    }

    /// A mergekit config of model_stock, sce or nuslerp with a base that lists fine-tuned
    /// checkpoints: τ_i = θ_i − θ_base is computed block by block while the checkpoints are read
    /// (no task vector is written), and the method's kernel merges them as it merges task vectors.
    /// Checks as `locus diff` does (same tensors, shapes and dtypes as the base; tensors that are not
    /// floating point equal the base's) before any output exists.
    static func mergeCheckpointDeltas(base basePath: String, models paths: [String], kernel: any DirectionKernel, output: String,
                                      options o: MergeOptions, warn: (String) -> Void, provenance: Provenance,
                                      outputFormat: CheckpointOutputFormat, shardBytes: Int) throws -> Report {
        let base = try openCheckpoint(path: basePath)
        guard !paths.isEmpty else { throw LocusError(file: basePath, "no models to merge") }
        var models: [any CheckpointSource] = []
        for p in paths {
            let m = try openCheckpoint(path: p)
            try TaskArithmetic.checkSameLayout(base, m)
            for t in m.tensors where !t.dtype.isFloatingPoint { try TaskArithmetic.checkEqual(base, base.tensor(named: t.name)!, m, t) }
            models.append(m)
        }
        try checkCommon(o, inputCount: models.count, output: output)
        var o = o
        o.perTensorOptions = try o.perTensor(base.tensors.map(\.name), inputCount: models.count, file: o.tensorSettings?.source ?? output, warn: warn)
        let (writer, dtypeFor) = try outputSink(like: base, options: o, path: output, format: outputFormat, provenance: provenance,
                                        shardBytes: shardBytes)
        var report = Report()
        let context = DirectionContext(deltas: CheckpointDeltas(base: base, models: models))
        try mergeStreaming(writer, base, inputs: [], kernel: kernel, options: o, context: context, dtypeFor: dtypeFor, output: output,
                           report: &report)
        report.fingerprint = try writer.finish()
        return report
    }
}
