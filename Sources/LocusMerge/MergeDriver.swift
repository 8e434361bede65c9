import Foundation
import LocusFormat

extension Merger {
    public struct Report: Sendable {
        public var tensorsMerged = 0
        public var tensorsCopied = 0
        public var fingerprint = ""
    }

    /// Merges `taskVectors` into `base` and writes the result (and, for TALL, per-task masks and
    /// models into `options.tallDirectory`), for a method whose inputs are task vectors.
    /// Everything is checked before the first tensor is written.
    @discardableResult
    public static func merge(base basePath: String, taskVectors: [String], output: String, options o: MergeOptions,
                             warn: (String) -> Void = { _ in }, provenance: Provenance = Provenance(),
                             outputFormat: CheckpointOutputFormat = .h5, shardBytes: Int = HuggingFaceFolderWriter.defaultShardBytes) throws -> Report {
        // Every input is opened more than once (is it a task vector? then to read it): its
        // structure is checked the first time only.
        try ArtifactFile.rememberingCheckedFiles {
            try mergeInputs(base: basePath, taskVectors: taskVectors, output: output, options: o, warn: warn, provenance: provenance,
                            outputFormat: outputFormat, shardBytes: shardBytes)
        }
    }

    private static func mergeInputs(base basePath: String, taskVectors: [String], output: String, options o: MergeOptions,
                                    warn: (String) -> Void, provenance: Provenance, outputFormat: CheckpointOutputFormat,
                                    shardBytes: Int) throws -> Report {
        if o.semantics == .mergekit && o.method is any GeneralizedTaskArithmeticMethod {
            return try mergeMergekit(base: basePath, inputs: taskVectors, output: output, options: o, warn: warn, provenance: provenance,
                                     outputFormat: outputFormat, shardBytes: shardBytes)
        }
        if o.semantics == .mergekit, case .direction(let kernel) = o.method.producer.kind, readsDenseVectors(kernel),
           try taskVectors.allSatisfy({ try !isTaskVector($0) }) {
            // A mergekit config of a method with its own kernel (model_stock, nuslerp, sce) lists
            // fine-tuned checkpoints: their task vectors are computed while the checkpoints are read.
            return try mergeCheckpointDeltas(base: basePath, models: taskVectors, kernel: kernel, output: output, options: o, warn: warn,
                                             provenance: provenance, outputFormat: outputFormat, shardBytes: shardBytes)
        }
        if o.semantics == .mergekit, try taskVectors.contains(where: { try !isTaskVector($0) }) {
            // The same with task vectors among the inputs: the checkpoints' exact task vectors, made
            // by `diff` (streamed) beside the output, are what the kernel reads; they are removed afterwards.
            return try withTaskVectors(base: basePath, inputs: taskVectors, near: output) { vectors in
                try merge(base: basePath, taskVectors: vectors, output: output, options: o, warn: warn, provenance: provenance,
                          outputFormat: outputFormat, shardBytes: shardBytes)
            }
        }
        let base = try openCheckpoint(path: basePath)
        if let fine = try taskVectors.first(where: { try !isTaskVector($0) }) {
            throw LocusError(file: fine, "is a checkpoint, not a task vector: \(o.method.name) (Locus semantics) merges task vectors "
                             + "(make them with locus diff), or give a mergekit config")
        }
        let inputs = try open(base: base, taskVectors: taskVectors, force: o.force, warn: warn)
        try checkCommon(o, inputCount: inputs.count, output: output)
        // Parameters that depend on the tensor (config filters and gradients), resolved and checked now.
        var o = o
        o.perTensorOptions = try o.perTensor(base.tensors.map(\.name), inputCount: inputs.count, file: o.tensorSettings?.source ?? output, warn: warn)
        if o.tiesScope == .global, o.method.parameters.contains(where: { $0.name == "scope" }), !o.perTensorOptions.isEmpty,
           o.perTensorOptions.values.contains(where: { $0.tiesDensity != o.tiesDensity || $0.weights != o.weights }) {
            throw LocusError(file: o.tensorSettings?.source ?? output, "density or weight per tensor needs scope: tensor (scope global ranks the whole model at once)")
        }
        // What the method needs before any output exists (global thresholds, scores files).
        var direction: (kernel: any DirectionKernel, context: DirectionContext)? = nil
        var tensorJob: TaskVectorBlockJob? = nil
        switch o.method.producer.kind {
        case .direction(let k): direction = (k, try k.prepare(base: base, inputs: inputs, options: o))
        case .taskVectorBlocks(let k): tensorJob = try k.prepare(base: base, basePath: basePath, inputs: inputs, options: o, output: output)
        case .models: throw LocusError(file: output, "\(o.method.name) merges full models, not task vectors: give the models, no base")
        }
        let (writer, dtypeFor) = try outputSink(like: base, options: o, path: output, format: outputFormat, provenance: provenance,
                                        shardBytes: shardBytes)
        var tallWriters: [(MaskWriter, CheckpointWriter)] = []
        if let dir = o.tallDirectory, direction?.kernel.writesTaskModels == true {
            let fp = try base.fingerprint
            for (t, input) in inputs.enumerated() {
                let stem = "\(dir)/task\(t)-" + (input.path.split(separator: "/").last.map(String.init) ?? "tv").replacingOccurrences(of: ".h5", with: "")
                tallWriters.append((try MaskWriter(path: stem + "-mask.h5", baseFingerprint: fp, absentTensors: .frozen, provenance: provenance),
                                    try CheckpointWriter(path: stem + "-model.h5", provenance: provenance, metadata: try base.metadata(), architecture: try base.architecture())))
            }
        }
        var report = Report()
        if let tensorJob {
            try tensorJob(writer, dtypeFor, &report)
        } else if let (kernel, context) = direction {
            // Every tensor's direction, θ0 and output (and TALL's masks and per-task models) go through together in row blocks.
            try mergeStreaming(writer, base, inputs: inputs, kernel: kernel, options: o, context: context, tallWriters: tallWriters,
                               dtypeFor: dtypeFor, output: output, report: &report)
        }
        // The merged model and TALL's per-task files are published together or not at all.
        report.fingerprint = try OutputGroup.publishTogether {
            for (mw, cw) in tallWriters { try mw.finish(); try cw.finish() }
            return try writer.finish()
        }
        return report
    }

    /// Output block size: rows adding up to at most this many entries (at least one row).
    static let blockEntries = 1 << 19
    static var blockBytes: Int { 4 << 20 }

    /// One step of a streaming merge.
    enum Step {
        /// A tensor no vector touches (or not floating point): copied bit for bit, in row blocks.
        case copy(CheckpointTensor)
        /// A scalar or empty merged tensor: one small block.
        case whole(CheckpointTensor)
        /// Rows [start, start + count) of a merged tensor with rows of `rowLength` entries.
        case block(CheckpointTensor, start: Int, count: Int, rowLength: Int)
    }

    /// Task arithmetic, TIES and DARE, streaming: each tensor is merged in blocks of whole rows of
    /// at most `blockEntries` entries (one row when a row is longer). Per block, the direction
    /// (float32), θ0, the output bytes, and each vector's stored entries of the block; the
    /// direction of the next block (of the same tensor or the next one) is computed on a second
    /// thread while the current block is combined with θ0 and written.
    static func mergeStreaming(_ w: any CheckpointSink, _ base: any CheckpointSource, inputs: [Input], kernel: any DirectionKernel, options o: MergeOptions,
                               context: DirectionContext,
                               tallWriters: [(MaskWriter, CheckpointWriter)] = [],
                               dtypeFor: (CheckpointTensor) -> LocusDType, output: String, report: inout Report) throws {
        var steps: [Step] = []
        var maxBlock = 1
        for t in base.tensors {
            // Checkpoints' task vectors computed on the fly touch every floating-point tensor.
            let touched = context.deltas != nil || inputs.contains(where: { $0.byName[t.name] != nil })
            guard t.dtype.isFloatingPoint, o.merges(t.name), touched else { steps.append(.copy(t)); continue }
            let rows = t.shape.first ?? 1
            guard !t.shape.isEmpty, rows > 0, t.count > 0 else { steps.append(.whole(t)); continue }
            let rowLength = t.count / rows
            guard rowLength <= Int(Int32.max) else { throw LocusError(file: output, object: t.objectPath, "rows of more than 2³¹ entries are not supported") }
            let perBlock = max(1, blockEntries / rowLength)
            maxBlock = max(maxBlock, min(rows, perBlock) * rowLength)
            for r in stride(from: 0, to: rows, by: perBlock) { steps.append(.block(t, start: r, count: min(perBlock, rows - r), rowLength: rowLength)) }
        }
        let scratch = MergeScratch(vectors: inputs.count)
        scratch.ensureDirections(maxBlock)
        let directions = scratch.directions
        // The direction side: one BlockDirection at a time, used by one thread at a time.
        final class Source {
            var current: (name: String, direction: DirectionBlocks)?
        }
        let source = Source()
        let blockSteps = steps.indices.filter { if case .block = steps[$0] { return true } else { return false } }
        func direction(_ k: Int) throws {   // the k-th block step's direction into directions[k % 2]
            guard case let .block(t, start, count, rowLength) = steps[blockSteps[k]] else { return }
            if source.current?.name != t.name {
                source.current = nil   // the last tensor's buffers go before the next one's are made
                source.current = (t.name, try kernel.blocks(tensor: t.name, shape: t.shape, count: t.count, maxBlock: maxBlock, inputs: inputs,
                                                            options: o.options(for: t.name), context: context, scratch: scratch))
            }
            let end = (start + count) * rowLength
            try source.current!.direction.next(upTo: end, into: UnsafeMutableBufferPointer(rebasing: directions[k % 2][0..<(count * rowLength)]))
        }
        // TALL writes each block's masks after the block's direction: no direction is computed ahead.
        let prefetch = tallWriters.isEmpty
        if prefetch && !blockSteps.isEmpty { try direction(0) }
        let modelWriters: [any CheckpointSink] = [w] + tallWriters.map { $0.1 as any CheckpointSink }
        var k = 0   // block steps done
        for step in steps {
            switch step {
            case .copy(let t):
                for cw in modelWriters { try cw.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape) }
                try base.forEachBlock(t, blockBytes: blockBytes) { bytes in for cw in modelWriters { try cw.writeRows(bytes) } }
                report.tensorsCopied += 1
            case .whole(let t):
                let dir = try kernel.blocks(tensor: t.name, shape: t.shape, count: t.count, maxBlock: t.count, inputs: inputs,
                                            options: o.options(for: t.name), context: context, scratch: nil)
                var d = [Float](repeating: 0, count: t.count)
                try d.withUnsafeMutableBufferPointer { try dir.next(upTo: t.count, into: $0) }
                let theta0 = try base.readFloat64(t)
                var v = theta0
                let lambda = o.options(for: t.name).lambda
                for i in 0..<v.count where d[i] != 0 { v[i] += lambda * Double(d[i]) }
                try writeTensor(w, t, v, dtype: dtypeFor(t), output: output)
                if let masks = dir.taskMasks, !tallWriters.isEmpty {
                    for (m, (mw, cw)) in tallWriters.enumerated() {
                        try mw.beginTensor(name: t.name, shape: t.shape)
                        try mw.appendBits(UnsafeBufferPointer(rebasing: masks[m][0..<t.count]))
                        var own = theta0
                        for i in 0..<t.count where masks[m][i] { own[i] += Double(d[i]) }   // θ̂_t = θ0 + m_t ⊙ τ_MTL
                        try writeTensor(cw, t, own, dtype: dtypeFor(t), output: output)
                    }
                }
                report.tensorsMerged += 1
            case let .block(t, r, count, rowLength):
                let dtype = dtypeFor(t), n = count * rowLength, offset = r * rowLength, lambda = o.options(for: t.name).lambda
                if r == 0 { try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape); report.tensorsMerged += 1 }
                let d = UnsafeBufferPointer(rebasing: directions[k % 2][0..<n])
                let combine = {
                    if t.dtype == .float32 && dtype == .float32 {
                        // float32 in and out: θ0 + λ·d in float64, rounded once; untouched entries keep their bits.
                        if scratch.theta.count < n { scratch.theta = [Float](repeating: 0, count: n); scratch.bits = [UInt32](repeating: 0, count: n) }
                        try scratch.theta.withUnsafeMutableBytes { try base.readRows(t, start: r, count: count, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<(4 * n)])) }
                        var nonFinite: UInt32 = 0
                        scratch.theta.withUnsafeBufferPointer { th in
                            scratch.bits.withUnsafeMutableBufferPointer { out in
                                for j in 0..<n {
                                    let t0 = th[j], dj = d[j]
                                    let y = Float(Double(t0) + lambda * Double(dj))
                                    let x = (dj != 0 ? y : t0).bitPattern
                                    nonFinite |= (x & 0x7F80_0000) == 0x7F80_0000 ? 1 : 0
                                    out[j] = x.littleEndian
                                }
                            }
                        }
                        if nonFinite != 0, let bad = scratch.bits[0..<n].firstIndex(where: { !Float(bitPattern: UInt32(littleEndian: $0)).isFinite }) {
                            throw LocusError(file: output, object: t.objectPath, "merged entry \(offset + bad) overflows \(dtype.rawValue)")
                        }
                        try scratch.bits.withUnsafeBytes { try w.writeRows(UnsafeRawBufferPointer(rebasing: $0[0..<(4 * n)])) }
                    } else {
                        var v = try base.readRowsFloat64(t, start: r, count: count)
                        for j in 0..<n where d[j] != 0 { v[j] += lambda * Double(d[j]) }
                        let bytes = HalfPrecision.encode(v, as: dtype)
                        if let bad = TaskVectorWriter.decodeForCheck(bytes, dtype: dtype).firstIndex(where: { !$0.isFinite }) {
                            throw LocusError(file: output, object: t.objectPath, "merged entry \(offset + bad) overflows \(dtype.rawValue)")
                        }
                        try bytes.withUnsafeBytes { try w.writeRows($0) }
                    }
                }
                if !prefetch { try direction(k) }
                if prefetch && k + 1 < blockSteps.count {
                    // The two sides share no state: the next direction buffer, the BlockDirection, the
                    // vectors' streams and entry blocks on one; this block's direction, θ0, output and
                    // the writer on the other (HDF5 is built thread-safe and serialises its own calls).
                    nonisolated(unsafe) var failure: (any Error)? = nil
                    let next = k + 1
                    try Concurrently.run({ do { try direction(next) } catch { failure = error } }, combine)
                    if let failure { throw failure }
                } else {
                    try combine()
                }
                if let masks = source.current?.direction.taskMasks, !tallWriters.isEmpty {
                    // Each task's mask bits of the block, and its model θ0 + m_t ⊙ τ_MTL.
                    let theta0 = try base.readRowsFloat64(t, start: r, count: count)
                    for (m, (mw, cw)) in tallWriters.enumerated() {
                        let bits = UnsafeBufferPointer(rebasing: masks[m][0..<n])
                        if r == 0 { try mw.beginTensor(name: t.name, shape: t.shape); try cw.beginTensor(name: t.name, dtype: dtype, shape: t.shape) }
                        try mw.appendBits(bits)
                        var own = theta0
                        for j in 0..<n where bits[j] { own[j] += Double(d[j]) }
                        try writeBlock(cw, t, own, offset: offset, dtype: dtype, output: output)
                    }
                }
                k += 1
            }
        }
    }

    static func writeTensor(_ w: any CheckpointSink, _ t: CheckpointTensor, _ values: [Double], dtype: LocusDType, output: String) throws {
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(bad) is not finite")
        }
        let bytes = HalfPrecision.encode(values, as: dtype)
        if let bad = TaskVectorWriter.decodeForCheck(bytes, dtype: dtype).firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(bad) overflows \(dtype.rawValue)")
        }
        try bytes.withUnsafeBytes { try w.add(name: t.name, dtype: dtype, shape: t.shape, bytes: $0) }
    }

    /// Rows of a tensor already begun on `w`, from float64 values, with `writeTensor`'s checks
    /// (entry numbers are flat indices of the tensor).
    static func writeBlock(_ w: any CheckpointSink, _ t: CheckpointTensor, _ values: [Double], offset: Int, dtype: LocusDType, output: String) throws {
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(offset + bad) is not finite")
        }
        let bytes = HalfPrecision.encode(values, as: dtype)
        if let bad = TaskVectorWriter.decodeForCheck(bytes, dtype: dtype).firstIndex(where: { !$0.isFinite }) {
            throw LocusError(file: output, object: t.objectPath, "merged entry \(offset + bad) overflows \(dtype.rawValue)")
        }
        try bytes.withUnsafeBytes { try w.writeRows($0) }
    }

    /// Fisher merging, streaming: each merged tensor in blocks of whole rows of at most
    /// `blockEntries` entries (one row when a row is longer). Per block: θ0, Σ λ_i F_i θ_i, Σ λ_i F_i
    /// and one θ_i (float64), one vector's stored entries and one scores file's rows (float32).
    static func fisherStreaming(_ w: any CheckpointSink, _ base: any CheckpointSource, inputs: [Input], scores: [ScoresReader], options o: MergeOptions,
                                dtypeFor: (CheckpointTensor) -> LocusDType, output: String, report: inout Report) throws {
        let buffers = inputs.map { _ in EntryStreamBuffers() }
        var entries: EntryBlock? = nil
        var f: [Float] = [], num: [Double] = [], den: [Double] = [], theta: [Double] = []
        let all = o
        for t in base.tensors {
            let o = all.options(for: t.name), weights = o.vectorWeights(inputs.count)
            let touched = inputs.contains { $0.byName[t.name] != nil } || scores.contains { $0.tensor(named: t.name) != nil }
            guard t.dtype.isFloatingPoint, o.merges(t.name), touched else {
                try w.beginTensor(name: t.name, dtype: t.dtype, shape: t.shape)
                try base.forEachBlock(t, blockBytes: blockBytes) { try w.writeRows($0) }
                report.tensorsCopied += 1
                continue
            }
            report.tensorsMerged += 1
            let rows = t.shape.first ?? 1
            guard !t.shape.isEmpty, rows > 0, t.count > 0 else {
                // A scalar or empty tensor: one small block.
                let merged = try fisherMerge(t, theta0: try base.readFloat64(t), inputs: inputs, scores: scores, options: o)
                try writeTensor(w, t, merged, dtype: dtypeFor(t), output: output)
                continue
            }
            let rowLength = t.count / rows
            guard rowLength <= Int(Int32.max) else { throw LocusError(file: output, object: t.objectPath, "rows of more than 2³¹ entries are not supported") }
            let perBlock = max(1, blockEntries / rowLength)
            let capacity = min(rows, perBlock) * rowLength
            if entries == nil || entries!.capacity < capacity { entries = EntryBlock(capacity: capacity) }
            if num.count < capacity {
                num = [Double](repeating: 0, count: capacity); den = num; theta = num; f = [Float](repeating: 0, count: capacity)
            }
            let streams = try Merger.entryStreams(inputs, tensor: t.name, buffers: buffers)
            let scored = scores.map { $0.tensor(named: t.name) }
            let dtype = dtypeFor(t)
            try w.beginTensor(name: t.name, dtype: dtype, shape: t.shape)
            for r in stride(from: 0, to: rows, by: perBlock) {
                let count = min(perBlock, rows - r), n = count * rowLength, offset = r * rowLength
                let theta0 = try base.readRowsFloat64(t, start: r, count: count)
                for j in 0..<n { num[j] = 0; den[j] = 0 }
                for k in inputs.indices {
                    for j in 0..<n { theta[j] = theta0[j] }
                    if let stream = streams[k] {
                        let b = entries!
                        b.count = 0
                        try stream.next(upTo: offset + n, into: b)
                        for j in 0..<b.count { theta[Int(b.offsets[j])] += Double(b.values[j]) }
                    }
                    var norm = 1.0
                    if let st = scored[k] {
                        try f.withUnsafeMutableBufferPointer { try scores[k].readRows(st, start: r, count: count, into: UnsafeMutableBufferPointer(rebasing: $0[0..<n])) }
                        if o.fisherNormalize && scores[k].info.samples > 0 && scores[k].info.reduction == .sum { norm = 1 / Double(scores[k].info.samples) }
                    } else {
                        for j in 0..<n { f[j] = 1 }   // not scored: plain averaging for this model
                    }
                    for j in 0..<n {
                        let fi = max(Double(f[j]) * norm, o.fisherFloor) * weights[k]
                        num[j] += fi * theta[j]; den[j] += fi
                    }
                }
                let merged = (0..<n).map { den[$0] != 0 ? num[$0] / den[$0] : 0 }
                try writeBlock(w, t, merged, offset: offset, dtype: dtype, output: output)
            }
        }
    }

    /// θ* = Σ_i λ_i F_i θ_i / Σ_i λ_i F_i with θ_i = θ0 + τ_i, F floored (Matena & Raffel); λ_i are the
    /// vector weights. A tensor a scores file does not cover gets F = 1 for that model (plain averaging).
    static func fisherMerge(_ t: CheckpointTensor, theta0: [Double], inputs: [Input], scores: [ScoresReader], options o: MergeOptions) throws -> [Double] {
        let w = o.vectorWeights(inputs.count)
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
    static func globalThresholds(base: any CheckpointSource, inputs: [Input], random: Bool, options o: MergeOptions) throws -> [Float] {
        let total = base.tensors.filter { $0.dtype.isFloatingPoint }.reduce(0) { $0 + $1.count }
        let keep = Int(o.tiesDensity * Double(total))
        return try inputs.enumerated().map { t, input in
            try magnitudeThreshold(input, input.reader.tensors, vector: t, keep: keep, random: random, options: o)
        }
    }
}

extension Merger {
    /// The checks every method shares: weights (one per input), output dtype, and the method's
    /// parameters (ranges and the method's own checks), all problems at once.
    static func checkCommon(_ o: MergeOptions, inputCount: Int, output: String) throws {
        if let w = o.weights, w.count != inputCount {
            throw LocusError(file: output, "\(w.count) weights for \(inputCount) inputs")
        }
        if let d = o.dtype, !d.isFloatingPoint { throw RequestError("dtype", "must be a floating-point type, not \(d.rawValue)") }
        let problems = MergeMethods.problems(o, inputCount: inputCount)
        guard problems.isEmpty else { throw LocusError(file: output, problems.joined(separator: "; ")) }
    }

    /// The merged direction of every touched tensor, in memory (for the α search, which evaluates
    /// whole models anyway). Only for methods whose output is θ0 + λ·direction.
    public static func directions(base: any CheckpointSource, taskVectors: [String], options o: MergeOptions,
                                  warn: (String) -> Void = { _ in }) throws -> [String: [Float]] {
        guard let kernel = o.method.producer.directionKernel else {
            throw LocusError(file: base.path, "α search does not apply to \(o.method.name) merging (its output is not θ0 + α·direction)")
        }
        let inputs = try open(base: base, taskVectors: taskVectors, force: o.force, warn: warn)
        let context = try kernel.prepare(base: base, inputs: inputs, options: o)
        var out: [String: [Float]] = [:]
        for t in base.tensors where t.dtype.isFloatingPoint && inputs.contains(where: { $0.byName[t.name] != nil }) {
            out[t.name] = try mergedDirection(t, kernel: kernel, inputs: inputs, options: o, context: context)
        }
        return out
    }
}

extension Merger {
    /// Calls `body` with each input as a task vector: task vectors as they are, checkpoints as
    /// θ_i − θ_base written by `TaskArithmetic.diff` into a hidden folder beside `output` (the
    /// output's file system, not /tmp), which is removed whatever happens.
    static func withTaskVectors<R>(base: String, inputs: [String], near output: String, _ body: ([String]) throws -> R) throws -> R {
        let parent = URL(fileURLWithPath: output.hasSuffix("/") ? String(output.dropLast()) : output).deletingLastPathComponent().path
        let folder = parent + "/.locus-task-vectors-\(ProcessInfo.processInfo.processIdentifier)-\(UInt64(Date().timeIntervalSince1970 * 1e6))"
        do { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false) } catch {
            throw LocusError(file: folder, "cannot create a folder for the inputs' task vectors: \(error.localizedDescription)")
        }
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var vectors: [String] = []
        for (i, p) in inputs.enumerated() {
            if try isTaskVector(p) { vectors.append(p); continue }
            let tv = folder + "/input-\(i).h5"
            try TaskArithmetic.diff(base: base, finetuned: p, output: tv)
            vectors.append(tv)
        }
        return try body(vectors)
    }
}
