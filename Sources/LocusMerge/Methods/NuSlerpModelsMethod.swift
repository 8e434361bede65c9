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
        let segments = NuSlerpDirection.Segments(options: o, shape: t.shape)
        var s0: [Double] = [], s1: [Double] = []
        if segments.positions > 0 {
            var sums = NuSlerpDirection.SliceSums(positions: segments.positions), offset = 0
            try blocks { m in
                sums.add(m[0], m[1], start: offset, count: m[0].count)
                offset += m[0].count
            }
            (s0, s1) = sums.coefficients(t: interpolation)
        }
        var offset = 0
        return { m in
            let a = m[0], b = m[1], n = a.count
            var out = [Double](repeating: 0, count: n)
            NuSlerpDirection.interpolate(segments, s0: s0, s1: s1, t: interpolation, a, b, start: offset, count: n) { out[$0] = $1 }
            offset += n
            return out
        }
    }
}
