import LocusFormat

/// A transform of every input image [N, C, H, W] (`invert` also applies to [N, F] features).
public enum InputTransform: Sendable, Equatable, CustomStringConvertible {
    /// Rotate k quarter turns counter-clockwise in the (H, W) plane — `numpy.rot90(x, k, axes=(2, 3))`:
    /// for k = 1, `out[n, c, i, j] = x[n, c, j, W−1−i]` and the shape becomes [N, C, W, H]. k may be
    /// negative (clockwise); it is taken modulo 4.
    case rotate90(Int)
    /// `out = M − x` with M = 1/scale, the top of the raw range: 255 for uint8 data with the default
    /// scale 1/255 (a photographic negative), 1 for float data with scale 1, 255 for uint8 images that
    /// `resize` turned into float32. uint8 data needs M to be a whole number in 1…255 no value exceeds.
    case invert
    /// Bilinear resize to H × W with half-pixel centres — PyTorch's
    /// `interpolate(x, size=(H, W), mode="bilinear", align_corners=False)`, antialias off. For an
    /// output row i the source coordinate is `s = max(0, (i + 0.5) · H_in / H − 0.5)`,
    /// `y0 = floor(s)`, `y1 = min(y0 + 1, H_in − 1)`, `λ = s − y0` (columns likewise with μ), and
    /// `out = (1−λ)·((1−μ)·x[y0,x0] + μ·x[y0,x1]) + λ·((1−μ)·x[y1,x0] + μ·x[y1,x1])`, evaluated in
    /// float64 and stored as float32 (uint8 inputs become float32 so nothing is rounded away; the
    /// scale is kept).
    case resize(height: Int, width: Int)
    /// Mirror left–right: `out[n, c, i, j] = x[n, c, i, W−1−j]` (`numpy.flip(x, axis=3)`).
    case flipHorizontal

    /// Parses `rotate90`, `rotate90=K`, `invert`, `resize=H,W`, `flip-horizontal`.
    public init(parsing text: String) throws(SpecificationError) {
        let parts = text.split(separator: "=", maxSplits: 1).map(String.init)
        let name = parts.first ?? "", arg = parts.count > 1 ? parts[1] : nil
        switch (name, arg) {
        case ("rotate90", nil): self = .rotate90(1)
        case ("rotate90", let a?):
            guard let k = Int(a) else { throw SpecificationError(.transform, text: text, reason: "rotate90=K needs a whole number of quarter turns") }
            self = .rotate90(k)
        case ("invert", nil): self = .invert
        case ("flip-horizontal", nil): self = .flipHorizontal
        case ("resize", let a?):
            let hw = a.split(separator: ",").map { Int($0.trimmingSpaces()) }
            guard hw.count == 2, let h = hw[0], let w = hw[1], h > 0, w > 0, h <= 1 << 16, w <= 1 << 16 else {
                throw SpecificationError(.transform, text: text, reason: "resize=H,W needs two sizes in 1…65536, e.g. resize=28,28")
            }
            self = .resize(height: h, width: w)
        default:
            throw SpecificationError(.transform, text: text, reason: "is not a transform; expected rotate90[=K], invert, resize=H,W or flip-horizontal")
        }
    }

    public var description: String {
        switch self {
        case .rotate90(let k): "rotate90=\(k)"
        case .invert: "invert"
        case .resize(let h, let w): "resize=\(h),\(w)"
        case .flipHorizontal: "flip-horizontal"
        }
    }
}

/// Task derivation: new dataset artifacts from existing ones.
public enum Derive {
    /// Keeps the samples of `classes` (class names, or 0-based class indices when no class has that
    /// name) and relabels them 0, 1, … in the order given; the new classes keep their names. Splits keep
    /// their kept samples (indices renumbered). Normalisation is left as it was (see `recomputeNormalization`).
    public static func subset(_ d: LabelledData, classes: [String], file: String) throws -> LabelledData {
        try d.check(file: file)
        guard !classes.isEmpty else { throw LocusError(file: file, object: "/classes", "a class subset needs at least one class, none was given") }
        var old = [Int]()
        for c in classes {
            if let i = d.classes.firstIndex(of: c) { old.append(i) }
            else if let i = Int(c), i >= 0, i < d.classes.count { old.append(i) }
            else {
                let shown = d.classes.prefix(20).joined(separator: ", ") + (d.classes.count > 20 ? ", …" : "")
                throw LocusError(file: file, object: "/classes", "has no class '\(c)' (classes: \(shown); or use indices 0…\(d.classes.count - 1))")
            }
        }
        guard Set(old).count == old.count else { throw LocusError(file: file, object: "/classes", "the subset names a class twice: \(classes.joined(separator: ","))") }
        var map = [Int64](repeating: -1, count: d.classes.count)
        for (new, o) in old.enumerated() { map[o] = Int64(new) }
        var keep = [Int](), labels = [Int64]()
        var renumber = [Int](repeating: -1, count: d.sampleCount)
        for (i, y) in d.labels.enumerated() where map[Int(y)] >= 0 {
            renumber[i] = keep.count
            keep.append(i); labels.append(map[Int(y)])
        }
        let row = d.shape.dropFirst().reduce(1, *)
        let inputs: LabelledData.Inputs
        switch d.inputs {
        case .uint8(let a): inputs = .uint8(gather(a, keep, row))
        case .float32(let a): inputs = .float32(gather(a, keep, row))
        }
        let splits = d.splits.mapValues { idx in idx.compactMap { renumber[$0] >= 0 ? renumber[$0] : nil } }
        return LabelledData(inputs: inputs, shape: [keep.count] + d.shape.dropFirst(), labels: labels,
                            classes: old.map { d.classes[$0] }, splits: splits, normalization: d.normalization)
    }

    static func gather<T>(_ a: [T], _ rows: [Int], _ row: Int) -> [T] {
        var out = [T]()
        out.reserveCapacity(rows.count * row)
        for i in rows { out.append(contentsOf: a[(i * row)..<((i + 1) * row)]) }
        return out
    }

    /// Applies one transform to every sample.
    public static func apply(_ t: InputTransform, to d: LabelledData, file: String) throws -> LabelledData {
        try d.check(file: file)
        var out = d
        if case .invert = t {
            let m = 1 / d.normalization.scale
            switch d.inputs {
            case .uint8(let a):
                let top = m.rounded()
                guard abs(m - top) <= 1e-6 * top, top >= 1, top <= 255 else {
                    throw LocusError(file: file, object: "/inputs@scale", "invert maps x to 1/scale − x; 1/scale = \(m) is not a whole number in 1…255, so uint8 values cannot be inverted")
                }
                let mi = UInt8(top)
                if let bad = a.firstIndex(where: { $0 > mi }) {
                    throw LocusError(file: file, object: "/inputs", "value \(a[bad]) at element \(bad) exceeds 1/scale = \(mi), the top of the range invert maps x → \(mi) − x over")
                }
                out.inputs = .uint8(a.map { mi - $0 })
            case .float32(let a):
                let mf = Float(m)
                out.inputs = .float32(a.map { mf - $0 })
            }
            return out
        }
        guard d.shape.count == 4 else {
            throw RemediableError(LocusError(file: file, object: "/inputs", "\(t) needs images [N, C, H, W], this dataset has shape \(d.shape)"), .use(setting: "imageShape", purpose: "import CSV features as images C,H,W"))
        }
        let n = d.shape[0], c = d.shape[1], h = d.shape[2], w = d.shape[3]
        switch t {
        case .invert: return out   // handled above
        case .rotate90(let k0):
            let k = ((k0 % 4) + 4) % 4
            if k == 0 { return out }
            let (oh, ow) = k == 2 ? (h, w) : (w, h)
            // Source index of output (i, j) inside one [H, W] plane.
            let src: (Int, Int) -> Int
            switch k {
            case 1: src = { i, j in j * w + (w - 1 - i) }
            case 2: src = { i, j in (h - 1 - i) * w + (w - 1 - j) }
            default: src = { i, j in (h - 1 - j) * w + i }
            }
            var perm = [Int](repeating: 0, count: oh * ow)
            for i in 0..<oh { for j in 0..<ow { perm[i * ow + j] = src(i, j) } }
            out.inputs = remap(d.inputs, planes: n * c, plane: h * w, perm: perm)
            out.shape = [n, c, oh, ow]
        case .flipHorizontal:
            var perm = [Int](repeating: 0, count: h * w)
            for i in 0..<h { for j in 0..<w { perm[i * w + j] = i * w + (w - 1 - j) } }
            out.inputs = remap(d.inputs, planes: n * c, plane: h * w, perm: perm)
        case .resize(let oh, let ow):
            guard h > 0, w > 0 else { throw LocusError(file: file, object: "/inputs", "cannot resize empty \(h)×\(w) images") }
            let (total, overflow) = (n * c).multipliedReportingOverflow(by: oh * ow)
            guard !overflow, total <= 1 << 30 else {
                throw LocusError(file: file, object: "/inputs", "resizing to \(oh)×\(ow) would make \(overflow ? "too many" : "\(total)") values (limit 2^30)")
            }
            let ys = axis(h, oh), xs = axis(w, ow)
            var res = [Float](repeating: 0, count: total)
            func run(_ value: (Int) -> Double) {
                res.withUnsafeMutableBufferPointer { o in
                    for p in 0..<(n * c) {
                        let inBase = p * h * w, outBase = p * oh * ow
                        for i in 0..<oh {
                            let (y0, y1, ly) = ys[i]
                            let r0 = inBase + y0 * w, r1 = inBase + y1 * w
                            for j in 0..<ow {
                                let (x0, x1, lx) = xs[j]
                                let top = (1 - lx) * value(r0 + x0) + lx * value(r0 + x1)
                                let bottom = (1 - lx) * value(r1 + x0) + lx * value(r1 + x1)
                                o[outBase + i * ow + j] = Float((1 - ly) * top + ly * bottom)
                            }
                        }
                    }
                }
            }
            switch d.inputs {
            case .uint8(let a): a.withUnsafeBufferPointer { p in run { Double(p[$0]) } }
            case .float32(let a): a.withUnsafeBufferPointer { p in run { Double(p[$0]) } }
            }
            out.inputs = .float32(res)
            out.shape = [n, c, oh, ow]
        }
        return out
    }

    /// Source taps for each output position along one axis (align_corners=False).
    static func axis(_ input: Int, _ output: Int) -> [(Int, Int, Double)] {
        let ratio = Double(input) / Double(output)
        return (0..<output).map { i in
            let s = max(0, (Double(i) + 0.5) * ratio - 0.5)
            let i0 = min(Int(s.rounded(.down)), input - 1)
            let i1 = min(i0 + 1, input - 1)
            return (i0, i1, s - Double(i0))
        }
    }

    static func remap(_ inputs: LabelledData.Inputs, planes: Int, plane: Int, perm: [Int]) -> LabelledData.Inputs {
        func go<T>(_ a: [T]) -> [T] {
            var out = a
            out.withUnsafeMutableBufferPointer { o in
                a.withUnsafeBufferPointer { s in
                    perm.withUnsafeBufferPointer { pm in
                        for p in 0..<planes {
                            let b = p * plane
                            for q in 0..<pm.count { o[b + q] = s[b + pm[q]] }
                        }
                    }
                }
            }
            return out
        }
        switch inputs {
        case .uint8(let a): return .uint8(go(a))
        case .float32(let a): return .float32(go(a))
        }
    }

    /// Recomputes mean/std on the `train` split (all samples when there is none), keeping the scale.
    public static func recomputeNormalization(_ d: LabelledData) -> LabelledData {
        var out = d
        out.normalization = NormalizationStats.compute(d, scale: d.normalization.scale, samples: NormalizationStats.trainingSamples(d))
        return out
    }

    /// Class subset (when `classes` is given), then the transforms in order, then normalisation
    /// recomputed on the new train split.
    public static func derive(_ d: LabelledData, classes: [String]? = nil, transforms: [InputTransform], file: String) throws -> LabelledData {
        var out = d
        if let classes { out = try subset(out, classes: classes, file: file) }
        for t in transforms { out = try apply(t, to: out, file: file) }
        return recomputeNormalization(out)
    }
}
