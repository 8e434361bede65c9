/// One entry of a model description, named after the PyTorch module and its arguments
/// (`{"type": "linear", "in_features": 784, "out_features": 256}`), so the same JSON reads as the
/// `torch.nn.Sequential` it describes.
public struct LayerSpec: Codable, Equatable, Sendable {
    public var type: String
    public var inFeatures: Int?
    public var outFeatures: Int?
    public var inChannels: Int?
    public var outChannels: Int?
    public var kernelSize: Int?
    public var stride: Int?
    public var padding: Int?
    public var bias: Bool?
    public var normalizedShape: Int?
    public var eps: Double?
    public var p: Double?
    /// Parameter-name prefix (`blocks.3`, `patch_embed`, `norm`; "" for top-level names such as
    /// timm's `cls_token`). Absent: `layers.{i}`.
    public var name: String?
    // Vision-transformer arguments, named as timm's.
    public var imgSize: Int?
    public var patchSize: Int?
    public var inChans: Int?
    public var embedDim: Int?
    public var numPatches: Int?
    public var numHeads: Int?
    public var mlpRatio: Double?
    public var qkvBias: Bool?
    /// The MLP activation of a `vit_block`: `gelu` (exact, the default) or `quick_gelu` (OpenAI CLIP).
    public var actLayer: String?

    /// The JSON keys are PyTorch's / timm's argument names.
    enum CodingKeys: String, CodingKey {
        case type, inFeatures = "in_features", outFeatures = "out_features", inChannels = "in_channels"
        case outChannels = "out_channels", kernelSize = "kernel_size", stride, padding, bias
        case normalizedShape = "normalized_shape", eps, p, name, imgSize = "img_size", patchSize = "patch_size"
        case inChans = "in_chans", embedDim = "embed_dim", numPatches = "num_patches", numHeads = "num_heads"
        case mlpRatio = "mlp_ratio", qkvBias = "qkv_bias", actLayer = "act_layer"
    }

    public init(type: String) { self.type = type }

    public static func linear(_ i: Int, _ o: Int, bias: Bool = true) -> LayerSpec {
        var s = LayerSpec(type: "linear"); s.inFeatures = i; s.outFeatures = o; s.bias = bias; return s
    }
    public static func conv2d(_ i: Int, _ o: Int, kernel: Int, stride: Int = 1, padding: Int = 0, bias: Bool = true) -> LayerSpec {
        var s = LayerSpec(type: "conv2d"); s.inChannels = i; s.outChannels = o; s.kernelSize = kernel
        s.stride = stride; s.padding = padding; s.bias = bias; return s
    }
    public static func maxPool2d(_ k: Int, stride: Int? = nil) -> LayerSpec { var s = LayerSpec(type: "maxpool2d"); s.kernelSize = k; s.stride = stride ?? k; return s }
    public static func avgPool2d(_ k: Int, stride: Int? = nil) -> LayerSpec { var s = LayerSpec(type: "avgpool2d"); s.kernelSize = k; s.stride = stride ?? k; return s }
    public static func layerNorm(_ n: Int, eps: Double = 1e-5) -> LayerSpec { var s = LayerSpec(type: "layernorm"); s.normalizedShape = n; s.eps = eps; return s }
    public static func dropout(_ p: Double) -> LayerSpec { var s = LayerSpec(type: "dropout"); s.p = p; return s }
    public static let relu = LayerSpec(type: "relu")
    public static let gelu = LayerSpec(type: "gelu")
    public static let quickGelu = LayerSpec(type: "quick_gelu")
    public static let flatten = LayerSpec(type: "flatten")

    /// `bias: false` is CLIP's conv1 (no `proj.bias` tensor); the default leaves `bias` out (true).
    public static func patchEmbed(imageSize: Int, patch: Int, channels: Int, width: Int, bias: Bool = true) -> LayerSpec {
        var s = LayerSpec(type: "patch_embed"); s.name = "patch_embed"; s.imgSize = imageSize; s.patchSize = patch
        s.inChans = channels; s.embedDim = width; s.bias = bias ? nil : false; return s
    }
    public static func classTokenPosition(patches: Int, width: Int) -> LayerSpec {
        var s = LayerSpec(type: "class_token_position"); s.name = ""; s.numPatches = patches; s.embedDim = width; return s
    }
    /// `activation` nil: exact GELU (the key is then left out, as before it existed).
    public static func transformerBlock(_ i: Int, width: Int, heads: Int, mlpRatio: Double = 4, qkvBias: Bool = true, eps: Double = 1e-6,
                                        activation: String? = nil) -> LayerSpec {
        var s = LayerSpec(type: "vit_block"); s.name = "blocks.\(i)"; s.embedDim = width; s.numHeads = heads
        s.mlpRatio = mlpRatio; s.qkvBias = qkvBias; s.eps = eps; s.actLayer = activation; return s
    }
    /// open_clip's output projection `x @ proj` ([D] → [E], no bias), parameter `{name}proj` [D, E].
    public static func projection(_ i: Int, _ o: Int, name: String = "") -> LayerSpec {
        var s = LayerSpec(type: "projection"); s.name = name; s.inFeatures = i; s.outFeatures = o; return s
    }
    public static let classTokenPool = LayerSpec(type: "class_token_pool")

    public static let knownTypes = ["linear", "conv2d", "relu", "gelu", "quick_gelu", "maxpool2d", "avgpool2d", "flatten", "layernorm", "dropout",
                                    "patch_embed", "class_token_position", "vit_block", "class_token_pool", "projection"]
    /// Values of `act_layer`.
    public static let knownActivations = ["gelu", "quick_gelu"]

    func require(_ v: Int?, _ field: String, min: Int = 1) throws -> Int {
        guard let v else { throw EngineError("layer '\(type)' needs '\(field)'") }
        guard v >= min else { throw EngineError("layer '\(type)': '\(field)' is \(v), expected ≥ \(min)") }
        return v
    }

    /// Builds the layer; `prefix` names its parameters (`layers.3`), `seed` initialises them
    /// like PyTorch's defaults (same distributions, our own generator).
    public func build(prefix: String, seed: UInt64) throws -> any Layer {
        switch type {
        case "linear":
            return Linear(spec: self, prefix: prefix, inFeatures: try require(inFeatures, "in_features"),
                          outFeatures: try require(outFeatures, "out_features"), bias: bias ?? true, seed: seed)
        case "conv2d":
            return Conv2d(spec: self, prefix: prefix, inChannels: try require(inChannels, "in_channels"),
                          outChannels: try require(outChannels, "out_channels"), kernel: try require(kernelSize, "kernel_size"),
                          stride: try require(stride ?? 1, "stride"), padding: try require(padding ?? 0, "padding", min: 0),
                          bias: bias ?? true, seed: seed)
        case "relu": return ReLU(spec: self)
        case "gelu": return GELU(spec: self)
        case "quick_gelu": return QuickGELU(spec: self)
        case "flatten": return Flatten(spec: self)
        case "maxpool2d", "avgpool2d":
            let k = try require(kernelSize, "kernel_size")
            return Pool2d(spec: self, max: type == "maxpool2d", kernel: k, stride: try require(stride ?? k, "stride"))
        case "layernorm":
            return LayerNorm(spec: self, prefix: prefix, features: try require(normalizedShape, "normalized_shape"), eps: Float(eps ?? 1e-5))
        case "dropout":
            let p = self.p ?? 0.5
            guard p >= 0, p < 1 else { throw EngineError("dropout: p is \(p), expected 0 ≤ p < 1") }
            return Dropout(spec: self, p: Float(p), seed: seed)
        case "patch_embed":
            let size = try require(imgSize, "img_size"), patch = try require(patchSize, "patch_size")
            guard size % patch == 0 else { throw EngineError("patch_embed: img_size \(size) is not a multiple of patch_size \(patch)") }
            return PatchEmbedding(spec: self, prefix: prefix, channels: try require(inChans, "in_chans"), patch: patch, imageSize: size,
                                  width: try require(embedDim, "embed_dim"), bias: bias ?? true, seed: seed)
        case "class_token_position":
            return ClassTokenPosition(spec: self, prefix: prefix, patches: try require(numPatches, "num_patches"),
                                      width: try require(embedDim, "embed_dim"), seed: seed)
        case "vit_block":
            let d = try require(embedDim, "embed_dim"), h = try require(numHeads, "num_heads")
            guard d % h == 0 else { throw EngineError("vit_block: embed_dim \(d) is not a multiple of num_heads \(h)") }
            let ratio = mlpRatio ?? 4
            guard ratio > 0, ratio.isFinite, Int(Double(d) * ratio) >= 1 else { throw EngineError("vit_block: mlp_ratio \(ratio) must be > 0") }
            let activation = actLayer ?? "gelu"
            guard LayerSpec.knownActivations.contains(activation) else {
                throw EngineError("vit_block: act_layer '\(activation)' is unknown (known: \(LayerSpec.knownActivations.joined(separator: ", ")))")
            }
            return TransformerBlock(spec: self, prefix: prefix, width: d, heads: h, hidden: Int(Double(d) * ratio), qkvBias: qkvBias ?? true,
                                    eps: Float(eps ?? 1e-6), quickGelu: activation == "quick_gelu", seed: seed)
        case "projection":
            return Projection(spec: self, prefix: prefix, inFeatures: try require(inFeatures, "in_features"),
                              outFeatures: try require(outFeatures, "out_features"), seed: seed)
        case "class_token_pool":
            return ClassTokenPool(spec: self)
        default:
            throw EngineError("unknown layer type '\(type)' (known: \(LayerSpec.knownTypes.joined(separator: ", ")))")
        }
    }
}
