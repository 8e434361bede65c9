import LocusFormat

/// Per-channel normalisation computed from data (spec §6 `/inputs` attributes `scale`, `mean`, `std`).
public enum NormalizationStats {
    /// The scale a dataset gets when none is asked for: 1/255 for uint8 (pixels), 1 for float32.
    public static func defaultScale(for inputs: LabelledData.Inputs) -> Double {
        if case .uint8 = inputs { return 1.0 / 255.0 }
        return 1
    }

    /// `mean[c]` and `std[c]` of `raw · scale` over channel c (axis 1: the C of [N, C, H, W], or each
    /// feature of [N, F]) of the samples in `samples` (all samples when nil), in float64 with the
    /// population formula std = sqrt(mean((v − mean)²)) — numpy's `x.mean(axis)`, `x.std(axis)`.
    /// A channel that is constant (std 0), or a set with no samples, gets std 1 so the stored
    /// normalisation stays valid (spec: std > 0).
    public static func compute(_ data: LabelledData, scale: Double, samples: [Int]? = nil) -> Normalization {
        let shape = data.shape
        guard shape.count >= 2 else { return Normalization(scale: scale) }
        let k = shape[1], inner = shape.dropFirst(2).reduce(1, *)
        let rows = samples ?? Array(0..<data.sampleCount)
        let perChannel = Double(rows.count) * Double(inner)
        guard k > 0, perChannel > 0 else {
            return Normalization(scale: scale, mean: Array(repeating: 0, count: max(1, k)), std: Array(repeating: 1, count: max(1, k)))
        }
        var mean = [Double](repeating: 0, count: k), variance = [Double](repeating: 0, count: k)
        switch data.inputs {
        case .uint8(let a):
            // One pass into a histogram per channel, then exact sums from it.
            var hist = [Int](repeating: 0, count: k * 256)
            a.withUnsafeBufferPointer { p in
                hist.withUnsafeMutableBufferPointer { h in
                    for i in rows {
                        for c in 0..<k {
                            let base = (i * k + c) * inner, hb = c * 256
                            for j in 0..<inner { h[hb + Int(p[base + j])] += 1 }
                        }
                    }
                }
            }
            for c in 0..<k {
                var s = 0.0
                for v in 0..<256 { s += Double(hist[c * 256 + v]) * Double(v) }
                let m = s / perChannel
                var q = 0.0
                for v in 0..<256 where hist[c * 256 + v] > 0 { let d = Double(v) - m; q += Double(hist[c * 256 + v]) * d * d }
                mean[c] = m; variance[c] = q / perChannel
            }
        case .float32(let a):
            a.withUnsafeBufferPointer { p in
                for c in 0..<k {
                    var s = 0.0
                    for i in rows { let base = (i * k + c) * inner; for j in 0..<inner { s += Double(p[base + j]) } }
                    let m = s / perChannel
                    var q = 0.0
                    for i in rows { let base = (i * k + c) * inner; for j in 0..<inner { let d = Double(p[base + j]) - m; q += d * d } }
                    mean[c] = m; variance[c] = q / perChannel
                }
            }
        }
        let std = variance.map { v -> Double in let s = v.squareRoot() * scale; return s > 0 && s.isFinite ? s : 1 }
        return Normalization(scale: scale, mean: mean.map { $0 * scale }, std: std)
    }

    /// The samples normalisation is computed on: the `train` split when there is one, else all.
    public static func trainingSamples(_ data: LabelledData) -> [Int]? { data.splits["train"] }
}
