import Foundation
import LocusFormat

/// A model description stored in a checkpoint's `/architecture` (spec §2.1): a sequential body
/// plus named linear classification heads on its output, one per task.
public struct Architecture: Codable, Equatable, Sendable {
    public struct Head: Codable, Equatable, Sendable {
        public var name: String
        public var inFeatures: Int
        public var outFeatures: Int
        /// Class names, when known (from the dataset the head was made for).
        public var classes: [String]?
        /// Parameter-name prefix; absent: `heads.{name}`. timm's single classifier is `head`.
        public var prefix: String?
        /// `linear` (absent: the default) or `zero_shot` (CLIP's fixed text-embedding classifier, see ZeroShotHead).
        public var type: String?
        public init(name: String, inFeatures: Int, outFeatures: Int, classes: [String]? = nil, prefix: String? = nil, type: String? = nil) {
            self.name = name; self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.classes = classes; self.prefix = prefix
            self.type = type
        }
        enum CodingKeys: String, CodingKey {
            case name, inFeatures = "in_features", outFeatures = "out_features", classes, prefix, type
        }
        public var parameterPrefix: String { prefix ?? "heads.\(name)" }
        public static let knownTypes = ["linear", "zero_shot"]
        public var isZeroShot: Bool { type == "zero_shot" }
        /// The names of the head's tensors.
        public var parameterNames: [String] {
            isZeroShot ? ["\(parameterPrefix).text_embeddings", "\(parameterPrefix).logit_scale"]
                       : ["\(parameterPrefix).weight", "\(parameterPrefix).bias"]
        }
    }

    public var format = "locus-sequential"
    public var version = 1

    enum CodingKeys: String, CodingKey { case format, version, input, preset, layers, heads }

    /// `format` and `version` may be left out of hand-written descriptions; they default to the current ones.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decodeIfPresent(String.self, forKey: .format) ?? "locus-sequential"
        version = try c.decodeIfPresent(Int.self, forKey: .version) ?? 1
        input = try c.decode([Int].self, forKey: .input)
        preset = try c.decodeIfPresent(String.self, forKey: .preset)
        layers = try c.decode([LayerSpec].self, forKey: .layers)
        heads = try c.decodeIfPresent([Head].self, forKey: .heads) ?? []
    }
    /// Per-sample input shape, e.g. [1, 28, 28] or [784].
    public var input: [Int]
    /// The preset the body came from, if any (informational).
    public var preset: String?
    public var layers: [LayerSpec]
    public var heads: [Head]

    public init(input: [Int], preset: String? = nil, layers: [LayerSpec], heads: [Head]) {
        self.input = input; self.preset = preset; self.layers = layers; self.heads = heads
    }

    /// An MLP: flatten, then Linear + ReLU per hidden width.
    public static func mlp(input: [Int], hidden: [Int], classes: Int, head: String = "default", classNames: [String]? = nil) -> Architecture {
        var layers: [LayerSpec] = [.flatten]
        var width = input.reduce(1, *)
        for h in hidden { layers += [.linear(width, h), .relu]; width = h }
        return Architecture(input: input, preset: "mlp", layers: layers,
                            heads: [Head(name: head, inFeatures: width, outFeatures: classes, classes: classNames)])
    }

    /// A LeNet-style CNN: two 5×5 conv + ReLU + 2×2 max-pool stages (the first padded to keep the
    /// size), then a hidden Linear + ReLU. `channels` and `hidden` set the widths.
    public static func lenet(input: [Int], channels: [Int] = [6, 16], hidden: [Int] = [120, 84], classes: Int,
                             head: String = "default", classNames: [String]? = nil) throws -> Architecture {
        guard input.count == 3 else { throw EngineError("lenet needs an image input [C, H, W], got \(input)") }
        guard channels.count == 2 else { throw EngineError("lenet needs two conv widths, got \(channels)") }
        var layers: [LayerSpec] = [.conv2d(input[0], channels[0], kernel: 5, padding: 2), .relu, .maxPool2d(2),
                                   .conv2d(channels[0], channels[1], kernel: 5), .relu, .maxPool2d(2), .flatten]
        let arch0 = Architecture(input: input, layers: layers, heads: [])
        var width = try arch0.featureShape().reduce(1, *)
        for h in hidden { layers += [.linear(width, h), .relu]; width = h }
        return Architecture(input: input, preset: "lenet", layers: layers,
                            heads: [Head(name: head, inFeatures: width, outFeatures: classes, classes: classNames)])
    }

    /// The parts in which open_clip's / OpenAI CLIP's image tower differs from timm's ViT; the
    /// default is timm's. CLIP: `activation` "quick_gelu" (OpenAI's weights), `patchBias` false,
    /// `normPre` true (`ln_pre`), `eps` 1e-5, `projection` E (`proj` [D, E]), `zeroShot` true.
    public struct ViTVariant: Sendable {
        public var activation: String? = nil
        public var patchBias = true
        public var normPre = false
        public var eps = 1e-6
        public var projection: Int? = nil
        public var zeroShot = false
        public init() {}
    }

    /// A vision transformer in timm's VisionTransformer layout (class token, learned positions,
    /// pre-LayerNorm blocks, final norm, class-token pooling). Parameter names are timm's
    /// (`patch_embed.proj.weight`, `cls_token`, `pos_embed`, `blocks.N.*`, `norm.*`); heads are
    /// `heads.NAME.*` unless `headPrefix` is given (timm's `head`). `variant` adds CLIP's pieces:
    /// `norm_pre` after the positions, `proj` after the pooling, a zero-shot head (docs/clip.md).
    public static func vit(imageSize: Int, patch: Int, channels: Int, width: Int, depth: Int, heads numHeads: Int, mlpRatio: Double = 4,
                           classes: Int, head: String = "default", classNames: [String]? = nil, headPrefix: String? = nil,
                           variant: ViTVariant = ViTVariant()) throws -> Architecture {
        guard imageSize >= 1, patch >= 1, imageSize % patch == 0 else {
            throw EngineError("vit: image size \(imageSize) must be a positive multiple of the patch size \(patch)")
        }
        guard depth >= 1 else { throw EngineError("vit: depth must be ≥ 1") }
        let patches = (imageSize / patch) * (imageSize / patch)
        if let e = variant.projection { guard e >= 1 else { throw EngineError("vit: the projection width must be ≥ 1, got \(e)") } }
        guard variant.eps > 0, variant.eps.isFinite else { throw EngineError("vit: LayerNorm eps must be > 0, got \(variant.eps)") }
        var norm = LayerSpec.layerNorm(width, eps: variant.eps); norm.name = "norm"
        var normPre = LayerSpec.layerNorm(width, eps: variant.eps); normPre.name = "norm_pre"
        let layers: [LayerSpec] = [.patchEmbed(imageSize: imageSize, patch: patch, channels: channels, width: width, bias: variant.patchBias),
                                   .classTokenPosition(patches: patches, width: width)]
            + (variant.normPre ? [normPre] : [])
            + (0..<depth).map { LayerSpec.transformerBlock($0, width: width, heads: numHeads, mlpRatio: mlpRatio, eps: variant.eps,
                                                           activation: variant.activation) }
            + [norm, .classTokenPool]
            + (variant.projection.map { [LayerSpec.projection(width, $0)] } ?? [])
        return Architecture(input: [channels, imageSize, imageSize], preset: "vit", layers: layers,
                            heads: [Head(name: head, inFeatures: variant.projection ?? width, outFeatures: classes, classes: classNames,
                                         prefix: headPrefix, type: variant.zeroShot ? "zero_shot" : nil)])
    }

    /// The description as stored in /architecture (keys sorted, so equal descriptions are equal text).
    public func json() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }

    /// The parameter-name prefix of body layer `i`.
    public func prefix(ofLayer i: Int) -> String { layers[i].name ?? "layers.\(i)" }

    /// Per-sample shape the body produces; throws with the offending layer on any mismatch.
    public func featureShape() throws -> [Int] {
        try checkedBody().features
    }

    /// Builds the body once (seed 0) to chain shapes and collect parameter names.
    func checkedBody() throws -> (features: [Int], names: [String]) {
        var shape = input
        var names: [String] = []
        for (i, spec) in layers.enumerated() {
            do {
                let layer = try spec.build(prefix: prefix(ofLayer: i), seed: 0)
                names += layer.parameters.map(\.name)
                shape = try layer.outputShape(for: shape)
            } catch let e as EngineError {
                throw EngineError("architecture: layer \(i) (\(spec.type)): \(e.description)")
            }
        }
        return (shape, names)
    }

    /// Checks the whole description: known layers, shapes that chain, heads that fit the features.
    public func validate() throws {
        guard format == "locus-sequential", version == 1 else {
            throw EngineError("architecture: unknown format \(format) version \(version) (expected locus-sequential 1)")
        }
        guard !input.isEmpty, input.allSatisfy({ $0 > 0 }) else { throw EngineError("architecture: input shape \(input) is invalid") }
        let (features, bodyNames) = try checkedBody()
        var seen = Set<String>()
        for h in heads {
            guard Architecture.isValidHeadName(h.name) else {
                throw EngineError("architecture: head name '\(h.name)' must be letters, digits, '_' or '-'")
            }
            guard seen.insert(h.name).inserted else { throw EngineError("architecture: duplicate head '\(h.name)'") }
            guard features == [h.inFeatures] else {
                throw EngineError("architecture: head '\(h.name)' takes \(h.inFeatures) features but the body gives \(features)")
            }
            guard h.outFeatures >= 1 else { throw EngineError("architecture: head '\(h.name)' has no classes") }
            if let t = h.type, !Head.knownTypes.contains(t) {
                throw EngineError("architecture: head '\(h.name)' has unknown type '\(t)' (known: \(Head.knownTypes.joined(separator: ", ")))")
            }
            if let c = h.classes, c.count != h.outFeatures {
                throw EngineError("architecture: head '\(h.name)' names \(c.count) classes for \(h.outFeatures) outputs")
            }
        }
        var names = Set<String>()
        for n in bodyNames + heads.flatMap(\.parameterNames) {
            if let problem = TensorName.problem(with: n) { throw EngineError("architecture: parameter name '\(n)': \(problem)") }
            guard names.insert(n).inserted else { throw EngineError("architecture: two parameters are named '\(n)' (check the layers' and heads' names)") }
        }
    }

    public static func isValidHeadName(_ s: String) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }
    }
}
