import ArgumentParser
import Foundation
import LocusFormat
import LocusEngine
import LocusWorkflows

struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Create a new model checkpoint from a preset or an architecture file.",
        discussion: """
        Presets:
          mlp    flatten → (Linear → ReLU) per --hidden width → head
          lenet  Conv5×5(pad 2) → ReLU → MaxPool2 → Conv5×5 → ReLU → MaxPool2 →
                 flatten → (Linear → ReLU) per --hidden → head
          vit    timm's VisionTransformer (docs/vit.md): patch embedding, class token,
                 positions, --depth pre-LayerNorm blocks, final LayerNorm, class-token
                 pooling, head; timm's names and initialisation. ViT-Ti/16 on
                 3,224,224: --patch-size 16 --width 192 --depth 12 --num-heads 3.
                 CLIP's image tower (docs/clip.md): --activation quick_gelu
                 --no-patch-bias --norm-pre --eps 1e-5 --proj-dim E, and --zero-shot
                 --text-embeddings T.npy for its fixed zero-shot head.

        Parameters are named like a PyTorch module with `layers = nn.Sequential(...)` and `heads = \
        nn.ModuleDict(...)`, so a checkpoint exported with `locus convert` loads into it with \
        load_state_dict unchanged. Initialisation follows PyTorch's defaults (U(±1/√fan_in) for weights \
        and biases, LayerNorm 1 and 0), drawn from Locus's seeded generator. --data takes the input shape and classes from a dataset artifact.

        Example: locus init --preset mlp --hidden 256,256 --data digits.h5 -o mlp.h5
        """)

    @Option(name: .shortAndLong, help: "Output checkpoint (.h5).") var output: String
    @Option(help: "mlp, lenet or vit (not with --config).") var preset: String = "mlp"
    @Option(help: ArgumentHelp("Architecture JSON (spec/FORMAT.md §2.1), not a preset.", valueName: "file")) var config: String?
    @Option(help: ArgumentHelp("Dataset artifact: input shape, classes, class names.", valueName: "file")) var data: String?
    @Option(help: ArgumentHelp("Per-sample input shape, e.g. 1,28,28.", valueName: "shape")) var input: IntList?
    @Option(help: ArgumentHelp("Number of classes of the first head.", valueName: "n")) var classes: Int?
    @Option(help: "Name of the first head.") var head: String = "default"
    @Option(help: ArgumentHelp("Hidden widths of the MLP / LeNet's dense part.", valueName: "widths")) var hidden: IntList?
    @Option(help: ArgumentHelp("LeNet's two conv widths.", valueName: "c1,c2")) var channels: IntList = IntList([6, 16])
    @Option(help: ArgumentHelp("ViT: patch size.", valueName: "p")) var patchSize: Int = 16
    @Option(help: ArgumentHelp("ViT: embedding width.", valueName: "d")) var width: Int = 192
    @Option(help: ArgumentHelp("ViT: number of transformer blocks.", valueName: "n")) var depth: Int = 12
    @Option(help: ArgumentHelp("ViT: attention heads (divide --width).", valueName: "h")) var numHeads: Int = 3
    @Option(help: ArgumentHelp("ViT: MLP width ÷ --width.", valueName: "r")) var mlpRatio: Double = 4
    @Option(help: ArgumentHelp("First head's prefix (default heads.NAME; timm: head).", valueName: "prefix")) var headPrefix: String?
    @Option(help: ArgumentHelp("ViT: gelu or quick_gelu (CLIP).", valueName: "act")) var activation: String = "gelu"
    @Flag(help: "ViT: a patch embedding without bias (CLIP's conv1).") var noPatchBias = false
    @Flag(help: "ViT: a LayerNorm `norm_pre` first (CLIP's ln_pre).") var normPre = false
    @Option(help: "ViT: LayerNorm eps (CLIP: 1e-5).") var eps: Double = 1e-6
    @Option(help: ArgumentHelp("ViT: width of CLIP's output projection `proj`.", valueName: "e")) var projDim: Int?
    @Flag(help: "The first head is CLIP's fixed zero-shot head.") var zeroShot = false
    @Option(help: ArgumentHelp("Zero-shot head: text embeddings [C, E] (.npy).", valueName: "npy")) var textEmbeddings: String?
    @Option(help: ArgumentHelp("Zero-shot head's logit scale.", valueName: "s")) var logitScale: Double = 100
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
        if config == nil {
            guard ["mlp", "lenet", "vit"].contains(preset) else { throw ValidationError("\(output): unknown preset '\(preset)' (mlp, lenet, vit)") }
            guard input != nil || data != nil else { throw ValidationError("\(output): give --input (e.g. 1,28,28) or --data") }
            guard classes != nil || data != nil || textEmbeddings != nil else { throw ValidationError("\(output): give --classes or --data") }
        }
        if preset != "vit", config == nil, activation != "gelu" || noPatchBias || normPre || projDim != nil || eps != 1e-6 {
            throw ValidationError("--activation, --no-patch-bias, --norm-pre, --eps and --proj-dim apply to --preset vit")
        }
    }

    func run() throws {
        try verification.scoped {
            try protectInputs()
            var r = InitRequest(output: output)
            r.preset = preset; r.config = config; r.data = data; r.input = input?.values; r.classes = classes; r.head = head
            r.hidden = hidden?.values; r.channels = channels.values; r.patchSize = patchSize; r.width = width; r.depth = depth
            r.numHeads = numHeads; r.mlpRatio = mlpRatio; r.headPrefix = headPrefix
            r.variant.activation = activation == "gelu" ? nil : activation
            r.variant.patchBias = !noPatchBias; r.variant.normPre = normPre; r.variant.eps = eps; r.variant.projection = projDim
            r.zeroShot = zeroShot; r.textEmbeddings = textEmbeddings; r.logitScale = logitScale; r.seed = seed
            r.command = ["locus"] + Array(CommandLine.arguments.dropFirst())
            let o = try r.execute()
            print("\(output): \(o.preset) model, \(o.parameters) parameters, heads: \(o.heads.joined(separator: ", ")), \(o.fingerprint)")
        }
    }
}
