import Foundation
import LocusFormat

/// NuSLERP of two full models without a base: mergekit's `nuslerp` when the config has no
/// `base_model` (mergekit 0.1.5, merge_methods/nuslerp.py) interpolates the two models' weights
/// themselves, with the same t, angle and slices as the task-vector form (`NuSlerpMethod`), which
/// names it as its `withoutBase`. It is not in the registry under a name of its own: `--method
/// nuslerp` with two inputs and a config without `base_model` take it.
struct NuSlerpModelsMethod: MergeMethodDefinition {
    let name = "nuslerp"
    let summary = [
        "without a base: θ = slerp(t, θ0, θ1) of the two models' weights, t = w1/(w0 + w1), with the",
        "angle, fallback and slices of nuslerp on task vectors (mergekit's nuslerp without base_model)",
    ]
    var citation: String { NuSlerpMethod().citation }
    let inputs = MergeInputKind.models(count: 2)
    var parameters: [MergeParameter] { NuSlerpMethod().parameters }

    func validate(_ o: MergeOptions, inputCount: Int) -> [String] {
        inputCount == 2 ? [] : ["nuslerp without a base interpolates exactly 2 models, got \(inputCount)"]
    }

    var producer: MergeProducer { .models(NuSlerpModelsKernel()) }
}

/// Per tensor: one pass for the norms and the dot product (the whole tensor, or each position of a
/// first-axis slice), then θ = s0 θ0 + s1 θ1 block by block; rows of the last axis lie inside a
/// block (blocks are whole rows of the first axis) and need no first pass. A vector or scalar
/// tensor is taken whole, as mergekit does.
struct NuSlerpModelsKernel: ModelKernel {
    func combiner(for t: CheckpointTensor, options o: MergeOptions, blocks: (([[Double]]) throws -> Void) throws -> Void) throws -> ModelBlockCombiner {
        let interpolation = NuSlerpKernel.t(o.vectorWeights(2))
        guard t.count > 0 else { return { m in m[0] } }
        let segments: NuSlerpDirection.Segments
        if o.nuslerpFlatten || t.shape.count <= 1 { segments = .whole }
        else if o.nuslerpRowWise { segments = .firstAxis(t.count / t.shape[0]) }
        else { segments = .lastAxis(t.shape.last!) }
        var s0: [Double] = [], s1: [Double] = []
        let positions: Int
        switch segments {
        case .whole: positions = 1
        case .firstAxis(let row): positions = row
        case .lastAxis: positions = 0
        }
        if positions > 0 {
            var n0 = [Double](repeating: 0, count: positions), n1 = n0, dot = n0, offset = 0
            try blocks { m in
                let a = m[0], b = m[1]
                for j in a.indices {
                    let k = positions == 1 ? 0 : (offset + j) % positions
                    n0[k] += a[j] * a[j]; n1[k] += b[j] * b[j]; dot[k] += a[j] * b[j]
                }
                offset += a.count
            }
            for k in 0..<positions {
                let (x, y) = NuSlerpKernel.coefficients(t: interpolation, normSquared0: n0[k], normSquared1: n1[k], dot: dot[k])
                s0.append(x); s1.append(y)
            }
        }
        var offset = 0
        return { m in
            let a = m[0], b = m[1], n = a.count
            var out = [Double](repeating: 0, count: n)
            switch segments {
            case .whole:
                for j in 0..<n { out[j] = s0[0] * a[j] + s1[0] * b[j] }
            case .firstAxis(let row):
                for j in 0..<n { let k = (offset + j) % row; out[j] = s0[k] * a[j] + s1[k] * b[j] }
            case .lastAxis(let length):
                for r in stride(from: 0, to: n, by: max(1, length)) {
                    var n0 = 0.0, n1 = 0.0, dot = 0.0
                    let range = r..<min(n, r + length)
                    for j in range { n0 += a[j] * a[j]; n1 += b[j] * b[j]; dot += a[j] * b[j] }
                    let (x, y) = NuSlerpKernel.coefficients(t: interpolation, normSquared0: n0, normSquared1: n1, dot: dot)
                    for j in range { out[j] = x * a[j] + y * b[j] }
                }
            }
            offset += n
            return out
        }
    }
}
