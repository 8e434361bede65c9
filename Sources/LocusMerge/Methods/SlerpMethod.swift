import Foundation
import LocusFormat

/// SLERP: spherical linear interpolation between two models, tensor by tensor.
struct SlerpMethod: MergeMethodDefinition {
    let name = "slerp"
    let summary = [
        "per tensor, with v0, v1 the two models' tensors and cos Ω = ⟨v0, v1⟩ / (‖v0‖ ‖v1‖):",
        "θ = sin((1−t)Ω)/sin Ω · v0 + sin(tΩ)/sin Ω · v1; when |cos Ω| > 0.9995 (nearly parallel) the",
        "linear interpolation (1−t) v0 + t v1, as mergekit does; t = 0 gives the first model. Each tensor",
        "is taken whole (mergekit 0.1.5 interpolates a matrix row by row)",
    ]
    let citation = "Shoemake (1985), Animating Rotation with Quaternion Curves, SIGGRAPH '85 (Computer Graphics 19(3), pp. 245–254): the slerp formula, applied to two models' tensors as mergekit's slerp does."
    let inputs = MergeInputKind.models(count: 2)
    var parameters: [MergeParameter] {
        [.number("t", \.slerpT, range: "[0, 1]", help: "interpolation factor: 0 is the first model, 1 the second", valid: { $0 >= 0 && $0 <= 1 })]
    }
    var producer: MergeProducer { .models(SlerpKernel()) }
}

struct SlerpKernel: ModelKernel {
    /// Above this |cos Ω| the two tensors count as parallel and are interpolated linearly.
    static let parallel = 0.9995
    /// Norms at most this are not divided by (a zero tensor stays zero).
    static let epsilon = 1e-8

    /// One pass over the tensor for ‖v0‖², ‖v1‖² and ⟨v0, v1⟩ (float64), then the two coefficients.
    func combiner(for t: CheckpointTensor, options o: MergeOptions, blocks: (([[Double]]) throws -> Void) throws -> Void) throws -> ModelBlockCombiner {
        var n0 = 0.0, n1 = 0.0, dot = 0.0
        try blocks { m in
            let a = m[0], b = m[1]
            for j in a.indices { n0 += a[j] * a[j]; n1 += b[j] * b[j]; dot += a[j] * b[j] }
        }
        let (s0, s1) = SlerpKernel.coefficients(t: o.slerpT, normSquared0: n0, normSquared1: n1, dot: dot)
        return { m in zip(m[0], m[1]).map { s0 * $0 + s1 * $1 } }
    }

    /// The coefficients (s0, s1) of θ = s0 v0 + s1 v1.
    static func coefficients(t: Double, normSquared0: Double, normSquared1: Double, dot: Double) -> (Double, Double) {
        let a = normSquared0.squareRoot(), b = normSquared1.squareRoot()
        let cosine = dot / ((a > epsilon ? a : 1) * (b > epsilon ? b : 1))
        guard abs(cosine) <= parallel else { return (1 - t, t) }
        let omega = acos(cosine), s = sin(omega)
        return (sin(omega - omega * t) / s, sin(omega * t) / s)
    }
}
