/// Image → patch tokens, timm's `PatchEmbed`: a convolution whose stride equals its kernel, then
/// `flatten(2).transpose(1, 2)`: [B, C, H, W] → [B, N, D], N = (H/p)·(W/p) patches in row-major
/// order. Computed as a Linear layer over non-overlapping patches, so the weight keeps the conv's
/// layout [D, C, p, p] (`patch_embed.proj.weight`) and scoring sees an ordinary token-shared weight.
public final class PatchEmbedding: CompositeLayer, InputGradientOptional {
    public let spec: LayerSpec
    public let proj: Linear
    public let channels: Int, patch: Int, imageSize: Int, width: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var sublayers: [any Layer] { [proj] }
    /// False for the first layer of a model (see InputGradientOptional).
    public var computesInputGradient = true {
        didSet { proj.computesInputGradient = computesInputGradient }
    }

    var grid: Int { imageSize / patch }
    var patchSize: Int { channels * patch * patch }

    /// `bias` false: CLIP's conv1, which has no bias (and no tensor for one).
    init(spec: LayerSpec, prefix: String, channels: Int, patch: Int, imageSize: Int, width: Int, bias: Bool = true, seed: UInt64) {
        self.spec = spec; self.channels = channels; self.patch = patch; self.imageSize = imageSize; self.width = width
        // PyTorch's Conv2d default initialisation (fan_in = C·p·p), which Linear's default equals.
        proj = Linear(spec: .linear(channels * patch * patch, width), prefix: parameterName(prefix, "proj"),
                      inFeatures: channels * patch * patch, outFeatures: width, bias: bias, seed: seed)
        proj.weight.value = proj.weight.value.reshaped([width, channels, patch, patch])
        proj.weight.grad = proj.weight.grad.reshaped([width, channels, patch, patch])
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input == [channels, imageSize, imageSize] else {
            throw EngineError("\(proj.weight.name): expects [\(channels), \(imageSize), \(imageSize)] images, got \(input)")
        }
        return [grid * grid, width]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        return proj.forward(patches(x), mode: mode)
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("PatchEmbedding.backward before forward") }
        lastOutputGradient = gy
        let gp = proj.backward(gy)
        guard computesInputGradient else { return Tensor(zeros: [0]) }
        return images(gp, like: x)
    }

    /// [B, C, H, W] → [B, N, C·p·p]; each row is one patch flattened as (c, kh, kw), the order of
    /// the conv weight's trailing dimensions.
    func patches(_ x: Tensor) -> Tensor {
        let b = x.shape[0], g = grid, p = patch, c = channels, s = imageSize
        return Tensor(shape: [b, g * g, patchSize]) { out in x.data.withUnsafeBufferPointer { src in
            var o = 0
            for n in 0..<b { for gh in 0..<g { for gw in 0..<g { for ch in 0..<c { for kh in 0..<p {
                let from = ((n * c + ch) * s + gh * p + kh) * s + gw * p
                for kw in 0..<p { out[o + kw] = src[from + kw] }
                o += p
            } } } } }
        } }
    }

    /// The adjoint of `patches` (patches do not overlap, so it is a permutation back).
    func images(_ gp: Tensor, like x: Tensor) -> Tensor {
        let b = x.shape[0], g = grid, p = patch, c = channels, s = imageSize
        return Tensor(shape: x.shape) { out in gp.data.withUnsafeBufferPointer { src in
            var o = 0
            for n in 0..<b { for gh in 0..<g { for gw in 0..<g { for ch in 0..<c { for kh in 0..<p {
                let to = ((n * c + ch) * s + gh * p + kh) * s + gw * p
                for kw in 0..<p { out[to + kw] = src[o + kw] }
                o += p
            } } } } }
        } }
    }
}

/// Prepends the class token and adds the learned position embedding, timm's `_pos_embed` with a
/// class token: [B, N, D] → [B, N+1, D]. Parameters `cls_token` [1, 1, D] and `pos_embed`
/// [1, N+1, D] (timm's names when the layer's `name` is empty).
public final class ClassTokenPosition: Layer {
    public let spec: LayerSpec
    public let classToken: Parameter, positions: Parameter
    public let tokens: Int, width: Int
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    public var parameters: [Parameter] { [classToken, positions] }

    init(spec: LayerSpec, prefix: String, patches: Int, width: Int, seed: UInt64) {
        self.spec = spec; self.tokens = patches + 1; self.width = width
        var rng = SplitMix64(seed: seed)
        // timm: cls_token ~ N(0, 1e-6), pos_embed ~ trunc_normal(std 0.02).
        classToken = Parameter(name: parameterName(prefix, "cls_token"), value: Tensor(shape: [1, 1, width]) { v in
            for i in 0..<v.count { v[i] = 1e-6 * rng.normal() } })
        positions = Parameter(name: parameterName(prefix, "pos_embed"), value: Tensor(shape: [1, patches + 1, width]) { v in
            for i in 0..<v.count { v[i] = 0.02 * rng.normal() } })
    }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input == [tokens - 1, width] else {
            throw EngineError("\(positions.name): expects [\(tokens - 1), \(width)] patch tokens per sample, got \(input)")
        }
        return [tokens, width]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let b = x.shape[0], t = tokens, d = width
        let cls = classToken.effective.data, pos = positions.effective.data
        return Tensor(shape: [b, t, d]) { out in x.data.withUnsafeBufferPointer { src in
            for n in 0..<b {
                let o = n * t * d
                for j in 0..<d { out[o + j] = cls[j] + pos[j] }
                let from = n * (t - 1) * d
                for i in 0..<((t - 1) * d) { out[o + d + i] = src[from + i] + pos[d + i] }
            }
        } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        lastOutputGradient = gy
        let b = gy.shape[0], t = tokens, d = width
        if GradientAccumulation.enabled {
            let sc = classToken.forwardScale, sp = positions.forwardScale
            classToken.grad.data.withUnsafeMutableBufferPointer { gc in positions.grad.data.withUnsafeMutableBufferPointer { gpos in
                gy.data.withUnsafeBufferPointer { g in
                    for n in 0..<b {
                        for j in 0..<d { gc[j] += g[n * t * d + j] * (sc?[j] ?? 1) }
                        for i in 0..<(t * d) { gpos[i] += g[n * t * d + i] * (sp?[i] ?? 1) }
                    }
                }
            } }
        }
        return Tensor(shape: [b, t - 1, d]) { out in gy.data.withUnsafeBufferPointer { g in
            for n in 0..<b { for i in 0..<((t - 1) * d) { out[n * (t - 1) * d + i] = g[n * t * d + d + i] } }
        } }
    }
}

extension ClassTokenPosition {
    /// Per-sample squared gradients (see `Layer`): the output gradient per token is the per-sample
    /// gradient of pos_embed (Σ_n δ_n²); token 0's is cls_token's (Σ_n δ_n0²).
    public func addSquaredPerSampleGradients(of p: Parameter, batch b: Int, into local: inout [Float]) throws {
        guard p === classToken || p === positions else { throw notMine(p) }
        let delta = try perSampleData(for: p).outputGradient
        let per = tokens * width
        addingOnce(to: &local) { local in delta.data.withUnsafeBufferPointer { dp in
            for n in 0..<b {
                let count = p === classToken ? width : per
                for j in 0..<count { let v = dp[n * per + j]; local[j] += v * v }
            }
        } }
    }
}

/// Takes the class token's features, timm's `global_pool='token'`: [B, T, D] → [B, D].
public final class ClassTokenPool: ParameterFree {
    public let spec: LayerSpec
    public private(set) var lastInput: Tensor?
    public private(set) var lastOutputGradient: Tensor?
    init(spec: LayerSpec) { self.spec = spec }

    public func outputShape(for input: [Int]) throws -> [Int] {
        guard input.count == 2 else { throw EngineError("class_token_pool: expects [tokens, width] per sample, got \(input)") }
        return [input[1]]
    }

    public func forward(_ x: Tensor, mode: Mode) -> Tensor {
        lastInput = mode.keepsActivations ? x : nil
        let b = x.shape[0], t = x.shape[1], d = x.shape[2]
        return Tensor(shape: [b, d]) { out in x.data.withUnsafeBufferPointer { src in
            for n in 0..<b { for j in 0..<d { out[n * d + j] = src[n * t * d + j] } }
        } }
    }

    public func backward(_ gy: Tensor) -> Tensor {
        guard let x = lastInput else { preconditionFailure("ClassTokenPool.backward before forward") }
        lastOutputGradient = gy
        let b = x.shape[0], t = x.shape[1], d = x.shape[2]
        var g = Tensor(zeros: x.shape)
        g.data.withUnsafeMutableBufferPointer { out in gy.data.withUnsafeBufferPointer { src in
            for n in 0..<b { for j in 0..<d { out[n * t * d + j] = src[n * d + j] } }
        } }
        return g
    }
}
