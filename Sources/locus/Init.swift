import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a new model checkpoint from a preset or an architecture file.",
        discussion: """
        Presets:
          mlp    flatten → (Linear → ReLU) per --hidden width → head
          lenet  Conv5×5(pad 2) → ReLU → MaxPool2 → Conv5×5 → ReLU → MaxPool2 → flatten → (Linear → ReLU) per --hidden → head
          vit    a vision transformer in timm's VisionTransformer layout:
                 patch embedding (a conv with stride = kernel = --patch-size),
                 class token, learned positions, --depth pre-LayerNorm blocks
                 (--num-heads heads, fused qkv, GELU MLP of --mlp-ratio ×
                 --width), final LayerNorm (eps 1e-6), class-token pooling,
                 head. Square images only. timm's ViT-Ti/16 on 3,224,224:
                 --patch-size 16 --width 192 --depth 12 --num-heads 3.
                 Parameter names are timm's (patch_embed.proj.weight,
                 cls_token, pos_embed, blocks.N.attn.qkv.weight, norm.weight);
                 --head-prefix head names the head head.* as timm does.
                 Initialisation as timm's: Linear N(0, 0.02²) with zero bias,
                 pos_embed N(0, 0.02²), cls_token N(0, 1e-12).
                 CLIP's image tower (open_clip / OpenAI, docs/clip.md):
                 --activation quick_gelu (OpenAI's weights), --no-patch-bias,
                 --norm-pre, --eps 1e-5, --proj-dim E (`proj` [width, E]),
                 --zero-shot (the head is logit_scale.exp() · normalize(f) ·
                 normalize(T)ᵀ, fixed) with --text-embeddings T.npy [C, E].
        Parameters are named like a PyTorch module with `layers = nn.Sequential(...)` and `heads = nn.ModuleDict(...)`
        (`layers.1.weight` [out, in], conv [out, in, k, k], `heads.NAME.weight`), so a checkpoint exported with
        `locus convert` loads into that module with load_state_dict unchanged. Initialisation uses PyTorch's default
        distributions (U(±1/√fan_in) for weights and biases, LayerNorm 1/0) from Locus's own seeded generator.
        --data DATA takes the input shape, class count and class names from a dataset artifact.

        Example: locus init --preset mlp --hidden 256,256 --data digits.h5 --head digits -o mlp.h5
        """)

    @Option(name: .shortAndLong, help: "Output checkpoint (.h5).") var output: String
    @Option(help: "mlp, lenet or vit (ignored with --config).") var preset: String = "mlp"
    @Option(help: "Architecture JSON file (the /architecture format of spec/FORMAT.md §2.1) instead of a preset.") var config: String?
    @Option(help: "A dataset artifact to take input shape, classes and class names from.") var data: String?
    @Option(help: "Per-sample input shape, e.g. 1,28,28.") var input: IntList?
    @Option(help: "Number of classes of the first head.") var classes: Int?
    @Option(help: "Name of the first head.") var head: String = "default"
    @Option(help: "Hidden widths of the MLP / of LeNet's dense part.") var hidden: IntList?
    @Option(help: "LeNet's two conv widths.") var channels: IntList = IntList([6, 16])
    @Option(help: "ViT: patch size (the image size must be a multiple).") var patchSize: Int = 16
    @Option(help: "ViT: embedding width.") var width: Int = 192
    @Option(help: "ViT: number of transformer blocks.") var depth: Int = 12
    @Option(help: "ViT: attention heads per block (must divide --width).") var numHeads: Int = 3
    @Option(help: "ViT: MLP hidden width as a multiple of --width.") var mlpRatio: Double = 4
    @Option(help: "Parameter-name prefix of the first head (default heads.NAME; timm uses 'head').") var headPrefix: String?
    @Option(help: "ViT: the MLP activation, gelu (exact) or quick_gelu (OpenAI CLIP).") var activation: String = "gelu"
    @Flag(help: "ViT: a patch embedding without bias (CLIP's conv1).") var noPatchBias = false
    @Flag(help: "ViT: a LayerNorm `norm_pre` before the blocks (CLIP's ln_pre).") var normPre = false
    @Option(help: "ViT: LayerNorm eps of the blocks and norms (timm 1e-6, CLIP 1e-5).") var eps: Double = 1e-6
    @Option(help: "ViT: project the pooled features to this width with `proj` (CLIP).") var projDim: Int?
    @Flag(help: "The first head is a fixed zero-shot head (CLIP; docs/clip.md).") var zeroShot = false
    @Option(help: "Class text embeddings [classes, width] (.npy) for the zero-shot head --head.") var textEmbeddings: String?
    @Option(help: "Zero-shot head: the logit scale s (stored as ln s, as open_clip's logit_scale).") var logitScale: Double = 100
    @Option(help: "Seed of the initialisation.") var seed: UInt64 = 0
    @OptionGroup var verification: VerifyOptions

    func validate() throws {
        guard LayerSpec.knownActivations.contains(activation) else {
            throw ValidationError("--activation must be one of \(LayerSpec.knownActivations.joined(separator: ", ")), got '\(activation)'")
        }
        guard eps > 0, eps.isFinite else { throw ValidationError("--eps must be > 0") }
        if let projDim, projDim < 1 { throw ValidationError("--proj-dim must be ≥ 1") }
        guard logitScale > 0, logitScale.isFinite else { throw ValidationError("--logit-scale must be > 0") }
        if config != nil, zeroShot { throw ValidationError("--zero-shot: with --config, give the head \"type\": \"zero_shot\" in the file") }
        if preset != "vit", config == nil, activation != "gelu" || noPatchBias || normPre || projDim != nil || eps != 1e-6 {
            throw ValidationError("--activation, --no-patch-bias, --norm-pre, --eps and --proj-dim apply to --preset vit")
        }
    }

    func run() throws {
        try reportingErrors(verification) {
            try protectInputs()
            let text = try textEmbeddings.map { try NumPy.readMatrix($0) }
            var inputShape = input?.values, classCount = classes
            var classNames: [String]?
            if let data {
                let d = try DatasetArtifact.read(data)
                inputShape = inputShape ?? Array(d.shape.dropFirst())
                classCount = classCount ?? d.classes.count
                classNames = d.classes.count == classCount ? d.classes : nil
            }
            if let text, let textEmbeddings {
                if let c = classCount, c != text.rows {
                    throw LocusError(file: textEmbeddings, "holds \(text.rows) class embeddings, the head has \(c) classes")
                }
                classCount = text.rows
            }
            var arch: Architecture
            if let config {
                arch = try loadArchitecture(config)
            } else {
                guard let inputShape else { throw LocusError(file: output, "give --input (e.g. 1,28,28) or --data") }
                guard let classCount else { throw LocusError(file: output, "give --classes or --data") }
                arch = try engine(file: output) {
                    switch preset {
                    case "mlp": return Architecture.mlp(input: inputShape, hidden: hidden?.values ?? [256, 256], classes: classCount, head: head, classNames: classNames)
                    case "lenet": return try Architecture.lenet(input: inputShape, channels: channels.values, hidden: hidden?.values ?? [120, 84],
                                                                classes: classCount, head: head, classNames: classNames)
                    case "vit":
                        guard inputShape.count == 3, inputShape[1] == inputShape[2] else {
                            throw EngineError("vit needs square images [C, S, S], got \(inputShape)")
                        }
                        var variant = Architecture.ViTVariant()
                        variant.activation = activation == "gelu" ? nil : activation
                        variant.patchBias = !noPatchBias; variant.normPre = normPre; variant.eps = eps
                        variant.projection = projDim; variant.zeroShot = zeroShot || textEmbeddings != nil
                        return try Architecture.vit(imageSize: inputShape[1], patch: patchSize, channels: inputShape[0], width: width, depth: depth,
                                                    heads: numHeads, mlpRatio: mlpRatio, classes: classCount, head: head, classNames: classNames,
                                                    headPrefix: headPrefix, variant: variant)
                    default: throw EngineError("unknown preset '\(preset)' (mlp, lenet, vit)")
                    }
                }
                if zeroShot || textEmbeddings != nil, preset != "vit" {
                    for i in arch.heads.indices { arch.heads[i].type = "zero_shot" }
                }
            }
            let model = try engine(file: output) { try Model(arch, seed: seed) }
            if textEmbeddings != nil { _ = try engine(file: output) { try model.head(head) } }   // a clear error for a missing head
            if let zs = model.heads[head] as? ZeroShotHead {
                zs.logitScale.value.data = [Float(Foundation.log(logitScale))]
                if let text, let textEmbeddings {
                    guard text.columns == zs.inFeatures else {
                        throw LocusError(file: textEmbeddings, "holds embeddings of width \(text.columns), the model's features have width \(zs.inFeatures)")
                    }
                    zs.textEmbeddings.value.data = text.values
                }
            } else if let textEmbeddings {
                throw LocusError(file: textEmbeddings, "the head '\(head)' is not a zero-shot head (give --zero-shot, or a config whose head has \"type\": \"zero_shot\")")
            }
            let inputs: [Provenance.Input] = (data.map { [.init(role: "data", path: $0, fingerprint: nil)] } ?? [])
                + (textEmbeddings.map { [.init(role: "text-embeddings", path: $0, fingerprint: nil)] } ?? [])
            let fp = try model.save(output, provenance: provenance(inputs: inputs,
                                                                   parameters: ["seed": .integer(Int64(seed)), "preset": .string(arch.preset ?? "config")]))
            let n = model.parameters.reduce(0) { $0 + $1.value.count }
            print("\(output): \(arch.preset ?? "custom") model, \(n) parameters, heads: \(model.headNames.joined(separator: ", ")), \(fp)")
        }
    }
}
