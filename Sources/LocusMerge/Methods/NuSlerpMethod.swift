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
    enum Segments { case whole, lastAxis(Int), firstAxis(Int) }
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
        if o.nuslerpFlatten || shape.count <= 1 { segments = .whole }
        else if o.nuslerpRowWise { segments = .firstAxis(shape.dropFirst().reduce(1, *)) }
        else { segments = .lastAxis(shape.last!) }
        let positions: Int
        switch segments {
        case .whole: positions = 1
        case .firstAxis(let row): positions = row
        case .lastAxis: positions = 0
        }
        if positions > 0 {
            var n0 = [Double](repeating: 0, count: positions), n1 = n0, dot = n0
            try DenseTaskVectorBlocks.pass(tensor: name, count: count, block: block, inputs: inputs, entries: entries, context: context) { v, start, n in
                let a = v.dense[0], b = v.dense[1]
                for j in 0..<n {
                    let k = positions == 1 ? 0 : (start + j) % positions
                    n0[k] += a[j] * a[j]; n1[k] += b[j] * b[j]; dot[k] += a[j] * b[j]
                }
            }
            for k in 0..<positions {
                let (x, y) = NuSlerpKernel.coefficients(t: t, normSquared0: n0[k], normSquared1: n1[k], dot: dot[k])
                s0.append(x); s1.append(y)
            }
        }
        vectors = try DenseTaskVectorBlocks(tensor: name, capacity: block, inputs: inputs, buffers: scratch.streamBuffers, entries: entries,
                                            context: context)
    }

    func next(upTo end: Int, into dir: UnsafeMutableBufferPointer<Float>) throws {
        let start = vectors.position, n = end - start
        try vectors.next(upTo: end)
        let a = vectors.dense[0], b = vectors.dense[1]
        switch segments {
        case .whole:
            for j in 0..<n { dir[j] = Float(s0[0] * a[j] + s1[0] * b[j]) }
        case .firstAxis(let row):
            for j in 0..<n { let k = (start + j) % row; dir[j] = Float(s0[k] * a[j] + s1[k] * b[j]) }
        case .lastAxis(let length):
            for r in stride(from: 0, to: n, by: max(1, length)) {
                var n0 = 0.0, n1 = 0.0, dot = 0.0
                let range = r..<min(n, r + length)
                for j in range { n0 += a[j] * a[j]; n1 += b[j] * b[j]; dot += a[j] * b[j] }
                let (x, y) = NuSlerpKernel.coefficients(t: t, normSquared0: n0, normSquared1: n1, dot: dot)
                for j in range { dir[j] = Float(x * a[j] + y * b[j]) }
            }
        }
    }
}
