import Foundation
import LocusFormat

/// The options of a merge: the method (see `MergeMethods`) and the values of every method's
/// parameters. Each field's initial value is that parameter's default (the methods' parameter
/// tables read them for `--help`); a method reads only the fields its table names.
public struct MergeOptions: Sendable {
    /// The per-vector weights, 1 for every vector when none are given.
    func vectorWeights(_ vectors: Int) -> [Double] { weights ?? Array(repeating: 1, count: vectors) }
    public var method: any MergeMethodDefinition = GTAMethod.taskArithmetic
    /// λ: the merged direction is scaled by it (every task-vector method but Fisher).
    public var lambda: Double = 1
    /// Per-input weights w_t (default 1 each); negative negates a task.
    public var weights: [Double]? = nil
    /// Magnitude sparsification (TIES): fraction of entries kept per vector (top-k by |τ|), and
    /// whether the ranking is over the whole model (paper) or per tensor (mergekit).
    public var tiesDensity: Double = 0.2
    public var tiesScope: Scope = .global
    /// Random sparsification (DARE): drop rate p, rescale by 1/(1−p) (paper) or not, seed.
    public var dareDropRate: Double = 0.9
    public var dareRescale = true
    public var seed: UInt64 = 0
    /// Outlier sparsification (Breadcrumbs): drop the top γ fraction of |τ|, keep the next β, per row (paper) or per tensor (mergekit).
    public var breadcrumbsBeta: Double = 0.2
    public var breadcrumbsGamma: Double = 0.1
    public var breadcrumbsScope: Scope = .row
    /// Magnitude-ranked drop (DELLA): mean keep probability, its spread ±ε over the |τ| ranks of a row, rescale by 1/p.
    public var dellaDensity: Double = 0.2
    public var dellaEpsilon: Double = 0.15
    public var dellaRescale = true
    /// Model Stock: one interpolation ratio per row of the last axis instead of per tensor (mergekit's `filter_wise`).
    public var modelStockFilterWise = false
    /// NuSLERP: one angle per tensor (mergekit's `nuslerp_flatten`), else per row of the last axis or, with
    /// `nuslerp_row_wise`, per slice along the first axis.
    public var nuslerpFlatten = true
    public var nuslerpRowWise = false
    /// Karcher mean: most gradient steps on the sphere, and the tolerance below which norms, angles and steps count as zero.
    public var karcherMaxIterations = 10
    public var karcherTolerance = 1e-5
    /// SCE: fraction of a tensor's entries with nonzero variance across the vectors that is selected.
    public var sceSelectTopK = 1.0
    /// Fisher: scores files (one per task vector), floor, and dividing by each file's sample count.
    public var fisherScores: [String] = []
    public var fisherFloor: Double = 1e-6
    public var fisherNormalize = false
    /// TALL / consensus: λ_t of the mask rule, consensus's k, and where TALL writes per-task files.
    public var tallLambda: Double = 0.4
    public var consensusK = 2
    public var tallDirectory: String? = nil
    /// Linear: divide by Σ w (mergekit's `normalize`).
    public var linearNormalize = true
    /// SLERP: the interpolation factor t (0 = the first model, 1 = the second).
    public var slerpT: Double = 0.5
    /// Output dtype (default: each tensor's base dtype).
    public var dtype: LocusDType? = nil
    public var force = false
    /// Whose rules the merge follows: Locus's (the papers') or mergekit's (`locus merge --config`;
    /// docs/merging.md §Configs).
    public var semantics: MergeSemantics = .locus
    /// mergekit semantics: per-input density (kept fraction, default 1), Breadcrumbs' γ (default
    /// 0.01) and DELLA's ε (default 0.15); `normalize` and `rescale` (nil: the method's mergekit default).
    public var densities: [Double]? = nil
    public var gammas: [Double]? = nil
    public var epsilons: [Double]? = nil
    public var mergekitNormalize: Bool? = nil
    public var mergekitRescale: Bool? = nil
    /// Tensors merged: those matching an `include` glob (all when none), minus those matching an
    /// `exclude` glob; the others are copied from the base (or the first model) unchanged.
    public var include: [String] = []
    public var exclude: [String] = []
    /// Parameter values that depend on the tensor (filters, layer gradients), resolved per tensor.
    public var tensorSettings: TensorSettings? = nil
    /// The resolved options of each tensor whose parameters differ (set by the driver).
    var perTensorOptions: [String: MergeOptions] = [:]
    /// The options of tensor `name`.
    func options(for name: String) -> MergeOptions { perTensorOptions[name] ?? self }
    public init() {}

    public enum Scope: String, Sendable, CaseIterable, Codable { case global, tensor, row }
}

/// Out-of-core merging of task vectors stored in files into a base checkpoint.
///
/// Memory, every method: every tensor goes through in blocks of whole rows of at most 2¹⁹ entries
/// (one row when a row is longer). A block holds its direction (float32, two of them: the next one
/// is computed on a second thread while the current one is written; TALL computes them in turn),
/// θ0 and the output bytes, and the stored entries of the block — of one vector at a time for task
/// arithmetic and Breadcrumbs, of every vector for TIES, DARE, TALL and consensus (8 bytes per
/// entry; TALL and consensus add one mask byte per entry and vector). Fisher holds four float64
/// arrays per block (θ0, θ_i, Σ F θ, Σ F), one vector's entries and one scores file's rows. Each
/// vector is read through a `TaskVectorEntryStream` with a window of at most 2 MB over its mask or
/// indices. The peak is therefore set by the block size and the number of vectors, not by the
/// model or its largest tensor. Global TIES thresholds and per-tensor Breadcrumbs ranks come from
/// an exact two-level histogram over the vectors' values (two streaming passes, constant memory).
public enum Merger {
    public struct Input {
        public let path: String
        public let reader: TaskVectorReader
        public var byName: [String: TaskVectorTensor]

        /// A stream over this vector's entries of tensor `name` (scaled by the file's `scale`), or nil when absent.
        func entryStream(_ name: String, buffers: EntryStreamBuffers) throws -> TaskVectorEntryStream? {
            try byName[name].map { try TaskVectorEntryStream(reader, $0, scale: reader.scale, buffers: buffers) }
        }
    }

    /// One stream per vector over tensor `name` (nil where a vector lacks it), each with its own buffers.
    static func entryStreams(_ inputs: [Input], tensor name: String, buffers: [EntryStreamBuffers]) throws -> [TaskVectorEntryStream?] {
        try inputs.indices.map { try inputs[$0].entryStream(name, buffers: buffers[$0]) }
    }

    /// Opens and checks everything before any output exists: fingerprints (refused unless `force`),
    /// names and shapes against the base (every mismatch listed), finite values are checked as read.
    public static func open(base: any CheckpointSource, taskVectors: [String], force: Bool, warn: (String) -> Void) throws -> [Input] {
        guard !taskVectors.isEmpty else { throw LocusError(file: base.path, "no task vectors to merge") }
        let fp = try base.fingerprint
        var inputs: [Input] = []
        var problems: [String] = []
        for path in taskVectors {
            let r = try TaskVectorReader(path: path)
            if r.baseFingerprint != fp {
                if force { warn("\(path) was made from another base (\(r.baseFingerprint)); merging anyway (forced)") }
                else { problems.append("\(path): base fingerprint \(r.baseFingerprint) is not \(base.path)'s \(fp)") }
            }
            for t in r.tensors {
                guard let b = base.tensor(named: t.name) else { problems.append("\(path): tensor '\(t.name)' is not in the base"); continue }
                if b.shape != t.shape { problems.append("\(path): '\(t.name)' has shape \(t.shape), the base has \(b.shape)") }
                if !b.dtype.isFloatingPoint { problems.append("\(path): '\(t.name)' targets a \(b.dtype.rawValue) tensor") }
            }
            inputs.append(Input(path: path, reader: r, byName: Dictionary(uniqueKeysWithValues: r.tensors.map { ($0.name, $0) })))
        }
        guard problems.isEmpty else {
            throw LocusError(file: base.path, "\(problems.count) problem(s) with the task vectors (forcing overrides fingerprint mismatches only): \(problems.prefix(8).joined(separator: "; "))\(problems.count > 8 ? "; …" : "")")
        }
        return inputs
    }

    /// One task vector's entries for one tensor, scaled by its file's `scale`; empty when absent.
    static func entries(_ input: Input, _ name: String) throws -> (idx: [Int], val: [Float]) {
        guard let t = input.byName[name] else { return ([], []) }
        let (i, v) = try input.reader.readSparse64(t)
        let s = input.reader.scale
        return (i, v.map { Float($0 * s) })
    }

    /// The merged direction τ_m of one tensor (without λ) of a direction method: its streaming
    /// kernel over the whole tensor as one block.
    static func mergedDirection(_ t: CheckpointTensor, kernel: any DirectionKernel, inputs: [Input], options o: MergeOptions,
                                context: DirectionContext) throws -> [Float] {
        let source = try kernel.blocks(tensor: t.name, shape: t.shape, count: t.count, maxBlock: t.count, inputs: inputs, options: o,
                                       context: context, scratch: nil)
        var dir = [Float](repeating: 0, count: t.count)
        try dir.withUnsafeMutableBufferPointer { try source.next(upTo: t.count, into: $0) }
        return dir
    }

    /// The keep decisions for the stored entries of one vector's tensor, in index order.
    public static func dareKeepMask(count: Int, vector: Int, tensor: String, options o: MergeOptions) -> [Bool] {
        var rng = dareRandom(vector: vector, tensor: tensor, options: o)
        return (0..<count).map { _ in rng.unitDouble() >= o.dareDropRate }
    }
}

/// Breadcrumbs on one segment: rank by |τ| descending, drop the top γ fraction, keep the next β.
enum Breadcrumbs {
    static func keep(_ v: [Float], beta: Double, gamma: Double) -> [Bool] {
        let n = v.count
        let order = v.indices.sorted { abs(v[$0]) != abs(v[$1]) ? abs(v[$0]) > abs(v[$1]) : $0 < $1 }
        let drop = Int(gamma * Double(n)), take = Int(beta * Double(n))
        var out = [Bool](repeating: false, count: n)
        for r in drop..<min(n, drop + take) where v[order[r]] != 0 { out[order[r]] = true }
        return out
    }
}

/// The k-th largest of non-negative values, exactly, with a histogram on the high 16 bits of the
/// float bit patterns (monotone for non-negative floats), then one on the low 16 bits of the values
/// in the bucket that holds it — two passes, constant memory, whatever the number of values.
public enum ExactTopK {
    /// Threshold t such that "value ≥ t" keeps the top `keep` values (more on ties); +∞ for keep ≤ 0.
    public static func threshold(values: [Float], keep: Int) -> Float {
        guard keep > 0 else { return .infinity }
        guard keep < values.count else { return 0 }
        return values.withUnsafeBufferPointer { v in threshold(chunks: { body in body(v) }, keep: keep) }
    }

    /// Streaming form: `passes` feeds all values (in chunks) to the closure; it is called twice.
    public static func threshold(passes: (([Float]) -> Void) -> Void, keep: Int) -> Float {
        threshold(chunks: { body in withoutActuallyEscaping(body) { body in passes { chunk in chunk.withUnsafeBufferPointer { body($0) } } } }, keep: keep)
    }

    /// Streaming form over buffers: `chunks` feeds all values to the closure; it is called twice.
    public static func threshold(chunks: ((UnsafeBufferPointer<Float>) -> Void) -> Void, keep: Int) -> Float {
        guard keep > 0 else { return .infinity }
        var high = [Int](repeating: 0, count: 1 << 16)
        var total = 0
        high.withUnsafeMutableBufferPointer { h in
            chunks { chunk in for v in chunk { h[Int(v.bitPattern >> 16)] += 1 }; total += chunk.count }
        }
        guard keep < total else { return 0 }
        // Walk buckets from the largest values down to the one holding the keep-th largest.
        var above = 0, bucket = high.count - 1
        while bucket > 0 && above + high[bucket] < keep { above += high[bucket]; bucket -= 1 }
        var low = [Int](repeating: 0, count: 1 << 16)
        let b = UInt32(bucket)
        low.withUnsafeMutableBufferPointer { l in
            chunks { chunk in for v in chunk where v.bitPattern >> 16 == b { l[Int(v.bitPattern & 0xFFFF)] += 1 } }
        }
        // The (keep − above)-th largest of the bucket.
        var rank = keep - above, lo = low.count - 1
        while lo > 0 && low[lo] < rank { rank -= low[lo]; lo -= 1 }
        return Float(bitPattern: b << 16 | UInt32(lo))
    }
}
