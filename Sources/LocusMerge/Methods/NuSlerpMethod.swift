import Foundation
import LocusFormat

/// NuSLERP: spherical interpolation of two task vectors, with t from two weights, over the whole
/// tensor, its rows or its columns.
struct NuSlerpMethod: MergeMethodDefinition {
    let name = "nuslerp"
    let summary = [
        "θ = θ0 + slerp(t, τ0, τ1) with t = w1/(w0 + w1) (0.5 when |w0 + w1| < 1e-6): cos Ω = ⟨τ0, τ1⟩ /",
        "(max(‖τ0‖, 1e-7) max(‖τ1‖, 1e-7)), slerp = (sin((1−t)Ω) τ0 + sin(tΩ) τ1) / sin Ω, and",
        "(1−t) τ0 + t τ1 when 1 − cos²Ω ≤ 1e-16; over the whole tensor (--nuslerp-flatten), each row",
        "of its last axis, or with --nuslerp-row-wise each slice along its first axis (a column of a",
        "matrix), as mergekit's nuslerp with base_model; two task vectors, no λ. Two models and no base:",
        "θ = slerp(t, θ0, θ1) of their full weights, as mergekit's nuslerp without base_model",
    ]
    let citation = "Shoemake (1985), Animating Rotation with Quaternion Curves, SIGGRAPH '85 (Computer Graphics 19(3), pp. 245–254): the slerp formula, applied to two task vectors as mergekit's nuslerp does."
    let inputs = MergeInputKind.taskVectors
    var parameters: [MergeParameter] {
        [MergeParameter(name: "weight", cliAliases: ["weights"], kind: .numbersPerInput, range: "",
                        help: "w0, w1, comma-separated: t = w1/(w0 + w1)", required: false,
                        valid: { $0.weights?.allSatisfy(\.isFinite) ?? true },
                        set: { o, v in if case .numbers(let w) = v { o.weights = w } }, get: { o in o.weights.map { .array($0.map { .number($0) }) } }),
         .bool("nuslerp_flatten", \.nuslerpFlatten, help: "one angle for the whole tensor"),
         .bool("nuslerp_row_wise", \.nuslerpRowWise, help: "without flatten: slices along the first axis, not rows of the last")]
    }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        inputCount == 2 ? [] : ["nuslerp interpolates exactly 2 task vectors, got \(inputCount)"]
    }

    var producer: MergeProducer { .direction(NuSlerpKernel()) }
    var withoutBase: (any MergeMethodDefinition)? { NuSlerpModelsMethod() }
}

struct NuSlerpKernel: DirectionKernel {
    func blocks(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions,
                context: DirectionContext, scratch: MergeScratch?) throws -> DirectionBlocks {
        try NuSlerpDirection(tensor: name, shape: shape, count: count, maxBlock: maxBlock, inputs: inputs, options: o, context: context,
                             scratch: scratch)
    }

    /// t from the two weights.
    static func t(_ weights: [Double]) -> Double {
        let total = weights[0] + weights[1]
        return abs(total) < 1e-6 ? 0.5 : weights[1] / total
    }

    /// (s0, s1) of slerp = s0 v0 + s1 v1 from ‖v0‖², ‖v1‖² and ⟨v0, v1⟩.
    static func coefficients(t: Double, normSquared0: Double, normSquared1: Double, dot: Double) -> (Double, Double) {
        let cosine = min(1, max(-1, dot / (max(normSquared0.squareRoot(), 1e-7) * max(normSquared1.squareRoot(), 1e-7))))
        guard 1 - cosine * cosine > 1e-16 else { return (1 - t, t) }
        let omega = acos(cosine), s = sin(omega)
        return (sin((1 - t) * omega) / s, sin(t * omega) / s)
    }
}

/// NuSLERP in blocks. Whole tensor (flatten, or rank ≤ 1): a first pass for the two norms and the
/// dot product. Rows of the last axis: each lies inside a block, one pass. Slices along the first
/// axis (row_wise, rank ≥ 2): a first pass for the norms and products of each position within a
/// row (three float64 per entry of a row), then the block pass.
final class NuSlerpDirection: DirectionBlocks {
    /// mergekit's slices of a tensor: the whole (flattened, or rank ≤ 1), the rows of the last axis,
    /// or the entries at each position of the first axis's rows (row-wise).
    enum Segments {
        case whole, lastAxis(Int), firstAxis(Int)
        init(options o: MergeOptions, shape: [Int]) {
            if o.nuslerpFlatten || shape.count <= 1 { self = .whole }
            else if o.nuslerpRowWise { self = .firstAxis(shape.dropFirst().reduce(1, *)) }
            else { self = .lastAxis(shape.last!) }
        }
        /// Slices whose norms and dot product take a first pass (the last axis's rows take none).
        var positions: Int {
            switch self {
            case .whole: return 1
            case .firstAxis(let row): return row
            case .lastAxis: return 0
            }
        }
    }
    /// The first pass: per slice position, |a|², |b|² and a·b, then each slice's coefficients.
    struct SliceSums {
        let positions: Int
        var n0: [Double], n1: [Double], dot: [Double]
        init(positions: Int) {
            self.positions = positions
            n0 = [Double](repeating: 0, count: positions); n1 = n0; dot = n0
        }
        mutating func add<C: RandomAccessCollection<Double>>(_ a: C, _ b: C, start: Int, count n: Int) where C.Index == Int {
            for j in 0..<n {
                let k = positions == 1 ? 0 : (start + j) % positions
                n0[k] += a[j] * a[j]; n1[k] += b[j] * b[j]; dot[k] += a[j] * b[j]
            }
        }
        func coefficients(t: Double) -> ([Double], [Double]) {
            var s0: [Double] = [], s1: [Double] = []
            for k in 0..<positions {
                let (x, y) = NuSlerpKernel.coefficients(t: t, normSquared0: n0[k], normSquared1: n1[k], dot: dot[k])
                s0.append(x); s1.append(y)
            }
            return (s0, s1)
        }
    }
    let vectors: DenseTaskVectorBlocks
    let segments: Segments
    let t: Double
    /// Per segment of the first pass: (s0, s1); one for `.whole`, one per row position for `.firstAxis`.
    var s0: [Double] = [], s1: [Double] = []

    init(tensor name: String, shape: [Int], count: Int, maxBlock: Int, inputs: [Merger.Input], options o: MergeOptions, context: DirectionContext,
         scratch: MergeScratch?) throws {
        let scratch = scratch ?? MergeScratch(vectors: inputs.count)
        let block = max(1, min(maxBlock, count))
        let entries = scratch.entryBlocks(inputs.count, capacity: block)
        t = NuSlerpKernel.t(o.vectorWeights(2))
        segments = Segments(options: o, shape: shape)
        if segments.positions > 0 {
            var sums = SliceSums(positions: segments.positions)
            try DenseTaskVectorBlocks.pass(tensor: name, count: count, block: block, inputs: inputs, entries: entries, context: context) { v, start, n in
                sums.add(v.dense[0], v.dense[1], start: start, count: n)
            }
            (s0, s1) = sums.coefficients(t: t)
        }
        vectors = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: scratch.streamBuffers, entries: entries,
                                            context: context)
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let start = vectors.position, n = end - start
        try vectors.next(upTo: end)
        Self.interpolate(segments, s0: s0, s1: s1, t: t, vectors.dense[0], vectors.dense[1], start: start, count: n) { dir[$0] = Float($1) }
    }

    /// s0·a + s1·b per entry, with each slice's coefficients (from the first pass, or for the last
    /// axis's rows from the row itself); `start` is the block's first entry in the tensor.
    @inline(__always)
    static func interpolate<C: RandomAccessCollection<Double>>(_ segments: Segments, s0: [Double], s1: [Double], t: Double, _ a: C, _ b: C,
                                                              start: Int, count n: Int, write: (Int, Double) -> Void) where C.Index == Int {
        switch segments {
        case .whole:
            for j in 0..<n { write(j, s0[0] * a[j] + s1[0] * b[j]) }
        case .firstAxis(let row):
            for j in 0..<n { let k = (start + j) % row; write(j, s0[k] * a[j] + s1[k] * b[j]) }
        case .lastAxis(let length):
            for r in stride(from: 0, to: n, by: max(1, length)) {
                var n0 = 0.0, n1 = 0.0, dot = 0.0
                let range = r..<min(n, r + length)
                for j in range { n0 += a[j] * a[j]; n1 += b[j] * b[j]; dot += a[j] * b[j] }
                let (x, y) = NuSlerpKernel.coefficients(t: t, normSquared0: n0, normSquared1: n1, dot: dot)
                for j in range { write(j, x * a[j] + y * b[j]) }
            }
        }
    }
}
